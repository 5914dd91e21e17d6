"""The process's open-files limit: raised to what the system allows, once, at start.

A node holds a descriptor per Raft peer, per REST client, per PostgreSQL connection and per file; the
common default soft limit of 1024 lets a few hundred idle clients exhaust it (then accept() fails with
EMFILE everywhere). The hard limit is the administrator's; raising the soft limit up to it needs no
privilege. Callers: RaftNode at start, and the REST API's ``serve()``; idempotent.

Descriptors past 1023 cannot be watched with ``select()``: everything in the node's hot paths uses
poll/epoll (pysyncobj's poller is configured to ``poll``, aiohttp uses epoll).
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)


def _nr_open() -> int | None:
    try:
        with open("/proc/sys/fs/nr_open", encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (capped by the kernel's nr_open); return the soft
    limit in force afterwards. Never lowers it; a refusal is logged, not raised."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    nr_open = _nr_open()
    if target == resource.RLIM_INFINITY or (nr_open is not None and target > nr_open):
        target = nr_open if nr_open is not None else soft
    if soft != resource.RLIM_INFINITY and soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
        return soft
    log.info("open-files limit raised from %d to %d", soft, target)
    return target
