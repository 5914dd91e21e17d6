"""The bank workload (FAULTS.md W5): transfers between accounts, each in one transaction; the total never
changes, and no transfer is applied twice or in half.

Tables: ``jl_bank(id, balance)`` with ``ACCOUNTS`` accounts of ``INITIAL`` each, and ``jl_transfer(id, src,
dst, amount)``, the log of applied transfers, written in the same transaction as the two balance updates
(the updates in account order, so concurrent transfers never deadlock). The log row returns the server's
identity (``workloads.IDENTITY_SQL``: primary, timeline, sysid, lease epoch), so transfers feed the
no-concurrent-primaries checker like inserts.

History ops:

- ``bank-setup`` (process ``"bank-setup"``): value ``{"accounts": N, "initial": X}``;
- ``transfer`` [id, src, dst, amount]: ``ok`` = committed and acknowledged; ``fail`` = definitely not
  committed (any error before COMMIT was sent: PostgreSQL never commits an open transaction whose client
  went away); ``info`` = the COMMIT's outcome is unknown (an error at COMMIT, a cancelled synchronous wait);
- ``read-total`` (one reader per data node, primary or standby): value [sum of balances, count], read in
  one statement (one snapshot), ``fail`` on any error (a read changes nothing);
- ``bank-final`` (after heal + settle, one per node): value ``{"balances": [[id, balance]...],
  "transfers": [[id, src, dst, amount]...]}`` read in one REPEATABLE READ transaction.

``split_transfers`` is the MUTANT (canary): the two updates and the log row run as three separate
autocommitted statements with 20 ms between the debit and the credit, so readers see money in flight and a
crash leaves half a transfer; the bank checker must report it.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from typing import Any

import psycopg

from jepsen_lite.cluster import RaftpgCluster
from jepsen_lite.history import HistoryWriter
from jepsen_lite.workloads import (
    IDENTITY_SQL,
    READ_PROCESS_BASE,
    SYNC_CANCEL_MARKERS,  # noqa: F401 - the same rule for a cancelled synchronous wait
    Client,
    PrimaryCache,
    SetClient,
    Workload,
    WorkloadOptions,
    identity,
    short_error,
)

log = logging.getLogger(__name__)
ACCOUNTS = 8
INITIAL = 100
READER_PROCESS_BASE = 30_000
SETUP_PROCESS = "bank-setup"
DEBIT = "UPDATE jl_bank SET balance = balance - %s WHERE id = %s"
CREDIT = "UPDATE jl_bank SET balance = balance + %s WHERE id = %s"
LOG = f"INSERT INTO jl_transfer (id, src, dst, amount) VALUES (%s, %s, %s, %s) RETURNING {IDENTITY_SQL}"


class BankClient(SetClient):
    """A transfer client: SetClient's connection, notice and watchdog handling, another operation."""

    split = False

    def step(self) -> bool:
        node = self.target()
        tid = self.values()
        src, dst = self.rng.sample(range(1, ACCOUNTS + 1), 2)
        value = [tid, src, dst, self.rng.randint(1, 5)]
        self.history.append(self.process, "invoke", "transfer", value, node=node or "primary?")
        if node is None:
            self.history.append(self.process, "fail", "transfer", value, node="primary?", error="no primary found")
            return False
        self.cancelled, self.sync_warning = False, False
        self.deadline = time.monotonic() + self.op_timeout_s
        committing = False
        try:
            conn = self._connect(node)
            if self.split:
                row = self._split(conn, value)
                committing = True
            else:
                with conn.transaction():
                    row = self._statements(conn, value)
                    committing = True  # the block's exit sends COMMIT
        except Exception as exc:  # noqa: BLE001 - every failure is classified, none is fatal
            self.deadline = None
            outcome = "info" if committing or self.split else "fail"
            self.history.append(self.process, outcome, "transfer", value, node=node, error=short_error(exc))
            self.close()
            if self.follower_cache is not None:
                self.follower_cache.invalidate(node)
            return False
        self.deadline = None
        if row is None or self.sync_warning or self.cancelled:
            why = "sync replication wait cancelled (committed locally only)" if self.sync_warning else \
                "cancelled by the harness" if self.cancelled else "no row returned"
            self.history.append(self.process, "info", "transfer", value, node=node, error=why)
            return False
        self.history.append(self.process, "ok", "transfer", value, node=node,
                            **identity(row, self.cluster.topology.name_of))
        return True

    @staticmethod
    def _statements(conn: psycopg.Connection, value: list[int]) -> Any:
        tid, src, dst, amount = value
        for account in sorted((src, dst)):
            conn.execute(DEBIT if account == src else CREDIT, (amount, account))
        return conn.execute(LOG, (tid, src, dst, amount)).fetchone()

    @staticmethod
    def _split(conn: psycopg.Connection, value: list[int]) -> Any:
        tid, src, dst, amount = value
        conn.execute(DEBIT, (amount, src))
        time.sleep(0.02)
        conn.execute(CREDIT, (amount, dst))
        return conn.execute(LOG, (tid, src, dst, amount)).fetchone()


class SplitBankClient(BankClient):
    split = True


