"""What raftpg refuses: one table of bad inputs, each with the exact answer expected (issue 12).

Read ``TABLE`` as the list: every row is ``Bad(surface, case, given, answer)``. The answer is a one-line
error naming the key or field, or an HTTP 4xx whose JSON ``error`` names it; never a traceback, a 500, or a
changed cluster. The surfaces and how a row is run:

- ``config``: ``given`` edits a valid config (dotted paths; ``DROP`` removes the key); ``answer`` is one of
  the lines of the ConfigError (``raftpg --validate-config`` prints them, so does a SIGHUP reload's log).
- ``file``: ``given`` is the text of a config file; ``answer`` is the ConfigError line, the path shown as
  ``<file>``.
- ``cli``: ``given`` is argv for ``raftpg`` or ``raftpgctl`` (``<bad>``: a config without raft.password);
  ``answer`` is ``(exit status, last line on stderr)``.
- ``rest``: ``given`` is ``(method, path, body, headers)`` sent to the real app over the real NodeCommands
  and an in-memory DCS; ``answer`` is ``(status, error)``. The stored config must be unchanged after it.
- ``conn_url``: a member's ``conn_url`` as the DCS could hold it; ``answer`` is the PgError raftpg raises
  instead of handing it to pg_basebackup, pg_rewind or primary_conninfo.
- ``dcs``: a stored ``config`` document (parse level, through ``raftpg.dcs.codec``); ``answer`` is the
  problem listed in ``ClusterView.problems``: the config is not used.
- ``data_dir``: a data directory made by ``given`` (a setup below); ``answer`` is the one line
  ``pg.controldata.data_dir_problem`` / ``data_dir_state`` / ``decide`` gives.

Raft frames (garbage, huge length prefixes, floods) are tested with real sockets in tests/integration;
poisoned DCS documents of every key in tests/unit/dcs_poison.py.
"""

from __future__ import annotations

import copy
import json
import os
import pwd
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent / "api"))
from api_fakes import FakeView, with_client  # noqa: E402

from raftpg.api import ApiSettings, NodeCommands, make_app  # noqa: E402
from raftpg.cli import main as raftpg_cli  # noqa: E402
from raftpg.cli.ctl import cli as raftpgctl  # noqa: E402
from raftpg.clock import FakeClock, SystemClock  # noqa: E402
from raftpg.config import ConfigError, load_config, parse_config  # noqa: E402
from raftpg.config.dcs_sections import RAFT_PASSWORD_REQUIRED  # noqa: E402
from raftpg.dcs.codec import cluster_from_documents  # noqa: E402
from raftpg.dcs.keys import KeyLayout  # noqa: E402
from raftpg.dcs.memory import memory_dcs  # noqa: E402
from raftpg.model import DynamicConfig  # noqa: E402
from raftpg.pg.connection import member_conninfo  # noqa: E402
from raftpg.pg.controldata import data_dir_problem, data_dir_state  # noqa: E402
from raftpg.pg.settings import PgSettings  # noqa: E402
from raftpg.pg.tools import PgError  # noqa: E402

DROP = object()
SECRET = "hunter2-do-not-print"
ONE_LINE = "must not contain control characters"
NOT_A_GUC = "is not a parameter name: letters, digits, '_' and '.' only, not starting with a digit"
PG_EXPOSED = ("required because postgresql.listen includes {host} (not loopback): other machines can reach this "
              "PostgreSQL, so every role raftpg uses needs a password (scram-sha-256)")
PORTS = "Raft, REST and PostgreSQL each need their own"
FIXED_GUC_TEXT = "{\"postgresql\": {\"parameters\": {\"zz.x = 1\\nsynchronous_standby_names\": \"x\"}}}"


@dataclass(frozen=True)
class Bad:
    surface: str
    case: str
    given: Any
    answer: Any


