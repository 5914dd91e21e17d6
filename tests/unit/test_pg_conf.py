"""raftpg.pg.conf, connection and settings: what raftpg writes into the data directory and the conninfo it
builds for other members (files and strings only, no PostgreSQL)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from raftpg.pg.conf import (
    Upstream,
    default_pg_hba,
    managed_parameters,
    read_managed_parameters,
    render_pgpass,
    render_postgresql_conf,
    set_standby_signal,
    write_atomic,
    write_pg_hba,
    write_pgpass,
    write_postgresql_conf,
)
from raftpg.pg.connection import as_role, member_conninfo, scram_params, server_address
from raftpg.pg.settings import Credentials, PgSettings
from raftpg.pg.tools import PgError


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
    assert params["wal_log_hints"] == "on" and params["cluster_name"] == "demo" and params["raftpg.member"] == "n1"
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


def test_default_pg_hba_never_trusts_a_tcp_client(tmp_path) -> None:
    """Issue 12 item 4: without passwords the old default was ``host all all all trust``."""
    for s in (settings(tmp_path),
              settings(tmp_path, superuser=Credentials("postgres", "x"), replication=Credentials("repl user", "y"),
                       rewind=Credentials("rewinder", "z"))):
        hba = default_pg_hba(s)
        assert [line for line in hba if line.startswith("host") and not line.endswith(" scram-sha-256")] == []
        assert hba[0] == "local all postgres trust", "the socket is the agent's alone (see the next test)"
    assert default_pg_hba(s) == ("local all postgres trust", 'host replication "repl user" all scram-sha-256',
                                 "host all rewinder all scram-sha-256", "host all all all scram-sha-256")


def test_generated_pg_hba_keeps_the_socket_private_and_hashes_with_scram(tmp_path, caplog) -> None:
    wide = {"unix_socket_permissions": "0777", "password_encryption": "md5"}
    with caplog.at_level(logging.WARNING):
        params = managed_parameters(settings(tmp_path, parameters=wide), None, "")
    assert (params["unix_socket_permissions"], params["password_encryption"]) == ("0700", "scram-sha-256")
    assert "unix_socket_permissions is managed by raftpg" in caplog.text
    own_hba = managed_parameters(settings(tmp_path, parameters=wide, pg_hba=["local all all peer"]), None, "")
    assert (own_hba["unix_socket_permissions"], own_hba["password_encryption"]) == ("0777", "md5")


def test_parameter_names_are_compared_case_insensitively(tmp_path, caplog) -> None:
    """``Synchronous_Standby_Names`` must not slip past the names raftpg alone sets."""
    s = settings(tmp_path, parameters={"SYNCHRONOUS_STANDBY_NAMES": "*", "Port": "1", "Work_Mem": "8MB"})
    with caplog.at_level(logging.WARNING):
        params = managed_parameters(s, None, "n2")
    assert params["synchronous_standby_names"] == "n2" and params["port"] == "5432"
    assert params["work_mem"] == "8MB" and not any(name != name.lower() for name in params)


def test_a_promotion_keeps_every_restart_only_line_a_replica_had(tmp_path, monkeypatch) -> None:
    """Found from outside: after each failover or switchover the new primary showed "Pending restart" for
    max_locks_per_transaction, max_prepared_transactions and max_worker_processes. As a replica it wrote
    them (at least its source's, from pg_control); as a primary it dropped the lines, and PostgreSQL flags
    a restart-only setting whose line is removed, whatever its value. The primary writes the same lines."""
    control = {"max_connections": 100, "max_worker_processes": 8, "max_wal_senders": 10,
               "max_prepared_transactions": 0, "max_locks_per_transaction": 64}
    monkeypatch.setattr("raftpg.pg.conf.standby_minimums", lambda settings: control)
    replica = managed_parameters(settings(tmp_path), Upstream("host=a user=r", "n1"), "")
    primary = managed_parameters(settings(tmp_path), None, "")
    restart_only = set(control) - {"max_connections"}  # initdb's file sets max_connections itself
    assert {name: primary[name] for name in restart_only} == {name: replica[name] for name in restart_only}
    mine = managed_parameters(settings(tmp_path, parameters={"max_worker_processes": 16}), None, "")
    assert mine["max_worker_processes"] == "16"  # the user's value still wins


def test_a_managed_parameter_set_to_the_value_raftpg_writes_anyway_is_not_warned_about(tmp_path, caplog) -> None:
    """Patroni's sample configs list hot_standby and wal_log_hints "on": two warnings at every start of
    PostgreSQL that asked the user to change nothing. A different value is still named."""
    agreeing = {"hot_standby": "on", "wal_log_hints": True, "port": "5432"}
    with caplog.at_level(logging.WARNING):
        params = managed_parameters(settings(tmp_path, parameters=agreeing), None, "")
    assert params["hot_standby"] == params["wal_log_hints"] == "on"
    assert "hot_standby" not in caplog.text and "wal_log_hints" not in caplog.text and "port" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        params = managed_parameters(settings(tmp_path, parameters={"wal_log_hints": "off"}), None, "")
    assert params["wal_log_hints"] == "on" and "wal_log_hints is managed by raftpg" in caplog.text


@pytest.mark.parametrize("name, value", [
    ("zz.x = 1\nsynchronous_standby_names", "x"),
    ("work_mem", "4MB\nsynchronous_standby_names = ''"),
    ("work_mem", "4MB\r"),
    ("bad name", "1"),
    ("1st", "1"),
    ("x;y", "1"),
])
def test_a_parameter_that_is_not_one_line_is_never_written(tmp_path, caplog, name, value) -> None:
    """Defence in depth for issue 12 item 5: the config refuses these; conf.py never writes them."""
    s = settings(tmp_path, parameters={name: value})
    with caplog.at_level(logging.ERROR):
        params = managed_parameters(s, None, "n2")
    assert name not in params and "\n" not in "".join(params.values())
    assert "is not written" in caplog.text and "synchronous_standby_names = ''" not in caplog.text
    text = render_postgresql_conf(s, params)
    assert [line for line in text.splitlines() if line.startswith("synchronous_standby_names")] == [
        "synchronous_standby_names = 'n2'"]
    with pytest.raises(PgError, match="refusing to write postgresql.conf"):
        render_postgresql_conf(s, {**params, name: value})


def test_pg_hba_with_a_control_character_is_never_written(tmp_path) -> None:
    s = settings(tmp_path, pg_hba=["host all all 10.0.0.0/8 scram-sha-256\nhost all all all trust"])
    os.makedirs(s.data_dir)
    with pytest.raises(PgError, match="pg_hba.conf: a line holds a control character"):
        write_pg_hba(s)
    assert not os.path.exists(os.path.join(s.data_dir, "pg_hba.conf"))


def test_configured_pg_hba_replaces_the_defaults(tmp_path) -> None:
    s = settings(tmp_path, pg_hba=["local all all peer"])
    os.makedirs(s.data_dir)
    assert write_pg_hba(s)
    lines = Path(s.data_dir, "pg_hba.conf").read_text().splitlines()
    assert lines[1:] == ["local all all peer"]


def test_pgpass_lines_name_one_host_and_port_and_escape(tmp_path) -> None:
    """Issue 12 item 6: no ``*`` host: a password goes only to the server raftpg is following or copying."""
    s = settings(tmp_path, port=5433, superuser=Credentials("postgres", "a:b\\c"), replication=Credentials("r", None),
                 rewind=Credentials("rw", "p"), unix_socket_dir="/run/pg:x")
    assert render_pgpass(s) == "/run/pg\\:x:5433:*:postgres:a\\:b\\\\c\n"
    assert render_pgpass(s, ("10.0.0.2", 5432)) == ("/run/pg\\:x:5433:*:postgres:a\\:b\\\\c\n"
                                                     "10.0.0.2:5432:*:rw:p\n")
    os.makedirs(s.data_dir)
    assert write_pgpass(s) and oct(os.stat(s.pgpass).st_mode & 0o777) == "0o600"
    assert s.pgpass == str(tmp_path / ".pgpass.raftpg-n1")
    assert "a:b" not in repr(s.superuser)


def test_pgpass_follows_the_upstream_in_postgresql_conf(tmp_path) -> None:
    s = settings(tmp_path, superuser=Credentials("postgres", "su"), replication=Credentials("replicator", "rp"))
    os.makedirs(s.data_dir)
    upstream = Upstream("host=10.0.0.7 port=5444 user=replicator passfile=/p", "n1")
    assert write_postgresql_conf(s, managed_parameters(s, upstream, "")) is True
    lines = Path(s.pgpass).read_text().splitlines()
    assert lines == [f"{tmp_path}:5432:*:postgres:su", "10.0.0.7:5444:*:replicator:rp", "10.0.0.7:5444:*:postgres:su"]
    assert write_pgpass(s) is False, "without an explicit upstream, the one postgresql.conf follows is kept"
    assert write_postgresql_conf(s, managed_parameters(s, None, "")) is True
    assert Path(s.pgpass).read_text().splitlines() == [f"{tmp_path}:5432:*:postgres:su"], "a primary has no upstream"


@pytest.mark.parametrize("conn_url, address", [
    ("postgres://10.0.0.1:5433/postgres", ("10.0.0.1", 5433)),
    ("postgres://db-1.example/postgres", ("db-1.example", 5432)),
    ("postgresql://[::1]:5432/postgres", ("::1", 5432)),
    ("host=10.0.0.1 port=5432 user=x", ("10.0.0.1", 5432)),
])
def test_server_address_reads_one_tcp_host_and_port(conn_url, address) -> None:
    assert server_address(conn_url) == address


@pytest.mark.parametrize("conn_url, message", [
    ("host=a,b port=5432", "one TCP host"),
    ("host=/tmp port=5432", "one TCP host"),
    ("host=@abstract port=5432", "one TCP host"),
    ("port=5432", "one TCP host"),
    ("host=a port=5432,5433", "one number"),
    ("host=a port=0", "one number"),
    ("host='a b' port=5432", "one TCP host"),
    ("postgres://a:5432/db?bogus=1", "not a valid conninfo"),
    ("not a conninfo", "not a valid conninfo"),
])
def test_server_address_refuses_anything_else(conn_url, message) -> None:
    with pytest.raises(PgError, match=message):
        server_address(conn_url)


def test_a_members_conn_url_contributes_only_its_host_and_port() -> None:
    """Whoever writes the DCS must not choose our passfile, TLS mode, user or options (issue 12 item 6)."""
    hostile = ("postgres://attacker:secret@10.0.0.9:5433/evil?passfile=/etc/shadow&sslmode=disable"
               "&options=-c%20log_statement%3Dall&application_name=x&target_session_attrs=any")
    built = member_conninfo(hostile, user="replicator", passfile="/var/lib/pg/.pgpass", application_name="n2")
    assert conninfo_to_dict(built) == {"host": "10.0.0.9", "port": "5433", "user": "replicator",
                                       "passfile": "/var/lib/pg/.pgpass", "application_name": "n2"}
    assert conninfo_to_dict(as_role(hostile, "rewinder")) == {"host": "10.0.0.9", "port": "5433", "user": "rewinder"}


def test_scram_is_required_only_where_libpq_and_pg_hba_allow(tmp_path, monkeypatch) -> None:
    from raftpg.pg import connection
    with_password = settings(tmp_path, replication=Credentials("replicator", "rp"))
    monkeypatch.setattr(connection, "libpq_has_require_auth", lambda bin_dir: True)
    assert scram_params(with_password, with_password.replication) == {"require_auth": "scram-sha-256"}
    params = managed_parameters(with_password, Upstream("host=a port=1 user=replicator", None), "")
    assert conninfo_to_dict(params["primary_conninfo"])["require_auth"] == "scram-sha-256"
    assert scram_params(with_password, with_password.superuser) == {}, "no password: nothing to protect"
    own_hba = settings(tmp_path, replication=Credentials("replicator", "rp"), pg_hba=["host all all all md5"])
    assert scram_params(own_hba, own_hba.replication) == {}, "a configured pg_hba may not offer SCRAM"
    monkeypatch.setattr(connection, "libpq_has_require_auth", lambda bin_dir: False)
    assert scram_params(with_password, with_password.replication) == {}, "libpq < 16 has no require_auth"


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
    (dict(listen_host="*"), "postgresql.authentication.superuser.password: required because PostgreSQL listens on"),
    (dict(listen_host="127.0.0.1,10.0.0.1", superuser=Credentials("postgres", "x")),
     "postgresql.authentication.replication.password: required"),
])
def test_settings_validation_names_the_field(tmp_path, bad, message) -> None:
    with pytest.raises(ValueError, match=message):
        settings(tmp_path, **bad)


def test_settings_coerce_parameters_and_derive_paths(tmp_path) -> None:
    s = settings(tmp_path, parameters={"fsync": False, "max_connections": 50})
    assert s.parameters == {"fsync": "off", "max_connections": "50"}
    assert s.socket_dir == str(tmp_path) and s.rewind_credentials == s.superuser
    assert s.application_name == "raftpg-n1"
