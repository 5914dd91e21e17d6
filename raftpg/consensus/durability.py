"""Optional power-loss durability for pysyncobj's files (``RaftSettings.fsync``), without forking it.

By default pysyncobj appends to an mmap'd journal and answers at once: an entry is in the page cache
when the node acknowledges it, which survives the death of the process but not of the machine. Term
and vote go to a side file written synchronously but never fsynced, and the snapshot is renamed into
place without fsync.

With ``fsync`` on, every node makes an entry durable before anything can acknowledge it:

- :class:`FlushingJournal` ``msync``\\ s the journal after each append or truncation (and ``fsync``\\ s
  it when the file grew), so a follower's "I have it" and the leader's own copy are on disk before
  the entry can count toward a commit;
- term and vote are ``fsync``\\ ed (file and directory) before pysyncobj sends the vote they record;
- the snapshot file is ``fsync``\\ ed before it replaces the old one (``atomicReplace`` wrapped).

How it gets in: :func:`raftpg.consensus.journal.journal_construction` makes pysyncobj build a
:class:`FlushingJournal` (a :class:`~raftpg.consensus.journal.GuardedJournal`: preallocated, private)
for one construction; :func:`wrap_replace_durably` wraps pysyncobj's snapshot rename once per process.
Only FileJournal's public methods are overridden.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import pysyncobj.serializer as syncobj_serializer

from raftpg.consensus.journal import GuardedJournal, SpaceReport

_wrapping = threading.Lock()
_replace_wrapped = False


def fsync_path(path: str) -> None:
    """fsync a file or a directory by its path (a directory: so that a rename in it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FlushingJournal(GuardedJournal):
    def __init__(self, journal_file: str, space: SpaceReport | None = None) -> None:
        super().__init__(journal_file, space)
        self._size = os.path.getsize(journal_file)
        self._durable()

    def _durable(self) -> None:
        self.flush()  # msync(MS_SYNC) of the mapping: the data pages
        size = os.path.getsize(self._path)
        if size != self._size:  # grown: make the new length durable too
            fsync_path(self._path)
            self._size = size

    def add(self, command: Any, idx: int, term: int) -> None:
        super().add(command, idx, term)
        self._durable()

    def clear(self) -> None:
        super().clear()
        self._durable()

    def deleteEntriesFrom(self, entryFrom: int) -> None:  # noqa: N802, N803 - pysyncobj's names
        super().deleteEntriesFrom(entryFrom)
        self._durable()

    def deleteEntriesTo(self, entryTo: int) -> None:  # noqa: N802, N803
        super().deleteEntriesTo(entryTo)
        self._durable()

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:  # noqa: N802, N803
        super().setCurrentTerm(term, votedForNodeId)  # writes <journal>.meta via a rename
        fsync_path(self._path + ".meta")
        fsync_path(os.path.dirname(os.path.abspath(self._path)))


def _durable(replace: Callable[[str, str], Any]) -> Callable[[str, str], Any]:
    def durable_replace(old: str, new: str) -> Any:
        fsync_path(old)
        result = replace(old, new)
        fsync_path(os.path.dirname(os.path.abspath(new)))
        return result
    return durable_replace


def wrap_replace_durably() -> None:
    """fsync pysyncobj's snapshot before and after its rename, for every SyncObj of the process from
    now on (it only adds fsyncs, so it can stay). Composes with journal.py's chmod wrapper."""
    global _replace_wrapped
    with _wrapping:
        if not _replace_wrapped:
            syncobj_serializer.atomicReplace = _durable(syncobj_serializer.atomicReplace)
            _replace_wrapped = True
