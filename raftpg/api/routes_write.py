"""Write endpoints: switchover, failover, config, restart, reload, reinitialize, Raft membership.

Handlers only parse and check the request; the work is the ``Commands`` port's. Authentication and body
limits are enforced by the middlewares before a handler runs.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from raftpg.api.details import source_of
from raftpg.api.http import BadRequest, error, field, read_json, reply
from raftpg.api.keys import COMMANDS, RESTARTS, VIEW
from raftpg.api.ports import Outcome
from raftpg.api.restart import RestartConditions, parse_conditions, parse_timeout_s, unmet
from raftpg.dcs.documents import name_problem
from raftpg.ha.failsafe import RUNNING_AS_LEADER
from raftpg.ha.operations import OperationError, parse_scheduled_at


def _outcome(outcome: Outcome) -> web.Response:
    return reply({"message": outcome.message, **outcome.data}, outcome.http_status)


def _candidate(body: dict[str, Any]) -> str | None:
    # Patroni accepts "candidate"; its older clients and the DCS key use "member"
    return field(body, "candidate", str) or field(body, "member", str)


async def switchover(request: web.Request) -> web.StreamResponse:
    body = await read_json(request, required=True)
    leader = field(body, "leader", str)
    scheduled_at = field(body, "scheduled_at", str)
    return _outcome(await request.app[COMMANDS].switchover(leader, _candidate(body), scheduled_at))


async def failover(request: web.Request) -> web.StreamResponse:
    body = await read_json(request, required=True)
    candidate = _candidate(body)
    if candidate is None:
        raise BadRequest("candidate: required")
    force = field(body, "force", bool) or False
    return _outcome(await request.app[COMMANDS].failover(candidate, force))


async def cancel_switchover(request: web.Request) -> web.StreamResponse:
    return _outcome(await request.app[COMMANDS].cancel_switchover())


async def remove_cluster(request: web.Request) -> web.StreamResponse:
    """``raftpgctl remove``: the body repeats what the operator confirmed (the scope, the leader seen)."""
    body = await read_json(request, required=True)
    scope = field(body, "scope", str, required=True)
    if scope != request.app[VIEW].config().scope:
        raise BadRequest(f"scope: this node belongs to cluster {request.app[VIEW].config().scope!r}, not {scope!r}")
    if "leader" not in body:
        raise BadRequest("leader: required (the leader's name, or null when the cluster has none)")
    return _outcome(await request.app[COMMANDS].remove_cluster(field(body, "leader", str)))


async def patch_config(request: web.Request) -> web.StreamResponse:
    body = await read_json(request, required=True)
    outcome = await request.app[COMMANDS].patch_config(body)
    return reply(outcome.data.get("config", {}), outcome.http_status)


async def put_config(request: web.Request) -> web.StreamResponse:
    body = await read_json(request, required=True)
    outcome = await request.app[COMMANDS].put_config(body)
    return reply(outcome.data.get("config", {}), outcome.http_status)


async def restart(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    conditions = parse_conditions(body)
    timeout_s = parse_timeout_s(body)
    schedule = field(body, "schedule", str)
    view = request.app[VIEW]
    if schedule:
        try:
            at = parse_scheduled_at(schedule, view.wall())
        except OperationError as exc:  # the shared parser names its own field; this one is "schedule"
            raise BadRequest(exc.message.replace("scheduled_at", "schedule", 1)) from None
        if at is not None:
            return await _schedule_restart(request, at, conditions)
    reason = unmet(view.status(), conditions, await _pending_now(request, conditions))
    if reason:
        return error(f"restart conditions are not satisfied: {reason}", 503)
    return _outcome(await request.app[COMMANDS].restart(timeout_s))


async def _pending_now(request: web.Request, conditions: RestartConditions) -> bool:
    """What GET /patroni says now: a parameter is pending a restart (the details query)."""
    source = source_of(request.app)
    if not conditions.restart_pending or source is None:
        return False
    return bool((await source.get()).pending_restart_reason)


async def _schedule_restart(request: web.Request, at: float, conditions: RestartConditions) -> web.Response:
    app = request.app
    if app[VIEW].status().witness:
        return error("this node is a witness: it has no PostgreSQL", 412)

    async def fire(scheduled: RestartConditions) -> None:
        reason = unmet(app[VIEW].status(), scheduled)
        if reason:
            raise RuntimeError(f"conditions no longer hold: {reason}")
        await app[COMMANDS].restart()

    described = app[RESTARTS].schedule(at, conditions, fire)
    return reply({"message": f"restart scheduled at {described['schedule']}", **described}, 202)


async def cancel_restart(request: web.Request) -> web.StreamResponse:
    cancelled = request.app[RESTARTS].cancel()
    if cancelled is None:
        return error("no restart is scheduled", 404)
    return reply({"message": "scheduled restart cancelled", **cancelled})


async def reload(request: web.Request) -> web.StreamResponse:
    await read_json(request)
    return _outcome(await request.app[COMMANDS].reload())


async def reinitialize(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    force = field(body, "force", bool) or False
    from_leader = field(body, "from_leader", bool) or False
    return _outcome(await request.app[COMMANDS].reinitialize(force, from_leader))


def _require_raft(request: web.Request) -> None:
    if request.app[VIEW].raft_status() is None:
        raise BadRequest("this node does not use the embedded Raft store", 404)


async def add_raft_member(request: web.Request) -> web.StreamResponse:
    _require_raft(request)
    body = await read_json(request, required=True)
    addr = field(body, "addr", str, required=True)
    return _outcome(await request.app[COMMANDS].add_raft_member(addr.strip()))


async def remove_raft_member(request: web.Request) -> web.StreamResponse:
    _require_raft(request)
    return _outcome(await request.app[COMMANDS].remove_raft_member(request.match_info["addr"]))


async def transfer_raft_leadership(request: web.Request) -> web.StreamResponse:
    _require_raft(request)
    body = await read_json(request)
    addr = field(body, "addr", str)
    return _outcome(await request.app[COMMANDS].transfer_raft_leadership(addr.strip() if addr else None))


async def failsafe(request: web.Request) -> web.StreamResponse:
    """Patroni's ``POST /failsafe``: a primary that cannot reach the DCS asks to be kept. 200 ``Accepted``
    with this node's WAL position in the ``lsn`` header; 500 from a running primary; 502 when
    failsafe_mode is off (Patroni's codes)."""
    body = await read_json(request, required=True)
    primary = field(body, "name", str, required=True)
    problem = name_problem(primary)
    if problem:
        raise BadRequest(f"name: {problem}")
    view = request.app[VIEW]
    local = await view.postgres_now() or view.status().local
    why = await request.app[COMMANDS].failsafe(primary, bool(local and local.is_primary))
    if why is not None:
        return error(why, 500 if why == RUNNING_AS_LEADER else 502)
    positions = [p for p in (local.receive_lsn, local.replay_lsn, local.lsn) if p is not None] if local else []
    return web.Response(text="Accepted", headers={"lsn": str(max(positions))} if positions else None)


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_post("/switchover", switchover)
    router.add_delete("/switchover", cancel_switchover)
    router.add_delete("/cluster", remove_cluster)
    router.add_post("/failover", failover)
    router.add_patch("/config", patch_config)
    router.add_put("/config", put_config)
    router.add_post("/restart", restart)
    router.add_delete("/restart", cancel_restart)
    router.add_post("/reload", reload)
    router.add_post("/failsafe", failsafe)
    router.add_post("/reinitialize", reinitialize)
    router.add_post("/raft/members", add_raft_member)
    router.add_delete("/raft/members/{addr}", remove_raft_member)
    router.add_post("/raft/leader", transfer_raft_leadership)
