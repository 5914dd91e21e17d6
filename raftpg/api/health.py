"""Health-check predicates with Patroni's semantics, so HAProxy/keepalived configs work unchanged.

Each check is a pure function of a :class:`Probe`: PostgreSQL as it is now (``fresh``: observed at
request time, or at most half a second before, by ``api/fresh.py``; DESIGN.md safety rule 10), the last
HA cycle's ``NodeStatus`` for what only the loop knows (the leader key, the lease, the cluster view), the
node's tags and the query string: 200 when true, 503 when false.

- primary (``/primary``, ``/leader``, ``/read-write``, ``/master``): PostgreSQL runs read-write now and this
  node holds the leader key with a lease that has not reached its demotion point since the last cycle
  (the loop demotes ``demote_margin_s`` before the lease ends; the fencing supervisor fences soon after:
  from that moment on the node is not the primary, whatever its last cycle saw).
- replica: a running replica that streams from the primary, without ``noloadbalance``, within ``?lag=``.
- leader (``/leader``): this node holds the leader key with an unexpired lease (Patroni: the leader lock),
  whether or not PostgreSQL answers at this moment.
- read-only: primary or replica (as above). sync / async: a replica (as above) in / not in the sync key
  (async: neither a synchronous nor a quorum standby), only while the cluster view is known; read-only-sync:
  primary or sync. quorum: a replica that is a voter of the sync key under quorum commit (503 in
  synchronous mode, where /sync answers instead); read-only-quorum: primary or quorum.
- health: PostgreSQL is running (never on a witness). liveness: the cluster is paused, or the HA loop
  finished a cycle within ``loop_wait + ttl`` seconds (``loop_wait + 2*ttl`` on a replica; counted from
  the API's start before the first cycle), Patroni's thresholds.
  readiness: the leader key holder, or a streaming replica whose lag (``?lag=``, default
  ``maximum_lag_on_failover``; replayed WAL, or received WAL with ``?mode=write``) is within bounds.

Query filters (Patroni's): ``lag`` (bytes or ``16MB``; replicas only, measured from the best known primary
position), ``tag_<name>=<value>`` compares with this node's tag (a missing or false boolean tag never
matches; ignored by the primary and leader checks, as in Patroni), ``mode`` (readiness) and raftpg's
``replication_state`` (``streaming``). Other parameters are ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from raftpg.api.status import in_quorum, in_sync_key, primary_position
from raftpg.model import LocalState, NodeStatus, parse_size_bytes

TAG_PREFIX = "tag_"
_BOOLEAN_TAGS = frozenset({"nofailover", "noloadbalance", "clonefrom", "nosync", "nostream"})


class QueryError(ValueError):
    """A health-check query parameter could not be read (-> 400 naming it)."""


@dataclass(frozen=True)
class Probe:
    status: NodeStatus
    tags: Mapping[str, Any]
    fresh: LocalState | None = None      # PostgreSQL now (None: a witness, or no probe: the cycle's view)
    lag_max_bytes: int | None = None
    replication_state: str | None = None
    tag_filters: tuple[tuple[str, str], ...] = ()
    now: float = 0.0                     # monotonic, same clock as status.cycle_monotonic
    started: float = 0.0                 # monotonic time the API started (liveness grace)
    ttl_s: int = 30
    loop_wait_s: int = 10
    failover_lag_max_bytes: int = 1048576  # maximum_lag_on_failover: /readiness without ?lag
    readiness_mode: str = "apply"        # /readiness?mode=write: received WAL instead of replayed

    @property
    def local(self) -> LocalState | None:
        return self.fresh if self.fresh is not None else self.status.local


def parse_query(query: Mapping[str, str]) -> dict[str, Any]:
    """``?lag=16MB&replication_state=streaming&tag=value`` -> keyword arguments for :class:`Probe`."""
    lag = None
    if "lag" in query:
        try:
            lag = parse_size_bytes(query["lag"])
        except ValueError as exc:
            raise QueryError(f"lag: {exc}") from None
    state = query.get("replication_state")
    tags = tuple(sorted((k[len(TAG_PREFIX):], v) for k, v in query.items() if k.startswith(TAG_PREFIX)))
    mode = "write" if query.get("mode") == "write" else "apply"
    return {"lag_max_bytes": lag, "replication_state": state, "tag_filters": tags, "readiness_mode": mode}


def _tag_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).lower()


def _tags_match(p: Probe) -> bool:
    """Patroni's ``?tag_x=v``: a boolean tag that is false counts as not set (Patroni drops those)."""
    def value(k: str) -> Any:
        v = p.tags.get(k)
        return None if k in _BOOLEAN_TAGS and not v else v
    return all(value(k) is not None and _tag_text(value(k)) == v.lower() for k, v in p.tag_filters)


