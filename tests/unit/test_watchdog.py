"""The watchdog as the HA loop uses it: armed before PostgreSQL becomes a primary, kept alive every cycle
while it is one, disarmed when it stops being one and on a clean shutdown; ``required`` mode never runs a
primary it could not arm the watchdog for.

The real /dev/watchdog is NOT exercised here or anywhere in CI: these machines have no watchdog device.
The HA loops below drive ``raftpg.watchdog.double.RecordingWatchdog`` (a software double recording what was
asked of it) through the real ``ModeWatchdog``, inside the deterministic simulation (real ``HaLoop`` and
``Executor``, ``FakePostgres``, the in-memory DCS, ``FakeClock``). Of ``LinuxWatchdog`` only what needs no
device is checked: its ioctl numbers against the kernel's, and how it fails on a path that is not a device.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from raftpg.ha.inputs import Me
from raftpg.ha.loop import HaLoop
from raftpg.testing.fake_postgres import FakePostgres
from raftpg.testing.simulation import DEFAULT_DCS_CONFIG, Simulation
from raftpg.watchdog import linux
from raftpg.watchdog.base import ModeWatchdog, WatchdogUnavailable
from raftpg.watchdog.double import RecordingWatchdog
from raftpg.watchdog.linux import LinuxWatchdog

TTL_S = 30  # DEFAULT_DCS_CONFIG: ttl 30, loop_wait 10, retry_timeout 10


@pytest.fixture(autouse=True)
def _quiet_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL + 1)


class JournalWatchdog(RecordingWatchdog):
    """The recording double, also writing each request into the simulation's shared journal, so the
    order of watchdog requests and PostgreSQL promotions can be checked across nodes."""

    def __init__(self, name: str, journal: list[tuple[str, str, Any]], fail_arm: bool) -> None:
        super().__init__(fail_arm=fail_arm)
        self.name, self.journal = name, journal

    def arm(self, timeout_s: float) -> None:
        self.journal.append((self.name, "arm", timeout_s))
        super().arm(timeout_s)

    def keepalive(self) -> None:
        self.journal.append((self.name, "keepalive", None))
        super().keepalive()

    def disarm(self) -> None:
        self.journal.append((self.name, "disarm", None))
        super().disarm()


class WatchdogSimulation(Simulation):
    """The simulation with a ModeWatchdog over a JournalWatchdog on every node.

    The journal gets ``(node, "writable", None)`` the instant a FakePostgres becomes a primary (bootstrap,
    start as primary, promote) and ``(node, "cycle", is_primary_after)`` at the end of each HA cycle."""

    def __init__(self, *, mode: str = "required", failing: frozenset[str] = frozenset(),
                 safety_margin_s: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mode, self.failing, self.safety_margin_s = mode, failing, safety_margin_s
        self.journal: list[tuple[str, str, Any]] = []
        self.devices: dict[str, JournalWatchdog] = {}
        self.watchdogs: dict[str, ModeWatchdog] = {}
        became_writable = self.network.on_writable

        def on_writable(pg: FakePostgres) -> None:
            self.journal.append((pg.name, "writable", None))
            became_writable(pg)

        self.network.on_writable = on_writable

    def _new_loop(self, me: Me, dcs: Any, pg: FakePostgres | None) -> HaLoop:
        device = JournalWatchdog(me.name, self.journal, fail_arm=me.name in self.failing)
        watchdog = ModeWatchdog(device, self.mode)
        self.devices[me.name], self.watchdogs[me.name] = device, watchdog
        extra = {} if self.safety_margin_s is None else {"watchdog_safety_margin_s": self.safety_margin_s}
        loop = HaLoop(dcs=dcs, pg=pg, watchdog=watchdog, clock=self.clock, me=me,
                      bootstrap_dcs=json.loads(json.dumps(self.dcs_config)), version="sim", **extra)
        cycle = loop.cycle

        def journaled_cycle() -> Any:
            decision = cycle()
            self.journal.append((me.name, "cycle", bool(pg and pg.is_primary)))
            return decision

        loop.cycle = journaled_cycle  # type: ignore[method-assign]
        return loop

    def events(self, name: str, *kinds: str) -> list[tuple[str, Any]]:
        return [(kind, value) for who, kind, value in self.journal if who == name and (not kinds or kind in kinds)]


def three_nodes(**kwargs: Any) -> WatchdogSimulation:
    sim = WatchdogSimulation(**kwargs)
    sim.add_node("n1")
    sim.run(15)
    sim.add_node("n2")
    sim.add_node("n3")
    sim.run(90)
    assert sim.convergence_problem() is None, sim.tail()
    return sim


def assert_armed_before_every_promotion(sim: WatchdogSimulation, timeout_s: float) -> int:
    """Each time a node became a primary, its last watchdog request before was an arm with ``timeout_s``,
    the bootstrap included: the new cluster's first start is armed after initdb (arming before initdb
    would let a slow initdb reset the machine) and before PostgreSQL starts."""
    promotions = 0
    last: dict[str, tuple[str, Any]] = {}
    for index, (who, kind, value) in enumerate(sim.journal):
        if kind in ("arm", "disarm"):
            last[who] = (kind, value)
        elif kind == "writable":
            promotions += 1
            assert last.get(who) == ("arm", timeout_s), \
                f"{who} became a primary with its watchdog {last.get(who)} (journal entry {index})\n{sim.tail()}"
    return promotions


# ------------------------------------------------------------------ armed, kept alive, disarmed


def test_armed_with_ttl_minus_safety_margin_before_the_first_primary_starts() -> None:
    sim = three_nodes()
    assert sim.leader() == "n1"
    assert assert_armed_before_every_promotion(sim, TTL_S - 5) == 1  # the default safety margin: 5 s
    assert sim.watchdogs["n1"].armed and sim.devices["n1"].timeout_s == TTL_S - 5
    for replica in ("n2", "n3"):  # replicas never touch the device
        assert sim.events(replica, "arm", "keepalive", "disarm") == []


def test_the_configured_safety_margin_sets_the_timeout() -> None:
    """Regression: HaLoop built its Timing without the watchdog's safety margin, so the device was
    always armed with ttl - 5 s whatever ``watchdog.safety_margin`` said."""
    sim = WatchdogSimulation(safety_margin_s=12)
    sim.add_node("n1")
    sim.run(15)
    assert sim.writable() == ["n1"], sim.tail()
    assert sim.events("n1", "arm") == [("arm", TTL_S - 12)]


def test_kept_alive_in_every_cycle_while_primary() -> None:
    sim = three_nodes()
    sim.run(120)
    cycles_as_primary, keepalives_in_cycle = 0, 0
    for who, kind, value in sim.journal:
        if who != "n1":
            continue
        if kind in ("keepalive", "arm"):  # a renewal that took time re-arms with what its lease allows
            keepalives_in_cycle += 1
        elif kind == "cycle":
            if value:  # n1 ended this cycle as the primary: it kicked the watchdog during it
                cycles_as_primary += 1
                assert keepalives_in_cycle >= 1, f"cycle {cycles_as_primary} of the primary kicked no keepalive"
            keepalives_in_cycle = 0
    assert cycles_as_primary >= 10  # 135 s at loop_wait 10
    assert sim.events("n1", "disarm") == []


def test_a_failed_renewal_never_kicks_the_watchdog() -> None:
    """Regression: the loop kicked the watchdog at the end of every cycle of a primary, even when its
    renewal had failed; a freeze right after such a kick let the device fire after the lease had
    expired elsewhere. Only a confirmed renewal kicks it, and only as far as that renewal allows."""
    sim = three_nodes()
    sim.run(30)
    sim.partition("n1")
    cut_at = len(sim.journal)
    sim.run(TTL_S)
    after = [(kind, value) for who, kind, value in sim.journal[cut_at:] if who == "n1"]
    assert ("keepalive", None) not in after, after
    assert not any(kind == "arm" for kind, _ in after), after
    assert ("disarm", None) in after  # it demoted before its lease could expire


def test_disarmed_on_switchover_and_armed_on_the_new_primary_before_it_promotes() -> None:
    sim = three_nodes()
    sim.switchover("n1", "n2")
    sim.run(60)
    assert sim.leader() == "n2" and sim.writable() == ["n2"], sim.tail()
    assert sim.events("n1", "arm", "disarm")[-1] == ("disarm", None)
    assert not sim.watchdogs["n1"].armed
    assert sim.watchdogs["n2"].armed
    assert assert_armed_before_every_promotion(sim, TTL_S - 5) == 2


def test_disarmed_when_a_partitioned_primary_demotes() -> None:
    sim = three_nodes()
    sim.partition("n1")
    sim.run(2 * TTL_S)
    assert sim.leader() in ("n2", "n3") and "n1" not in sim.writable(), sim.tail()
    assert sim.events("n1", "arm", "disarm")[-1] == ("disarm", None)
    assert not sim.watchdogs["n1"].armed


def test_disarmed_when_the_primary_gives_up_a_postgres_that_will_not_start() -> None:
    """Regression: only StopPostgres disarmed. A primary whose PostgreSQL crashed and would not start
    again released the key with the watchdog still armed and no longer kicked: with a real device the
    machine would have been reset for a PostgreSQL that was already down."""
    sim = three_nodes(dcs_config={**DEFAULT_DCS_CONFIG, "primary_start_timeout": 60})
    sim.pg("n1").fail_next["start"] = 10**9
    sim.kill_pg("n1")
    sim.run(60 + 3 * TTL_S)
    assert sim.leader() in ("n2", "n3"), sim.tail()
    assert not sim.pg("n1").running
    assert not sim.watchdogs["n1"].armed, sim.events("n1", "arm", "disarm")[-3:]


def test_disarmed_on_clean_shutdown() -> None:
    """Regression: HaLoop.shutdown stopped PostgreSQL and released the key but left the device armed; a
    real /dev/watchdog closed without the magic 'V' keeps counting and resets the machine."""
    sim = three_nodes()
    node = sim.node("n1")
    node.loop.shutdown()
    sim.kill_agent("n1")  # the agent process is gone after its shutdown
    assert not sim.pg("n1").running
    assert sim.events("n1", "arm", "disarm")[-1] == ("disarm", None)
    assert not sim.watchdogs["n1"].armed


# ------------------------------------------------------------------ modes


def test_required_mode_refuses_to_promote_when_arming_fails() -> None:
    sim = three_nodes(failing=frozenset({"n2"}))
    sim.kill_agent("n1")
    sim.run(3 * TTL_S)
    # n2 (ahead of n3 by name at equal positions) wins the race for the key but cannot arm its watchdog
    assert sim.events("n2", "arm"), sim.tail()
    assert ("writable", None) not in sim.events("n2")
    assert sim.pg("n2").in_recovery and not sim.pg("n2").is_primary
    assert "watchdog" in (sim.node("n2").loop.status.error or ""), sim.node("n2").loop.status
    assert "n2" not in sim.writable()


def test_required_mode_does_not_keep_a_bootstrapped_primary_when_arming_fails() -> None:
    """Regression: when arming failed after the bootstrap had started PostgreSQL, the action failed but
    left the new primary running; the next cycle adopted it and served writes with no watchdog."""
    sim = WatchdogSimulation(failing=frozenset({"n1"}))
    sim.add_node("n1")
    sim.run(60)
    assert sim.events("n1", "arm")
    # the watchdog is armed after initdb and before the new cluster's first start: PostgreSQL never ran
    assert [value for kind, value in sim.events("n1", "cycle")] == [False] * len(sim.events("n1", "cycle"))
    assert sim.events("n1", "writable") == [], sim.tail()
    assert sim.writable() == [] and not sim.pg("n1").running
    assert sim.pg("n1").kept_data_dirs, "the failed bootstrap's data directory is moved aside, not adopted"


def test_automatic_mode_promotes_without_a_working_device() -> None:
    sim = three_nodes(mode="automatic", failing=frozenset({"n1", "n2", "n3"}))
    assert sim.writable() == ["n1"]
    assert not sim.watchdogs["n1"].armed
    assert sim.events("n1", "keepalive") == []  # nothing to kick


# ------------------------------------------------------------------ LinuxWatchdog without a device


def test_ioctl_numbers_are_the_kernels() -> None:
    # linux/watchdog.h: _IOR('W', 5, int), _IOWR('W', 6, int), _IOR('W', 7, int) on x86/arm
    assert linux.WDIOC_KEEPALIVE == 0x80045705
    assert linux.WDIOC_SETTIMEOUT == 0xC0045706
    assert linux.WDIOC_GETTIMEOUT == 0x80045707


def test_a_missing_device_is_unavailable_and_named(tmp_path: Path) -> None:
    path = str(tmp_path / "no-such-watchdog")
    device = LinuxWatchdog(path)
    with pytest.raises(WatchdogUnavailable, match=path):
        device.arm(25)
    with pytest.raises(WatchdogUnavailable):
        device.keepalive()
    device.disarm()  # nothing open: nothing to do


def test_a_device_that_cannot_be_configured_is_closed_with_the_magic_character(tmp_path: Path) -> None:
    """Regression: opening /dev/watchdog starts its countdown. When setting the timeout then failed, the
    device stayed open and unkicked (ModeWatchdog marks it unarmed), so in automatic mode, which carries
    on without it, the driver's default timeout would reset the machine. It must be magic-closed.
    A regular file stands in for the device: it opens, and the ioctls fail (ENOTTY)."""
    path = tmp_path / "not-a-watchdog"
    path.write_bytes(b"")
    device = LinuxWatchdog(str(path))
    with pytest.raises(WatchdogUnavailable, match=str(path)):
        device.arm(25)
    assert device._fd is None
    assert path.read_bytes() == b"V"


def test_mode_watchdog_over_a_missing_device(tmp_path: Path) -> None:
    missing = str(tmp_path / "none")
    assert ModeWatchdog(LinuxWatchdog(missing), "required").arm(25) is False
    automatic = ModeWatchdog(LinuxWatchdog(missing), "automatic")
    assert automatic.arm(25) is True and automatic.armed is False


def test_build_watchdog_follows_the_config() -> None:
    from raftpg.config import parse_config
    from raftpg.node import build_watchdog
    from raftpg.watchdog.base import NullWatchdog

    def config(watchdog: dict[str, Any]) -> Any:
        return parse_config({"scope": "s", "name": "n1", "restapi": {"listen": "127.0.0.1:8008"},
                             "raft": {"data_dir": "/tmp/raft", "self_addr": "127.0.0.1:5010", "password": "pw"},
                             "postgresql": {"listen": "127.0.0.1:5432", "data_dir": "/tmp/data"},
                             "watchdog": watchdog})

    assert isinstance(build_watchdog(config({"mode": "off"})), NullWatchdog)
    required = build_watchdog(config({"mode": "required", "device": "/dev/nonexistent-wd"}))
    assert isinstance(required, ModeWatchdog)
    assert required.arm(20) is False  # no such device here: required mode refuses
