"""Who may change the cluster: basic auth on the unsafe methods, and a rate-limited log of failed logins.

Contract: when ``restapi.authentication`` is configured, every unsafe method (POST, PUT, PATCH, DELETE)
needs HTTP basic auth with exactly those credentials; both halves are compared in constant time; a failure
is 401 with ``WWW-Authenticate`` and changes nothing. Reads stay open, as in Patroni (load balancers probe
them without credentials).

Every failed login is logged with the client's address (the TCP peer: a forwarded-for header is the
client's own claim and is not trusted), the method and the path; never the password, and the username
only when it is the configured one (a password typed into the username field must not reach the log).
At most ``burst`` failures are logged one by one per ``window_s``; the rest are counted and summarised in
one line once the window is over (at the next request), so a flood of bad logins cannot flood the log.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from raftpg.api.http import UNSAFE, Handler, error

log = logging.getLogger(__name__)

LOG_BURST = 5
LOG_WINDOW_S = 60.0
_MAX_ADDRESSES = 1000  # distinct addresses counted in one summary (a bound on memory, not on the count)


class FailedLogins:
    """The log of failed logins: ``burst`` lines per ``window_s``, then one summary line per window."""

    def __init__(self, monotonic: Callable[[], float], *, burst: int = LOG_BURST,
                 window_s: float = LOG_WINDOW_S) -> None:
        self._monotonic = monotonic
        self.burst = burst
        self.window_s = window_s
        self._window_start: float | None = None
        self._logged = 0
        self._suppressed = 0
        self._addresses: set[str] = set()

    def record(self, client: str | None, method: str, path: str, reason: str) -> None:
        self.flush_if_due()
        if self._window_start is None:
            self._window_start = self._monotonic()
        if self._logged < self.burst:
            self._logged += 1
            log.warning("REST API: failed login from %s: %s %r (%s)", client or "an unknown address", method,
                        path[:200], reason)
            return
        self._suppressed += 1
        if len(self._addresses) < _MAX_ADDRESSES:
            self._addresses.add(client or "unknown")

    def flush_if_due(self) -> None:
        """Close the window once ``window_s`` has passed since its first failure: summarise what was not
        logged, and let the next failures be logged one by one again."""
        if self._window_start is None or self._monotonic() - self._window_start < self.window_s:
            return
        if self._suppressed:
            addresses = len(self._addresses)
            log.warning("REST API: %d more failed logins from %s%d address(es) within %.0f s (not logged one "
                        "by one)", self._suppressed, "at least " if addresses >= _MAX_ADDRESSES else "",
                        addresses, self.window_s)
        self._window_start = None
        self._logged = self._suppressed = 0
        self._addresses = set()


def auth_middleware(username: str | None, password: str | None, failed: FailedLogins | None = None,
                    realm: str = "raftpg") -> Middleware:
    """Basic auth on the unsafe methods when ``username`` is set (nothing is checked otherwise)."""
    expected = (username or "").encode(), (password or "").encode()
    challenge = {"WWW-Authenticate": f'Basic realm="{realm}"'}

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if failed is not None:
            failed.flush_if_due()
        if username is not None and request.method in UNSAFE:
            reason = refusal(request.headers.get("Authorization", ""), expected)
            if reason is not None:
                if failed is not None:
                    failed.record(request.remote, request.method, request.path, reason)
                return error("authentication required", 401, challenge)
        return await handler(request)

    return auth


def refusal(header: str, expected: tuple[bytes, bytes]) -> str | None:
    """Why an ``Authorization`` header does not carry the expected credentials (None: it does)."""
    scheme, _, token = header.partition(" ")
    if not header:
        return "no credentials"
    if scheme.lower() != "basic":
        return "not basic authentication"
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        return "malformed basic credentials"
    # both comparisons always run: timing does not tell which half was wrong
    ok_user = hmac.compare_digest(user, expected[0])
    ok_password = hmac.compare_digest(password, expected[1])
    if sep and ok_user and ok_password:
        return None
    if not ok_user:
        return "unknown username"
    return f"wrong password for user {expected[0].decode(errors='replace')!r}"
