"""Every valid Patroni 4 config runs: the forms Patroni accepts, what is warned about, what is refused and why.

One assertion per behaviour, on the key path the line names (the rest of the message may be reworded).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from test_config import _DROP, FIXTURES, edited, errors_of

from raftpg.config import ConfigError, dcs_kind, load_config, parse_config


def warned(config: Any) -> list[str]:
    """The key paths the warnings name."""
    return [w.split(":", 1)[0] for w in config.warnings]


# --- a whole Patroni 4 config ------------------------------------------------------------------------------


def test_patroni4_config_with_a_raft_section_added_runs(tmp_path: Path) -> None:
    path = tmp_path / "patroni.yml"
    path.write_text((FIXTURES / "patroni4_etcd3_plus_raft.yml").read_text())
    path.chmod(0o600)
    config = load_config(path)
    assert dcs_kind(config) == "raft" and config.etcd3 is None
    assert sorted(warned(config)) == ["ctl", "etcd3", "log.max_queue_size", "restapi.request_queue_size",
                                      "restapi.thread_pool_size", "thread_pool_size"]
    raft = config.raft
    assert raft is not None and raft.self_addr == "10.0.0.11:18008"  # the REST port + 10000, as Patroni's Raft
    assert raft.partner_addrs == ("10.0.0.12:18008", "10.0.0.13:18008")
    assert config.watchdog.safety_margin == 15  # -1: fire at ttl // 2
    pg = config.postgresql
    assert pg is not None and pg.create_replica_methods == ("pgbackrest", "basebackup")
    method = pg.replica_methods["pgbackrest"]
    assert (method.command, method.keep_data, method.no_params) == (
        "/usr/bin/pgbackrest --stanza=batman --delta restore", True, True)
    assert config.bootstrap.dcs.postgresql.pg_ident == ("ops root postgres",)
    assert config.log.type == "json" and config.log.loggers == {"patroni.postmaster": "WARNING", "urllib3": "DEBUG"}


# --- keys that stopped a node before ---------------------------------------------------------------------


def test_restapi_thread_pool_size_is_a_warning_not_a_stop() -> None:
    config = parse_config(edited({"restapi.thread_pool_size": 10}))
    assert warned(config) == ["restapi.thread_pool_size"] and "ignored" in config.warnings[0]


def test_an_etcd_v2_section_alone_says_what_to_do() -> None:
    lines = errors_of(edited({"raft": _DROP, "etcd": {"host": "127.0.0.1:2379"}})).splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("etcd: the etcd v2 API is not supported")
    assert "rename the section to etcd3" in lines[0] and "add a raft section" in lines[0]


@pytest.mark.parametrize("other", ["etcd", "etcd3", "zookeeper", "kubernetes", "exhibitor", "consul"])
def test_a_raft_section_added_to_a_patroni_config_wins(other: str) -> None:
    config = parse_config(edited({other: {"hosts": "127.0.0.1:2379"}}))
    assert dcs_kind(config) == "raft"
    assert warned(config) == [other]
    assert "the raft section is used" in config.warnings[0]


@pytest.mark.parametrize("other", ["zookeeper", "kubernetes", "exhibitor"])
def test_another_dcs_alone_is_one_clear_line(other: str) -> None:
    lines = errors_of(edited({"raft": _DROP, other: {"hosts": ["a:1"]}})).splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{other}: ") and "add a raft section" in lines[0]


def test_an_unusable_dcs_next_to_etcd3_is_ignored() -> None:
    config = parse_config(edited({"raft": _DROP, "etcd3": {"hosts": "a:1"}, "zookeeper": {"hosts": ["z:1"]}}))
    assert dcs_kind(config) == "etcd3" and warned(config) == ["zookeeper"]


# --- raft: every form Patroni accepts ---------------------------------------------------------------------


def test_raft_addresses_without_a_port_get_the_rest_port_plus_10000() -> None:
    config = parse_config(edited({"restapi.listen": "127.0.0.1:8009", "raft.self_addr": "127.0.0.1",
                                  "raft.bind_addr": "127.0.0.1", "raft.partner_addrs": "127.0.0.2, 127.0.0.3:5010"}))
    assert config.raft is not None
    assert (config.raft.self_addr, config.raft.bind_addr) == ("127.0.0.1:18009", "127.0.0.1:18009")
    assert config.raft.partner_addrs == ("127.0.0.2:18009", "127.0.0.3:5010")


def test_raft_ipv6_address_without_a_port() -> None:
    config = parse_config(edited({"raft.self_addr": "[::1]"}))
    assert config.raft is not None and config.raft.self_addr == "[::1]:18008"


def test_raft_data_dir_defaults_under_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = parse_config(edited({"raft.data_dir": _DROP}))
    assert config.raft is not None and config.raft.data_dir == os.path.join(str(tmp_path), "raftpg-raft")


def test_raft_without_password_or_self_addr_is_refused_with_the_reason() -> None:
    message = errors_of(edited({"raft.password": _DROP, "raft.self_addr": _DROP}))
    assert "raft.password: required, also on loopback" in message
    assert "raft.self_addr: field required: the address the other members reach" in message


# --- refused: ignoring them would be unsafe -----------------------------------------------------------------


@pytest.mark.parametrize(("changes", "expected"), [
    ({"citus": {"group": 0, "database": "citus"}}, "citus: Citus clusters are not supported: raftpg does not update"),
    ({"postgresql.pre_promote": "/usr/local/bin/fence"}, "postgresql.pre_promote: raftpg runs no fencing script"),
])
def test_keys_that_would_be_unsafe_to_ignore_are_refused(changes: dict[str, Any], expected: str) -> None:
    lines = errors_of(edited(changes)).splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), lines


# --- accepted silently, or with a note about the value ------------------------------------------------------


def test_keys_raftpg_already_honours_need_no_warning() -> None:
    config = parse_config(edited({"bootstrap.dcs.ignore_slots": [{"name": "x"}], "postgresql.use_unix_socket": True,
                                  "bootstrap.dcs.check_timeline": True}))
    assert config.warnings == ()


@pytest.mark.parametrize(("changes", "path", "words"), [
    ({"bootstrap.dcs.check_timeline": False}, "bootstrap.dcs.check_timeline", "always checks timelines"),
    ({"bootstrap.dcs.primary_stop_timeout": 30}, "bootstrap.dcs.primary_stop_timeout", "ignored"),
    ({"bootstrap.dcs.master_stop_timeout": 30}, "bootstrap.dcs.primary_stop_timeout", "ignored"),
    ({"postgresql.use_unix_socket": False}, "postgresql.use_unix_socket", "always connects"),
    ({"postgresql.config_dir": "/etc/postgresql/15/main"}, "postgresql.config_dir", "in the data directory"),
    ({"raft": _DROP, "etcd3": {"hosts": "a:1", "use_proxies": False}}, "etcd3.use_proxies", "listed hosts only"),
])
def test_values_raftpg_cannot_honour_are_warned(changes: dict[str, Any], path: str, words: str) -> None:
    config = parse_config(edited(changes))
    assert warned(config) == [path] and words in config.warnings[0]


# --- custom bootstrap ---------------------------------------------------------------------------------------


def test_custom_bootstrap_method_is_read() -> None:
    config = parse_config(edited({"bootstrap.method": "pitr", "bootstrap.pitr": {
        "command": "/usr/local/bin/restore --from s3", "keep_existing_recovery_conf": "true",
        "recovery_conf": {"recovery_target_action": "promote", "recovery_target_time": "2024-01-01 00:00"},
        "bucket": "b1", "threads": 4, "verbose": True, "unset": None}}))
    method = config.bootstrap.custom_method
    assert config.bootstrap.method == "pitr" and method is not None
    assert method.command == "/usr/local/bin/restore --from s3" and method.keep_existing_recovery_conf is True
    assert method.recovery_conf["recovery_target_action"] == "promote"
    assert method.options() == (("bucket", "b1"), ("threads", "4"), ("verbose", "True"))
    assert config.warnings == ()


@pytest.mark.parametrize(("changes", "expected"), [
    ({"bootstrap.method": "pitr"}, "bootstrap.pitr: required: bootstrap.method is 'pitr'"),
    ({"bootstrap.method": "pitr", "bootstrap.pitr": {"no_params": True}}, "bootstrap.pitr.command: required"),
    ({"bootstrap.method": "pitr", "bootstrap.pitr": {"command": "x", "opt": {"a": 1}}}, "bootstrap.pitr.opt: an option"),
    ({"bootstrap.method": "pitr", "bootstrap.pitr": {"command": "x", "datadir": "/y"}}, "bootstrap.pitr.datadir:"),
    ({"bootstrap.method": "pitr", "bootstrap.pitr": {"command": "x\ny"}}, "bootstrap.pitr.command: must not contain"),
    ({"bootstrap.method": "dcs"}, "bootstrap.method: 'dcs' is a key of bootstrap"),
])
def test_custom_bootstrap_errors(changes: dict[str, Any], expected: str) -> None:
    assert expected in errors_of(edited(changes))


def test_a_method_section_nobody_names_is_ignored_as_patroni_does() -> None:
    config = parse_config(edited({"bootstrap.wal_e": {"command": "x"}, "postgresql.barman": {"command": "y"}}))
    assert config.bootstrap.custom_method is None
    assert sorted(warned(config)) == ["bootstrap.wal_e", "postgresql.barman"]


# --- replica creation methods -------------------------------------------------------------------------------


def test_replica_methods_as_in_patroni() -> None:
    config = parse_config(edited({"postgresql.create_replica_methods": ["wal_e", "copy", "basebackup"],
                                  "postgresql.wal_e": {"command": "patroni_wale_restore", "no_leader": 1,
                                                       "envdir": "/etc/wal-e"},
                                  "postgresql.basebackup": {"max-rate": "100M"}}))
    pg = config.postgresql
    assert pg is not None and pg.create_replica_methods == ("wal_e", "copy", "basebackup")
    assert pg.replica_methods["wal_e"].no_leader is True
    assert pg.replica_methods["wal_e"].options() == (("envdir", "/etc/wal-e"),)
    assert pg.replica_methods["copy"].command == "copy"  # no section: the name is the command, as in Patroni
    assert pg.basebackup_args() == ["--max-rate=100M"]
    assert config.warnings == ()
    from raftpg.node import build_me
    from raftpg.pg.from_config import pg_settings_from_config
    assert pg_settings_from_config(config).clone_timeout_s is None  # no limit unless asked, as in Patroni
    limited = parse_config(edited({"postgresql.create_replica_timeout": 7200}))
    assert pg_settings_from_config(limited).clone_timeout_s == 7200.0
    assert build_me(config).clone_without_leader  # the HA loop may restore with wal_e when no primary runs
    assert not build_me(parse_config(edited({"postgresql.create_replica_methods": ["copy", "basebackup"]}))) \
        .clone_without_leader


@pytest.mark.parametrize(("changes", "expected"), [
    ({"postgresql.create_replica_methods": ["x"], "postgresql.x": {"connstring": "host=evil"}},
     "postgresql.x.connstring:"),
    ({"postgresql.create_replica_methods": ["pg_hba"]}, "postgresql.create_replica_methods[0]: 'pg_hba' is a key"),
    ({"postgresql.create_replica_methods": [""]}, "postgresql.create_replica_methods[0]: must be a method name"),
    ({"postgresql.create_replica_methods": ["x"], "postgresql.x": {"keep_data": "perhaps"}},
     "postgresql.x.keep_data: must be true or false"),
    ({"postgresql.create_replica_timeout": 0}, "postgresql.create_replica_timeout:"),
    ({"postgresql.create_replica_timeout": "soon"}, "postgresql.create_replica_timeout:"),
])
def test_replica_method_errors(changes: dict[str, Any], expected: str) -> None:
    assert expected in errors_of(edited(changes))


# --- other Patroni forms ------------------------------------------------------------------------------------


def test_etcd3_url_and_proxy_forms() -> None:
    config = parse_config(edited({"raft": _DROP, "etcd3": {"url": "https://u:p%40ss@etcd.example:2379"}}))
    etcd = config.etcd3
    assert etcd is not None and (etcd.protocol, etcd.hosts, etcd.username, etcd.password) == (
        "https", ("etcd.example:2379",), "u", "p@ss")
    proxy = parse_config(edited({"raft": _DROP, "etcd3": {"proxy": "http://127.0.0.1:23790"}})).etcd3
    assert proxy is not None and proxy.hosts == ("127.0.0.1:23790",)
    assert "etcd3.url: set one of" in errors_of(edited({"raft": _DROP, "etcd3": {"url": "http://a:1", "hosts": "b:2"}}))
    assert "etcd3.url: must be 'http(s)://host:port'" in errors_of(edited({"raft": _DROP, "etcd3": {"url": "a:1"}}))


def test_consul_port_form() -> None:
    config = parse_config(edited({"raft": _DROP, "consul": {"host": "127.0.0.1", "port": 8600}}))
    assert config.consul is not None and config.consul.host == "127.0.0.1:8600"
    config = parse_config(edited({"raft": _DROP, "consul": {"host": "127.0.0.1:8500", "port": "8501"}}))
    assert config.consul is not None and config.consul.host == "127.0.0.1:8501"


def test_watchdog_safety_margin_minus_one_fires_at_half_the_ttl() -> None:
    config = parse_config(edited({"bootstrap.dcs": {"ttl": 21, "loop_wait": 5, "retry_timeout": 5}, "watchdog.safety_margin": -1}))
    assert config.watchdog.safety_margin == 11  # fires 21 - 11 = 10 = 21 // 2 seconds after a keepalive


def test_log_section_as_patroni_writes_it() -> None:
    config = parse_config(edited({"log": {"type": "JSON", "level": "warn", "format": ["message", {"levelname": "lvl"}],
                                          "static_fields": {"app": "x"}, "loggers": {"httpx": "debug"},
                                          "file_num": 2, "file_size": 1000, "mode": 0o640, "dateformat": "%H:%M",
                                          "traceback_level": "debug", "deduplicate_heartbeat_logs": True}}))
    log = config.log
    assert (log.type, log.level, log.traceback_level, log.loggers) == ("json", "WARNING", "DEBUG", {"httpx": "DEBUG"})
    assert log.format == ("message", {"levelname": "lvl"})
    assert "log.format: a list of fields needs log.type: json" in errors_of(edited({"log.format": ["message"]}))
    assert "log.loggers.x: must be one of" in errors_of(edited({"log.loggers": {"x": "LOUD"}}))
    assert "log.mode: must be <= 511" in errors_of(edited({"log.mode": 0o1000}))


def test_pg_ident_recovery_conf_custom_conf_and_bin_name() -> None:
    config = parse_config(edited({"postgresql.pg_ident": ["map1 os1 pg1"],
                                  "postgresql.recovery_conf": {"restore_command": "cp /a/%f %p"},
                                  "postgresql.custom_conf": "/etc/pg/custom.conf",
                                  "postgresql.bin_name": {"pg_ctl": "pg_ctl15"},
                                  "bootstrap.dcs.postgresql.recovery_conf": {"recovery_min_apply_delay": "5min"}}))
    pg = config.postgresql
    assert pg is not None and pg.pg_ident == ("map1 os1 pg1",) and pg.custom_conf == "/etc/pg/custom.conf"
    assert pg.recovery_conf == {"restore_command": "cp /a/%f %p"} and pg.bin_name == {"pg_ctl": "pg_ctl15"}
    assert config.bootstrap.dcs.postgresql.recovery_conf == {"recovery_min_apply_delay": "5min"}
    assert config.warnings == ()
    assert "postgresql.bin_name.pg_ctl: must be a file name" in errors_of(edited({"postgresql.bin_name": {"pg_ctl": "/x"}}))
    assert "postgresql.bin_name.psql: not one of" in errors_of(edited({"postgresql.bin_name": {"psql": "psql"}}))
    assert "postgresql.pg_ident[0]: must not contain" in errors_of(edited({"postgresql.pg_ident": ["a\nb"]}))


def test_config_error_class_is_reexported() -> None:
    assert issubclass(ConfigError, Exception)
