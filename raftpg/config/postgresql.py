"""The ``postgresql`` section: this node's PostgreSQL (absent on a witness)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, PlainValidator, ValidationInfo, field_validator, model_validator

from raftpg.config import unsupported
from raftpg.config.addresses import is_loopback, is_wildcard, is_wildcard_address, split_host_port
from raftpg.config.base import Settings
from raftpg.config.cli_options import BasebackupOptions, option_args
from raftpg.config.errors import problem, problems
from raftpg.config.fields import (
    ConfigLine,
    FrozenDict,
    GucMap,
    HostPort,
    Int,
    Name,
    control_characters,
    empty_map,
)
from raftpg.config.methods import BASEBACKUP, ReplicaMethod, method_section, unused_method_sections

# Where distributions install server binaries, one directory per major version: Debian/Ubuntu
# (/usr/lib/postgresql/16/bin) and the PGDG RPMs (/usr/pgsql-16/bin).
BIN_DIR_PATTERNS = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin")


def parse_pg_listen(text: Any) -> tuple[tuple[str, ...], int]:
    """``'*:5432'``, ``'10.0.0.1,127.0.0.1:5432'``, ``'[::1]:5432'`` -> (hosts, port). Raises ValueError."""
    host_part, port = split_host_port(text)
    hosts = tuple(h.strip() for h in host_part.split(","))
    if not all(hosts):
        raise ValueError(f"must be 'host[,host...]:port' with no empty host ('*' for all), got {text!r}")
    return hosts, port


def _listen(value: Any) -> str:
    parse_pg_listen(value)  # raises ValueError with the reason
    stripped: str = value.strip()
    return stripped


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


PgListen = Annotated[str, PlainValidator(_listen)]

PROGRAMS = ("pg_ctl", "initdb", "pg_controldata", "pg_basebackup", "postgres", "pg_isready", "pg_rewind")


def _bin_names(value: Any) -> Mapping[str, str]:
    """``bin_name``: another file name (in ``bin_dir``) for some of PostgreSQL's programs."""
    if value is None:
        return FrozenDict()
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a mapping of program names to file names, got a {type(value).__name__}")
    bad = []
    for program, name in value.items():
        if program not in PROGRAMS:
            bad.append((str(program), f"not one of {', '.join(PROGRAMS)}"))
        elif not isinstance(name, str) or not name.strip() or "/" in name or control_characters(name):
            bad.append((program, "must be a file name in bin_dir (no '/')"))
    if bad:
        raise problems(bad)
    return FrozenDict({program: name.strip() for program, name in value.items()})


BinNames = Annotated[Mapping[str, str], PlainValidator(_bin_names)]


class PgUser(Settings):
    """One role raftpg connects as. No password: only usable on a PostgreSQL listening on loopback (the
    generated pg_hba asks every TCP client for a SCRAM password, so such a role cannot log in over TCP)."""

    patroni_only: ClassVar[Mapping[str, str]] = unsupported.PG_USER

    username: Name
    password: str | None = Field(None, repr=False)

    @field_validator("username", mode="after")
    @classmethod
    def _printable(cls, value: str) -> str:
        why = control_characters(value)
        if why:
            raise ValueError(why)
        return value

    @field_validator("password", mode="after")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None


