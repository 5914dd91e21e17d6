"""Full disks: PostgreSQL's data directory (``pg_wal`` inside it) or the Raft data directory of one node,
each on its own size-limited filesystem (``smallfs``), filled to ENOSPC and released at the end.

Verified with a failed write on that filesystem. The nodes must have been started with ``smallfs=True``
(the runner does it when one of these faults is selected).
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

from jepsen_lite.nemesis_base import Fault, FaultError, draw_role


class DiskFull(Fault):
    what: ClassVar[str] = "pg"
    kinds = frozenset({"raftpg"})
    needs = frozenset({"smallfs"})

    @classmethod
    def plan(cls, rng: random.Random, ttl_s: float) -> tuple[float, dict[str, Any]]:
        return rng.uniform(1.5 * ttl_s, 4 * ttl_s), {"target": draw_role(rng)}

    def start(self) -> dict[str, Any]:
        cluster = self.pg_cluster
        self.pick_victim()
        fs = cluster.small_fs(self.victim, self.what)
        if fs is None:
            raise FaultError(f"{self.victim} has no size-limited {self.what} filesystem (smallfs not enabled)")
        self.fs = fs
        free_before = fs.free_bytes()
        filled = fs.fill()
        return {"victim": self.victim, "filesystem": str(fs.path), "free_before": free_before, "filler": filled}

    def verify(self) -> tuple[bool, dict[str, Any]]:
        failed, error = self.fs.write_fails()
        return failed, {"write_error": error, "free_bytes": self.fs.free_bytes()}

    def stop(self) -> dict[str, Any]:
        self.fs.release()
        return {"victim": self.victim, "free_after": self.fs.free_bytes()}


class DiskFullPg(DiskFull):
    name, what = "disk-full-pg", "pg"
    data_only = True


class DiskFullRaft(DiskFull):
    name, what = "disk-full-raft", "raft"

    @classmethod
    def plan(cls, rng: random.Random, ttl_s: float) -> tuple[float, dict[str, Any]]:
        return rng.uniform(1.5 * ttl_s, 4 * ttl_s), {"target": rng.choice(["leader", "primary", "random"])}
