"""C2 no-concurrent-primaries: from acknowledged writes only, prove that two primaries accepted writes.

Input: ``ok`` completions of write ops (``insert``, ``transfer``, ``write``, ``cas``, ``append``, ``probe``)
carrying the server-reported ``primary`` (node name, e.g. ``current_setting('cluster_name')``) and
``timeline``, and optionally ``sysid`` and ``lease_epoch`` (the leader-key revision of the primary's
promotion, ``current_setting('raftpg.leader_epoch', true)``, read in the writing transaction). Only acked writes
are evidence: ``fail`` and ``info`` writes say nothing about who was writable.

An *epoch* is one (primary, sysid, timeline, lease_epoch) value; from its acked writes it has
``last_invoke`` (latest invoke time) and ``first_ack`` (earliest completion time). Epochs of one sysid
are ordered by ``lease_epoch`` when both have one and they differ (exact: one leader-key acquisition each),
else by ``timeline``; otherwise unordered.

Violations, each a proof on the harness's clock (strict inequalities: equal times are not a proof):

(a) *stale epoch*: X older than Y and ``X.last_invoke > Y.first_ack`` — a write acked in the old epoch
    was invoked after a write acked in the newer epoch had completed: the old primary was still writable
    after the new one had accepted a write.
(b) *same epoch, two nodes*: two different nodes acked writes with equal (sysid, timeline, lease_epoch),
    at least one of timeline / lease_epoch known — two promotions claiming one history.
(c) *several sysids*: more than one sysid acked writes (a second cluster was initialised).
(d) *alternation*, for epochs X (node B) and Y (node A) that (a) cannot order (e.g. no timeline): a write
    y of Y with ``y.invoke > X.first_ack`` and ``y.complete < X.last_invoke`` — B acked, then A, then B
    again within one epoch of B. For ordered epochs (d) implies (a), so it is only checked when unordered.
(e) *timeline regression*: X before Y by ``lease_epoch`` (both known, same sysid) but X's timeline is later
    than Y's: a newer lease accepted writes on an older timeline, i.e. a term was rolled back (a node that
    missed a promotion became primary again without one). Without lease epochs the same event is a
    rule (a) violation (the older timeline's write comes after the newer one's ack).

Not a violation: per-epoch windows [first invoke, last complete] that merely overlap, e.g. a slow client
whose write was invoked on the old primary before the new primary's first ack and acked after it; only
"completed before invoked" proves concurrency. Reported as figures: ``max_window_overlap_ms`` (largest
overlap of two different nodes' windows) and ``min_handover_gap_ms`` (min over ordered X older than Y of
Y.first_ack - X's last completion; negative = acks interleaved in time, yet no provable violation).

Too little evidence (fewer acked writes than ``min_acked``, counted during faults if the history has any,
or fewer than ``min_epochs`` epochs, i.e. no primary change was observed) gives ``"unknown"``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from jepsen_lite.checkers.result import (
    CheckResult,
    acked_evidence,
    evidence_detail,
    listed,
    verdict,
)
from jepsen_lite.history import History, Pair

NAME = "no-concurrent-primaries"
WRITE_FS = frozenset({"insert", "write", "cas", "append", "probe", "transfer"})
MAX_DETAILS = 20


@dataclass(frozen=True)
class Epoch:
    node: str
    sysid: Any
    timeline: int | None
    lease_epoch: Any
    writes: tuple[Pair, ...]

    @cached_property
    def first_invoke(self) -> float:
        return min(p.start for p in self.writes)

    @cached_property
    def last_invoked_write(self) -> Pair:
        return max(self.writes, key=lambda p: p.start)

    @cached_property
    def first_acked_write(self) -> Pair:
        return min(self.writes, key=_end)

    @cached_property
    def last_complete(self) -> float:
        return max(_end(p) for p in self.writes)

    def label(self) -> str:
        parts = [self.node, f"timeline {self.timeline}"]
        if self.lease_epoch is not None:
            parts.append(f"lease_epoch {self.lease_epoch}")
        if self.sysid is not None:
            parts.append(f"sysid {self.sysid}")
        return "(" + ", ".join(parts) + ")"


def check(history: History, *, write_fs: frozenset[str] = WRITE_FS, min_acked: int = 200,
          min_epochs: int = 2) -> CheckResult:
    acked = [p for p in history.pairs if p.f in write_fs and p.type == "ok"]
    attributed = [p for p in acked if p.get("primary") is not None]
    epochs = _epochs(attributed)
    violations = _same_epoch(epochs) + _several_sysids(epochs)
    for x, y in itertools.permutations(epochs, 2):
        violations += _stale(x, y) + _alternation(x, y) + _regression(x, y)

    have, what = acked_evidence(attributed, history.fault_windows)
    counts: dict[str, int | float] = {
        "acknowledged": len(acked), "attributed": len(attributed), "evidence": have,
        "epochs": len(epochs), "nodes": len({e.node for e in epochs}), "violations": len(violations),
    }
    counts.update(_figures(epochs))
    details = [f"epoch {e.label()}: {len(e.writes)} acked writes, "
               f"t={e.first_invoke:.3f}..{e.last_complete:.3f}" for e in epochs]
    details = violations[:MAX_DETAILS] + details[:MAX_DETAILS]
    if len(violations) > MAX_DETAILS:
        details.insert(MAX_DETAILS, f"... {len(violations) - MAX_DETAILS} more violations")
    if len(attributed) < len(acked):
        details.append(f"WARNING: {len(acked) - len(attributed)} acked writes have no 'primary' field "
                       f"and were ignored")
    enough = have >= min_acked and len(epochs) >= min_epochs
    if have < min_acked:
        details.append(evidence_detail(have, what, min_acked))
    if len(epochs) < min_epochs:
        details.append(f"inconclusive: {len(epochs)} primary epochs < minimum {min_epochs} "
                       f"(no primary change observed)")
    return CheckResult(NAME, verdict(bool(violations), enough), counts, tuple(details))


def _end(p: Pair) -> float:
    return p.end if p.end is not None else math.inf


def _epochs(acked: Sequence[Pair]) -> list[Epoch]:
    groups: dict[tuple, list[Pair]] = {}
    for p in acked:
        key = (str(p.get("primary")), p.get("sysid"), p.get("timeline"), p.get("lease_epoch"))
        groups.setdefault(key, []).append(p)
    epochs = [Epoch(*key, writes=tuple(ws)) for key, ws in groups.items()]
    return sorted(epochs, key=lambda e: e.first_invoke)


def _older(x: Epoch, y: Epoch) -> bool | None:
    """True if x precedes y, False if y precedes x, None if the history cannot order them."""
    if x.sysid != y.sysid:
        return None
    if x.lease_epoch is not None and y.lease_epoch is not None and x.lease_epoch != y.lease_epoch:
        return _epoch_key(x.lease_epoch) < _epoch_key(y.lease_epoch)
    if x.timeline is not None and y.timeline is not None and x.timeline != y.timeline:
        return bool(x.timeline < y.timeline)
    return None


def _stale(x: Epoch, y: Epoch) -> list[str]:
    """Rule (a) for the ordered pair x older than y."""
    if _older(x, y) is not True:
        return []
    late, first_new = x.last_invoked_write, y.first_acked_write
    if late.start <= _end(first_new):
        return []
    gap_ms = (late.start - _end(first_new)) * 1000
    return [f"VIOLATION stale epoch: {late.describe()} acked by older epoch {x.label()} was invoked "
            f"{gap_ms:.1f} ms after {first_new.describe()} acked by newer epoch {y.label()} completed"]


def _regression(x: Epoch, y: Epoch) -> list[str]:
    """Rule (e) for x before y by lease epoch."""
    if x.sysid != y.sysid or None in (x.lease_epoch, y.lease_epoch, x.timeline, y.timeline):
        return []
    if not (_epoch_key(x.lease_epoch) < _epoch_key(y.lease_epoch) and x.timeline > y.timeline):  # type: ignore[operator]
        return []
    return [f"VIOLATION timeline regression: {y.label()} holds a later lease epoch than {x.label()} but acked "
            f"writes on an older timeline (a rolled-back term), e.g. {y.writes[0].describe()}"]


def _epoch_key(value: Any) -> tuple[int, Any]:
    """Lease epochs compare as numbers when they are (the leader-key revision), else as text."""
    return (0, value) if isinstance(value, int) else (1, str(value))


def _same_epoch(epochs: Sequence[Epoch]) -> list[str]:
    """Rule (b)."""
    by_identity: dict[tuple, list[Epoch]] = {}
    for e in epochs:
        if e.timeline is not None or e.lease_epoch is not None:
            by_identity.setdefault((e.sysid, e.timeline, e.lease_epoch), []).append(e)
    return [f"VIOLATION same epoch on two nodes: {', '.join(e.label() for e in group)} all acked writes, "
            f"e.g. {group[0].writes[0].describe()} and {group[1].writes[0].describe()}"
            for group in by_identity.values() if len(group) > 1]


def _several_sysids(epochs: Sequence[Epoch]) -> list[str]:
    """Rule (c); writes without a sysid are not counted as another cluster."""
    sysids = {e.sysid for e in epochs if e.sysid is not None}
    if len(sysids) <= 1:
        return []
    return [f"VIOLATION several system identifiers acked writes: {listed(sysids)}"]


def _alternation(x: Epoch, y: Epoch) -> list[str]:
    """Rule (d): node of y acked inside x's proven span, for epochs rule (a) cannot order."""
    if x.node == y.node or _older(x, y) is not None:
        return []
    after, before = _end(x.first_acked_write), x.last_invoked_write.start
    inside = [p for p in y.writes if p.start > after and _end(p) < before]
    if not inside:
        return []
    return [f"VIOLATION alternation {x.node}->{y.node}->{x.node}: {inside[0].describe()} acked by "
            f"{y.label()} was invoked after {x.first_acked_write.describe()} and completed before "
            f"{x.last_invoked_write.describe()}, both acked by {x.label()}"]


def _figures(epochs: Sequence[Epoch]) -> dict[str, float]:
    figures: dict[str, float] = {}
    overlaps = [min(x.last_complete, y.last_complete) - max(x.first_invoke, y.first_invoke)
                for x, y in itertools.combinations(epochs, 2) if x.node != y.node]
    if overlaps:
        figures["max_window_overlap_ms"] = round(max(0.0, max(overlaps)) * 1000, 3)
    gaps = [_end(y.first_acked_write) - x.last_complete
            for x, y in itertools.permutations(epochs, 2) if _older(x, y) is True]
    if gaps:
        figures["min_handover_gap_ms"] = round(min(gaps) * 1000, 3)
    return figures
