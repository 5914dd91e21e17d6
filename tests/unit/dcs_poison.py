"""The catalogue of poisoned DCS documents, shared by the unit table (test_dcs_documents.py), the API
rendering test (api/test_api_poison.py) and the contract test on every backend (tests/contract).

``GOOD`` is a healthy cluster: n1 the primary holding the key, n2 and n3 streaming replicas, one history
row, a sync key and a status key. Each :class:`Case` replaces one key's stored value with poison: JSON
that Python's parser accepts but nothing downstream survives (``1e999``, ``NaN``, a 400-digit integer,
100k-deep nesting), invalid UTF-8, wrong types, out-of-range values, bad names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

SYSID = "7300000000000000001"
LSN = 50_331_648
WALL = 1_700_000_000.0
REV = 7


def member_doc(role: str, name: str, **extra: Any) -> str:
    doc = {"role": role, "state": "running" if role == "primary" else "streaming", "xlog_location": LSN,
           "timeline": 1, "conn_url": f"postgresql://{name}:5432/postgres", "sysid": SYSID,
           "api_url": f"http://{name}:8008/patroni", "tags": {}, **extra}
    return json.dumps(doc)


GOOD_CONFIG = {"ttl": 20, "loop_wait": 2, "retry_timeout": 4, "maximum_lag_on_failover": 1048576}
GOOD_HISTORY_ROW = [1, 33554432, "no recovery target specified", WALL, "n1"]
GOOD: dict[str, str] = {
    "initialize": SYSID,
    "leader": "n1",
    "members/n1": member_doc("primary", "n1"),
    "members/n2": member_doc("replica", "n2"),
    "members/n3": member_doc("replica", "n3"),
    "config": json.dumps(GOOD_CONFIG),
    "sync": json.dumps({"leader": "n1", "sync_standby": "n2"}),
    "status": json.dumps({"optime": LSN}),
    "history": json.dumps([GOOD_HISTORY_ROW]),
}

# JSON tokens that no document may contain anywhere (each one made Python's json or a consumer raise)
TOKENS: dict[str, str] = {
    "float overflow 1e999": "1e999",
    "negative overflow -1e999": "-1e999",
    "NaN": "NaN",
    "Infinity": "Infinity",
    "-Infinity": "-Infinity",
    "400-digit integer": "1" * 400,
    "negative 400-digit integer": "-" + "9" * 400,
    "100k-deep list": "[" * 100_000 + "]" * 100_000,
    "100k-deep object": '{"a":' * 100_000 + "1" + "}" * 100_000,
    "40-deep list (under the recursion limit)": "[" * 40 + "]" * 40,
    "lone surrogate escape": '"\\udcff"',
    "invalid UTF-8 (bytes decoded with surrogateescape)": '"n\udcff"',
}
# whole documents of the wrong kind
WRONG_DOCUMENTS: dict[str, Any] = {
    "empty": "", "not JSON": "{not json", "a list": "[1, 2]", "a string": '"text"', "a number": "42",
    "null": "null", "true": "true", "invalid UTF-8 bytes": b'{"role": "\xff"}',
    "over 1 MiB": json.dumps({"role": "replica", "pad": "x" * (1 << 20)}),
}

# how a token is embedded in a key's document: templates with one %s
EMBEDDED: dict[str, tuple[str, ...]] = {
    "members/n3": ('{"role":"replica","state":"streaming","xlog_location":%s}',
                   '{"role":"replica","state":"streaming","tags":{"nofailover":%s}}',
                   '{"role":"replica","state":"streaming","conn_url":%s}'),
    "config": ('{"ttl":%s,"loop_wait":2,"retry_timeout":4}',
               '{"ttl":20,"loop_wait":2,"retry_timeout":4,"postgresql":{"parameters":{"work_mem":%s}}}'),
    "failover": ('{"leader":"n1","member":%s}', '{"leader":"n1","member":"n2","scheduled_at":%s}'),
    "sync": ('{"leader":"n1","sync_standby":%s}', '{"leader":"n1","sync_standby":"n2","quorum":%s}'),
    "status": ('{"optime":%s}', '{"optime":1,"slots":{"n1":%s,"n3":5}}',
               '{"optime":1,"failsafe":{"n1":"http://n1:8008","n3":%s}}'),
    "history": ('[[1,33554432,"x",1700000000.0,"n1"],[%s,50331648,"y",1700000000.0,"n2"]]',),
}

# well-formed JSON with a wrong type or an out-of-range value in one field
FIELD_POISON: dict[str, tuple[str, ...]] = {
    "members/n3": (
        '{"role":"replica","state":"streaming","xlog_location":"abc"}',
        '{"role":"replica","state":"streaming","xlog_location":-1}',
        '{"role":"replica","state":"streaming","xlog_location":1.5}',
        '{"role":"replica","state":"streaming","xlog_location":18446744073709551616}',
        '{"role":"replica","state":"streaming","xlog_location":true}',
        '{"role":"replica","state":"streaming","timeline":0}',
        '{"role":"replica","state":"streaming","timeline":4294967296}',
        '{"role":"replica","state":"streaming","tags":"x"}',
        '{"role":"replica","state":"streaming","tags":{"nofailover":"maybe"}}',
        '{"role":"replica","state":"streaming","tags":{"failover_priority":"high"}}',
        '{"role":"replica","state":"streaming","tags":{"failover_priority":-1}}',
        '{"role":"replica","state":"streaming","conn_url":{"a":1}}',
        '{"role":"replica","state":"streaming","conn_url":"postgresql://n3\\n:5432"}',
        '{"role":"replica","state":"streaming","api_url":"' + "x" * 3000 + '"}',
        '{"role":5,"state":"streaming"}',
        '{"role":"replica","state":["streaming"]}',
        '{"role":"replica","state":"streaming","witness":"maybe"}',
        '{"role":"replica","state":"streaming","server_version":-1}',
        '{"role":"replica","state":"streaming","sysid":"abc"}',
        '{"role":"replica","state":"streaming","sysid":[1]}',
    ),
    "config": (
        '{"ttl":"abc","loop_wait":2,"retry_timeout":4}',
        '{"ttl":0,"loop_wait":2,"retry_timeout":4}',
        '{"ttl":86401,"loop_wait":2,"retry_timeout":4}',
        '{"ttl":true,"loop_wait":2,"retry_timeout":4}',
        '{"ttl":20.5,"loop_wait":2,"retry_timeout":4}',
        '{"ttl":"1e400","loop_wait":2,"retry_timeout":4}',
        '{"ttl":5,"loop_wait":2,"retry_timeout":4}',
        '{"ttl":20,"loop_wait":0,"retry_timeout":4}',
        '{"ttl":20,"loop_wait":2,"retry_timeout":4,"maximum_lag_on_failover":18446744073709551615}',
        '{"ttl":20,"loop_wait":2,"retry_timeout":4,"synchronous_node_count":5000}',
        '{"ttl":20,"loop_wait":2,"retry_timeout":4,"primary_start_timeout":99999999}',
        '{"ttl":20,"loop_wait":2,"retry_timeout":4,"synchronous_mode":"sometimes"}',
        '{"ttl":20,"loop_wait":2,"retry_timeout":4,"postgresql":{"parameters":{"work_mem":{"a":1}}}}',
        '{"ttl":20,"loop_wait":2,"retry_timeout":4,"postgresql":"x"}',
        '{"ttl":20,"loop_wait":2,"retry_timeout":4,"loop_wiat":1}',
    ),
    "failover": (
        '{"leader":"n1","member":5}', '{"leader":"n1","member":"a/b"}', '{"leader":"n1","member":"\\u0000"}',
        '{"leader":["n1"],"member":"n2"}', '{"leader":"n1","member":"n2","scheduled_at":"tomorrow"}',
        '{"leader":"n1","member":"n2","scheduled_at":1e300}', '{"leader":"n1","member":"n2","scheduled_at":-5}',
        '{"leader":"n1","member":"' + "x" * 200 + '"}',
    ),
    "sync": (
        '{"leader":"n1","sync_standby":5}', '{"leader":"n1","sync_standby":"n2,n\\n3"}',
        '{"leader":"n1","sync_standby":[1]}', '{"leader":"n1","sync_standby":{"a":1}}',
        '{"leader":[1],"sync_standby":"n2"}', '{"leader":"n1","sync_standby":"n2,.."}',
        '{"leader":"n1","sync_standby":"n2","quorum":"x"}', '{"leader":"n1","sync_standby":"n2","quorum":-1}',
        '{"leader":"n1","sync_standby":"n2","quorum":1.5}', '{"leader":"n1","sync_standby":"n2","quorum":1e300}',
        '{"leader":"n1","sync_standby":"n2","quorum":[1]}', '{"leader":"n1","sync_standby":"n2","quorum":true}',
        '{"leader":"n1","sync_standby":"n2","quorum":5000}',
    ),
    "status": ('{"optime":"abc"}', '{"optime":-1}', '{"optime":18446744073709551616}', '{"optime":1.5}',
               '{"optime":1,"slots":"x"}', '{"optime":1,"slots":[1]}', '{"optime":1,"slots":{"BAD-NAME":1,"n3":5}}',
               '{"optime":1,"slots":{"n1":-1,"n3":5}}', '{"optime":1,"slots":{"n1":1.5,"n3":5}}',
               '{"optime":1,"slots":{"n1":"abc","n3":5}}', '{"optime":1,"slots":{"' + "x" * 200 + '":1}}',
               '{"optime":1,"failsafe":"x"}', '{"optime":1,"failsafe":[1]}', '{"optime":1,"failsafe":{"a/b":"u"}}',
               '{"optime":1,"failsafe":{"n1":5,"n3":"http://n3:8008"}}', '{"optime":1,"failsafe":{"n1":""}}',
               '{"optime":1,"failsafe":{"n1":"http://n1:8008\n"}}'),
}
BAD_HISTORY_ROWS = ('"x"', '[1]', '["x",1,"y"]', '[0,1,"y"]', '[1,-1,"y"]', '[1,1,5]', '[1,1,"y",1e300]',
                    '[1,1,"y","not a time"]', '[1,1,"y",1.0,5]', '[1,1,"y",1.0,"a/b"]')
# raw values of the two keys that hold text, not JSON
INITIALIZE_POISON = ("1e999", "NaN", "1" * 400, "abc", "-1", SYSID + "\n", "18446744073709551616", "7\udcff",
                     b"\xff\xfe", "[" * 100_000)
LEADER_POISON = ("n1\udcff", "n1\n", "x" * 200, "..", ".", "a/b", b"n1\xff", "\x00", "n" * 1_000_000, 5)


@dataclass(frozen=True)
class Case:
    id: str
    key: str
    raw: Any


def cases() -> list[Case]:
    out = []
    for key, templates in EMBEDDED.items():
        for token_name, token in TOKENS.items():
            out.append(Case(f"{key} is {token_name}", key, token))
            for i, template in enumerate(templates):
                out.append(Case(f"{key} holds {token_name} (field {i})", key, template % token))
        for doc_name, doc in WRONG_DOCUMENTS.items():
            out.append(Case(f"{key} is {doc_name}", key, doc))
    for key, docs in FIELD_POISON.items():
        out.extend(Case(f"{key}: {doc[:70]}", key, doc) for doc in docs)
    for row in BAD_HISTORY_ROWS:
        out.append(Case(f"history row {row}", "history", f'[[1,33554432,"x",1700000000.0,"n1"],{row}]'))
    out.extend(Case(f"initialize {raw[:30]!r}", "initialize", raw) for raw in INITIALIZE_POISON)
    out.extend(Case(f"leader {str(raw)[:30]!r}", "leader", raw) for raw in LEADER_POISON)
    for name in ("", "bad\nname", "..", "x" * 200, "a\udcffb", "\ufffd"):
        out.append(Case(f"member key named {name[:20]!r}", "members/" + name, member_doc("replica", "n4")))
    return out


CASES = cases()


def poisoned(case: Case, base: dict[str, Any] | None = None) -> dict[str, tuple[Any, int]]:
    documents: dict[str, tuple[Any, int]] = {k: (v, REV) for k, v in (base or GOOD).items()}
    documents[case.key] = (case.raw, REV + 1)
    return documents


