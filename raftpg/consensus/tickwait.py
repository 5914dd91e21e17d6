"""How long pysyncobj's tick thread sleeps between ticks: until the next thing that is due (issue 15).

pysyncobj's tick thread runs one tick, then waits in ``poll`` for a socket event or ``autoTickPeriod``,
whichever comes first. A fixed period wakes an idle node ten times a second for nothing: every timer
pysyncobj keeps is far longer (the leader's heartbeat every ``heartbeat_s``, a follower's election
deadline, reconnects every second) and the lease clock knows when its next expiry falls due. So the
poll wait is computed after each tick instead:

- a leader sleeps until its next heartbeat or the next lease expiry (or re-proposal) it must propose,
  and not at all while it holds entries it could commit alone (a one-node cluster);
- a follower or candidate sleeps until its election deadline;
- never longer than ``cap_s``, for pysyncobj's coarser timers (reconnects, its once-a-second journal
  bookkeeping, leader step-down), and never shorter than ``floor_s`` when a deadline has already passed
  (a follower connected to nobody keeps its deadline in the past: it then polls as it always did).

Everything else wakes the thread at once, as before: a message on any Raft socket, a command submitted
on another thread (pysyncobj's own wake-up pipe), a task queued for the tick thread or ``close()``
(:meth:`TickWait.wake`, our pipe). Waking late only ever delays an expiry (safe: a lease must never
expire early, safety rule 2) or a heartbeat by at most ``cap_s``, which stays far below the election
timeout. The deadlines are pysyncobj's private attributes; if a later pysyncobj renames them the wait
falls back to ``floor_s`` (the old fixed tick) rather than guessing, and a test pins their names.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from pysyncobj.monotonic import monotonic as raft_monotonic
from pysyncobj.poller import POLL_EVENT_TYPE

log = logging.getLogger(__name__)

# pysyncobj's deadlines (name-mangled privates of SyncObj), on its own clock (raft_monotonic).
HEARTBEAT_DUE = "_SyncObj__newAppendEntriesTime"
ELECTION_DUE = "_SyncObj__raftElectionDeadline"
RAFT_LOG = "_SyncObj__raftLog"  # entries (command, index, term); the last one's index is the log's end
_LATE_S = 0.001  # pysyncobj compares with ``>``/``<``: wake just after a deadline, not just before it


def wait_s(sync: Any, now: float, next_lease_s: float | None, floor_s: float, cap_s: float) -> float:
    """Seconds the tick thread may sleep now (pure: reads ``sync``'s role, commit index and deadlines).

    ``now`` is on pysyncobj's clock; ``next_lease_s`` is the lease clock's own answer (seconds until
    the next expiry the leader must propose, None if none).
    """
    try:
        if sync._isLeader():
            if sync.raftCommitIndex < getattr(sync, RAFT_LOG)[-1][1]:
                # Entries wait for a commit, which pysyncobj computes at the start of a tick. Followers'
                # answers wake a leader that has any; a leader alone commits on its next tick: now.
                return floor_s if sync.otherNodes else 0.0
            due = getattr(sync, HEARTBEAT_DUE) - now
            if next_lease_s is not None:
                due = min(due, next_lease_s)
        else:
            due = getattr(sync, ELECTION_DUE) - now
    except AttributeError:
        return floor_s
    if due <= 0:
        return floor_s
    return float(min(cap_s, due + _LATE_S))


class TickWait:
    """Installs the computed wait on one SyncObj's poller and owns a pipe that wakes its tick thread."""

    def __init__(self, sync: Any, next_lease_s: Callable[[], float | None], floor_s: float,
                 cap_s: float) -> None:
        self._sync = sync
        self._next_lease_s = next_lease_s
        self._floor_s = floor_s
        self._cap_s = cap_s
        self._lock = threading.Lock()
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._subscribed = False
        poller = sync._poller
        self._poll = poller.poll
        poller.poll = self._wait  # an instance attribute: only this node's poller changes

    def _wait(self, _period: float) -> None:
        """Tick thread, in place of ``poller.poll(autoTickPeriod)``."""
        if not self._subscribed:  # on the tick thread: the poller is not thread-safe
            self._sync._poller.subscribe(self._read_fd, self._drain, POLL_EVENT_TYPE.READ)
            self._subscribed = True
        try:
            lease = self._next_lease_s()
        except Exception:  # noqa: BLE001 - a bug here must not stop Raft's tick thread
            log.exception("raft: computing the next lease expiry failed; ticking at the fixed period")
            lease = 0.0
        self._poll(wait_s(self._sync, raft_monotonic(), lease, self._floor_s, self._cap_s))

    def _drain(self, _fd: int, _events: int) -> None:
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass

    def wake(self) -> None:
        """Any thread: end the tick thread's current wait now."""
        with self._lock:
            if self._write_fd < 0:
                return
            try:
                os.write(self._write_fd, b"w")
            except BlockingIOError:
                pass  # the pipe is full of wake-ups already

    def close(self) -> None:
        """After the tick thread has stopped: release the pipe."""
        with self._lock:
            fds, self._read_fd, self._write_fd = (self._read_fd, self._write_fd), -1, -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)
