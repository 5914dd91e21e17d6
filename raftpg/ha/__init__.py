"""High availability: the loop that keeps exactly one primary.

- ``inputs.py``: everything the decision looks at, as values (this node, its lease, the loop's memory).
- ``decide.py``: the pure decision; ``rejoin.py``: bringing a data dir back as a replica and the repair
  ladder; ``sync.py``: the synchronous-replication planner; ``quorum.py``: quorum commit (its planner and
  the failover candidate's votes); ``failsafe.py``: failsafe_mode's rules; ``chores.py``: the loop's
  chores (storing the initial config, applying the cluster-wide settings); ``history.py``: the history
  key's rows; ``memory.py``: what the loop remembers, folded in by pure functions. All pure.
- ``actions.py``: frozen dataclasses named as verbs (what the decision asks for, one step each).
- ``ports.py``: what HA needs of PostgreSQL and the watchdog.
- ``lease.py``: the lease account and its enforcers (safety rules 1, 2, 6).
- ``execute.py``: one ``match`` from actions to port calls.
- ``loop.py``: observe -> decide -> execute -> publish -> wait; ``operations.py``: operator requests.

The pure modules import only raftpg.model and each other (import-linter forbids I/O libraries, the
clock, ``time`` and ``threading`` there); the loop, executor and lease account may import raftpg.dcs.base
and raftpg.clock.
"""
