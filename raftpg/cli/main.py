"""``raftpg CONFIG.yml`` | ``raftpg --validate-config CONFIG.yml`` | ``raftpg --version`` | ``raftpg demo``.

Exit codes: 0 clean stop; 1 the node stopped for a safety reason (a foreign data dir); 2 the config or
the command line is wrong (the message names the key).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from raftpg import __version__


def _setup_logging(level: str, fmt: str, directory: str | None, name: str) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if directory:
        import os
        os.makedirs(directory, exist_ok=True)
        handlers = [logging.FileHandler(os.path.join(directory, f"raftpg-{name}.log"))]
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), format=fmt, handlers=handlers,
                        force=True)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _load(path: str):  # noqa: ANN202 - returns Config
    from raftpg.config import ConfigError, load_config
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"raftpg: invalid config {path}:\n{exc}", file=sys.stderr)
        return None
    except OSError as exc:
        print(f"raftpg: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return None


def run_node(path: str, force_new_cluster: bool = False) -> int:
    config = _load(path)
    if config is None:
        return 2
    _setup_logging(config.log.level, config.log.format, config.log.dir, config.name)
    from raftpg.clock import repair_sleep
    repair_sleep()
    log = logging.getLogger("raftpg")
    for warning in config.warnings:
        log.warning("%s", warning)
    from raftpg.consensus.raft import RaftConfigError
    from raftpg.node import Node, NodeError, serve
    try:
        node = Node(config, config_path=path, force_new_cluster=force_new_cluster)
    except (NodeError, RaftConfigError, ValueError) as exc:
        log.error("cannot start: %s", exc)
        print(f"raftpg: cannot start: {exc}", file=sys.stderr)
        return 2
    log.info("raftpg %s starting: %s in cluster %s", __version__, config.name, config.scope)
    return asyncio.run(serve(node))


def validate(path: str) -> int:
    config = _load(path)
    if config is None:
        return 2
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{path}: valid ({config.name} in cluster {config.scope})")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:
        from raftpg.cli.demo import main as demo_main
        return demo_main(argv[1:])
    parser = argparse.ArgumentParser(prog="raftpg", description="PostgreSQL high availability with an "
                                     "embedded Raft store. Subcommand: 'raftpg demo' runs a local cluster.")
    parser.add_argument("config", nargs="?", help="the YAML config file of this node")
    parser.add_argument("--validate-config", action="store_true", help="check the config file and exit")
    parser.add_argument("--version", action="version", version=f"raftpg {__version__}")
    parser.add_argument("--force-new-cluster", action="store_true",
                        help="majority of Raft members permanently lost: form a new one-node Raft group from "
                             "this node's data (one-shot; wipe the lost members' raft data before re-adding)")
    args = parser.parse_args(argv)
    if not args.config:
        parser.print_usage(sys.stderr)
        print("raftpg: error: a config file is required (or 'raftpg demo')", file=sys.stderr)
        return 2
    if args.validate_config:
        return validate(args.config)
    return run_node(args.config, args.force_new_cluster)


if __name__ == "__main__":
    raise SystemExit(main())
