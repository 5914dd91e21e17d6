"""User callbacks (``postgresql.callbacks``): ``<command> <action> <role> <scope>``, one at a time, in the
background, as Patroni runs them.

- **One at a time.** Starting a callback stops the one still running (SIGKILL to its whole process group,
  so a shell script's children go too): a VIP script told ``on_stop`` must not race the ``on_start`` it
  interrupts. Patroni's CallbackExecutor does the same.
- **A timeout.** A callback still running ``timeout_s`` after it started is killed (group) by a timer
  thread, and that is logged.
- **Never blocking the caller.** ``run`` starts the process and returns; the only wait is for a process
  just sent SIGKILL (the kernel reaps it at once). Non-zero exits are logged when reaped.
- **Role names.** The role is ``primary`` or ``replica``; ``postgresql.callbacks.primary_role: master``
  (the ``primary_role`` entry of ``commands``) passes ``master`` instead, for scripts written for
  Patroni 3 or older.

Each callback runs in its own session with stdin from /dev/null; ``close`` gives the running one a grace
period and then kills it.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import threading

from raftpg.clock import Clock, SystemClock
from raftpg.pg.settings import CALLBACK_ACTIONS
from raftpg.pg.tools import kill_group

log = logging.getLogger(__name__)

PRIMARY_ROLE_KEY = "primary_role"   # in ``commands``: the word passed for a primary (primary | master)
DEFAULT_TIMEOUT_S = 300.0


class CallbackRunner:
    def __init__(self, commands: dict[str, str], scope: str, clock: Clock | None = None, *,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.commands = dict(commands)
        self.scope = scope
        self.clock = clock or SystemClock()
        self.timeout_s = timeout_s
        self._current: tuple[list[str], subprocess.Popen[bytes]] | None = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def role_word(self, role: str) -> str:
        if role == "primary":
            return self.commands.get(PRIMARY_ROLE_KEY) or "primary"
        return role

    def run(self, action: str, role: str) -> subprocess.Popen[bytes] | None:
        """Start the command configured for ``action`` (None if there is none or it cannot start), after
        stopping a callback still running."""
        if action not in CALLBACK_ACTIONS:
            raise ValueError(f"unknown callback action {action!r}, expected one of {list(CALLBACK_ACTIONS)}")
        command = self.commands.get(action)
        if not command:
            self.reap()
            return None
        argv = [*shlex.split(command), action, self.role_word(role), self.scope]
        with self._lock:
            self._stop_current("a new callback started")
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as e:
                log.warning("callback %s could not start: %s", argv, e)
                return None
            self._current = (argv, proc)
            self._timer = threading.Timer(self.timeout_s, self._expire, args=(proc,))
            self._timer.daemon = True
            self._timer.start()
        return proc

    def _expire(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            if self._current is not None and self._current[1] is proc and proc.poll() is None:
                self._stop_current(f"still running after {self.timeout_s:g}s")

    def _stop_current(self, why: str) -> None:
        """Kill the running callback's process group (lock held) and forget it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        current, self._current = self._current, None
        if current is None:
            return
        argv, proc = current
        code = proc.poll()
        if code is None:
            log.warning("callback %s killed: %s", argv, why)
            kill_group(proc.pid)
            proc.wait()
        elif code != 0:
            log.warning("callback %s exited with code %d", argv, code)

    def reap(self) -> int:
        """Collect a finished callback, logging a failure; return how many still run (0 or 1)."""
        with self._lock:
            if self._current is None:
                return 0
            argv, proc = self._current
            code = proc.poll()
            if code is None:
                return 1
            if code != 0:
                log.warning("callback %s exited with code %d", argv, code)
            self._current = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return 0

    def close(self, timeout_s: float = 5.0) -> None:
        """Give the running callback ``timeout_s`` to finish, then kill its process group."""
        with self._lock:
            current = self._current
        if current is not None:
            try:
                current[1].wait(timeout=max(0.0, timeout_s))
            except subprocess.TimeoutExpired:
                pass
        with self._lock:
            self._stop_current(f"still running at shutdown after {timeout_s:g}s")
