"""``pg_settings_from_config``: this member's ``PgSettings`` from its ``Config`` and the cluster-wide config.

The one place in ``raftpg.pg`` that reads ``raftpg.config``; the rest of the package sees PgSettings only.

Precedence, as in Patroni: the cluster-wide ``postgresql`` section (the DCS ``config`` key once the cluster
exists, ``bootstrap.dcs`` before) gives ``parameters``, ``pg_hba``, ``pg_ident`` and ``recovery_conf``; the
local file's ``postgresql`` section wins key by key for parameters and recovery settings, and replaces the
cluster-wide ``pg_hba``/``pg_ident`` lines when it has any.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from raftpg.config import Config
from raftpg.config.methods import BASEBACKUP
from raftpg.model import DynamicConfig
from raftpg.model.cluster import StandbyCluster
from raftpg.pg.settings import CommandMethod, Credentials, PgSettings


def cluster_section(config: Config, dynamic: DynamicConfig | None) -> dict[str, Any]:
    """What PgSettings takes from the cluster-wide ``postgresql`` section (the DCS config key's once read,
    else ``bootstrap.dcs``'s): ``parameters``, ``pg_hba``, ``pg_ident``, ``recovery_conf``, normalized so
    that equal settings compare equal whichever document they came from."""
    if dynamic is None or not dynamic.raw:
        document: dict[str, Any] = config.bootstrap.dcs.to_dict()
    else:
        document = dict(dynamic.raw)
    section = _mapping(document.get("postgresql"))
    raw = _mapping(document.get("standby_cluster"))
    parsed = StandbyCluster.parse(raw)  # lenient, as the HA loop reads it: a bad port is 5432, not a crash
    standby: dict[str, Any] = {} if parsed is None else {"host": parsed.host, "port": parsed.port}
    if parsed is not None:
        standby.update({k: raw[k] for k in STANDBY_RECOVERY if isinstance(raw.get(k), str | int)
                        and not isinstance(raw.get(k), bool) and raw.get(k) != ""})
        standby["create_replica_methods"] = list(_names(raw.get("create_replica_methods")))
    return {"parameters": _mapping(section.get("parameters")), "pg_hba": list(_lines(section.get("pg_hba"))),
            "pg_ident": list(_lines(section.get("pg_ident"))), "recovery_conf": _mapping(section.get("recovery_conf")),
            "standby_cluster": standby}


STANDBY_RECOVERY = ("restore_command", "archive_cleanup_command", "recovery_min_apply_delay")


def _lines(value: Any) -> tuple[str, ...]:
    return tuple(item for item in value if isinstance(item, str)) if isinstance(value, list | tuple) else ()


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _guc(value: Any) -> str:
    return "on" if value is True else "off" if value is False else str(value)


def pg_settings_from_config(config: Config, cluster: Mapping[str, Any] | None = None,
                            bin_dir: str | None = None) -> PgSettings:
    """``cluster``: the cluster-wide ``postgresql`` section (``cluster_section``; None: ``bootstrap.dcs``'s).
    ``bin_dir``: the installation to use when ``postgresql.bin_dir`` is unset (None: look for one now)."""
    pg = config.postgresql
    if pg is None:
        raise ValueError("postgresql: section missing")
    bin_dir = pg.bin_dir or bin_dir or pg.resolve_bin_dir()
    if not bin_dir:
        raise ValueError("postgresql.bin_dir: no PostgreSQL installation found; set bin_dir")
    if cluster is None:
        cluster = cluster_section(config, None)
    parameters = {**_mapping(cluster.get("parameters")), **pg.parameters}
    recovery = {**_mapping(cluster.get("recovery_conf")), **pg.recovery_conf}
    standby = _mapping(cluster.get("standby_cluster"))
    source = (str(standby["host"]), int(standby.get("port", 5432))) if standby.get("host") else None
    auth = pg.authentication
    return PgSettings(
        name=config.name, scope=config.scope, data_dir=pg.data_dir, bin_dir=bin_dir, port=pg.port,
        listen_host=pg.listen_addresses, connect_host=pg.connect_host,
        superuser=Credentials(auth.superuser.username, auth.superuser.password),
        replication=Credentials(auth.replication.username, auth.replication.password),
        rewind=Credentials(auth.rewind.username, auth.rewind.password) if auth.rewind else None,
        parameters=parameters, pg_hba=tuple(pg.pg_hba) or _lines(cluster.get("pg_hba")),
        pg_ident=tuple(pg.pg_ident) or _lines(cluster.get("pg_ident")), recovery_conf=recovery,
        standby_source=source, standby_recovery={k: _guc(standby[k]) for k in STANDBY_RECOVERY if k in standby},
        standby_replica_methods=_methods(config, _names(standby.get("create_replica_methods"))),
        custom_conf=pg.custom_conf, bin_names=dict(pg.bin_name),
        initdb_args=tuple(config.bootstrap.initdb_args()), basebackup_args=tuple(pg.basebackup_args()),
        pgpass_path=pg.pgpass,
        callbacks={k: v for k, v in pg.callbacks.model_dump().items() if v},
        post_bootstrap=config.bootstrap.post_bootstrap,
        use_slots=bool(config.bootstrap.dcs.postgresql.use_slots),
        bootstrap_method=bootstrap_method(config), replica_methods=replica_methods(config),
        clone_timeout_s=None if pg.create_replica_timeout is None else float(pg.create_replica_timeout),
    )


def bootstrap_method(config: Config) -> CommandMethod | None:
    method = config.bootstrap.custom_method
    if method is None or method.command is None:
        return None
    return CommandMethod(
        name=config.bootstrap.method, command=method.command, options=method.options(), no_params=method.no_params,
        keep_existing_recovery_conf=method.keep_existing_recovery_conf,
        recovery_conf=tuple((k, _guc(v)) for k, v in method.recovery_conf.items()) if "recovery_conf" in
        method.model_fields_set else None)


def replica_methods(config: Config) -> tuple[CommandMethod, ...]:
    assert config.postgresql is not None
    return _methods(config, config.postgresql.create_replica_methods)


def _methods(config: Config, names: tuple[str, ...]) -> tuple[CommandMethod, ...]:
    """The named replica methods: ``basebackup``, a method of the node's ``postgresql`` section, or (a
    name without one, as in Patroni) a command of that name with no options."""
    pg = config.postgresql
    assert pg is not None
    out = []
    for name in names:
        method = pg.replica_methods.get(name)
        if name == BASEBACKUP:
            out.append(CommandMethod(BASEBACKUP, ""))
        elif method is None:
            out.append(CommandMethod(name=name, command=name))
        else:
            out.append(CommandMethod(name=name, command=method.command or name, options=method.options(),
                                     no_params=method.no_params, keep_data=method.keep_data,
                                     no_leader=method.no_leader))
    return tuple(out)


def _names(value: Any) -> tuple[str, ...]:
    return tuple(v.strip() for v in value if isinstance(v, str) and v.strip()) if isinstance(value, list | tuple) else ()
