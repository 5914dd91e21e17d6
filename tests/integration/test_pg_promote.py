"""A promote request that PostgreSQL 15 notices while a walreceiver it asked for has not started yet
(jepsen-lite defect 12: a clean stop handed over in 5.6 s). Two real PostgreSQL 15 servers, no agents.

When a stream ends, the startup process asks the postmaster for a new walreceiver and waits. If a promote
request reaches it before the postmaster's child has started (the postmaster forks the child and forwards
the request in one signal handler, so both come together), it marks the source failed, stops the
walreceiver that never ran (nobody wakes it for that), and sleeps ``wal_retrieve_retry_interval`` from the
last failure: the wake-up the request brought was used by the wait that noticed it. Any later request
wakes it. The test holds that window open: the postmaster is stopped (SIGSTOP) while the stream ends, so the
walreceiver it was asked for cannot start; the promote request is forwarded to the startup process as the
postmaster would (SIGUSR2); the replica's interval is 60 s."""

from __future__ import annotations

import importlib
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from test_pg import pg_tmp, poll, settings_for

from raftpg.clock import SystemClock
from raftpg.pg import Credentials, PgSettings, Postgres, connection, conninfo_for
from raftpg.pg.conf import read_managed_parameters
from raftpg.pg.pidfile import read_pidfile

observe_module = importlib.import_module("raftpg.pg.observe")  # raftpg.pg.observe is also a function
pg_dir = pg_tmp  # test_pg's fixture (kills any postmaster left in the directory)
pytestmark = pytest.mark.integration


