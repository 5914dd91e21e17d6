"""What callers of the replicated store see: errors, status, and the client protocol.

No pysyncobj type crosses this boundary. Every call takes a timeout in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from raftpg.kv import Committed, Conflict, Guard, KeyValue


class KvError(Exception):
    """Base of every error the store raises to callers.

    ``indeterminate`` tells whether the command may still take effect (it reached a Raft log and its fate
    is unknown: a client must treat it as "maybe applied", never as "failed").
    """

    indeterminate = True


class NoQuorum(KvError):
    """This node cannot reach a majority of the Raft voters, so the command could not commit in time.

    ``indeterminate`` is False when the command never reached a leader's log (no leader was known for
    the whole timeout): it did not and will not take effect. It is True when the command was handed to
    a leader that then lost its quorum: it is in that leader's log and commits if the leader regains
    a quorum before another leader overwrites it.
    """

    def __init__(self, message: str, *, indeterminate: bool = False) -> None:
        super().__init__(message)
        self.indeterminate = indeterminate


class KvTimeout(KvError):
    """No answer within the timeout while a quorum seemed reachable. The outcome is unknown."""


class UnknownOutcome(KvError):
    """Leadership changed while the command was in flight: it may or may not have been applied."""


class KvRejected(KvError, ValueError):
    """The request is malformed or over a limit (key/value size, ttl). Nothing changed."""

    indeterminate = False


class StoreFailed(KvError):
    """The state machine hit an invariant violation and stopped serving (fail closed)."""

    indeterminate = False


class DiskFull(KvError):
    """The filesystem of ``raft.data_dir`` is full: this node refuses writes and read barriers, and takes
    no part in Raft, until space is freed (diskspace.py). The command was not queued: nothing changed."""

    indeterminate = False


@dataclass(frozen=True)
class PeerStatus:
    addr: str
    connected: bool
    match_index: int | None = None


@dataclass(frozen=True)
class RaftStatus:
    self_addr: str
    state: str  # "leader" | "follower" | "candidate"
    term: int
    leader: str | None
    commit_index: int
    last_applied: int
    has_quorum: bool
    peers: tuple[PeerStatus, ...]
    revision: int
    ready: bool
    running: bool = True  # False once the Raft thread has died: the node must be restarted
    disk_full: str | None = None  # why this node refuses writes and stays out of Raft, while its disk is full

    def to_dict(self) -> dict[str, Any]:
        return {
            "self": self.self_addr, "state": self.state, "term": self.term, "leader": self.leader,
            "commit_index": self.commit_index, "last_applied": self.last_applied,
            "has_quorum": self.has_quorum, "revision": self.revision, "ready": self.ready,
            "running": self.running, "disk_full": self.disk_full,
            "members": [{"addr": self.self_addr, "connected": True, "self": True}]
            + [{"addr": p.addr, "connected": p.connected, "match_index": p.match_index} for p in self.peers],
        }


class KvClient(Protocol):
    """The replicated KV as the DCS uses it. Thread-safe. Reads are local unless ``linearizable``."""

    def get(self, key: str, *, linearizable: bool = False, timeout_s: float = 5.0) -> KeyValue | None: ...

    def range(self, prefix: str, *, linearizable: bool = False,
              timeout_s: float = 5.0) -> tuple[int, list[KeyValue]]: ...

    def put(self, key: str, value: str, *, guard: Guard | None = None, ttl_s: float | None = None,
            timeout_s: float = 5.0) -> Committed | Conflict: ...

    def touch(self, key: str, *, guard: Guard | None = None,
              timeout_s: float = 5.0) -> Committed | Conflict: ...

    def delete(self, key: str, *, guard: Guard | None = None,
               timeout_s: float = 5.0) -> Committed | Conflict: ...

    def watch(self, prefix: str, after_revision: int, timeout_s: float,
              ignore: tuple[str, ...] = ()) -> int | None:
        """Block until a key under ``prefix`` but not under ``ignore`` changes after ``after_revision``."""

    def status(self) -> RaftStatus: ...
