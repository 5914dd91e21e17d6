"""What raftpg does with each key Patroni 4.1 accepts but raftpg does not implement as Patroni does.

Why this list: a Patroni config with a ``raft:`` section must run unchanged (DESIGN.md section 4), so a key
Patroni accepts is never an error just because raftpg lacks it; yet nothing may be silently ignored. So
every such key is one of:

- **warned** (``WARN``-style maps, key -> hint): the node runs, and a warning names the key's full path
  once per load, saying it is ignored and why or what raftpg does instead;
- **accepted** (``ACCEPTED`` sets): raftpg already behaves as the key asks (``ignore_slots``: raftpg never
  touches a slot it did not create), so nothing is said; a value raftpg cannot honour is still warned
  about, by the section's ``notes`` (``check_timeline: false``, ``use_unix_socket: false``);
- **refused** (``REFUSED`` maps, key -> reason): ignoring the key would be unsafe (a standby cluster
  would be promoted, a fencing script would be skipped), so the config is refused with one line naming
  the key and the reason.

A key neither program knows is a typo and *is* an error (``screen.py``). The lists are written from
Patroni 4.1's documentation (YAML and dynamic configuration, environment variables) and its validator.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

# --- the top level ---------------------------------------------------------------------------------

OTHER_DCS = MappingProxyType({
    "etcd": ("the etcd v2 API is not supported (etcd 3.4 disables it, 3.6 removed it), and reading this "
             "section as etcd3 would switch to another key space where a Patroni node still on v2 could "
             "hold a second leader key: rename the section to etcd3 (same keys) once every Patroni node is "
             "stopped, or add a raft section for the embedded store (docs/migrating-from-patroni.md)"),
    "zookeeper": "ZooKeeper is not supported: add a raft section (the embedded store), or etcd3 or consul",
    "exhibitor": "Exhibitor/ZooKeeper is not supported: add a raft section (the embedded store), or etcd3 or consul",
    "kubernetes": "the Kubernetes API as a DCS is not supported: add a raft section, or etcd3 or consul",
})
"""DCS sections raftpg cannot use: an error when the config has no section raftpg can use, else a warning
that the section is ignored (a Patroni config with a raft section added for the migration)."""

TOP_LEVEL = MappingProxyType({
    "thread_pool_size": "raftpg's REST API and HA loop do not use a thread pool",
    "thread_stack_size": "raftpg does not size its threads' stacks",
    "ctl": "raftpgctl reads restapi.authentication, RAFTPGCTL_* and PATRONICTL_CONFIG_FILE, not the ctl section",
})

TOP_LEVEL_REFUSED = MappingProxyType({
    "citus": ("Citus clusters are not supported: raftpg does not update the coordinator's pg_dist_node on a "
              "failover, so the Citus cluster would keep sending queries to a demoted node"),
})

# --- log -------------------------------------------------------------------------------------------

LOG = MappingProxyType({
    "max_queue_size": "raftpg writes log records synchronously, without a queue",
})

# --- restapi ---------------------------------------------------------------------------------------

RESTAPI = MappingProxyType({
    **{key: "" for key in (
        "thread_pool_size", "proxy_address", "keyfile_password", "ciphers", "crlfile", "request_queue_size",
        "server_tokens", "http_extra_headers", "https_extra_headers",
    )},
    "allowlist": "use restapi.authentication or a firewall",
    "allowlist_include_members": "use restapi.authentication or a firewall",
})

# --- the DCS sections ------------------------------------------------------------------------------

ETCD3 = MappingProxyType({
    "srv": "DNS SRV discovery is not supported; list the endpoints in etcd3.hosts",
    "srv_suffix": "DNS SRV discovery is not supported; list the endpoints in etcd3.hosts",
})
ETCD3_ACCEPTED = frozenset({"use_proxies"})  # raftpg never discovers members: it always uses the listed hosts

CONSUL = MappingProxyType({
    "consistency": "raftpg reads with Consul's default consistency",
    "checks": "the session has no health checks besides its TTL",
    "register_service": "raftpg does not register a Consul service (use the REST health checks)",
    "service_tags": "raftpg does not register a Consul service",
    "service_check_interval": "raftpg does not register a Consul service",
    "service_check_tls_server_name": "raftpg does not register a Consul service",
})

RAFT = MappingProxyType({key: "raftpg's Raft timing is fixed (its leases do not depend on it)" for key in (
    "min_timeout", "max_timeout", "connection_timeout", "append_entries_period", "connection_retry_time",
    "leader_fallback_timeout",
)})

# --- bootstrap and the dynamic configuration ---------------------------------------------------------

BOOTSTRAP = MappingProxyType({
    "users": "removed in Patroni 4; create roles in post_bootstrap",
    "pg_hba": "use bootstrap.dcs.postgresql.pg_hba or postgresql.pg_hba",
})

DYNAMIC = MappingProxyType({
    "maximum_lag_on_syncnode": "",
    "max_timelines_history": "the whole history is kept",
})
DYNAMIC_ACCEPTED = frozenset({"ignore_slots"})  # raftpg never drops a slot it did not create

DYNAMIC_REFUSED: Mapping[str, str] = MappingProxyType({})

STANDBY_CLUSTER: Mapping[str, str] = MappingProxyType({})
STANDBY_CLUSTER_REFUSED: Mapping[str, str] = MappingProxyType({})

DYNAMIC_POSTGRESQL = MappingProxyType({
    "pg_ctl_timeout": "raftpg does not run pg_ctl; it escalates a slow stop to immediate, then SIGKILL",
})

# --- postgresql ------------------------------------------------------------------------------------

POSTGRESQL = MappingProxyType({
    "proxy_address": "",
    "pg_ctl_timeout": "raftpg does not run pg_ctl; it escalates a slow stop to immediate, then SIGKILL",
    "use_unix_socket_repl": "replication connections go over TCP to the member's connect_address",
    "remove_data_directory_on_rewind_failure": "raftpg moves the data directory aside and re-clones instead",
    "remove_data_directory_on_diverged_timelines": "raftpg moves the data directory aside and re-clones instead",
    "before_stop": "",
})
POSTGRESQL_ACCEPTED = frozenset({"use_unix_socket"})  # the agent always connects over its unix socket

POSTGRESQL_REFUSED = MappingProxyType({
    "pre_promote": ("raftpg runs no fencing script before promoting (it fences with the leader lease and its "
                    "supervisor, README 'Safety'); remove the key to accept promotions without your script"),
})

PG_USER = MappingProxyType({key: "TLS and GSS options for PostgreSQL client connections are not supported yet"
                            for key in ("sslmode", "sslkey", "sslpassword", "sslcert", "sslrootcert", "sslcrl",
                                        "sslcrldir", "sslnegotiation", "gssencmode", "channel_binding")})

WATCHDOG = MappingProxyType({"driver": "only the Linux /dev/watchdog driver exists"})

TAGS = MappingProxyType({
    key: "kept in the member's tags, but raftpg does not act on it"
    for key in ("replicatefrom", "nostream", "sync_priority")
})
