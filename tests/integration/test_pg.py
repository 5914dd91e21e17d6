"""raftpg.pg against real PostgreSQL, run as the postgres OS user (``run_as_postgres`` forks and switches user).

The PostgreSQL binaries come from $RAFTPG_TEST_PG_BIN, else ``pg_config --bindir``, else the newest
/usr/lib/postgresql/*/bin; the module is skipped without them. Each test uses its own ports and /tmp directory
and kills, by PID, any postmaster still alive at teardown.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from raftpg.clock import SystemClock
from raftpg.model import DataDir, PermanentSlot
from raftpg.model.lsn import parse_lsn
from raftpg.pg import Credentials, PgError, PgSettings, Postgres, conninfo_for
from raftpg.pg.pidfile import postgres_alive, read_pidfile
from raftpg.pg.process import orphans, supervisor_argv, wait_pid_gone
from raftpg.pg.slots import ensure_slots
from raftpg.testing.poll import wait_until

pytestmark = pytest.mark.integration


def _find_bin_dir() -> str | None:
    if os.environ.get("RAFTPG_TEST_PG_BIN"):
        return os.environ["RAFTPG_TEST_PG_BIN"]
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip()
        if os.path.exists(os.path.join(out, "initdb")):
            return out
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[-3]))
    return os.path.dirname(found[-1]) if found else None


BIN_DIR = _find_bin_dir()
if BIN_DIR is None:
    pytest.skip("no PostgreSQL binaries (set RAFTPG_TEST_PG_BIN)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings_for(tmp: Path, name: str, **overrides: object) -> PgSettings:
    values: dict[str, object] = dict(
        name=name, scope="demo", data_dir=str(tmp / name), bin_dir=BIN_DIR, port=free_port(),
        unix_socket_dir=str(tmp), initdb_args=("--no-sync",), parameters={"fsync": "off"},
        log_file=str(tmp / f"{name}.log"),
        superuser=Credentials("postgres", "su-secret"),  # TCP clients need SCRAM (no trust in pg_hba)
    )
    values.update(overrides)
    return PgSettings(**values)  # type: ignore[arg-type]


def poll(condition: Callable[[], object], timeout_s: float = 15.0, what: str = "condition") -> object:
    """Return condition()'s first truthy value; fail after timeout_s."""
    return wait_until(condition, timeout_s, what)


@pytest.fixture
def pg_tmp(postgres_tmp_dir: Path) -> Iterator[Path]:
    """postgres_tmp_dir, with any postmaster still running there killed (by PID) before it is removed."""
    yield postgres_tmp_dir
    for pidfile in glob.glob(str(postgres_tmp_dir / "*" / "postmaster.pid")):
        info = read_pidfile(os.path.dirname(pidfile))
        if info is not None and postgres_alive(info.pid):
            try:
                os.killpg(info.pid, signal.SIGKILL)
            except ProcessLookupError:
                os.kill(info.pid, signal.SIGKILL)
            wait_pid_gone(info.pid, 10.0, SystemClock())


def test_bootstrap_observe_stop_modes_and_callbacks(run_as_postgres, pg_tmp: Path) -> None:
    record = pg_tmp / "callbacks.txt"
    cb = f"/bin/sh -c 'echo \"$1 $2 $3\" >> {record}' callback"
    settings = settings_for(pg_tmp, "n1", callbacks={"on_start": cb, "on_stop": cb, "on_restart": cb,
                                                     "on_reload": cb})

    def body() -> None:
        pg = Postgres(settings)
        try:
            _bootstrap_and_observe(pg, settings)
            _stop_modes(pg)
            _adopt_reload_restart(pg, settings, pg_tmp)
            poll(lambda: record.exists() and record.read_text().count("on_stop primary demo") == 4,
                 what="callbacks")
            calls = record.read_text()
            assert calls.count("on_start primary demo") == 4 and calls.count("on_restart primary demo") == 1
            assert calls.count("on_reload primary demo") == 2

            aside = pg.move_data_aside()
            assert not os.path.exists(settings.data_dir) and os.path.exists(os.path.join(aside, "PG_VERSION"))
            assert aside.startswith(settings.data_dir + ".") and aside.endswith(".failed")
        finally:
            pg.stop("immediate")
            pg.close()

    run_as_postgres(body, timeout_s=90)


