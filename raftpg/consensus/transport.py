"""pysyncobj's TCP transport with strangers bounded, refusals logged, and the listener kept alive.

pysyncobj drops a connection whose frame fails to decrypt or unpickle without a word, reads a flooding
socket without bound before anything is authenticated, and closes its listener for good on EMFILE.
This subclass (with wire.py underneath) makes the Raft port safe to expose to strangers:

- every connection's socket is metered (wire.py): one poll event reads at most ``BURST_BYTES_MAX``
  from it, and until the peer has proved the password and named itself (incoming) or answered the key
  exchange (outgoing) a frame may announce at most ``UNTRUSTED_FRAME_BYTES_MAX`` and the stream carry
  ``UNTRUSTED_BYTES_MAX``; an offender is closed on the read that crossed the line;
- incoming connections that have not identified themselves are capped per remote host
  (``UNIDENTIFIED_PER_HOST_MAX``) and in total (``UNIDENTIFIED_TOTAL_MAX``): a new one beyond a cap
  closes the *oldest* stranger, so a member's fresh connection (identified within a round trip) gets in
  while a flood churns; a stranger silent for ``identify_timeout_s`` is closed, and so is an outgoing
  key exchange that gets no answer in that time. Outgoing connections are one per member by
  construction (pysyncobj reuses one connection object per member);
- the listener binds exactly ``bind_addr`` (or ``self_addr``), never a wildcard the operator did not
  ask for; out of file descriptors, it closes strangers and pauses accepting for ``EXHAUSTED_PAUSE_S``
  instead of closing; if the listening socket fails anyway, it is bound again every second;
- every refused or dropped stranger is logged (rate-limited per host), with the reason;
- :class:`TransportControl` lets the node *isolate* itself while its disk is full (see diskspace.py):
  from the moment it is set, nothing is sent and no received message reaches pysyncobj; on the next
  tick every connection is closed, and none is accepted or dialled until it is cleared.

Everything here runs on pysyncobj's tick thread.
"""

from __future__ import annotations

import functools
import logging
import socket
from dataclasses import dataclass
from typing import Any

from pysyncobj.tcp_connection import CONNECTION_STATE
from pysyncobj.transport import TCPTransport

from raftpg.clock import SystemClock
from raftpg.consensus.wire import GuardedConnection, GuardedServer

log = logging.getLogger(__name__)
_REAL_TIME = SystemClock()  # waits on real threads and sockets: real time

UNIDENTIFIED_PER_HOST_MAX = 8
UNIDENTIFIED_TOTAL_MAX = 64
EXHAUSTED_PAUSE_S = 0.5
REBIND_EVERY_S = 1.0
LOG_EVERY_S = 10.0


class TransportControl:
    """What the node asks of its transport. Set on the tick thread, read on the tick thread."""

    def __init__(self) -> None:
        self.isolated: str | None = None  # why this node takes no part in Raft just now, or None


