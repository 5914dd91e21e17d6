"""ConfigError and the translation of validation failures into ``key.path: message`` lines.

Validators inside the schema raise :func:`problems` (a pydantic error that carries key paths relative to the
model being validated) so a cross-field rule can blame the exact key, e.g. ``bootstrap.dcs.ttl``, instead
of the section that holds it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

_PROBLEMS = "raftpg_problems"


class ConfigError(Exception):
    """The config cannot be used. ``str()`` is one human-readable problem per line.

    ``errors`` holds the same lines as a tuple; ``source`` names the file (or ``"<config>"``).
    """

    def __init__(self, errors: Sequence[str], source: str = "<config>") -> None:
        self.errors = tuple(errors)
        self.source = source
        super().__init__("\n".join(self.errors))


def problems(items: Iterable[tuple[str, str]]) -> PydanticCustomError:
    """An error for a validator to raise, blaming each ``(relative.key.path, message)`` pair.

    An empty relative path blames the model itself.
    """
    pairs = tuple(items)
    summary = "; ".join(f"{p}: {m}" if p else m for p, m in pairs)
    return PydanticCustomError(_PROBLEMS, "{summary}", {"summary": summary, "problems": pairs})


def problem(path: str, message: str) -> PydanticCustomError:
    return problems([(path, message)])


def join_path(*parts: str | int) -> str:
    """('postgresql', 'basebackup', 1, 'x') -> 'postgresql.basebackup[1].x'."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part.startswith("["):
            out += part
        elif part != "":
            out += f".{part}" if out else str(part)
    return out


def line(path: str, message: str) -> str:
    return f"{path}: {message}" if path else message


def validation_lines(exc: ValidationError, prefix: Sequence[str | int] = ()) -> list[str]:
    """Every error of ``exc`` as a ``path: message`` line, paths prefixed by ``prefix``."""
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        loc = join_path(*prefix, *err["loc"])
        if err["type"] == _PROBLEMS:
            for rel, message in err["ctx"]["problems"]:
                lines.append(line(join_path(loc, rel) if rel else loc, message))
        else:
            lines.append(line(loc, _message(err, show_input=not is_secret_path((*prefix, *err["loc"])))))
    return list(dict.fromkeys(lines))  # the same problem found twice is reported once


SECRET_WORDS = ("password", "passwd", "token", "secret", "authentication", "credential")


def is_secret_path(loc: Sequence[str | int]) -> bool:
    """Whether a value at this key path may hold a secret (then errors name its type, never its text).

    Errors go to the terminal, to the log on a SIGHUP reload, and to API clients, so a misplaced
    password must not be echoed: ``restapi.authentication: "admin:secret"`` is as secret as the
    ``password`` key it should have been.
    """
    return any(word in str(part).lower() for part in loc for word in SECRET_WORDS)


def _short(value: Any) -> str:
    """A scalar as written (shortened); a mapping or list only by its type, since it may hold a secret
    under any key (``postgresql: [{authentication: ...}]``)."""
    if not isinstance(value, str | int | float | bool) and value is not None:
        return f"a {type(value).__name__}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _message(err: Any, show_input: bool = True) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    got = _short(err.get("input")) if show_input else "a value of type " + type(err.get("input")).__name__
    if kind == "missing":
        return "field required"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be an integer, got {got}"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false, got {got}"
    if kind == "string_type":
        return f"must be a string, got {got}"
    if kind in ("list_type", "tuple_type"):
        return f"must be a list, got {got}"
    if kind in ("dict_type", "model_type", "model_attributes_type", "mapping_type"):
        return f"must be a mapping of keys, got {got}"
    if kind == "greater_than_equal":
        return f"must be >= {ctx.get('ge')}, got {got}"
    if kind == "greater_than":
        return f"must be > {ctx.get('gt')}, got {got}"
    if kind == "less_than_equal":
        return f"must be <= {ctx.get('le')}, got {got}"
    if kind == "less_than":
        return f"must be < {ctx.get('lt')}, got {got}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, got {got}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    msg = str(err["msg"])
    return msg[:1].lower() + msg[1:]
