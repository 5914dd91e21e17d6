"""raftpgctl's member verbs as patronictl spells them: ``restart``, ``reload``, ``reinit``, ``flush``.

Each takes patronictl's ``CLUSTER [MEMBER...]`` (raftpg's older ``[MEMBER]`` without the cluster name still
works) and ``--role``; a member that does not match a filter is skipped, not a failure. Messages are
patronictl's (``Success: restart on member n2``), so scripts that grep them keep working.
"""

from __future__ import annotations

import random
import time
from typing import Any

import click

from raftpg.api.client import ApiError, error_text
from raftpg.cli import ctl_output as out
from raftpg.cli.ctl_support import Ctl, CtlError, parse_schedule

ROLES = ["leader", "primary", "master", "standby-leader", "replica", "standby", "any"]
pass_ctl = click.make_pass_decorator(Ctl)


def split_names(ctl: Ctl, cluster: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    """patronictl's ``CLUSTER MEMBER...`` or raftpg's ``MEMBER...``: the member names, the cluster name
    (if given) checked against the config's scope."""
    members = {m["name"] for m in cluster.get("members") or []}
    names_list = list(names)
    scope = ctl.scope or cluster.get("scope")
    if names_list and names_list[0] == scope:
        return names_list[1:]
    if names_list and names_list[0] not in members:
        raise CtlError(f"{names_list[0]!r} is neither this cluster's name (scope {scope!r}) nor one of its "
                       f"members ({', '.join(sorted(members))})")
    return names_list


def with_role(cluster: dict[str, Any], role: str) -> list[dict[str, Any]]:
    """Data members with ``role`` (patronictl's choices; no standby clusters, so standby-leader: none)."""
    data = [m for m in cluster.get("members") or [] if m.get("role") != "witness"]
    if role in ("leader", "primary", "master"):
        return [m for m in data if m.get("role") == "leader"]
    if role in ("replica", "standby"):
        return [m for m in data if m.get("role") != "leader"]
    if role == "standby-leader":
        return []
    return data


def select(ctl: Ctl, cluster: dict[str, Any], names: tuple[str, ...], role: str, force: bool,
           action: str, *, every_when_unnamed: bool = True) -> list[dict[str, Any]]:
    """patronictl's get_members: the named members (or all) that have ``role``; shows the table and asks."""
    wanted = split_names(ctl, cluster, names)
    candidates = with_role(cluster, role)
    if not force or role != "any":
        if not wanted and not candidates:
            raise CtlError(f"{cluster.get('scope')} cluster doesn't have any members")
        click.echo(out.cluster_table(cluster))
    if wanted:
        unknown = [n for n in wanted if n not in {m["name"] for m in cluster.get("members") or []}]
        if unknown:
            raise CtlError(f"{unknown[0]} is not a member of cluster")
        chosen = [m for m in candidates if m["name"] in wanted]
        if not chosen:
            raise CtlError(f"No {role!r} among provided members")
        return chosen
    if every_when_unnamed:
        return candidates
    if force:
        raise CtlError(f"name the member to {action}")
    name = click.prompt(f"Which member do you want to {action} [{', '.join(m['name'] for m in candidates)}]?",
                        type=str, default="")
    chosen = [m for m in candidates if m["name"] == name]
    if not chosen:
        raise CtlError(f"{name} is not a member of cluster")
    return chosen


def _pending_now(ctl: Ctl, member: dict[str, Any]) -> bool:
    """The member's own GET /patroni (what it says now), else its DCS member key (patronictl's source)."""
    try:
        return bool(ctl.member_client(member, unsafe=False).get("/patroni").get("pending_restart"))
    except (ApiError, CtlError):
        return bool(member.get("pending_restart"))


def confirm(members: list[dict[str, Any]], force: bool, action: str, scheduled: str | None = None) -> None:
    if force:
        return
    names = ", ".join(m["name"] for m in members)
    question = (f"Are you sure you want to schedule {action} of members {names} at {scheduled}?" if scheduled
                else f"Are you sure you want to {action} members {names}?")
    if not click.confirm(question):
        raise CtlError(f"Aborted {'scheduled ' if scheduled else ''}{action}")


def _post(ctl: Ctl, member: dict[str, Any], method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
    try:
        return ctl.member_client(member).request(method, path, body)
    except (ApiError, CtlError) as exc:
        return 0, getattr(exc, "message", str(exc))


def _failed(what: str, member: dict[str, Any], status: int, answer: Any) -> str:
    text = answer if status == 0 else error_text(answer)  # status 0: no request was sent (the reason)
    name: str = member["name"]
    click.echo(f"Failed: {what} for member {name}, status code={status}, ({text})")
    return name


def _exit_status(what: str, failed: list[str]) -> None:
    """patronictl exits 0 after a member's failure; raftpgctl says it in its exit status too (1)."""
    if failed:
        raise CtlError(f"{what} failed on {', '.join(failed)}")


@click.command()
@click.argument("names", nargs=-1)
@click.option("--role", "-r", type=click.Choice(ROLES), default="any", help="Restart only members with this role.")
@click.option("--any", "p_any", is_flag=True, help="Restart a single member only.")
@click.option("--scheduled", help="When: an ISO-8601 time (local time if no zone is given), or 'now'.")
@click.option("--pg-version", "pg_version", help="Restart if the PostgreSQL version is less than this (e.g. 15.4).")
@click.option("--pending", is_flag=True, help="Restart only members with a pending restart.")
@click.option("--timeout", help="Fail (and leave failover to the HA loop) if a restart takes longer (e.g. 60, 2min).")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@pass_ctl
def restart(ctl: Ctl, names: tuple[str, ...], role: str, p_any: bool, scheduled: str | None,
            pg_version: str | None, pending: bool, timeout: str | None, force: bool) -> None:
    """Restart PostgreSQL: CLUSTER [MEMBER...] (every member matching --role when none is named)."""
    cluster = ctl.cluster()
    members = select(ctl, cluster, names, role, force, "restart")
    at = parse_schedule(scheduled)
    body: dict[str, Any] = {}
    if pending:
        body["restart_pending"] = True
        if not at:  # a scheduled restart decides at its time, as in patronictl
            members = [m for m in members if _pending_now(ctl, m)]
    if p_any:
        random.shuffle(members)
        members = members[:1]
    confirm(members, force, "restart", at)
    if pg_version:
        body["postgres_version"] = pg_version
    if at:
        if cluster.get("pause"):
            raise CtlError("Can't schedule restart in the paused state")
        body["schedule"] = at
    if timeout is not None:
        body["timeout"] = timeout
    failed = []
    for member in members:
        if at and force:  # patronictl flushes a restart already scheduled there (none: a 404, ignored)
            _post(ctl, member, "DELETE", "/restart", None)
        status, answer = _post(ctl, member, "POST", "/restart", body)
        if status == 200:
            click.echo(f"Success: restart on member {member['name']}")
        elif status == 202:
            click.echo(f"Success: restart scheduled on member {member['name']}")
        elif status == 409:
            click.echo(f"Failed: another restart is already scheduled on member {member['name']}")
            failed.append(member["name"])
        else:
            failed.append(_failed("restart", member, status, answer))
    _exit_status("restart", failed)


@click.command()
@click.argument("names", nargs=-1)
@click.option("--role", "-r", type=click.Choice(ROLES), default="any", help="Reload only members with this role.")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@pass_ctl
def reload(ctl: Ctl, names: tuple[str, ...], role: str, force: bool) -> None:
    """Reload the configuration: CLUSTER [MEMBER...]."""
    cluster = ctl.cluster()
    members = select(ctl, cluster, names, role, force, "reload")
    confirm(members, force, "reload")
    failed = []
    for member in members:
        status, answer = _post(ctl, member, "POST", "/reload", None)
        if status == 200:
            click.echo(f"No changes to apply on member {member['name']}")
        elif status == 202:
            click.echo(f"Reload request received for member {member['name']} and will be processed within "
                       f"{_loop_wait(ctl)} seconds")
        else:
            failed.append(_failed("reload", member, status, answer))
    _exit_status("reload", failed)


def _loop_wait(ctl: Ctl) -> Any:
    try:
        return ctl.client.get("/config").get("loop_wait", 10)
    except ApiError:
        return 10


@click.command()
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@click.option("--from-leader", "from_leader", is_flag=True, help="Take the base backup from the leader.")
@click.option("--wait", is_flag=True, help="Wait until reinitialization completes.")
@pass_ctl
def reinit(ctl: Ctl, names: tuple[str, ...], force: bool, from_leader: bool, wait: bool) -> None:
    """Throw away a replica's data and clone it again: CLUSTER MEMBER..."""
    cluster = ctl.cluster()
    members = select(ctl, cluster, names, "replica", force, "reinitialize", every_when_unnamed=False)
    confirm(members, force, "reinitialize")
    waiting, failed = [], []
    for member in members:
        status, answer = _post(ctl, member, "POST", "/reinitialize", {"force": force, "from_leader": from_leader})
        if 200 <= status < 400:
            click.echo(f"Success: reinitialize for member {member['name']}")
            waiting.append(member)
        else:
            failed.append(_failed("reinitialize", member, status, answer))
    if wait and waiting:
        _wait_reinit(ctl, waiting)
    _exit_status("reinitialize", failed)


def _wait_reinit(ctl: Ctl, members: list[dict[str, Any]], timeout_s: float = 3600.0) -> None:
    """Until each member runs again after its clone (its status leaves 'creating replica'/'stopped')."""
    click.echo(f"Waiting for reinitialize to complete on: {', '.join(m['name'] for m in members)}")
    deadline = time.monotonic() + timeout_s
    left = list(members)
    time.sleep(1.0)  # the loop picks the request up on its next cycle
    while left and time.monotonic() < deadline:
        for member in list(left):
            try:
                state = ctl.member_client(member, unsafe=False).get("/patroni").get("state")
            except (ApiError, CtlError):
                continue
            if state == "running":
                click.echo(f"Reinitialize is completed on: {member['name']}")
                left.remove(member)
        if left:
            time.sleep(1.0)
    if left:
        raise CtlError(f"reinitialize not complete after {timeout_s:.0f}s on {', '.join(m['name'] for m in left)}")


@click.command()
@click.argument("args", nargs=-1, required=True)
@click.option("--role", "-r", type=click.Choice(ROLES), default="any", help="Flush only members with this role.")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@pass_ctl
def flush(ctl: Ctl, args: tuple[str, ...], role: str, force: bool) -> None:
    """Discard scheduled events: CLUSTER [MEMBER...] restart|switchover."""
    target = args[-1]
    if target not in ("restart", "switchover"):
        raise click.BadParameter(f"the last argument must be restart or switchover, got {target!r}",
                                 param_hint="TARGET")
    cluster = ctl.cluster()
    failed: list[str] = []
    if target == "restart":
        for member in select(ctl, cluster, args[:-1], role, force, "flush"):
            status, answer = _post(ctl, member, "DELETE", "/restart", None)
            if status == 404:
                continue  # nothing scheduled there
            if 200 <= status < 400:
                click.echo(f"Success: flush scheduled restart for member {member['name']}")
            else:
                failed.append(_failed("flush scheduled restart", member, status, answer))
        _exit_status("flush", failed)
        return
    split_names(ctl, cluster, args[:-1])
    status, answer = ctl.client.request("DELETE", "/switchover")
    if status == 404:
        click.echo("No pending scheduled switchover")
    elif 200 <= status < 400:
        click.echo("Success: scheduled switchover deleted")
    else:
        raise CtlError(f"Failed: flush scheduled switchover ({status}): {error_text(answer)}")


COMMANDS = (restart, reload, reinit, flush)
