"""What an agent imports only when it needs it (issue 15: the agent's resident memory is mostly the modules it
imports). A fresh interpreter per case, since this test run has long imported everything."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("pysyncobj", "cryptography", "prometheus_client", "rich", "pygments")


def _imported_after(code: str) -> list[str]:
    probe = code + f"\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def test_an_agent_on_etcd_or_consul_imports_no_raft_and_no_prometheus() -> None:
    # everything an agent whose store is etcd or Consul loads before its first cycle
    loaded = _imported_after("import raftpg.node, raftpg.api.app, raftpg.dcs.etcd, raftpg.dcs.consul, "
                             "raftpg.cli.main")
    assert [m for m in loaded if m not in ("rich", "pygments")] == []  # those two: the last test


def test_the_raft_store_brings_pysyncobj_and_its_cipher_but_not_prometheus() -> None:
    assert _imported_after("import raftpg.node, raftpg.api.app, raftpg.consensus.raft, raftpg.dcs.kvdcs") == \
        ["pysyncobj", "cryptography"]


def test_the_first_scrape_brings_prometheus() -> None:
    # the other side of the bargain (GET /metrics itself is tested against a real app in tests/unit/api)
    assert _imported_after("import raftpg.api.metrics") == ["prometheus_client"]


def test_the_agent_keeps_httpx_from_loading_its_command_line_tool() -> None:
    # rich and pygments are installed here (test tools need them), as they may be on a user's machine
    pytest.importorskip("rich")
    assert _imported_after("import raftpg.dcs.etcd") == ["rich", "pygments"]  # what httpx does by itself
    start = "from raftpg.cli.main import run_node\nassert run_node('/nonexistent/raftpg.yml') == 2\n"
    assert _imported_after(start + "import raftpg.node, raftpg.dcs.etcd, raftpg.dcs.consul") == []
