"""What raftpg writes for the Patroni settings it honours: unix sockets, cluster_name, pg_ident, recovery_conf,
custom_conf, bin_name, and the command line of a custom method (files and strings only, no PostgreSQL)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from raftpg.pg import rebuild
from raftpg.pg.conf import (
    BOOTSTRAP_RECOVERY_CONF,
    Upstream,
    managed_parameters,
    render_postgresql_conf,
    write_pg_hba,
)
from raftpg.pg.settings import CommandMethod, PgSettings
from raftpg.pg.tools import PgError


def settings(tmp_path: Path, **overrides: object) -> PgSettings:
    values: dict[str, object] = dict(name="n1", scope="batman", data_dir=str(tmp_path / "data"), bin_dir="/bin")
    values.update(overrides)
    return PgSettings(**values)  # type: ignore[arg-type]


def test_a_users_unix_socket_directories_is_honoured_and_the_agent_uses_its_first(tmp_path: Path) -> None:
    s = settings(tmp_path, parameters={"unix_socket_directories": "/var/run/postgresql, /tmp"})
    assert managed_parameters(s, None, "")["unix_socket_directories"] == "/var/run/postgresql,/tmp"
    assert s.socket_dir == "/var/run/postgresql"


def test_raftpg_adds_its_own_socket_only_when_none_is_set(tmp_path: Path) -> None:
    plain = settings(tmp_path)
    assert managed_parameters(plain, None, "")["unix_socket_directories"] == str(tmp_path)
    abstract = settings(tmp_path, parameters={"unix_socket_directories": "@pg"})
    assert managed_parameters(abstract, None, "")["unix_socket_directories"] == f"@pg,{tmp_path}"
    assert abstract.socket_dir == str(tmp_path)


def test_cluster_name_defaults_to_the_scope_and_the_member_name_has_its_own_setting(tmp_path: Path) -> None:
    params = managed_parameters(settings(tmp_path), None, "")
    assert (params["cluster_name"], params["raftpg.member"]) == ("batman", "n1")
    assert managed_parameters(settings(tmp_path, parameters={"cluster_name": "x"}), None, "")["cluster_name"] == "x"


def test_pg_ident_is_written_when_configured_and_emptied_when_removed(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    ident = tmp_path / "data" / "pg_ident.conf"
    ident.write_text("# initdb's\n")
    assert write_pg_hba(settings(tmp_path)) is True  # pg_hba.conf is new; initdb's pg_ident.conf is kept
    assert ident.read_text() == "# initdb's\n"
    write_pg_hba(settings(tmp_path, pg_ident=("ops root postgres",)))
    assert ident.read_text().splitlines()[1:] == ["ops root postgres"]
    assert write_pg_hba(settings(tmp_path, pg_ident=("ops root postgres",))) is False  # unchanged
    write_pg_hba(settings(tmp_path))
    assert ident.read_text().splitlines()[1:] == []


def test_recovery_conf_applies_to_replicas_only_and_never_overrides_raftpgs_wiring(tmp_path: Path) -> None:
    s = settings(tmp_path, recovery_conf={"restore_command": "cp /arch/%f %p", "primary_conninfo": "host=evil",
                                          "recovery_min_apply_delay": "5min"})
    replica = managed_parameters(s, Upstream("host=a", None), "")
    assert replica["restore_command"] == "cp /arch/%f %p" and replica["recovery_min_apply_delay"] == "5min"
    assert replica["primary_conninfo"].startswith("host=a")
    primary = managed_parameters(s, None, "")
    assert "restore_command" not in primary and "recovery_min_apply_delay" not in primary


def test_standby_cluster_recovery_settings_apply_to_the_standby_leader_only(tmp_path: Path) -> None:
    """standby_cluster's restore_command and recovery_min_apply_delay go to the server that streams from
    standby_cluster's host and port (the standby leader), over recovery_conf and parameters; a replica of
    a local member and a primary never get them."""
    s = settings(tmp_path, standby_source=("10.9.0.1", 5433), recovery_conf={"restore_command": "mine %f %p"},
                 standby_recovery={"restore_command": "cp /dr/%f %p", "recovery_min_apply_delay": "1h"},
                 parameters={"recovery_min_apply_delay": "0"})
    leader = managed_parameters(s, Upstream("host=10.9.0.1 port=5433 user=r", None), "")
    assert leader["restore_command"] == "cp /dr/%f %p" and leader["recovery_min_apply_delay"] == "1h"
    replica = managed_parameters(s, Upstream("host=10.9.0.1 port=5432 user=r", None), "")  # not the source's port
    assert replica["restore_command"] == "mine %f %p" and replica["recovery_min_apply_delay"] == "0"
    primary = managed_parameters(s, None, "")
    assert "restore_command" not in primary and primary["recovery_min_apply_delay"] == "0"
    waiting = managed_parameters(s, Upstream(None, None), "")  # a standby with no upstream yet
    assert waiting["restore_command"] == "mine %f %p"


def test_custom_conf_replaces_the_base_file_and_the_bootstrap_recovery_file_comes_last(tmp_path: Path) -> None:
    text = render_postgresql_conf(settings(tmp_path, custom_conf="/etc/pg/custom.conf"), {"port": "5432"})
    lines = text.splitlines()
    assert "include_if_exists '/etc/pg/custom.conf'" in lines and "postgresql.base.conf" not in text
    assert lines[-1] == f"include_if_exists '{BOOTSTRAP_RECOVERY_CONF}'"


def test_bin_name_renames_a_program(tmp_path: Path) -> None:
    s = settings(tmp_path, bin_names={"pg_ctl": "pg_ctl15"})
    assert s.binary("pg_ctl") == os.path.join("/bin", "pg_ctl15") and s.binary("initdb") == "/bin/initdb"


def test_command_method_argv_as_patroni_builds_it() -> None:
    method = CommandMethod("pgbackrest", "/usr/bin/pgbackrest --stanza='my db' restore", (("delta", "True"),))
    assert method.argv({"scope": "s", "datadir": "/d"}) == [
        "/usr/bin/pgbackrest", "--stanza=my db", "restore", "--scope=s", "--datadir=/d", "--delta=True"]
    quiet = CommandMethod("x", "x", no_params=True)
    assert quiet.argv({"scope": "s"}) == ["x"]


def test_a_replica_never_runs_below_its_sources_settings(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """Recovery refuses max_connections below the primary's (pg_control): the larger value is written."""
    from raftpg.pg import conf
    from raftpg.pg.controldata import parse_controldata

    control = parse_controldata("max_connections setting:              100\nmax_wal_senders setting:  4\n"
                                "max_locks_per_xact setting:           128\n")
    assert (control.max_connections, control.max_wal_senders, control.max_locks_per_transaction) == (100, 4, 128)
    monkeypatch.setattr(conf, "read_controldata", lambda settings: control)
    s = settings(tmp_path, parameters={"max_connections": 50, "max_locks_per_transaction": 256})
    replica = managed_parameters(s, Upstream("host=a", None), "")
    assert (replica["max_connections"], replica["max_locks_per_transaction"]) == ("100", "256")
    assert replica["max_wal_senders"] == "10"  # raftpg's own minimum is higher still
    assert managed_parameters(s, None, "")["max_connections"] == "50"  # a primary runs as configured


