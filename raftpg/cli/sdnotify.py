"""systemd's readiness protocol (sd_notify), in pure Python: one datagram to the unix socket named by
``NOTIFY_SOCKET``, no libsystemd.

The protocol (sd_notify(3)): newline-separated ``KEY=VALUE`` assignments in one datagram; ``READY=1`` once
the service is up (with ``Type=notify`` systemd waits for it before the unit counts as started),
``STOPPING=1`` when a stop begins, ``STATUS=...`` free text shown by ``systemctl status``. A socket name
starting with ``@`` is in Linux's abstract namespace (a NUL byte first). Without ``NOTIFY_SOCKET`` (not run
by systemd, or ``Type=simple``) nothing is sent.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``message`` (``"READY=1\\nSTATUS=..."``) to ``$NOTIFY_SOCKET``. True if it was sent; False when
    there is no socket to send to or it cannot be reached (never raises: readiness is advisory)."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not address or not address.startswith(("/", "@")):
        return False
    target = "\0" + address[1:] if address.startswith("@") else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(target)
            sock.sendall(message.encode("utf-8"))
    except OSError:
        return False
    return True
