"""The thread-safe shell around :class:`raftpg.kv.KvState` shared by the Raft and in-memory nodes.

Applies happen on one thread (pysyncobj's tick thread, or the caller in the in-memory node); reads and
watches come from any thread. A condition variable wakes watchers after every apply.
"""

from __future__ import annotations

import logging
import threading
import time

from raftpg.consensus.api import KvRejected, StoreFailed
from raftpg.kv import Committed, Conflict, InvariantViolation, KeyValue, KvState, Rejected, Result

log = logging.getLogger(__name__)


class GuardedState:
    def __init__(self) -> None:
        self._state = KvState()
        self._cond = threading.Condition()
        self.failure: str | None = None

    def apply(self, command: dict | Rejected) -> Result:
        with self._cond:
            if self.failure:
                return Rejected(f"store stopped: {self.failure}")
            try:
                result = self._state.apply(command)
            except InvariantViolation as exc:
                self.failure = str(exc)
                log.critical("replicated store invariant violated, refusing further commands: %s", exc)
                result = Rejected(f"store stopped: {exc}")
            self._cond.notify_all()
            return result

    def get(self, key: str) -> KeyValue | None:
        with self._cond:
            return self._state.get(key)

    def range(self, prefix: str) -> tuple[int, list[KeyValue]]:
        with self._cond:
            return self._state.revision, self._state.range(prefix)

    @property
    def revision(self) -> int:
        with self._cond:
            return self._state.revision

    def watch(self, prefix: str, after_revision: int, timeout_s: float) -> int | None:
        """Block until a key under ``prefix`` changes after ``after_revision``; return the revision then.

        Returns None on timeout. Returns at once if the change history no longer covers
        ``after_revision`` (the caller re-reads, as after an etcd compaction).
        """
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._cond:
            while True:
                changed = self._state.changed_since(prefix, after_revision)
                if changed is None or changed:
                    return self._state.revision
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def snapshot(self) -> dict:
        with self._cond:
            return self._state.to_snapshot()

    def restore(self, data: dict) -> None:
        with self._cond:
            self._state = KvState.from_snapshot(data)
            self._cond.notify_all()

    def locked_state(self) -> KvState:
        """For the leader's lease clock, called on the apply thread only."""
        return self._state

    def fingerprint(self) -> tuple:
        with self._cond:
            return self._state.fingerprint()

    def check_failed(self) -> None:
        if self.failure:
            raise StoreFailed(self.failure)


def unwrap(result: Result) -> Committed | Conflict:
    """Turn a state-machine answer into what callers get: Rejected becomes an exception."""
    if isinstance(result, Rejected):
        raise KvRejected(result.reason)
    return result
