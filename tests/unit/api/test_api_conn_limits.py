"""serve() bounds idle and slow REST clients (api/conn_limits.py) with the installed aiohttp: idle
connections beyond the cap close the oldest, silent ones are dropped after the keep-alive timeout, a
body that does not arrive gets 408. Timeouts are shortened for the test; waits poll with a deadline."""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp
import pytest
from api_fakes import build_app, make_config

from raftpg.api import app as app_module
from raftpg.api import conn_limits, serve

DEADLINE_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), DEADLINE_S) == b""
    except (ConnectionError, TimeoutError):
        return False


def run(check, **patches):
    async def main() -> None:
        restapi = make_config(listen=f"127.0.0.1:{free_port()}").restapi
        app, _, _ = build_app()
        runner = await serve(app, restapi)
        try:
            await check(restapi.listen)
        finally:
            await runner.cleanup()

    asyncio.run(main())


def test_idle_connections_beyond_the_cap_close_the_oldest_and_health_checks_get_in(monkeypatch):
    monkeypatch.setattr(app_module, "connections_max", lambda: 8)

    async def check(listen: str) -> None:
        host, port = listen.rsplit(":", 1)
        idle = [await asyncio.open_connection(host, int(port)) for _ in range(40)]
        try:
            assert await closed_by_server(idle[0][0])  # the oldest were closed to make room
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://{listen}/liveness") as response:
                    assert response.status == 200
            still_open = 0
            for reader, _writer in idle[-4:]:
                try:
                    await asyncio.wait_for(reader.read(1), 0.2)
                except TimeoutError:
                    still_open += 1
            assert still_open >= 1  # the newest idle ones were not all thrown away
        finally:
            for _reader, writer in idle:
                writer.close()

    run(check)


def test_a_silent_connection_is_closed_after_the_keepalive_timeout(monkeypatch):
    monkeypatch.setattr(app_module, "KEEPALIVE_TIMEOUT_S", 0.3)

    async def check(listen: str) -> None:
        host, port = listen.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            assert await closed_by_server(reader)
        finally:
            writer.close()

    run(check)


def test_a_body_that_does_not_arrive_gets_408(monkeypatch):
    monkeypatch.setattr(conn_limits, "BODY_TIMEOUT_S", 0.3)

    async def check(listen: str) -> None:
        host, port = listen.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(b"POST /switchover HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"le")
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE_S)
            assert head.startswith(b"HTTP/1.1 408")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            body = json.loads(await reader.readexactly(length))
            assert body["error"].startswith("body: did not arrive within")
        finally:
            writer.close()

    run(check)


@pytest.mark.parametrize(("soft", "expected"), [(1024, 256), (20000, conn_limits.CONNECTIONS_MAX), (64, 32)])
def test_the_cap_is_a_quarter_of_the_open_files_limit(monkeypatch, soft, expected):
    monkeypatch.setattr(conn_limits.resource, "getrlimit", lambda _which: (soft, 1 << 20))
    assert conn_limits.connections_max() == expected
