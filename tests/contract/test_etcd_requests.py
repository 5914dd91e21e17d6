"""What one agent costs a shared etcd per cycle, counted by etcd itself (its gRPC metrics), and that the
cheaper paths stay correct when someone else changes the keys they rely on. Real etcd (Debian's 3.4).

An HA cycle on etcd is: a linearizable read of the scope, a renewal of the leader key and the status
(on the primary), a touch of the member key, and waits for changes. On an idle cluster that must cost
one range, the leader's keepalive (on the primary), a keepalive of the member key's lease only when it
is due (every ``(ttl - 2 * retry_timeout) / 2`` seconds, etcd.py says why) and no write, and the waits
one long-lived watch stream, not one per wait.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections import Counter
from dataclasses import replace

import httpx
from dcs_backends import etcd_client

from raftpg.clock import FakeClock
from raftpg.dcs.etcd import EtcdDcs
from raftpg.dcs.etcd_gateway import EtcdGateway, b64
from raftpg.dcs.keys import KeyLayout
from raftpg.model import Member
from raftpg.testing.poll import wait_until

T = 5.0
TTL_S = 30
DOCUMENT = Member("n1", role="primary", state="running", lsn=50331648)
_STARTED = re.compile(r'^grpc_server_started_total\{grpc_method="(\w+)",grpc_service="etcdserverpb\.\w+"')


def started(url: str) -> Counter:
    """gRPC calls etcd started so far, by method (the JSON gateway turns each request into one)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    calls: Counter = Counter()
    for line in text.splitlines():
        match = _STARTED.match(line)
        if match:
            calls[match.group(1)] += int(float(line.rsplit(" ", 1)[1]))
    return calls


def idle_primary_cycles(dcs: EtcdDcs, cycles: int, ttl_s: float, clock: FakeClock | None = None) -> None:
    """``cycles`` HA cycles of an idle primary named n1; with ``clock``, one second apart on it and without
    the waits (a wait times out on the client's clock, which stands still)."""
    for _ in range(cycles):
        if clock is not None:
            clock.advance(1.0)
        revision = dcs.load(timeout_s=T, member="n1").revision  # the loop reads as itself
        assert dcs.renew_leader("n1", ttl_s, timeout_s=T) is not None
        dcs.touch_member(DOCUMENT, ttl_s, timeout_s=T)
        dcs.set_status(DOCUMENT.lsn, timeout_s=T)  # the same position: the read found it stored
        for _ in range(4 if clock is None else 0):  # the loop waits in slices
            assert dcs.watch(revision, 0.05) is False


def registered_primary(dcs: EtcdDcs) -> None:
    """n1 holds the leader key, its member key and status are stored, and the watch stream runs."""
    dcs.load(timeout_s=T)
    assert dcs.acquire_leader("n1", TTL_S, timeout_s=T) is not None
    dcs.touch_member(DOCUMENT, TTL_S, timeout_s=T)
    dcs.set_status(DOCUMENT.lsn, timeout_s=T)
    wait_until(lambda: dcs.watcher.live, 10, "the watch stream")


def test_an_idle_primary_costs_one_read_and_one_keepalive_per_cycle(etcd_store) -> None:  # noqa: ANN001
    # retry_timeout 10 s and ttl 30 s: the member key's lease is due every 5 s, so not within these cycles
    dcs = etcd_client([etcd_store.endpoint])(KeyLayout("/service/", "requests-idle"))
    try:
        registered_primary(dcs)
        before, cycles = started(etcd_store.url), 5
        idle_primary_cycles(dcs, cycles, TTL_S)
        calls = started(etcd_store.url) - before
        assert calls == Counter({"Range": cycles, "LeaseKeepAlive": cycles}), calls
        # a moved position is written, once
        dcs.load(timeout_s=T, member="n1")
        dcs.set_status(DOCUMENT.lsn + 8192, timeout_s=T)
        dcs.load(timeout_s=T, member="n1")
        dcs.set_status(DOCUMENT.lsn + 8192, timeout_s=T)
        calls = started(etcd_store.url) - before
        assert calls["Put"] == 1 and dcs.load(timeout_s=T).last_lsn == DOCUMENT.lsn + 8192, calls
    finally:
        dcs.close()


def test_the_member_lease_is_kept_alive_only_when_due(etcd_store) -> None:  # noqa: ANN001
    clock = FakeClock()
    # ttl 30, retry_timeout 10: due every (30 - 20) / 2 = 5 s; cycles 1 s apart on this client's clock
    dcs = EtcdDcs(EtcdGateway([etcd_store.endpoint], clock=clock), KeyLayout("/service/", "requests-due"),
                  retry_timeout_s=10.0, clock=clock)
    try:
        registered_primary(dcs)
        before = started(etcd_store.url)
        idle_primary_cycles(dcs, 12, TTL_S, clock)  # at 1..12 s: the member lease at 5 and 10 s
        calls = started(etcd_store.url) - before
        assert calls == Counter({"Range": 12, "LeaseKeepAlive": 12 + 2}), calls
        # ttl 24 (edit-config): both keys move to new leases, then the member's is due every (24 - 20) / 2 s
        before = started(etcd_store.url)
        clock.advance(1.0)
        dcs.load(timeout_s=T)
        assert dcs.renew_leader("n1", 24, timeout_s=T) is not None
        dcs.touch_member(DOCUMENT, 24, timeout_s=T)
        calls = started(etcd_store.url) - before
        assert (calls["LeaseGrant"], calls["Put"], calls["LeaseKeepAlive"]) == (2, 1, 1), calls
        before = started(etcd_store.url)
        idle_primary_cycles(dcs, 4, 24, clock)  # 1..4 s after the member's grant: due at 2 and 4 s
        calls = started(etcd_store.url) - before
        assert calls == Counter({"Range": 4, "LeaseKeepAlive": 4 + 2}), calls
    finally:
        dcs.close()


