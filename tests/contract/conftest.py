"""Fixtures of the DCS contract suite; the backends themselves are described in dcs_backends.py."""

import threading
from collections.abc import Iterator

import pytest
from dcs_backends import backend, consul_fake, etcd_factory, etcd_store, raft_nodes  # noqa: F401

from raftpg.testing.poll import wait_until

# Threads of an in-process Raft voter (pysyncobj's tick thread, raftpg's owner thread).
_RAFT_THREADS = ("_autoTickThread", "raft-owner-")


def _raft_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if any(mark in t.name for mark in _RAFT_THREADS)]


@pytest.fixture(scope="module", autouse=True)
def no_raft_voter_outlives_its_module() -> Iterator[None]:
    """Set up before, so torn down after, the module's shared stores: by then their Raft voters must be
    gone. A voter left ticking draws from the global ``random`` during later tests (hypothesis warns) and
    keeps its ports and threads for the rest of the session."""
    yield
    wait_until(lambda: not _raft_threads(), 10, "the module's Raft voters to stop", interval_s=0.05)
