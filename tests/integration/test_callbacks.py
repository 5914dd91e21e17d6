"""User callbacks as Patroni runs them: one at a time (a new one kills the one still running, children
included), a timeout, ``primary_role: master`` for Patroni-3 scripts, and a VIP-style script that adds and
removes an address on a dummy interface in a network namespace of the test's own (no traffic is sent: the
address is from TEST-NET-1 and lives only inside that namespace)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from raftpg.pg.callbacks import CallbackRunner
from raftpg.testing.poll import wait_until

VIP = "192.0.2.10"


def poll(predicate, what: str, timeout_s: float = 10.0):
    return wait_until(predicate, timeout_s, what)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is gone for our purpose
        return f.read().split()[2] != "Z"


def test_a_new_callback_kills_the_running_one_and_its_children(tmp_path: Path) -> None:
    child_pid = tmp_path / "child.pid"
    slow = f"/bin/sh -c 'sleep 60 & echo $! > {child_pid}; wait' slow"
    record = tmp_path / "calls.txt"
    quick = f"/bin/sh -c 'echo \"$1 $2 $3\" >> {record}' quick"
    runner = CallbackRunner({"on_start": slow, "on_stop": quick}, "demo")
    try:
        first = runner.run("on_start", "primary")
        assert first is not None and first.poll() is None  # run() returned while the callback runs
        sleeper = int(poll(lambda: child_pid.exists() and child_pid.read_text().strip(), "the child's pid"))
        assert alive(sleeper)
        runner.run("on_stop", "primary")
        assert first.poll() is not None  # killed, not waited for to finish
        poll(lambda: not alive(sleeper), "the killed callback's child to be gone")
        poll(lambda: record.exists() and "on_stop primary demo" in record.read_text(), "the second callback")
        poll(lambda: runner.reap() == 0, "the second callback to be reaped")
    finally:
        runner.close(0.0)


def test_a_callback_past_its_timeout_is_killed(tmp_path: Path) -> None:
    runner = CallbackRunner({"on_start": "/bin/sh -c 'sleep 60' cb"}, "demo", timeout_s=0.3)
    try:
        proc = runner.run("on_start", "replica")
        assert proc is not None
        poll(lambda: proc.poll() is not None, "the timed-out callback to be killed")
        assert proc.returncode == -9 and runner.reap() == 0
    finally:
        runner.close(0.0)


def test_primary_role_master_for_patroni_3_scripts(tmp_path: Path) -> None:
    record = tmp_path / "calls.txt"
    cb = f"/bin/sh -c 'echo \"$1 $2 $3\" >> {record}' cb"
    runner = CallbackRunner({"on_role_change": cb, "primary_role": "master"}, "demo")
    try:
        runner.run("on_role_change", "primary")
        poll(lambda: runner.reap() == 0, "the callback")
        runner.run("on_role_change", "replica")
        poll(lambda: runner.reap() == 0, "the callback")
        assert record.read_text().splitlines() == ["on_role_change master demo", "on_role_change replica demo"]
    finally:
        runner.close(0.0)


VIP_SCRIPT = """#!/bin/sh
# A Patroni-3-style VIP callback: $1 action, $2 role (matches "master"), $3 scope
NS={ns}
case "$1" in
  on_start|on_role_change)
    if [ "$2" = master ]; then ip -n "$NS" addr replace {vip}/32 dev vip0; else ip -n "$NS" addr del {vip}/32 dev vip0 2>/dev/null; fi ;;
  on_stop)
    ip -n "$NS" addr del {vip}/32 dev vip0 2>/dev/null ;;
esac
exit 0
"""


@pytest.fixture
def netns():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 for a network namespace")
    name = f"rpgvip-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        # a dummy link; where the kernel has no dummy driver (some containers), a bridge without ports
        # stands in: equally link-less, and the script does not care which
        made = subprocess.run(["ip", "-n", name, "link", "add", "vip0", "type", "dummy"], capture_output=True)
        if made.returncode != 0:
            subprocess.run(["ip", "-n", name, "link", "add", "vip0", "type", "bridge"], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "vip0", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def has_vip(ns: str) -> bool:
    out = subprocess.run(["ip", "-n", ns, "-4", "addr", "show", "dev", "vip0"], capture_output=True, text=True)
    return f"{VIP}/32" in out.stdout


def test_vip_script_follows_start_role_change_and_stop(netns: str, tmp_path: Path) -> None:
    script = tmp_path / "vip.sh"
    script.write_text(VIP_SCRIPT.format(ns=netns, vip=VIP))
    script.chmod(0o755)
    commands = {action: str(script) for action in ("on_start", "on_role_change", "on_stop")}
    runner = CallbackRunner({**commands, "primary_role": "master"}, "demo")
    try:
        def step(action: str, role: str, expected: bool) -> None:
            runner.run(action, role)
            poll(lambda: runner.reap() == 0 and has_vip(netns) == expected, f"{action} {role} -> vip {expected}")

        step("on_start", "replica", False)
        step("on_role_change", "primary", True)   # promoted: the address comes up
        step("on_role_change", "replica", False)  # demoted: it goes
        step("on_start", "primary", True)
        step("on_stop", "primary", False)
        # with Patroni 4's role word the same script never raises the address: the setting is what fixes it
        runner.commands.pop("primary_role")
        step("on_role_change", "primary", False)
    finally:
        runner.close(0.0)
