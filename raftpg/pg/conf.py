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

from raftpg.config.fields import control_characters, guc_problem
from raftpg.pg.connection import add_params, scram_params, server_address
from raftpg.pg.controldata import STANDBY_MINIMUMS, read_controldata
from raftpg.pg.settings import PgSettings
from raftpg.pg.tools import PgError

log = logging.getLogger(__name__)

BASE_CONF = "postgresql.base.conf"
BOOTSTRAP_RECOVERY_CONF = "raftpg.bootstrap-recovery.conf"
MARKER = "# Managed by raftpg"
FIXED = (
    "listen_addresses", "port", "hot_standby", "wal_log_hints",
    "primary_conninfo", "primary_slot_name", "recovery_target_timeline", "synchronous_standby_names",
)
ALWAYS_ON = ("hot_standby", "wal_log_hints")  # FIXED parameters raftpg always writes as "on"
TRUE_WORDS = ("on", "true", "yes", "1")
MEMBER_GUC = "raftpg.member"  # the member's name, readable with current_setting() (cluster_name is the scope)
AT_LEAST = {"max_wal_senders": 10, "max_replication_slots": 10}
# Restart-only settings a replica writes at least as high as its source's (``standby_minimums``) that
# initdb's file leaves commented out: written with PostgreSQL's defaults on every role, so the rewrite at
# a promotion does not drop their lines, which PostgreSQL flags as a pending restart whatever the value
# (every new primary showed "Pending restart" for these three until it was restarted).
RESTART_DEFAULTS = {"max_locks_per_transaction": "64", "max_prepared_transactions": "0",
                    "max_worker_processes": "8"}
DEFAULTS = {"wal_keep_size": "128MB", "hot_standby_feedback": "on", "unix_socket_permissions": "0700",
            "password_encryption": "scram-sha-256"}
GENERATED_HBA_FIXED = {"unix_socket_permissions": "0700", "password_encryption": "scram-sha-256"}
WAL_LEVELS = ("replica", "logical")


@dataclass(frozen=True)
class Upstream:
    """Where a replica streams from. ``conninfo=None``: a standby with no primary (it waits, read-only)."""

    conninfo: str | None = None
    slot_name: str | None = None


def managed_parameters(settings: PgSettings, upstream: Upstream | None, synchronous_standby_names: str) -> dict[str, str]:
    """Every GUC raftpg writes into postgresql.conf, by the precedence rules in the module docstring.

    Names are written in lower case (PostgreSQL compares them case-insensitively, so ``Port`` must not slip
    past ``FIXED``). A parameter that could not be one line of the file (see ``guc_problem``) is never
    written, whatever validated it before (defence in depth: the config and PATCH /config refuse it).
    With the generated pg_hba, ``GENERATED_HBA_FIXED`` holds too: its ``local ... trust`` line is safe
    only while the socket is the agent's alone, and its scram-sha-256 lines need SCRAM password hashes.
    """
    fixed = set(FIXED) | (set(GENERATED_HBA_FIXED) if not settings.pg_hba else set())
    user: dict[str, str] = {}
    for raw_name, value in settings.parameters.items():
        problem = guc_problem(raw_name, value)
        if problem is not None:
            log.error("postgresql parameter %r is not written: %s", raw_name[:60], problem[1])
            continue
        name = raw_name.lower()
        if name in fixed:
            if not (name in ALWAYS_ON and str(value).strip().lower() in TRUE_WORDS):
                # Patroni's sample configs set hot_standby and wal_log_hints on: what raftpg writes anyway
                log.warning("postgresql parameter %s is managed by raftpg; the configured value is ignored", name)
            continue
        user[name] = value
    if upstream is not None:  # a replica: the user's recovery settings, below raftpg's own
        for raw_name, value in settings.recovery_conf.items():
            name = raw_name.lower()
            if guc_problem(raw_name, value) is None and name not in fixed:
                user.setdefault(name, value)
        if settings.standby_source is not None and _address_of(upstream.conninfo or "") == settings.standby_source:
            # the standby leader, streaming from standby_cluster's host: its restore_command and delay
            user.update({k: v for k, v in settings.standby_recovery.items() if guc_problem(k, v) is None})
    params = {**DEFAULTS, **RESTART_DEFAULTS, **user}
    if not settings.pg_hba:
        params.update(GENERATED_HBA_FIXED)
    if upstream is not None:
        for name, minimum in standby_minimums(settings).items():
            params[name] = str(max(minimum, _int_or(params.get(name), 0)))
    params["unix_socket_directories"] = socket_directories(settings)
    params["cluster_name"] = user.get("cluster_name") or settings.scope
    params[MEMBER_GUC] = settings.name
    wal_level = user.get("wal_level")
    params["wal_level"] = wal_level if wal_level in WAL_LEVELS else "replica"
    for name, minimum in AT_LEAST.items():
        params[name] = str(max(minimum, _int_or(user.get(name), minimum)))
    conninfo = (upstream.conninfo or "") if upstream else ""
    if conninfo:
        conninfo = add_params(conninfo, **scram_params(settings, settings.replication))
    params.update(
        listen_addresses=settings.listen_host, port=str(settings.port),
        hot_standby="on", wal_log_hints="on", recovery_target_timeline="latest",
        primary_conninfo=conninfo,
        primary_slot_name=(upstream.slot_name or "") if upstream else "",
        synchronous_standby_names=synchronous_standby_names,
    )
    return params


