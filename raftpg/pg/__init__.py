"""The PostgreSQL adapter: everything raftpg does to this node's PostgreSQL, and how it looks at it.

What lives here
  settings.py    PgSettings, Credentials: built by the node from its config
  control.py     Postgres: the facade the HA loop drives (bootstrap, start, stop, promote, follow, rewind, ...)
  observe.py     observe(settings) -> LocalState, from pg_controldata, postmaster.pid and pg_stat_* views
  conf.py        postgresql.conf (raftpg's, including initdb's as postgresql.base.conf), pg_hba.conf, pgpass,
                 standby.signal; atomic writes
  process.py     PostmasterProcess: the postmaster as a child of the fencing supervisor; stop, lease
  supervisor.py  the fencing supervisor (standard library only; its docstring is its contract)
  bootstrap.py   initdb or a custom bootstrap command, roles, post_bootstrap
  rebuild.py     pg_basebackup or the replica methods, pg_rewind, moving data aside
  from_config.py PgSettings from the Config
  slots.py       physical slots for the other members, permanent slots     callbacks.py  user callbacks
  logical_slots.py  a replica's copies of the permanent logical slots (copied, advanced, dropped)
  wal_copy.py       the WAL segments such a copy needs that the replica never had, read on the primary
  connection.py  superuser connections and conninfo strings     controldata.py, pidfile.py, tools.py

May import: the standard library, psycopg, raftpg.model and raftpg.clock; raftpg.config only in
from_config.py (PgSettings from the node's Config) and for the one-line checks conf.py shares with it.
Never raftpg.dcs, raftpg.ha or raftpg.consensus: this package knows nothing of the DCS or of HA decisions.

Invariants
- initdb only runs on a missing or empty data directory (DESIGN.md safety rule 7); clone likewise.
- User data is never deleted: a failed data directory is renamed aside. The only deletions are clone's
  cleanup of its own failed attempt in a directory that was missing or empty, and a replica's copy of a
  logical slot replaced by a newer copy (the slot's state file; the primary holds the slot), and the
  temporary files of raftpg's own copies of WAL segments (wal_copy.py, named *.raftpg-tmp).
- The postmaster is always a child of the fencing supervisor started by this agent, and dies with it; a
  postmaster the agent did not start is stopped before the agent starts its own.
- Every operation has a deadline; nothing blocks forever. Synchronous and usable from a worker thread.
- PostgreSQL programs run as the current OS user (the agent runs as the postgres user), with LC_ALL=C and
  passwords only in the pgpass file (mode 0600), never in argv.
"""

from raftpg.pg.connection import conninfo_for
from raftpg.pg.control import Postgres
from raftpg.pg.observe import observe
from raftpg.pg.settings import CALLBACK_ACTIONS, Credentials, PgSettings
from raftpg.pg.slots import slot_name_for
from raftpg.pg.tools import PgError

__all__ = ["CALLBACK_ACTIONS", "Credentials", "PgError", "PgSettings", "Postgres", "conninfo_for", "observe",
           "slot_name_for"]
