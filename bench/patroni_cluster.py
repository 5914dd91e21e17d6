"""A local Patroni cluster on loopback with LocalCluster's interface, for side-by-side benches only.

Patroni 4.1.5 runs from the bench-only virtualenv that ``scripts/patroni-venv.sh`` makes (/opt/patroni-venv),
never from the project's. Each node gets the same layout, ports, secrets and PostgreSQL profile as a raftpg
node of ``LocalCluster``: data in ``<node>/data``, SCRAM passwords for every role, the same
``bootstrap.dcs`` (ttl, loop_wait, retry_timeout, maximum_lag_on_failover, slots, pg_rewind, the same
three parameters), a ``local ... trust`` / ``host ... scram-sha-256`` pg_hba, and a Raft password. The DCS
is Patroni's own Raft (pysyncobj, as raftpg's) unless ``dcs_section`` names etcd.

As root, agents run as the ``postgres`` OS user, as LocalCluster's do.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from raftpg.cli.local_cluster import LocalCluster  # noqa: E402

PATRONI_VENV = os.environ.get("PATRONI_VENV", "/opt/patroni-venv")
VENV_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts", "patroni-venv.sh")
BIN_DIR = "/usr/lib/postgresql/15/bin"
PARAMETERS = {"max_connections": 50, "shared_buffers": "32MB", "wal_keep_size": "128MB"}


def ensure_patroni() -> str:
    """The Patroni executable of the bench virtualenv, made by scripts/patroni-venv.sh if missing."""
    subprocess.run(["sh", VENV_SCRIPT, PATRONI_VENV], check=True, stdout=subprocess.DEVNULL)
    return os.path.join(PATRONI_VENV, "bin", "patroni")


class PatroniCluster(LocalCluster):
    """Patroni agents instead of raftpg's; everything else (ports, directories, secrets, process handling,
    ``kill_node``, ``dsn``, ``api``) is LocalCluster's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.patroni = os.path.join(PATRONI_VENV, "bin", "patroni")

    def config_path(self, name: str) -> str:
        return os.path.join(self.node_dir(name), "patroni.yml")

    def config_for(self, name: str) -> dict[str, Any]:
        spec = self.nodes[name]
        node_dir = self.node_dir(name)
        replication = self.pg_users["replication"]
        config: dict[str, Any] = {
            "scope": self.scope, "name": name,
            "log": {"level": "INFO"},
            "restapi": {"listen": f"127.0.0.1:{spec.api_port}", "connect_address": f"127.0.0.1:{spec.api_port}"},
            "bootstrap": {
                "dcs": {**self.dcs, "postgresql": {"use_pg_rewind": True, "use_slots": True,
                                                   "parameters": dict(PARAMETERS)}},
                "initdb": [{"encoding": "UTF8"}],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{spec.pg_port}", "connect_address": f"127.0.0.1:{spec.pg_port}",
                "data_dir": os.path.join(node_dir, "data"), "bin_dir": BIN_DIR,
                "pgpass": os.path.join(node_dir, "pgpass"),
                "authentication": {role: {"username": user, "password": self.pg_passwords[role]}
                                   for role, user in self.pg_users.items()},
                "parameters": {"unix_socket_directories": node_dir, "password_encryption": "scram-sha-256",
                               "hot_standby_feedback": "on"},
                "pg_hba": ["local all all trust",
                           f"host replication {replication} 127.0.0.1/32 scram-sha-256",
                           "host all all 127.0.0.1/32 scram-sha-256"],
            },
            "watchdog": {"mode": "off"},
            "tags": dict(spec.tags),
        }
        if self.dcs_section is not None:
            config.update(self.dcs_section)
        else:
            config["raft"] = {"data_dir": os.path.join(node_dir, "raft"), "self_addr": spec.raft_addr,
                              "partner_addrs": [n.raft_addr for n in self.nodes.values() if n.name != name],
                              "password": self.raft_password}
        return config

    def start(self, name: str, extra_env: dict[str, str] | None = None, prefix: list[str] | None = None) -> None:
        if name in self.procs and self.procs[name].poll() is None:
            return
        log = open(self.log_path(name), "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env, **(extra_env or {})}
        env.pop("VIRTUAL_ENV", None)
        kwargs: dict[str, Any] = {}
        if self.run_as:
            user = pwd.getpwnam(self.run_as)
            kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
            env["HOME"] = user.pw_dir
        argv = [*(prefix or []), self.patroni, self.config_path(name)]
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            cwd=self.node_dir(name), start_new_session=True, **kwargs)
        log.close()
