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
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from raftpg import __version__
from raftpg.api.peers import RestPeers
from raftpg.clock import Clock, SystemClock
from raftpg.config import Config, dcs_kind, load_config
from raftpg.consensus.api import KvError, KvTimeout, RaftStatus
from raftpg.consensus.settings import RaftSettings as ConsensusSettings
from raftpg.dcs.base import Dcs
from raftpg.dcs.keys import KeyLayout
from raftpg.ha.inputs import Me
from raftpg.ha.loop import HaLoop
from raftpg.model import DynamicConfig, NodeStatus
from raftpg.pg.control import Postgres
from raftpg.pg.from_config import cluster_section, pg_settings_from_config, replica_methods
from raftpg.pg.settings import PgSettings
from raftpg.watchdog.base import ModeWatchdog, NullWatchdog

if TYPE_CHECKING:  # pysyncobj and cryptography (~9 MB resident) are imported only by a node whose store is Raft
    from raftpg.consensus.raft import RaftNode

log = logging.getLogger(__name__)
RAFT_HANDOVER_S = 2.0  # how long a stopping Raft leader tries to hand leadership over
HANDOVER_RETRY_S = 0.02  # between refused attempts (the target is an entry behind for milliseconds)
HANDOVER_ATTEMPT_S = 0.5  # a sent transfer that shows no new leader by then has failed (hand_over)


# ------------------------------------------------------------------ PostgreSQL, as the HA loop sees it


def build_postgres(config: Config, clock: Clock, bin_dir: str | None = None) -> Postgres:
    """The PostgreSQL manager for this member; it derives its settings from ``config`` and whatever
    cluster-wide config the HA loop applies (the local file wins). ``bin_dir``: see ``settings_for``."""
    return Postgres(pg_settings_from_config(config, bin_dir=bin_dir), clock,
                    settings_for=settings_for(config, bin_dir))


def settings_for(config: Config, bin_dir: str | None = None) -> Callable[[DynamicConfig | None], PgSettings]:
    """``bin_dir``: the installation found when the agent started, used while ``postgresql.bin_dir`` is
    unset. Found once, not at every derivation (the HA loop derives every cycle): installing a newer major
    version beside a running node, the first step of an upgrade, must not switch this node's postgres,
    pg_ctl and pg_rewind to binaries that cannot run its data directory."""
    def derive(cluster: DynamicConfig | None) -> PgSettings:
        return pg_settings_from_config(config, cluster_section(config, cluster), bin_dir=bin_dir)
    return derive


class NodeError(Exception):
    """The node cannot start; the message says why (and names the config key when it is one)."""


def consensus_settings(config: Config, force_new_cluster: bool = False) -> ConsensusSettings:
    raft = config.raft
    assert raft is not None and raft.self_addr is not None  # what a valid config with a raft section holds
    return ConsensusSettings(self_addr=raft.self_addr, partner_addrs=tuple(raft.partner_addrs),
                             data_dir=raft.data_dir, bind_addr=raft.bind_addr, password=raft.password or None,
                             fsync=raft.fsync, force_new_cluster=force_new_cluster)


