"""The DCS on the embedded Raft store: a RaftNode in this process, behind KvDcs."""

from __future__ import annotations

from raftpg.clock import Clock
from raftpg.consensus.raft import RaftNode, RaftSettings
from raftpg.dcs.base import RAFT_FAILSAFE_REFUSAL
from raftpg.dcs.keys import KeyLayout
from raftpg.dcs.kvdcs import KvDcs
from raftpg.model import DynamicConfig


def raft_dcs(settings: RaftSettings, layout: KeyLayout, clock: Clock | None = None,
             fallback_config: DynamicConfig | None = None) -> KvDcs:
    """Start this node's Raft voter and return the DCS on it (closing the DCS stops the voter).
    ``fallback_config``: the dynamic config to run on if the stored one is unreadable (raftpg.dcs.codec)."""
    return KvDcs(RaftNode(settings, clock), layout, owns_kv=True, fallback_config=fallback_config,
                 failsafe_refusal=RAFT_FAILSAFE_REFUSAL)
