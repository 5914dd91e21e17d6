"""The replicated key-value state machine: revisions, compare-and-set, TTL leases, watch events.

Every replica applies the same commands in the same order and must reach the same state, so ``apply``
reads no clock, no randomness and no environment: it is a function of (state, command). Commands are
plain JSON objects with a version field (``{"v": 1, "op": "put", ...}``), never pickled objects of ours.

Revisions (etcd's model): the store revision grows by one with every change (put, delete, expire);
each key carries ``create_revision``, ``mod_revision`` and ``version`` (number of puts since creation).
A ``touch`` refreshes a key's lease without changing its value or revision. ``applied`` counts the
commands that took effect (touches included); a put or touch stamps the key with it (``refreshed``), so
every refresh has its own identity. Commands that change nothing (a failed guard, a malformed command,
a barrier, deleting a missing key) leave the whole state, ``applied`` included, as it was.

Leases (DESIGN.md safety rule 3): a key put with ``ttl_s`` lives until the Raft *leader* decides that
``ttl_s`` passed on its own monotonic clock since it applied the last refresh, and proposes an
``expire`` command naming the key and the refresh it timed (``refreshed``). ``apply`` deletes the key only
if it was not refreshed since, so a late expiry never kills a renewed lease. The countdowns live in
:class:`raftpg.consensus.leases.LeaseClock` on every node, never replicated: a new leader keeps those it
started as a follower.

Invariants checked at run time (fail closed): the revision never goes backwards; a failed guard changes
nothing; a malformed command changes nothing and is answered with :class:`Rejected`.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from typing import Any

COMMAND_VERSION = 1
KEY_BYTES_MAX = 1024
VALUE_BYTES_MAX = 256 * 1024
TTL_S_MAX = 24 * 3600
EVENTS_KEPT = 4096


# --------------------------------------------------------------------------------------------- values


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: str
    create_revision: int
    mod_revision: int
    version: int
    ttl_s: float | None = None
    refreshed: int = 0  # the store's ``applied`` count after the last put/touch: identifies a refresh


@dataclass(frozen=True)
class Guard:
    """Compare-and-set conditions; all given ones must hold. ``exists=False`` is must-not-exist."""

    exists: bool | None = None
    mod_revision: int | None = None
    value: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in (("exists", self.exists), ("mod_revision", self.mod_revision),
                                   ("value", self.value)) if v is not None}


@dataclass(frozen=True)
class Committed:
    """The command took effect (or was a no-op that needed none) at store ``revision``."""

    revision: int
    kv: KeyValue | None = None


@dataclass(frozen=True)
class Conflict:
    """A guard failed; nothing changed. ``guard`` names the failed condition; ``current`` is the key now."""

    guard: str
    current: KeyValue | None
    revision: int


@dataclass(frozen=True)
class Rejected:
    """The command is malformed or over a limit; nothing changed."""

    reason: str


Result = Committed | Conflict | Rejected
# A command as it crosses the log: a JSON object with "v" and "op" (see the builders below). It comes back
# from ``decode`` unchecked; ``apply`` checks every field it reads.
Command = dict[str, Any]
# What replicas must agree on: (revision, applied, the keys sorted by name).
Fingerprint = tuple[int, int, tuple[tuple[str, KeyValue], ...]]


@dataclass(frozen=True)
class Event:
    revision: int
    key: str
    kind: str  # "put" | "delete" | "expire"


class InvariantViolation(RuntimeError):
    """The state machine found itself in a state it must never reach. Callers fail closed."""


# ------------------------------------------------------------------------------------------- commands


def put_command(key: str, value: str, *, guard: Guard | None = None, ttl_s: float | None = None) -> Command:
    command: Command = {"v": COMMAND_VERSION, "op": "put", "key": key, "value": value}
    if guard is not None:
        command["guard"] = guard.to_json()
    if ttl_s is not None:
        command["ttl_s"] = ttl_s
    return command


def _keyed(op: str, key: str, guard: Guard | None) -> Command:
    command: Command = {"v": COMMAND_VERSION, "op": op, "key": key}
    if guard is not None:
        command["guard"] = guard.to_json()
    return command


def touch_command(key: str, *, guard: Guard | None = None) -> Command:
    return _keyed("touch", key, guard)


def delete_command(key: str, *, guard: Guard | None = None) -> Command:
    return _keyed("delete", key, guard)


def expire_command(key: str, refreshed: int, leader_monotonic: float) -> Command:
    """Proposed only by the Raft leader. ``leader_monotonic`` is for audit; apply never compares it."""
    return {"v": COMMAND_VERSION, "op": "expire", "key": key, "refreshed": refreshed,
            "leader_monotonic": leader_monotonic}


def restore_command(snapshot: dict[str, Any]) -> Command:
    """Seed an *empty* store with ``snapshot`` (a :meth:`KvState.to_snapshot`), through the log.

    Used once, by a node forming a new cluster from its surviving data (``force_new_cluster``): the seed
    travels through the log like any command, so every member added later replays it. Never exposed to
    clients; refused on a store that holds anything, so it can never clobber data or move a revision
    backwards. Every later refresh gets a fresh identity.
    """
    return {"v": COMMAND_VERSION, "op": "restore", "snapshot": snapshot}


def barrier_command() -> Command:
    """A no-op through the log: once applied locally, local reads reflect every earlier commit."""
    return {"v": COMMAND_VERSION, "op": "barrier"}


def encode(command: Command) -> bytes:
    return json.dumps(command, separators=(",", ":"), sort_keys=True).encode()


def decode(payload: bytes) -> Command | Rejected:
    try:
        command = json.loads(payload)
    except (ValueError, TypeError, RecursionError):  # RecursionError: absurdly nested JSON
        return Rejected("command is not valid JSON")
    if not isinstance(command, dict):
        return Rejected("command is not a JSON object")
    return command


def validate_key_value(key: Any, value: Any = "") -> str | None:
    """Why this key/value may not be stored, or None. Used by clients before proposing and by apply."""
    if not isinstance(key, str) or not key:
        return "key must be a non-empty string"
    if not isinstance(value, str):
        return "value must be a string"
    try:  # a lone surrogate (a "\udcff" escape in the command's JSON) cannot be encoded: refuse it here,
        # or apply would raise on every replica and the store would stop serving
        key_bytes, value_bytes = len(key.encode()), len(value.encode())
    except UnicodeEncodeError:
        return "key and value must be valid Unicode text (no lone surrogates)"
    if key_bytes > KEY_BYTES_MAX:
        return f"key is {key_bytes} bytes, over the limit of {KEY_BYTES_MAX}"
    if value_bytes > VALUE_BYTES_MAX:
        return f"value is {value_bytes} bytes, over the limit of {VALUE_BYTES_MAX}"
    return None


# -------------------------------------------------------------------------------------------- the store


class KvState:
    """The state every replica holds. Not thread-safe: the consensus layer serialises access."""

    def __init__(self) -> None:
        self.revision = 0
        self.applied = 0
        self.keys: dict[str, KeyValue] = {}
        self.events: deque[Event] = deque(maxlen=EVENTS_KEPT)
        self.compacted_revision = 0  # watch cannot answer for revisions <= this from ``events``

    # -- reads (pure) --
    def get(self, key: str) -> KeyValue | None:
        return self.keys.get(key)

    def range(self, prefix: str) -> list[KeyValue]:
        return sorted((kv for k, kv in self.keys.items() if k.startswith(prefix)), key=lambda kv: kv.key)

    def changed_since(self, prefix: str, revision: int, ignore: tuple[str, ...] = ()) -> bool | None:
        """True if a key under ``prefix`` (and not under any ``ignore`` prefix) changed after
        ``revision``; None if the kept events no longer reach back that far."""
        if revision < self.compacted_revision or (self.events and revision < self.events[0].revision - 1):
            return None
        for event in reversed(self.events):
            if event.revision <= revision:
                return False
            if event.key.startswith(prefix) and not event.key.startswith(ignore):
                return True
        return False

    # -- the one mutator --
    def apply(self, command: Command | Rejected) -> Result:
        if isinstance(command, Rejected):
            return command
        revision_before = self.revision
        result = self._dispatch(command)
        if self.revision < revision_before:
            raise InvariantViolation(f"revision went backwards: {revision_before} -> {self.revision}")
        return result

    def _dispatch(self, command: Command) -> Result:
        if command.get("v") != COMMAND_VERSION:
            return Rejected(f"unsupported command version {command.get('v')!r}")
        op = command.get("op")
        if not isinstance(op, str):
            return Rejected(f"unknown operation {op!r}")
        handler = {"put": self._put, "touch": self._touch, "delete": self._delete,
                   "expire": self._expire, "barrier": self._barrier,
                   "restore": self._restore}.get(op)
        if handler is None:
            return Rejected(f"unknown operation {op!r}")
        return handler(command)

    def _check_guard(self, raw: Any, current: KeyValue | None) -> Conflict | Rejected | None:
        if raw is None:
            return None
        if not isinstance(raw, dict) or set(raw) - {"exists", "mod_revision", "value"}:
            return Rejected("guard must be an object with exists, mod_revision and/or value")
        exists, mod_revision, value = raw.get("exists"), raw.get("mod_revision"), raw.get("value")
        if (exists is not None and not isinstance(exists, bool)) or (value is not None and not isinstance(
                value, str)) or (mod_revision is not None and (isinstance(mod_revision, bool)
                                                               or not isinstance(mod_revision, int))):
            return Rejected("guard: exists must be a boolean, mod_revision an integer, value a string")
        if exists is not None and exists != (current is not None):
            return Conflict("must_exist" if exists else "must_not_exist", current, self.revision)
        if mod_revision is not None and (current is None or current.mod_revision != mod_revision):
            return Conflict("mod_revision", current, self.revision)
        if value is not None and (current is None or current.value != value):
            return Conflict("value", current, self.revision)
        return None

    def _put(self, command: Command) -> Result:
        key, value, ttl_s = command.get("key"), command.get("value"), command.get("ttl_s")
        problem = validate_key_value(key, value)
        if problem is None and ttl_s is not None:
            if isinstance(ttl_s, bool) or not isinstance(ttl_s, (int, float)) or not 0 < ttl_s <= TTL_S_MAX:
                problem = f"ttl_s must be a number in (0, {TTL_S_MAX}]"
        if problem:
            return Rejected(problem)
        assert isinstance(key, str) and isinstance(value, str)  # validate_key_value checked both
        current = self.keys.get(key)
        failed = self._check_guard(command.get("guard"), current)
        if failed:
            return failed
        self.revision += 1
        self.applied += 1
        kv = KeyValue(
            key=key, value=value,
            create_revision=current.create_revision if current else self.revision,
            mod_revision=self.revision, version=(current.version + 1) if current else 1,
            ttl_s=float(ttl_s) if ttl_s is not None else None, refreshed=self.applied,
        )
        self.keys[key] = kv
        self.events.append(Event(self.revision, key, "put"))
        return Committed(self.revision, kv)

    def _guarded(self, command: Command) -> tuple[str, KeyValue | None] | Conflict | Rejected:
        """The key a touch or delete names and its current entry, or why the command cannot apply."""
        key = command.get("key")
        if not isinstance(key, str):
            return Rejected("key must be a string")
        current = self.keys.get(key)
        return self._check_guard(command.get("guard"), current) or (key, current)

    def _touch(self, command: Command) -> Result:
        target = self._guarded(command)
        if not isinstance(target, tuple):
            return target
        key, current = target
        if current is None:
            return Conflict("must_exist", None, self.revision)
        self.applied += 1
        kv = KeyValue(current.key, current.value, current.create_revision, current.mod_revision,
                      current.version, current.ttl_s, refreshed=self.applied)
        self.keys[key] = kv
        return Committed(self.revision, kv)

    def _delete(self, command: Command) -> Result:
        target = self._guarded(command)
        if not isinstance(target, tuple):
            return target
        key, current = target
        if current is None:
            return Committed(self.revision, None)
        self.revision += 1
        self.applied += 1
        del self.keys[key]
        self.events.append(Event(self.revision, key, "delete"))
        return Committed(self.revision, current)

    def _expire(self, command: Command) -> Result:
        key, refreshed = command.get("key"), command.get("refreshed")
        if not isinstance(key, str) or isinstance(refreshed, bool) or not isinstance(refreshed, int):
            return Rejected("expire needs key and refreshed")
        current = self.keys.get(key)
        if current is None or current.ttl_s is None or current.refreshed != refreshed:
            return Conflict("refreshed", current, self.revision)  # renewed or gone: the lease lives on
        self.revision += 1
        self.applied += 1
        del self.keys[key]
        self.events.append(Event(self.revision, key, "expire"))
        return Committed(self.revision, current)

    def _barrier(self, command: Command) -> Result:
        return Committed(self.revision, None)

    def _restore(self, command: Command) -> Result:
        try:
            seeded = KvState.from_snapshot(command.get("snapshot"))
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            return Rejected(f"restore: not a valid snapshot ({exc})")
        if self.revision != 0 or self.keys:
            return Rejected("restore: only an empty store can be seeded")
        # One more revision marks the change; watchers see a compaction and re-read. ``applied`` moves past
        # every refresh identity in the snapshot, so a later touch can never reuse one (which would let a
        # leader keep counting down from the older refresh and expire a renewed lease early).
        self.revision = seeded.revision + 1
        self.applied = max(self.applied, seeded.applied + 1)
        self.keys = seeded.keys
        self.events.clear()
        self.compacted_revision = self.revision
        return Committed(self.revision, None)

    # -- snapshots (log compaction) --
    def to_snapshot(self) -> dict[str, Any]:
        return {
            "v": COMMAND_VERSION, "revision": self.revision, "applied": self.applied,
            "keys": [[kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.ttl_s,
                      kv.refreshed] for kv in self.keys.values()],
        }

    @classmethod
    def from_snapshot(cls, data: object) -> KvState:
        """Rebuild a store; raises ValueError naming the first thing wrong with ``data``."""
        if not isinstance(data, dict) or data.get("v") != COMMAND_VERSION:
            raise ValueError("not a snapshot of this version")
        state = cls()
        state.revision = _non_negative_int(data.get("revision"), "revision")
        state.applied = _non_negative_int(data.get("applied"), "applied")
        rows = data.get("keys")
        if not isinstance(rows, list):
            raise ValueError("keys must be a list")
        for row in rows:
            kv = _row_to_kv(row)
            if kv.mod_revision > state.revision or kv.refreshed > state.applied:
                raise ValueError(f"key {kv.key!r} is newer than the snapshot")
            state.keys[kv.key] = kv
        state.compacted_revision = state.revision
        return state

    def fingerprint(self) -> Fingerprint:
        """Everything replicas must agree on (events are a cache, not state)."""
        return (self.revision, self.applied, tuple(sorted(self.keys.items())))


def _non_negative_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer")
    return value


def _row_to_kv(row: Any) -> KeyValue:
    if not isinstance(row, (list, tuple)) or len(row) != 7:
        raise ValueError("a key row has 7 fields")
    key, value, create_revision, mod_revision, version, ttl_s, refreshed = row
    problem = validate_key_value(key, value)
    if problem:
        raise ValueError(problem)
    if ttl_s is not None and (isinstance(ttl_s, bool) or not isinstance(ttl_s, (int, float))
                              or not 0 < ttl_s <= TTL_S_MAX):
        raise ValueError(f"key {key!r}: bad ttl_s")
    kv = KeyValue(key, value, _non_negative_int(create_revision, "create_revision"),
                  _non_negative_int(mod_revision, "mod_revision"), _non_negative_int(version, "version"),
                  float(ttl_s) if ttl_s is not None else None, _non_negative_int(refreshed, "refreshed"))
    if not 0 < kv.create_revision <= kv.mod_revision or kv.version < 1:
        raise ValueError(f"key {key!r}: inconsistent revisions")
    return kv
