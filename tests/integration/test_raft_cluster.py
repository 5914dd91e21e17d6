"""The embedded Raft KV with real processes on loopback: one ``raftpg.testing.raft_driver`` per node.

Each test owns its cluster (fresh ports, data dirs under tmp_path) and every process is killed by PID
at the end. Waiting is polling against a deadline; nothing here asserts speed.
"""

from __future__ import annotations

import os
import socket
import struct
import time

import pytest
from raft_helpers import FAKETIME, Cluster, Node, Processes, wait_until

pytestmark = pytest.mark.integration

# Every Raft member has a password (DESIGN.md safety rule 9); adding a member to a cluster without one
# is refused (test_raft_hardening.py).
PASSWORD = "cluster-password"


@pytest.fixture
def procs():
    owner = Processes()
    try:
        yield owner
    finally:
        owner.cleanup()


def members(node: Node) -> dict[str, bool]:
    return {m["addr"]: m["connected"] for m in node.status()["members"]}


def all_connected(node: Node, addrs: list[str]) -> bool:
    seen = members(node)
    return set(seen) == set(addrs) and all(seen.values())


# ------------------------------------------------------------------------------------------ replication


def test_replicates_survives_leader_kill_and_minority_gets_no_quorum(tmp_path, procs):
    cluster = Cluster(str(tmp_path), procs, password=PASSWORD).start()
    leader = cluster.leader()
    for i, node in enumerate(cluster.nodes):  # a write on any node (followers forward to the leader)...
        assert node.put(f"k{i}", f"v{i}").ok
    for node in cluster.nodes:  # ...is readable linearizably on every node
        assert [node.value(f"k{i}") for i in range(3)] == ["v0", "v1", "v2"]

    conflict = cluster.nodes[1].cas("k0", "not-v0", "x")
    assert conflict.status == 200 and conflict.body["ok"] is False
    assert conflict.body["guard"] == "value" and conflict.body["current"]["value"] == "v0"
    assert cluster.nodes[2].cas("k0", "v0", "v0b").ok
    assert cluster.nodes[0].cas("fresh", None, "1").ok  # null expected: must not exist
    assert cluster.nodes[0].cas("fresh", None, "2").body["guard"] == "must_not_exist"

    old_term = leader.status()["term"]
    leader.kill()
    survivors = cluster.alive
    new_leader = cluster.leader(among=survivors)
    assert new_leader is not leader and new_leader.status()["term"] > old_term
    for node in survivors:  # writes resume, through either survivor
        cluster.write_until_ok(node, f"after-{node.name}", "yes")
    assert all(n.value("k0") == "v0b" for n in survivors)  # nothing acknowledged was lost

    leader.start()  # the killed leader rejoins with its log and catches up
    cluster.converged(cluster.nodes)
    assert leader.value("after-" + survivors[0].name) == "yes"

    # a one-node minority: kill the other two; every write fails with no_quorum within its timeout
    lone = survivors[0]
    for node in cluster.nodes:
        if node is not lone:
            node.kill()
    wait_until(lambda: not any(c for a, c in members(lone).items() if a != lone.addr), 15,
               "the lone node to see its peers gone")
    for attempt in range(2):
        started = time.monotonic()
        reply = lone.put(f"minority-{attempt}", "x", timeout_s=2.0)
        elapsed = time.monotonic() - started
        assert reply.status == 503 and reply.body["error"] == "no_quorum", reply
        assert elapsed < 2.0 + 3.0, f"no_quorum came {elapsed:.1f}s after a 2s timeout"
    reply = lone.get("k0", linearizable=True, timeout_s=1.0)  # a linearizable read needs a quorum too
    assert reply.status == 503 and reply.body["error"] == "no_quorum"
    assert lone.value("k0", linearizable=False) == "v0b"  # a local read still answers


def test_restart_all_keeps_every_committed_key(tmp_path, procs):
    cluster = Cluster(str(tmp_path), procs, password=PASSWORD).start()
    cluster.leader()
    expected = {}
    for i in range(60):
        node = cluster.nodes[i % 3]
        assert node.put(f"key/{i}", f"value-{i}").ok
        expected[f"key/{i}"] = f"value-{i}"

    for node in cluster.nodes:  # clean stop: SIGTERM
        assert node.stop() == 0
    cluster.start()
    cluster.leader()
    for node in cluster.nodes:
        reply = node.request("GET", "/range?prefix=key/&linearizable=1")
        assert {kv["key"]: kv["value"] for kv in reply.body["kvs"]} == expected

    # SIGKILL all three right after a burst of acknowledged writes: the journal lives in mmap'd files,
    # so every acknowledged write is in the page cache of a majority and survives the process deaths.
    for i in range(60, 120):
        assert cluster.nodes[i % 3].put(f"key/{i}", f"value-{i}").ok
        expected[f"key/{i}"] = f"value-{i}"
    for node in cluster.nodes:
        node.kill()
    cluster.start()
    cluster.leader()
    fingerprint = cluster.converged(cluster.nodes)
    for node in cluster.nodes:
        reply = node.request("GET", "/range?prefix=key/&linearizable=1")
        assert {kv["key"]: kv["value"] for kv in reply.body["kvs"]} == expected
    assert fingerprint


