"""The fencing supervisor: the postmaster's parent, small enough to audit in one read. Standard library only.

Usage (the agent runs this file with ``python -I``, so nothing of raftpg is imported; ``python -m
raftpg.pg.supervisor`` works as well)::

    supervisor.py [--lease SECONDS] -- /path/to/postgres -D DATA_DIR [postgres args...]

Contract
--------
- Starts the postmaster as its only child, in a new session (its process group then holds every backend),
  with stdin from /dev/null, stdout and stderr to this process's stderr, and ``PR_SET_PDEATHSIG = SIGQUIT``:
  if the supervisor dies for any reason, the kernel sends the postmaster SIGQUIT (immediate shutdown).
- Reads commands from stdin, one per line:
    ``lease <seconds>``  writes may continue until now + seconds (this process's ``time.monotonic()``)
    ``unlimited``        no deadline (a replica, or fencing not wanted)
    ``stop``             the agent is stopping PostgreSQL itself: clear the deadline and do not fence
                         because of it; the postmaster's exit that follows is not a fence
  A malformed line is logged and ignored (it never extends a lease). The initial deadline is ``--lease``, or
  none. ``lease``/``unlimited`` after ``stop`` re-arm (the agent's stop failed and it keeps the server).
- FENCES when stdin reaches EOF (the agent exited or died: always, even after ``stop``, since nobody is
  left to finish a stop), when the deadline passes, or on SIGTERM: it writes one line to stderr saying
  why, sends the postmaster SIGQUIT (immediate shutdown: every backend is killed at once, no checkpoint), and
  SIGKILLs the postmaster's whole process group if the postmaster is not gone within 1 s (and, afterwards,
  any backend left in that group). SIGINT is ignored (a terminal's Ctrl-C is for the agent to handle).
- Wakes on stdin, on SIGTERM, on the postmaster's exit (a pidfd) and at the deadline, and checks all of them
  at least every 50 ms, so a fence starts within milliseconds of its cause.
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

PR_SET_PDEATHSIG = 1
POLL_S = 0.05
KILL_AFTER_S = 1.0


def parse_command(line: str) -> tuple[str, float | None]:
    """``'lease 2.5'`` -> ``('lease', 2.5)``; ``'unlimited'``/``'stop'`` -> ``(word, None)``; else ValueError."""
    words = line.split()
    if len(words) == 2 and words[0] == "lease":
        seconds = float(words[1])
        if not seconds >= 0 or seconds == float("inf"):  # also rejects NaN
            raise ValueError(f"lease seconds must be finite and >= 0: {line!r}")
        return "lease", seconds
    if len(words) == 1 and words[0] in ("unlimited", "stop"):
        return words[0], None
    raise ValueError(f"unknown command: {line!r}")


def _say(fd: int, text: str) -> None:
    try:
        os.write(fd, (text + "\n").encode())
    except OSError:
        pass  # the agent is gone: nothing to tell


def _pdeathsig_setup(parent_pid: int):
    libc = ctypes.CDLL(None, use_errno=True)

    def setup() -> None:  # runs in the child between fork and exec
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # an ignored signal would stay ignored across exec
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGQUIT, 0, 0, 0) != 0 or os.getppid() != parent_pid:
            os._exit(70)  # cannot guarantee the postmaster dies with us, or we already died: do not start

    return setup


def _exit_fds(pid: int) -> list[int]:
    try:
        return [os.pidfd_open(pid)]
    except (AttributeError, OSError):
        return []  # older kernel: the 50 ms poll and Popen.wait notice the exit instead


class Supervisor:
    def __init__(self, argv: list[str], lease_s: float | None) -> None:
        self.argv = argv
        self.deadline = None if lease_s is None else time.monotonic() + lease_s
        self.buffer = b""
        self.stopping = False
        self.exit_fds: list[int] = []  # a pidfd that turns readable when the postmaster exits (Linux 5.3+)
        self.child: subprocess.Popen[bytes] | None = None

    def run(self) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGTERM, lambda *_: None)  # handled through the wakeup fd
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.child = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=2, start_new_session=True,
            preexec_fn=_pdeathsig_setup(os.getpid()),
        )
        _say(1, f"started {self.child.pid}")
        self.exit_fds = _exit_fds(self.child.pid)
        reason = None
        while reason is None and self.child.poll() is None:
            reason = self._wait_for_event(wake_r)
        if reason is not None:
            self._fence(reason)
        code = self._exit_code(self.child.wait())
        if reason is None and not self.stopping:
            _say(2, f"raftpg supervisor: postmaster {self.child.pid} exited on its own with code {code}")
        _say(1, f"exited {code}")
        return code

    def _wait_for_event(self, wake_r: int) -> str | None:
        """Wait up to POLL_S; return a fence reason, or None to keep going."""
        timeout = POLL_S if self.deadline is None else max(0.0, min(POLL_S, self.deadline - time.monotonic()))
        readable, _, _ = select.select([0, wake_r, *self.exit_fds], [], [], timeout)
        if wake_r in readable:
            if signal.SIGTERM in os.read(wake_r, 64):
                return "SIGTERM received"
        if 0 in readable:
            data = os.read(0, 4096)
            if not data:
                return "stdin closed: the agent exited or died"
            self._handle_input(data)
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
                word, seconds = parse_command(line)
            except ValueError as e:
                _say(2, f"raftpg supervisor: ignored: {e}")
                continue
            self.stopping = word == "stop"
            self.deadline = None if seconds is None else time.monotonic() + seconds

    def _fence(self, reason: str) -> None:
        assert self.child is not None
        pid = self.child.pid
        _say(2, f"raftpg supervisor: FENCING postmaster {pid}: {reason}")
        _say(1, f"fenced {reason}")
        try:
            os.kill(pid, signal.SIGQUIT)
        except ProcessLookupError:
            pass
        select.select(self.exit_fds, [], [], KILL_AFTER_S) if self.exit_fds else None
        try:
            self.child.wait(timeout=0 if self.exit_fds else KILL_AFTER_S)
        except subprocess.TimeoutExpired:
            _say(2, f"raftpg supervisor: postmaster {pid} still alive after {KILL_AFTER_S}s, SIGKILL to its group")
        try:
            os.killpg(pid, signal.SIGKILL)  # the postmaster if still there, and any backend it left behind
        except (ProcessLookupError, PermissionError):
            pass

    @staticmethod
    def _exit_code(status: int) -> int:
        return 128 - status if status < 0 else status


def main(args: list[str]) -> int:
    lease_s = None
    if "--" not in args or args.index("--") == len(args) - 1:
        _say(2, "usage: supervisor.py [--lease SECONDS] -- POSTGRES_ARGV...")
        return 2
    options, argv = args[: args.index("--")], args[args.index("--") + 1:]
    if options[:1] == ["--lease"] and len(options) == 2:
        lease_s = parse_command(f"lease {options[1]}")[1]
    elif options:
        _say(2, f"raftpg supervisor: unknown options {options}")
        return 2
    return Supervisor(argv, lease_s).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