class _RateLimitedLog:
    """One WARNING per key (a remote host) per ``LOG_EVERY_S``; the next one says how many were suppressed."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}

    def warn(self, key: str, message: str, *args: Any) -> None:
        now = _REAL_TIME.monotonic()
        last, suppressed = self._last.get(key, (float("-inf"), 0))
        if now - last < LOG_EVERY_S:
            self._last[key] = (last, suppressed + 1)
            return
        if len(self._last) > 1024:  # a flood from many addresses: forget the oldest keys
            for stale in sorted(self._last, key=lambda k: self._last[k][0])[:512]:
                del self._last[stale]
        self._last[key] = (now, 0)
        suffix = f" ({suppressed} more like it since the last report)" if suppressed else ""
        log.warning(message + suffix, *args)


@dataclass(frozen=True)
class _Stranger:
    since: float
    peer: str  # host:port
    host: str


def listen_host_port(bind_addr: str) -> tuple[str, int]:
    host, port = bind_addr.rsplit(":", 1)
    return host.strip("[]"), int(port)


class GuardedTransport(TCPTransport):
    identify_timeout_s = 5.0

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any,  # noqa: N803 - pysyncobj's names
                 control: TransportControl | None = None) -> None:
        self._control = control or TransportControl()
        self._isolated = False  # whether the isolation asked by control has been carried out
        self._pending: dict[Any, _Stranger] = {}  # unidentified incoming connections, oldest first
        self._handshaking: dict[Any, tuple[Any, float]] = {}  # outgoing conn -> (node, since)
        self._drop_reason: dict[Any, str] = {}
        self._refusals = _RateLimitedLog()
        self._rebind_at = 0.0
        self._resume_at = 0.0
        super().__init__(syncObj, selfNode, otherNodes)

    # -- listener
    def _createServer(self) -> None:  # noqa: N802
        conf = self._syncObj.conf
        host, port = listen_host_port(conf.bindAddress or self._selfNode.address)
        self._server = GuardedServer(self._syncObj._poller, host, port, self._accept, self._out_of_fds)

    def _accept(self, sock: socket.socket, addr: Any) -> None:
        host, peer = str(addr[0]), f"{addr[0]}:{addr[1]}"
        if self._control.isolated:
            sock.close()
            return
        conf = self._syncObj.conf
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, conf.sendBufferSize)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, conf.recvBufferSize)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
        except OSError:
            sock.close()
            return
        self._make_room_for(host)
        conn = GuardedConnection(poller=self._syncObj._poller, socket=sock, timeout=conf.connectionTimeout,
                                 sendBufferSize=conf.sendBufferSize, recvBufferSize=conf.recvBufferSize,
                                 keepalive=conf.tcp_keepalive)
        self._pending[conn] = _Stranger(_REAL_TIME.monotonic(), peer, host)
        self._onNewIncomingConnection(conn)

    def _make_room_for(self, host: str) -> None:
        same_host = [conn for conn, s in self._pending.items() if s.host == host]
        if len(same_host) >= UNIDENTIFIED_PER_HOST_MAX:
            self._drop(same_host[0], f"over {UNIDENTIFIED_PER_HOST_MAX} unidentified connections from "
                                     f"{host}: the oldest is closed")
        if len(self._pending) >= UNIDENTIFIED_TOTAL_MAX:
            self._drop(next(iter(self._pending)), f"over {UNIDENTIFIED_TOTAL_MAX} unidentified connections "
                                                  "in all: the oldest is closed")

    def _out_of_fds(self, exc: OSError) -> None:
        """accept() failed with EMFILE/ENFILE: free descriptors held by strangers, retry shortly."""
        shed = list(self._pending)[: max(1, len(self._pending) // 2)] if self._pending else []
        for conn in shed:
            self._drop(conn, "closed to free file descriptors")
        self._resume_at = _REAL_TIME.monotonic() + EXHAUSTED_PAUSE_S
        self._refusals.warn("accept", "raft: out of file descriptors accepting on %s:%s (%s): closed %d "
                            "unidentified connections, accepting again in %.1fs", self._server.host,
                            self._server.port, exc.strerror or exc, len(shed), EXHAUSTED_PAUSE_S)

    def _keep_listening(self, now: float) -> None:
        server = self._server
        if not self._ready or not isinstance(server, GuardedServer):
            return
        if server.paused and now >= self._resume_at:
            server.resume()
        if server.bound or now < self._rebind_at:
            return
        self._rebind_at = now + REBIND_EVERY_S
        try:
            server.bind()
        except OSError as exc:
            self._refusals.warn("bind", "raft: the listener on %s:%s is closed (%s) and cannot be bound "
                                "again yet: %s", server.host, server.port, server.broken, exc)
            return
        log.warning("raft: listening again on %s:%s", server.host, server.port)

    # -- incoming
    def _onIncomingMessageReceived(self, conn: Any, message: Any) -> None:  # noqa: N802
        super()._onIncomingMessageReceived(conn, message)
        if conn not in self._unknownConnections:
            self._pending.pop(conn, None)
            if self._connToNode(conn) is not None and isinstance(conn, GuardedConnection):
                conn.trust()  # a member (or read-only node) that proved the password and named itself

    # -- outgoing
    def addNode(self, node: Any) -> None:  # noqa: N802
        """As pysyncobj's, with a :class:`GuardedConnection` for the members this node dials."""
        super().addNode(node)
        plain = self._connections.get(node)
        if plain is None or isinstance(plain, GuardedConnection):
            return
        conf = self._syncObj.conf
        conn = GuardedConnection(poller=self._syncObj._poller, timeout=conf.connectionTimeout,
                                 sendBufferSize=conf.sendBufferSize, recvBufferSize=conf.recvBufferSize,
                                 keepalive=conf.tcp_keepalive)
        conn.encryptor = self._syncObj.encryptor
        conn.setOnConnectedCallback(functools.partial(self._onOutgoingConnected, conn))
        conn.setOnMessageReceivedCallback(functools.partial(self._onMessageReceived, node))
        conn.setOnDisconnectedCallback(functools.partial(self._onDisconnected, conn))
        self._connections[node] = conn

    def _connectIfNecessarySingle(self, node: Any) -> bool:  # noqa: N802
        if self._control.isolated:
            return False
        try:
            return bool(super()._connectIfNecessarySingle(node))
        except OSError as exc:  # EMFILE from socket(): pysyncobj would let it out of the tick
            self._refusals.warn(f"connect {node}", "raft: cannot connect to %s: %s", node, exc)
            return False

    def _onOutgoingConnected(self, conn: Any) -> None:  # noqa: N802
        if self._syncObj.encryptor:
            self._handshaking[conn] = (self._connToNode(conn), _REAL_TIME.monotonic())
        elif isinstance(conn, GuardedConnection):
            conn.trust()  # no password: nothing to prove (RaftSettings refuses to run like this)
        super()._onOutgoingConnected(conn)

    def _onOutgoingMessageReceived(self, conn: Any, message: Any) -> None:  # noqa: N802
        self._handshaking.pop(conn, None)
        if isinstance(conn, GuardedConnection):
            conn.trust()  # the member answered the key exchange: it knows the password
        super()._onOutgoingMessageReceived(conn, message)

    def send(self, node: Any, message: Any) -> bool:
        if self._control.isolated:
            return False
        return bool(super().send(node, message))

    def _onMessageReceived(self, node: Any, message: Any) -> None:  # noqa: N802
        if self._control.isolated:
            return  # cut off: as if the network had lost it (the connection closes next tick)
        super()._onMessageReceived(node, message)

    # -- both
    def _drop(self, conn: Any, reason: str) -> None:
        self._drop_reason[conn] = reason
        conn.disconnect()  # _onDisconnected logs it and forgets the connection

    def _onDisconnected(self, conn: Any) -> None:  # noqa: N802
        stranger = self._pending.pop(conn, None)
        reason = self._drop_reason.pop(conn, None) or getattr(conn, "offence", None)
        if stranger is not None and conn in self._unknownConnections:
            self._refusals.warn(stranger.host, "raft: refused a connection from %s (%s)", stranger.peer,
                                reason or "closed before identifying as a member: wrong raft.password, "
                                          "garbage bytes, or not a member")
        handshake = self._handshaking.pop(conn, None)
        if handshake is not None:
            self._refusals.warn(str(handshake[0]), "raft: handshake with %s failed (%s)", handshake[0],
                                reason or "it does not share this node's raft.password, or it closed "
                                          "mid-handshake")
        super()._onDisconnected(conn)

    def _onTick(self) -> None:  # noqa: N802
        super()._onTick()
        now = _REAL_TIME.monotonic()
        self._keep_listening(now)
        self._follow_isolation()
        for conn, stranger in list(self._pending.items()):  # oldest first
            if conn not in self._unknownConnections:
                self._pending.pop(conn, None)
            elif now - stranger.since > self.identify_timeout_s:
                self._drop(conn, f"did not identify itself within {self.identify_timeout_s:.0f}s")
            else:
                break
        for conn, (_node, since) in list(self._handshaking.items()):
            if now - since > self.identify_timeout_s:
                self._drop(conn, f"no answer to the key exchange within {self.identify_timeout_s:.0f}s")

    def _follow_isolation(self) -> None:
        if self._control.isolated and not self._isolated:
            self._isolated = True
            for conn in [*self._connections.values(), *self._unknownConnections]:
                if conn.state != CONNECTION_STATE.DISCONNECTED:
                    conn.disconnect()
        elif not self._control.isolated and self._isolated:
            self._isolated = False
            self._lastConnectAttempt.clear()  # dial the members at once
