"""An in-memory PostgreSQL for HA tests and simulations: no processes, no files, a clock you move.

``FakePostgres`` implements :class:`raftpg.ha.ports.PostgresPort`. Instances share a ``PgNetwork``,
which plays the wire between them (replication links that a test can cut) and the clients' record of
acknowledged writes.

What it models:

- a data directory (missing / empty / initialized / broken), its system identifier, timeline and WAL;
- WAL as a list of record ids (a write, a promotion's end-of-recovery record, a shutdown checkpoint);
  ``lsn`` is a byte position derived from the record count, so positions compare as PostgreSQL's do;
- replicas stream from the upstream named in their conninfo: on each ``PgNetwork.step()`` a running
  replica whose link is up copies its upstream's WAL *if its own WAL is a prefix of it* (otherwise the
  histories diverged: it keeps running but stops streaming, as a real standby would);
- a fast or smart shutdown of a primary writes a shutdown checkpoint and hands it to the streaming
  replicas before exiting (so a clean switchover needs no rewind); an immediate stop or ``crash()``
  does not;
- ``promote()`` starts a new timeline with an end-of-recovery record; starting replica data without
  standby mode ends recovery the same way;
- ``rewind()`` truncates diverged WAL and copies the source's; ``clone()`` copies a running source;
- synchronous replication for the values ``ha/sync.py`` writes (``''``, ``'*'``, ``FIRST n (a, b)``):
  pg_stat_replication reports ``sync``/``potential``/``async``, and a write on a primary with
  synchronous standbys is acknowledged only once enough of them hold it;
- the fencing supervisor: ``fence_at(t)`` sets an absolute deadline on the injected clock, ``unlimited()``
  clears it; once the deadline passes (plus ``fence_latency_s``: the supervisor's polling and, at worst,
  the second it waits before SIGKILL; the simulation uses that worst case) PostgreSQL is killed (an
  immediate shutdown: ``in production`` on a primary) and ``fenced_count`` grows. ``accepting_writes``
  is exact at any instant, so a checker can ask it between events.

Replication slots exist as names: a replica started (or pointed) with ``primary_slot_name`` streams only
while its upstream has that slot, as PostgreSQL refuses ``START_REPLICATION SLOT`` for a missing one;
slots live in the data directory of a primary (``ensure_slots``) and are not copied by a clone or a rewind.

What it does not model: WAL bytes, checkpoints' timing, replication lag other than "not yet stepped",
slots retaining WAL (a replica can always catch up from any point of its upstream's history), cascading
timeline switches' subtleties, wal_keep_size, archive recovery, pg_rewind's own preconditions (wal_log_hints
or checksums), the control file of a half-written clone (except as ``BROKEN`` when told to fail), speed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from raftpg.clock import Clock
from raftpg.model import DataDir, DynamicConfig, LocalState, PermanentSlot, ReplicationRow
from raftpg.testing.fake_network import (
    LSN_BASE,
    RECORD_BYTES,
    SYSID_BASE,
    PgError,
    PgNetwork,
    acknowledged_up_to,
    host_of,
    lsn_of,
    parse_standby_names,
    sync_states,
)

__all__ = ["LSN_BASE", "RECORD_BYTES", "SYSID_BASE", "FakePostgres", "PgError", "PgNetwork", "host_of", "lsn_of",
           "parse_standby_names"]


class FakePostgres:
    def __init__(self, name: str, network: PgNetwork[FakePostgres], clock: Clock, *,
                 fence_latency_s: float = 0.05) -> None:
        self.name, self.network, self.clock, self.fence_latency_s = name, network, clock, fence_latency_s
        self.data_dir = DataDir.MISSING
        self.sysid: str | None = None
        self.timeline: int | None = None
        self.wal: list[int] = []
        self.cluster_state: str | None = None
        self.running = self.in_recovery = self.streaming = False
        self.upstream_url: str | None = None
        self.synchronous_standby_names = ""
        self.slots: set[str] = set()           # physical slots on this (primary's) data directory
        self.slot_wanted: dict[str, float] = {}  # a member's slot -> when last wanted (member_slots_ttl)
        self.slot_positions: dict[str, int] = {}  # a slot's position, as advanced (on a replica)
        self.logical_slots: dict[str, tuple[str | None, str | None]] = {}  # name -> (database, plugin)
        self.slot_name: str | None = None      # this replica's primary_slot_name
        self.bootstrap_unfinished = False      # initdb ran, the cluster is not registered yet
        self.unobservable = False              # fault: the agent's queries fail (slots taken, I/O stall)
        self.epoch: int | None = None          # raftpg.leader_epoch, published before it acts as a primary
        self.stuck: str | None = None          # fault: no streaming ("soft": rewind cures it; "hard": a clone)
        self.parameters: dict[str, str] = {}
        self.fence_deadline: float | None = None
        self.detached = self.fresh_copy = False  # left running unfenced while paused; a clone never started
        self.clone_gate: threading.Event | None = None  # set: clone() blocks until the test sets the event
        self.pending_writes: list[int] = []   # written on this primary, waiting for a synchronous standby
        self.kept_data_dirs: list[str] = []
        self.callbacks: list[tuple[str, str]] = []
        self.fail_next: dict[str, int] = {}   # operation name -> how many calls raise PgError
        self.operation_s = 0.0                # simulated time each start/stop/promote/clone/rewind takes
        self.pid = self.fenced_count = 0
        network.add(self)

    # ------------------------------------------------------------------ helpers for tests
    @property
    def lsn(self) -> int:
        return lsn_of(self.wal)

    @property
    def is_primary(self) -> bool:
        return self.running and not self.in_recovery

    @property
    def accepting_writes(self) -> bool:
        """A running primary whose fencing deadline (plus the supervisor's latency) has not passed."""
        return self.is_primary and (self.fence_deadline is None
                                    or self.clock.monotonic() < self.fence_deadline + self.fence_latency_s)

    def apply_fence(self) -> None:
        """The supervisor's deadline passed: PostgreSQL was killed then (an immediate shutdown)."""
        if self.running and self.fence_deadline is not None and \
                self.clock.monotonic() >= self.fence_deadline + self.fence_latency_s:
            self.fenced_count += 1
            self._down(clean=False)

    def crash(self) -> None:
        """kill -9 of the postmaster: no shutdown checkpoint; the supervisor exits with it."""
        self.apply_fence()
        if self.running:
            self._down(clean=False)

    def write(self, count: int) -> tuple[int, int]:
        """A client commits ``count`` rows; returns (accepted, acknowledged now). Refused unless writable."""
        self.apply_fence()
        if not self.accepting_writes:
            return 0, 0
        before = len(self.network.acknowledged)
        for _ in range(count):
            record = self.network.new_record()
            self.wal.append(record)
            self.pending_writes.append(record)
        self.acknowledge_synchronous()
        return count, len(self.network.acknowledged) - before

    def wipe(self) -> None:  # the disk was replaced: an empty data directory
        self.crash()
        self.data_dir, self.sysid, self.timeline, self.wal, self.cluster_state = DataDir.EMPTY, None, None, [], None
        self.slots, self.logical_slots, self.bootstrap_unfinished = set(), {}, False

    def _query(self) -> None:
        """An operation that needs an SQL connection fails while the server is unobservable."""
        if self.running and self.unobservable:
            raise PgError(f"{self.name}: cannot connect: remaining connection slots are reserved (simulated)")

    def _maybe_fail(self, operation: str) -> None:
        self.network.take_time(self.operation_s)
        left = self.fail_next.get(operation, 0)
        if left > 0:
            self.fail_next[operation] = left - 1
            raise PgError(f"{operation} failed (simulated)")

    def _down(self, *, clean: bool) -> None:
        if self.is_primary:
            self.pending_writes.clear()  # the clients of unacknowledged commits see an error
            self.cluster_state = "shut down" if clean else "in production"
        else:
            self.cluster_state = "shut down in recovery" if clean else "in archive recovery"
        self.running = self.streaming = False
        self.fence_deadline = None  # the supervisor exits with the postmaster

    def _require_data(self) -> None:
        if self.data_dir != DataDir.INITIALIZED:
            raise PgError(f"{self.name}: no usable data directory ({self.data_dir})")

    # ------------------------------------------------------------------ replication
    def pull_from_upstream(self) -> None:
        if not (self.running and self.in_recovery):
            return
        upstream = self.network.reach(self.name, self.upstream_url)
        if upstream is None or upstream.sysid != self.sysid or upstream.wal[: len(self.wal)] != self.wal \
                or (self.slot_name is not None and self.slot_name not in upstream.slots) or self.stuck:
            self.streaming = False
            return
        self.wal = list(upstream.wal)
        self.timeline = upstream.timeline
        self.streaming = True

    def replication_rows(self) -> tuple[ReplicationRow, ...]:
        if not self.is_primary:
            return ()
        streaming = sorted(
            (pg for pg in self.network.instances.values()
             if pg.running and pg.in_recovery and pg.streaming and host_of(pg.upstream_url) == self.name
             and self.network.link_up(self.name, pg.name)),
            key=lambda pg: pg.name)
        states = sync_states([pg.name for pg in streaming], self.synchronous_standby_names)
        return tuple(ReplicationRow(application_name=pg.name, client_addr=pg.name, state="streaming",
                                    sync_state=states[pg.name], write_lsn=pg.lsn, flush_lsn=pg.lsn, replay_lsn=pg.lsn)
                     for pg in streaming)

    def acknowledge_synchronous(self) -> None:
        if not self.pending_writes or not self.accepting_writes:
            return
        if parse_standby_names(self.synchronous_standby_names)[0] == 0:
            self.network.acknowledged.update(self.pending_writes)
            self.pending_writes.clear()
            return
        held = acknowledged_up_to(self.synchronous_standby_names, {
            row.application_name: len(self.network.instances[row.application_name].wal)
            for row in self.replication_rows() if row.sync_state in ("sync", "quorum")})
        if held is None:
            return
        done = [r for r in self.pending_writes if r in self.wal[:held]]
        self.network.acknowledged.update(done)
        self.pending_writes = [r for r in self.pending_writes if r not in done]

    # ------------------------------------------------------------------ PostgresPort
    def observe(self) -> LocalState:
        self.apply_fence()
        if self.data_dir != DataDir.INITIALIZED:
            return LocalState(data_dir=self.data_dir)
        pm_status = None if not self.running else "standby" if self.in_recovery else "ready"
        if self.running and self.unobservable:  # the postmaster runs; the agent's queries fail
            return LocalState(data_dir=self.data_dir, sysid=self.sysid, timeline=self.timeline,
                              cluster_state=self.cluster_state, postmaster_pid=self.pid,
                              postmaster_status=pm_status, standby_signal=self.in_recovery,
                              bootstrap_unfinished=self.bootstrap_unfinished, supervised=True)
        replica = self.running and self.in_recovery
        return LocalState(
            data_dir=self.data_dir, sysid=self.sysid, running=self.running,
            in_recovery=self.in_recovery if self.running else None, timeline=self.timeline, lsn=self.lsn,
            receive_lsn=self.lsn if replica else None, replay_lsn=self.lsn if replica else None,
            upstream=host_of(self.upstream_url) if replica else None, streaming=replica and self.streaming,
            replication=self.replication_rows(),
            synchronous_standby_names=self.synchronous_standby_names if self.running else "",
            cluster_state=self.cluster_state, postmaster_pid=self.pid if self.running else None,
            postmaster_status=pm_status, standby_signal=bool(self.running and self.in_recovery),
            server_version=170000, bootstrap_unfinished=self.bootstrap_unfinished,
            supervised=self.running, fresh_copy=self.fresh_copy,  # a primary's slots: its followers are caught up
            slots=tuple((n, self.lsn or 0) for n in sorted(self.slots)) if self.running and not self.in_recovery else (),
        )

    def bootstrap(self, fence_deadline: float | None = None) -> str:
        """initdb, start, post_bootstrap and finish in one call (for tests; the executor runs the steps)."""
        self.initdb()
        self.start(None, None, as_replica=False, timeout_s=60, fence_deadline=fence_deadline)
        sysid = self.post_bootstrap()
        self.finish_bootstrap()
        return sysid

    def initdb(self) -> None:
        self._maybe_fail("bootstrap")
        if self.data_dir not in (DataDir.MISSING, DataDir.EMPTY):
            raise PgError(f"{self.name}: initdb refuses a data directory that is {self.data_dir}")
        self.data_dir, self.sysid, self.timeline = DataDir.INITIALIZED, self.network.new_sysid(), 1
        self.wal = [self.network.new_record()]
        self.cluster_state = "shut down"
        self.bootstrap_unfinished = True

    def post_bootstrap(self) -> str:
        self.apply_fence()
        self._maybe_fail("post_bootstrap")
        if not self.is_primary:
            raise PgError(f"{self.name}: post_bootstrap: the new cluster is not running")
        assert self.sysid is not None
        return self.sysid

    def finish_bootstrap(self) -> None:
        self.bootstrap_unfinished = False

    def _up(self, *, primary: bool) -> None:
        self.running, self.in_recovery, self.streaming = True, not primary, False
        self.cluster_state = "in production" if primary else "in archive recovery"
        self.pid, self.fresh_copy = self.pid + 1, False  # a first start consumes backup_label
        if primary:
            self.upstream_url = None
            self.network.became_writable(self)

    def start(self, primary_conn_url: str | None, slot_name: str | None, *, as_replica: bool,
              timeout_s: float, fence_deadline: float | None = None) -> None:
        self.apply_fence()
        self._maybe_fail("start")
        self._require_data()
        if self.running:
            if self.in_recovery == as_replica:
                if not as_replica and fence_deadline is not None:
                    self.fence_deadline = fence_deadline
                return
            raise PgError(f"{self.name}: already running as {'replica' if self.in_recovery else 'primary'}")
        self.fence_deadline = None if as_replica else fence_deadline
        if as_replica:
            self.upstream_url, self.slot_name = primary_conn_url, slot_name
            self._up(primary=False)
            return
        if self.cluster_state in ("in archive recovery", "shut down in recovery"):
            # replica data started without standby mode: recovery ends on a new timeline
            self.timeline = (self.timeline or 1) + 1
            self.wal.append(self.network.new_record())
        self._up(primary=True)
        self.apply_fence()

    def stop(self, mode: str, timeout_s: float) -> None:
        self.apply_fence()
        self._maybe_fail("stop")
        if not self.running:
            self.fence_deadline = None
            return
        if self.is_primary and mode != "immediate":
            self.wal.append(self.network.new_record())  # shutdown checkpoint, sent before the walsenders exit
            self.acknowledge_synchronous()
            for pg in self.network.instances.values():
                if pg.streaming and host_of(pg.upstream_url) == self.name:
                    pg.pull_from_upstream()
            self.acknowledge_synchronous()
        self._down(clean=mode != "immediate")

    def restart(self, timeout_s: float, fence_deadline: float | None = None) -> None:
        primary = self.is_primary
        self.stop("fast", timeout_s)
        self.start(self.upstream_url, self.slot_name, as_replica=not primary, timeout_s=timeout_s,
                   fence_deadline=fence_deadline)

    def reload(self) -> None:
        self.apply_fence()

    def promote(self, timeout_s: float, on_writable: Callable[[], object] | None = None) -> None:
        self.apply_fence()
        self._query()
        self._maybe_fail("promote")
        if not (self.running and self.in_recovery):
            raise PgError(f"{self.name}: promote: not a running standby")
        self.timeline = (self.timeline or 1) + 1
        self.wal.append(self.network.new_record())
        self._up(primary=True)
        if on_writable is not None:
            on_writable()

    def checkpoint(self, timeout_s: float = 60.0) -> None:
        self.apply_fence()
        self._query()
        if not self.running:
            raise PgError(f"{self.name}: checkpoint: not running")

    def follow(self, primary_conn_url: str, slot_name: str | None) -> None:
        self.apply_fence()
        self._query()
        if not self.running:
            raise PgError(f"{self.name}: follow: not running")
        if not self.in_recovery:
            raise PgError(f"{self.name}: follow: a primary cannot follow")
        self.upstream_url, self.slot_name, self.streaming = primary_conn_url, slot_name, False

    def clone(self, source_conn_url: str, timeout_s: float | None,
              on_progress: Callable[[int], None] | None = None) -> None:
        self._maybe_fail("clone")
        if self.clone_gate is not None:  # a test holds the copy "in progress" (43 %) until it opens the gate
            (on_progress or (lambda percent: None))(43)
            self.clone_gate.wait(30)
        if self.data_dir not in (DataDir.MISSING, DataDir.EMPTY):
            raise PgError(f"{self.name}: pg_basebackup refuses a data directory that is {self.data_dir}")
        source = self.network.reach(self.name, source_conn_url)
        if source is None or source.data_dir != DataDir.INITIALIZED:
            raise PgError(f"{self.name}: pg_basebackup: cannot connect to {host_of(source_conn_url)}")
        self.data_dir, self.sysid, self.timeline = DataDir.INITIALIZED, source.sysid, source.timeline
        self.wal, self.slots, self.logical_slots = list(source.wal), set(), {}  # pg_basebackup copies no slots
        # the control file is copied from the source: "in production" from a primary
        self.cluster_state = "in archive recovery" if source.in_recovery else "in production"
        self.running, self.streaming, self.fresh_copy = False, False, True  # backup_label until a start

    def rewind(self, source_conn_url: str, timeout_s: float) -> bool:
        self._maybe_fail("rewind")
        if self.running:
            raise PgError(f"{self.name}: pg_rewind: the target must be shut down")
        self._require_data()
        source = self.network.reach(self.name, source_conn_url)
        if source is None or source.sysid != self.sysid:
            return False
        if source.wal[: len(self.wal)] == self.wal:
            self.stuck = None if self.stuck == "soft" else self.stuck
            return True  # "no rewind required": the source's history contains ours
        self.wal, self.timeline, self.slots = list(source.wal), source.timeline, set()  # pg_rewind skips pg_replslot
        self.logical_slots = {}
        self.stuck = None if self.stuck == "soft" else self.stuck
        self.cluster_state = "in archive recovery"
        return True

    def can_reach(self, conn_url: str) -> bool:
        return self.network.reach(self.name, conn_url) is not None

    def move_data_aside(self) -> str:
        if self.running:
            raise PgError(f"{self.name}: cannot move a running data directory aside")
        kept = f"/fake/{self.name}/data.failed.{len(self.kept_data_dirs) + 1}"
        if self.data_dir != DataDir.MISSING:
            self.kept_data_dirs.append(kept)
        self.data_dir, self.sysid, self.timeline, self.wal, self.cluster_state = \
            DataDir.MISSING, None, None, [], None
        self.slots, self.logical_slots, self.bootstrap_unfinished, self.stuck = set(), {}, False, None
        return kept

    def ensure_slots(self, names: set[str], members: frozenset[str] = frozenset(), retain_s: float = 0.0) -> None:
        self.apply_fence()  # on a primary, and (copies of its slots) on a replica
        self._query()
        now = self.clock.wall()
        self.slot_wanted = {n: at for n, at in self.slot_wanted.items() if n in self.slots and now - at < retain_s}
        self.slot_wanted.update({n: now for n in members})
        self.slots = set(names) | set(self.slot_wanted)

    def advance_slots(self, positions: Mapping[str, int]) -> None:
        self._query()
        self.slot_positions.update({n: at for n, at in positions.items() if n in self.slots})

    def follow_logical_slots(self, slots: tuple[tuple[PermanentSlot, int | None], ...], source: str) -> None:
        self._query()  # a replica's copies: names and positions (copying restarts no fake server)
        self.logical_slots = {slot.name: (slot.database, slot.plugin) for slot, _ in slots}
        self.slot_positions.update({slot.name: at for slot, at in slots if at is not None})

    def ensure_logical_slots(self, slots: tuple[PermanentSlot, ...]) -> None:
        self.apply_fence()
        self._query()
        if not self.is_primary:
            raise PgError(f"{self.name}: replication slots are managed on the primary")
        self.logical_slots = {slot.name: (slot.database, slot.plugin) for slot in slots}

    def set_synchronous_standby_names(self, value: str) -> None:
        self.apply_fence()
        self._query()
        self.synchronous_standby_names = value
        self.acknowledge_synchronous()

    def run_callback(self, action: str, role: str) -> None:
        self.callbacks.append((action, role))

    def publish_epoch(self, epoch: int) -> None:
        self.apply_fence()
        self._query()
        self.epoch = epoch

    def fence_at(self, deadline: float) -> None:
        self.apply_fence()
        self.fence_deadline = deadline
        self.apply_fence()

    def unlimited(self) -> None:
        self.apply_fence()
        self.fence_deadline = None

    def adopt_unsupervised(self) -> None:
        self.detached = False

    def detach(self) -> bool:
        """The agent leaves PostgreSQL running, unfenced (a stop while paused); a new agent adopts it."""
        self.unlimited()
        self.detached = self.running
        return self.running

    def apply_cluster_config(self, config: DynamicConfig) -> bool:
        changed, self.parameters = dict(config.parameters) != self.parameters, dict(config.parameters)
        return changed