class PgAuthentication(Settings):
    """``postgresql.authentication``. Usernames default to Patroni's: postgres and replicator.

    ``rewind`` (a non-superuser for pg_rewind) is optional; without it pg_rewind runs as the superuser.
    """

    superuser: PgUser = Field(default_factory=lambda: PgUser(username="postgres"))
    replication: PgUser = Field(default_factory=lambda: PgUser(username="replicator"))
    rewind: PgUser | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_usernames(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        out = dict(data)
        for role, default in (("superuser", "postgres"), ("replication", "replicator")):
            if isinstance(out.get(role), Mapping) and "username" not in out[role]:
                out[role] = {**out[role], "username": default}
        return out


class Callbacks(Settings):
    """``postgresql.callbacks``: commands run on events, as in Patroni (called with action, role, scope).

    ``primary_role`` (raftpg's): the role word a callback gets for a primary, ``primary`` (Patroni 4) or
    ``master`` for scripts written for Patroni 3 or older that match on it.
    """

    on_start: Name | None = None
    on_stop: Name | None = None
    on_restart: Name | None = None
    on_reload: Name | None = None
    on_role_change: Name | None = None
    primary_role: Literal["primary", "master"] = "primary"


class PostgresSettings(Settings):
    """``postgresql``: this node's PostgreSQL.

    - ``listen`` is ``host[,host...]:port`` (``*`` for all interfaces) and becomes listen_addresses and port.
    - ``connect_address`` (how the others reach this node) defaults to the first listen host; a wildcard
      listen host cannot be connected to, so then it must be given.
    - ``pgpass`` defaults to ``.pgpass.raftpg-<name>`` beside the data directory (filled in by Config,
      which knows the name).
    - A PostgreSQL listening on any address but loopback needs a password for every role in
      ``authentication`` (superuser, replication, and rewind when set): without them the only way to let
      the other members in would be ``trust``, which raftpg never generates for TCP.
    - ``use_pg_rewind``, when set here, overrides ``bootstrap.dcs.postgresql.use_pg_rewind`` for this node
      (None: follow the cluster-wide value).
    - ``bin_dir``: None means "find it", see :meth:`resolve_bin_dir`; a running agent finds it once, when it
      starts, and keeps it (a newer version installed beside it is not picked up until a restart).
    """

    patroni_only: ClassVar[Mapping[str, str]] = unsupported.POSTGRESQL
    accepted: ClassVar[frozenset[str]] = unsupported.POSTGRESQL_ACCEPTED
    refused: ClassVar[Mapping[str, str]] = unsupported.POSTGRESQL_REFUSED

    listen: PgListen
    connect_address: HostPort | None = Field(None, validate_default=True)  # always set once valid
    data_dir: Name
    bin_dir: Name | None = None
    config_dir: Name | None = None
    pgpass: Name
    authentication: PgAuthentication = Field(default_factory=PgAuthentication)
    parameters: GucMap = Field(default_factory=empty_map)
    pg_hba: tuple[ConfigLine, ...] = ()
    pg_ident: tuple[ConfigLine, ...] = ()
    recovery_conf: GucMap = Field(default_factory=empty_map)
    custom_conf: Name | None = None
    bin_name: BinNames = Field(default_factory=empty_map)
    basebackup: BasebackupOptions = ()
    create_replica_methods: tuple[Name, ...] = ()
    # raftpg's: how long creating a replica may take, in seconds (None: no limit, as in Patroni)
    create_replica_timeout: Int | None = Field(None, ge=1, le=30 * 24 * 3600)
    replica_methods: Mapping[str, ReplicaMethod] = Field(default_factory=empty_map)  # from the methods' sections
    callbacks: Callbacks = Field(default_factory=Callbacks)
    use_pg_rewind: bool | None = None

    @field_validator("bin_dir", "config_dir", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value  # Patroni configs often say bin_dir: ''

    @classmethod
    def method_sections(cls, raw: Mapping[str, Any]) -> frozenset[str]:
        methods = raw.get("create_replica_methods")
        listed = methods if isinstance(methods, list | tuple) else ()
        named = {m for m in listed if isinstance(m, str) and m not in cls.model_fields}
        return frozenset(named | set(unused_method_sections(cls, raw, "create_replica_methods")))

    @classmethod
    def notes(cls, raw: Mapping[str, Any]) -> list[tuple[str, str]]:
        found = [(name, "a method section not listed in create_replica_methods: used only where "
                        "standby_cluster.create_replica_methods names it, as in Patroni")
                 for name in unused_method_sections(cls, raw, "create_replica_methods")]
        if raw.get("use_unix_socket") is False:
            found.append(("use_unix_socket", "the agent always connects to its own PostgreSQL over its unix "
                                             "socket (the first of unix_socket_directories)"))
        config_dir, data_dir = raw.get("config_dir"), raw.get("data_dir")
        if isinstance(config_dir, str) and config_dir.strip() and isinstance(data_dir, str) \
                and os.path.normpath(config_dir.strip()) != os.path.normpath(data_dir.strip()):
            found.append(("config_dir", "ignored: raftpg keeps postgresql.conf, pg_hba.conf and pg_ident.conf "
                                        "in the data directory"))
        return found

    @model_validator(mode="before")
    @classmethod
    def _read_replica_methods(cls, data: Any) -> Any:
        """``create_replica_methods`` and each named method's section -> ``replica_methods`` (name -> method).
        A method without a section runs its name as the command, as in Patroni."""
        if not isinstance(data, Mapping):
            return data
        if "replica_methods" in data:
            raise problem("replica_methods", "unknown key")
        unused = unused_method_sections(cls, data, "create_replica_methods")
        # a section the list does not name is kept for standby_cluster.create_replica_methods (a standby
        # leader's copy), when it reads as a method; one that does not is ignored, as before
        parsed: dict[str, ReplicaMethod] = {}
        for name in unused:
            spare, _ = method_section(ReplicaMethod, data.get(name), name)
            if spare is not None:
                parsed[name] = spare if spare.command else spare.model_copy(update={"command": name})
        methods = data.get("create_replica_methods")
        if not isinstance(methods, list | tuple):
            rest = {k: v for k, v in data.items() if k not in unused}
            return {**rest, "replica_methods": FrozenDict(parsed)} if parsed else rest
        found: list[tuple[str, str]] = []
        for i, name in enumerate(methods):
            if not isinstance(name, str) or not name.strip():
                found.append((f"create_replica_methods[{i}]", "must be a method name"))
            elif name != BASEBACKUP and name in cls.model_fields:
                found.append((f"create_replica_methods[{i}]", f"'{name}' is a key of postgresql, not a method"))
            elif name != BASEBACKUP:
                method, problems_found = method_section(ReplicaMethod, data.get(name), name)
                found += problems_found
                if method is not None:
                    parsed[name] = method if method.command else method.model_copy(update={"command": name})
        if found:
            raise problems(found)
        rest = {k: v for k, v in data.items() if k not in parsed and k not in unused}
        return {**rest, "replica_methods": FrozenDict(parsed)}

    @field_validator("replica_methods", mode="after")
    @classmethod
    def _frozen_methods(cls, value: Mapping[str, ReplicaMethod]) -> Mapping[str, ReplicaMethod]:
        return FrozenDict(value)

    @field_validator("connect_address", mode="before")
    @classmethod
    def _default_connect_address(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None:
            if isinstance(value, str) and is_wildcard_address(value):
                raise ValueError(f"must be an address others can connect to, not {value}")
            return value
        if "listen" not in info.data:
            return None  # listen is missing or invalid, and reported as such
        hosts, port = parse_pg_listen(info.data["listen"])
        if is_wildcard(hosts[0]):
            raise ValueError(
                f"required when postgresql.listen starts with a wildcard ({info.data['listen']}): "
                "give the address the other nodes use to reach this PostgreSQL"
            )
        return _join_host_port(hosts[0], port)

    @model_validator(mode="after")
    def _passwords_off_loopback(self) -> PostgresSettings:
        exposed = [h for h in self.listen_hosts if not is_loopback(h)]
        if not exposed:
            return self
        auth = self.authentication
        roles = [("superuser", auth.superuser), ("replication", auth.replication), ("rewind", auth.rewind)]
        missing = [(f"authentication.{role}.password",
                    f"required because postgresql.listen includes {exposed[0]} (not loopback): other machines "
                    "can reach this PostgreSQL, so every role raftpg uses needs a password (scram-sha-256)")
                   for role, user in roles if user is not None and not user.password]
        if missing:
            raise problems(missing)
        return self

    @property
    def listen_hosts(self) -> tuple[str, ...]:
        return parse_pg_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_pg_listen(self.listen)[1]

    @property
    def listen_addresses(self) -> str:
        """The listen hosts as PostgreSQL's ``listen_addresses`` setting: ``'10.0.0.1,127.0.0.1'``."""
        return ",".join(self.listen_hosts)

    @property
    def connect_host(self) -> str:
        return split_host_port(self.connect_address or "")[0]

    @property
    def connect_port(self) -> int:
        return split_host_port(self.connect_address or "")[1]

    def basebackup_args(self) -> list[str]:
        """``basebackup`` as pg_basebackup arguments: ``["--checkpoint=fast", "--max-rate=100M"]``."""
        return option_args(self.basebackup)

    def resolve_bin_dir(
        self, patterns: Sequence[str] = BIN_DIR_PATTERNS, path: str | None = None
    ) -> str | None:
        """The directory holding pg_ctl: ``bin_dir`` when set; else the highest major version installed in
        a distribution's per-version directory (``patterns``); else the directory of ``pg_ctl`` on
        ``path`` (default: $PATH). None when none is found. Reads the file system, so call it when
        starting PostgreSQL, not while validating.
        """
        if self.bin_dir:
            return self.bin_dir
        found: list[tuple[tuple[int, ...], str]] = []
        for pattern in patterns:
            root = Path(pattern.split("*", 1)[0]).parent
            if not root.is_dir():
                continue
            for candidate in root.glob(pattern[len(str(root)) + 1:]):
                version = _version_in(candidate, pattern)
                if version and (candidate / "pg_ctl").is_file():
                    found.append((version, str(candidate)))
        if found:
            return max(found)[1]
        pg_ctl = shutil.which("pg_ctl", path=path if path is not None else os.environ.get("PATH"))
        return str(Path(pg_ctl).parent) if pg_ctl else None


def _version_in(candidate: Path, pattern: str) -> tuple[int, ...] | None:
    """The version the ``*`` of ``pattern`` matched in ``candidate``, as numbers: '9.6' -> (9, 6)."""
    regex = re.escape(pattern).replace(r"\*", r"([0-9]+(?:\.[0-9]+)*)")
    match = re.fullmatch(regex, str(candidate))
    return tuple(int(part) for part in match.group(1).split(".")) if match else None
