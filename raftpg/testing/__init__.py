"""Doubles shared by tests, scenario transcripts, simulations and benchmarks (DESIGN.md section 5).

- ``fake_postgres.py``: ``FakePostgres``, an in-memory PostgreSQL implementing ``raftpg.ha.ports.PostgresPort``,
  and ``PgNetwork``, the replication wire between instances with links a test can cut.
- ``simulation.py``: N real HA loops over one in-memory DCS, one FakeClock and FakePostgres instances,
  stepped deterministically from a seed, with a continuous no-two-writable-primaries checker.
- ``consul_fake.py``: an in-process fake of the Consul HTTP endpoints ConsulDcs uses.
- ``raft_driver.py``: one Raft KV node as a process with a JSON-over-HTTP control API (integration tests,
  bench/, jepsen-lite's register workload).

May import anything of raftpg (it sits outside the layers); nothing in raftpg's runtime imports it
(an import-linter contract checks it) and the wheel leaves it out. The real-process cluster behind
``raftpg demo``, which the integration tests and benchmarks use too, is ``raftpg/cli/local_cluster.py``
for that reason. The simulation and FakePostgres use no threads, sleeps or sockets: time is a
FakeClock the simulation moves.
"""
