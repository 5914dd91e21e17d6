"""Defensive reading of one stored document: anything a store can hold -> a value, or a problem.

Whoever can write the store can write anything: a value that is not UTF-8 (etcd and Consul store
bytes), JSON that Python's parser accepts but nothing downstream survives (``NaN``, ``Infinity``,
``1e999`` read as an infinite float, a 400-digit integer, nesting deep enough to exhaust the stack),
and well-formed JSON of the wrong shape. These functions never raise: each returns the value it could
read and the problems it found, as short lines that name the field and the kind of value, never the
value itself (it may be huge, a secret, or the poison).

Limits, and why:
- a document of at most ``MAX_DOCUMENT_CHARS`` (1 MiB; etcd's own request limit is 1.5 MiB, the
  embedded store's 256 KiB), nested at most ``MAX_DEPTH`` deep (real documents nest 3 deep);
- JSON numbers finite, integers of at most 20 digits (every integer raftpg stores fits in 64 bits);
- text valid Unicode (no lone surrogates: they come from undecodable bytes or ``\\udcxx`` escapes
  and cannot be encoded again, in a log line, a Prometheus scrape or a write back to the store);
- names (member names, the leader key, the sync key's standbys) as raftpg.config accepts them:
  non-empty, at most ``MAX_NAME`` characters, no control characters, no ``/``, not ``.`` or ``..``,
  and no U+FFFD, which marks what could not be read (``UNREADABLE``) and so never names a member.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import datetime
from typing import Any

from raftpg.model import Failover, HistoryEntry, Member, SyncState, Tags
from raftpg.model.slots import SLOT_NAME
from raftpg.model.values import bounded_int, json_kind, parse_flag

MAX_DOCUMENT_CHARS = 1 << 20
MAX_DEPTH = 32
MAX_NAME = 128
MAX_TEXT = 2048  # URLs, versions, history reasons
MAX_INT_DIGITS = 20
LSN_MAX = 2**64 - 1  # pg_lsn is an unsigned 64-bit position
TIMELINE_MAX = 2**32 - 1  # TimeLineID is an unsigned 32-bit integer
SERVER_VERSION_MAX = 10**7
WALL_MAX_S = 253402300799.0  # 9999-12-31T23:59:59Z: the last second datetime can show
UNREADABLE = "\ufffd"
"""Stands for a name that could not be read: never a member's name, so it never matches one."""

_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SYSID = re.compile(r"[0-9]{1,20}")


class Unreadable(ValueError):
    """Why a document cannot be read at all."""


# ------------------------------------------------------------------------------------- raw text and JSON
def as_text(raw: Any) -> str:
    """The stored value as text: ``str`` as is, ``bytes`` decoded (invalid UTF-8 -> Unreadable)."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Unreadable("not valid UTF-8") from None
    if not isinstance(raw, str):
        raise Unreadable(f"not text but {type(raw).__name__}")
    if len(raw) > MAX_DOCUMENT_CHARS:
        raise Unreadable(f"{len(raw)} characters, over the limit of {MAX_DOCUMENT_CHARS}")
    if _SURROGATE.search(raw):
        raise Unreadable("not valid UTF-8")
    return raw


def _reject_constant(token: str) -> Any:
    raise Unreadable(f"{token} is not a JSON number")


def _finite_float(token: str) -> float:
    value = float(token)
    if value in (float("inf"), float("-inf")):
        raise Unreadable(f"a number too large for a float ({token[:20]}...)")
    return value


def _bounded_int_token(token: str) -> int:
    if len(token.lstrip("-")) > MAX_INT_DIGITS:
        raise Unreadable(f"an integer of {len(token.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(token)


def load_json(raw: Any) -> Any:
    """Parse a stored JSON document strictly (see the limits above); Unreadable says why not."""
    text = as_text(raw)
    try:
        data = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float,
                          parse_int=_bounded_int_token)
    except Unreadable:
        raise
    except RecursionError:
        raise Unreadable(f"nested deeper than {MAX_DEPTH}") from None
    except (ValueError, TypeError) as exc:
        raise Unreadable(f"not JSON ({str(exc).split(':')[0]})") from None
    _check_tree(data, escapes="\\u" in text)
    return data


def _check_tree(data: Any, *, escapes: bool) -> None:
    """Depth, and (when the text had ``\\u`` escapes) lone surrogates in strings; iterative."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                raise Unreadable(f"nested deeper than {MAX_DEPTH}")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if escapes and isinstance(key, str) and _SURROGATE.search(key):
                    raise Unreadable("not valid UTF-8 (a lone surrogate escape)")
                stack.append((item, depth + 1))
        elif escapes and isinstance(value, str) and _SURROGATE.search(value):
            raise Unreadable("not valid UTF-8 (a lone surrogate escape)")


