"""The thread-safe shell around :class:`raftpg.kv.KvState` shared by the Raft and in-memory nodes.

Applies happen on one thread (pysyncobj's tick thread, or the caller in the in-memory node); reads and
watches come from any thread. A condition variable wakes watchers after every apply.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from raftpg.clock import SystemClock
from raftpg.consensus.api import KvRejected, StoreFailed
from raftpg.kv import (
    Command,
    Committed,
    Conflict,
    Fingerprint,
    InvariantViolation,
    KeyValue,
    KvState,
    Rejected,
    Result,
)

log = logging.getLogger(__name__)
_REAL_TIME = SystemClock()  # waits on real threads and sockets: real time


class GuardedState:
    def __init__(self) -> None:
        self._state = KvState()
        self._cond = threading.Condition()
        self.failure: str | None = None

    def apply(self, command: Command | Rejected) -> Result:
        with self._cond:
            if self.failure:
                return Rejected(f"store stopped: {self.failure}")
            try:
                result = self._state.apply(command)
            except InvariantViolation as exc:
                self.failure = str(exc)
                log.critical("replicated store invariant violated, refusing further commands: %s", exc)
                result = Rejected(f"store stopped: {exc}")
            except Exception as exc:  # noqa: BLE001
                # A bug in apply. Letting it escape would wedge pysyncobj's tick thread on this entry
                # forever (it retries the same entry every tick); fail closed with a clear error instead.
                self.failure = f"apply raised {exc!r}"
                log.critical("replicated store apply failed, refusing further commands", exc_info=True)
                result = Rejected(f"store stopped: {self.failure}")
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

    def watch(self, prefix: str, after_revision: int, timeout_s: float,
              ignore: tuple[str, ...] = ()) -> int | None:
        """Block until a key under ``prefix`` changes after ``after_revision``; return the revision then.

        Returns None on timeout. Returns at once if the change history no longer covers
        ``after_revision`` (the caller re-reads, as after an etcd compaction).
        """
        deadline = _REAL_TIME.monotonic() + max(0.0, timeout_s)
        with self._cond:
            while True:
                changed = self._state.changed_since(prefix, after_revision, ignore)
                if changed is None or changed:
                    return self._state.revision
                remaining = deadline - _REAL_TIME.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def snapshot(self) -> dict[str, Any]:
        with self._cond:
            return self._state.to_snapshot()

    def restore(self, data: object) -> None:
        """Install a Raft snapshot. A snapshot we cannot read stops the store (fail closed): carrying on
        with the old state while Raft believes the snapshot is applied would silently diverge.

        pysyncobj may install a snapshot *older* than what this replica already applied (a leader that
        walked a follower's next index back past its compacted log start); it then re-applies the
        entries after it, so the state must be replaced all the same. Local reads on this node go back
        in time until then (linearizable reads wait for their barrier and do not): logged.
        """
        with self._cond:
            try:
                restored = KvState.from_snapshot(data)
            except (ValueError, TypeError, KeyError) as exc:
                self.failure = f"unreadable Raft snapshot: {exc}"
                log.critical("replicated store: %s; refusing further commands", self.failure)
            else:
                if restored.revision < self._state.revision:
                    log.warning("installing a Raft snapshot at revision %d, behind this replica's %d; "
                                "the entries after it are applied again", restored.revision,
                                self._state.revision)
                self._state = restored
            self._cond.notify_all()

    def locked_state(self) -> KvState:
        """For the leader's lease clock, called on the apply thread only."""
        return self._state

    def fingerprint(self) -> Fingerprint:
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
