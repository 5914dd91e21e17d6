"""``raftpg --generate-sample-config [FILE]`` and ``raftpg --generate-config [--dsn DSN] [FILE]``, as Patroni has.

- The sample is a commented config for this host (its name and first non-loopback address) that passes
  ``--validate-config`` as written: the Raft password and the role passwords are generated, and every
  line an operator must look at carries ``# FIXME``.
- ``--generate-config`` connects to a running PostgreSQL (``--dsn``, else the libpq ``PG*`` variables)
  as a superuser and writes a config for it: ``data_dir``, ``bin_dir`` (from the postmaster's executable),
  ``listen`` and ``connect_address`` from its settings, ``scope`` from ``cluster_name``, the parameters set
  in its configuration files (commands such as ``archive_command`` stay in the local config, the rest go to
  ``bootstrap.dcs``), and ``pg_hba``/``pg_ident`` from its files when they are the defaults in the data
  directory. The superuser is the one connected; the other roles' passwords are generated.

The output goes to FILE (mode 0600: it holds passwords), or to stdout.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
from typing import Any

import yaml

COMMAND_PARAMETERS = ("archive_command", "restore_command", "archive_cleanup_command", "recovery_end_command",
                      "ssl_passphrase_command", "hba_file", "ident_file", "config_file")
MANAGED = ("listen_addresses", "port", "data_directory", "cluster_name", "hot_standby", "primary_conninfo",
           "primary_slot_name", "synchronous_standby_names", "unix_socket_directories")
FIXME = "# FIXME"


def host_address() -> tuple[str, str]:
    """(this host's name, an address other hosts can reach it at; loopback when nothing better is known)."""
    name = socket.gethostname()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent, the kernel only picks a route
            return name, probe.getsockname()[0]
    except OSError:
        return name, "127.0.0.1"


def sample_config(name: str | None = None, address: str | None = None) -> dict[str, Any]:
    host, ip = host_address()
    name, ip = name or host, address or ip
    return {
        "scope": "postgres-cluster",
        "namespace": "/service/",
        "name": name,
        "log": {"level": "INFO", "type": "plain"},
        "restapi": {"listen": f"{ip}:8008", "connect_address": f"{ip}:8008",
                    "authentication": {"username": "raftpg", "password": secrets.token_urlsafe(18)}},
        "raft": {"data_dir": "/var/lib/raftpg/raft", "self_addr": f"{ip}:5010", "partner_addrs": [],
                 "password": secrets.token_urlsafe(24)},
        "bootstrap": {"dcs": {"ttl": 30, "loop_wait": 10, "retry_timeout": 10, "maximum_lag_on_failover": 1048576,
                              "postgresql": {"use_pg_rewind": True, "use_slots": True,
                                             "parameters": {"max_connections": 100, "wal_level": "replica"}}},
                      "initdb": ["data-checksums", {"encoding": "UTF8"}]},
        "postgresql": {"listen": f"{ip}:5432", "connect_address": f"{ip}:5432",
                       "data_dir": "/var/lib/postgresql/data",
                       "authentication": {"superuser": {"username": "postgres", "password": secrets.token_urlsafe(18)},
                                          "replication": {"username": "replicator",
                                                          "password": secrets.token_urlsafe(18)},
                                          "rewind": {"username": "rewind_user", "password": secrets.token_urlsafe(18)}},
                       "parameters": {}},
        "watchdog": {"mode": "automatic", "safety_margin": 5},
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
    }


_COMMENTS = {
    "scope": f"the cluster's name: the same on every member {FIXME}",
    "name": "this member's name: unique in the cluster",
    "restapi": "health checks and operations (HAProxy, raftpgctl, the other members)",
    "raft": (f"the embedded store: list the other members' self_addr in partner_addrs {FIXME}; the password "
             "is the same on every member (pysyncobj unpickles what it reads: keep it secret)"),
    "bootstrap": "used once, by the member that creates the cluster; later: raftpgctl edit-config",
    "postgresql": f"this member's PostgreSQL {FIXME} (data_dir, and the same role passwords on every member)",
    "watchdog": "fences a primary whose machine froze (/dev/watchdog); automatic: used when present",
}


def render(config: dict[str, Any], header: str) -> str:
    """YAML with a comment line before each top-level section."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for key, value in config.items():
        if key in _COMMENTS:
            lines += ["", f"# {_COMMENTS[key]}"]
        lines.append(yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=False).rstrip())
    return "\n".join(lines) + "\n"


def from_running(dsn: str | None) -> dict[str, Any]:
    """A config for the PostgreSQL that ``dsn`` reaches (see the module docstring). Raises RuntimeError."""
    import psycopg

    try:
        conn = psycopg.connect(dsn or "", autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise RuntimeError(f"cannot connect to PostgreSQL: {str(exc).strip()}") from None
    with conn:
        if conn.info.parameter_status("is_superuser") != "on":
            raise RuntimeError(f"{conn.info.user} is not a superuser: connect as one (--dsn 'user=postgres ...')")
        rows = conn.execute(
            "SELECT name, current_setting(name) FROM pg_settings WHERE (context <> 'internal' AND source IN "
            "('configuration file', 'command line', 'environment variable') AND category <> "
            "'Write-Ahead Log / Recovery Target' AND setting <> '(disabled)') OR name = ANY(%s)",
            (list(MANAGED) + ["hba_file", "ident_file", "config_file"],)).fetchall()
        user, password = conn.info.user, conn.info.password
    settings: dict[str, str] = dict(rows)
    config = sample_config()
    pg = config["postgresql"]
    data_dir = settings["data_directory"]
    pg["data_dir"] = data_dir
    bin_dir = _postmaster_bin_dir(data_dir)
    if bin_dir:
        pg["bin_dir"] = bin_dir
    host = config["restapi"]["connect_address"].rsplit(":", 1)[0]
    listen = settings.get("listen_addresses") or "localhost"
    pg["listen"] = f"{listen.replace(' ', '')}:{settings.get('port', '5432')}"
    pg["connect_address"] = f"{host}:{settings.get('port', '5432')}"
    if settings.get("cluster_name"):
        config["scope"] = settings["cluster_name"]
    pg["authentication"]["superuser"] = {"username": user, "password": password or pg["authentication"]
                                         ["superuser"]["password"]}
    dcs_parameters = config["bootstrap"]["dcs"]["postgresql"]["parameters"] = {}
    for name, value in sorted(settings.items()):
        if name in COMMAND_PARAMETERS and name not in ("hba_file", "ident_file", "config_file"):
            pg["parameters"][name] = value
        elif name == "unix_socket_directories" and value:
            pg["parameters"][name] = value
        elif name not in MANAGED and name not in COMMAND_PARAMETERS:
            dcs_parameters[name] = value
    _read_conf_files(pg, settings, data_dir)
    return config


def _postmaster_bin_dir(data_dir: str) -> str | None:
    try:
        with open(os.path.join(data_dir, "postmaster.pid"), encoding="utf-8") as f:
            pid = int(f.readline().strip())
        return os.path.dirname(os.readlink(f"/proc/{pid}/exe"))
    except (OSError, ValueError):
        return None


def _read_conf_files(pg: dict[str, Any], settings: dict[str, str], data_dir: str) -> None:
    """pg_hba and pg_ident from their files, when those are the defaults in the data directory (raftpg
    rewrites those; a file elsewhere stays the operator's and is left alone)."""
    for key, setting, kinds in (("pg_hba", "hba_file", ("local", "host", "hostssl", "hostnossl", "hostgssenc",
                                                         "hostnogssenc")),
                                ("pg_ident", "ident_file", None)):
        default = os.path.join(data_dir, f"{key}.conf")
        if settings.get(setting) != default:
            continue
        try:
            with open(default, encoding="utf-8") as f:
                lines = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
        except OSError:
            continue
        lines = [line for line in lines if kinds is None or line.split()[0] in kinds]
        if lines:
            pg[key] = lines


def write(text: str, path: str | None) -> None:
    if path is None:
        sys.stdout.write(text)
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def main(sample: bool, path: str | None, dsn: str | None) -> int:
    if sample:
        text = render(sample_config(), "raftpg sample config (raftpg --generate-sample-config); "
                                       "see docs/migrating-from-patroni.md for every key")
    else:
        try:
            config = from_running(dsn)
        except RuntimeError as exc:
            print(f"raftpg: {exc}", file=sys.stderr)
            return 1
        text = render(config, "raftpg config generated from a running PostgreSQL (raftpg --generate-config)")
    write(text, path)
    return 0
