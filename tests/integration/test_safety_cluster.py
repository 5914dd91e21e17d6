"""Safety where the agent is blind, slow or killed (issue 10), on real agents and PostgreSQL, faulted the
way users meet faults: right after the cluster became healthy, by signalling process groups as systemd
and terminals do, and while a client writes.

Timing is never asserted. Where a behaviour must not depend on lease expiry (a clean stop hands over at
once), the TTL is made long and the poll deadline shorter than it, so waiting for expiry fails the test.
Where it must not take longer than one lease (the first failover after bootstrap), the poll deadline is
shorter than the lease the bug used (30 s) but longer than the configured one (10 s).
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import psycopg
import pytest
from cluster_fixtures import streaming_replicas, try_sql, wait_primary, wait_streaming
from etcd_fixtures import etcd_binary, start_etcd

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

FAST = {"ttl": 10, "loop_wait": 1, "retry_timeout": 4}
LONG = {"ttl": 60, "loop_wait": 1, "retry_timeout": 4}


class Writer:
    """Inserts one row at a time into ``target`` (a node name, or None: whoever GET /primary names) and
    records when each row was acknowledged (monotonic)."""

    def __init__(self, cluster: Any, target: str | None = None, conn: psycopg.Connection | None = None) -> None:
        self.cluster, self.target, self.conn = cluster, target, conn
        self.acked: list[tuple[int, float, str]] = []   # (value, acknowledged at, node)
        self.next = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            node = self.target or self.cluster.primary()
            if node is None:
                self._stop.wait(0.05)
                continue
            value, self.next = self.next, self.next + 1
            try:
                if self.conn is not None:
                    self.conn.execute("INSERT INTO safety_rows(v) VALUES (%s)", (value,))
                else:
                    with psycopg.connect(self.cluster.dsn(node), autocommit=True) as conn:
                        conn.execute("INSERT INTO safety_rows(v) VALUES (%s)", (value,))
                self.acked.append((value, time.monotonic(), node))
            except psycopg.Error as exc:
                self.error = str(exc).strip()
                if self.conn is not None:
                    return  # a held session that fails is gone for good
            self._stop.wait(0.02)

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join(10)

    def acked_before(self, moment: float) -> set[int]:
        return {value for value, at, _ in self.acked if at < moment}


def leader_epoch(cluster: Any, node: str) -> int:
    """raftpg.leader_epoch: the leader key's revision the primary holds it at (jepsen-lite orders by it)."""
    value = try_sql(cluster, node, "SELECT current_setting('raftpg.leader_epoch', true)")
    assert value and value[0][0], f"{node} publishes no leader epoch"
    return int(value[0][0])


def rows_on(cluster: Any, node: str) -> set[int]:
    return {r[0] for r in try_sql(cluster, node, "SELECT v FROM safety_rows") or []}


def create_table(cluster: Any, primary: str) -> None:
    cluster.wait_for(lambda: try_sql(cluster, primary, "CREATE TABLE IF NOT EXISTS safety_rows(v int)") is not None,
                     20, "the table created on the primary")


# ------------------------------------------------------------------ item 1: a clean stop of the whole group


def raft_leader(cluster, name: str) -> str | None:  # noqa: ANN001
    status, body = cluster.api(name, "/patroni")
    return (body.get("raft") or {}).get("leader") if status == 200 and isinstance(body, dict) else None


def lead_raft(cluster, name: str) -> None:  # noqa: ANN001
    """Make ``name`` the Raft leader (the leader refuses a target that lacks its newest entry: retried)."""
    mine = cluster.nodes[name].raft_addr

    def attempt() -> bool:
        leader = raft_leader(cluster, name)
        if leader is None or leader == mine:
            return leader == mine
        leading = next((n for n in cluster.nodes if cluster.nodes[n].raft_addr == leader), None)
        if leading is not None:
            cluster.api_post(leading, "/raft/leader", {"addr": mine})
        return raft_leader(cluster, name) == mine

    cluster.wait_for(attempt, 30, f"{name} to lead Raft")


@pytest.mark.parametrize("how, sig", [("group", signal.SIGTERM), ("group", signal.SIGINT), ("tree", signal.SIGTERM)],
                         ids=["killpg-SIGTERM", "ctrl-c-SIGINT", "systemd-control-group-SIGTERM"])
