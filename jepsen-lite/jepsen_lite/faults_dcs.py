"""``poison-dcs``: malformed documents written straight into etcd under raftpg's keys, as a buggy tool or a
hostile writer would: numbers that overflow (``1e999``, a 400-digit integer), ``NaN`` / ``Infinity``, wrong
types, 100k-deep nesting, invalid UTF-8 (the catalogue follows tests/unit/dcs_poison.py, kept small here).

Each occurrence poisons one or two keys drawn from the catalogue below (a replica's member key, config,
failover, sync, status, history, initialize; rarely the leader key, which takes leadership away from
everybody until it is removed). ``verify`` reads the key back: the bytes stored are the poison. At the end
each key is put back as it was (deleted if it was absent or held a lease) *only if* nobody wrote it since
(a guarded transaction), so the harness never rolls back what the agents wrote meanwhile. Whether the
agents survive it is for the checkers and the convergence result to say; the evidence records which agents
still answered ``GET /liveness`` and which listed ``dcs_problems``.
"""

from __future__ import annotations

import random
import time
from typing import Any

from jepsen_lite.nemesis_base import Fault, FaultError

TOKENS: dict[str, str] = {
    "1e999": "1e999", "-1e999": "-1e999", "NaN": "NaN", "Infinity": "Infinity", "400 digits": "1" * 400,
    "100k-deep list": "[" * 100_000 + "]" * 100_000, "lone surrogate escape": '"\\udcff"',
}
TEMPLATES: dict[str, tuple[str, ...]] = {
    "members/{replica}": ('{"role":"replica","state":"streaming","xlog_location":%s}',
                          '{"role":"replica","state":"streaming","tags":{"nofailover":%s}}',
                          '{"role":"replica","state":"streaming","timeline":%s}'),
    "config": ('{"ttl":%s,"loop_wait":1,"retry_timeout":4}',
               '{"ttl":10,"loop_wait":1,"retry_timeout":4,"postgresql":{"parameters":{"work_mem":%s}}}'),
    "failover": ('{"leader":"{primary}","member":%s}', '{"leader":"{primary}","member":"n2","scheduled_at":%s}'),
    "sync": ('{"leader":"{primary}","sync_standby":%s}',),
    "status": ('{"optime":%s}',),
    "history": ('[[1,33554432,"x",1700000000.0,"n1"],[%s,50331648,"y",1700000000.0,"n2"]]',),
}
WRONG: tuple[bytes, ...] = (b"", b"{not json", b"[1, 2]", b'"text"', b"42", b"null", b'{"role": "\xff"}',
                            b"\xff\xfe\xfd")
TEXT_KEYS: dict[str, tuple[bytes, ...]] = {
    "initialize": (b"1e999", b"NaN", b"1" * 400, b"abc", b"-1", b"18446744073709551616", b"7\xff"),
    "leader": (b"n1\xff", b"n1\n", b"..", b"a/b", b"\x00", b"x" * 200),
}
LEASED = ("leader", "members/")


def draw_poison(rng: random.Random) -> tuple[str, bytes]:
    """(key template, raw bytes) of one poisoned document; ``{replica}``/``{primary}`` resolved later."""
    roll = rng.random()
    if roll < 0.08:
        return "leader", rng.choice(TEXT_KEYS["leader"])
    if roll < 0.18:
        return "initialize", rng.choice(TEXT_KEYS["initialize"])
    key = rng.choice(sorted(TEMPLATES))
    if rng.random() < 0.2:
        return key, rng.choice(WRONG)
    template, token = rng.choice(TEMPLATES[key]), TOKENS[rng.choice(sorted(TOKENS))]
    return key, (template % token).encode()


class PoisonDcs(Fault):
    name = "poison-dcs"
    kinds = frozenset({"raftpg"})
    needs = frozenset({"etcd"})

    @classmethod
    def plan(cls, rng: random.Random, ttl_s: float) -> tuple[float, dict[str, Any]]:
        count = rng.choice([1, 1, 2])
        return rng.uniform(0.5 * ttl_s, 2 * ttl_s), {"seed": rng.randrange(1 << 30), "count": count}

    def start(self) -> dict[str, Any]:
        cluster = self.pg_cluster
        if cluster.etcd is None:
            raise FaultError("poison-dcs needs the etcd backend (--dcs etcd3)")
        rng = random.Random(self.params.get("seed", 0))
        primary = cluster.primary() or "n1"
        replica = next((n for n in cluster.data_names if n != primary), "n2")
        self.written: list[tuple[str, bytes, int, bytes | None]] = []  # key, poison, revision, original
        described = []
        for _ in range(int(self.params.get("count", 1))):
            template, raw = draw_poison(rng)
            key = template.replace("{replica}", replica)
            raw = raw.replace(b"{primary}", primary.encode())
            before = cluster.etcd.get_raw(key)
            original = None if before is None or before[2] or key.startswith(LEASED) else before[0]
            revision = cluster.etcd.put_raw(key, raw)
            if revision is None:
                continue
            self.written.append((key, raw, revision, original))
            described.append({"key": key, "poison": raw[:80].decode("utf-8", "backslashreplace"),
                              "bytes": len(raw), "revision": revision})
        if not self.written:
            raise FaultError("etcd refused every poisoned document")
        return {"poisoned": described}

    def verify(self) -> tuple[bool, dict[str, Any]]:
        cluster = self.pg_cluster
        assert cluster.etcd is not None
        stored = []
        for key, raw, revision, _ in self.written:
            now = cluster.etcd.get_raw(key)
            # the agents may already have replaced a member key: a later revision proves the poison was there
            stored.append(now is not None and (now[0] == raw or now[1] > revision) or now is None and revision > 0)
        time.sleep(2 * self.env.loop_wait_s + 1)  # let every HA loop read it at least once
        alive = [n for n in cluster.names if cluster.api(n, "GET", "/liveness")[0] == 200]
        problems = [n for n in cluster.names if (cluster.status(n) or {}).get("dcs_problems")]
        return all(stored), {"stored": stored, "agents_live": alive, "agents_listing_dcs_problems": problems}

    def stop(self) -> dict[str, Any]:
        cluster = self.pg_cluster
        assert cluster.etcd is not None
        restored = {key: cluster.etcd.restore_if(key, revision, original)
                    for key, _, revision, original in reversed(self.written)}
        return {"restored": restored}
