"""Configuration from the environment, as Patroni reads it: ``PATRONI_*`` variables, ``PATRONI_CONFIGURATION``,
and a directory of YAML files merged in order.

Where the config comes from (Patroni's order):

1. a path given on the command line: a file, or a directory whose ``*.yml``/``*.yaml`` files are merged in
   name order (a later file's keys override, nested sections merge, a key set to null is removed); then
   every ``PATRONI_*`` variable below overrides what the files say;
2. no path: ``PATRONI_CONFIGURATION`` holds the whole config as YAML (no other variable is read then);
3. otherwise the ``PATRONI_*`` variables alone.

Every ``PATRONI_X`` has a twin ``RAFTPG_X`` that wins when both are set. The variables are Patroni's
documented ones (docs/ENVIRONMENT.rst of Patroni 4.1): ``NAME``, ``NAMESPACE``, ``SCOPE``,
``<SECTION>_<KEY>`` for restapi, ctl, postgresql, log and raft; ``RESTAPI_USERNAME``/``PASSWORD``;
``SUPERUSER_``/``REPLICATION_``/``REWIND_`` + ``USERNAME``, ``PASSWORD`` and the ssl options;
``POSTGRESQL_BIN_<program>``; and ``<DCS>_<KEY>`` for any DCS section (``ETCD3_HOSTS``, ``CONSUL_TOKEN``).
Values are text; lists (``'h1:1','h2:2'``), mappings (``{a: b}``), booleans and integers are parsed as
Patroni parses them. Unknown names are not read, so ``RAFTPG_KEEP`` and other tools' variables do not
leak into the config.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

PREFIXES = ("PATRONI_", "RAFTPG_")  # later wins
CONFIGURATION = "CONFIGURATION"

_TOP = ("name", "namespace", "scope", "thread_pool_size", "thread_stack_size")
_SECTIONS: dict[str, tuple[str, ...]] = {
    "restapi": ("listen", "connect_address", "certfile", "keyfile", "keyfile_password", "cafile", "ciphers",
                "verify_client", "http_extra_headers", "https_extra_headers", "allowlist",
                "allowlist_include_members", "request_queue_size", "server_tokens", "thread_pool_size"),
    "ctl": ("insecure", "cacert", "certfile", "keyfile", "keyfile_password"),
    "postgresql": ("listen", "connect_address", "proxy_address", "config_dir", "data_dir", "pgpass", "bin_dir"),
    "log": ("type", "level", "traceback_level", "format", "dateformat", "static_fields", "max_queue_size", "dir",
            "mode", "file_size", "file_num", "loggers", "deduplicate_heartbeat_logs"),
    "raft": ("data_dir", "self_addr", "partner_addrs", "password", "bind_addr"),
}
_OLD_LOG_NAMES = {"LOGLEVEL": "LOG_LEVEL", "LOGFORMAT": "LOG_FORMAT", "LOG_DATEFMT": "LOG_DATEFORMAT"}
_BINARIES = ("pg_ctl", "initdb", "pg_controldata", "pg_basebackup", "postgres", "pg_isready", "pg_rewind")
_AUTH = ("username", "password", "sslmode", "sslcert", "sslkey", "sslpassword", "sslrootcert", "sslcrl",
         "sslcrldir", "gssencmode", "channel_binding", "sslnegotiation")
_DCS_SUFFIXES = (
    "HOST", "HOSTS", "PORT", "USE_PROXIES", "PROTOCOL", "SRV", "SRV_SUFFIX", "URL", "PROXY", "CACERT", "CERT", "KEY",
    "VERIFY", "TOKEN", "CHECKS", "DC", "CONSISTENCY", "REGISTER_SERVICE", "SERVICE_CHECK_INTERVAL",
    "SERVICE_CHECK_TLS_SERVER_NAME", "SERVICE_TAGS", "NAMESPACE", "CONTEXT", "USE_ENDPOINTS", "SCOPE_LABEL",
    "ROLE_LABEL", "POD_IP", "PORTS", "LABELS", "BYPASS_API_SERVICE", "RETRIABLE_HTTP_CODES", "KEY_PASSWORD", "USE_SSL",
    "SET_ACLS", "LEADER_LABEL_VALUE", "FOLLOWER_LABEL_VALUE", "STANDBY_LEADER_LABEL_VALUE", "TMP_ROLE_LABEL",
    "AUTH_DATA", "BOOTSTRAP_LABELS",
)
_DCS_NAMES = ("ETCD", "ETCD3", "CONSUL", "ZOOKEEPER", "EXHIBITOR", "KUBERNETES")
_BOOLS = {("restapi", "allowlist_include_members"), ("ctl", "insecure"), ("log", "deduplicate_heartbeat_logs")}
_INTS = {("restapi", "request_queue_size"), ("restapi", "thread_pool_size"), ("log", "max_queue_size"),
         ("log", "file_size"), ("log", "file_num"), ("log", "mode")}
_LISTS = {("raft", "partner_addrs"), ("restapi", "allowlist")}
_DICTS = {("restapi", "http_extra_headers"), ("restapi", "https_extra_headers"), ("log", "static_fields"),
          ("log", "loggers")}


def variables(environ: Mapping[str, str]) -> dict[str, str]:
    """The config variables of ``environ`` by name without prefix (``SCOPE``), ``RAFTPG_`` over ``PATRONI_``;
    empty values are unset, as in Patroni."""
    out: dict[str, str] = {}
    for prefix in PREFIXES:
        for key, value in environ.items():
            if key.startswith(prefix) and value != "":
                out[key[len(prefix):]] = value
    for old, new in _OLD_LOG_NAMES.items():
        if old in out:
            out.setdefault(new, out.pop(old))
    return out


def consumed_names(environ: Mapping[str, str]) -> list[str]:
    """The names in ``environ`` that :func:`environment_config` reads (to drop them from the agent's own
    environment, so PostgreSQL and callbacks do not inherit passwords, as Patroni does)."""
    used = set(_used(variables(environ)))
    return [key for key in environ for prefix in PREFIXES
            if key.startswith(prefix) and _canonical(key[len(prefix):]) in used]


def environment_config(environ: Mapping[str, str]) -> dict[str, Any]:
    """The config document the ``PATRONI_*``/``RAFTPG_*`` variables describe ({} when none is set)."""
    found = variables(environ)
    out: dict[str, Any] = {}
    for key in _TOP:
        if key.upper() in found:
            out[key] = found[key.upper()]
    for section, keys in _SECTIONS.items():
        for key in keys:
            raw = found.get(f"{section}_{key}".upper())
            if raw is not None:
                value = _typed(section, key, raw)
                if value is not None:
                    out.setdefault(section, {})[key] = value
    for binary in _BINARIES:
        if f"POSTGRESQL_BIN_{binary.upper()}" in found:
            out.setdefault("postgresql", {}).setdefault("bin_name", {})[binary] = found[f"POSTGRESQL_BIN_{binary.upper()}"]
    for section in ("restapi", "ctl"):
        auth = _auth(found, section, _AUTH[:2])
        if auth:
            out.setdefault(section, {})["authentication"] = auth
    users = {role: _auth(found, role, _AUTH) for role in ("superuser", "replication", "rewind")}
    if any(users.values()):
        out.setdefault("postgresql", {})["authentication"] = {role: auth for role, auth in users.items() if auth}
    for name in _DCS_NAMES:
        for suffix in _DCS_SUFFIXES:
            raw = found.get(f"{name}_{suffix}")
            if raw is not None:
                value = _dcs_value(suffix, raw)
                if value is not None:
                    out.setdefault(name.lower(), {})[suffix.lower()] = value
        if name in ("ETCD", "ETCD3") and name.lower() in out:
            out[name.lower()].update(_auth(found, name.lower(), _AUTH[:2]))
    return out


def patch(config: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``overrides`` into ``config`` in place, as Patroni merges config files and variables: nested
    mappings merge, other values replace, a null value removes the key."""
    for key, value in overrides.items():
        if value is None:
            config.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(config.get(key), dict):
            patch(config[key], value)
        else:
            config[key] = _plain(value)
    return config


