"""High availability: the loop that keeps exactly one primary.

- ``actions.py``: frozen dataclasses named as verbs (what the decision asks for).
- ``inputs.py``: everything the decision looks at, as values.
- ``decide.py``: the pure decision; ``sync.py``: the pure synchronous-replication planner.
- ``ports.py``: what HA needs of PostgreSQL and the watchdog.
- ``execute.py``: actions -> port calls, and the lease account (safety rules 1, 2, 6).
- ``loop.py``: observe -> decide -> execute -> publish -> wait.

``decide``/``sync``/``actions``/``inputs`` import only raftpg.model (checked by import-linter); the loop
and executor may import raftpg.dcs.base and raftpg.clock.
"""
