"""HTTP plumbing shared by the external stores (``etcd_gateway.py``, ``consul.py``): TLS, and one request
within a deadline over one or several endpoints.

The rule both follow: a connection error means the request never left, so the next endpoint is tried, and
the round is repeated with a short backoff until the deadline. A request that was sent but got no answer
is retried only when it is idempotent (reads, plain puts, lease or session renewals); a conditional write
raises ``DcsError(unknown_outcome=True)`` instead, because a retry could report a lost race for a write that
was in fact applied. Each attempt's timeouts are cut to what is left of the deadline (httpx times each
phase, not the whole request, so connecting gets at most ``CONNECT_TIMEOUT_S`` of it).
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import httpx

from raftpg.clock import Clock, SystemClock
from raftpg.dcs.base import DcsError

T = TypeVar("T")
CONNECT_TIMEOUT_S = 1.0
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class TryNext(Exception):
    """This endpoint could not serve the request and nothing changed: try the next one (or again)."""


def client_tls(cacert: str | None, cert: str | None, key: str | None, verify: bool = True, *,
               section: str = "dcs") -> ssl.SSLContext:
    """Server verification against ``cacert`` (or the system CAs when None), and a client certificate if
    given; TLS 1.2 at least. A file that cannot be loaded raises ValueError naming ``<section>.<key>``, so
    the node refuses to start with one clear line rather than running without the TLS it was asked for."""
    try:
        context = ssl.create_default_context(cafile=cacert)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{section}.cacert: cannot load {cacert}: {_why(exc)}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert:
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{section}.cert/key: cannot load {cert} and {key}: {_why(exc)}") from None
    return context


def _why(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def new_client(tls: ssl.SSLContext | None) -> httpx.Client:
    # trust_env=False: an HTTP(S)_PROXY meant for the internet must not sit between us and the DCS
    return httpx.Client(verify=tls if tls is not None else True, trust_env=False)


def phase_timeout(remaining: float) -> httpx.Timeout:
    return httpx.Timeout(remaining, connect=min(remaining, CONNECT_TIMEOUT_S))


class Endpoints:
    """The store's endpoints; requests start at the one that last answered."""

    def __init__(self, urls: Sequence[str], store: str, clock: Clock | None = None) -> None:
        if not urls:
            raise ValueError(f"{store}: at least one endpoint is needed")
        self.urls = list(urls)
        self.store = store
        self.current = 0
        self.closed = threading.Event()
        self._clock = clock or SystemClock()

    def next(self) -> None:
        self.current = (self.current + 1) % len(self.urls)

    def call(self, send: Callable[[str, float], T], *, deadline: float, what: str, idempotent: bool) -> T:
        """``send(url, remaining_s)`` on each endpoint in turn until one answers or the deadline passes.

        ``send`` raises :class:`TryNext` for an answer that changed nothing (no leader, expired token) and
        :class:`DcsError` for a final one; httpx errors are classified here.
        """
        problems: list[str] = []
        attempt = 0
        while not self.closed.is_set():
            for i in range(len(self.urls)):
                url = self.urls[(self.current + i) % len(self.urls)]
                remaining = deadline - self._clock.monotonic()
                if remaining <= 0:
                    break
                try:
                    result = send(url, remaining)
                except (TryNext, *_NOT_SENT) as exc:
                    problems.append(f"{url}: {exc or type(exc).__name__}")
                    continue
                except httpx.TransportError as exc:  # sent, and no answer came back
                    if not idempotent:
                        raise DcsError(f"{self.store} {url}: {what}: no answer ({exc or type(exc).__name__}); "
                                       "it may have been applied", unknown_outcome=True) from exc
                    problems.append(f"{url}: {exc or type(exc).__name__}")
                    continue
                self.current = self.urls.index(url)
                return result
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                break
            self.closed.wait(min(remaining, 0.05 * 2 ** attempt, 0.5))
            attempt += 1
        if self.closed.is_set():
            raise DcsError(f"{self.store}: {what}: the client was closed")
        detail = "; ".join(problems[-len(self.urls):]) or "the deadline was too short to try"
        raise DcsError(f"{self.store}: {what}: no answer from {', '.join(self.urls)} in time ({detail})")
