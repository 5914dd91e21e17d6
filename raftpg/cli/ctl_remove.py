"""``raftpgctl remove CLUSTER_NAME``: delete every key of the cluster from the DCS, behind patronictl's
three confirmations (the cluster name, the sentence "Yes I am aware", and the leader's name while the
cluster has one). It neither stops PostgreSQL nor touches a data directory.

With the embedded Raft the DCS lives in the running agents, so the request goes to one of them
(``DELETE /cluster``), repeating the scope and the leader the operator confirmed: a cluster whose leader
changed between the prompt and the request is not wiped. Agents that keep running register again at
once; a running primary registers its own data (only a former primary may) and the others follow it.
"""

from __future__ import annotations

import click

from raftpg.api.client import ApiError, error_text
from raftpg.cli import ctl_output as out
from raftpg.cli.ctl_support import Ctl, CtlError

pass_ctl = click.make_pass_decorator(Ctl)
AWARE = "Yes I am aware"


@click.command()
@click.argument("cluster_name")
@click.option("-f", "--format", "fmt", type=click.Choice(["pretty", "tsv", "json", "yaml", "yml"]), default=None,
              help="Output format of the member table shown first.")
@pass_ctl
def remove(ctl: Ctl, cluster_name: str, fmt: str | None) -> None:
    """Remove the cluster's state from the DCS (asks three times; there is no --force)."""
    ctl.check_cluster_name(cluster_name)
    cluster = ctl.cluster()
    click.echo(out.cluster_table(cluster, False, False, fmt or ctl.fmt))
    if click.prompt("Please confirm the cluster name to remove", type=str) != cluster_name:
        raise CtlError("Cluster names specified do not match")
    if click.prompt(f'You are about to remove all information in DCS for {cluster_name}, please type: "{AWARE}"',
                    type=str) != AWARE:
        raise CtlError(f'You did not exactly type "{AWARE}"')
    leader = cluster.get("leader") or None
    if leader and click.prompt("This cluster currently is healthy. Please specify the leader name to continue",
                               type=str) != leader:
        raise CtlError("You did not specify the current leader of the cluster")
    try:
        answer = ctl.client.call("DELETE", "/cluster", {"scope": cluster_name, "leader": leader})
    except ApiError as exc:
        raise CtlError(f"remove failed: {exc.detail}") from None
    click.echo(error_text(answer))
