"""Config: the whole file, and the rules that span sections.

Build it with ``load_config`` / ``parse_config`` (``load.py``), which screen the keys first and attach
the warnings; ``Config.model_validate`` alone skips the key screen and gives no warnings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from raftpg.config import unsupported
from raftpg.config.addresses import same_address, split_host_port
from raftpg.config.base import Settings
from raftpg.config.dcs_sections import ConsulSettings, Etcd3Settings, RaftSettings
from raftpg.config.dynamic import RAFT_FAILSAFE_REFUSAL
from raftpg.config.errors import problems
from raftpg.config.fields import MemberName, control_characters, member_name
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
    ``scope`` and ``name`` are printable, contain no "/" and are not "." or ".." (they are parts of DCS keys
    and file names); ``restapi.connect_address`` and ``postgresql.connect_address`` are set;
    ``postgresql.pgpass`` is set; the Raft, REST and PostgreSQL listeners have distinct ports.
    """

    patroni_only: ClassVar[Mapping[str, str]] = unsupported.TOP_LEVEL
    accepted: ClassVar[frozenset[str]] = frozenset(unsupported.OTHER_DCS)  # judged by dcs_choice()
    refused: ClassVar[Mapping[str, str]] = unsupported.TOP_LEVEL_REFUSED

    scope: MemberName
    namespace: str = "/service/"
    name: MemberName
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
    _environ: Mapping[str, str] = PrivateAttr(default_factory=dict)

    @property
    def warnings(self) -> tuple[str, ...]:
        """Keys Patroni knows that raftpg ignores, and other things worth a log line at startup."""
        return self._warnings

    @property
    def environ(self) -> Mapping[str, str]:
        """The ``PATRONI_*``/``RAFTPG_*`` variables this config was read with (pass them to ``load_config``
        on a reload: the agent drops them from its own environment)."""
        return self._environ

    @model_validator(mode="before")
    @classmethod
    def _patroni_forms(cls, data: Any) -> Any:
        """Patroni's shorthands that need another section to resolve: Raft addresses without a port (the REST
        API's port + 10000) and ``watchdog.safety_margin: -1`` (fire at half of ``bootstrap.dcs.ttl``)."""
        if not isinstance(data, Mapping):
            return data
        out = dict(data)
        raft, restapi = data.get("raft"), data.get("restapi")
        if isinstance(raft, Mapping) and isinstance(restapi, Mapping):
            out["raft"] = raft_ports(raft, restapi.get("listen"))
        watchdog = data.get("watchdog")
        if isinstance(watchdog, Mapping) and watchdog.get("safety_margin") in (-1, "-1"):
            out["watchdog"] = {**watchdog, "safety_margin": half_ttl_margin(data.get("bootstrap"))}
        return out

    @model_validator(mode="before")
    @classmethod
    def _default_pgpass(cls, data: Any) -> Any:
        """``postgresql.pgpass`` defaults to ``.pgpass.raftpg-<name>`` beside the data directory: a place only
        the agent's OS user writes to, not a predictable name in /tmp that another user could take first."""
        if not isinstance(data, Mapping):
            return data
        pg = data.get("postgresql")
        if isinstance(pg, Mapping) and pg.get("pgpass") is None:
            return {**data, "postgresql": {**pg, "pgpass": default_pgpass(pg.get("data_dir"), data.get("name"))}}
        return data

    @field_validator("namespace", mode="after")
    @classmethod
    def _slashes(cls, value: str) -> str:
        why = control_characters(value)
        if why:
            raise ValueError(why)
        inner = value.strip().strip("/")
        return f"/{inner}/" if inner else "/"

    @model_validator(mode="after")
    def _across_sections(self) -> Config:
        present = [kind for kind in DCS_KINDS if getattr(self, kind) is not None]
        found = structure_problems(present, self.witness, self.postgresql is not None) + self._watchdog_problems()
        found += port_problems(self)
        if self.raft is not None and self.bootstrap.dcs.failsafe_mode:
            found.append(("bootstrap.dcs.failsafe_mode", RAFT_FAILSAFE_REFUSAL))
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


def dcs_choice(document: Mapping[str, Any]) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """Which DCS section a document uses -> (sections to drop, warnings, errors as (key, message)).

    ``raft`` wins over ``etcd3``/``consul`` and over the sections raftpg cannot use (``etcd``, ``zookeeper``,
    ...): a Patroni config keeps its old section when a raft section is added for the migration, and the
    other section is then ignored, with a warning. Without ``raft``, a section raftpg cannot use is an error
    that says what to do (unless etcd3 or consul is there); two of etcd3 and consul stay an error.
    """
    present = [kind for kind in DCS_KINDS if document.get(kind) is not None]
    others = [key for key in unsupported.OTHER_DCS if key in document]
    drop, warnings, errors = [], [], []
    if "raft" in present:
        for key in [k for k in present if k != "raft"] + others:
            drop.append(key)
            warnings.append(f"{key}: ignored: the raft section is used (with both, raftpg uses its embedded "
                            "store; stop every Patroni node before starting raftpg on this config)")
    elif present:
        drop += others
        warnings += [f"{key}: ignored: {unsupported.OTHER_DCS[key]}" for key in others]
    else:
        errors += [(key, unsupported.OTHER_DCS[key]) for key in others]
    return drop, warnings, errors


