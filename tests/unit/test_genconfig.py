"""raftpg --generate-sample-config: a commented config that passes --validate-config as written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from raftpg.cli import main as raftpg_cli
from raftpg.config import load_config


def test_sample_config_is_private_commented_and_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "raftpg.yml"
    assert raftpg_cli.main(["--generate-sample-config", str(path)]) == 0
    assert (os.stat(path).st_mode & 0o777) == 0o600  # it holds fresh passwords
    text = path.read_text()
    assert text.startswith("# raftpg sample config") and "# FIXME" in text
    config = load_config(path, environ={})
    assert config.raft is not None and len(config.raft.password or "") >= 24
    assert config.warnings == ()
    assert raftpg_cli.main(["--validate-config", str(path)]) == 0
    assert "valid" in capsys.readouterr().out


def test_two_samples_never_share_a_secret(tmp_path: Path) -> None:
    for name in ("a.yml", "b.yml"):
        assert raftpg_cli.main(["--generate-sample-config", str(tmp_path / name)]) == 0
    a, b = (load_config(tmp_path / n, environ={}) for n in ("a.yml", "b.yml"))
    assert a.raft is not None and b.raft is not None and a.raft.password != b.raft.password
