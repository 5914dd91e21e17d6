"""sd_notify over a real unix datagram socket, and the contrib files checked by the tools that read them."""

from __future__ import annotations

import configparser
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from raftpg.cli.sdnotify import notify

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"


def test_notify_sends_one_datagram_to_the_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(path)
        assert notify("READY=1\nSTATUS=up", {"NOTIFY_SOCKET": path}) is True
        listener.settimeout(2)
        assert listener.recv(4096) == b"READY=1\nSTATUS=up"


def test_notify_to_an_abstract_socket() -> None:
    name = f"raftpg-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        assert notify("STOPPING=1", {"NOTIFY_SOCKET": "@" + name}) is True
        listener.settimeout(2)
        assert listener.recv(4096) == b"STOPPING=1"


@pytest.mark.parametrize("value", ["", "relative/path", "/nonexistent/raftpg/notify"])
def test_notify_without_a_usable_socket_is_a_no_op(value: str) -> None:
    assert notify("READY=1", {"NOTIFY_SOCKET": value}) is False
    assert notify("READY=1", {}) is False


def test_the_unit_file_says_what_the_agent_does() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(CONTRIB / "raftpg.service")
    service = unit["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert service["KillMode"] == "process" and service["Restart"] == "on-failure"
    assert int(service["TimeoutStopSec"]) >= 60 and int(service["LimitNOFILE"]) >= 65536
    if shutil.which("systemd-analyze"):
        done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(CONTRIB / "raftpg.service")],
                              capture_output=True, text=True, timeout=60)
        bad = [line for line in done.stderr.splitlines()
               if "raftpg.service" in line and "Command /opt/raftpg-venv/bin/raftpg" not in line
               and "not executable" not in line and "No such file" not in line]
        assert not bad, done.stderr


def test_haproxy_example_is_valid() -> None:
    if not shutil.which("haproxy"):
        pytest.skip("haproxy is not installed")
    done = subprocess.run(["haproxy", "-c", "-f", str(CONTRIB / "haproxy" / "haproxy.cfg")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


def test_keepalived_check_is_executable_and_asks_for_the_primary() -> None:
    check = CONTRIB / "keepalived" / "raftpg-check-primary"
    assert os.access(check, os.X_OK) and "/primary" in check.read_text()
    assert "raftpg-check-primary" in (CONTRIB / "keepalived" / "keepalived.conf").read_text()
