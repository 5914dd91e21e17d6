"""A small synchronous client for the REST API, used by raftpgctl (standard library only: urllib).

Errors come back as :class:`ApiError` with a one-line message: ``cannot reach http://127.0.0.1:8008:
connection refused``, or the server's ``{"error": ...}`` text with the HTTP status. Redirects are not
followed and environment proxies are not used: the credentials go to ``base_url`` only.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, replace
from typing import Any


class ApiError(Exception):
    """``status`` is the HTTP status, or None when no answer came; ``detail`` the server's own reason."""

    def __init__(self, message: str, status: int | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.detail = detail or message


def base_url_of(api_url: str) -> str:
    """``http://10.0.0.1:8008/patroni`` -> ``http://10.0.0.1:8008`` (a member's api_url names a page)."""
    parts = urllib.parse.urlsplit(api_url)
    return f"{parts.scheme}://{parts.netloc}"


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(reason, socket.gaierror):
        return f"unknown host ({reason.strerror})"
    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({reason.verify_message})"
    if isinstance(reason, ssl.SSLError):
        return f"TLS error ({reason.reason or reason})"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason) or type(reason).__name__


@dataclass(frozen=True)
class ApiClient:
    base_url: str
    username: str | None = None
    password: str | None = None
    ssl_context: ssl.SSLContext | None = None
    timeout_s: float = 60.0

    def at(self, base_url: str) -> ApiClient:
        """The same credentials and TLS settings, for another member's API (the caller decides whether
        that member may see the credentials: ``raftpg.cli.ctl_trust``)."""
        return replace(self, base_url=base_url_of(base_url))

    @property
    def has_credentials(self) -> bool:
        return self.username is not None

    def without_credentials(self) -> ApiClient:
        return replace(self, username=None, password=None)

    def _headers(self, has_body: bool) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if has_body:
            headers["Content-Type"] = "application/json"
        if self.username is not None:
            token = base64.b64encode(f"{self.username}:{self.password or ''}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        return headers

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(status, parsed JSON or text) for any answer, including 4xx/5xx; ApiError when none came."""
        data = None if body is None else json.dumps(body).encode()
        url = self.base_url.rstrip("/") + path
        req = urllib.request.Request(url, data=data, method=method, headers=self._headers(data is not None))
        if data is None and method in ("POST", "PUT", "PATCH"):
            req.add_header("Content-Length", "0")
        try:
            with _opener(self._context(url)).open(req, timeout=self.timeout_s) as resp:
                return resp.status, _decode(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _decode(exc.read())
        except (urllib.error.URLError, OSError) as exc:
            raise ApiError(f"cannot reach {self.base_url}: {_reason(exc)}") from None

    def _context(self, url: str) -> ssl.SSLContext | None:
        return self.ssl_context if url.startswith("https:") else None

    def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201, 202)) -> Any:
        """The parsed answer of a successful request; ApiError with the server's reason otherwise."""
        status, answer = self.request(method, path, body)
        if status not in ok:
            reason = error_text(answer)
            raise ApiError(f"{method} {self.base_url}{path}: {status} {reason}", status, reason)
        return answer

    def get(self, path: str) -> Any:
        return self.call("GET", path)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """The API never redirects: a 3xx is returned as it is, so credentials never follow one elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _opener(context: ssl.SSLContext | None) -> urllib.request.OpenerDirector:
    # no proxy from the environment either: credentials go to the API's own address and nowhere else
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect(),
                                       urllib.request.HTTPSHandler(context=context))


def error_text(answer: Any) -> str:
    if isinstance(answer, dict):
        for name in ("error", "message"):
            text = answer.get(name)
            if isinstance(text, str):
                return text
    return str(answer)[:200]


def _decode(raw: bytes) -> Any:
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text) if text.strip() else None
    except ValueError:
        return text
