"""The REST API over views read from poisoned DCS documents, and PATCH/PUT /config with absurd values.

Every read endpoint must answer (never 500) whatever the DCS held: the views come from the catalogue of
poisoned documents in tests/unit/dcs_poison.py, read by the real codec. A config edit with an absurd
value is refused with 400 naming the field, and nothing is stored.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from api_fakes import FakeView, build_app, node_status, primary_local, with_client

from raftpg.api import ApiSettings, NodeCommands, make_app
from raftpg.clock import FakeClock, SystemClock
from raftpg.dcs.codec import cluster_from_documents
from raftpg.dcs.keys import KeyLayout
from raftpg.dcs.memory import memory_dcs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dcs_poison import CASES, poisoned  # noqa: E402

READ_PATHS = ("/cluster", "/patroni", "/history", "/config", "/metrics", "/primary", "/replica", "/health")


def test_read_endpoints_answer_for_every_poisoned_view() -> None:
    app, view, _ = build_app()
    views = [(case.id, cluster_from_documents(poisoned(case), 20)) for case in CASES]

    async def body(client: Any) -> list[str]:
        failures = []
        for case_id, cluster in views:
            view.current = node_status("n1", primary_local(), cluster)
            for path in READ_PATHS:
                response = await client.get(path)
                text = await response.read()
                if response.status == 500:  # 503 is a health check's answer, not an error
                    failures.append(f"{case_id}: GET {path} -> {response.status} {text[:200]!r}")
                elif path != "/metrics":
                    json.loads(text)  # valid JSON: no NaN, no Infinity
        return failures

    assert with_client(app, body) == []


class Loop:
    def request(self, what: str) -> None: ...

    def wake(self) -> None: ...


ABSURD_CONFIGS = [
    ('{"ttl": ' + "1" * 400 + "}", "ttl"),
    ('{"ttl": 1e999}', "ttl"),
    ('{"ttl": NaN}', None),
    ('{"ttl": Infinity}', None),
    ('{"ttl": 86400000, "loop_wait": 2}', "ttl"),
    ('{"ttl": 86400, "loop_wait": 86401}', "loop_wait"),
    ('{"ttl": 86400, "retry_timeout": 1000000}', "retry_timeout"),
    ('{"maximum_lag_on_failover": 1' + "0" * 30 + "}", "maximum_lag_on_failover"),
    ('{"primary_start_timeout": 10000000}', "primary_start_timeout"),
    ('{"synchronous_node_count": 100000}', "synchronous_node_count"),
    ('{"postgresql": {"parameters": {"max_connections": ' + "9" * 400 + "}}}", "max_connections"),
    ('{"postgresql": {"parameters": {"work_mem": 1e999}}}', "work_mem"),
    ('{"unknown": {"deep": 1e999}}', "unknown.deep"),
    ('{"unknown": ' + "[" * 100 + "]" * 100 + "}", "nested deeper"),
    ('{"unknown": "\\udcff"}', "unknown"),
    ('{"unknown": ' + "[" * 20_000 + "]" * 20_000 + "}", None),
]


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
@pytest.mark.parametrize("document, named", ABSURD_CONFIGS, ids=[d[:40] for d, _ in ABSURD_CONFIGS])
def test_absurd_config_values_are_refused_with_400_naming_the_field(method: str, document: str,
                                                                    named: str | None) -> None:
    dcs = memory_dcs(FakeClock(), KeyLayout("/service/", "demo"))
    dcs.initialize(timeout_s=1)
    dcs.set_initialize("1", timeout_s=1)
    stored = {"ttl": 30, "loop_wait": 10, "retry_timeout": 10}
    assert dcs.set_config(stored, None, timeout_s=1)
    before = dcs.load(timeout_s=1)
    commands = NodeCommands(dcs=dcs, loop=Loop(), clock=SystemClock(), raft=None, timeout_s=1.0)
    app = make_app(FakeView(), commands, ApiSettings())

    async def body(client: Any) -> tuple[int, str]:
        response = await client.request(method, "/config", data=document.encode("utf-8", "surrogatepass"),
                                        headers={"Content-Type": "application/json"})
        return response.status, await response.text()

    status, text = with_client(app, body)
    assert status == 400, text
    if named:
        assert named in json.loads(text)["error"]
    after = dcs.load(timeout_s=1)
    assert (after.config, after.config_revision) == (before.config, before.config_revision)



def test_patroni_status_lists_the_unreadable_dcs_documents() -> None:
    cluster = cluster_from_documents(poisoned(next(c for c in CASES if c.key == "config")), 20)
    app, _, _ = build_app(FakeView(node_status("n1", primary_local(), cluster)))

    async def body(client: Any) -> Any:
        return await (await client.get("/patroni")).json()

    problems = with_client(app, body)["dcs_problems"]
    assert len(problems) == 1 and problems[0].startswith("config: ") and "built-in defaults" in problems[0]
