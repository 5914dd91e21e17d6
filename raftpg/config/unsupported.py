"""Keys Patroni's config knows that raftpg does not implement, per section, each with a short hint.

Why a list at all: a Patroni config with a ``raft:`` section should run unchanged (DESIGN.md section 4), so
a key Patroni would accept must not be a hard error here, yet the user must learn that it does nothing.
A key neither program knows is a typo and *is* an error (see ``screen.py``).

The list is written from Patroni's documented settings (YAML configuration and dynamic configuration
pages, up to Patroni 4), by judgement rather than exhaustively: options that change where data comes from
(custom bootstrap and replica-creation methods, standby clusters, Citus) or how other nodes are reached
(proxies, allowlists, SRV discovery) are listed so their absence is loud. Add a key here when a real
Patroni config trips over it. Hints are empty when the key's name says enough.
"""

from __future__ import annotations

from types import MappingProxyType

_OTHER_DCS = "raftpg supports the raft, etcd3 and consul DCS sections only"
_CONN_TLS = "TLS and GSS options for PostgreSQL client connections are not supported yet"

TOP_LEVEL = MappingProxyType({
    "kubernetes": _OTHER_DCS,
    "zookeeper": _OTHER_DCS,
    "exhibitor": _OTHER_DCS,
    "etcd": "the etcd v2 API is not supported; use an etcd3 section",
    "citus": "Citus clusters are not supported",
    "ctl": "raftpgctl does not read the ctl section",
})

LOG = MappingProxyType({key: "" for key in (
    "type", "traceback_level", "dateformat", "static_fields", "max_queue_size", "file_num", "file_size",
    "mode", "loggers", "deduplicate_heartbeat_logs",
)})

RESTAPI = MappingProxyType({
    **{key: "" for key in (
        "proxy_address", "keyfile_password", "ciphers", "crlfile", "request_queue_size", "server_tokens",
        "http_extra_headers", "https_extra_headers",
    )},
    "allowlist": "use restapi.authentication or a firewall",
    "allowlist_include_members": "use restapi.authentication or a firewall",
})

ETCD3 = MappingProxyType({
    "url": "list the endpoints in etcd3.hosts",
    "proxy": "",
    "use_proxies": "",
    "srv": "DNS SRV discovery is not supported; list the endpoints in etcd3.hosts",
    "srv_suffix": "",
})

CONSUL = MappingProxyType({
    "port": "write the port in consul.host ('host:port')",
    **{key: "" for key in (
        "consistency", "checks", "register_service", "service_tags", "service_check_interval",
        "service_check_tls_server_name",
    )},
})

BOOTSTRAP_METHOD = "only initdb bootstrap is supported; a new cluster is created by initdb"
METHOD_SECTION = "the section of a method raftpg does not support"

BOOTSTRAP = MappingProxyType({
    "users": "removed in Patroni 4; create roles in post_bootstrap",
    "pg_hba": "use bootstrap.dcs.postgresql.pg_hba or postgresql.pg_hba",
})

DYNAMIC = MappingProxyType({
    "standby_cluster": "standby clusters are not supported",
    "failsafe_mode": "",
    "slots": "permanent replication slots are not supported",
    "ignore_slots": "",
    "member_slots_ttl": "",
    "maximum_lag_on_syncnode": "",
    "max_timelines_history": "",
})

DYNAMIC_POSTGRESQL = MappingProxyType({
    "pg_ident": "",
    "recovery_conf": "",
})

POSTGRESQL = MappingProxyType({
    "create_replica_methods": "replicas are always cloned with pg_basebackup",
    "pgbackrest": "replicas are always cloned with pg_basebackup",
    **{key: "" for key in (
        "bin_name", "proxy_address", "pg_ident", "pg_ctl_timeout", "custom_conf", "recovery_conf",
        "use_unix_socket", "use_unix_socket_repl",
        "remove_data_directory_on_rewind_failure", "remove_data_directory_on_diverged_timelines",
        "before_stop", "pre_promote",
    )},
})

PG_USER = MappingProxyType({key: _CONN_TLS for key in (
    "sslmode", "sslkey", "sslpassword", "sslcert", "sslrootcert", "sslcrl", "sslcrldir", "sslnegotiation",
    "gssencmode", "channel_binding",
)})

WATCHDOG = MappingProxyType({"driver": "only the Linux /dev/watchdog driver exists"})

TAGS = MappingProxyType({
    key: "kept in the member's tags, but raftpg does not act on it"
    for key in ("replicatefrom", "nostream", "sync_priority")
})
