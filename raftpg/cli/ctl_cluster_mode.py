"""``raftpgctl demote-cluster`` and ``promote-cluster`` (Patroni 4's verbs): turn the cluster into a standby
cluster of another primary, or back into a cluster with its own primary. Both change ``standby_cluster``
in the dynamic config (``PATCH /config``); the agents do the rest (raftpg.ha.standby).
"""

from __future__ import annotations

from typing import Any

import click

from raftpg.api.client import ApiError
from raftpg.cli.ctl_support import Ctl, CtlError

pass_ctl = click.make_pass_decorator(Ctl)


def _patch(ctl: Ctl, document: dict[str, Any]) -> None:
    try:
        ctl.client.call("PATCH", "/config", document)
    except ApiError as exc:
        raise CtlError(f"could not change the config: {exc.detail}") from None


@click.command("demote-cluster")
@click.argument("cluster_name", required=False)
@click.option("--host", required=True, help="The source cluster's primary (or standby leader) to replicate from.")
@click.option("--port", type=click.IntRange(1, 65535), default=5432, show_default=True)
@click.option("--primary-slot-name", help="A physical replication slot on the source for the standby leader.")
@click.option("--restore-command", help="The standby leader's restore_command (WAL from an archive).")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@pass_ctl
def demote_cluster(ctl: Ctl, cluster_name: str | None, host: str, port: int, primary_slot_name: str | None,
                   restore_command: str | None, force: bool) -> None:
    """Make this cluster a standby cluster of HOST:PORT: its primary restarts as the standby leader."""
    ctl.check_cluster_name(cluster_name)
    config = ctl.client.get("/config")
    if isinstance(config, dict) and config.get("standby_cluster"):
        raise CtlError("Cluster is already in the standby mode")
    source: dict[str, Any] = {"host": host, "port": port}
    if primary_slot_name:
        source["primary_slot_name"] = primary_slot_name
    if restore_command:
        source["restore_command"] = restore_command
    if not force:
        click.confirm(f"Demote cluster {ctl.scope} to a standby cluster of {host}:{port}?", abort=True)
    _patch(ctl, {"standby_cluster": source})
    click.echo(f"Success: cluster {ctl.scope} is now a standby cluster of {host}:{port}")


@click.command("promote-cluster")
@click.argument("cluster_name", required=False)
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@pass_ctl
def promote_cluster(ctl: Ctl, cluster_name: str | None, force: bool) -> None:
    """Stop replicating from the source: the standby leader is promoted to this cluster's primary."""
    ctl.check_cluster_name(cluster_name)
    config = ctl.client.get("/config")
    if not (isinstance(config, dict) and config.get("standby_cluster")):
        raise CtlError("Cluster is not in the standby mode")
    if not force:
        click.confirm(f"Promote standby cluster {ctl.scope}?", abort=True)
    _patch(ctl, {"standby_cluster": None})
    click.echo(f"Success: standby cluster {ctl.scope} is being promoted")


COMMANDS = (demote_cluster, promote_cluster)
