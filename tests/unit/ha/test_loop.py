"""The HA loop's own bookkeeping, on the real HaLoop with a FakeClock, the in-memory DCS and FakePostgres."""

from __future__ import annotations

from typing import Any

from raftpg.clock import FakeClock
from raftpg.dcs.keys import KeyLayout
from raftpg.dcs.memory import memory_dcs
from raftpg.ha.inputs import Me
from raftpg.ha.loop import HaLoop
from raftpg.testing.fake_postgres import FakePostgres, PgNetwork

SHORT = {"ttl": 10, "loop_wait": 1, "retry_timeout": 4, "postgresql": {"use_slots": True}}


def new_loop(name: str = "n1", bootstrap_dcs: dict[str, Any] | None = None) -> tuple[HaLoop, FakeClock, Any]:
    clock = FakeClock()
    dcs = memory_dcs(clock, KeyLayout("/service/", "t"))
    pg = FakePostgres(name, PgNetwork(clock), clock)
    me = Me(name, conn_url=f"postgresql://{name}:5432/postgres", api_url=f"http://{name}:8008/patroni")
    loop = HaLoop(dcs=dcs, pg=pg, watchdog=None, clock=clock, me=me, bootstrap_dcs=bootstrap_dcs or SHORT,
                  version="test")
    return loop, clock, dcs


def test_the_bootstrap_cycle_runs_on_bootstrap_dcs_not_on_the_defaults():
    """Before the config key exists, ttl/loop_wait come from bootstrap.dcs: the new primary's first lease
    is ttl long and it cycles again after loop_wait (not Patroni's defaults of 30 s and 10 s)."""
    loop, clock, dcs = new_loop()
    sent = clock.monotonic()
    loop.cycle()
    assert loop.pg.is_primary  # type: ignore[union-attr]
    assert loop.executor.lease.deadline is not None
    assert loop.executor.lease.deadline - sent <= SHORT["ttl"]
    assert loop.timing.loop_wait_s == SHORT["loop_wait"] and loop.timing.ttl_s == SHORT["ttl"]
