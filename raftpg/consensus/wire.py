"""Bounded reads and a listener that survives file-descriptor exhaustion, under pysyncobj's TCP transport.

pysyncobj's ``TcpConnection`` reads a readable socket until it would block, appending every chunk to
one ``bytes`` buffer (quadratic copying), and only then parses frames. A peer that streams faster than
the loop reads (a length prefix of 2 GiB followed by garbage) keeps the one tick thread in that loop
past the election timeout, and the buffer grows without bound before anything is authenticated. Its
``TcpServer`` closes the listening socket for good on any ``accept()`` error, EMFILE included.

This module changes neither of pysyncobj's files; it wraps them:

- :class:`MeteredSocket` stands between a ``TcpConnection`` and its socket. ``recv`` answers "would
  block" once a connection has read ``BURST_BYTES_MAX`` in one poll event, so every other socket, and
  the Raft timers, get their turn: the level-triggered poller reports the socket again next tick. Until
  the transport calls :meth:`MeteredSocket.trust` (the peer proved the password and named itself), it
  also checks each frame's length prefix against ``UNTRUSTED_FRAME_BYTES_MAX`` and the whole stream
  against ``UNTRUSTED_BYTES_MAX``; past either, it reports end-of-stream, and pysyncobj closes the
  connection itself. ``offence`` says why, for the log.
- :class:`GuardedConnection` is a ``TcpConnection`` whose socket, incoming or outgoing, is metered.
- :class:`GuardedServer` replaces ``TcpServer``: it accepts a bounded number of connections per poll
  event, hands each raw socket to the transport (which applies the per-host caps), treats EMFILE/ENFILE
  as "shed strangers and pause accepting", and never closes the listener for an ``accept()`` error. If
  the listening socket itself fails, it closes it and the transport binds it again.

One private pysyncobj name is used: ``_TcpConnection__socket``, to meter the socket an outgoing
connection creates inside ``TcpConnection.connect``. It is listed in :data:`PYSYNCOBJ_PRIVATE_NAMES`;
tests/unit/test_consensus_wire.py fails if a pysyncobj release renames it.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
from collections.abc import Callable
from typing import Any

from pysyncobj.poller import POLL_EVENT_TYPE, Poller
from pysyncobj.tcp_connection import TcpConnection

log = logging.getLogger(__name__)

BURST_BYTES_MAX = 256 * 1024  # per connection per poll event; pysyncobj's recv size is 64 KiB
# Before a peer has identified itself it sends at most a key-exchange frame and its address (or an
# admin utility command): well under 1 KiB each.
UNTRUSTED_FRAME_BYTES_MAX = 16 * 1024
UNTRUSTED_BYTES_MAX = 64 * 1024
ACCEPTS_PER_EVENT = 16
LISTEN_BACKLOG = 64
_FRAME_PREFIX = struct.Struct("i")  # pysyncobj's length prefix: a native signed int
_EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}

_SOCKET_ATTR = "_TcpConnection__socket"
PYSYNCOBJ_PRIVATE_NAMES = {"TcpConnection": (_SOCKET_ATTR,)}


class MeteredSocket:
    """A socket whose ``recv`` is budgeted per poll event and capped until the peer is trusted.

    Everything but ``recv`` is delegated. Runs on pysyncobj's tick thread only.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._burst_bytes = 0
        self.trusted = False
        self.untrusted_bytes = 0
        self.offence: str | None = None
        self._header = b""  # bytes of the current frame's length prefix seen so far (untrusted only)
        self._frame_left = 0  # payload bytes of the current frame still to come (untrusted only)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def trust(self) -> None:
        self.trusted = True

    def recv(self, size: int) -> bytes:
        if self.offence:
            return b""  # pysyncobj takes an empty read for a closed peer and disconnects
        if self._burst_bytes >= BURST_BYTES_MAX:
            self._burst_bytes = 0
            raise BlockingIOError(errno.EAGAIN, "read budget of this poll event spent")
        try:
            data = self._sock.recv(min(size, BURST_BYTES_MAX - self._burst_bytes))
        except BlockingIOError:
            self._burst_bytes = 0  # the socket is drained: the next event starts a new burst
            raise
        self._burst_bytes += len(data)
        if data and not self.trusted:
            self._inspect(data)
            if self.offence:
                return b""
        return data

    def _inspect(self, data: bytes) -> None:
        """Follow the frame boundaries of an untrusted stream; set ``offence`` on the first excess."""
        self.untrusted_bytes += len(data)
        if self.untrusted_bytes > UNTRUSTED_BYTES_MAX:
            self.offence = f"sent over {UNTRUSTED_BYTES_MAX} bytes before identifying itself"
            return
        view = memoryview(data)
        while view:
            if self._frame_left:
                step = min(self._frame_left, len(view))
                self._frame_left -= step
                view = view[step:]
                continue
            need = _FRAME_PREFIX.size - len(self._header)
            self._header += bytes(view[:need])
            view = view[need:]
            if len(self._header) < _FRAME_PREFIX.size:
                return
            (length,) = _FRAME_PREFIX.unpack(self._header)
            self._header = b""
            if not 0 < length <= UNTRUSTED_FRAME_BYTES_MAX:
                self.offence = (f"announced a frame of {length} bytes before identifying itself (at most "
                                f"{UNTRUSTED_FRAME_BYTES_MAX})")
                return
            self._frame_left = length