def config_files(path: str) -> list[str]:
    """``path`` itself, or the ``*.yml``/``*.yaml`` files directly in the directory ``path``, by name."""
    if not os.path.isdir(path):
        return [path]
    return [os.path.join(path, name) for name in sorted(os.listdir(path))
            if name.endswith((".yml", ".yaml")) and os.path.isfile(os.path.join(path, name))]


# --- parsing one variable, as Patroni does -------------------------------------------------------------


def _canonical(name: str) -> str:
    return _OLD_LOG_NAMES.get(name, name)


def _used(found: Mapping[str, str]) -> Iterable[str]:
    names = {key.upper() for key in _TOP} | {CONFIGURATION}
    names |= {f"{s}_{k}".upper() for s, keys in _SECTIONS.items() for k in keys}
    names |= {f"POSTGRESQL_BIN_{b.upper()}" for b in _BINARIES}
    names |= {f"{s}_{a}".upper() for s in ("restapi", "ctl", "etcd", "etcd3") for a in _AUTH[:2]}
    names |= {f"{r}_{a}".upper() for r in ("superuser", "replication", "rewind") for a in _AUTH}
    names |= {f"{d}_{s}" for d in _DCS_NAMES for s in _DCS_SUFFIXES}
    return [name for name in found if name in names]


def _auth(found: Mapping[str, str], section: str, params: Iterable[str]) -> dict[str, str]:
    return {p: found[f"{section}_{p}".upper()] for p in params if f"{section}_{p}".upper() in found}


def _typed(section: str, key: str, raw: str) -> Any:
    if (section, key) in _BOOLS:
        return _bool(raw)
    if (section, key) in _INTS:
        return _int(raw)
    if (section, key) in _LISTS:
        return _yaml_list(raw)
    if (section, key) in _DICTS:
        return _yaml_dict(raw)
    if (section, key) == ("log", "format") and "%(" not in raw:
        return _yaml_list(raw)
    return raw


def _dcs_value(suffix: str, raw: str) -> Any:
    if suffix == "PORT":
        return _int(raw)
    if suffix in ("HOSTS", "PORTS", "CHECKS", "SERVICE_TAGS", "RETRIABLE_HTTP_CODES"):
        return _yaml_list(raw)
    if suffix in ("LABELS", "SET_ACLS", "AUTH_DATA", "BOOTSTRAP_LABELS"):
        return _yaml_dict(raw)
    if suffix in ("USE_PROXIES", "REGISTER_SERVICE", "USE_ENDPOINTS", "BYPASS_API_SERVICE", "VERIFY"):
        return _bool(raw)
    return raw


def _bool(raw: str) -> bool | str:
    word = raw.strip().lower()
    if word in ("on", "true", "yes", "1", "t", "y"):
        return True
    if word in ("off", "false", "no", "0", "f", "n"):
        return False
    return raw  # left for the config's validation to name


def _int(raw: str) -> int | str:
    try:
        return int(raw.strip(), 0)
    except ValueError:
        return raw  # left for the config's validation to name


def _yaml_list(raw: str) -> Any:
    text = raw if raw.strip().startswith("-") or "[" in raw else f"[{raw}]"
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return raw


def _yaml_dict(raw: str) -> Any:
    text = raw if raw.strip().startswith("{") else f"{{{raw}}}"
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return raw


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value
