"""raftpgctl's helpers: its error type, finding the config file (``-c``, ``RAFTPGCTL_CONFIG_FILE``,
``PATRONICTL_CONFIG_FILE``, then patronictl's default path) and the API (and where its credentials may go,
``ctl_trust``; other members when the local agent is down, ``ctl_connect``), the cluster-name positional
argument patronictl takes, and the small parsers behind --scheduled and edit-config's -s/-p."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import click
import yaml

from raftpg.api.client import ApiClient
from raftpg.api.tls import client_ssl_context
from raftpg.cli.ctl_connect import FallbackApi, partner_urls, remember_members, remembered_members
from raftpg.cli.ctl_trust import MemberTrust, trust_from
from raftpg.config import ConfigError, RestApiSettings, is_loopback, load_config

# patronictl's default config file (click.get_app_dir('patroni')/patronictl.yaml), used when it exists
PATRONICTL_DEFAULT = os.path.join(click.get_app_dir("patroni"), "patronictl.yaml")


class CtlError(click.ClickException):
    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"raftpgctl: {self.message}", err=True)


def _read_raw(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except OSError as exc:
        raise CtlError(f"cannot read the config file {path}: {exc.strerror}") from None
    except yaml.YAMLError:
        return None  # load_config says what is wrong with it


def _restapi_settings(path: str, raw: Any) -> RestApiSettings:
    try:
        return load_config(path).restapi
    except ConfigError as exc:
        try:  # a trimmed config for raftpgctl may hold little more than the restapi section
            return RestApiSettings.model_validate(raw["restapi"])
        except Exception:  # noqa: BLE001 - the config error says more than this fallback's
            first = exc.errors[0] if exc.errors else str(exc)
            raise CtlError(f"cannot use the config file {path}: {first}") from None
    except OSError as exc:
        raise CtlError(f"cannot read the config file {path}: {exc.strerror}") from None


def config_path(given: str | None) -> str:
    """``-c`` or an environment variable (click resolved both), else patronictl's default if it exists."""
    if given:
        return given
    if os.path.exists(PATRONICTL_DEFAULT):
        return PATRONICTL_DEFAULT
    raise CtlError("no config file: use -c CONFIG, set RAFTPGCTL_CONFIG_FILE or PATRONICTL_CONFIG_FILE, or "
                   f"create {PATRONICTL_DEFAULT}")


def client_for(path: str | None, insecure: bool = False) -> tuple[ApiClient, MemberTrust, dict[str, Any]]:
    """The client of the API named by the config file, where else its credentials may go, and the raw
    config document. ``insecure`` (``-k``): do not verify the API's TLS certificate."""
    path = config_path(path)
    raw = _read_raw(path)
    restapi = _restapi_settings(path, raw)
    auth = restapi.authentication
    context = None
    if restapi.tls:
        client_cert = restapi.certfile if restapi.verify_client != "none" else None
        try:
            context = client_ssl_context(restapi.cafile, client_cert, restapi.keyfile if client_cert else None)
        except OSError as exc:
            raise CtlError(f"cannot load TLS files: {exc}") from None
    if insecure:
        context = context or ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if auth and not restapi.tls and not is_loopback(restapi.connect_host):
        click.echo(f"raftpgctl: warning: sending restapi.authentication to {restapi.base_url} over plain HTTP "
                   "(the password crosses the network in clear text); set restapi.certfile to use HTTPS", err=True)
    client = ApiClient(restapi.base_url, username=auth.username if auth else None,
                       password=auth.password if auth else None, ssl_context=context)
    raw = raw if isinstance(raw, dict) else {}
    return client, trust_from(raw, restapi), raw


@dataclass
class Ctl:
    """What every verb needs: the config file, the output format, and (loaded once) the client, which
    moves to another member when the local agent does not answer (``ctl_connect``)."""

    config_file: str | None
    fmt: str
    insecure: bool = False
    _client: FallbackApi | None = field(default=None, repr=False)
    _trust: MemberTrust | None = field(default=None, repr=False)
    _raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def client(self) -> FallbackApi:
        if self._client is None:
            first, self._trust, self._raw = client_for(self.config_file, self.insecure)
            self._client = FallbackApi(first, self._trust, self._fallbacks,
                                       lambda text: click.echo(text, err=True))
        return self._client

    def _fallbacks(self) -> list[tuple[str, str]]:
        assert self._client is not None
        seen = [(name, url) for name, url in remembered_members(self.scope or "").items()]
        return seen + [(f"raft partner {url}", url) for url in partner_urls(self._raw, self._client.base_url)]

    @property
    def scope(self) -> str | None:
        self.client  # noqa: B018 - loads the config
        scope = self._raw.get("scope")
        return str(scope) if scope is not None else None

    @property
    def trust(self) -> MemberTrust:
        self.client  # noqa: B018 - loads both from the config file
        assert self._trust is not None
        return self._trust

    def cluster(self) -> dict[str, Any]:
        cluster: dict[str, Any] = self.client.get("/cluster")  # a JSON object
        remember_members(self.scope or str(cluster.get("scope") or ""), cluster)
        return cluster

    def check_cluster_name(self, name: str | None) -> None:
        """patronictl's positional cluster name must be this config's scope."""
        if name is not None and self.scope is not None and name != self.scope:
            raise CtlError(f"cluster {name!r} is not the cluster of this config (scope: {self.scope!r})")

    def member(self, cluster: dict[str, Any], name: str) -> dict[str, Any]:
        members: list[dict[str, Any]] = cluster.get("members") or []
        for member in members:
            if member["name"] == name:
                return member
        raise CtlError(f"{name} is not a member of cluster {cluster.get('scope')}")

    def member_client(self, member: dict[str, Any], *, unsafe: bool = True) -> ApiClient:
        """A client for ``member``'s published api_url. The config's credentials go with it only where the
        config vouches for that address (``ctl_trust``); a read goes without them, an unsafe request not
        at all."""
        if not member.get("api_url"):
            raise CtlError(f"member {member['name']} publishes no api_url")
        client = self.client.at(member["api_url"])
        refusal = self.trust.refusal(member["api_url"]) if client.has_credentials else None
        if refusal is None:
            return client
        if not unsafe:
            return client.without_credentials()
        raise CtlError(f"not sending this config's credentials to member {member['name']} at "
                       f"{member['api_url']}: {refusal}")

    def trusted(self, member: dict[str, Any]) -> bool:
        return not self.client.has_credentials or self.trust.refusal(member.get("api_url") or "") is None


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
