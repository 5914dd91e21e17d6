"""The etcd backend of a run: one etcd member in every data node's namespace, a three-member (or as many as
data nodes) etcd cluster the agents use through ``etcd3.hosts``; partitions cut its links like the agents'.

Members run as the postgres user like everything else (``NodeProcesses.spawn``), data in
``nodes/<name>/etcd``, output in ``nodes/<name>/etcd.log``, and stay up for the whole run (the faults
target raftpg; etcd is the external service it depends on). The harness also talks to etcd directly, from
the root namespace, through its v3 JSON gateway: ``leader()`` for the ``partition-leader`` target, and
``put_raw`` / ``get_raw`` / ``restore_if`` for the ``poison-dcs`` fault, which writes malformed documents
straight into raftpg's keys (``/service/jl/...``).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shutil
import signal
import subprocess
from typing import TYPE_CHECKING, Any

from jepsen_lite.procs import http_json, wait_until

if TYPE_CHECKING:
    from jepsen_lite.cluster import RaftpgCluster

log = logging.getLogger(__name__)
CLIENT_PORT = 2379
PEER_PORT = 2380
PREFIX = "/service/jl/"


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data).decode()


class EtcdMembers:
    def __init__(self, cluster: RaftpgCluster, names: list[str]) -> None:
        self.cluster = cluster
        self.names = names
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.binary = shutil.which("etcd") or "/usr/bin/etcd"

    def addr(self, name: str) -> str:
        return self.cluster.topology.addr(name)

    def hosts(self, first: str | None = None) -> list[str]:
        names = sorted(self.names, key=lambda n: n != first)  # the node's own member first
        return [f"{self.addr(n)}:{CLIENT_PORT}" for n in names]

    def prepare(self) -> None:
        for name in self.names:
            data = self.cluster.members[name].dir / "etcd"
            data.mkdir(parents=True, exist_ok=True)
            if self.cluster.user is not None:
                os.chown(data, self.cluster.user.pw_uid, self.cluster.user.pw_gid)
            data.chmod(0o700)

    def argv(self, name: str) -> list[str]:
        peers = ",".join(f"{n}=http://{self.addr(n)}:{PEER_PORT}" for n in self.names)
        client, peer = f"http://{self.addr(name)}:{CLIENT_PORT}", f"http://{self.addr(name)}:{PEER_PORT}"
        return [self.binary, "--name", name, "--data-dir", str(self.cluster.members[name].dir / "etcd"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", peers, "--initial-cluster-state", "new",
                "--initial-cluster-token", f"{self.cluster.topology.prefix}-etcd",
                "--heartbeat-interval", "100", "--election-timeout", "1000", "--logger", "zap"]

    def start_all(self, timeout_s: float = 60.0) -> None:
        for name in self.names:
            member = self.cluster.members[name]
            self.procs[name] = self.cluster.spawn(name, self.argv(name), member.dir / "etcd.log", member.dir,
                                                  "etcd start")
        if not wait_until(lambda: all(self.healthy(n) for n in self.names), timeout_s, 0.5):
            raise RuntimeError(f"etcd cluster not healthy within {timeout_s:g}s (see nodes/*/etcd.log)")

    def healthy(self, name: str) -> bool:
        code, body = http_json(self.addr(name), CLIENT_PORT, "GET", "/health", timeout_s=1.0)
        return code == 200 and isinstance(body, dict) and body.get("health") == "true"

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
        for name in self.names:
            shutil.rmtree(self.cluster.members[name].dir / "etcd", ignore_errors=True)

    # ------------------------------------------------------------------ gateway
    def call(self, path: str, body: dict[str, Any], timeout_s: float = 3.0) -> tuple[int, Any]:
        """POST to the first member that answers (any member forwards to the leader)."""
        code, answer = 0, None
        for name in self.names:
            code, answer = http_json(self.addr(name), CLIENT_PORT, "POST", path, body, timeout_s)
            if code:
                return code, answer
        return code, answer

    def leader(self) -> str | None:
        ids: dict[str, str] = {}
        leader_ids = set()
        for name in self.names:
            code, body = http_json(self.addr(name), CLIENT_PORT, "POST", "/v3/maintenance/status", {}, 1.0)
            if code == 200 and isinstance(body, dict):
                ids[str(body.get("header", {}).get("member_id"))] = name
                leader_ids.add(str(body.get("leader")))
        if len(leader_ids) != 1:
            return None
        return ids.get(leader_ids.pop())

    def put_raw(self, key: str, value: str | bytes) -> int | None:
        """Store ``value`` under ``PREFIX + key`` (no lease); the revision of the put, None if not stored."""
        code, body = self.call("/v3/kv/put", {"key": b64(PREFIX + key), "value": b64(value)})
        if code != 200 or not isinstance(body, dict):
            return None
        return int(body.get("header", {}).get("revision", 0)) or None

    def get_raw(self, key: str) -> tuple[bytes, int, int] | None:
        """(value, mod_revision, lease) of ``PREFIX + key``; None if absent or unreadable."""
        code, body = self.call("/v3/kv/range", {"key": b64(PREFIX + key)})
        if code != 200 or not isinstance(body, dict) or not body.get("kvs"):
            return None
        kv = body["kvs"][0]
        return base64.b64decode(kv.get("value", "")), int(kv.get("mod_revision", 0)), int(kv.get("lease", 0))

    def restore_if(self, key: str, mod_revision: int, original: bytes | None) -> bool:
        """Put ``original`` back (or delete the key when it had none) only if nobody wrote the key since
        ``mod_revision`` (so a value the agents wrote meanwhile is never rolled back by the harness)."""
        full = b64(PREFIX + key)
        success = ({"request_delete_range": {"key": full}} if original is None
                   else {"request_put": {"key": full, "value": b64(original)}})
        code, body = self.call("/v3/kv/txn", {
            "compare": [{"key": full, "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)}],
            "success": [success]})
        return code == 200 and isinstance(body, dict) and bool(body.get("succeeded"))

    def delete_prefix(self) -> None:
        """Remove every raftpg key of the run (a new bootstrap)."""
        start = PREFIX.encode()
        end = start[:-1] + bytes([start[-1] + 1])
        code, answer = self.call("/v3/kv/deleterange", {"key": b64(start), "range_end": b64(end)})
        if code != 200:  # a round on the old cluster's keys would prove nothing: say so, loudly
            raise RuntimeError(f"could not delete raftpg's etcd keys (HTTP {code}: {answer!r:.200})")
