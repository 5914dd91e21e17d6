"""Process faults on one node: kill (agent, postmaster, both), pause, a wall-clock step, a frozen
postmaster, a clean stop of the agent's whole process group, and every connection slot taken.

Targets are drawn by role (``draw_role``: mostly the primary) and resolved against the live cluster.
"""

from __future__ import annotations

import contextlib
import random
import signal
import time
from typing import Any

import psycopg

from jepsen_lite.cluster import RaftpgCluster, faked_wall_time, proc_state, wait_until
from jepsen_lite.nemesis_base import Fault, FaultError, draw_role


class KillAgent(Fault):
    name = "kill-agent"

    @classmethod
    def plan(cls, rng: random.Random, ttl_s: float) -> tuple[float, dict[str, Any]]:
        return rng.uniform(2, ttl_s), {"target": draw_role(rng)}

    def start(self) -> dict[str, Any]:
        self.pick_victim()
        cluster = self.cluster
        self.postmaster = cluster.postmaster_pid(self.victim) if isinstance(cluster, RaftpgCluster) else None
        self.t0 = time.monotonic()
        self.pid = self.running(cluster.kill(self.victim), f"{self.victim} was not running")
        return {"victim": self.victim, "pid": self.pid}

    def verify(self) -> tuple[bool, dict[str, Any]]:
        evidence: dict[str, Any] = {"agent_state": proc_state(self.pid)}
        ok = evidence["agent_state"] in (None, "Z")
        if self.postmaster:  # the supervisor must fence PostgreSQL once the agent is gone (informational)
            gone = wait_until(lambda: proc_state(self.postmaster) in (None, "Z"), self.env.ttl_s, 0.05)
            evidence["postmaster_fenced_after_s"] = round(time.monotonic() - self.t0, 3) if gone else None
        return ok, evidence

    def stop(self) -> dict[str, Any]:
        self.cluster.start(self.victim)
        return {"victim": self.victim, "pid": self.cluster.pid(self.victim)}


class KillPostgres(Fault):
    name = "kill-postgres"
    kinds = frozenset({"raftpg"})
    data_only = True

    @classmethod
    def plan(cls, rng: random.Random, ttl_s: float) -> tuple[float, dict[str, Any]]:
        return rng.uniform(2, ttl_s), {"target": draw_role(rng)}

    def start(self) -> dict[str, Any]:
        cluster = self.pg_cluster
        self.pick_victim()
        self.pid = self.running(cluster.kill_postgres(self.victim), f"no postmaster running on {self.victim}")
        return {"victim": self.victim, "postmaster": self.pid}

    def verify(self) -> tuple[bool, dict[str, Any]]:
        gone = wait_until(lambda: proc_state(self.pid) in (None, "Z"), 5, 0.05)
        return bool(gone), {"postmaster_state": proc_state(self.pid)}

    def stop(self) -> dict[str, Any]:
        cluster = self.pg_cluster
        back = wait_until(lambda: cluster.postmaster_pid(self.victim), 30, 0.5)
        return {"victim": self.victim, "restarted_by_agent": back}


def crash_node(cluster: RaftpgCluster, name: str) -> dict[str, Any]:
    """SIGKILL agent and PostgreSQL together, the supervisor frozen first (a crash, not a fence)."""
    postmaster, supervisor, agent = cluster.postmaster_pid(name), cluster.supervisor_pid(name), cluster.pid(name)
    if supervisor:
        cluster.pause_pid(supervisor)
    cluster.kill_postgres(name)
    cluster.kill(name)
    if supervisor:
        cluster.resume_pid(supervisor)
    return {"victim": name, "agent": agent, "postmaster": postmaster}


def all_gone(pids: list[int], timeout_s: float = 5.0) -> bool:
    return bool(wait_until(lambda: all(proc_state(p) in (None, "Z") for p in pids), timeout_s, 0.05))


class KillNode(Fault):
    name = "kill-node"
    kinds = frozenset({"raftpg"})
    data_only = True

    @classmethod
    def plan(cls, rng: random.Random, ttl_s: float) -> tuple[float, dict[str, Any]]:
        return rng.uniform(2, ttl_s), {"target": draw_role(rng)}

    def start(self) -> dict[str, Any]:
        self.pick_victim()
        self.details = crash_node(self.pg_cluster, self.victim)
        return self.details

    def verify(self) -> tuple[bool, dict[str, Any]]:
        pids = [p for p in (self.details["agent"], self.details["postmaster"]) if p]
        return all_gone(pids) and bool(pids), {"states": {p: proc_state(p) for p in pids}}

    def stop(self) -> dict[str, Any]:
        self.cluster.start(self.victim)
        return {"victim": self.victim}


