"""raftpgctl's helpers: its error type, finding the API from the config file, and the small parsers
behind --scheduled and edit-config's -s/-p."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click
import yaml

from raftpg.api.client import ApiClient
from raftpg.api.tls import client_ssl_context
from raftpg.config import ConfigError, RestApiSettings, load_config


class CtlError(click.ClickException):
    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"raftpgctl: {self.message}", err=True)


def _restapi_settings(path: str) -> RestApiSettings:
    try:
        return load_config(path).restapi
    except ConfigError as exc:
        try:  # a trimmed config for raftpgctl may hold little more than the restapi section
            with open(path, encoding="utf-8") as f:
                raw = yaml.safe_load(f)
            return RestApiSettings.model_validate(raw["restapi"])
        except Exception:  # noqa: BLE001 - the config error says more than this fallback's
            first = exc.errors[0] if exc.errors else str(exc)
            raise CtlError(f"cannot use the config file {path}: {first}") from None
    except OSError as exc:
        raise CtlError(f"cannot read the config file {path}: {exc.strerror}") from None


def client_for(path: str | None) -> ApiClient:
    if not path:
        raise CtlError("no config file: use -c CONFIG or set RAFTPGCTL_CONFIG_FILE")
    restapi = _restapi_settings(path)
    auth = restapi.authentication
    context = None
    if restapi.tls:
        client_cert = restapi.certfile if restapi.verify_client != "none" else None
        try:
            context = client_ssl_context(restapi.cafile, client_cert, restapi.keyfile if client_cert else None)
        except OSError as exc:
            raise CtlError(f"cannot load TLS files: {exc}") from None
    return ApiClient(restapi.base_url, username=auth.username if auth else None,
                     password=auth.password if auth else None, ssl_context=context)


def parse_schedule(text: str | None) -> str | None:
    if text is None or text.strip().lower() == "now":
        return None
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(f"not an ISO-8601 date and time: {text!r}", param_hint="--scheduled") from None
    if when.tzinfo is None:
        when = when.astimezone()  # a time without zone is this machine's local time, as in patronictl
    return when.isoformat()


def assign(document: dict[str, Any], path: list[str], value: Any) -> None:
    node = document
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    if value is None:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value


def parse_pair(text: str, option: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise click.BadParameter(f"expected key=value, got {text!r}", param_hint=option)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def patch_between(before: Any, after: Any) -> dict[str, Any]:
    patch: dict[str, Any] = {}
    for key in set(before) | set(after):
        if key not in after:
            patch[key] = None
        elif isinstance(before.get(key), dict) and isinstance(after[key], dict):
            inner = patch_between(before[key], after[key])
            if inner:
                patch[key] = inner
        elif before.get(key) != after[key] or key not in before:
            patch[key] = after[key]
    return patch
