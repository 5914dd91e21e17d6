"""The etcd watch thread outlives any one stream's failure, including an answer that says "try the next
host" (raftpg.dcs.http.TryNext: 503 "transport is closing" during an etcd leader change, 401 for an
expired auth token), which once ended the thread for good: seen in a full run against a real etcd."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from raftpg.dcs.etcd_gateway import b64
from raftpg.dcs.etcd_watch import PrefixWatch
from raftpg.dcs.http import TryNext

PREFIX = "/service/c/"


class Lines:
    """A watch response: one message with a change of the leader key, then nothing until closed."""

    def __init__(self, closed: threading.Event, revision: int) -> None:
        self.closed, self.revision = closed, revision

    def iter_lines(self) -> Iterator[str]:
        kv = {"key": b64(PREFIX + "leader"), "value": b64("n2"), "mod_revision": str(self.revision)}
        yield json.dumps({"result": {"header": {"revision": str(self.revision)}, "events": [{"kv": kv}]}})
        self.closed.wait(5)


class FlakyGateway:
    """Fails the first streams with ``failures`` (in order), then streams one change."""

    def __init__(self, failures: list[BaseException]) -> None:
        self.closed = threading.Event()
        self.failures = failures
        self.hosts_tried = 0

    @contextmanager
    def stream(self, path: str, body: dict, *, timeout_s: float) -> Iterator[Lines]:
        if self.failures:
            raise self.failures.pop(0)
        yield Lines(self.closed, revision=7)

    def next_host(self) -> None:
        self.hosts_tried += 1


@pytest.mark.parametrize("failure", [
    TryNext("transport is closing"),
    TryNext("invalid auth token"),
    OSError("a failure nobody foresaw"),
], ids=["503-try-next", "expired-token", "unexpected"])
def test_the_watch_goes_on_after_a_failed_stream(failure: BaseException) -> None:
    gateway = FlakyGateway([failure])
    watch = PrefixWatch(gateway, PREFIX, decides=lambda key: True,  # type: ignore[arg-type]
                        relative=lambda key: key[len(PREFIX):])
    try:
        assert watch.changed_after(0, timeout_s=5.0), "the change after the failed stream was never seen"
        assert gateway.hosts_tried == 1, "the failed stream should move the watch to the next host"
        assert watch.streams_opened == 1
    finally:
        gateway.closed.set()
