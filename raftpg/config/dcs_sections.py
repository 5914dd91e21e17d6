"""The DCS sections: ``raft`` (the embedded store), ``etcd3`` and ``consul``. A config has exactly one."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, field_validator, model_validator

from raftpg.config import unsupported
from raftpg.config.addresses import is_loopback, is_wildcard, same_address, split_host_port
from raftpg.config.base import Settings
from raftpg.config.errors import problem, problems
from raftpg.config.fields import HostPort, HostPortList, Name

DEFAULT_RAFT_DIR = "raftpg-raft"
RAFT_SELF_ADDR_REQUIRED = (
    "field required: the address the other members reach this node's Raft port at (raftpg has no "
    "non-voting Raft client mode: every agent is a member)"
)
RAFT_PASSWORD_REQUIRED = (
    "required, also on loopback: pysyncobj unpickles every frame, so a Raft port without a password runs "
    "code for anyone who can connect (any local user on loopback); set a long random secret shared by all members"
)


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


class RaftSettings(Settings):
    """``raft``: this node's member of the embedded Raft store.

    ``self_addr`` is the address the other members connect to; ``bind_addr`` (default: ``self_addr``) the
    one this node listens on. ``partner_addrs`` are the other members' ``self_addr``.

    Patroni's forms are accepted: ``partner_addrs`` as a list or ``'h1:p,h2:p'``; an address without a
    port gets the REST API's port + 10000 (filled in by Config, which knows that port); no ``data_dir``
    means ``raftpg-raft`` under the current directory (Patroni uses the current directory itself; raftpg
    wants a directory of its own, kept private). Patroni's node without ``self_addr`` (a Raft client that
    does not vote) does not exist here: the agent is always a member.

    Safety rule 9: pysyncobj unpickles every frame it receives, and only ``password`` (Fernet) makes it
    authenticate a frame first. So every Raft member needs a password, whatever address it listens on:
    loopback only narrows who can connect to every local user, and partners or members added later may
    be elsewhere. An empty password counts as none. The password never appears in ``repr`` or errors.
    """

    patroni_only: ClassVar[Mapping[str, str]] = unsupported.RAFT

    data_dir: Name = Field(default_factory=lambda: os.path.abspath(DEFAULT_RAFT_DIR))
    self_addr: HostPort | None = None  # always set once valid (see _rules)
    partner_addrs: HostPortList = ()
    bind_addr: HostPort | None = None
    password: str | None = Field(None, repr=False)
    fsync: bool = False  # flush every Raft log entry before acknowledging it (power-loss safe, slower)

    @field_validator("password", mode="after")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @model_validator(mode="after")
    def _rules(self) -> RaftSettings:
        found: list[tuple[str, str]] = []
        if self.self_addr is None:
            found.append(("self_addr", RAFT_SELF_ADDR_REQUIRED))
        elif is_wildcard(split_host_port(self.self_addr)[0]):
            found.append(("self_addr", f"must be an address the other members can reach, not {self.self_addr}"))
        seen: list[str] = []
        for i, partner in enumerate(self.partner_addrs):
            if self.self_addr is not None and same_address(partner, self.self_addr):
                found.append((f"partner_addrs[{i}]", f"is this node's own self_addr ({partner}); list only the others"))
            elif any(same_address(partner, earlier) for earlier in seen):
                found.append((f"partner_addrs[{i}]", f"duplicate address {partner}"))
            seen.append(partner)
        if not self.password:
            found.append(("password", RAFT_PASSWORD_REQUIRED))
        if found:
            raise problems(found)
        return self

    @property
    def listen_addr(self) -> str:
        """Where Raft listens: ``bind_addr`` or else ``self_addr``."""
        return self.bind_addr or self.self_addr or ""

    @property
    def bind_host(self) -> str:
        return split_host_port(self.listen_addr)[0]

    @property
    def bind_port(self) -> int:
        return split_host_port(self.listen_addr)[1]

    @property
    def loopback_only(self) -> bool:
        """True when nobody off this machine can reach the Raft port."""
        return is_loopback(self.bind_host)


def plaintext_credentials(section: str, what: str, hosts: tuple[str, ...], said: str = "is 'http'") -> str:
    """The refusal of credentials that would cross the network in clear text (``hosts``: the remote ones)."""
    return (f"{said}, which would send {what} in clear text to {', '.join(hosts)}: use https, or set "
            f"{section}.allow_plaintext_credentials: true to accept that")


def _remote(hosts: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(h for h in hosts if not is_loopback(split_host_port(h)[0]))


class Etcd3Settings(Settings):
    """``etcd3``: an external etcd (v3 API). ``hosts`` is a list or ``'h1:2379,h2:2379'``; ``host`` names a
    single endpoint instead (then ``hosts == (host,)``). ``cert`` and ``key`` are a client certificate.

    TLS: ``protocol: https`` verifies etcd against ``cacert`` (else the system CAs); ``cacert``/``cert``
    with ``protocol: http`` are refused, since they would silently do nothing. ``username``/``password``
    (and the token etcd returns for them) over plain HTTP to a host off loopback are refused unless
    ``allow_plaintext_credentials`` is true.
    """

    patroni_only: ClassVar[Mapping[str, str]] = unsupported.ETCD3
    accepted: ClassVar[frozenset[str]] = unsupported.ETCD3_ACCEPTED

    hosts: HostPortList = ()
    host: HostPort | None = None
    url: str | None = None    # read into protocol, host, username, password (and then None)
    proxy: str | None = None  # the same as url: raftpg never discovers members
    protocol: Literal["http", "https"] = "http"
    username: str | None = None
    password: str | None = Field(None, repr=False)
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    allow_plaintext_credentials: bool = False

    @classmethod
    def notes(cls, raw: Mapping[str, Any]) -> list[tuple[str, str]]:
        if raw.get("use_proxies") in (False, "false", "off", "no", 0):
            return [("use_proxies", "raftpg never discovers etcd members: it uses the listed hosts only, as "
                                    "with use_proxies: true")]
        return []

    @model_validator(mode="before")
    @classmethod
    def _host_into_hosts(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = _url_into_fields(data)
        if data.get("host") is not None and data.get("hosts"):
            raise problem("host", "set either etcd3.host or etcd3.hosts, not both")
        if data.get("host") is not None:
            return {**data, "hosts": [data["host"]]}
        return data

    @field_validator("protocol", mode="before")
    @classmethod
    def _lower_protocol(cls, value: Any) -> Any:
        return _lower(value)

    @model_validator(mode="after")
    def _rules(self) -> Etcd3Settings:
        found: list[tuple[str, str]] = []
        if not self.hosts:
            found.append(("hosts", "field required: the etcd endpoints as 'host:port' (or etcd3.host)"))
        if bool(self.cert) != bool(self.key):
            found.append(("key" if self.cert else "cert", "cert and key go together: set both or neither"))
        if bool(self.username) != bool(self.password):
            found.append(("password" if self.username else "username", "username and password go together"))
        if self.protocol == "http" and (self.cacert or self.cert):
            found.append(("protocol", "is 'http' but etcd3.cacert/cert are set, which only https uses: set "
                                      "protocol: https"))
        elif self.protocol == "http" and self.username and not self.allow_plaintext_credentials \
                and _remote(self.hosts):
            found.append(("protocol", plaintext_credentials("etcd3", "etcd3.username/password",
                                                            _remote(self.hosts))))
        if found:
            raise problems(found)
        return self


def _url_into_fields(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """Patroni's ``url`` (or ``proxy``: raftpg never discovers other members, so the two mean the same)
    ``http(s)://[user:password@]host:port`` -> ``protocol``, ``host``, ``username``, ``password``."""
    keys = [key for key in ("url", "proxy") if data.get(key) is not None]
    if not keys:
        return data
    if len(keys) > 1 or data.get("host") is not None or data.get("hosts"):
        raise problem(keys[-1], "set one of etcd3.url, etcd3.proxy, etcd3.host, etcd3.hosts")
    key = keys[0]
    url = data[key]
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
        raise problem(key, "must be 'http(s)://host:port' (a username:password@ part is allowed)")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    out = {k: v for k, v in data.items() if k != key}
    out.update(protocol=parts.scheme, host=f"{host}:{parts.port}")
    if parts.username is not None:
        out.setdefault("username", unquote(parts.username))
        out.setdefault("password", unquote(parts.password or ""))
    return out


