"""jepsen-lite: fault-injection testing for raftpg, in the manner of Jepsen.

Part 1 (this package so far) is offline: ``history`` reads, writes and pairs Jepsen-shaped JSONL histories;
``checkers`` decide from a history alone whether acknowledged writes were lost, whether two primaries
accepted writes, whether a register was linearizable, and how available the cluster was. Nothing here
starts processes or touches the network; the harness that records histories builds on ``HistoryWriter``.
"""
