"""The base of every settings model: frozen, strict about keys, and self-describing for the key screen.

Each section of the YAML is one subclass. Besides its fields, a section declares (as class variables) what
the key screen in ``screen.py`` needs to judge keys it has no field for:

- ``patroni_only``: keys Patroni knows in this section that raftpg does not implement (key -> hint).
  They produce a warning instead of an error.
- ``accepted``: keys Patroni knows that need nothing from raftpg (it already behaves as they ask); dropped
  silently. ``notes(raw)`` warns about values raftpg accepts but cannot honour (``check_timeline: false``).
- ``refused``: keys Patroni knows that raftpg refuses because ignoring them would be unsafe (key -> why).
- ``method_sections(raw)``: keys the document itself declares as sections (``bootstrap.method: pgbackrest``
  makes ``bootstrap.pgbackrest`` one); kept unscreened for the model to read.
- ``renamed``: old names read as new ones (``post_init`` -> ``post_bootstrap``).
- ``open_keys``: whether keys nobody knows are kept (``bootstrap.dcs`` and ``tags``, where Patroni allows
  arbitrary keys) rather than refused. Open sections still refuse an obvious misspelling of a known key.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator

from raftpg.config.fields import FrozenDict, freeze, thaw_mapping


class Settings(BaseModel):
    """A closed, frozen section: every key must be a field (or renamed / Patroni-only, see above)."""

    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)

    patroni_only: ClassVar[Mapping[str, str]] = MappingProxyType({})
    accepted: ClassVar[frozenset[str]] = frozenset()
    refused: ClassVar[Mapping[str, str]] = MappingProxyType({})
    renamed: ClassVar[Mapping[str, str]] = MappingProxyType({})
    open_keys: ClassVar[bool] = False

    @classmethod
    def method_sections(cls, raw: Mapping[str, Any]) -> frozenset[str]:
        """Keys of ``raw`` that the document declares as method sections (none by default)."""
        return frozenset()

    @classmethod
    def notes(cls, raw: Mapping[str, Any]) -> list[tuple[str, str]]:
        """``(key, warning)`` for values raftpg accepts but treats differently from Patroni (none by default).
        ``raw`` is the section as written: values are not validated yet, so read them leniently."""
        return []

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts and lists (no read-only mappings, no tuples), as YAML or JSON would hold them."""
        return thaw_mapping(self.model_dump())


class OpenSettings(Settings):
    """A frozen section that keeps keys it has no field for (deep-frozen, in ``model_extra``)."""

    model_config = ConfigDict(frozen=True, extra="allow", coerce_numbers_to_str=True)
    open_keys: ClassVar[bool] = True

    @model_validator(mode="after")
    def _freeze_extra(self) -> OpenSettings:
        extra = self.__pydantic_extra__
        if extra:
            for key, value in extra.items():
                extra[key] = freeze(value)
        return self

    @property
    def extra(self) -> Mapping[str, Any]:
        """The keys without a field, as given (read-only)."""
        return FrozenDict(self.__pydantic_extra__ or {})
