"""The configuration files raftpg owns in the data directory: postgresql.conf, pg_hba.conf, standby.signal,
and the pgpass file beside it.

``postgresql.conf`` is ours: the first time raftpg writes it, initdb's file is kept as ``postgresql.base.conf``
and included first; then come raftpg's settings and the user's parameters. Precedence, by design:

- raftpg alone decides ``FIXED`` settings (where to listen, the member's identity, replication wiring and
  ``synchronous_standby_names``); a user value for one of them is ignored with a warning;
- ``AT_LEAST`` settings take the larger of the user's value and raftpg's minimum;
- ``DEFAULTS`` are raftpg's suggestions; the user's parameters override them;
- everything else the user sets is passed through.

``postgresql.auto.conf`` (ALTER SYSTEM) still overrides all of this, as in any PostgreSQL.
Every write is atomic (temp file, fsync, rename) and returns whether the content changed.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass

from raftpg.pg.settings import PgSettings

log = logging.getLogger(__name__)

BASE_CONF = "postgresql.base.conf"
MARKER = "# Managed by raftpg"
FIXED = (
    "listen_addresses", "port", "unix_socket_directories", "cluster_name", "hot_standby", "wal_log_hints",
    "primary_conninfo", "primary_slot_name", "recovery_target_timeline", "synchronous_standby_names",
)
AT_LEAST = {"max_wal_senders": 10, "max_replication_slots": 10}
DEFAULTS = {"wal_keep_size": "128MB", "hot_standby_feedback": "on", "unix_socket_permissions": "0700"}
WAL_LEVELS = ("replica", "logical")


@dataclass(frozen=True)
class Upstream:
    """Where a replica streams from. ``conninfo=None``: a standby with no primary (it waits, read-only)."""

    conninfo: str | None = None
    slot_name: str | None = None


def managed_parameters(settings: PgSettings, upstream: Upstream | None, synchronous_standby_names: str) -> dict[str, str]:
    """Every GUC raftpg writes into postgresql.conf, by the precedence rules in the module docstring."""
    user = dict(settings.parameters)
    for name in FIXED:
        if name in user:
            log.warning("postgresql parameter %s is managed by raftpg; the configured value is ignored", name)
            del user[name]
    params = {**DEFAULTS, **user}
    params["wal_level"] = user.get("wal_level") if user.get("wal_level") in WAL_LEVELS else "replica"
    for name, minimum in AT_LEAST.items():
        params[name] = str(max(minimum, _int_or(user.get(name), minimum)))
    params.update(
        listen_addresses=settings.listen_host, port=str(settings.port),
        unix_socket_directories=settings.socket_dir, cluster_name=settings.name,
        hot_standby="on", wal_log_hints="on", recovery_target_timeline="latest",
        primary_conninfo=(upstream.conninfo or "") if upstream else "",
        primary_slot_name=(upstream.slot_name or "") if upstream else "",
        synchronous_standby_names=synchronous_standby_names,
    )
    return params


def render_postgresql_conf(settings: PgSettings, params: dict[str, str]) -> str:
    lines = [
        f"{MARKER} for member {settings.name!r} of cluster {settings.scope!r}: rewritten by the agent, edits are lost.",
        f"# initdb's settings are in {BASE_CONF}; set yours in the raftpg config (postgresql.parameters).",
        f"include_if_exists '{BASE_CONF}'",
        "",
    ]
    lines += [f"{name} = {quote_guc(value)}" for name, value in sorted(params.items())]
    return "\n".join(lines) + "\n"


def write_postgresql_conf(settings: PgSettings, params: dict[str, str]) -> bool:
    conf = os.path.join(settings.data_dir, "postgresql.conf")
    base = os.path.join(settings.data_dir, BASE_CONF)
    if not os.path.exists(base):
        if os.path.exists(conf) and not _is_ours(conf):
            os.rename(conf, base)
        else:
            write_atomic(base, "# postgresql.conf from initdb was not found; raftpg's settings are in postgresql.conf\n")
    return write_atomic(conf, render_postgresql_conf(settings, params))


_LINE = re.compile(r"^(\w+) = '((?:[^']|'')*)'$")


def read_managed_parameters(data_dir: str) -> dict[str, str]:
    """The settings in raftpg's postgresql.conf ({} if the file is missing or not ours)."""
    path = os.path.join(data_dir, "postgresql.conf")
    if not _is_ours(path):
        return {}
    with open(path, encoding="utf-8") as f:
        matches = (_LINE.match(line.rstrip("\n")) for line in f)
        return {m.group(1): unquote_guc(m.group(2)) for m in matches if m}


def quote_guc(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def unquote_guc(body: str) -> str:
    """The inverse of ``quote_guc`` for the text between the quotes."""
    out, i = [], 0
    while i < len(body):
        pair = body[i:i + 2]
        if pair in ("''", "\\\\"):
            out.append(pair[0])
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


def default_pg_hba(settings: PgSettings) -> tuple[str, ...]:
    """The generated pg_hba.conf when the config gives none.

    The superuser may connect over the unix socket without a password (the socket directory is private:
    ``unix_socket_permissions = 0700``). Over TCP, each role uses scram-sha-256 when it has a password and
    ``trust`` otherwise -- only acceptable on a trusted network or for a demo.
    """
    def method(cred: object) -> str:
        return "scram-sha-256" if getattr(cred, "password", None) else "trust"

    su, repl, rewind = settings.superuser, settings.replication, settings.rewind
    lines = [f"local all {_hba_name(su.username)} trust"]
    lines.append(f"host replication {_hba_name(repl.username)} all {method(repl)}")
    if rewind is not None and rewind.username != su.username:
        lines.append(f"host all {_hba_name(rewind.username)} all {method(rewind)}")
    lines.append(f"host all all all {method(su)}")
    return tuple(lines)


def write_pg_hba(settings: PgSettings) -> bool:
    lines = settings.pg_hba or default_pg_hba(settings)
    text = f"{MARKER}: rewritten by the agent from the raftpg config (postgresql.pg_hba).\n" + "\n".join(lines) + "\n"
    return write_atomic(os.path.join(settings.data_dir, "pg_hba.conf"), text)


def render_pgpass(settings: PgSettings) -> str:
    creds = [settings.superuser, settings.replication, settings.rewind]
    seen: set[tuple[str, str]] = set()
    lines = []
    for cred in creds:
        if cred is not None and cred.password and (cred.username, cred.password) not in seen:
            seen.add((cred.username, cred.password))
            lines.append(f"*:*:*:{_pgpass_escape(cred.username)}:{_pgpass_escape(cred.password)}")
    return "".join(line + "\n" for line in lines)


def write_pgpass(settings: PgSettings) -> bool:
    return write_atomic(settings.pgpass, render_pgpass(settings), mode=0o600)


def set_standby_signal(data_dir: str, present: bool) -> bool:
    path = os.path.join(data_dir, "standby.signal")
    if present:
        return write_atomic(path, "")
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def has_standby_signal(data_dir: str) -> bool:
    return os.path.exists(os.path.join(data_dir, "standby.signal"))


def write_atomic(path: str, text: str, mode: int = 0o600) -> bool:
    """Replace ``path`` with ``text`` unless it already holds exactly that (and has ``mode``)."""
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text and (os.stat(path).st_mode & 0o777) == mode:
                return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True


def _is_ours(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline().startswith(MARKER)
    except OSError:
        return False


def _int_or(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _hba_name(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_]+", name) else '"' + name.replace('"', '""') + '"'


def _pgpass_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(":", "\\:")


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
