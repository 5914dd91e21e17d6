"""The replicated store's node: Raft (via pysyncobj) around the deterministic state machine of kv.py.

- ``api.py``: the client protocol, status and errors every caller sees (no pysyncobj types leak out).
- ``raft.py``: RaftNode; wraps a SyncObj by composition.
- ``transport.py``: pysyncobj's TCP transport, logging refused peers and bounding strangers.
- ``recovery.py``: the node's files; rebuilding state offline; forming a new cluster after majority loss.
- ``durability.py``: optional msync/fsync of the journal, term/vote and snapshot (``RaftSettings.fsync``).
- ``state.py``: the thread-safe shell around KvState, with watch.
- ``memory.py``: an in-memory node with the same API, for tests and simulations.
- ``driver.py``: one node as a process with a small JSON-over-HTTP control API (tests, bench, jepsen-lite).

May import: raftpg.kv, raftpg.clock, pysyncobj (raft.py, transport.py, recovery.py, durability.py). Invariants: commands are versioned JSON;
lease expiry is proposed only by the Raft leader from its own monotonic clock and a new leader restarts
every countdown; a write that cannot reach a quorum fails within its timeout.
"""

from raftpg.consensus.api import (
    DiskFull,
    KvClient,
    KvError,
    KvRejected,
    KvTimeout,
    NoQuorum,
    RaftStatus,
    StoreFailed,
    UnknownOutcome,
)
from raftpg.consensus.memory import MemoryKv

__all__ = ["DiskFull", "KvClient", "KvError", "KvRejected", "KvTimeout", "MemoryKv", "NoQuorum", "RaftStatus",
           "StoreFailed", "UnknownOutcome"]
