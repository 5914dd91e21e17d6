"""The DCS on an external etcd (v3 API) through its JSON gateway (``etcd_gateway.py``: hosts, auth, TLS).

Why the gateway and not gRPC: no protobuf toolchain or grpcio wheel, and every call is one small POST.

The port on etcd (the same documents under the same keys as the embedded store):
- Leader key: on its own lease of ``ceil(ttl_s)`` whole seconds (rounded up: the store's lease is never
  shorter than the caller's count), granted for it alone by whoever put it there (acquire, hand over).
  acquire = txn(create_revision == 0 -> put under a new lease); renew = one keepalive of the key's lease
  (restarts the countdown without a new revision, so watchers are not woken every loop) when this client
  knows the key names it on that lease: from its own linearizable read of this cycle or its own write,
  and no later change on the watch stream (below); otherwise txn(value == name -> range) first. Why one
  request is enough: while the lease lives, the key can only change by a delete or a put, and raftpg's only
  writers of it are its holder (release, hand over: this same client) and acquire, which needs it absent;
  so a key that named us on a lease that the keepalive found alive still names us. (A person deleting the
  key with etcdctl defeats any renewal scheme, this one or a txn first, from the moment after it checks.)
  When ``ttl_s`` changed, the key is re-put under a new lease, guarded on its value and mod_revision.
  release = txn(value == name -> delete), then the lease is revoked; hand over = txn(value == name -> put
  candidate under a new lease). etcd times leases on its own leader and restarts them on an etcd leader
  change, as safety rule 3 asks.
- Member keys: one lease per member, granted anew once it expired; the document is put again only when
  it changed, its lease changed, or the key no longer holds what this client put (a change on the watch
  stream or in a read). A touch keeps the lease alive only once ``(ttl - 2 * retry_timeout) / 2`` seconds
  have passed since it last did (issue 15: at 20/1/4 that is every 6 s, not every second, a third of an
  idle cluster's requests to etcd). Why a live agent's member key still never expires: while
  ``loop_wait`` is at least that threshold, every touch refreshes, as before; when it is shorter, a
  refresh comes at most threshold + ``loop_wait`` + one cycle's work after the previous one, which is
  less than ``ttl - 2 * retry_timeout + cycle``: the lease has at least ``retry_timeout`` left whenever
  a cycle's work takes less than ``retry_timeout`` (its DCS calls are bounded by it). A refresh every
  cycle left ``ttl - loop_wait - cycle``; that margin shrinks, never below ``retry_timeout``, and only
  at profiles where the threshold is above ``loop_wait``. On an idle cluster a touch is then usually no
  request at all.
- config/failover/sync: txn on mod_revision (create_revision == 0 for "must not exist").
- load: one range over the prefix: linearizable, or ``serializable`` when not asked for.
- status: not written again when the HA loop's read of this cycle (linearizable, as a member) found the
  same document stored (an idle primary's position does not move).
- watch: answered from one long-lived watch stream on the prefix (``etcd_watch.py``); changes of
  ``members/`` and ``status`` do not count.

Every method's deadline is its ``timeout_s``, never more than ``retry_timeout``.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Mapping
from typing import Any

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
from raftpg.dcs.etcd_gateway import NOT_FOUND, EtcdApiError, EtcdGateway, b64, prefix_end, text
from raftpg.dcs.etcd_watch import KeyState, PrefixWatch
from raftpg.dcs.http import client_tls
from raftpg.dcs.keys import KeyLayout
from raftpg.model import ClusterView, DynamicConfig, Failover, HistoryEntry, Leader, Member, SyncState

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ txn pieces (etcdserverpb in JSON)
def _absent(key: str) -> dict[str, Any]:
    return {"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}


def _holds(key: str, value: str) -> dict[str, Any]:
    return {"key": b64(key), "target": "VALUE", "result": "EQUAL", "value": b64(value)}


def _at(key: str, revision: int) -> dict[str, Any]:
    return {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}


def _put(key: str, value: str, lease: str | None = None) -> dict[str, Any]:
    request = {"key": b64(key), "value": b64(value)}
    return {"request_put": {**request, "lease": lease} if lease else request}


def _delete(key: str) -> dict[str, Any]:
    return {"request_delete_range": {"key": b64(key)}}


def _get(key: str) -> dict[str, Any]:
    return {"request_range": {"key": b64(key)}}


def _revision(data: dict[str, Any]) -> int:
    return int(data.get("header", {}).get("revision", 0))


def _first_kv(data: dict[str, Any]) -> dict[str, Any] | None:
    responses = data.get("responses") or [{}]
    kvs = responses[0].get("response_range", {}).get("kvs") or []
    return kvs[0] if kvs else None


def _dumps(document: Any) -> str:
    return json.dumps(document, separators=(",", ":"), sort_keys=True)


def _whole_seconds(ttl_s: float) -> int:
    return max(1, math.ceil(ttl_s))


class EtcdDcs:
    def __init__(self, gateway: EtcdGateway, layout: KeyLayout, *, retry_timeout_s: float,
                 clock: Clock | None = None, fallback_config: DynamicConfig | None = None) -> None:
        self.failsafe_refusal: str | None = None  # etcd is a separate service: failsafe_mode allowed
        self.gateway = gateway
        self.reader = ClusterReader(fallback_config)
        self.layout = layout
        self.retry_timeout_s = retry_timeout_s
        self._clock = clock or SystemClock()
        # member name -> (lease id, TTL asked, when this client last sent a refresh that etcd confirmed)
        self._member_leases: dict[str, tuple[str, int, float]] = {}
        self._member_puts: dict[str, tuple[str, str, int]] = {}  # member name -> (value, lease, mod_revision)
        self._asked: dict[str, int] = {}  # lease id -> the TTL we asked for (etcd may raise it)
        # the status document the HA loop's last read (linearizable, as a member) found; set_status spares
        # rewriting exactly that once (as kvdcs.py does): an idle primary's position does not move
        self._status_seen: str | None = None
        self._status_lock = threading.Lock()
        self.watcher = PrefixWatch(gateway, layout.prefix, self._decides, layout.relative, clock)

    # -------------------------------------------------------------- plumbing
    def _deadline(self, timeout_s: float) -> float:
        return self._clock.monotonic() + max(0.0, min(timeout_s, self.retry_timeout_s))

    def _post(self, path: str, body: dict[str, Any], deadline: float, what: str, *,
              idempotent: bool) -> dict[str, Any]:
        return self.gateway.post(path, body, deadline=deadline, what=what, idempotent=idempotent)

    def _txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]], deadline: float, what: str,
             *, idempotent: bool = False) -> tuple[bool, dict[str, Any]]:
        data = self._post("/kv/txn", {"compare": compare, "success": success}, deadline, what,
                          idempotent=idempotent)
        return bool(data.get("succeeded")), data

    def _grant(self, ttl_s: float, deadline: float, what: str) -> str:
        asked = _whole_seconds(ttl_s)
        lease = self._post("/lease/grant", {"TTL": asked}, deadline, what, idempotent=True).get("ID")
        if not lease:
            raise DcsError(f"etcd: {what}: the lease grant returned no lease")
        self._asked[str(lease)] = asked
        return str(lease)

    def _keepalive(self, lease: str, deadline: float, what: str) -> int:
        """The lease's TTL after the refresh, 0 when it no longer exists."""
        data = self._post("/lease/keepalive", {"ID": lease}, deadline, what, idempotent=True)
        return int(data.get("result", data).get("TTL", 0))

    def _revoke(self, lease: str | None, deadline: float) -> None:
        """Best effort: a lease left behind expires by itself."""
        if not lease or lease == "0":
            return
        self._asked.pop(lease, None)
        try:
            self._post("/lease/revoke", {"ID": lease}, deadline, "revoke lease", idempotent=True)
        except DcsError as exc:
            log.debug("could not revoke lease %s: %s", lease, exc)

    # -------------------------------------------------------------- reads
    def load(self, *, linearizable: bool = True, timeout_s: float,
             member: str | None = None) -> ClusterView:  # member: its key lives on a lease/session
        prefix = self.layout.prefix
        body: dict[str, Any] = {"key": b64(prefix), "range_end": b64(prefix_end(prefix))}
        if not linearizable:
            body["serializable"] = True
        if linearizable and member is not None:
            with self._status_lock:
                self._status_seen = None  # spared only by the read that follows
        data = self._post("/kv/range", body, self._deadline(timeout_s), "read cluster", idempotent=True)
        kvs = data.get("kvs") or []
        documents = {self.layout.relative(text(kv["key"])): (text(kv.get("value")), int(kv["mod_revision"]))
                     for kv in kvs}
        revision = _revision(data)
        if linearizable:
            self._observe_read(kvs, revision)
        if linearizable and member is not None:
            status = documents.get(keys.STATUS)
            with self._status_lock:
                self._status_seen = status[0] if status is not None else None
        return self.reader.read(documents, revision)

    def _observe_read(self, kvs: list[dict[str, Any]], revision: int) -> None:
        """Tell the watcher what a linearizable read found of the keys the fast paths rely on."""
        self.watcher.read_at(revision)
        found = {text(kv["key"]): kv for kv in kvs}
        for key in (self.layout.key(keys.LEADER), *(self.layout.member(n) for n in self._member_puts)):
            kv = found.get(key)
            self.watcher.observe(key, KeyState(None, "0", 0, revision) if kv is None else
                                 KeyState(text(kv.get("value")), str(kv.get("lease", "0")),
                                          int(kv["mod_revision"]), revision))

    def watch(self, after_revision: int, timeout_s: float) -> bool:
        return self.watcher.changed_after(after_revision, timeout_s)

    @staticmethod
    def _decides(relative: str) -> bool:
        return not (relative.startswith(keys.MEMBERS) or relative == keys.STATUS)

    def _known(self, key: str) -> KeyState | None:
        """The key as this client last saw it (read, wrote, or on the watch stream) if that was within
        ``retry_timeout`` and the watch stream is up to report a change since: the loop reads linearizably
        every cycle, so this is normally this cycle's. None: ask etcd."""
        seen = self.watcher.state(key)
        if not self.watcher.live or seen is None or self._clock.monotonic() - seen[1] > self.retry_timeout_s:
            return None
        return seen[0]

    # -------------------------------------------------------------- leader key
    def acquire_leader(self, name: str, ttl_s: float, *, timeout_s: float) -> Leader | None:
        deadline, key = self._deadline(timeout_s), self.layout.key(keys.LEADER)
        lease = self._grant(ttl_s, deadline, "acquire leader key")
        won, data = self._txn([_absent(key)], [_put(key, name, lease)], deadline, "acquire leader key")
        if won:
            revision = _revision(data)
            self.watcher.observe(key, KeyState(name, lease, revision, revision))
            return Leader(name, revision)
        self._revoke(lease, deadline)
        return None

    def renew_leader(self, name: str, ttl_s: float, *, timeout_s: float) -> Leader | None:
        deadline, key, what = self._deadline(timeout_s), self.layout.key(keys.LEADER), "renew leader key"
        known = self._known(key)
        if known is not None and known.value == name and known.lease != "0":
            lease, revision = known.lease, known.mod_revision  # one request: see the module docstring
        else:
            held, data = self._txn([_holds(key, name)], [_get(key)], deadline, what, idempotent=True)
            kv = _first_kv(data) if held else None
            if kv is None:
                return None
            lease, revision = str(kv.get("lease", "0")), int(kv["mod_revision"])
            self.watcher.observe(key, KeyState(name, lease, revision, _revision(data)))
        if lease != "0":
            granted = self._keepalive(lease, deadline, what)
            if granted <= 0:
                self.watcher.forget(key)
                return None  # the lease expired: the key is gone or about to go
            after = self.watcher.state(key)  # the stream may have seen a change meanwhile
            if after is not None and (after[0].value, after[0].lease) != (name, lease):
                return None
            if self._asked.get(lease, granted) == _whole_seconds(ttl_s):
                return Leader(name, revision)
        # the ttl changed in the dynamic config (or the key has no lease): move it to a new lease
        new = self._grant(ttl_s, deadline, what)
        moved, data = self._txn([_holds(key, name), _at(key, revision)], [_put(key, name, new)], deadline, what)
        if not moved:
            self.watcher.forget(key)
            self._revoke(new, deadline)
            return None
        self._revoke(lease, deadline)
        self.watcher.observe(key, KeyState(name, new, _revision(data), _revision(data)))
        return Leader(name, _revision(data))

    def release_leader(self, name: str, *, timeout_s: float) -> bool:
        deadline, key = self._deadline(timeout_s), self.layout.key(keys.LEADER)
        won, data = self._txn([_holds(key, name)], [_get(key), _delete(key)], deadline, "release leader key")
        self.watcher.forget(key)
        if won:
            kv = _first_kv(data) or {}
            self._revoke(kv.get("lease"), deadline)
        return won

    def hand_over_leader(self, name: str, candidate: str, ttl_s: float, *, timeout_s: float) -> bool:
        deadline, key, what = self._deadline(timeout_s), self.layout.key(keys.LEADER), "hand over leader key"
        lease = self._grant(ttl_s, deadline, what)
        won, data = self._txn([_holds(key, name)], [_get(key), _put(key, candidate, lease)], deadline, what)
        self.watcher.forget(key)
        if not won:
            self._revoke(lease, deadline)
            return False
        self._asked.pop(lease, None)  # the candidate's from now on
        self._revoke((_first_kv(data) or {}).get("lease"), deadline)
        return True

    # -------------------------------------------------------------- initialization
    def initialize(self, *, timeout_s: float) -> bool:
        key = self.layout.key(keys.INITIALIZE)
        won, _ = self._txn([_absent(key)], [_put(key, "")], self._deadline(timeout_s), "initialize race")
        return won

    def set_initialize(self, sysid: str, *, timeout_s: float) -> None:
        key = self.layout.key(keys.INITIALIZE)
        self._txn([_holds(key, "")], [_put(key, sysid)], self._deadline(timeout_s), "store system identifier")

    def cancel_initialize(self, *, timeout_s: float) -> None:
        key = self.layout.key(keys.INITIALIZE)
        self._txn([_holds(key, "")], [_delete(key)], self._deadline(timeout_s), "cancel initialize")

    # -------------------------------------------------------------- members and the rest
    def touch_member(self, member: Member, ttl_s: float, *, timeout_s: float) -> None:
        name, document = member.name, member_document(member)
        deadline, what, key = self._deadline(timeout_s), "update member key", self.layout.member(name)
        value = _dumps(document)
        lease = self._member_lease(name, ttl_s, deadline)
        if self._still_holds(name, key, value, lease):
            return  # the keepalive above was the whole touch
        put = {"key": b64(key), "value": b64(value)}
        try:
            data = self._post("/kv/put", {**put, "lease": lease}, deadline, what, idempotent=True)
        except EtcdApiError as exc:
            if exc.code != NOT_FOUND:
                raise
            self._member_leases.pop(name, None)  # expired since its last refresh: grant anew
            lease = self._member_lease(name, ttl_s, deadline)
            data = self._post("/kv/put", {**put, "lease": lease}, deadline, what, idempotent=True)
        revision = _revision(data)
        self._member_puts[name] = (value, lease, revision)
        self.watcher.observe(key, KeyState(value, lease, revision, revision))

    def _still_holds(self, name: str, key: str, value: str, lease: str) -> bool:
        """The member key holds, under ``lease``, the document this client put last, and that is ``value``."""
        put = self._member_puts.get(name)
        known = self._known(key)
        return (put is not None and put == (value, lease, put[2]) and known is not None
                and (known.value, known.lease, known.mod_revision) == put)

    def _member_lease(self, name: str, ttl_s: float, deadline: float) -> str:
        """The member's lease, refreshed if it is due (the module docstring says when), or a new one."""
        current = self._member_leases.get(name)
        asked = _whole_seconds(ttl_s)
        sent = self._clock.monotonic()  # the lease runs from no earlier than this
        if current is not None and current[1] == asked:
            if sent - current[2] < (asked - 2 * self.retry_timeout_s) / 2:
                return current[0]
            if self._keepalive(current[0], deadline, "member") > 0:
                self._member_leases[name] = (current[0], asked, sent)
                return current[0]
        lease = self._grant(asked, deadline, "update member key")
        self._member_leases[name] = (lease, asked, sent)
        return lease  # an old lease now holds nothing once the put moves the key: it expires by itself

    def delete_cluster(self, *, timeout_s: float) -> None:
        prefix = self.layout.prefix
        self._post("/kv/deleterange", {"key": b64(prefix), "range_end": b64(prefix_end(prefix))},
                   self._deadline(timeout_s), "delete the cluster's keys", idempotent=True)
        self._member_puts.clear()  # what this client last wrote is gone

    def delete_member(self, name: str, *, timeout_s: float) -> None:
        deadline = self._deadline(timeout_s)
        self._post("/kv/deleterange", {"key": b64(self.layout.member(name))}, deadline, "delete member key",
                   idempotent=True)
        lease = self._member_leases.pop(name, None)
        self._member_puts.pop(name, None)
        self.watcher.forget(self.layout.member(name))
        self._revoke(lease[0] if lease else None, deadline)

    def _cas(self, name: str, op: dict[str, Any], expected_revision: int | None, timeout_s: float,
             what: str) -> tuple[bool, dict[str, Any]]:
        key = self.layout.key(name)
        guard = _absent(key) if expected_revision is None else _at(key, expected_revision)
        return self._txn([guard], [op], self._deadline(timeout_s), what)

    def set_config(self, document: dict[str, Any], expected_revision: int | None, *, timeout_s: float) -> bool:
        op = _put(self.layout.key(keys.CONFIG), _dumps(document))
        return self._cas(keys.CONFIG, op, expected_revision, timeout_s, "write config")[0]

    def set_failover(self, request: Failover | None, expected_revision: int | None, *,
                     timeout_s: float) -> bool:
        document = None if request is None else failover_document(request)
        key = self.layout.key(keys.FAILOVER)
        if document is None and expected_revision is None:
            self._post("/kv/deleterange", {"key": b64(key)}, self._deadline(timeout_s), "clear failover",
                       idempotent=True)
            return True
        op = _delete(key) if document is None else _put(key, _dumps(document))
        return self._cas(keys.FAILOVER, op, expected_revision, timeout_s, "write failover")[0]

    def set_sync(self, leader: str | None, standbys: tuple[str, ...], expected_revision: int | None, *,
                 timeout_s: float, quorum: int = 0) -> SyncState | None:
        key, value = self.layout.key(keys.SYNC), _dumps(sync_document(leader, standbys, quorum))
        guard = [] if expected_revision is None else [_at(key, expected_revision)]
        done, data = self._txn(guard, [_put(key, value)], self._deadline(timeout_s), "write sync")
        return sync_from_document(value, _revision(data)) if done else None

    def _put_plain(self, name: str, value: str, timeout_s: float, what: str) -> None:
        self._post("/kv/put", {"key": b64(self.layout.key(name)), "value": b64(value)},
                   self._deadline(timeout_s), what, idempotent=True)

    def set_history(self, entries: tuple[HistoryEntry, ...], *, timeout_s: float) -> None:
        self._put_plain(keys.HISTORY, _dumps(history_document(entries)), timeout_s, "write history")

    def set_status(self, last_lsn: int, slots: Mapping[str, int] | None = None,
                   failsafe: Mapping[str, str] | None = None, *, timeout_s: float) -> None:
        value = _dumps(status_document(last_lsn, slots, failsafe))
        with self._status_lock:
            seen, self._status_seen = self._status_seen, None
        if value == seen:
            return  # this cycle's linearizable read found this very document stored
        self._put_plain(keys.STATUS, value, timeout_s, "write status")

    def close(self) -> None:
        self.gateway.close()


def etcd_dcs(config: Config, layout: KeyLayout, clock: Clock | None = None) -> EtcdDcs:
    """The DCS on the ``etcd3`` section of ``config``."""
    settings = config.etcd3
    if settings is None:
        raise ValueError("etcd_dcs needs a config with an etcd3 section")
    tls = None
    if settings.protocol == "https":
        tls = client_tls(settings.cacert, settings.cert, settings.key, section="etcd3")
    gateway = EtcdGateway(settings.hosts, protocol=settings.protocol, username=settings.username,
                          password=settings.password, tls=tls, clock=clock)
    return EtcdDcs(gateway, layout, retry_timeout_s=float(config.bootstrap.dcs.retry_timeout), clock=clock,
                   fallback_config=config.bootstrap.dcs.to_model())
