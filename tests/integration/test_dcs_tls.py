"""Issue 12 item 12: TLS and credentials towards an external DCS.

etcd is REAL: Debian's etcd 3.4 (/usr/bin/etcd), started by each test with certificates made by trustme,
serving clients over HTTPS (and, where said, demanding a client certificate). The adapter is built from
the ``etcd3`` section exactly as a node builds it (``etcd_dcs(config)``).

Consul is the in-process FAKE (raftpg.testing.consul_fake) served over HTTPS: Consul cannot be installed
on these machines, so these tests show what raftpg sends (TLS verification, the token) and prove nothing
about a real Consul agent.

The refusals of credentials over plain HTTP are config rules, tested in tests/unit/test_dcs_credentials.py.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme
from etcd_fixtures import EtcdTls, etcd_factory  # noqa: F401 - a fixture

from raftpg.config import parse_config
from raftpg.dcs.base import DcsError
from raftpg.dcs.consul import consul_dcs
from raftpg.dcs.etcd import etcd_dcs
from raftpg.dcs.keys import KeyLayout
from raftpg.model import Member
from raftpg.testing.consul_fake import FakeConsul

T = 5.0
LAYOUT = KeyLayout("/service/", "tls")


def config_with(section: dict) -> object:
    return parse_config({
        "scope": "tls", "name": "n1", "restapi": {"listen": "127.0.0.1:8008"},
        "postgresql": {"listen": "127.0.0.1:5432", "data_dir": "/var/lib/postgresql/data"},
        "bootstrap": {"dcs": {"ttl": 5, "loop_wait": 1, "retry_timeout": 2}}, "watchdog": {"mode": "off"},
        **section,
    })


def etcd3(etcd, **keys: object) -> dict:  # noqa: ANN001
    return {"etcd3": {"hosts": [etcd.endpoint], "protocol": "https", **keys}}


def exercise(dcs) -> None:  # noqa: ANN001
    """The calls an HA cycle makes: every one must go through."""
    try:
        assert dcs.initialize(timeout_s=T)
        assert dcs.acquire_leader("n1", 5, timeout_s=T) is not None
        dcs.touch_member(Member("n1", role="primary", state="running"), 5, timeout_s=T)
        assert dcs.renew_leader("n1", 5, timeout_s=T) is not None
        view = dcs.load(timeout_s=T)
        assert view.leader.name == "n1" and [m.name for m in view.members] == ["n1"]
    finally:
        dcs.close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(tmp_path: Path, ca: trustme.CA) -> EtcdTls:
    return EtcdTls.make(tmp_path, ca, client_cert_auth=True)


# ---------------------------------------------------------------------- etcd (real)
def test_etcd_over_https_with_a_client_certificate(etcd_factory, tls_files: EtcdTls) -> None:  # noqa: F811
    etcd = etcd_factory(tls_files)
    exercise(etcd_dcs(config_with(etcd3(etcd, cacert=str(tls_files.ca), cert=str(tls_files.client),
                                        key=str(tls_files.client))), LAYOUT))
    # the same etcd over plain HTTP gets nowhere: the test above did speak TLS
    plain = etcd_dcs(config_with({"etcd3": {"hosts": [etcd.endpoint]}}), LAYOUT)
    with pytest.raises(DcsError):
        plain.load(timeout_s=1.0)
    plain.close()


def test_etcd_demanding_a_client_certificate_refuses_a_client_without_one(etcd_factory,  # noqa: F811
                                                                           tls_files: EtcdTls) -> None:
    etcd = etcd_factory(tls_files)
    dcs = etcd_dcs(config_with(etcd3(etcd, cacert=str(tls_files.ca))), LAYOUT)
    with pytest.raises(DcsError) as raised:
        dcs.load(timeout_s=1.0)
    dcs.close()
    assert etcd.endpoint in str(raised.value)


def test_an_etcd_whose_certificate_the_cacert_does_not_vouch_for_is_refused(etcd_factory, tmp_path: Path,  # noqa: F811
                                                                            tls_files: EtcdTls) -> None:
    etcd = etcd_factory(tls_files)
    stranger = trustme.CA()
    stranger.cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
    dcs = etcd_dcs(config_with(etcd3(etcd, cacert=str(tmp_path / "other-ca.pem"), cert=str(tls_files.client),
                                     key=str(tls_files.client))), LAYOUT)
    with pytest.raises(DcsError, match="CERTIFICATE_VERIFY_FAILED"):
        dcs.load(timeout_s=1.0)
    dcs.close()


def test_etcd_username_and_password_over_https(etcd_factory, tmp_path: Path, ca: trustme.CA) -> None:  # noqa: F811
    files = EtcdTls.make(tmp_path, ca)  # server TLS only: the password is what authenticates
    etcd = etcd_factory(files)
    with httpx.Client(base_url=f"{etcd.url}/v3", verify=files.client_context(), timeout=10) as gateway:
        for path, body in (("/auth/user/add", {"name": "root", "password": "pw"}),
                           ("/auth/user/grant", {"user": "root", "role": "root"}), ("/auth/enable", {})):
            assert gateway.post(path, json=body).status_code == 200, path
    exercise(etcd_dcs(config_with(etcd3(etcd, cacert=str(files.ca), username="root", password="pw")), LAYOUT))
    wrong = etcd_dcs(config_with(etcd3(etcd, cacert=str(files.ca), username="root", password="nope")), LAYOUT)
    with pytest.raises(DcsError, match="authentication failed"):
        wrong.load(timeout_s=T)
    wrong.close()


def test_unreadable_tls_files_stop_the_node_with_the_key_named(tmp_path: Path) -> None:
    missing = str(tmp_path / "absent.pem")
    with pytest.raises(ValueError, match=r"^etcd3.cacert: cannot load .*absent.pem"):
        etcd_dcs(config_with({"etcd3": {"hosts": ["127.0.0.1:2379"], "protocol": "https", "cacert": missing}}),
                 LAYOUT)
    with pytest.raises(ValueError, match=r"^etcd3.cert/key: cannot load .*absent.pem"):
        etcd_dcs(config_with({"etcd3": {"hosts": ["127.0.0.1:2379"], "protocol": "https", "cert": missing,
                                        "key": missing}}), LAYOUT)


# ---------------------------------------------------------------------- Consul (the FAKE)
@pytest.fixture
def consul_over_https(tmp_path: Path, ca: trustme.CA) -> Iterator[tuple[FakeConsul, Path]]:
    server = ca.issue_cert("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    fake = FakeConsul(token="s3cret").start(tls=context)
    try:
        yield fake, tmp_path / "ca.pem"
    finally:
        fake.stop()


def test_consul_fake_over_https_with_a_token(consul_over_https: tuple[FakeConsul, Path]) -> None:
    fake, cacert = consul_over_https
    assert fake.url.startswith("https://")
    exercise(consul_dcs(config_with({"consul": {"url": fake.url, "token": "s3cret", "cacert": str(cacert)}}),
                        LAYOUT))


def test_consul_fake_with_an_unknown_certificate_is_refused(consul_over_https: tuple[FakeConsul, Path],
                                                            tmp_path: Path) -> None:
    fake, _ = consul_over_https
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
    dcs = consul_dcs(config_with({"consul": {"url": fake.url, "token": "s3cret",
                                             "cacert": str(tmp_path / "other-ca.pem")}}), LAYOUT)
    with pytest.raises(DcsError, match="CERTIFICATE_VERIFY_FAILED"):
        dcs.load(timeout_s=1.0)
    dcs.close()
