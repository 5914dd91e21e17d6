"""The HTTP side of the etcd DCS: etcd v3's JSON gateway, several hosts, auth, TLS, deadlines.

etcd 3.4 serves the gateway at ``/v3/``; etcd 3.3 at ``/v3beta/``, which is tried when ``/v3/`` answers 404.
Keys and values are base64 in the JSON; 64-bit integers are strings; fields at their zero value are left
out (an empty value, ``succeeded: false``, a lease's TTL of 0).

Failover and deadlines follow ``http.py`` (next host on a connection error; a conditional write sent but not
answered raises ``DcsError(unknown_outcome=True)``). ``Unavailable`` answers are retried when nothing can
have changed (a read, or "no leader"); other errors are raised as :class:`EtcdApiError`.
"""

from __future__ import annotations

import base64
import ssl
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import httpx

from raftpg.clock import Clock
from raftpg.dcs.base import DcsError
from raftpg.dcs.http import Endpoints, TryNext, new_client, phase_timeout

NOT_FOUND, UNAVAILABLE, UNAUTHENTICATED = 5, 14, 16  # gRPC codes in the gateway's error body


class EtcdApiError(DcsError):
    """etcd answered with an error (``code`` is the gRPC status code, e.g. 5 for a lease not found)."""

    def __init__(self, message: str, code: int | None, *, unknown_outcome: bool = False) -> None:
        super().__init__(message, unknown_outcome=unknown_outcome)
        self.code = code


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def text(data: str | None) -> str:
    """A key or value as text. Never raises: bytes that are not UTF-8 become lone surrogates
    (``surrogateescape``) and undecodable base64 is kept as it came, so that the DCS codec, not this
    transport, judges the document (an unreadable member key must not make the whole read fail)."""
    try:
        raw = base64.b64decode(data or "")
    except (ValueError, TypeError):
        return str(data)
    return raw.decode("utf-8", errors="surrogateescape")


def prefix_end(prefix: str) -> bytes:
    """The range end covering every key that starts with ``prefix`` (etcd's ``WithPrefix``)."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return b"\0"
    raw[-1] += 1
    return bytes(raw)


class EtcdGateway:
    """POSTs JSON to the etcd hosts, failing over between them, each call within its deadline."""

    def __init__(self, hosts: Sequence[str], *, protocol: str = "http", username: str | None = None,
                 password: str | None = None, tls: ssl.SSLContext | None = None, clock: Clock | None = None) -> None:
        self.endpoints = Endpoints([f"{protocol}://{host}" for host in hosts], "etcd", clock)
        self._credentials = {"name": username, "password": password} if username else None
        self._client = new_client(tls)
        self._stream_client = new_client(tls)  # the watch stream's own: it reads on another thread
        self._api = "/v3"
        self._tokens: dict[str, str] = {}

    @property
    def closed(self) -> threading.Event:
        return self.endpoints.closed

    def _headers(self, base: str, remaining: float) -> dict[str, str]:
        if self._credentials is None:
            return {}
        if base not in self._tokens:  # simple tokens are per etcd member: one per host
            response = self._client.post(f"{base}{self._api}/auth/authenticate", json=self._credentials,
                                         timeout=phase_timeout(remaining))
            self._tokens[base] = str(self._check(base, response, "authenticate", write=False).get("token", ""))
        return {"Authorization": self._tokens[base]}

    def post(self, path: str, body: dict[str, Any], *, deadline: float, what: str,
             idempotent: bool) -> dict[str, Any]:
        def send(base: str, remaining: float) -> dict[str, Any]:
            response = self._client.post(f"{base}{self._api}{path}", json=body, timeout=phase_timeout(remaining),
                                         headers=self._headers(base, remaining))
            if response.status_code == 404 and self._api == "/v3":
                self._api = "/v3beta"  # etcd 3.3
                raise TryNext("no /v3 gateway, trying /v3beta")
            return self._check(base, response, what, write=not idempotent)

        return self.endpoints.call(send, deadline=deadline, what=what, idempotent=idempotent)

    def _check(self, base: str, response: httpx.Response, what: str, *, write: bool) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            data = {"message": response.text[:200]}
        if response.status_code == 200 and isinstance(data, dict):
            return data
        data = data if isinstance(data, dict) else {}
        code = data.get("code")
        message = data.get("message") or data.get("error") or f"HTTP {response.status_code}"
        if code == UNAUTHENTICATED and self._credentials and base in self._tokens:
            del self._tokens[base]  # the token expired: authenticate again
            raise TryNext(message)
        if code == UNAVAILABLE or response.status_code >= 500:
            if not write or "no leader" in message:  # "no leader": never proposed
                raise TryNext(message)
            raise EtcdApiError(f"etcd {base}: {what}: {message}", code, unknown_outcome=True)
        raise EtcdApiError(f"etcd {base}: {what}: {message}", code)

    @contextmanager
    def stream(self, path: str, body: dict[str, Any], *, timeout_s: float) -> Iterator[httpx.Response]:
        """A streaming POST to the current host (the watch), on a client of its own (the watch thread reads
        it while the HA loop posts); the caller moves on with ``next_host``."""
        base = self.endpoints.urls[self.endpoints.current]
        with self._stream_client.stream("POST", f"{base}{self._api}{path}", json=body, timeout=phase_timeout(timeout_s),
                                 headers=self._headers(base, timeout_s)) as response:
            if response.status_code != 200:
                response.read()
                self._check(base, response, "watch", write=False)
            yield response

    def next_host(self) -> None:
        self.endpoints.next()

    def close(self) -> None:
        self.endpoints.closed.set()
        self._client.close()
        self._stream_client.close()
