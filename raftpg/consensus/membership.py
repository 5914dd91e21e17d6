"""Membership changes and leadership transfer: addresses checked, pysyncobj's answers awaited and put
in words. Safety rule 9's part here (no member added to a cluster without a password) is
:func:`raftpg.consensus.settings.check_can_add_member`, called by ``RaftNode.add_member`` first."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from pysyncobj import FAIL_REASON
from pysyncobj.node import TCPNode

from raftpg.consensus.api import KvError, KvRejected, KvTimeout

REFUSALS = {
    FAIL_REASON.NOT_LEADER: "this node is not the Raft leader; ask the leader",
    FAIL_REASON.MISSING_LEADER: "no Raft leader is known",
    FAIL_REASON.REQUEST_DENIED: "denied (another membership change is in progress, the member is "
                                "unknown or already present, or the transfer target is not caught up)",
    FAIL_REASON.LEADER_CHANGED: "the Raft leader changed meanwhile; the outcome is unknown",
}


def validate_addr(addr: str) -> None:
    try:
        TCPNode(addr)
        host, port = addr.rsplit(":", 1)
        if not host or not 0 < int(port) < 65536:
            raise ValueError
    except (ValueError, AttributeError):
        raise KvRejected(f"not a host:port Raft address: {addr!r}") from None


def wait_callback(start: Callable[[Callable[[Any, int], None]], Any], timeout_s: float, what: str) -> None:
    """Call ``start(callback)`` and wait for pysyncobj to call back; a refusal is a KvError in words."""
    done = threading.Event()
    box: dict[str, Any] = {}

    def on_result(result: Any, error: int) -> None:
        box["error"] = error
        done.set()

    start(on_result)
    if not done.wait(timeout_s):
        raise KvTimeout(f"{what}: no answer within {timeout_s:.1f}s")
    if box["error"] != FAIL_REASON.SUCCESS:
        why = REFUSALS.get(box["error"], f"pysyncobj reason {box['error']}")
        raise KvError(f"{what} refused: {why}")
