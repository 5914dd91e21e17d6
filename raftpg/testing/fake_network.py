"""The wire between FakePostgres instances (raftpg.testing.fake_postgres) and the clients' ledger of writes:
replication links that can be cut, record and system-identifier counters, and the names helpers the
fake server uses (positions, hosts, synchronous_standby_names)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from raftpg.clock import Clock, FakeClock


class Instance(Protocol):
    """What the network needs of a server on it (FakePostgres)."""

    name: str
    running: bool

    @property
    def accepting_writes(self) -> bool: ...

    def apply_fence(self) -> None: ...

    def pull_from_upstream(self) -> None: ...

    def acknowledge_synchronous(self) -> None: ...


_I = TypeVar("_I", bound=Instance)

LSN_BASE = 0x3000000
RECORD_BYTES = 8192
SYSID_BASE = 7_300_000_000_000_000_000


def lsn_of(wal: list[int]) -> int:
    return LSN_BASE + RECORD_BYTES * len(wal)


def host_of(conn_url: str | None) -> str | None:
    """``postgresql://user@n2:5432/postgres`` -> ``n2``."""
    if not conn_url:
        return None
    rest = conn_url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
    return rest.split(":", 1)[0] or None


def parse_standby_names(value: str) -> tuple[int, tuple[str, ...] | None]:
    """``''`` -> (0, ()); ``'*'`` -> (1, None: any); ``'FIRST 2 ("a", "b")'`` -> (2, ('a', 'b')); ``ANY`` alike
    (``is_quorum`` tells them apart)."""
    value = value.strip()
    if not value:
        return 0, ()
    if value == "*":
        return 1, None
    match = re.fullmatch(r"(?:(?:FIRST|ANY)\s+)?(\d+)\s*\((.*)\)", value, flags=re.IGNORECASE)
    if match:
        count, body = int(match.group(1)), match.group(2)
    else:
        count, body = 1, value
    names = tuple(re.findall(r'"((?:[^"]|"")*)"|([^,\s]+)', body))
    return count, tuple((quoted.replace('""', '"') if quoted else bare) for quoted, bare in names)


def is_quorum(standby_names: str) -> bool:
    return standby_names.strip().upper().startswith("ANY")


def sync_states(streaming: list[str], standby_names: str) -> dict[str, str]:
    """pg_stat_replication's ``sync_state`` of each streaming standby (by name, in connection order) under
    ``synchronous_standby_names``: ``sync``, ``potential`` or ``async``; ``quorum`` for each listed one
    under ``ANY n (...)``."""
    count, listed = parse_standby_names(standby_names)
    if is_quorum(standby_names):
        return {n: "quorum" if listed is not None and n in listed else "async" for n in streaming}
    order = list(streaming) if listed is None else [n for n in listed if n in streaming]  # '*': the first
    return {n: "sync" if n in order[:count] else "potential" if n in order[count:] else "async" for n in streaming}


def acknowledged_up_to(standby_names: str, held: dict[str, int]) -> int | None:
    """How many WAL records PostgreSQL may acknowledge, given how many each synchronous (or quorum)
    standby holds: FIRST n waits for the n first (every one of them), ANY n for any n; None: none yet."""
    count, _ = parse_standby_names(standby_names)
    if len(held) < count:
        return None
    if is_quorum(standby_names):
        return sorted(held.values(), reverse=True)[count - 1]
    return min(held.values())


class PgError(RuntimeError):
    """What a failed pg_ctl/pg_basebackup/pg_rewind would report."""


@dataclass
class PgNetwork(Generic[_I]):
    """The wire between instances (FakePostgres: ``PgNetwork[FakePostgres]``) and the clients' ledger
    of writes."""

    clock: Clock
    instances: dict[str, _I] = field(default_factory=dict)
    cut: set[str] = field(default_factory=set)            # nodes with every replication link down
    cut_links: set[frozenset[str]] = field(default_factory=set)
    acknowledged: set[int] = field(default_factory=set)  # write ids a client was told are committed
    on_writable: Callable[[_I], None] | None = None
    on_take_time: Callable[[float], None] | None = None  # a simulation that lets the others run meanwhile
    _next_record: int = 0
    _next_sysid: int = 0

    def new_record(self) -> int:
        self._next_record += 1
        return self._next_record

    def new_sysid(self) -> str:
        self._next_sysid += 1
        return str(SYSID_BASE + self._next_sysid)

    def add(self, pg: _I) -> None:
        self.instances[pg.name] = pg

    def link_up(self, a: str, b: str) -> bool:
        return a not in self.cut and b not in self.cut and frozenset((a, b)) not in self.cut_links

    def reach(self, source: str, conn_url: str | None) -> _I | None:
        """The instance ``conn_url`` names, if ``source`` can reach it and it accepts connections."""
        target = self.instances.get(host_of(conn_url) or "")
        if target is None or not self.link_up(source, target.name):
            return None
        target.apply_fence()
        return target if target.running else None

    def step(self) -> None:
        """Let every streaming replica catch up, then acknowledge the synchronous writes now safe."""
        for pg in self.instances.values():
            pg.apply_fence()
        for _ in range(3):  # cascades settle in a few passes
            for pg in sorted(self.instances.values(), key=lambda p: p.name):
                pg.pull_from_upstream()
        for pg in self.instances.values():
            pg.acknowledge_synchronous()

    def take_time(self, seconds: float) -> None:
        """A slow operation: the shared clock moves on while it runs (the FakeClock must be ours)."""
        if seconds <= 0:
            return
        if self.on_take_time is not None:
            self.on_take_time(seconds)
            return
        if not isinstance(self.clock, FakeClock):
            raise TypeError("PgNetwork.take_time moves the clock: it needs a FakeClock")
        self.clock.advance(seconds)
        for pg in self.instances.values():
            pg.apply_fence()

    def became_writable(self, pg: _I) -> None:
        if self.on_writable is not None:
            self.on_writable(pg)

    def writable(self) -> list[_I]:
        return [pg for pg in self.instances.values() if pg.accepting_writes]
