"""The history key's rows after a promotion: pure, so the table test shows what is recorded."""

from __future__ import annotations

from typing import Any

from raftpg.model import HistoryEntry

HISTORY_ROWS_MAX = 100


def history_rows(history: tuple[HistoryEntry, ...], timeline: int | None, lsn: int | None, reason: str,
                 now_wall: float, new_leader: str) -> list[list[Any]]:
    """The stored rows plus one for this promotion: ``[ended timeline, lsn, reason, timestamp, new leader]``
    (Patroni's shape). ``timeline`` is the promoted server's *new* timeline, so the row names the one
    before it (1 when unknown); ``lsn`` is where the new timeline starts (0 when unknown). At most
    ``HISTORY_ROWS_MAX`` rows, the newest kept."""
    rows = [[e.timeline, e.lsn, e.reason, e.timestamp, e.new_leader] for e in history]
    rows.append([max(1, (timeline or 2) - 1), lsn or 0, reason, now_wall, new_leader])
    return rows[-HISTORY_ROWS_MAX:]
