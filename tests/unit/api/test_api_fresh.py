"""FreshPostgres: health checks see PostgreSQL as it is now, at most max_age_s old, one probe at a time."""

from __future__ import annotations

import asyncio
import threading

from raftpg.api.fresh import NOT_ANSWERING, FreshPostgres
from raftpg.clock import FakeClock
from raftpg.model import DataDir, LocalState

UP = LocalState(data_dir=DataDir.INITIALIZED, running=True, in_recovery=False, postmaster_pid=7)


class CountingProbe:
    def __init__(self, value: LocalState = UP) -> None:
        self.value, self.calls = value, 0
        self.release = threading.Event()
        self.release.set()

    def __call__(self) -> LocalState:
        self.calls += 1
        assert self.release.wait(5)
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


def test_a_result_younger_than_max_age_answers_without_a_probe():
    clock, probe = FakeClock(), CountingProbe()
    fresh = FreshPostgres(probe, clock, max_age_s=0.5)

    async def body():
        first = await fresh.get()
        clock.advance(0.4)
        second = await fresh.get()
        clock.advance(0.2)  # 0.6 s after the first probe started: too old
        third = await fresh.get()
        return first, second, third

    assert asyncio.run(body()) == (UP, UP, UP)
    assert probe.calls == 2


def test_concurrent_requests_share_one_probe():
    clock, probe = FakeClock(), CountingProbe()
    probe.release.clear()
    fresh = FreshPostgres(probe, clock)

    async def body():
        tasks = [asyncio.ensure_future(fresh.get()) for _ in range(20)]
        await asyncio.sleep(0)
        probe.release.set()
        return await asyncio.gather(*tasks)

    assert asyncio.run(body()) == [UP] * 20
    assert probe.calls == 1


def test_a_failing_or_hanging_probe_reads_as_not_answering():
    clock = FakeClock()
    failing = FreshPostgres(CountingProbe(RuntimeError("boom")), clock)  # type: ignore[arg-type]
    assert asyncio.run(failing.get()) == NOT_ANSWERING and not NOT_ANSWERING.running
    hanging = CountingProbe()
    hanging.release.clear()
    stalled = FreshPostgres(hanging, clock, timeout_s=0.05)

    async def body():
        try:
            return await stalled.get()
        finally:
            hanging.release.set()  # let the worker thread end so the event loop can close

    assert asyncio.run(body()) == NOT_ANSWERING


def test_a_result_older_than_the_loops_last_look_is_probed_again():
    """After the loop has acted (a promotion), a probe taken before its look is stale however young: the
    first health check after a switchover answers from a new probe (before: up to 0.5 s of the old role)."""
    clock, probe = FakeClock(), CountingProbe()
    fresh = FreshPostgres(probe, clock, max_age_s=0.5)

    async def body():
        await fresh.get(not_before=clock.monotonic() - 1)
        clock.advance(0.1)
        looked = clock.monotonic()  # the loop's cycle ends: newer than the probe
        clock.advance(0.1)
        await fresh.get(not_before=looked - 0.2)  # older look: the cached probe stands
        calls_before = probe.calls
        await fresh.get(not_before=looked)
        await fresh.get(not_before=looked)  # the new probe started after the look: reused
        return calls_before

    assert asyncio.run(body()) == 1
    assert probe.calls == 2
