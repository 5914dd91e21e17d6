"""Faults on the whole cluster: administrative operations (switchover, failover, a kill in the middle of a
switchover), crash-restarts of every node (once, or many times in a row), clean stops, and the double
failover that catches a rolled-back term. All are ``exclusive``: never overlapped with another fault.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from jepsen_lite.cluster import RaftpgCluster, proc_state, wait_until
from jepsen_lite.faults_proc import all_gone, crash_node
from jepsen_lite.nemesis_base import Fault, FaultError


class Switchover(Fault):
    name = "switchover"
    kinds = frozenset({"raftpg"})
    exclusive = True

    @classmethod
    def plan(cls, rng: random.Random, ttl_s: float) -> tuple[float, dict[str, Any]]:
        # the window stays open a while after the new primary answers: a stale primary that kept taking
        # writes, or a write lost across the change, shows in those seconds. A raftpg switchover takes
        # ~0.2 s, so a window that closed at once held too few writes to judge (admin-s8: 66 < 200)
        return rng.uniform(3.0, 8.0), {}

    def request(self, primary: str, candidate: str) -> tuple[int, Any]:
        return self.pg_cluster.api(primary, "POST", "/switchover", {"leader": primary, "candidate": candidate},
                                   timeout_s=30)

    def pick(self) -> tuple[str, str]:
        """A candidate the agents would accept: in synchronous mode only a synchronous standby may take
        over, so drawing among all replicas made most switchovers of a synchronous run a 412 that changed
        nothing (campaign cells UNKNOWN for want of a primary change). The primary's ``GET /cluster`` says
        who is a sync standby and who streams; if it cannot be read, any other data node."""
        primary = self.resolve("primary")
        candidates = [n for n in self.pg_cluster.data_names if n != primary]
        if not candidates:
            raise FaultError("no candidate")
        try:
            code, body = self.pg_cluster.api(primary, "GET", "/cluster")
        except Exception:  # noqa: BLE001 - a failed read only widens the draw
            code, body = 0, None
        return primary, self.env.rng.choice(eligible_candidates(body if code == 200 else None, candidates))

    RETRY_S = 6.0  # a request refused for want of an eligible candidate is made again for this long

    def start(self) -> dict[str, Any]:
        # Right after a kill a synchronous primary names itself alone in the sync key until a standby has
        # caught up, and refuses every candidate (412 "not eligible"): a switchover drawn then changed
        # nothing (campaign cell kill-s8: two refusals, one primary for the whole run, UNKNOWN). Ask again
        # for a few seconds, drawing the candidate afresh each time.
        deadline = time.monotonic() + self.RETRY_S
        while True:
            primary, self.candidate = self.pick()
            code, body = self.request(primary, self.candidate)
            if not (not_eligible_yet(code, body) and time.monotonic() < deadline):
                break
            time.sleep(0.5)
        self.code = code
        if 400 <= code < 500:  # a definite refusal changed nothing: not an injected fault
            raise FaultError(f"refused with {code}: {body}")
        return {"from": primary, "candidate": self.candidate, "status": code,
                "answer": body if isinstance(body, str | dict | None) else str(body)}

    def verify(self) -> tuple[bool, dict[str, Any]]:
        cluster = self.pg_cluster
        t0 = time.monotonic()
        done = wait_until(lambda: cluster.primary() == self.candidate, 30, 0.25)
        return bool(done), {"http_status": self.code, "new_primary_after_s": round(time.monotonic() - t0, 2)
                            if done else None}


def not_eligible_yet(code: int, body: Any) -> bool:
    """A refusal that may pass in a moment: no candidate is eligible now (raftpg answers 412 "candidate X
    is not eligible: ..."); any other refusal stands."""
    return code == 412 and "is not eligible" in str(body)


def eligible_candidates(cluster: Any, candidates: list[str]) -> list[str]:
    """Among ``candidates``, the synchronous standbys of a ``GET /cluster`` body, else its streaming
    replicas, else all of them (an unreadable body)."""
    if not isinstance(cluster, dict) or not isinstance(cluster.get("members"), list):
        return candidates
    members = {m.get("name"): m for m in cluster["members"] if isinstance(m, dict)}
    sync = [n for n in candidates if members.get(n, {}).get("role") in ("sync_standby", "quorum_standby")]
    streaming = [n for n in candidates if members.get(n, {}).get("state") == "streaming"]
    return sync or streaming or candidates


class Failover(Switchover):
    name = "failover"

    def request(self, primary: str, candidate: str) -> tuple[int, Any]:
        # force: Patroni-style manual failover even though the primary is healthy (it must demote first)
        return self.pg_cluster.api(candidate, "POST", "/failover", {"candidate": candidate, "force": True},
                                   timeout_s=30)


class KillDuringSwitchover(Switchover):
    """``POST /switchover``, then, after a drawn delay of 0-1 s, a kill of the old or the new primary (the
    agent alone, or agent and PostgreSQL together); the killed node is started again at the end."""

    name = "kill-during-switchover"

    @classmethod
    def plan(cls, rng: random.Random, ttl_s: float) -> tuple[float, dict[str, Any]]:
        return rng.uniform(2, ttl_s), {"delay_s": round(rng.uniform(0, 1), 3), "victim": rng.choice(["old", "new"]),
                                       "how": rng.choice(["agent", "node"])}

    def start(self) -> dict[str, Any]:
        cluster = self.pg_cluster
        primary, self.candidate = self.pick()
        self.answer: dict[str, Any] = {}

        def post() -> None:
            self.answer["status"], self.answer["body"] = self.request(primary, self.candidate)

        self.poster = threading.Thread(target=post, daemon=True)
        self.poster.start()
        time.sleep(float(self.params.get("delay_s", 0.5)))
        self.victim = primary if self.params.get("victim", "old") == "old" else self.candidate
        if self.params.get("how", "node") == "node":
            self.details = crash_node(cluster, self.victim)
        else:
            self.details = {"victim": self.victim, "agent": cluster.kill(self.victim), "postmaster": None}
        if not self.details.get("agent"):
            raise FaultError(f"{self.victim} was not running")
        return {"from": primary, "candidate": self.candidate, "killed": self.params.get("victim"), **self.details,
                "delay_s": self.params.get("delay_s"), "status_so_far": self.answer.get("status")}

    def verify(self) -> tuple[bool, dict[str, Any]]:
        pids = [p for p in (self.details["agent"], self.details["postmaster"]) if p]
        return all_gone(pids), {"states": {p: proc_state(p) for p in pids}}

    def stop(self) -> dict[str, Any]:
        self.cluster.start(self.victim)
        self.poster.join(35)
        body = self.answer.get("body")
        return {"victim": self.victim, "switchover_status": self.answer.get("status"),
                "switchover_answer": body if isinstance(body, str | dict | None) else str(body)}


class RestartCluster(Fault):
    name = "restart-cluster"
    clean = False
    exclusive = True

    @classmethod
    def plan(cls, rng: random.Random, ttl_s: float) -> tuple[float, dict[str, Any]]:
        return rng.uniform(1, 5), {"stagger_s": [round(rng.uniform(0, 3), 2) for _ in range(16)]}

    def crash_all(self) -> list[int]:
        cluster = self.cluster
        pids = [p for p in (cluster.pid(n) for n in cluster.names) if p]
        if self.clean:
            threads = [threading.Thread(target=cluster.stop, args=(n,), daemon=True) for n in cluster.names]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            return pids
        if isinstance(cluster, RaftpgCluster):
            for n in cluster.names:
                sup = cluster.supervisor_pid(n)
                if sup:
                    cluster.pause_pid(sup)  # a crash: nobody fences, everything dies at once
            for n in cluster.data_names:
                cluster.kill_postgres(n)
        for n in cluster.names:
            cluster.kill(n)
        cluster.resume_all()
        return pids

    def restart_all(self) -> list[str]:
        order = list(self.cluster.names)
        self.env.rng.shuffle(order)
        staggers = list(self.params.get("stagger_s", [])) or [0.0] * len(order)
        for i, name in enumerate(order):
            if i:
                time.sleep(min(3.0, staggers[i % len(staggers)]))
            self.cluster.start(name)
        return order

    def start(self) -> dict[str, Any]:
        self.pids = self.crash_all()
        return {"pids": self.pids}

    def verify(self) -> tuple[bool, dict[str, Any]]:
        gone = all_gone(self.pids, 10)
        return gone, {"states": {p: proc_state(p) for p in self.pids}}

    def stop(self) -> dict[str, Any]:
        return {"order": self.restart_all()}


class StopCluster(RestartCluster):
    name = "stop-cluster"
    clean = True


class RestartLoop(RestartCluster):
    """A crash-restart loop: every node crashed and restarted ``cycles`` times in a row (3-6), the next crash
    coming 1-8 s after the restart, healthy or not (recovery, rewind or an election interrupted)."""

    name = "restart-loop"

    @classmethod
    def plan(cls, rng: random.Random, ttl_s: float) -> tuple[float, dict[str, Any]]:
        cycles = rng.randint(3, 6)
        return 1.0, {"stagger_s": [round(rng.uniform(0, 2), 2) for _ in range(16)],
                     "up_s": [round(rng.uniform(1, 8), 2) for _ in range(cycles - 1)]}

    def verify(self) -> tuple[bool, dict[str, Any]]:
        ok, _ = super().verify()
        verified = [ok]
        for up_s in self.params.get("up_s", []):
            self.restart_all()
            time.sleep(up_s)
            self.pids = self.crash_all()
            verified.append(super().verify()[0])
        return all(verified), {"cycles": len(verified), "verified": sum(verified)}


class DoubleFailover(Fault):
    """Crash the primary A (agent and PostgreSQL: its unreplicated tail stays on its disk), wait for a new
    primary B, crash B 0.5-3 s after it answers, bring A back 1-5 s later; B comes back at the end. A correct
    cluster never lets A continue its old timeline once B acknowledged writes (a rolled-back term: the
    no-concurrent-primaries checker's stale-epoch and timeline rules)."""

    name = "double-failover"
    kinds = frozenset({"raftpg"})
    exclusive = True

    @classmethod
    def plan(cls, rng: random.Random, ttl_s: float) -> tuple[float, dict[str, Any]]:
        return rng.uniform(ttl_s, 2 * ttl_s), {"second_after_s": round(rng.uniform(0.5, 3), 2),
                                               "back_after_s": round(rng.uniform(1, 5), 2)}

    def start(self) -> dict[str, Any]:
        cluster = self.pg_cluster
        self.first = self.resolve("primary")
        self.second: str | None = None
        self.first_kill = crash_node(cluster, self.first)
        return {"first": self.first, **{f"first_{k}": v for k, v in self.first_kill.items() if k != "victim"}}

    def verify(self) -> tuple[bool, dict[str, Any]]:
        cluster = self.pg_cluster
        pids = [p for p in (self.first_kill["agent"], self.first_kill["postmaster"]) if p]
        first_gone = all_gone(pids)
        t0 = time.monotonic()
        found = wait_until(lambda: [n for n in cluster.primaries(timeout_s=0.5) if n != self.first],
                           3 * self.env.ttl_s + 15, 0.2)
        evidence: dict[str, Any] = {"first_gone": first_gone}
        if not found:
            cluster.start(self.first)
            evidence.update(second=None, note="no new primary appeared: the first was restarted")
            return False, evidence
        self.second = found[0]
        evidence["second"], evidence["second_after_s"] = self.second, round(time.monotonic() - t0, 2)
        time.sleep(float(self.params.get("second_after_s", 1.0)))
        second_kill = crash_node(cluster, self.second)
        second_pids = [p for p in (second_kill["agent"], second_kill["postmaster"]) if p]
        second_gone = all_gone(second_pids)
        time.sleep(float(self.params.get("back_after_s", 2.0)))
        cluster.start(self.first)
        evidence.update(second_gone=second_gone, first_restarted=True)
        return first_gone and second_gone, evidence

    def stop(self) -> dict[str, Any]:
        for name in (self.first, self.second):
            if name is not None:
                self.cluster.start(name)
        return {"primary_now": self.pg_cluster.primary()}
