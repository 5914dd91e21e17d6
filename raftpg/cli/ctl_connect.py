"""raftpgctl keeps working when the local agent is down: it tries the other members' REST APIs.

The first address is the config's own (``restapi.connect_address``). When it gives no answer at all
(connection refused, timeout: not an HTTP error), the next candidates are, in order: the ``api_url`` of
every member in the last member list raftpgctl saw (cached per scope after each ``GET /cluster``), then
each host of ``raft.partner_addrs`` with this node's REST port (the usual layout: one port everywhere).
The first that answers is used for the rest of the command, and raftpgctl says so on stderr.

Credentials go to a fallback only where ``ctl_trust`` allows (a host the config names, or TLS verified
against the cluster's CA); otherwise reads go without them and unsafe requests are refused with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import click

from raftpg.api.client import ApiClient, ApiError, base_url_of
from raftpg.cli.ctl_trust import MemberTrust
from raftpg.config import split_host_port

CACHE_ENV = "RAFTPGCTL_CACHE_DIR"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def cache_path(scope: str) -> str:
    base = os.environ.get(CACHE_ENV) or os.path.join(click.get_app_dir("raftpg"), "cache")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in scope)
    return os.path.join(base, f"members-{safe}.json")


def remember_members(scope: str, cluster: Mapping[str, Any]) -> None:
    """Keep each member's api_url for the next command (best effort: a read-only home is fine)."""
    urls = {m["name"]: m["api_url"] for m in cluster.get("members") or [] if m.get("api_url")}
    if not urls:
        return
    path = cache_path(scope)
    with contextlib.suppress(OSError):
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(urls, f)
        os.replace(tmp, path)


def remembered_members(scope: str) -> dict[str, str]:
    try:
        with open(cache_path(scope), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


def partner_urls(raw: Mapping[str, Any], own_base_url: str) -> list[str]:
    """``raft.partner_addrs`` hosts with this node's REST scheme and port."""
    scheme, _, rest = own_base_url.partition("://")
    try:
        port = split_host_port(rest.rstrip("/"))[1]
    except ValueError:
        return []
    raft = raw.get("raft") if isinstance(raw, Mapping) else None
    partners = raft.get("partner_addrs") if isinstance(raft, Mapping) else None
    out = []
    for addr in partners if isinstance(partners, list) else []:
        try:
            host = split_host_port(str(addr))[0]
        except ValueError:
            continue
        out.append(f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}")
    return out


class FallbackApi:
    """An ``ApiClient`` look-alike that moves to another member when the current one does not answer."""

    def __init__(self, first: ApiClient, trust: MemberTrust, candidates: Callable[[], Iterable[tuple[str, str]]],
                 say: Callable[[str], None]) -> None:
        self._client = first
        self._trust = trust
        self._candidates = candidates   # (label, url) pairs, computed only when needed
        self._say = say
        self.answered_by: str | None = None

    # the parts of ApiClient's interface raftpgctl uses
    @property
    def base_url(self) -> str:
        return self._client.base_url

    @property
    def has_credentials(self) -> bool:
        return self._client.has_credentials

    def at(self, base_url: str) -> ApiClient:
        return self._client.at(base_url)

    def without_credentials(self) -> ApiClient:
        return self._client.without_credentials()

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        try:
            return self._client.request(method, path, body)
        except ApiError as first_error:
            if self.answered_by is not None:
                raise
            return self._fall_back(method, path, body, first_error)

    def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201, 202)) -> Any:
        status, answer = self.request(method, path, body)
        if status not in ok:
            from raftpg.api.client import error_text
            reason = error_text(answer)
            raise ApiError(f"{method} {self.base_url}{path}: {status} {reason}", status, reason)
        return answer

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def _fall_back(self, method: str, path: str, body: Any, first_error: ApiError) -> tuple[int, Any]:
        tried = {base_url_of(self._client.base_url)}
        errors = [first_error.message]
        for label, url in self._candidates():
            base = base_url_of(url)
            if base in tried:
                continue
            tried.add(base)
            client = self._client.at(base)
            if client.has_credentials and self._trust.refusal(base) is not None:
                if method in UNSAFE:
                    errors.append(f"{label} at {base}: not sent this config's credentials (not named in it)")
                    continue
                client = client.without_credentials()
            try:
                answer = client.request(method, path, body)
            except ApiError as exc:
                errors.append(exc.message)
                continue
            self._say(f"raftpgctl: {first_error.message}; {label} at {base} answered")
            self._client, self.answered_by = client, label
            return answer
        raise ApiError("; ".join(errors) + " (no other member answered either)") from None
