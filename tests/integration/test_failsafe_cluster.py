"""failsafe_mode on real agents, real PostgreSQL and a real etcd (Debian etcd-server).

etcd is frozen (SIGSTOP: every request times out, as when the etcd cluster is down or cut off). With
failsafe_mode the primary keeps taking writes past three TTLs while every member answers POST /failsafe;
once a member stops answering it demotes, and after etcd returns a new primary has every acknowledged
row. Without failsafe_mode the same freeze demotes the primary (the control). No wall-clock figure is
asserted: each phase polls for a condition with a deadline, and "kept past three TTLs" is the condition
that writes keep succeeding until then.
"""

from __future__ import annotations

import os
import signal
import time

import psycopg
import pytest
from cluster_fixtures import sql, try_sql, wait_primary, wait_streaming
from etcd_fixtures import etcd_binary, start_etcd

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

TTL = 10
FAST = {"ttl": TTL, "loop_wait": 1, "retry_timeout": 4}


def write(cluster, name: str, value: int) -> bool:
    try:
        with psycopg.connect(cluster.dsn(name), autocommit=True, connect_timeout=2) as conn:
            conn.execute("SET statement_timeout = '2s'")
            conn.execute("INSERT INTO kept(v) VALUES (%s)", (value,))
        return True
    except psycopg.Error:
        return False


@pytest.mark.parametrize("failsafe", [True, False], ids=["failsafe_mode", "without"])
def test_a_frozen_etcd_keeps_the_primary_only_while_every_member_accepts_it(make_cluster, failsafe):
    if etcd_binary() is None:
        pytest.skip("Debian etcd-server is not installed")
    etcd = start_etcd()
    frozen = False
    try:
        cluster = make_cluster(["n1", "n2", "n3"], dcs={**FAST, "failsafe_mode": failsafe},
                               scope="failsafe" if failsafe else "no-failsafe",
                               dcs_section={"etcd3": {"hosts": [etcd.endpoint]}})
        cluster.start_all()
        primary = wait_primary(cluster, 90)
        replicas = sorted(set(cluster.nodes) - {primary})
        wait_streaming(cluster, primary, set(replicas))
        sql(cluster, primary, "CREATE TABLE kept(v int primary key)")
        if failsafe:  # every replica has read the topology the primary published
            topology = cluster.wait_for(
                lambda: all(cluster.api(n, "/failsafe")[0] == 200 and len(cluster.api(n, "/failsafe")[1]) == 3
                            for n in cluster.nodes) and cluster.api(primary, "/failsafe")[1], 30,
                "the failsafe topology on every member")
            assert sorted(topology) == sorted(cluster.nodes)
        else:
            assert cluster.api(primary, "/failsafe")[0] == 502

        acked: list[int] = []
        os.kill(etcd.pid, signal.SIGSTOP)
        frozen = True
        frozen_at = time.monotonic()
        value = 0
        # Phase 1: three TTLs. With failsafe_mode every write must succeed; without, the primary must
        # refuse writes before the phase ends (a lease is one TTL).
        while time.monotonic() < frozen_at + 3 * TTL:
            value += 1
            if write(cluster, primary, value):
                acked.append(value)
            elif failsafe:
                pytest.fail(f"failsafe_mode: write {value} refused {time.monotonic() - frozen_at:.1f}s after "
                            f"etcd froze, although every member answers")
            else:
                break
            for name in replicas:
                assert cluster.api(name, "/primary")[0] != 200, f"{name} answers /primary while {primary} writes"
            time.sleep(0.1)  # paces the writer; not a synchronisation
        if not failsafe:
            assert not write(cluster, primary, -1), "without failsafe_mode the primary stopped taking writes"
            assert cluster.api(primary, "/patroni")[1].get("failsafe_mode_is_active") is None
        else:
            status = cluster.api(primary, "/patroni")[1]
            assert status.get("failsafe_mode_is_active") is True, status
            assert cluster.api(primary, "/primary")[0] == 200
            assert cluster.api(replicas[0], "/patroni")[1].get("failsafe_mode_is_active") is True
            metrics = str(cluster.api(primary, "/metrics")[1]).splitlines()
            assert [line.split()[-1] for line in metrics
                    if line.startswith("patroni_failsafe_mode_is_active")] == ["1"], metrics

            # Phase 2: one member stops answering (agent and PostgreSQL killed): the primary can no longer
            # count on everyone and must stop taking writes within its lease.
            cluster.kill_node(replicas[1])
            gone_at = time.monotonic()
            refused = cluster.wait_for(lambda: not write(cluster, primary, -2), 3 * TTL,
                                       "the primary refusing writes once a member stopped answering")
            assert refused
            assert time.monotonic() - gone_at < 3 * TTL

        # etcd returns: one primary again, and every acknowledged row is on it.
        os.kill(etcd.pid, signal.SIGCONT)
        frozen = False
        if failsafe:
            cluster.start(replicas[1])
        new_primary = wait_primary(cluster, 120)
        rows = cluster.wait_for(lambda: try_sql(cluster, new_primary, "SELECT v FROM kept"), 30, "the rows")
        assert set(acked) <= {r[0] for r in rows}, "an acknowledged write was lost"
        wait_streaming(cluster, new_primary, set(cluster.nodes) - {new_primary}, 120)
    finally:
        if frozen:
            os.kill(etcd.pid, signal.SIGCONT)
        etcd.cleanup()