def test_fsync_mode_commits_and_survives_sigkill_of_all(tmp_path, procs):
    """--fsync swaps pysyncobj's journal for a flushing one: the cluster must work exactly as before."""
    cluster = Cluster(str(tmp_path), procs, password=PASSWORD)
    for node in cluster.nodes:
        node.extra_args = ["--fsync"]
    cluster.start()
    cluster.leader()
    for i in range(30):
        assert cluster.nodes[i % 3].put(f"d/{i}", str(i)).ok
    for node in cluster.nodes:
        node.kill()
    cluster.start()
    cluster.leader()
    reply = cluster.nodes[2].request("GET", "/range?prefix=d/&linearizable=1")
    assert {kv["key"]: kv["value"] for kv in reply.body["kvs"]} == {f"d/{i}": str(i) for i in range(30)}
    cluster.converged(cluster.nodes)


# ------------------------------------------------------------------------------------------ bad peers


def test_wrong_password_is_refused_and_garbage_does_not_stop_the_node(tmp_path, procs):
    cluster = Cluster(str(tmp_path), procs, password="right-password").start()
    cluster.leader()
    assert cluster.nodes[0].put("before", "1").ok

    # n3 comes back with the wrong password: it never connects, cannot write, the other two serve on
    intruder = cluster.nodes[2]
    intruder.stop()
    intruder.password = "wrong-password"
    intruder.start()
    good = cluster.nodes[:2]
    leader = cluster.leader(among=good)
    for attempt in range(3):
        assert leader.put(f"during-{attempt}", "1").ok
        reply = intruder.put("intruder", "1", timeout_s=1.0)
        assert reply.status == 503 and reply.body["error"] == "no_quorum", reply
        assert not any(c for a, c in members(intruder).items() if a != intruder.addr)
        assert members(leader)[intruder.addr] is False
    assert intruder.value("during-0", linearizable=False) is None  # it received nothing
    wait_until(lambda: any("refused a connection" in n.log_text() or "handshake with" in n.log_text()
                           for n in good), 15, "a logged refusal of the wrong-password peer")

    # garbage on the leader's Raft port: random bytes, a 2 GiB length prefix, a negative length,
    # and a burst of connections that never say anything. The node keeps committing, same term.
    term = leader.status()["term"]
    sockets = []
    try:
        for payload in (os.urandom(4096), struct.pack("i", 2**31 - 1) + b"x" * 100_000,
                        struct.pack("i", -5) + b"junk", b"\x00" * 3):
            s = socket.create_connection(("127.0.0.1", leader.raft_port), timeout=5)
            s.sendall(payload)
            sockets.append(s)
        for _ in range(50):
            sockets.append(socket.create_connection(("127.0.0.1", leader.raft_port), timeout=5))
        for i in range(10):
            assert leader.put(f"under-garbage-{i}", "1").ok
    finally:
        for s in sockets:
            s.close()
    assert leader.status()["term"] == term and cluster.leader(among=good) is leader
    assert "did not identify" in leader.log_text() or "refused a connection" in leader.log_text()

    # with the right password it rejoins and catches up
    intruder.stop()
    intruder.password = "right-password"
    intruder.start()
    cluster.converged(cluster.nodes)
    assert intruder.value("under-garbage-9") == "1"


# ------------------------------------------------------------------------------------------ witness


def test_witness_votes_so_two_data_nodes_survive_losing_one(tmp_path, procs):
    cluster = Cluster(str(tmp_path), procs, password=PASSWORD)
    witness = cluster.nodes[2]
    witness.extra_args = ["--witness-name", "w1"]
    cluster.start()
    leader = cluster.leader()
    assert witness.status()["witness"] is True
    data = cluster.nodes[:2]
    if leader is witness:  # make a data node the leader, so its death forces an election
        assert witness.request("POST", "/transfer", {"addr": data[0].addr}).ok
        leader = cluster.leader()
    assert leader in data
    assert leader.put("before", "1").ok
    old_term = leader.status()["term"]

    leader.kill()
    other = next(n for n in data if n is not leader)
    # With one data node dead, the other can only become leader with the witness's vote, and can only
    # commit with the witness storing the entries: both are proven by a write committing.
    # Whichever of the two wins, it needed the other's vote: 2 of 3.
    new_leader = cluster.leader(among=[other, witness])
    assert new_leader.status()["term"] > old_term
    cluster.write_until_ok(other, "after", "1")
    assert witness.value("after") == "1" and other.value("before") == "1"

    leader.start()  # the dead data node comes back and catches up
    cluster.converged(cluster.nodes)
    assert leader.value("after") == "1"


