"""The smaller sections of the config file: log, restapi, watchdog, tags, bootstrap."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from raftpg.config import unsupported
from raftpg.config.addresses import is_loopback, is_wildcard, is_wildcard_address, split_host_port
from raftpg.config.base import OpenSettings, Settings
from raftpg.config.cli_options import InitdbOptions, option_args
from raftpg.config.dynamic import DynamicSettings
from raftpg.config.errors import problems
from raftpg.config.fields import HostPort, Int, Name, Secret, thaw
from raftpg.model import Tags

_LEVEL_NAMES = MappingProxyType({"WARN": "WARNING", "FATAL": "CRITICAL"})


class LogSettings(Settings):
    """``log``: the agent's own logging. ``level`` is upper-cased; WARN and FATAL mean WARNING and CRITICAL."""

    patroni_only: ClassVar[Mapping[str, str]] = unsupported.LOG

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    format: str = "%(asctime)s %(levelname)s: %(message)s"
    dir: str | None = None

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        if isinstance(value, str):
            name = value.strip().upper()
            return _LEVEL_NAMES.get(name, name)
        return value


class RestApiAuth(Settings):
    """``restapi.authentication``: basic auth required for the unsafe methods when set."""

    username: Name
    password: Secret


API_AUTH_REQUIRED = (
    "required when restapi.listen ({listen}) is reachable from other machines: without it anyone who reaches "
    "the port can switch over, restart, reinitialize, or PATCH /config (archive_command runs as the postgres "
    "user); set username and password, or restapi.allow_unauthenticated: true to run it open anyway"
)


class RestApiSettings(Settings):
    """``restapi``: where the REST API listens and how other nodes and raftpgctl reach it.

    ``connect_address`` defaults to ``listen``; when ``listen`` is a wildcard it must be given, since a
    wildcard is not an address anyone can connect to. TLS is on when ``certfile`` is set; verifying client
    certificates (``verify_client``) needs ``certfile`` and the CA in ``cafile``. An API that listens off
    loopback needs ``authentication`` (or ``verify_client: required``) unless ``allow_unauthenticated`` is true.
    """

    patroni_only: ClassVar[Mapping[str, str]] = unsupported.RESTAPI

    listen: HostPort
    connect_address: HostPort | None = Field(None, validate_default=True)  # always set once valid
    authentication: RestApiAuth | None = None
    certfile: str | None = None
    keyfile: str | None = None
    cafile: str | None = None
    verify_client: Literal["none", "optional", "required"] = "none"
    # the operator accepts an API that other machines can reach without credentials (see _rules)
    allow_unauthenticated: bool = False

    @field_validator("connect_address", mode="before")
    @classmethod
    def _default_connect_address(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None:
            if isinstance(value, str) and is_wildcard_address(value):
                raise ValueError(f"must be an address others can connect to, not {value}")
            return value
        listen = info.data.get("listen")
        if listen is None:
            return None  # listen is missing or invalid, and reported as such
        if is_wildcard(split_host_port(listen)[0]):
            raise ValueError(
                f"required when restapi.listen is a wildcard ({listen}): "
                "give the address other nodes and raftpgctl use to reach this node"
            )
        return listen

    @field_validator("verify_client", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _rules(self) -> RestApiSettings:
        found: list[tuple[str, str]] = []
        if self.keyfile and not self.certfile:
            found.append(("keyfile", "set without certfile"))
        if self.verify_client != "none" and not (self.certfile and self.cafile):
            found.append(("verify_client", f"'{self.verify_client}' needs certfile and cafile"))
        if not (self.authentication or self.verify_client == "required" or self.allow_unauthenticated
                or is_loopback(self.listen_host)):
            found.append(("authentication", API_AUTH_REQUIRED.format(listen=self.listen)))
        if found:
            raise problems(found)
        return self

    @property
    def listen_host(self) -> str:
        return split_host_port(self.listen)[0]

    @property
    def listen_port(self) -> int:
        return split_host_port(self.listen)[1]

    @property
    def connect_host(self) -> str:
        return split_host_port(self.connect_address or self.listen)[0]

    @property
    def connect_port(self) -> int:
        return split_host_port(self.connect_address or self.listen)[1]

    @property
    def tls(self) -> bool:
        return self.certfile is not None

    @property
    def base_url(self) -> str:
        """``http(s)://connect_address``: how others reach this node's API."""
        return f"{'https' if self.tls else 'http'}://{self.connect_address or self.listen}"


class WatchdogSettings(Settings):
    """``watchdog``: fencing by hardware watchdog (safety rule 6).

    ``mode``: ``off``; ``automatic`` (use it when the device opens, carry on without it otherwise);
    ``required`` (never become primary without it). YAML booleans are read as off / automatic.
    The watchdog fires ``ttl - safety_margin`` seconds after the last keepalive, i.e. before the leader
    lease could expire elsewhere; the Config checks that against ``bootstrap.dcs`` (the node must check it
    again against the live dynamic config, which may have changed since).
    """

    patroni_only: ClassVar[Mapping[str, str]] = unsupported.WATCHDOG

    mode: Literal["off", "automatic", "required"] = "automatic"
    device: Name = "/dev/watchdog"
    safety_margin: Int = Field(5, ge=0)

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return "automatic" if value else "off"
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def enabled(self) -> bool:
        return self.mode != "off"


class TagSettings(OpenSettings):
    """``tags``: this member's tags. Other tags are kept as given (Patroni allows arbitrary tags).

    ``failover_priority: 0`` means the same as ``nofailover: true`` (as in Patroni); ``to_model()`` says so.
    """

    patroni_only: ClassVar[Mapping[str, str]] = unsupported.TAGS

    nofailover: bool = False
    failover_priority: Int = Field(1, ge=0)
    noloadbalance: bool = False
    clonefrom: bool = False
    nosync: bool = False

    def to_model(self) -> Tags:
        """The tags as the shared model value (only the tags raftpg acts on)."""
        return Tags.from_dict(self.to_dict())

    def as_dict(self) -> dict[str, Any]:
        """Every tag, known and other, as published in the member key."""
        return thaw({**self.model_dump(), **self.extra})


class BootstrapSettings(Settings):
    """``bootstrap``: how a new cluster is created (only ``initdb``) and its first dynamic config.

    Any other ``method`` is warned about and ignored together with its section: the cluster is then
    created by initdb.

    ``post_init`` is read as ``post_bootstrap`` (Patroni accepts both names).
    """

    patroni_only: ClassVar[Mapping[str, str]] = unsupported.BOOTSTRAP
    renamed: ClassVar[Mapping[str, str]] = MappingProxyType({"post_init": "post_bootstrap"})

    dcs: DynamicSettings = Field(default_factory=DynamicSettings)
    method: Literal["initdb"] = "initdb"
    initdb: InitdbOptions = ()
    post_bootstrap: Name | None = None

    @classmethod
    def patroni_only_for(cls, raw: Mapping[str, Any]) -> Mapping[str, str]:
        method = raw.get("method", "initdb")
        if method == "initdb":
            return cls.patroni_only
        extra = {"method": unsupported.BOOTSTRAP_METHOD}
        if isinstance(method, str) and method not in cls.model_fields:
            extra[method] = unsupported.METHOD_SECTION
        return {**cls.patroni_only, **extra}

    def initdb_args(self) -> list[str]:
        """``initdb`` as command-line arguments: ``["--data-checksums", "--encoding=UTF8"]``."""
        return option_args(self.initdb)