def structure_problems(dcs_present: Sequence[str], witness: bool, has_postgresql: bool) -> list[tuple[str, str]]:
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


RAFT_PORT_OFFSET = 10000


def raft_ports(raft: Mapping[str, Any], rest_listen: Any) -> Mapping[str, Any]:
    """``raft`` with a port added to each address written without one: the REST API's port + 10000, as
    Patroni's Raft does (so every member's Raft port follows from its REST port when both are uniform)."""
    try:
        port = split_host_port(rest_listen)[1] + RAFT_PORT_OFFSET
    except ValueError:
        return raft  # restapi.listen is reported as invalid
    if port > 65535:
        return raft  # the addresses are then reported as lacking a port

    def fill(addr: Any) -> Any:
        if not isinstance(addr, str) or not addr.strip():
            return addr
        text = addr.strip()
        bare = text.startswith("[") and text.endswith("]") or (not text.startswith("[") and ":" not in text)
        return f"{text}:{port}" if bare else addr

    out = dict(raft)
    for key in ("self_addr", "bind_addr"):
        if key in out:
            out[key] = fill(out[key])
    partners = out.get("partner_addrs")
    if isinstance(partners, str):
        partners = [p.strip() for p in partners.split(",") if p.strip()]
    if isinstance(partners, list | tuple):
        out["partner_addrs"] = [fill(p) for p in partners]
    return out


def half_ttl_margin(bootstrap: Any) -> int:
    """The safety margin that makes the watchdog fire at ``ttl // 2`` (Patroni's ``safety_margin: -1``)."""
    dcs = bootstrap.get("dcs") if isinstance(bootstrap, Mapping) else None
    ttl = dcs.get("ttl", 30) if isinstance(dcs, Mapping) else 30
    try:
        ttl = int(ttl)
    except (TypeError, ValueError):
        ttl = 30  # reported by bootstrap.dcs.ttl
    return ttl - ttl // 2


def default_pgpass(data_dir: Any, name: Any) -> str:
    """``<parent of data_dir>/.pgpass.raftpg-<name>`` (the same default as ``pg.settings.PgSettings``)."""
    parent = os.path.dirname(data_dir.strip().rstrip("/")) if isinstance(data_dir, str) and data_dir.strip() else ""
    try:
        suffix = member_name(name)
    except ValueError:
        suffix = "raftpg"  # the name is invalid and reported as such
    return os.path.join(parent or ".", f".pgpass.raftpg-{suffix}")


def port_problems(config: Config) -> list[tuple[str, str]]:
    """Two of this node's listeners (Raft, REST, PostgreSQL) on one port, or two of its advertised addresses
    equal: one of them could never bind, or others would reach the wrong service. Checked whatever the hosts,
    since a wildcard listener takes the port on every address."""
    listeners = [("restapi.listen", config.restapi.listen)]
    addresses = [("restapi.connect_address", config.restapi.connect_address or config.restapi.listen)]
    if config.raft is not None:
        listeners.append(("raft.bind_addr" if config.raft.bind_addr else "raft.self_addr", config.raft.listen_addr))
        addresses.append(("raft.self_addr", config.raft.self_addr or ""))  # set in a valid raft section
    if config.postgresql is not None:
        listeners.append(("postgresql.listen", f"{config.postgresql.listen_hosts[0]}:{config.postgresql.port}"))
        addresses.append(("postgresql.connect_address", config.postgresql.connect_address or ""))
    found: list[tuple[str, str]] = []
    for i, (key, addr) in enumerate(listeners):
        port = split_host_port(addr)[1]
        for earlier_key, earlier in listeners[:i]:
            if split_host_port(earlier)[1] == port:
                found.append((key, f"port {port} is also {earlier_key}'s port; Raft, REST and PostgreSQL "
                                   "each need their own"))
                break
    if not found:
        for i, (key, addr) in enumerate(addresses):
            twin = next((k for k, a in addresses[:i] if same_address(a, addr)), None)
            if twin is not None:
                found.append((key, f"{addr} is also {twin}; each service needs its own address"))
    return found


def dcs_kind(config: Config) -> DcsKind:
    """Which DCS section the config has."""
    for kind in DCS_KINDS:
        if getattr(config, kind) is not None:
            return kind
    raise AssertionError("a validated Config always has a DCS section")  # invariant, see Config
