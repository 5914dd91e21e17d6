"""The tables of bench/compare.py, from the JSON files it leaves in its ``--out`` directory: one table per
figure, one row per setup, medians with min-max, and the ratio raftpg / Patroni on the same DCS and profile.

    python bench/compare_report.py [/tmp/raftpg-compare]
"""

from __future__ import annotations

import glob
import json
import os
import statistics
import sys
from collections.abc import Callable
from typing import Any

ORDER = {("patroni", "raft"): 0, ("patroni", "etcd"): 1, ("raftpg", "raft"): 2, ("raftpg", "etcd"): 3}
NAMES = {("patroni", "raft"): "Patroni 4.1.5 + its Raft", ("patroni", "etcd"): "Patroni 4.1.5 + etcd",
         ("raftpg", "raft"): "raftpg", ("raftpg", "etcd"): "raftpg + etcd"}


def load(directory: str) -> list[dict[str, Any]]:
    results = []
    for path in glob.glob(os.path.join(directory, "*.json")):
        with open(path, encoding="utf-8") as f:
            results.append(json.load(f))
    return sorted(results, key=lambda r: (-r["profile"][0], ORDER[(r["system"], r["dcs"])]))


def _label(r: dict[str, Any]) -> str:
    return f"{NAMES[(r['system'], r['dcs'])]} | {'/'.join(map(str, r['profile']))}"


def _pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def _range(values: list[float], fmt: str) -> str:
    return f"{fmt.format(min(values))}-{fmt.format(max(values))}" if values else "-"


def _ratio(results: list[dict[str, Any]], r: dict[str, Any], value: Callable[[dict[str, Any]], float | None]) -> str:
    """raftpg / Patroni on the same DCS and profile, for raftpg rows that have a Patroni twin."""
    if r["system"] != "raftpg":
        return ""
    twin = next((p for p in results if p["system"] == "patroni" and p["dcs"] == r["dcs"]
                 and p["profile"] == r["profile"]), None)
    mine, theirs = value(r), value(twin) if twin else None
    return f"{mine / theirs:.2f}" if mine is not None and theirs else ""


def _median_of(r: dict[str, Any], figure: str, key: str) -> float | None:
    values = [row[key] for row in r.get(figure) or [] if row.get(key) is not None]
    return statistics.median(values) if values else None


def table_bootstrap(results: list[dict[str, Any]]) -> list[str]:
    lines = ["**Bootstrap** to a primary with two *streaming* replicas (agents launched on empty directories; "
             "first primary in brackets)", "",
             "| system | ttl/loop_wait/retry | median | min-max | first primary, median | ratio raftpg/Patroni |",
             "|---|---|---|---|---|---|"]
    for r in results:
        values = [row["streaming_s"] for row in r.get("bootstrap") or []]
        if values:
            lines.append(f"| {_label(r)} | {statistics.median(values):.2f} s | {_range(values, '{:.2f}')} s | "
                         f"{_median_of(r, 'bootstrap', 'primary_s'):.2f} s | "
                         f"{_ratio(results, r, lambda x: _median_of(x, 'bootstrap', 'streaming_s'))} |")
    return lines


def _fp(r: dict[str, Any], key: str) -> list[float]:
    return [fp[key] for fp in (r.get("footprint") or {}).values()]


