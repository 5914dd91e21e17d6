"""Quorum commit (``synchronous_mode: quorum``): the primary's plan, and the failover candidate's vote count. Pure.

Two settings say who holds an acknowledged commit, and they must always agree:

- PostgreSQL's ``synchronous_standby_names = 'ANY n (S)'``: a commit is acknowledged once ``n`` of the
  standbys ``S`` have flushed it (``FIRST n (S)`` promises at least as much; ``'*'`` means one standby of
  any name; ``''`` none: the primary alone holds the commit);
- the sync key ``(leader, voters V, quorum q)``: a failover candidate that is not the key's leader must
  hear from ``q + 1`` voters (itself included when it is one) that none of them is ahead of it.

The invariant: every set of ``n`` standbys of ``S`` meets every set of ``q + 1`` voters, so some voter that
answers holds the newest acknowledged commit, and the candidate is at least as far (``covered``:
``q >= |V| - max(0, n - |S - V|)``). Patroni keeps ``q + n >= |V | S|``; the two agree whenever that
formula's ``n`` is not smaller than ``|S - V|``, and ours is exact in the other cases.

That covers the commits acknowledged under the *current* ``S``. A change of the key can also drop what
older settings promised: a key that makes promotion easier (``weaker``) is written only once enough voters
have flushed past ``safe_lsn``, the primary's position observed while the current ``S`` was already in
force (so every commit acknowledged under an older setting lies below it). Patroni's
``numsync_confirmed`` plays this part. A key that only makes promotion harder is always safe, and so is
any ``S`` the current key covers: each step below is one of those, so any prefix of a plan is safe.

The target for the streaming standbys ``A`` that may vote (valid, not a witness, no ``nosync``) and
``k = synchronous_node_count``: ``S = V = A``, ``n = min(k, |A|)``, ``q = |A| - n``; with no standby, an
asynchronous primary (``''``) whose key names it alone (non-strict), or ``'*'`` (strict: commits wait).
Strict mode keeps ``n = k`` even with fewer standbys: commits wait rather than be acknowledged by fewer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from raftpg.ha.actions import Action, SetSynchronousStandbys, WriteSyncKey
from raftpg.ha.inputs import Memory
from raftpg.ha.sync import plan_sync, quote, voting_standbys
from raftpg.model import ClusterView, LocalState, PeerAnswer


@dataclass(frozen=True)
class Standbys:
    """``synchronous_standby_names`` as a set: ``num`` of ``names`` acknowledge a commit. ``names`` None:
    any standby at all (``'*'``, or a value this module cannot read: assume the widest)."""

    num: int
    names: frozenset[str] | None

    @property
    def asynchronous(self) -> bool:
        return self.num == 0 or self.names == frozenset()


@dataclass(frozen=True)
class KeyState:
    voters: frozenset[str]
    quorum: int

    @property
    def promotable(self) -> bool:
        """Some candidate other than the leader could gather ``quorum + 1`` voters."""
        return self.quorum < len(self.voters)


ONLY_LEADER = KeyState(frozenset(), 0)

_LIST = re.compile(r'^\s*(?:(ANY|FIRST)\s+)?(?:(\d+)\s*\((.*)\)|(.*))\s*$', re.IGNORECASE | re.DOTALL)
_NAME = re.compile(r'\s*("(?:[^"]|"")*"|[^\s,"]+)\s*(?:,|$)')


def parse(value: str) -> Standbys:
    """``synchronous_standby_names`` as PostgreSQL reads it (``ANY n (...)``, ``FIRST n (...)``, ``n (...)``,
    a bare list meaning ``FIRST 1``), names unquoted. A FIRST list counts as ANY: the first ``n`` streaming
    standbys are some ``n`` of the list, which is all the invariant needs."""
    text = value.strip()
    if not text:
        return Standbys(0, frozenset())
    match = _LIST.match(text)
    if match is None:
        return Standbys(1, None)
    num = int(match.group(2)) if match.group(2) else 1
    body = match.group(3) if match.group(2) else match.group(4)
    names: set[str] = set()
    position = 0
    body = body.strip()
    while position < len(body):
        item = _NAME.match(body, position)
        if item is None or item.end() == position:
            return Standbys(max(1, num), None)
        token = item.group(1)
        if token == "*":
            return Standbys(max(1, num), None)
        names.add(token[1:-1].replace('""', '"') if token.startswith('"') else token.lower())
        position = item.end()
    return Standbys(num, frozenset(names))


def value_of(num: int, names: tuple[str, ...]) -> str:
    """The setting for ``num`` of ``names``; ``''`` for none and ``'*'`` when commits must wait for a standby
    that is not there yet."""
    if not names:
        return "*" if num > 0 else ""
    return f"ANY {num} ({', '.join(quote(n) for n in sorted(names))})"


def required(voters: frozenset[str], pg: Standbys) -> int:
    """The smallest quorum with which ``voters`` cover every commit ``pg`` can acknowledge."""
    if pg.asynchronous:
        return len(voters)  # the primary alone holds a commit: no voter set may promote
    if pg.names is None:
        return len(voters)  # any standby, perhaps none of the voters
    if pg.num > len(pg.names):
        return 0  # PostgreSQL cannot acknowledge anything
    return max(0, len(voters) - max(0, pg.num - len(pg.names - voters)))


def covered(key: KeyState, pg: Standbys) -> bool:
    return key.quorum >= required(key.voters, pg) or not key.promotable


def stronger_or_equal(new: KeyState, old: KeyState) -> bool:
    """Every candidate ``new`` lets promote, ``old`` lets promote too: each ``quorum + 1`` voters of
    ``new`` include ``quorum + 1`` of ``old``."""
    if not new.promotable:
        return True
    if not old.promotable:
        return False
    return new.quorum - len(new.voters - old.voters) >= old.quorum


def caught_up(key: KeyState, flushed: dict[str, int], safe_lsn: int | None) -> bool:
    """Any ``quorum + 1`` voters include one that flushed past ``safe_lsn``: the ``quorum``-th lowest
    position (0-based) is at or past it."""
    if not key.promotable:
        return True
    if safe_lsn is None:
        return False
    positions = sorted(flushed.get(name, 0) for name in key.voters)
    return positions[key.quorum] >= safe_lsn


def target(view: ClusterView, local: LocalState) -> tuple[KeyState, str]:
    config = view.config
    active = tuple(sorted({r.application_name for r in voting_standbys(view, local)}))
    wanted = config.synchronous_node_count
    if not active:
        return ONLY_LEADER, value_of(1 if config.synchronous_mode_strict else 0, ())
    num = wanted if config.synchronous_mode_strict else min(wanted, len(active))
    return KeyState(frozenset(active), max(0, len(active) - num)), value_of(num, active)


def plan_replication(view: ClusterView, local: LocalState, me: str,
                     memory: Memory) -> tuple[tuple[Action, ...], str]:
    """The primary's synchronous replication step: quorum commit here, synchronous mode (or turning it
    off) in raftpg.ha.sync."""
    if view.config.quorum_commit:
        return plan_quorum(view, local, me, memory.safe_lsn)
    return plan_sync(view, local, me, memory.sync_catchup_lsn, memory.safe_lsn)


def plan_quorum(view: ClusterView, local: LocalState, me: str,
                safe_lsn: int | None) -> tuple[tuple[Action, ...], str]:
    """The next safe steps from the key and PostgreSQL's setting as they are toward ``target``, and a
    status sentence. ``safe_lsn``: the primary's position observed while the current setting was already
    in force (``Memory.standby_names_seen``), None if not known yet."""
    sync = view.sync
    revision = sync.revision if sync else None
    if sync is None or sync.leader != me:
        # name myself the leader, with no voter (only I may take over), before anything else changes
        return (WriteSyncKey((), revision, 0),), "quorum commit: taking over the sync key"
    key = KeyState(frozenset(sync.sync_standby), sync.quorum)
    pg = parse(local.synchronous_standby_names)
    goal_key, goal_value = target(view, local)
    goal_pg = parse(goal_value)
    flushed = {r.application_name: r.flush_lsn or 0 for r in local.replication if r.state == "streaming"}

    def may_write(new: KeyState) -> bool:
        return covered(new, pg) and (stronger_or_equal(new, key) or caught_up(new, flushed, safe_lsn))

    def write(new: KeyState) -> tuple[Action, ...]:
        return (WriteSyncKey(tuple(sorted(new.voters)), revision, new.quorum),)

    actions: tuple[Action, ...] = ()
    if not covered(key, pg):
        # e.g. a key kept from synchronous mode (FIRST n: its standbys one by one held every commit):
        # a covering key that promotes no one the old one would not, else start again from safe ground
        safe = covered(goal_key, pg) and stronger_or_equal(goal_key, key)
        actions = write(goal_key if safe else ONLY_LEADER)
    elif goal_pg != pg and covered(key, goal_pg):
        actions = (SetSynchronousStandbys(goal_value),)
    elif goal_key != key and may_write(goal_key):
        actions = write(goal_key)
    elif goal_pg != pg:
        union = key.voters | goal_key.voters
        between = KeyState(union, max(required(union, pg), required(union, goal_pg)))
        actions = write(between) if between != key and may_write(between) else write(ONLY_LEADER)
    return actions, describe(key, pg, goal_key, goal_pg, bool(actions))


def describe(key: KeyState, pg: Standbys, goal_key: KeyState, goal_pg: Standbys, changing: bool) -> str:
    if goal_pg.asynchronous:
        state = "quorum commit: no standby available, running asynchronously"
    elif goal_pg.names is None:
        state = "quorum commit (strict): no standby, commits wait"
    else:
        state = (f"quorum commit: ANY {goal_pg.num} of {', '.join(sorted(goal_pg.names))}; a failover needs "
                 f"{goal_key.quorum + 1} of {len(goal_key.voters)} voters")
    return state + (" (changing)" if changing or key != goal_key or pg != goal_pg else "")


# ------------------------------------------------------------------------------------- the failover race


def race_problem(view: ClusterView, me: str, my_lsn: int | None, answers: tuple[PeerAnswer, ...] | None,
                 my_timeline: int | None = None) -> str | None:
    """Why the failover race forbids ``me`` to promote for quorum commit's sake (None: it does not, or
    quorum commit is off)."""
    return vote_problem(view, me, my_lsn, answers, my_timeline) if votes_needed(view) else None


def votes_needed(view: ClusterView) -> bool:
    """Whether the failover race must count votes: quorum commit with a sync key naming a leader."""
    return bool(view.config.quorum_commit and view.sync and view.sync.leader and not view.config.standby_cluster)


def vote_problem(view: ClusterView, me: str, my_lsn: int | None, answers: tuple[PeerAnswer, ...] | None,
                 my_timeline: int | None = None) -> str | None:
    """Why ``me`` may not promote under quorum commit, or None. It must hear that no member runs as a
    primary and that none that could be promoted instead is ahead of it; and, unless it is the key's
    leader (the old primary, which holds every commit it acknowledged), ``quorum + 1`` voters (itself
    included when it is one) must be at or behind it: one of them holds the newest acknowledged commit,
    so it has that commit too. A member that may not be promoted (``nofailover``, an unreadable key, an
    older timeline) being ahead holds only what was never acknowledged, and must not stop every
    failover; its vote still counts when it is at or behind.

    The key's leader, alive and at or behind me on my timeline, is a vote that settles it: it holds every
    commit it acknowledged, and I hold everything it has (that timeline's WAL comes from it alone). Without
    this a key naming its leader alone (right after a promotion) deadlocked: the old primary, demoted,
    deferred to a replica ahead of it, which could not gather a voter (campaign cell quorum-partition-s3:
    no primary for two minutes after the partitions healed)."""
    sync = view.sync
    assert sync is not None
    if answers is None:
        return "quorum commit: the members have not been asked yet"
    mine = my_lsn or 0
    lag_free = replace(view, last_lsn=None)
    for answer in answers:
        if answer.error is not None:
            continue
        if answer.in_recovery is False:
            return f"quorum commit: {answer.name} runs as a primary"
        member = view.member(answer.name)
        contender = answer.name == sync.leader or (member is not None and lag_free.ineligibility(member) is None)
        if answer.lsn is not None and answer.lsn > mine and contender:
            return f"quorum commit: {answer.name} is ahead of me ({answer.lsn} > {mine})"
    if sync.leader == me:
        return None
    old = next((a for a in answers if a.name == sync.leader and a.error is None), None)
    if old is not None and old.in_recovery and old.lsn is not None and old.lsn <= mine \
            and my_timeline is not None and old.timeline == my_timeline:
        return None
    voters = set(sync.sync_standby)
    heard = {a.name for a in answers if a.error is None and a.in_recovery and a.lsn is not None
             and a.name in voters}
    count = len(heard) + (1 if me in voters else 0)
    if count < sync.quorum + 1:
        silent = sorted(voters - heard - {me})
        return (f"quorum commit: {count} of the {sync.quorum + 1} voters needed are known to be at or behind "
                f"me (no answer from {', '.join(silent) or 'nobody'})")
    return None
