"""Starting and stopping the postmaster. The agent owns it: no ``pg_ctl start``, no daemonizing.

``PostmasterProcess.start`` runs ``postgres -D <data_dir>`` under the fencing supervisor (``supervisor.py``,
whose docstring is the contract) with a pipe on the supervisor's stdin. The postmaster dies with the
supervisor, and the supervisor fences when the pipe closes or a lease is not renewed, so a postmaster never
outlives the agent that started it, with one deliberate exception: ``detach`` (a stop while the cluster is
paused) leaves it running for the next agent, which adopts it (``adopt_running``, ``PostmasterProcess.adopt``:
a supervisor of its own that fences a postmaster it did not start). (The pipe's write end is close-on-exec,
so programs the agent runs do not hold it open; code in the agent must not fork without exec, or the child
would keep the pipe alive.)

A postmaster this agent did not start (``postmaster.pid`` names a live postgres process: one an earlier
agent detached, or one an administrator started by hand) is adopted when the agent first observes it;
``stop_foreign`` stops one that ``Postgres.start`` still finds (fast) before it starts its own. Children of
a postmaster that died (SIGKILL, OOM killer) can outlive it and block the next start: ``kill_orphans``.
"""

from __future__ import annotations

import logging
import math
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

from raftpg.clock import Clock, SystemClock
from raftpg.pg import supervisor as supervisor_module
from raftpg.pg.pidfile import READY_STATUSES, live_postmaster, postgres_alive, read_pidfile
from raftpg.pg.settings import PgSettings
from raftpg.pg.tools import PgError, kill_group, tail

log = logging.getLogger(__name__)
_SUPERVISOR_CLOCK = SystemClock()  # the supervisor's clock: CLOCK_MONOTONIC, shared by every process

STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
ESCALATION_S = 5.0   # after a stop's timeout: this long for immediate shutdown, then SIGKILL to the group


def supervisor_argv(settings: PgSettings, deadline: float | None, clock: Clock | None = None) -> list[str]:
    """The supervisor's command line; ``deadline`` (on ``clock``, default the system's monotonic clock) is
    passed as an absolute CLOCK_MONOTONIC time."""
    # -I: nothing of the environment or the user's site; -S: no site module either (the supervisor needs only
    # the standard library, and site's imports cost its resident memory ~1 MB)
    launcher = list(settings.launcher) or [sys.executable, "-I", "-S", supervisor_module.__file__]
    return launcher + ([] if deadline is None else ["--deadline", repr(_system_monotonic(deadline, clock))])


def _system_monotonic(deadline: float, clock: Clock | None) -> float:
    """``deadline`` on ``clock`` as a ``_SUPERVISOR_CLOCK.monotonic()`` reading (the supervisor's clock). The identity for
    the SystemClock; a test's FakeClock is translated at the moment of sending."""
    if clock is None or isinstance(clock, SystemClock):
        return max(0.0, deadline)
    return max(0.0, _SUPERVISOR_CLOCK.monotonic() + (deadline - clock.monotonic()))


