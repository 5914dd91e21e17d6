"""/dev/watchdog through the Linux watchdog API (linux/watchdog.h).

Not exercised on CI: these machines have no watchdog device. The ioctl numbers are computed from the
kernel's _IOR/_IOWR encoding rather than copied as constants, so a reader can check them.
"""

from __future__ import annotations

import fcntl
import os
import struct

from raftpg.watchdog.base import WatchdogUnavailable

_IOC_WRITE, _IOC_READ = 1, 2
_WATCHDOG_IOCTL_BASE = ord("W")


def _ioc(direction: int, number: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (_WATCHDOG_IOCTL_BASE << 8) | number


WDIOC_KEEPALIVE = _ioc(_IOC_READ, 5, 4)
WDIOC_SETTIMEOUT = _ioc(_IOC_READ | _IOC_WRITE, 6, 4)
WDIOC_GETTIMEOUT = _ioc(_IOC_READ, 7, 4)


class LinuxWatchdog:
    def __init__(self, device: str = "/dev/watchdog") -> None:
        self.device = device
        self._fd: int | None = None

    def arm(self, timeout_s: float) -> None:
        try:
            if self._fd is None:
                self._fd = os.open(self.device, os.O_WRONLY)
            wanted = max(1, int(timeout_s))
            fcntl.ioctl(self._fd, WDIOC_SETTIMEOUT, struct.pack("I", wanted))
            actual = struct.unpack("I", fcntl.ioctl(self._fd, WDIOC_GETTIMEOUT, struct.pack("I", 0)))[0]
            if actual > wanted:
                self.disarm()
                raise WatchdogUnavailable(f"{self.device} accepted timeout {actual}s > requested {wanted}s")
        except OSError as exc:
            # Opening the device started its countdown: magic-close it, or a caller carrying on without
            # it (mode automatic) would have the machine reset at the driver's default timeout.
            try:
                self.disarm()
            except OSError:
                pass
            raise WatchdogUnavailable(f"{self.device}: {exc.strerror or exc}") from exc

    def keepalive(self) -> None:
        if self._fd is None:
            raise WatchdogUnavailable("not armed")
        try:
            fcntl.ioctl(self._fd, WDIOC_KEEPALIVE, struct.pack("I", 0))
        except OSError as exc:
            raise WatchdogUnavailable(f"{self.device}: {exc.strerror or exc}") from exc

    def disarm(self) -> None:
        """Magic close: write 'V' then close, so the driver stops the countdown."""
        if self._fd is None:
            return
        try:
            os.write(self._fd, b"V")
        finally:
            os.close(self._fd)
            self._fd = None
