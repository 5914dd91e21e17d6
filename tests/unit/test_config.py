"""raftpg.config: loading, defaults, and one test row per validation rule (asserting on the key path)."""

from __future__ import annotations

import copy
import json
import pickle
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from raftpg.config import (
    Config,
    ConfigError,
    dcs_kind,
    dynamic_config_warnings,
    load_config,
    parse_config,
    split_host_port,
    validate_dynamic_config,
)
from raftpg.model import DynamicConfig

FIXTURES = Path(__file__).parent / "fixtures" / "config"
RAFT_RCE = "pysyncobj unpickles every frame"


def minimal() -> dict[str, Any]:
    """The smallest valid config: one node, everything on loopback."""
    return {
        "scope": "batman",
        "name": "n1",
        "restapi": {"listen": "127.0.0.1:8008"},
        "raft": {"data_dir": "/var/lib/raftpg/raft", "self_addr": "127.0.0.1:2222", "password": "raft-secret"},
        "postgresql": {"listen": "127.0.0.1:5432", "data_dir": "/var/lib/postgresql/data"},
    }


_DROP = object()


def edited(changes: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """``minimal()`` with dotted paths set to values (``_DROP`` removes the key)."""
    doc = copy.deepcopy(base if base is not None else minimal())
    for path, value in changes.items():
        *parents, last = path.split(".")
        node = doc
        for part in parents:
            node = node.setdefault(part, {})
        if value is _DROP:
            node.pop(last, None)
        else:
            node[last] = value
    return doc


def errors_of(doc: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    return str(info.value)


# --- loading a whole config ------------------------------------------------------------------------------


def private_copy(tmp_path: Path, name: str = "patroni_raft.yml", mode: int = 0o600) -> Path:
    """The fixture as an operator would keep it (it holds passwords: mode 0600, not git's 0644)."""
    path = tmp_path / name
    path.write_text((FIXTURES / name).read_text())
    path.chmod(mode)
    return path


def test_patroni_style_file_loads_unchanged(tmp_path: Path) -> None:
    config = load_config(private_copy(tmp_path))
    assert config.warnings == ()
    assert (config.scope, config.name, config.namespace) == ("batman", "postgresql0", "/service/")
    assert dcs_kind(config) == "raft"
    assert config.raft is not None and config.postgresql is not None
    assert config.raft.partner_addrs == ("10.0.0.12:2222", "10.0.0.13:2222")
    assert config.restapi.connect_host == "10.0.0.11" and config.restapi.listen_port == 8008
    assert config.bootstrap.post_bootstrap == "/usr/local/bin/setup_cluster.sh"  # from post_init
    assert config.bootstrap.initdb_args() == ["--encoding=UTF8", "--data-checksums"]
    assert config.bootstrap.dcs.postgresql.use_pg_rewind is True
    assert config.bootstrap.dcs.postgresql.parameters["wal_log_hints"] is True
    assert config.postgresql.basebackup_args() == ["--verbose", "--max-rate=100M"]
    assert config.postgresql.authentication.rewind is not None
    assert config.postgresql.authentication.rewind.username == "rewind_user"
    assert config.postgresql.callbacks.on_role_change == "/usr/local/bin/on_role_change.sh"
    assert config.log.level == "INFO"


def test_minimal_config_gets_patroni_defaults() -> None:
    config = parse_config(minimal())
    dcs = config.bootstrap.dcs
    assert config.namespace == "/service/"
    assert config.dcs_prefix == "/service/batman/"
    assert (config.log.level, config.log.dir) == ("INFO", None)
    assert (dcs.ttl, dcs.loop_wait, dcs.retry_timeout) == (30, 10, 10)
    assert dcs.maximum_lag_on_failover == 1048576
    assert (dcs.primary_start_timeout, dcs.primary_stop_timeout) == (300, 0)
    assert (dcs.synchronous_mode, dcs.synchronous_mode_strict, dcs.synchronous_node_count) == (False, False, 1)
    assert (dcs.check_timeline, dcs.pause) == (False, False)
    assert (dcs.postgresql.use_pg_rewind, dcs.postgresql.use_slots) == (False, True)
    assert config.restapi.connect_address == "127.0.0.1:8008"
    assert config.restapi.verify_client == "none" and config.restapi.base_url == "http://127.0.0.1:8008"
    pg = config.postgresql
    assert pg is not None
    assert pg.connect_address == "127.0.0.1:5432" and pg.port == 5432
    assert pg.pgpass == "/var/lib/postgresql/.pgpass.raftpg-n1", "beside the data directory, not in /tmp"
    assert pg.authentication.superuser.username == "postgres"
    assert pg.authentication.replication.username == "replicator"
    assert pg.authentication.rewind is None and pg.use_pg_rewind is None
    assert config.watchdog.mode == "automatic" and config.watchdog.safety_margin == 5
    assert config.tags.to_model().failover_priority == 1 and not config.tags.nofailover
    assert config.witness is False and config.warnings == ()
    assert config.bootstrap.initdb_args() == [] and pg.basebackup_args() == []


def test_config_is_frozen() -> None:
    config = parse_config(edited({"postgresql.parameters": {"work_mem": "4MB"}}))
    with pytest.raises(ValidationError):
        config.scope = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        config.bootstrap.dcs.ttl = 5  # type: ignore[misc]
    assert config.postgresql is not None
    with pytest.raises(TypeError):
        config.postgresql.parameters["work_mem"] = "8MB"  # type: ignore[index]
    assert isinstance(config.raft.partner_addrs, tuple)  # type: ignore[union-attr]


def test_config_dumps_to_json_and_leaves_the_input_alone() -> None:
    doc = edited({"tags.rack": {"row": [1, 2]}, "bootstrap.dcs.my_extension": {"a": [{"b": 1}]}, "log": None})
    before = copy.deepcopy(doc)
    config = parse_config(doc)
    assert doc == before
    assert json.loads(json.dumps(config.model_dump(mode="json"))) == config.to_dict()
    assert config.to_dict()["tags"]["rack"] == {"row": [1, 2]}
    assert config.log.level == "INFO"  # an empty section means all defaults
    with pytest.raises(TypeError):
        config.tags.extra["rack"]["row"] = ()
    assert copy.deepcopy(config) == config and pickle.loads(pickle.dumps(config)) == config


def test_lenient_scalars_from_patroni_yaml() -> None:
    config = parse_config(edited({
        "name": 1,
        "bootstrap.dcs": {"ttl": "40", "loop_wait": "10", "synchronous_mode": "on", "pause": "off"},
        "log.level": "debug",
    }))
    assert config.name == "1"
    assert (config.bootstrap.dcs.ttl, config.bootstrap.dcs.synchronous_mode) == (40, True)
    assert config.bootstrap.dcs.pause is False
    assert config.log.level == "DEBUG"
    assert parse_config(edited({"log.level": "Warn"})).log.level == "WARNING"


@pytest.mark.parametrize(("written", "normalized"), [
    ("service", "/service/"), ("/service", "/service/"), ("service/", "/service/"), ("/a/b/", "/a/b/"),
])
def test_namespace_is_normalized(written: str, normalized: str) -> None:
    assert parse_config(edited({"namespace": written})).namespace == normalized


@pytest.mark.parametrize(("yaml_value", "mode"), [("off", "off"), ("on", "automatic"), ("false", "off"),
                                                   ("true", "automatic"), ("required", "required"),
                                                   ("Automatic", "automatic")])
def test_watchdog_mode_accepts_yaml_booleans(tmp_path: Path, yaml_value: str, mode: str) -> None:
    text = (FIXTURES / "patroni_raft.yml").read_text().replace("mode: automatic", f"mode: {yaml_value}")
    path = tmp_path / "c.yml"
    path.write_text(text)
    assert load_config(path).watchdog.mode == mode


def test_a_config_file_with_passwords_readable_by_others_warns(tmp_path: Path) -> None:
    """Issue 12: the Raft password and the superuser's each grant code execution as the agent's user."""
    path = private_copy(tmp_path, mode=0o644)
    assert load_config(path).warnings == (
        f"{path}: holds passwords but is readable by other users (mode 0644): chmod 600 {path}",)
    path.chmod(0o640)
    assert "readable by other users (mode 0640)" in load_config(path).warnings[0]


# --- one row per rule: the error names the key path ---------------------------------------------------

WILD_RAFT = {"raft.bind_addr": "0.0.0.0:2222", "raft.password": "s3cret"}

ERROR_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("scope missing", {"scope": _DROP}, "scope: field required"),
    ("scope empty", {"scope": "  "}, "scope: must not be empty"),
    ("scope with slash", {"scope": "a/b"}, "scope: must not contain '/'"),
    ("name missing", {"name": _DROP}, "name: field required"),
    ("name with slash", {"name": "n/1"}, "name: must not contain '/'"),
    ("log level", {"log.level": "LOUD"}, "log.level: must be one of"),
    ("log not a mapping", {"log": "debug"}, "log: must be a mapping"),
    ("restapi missing", {"restapi": _DROP}, "restapi: field required"),
    ("restapi listen no port", {"restapi.listen": "127.0.0.1"}, "restapi.listen: must be 'host:port'"),
    ("restapi listen port range", {"restapi.listen": "127.0.0.1:70000"}, "restapi.listen: port must be in"),
    ("restapi wildcard needs connect_address", {"restapi.listen": "0.0.0.0:8008"},
     "restapi.connect_address: required when restapi.listen is a wildcard"),
    ("restapi connect wildcard", {"restapi.connect_address": "*:8008"}, "restapi.connect_address: must be an"),
    ("restapi keyfile alone", {"restapi.keyfile": "/k.pem"}, "restapi.keyfile: set without certfile"),
    ("restapi verify_client needs CA", {"restapi.certfile": "/c.pem", "restapi.verify_client": "required"},
     "restapi.verify_client: 'required' needs certfile and cafile"),
    ("restapi verify_client value", {"restapi.verify_client": "maybe"}, "restapi.verify_client: must be one of"),
    ("restapi auth password missing", {"restapi.authentication": {"username": "u"}},
     "restapi.authentication.password: field required"),
    ("no DCS", {"raft": _DROP}, "one of raft, etcd3, consul is required"),
    ("two DCS", {"raft": _DROP, "etcd3": {"hosts": ["127.0.0.1:2379"]}, "consul": {"host": "127.0.0.1:8500"}},
     "etcd3: only one DCS section allowed, found etcd3 and consul"),
    ("raft data_dir empty", {"raft.data_dir": " "}, "raft.data_dir: must not be empty"),
    ("raft self_addr", {"raft.self_addr": _DROP}, "raft.self_addr: field required: the address the other members"),
    ("raft self_addr bad", {"raft.self_addr": "node1:x"}, "raft.self_addr: port must be a number"),
    ("raft self_addr wildcard", {"raft.self_addr": "0.0.0.0:2222", "raft.password": "x"},
     "raft.self_addr: must be an address the other members can reach"),
    ("raft self among partners", {"raft.partner_addrs": ["127.0.0.1:2223", "127.0.0.1:2222"]},
     "raft.partner_addrs[1]: is this node's own self_addr"),
    ("raft duplicate partners", {"raft.partner_addrs": ["127.0.0.1:2223", "127.0.0.1:2223"]},
     "raft.partner_addrs[1]: duplicate address"),
    ("raft partner bad", {"raft.partner_addrs": ["127.0.0.1:2223", "nope:"]}, "raft.partner_addrs[1]: port must be"),
    ("raft wildcard bind without password", {"raft.bind_addr": "0.0.0.0:2222", "raft.password": _DROP},
     f"raft.password: required, also on loopback: {RAFT_RCE}"),
    ("raft LAN self_addr without password", {"raft.self_addr": "10.0.0.1:2222", "raft.password": _DROP},
     "raft.password: required"),
    ("raft hostname without password", {"raft.self_addr": "node1.example:2222", "raft.password": _DROP},
     "raft.password: required"),
    ("raft empty password", {"raft.self_addr": "10.0.0.1:2222", "raft.password": ""}, "raft.password: required"),
    ("etcd3 without hosts", {"raft": _DROP, "etcd3": {"protocol": "http"}}, "etcd3.hosts: field required"),
    ("etcd3 host and hosts", {"raft": _DROP, "etcd3": {"host": "a:1", "hosts": ["b:2"]}}, "etcd3.host: set either"),
    ("etcd3 protocol", {"raft": _DROP, "etcd3": {"hosts": "a:1", "protocol": "ftp"}}, "etcd3.protocol: must be one of"),
    ("etcd3 host bad", {"raft": _DROP, "etcd3": {"hosts": "a:1,b"}}, "etcd3.hosts[1]: must be 'host:port'"),
    ("etcd3 cert without key", {"raft": _DROP, "etcd3": {"hosts": "a:1", "cert": "/c"}}, "etcd3.key: cert and key"),
    ("consul url", {"raft": _DROP, "consul": {"url": "consul:8500"}}, "consul.url: must start with http"),
    ("consul scheme", {"raft": _DROP, "consul": {"scheme": "udp"}}, "consul.scheme: must be one of"),
    ("ttl rule", {"bootstrap.dcs": {"ttl": 30, "retry_timeout": 12}},
     "bootstrap.dcs.ttl: must be >= loop_wait + 2*retry_timeout (30 < 10 + 2*12)"),
    ("ttl zero", {"bootstrap.dcs": {"ttl": 0}}, "bootstrap.dcs.ttl: must be >= 4"),
    ("ttl negative", {"bootstrap.dcs": {"ttl": -30}}, "bootstrap.dcs.ttl: must be >= 4"),
    ("ttl text", {"bootstrap.dcs": {"ttl": "thirty"}}, "bootstrap.dcs.ttl: must be an integer"),
    ("ttl boolean", {"bootstrap.dcs": {"ttl": True}}, "bootstrap.dcs.ttl: must be an integer"),
    ("ttl fraction", {"bootstrap.dcs": {"ttl": 30.5}}, "bootstrap.dcs.ttl: must be an integer"),
    ("loop_wait zero", {"bootstrap.dcs": {"loop_wait": 0}}, "bootstrap.dcs.loop_wait: must be >= 1"),
    ("retry_timeout zero", {"bootstrap.dcs": {"retry_timeout": 0}}, "bootstrap.dcs.retry_timeout: must be >= 1"),
    ("lag negative", {"bootstrap.dcs": {"maximum_lag_on_failover": -1}}, "bootstrap.dcs.maximum_lag_on_failover"),
    ("start timeout negative", {"bootstrap.dcs": {"primary_start_timeout": -1}}, "bootstrap.dcs.primary_start_timeout"),
    ("sync mode word", {"bootstrap.dcs": {"synchronous_mode": "sometimes"}},
     "bootstrap.dcs.synchronous_mode: must be true, false or 'quorum'"),
    ("sync count", {"bootstrap.dcs": {"synchronous_node_count": 0}}, "bootstrap.dcs.synchronous_node_count: must be >= 1"),
    ("dcs parameter null", {"bootstrap.dcs": {"postgresql": {"parameters": {"max_connections": None}}}},
     "bootstrap.dcs.postgresql.parameters.max_connections: must be a string, number or boolean"),
    ("dcs use_slots", {"bootstrap.dcs": {"postgresql": {"use_slots": "maybe"}}}, "bootstrap.dcs.postgresql.use_slots"),
    ("initdb reserved", {"bootstrap.initdb": ["data-checksums", {"pgdata": "/x"}]},
     "bootstrap.initdb[1]: 'pgdata' is set by raftpg from postgresql.data_dir"),
    ("initdb not a list", {"bootstrap.initdb": "data-checksums"}, "bootstrap.initdb: must be a list"),
    ("initdb dashes", {"bootstrap.initdb": ["--data-checksums"]}, "bootstrap.initdb[0]: write the option without"),
    ("initdb short", {"bootstrap.initdb": ["k"]}, "bootstrap.initdb[0]: use the long option name"),
    ("post_init and post_bootstrap", {"bootstrap.post_init": "/a", "bootstrap.post_bootstrap": "/b"},
     "bootstrap.post_init: 'post_init' is another name for 'post_bootstrap'"),
    ("postgresql missing", {"postgresql": _DROP}, "postgresql: field required"),
    ("postgresql data_dir", {"postgresql.data_dir": _DROP}, "postgresql.data_dir: field required"),
    ("postgresql listen", {"postgresql.listen": "5432"}, "postgresql.listen: must be 'host:port'"),
    ("postgresql listen empty host", {"postgresql.listen": "a,,b:5432"}, "postgresql.listen: must be 'host[,host...]:port'"),
    ("postgresql wildcard needs connect_address", {"postgresql.listen": "*:5432"},
     "postgresql.connect_address: required when postgresql.listen starts with a wildcard"),
    ("postgresql connect wildcard", {"postgresql.connect_address": "0.0.0.0:5432"}, "postgresql.connect_address: must be an"),
    ("basebackup reserved", {"postgresql.basebackup": {"pgdata": "/x"}}, "postgresql.basebackup[0]: 'pgdata' is set by raftpg"),
    ("basebackup value", {"postgresql.basebackup": [{"max-rate": None}]}, "postgresql.basebackup[0]: the value of 'max-rate'"),
    ("rewind username", {"postgresql.authentication": {"rewind": {"password": "x"}}},
     "postgresql.authentication.rewind.username: field required"),
    ("callback empty", {"postgresql.callbacks": {"on_start": ""}}, "postgresql.callbacks.on_start: must not be empty"),
    ("pg parameters not mapping", {"postgresql.parameters": ["a"]}, "postgresql.parameters: must be a mapping"),
    ("watchdog mode", {"watchdog.mode": "sometimes"}, "watchdog.mode: must be one of"),
    ("watchdog margin vs ttl", {"watchdog.safety_margin": 30}, "watchdog.safety_margin: must be < bootstrap.dcs.ttl (30 >= 30)"),
    ("watchdog margin vs loop_wait", {"watchdog.safety_margin": 20}, "watchdog.safety_margin: leaves the watchdog 10s"),
    ("watchdog margin negative", {"watchdog.safety_margin": -2}, "watchdog.safety_margin: must be >= -1"),
    ("tag priority negative", {"tags.failover_priority": -1}, "tags.failover_priority: must be >= 0"),
    ("tag nofailover", {"tags.nofailover": "maybe"}, "tags.nofailover: must be true or false"),
    ("witness needs raft", {"raft": _DROP, "etcd3": {"hosts": "a:1"}, "witness": True, "postgresql": _DROP},
     "witness: a witness only adds a Raft vote"),
    ("witness not boolean", {"witness": "perhaps"}, "witness: must be true or false"),
]


@pytest.mark.parametrize(("changes", "expected"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_rule_violation_names_the_key_path(changes: dict[str, Any], expected: str) -> None:
    assert expected in errors_of(edited(changes))


def test_watchdog_margin_ignored_when_off() -> None:
    config = parse_config(edited({"watchdog.mode": "off", "watchdog.safety_margin": 30}))
    assert not config.watchdog.enabled


def test_fast_timing_is_valid() -> None:
    """raftpg aims to run at ttl 5 / loop_wait 1 / retry_timeout 2 (with a watchdog margin that fits)."""
    config = parse_config(edited({
        "bootstrap.dcs": {"ttl": 5, "loop_wait": 1, "retry_timeout": 2}, "watchdog.safety_margin": 3,
    }))
    assert config.bootstrap.dcs.ttl == 5


def test_every_error_is_listed_one_per_line() -> None:
    message = errors_of(edited({
        "scope": _DROP, "bootstrap.dcs": {"ttl": 30, "retry_timeout": 12}, "postgresql.data_dir": _DROP,
        "raft.bind_addr": "0.0.0.0:2222", "raft.password": _DROP, "lopo": 1, "citus": {"group": 0},
    }))
    lines = message.splitlines()
    for path in ("scope:", "bootstrap.dcs.ttl:", "postgresql.data_dir:", "citus:", "raft.password:", "lopo:"):
        assert sum(line.startswith(path) for line in lines) == 1, (path, lines)


def test_secrets_are_not_echoed() -> None:
    message = errors_of(edited({"restapi.authentication": {"username": "u", "password": ["hunter2"]}}))
    assert "restapi.authentication.password" in message and "hunter2" not in message


# --- unknown keys: typos are errors, Patroni-only keys are warnings ------------------------------------

TYPO_CASES = [
    ({"scpoe": "x"}, "scpoe: unknown key, did you mean 'scope'?"),
    ({"bootstrap.dcs.loop_wiat": 5}, "bootstrap.dcs.loop_wiat: unknown key, did you mean 'loop_wait'?"),
    ({"bootstrap.dcs.TTL": 5}, "bootstrap.dcs.TTL: unknown key, did you mean 'ttl'?"),
    ({"postgresql.data_dri": "/x"}, "postgresql.data_dri: unknown key, did you mean 'data_dir'?"),
    ({"raft.self_adr": "127.0.0.1:1"}, "raft.self_adr: unknown key, did you mean 'self_addr'?"),
    ({"restapi.lisen": "127.0.0.1:1"}, "restapi.lisen: unknown key, did you mean 'listen'?"),
    ({"tags.nofailvoer": True}, "tags.nofailvoer: unknown key, did you mean 'nofailover'?"),
    ({"watchdog.safety_margn": 1}, "watchdog.safety_margn: unknown key, did you mean 'safety_margin'?"),
    ({"postgresql.authentication.superuser.passwrd": "x"},
     "postgresql.authentication.superuser.passwrd: unknown key, did you mean 'password'?"),
    ({"zzzzzz": 1}, "zzzzzz: unknown key"),
]


@pytest.mark.parametrize(("changes", "expected"), TYPO_CASES)
def test_typo_is_an_error_with_a_suggestion(changes: dict[str, Any], expected: str) -> None:
    assert expected in errors_of(edited(changes))


def test_unknown_key_in_open_sections_is_kept() -> None:
    config = parse_config(edited({"bootstrap.dcs.my_extension": {"x": [1]}, "tags.rack": "r1"}))
    assert config.bootstrap.dcs.to_dict()["my_extension"] == {"x": [1]}
    assert config.tags.as_dict()["rack"] == "r1"
    assert config.warnings == ()


UNSUPPORTED_CASES: list[tuple[dict[str, Any], list[str]]] = [
    ({"thread_pool_size": 5, "thread_stack_size": 524288, "ctl": {"insecure": True}},
     ["thread_pool_size", "thread_stack_size", "ctl"]),
    ({"log.max_queue_size": 1000}, ["log.max_queue_size"]),
    ({"restapi.thread_pool_size": 5, "restapi.allowlist": ["10.0.0.0/8"], "restapi.http_extra_headers": {},
      "restapi.request_queue_size": 5, "restapi.server_tokens": "minimal"},
     ["restapi.thread_pool_size", "restapi.allowlist", "restapi.http_extra_headers", "restapi.request_queue_size",
      "restapi.server_tokens"]),
    ({"bootstrap.users": {"admin": {}}}, ["bootstrap.users"]),
    ({"bootstrap.dcs.maximum_lag_on_syncnode": 1048576}, ["bootstrap.dcs.maximum_lag_on_syncnode"]),
    ({"bootstrap.dcs.postgresql": {"pg_ctl_timeout": 60}}, ["bootstrap.dcs.postgresql.pg_ctl_timeout"]),
    ({"postgresql.pg_ctl_timeout": 60, "postgresql.use_unix_socket_repl": True,
      "postgresql.remove_data_directory_on_rewind_failure": True,
      "postgresql.remove_data_directory_on_diverged_timelines": True, "postgresql.before_stop": "/x"},
     ["postgresql.pg_ctl_timeout", "postgresql.use_unix_socket_repl",
      "postgresql.remove_data_directory_on_rewind_failure",
      "postgresql.remove_data_directory_on_diverged_timelines", "postgresql.before_stop"]),
    ({"postgresql.authentication": {"superuser": {"username": "p", "sslmode": "require"}}},
     ["postgresql.authentication.superuser.sslmode"]),
    ({"watchdog.driver": "default"}, ["watchdog.driver"]),
    ({"tags.nostream": True, "tags.replicatefrom": "n2"}, ["tags.nostream", "tags.replicatefrom"]),
]


@pytest.mark.parametrize(("changes", "paths"), UNSUPPORTED_CASES)
def test_patroni_only_keys_warn_and_still_load(changes: dict[str, Any], paths: list[str]) -> None:
    config = parse_config(edited(changes))
    assert len(config.warnings) == len(paths), config.warnings
    for path, warning in zip(paths, config.warnings, strict=True):
        assert warning.startswith(f"{path}: Patroni option not supported by raftpg, ignored"), warning


def test_unsupported_consul_key_warns() -> None:
    config = parse_config(edited({"raft": _DROP, "consul": {"host": "127.0.0.1:8500", "register_service": True}}))
    assert dcs_kind(config) == "consul"
    assert [w.split(":")[0] for w in config.warnings] == ["consul.register_service"]


def test_patroni_only_keys_are_kept_where_patroni_stores_them() -> None:
    config = parse_config(edited({"bootstrap.dcs.maximum_lag_on_syncnode": 1, "tags.nostream": True}))
    assert config.bootstrap.dcs.to_dict()["maximum_lag_on_syncnode"] == 1
    assert config.tags.as_dict()["nostream"] is True
    dropped = parse_config(edited({"postgresql.pg_ctl_timeout": 60}))
    assert "pg_ctl_timeout" not in dropped.postgresql.to_dict()  # type: ignore[union-attr]


def test_initdb_method_is_the_default_and_not_warned() -> None:
    assert parse_config(edited({"bootstrap.method": "initdb"})).warnings == ()


def test_older_names_are_read_as_new_ones() -> None:
    config = parse_config(edited({"bootstrap.dcs.master_start_timeout": 60, "bootstrap.post_init": "/x.sh"}))
    assert config.bootstrap.dcs.primary_start_timeout == 60
    assert config.bootstrap.post_bootstrap == "/x.sh"


# --- witness --------------------------------------------------------------------------------------------


def test_witness_without_postgresql_loads() -> None:
    config = parse_config(edited({"witness": True, "postgresql": _DROP}))
    assert config.witness is True and config.postgresql is None


def test_missing_sections_are_all_reported() -> None:
    message = errors_of(edited({"raft": _DROP, "postgresql": _DROP}))
    assert message.splitlines() == [
        "one of raft, etcd3, consul is required",
        "postgresql: field required (or set witness: true for a node without PostgreSQL)",
    ]


def test_witness_ignores_postgresql_with_a_warning() -> None:
    config = parse_config(edited({"witness": True, "postgresql.listen": "not even valid"}))
    assert config.postgresql is None
    assert config.warnings == ("postgresql: ignored on a witness node (witness: true)",)


# --- Raft exposure (safety rule 9) ----------------------------------------------------------------------


@pytest.mark.parametrize("changes", [
    {},
    {"raft.self_addr": "localhost:2222"},
    {"raft.self_addr": "127.0.0.5:2222"},
    {"raft.self_addr": "[::1]:2222"},
    {"raft.self_addr": "10.0.0.1:2222", "raft.bind_addr": "127.0.0.1:2222"},
])
def test_loopback_raft_needs_a_password_too(changes: dict[str, Any]) -> None:
    """Any local user can reach a loopback port, and pysyncobj unpickles what it reads (safety rule 9)."""
    assert "raft.password: required, also on loopback" in errors_of(edited({**changes, "raft.password": _DROP}))
    config = parse_config(edited(changes))
    assert config.raft is not None and config.raft.loopback_only
    assert "raft-secret" not in repr(config.raft), "the password stays out of reprs (and so of tracebacks)"


def test_exposed_raft_with_password_loads() -> None:
    config = parse_config(edited(WILD_RAFT))
    assert config.raft is not None
    assert (config.raft.listen_addr, config.raft.bind_port, config.raft.loopback_only) == ("0.0.0.0:2222", 2222, False)


# --- YAML -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("scope: batman\nname: [n1\n", r":3:1: "),
    ("scope: batman\n  name: n1\n", r":2:7: mapping values are not allowed here"),
    ("scope: batman\nscope: robin\n", r":2:1: duplicate key 'scope' \(first defined on line 1\)"),
    ("a: !!python/object:os.system x\n", r":1:4: could not determine a constructor"),
])
def test_yaml_errors_give_file_line_column(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert re.search(re.escape(str(path)) + expected, str(info.value)), str(info.value)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="config file is empty"):
        load_config(path)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "nope.yml")