def test_a_crashed_postmaster_is_reported_at_once_and_a_stop_is_not(run_as_postgres, pg_tmp: Path) -> None:
    """Found at Patroni's defaults: a primary's postmaster killed with SIGKILL was restarted 4.2 s later, at
    the HA loop's next cycle (up to loop_wait, 10 s). ``on_exit`` (the node wakes its loop with it) is
    called when a supervised postmaster exits unasked, and not for a stop or a restart the agent made."""
    settings = settings_for(pg_tmp, "n1")

    def body() -> None:
        calls: list[float] = []
        pg = Postgres(settings)
        pg.on_exit = lambda: calls.append(time.monotonic())
        try:
            pg.bootstrap(timeout_s=60)
            assert pg.restart(timeout_s=30)
            pg.stop("fast")
            assert pg.start(timeout_s=30)
            killed = time.monotonic()
            os.kill(pg.process.pid, signal.SIGKILL)
            poll(lambda: calls, timeout_s=10, what="on_exit after the postmaster was killed")
            # one call, made after the kill: the restart and the stop before it (seconds earlier) made none
            assert len(calls) == 1 and calls[0] >= killed
            assert not pg.observe().running
            assert pg.start(timeout_s=30)  # a new postmaster is watched too
            os.kill(pg.process.pid, signal.SIGKILL)
            poll(lambda: len(calls) == 2, timeout_s=10, what="on_exit for the second postmaster")
        finally:
            pg.stop("immediate")
            pg.close()

    run_as_postgres(body, timeout_s=90)


def _bootstrap_and_observe(pg: Postgres, settings: PgSettings) -> None:
    assert pg.observe().data_dir is DataDir.MISSING
    sysid = pg.bootstrap(timeout_s=60)
    assert sysid.isdigit()
    local = pg.observe()
    assert local.is_primary and local.sysid == sysid and local.timeline == 1
    assert local.lsn and local.server_version and local.server_version >= 130000
    assert local.postmaster_pid == pg.process.pid and local.cluster_state == "in production"
    with pytest.raises(PgError, match="refusing to initdb"):
        pg.bootstrap()
    with pytest.raises(PgError, match="running"):
        pg.move_data_aside()
    assert oct(os.stat(settings.pgpass).st_mode & 0o777) == "0o600"
    assert os.path.exists(os.path.join(settings.data_dir, "postgresql.base.conf"))


def _stop_modes(pg: Postgres) -> None:
    sysid = pg.observe().sysid
    pg.query("CREATE TABLE t (v int)")
    pg.stop("smart", timeout_s=30)
    stopped = pg.observe()
    assert not stopped.running and stopped.postmaster_pid is None
    assert stopped.cluster_state == "shut down" and stopped.sysid == sysid and stopped.lsn

    assert pg.start(timeout_s=30)
    pg.query("INSERT INTO t VALUES (1)")
    pg.stop("immediate")
    assert pg.observe().cluster_state == "in production"  # crashed: no shutdown checkpoint
    assert pg.start(timeout_s=30)  # crash recovery
    assert pg.query("SELECT count(*) FROM t") == [(1,)]
    pg.stop("fast")
    assert pg.observe().cluster_state == "shut down"


def _adopt_reload_restart(pg: Postgres, settings: PgSettings, tmp: Path) -> None:
    # a postmaster we did not start (pg_ctl daemonizes it) is stopped and restarted under our supervisor
    subprocess.run([os.path.join(BIN_DIR, "pg_ctl"), "start", "-w", "-D", settings.data_dir, "-l",
                    str(tmp / "pg_ctl.log")], check=True, capture_output=True, timeout=30)
    foreign = read_pidfile(settings.data_dir).pid
    assert pg.start(timeout_s=30)
    assert pg.process.pid != foreign and not postgres_alive(foreign)

    bigger = dataclasses.replace(settings, parameters={**settings.parameters, "shared_buffers": "17MB"})
    # a new callback stops the one still running (Patroni's rule): let each land before the next action
    reloads = tmp / "callbacks.txt"
    assert pg.reload(bigger)
    poll(lambda: reloads.read_text().count("on_reload") == 1, what="the first on_reload callback")
    assert not pg.reload(bigger)
    poll(lambda: reloads.read_text().count("on_reload") == 2, what="the second on_reload callback")
    poll(lambda: pg.observe().pending_restart, what="pending_restart after a reload")
    assert pg.restart(timeout_s=30) and not pg.observe().pending_restart
    assert pg.query("SHOW shared_buffers") == [("17MB",)]
    pg.stop("fast")


