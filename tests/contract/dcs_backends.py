"""The backends of the DCS contract suite: every test in test_dcs_contract.py runs on each of them.

- ``memory``: KvDcs on MemoryKv with a FakeClock; time passes by moving the clock and expiring leases.
- ``raft``: three RaftNode voters in this process on loopback (``raftpg.dcs.raft.raft_dcs``), real time.
- ``etcd``: a real etcd 3.4 (tests/integration/etcd_fixtures.py); skipped, saying why, when not installed.
- ``consul-fake``: ConsulDcs against ``raftpg.testing.consul_fake.FakeConsul``. This is a FAKE Consul:
  Consul cannot be installed on these machines, so the Consul adapter is checked against a small server
  that follows Consul's HTTP API documentation (and is itself tested in test_consul_fake.py). Passing
  here does not prove the adapter works with a real Consul.

Each test gets its own scope (``/service/c<N>/``) on the shared stores, so tests never see each other's keys.
The shared stores live as long as one test module (``module`` scope), not the whole session: the Raft
voters' tick threads draw election timeouts from the global ``random``, and left running through the unit
tests that follow they made hypothesis warn about ``random`` used inside its strategies. (``package`` scope
would not do: this directory is not a Python package, and pytest then keeps such a fixture to the end.)
Waiting is always polling a condition against a deadline; sleeping only paces renewals.
"""

from __future__ import annotations

import itertools
import secrets
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from raftpg.clock import FakeClock
from raftpg.consensus.memory import MemoryKv
from raftpg.consensus.raft import RaftSettings
from raftpg.dcs.base import Dcs
from raftpg.dcs.consul import ConsulDcs
from raftpg.dcs.consul_http import ConsulHttp
from raftpg.dcs.etcd import EtcdDcs
from raftpg.dcs.etcd_gateway import EtcdGateway, b64
from raftpg.dcs.keys import KeyLayout
from raftpg.dcs.kvdcs import KvDcs
from raftpg.dcs.memory import memory_dcs
from raftpg.dcs.raft import raft_dcs
from raftpg.testing.consul_fake import FakeConsul
from raftpg.testing.poll import wait_until

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
from etcd_fixtures import SKIP_REASON, EtcdProcess, etcd_binary, etcd_factory, free_port, start_etcd  # noqa: E402, F401

BACKENDS = ["memory", "raft", "etcd", "consul-fake"]
RETRY_TIMEOUT_S = 10.0
_scopes = itertools.count(1)


@dataclass
class Backend:
    """One store under test, and how time passes on it."""

    name: str
    make: Callable[[KeyLayout], Dcs]
    ttl_s: float  # the TTL the tests use
    expiry_bound_s: float  # a key not renewed for this long is gone (the store's documented upper bound)
    clock: FakeClock | None = None
    kv: MemoryKv | None = None
    layout: KeyLayout = field(default_factory=lambda: KeyLayout("/service/", f"c{next(_scopes)}"))
    clients: list[Dcs] = field(default_factory=list)

    def dcs(self) -> Dcs:
        """A new client of the store (a node of its own, as far as the store can tell)."""
        client = self.make(self.layout)
        self.clients.append(client)
        return client

    def pass_time(self, seconds: float) -> None:
        """Let ``seconds`` pass (paces renewals; never used to wait for a result)."""
        if self.clock is not None and self.kv is not None:
            self.clock.advance(seconds)
            self.kv.expire_due()
        else:
            time.sleep(seconds)

    def wait_until(self, predicate: Callable[[], Any], what: str, timeout_s: float) -> None:
        """Poll ``predicate`` against a deadline (on the FakeClock: move it in small steps)."""
        if self.clock is not None:
            step, waited = timeout_s / 20, 0.0
            while not predicate():
                if waited >= timeout_s:
                    raise AssertionError(f"{self.name}: {what} did not happen within {timeout_s:g}s")
                self.pass_time(step)
                waited += step
            return
        wait_until(predicate, timeout_s, f"{self.name}: {what}")

    def close(self) -> None:
        for client in self.clients:
            client.close()

    # -- raw access, around the Dcs port: what another writer of the store (an operator, a bug, an
    # attacker with store credentials) can put there. ``relative`` is a key under the scope prefix.
    raw_put: Callable[[str, str | bytes], None] = field(default=lambda key, value: None)
    raw_delete: Callable[[str], None] = field(default=lambda key: None)


# ---------------------------------------------------------------------- shared stores
@pytest.fixture(scope="module")
def raft_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[KvDcs]]:
    nodes = start_raft(tmp_path_factory.mktemp("raft"))
    yield nodes
    for node in nodes:
        node.close()


RAFT_PASSWORD = secrets.token_urlsafe(16)  # safety rule 9: no Raft port without a password, loopback too


