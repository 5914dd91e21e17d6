"""Issue 12 item 9: an API other machines can reach is never open by accident.

The config refuses ``restapi.listen`` off loopback without authentication unless
``restapi.allow_unauthenticated`` is true; the agent warns at start about an open API and about basic auth
over plain HTTP; failed logins are logged with the client address, never the password, at a bounded rate;
``GET /patroni`` and ``GET /`` say what guards the unsafe methods (``api_authentication``).
"""

from __future__ import annotations

import base64
import logging

import pytest
from api_fakes import FakeView, build_app, make_config, with_client

from raftpg.api import ApiSettings
from raftpg.config import ConfigError

OPEN_ERROR = "restapi.authentication: required when restapi.listen ({listen}) is reachable from other machines"
AUTH = {"username": "admin", "password": "s3cret"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# ------------------------------------------------------------------------------ the config refuses


@pytest.mark.parametrize("listen", ["0.0.0.0:8008", "10.0.0.11:8008", "db1.example:8008", "[::]:8008", "*:8008"])
def test_an_api_off_loopback_without_authentication_is_refused(listen: str) -> None:
    connect = {} if listen.startswith("10.") or listen.startswith("db1") else {"connect_address": "10.0.0.11:8008"}
    with pytest.raises(ConfigError) as raised:
        make_config(listen=listen, **connect)
    (line,) = [e for e in raised.value.errors if e.startswith("restapi.authentication")]
    assert line.startswith(OPEN_ERROR.format(listen=listen))
    assert "restapi.allow_unauthenticated: true" in line and "archive_command" in line


@pytest.mark.parametrize("extra", [
    {"authentication": AUTH},
    {"allow_unauthenticated": True},
    {"certfile": "/etc/raftpg/api.pem", "cafile": "/etc/raftpg/ca.pem", "verify_client": "required"},
])
def test_an_api_off_loopback_starts_with_credentials_client_certificates_or_explicit_consent(extra) -> None:
    config = make_config(listen="10.0.0.11:8008", **extra)
    assert config.restapi.listen == "10.0.0.11:8008"


@pytest.mark.parametrize("listen", ["127.0.0.1:8008", "[::1]:8008", "localhost:8008", "127.0.0.5:8008"])
def test_an_open_api_on_loopback_is_accepted(listen: str) -> None:
    assert make_config(listen=listen).restapi.authentication is None


def test_optional_client_certificates_do_not_count_as_authentication() -> None:
    with pytest.raises(ConfigError, match="restapi.authentication: required"):
        make_config(listen="10.0.0.11:8008", certfile="/etc/a.pem", cafile="/etc/ca.pem", verify_client="optional")


def test_make_app_refuses_settings_that_bypass_the_config() -> None:
    with pytest.raises(ValueError, match=r"restapi.authentication: required .*restapi.allow_unauthenticated"):
        build_app(settings=ApiSettings(listen="0.0.0.0:8008"))
    build_app(settings=ApiSettings(listen="0.0.0.0:8008", allow_unauthenticated=True))  # consent given


# ------------------------------------------------------------------------------ warnings at start


def _start_warnings(caplog: pytest.LogCaptureFixture, **config: object) -> str:
    settings = ApiSettings.from_restapi(make_config(**config).restapi)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="raftpg.api.app"):
        build_app(settings=settings)
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "raftpg.api.app")


def test_warnings_at_start(caplog: pytest.LogCaptureFixture) -> None:
    local_open = _start_warnings(caplog)
    assert "no authentication: any local user of this machine can switch over" in local_open
    assert "archive_command" in local_open
    consented = _start_warnings(caplog, listen="10.0.0.11:8008", allow_unauthenticated=True)
    assert "no authentication: anyone who can reach it (restapi.allow_unauthenticated is true)" in consented
    clear_text = _start_warnings(caplog, listen="10.0.0.11:8008", authentication=AUTH)
    assert "basic auth over plain HTTP: the password crosses the network in clear text" in clear_text
    assert "s3cret" not in clear_text
    assert _start_warnings(caplog, authentication=AUTH) == ""  # loopback with credentials: nothing to say