def test_clone_stream_promote_rewind_follow(run_as_postgres, pg_tmp: Path) -> None:
    auth = dict(superuser=Credentials("postgres", "su-secret"), replication=Credentials("replicator", "re:pl\\x"),
                rewind=Credentials("rewinder", "rw-secret"))
    psql = os.path.join(BIN_DIR, "psql")
    s1 = settings_for(pg_tmp, "n1", post_bootstrap=f"{psql} -v ON_ERROR_STOP=1 -c 'CREATE TABLE t (v text)'",
                      **auth)
    s2 = settings_for(pg_tmp, "n2", **auth)

    def body() -> None:
        n1, n2 = Postgres(s1), Postgres(s2)
        try:
            _clone_and_stream(n1, n2, s1, s2)
            _slot_copies_on_the_replica(n1, n2)
            _promote_and_rewind(n1, n2, s1, s2)
        finally:
            for pg in (n1, n2):
                pg.stop("immediate")

    run_as_postgres(body, timeout_s=100)


def _clone_and_stream(n1: Postgres, n2: Postgres, s1: PgSettings, s2: PgSettings) -> None:
    with pytest.raises(PgError, match="pg_basebackup failed"):  # with progress reporting too (streamed stderr)
        n2.clone(conninfo_for("127.0.0.1", free_port(), "replicator", connect_timeout=2), timeout_s=30,
                 on_progress=lambda percent: None)
    assert not os.path.exists(s2.data_dir), "a failed clone leaves no data directory behind"

    sysid = n1.bootstrap(timeout_s=60)  # post_bootstrap creates table t through the URL it is given
    n1.query("INSERT INTO t VALUES ('before clone')")
    assert n1.ensure_slots({"n2"}) == ({"n2"}, set())
    progress: list[int] = []
    assert n2.clone(conninfo_for("127.0.0.1", s1.port, "replicator"), on_progress=progress.append) == sysid
    assert progress and progress[-1] == 100 and progress == sorted(progress), progress
    assert n2.observe().fresh_copy  # backup_label: a copy never started
    assert n2.start(conninfo_for("127.0.0.1", s1.port, "replicator"), "n2", timeout_s=30)

    def streaming_to_n2() -> bool:
        rows = n1.observe().replication
        return bool(rows) and rows[0].application_name == "n2" and rows[0].state == "streaming"

    poll(streaming_to_n2, what="pg_stat_replication row for n2 on n1")
    assert not n2.observe().fresh_copy
    replica = poll(lambda: (lambda r: r if r.streaming else None)(n2.observe()), what="n2 streaming")
    assert replica.is_replica and replica.upstream == f"127.0.0.1:{s1.port}" and replica.sysid == sysid
    assert replica.timeline == 1 and replica.receive_lsn and replica.replay_lsn
    n1.query("INSERT INTO t VALUES ('streamed')")
    poll(lambda: n2.query("SELECT count(*) FROM t") == [(2,)], what="row replicated to n2")

    n1.set_synchronous_standby_names("n2")
    assert n1.observe().synchronous_standby_names == "n2"
    poll(lambda: n1.observe().replication[0].sync_state == "sync", what="n2 synchronous")
    n1.set_synchronous_standby_names("")


def _slot_copies_on_the_replica(n1: Postgres, n2: Postgres) -> None:
    """What the primary publishes (its slots' positions) and what a replica does with it: copies of the
    slots, made on the standby and moved forward to the published positions, never past its replay
    position and never backwards (raftpg.ha.slots)."""
    published = dict(n1.observe().slots)
    assert set(published) == {"n2"} and published["n2"] > 0, published

    def restart_lsns() -> dict[str, int]:
        rows = n2.query("SELECT slot_name, restart_lsn::text FROM pg_replication_slots")
        return {str(name): parse_lsn(str(at)) for name, at in rows}

    assert n2.ensure_slots({"n3", "keep"}, frozenset({"n3"}), 600) == ({"n3", "keep"}, set())
    n1.query("INSERT INTO t VALUES ('moves the primary on')")
    n1.query("SELECT pg_switch_wal()")
    target = n1.observe().lsn
    assert target is not None
    poll(lambda: (n2.observe().replay_lsn or 0) >= target, what="n2 replayed up to the target")
    assert restart_lsns()["n3"] < target
    assert n2.advance_slots({"n3": target, "other": target}) == {"n3"}
    assert restart_lsns()["n3"] == target
    assert n2.advance_slots({"n3": target - 8}) == set(), "never backwards"
    far = target + 10**9  # past what n2 has replayed: PostgreSQL stops at the replay position
    assert n2.advance_slots({"keep": far}) == {"keep"}
    assert target <= restart_lsns()["keep"] <= (n2.observe().replay_lsn or 0) < far
    assert n2.ensure_slots(set()) == (set(), {"n3", "keep"})


