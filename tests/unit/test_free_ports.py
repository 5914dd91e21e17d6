"""raftpg.cli.local_cluster.free_ports: the ports local clusters (the demo, the tests, the benches) listen on."""

from __future__ import annotations

import socket

from raftpg.cli import local_cluster
from raftpg.cli.local_cluster import LOW_PORT, free_ports


def test_ports_are_free_distinct_and_below_the_ephemeral_range():
    """A port inside the ephemeral range can be taken as the local port of an outgoing connection before
    the node meant to listen there binds it (a Raft test node failed with EADDRINUSE); and a port handed
    out twice makes two nodes share it."""
    top = local_cluster._ephemeral_start()
    ports = free_ports(40) + free_ports(40)
    assert len(set(ports)) == 80
    assert all(LOW_PORT <= p < top for p in ports), ports
    for port in ports[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_port_someone_listens_on_is_not_handed_out(monkeypatch):
    busy, free = free_ports(2)
    monkeypatch.setattr(local_cluster, "_handed_out", set())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", busy))
        taken.listen()
        picks = iter([busy, free])
        monkeypatch.setattr(local_cluster.random.SystemRandom, "randrange", lambda self, a, b: next(picks))
        assert free_ports(1) == [free]
