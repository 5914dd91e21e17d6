"""What one agent costs a shared etcd per cycle, counted by etcd itself (its gRPC metrics), and that the
cheaper paths stay correct when someone else changes the keys they rely on. Real etcd (Debian's 3.4).

An HA cycle on etcd is: a linearizable read of the scope, a renewal of the leader key (on the primary),
a touch of the member key, and waits for changes. On an idle cluster that must cost one range, one
keepalive per lease and no write, and the waits one long-lived watch stream, not one per wait.
"""

from __future__ import annotations

import re
import urllib.request
from collections import Counter
from dataclasses import replace

import httpx
from dcs_backends import etcd_client

from raftpg.dcs.etcd_gateway import b64
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


def test_an_idle_primary_costs_one_read_and_one_keepalive_per_lease_per_cycle(etcd_store) -> None:  # noqa: ANN001
    dcs = etcd_client([etcd_store.endpoint])(KeyLayout("/service/", "requests-idle"))
    try:
        dcs.load(timeout_s=T)
        assert dcs.acquire_leader("n1", TTL_S, timeout_s=T) is not None
        dcs.touch_member(DOCUMENT, TTL_S, timeout_s=T)
        wait_until(lambda: dcs.watcher.live, 10, "the watch stream")
        before, cycles = started(etcd_store.url), 5
        for _ in range(cycles):
            revision = dcs.load(timeout_s=T).revision
            assert dcs.renew_leader("n1", TTL_S, timeout_s=T) is not None
            dcs.touch_member(DOCUMENT, TTL_S, timeout_s=T)
            for _ in range(4):  # the loop waits in slices
                assert dcs.watch(revision, 0.05) is False
        calls = started(etcd_store.url) - before
        assert calls == Counter({"Range": cycles, "LeaseKeepAlive": 2 * cycles}), calls
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