def standby_minimums(settings: PgSettings) -> dict[str, int]:
    """The settings a server in recovery may not have below its source's (as pg_control records them):
    ``max_connections`` and four others. A replica copied from a primary that runs with more connections
    than configured (it has not been restarted since a change) would refuse to start ("recovery aborted
    because of insufficient parameter settings"), so raftpg writes the larger value, as Patroni does.
    {} when pg_control cannot be read (a new or missing data directory)."""
    try:
        control = read_controldata(settings)
    except PgError:
        return {}
    return {name: value for name in STANDBY_MINIMUMS if (value := getattr(control, name)) is not None}


def socket_directories(settings: PgSettings) -> str:
    """``unix_socket_directories``: the user's, when it names an absolute directory (psql and pgbouncer on
    /var/run/postgresql keep working; the agent connects to the first one); else raftpg's own directory,
    added after whatever the user set (an abstract or relative socket, or none: the agent needs one)."""
    user = settings.user_socket_dirs
    if any(os.path.isabs(d) for d in user):
        return ",".join(user)
    if any(k.lower() == "unix_socket_directories" for k in settings.parameters):
        log.warning("unix_socket_directories names no absolute directory: raftpg adds %s for its own "
                    "connections", settings.socket_dir)
    return ",".join([*user, settings.socket_dir])


def render_postgresql_conf(settings: PgSettings, params: dict[str, str]) -> str:
    base = settings.custom_conf or BASE_CONF
    where = f"the custom file {base}" if settings.custom_conf else BASE_CONF
    lines = [
        f"{MARKER} for member {settings.name!r} of cluster {settings.scope!r}: rewritten by the agent, edits are lost.",
        f"# initdb's settings are in {where}; set yours in the raftpg config (postgresql.parameters).",
        f"include_if_exists {quote_guc(base)}",
        "",
    ]
    for name, value in sorted(params.items()):
        problem = guc_problem(name, value)
        if problem is not None:  # never reached through managed_parameters; a line is never split
            raise PgError(f"refusing to write postgresql.conf: parameter {name[:60]!r}: {problem[1]}")
        lines.append(f"{name} = {quote_guc(value)}")
    # a custom bootstrap's recovery settings, last so they win; the file exists only until the new
    # cluster is registered (bootstrap.py)
    lines += ["", f"include_if_exists '{BOOTSTRAP_RECOVERY_CONF}'"]
    return "\n".join(lines) + "\n"