def load_object(raw: Any) -> dict[str, Any]:
    data = load_json(raw)
    if not isinstance(data, dict):
        raise Unreadable(f"must be a JSON object, got {json_kind(data)}")
    return data


# ------------------------------------------------------------------------------------- names
def name_problem(name: Any) -> str | None:
    """Why ``name`` cannot name a member, or None."""
    if not isinstance(name, str):
        return f"must be a string, got {json_kind(name)}"
    if not name:
        return "must not be empty"
    if len(name) > MAX_NAME:
        return f"{len(name)} characters, over the limit of {MAX_NAME}"
    if _SURROGATE.search(name) or UNREADABLE in name:
        return "not valid UTF-8"
    if _CONTROL.search(name):
        return "contains a control character"
    if "/" in name or name in (".", ".."):
        return "contains '/' or is '.' or '..'"
    return None


def shown_name(text: str) -> str:
    """An unreadable name made safe to show and compare: bad characters become U+FFFD, at most MAX_NAME
    characters kept. The result contains U+FFFD, so it never equals a valid name."""
    cleaned = _CONTROL.sub(UNREADABLE, _SURROGATE.sub(UNREADABLE, text.replace("/", UNREADABLE)))[:MAX_NAME]
    return cleaned if UNREADABLE in cleaned else cleaned + UNREADABLE


