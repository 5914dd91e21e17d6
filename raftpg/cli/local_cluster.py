"""A local cluster of real agent processes on loopback: used by ``raftpg demo`` (hence in cli/, which the
wheel ships; raftpg/testing/ is left out of it), the integration tests and the benchmarks. Each node
gets its own config file, Raft port, REST port and PostgreSQL port under one base directory. Processes are tracked and stopped by PID; nothing is left behind by ``close()``.

When started as root, the nodes run as the ``postgres`` OS user (PostgreSQL refuses to run as root) and
the base directory is handed to that user.

Every cluster gets fresh random secrets (``secrets.token_urlsafe``): the Raft password (safety rule 9: no
Raft port without one, loopback included) and one password per PostgreSQL role, so the generated pg_hba
asks TCP clients for SCRAM as in production. ``dsn()`` carries the superuser's password; the config files
holding the secrets are private to the agent's OS user (mode 0600).
"""

from __future__ import annotations

import json
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import yaml
from psycopg.conninfo import make_conninfo

RUN_AS = "postgres"
SECRETS_FILE = "secrets.json"  # in the base directory, mode 0600; a reused directory keeps its secrets


LOW_PORT = 20000  # local clusters take their ports from here up to the kernel's ephemeral range
_handed_out: set[int] = set()


def _ephemeral_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """``count`` ports free on 127.0.0.1 now, never handed out before by this process.

    They come from below the kernel's ephemeral range when there is room there: a port that bind(0) hands
    out lies inside it, and until the node meant to listen on it has bound it, an outgoing connection (a
    node dialling a member that is not up yet) can take the same number as its local port, and that node
    then fails with EADDRINUSE (seen in the tests). Below the range only another listener can take it."""
    top = _ephemeral_start()
    rng = random.SystemRandom()
    ports: list[int] = []
    for _ in range(64 * count):
        if len(ports) == count or top - LOW_PORT < 1000:
            break
        port = rng.randrange(LOW_PORT, top)
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            ports.append(port)
    while len(ports) < count:  # no low range here: let the kernel choose
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            ports.append(port)
    return ports


@dataclass
class NodeSpec:
    name: str
    raft_port: int
    api_port: int
    pg_port: int
    witness: bool = False
    tags: dict[str, Any] = field(default_factory=dict)

    @property
    def raft_addr(self) -> str:
        return f"127.0.0.1:{self.raft_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"


