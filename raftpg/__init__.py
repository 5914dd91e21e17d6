"""raftpg: high availability for PostgreSQL with an embedded Raft store.

Packages, innermost first: clock, model, config, kv, consensus, dcs/pg/watchdog, ha, api, node, cli.
Dependencies point inward only (checked by import-linter, see pyproject.toml).
"""

__version__ = "0.1.0"
