"""Lenient readers of JSON values, shared by the model's parsers (never raise)."""

from __future__ import annotations

from typing import Any

FAILOVER_PRIORITY_MAX = 2**31 - 1


def json_kind(value: Any) -> str:
    """How a bad value is named in a problem: its JSON type, never its content (which may be huge)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float) and value != value:
        return "NaN"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "an infinite number"
    if isinstance(value, (int, float)):
        return "a number"
    names: dict[type, str] = {str: "a string", list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def object_or_empty(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object (a dict), else an empty one: for lenient readers."""
    return value if isinstance(value, dict) else {}


def parse_flag(value: Any) -> bool | None:
    """A boolean as Patroni's YAML and JSON documents write one, or None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("on", "true", "yes", "1"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("off", "false", "no", "0"):
        return False
    return None


def bounded_int(value: Any, low: int, high: int) -> int | None:
    """An integer in [low, high] from an int, an integral finite float or a decimal string; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not value.is_integer():  # NaN and the infinities included
            return None
        value = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.lstrip("-").isdigit() and len(text) <= 20):
            return None
        value = int(text)
    if not isinstance(value, int) or not low <= value <= high:
        return None
    return value


DURATION_UNITS_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
"""The units of a duration written as text (PostgreSQL's and Patroni's: ``30min``, ``1h``, ``500ms``)."""


def duration_s(value: Any, low: int, high: int) -> int | None:
    """Whole seconds in [low, high] from a number of seconds or a text such as ``"30min"`` (rounded to
    the nearest second, as Patroni does); else None."""
    if isinstance(value, str):
        text = value.strip().lower()
        number = text.rstrip("abcdefghijklmnopqrstuvwxyz").strip()
        unit = text[len(text.rstrip("abcdefghijklmnopqrstuvwxyz")):] or "s"
        if unit not in DURATION_UNITS_S or not number or len(number) > 20:
            return None
        try:
            amount = float(number)
        except ValueError:
            return None
        if amount != amount or amount in (float("inf"), float("-inf")):
            return None
        value = round(amount * DURATION_UNITS_S[unit])
    elif isinstance(value, float) and value == value and value not in (float("inf"), float("-inf")):
        value = round(value)
    return bounded_int(value, low, high)
