"""Running PostgreSQL's command-line programs (initdb, pg_controldata, pg_basebackup, pg_rewind) with a deadline.

Every program runs in its own process group so a timeout kills it and its helpers (pg_basebackup forks a WAL
streamer); messages are forced to the C locale so they can be parsed; passwords come from the pgpass file,
never from argv.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable

from raftpg.clock import Clock
from raftpg.pg.settings import PgSettings

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1


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


def run_tool(settings: PgSettings, program: str, args: list[str], timeout_s: float | None, c_locale: bool = True,
             on_stderr: Callable[[str], None] | None = None) -> str:
    """Run ``<bin_dir>/<program> args``; return its stdout. Raises PgError on a non-zero exit or the deadline
    (None: no deadline). ``on_stderr`` is called with each line the program writes to stderr as it comes
    (progress reports); its stdout is then discarded."""
    argv = [settings.binary(program), *args]
    if on_stderr is not None:
        return _run_streaming(settings, program, argv, timeout_s, c_locale, on_stderr)
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


def _die_with_parent() -> None:  # between fork and exec: SIGTERM when the thread that started us ends
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _run_streaming(settings: PgSettings, program: str, argv: list[str], timeout_s: float | None, c_locale: bool,
                   on_stderr: Callable[[str], None]) -> str:
    try:
        # runs on a background thread of the agent (a clone): it must not outlive the agent
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=tool_env(settings, c_locale), start_new_session=True, text=True,
                                preexec_fn=_die_with_parent)
    except OSError as e:
        raise PgError(f"{program}: cannot run {argv[0]}: {e}") from None
    lines: list[str] = []

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            del lines[:-200]  # the tail is what an error message shows
            try:
                on_stderr(line.rstrip("\n"))
            except Exception:  # noqa: BLE001 - a reporting bug must not fail the tool
                log.exception("reporting %s's output failed", program)

    reader = threading.Thread(target=pump, name=f"{program}-stderr", daemon=True)
    reader.start()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        proc.wait()
        reader.join(5)
        raise PgError(f"{program} did not finish within {timeout_s:g}s and was killed\n{tail(''.join(lines))}") from None
    reader.join(5)
    if proc.returncode != 0:
        raise PgError(f"{program} failed with exit code {proc.returncode}\n{tail(''.join(lines))}")
    return ""


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
