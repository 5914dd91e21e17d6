"""raftpgctl: patronictl's verbs and command lines over the REST API.

It reads the node's config file (``-c``, ``RAFTPGCTL_CONFIG_FILE``, ``PATRONICTL_CONFIG_FILE``, or
patronictl's default path) for ``restapi.connect_address``, the credentials and the CA, talks to that
node's API (another member's when it does not answer: ``ctl_connect.py``), and for member-targeted verbs
(restart, reload, reinit, flush: ``ctl_members.py``) finds each member's ``api_url`` in ``GET /cluster``;
it sends the config's credentials only to members the config vouches for (``ctl_trust.py``). patronictl's
cluster name may come first (``list pgsql``); it must be the config's ``scope``. Exit status 0 on success;
otherwise one line ``raftpgctl: <reason>`` on stderr and a non-zero status (1 refused or failed, 2 usage).
"""

from __future__ import annotations

import copy
import sys
import time
import urllib.parse
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click
import yaml

from raftpg import __version__
from raftpg.api.client import ApiClient, ApiError, error_text
from raftpg.cli import ctl_cluster_mode, ctl_members, ctl_remove, ctl_sql
from raftpg.cli import ctl_output as out
from raftpg.cli.ctl_connect import FallbackApi
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


FORMATS = click.Choice(["pretty", "tsv", "json", "yaml", "yml"])


def fmt_option(fn: Any) -> Any:
    """``-f/--format`` on a read verb too (patronictl habit: ``list -f json``)."""
    return click.option("-f", "--format", "fmt", type=FORMATS, default=None,
                        help="Output format: pretty, tsv, json, yaml (overrides the global option).")(fn)


def _fmt(ctl: Ctl, fmt: str | None) -> str:
    return fmt or ctl.fmt


def _check_names(ctl: Ctl, names: tuple[str, ...]) -> None:
    for name in names:
        ctl.check_cluster_name(name)


@click.group(cls=CtlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config-file", "--config", "config_file",
              envvar=["RAFTPGCTL_CONFIG_FILE", "PATRONICTL_CONFIG_FILE"], type=click.Path(dir_okay=False),
              help="The node's config file [env RAFTPGCTL_CONFIG_FILE, PATRONICTL_CONFIG_FILE; default "
                   "patronictl's ~/.config/patroni/patronictl.yaml].")
@click.option("-f", "--format", "fmt", type=FORMATS, default="pretty", help="Output format.")
@click.option("-k", "--insecure", is_flag=True, help="Do not verify the REST API's TLS certificate.")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, fmt: str, insecure: bool) -> None:
    """Manage a raftpg cluster through its REST API."""
    ctx.obj = Ctl(config_file, fmt, insecure)


# ------------------------------------------------------------------------------------ read verbs


def _watching(w: bool, watch: float | None) -> Any:
    """patronictl's -W (every 2 s) and -w N: yield once, then every interval until interrupted."""
    interval = watch or (2.0 if w else None)
    yield
    while interval:
        time.sleep(interval)
        click.clear()
        yield


def _listing(ctl: Ctl, names: tuple[str, ...], fmt: str | None, extended: bool, ts: bool, w: bool,
             watch: float | None, topology: bool) -> None:
    _check_names(ctl, names)
    form = _fmt(ctl, fmt)
    if topology and form == "pretty":
        form = "topology"
    for _ in _watching(w, watch):
        if ts:
            click.echo(datetime.now().strftime("%Y-%m-%d %H:%M:%S"))
        click.echo(out.cluster_table(ctl.cluster(), topology, extended, form))


