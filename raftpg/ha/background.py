"""A clone (pg_basebackup, or the user's replica methods) on a thread of its own, so that the HA loop keeps
cycling while a large replica is copied: the member key stays fresh, ``/liveness`` stays 200 and the
progress shows in ``/patroni``, ``raftpgctl list`` and the log. Only the executor starts one (for
``CloneFrom``); while it runs the loop neither observes the half-copied data directory nor decides.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class CloneJob:
    def __init__(self, source: str, conn_url: str, work: Callable[[Callable[[int], None]], object],
                 on_change: Callable[[], None] | None = None) -> None:
        """Run ``work(report_progress)`` now, on a daemon thread. ``on_change`` (waking the loop) is called
        when the job finishes."""
        self.source, self.conn_url = source, conn_url
        self.percent: int | None = None
        self.error: str | None = None
        self._done = threading.Event()
        self._work, self._on_change = work, on_change or (lambda: None)
        self._thread = threading.Thread(target=self._run, name="clone", daemon=True)
        self._thread.start()

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout_s: float) -> bool:
        return self._done.wait(timeout_s)

    def describe(self) -> str:
        progress = "" if self.percent is None else f" {self.percent} %"
        origin = f"from {self.source}" if self.source else "with a no_leader replica method"
        return f"creating a replica {origin}{progress}"

    def _progress(self, percent: int) -> None:
        if percent != self.percent:
            self.percent = percent
            if percent % 10 == 0:
                log.info("%s", self.describe())

    def _run(self) -> None:
        try:
            self._work(self._progress)
        except Exception as exc:  # noqa: BLE001 - reported to the loop, which decides afresh
            self.error = str(exc) or type(exc).__name__
            log.warning("creating a replica from %s failed: %s", self.source, self.error)
        finally:
            self._done.set()
            self._on_change()
