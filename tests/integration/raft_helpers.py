"""Real Raft KV nodes for tests and the benchmark: one ``raftpg.testing.raft_driver`` process each.

Every process started here is registered with a :class:`Processes` owner that kills what is still alive
by PID (never by name) when the test ends. Waiting is always polling a condition against a deadline.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raftpg.cli.local_cluster import free_ports
from raftpg.testing import poll

PYTHON = sys.executable
START_TIMEOUT_S = 30.0
FAKETIME = "/usr/bin/faketime"


def free_port() -> int:
    """A free port on 127.0.0.1 below the ephemeral range, never handed out before in this run
    (local_cluster.free_ports says why: a node failed to start with EADDRINUSE here)."""
    return free_ports(1)[0]


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.05) -> Any:
    """raftpg.testing.poll.wait_until, tolerating a node that is restarting (its port refuses)."""
    return poll.wait_until(predicate, timeout_s, what, interval_s, tolerate=(OSError, http.client.HTTPException))


class Processes:
    """Owns every process a test starts; ``cleanup`` kills the survivors by PID and reaps them."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen] = []

    def add(self, proc: subprocess.Popen) -> subprocess.Popen:
        self._procs.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in self._procs:
            # each node runs in its own process group (a faketime wrapper forks the node): kill the group
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            if proc.poll() is None:
                proc.kill()
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


@dataclass
class Reply:
    status: int
    body: dict

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.body.get("ok", True) is True


