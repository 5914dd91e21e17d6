"""Hostile clients for the hardening tests and bench/raft_hardening_bench.py: floods, idle connections,
a writer that measures commits, and an RSS sampler. Every socket is closed by its owner; every thread
stops on an Event and is joined."""

from __future__ import annotations

import errno
import os
import resource
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

HUGE_PREFIX = struct.pack("i", 2**31 - 1)  # a frame announcing 2 GiB


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def nofile_limits(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/limits", encoding="ascii") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError(f"no open-files limit for pid {pid}")


@dataclass
class Flood:
    """Sockets that each send a 2 GiB length prefix then garbage, reconnecting whenever the server
    closes them, until ``bytes_per_socket`` were accepted by the kernel and ``min_duration_s`` has
    passed, or ``stop`` is set."""

    port: int
    sockets: int
    bytes_per_socket: int
    min_duration_s: float = 0.0
    sent: list[int] = field(default_factory=list)
    connections: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Flood:
        self.sent = [0] * self.sockets
        self.connections = [0] * self.sockets
        for i in range(self.sockets):
            thread = threading.Thread(target=self._run, args=(i,), name=f"flood-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _more(self, i: int, until: float) -> bool:
        return not self.stop.is_set() and (self.sent[i] < self.bytes_per_socket or time.monotonic() < until)

    def _run(self, i: int) -> None:
        garbage = os.urandom(1 << 20)
        until = time.monotonic() + self.min_duration_s
        while self._more(i, until):
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
            except OSError:
                self.stop.wait(0.01)
                continue
            self.connections[i] += 1
            try:
                s.sendall(HUGE_PREFIX)
                while self._more(i, until):
                    self.sent[i] += s.send(garbage)
            except OSError:
                pass  # closed by the server: connect again
            finally:
                s.close()

    @property
    def done(self) -> bool:
        return all(not t.is_alive() for t in self._threads)

    def join(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.stop.set()
        for thread in self._threads:
            thread.join(10)


class IdleConnections:
    """``count`` TCP connections to ``port`` that say nothing. Connects without blocking on a full
    backlog (a connection the server has not accepted yet still counts as made by the kernel)."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.count = count
        self.sockets: list[socket.socket] = []

    def open(self) -> IdleConnections:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = self.count + 256
        if soft < need:  # this test process holds the client ends
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
        for _ in range(self.count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex(("127.0.0.1", self.port))
            if err not in (0, errno.EINPROGRESS):
                s.close()
                continue
            self.sockets.append(s)
        return self

    def close(self) -> None:
        for s in self.sockets:
            s.close()
        self.sockets = []


@dataclass
class Writer:
    """Writes ``prefix-<n>`` keys in a loop through one node, recording each outcome and latency."""

    node: object
    prefix: str
    timeout_s: float = 5.0
    latencies_s: list[float] = field(default_factory=list)
    failures: list[object] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Writer:
        self._thread = threading.Thread(target=self._run, name=f"writer-{self.prefix}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                reply = self.node.put(f"{self.prefix}-{n}", "1", timeout_s=self.timeout_s)  # type: ignore[attr-defined]
            except OSError as exc:
                self.failures.append(exc)
            else:
                if reply.ok:
                    self.latencies_s.append(time.monotonic() - began)
                else:
                    self.failures.append(reply)
            n += 1

    def finish(self) -> None:
        self.stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s + 15)


class RssSampler:
    def __init__(self, pid: int, every_s: float = 0.05) -> None:
        self.pid = pid
        self.every_s = every_s
        self.max_bytes = rss_bytes(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.max_bytes = max(self.max_bytes, rss_bytes(self.pid))
            except (OSError, AssertionError):
                return

    def finish(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.max_bytes


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]
