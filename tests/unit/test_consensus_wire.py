"""The Raft port's read bounds and listener (consensus/wire.py, transport.py) against pysyncobj's own
connection code, with fake sockets and a fake poller: no real socket is opened.

The first tests fail loudly if a pysyncobj release renames what raftpg relies on."""

from __future__ import annotations

import errno
import inspect
import socket
import struct
import types

import pysyncobj.serializer as syncobj_serializer
import pysyncobj.syncobj as syncobj_module
import pysyncobj.tcp_connection
import pytest
from pysyncobj import SyncObj
from pysyncobj.journal import FileJournal
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import CONNECTION_STATE, TcpConnection
from pysyncobj.transport import TCPTransport

from raftpg.consensus import wire
from raftpg.consensus.transport import (
    UNIDENTIFIED_PER_HOST_MAX,
    GuardedTransport,
    TransportControl,
    _RateLimitedLog,
    _Stranger,
)
from raftpg.consensus.wire import (
    BURST_BYTES_MAX,
    UNTRUSTED_BYTES_MAX,
    UNTRUSTED_FRAME_BYTES_MAX,
    GuardedConnection,
    GuardedServer,
    MeteredSocket,
)


class FakePoller:
    def __init__(self) -> None:
        self.callbacks: dict[int, object] = {}

    def subscribe(self, descr, callback, mask) -> None:
        self.callbacks[descr] = callback

    def unsubscribe(self, descr) -> None:
        self.callbacks.pop(descr, None)


class FakeSocket:
    """A socket with ``pending`` bytes to read; recv takes at most what is asked."""

    def __init__(self, pending: bytes = b"", fd: int = 7) -> None:
        self.pending = pending
        self.fd = fd
        self.closed = False
        self.recv_calls = 0

    def fileno(self) -> int:
        return self.fd

    def recv(self, size: int) -> bytes:
        self.recv_calls += 1
        if not self.pending:
            raise BlockingIOError(errno.EAGAIN, "would block")
        data, self.pending = self.pending[:size], self.pending[size:]
        return data

    def getsockopt(self, *args) -> int:
        return 0

    def setsockopt(self, *args) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def frame(payload: bytes) -> bytes:
    return struct.pack("i", len(payload)) + payload


# ------------------------------------------------------------------------ what pysyncobj must still offer


def test_pysyncobj_still_has_the_private_names_raftpg_uses():
    conn = TcpConnection(FakePoller())
    for cls_name, names in wire.PYSYNCOBJ_PRIVATE_NAMES.items():
        assert cls_name == "TcpConnection"
        for name in names:
            assert hasattr(conn, name), f"pysyncobj renamed TcpConnection.{name}: update consensus/wire.py"
    assert "socket" in inspect.signature(TcpConnection.__init__).parameters
    for method in ("_createServer", "_connectIfNecessarySingle", "_onNewIncomingConnection",
                   "_onIncomingMessageReceived", "_onOutgoingConnected", "_onOutgoingMessageReceived",
                   "_onDisconnected", "_onTick", "_connToNode", "_onMessageReceived", "addNode", "send"):
        assert callable(getattr(TCPTransport, method, None)), f"pysyncobj's TCPTransport lost {method}"
    for attr in ("_connections", "_unknownConnections", "_lastConnectAttempt", "_server", "_ready"):
        assert attr in inspect.getsource(TCPTransport.__init__), f"pysyncobj's TCPTransport lost {attr}"
    for method in ("add", "clear", "deleteEntriesFrom", "deleteEntriesTo", "setCurrentTerm",
                   "onOneSecondTimer", "flush", "_destroy"):
        assert callable(getattr(FileJournal, method, None)), f"pysyncobj's FileJournal lost {method}"
    assert callable(syncobj_module.createJournal) and callable(syncobj_serializer.atomicReplace)
    for method in ("_isLeader", "transferLeadership", "tick_thread_alive"):
        assert callable(getattr(SyncObj, method, None)), f"pysyncobj's SyncObj lost {method}"
    assert "self._poller = " in inspect.getsource(SyncObj.__init__)
    assert "transportClass(self" in inspect.getsource(SyncObj.__init__)


class FakeOutgoingSocket(FakeSocket):
    def __init__(self, family, kind) -> None:
        super().__init__(fd=8)

    def setblocking(self, flag) -> None:
        pass

    def connect(self, addr) -> None:
        raise BlockingIOError(errno.EINPROGRESS, "in progress")


