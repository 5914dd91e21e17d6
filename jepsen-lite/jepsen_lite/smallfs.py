"""Size-limited filesystems for the disk-full faults: a ``tmpfs`` with ``size=`` per node for PostgreSQL's
data directory (``pg_wal`` included) and another for the Raft data directory, mounted by the harness
before the node starts and unmounted at cleanup.

tmpfs rather than a loop-mounted ext4: it needs no image file or loop device (the host has eight, shared),
its limit is exact, it has no blocks reserved for root (so ENOSPC proven as root holds for the postgres
user too) and its pages are only used when written. ``fsync`` is a no-op there, which changes nothing for
this harness: its faults kill processes, never the machine, so the page cache always survives.

``fill()`` takes every free byte (``posix_fallocate`` of what ``statvfs`` reports free, then small writes
until ENOSPC); ``release()`` deletes the filler; ``write_fails()`` proves the filesystem is full.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)
FILLER = ".jepsen-lite-filler"
PROBE = ".jepsen-lite-probe"


class SmallFs:
    def __init__(self, path: Path, size_mb: int) -> None:
        self.path = path
        self.size_mb = size_mb
        self.mounted = False

    def mount(self, uid: int | None, gid: int | None) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        options = f"size={self.size_mb}m,mode=0700"
        if uid is not None:
            options += f",uid={uid},gid={gid}"
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "jepsen-lite", str(self.path)], check=True,
                       capture_output=True, text=True, timeout=10)
        self.mounted = True

    def umount(self) -> None:
        if not self.mounted and not os.path.ismount(self.path):
            return
        result = subprocess.run(["umount", str(self.path)], capture_output=True, text=True, timeout=20)
        if result.returncode != 0:  # a process still has a file open: detach now, freed when it exits
            log.warning("umount %s: %s; detaching lazily", self.path, result.stderr.strip())
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, text=True, timeout=20)
        self.mounted = False
        with contextlib.suppress(OSError):
            self.path.rmdir()

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self) -> int:
        """Take every free byte; returns the filler's size."""
        path = self.path / FILLER
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # unbuffered: nothing left to flush
        try:
            free = self.free_bytes()
            if free > (1 << 20):
                with contextlib.suppress(OSError):
                    os.posix_fallocate(fd, os.fstat(fd).st_size, free - (1 << 20))
            chunk = b"\0" * 65536
            while chunk:
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    chunk = chunk[: len(chunk) // 2]
        finally:
            os.close(fd)
        return path.stat().st_size

    def write_fails(self) -> tuple[bool, str]:
        """(True, error) if a 4 KiB write is refused for lack of space."""
        probe = self.path / PROBE
        try:
            with open(probe, "wb") as f:
                f.write(b"x" * 4096)
                f.flush()
                os.fsync(f.fileno())
            return False, "write succeeded"
        except OSError as exc:
            return exc.errno == errno.ENOSPC, f"{errno.errorcode.get(exc.errno or 0, exc.errno)}: {exc.strerror}"
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / FILLER).unlink()
