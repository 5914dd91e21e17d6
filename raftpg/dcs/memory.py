"""The DCS on the in-memory KV: the same code path as the Raft DCS, for tests and simulations."""

from __future__ import annotations

from raftpg.clock import Clock
from raftpg.consensus.memory import MemoryKv
from raftpg.dcs.keys import KeyLayout
from raftpg.dcs.kvdcs import KvDcs


def memory_dcs(clock: Clock, layout: KeyLayout, kv: MemoryKv | None = None) -> KvDcs:
    """A DCS on ``kv`` (shared between simulated nodes) or on a fresh in-memory store."""
    return KvDcs(kv if kv is not None else MemoryKv(clock), layout)