class Proxy:
    """A TCP forwarder to ``port``; :meth:`hang` closes every connection and makes new ones silent."""

    def __init__(self, port: int) -> None:
        self.target, self.hanging, self.accepted = port, False, 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.open.append(client)
                if self.hanging:
                    continue  # held open, never answered: libpq waits for the server's first reply
                upstream = socket.create_connection(("127.0.0.1", self.target))
                self.open.append(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def hang(self) -> int:
        with self.lock:
            self.hanging = True
            for s in self.open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.open.clear()
            return self.accepted

    def close(self) -> None:
        self.server.close()
        with self.lock:
            for s in self.open:
                s.close()


def log_after(settings: PgSettings, start: int, text: str) -> bool:
    with open(settings.log_file, encoding="utf-8", errors="replace") as f:
        return text in f.read()[start:]


def test_a_promote_that_meets_a_walreceiver_not_yet_started_completes(run_as_postgres, pg_dir: Path) -> None:
    auth = dict(superuser=Credentials("postgres", "su-secret"), replication=Credentials("replicator", "repl"))
    s1 = settings_for(pg_dir, "n1", **auth)
    s2 = settings_for(pg_dir, "n2", parameters={"fsync": "off", "wal_retrieve_retry_interval": "60s"}, **auth)

    def body() -> None:
        n1 = Postgres(s1)
        proxy: Proxy | None = None
        postmaster = startup = mark = 0
        real_connect = connection.connect

        def connect_then_end_the_stream(*args: Any, **kwargs: Any) -> Any:
            """promote()'s connection, made while the postmaster runs; then the window is opened."""
            conn = real_connect(*args, **kwargs)
            if proxy is None or proxy.hanging:
                return conn
            os.kill(postmaster, signal.SIGSTOP)
            proxy.hang()  # the stream ends; the startup process asks for a walreceiver that cannot start

            def waiting_for_a_walreceiver() -> bool:
                if not log_after(s2, mark, "could not receive data from WAL stream"):
                    return False
                (runs,) = conn.execute("SELECT count(*) FROM pg_stat_wal_receiver").fetchone()
                (event,) = conn.execute("SELECT wait_event FROM pg_stat_activity WHERE pid = %s",
                                        (startup,)).fetchone()
                return runs == 0 and event == "RecoveryWalStream"

            poll(waiting_for_a_walreceiver, what="the startup process waiting for a walreceiver")
            return conn

        class ForwardOnce(SystemClock):
            """The first wait after the request: forward it as the postmaster does, then let it run again."""
            forwarded = False

            def sleep(self, seconds: float) -> None:
                if not self.forwarded:
                    self.forwarded = True
                    os.kill(startup, signal.SIGUSR2)
                    poll(lambda: log_after(s2, mark, "waiting for WAL to become available"),
                         what="the startup process sleeping with the request noticed")
                    os.kill(postmaster, signal.SIGCONT)
                super().sleep(seconds)

        n2 = Postgres(s2, ForwardOnce())
        try:
            n1.bootstrap(timeout_s=60)
            assert n1.ensure_slots({"n2"}) == ({"n2"}, set())
            proxy = Proxy(s1.port)
            n2.clone(conninfo_for("127.0.0.1", s1.port, "replicator"))
            assert n2.start(conninfo_for("127.0.0.1", proxy.port, "replicator"), "n2", timeout_s=30)
            poll(lambda: n2.observe().streaming, what="n2 streaming through the proxy")
            info = read_pidfile(s2.data_dir)
            assert info is not None
            postmaster = info.pid
            ((startup,),) = n2.query("SELECT pid FROM pg_stat_activity WHERE backend_type = 'startup'")
            with open(s2.log_file, encoding="utf-8", errors="replace") as f:
                mark = len(f.read())
            # promote() asks on the HA loop's kept connection: let it be made anew, through the hook
            connection.connect = observe_module.connect = connect_then_end_the_stream
            n2.close()
            try:
                n2.promote(timeout_s=20)  # asked once, PostgreSQL sleeps out its 60 s (PgError after 20)
            finally:
                connection.connect = observe_module.connect = real_connect
                os.kill(postmaster, signal.SIGCONT)
            with open(s2.log_file, encoding="utf-8", errors="replace") as f:
                log = f.read()[mark:]
            noticed, slept = log.find("received promote request"), log.find("waiting for WAL to become available")
            assert 0 <= noticed < slept < log.find("redo done"), "the window was not built: " + log
            assert n2.observe().is_primary
            n2.query("CREATE TABLE after_promote (v int)")
        finally:
            if proxy is not None:
                proxy.close()
            for pg in (n1, n2):
                pg.stop("immediate")

    run_as_postgres(body, timeout_s=150)


def test_promote_and_the_epoch_use_the_kept_connection_and_replace_a_broken_one(run_as_postgres,
                                                                                 pg_dir: Path) -> None:
    """Issue 15: a new connection starts a backend (5-15 ms on a busy machine) and a promotion opened two
    (the epoch reload, then the request), all of it switchover write gap. Both now run on the connection
    the HA loop keeps open for its observations; one that was cut since is replaced, and the promotion
    still happens exactly once."""
    auth = dict(superuser=Credentials("postgres", "su-secret"), replication=Credentials("replicator", "repl"))
    s1, s2 = settings_for(pg_dir, "n1", **auth), settings_for(pg_dir, "n2", **auth)

    def body() -> None:
        n1, n2 = Postgres(s1), Postgres(s2)
        opened: list[object] = []
        writable: list[tuple[object, str]] = []
        real_connect = connection.connect

        def counting(*args: Any, **kwargs: Any) -> Any:
            opened.append(args)
            return real_connect(*args, **kwargs)
        try:
            n1.bootstrap(timeout_s=60)
            n1.ensure_slots({"n2"})
            n2.clone(conninfo_for("127.0.0.1", s1.port, "replicator"))
            assert n2.start(conninfo_for("127.0.0.1", s1.port, "replicator"), "n2", timeout_s=30)
            poll(lambda: n2.observe().streaming, what="n2 streaming")  # the kept connection is open now
            connection.connect = observe_module.connect = counting
            try:
                n2.publish_epoch(41)
                assert opened == [], "the epoch reload opened a connection of its own"
                # cut the kept connection from outside, as a restart of the backend or an admin would
                with n2._observer.session() as kept:
                    assert kept is not None
                    backend = kept.info.backend_pid
                assert n2.query("SELECT pg_terminate_backend(%s)", (backend,)) == [(True,)]
                opened.clear()
                n2.promote(timeout_s=20, on_writable=lambda: writable.append(
                    (n2.query("SELECT pg_is_in_recovery()"),
                     read_managed_parameters(s2.data_dir).get("primary_conninfo", ""))))
            finally:
                connection.connect = observe_module.connect = real_connect
            assert len(opened) == 2, "a broken kept connection is replaced once (and on_writable's query)"
            # told as soon as it accepts writes: before the files are brought in step (10-20 ms)
            assert len(writable) == 1 and writable[0][0] == [(False,)] and writable[0][1], writable
            assert not read_managed_parameters(s2.data_dir).get("primary_conninfo")
            assert n2.observe().is_primary
            assert n2.query("SELECT current_setting('raftpg.leader_epoch')") == [("41",)]
            n2.query("CREATE TABLE after_promote (v int)")
            with open(s2.log_file, encoding="utf-8", errors="replace") as f:
                assert f.read().count("received promote request") == 1
            opened.clear()
            connection.connect = observe_module.connect = counting
            try:
                n2.promote(timeout_s=5)  # already promoted (a repeated request): done, not an error
            finally:
                connection.connect = observe_module.connect = real_connect
            assert opened == []
        finally:
            for pg in (n1, n2):
                pg.stop("immediate")

    run_as_postgres(body, timeout_s=120)