def _promote_and_rewind(n1: Postgres, n2: Postgres, s1: PgSettings, s2: PgSettings) -> None:
    n1.stop("fast")
    n2.promote(timeout_s=30)
    promoted = n2.observe()
    assert promoted.is_primary and promoted.timeline == 2
    with pytest.raises(PgError, match="primary"):
        n2.follow(conninfo_for("127.0.0.1", s1.port, "replicator"))
    n2.query("INSERT INTO t VALUES ('on new primary')")

    assert n1.start(timeout_s=30)  # the old primary comes back alone and diverges
    n1.query("INSERT INTO t VALUES ('diverged')")
    n1.stop("immediate")           # and crashes: pg_rewind must recover it first

    assert not n1.rewind(conninfo_for("127.0.0.1", free_port(), "rewinder", connect_timeout=2), timeout_s=30)
    assert os.path.exists(os.path.join(s1.data_dir, "standby.signal")), "a diverged primary never restarts as one"
    assert n1.rewind(conninfo_for("127.0.0.1", s2.port, "rewinder"), timeout_s=60)
    assert n2.ensure_slots({"n1"}) == ({"n1"}, set())
    assert n1.start(conninfo_for("127.0.0.1", s2.port, "replicator"), "n1", timeout_s=30)
    following = poll(lambda: (lambda r: r if r.streaming else None)(n1.observe()), what="n1 streaming")
    assert following.timeline == 2 and following.upstream == f"127.0.0.1:{s2.port}"
    n2.query("INSERT INTO t VALUES ('after rewind')")
    poll(lambda: n1.query("SELECT count(*) FROM t WHERE v = 'after rewind'") == [(1,)], what="n1 replays n2")
    assert n1.query("SELECT v FROM t WHERE v = 'diverged'") == []

    assert n2.ensure_slots(set()) == (set(), set()), "an active slot is never dropped"
    assert n1.start(conninfo_for("127.0.0.1", s2.port, "replicator"), "n1") and not n1.follow(
        conninfo_for("127.0.0.1", s2.port, "replicator"), "n1"), "already following: nothing to change"
    assert n1.restart(timeout_s=30)
    poll(lambda: n1.observe().streaming, what="n1 streaming again after restart")
    n2.checkpoint()
    n1.stop("fast")
    poll(lambda: n2.ensure_slots(set()) == (set(), {"n1"}), what="inactive slot n1 dropped")

    n2.demote_to_replica(None, timeout_s=30)
    demoted = n2.observe()
    assert demoted.is_replica and not demoted.streaming


def test_permanent_logical_slots_made_remade_and_dropped(run_as_postgres, pg_tmp: Path) -> None:
    """The dynamic config's logical ``slots`` on a real primary: nothing is raised while wal_level cannot
    decode (the slot waits for it), made once it can, made again when its plugin changes, dropped when no
    longer wanted; a database that does not exist is logged, not raised; a slot raftpg did not make stays."""
    settings = settings_for(pg_tmp, "n1")
    cdc = PermanentSlot("cdc", "postgres", "test_decoding")

    def slots(pg: Postgres) -> set[tuple[str, str, str]]:
        rows = pg.query("SELECT slot_name, database, plugin FROM pg_replication_slots WHERE slot_type = 'logical'")
        return {(str(a), str(b), str(c)) for a, b, c in rows}

    def body() -> None:
        pg = Postgres(settings)
        try:
            pg.bootstrap(timeout_s=60)
            assert pg.query("SHOW wal_level") == [("replica",)]
            assert pg.ensure_logical_slots((cdc,)) == (set(), set()) and slots(pg) == set()
            logical = dataclasses.replace(settings, parameters={**settings.parameters, "wal_level": "logical"})
            pg.reload(logical)
            assert pg.restart(timeout_s=30)
            assert pg.ensure_logical_slots((cdc,)) == ({"cdc"}, set())
            assert slots(pg) == {("cdc", "postgres", "test_decoding")}
            assert pg.ensure_logical_slots((cdc,)) == (set(), set())
            pg.query("SELECT pg_create_logical_replication_slot('mine', 'test_decoding')")
            moved = PermanentSlot("cdc", "postgres", "pgoutput")
            missing_db = PermanentSlot("elsewhere", "no_such_db", "test_decoding")
            assert pg.ensure_logical_slots((moved, missing_db)) == ({"cdc"}, {"cdc"})
            assert slots(pg) == {("cdc", "postgres", "pgoutput"), ("mine", "postgres", "test_decoding")}
            assert pg.ensure_logical_slots(()) == (set(), {"cdc"})
            assert slots(pg) == {("mine", "postgres", "test_decoding")}, "a slot raftpg did not make stays"
        finally:
            pg.stop("immediate")
            pg.close()

    run_as_postgres(body, timeout_s=90)


