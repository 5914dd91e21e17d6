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
from raftpg.config.errors import problem, problems
from raftpg.config.fields import FrozenDict, HostPort, Int, Name, Secret, empty_map, thaw_mapping
from raftpg.config.methods import INITDB, BootstrapMethod, method_section, unused_method_sections
from raftpg.model import Tags

_LEVEL_NAMES = MappingProxyType({"WARN": "WARNING", "FATAL": "CRITICAL"})


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def _level_name(value: Any) -> Any:
    if isinstance(value, str):
        name = value.strip().upper()
        return _LEVEL_NAMES.get(name, name)
    return value


class LogSettings(Settings):
    """``log``: the agent's own logging, as Patroni configures it (applied by ``raftpg.logconfig``).

    - ``level`` (also each value of ``loggers``) is upper-cased; WARN and FATAL mean WARNING and CRITICAL.
    - ``type``: ``plain`` (``format`` is a %-style string) or ``json`` (one JSON object per line; ``format``
      may then also be a list of record attribute names, or of ``{attribute: output key}`` mappings, and
      ``static_fields`` are added to every line).
    - ``dir``: write ``raftpg-<name>.log`` there instead of stderr, rotated at ``file_size`` bytes keeping
      ``file_num`` old files (Patroni's defaults: 25 MB, 4). ``file_size: 0`` never rotates and reopens the
      file when it is moved, for logrotate (contrib/logrotate). ``mode``: the log file's permissions.
    - ``traceback_level``: tracebacks are logged at ERROR (default) or only at DEBUG.
    - ``deduplicate_heartbeat_logs``: leave out an HA cycle's line when it repeats the previous one.
    """

    patroni_only: ClassVar[Mapping[str, str]] = unsupported.LOG

    type: Literal["plain", "json"] = "plain"
    level: LogLevel = "INFO"
    traceback_level: Literal["DEBUG", "ERROR"] = "ERROR"
    format: str | tuple[str | Mapping[str, str], ...] = "%(asctime)s %(levelname)s: %(message)s"
    dateformat: str | None = None
    static_fields: Mapping[str, str | int | float | bool] = Field(default_factory=empty_map)
    dir: str | None = None
    mode: Int | None = Field(None, ge=0, le=0o777)
    file_num: Int = Field(4, ge=0)
    file_size: Int = Field(25_000_000, ge=0)
    loggers: Mapping[str, LogLevel] = Field(default_factory=empty_map)
    deduplicate_heartbeat_logs: bool = False

    @field_validator("level", "traceback_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return _level_name(value)

    @field_validator("type", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("loggers", mode="before")
    @classmethod
    def _logger_levels(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return FrozenDict({str(name): _level_name(level) for name, level in value.items()})
        return value

    @field_validator("static_fields", mode="after")
    @classmethod
    def _frozen_fields(cls, value: Mapping[str, Any]) -> Mapping[str, Any]:
        return FrozenDict(value)

    @field_validator("format", mode="before")
    @classmethod
    def _format(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return tuple(FrozenDict(item) if isinstance(item, Mapping) else item for item in value)
        return value

    @model_validator(mode="after")
    def _json_only(self) -> LogSettings:
        if self.type == "plain" and not isinstance(self.format, str):
            raise problem("format", "a list of fields needs log.type: json; plain logs take a %-style string")
        if self.type == "plain" and self.static_fields:
            raise problem("static_fields", "needs log.type: json")
        return self


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
    again against the live dynamic config, which may have changed since). ``safety_margin: -1`` means
    Patroni's "fire at half the ttl": Config turns it into ``ttl - ttl // 2`` of ``bootstrap.dcs.ttl``.
    """

    patroni_only: ClassVar[Mapping[str, str]] = unsupported.WATCHDOG

    mode: Literal["off", "automatic", "required"] = "automatic"
    device: Name = "/dev/watchdog"
    safety_margin: Int = Field(5, ge=-1)  # -1 (Patroni: fire at ttl/2) is resolved by Config

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
        """The tags as the shared model value (custom tags with scalar values kept, see ``Tags``)."""
        return Tags.from_dict(self.to_dict())

    def as_dict(self) -> dict[str, Any]:
        """Every tag, known and other, as published in the member key."""
        return thaw_mapping({**self.model_dump(), **self.extra})


class BootstrapSettings(Settings):
    """``bootstrap``: how a new cluster is created and its first dynamic config.

    ``method`` is ``initdb`` (the default) or the name of a custom method whose section
    (``bootstrap.<method>``, see ``methods.py``) holds the command that creates the data directory, e.g. a
    restore from pgBackRest, WAL-G or Barman; it is read into ``custom_method``. ``post_init`` is read as
    ``post_bootstrap`` (Patroni accepts both names).
    """

    patroni_only: ClassVar[Mapping[str, str]] = unsupported.BOOTSTRAP
    renamed: ClassVar[Mapping[str, str]] = MappingProxyType({"post_init": "post_bootstrap"})

    dcs: DynamicSettings = Field(default_factory=DynamicSettings)
    method: Name = INITDB
    initdb: InitdbOptions = ()
    post_bootstrap: Name | None = None
    custom_method: BootstrapMethod | None = None  # filled from the method's own section, never written

    @classmethod
    def method_sections(cls, raw: Mapping[str, Any]) -> frozenset[str]:
        method = raw.get("method")
        named = {method.strip()} if isinstance(method, str) and method.strip() not in cls.model_fields else set()
        return frozenset(named | set(unused_method_sections(cls, raw, "method")))

    @classmethod
    def notes(cls, raw: Mapping[str, Any]) -> list[tuple[str, str]]:
        return [(name, "a method section bootstrap.method does not name: ignored, as Patroni does")
                for name in unused_method_sections(cls, raw, "method")]

    @model_validator(mode="before")
    @classmethod
    def _read_custom_method(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        if "custom_method" in data:
            raise problem("custom_method", "unknown key")
        unused = unused_method_sections(cls, data, "method")
        data = {k: v for k, v in data.items() if k not in unused}
        method = data.get("method", INITDB)
        if not isinstance(method, str) or method.strip() in (INITDB, ""):
            return data
        name = method.strip()
        if name in cls.model_fields:
            raise problem("method", f"'{name}' is a key of bootstrap, not a method: use initdb or a custom "
                                    "method with its own section")
        if name not in data:
            raise problem(name, f"required: bootstrap.method is '{name}', so bootstrap.{name}.command must name "
                                "the command that creates the cluster (Patroni would silently run initdb "
                                "instead; raftpg refuses)")
        parsed, found = method_section(BootstrapMethod, data[name], name)
        if found:
            raise problems(found)
        return {**{k: v for k, v in data.items() if k != name}, "custom_method": parsed}

    def initdb_args(self) -> list[str]:
        """``initdb`` as command-line arguments: ``["--data-checksums", "--encoding=UTF8"]``."""
        return option_args(self.initdb)
