"""One long-lived etcd watch stream per client, on a thread of its own, and what it has seen.

The HA loop waits for changes in slices of at most half a second (``Dcs.watch``); opening a watch per slice
cost etcd a new stream about twice a second per agent. :class:`PrefixWatch` opens one stream on the scope's
prefix when first asked and keeps it (re-opened after an error from the first revision it has not seen, on
the next host), and answers ``changed_after`` from memory:

- ``decisive_revision``: the newest revision at which a key that drives decisions changed (every key but
  ``members/`` and ``status``, ``decides(relative_key)``). ``changed_after(r)`` is True once it exceeds
  ``r``; also when the stream began after ``r + 1`` (a compaction took the history, or the caller asks about
  a revision older than the stream): the store cannot tell, so the loop re-reads.
- :class:`KeyState` of the keys the adapter asks about (the leader key, its own member keys): the newest
  observation of each, by revision, from the stream's events and from what the adapter read or wrote
  itself (``observe``). ``state(key)`` returns it with the monotonic time it was last confirmed.

While the stream is down (etcd unreachable), ``changed_after`` waits out its timeout and says False, as the
port asks; the loop still cycles every loop_wait. The stream has a read timeout of ``IDLE_READ_S``: an idle
one is re-opened that often, which also bounds how long a silently dead connection goes unnoticed. No
failure ends the thread while the client is open: an answer that says "try the next host" (503 "transport
is closing" during an etcd leader change, 401 for an expired auth token) once killed it for good, leaving
the loop to notice every change only at its next cycle.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from raftpg.clock import Clock, SystemClock
from raftpg.dcs.base import DcsError
from raftpg.dcs.etcd_gateway import EtcdGateway, b64, prefix_end, text
from raftpg.dcs.http import TryNext

log = logging.getLogger(__name__)

IDLE_READ_S = 30.0
_EXPECTED = (DcsError, TryNext, httpx.HTTPError, RuntimeError, ValueError, KeyError, TypeError)
RETRY_S = (0.1, 0.5, 1.0)  # pauses before re-opening after consecutive failures (then the last one)


@dataclass(frozen=True)
class KeyState:
    """A key as of ``revision``: its value (None: absent), lease ("0": none) and mod_revision."""

    value: str | None
    lease: str
    mod_revision: int
    revision: int


class PrefixWatch:
    def __init__(self, gateway: EtcdGateway, prefix: str, decides: Callable[[str], bool],
                 relative: Callable[[str], str], clock: Clock | None = None) -> None:
        self._gateway, self._prefix = gateway, prefix
        self._decides, self._relative = decides, relative
        self._clock = clock or SystemClock()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._next_start = 0          # the first revision the stream has not delivered yet
        self._covers_from: int | None = None  # every change from this revision on is known (None: no stream yet)
        self.decisive_revision = 0
        self._read_revision = 0       # the newest revision a linearizable read of the adapter returned
        self._states: dict[str, tuple[KeyState, float]] = {}
        self.streams_opened = 0
        self.live = False             # a stream is open and etcd has answered on it

    # ------------------------------------------------------------------ answers
    def changed_after(self, after_revision: int, timeout_s: float) -> bool:
        """True once a decisive key changed after ``after_revision`` (or that cannot be told); False when
        ``timeout_s`` passes first. Never raises."""
        end = self._clock.monotonic() + max(0.0, timeout_s)
        with self._cond:
            self._start(after_revision + 1)
            while True:
                if self.decisive_revision > after_revision:
                    return True
                if self._covers_from is not None and self._covers_from > after_revision + 1:
                    return True
                remaining = end - self._clock.monotonic()
                if remaining <= 0 or self._gateway.closed.is_set():
                    return False
                self._cond.wait(remaining)

    def read_at(self, revision: int) -> None:
        """The adapter read the whole prefix at ``revision`` (linearizably): whatever changed up to it, the
        reader knows. Starts the stream after it if none runs yet; a stream re-opened later starts after it
        too, so an idle stream is never re-opened from an old revision (which would make etcd replay its
        history, or fail on a compacted one)."""
        with self._cond:
            self._read_revision = max(self._read_revision, revision)
            self._start(revision + 1)

    def observe(self, key: str, state: KeyState) -> None:
        """What the adapter read (a linearizable range) or wrote itself, as of ``state.revision``. Kept
        unless something newer is known; an equally recent observation re-confirms it."""
        with self._cond:
            known = self._states.get(key)
            if known is None or state.revision >= known[0].revision:
                self._states[key] = (state, self._clock.monotonic())

    def state(self, key: str) -> tuple[KeyState, float] | None:
        """The newest observation of ``key`` and the monotonic time it was made, if any."""
        with self._cond:
            return self._states.get(key)

    def forget(self, key: str) -> None:
        with self._cond:
            self._states.pop(key, None)

    # ------------------------------------------------------------------ the stream
    def _start(self, revision: int) -> None:
        if self._thread is None and not self._gateway.closed.is_set():
            self._next_start = revision
            self._thread = threading.Thread(target=self._run, name="etcd-watch", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        failures = 0
        while not self._gateway.closed.is_set():
            try:
                self._stream()
                failures = 0
            except httpx.ReadTimeout:
                failures = 0  # idle for IDLE_READ_S: re-open
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any one stream's failure
                if self._gateway.closed.is_set():
                    break
                if isinstance(exc, _EXPECTED):
                    log.debug("etcd watch stream failed: %s", exc)
                else:
                    log.warning("etcd watch stream failed unexpectedly: %r", exc, exc_info=True)
                self._gateway.next_host()
                self._gateway.closed.wait(RETRY_S[min(failures, len(RETRY_S) - 1)])
                failures += 1

    def _stream(self) -> None:
        with self._cond:
            if self._read_revision + 1 > self._next_start:
                # Changes between the last revision this stream delivered and the last full read are known
                # to the reader, not to this watch: from here on it answers only about later revisions.
                self._next_start = self._read_revision + 1
                if self._covers_from is not None:
                    self._covers_from = self._next_start
        body = {"create_request": {"key": b64(self._prefix), "range_end": b64(prefix_end(self._prefix)),
                                   "start_revision": str(self._next_start)}}
        with self._gateway.stream("/watch", body, timeout_s=IDLE_READ_S) as response:
            self.streams_opened += 1
            try:
                self._read(response)
            finally:
                self.live = False
        raise DcsError("etcd closed the watch stream")

    def _read(self, response: httpx.Response) -> None:
        for line in response.iter_lines():
            if self._gateway.closed.is_set():
                return
            if line.strip():
                self._message(json.loads(line))

    def _message(self, message: dict[str, Any]) -> None:
        if "error" in message:
            raise DcsError(f"etcd watch: {message['error']}")
        result = message.get("result") or {}
        with self._cond:
            compacted = int(result.get("compact_revision", 0))
            if compacted:
                # history before ``compacted`` is gone: changes since the last revision seen are unknown
                self._next_start = max(self._next_start, compacted)
                self._covers_from = self._next_start
                self._cond.notify_all()
                raise DcsError(f"etcd watch: compacted at {compacted}; re-opening from there")
            if result.get("canceled"):
                raise DcsError(f"etcd watch canceled: {result.get('cancel_reason', 'no reason given')}")
            if self._covers_from is None:
                self._covers_from = self._next_start
            self.live = True
            for event in result.get("events") or []:
                self._event(event)
            self._cond.notify_all()

    def _event(self, event: dict[str, Any]) -> None:
        kv = event.get("kv") or {}
        key, revision = text(kv.get("key")), int(kv.get("mod_revision", 0))
        deleted = event.get("type") == "DELETE"
        self._next_start = max(self._next_start, revision + 1)
        if self._decides(self._relative(key)):
            self.decisive_revision = max(self.decisive_revision, revision)
        if key in self._states:
            state = KeyState(None, "0", revision, revision) if deleted else \
                KeyState(text(kv.get("value")), str(kv.get("lease", "0")), revision, revision)
            if state.revision >= self._states[key][0].revision:
                self._states[key] = (state, self._clock.monotonic())