def test_a_clean_stop_of_the_primary_agents_whole_group_hands_over_at_once(make_cluster, how, sig) -> None:
    """``systemctl stop`` (KillMode=control-group signals the agent, its supervisor, the postmaster and every
    backend) and Ctrl-C (the foreground process group) must release the leader key at once. (Regression:
    the supervisor fenced PostgreSQL under the agent's orderly shutdown and the agent, seeing no primary,
    kept the key: the next primary came after the whole TTL.)"""
    cluster = make_cluster(["n1", "n2", "n3"], dcs=LONG)
    cluster.start_all()
    old = wait_primary(cluster, 60)
    create_table(cluster, old)
    wait_streaming(cluster, old, {n for n in cluster.nodes if n != old}, 60)
    old_epoch = leader_epoch(cluster, old)
    # the primary leads Raft too (the slow case: its stop also needs a Raft leader elsewhere)
    lead_raft(cluster, old)
    with Writer(cluster, old) as writer:
        cluster.wait_for(lambda: len(writer.acked) >= 20, 20, "rows acknowledged")  # healthy 1-2 s
        signalled_at = time.monotonic()
        (cluster.signal_group if how == "group" else cluster.signal_tree)(old, sig)
        new = wait_primary(cluster, 30, exclude=old)  # < ttl 60: only a released key allows it
    assert cluster.procs[old].wait(60) == 0, "the agent exits cleanly"
    with open(cluster.log_path(old), encoding="utf-8", errors="replace") as log:
        stopped = log.read()
    assert "handing Raft leadership over before stopping" in stopped, "the Raft leader hands leadership over"
    assert "handed Raft leadership over to" in stopped, "the handover was confirmed"
    assert leader_epoch(cluster, new) > old_epoch, "each primary publishes a newer leader epoch"
    lost = writer.acked_before(signalled_at - 0.5) - rows_on(cluster, new)
    assert not lost, f"acknowledged rows missing on {new}: {sorted(lost)[:10]}"
    cluster.start(old)  # and it comes back as a replica
    wait_streaming(cluster, new, {old}, 90)


# ------------------------------------------------------------------ item 4: failovers across timelines


def test_after_a_promotion_the_replicas_stay_eligible_when_the_new_primary_dies(make_cluster) -> None:
    """The timeline check must not shut out healthy replicas: after a switchover (timeline 2), the
    replicas' wal receivers stop when the new primary dies, and pg_control still names timeline 1 until
    their next restartpoint. (Found by bench/safety_bench.py: with the timeline read from pg_control
    every replica looked a term behind and nobody was eligible.)"""
    cluster = make_cluster(["n1", "n2", "n3"], dcs=FAST)
    cluster.start_all()
    old = wait_primary(cluster, 60)
    create_table(cluster, old)
    wait_streaming(cluster, old, {n for n in cluster.nodes if n != old}, 60)
    cluster.signal_group(old, signal.SIGTERM)  # a clean stop: another node promotes (timeline 2)
    second = wait_primary(cluster, 30, exclude=old)
    assert cluster.procs[old].wait(60) == 0
    cluster.start(old)
    wait_streaming(cluster, second, {n for n in cluster.nodes if n != second}, 90)
    with Writer(cluster, second) as writer:
        cluster.wait_for(lambda: len(writer.acked) >= 10, 20, "rows acknowledged")
        cluster.kill(second)
        killed_at = time.monotonic()
        third = wait_primary(cluster, 30, exclude=second)  # ttl 10 after the last renewal
    lost = writer.acked_before(killed_at - 1.0) - rows_on(cluster, third)
    assert not lost, f"rows missing on {third}: {sorted(lost)[:10]}"


# ------------------------------------------------------------------ item 2: faulted right after bootstrap


@pytest.fixture(scope="module")
def etcd_endpoint() -> Any:
    if etcd_binary() is None:
        pytest.skip("Debian etcd-server is not installed")
    etcd = start_etcd()
    try:
        yield etcd.endpoint
    finally:
        etcd.cleanup()


@pytest.mark.parametrize("store", ["raft", "etcd"])
@pytest.mark.parametrize("fault", ["agent", "node"])
def test_a_primary_faulted_right_after_bootstrap_fails_over_within_a_lease_and_loses_nothing(
        make_cluster, request, store, fault) -> None:
    """Kill the new primary's agent (its supervisor fences PostgreSQL) or the whole node 3 s after it
    became primary, while a client writes. (Regression: the bootstrap cycle took a 30 s lease and slept
    10 s, so the replicas had no slots and could not stream, and the key outlived the kill by 27 s.)"""
    section = None
    if store == "etcd":
        section = {"etcd3": {"hosts": [request.getfixturevalue("etcd_endpoint")]}}
    cluster = make_cluster(["n1", "n2", "n3"], dcs=FAST, scope=f"early-{store}-{fault}", dcs_section=section)
    cluster.start_all()
    old = wait_primary(cluster, 60)
    promoted_at = time.monotonic()
    create_table(cluster, old)
    with Writer(cluster, old) as writer:
        killed_at = max(time.monotonic(), promoted_at + 3.0)
        time.sleep(killed_at - time.monotonic())  # the fault schedule: 3 s after promotion
        (cluster.kill if fault == "agent" else cluster.kill_node)(old)
        new = wait_primary(cluster, 22, exclude=old)  # ttl 10 after its last renewal, not 30
    acked = writer.acked_before(killed_at - 1.0)
    assert acked, "the client had rows acknowledged before the kill"
    lost = acked - rows_on(cluster, new)
    assert not lost, f"{len(lost)} rows acknowledged more than 1 s before the kill are missing on {new}"


