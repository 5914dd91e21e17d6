"""The history key's entries after a promotion: pure, so the table test shows what is recorded."""

from __future__ import annotations

from raftpg.model import HistoryEntry

HISTORY_ROWS_MAX = 100


def history_rows(history: tuple[HistoryEntry, ...], timeline: int | None, lsn: int | None, reason: str,
                 now_wall: float, new_leader: str) -> tuple[HistoryEntry, ...]:
    """The stored entries plus one for this promotion (stored as Patroni's rows ``[ended timeline, lsn,
    reason, timestamp, new leader]``). ``timeline`` is the promoted server's *new* timeline, so the entry
    names the one before it (1 when unknown); ``lsn`` is where the new timeline starts (0 when unknown).
    At most ``HISTORY_ROWS_MAX`` entries, the newest kept."""
    entry = HistoryEntry(max(1, (timeline or 2) - 1), lsn or 0, reason, now_wall, new_leader)
    return (*history, entry)[-HISTORY_ROWS_MAX:]