class LocalCluster:
    def __init__(self, base_dir: str, names: list[str], *, witnesses: tuple[str, ...] = (),
                 dcs: dict[str, Any] | None = None, dcs_section: dict[str, Any] | None = None,
                 extra: dict[str, Any] | None = None, scope: str = "demo", python: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.base_dir = os.path.abspath(base_dir)
        self.scope = scope
        self.python = python or sys.executable
        self.dcs = {"ttl": 10, "loop_wait": 1, "retry_timeout": 4, "maximum_lag_on_failover": 1048576,
                    **(dcs or {})}
        self.dcs_section = dcs_section  # e.g. {"etcd3": {...}} instead of the embedded Raft
        self.extra = extra or {}
        self.env = env or {}
        ports = free_ports(3 * len(names))
        self.nodes = {
            name: NodeSpec(name, ports[3 * i], ports[3 * i + 1], ports[3 * i + 2], witness=name in witnesses)
            for i, name in enumerate(names)
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.run_as = RUN_AS if os.geteuid() == 0 else None
        self.pg_users = {"superuser": "postgres", "replication": "replicator", "rewind": "rewind_user"}
        kept = self._kept_secrets()  # a reused base directory keeps its passwords (the roles have them)
        self.raft_password: str = kept.get("raft") or secrets.token_urlsafe(24)
        self.pg_passwords = {role: kept.get(role) or secrets.token_urlsafe(24) for role in self.pg_users}

    # ------------------------------------------------------------------ files
    def node_dir(self, name: str) -> str:
        return os.path.join(self.base_dir, name)

    def config_path(self, name: str) -> str:
        return os.path.join(self.node_dir(name), "raftpg.yml")

    def log_path(self, name: str) -> str:
        return os.path.join(self.node_dir(name), "agent.log")

    def config_for(self, name: str) -> dict[str, Any]:
        spec = self.nodes[name]
        node_dir = self.node_dir(name)
        config: dict[str, Any] = {
            "scope": self.scope, "name": name,
            "restapi": {"listen": f"127.0.0.1:{spec.api_port}"},
            "bootstrap": {"dcs": {**self.dcs, "postgresql": {
                "use_pg_rewind": True, "use_slots": True,
                "parameters": {"max_connections": 50, "shared_buffers": "32MB", "wal_keep_size": "128MB"}}}},
            "watchdog": {"mode": "off"},
            "tags": dict(spec.tags),
        }
        if self.dcs_section is not None:
            config.update(self.dcs_section)
        else:
            config["raft"] = {"data_dir": os.path.join(node_dir, "raft"), "self_addr": spec.raft_addr,
                              "partner_addrs": [n.raft_addr for n in self.nodes.values() if n.name != name],
                              "password": self.raft_password}
        if spec.witness:
            config["witness"] = True
        else:
            config["postgresql"] = {
                "listen": f"127.0.0.1:{spec.pg_port}", "data_dir": os.path.join(node_dir, "data"),
                "pgpass": os.path.join(node_dir, "pgpass"),
                "authentication": {role: {"username": user, "password": self.pg_passwords[role]}
                                   for role, user in self.pg_users.items()},
            }
        _merge(config, self.extra.get(name, self.extra.get("*", {})))
        return config

    def _kept_secrets(self) -> dict[str, str]:
        try:
            with open(os.path.join(self.base_dir, SECRETS_FILE), encoding="utf-8") as f:
                kept = json.load(f)
        except (OSError, ValueError):
            return {}
        if not isinstance(kept, dict):
            return {}
        return {k: v for k, v in kept.items() if isinstance(k, str) and isinstance(v, str)}

    def _write_private(self, path: str, text: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(text)

    def write_configs(self) -> None:
        os.makedirs(self.base_dir, exist_ok=True)
        self._write_private(os.path.join(self.base_dir, SECRETS_FILE),
                            json.dumps({"raft": self.raft_password, **self.pg_passwords}))
        for name in self.nodes:
            os.makedirs(self.node_dir(name), exist_ok=True)
            # the config holds the cluster's passwords: readable by the agent's OS user only
            self._write_private(self.config_path(name), yaml.safe_dump(self.config_for(name), sort_keys=False))
        if self.run_as:
            user = pwd.getpwnam(self.run_as)
            for root, dirs, files in os.walk(self.base_dir):
                for entry in [root] + [os.path.join(root, d) for d in dirs] + [os.path.join(root, f) for f in files]:
                    os.chown(entry, user.pw_uid, user.pw_gid)
            os.chmod(self.base_dir, 0o755)

    # ------------------------------------------------------------------ processes
    def start(self, name: str, extra_env: dict[str, str] | None = None, prefix: list[str] | None = None) -> None:
        if name in self.procs and self.procs[name].poll() is None:
            return
        log = open(self.log_path(name), "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env, **(extra_env or {})}
        argv = [*(prefix or []), self.python, "-m", "raftpg", self.config_path(name)]
        kwargs: dict[str, Any] = {}
        if self.run_as:
            user = pwd.getpwnam(self.run_as)
            kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
            env["HOME"] = user.pw_dir
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            cwd=self.node_dir(name), start_new_session=True, **kwargs)
        log.close()

    def start_all(self) -> None:
        self.write_configs()
        for name in self.nodes:
            self.start(name)

    def pid(self, name: str) -> int | None:
        proc = self.procs.get(name)
        return proc.pid if proc and proc.poll() is None else None

    def signal(self, name: str, sig: int) -> None:
        pid = self.pid(name)
        if pid:
            os.kill(pid, sig)

    def signal_group(self, name: str, sig: int) -> None:
        """``sig`` to the agent's process group, as a terminal's Ctrl-C (SIGINT) or ``kill -TERM -PGID``
        does. Each agent leads its own group; its fencing supervisor runs in a session of its own."""
        pid = self.pid(name)
        if pid:
            os.killpg(pid, sig)

    def signal_tree(self, name: str, sig: int) -> None:
        """``sig`` to the agent and every process below it (fencing supervisor, postmaster, backends), as
        systemd's default ``KillMode=control-group`` does when it stops a service."""
        pid = self.pid(name)
        if not pid:
            return
        for target in [pid, *descendants(pid)]:
            try:
                os.kill(target, sig)
            except ProcessLookupError:
                pass

    def stop(self, name: str, timeout_s: float = 60.0) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill(name)

    def kill(self, name: str) -> None:
        """SIGKILL the agent only (its PostgreSQL is left to the fencing supervisor)."""
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def postmaster_pid(self, name: str) -> int | None:
        try:
            with open(os.path.join(self.node_dir(name), "data", "postmaster.pid")) as f:
                pid = int(f.readline().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def kill_node(self, name: str) -> None:
        """SIGKILL the agent and its PostgreSQL together (a crashed machine, minus the disk)."""
        pg = self.postmaster_pid(name)
        self.kill(name)
        if pg:
            try:
                os.killpg(pg, signal.SIGKILL)
            except OSError:
                try:
                    os.kill(pg, signal.SIGKILL)
                except OSError:
                    pass
        self._kill_leftover_postgres(name)

    def _kill_leftover_postgres(self, name: str) -> None:
        data_dir = os.path.join(self.node_dir(name), "data")
        for pid in _pids_with_arg(data_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def close(self, remove: bool = False) -> None:
        for name in list(self.procs):
            self.stop(name, timeout_s=60)
        for name in self.nodes:
            self._kill_leftover_postgres(name)
        if remove:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def destroy(self, remove: bool = False, timeout_s: float = 10.0) -> None:
        """Tear the cluster down at once, for a test or bench that is done with it. ``close`` stops the nodes
        one by one, and a primary's clean stop hands over first, so each stop waits for a switchover or,
        for the last node, for a Raft store without a majority: 7-19 s a cluster. Here every agent's process
        group is SIGKILLed at the same moment (its fencing supervisor, in a session of its own, then stops
        PostgreSQL as it does whenever its agent dies), every postmaster gets SIGQUIT as well (one a
        detached supervisor keeps); it returns once every process of the agents' trees is gone, and whatever
        is left after ``timeout_s`` is SIGKILLed. An immediate shutdown, unlike a SIGKILL, removes
        PostgreSQL's System V shared memory segment."""
        tree = {pid for proc in self.procs.values() if proc.poll() is None for pid in [proc.pid, *descendants(proc.pid)]}
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    proc.kill()
        for name in self.nodes:
            pg = self.postmaster_pid(name)
            if pg:
                try:
                    os.kill(pg, signal.SIGQUIT)
                except OSError:
                    pass
        deadline = time.monotonic() + timeout_s
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for name in self.nodes:
            while self.postmaster_pid(name) and time.monotonic() < deadline:
                time.sleep(0.05)
            self._kill_leftover_postgres(name)
        # the supervisors exit once their postmaster has, the backends once they see it gone: wait for them
        while any(_running(pid) for pid in tree) and time.monotonic() < deadline:
            time.sleep(0.02)
        for pid in tree:
            if _running(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        end = time.monotonic() + 2.0
        while any(_running(pid) for pid in tree) and time.monotonic() < end:
            time.sleep(0.02)
        if remove:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    # ------------------------------------------------------------------ REST helpers
    def api(self, name: str, path: str, timeout_s: float = 2.0) -> tuple[int, Any]:
        url = self.nodes[name].api_url + path
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                body = resp.read()
                return resp.status, _loads(body)
        except urllib.error.HTTPError as exc:
            return exc.code, _loads(exc.read())
        except (OSError, ValueError):
            return 0, None

    def api_post(self, name: str, path: str, body: dict[str, Any], method: str = "POST",
                 timeout_s: float = 10.0) -> tuple[int, Any]:
        data = json.dumps(body).encode()
        request = urllib.request.Request(self.nodes[name].api_url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as resp:
                return resp.status, _loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _loads(exc.read())
        except (OSError, ValueError):
            return 0, None

    def primary(self) -> str | None:
        for name in self.nodes:
            status, _ = self.api(name, "/primary", timeout_s=1.0)
            if status == 200:
                return name
        return None

    def wait_for(self, predicate: Any, timeout_s: float, what: str, interval_s: float = 0.2) -> Any:
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval_s)
        raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what} (last: {last!r})")

    def dsn(self, name: str, dbname: str = "postgres") -> str:
        """A superuser connection string for ``name``'s PostgreSQL over TCP, password included."""
        return self.conninfo(self.nodes[name].pg_port, dbname)

    def conninfo(self, port: int, dbname: str = "postgres", host: str = "127.0.0.1") -> str:
        """A superuser connection string for any ``host:port`` in front of this cluster (e.g. a proxy)."""
        return make_conninfo("", host=host, port=port, user=self.pg_users["superuser"], dbname=dbname,
                             password=self.pg_passwords["superuser"], connect_timeout=2)


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return body.decode(errors="replace")


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children first), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        parent = int(stat[stat.rfind(")") + 2:].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop(0)
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie (an exited process its parent has not reaped yet has gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _pids_with_arg(needle: str) -> list[int]:
    """PIDs whose command line contains ``needle`` (a data dir path unique to one test node)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if needle.encode() in f.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found