# ------------------------------------------------------------------------------------------ membership


def test_add_and_remove_members_at_runtime(tmp_path, procs):
    cluster = Cluster(str(tmp_path), procs, password=PASSWORD).start()
    leader = cluster.leader()
    assert leader.put("seed", "1").ok

    n4 = cluster.new_node("n4", password=PASSWORD)
    n4.partners = [n.addr for n in cluster.nodes]
    n4.start()
    reply = leader.request("POST", "/members/add", {"addr": n4.addr, "timeout_s": 10})
    assert reply.ok, reply
    cluster.nodes.append(n4)
    assert n4.value("seed") == "1"  # linearizable on the new member: it holds the log
    wait_until(lambda: all_connected(n4, [n.addr for n in cluster.nodes]), 15, "n4 connected to all")

    # remove a follower (asked of another member), then stop it: the remaining three keep a quorum
    victim = next(n for n in cluster.nodes[:3] if n is not leader)
    asker = next(n for n in cluster.nodes if n is not victim)
    assert asker.request("POST", "/members/remove", {"addr": victim.addr, "timeout_s": 10}).ok
    victim.stop()
    remaining = [n for n in cluster.nodes if n is not victim]
    wait_until(lambda: all(victim.addr not in members(n) for n in remaining), 15, "victim gone from lists")
    cluster.write_until_ok(remaining[0], "after-remove", "1")

    # a node restarted with an out-of-date partner list (it names the removed node, not n4) still finds
    # the current members: it starts from the members it last saw
    stale = next(n for n in remaining if n is not n4 and n is not cluster.leader(among=remaining))
    assert n4.addr not in stale.partners and victim.addr in stale.partners
    stale.stop()
    stale.start()
    wait_until(lambda: all_connected(stale, [n.addr for n in remaining]), 15, "stale node rejoined")
    assert stale.value("after-remove") == "1"

    # a refusal is a clear error: removing yourself is rejected
    reply = stale.request("POST", "/members/remove", {"addr": stale.addr})
    assert reply.status == 400 and reply.body["error"] == "rejected"


def test_leader_transfer_to_a_named_member(tmp_path, procs):
    cluster = Cluster(str(tmp_path), procs, password=PASSWORD).start()
    leader = cluster.leader()
    for target in [n for n in cluster.nodes if n is not leader]:
        current = cluster.leader()
        assert current.put("x", target.name).ok  # the target is caught up once this commits
        reply = wait_until(lambda c=current, t=target: (r := c.request(
            "POST", "/transfer", {"addr": t.addr})).ok and r, 10, f"transfer to {target.name}")
        assert reply.body["leader"] == target.addr
        assert cluster.leader() is target
        assert target.put("after-transfer", target.name).ok


# ------------------------------------------------------------------------------------------ clocks


