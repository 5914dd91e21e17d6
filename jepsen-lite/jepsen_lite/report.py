"""report.html + timeline.png for a run directory (matplotlib, Agg backend).

The timeline has one lane per node. Green dots: ok writes, drawn in the lane of the node that *says* it
accepted them (the server-reported ``primary``), so two lanes with green at the same time are two primaries.
Red crosses: failed writes, orange ticks: unknown (info), in the lane of the node the client talked to.
Shaded bands: fault windows, labelled with the fault name.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from jepsen_lite.checkers import summary
from jepsen_lite.checkers.primaries import WRITE_FS
from jepsen_lite.checkers.result import CheckResult
from jepsen_lite.history import History

COLORS = ["#8dd3c7", "#ffffb3", "#bebada", "#fb8072", "#80b1d3", "#fdb462", "#b3de69", "#fccde5", "#d9d9d9",
          "#bc80bd", "#ccebc5", "#ffed6f"]


def plot_timeline(history: History, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    writes = [p for p in history.pairs if p.f in WRITE_FS]
    lanes = sorted({str(p.get("primary")) for p in writes if p.type == "ok" and p.get("primary") is not None}
                   | {p.node for p in writes if p.node})
    y = {name: i for i, name in enumerate(lanes)}
    fig, ax = plt.subplots(figsize=(14, 2.2 + 0.6 * max(1, len(lanes))), dpi=100)
    fault_names = sorted({w.f for w in history.fault_windows})
    color = {f: COLORS[i % len(COLORS)] for i, f in enumerate(fault_names)}
    end = max([op.time for op in history.ops] or [1.0])
    for w in history.fault_windows:
        stop = w.stop if w.stop is not None else end
        ax.axvspan(w.start, stop, color=color[w.f], alpha=0.45, lw=0)
        ax.text(w.start, len(lanes) - 0.45, w.f, fontsize=7, rotation=90, va="top", ha="left")
    series = {
        "ok (lane = server-reported primary)": ([], [], "o", "#1a9850", 3),
        "fail (lane = node contacted)": ([], [], "x", "#d73027", 3),
        "info / unknown": ([], [], "|", "#fc8d59", 6),
    }
    for p in writes:
        if p.type == "ok" and p.get("primary") is not None and p.end is not None:
            xs, ys, *_ = series["ok (lane = server-reported primary)"]
            xs.append(p.end)
            ys.append(y[str(p.get("primary"))])
        elif p.node in y:
            key = "fail (lane = node contacted)" if p.type == "fail" else "info / unknown"
            xs, ys, *_ = series[key]
            xs.append(p.end if p.end is not None else p.start)
            ys.append(y[p.node] + (0.18 if p.type == "fail" else -0.18))
    for label, (xs, ys, marker, c, size) in series.items():
        if xs:
            ax.scatter(xs, ys, s=size, marker=marker, color=c, label=f"{label}: {len(xs)}", linewidths=0.6)
    ax.set_yticks(range(len(lanes)), lanes)
    ax.set_ylim(-0.6, len(lanes) - 0.4)
    ax.set_xlim(0, end)
    ax.set_xlabel("harness time (s)")
    ax.set_title(title or "writes by accepting node, and faults")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=3, fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(out: Path, history: History, results: Sequence[CheckResult],
                 fault_verdicts: Sequence[tuple[str, bool | None, str]] = ()) -> Path:
    png = out / "timeline.png"
    plot_timeline(history, png, title=out.name)
    shown = {True: "yes", False: "<b>NO</b>", None: "not started"}
    rows = "".join(f"<tr><td>{html.escape(f)}</td><td>{shown[ok]}</td>"
                   f"<td><code>{html.escape(ev)}</code></td></tr>" for f, ok, ev in fault_verdicts)
    logs = sorted(p.relative_to(out) for p in out.glob("nodes/*/agent.log"))
    links = " ".join(f'<a href="{p}">{html.escape(str(p))}</a>' for p in logs)
    verdicts = "".join(f"<li><b>{html.escape(r.name)}</b>: {r.verdict}</li>" for r in results)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>jepsen-lite {html.escape(out.name)}</title>
<style>body{{font-family:sans-serif;margin:1.5em}} pre{{background:#f6f6f6;padding:1em;overflow-x:auto}}
td{{padding:2px 8px;border-bottom:1px solid #ddd;font-size:90%}}</style></head><body>
<h1>jepsen-lite run {html.escape(out.name)}</h1>
<ul>{verdicts}</ul>
<img src="timeline.png" alt="timeline" style="max-width:100%">
<h2>Checker results</h2><pre>{html.escape(summary(results))}</pre>
<h2>Faults (verification)</h2><table><tr><th>fault</th><th>verified</th><th>evidence</th></tr>{rows}</table>
<h2>Files</h2><p><a href="history.jsonl">history.jsonl</a> <a href="nemesis.log">nemesis.log</a>
<a href="schedule.json">schedule.json</a> <a href="summary.txt">summary.txt</a> <a href="run.json">run.json</a>
{links}</p>
</body></html>
"""
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
