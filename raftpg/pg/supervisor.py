"""The fencing supervisor: the postmaster's parent, small enough to audit in one read. Standard library only.

Usage (the agent runs this file with ``python -I -S``, so nothing of raftpg is imported; ``python -m
raftpg.pg.supervisor`` works as well)::

    supervisor.py [--deadline MONOTONIC | --lease SECONDS] -- /path/to/postgres -D DATA_DIR [postgres args...]
    supervisor.py [--deadline MONOTONIC | --lease SECONDS] --adopt PID

``--adopt PID`` fences a postmaster that is already running instead of starting one (an agent adopting the
server an earlier agent left running: see ``detach``). It is not that postmaster's parent, so nothing ties
the postmaster's life to it (no ``PR_SET_PDEATHSIG``: the parent is still the detached supervisor, whose
death still stops it); everything else below holds, and the exit code it reports is 0 after ``stop`` and
1 otherwise (a non-child's exit status cannot be read).

Contract
--------
- Starts the postmaster as its only child, in a new session (its process group then holds every backend),
  with stdin from /dev/null, stdout and stderr to this process's stderr, and ``PR_SET_PDEATHSIG = SIGQUIT``:
  if the supervisor dies for any reason, the kernel sends the postmaster SIGQUIT (immediate shutdown).
- Reads commands from stdin, one per line:
    ``deadline <t>``     writes may continue until ``t`` on CLOCK_MONOTONIC (``time.monotonic()``, the same
                         clock in every process of this machine): the agent sends the absolute moment its
                         lease allows, so time spent between computing it and sending it (an initdb, a
                         restart's shutdown) is never added to it
    ``lease <seconds>``  the same, relative to when this line is read (for people driving it by hand)
    ``unlimited``        no deadline (a replica, or fencing not wanted)
    ``stop``             the agent is stopping PostgreSQL itself: clear the deadline and do not fence
                         because of it; the postmaster's exit that follows is not a fence
    ``detach``           the agent is leaving on purpose and PostgreSQL stays (a stop while the cluster is
                         paused, for an agent upgrade): clear the deadline, do not fence when stdin closes,
                         and keep being the postmaster's parent until it exits. Only a later ``deadline``,
                         ``lease`` or ``unlimited`` undoes it; a new agent adopts the server (``--adopt``)
  A malformed line is logged and ignored (it never extends a lease). The initial deadline is ``--deadline``
  or ``--lease``, or none. ``deadline``/``lease``/``unlimited`` after ``stop`` re-arm (the agent's stop
  failed and it keeps the server).
- FENCES when stdin reaches EOF (the agent exited or died: always, even after ``stop``, since nobody is
  left to finish a stop; never after ``detach``) or when the deadline passes: it writes one line to stderr saying why, sends the
  postmaster SIGQUIT (immediate shutdown: every backend is killed at once, no checkpoint), and SIGKILLs the
  postmaster's whole process group if the postmaster is not gone within 1 s (and, afterwards, any backend
  left in that group).
- Ignores SIGTERM, SIGINT, SIGHUP, SIGTSTP, SIGTTIN and SIGTTOU. A service manager stopping the agent's whole
  control group (systemd's default ``KillMode=control-group``) or a terminal's Ctrl-C / Ctrl-Z reach this
  process too; it must neither fence PostgreSQL under the agent's orderly shutdown (which stops it fast and
  hands the leader key over) nor be suspended while the agent is (a stopped supervisor cannot fence). It
  follows the agent instead: when the agent exits, stdin closes. The agent also starts it in a session of its
  own, so signals sent to the agent's process group do not reach it at all. SIGKILL still ends it, and then
  the kernel stops the postmaster (``PR_SET_PDEATHSIG``).
- Wakes on stdin, on the postmaster's exit (a pidfd) and at the deadline, so a fence starts within
  milliseconds of its cause; otherwise it sleeps (at most ``IDLE_S`` at a time). Without a pidfd (a kernel
  before 5.3) it checks the postmaster every ``POLL_S`` instead, the worst case the lease accounts for.
- Reports to the agent on stdout, one line each: ``started <pid>``, ``fenced <reason>``, ``exited <code>``.
- Exits when the postmaster exits, with the postmaster's exit code (128 + N if killed by signal N).
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable

PR_SET_PDEATHSIG = 1
POLL_S = 0.05  # without a pidfd: how often the postmaster's exit is checked (the worst case, see above)
IDLE_S = 1.0   # with a pidfd every cause of a fence wakes the supervisor; this only bounds one sleep
KILL_AFTER_S = 1.0
IGNORED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)


def parse_command(line: str, now: float | None = None) -> tuple[str, float | None]:
    """One command line -> ``(word, absolute deadline or None)``; ValueError if malformed.

    ``'deadline 123.5'`` -> ``('deadline', 123.5)``; ``'lease 2.5'`` -> ``('deadline', now + 2.5)`` (``now``
    defaults to ``time.monotonic()``); ``'unlimited'``/``'stop'``/``'detach'`` -> ``(word, None)``."""
    words = line.split()
    if len(words) == 2 and words[0] in ("deadline", "lease"):
        value = float(words[1])
        if not value >= 0 or value == float("inf"):  # also rejects NaN
            raise ValueError(f"{words[0]} must be finite and >= 0: {line!r}")
        if words[0] == "lease":
            value += time.monotonic() if now is None else now
        return "deadline", value
    if len(words) == 1 and words[0] in ("unlimited", "stop", "detach"):
        return words[0], None
    raise ValueError(f"unknown command: {line!r}")


def _say(fd: int, text: str) -> None:
    try:
        os.write(fd, (text + "\n").encode())
    except OSError:
        pass  # the agent is gone: nothing to tell


def _pdeathsig_setup(parent_pid: int) -> Callable[[], None]:
    libc = ctypes.CDLL(None, use_errno=True)

    def setup() -> None:  # runs in the child between fork and exec
        for sig in IGNORED_SIGNALS:  # an ignored signal would stay ignored across exec
            signal.signal(sig, signal.SIG_DFL)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGQUIT, 0, 0, 0) != 0 or os.getppid() != parent_pid:
            os._exit(70)  # cannot guarantee the postmaster dies with us, or we already died: do not start

    return setup


def wait_s(deadline: float | None, now: float, have_pidfd: bool) -> float:
    """How long one wait may last: until the deadline, and at most ``IDLE_S`` (``POLL_S`` without a pidfd,
    when only a poll notices the postmaster's exit). An idle supervisor wakes about once a second instead
    of twenty times (issue 15: the agent tree's idle CPU)."""
    longest = IDLE_S if have_pidfd else POLL_S
    return longest if deadline is None else max(0.0, min(longest, deadline - now))


def _exit_fds(pid: int) -> list[int]:
    try:
        return [os.pidfd_open(pid)]
    except (AttributeError, OSError):
        return []  # older kernel: the 50 ms poll and Popen.wait notice the exit instead


class Supervisor:
    def __init__(self, argv: list[str], deadline: float | None, adopt: int | None = None) -> None:
        self.argv = argv
        self.deadline = deadline
        self.adopt = adopt                  # the pid of a running postmaster to fence, instead of starting one
        self.buffer = b""
        self.stopping = False
        self.detached = False
        self.stdin_open = True
        self.exit_fds: list[int] = []  # a pidfd that turns readable when the postmaster exits (Linux 5.3+)
        self.child: subprocess.Popen[bytes] | None = None
        self.pid = 0

    def run(self) -> int:
        for sig in IGNORED_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # a detached supervisor reports to nobody
        if self.adopt is None:
            self.child = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=2, start_new_session=True,
                preexec_fn=_pdeathsig_setup(os.getpid()),
            )
            self.pid = self.child.pid
        else:
            self.pid = self.adopt
            if not _is_postgres(self.pid):
                _say(2, f"raftpg supervisor: no postgres process {self.pid} to adopt")
                return 3
        self.exit_fds = _exit_fds(self.pid)
        _say(1, f"started {self.pid}")
        reason = None
        while reason is None and self._alive():
            reason = self._wait_for_event()
        if reason is not None:
            self._fence(reason)
        code = self._exit_code(self.child.wait()) if self.child is not None else self._wait_adopted()
        if reason is None and not self.stopping and not self.detached:
            _say(2, f"raftpg supervisor: postmaster {self.pid} exited on its own with code {code}")
        _say(1, f"exited {code}")
        return code

    def _alive(self) -> bool:
        return self.child.poll() is None if self.child is not None else _is_postgres(self.pid)

    def _wait_adopted(self) -> int:
        for _ in range(int(10 / POLL_S)):  # after a fence or a stop: the SIGKILL of a fence ends it within ms
            if not _is_postgres(self.pid):
                break
            select.select(self.exit_fds, [], [], POLL_S)
        return 0 if self.stopping else 1

    def _wait_for_event(self) -> str | None:
        """Wait for input, the postmaster's exit or the deadline; return a fence reason, or None to keep going."""
        timeout = wait_s(self.deadline, time.monotonic(), bool(self.exit_fds))
        watched = [0, *self.exit_fds] if self.stdin_open else self.exit_fds
        readable, _, _ = select.select(watched, [], [], timeout)
        if 0 in readable:
            data = os.read(0, 4096)
            if data:
                self._handle_input(data)
            elif self.detached:
                self.stdin_open = False  # the agent left on purpose: keep the postmaster, follow it
            else:
                return "stdin closed: the agent exited or died"
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return f"lease expired {time.monotonic() - self.deadline:.3f}s ago without renewal"
        return None

    def _handle_input(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                word, seconds = parse_command(line)  # seconds: the absolute deadline, or None
            except ValueError as e:
                _say(2, f"raftpg supervisor: ignored: {e}")
                continue
            self.stopping = word == "stop"
            self.detached = word == "detach"
            self.deadline = seconds
            if self.detached:
                _say(2, f"raftpg supervisor: the agent detached; postmaster {self.pid} keeps running unfenced")

    def _fence(self, reason: str) -> None:
        pid = self.pid
        _say(2, f"raftpg supervisor: FENCING postmaster {pid}: {reason}")
        _say(1, f"fenced {reason}")
        try:
            os.kill(pid, signal.SIGQUIT)
        except ProcessLookupError:
            pass
        select.select(self.exit_fds, [], [], KILL_AFTER_S) if self.exit_fds else None
        if self.child is not None:
            try:
                self.child.wait(timeout=0 if self.exit_fds else KILL_AFTER_S)
            except subprocess.TimeoutExpired:
                _say(2, f"raftpg supervisor: postmaster {pid} still alive after {KILL_AFTER_S}s, SIGKILL to its group")
        elif _is_postgres(pid):
            _say(2, f"raftpg supervisor: postmaster {pid} still alive after {KILL_AFTER_S}s, SIGKILL to its group")
        try:
            os.killpg(pid, signal.SIGKILL)  # the postmaster if still there, and any backend it left behind
        except (ProcessLookupError, PermissionError):
            pass

    @staticmethod
    def _exit_code(status: int) -> int:
        return 128 - status if status < 0 else status


def _is_postgres(pid: int) -> bool:
    """``pid`` is a live postgres process (not a zombie, not a reused pid running something else)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            stat = f.read()
    except OSError:
        return False
    comm, state = stat[stat.find("(") + 1: stat.rfind(")")], stat[stat.rfind(")") + 2: stat.rfind(")") + 3]
    return state != "Z" and comm in ("postgres", "postmaster")


def main(args: list[str]) -> int:
    usage = ("usage: supervisor.py [--deadline MONOTONIC | --lease SECONDS] -- POSTGRES_ARGV...\n"
             "       supervisor.py [--deadline MONOTONIC | --lease SECONDS] --adopt PID")
    options, argv = (args[: args.index("--")], args[args.index("--") + 1:]) if "--" in args else (args, [])
    adopt = None
    if "--" not in args and len(options) >= 2 and options[-2] == "--adopt":
        adopt = int(options[-1]) if options[-1].isdigit() else 0
        if adopt <= 0:
            _say(2, f"raftpg supervisor: --adopt needs a pid, got {options[-1]!r}")
            return 2
        options = options[:-2]
    elif not argv:
        _say(2, usage)
        return 2
    deadline = None
    if len(options) == 2 and options[0] in ("--deadline", "--lease"):
        try:
            deadline = parse_command(f"{options[0][2:]} {options[1]}")[1]
        except ValueError as e:
            _say(2, f"raftpg supervisor: {e}")
            return 2
    elif options:
        _say(2, f"raftpg supervisor: unknown options {options}")
        return 2
    return Supervisor(argv, deadline, adopt).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
