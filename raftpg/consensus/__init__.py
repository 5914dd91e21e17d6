"""The replicated store's node: Raft (via pysyncobj) around the deterministic state machine of kv.py.

- ``api.py``: the client protocol, status and errors every caller sees (no pysyncobj types leak out).
- ``raft.py``: RaftNode; wraps a SyncObj by composition. ``settings.py``: its settings and the rules
  that refuse unsafe ones; ``membership.py``: adding/removing members, leadership transfer.
- ``transport.py`` and ``wire.py``: pysyncobj's TCP transport with strangers bounded (reads per poll,
  frame and stream size before identification, connections per host), refusals logged, the listener
  kept through EMFILE, and the node's isolation while its disk is full.
- ``journal.py``: pysyncobj's file journal, preallocated (no SIGBUS on a full disk) and private;
  ``diskspace.py``: detecting a full disk, failing closed, rejoining; ``datadir.py``: raft.data_dir
  checked (owner, modes) before anything in it is unpickled; ``limits.py``: the open-files limit.
- ``recovery.py``: the node's files; rebuilding state offline; forming a new cluster after majority loss.
- ``durability.py``: optional msync/fsync of the journal, term/vote and snapshot (``RaftSettings.fsync``).
- ``pysyncobj_logs.py``: pysyncobj's log records, levelled to what raftpg knows.
- ``state.py``: the thread-safe shell around KvState, with watch.
- ``memory.py``: an in-memory node with the same API, for tests and simulations.

One node as a process with a JSON-over-HTTP control API (tests, bench, jepsen-lite) is a test tool:
``raftpg/testing/raft_driver.py``.

May import: raftpg.kv, raftpg.clock, pysyncobj (every module but api.py, state.py, memory.py,
datadir.py, diskspace.py, limits.py). Invariants: commands are versioned JSON; lease expiry is proposed
only by the Raft leader from its own monotonic clock; a write that cannot reach a quorum fails within
its timeout; nothing unauthenticated is read without bound; a node never acknowledges an entry it could
not store, and takes no part in Raft while its disk is full.
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