class Pause(Fault):
    name = "pause"

    @classmethod
    def plan(cls, rng: random.Random, ttl_s: float) -> tuple[float, dict[str, Any]]:
        long = rng.random() < 0.75  # mostly longer than the TTL: the lease must expire meanwhile
        hold = rng.uniform(1.5 * ttl_s, 2.5 * ttl_s) if long else rng.uniform(1, 0.5 * ttl_s)
        return hold, {"target": draw_role(rng)}

    def pids(self) -> list[int]:
        pid = self.cluster.pid(self.victim)
        return [pid] if pid else []

    def start(self) -> dict[str, Any]:
        self.pick_victim()
        self.paused = self.pids()
        if not self.paused:
            raise FaultError(f"{self.victim} is not running")
        for pid in self.paused:
            self.cluster.pause_pid(pid)
        return {"victim": self.victim, "pids": self.paused}

    def verify(self) -> tuple[bool, dict[str, Any]]:
        stopped = wait_until(lambda: all(proc_state(p) == "T" for p in self.paused), 2, 0.05)
        return bool(stopped), {"states": {p: proc_state(p) for p in self.paused}}

    def stop(self) -> dict[str, Any]:
        for pid in self.paused:
            self.cluster.resume_pid(pid)
        return {"victim": self.victim, "states": {p: proc_state(p) for p in self.paused}}


class PauseUnfenced(Pause):
    """The mutant: agent and fencing supervisor frozen together, so the postmaster keeps taking writes."""

    name = "pause-unfenced"
    kinds = frozenset({"raftpg"})
    mutant = True

    @classmethod
    def plan(cls, rng: random.Random, ttl_s: float) -> tuple[float, dict[str, Any]]:
        return rng.uniform(2.5 * ttl_s, 3 * ttl_s), {"target": "primary"}

    def pids(self) -> list[int]:
        cluster = self.pg_cluster
        agent, supervisor = cluster.pid(self.victim), cluster.supervisor_pid(self.victim)
        self.postmaster = cluster.postmaster_pid(self.victim)
        return [p for p in (supervisor, agent) if p]  # supervisor first: it must not see the agent stop

    def verify(self) -> tuple[bool, dict[str, Any]]:
        ok, evidence = super().verify()
        evidence["postmaster_state"] = proc_state(self.postmaster) if self.postmaster else None
        ok = ok and len(self.paused) == 2 and evidence["postmaster_state"] not in (None, "T", "Z")
        return ok, evidence


class Clock(Fault):
    name = "clock"
    needs = frozenset({"faketime"})

    @classmethod
    def plan(cls, rng: random.Random, ttl_s: float) -> tuple[float, dict[str, Any]]:
        return rng.uniform(ttl_s, 2 * ttl_s), {"target": draw_role(rng),
                                               "offset_s": rng.choice([120, -120, 60, -60, 30, -30])}

    def start(self) -> dict[str, Any]:
        if not self.cluster.opts.faketime:
            raise FaultError("nodes were not started under libfaketime (faketime=False)")
        self.pick_victim()
        self.offset_s = int(self.params.get("offset_s", 120))
        self.cluster.set_clock_offset(self.victim, f"{self.offset_s:+d}s")
        return {"victim": self.victim, "offset_s": self.offset_s}

    def verify(self) -> tuple[bool, dict[str, Any]]:
        env = self.cluster.clock_env(self.victim)
        deadline = time.monotonic() + 3
        probe = faked_wall_time(env) - time.time()
        while abs(probe - self.offset_s) > 2 and time.monotonic() < deadline:
            time.sleep(0.3)
            probe = faked_wall_time(env) - time.time()
        evidence: dict[str, Any] = {"probe_skew_s": round(probe, 2)}
        ok = abs(probe - self.offset_s) <= 2
        cluster = self.cluster
        if isinstance(cluster, RaftpgCluster) and cluster.alive(self.victim):
            tolerance = self.env.loop_wait_s + 3

            def agent_skew() -> float | None:
                seen = (cluster.status(self.victim) or {}).get("dcs_last_seen")
                return None if seen is None else seen - time.time()

            skew = wait_until(lambda: (s := agent_skew()) is not None and abs(s - self.offset_s) <= tolerance,
                              3 * tolerance, 0.5)
            last = agent_skew()
            evidence["agent_dcs_last_seen_skew_s"] = None if last is None else round(last, 1)
            evidence["agent_confirms"] = bool(skew)
        return ok, evidence

    def stop(self) -> dict[str, Any]:
        self.cluster.set_clock_offset(self.victim, "+0")
        return {"victim": self.victim}


