"""``--workload bootstrap``: a new cluster is bootstrapped again and again, each time with a partition
(``partition-during-bootstrap``) cutting in at a drawn moment of the bootstrap (0-6 s after the start:
initdb, the initialize race, the first promotion, the replicas' base backups) and held 3-15 s.

One round: crash every node, wipe every data directory (and the Raft data, or raftpg's etcd keys), start
the nodes in a random order, cut, heal, then wait up to ``settle_s`` for a healthy cluster (one primary,
every replica streaming). The round is recorded as a ``bootstrap`` op of process ``"bootstrap"`` whose
``ok`` value says what came out: ``converged`` (and after how long), each data node's system identifier
and the primary. The ``bootstrap`` checker requires every round to converge on one system identifier: a
node that lost the initialize race while cut off must rejoin the winner (issue 10 item 8), never keep a
foreign cluster or stay out.

``foreign_scope`` is the MUTANT (canary): the last node is configured with another ``scope``, so it
bootstraps a cluster of its own; the checker must report two system identifiers.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable
from typing import Any

import psycopg

from jepsen_lite import health
from jepsen_lite.cluster import RaftpgCluster, wait_until
from jepsen_lite.faults_net import both_ways
from jepsen_lite.history import NEMESIS, HistoryWriter
from jepsen_lite.topology import Topology

PROCESS = "bootstrap"
FAULT = "partition-during-bootstrap"


class BootstrapLoop:
    def __init__(self, cluster: RaftpgCluster, topology: Topology, history: HistoryWriter,
                 say: Callable[[str], None], opts: Any) -> None:
        self.cluster, self.topology, self.history, self.say, self.opts = cluster, topology, history, say, opts
        self.rng = random.Random(opts.seed)
        if opts.foreign_scope:
            last = cluster.data_names[-1]
            cluster.config_overrides[last] = {"scope": "jl-foreign"}
            cluster.write_files(cluster.members[last])

    def run(self) -> None:
        if self.cluster.etcd is not None:  # the store outlives the rounds (each wipes raftpg's keys)
            self.cluster.etcd.start_all()
        deadline = time.monotonic() + self.opts.time_s
        round_no = 0
        while round_no == 0 or time.monotonic() + 30 < deadline:
            self.round(round_no)
            round_no += 1

    def wipe(self) -> None:
        cluster = self.cluster
        for name in cluster.names:
            cluster.kill(name)
        for name in cluster.data_names:
            cluster.kill_postgres(name)
        wait_until(lambda: all(cluster.postmaster_pid(n) is None for n in cluster.data_names), 10, 0.1)
        for name in cluster.names:
            if not cluster.members[name].witness:
                _empty(cluster.data_dir(name))
            _empty(cluster.raft_dir(name))
        if cluster.etcd is not None:
            cluster.etcd.delete_prefix()

    def round(self, round_no: int) -> None:
        names = list(self.topology.names)
        shape = "isolate one node"
        delay_s, hold_s = round(self.rng.uniform(0, 6), 2), round(self.rng.uniform(3, 15), 2)
        self.rng.shuffle(names)
        cuts = both_ways(names[:1], names[1:])
        value = {"round": round_no, "shape": shape, "delay_s": delay_s, "hold_s": hold_s}
        self.history.append(PROCESS, "invoke", "bootstrap", value)
        self.wipe()
        order = list(self.cluster.names)
        self.rng.shuffle(order)
        t0 = time.monotonic()
        for name in order:
            self.cluster.start(name)
            time.sleep(self.rng.uniform(0, 0.5))
        time.sleep(max(0.0, delay_s - (time.monotonic() - t0)))
        fault_id = {"phase": "start", "id": round_no, "cut_off": names[:1], "after_start_s": delay_s}
        self.topology.apply(cuts, FAULT)
        self.history.append(NEMESIS, "info", FAULT, fault_id)
        blocked = not self.topology.udp_delivers(names[0], names[1], tries=2, wait_s=0.25)
        self.history.append(NEMESIS, "info", FAULT, {"phase": "verify", "id": round_no, "ok": blocked})
        self.say(f"bootstrap round {round_no}: order {order}, {names[0]} cut off at {delay_s}s for {hold_s}s")
        time.sleep(hold_s)
        self.topology.heal(FAULT)
        self.history.append(NEMESIS, "info", FAULT, {"phase": "stop", "id": round_no})
        healed = time.monotonic()
        converged = wait_until(lambda: health.healthy(self.cluster), self.opts.settle_s, 1.0)
        outcome = {**value, "converged": bool(converged),
                   "converged_after_heal_s": round(time.monotonic() - healed, 2) if converged else None,
                   "primary": self.cluster.primary(), "sysids": self.sysids(), "started_in": order}
        self.history.append(PROCESS, "ok", "bootstrap", outcome)
        self.say(f"bootstrap round {round_no}: {outcome}")

    def sysids(self) -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        for name in self.cluster.data_names:
            try:
                with psycopg.connect(self.cluster.dsn(name), autocommit=True) as conn:
                    found[name] = str(conn.execute("SELECT system_identifier FROM pg_control_system()"
                                                   ).fetchone()[0])
            except psycopg.Error:
                found[name] = None
        return found


def _empty(path: Any) -> None:
    """Remove a directory's contents, keeping the directory when it is a mount point."""
    if not path.exists():
        return
    for entry in path.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    if not path.is_mount():
        shutil.rmtree(path, ignore_errors=True)
