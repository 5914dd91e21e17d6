"""PgSettings from the Config and the cluster-wide config: what comes from where (Patroni's precedence)."""

from __future__ import annotations

from raftpg.config import parse_config
from raftpg.model import DynamicConfig
from raftpg.pg.from_config import cluster_section, pg_settings_from_config

BASE = {
    "scope": "s", "name": "n1", "restapi": {"listen": "127.0.0.1:8008"},
    "raft": {"data_dir": "/r", "self_addr": "127.0.0.1:2222", "password": "p"},
    "bootstrap": {"dcs": {"postgresql": {"pg_hba": ["host all all all scram-sha-256"],
                                         "parameters": {"work_mem": "4MB", "max_connections": 80}}},
                  "method": "restore", "restore": {"command": "/usr/bin/restore --fast", "no_params": True}},
    "postgresql": {"listen": "127.0.0.1:5432", "data_dir": "/d", "bin_dir": "/usr/lib/postgresql/15/bin",
                   "parameters": {"work_mem": "8MB"}, "create_replica_methods": ["copy", "basebackup"],
                   "copy": {"command": "/usr/bin/copy", "keep_data": True}},
}


def test_before_the_dcs_config_is_read_bootstrap_dcs_applies_and_the_local_file_wins() -> None:
    config = parse_config(BASE)
    pg = pg_settings_from_config(config)
    assert pg.pg_hba == ("host all all all scram-sha-256",)
    assert pg.parameters["work_mem"] == "8MB" and pg.parameters["max_connections"] == "80"
    assert pg.bootstrap_method is not None and pg.bootstrap_method.argv({"scope": "s"}) == ["/usr/bin/restore", "--fast"]
    assert [(m.name, m.keep_data) for m in pg.replica_methods] == [("copy", True), ("basebackup", False)]


def test_the_dcs_config_replaces_bootstrap_dcs_for_hba_ident_and_recovery() -> None:
    config = parse_config(BASE)
    dynamic = DynamicConfig.from_dict({"postgresql": {"pg_hba": ["host all all 10.0.0.0/8 scram-sha-256"],
                                                      "pg_ident": ["m a b"], "parameters": {"work_mem": "1MB"},
                                                      "recovery_conf": {"recovery_min_apply_delay": "1min"}}})
    pg = pg_settings_from_config(config, cluster_section(config, dynamic))
    assert pg.pg_hba == ("host all all 10.0.0.0/8 scram-sha-256",) and pg.pg_ident == ("m a b",)
    assert pg.parameters["work_mem"] == "8MB"  # the local file still wins
    assert pg.recovery_conf == {"recovery_min_apply_delay": "1min"}
    local = parse_config({**BASE, "postgresql": {**BASE["postgresql"], "pg_hba": ["local all all peer"]}})
    assert pg_settings_from_config(local, cluster_section(local, dynamic)).pg_hba == ("local all all peer",)


def test_equal_settings_compare_equal_whichever_document_they_came_from() -> None:
    config = parse_config({**BASE, "bootstrap": {"dcs": {}}})
    stored = DynamicConfig.from_dict({"ttl": 30, "postgresql": {"use_slots": True, "parameters": {}}})
    assert cluster_section(config, None) == cluster_section(config, stored)