def test_a_member_key_never_expires_between_refreshes_on_a_short_lease(etcd_store) -> None:  # noqa: ANN001
    # ttl 4 s, retry_timeout 1 s: due every second; cycles come every 0.2 s (a loop woken by the watch
    # does that), real time, for three lease lifetimes: another client must see the key at every read
    layout = KeyLayout("/service/", "requests-short")
    a = EtcdDcs(EtcdGateway([etcd_store.endpoint]), layout, retry_timeout_s=1.0)
    b = etcd_client([etcd_store.endpoint])(layout)
    try:
        a.load(timeout_s=T)
        a.touch_member(DOCUMENT, 4, timeout_s=T)
        wait_until(lambda: a.watcher.live, 10, "the watch stream")
        before, cycles = started(etcd_store.url), 0
        end = time.monotonic() + 12
        while time.monotonic() < end and cycles < 200:
            a.load(timeout_s=T, member="n1")
            a.touch_member(DOCUMENT, 4, timeout_s=T)
            cycles += 1
            assert [m.name for m in b.load(timeout_s=T).members] == ["n1"], f"gone after {cycles} cycles"
            a.watch(a.load(linearizable=False, timeout_s=T).revision, 0.2)
        calls = started(etcd_store.url) - before
        assert calls["Put"] == 0, calls  # the same lease and document all along
        assert 8 <= calls["LeaseKeepAlive"] < cycles, (calls, cycles)
    finally:
        a.close()
        b.close()


def test_a_member_lease_revoked_behind_its_back_is_granted_anew_before_it_is_due(etcd_store) -> None:  # noqa: ANN001
    layout = KeyLayout("/service/", "requests-revoked")
    dcs = etcd_client([etcd_store.endpoint])(layout)  # ttl 30, retry_timeout 10: not due for 5 s
    try:
        dcs.load(timeout_s=T)
        dcs.touch_member(DOCUMENT, TTL_S, timeout_s=T)
        wait_until(lambda: dcs.watcher.live, 10, "the watch stream")
        lease = dcs.watcher.state(layout.member("n1"))[0].lease
        httpx.post(f"{etcd_store.url}/v3/lease/revoke", json={"ID": lease}).raise_for_status()  # deletes the key
        wait_until(lambda: dcs.watcher.state(layout.member("n1"))[0].value is None, 10, "the deletion seen")
        dcs.touch_member(DOCUMENT, TTL_S, timeout_s=T)
        assert [m.name for m in dcs.load(timeout_s=T).members] == ["n1"]
        assert dcs.watcher.state(layout.member("n1"))[0].lease not in ("0", lease)
    finally:
        dcs.close()


def test_a_renewal_notices_the_key_taken_by_someone_else(etcd_store) -> None:  # noqa: ANN001
    layout = KeyLayout("/service/", "requests-taken")
    a, b = (etcd_client([etcd_store.endpoint])(layout) for _ in range(2))
    try:
        a.load(timeout_s=T)
        assert a.acquire_leader("n1", TTL_S, timeout_s=T) is not None
        wait_until(lambda: a.watcher.live, 10, "the watch stream")
        revision = a.load(timeout_s=T).revision
        # someone deletes the key behind raftpg's back (etcdctl del), and another node takes it
        httpx.post(f"{etcd_store.url}/v3/kv/deleterange", json={"key": b64(layout.key("leader"))}).raise_for_status()
        assert b.acquire_leader("n2", TTL_S, timeout_s=T) is not None
        assert a.watch(revision, T) is True
        assert a.renew_leader("n1", TTL_S, timeout_s=T) is None
        assert b.renew_leader("n2", TTL_S, timeout_s=T) is not None
    finally:
        a.close()
        b.close()


def test_a_member_key_deleted_by_someone_else_is_put_again(etcd_store) -> None:  # noqa: ANN001
    layout = KeyLayout("/service/", "requests-member")
    dcs = etcd_client([etcd_store.endpoint])(layout)
    try:
        dcs.load(timeout_s=T)
        dcs.touch_member(DOCUMENT, TTL_S, timeout_s=T)
        wait_until(lambda: dcs.watcher.live, 10, "the watch stream")
        httpx.post(f"{etcd_store.url}/v3/kv/deleterange", json={"key": b64(layout.member("n1"))}).raise_for_status()
        wait_until(lambda: (dcs.watcher.state(layout.member("n1")) or (None,))[0].value is None, 10,
                   "the deletion seen by the watch")
        dcs.touch_member(DOCUMENT, TTL_S, timeout_s=T)
        assert [m.name for m in dcs.load(timeout_s=T).members] == ["n1"]
        changed = replace(DOCUMENT, state="stopped")
        dcs.touch_member(changed, TTL_S, timeout_s=T)  # a changed document is always written
        assert dcs.load(timeout_s=T).members[0].state == "stopped"
    finally:
        dcs.close()