class TotalReader(Client):
    """Reads the sum of the balances on one node (primary or standby) in one statement."""

    def __init__(self, process: int, history: HistoryWriter, stop: threading.Event, interval_s: float,
                 op_timeout_s: float, rng: random.Random, cluster: RaftpgCluster, node: str) -> None:
        super().__init__(process, history, stop, interval_s, op_timeout_s, rng)
        self.cluster, self.node = cluster, node
        self.conn: psycopg.Connection | None = None

    def step(self) -> bool:
        self.history.append(self.process, "invoke", "read-total", None, node=self.node)
        try:
            if self.conn is None or self.conn.closed:
                self.conn = psycopg.connect(self.cluster.dsn(self.node), autocommit=True)
                self.conn.execute("SET statement_timeout = '4s'")
            row = self.conn.execute("SELECT sum(balance)::bigint, count(*)::int FROM jl_bank").fetchone()
        except Exception as exc:  # noqa: BLE001 - a read has no effect: any error is a fail
            self.history.append(self.process, "fail", "read-total", None, node=self.node, error=short_error(exc))
            self.close()
            return False
        self.history.append(self.process, "ok", "read-total", [row[0], row[1]], node=self.node)
        return True

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001
                pass
            self.conn = None


class BankWorkload(Workload):
    def __init__(self, history: HistoryWriter, opts: WorkloadOptions, seed: int, cluster: RaftpgCluster) -> None:
        super().__init__(history, opts, seed)
        self.cluster = cluster
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.client_cls = SplitBankClient if opts.split_transfers else BankClient

    def next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    def setup(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            primary = self.cluster.primary()
            if primary and self._create(primary):
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"could not create the bank tables within {timeout_s:g}s")
        self.history.append(SETUP_PROCESS, "invoke", "bank-setup", None, node=primary)
        self.history.append(SETUP_PROCESS, "ok", "bank-setup", {"accounts": ACCOUNTS, "initial": INITIAL},
                            node=primary)
        pending = list(self.cluster.data_names)
        while pending and time.monotonic() < deadline:
            pending = [n for n in pending if not self._has_accounts(n)]
            if pending:
                time.sleep(0.5)
        if pending:
            raise RuntimeError(f"bank tables not replicated to {pending} within {timeout_s:g}s")

    def _create(self, primary: str) -> bool:
        try:
            with psycopg.connect(self.cluster.dsn(primary), autocommit=True) as conn, conn.transaction():
                conn.execute("CREATE TABLE IF NOT EXISTS jl_bank (id int PRIMARY KEY, balance bigint NOT NULL)")
                conn.execute("CREATE TABLE IF NOT EXISTS jl_transfer (id bigint PRIMARY KEY, src int NOT NULL, "
                             "dst int NOT NULL, amount int NOT NULL)")
                conn.execute("INSERT INTO jl_bank SELECT i, %s FROM generate_series(1, %s) i "
                             "ON CONFLICT DO NOTHING", (INITIAL, ACCOUNTS))
            return True
        except psycopg.Error as exc:
            log.info("create bank tables on %s: %s", primary, exc)
            return False

    def _has_accounts(self, node: str) -> bool:
        try:
            with psycopg.connect(self.cluster.dsn(node), autocommit=True) as conn:
                return conn.execute("SELECT count(*) FROM jl_bank").fetchone()[0] == ACCOUNTS
        except psycopg.Error:
            return False

    def make_clients(self) -> list[Client]:
        clients: list[Client] = []
        process = itertools.count(0)
        common = (self.history, self.stop_event, self.opts.interval_s, self.opts.op_timeout_s)
        for node in self.cluster.data_names:
            for _ in range(self.opts.pinned_per_node):
                p = next(process)
                clients.append(self.client_cls(p, *common, random.Random(f"{self.seed}-c{p}"), self.cluster,
                                               self.next_id, node, None))
        cache = PrimaryCache(self.cluster)
        for _ in range(self.opts.followers):
            p = next(process)
            clients.append(self.client_cls(p, *common, random.Random(f"{self.seed}-c{p}"), self.cluster,
                                           self.next_id, None, cache))
        for i, node in enumerate(self.cluster.data_names):
            p = READER_PROCESS_BASE + i
            clients.append(TotalReader(p, self.history, self.stop_event, max(0.3, self.opts.interval_s * 3),
                                       self.opts.op_timeout_s, random.Random(f"{self.seed}-r{p}"), self.cluster,
                                       node))
        return clients

    def held_client(self, node: str, conn: psycopg.Connection) -> Client:
        p = self.next_process()
        client = self.client_cls(p, self.history, threading.Event(), self.opts.interval_s, self.opts.op_timeout_s,
                                 random.Random(f"{self.seed}-c{p}"), self.cluster, self.next_id, node, None)
        client.conn, client.conn_node = conn, node
        conn.add_notice_handler(client._on_notice)
        return self.adopt(client)

    def read_all(self, attempts: int = 5) -> dict[str, int | None]:
        """``bank-final`` on every node; returns node -> number of logged transfers (None: failed)."""
        counts: dict[str, int | None] = {}
        for i, node in enumerate(self.cluster.data_names):
            process, counts[node] = READ_PROCESS_BASE + i, None
            for _ in range(attempts):
                self.history.append(process, "invoke", "bank-final", None, node=node)
                try:
                    with psycopg.connect(self.cluster.dsn(node, timeout_s=5), autocommit=True) as conn:
                        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                        balances = conn.execute("SELECT id, balance FROM jl_bank ORDER BY id").fetchall()
                        log_rows = conn.execute("SELECT id, src, dst, amount FROM jl_transfer ORDER BY id").fetchall()
                        conn.execute("COMMIT")
                except psycopg.Error as exc:
                    self.history.append(process, "fail", "bank-final", None, node=node, error=short_error(exc))
                    time.sleep(1.0)
                    continue
                value = {"balances": [list(r) for r in balances], "transfers": [list(r) for r in log_rows]}
                self.history.append(process, "ok", "bank-final", value, node=node)
                counts[node] = len(log_rows)
                break
        return counts
