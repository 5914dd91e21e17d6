"""Client workloads that record Jepsen-shaped histories (``jepsen_lite.history``) while the nemesis runs.

**Set** (FAULTS.md W1 + W3): every client inserts unique values with its own psycopg connection,
``INSERT INTO jl_set(v) VALUES (%s) RETURNING <identity>``, the identity being what the server says about
itself: ``current_setting('cluster_name')`` (raftpg sets it to the member name) as ``primary``, the
timeline (first 8 hex digits of ``pg_walfile_name(pg_current_wal_lsn())``) and ``system_identifier``. Writes
go to every node directly (§5.1): ``pinned_per_node`` clients per node, plus ``followers`` that write
wherever ``GET /primary`` answers 200. After heal + settle, ``read_all`` reads the whole table from every
node (``read-all``, one per node).

Outcome rules (§5.2), per insert:

- ``ok``: the statement returned its row and no sync-replication cancellation WARNING arrived;
- ``fail`` (definitely not applied): no connection could be made (nothing was sent), or the server refused
  the statement before executing it: read-only standby (25006), cannot connect now (57P03), too many
  connections (53300), unknown table (42P01), duplicate value (23505);
- ``info`` (unknown) for everything else: a timeout, a reset or any error after the statement was sent, and
  a commit the server only confirmed with "canceling wait for synchronous replication" (it committed
  locally but may not have replicated).

Ops running longer than ``op_timeout_s`` are cancelled (a cancel request), and ``KILL_AFTER_S`` later their
socket is shut down, so no client hangs; both give ``info``.

**Register** (W4) against ``raftpg.testing.raft_driver`` nodes: ``read`` (linearizable unless
``stale_reads``, a mutant that reads local state and must be caught), ``write`` and ``cas`` on one key at a
time, rotating to a new key every ``ops_per_key`` ops to keep the WGL search small (≤ 5 clients). Values
are small integers (strings on the wire). An error the driver marks ``indeterminate`` is ``info``; a refused
connection is ``fail`` (nothing sent); a timeout or reset is ``info``; a failed guard of a ``cas`` is ``fail``.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import psycopg

from jepsen_lite.cluster import KV_CONTROL_PORT, KvCluster, RaftpgCluster
from jepsen_lite.history import HistoryWriter

log = logging.getLogger(__name__)

KILL_AFTER_S = 4.0
# what the server says about itself, read in the writing transaction (FAULTS.md W3): the address it was
# reached on (the harness maps it to the node: cluster_name is the scope, as in Patroni), its timeline,
# system identifier, and the lease epoch raftpg publishes at promotion (NULL/empty before that)
IDENTITY_SQL = ("host(inet_server_addr()), pg_walfile_name(pg_current_wal_lsn()), "
                "(SELECT system_identifier FROM pg_control_system()), "
                "current_setting('raftpg.leader_epoch', true)")
INSERT_SQL = f"INSERT INTO jl_set (v) VALUES (%s) RETURNING {IDENTITY_SQL}"
DEFINITE_SQLSTATES = frozenset({"25006", "57P03", "53300", "42P01", "23505"})
SYNC_CANCEL_MARKERS = ("synchronous replication", "committed locally")
READ_PROCESS_BASE = 10_000
EXTRA_PROCESS_BASE = 20_000


def classify_error(exc: BaseException, sent: bool) -> str:
    """``fail`` only when the insert definitely did not take effect, else ``info``."""
    if not sent:
        return "fail"
    sqlstate = getattr(exc, "sqlstate", None)
    return "fail" if sqlstate in DEFINITE_SQLSTATES else "info"


def identity(row: tuple[Any, ...], name_of: Callable[[str], str | None] = lambda _addr: None) -> dict[str, Any]:
    """The op fields of an ``IDENTITY_SQL`` row: primary (the node whose address accepted the write, via
    ``name_of``; the address itself if unknown), timeline, sysid and, once the agent publishes it
    (``raftpg.leader_epoch``, the leader-key revision of this primary's promotion), lease_epoch."""
    addr, walfile, sysid, epoch = row[:4]
    fields: dict[str, Any] = {"primary": name_of(str(addr)) or str(addr), "timeline": int(walfile[:8], 16),
                              "sysid": str(sysid)}
    if epoch not in (None, ""):
        fields["lease_epoch"] = int(epoch) if str(epoch).isdigit() else str(epoch)
    return fields


def short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    sqlstate = getattr(exc, "sqlstate", None)
    return f"{type(exc).__name__}{f' {sqlstate}' if sqlstate else ''}: {text}"[:200]


class Client(threading.Thread):
    """One workload process: a thread with its own connection, one op at a time."""

    def __init__(self, process: int, history: HistoryWriter, stop: threading.Event, interval_s: float,
                 op_timeout_s: float, rng: random.Random) -> None:
        super().__init__(name=f"client-{process}", daemon=True)
        self.process = process
        self.history = history
        self.stop_event = stop
        self.interval_s = interval_s
        self.op_timeout_s = op_timeout_s
        self.rng = rng
        self.deadline: float | None = None  # monotonic deadline of the op in flight
        self.cancelled = False
        self.ops = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                ok = self.step()
            except Exception:  # noqa: BLE001 - a harness bug must not silently stop a client
                log.exception("client %s crashed; stopping it", self.process)
                return
            self.ops += 1
            pause = self.interval_s * (0.5 + self.rng.random())
            self.stop_event.wait(pause if ok else max(pause, 0.2))
        self.close()

    def step(self) -> bool:
        raise NotImplementedError

    def watchdog(self, now: float) -> None:
        """Called from the watchdog thread: cancel / break an op past its deadline."""

    def close(self) -> None:
        pass


class SetClient(Client):
    def __init__(self, process: int, history: HistoryWriter, stop: threading.Event, interval_s: float,
                 op_timeout_s: float, rng: random.Random, cluster: RaftpgCluster, values: Callable[[], int],
                 node: str | None, follower_cache: PrimaryCache | None) -> None:
        super().__init__(process, history, stop, interval_s, op_timeout_s, rng)
        self.cluster = cluster
        self.values = values
        self.node = node  # None: follow the primary
        self.follower_cache = follower_cache
        self.conn: psycopg.Connection | None = None
        self.conn_node: str | None = None
        self.sync_warning = False
        self._lock = threading.Lock()

    def target(self) -> str | None:
        if self.node is not None:
            return self.node
        assert self.follower_cache is not None
        return self.follower_cache.get()

    def _on_notice(self, diag: psycopg.errors.Diagnostic) -> None:
        message = (diag.message_primary or "") + " " + (diag.message_detail or "")
        if any(marker in message for marker in SYNC_CANCEL_MARKERS):
            self.sync_warning = True

    def _connect(self, node: str) -> psycopg.Connection:
        if self.conn is not None and self.conn_node == node and not self.conn.closed:
            return self.conn
        self.close()
        conn = psycopg.connect(self.cluster.dsn(node), autocommit=True)
        conn.add_notice_handler(self._on_notice)
        with self._lock:
            self.conn, self.conn_node = conn, node
        return conn

    def step(self) -> bool:
        node = self.target()
        value = self.values()
        self.history.append(self.process, "invoke", "insert", value, node=node or "primary?")
        if node is None:
            self.history.append(self.process, "fail", "insert", value, node="primary?", error="no primary found")
            return False
        sent = False
        self.cancelled, self.sync_warning = False, False
        self.deadline = time.monotonic() + self.op_timeout_s
        try:
            conn = self._connect(node)
            sent = True
            row = conn.execute(INSERT_SQL, (value,)).fetchone()
        except Exception as exc:  # noqa: BLE001 - every failure is classified, none is fatal
            self.deadline = None
            outcome = classify_error(exc, sent)
            self.history.append(self.process, outcome, "insert", value, node=node, error=short_error(exc))
            if sent:
                self.close()
            if self.follower_cache is not None:
                self.follower_cache.invalidate(node)
            return False
        self.deadline = None
        if row is None or self.sync_warning or self.cancelled:
            why = "sync replication wait cancelled (committed locally only)" if self.sync_warning else \
                "cancelled by the harness" if self.cancelled else "no row returned"
            self.history.append(self.process, "info", "insert", value, node=node, error=why)
            return False
        self.history.append(self.process, "ok", "insert", value, node=node,
                            **identity(row, self.cluster.topology.name_of))
        return True

    def watchdog(self, now: float) -> None:
        deadline = self.deadline
        if deadline is None or now < deadline:
            return
        with self._lock:
            conn = self.conn
        if conn is None:
            return
        if not self.cancelled:
            self.cancelled = True
            with contextlib.suppress(Exception):
                conn.cancel_safe(timeout=2.0)
        elif now >= deadline + KILL_AFTER_S:
            with contextlib.suppress(Exception):  # break the blocked recv: the op ends as info
                sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.deadline = None

    def close(self) -> None:
        with self._lock:
            conn, self.conn, self.conn_node = self.conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


class PrimaryCache:
    """Where followers write: the node answering 200 to ``GET /primary``, re-resolved after a failure."""

    def __init__(self, cluster: RaftpgCluster, min_interval_s: float = 0.5) -> None:
        self.cluster = cluster
        self.min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._node: str | None = None
        self._resolved_at = -1e9

    def get(self) -> str | None:
        with self._lock:
            if self._node is not None:
                return self._node
            if time.monotonic() - self._resolved_at < self.min_interval_s:
                return None
            self._resolved_at = time.monotonic()
        found = self.cluster.primaries(timeout_s=1.0)
        with self._lock:
            self._node = found[0] if len(found) == 1 else None
            return self._node

    def invalidate(self, node: str) -> None:
        with self._lock:
            if self._node == node:
                self._node = None


@dataclass
class WorkloadOptions:
    pinned_per_node: int = 2
    followers: int = 1
    interval_s: float = 0.1
    op_timeout_s: float = 8.0
    kv_clients: int = 5
    ops_per_key: int = 200
    stale_reads: bool = False
    split_transfers: bool = False  # MUTANT of the bank workload: transfers not atomic


class Workload:
    """Clients + their watchdog thread; ``start``/``stop`` bounded in time."""

    def __init__(self, history: HistoryWriter, opts: WorkloadOptions, seed: int) -> None:
        self.history = history
        self.opts = opts
        self.seed = seed
        self.stop_event = threading.Event()
        self.clients: list[Client] = []
        self._process_lock = threading.Lock()
        self._extra_processes = 0
        self._watchdog = threading.Thread(target=self._watch, name="client-watchdog", daemon=True)

    def setup(self) -> None:
        pass

    def make_clients(self) -> list[Client]:
        raise NotImplementedError

    def start(self) -> None:
        self.clients = self.make_clients()
        for client in self.clients:
            client.start()
        self._watchdog.start()

    def _watch(self) -> None:
        while not self.stop_event.wait(0.25):
            now = time.monotonic()
            for client in list(self.clients):
                client.watchdog(now)

    def held_client(self, node: str, conn: psycopg.Connection) -> Client:
        """Start one more client pinned to ``node`` writing on the already open ``conn`` (a fault holding
        every connection slot keeps writing on one of them); it has its own stop event."""
        raise NotImplementedError

    def next_process(self) -> int:
        with self._process_lock:
            self._extra_processes += 1
            return EXTRA_PROCESS_BASE + self._extra_processes

    def adopt(self, client: Client) -> Client:
        """Run ``client`` under this workload's watchdog; ``stop`` stops it too. Its process id must be
        new: two threads under one id break the history's invoke/complete pairing (one of them dies)."""
        taken = {c.process for c in self.clients}
        if client.process in taken:
            raise ValueError(f"process {client.process} is already one of this workload's clients")
        self.clients.append(client)
        client.start()
        return client

    def stop(self, timeout_s: float = 30.0) -> None:
        self.stop_event.set()
        for client in self.clients:
            client.stop_event.set()
        deadline = time.monotonic() + timeout_s
        for client in list(self.clients):
            while client.is_alive() and time.monotonic() < deadline:
                client.watchdog(time.monotonic() + 3600)  # force-cancel anything in flight
                client.join(0.5)
            if client.is_alive():
                log.error("client %s did not stop within %.0fs", client.process, timeout_s)

    def ok_ops(self) -> int:
        return sum(c.ops for c in self.clients)


class SetWorkload(Workload):
    def __init__(self, history: HistoryWriter, opts: WorkloadOptions, seed: int, cluster: RaftpgCluster) -> None:
        super().__init__(history, opts, seed)
        self.cluster = cluster
        counter = itertools.count(1)
        lock = threading.Lock()

        def next_value() -> int:
            with lock:
                return next(counter)

        self.next_value = next_value

    def setup(self, timeout_s: float = 60.0) -> None:
        """Create the table on the primary and wait until every replica has it."""
        deadline = time.monotonic() + timeout_s
        primary = None
        while time.monotonic() < deadline:
            primary = self.cluster.primary()
            if primary:
                try:
                    with psycopg.connect(self.cluster.dsn(primary), autocommit=True) as conn:
                        conn.execute("CREATE TABLE IF NOT EXISTS jl_set (v bigint PRIMARY KEY)")
                    break
                except psycopg.Error as exc:
                    log.info("create table on %s: %s", primary, exc)
            time.sleep(0.5)
        else:
            raise RuntimeError(f"could not create the table within {timeout_s:g}s (primary {primary})")
        pending = list(self.cluster.data_names)
        while pending and time.monotonic() < deadline:
            pending = [n for n in pending if not self._has_table(n)]
            if pending:
                time.sleep(0.5)
        if pending:
            raise RuntimeError(f"table not replicated to {pending} within {timeout_s:g}s")

    def _has_table(self, node: str) -> bool:
        try:
            with psycopg.connect(self.cluster.dsn(node), autocommit=True) as conn:
                return conn.execute("SELECT to_regclass('jl_set') IS NOT NULL").fetchone()[0]
        except psycopg.Error:
            return False

    def make_clients(self) -> list[Client]:
        clients: list[Client] = []
        process = itertools.count(0)
        common = (self.history, self.stop_event, self.opts.interval_s, self.opts.op_timeout_s)
        for node in self.cluster.data_names:
            for _ in range(self.opts.pinned_per_node):
                p = next(process)
                clients.append(SetClient(p, *common, random.Random(f"{self.seed}-c{p}"), self.cluster,
                                         self.next_value, node, None))
        cache = PrimaryCache(self.cluster)
        for _ in range(self.opts.followers):
            p = next(process)
            clients.append(SetClient(p, *common, random.Random(f"{self.seed}-c{p}"), self.cluster,
                                     self.next_value, None, cache))
        return clients

    def held_client(self, node: str, conn: psycopg.Connection) -> Client:
        p = self.next_process()
        client = SetClient(p, self.history, threading.Event(), self.opts.interval_s, self.opts.op_timeout_s,
                           random.Random(f"{self.seed}-c{p}"), self.cluster, self.next_value, node, None)
        client.conn, client.conn_node = conn, node
        conn.add_notice_handler(client._on_notice)
        return self.adopt(client)

    def read_all(self, attempts: int = 5) -> dict[str, int | None]:
        """Final read of the whole set on every node (``read-all``); returns node -> count (None: failed)."""
        counts: dict[str, int | None] = {}
        for i, node in enumerate(self.cluster.data_names):
            process = READ_PROCESS_BASE + i
            counts[node] = None
            for _ in range(attempts):
                self.history.append(process, "invoke", "read-all", None, node=node)
                try:
                    with psycopg.connect(self.cluster.dsn(node, timeout_s=5), autocommit=True) as conn:
                        rows = conn.execute("SELECT v FROM jl_set ORDER BY v").fetchall()
                except psycopg.Error as exc:
                    self.history.append(process, "fail", "read-all", None, node=node, error=short_error(exc))
                    time.sleep(1.0)
                    continue
                values = [r[0] for r in rows]
                self.history.append(process, "ok", "read-all", values, node=node)
                counts[node] = len(values)
                break
        return counts


# ----------------------------------------------------------------------------------------------- register


class KvClient(Client):
    def __init__(self, process: int, history: HistoryWriter, stop: threading.Event, interval_s: float,
                 op_timeout_s: float, rng: random.Random, cluster: KvCluster, node: str,
                 key_of: Callable[[], str], stale_reads: bool) -> None:
        super().__init__(process, history, stop, interval_s, op_timeout_s, rng)
        self.cluster = cluster
        self.node = node
        self.key_of = key_of
        self.stale_reads = stale_reads
        self.conn: http.client.HTTPConnection | None = None

    def _request(self, method: str, path: str, body: Any = None) -> tuple[str, Any]:
        """("ok", body) | ("refused", None) | ("lost", error): lost = sent but no answer."""
        timeout_s = min(5.0, self.op_timeout_s)
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.cluster.topology.addr(self.node), KV_CONTROL_PORT,
                                                   timeout=timeout_s + 2)
            try:
                self.conn.connect()
            except OSError as exc:
                self.close()
                return "refused", short_error(exc)
        data = None
        if body is not None:
            data = json.dumps({**body, "timeout_s": timeout_s}).encode()
        else:
            path += f"&timeout_s={timeout_s:g}"
        try:
            self.conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            resp = self.conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return "lost", short_error(exc)
        try:
            return "ok", (resp.status, json.loads(raw))
        except ValueError:
            return "lost", f"undecodable answer {resp.status}"

    def step(self) -> bool:
        key = self.key_of()
        roll = self.rng.random()
        if roll < 0.4:
            f, value = "read", None
        elif roll < 0.7:
            f, value = "write", self.rng.randrange(5)
        else:
            f, value = "cas", [self.rng.randrange(5), self.rng.randrange(5)]
        self.history.append(self.process, "invoke", f, value, node=self.node, key=key)
        if f == "read":
            lin = "" if self.stale_reads else "&linearizable=1"
            status, answer = self._request("GET", f"/get?key={quote(key)}{lin}")
        elif f == "write":
            status, answer = self._request("POST", "/put", {"key": key, "value": str(value)})
        else:
            status, answer = self._request("POST", "/cas", {"key": key, "expected": str(value[0]),
                                                            "new": str(value[1])})
        outcome, out_value, error = self._outcome(f, value, status, answer)
        extra = {"error": error} if error else {}
        self.history.append(self.process, outcome, f, out_value, node=self.node, key=key, **extra)
        return outcome == "ok"

    @staticmethod
    def _outcome(f: str, value: Any, status: str, answer: Any) -> tuple[str, Any, str | None]:
        if status == "refused":
            return "fail", value, f"not sent: {answer}"
        if status == "lost":
            return ("fail" if f == "read" else "info"), value, f"no answer: {answer}"
        code, body = answer
        if code == 200 and f == "read":
            kv = body.get("kv")
            return "ok", (None if kv is None else int(kv["value"])), None
        if code == 200 and body.get("ok") is True:
            return "ok", value, None
        if code == 200 and body.get("ok") is False and f == "cas":
            return "fail", value, f"compare failed: {body.get('guard')}"
        if f == "read":
            return "fail", None, f"{code} {body.get('error')}"
        if isinstance(body, dict) and body.get("indeterminate") is False:
            return "fail", value, f"{code} {body.get('error')} (definite)"
        return "info", value, f"{code} {body.get('error') if isinstance(body, dict) else body}"

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None


class RegisterWorkload(Workload):
    def __init__(self, history: HistoryWriter, opts: WorkloadOptions, seed: int, cluster: KvCluster) -> None:
        super().__init__(history, opts, seed)
        self.cluster = cluster
        self._count = itertools.count()
        self._lock = threading.Lock()

    def key_of(self) -> str:
        with self._lock:
            n = next(self._count)
        return f"jl/r{n // self.opts.ops_per_key}"

    def make_clients(self) -> list[Client]:
        nodes = self.cluster.names
        count = min(self.opts.kv_clients, 5)
        return [KvClient(p, self.history, self.stop_event, self.opts.interval_s, self.opts.op_timeout_s,
                         random.Random(f"{self.seed}-kv{p}"), self.cluster, nodes[p % len(nodes)],
                         self.key_of, self.opts.stale_reads)
                for p in range(count)]
