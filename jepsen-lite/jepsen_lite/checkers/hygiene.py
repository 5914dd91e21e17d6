"""C8 hygiene (FAULTS.md): the agents' own logs after the run. Faults may make an agent log warnings and
errors, never a Python traceback (an exception nobody handled, or one logged as a surprise) nor a request
the REST API failed with an unhandled error (aiohttp's "Error handling request"). Each one found is a
violation, listed with its node and exception line; no agent log at all is inconclusive.
"""

from __future__ import annotations

from pathlib import Path

from jepsen_lite.checkers.result import CheckResult, verdict

NAME = "hygiene"
TRACEBACK = "Traceback (most recent call last):"
SERVER_ERROR = "Error handling request"


def findings(text: str) -> list[str]:
    """One line per traceback (its exception line) and per unhandled REST error."""
    found, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if TRACEBACK in line:
            tail = next((ln for ln in lines[i + 1:i + 200] if ln and not ln.startswith((" ", "\t"))), "?")
            found.append(f"traceback: {tail.strip()[:200]}")
        elif SERVER_ERROR in line:
            found.append(f"REST error: {line.strip()[:200]}")
    return found


def check_logs(nodes_dir: Path, log_name: str = "agent.log") -> CheckResult:
    logs = sorted(nodes_dir.glob(f"*/{log_name}"))
    problems = [f"VIOLATION {path.parent.name}: {item}" for path in logs
                for item in findings(path.read_text(encoding="utf-8", errors="replace"))]
    counts: dict[str, int | float] = {"logs": len(logs), "findings": len(problems)}
    details = problems[:20] or [f"{len(logs)} agent logs without a traceback or an unhandled REST error"]
    return CheckResult(NAME, verdict(bool(problems), bool(logs)), counts, tuple(details))