@dataclass
class Node:
    name: str
    data_dir: str
    log_path: str
    procs: Processes
    raft_port: int = field(default_factory=free_port)
    control_port: int = field(default_factory=free_port)
    partners: list[str] = field(default_factory=list)
    password: str | None = None
    extra_args: list[str] = field(default_factory=list)
    prefix: list[str] = field(default_factory=list)  # e.g. ["faketime", "-f", "+1h"]
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.raft_port}"

    # -- process
    def command(self, extra: list[str] | None = None) -> list[str]:
        cmd = [*self.prefix, PYTHON, "-m", "raftpg.testing.raft_driver", "--self", self.addr,
               "--partners", ",".join(self.partners), "--data-dir", self.data_dir,
               "--control", f"127.0.0.1:{self.control_port}", "--name", self.name, *self.extra_args]
        if self.password is not None:  # by file, not argv: other local users can read a command line
            path = os.path.join(os.path.dirname(os.path.abspath(self.data_dir)), f"{self.name}.password")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.password)
            cmd += ["--password-file", path]
        return cmd + list(extra or [])

    def start(self, extra: list[str] | None = None, *, wait_ready: bool = True) -> Node:
        assert not self.alive, f"{self.name} is already running"
        env = {**os.environ, **self.env}
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed right after
        try:
            self.proc = self.procs.add(subprocess.Popen(
                self.command(extra), stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                env=env, cwd=os.path.dirname(os.path.abspath(__file__)), start_new_session=True))
        finally:
            log.close()
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.name} not ready within {timeout_s}s; log:\n{self.log_tail()}")
            readable, _, _ = select.select([self.proc.stdout], [], [], min(remaining, 0.5))
            if readable:
                line = self.proc.stdout.readline()
                if line.strip() == b"ready":
                    return
                if not line:  # EOF: the process exited
                    self.proc.wait(timeout=10)
                    raise AssertionError(f"{self.name} exited with {self.proc.returncode} before ready; "
                                         f"log:\n{self.log_tail()}")

    def run_to_exit(self, extra: list[str] | None = None, timeout_s: float = START_TIMEOUT_S) -> int:
        """Start, expect the process to exit by itself (a refused start), return its status."""
        self.start(extra, wait_ready=False)
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int, timeout_s: float = 20.0) -> int:
        """Send ``sig`` (by PID) and wait for the exit; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        code = self.proc.wait(timeout=timeout_s)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code

    def kill(self) -> int:
        return self.signal(signal.SIGKILL)

    def stop(self) -> int:
        return self.signal(signal.SIGTERM)

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError:
            return "(no log)"

    def log_text(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    # -- control API
    def request(self, method: str, path: str, body: dict | None = None, *, timeout_s: float = 5.0) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.control_port, timeout=timeout_s + 10)
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            return Reply(response.status, json.loads(response.read() or b"{}"))
        finally:
            conn.close()

    def put(self, key: str, value: str, *, timeout_s: float = 5.0, **extra: Any) -> Reply:
        return self.request("POST", "/put", {"key": key, "value": value, "timeout_s": timeout_s, **extra},
                            timeout_s=timeout_s)

    def cas(self, key: str, expected: str | None, new: str | None, *, timeout_s: float = 5.0) -> Reply:
        return self.request("POST", "/cas", {"key": key, "expected": expected, "new": new,
                                             "timeout_s": timeout_s}, timeout_s=timeout_s)

    def get(self, key: str, *, linearizable: bool = True, timeout_s: float = 5.0) -> Reply:
        lin = "1" if linearizable else "0"
        return self.request("GET", f"/get?key={key}&linearizable={lin}&timeout_s={timeout_s}",
                            timeout_s=timeout_s)

    def value(self, key: str, *, linearizable: bool = True, timeout_s: float = 5.0) -> str | None:
        reply = self.get(key, linearizable=linearizable, timeout_s=timeout_s)
        assert reply.status == 200, reply
        kv = reply.body["kv"]
        return kv["value"] if kv else None

    def status(self) -> dict:
        reply = self.request("GET", "/status")
        assert reply.status == 200, reply
        return reply.body


class Cluster:
    """A set of driver nodes that know each other; ``base`` is a temporary directory owned by the test.

    Every node runs with the cluster's Raft password (safety rule 9: never a Raft port without one), a
    fresh random one unless ``password`` is given; ``new_node`` hands it to joining nodes too.
    """

    def __init__(self, base: str, procs: Processes, size: int = 3, *, password: str | None = None) -> None:
        self.base = base
        self.procs = procs
        self.password = password or secrets.token_urlsafe(24)
        self.nodes: list[Node] = []
        for i in range(size):
            self.nodes.append(self.new_node(f"n{i + 1}"))
        for node in self.nodes:
            node.partners = [n.addr for n in self.nodes if n is not node]

    def new_node(self, name: str, **kwargs: Any) -> Node:
        kwargs.setdefault("password", self.password)
        data_dir = os.path.join(self.base, name)
        os.makedirs(data_dir, exist_ok=True)
        return Node(name=name, data_dir=data_dir, log_path=os.path.join(self.base, f"{name}.log"),
                    procs=self.procs, **kwargs)

    def start(self) -> Cluster:
        for node in self.nodes:
            node.start(wait_ready=False)
        for node in self.nodes:
            node.wait_ready()
        return self

    @property
    def alive(self) -> list[Node]:
        return [n for n in self.nodes if n.alive]

    def by_addr(self, addr: str) -> Node:
        return next(n for n in self.nodes if n.addr == addr)

    def leader(self, timeout_s: float = 20.0, among: list[Node] | None = None) -> Node:
        """The node every live node (or every node of ``among``) names as Raft leader, itself agreeing."""
        group = among if among is not None else self.alive

        def agreed() -> Node | None:
            statuses = [n.status() for n in group]
            leaders = {s["leader"] for s in statuses}
            if len(leaders) != 1 or None in leaders:
                return None
            leader = next((n for n in group if n.addr in leaders), None)
            if leader is None:
                return None
            mine = next(s for n, s in zip(group, statuses, strict=True) if n is leader)
            return leader if mine["state"] == "leader" and mine["has_quorum"] else None

        return wait_until(agreed, timeout_s, "one agreed Raft leader")

    def write_until_ok(self, node: Node, key: str, value: str, timeout_s: float = 20.0) -> Reply:
        """Retry a put until it commits (each attempt is a new put of the same value: idempotent)."""
        return wait_until(lambda: (r := node.put(key, value, timeout_s=2.0)).ok and r, timeout_s,
                          f"a committed write of {key} on {node.name}")

    def converged(self, nodes: list[Node], timeout_s: float = 20.0) -> str:
        """Wait until ``nodes`` report the same state fingerprint; return it."""
        def same() -> str | None:
            prints = {n.status()["fingerprint"] for n in nodes}
            return prints.pop() if len(prints) == 1 else None
        try:
            return wait_until(same, timeout_s, "replicas with equal state fingerprints")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.describe(nodes)}") from None

    def describe(self, nodes: list[Node], log_lines: int = 25) -> str:
        """Each node's Raft status and the end of its log: what a failed wait needs to be understood."""
        parts = []
        for n in nodes:
            try:
                status = n.status()
                shown = {k: status.get(k) for k in ("state", "term", "leader", "commit_index", "last_applied",
                                                     "has_quorum", "fingerprint", "disk_full", "members")}
            except (OSError, http.client.HTTPException, AssertionError) as exc:
                shown = {"unreachable": repr(exc)}
            parts.append(f"--- {n.name}: {shown}\n{n.log_tail(log_lines)}")
        return "\n".join(parts)
