"""Doubles shared by tests, scenario transcripts and simulations (DESIGN.md section 5).

- ``fake_postgres.py``: ``FakePostgres``, an in-memory PostgreSQL implementing ``raftpg.ha.ports.PostgresPort``,
  and ``PgNetwork``, the replication wire between instances with links a test can cut.
- ``simulation.py``: N real HA loops over one in-memory DCS, one FakeClock and FakePostgres instances,
  stepped deterministically from a seed, with a continuous no-two-writable-primaries checker.

May import anything of raftpg (it sits outside the layers); nothing in raftpg's runtime imports it.
No threads, no sleeps, no sockets: time is a FakeClock the simulation moves.
"""