def test_a_fast_stop_in_a_partition_is_escalated_and_leaves_a_clean_shutdown(run_as_postgres, pg_tmp: Path) -> None:
    """A primary that cannot renew its lease stops fast, escalated to immediate after 2 s (decide's
    DEMOTE_STOP_S). Reason: a fast shutdown writes its checkpoint at once, then waits for the connected
    standbys to confirm it; with the standby cut off by a partition (packets dropped: here an nftables rule
    on loopback, the primary's port) that lasts until TCP retransmits after the heal. Escalated, the stop
    comes back while the partition holds, and the checkpoint was written: cleanly shut down."""
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("needs root and nft (a partition on loopback)")
    auth = dict(replication=Credentials("replicator", "re-secret"))
    s1, s2 = settings_for(pg_tmp, "n1", **auth), settings_for(pg_tmp, "n2", **auth)
    ready, cut, table = pg_tmp / "standby-streams", pg_tmp / "cut", f"raftpg_test_{s1.port}"
    stopped = pg_tmp / "stopped"

    def body() -> dict[str, object]:
        n1, n2 = Postgres(s1), Postgres(s2)
        try:
            n1.bootstrap(timeout_s=60)
            n2.clone(conninfo_for("127.0.0.1", s1.port, "replicator"))
            assert n2.start(conninfo_for("127.0.0.1", s1.port, "replicator"), None, timeout_s=30)
            poll(lambda: n1.observe().replication and n1.observe().replication[0].state == "streaming",
                 what="n2 streaming")
            n1.query("CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
            ready.write_text("")
            poll(cut.exists, what="the partition")
            n1.stop("fast", 2.0)  # what the executor runs for StopPostgres("fast", ..., DEMOTE_STOP_S)
            in_partition = cut.exists()
            stopped.write_text("")
            return {"stopped_in_partition": in_partition, "state": n1.observe().cluster_state}
        finally:
            for pg in (n1, n2):
                pg.stop("immediate")

    def partition() -> None:
        poll(ready.exists, timeout_s=90, what="a streaming standby")
        rule = f"add table inet {table}; add chain inet {table} out {{ type filter hook output priority 0; }}; " \
               f"add rule inet {table} out tcp sport {s1.port} drop"
        subprocess.run(["nft", rule], check=True, timeout=10)
        cut.write_text("")
        try:  # the partition heals after 30 s (an unescalated stop would be waiting still), or once stopped
            poll(stopped.exists, timeout_s=30, what="the stop")
        except AssertionError:
            pass
        cut.unlink(missing_ok=True)  # the test's own cleanup may have healed it first
        subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True, timeout=10)

    helper = threading.Thread(target=partition, daemon=True)
    helper.start()
    try:
        outcome = run_as_postgres(body, timeout_s=120)
    finally:
        cut.unlink(missing_ok=True)  # the body reads this as "the partition still holds"
        subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True, timeout=10)
        helper.join(timeout=130)  # no helper outlives its test: its waits are bounded (90 s + 30 s)
    assert outcome == {"stopped_in_partition": True, "state": "shut down"}, outcome


