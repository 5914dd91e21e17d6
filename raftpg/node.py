"""The composition root: build every part of one node from a Config and run it until a signal.

Nothing else constructs its own dependencies. Threads: the HA loop runs on its own thread (blocking
DCS and PostgreSQL calls, each bounded); the REST API runs on the main thread's asyncio loop and only
reads the loop's last NodeStatus, so health checks never wait on PostgreSQL or the DCS.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
from typing import Any

from raftpg import __version__
from raftpg.clock import Clock, SystemClock
from raftpg.config import Config, dcs_kind, load_config
from raftpg.consensus.raft import RaftSettings as ConsensusSettings
from raftpg.dcs.base import Dcs
from raftpg.dcs.keys import KeyLayout
from raftpg.ha.inputs import Me
from raftpg.ha.loop import HaLoop
from raftpg.model import DynamicConfig, LocalState, NodeStatus
from raftpg.pg.control import Postgres
from raftpg.pg.from_config import cluster_section, pg_settings_from_config
from raftpg.pg.settings import PgSettings
from raftpg.pg.slots import slot_name_for
from raftpg.watchdog.base import ModeWatchdog, NullWatchdog

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ PostgreSQL, as the HA loop sees it


class PostgresAdapter:
    def __init__(self, config: Config, clock: Clock) -> None:
        self._config = config
        self._cluster: dict[str, Any] | None = None  # the cluster-wide postgresql section last applied
        self.cluster_config: DynamicConfig | None = None  # the DCS config the HA loop last read (Node sets it)
        self.pg = Postgres(pg_settings_from_config(config), clock)

    @property
    def settings(self) -> PgSettings:
        return self.pg.settings

    def observe(self) -> LocalState:
        return self.pg.observe()

    def probe(self) -> LocalState:
        return self.pg.probe()

    def initdb(self) -> None:
        self.pg.initdb()

    def post_bootstrap(self) -> str:
        return self.pg.post_bootstrap()

    def finish_bootstrap(self) -> None:
        self.pg.finish_bootstrap()

    def start(self, primary_conn_url: str | None, slot_name: str | None, *, as_replica: bool,
              timeout_s: float, fence_deadline: float | None = None) -> None:
        self.pg.start(primary_conn_url, slot_name, timeout_s=timeout_s, fence_deadline=fence_deadline,
                      replica=as_replica)

    def stop(self, mode: str, timeout_s: float) -> None:
        self.pg.stop(mode, timeout_s)

    def restart(self, timeout_s: float, fence_deadline: float | None = None) -> None:
        self.pg.restart(timeout_s, fence_deadline=fence_deadline)

    def reload(self) -> None:
        self.pg.reload()

    def promote(self, timeout_s: float) -> None:
        self.pg.promote(timeout_s)

    def checkpoint(self, timeout_s: float = 60.0) -> None:
        self.pg.checkpoint(timeout_s)

    def follow(self, primary_conn_url: str, slot_name: str | None) -> None:
        self.pg.follow(primary_conn_url, slot_name)

    def clone(self, source_conn_url: str, timeout_s: float) -> None:
        self.pg.clone(source_conn_url, timeout_s)

    def rewind(self, source_conn_url: str, timeout_s: float) -> bool:
        return self.pg.rewind(source_conn_url, timeout_s)

    def move_data_aside(self) -> str:
        return self.pg.move_data_aside()

    def can_reach(self, conn_url: str) -> bool:
        address = conn_url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port or 5432)), timeout=2.0):
                return True
        except (OSError, ValueError):
            return False

    def ensure_slots(self, names: set[str]) -> None:
        self.pg.ensure_slots(names)

    def set_synchronous_standby_names(self, value: str) -> None:
        self.pg.set_synchronous_standby_names(value)

    def run_callback(self, action: str, role: str) -> None:
        self.pg.run_callback(action, role)

    def fence_at(self, deadline: float) -> None:
        self.pg.fence_at(deadline)

    def publish_epoch(self, epoch: int) -> None:
        self.pg.publish_epoch(epoch)

    def unlimited(self) -> None:
        self.pg.unlimited()

    def slot_name_for(self, member: str) -> str:
        return slot_name_for(member)

    def apply_dynamic_parameters(self, parameters: dict[str, str]) -> bool:
        """The cluster-wide ``postgresql`` section from the DCS changed (``parameters``; ``pg_hba``,
        ``pg_ident`` and ``recovery_conf`` from the config the loop last read): rewrite the files and reload.
        The local file wins. True if anything changed."""
        cluster = {**cluster_section(self._config, self.cluster_config), "parameters": dict(parameters)}
        if cluster == self._cluster:
            return False
        self._cluster = cluster
        self.pg.reload(pg_settings_from_config(self._config, cluster))
        return True

    def reconfigure(self, config: Config) -> None:
        """SIGHUP: the config file changed."""
        self._config = config
        self.pg.reload(pg_settings_from_config(config, self._cluster))

    def close(self) -> None:
        self.pg.close()


class NodeError(Exception):
    """The node cannot start; the message says why (and names the config key when it is one)."""


def consensus_settings(config: Config, force_new_cluster: bool = False) -> ConsensusSettings:
    raft = config.raft
    assert raft is not None
    return ConsensusSettings(self_addr=raft.self_addr, partner_addrs=tuple(raft.partner_addrs),
                             data_dir=raft.data_dir, bind_addr=raft.bind_addr, password=raft.password or None,
                             fsync=raft.fsync, force_new_cluster=force_new_cluster)


def build_dcs(config: Config, clock: Clock, force_new_cluster: bool = False) -> tuple[Dcs, Any]:
    """The DCS the config names, and the embedded Raft node when it is the store (the API shows its
    status and changes its membership; the DCS port knows nothing of Raft)."""
    layout = KeyLayout(config.namespace, config.scope)
    kind = dcs_kind(config)
    if kind == "raft":
        from raftpg.consensus.raft import RaftNode
        from raftpg.dcs.kvdcs import KvDcs
        raft = RaftNode(consensus_settings(config, force_new_cluster), clock)
        return KvDcs(raft, layout, owns_kv=True, fallback_config=config.bootstrap.dcs.to_model()), raft
    if kind == "etcd3":
        from raftpg.dcs.etcd import etcd_dcs
        return etcd_dcs(config, layout), None
    from raftpg.dcs.consul import consul_dcs
    return consul_dcs(config, layout), None


def build_me(config: Config) -> Me:
    tags = config.tags.to_model()
    scheme = "https" if config.restapi.certfile else "http"
    api_url = f"{scheme}://{config.restapi.connect_address}/patroni"
    conn_url = None
    if config.postgresql is not None and not config.witness:
        conn_url = f"postgres://{config.postgresql.connect_address}/postgres"
    raft_addr = config.raft.self_addr if config.raft else None
    return Me(name=config.name, witness=config.witness, tags=tags, api_url=api_url, conn_url=conn_url,
              raft_addr=raft_addr)


def build_watchdog(config: Config) -> Any:
    if config.witness or config.watchdog.mode == "off":
        return NullWatchdog()
    from raftpg.watchdog.linux import LinuxWatchdog
    return ModeWatchdog(LinuxWatchdog(config.watchdog.device), config.watchdog.mode)


def bootstrap_dcs_document(config: Config) -> dict[str, Any]:
    return config.bootstrap.dcs.model_dump(mode="json", exclude_none=True)


def check_data_dir(config: Config) -> None:
    """Refuse, with one line naming ``postgresql.data_dir``, a data directory PostgreSQL would refuse at every
    start: owned by another user, open to group writes or to others, or made by another major version."""
    from raftpg.pg.controldata import data_dir_problem
    from raftpg.pg.tools import server_major_version

    pg = config.postgresql
    if pg is None:
        return
    bin_dir = pg.resolve_bin_dir()
    problem = data_dir_problem(pg.data_dir, server_major_version(bin_dir) if bin_dir else None)
    if problem:
        raise NodeError(problem)


class Node:
    def __init__(self, config: Config, config_path: str | None = None, clock: Clock | None = None,
                 force_new_cluster: bool = False) -> None:
        if os.geteuid() == 0 and not config.witness:
            raise NodeError("PostgreSQL refuses to run as root: run raftpg as the OS user that owns the "
                            "data directory (for example: runuser -u postgres -- raftpg CONFIG.yml)")
        if not config.witness:
            check_data_dir(config)
        self.config = config
        self.config_path = config_path
        self.clock = clock or SystemClock()
        self._status_lock = threading.Lock()
        self._status = NodeStatus(config.name, config.witness)
        self.dcs, self.raft = build_dcs(config, self.clock, force_new_cluster)
        self.pg = None if config.witness else PostgresAdapter(config, self.clock)
        self.loop = HaLoop(dcs=self.dcs, pg=self.pg, watchdog=build_watchdog(config), clock=self.clock,
                           me=build_me(config), bootstrap_dcs=bootstrap_dcs_document(config),
                           version=__version__, on_status=self._set_status, raft_status=self.raft_status,
                           watchdog_safety_margin_s=config.watchdog.safety_margin)
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------- status for the API
    def _set_status(self, status: NodeStatus) -> None:
        with self._status_lock:
            self._status = status
        if self.pg is not None and status.view is not None:  # pg_hba/pg_ident from edit-config: next cycle
            self.pg.cluster_config = status.view.config

    def status(self) -> NodeStatus:
        with self._status_lock:
            return self._status

    def raft_status(self) -> dict[str, Any] | None:
        """The embedded Raft node's status for the API (None with etcd/Consul); best effort."""
        if self.raft is None:
            return None
        try:
            return self.raft.status().to_dict()
        except Exception:  # noqa: BLE001 - status is for humans; a failing read must not fail a request
            return None

    # -------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self.loop.run, name="ha-loop", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 180.0) -> None:
        self.loop.stop()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self.pg is not None:
            self.pg.close()
        self.dcs.close()

    def reload(self) -> None:
        """SIGHUP: re-read the file; settings that can change at run time take effect next cycle."""
        if not self.config_path:
            return
        try:
            new = load_config(self.config_path, environ=self.config.environ)
        except Exception as exc:  # noqa: BLE001 - a bad edit must not kill a running node
            log.error("config reload failed, keeping the running config: %s", exc)
            return
        for warning in new.warnings:
            log.warning("%s", warning)
        self.config = new
        if self.pg is not None:
            self.pg.reconfigure(new)
            self.loop.request("reload")
        log.info("config reloaded from %s", self.config_path)

    @property
    def fatal(self) -> str | None:
        return self.loop.fatal


async def start_api(node: Node) -> Any:
    """Start the REST API on the node's restapi.listen; returns the aiohttp runner to clean up."""
    from raftpg.api.wiring import start_api as start

    return await start(node)


async def serve(node: Node) -> int:
    """Run the node and its REST API until SIGTERM/SIGINT; SIGHUP reloads the config."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, node.reload)
    runner = await start_api(node)
    node.start()
    try:
        while not stopping.is_set():
            if node.loop.fatal or (node._thread is not None and not node._thread.is_alive()):
                break
            try:
                await asyncio.wait_for(stopping.wait(), timeout=0.5)
            except TimeoutError:
                pass
    finally:
        log.info("shutting down")
        await asyncio.to_thread(node.stop)
        await runner.cleanup()
    if node.fatal:
        log.critical("stopped: %s", node.fatal)
        return 1
    return 0
