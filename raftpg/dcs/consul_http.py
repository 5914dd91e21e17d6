"""Consul's HTTP API as the Consul DCS uses it: one agent, a deadline per request, the ACL token and the
datacenter on each, and the encodings (Go durations, base64 values). See ``consul.py`` for the port."""

from __future__ import annotations

import base64
import re
import ssl
from dataclasses import dataclass
from typing import Any

from raftpg.clock import Clock
from raftpg.dcs.base import DcsError
from raftpg.dcs.http import Endpoints, TryNext, new_client, phase_timeout

_DURATION = re.compile(r"([0-9.]+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str) -> float:
    """Seconds in a Go duration as Consul writes it (``15s``, ``1m0s``, ``500ms``)."""
    return sum(float(number) * _UNITS[unit] for number, unit in _DURATION.findall(value))


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def text(data: str | None) -> str:
    """A value as text; never raises (see ``etcd_gateway.text``: the codec judges the document)."""
    try:
        raw = base64.b64decode(data or "")
    except (ValueError, TypeError):
        return str(data)
    return raw.decode("utf-8", errors="surrogateescape")


@dataclass(frozen=True)
class Answer:
    status: int  # 200, 404 (no such key or session) or 409 (a transaction rolled back)
    data: Any  # the JSON body, None when empty
    index: int  # X-Consul-Index, 0 when absent


class ConsulHttp:
    """Requests to one Consul agent within a deadline, with the ACL token and datacenter on each."""

    def __init__(self, base_url: str, *, token: str | None = None, dc: str | None = None,
                 tls: ssl.SSLContext | None = None, clock: Clock | None = None) -> None:
        self.endpoints = Endpoints([base_url.rstrip("/")], "consul", clock)
        self.closed = self.endpoints.closed
        self._client = new_client(tls)
        self._headers = {"X-Consul-Token": token} if token else {}
        self._dc = {"dc": dc} if dc else {}

    def request(self, method: str, path: str, *, deadline: float, what: str, idempotent: bool,
                params: dict[str, Any] | None = None, content: bytes | None = None,
                json_body: Any = None) -> Answer:
        """The answer when it is 200, 404 (no such key or session) or 409 (a transaction rolled back)."""
        def send(base: str, remaining: float) -> Answer:
            response = self._client.request(method, base + path, params={**(params or {}), **self._dc},
                                            content=content, json=json_body, headers=self._headers,
                                            timeout=phase_timeout(remaining))
            if response.status_code in (200, 404, 409):
                try:
                    data = response.json() if response.content and response.status_code != 404 else None
                    return Answer(response.status_code, data, int(response.headers.get("X-Consul-Index", 0)))
                except ValueError as exc:
                    raise DcsError(f"consul {base}: {what}: unreadable answer: {response.text[:100]!r}") from exc
            message = response.text.strip()[:200] or f"HTTP {response.status_code}"
            if response.status_code >= 500 and "invalid" not in message.lower():
                if idempotent or "No cluster leader" in message:
                    raise TryNext(message)
                raise DcsError(f"consul {base}: {what}: {message}", unknown_outcome=True)
            raise DcsError(f"consul {base}: {what}: HTTP {response.status_code}: {message}")

        return self.endpoints.call(send, deadline=deadline, what=what, idempotent=idempotent)

    def close(self) -> None:
        self.closed.set()
        self._client.close()
