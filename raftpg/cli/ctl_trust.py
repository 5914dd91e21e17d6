"""Where raftpgctl may send the credentials of its config file (issue 12, item 6).

The member verbs (restart, reload, reinit, members remove, pause --wait) talk to each member at the
``api_url`` it published in the DCS. Whoever can write the DCS (an etcd or Consul user, say) can publish
any ``api_url``, so raftpgctl sends ``restapi.authentication`` only where the config file itself vouches
for the address:

- the host is one the config names: ``restapi.connect_address``/``listen``, ``raft.self_addr``/
  ``bind_addr``/``partner_addrs``, ``etcd3.hosts``, ``consul.host``, ``postgresql.connect_address``/
  ``listen`` (hosts as written, compared case-insensitively; IP addresses in canonical form; the port is
  not compared, since a member's API port differs from its Raft or PostgreSQL port);
- or the URL is ``https`` and raftpgctl verifies the server against ``restapi.cafile`` (TLS with
  ``certfile`` set): the handshake, which ends before any credential is sent, proves the server holds a
  certificate for that host from the cluster's own CA.

Reads need no credentials (the API serves them to anyone), so an unverified member is still read, without
credentials; an unsafe request to it is refused with a line saying why and what to change.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from raftpg.config import RestApiSettings, is_wildcard, split_host_port


def canonical_host(host: str) -> str:
    """``'DB1'`` -> ``'db1'``; ``'[::0001]'`` -> ``'::1'``; hosts that are not IP addresses stay as written."""
    name = host.strip().strip("[]").lower()
    try:
        return ipaddress.ip_address(name).compressed
    except ValueError:
        return name


@dataclass(frozen=True)
class MemberTrust:
    """The hosts the config vouches for, and whether TLS against the cluster's CA verifies the rest."""

    hosts: frozenset[str]
    keys: tuple[str, ...]  # the config keys the hosts came from, for the refusal message
    verified_by_ca: bool = False

    def refusal(self, api_url: str) -> str | None:
        """Why credentials must not go to ``api_url`` (None: they may)."""
        parts = urllib.parse.urlsplit(api_url)
        host = canonical_host(parts.hostname or "")
        if host and host in self.hosts:
            return None
        if parts.scheme == "https" and self.verified_by_ca:
            return None
        named = ", ".join(self.keys) or "restapi.connect_address"
        return (f"its host {parts.hostname or '(none)'} is not named in this config ({named}) and cannot be "
                "verified by TLS (an https api_url with restapi.certfile and restapi.cafile set); run "
                "raftpgctl with a config that lists that host (e.g. in raft.partner_addrs)")


def _hosts_of(key: str, value: Any) -> Iterable[tuple[str, str]]:
    """``(key, host)`` for each ``host:port`` in ``value`` (a string, a comma list or a list); others skipped."""
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, list | tuple) else ()
    for item in items:
        if not isinstance(item, str):
            continue
        try:
            host = split_host_port(item)[0]
        except ValueError:
            continue
        for one in host.split(","):  # postgresql.listen may name several hosts
            if one.strip() and not is_wildcard(one):
                yield key, canonical_host(one)


_ADDRESS_KEYS = (
    ("restapi", "connect_address"), ("restapi", "listen"),
    ("raft", "self_addr"), ("raft", "bind_addr"), ("raft", "partner_addrs"),
    ("etcd3", "hosts"), ("etcd3", "host"), ("consul", "host"),
    ("postgresql", "connect_address"), ("postgresql", "listen"),
)


def trust_from(raw: Mapping[str, Any], restapi: RestApiSettings) -> MemberTrust:
    """The trust of a config document (``raw``: the YAML as loaded, possibly trimmed for raftpgctl)."""
    found: list[tuple[str, str]] = []
    for section, key in _ADDRESS_KEYS:
        part = raw.get(section) if isinstance(raw, Mapping) else None
        if isinstance(part, Mapping) and part.get(key) is not None:
            found.extend(_hosts_of(f"{section}.{key}", part[key]))
    found.extend(_hosts_of("restapi.connect_address", restapi.connect_address or restapi.listen))
    keys = tuple(dict.fromkeys(key for key, _ in found))
    return MemberTrust(frozenset(host for _, host in found), keys,
                       verified_by_ca=bool(restapi.tls and restapi.cafile))

