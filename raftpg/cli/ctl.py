"""raftpgctl: patronictl's verbs over the REST API.

It reads the node's config file (``-c`` or ``RAFTPGCTL_CONFIG_FILE``) for ``restapi.connect_address``,
the credentials and the CA, talks to that node's API, and for member-targeted verbs (restart, reload,
reinit) finds each member's ``api_url`` in ``GET /cluster``; it sends the config's credentials only to
members the config vouches for (``ctl_trust.py``). Exit status 0 on success; otherwise one line
``raftpgctl: <reason>`` on stderr and a non-zero status (1 refused or failed, 2 usage).
"""

from __future__ import annotations

import copy
import time
import urllib.parse
from typing import Any

import click
import yaml

from raftpg import __version__
from raftpg.api.client import ApiError, error_text
from raftpg.cli import ctl_output as out
from raftpg.cli.ctl_support import (
    Ctl,
    CtlError,
    assign,
    parse_pair,
    parse_schedule,
    patch_between,
)


class CtlGroup(click.Group):
    """Turns an API failure anywhere below into a one-line error (no traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            raise CtlError(exc.message) from None


pass_ctl = click.make_pass_decorator(Ctl)


def fmt_option(fn: Any) -> Any:
    """``-f/--format`` on a read verb too (patronictl habit: ``list -f json``)."""
    return click.option("-f", "--format", "fmt", type=click.Choice(["pretty", "json"]), default=None,
                        help="Output format (overrides the global option).")(fn)


def _fmt(ctl: Ctl, fmt: str | None) -> str:
    return fmt or ctl.fmt


@click.group(cls=CtlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", "config_file", envvar="RAFTPGCTL_CONFIG_FILE",
              type=click.Path(dir_okay=False), help="The node's config file [env RAFTPGCTL_CONFIG_FILE].")
@click.option("-f", "--format", "fmt", type=click.Choice(["pretty", "json"]), default="pretty",
              help="Output format.")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, fmt: str) -> None:
    """Manage a raftpg cluster through its REST API."""
    ctx.obj = Ctl(config_file, fmt)


# ------------------------------------------------------------------------------------ read verbs


@cli.command("list")
@fmt_option
@pass_ctl
def list_(ctl: Ctl, fmt: str | None) -> None:
    """Members of the cluster: role, state, timeline, lag, Raft role."""
    cluster = ctl.cluster()
    if _fmt(ctl, fmt) == "json":
        click.echo(out.as_json(out.member_rows(cluster)))
    else:
        click.echo(out.cluster_table(cluster))


@cli.command()
@fmt_option
@pass_ctl
def topology(ctl: Ctl, fmt: str | None) -> None:
    """Members as a tree: the leader, then the replicas streaming from it."""
    cluster = ctl.cluster()
    if _fmt(ctl, fmt) == "json":
        click.echo(out.as_json(out.member_rows(cluster, topology=True)))
    else:
        click.echo(out.cluster_table(cluster, topology=True))


@cli.command()
@fmt_option
@pass_ctl
def history(ctl: Ctl, fmt: str | None) -> None:
    """Timeline history: every promotion."""
    rows = out.history_rows(ctl.client.get("/history"))
    click.echo(out.as_json(rows) if _fmt(ctl, fmt) == "json" else out.table(rows, "(no history yet)"))


@cli.command("show-config")
@fmt_option
@pass_ctl
def show_config(ctl: Ctl, fmt: str | None) -> None:
    """The cluster-wide dynamic config stored in the DCS."""
    config = ctl.client.get("/config")
    click.echo(out.as_json(config) if _fmt(ctl, fmt) == "json" else out.to_yaml(config).rstrip())


@cli.command()
@pass_ctl
def version(ctl: Ctl) -> None:
    """raftpgctl's version, and each member's when the cluster is reachable."""
    click.echo(f"raftpgctl version {__version__}")
    if not ctl.config_file:
        return
    try:
        cluster = ctl.cluster()
    except (ApiError, CtlError) as exc:
        click.echo(f"(cluster not reachable: {getattr(exc, 'message', exc)})")
        return
    for member in cluster.get("members") or []:
        click.echo(f"{member['name']}: raftpg {member.get('version') or 'unknown'}")


# ------------------------------------------------------------------------------------ cluster operations


def _refused(what: str, exc: ApiError) -> CtlError:
    return CtlError(f"{what} failed: {exc.detail}")


@cli.command()
@click.option("--leader", "--primary", "leader", help="The current leader (default: as the cluster says).")
@click.option("--candidate", help="The member to promote (default: the best eligible one).")
@click.option("--scheduled", help="When: 'now' or an ISO-8601 time (local time if no zone is given).")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@pass_ctl
def switchover(ctl: Ctl, leader: str | None, candidate: str | None, scheduled: str | None, force: bool) -> None:
    """Planned switchover: the primary hands over to a replica."""
    cluster = ctl.cluster()
    leader = leader or cluster.get("leader")
    if not leader:
        raise CtlError("the cluster has no leader: use failover")
    at = parse_schedule(scheduled)
    if not force:
        target = f" to {candidate}" if candidate else ""
        when = f" at {at}" if at else " now"
        click.confirm(f"Switch over cluster {cluster.get('scope')} from {leader}{target}{when}?", abort=True)
    body = {"leader": leader, "candidate": candidate, "scheduled_at": at}
    try:
        answer = ctl.client.call("POST", "/switchover", {k: v for k, v in body.items() if v is not None})
    except ApiError as exc:
        raise _refused("switchover", exc) from None
    click.echo(error_text(answer))


@cli.command()
@click.option("--candidate", help="The member to promote.")
@click.option("--force", is_flag=True, help="Do not ask; fail over even if the primary looks healthy.")
@pass_ctl
def failover(ctl: Ctl, candidate: str | None, force: bool) -> None:
    """Manual failover to a replica when the primary is gone."""
    cluster = ctl.cluster()
    if not candidate:
        if force:
            raise CtlError("--candidate is required with --force")
        names = [m["name"] for m in cluster.get("members") or [] if m.get("role") not in ("leader", "witness")]
        candidate = click.prompt("Candidate", type=click.Choice(names)) if names else None
        if not candidate:
            raise CtlError("no candidate to fail over to")
    if not force:
        click.confirm(f"Fail over cluster {cluster.get('scope')} to {candidate}?", abort=True)
    try:
        answer = ctl.client.call("POST", "/failover", {"candidate": candidate, "force": force})
    except ApiError as exc:
        raise _refused("failover", exc) from None
    click.echo(error_text(answer))


def _wait_pause(ctl: Ctl, paused: bool, timeout_s: float = 60.0) -> None:
    """Until every data member's own status says paused (or resumed)."""
    deadline = time.monotonic() + timeout_s
    members = [m for m in ctl.cluster().get("members") or [] if m.get("api_url")]
    waiting = {m["name"] for m in members}
    while waiting and time.monotonic() < deadline:
        for member in members:
            if member["name"] in waiting:
                try:
                    if bool(ctl.member_client(member, unsafe=False).get("/patroni").get("pause")) == paused:
                        waiting.discard(member["name"])
                except ApiError:
                    pass
        if waiting:
            time.sleep(0.5)
    if waiting:
        raise CtlError(f"still waiting for {', '.join(sorted(waiting))} after {timeout_s:.0f}s")


