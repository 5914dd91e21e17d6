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

    def keepalive(self) -> None:
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

    def arm(self, timeout_s: float) -> bool:
        try:
            self._device.arm(timeout_s)  # type: ignore[attr-defined]
            self.armed = True
            return True
        except WatchdogUnavailable as exc:
            self.armed = False
            if self._mode == "required":
                log.error("watchdog required but unavailable: %s", exc)
                return False
            log.warning("watchdog unavailable, continuing without it (mode automatic): %s", exc)
            return True

    def keepalive(self) -> None:
        if self.armed:
            try:
                self._device.keepalive()  # type: ignore[attr-defined]
            except WatchdogUnavailable as exc:
                log.error("watchdog keepalive failed: %s", exc)

    def disarm(self) -> None:
        if self.armed:
            try:
                self._device.disarm()  # type: ignore[attr-defined]
            finally:
                self.armed = False
