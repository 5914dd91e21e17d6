"""Scenario transcripts: ``tests/scenarios/*.txt`` run on the deterministic simulation.

Each line is a command; ``#`` starts a comment that narrates. Every transcript runs under several seeds
(the order of nodes acting at the same instant and their timing jitter differ), and the simulation's
checker runs all along: at no simulated instant may two PostgreSQL instances accept writes.

Commands:
    config KEY=VALUE ...        before the first start: the bootstrap dcs config; after: edit the config key
                                (dotted keys for nesting: postgresql.use_pg_rewind=false)
    start NAME ... [witness] [nofailover] [nosync] [clonefrom] [priority=N] [delay=DURATION]
    run DURATION                advance simulated time (30s, 500ms, 2m)
    kill-pg NAME                PostgreSQL crashes (the agent keeps running)
    kill-agent NAME             the agent dies; the fencing supervisor stops PostgreSQL at once
    start-agent NAME            a fresh agent process on the same node
    freeze NAME / thaw NAME     SIGSTOP / SIGCONT the agent (PostgreSQL keeps running meanwhile)
    wipe NAME                   the data directory is lost
    blind NAME / see NAME       the agent can / can again query its PostgreSQL (the server keeps running)
    stick NAME [soft|hard]      the replica stops streaming: a rewind cures "soft", only a re-clone "hard"
    partition NAME ...          cut the node from the DCS quorum and every replication link
    cut A B                     cut only the replication link between A and B
    heal [NAME ...]             undo partitions and cuts (all, or those of the named nodes)
    slow-dcs NAME DURATION      each way of every DCS call from NAME takes DURATION (0s: back to normal)
    flaky-dcs NAME PERCENT      that share of NAME's DCS calls apply but lose their answer
    slow-pg NAME DURATION       every PostgreSQL start/stop/promote/clone/rewind on NAME takes DURATION
    fail-pg NAME OPERATION [N]  the next N (1) calls of a PostgreSQL operation fail (post_bootstrap, start, ...)
    freeze-before NAME ACTION   NAME's agent freezes between deciding and acting, in its next decision
                                with ACTION (e.g. AcquireLeaderKey); ``thaw NAME`` carries that decision out
    write TARGET COUNT          a client commits COUNT rows on TARGET (a name, or "primary")
    switchover LEADER CANDIDATE [in=DURATION]   write the failover key (scheduled: in= from now)
    failover CANDIDATE          a manual failover request (no leader named)
    pause / resume
    expect primary NAME|none    exactly NAME accepts writes and holds the leader key (none: nobody writes)
    expect primary-not NAME     exactly one node accepts writes and holds the leader key, and it is not NAME
    expect leader NAME|none     who holds the leader key
    expect replicas NAME ...    each streams from the current leader
    expect stopped NAME ...     PostgreSQL not running
    expect running NAME ...     PostgreSQL running
    expect fenced NAME          the fencing supervisor stopped NAME's PostgreSQL at least once
    expect timeline NAME N
    expect lost N               acknowledged writes missing from the current primary
    expect acknowledged N       writes acknowledged to clients so far
    expect sync NAME ...|none   the sync key
    expect refused NAME         the agent stopped itself (safety rule 7)
    expect kept NAME N          N data directories of NAME were moved aside (kept, never deleted)
    expect converged            one primary with the key, every reachable data node streaming from it
    expect no-double-primary    the continuous checker never saw two writable primaries
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from raftpg.model import Tags
from raftpg.testing.fake_postgres import host_of
from raftpg.testing.simulation import SafetyViolation, Simulation

HERE = Path(__file__).parent
SEEDS = (1, 2, 3)


class TranscriptFailure(AssertionError):
    pass


def duration_s(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", text)
    if not match:
        raise ValueError(f"not a duration (use 500ms, 30s, 2m): {text!r}")
    value, unit = float(match.group(1)), match.group(2)
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]


def config_value(text: str) -> Any:
    if text.lower() in ("true", "on", "yes"):
        return True
    if text.lower() in ("false", "off", "no"):
        return False
    try:
        return int(text)
    except ValueError:
        return text


def set_dotted(document: dict[str, Any], dotted: str, value: Any) -> None:
    *path, last = dotted.split(".")
    for part in path:
        document = document.setdefault(part, {})
    document[last] = value


class Transcript:
    def __init__(self, seed: int) -> None:
        self.sim = Simulation(seed)

    # ------------------------------------------------------------------ commands
    def do_config(self, *pairs: str) -> None:
        changes: dict[str, Any] = {}
        for pair in pairs:
            key, _, value = pair.partition("=")
            set_dotted(changes, key, config_value(value))
        if not self.sim.nodes:
            for key, value in changes.items():
                if isinstance(value, dict):
                    self.sim.dcs_config.setdefault(key, {}).update(value)
                else:
                    self.sim.dcs_config[key] = value
        else:
            self.sim.edit_config(**changes)

    def do_start(self, *words: str) -> None:
        names = [w for w in words if w not in ("witness", "nofailover", "nosync", "clonefrom")
                 and not w.startswith(("priority=", "delay="))]
        priority = next((int(w.split("=", 1)[1]) for w in words if w.startswith("priority=")), 1)
        delay_s = next((duration_s(w.split("=", 1)[1]) for w in words if w.startswith("delay=")), 0.0)
        tags = Tags(nofailover="nofailover" in words or priority <= 0, failover_priority=priority,
                    nosync="nosync" in words, clonefrom="clonefrom" in words)
        for name in names:
            self.sim.add_node(name, witness="witness" in words, tags=tags, delay_s=delay_s)

    def do_run(self, duration: str) -> None:
        self.sim.run(duration_s(duration))

    def do_kill_pg(self, name: str) -> None:
        self.sim.kill_pg(name)

    def do_kill_agent(self, name: str) -> None:
        self.sim.kill_agent(name)

    def do_start_agent(self, name: str) -> None:
        self.sim.start_agent(name)

    def do_freeze(self, name: str) -> None:
        self.sim.freeze(name)

    def do_thaw(self, name: str) -> None:
        self.sim.thaw(name)

    def do_wipe(self, name: str) -> None:
        self.sim.wipe(name)

    def do_stick(self, name: str, kind: str = "soft") -> None:
        self.sim.stick(name, kind)

    def do_blind(self, name: str) -> None:
        self.sim.blind(name)

    def do_see(self, name: str) -> None:
        self.sim.blind(name, False)

    def do_partition(self, *names: str) -> None:
        for name in names:
            self.sim.partition(name)

    def do_cut(self, a: str, b: str) -> None:
        self.sim.cut_link(a, b)

    def do_heal(self, *names: str) -> None:
        self.sim.heal(*names)

    def do_slow_dcs(self, name: str, duration: str) -> None:
        self.sim.slow_dcs(name, duration_s(duration))

    def do_flaky_dcs(self, name: str, percent: str) -> None:
        self.sim.flaky_dcs(name, float(percent.rstrip("%")) / 100)

    def do_slow_pg(self, name: str, duration: str) -> None:
        self.sim.slow_pg(name, duration_s(duration))

    def do_fail_pg(self, name: str, operation: str, count: str = "1") -> None:
        self.sim.fail_pg(name, operation, int(count))

    def do_freeze_before(self, name: str, action: str) -> None:
        self.sim.freeze_before(name, action)

    def do_write(self, target: str, count: str) -> None:
        self.sim.write(target, int(count))

    def do_switchover(self, leader: str, candidate: str, *options: str) -> None:
        delay = next((duration_s(o[3:]) for o in options if o.startswith("in=")), None)
        self.sim.switchover(leader, candidate, delay)

    def do_failover(self, candidate: str) -> None:
        self.sim.switchover(None, candidate)

    def do_pause(self) -> None:
        self.sim.pause(True)

    def do_resume(self) -> None:
        self.sim.pause(False)

    def do_expect(self, what: str, *args: str) -> None:
        check = getattr(self, "expect_" + what.replace("-", "_"), None)
        if check is None:
            raise ValueError(f"unknown expectation {what!r}")
        problem = check(*args)
        if problem:
            raise TranscriptFailure(problem)

    # ------------------------------------------------------------------ expectations: None when met
    def expect_primary(self, name: str) -> str | None:
        writable, leader = self.sim.writable(), self.sim.leader()
        if name == "none":
            return None if not writable else f"expected no primary, but {writable} accept writes"
        if writable != [name] or leader != name:
            return f"expected primary {name}; accepting writes: {writable}, leader key: {leader}"
        return None

    def expect_primary_not(self, name: str) -> str | None:
        writable, leader = self.sim.writable(), self.sim.leader()
        if len(writable) != 1 or writable[0] == name or leader != writable[0]:
            return f"expected one primary other than {name}; accepting writes: {writable}, leader key: {leader}"
        return None

    def expect_leader(self, name: str) -> str | None:
        leader = self.sim.leader()
        return None if (leader or "none") == name else f"expected leader key {name}, found {leader}"

    def expect_replicas(self, *names: str) -> str | None:
        leader = self.sim.leader()
        for name in names:
            pg = self.sim.pg(name)
            if not (pg.running and pg.in_recovery and pg.streaming and host_of(pg.upstream_url) == leader):
                return (f"expected {name} to stream from {leader}: running={pg.running} "
                        f"replica={pg.in_recovery} streaming={pg.streaming} upstream={host_of(pg.upstream_url)}")
        return None

    def expect_stopped(self, *names: str) -> str | None:
        running = [n for n in names if self.sim.pg(n).running]
        return f"expected PostgreSQL stopped on {running}" if running else None

    def expect_running(self, *names: str) -> str | None:
        stopped = [n for n in names if not self.sim.pg(n).running]
        return f"expected PostgreSQL running on {stopped}" if stopped else None

    def expect_fenced(self, name: str) -> str | None:
        return None if self.sim.pg(name).fenced_count else f"{name} was never fenced"

    def expect_timeline(self, name: str, timeline: str) -> str | None:
        found = self.sim.pg(name).timeline
        return None if found == int(timeline) else f"expected {name} on timeline {timeline}, found {found}"

    def expect_lost(self, count: str) -> str | None:
        lost = self.sim.lost()
        return None if len(lost) == int(count) else f"expected {count} lost writes, found {sorted(lost)}"

    def expect_acknowledged(self, count: str) -> str | None:
        found = len(self.sim.network.acknowledged)
        return None if found == int(count) else f"expected {count} acknowledged writes, found {found}"

    def expect_sync(self, *names: str) -> str | None:
        view = self.sim.operator.load(linearizable=True, timeout_s=1.0)
        found = tuple(view.sync.sync_standby) if view.sync else ()
        wanted = () if names == ("none",) else tuple(sorted(names))
        return None if found == wanted else f"expected sync key {wanted}, found {found}"

    def expect_refused(self, name: str) -> str | None:
        return None if self.sim.node(name).fatal else f"{name} did not refuse to run"

    def expect_kept(self, name: str, count: str) -> str | None:
        kept = self.sim.pg(name).kept_data_dirs
        return None if len(kept) == int(count) else f"expected {count} data dirs of {name} kept aside, found {kept}"

    def expect_converged(self) -> str | None:
        return self.sim.convergence_problem()

    def expect_no_double_primary(self) -> str | None:
        return None if self.sim.max_writers <= 1 else "two primaries accepted writes at once"

    # ------------------------------------------------------------------ running a file
    def run_file(self, path: Path) -> None:
        for number, raw in enumerate(path.read_text().splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            command, *args = shlex.split(line)
            handler = getattr(self, "do_" + command.replace("-", "_"), None)
            where = f"{path.name}:{number}: {line} (seed {self.sim.seed}, t={self.sim.elapsed:.2f}s)"
            if handler is None:
                raise TranscriptFailure(f"{where}: unknown command")
            try:
                handler(*args)
            except SafetyViolation as exc:
                raise TranscriptFailure(f"{where}\n{exc}") from None
            except (TranscriptFailure, AssertionError, ValueError, KeyError, TypeError) as exc:
                raise TranscriptFailure(f"{where}: {exc}\n--- simulation log (last lines) ---\n"
                                        f"{self.sim.tail()}") from None


TRANSCRIPTS = sorted(HERE.glob("*.txt"))



@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("path", TRANSCRIPTS, ids=[p.stem for p in TRANSCRIPTS])
def test_transcript(path: Path, seed: int) -> None:
    Transcript(seed).run_file(path)


def test_there_are_transcripts() -> None:
    assert len(TRANSCRIPTS) >= 6


def test_a_failed_expectation_names_the_line(tmp_path: Path) -> None:
    script = tmp_path / "wrong.txt"
    script.write_text("start n1\nrun 20s\nexpect primary n2  # n1 is the only node\n")
    with pytest.raises(TranscriptFailure, match=r"wrong.txt:3: expect primary n2"):
        Transcript(1).run_file(script)
