"""RaftNode: the replicated KV on a pysyncobj ``SyncObj``, by composition (never inheritance).

Only this module imports pysyncobj. Our commands cross the log as versioned JSON bytes handed to a
single ``@replicated`` method of a consumer; pysyncobj still pickles its own frames, which is why a
password (Fernet) is required off loopback (DESIGN.md safety rule 9, enforced in ``RaftSettings``).

Threads: pysyncobj's tick thread applies commands, runs the leader's lease clock and fires callbacks;
callers block on an Event with a timeout (``submit``), so the API is safe from any thread and from
asyncio via ``asyncio.to_thread``.

Write path: ``submit`` queues the command; with no known leader it fails fast and retries until its
deadline (nothing was proposed, so a retry is safe); once proposed, a lost leader yields
:class:`UnknownOutcome` and a silent timeout yields :class:`NoQuorum` or :class:`KvTimeout`.
Linearizable reads commit a barrier through the log, then read the local state.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.node import TCPNode

from raftpg.clock import Clock, SystemClock
from raftpg.consensus.api import (
    KvError,
    KvRejected,
    KvTimeout,
    NoQuorum,
    PeerStatus,
    RaftStatus,
    UnknownOutcome,
)
from raftpg.consensus.state import GuardedState, unwrap
from raftpg.kv import (
    Committed,
    Conflict,
    Guard,
    KeyValue,
    LeaseClock,
    Rejected,
    barrier_command,
    decode,
    delete_command,
    encode,
    put_command,
    touch_command,
    validate_key_value,
)

log = logging.getLogger(__name__)

_STATES = {0: "follower", 1: "candidate", 2: "leader"}
_RETRYABLE = {FAIL_REASON.MISSING_LEADER, FAIL_REASON.QUEUE_FULL}


class _BenignTruncation(logging.Filter):
    """Demote pysyncobj's "truncating already-applied log entries" to DEBUG.

    With unbatched appends the leader optimistically advances a follower's next index and rewinds it
    when an older acknowledgement arrives, so the follower receives entries it already has and
    truncates them before re-adding the identical entries. Applied entries are committed, and committed
    entries never conflict in Raft, so this is a resend, not divergence. Replica agreement is checked
    by the tests (every replica's KV fingerprint is equal), not by this message.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL and "truncating already-applied" in str(record.msg):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger("pysyncobj").isEnabledFor(logging.DEBUG)
        return True


logging.getLogger("pysyncobj.syncobj").addFilter(_BenignTruncation())


class RaftConfigError(ValueError):
    """The Raft settings are unsafe or unusable; the message names the setting."""


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class RaftSettings:
    self_addr: str
    partner_addrs: tuple[str, ...]
    data_dir: str | None
    bind_addr: str | None = None
    password: str | None = None
    election_timeout_min_s: float = 0.4
    election_timeout_max_s: float = 1.4
    heartbeat_s: float = 0.1
    leader_fallback_s: float = 1.5

    def check(self) -> None:
        bind = self.bind_addr or self.self_addr
        host = bind.rsplit(":", 1)[0]
        if not self.password and not is_loopback(host):
            raise RaftConfigError(
                f"raft.password: required when Raft listens on {bind} (not loopback): pysyncobj "
                "unpickles every frame it receives, so an open port without a password is remote "
                "code execution")
        if self.self_addr in self.partner_addrs:
            raise RaftConfigError(f"raft.partner_addrs: contains this node's own self_addr {self.self_addr}")


class _KvConsumer(SyncObjConsumer):
    """The one replicated method. Runs on pysyncobj's tick thread on every replica."""

    def __init__(self, state: GuardedState) -> None:
        super().__init__()
        self._kv = state

    @replicated
    def command(self, payload: bytes) -> Any:
        return self._kv.apply(decode(payload) if isinstance(payload, bytes) else Rejected("bad payload"))

    def _serialize(self) -> dict:
        return self._kv.snapshot()

    def _deserialize(self, data: dict) -> None:
        self._kv.restore(data)


def _check_bindable(addr: str) -> None:
    host, port = addr.rsplit(":", 1)
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), int(port)))
        except OSError as exc:
            raise RaftConfigError(f"raft: cannot listen on {addr}: {exc.strerror or exc}") from None


