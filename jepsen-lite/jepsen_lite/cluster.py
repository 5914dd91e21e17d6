"""The processes of a run, one node per network namespace: raftpg agents (``RaftpgCluster``) or standalone
Raft KV drivers (``KvCluster``, ``python -m raftpg.testing.raft_driver``).

Each node process is started as ``nsenter --net=/run/netns/<ns> -S <postgres uid> -G <gid> -- python ...``:
nsenter enters the namespace and switches user, then execs (it forks only for PID namespaces), so the
``Popen`` PID is the agent's own PID and signals reach it directly. PostgreSQL refuses to run as root, so
nodes run as the ``postgres`` OS user when the harness is root.

An agent's process tree: agent -> fencing supervisor (``raftpg/pg/supervisor.py``, in a session of its own
since the fix of DESIGN.md rule 11) -> postmaster (its own session) -> backends. The harness tracks the agents it started (``Popen``) and
finds the supervisor (a child of the agent) and the postmaster (``postmaster.pid`` in the data directory)
by PID; at the end anything still running whose command line names this node's data directory is killed.

Clock faults: with ``faketime=True`` every node process starts under libfaketime reading its offset from a
per-node file (``set_clock_offset`` rewrites it; libfaketime re-reads it within ``FAKETIME_CACHE_DURATION``
= 1 s), with ``FAKETIME_DONT_FAKE_MONOTONIC=1``: only the wall clock moves, as an NTP step does. libfaketime
0.9.10 breaks ``clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)`` with that setting, which is how Python
3.11's ``time.sleep`` sleeps (EINVAL; wolfcw/libfaketime#426), so a 15-line preload shim (``monofix.c``,
compiled here with gcc) sends monotonic sleeps straight to the kernel ahead of libfaketime.

DCS: ``dcs="raft"`` (the embedded Raft, the default) or ``dcs="etcd3"``: then an etcd member runs in every
data node's namespace (``etcd.EtcdMembers``), so partitions cut etcd's links too, and the agents list all of
them in ``etcd3.hosts``. A witness needs the embedded Raft (raftpg refuses ``witness`` with etcd).

Disk faults: with ``smallfs=True`` each data node's PostgreSQL data directory and each node's Raft data
directory live on size-limited filesystems of their own (``smallfs.SmallFs``) mounted before the start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml

from jepsen_lite.procs import (  # noqa: F401 - re-exported: cluster is where callers look for them
    FAKETIME_LIB,
    MONOFIX_C,
    build_monofix,
    children,
    cmdline,
    faked_wall_time,
    faketime_env,
    first,
    http_json,
    pids_with_arg,
    proc_state,
    signal_pid,
    wait_until,
)
from jepsen_lite.smallfs import SmallFs
from jepsen_lite.topology import Topology

log = logging.getLogger(__name__)

PYTHON = os.environ.get("RAFTPG_PYTHON", "/opt/raftpg-venv/bin/python")
RUN_AS = "postgres"
RAFT_PORT = 5010
API_PORT = 8008
PG_PORT = 5432
KV_CONTROL_PORT = 8101
PG_FS_MB = 1024
RAFT_FS_MB = 256


class ClusterError(RuntimeError):
    pass


@dataclass(frozen=True)
class ClusterOptions:
    nodes: int = 3
    witness: bool = False
    synchronous: bool = False
    quorum: bool = False  # synchronous_mode: quorum
    ttl_s: int = 10
    loop_wait_s: int = 1
    retry_timeout_s: int = 4
    faketime: bool = False
    dcs: str = "raft"  # "raft" | "etcd3"
    smallfs: bool = False
    source: Path | None = None  # a directory holding the raftpg package the nodes run (PYTHONPATH)

    @property
    def names(self) -> list[str]:
        return [f"n{i}" for i in range(1, self.nodes + 1)] + (["w1"] if self.witness else [])


@dataclass
class Member:
    name: str
    witness: bool
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def log_path(self) -> Path:
        return self.dir / "agent.log"


class NodeProcesses:
    """One long-running process per node, in the node's namespace, as the postgres OS user."""

    kind = "node"

    def __init__(self, topology: Topology, run_dir: Path, opts: ClusterOptions) -> None:
        self.topology = topology
        self.run_dir = run_dir
        self.opts = opts
        self.members = {name: Member(name, name.startswith("w"), run_dir / "nodes" / name)
                        for name in opts.names}
        self.password = secrets.token_hex(16)
        self.user = pwd.getpwnam(RUN_AS) if os.geteuid() == 0 else None
        self.monofix: Path | None = None
        self.stopped_pids: set[int] = set()
        self.stopped_groups: set[int] = set()
        self.started_pids: list[int] = []

    # ------------------------------------------------------------------ setup
    @property
    def names(self) -> list[str]:
        return list(self.members)

    @property
    def data_names(self) -> list[str]:
        """Nodes holding data (not witnesses)."""
        return [n for n, m in self.members.items() if not m.witness]

    def prepare(self) -> None:
        for member in self.members.values():
            member.dir.mkdir(parents=True, exist_ok=True)
            self.write_files(member)
        if self.opts.faketime:
            self.monofix = build_monofix(self.run_dir / "faketime")
            for name in self.members:
                self.set_clock_offset(name, "+0")
        self._chown(self.run_dir / "nodes")
        if self.monofix:
            self._chown(self.run_dir / "faketime")
        for path in (self.run_dir, self.run_dir.parent):
            with contextlib.suppress(OSError):
                path.chmod(path.stat().st_mode | 0o011)  # traversable by the postgres user

    def write_files(self, member: Member) -> None:
        raise NotImplementedError

    def argv(self, member: Member) -> list[str]:
        raise NotImplementedError

    def _chown(self, path: Path) -> None:
        if self.user is None:
            return
        for root, dirs, files in os.walk(path):
            for entry in [root, *(os.path.join(root, d) for d in dirs), *(os.path.join(root, f) for f in files)]:
                os.chown(entry, self.user.pw_uid, self.user.pw_gid)

    def clock_file(self, name: str) -> Path:
        return self.run_dir / "faketime" / f"{name}.offset"

    def set_clock_offset(self, name: str, offset: str) -> None:
        """Step node ``name``'s wall clock to real time + ``offset`` (libfaketime syntax, e.g. "+120s")."""
        path = self.clock_file(name)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(offset + "\n")
        tmp.chmod(0o644)
        os.replace(tmp, path)

    def clock_env(self, name: str) -> dict[str, str]:
        if not self.opts.faketime or self.monofix is None:
            return {}
        return faketime_env(self.clock_file(name), self.monofix)

    # ------------------------------------------------------------------ processes
    def start(self, name: str) -> None:
        member = self.members[name]
        if member.proc is not None and member.proc.poll() is None:
            return
        member.proc = self.spawn(name, self.argv(member), member.log_path, member.dir,
                                 f"start #{member.starts + 1}", member.extra_env)
        member.starts += 1

    def spawn(self, name: str, argv: list[str], log_path: Path, cwd: Path, what: str,
              extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """``argv`` in node ``name``'s namespace, as the postgres user, in a new session, output to
        ``log_path``; under libfaketime when clocks are faked."""
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1",
               "HOME": self.user.pw_dir if self.user else os.environ.get("HOME", "/tmp"), **(extra_env or {})}
        if self.opts.source is not None:
            env["PYTHONPATH"] = str(self.opts.source)
        prefix = self.topology.exec_prefix(name)
        if self.user is not None:
            prefix += ["-S", str(self.user.pw_uid), "-G", str(self.user.pw_gid)]
        prefix.append("--")
        clock_env = self.clock_env(name)
        if clock_env:  # preload only after the user switch: libfaketime makes a per-process shm in /dev/shm
            prefix += ["env", *(f"{k}={v}" for k, v in clock_env.items())]  # that children must open
        with open(log_path, "ab") as logf:
            logf.write(f"\n==== jepsen-lite: {what} at {time.strftime('%H:%M:%S')}\n".encode())
            logf.flush()
            proc = subprocess.Popen([*prefix, *argv], stdin=subprocess.DEVNULL, stdout=logf,
                                    stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
        self.started_pids.append(proc.pid)
        return proc

    def start_all(self) -> None:
        for name in self.members:
            self.start(name)

    def pid(self, name: str) -> int | None:
        proc = self.members[name].proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def alive(self, name: str) -> bool:
        return self.pid(name) is not None

    def stop(self, name: str, timeout_s: float = 30.0) -> None:
        """SIGTERM (clean shutdown), SIGKILL after ``timeout_s``."""
        proc = self.members[name].proc
        if proc is None or proc.poll() is not None:
            return
        self.resume_pid(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0fs: SIGKILL", name, timeout_s)
            self.kill(name)

    def kill(self, name: str) -> int | None:
        """SIGKILL the node's process; returns the PID killed."""
        proc = self.members[name].proc
        if proc is None or proc.poll() is not None:
            return None
        proc.kill()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            log.error("%s (pid %d) survived SIGKILL for 10s", name, proc.pid)
        self.stopped_pids.discard(proc.pid)
        return proc.pid

    def pause_pid(self, pid: int) -> None:
        if signal_pid(pid, signal.SIGSTOP):
            self.stopped_pids.add(pid)

    def resume_pid(self, pid: int) -> None:
        signal_pid(pid, signal.SIGCONT)
        self.stopped_pids.discard(pid)

    def pause_group(self, pgid: int) -> None:
        """SIGSTOP a whole process group (a postmaster and its backends)."""
        if self.signal_group(pgid, signal.SIGSTOP):
            self.stopped_groups.add(pgid)

    def resume_group(self, pgid: int) -> None:
        self.signal_group(pgid, signal.SIGCONT)
        self.stopped_groups.discard(pgid)

    @staticmethod
    def signal_group(pgid: int, sig: int) -> bool:
        try:
            os.killpg(pgid, sig)
            return True
        except OSError:
            return False

    def resume_all(self) -> None:
        for pid in list(self.stopped_pids):
            self.resume_pid(pid)
        for pgid in list(self.stopped_groups):
            self.resume_group(pgid)

    def leftover_pids(self, name: str) -> list[int]:
        """Processes still running for this node other than the tracked one (by its directory)."""
        return [p for p in pids_with_arg(str(self.members[name].dir) + "/") if p != os.getpid()]

    def close(self, keep_data: bool = False) -> None:
        """Stop everything (SIGCONT first), kill leftovers by PID, remove data (logs stay)."""
        self.resume_all()
        for name in self.members:
            with contextlib.suppress(Exception):
                self.stop(name, timeout_s=20)
        with contextlib.suppress(Exception):
            self.stop_services()
        for name in self.members:
            for pid in self.leftover_pids(name):
                log.warning("killing leftover pid %d of %s: %s", pid, name, cmdline(pid)[:120])
                signal_pid(pid, signal.SIGCONT)
                signal_pid(pid, signal.SIGKILL)
        for pid in self.started_pids:  # libfaketime's per-process shm, left behind when a process is killed
            for path in (f"/dev/shm/faketime_shm_{pid}", f"/dev/shm/sem.faketime_sem_{pid}"):
                with contextlib.suppress(OSError):
                    os.unlink(path)
        if not keep_data:
            for member in self.members.values():
                for sub in ("data", "raft"):
                    shutil.rmtree(member.dir / sub, ignore_errors=True)
        self.release_storage(keep_data)

    def stop_services(self) -> None:
        """Stop what runs beside the node processes (etcd), after them."""

    def release_storage(self, keep_data: bool) -> None:
        """Unmount what ``prepare`` mounted."""

    # ------------------------------------------------------------------ status
    def raft_leader(self) -> str | None:
        raise NotImplementedError

    def primary(self) -> str | None:
        return None


class RaftpgCluster(NodeProcesses):
    """raftpg agents (``python -m raftpg CONFIG``) with PostgreSQL, plus an optional witness."""

    kind = "raftpg"
    PG_USERS = {"superuser": "postgres", "replication": "replicator", "rewind": "rewind_user"}

    def __init__(self, topology: Topology, run_dir: Path, opts: ClusterOptions) -> None:
        super().__init__(topology, run_dir, opts)
        if opts.dcs not in ("raft", "etcd3"):
            raise ValueError(f"dcs must be raft or etcd3, got {opts.dcs!r}")
        if opts.dcs == "etcd3" and opts.witness:
            raise ValueError("a witness needs the embedded Raft (raftpg refuses witness: true with etcd3)")
        # PostgreSQL listens on the namespace addresses (not loopback): raftpg requires a password per role
        self.pg_passwords = {role: secrets.token_hex(16) for role in self.PG_USERS}
        self.filesystems: dict[tuple[str, str], SmallFs] = {}
        self.config_overrides: dict[str, dict[str, Any]] = {}  # node -> top-level config keys (mutants)
        if opts.smallfs:
            for name, member in self.members.items():
                if not member.witness:
                    self.filesystems[(name, "pg")] = SmallFs(member.dir / "pgfs", PG_FS_MB)
                if opts.dcs == "raft":
                    self.filesystems[(name, "raft")] = SmallFs(member.dir / "raftfs", RAFT_FS_MB)
        self.etcd = None
        if opts.dcs == "etcd3":
            from jepsen_lite.etcd import EtcdMembers
            self.etcd = EtcdMembers(self, [n for n, m in self.members.items() if not m.witness])

    def config_path(self, member: Member) -> Path:
        return member.dir / "raftpg.yml"

    def data_dir(self, name: str) -> Path:
        fs = self.filesystems.get((name, "pg"))
        return fs.path / "data" if fs else self.members[name].dir / "data"

    def raft_dir(self, name: str) -> Path:
        fs = self.filesystems.get((name, "raft"))
        return fs.path / "raft" if fs else self.members[name].dir / "raft"

    def small_fs(self, name: str, what: str) -> SmallFs | None:
        return self.filesystems.get((name, what))

    def prepare(self) -> None:
        for fs in self.filesystems.values():
            fs.mount(self.user.pw_uid if self.user else None, self.user.pw_gid if self.user else None)
        super().prepare()
        if self.etcd is not None:
            self.etcd.prepare()

    def start_all(self) -> None:
        if self.etcd is not None:
            self.etcd.start_all()
        super().start_all()

    def stop_services(self) -> None:
        if self.etcd is not None:
            self.etcd.close()

    def release_storage(self, keep_data: bool) -> None:
        for fs in self.filesystems.values():
            fs.umount()

    def dcs_section(self, member: Member) -> dict[str, Any]:
        addr = self.topology.addr(member.name)
        if self.etcd is not None:
            return {"etcd3": {"hosts": self.etcd.hosts(first=member.name)}}
        return {"raft": {"data_dir": str(self.raft_dir(member.name)), "self_addr": f"{addr}:{RAFT_PORT}",
                         "partner_addrs": [f"{self.topology.addr(n)}:{RAFT_PORT}" for n in self.members
                                           if n != member.name],
                         "password": self.password}}

    def config_for(self, member: Member) -> dict[str, Any]:
        addr = self.topology.addr(member.name)
        config: dict[str, Any] = {
            "scope": "jl", "name": member.name,
            # the API is reachable only inside the test's private network namespaces
            "restapi": {"listen": f"{addr}:{API_PORT}", "connect_address": f"{addr}:{API_PORT}",
                        "allow_unauthenticated": True},
            **self.dcs_section(member),
            "bootstrap": {"dcs": {
                "ttl": self.opts.ttl_s, "loop_wait": self.opts.loop_wait_s,
                "retry_timeout": self.opts.retry_timeout_s, "maximum_lag_on_failover": 16 * 1024 * 1024,
                "synchronous_mode": "quorum" if self.opts.quorum else self.opts.synchronous,
                "postgresql": {"use_pg_rewind": True, "use_slots": True, "parameters": {
                    "max_connections": 40, "shared_buffers": "16MB", "wal_keep_size": "128MB",
                    "fsync": "on", "synchronous_commit": "on"}}}},
            "watchdog": {"mode": "off"},
        }
        config.update(self.config_overrides.get(member.name, {}))
        if member.witness:
            config["witness"] = True
        else:
            config["postgresql"] = {
                "listen": f"{addr}:{PG_PORT}", "connect_address": f"{addr}:{PG_PORT}",
                "data_dir": str(self.data_dir(member.name)), "pgpass": str(member.dir / "pgpass"),
                "authentication": {role: {"username": user, "password": self.pg_passwords[role]}
                                   for role, user in self.PG_USERS.items()},
            }
        return config

    def write_files(self, member: Member) -> None:
        path = self.config_path(member)
        path.write_text(yaml.safe_dump(self.config_for(member), sort_keys=False))
        path.chmod(0o600)

    def argv(self, member: Member) -> list[str]:
        return [PYTHON, "-m", "raftpg", str(self.config_path(member))]

    # ------------------------------------------------------------------ PostgreSQL processes
    def postmaster_pid(self, name: str) -> int | None:
        try:
            with open(self.data_dir(name) / "postmaster.pid") as f:
                pid = int(f.readline().strip())
        except (OSError, ValueError):
            return None
        state = proc_state(pid)
        if state is None or state == "Z" or "postgres" not in cmdline(pid):
            return None
        return pid

    def supervisor_pid(self, name: str) -> int | None:
        agent = self.pid(name)
        if agent is None:
            return None
        for child in children(agent):
            if "supervisor" in cmdline(child):
                return child
        return None

    def kill_postgres(self, name: str) -> int | None:
        """SIGKILL the postmaster's process group (postmaster and every backend)."""
        pid = self.postmaster_pid(name)
        if pid is None:
            return None
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            signal_pid(pid, signal.SIGKILL)
        return pid

    # ------------------------------------------------------------------ REST
    def api(self, name: str, method: str, path: str, body: Any = None, timeout_s: float = 2.0) -> tuple[int, Any]:
        return http_json(self.topology.addr(name), API_PORT, method, path, body, timeout_s)

    def primaries(self, timeout_s: float = 1.0) -> list[str]:
        """Nodes whose ``GET /primary`` answers 200 (running primary holding the leader lock)."""
        return [n for n in self.data_names if self.api(n, "GET", "/primary", timeout_s=timeout_s)[0] == 200]

    def primary(self) -> str | None:
        found = self.primaries()
        return found[0] if len(found) == 1 else None

    def status(self, name: str) -> dict[str, Any] | None:
        code, body = self.api(name, "GET", "/patroni")
        return body if code in (200, 503) and isinstance(body, dict) else None

    def streaming(self, primary: str) -> int:
        """Replicas streaming from ``primary`` (``pg_stat_replication``); -1 if it cannot be asked."""
        try:
            with psycopg.connect(self.dsn(primary), autocommit=True) as conn:
                return conn.execute("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
                                    ).fetchone()[0]
        except psycopg.Error:
            return -1

    def raft_leader(self) -> str | None:
        """The node whose consensus leads: the embedded Raft's leader, or the etcd leader's node."""
        if self.etcd is not None:
            return self.etcd.leader()
        for name in self.names:
            status = self.status(name)
            raft = (status or {}).get("raft") or {}
            if raft.get("state") == "leader":
                return name
        return None

    def dsn(self, name: str, timeout_s: int = 2) -> str:
        return (f"host={self.topology.addr(name)} port={PG_PORT} user=postgres dbname=postgres "
                f"password={self.pg_passwords['superuser']} "
                f"connect_timeout={timeout_s} application_name=jepsen-lite")


class KvCluster(NodeProcesses):
    """Standalone Raft KV nodes (``python -m raftpg.testing.raft_driver``) for the register workload."""

    kind = "kv"

    def write_files(self, member: Member) -> None:
        path = member.dir / "raft.password"
        path.write_text(self.password)
        path.chmod(0o600)

    def argv(self, member: Member) -> list[str]:
        addr = self.topology.addr(member.name)
        partners = ",".join(f"{self.topology.addr(n)}:{RAFT_PORT}" for n in self.members if n != member.name)
        argv = [PYTHON, "-m", "raftpg.testing.raft_driver", "--self", f"{addr}:{RAFT_PORT}", "--partners", partners,
                "--data-dir", str(member.dir / "raft"), "--control", f"{addr}:{KV_CONTROL_PORT}",
                "--password-file", str(member.dir / "raft.password"), "--name", member.name]
        if member.witness:
            argv += ["--witness-name", member.name]
        return argv

    def control(self, name: str, method: str, path: str, body: Any = None,
                timeout_s: float = 2.0) -> tuple[int, Any]:
        return http_json(self.topology.addr(name), KV_CONTROL_PORT, method, path, body, timeout_s)

    def raft_leader(self) -> str | None:
        for name in self.names:
            code, body = self.control(name, "GET", "/status", timeout_s=1.0)
            if code == 200 and isinstance(body, dict) and body.get("state") == "leader":
                return name
        return None


