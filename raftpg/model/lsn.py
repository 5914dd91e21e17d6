"""PostgreSQL WAL positions: text ``'16/B374D848'`` <-> integer bytes."""

from __future__ import annotations


def parse_lsn(text: str) -> int:
    """'16/B374D848' -> bytes. Raises ValueError naming the bad text."""
    try:
        high, low = text.strip().split("/")
        return (int(high, 16) << 32) | int(low, 16)
    except (ValueError, AttributeError):
        raise ValueError(f"not a WAL position: {text!r}") from None


def format_lsn(position: int) -> str:
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def parse_size_bytes(text: str | int) -> int:
    """'16MB', '1048576', 1024 -> bytes (PostgreSQL's binary units, as Patroni's ?lag= accepts)."""
    if isinstance(text, bool):
        raise ValueError(f"not a size: {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"size must not be negative: {text}")
        return text
    raw = str(text).strip().upper().replace(" ", "")
    for unit in sorted(_UNITS, key=len, reverse=True):
        if raw.endswith(unit) and raw[: -len(unit)].isdigit():
            return int(raw[: -len(unit)]) * _UNITS[unit]
    if raw.isdigit():
        return int(raw)
    raise ValueError(f"not a size (use bytes or a unit such as 16MB): {text!r}")
