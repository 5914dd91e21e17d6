"""``Postgres``: the facade the HA loop drives. One instance per member; safe to call from a worker thread
(state-changing methods hold one lock; ``observe`` and ``query`` take none).

Every method takes a deadline (``timeout_s``) and either returns or raises ``PgError`` with a readable message.
The configuration files are rewritten from ``settings`` (and the replica wiring passed in) before every
start, so the data directory says what the agent last decided; the replica wiring and
``synchronous_standby_names`` of a running server are read back from it, so a restarted agent carries on.

Callbacks fire from here, in the background: ``on_start``/``on_stop`` around ``start``/``stop``,
``on_restart``, ``on_reload``, ``on_role_change`` after ``promote``, ``demote_to_replica``; the role argument is
``primary`` or ``replica``.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
from collections.abc import Callable, Mapping
from typing import Any

import psycopg

from raftpg.clock import Clock, SystemClock
from raftpg.model import DataDir, DynamicConfig, LocalState, PermanentSlot
from raftpg.pg import bootstrap as boot
from raftpg.pg import rebuild
from raftpg.pg.callbacks import CallbackRunner
from raftpg.pg.conf import (
    Upstream,
    has_standby_signal,
    managed_parameters,
    read_managed_parameters,
    set_standby_signal,
    write_pg_hba,
    write_pgpass,
    write_postgresql_conf,
)
from raftpg.pg.connection import accepts_connections, as_role, promote, query, with_defaults
from raftpg.pg.controldata import data_dir_state, read_controldata
from raftpg.pg.logical_slots import keep_copies, warn_if_unready
from raftpg.pg.observe import Observer
from raftpg.pg.pidfile import live_postmaster
from raftpg.pg.process import PostmasterProcess, adopt_running, kill_orphans, signal_postmaster, stop_foreign
from raftpg.pg.settings import PgSettings
from raftpg.pg.slots import advance_slots, ensure_logical_slots, ensure_slots
from raftpg.pg.tools import Deadline, PgError

log = logging.getLogger(__name__)

EPOCH_GUC = "raftpg.leader_epoch"


class Postgres:
    def __init__(self, settings: PgSettings, clock: Clock | None = None, *,
                 settings_for: Callable[[DynamicConfig | None], PgSettings] | None = None) -> None:
        """``settings_for``: this member's settings for a cluster-wide config (None: bootstrap.dcs's)."""
        self.settings = settings
        self._settings_for = settings_for
        self._cluster_config: DynamicConfig | None = None  # the cluster-wide config last applied
        self.clock = clock or SystemClock()
        self.callbacks = CallbackRunner(settings.callbacks, settings.scope, self.clock)
        self.process: PostmasterProcess | None = None   # the postmaster this agent started, if any
        self._lock = threading.RLock()
        self._sync_names: str | None = None             # None: whatever raftpg's postgresql.conf says
        self._epoch: int | None = None                  # raftpg.leader_epoch while this node is a primary
        self._observer = Observer(settings)
        self._prober = Observer(settings)              # health checks: their own connection, no lock shared
        # Called (on a thread of its own) when a postmaster this agent supervises exits without being asked
        # to: a crash or a fence. The node wakes its HA loop with it, which restarts a crashed primary at
        # once instead of at its next cycle, up to loop_wait later (10 s at Patroni's defaults).
        self.on_exit: Callable[[], None] | None = None

    # --- looking --------------------------------------------------------------------------------------

    def observe(self, timeout_s: float = 2.0) -> LocalState:
        """PostgreSQL now (``supervised``: under this agent's fencing supervisor)."""
        self.callbacks.reap()
        state = self._observer.observe(timeout_s)
        return dataclasses.replace(state, supervised=self._supervised())

    def _supervised(self) -> bool:
        return self.process is not None and self.process.exit_code() is None

    def adopt_unsupervised(self) -> None:
        """Put a postmaster no supervisor of this agent fences (left by ``detach``, or started by hand) under
        one of its own (``--adopt``), without a restart. The HA loop calls this before each look."""
        if self._supervised() or not self._lock.acquire(blocking=False):
            return  # supervised already, or a start, stop or rewind is under way in another thread
        try:
            if not self._supervised():
                adopted = adopt_running(self.settings, self.clock)
                if adopted is not None:
                    self.process = adopted
                    self._watch(adopted)  # only the new supervisor: the old one's pid may be reused by now
        except PgError as exc:
            log.error("could not adopt the running postmaster: %s", exc)
        finally:
            self._lock.release()

    def _watch(self, process: PostmasterProcess | None) -> None:
        if process is None or self.on_exit is None:
            return

        def exited() -> None:
            on_exit = self.on_exit
            if self.process is process and on_exit is not None:  # a stop clears self.process first
                on_exit()

        process.notify_exit(exited)

    def detach(self) -> bool:
        """Leave PostgreSQL running, unfenced, when this agent stops (paused: an agent upgrade); the next agent
        adopts it (``adopt_unsupervised``). False if no supervised postmaster runs."""
        with self._lock:
            process, self.process = self.process, None
            self._observer.close()
            self._prober.close()
            if process is None or process.exit_code() is not None:
                return False
            log.warning("leaving postmaster %s running without a fence: the cluster is paused", process.pid)
            return process.detach()

    def apply_cluster_config(self, config: DynamicConfig) -> bool:
        """The cluster-wide config (parameters, pg_hba, pg_ident, recovery_conf; the local file wins) from
        the DCS: rewrite the files and reload if this member's settings change. True if they did."""
        if self._settings_for is None:
            return False
        settings, self._cluster_config = self._settings_for(config), config
        changed = settings != self.settings
        if changed:
            self.reload(settings)
        return changed

    def reconfigure(self, settings_for: Callable[[DynamicConfig | None], PgSettings]) -> None:
        """SIGHUP: the node's config file changed; settings follow it (and the last cluster-wide config)."""
        self._settings_for = settings_for
        self.reload(settings_for(self._cluster_config))

    def can_reach(self, conn_url: str, timeout_s: float = 2.0) -> bool:
        """True if the PostgreSQL ``conn_url`` names accepts a TCP connection now (a cheap probe)."""
        return accepts_connections(conn_url, timeout_s)

    def probe(self, timeout_s: float = 0.5) -> LocalState:
        """PostgreSQL's role and streaming state now (``Observer.quick``), for health checks."""
        return self._prober.quick(timeout_s)

    def query(self, sql: Any, params: Any = None, timeout_s: float = 5.0) -> list[tuple[Any, ...]]:
        """One statement as the superuser, with a statement timeout; its rows."""
        return query(self.settings, sql, params, timeout_s)

    def is_running(self) -> bool:
        """True while a postmaster runs on the data directory (ours, or one we did not start)."""
        return self._supervised() or live_postmaster(self.settings.data_dir) is not None

    # --- the supervisor's lease -------------------------------------------------------------------------

    def fence_at(self, deadline: float) -> bool:
        """Writes may continue until ``deadline`` (monotonic, on this object's clock); False if no supervised
        postmaster runs. An absolute time: however long the caller took since it computed it, the fence
        lands where the lease says."""
        return self.process is not None and self.process.fence_at(deadline)

    def unlimited(self) -> bool:
        return self.process is not None and self.process.unlimited()

    def fence(self, timeout_s: float = 5.0) -> None:
        """Immediate shutdown through the supervisor now (an expired lease of zero)."""
        with self._lock:
            if self.process is not None and self.process.fence_at(0.0):
                self.process.wait_exit(timeout_s)

    # --- lifecycle ------------------------------------------------------------------------------------

    def bootstrap(self, timeout_s: float = 120.0, fence_deadline: float | None = None) -> str:
        """initdb, start as a primary, create raftpg's roles, run post_bootstrap, mark the bootstrap finished;
        return the system identifier. The HA executor runs the same steps one by one (``initdb``, ``start``,
        ``post_bootstrap``, ``finish_bootstrap``) so it can renew its lease in between.

        Refuses (PgError) unless the data directory is missing or empty: never initdb over data. On a failure
        after initdb, PostgreSQL is stopped and the data directory left for the caller to move aside.
        """
        with self._lock:
            deadline = Deadline(self.clock, timeout_s)
            self.initdb(deadline.left())
            if not self.start(timeout_s=deadline.left(), fence_deadline=fence_deadline):
                self.stop("immediate")
                raise PgError(f"the new cluster did not accept connections within {timeout_s:g}s")
            sysid = self.post_bootstrap(deadline.left())
            self.finish_bootstrap()
            return sysid

    def initdb(self, timeout_s: float = 120.0) -> None:
        """initdb into the missing or empty data directory, and mark it as a bootstrap in progress
        (``BOOTSTRAP_MARKER``) until ``finish_bootstrap``: a data directory whose bootstrap never registered
        its cluster is moved aside by the HA loop, never adopted with roles missing."""
        with self._lock:
            state, _ = data_dir_state(self.settings)
            if state not in (DataDir.MISSING, DataDir.EMPTY):
                raise PgError(f"refusing to initdb: {self.settings.data_dir} is {state}, not missing or empty")
            boot.run_initdb(self.settings, timeout_s)
            boot.mark_bootstrap(self.settings.data_dir)
            self._sync_names = ""

    def post_bootstrap(self, timeout_s: float = 120.0) -> str:
        """On the new, running cluster: raftpg's roles and the user's post_bootstrap script; the system
        identifier. Stops PostgreSQL (immediate) if either fails."""
        with self._lock:
            deadline = Deadline(self.clock, timeout_s)
            try:
                boot.create_roles(self.settings, deadline.left())
                boot.run_post_bootstrap(self.settings, deadline.left())
            except BaseException:
                self.stop("immediate")
                raise
            return str(read_controldata(self.settings).sysid)

    def finish_bootstrap(self) -> None:
        boot.unmark_bootstrap(self.settings.data_dir)

    def start(self, as_replica_of: str | None = None, slot_name: str | None = None, *, timeout_s: float = 60.0,
              fence_deadline: float | None = None, as_replica: bool | None = None) -> bool:
        """Write the configuration and start the postmaster under the supervisor.

        A replica (``as_replica_of`` given, or ``as_replica=True`` for a standby with no primary yet) streams from
        ``as_replica_of`` (libpq URL or key=value; user and application_name default to the replication role
        and the member name) through ``slot_name``, and runs without a fence deadline. A primary runs with
        ``fence_deadline`` (monotonic, on this object's clock; None: no deadline). Returns True once connections are accepted (read-only on a replica),
        False if the postmaster still runs but is not ready at the deadline (crash recovery, or a replica not
        yet consistent: observe it again later); raises PgError if it exits or cannot start. A postmaster this
        agent did not start is stopped first (fast): only a supervised one can be fenced. Already running
        with the requested role: a replica follows ``as_replica_of`` (see ``follow``), a primary takes
        ``fence_deadline`` if given; returns True.
        """
        replica = as_replica_of is not None if as_replica is None else as_replica
        with self._lock:
            deadline = Deadline(self.clock, timeout_s)
            return self._start(as_replica_of, slot_name, replica, deadline, fence_deadline, "on_start")

    def _start(self, as_replica_of: str | None, slot_name: str | None, replica: bool, deadline: Deadline,
               fence_deadline: float | None, callback: str | None) -> bool:
        if self.process is not None and self.process.exit_code() is None:
            if has_standby_signal(self.settings.data_dir) != replica:
                raise PgError("already running with the other role: stop it first")
            if replica:
                self.follow(as_replica_of, slot_name)
            elif fence_deadline is not None:
                self.process.fence_at(fence_deadline)
            return True
        state, _ = data_dir_state(self.settings)
        if state is not DataDir.INITIALIZED:
            raise PgError(f"cannot start: {self.settings.data_dir} is {state}")
        stop_foreign(self.settings, "fast", deadline.left(), self.clock)
        upstream = Upstream(self._replication_conninfo(as_replica_of), slot_name) if replica else None
        if replica:
            self._epoch = None  # a replica holds no lease
        self._write_config(upstream)
        set_standby_signal(self.settings.data_dir, replica)
        return self._launch(deadline, None if replica else fence_deadline, callback)

    def _launch(self, deadline: Deadline, fence_deadline: float | None, callback: str | None) -> bool:
        kill_orphans(self.settings, self.clock)
        self.process = PostmasterProcess.start(self.settings, fence_deadline=fence_deadline,
                                               timeout_s=deadline.left(), clock=self.clock)
        self._watch(self.process)
        ready = self.process.wait_ready(deadline.left(0.0))
        if callback:
            self.callbacks.run(callback, self._role())
        return ready

    def stop(self, mode: str = "fast", timeout_s: float = 60.0) -> None:
        """Stop PostgreSQL (smart, fast or immediate); after ``timeout_s`` escalate to immediate, then SIGKILL.
        Stops a postmaster this agent did not start too. No-op when nothing runs."""
        with self._lock:
            self._stop(mode, timeout_s, "on_stop")

    def _stop(self, mode: str, timeout_s: float, callback: str | None) -> None:
        role = self._role()
        self._observer.close()  # a smart shutdown waits for every session, ours included
        self._prober.close()
        process, self.process = self.process, None
        if process is not None and process.exit_code() is None:
            if process.stop(mode, timeout_s) == -1:
                self.process = process
                raise PgError(f"postgres {process.pid} and its supervisor could not be stopped")
        elif not stop_foreign(self.settings, mode, timeout_s, self.clock):
            return
        if callback:
            self.callbacks.run(callback, role)

    def restart(self, timeout_s: float = 120.0, fence_deadline: float | None = None,
                between: Callable[[], object] = lambda: None) -> bool:
        """Stop (fast), run ``between``, start with the same role and upstream. Returns as ``start`` does."""
        with self._lock:
            deadline = Deadline(self.clock, timeout_s)
            self._stop("fast", deadline.left(), None)
            try:
                between()
            finally:  # started again whatever ``between`` did (e.g. a full disk): it is raised afterwards
                replica = has_standby_signal(self.settings.data_dir)
                self._write_config(self._upstream_on_disk())
                ready = self._launch(deadline, None if replica else fence_deadline, "on_restart")
            return ready

    def reload(self, settings: PgSettings | None = None) -> bool:
        """Rewrite the configuration (from ``settings`` if given: the node's reloaded config) and SIGHUP the
        postmaster. True if the files changed. Parameters that need a restart show as ``pending_restart``."""
        with self._lock:
            if settings is not None:
                if (settings.name, settings.data_dir) != (self.settings.name, self.settings.data_dir):
                    raise PgError("reload cannot change the member name or the data directory")
                self.settings = self._observer.settings = self._prober.settings = settings
                self.callbacks.commands, self.callbacks.scope = dict(settings.callbacks), settings.scope
            changed = self._write_config(self._upstream_on_disk())
            if self._sighup():
                self.callbacks.run("on_reload", self._role())
            return changed

    def promote(self, timeout_s: float = 60.0, on_writable: Callable[[], object] | None = None) -> None:
        """Promote this replica and wait until it accepts writes; then ``on_writable()``, then the files are
        brought in step (primary_conninfo gone) and ``on_role_change`` runs. Arm the fence (``fence_at``)
        first: promotion does not change the supervisor's deadline, and a replica runs with none."""
        with self._lock:
            with self._observer.session() as conn:  # the HA loop's own connection, open already
                promote(self.settings, self.clock, timeout_s, conn=conn)
            if on_writable is not None:
                on_writable()
            warn_if_unready(self.settings)
            if self._write_config(None):  # primary_conninfo is gone from the file: keep the server in step
                self._sighup()
            self.callbacks.run("on_role_change", "primary")

    def checkpoint(self, timeout_s: float = 60.0) -> None:
        self.query("CHECKPOINT", timeout_s=timeout_s)

    # --- replication wiring ---------------------------------------------------------------------------

    def follow(self, primary_conninfo: str | None, slot_name: str | None = None) -> bool:
        """Point a replica at a new primary (PostgreSQL 13+ reloads primary_conninfo and primary_slot_name).
        Raises PgError on a running primary: the caller stops and rewinds it first. True if anything changed."""
        with self._lock:
            # standby.signal, not a query: a standby that has not reached consistency refuses connections
            # ("the database system is starting up") yet must be re-pointed to get the WAL it waits for;
            # a promotion removes the file, so a server started without it, or promoted since, is refused
            if self.is_running() and not has_standby_signal(self.settings.data_dir):
                raise PgError("cannot follow: this PostgreSQL is a primary (stop and rewind it first)")
            changed = self._write_config(Upstream(self._replication_conninfo(primary_conninfo), slot_name))
            changed = set_standby_signal(self.settings.data_dir, True) or changed
            if changed:
                self._sighup()
            return changed

    def demote_to_replica(self, primary_conninfo: str | None, slot_name: str | None = None,
                          timeout_s: float = 60.0) -> bool:
        """Stop (fast), start as a replica of ``primary_conninfo`` (None: no primary yet); as ``start``."""
        with self._lock:
            deadline = Deadline(self.clock, timeout_s)
            self._stop("fast", deadline.left(), None)
            ready = self._start(primary_conninfo, slot_name, True, deadline, None, None)
            self.callbacks.run("on_role_change", "replica")
            return ready

    def set_synchronous_standby_names(self, value: str, timeout_s: float = 10.0) -> None:
        """Write ``synchronous_standby_names``, reload, and wait until the server reports the new value."""
        with self._lock:
            self._sync_names = value
            self._reload_until("SHOW synchronous_standby_names", (), value, timeout_s)

    def publish_epoch(self, epoch: int, timeout_s: float = 10.0) -> None:
        """``raftpg.leader_epoch`` (the leader key's revision held) in raftpg's postgresql.conf, reloaded and
        confirmed; set before promoting, so each acknowledged write can carry it (jepsen-lite's order)."""
        with self._lock:
            self._epoch = epoch
            self._reload_until("SELECT current_setting(%s, true)", (EPOCH_GUC,), str(epoch), timeout_s)

    def _reload_until(self, sql: str, params: tuple[str, ...], value: str, timeout_s: float) -> None:
        """Rewrite the files, reload, and wait until ``sql`` answers ``value`` (PgError at the deadline)."""
        deadline = Deadline(self.clock, timeout_s)
        if self._write_config(self._upstream_on_disk()):
            self._sighup()
        while self.is_running() and self._ask(sql, params, deadline.left()) != value:
            if self.clock.monotonic() >= deadline.at:
                raise PgError(f"{sql % params} is not {value!r} after {timeout_s:g}s")
            self.clock.sleep(0.005)  # a promotion waits on this (publish_epoch): the reload takes a few ms

    def _ask(self, sql: str, params: tuple[str, ...], timeout_s: float) -> Any:
        """The first column of the first row, on the kept connection (its backend reloads the files as a new
        one would: the postmaster passes SIGHUP on to every child), else on a new one."""
        try:
            with self._observer.session() as conn:
                if conn is not None:
                    row = conn.execute(sql, params).fetchone()
                    return row[0] if row else None
        except psycopg.OperationalError:
            pass  # broken, and dropped by the session: a new connection below
        except psycopg.Error as e:
            raise PgError(f"query failed: {str(e).strip()}") from None
        return self.query(sql, params, timeout_s=timeout_s)[0][0]

    # replication slots (raftpg.pg.slots): ensure_* return (created, dropped), advance_slots the advanced;
    # follow_logical_slots: a replica's copies (raftpg.pg.logical_slots; restarts PostgreSQL to load new ones)
    def ensure_slots(self, names: set[str], members: frozenset[str] = frozenset(),
                     retain_s: float = 0.0) -> tuple[set[str], set[str]]:
        return ensure_slots(self.settings, names, members=members, retain_s=retain_s, now=self.clock.wall())

    def ensure_logical_slots(self, slots: tuple[PermanentSlot, ...]) -> tuple[set[str], set[str]]:
        return ensure_logical_slots(self.settings, slots)

    def advance_slots(self, positions: Mapping[str, int]) -> set[str]:
        return advance_slots(self.settings, positions)

    def follow_logical_slots(self, slots: tuple[tuple[PermanentSlot, int | None], ...], source: str) -> set[str]:
        return keep_copies(self.settings, slots, source, self.clock, lambda install: self.restart(between=install))

    # --- the data directory ---------------------------------------------------------------------------

    def clone(self, source_conninfo: str, timeout_s: float | None = None,
              on_progress: Callable[[int], None] | None = None) -> str:
        """pg_basebackup (or the replica methods) into the missing or empty data directory; the copy's
        system identifier. No deadline unless ``timeout_s``; ``on_progress(percent)`` as it goes."""
        with self._lock:
            if self.is_running():
                raise PgError("cannot clone: PostgreSQL is running on the data directory")
            write_pgpass(self.settings)
            return rebuild.clone(self.settings, source_conninfo, timeout_s, on_progress)

    def rewind(self, source_conninfo: str, timeout_s: float = 3600.0) -> bool:
        """Stop (fast) if running, pg_rewind to ``source_conninfo``, and configure the data directory as a
        replica of that server (standby.signal, primary_conninfo as the replication role) even if the rewind
        failed: a diverged primary must never start as one again. False if pg_rewind failed."""
        with self._lock:
            deadline = Deadline(self.clock, timeout_s)
            self._stop("fast", deadline.left(), "on_stop")
            state, _ = data_dir_state(self.settings)
            if state is not DataDir.INITIALIZED:
                raise PgError(f"cannot rewind: {self.settings.data_dir} is {state}")
            write_pgpass(self.settings)
            try:
                return rebuild.rewind(self.settings, source_conninfo, deadline.left())
            finally:
                upstream = as_role(source_conninfo, self.settings.replication.username,
                                   passfile=self.settings.pgpass, application_name=self.settings.name)
                self._write_config(Upstream(upstream, None))
                set_standby_signal(self.settings.data_dir, True)

    def move_data_aside(self) -> str:
        """Rename the (stopped) data directory to ``<data_dir>.<timestamp>.failed``; the new path."""
        with self._lock:
            if self.is_running():
                raise PgError("cannot move the data directory aside: PostgreSQL is running on it")
            return rebuild.move_data_aside(self.settings, self.clock)

    def run_callback(self, action: str, role: str) -> None:
        self.callbacks.run(action, role)

    def close(self, timeout_s: float = 5.0) -> None:
        """Reap callbacks (killed after ``timeout_s``), close the connections; PostgreSQL is left running."""
        self.callbacks.close(timeout_s)
        self._observer.close()
        self._prober.close()

    # --- helpers --------------------------------------------------------------------------------------

    def _replication_conninfo(self, conninfo: str | None) -> str | None:
        return None if conninfo is None else with_defaults(conninfo, user=self.settings.replication.username, passfile=self.settings.pgpass,
                             application_name=self.settings.name)

    def _write_config(self, upstream: Upstream | None) -> bool:
        if self._sync_names is None:
            self._sync_names = read_managed_parameters(self.settings.data_dir).get("synchronous_standby_names", "")
        changed = write_pgpass(self.settings)
        changed = write_pg_hba(self.settings) or changed
        params = managed_parameters(self.settings, upstream, self._sync_names)
        if self._epoch is not None:  # a primary's, or one about to be promoted
            params[EPOCH_GUC] = str(self._epoch)
        return write_postgresql_conf(self.settings, params) or changed

    def _upstream_on_disk(self) -> Upstream | None:
        if not has_standby_signal(self.settings.data_dir):
            return None
        params = read_managed_parameters(self.settings.data_dir)
        return Upstream(params.get("primary_conninfo") or None, params.get("primary_slot_name") or None)

    def _role(self) -> str:
        return "replica" if has_standby_signal(self.settings.data_dir) else "primary"

    def _sighup(self) -> bool:
        return signal_postmaster(self.settings, self.process, signal.SIGHUP)
