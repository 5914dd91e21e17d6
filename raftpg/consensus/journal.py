"""pysyncobj's file journal, kept private to its owner and safe on a full disk.

pysyncobj appends log entries to an mmap of ``<stem>.journal`` and grows the file with ``ftruncate``,
which leaves the new part *sparse*: the filesystem allocates its blocks only when a page is first
written through the mapping. On a full filesystem that page fault cannot be served and the kernel
sends SIGBUS: the Raft node dies mid-append. :class:`GuardedJournal` removes that failure mode:

- **Preallocation.** Before an append, the blocks the file may grow into are reserved with
  ``fallocate(FALLOC_FL_KEEP_SIZE)``: pysyncobj grows the file to at most ``max(2 * size, size +
  record)``, so the reservation covers that plus ``RESERVE_AHEAD_BYTES``. Growing into reserved blocks
  needs no allocation, so a write through the mapping cannot fault. If the reservation fails with
  ENOSPC the append raises :class:`JournalFull` *before* anything is written, and pysyncobj abandons
  the message or command that wanted it: a follower does not acknowledge what it could not store, a
  leader does not answer the command. Raft's safety only needs that nothing unstored is acknowledged.
- **Term and vote.** pysyncobj persists them before sending the vote they record; if that write fails
  the exception stops the vote from being sent, which is what Raft requires. The once-a-second commit
  index write is advisory (pysyncobj rewrites it), so its failure is reported and swallowed.
- **Reporting.** Every ENOSPC/EDQUOT goes to the :class:`~raftpg.consensus.diskspace.DiskSpace` of the
  node, which refuses writes and isolates the node until the space is back (diskspace.py).
- **Modes.** The journal and its ``.meta`` side file are chmod 0600 (pysyncobj creates them with the
  process umask; the data directory is 0700 anyway, see datadir.py).

A filesystem that cannot preallocate (EOPNOTSUPP) falls back to the free-space watermark of
diskspace.py alone, with one warning. Copy-on-write filesystems (btrfs, ZFS) may need new blocks even
to overwrite reserved ones; there too only the watermark protects.

:func:`journal_construction` makes pysyncobj build this journal (or a subclass, such as the fsyncing
one of durability.py) for one ``SyncObj`` construction, by swapping its ``createJournal`` factory
under a lock; only FileJournal's public methods are overridden.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pysyncobj.serializer as syncobj_serializer
import pysyncobj.syncobj as syncobj_module
from pysyncobj.journal import FileJournal, Journal

log = logging.getLogger(__name__)

RESERVE_AHEAD_BYTES = 4 * 1024 * 1024
_RECORD_OVERHEAD_BYTES = 4 + 16 + 4 + 64  # length, index and term, length again; slack for str commands
_FALLOC_FL_KEEP_SIZE = 1
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_UNSUPPORTED = {errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
FILE_MODE = 0o600

_libc = ctypes.CDLL(None, use_errno=True)
_fallocate = getattr(_libc, "fallocate", None)
if _fallocate is not None:
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    _fallocate.restype = ctypes.c_int


class JournalFull(OSError):
    """The journal could not reserve room for an append; nothing was written."""


class SpaceReport:
    """Where the journal reports a full disk. DiskSpace (diskspace.py) implements it."""

    def report_full(self, what: str, exc: OSError) -> None:  # pragma: no cover - interface
        pass


def reserve(fd: int, length: int) -> None:
    """Allocate the blocks of ``[0, length)`` of ``fd`` without changing its size. Raises OSError."""
    if _fallocate is None:
        raise OSError(errno.ENOSYS, "fallocate is not available")
    if _fallocate(fd, _FALLOC_FL_KEEP_SIZE, 0, length) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def make_private(path: str) -> None:
    """chmod ``path`` 0600 if it is looser (pysyncobj creates files with the process umask)."""
    try:
        if os.stat(path).st_mode & 0o777 != FILE_MODE:
            os.chmod(path, FILE_MODE)
    except FileNotFoundError:
        pass


class GuardedJournal(FileJournal):
    def __init__(self, journal_file: str, space: SpaceReport | None = None) -> None:
        self._path = journal_file
        self._space = space or SpaceReport()
        self._reserved_bytes = 0
        self._can_reserve = True
        self._rewriting = False
        super().__init__(journal_file)
        make_private(journal_file)
        make_private(journal_file + ".meta")
        self._fd = os.open(journal_file, os.O_RDWR | os.O_CLOEXEC)
        try:
            self.ensure_room(0)
        except JournalFull:
            pass  # reported: the node starts isolated and retries when space returns

    # -- space
    def ensure_room(self, record_bytes: int) -> None:
        """Reserve the blocks the next append may grow the file into, or raise :class:`JournalFull`."""
        if not self._can_reserve:
            return
        size = os.fstat(self._fd).st_size
        need = max(2 * size, size + record_bytes + _RECORD_OVERHEAD_BYTES)
        if need <= self._reserved_bytes:
            return
        try:
            try:
                reserve(self._fd, need + RESERVE_AHEAD_BYTES)
                self._reserved_bytes = need + RESERVE_AHEAD_BYTES
            except OSError as exc:
                if exc.errno not in _NO_SPACE:
                    raise
                reserve(self._fd, need)  # the bare minimum for this append
                self._reserved_bytes = need
        except OSError as exc:
            if exc.errno in _UNSUPPORTED:
                self._can_reserve = False
                log.warning("raft: the filesystem of %s cannot preallocate (%s); only the free-space check "
                            "protects the journal from a full disk", self._path, exc.strerror or exc)
                return
            self._space.report_full(f"reserving {need} bytes for {self._path}", exc)
            raise JournalFull(exc.errno, f"no room to append to the Raft journal {self._path}: "
                                         f"{exc.strerror or exc}") from None

    def add(self, command: Any, idx: int, term: int) -> None:
        if not self._rewriting:
            self.ensure_room(len(command))
        super().add(command, idx, term)

    def deleteEntriesTo(self, entryTo: int) -> None:  # noqa: N802, N803 - pysyncobj's names
        """Log compaction: pysyncobj clears the file and appends the kept suffix again. Check the room
        once, before clearing; the suffix is shorter than what the file held, so it never grows it."""
        self.ensure_room(0)
        self._rewriting = True
        try:
            super().deleteEntriesTo(entryTo)
        finally:
            self._rewriting = False

    # -- term, vote and commit index (the .meta side file)
    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:  # noqa: N802, N803 - pysyncobj's names
        try:
            super().setCurrentTerm(term, votedForNodeId)
        except OSError as exc:
            if exc.errno in _NO_SPACE:
                self._space.report_full(f"writing the term to {self._path}.meta", exc)
            raise  # pysyncobj must not send a vote it could not store
        make_private(self._path + ".meta")

    def onOneSecondTimer(self) -> None:  # noqa: N802
        try:
            super().onOneSecondTimer()
        except OSError as exc:  # the commit index is advisory: pysyncobj writes it again next second
            if exc.errno in _NO_SPACE:
                self._space.report_full(f"writing the commit index to {self._path}.meta", exc)
            else:
                log.warning("raft: cannot write %s.meta: %s", self._path, exc)
            return
        make_private(self._path + ".meta")

    def _destroy(self) -> None:
        super()._destroy()
        with contextlib.suppress(OSError):
            os.close(self._fd)


_construction = threading.Lock()
_replace_wrapped = False


def _private_replace(replace: Callable[[str, str], Any]) -> Callable[[str, str], Any]:
    """Wrap pysyncobj's snapshot rename so the new snapshot file is 0600 before it takes the name."""
    def private_replace(old: str, new: str) -> Any:
        make_private(old)
        return replace(old, new)
    private_replace.raftpg_private = True  # type: ignore[attr-defined]
    return private_replace


@contextlib.contextmanager
def journal_construction(factory: Callable[[str], FileJournal]) -> Iterator[None]:
    """While active, a SyncObj built in this process gets ``factory(path)`` as its file journal."""
    global _replace_wrapped
    with _construction:
        if not _replace_wrapped:
            # Only adds a chmod before the rename, so it can stay for every SyncObj of the process.
            syncobj_serializer.atomicReplace = _private_replace(syncobj_serializer.atomicReplace)
            _replace_wrapped = True
        original = syncobj_module.createJournal

        def create(journalFile: str | None = None) -> Journal:  # noqa: N803 - pysyncobj's name
            return factory(journalFile) if journalFile else original(journalFile)

        syncobj_module.createJournal = create
        try:
            yield
        finally:
            syncobj_module.createJournal = original
