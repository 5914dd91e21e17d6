"""A full disk under ``raft.data_dir``: detect it, stop taking part in Raft, come back when space returns.

Fail closed, without dying. While the filesystem is full the node

- refuses its own writes and read barriers at once with :class:`~raftpg.consensus.api.DiskFull` (a
  clear error naming ``raft.data_dir``), so the DCS above it is unavailable and the HA loop acts on
  that (a primary demotes itself);
- hands Raft leadership to a caught-up member if it has it, then *isolates* itself: drops every member
  connection and neither accepts, dials nor sends (transport.py). To the others it is a partitioned
  node, which Raft handles; and since it hears no one it never starts an election, so it never needs
  to write a term it could not store. Its journal keeps room for what may still arrive meanwhile
  (journal.py preallocates), and an append that finds no room is refused before anything is written;
- keeps answering: status, local reads and the control API work.

"Full" is either free space under ``disk_free_min_bytes`` (checked once a second with ``statvfs``,
counting what this user may use; the node then hands leadership over first) or an ENOSPC/EDQUOT
reported by the journal in the middle of pysyncobj's work (the node is cut off at once, see
:meth:`DiskSpace.report_full`). "Back" is at least twice ``disk_free_min_bytes`` free, the journal able
to reserve its room again, and pysyncobj no longer acting as a leader (a leader that could not store a
newer term steps down by itself once cut off, after ``leader_fallback_s``); then the node reconnects
and catches up from the leader like any follower that was cut off.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from raftpg.consensus.journal import SpaceReport

log = logging.getLogger(__name__)

CHECK_EVERY_S = 1.0


class DiskSpace(SpaceReport):
    """Tick thread only, except :attr:`full`, which any thread may read (one attribute, replaced whole)."""

    def __init__(self, data_dir: str, free_bytes_min: int, on_failure: Callable[[str], None],
                 statvfs: Callable[[str], os.statvfs_result] = os.statvfs) -> None:
        self.data_dir = data_dir
        self._on_failure = on_failure
        self.free_bytes_min = free_bytes_min
        self.free_bytes_resume = 2 * free_bytes_min
        self._statvfs = statvfs
        self.full: str | None = None  # the error writes get while the disk is full
        self._next_check_at = 0.0
        self._statvfs_failed = False

    def report_full(self, what: str, exc: OSError) -> None:
        """From the journal, in the middle of pysyncobj's work: a write just failed with ENOSPC/EDQUOT.

        pysyncobj may now hold state it could not store (a term it did not persist: it can even believe
        it still leads in a term another node won), so the node is cut off *now*, synchronously, before
        pysyncobj sends or receives another message; there is no leadership transfer from here."""
        if self.full is None:
            self._declare(f"{what}: {exc.strerror or exc}")
        self._on_failure(self.full or "")

    def _declare(self, reason: str) -> None:
        self.full = (f"raft.data_dir {self.data_dir}: the filesystem is full ({reason}); this node "
                     "refuses writes and takes no part in Raft until space is freed")
        log.error("raft: %s", self.full)

    def free_bytes(self) -> int | None:
        try:
            st = self._statvfs(self.data_dir)
        except OSError as exc:
            if not self._statvfs_failed:
                log.warning("raft: cannot check the free space of raft.data_dir %s: %s", self.data_dir, exc)
                self._statvfs_failed = True
            return None
        self._statvfs_failed = False
        return st.f_bavail * st.f_frsize

    def poll(self, now: float, can_rejoin: Callable[[], bool]) -> str | None:
        """Call every tick, between pysyncobj's steps. Returns ``"full"`` when free space fell under the
        minimum (the node hands leadership over, then cuts itself off), ``"back"`` when it may rejoin
        (``can_rejoin``: the journal could reserve its room and pysyncobj no longer acts as a leader),
        otherwise None."""
        if now < self._next_check_at:
            return None
        self._next_check_at = now + CHECK_EVERY_S
        free = self.free_bytes()
        if self.full is None:
            if free is None or free >= self.free_bytes_min:
                return None
            self._declare(f"{free} bytes free, under the {self.free_bytes_min} it needs")
            return "full"
        if free is None or free < self.free_bytes_resume or not can_rejoin():
            return None
        self.full = None
        log.warning("raft: raft.data_dir %s has room again (%d bytes free): rejoining the cluster",
                    self.data_dir, free)
        return "back"