TABLE: list[Bad] = [
    # --- config: the Raft port is always authenticated (issue 12 item 1) -----------------------------------
    Bad("config", "raft without a password", {"raft.password": DROP}, f"raft.password: {RAFT_PASSWORD_REQUIRED}"),
    Bad("config", "raft password empty", {"raft.password": ""}, f"raft.password: {RAFT_PASSWORD_REQUIRED}"),
    Bad("config", "raft password not a string", {"raft.password": [SECRET]},
        "raft.password: must be a string, got a value of type list"),
    Bad("config", "witness without a raft password", {"witness": True, "postgresql": DROP, "raft.password": DROP},
        f"raft.password: {RAFT_PASSWORD_REQUIRED}"),
    # --- config: PostgreSQL off loopback needs passwords (item 4) -------------------------------------------
    Bad("config", "PostgreSQL on a LAN address, superuser without password",
        {"postgresql.listen": "10.0.0.1:5432", "postgresql.authentication.superuser.password": DROP},
        "postgresql.authentication.superuser.password: " + PG_EXPOSED.format(host="10.0.0.1")),
    Bad("config", "PostgreSQL on every address, replication without password",
        {"postgresql.listen": "*:5432", "postgresql.connect_address": "10.0.0.1:5432",
         "postgresql.authentication.replication.password": DROP},
        "postgresql.authentication.replication.password: " + PG_EXPOSED.format(host="*")),
    Bad("config", "PostgreSQL on loopback and LAN, rewind role without password",
        {"postgresql.listen": "127.0.0.1,10.0.0.1:5432", "postgresql.authentication.rewind.password": DROP},
        "postgresql.authentication.rewind.password: " + PG_EXPOSED.format(host="10.0.0.1")),
    # --- config: one parameter is one line of postgresql.conf (item 5) --------------------------------------
    Bad("config", "parameter name carrying a second line",
        {"postgresql.parameters": {"zz.x = 1\nsynchronous_standby_names": "x"}},
        f"postgresql.parameters: 'zz.x = 1\\nsynchronous_standby_names' {NOT_A_GUC}"),
    Bad("config", "cluster-wide parameter name carrying a second line",
        {"bootstrap.dcs": {"postgresql": {"parameters": {"a\nsynchronous_standby_names": "''"}}}},
        f"bootstrap.dcs.postgresql.parameters: 'a\\nsynchronous_standby_names' {NOT_A_GUC}"),
    Bad("config", "parameter value with a newline", {"postgresql.parameters": {"work_mem": "4MB\nfsync = off"}},
        f"postgresql.parameters.work_mem: {ONE_LINE} (found '\\n')"),
    Bad("config", "parameter value with a carriage return", {"postgresql.parameters": {"work_mem": "4MB\r"}},
        f"postgresql.parameters.work_mem: {ONE_LINE} (found '\\r')"),
    Bad("config", "parameter value with NUL", {"postgresql.parameters": {"application_name": "a\x00b"}},
        f"postgresql.parameters.application_name: {ONE_LINE} (found '\\x00')"),
    Bad("config", "parameter value with a unicode line separator", {"postgresql.parameters": {"x.y": "a\u2028b"}},
        f"postgresql.parameters.x.y: {ONE_LINE} (found '\\u2028')"),
    Bad("config", "parameter name starting with a digit", {"postgresql.parameters": {"9lives": 1}},
        f"postgresql.parameters: '9lives' {NOT_A_GUC}"),
    Bad("config", "parameter name with '='", {"postgresql.parameters": {"a=b": 1}},
        f"postgresql.parameters: 'a=b' {NOT_A_GUC}"),
    Bad("config", "parameter name empty", {"postgresql.parameters": {"": 1}}, f"postgresql.parameters: '' {NOT_A_GUC}"),
    Bad("config", "one parameter spelt twice (names are case-insensitive)",
        {"postgresql.parameters": {"Work_Mem": "1MB", "work_mem": "2MB"}},
        "postgresql.parameters.work_mem: names the same parameter as 'Work_Mem' (names are case-insensitive)"),
    Bad("config", "parameter value a list", {"postgresql.parameters": {"work_mem": ["4MB"]}},
        "postgresql.parameters.work_mem: must be a string, number or boolean, got a list"),
    Bad("config", "parameter value infinite", {"postgresql.parameters": {"random_page_cost": float("inf")}},
        "postgresql.parameters.random_page_cost: must be a finite number"),
    Bad("config", "pg_hba item carrying a second line", {"postgresql.pg_hba": ["host all all 10.0.0.0/8 scram-sha-256\n"
                                                                             "host all all all trust"]},
        f"postgresql.pg_hba[0]: {ONE_LINE} (found '\\n')"),
    Bad("config", "cluster-wide pg_hba item with a carriage return",
        {"bootstrap.dcs": {"postgresql": {"pg_hba": ["local all all peer\rhost all all all trust"]}}},
        f"bootstrap.dcs.postgresql.pg_hba[0]: {ONE_LINE} (found '\\r')"),
    # --- config: names and ports (item 7) -----------------------------------------------------------------
    Bad("config", "member name '.'", {"name": "."}, "name: must not be '.' (it is a path component)"),
    Bad("config", "member name '..'", {"name": ".."}, "name: must not be '..' (it is a path component)"),
    Bad("config", "member name with a newline", {"name": "n\n1"}, f"name: {ONE_LINE} (found '\\n')"),
    Bad("config", "member name with a tab", {"name": "n\t1"}, f"name: {ONE_LINE} (found '\\t')"),
    Bad("config", "member name with a terminal escape", {"name": "\x1b[31mn1"}, f"name: {ONE_LINE} (found '\\x1b')"),
    Bad("config", "member name with DEL", {"name": "n1\x7f2"}, f"name: {ONE_LINE} (found '\\x7f')"),
    Bad("config", "member name with a slash", {"name": "../n1"},
        "name: must not contain '/' (it is part of DCS key names), got '../n1'"),
    Bad("config", "member name of 200 characters", {"name": "n" * 200}, "name: must be at most 128 characters, got 200"),
    Bad("config", "member name a list", {"name": ["n1"]}, "name: must be a string, got a list"),
    Bad("config", "scope '..'", {"scope": ".."}, "scope: must not be '..' (it is a path component)"),
    Bad("config", "scope with a newline", {"scope": "a\nb"}, f"scope: {ONE_LINE} (found '\\n')"),
    Bad("config", "namespace with a newline", {"namespace": "/service\n/"}, f"namespace: {ONE_LINE} (found '\\n')"),
    Bad("config", "role name with a newline", {"postgresql.authentication.superuser.username": "postgres\nx"},
        f"postgresql.authentication.superuser.username: {ONE_LINE} (found '\\n')"),
    Bad("config", "PostgreSQL on the REST port", {"postgresql.listen": "127.0.0.1:8008"},
        f"postgresql.listen: port 8008 is also restapi.listen's port; {PORTS}"),
    Bad("config", "Raft on the REST port", {"raft.self_addr": "127.0.0.1:8008"},
        f"raft.self_addr: port 8008 is also restapi.listen's port; {PORTS}"),
    Bad("config", "Raft bind port on the PostgreSQL port", {"raft.bind_addr": "127.0.0.1:5432"},
        f"postgresql.listen: port 5432 is also raft.bind_addr's port; {PORTS}"),
    Bad("config", "same port on different addresses", {"postgresql.listen": "127.0.0.2:2222"},
        f"postgresql.listen: port 2222 is also raft.self_addr's port; {PORTS}"),
    Bad("config", "two services advertise one address",
        {"restapi.connect_address": "10.0.0.1:6000", "postgresql.connect_address": "10.0.0.1:6000"},
        "postgresql.connect_address: 10.0.0.1:6000 is also restapi.connect_address; each service needs its own "
        "address"),
    # --- config: secrets never echoed (item 10) ------------------------------------------------------------
    Bad("config", "REST authentication written as one string", {"restapi.authentication": f"admin:{SECRET}"},
        "restapi.authentication: must be a mapping of keys, got a value of type str"),
    Bad("config", "superuser written as one string", {"postgresql.authentication.superuser": f"postgres:{SECRET}"},
        "postgresql.authentication.superuser: must be a mapping of keys, got a value of type str"),
    Bad("config", "superuser password a mapping", {"postgresql.authentication.superuser.password": {"pw": SECRET}},
        "postgresql.authentication.superuser.password: must be a string, got a value of type dict"),
    Bad("config", "whole postgresql section a list", {"postgresql": [{"authentication": SECRET}]},
        "postgresql: must be a mapping of keys, got a list"),
    Bad("config", "consul token a list", {"raft": DROP, "consul": {"token": [SECRET]}},
        "consul.token: must be a string, got a value of type list"),
    Bad("config", "etcd3 password without a username", {"raft": DROP, "etcd3": {"hosts": "a:1", "password": SECRET}},
        "etcd3.username: username and password go together"),
    # --- config files --------------------------------------------------------------------------------------
    Bad("file", "empty file", "", "<file>: config file is empty"),
    Bad("file", "top level a list", "- a\n- b\n", "<file>: the top level must be a mapping of keys, got list"),
    Bad("file", "a Python object tag", "scope: !!python/object/apply:os.system [id]\n",
        "<file>:1:8: could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'"),
    Bad("file", "a key written twice", "scope: a\nname: n1\nscope: b\n",
        "<file>:3:1: duplicate key 'scope' (first defined on line 1)"),
    Bad("file", "an unterminated quote around a password", f'raft:\n  password: "{SECRET}\n',
        "<file>:3:1: found unexpected end of stream (while scanning a quoted scalar)"),
    Bad("file", "not UTF-8", b"scope: \xff\n",
        "<file>: cannot read the config file: 'utf-8' codec can't decode byte 0xff in position 7: invalid start byte"),
    # --- command lines ------------------------------------------------------------------------------------
    Bad("cli", "raftpg without a config", ["raftpg"],
        (2, "no config: give a config file or directory, or set PATRONI_CONFIGURATION or PATRONI_* (RAFTPG_*) "
            "variables")),
    Bad("cli", "raftpg with an unknown option", ["raftpg", "--bogus"], (2, "raftpg: error: unrecognized arguments: --bogus")),
    Bad("cli", "raftpg --validate-config of a missing file", ["raftpg", "--validate-config", "/nonexistent/r.yml"],
        (2, "/nonexistent/r.yml: cannot read the config file: [Errno 2] No such file or directory: "
            "'/nonexistent/r.yml'")),
    Bad("cli", "raftpg --validate-config without raft.password", ["raftpg", "--validate-config", "<bad>"],
        (2, f"raft.password: {RAFT_PASSWORD_REQUIRED}")),
    Bad("cli", "raftpg demo with no nodes", ["raftpg", "demo", "--nodes", "0"], (2, "raftpg demo: --nodes must be at least 1")),
    Bad("cli", "raftpg demo --nodes not a number", ["raftpg", "demo", "--nodes", "many"],
        (2, "raftpg demo: error: argument --nodes: invalid int value: 'many'")),
    Bad("cli", "raftpgctl with an unknown verb", ["raftpgctl", "explode"],
        (2, "Error: No such command 'explode'. Did you mean 'reload'?")),
    Bad("cli", "raftpgctl with a missing config file", ["raftpgctl", "-c", "/nonexistent/r.yml", "list"],
        (1, "raftpgctl: cannot read the config file /nonexistent/r.yml: No such file or directory")),
    # --- REST: refused with 4xx, nothing stored ------------------------------------------------------------
    Bad("rest", "PATCH /config: a parameter name carrying a second line",
        ("PATCH", "/config", FIXED_GUC_TEXT, {}),
        (400, f"postgresql.parameters: 'zz.x = 1\\nsynchronous_standby_names' {NOT_A_GUC}")),
    Bad("rest", "PUT /config: a parameter value with a newline",
        ("PUT", "/config", json.dumps({"postgresql": {"parameters": {"work_mem": "1MB\nfsync = off"}}}), {}),
        (400, f"postgresql.parameters.work_mem: {ONE_LINE} (found '\\n')")),
    Bad("rest", "PATCH /config: a pg_hba item carrying a second line",
        ("PATCH", "/config", json.dumps({"postgresql": {"pg_hba": ["local all all peer\nhost all all all trust"]}}), {}),
        (400, f"postgresql.pg_hba[0]: {ONE_LINE} (found '\\n')")),
    Bad("rest", "PATCH /config: one parameter spelt twice",
        ("PATCH", "/config", json.dumps({"postgresql": {"parameters": {"PORT": 1, "port": 2}}}), {}),
        (400, "postgresql.parameters.port: names the same parameter as 'PORT' (names are case-insensitive)")),
    Bad("rest", "PATCH /config: a parameter value that is an object",
        ("PATCH", "/config", json.dumps({"postgresql": {"parameters": {"archive_command": {"sh": "x"}}}}), {}),
        (400, "postgresql.parameters.archive_command: must be a string, number or boolean, got a dict")),
    Bad("rest", "PATCH /config: not JSON", ("PATCH", "/config", "{ttl: 1", {}),
        (400, "body: not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))")),
    Bad("rest", "PATCH /config: a JSON array", ("PATCH", "/config", "[1, 2]", {}), (400, "body: must be a JSON object, got list")),
    Bad("rest", "POST /switchover: a leader that is a number", ("POST", "/switchover", '{"leader": 7}', {}),
        (400, "leader: must be a string, got int")),
    Bad("rest", "GET /replica?lag= not a size", ("GET", "/replica?lag=lots", None, {}),
        (400, "lag: not a size (use bytes or a unit such as 16MB): 'lots'")),
    Bad("rest", "unknown path", ("GET", "/../etc/passwd", None, {}), (404, "not found")),
    Bad("rest", "method not allowed", ("DELETE", "/config", None, {}), (405, "method not allowed")),
    Bad("rest", "body over the cap", ("PATCH", "/config", "x" * (65 * 1024), {}),
        (413, "body: larger than 65536 bytes")),
]


