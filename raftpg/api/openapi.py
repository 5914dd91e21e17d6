"""The OpenAPI 3 document served at ``GET /openapi.json``.

Kept true by ``tests/unit/api/test_openapi.py``, which runs schemathesis against the app: every response
must have a documented status, content type and shape. Change a route, change this document.
"""

from __future__ import annotations

from typing import Any

from raftpg.api.health import CHECKS

JSON = "application/json"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {JSON: {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, **_content(_ref("Error"))}


_NULLABLE_INT = {"type": ["integer", "null"]}
_NULLABLE_STR = {"type": ["string", "null"]}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "Message": {"type": "object", "required": ["message"], "properties": {"message": {"type": "string"}},
                "additionalProperties": True},
    "Status": {
        "type": "object", "required": ["state", "role", "patroni", "pause", "tags", "raft"],
        "properties": {
            "state": {"type": "string"}, "role": {"type": "string"}, "witness": {"type": "boolean"},
            "server_version": _NULLABLE_INT, "timeline": _NULLABLE_INT,
            "database_system_identifier": _NULLABLE_STR, "dcs_last_seen": _NULLABLE_INT,
            "xlog": {"type": "object", "additionalProperties": {"type": ["integer", "string", "boolean", "null"]}},
            "postmaster_start_time": {"type": "string"},
            "pending_restart_reason": {"type": "object", "additionalProperties": {
                "type": "object", "properties": {"old_value": {"type": "string"}, "new_value": {"type": "string"}}}},
            "replication": {"type": "array", "items": {"type": "object"}},
            "replication_state": {"type": "string"},
            "synchronous_mode": {"enum": ["off", "sync", "async-fallback", "waiting"]},
            "patroni": {"type": "object", "required": ["version", "scope", "name"],
                        "properties": {k: {"type": "string"} for k in ("version", "scope", "name")}},
            "pause": {"type": "boolean"}, "pending_restart": {"type": "boolean"},
            "sync_standby": {"type": "boolean"}, "quorum_standby": {"type": "boolean"},
            "cluster_unlocked": {"type": "boolean"},
            "tags": {"type": "object"}, "decision": {"type": "string"},
            "raft": {"type": ["object", "null"]}, "scheduled_restart": {"type": "object"},
            "error": {"type": "string"}, "dcs_problems": {"type": "array", "items": {"type": "string"}},
            "api_authentication": {"enum": ["none", "basic", "client-certificate", "basic+client-certificate"]},
        },
    },
    "Member": {
        "type": "object", "required": ["name", "role", "state", "tags"],
        "properties": {
            "name": {"type": "string"},
            "role": {"enum": ["leader", "standby_leader", "replica", "sync_standby", "quorum_standby", "witness",
                              "uninitialized"]},
            "state": {"type": "string"}, "api_url": _NULLABLE_STR, "host": _NULLABLE_STR,
            "port": _NULLABLE_INT, "timeline": _NULLABLE_INT, "tags": {"type": "object"},
            **{f"{p}lsn": {"type": "string", "description": "e.g. 0/3000060, or unknown"}
               for p in ("", "receive_", "replay_")},
            **{f"{p}lag": {"type": ["integer", "string"], "description": "bytes, or unknown"}
               for p in ("", "receive_", "replay_")},
            "pending_restart": {"type": "boolean"}, "raft": {"enum": ["leader", "follower", "witness", None]},
            "raft_addr": _NULLABLE_STR, "version": _NULLABLE_STR,
        },
    },
    "Cluster": {
        "type": "object", "required": ["scope", "members", "pause"],
        "properties": {
            "scope": {"type": "string"}, "system_identifier": _NULLABLE_STR, "leader": _NULLABLE_STR,
            "pause": {"type": "boolean"}, "members": {"type": "array", "items": _ref("Member")},
            "scheduled_switchover": {"type": "object", "properties": {
                "at": {"type": "string"}, "from": _NULLABLE_STR, "to": _NULLABLE_STR}},
            "failover": {"type": "object"},
        },
    },
    "History": {"type": "array", "items": {"type": "array", "minItems": 5, "maxItems": 5}},
    "Config": {"type": "object", "description": "the dynamic config (Patroni's bootstrap.dcs shape)"},
    "RaftMembers": {
        "type": "object", "required": ["members"],
        "properties": {"leader": _NULLABLE_STR, "term": _NULLABLE_INT, "commit_index": _NULLABLE_INT,
                       "members": {"type": "array", "items": {"type": "object", "required": ["addr"]}}},
    },
    "Switchover": {"type": "object", "properties": {
        "leader": {"type": "string"}, "candidate": {"type": "string"}, "member": {"type": "string"},
        "scheduled_at": {"type": "string", "description": "ISO-8601 with a timezone"}}},
    "Failover": {"type": "object", "required": ["candidate"], "properties": {
        "candidate": {"type": "string"}, "force": {"type": "boolean"}}},
    "Restart": {"type": "object", "properties": {
        "schedule": {"type": "string"}, "restart_pending": {"type": "boolean"},
        "role": {"enum": ["primary", "master", "replica", "any"]}, "postgres_version": {"type": "string"},
        "timeout": {"type": ["integer", "string"], "description": "seconds (or '30s', '5min') to wait"}}},
    "Reinitialize": {"type": "object", "properties": {"force": {"type": "boolean"},
                                                      "from_leader": {"type": "boolean"}}},
    "RaftMember": {"type": "object", "required": ["addr"], "properties": {"addr": {"type": "string"}}},
    "RemoveCluster": {"type": "object", "required": ["scope", "leader"],
                      "properties": {"scope": {"type": "string"}, "leader": _NULLABLE_STR}},
    "RaftLeader": {"type": "object", "properties": {"addr": {"type": "string"}}},
    "Failsafe": {"type": "object", "required": ["name"],
                 "properties": {"name": {"type": "string"}, "conn_url": _NULLABLE_STR, "api_url": _NULLABLE_STR}},
    "FailsafeTopology": {"type": "object", "additionalProperties": {"type": "string"}},
}

