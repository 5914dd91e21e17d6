"""The DCS sections: ``raft`` (the embedded store), ``etcd3`` and ``consul``. A config has exactly one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import field_validator, model_validator

from raftpg.config import unsupported
from raftpg.config.addresses import is_loopback, is_wildcard, same_address, split_host_port
from raftpg.config.base import Settings
from raftpg.config.errors import problem, problems
from raftpg.config.fields import HostPort, HostPortList, Name

RAFT_PASSWORD_REQUIRED = (
    "required when Raft listens on a non-loopback address: pysyncobj unpickles every frame, "
    "so an open port without a password is remote code execution"
)


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


class RaftSettings(Settings):
    """``raft``: this node's member of the embedded Raft store.

    ``self_addr`` is the address the other members connect to; ``bind_addr`` (default: ``self_addr``) the
    one this node listens on. ``partner_addrs`` are the other members' ``self_addr``.

    Safety rule 9: pysyncobj unpickles every frame it receives, and only ``password`` (Fernet) makes it
    authenticate a frame first. So a listening address anyone else could reach (anything but 127.0.0.0/8,
    ::1 and localhost, including wildcards and DNS names) requires a password. An empty password counts
    as none.
    """

    data_dir: Name
    self_addr: HostPort
    partner_addrs: HostPortList = ()
    bind_addr: HostPort | None = None
    password: str | None = None
    fsync: bool = False  # flush every Raft log entry before acknowledging it (power-loss safe, slower)

    @field_validator("password", mode="after")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @model_validator(mode="after")
    def _rules(self) -> RaftSettings:
        found: list[tuple[str, str]] = []
        if is_wildcard(split_host_port(self.self_addr)[0]):
            found.append(("self_addr", f"must be an address the other members can reach, not {self.self_addr}"))
        seen: list[str] = []
        for i, partner in enumerate(self.partner_addrs):
            if same_address(partner, self.self_addr):
                found.append((f"partner_addrs[{i}]", f"is this node's own self_addr ({partner}); list only the others"))
            elif any(same_address(partner, earlier) for earlier in seen):
                found.append((f"partner_addrs[{i}]", f"duplicate address {partner}"))
            seen.append(partner)
        if not is_loopback(self.bind_host) and not self.password:
            found.append(("password", RAFT_PASSWORD_REQUIRED))
        if found:
            raise problems(found)
        return self

    @property
    def listen_addr(self) -> str:
        """Where Raft listens: ``bind_addr`` or else ``self_addr``."""
        return self.bind_addr or self.self_addr

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


class Etcd3Settings(Settings):
    """``etcd3``: an external etcd (v3 API). ``hosts`` is a list or ``'h1:2379,h2:2379'``; ``host`` names a
    single endpoint instead (then ``hosts == (host,)``). ``cert`` and ``key`` are a client certificate.
    """

    patroni_only: ClassVar[Mapping[str, str]] = unsupported.ETCD3

    hosts: HostPortList = ()
    host: HostPort | None = None
    protocol: Literal["http", "https"] = "http"
    username: str | None = None
    password: str | None = None
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _host_into_hosts(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
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
        if found:
            raise problems(found)
        return self


class ConsulSettings(Settings):
    """``consul``: an external Consul agent. ``url`` (``http(s)://host:port``), when set, is used instead of
    ``scheme`` and ``host``.
    """

    patroni_only: ClassVar[Mapping[str, str]] = unsupported.CONSUL

    host: HostPort = "127.0.0.1:8500"
    url: str | None = None
    token: str | None = None
    scheme: Literal["http", "https"] = "http"
    verify: bool = True
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    dc: str | None = None

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
        return self

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/") if self.url else f"{self.scheme}://{self.host}"
