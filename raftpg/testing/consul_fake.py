"""A FAKE Consul HTTP server, in-process, for tests: Consul cannot be installed on these machines.

It is not Consul and proves nothing about Consul itself. It follows Consul's HTTP API documentation for
exactly the endpoints raftpg's ConsulDcs uses, so that the DCS contract suite can run against the Consul
adapter, and its own tests (tests/contract/test_consul_fake.py) check it against documented behaviours:

- KV: ``GET /v1/kv/<key>`` (``?recurse``; ``?index=&wait=`` blocking queries; ``?consistent`` accepted, the
  fake is always consistent), ``PUT /v1/kv/<key>`` (``?cas=``, where 0 means create-only; ``?acquire=``,
  which fails while another session holds the key or during its lock-delay; ``?release=``), ``DELETE``
  (``?cas=``, where 0 deletes nothing; ``?recurse``). When ``cas``, ``acquire`` and ``release`` are combined
  the last one in that order wins, as in Consul's handler.
- Indexes: one counter for every write (Consul's Raft index). CreateIndex on creation, ModifyIndex on every
  write, LockIndex counts acquisitions. ``X-Consul-Index`` of a read is the highest ModifyIndex of the keys
  and deletion tombstones it covers (the KV table's index when there are none). A blocking query returns
  when that index moves past ``index`` or after ``wait`` (default 5 min, at most 10 min).
- Sessions: ``PUT /v1/session/create`` (TTL between ``min_session_ttl_s`` and 24 h, Behavior release or
  delete, LockDelay), ``/v1/session/renew/<id>`` (404 once invalidated), ``/v1/session/destroy/<id>``.
  A session not renewed is invalidated ``ttl_multiplier`` x TTL after its last renewal (Consul's timer
  uses 2 x TTL; its documented contract is only "not before TTL"). Invalidation releases or deletes the
  keys it holds, and puts them under the session's lock-delay.
- ``PUT /v1/txn`` with KV verbs set, cas, lock, unlock, get, check-index, check-session, check-not-exists,
  delete, delete-cas: all applied at one index, or none (409 with the failing op's index).
- ACL: with ``token`` set, every request needs ``X-Consul-Token`` (403 otherwise).

Not modelled: health checks (a session with checks is refused), agents, datacenters (``dc`` is ignored),
blocking-query jitter and spurious wake-ups, tombstone reaping, and everything not listed above.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import ssl
import threading
import uuid
from dataclasses import asdict, dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from raftpg.clock import Clock, SystemClock

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_WAIT_S = 600.0


def go_duration(value: str | int | float) -> float:
    """Seconds in a Go duration string (``15s``, ``500ms``, ``1m30s``); a bare number counts as seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    parts = re.findall(r"([0-9.]+)(ns|us|µs|ms|s|m|h)", value)
    if not parts and value.strip() not in ("", "0"):
        raise ValueError(f"bad duration {value!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Entry:
    Key: str
    Value: bytes
    CreateIndex: int
    ModifyIndex: int
    LockIndex: int = 0
    Flags: int = 0
    Session: str | None = None

    def to_json(self, with_value: bool = True) -> dict[str, Any]:
        data = asdict(self)
        data["Value"] = base64.b64encode(self.Value).decode() if with_value and self.Value else None
        if not self.Session:
            del data["Session"]
        return data


@dataclass
class Session:
    ID: str
    Name: str
    TTL: str
    Behavior: str
    lock_delay_s: float
    expires_at: float | None
    CreateIndex: int

    def to_json(self) -> dict[str, Any]:
        return {"ID": self.ID, "Name": self.Name, "Node": "fake-consul", "TTL": self.TTL,
                "Behavior": self.Behavior, "LockDelay": int(self.lock_delay_s * 1e9), "NodeChecks": [],
                "ServiceChecks": None, "CreateIndex": self.CreateIndex, "ModifyIndex": self.CreateIndex}


class FakeConsul:
    def __init__(self, *, min_session_ttl_s: float = 10.0, ttl_multiplier: float = 2.0, token: str | None = None,
                 clock: Clock | None = None) -> None:
        self.min_session_ttl_s = min_session_ttl_s
        self.ttl_multiplier = ttl_multiplier
        self.token = token
        self._clock = clock or SystemClock()
        self._cond = threading.Condition()
        self.index = 1
        self._kv_index = 1
        self._kv: dict[str, Entry] = {}
        self._tombstones: dict[str, int] = {}
        self._sessions: dict[str, Session] = {}
        self._lock_delay: dict[str, float] = {}
        self._server: ThreadingHTTPServer | None = None
        self._connections: set[socket.socket] = set()
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle
    def start(self, port: int = 0, tls: ssl.SSLContext | None = None) -> FakeConsul:
        """Listen on 127.0.0.1 (``port`` 0: any free one); HTTPS with the server context ``tls``."""
        fake = self

        class Handler(_Handler):
            consul = fake

        self._stopping = False
        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        if tls is not None:  # the handshake runs in each request's thread, on its first read
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True,
                                                  do_handshake_on_connect=False)
        self._scheme = "https" if tls is not None else "http"
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-consul", daemon=True).start()
        threading.Thread(target=self._reaper, name="fake-consul-sessions", daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"{self._scheme}://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        """Stop listening and cut every open connection (the agent is gone)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for conn in list(self._connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # ------------------------------------------------------------------ sessions
    def _reaper(self) -> None:
        with self._cond:
            while not self._stopping:
                now = self._clock.monotonic()
                for session in [s for s in self._sessions.values() if s.expires_at and s.expires_at <= now]:
                    self._invalidate(session.ID)
                due = [s.expires_at for s in self._sessions.values() if s.expires_at]
                self._cond.wait(min(0.05, max(0.0, min(due) - now)) if due else 0.05)

    def _invalidate(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return
        self.index += 1
        until = self._clock.monotonic() + session.lock_delay_s
        for key, entry in list(self._kv.items()):
            if entry.Session != session_id:
                continue
            self._lock_delay[key] = until
            if session.Behavior == "delete":
                self._remove(self._kv, key, self.index)
            else:
                self._kv[key] = replace(entry, Session=None, ModifyIndex=self.index)
                self._kv_index = self.index
        self._cond.notify_all()

    def create_session(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("Checks") or body.get("NodeChecks") or body.get("ServiceChecks"):
            raise Refused(500, "fake consul: health checks are not modelled")
        ttl = str(body.get("TTL") or "")
        ttl_s = go_duration(ttl) if ttl else None
        if ttl_s is not None and not self.min_session_ttl_s <= ttl_s <= 86400:
            raise Refused(500, f"Invalid Session TTL '{int(ttl_s * 1e9)}', must be between "
                               f"[{self.min_session_ttl_s:g}s=24h0m0s]")
        behavior = body.get("Behavior") or "release"
        if behavior not in ("release", "delete"):
            raise Refused(400, f"Invalid Behavior setting '{behavior}'")
        self.index += 1
        session = Session(str(uuid.uuid4()), str(body.get("Name", "")), ttl, behavior,
                          go_duration(body.get("LockDelay", "15s")), None, self.index)
        self._sessions[session.ID] = session
        self._arm(session)
        return {"ID": session.ID}

    def _arm(self, session: Session) -> None:
        if session.TTL:
            session.expires_at = self._clock.monotonic() + go_duration(session.TTL) * self.ttl_multiplier
            self._cond.notify_all()

    def renew_session(self, session_id: str) -> list[dict[str, Any]]:
        session = self._sessions.get(session_id)
        if session is None:
            raise Refused(404, f"Session id '{session_id}' not found")
        self._arm(session)
        return [session.to_json()]

    # ------------------------------------------------------------------ KV
    def _remove(self, kv: dict[str, Entry], key: str, index: int) -> None:
        if kv.pop(key, None) is not None:
            self._tombstones[key] = index
            self._kv_index = index

    def index_for(self, key: str, recurse: bool) -> int:
        def covered(k: str) -> bool:
            return k.startswith(key) if recurse else k == key
        found = [e.ModifyIndex for k, e in self._kv.items() if covered(k)]
        found += [i for k, i in self._tombstones.items() if covered(k)]
        return max(found) if found else self._kv_index

    def read(self, key: str, recurse: bool, index: int, wait_s: float) -> tuple[int, list[Entry]]:
        end = self._clock.monotonic() + min(wait_s, MAX_WAIT_S)
        while index and self.index_for(key, recurse) <= index and not self._stopping:
            remaining = end - self._clock.monotonic()
            if remaining <= 0:
                break
            self._cond.wait(remaining)
        entries = [e for k, e in sorted(self._kv.items()) if (k.startswith(key) if recurse else k == key)]
        return self.index_for(key, recurse), entries

    def _apply(self, kv: dict[str, Entry], index: int, verb: str, key: str, value: bytes = b"",
               session: str | None = None, cas: int | None = None) -> Entry | None | bool:
        """One KV operation on ``kv`` at ``index``; False when its condition does not hold."""
        entry = kv.get(key)
        if verb == "lock" and session not in self._sessions:
            raise Refused(500, f'rpc error making call: invalid session "{session}"')
        if verb == "set":
            kv[key] = Entry(key, value, entry.CreateIndex if entry else index, index,
                            entry.LockIndex if entry else 0, 0, entry.Session if entry else None)
        elif verb == "cas":
            if (entry is None) != (cas == 0) or (entry is not None and entry.ModifyIndex != cas):
                return False
            return self._apply(kv, index, "set", key, value)
        elif verb == "lock":
            if entry is not None and entry.Session not in (None, session):
                return False
            if self._lock_delay.get(key, 0.0) > self._clock.monotonic():
                return False
            held = entry is not None and entry.Session == session
            kv[key] = Entry(key, value, entry.CreateIndex if entry else index, index,
                            (entry.LockIndex if entry else 0) + (0 if held else 1), 0, session)
        elif verb == "unlock":
            if entry is None or entry.Session != session:
                return False
            kv[key] = replace(entry, Value=value, ModifyIndex=index, Session=None)
        elif verb == "delete":
            self._remove(kv, key, index)
            return None
        elif verb == "delete-cas":
            if entry is None or not cas or entry.ModifyIndex != cas:
                return False
            self._remove(kv, key, index)
            return None
        else:
            raise Refused(400, f"unknown KV verb {verb!r}")
        self._kv_index = index
        return kv[key]

    def write(self, verb: str, key: str, value: bytes = b"", session: str | None = None,
              cas: int | None = None) -> bool:
        self.index += 1  # every write is a Raft log entry, applied or not
        done = self._apply(self._kv, self.index, verb, key, value, session, cas) is not False
        self._cond.notify_all()
        return done

    def txn(self, ops: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        self.index += 1
        index, work = self.index, dict(self._kv)
        tombstones, kv_index = dict(self._tombstones), self._kv_index
        results: list[dict[str, Any]] = []
        for position, op in enumerate(ops):
            kv = op.get("KV") or {}
            verb, key = kv.get("Verb", ""), kv.get("Key", "")
            entry = work.get(key)
            value = base64.b64decode(kv.get("Value") or "")
            if verb in ("get", "check-index", "check-session", "check-not-exists"):
                problem = (
                    (entry is None and verb != "check-not-exists" and f"key {key!r} doesn't exist")
                    or (verb == "check-index" and entry and entry.ModifyIndex != kv.get("Index")
                        and f"current modify index {entry.ModifyIndex} != {kv.get('Index')}")
                    or (verb == "check-session" and entry and entry.Session != kv.get("Session")
                        and f"key {key!r} is not locked by session {kv.get('Session')!r}")
                    or (verb == "check-not-exists" and entry is not None and f"key {key!r} exists"))
                result: Entry | bool | None = None if problem or entry is None else entry
            else:
                result = self._apply(work, index, verb, key, value, kv.get("Session"), kv.get("Index"))
                problem = result is False and f"failed to {verb} key {key!r}"
            if problem:
                self._tombstones, self._kv_index = tombstones, kv_index
                return 409, {"Results": None, "Errors": [{"OpIndex": position, "What": problem}]}
            if isinstance(result, Entry):
                results.append({"KV": result.to_json(with_value=verb == "get")})
        self._kv = work
        self._cond.notify_all()
        return 200, {"Results": results, "Errors": None}

    # ------------------------------------------------------------------ HTTP dispatch
    def handle(self, method: str, path: str, query: dict[str, str], body: bytes) -> tuple[int, Any, int | None]:
        """(status, JSON-able answer, X-Consul-Index or None). Runs under the lock."""
        if path.startswith("/v1/kv/"):
            return self._handle_kv(method, unquote(path[len("/v1/kv/"):]), query, body)
        if method == "PUT" and path == "/v1/session/create":
            return 200, self.create_session(json.loads(body or b"{}")), None
        if method == "PUT" and path.startswith("/v1/session/renew/"):
            return 200, self.renew_session(path.rsplit("/", 1)[1]), None
        if method == "PUT" and path.startswith("/v1/session/destroy/"):
            self._invalidate(path.rsplit("/", 1)[1])
            return 200, True, None
        if method == "PUT" and path == "/v1/txn":
            status, answer = self.txn(json.loads(body or b"[]"))
            return status, answer, None
        raise Refused(404, f"fake consul: no endpoint {method} {path}")

    def _handle_kv(self, method: str, key: str, query: dict[str, str], body: bytes) -> tuple[int, Any, int | None]:
        recurse = "recurse" in query
        if method == "GET":
            index, entries = self.read(key, recurse, int(query.get("index") or 0),
                                       go_duration(query.get("wait") or "5m"))
            return (200 if entries else 404), [e.to_json() for e in entries] or None, index
        if method == "DELETE":
            if "cas" in query:
                return 200, self.write("delete-cas", key, cas=int(query["cas"])), None
            if recurse:
                for k in [k for k in self._kv if k.startswith(key)]:
                    self.write("delete", k)
                return 200, True, None
            return 200, self.write("delete", key), None
        if method != "PUT":
            raise Refused(405, f"method {method} not allowed")
        verb, session, cas = "set", None, None
        if "cas" in query:
            verb, cas = "cas", int(query["cas"])
        if "acquire" in query:
            verb, session = "lock", query["acquire"]
        if "release" in query:
            verb, session = "unlock", query["release"]
        return 200, self.write(verb, key, body, session, cas), None


class _Handler(BaseHTTPRequestHandler):
    consul: FakeConsul
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as Consul (Go) sets on every connection. Without it the body, written after the
    # headers, waits for the client's delayed ACK of the headers: ~35 ms added to every answer.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self.consul._connections.add(self.connection)

    def finish(self) -> None:
        self.consul._connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        index = None
        try:
            if self.consul.token and self.headers.get("X-Consul-Token") != self.consul.token:
                raise Refused(403, "Permission denied")
            with self.consul._cond:
                status, answer, index = self.consul.handle(self.command, parts.path, query, body)
            payload = json.dumps(answer).encode() if answer is not None else b""
        except Refused as exc:
            status, payload = exc.status, str(exc).encode()
        except (ValueError, KeyError) as exc:
            status, payload = 400, f"Request decode failed: {exc}".encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if index is not None:
            self.send_header("X-Consul-Index", str(index))
            self.send_header("X-Consul-KnownLeader", "true")
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_PUT = do_DELETE = _serve