# ------------------------------------------------------------------ item 3: a primary the agent cannot observe


def test_a_primary_its_agent_cannot_observe_is_demoted_before_another_takes_over(make_cluster) -> None:
    """Clients take every connection slot (the superuser-reserved ones too) and the agent's own sessions
    are terminated, so the agent can no longer query its primary, which keeps accepting writes on the
    sessions it has. The agent must not lift its fence or keep the key: it stops renewing, demotes before
    its lease could expire, and the old primary's last acknowledged write precedes the new primary's
    first. (Regression: the agent took the server for stopped, lifted the fence and kept renewing.)"""
    cluster = make_cluster(["n1", "n2", "n3"], dcs=FAST, extra={"*": {"bootstrap": {"dcs": {"postgresql": {
        "parameters": {"max_connections": 20}}}}}})
    cluster.start_all()
    old = wait_primary(cluster, 60)
    create_table(cluster, old)
    wait_streaming(cluster, old, {n for n in cluster.nodes if n != old}, 60)
    held = exhaust_connections(cluster, old)
    try:
        writer_conn = held[0]
        terminate = held[1]
        terminate.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE application_name = %s", (f"raftpg-{old}",))
        held.extend(exhaust_connections(cluster, old))  # take the freed slots before the agent can
        with Writer(cluster, old, conn=writer_conn) as writer:
            new = wait_primary(cluster, 30, exclude=old)
            first_new = first_write(cluster, new)
            cluster.wait_for(lambda: writer.error is not None, 30, "the old primary refusing writes")
        last_old = max((at for _, at, _ in writer.acked), default=float("-inf"))
        assert writer.acked, "the old primary took writes while its agent was blind"
        assert last_old < first_new, "the old primary acknowledged a write after the new primary's first"
    finally:
        for conn in held:
            conn.close()
    wait_streaming(cluster, new, {n for n in cluster.nodes if n != new}, 90)  # and it rejoins


def exhaust_connections(cluster: Any, node: str, limit: int = 40) -> list[psycopg.Connection]:
    held: list[psycopg.Connection] = []
    for _ in range(limit):
        try:
            held.append(psycopg.connect(cluster.dsn(node), autocommit=True))
        except psycopg.OperationalError:
            break
    assert held, "no connection could be opened"
    return held


def first_write(cluster: Any, node: str) -> float:
    def attempt() -> float | None:
        try:
            with psycopg.connect(cluster.dsn(node), autocommit=True) as conn:
                conn.execute("INSERT INTO safety_rows(v) VALUES (-1)")
            return time.monotonic()
        except psycopg.Error:
            return None
    return cluster.wait_for(attempt, 30, f"a write on {node}", interval_s=0.02)


# ------------------------------------------------------------------ item 13: kills in the middle of a switchover


@pytest.mark.parametrize("victim, delay_s", [("old", 0.05), ("old", 0.3), ("new", 0.05), ("new", 0.3)])
def test_every_node_streams_again_after_a_kill_in_the_middle_of_a_switchover(make_cluster, victim, delay_s) -> None:
    """A switchover is requested, and the old or the new primary is SIGKILLed (agent and PostgreSQL) a
    moment later, then started again. Every node must end up streaming from one primary, and a replica
    that does not stream must not answer GET /replica 200 meanwhile. (Regression: the rewound old primary
    ran as a replica that never streamed, its agent reporting "no action" for minutes.)"""
    cluster = make_cluster(["n1", "n2", "n3"], dcs=FAST)
    cluster.start_all()
    old = wait_primary(cluster, 60)
    create_table(cluster, old)
    others = sorted(n for n in cluster.nodes if n != old)
    wait_streaming(cluster, old, set(others), 60)
    candidate = others[0]
    request = threading.Thread(target=cluster.api_post, args=(old, "/switchover",
                                                              {"leader": old, "candidate": candidate}))
    with Writer(cluster) as writer:
        request.start()
        time.sleep(delay_s)  # the fault schedule: a kill in the middle of the switchover
        killed = old if victim == "old" else candidate
        cluster.kill_node(killed)
        request.join(30)
        cluster.start(killed)

        def converged() -> str | None:
            primary = cluster.primary()
            if primary is None or streaming_replicas(cluster, primary) != set(cluster.nodes) - {primary}:
                return None
            replicas = set(cluster.nodes) - {primary}
            return primary if all(cluster.api(n, "/replica")[0] == 200 for n in replicas) else None

        primary = cluster.wait_for(converged, 120, "one primary and two streaming replicas")
        cluster.wait_for(lambda: len(writer.acked) > 0 and writer.acked[-1][2] == primary, 30,
                         "writes on the new primary")
    for node in set(cluster.nodes) - {primary}:
        local = cluster.api(node, "/patroni")[1]
        assert local and local.get("replication_state") == "streaming", local
