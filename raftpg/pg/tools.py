"""Running PostgreSQL's command-line programs (initdb, pg_controldata, pg_basebackup, pg_rewind) with a deadline.

Every program runs in its own process group so a timeout kills it and its helpers (pg_basebackup forks a WAL
streamer); messages are forced to the C locale so they can be parsed; passwords come from the pgpass file,
never from argv.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess

from raftpg.clock import Clock
from raftpg.pg.settings import PgSettings


class Deadline:
    """A step's deadline on ``clock``; ``left()`` is what remains of it (at least ``minimum``)."""

    def __init__(self, clock: Clock, timeout_s: float) -> None:
        self.clock, self.at = clock, clock.monotonic() + timeout_s

    def left(self, minimum: float = 0.1) -> float:
        return max(minimum, self.at - self.clock.monotonic())


class PgError(Exception):
    """A PostgreSQL operation failed. The message names the operation and ends with the tool's stderr tail."""


def tail(text: str | bytes | None, lines: int = 12) -> str:
    if not text:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "\n".join(text.strip().splitlines()[-lines:])


def tool_env(settings: PgSettings, c_locale: bool = True) -> dict[str, str]:
    """The agent's environment with the pgpass file, a connect timeout and (``c_locale``) LC_ALL=C.

    initdb is the exception (``c_locale=False``): the new cluster's locale and encoding come from the
    agent's environment or ``initdb_args``, as with a hand-run initdb.
    """
    env = dict(os.environ)
    env.update(PGPASSFILE=settings.pgpass, PGCONNECT_TIMEOUT="10")
    if c_locale:
        env.update(LC_ALL="C", LANG="C")
    return env


def run_tool(settings: PgSettings, program: str, args: list[str], timeout_s: float, c_locale: bool = True) -> str:
    """Run ``<bin_dir>/<program> args``; return its stdout. Raises PgError on a non-zero exit or the deadline."""
    argv = [settings.binary(program), *args]
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=tool_env(settings, c_locale), start_new_session=True, text=True,
        )
    except OSError as e:
        raise PgError(f"{program}: cannot run {argv[0]}: {e}") from None
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        out, err = proc.communicate()
        raise PgError(f"{program} did not finish within {timeout_s:g}s and was killed\n{tail(err)}") from None
    if proc.returncode != 0:
        raise PgError(f"{program} failed with exit code {proc.returncode}\n{tail(err or out)}")
    return out


@functools.lru_cache(maxsize=8)
def libpq_has_require_auth(bin_dir: str) -> bool:
    """Whether the libpq that ``bin_dir``'s programs (and so the server's walreceiver) load knows
    ``require_auth`` (libpq 16+): with it a client refuses a server that asks for anything but SCRAM,
    so a server an attacker named in the DCS cannot ask for the password in clear text.

    Asked of the programs themselves, once per ``bin_dir``: ``pg_isready`` exits 3 on an unknown
    connection option and 2 when it merely found no server (at a socket path that does not exist).
    """
    argv = [os.path.join(bin_dir, "pg_isready"), "-t", "1",
            "-d", "require_auth=scram-sha-256 host=/nonexistent-raftpg-probe port=1"]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=10,
                              env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 2


@functools.lru_cache(maxsize=8)
def server_major_version(bin_dir: str) -> int | None:
    """The major version of the ``postgres`` in ``bin_dir`` (``postgres --version``), None if unknown."""
    try:
        done = subprocess.run([os.path.join(bin_dir, "postgres"), "--version"], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=10, env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"\(PostgreSQL\) (\d+)", done.stdout)
    return int(match.group(1)) if match and done.returncode == 0 else None


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