@pytest.mark.skipif(not os.path.exists(FAKETIME), reason="faketime is not installed")
def test_a_leader_with_a_skewed_clock_neither_expires_leases_early_nor_keeps_them(tmp_path, procs):
    """Wall clocks an hour ahead and an hour behind (an NTP step; monotonic untouched).

    Faking the monotonic clock as well is not tested: under libfaketime 0.9.10 a timed wait on a
    Python lock or event then never returns (libfaketime #142/#390), so no Python node can run there.
    """
    cluster = Cluster(str(tmp_path), procs, password=PASSWORD)
    ahead, behind = cluster.nodes[1], cluster.nodes[2]
    for node, offset in ((ahead, "+1h"), (behind, "-1h")):
        node.prefix = [FAKETIME, "-f", offset]
        node.env = {"FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    cluster.start()
    assert abs(ahead.status()["wall_clock"] - behind.status()["wall_clock"] - 7200) < 60  # really skewed
    ttl_s = 3.0
    for skewed in (ahead, behind):
        leader = cluster.leader()
        if leader is not skewed:
            assert leader.put("sync", skewed.name).ok
            wait_until(lambda old=leader, s=skewed: old.request("POST", "/transfer", {"addr": s.addr}).ok,
                       10, f"leadership moved to {skewed.name}")
        assert cluster.leader() is skewed
        key = f"lease-{skewed.name}"
        invoked = time.monotonic()
        assert skewed.put(key, "held", ttl_s=ttl_s).ok
        acked = time.monotonic()
        # well before the TTL (measured on the harness's clock from the acknowledgement): still there
        while time.monotonic() - acked < ttl_s * 0.5:
            assert skewed.value(key) == "held", f"lease expired early on {skewed.name}"
        wait_until(lambda k=key: cluster.nodes[0].value(k) is None, ttl_s + 15, f"{key} to expire")
        gone = time.monotonic()
        assert gone - invoked >= ttl_s, f"expired {gone - invoked:.2f}s after the put, TTL {ttl_s}s"
        assert cluster.leader() is skewed  # the skewed node really was the leader that expired it

    # a renewed lease lives on past its original TTL
    leader = cluster.leader()
    assert leader.put("renewed", "1", ttl_s=ttl_s).ok
    deadline = time.monotonic() + ttl_s * 2
    while time.monotonic() < deadline:  # renew continuously for twice the TTL
        assert leader.request("POST", "/touch", {"key": "renewed"}).ok
        assert leader.value("renewed") == "1"


# ------------------------------------------------------------------------------------------ majority loss


def test_majority_loss_recovery_keeps_data_and_takes_members_back(tmp_path, procs):
    cluster = Cluster(str(tmp_path), procs, password=PASSWORD).start()
    cluster.leader()
    for i in range(20):
        assert cluster.nodes[i % 3].put(f"data/{i}", str(i)).ok
    assert cluster.nodes[0].put("data/lease", "x", ttl_s=600).ok
    survivor, lost = cluster.nodes[0], cluster.nodes[1:]
    assert survivor.value("data/19") == "19"  # the survivor has applied everything
    for node in lost:
        node.kill()
    reply = survivor.put("doomed", "1", timeout_s=1.0)
    assert reply.status == 503 and reply.body["error"] == "no_quorum"

    # the documented procedure: stop the survivor, start it once with --force-new-cluster
    survivor.stop()
    survivor.start(["--force-new-cluster"])
    wait_until(lambda: survivor.status()["state"] == "leader", 15, "the survivor leads its new cluster")
    reply = survivor.request("GET", "/range?prefix=data/&linearizable=1")
    assert {kv["key"]: kv["value"] for kv in reply.body["kvs"]} == {
        **{f"data/{i}": str(i) for i in range(20)}, "data/lease": "x"}
    assert survivor.put("after-recovery", "1").ok
    assert any(name.startswith("before-force-new-cluster-") for name in os.listdir(survivor.data_dir))

    # the flag is one-shot: starting with it again is refused with a clear error
    survivor.stop()
    assert survivor.run_to_exit(["--force-new-cluster"]) == 2
    assert "already formed a new cluster" in survivor.log_text()

    # restart normally, even with the old (now wrong) partner list: it runs alone from its own members
    survivor.start()
    wait_until(lambda: survivor.put("alone-again", "1", timeout_s=2.0).ok, 15, "a write on the survivor")

    # add a member back: a wiped node at a new address catches up from the log, seed included
    fresh = cluster.new_node("n4", password=PASSWORD)
    fresh.partners = [survivor.addr]
    fresh.start()
    assert survivor.request("POST", "/members/add", {"addr": fresh.addr, "timeout_s": 10}).ok
    assert fresh.value("data/7") == "7" and fresh.value("after-recovery") == "1"
    assert cluster.leader(among=[survivor, fresh]) in (survivor, fresh)
    assert fresh.put("two-members", "1").ok
    assert survivor.value("two-members") == "1"


def test_bad_requests_get_clear_errors(tmp_path, procs):
    cluster = Cluster(str(tmp_path), procs, size=1, password=PASSWORD).start()
    node = cluster.leader()
    big = node.put("k", "v" * (256 * 1024 + 1))
    assert big.status == 400 and big.body["error"] == "rejected" and "over the limit" in big.body["message"]
    assert node.put("k" * 2000, "v").body["error"] == "rejected"
    assert node.put("k", "v", ttl_s=-1).body["error"] == "rejected"
    assert node.request("POST", "/put", {"key": "k"}).status == 400
    assert node.request("POST", "/put", {"key": "k", "value": "v", "guard": {"bogus": 1}}).status == 400
    assert node.request("GET", "/nope").status == 404
    assert node.request("GET", "/put").status == 405
    assert node.request("POST", "/cas", {"key": "k", "expected": None, "new": None}).status == 400
    assert node.put("k", "v").ok  # and the node still serves
    assert node.value("k") == "v"

    # a Raft port already taken is a clear error and an exit, never a retry loop
    clash = cluster.new_node("clash", raft_port=node.raft_port, password=PASSWORD)
    assert clash.run_to_exit() == 2
    assert "cannot listen on" in clash.log_text()
    assert node.stop() == 0  # SIGTERM is a clean exit