def test_an_absent_members_slot_is_kept_for_member_slots_ttl(run_as_postgres, pg_tmp: Path) -> None:
    """member_slots_ttl on a real primary (wall-clock seconds passed in): a member's slot outlives its
    member key by the ttl, keeping its position for a member back from maintenance; a permanent slot taken
    out of the config goes at once; ttl 0 is the old rule (dropped with the member)."""
    settings = settings_for(pg_tmp, "n1")

    def slots(pg: Postgres) -> dict[str, str]:
        rows = pg.query("SELECT slot_name, restart_lsn::text FROM pg_replication_slots WHERE slot_type = 'physical'")
        return {str(name): str(lsn) for name, lsn in rows}

    def body() -> None:
        pg = Postgres(settings)
        try:
            pg.bootstrap(timeout_s=60)
            both = frozenset({"n2", "n3"})
            assert ensure_slots(settings, {"n2", "n3", "keep"}, members=both, retain_s=600, now=1000) == (
                {"n2", "n3", "keep"}, set())
            held = slots(pg)["n3"]
            pg.query("SELECT pg_switch_wal()")
            # n3's member key is gone (a replica stopped for maintenance); "keep" left the config
            assert ensure_slots(settings, {"n2"}, members=frozenset({"n2"}), retain_s=600, now=1300) == (set(), {"keep"})
            assert set(slots(pg)) == {"n2", "n3"}
            assert ensure_slots(settings, {"n2", "n3"}, members=both, retain_s=600, now=1500) == (set(), set())
            assert slots(pg)["n3"] == held, "back within the ttl: the same slot, still holding its WAL"
            assert ensure_slots(settings, {"n2"}, members=frozenset({"n2"}), retain_s=600, now=2099) == (set(), set())
            assert ensure_slots(settings, {"n2"}, members=frozenset({"n2"}), retain_s=600, now=2100) == (set(), {"n3"})
            assert ensure_slots(settings, set(), retain_s=0, now=2101) == (set(), {"n2"}), "ttl 0: dropped at once"
            assert slots(pg) == {}
        finally:
            pg.stop("immediate")
            pg.close()

    run_as_postgres(body, timeout_s=90)


# --- the fencing supervisor, driven directly through its stdin --------------------------------------------

@pytest.fixture
def stopped_cluster(run_as_postgres, pg_tmp: Path) -> PgSettings:
    settings = settings_for(pg_tmp, "n1")

    def body() -> None:
        pg = Postgres(settings)
        pg.bootstrap(timeout_s=60)
        pg.stop("fast")

    run_as_postgres(body, timeout_s=60)
    return settings


