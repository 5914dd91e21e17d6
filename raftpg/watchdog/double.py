"""A software watchdog double that records every request, for tests on machines without a device.

It can be told to fail arming, to prove that ``required`` mode refuses to promote.
"""

from __future__ import annotations

from raftpg.watchdog.base import WatchdogUnavailable


class RecordingWatchdog:
    def __init__(self, fail_arm: bool = False) -> None:
        self.fail_arm = fail_arm
        self.events: list[tuple[str, float | None]] = []
        self.timeout_s: float | None = None

    def arm(self, timeout_s: float) -> None:
        self.events.append(("arm", timeout_s))
        if self.fail_arm:
            raise WatchdogUnavailable("simulated: device cannot be opened")
        self.timeout_s = timeout_s

    def keepalive(self) -> None:
        self.events.append(("keepalive", None))

    def disarm(self) -> None:
        self.events.append(("disarm", None))
        self.timeout_s = None
