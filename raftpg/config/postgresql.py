"""The ``postgresql`` section: this node's PostgreSQL (absent on a witness)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import Field, PlainValidator, ValidationInfo, field_validator, model_validator

from raftpg.config import unsupported
from raftpg.config.addresses import is_loopback, is_wildcard, is_wildcard_address, split_host_port
from raftpg.config.base import Settings
from raftpg.config.cli_options import BasebackupOptions, option_args
from raftpg.config.errors import problems
from raftpg.config.fields import ConfigLine, GucMap, HostPort, Name, control_characters, empty_map

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
    parse_pg_listen(value)
    return value.strip()


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


PgListen = Annotated[str, PlainValidator(_listen)]


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
    """``postgresql.callbacks``: commands run on events, as in Patroni (called with action, role, scope)."""

    on_start: Name | None = None
    on_stop: Name | None = None
    on_restart: Name | None = None
    on_reload: Name | None = None
    on_role_change: Name | None = None


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
    - ``bin_dir``: None means "find it", see :meth:`resolve_bin_dir`.
    """

    patroni_only: ClassVar[Mapping[str, str]] = unsupported.POSTGRESQL

    listen: PgListen
    connect_address: HostPort | None = Field(None, validate_default=True)  # always set once valid
    data_dir: Name
    bin_dir: Name | None = None
    config_dir: Name | None = None
    pgpass: Name
    authentication: PgAuthentication = Field(default_factory=PgAuthentication)
    parameters: GucMap = Field(default_factory=empty_map)
    pg_hba: tuple[ConfigLine, ...] = ()
    basebackup: BasebackupOptions = ()
    callbacks: Callbacks = Field(default_factory=Callbacks)
    use_pg_rewind: bool | None = None

    @field_validator("bin_dir", "config_dir", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value  # Patroni configs often say bin_dir: ''

    @classmethod
    def patroni_only_for(cls, raw: Mapping[str, Any]) -> Mapping[str, str]:
        methods = raw.get("create_replica_methods")
        if not isinstance(methods, list):
            return cls.patroni_only
        named = {
            m: unsupported.METHOD_SECTION
            for m in methods
            if isinstance(m, str) and m not in cls.model_fields and m in raw
        }
        return {**cls.patroni_only, **named}

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