def read_name(raw: Any) -> tuple[str, str | None]:
    """(the name, None) for a valid name; (a shown form containing U+FFFD, the problem) otherwise.
    ``raw`` is a stored value or a key's last part: text, or bytes that may not be UTF-8."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="surrogateescape")
    if not isinstance(raw, str):
        return UNREADABLE, f"not text but {type(raw).__name__}"
    problem = name_problem(raw)
    return (raw, None) if problem is None else (shown_name(raw[:MAX_DOCUMENT_CHARS]), problem)


def read_sysid(raw: Any) -> tuple[str | None, str | None]:
    """The ``initialize`` key: "" (a bootstrap in progress) or a decimal system identifier."""
    try:
        text = as_text(raw)
    except Unreadable as exc:
        return None, str(exc)
    if text == "" or (_SYSID.fullmatch(text) and int(text) <= LSN_MAX):
        return text, None
    return None, "must be a decimal system identifier (up to 20 digits)"


# ------------------------------------------------------------------------------------- fields
class Fields:
    """Reads typed fields out of one JSON object, collecting a problem line per bad field."""

    def __init__(self, data: dict[Any, Any], prefix: str = "") -> None:
        self.data = data
        self.prefix = prefix
        self.problems: list[str] = []

    def problem(self, key: str | int, text: str) -> None:
        self.problems.append(f"{self.prefix}{key}: {text}")

    def integer(self, key: str | int, low: int, high: int) -> int | None:
        value = self.data.get(key)
        if value is None:
            return None
        parsed = bounded_int(value, low, high)
        if parsed is None:
            self.problem(key, f"must be an integer in [{low}, {high}], got {json_kind(value)}")
        return parsed

    def text(self, key: str | int, default: str | None = None, *, max_chars: int = MAX_TEXT,
             control_ok: bool = False) -> str | None:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            self.problem(key, f"must be a string, got {json_kind(value)}")
            return default
        if len(value) > max_chars:
            self.problem(key, f"{len(value)} characters, over the limit of {max_chars}")
            return default
        if not control_ok and _CONTROL.search(value):
            self.problem(key, "contains a control character")
            return default
        return value

    def name(self, key: str | int) -> str | None:
        value = self.data.get(key)
        if value in (None, ""):
            return None
        problem = name_problem(value)
        if problem is not None:
            self.problem(key, problem)
            return None
        assert isinstance(value, str)  # name_problem refuses anything else
        return value

    def flag(self, key: str | int, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        parsed = parse_flag(value)
        if parsed is None:
            self.problem(key, f"must be a boolean, got {json_kind(value)}")
            return default
        return parsed

    def wall_time(self, key: str | int) -> float | None:
        """Epoch seconds from a number or an ISO 8601 string (Patroni writes the latter)."""
        value = self.data.get(key)
        if value in (None, ""):
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if 0 <= value <= WALL_MAX_S:
                return float(value)
        elif isinstance(value, str) and len(value) <= 64:
            try:
                seconds = datetime.fromisoformat(value).timestamp()
            except (ValueError, OverflowError, OSError):
                seconds = -1.0
            if 0 <= seconds <= WALL_MAX_S:
                return seconds
        self.problem(key, f"must be a time (ISO 8601 or epoch seconds up to year 9999), got {json_kind(value)}")
        return None


# ------------------------------------------------------------------------------------- documents
def read_member(name: str, raw: Any, revision: int) -> tuple[Member, tuple[str, ...]]:
    """A member key. Any problem makes the member invalid (never promoted, never a synchronous
    standby); the fields that could be read are kept, so that the member still shows up sanely."""
    shown, name_trouble = read_name(name)
    try:
        data = load_object(raw)
    except Unreadable as exc:
        problems = ([f"name: {name_trouble}"] if name_trouble else []) + [str(exc)]
        return Member(name=shown, valid=False, revision=revision, state="unknown"), tuple(problems)
    f = Fields(data)
    if name_trouble:
        f.problem("name", name_trouble)
    tags, tag_problems = Tags.parse(data.get("tags"))
    f.problems.extend(tag_problems)
    member = Member(
        name=shown, role=f.text("role", "uninitialized", max_chars=64) or "uninitialized",
        state=f.text("state", "unknown", max_chars=64) or "unknown",
        api_url=f.text("api_url"), conn_url=f.text("conn_url"),
        timeline=f.integer("timeline", 1, TIMELINE_MAX), lsn=f.integer("xlog_location", 0, LSN_MAX),
        replay_lsn=f.integer("replay_lsn", 0, LSN_MAX), receive_lsn=f.integer("receive_lsn", 0, LSN_MAX),
        sysid=_sysid_field(f), tags=tags, witness=f.flag("witness", False),
        pending_restart=f.flag("pending_restart", False),
        server_version=f.integer("server_version", 0, SERVER_VERSION_MAX),
        progress=f.integer("progress", 0, 100),
        raft_addr=f.text("raft_addr", max_chars=256), version=f.text("version", max_chars=64),
        revision=revision,
    )
    if f.problems:
        return _invalid(member), tuple(f.problems)
    return member, ()


def _invalid(member: Member) -> Member:
    return replace(member, valid=False)


def _sysid_field(f: Fields) -> str | None:
    value = f.data.get("sysid")
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    sysid, problem = read_sysid(value) if isinstance(value, str) else (None, f"got {json_kind(value)}")
    if problem or not sysid:
        f.problem("sysid", problem or "must not be empty")
        return None
    return sysid


def read_failover(raw: Any, revision: int) -> tuple[Failover, tuple[str, ...]]:
    """The failover key. Unreadable, it reads as a request naming an UNREADABLE leader: no replica acts
    on it, and the primary clears it (as any request whose leader is not the primary), so the poison
    goes away by itself and the next switchover request's compare-and-set finds a revision to match."""
    try:
        f = Fields(load_object(raw))
    except Unreadable as exc:
        return Failover(leader=UNREADABLE, revision=revision), (str(exc),)
    leader = f.name("leader")
    candidate = f.name("member") or f.name("candidate")
    scheduled_at = f.wall_time("scheduled_at")
    if f.problems:
        return Failover(leader=UNREADABLE, revision=revision), tuple(f.problems)
    return Failover(leader=leader, candidate=candidate, scheduled_at=scheduled_at, revision=revision), ()


def read_sync(raw: Any, revision: int) -> tuple[SyncState, tuple[str, ...]]:
    """The sync key. Unreadable, it names an UNREADABLE leader and no standby, so that in synchronous
    mode nobody is eligible (an *absent* key would restrict no one) until the primary rewrites it,
    which it does at its next cycle since the key does not name it."""
    try:
        f = Fields(load_object(raw))
    except Unreadable as exc:
        return SyncState(leader=UNREADABLE, revision=revision), (str(exc),)
    leader = f.name("leader")
    standbys = f.data.get("sync_standby") or ""
    names: list[Any] = standbys.split(",") if isinstance(standbys, str) else \
        list(standbys) if isinstance(standbys, list) else [standbys]
    for name in names:
        problem = name_problem(name)
        if problem and name != "":
            f.problem("sync_standby", problem)
    quorum = f.integer("quorum", 0, 1024) if f.data.get("quorum") is not None else 0
    if f.problems or quorum is None:
        return SyncState(leader=UNREADABLE, revision=revision), tuple(f.problems)
    return SyncState(leader=leader, sync_standby=tuple(sorted(n for n in names if n)), revision=revision,
                     quorum=quorum), ()


