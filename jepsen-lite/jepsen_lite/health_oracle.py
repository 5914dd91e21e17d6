"""W6 health oracle, the client side: one thread per data node asks ``GET /primary`` every ~``interval_s``
(as HAProxy's check does) and records a ``health`` op: ``status``, and the ``role`` and ``timeline`` the
body names. ``checkers/health.py`` judges the answers against the acknowledged writes."""

from __future__ import annotations

import random
import threading
from typing import Any

from jepsen_lite.checkers.health import F
from jepsen_lite.history import HistoryWriter
from jepsen_lite.workloads import Client

HEALTH_PROCESS_BASE = 40_000  # apart from the workloads' readers (10_000, the bank's 30_000)


class HealthPoller(Client):
    def __init__(self, process: int, history: HistoryWriter, stop: threading.Event, interval_s: float,
                 rng: random.Random, cluster: Any, node: str) -> None:
        super().__init__(process, history, stop, interval_s, 1.0, rng)
        self.cluster, self.node = cluster, node

    def step(self) -> bool:
        self.history.append(self.process, "invoke", F, None, node=self.node)
        status, body = self.cluster.api(self.node, "GET", "/primary", timeout_s=1.0)
        if status == 0:
            self.history.append(self.process, "fail", F, None, node=self.node, error="no HTTP answer")
            return False
        fields: dict[str, Any] = {"status": status}
        if isinstance(body, dict):
            if isinstance(body.get("role"), str):
                fields["role"] = body["role"]
            if isinstance(body.get("timeline"), int) and not isinstance(body.get("timeline"), bool):
                fields["timeline"] = body["timeline"]
        self.history.append(self.process, "ok", F, None, node=self.node, **fields)
        return True


def pollers(cluster: Any, history: HistoryWriter, seed: int, interval_s: float = 0.1) -> list[HealthPoller]:
    """One poller per data node, each with its own stop event (``Workload.adopt`` runs and stops them)."""
    return [HealthPoller(HEALTH_PROCESS_BASE + i, history, threading.Event(), interval_s,
                         random.Random(f"{seed}-health-{node}"), cluster, node)
            for i, node in enumerate(cluster.data_names)]
