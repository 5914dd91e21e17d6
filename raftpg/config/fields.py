"""Field types shared by the settings models: strict-enough scalars, addresses, and deep-frozen mappings.

YAML written for Patroni says ``ttl: "30"`` or ``use_slots: on``; these types accept that, but refuse a
boolean where a number is meant (``ttl: true`` is a mistake, not 1). Mappings are stored as
``FrozenDict`` (a dict that refuses changes, so json.dumps and pydantic still see a dict) and lists as
tuples, so a loaded Config cannot be changed in place; ``thaw`` turns them back into plain dicts and
lists, e.g. for yaml.safe_dump.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, PlainValidator, StringConstraints

from raftpg.config.addresses import split_host_port
from raftpg.config.errors import problems


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
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(v) for v in value]
    return value


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
    return value.strip()


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


def _guc_map(value: Any) -> Mapping[str, str | int | float | bool]:
    """PostgreSQL parameters: names to scalars (``on``/``off`` arrive as booleans from YAML)."""
    if value is None:
        return FrozenDict()
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a mapping of parameter names to values, got {value!r}")
    bad = []
    for name, setting in value.items():
        if not isinstance(name, str) or not name:
            bad.append(("", f"parameter names must be non-empty strings, got {name!r}"))
        elif setting is None or not isinstance(setting, str | int | float | bool):
            bad.append((name, f"must be a string, number or boolean, got {setting!r}"))
    if bad:
        raise problems(bad)
    return FrozenDict(value)


def _dump_frozen(value: Any) -> Any:
    return thaw(value)


Int = Annotated[int, BeforeValidator(_reject_bool)]
"""An integer; numeric strings accepted, booleans refused."""

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
"""A non-empty string, surrounding whitespace removed."""

Secret = Annotated[str, StringConstraints(min_length=1)]
"""A non-empty string kept exactly as written (passwords: no stripping)."""

HostPort = Annotated[str, PlainValidator(_host_port)]
"""``host:port`` with a port in 1..65535, kept as written (minus surrounding whitespace)."""

HostPortList = Annotated[tuple[str, ...], PlainValidator(_host_port_list), PlainSerializer(list)]
"""A list of ``host:port``; a comma-separated string is accepted too."""

GucMap = Annotated[
    Mapping[str, str | int | float | bool], PlainValidator(_guc_map), PlainSerializer(_dump_frozen)
]
"""PostgreSQL parameters, read-only."""
