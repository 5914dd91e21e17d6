"""Load and validate the YAML config (Patroni's layout) into frozen settings; errors name the key path.

What lives here:
- ``load.py``: ``load_config(path)`` and ``parse_config(data)`` -> ``Config``; the YAML reader.
- ``schema.py``: ``Config`` and the rules spanning sections; ``dcs_kind``.
- ``sections.py``, ``dcs_sections.py``, ``postgresql.py``: one model per YAML section.
- ``dynamic.py``: the cluster-wide dynamic config (``bootstrap.dcs``, the DCS ``config`` key, PATCH /config).
- ``screen.py`` + ``unsupported.py``: the key screen (Patroni-only keys warn, keys unsafe to ignore are
  refused with the reason, typos fail with a suggestion) and the lists of Patroni keys per treatment.
- ``methods.py``: command methods (a custom ``bootstrap.method``, ``create_replica_methods``).
- ``environment.py``: ``PATRONI_*`` / ``RAFTPG_*`` variables, ``PATRONI_CONFIGURATION``, config directories.
- ``errors.py``, ``fields.py``, ``addresses.py``, ``cli_options.py``, ``base.py``: the pieces those share.

May import: the standard library, yaml, pydantic, and ``raftpg.model`` (nothing else of raftpg).

Invariants:
- Every settings object is frozen (pydantic ``frozen=True``; mappings read-only, lists tuples). Nothing
  here keeps module-level state: a reload builds a new Config and passes it down.
- Validation does no I/O beyond reading the one file; ``PostgresSettings.resolve_bin_dir()`` looks at the
  file system only when called.
- A ConfigError's lines each name the offending key path (``bootstrap.dcs.ttl: ...``), or ``file:line:col``
  for YAML syntax; all problems found are reported together.
- Raft never runs without ``raft.password``, on loopback or off it (DESIGN.md safety rule 9).
- PostgreSQL never listens off loopback without a password for every role raftpg uses; parameter names
  and values, pg_hba lines and member names hold no control characters (each is one line of a file).
- Errors never echo a value found under a secret-looking key (password, token, authentication, ...).
"""

from raftpg.config.addresses import is_loopback, is_wildcard, split_host_port
from raftpg.config.dcs_sections import ConsulSettings, Etcd3Settings, RaftSettings
from raftpg.config.dynamic import (
    DcsPostgresSettings,
    DynamicSettings,
    dynamic_config_warnings,
    parse_dynamic_config,
    validate_dynamic_config,
)
from raftpg.config.errors import ConfigError
from raftpg.config.load import load_config, parse_config
from raftpg.config.postgresql import Callbacks, PgAuthentication, PgUser, PostgresSettings
from raftpg.config.schema import Config, DcsKind, dcs_kind
from raftpg.config.sections import (
    BootstrapSettings,
    LogSettings,
    RestApiAuth,
    RestApiSettings,
    TagSettings,
    WatchdogSettings,
)

__all__ = [
    "BootstrapSettings", "Callbacks", "Config", "ConfigError", "ConsulSettings", "DcsKind",
    "DcsPostgresSettings", "DynamicSettings", "Etcd3Settings", "LogSettings", "PgAuthentication", "PgUser",
    "PostgresSettings", "RaftSettings", "RestApiAuth", "RestApiSettings", "TagSettings", "WatchdogSettings",
    "dcs_kind", "dynamic_config_warnings", "is_loopback", "is_wildcard", "load_config", "parse_config",
    "parse_dynamic_config", "split_host_port", "validate_dynamic_config",
]
