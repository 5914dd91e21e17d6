"""Keeping the FAKE Consul honest. Consul cannot be installed on these machines, so the Consul adapter's
contract tests run against raftpg.testing.consul_fake; these tests check the fake against behaviours
that Consul's HTTP API documentation states (KV, sessions, blocking queries, transactions, ACL token).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import httpx
import pytest

from raftpg.testing.consul_fake import FakeConsul


@pytest.fixture
def consul() -> Iterator[httpx.Client]:
    fake = FakeConsul(min_session_ttl_s=0.1).start()
    with httpx.Client(base_url=fake.url, timeout=10) as client:
        yield client
    fake.stop()


def entry(client: httpx.Client, key: str) -> dict | None:
    response = client.get(f"/v1/kv/{key}")
    return response.json()[0] if response.status_code == 200 else None


def session(client: httpx.Client, ttl: str = "", behavior: str = "release", lock_delay: str = "0s") -> str:
    body = {"Behavior": behavior, "LockDelay": lock_delay, **({"TTL": ttl} if ttl else {})}
    response = client.put("/v1/session/create", json=body)
    assert response.status_code == 200, response.text
    return response.json()["ID"]


def test_check_and_set_on_modify_index(consul: httpx.Client) -> None:
    assert consul.put("/v1/kv/a?cas=0", content=b"1").json() is True  # cas=0: only if it does not exist
    assert consul.put("/v1/kv/a?cas=0", content=b"2").json() is False
    first = entry(consul, "a")
    assert base64.b64decode(first["Value"]) == b"1" and first["CreateIndex"] == first["ModifyIndex"]
    assert consul.put(f"/v1/kv/a?cas={first['ModifyIndex']}", content=b"3").json() is True
    second = entry(consul, "a")
    assert second["ModifyIndex"] > first["ModifyIndex"] and second["CreateIndex"] == first["CreateIndex"]
    assert consul.put(f"/v1/kv/a?cas={first['ModifyIndex']}", content=b"4").json() is False  # stale
    assert consul.delete("/v1/kv/a?cas=0").json() is False  # a 0 index never deletes
    assert consul.delete(f"/v1/kv/a?cas={second['ModifyIndex']}").json() is True
    assert consul.get("/v1/kv/a").status_code == 404


def test_recurse_index_and_blocking_queries(consul: httpx.Client) -> None:
    consul.put("/v1/kv/p/x", content=b"1")
    listed = consul.get("/v1/kv/p/?recurse")
    index = int(listed.headers["X-Consul-Index"])
    assert [e["Key"] for e in listed.json()] == ["p/x"] and index == listed.json()[0]["ModifyIndex"]
    started = time.monotonic()
    quiet = consul.get(f"/v1/kv/p/?recurse&index={index}&wait=300ms")
    assert 0.25 <= time.monotonic() - started < 2 and int(quiet.headers["X-Consul-Index"]) == index
    consul.put("/v1/kv/elsewhere", content=b"1")  # outside the prefix: the query keeps blocking
    assert int(consul.get(f"/v1/kv/p/?recurse&index={index}&wait=200ms").headers["X-Consul-Index"]) == index
    with httpx.Client(base_url=str(consul.base_url), timeout=10) as other:
        other.delete("/v1/kv/p/x")  # a delete moves the index (a tombstone) even though no key is left
    moved = consul.get(f"/v1/kv/p/?recurse&index={index}&wait=5s")
    assert moved.status_code == 404 and int(moved.headers["X-Consul-Index"]) > index


def test_session_ttl_bounds_follow_consul_by_default() -> None:
    fake = FakeConsul().start()  # Consul's default minimum: 10 s
    try:
        with httpx.Client(base_url=fake.url, timeout=10) as client:
            refused = client.put("/v1/session/create", json={"TTL": "5s"})
            assert refused.status_code == 500 and "Invalid Session TTL" in refused.text
            assert client.put("/v1/session/create", json={"TTL": "10s"}).status_code == 200
    finally:
        fake.stop()


def test_acquire_is_exclusive_and_counts_lock_index(consul: httpx.Client) -> None:
    s1, s2 = session(consul), session(consul)
    assert consul.put(f"/v1/kv/lock?acquire={s1}", content=b"a").json() is True
    assert consul.put(f"/v1/kv/lock?acquire={s2}", content=b"b").json() is False
    assert consul.put(f"/v1/kv/lock?acquire={s1}", content=b"a2").json() is True  # the holder may update
    held = entry(consul, "lock")
    assert held["Session"] == s1 and held["LockIndex"] == 1
    assert consul.put(f"/v1/kv/lock?release={s2}").json() is False
    assert consul.put(f"/v1/kv/lock?release={s1}", content=b"free").json() is True
    assert "Session" not in entry(consul, "lock")
    assert consul.put(f"/v1/kv/lock?acquire={s2}", content=b"b").json() is True
    assert entry(consul, "lock")["LockIndex"] == 2


def test_invalidation_deletes_or_releases_the_keys_held(consul: httpx.Client) -> None:
    deleting, releasing = session(consul, behavior="delete"), session(consul, behavior="release")
    consul.put(f"/v1/kv/d?acquire={deleting}", content=b"1")
    consul.put(f"/v1/kv/r?acquire={releasing}", content=b"1")
    assert consul.put(f"/v1/session/destroy/{deleting}").json() is True
    assert consul.put(f"/v1/session/destroy/{releasing}").json() is True
    assert entry(consul, "d") is None
    assert entry(consul, "r") is not None and "Session" not in entry(consul, "r")
    assert consul.put(f"/v1/session/renew/{deleting}").status_code == 404


def test_ttl_expiry_is_not_before_the_ttl_and_by_twice_the_ttl(consul: httpx.Client) -> None:
    started = time.monotonic()
    held = session(consul, ttl="0.4s", behavior="delete")
    consul.put(f"/v1/kv/t?acquire={held}", content=b"1")
    while entry(consul, "t") is not None:
        assert time.monotonic() - started < 0.8 + 2.0, "not invalidated by 2 x TTL"
        time.sleep(0.02)
    assert time.monotonic() - started >= 0.4  # never before the TTL
    assert consul.put(f"/v1/session/renew/{held}").status_code == 404


def test_renewal_keeps_a_session(consul: httpx.Client) -> None:
    held = session(consul, ttl="0.3s", behavior="delete")
    consul.put(f"/v1/kv/k?acquire={held}", content=b"1")
    for _ in range(10):  # 1.5 s, well past 2 x TTL
        time.sleep(0.15)
        renewed = consul.put(f"/v1/session/renew/{held}")
        assert renewed.status_code == 200 and renewed.json()[0]["TTL"] == "0.3s"
    assert entry(consul, "k") is not None


def test_lock_delay_after_invalidation(consul: httpx.Client) -> None:
    first, second = session(consul, lock_delay="0.5s"), session(consul)
    consul.put(f"/v1/kv/l?acquire={first}", content=b"1")
    destroyed = time.monotonic()
    consul.put(f"/v1/session/destroy/{first}")
    assert consul.put(f"/v1/kv/l?acquire={second}", content=b"2").json() is False
    while consul.put(f"/v1/kv/l?acquire={second}", content=b"2").json() is not True:
        assert time.monotonic() - destroyed < 3
        time.sleep(0.02)
    assert time.monotonic() - destroyed >= 0.5


def test_transactions_are_all_or_nothing(consul: httpx.Client) -> None:
    value = base64.b64encode(b"v").decode()
    failed = consul.put("/v1/txn", json=[{"KV": {"Verb": "set", "Key": "x", "Value": value}},
                                         {"KV": {"Verb": "check-index", "Key": "x", "Index": 999999}}])
    assert failed.status_code == 409 and failed.json()["Errors"][0]["OpIndex"] == 1
    assert entry(consul, "x") is None
    held = session(consul)
    done = consul.put("/v1/txn", json=[{"KV": {"Verb": "check-not-exists", "Key": "x"}},
                                       {"KV": {"Verb": "lock", "Key": "x", "Value": value, "Session": held}}])
    assert done.status_code == 200
    (result,) = done.json()["Results"]
    assert result["KV"]["Session"] == held and result["KV"]["ModifyIndex"] == entry(consul, "x")["ModifyIndex"]


def test_acl_token_is_required_when_configured() -> None:
    fake = FakeConsul(token="s3cret").start()
    try:
        with httpx.Client(base_url=fake.url, timeout=10) as client:
            assert client.get("/v1/kv/a").status_code == 403
            assert client.get("/v1/kv/a", headers={"X-Consul-Token": "s3cret"}).status_code == 404
    finally:
        fake.stop()
