"""The dynamic (cluster-wide) configuration: ``bootstrap.dcs``, the DCS ``config`` key, ``PATCH /config``.

One document shape serves all three. Unknown keys are kept (Patroni stores arbitrary keys there, and an
edit must not lose them), except a near-miss of a known key, which is refused as a typo. Key paths in
errors are relative to the document (``ttl``, ``postgresql.parameters.max_connections``); inside a static
config file the same errors appear under ``bootstrap.dcs.``.

Timing rule: ``ttl >= loop_wait + 2 * retry_timeout``. The primary renews its lease every ``loop_wait``
and a renewal may take up to ``retry_timeout``, twice over (the failed attempt, then the retry), before the
lease runs out; a smaller ttl lets a healthy primary lose its lease. raftpg is meant to run safely at
``ttl: 5, loop_wait: 1, retry_timeout: 2``, so the bounds below allow that.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from raftpg.config import unsupported
from raftpg.config.base import OpenSettings, Settings
from raftpg.config.errors import ConfigError, join_path, problem, problems, validation_lines
from raftpg.config.fields import ConfigLine, GucMap, Int, MemberName, Name, Seconds, SlotMap, empty_map
from raftpg.config.screen import screen
from raftpg.model import DynamicConfig
from raftpg.model.cluster import DYNAMIC_BOUNDS, INT64_MAX
from raftpg.model.slots import SLOT_NAME
from raftpg.model.values import json_kind, parse_flag


class DcsPostgresSettings(OpenSettings):
    """``bootstrap.dcs.postgresql``: PostgreSQL settings every member shares.

    ``use_pg_rewind`` defaults to False as in Patroni (a diverged former primary is re-cloned unless the
    operator opts in to pg_rewind).
    """

    patroni_only: ClassVar[Mapping[str, str]] = unsupported.DYNAMIC_POSTGRESQL

    use_pg_rewind: bool = False
    use_slots: bool = True
    parameters: GucMap = Field(default_factory=empty_map)
    pg_hba: tuple[ConfigLine, ...] = ()  # one item is one line: control characters refused
    pg_ident: tuple[ConfigLine, ...] = ()
    recovery_conf: GucMap = Field(default_factory=empty_map)  # extra settings for a replica's recovery

    @field_validator("parameters", mode="after")
    @classmethod
    def _numbers_fit(cls, value: Mapping[str, Any]) -> Mapping[str, Any]:
        """An integer setting past 64 bits (``max_connections: 1e400`` written as digits) would make
        PostgreSQL refuse to start on every node: refuse it here, naming the parameter."""
        bad = [(name, f"must be an integer of at most 64 bits, got a {setting.bit_length()}-bit one")
               for name, setting in value.items()
               if isinstance(setting, int) and not isinstance(setting, bool) and abs(setting) > INT64_MAX]
        if bad:
            raise problems(bad)
        return value


MAX_DEPTH = 32  # real documents nest 3 deep (postgresql.parameters.x)


def _storable(data: Any) -> tuple[str, str] | None:
    """``(key path, why)`` when ``data`` cannot be stored for every node to read back (raftpg.dcs.documents
    refuses the same on read), or None: numbers finite, integers of at most 64 bits, text valid Unicode,
    nesting at most MAX_DEPTH deep. This covers keys raftpg keeps without interpreting them."""
    stack: list[tuple[Any, str, int]] = [(data, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, Mapping | list | tuple):
            if depth > MAX_DEPTH:
                return path, f"nested deeper than {MAX_DEPTH}"
            items = value.items() if isinstance(value, Mapping) else enumerate(value)
            for key, item in items:
                if isinstance(key, str) and not _encodable(key):
                    return path, "a key is not valid Unicode text"
                stack.append((item, join_path(path, key), depth + 1))
        elif isinstance(value, float) and not math.isfinite(value):
            return path, "must be a finite number"
        elif isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
            return path, "an integer of more than 64 bits"
        elif isinstance(value, str) and not _encodable(value):
            return path, "not valid Unicode text (a lone surrogate)"
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _bounded(default: int, key: str) -> Any:
    """A numeric field within the bounds the DCS reader also enforces (``DYNAMIC_BOUNDS``): ``ttl: 1e400``
    is refused here with the key's name rather than overflowing a deadline later."""
    low, high = DYNAMIC_BOUNDS[key]
    return Field(default, ge=low, le=high)