_HEALTH_PARAMS = [
    {"name": "lag", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "maximum replica lag: bytes or a size such as 16MB"},
    {"name": "replication_state", "in": "query", "required": False, "schema": {"type": "string"}},
    {"name": "mode", "in": "query", "required": False, "schema": {"enum": ["apply", "write"]},
     "description": "/readiness: lag of replayed (apply) or received (write) WAL"},
]


def _health(summary: str) -> dict[str, Any]:
    get = {
        "summary": summary, "parameters": _HEALTH_PARAMS,
        "responses": {"200": {"description": "the check passes", **_content(_ref("Status"))},
                      "503": {"description": "the check fails", **_content(_ref("Status"))},
                      "400": _error("a query parameter cannot be read")},
    }
    bare = {"summary": summary + " (status only, no body)", "parameters": _HEALTH_PARAMS,
            "responses": {"200": {"description": "passes"}, "503": {"description": "fails"},
                          "400": {"description": "a query parameter cannot be read"}}}
    return {"get": get, "head": bare, "options": bare}


_SUMMARIES = {
    "primary": "200 on the running primary holding the leader key",
    "replica": "200 on a running streaming replica (honours ?lag= and noloadbalance)",
    "read-only": "200 on the primary or a replica", "sync": "200 on a synchronous standby",
    "async": "200 on an asynchronous streaming replica", "health": "200 when PostgreSQL is running",
    "liveness": "200 when the HA loop is alive or the cluster is paused",
    "readiness": "200 on the leader or a streaming replica within ?lag= (default maximum_lag_on_failover)",
    "leader": "200 on the node holding the leader key", "read-only-sync": "200 on the primary or a sync standby",
    "quorum": "200 on a quorum standby (a voter under synchronous_mode: quorum)",
    "read-only-quorum": "200 on the primary or a quorum standby",
    "standby-leader": "200 on the leader of a standby cluster (standby_cluster set)",
}
_ALIASES = {"read-write": "primary", "master": "primary", "synchronous": "sync",
            "asynchronous": "async", "read-only-synchronous": "read-only-sync"}

_UNSAFE = {"401": _error("authentication required"), "411": _error("Content-Length required"),
           "413": _error("body too large"), "400": _error("malformed request (names the field)")}


def _write(summary: str, body: str | None, ok: dict[str, dict[str, Any]], *errors: str,
           required: bool = True) -> dict[str, Any]:
    texts = {"404": "nothing to act on", "409": "a concurrent change: retry", "412": "refused in this state",
             "503": "not done, or the DCS is unavailable"}
    op: dict[str, Any] = {"summary": summary, "security": [{"basic": []}, {}],
                          "responses": {**ok, **_UNSAFE, **{code: _error(texts[code]) for code in errors}}}
    if body:
        op["requestBody"] = {"required": required, **_content(_ref(body))}
    return op


