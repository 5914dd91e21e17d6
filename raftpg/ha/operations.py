"""Operator requests that change the cluster through the DCS: switchover, failover, pause, dynamic config.

Plain functions over the :class:`~raftpg.dcs.base.Dcs` port and a :class:`~raftpg.model.ClusterView`; no
aiohttp, no asyncio. They are blocking (every DCS call is bounded by ``timeout_s``), so the REST API runs
them in a worker thread. The ``check_*`` functions are pure and say why a request is refused; the
``request_*`` functions read a fresh linearizable view, check, and write with compare-and-set on the
revision they read, so two operators racing cannot both win.

These functions only *record* a request. The HA loop carries it out: the primary hands its leader key to
the candidate (``decide._switchover``), the named candidate races for a free key (``_failover_race``).
A request never bypasses the rules in DESIGN.md section 3: eligibility here is ``ClusterView.ineligibility``,
the same answer ``decide`` gives at the moment of acting.

Refusals raise :class:`OperationError` with an HTTP status the API passes through: 400 a malformed
request, 404 nothing to cancel, 409 a concurrent change (retry), 412 the cluster's state forbids it,
503 the DCS could not answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from raftpg.config import ConfigError, dynamic_config_warnings, validate_dynamic_config
from raftpg.dcs.base import Dcs, DcsError
from raftpg.model import ClusterView, DynamicConfig, Failover, Member

CAS_ATTEMPTS = 3


class Refusal(StrEnum):
    """Why an operator request was refused; the REST API maps each to an HTTP status (api/http.py)."""

    INVALID = "invalid"            # the request itself is wrong
    UNKNOWN = "unknown"            # it names something that does not exist
    CONFLICT = "conflict"          # what it would change changed meanwhile
    REFUSED = "refused"            # the cluster's state forbids it now
    UNAVAILABLE = "unavailable"    # the DCS could not be reached


class OperationError(Exception):
    """A refused operator request: ``message`` for humans, ``kind`` for whoever maps it (the API)."""

    def __init__(self, message: str, kind: Refusal = Refusal.REFUSED) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind


@dataclass(frozen=True)
class FailoverRequested:
    """The failover key as written: a switchover (``leader`` set) or a manual failover (only candidate)."""

    leader: str | None
    candidate: str | None
    scheduled_at: float | None  # epoch seconds (a human's time of day), None for "now"


@dataclass(frozen=True)
class FailoverCancelled:
    leader: str | None
    candidate: str | None
    scheduled_at: float | None


@dataclass(frozen=True)
class ConfigChanged:
    config: dict[str, Any]          # the document now stored (normalized by validate_dynamic_config)
    changed: bool                   # False: the result equalled the stored document, nothing was written
    warnings: tuple[str, ...] = ()  # Patroni-only keys raftpg keeps but does not act on


@dataclass(frozen=True)
class PauseChanged:
    paused: bool
    changed: bool


# --------------------------------------------------------------------------------------- reading


def load_view(dcs: Dcs, timeout_s: float) -> ClusterView:
    """A linearizable snapshot, or OperationError 503 when the store cannot answer in time."""
    try:
        return dcs.load(linearizable=True, timeout_s=timeout_s)
    except DcsError as exc:
        raise OperationError(f"the DCS is unavailable: {exc}", Refusal.UNAVAILABLE) from exc


def parse_scheduled_at(text: str | None, now_wall: float) -> float | None:
    """ISO-8601 with a timezone, in the future -> epoch seconds; None/''/'now' -> None (at once)."""
    if text is None or (isinstance(text, str) and text.strip().lower() in ("", "now")):
        return None
    if not isinstance(text, str):
        raise OperationError("scheduled_at: must be an ISO-8601 string", Refusal.INVALID)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise OperationError(f"scheduled_at: not an ISO-8601 date and time: {text!r}", Refusal.INVALID) from None
    if when.tzinfo is None:
        raise OperationError(
            f"scheduled_at: must include a timezone, e.g. {text.strip()}+00:00 (got {text!r})", Refusal.INVALID)
    at = when.timestamp()
    if at <= now_wall:
        raise OperationError(f"scheduled_at: must be in the future (got {text!r})", Refusal.INVALID)
    return at


def iso_time(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()


# --------------------------------------------------------------------------------------- checks


def _why_not(view: ClusterView, member: Member) -> str:
    return view.eligibility_view().ineligibility(member) or "eligible"


STANDBY_SWITCHOVER = ("this is a standby cluster: its leader is not a primary and hands nothing over; stop it "
                      "(another member becomes the standby leader within the TTL) or promote-cluster first")


def check_switchover(view: ClusterView, leader: str | None, candidate: str | None) -> Member | None:
    """Refuse a switchover the primary would refuse, with the reason; return the named candidate."""
    if view.config.standby_cluster is not None:
        raise OperationError(STANDBY_SWITCHOVER)
    if view.leader is None:
        raise OperationError("the cluster has no leader: use failover instead")
    if leader is not None and leader != view.leader.name:
        raise OperationError(f"{leader} is not the leader (the leader is {view.leader.name})")
    primary = view.leader_member
    if primary is None or not primary.is_running:
        raise OperationError(f"the leader {view.leader.name} is not running: use failover instead")
    if view.failover is not None:
        raise OperationError(_pending_text(view), Refusal.CONFLICT)
    # the primary judges a planned switchover by what streams from it, not by published lag (decide)
    planned = replace(view, last_lsn=None)
    if candidate is None:
        if not planned.eligibility_view().failover_candidates(exclude=view.leader.name):
            others = [m for m in view.data_members if m.name != view.leader.name]
            reasons = "; ".join(_why_not(planned, m) for m in others) or "there are no other members"
            raise OperationError(f"no eligible candidate: {reasons}")
        return None
    member = _eligible_candidate(planned, candidate, allow_lag=False)
    if member.state != "streaming":
        raise OperationError(f"candidate {candidate} is not streaming from the primary (state {member.state})")
    return member


def check_failover(view: ClusterView, candidate: str | None, force: bool) -> Member:
    """A manual failover names its candidate and is for a cluster without a healthy primary.

    With ``force`` and a healthy primary it becomes a switchover to the candidate (the primary hands its
    key over only to a fully eligible candidate). Without a primary the candidate may lag: the operator
    explicitly accepts losing the WAL it has not received (``decide`` allows exactly that exception).
    """
    if not candidate:
        raise OperationError("candidate: required for a failover", Refusal.INVALID)
    healthy = view.leader is not None and (view.leader_member or Member("")).is_running
    if healthy and view.config.standby_cluster is not None:
        raise OperationError(STANDBY_SWITCHOVER)
    if healthy and not force:
        assert view.leader is not None
        raise OperationError(
            f"the cluster has a healthy leader {view.leader.name}: use switchover, or force a failover")
    if view.failover is not None:
        raise OperationError(_pending_text(view), Refusal.CONFLICT)
    return _eligible_candidate(view, candidate, allow_lag=not healthy)


def _eligible_candidate(view: ClusterView, name: str, allow_lag: bool) -> Member:
    member = view.member(name)
    if member is None:
        raise OperationError(f"candidate {name} is not a member of the cluster")
    if view.leader is not None and view.leader.name == name:
        raise OperationError(f"candidate {name} is already the leader")
    reason = view.eligibility_view().ineligibility(member)
    if reason and not (allow_lag and " lags " in reason):
        raise OperationError(f"candidate {name} is not eligible: {reason}")
    return member


def _pending_text(view: ClusterView) -> str:
    failover = view.failover
    assert failover is not None
    what = f"from {failover.leader} " if failover.leader else ""
    what += f"to {failover.candidate} " if failover.candidate else "to the best candidate "
    when = f"at {iso_time(failover.scheduled_at)}" if failover.scheduled_at else "now"
    return f"a switchover {what}{when} is already pending: cancel it first"


# --------------------------------------------------------------------------------------- requests


def request_switchover(dcs: Dcs, *, leader: str | None, candidate: str | None, scheduled_at: str | None,
                       now_wall: float, timeout_s: float) -> FailoverRequested:
    """Record a planned switchover in the failover key (created only if absent)."""
    at = parse_scheduled_at(scheduled_at, now_wall)
    view = load_view(dcs, timeout_s)
    check_switchover(view, leader, candidate)
    assert view.leader is not None
    _write_failover(dcs, Failover(view.leader.name, candidate or None, at), timeout_s)
    return FailoverRequested(view.leader.name, candidate, at)


def request_failover(dcs: Dcs, *, candidate: str | None, force: bool, timeout_s: float) -> FailoverRequested:
    """Record a manual failover to ``candidate`` in the failover key (created only if absent)."""
    view = load_view(dcs, timeout_s)
    member = check_failover(view, candidate, force)
    _write_failover(dcs, Failover(None, member.name), timeout_s)
    return FailoverRequested(None, member.name, None)


def _write_failover(dcs: Dcs, request: Failover, timeout_s: float) -> None:
    try:
        written = dcs.set_failover(request, None, timeout_s=timeout_s)
    except DcsError as exc:
        raise OperationError(f"the DCS is unavailable: {exc}", Refusal.UNAVAILABLE) from exc
    if not written:
        raise OperationError("another switchover or failover was requested at the same time: retry", Refusal.CONFLICT)


def cancel_switchover(dcs: Dcs, *, timeout_s: float) -> FailoverCancelled:
    """Delete the failover key (only the version we read: a newer request is not cancelled blindly)."""
    view = load_view(dcs, timeout_s)
    failover = view.failover
    if failover is None:
        raise OperationError("no switchover or failover is pending", Refusal.UNKNOWN)
    try:
        deleted = dcs.set_failover(None, failover.revision, timeout_s=timeout_s)
    except DcsError as exc:
        raise OperationError(f"the DCS is unavailable: {exc}", Refusal.UNAVAILABLE) from exc
    if not deleted:
        raise OperationError("the pending switchover changed (or ran) meanwhile: check and retry", Refusal.CONFLICT)
    return FailoverCancelled(failover.leader, failover.candidate, failover.scheduled_at)


def remove_cluster(dcs: Dcs, leader: str | None, *, timeout_s: float) -> None:
    """Delete every key of the cluster (patronictl's ``remove``), only if ``leader`` still names the
    holder of the leader key (None: no holder): the operator confirmed what they saw, and a cluster whose
    leader changed meanwhile is not wiped on that confirmation. Running agents register again at once;
    a running primary re-registers its own data (only a former primary may) and the others follow it."""
    view = load_view(dcs, timeout_s)
    holder = view.leader.name if view.leader else None
    if holder != leader:
        raise OperationError(f"leader: the cluster's leader is {holder or 'nobody'}, not {leader or 'nobody'}",
                             Refusal.CONFLICT)
    try:
        dcs.delete_cluster(timeout_s=timeout_s)
    except DcsError as exc:
        raise OperationError(f"the DCS is unavailable: {exc}", Refusal.UNAVAILABLE) from exc


# --------------------------------------------------------------------------------------- config


def merge_patch(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """JSON merge patch (RFC 7386): mappings merge recursively, ``None`` deletes, anything else replaces."""
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_patch(merged[key], value)
        elif isinstance(value, Mapping):
            merged[key] = merge_patch({}, value)
        else:
            merged[key] = value
    return merged


def validated(document: Any) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The normalized document and its warnings, or OperationError 400 naming every bad key path."""
    if not isinstance(document, Mapping):
        raise OperationError("config: must be a JSON object", Refusal.INVALID)
    try:
        return validate_dynamic_config(document), dynamic_config_warnings(document)
    except ConfigError as exc:
        raise OperationError("; ".join(exc.errors), Refusal.INVALID) from None


def _store_config(dcs: Dcs, build: Any, timeout_s: float) -> ConfigChanged:
    """Read, build the new document from the stored one, validate, compare-and-set; retry on a lost race."""
    for _ in range(CAS_ATTEMPTS):
        view = load_view(dcs, timeout_s)
        if view.initialize is None:
            raise OperationError("the cluster is not initialized yet: no config to change")
        current = view.config.to_dict() if view.config_revision is not None else {}
        document, warnings = validated(build(current))
        refusal = dcs.failsafe_refusal
        if refusal and DynamicConfig.from_dict(document).failsafe_mode:
            raise OperationError(f"failsafe_mode: {refusal}", Refusal.INVALID)
        if view.config_revision is not None and document == current:
            return ConfigChanged(document, False, warnings)
        try:
            stored = dcs.set_config(document, view.config_revision, timeout_s=timeout_s)
        except DcsError as exc:
            raise OperationError(f"the DCS is unavailable: {exc}", Refusal.UNAVAILABLE) from exc
        if stored:
            return ConfigChanged(document, True, warnings)
    raise OperationError("the config kept changing concurrently: retry", Refusal.CONFLICT)


def patch_config(dcs: Dcs, patch: Any, *, timeout_s: float) -> ConfigChanged:
    """Merge ``patch`` into the stored dynamic config (``null`` deletes a key; a deleted setting takes its
    default), validate the result and store it. A concurrent edit is merged into, not overwritten."""
    if not isinstance(patch, Mapping):
        raise OperationError("config: must be a JSON object", Refusal.INVALID)
    return _store_config(dcs, lambda current: merge_patch(current, patch), timeout_s)


def put_config(dcs: Dcs, document: Any, *, timeout_s: float) -> ConfigChanged:
    """Replace the stored dynamic config with ``document`` (validated first)."""
    validated(document)  # a bad document is refused even when the DCS is down
    return _store_config(dcs, lambda current: dict(document), timeout_s)


def set_pause(dcs: Dcs, paused: bool, *, timeout_s: float) -> PauseChanged:
    """Pause (no automatic promotion, demotion or restart anywhere) or resume, via the config key."""
    result = _store_config(dcs, lambda current: merge_patch(current, {"pause": True if paused else None}),
                           timeout_s)
    return PauseChanged(paused, result.changed)