class GuardedConnection(TcpConnection):
    """pysyncobj's connection with its socket metered (see :class:`MeteredSocket`)."""

    def __init__(self, poller: Poller, *, socket: socket.socket | None = None,  # noqa: A002 - pysyncobj's name
                 **kwargs: Any) -> None:
        self.meter: MeteredSocket | None = MeteredSocket(socket) if socket is not None else None
        super().__init__(poller, socket=self.meter, **kwargs)

    def connect(self, host: str, port: int) -> bool:
        started = super().connect(host, port)
        raw = getattr(self, _SOCKET_ATTR, None)
        if raw is not None and not isinstance(raw, MeteredSocket):
            self.meter = MeteredSocket(raw)
            setattr(self, _SOCKET_ATTR, self.meter)
        return started

    def trust(self) -> None:
        if self.meter is not None:
            self.meter.trust()

    @property
    def offence(self) -> str | None:
        return self.meter.offence if self.meter is not None else None


class GuardedServer:
    """The Raft listener. ``bind``/``unbind`` as pysyncobj's ``TcpServer``; accepted sockets go to
    ``on_accept(sock, (host, port))``; ``on_exhausted(exc)`` is told when the process ran out of file
    descriptors (the transport closes strangers to free some). Tick thread only."""

    def __init__(self, poller: Any, host: str, port: int, on_accept: Callable[[socket.socket, Any], None],
                 on_exhausted: Callable[[OSError], None]) -> None:
        self._poller = poller
        self.host, self.port = host, int(port)
        self._on_accept = on_accept
        self._on_exhausted = on_exhausted
        self._sock: socket.socket | None = None
        self.paused = False
        self.broken: str | None = None  # why the listener was closed by an error (the transport rebinds)

    @property
    def bound(self) -> bool:
        return self._sock is not None

    def bind(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setblocking(False)
            sock.bind((self.host, self.port))
            sock.listen(LISTEN_BACKLOG)
        except BaseException:
            sock.close()
            raise
        self._sock, self.broken, self.paused = sock, None, False
        self._poller.subscribe(sock.fileno(), self._on_event, POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.ERROR)

    def unbind(self) -> None:
        if self._sock is not None:
            self._poller.unsubscribe(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def pause(self) -> None:
        """Stop watching the listener (connections wait in the kernel's backlog) until ``resume``."""
        if self._sock is not None and not self.paused:
            self._poller.unsubscribe(self._sock.fileno())
            self.paused = True

    def resume(self) -> None:
        if self._sock is not None and self.paused:
            self._poller.subscribe(self._sock.fileno(), self._on_event,
                                   POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.ERROR)
            self.paused = False

    def _on_event(self, descr: int, event: int) -> None:
        if self._sock is None or descr != self._sock.fileno():
            self._poller.unsubscribe(descr)
            return
        if event & POLL_EVENT_TYPE.ERROR:
            self.broken = "the listening socket reported an error"
            self.unbind()
            return
        for _ in range(ACCEPTS_PER_EVENT):
            try:
                sock, addr = self._sock.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in _EXHAUSTED:
                    self.pause()
                    self._on_exhausted(exc)
                    return
                # ECONNABORTED, EPROTO, EPERM (a firewall): that one connection failed, not the listener
                log.debug("raft: accept() failed: %s", exc)
                continue
            self._on_accept(sock, addr)