def test_the_standby_leader_is_copied_by_standby_clusters_methods_and_the_others_by_their_own(
        tmp_path: Path) -> None:
    """rebuild.clone picks standby_cluster's create_replica_methods when it copies from standby_cluster's
    host and port (the standby leader's bootstrap), the node's own methods otherwise. Each method here is a
    real command that notes its name and fails, so the error names what was tried."""
    def method(name: str) -> CommandMethod:
        script = tmp_path / f"{name}.sh"
        script.write_text(f"#!/bin/sh\necho {name} >> {tmp_path}/tried\nexit 1\n")
        script.chmod(0o755)
        return CommandMethod(name, str(script), no_params=True)

    s = settings(tmp_path, standby_source=("10.9.0.1", 5433), replica_methods=(method("own"),),
                 standby_replica_methods=(method("dr1"), method("dr2")))
    tried = tmp_path / "tried"
    with pytest.raises(PgError, match="(?s)dr1: .*dr2: "):
        rebuild.clone(s, "postgresql://10.9.0.1:5433/postgres", 10)
    assert tried.read_text().split() == ["dr1", "dr2"]
    tried.unlink()
    with pytest.raises(PgError, match="own: "):
        rebuild.clone(s, "postgresql://10.9.0.2:5432/postgres", 10)  # a member of this cluster
    assert tried.read_text().split() == ["own"]
    tried.unlink()
    with pytest.raises(PgError, match="own: "):
        rebuild.clone(replace(s, standby_replica_methods=()), "postgresql://10.9.0.1:5433/postgres", 10)
    assert tried.read_text().split() == ["own"], "no standby methods given: the node's own"