class ConsulSettings(Settings):
    """``consul``: an external Consul agent. ``url`` (``http(s)://host:port``), when set, is used instead of
    ``scheme`` and ``host``. ``token`` over plain HTTP to an agent off loopback is refused unless
    ``allow_plaintext_credentials`` is true (the usual agent is local: ``127.0.0.1:8500``).
    """

    patroni_only: ClassVar[Mapping[str, str]] = unsupported.CONSUL

    host: HostPort = "127.0.0.1:8500"
    port: int | None = None  # Patroni's separate port: read into host (and then None)
    url: str | None = None
    token: str | None = Field(None, repr=False)
    scheme: Literal["http", "https"] = "http"
    verify: bool = True
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    dc: str | None = None
    allow_plaintext_credentials: bool = False

    @model_validator(mode="before")
    @classmethod
    def _port_into_host(cls, data: Any) -> Any:
        """Patroni's ``port`` overrides the port of ``host`` (or gives it one)."""
        if not isinstance(data, Mapping) or data.get("port") is None:
            return data
        port = data["port"]
        if isinstance(port, bool) or not (isinstance(port, int) or (isinstance(port, str) and port.isdigit())):
            raise problem("port", f"must be a port number, got {port!r}")
        host = data.get("host", "127.0.0.1")
        if not isinstance(host, str):
            return data  # reported by the host field
        name = host.strip()
        if name.startswith("["):
            name = name[: name.index("]") + 1] if "]" in name else name
        elif name.count(":") == 1:
            name = name.rpartition(":")[0]
        return {**{k: v for k, v in data.items() if k != "port"}, "host": f"{name}:{int(port)}"}

    @field_validator("scheme", mode="before")
    @classmethod
    def _lower_scheme(cls, value: Any) -> Any:
        return _lower(value)

    @field_validator("url", mode="after")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {value!r}")
        return value

    @model_validator(mode="after")
    def _rules(self) -> ConsulSettings:
        if bool(self.cert) != bool(self.key):
            raise problem("key" if self.cert else "cert", "cert and key go together: set both or neither")
        base = self.base_url
        if self.token and base.startswith("http://") and not self.allow_plaintext_credentials:
            remote = _remote((base.removeprefix("http://").split("/")[0],))
            if remote:
                said = "starts with http://" if self.url else "is 'http'"
                raise problem("url" if self.url else "scheme",
                              plaintext_credentials("consul", "consul.token", remote, said))
        return self

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/") if self.url else f"{self.scheme}://{self.host}"
