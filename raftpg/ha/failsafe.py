"""Patroni's ``failsafe_mode``, as pure rules beside ``decide``.

A primary that cannot reach the DCS normally demotes before its lease could expire. With failsafe_mode it
may keep running instead, if every member of the *failsafe topology* (the data members it published in
the status key while it could still write there) answers ``POST /failsafe`` accepting it as the primary.
Each accepted round extends its lease to ``sent + ttl``, exactly as a confirmed renewal does: the fencing
supervisor's deadline and the watchdog follow it.

Safety rests on the members' side of the bargain. A member that accepted a request does not race for the
free leader key for ``ttl`` after it came, which outlasts the lease the primary drew from that round (the
round was sent before the request arrived). Three more holes are closed here:
- a member left out of the published topology never races (nobody asked it, so nobody counts on it);
- an agent that started less than ``ttl`` ago does not race (a request may have come before it listened);
- a primary not named in its own topology, or whose topology is unreadable, does not ask: it demotes.
See ha/DESIGN.md, "Failsafe mode", for why it is refused on the embedded Raft.
"""

from __future__ import annotations

from raftpg.ha.actions import AskFailsafe
from raftpg.ha.inputs import Inputs, Me
from raftpg.model import ClusterView

RUNNING_AS_LEADER = "Running as a leader"  # Patroni's answer to POST /failsafe from a running primary
NOT_ENABLED = "failsafe_mode is not enabled"
# Kept before the demotion point for asking the members (AskFailsafe waits <= 2 s): a DCS call of a primary
# that remembers a topology (its read, its renewal) never runs into this time.
ROUND_S = 2.5


def reserve_s(memory_members: tuple[tuple[str, str], ...] | None) -> float:
    """How much of the lease a DCS call must leave for a failsafe round: ROUND_S once a topology is known."""
    return ROUND_S if memory_members else 0.0


def enabled(view: ClusterView, me: Me) -> bool:
    return view.config.failsafe_mode and me.failsafe_refusal is None


def topology(view: ClusterView, me: Me) -> dict[str, str] | None:
    """What the primary publishes in the status key: every data member with a REST API (witnesses never
    take the leader key, so nobody needs their word), or None with failsafe_mode off."""
    if not enabled(view, me):
        return None
    found = {m.name: m.api_url for m in view.members if m.api_url and not m.witness}
    if me.api_url:
        found[me.name] = me.api_url
    return found


def remembered(view: ClusterView | None, me: Me, before: tuple[tuple[str, str], ...] | None
               ) -> tuple[tuple[str, str], ...] | None:
    """The topology a primary cut off from the DCS will ask: the one last read, while failsafe_mode was on."""
    if view is None:
        return before
    if not enabled(view, me):
        return None
    return view.failsafe


def ask(i: Inputs) -> AskFailsafe | None:
    """The DCS is unreachable and I am the primary: whom to ask to keep me, or None (then I demote)."""
    members = dict(i.memory.failsafe_members or ())
    if i.me.name not in members:
        return None
    return AskFailsafe(tuple(sorted((name, url) for name, url in members.items() if name != i.me.name)))


def race_hold(i: Inputs, view: ClusterView) -> str | None:
    """Why this member must not race for the free leader key under failsafe_mode, or None."""
    if not enabled(view, i.me):
        return None
    seen, ttl_s = i.failsafe, view.config.ttl_s
    if view.failsafe is not None and i.me.name not in dict(view.failsafe):
        return "failsafe_mode: I am not in the published failsafe topology, so no primary asked me"
    if seen.asked_at is not None and i.now - seen.asked_at < ttl_s:
        return (f"failsafe_mode: {seen.asked_by} asked {i.now - seen.asked_at:.1f}s ago to stay the primary "
                f"(POST /failsafe); it may still be writing")
    if i.now - seen.agent_started < ttl_s:
        return (f"failsafe_mode: this agent started {i.now - seen.agent_started:.1f}s ago, less than ttl: a "
                f"primary kept by failsafe may have asked before I listened")
    return None
