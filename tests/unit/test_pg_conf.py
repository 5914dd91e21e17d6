"""raftpg.pg.conf and settings: what raftpg writes into the data directory (files only, no PostgreSQL)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from raftpg.pg.conf import (
    Upstream,
    default_pg_hba,
    managed_parameters,
    read_managed_parameters,
    render_pgpass,
    set_standby_signal,
    write_atomic,
    write_pg_hba,
    write_pgpass,
    write_postgresql_conf,
)
from raftpg.pg.settings import Credentials, PgSettings


def settings(tmp_path: Path, **overrides: object) -> PgSettings:
    values: dict[str, object] = dict(name="n1", scope="demo", data_dir=str(tmp_path / "data"), bin_dir="/bin")
    values.update(overrides)
    return PgSettings(**values)  # type: ignore[arg-type]


def test_raftpg_settings_win_minimums_are_raised_and_user_values_pass_through(tmp_path, caplog) -> None:
    s = settings(tmp_path, parameters={"port": "1", "max_wal_senders": 4, "max_replication_slots": "20",
                                       "wal_keep_size": "1GB", "work_mem": "8MB", "wal_level": "minimal",
                                       "hot_standby_feedback": False})
    with caplog.at_level(logging.WARNING):
        params = managed_parameters(s, None, "n2")
    assert params["port"] == "5432" and "port" in caplog.text
    assert params["max_wal_senders"] == "10" and params["max_replication_slots"] == "20"
    assert params["wal_keep_size"] == "1GB" and params["work_mem"] == "8MB"
    assert params["hot_standby_feedback"] == "off" and params["wal_level"] == "replica"
    assert params["wal_log_hints"] == "on" and params["cluster_name"] == "n1"
    assert params["synchronous_standby_names"] == "n2"
    assert params["primary_conninfo"] == "" and params["primary_slot_name"] == ""
    assert managed_parameters(settings(tmp_path, parameters={"wal_level": "logical"}), None, "")["wal_level"] \
        == "logical"


def test_replica_wiring_is_written(tmp_path) -> None:
    params = managed_parameters(settings(tmp_path), Upstream("host=a user=r", "n1"), "")
    assert params["primary_conninfo"] == "host=a user=r" and params["primary_slot_name"] == "n1"
    assert params["recovery_target_timeline"] == "latest" and params["hot_standby"] == "on"


def test_postgresql_conf_keeps_initdbs_file_and_round_trips_quotes(tmp_path) -> None:
    s = settings(tmp_path)
    os.makedirs(s.data_dir)
    Path(s.data_dir, "postgresql.conf").write_text("shared_buffers = 128MB\n")
    tricky = "host=a password='it''s' dir=C:\\x"
    params = managed_parameters(s, Upstream(tricky, None), "")
    assert write_postgresql_conf(s, params) is True
    assert Path(s.data_dir, "postgresql.base.conf").read_text() == "shared_buffers = 128MB\n"
    text = Path(s.data_dir, "postgresql.conf").read_text()
    assert "include_if_exists 'postgresql.base.conf'" in text
    assert read_managed_parameters(s.data_dir)["primary_conninfo"] == tricky
    assert write_postgresql_conf(s, params) is False, "unchanged content is not rewritten"
    assert Path(s.data_dir, "postgresql.base.conf").read_text() == "shared_buffers = 128MB\n"


def test_read_managed_parameters_ignores_a_file_that_is_not_ours(tmp_path) -> None:
    Path(tmp_path, "postgresql.conf").write_text("port = '1'\n")
    assert read_managed_parameters(str(tmp_path)) == {}
    assert read_managed_parameters(str(tmp_path / "missing")) == {}


def test_default_pg_hba_uses_scram_only_with_passwords(tmp_path) -> None:
    open_hba = default_pg_hba(settings(tmp_path))
    assert open_hba == ("local all postgres trust", "host replication replicator all trust",
                        "host all all all trust")
    s = settings(tmp_path, superuser=Credentials("postgres", "x"), replication=Credentials("repl user", "y"),
                 rewind=Credentials("rewinder", "z"))
    assert default_pg_hba(s) == ("local all postgres trust", 'host replication "repl user" all scram-sha-256',
                                 "host all rewinder all scram-sha-256", "host all all all scram-sha-256")


def test_configured_pg_hba_replaces_the_defaults(tmp_path) -> None:
    s = settings(tmp_path, pg_hba=["local all all peer"])
    os.makedirs(s.data_dir)
    assert write_pg_hba(s)
    lines = Path(s.data_dir, "pg_hba.conf").read_text().splitlines()
    assert lines[1:] == ["local all all peer"]


def test_pgpass_escapes_and_is_private(tmp_path) -> None:
    s = settings(tmp_path, superuser=Credentials("postgres", "a:b\\c"), replication=Credentials("r", None),
                 rewind=Credentials("rw", "p"))
    assert render_pgpass(s) == "*:*:*:postgres:a\\:b\\\\c\n*:*:*:rw:p\n"
    os.makedirs(s.data_dir)
    assert write_pgpass(s) and oct(os.stat(s.pgpass).st_mode & 0o777) == "0o600"
    assert s.pgpass == str(tmp_path / ".pgpass.raftpg-n1")
    assert "a:b" not in repr(s.superuser)


def test_standby_signal_and_atomic_write_report_changes(tmp_path) -> None:
    assert set_standby_signal(str(tmp_path), True) is True
    assert (tmp_path / "standby.signal").exists()
    assert set_standby_signal(str(tmp_path), False) is True
    assert set_standby_signal(str(tmp_path), False) is False
    path = str(tmp_path / "f")
    assert write_atomic(path, "a") is True and write_atomic(path, "a") is False
    os.chmod(path, 0o644)
    assert write_atomic(path, "a") is True, "a wrong mode is repaired"
    assert sorted(os.listdir(tmp_path)) == ["f"], "no temporary files left behind"


@pytest.mark.parametrize("bad, message", [
    (dict(name=""), "name"), (dict(data_dir="relative"), "absolute"), (dict(port=0), "port"),
    (dict(callbacks={"on_boot": "x"}), "on_boot"),
])
def test_settings_validation_names_the_field(tmp_path, bad, message) -> None:
    with pytest.raises(ValueError, match=message):
        settings(tmp_path, **bad)


def test_settings_coerce_parameters_and_derive_paths(tmp_path) -> None:
    s = settings(tmp_path, parameters={"fsync": False, "max_connections": 50})
    assert s.parameters == {"fsync": "off", "max_connections": "50"}
    assert s.socket_dir == str(tmp_path) and s.rewind_credentials == s.superuser
    assert s.application_name == "raftpg-n1"