def table_footprint(results: list[dict[str, Any]]) -> list[str]:
    lines = ["**Idle footprint** of one agent's process tree without PostgreSQL (median of the three nodes, "
             "min-max across them; CPU in % of one core; etcd: the server's CPU with the three agents, and "
             "with no client before they started, and the requests per second it served, by gRPC method)", "",
             "| system | ttl/loop_wait/retry | RSS | PSS | CPU | etcd server CPU | ratio RSS | ratio CPU |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        rss, pss, cpu = _fp(r, "rss_mb"), _fp(r, "pss_mb"), _fp(r, "cpu_pct")
        if not rss:
            continue
        etcd = f"{r['etcd_cpu_pct']:.2f} %" if r.get("etcd_cpu_pct") is not None else "-"
        if r.get("etcd_alone_cpu_pct") is not None:
            etcd += f" (alone {r['etcd_alone_cpu_pct']:.2f} %)"
        if r.get("etcd_requests_per_s"):
            rates = r["etcd_requests_per_s"]
            etcd += f", {sum(rates.values()):.1f} requests/s (" + ", ".join(
                f"{method} {rate:.1f}" for method, rate in rates.items() if rate >= 0.05) + ")"
        lines.append(
            f"| {_label(r)} | {statistics.median(rss):.1f} MB ({_range(rss, '{:.1f}')}) | "
            f"{statistics.median(pss):.1f} MB | {statistics.median(cpu):.2f} % ({_range(cpu, '{:.2f}')}) | {etcd} | "
            f"{_ratio(results, r, lambda x: statistics.median(_fp(x, 'rss_mb')) if _fp(x, 'rss_mb') else None)} | "
            f"{_ratio(results, r, lambda x: statistics.median(_fp(x, 'cpu_pct')) if _fp(x, 'cpu_pct') else None)} |")
    return lines


def table_rounds(results: list[dict[str, Any]], figure: str, key: str, title: str, extra: str = "") -> list[str]:
    lines = [title, "", f"| system | ttl/loop_wait/retry | median | min-max |{' ' + extra + ' |' if extra else ''}"
             " ratio raftpg/Patroni |", "|---|---|---|---|" + ("---|" if extra else "") + "---|"]
    for r in results:
        values = [row[key] for row in r.get(figure) or [] if row.get(key) is not None]
        if not values:
            continue
        cell = ""
        if extra:
            cell = f" {sum(row.get('lost_rows') or 0 for row in r[figure])} |"
        lines.append(f"| {_label(r)} | {statistics.median(values):.3f} s | {_range(values, '{:.3f}')} s |{cell} "
                     f"{_ratio(results, r, lambda x: _median_of(x, figure, key))} |")
    return lines


def table_latency(results: list[dict[str, Any]]) -> list[str]:
    lines = ["**GET /primary** on the primary, one keep-alive client back to back", "",
             "| system | ttl/loop_wait/retry | requests | p50 | p99 | reconnections | ratio p50 |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        samples = r.get("latency_ms")
        if samples:
            lines.append(f"| {_label(r)} | {len(samples)} | {_pct(samples, 0.5):.2f} ms | {_pct(samples, 0.99):.2f} ms | "
                         f"{r.get('latency_reconnects', 0)} | "
                         f"{_ratio(results, r, lambda x: _pct(x['latency_ms'], 0.5) if x.get('latency_ms') else None)} |")
    return lines


def report(directory: str) -> None:
    results = load(directory)
    if not results:
        print(f"no results in {directory}")
        return
    when = sorted({r["started"][:10] for r in results})
    loads = [x for r in results for x in (r.get("load_before"), r.get("load_after")) if x is not None]
    print(f"\nmachine: {results[0].get('machine', '?')}; measured {', '.join(when)}; trials per figure: "
          f"{results[0].get('trials')}; 1-min load average during the runs {min(loads):.1f}-{max(loads):.1f}\n")
    for lines in (table_bootstrap(results), table_footprint(results), table_latency(results),
                  table_rounds(results, "switchover", "gap_s",
                               "**Planned switchover**: write gap (last write on the old primary to the first on "
                               "the new)"),
                  table_rounds(results, "failover", "failover_s",
                               "**Unplanned failover** (SIGKILL of agent and PostgreSQL): kill to the first write "
                               "on the new primary", extra="lost acked rows")):
        if len(lines) > 4:
            print("\n".join(lines) + "\n")


if __name__ == "__main__":
    report(sys.argv[1] if len(sys.argv) > 1 else "/tmp/raftpg-compare")
