"""``raftpg [CONFIG]`` | ``--validate-config`` | ``--generate-sample-config`` | ``--generate-config`` | ``--version``
| ``raftpg demo``.

CONFIG is a YAML file or a directory of them; without it the config comes from ``PATRONI_CONFIGURATION``
or the ``PATRONI_*``/``RAFTPG_*`` variables (``raftpg.config.environment``). The variables read are then
removed from the agent's environment, so PostgreSQL and callbacks do not inherit passwords (as Patroni).

Under systemd (``Type=notify``, contrib/raftpg.service) ``READY=1`` is sent once the REST API listens and
the first HA cycle has run, ``STOPPING=1`` when a stop begins.

Exit codes: 0 clean stop; 1 the node stopped for a safety reason (a foreign data dir); 2 the config or
the command line is wrong (the message names the key).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import TYPE_CHECKING

from raftpg import __version__

if TYPE_CHECKING:  # imported where used, so that --help and --version stay quick
    from raftpg.config import Config
    from raftpg.node import Node


def _load(path: str | None) -> Config | None:
    from raftpg.config import ConfigError, load_config
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"raftpg: invalid config {exc.source}:\n{exc}", file=sys.stderr)
        return None
    except OSError as exc:
        print(f"raftpg: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return None


async def _serve_with_notify(node: Node, notify_socket: str | None) -> int:
    """``serve(node)``, telling systemd READY=1 once the first HA cycle ran (the API listens by then: serve
    starts it before the loop) and STOPPING=1 when serve returns."""
    from raftpg.cli.sdnotify import notify
    from raftpg.node import serve

    environ = {"NOTIFY_SOCKET": notify_socket} if notify_socket else {}

    async def ready() -> None:
        while node.status().cycles < 1:
            await asyncio.sleep(0.05)
        notify(f"READY=1\nSTATUS=raftpg {__version__}: {node.config.name} in cluster {node.config.scope}", environ)

    watcher = asyncio.create_task(ready())
    try:
        return await serve(node)
    finally:
        watcher.cancel()
        notify("STOPPING=1", environ)


def run_node(path: str | None, force_new_cluster: bool = False) -> int:
    # httpx (the etcd and Consul adapters' client) imports its own command-line tool whenever rich and
    # pygments happen to be installed: about 4 MB resident an agent never uses. A None entry makes that one
    # import fail, which httpx expects (it then offers only a stub ``httpx`` command).
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    config = _load(path)
    if config is None:
        return 2
    for name in config.environ:
        os.environ.pop(name, None)
    # ours alone: a postmaster built with systemd support that inherited it would tell systemd READY=1 (and
    # STOPPING=1) itself, before the agent is ready or while it is not stopping
    notify_socket = os.environ.pop("NOTIFY_SOCKET", None)
    from raftpg.logconfig import configure
    configure(config.log, config.name)
    from raftpg.clock import repair_sleep
    repair_sleep()
    log = logging.getLogger("raftpg")
    for warning in config.warnings:
        log.warning("%s", warning)
    from raftpg.consensus.settings import RaftConfigError
    from raftpg.node import Node, NodeError
    try:
        node = Node(config, config_path=path, force_new_cluster=force_new_cluster)
    except (NodeError, RaftConfigError, ValueError) as exc:
        log.error("cannot start: %s", exc)
        print(f"raftpg: cannot start: {exc}", file=sys.stderr)
        return 2
    log.info("raftpg %s starting: %s in cluster %s", __version__, config.name, config.scope)
    return asyncio.run(_serve_with_notify(node, notify_socket))


def validate(path: str | None) -> int:
    config = _load(path)
    if config is None:
        return 2
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{path or 'environment'}: valid ({config.name} in cluster {config.scope})")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:
        from raftpg.cli.demo import main as demo_main
        return demo_main(argv[1:])
    parser = argparse.ArgumentParser(prog="raftpg", description="PostgreSQL high availability with an "
                                     "embedded Raft store. Subcommand: 'raftpg demo' runs a local cluster.")
    parser.add_argument("config", nargs="?", help="the YAML config of this node: a file, or a directory of "
                        "*.yml files merged in name order (default: PATRONI_CONFIGURATION / PATRONI_* variables)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--validate-config", action="store_true", help="check the config and exit")
    group.add_argument("--generate-sample-config", action="store_true",
                       help="write a commented sample config to CONFIG (or stdout) and exit")
    group.add_argument("--generate-config", action="store_true",
                       help="write a config for the running PostgreSQL that --dsn reaches to CONFIG (or stdout)")
    parser.add_argument("--dsn", help="with --generate-config: libpq connection string (default: PG* variables)")
    parser.add_argument("--version", action="version", version=f"raftpg {__version__}")
    parser.add_argument("--force-new-cluster", action="store_true",
                        help="majority of Raft members permanently lost: form a new one-node Raft group from "
                             "this node's data (one-shot; wipe the lost members' raft data before re-adding)")
    args = parser.parse_args(argv)
    if args.generate_sample_config or args.generate_config:
        from raftpg.cli.genconfig import main as generate
        return generate(args.generate_sample_config, args.config, args.dsn)
    if args.validate_config:
        return validate(args.config)
    return run_node(args.config, args.force_new_cluster)


if __name__ == "__main__":
    raise SystemExit(main())