class RaftNode:
    """One voter (or, with ``witness``, the same thing: a witness differs only above this layer)."""

    def __init__(self, settings: RaftSettings, clock: Clock | None = None) -> None:
        settings.check()
        self.settings = settings
        self._clock = clock or SystemClock()
        self._state = GuardedState()
        self._leases = LeaseClock()
        self._was_leader = False
        self._consumer = _KvConsumer(self._state)
        _check_bindable(settings.bind_addr or settings.self_addr)
        conf = self._conf(settings)
        self._sync = SyncObj(settings.self_addr, list(settings.partner_addrs), conf=conf,
                             consumers=[self._consumer])
        if not self._sync.tick_thread_alive():
            raise RaftConfigError(f"raft: could not start on {settings.self_addr}")
        self._sync.addOnTickCallback(self._on_tick)

    @staticmethod
    def _conf(settings: RaftSettings) -> SyncObjConf:
        journal = dump = None
        if settings.data_dir:
            os.makedirs(settings.data_dir, mode=0o700, exist_ok=True)
            stem = settings.self_addr.replace(":", "_").replace("/", "_")
            journal = os.path.join(settings.data_dir, f"{stem}.journal")
            dump = os.path.join(settings.data_dir, f"{stem}.dump")
        return SyncObjConf(
            password=settings.password or None, journalFile=journal, fullDumpFile=dump,
            dynamicMembershipChange=True, commandsWaitLeader=False, appendEntriesUseBatch=False,
            raftMinTimeout=settings.election_timeout_min_s, raftMaxTimeout=settings.election_timeout_max_s,
            appendEntriesPeriod=settings.heartbeat_s, leaderFallbackTimeout=settings.leader_fallback_s,
            connectionTimeout=max(3.5, settings.election_timeout_max_s), connectionRetryTime=1.0,
            bindAddress=settings.bind_addr, maxBindRetries=3, useFork=False,
            logCompactionMinEntries=20000, logCompactionMinTime=300,
        )

    # ------------------------------------------------------------------ leader-only lease expiry
    def _on_tick(self) -> None:
        """Tick thread. The leader proposes expiry of leases it has timed out on its monotonic clock."""
        leader = self._sync._isLeader()
        if leader != self._was_leader:
            self._leases.reset()  # safety rule 3: a new leader restarts every countdown
            self._was_leader = leader
        if not leader:
            return
        for command in self._leases.due(self._state.locked_state(), self._clock.monotonic()):
            log.info("lease expired on the Raft leader's clock: %s", command["key"])
            self._consumer.command(encode(command), callback=lambda result, error: None)

    # ------------------------------------------------------------------ writes
    def submit(self, command: dict, timeout_s: float) -> Committed | Conflict:
        self._state.check_failed()
        payload = encode(command)
        deadline = time.monotonic() + timeout_s
        while True:
            done = threading.Event()
            box: dict[str, Any] = {}

            def on_result(result: Any, error: int, box: dict = box, done: threading.Event = done) -> None:
                box["result"], box["error"] = result, error
                done.set()

            self._consumer.command(payload, callback=on_result)
            if not done.wait(max(0.0, deadline - time.monotonic())):
                if not self._sync.hasQuorum:
                    raise NoQuorum(f"no quorum: this node reaches {self._connected_voters()} of "
                                   f"{len(self.settings.partner_addrs) + 1} voters")
                raise KvTimeout(f"no answer within {timeout_s:.1f}s; the outcome is unknown")
            error = box["error"]
            if error == FAIL_REASON.SUCCESS:
                return unwrap(box["result"])
            if error in _RETRYABLE and time.monotonic() < deadline:
                self._clock.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
                continue
            if error in _RETRYABLE:
                raise NoQuorum("no quorum: no Raft leader is known to this node")
            raise UnknownOutcome(f"Raft leadership changed during the request (reason {error})")

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
        result = self.submit(barrier_command(), timeout_s)
        return result.revision

    def get(self, key: str, *, linearizable: bool = False, timeout_s: float = 5.0) -> KeyValue | None:
        if linearizable:
            self.barrier(timeout_s)
        return self._state.get(key)

    def range(self, prefix: str, *, linearizable: bool = False,
              timeout_s: float = 5.0) -> tuple[int, list[KeyValue]]:
        if linearizable:
            self.barrier(timeout_s)
        return self._state.range(prefix)

    def watch(self, prefix: str, after_revision: int, timeout_s: float) -> int | None:
        return self._state.watch(prefix, after_revision, timeout_s)

    # ------------------------------------------------------------------ membership and operations
    def _wait_callback(self, start: Any, timeout_s: float, what: str) -> None:
        done = threading.Event()
        box: dict[str, Any] = {}

        def on_result(result: Any, error: int) -> None:
            box["error"] = error
            done.set()

        start(on_result)
        if not done.wait(timeout_s):
            raise KvTimeout(f"{what}: no answer within {timeout_s:.1f}s")
        if box["error"] != FAIL_REASON.SUCCESS:
            raise KvError(f"{what} refused (pysyncobj reason {box['error']})")

    def add_member(self, addr: str, timeout_s: float = 10.0) -> None:
        _validate_addr(addr)
        self._wait_callback(lambda cb: self._sync.addNodeToCluster(addr, callback=cb), timeout_s,
                            f"add member {addr}")

    def remove_member(self, addr: str, timeout_s: float = 10.0) -> None:
        _validate_addr(addr)
        if addr == self.settings.self_addr:
            raise KvRejected("a node cannot remove itself; ask another member")
        self._wait_callback(lambda cb: self._sync.removeNodeFromCluster(addr, callback=cb), timeout_s,
                            f"remove member {addr}")

    def transfer_leadership(self, addr: str | None, timeout_s: float = 5.0) -> str:
        """Hand Raft leadership to ``addr`` (or the most caught-up peer); return the new leader."""
        if addr is not None:
            _validate_addr(addr)
        self._wait_callback(lambda cb: self._sync.transferLeadership(addr, callback=cb), timeout_s,
                            "leadership transfer")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            leader = self._sync._getLeader()
            if leader is not None and leader.address != self.settings.self_addr and (
                    addr is None or leader.address == addr):
                return leader.address
            self._clock.sleep(0.02)
        raise KvTimeout("leadership transfer sent but no new leader within the timeout")

    def _connected_voters(self) -> int:
        return 1 + sum(1 for n in self._sync.otherNodes if self._sync.isNodeConnected(n))

    def status(self) -> RaftStatus:
        sync = self._sync
        raw = sync.getStatus()
        leader = raw.get("leader")
        peers = tuple(
            PeerStatus(n.address, sync.isNodeConnected(n), raw.get(f"match_idx_server_{n.id}"))
            for n in sorted(sync.otherNodes, key=lambda n: n.address))
        return RaftStatus(
            self_addr=self.settings.self_addr, state=_STATES.get(raw.get("state"), "unknown"),
            term=int(raw.get("raft_term", 0)), leader=leader.address if leader is not None else None,
            commit_index=int(raw.get("commit_idx", 0)), last_applied=int(raw.get("last_applied", 0)),
            has_quorum=bool(sync.hasQuorum), peers=peers, revision=self._state.revision,
            ready=sync.isReady(),
        )

    def fingerprint(self) -> tuple:
        return self._state.fingerprint()

    def close(self) -> None:
        self._sync.removeOnTickCallback(self._on_tick)
        self._sync.destroy_synchronous()


def _validate_addr(addr: str) -> None:
    try:
        TCPNode(addr)
        host, port = addr.rsplit(":", 1)
        if not host or not 0 < int(port) < 65536:
            raise ValueError
    except (ValueError, AttributeError):
        raise KvRejected(f"not a host:port Raft address: {addr!r}") from None
