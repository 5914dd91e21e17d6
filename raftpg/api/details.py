"""What ``GET /patroni`` and ``/metrics`` show beyond the health probe: Patroni's ``postmaster_start_time``,
``pending_restart_reason``, ``xlog.replayed_timestamp`` and ``xlog.paused``, read with one query.

The query runs in a worker thread, bounded by ``timeout_s``; a result at most ``max_age_s`` old answers
without a query, and concurrent callers share one run. Health checks never wait for it (``cached``): their
status code comes from ``fresh.py`` alone, and their body takes whatever was read last. A failed query
reads as "nothing known" (empty :class:`PostgresDetails`), never as an error of the request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from raftpg.clock import Clock

log = logging.getLogger(__name__)

# One row: start time, replay timestamp and paused (NULL on a primary), and the parameters waiting for a
# restart with the value in force and the value the files now say (the last one in file order wins; its
# ``error`` says it "could not be applied", which is what pending a restart means).
# pg_file_settings re-reads the configuration files (and logs about missing include_if_exists files):
# it is read only when some parameter is pending a restart (an init plan runs only when used).
QUERY = """
SELECT pg_catalog.pg_postmaster_start_time(),
       CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_xact_replay_timestamp() END,
       CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_is_wal_replay_paused() END,
       CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_settings WHERE pending_restart) THEN
       (SELECT pg_catalog.json_object_agg(s.name, pg_catalog.json_build_object(
                   'old_value', pg_catalog.current_setting(s.name), 'new_value', COALESCE(f.setting, '')))
          FROM pg_catalog.pg_settings s
          LEFT JOIN (SELECT DISTINCT ON (name) name, setting FROM pg_catalog.pg_file_settings
                     ORDER BY name, seqno DESC) f ON f.name = s.name
         WHERE s.pending_restart) END
"""


@dataclass(frozen=True)
class PostgresDetails:
    postmaster_start_time: datetime | None = None
    replayed_timestamp: datetime | None = None
    replay_paused: bool | None = None
    pending_restart_reason: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> PostgresDetails:
        started, replayed, paused, pending = row
        return cls(postmaster_start_time=started, replayed_timestamp=replayed,
                   replay_paused=paused, pending_restart_reason=dict(pending or {}))


NOTHING = PostgresDetails()


def patroni_time(moment: datetime | None) -> str | None:
    """As Patroni's JSON shows a timestamptz (``str()`` of the datetime: ``2024-05-01 10:00:00.123+00:00``)."""
    return None if moment is None else str(moment)


def epoch_s(moment: datetime | None) -> float:
    return 0.0 if moment is None else moment.timestamp()


class DetailsSource:
    def __init__(self, query: Callable[[str], list[tuple[Any, ...]]], clock: Clock, *, max_age_s: float = 1.0,
                 timeout_s: float = 1.0) -> None:
        self._query, self._clock = query, clock
        self.max_age_s, self.timeout_s = max_age_s, timeout_s
        self._value: PostgresDetails = NOTHING
        self._taken_at = float("-inf")
        self._inflight: asyncio.Future[PostgresDetails] | None = None

    def _stale(self) -> bool:
        return self._clock.monotonic() - self._taken_at > self.max_age_s

    async def get(self) -> PostgresDetails:
        """Details at most ``max_age_s`` old (waits for one query at most ``timeout_s``)."""
        if not self._stale():
            return self._value
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._run())
        return await asyncio.shield(self._inflight)

    def cached(self) -> PostgresDetails:
        """The last details read, at once; starts a refresh in the background when they are stale."""
        if self._stale() and self._inflight is None:
            self._inflight = asyncio.ensure_future(self._run())
        return self._value

    async def _run(self) -> PostgresDetails:
        started = self._clock.monotonic()
        try:
            rows = await asyncio.wait_for(asyncio.to_thread(self._query, QUERY), self.timeout_s)
            value = PostgresDetails.from_row(rows[0]) if rows else NOTHING
        except Exception as exc:  # noqa: BLE001 - PostgreSQL down or slow: nothing is known
            log.debug("status details query failed: %s", exc)
            value = NOTHING
        finally:
            self._inflight = None
        self._value, self._taken_at = value, started
        return value


DETAILS = web.AppKey("details", DetailsSource)


def source_of(app: web.Application) -> DetailsSource | None:
    return app.get(DETAILS)