def test_an_outgoing_connection_gets_a_metered_socket(monkeypatch):
    fake_socket_module = types.SimpleNamespace(
        **{**{name: getattr(socket, name) for name in dir(socket) if not name.startswith("_")},
           "socket": FakeOutgoingSocket})
    monkeypatch.setattr(pysyncobj.tcp_connection, "socket", fake_socket_module)
    conn = GuardedConnection(FakePoller())
    assert conn.connect("127.0.0.1", 9)
    assert isinstance(conn._TcpConnection__socket, MeteredSocket)
    assert conn.meter is not None and not conn.meter.trusted


# ------------------------------------------------------------------------ reads through pysyncobj's loop


def read_event(poller: FakePoller, fd: int) -> None:
    poller.callbacks[fd](fd, POLL_EVENT_TYPE.READ)


def test_one_poll_event_reads_at_most_the_burst_then_the_next_event_goes_on():
    poller = FakePoller()
    raw = FakeSocket(b"x" * (3 * BURST_BYTES_MAX))
    conn = GuardedConnection(poller, socket=raw)
    conn.trust()  # a member: only the burst applies
    received = []
    conn.setOnMessageReceivedCallback(received.append)
    read_event(poller, raw.fd)
    assert len(raw.pending) == 2 * BURST_BYTES_MAX  # pysyncobj's loop stopped at the budget
    read_event(poller, raw.fd)
    assert len(raw.pending) == BURST_BYTES_MAX
    assert conn.state == CONNECTION_STATE.CONNECTED


def test_a_stranger_announcing_a_huge_frame_is_closed_on_that_read():
    poller = FakePoller()
    raw = FakeSocket(struct.pack("i", 2**31 - 1) + b"g" * 100_000)
    conn = GuardedConnection(poller, socket=raw)
    read_event(poller, raw.fd)
    assert conn.state == CONNECTION_STATE.DISCONNECTED and raw.closed
    assert "announced a frame of 2147483647 bytes" in conn.offence
    assert len(raw.pending) > 90_000  # it stopped reading at once


@pytest.mark.parametrize("length", [0, -5, UNTRUSTED_FRAME_BYTES_MAX + 1])
def test_a_stranger_frame_length_out_of_bounds_is_an_offence(length):
    meter = MeteredSocket(FakeSocket(struct.pack("i", length) + b"z"))
    assert meter.recv(65536) == b""
    assert meter.offence is not None


