"""The key screen: before any value is validated, judge every key of the document by its section.

A key is, in order (the lists are in ``unsupported.py``, declared per section, see ``base.py``):
1. refused: a key Patroni knows whose absence here would be unsafe -> an error with the reason;
2. a method section the document declares (``bootstrap.method: pgbackrest`` -> ``bootstrap.pgbackrest``)
   -> kept as written for the model to validate;
3. accepted: a key Patroni knows that needs nothing from raftpg -> dropped silently (kept in an open section);
4. a key Patroni knows but raftpg does not implement -> a warning naming its full path; dropped from a
   closed section, kept in an open one (``bootstrap.dcs`` and ``tags`` store arbitrary keys);
5. a field of the section's model (or an older name for one, which is renamed) -> kept, and a nested
   section is screened in turn;
6. anything else -> in a closed section an error, with a "did you mean" suggestion from difflib; in an open
   section kept, unless it is so close to a known key that it is surely a misspelling of it (then an
   error: a silently ignored ``nofailvoer`` tag or ``loop_wiat`` would be worse than a refusal).

Besides, each section's ``notes`` may warn about values raftpg accepts but cannot honour as Patroni does.
The screen otherwise never looks at values except to descend into nested sections; the models validate them.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, get_args

from raftpg.config.base import Settings
from raftpg.config.errors import join_path, line

_CLOSED_CUTOFF = 0.6   # difflib's default: good enough to suggest, since the key is an error anyway
_OPEN_CUTOFF = 0.8     # strict: only this close is a key in an open section called a misspelling


@dataclass
class Screened:
    """The document with dropped and renamed keys applied, plus what the screen found."""

    data: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def screen(model: type[Settings], raw: Mapping[Any, Any], path: str = "") -> Screened:
    """Screen ``raw`` as a ``model`` section located at ``path`` (``""`` for the document root)."""
    out = Screened(data={})
    _screen_into(out, model, raw, path)
    return out


def _screen_into(out: Screened, model: type[Settings], raw: Mapping[Any, Any], path: str) -> None:
    patroni_only = model.patroni_only
    sections = model.method_sections(raw)
    for key, value in raw.items():
        key_path = join_path(path, str(key))
        if not isinstance(key, str):
            out.errors.append(line(key_path, f"keys must be strings, got {key!r}"))
            continue
        name = model.renamed.get(key, key)
        if name != key and name in raw:
            out.errors.append(line(key_path, f"'{key}' is another name for '{name}', which is also set; keep one"))
            continue
        if key in model.refused:
            out.errors.append(line(key_path, model.refused[key]))
        elif key in sections:
            out.data[key] = value
        elif key in model.accepted:
            if model.open_keys:
                out.data[key] = value
        elif key in patroni_only:
            hint = patroni_only[key]
            text = "Patroni option not supported by raftpg, ignored" + (f" ({hint})" if hint else "")
            out.warnings.append(line(key_path, text))
            if model.open_keys:
                out.data[key] = value
        elif name in model.model_fields:
            out.data[name] = _screen_value(out, model, name, value, key_path)
        else:
            suggestion = _suggest(key, model, patroni_only)
            if model.open_keys and suggestion is None:
                out.data[key] = value
            elif suggestion is not None:
                out.errors.append(line(key_path, f"unknown key, did you mean '{suggestion}'?"))
            else:
                out.errors.append(line(key_path, "unknown key"))
    out.warnings.extend(line(join_path(path, key), text) for key, text in model.notes(raw))


def _screen_value(out: Screened, model: type[Settings], name: str, value: Any, key_path: str) -> Any:
    section = _section_model(model.model_fields[name].annotation)
    if section is not None and value is None:
        value = {}  # `log:` with every line under it commented out means "all defaults", as in Patroni
    if section is None or not isinstance(value, Mapping):
        return value  # a scalar, or a wrong type the model will report
    nested = Screened(data={})
    _screen_into(nested, section, value, key_path)
    out.warnings.extend(nested.warnings)
    out.errors.extend(nested.errors)
    return nested.data


def _section_model(annotation: Any) -> type[Settings] | None:
    """The Settings subclass inside ``X``, ``X | None`` or ``Annotated[X, ...]``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, Settings):
        return annotation
    for arg in get_args(annotation):
        found = _section_model(arg)
        if found is not None:
            return found
    return None


def _suggest(key: str, model: type[Settings], patroni_only: Mapping[str, str]) -> str | None:
    known = [*model.model_fields, *model.renamed, *patroni_only, *model.accepted, *model.refused]
    by_lower = {k.lower(): k for k in known}
    if key.lower() in by_lower:
        return by_lower[key.lower()]
    cutoff = _OPEN_CUTOFF if model.open_keys else _CLOSED_CUTOFF
    match = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=cutoff)
    return by_lower[match[0]] if match else None