def _message(description: str) -> dict[str, Any]:
    return {"description": description, **_content(_ref("Message"))}


def _read(summary: str, schema: str, *extra: str) -> dict[str, Any]:
    responses = {"200": {"description": "ok", **_content(_ref(schema))}}
    for code in extra:
        responses[code] = _error("not available on this node now")
    return {"get": {"summary": summary, "responses": responses}}


def _paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for path in CHECKS:
        name = path.strip("/")
        paths[path] = _health(_SUMMARIES[_ALIASES.get(name, name)])
    root = _health("the primary check, as in Patroni")
    paths["/"] = {"get": root["get"], "options": root["options"]}
    status_op = {"summary": "this node's status", "responses": {"200": {"description": "ok",
                                                                         **_content(_ref("Status"))}}}
    paths["/patroni"] = {"get": status_op,
                         "options": {"summary": "status only", "responses": {"200": {"description": "ok"}}}}
    paths["/cluster"] = {
        **_read("every member, like raftpgctl list", "Cluster", "503"),
        "delete": _write("delete every key of the cluster from the DCS (raftpgctl remove); the body repeats "
                         "the scope and the leader the operator confirmed", "RemoveCluster",
                         {"200": _message("removed")}, "409", "503"),
    }
    paths["/history"] = _read("timeline history", "History", "503")
    paths["/config"] = {
        **_read("the dynamic config", "Config", "503"),
        "patch": _write("merge-patch the dynamic config (null deletes)", "Config",
                        {"200": {"description": "the stored config", **_content(_ref("Config"))}},
                        "409", "412", "503"),
        "put": _write("replace the dynamic config", "Config",
                      {"200": {"description": "the stored config", **_content(_ref("Config"))}},
                      "409", "412", "503"),
    }
    paths["/metrics"] = {"get": {"summary": "Prometheus metrics", "responses": {"200": {
        "description": "text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}}
    paths["/openapi.json"] = {"get": {"summary": "this document", "responses": {"200": {
        "description": "OpenAPI 3.1", **_content({"type": "object"})}}}}
    done = {"200": _message("done"), "202": _message("accepted or scheduled")}
    paths["/switchover"] = {
        "post": _write("planned switchover", "Switchover", done, "409", "412", "503"),
        "delete": _write("cancel a pending switchover", None, {"200": _message("cancelled")}, "404", "409", "503"),
    }
    paths["/failover"] = {"post": _write("manual failover", "Failover", done, "409", "412", "503")}
    paths["/restart"] = {
        "post": _write("restart PostgreSQL on this node", "Restart", done, "409", "412", "503", required=False),
        "delete": _write("cancel a scheduled restart", None, {"200": _message("cancelled")}, "404"),
    }
    paths["/reload"] = {"post": _write("reload the configuration", None, done, "412", "503")}
    accepted = {"description": "Accepted (text); the lsn header has this node's WAL position",
                "content": {"text/plain": {"schema": {"type": "string"}}}}
    ask = _write("failsafe_mode: a primary that cannot reach the DCS asks to be kept", "Failsafe", {"200": accepted})
    ask["responses"].update({"500": _error("Running as a leader"), "502": _error("failsafe_mode is not enabled")})
    paths["/failsafe"] = {
        "get": {"summary": "the failsafe topology the primary published (member -> REST API URL)",
                "responses": {"200": {"description": "ok", **_content(_ref("FailsafeTopology"))},
                              "502": _error("failsafe_mode is not enabled")}},
        "post": ask,
    }
    paths["/reinitialize"] = {"post": _write("re-clone this replica from the primary", "Reinitialize", done,
                                             "412", "503", required=False)}
    paths["/raft/members"] = {
        **_read("the embedded Raft's members", "RaftMembers", "404"),
        "post": _write("add a Raft member", "RaftMember", done, "404", "503"),
    }
    paths["/raft/members/{addr}"] = {"delete": {
        **_write("remove a Raft member", None, done, "404", "503"),
        "parameters": [{"name": "addr", "in": "path", "required": True, "schema": {"type": "string"}}]}}
    paths["/raft/leader"] = {"post": _write("transfer Raft leadership", "RaftLeader", done, "404", "503",
                                            required=False)}
    return paths


def document(version: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "raftpg REST API", "version": version,
                 "description": "Patroni-compatible health checks, status and cluster operations."},
        "paths": _paths(),
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}}},
    }
