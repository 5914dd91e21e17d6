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

How it gets in: pysyncobj builds its journal with ``pysyncobj.syncobj.createJournal`` inside
``SyncObj.__init__``. :func:`durable_construction` swaps that factory for the duration of one
construction (under a lock, so other SyncObjs built concurrently in the process are not affected).
Only FileJournal's public methods are overridden.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import pysyncobj.serializer as syncobj_serializer
import pysyncobj.syncobj as syncobj_module
from pysyncobj.journal import FileJournal

_construction = threading.Lock()
_replace_wrapped = False


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FlushingJournal(FileJournal):
    def __init__(self, journal_file: str) -> None:
        self._path = journal_file
        super().__init__(journal_file)
        self._size = os.path.getsize(journal_file)
        self._durable()

    def _durable(self) -> None:
        self.flush()  # msync(MS_SYNC) of the mapping: the data pages
        size = os.path.getsize(self._path)
        if size != self._size:  # grown: make the new length durable too
            _fsync_path(self._path)
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
        _fsync_path(self._path + ".meta")
        _fsync_path(os.path.dirname(os.path.abspath(self._path)))


def _durable_replace(old: str, new: str) -> None:
    _fsync_path(old)
    os.rename(old, new)
    _fsync_path(os.path.dirname(os.path.abspath(new)))


@contextlib.contextmanager
def durable_construction() -> Iterator[None]:
    """While active, SyncObjs built in this process get a FlushingJournal and fsynced snapshots."""
    global _replace_wrapped
    with _construction:
        if not _replace_wrapped:
            # Only ever adds fsyncs, so it can stay for every SyncObj of the process.
            syncobj_serializer.atomicReplace = _durable_replace
            _replace_wrapped = True
        original = syncobj_module.createJournal
        syncobj_module.createJournal = lambda path=None: FlushingJournal(path) if path else original(path)
        try:
            yield
        finally:
            syncobj_module.createJournal = original