def test_validation_error_from_file_names_the_source(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text((FIXTURES / "patroni_raft.yml").read_text().replace("ttl: 30", "ttl: 12"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.source == str(path)
    assert info.value.errors == ("bootstrap.dcs.ttl: must be >= loop_wait + 2*retry_timeout (12 < 10 + 2*10)",)


# --- command-line options ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("initdb", "args"), [
    ([], []),
    (["data-checksums", {"encoding": "UTF8"}], ["--data-checksums", "--encoding=UTF8"]),
    ([{"locale": "en_US.UTF-8", "wal-segsize": 32}], ["--locale=en_US.UTF-8", "--wal-segsize=32"]),
    (None, []),
])
def test_initdb_args(initdb: Any, args: list[str]) -> None:
    assert parse_config(edited({"bootstrap.initdb": initdb})).bootstrap.initdb_args() == args


@pytest.mark.parametrize(("basebackup", "args"), [
    (["verbose", {"max-rate": "100M"}], ["--verbose", "--max-rate=100M"]),
    ({"checkpoint": "fast", "max-rate": "100M"}, ["--checkpoint=fast", "--max-rate=100M"]),
    ([], []),
])
def test_basebackup_args(basebackup: Any, args: list[str]) -> None:
    pg = parse_config(edited({"postgresql.basebackup": basebackup})).postgresql
    assert pg is not None and pg.basebackup_args() == args


# --- sections' helpers --------------------------------------------------------------------------------------


def test_etcd3_hosts_forms() -> None:
    config = parse_config(edited({"raft": _DROP, "etcd3": {"hosts": "a:2379, b:2379", "protocol": "HTTPS"}}))
    assert dcs_kind(config) == "etcd3"
    assert config.etcd3 is not None and config.etcd3.hosts == ("a:2379", "b:2379") and config.etcd3.protocol == "https"
    single = parse_config(edited({"raft": _DROP, "etcd3": {"host": "a:2379"}}))
    assert single.etcd3 is not None and single.etcd3.hosts == ("a:2379",)


def test_consul_defaults() -> None:
    config = parse_config(edited({"raft": _DROP, "consul": {}}))
    assert config.consul is not None
    assert (config.consul.host, config.consul.verify, config.consul.base_url) == (
        "127.0.0.1:8500", True, "http://127.0.0.1:8500")


PG_PASSWORDS = {"postgresql.authentication": {"superuser": {"password": "su-pw"},
                                              "replication": {"password": "repl-pw"}}}


def test_postgresql_listen_forms() -> None:
    pg = parse_config(edited({"postgresql.listen": "10.0.0.1,127.0.0.1:5433", **PG_PASSWORDS})).postgresql
    assert pg is not None
    assert (pg.listen_hosts, pg.port, pg.listen_addresses) == (("10.0.0.1", "127.0.0.1"), 5433, "10.0.0.1,127.0.0.1")
    assert (pg.connect_host, pg.connect_port) == ("10.0.0.1", 5433)
    star = parse_config(edited({"postgresql.listen": "*:5432", "postgresql.connect_address": "10.0.0.1:5432",
                                **PG_PASSWORDS}))
    assert star.postgresql is not None and star.postgresql.listen_addresses == "*"


def test_tags_model_and_extras() -> None:
    config = parse_config(edited({"tags": {"failover_priority": 0, "rack": "r1"}}))
    assert config.tags.to_model().nofailover is True  # priority 0 means nofailover, as in Patroni
    assert config.tags.extra["rack"] == "r1"


@pytest.mark.parametrize(("text", "host", "port"), [
    ("10.0.0.1:8008", "10.0.0.1", 8008), ("[::1]:5432", "::1", 5432), ("db-1.example:1", "db-1.example", 1),
    (":8008", "", 8008),
])
def test_split_host_port(text: str, host: str, port: int) -> None:
    assert split_host_port(text) == (host, port)


@pytest.mark.parametrize("text", ["10.0.0.1", "10.0.0.1:0", "h:65536", "h:x", "[::1]5432", "a b:1"])
def test_split_host_port_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        split_host_port(text)


def test_resolve_bin_dir(tmp_path: Path) -> None:
    for version in ("9.6", "10", "16", "notaversion"):
        bin_dir = tmp_path / "lib" / "postgresql" / version / "bin"
        bin_dir.mkdir(parents=True)
        (bin_dir / "pg_ctl").touch()
    (tmp_path / "lib" / "postgresql" / "17" / "bin").mkdir(parents=True)  # no pg_ctl: not a candidate
    pg = parse_config(minimal()).postgresql
    assert pg is not None
    pattern = str(tmp_path / "lib" / "postgresql" / "*" / "bin")
    assert pg.resolve_bin_dir(patterns=[pattern]) == str(tmp_path / "lib" / "postgresql" / "16" / "bin")

    on_path = tmp_path / "usr" / "bin"
    on_path.mkdir(parents=True)
    (on_path / "pg_ctl").touch(mode=0o755)
    assert pg.resolve_bin_dir(patterns=[str(tmp_path / "none" / "*")], path=str(on_path)) == str(on_path)
    assert pg.resolve_bin_dir(patterns=[], path=str(tmp_path / "empty")) is None

    unset = parse_config(edited({"postgresql.bin_dir": ""})).postgresql
    assert unset is not None and unset.bin_dir is None
    fixed = parse_config(edited({"postgresql.bin_dir": "/opt/pg/bin"})).postgresql
    assert fixed is not None and fixed.resolve_bin_dir(patterns=[pattern]) == "/opt/pg/bin"


# --- dynamic configuration (bootstrap.dcs, the DCS config key, PATCH /config) -----------------------------


def test_dynamic_config_normalizes_and_round_trips() -> None:
    doc = {"ttl": "25", "loop_wait": 5, "master_stop_timeout": 7, "my_extension": {"a": [1, 2]},
           "failsafe_mode": True, "check_timeline": False,
           "postgresql": {"parameters": {"max_connections": 200}, "pg_ident": ["m os pg"]}}
    normalized = validate_dynamic_config(doc)
    assert normalized["ttl"] == 25 and normalized["retry_timeout"] == 10
    assert normalized["primary_stop_timeout"] == 7 and "master_stop_timeout" not in normalized
    assert normalized["my_extension"] == {"a": [1, 2]} and normalized["failsafe_mode"] is True
    assert normalized["postgresql"]["use_slots"] is True and normalized["postgresql"]["pg_ident"] == ["m os pg"]
    assert validate_dynamic_config(normalized) == normalized
    assert [w.split(":")[0] for w in dynamic_config_warnings(doc)] == ["check_timeline", "primary_stop_timeout"]


def test_failsafe_mode_is_refused_on_the_embedded_raft_and_loads_with_etcd() -> None:
    """Failsafe mode (raftpg.ha.failsafe): refused where the DCS is the members themselves, named by key."""
    with pytest.raises(ConfigError) as info:
        parse_config(edited({"bootstrap.dcs.failsafe_mode": True}))
    assert str(info.value).startswith("bootstrap.dcs.failsafe_mode: not available with the embedded Raft")
    assert parse_config(edited({"bootstrap.dcs.failsafe_mode": False})).bootstrap.dcs.failsafe_mode is False
    etcd = parse_config(edited({"raft": _DROP, "etcd3": {"hosts": "127.0.0.1:2379"},
                                "bootstrap.dcs.failsafe_mode": True}))
    assert dcs_kind(etcd) == "etcd3" and etcd.bootstrap.dcs.failsafe_mode is True and etcd.warnings == ()
    with pytest.raises(ConfigError) as bad:
        parse_config(edited({"raft": _DROP, "etcd3": {"hosts": "127.0.0.1:2379"},
                             "bootstrap.dcs.failsafe_mode": "sometimes"}))
    assert str(bad.value).startswith("bootstrap.dcs.failsafe_mode: ")


def test_dynamic_config_standby_cluster_is_checked_key_by_key() -> None:
    """standby_cluster (Patroni's): host, port, primary_slot_name, restore_command, recovery_min_apply_delay;
    a bad value is refused naming the key, and the optional keys are stored only when given."""
    stored = validate_dynamic_config({"standby_cluster": {"host": "10.1.0.1", "port": 5433,
                                                          "primary_slot_name": "dr"}})
    assert stored["standby_cluster"] == {"host": "10.1.0.1", "port": 5433, "primary_slot_name": "dr"}
    full = {"host": "h", "port": 5432, "primary_slot_name": None, "restore_command": "cp /archive/%f %p",
            "recovery_min_apply_delay": "5min"}
    assert validate_dynamic_config({"standby_cluster": full})["standby_cluster"] == full
    for delay in (0, 300000, "10ms", "1 h", "2d", "1.5h", 2147483647, "24d"):
        assert validate_dynamic_config({"standby_cluster": {"host": "h", "recovery_min_apply_delay": delay}})
    assert "standby_cluster" not in validate_dynamic_config({})  # a normal cluster stores no key
    for bad, expected in [
        ({"port": 5432}, "standby_cluster.host: field required"),
        ({"host": "a b"}, "standby_cluster.host: must be one host name or address"),
        ({"host": "h", "port": 70000}, "standby_cluster.port: must be <= 65535"),
        ({"host": "h", "primary_slot_name": "Bad-Name"}, "standby_cluster.primary_slot_name: must be a replication"),
        ({"host": "h", "restore_command": "cp %f %p\nx"}, "standby_cluster.restore_command: must not contain"),
        ({"host": "h", "recovery_min_apply_delay": "soon"}, "standby_cluster.recovery_min_apply_delay: must be a"),
        ({"host": "h", "recovery_min_apply_delay": -5}, "standby_cluster.recovery_min_apply_delay: must be a"),
        ({"host": "h", "recovery_min_apply_delay": True}, "standby_cluster.recovery_min_apply_delay: must be a"),
        ({"host": "h", "recovery_min_apply_delay": "5 fortnights"}, "standby_cluster.recovery_min_apply_delay: must"),
        ({"host": "h", "recovery_min_apply_delay": "30d"}, "standby_cluster.recovery_min_apply_delay: must be a"),
        ({"host": "h", "recovery_min_apply_delay": 2147483648}, "standby_cluster.recovery_min_apply_delay: must"),
        ({"host": "h", "hots": "x"}, "standby_cluster.hots: unknown key"),
    ]:
        with pytest.raises(ConfigError) as info:
            validate_dynamic_config({"standby_cluster": bad})
        assert str(info.value).startswith(expected), (bad, str(info.value))


def test_dynamic_config_empty_is_all_defaults() -> None:
    normalized = validate_dynamic_config({})
    assert (normalized["ttl"], normalized["loop_wait"], normalized["retry_timeout"]) == (30, 10, 10)
    assert normalized == parse_config(minimal()).bootstrap.dcs.to_dict()


DYNAMIC_ERRORS: list[tuple[Any, str]] = [
    ({"ttl": 20}, "ttl: must be >= loop_wait + 2*retry_timeout (20 < 10 + 2*10)"),
    ({"ttl": -1}, "ttl: must be >= 4"),
    ({"loop_wiat": 5}, "loop_wiat: unknown key, did you mean 'loop_wait'?"),
    ({"postgresql": {"use_slot": True}}, "postgresql.use_slot: unknown key, did you mean 'use_slots'?"),
    ({"postgresql": {"parameters": {"max_connections": [1]}}}, "postgresql.parameters.max_connections: must be"),
    ({"synchronous_mode": "sometimes"}, "synchronous_mode: must be true, false or 'quorum', got a string"),
    ({"synchronous_mode": [1]}, "synchronous_mode: must be true, false or 'quorum', got a list"),
    ({"postgresql": "x"}, "postgresql: must be a mapping"),
    ({"master_start_timeout": 1, "primary_start_timeout": 2}, "master_start_timeout: 'master_start_timeout' is another name"),
    (["ttl"], "the dynamic config must be a mapping"),
]


@pytest.mark.parametrize(("doc", "expected"), DYNAMIC_ERRORS)
def test_dynamic_config_errors_use_relative_paths(doc: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_dynamic_config(doc)
    assert str(info.value).startswith(expected), str(info.value)


def test_dynamic_settings_convert_to_the_shared_model() -> None:
    config = parse_config(edited({"bootstrap.dcs": {"ttl": 5, "loop_wait": 1, "retry_timeout": 2},
                                  "watchdog.mode": "off"}))
    model = config.bootstrap.dcs.to_model()
    assert (model.ttl_s, model.loop_wait_s, model.retry_timeout_s, model.use_pg_rewind) == (5, 1, 2, False)


def test_config_model_is_the_public_type() -> None:
    assert isinstance(parse_config(minimal()), Config)


@pytest.mark.parametrize(("written", "seconds"), [
    ("30min", 1800), ("1h", 3600), (" 2 d", 172800), ("90", 90), (90, 90), (0, 0), ("500ms", 0)])
def test_member_slots_ttl_takes_seconds_or_a_duration_with_patronis_units(written: Any, seconds: int) -> None:
    config = parse_config(edited({"bootstrap.dcs.member_slots_ttl": written}))
    assert config.bootstrap.dcs.to_dict()["member_slots_ttl"] == seconds and config.warnings == ()
    assert DynamicConfig.from_dict(config.bootstrap.dcs.to_dict()).member_slots_ttl_s == seconds


@pytest.mark.parametrize(("written", "why"), [
    ("30 minutes", "a duration with a unit"), ("soon", "a duration with a unit"), (True, "got a boolean"),
    (-1, ">= 0"), ("1e999", "a duration with a unit"), (10**12, "<= 31536000")])
def test_a_bad_member_slots_ttl_is_refused_naming_the_key(written: Any, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(edited({"bootstrap.dcs.member_slots_ttl": written}))
    assert "bootstrap.dcs.member_slots_ttl" in str(caught.value) and why in str(caught.value)
    assert DynamicConfig.from_dict({"member_slots_ttl": written}).member_slots_ttl_s == 1800  # the DCS reader


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.9.9.9", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LOCALHOST", True), (" localhost ", True), ("", False), ("0.0.0.0", False), ("10.0.0.1", False),
    ("::", False), ("example.com", False), ("localhost.example.com", False), ("[10.0.0.1]", False),
])
def test_one_loopback_rule_for_every_guard(host: str, loopback: bool) -> None:
    """The REST API's, PostgreSQL's and the embedded Raft's guards all ask this one function (the Raft
    store had a copy that read LOCALHOST as not loopback and [::1] as loopback, unlike this one)."""
    from raftpg.config.addresses import is_loopback
    from raftpg.consensus import settings as raft_settings
    assert is_loopback(host) is loopback
    assert raft_settings.is_loopback is is_loopback