def _set_pause(ctl: Ctl, paused: bool, wait: bool) -> None:
    cluster = ctl.cluster()
    if bool(cluster.get("pause")) == paused:
        raise CtlError(f"cluster {cluster.get('scope')} is {'already' if paused else 'not'} paused")
    ctl.client.call("PATCH", "/config", {"pause": paused})
    click.echo("Success: cluster management is " + ("paused" if paused else "resumed"))
    if wait:
        _wait_pause(ctl, paused)
        click.echo("Every member confirmed")


@cli.command()
@click.option("--wait", is_flag=True, help="Wait until every member runs in maintenance mode.")
@pass_ctl
def pause(ctl: Ctl, wait: bool) -> None:
    """Maintenance mode: the agents take no automatic action."""
    _set_pause(ctl, True, wait)


@cli.command()
@click.option("--wait", is_flag=True, help="Wait until every member has left maintenance mode.")
@pass_ctl
def resume(ctl: Ctl, wait: bool) -> None:
    """Leave maintenance mode."""
    _set_pause(ctl, False, wait)


@cli.command("edit-config")
@click.option("-s", "--set", "settings", multiple=True, help="key=value (dotted key; a null value deletes).")
@click.option("-p", "--pg", "parameters", multiple=True, help="PostgreSQL parameter name=value.")
@click.option("--force", is_flag=True, help="Apply without asking.")
@pass_ctl
def edit_config(ctl: Ctl, settings: tuple[str, ...], parameters: tuple[str, ...], force: bool) -> None:
    """Change the dynamic config: shows a diff and asks before applying."""
    before = ctl.client.get("/config")
    after = copy.deepcopy(before)
    for text in settings:
        key, value = parse_pair(text, "--set")
        assign(after, key.split("."), value)
    for text in parameters:
        key, value = parse_pair(text, "--pg")
        assign(after, ["postgresql", "parameters", key], value)
    if not settings and not parameters:
        edited = click.edit(out.to_yaml(before), extension=".yaml")
        if edited is None:
            click.echo("Not changed")
            return
        try:
            after = yaml.safe_load(edited) or {}
        except yaml.YAMLError as exc:
            raise CtlError(f"the edited config is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(after, dict):
            raise CtlError("the edited config must be a mapping of keys")
    if after == before:
        click.echo("Not changed")
        return
    click.echo(out.config_diff(before, after).rstrip())
    if not force:
        click.confirm("Apply these changes?", abort=True)
    try:
        ctl.client.call("PATCH", "/config", patch_between(before, after))
    except ApiError as exc:
        raise _refused("edit-config", exc) from None
    click.echo("Configuration changed")


# ------------------------------------------------------------------------------------ member operations


def _targets(ctl: Ctl, member: str | None) -> list[dict[str, Any]]:
    cluster = ctl.cluster()
    if member:
        return [ctl.member(cluster, member)]
    return [m for m in cluster.get("members") or [] if m.get("role") != "witness"]


def _run_on(ctl: Ctl, members: list[dict[str, Any]], what: str, path: str, body: dict[str, Any]) -> None:
    failed = []
    for member in members:
        try:
            client = ctl.member_client(member)
        except CtlError as exc:
            failed.append(member["name"])
            click.echo(f"Failed: {what} on member {member['name']}: {exc.message}")
            continue
        status, answer = client.request("POST", path, body)
        if status in (200, 202):
            click.echo(f"Success: {what} on member {member['name']}: {error_text(answer)}")
        else:
            failed.append(member["name"])
            click.echo(f"Failed: {what} on member {member['name']} ({status}): {error_text(answer)}")
    if failed:
        raise CtlError(f"{what} failed on {', '.join(failed)}")


@cli.command()
@click.argument("member", required=False)
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@click.option("--pending", is_flag=True, help="Only members with a pending restart.")
@click.option("--role", type=click.Choice(["primary", "replica", "any"]), default="any")
@click.option("--scheduled", help="When: an ISO-8601 time (local time if no zone is given).")
@click.option("--pg-version", help="Only members running an older PostgreSQL than this.")
@pass_ctl
def restart(ctl: Ctl, member: str | None, force: bool, pending: bool, role: str, scheduled: str | None,
            pg_version: str | None) -> None:
    """Restart PostgreSQL on MEMBER (every member if none is named)."""
    targets = _targets(ctl, member)
    names = ", ".join(m["name"] for m in targets)
    if not force:
        click.confirm(f"Restart PostgreSQL on {names}?", abort=True)
    body: dict[str, Any] = {"role": role}
    if pending:
        body["restart_pending"] = True
    if pg_version:
        body["postgres_version"] = pg_version
    if scheduled and parse_schedule(scheduled):
        body["schedule"] = parse_schedule(scheduled)
    _run_on(ctl, targets, "restart", "/restart", body)


@cli.command()
@click.argument("member", required=False)
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@pass_ctl
def reload(ctl: Ctl, member: str | None, force: bool) -> None:
    """Reload the configuration on MEMBER (every member if none is named)."""
    targets = _targets(ctl, member)
    if not force:
        click.confirm(f"Reload the configuration on {', '.join(m['name'] for m in targets)}?", abort=True)
    _run_on(ctl, targets, "reload", "/reload", {})


@cli.command()
@click.argument("member")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@pass_ctl
def reinit(ctl: Ctl, member: str, force: bool) -> None:
    """Throw away MEMBER's data and clone it again from the primary."""
    target = _targets(ctl, member)
    if not force:
        click.confirm(f"Reinitialize {member}? Its data directory is replaced by a fresh clone", abort=True)
    _run_on(ctl, target, "reinitialize", "/reinitialize", {"force": force})


# ------------------------------------------------------------------------------------ Raft membership


@cli.group(cls=CtlGroup, invoke_without_command=True)
@click.pass_context
def members(ctx: click.Context) -> None:
    """Raft membership of the embedded store: list, add, remove."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(members_list)


@members.command("list")
@fmt_option
@pass_ctl
def members_list(ctl: Ctl, fmt: str | None = None) -> None:
    """The Raft members as this node sees them."""
    raft = ctl.client.get("/raft/members")
    try:
        cluster = ctl.cluster()
    except ApiError:
        cluster = None
    rows = out.raft_rows(raft, cluster)
    click.echo(out.as_json(rows) if _fmt(ctl, fmt) == "json" else out.table(rows))


@members.command("add")
@click.argument("addr")
@pass_ctl
def members_add(ctl: Ctl, addr: str) -> None:
    """Add a Raft member (host:port); start its agent with this cluster as partners."""
    click.echo(error_text(ctl.client.call("POST", "/raft/members", {"addr": addr})))


@members.command("remove")
@click.argument("addr")
@pass_ctl
def members_remove(ctl: Ctl, addr: str) -> None:
    """Remove a Raft member (host:port); a node cannot remove itself, so another member is asked."""
    client = ctl.client
    raft = client.get("/raft/members")
    if any(m.get("self") and m.get("addr") == addr for m in raft.get("members") or []):
        others = sorted((m for m in ctl.cluster().get("members") or []
                         if m.get("api_url") and m.get("raft_addr") and m.get("raft_addr") != addr),
                        key=lambda m: not ctl.trusted(m))  # one the config vouches for, if any
        if not others:
            raise CtlError(f"no other member to ask to remove {addr}")
        client = ctl.member_client(others[0])
    path = "/raft/members/" + urllib.parse.quote(addr, safe="")
    click.echo(error_text(client.call("DELETE", path)))


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="raftpgctl")


__all__ = ["cli", "main"]