def read_optime(raw: Any) -> tuple[int | None, tuple[str, ...]]:
    """The status key's ``optime`` (the last known primary WAL position)."""
    try:
        f = Fields(load_object(raw))
    except Unreadable as exc:
        return None, (str(exc),)
    optime = f.integer("optime", 0, LSN_MAX)
    return optime, tuple(f.problems)


def read_slot_positions(raw: Any) -> tuple[tuple[tuple[str, int], ...], tuple[str, ...]]:
    """The status key's ``slots``: the primary's replication slots and their positions (Patroni's shape,
    ``{"name": lsn}``), which the replicas copy. Bad entries are left out."""
    try:
        data = load_object(raw).get("slots")
    except Unreadable:
        return (), ()  # read_optime reports an unreadable status document
    if data is None:
        return (), ()
    if not isinstance(data, dict):
        return (), (f"slots: must be a JSON object, got {json_kind(data)}",)
    f = Fields(data, "slots.")
    found = []
    for name in sorted(k for k in data if isinstance(k, str)):
        if not SLOT_NAME.fullmatch(name):
            f.problem(f"{name[:40]!r}", "not a replication slot name")
        elif (lsn := f.integer(name, 0, LSN_MAX)) is not None:
            found.append((name, lsn))
    return tuple(found), tuple(f.problems)


def read_failsafe(raw: Any) -> tuple[tuple[tuple[str, str], ...] | None, tuple[str, ...]]:
    """The status key's ``failsafe``: the failsafe topology (member name -> REST API URL) the primary
    published. Absent: None. A bad entry makes the whole topology unreadable, read as absent (Patroni
    discards a garbled one too): a topology with a member left out would let that member race while the
    primary counts on it, and a primary that reads no topology asks nobody and demotes on time."""
    try:
        data = load_object(raw).get("failsafe")
    except Unreadable:
        return None, ()  # read_optime reports an unreadable status document
    if data is None:
        return None, ()
    if not isinstance(data, dict):
        return None, (f"failsafe: must be a JSON object, got {json_kind(data)}",)
    f = Fields(data, "failsafe.")
    found = []
    for name in sorted(data, key=str):
        problem = name_problem(name)
        if problem:
            f.problem(f"{str(name)[:40]!r}", problem)
        elif (url := f.text(name)) is not None and url:
            found.append((name, url))
        elif not f.problems:
            f.problem(name, "must be the member's REST API URL")
    if f.problems:
        return None, tuple(f.problems)
    return tuple(found), ()


def read_history(raw: Any) -> tuple[tuple[HistoryEntry, ...], tuple[str, ...]]:
    """The history key: [timeline, lsn, reason, timestamp, new_leader] rows. Bad rows are left out."""
    try:
        data = load_json(raw)
    except Unreadable as exc:
        return (), (str(exc),)
    if not isinstance(data, list):
        return (), (f"must be a JSON list, got {json_kind(data)}",)
    entries, problems = [], []
    for index, row in enumerate(data):
        entry, problem = _history_row(row)
        if entry is not None:
            entries.append(entry)
        else:
            problems.append(f"row {index}: {problem}")
    return tuple(entries), tuple(problems[:1] + ([f"and {len(problems) - 1} more rows"] if problems[1:] else []))


def _history_row(row: Any) -> tuple[HistoryEntry | None, str | None]:
    if not isinstance(row, list) or len(row) < 3:
        return None, "must be a list [timeline, lsn, reason, timestamp, new_leader]"
    f = Fields(dict(enumerate(row)))
    timeline = f.integer(0, 1, TIMELINE_MAX)
    lsn = f.integer(1, 0, LSN_MAX)
    reason = f.text(2, "", control_ok=True)
    timestamp = f.wall_time(3) if len(row) > 3 else None
    new_leader = f.name(4) if len(row) > 4 else None
    if f.problems or timeline is None or lsn is None:
        return None, (f.problems or ["timeline and lsn are required"])[0]
    return HistoryEntry(timeline, lsn, reason or "", timestamp or 0.0, new_leader), None


__all__ = [
    "UNREADABLE", "Unreadable", "as_text", "load_json", "load_object", "name_problem", "read_failover",
    "read_failsafe", "read_history", "read_member", "read_name", "read_optime", "read_slot_positions", "read_sync", "read_sysid", "shown_name",
]
