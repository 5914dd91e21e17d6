"""A Raft node's settings and the rules that refuse unsafe ones (re-exported by raft.py).

Safety rule 9 (shared DESIGN.md): pysyncobj unpickles every frame it receives and only its password
(Fernet) authenticates a frame first, so a Raft port without ``raft.password`` is remote code
execution, on loopback too (any local user can connect). The config layer requires the password;
:meth:`RaftSettings.check` refuses one listening off loopback without it, and :func:`check_can_add_member`
refuses to grow a cluster that has none.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from raftpg.config.addresses import is_loopback

DISK_FREE_MIN_BYTES = 16 * 1024 * 1024


class RaftConfigError(ValueError):
    """The Raft settings are unsafe or unusable; the message names the setting."""


@dataclass(frozen=True)
class RaftSettings:
    self_addr: str
    partner_addrs: tuple[str, ...]
    data_dir: str | None
    bind_addr: str | None = None
    password: str | None = None
    # pysyncobj's timers (issue 15: what an idle voter costs). The leader's heartbeat every 0.2 s halves
    # the idle CPU of pysyncobj's 0.1 s default; the election timeout stays more than three heartbeats
    # (pysyncobj asserts that; a follower that misses three in a row under load does not start an
    # election) and far below the shortest lease (ttl 4), which alone sets how fast a failover is: a new
    # Raft leader keeps the lease countdowns it started as a follower. It also sets how soon a new cluster
    # has its first leader (0.8-2.0 s made a bootstrap 0.7 s slower). Entries and their answers are sent
    # the moment they exist, never on a timer, so none of these delays a write. Between ticks the tick
    # thread sleeps until its next deadline (tickwait.py), at most tick_max_s, and tick_s when a deadline
    # is already past (pysyncobj's fixed period, which it also keeps while its transport is not ready).
    election_timeout_min_s: float = 0.7
    election_timeout_max_s: float = 1.7
    heartbeat_s: float = 0.2
    leader_fallback_s: float = 1.5
    tick_s: float = 0.1
    tick_max_s: float = 0.5
    # Majority loss: start alone from this node's data as a new one-node cluster. One-shot; see recovery.py.
    force_new_cluster: bool = False
    # Make every log entry durable (msync/fsync) before it can be acknowledged; see durability.py.
    fsync: bool = False
    # Below this many free bytes on the filesystem of data_dir the node stops taking part (diskspace.py).
    disk_free_min_bytes: int = DISK_FREE_MIN_BYTES

    def check(self) -> None:
        bind = self.bind_addr or self.self_addr
        host = bind.rsplit(":", 1)[0]
        if not self.password:
            where = "not loopback" if not is_loopback(host) else "any local user can reach loopback"
            raise RaftConfigError(
                f"raft.password: required, also on {bind} ({where}): pysyncobj unpickles every frame it "
                "receives, so a Raft port without a password is code execution as the agent's user")
        if self.self_addr in self.partner_addrs:
            raise RaftConfigError(f"raft.partner_addrs: contains this node's own self_addr {self.self_addr}")
        if self.force_new_cluster and not self.data_dir:
            raise RaftConfigError("raft.force_new_cluster: needs raft.data_dir (the data to keep)")
        if self.fsync and not self.data_dir:
            raise RaftConfigError("raft.fsync: needs raft.data_dir (there is nothing to sync in memory)")
        if self.disk_free_min_bytes < 0:
            raise RaftConfigError("raft.disk_free_min_bytes: must not be negative")


def check_can_add_member(settings: RaftSettings, addr: str) -> None:
    """Refuse to add a member to a cluster without a password (safety rule 9): the new member's port,
    wherever it is, would unpickle frames from anyone, and this node would dial it and unpickle its
    answers. Raises :class:`RaftConfigError` naming ``raft.password``."""
    if not settings.password:
        raise RaftConfigError(
            f"raft.password: adding the member {addr} is refused because this cluster has no password: "
            "set raft.password on every member first (an unauthenticated Raft port unpickles frames "
            "from anyone)")


def check_bindable(addr: str) -> None:
    """Fail at once, naming the address, if this node cannot listen on ``addr``."""
    host, port = addr.rsplit(":", 1)
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), int(port)))
        except OSError as exc:
            raise RaftConfigError(f"raft: cannot listen on {addr}: {exc.strerror or exc}") from None
