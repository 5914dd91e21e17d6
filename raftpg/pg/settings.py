"""What the PostgreSQL adapter needs to know, built by the node from its config. Frozen; a reload builds a new one."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from raftpg.config.addresses import is_loopback

CALLBACK_ACTIONS = ("on_start", "on_stop", "on_restart", "on_reload", "on_role_change")


@dataclass(frozen=True)
class Credentials:
    """A database role and its password (None: no password, the server must trust or use peer)."""

    username: str
    password: str | None = None

    def __post_init__(self) -> None:
        if not self.username:
            raise ValueError("username must not be empty")

    def __repr__(self) -> str:  # never print passwords in logs or tracebacks
        return f"Credentials(username={self.username!r}, password={'***' if self.password else None})"


@dataclass(frozen=True)
class PgSettings:
    """One member's PostgreSQL.

    ``parameters`` are the user's GUCs (values are coerced to text: True -> 'on', 5 -> '5'); raftpg's own
    settings win over the ones it must control (see ``conf.managed_parameters``). ``pg_hba`` lines replace the
    generated defaults (``conf.default_pg_hba``). ``unix_socket_dir`` defaults to the data directory's parent,
    ``pgpass_path`` to ``<that parent>/.pgpass.raftpg-<name>``; both must be writable by the agent.
    A PostgreSQL listening off loopback needs a password for every role (the generated pg_hba asks TCP
    clients for SCRAM; ``raftpg.config`` refuses such a config first, this is the last gate).
    ``launcher`` is the argv that runs the fencing supervisor (empty: this interpreter runs
    ``raftpg/pg/supervisor.py`` in isolated mode, so the supervisor imports only the standard library).
    ``log_file``: where the postmaster's stderr goes (None: inherited from the agent).
    """

    name: str
    scope: str
    data_dir: str
    bin_dir: str
    port: int = 5432
    listen_host: str = "127.0.0.1"
    connect_host: str = "127.0.0.1"
    superuser: Credentials = field(default_factory=lambda: Credentials("postgres"))
    replication: Credentials = field(default_factory=lambda: Credentials("replicator"))
    rewind: Credentials | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    pg_hba: tuple[str, ...] = ()
    initdb_args: tuple[str, ...] = ()
    basebackup_args: tuple[str, ...] = ()
    pgpass_path: str | None = None
    callbacks: dict[str, str] = field(default_factory=dict)
    post_bootstrap: str | None = None
    use_slots: bool = True
    unix_socket_dir: str | None = None
    launcher: tuple[str, ...] = ()
    log_file: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name must not be empty")
        if not os.path.isabs(self.data_dir):
            raise ValueError(f"data_dir must be an absolute path, got {self.data_dir!r}")
        if not self.bin_dir:
            raise ValueError("bin_dir must not be empty")
        if not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise ValueError(f"port must be 1..65535, got {self.port!r}")
        exposed = [h for h in self.listen_host.split(",") if not is_loopback(h)]
        for role, cred in (("superuser", self.superuser), ("replication", self.replication), ("rewind", self.rewind)):
            if exposed and cred is not None and not cred.password:  # see conf.default_pg_hba
                raise ValueError(f"postgresql.authentication.{role}.password: required because PostgreSQL "
                                 f"listens on {exposed[0].strip()} (not loopback)")
        unknown = sorted(set(self.callbacks) - set(CALLBACK_ACTIONS))
        if unknown:
            raise ValueError(f"callbacks: unknown action(s) {unknown}, expected some of {list(CALLBACK_ACTIONS)}")
        object.__setattr__(self, "parameters", {str(k): _guc_text(v) for k, v in self.parameters.items()})
        object.__setattr__(self, "callbacks", dict(self.callbacks))
        for name in ("pg_hba", "initdb_args", "basebackup_args", "launcher"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    @property
    def socket_dir(self) -> str:
        return self.unix_socket_dir or os.path.dirname(os.path.abspath(self.data_dir)) or "/tmp"

    @property
    def pgpass(self) -> str:
        return self.pgpass_path or os.path.join(
            os.path.dirname(os.path.abspath(self.data_dir)), f".pgpass.raftpg-{self.name}"
        )

    @property
    def rewind_credentials(self) -> Credentials:
        """pg_rewind connects as the rewind role when one is configured, else as the superuser."""
        return self.rewind or self.superuser

    @property
    def application_name(self) -> str:
        """What the agent's own connections call themselves (pg_stat_activity)."""
        return f"raftpg-{self.name}"

    def binary(self, program: str) -> str:
        return os.path.join(self.bin_dir, program)


def _guc_text(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)