def _lease_unexpired(p: Probe) -> bool:
    """The lease the last cycle counted has not reached its demotion point since. The status is the last
    completed cycle's: an agent frozen (SIGSTOP, a stall) past its lease, whose PostgreSQL the supervisor
    has fenced and whose key another node now holds, must not answer as the primary from that stale status
    once it runs again; nor may a primary that is about to demote (it stops being one in a moment)."""
    last = p.status.cycle_monotonic
    return last is not None and p.now < last + p.status.lease_valid_s - p.status.demote_margin_s


def _holds_key(p: Probe) -> bool:
    if not _lease_unexpired(p):
        return False
    if p.status.view is not None:
        return p.status.holds_leader_key
    return True  # the DCS was unreadable: the lease we hold is still ours


def primary(p: Probe) -> bool:
    local = p.local
    return bool(local and local.is_primary and _holds_key(p))


def leader(p: Probe) -> bool:
    """The leader lock: a primary's lease, or a standby cluster's leader (it runs under no lease: it
    writes nothing)."""
    return not p.status.witness and (_holds_key(p) or standby_leader(p))


def _streaming_replica(p: Probe) -> bool:
    local = p.local
    if not (local and local.is_replica and local.streaming and _tags_match(p)):
        return False
    if p.replication_state is not None and p.replication_state != "streaming":
        return False
    if p.lag_max_bytes is not None:
        reference = primary_position(p.status.view)
        if reference is not None and (local.lsn is None or reference - local.lsn > p.lag_max_bytes):
            return False
    return True


def standby_leader(p: Probe) -> bool:
    """The leader of a standby cluster (holds the key, streams from the source), as Patroni's
    /standby-leader; it answers /read-only too, not /replica."""
    local = p.local
    return bool(p.status.standby_leader and local and local.is_replica)


def replica(p: Probe) -> bool:
    return _streaming_replica(p) and not p.tags.get("noloadbalance", False) and not p.status.standby_leader


def read_only(p: Probe) -> bool:
    return (primary(p) and _tags_match(p)) or standby_leader(p) or replica(p)


def sync(p: Probe) -> bool:
    return replica(p) and in_sync_key(p.status)


def asynchronous(p: Probe) -> bool:
    return p.status.view is not None and replica(p) and not in_sync_key(p.status) and not in_quorum(p.status)


def read_only_sync(p: Probe) -> bool:
    return (primary(p) and _tags_match(p)) or sync(p)


def quorum(p: Probe) -> bool:
    return replica(p) and in_quorum(p.status)


def read_only_quorum(p: Probe) -> bool:
    return (primary(p) and _tags_match(p)) or quorum(p)


def health(p: Probe) -> bool:
    return bool(p.local and p.local.running)


def liveness(p: Probe) -> bool:
    if p.status.view is not None and p.status.view.paused:
        return True  # maintenance mode: a stuck loop harms nobody (Patroni)
    local = p.local
    window = p.loop_wait_s + p.ttl_s * (1 if local is not None and local.is_primary else 2)
    last = p.status.cycle_monotonic if p.status.cycle_monotonic is not None else p.started
    return p.now - last <= window


def readiness(p: Probe) -> bool:
    local = p.local
    if local is None:
        return False
    if _holds_key(p):
        return True  # the leader (Patroni: it became one after bootstrap or as a running standby)
    if not (local.is_replica and local.streaming):
        return False
    reference = primary_position(p.status.view)
    if reference is None:
        return p.status.view is not None
    position = local.receive_lsn if p.readiness_mode == "write" else local.replay_lsn
    if position is None:
        position = local.lsn
    limit = p.lag_max_bytes if p.lag_max_bytes is not None else p.failover_lag_max_bytes
    return position is not None and reference - position <= limit


CHECKS: dict[str, Callable[[Probe], bool]] = {
    "/primary": primary, "/leader": leader, "/read-write": primary, "/master": primary,
    "/replica": replica, "/read-only": read_only,
    "/sync": sync, "/synchronous": sync, "/async": asynchronous, "/asynchronous": asynchronous,
    "/read-only-sync": read_only_sync, "/read-only-synchronous": read_only_sync,
    "/quorum": quorum, "/read-only-quorum": read_only_quorum, "/standby-leader": standby_leader,
    "/health": health, "/liveness": liveness, "/readiness": readiness,
}
