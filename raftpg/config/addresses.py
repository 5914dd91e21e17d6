"""``host:port`` strings as written in the config: parsing, wildcard and loopback tests.

Addresses stay strings in the settings (``config.raft.self_addr == "10.0.0.1:2222"``) so they print back
exactly as the user wrote them; these functions answer the questions asked of them.
"""

from __future__ import annotations

import ipaddress

WILDCARD_HOSTS = frozenset({"", "*", "0.0.0.0", "::"})


def split_host_port(text: str) -> tuple[str, int]:
    """``'10.0.0.1:8008'`` / ``'[::1]:8008'`` / ``'db1:5432'`` -> ``(host, port)``.

    The port is required and must be 1..65535. The host may be empty (``':8008'``) or a wildcard; callers
    that need a routable host check :func:`is_wildcard` themselves. Raises ValueError with a message
    meant for humans.
    """
    if not isinstance(text, str):
        raise ValueError(f"must be a 'host:port' string, got {text!r}")
    raw = text.strip()
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"must be 'host:port' ('[ipv6]:port' for IPv6), got {text!r}")
        port_text = rest[1:]
    else:
        host, sep, port_text = raw.rpartition(":")
        if not sep:
            raise ValueError(f"must be 'host:port' (the port is required), got {text!r}")
    if not port_text.isdigit():
        raise ValueError(f"port must be a number in 1..65535, got {port_text!r} in {text!r}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be in 1..65535, got {port} in {text!r}")
    if any(c.isspace() for c in host):
        raise ValueError(f"host must not contain spaces, got {text!r}")
    return host, port


def is_wildcard(host: str) -> bool:
    """True for hosts that mean "every interface": nobody can connect *to* them."""
    return host.strip() in WILDCARD_HOSTS


def is_wildcard_address(text: str) -> bool:
    """True when ``text`` is a ``host:port`` whose host is a wildcard (False for a malformed address)."""
    try:
        return is_wildcard(split_host_port(text)[0])
    except ValueError:
        return False


def is_loopback(host: str) -> bool:
    """True only for addresses that cannot be reached from another machine: 127.0.0.0/8, ::1 (also
    written ``[::1]``), localhost. The one rule for every check that guards on it (REST credentials, the
    Raft password, PostgreSQL trust): the embedded Raft store had a copy of its own that read ``LOCALHOST``
    and `` localhost`` as not loopback and ``[::1]`` as loopback, where this one did the opposite."""
    name = host.strip().lower().removeprefix("[").removesuffix("]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a DNS name other than localhost may resolve anywhere


def same_address(a: str, b: str) -> bool:
    """Whether two ``host:port`` strings name the same endpoint as written (case-insensitive host)."""
    try:
        host_a, port_a = split_host_port(a)
        host_b, port_b = split_host_port(b)
    except ValueError:
        return a.strip() == b.strip()
    return (host_a.lower(), port_a) == (host_b.lower(), port_b)