class PostmasterProcess:
    """One postmaster started by this agent, and its supervisor. Methods are safe to call from any thread."""

    def __init__(self, settings: PgSettings, supervisor: subprocess.Popen[bytes], clock: Clock) -> None:
        self.settings = settings
        self.supervisor = supervisor
        self.clock = clock
        self.pid: int | None = None
        self._lock = threading.Lock()
        self._reports: list[str] = []
        self._report_buffer = b""
        assert supervisor.stdout is not None
        os.set_blocking(supervisor.stdout.fileno(), False)

    @classmethod
    def start(cls, settings: PgSettings, *, fence_deadline: float | None = None, extra_args: tuple[str, ...] = (),
              timeout_s: float = 10.0, clock: Clock | None = None) -> PostmasterProcess:
        """Start the supervisor and the postmaster; return once the postmaster's pid is known.

        ``fence_deadline``: the moment (on ``clock``) past which the supervisor fences unless told otherwise;
        None: no deadline. The supervisor runs in a session of its own: signals for the agent's process
        group (a terminal's Ctrl-C, ``kill -TERM -PGID``) do not reach it."""
        argv = supervisor_argv(settings, fence_deadline, clock) + [
            "--", settings.binary("postgres"), "-D", settings.data_dir, *extra_args]
        return cls._spawn(settings, argv, timeout_s, clock)

    @classmethod
    def adopt(cls, settings: PgSettings, pid: int, *, fence_deadline: float | None = None, timeout_s: float = 10.0,
              clock: Clock | None = None) -> PostmasterProcess:
        """Put a postmaster that already runs on our data directory (``pid``: one an earlier agent left
        running with ``detach``, or one started by hand) under a supervisor of its own (``--adopt``): from
        now on it is fenced like one this agent started, without a restart."""
        argv = supervisor_argv(settings, fence_deadline, clock) + ["--adopt", str(pid)]
        return cls._spawn(settings, argv, timeout_s, clock)

    @classmethod
    def _spawn(cls, settings: PgSettings, argv: list[str], timeout_s: float, clock: Clock | None) -> PostmasterProcess:
        """The supervisor ``argv``, its stderr to the postmaster's log, in a session of its own; returns
        once it has reported the postmaster's pid."""
        log_file = open(settings.log_file, "ab") if settings.log_file else None  # noqa: SIM115
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file,
                                    cwd=settings.data_dir, start_new_session=True)
        except OSError as e:
            raise PgError(f"cannot start the supervisor {argv[0]}: {e}") from None
        finally:
            if log_file is not None:
                log_file.close()
        process = cls(settings, proc, clock or SystemClock())
        process._wait_started(timeout_s)
        return process

    def detach(self) -> bool:
        """Leave PostgreSQL running without this agent (a stop while the cluster is paused): the supervisor
        stops fencing, stays the postmaster's parent, and does not fence when the agent's end of the pipe
        closes (now). False if the supervisor is already gone."""
        sent = self.exit_code() is None and self.send("detach")
        self._close_pipes()
        return sent

    def _wait_started(self, timeout_s: float) -> None:
        deadline = self.clock.monotonic() + timeout_s
        while self.pid is None:
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0 or self._read_reports(min(remaining, 0.5)) is False:
                self._kill_supervisor()
                raise PgError(f"supervisor did not start postgres within {timeout_s:g}s{self.log_tail()}")
            started = [r for r in self._reports if r.startswith("started ")]
            if started:
                self.pid = int(started[0].split()[1])

    def _read_reports(self, timeout_s: float = 0.0) -> bool | None:
        """Collect the supervisor's report lines: True if some arrived, None if none within ``timeout_s``,
        False once its stdout is closed and drained."""
        if self.supervisor.stdout is None or self.supervisor.stdout.closed:
            return False
        fd = self.supervisor.stdout.fileno()
        if not readable(fd, timeout_s):
            return None
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return None
        self._report_buffer += data
        *lines, self._report_buffer = self._report_buffer.split(b"\n")
        self._reports += [line.decode("utf-8", "replace") for line in lines]
        return bool(data)

    # --- the supervisor's stdin -------------------------------------------------------------------------

    def send(self, command: str) -> bool:
        """Write one command line to the supervisor; False if it is gone."""
        assert self.supervisor.stdin is not None
        with self._lock:
            try:
                self.supervisor.stdin.write(command.encode() + b"\n")
                self.supervisor.stdin.flush()
                return True
            except (OSError, ValueError):
                return False

    def fence_at(self, deadline: float) -> bool:
        """Writes may continue until ``deadline`` (on this process's clock); False if the supervisor is gone."""
        return self.send(f"deadline {_system_monotonic(deadline, self.clock)!r}")

    def unlimited(self) -> bool:
        return self.send("unlimited")

    # --- state ------------------------------------------------------------------------------------------

    def exit_code(self) -> int | None:
        """The supervisor's exit code (the postmaster's), or None while it runs."""
        return self.supervisor.poll()

    @property
    def fence_reason(self) -> str | None:
        """Why the supervisor fenced the postmaster, if it did (so far)."""
        exited = self.exit_code() is not None
        for _ in range(100):  # a supervisor writes three short lines in its life: bounded, never spins
            if not self._read_reports(0.1 if exited else 0.0):
                break
        fenced = [r for r in self._reports if r.startswith("fenced ")]
        return fenced[0][len("fenced "):] if fenced else None

    def log_tail(self) -> str:
        if not self.settings.log_file:
            return " (the postmaster's log is on the agent's stderr)"
        try:
            with open(self.settings.log_file, "rb") as f:
                f.seek(max(0, os.path.getsize(self.settings.log_file) - 4096))
                return "\n" + tail(f.read())
        except OSError:
            return ""

    def wait_exit(self, timeout_s: float) -> int | None:
        code = self.supervisor.poll()
        if code is None and timeout_s > 0:
            self._await_exit(timeout_s)
            code = self.supervisor.poll()
        if code is None:
            return None
        self._close_pipes()
        return code

    def _await_exit(self, timeout_s: float) -> None:
        """Until the supervisor exits or ``timeout_s`` passes. A pidfd wakes at the exit itself;
        Popen.wait's own loop sleeps up to 50 ms between looks, which a switchover paid after the old
        primary's shutdown (issue 15). Without pidfds (Linux < 5.3), Popen.wait."""
        try:
            fd = os.pidfd_open(self.supervisor.pid)
        except (AttributeError, OSError):  # no pidfds here, or already reaped
            try:
                self.supervisor.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
            return
        try:
            readable(fd, timeout_s)  # poll: a descriptor numbered 1024 or more is out of select()'s range
        finally:
            os.close(fd)

    def notify_exit(self, callback: Callable[[], None]) -> bool:
        """Call ``callback`` on a thread of its own when the supervisor exits (with the postmaster: a crash,
        a fence, or a stop). Needs pidfds (Linux 5.3); False without them."""
        try:
            fd = os.pidfd_open(self.supervisor.pid)
        except (AttributeError, OSError):  # no pidfds, or already reaped
            return False

        def watch() -> None:
            try:
                readable(fd, math.inf)
            finally:
                os.close(fd)
            callback()

        threading.Thread(target=watch, name=f"postmaster-{self.pid}-exit", daemon=True).start()
        return True

    def wait_ready(self, timeout_s: float) -> bool:
        """True once the postmaster accepts connections (read-only ones on a hot standby); False at the
        deadline if it is still starting. Raises PgError if it exited."""
        deadline = self.clock.monotonic() + timeout_s
        while True:
            info = read_pidfile(self.settings.data_dir)
            if info is not None and info.pid == self.pid and info.status in READY_STATUSES:
                return True
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0:
                return False
            code = self.wait_exit(min(0.05, remaining))
            if code is not None:
                raise PgError(f"postgres exited with code {code} while starting{self.log_tail()}")

    # --- stopping ---------------------------------------------------------------------------------------

    def stop(self, mode: str = "fast", timeout_s: float = 60.0) -> int:
        """Stop the postmaster; after ``timeout_s`` escalate to immediate, then SIGKILL. Returns the exit code."""
        if mode not in STOP_SIGNALS:
            raise ValueError(f"stop mode must be one of {sorted(STOP_SIGNALS)}, got {mode!r}")
        if self.exit_code() is None:
            self.send("stop")
            self._signal(STOP_SIGNALS[mode])
        code = self.wait_exit(timeout_s)
        if code is None:
            log.warning("postgres did not stop (%s) within %gs: immediate shutdown", mode, timeout_s)
            self._signal(signal.SIGQUIT)
            code = self.wait_exit(ESCALATION_S)
        if code is None:
            log.warning("postgres survived immediate shutdown for %gs: SIGKILL to its process group", ESCALATION_S)
            if self.pid is not None:
                kill_group(self.pid)
            code = self.wait_exit(ESCALATION_S)
        if code is None:
            self._kill_supervisor()
            code = self.wait_exit(ESCALATION_S)
        return -1 if code is None else code

    def signal(self, sig: int) -> bool:
        """Send ``sig`` (e.g. SIGHUP for a reload) to the postmaster; False if it is gone."""
        return self._signal(sig)

    def _signal(self, sig: int) -> bool:
        if self.pid is None or self.exit_code() is not None:
            return False
        try:
            os.kill(self.pid, sig)
            return True
        except ProcessLookupError:
            return False

    def _kill_supervisor(self) -> None:
        try:
            self.supervisor.kill()  # the postmaster gets SIGQUIT from PR_SET_PDEATHSIG
        except OSError:
            pass
        self.wait_exit(ESCALATION_S)

    def _close_pipes(self) -> None:
        self.fence_reason  # noqa: B018 -- drain the last reports before closing
        for pipe in (self.supervisor.stdin, self.supervisor.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass


def adopt_running(settings: PgSettings, clock: Clock | None = None) -> PostmasterProcess | None:
    """The postmaster running on our data directory, put under a supervisor of this agent (see
    ``PostmasterProcess.adopt``); None if none runs."""
    info = live_postmaster(settings.data_dir)
    if info is None:
        return None
    process = PostmasterProcess.adopt(settings, info.pid, clock=clock)
    log.warning("adopted the running postmaster %d on %s: this agent fences it from now on", info.pid,
                settings.data_dir)
    return process


def signal_postmaster(settings: PgSettings, process: PostmasterProcess | None, sig: int) -> bool:
    """Send ``sig`` to our postmaster, else to whichever runs on the data directory; False if none does."""
    if process is not None and process.signal(sig):
        return True
    info = live_postmaster(settings.data_dir)
    try:
        if info is not None:
            os.kill(info.pid, sig)
            return True
    except ProcessLookupError:
        pass
    return False


def readable(fd: int, timeout_s: float) -> bool:
    """Whether ``fd`` turns readable within ``timeout_s`` (``math.inf``: wait for it). poll, not select: the
    agent raises its open-files limit to the hard limit, and select cannot watch a descriptor numbered 1024
    or more."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(None if math.isinf(timeout_s) else max(0, math.ceil(timeout_s * 1000))))


def stop_foreign(settings: PgSettings, mode: str = "fast", timeout_s: float = 60.0,
                 clock: Clock | None = None) -> bool:
    """Stop a postmaster on our data directory that this agent did not start. True if there was one."""
    info = live_postmaster(settings.data_dir)
    if info is None:
        return False
    log.warning("postgres %d on %s was not started by this agent; stopping it (%s) to restart it under the "
                "fencing supervisor", info.pid, settings.data_dir, mode)
    for sig, wait_s in ((STOP_SIGNALS[mode], timeout_s), (signal.SIGQUIT, ESCALATION_S),
                        (signal.SIGKILL, ESCALATION_S)):
        try:
            os.kill(info.pid, sig)
        except ProcessLookupError:
            return True
        if wait_pid_gone(info.pid, wait_s, clock or SystemClock()):
            return True
    raise PgError(f"postgres {info.pid} on {settings.data_dir} survived SIGKILL")


def orphans(data_dir: str) -> list[int]:
    """postgres processes working in ``data_dir`` (every child of a postmaster runs in its data directory).

    Called when no postmaster runs there: what is left are children of one that died. A backend busy with a
    long query, or stopped, does not notice its postmaster's death and keeps the shared memory attached;
    PostgreSQL then refuses to start ("pre-existing shared memory block ... is still in use") until it exits.
    """
    target = os.path.realpath(data_dir)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if os.readlink(f"/proc/{entry}/cwd") != target:
                continue
        except OSError:
            continue  # gone, or not ours to inspect
        if postgres_alive(int(entry)):
            found.append(int(entry))
    return sorted(found)


def kill_orphans(settings: PgSettings, clock: Clock | None = None, timeout_s: float = ESCALATION_S) -> list[int]:
    """SIGKILL what is left of a dead postmaster on our data directory (see ``orphans``) and wait until it is
    gone. Nothing is lost: the shared memory they hold belongs to a server that already crashed, and crash
    recovery replays the WAL. Returns the pids killed; raises PgError if one survives ``timeout_s``."""
    if live_postmaster(settings.data_dir) is not None:
        return []  # a live postmaster's children are not orphans (stop_foreign deals with the postmaster)
    pids = orphans(settings.data_dir)
    if not pids:
        return []
    log.warning("postgres processes %s outlived their postmaster on %s and hold its shared memory: killing "
                "them so that PostgreSQL can start", pids, settings.data_dir)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    clock = clock or SystemClock()
    deadline = clock.monotonic() + timeout_s
    for pid in pids:
        if not wait_pid_gone(pid, max(0.0, deadline - clock.monotonic()), clock):
            raise PgError(f"postgres {pid} of a dead postmaster on {settings.data_dir} survived SIGKILL "
                          f"for {timeout_s:g}s")
    return pids


def wait_pid_gone(pid: int, timeout_s: float, clock: Clock) -> bool:
    """Wait until ``pid`` (not necessarily our child) no longer runs postgres; False at the deadline."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        deadline = clock.monotonic() + timeout_s
        while postgres_alive(pid):
            remaining = deadline - clock.monotonic()
            if remaining <= 0:
                return False
            if pidfd is not None:
                readable(pidfd, min(remaining, 0.5))
            else:
                clock.sleep(min(remaining, 0.05))
        return True
    finally:
        if pidfd is not None:
            os.close(pidfd)
