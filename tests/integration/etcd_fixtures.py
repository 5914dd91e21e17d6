"""A real etcd for tests: Debian's ``etcd-server`` (3.4), one member on free loopback ports, a temp data dir.

``start_etcd()`` returns an :class:`EtcdProcess` once etcd answers ``/health``; ``stop()`` ends it by PID
(SIGTERM, then SIGKILL) and ``cleanup()`` also removes its data dir. ``kill()`` is the crash (SIGKILL).
Fixtures: ``etcd_server`` (one etcd shared by a test module) and ``etcd_factory`` (start as many as a test
needs; all are stopped and removed when it ends). Both skip, saying why, when the ``etcd`` binary is
missing (``scripts/setup.sh --test`` installs ``etcd-server``).

The timing flags make etcd fast to elect and let leases as short as 1 s exist: etcd raises a lease's TTL
to at least 1.5 x election timeout, so 200 ms gives a 1 s minimum.

``start_etcd(tls=EtcdTls(...))`` serves clients over HTTPS with the given certificate (``EtcdTls.make``
issues one from a ``trustme`` CA), and with ``client_cert_auth`` also demands a client certificate from
that CA. Peers stay on plain HTTP (one member: nothing crosses the network).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT_S = 30.0
SKIP_REASON = "the etcd binary is not installed (Debian package etcd-server; scripts/setup.sh --test installs it)"


def etcd_binary() -> str | None:
    return shutil.which("etcd")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class EtcdTls:
    """Files for an etcd that serves HTTPS: its certificate and key, the CA it trusts for client
    certificates, and a client certificate (PEM: key and chain) from that CA."""

    cert: Path
    key: Path
    ca: Path
    client: Path
    client_cert_auth: bool = False

    @classmethod
    def make(cls, directory: Path, ca: object, *, client_cert_auth: bool = False) -> EtcdTls:
        """Issue the files from ``ca`` (a ``trustme.CA``) into ``directory``."""
        server, client = ca.issue_cert("127.0.0.1", "localhost"), ca.issue_cert("raftpg-client")  # type: ignore[attr-defined]
        files = cls(directory / "etcd.pem", directory / "etcd.key", directory / "ca.pem", directory / "client.pem",
                    client_cert_auth)
        server.cert_chain_pems[0].write_to_path(str(files.cert))
        server.private_key_pem.write_to_path(str(files.key))
        ca.cert_pem.write_to_path(str(files.ca))  # type: ignore[attr-defined]
        client.private_key_and_cert_chain_pem.write_to_path(str(files.client))
        return files

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.client))
        return context


@dataclass
class EtcdProcess:
    proc: subprocess.Popen
    data_dir: Path
    client_port: int
    log_path: Path
    tls: EtcdTls | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def endpoint(self) -> str:
        """``host:port`` as the ``etcd3.hosts`` setting wants it."""
        return f"127.0.0.1:{self.client_port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.endpoint}"

    def healthy(self) -> bool:
        context = self.tls.client_context() if self.tls else None
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1.0, context=context) as response:
                return b'"true"' in response.read()
        except OSError:
            return False

    def kill(self) -> None:
        """The crash: SIGKILL by PID, then reap."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _spawn(binary: str, data_dir: Path, tls: EtcdTls | None = None) -> EtcdProcess:
    client, peer = free_port(), free_port()
    client_url, peer_url = f"{'https' if tls else 'http'}://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    log_path = data_dir / "etcd.log"
    command = [
        binary, "--name", "n1", "--data-dir", str(data_dir / "member-data"),
        "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
        "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"n1={peer_url}", "--initial-cluster-state", "new",
        "--heartbeat-interval", "20", "--election-timeout", "200",
    ]
    if tls is not None:
        command += ["--cert-file", str(tls.cert), "--key-file", str(tls.key)]
        if tls.client_cert_auth:  # etcd 3.4 demands client certificates whenever it has a trusted CA file
            command += ["--trusted-ca-file", str(tls.ca), "--client-cert-auth"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}  # no stray ETCD_* settings
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=data_dir)
    return EtcdProcess(proc, data_dir, client, log_path, tls)


def start_etcd(base_dir: Path | None = None, *, timeout_s: float = START_TIMEOUT_S,
               tls: EtcdTls | None = None) -> EtcdProcess:
    """Start a one-member etcd and wait (polling against a deadline) until it answers ``/health``."""
    binary = etcd_binary()
    if binary is None:
        raise RuntimeError(SKIP_REASON)
    data_dir = Path(tempfile.mkdtemp(prefix="raftpg-etcd-", dir=base_dir))
    for _attempt in range(3):  # a free port may be taken between probing it and etcd binding it
        etcd = _spawn(binary, data_dir, tls)
        deadline = time.monotonic() + timeout_s
        while etcd.proc.poll() is None and time.monotonic() < deadline:
            if etcd.healthy():
                return etcd
            time.sleep(0.05)
        tail = etcd.log_tail()
        etcd.stop()
        if "address already in use" not in tail:
            break
        shutil.rmtree(data_dir / "member-data", ignore_errors=True)
    shutil.rmtree(data_dir, ignore_errors=True)
    raise RuntimeError(f"etcd did not become healthy within {timeout_s:.0f}s:\n{tail}")


@pytest.fixture(scope="module")
def etcd_server() -> Iterator[EtcdProcess]:
    if etcd_binary() is None:
        pytest.skip(SKIP_REASON)
    etcd = start_etcd()
    try:
        yield etcd
    finally:
        etcd.cleanup()


@pytest.fixture
def etcd_factory() -> Iterator[object]:
    if etcd_binary() is None:
        pytest.skip(SKIP_REASON)
    started: list[EtcdProcess] = []

    def start(tls: EtcdTls | None = None) -> EtcdProcess:
        started.append(start_etcd(tls=tls))
        return started[-1]

    try:
        yield start
    finally:
        for etcd in started:
            etcd.cleanup()
