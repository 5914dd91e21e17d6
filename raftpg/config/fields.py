"""Field types shared by the settings models: strict-enough scalars, addresses, and deep-frozen mappings.

YAML written for Patroni says ``ttl: "30"`` or ``use_slots: on``; these types accept that, but refuse a
boolean where a number is meant (``ttl: true`` is a mistake, not 1). Mappings are stored as
``FrozenDict`` (a dict that refuses changes, so json.dumps and pydantic still see a dict) and lists as
tuples, so a loaded Config cannot be changed in place; ``thaw`` turns them back into plain dicts and
lists, e.g. for yaml.safe_dump.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, PlainValidator, StringConstraints

from raftpg.config.addresses import split_host_port
from raftpg.config.errors import problems
from raftpg.model.slots import SLOT_NAME
from raftpg.model.values import DURATION_UNITS_S, duration_s

INT64_MAX = 2**63 - 1


class FrozenDict(dict[str, Any]):
    """A dict that cannot be changed after construction (values are expected frozen too)."""

    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("settings are frozen: this mapping is read-only")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __copy__(self) -> FrozenDict:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenDict:
        return self

    def __reduce__(self) -> tuple[type[FrozenDict], tuple[dict[str, Any]]]:
        return (FrozenDict, (dict(self),))


def freeze(value: Any) -> Any:
    """dicts -> FrozenDict, lists -> tuples, recursively; scalars unchanged."""
    if isinstance(value, Mapping):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The inverse of :func:`freeze`: plain dicts and lists, ready for json.dumps or yaml.safe_dump."""
    if isinstance(value, Mapping):
        return thaw_mapping(value)
    if isinstance(value, list | tuple):
        return [thaw(v) for v in value]
    return value