def test_no_clear_text_warning_over_https(caplog: pytest.LogCaptureFixture) -> None:
    settings = ApiSettings(username="admin", password="pw", listen="10.0.0.11:8008", tls=True)
    with caplog.at_level(logging.WARNING, logger="raftpg.api.app"):
        build_app(settings=settings)
    assert not [r for r in caplog.records if r.name == "raftpg.api.app"]


# ------------------------------------------------------------------------------ GET /patroni says it


def _status(settings: ApiSettings, path: str = "/patroni") -> dict:
    app, _, _ = build_app(settings=settings)

    async def body(client):
        response = await client.get(path)
        return await response.json()

    return with_client(app, body)


PATRONI_FIELDS = {"state", "role", "witness", "patroni", "pause", "pending_restart", "tags", "sync_standby",
                  "cluster_unlocked", "dcs_last_seen", "decision", "raft", "server_version", "timeline",
                  "database_system_identifier", "xlog", "synchronous_mode", "replication"}


@pytest.mark.parametrize(("settings", "expected"), [
    (ApiSettings(), "none"),
    (ApiSettings(listen="0.0.0.0:8008", allow_unauthenticated=True), "none"),
    (ApiSettings(username="admin", password="pw"), "basic"),
    (ApiSettings(tls=True, client_certificates=True), "client-certificate"),
    (ApiSettings(username="admin", password="pw", tls=True, client_certificates=True), "basic+client-certificate"),
])
def test_status_states_what_guards_the_unsafe_methods(settings: ApiSettings, expected: str) -> None:
    for path in ("/patroni", "/"):
        body = _status(settings, path)
        assert body["api_authentication"] == expected
        assert set(body) == PATRONI_FIELDS | {"api_authentication"}  # Patroni's fields are all still there


# ------------------------------------------------------------------------------ failed logins


def _bad_logins(view: FakeView, attempts: list[dict[str, str]], then=None) -> list[int]:
    app, _, _ = build_app(view, settings=ApiSettings(username="admin", password="s3cret"))

    async def body(client):
        codes = []
        for headers in attempts:
            response = await client.post("/switchover", json={"leader": "n1"}, headers=headers)
            codes.append(response.status)
        if then is not None:
            view.mono += then
            codes.append((await client.get("/patroni")).status)
        return codes

    return with_client(app, body)


def _auth_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "raftpg.api.auth"]


def test_failed_logins_are_logged_with_the_address_and_never_the_password(caplog) -> None:
    attempts = [{}, basic("admin", "hunter2-wrong"), basic("hunter2-as-user", "x"), {"Authorization": "Bearer t0k"},
                {"Authorization": "Basic !!!"}]
    with caplog.at_level(logging.WARNING, logger="raftpg.api.auth"):
        assert _bad_logins(FakeView(), attempts) == [401] * 5
    lines = _auth_lines(caplog)
    assert len(lines) == 5 and all(line.startswith("REST API: failed login from 127.0.0.1: POST '/switchover'")
                                   for line in lines)
    assert [line.rsplit("(", 1)[1] for line in lines] == [
        "no credentials)", "wrong password for user 'admin')", "unknown username)", "not basic authentication)",
        "malformed basic credentials)"]
    text = "\n".join(lines)
    assert "hunter2" not in text and "t0k" not in text and "s3cret" not in text


def test_failed_logins_are_rate_limited_and_summarised(caplog) -> None:
    view = FakeView()
    with caplog.at_level(logging.WARNING, logger="raftpg.api.auth"):
        codes = _bad_logins(view, [basic("admin", f"guess{i}") for i in range(40)], then=61.0)
    assert codes == [401] * 40 + [200]
    lines = _auth_lines(caplog)
    assert len(lines) == 6  # five one by one, then one summary when the minute is over
    assert lines[-1].startswith("REST API: 35 more failed logins from 1 address(es) within 60 s")
    assert not any("guess" in line for line in lines)


def test_correct_credentials_are_not_logged_as_failures(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="raftpg.api.auth"):
        assert _bad_logins(FakeView(), [basic("admin", "s3cret")]) == [200]
    assert _auth_lines(caplog) == []
