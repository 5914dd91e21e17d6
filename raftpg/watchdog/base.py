"""Watchdog modes and the null watchdog."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class WatchdogUnavailable(Exception):
    """The device cannot be opened or configured."""


class NullWatchdog:
    """mode: off. Arming always 'succeeds' because nothing is required."""

    armed = False

    def arm(self, timeout_s: float) -> bool:
        return True

    def keepalive(self, timeout_s: float | None = None) -> None:
        pass

    def disarm(self) -> None:
        pass


class ModeWatchdog:
    """Applies the mode to a device: ``required`` refuses to promote when the device fails;
    ``automatic`` uses it when it works and carries on (with a warning) when it does not."""

    def __init__(self, device: object, mode: str) -> None:
        self._device = device
        self._mode = mode
        self.armed = False
        self.timeout_s: float | None = None

    def arm(self, timeout_s: float) -> bool:
        try:
            self._device.arm(timeout_s)  # type: ignore[attr-defined]
            self.armed, self.timeout_s = True, timeout_s
            return True
        except WatchdogUnavailable as exc:
            self.armed = False
            if self._mode == "required":
                log.error("watchdog required but unavailable: %s", exc)
                return False
            log.warning("watchdog unavailable, continuing without it (mode automatic): %s", exc)
            return True

    def keepalive(self, timeout_s: float | None = None) -> None:
        """Restart the countdown; with ``timeout_s`` different from the armed timeout, re-arm with it
        (setting a timeout restarts the countdown too), so the device fires when the caller's lease says."""
        if not self.armed:
            return
        try:
            if timeout_s is not None and timeout_s != self.timeout_s:
                self._device.arm(timeout_s)  # type: ignore[attr-defined]
                self.timeout_s = timeout_s
            else:
                self._device.keepalive()  # type: ignore[attr-defined]
        except WatchdogUnavailable as exc:
            log.error("watchdog keepalive failed: %s", exc)

    def disarm(self) -> None:
        if self.armed:
            try:
                self._device.disarm()  # type: ignore[attr-defined]
            finally:
                self.armed = False
