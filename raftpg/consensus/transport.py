"""pysyncobj's TCP transport with the refusals made visible and unidentified connections bounded.

pysyncobj drops a connection whose frame fails to decrypt or unpickle without a word ("Why no logging of
security errors?" says its source). A peer with the wrong ``raft.password``, a scanner, or garbage on the
Raft port should be visible to the operator, so this subclass:

- logs (rate-limited per remote host) every incoming connection that closes before it identified itself
  as a member: wrong password, garbage bytes, not a member (yet), or an admin utility connection;
- logs an outgoing connection whose encrypted handshake failed (the peer has another password);
- drops an incoming connection that has not identified itself within ``identify_timeout_s`` or buffers
  more than ``UNIDENTIFIED_BYTES_MAX`` (a huge length prefix followed by a stream), so memory and file
  descriptors held for strangers stay bounded. Identified members are left to pysyncobj's own timeouts.

Everything here runs on pysyncobj's tick thread. Private pysyncobj attributes are read in two places
(the peer address and the read-buffer size), each guarded: if a pysyncobj release renames them, the
log lines lose the address and the size cap is skipped; nothing else changes.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pysyncobj.transport import TCPTransport

log = logging.getLogger(__name__)

UNIDENTIFIED_BYTES_MAX = 64 * 1024
LOG_EVERY_S = 10.0


class _RateLimitedLog:
    """One WARNING per remote host per ``LOG_EVERY_S``; the next one says how many were suppressed."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}

    def warn(self, host: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        last, suppressed = self._last.get(host, (float("-inf"), 0))
        if now - last < LOG_EVERY_S:
            self._last[host] = (last, suppressed + 1)
            return
        if len(self._last) > 1024:  # a flood from many addresses: forget the oldest hosts
            for stale in sorted(self._last, key=lambda h: self._last[h][0])[:512]:
                del self._last[stale]
        self._last[host] = (now, 0)
        suffix = f" ({suppressed} more from {host} since the last report)" if suppressed else ""
        log.warning(message + suffix, *args)


def _peer(conn: Any) -> str:
    try:
        host, port = conn._TcpConnection__socket.getpeername()[:2]
        return f"{host}:{port}"
    except Exception:  # noqa: BLE001 - best effort, for the log line only
        return "unknown peer"


def _buffered_bytes(conn: Any) -> int:
    try:
        return len(conn._TcpConnection__readBuffer)
    except Exception:  # noqa: BLE001 - see the module docstring
        return 0


class GuardedTransport(TCPTransport):
    identify_timeout_s = 5.0

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:  # noqa: N803 - pysyncobj's names
        self._pending: dict[Any, tuple[float, str]] = {}  # unidentified incoming conn -> (since, peer)
        self._handshaking: dict[Any, Any] = {}  # outgoing conn -> node, until the key exchange answers
        self._drop_reason: dict[Any, str] = {}
        self._refusals = _RateLimitedLog()
        super().__init__(syncObj, selfNode, otherNodes)

    # -- incoming
    def _onNewIncomingConnection(self, conn: Any) -> None:  # noqa: N802
        self._pending[conn] = (time.monotonic(), _peer(conn))
        super()._onNewIncomingConnection(conn)

    def _onIncomingMessageReceived(self, conn: Any, message: Any) -> None:  # noqa: N802
        super()._onIncomingMessageReceived(conn, message)
        if conn not in self._unknownConnections:
            self._pending.pop(conn, None)  # identified as a member (or refused and already logged)

    # -- outgoing
    def _onOutgoingConnected(self, conn: Any) -> None:  # noqa: N802
        if self._syncObj.encryptor:
            self._handshaking[conn] = self._connToNode(conn)
        super()._onOutgoingConnected(conn)

    def _onOutgoingMessageReceived(self, conn: Any, message: Any) -> None:  # noqa: N802
        self._handshaking.pop(conn, None)
        super()._onOutgoingMessageReceived(conn, message)

    def _onDisconnected(self, conn: Any) -> None:  # noqa: N802
        pending = self._pending.pop(conn, None)
        if pending is not None and conn in self._unknownConnections:
            reason = self._drop_reason.pop(conn, "closed before identifying as a member: wrong "
                                                  "raft.password, garbage bytes, or not a member")
            host = pending[1].rsplit(":", 1)[0]
            self._refusals.warn(host, "raft: refused a connection from %s (%s)", pending[1], reason)
        node = self._handshaking.pop(conn, None)
        if node is not None:
            self._refusals.warn(str(node), "raft: handshake with %s failed: it does not share this "
                                           "node's raft.password (or it closed mid-handshake)", node)
        self._drop_reason.pop(conn, None)
        super()._onDisconnected(conn)

    def _onTick(self) -> None:  # noqa: N802
        super()._onTick()
        if not self._pending:
            return
        now = time.monotonic()
        for conn, (since, _peer_addr) in list(self._pending.items()):
            if conn not in self._unknownConnections:
                self._pending.pop(conn, None)
            elif now - since > self.identify_timeout_s:
                self._drop_reason[conn] = f"did not identify itself within {self.identify_timeout_s:.0f}s"
                conn.disconnect()
            elif _buffered_bytes(conn) > UNIDENTIFIED_BYTES_MAX:
                self._drop_reason[conn] = (f"sent over {UNIDENTIFIED_BYTES_MAX} bytes before identifying "
                                           "(a huge length prefix?)")
                conn.disconnect()  # _onDisconnected logs it and forgets the connection