@pytest.fixture
def supervised(stopped_cluster: PgSettings) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """start(lease_s=None): the supervisor and its postmaster on ``stopped_cluster``, run as postgres by this
    (root) test process, which holds the supervisor's stdin as the agent would. Killed at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(lease_s: float | None = None) -> subprocess.Popen[bytes]:
        settings = stopped_cluster
        deadline = None if lease_s is None else time.monotonic() + lease_s
        argv = supervisor_argv(settings, deadline) + ["--", settings.binary("postgres"), "-D", settings.data_dir]
        user = "postgres" if os.geteuid() == 0 else None
        with open(settings.log_file, "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                    user=user, group=user, cwd=settings.data_dir)
        started.append(proc)
        poll(lambda: (info := read_pidfile(settings.data_dir)) is not None and info.status == "ready",
             what="postmaster ready")
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()  # the postmaster follows (PR_SET_PDEATHSIG)
        proc.wait(timeout=10)
        for pipe in (proc.stdin, proc.stdout):
            pipe.close()


def client(settings: PgSettings) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=settings.port, user="postgres", dbname="postgres",
                           password=settings.superuser.password, autocommit=True, connect_timeout=2)


def assert_fenced(proc: subprocess.Popen[bytes], settings: PgSettings, conn: psycopg.Connection,
                  reason: str, since: float) -> float:
    pid = read_pidfile(settings.data_dir).pid
    proc.wait(timeout=5)
    elapsed = time.monotonic() - since
    reports = proc.stdout.read().decode()
    assert f"fenced {reason}" in reports, reports
    assert not postgres_alive(pid)
    with pytest.raises(psycopg.OperationalError):
        conn.execute("INSERT INTO t VALUES (2)")
    return elapsed


def test_supervisor_fences_when_the_agent_goes_away(supervised, stopped_cluster: PgSettings) -> None:
    proc = supervised()
    with client(stopped_cluster) as conn:
        conn.execute("CREATE TABLE t (v int)")
        closed_at = time.monotonic()
        proc.stdin.close()
        elapsed = assert_fenced(proc, stopped_cluster, conn, "stdin closed", closed_at)
    print(f"fence after stdin EOF: supervisor and postmaster gone {elapsed * 1000:.0f} ms after close")
    assert elapsed < 1.5


def test_supervisor_fences_when_the_lease_expires(supervised, stopped_cluster: PgSettings) -> None:
    proc = supervised()
    with client(stopped_cluster) as conn:
        conn.execute("CREATE TABLE t (v int)")
        proc.stdin.write(b"lease 0.5\n")
        proc.stdin.flush()
        sent_at = time.monotonic()
        elapsed = assert_fenced(proc, stopped_cluster, conn, "lease expired", sent_at)
    print(f"fence after a 0.5 s lease: postmaster gone {elapsed * 1000:.0f} ms after the lease was sent")
    assert 0.5 <= elapsed < 2.0


def test_postmaster_dies_with_its_supervisor(supervised, stopped_cluster: PgSettings) -> None:
    proc = supervised()
    pid = read_pidfile(stopped_cluster.data_dir).pid
    killed_at = time.monotonic()
    proc.send_signal(signal.SIGKILL)
    poll(lambda: not postgres_alive(pid), timeout_s=3, what="postmaster gone after its supervisor got SIGKILL")
    print(f"postmaster gone {(time.monotonic() - killed_at) * 1000:.0f} ms after SIGKILL to the supervisor")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGTSTP])
def test_supervisor_ignores_the_signals_a_service_stop_or_a_terminal_sends(
        supervised, stopped_cluster: PgSettings, sig: int) -> None:
    """systemd's KillMode=control-group and a terminal signal the agent's whole group: the supervisor must
    not fence under the agent's orderly shutdown (which hands the leader key over), nor be suspended by
    Ctrl-Z while PostgreSQL runs on. It keeps following its stdin, and fences when that closes."""
    proc = supervised(lease_s=60.0)
    with client(stopped_cluster) as conn:
        conn.execute("CREATE TABLE t (v int)")
        proc.send_signal(sig)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=1.0)
        assert _process_state(proc.pid) not in ("T", "t"), "the supervisor was stopped"
        conn.execute("INSERT INTO t VALUES (1)")  # PostgreSQL still accepts writes
        closed_at = time.monotonic()
        proc.stdin.close()
        assert_fenced(proc, stopped_cluster, conn, "stdin closed", closed_at)


def _process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return stat[stat.rfind(")") + 2]


def test_supervisor_fences_at_an_absolute_deadline(supervised, stopped_cluster: PgSettings) -> None:
    """``deadline T`` is a CLOCK_MONOTONIC time, not a duration: a deadline that passed while the agent was
    busy (an initdb, a restart's shutdown) fences at once instead of granting a fresh lease."""
    proc = supervised(lease_s=60.0)
    with client(stopped_cluster) as conn:
        conn.execute("CREATE TABLE t (v int)")
        deadline = time.monotonic() - 2.0
        proc.stdin.write(f"deadline {deadline!r}\n".encode())
        proc.stdin.flush()
        elapsed = assert_fenced(proc, stopped_cluster, conn, "lease expired", deadline)
    print(f"fence at a past deadline: postmaster gone {elapsed - 2.0:.3f}s after the command")


def test_supervisor_renewed_or_unlimited_keeps_running_and_stop_is_no_fence(
        supervised, stopped_cluster: PgSettings) -> None:
    proc = supervised(lease_s=5.0)  # long enough to get through start-up; the renewals below shorten it
    with client(stopped_cluster) as conn:
        conn.execute("CREATE TABLE t (v int)")
        for _ in range(8):  # 1.6 s of renewals, each 0.5 s long
            proc.stdin.write(b"lease 0.5\n")
            proc.stdin.flush()
            with pytest.raises(subprocess.TimeoutExpired):
                proc.wait(timeout=0.2)
        proc.stdin.write(b"unlimited\nnot a command\n")
        proc.stdin.flush()
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=1.0)
        conn.execute("INSERT INTO t VALUES (1)")
    proc.stdin.write(b"stop\n")
    proc.stdin.flush()
    os.kill(read_pidfile(stopped_cluster.data_dir).pid, signal.SIGINT)  # fast shutdown, by "the agent"
    assert proc.wait(timeout=30) == 0
    reports = proc.stdout.read().decode()
    assert "fenced" not in reports and "exited 0" in reports, reports


def test_postgres_lease_and_fence_through_the_facade(run_as_postgres, stopped_cluster: PgSettings) -> None:
    def body() -> tuple[str | None, str | None]:
        pg = Postgres(stopped_cluster)
        try:
            assert pg.start(timeout_s=30, fence_deadline=time.monotonic() + 30)
            assert pg.fence_at(time.monotonic() + 0.3)
            poll(lambda: pg.process.exit_code() is not None, timeout_s=5, what="fence after lease 0.3")
            expired = pg.process.fence_reason
            assert not pg.observe().running and not pg.fence_at(time.monotonic() + 10), "no lease for a fenced postmaster"
            assert pg.start(timeout_s=30, fence_deadline=time.monotonic() + 30) and pg.unlimited()
            pg.fence()
            return expired, pg.process.fence_reason
        finally:
            pg.stop("immediate")

    expired, fenced = run_as_postgres(body, timeout_s=60)
    assert expired.startswith("lease expired") and fenced.startswith("lease expired")