class FreezePostgres(Fault):
    """SIGSTOP of the postmaster's process group (postmaster and every backend): a server that hangs, as
    under an I/O stall, while its agent keeps running. SIGCONT at the end.

    The cgroup v2 ``io.max`` throttle is not offered: this host's cgroup2 hierarchy enables no ``io``
    controller (``cgroup.controllers`` lists only ``hugetlb``), and v1 ``blkio.throttle`` does not throttle
    buffered writes. Verified: the postmaster is in state ``T`` and a new connection times out."""

    name = "freeze-postgres"
    kinds = frozenset({"raftpg"})
    data_only = True

    @classmethod
    def plan(cls, rng: random.Random, ttl_s: float) -> tuple[float, dict[str, Any]]:
        long = rng.random() < 0.7
        return (rng.uniform(1.2 * ttl_s, 2.5 * ttl_s) if long else rng.uniform(1, 0.5 * ttl_s)), \
            {"target": draw_role(rng)}

    def start(self) -> dict[str, Any]:
        cluster = self.pg_cluster
        self.pick_victim("data")
        self.pid = self.running(cluster.postmaster_pid(self.victim), f"no postmaster running on {self.victim}")
        cluster.pause_group(self.pid)
        return {"victim": self.victim, "postmaster": self.pid}

    def verify(self) -> tuple[bool, dict[str, Any]]:
        cluster = self.pg_cluster
        stopped = wait_until(lambda: proc_state(self.pid) in ("T", None, "Z"), 3, 0.05)
        t0 = time.monotonic()
        try:
            with psycopg.connect(cluster.dsn(self.victim, timeout_s=2), autocommit=True):
                answered = True
        except psycopg.Error:
            answered = False
        evidence = {"postmaster_state": proc_state(self.pid), "connect_answered": answered,
                    "connect_waited_s": round(time.monotonic() - t0, 2)}
        return bool(stopped) and proc_state(self.pid) == "T" and not answered, evidence

    def stop(self) -> dict[str, Any]:
        self.pg_cluster.resume_group(self.pid)
        return {"victim": self.victim, "postmaster_state": proc_state(self.pid)}


class StopGroup(Fault):
    """SIGTERM or SIGINT to the agent's whole process group, as systemd (KillMode=control-group) and a
    terminal's Ctrl-C do; started again at the end. A clean stop must hand the leader key over at once
    (DESIGN.md rule 11): when the victim was the primary, ``handover_s`` (until another node answers
    ``GET /primary`` 200) is recorded for the ``handover`` checker."""

    name = "stop-group"
    kinds = frozenset({"raftpg"})

    @classmethod
    def plan(cls, rng: random.Random, ttl_s: float) -> tuple[float, dict[str, Any]]:
        return rng.uniform(2, ttl_s), {"target": rng.choice(["primary", "primary", "primary", "replica"]),
                                       "signal": rng.choice(["SIGTERM", "SIGINT"])}

    def start(self) -> dict[str, Any]:
        cluster = self.pg_cluster
        self.pick_victim("primary")
        self.was_primary = cluster.primary() == self.victim
        self.replicas_streaming = cluster.streaming(self.victim) if self.was_primary else None
        self.pid = self.running(cluster.pid(self.victim), f"{self.victim} is not running")
        sig = getattr(signal, self.params.get("signal", "SIGTERM"))
        self.t0 = time.monotonic()
        cluster.signal_group(self.pid, sig)
        return {"victim": self.victim, "pid": self.pid, "signal": sig.name, "victim_was_primary": self.was_primary}

    def verify(self) -> tuple[bool, dict[str, Any]]:
        cluster = self.pg_cluster
        handover = None
        if self.was_primary:
            found = wait_until(lambda: [n for n in cluster.primaries(timeout_s=0.5) if n != self.victim],
                               self.env.ttl_s * 2 + 10, 0.1)
            handover = round(time.monotonic() - self.t0, 3) if found else None
        exited = wait_until(lambda: not cluster.alive(self.victim), 40, 0.1)
        return bool(exited), {"agent_exited": bool(exited), "victim_was_primary": self.was_primary,
                              "handover_s": handover, "ttl_s": self.env.ttl_s,
                              "replicas_streaming_before": self.replicas_streaming}

    def stop(self) -> dict[str, Any]:
        self.cluster.start(self.victim)
        return {"victim": self.victim, "pid": self.cluster.pid(self.victim)}