def build_dcs(config: Config, clock: Clock, force_new_cluster: bool = False) -> tuple[Dcs, RaftNode | None]:
    """The DCS the config names, and the embedded Raft node when it is the store (the API shows its
    status and changes its membership; the DCS port knows nothing of Raft)."""
    layout = KeyLayout(config.namespace, config.scope)
    kind = dcs_kind(config)
    if kind == "raft":
        from raftpg.consensus.raft import RaftNode
        from raftpg.dcs.base import RAFT_FAILSAFE_REFUSAL
        from raftpg.dcs.kvdcs import KvDcs
        raft = RaftNode(consensus_settings(config, force_new_cluster), clock)
        return KvDcs(raft, layout, owns_kv=True, fallback_config=config.bootstrap.dcs.to_model(),
                     failsafe_refusal=RAFT_FAILSAFE_REFUSAL), raft
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
    no_leader = config.postgresql is not None and not config.witness and \
        any(method.no_leader for method in replica_methods(config))
    return Me(name=config.name, witness=config.witness, tags=tags, api_url=api_url, conn_url=conn_url,
              raft_addr=raft_addr, clone_without_leader=no_leader)


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
        # the PostgreSQL installation this node runs, found once (settings_for says why)
        self._bin_dir = None if config.witness or config.postgresql is None else config.postgresql.resolve_bin_dir()
        self.pg = None if config.witness else build_postgres(config, self.clock, self._bin_dir)
        peers = RestPeers(config.restapi)
        self.loop = HaLoop(dcs=self.dcs, pg=self.pg, watchdog=build_watchdog(config), clock=self.clock,
                           me=build_me(config), bootstrap_dcs=bootstrap_dcs_document(config),
                           version=__version__, on_status=self._set_status, raft_status=self.raft_status,
                           watchdog_safety_margin_s=config.watchdog.safety_margin, clone_in_background=True,
                           failsafe_peers=peers, position_peers=peers)
        if self.pg is not None:
            self.pg.on_exit = self.loop.wake  # a crashed postmaster: look now, not at the next cycle
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------- status for the API
    def _set_status(self, status: NodeStatus) -> None:
        with self._status_lock:
            self._status = status

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
        self._hand_raft_leadership_over()
        self.dcs.close()

    def _hand_raft_leadership_over(self) -> None:
        """A clean stop of the Raft leader: hand leadership to the most caught-up peer first, so the
        replica that takes the released leader key does not wait out an election (measured: a clean stop
        of a primary that also led Raft took 2.5-2.9 s to the next write, against 0.9 s otherwise). The
        transfer is confirmed only when this node sees the new leader; when it does not within
        ``RAFT_HANDOVER_S`` (seen in tests), this Raft node has still served the replicas' takeover of the
        released key meanwhile, which is what the handover is for."""
        if self.raft is None:
            return
        try:
            status = self.raft.status()
            if status.state == "leader" and status.peers:
                log.info("handing Raft leadership over before stopping")
                new = hand_over(self.raft, RAFT_HANDOVER_S)
                log.info("handed Raft leadership over to %s", new)
        except Exception as exc:  # noqa: BLE001 - the stop goes on; the others elect a leader themselves
            log.info("Raft leadership handover not confirmed before stopping: %s", exc)

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
            self.pg.reconfigure(settings_for(new, self._bin_dir))
            self.loop.request("reload")
        log.info("config reloaded from %s", self.config_path)

    @property
    def fatal(self) -> str | None:
        return self.loop.fatal


class LeadershipTransfer(Protocol):
    def transfer_leadership(self, addr: str | None, timeout_s: float = ...) -> str: ...

    def status(self) -> RaftStatus: ...


def hand_over(raft: LeadershipTransfer, within_s: float, clock: Clock | None = None,
              pause_s: float = HANDOVER_RETRY_S, attempt_s: float = HANDOVER_ATTEMPT_S) -> str:
    """Hand Raft leadership to the most caught-up peer within ``within_s``; return the new leader.

    Two ways a transfer fails while entries keep arriving (the other members' writes, the leader key this
    node has just released; pysyncobj does not hold them back during a transfer):
    - refused: the target is an entry behind at the moment of asking. Seen from outside: one refused
      attempt, and the next primary came 2.7 s after the release, after an election;
    - sent, but the target's election fails: by the time it asks for votes, this node's log (and a
      voter's) holds an entry it lacks, so they refuse it, and this node, up to date, wins the next term.
      Seen in tests: no new leader within 2 s in two stops of three.
    So: ask again while this node still leads, allowing each sent transfer ``attempt_s`` to show a new
    leader; once it has stepped down (an election is under way), only wait. Raises KvError or KvTimeout
    if no other node leads by ``within_s``."""
    clock = clock or SystemClock()
    deadline = clock.monotonic() + within_s
    while True:
        status = raft.status()
        if status.leader is not None and status.leader != status.self_addr:
            return status.leader
        left = deadline - clock.monotonic()
        if left <= 0:
            raise KvTimeout(f"no other Raft leader within {within_s:g}s (this node is {status.state})")
        if status.state == "leader":
            try:
                return raft.transfer_leadership(None, timeout_s=min(left, attempt_s))
            except KvTimeout:
                continue  # sent, and this node may still lead: look again
            except KvError:
                if clock.monotonic() + pause_s >= deadline:
                    raise
        clock.sleep(pause_s)


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