# ------------------------------------------------------------------------------------------------ runners


def base_config() -> dict[str, Any]:
    """A valid one-node config on loopback, every secret set (rows take away or break one thing)."""
    return {
        "scope": "batman", "name": "n1",
        "restapi": {"listen": "127.0.0.1:8008"},
        "raft": {"data_dir": "/var/lib/raftpg/raft", "self_addr": "127.0.0.1:2222", "password": "raft-pw"},
        "postgresql": {"listen": "127.0.0.1:5432", "data_dir": "/var/lib/postgresql/data",
                       "authentication": {"superuser": {"password": "su-pw"}, "replication": {"password": "re-pw"},
                                          "rewind": {"username": "rewinder", "password": "rw-pw"}}},
    }


def edited(changes: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(base_config())
    for path, value in changes.items():
        *parents, last = path.split(".")
        node = doc
        for part in parents:
            node = node.setdefault(part, {})
        if value is DROP:
            node.pop(last, None)
        else:
            node[last] = value
    return doc


def config_errors(changes: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(edited(changes))
    return list(info.value.errors)


def file_errors(text: str | bytes, tmp_path: Path) -> list[str]:
    path = tmp_path / "raftpg.yml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [line.replace(str(path), "<file>") for line in info.value.errors]


def run_cli(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    bad = tmp_path / "bad.yml"
    bad.write_text(json.dumps(edited({"raft.password": DROP})))
    args = [str(bad) if arg == "<bad>" else arg for arg in argv[1:]]
    if argv[0] == "raftpgctl":
        result = CliRunner().invoke(raftpgctl, args, prog_name="raftpgctl")
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        return result.exit_code, result.output.strip().splitlines()[-1]
    try:
        status = raftpg_cli.main(args)
    except SystemExit as exc:  # argparse
        status = exc.code if isinstance(exc.code, int) else 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, err.strip().splitlines()[-1]


class Loop:
    def request(self, what: str) -> None: ...

    def wake(self) -> None: ...


def run_rest(request: tuple[str, str, str | None, dict[str, str]]) -> tuple[int, str, bool]:
    """(status, error, whether the stored config is unchanged) for one request to the real API."""
    method, path, body, headers = request
    dcs = memory_dcs(FakeClock(), KeyLayout("/service/", "demo"))
    dcs.initialize(timeout_s=1)
    dcs.set_initialize("1", timeout_s=1)
    assert dcs.set_config({"ttl": 30, "loop_wait": 10, "retry_timeout": 10}, None, timeout_s=1)
    before = dcs.load(timeout_s=1)
    commands = NodeCommands(dcs=dcs, loop=Loop(), clock=SystemClock(), raft=None, timeout_s=1.0)
    app = make_app(FakeView(), commands, ApiSettings())

    async def send(client: Any) -> tuple[int, str]:
        kwargs: dict[str, Any] = {"headers": {"Content-Type": "application/json", **headers}}
        if body is not None:
            kwargs["data"] = body.encode()
        response = await client.request(method, path, **kwargs)
        return response.status, await response.text()

    status, text = with_client(app, send)
    after = dcs.load(timeout_s=1)
    error = json.loads(text).get("error", text) if text.startswith("{") else text
    return status, error, (after.config, after.config_revision) == (before.config, before.config_revision)


@pytest.mark.parametrize("row", TABLE, ids=[f"{row.surface}: {row.case}" for row in TABLE])
def test_refused(row: Bad, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if row.surface == "config":
        lines = config_errors(row.given)
        assert row.answer in lines, lines
    elif row.surface == "file":
        lines = file_errors(row.given, tmp_path)
        assert row.answer in lines, lines
    elif row.surface == "cli":
        assert run_cli(row.given, tmp_path, capsys) == row.answer
        return
    elif row.surface == "rest":
        status, error, unchanged = run_rest(row.given)
        assert (status, error) == row.answer
        assert unchanged, "a refused request changes nothing"
        return
    else:
        raise AssertionError(f"unknown surface {row.surface}")
    assert all("\n" not in line and "Traceback" not in line for line in lines)
    assert not any(SECRET in line for line in lines), "a secret was echoed"


def test_the_table_is_long_enough_to_read_as_the_list() -> None:
    rows = TABLE + CONN_URLS_AS_ROWS + DCS_AS_ROWS + DATA_DIR_AS_ROWS
    assert len(rows) >= 60 and len({(r.surface, r.case) for r in rows}) == len(rows)


# -------------------------------------------------------------- conn_url, DCS documents, data directories
# (kept as rows too; each needs its own runner, so they are listed here rather than in TABLE)

CONN_URLS = [
    ("two hosts", "host=10.0.0.1,10.6.6.6 port=5432", "a member's address must be one TCP host name or IP address, "
     "got host='10.0.0.1,10.6.6.6'"),
    ("a unix socket on this machine", "host=/var/run/postgresql port=5432",
     "a member's address must be one TCP host name or IP address, got host='/var/run/postgresql'"),
    ("no host at all", "port=5432 passfile=/etc/shadow",
     "a member's address must be one TCP host name or IP address, got host=''"),
    ("two ports", "postgres://10.0.0.1:5432,10.0.0.2:5433/postgres",
     "a member's address must be one TCP host name or IP address, got host='10.0.0.1,10.0.0.2'"),
    ("port out of range", "host=10.0.0.1 port=70000", "a member's port must be one number in 1..65535, got port='70000'"),
    ("an unknown libpq option", "postgres://10.0.0.1/db?evil=1", 'not a valid conninfo: invalid URI query parameter: "evil"'),
]
CONN_URLS_AS_ROWS = [Bad("conn_url", case, given, answer) for case, given, answer in CONN_URLS]


@pytest.mark.parametrize("case, conn_url, answer", CONN_URLS, ids=[c[0] for c in CONN_URLS])
def test_refused_conn_url(case: str, conn_url: str, answer: str) -> None:
    with pytest.raises(PgError) as info:
        member_conninfo(conn_url, user="replicator", passfile="/var/lib/postgresql/.pgpass.raftpg-n2")
    assert str(info.value) == answer


DEFAULTS = "using the built-in defaults"
DCS_CONFIGS = [
    ("config document with a parameter name carrying a second line", FIXED_GUC_TEXT,
     f"config: postgresql.parameters: 'zz.x = 1\\nsynchronous_standby_names' {NOT_A_GUC}; {DEFAULTS}"),
    ("config document with a pg_hba item carrying a second line",
     json.dumps({"postgresql": {"pg_hba": ["local all all peer\nhost all all all trust"]}}),
     f"config: postgresql.pg_hba[0]: {ONE_LINE} (found '\\n'); {DEFAULTS}"),
]
DCS_AS_ROWS = [Bad("dcs", case, given, answer) for case, given, answer in DCS_CONFIGS]


@pytest.mark.parametrize("case, document, problem", DCS_CONFIGS, ids=[c[0] for c in DCS_CONFIGS])
def test_refused_dcs_config_document(case: str, document: str, problem: str) -> None:
    view = cluster_from_documents({"initialize": ("1", 1), "config": (document, 2)}, 2)
    assert problem in view.problems
    assert view.config == DynamicConfig(), "the unreadable document is not used (no fallback here: defaults)"


def _settings(data_dir: Path) -> PgSettings:
    return PgSettings(name="n1", scope="demo", data_dir=str(data_dir), bin_dir="/nonexistent-bin")


def _made(tmp_path: Path, *, mode: int = 0o700, version: str | None = "15", control: bool = True) -> Path:
    data = tmp_path / "data"
    (data / "global").mkdir(parents=True)
    if version is not None:
        (data / "PG_VERSION").write_text(version + "\n")
    if control:
        (data / "global" / "pg_control").write_bytes(b"\0" * 8192)
    data.chmod(mode)
    return data


BROKEN = "data_dir_state: broken"  # the HA loop then moves it aside (never deletes it) and clones
DATA_DIRS = [
    ("data directory of PostgreSQL 16 for the binaries of 15", dict(version="16"),
     "postgresql.data_dir: {d} holds PostgreSQL 16 data but postgresql.bin_dir runs PostgreSQL 15; set bin_dir to "
     "the version 16 binaries (or pg_upgrade first)"),
    ("PG_VERSION that is not a version", dict(version="fifteen"),
     "postgresql.data_dir: {d}/PG_VERSION holds 'fifteen', not a PostgreSQL major version"),
    ("data directory writable by others", dict(mode=0o777),
     "postgresql.data_dir: {d} has mode 0777; PostgreSQL needs 0700 (or 0750): chmod 0700 {d}"),
    ("data directory readable by others", dict(mode=0o705),
     "postgresql.data_dir: {d} has mode 0705; PostgreSQL needs 0700 (or 0750): chmod 0700 {d}"),
    ("data directory owned by another user", dict(),
     "postgresql.data_dir: {d} is owned by {owner}, not by uid 4242424 who runs the agent; PostgreSQL refuses a "
     "data directory it does not own"),
    ("data directory without PG_VERSION", dict(version=None), BROKEN),
    ("data directory without global/pg_control", dict(control=False), BROKEN),
]
DATA_DIR_AS_ROWS = [Bad("data_dir", case, given, answer) for case, given, answer in DATA_DIRS]


@pytest.mark.parametrize("case, setup, answer", DATA_DIRS, ids=[c[0] for c in DATA_DIRS])
def test_refused_data_dir(case: str, setup: dict[str, Any], answer: str, tmp_path: Path) -> None:
    data = _made(tmp_path, **setup)
    if answer == BROKEN:  # no pg_controldata run: the files it needs are missing
        state, _ = data_dir_state(_settings(data))
        assert f"data_dir_state: {state.value}" == answer
        return
    uid = 4242424 if "another user" in case else os.geteuid()
    owner = os.stat(data).st_uid
    expected = answer.format(d=data, owner=f"{pwd.getpwuid(owner).pw_name} (uid {owner})")
    assert data_dir_problem(str(data), 15, uid=uid) == expected


def test_a_data_directory_of_another_cluster_is_refused() -> None:
    """Safety rule 7, as the HA core answers it (foreign system identifier): one Refuse, nothing else."""
    from raftpg.ha.decide import decide
    from raftpg.ha.inputs import Inputs, LeaseState, Me, Memory
    from raftpg.model import ClusterView, DataDir, DynamicConfig, LocalState

    view = ClusterView(initialize="7000000000000000001", config=DynamicConfig(), revision=3)
    local = LocalState(data_dir=DataDir.INITIALIZED, sysid="7000000000000000002")
    decision = decide(Inputs(view=view, local=local, me=Me("n1"), lease=LeaseState(), memory=Memory(),
                             now=100.0, now_wall=1_700_000_000.0))
    assert [type(a).__name__ for a in decision.actions] == ["Refuse"]
    assert decision.actions[0].reason == ("data directory has system identifier 7000000000000000002 but cluster "
                                          "'7000000000000000001' is registered in the DCS: this node belongs to a "
                                          "different cluster; refusing to join")
