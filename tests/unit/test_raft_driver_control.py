"""The Raft test driver's control API (raftpg.testing.raft_driver, jepsen-lite's register workload): a client
that leaves before its answer is logged in one line, not as a traceback (jepsen-lite's hygiene checker
counts tracebacks in node logs as violations; campaign cell register-s3 had nine of them)."""

from __future__ import annotations

import logging
import socket
import threading

import pytest

from raftpg.consensus.api import KvTimeout
from raftpg.testing.poll import wait_until
from raftpg.testing.raft_driver import ControlServer, Handler


@pytest.mark.parametrize("outcome", ["an answer", "a KvTimeout"])
def test_a_client_that_leaves_before_the_answer_is_no_traceback(outcome: str, caplog: pytest.LogCaptureFixture,
                                                                capfd: pytest.CaptureFixture[str]) -> None:
    """Both paths: the answer, and an error's answer (register-s5: a KvTimeout answered to a client that
    had left printed the stdlib server's traceback to stderr, which the node log keeps)."""
    answered = threading.Event()
    release = threading.Event()

    def slow(_query: object) -> dict[str, object]:
        release.wait(5)  # the client is gone by the time the answer is written
        answered.set()
        if outcome == "a KvTimeout":
            raise KvTimeout("no answer within 5.0s; the outcome is unknown " + "x" * 100_000)
        return {"value": "x" * 100_000}  # larger than the socket buffers: the write fails

    server = ControlServer(("127.0.0.1", 0), Handler)
    server.routes = {("GET", "/get"): slow}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with caplog.at_level(logging.INFO, logger="raftpg.testing.raft_driver"):
            client = socket.create_connection(server.server_address[:2])
            client.sendall(b"GET /get?key=a HTTP/1.1\r\nHost: x\r\n\r\n")
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            client.close()  # an RST: the server's write fails with a broken pipe or a reset
            release.set()
            wait_until(answered.is_set, 5, "the handler to finish")
            wait_until(lambda: any("left before the answer" in r.getMessage() for r in caplog.records), 5,
                       "the one-line log of a client that left")
        assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
        assert "Traceback" not in capfd.readouterr().err, "a traceback was printed"
    finally:
        server.shutdown()
        server.server_close()
