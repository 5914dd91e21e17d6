"""The PostgreSQL manager as the HA loop sees it (raftpg.ha.ports.PostgresPort, matched by shape).

Also builds ``PgSettings`` from the config file plus the cluster-wide dynamic parameters. Callbacks are
fired by ``Postgres`` itself around each operation; this adapter adds none.
"""

from __future__ import annotations

from typing import Any

from raftpg.clock import Clock
from raftpg.config import Config
from raftpg.model import LocalState
from raftpg.pg.control import Postgres
from raftpg.pg.settings import Credentials, PgSettings
from raftpg.pg.slots import slot_name_for


def pg_settings_from_config(config: Config, dynamic_parameters: dict[str, str] | None = None) -> PgSettings:
    pg = config.postgresql
    if pg is None:
        raise ValueError("postgresql: section missing")
    bin_dir = pg.resolve_bin_dir()
    if not bin_dir:
        raise ValueError("postgresql.bin_dir: no PostgreSQL installation found; set bin_dir")
    auth = pg.authentication
    # cluster-wide parameters: the DCS config key once known, bootstrap.dcs before; the local file wins
    parameters: dict[str, Any] = dict(
        config.bootstrap.dcs.postgresql.parameters if dynamic_parameters is None else dynamic_parameters)
    parameters.update(pg.parameters)
    dcs_hba = tuple(config.bootstrap.dcs.postgresql.pg_hba)
    return PgSettings(
        name=config.name, scope=config.scope, data_dir=pg.data_dir, bin_dir=bin_dir, port=pg.port,
        listen_host=pg.listen_addresses, connect_host=pg.connect_host,
        superuser=Credentials(auth.superuser.username, auth.superuser.password),
        replication=Credentials(auth.replication.username, auth.replication.password),
        rewind=Credentials(auth.rewind.username, auth.rewind.password) if auth.rewind else None,
        parameters={k: v for k, v in parameters.items()}, pg_hba=tuple(pg.pg_hba) or dcs_hba,
        initdb_args=tuple(config.bootstrap.initdb_args()), basebackup_args=tuple(pg.basebackup_args()),
        pgpass_path=pg.pgpass,
        callbacks={k: v for k, v in pg.callbacks.model_dump().items() if v},
        post_bootstrap=config.bootstrap.post_bootstrap,
        use_slots=bool(config.bootstrap.dcs.postgresql.use_slots),
    )


class PostgresAdapter:
    def __init__(self, config: Config, clock: Clock) -> None:
        self._config = config
        self._dynamic: dict[str, str] | None = None
        self.pg = Postgres(pg_settings_from_config(config), clock)

    @property
    def settings(self) -> PgSettings:
        return self.pg.settings

    def observe(self) -> LocalState:
        return self.pg.observe()

    def bootstrap(self, lease_s: float | None = None) -> str:
        return self.pg.bootstrap(lease_s=lease_s)

    def start(self, primary_conn_url: str | None, slot_name: str | None, *, as_replica: bool,
              timeout_s: float, lease_s: float | None = None) -> None:
        self.pg.start(primary_conn_url, slot_name, timeout_s=timeout_s, lease_s=lease_s, replica=as_replica)

    def stop(self, mode: str, timeout_s: float) -> None:
        self.pg.stop(mode, timeout_s)

    def restart(self, timeout_s: float, lease_s: float | None = None) -> None:
        self.pg.restart(timeout_s, lease_s=lease_s)

    def reload(self) -> None:
        self.pg.reload()

    def promote(self, timeout_s: float) -> None:
        self.pg.promote(timeout_s)

    def checkpoint(self) -> None:
        self.pg.checkpoint()

    def follow(self, primary_conn_url: str, slot_name: str | None) -> None:
        self.pg.follow(primary_conn_url, slot_name)

    def clone(self, source_conn_url: str, timeout_s: float) -> None:
        self.pg.clone(source_conn_url, timeout_s)

    def rewind(self, source_conn_url: str, timeout_s: float) -> bool:
        return self.pg.rewind(source_conn_url, timeout_s)

    def move_data_aside(self) -> str:
        return self.pg.move_data_aside()

    def ensure_slots(self, names: set[str]) -> None:
        self.pg.ensure_slots(names)

    def set_synchronous_standby_names(self, value: str) -> None:
        self.pg.set_synchronous_standby_names(value)

    def run_callback(self, action: str, role: str) -> None:
        self.pg.run_callback(action, role)

    def lease(self, seconds: float) -> None:
        self.pg.lease(seconds)

    def unlimited(self) -> None:
        self.pg.unlimited()

    def slot_name_for(self, member: str) -> str:
        return slot_name_for(member)

    def apply_dynamic_parameters(self, parameters: dict[str, str]) -> bool:
        """The cluster-wide ``postgresql.parameters`` from the DCS changed: rewrite the config and reload.
        Parameters set in the local file win. True if anything changed."""
        if parameters == self._dynamic:
            return False
        self._dynamic = dict(parameters)
        self.pg.reload(pg_settings_from_config(self._config, self._dynamic))
        return True

    def reconfigure(self, config: Config) -> None:
        """SIGHUP: the config file changed."""
        self._config = config
        self.pg.reload(pg_settings_from_config(config, self._dynamic))

    def close(self) -> None:
        self.pg.close()
