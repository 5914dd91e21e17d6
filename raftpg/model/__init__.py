"""Pure values shared by every layer: the cluster snapshot, this node's PostgreSQL, WAL positions.

Imports nothing of raftpg but itself; no I/O, no clock. Frozen dataclasses only.
"""

from raftpg.model.cluster import (
    ClusterView,
    DynamicConfig,
    Failover,
    HistoryEntry,
    Leader,
    Member,
    Role,
    SyncState,
)
from raftpg.model.local import DataDir, LocalState, PeerAnswer, ReplicationRow
from raftpg.model.lsn import format_lsn, parse_lsn, parse_size_bytes
from raftpg.model.slots import PermanentSlot
from raftpg.model.status import NodeStatus
from raftpg.model.tags import Tags

__all__ = [
    "ClusterView", "DataDir", "DynamicConfig", "Failover", "HistoryEntry", "Leader", "LocalState", "Member",
    "NodeStatus", "PeerAnswer", "PermanentSlot",
    "ReplicationRow", "Role", "SyncState", "Tags", "format_lsn", "parse_lsn", "parse_size_bytes",
]