TOO_MANY = ("too many clients", "remaining connection slots")


class ExhaustConnections(Fault):
    """The harness takes every connection slot of one node's PostgreSQL, superuser-reserved ones included
    (it connects as the superuser), terminates every other client session (the agent's own connection
    among them: a session that is already open would otherwise keep the agent observing), takes the slots
    those freed, and keeps writing on one of its connections (a client recorded in the history like any
    other). The workload's own sessions (``application_name = 'jepsen-lite'``) are left alone.

    Verified: one more superuser connection is refused ("too many clients"). Whether the agent then reports
    that it cannot observe its server (``GET /patroni``: state ``stopped`` or a decision saying it does not
    answer) is recorded as ``agent_reports_blind``."""

    name = "exhaust-connections"
    kinds = frozenset({"raftpg"})
    data_only = True
    MAX_HELD = 300
    TERMINATE = ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                 "AND backend_type = 'client backend' AND application_name IS DISTINCT FROM 'jepsen-lite'")

    @classmethod
    def plan(cls, rng: random.Random, ttl_s: float) -> tuple[float, dict[str, Any]]:
        return rng.uniform(1.5 * ttl_s, 3 * ttl_s), {"target": draw_role(rng)}

    def grab(self) -> None:
        """Connect until refused (or MAX_HELD)."""
        while len(self.held) < self.MAX_HELD:
            try:
                self.held.append(psycopg.connect(self.pg_cluster.dsn(self.victim, timeout_s=3), autocommit=True))
            except psycopg.Error as exc:
                self.refusal = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else repr(exc)
                return

    def start(self) -> dict[str, Any]:
        self.pick_victim("data")
        self.held: list[psycopg.Connection] = []
        self.refusal: str | None = None
        self.writer = None
        self.grab()
        if not self.held:
            raise FaultError(f"could not connect to {self.victim}: {self.refusal}")
        terminated = 0
        for _ in range(5):  # whoever reconnects into a freed slot first is terminated again
            try:
                killed = self.held[-1].execute(self.TERMINATE).fetchone()[0]
            except psycopg.Error:
                break
            terminated += killed
            self.grab()
            if not killed:
                break
        workload = self.env.workload
        if workload is not None:
            self.writer = workload.held_client(self.victim, self.held[0])
        return {"victim": self.victim, "held": len(self.held), "terminated": terminated, "refusal": self.refusal,
                "writer_process": getattr(self.writer, "process", None)}

    def verify(self) -> tuple[bool, dict[str, Any]]:
        cluster = self.pg_cluster
        refused = self.refusal is not None and any(m in self.refusal for m in TOO_MANY)
        # A slot freed since start (a terminated session that took a while to exit) is taken and kept too,
        # until the server refuses again (the old check opened one connection and closed it at once).
        self.refusal = None
        self.grab()
        refused_again = self.refusal is not None and any(m in self.refusal for m in TOO_MANY)

        def blind() -> dict[str, Any] | None:
            status = cluster.status(self.victim) or {}
            said = f"{status.get('state')} {status.get('decision')}"
            return status if (status.get("state") == "stopped" or "does not answer" in said) else None

        reported = wait_until(blind, 4 * self.env.loop_wait_s + 6, 0.5)
        evidence = {"held": len(self.held), "refused": refused and refused_again,
                    "agent_reports_blind": bool(reported),
                    "agent_decision": str(reported.get("decision", ""))[:160] if reported else None}
        return bool(refused and refused_again), evidence

    def stop(self) -> dict[str, Any]:
        if self.writer is not None:  # it finishes its op in flight (bounded by its op timeout), then stops
            self.writer.stop_event.set()
            self.writer.join(15)
        for conn in self.held:
            with contextlib.suppress(Exception):
                conn.close()
        return {"victim": self.victim, "released": len(self.held)}