def test_a_stranger_is_capped_in_total_even_with_small_frames():
    stream = frame(b"a" * 1000) * (UNTRUSTED_BYTES_MAX // 1000 + 2)
    meter = MeteredSocket(FakeSocket(stream))
    received = b""
    while True:
        data = meter.recv(8192)
        if not data:
            break
        received += data
    assert meter.offence == f"sent over {UNTRUSTED_BYTES_MAX} bytes before identifying itself"
    assert len(received) <= UNTRUSTED_BYTES_MAX


def test_frames_split_anywhere_are_followed_and_a_member_is_not_capped():
    stream = frame(b"k" * 300) + frame(b"a" * 20)
    meter = MeteredSocket(FakeSocket(stream))
    assert b"".join(meter.recv(3) for _ in range(len(stream) // 3 + 1)) == stream
    assert meter.offence is None
    meter = MeteredSocket(FakeSocket(struct.pack("i", 10 * UNTRUSTED_FRAME_BYTES_MAX) + b"m" * 1000))
    meter.trust()
    assert len(meter.recv(65536)) == 1004 and meter.offence is None


# ------------------------------------------------------------------------ listener


class FakeListener(FakeSocket):
    def __init__(self, results: list) -> None:
        super().__init__(fd=3)
        self.results = results

    def accept(self):
        if not self.results:
            raise BlockingIOError(errno.EAGAIN, "no more")
        result = self.results.pop(0)
        if isinstance(result, OSError):
            raise result
        return result


def server_with(results: list):
    poller = FakePoller()
    accepted, exhausted = [], []
    server = GuardedServer(poller, "127.0.0.1", 1, lambda s, a: accepted.append(a), exhausted.append)
    server._sock = FakeListener(results)
    poller.subscribe(3, server._on_event, 0)
    return server, poller, accepted, exhausted


def test_out_of_file_descriptors_pauses_accepting_but_keeps_the_listener():
    server, poller, accepted, exhausted = server_with(
        [(FakeSocket(fd=10), ("10.0.0.1", 1)), OSError(errno.EMFILE, "Too many open files")])
    poller.callbacks[3](3, POLL_EVENT_TYPE.READ)
    assert accepted == [("10.0.0.1", 1)]
    assert [e.errno for e in exhausted] == [errno.EMFILE]
    assert server.bound and server.paused and 3 not in poller.callbacks
    server.resume()
    assert 3 in poller.callbacks and not server.paused


def test_a_failed_accept_of_one_connection_does_not_close_the_listener():
    server, poller, accepted, _ = server_with(
        [OSError(errno.ECONNABORTED, "aborted"), (FakeSocket(fd=11), ("10.0.0.2", 2))])
    poller.callbacks[3](3, POLL_EVENT_TYPE.READ)
    assert accepted == [("10.0.0.2", 2)] and server.bound


def test_an_error_on_the_listener_closes_it_for_the_transport_to_bind_again():
    server, poller, _, _ = server_with([])
    listener = server._sock
    poller.callbacks[3](3, POLL_EVENT_TYPE.ERROR)
    assert not server.bound and listener.closed and server.broken


def test_the_transport_binds_exactly_the_configured_address():
    assert "0.0.0.0" not in inspect.getsource(GuardedTransport._createServer)


# ------------------------------------------------------------------------ the transport around them


def bare_transport() -> GuardedTransport:
    """A GuardedTransport without pysyncobj behind it, for its own bookkeeping only."""
    transport = GuardedTransport.__new__(GuardedTransport)
    transport._control = TransportControl()
    transport._isolated = False
    transport._pending, transport._handshaking, transport._drop_reason = {}, {}, {}
    transport._refusals = _RateLimitedLog()
    transport._rebind_at = transport._resume_at = 0.0
    transport._ready = True
    transport._unknownConnections = set()
    transport._connections = {}
    transport._lastConnectAttempt = {"n2": 1.0}
    return transport


class Closable:
    def __init__(self) -> None:
        self.closed = 0
        self.state = CONNECTION_STATE.CONNECTED

    def disconnect(self) -> None:
        self.closed += 1


def test_a_closed_listener_is_bound_again_every_second(monkeypatch):
    transport = bare_transport()
    server = GuardedServer(FakePoller(), "127.0.0.1", 1, lambda s, a: None, lambda e: None)
    server.broken = "the listening socket reported an error"
    transport._server = server
    binds = []

    def bind() -> None:
        binds.append(True)
        if len(binds) == 1:
            raise OSError(errno.EADDRINUSE, "in use")
        server._sock = FakeListener([])

    monkeypatch.setattr(server, "bind", bind)
    transport._keep_listening(10.0)
    transport._keep_listening(10.5)  # not before a second has passed
    assert binds == [True] and not server.bound
    transport._keep_listening(11.0)
    assert binds == [True, True] and server.bound


def test_out_of_descriptors_closes_the_oldest_strangers_and_resumes_later(monkeypatch):
    transport = bare_transport()
    transport._server = GuardedServer(FakePoller(), "127.0.0.1", 1, lambda s, a: None, lambda e: None)
    strangers = [Closable() for _ in range(6)]
    for i, conn in enumerate(strangers):
        transport._pending[conn] = _Stranger(float(i), f"10.0.0.{i}:1", f"10.0.0.{i}")
    transport._out_of_fds(OSError(errno.EMFILE, "Too many open files"))
    assert [c.closed for c in strangers] == [1, 1, 1, 0, 0, 0]
    assert transport._resume_at > 0


def test_a_host_over_its_share_of_strangers_loses_its_oldest():
    transport = bare_transport()
    mine = [Closable() for _ in range(UNIDENTIFIED_PER_HOST_MAX)]
    other = Closable()
    transport._pending[other] = _Stranger(0.0, "10.0.0.9:1", "10.0.0.9")
    for i, conn in enumerate(mine):
        transport._pending[conn] = _Stranger(float(i + 1), f"10.0.0.1:{i}", "10.0.0.1")
    transport._make_room_for("10.0.0.1")
    assert mine[0].closed == 1 and all(c.closed == 0 for c in mine[1:]) and other.closed == 0


def test_an_isolated_node_sends_nothing_delivers_nothing_and_dials_nobody():
    transport = bare_transport()
    delivered = []
    transport._onMessageReceivedCallback = lambda node, message: delivered.append(message)
    transport._onMessageReceived("n2", {"type": "append_entries"})
    transport._control.isolated = "raft.data_dir /x: the filesystem is full"
    transport._onMessageReceived("n2", {"type": "request_vote"})
    assert delivered == [{"type": "append_entries"}]
    assert transport.send("n2", {"type": "response_vote"}) is False
    assert transport._connectIfNecessarySingle("n2") is False
    member = Closable()
    transport._connections = {"n2": member}
    transport._follow_isolation()
    assert member.closed == 1
    transport._control.isolated = None
    transport._follow_isolation()
    assert transport._lastConnectAttempt == {}  # dial the members again at once