def start_raft(data_dir: Path, count: int = 3) -> list[KvDcs]:
    """``count`` Raft voters on loopback, each a KvDcs that owns its node; returns once writes commit."""
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(count)]
    layout = KeyLayout("/service/", "ready")
    nodes = []
    for i, addr in enumerate(addrs):
        settings = RaftSettings(self_addr=addr, partner_addrs=tuple(a for a in addrs if a != addr),
                                data_dir=str(data_dir / f"n{i}"), password=RAFT_PASSWORD)
        (data_dir / f"n{i}").mkdir(exist_ok=True)
        nodes.append(raft_dcs(settings, layout))
    def writable() -> bool:
        nodes[0].set_status(0, timeout_s=1.0)
        return True
    wait_until(writable, 30, "the Raft voters to commit a write", interval_s=0.1, tolerate=(Exception,))
    return nodes


@pytest.fixture(scope="module")
def etcd_store() -> Iterator[EtcdProcess]:
    if etcd_binary() is None:
        pytest.skip(SKIP_REASON)
    etcd = start_etcd()
    yield etcd
    etcd.cleanup()


@pytest.fixture(scope="module")
def consul_fake() -> Iterator[FakeConsul]:
    fake = FakeConsul(min_session_ttl_s=0.1).start()
    yield fake
    fake.stop()


def etcd_client(endpoints: list[str]) -> Callable[[KeyLayout], Dcs]:
    return lambda layout: EtcdDcs(EtcdGateway(endpoints), layout, retry_timeout_s=RETRY_TIMEOUT_S)


def consul_client(url: str) -> Callable[[KeyLayout], Dcs]:
    # sessions of 0.5 s: the fake allows them; a real Consul's minimum is 10 s
    return lambda layout: ConsulDcs(ConsulHttp(url), layout, retry_timeout_s=RETRY_TIMEOUT_S, min_session_ttl_s=0.5)


def make_backend(name: str, request: pytest.FixtureRequest) -> Backend:
    store = _make_backend(name, request)
    store.raw_put, store.raw_delete = _raw_access(store, request)
    return store


def _make_backend(name: str, request: pytest.FixtureRequest) -> Backend:
    if name == "memory":
        clock = FakeClock()
        kv = MemoryKv(clock)
        return Backend(name, lambda layout: memory_dcs(clock, layout, kv), ttl_s=30.0, expiry_bound_s=30.0,
                       clock=clock, kv=kv)
    if name == "raft":
        nodes = request.getfixturevalue("raft_nodes")
        turn = itertools.cycle(nodes)
        return Backend(name, lambda layout: KvDcs(next(turn).kv, layout), ttl_s=1.0, expiry_bound_s=2.0)
    if name == "etcd":
        etcd = request.getfixturevalue("etcd_store")
        # etcd's lessor checks expiry every 500 ms, then revokes through its Raft log
        return Backend(name, etcd_client([etcd.endpoint]), ttl_s=1.0, expiry_bound_s=2.5)
    fake = request.getfixturevalue("consul_fake")
    # Consul invalidates a session up to 2 x its TTL after the last renewal (the fake: exactly 2x)
    return Backend(name, consul_client(fake.url), ttl_s=0.5, expiry_bound_s=1.5)


def _raw_access(store: Backend, request: pytest.FixtureRequest) -> tuple[Callable[[str, str | bytes], None],
                                                                         Callable[[str], None]]:
    """Put/delete any value under the scope, bypassing the DCS codec. The KV stores hold text: bytes are
    decoded with surrogateescape, which the store refuses (KvRejected) when they are not UTF-8."""
    def full(relative: str) -> str:
        return store.layout.key(relative)

    if store.name in ("memory", "raft"):
        kv = store.kv if store.kv is not None else request.getfixturevalue("raft_nodes")[0].kv

        def kv_put(relative: str, value: str | bytes) -> None:
            text = value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
            kv.put(full(relative), text, timeout_s=5.0)

        return kv_put, lambda relative: kv.delete(full(relative), timeout_s=5.0) and None
    if store.name == "etcd":
        gateway = EtcdGateway([request.getfixturevalue("etcd_store").endpoint])

        def etcd_call(path: str, body: dict[str, Any]) -> None:
            gateway.post(path, body, deadline=time.monotonic() + 5.0, what="raw " + path, idempotent=True)

        return (lambda relative, value: etcd_call("/kv/put", {"key": b64(_bytes(full(relative))), "value": b64(_bytes(value))}),
                lambda relative: etcd_call("/kv/deleterange", {"key": b64(_bytes(full(relative)))}))
    url = request.getfixturevalue("consul_fake").url

    def consul_call(method: str, relative: str, content: bytes | None = None) -> None:
        path = "/v1/kv/" + urllib.parse.quote(full(relative).lstrip("/").encode("utf-8", "surrogateescape"))
        httpx.request(method, url + path, content=content, timeout=5.0).raise_for_status()

    return (lambda relative, value: consul_call("PUT", relative, _bytes(value)),
            lambda relative: consul_call("DELETE", relative))


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    store = make_backend(request.param, request)
    yield store
    store.close()
