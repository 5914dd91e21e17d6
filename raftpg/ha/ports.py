"""What the HA loop needs of PostgreSQL and of the watchdog: small protocols owned by their user.

``raftpg.pg.Postgres`` and ``raftpg.watchdog`` implement these; tests use ``raftpg.testing`` doubles.
Every PostgreSQL method is synchronous and bounded by its timeout; failures raise an exception whose
message is fit for the cycle's log line. A method typed ``-> object`` may return something the loop does
not use (``Postgres`` says whether it was ready, or what changed); connection URLs are passed by position
(``Postgres`` names them ``*_conninfo``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from raftpg.model import DynamicConfig, LocalState, PeerAnswer, PermanentSlot


class PostgresPort(Protocol):
    def observe(self) -> LocalState: ...

    def initdb(self) -> None:
        """initdb into the missing or empty data dir (never over data), marked as a bootstrap in progress
        (``LocalState.bootstrap_unfinished``) until ``finish_bootstrap``."""

    def post_bootstrap(self) -> str:
        """On the new, running primary: raftpg's roles, then the user's post_bootstrap; -> sysid."""

    def finish_bootstrap(self) -> None:
        """The cluster is registered: the data dir is no longer a bootstrap in progress."""

    def start(self, primary_conn_url: str | None, slot_name: str | None, /, *, as_replica: bool,
              timeout_s: float, fence_deadline: float | None = None) -> object:
        """Start as a replica of ``primary_conn_url`` (None: a standby waiting for a primary), or as a
        primary whose supervisor fences it at ``fence_deadline`` (monotonic) unless extended."""

    def stop(self, mode: str, timeout_s: float) -> None: ...

    def restart(self, timeout_s: float, fence_deadline: float | None = None) -> object: ...

    def reload(self) -> object: ...

    def promote(self, timeout_s: float, on_writable: Callable[[], object] | None = None) -> None:
        """Promote; ``on_writable`` runs as soon as PostgreSQL accepts writes, before the rest (the
        configuration files brought in step, callbacks) that a health check need not wait for."""

    def checkpoint(self, timeout_s: float = 60.0) -> None: ...

    def follow(self, primary_conn_url: str, slot_name: str | None, /) -> object: ...

    def clone(self, source_conn_url: str, /, timeout_s: float | None,
              on_progress: Callable[[int], None] | None = None) -> object:
        """Copy the source into the missing or empty data dir (None: no deadline), reporting percentages."""

    def rewind(self, source_conn_url: str, /, timeout_s: float) -> bool: ...

    def can_reach(self, conn_url: str) -> bool:
        """True if the PostgreSQL at ``conn_url`` accepts a TCP connection now (a cheap probe)."""

    def move_data_aside(self) -> str: ...

    def ensure_slots(self, names: set[str], members: frozenset[str] = frozenset(), retain_s: float = 0.0) -> object:
        """The physical slots ``names`` exist; those raftpg made and no longer wanted are dropped, except a
        member's slot (among ``members``) for ``retain_s`` after it was last wanted."""

    def adopt_unsupervised(self) -> object:
        """Put a postmaster running on the data directory without this agent's fencing supervisor (left
        by an agent stopped while paused, or started by hand) under one, without a restart."""

    def advance_slots(self, positions: Mapping[str, int]) -> object:
        """Move each named slot forward to its position (on a replica: never past what it replayed)."""

    def ensure_logical_slots(self, slots: tuple[PermanentSlot, ...]) -> object:
        """The logical ``slots`` exist (created where missing); those raftpg made and no longer wanted are
        dropped. One that cannot be made is logged, never raised."""

    def follow_logical_slots(self, slots: tuple[tuple[PermanentSlot, int | None], ...], source: str) -> object:
        """On a replica: keep a copy of each logical slot, advanced to its published position; a missing
        one is copied from the primary at ``source`` (PostgreSQL restarts to load it)."""

    def set_synchronous_standby_names(self, value: str) -> None: ...

    def run_callback(self, action: str, role: str) -> None: ...

    def publish_epoch(self, epoch: int) -> None:
        """Make the leader key's revision readable in PostgreSQL (``raftpg.leader_epoch``) before it
        acknowledges writes as a primary."""

    def fence_at(self, deadline: float) -> object:
        """Tell the fencing supervisor that writes may continue until ``deadline`` (monotonic, absolute:
        time spent between computing it and sending it is never added to it)."""

    def unlimited(self) -> object:
        """Tell the fencing supervisor that this PostgreSQL needs no fencing (a replica)."""

    def detach(self) -> bool:
        """Leave PostgreSQL running, unfenced, as this agent stops (the cluster is paused); the next agent
        adopts it when it first observes it. False if no supervised postmaster runs."""


    def apply_cluster_config(self, config: DynamicConfig) -> bool:
        """The cluster-wide config in the DCS (parameters, pg_hba, pg_ident, recovery_conf): rewrite the
        files and reload if this member's settings change; True if they did."""


class WatchdogPort(Protocol):
    def arm(self, timeout_s: float) -> bool:
        """Arm (or re-arm with a new timeout); False if the device cannot be used."""

    def keepalive(self, timeout_s: float | None = None) -> None:
        """Restart the countdown (with ``timeout_s``: from now, that long)."""

    def disarm(self) -> None: ...

    @property
    def armed(self) -> bool: ...


class FailsafePeers(Protocol):
    """failsafe_mode: the other members' REST APIs, as the primary asks them (``POST /failsafe``)."""

    def ask(self, members: tuple[tuple[str, str], ...], request: Mapping[str, object],
            timeout_s: float) -> dict[str, str | None]:
        """Send ``request`` to every member (name, REST API URL) at once, within ``timeout_s`` in all;
        -> for each name, None if it accepted, else why not (its answer, or the connection's failure)."""


class PositionPeers(Protocol):
    """Quorum commit: the other members' REST APIs, as a failover candidate asks them for their positions."""

    def positions(self, members: tuple[tuple[str, str], ...], timeout_s: float) -> tuple[PeerAnswer, ...]:
        """Ask every member (name, REST API URL) at once, within ``timeout_s`` in all, whether its
        PostgreSQL is in recovery and how far its WAL goes; a member that did not answer has ``error``."""
