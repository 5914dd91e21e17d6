"""Bounds of the dynamic config: one rule for bootstrap.dcs, PATCH/PUT /config and the DCS reader.

What the validator accepts is stored as JSON and must read back as the same config on every node; what it
refuses names the key. Absurd values (a ttl of 10^400, NaN, a 400-digit parameter) are refused everywhere.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from raftpg.config import ConfigError, parse_config, validate_dynamic_config
from raftpg.dcs.codec import read_config
from raftpg.dcs.documents import Unreadable
from raftpg.model import DynamicConfig, PermanentSlot

FILE = """
scope: demo
name: n1
restapi: {listen: 127.0.0.1:8008}
raft: {data_dir: /tmp/raftpg-bounds, self_addr: 127.0.0.1:2222, password: bounds-secret}
postgresql: {listen: 127.0.0.1:5432, data_dir: /tmp/raftpg-bounds-pg}
bootstrap:
  dcs:
    %s
"""


@pytest.mark.parametrize("line, error", [
    ("ttl: " + "1" * 400, "bootstrap.dcs.ttl: must be <= 86400"),
    ("ttl: .nan", "bootstrap.dcs.ttl: input should be a finite number"),
    ("ttl: .inf", "bootstrap.dcs.ttl: input should be a finite number"),
    ("ttl: 86401", "bootstrap.dcs.ttl: must be <= 86400"),
    ("primary_start_timeout: 86401", "bootstrap.dcs.primary_start_timeout: must be <= 86400"),
    ("synchronous_node_count: 1025", "bootstrap.dcs.synchronous_node_count: must be <= 1024"),
    ("maximum_lag_on_failover: 9223372036854775808", "bootstrap.dcs.maximum_lag_on_failover: must be <="),
    ("postgresql: {parameters: {max_connections: " + "9" * 30 + "}}",
     "bootstrap.dcs.postgresql.parameters.max_connections: must be an integer of at most 64 bits"),
    ("custom: {x: .inf}", "custom.x: must be a finite number"),
])
def test_absurd_values_in_the_config_file_are_refused_naming_the_key(line: str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(yaml.safe_load(FILE % line))
    assert any(error in e for e in info.value.errors), info.value.errors


@pytest.mark.parametrize("document", [
    {"ttl": 86400, "loop_wait": 86400 - 2, "retry_timeout": 1},
    {"ttl": 4, "loop_wait": 1, "retry_timeout": 1, "maximum_lag_on_failover": 2**63 - 1},
    {"synchronous_mode": True, "synchronous_node_count": 1024, "primary_start_timeout": 86400},
    {"postgresql": {"parameters": {"work_mem": "4MB", "max_connections": 2**63 - 1, "x": 1.5e300}}},
    {"master_start_timeout": 20, "custom": {"deep": [[[["ok"]]]], "big": 2**64 - 1, "text": "é ✓"}},
])
def test_what_the_validator_accepts_the_reader_reads_back(document: dict[str, Any]) -> None:
    stored = validate_dynamic_config(document)
    config = read_config(json.dumps(stored, sort_keys=True))
    assert config.to_dict() == stored
    assert config.ttl_s == stored["ttl"] and config.primary_start_timeout_s == stored["primary_start_timeout"]


@pytest.mark.parametrize("raw", [
    '{"ttl": 86401}', '{"ttl": ' + "1" * 400 + "}", '{"ttl": 30, "x": NaN}', '{"ttl": 5, "loop_wait": 2}',
    '{"ttl": 30, "postgresql": {"parameters": {"max_connections": 1e999}}}', '{"loop_wiat": 1}',
])
def test_what_the_validator_refuses_the_reader_refuses(raw: str) -> None:
    with pytest.raises(Unreadable):
        read_config(raw)


PERMANENT_SLOTS = {"keep_wal": {"type": "physical"}, "bare": None,
                   "cdc": {"type": "logical", "database": "app", "plugin": "pgoutput"},
                   "dr": {"type": "physical", "cluster_type": "standby"}}


def test_permanent_slots_are_validated_and_read_as_patroni_writes_them() -> None:
    document = validate_dynamic_config({"slots": PERMANENT_SLOTS})
    assert document["slots"] == PERMANENT_SLOTS
    assert DynamicConfig.from_dict(document).permanent_slots == (
        PermanentSlot("bare"), PermanentSlot("cdc", "app", "pgoutput"), PermanentSlot("keep_wal"))  # dr: standby only


@pytest.mark.parametrize(("slots", "error"), [
    ({"Keep-WAL": None}, "slots.Keep-WAL: a replication slot name is 1-63 lower-case"),
    ({"x" * 64: None}, "a replication slot name is 1-63"),
    ({"cdc": {"type": "logical", "database": "app"}}, "slots.cdc.plugin: a logical slot needs it"),
    ({"cdc": {"type": "logical", "plugin": "pgoutput"}}, "slots.cdc.database: a logical slot needs it"),
    ({"cdc": {"type": "wal"}}, "slots.cdc.type: must be physical or logical"),
    ({"cdc": {"typ": "physical"}}, "slots.cdc.typ: unknown key"),
    ({"cdc": 3}, "slots.cdc: must be {type: physical}"),
    ({"cdc": {"type": "physical", "cluster_type": "replica"}}, "slots.cdc.cluster_type: must be primary or standby"),
    (["cdc"], "slots: must be a mapping of slot names"),
])
def test_bad_permanent_slots_are_refused_naming_the_key(slots: Any, error: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(error)):
        validate_dynamic_config({"slots": slots})


def test_the_reader_skips_a_permanent_slot_the_validator_would_refuse() -> None:
    raw = {"slots": {"Bad": None, "half": {"type": "logical", "plugin": "x"}, "ok": {}, "7": [], "wal": {"type": 1}}}
    assert DynamicConfig.from_dict(raw).permanent_slots == (PermanentSlot("ok"),)


@pytest.mark.parametrize("key", ["permanent_slots", "permanent_replication_slots"])
def test_patronis_other_names_for_permanent_slots_are_read_as_slots(key: str) -> None:
    document = validate_dynamic_config({key: {"keep_wal": None}})
    assert document["slots"] == {"keep_wal": None} and key not in document
    assert DynamicConfig.from_dict({key: {"keep_wal": None}}).permanent_slots == (PermanentSlot("keep_wal"),)


@pytest.mark.parametrize(("value", "error"), [
    (True, "detached_primary: must be a string, got a bool"),
    ("", "detached_primary: must not be empty"),
    ("a/b", "detached_primary: must not contain '/'"),
])
def test_a_bad_detached_primary_is_refused_naming_the_key(value: Any, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_dynamic_config({"ttl": 30, "detached_primary": value})
    assert any(error in e.lower() for e in info.value.errors), info.value.errors


def test_detached_primary_reads_back_and_its_absence_is_none() -> None:
    stored = validate_dynamic_config({"ttl": 30, "detached_primary": "n1"})
    assert read_config(json.dumps(stored)).detached_primary == "n1"
    assert read_config(json.dumps(validate_dynamic_config({"ttl": 30}))).detached_primary is None
