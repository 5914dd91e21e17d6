"""Configuration from the environment and from a directory of YAML files, as Patroni reads them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raftpg.config import ConfigError, dcs_kind, load_config
from raftpg.config.environment import consumed_names, environment_config

BASE = """
scope: batman
name: n1
restapi: {listen: 127.0.0.1:8008}
raft: {data_dir: /var/lib/raftpg/raft, self_addr: 127.0.0.1:2222, password: raft-secret}
postgresql: {listen: 127.0.0.1:5432, data_dir: /var/lib/postgresql/data}
"""

ENV_ONLY = {
    "PATRONI_NAME": "pg-env", "PATRONI_SCOPE": "envcluster", "PATRONI_NAMESPACE": "/db/",
    "PATRONI_RESTAPI_LISTEN": "127.0.0.1:8010", "PATRONI_RESTAPI_USERNAME": "admin",
    "PATRONI_RESTAPI_PASSWORD": "api-secret",
    "PATRONI_RAFT_SELF_ADDR": "127.0.0.1:2230", "PATRONI_RAFT_PARTNER_ADDRS": "'127.0.0.1:2231','127.0.0.1:2232'",
    "PATRONI_RAFT_DATA_DIR": "/var/lib/raftpg/raft", "PATRONI_RAFT_PASSWORD": "raft-secret",
    "PATRONI_POSTGRESQL_LISTEN": "127.0.0.1:5440", "PATRONI_POSTGRESQL_DATA_DIR": "/var/lib/pg/data",
    "PATRONI_SUPERUSER_USERNAME": "root", "PATRONI_SUPERUSER_PASSWORD": "su-secret",
    "PATRONI_REPLICATION_USERNAME": "repl", "PATRONI_REPLICATION_PASSWORD": "repl-secret",
    "PATRONI_LOG_LOGGERS": "{httpx: DEBUG, raftpg.ha: WARNING}", "PATRONI_LOG_FILE_NUM": "3",
    "PATRONI_LOG_DEDUPLICATE_HEARTBEAT_LOGS": "true", "PATRONI_POSTGRESQL_BIN_PG_CTL": "pg_ctl15",
}


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_patroni_variables_alone_make_a_config() -> None:
    config = load_config(None, environ=ENV_ONLY)
    assert (config.name, config.scope, config.namespace) == ("pg-env", "envcluster", "/db/")
    assert config.restapi.authentication is not None and config.restapi.authentication.password == "api-secret"
    assert config.raft is not None and config.raft.partner_addrs == ("127.0.0.1:2231", "127.0.0.1:2232")
    pg = config.postgresql
    assert pg is not None and pg.port == 5440 and pg.authentication.superuser.username == "root"
    assert pg.authentication.replication.password == "repl-secret" and pg.bin_name == {"pg_ctl": "pg_ctl15"}
    assert config.log.loggers == {"httpx": "DEBUG", "raftpg.ha": "WARNING"} and config.log.file_num == 3
    assert config.log.deduplicate_heartbeat_logs is True


def test_patroni_configuration_variable_holds_the_whole_config() -> None:
    config = load_config(None, environ={"PATRONI_CONFIGURATION": BASE, "PATRONI_NAME": "ignored-then"})
    assert config.name == "n1"  # with PATRONI_CONFIGURATION no other variable is read, as in Patroni


def test_variables_override_the_file_and_raftpg_twins_win(tmp_path: Path) -> None:
    path = write(tmp_path / "node.yml", BASE)
    config = load_config(path, environ={"PATRONI_NAME": "from-patroni-var", "PATRONI_SCOPE": "s1",
                                        "RAFTPG_SCOPE": "s2", "PATRONI_POSTGRESQL_DATA_DIR": "/srv/pg"})
    assert (config.name, config.scope) == ("from-patroni-var", "s2")
    assert config.postgresql is not None and config.postgresql.data_dir == "/srv/pg"
    assert config.postgresql.listen == "127.0.0.1:5432"  # the rest of the section is the file's


def test_dcs_variables(tmp_path: Path) -> None:
    path = write(tmp_path / "node.yml", BASE.replace("raft: {", "#"))
    config = load_config(path, environ={"PATRONI_ETCD3_HOSTS": "'127.0.0.1:2379','127.0.0.2:2379'",
                                        "PATRONI_ETCD3_USERNAME": "u", "PATRONI_ETCD3_PASSWORD": "p"})
    assert dcs_kind(config) == "etcd3" and config.etcd3 is not None
    assert config.etcd3.hosts == ("127.0.0.1:2379", "127.0.0.2:2379") and config.etcd3.username == "u"


def test_a_directory_of_yaml_files_is_merged_in_name_order(tmp_path: Path) -> None:
    write(tmp_path / "10-base.yml", BASE + "tags: {nofailover: true, rack: r1}\n")
    write(tmp_path / "20-node.yaml", "name: n2\npostgresql: {listen: 127.0.0.1:5433}\ntags: {rack: null}\n")
    write(tmp_path / "30-notes.txt", "name: not-read\n")
    config = load_config(tmp_path, environ={})
    assert config.name == "n2"
    assert config.postgresql is not None and config.postgresql.port == 5433
    assert config.postgresql.data_dir == "/var/lib/postgresql/data"  # merged, not replaced
    assert config.tags.nofailover is True and "rack" not in config.tags.as_dict()  # null removes a key


def test_directory_errors_name_the_file(tmp_path: Path) -> None:
    write(tmp_path / "a.yml", BASE)
    write(tmp_path / "b.yml", "name: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, environ={})
    assert str(info.value).startswith(f"{tmp_path / 'b.yml'}:2:1: ")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="holds no \\*.yml or \\*.yaml file"):
        load_config(empty, environ={})


def test_no_config_anywhere_says_where_to_put_one() -> None:
    with pytest.raises(ConfigError, match="give a config file or directory, or set PATRONI_CONFIGURATION"):
        load_config(None, environ={"HOME": "/root"})


def test_only_patronis_variables_are_read() -> None:
    environ = {"RAFTPG_KEEP": "1", "RAFTPG_PYTHON": "/x", "PATRONI_UNKNOWN_THING": "y", "PATRONI_NAME": "n",
               "RAFTPG_SUPERUSER_PASSWORD": "s", "PATRONI_LOGLEVEL": "DEBUG"}
    assert environment_config(environ) == {"name": "n", "log": {"level": "DEBUG"},
                                           "postgresql": {"authentication": {"superuser": {"password": "s"}}}}
    assert sorted(consumed_names(environ)) == ["PATRONI_LOGLEVEL", "PATRONI_NAME", "RAFTPG_SUPERUSER_PASSWORD"]


def test_a_reload_reads_the_same_variables_after_the_agent_dropped_them(tmp_path: Path) -> None:
    path = write(tmp_path / "node.yml", BASE)
    first = load_config(path, environ={"PATRONI_NAME": "n9", "RAFTPG_KEEP": "1"})
    assert dict(first.environ) == {"PATRONI_NAME": "n9"}
    reloaded = load_config(path, environ=first.environ)
    assert reloaded.name == "n9"


def test_log_format_list_from_a_variable() -> None:
    assert environment_config({"PATRONI_LOG_FORMAT": "message, {levelname: level}"})["log"]["format"] == [
        "message", {"levelname": "level"}]
    assert environment_config({"PATRONI_LOG_FORMAT": "%(message)s"})["log"]["format"] == "%(message)s"


def test_base_is_valid_yaml() -> None:
    assert yaml.safe_load(BASE)["name"] == "n1"