# Why failsafe_mode is refused on the embedded Raft (raftpg/ha/DESIGN.md, "Failsafe mode", argues it): checked
# when the config file is loaded (bootstrap.dcs) and when the stored config is changed (raftpg.ha.operations).
RAFT_FAILSAFE_REFUSAL = (
    "not available with the embedded Raft: there the DCS is the members themselves, so a primary that "
    "cannot reach it while every member still answers has lost its Raft quorum to a fault of Raft itself "
    "(a blocked Raft port, a full Raft disk); the members that still form a quorum can fail over cleanly, "
    "and failsafe would only keep them from it. Use failsafe_mode with etcd or Consul, where the DCS is a "
    "separate service that can fail alone")


OPTIONAL_STANDBY_KEYS = ("restore_command", "archive_cleanup_command", "recovery_min_apply_delay",
                         "create_replica_methods")
APPLY_DELAY = re.compile(r"([0-9]{1,12}(?:\.[0-9]{1,6})?)\s*(us|ms|s|min|h|d)?")
DELAY_UNITS_MS = {"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
INT_MAX_MS = 2_147_483_647  # PostgreSQL's bound for recovery_min_apply_delay


class StandbyClusterSettings(Settings):
    """``bootstrap.dcs.standby_cluster`` (Patroni's): replicate this whole cluster from ``host:port``; the
    standby leader uses ``primary_slot_name`` there (a slot the source must have) if given, and runs with
    ``restore_command`` (WAL from the archive when streaming has not got it), ``archive_cleanup_command``
    and ``recovery_min_apply_delay`` (a delayed copy), which its replicas do not. It is first copied by
    ``create_replica_methods`` (names of the node's replica methods, or ``basebackup``; default: the
    node's own list), as in Patroni."""

    patroni_only: ClassVar[Mapping[str, str]] = unsupported.STANDBY_CLUSTER
    refused: ClassVar[Mapping[str, str]] = unsupported.STANDBY_CLUSTER_REFUSED

    host: Name
    port: Int = Field(5432, ge=1, le=65535)
    primary_slot_name: str | None = None
    restore_command: ConfigLine | None = None
    archive_cleanup_command: ConfigLine | None = None
    recovery_min_apply_delay: str | int | None = None
    create_replica_methods: tuple[Name, ...] | None = None

    @field_validator("recovery_min_apply_delay", mode="before")
    @classmethod
    def _delay(cls, value: Any) -> Any:
        if value is None:
            return value
        ms: float | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            ms = value
        elif isinstance(value, str) and (match := APPLY_DELAY.fullmatch(value.strip())):
            ms = float(match[1]) * DELAY_UNITS_MS[match[2] or "ms"]
        if ms is None or not 0 <= ms <= INT_MAX_MS:
            raise ValueError("must be a delay from 0 to 2147483647 ms: milliseconds (an integer) or a number "
                             "with a unit (us, ms, s, min, h, d), e.g. 5min")
        return value

    @field_validator("host", mode="after")
    @classmethod
    def _one_host(cls, value: str) -> str:
        if any(c.isspace() or ord(c) < 32 for c in value) or "," in value or "/" in value:
            raise ValueError("must be one host name or address (no spaces, commas or slashes)")
        return value

    @field_validator("primary_slot_name", mode="after")
    @classmethod
    def _slot(cls, value: str | None) -> str | None:
        if value is not None and not SLOT_NAME.fullmatch(value):
            raise ValueError("must be a replication slot name: 1-63 of a-z, 0-9 and _")
        return value


class DynamicSettings(OpenSettings):
    """The cluster-wide settings (Patroni's names and defaults; times in seconds, lag in bytes).

    ``synchronous_mode`` is true, false or ``quorum`` (Patroni's quorum commit, raftpg.ha.quorum).
    """

    patroni_only: ClassVar[Mapping[str, str]] = unsupported.DYNAMIC
    accepted: ClassVar[frozenset[str]] = unsupported.DYNAMIC_ACCEPTED
    refused: ClassVar[Mapping[str, str]] = unsupported.DYNAMIC_REFUSED
    renamed: ClassVar[Mapping[str, str]] = MappingProxyType({
        "master_start_timeout": "primary_start_timeout",
        "master_stop_timeout": "primary_stop_timeout",
        "permanent_slots": "slots",  # Patroni reads all three names for its permanent slots
        "permanent_replication_slots": "slots",
    })

    ttl: Int = _bounded(30, "ttl")
    loop_wait: Int = _bounded(10, "loop_wait")
    retry_timeout: Int = _bounded(10, "retry_timeout")
    maximum_lag_on_failover: Int = _bounded(1048576, "maximum_lag_on_failover")
    primary_start_timeout: Int = _bounded(300, "primary_start_timeout")
    primary_stop_timeout: Int = _bounded(0, "primary_stop_timeout")
    synchronous_mode: bool | Literal["quorum"] = False
    synchronous_mode_strict: bool = False
    synchronous_node_count: Int = _bounded(1, "synchronous_node_count")
    check_timeline: bool = False
    pause: bool = False
    detached_primary: MemberName | None = None  # written by a paused stop (see README); a member's name
    slots: SlotMap = Field(default_factory=empty_map)
    member_slots_ttl: Seconds = _bounded(1800, "member_slots_ttl")  # Patroni 4's name and default (30min)
    failsafe_mode: bool = False  # refused on the embedded Raft (raftpg.ha.failsafe says why)
    standby_cluster: StandbyClusterSettings | None = None
    postgresql: DcsPostgresSettings = Field(default_factory=DcsPostgresSettings)

    @classmethod
    def notes(cls, raw: Mapping[str, Any]) -> list[tuple[str, str]]:
        found = []
        if raw.get("check_timeline") in (False, "false", "off", "no", 0):
            found.append(("check_timeline", "raftpg always checks timelines: a member on an older timeline than "
                                            "the cluster's is never promoted, whatever this says"))
        stop = raw.get("primary_stop_timeout", raw.get("master_stop_timeout"))
        if stop not in (None, 0, "0") and not isinstance(stop, bool):
            found.append(("primary_stop_timeout", "ignored: raftpg stops PostgreSQL fast, escalating to "
                                                  "immediate then SIGKILL after its own deadline"))
        return found

    def to_dict(self) -> dict[str, Any]:
        """The document to store: ``standby_cluster`` only when set (its absence is what a normal cluster
        stores, and what Patroni reads)."""
        document = super().to_dict()
        standby = document.get("standby_cluster")
        if standby is None:
            document.pop("standby_cluster", None)
        else:  # the optional keys only when given, as the user wrote the section
            document["standby_cluster"] = {k: v for k, v in standby.items()
                                           if v is not None or k not in OPTIONAL_STANDBY_KEYS}
        return document

    @model_validator(mode="after")
    def _storable_document(self) -> DynamicSettings:
        """The whole document, kept keys included, must be storable as JSON every node reads back (after
        the fields' own checks, which say more: ``ttl: must be <= 86400`` rather than "too large")."""
        found = _storable(self.to_dict())
        if found is not None:
            raise problem(*found)
        return self

    @field_validator("synchronous_mode", mode="before")
    @classmethod
    def _quorum(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() == "quorum":
            return "quorum"
        parsed = parse_flag(value)
        if parsed is None:
            raise ValueError(f"must be true, false or 'quorum', got {json_kind(value)}")
        return parsed

    @model_validator(mode="after")
    def _timing(self) -> DynamicSettings:
        if self.ttl < self.loop_wait + 2 * self.retry_timeout:
            raise problem(
                "ttl",
                "must be >= loop_wait + 2*retry_timeout "
                f"({self.ttl} < {self.loop_wait} + 2*{self.retry_timeout})",
            )
        return self

    def to_model(self) -> DynamicConfig:
        """The same settings as the shared model value the HA core reads (unit-suffixed names)."""
        return DynamicConfig.from_dict(self.to_dict())


def _screened(data: Any) -> tuple[dict[str, Any], list[str]]:
    if not isinstance(data, Mapping):
        raise ConfigError([f"the dynamic config must be a mapping of keys, got {type(data).__name__}"])
    result = screen(DynamicSettings, data)
    if result.errors:
        raise ConfigError(result.errors)
    return result.data, result.warnings


def parse_dynamic_config(data: Mapping[str, Any]) -> DynamicSettings:
    """Validate a dynamic-config document into frozen settings; ConfigError names relative key paths."""
    cleaned, _ = _screened(data)
    try:
        return DynamicSettings.model_validate(cleaned)
    except ValidationError as exc:
        raise ConfigError(validation_lines(exc)) from None


def validate_dynamic_config(data: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a dynamic-config document and return it normalized: defaults filled in, numeric strings
    made numbers, older names renamed, unknown keys kept. Idempotent: validating the result returns it.
    """
    return parse_dynamic_config(data).to_dict()


def dynamic_config_warnings(data: Mapping[str, Any]) -> tuple[str, ...]:
    """Warnings (Patroni-only keys) for a document that :func:`validate_dynamic_config` accepts."""
    return tuple(_screened(data)[1])
