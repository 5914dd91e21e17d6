"""One Raft KV node as a process, with a small JSON-over-HTTP control API.

Used by the integration tests, ``bench/kv_bench.py`` and jepsen-lite's KV-register workload (which runs
it inside network namespaces). It is a test and operations harness, not raftpg's REST API::

    python -m raftpg.testing.raft_driver --self 127.0.0.1:7001 --partners 127.0.0.1:7002,127.0.0.1:7003 \\
        --data-dir /var/lib/raftpg/raft --control 127.0.0.1:8001 [--password X | --password-file F] \\
        [--name n1] [--witness-name w1] [--bind 0.0.0.0:7001] [--fsync] [--force-new-cluster] \
        [--log-level INFO]

A password is required (safety rule 9: pysyncobj unpickles every frame, so a Raft port without one
runs code for anyone who can reach it): ``--password-file F`` (preferred: a command line is visible to
every local user), ``RAFTPG_RAFT_PASSWORD`` in the environment, or ``--password X``.

Prints one line ``ready`` on stdout once Raft listens and the control API accepts connections. A bad
setting or a port that cannot be bound prints ``error: ...`` on stderr and exits with status 2.
SIGTERM or SIGINT: stop serving, close the Raft node cleanly (journal flushed), exit 0. If Raft's
thread dies, the process logs it and exits with status 3 (a supervisor restarts it).

Clock faults: under libfaketime 0.9.10 with ``FAKETIME_DONT_FAKE_MONOTONIC=1`` (only the wall clock
moved, as an NTP step does) Python 3.11's ``time.sleep`` fails with EINVAL (libfaketime issue #426),
which would kill pysyncobj's thread; the driver detects this at start and replaces ``time.sleep`` in
its own process with a ``select()``-based sleep. With the monotonic clock faked too, timed waits on
locks and events never return (libfaketime issues #142/#390), so a Python node cannot run that way.

Every request may carry ``timeout_s`` (JSON body or query string; default 5, at most 120). Requests:

- ``POST /put`` ``{key, value, guard?, ttl_s?}``; ``POST /touch`` ``{key, guard?}``;
  ``POST /delete`` ``{key, guard?}``. ``guard`` is ``{exists?: bool, mod_revision?: int, value?: str}``.
- ``POST /cas`` ``{key, expected, new, ttl_s?}``: ``expected`` is the value the key must hold, or null
  for "must not exist"; ``new`` is the value to write, or null to delete (then ``expected`` is needed).
- ``GET /get?key=K[&linearizable=1]`` -> ``{"kv": KV|null}``;
  ``GET /range?prefix=P[&linearizable=1]`` -> ``{"revision": R, "kvs": [KV...]}``;
  ``GET /watch?prefix=P&after_revision=R`` -> ``{"revision": R|null}`` (null: nothing changed in time).
- ``GET /status``: term, state, leader, commit index, last applied, members (connected or not),
  revision, ``fingerprint`` (a digest of the replicated state: equal on replicas that applied the same
  commands), ``name``, ``witness``, ``running``, ``wall_clock`` (this process's ``time.time()``, to
  check a clock fault took effect; nothing decides on it).
- ``POST /members/add`` ``{addr}``, ``POST /members/remove`` ``{addr}``, ``POST /transfer`` ``{addr?}``.

Answers: a write that took effect is ``200 {"ok": true, "revision": R, "kv": KV|null}``; a failed
guard is ``200 {"ok": false, "guard": NAME, "current": KV|null, "revision": R}`` (nothing changed).
``KV`` is ``{key, value, create_revision, mod_revision, version, ttl_s}``. Errors are
``{"error": KIND, "message": ..., "indeterminate": bool}`` where ``indeterminate`` true means the
command may still take effect (a client must record it as unknown, never as failed):

=================  ====  =====================================================================
kind               code  meaning
=================  ====  =====================================================================
no_quorum          503   no majority reachable in time (indeterminate if a leader held it)
timeout            504   no answer in time although a quorum seemed reachable (indeterminate)
unknown_outcome    409   Raft leadership changed while the command was in flight (indeterminate)
rejected           400   malformed request or over a limit; nothing changed
refused            409   a membership change or transfer pysyncobj refused (e.g. one in progress)
store_failed       500   the state machine stopped on an invariant violation (fail closed)
disk_full          507   the filesystem of the data directory is full: nothing was queued
=================  ====  =====================================================================

Malformed HTTP gets 400/404/405/411/413 with the same JSON shape (kind ``rejected``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from raftpg.clock import repair_sleep
from raftpg.consensus.api import (
    DiskFull,
    KvError,
    KvRejected,
    KvTimeout,
    NoQuorum,
    StoreFailed,
    UnknownOutcome,
)
from raftpg.consensus.raft import RaftConfigError, RaftNode, RaftSettings
from raftpg.consensus.recovery import RecoveryError
from raftpg.kv import Committed, Conflict, Guard, KeyValue

log = logging.getLogger("raftpg.testing.raft_driver")

# A request's arguments: its JSON body (POST) or its parsed query string (GET: each value a list).
Request = dict[str, Any]
Route = Callable[[Request], dict[str, Any]]
BODY_BYTES_MAX = 1024 * 1024
TIMEOUT_S_DEFAULT = 5.0
TIMEOUT_S_MAX = 120.0


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def kv_json(kv: KeyValue | None) -> dict[str, Any] | None:
    if kv is None:
        return None
    return {"key": kv.key, "value": kv.value, "create_revision": kv.create_revision,
            "mod_revision": kv.mod_revision, "version": kv.version, "ttl_s": kv.ttl_s}


def result_json(result: Committed | Conflict) -> dict[str, Any]:
    if isinstance(result, Committed):
        return {"ok": True, "revision": result.revision, "kv": kv_json(result.kv)}
    return {"ok": False, "guard": result.guard, "current": kv_json(result.current), "revision": result.revision}


def error_json(exc: Exception) -> tuple[int, dict[str, Any]]:
    kind, status = "refused", 409
    if isinstance(exc, NoQuorum):
        kind, status = "no_quorum", 503
    elif isinstance(exc, KvTimeout):
        kind, status = "timeout", 504
    elif isinstance(exc, UnknownOutcome):
        kind, status = "unknown_outcome", 409
    elif isinstance(exc, KvRejected):
        kind, status = "rejected", 400
    elif isinstance(exc, StoreFailed):
        kind, status = "store_failed", 500
    elif isinstance(exc, DiskFull):
        kind, status = "disk_full", 507
    indeterminate = bool(getattr(exc, "indeterminate", True)) if isinstance(exc, KvError) else False
    return status, {"error": kind, "message": str(exc), "indeterminate": indeterminate}


# ------------------------------------------------------------------------------------- request parsing


def _str(body: Request, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    return value


def _str_or_none(body: Request, name: str) -> str | None:
    return None if body.get(name) is None else _str(body, name)


def _guard(body: Request) -> Guard | None:
    raw = body.get("guard")
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - {"exists", "mod_revision", "value"}:
        raise BadRequest("guard must be an object with exists, mod_revision and/or value")
    exists, mod_revision, value = raw.get("exists"), raw.get("mod_revision"), raw.get("value")
    if exists is not None and not isinstance(exists, bool):
        raise BadRequest("guard.exists must be a boolean")
    if mod_revision is not None and (isinstance(mod_revision, bool) or not isinstance(mod_revision, int)):
        raise BadRequest("guard.mod_revision must be an integer")
    if value is not None and not isinstance(value, str):
        raise BadRequest("guard.value must be a string")
    return Guard(exists=exists, mod_revision=mod_revision, value=value)


def _number(raw: Any, name: str) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, list):  # from a query string
        raw = raw[-1]
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise BadRequest(f"{name} must be a number") from None
    if isinstance(raw, bool) or value != value:
        raise BadRequest(f"{name} must be a number")
    return value


def _timeout(body: Request) -> float:
    timeout_s = _number(body.get("timeout_s"), "timeout_s")
    if timeout_s is None:
        return TIMEOUT_S_DEFAULT
    if not 0 < timeout_s <= TIMEOUT_S_MAX:
        raise BadRequest(f"timeout_s must be in (0, {TIMEOUT_S_MAX:.0f}]")
    return timeout_s


def _flag(query: Request, name: str) -> bool:
    return query.get(name, ["0"])[-1].lower() in ("1", "true", "yes")


# ---------------------------------------------------------------------------------------------- routes


class Driver:
    def __init__(self, node: RaftNode, name: str, witness: bool) -> None:
        self.node = node
        self.name = name
        self.witness = witness

    def put(self, body: Request) -> dict[str, Any]:
        ttl_s = _number(body.get("ttl_s"), "ttl_s")
        return result_json(self.node.put(_str(body, "key"), _str(body, "value"), guard=_guard(body),
                                         ttl_s=ttl_s, timeout_s=_timeout(body)))

    def touch(self, body: Request) -> dict[str, Any]:
        return result_json(self.node.touch(_str(body, "key"), guard=_guard(body), timeout_s=_timeout(body)))

    def delete(self, body: Request) -> dict[str, Any]:
        return result_json(self.node.delete(_str(body, "key"), guard=_guard(body), timeout_s=_timeout(body)))

    def cas(self, body: Request) -> dict[str, Any]:
        if "expected" not in body or "new" not in body:
            raise BadRequest("cas needs expected (a value, or null for must-not-exist) and new")
        key = _str(body, "key")
        expected, new = _str_or_none(body, "expected"), _str_or_none(body, "new")
        guard = Guard(exists=False) if expected is None else Guard(value=expected)
        if new is None:
            if expected is None:
                raise BadRequest("cas with new null deletes: expected must name the current value")
            return result_json(self.node.delete(key, guard=guard, timeout_s=_timeout(body)))
        return result_json(self.node.put(key, new, guard=guard, ttl_s=_number(body.get("ttl_s"), "ttl_s"),
                                         timeout_s=_timeout(body)))

    def get(self, query: Request) -> dict[str, Any]:
        key = query.get("key", [None])[-1]
        if not key:
            raise BadRequest("key is required")
        return {"kv": kv_json(self.node.get(key, linearizable=_flag(query, "linearizable"),
                                            timeout_s=_timeout(query)))}

    def range(self, query: Request) -> dict[str, Any]:
        revision, kvs = self.node.range(query.get("prefix", [""])[-1],
                                        linearizable=_flag(query, "linearizable"), timeout_s=_timeout(query))
        return {"revision": revision, "kvs": [kv_json(kv) for kv in kvs]}

    def watch(self, query: Request) -> dict[str, Any]:
        after = _number(query.get("after_revision"), "after_revision")
        if after is None:
            raise BadRequest("after_revision is required")
        return {"revision": self.node.watch(query.get("prefix", [""])[-1], int(after), _timeout(query))}

    def status(self, query: Request) -> dict[str, Any]:
        status = self.node.status().to_dict()
        digest = hashlib.sha256(repr(self.node.fingerprint()).encode()).hexdigest()
        status.update(name=self.name, witness=self.witness, fingerprint=digest, wall_clock=time.time())
        return status

    def add_member(self, body: Request) -> dict[str, Any]:
        self.node.add_member(_str(body, "addr"), timeout_s=_timeout(body))
        return {"ok": True}

    def remove_member(self, body: Request) -> dict[str, Any]:
        self.node.remove_member(_str(body, "addr"), timeout_s=_timeout(body))
        return {"ok": True}

    def transfer(self, body: Request) -> dict[str, Any]:
        return {"ok": True, "leader": self.node.transfer_leadership(_str_or_none(body, "addr"),
                                                                    timeout_s=_timeout(body))}

    def routes(self) -> dict[tuple[str, str], Route]:
        return {
            ("POST", "/put"): self.put, ("POST", "/touch"): self.touch, ("POST", "/delete"): self.delete,
            ("POST", "/cas"): self.cas, ("GET", "/get"): self.get, ("GET", "/range"): self.range,
            ("GET", "/watch"): self.watch, ("GET", "/status"): self.status,
            ("POST", "/members/add"): self.add_member, ("POST", "/members/remove"): self.remove_member,
            ("POST", "/transfer"): self.transfer,
        }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection per client
    disable_nagle_algorithm = True
    server: ControlServer

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        routes = self.server.routes
        try:
            handler = routes.get((method, url.path))
            if handler is None:
                other = "POST" if method == "GET" else "GET"
                raise BadRequest(f"{method} {url.path} is not a request of this API",
                                 405 if (other, url.path) in routes else 404)
            if method == "GET":
                payload = handler(parse_qs(url.query))
            else:
                payload = handler(self._body())
            self._reply(200, payload)
        except (BrokenPipeError, ConnectionResetError):  # while reading the request: nothing to answer to
            log.info("control request %s %s: the client left before the answer", method, url.path)
            self.close_connection = True
        except BadRequest as exc:
            self._reply(exc.status, {"error": "rejected", "message": str(exc), "indeterminate": False})
        except KvError as exc:
            status, payload = error_json(exc)
            self._reply(status, payload)
        except Exception as exc:  # noqa: BLE001 - a bug here must not kill the connection silently
            log.exception("control request %s %s failed", method, url.path)
            self._reply(500, {"error": "internal", "message": repr(exc), "indeterminate": True})

    def _body(self) -> dict[str, Any]:
        length = self.headers.get("Content-Length")
        if length is None:
            raise BadRequest("Content-Length is required", 411)
        try:
            size = int(length)
        except ValueError:
            raise BadRequest("Content-Length is not a number") from None
        if size < 0 or size > BODY_BYTES_MAX:
            self.close_connection = True  # the unread body would be taken for the next request
            raise BadRequest(f"body over {BODY_BYTES_MAX} bytes", 413)
        raw = self.rfile.read(size) if size else b"{}"
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raise BadRequest("body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        return body

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        """Every answer, an error's too: a client that gave up meanwhile (its own deadline, a partition) is
        one line in the log, never a traceback (campaign cells register-s3, and register-s5 on the error
        path: a KvTimeout's answer to a client already gone)."""
        data = json.dumps(payload, separators=(",", ":")).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            log.info("control request %s: the client left before the answer", self.path.split("?")[0])
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        log.debug("control: " + format, *args)


class ControlServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    routes: dict[tuple[str, str], Route] = {}


# ------------------------------------------------------------------------------------------------ main


def _host_port(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RaftConfigError(f"{what}: expected host:port, got {value!r}")
    return host.strip("[]"), int(port)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m raftpg.testing.raft_driver",
                                     description="Run one Raft KV node with a JSON control API.")
    parser.add_argument("--self", dest="self_addr", required=True, help="this node's Raft host:port")
    parser.add_argument("--partners", default="", help="comma-separated Raft host:port of the other voters")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--control", required=True, help="host:port of the JSON control API")
    parser.add_argument("--password", default=os.environ.get("RAFTPG_RAFT_PASSWORD") or None,
                        help="the cluster's Raft password (default: $RAFTPG_RAFT_PASSWORD)")
    parser.add_argument("--password-file", default=None, help="read the password from this file")
    parser.add_argument("--bind", default=None, help="Raft bind host:port if not --self")
    parser.add_argument("--name", default=None)
    parser.add_argument("--witness-name", default=None, help="run as a witness (a voter without PostgreSQL)")
    parser.add_argument("--fsync", action="store_true",
                        help="make every log entry durable before it can be acknowledged (power-loss safe)")
    parser.add_argument("--force-new-cluster", action="store_true",
                        help="majority lost: form a new one-node cluster from this node's data (one-shot)")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def _watch_raft(node: RaftNode, server: ControlServer, stopped: threading.Event, exit_code: list[int]) -> None:
    while not stopped.wait(1.0):
        if not node.running:
            log.critical("the Raft thread died: exiting so that a supervisor restarts this node")
            exit_code[0] = 3
            server.shutdown()
            return


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    repair_sleep()
    password = args.password
    node: RaftNode | None = None
    try:
        if args.password_file:
            with open(args.password_file, encoding="utf-8") as f:
                password = f.read().strip()
        if not password:
            raise RaftConfigError("raft.password: required (--password-file, RAFTPG_RAFT_PASSWORD or "
                                  "--password): a Raft port without a password unpickles frames from anyone")
        partners = tuple(p.strip() for p in args.partners.split(",") if p.strip())
        settings = RaftSettings(self_addr=args.self_addr, partner_addrs=partners, data_dir=args.data_dir,
                                bind_addr=args.bind, password=password,
                                force_new_cluster=args.force_new_cluster, fsync=args.fsync)
        server = ControlServer(_host_port(args.control, "--control"), Handler)
        node = RaftNode(settings)
    except (RaftConfigError, RecoveryError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    driver = Driver(node, args.witness_name or args.name or args.self_addr, args.witness_name is not None)
    server.routes = driver.routes()

    def stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: shutting down", signum)
        threading.Thread(target=server.shutdown, name="control-shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stopped, exit_code = threading.Event(), [0]
    threading.Thread(target=_watch_raft, args=(node, server, stopped, exit_code), name="raft-watch",
                     daemon=True).start()
    print("ready", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        stopped.set()
        server.server_close()
        node.close()
        log.info("stopped")
    return exit_code[0]


if __name__ == "__main__":
    sys.exit(main())
