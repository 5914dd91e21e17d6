"""What pysyncobj logs, made to match what raftpg knows. Installed once per process by RaftNode."""

from __future__ import annotations

import errno
import logging

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_installed = False


class _BenignTruncation(logging.Filter):
    """Demote pysyncobj's "truncating already-applied log entries" to DEBUG.

    With unbatched appends the leader optimistically advances a follower's next index and rewinds it
    when an older acknowledgement arrives, so the follower receives entries it already has and
    truncates them before re-adding the identical entries. Applied entries are committed, and committed
    entries never conflict in Raft, so this is a resend, not divergence. Replica agreement is checked
    by the tests (every replica's KV fingerprint is equal), not by this message.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL and "truncating already-applied" in str(record.msg):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger("pysyncobj").isEnabledFor(logging.DEBUG)
        return True


class _QuietFullDisk(logging.Filter):
    """pysyncobj logs every exception out of its tick with a traceback; a full disk is reported once,
    clearly, by diskspace.py, so the tracebacks of JournalFull (and of a failed term write) go to DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger("pysyncobj").isEnabledFor(logging.DEBUG)
        return True


def quiet_pysyncobj_logs() -> None:
    global _installed
    if not _installed:
        logger = logging.getLogger("pysyncobj.syncobj")
        logger.addFilter(_BenignTruncation())
        logger.addFilter(_QuietFullDisk())
        _installed = True
