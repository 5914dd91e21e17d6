"""raftpg.logconfig: the log section as Patroni configures it, checked on real handlers and files."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raftpg.config import LogSettings
from raftpg.logconfig import configure


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    levels = {name: logging.getLogger(name).level for name in ("httpx", "aiohttp.access", "raftpg.x")}
    yield
    for handler in root.handlers[:]:
        root.removeHandler(handler)
        handler.close()
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def settings(**values: Any) -> LogSettings:
    return LogSettings.model_validate(values)


def test_json_lines_with_patroni_format_list_renames_and_static_fields() -> None:
    out = io.StringIO()
    configure(settings(type="json", format=["message", "name", {"asctime": "@timestamp"}, {"levelname": "level"}],
                       static_fields={"app": "raftpg"}, dateformat="%Y"), "n1", stream=out)
    logging.getLogger("raftpg.x").warning("hello %s", "world")
    line = json.loads(out.getvalue().splitlines()[-1])
    assert line["message"] == "hello world" and line["level"] == "WARNING" and line["app"] == "raftpg"
    assert line["name"] == "raftpg.x" and len(line["@timestamp"]) == 4  # %Y


def test_plain_format_and_dateformat() -> None:
    out = io.StringIO()
    configure(settings(format="%(asctime)s|%(levelname)s|%(message)s", dateformat="%H"), "n1", stream=out)
    logging.getLogger("raftpg.x").info("x")
    stamp, level, message = out.getvalue().strip().split("|")
    assert len(stamp) == 2 and (level, message) == ("INFO", "x")


def test_chatty_libraries_stay_at_warning_unless_asked() -> None:
    out = io.StringIO()
    configure(settings(), "n1", stream=out)
    logging.getLogger("httpx").info('HTTP Request: POST http://127.0.0.1:2379/v3/kv/range "HTTP/1.1 200 OK"')
    logging.getLogger("aiohttp.access").info("GET /primary 200")
    assert out.getvalue() == ""
    configure(settings(loggers={"httpx": "DEBUG"}), "n1", stream=out)
    logging.getLogger("httpx").info("now shown")
    assert "now shown" in out.getvalue()


def test_rotation_keeps_file_num_old_files(tmp_path: Path) -> None:
    configure(settings(dir=str(tmp_path), file_size=200, file_num=2), "n1")
    for i in range(50):
        logging.getLogger("raftpg.x").info("line %03d %s", i, "x" * 40)
    names = sorted(os.listdir(tmp_path))
    assert names == ["raftpg-n1.log", "raftpg-n1.log.1", "raftpg-n1.log.2"]
    assert all(os.path.getsize(tmp_path / n) <= 200 for n in names)


def test_file_size_zero_reopens_after_logrotate_moved_the_file(tmp_path: Path) -> None:
    configure(settings(dir=str(tmp_path), file_size=0, mode=0o640), "n1")
    path = tmp_path / "raftpg-n1.log"
    assert (os.stat(path).st_mode & 0o777) == 0o640
    logging.getLogger("raftpg.x").info("before")
    os.rename(path, tmp_path / "raftpg-n1.log.1")  # what logrotate does
    logging.getLogger("raftpg.x").info("after")
    assert path.read_text().strip().endswith("after") and "before" not in path.read_text()


def test_heartbeat_lines_deduplicated_when_asked() -> None:
    out = io.StringIO()
    configure(settings(deduplicate_heartbeat_logs=True), "n1", stream=out)
    loop = logging.getLogger("raftpg.ha.loop")
    for reason in ("no action: I am the primary", "no action: I am the primary", "demoting", "demoting"):
        loop.info("%s", reason)
    logging.getLogger("raftpg.x").info("other")
    logging.getLogger("raftpg.x").info("other")
    lines = [line.split(": ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines == ["no action: I am the primary", "demoting", "other", "other"]


def test_traceback_level_debug_hides_tracebacks_below_debug() -> None:
    out = io.StringIO()
    configure(settings(traceback_level="DEBUG"), "n1", stream=out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("raftpg.x").exception("failed")
    assert "failed" in out.getvalue() and "Traceback" not in out.getvalue()
