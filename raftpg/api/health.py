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
- read-only: primary or replica (as above). sync / async: a streaming replica in / not in the sync key.
- health: PostgreSQL is running (never on a witness). liveness: the HA loop finished a cycle within
  ``max(2*loop_wait, ttl)`` seconds (or is still within that grace since the API started).
  readiness: primary with the key, or a streaming replica.

Query filters for the role checks (Patroni's): ``lag`` (bytes or ``16MB``; replicas only, measured from the
best known primary position), ``replication_state`` (``streaming``), and any other ``key=value`` pair
compares with this node's tag of that name (``?nofailover=false``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from raftpg.api.status import in_sync_key, primary_position
from raftpg.ha.loop import NodeStatus
from raftpg.model import LocalState, parse_size_bytes

_RESERVED = frozenset({"lag", "replication_state"})


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
    tags = tuple(sorted((k, v) for k, v in query.items() if k not in _RESERVED))
    return {"lag_max_bytes": lag, "replication_state": state, "tag_filters": tags}


def _tag_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).lower()


def _tags_match(p: Probe) -> bool:
    return all(k in p.tags and _tag_text(p.tags[k]) == v.lower() for k, v in p.tag_filters)


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
    return bool(local and local.is_primary and _holds_key(p) and _tags_match(p))


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


def replica(p: Probe) -> bool:
    return _streaming_replica(p) and not p.tags.get("noloadbalance", False)


def read_only(p: Probe) -> bool:
    return primary(p) or replica(p)


def sync(p: Probe) -> bool:
    return _streaming_replica(p) and in_sync_key(p.status)


def asynchronous(p: Probe) -> bool:
    return _streaming_replica(p) and not in_sync_key(p.status)


def health(p: Probe) -> bool:
    return bool(p.local and p.local.running)


def liveness(p: Probe) -> bool:
    window = max(2 * p.loop_wait_s, p.ttl_s)
    last = p.status.cycle_monotonic if p.status.cycle_monotonic is not None else p.started
    return p.now - last <= window


def readiness(p: Probe) -> bool:
    local = p.local
    if local is None:
        return False
    if local.is_primary:
        return _holds_key(p)
    return bool(local.is_replica and local.streaming)


CHECKS: dict[str, Callable[[Probe], bool]] = {
    "/primary": primary, "/leader": primary, "/read-write": primary, "/master": primary,
    "/replica": replica, "/read-only": read_only,
    "/sync": sync, "/synchronous": sync, "/async": asynchronous, "/asynchronous": asynchronous,
    "/health": health, "/liveness": liveness, "/readiness": readiness,
}
