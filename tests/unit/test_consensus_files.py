"""A Raft node's files and process limits: raft.data_dir modes and owners (datadir.py), the journal on a
full disk (journal.py, diskspace.py), the open-files limit (limits.py), adding members (settings.py).
Files live under tmp_path; a full disk is simulated by making the reservation fail."""

from __future__ import annotations

import resource

import pytest

from raftpg.consensus import limits


@pytest.mark.parametrize(("soft", "hard", "nr_open", "expected"), [
    (1024, 524288, 1048576, 524288),  # raised to the hard limit
    (1024, resource.RLIM_INFINITY, 1048576, 1048576),  # an unlimited hard limit: the kernel's ceiling
    (4096, 2048, 1048576, 4096),  # never lowered (a soft limit over the hard one cannot happen; stay put)
    (65536, 65536, 1048576, 65536),  # nothing to do
])
def test_the_open_files_limit_is_raised_to_the_hard_limit(monkeypatch, soft, hard, nr_open, expected):
    calls = []
    monkeypatch.setattr(limits.resource, "getrlimit", lambda _which: (soft, hard))
    monkeypatch.setattr(limits.resource, "setrlimit", lambda _which, pair: calls.append(pair))
    monkeypatch.setattr(limits, "_nr_open", lambda: nr_open)
    assert limits.raise_open_files_limit() == expected
    assert calls == ([(expected, hard)] if expected != soft else [])


def test_a_refused_raise_is_logged_not_raised(monkeypatch, caplog):
    def refuse(_which, _pair):
        raise ValueError("not allowed")

    monkeypatch.setattr(limits.resource, "getrlimit", lambda _which: (1024, 4096))
    monkeypatch.setattr(limits.resource, "setrlimit", refuse)
    monkeypatch.setattr(limits, "_nr_open", lambda: None)
    assert limits.raise_open_files_limit() == 1024
    assert "cannot raise the open-files limit from 1024 to 4096" in caplog.text
