"""Time, as a parameter. The only module of raftpg that reads the system clock.

Two clocks that may disagree: ``monotonic()`` for every deadline and lease (never goes back, means nothing
across machines) and ``wall()`` for humans (logs, history, scheduled switchovers). No decision compares
the wall clocks of two nodes (DESIGN.md safety rule 3).
"""

from __future__ import annotations

import logging
import select
import threading
import time
from typing import Protocol, SupportsIndex


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards; only differences are meaningful."""

    def wall(self) -> float:
        """Seconds since the epoch (may jump: NTP steps, faketime)."""

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds``."""


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


class FakeClock:
    """A clock moved by the test. Wall time may be skewed apart from monotonic time."""

    def __init__(self, monotonic: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self._lock = threading.Lock()
        self._monotonic = monotonic
        self._wall = wall

    def monotonic(self) -> float:
        with self._lock:
            return self._monotonic

    def wall(self) -> float:
        with self._lock:
            return self._wall

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("monotonic time never goes backwards")
        with self._lock:
            self._monotonic += seconds
            self._wall += seconds

    def skew_wall(self, seconds: float) -> None:
        """Step only the wall clock (an NTP step or a faketime offset)."""
        with self._lock:
            self._wall += seconds


def repair_sleep() -> None:
    """Replace a broken ``time.sleep`` in this process (call once at program start).

    Under libfaketime 0.9.10 with ``FAKETIME_DONT_FAKE_MONOTONIC=1`` (only the wall clock moved, as an
    NTP step does; jepsen-lite's clock nemesis) Python 3.11's ``time.sleep`` fails with EINVAL
    (libfaketime issue #426), which would kill pysyncobj's thread. A ``select()`` timeout still works.
    """
    try:
        time.sleep(0.001)
        return
    except OSError as exc:
        problem = exc

    def sleep(seconds: float | SupportsIndex) -> None:  # time.sleep's signature
        select.select([], [], [], max(0.0, float(seconds)))

    time.sleep = sleep
    logging.getLogger(__name__).warning(
        "time.sleep fails in this process (%s; libfaketime?): using a select()-based sleep", problem)
