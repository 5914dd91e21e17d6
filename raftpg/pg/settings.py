"""What the PostgreSQL adapter needs to know, built by the node from its config. Frozen; a reload builds a new one."""

from __future__ import annotations

import os
import shlex
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
class CommandMethod:
    """A user's command that makes a data directory (Patroni's custom bootstrap or replica method; see
    ``raftpg.config.methods``). ``options`` become ``--name=value`` arguments after the command's own."""

    name: str
    command: str
    options: tuple[tuple[str, str], ...] = ()
    no_params: bool = False
    keep_data: bool = False
    no_leader: bool = False
    keep_existing_recovery_conf: bool = False
    recovery_conf: tuple[tuple[str, str], ...] | None = None  # None: not given (different from empty)

    def argv(self, params: dict[str, str]) -> list[str]:
        """The command line: the command split like a shell would (never run through one), then Patroni's
        ``params`` (``--scope`` ...) unless ``no_params``, then the options."""
        head = shlex.split(self.command)
        given = [] if self.no_params else [f"--{k}={v}" for k, v in params.items()]
        return [*head, *given, *(f"--{k}={v}" for k, v in self.options)]


BASEBACKUP = "basebackup"


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
    ``pg_ident`` lines, when given, are written to pg_ident.conf; ``recovery_conf`` settings are added to a
    replica's configuration, ``standby_recovery`` (standby_cluster's restore_command and
    recovery_min_apply_delay) to the one streaming from ``standby_source`` only, which is copied from there
    by ``standby_replica_methods`` when given; ``custom_conf`` is included instead of initdb's ``postgresql.base.conf``;
    ``bin_names`` rename PostgreSQL's programs (``{"pg_ctl": "pg_ctl15"}``).
    ``bootstrap_method``: a command run instead of initdb; ``replica_methods``: how a replica is created,
    in order (``BASEBACKUP`` for pg_basebackup; empty: pg_basebackup only); ``clone_timeout_s`` bounds them
    (None: no limit).
    The agent's unix socket is the first absolute directory of the user's ``unix_socket_directories``
    parameter when one is set, else ``unix_socket_dir`` (see ``socket_dir``).
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
    pg_ident: tuple[str, ...] = ()
    recovery_conf: dict[str, str] = field(default_factory=dict)
    standby_source: tuple[str, int] | None = None   # standby_cluster's host and port (None: a normal cluster)
    standby_recovery: dict[str, str] = field(default_factory=dict)  # its restore_command, recovery_min_apply_delay
    standby_replica_methods: tuple[CommandMethod, ...] = ()  # its create_replica_methods (empty: replica_methods)
    custom_conf: str | None = None
    bin_names: dict[str, str] = field(default_factory=dict)
    bootstrap_method: CommandMethod | None = None
    replica_methods: tuple[CommandMethod, ...] = ()
    clone_timeout_s: float | None = None  # postgresql.create_replica_timeout: None, no limit

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
        unknown = sorted(set(self.callbacks) - set(CALLBACK_ACTIONS) - {"primary_role"})  # see callbacks.py
        if unknown:
            raise ValueError(f"callbacks: unknown action(s) {unknown}, expected some of {list(CALLBACK_ACTIONS)}")
        object.__setattr__(self, "parameters", {str(k): _guc_text(v) for k, v in self.parameters.items()})
        object.__setattr__(self, "callbacks", dict(self.callbacks))
        object.__setattr__(self, "recovery_conf", {str(k): _guc_text(v) for k, v in self.recovery_conf.items()})
        object.__setattr__(self, "standby_recovery", {str(k): _guc_text(v) for k, v in self.standby_recovery.items()})
        object.__setattr__(self, "bin_names", dict(self.bin_names))
        for name in ("pg_hba", "initdb_args", "basebackup_args", "launcher", "pg_ident", "replica_methods",
                     "standby_replica_methods"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    @property
    def user_socket_dirs(self) -> list[str]:
        """The directories of the user's ``unix_socket_directories`` parameter (empty: not set)."""
        value = next((v for k, v in self.parameters.items() if k.lower() == "unix_socket_directories"), "")
        return [d.strip().strip("'\"") for d in value.split(",") if d.strip().strip("'\"")]

    @property
    def socket_dir(self) -> str:
        """Where the agent connects (and where raftpg's own socket is when the user sets none): the first
        absolute directory of ``unix_socket_directories``, else ``unix_socket_dir``, else the data
        directory's parent."""
        mine = next((d for d in self.user_socket_dirs if os.path.isabs(d)), None)
        return mine or self.unix_socket_dir or os.path.dirname(os.path.abspath(self.data_dir)) or "/tmp"

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
        return os.path.join(self.bin_dir, self.bin_names.get(program, program))


def _guc_text(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)