def test_standby_cluster_settings_reach_the_standby_leader_only_through_its_source_address() -> None:
    """standby_cluster (the DCS config's, else bootstrap.dcs's): its address, its recovery settings, and its
    create_replica_methods: the node's own methods by name, basebackup, or a bare command (as in Patroni)."""
    config = parse_config(BASE)
    assert pg_settings_from_config(config).standby_source is None
    dynamic = DynamicConfig.from_dict({"standby_cluster": {
        "host": "10.9.0.1", "port": 5433, "restore_command": "cp /a/%f %p", "archive_cleanup_command": "clean %r",
        "recovery_min_apply_delay": 60000, "create_replica_methods": ["copy", "pgbackrest", "basebackup"]}})
    pg = pg_settings_from_config(config, cluster_section(config, dynamic))
    assert pg.standby_source == ("10.9.0.1", 5433)
    assert pg.standby_recovery == {"restore_command": "cp /a/%f %p", "archive_cleanup_command": "clean %r",
                                   "recovery_min_apply_delay": "60000"}
    assert [(m.name, m.command, m.keep_data) for m in pg.standby_replica_methods] == [
        ("copy", "/usr/bin/copy", True), ("pgbackrest", "pgbackrest", False), ("basebackup", "", False)]
    assert [m.name for m in pg.replica_methods] == ["copy", "basebackup"]  # the members' own list is unchanged
    # a method section the node does not list for its own replicas is still the standby leader's method
    spare = parse_config({**BASE, "postgresql": {**BASE["postgresql"], "pgbackrest": {
        "command": "/usr/bin/pgbackrest --stanza=main restore", "no_params": True, "keep_data": True}}})
    pg = pg_settings_from_config(spare, cluster_section(spare, dynamic))
    assert [(m.name, m.command, m.no_params, m.keep_data) for m in pg.standby_replica_methods][1] == (
        "pgbackrest", "/usr/bin/pgbackrest --stanza=main restore", True, True)
    assert [m.name for m in pg.replica_methods] == ["copy", "basebackup"]
    plain = DynamicConfig.from_dict({"standby_cluster": {"host": "10.9.0.1"}})
    pg = pg_settings_from_config(config, cluster_section(config, plain))
    assert (pg.standby_source, pg.standby_recovery, pg.standby_replica_methods) == (("10.9.0.1", 5432), {}, ())


def test_a_loosely_formed_standby_cluster_in_the_dcs_is_read_leniently_never_raised() -> None:
    """The DCS document may have been written by hand or by another tool: read as the HA loop reads it
    (a bad port is 5432, a stray space goes), and values of the wrong type are left out."""
    config = parse_config(BASE)
    odd = DynamicConfig.from_dict({"standby_cluster": {"host": " 10.9.0.1 ", "port": "x", "restore_command": ["x"],
                                                       "recovery_min_apply_delay": True,
                                                       "create_replica_methods": "copy"}})
    pg = pg_settings_from_config(config, cluster_section(config, odd))
    assert (pg.standby_source, pg.standby_recovery, pg.standby_replica_methods) == (("10.9.0.1", 5432), {}, ())
    for raw in ({"port": 5433}, {"host": ""}, "text", [1]):
        pg = pg_settings_from_config(config, cluster_section(config, DynamicConfig.from_dict({"standby_cluster": raw})))
        assert pg.standby_source is None, raw


def test_without_bin_dir_the_installation_found_at_start_stays_when_a_newer_one_appears(tmp_path, monkeypatch) -> None:
    # postgresql.bin_dir unset: raftpg takes the highest version installed. The HA loop derives the settings
    # every cycle; installing PostgreSQL 16 beside a running 15 node (the first step of a major upgrade)
    # must not switch that node's postgres, pg_ctl and pg_rewind to 16's, which cannot run its data.
    from raftpg.config.postgresql import PostgresSettings
    from raftpg.node import settings_for

    def install(major: int) -> str:
        bin_dir = tmp_path / str(major) / "bin"
        bin_dir.mkdir(parents=True)
        (bin_dir / "pg_ctl").write_text("#!/bin/sh\n")
        return str(bin_dir)

    original = PostgresSettings.resolve_bin_dir
    monkeypatch.setattr(PostgresSettings, "resolve_bin_dir",
                        lambda self: original(self, patterns=(str(tmp_path / "*" / "bin"),), path=""))
    pg_section = {k: v for k, v in BASE["postgresql"].items() if k != "bin_dir"}
    config = parse_config({**BASE, "postgresql": pg_section})
    fifteen = install(15)
    found_at_start = config.postgresql.resolve_bin_dir()  # what Node does once
    assert found_at_start == fifteen
    derive = settings_for(config, found_at_start)
    assert derive(None).bin_dir == fifteen
    sixteen = install(16)
    assert config.postgresql.resolve_bin_dir() == sixteen  # a fresh look would now pick 16 ...
    dynamic = DynamicConfig.from_dict({"postgresql": {"parameters": {"work_mem": "1MB"}}})
    assert derive(dynamic).bin_dir == derive(None).bin_dir == fifteen  # ... the running node keeps 15
    # an explicit postgresql.bin_dir (a SIGHUP after the upgrade) is what the operator asked for: it wins
    explicit = parse_config({**BASE, "postgresql": {**pg_section, "bin_dir": sixteen}})
    assert settings_for(explicit, found_at_start)(None).bin_dir == sixteen
