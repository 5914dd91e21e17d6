"""``postmaster.pid``: which postmaster owns a data directory, where it listens, and whether it is ready.

The file's lines (PostgreSQL 10+): pid, data directory, start time, port, first socket directory, first listen
address, shared memory key, status (``starting``, ``stopping``, ``ready``, ``standby``). A file whose pid names no
live postgres process is stale (left by a crash) and means "not running".
"""

from __future__ import annotations

import os
from dataclasses import dataclass

READY_STATUSES = ("ready", "standby")  # "standby": a hot standby accepting read-only connections


@dataclass(frozen=True)
class PostmasterPid:
    pid: int
    port: int | None = None
    socket_dir: str | None = None
    status: str | None = None


def parse_pidfile(text: str) -> PostmasterPid | None:
    lines = [line.strip() for line in text.splitlines()]
    try:
        pid = int(lines[0])
    except (IndexError, ValueError):
        return None
    if pid <= 0:
        return None

    def line(n: int) -> str | None:
        return lines[n] if len(lines) > n and lines[n] else None

    port = line(3)
    return PostmasterPid(
        pid=pid,
        port=int(port) if port and port.isdigit() else None,
        socket_dir=line(4),
        status=line(7),
    )


def read_pidfile(data_dir: str) -> PostmasterPid | None:
    try:
        with open(os.path.join(data_dir, "postmaster.pid"), encoding="utf-8", errors="replace") as f:
            return parse_pidfile(f.read())
    except OSError:
        return None


def postgres_alive(pid: int) -> bool:
    """True if ``pid`` is a live process that looks like a postgres server (guards against pid reuse)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            stat = f.read()
    except OSError:
        return True  # no /proc: trust kill(0)
    comm = stat[stat.find("(") + 1: stat.rfind(")")]
    state = stat[stat.rfind(")") + 2: stat.rfind(")") + 3]
    return state != "Z" and comm in ("postgres", "postmaster")


def live_postmaster(data_dir: str) -> PostmasterPid | None:
    """The pid file's contents if it names a live postgres process, else None."""
    info = read_pidfile(data_dir)
    return info if info is not None and postgres_alive(info.pid) else None
