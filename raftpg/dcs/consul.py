"""The DCS on Consul: KV with sessions (TTL, Behavior delete), check-and-set on ModifyIndex, blocking queries.

Consul keys have no leading slash: ``/service/demo/leader`` is stored as ``service/demo/leader``.

The port on Consul (the same documents under the same keys as the embedded store):
- Leader key: locked by a session of its own. acquire = txn(check-not-exists, lock) under a new session;
  renew = a consistent read that the key names us, then a renewal of the session that holds it (no new
  ModifyIndex, so watchers are not woken every loop). When ``ttl_s`` changed, or the session is not one
  this process created (the key was handed over, or we restarted), the key moves atomically to a new
  session of our own (txn: check-index, unlock, lock): a session dies with the Consul node that created
  it. release = delete with ``cas`` on the ModifyIndex we read naming us, then the session is destroyed;
  hand over = the same atomic move, to the candidate's name under a new session.
- Member keys: each acquired by a session of its member, renewed on every touch.
- config/failover: ``?cas=<ModifyIndex>``, where ``cas=0`` means "must not exist"; sync: a txn
  (``cas``/``set``) so the new ModifyIndex comes back with the answer.
- load: ``GET ?recurse`` (``?consistent`` when linearizable); the view's revision is ``X-Consul-Index``.
- watch: blocking queries on the prefix from ``after_revision``; a return caused only by member or status
  keys is checked against the decisive keys seen at ``after_revision`` and the query is re-armed.

Session TTLs, and why raftpg does not halve ``ttl`` as Patroni does:
- Consul accepts session TTLs from 10 s (its ``session_ttl_min``) to 24 h. A ``ttl`` below 10 s is raised.
- Consul's contract is that a session's TTL is a *lower bound*: it is never invalidated before the TTL ran
  out since its last renewal, but it may be later. Consul's leader in fact arms each session's timer at
  2 x TTL, and re-arms every timer when a Consul leader is elected (as safety rule 3 does for ours).
- Patroni creates its sessions with ``ttl/2`` for that reason: its maintainers measured sessions expiring
  after twice their TTL (patroni/patroni#174, #1579; hashicorp/consul#2966), so halving makes a dead
  primary's key disappear about ``ttl`` after its last renewal, as on etcd.
- raftpg relies only on the documented lower bound. Safety rule 2 needs the store to keep the key at
  least ``ttl`` after a confirmed renewal, since the primary counts its lease from the moment it sent it;
  with ``ttl/2`` that would hold only through Consul's 2x timer, an implementation detail. The price: a
  dead primary's key may linger up to 2 x ``ttl``, so unplanned failover on Consul can take up to twice
  as long as on etcd or the embedded store. Choose ``ttl`` with that in mind.
- Sessions are created without health checks (``Checks`` and ``NodeChecks`` empty). By default Consul ties
  a session to its agent's ``serfHealth``, which invalidates it, and deletes the leader key, as soon as the
  agent flaps: before the TTL the primary counts on (patroni/patroni#522, #543). ``LockDelay`` is 0: once
  invalidated, the key is free at once; the TTL is the only timer.

Deadlines and errors follow ``http.py``; every method's deadline is its ``timeout_s``, at most ``retry_timeout``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from raftpg.clock import Clock, SystemClock
from raftpg.config import Config
from raftpg.dcs import keys
from raftpg.dcs.base import DcsError
from raftpg.dcs.codec import (
    ClusterReader,
    failover_document,
    history_document,
    member_document,
    status_document,
    sync_document,
    sync_from_document,
)
from raftpg.dcs.consul_http import Answer, ConsulHttp, b64, parse_duration, text
from raftpg.dcs.http import client_tls
from raftpg.dcs.keys import KeyLayout
from raftpg.model import ClusterView, DynamicConfig, Failover, HistoryEntry, Leader, Member, SyncState

log = logging.getLogger(__name__)

CONSUL_MIN_SESSION_TTL_S = 10.0


def _dumps(document: Any) -> str:
    return json.dumps(document, separators=(",", ":"), sort_keys=True)


def _op(verb: str, key: str, **fields: Any) -> dict[str, Any]:
    return {"KV": {"Verb": verb, "Key": key, **fields}}


class ConsulDcs:
    def __init__(self, http: ConsulHttp, layout: KeyLayout, *, retry_timeout_s: float,
                 min_session_ttl_s: float = CONSUL_MIN_SESSION_TTL_S, clock: Clock | None = None,
                 fallback_config: DynamicConfig | None = None) -> None:
        self.failsafe_refusal: str | None = None  # Consul is a separate service: failsafe_mode allowed
        self.http = http
        self.reader = ClusterReader(fallback_config)
        self.layout = layout
        self.retry_timeout_s = retry_timeout_s
        self.min_session_ttl_s = min_session_ttl_s
        self._clock = clock or SystemClock()
        self._base = layout.prefix.lstrip("/")
        self._member_sessions: dict[str, str] = {}
        self._leader_session: str | None = None  # the session this process created for the leader key
        # the decisive keys (not members/, not status) and their ModifyIndex at the last revision read
        self._seen: tuple[int, dict[str, int]] | None = None

    # -------------------------------------------------------------- plumbing
    def _deadline(self, timeout_s: float) -> float:
        return self._clock.monotonic() + max(0.0, min(timeout_s, self.retry_timeout_s))

    def _key(self, name: str) -> str:
        return self._base + name

    def _path(self, key: str) -> str:
        return "/v1/kv/" + quote(key, safe="/")

    def _get(self, key: str, deadline: float, what: str) -> dict[str, Any] | None:
        answer = self.http.request("GET", self._path(key), params={"consistent": ""}, deadline=deadline,
                                   what=what, idempotent=True)
        return answer.data[0] if answer.status == 200 and answer.data else None

    def _put(self, key: str, value: str, deadline: float, what: str, *, idempotent: bool,
             **params: Any) -> bool:
        answer = self.http.request("PUT", self._path(key), params=params, content=value.encode(),
                                   deadline=deadline, what=what, idempotent=idempotent)
        return answer.status == 200 and answer.data is True

    def _delete(self, key: str, deadline: float, what: str, **params: Any) -> bool:
        answer = self.http.request("DELETE", self._path(key), params=params, deadline=deadline, what=what,
                                   idempotent=not params)
        return answer.status == 200 and answer.data is True

    def _txn(self, ops: list[dict[str, Any]], deadline: float, what: str) -> list[dict[str, Any]] | None:
        """The results of a committed transaction, or None when Consul rolled it back (409)."""
        answer = self.http.request("PUT", "/v1/txn", json_body=ops, deadline=deadline, what=what,
                                   idempotent=False)
        if answer.status == 409:
            return None
        if answer.status != 200 or not isinstance(answer.data, dict) or not answer.data.get("Results"):
            raise DcsError(f"consul: {what}: unexpected transaction answer (HTTP {answer.status})")
        results: list[dict[str, Any]] = answer.data["Results"]  # the shape Consul documents; not checked
        return results

    # -------------------------------------------------------------- sessions
    def session_ttl_s(self, ttl_s: float) -> float:
        return max(self.min_session_ttl_s, ttl_s)

    def _create_session(self, name: str, ttl_s: float, deadline: float, what: str) -> str:
        body = {"Name": name, "TTL": f"{self.session_ttl_s(ttl_s):g}s", "Behavior": "delete",
                "LockDelay": "0s", "Checks": [], "NodeChecks": []}
        # idempotent: a session created twice by a retry holds nothing and expires by itself
        answer = self.http.request("PUT", "/v1/session/create", json_body=body, deadline=deadline, what=what,
                                   idempotent=True)
        if answer.status != 200 or not isinstance(answer.data, dict) or not answer.data.get("ID"):
            raise DcsError(f"consul: {what}: creating a session answered HTTP {answer.status}")
        return str(answer.data["ID"])

    def _renew_session(self, session: str, deadline: float, what: str) -> float | None:
        """The session's TTL after the renewal; None once it was invalidated."""
        answer = self.http.request("PUT", f"/v1/session/renew/{session}", deadline=deadline, what=what,
                                   idempotent=True)
        if answer.status == 404:
            return None
        entries = answer.data or [{}]
        return parse_duration(entries[0].get("TTL") or "0s")

    def _destroy_session(self, session: str | None, deadline: float) -> None:
        """Best effort: a session left behind is invalidated at its TTL anyway."""
        if not session:
            return
        try:
            self.http.request("PUT", f"/v1/session/destroy/{session}", deadline=deadline,
                              what="destroy session", idempotent=True)
        except DcsError as exc:
            log.debug("could not destroy session %s: %s", session, exc)

    def _same_ttl(self, current: float, ttl_s: float) -> bool:
        return abs(current - self.session_ttl_s(ttl_s)) < 1e-3

    # -------------------------------------------------------------- reads
    def load(self, *, linearizable: bool = True, timeout_s: float,
             member: str | None = None) -> ClusterView:  # member: its key lives on a lease/session
        params = {"recurse": "", **({"consistent": ""} if linearizable else {})}
        answer = self.http.request("GET", self._path(self._base), params=params,
                                   deadline=self._deadline(timeout_s), what="read cluster", idempotent=True)
        revision, entries = answer.index, self._entries(answer)
        self._seen = (revision, self._decisive(entries))
        documents = {e["Key"][len(self._base):]: (text(e.get("Value")), int(e["ModifyIndex"])) for e in entries}
        return self.reader.read(documents, revision)

    def _entries(self, answer: Answer) -> list[dict[str, Any]]:
        return answer.data if answer.status == 200 and isinstance(answer.data, list) else []

    def _decisive(self, entries: list[dict[str, Any]]) -> dict[str, int]:
        """The keys that drive decisions (not members/, not status) and their ModifyIndex."""
        relative = ((e["Key"][len(self._base):], int(e["ModifyIndex"])) for e in entries)
        return {k: i for k, i in relative if not (k.startswith(keys.MEMBERS) or k == keys.STATUS)}

    def watch(self, after_revision: int, timeout_s: float) -> bool:
        end = self._clock.monotonic() + max(0.0, timeout_s)
        seen = self._seen
        baseline = seen[1] if seen is not None and seen[0] == after_revision else None
        index = after_revision
        while (remaining := end - self._clock.monotonic()) > 0.01 and not self.http.closed.is_set():
            try:
                revision, decisive = self._block(index, remaining)
            except (DcsError, ValueError, KeyError) as exc:
                log.debug("consul watch failed: %s", exc)
                self.http.closed.wait(max(0.0, end - self._clock.monotonic()))
                return False
            if revision < index:
                return True  # the index went backwards (a restored snapshot): cannot tell
            if revision == index:
                if baseline is None and index == after_revision:
                    baseline = decisive  # nothing moved since after_revision: this is what was there
                continue
            if baseline is None or decisive != baseline:
                return True
            index = revision  # only member or status keys moved: block again
        return False

    def _block(self, index: int, remaining: float) -> tuple[int, dict[str, int]]:
        # Consul adds up to wait/16 of jitter: ask for less so that the answer comes within the deadline
        wait_ms = max(1, int(remaining * 1000 * 0.9))
        params = {"recurse": "", "index": str(index), "wait": f"{wait_ms}ms"}
        answer = self.http.request("GET", self._path(self._base), params=params,
                                   deadline=self._clock.monotonic() + remaining, what="watch", idempotent=True)
        return answer.index, self._decisive(self._entries(answer))

    # -------------------------------------------------------------- leader key
    def acquire_leader(self, name: str, ttl_s: float, *, timeout_s: float) -> Leader | None:
        deadline, key, what = self._deadline(timeout_s), self._key(keys.LEADER), "acquire leader key"
        session = self._create_session(f"raftpg-leader-{name}", ttl_s, deadline, what)
        results = self._txn([_op("check-not-exists", key), _op("lock", key, Value=b64(name), Session=session)],
                            deadline, what)
        if results is None:
            self._destroy_session(session, deadline)
            return None
        self._leader_session = session
        return Leader(name, int(results[-1]["KV"]["ModifyIndex"]))

    def renew_leader(self, name: str, ttl_s: float, *, timeout_s: float) -> Leader | None:
        deadline, key, what = self._deadline(timeout_s), self._key(keys.LEADER), "renew leader key"
        entry = self._get(key, deadline, what)
        if entry is None or text(entry.get("Value")) != name:
            return None
        if entry.get("Session") and entry["Session"] == self._leader_session:
            current = self._renew_session(entry["Session"], deadline, what)
            if current is None:
                return None  # the session was invalidated: the key is gone
            if self._same_ttl(current, ttl_s):
                return Leader(name, int(entry["ModifyIndex"]))
        # The ttl changed in the dynamic config, or the session is not ours (the key was handed over to us,
        # or this process restarted): a session belongs to the Consul node that created it and dies with
        # that node, so move the key to a new session of our own.
        revision = self._move_lock(entry, name, ttl_s, deadline, what, ours=True)
        return Leader(name, revision) if revision is not None else None

    def _move_lock(self, entry: dict[str, Any], holder: str, ttl_s: float, deadline: float, what: str, *,
                   ours: bool) -> int | None:
        """Atomically re-lock the key we read (unchanged since) for ``holder`` under a new session
        (``ours``: this process keeps renewing it; otherwise the holder moves it to a session of its own)."""
        key, old = entry["Key"], entry.get("Session")
        session = self._create_session(f"raftpg-leader-{holder}", ttl_s, deadline, what)
        ops = [_op("check-index", key, Index=int(entry["ModifyIndex"]))]
        if old:
            ops.append(_op("unlock", key, Session=old))
        ops.append(_op("lock", key, Value=b64(holder), Session=session))
        results = self._txn(ops, deadline, what)
        if results is None:
            self._destroy_session(session, deadline)
            return None
        self._destroy_session(old, deadline)  # it holds nothing any more
        self._leader_session = session if ours else None
        return int(results[-1]["KV"]["ModifyIndex"])

    def release_leader(self, name: str, *, timeout_s: float) -> bool:
        deadline, key, what = self._deadline(timeout_s), self._key(keys.LEADER), "release leader key"
        entry = self._get(key, deadline, what)
        if entry is None or text(entry.get("Value")) != name:
            return False
        released = self._delete(key, deadline, what, cas=int(entry["ModifyIndex"]))
        if released:
            self._destroy_session(entry.get("Session"), deadline)
            self._leader_session = None
        return released

    def hand_over_leader(self, name: str, candidate: str, ttl_s: float, *, timeout_s: float) -> bool:
        deadline, key, what = self._deadline(timeout_s), self._key(keys.LEADER), "hand over leader key"
        entry = self._get(key, deadline, what)
        if entry is None or text(entry.get("Value")) != name:
            return False
        return self._move_lock(entry, candidate, ttl_s, deadline, what, ours=False) is not None

    # -------------------------------------------------------------- initialization
    def initialize(self, *, timeout_s: float) -> bool:
        return self._put(self._key(keys.INITIALIZE), "", self._deadline(timeout_s), "initialize race",
                         idempotent=False, cas=0)

    def set_initialize(self, sysid: str, *, timeout_s: float) -> None:
        deadline, key, what = self._deadline(timeout_s), self._key(keys.INITIALIZE), "store system identifier"
        entry = self._get(key, deadline, what)
        if entry is not None and text(entry.get("Value")) == "":
            self._put(key, sysid, deadline, what, idempotent=False, cas=int(entry["ModifyIndex"]))

    def cancel_initialize(self, *, timeout_s: float) -> None:
        deadline, key, what = self._deadline(timeout_s), self._key(keys.INITIALIZE), "cancel initialize"
        entry = self._get(key, deadline, what)
        if entry is not None and text(entry.get("Value")) == "":
            self._delete(key, deadline, what, cas=int(entry["ModifyIndex"]))

    # -------------------------------------------------------------- members and the rest
    def touch_member(self, member: Member, ttl_s: float, *, timeout_s: float) -> None:
        name, document = member.name, member_document(member)
        deadline, key, what = self._deadline(timeout_s), self._key(keys.MEMBERS + name), "update member key"
        session = self._member_session(name, ttl_s, deadline)
        if self._put(key, _dumps(document), deadline, what, idempotent=True, acquire=session):
            return
        # still locked by a session of an earlier run of this member: end it (that deletes the key), retry
        entry = self._get(key, deadline, what)
        if entry is not None and entry.get("Session") not in (None, session):
            self._destroy_session(entry["Session"], deadline)
        if not self._put(key, _dumps(document), deadline, what, idempotent=True, acquire=session):
            raise DcsError(f"consul: {what}: members/{name} is locked by another session")

    def _member_session(self, name: str, ttl_s: float, deadline: float) -> str:
        session = self._member_sessions.get(name)
        if session is not None:
            current = self._renew_session(session, deadline, "renew member session")
            if current is not None and self._same_ttl(current, ttl_s):
                return session
            self._destroy_session(session if current is not None else None, deadline)
        session = self._create_session(f"raftpg-member-{name}", ttl_s, deadline, "create member session")
        self._member_sessions[name] = session
        return session

    def delete_cluster(self, *, timeout_s: float) -> None:
        answer = self.http.request("DELETE", self._path(self._base), params={"recurse": ""},
                                   deadline=self._deadline(timeout_s), what="delete the cluster's keys",
                                   idempotent=True)
        if answer.status != 200:
            raise DcsError(f"delete the cluster's keys: Consul answered {answer.status}")

    def delete_member(self, name: str, *, timeout_s: float) -> None:
        deadline = self._deadline(timeout_s)
        self._delete(self._key(keys.MEMBERS + name), deadline, "delete member key")
        self._destroy_session(self._member_sessions.pop(name, None), deadline)

    def set_config(self, document: dict[str, Any], expected_revision: int | None, *, timeout_s: float) -> bool:
        return self._put(self._key(keys.CONFIG), _dumps(document), self._deadline(timeout_s), "write config",
                         idempotent=False, cas=expected_revision or 0)

    def set_failover(self, request: Failover | None, expected_revision: int | None, *,
                     timeout_s: float) -> bool:
        document = None if request is None else failover_document(request)
        deadline, key = self._deadline(timeout_s), self._key(keys.FAILOVER)
        if document is not None:
            return self._put(key, _dumps(document), deadline, "write failover", idempotent=False,
                             cas=expected_revision or 0)
        if expected_revision is None:
            return self._delete(key, deadline, "clear failover")
        return self._delete(key, deadline, "clear failover", cas=expected_revision)

    def set_sync(self, leader: str | None, standbys: tuple[str, ...], expected_revision: int | None, *,
                 timeout_s: float, quorum: int = 0) -> SyncState | None:
        key, value = self._key(keys.SYNC), _dumps(sync_document(leader, standbys, quorum))
        op = (_op("set", key, Value=b64(value)) if expected_revision is None
              else _op("cas", key, Value=b64(value), Index=expected_revision))
        results = self._txn([op], self._deadline(timeout_s), "write sync")
        return sync_from_document(value, int(results[-1]["KV"]["ModifyIndex"])) if results else None

    def set_history(self, entries: tuple[HistoryEntry, ...], *, timeout_s: float) -> None:
        self._put(self._key(keys.HISTORY), _dumps(history_document(entries)), self._deadline(timeout_s), "write history",
                  idempotent=True)

    def set_status(self, last_lsn: int, slots: Mapping[str, int] | None = None,
                   failsafe: Mapping[str, str] | None = None, *, timeout_s: float) -> None:
        self._put(self._key(keys.STATUS), _dumps(status_document(last_lsn, slots, failsafe)),
                  self._deadline(timeout_s), "write status", idempotent=True)

    def close(self) -> None:
        self.http.close()


def consul_dcs(config: Config, layout: KeyLayout, clock: Clock | None = None) -> ConsulDcs:
    """The DCS on the ``consul`` section of ``config``."""
    settings = config.consul
    if settings is None:
        raise ValueError("consul_dcs needs a config with a consul section")
    tls = None
    if settings.base_url.startswith("https://"):
        tls = client_tls(settings.cacert, settings.cert, settings.key, verify=settings.verify, section="consul")
        if not settings.verify and settings.token:
            log.warning("consul.verify is false: consul.token goes to %s without checking who answers",
                        settings.base_url)
    http = ConsulHttp(settings.base_url, token=settings.token, dc=settings.dc, tls=tls, clock=clock)
    return ConsulDcs(http, layout, retry_timeout_s=float(config.bootstrap.dcs.retry_timeout), clock=clock,
                     fallback_config=config.bootstrap.dcs.to_model())
