"""The one pysyncobj consumer of a RaftNode: the KV's commands as its single replicated method."""

from __future__ import annotations

from typing import Any

from pysyncobj import SyncObjConsumer, replicated

from raftpg.consensus.state import GuardedState
from raftpg.kv import Rejected, decode


class KvConsumer(SyncObjConsumer):
    """Runs on pysyncobj's tick thread on every replica; snapshots are the KV's own."""

    def __init__(self, state: GuardedState) -> None:
        super().__init__()
        self._kv = state

    @replicated
    def command(self, payload: bytes) -> Any:
        return self._kv.apply(decode(payload) if isinstance(payload, bytes) else Rejected("bad payload"))

    def _serialize(self) -> dict[str, Any]:
        return self._kv.snapshot()

    def _deserialize(self, data: object) -> None:
        self._kv.restore(data)
