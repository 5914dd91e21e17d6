"""Command-line options for initdb and pg_basebackup, written the Patroni way.

The YAML shape is a list whose items are a bare option name or a one-key mapping::

    initdb: [data-checksums, {encoding: UTF8}]        ->  --data-checksums --encoding=UTF8
    basebackup: {checkpoint: fast, max-rate: 100M}    ->  --checkpoint=fast --max-rate=100M

``basebackup`` may also be a mapping (each key one option). Names are long option names without dashes;
options raftpg must set itself (the data directory, the user, where to connect) are refused, so a config
cannot point initdb or pg_basebackup somewhere the rest of raftpg does not look.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator

from raftpg.config.errors import problems
from raftpg.config.fields import FrozenDict, thaw

Option = str | Mapping[str, str]

INITDB_RESERVED = MappingProxyType({
    "pgdata": "postgresql.data_dir",
    "username": "postgresql.authentication.superuser.username",
})
BASEBACKUP_RESERVED = MappingProxyType({
    "pgdata": "postgresql.data_dir",
    "dbname": "the leader's connect_address",
    "host": "the leader's connect_address",
    "port": "the leader's connect_address",
    "username": "postgresql.authentication.replication.username",
    "format": "a plain-format copy (raftpg needs one)",
})


def option_args(items: tuple[Option, ...]) -> list[str]:
    """The validated items as command-line arguments, in order."""
    args: list[str] = []
    for item in items:
        if isinstance(item, str):
            args.append(f"--{item}")
        else:
            args.extend(f"--{name}={value}" for name, value in item.items())
    return args


def _check_name(name: Any, reserved: Mapping[str, str]) -> str | None:
    """Why ``name`` is not an acceptable option name, or None."""
    if not isinstance(name, str) or not name.strip():
        return f"option names must be non-empty strings, got {name!r}"
    if name.startswith("-"):
        return f"write the option without leading dashes: {name.lstrip('-')!r}"
    if len(name) == 1:
        return f"use the long option name instead of {name!r}"
    if any(c.isspace() or c == "=" for c in name):
        return f"not an option name: {name!r}"
    if name in reserved:
        return f"{name!r} is set by raftpg from {reserved[name]}"
    return None


def _parse(value: Any, reserved: Mapping[str, str], mapping_ok: bool) -> tuple[Option, ...]:
    if value is None:
        return ()
    if isinstance(value, Mapping) and mapping_ok:
        value = [{name: setting} for name, setting in value.items()]
    if not isinstance(value, list | tuple):
        raise ValueError(f"must be a list of option names or {{name: value}} items, got {value!r}")
    out: list[Option] = []
    bad: list[tuple[str, str]] = []
    for i, item in enumerate(value):
        if isinstance(item, Mapping):
            pairs = {}
            for name, setting in item.items():
                why = _check_name(name, reserved)
                if why is None and (setting is None or isinstance(setting, Mapping | list | bool)):
                    why = f"the value of {name!r} must be a string or number, got {setting!r}"
                if why:
                    bad.append((f"[{i}]", why))
                else:
                    pairs[name] = str(setting)
            out.append(FrozenDict(pairs))
        else:
            why = _check_name(item, reserved)
            if why:
                bad.append((f"[{i}]", why))
            else:
                out.append(item)
    if bad:
        raise problems(bad)
    return tuple(out)


def _validator(reserved: Mapping[str, str], mapping_ok: bool) -> Callable[[Any], tuple[Option, ...]]:
    return lambda value: _parse(value, reserved, mapping_ok)


InitdbOptions = Annotated[
    tuple[Option, ...], PlainValidator(_validator(INITDB_RESERVED, False)), PlainSerializer(thaw)
]
BasebackupOptions = Annotated[
    tuple[Option, ...], PlainValidator(_validator(BASEBACKUP_RESERVED, True)), PlainSerializer(thaw)
]
