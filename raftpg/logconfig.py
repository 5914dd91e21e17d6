"""The agent's logging, configured from the ``log`` section as Patroni configures it.

- ``type: plain``: ``format`` is a %-style line; ``type: json``: one JSON object per line, written by
  python-json-logger (``format`` a %-style string or a list of record attributes, each optionally renamed
  with ``{attribute: key}``; ``static_fields`` added to every line).
- ``dateformat``: ``%(asctime)s`` as ``time.strftime`` writes it (default: logging's ISO-like form).
- ``dir``: ``<dir>/raftpg-<name>.log``, rotated at ``file_size`` bytes keeping ``file_num`` old files;
  ``file_size: 0`` never rotates and reopens the file when logrotate moved it (contrib/logrotate/raftpg).
  ``mode``: the file's permissions. Without ``dir``, stderr (journald under systemd).
- ``loggers``: a level per logger name. Libraries that log every request or connection at INFO (httpx,
  httpcore, aiohttp.access, urllib3, asyncio) stay at WARNING unless ``loggers`` names them.
- ``traceback_level: DEBUG``: a traceback is printed only when the root level is DEBUG.
- ``deduplicate_heartbeat_logs``: an HA cycle's line is left out when it repeats the previous one.

``configure`` replaces whatever handlers the root logger had; calling it again (a reload) is safe.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from raftpg.config import LogSettings

QUIET_LIBRARIES = ("httpx", "httpcore", "aiohttp.access", "urllib3", "asyncio", "hpack")
"""Third-party loggers kept at WARNING unless ``log.loggers`` says otherwise: at INFO they log every HTTP
request (httpx: each DCS call) or connection, drowning the HA loop's own lines."""

HEARTBEAT_LOGGER = "raftpg.ha.loop"  # the HA loop logs one line per cycle: its decision's reason


def log_file(settings: LogSettings, name: str) -> str | None:
    return os.path.join(settings.dir, f"raftpg-{name}.log") if settings.dir else None


def configure(settings: LogSettings, name: str, stream: Any = None) -> logging.Handler:
    """Set up the root logger from ``settings`` for member ``name``; returns the handler it installed."""
    handler = _handler(settings, name, stream)
    handler.setFormatter(_formatter(settings))
    if settings.traceback_level == "DEBUG" and settings.level != "DEBUG":
        handler.addFilter(_drop_tracebacks)
    if settings.deduplicate_heartbeat_logs:
        handler.addFilter(HeartbeatDeduplicator())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(settings.level)
    for library in QUIET_LIBRARIES:
        logging.getLogger(library).setLevel(logging.WARNING)
    for logger_name, level in settings.loggers.items():
        logging.getLogger(logger_name).setLevel(level)
    return handler


def _handler(settings: LogSettings, name: str, stream: Any) -> logging.Handler:
    path = log_file(settings, name)
    if path is None:
        return logging.StreamHandler(stream or sys.stderr)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if settings.mode is not None:
        _create_with_mode(path, settings.mode)
    if settings.file_size == 0:
        return logging.handlers.WatchedFileHandler(path, encoding="utf-8")
    return logging.handlers.RotatingFileHandler(path, maxBytes=settings.file_size, backupCount=settings.file_num,
                                                encoding="utf-8")


def _create_with_mode(path: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, mode)
    try:
        os.fchmod(fd, mode)  # the umask does not narrow what the operator asked for
    finally:
        os.close(fd)


def _formatter(settings: LogSettings) -> logging.Formatter:
    if settings.type == "plain":
        return logging.Formatter(str(settings.format), datefmt=settings.dateformat)
    from pythonjsonlogger.json import JsonFormatter

    fields, renames = _json_fields(settings.format)
    return JsonFormatter(fields, datefmt=settings.dateformat, rename_fields=renames,
                         static_fields=dict(settings.static_fields), json_ensure_ascii=False)


def _json_fields(fmt: str | Sequence[str | Mapping[str, str]]) -> tuple[Any, dict[str, str]]:
    """Patroni's JSON ``format``: a %-style string (its attributes become keys), or a list of attribute
    names and ``{attribute: key}`` renames -> (the formatter's fields, the renames)."""
    if isinstance(fmt, str):
        return fmt, {}
    fields: list[str] = []
    renames: dict[str, str] = {}
    for item in fmt:
        if isinstance(item, Mapping):
            for attribute, key in item.items():
                fields.append(attribute)
                renames[attribute] = key
        else:
            fields.append(item)
    return fields, renames


def _drop_tracebacks(record: logging.LogRecord) -> bool:
    """``traceback_level: DEBUG`` below DEBUG: keep the line, leave out the traceback."""
    if record.exc_info or record.exc_text:
        record.exc_info, record.exc_text = None, None
    return True


class HeartbeatDeduplicator(logging.Filter):
    """Drops an HA cycle's line when it repeats the previous one word for word (Patroni's
    ``deduplicate_heartbeat_logs``); every other line passes, and a changed decision is always logged."""

    def __init__(self) -> None:
        super().__init__()
        self._last: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != HEARTBEAT_LOGGER or record.levelno != logging.INFO:
            return True
        text = record.getMessage()
        if text == self._last:
            return False
        self._last = text
        return True