def test_start_clears_backends_that_outlived_a_killed_postmaster(run_as_postgres,
                                                                 stopped_cluster: PgSettings) -> None:
    """A SIGKILLed postmaster (a node kill, the OOM killer) can leave children behind: a backend busy with a
    long query, or stopped, does not notice and keeps the shared memory attached, and PostgreSQL then refuses
    every start ("pre-existing shared memory block ... is still in use"). Regression: a node restarting its
    crashed primary failed that way every second for minutes after a kill in the middle of a switchover.
    Start (and so a restart after a crash) must clear them and come up, with the committed row intact."""
    def body() -> tuple[list[int], int, bool, list[int]]:
        pg = Postgres(stopped_cluster)
        try:
            assert pg.start(timeout_s=30)
            with client(stopped_cluster) as conn:
                conn.execute("CREATE TABLE t (v int)")
                conn.execute("INSERT INTO t VALUES (42)")
                backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
                os.kill(backend, signal.SIGSTOP)  # it will not notice its postmaster's death
                postmaster = pg.process.pid
                os.kill(postmaster, signal.SIGKILL)
                poll(lambda: pg.process.exit_code() is not None, timeout_s=10, what="the postmaster's death")
                left = orphans(stopped_cluster.data_dir)
                assert pg.start(timeout_s=60) or poll(lambda: pg.observe().running, 60, "crash recovery")
                with client(stopped_cluster) as fresh:
                    rows = [r[0] for r in fresh.execute("SELECT v FROM t").fetchall()]
                return left, backend, postgres_alive(backend), rows
        finally:
            pg.stop("immediate")

    left, backend, alive, rows = run_as_postgres(body, timeout_s=120)
    assert backend in left, "the stopped backend should have outlived its postmaster"
    assert not alive and rows == [42]


def test_a_detached_server_keeps_running_and_the_next_agent_adopts_and_fences_it(
        run_as_postgres, stopped_cluster: PgSettings) -> None:
    """A stop while the cluster is paused (an agent upgrade) detaches: PostgreSQL keeps running and taking
    writes after the agent's end of the supervisor's pipe closes. The next agent's first look adopts the
    same postmaster (no restart) under a supervisor of its own, which fences it again like any other."""
    def body() -> dict[str, object]:
        first = Postgres(stopped_cluster)
        second = Postgres(stopped_cluster)
        try:
            assert first.start(timeout_s=30, fence_deadline=time.monotonic() + 60)
            pid = first.process.pid
            first.query("CREATE TABLE t (v int)")
            old_supervisor = first.process.supervisor
            assert first.detach() and first.process is None
            closed = time.monotonic()
            poll(lambda: time.monotonic() - closed > 1.0, timeout_s=5, what="a second without the agent")
            assert postgres_alive(pid), "a detached server must not be fenced when the agent goes"
            with client(stopped_cluster) as conn:
                conn.execute("INSERT INTO t VALUES (1)")
            second.adopt_unsupervised()
            state = second.observe()
            adopted = {"supervised": state.supervised, "running": state.running, "same_pid": second.process.pid == pid}
            second.query("INSERT INTO t VALUES (2)")
            assert second.fence_at(time.monotonic() + 0.3)
            poll(lambda: not postgres_alive(pid), timeout_s=10, what="the adopted server fenced")
            poll(lambda: second.process.exit_code() is not None, timeout_s=10, what="the adopting supervisor's exit")
            adopted["fence"] = second.process.fence_reason
            poll(lambda: old_supervisor.poll() is not None, timeout_s=10, what="the detached supervisor's exit")
            adopted["after"] = second.observe().supervised
            assert second.start(timeout_s=30)
            adopted["rows"] = second.query("SELECT v FROM t ORDER BY v")
            return adopted
        finally:
            second.stop("immediate")
            first.stop("immediate")

    adopted = run_as_postgres(body, timeout_s=120)
    assert adopted["supervised"] and adopted["running"] and adopted["same_pid"], adopted
    assert str(adopted["fence"]).startswith("lease expired") and adopted["after"] is False, adopted
    assert adopted["rows"] == [(1,), (2,)], adopted
