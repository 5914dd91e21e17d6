"""Issue 12 item 12: credentials for etcd and Consul never cross the network in clear text by accident.

``etcd3.username``/``password`` (and the token etcd hands out for them) and ``consul.token`` over plain
HTTP to a host off loopback are refused, naming the key to change and the one that accepts the risk
(``allow_plaintext_credentials``); a CA or client certificate with plain HTTP, which would silently do
nothing, is refused too. The TLS itself is tested against a real etcd in tests/integration/test_dcs_tls.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from raftpg.config import ConfigError, parse_config

CREDS = {"username": "root", "password": "pw"}
ETCD_CLEAR = ("etcd3.protocol: is 'http', which would send etcd3.username/password in clear text to {hosts}: "
              "use https, or set etcd3.allow_plaintext_credentials: true to accept that")
CONSUL_CLEAR = ("consul.{key}: {said}, which would send consul.token in clear text to {host}: use https, or set "
                "consul.allow_plaintext_credentials: true to accept that")


def config(section: dict[str, Any]) -> Any:
    return parse_config({
        "scope": "demo", "name": "n1", "restapi": {"listen": "127.0.0.1:8008"},
        "postgresql": {"listen": "127.0.0.1:5432", "data_dir": "/var/lib/postgresql/data"}, **section,
    })


def refusal(section: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        config(section)
    return list(raised.value.errors)


@pytest.mark.parametrize(("etcd3", "expected"), [
    ({"hosts": ["10.0.0.1:2379", "127.0.0.1:2379"], **CREDS}, ETCD_CLEAR.format(hosts="10.0.0.1:2379")),
    ({"host": "etcd.example:2379", **CREDS}, ETCD_CLEAR.format(hosts="etcd.example:2379")),
    ({"hosts": "10.0.0.1:2379,10.0.0.2:2379", "protocol": "HTTP", **CREDS},
     ETCD_CLEAR.format(hosts="10.0.0.1:2379, 10.0.0.2:2379")),
    ({"hosts": ["10.0.0.1:2379"], "cacert": "/etc/etcd/ca.pem"},
     "etcd3.protocol: is 'http' but etcd3.cacert/cert are set, which only https uses: set protocol: https"),
    ({"hosts": ["127.0.0.1:2379"], "cert": "/etc/c.pem", "key": "/etc/c.key"},
     "etcd3.protocol: is 'http' but etcd3.cacert/cert are set, which only https uses: set protocol: https"),
])
def test_etcd_refusals(etcd3: dict[str, Any], expected: str) -> None:
    assert refusal({"etcd3": etcd3}) == [expected]


@pytest.mark.parametrize("etcd3", [
    {"hosts": ["10.0.0.1:2379"], "protocol": "https", **CREDS},
    {"hosts": ["10.0.0.1:2379"], "protocol": "https", "cacert": "/ca.pem", "cert": "/c.pem", "key": "/c.key"},
    {"hosts": ["127.0.0.1:2379", "[::1]:2379", "localhost:2379"], **CREDS},  # nothing leaves the machine
    {"hosts": ["10.0.0.1:2379"], **CREDS, "allow_plaintext_credentials": True},  # the operator's explicit choice
    {"hosts": ["10.0.0.1:2379"]},  # no credentials to leak
])
def test_etcd_accepted(etcd3: dict[str, Any]) -> None:
    assert config({"etcd3": etcd3}).etcd3 is not None


@pytest.mark.parametrize(("consul", "expected"), [
    ({"host": "10.0.0.5:8500", "token": "t0k"},
     CONSUL_CLEAR.format(key="scheme", said="is 'http'", host="10.0.0.5:8500")),
    ({"url": "http://consul.example:8500/", "token": "t0k"},
     CONSUL_CLEAR.format(key="url", said="starts with http://", host="consul.example:8500")),
])
def test_consul_refusals(consul: dict[str, Any], expected: str) -> None:
    errors = refusal({"consul": consul})
    assert errors == [expected] and "t0k" not in "\n".join(errors)


@pytest.mark.parametrize("consul", [
    {"token": "t0k"},  # the local agent, 127.0.0.1:8500
    {"host": "10.0.0.5:8500", "scheme": "https", "token": "t0k"},
    {"url": "https://consul.example:8501", "token": "t0k"},
    {"host": "10.0.0.5:8500", "token": "t0k", "allow_plaintext_credentials": True},
    {"host": "10.0.0.5:8500"},
])
def test_consul_accepted(consul: dict[str, Any]) -> None:
    assert config({"consul": consul}).consul is not None
