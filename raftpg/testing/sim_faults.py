"""The simulation's fault doubles: one node's view of the shared DCS that can be cut, slowed or made to
lose answers, and a one-shot failure of a chosen action (raftpg.testing.simulation uses both)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raftpg.dcs.base import DcsError
from raftpg.dcs.kvdcs import KvDcs
from raftpg.ha.actions import Decision


class CuttableDcs:
    """One node's view of the shared DCS. ``cut``: the node lost its quorum, every call raises.

    ``flaky``: the probability that a call is applied but its answer is lost (``DcsError`` with
    ``unknown_outcome``), drawn from ``rng``. ``latency_s``: each way of a call takes this long on the
    shared clock (``take_time``); a call that cannot finish within its ``timeout_s`` raises after it,
    having been applied if the request arrived in time.
    """

    def __init__(self, inner: KvDcs, rng: random.Random, take_time: Callable[[float], None]) -> None:
        self.inner = inner
        self.cut = False
        self.flaky = 0.0
        self.latency_s = 0.0
        self.rng = rng
        self.take_time = take_time

    def watch(self, after_revision: int, timeout_s: float) -> bool:
        return False if self.cut else self.inner.watch(after_revision, timeout_s)

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.cut:
                raise DcsError(f"{name}: no quorum (simulated partition)")
            timeout_s = float(kwargs.get("timeout_s", 5.0))
            self.take_time(min(self.latency_s, timeout_s))
            if self.latency_s > timeout_s:
                raise DcsError(f"{name}: timed out (simulated latency)")
            result = method(*args, **kwargs)
            if 2 * self.latency_s > timeout_s:
                self.take_time(timeout_s - self.latency_s)
                raise DcsError(f"{name}: timed out (simulated latency)", unknown_outcome=True)
            self.take_time(self.latency_s)
            if self.flaky and self.rng.random() < self.flaky:
                raise DcsError(f"{name}: answer lost (simulated)", unknown_outcome=True)
            return result

        return call


@dataclass
class FailOnce:
    """Make a node's executor fail the action at ``index`` of the first decision ``matches`` accepts.

    ``mode='before'``: the action is not carried out (a lost CAS, a timeout before sending).
    ``mode='after'``: it is carried out but reported as failed (an unknown outcome).
    """

    matches: Callable[[Decision], bool]
    index: int
    mode: str = "before"
    armed_at: float | None = None
    fired_at: float | None = None
    decision: Decision | None = None
