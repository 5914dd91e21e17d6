"""A member's tags: the ones raftpg acts on, and custom ones it publishes (Patroni allows any)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from raftpg.model.values import FAILOVER_PRIORITY_MAX, bounded_int, json_kind, parse_flag

KNOWN_TAGS = ("nofailover", "failover_priority", "noloadbalance", "clonefrom", "nosync")
CUSTOM_TAGS_MAX = 64
CUSTOM_TAG_TEXT_MAX = 1024


@dataclass(frozen=True)
class Tags:
    """The tags raftpg acts on, and ``custom`` ones (``dc: a``) it only publishes and filters on: sorted
    (name, value) pairs of scalars, as Patroni users put them in ``tags`` for HAProxy's ``?tag_dc=a``."""

    nofailover: bool = False
    failover_priority: int = 1
    noloadbalance: bool = False
    clonefrom: bool = False
    nosync: bool = False
    custom: tuple[tuple[str, str | int | float | bool], ...] = ()

    @classmethod
    def from_dict(cls, raw: Any) -> Tags:
        """Lenient: what :meth:`parse` reads, whatever it found wrong."""
        return cls.parse(raw)[0]

    @classmethod
    def parse(cls, raw: Any) -> tuple[Tags, tuple[str, ...]]:
        """The tags and what was wrong with them (``"tags.nosync: ..."``). Never raises.

        A flag that is not a boolean (or ``on``/``off``, ``true``/``false``, ``yes``/``no``, ``1``/``0``)
        is a problem; ``nofailover`` then reads as True and ``failover_priority`` as 0, the values that
        never promote a member whose tags cannot be read. Other tags are kept in ``custom`` when their
        values are scalars (a string of at most 1,024 characters, a finite number, a boolean), at most 64
        of them; others are left out and named as problems.
        """
        if raw is None:
            return cls(), ()
        if not isinstance(raw, dict):
            return cls(nofailover=True, failover_priority=0), (f"tags: must be an object, got {json_kind(raw)}",)
        problems: list[str] = []

        def flag(key: str, default: bool, unreadable: bool) -> bool:
            if raw.get(key) is None:  # absent or null: the default
                return default
            value = parse_flag(raw[key])
            if value is None:
                problems.append(f"tags.{key}: must be a boolean, got {json_kind(raw.get(key))}")
                return unreadable
            return value

        priority = bounded_int(1 if raw.get("failover_priority") is None else raw["failover_priority"], 0,
                               FAILOVER_PRIORITY_MAX)
        if priority is None:
            problems.append(f"tags.failover_priority: must be an integer in [0, {FAILOVER_PRIORITY_MAX}], "
                            f"got {json_kind(raw.get('failover_priority'))}")
            priority = 0
        tags = cls(
            nofailover=flag("nofailover", False, True) or priority <= 0,
            failover_priority=priority,
            noloadbalance=flag("noloadbalance", False, True),
            clonefrom=flag("clonefrom", False, False),
            nosync=flag("nosync", False, True),
            custom=_custom_tags(raw, problems),
        )
        return tags, tuple(problems)

    def to_dict(self) -> dict[str, Any]:
        return {
            "nofailover": self.nofailover,
            "failover_priority": self.failover_priority,
            "noloadbalance": self.noloadbalance,
            "clonefrom": self.clonefrom,
            "nosync": self.nosync,
            **dict(self.custom),
        }


def _custom_tags(raw: dict[str, Any], problems: list[str]) -> tuple[tuple[str, str | int | float | bool], ...]:
    kept: list[tuple[str, str | int | float | bool]] = []
    for name, value in raw.items():
        if name in KNOWN_TAGS or value is None:
            continue
        if not isinstance(name, str) or not name or len(name) > 128:
            problems.append("tags: a tag name must be a non-empty string of at most 128 characters")
        elif not _scalar_tag(value):
            problems.append(f"tags.{name}: must be a string of at most {CUSTOM_TAG_TEXT_MAX} characters, a finite "
                            f"number or a boolean, got {json_kind(value)}")
        elif len(kept) >= CUSTOM_TAGS_MAX:
            problems.append(f"tags: more than {CUSTOM_TAGS_MAX} custom tags; {name} and later ones left out")
            break
        else:
            kept.append((name, value))
    return tuple(sorted(kept))


def _scalar_tag(value: Any) -> bool:
    if isinstance(value, bool | int):
        return abs(value) <= 2**63
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) and len(value) <= CUSTOM_TAG_TEXT_MAX
