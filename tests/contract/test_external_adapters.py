"""What the etcd and Consul adapters do beyond the shared contract: building them from the config, host
failover, etcd authentication and compaction, unknown outcomes, and Consul sessions after a restart.
etcd is real (Debian's etcd-server); Consul is the FAKE in raftpg.testing.consul_fake (Consul cannot be
installed on these machines).
"""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from dcs_backends import consul_client, etcd_client, free_port

from raftpg.config import parse_config
from raftpg.dcs.base import DcsError
from raftpg.dcs.consul import ConsulDcs, consul_dcs
from raftpg.dcs.etcd import EtcdDcs, etcd_dcs
from raftpg.dcs.keys import KeyLayout
from raftpg.model import Member
from raftpg.testing.consul_fake import FakeConsul

T = 5.0
LAYOUT = KeyLayout("/service/", "adapters")


def config_with(section: dict) -> object:
    return parse_config({
        "scope": "adapters", "name": "n1", "restapi": {"listen": "127.0.0.1:8008"},
        "postgresql": {"listen": "127.0.0.1:5432", "data_dir": "/var/lib/postgresql/data"},
        "bootstrap": {"dcs": {"ttl": 5, "loop_wait": 1, "retry_timeout": 2}}, "watchdog": {"mode": "off"},
        **section,
    })


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung store)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


# ---------------------------------------------------------------------- etcd
def test_etcd_dcs_is_built_from_the_etcd3_section(etcd_store) -> None:  # noqa: ANN001
    config = config_with({"etcd3": {"hosts": [f"127.0.0.1:{free_port()}", etcd_store.endpoint]}})
    dcs = etcd_dcs(config, LAYOUT)
    try:
        assert isinstance(dcs, EtcdDcs) and dcs.retry_timeout_s == 2.0
        started = time.monotonic()
        dcs.load(timeout_s=T)  # the first host refuses connections: the second one answers
        assert time.monotonic() - started < 1.0
    finally:
        dcs.close()


def test_etcd_error_names_every_host_tried() -> None:
    hosts = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    dcs = etcd_client(hosts)(LAYOUT)
    with pytest.raises(DcsError) as raised:
        dcs.load(timeout_s=0.5)
    assert all(host in str(raised.value) for host in hosts) and "read cluster" in str(raised.value)
    dcs.close()


def test_etcd_write_without_an_answer_has_an_unknown_outcome(silent_port: int) -> None:
    dcs = etcd_client([f"127.0.0.1:{silent_port}"])(LAYOUT)
    started = time.monotonic()
    with pytest.raises(DcsError) as raised:
        dcs.initialize(timeout_s=0.5)  # sent, never answered: it may have been applied
    assert raised.value.unknown_outcome and time.monotonic() - started < 1.5
    with pytest.raises(DcsError) as raised:
        dcs.load(timeout_s=0.5)  # a read is retried, then fails, and changes nothing
    assert not raised.value.unknown_outcome
    dcs.close()


def test_etcd_with_authentication(etcd_factory) -> None:  # noqa: ANN001
    etcd = etcd_factory()  # auth changes the whole etcd: a store of its own
    with httpx.Client(base_url=f"{etcd.url}/v3", timeout=10) as gateway:
        for path, body in (("/auth/user/add", {"name": "root", "password": "pw"}),
                           ("/auth/user/grant", {"user": "root", "role": "root"}), ("/auth/enable", {})):
            assert gateway.post(path, json=body).status_code == 200, path
    anonymous = etcd_client([etcd.endpoint])(LAYOUT)
    with pytest.raises(DcsError):
        anonymous.load(timeout_s=T)
    config = config_with({"etcd3": {"host": etcd.endpoint, "username": "root", "password": "pw"}})
    dcs = etcd_dcs(config, LAYOUT)
    try:
        assert dcs.acquire_leader("n1", 5, timeout_s=T) is not None
        assert dcs.renew_leader("n1", 5, timeout_s=T) is not None
        assert dcs.load(timeout_s=T).leader.name == "n1"
    finally:
        dcs.close()
        anonymous.close()


def test_etcd_watch_from_a_compacted_revision_wakes(etcd_store) -> None:  # noqa: ANN001
    # The writer's own stream may already have delivered every event since ``old`` (then it knows nothing
    # decisive changed and rightly says False): the watch is asked of a second client whose stream starts
    # only now, from a revision the compaction took.
    layout = KeyLayout("/service/", "compacted")
    writer, watcher = etcd_client([etcd_store.endpoint])(layout), etcd_client([etcd_store.endpoint])(layout)
    try:
        old = writer.load(timeout_s=T).revision
        writer.touch_member(Member("n1", role="replica"), 30, timeout_s=T)
        writer.touch_member(Member("n2", role="replica"), 30, timeout_s=T)  # two keys: two revisions
        now = writer.load(timeout_s=T).revision
        assert now >= old + 2  # so the compaction takes the revision the watch starts from
        assert httpx.post(f"{etcd_store.url}/v3/kv/compaction", json={"revision": str(now)}).status_code == 200
        assert watcher.watch(old, 2.0) is True  # history is gone: the store cannot tell, so the loop re-reads
    finally:
        writer.close()
        watcher.close()


def test_etcd_leader_lease_is_whole_seconds_rounded_up(etcd_store) -> None:  # noqa: ANN001
    dcs = etcd_client([etcd_store.endpoint])(KeyLayout("/service/", "rounding"))
    assert dcs.acquire_leader("n1", 1.2, timeout_s=T) is not None
    key = base64.b64encode(b"/service/rounding/leader").decode()
    kv = httpx.post(f"{etcd_store.url}/v3/kv/range", json={"key": key}).json()["kvs"][0]
    ttl = httpx.post(f"{etcd_store.url}/v3/kv/lease/timetolive", json={"ID": kv["lease"]}).json()
    assert int(ttl["grantedTTL"]) == 2  # never shorter than the caller counts
    dcs.close()


# ---------------------------------------------------------------------- Consul (the fake)
def test_consul_dcs_is_built_from_the_consul_section() -> None:
    fake = FakeConsul(token="s3cret").start()
    config = config_with({"consul": {"url": fake.url, "token": "s3cret", "dc": "dc1"}})
    dcs = consul_dcs(config, LAYOUT)
    try:
        assert isinstance(dcs, ConsulDcs)
        assert dcs.session_ttl_s(5) == 10.0  # Consul's minimum session TTL
        assert dcs.initialize(timeout_s=T)  # the token was sent
    finally:
        dcs.close()
        fake.stop()


def test_consul_member_key_survives_a_restart_of_its_agent(consul_fake: FakeConsul) -> None:
    before, after = consul_client(consul_fake.url)(LAYOUT), consul_client(consul_fake.url)(LAYOUT)
    before.touch_member(Member("n1", role="replica", state="streaming"), 30, timeout_s=T)
    # a new process for the same member: the key is still locked by the old process's session
    after.touch_member(Member("n1", role="replica", state="running"), 30, timeout_s=T)
    (member,) = after.load(timeout_s=T).members
    assert member.state == "running"
    before.close()
    after.close()


def test_consul_unanswered_write_has_an_unknown_outcome(silent_port: int) -> None:
    dcs = consul_client(f"http://127.0.0.1:{silent_port}")(LAYOUT)
    with pytest.raises(DcsError) as raised:
        dcs.set_config({"ttl": 30}, None, timeout_s=0.5)
    assert raised.value.unknown_outcome
    dcs.close()
