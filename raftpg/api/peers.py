"""The other members' REST APIs, asked all at once within one deadline: by a primary cut off from the DCS
under failsafe_mode, to keep it (``POST /failsafe``); by a failover candidate, for their positions
(``GET /patroni``, PostgreSQL as observed at most half a second before). The requests carry this node's ``restapi.authentication``
(every member checks the same credentials on its unsafe methods) and, when the members verify client
certificates, this node's REST certificate; HTTPS URLs are verified against ``restapi.cafile``."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, wait

from raftpg.api.client import ApiClient, ApiError, base_url_of, error_text
from raftpg.api.tls import client_ssl_context
from raftpg.config.sections import RestApiSettings
from raftpg.model import PeerAnswer


class RestPeers:
    def __init__(self, restapi: RestApiSettings) -> None:
        auth = restapi.authentication
        self.username = auth.username if auth else None
        self.password = auth.password if auth else None
        self.restapi = restapi
        self._context: ssl.SSLContext | None = None

    def _ssl(self) -> ssl.SSLContext:
        if self._context is None:
            r = self.restapi
            mutual = r.verify_client != "none"
            self._context = client_ssl_context(r.cafile, r.certfile if mutual else None, r.keyfile if mutual else None)
        return self._context

    def _one(self, url: str, request: Mapping[str, object], timeout_s: float) -> str | None:
        client = ApiClient(base_url_of(url), self.username, self.password,
                           self._ssl() if url.startswith("https:") else None, timeout_s=timeout_s)
        try:
            status, answer = client.request("POST", "/failsafe", dict(request))
        except ApiError as exc:
            return exc.message
        except Exception as exc:  # noqa: BLE001 - e.g. an unreadable cafile: that member did not accept
            return f"{type(exc).__name__}: {exc}"
        if status == 200 and answer == "Accepted":
            return None
        return f"{status} {error_text(answer)}"

    def ask(self, members: tuple[tuple[str, str], ...], request: Mapping[str, object],
            timeout_s: float) -> dict[str, str | None]:
        if not members:
            return {}
        pool = ThreadPoolExecutor(max_workers=len(members), thread_name_prefix="failsafe")
        try:
            futures = {name: pool.submit(self._one, url, request, timeout_s) for name, url in members}
            wait(futures.values(), timeout=timeout_s + 0.5)
            return {name: f.result() if f.done() else f"no answer within {timeout_s:.1f}s"
                    for name, f in futures.items()}
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _position(self, name: str, url: str, timeout_s: float) -> PeerAnswer:
        client = ApiClient(base_url_of(url), self.username, self.password,
                           self._ssl() if url.startswith("https:") else None, timeout_s=timeout_s)
        try:
            status, body = client.request("GET", "/patroni")
        except Exception as exc:  # noqa: BLE001 - unreachable, or an unreadable cafile: no answer
            return PeerAnswer(name, error=f"{type(exc).__name__}: {exc}")
        if status != 200 or not isinstance(body, dict):
            return PeerAnswer(name, error=f"{status} {error_text(body)}")
        return answer_of(name, body)

    def positions(self, members: tuple[tuple[str, str], ...], timeout_s: float) -> tuple[PeerAnswer, ...]:
        if not members:
            return ()
        pool = ThreadPoolExecutor(max_workers=len(members), thread_name_prefix="positions")
        try:
            futures = {name: pool.submit(self._position, name, url, timeout_s) for name, url in members}
            wait(futures.values(), timeout=timeout_s + 0.5)
            return tuple(f.result() if f.done() else PeerAnswer(name, error=f"no answer within {timeout_s:.1f}s")
                         for name, f in futures.items())
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


def _lsn(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def answer_of(name: str, body: dict[str, object]) -> PeerAnswer:
    """A member's ``GET /patroni`` as a position: a running primary (``xlog.location``), a replica (the
    further of ``received_location`` and ``replayed_location``), or no usable answer (stopped, a witness,
    a document without positions)."""
    xlog = body.get("xlog")
    state = body.get("state")
    timeline = _lsn(body.get("timeline"))
    if not isinstance(xlog, dict) or state != "running" or body.get("witness"):
        return PeerAnswer(name, error=f"no running PostgreSQL (state {state})")
    if "location" in xlog:
        return PeerAnswer(name, in_recovery=False, lsn=_lsn(xlog.get("location")), timeline=timeline)
    known = [p for p in (_lsn(xlog.get("received_location")), _lsn(xlog.get("replayed_location"))) if p is not None]
    if not known:
        return PeerAnswer(name, error="a replica that reports no position")
    return PeerAnswer(name, in_recovery=True, lsn=max(known), timeline=timeline)