def thaw_mapping(value: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`thaw` of a mapping."""
    return {k: thaw(v) for k, v in value.items()}


def empty_map() -> Mapping[str, Any]:
    """A default for mapping fields (a fresh read-only empty mapping)."""
    return FrozenDict()


def _reject_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"must be an integer, got {value!r}")
    if isinstance(value, str):
        return value.strip()
    return value


def _host_port(value: Any) -> str:
    split_host_port(value)  # raises ValueError with the reason
    stripped: str = value.strip()
    return stripped


def _str_list(value: Any) -> Any:
    """Accept ``'a:1,b:2'`` as well as a YAML list; a single non-list value becomes a one-item list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _host_port_list(value: Any) -> tuple[str, ...]:
    items = _str_list(value)
    if not isinstance(items, list | tuple):
        raise ValueError(f"must be a list of 'host:port' strings, got {value!r}")
    out: list[str] = []
    bad: list[tuple[str, str]] = []
    for i, item in enumerate(items):
        try:
            out.append(_host_port(item))
        except ValueError as exc:
            bad.append((f"[{i}]", str(exc)))
    if bad:
        raise problems(bad)
    return tuple(out)


GUC_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
"""A PostgreSQL parameter name as raftpg writes it into postgresql.conf (``work_mem``, ``auto_explain.x``)."""

MAX_MEMBER_NAME = 128


def control_characters(text: str, allow_tab: bool = False) -> str | None:
    """Why ``text`` may not be written into a config file line, or None: it holds a control character
    (newline, carriage return, NUL, escape, ...; tab unless ``allow_tab``), which could start a new line
    or hide one from a reader."""
    bad = next((c for c in text if (ord(c) < 0x20 and not (allow_tab and c == "\t"))
                or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029"), None)
    return None if bad is None else f"must not contain control characters (found {bad!r})"


def guc_problem(name: Any, value: Any) -> tuple[str, str] | None:
    """``(key, message)`` when ``name = value`` cannot be one postgresql.conf line, else None.

    The rule behind it: one parameter is one line. A name outside ``GUC_NAME`` or a value with a control
    character could add a second line, e.g. one overriding ``synchronous_standby_names``, which raftpg
    alone must set. Messages never quote a value (it may be a secret, e.g. in ``primary_conninfo``).
    """
    if not isinstance(name, str) or not GUC_NAME.fullmatch(name):
        shown = repr(name if len(name) <= 60 else name[:57] + "...") if isinstance(name, str) else repr(name)
        return ("", f"{shown} is not a parameter name: letters, digits, '_' and '.' only, not starting with a digit")
    if not isinstance(value, str | int | float | bool):
        got = "null" if value is None else f"a {type(value).__name__}"
        return (name, f"must be a string, number or boolean, got {got}")
    if isinstance(value, float) and not math.isfinite(value):
        return (name, "must be a finite number")
    if isinstance(value, str):
        why = control_characters(value)
        if why:
            return (name, why)
    return None


def _guc_map(value: Any) -> Mapping[str, str | int | float | bool]:
    """PostgreSQL parameters: names to scalars (``on``/``off`` arrive as booleans from YAML).

    Names are case-insensitive to PostgreSQL, so two spellings of one name are refused as a duplicate.
    """
    if value is None:
        return FrozenDict()
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a mapping of parameter names to values, got a {type(value).__name__}")
    bad = []
    seen: dict[str, str] = {}
    for name, setting in value.items():
        found = guc_problem(name, setting)
        if found is not None:
            bad.append(found)
            continue
        first = seen.setdefault(name.lower(), name)
        if first != name:
            bad.append((name, f"names the same parameter as {first!r} (names are case-insensitive)"))
    if bad:
        raise problems(bad)
    return FrozenDict(value)


def member_name(value: Any) -> str:
    """A member or cluster name: part of DCS keys, file names, slot names and log lines."""
    if not isinstance(value, str):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a string, got a {type(value).__name__}")
        value = str(value)
    name: str = value.strip()
    if not name:
        raise ValueError("must not be empty")
    why = control_characters(name)
    if why:
        raise ValueError(why)
    if name in (".", ".."):
        raise ValueError(f"must not be {name!r} (it is a path component)")
    if "/" in name:
        raise ValueError(f"must not contain '/' (it is part of DCS key names), got {name!r}")
    if len(name) > MAX_MEMBER_NAME:
        raise ValueError(f"must be at most {MAX_MEMBER_NAME} characters, got {len(name)}")
    return name


SLOT_SHAPE = "{type: physical} or {type: logical, database: DB, plugin: PLUGIN}"


def _slot_problem(name: Any, entry: Any) -> tuple[str, str] | None:
    """``(key path, why)`` for a ``slots`` entry PostgreSQL or raftpg cannot honour, or None."""
    if not isinstance(name, str) or not SLOT_NAME.fullmatch(name):
        return (str(name), "a replication slot name is 1-63 lower-case letters, digits and underscores")
    if entry is None:
        return None  # physical
    if not isinstance(entry, Mapping):
        return (name, f"must be {SLOT_SHAPE}, got a {type(entry).__name__}")
    kind = entry.get("type", "physical")
    if kind not in ("physical", "logical"):
        return (f"{name}.type", f"must be physical or logical, got {kind!r}")
    for key in entry:
        if key not in ("type", "database", "plugin", "cluster_type"):
            return (f"{name}.{key}", f"unknown key; a slot is {SLOT_SHAPE}")
    if entry.get("cluster_type", "primary") not in ("primary", "standby"):
        return (f"{name}.cluster_type", "must be primary or standby (Patroni's meaning: where the slot is kept)")
    for key in ("database", "plugin"):
        value = entry.get(key)
        if kind == "logical" and (not isinstance(value, str) or not value.strip()):
            return (f"{name}.{key}", "a logical slot needs it (a non-empty string)")
        if isinstance(value, str) and control_characters(value) is not None:
            return (f"{name}.{key}", "must not contain control characters")
    return None


def _slot_map(value: Any) -> Mapping[str, Any]:
    """The dynamic config's ``slots``: permanent replication slots the primary keeps, as Patroni's."""
    if value is None:
        return FrozenDict()
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a mapping of slot names to {SLOT_SHAPE}, got a {type(value).__name__}")
    bad = [found for name, entry in value.items() if (found := _slot_problem(name, entry)) is not None]
    if bad:
        raise problems(bad)
    return FrozenDict({name: freeze(entry) for name, entry in value.items()})


def _config_line(value: Any) -> str:
    """One line of a config file we write (a pg_hba line): a string without control characters."""
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got a {type(value).__name__}")
    why = control_characters(value, allow_tab=True)
    if why:
        raise ValueError(why)
    return value


def _dump_frozen(value: Any) -> Any:
    return thaw(value)


Int = Annotated[int, BeforeValidator(_reject_bool)]
"""An integer; numeric strings accepted, booleans refused."""


def _seconds(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a number of seconds or a duration such as 30min, got a boolean")
    if isinstance(value, str):
        parsed = duration_s(value, -INT64_MAX, INT64_MAX)
        if parsed is None:
            units = ", ".join(DURATION_UNITS_S)
            raise ValueError(f"must be a number of seconds or a duration with a unit ({units}), got {value!r:.40}")
        return parsed
    return value


Seconds = Annotated[int, BeforeValidator(_seconds)]
"""Whole seconds: a number, or a text with one of PostgreSQL's units (``30min``, ``1h``, ``500ms``)."""

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
"""A non-empty string, surrounding whitespace removed."""

Secret = Annotated[str, StringConstraints(min_length=1)]
"""A non-empty string kept exactly as written (passwords: no stripping)."""

HostPort = Annotated[str, PlainValidator(_host_port)]
"""``host:port`` with a port in 1..65535, kept as written (minus surrounding whitespace)."""

HostPortList = Annotated[tuple[str, ...], PlainValidator(_host_port_list), PlainSerializer(list)]
"""A list of ``host:port``; a comma-separated string is accepted too."""

MemberName = Annotated[str, PlainValidator(member_name)]
"""A member or scope name: non-empty, printable, no '/', not '.' or '..', at most 128 characters."""

ConfigLine = Annotated[str, PlainValidator(_config_line)]
"""One line of a generated file (pg_hba.conf): no control characters, so one item stays one line."""

SlotMap = Annotated[Mapping[str, Any], PlainValidator(_slot_map), PlainSerializer(_dump_frozen)]
"""Permanent replication slots: name -> ``{type: physical}`` or ``{type: logical, database, plugin}``."""

GucMap = Annotated[
    Mapping[str, str | int | float | bool], PlainValidator(_guc_map), PlainSerializer(_dump_frozen)
]
"""PostgreSQL parameters, read-only."""
