"""Command methods, as Patroni configures them: a custom bootstrap (``bootstrap.method: NAME`` with a
``bootstrap.NAME`` section) and replica creation (``postgresql.create_replica_methods: [NAME, basebackup]``
with a ``postgresql.NAME`` section each).

A method section holds ``command`` (a command line, split like a shell would, never run through one) and
options. The options Patroni gives a meaning to are fields here; every other key is passed to the command
as ``--key=value``, in the order written, the value as Patroni prints it (``str()``: ``True``, ``1``).

- bootstrap: ``command`` is required (Patroni silently falls back to initdb without one; raftpg refuses,
  since an empty new cluster where a restore was meant is worse than a clear error), ``no_params``
  (do not add ``--scope`` and ``--datadir``), ``keep_existing_recovery_conf`` (keep the recovery settings
  and signal files the command wrote), ``recovery_conf`` (recovery parameters for the first start, e.g.
  ``recovery_target_time`` and ``recovery_target_action: promote``).
- replica: ``command`` defaults to the method's name, ``no_params`` (do not add ``--scope``, ``--role``,
  ``--datadir``, ``--connstring``), ``keep_data``, ``no_leader``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from pydantic import Field, ValidationError, field_validator, model_validator

from raftpg.config.base import OpenSettings, Settings
from raftpg.config.errors import problems, validation_lines
from raftpg.config.fields import GucMap, Name, control_characters, empty_map

BASEBACKUP = "basebackup"
INITDB = "initdb"

BOOTSTRAP_RESERVED = ("command", "no_params", "keep_existing_recovery_conf", "recovery_conf", "scope", "datadir")
REPLICA_RESERVED = ("command", "no_params", "keep_data", "no_leader", "scope", "role", "datadir", "connstring")


class _CommandMethod(OpenSettings):
    """A method section. ``options()`` are the ``--key=value`` arguments from the keys without a field."""

    reserved: ClassVar[tuple[str, ...]] = ()

    command: Name | None = None
    no_params: bool = False

    @field_validator("command", mode="after")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        why = control_characters(value) if value else None
        if why:
            raise ValueError(why)
        return value

    @model_validator(mode="after")
    def _scalar_options(self) -> _CommandMethod:
        bad = [(key, "an option passed as --key=value must be a string, number or boolean, or null")
               for key, value in self.extra.items()
               if isinstance(value, Mapping | list | tuple)
               or (isinstance(value, str) and control_characters(value))
               or key in self.reserved]
        if bad:
            raise problems(bad)
        return self

    def options(self) -> tuple[tuple[str, str], ...]:
        """The other keys, as (name, value) for ``--name=value``; a null value is left out."""
        return tuple((key, str(value)) for key, value in self.extra.items() if value is not None)


class BootstrapMethod(_CommandMethod):
    """``bootstrap.<method>``: how a new cluster is made when ``bootstrap.method`` is not initdb."""

    reserved: ClassVar[tuple[str, ...]] = ("scope", "datadir")

    keep_existing_recovery_conf: bool = False
    recovery_conf: GucMap = Field(default_factory=empty_map)

    @model_validator(mode="after")
    def _needs_command(self) -> BootstrapMethod:
        if not self.command:
            raise problems([("command", "required: the command that creates the data directory (Patroni "
                                        "would silently run initdb instead; raftpg refuses)")])
        return self


class ReplicaMethod(_CommandMethod):
    """``postgresql.<method>``: one way to create a replica's data directory besides pg_basebackup."""

    reserved: ClassVar[tuple[str, ...]] = ("scope", "role", "datadir", "connstring")

    keep_data: bool = False
    no_leader: bool = False


_Method = TypeVar("_Method", bound=_CommandMethod)


def method_section(model: type[_Method], raw: Any, name: str) -> tuple[_Method | None, list[tuple[str, str]]]:
    """Validate the section ``name`` (``raw``, as written: None or absent allowed for a replica method)
    -> (the method, [(relative key path, message), ...])."""
    try:
        return model.model_validate({} if raw is None else raw), []
    except ValidationError as exc:
        # each line is "<name>[.path]: message" (paths never hold ": ")
        return None, [(key, message) for key, _, message in
                      (text.partition(": ") for text in validation_lines(exc, (name,)))]


def unused_method_sections(model: type[Settings], raw: Mapping[str, Any], listed_key: str) -> list[str]:
    """Keys of ``raw`` shaped like a Patroni method section (a mapping with ``command``) that the method
    list (``raw[listed_key]``, a name or a list of names) does not name: Patroni ignores them, so raftpg
    does too, with a warning, rather than calling them typos."""
    listed = raw.get(listed_key)
    items = listed if isinstance(listed, list | tuple) else [listed]
    names = {item.strip() for item in items if isinstance(item, str)}
    return [key for key, value in raw.items()
            if isinstance(key, str) and key not in model.model_fields and key not in names
            and isinstance(value, Mapping) and "command" in value]
