"""Config: the whole file, and the rules that span sections.

Build it with ``load_config`` / ``parse_config`` (``load.py``), which screen the keys first and attach
the warnings; ``Config.model_validate`` alone skips the key screen and gives no warnings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from raftpg.config import unsupported
from raftpg.config.base import Settings
from raftpg.config.dcs_sections import ConsulSettings, Etcd3Settings, RaftSettings
from raftpg.config.errors import problems
from raftpg.config.fields import Name
from raftpg.config.postgresql import PostgresSettings
from raftpg.config.sections import (
    BootstrapSettings,
    LogSettings,
    RestApiSettings,
    TagSettings,
    WatchdogSettings,
)

DcsKind = Literal["raft", "etcd3", "consul"]
DCS_KINDS: tuple[DcsKind, ...] = ("raft", "etcd3", "consul")


class Config(Settings):
    """The node's settings, frozen. A reload (SIGHUP) builds a new one.

    Invariants once built: exactly one of ``raft``, ``etcd3``, ``consul`` is set; ``postgresql`` is None
    exactly when ``witness`` is true; a witness uses ``raft``; ``namespace`` starts and ends with "/";
    ``scope`` and ``name`` contain no "/" (they are parts of DCS keys); ``restapi.connect_address`` and
    ``postgresql.connect_address`` are set; ``postgresql.pgpass`` is set.
    """

    patroni_only: ClassVar[Mapping[str, str]] = unsupported.TOP_LEVEL

    scope: Name
    namespace: str = "/service/"
    name: Name
    log: LogSettings = Field(default_factory=LogSettings)
    restapi: RestApiSettings
    raft: RaftSettings | None = None
    etcd3: Etcd3Settings | None = None
    consul: ConsulSettings | None = None
    witness: bool = False
    bootstrap: BootstrapSettings = Field(default_factory=BootstrapSettings)
    postgresql: PostgresSettings | None = None
    watchdog: WatchdogSettings = Field(default_factory=WatchdogSettings)
    tags: TagSettings = Field(default_factory=TagSettings)

    _warnings: tuple[str, ...] = PrivateAttr(default=())

    @property
    def warnings(self) -> tuple[str, ...]:
        """Keys Patroni knows that raftpg ignores, and other things worth a log line at startup."""
        return self._warnings

    @model_validator(mode="before")
    @classmethod
    def _default_pgpass(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        pg = data.get("postgresql")
        if isinstance(pg, Mapping) and pg.get("pgpass") is None:
            name = data.get("name")
            suffix = name.strip() if isinstance(name, str) and name.strip() and "/" not in name else "raftpg"
            return {**data, "postgresql": {**pg, "pgpass": f"/tmp/pgpass-{suffix}"}}
        return data

    @field_validator("scope", "name", mode="after")
    @classmethod
    def _no_slash(cls, value: str) -> str:
        if "/" in value:
            raise ValueError(f"must not contain '/' (it is part of DCS key names), got {value!r}")
        return value

    @field_validator("namespace", mode="after")
    @classmethod
    def _slashes(cls, value: str) -> str:
        inner = value.strip().strip("/")
        return f"/{inner}/" if inner else "/"

    @model_validator(mode="after")
    def _across_sections(self) -> Config:
        present = [kind for kind in DCS_KINDS if getattr(self, kind) is not None]
        found = structure_problems(present, self.witness, self.postgresql is not None) + self._watchdog_problems()
        if found:
            raise problems(found)
        return self

    def _watchdog_problems(self) -> list[tuple[str, str]]:
        dcs = self.bootstrap.dcs
        margin = self.watchdog.safety_margin
        if not self.watchdog.enabled:
            return []
        if margin >= dcs.ttl:
            return [("watchdog.safety_margin", f"must be < bootstrap.dcs.ttl ({margin} >= {dcs.ttl})")]
        if dcs.ttl - margin <= dcs.loop_wait:
            return [(
                "watchdog.safety_margin",
                f"leaves the watchdog {dcs.ttl - margin}s (bootstrap.dcs.ttl - safety_margin), which must be "
                f"> loop_wait ({dcs.loop_wait}) or it fires between healthy HA cycles",
            )]
        return []

    @property
    def dcs_prefix(self) -> str:
        """``<namespace><scope>/``: every DCS key of this cluster starts with it."""
        return f"{self.namespace}{self.scope}/"


def structure_problems(dcs_present: list[str], witness: bool, has_postgresql: bool) -> list[tuple[str, str]]:
    """The rules about which sections exist, as ``(key path, message)`` pairs.

    Kept apart from the field checks so that ``parse_config`` can report them even when some section's
    values are also wrong (pydantic runs a model's own rules only once all its fields are valid).
    """
    found: list[tuple[str, str]] = []
    if not dcs_present:
        found.append(("", "one of raft, etcd3, consul is required"))
    elif len(dcs_present) > 1:
        found.append((dcs_present[0], f"only one DCS section allowed, found {' and '.join(dcs_present)}"))
    elif witness and dcs_present != ["raft"]:
        found.append(("witness", "a witness only adds a Raft vote, so it needs the raft section"))
    if not witness and not has_postgresql:
        found.append(("postgresql", "field required (or set witness: true for a node without PostgreSQL)"))
    if witness and has_postgresql:
        found.append(("postgresql", "a witness runs no PostgreSQL: remove this section"))
    return found


def dcs_kind(config: Config) -> DcsKind:
    """Which DCS section the config has."""
    for kind in DCS_KINDS:
        if getattr(config, kind) is not None:
            return kind
    raise AssertionError("a validated Config always has a DCS section")  # invariant, see Config