def listing_options(fn: Any) -> Any:
    options: list[Callable[[Any], Any]] = [  # click's decorators, applied bottom up
        click.argument("cluster_names", nargs=-1),
        click.option("-e", "--extended", is_flag=True, help="Show pending restarts, scheduled restarts, tags."),
        click.option("-t", "--timestamp", "ts", is_flag=True, help="Print a timestamp first."),
        fmt_option,
        click.option("-W", "w", is_flag=True, help="Refresh every 2 seconds."),
        click.option("-w", "--watch", type=float, help="Refresh every so many seconds."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@cli.command("list")
@listing_options
@pass_ctl
def list_(ctl: Ctl, cluster_names: tuple[str, ...], extended: bool, ts: bool, fmt: str | None, w: bool,
          watch: float | None) -> None:
    """Members of the cluster: role, state, timeline, receive and replay positions and lags."""
    _listing(ctl, cluster_names, fmt, extended, ts, w, watch, topology=False)


@cli.command()
@listing_options
@pass_ctl
def topology(ctl: Ctl, cluster_names: tuple[str, ...], extended: bool, ts: bool, fmt: str | None, w: bool,
             watch: float | None) -> None:
    """Members as a tree: the leader, then the replicas streaming from it."""
    _listing(ctl, cluster_names, fmt, extended, ts, w, watch, topology=True)


@cli.command()
@click.argument("cluster_name", required=False)
@fmt_option
@pass_ctl
def history(ctl: Ctl, cluster_name: str | None, fmt: str | None) -> None:
    """Timeline history: every promotion."""
    ctl.check_cluster_name(cluster_name)
    columns, rows = out.history_rows(ctl.client.get("/history"))
    click.echo(out.render(columns, rows, _fmt(ctl, fmt)))


@cli.command("show-config")
@click.argument("cluster_name", required=False)
@fmt_option
@pass_ctl
def show_config(ctl: Ctl, cluster_name: str | None, fmt: str | None) -> None:
    """The cluster-wide dynamic config stored in the DCS."""
    ctl.check_cluster_name(cluster_name)
    config = ctl.client.get("/config")
    click.echo(out.as_json(config) if _fmt(ctl, fmt) == "json" else out.to_yaml(config).rstrip())


@cli.command()
@click.argument("cluster_name", required=False)
@click.argument("member_names", nargs=-1)
@pass_ctl
def version(ctl: Ctl, cluster_name: str | None, member_names: tuple[str, ...]) -> None:
    """raftpgctl's version; with the cluster name, each member's (or the named members')."""
    click.echo(f"raftpgctl version {__version__}")
    if not cluster_name:
        return
    ctl.check_cluster_name(cluster_name)
    try:
        cluster = ctl.cluster()
    except (ApiError, CtlError) as exc:
        click.echo(f"(cluster not reachable: {getattr(exc, 'message', exc)})")
        return
    for member in cluster.get("members") or []:
        if member_names and member["name"] not in member_names:
            continue
        click.echo(f"{member['name']}: raftpg {member.get('version') or 'unknown'}")


# ------------------------------------------------------------------------------------ cluster operations


def _refused(what: str, exc: ApiError) -> CtlError:
    return CtlError(f"{what} failed: {exc.detail}")


@cli.command()
@click.argument("cluster_name", required=False)
@click.option("--leader", "--primary", "leader", help="The current leader (default: as the cluster says).")
@click.option("--candidate", help="The member to promote (default: the best eligible one).")
@click.option("--scheduled", help="When: 'now' or an ISO-8601 time (local time if no zone is given).")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@pass_ctl
def switchover(ctl: Ctl, cluster_name: str | None, leader: str | None, candidate: str | None,
               scheduled: str | None, force: bool) -> None:
    """Planned switchover: the primary hands over to a replica."""
    ctl.check_cluster_name(cluster_name)
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
@click.argument("cluster_name", required=False)
@click.option("--candidate", help="The member to promote.")
@click.option("--force", is_flag=True, help="Do not ask; fail over even if the primary looks healthy.")
@pass_ctl
def failover(ctl: Ctl, cluster_name: str | None, candidate: str | None, force: bool) -> None:
    """Manual failover to a replica when the primary is gone."""
    ctl.check_cluster_name(cluster_name)
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
@click.argument("cluster_name", required=False)
@click.option("--wait", is_flag=True, help="Wait until every member runs in maintenance mode.")
@pass_ctl
def pause(ctl: Ctl, cluster_name: str | None, wait: bool) -> None:
    """Maintenance mode: the agents take no automatic action."""
    ctl.check_cluster_name(cluster_name)
    _set_pause(ctl, True, wait)


@cli.command()
@click.argument("cluster_name", required=False)
@click.option("--wait", is_flag=True, help="Wait until every member has left maintenance mode.")
@pass_ctl
def resume(ctl: Ctl, cluster_name: str | None, wait: bool) -> None:
    """Leave maintenance mode."""
    ctl.check_cluster_name(cluster_name)
    _set_pause(ctl, False, wait)


@cli.command("edit-config")
@click.argument("cluster_name", required=False)
@click.option("-q", "--quiet", is_flag=True, help="Do not show the changes.")
@click.option("-s", "--set", "settings", multiple=True, help="key=value (dotted key; a null value deletes).")
@click.option("-p", "--pg", "parameters", multiple=True, help="PostgreSQL parameter name=value.")
@click.option("--apply", "apply_file", help="Merge the YAML in this file into the config ('-': stdin).")
@click.option("--replace", "replace_file", help="Replace the config with the YAML in this file ('-': stdin).")
@click.option("--force", is_flag=True, help="Apply without asking.")
@pass_ctl
def edit_config(ctl: Ctl, cluster_name: str | None, quiet: bool, settings: tuple[str, ...],
                parameters: tuple[str, ...], apply_file: str | None, replace_file: str | None, force: bool) -> None:
    """Change the dynamic config: shows a diff and asks before applying."""
    ctl.check_cluster_name(cluster_name)
    if apply_file and replace_file:
        raise CtlError("--apply and --replace are mutually exclusive")
    before = ctl.client.get("/config")
    after = _read_yaml(replace_file) if replace_file else copy.deepcopy(before)
    if apply_file:
        _merge(after, _read_yaml(apply_file))
    for text in settings:
        key, value = parse_pair(text, "--set")
        assign(after, key.split("."), value)
    for text in parameters:
        key, value = parse_pair(text, "--pg")
        assign(after, ["postgresql", "parameters", key], value)
    if not (settings or parameters or apply_file or replace_file):
        after = _edit(before)
        if after is None:
            click.echo("Not changed")
            return
    if after == before:
        if not quiet:
            click.echo("Not changed")
        return
    if not quiet:
        click.echo(out.config_diff(before, after).rstrip())
    if not force and not click.confirm("Apply these changes?"):
        raise CtlError("Aborted: the config was not changed")
    try:
        if replace_file:
            ctl.client.call("PUT", "/config", after)
        else:
            ctl.client.call("PATCH", "/config", patch_between(before, after))
    except ApiError as exc:
        raise _refused("edit-config", exc) from None
    click.echo("Configuration changed")


def _read_yaml(path: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()  # noqa: SIM115
        document = yaml.safe_load(text) or {}
    except OSError as exc:
        raise CtlError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise CtlError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(document, dict):
        raise CtlError(f"{path} must hold a mapping of keys")
    return document


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        elif value is None:
            target.pop(key, None)
        else:
            target[key] = value


def _edit(before: dict[str, Any]) -> dict[str, Any] | None:
    edited = click.edit(out.to_yaml(before), extension=".yaml")
    if edited is None:
        return None
    try:
        after = yaml.safe_load(edited) or {}
    except yaml.YAMLError as exc:
        raise CtlError(f"the edited config is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(after, dict):
        raise CtlError("the edited config must be a mapping of keys")
    return after


# ------------------------------------------------------------------------------------ member operations

for _command in (*ctl_members.COMMANDS, *ctl_cluster_mode.COMMANDS, ctl_sql.dsn, ctl_sql.query, ctl_remove.remove):
    cli.add_command(_command)


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
    client: ApiClient | FallbackApi = ctl.client
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
