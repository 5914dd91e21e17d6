"""User callbacks (``postgresql.callbacks``): ``<command> <action> <role> <scope>``, run in the background.

The caller's thread never waits for a callback: each runs in its own session with stdin from /dev/null, is
reaped on a later call (its non-zero exit logged), and is killed (whole process group) by ``close``.
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


class CallbackRunner:
    def __init__(self, commands: dict[str, str], scope: str, clock: Clock | None = None) -> None:
        self.commands = dict(commands)
        self.scope = scope
        self.clock = clock or SystemClock()
        self._running: list[tuple[list[str], subprocess.Popen[bytes]]] = []
        self._lock = threading.Lock()

    def run(self, action: str, role: str) -> subprocess.Popen[bytes] | None:
        """Start the command configured for ``action`` (None if there is none or it cannot start)."""
        if action not in CALLBACK_ACTIONS:
            raise ValueError(f"unknown callback action {action!r}, expected one of {list(CALLBACK_ACTIONS)}")
        self.reap()
        command = self.commands.get(action)
        if not command:
            return None
        argv = [*shlex.split(command), action, role, self.scope]
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as e:
            log.warning("callback %s could not start: %s", argv, e)
            return None
        with self._lock:
            self._running.append((argv, proc))
        return proc

    def reap(self) -> int:
        """Collect finished callbacks, logging failures; return how many still run."""
        with self._lock:
            still = []
            for argv, proc in self._running:
                code = proc.poll()
                if code is None:
                    still.append((argv, proc))
                elif code != 0:
                    log.warning("callback %s exited with code %d", argv, code)
            self._running = still
            return len(still)

    def close(self, timeout_s: float = 5.0) -> None:
        """Give running callbacks ``timeout_s`` to finish, then kill their process groups."""
        deadline = self.clock.monotonic() + timeout_s
        with self._lock:
            running = list(self._running)
        for argv, proc in running:
            try:
                proc.wait(timeout=max(0.0, deadline - self.clock.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("callback %s still running after %gs: killed", argv, timeout_s)
                kill_group(proc.pid)
                proc.wait()
        self.reap()
