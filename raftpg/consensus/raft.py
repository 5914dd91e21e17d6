"""RaftNode: the replicated KV on a pysyncobj ``SyncObj``, by composition (never inheritance).

Only this package imports pysyncobj. Our commands cross the log as versioned JSON bytes handed to a
single ``@replicated`` method of a consumer (consumer.py); pysyncobj still pickles its own frames, which is
why every member needs a password (Fernet; DESIGN.md safety rule 9): the config requires it,
``RaftSettings`` refuses a port off loopback without it, and ``add_member`` refuses to grow a cluster
without one.

Start-up order: the open-files limit is raised, ``raft.data_dir`` is checked and made private
(datadir.py) before anything in it is read, the port is probed, then pysyncobj is built with raftpg's
journal (journal.py) and transport (transport.py, wire.py). A full disk cuts the node off from Raft and
fails its writes with :class:`DiskFull` until space returns (diskspace.py). Threads, the write path
(which failures are retried, which end in :class:`UnknownOutcome`), linearizable reads and durability:
consensus/DESIGN.md.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf

from raftpg.clock import Clock, SystemClock
from raftpg.consensus.api import (
    DiskFull,
    KvError,
    KvRejected,
    KvTimeout,
    NoQuorum,
    PeerStatus,
    RaftStatus,
    StoreFailed,
    UnknownOutcome,
)
from raftpg.consensus.consumer import KvConsumer
from raftpg.consensus.datadir import secure_data_dir
from raftpg.consensus.diskspace import DiskSpace
from raftpg.consensus.durability import FlushingJournal, wrap_replace_durably
from raftpg.consensus.journal import GuardedJournal, JournalFull, journal_construction
from raftpg.consensus.leases import LeaseClock
from raftpg.consensus.limits import raise_open_files_limit
from raftpg.consensus.membership import validate_addr, wait_callback
from raftpg.consensus.pysyncobj_logs import quiet_pysyncobj_logs
from raftpg.consensus.recovery import RaftFiles, finish_new_cluster, prepare_new_cluster, start_from_seed
from raftpg.consensus.settings import (
    RaftConfigError,
    RaftSettings,
    check_bindable,
    check_can_add_member,
)
from raftpg.consensus.state import GuardedState, unwrap
from raftpg.consensus.tickwait import TickWait
from raftpg.consensus.transport import GuardedTransport, TransportControl
from raftpg.kv import (
    Command,
    Committed,
    Conflict,
    Fingerprint,
    Guard,
    KeyValue,
    barrier_command,
    delete_command,
    encode,
    put_command,
    restore_command,
    touch_command,
    validate_key_value,
)

log = logging.getLogger(__name__)
_REAL_TIME = SystemClock()  # waits on real threads and sockets: real time

_STATES = {0: "follower", 1: "candidate", 2: "leader"}
# Failures that prove the command is in no leader's log (never appended, or overwritten): retry is safe.
_NOT_APPLIED = {FAIL_REASON.MISSING_LEADER, FAIL_REASON.QUEUE_FULL, FAIL_REASON.NOT_LEADER, FAIL_REASON.DISCARDED}
_START_TIMEOUT_S = 30.0
__all__ = ["RaftConfigError", "RaftNode", "RaftSettings"]  # the settings live in settings.py


class RaftNode:
    """One voter (or, with ``witness``, the same thing: a witness differs only above this layer).

    Construction blocks until the node listens (and, after ``force_new_cluster``, until the seed is
    committed); a port that cannot be bound raises :class:`RaftConfigError` at once.
    """

    def __init__(self, settings: RaftSettings, clock: Clock | None = None) -> None:
        settings.check()
        self.settings = settings
        self._clock = clock or SystemClock()
        self._state = GuardedState()
        self._leases = LeaseClock()
        self._lease_term: int | None = None  # the term in which this node last ran the lease clock as leader
        self._consumer = KvConsumer(self._state)
        self._tick_tasks: deque[Callable[[], None]] = deque()
        self._closing = threading.Event()
        self._files = RaftFiles.for_node(settings.data_dir, settings.self_addr) if settings.data_dir else None
        self._members_written: frozenset[str] | None = None
        self._peers = TransportControl()
        self._disk = (DiskSpace(settings.data_dir, settings.disk_free_min_bytes, self._cut_off)
                      if settings.data_dir else None)
        self._journal: GuardedJournal | None = None
        raise_open_files_limit()
        quiet_pysyncobj_logs()
        if settings.data_dir:
            secure_data_dir(settings.data_dir)  # before anything in it is read (unpickled)
        check_bindable(settings.bind_addr or settings.self_addr)
        partners, seed = self._starting_partners()
        self._sync = self._start_sync(partners, self._conf(settings))
        self._sync.addOnTickCallback(self._on_tick)
        self._tick_wait = TickWait(self._sync, self._next_lease_s, settings.tick_s, settings.tick_max_s)
        if seed is not None:
            self._commit_seed(seed)

    # ------------------------------------------------------------------ start-up
    def _starting_partners(self) -> tuple[list[str], dict[str, Any] | None]:
        partners = list(self.settings.partner_addrs)
        if self._files is None:
            return partners, None
        if self.settings.force_new_cluster:
            prepare_new_cluster(self._files)
        seed = start_from_seed(self._files)
        if seed is not None:
            if partners:
                log.warning("raft: forming a new one-node cluster; ignoring partner_addrs %s (add members "
                            "back with add_member once it runs)", ", ".join(partners))
            return [], seed
        remembered = self._files.remembered_members()
        if remembered is not None and set(remembered) != set(partners):
            log.warning("raft: partner_addrs %s differ from the members this node last saw %s; using the "
                        "latter (membership changes go through add_member/remove_member)",
                        sorted(partners), sorted(remembered))
            return remembered, None
        return partners, None

    def _start_sync(self, partners: list[str], conf: SyncObjConf) -> SyncObj:
        """Create the SyncObj on an owner thread that lives until close().

        pysyncobj stops its tick thread as soon as the thread that constructed the SyncObj exits; built
        from a short-lived thread (a thread pool, ``asyncio.to_thread``), Raft would silently stop.
        """
        box: dict[str, Any] = {}
        started = threading.Event()
        transport = functools.partial(GuardedTransport, control=self._peers)

        def own() -> None:
            try:
                with journal_construction(self._make_journal):
                    box["sync"] = SyncObj(self.settings.self_addr, partners, conf=conf,
                                          consumers=[self._consumer], transportClass=transport)
            except BaseException as exc:  # noqa: BLE001 - re-raised on the constructing thread
                box["error"] = exc
            finally:
                started.set()
            self._closing.wait()

        self._owner = threading.Thread(target=own, name=f"raft-owner-{self.settings.self_addr}", daemon=True)
        self._owner.start()
        if not started.wait(_START_TIMEOUT_S) or "error" in box:
            self._closing.set()
            error = box.get("error", "timed out")  # pysyncobj's own checks are bare asserts: name the type
            raise RaftConfigError(f"raft: could not start on {self.settings.self_addr}: {str(error) or repr(error)}")
        sync: SyncObj = box["sync"]
        if not sync.tick_thread_alive():
            self._closing.set()
            raise RaftConfigError(f"raft: could not start on {self.settings.self_addr}")
        return sync

    def _make_journal(self, path: str) -> GuardedJournal:
        """pysyncobj's journal factory for this node: preallocated and private, fsyncing if asked."""
        if self.settings.fsync:
            wrap_replace_durably()
            self._journal = FlushingJournal(path, self._disk)
        else:
            self._journal = GuardedJournal(path, self._disk)
        return self._journal

    def _commit_seed(self, seed: dict[str, Any]) -> None:
        assert self._files is not None
        try:
            result = self.submit(restore_command(seed), _START_TIMEOUT_S)
        except KvError as exc:
            self.close()
            raise RaftConfigError(f"raft.force_new_cluster: the seed did not commit: {exc}") from exc
        finish_new_cluster(self._files)
        log.warning("raft: new one-node cluster formed at revision %d; remove force_new_cluster from the "
                    "settings and add members back", result.revision)

    @staticmethod
    def _conf(settings: RaftSettings) -> SyncObjConf:
        journal = dump = None
        if settings.data_dir:
            files = RaftFiles.for_node(settings.data_dir, settings.self_addr)
            journal, dump = files.journal, files.dump
        return SyncObjConf(
            password=settings.password or None, journalFile=journal, fullDumpFile=dump,
            dynamicMembershipChange=True, commandsWaitLeader=False, appendEntriesUseBatch=False,
            raftMinTimeout=settings.election_timeout_min_s, raftMaxTimeout=settings.election_timeout_max_s,
            appendEntriesPeriod=settings.heartbeat_s, leaderFallbackTimeout=settings.leader_fallback_s,
            connectionTimeout=max(3.5, settings.election_timeout_max_s), connectionRetryTime=1.0,
            bindAddress=settings.bind_addr, maxBindRetries=3, useFork=False, pollerType="poll",
            logCompactionMinEntries=20000, logCompactionMinTime=300, autoTickPeriod=settings.tick_s,
        )

    # ------------------------------------------------------------------ tick thread
    def _on_tick(self) -> None:
        """Tick thread: queued tasks, membership bookkeeping, and the leader's lease expiry."""
        while self._tick_tasks:
            self._tick_tasks.popleft()()
        self._remember_members()
        self._watch_disk()
        sync = self._sync
        now = self._clock.monotonic()
        self._leases.observe(self._state.locked_state(), now)  # every role: countdowns from local apply
        term = sync.raftCurrentTerm if sync._isLeader() else None
        if term != self._lease_term:
            # leadership gained, lost, or won again in a later term (comparing the term catches losing
            # and regaining it between two ticks): re-propose any expiry that is due
            self._leases.forget_proposals()
            self._lease_term = term
        if term is None or self._peers.isolated:
            return
        for command in self._leases.due(self._state.locked_state(), self._clock.monotonic()):
            log.info("lease expired on the Raft leader's clock: %s", command["key"])
            self._consumer.command(encode(command), callback=lambda result, error: None)

    def _next_lease_s(self) -> float | None:
        """Tick thread: seconds until this leader must propose its next expiry (None: not leading)."""
        if self._lease_term is None:
            return None
        return self._leases.next_due_s(self._state.locked_state(), self._clock.monotonic())

    def _watch_disk(self) -> None:
        """A full disk: hand leadership over, then stay out of Raft until there is room (diskspace.py)."""
        if self._disk is None:
            return
        change = self._disk.poll(_REAL_TIME.monotonic(), self._can_rejoin)
        if change == "full":
            if self._sync._isLeader():
                # timeout_now goes out before the isolation below stops every send
                self._sync.transferLeadership(None, callback=lambda _result, _error: None)
            self._cut_off(self._disk.full or "disk full")
        elif change == "back":
            self._peers.isolated = None

    def _cut_off(self, reason: str) -> None:
        """Tick thread: from now on the transport neither sends nor delivers a message (transport.py)."""
        self._peers.isolated = reason

    def _can_rejoin(self) -> bool:
        if self._sync._isLeader():
            return False  # it may lead a term it could not store: wait for leader_fallback_s to depose it
        if self._journal is None:
            return True
        try:
            self._journal.ensure_room(0)
        except JournalFull:
            return False
        return True

    def _remember_members(self) -> None:
        if self._files is None:
            return
        members = frozenset(n.address for n in self._sync.otherNodes)
        if members != self._members_written:
            try:
                self._files.remember_members(self.settings.self_addr, sorted(members))
                self._members_written = members
            except OSError as exc:
                log.error("raft: cannot record the member list in %s: %s", self._files.members, exc)

    def _on_tick_thread(self, task: Callable[[], Any], timeout_s: float) -> Any:
        """Run ``task`` on the tick thread (pysyncobj's state is not thread-safe) and return its result."""
        future: Future[Any] = Future()

        def run() -> None:
            try:
                future.set_result(task())
            except Exception as exc:  # noqa: BLE001 - re-raised on the calling thread
                future.set_exception(exc)

        self._tick_tasks.append(run)
        self._tick_wait.wake()  # it may be sleeping until its next deadline (tickwait.py)
        try:
            return future.result(timeout_s)
        except FutureTimeout:
            raise KvTimeout(f"the Raft thread did not answer within {timeout_s:.1f}s") from None

    # ------------------------------------------------------------------ writes
    def submit(self, command: Command, timeout_s: float) -> Committed | Conflict:
        """Commit ``command`` through the log and return what ``apply`` answered on this node.

        Errors: :class:`NoQuorum` (``indeterminate`` False if no leader ever took the command),
        :class:`KvTimeout` / :class:`UnknownOutcome` (the command may still apply), :class:`KvRejected`.
        """
        self._state.check_failed()
        if self._disk is not None and self._disk.full:
            raise DiskFull(self._disk.full)
        if not self.running and not self._closing.is_set():
            raise StoreFailed("the Raft thread of this node has stopped; restart the node")
        payload = encode(command)
        deadline = _REAL_TIME.monotonic() + timeout_s
        while True:
            if self._closing.is_set():
                raise NoQuorum("this Raft node is shut down")
            answer: Future[tuple[Any, int]] = Future()
            try:
                self._consumer.command(payload, callback=lambda result, error, f=answer: f.set_result((result, error)))
            except BlockingIOError:
                pass  # queued; only the wake-up pipe was full: the tick thread finds it on its next tick
            try:
                result, error = answer.result(max(0.0, deadline - _REAL_TIME.monotonic()))
            except FutureTimeout:
                if not self._sync.hasQuorum:
                    raise NoQuorum(f"no quorum: this node reaches {self._connected_voters()} of "
                                   f"{len(self._sync.otherNodes) + 1} voters; the command may still "
                                   "commit if a leader that holds it regains a quorum", indeterminate=True) from None
                raise KvTimeout(f"no answer within {timeout_s:.1f}s; the outcome is unknown") from None
            if error == FAIL_REASON.SUCCESS:
                return unwrap(result)
            if error not in _NOT_APPLIED:
                raise UnknownOutcome(f"Raft leadership changed during the request (reason {error})")
            if _REAL_TIME.monotonic() >= deadline:
                raise NoQuorum("no quorum: no Raft leader took the command within the timeout; it was "
                               "not applied")
            self._closing.wait(min(0.05, max(0.0, deadline - _REAL_TIME.monotonic())))

    def put(self, key: str, value: str, *, guard: Guard | None = None, ttl_s: float | None = None,
            timeout_s: float = 5.0) -> Committed | Conflict:
        problem = validate_key_value(key, value)
        if problem:
            raise KvRejected(problem)
        return self.submit(put_command(key, value, guard=guard, ttl_s=ttl_s), timeout_s)

    def touch(self, key: str, *, guard: Guard | None = None, timeout_s: float = 5.0) -> Committed | Conflict:
        return self.submit(touch_command(key, guard=guard), timeout_s)

    def delete(self, key: str, *, guard: Guard | None = None, timeout_s: float = 5.0) -> Committed | Conflict:
        return self.submit(delete_command(key, guard=guard), timeout_s)

    # ------------------------------------------------------------------ reads
    def barrier(self, timeout_s: float) -> int:
        """Commit a no-op through the log; once it is applied here, local reads are linearizable.

        A barrier changes nothing, so one whose fate is unknown (leader change in flight) is simply
        sent again until the deadline: a read never fails with UnknownOutcome.
        """
        deadline = _REAL_TIME.monotonic() + timeout_s
        while True:
            try:
                return self.submit(barrier_command(), max(0.0, deadline - _REAL_TIME.monotonic())).revision
            except UnknownOutcome:
                if _REAL_TIME.monotonic() >= deadline:
                    raise NoQuorum("no quorum: no read barrier committed within the timeout") from None
                self._closing.wait(0.01)

    def get(self, key: str, *, linearizable: bool = False, timeout_s: float = 5.0) -> KeyValue | None:
        if linearizable:
            self.barrier(timeout_s)
        return self._state.get(key)

    def range(self, prefix: str, *, linearizable: bool = False,
              timeout_s: float = 5.0) -> tuple[int, list[KeyValue]]:
        if linearizable:
            self.barrier(timeout_s)
        return self._state.range(prefix)

    def watch(self, prefix: str, after_revision: int, timeout_s: float,
              ignore: tuple[str, ...] = ()) -> int | None:
        return self._state.watch(prefix, after_revision, timeout_s, ignore)

    # ------------------------------------------------------------------ membership and operations
    def add_member(self, addr: str, timeout_s: float = 10.0) -> None:
        validate_addr(addr)
        try:
            check_can_add_member(self.settings, addr)
        except RaftConfigError as exc:
            raise KvRejected(str(exc)) from None
        wait_callback(lambda cb: self._sync.addNodeToCluster(addr, callback=cb), timeout_s,
                      f"add member {addr}")

    def remove_member(self, addr: str, timeout_s: float = 10.0) -> None:
        validate_addr(addr)
        if addr == self.settings.self_addr:
            raise KvRejected("a node cannot remove itself; ask another member")
        wait_callback(lambda cb: self._sync.removeNodeFromCluster(addr, callback=cb), timeout_s,
                      f"remove member {addr}")

    def transfer_leadership(self, addr: str | None, timeout_s: float = 5.0) -> str:
        """Hand Raft leadership to ``addr`` (or the most caught-up peer); return the new leader.

        Must run on the leader. pysyncobj refuses (KvError) unless the target has every log entry; a
        caller retries after a moment. pysyncobj's transferLeadership touches its state and sockets
        directly, so it runs on the tick thread.
        """
        if addr is not None:
            validate_addr(addr)
        deadline = _REAL_TIME.monotonic() + timeout_s

        def start(cb: Any) -> None:
            self._on_tick_thread(lambda: self._sync.transferLeadership(addr, callback=cb), timeout_s)

        wait_callback(start, timeout_s, "leadership transfer")
        while _REAL_TIME.monotonic() < deadline:
            leader = self._sync._getLeader()
            if leader is not None and leader.address != self.settings.self_addr and (
                    addr is None or leader.address == addr):
                return leader.address
            self._closing.wait(0.02)
        raise KvTimeout("leadership transfer sent but no new leader within the timeout")

    def _connected_voters(self) -> int:
        return 1 + sum(1 for n in self._sync.otherNodes if self._sync.isNodeConnected(n))

    def status(self) -> RaftStatus:
        sync = self._sync
        raw: dict[str, Any] = {}
        for _attempt in range(5):  # getStatus iterates dicts the tick thread may be resizing
            with contextlib.suppress(RuntimeError):
                raw = sync.getStatus()
                break
        leader = raw.get("leader")
        peers = tuple(
            PeerStatus(n.address, sync.isNodeConnected(n), raw.get(f"match_idx_server_{n.id}"))
            for n in sorted(sync.otherNodes, key=lambda n: n.address))
        return RaftStatus(
            self_addr=self.settings.self_addr, state=_STATES.get(raw.get("state", -1), "unknown"),
            term=int(raw.get("raft_term", 0)), leader=leader.address if leader is not None else None,
            commit_index=int(raw.get("commit_idx", 0)), last_applied=int(raw.get("last_applied", 0)),
            has_quorum=bool(sync.hasQuorum), peers=peers, revision=self._state.revision,
            ready=sync.isReady(), running=self.running,
            disk_full=self._disk.full if self._disk is not None else None,
        )

    @property
    def running(self) -> bool:
        """True while Raft's tick thread runs. It can die of errors pysyncobj does not catch (seen: a
        broken ``time.sleep`` under libfaketime); the node then answers nothing and must be restarted."""
        return self._sync.tick_thread_alive() and not self._closing.is_set()

    def fingerprint(self) -> Fingerprint:
        return self._state.fingerprint()

    def close(self) -> None:
        """Stop Raft and release the port and files. Idempotent."""
        if self._closing.is_set():
            return
        self._sync.removeOnTickCallback(self._on_tick)
        self._sync.destroy()
        self._tick_wait.wake()  # the tick thread stops after its current wait: end that wait now
        self._sync.destroy_synchronous()
        self._tick_wait.close()
        self._closing.set()
        self._owner.join(_START_TIMEOUT_S)