def write_postgresql_conf(settings: PgSettings, params: dict[str, str]) -> bool:
    """Write postgresql.conf, then the pgpass file for the upstream its ``primary_conninfo`` names (the
    two change together: pgpass holds lines for exactly that host and port)."""
    conf = os.path.join(settings.data_dir, "postgresql.conf")
    base = os.path.join(settings.data_dir, BASE_CONF)
    if not os.path.exists(base):
        if os.path.exists(conf) and not _is_ours(conf):
            os.rename(conf, base)
        else:
            write_atomic(base, "# postgresql.conf from initdb was not found; raftpg's settings are in postgresql.conf\n")
    changed = write_atomic(conf, render_postgresql_conf(settings, params))
    return write_pgpass(settings, _address_of(params.get("primary_conninfo") or "")) or changed


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
    """The generated pg_hba.conf when the config gives none. It never trusts a TCP client.

    - Unix socket: the superuser only, ``trust``. Safe because ``managed_parameters`` then fixes
      ``unix_socket_permissions = 0700``: only the agent's OS user (which owns the data directory anyway)
      and root can connect. ``peer`` would tie the superuser's name to the OS user's, which Patroni
      configs do not.
    - TCP, any address: ``scram-sha-256`` for every role. A role without a password cannot log in over TCP
      at all, which the config allows only for a PostgreSQL listening on loopback.
    """
    su, repl, rewind = settings.superuser, settings.replication, settings.rewind
    lines = [f"local all {_hba_name(su.username)} trust"]
    lines.append(f"host replication {_hba_name(repl.username)} all scram-sha-256")
    if rewind is not None and rewind.username != su.username:
        lines.append(f"host all {_hba_name(rewind.username)} all scram-sha-256")
    lines.append("host all all all scram-sha-256")
    return tuple(lines)


def write_pg_hba(settings: PgSettings) -> bool:
    """The authentication files: pg_hba.conf (the configured lines, else ``default_pg_hba``) and
    pg_ident.conf (``write_pg_ident``). True if either changed (a reload then applies them)."""
    return _write_hba_file(settings) | write_pg_ident(settings)


def _write_hba_file(settings: PgSettings) -> bool:
    lines = settings.pg_hba or default_pg_hba(settings)
    for line in lines:
        if control_characters(line, allow_tab=True):  # one configured item is one line, never two
            raise PgError(f"refusing to write pg_hba.conf: a line holds a control character: {line[:40]!r}")
    text = f"{MARKER}: rewritten by the agent from the raftpg config (postgresql.pg_hba).\n" + "\n".join(lines) + "\n"
    return write_atomic(os.path.join(settings.data_dir, "pg_hba.conf"), text)


def write_pg_ident(settings: PgSettings) -> bool:
    """pg_ident.conf from ``settings.pg_ident``; without lines, initdb's file is left alone (an earlier
    file of ours is emptied)."""
    path = os.path.join(settings.data_dir, "pg_ident.conf")
    if not settings.pg_ident and not _is_ours(path):
        return False
    for line in settings.pg_ident:
        if control_characters(line, allow_tab=True):
            raise PgError(f"refusing to write pg_ident.conf: a line holds a control character: {line[:40]!r}")
    header = f"{MARKER}: rewritten by the agent from the raftpg config (postgresql.pg_ident).\n"
    return write_atomic(path, header + "".join(line + "\n" for line in settings.pg_ident))


def render_pgpass(settings: PgSettings, upstream: tuple[str, int] | None = None) -> str:
    """The pgpass lines, each for one host and port, never ``*``:

    - the superuser at this node's own socket directory (the agent's connections; a configured pg_hba
      may ask for a password there);
    - when there is an ``upstream`` ``(host, port)`` (the primary being followed, cloned or rewound
      from): the replication role and the rewind role (the superuser without one) there.
    """
    wanted = [(settings.socket_dir, settings.port, settings.superuser)]
    if upstream is not None:
        wanted += [(upstream[0], upstream[1], settings.replication),
                   (upstream[0], upstream[1], settings.rewind_credentials)]
    lines: list[str] = []
    for host, port, cred in wanted:
        if cred.password:
            line = ":".join([_pgpass_escape(host), str(port), "*", _pgpass_escape(cred.username),
                             _pgpass_escape(cred.password)])
            if line not in lines:
                lines.append(line)
    return "".join(line + "\n" for line in lines)


def write_pgpass(settings: PgSettings, upstream: tuple[str, int] | None = None) -> bool:
    """Write the pgpass file (mode 0600) for ``upstream``; None: the upstream the data directory's
    postgresql.conf follows now, if any."""
    if upstream is None:
        upstream = _address_of(read_managed_parameters(settings.data_dir).get("primary_conninfo") or "")
    return write_atomic(settings.pgpass, render_pgpass(settings, upstream), mode=0o600)


def _address_of(conninfo: str) -> tuple[str, int] | None:
    if not conninfo:
        return None
    try:
        return server_address(conninfo)
    except PgError:
        return None


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
    fsync_dir(directory)
    return True


def fsync_dir(path: str) -> None:
    """fsync a directory, so that a file created or renamed in it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
