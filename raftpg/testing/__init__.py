"""Doubles shared by tests, scenario transcripts, simulations and benchmarks (DESIGN.md section 5).

- ``fake_postgres.py``: ``FakePostgres``, an in-memory PostgreSQL implementing ``raftpg.ha.ports.PostgresPort``,
  and ``PgNetwork``, the replication wire between instances with links a test can cut.
- ``simulation.py``: N real HA loops over one in-memory DCS, one FakeClock and FakePostgres instances,
  stepped deterministically from a seed, with a continuous no-two-writable-primaries checker.
- ``consul_fake.py``: an in-process fake of the Consul HTTP endpoints ConsulDcs uses.
- ``raft_driver.py``: one Raft KV node as a process with a JSON-over-HTTP control API (integration tests,
  bench/, jepsen-lite's register workload).
- ``local_cluster.py``: real agent processes on loopback (``raftpg demo``, integration tests, bench/).

May import anything of raftpg (it sits outside the layers); nothing in raftpg's runtime imports it
except ``raftpg demo``. The simulation and FakePostgres use no threads, sleeps or sockets: time is a
FakeClock the simulation moves.
"""
