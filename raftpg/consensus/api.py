"""What callers of the replicated store see: errors, status, and the client protocol.

No pysyncobj type crosses this boundary. Every call takes a timeout in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from raftpg.kv import Committed, Conflict, Guard, KeyValue


class KvError(Exception):
    """Base of every error the store raises to callers."""


class NoQuorum(KvError):
    """This node cannot reach a majority of the Raft voters; the write was not committed."""


class KvTimeout(KvError):
    """No answer within the timeout while a quorum seemed reachable. The outcome is unknown."""


class UnknownOutcome(KvError):
    """Leadership changed while the command was in flight: it may or may not have been applied."""


class KvRejected(KvError, ValueError):
    """The request is malformed or over a limit (key/value size, ttl). Nothing changed."""


class StoreFailed(KvError):
    """The state machine hit an invariant violation and stopped serving (fail closed)."""


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

    def to_dict(self) -> dict:
        return {
            "self": self.self_addr, "state": self.state, "term": self.term, "leader": self.leader,
            "commit_index": self.commit_index, "last_applied": self.last_applied,
            "has_quorum": self.has_quorum, "revision": self.revision, "ready": self.ready,
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

    def watch(self, prefix: str, after_revision: int, timeout_s: float) -> int | None: ...

    def status(self) -> RaftStatus: ...
