"""raftpgctl against a real aiohttp app over a fake node (click's CliRunner, loopback HTTP)."""

from __future__ import annotations

import base64
import json
import ssl
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import trustme
from aiohttp import web
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent / "api"))

from api_fakes import (  # noqa: E402
    PRIMARY,
    FakeCommands,
    FakeView,
    build_app,
    cluster_view,
    free_port,
    serving,
)

from raftpg.api import ApiSettings  # noqa: E402
from raftpg.cli.ctl import cli  # noqa: E402
from raftpg.cli.ctl_support import Ctl, CtlError, client_for  # noqa: E402
from raftpg.cli.ctl_trust import trust_from  # noqa: E402
from raftpg.config import RestApiSettings  # noqa: E402
from raftpg.ha.operations import OperationError, Refusal  # noqa: E402
from raftpg.model import DynamicConfig, Failover  # noqa: E402

WALL = 1_700_000_000.0


class Node:
    """A served fake node whose members' api_urls all point at this one server."""

    def __init__(self, tmp_path: Path, auth: bool = True) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        view = cluster_view()
        members = tuple(replace(m, api_url=f"{self.url}/patroni") for m in view.members)
        self.view = FakeView(replace(PRIMARY, view=replace(
            view, members=members, config=DynamicConfig.from_dict({"ttl": 30, "loop_wait": 10,
                                                                   "postgresql": {"parameters": {"a": 1}}}))))
        self.commands = FakeCommands()
        settings = ApiSettings(username="admin", password="pw") if auth else ApiSettings()
        self.app, _, _ = build_app(self.view, self.commands, settings)
        self.config = tmp_path / "node.yml"
        auth_section = "  authentication: {username: admin, password: pw}\n" if auth else ""
        self.config.write_text(
            "scope: demo\nname: n1\n"
            f"restapi:\n  listen: 127.0.0.1:{self.port}\n{auth_section}"
            "raft: {data_dir: /tmp/raftpg-ctl-test, self_addr: '127.0.0.1:2223', password: raft-secret}\n"
            "postgresql: {listen: '127.0.0.1:5432', data_dir: /tmp/x,\n"
            "  authentication: {superuser: {username: postgres}, replication: {username: rep}}}\n")

    def set_cluster(self, **over) -> None:
        self.view.current = replace(self.view.current, view=replace(self.view.current.view, **over))

    def run(self, *args: str, input: str | None = None):
        result = CliRunner().invoke(cli, ["-c", str(self.config), *args], input=input)
        return result


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """raftpgctl remembers member lists per scope: each test its own."""
    monkeypatch.setenv("RAFTPGCTL_CACHE_DIR", str(tmp_path / "ctl-cache"))


@pytest.fixture
def node(tmp_path):
    n = Node(tmp_path)
    with serving(n.app, n.port):
        yield n


def test_list_table(node):
    result = node.run("list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "+ Cluster: demo (7301234567890123456) +"
    header = next(line for line in lines if "Member" in line)
    # patronictl 4.1's columns; its table heads both lag columns "Lag" (json/tsv/yaml: Receive/Replay Lag)
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "Member", "Host", "Role", "State", "TL", "Receive LSN", "Lag", "Replay LSN", "Lag", "Tags"]
    assert "Raft" not in header and "Raft" in node.run("list", "-e").output  # raftpg's, with -e
    n1 = next(line for line in lines if "| n1 " in line)
    assert "Leader" in n1 and "running" in n1 and "127.0.0.1:5433" in n1
    n2 = next(line for line in lines if "| n2 " in line)
    assert "Sync Standby" in n2 and "streaming" in n2 and "0/3000000" in n2
    assert "nofailover: true" in next(line for line in lines if "| n3 " in line)
    assert "Witness" in next(line for line in lines if "| w4 " in line)
    assert "Maintenance mode" not in result.output


def test_list_shows_maintenance_mode_and_a_scheduled_switchover(node):
    node.set_cluster(config=DynamicConfig.from_dict({"pause": True}), failover=Failover("n1", "n2", WALL, 5))
    result = node.run("list")
    assert " Maintenance mode: on" in result.output
    assert "Switchover scheduled at: 2023-11-14T22:13:20+00:00" in result.output


def test_list_shows_a_replica_being_created_with_its_progress_in_the_table_only(node):
    members = tuple(replace(m, state="creating replica", progress=43, lsn=None) if m.name == "n3" else m
                    for m in node.view.current.view.members)
    node.set_cluster(members=members)
    n3 = next(line for line in node.run("list").output.splitlines() if "| n3 " in line)
    assert "creating replica 43 %" in n3
    row = next(r for r in json.loads(node.run("list", "-f", "json").output) if r["Member"] == "n3")
    assert row["State"] == "creating replica"  # what scripts parsing Patroni's output expect


def test_list_and_topology_as_json(node):
    rows = json.loads(node.run("--format", "json", "list").output)
    assert [r["Member"] for r in rows] == ["n1", "n2", "n3", "w4"]
    # patronictl's keys; empty cells are left out, as patronictl does
    assert rows[0] == {"Cluster": "demo", "Member": "n1", "Host": "127.0.0.1:5433", "Role": "Leader",
                       "State": "running", "TL": 2}
    assert rows[2] == {"Cluster": "demo", "Member": "n3", "Host": "127.0.0.1:5435", "Role": "Replica",
                       "State": "streaming", "TL": 2, "Receive LSN": "0/2FFFF9C", "Receive Lag": 0,
                       "Tags": {"nofailover": True}}  # 100 bytes, in whole MB as patronictl shows it
    rows = json.loads(node.run("topology", "-f", "json").output)
    assert [r["Member"] for r in rows] == ["n1", "+ n2", "+ n3", "w4"]
    assert node.run("list", "demo", "-f", "yaml").output.startswith("- Cluster: demo\n")
    tsv = node.run("list", "-f", "tsv").output.splitlines()
    assert tsv[0].split("\t")[:4] == ["Cluster", "Member", "Host", "Role"] and tsv[1].startswith("demo\tn1\t")


def test_history_and_show_config(node):
    result = node.run("history")
    assert result.exit_code == 0 and "no recovery target specified" in result.output
    assert json.loads(node.run("-f", "json", "show-config").output)["ttl"] == 30
    assert "loop_wait: 10" in node.run("show-config").output


def test_switchover_asks_and_sends_the_current_leader(node):
    result = node.run("switchover", "--candidate", "n2", input="n\n")
    assert result.exit_code == 1 and node.commands.calls == []
    result = node.run("switchover", "--candidate", "n2", input="y\n")
    assert result.exit_code == 0, result.output
    assert node.commands.calls == [("switchover", ("n1", "n2", None))]
    node.run("switchover", "--force", "--scheduled", "2030-01-01T10:00:00+00:00")
    assert node.commands.calls[-1] == ("switchover", ("n1", None, "2030-01-01T10:00:00+00:00"))


def test_a_refused_switchover_is_one_line_and_exit_1(node):
    node.commands.fail = OperationError("candidate n3 is not eligible: n3 has the nofailover tag", Refusal.REFUSED)
    result = node.run("switchover", "--candidate", "n3", "--force")
    assert result.exit_code == 1
    assert result.output.strip() == \
        "raftpgctl: switchover failed: candidate n3 is not eligible: n3 has the nofailover tag"


def test_failover_needs_a_candidate_with_force(node):
    result = node.run("failover", "--force")
    assert result.exit_code == 1 and "--candidate is required" in result.output
    result = node.run("failover", "--candidate", "n2", "--force")
    assert result.exit_code == 0 and node.commands.calls == [("failover", ("n2", True))]
    result = node.run("failover", input="n2\ny\n")
    assert result.exit_code == 0, result.output
    assert node.commands.calls[-1] == ("failover", ("n2", False))


def test_pause_and_resume(node):
    result = node.run("pause")
    assert result.exit_code == 0 and node.commands.calls == [("patch_config", ({"pause": True},))]
    assert node.run("resume").exit_code == 1  # not paused: nothing to resume
    node.set_cluster(config=DynamicConfig.from_dict({"pause": True}))
    assert node.run("pause").output.strip() == "raftpgctl: cluster demo is already paused"
    assert node.run("resume").exit_code == 0
    assert node.commands.calls[-1] == ("patch_config", ({"pause": False},))


def test_demote_and_promote_cluster_change_standby_cluster(node):
    """Patroni 4's verbs: demote-cluster writes standby_cluster (host, port, slot), promote-cluster removes
    it; each refuses when the cluster is already in that mode, and asks unless --force."""
    assert node.run("promote-cluster", "--force").output.strip() == "raftpgctl: Cluster is not in the standby mode"
    assert node.run("demote-cluster", "--host", "10.0.0.9", input="n\n").exit_code == 1
    assert node.commands.calls == []
    result = node.run("demote-cluster", "--host", "10.0.0.9", "--port", "5433", "--primary-slot-name", "dr",
                      "--force")
    assert result.exit_code == 0, result.output
    assert node.commands.calls == [("patch_config", (
        {"standby_cluster": {"host": "10.0.0.9", "port": 5433, "primary_slot_name": "dr"}},))]
    node.set_cluster(config=DynamicConfig.from_dict({"standby_cluster": {"host": "10.0.0.9"}}))
    assert node.run("demote-cluster", "--host", "h", "--force").output.strip() == \
        "raftpgctl: Cluster is already in the standby mode"
    assert node.run("promote-cluster", input="y\n").exit_code == 0
    assert node.commands.calls[-1] == ("patch_config", ({"standby_cluster": None},))


def test_edit_config_shows_a_diff_and_patches_only_the_changes(node):
    result = node.run("edit-config", "-s", "ttl=40", "-p", "work_mem=8MB", "-s", "postgresql.parameters.a=null",
                      input="y\n")
    assert result.exit_code == 0, result.output
    assert "-ttl: 30" in result.output and "+ttl: 40" in result.output and "+    work_mem: 8MB" in result.output
    assert node.commands.calls == [("patch_config", (
        {"ttl": 40, "postgresql": {"parameters": {"a": None, "work_mem": "8MB"}}},))]
    assert node.run("edit-config", "-s", "ttl=30", "--force").output.strip() == "Not changed"


def test_edit_config_declined_changes_nothing(node):
    result = node.run("edit-config", "-s", "ttl=40", input="n\n")
    assert result.exit_code == 1 and node.commands.calls == []


def test_member_verbs_go_to_the_members_api(node):
    result = node.run("restart", "n2", "--force", "--role", "primary")
    assert result.exit_code == 1 and "No 'primary' among provided members" in result.output
    assert node.run("restart", "n2", "--force", "--pending").exit_code == 0  # n2 has none pending: skipped
    assert node.commands.calls == []
    result = node.run("restart", "n2", "--force")
    assert result.exit_code == 0 and "Success: restart on member n2" in result.output
    assert node.run("restart", "demo", "n2", "--force").exit_code == 0  # patronictl's CLUSTER MEMBER
    out = node.run("reload", "--force").output
    assert out.count("Reload request received for member") == 3  # data members only
    assert node.run("reinit", "n2", "--force").exit_code == 0
    assert [c for c in node.commands.calls] == [("restart", ()), ("restart", ()), ("reload", ()), ("reload", ()),
                                                ("reload", ()), ("reinitialize", (True,))]
    result = node.run("reinit", "demo", "n9", "--force")
    assert result.exit_code == 1 and result.output.strip().endswith("raftpgctl: n9 is not a member of cluster")
    result = node.run("reinit", "other", "n2", "--force")
    assert result.exit_code == 1 and "'other' is neither this cluster's name (scope 'demo')" in result.output


def test_raft_members(node):
    result = node.run("members")
    assert result.exit_code == 0 and "127.0.0.1:2223" in result.output and "leader" in result.output
    rows = json.loads(node.run("members", "list", "-f", "json").output)
    assert rows[0] == {"Raft address": "127.0.0.1:2223", "Member": "n1", "Raft role": "leader", "Connected": "yes"}
    assert node.run("members", "add", "127.0.0.1:2230").exit_code == 0
    assert node.run("members", "remove", "127.0.0.1:2224").exit_code == 0
    assert node.commands.calls == [("add_raft_member", ("127.0.0.1:2230",)),
                                   ("remove_raft_member", ("127.0.0.1:2224",))]


def test_version(node):
    result = node.run("version")
    assert result.exit_code == 0 and result.output.startswith("raftpgctl version ")
    assert "n1: raftpg" not in result.output
    assert "n1: raftpg 0.1.0" in node.run("version", "demo").output
    assert node.run("version", "demo", "n2").output.splitlines()[1:] == ["n2: raftpg 0.1.0"]


def test_wrong_credentials_are_reported(tmp_path):
    n = Node(tmp_path)
    n.config.write_text(n.config.read_text().replace("password: pw", "password: nope"))
    with serving(n.app, n.port):
        result = n.run("pause")
    assert result.exit_code == 1 and "401 authentication required" in result.output


def test_an_unreachable_node_is_one_line_without_traceback(tmp_path):
    n = Node(tmp_path)  # not served
    result = n.run("list")
    assert result.exit_code == 1
    assert result.output.strip() == f"raftpgctl: cannot reach http://127.0.0.1:{n.port}: connection refused " \
        "(no other member answered either)"
    assert "Traceback" not in result.output


def test_missing_or_broken_config(tmp_path, monkeypatch):
    monkeypatch.delenv("RAFTPGCTL_CONFIG_FILE", raising=False)
    result = CliRunner().invoke(cli, ["list"])
    assert result.exit_code == 1 and "no config file" in result.output
    bad = tmp_path / "bad.yml"
    bad.write_text("scope: demo\n")
    result = CliRunner().invoke(cli, ["-c", str(bad), "list"])
    assert result.exit_code == 1 and result.output.startswith("raftpgctl: cannot use the config file")
    result = CliRunner().invoke(cli, ["-c", str(tmp_path / "absent.yml"), "list"])
    assert result.exit_code != 0 and "Traceback" not in result.output


def test_config_file_from_the_environment_and_a_trimmed_config(tmp_path, monkeypatch):
    n = Node(tmp_path, auth=False)
    trimmed = tmp_path / "ctl.yml"
    trimmed.write_text(f"restapi:\n  listen: 127.0.0.1:{n.port}\n")
    monkeypatch.setenv("RAFTPGCTL_CONFIG_FILE", str(trimmed))
    with serving(n.app, n.port):
        result = CliRunner().invoke(cli, ["list"])
    assert result.exit_code == 0 and "| n1 " in result.output


# ------------------------------------------------------------------ where the credentials go (issue 12, item 6)


class Recorder:
    """A stranger's server: records every request and the Authorization header it carried."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None]] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((request.method, request.path, request.headers.get("Authorization")))
        return web.json_response({"message": "recorded", "pause": True})


def _point_member_at(node: Node, name: str, api_url: str) -> None:
    node.set_cluster(members=tuple(replace(m, api_url=api_url) if m.name == name else m
                                   for m in node.view.current.view.members))


BASIC_ADMIN_PW = "Basic " + base64.b64encode(b"admin:pw").decode()


def test_credentials_never_go_to_an_api_url_the_config_does_not_name(node):
    stranger = Recorder()
    with serving(stranger.app, host="127.0.0.2") as url:
        _point_member_at(node, "n2", f"{url}/patroni")  # whoever can write the DCS can publish this
        result = node.run("restart", "n2", "--force")
        assert result.exit_code == 1
        assert ("Failed: restart for member n2, status code=0, (not sending this config's credentials to member n2 "
                f"at {url}/patroni: its host 127.0.0.2 is not named in this config (restapi.listen, raft.self_addr, "
                "postgresql.listen, restapi.connect_address)") in result.output
        result = node.run("reload", "--force")
        assert result.exit_code == 1 and result.output.count("Reload request received") == 2  # n1, n3 reloaded
        assert stranger.seen == []
        # the same host named in the config (as a Raft partner) is a member: the request goes, with credentials
        node.config.write_text(node.config.read_text().replace(
            "password: raft-secret}", "password: raft-secret, partner_addrs: ['127.0.0.2:2224']}"))
        assert node.run("restart", "n2", "--force").exit_code == 0
        assert stranger.seen == [("POST", "/restart", BASIC_ADMIN_PW)]


def test_an_unverified_member_is_read_without_credentials(node):
    stranger = Recorder()
    with serving(stranger.app, host="127.0.0.2") as url:
        ctl = Ctl(str(node.config), "pretty")
        member = {"name": "n2", "api_url": f"{url}/patroni"}
        assert ctl.member_client(member, unsafe=False).get("/patroni")["pause"] is True
        with pytest.raises(CtlError, match="not sending this config's credentials to member n2"):
            ctl.member_client(member)
    assert stranger.seen == [("GET", "/patroni", None)]


def test_redirects_are_not_followed(tmp_path):
    stranger = Recorder()
    n = Node(tmp_path)
    redirector = web.Application()

    async def elsewhere(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{stranger_url}/cluster")

    redirector.router.add_get("/cluster", elsewhere)
    with serving(stranger.app, host="127.0.0.2") as stranger_url, serving(redirector, n.port):
        result = n.run("restart", "n2", "--force")
    assert result.exit_code == 1 and "302" in result.output and stranger.seen == []


def test_https_members_are_verified_by_the_cluster_ca(tmp_path):
    ca, foreign_ca = trustme.CA(), trustme.CA()
    files = {}
    for name, authority, host in (("node", ca, "127.0.0.1"), ("member", ca, "127.0.0.2"),
                                  ("impostor", foreign_ca, "127.0.0.3")):
        path = tmp_path / f"{name}.pem"
        authority.issue_cert(host).private_key_and_cert_chain_pem.write_to_path(str(path))
        files[name] = path
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))

    def server_context(name: str) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(files[name]))
        return context

    n = Node(tmp_path)
    n.url = f"https://127.0.0.1:{n.port}"
    n.config.write_text(n.config.read_text().replace(
        "  authentication: {username", f"  certfile: {files['node']}\n  cafile: {tmp_path / 'ca.pem'}\n"
                                       "  authentication: {username"))
    member, impostor = Recorder(), Recorder()
    with serving(n.app, n.port, ssl_context=server_context("node")), \
            serving(member.app, host="127.0.0.2", ssl_context=server_context("member")) as member_url, \
            serving(impostor.app, host="127.0.0.3", ssl_context=server_context("impostor")) as impostor_url:
        _point_member_at(n, "n2", f"{member_url}/patroni")
        _point_member_at(n, "n3", f"{impostor_url}/patroni")
        result = n.run("restart", "n2", "--force")
        assert result.exit_code == 0, result.output  # a certificate for 127.0.0.2 from our CA
        result = n.run("restart", "n3", "--force")
    assert result.exit_code == 1 and "TLS certificate not trusted" in result.output
    assert member.seen == [("POST", "/restart", BASIC_ADMIN_PW)] and impostor.seen == []


@pytest.mark.parametrize(("raw", "api_url", "trusted"), [
    ({"raft": {"partner_addrs": "10.0.0.2:2222,10.0.0.3:2222"}}, "http://10.0.0.3:8008/patroni", True),
    ({"raft": {"partner_addrs": ["10.0.0.2:2222"]}}, "http://10.0.0.22:8008/patroni", False),
    ({"etcd3": {"hosts": ["DB2.example:2379"]}}, "http://db2.example:8008/patroni", True),
    ({"consul": {"host": "[::1]:8500"}}, "http://[0:0::1]:8008/patroni", True),
    ({"postgresql": {"listen": "10.0.0.7,10.0.0.8:5432"}}, "http://10.0.0.8:8008", True),
    ({"restapi": {"listen": "0.0.0.0:8008"}}, "http://0.0.0.0:8008", False),  # a wildcard names no host
    ({}, "http://127.0.0.1:9999/patroni", True),  # the configured API's own host
    ({}, "https://10.0.0.9:8008/patroni", False),  # https, but not verified against restapi.cafile
])
def test_which_hosts_a_config_vouches_for(raw, api_url, trusted):
    restapi = RestApiSettings.model_validate({"listen": "127.0.0.1:8008"})
    assert (trust_from(raw, restapi).refusal(api_url) is None) is trusted


def test_basic_auth_over_plain_http_off_loopback_is_warned_about(tmp_path, capsys):
    config = tmp_path / "ctl.yml"
    config.write_text("restapi: {listen: '10.0.0.11:8008', authentication: {username: admin, password: pw}}\n")
    client, _, _ = client_for(str(config))
    assert client.base_url == "http://10.0.0.11:8008"
    err = capsys.readouterr().err
    assert "warning: sending restapi.authentication to http://10.0.0.11:8008 over plain HTTP" in err
    assert "pw" not in err.replace("password crosses", "")


# ------------------------------------------------------------------ patronictl's command lines (issue 13)


def test_the_cluster_name_must_be_the_config_scope(node):
    assert node.run("list", "demo").exit_code == 0
    result = node.run("list", "pgsql")
    assert result.exit_code == 1
    assert result.output.strip() == "raftpgctl: cluster 'pgsql' is not the cluster of this config (scope: 'demo')"
    assert node.run("switchover", "pgsql", "--candidate", "n2", "--force").exit_code == 1
    assert node.commands.calls == []


def test_patronictl_config_file_variable(node, monkeypatch):
    monkeypatch.delenv("RAFTPGCTL_CONFIG_FILE", raising=False)
    monkeypatch.setenv("PATRONICTL_CONFIG_FILE", str(node.config))
    result = CliRunner().invoke(cli, ["list", "demo"])
    assert result.exit_code == 0 and "| n1 " in result.output


def test_the_local_agent_down_another_member_answers(tmp_path, monkeypatch):
    from raftpg.cli.ctl_connect import remember_members
    monkeypatch.setenv("RAFTPGCTL_CACHE_DIR", str(tmp_path / "cache"))
    down = Node(tmp_path)                      # the config's own agent: not served
    up_dir = tmp_path / "up"
    up_dir.mkdir()
    up = Node(up_dir)
    remember_members("demo", {"members": [{"name": "n1", "api_url": f"{down.url}/patroni"},
                                          {"name": "n2", "api_url": f"{up.url}/patroni"}]})
    with serving(up.app, up.port):
        result = CliRunner().invoke(cli, ["-c", str(down.config), "list", "demo"])
        assert result.exit_code == 0, result.output
        assert "| n1 " in result.stdout
        assert result.stderr.strip() == (f"raftpgctl: cannot reach {down.url}: connection refused; "
                                         f"n2 at {up.url} answered")
        assert CliRunner().invoke(cli, ["-c", str(down.config), "pause", "demo"]).exit_code == 0
    assert ("patch_config", ({"pause": True},)) in up.commands.calls  # an unsafe request, with credentials


def test_edit_config_apply_replace_and_quiet(node, tmp_path):
    patch = tmp_path / "patch.yml"
    patch.write_text("loop_wait: 5\npostgresql: {parameters: {work_mem: 8MB}}\n")
    result = node.run("edit-config", "demo", "--apply", str(patch), "--force", "-q")
    assert result.exit_code == 0 and result.output.strip() == "Configuration changed"
    assert node.commands.calls[-1] == ("patch_config", ({"loop_wait": 5, "postgresql": {"parameters": {
        "work_mem": "8MB"}}},))
    result = node.run("edit-config", "--replace", "-", "--force", input="ttl: 20\nloop_wait: 2\n")
    assert result.exit_code == 0 and "-loop_wait: 10" in result.output
    assert node.commands.calls[-1] == ("put_config", ({"ttl": 20, "loop_wait": 2},))
    result = node.run("edit-config", "--pg", "max_connections=150", "--set", "loop_wait=15", "--force")
    assert node.commands.calls[-1] == ("patch_config", ({"loop_wait": 15, "postgresql": {"parameters": {
        "max_connections": 150}}},))


def test_restart_options_reach_the_api(node):
    result = node.run("restart", "demo", "n1", "--force", "--pg-version", "17.1", "--timeout", "30",
                      "--scheduled", "2030-01-01T10:00:00+00:00")
    assert result.exit_code == 0 and "Success: restart scheduled on member n1" in result.output
    assert node.run("flush", "demo", "restart", "--force").output.count("Success: flush scheduled restart") == 1
    result = node.run("restart", "demo", "--any", "--force", "--timeout", "45")
    assert result.exit_code == 0 and result.output.count("Success: restart on member") == 1
    assert node.commands.calls == [("restart", (45.0,))]
    result = node.run("restart", "demo", "--force", "--timeout", "0")
    assert result.exit_code == 1 and "timeout: must be a positive number of seconds" in result.output


def test_reinit_from_leader_and_flush_switchover(node):
    assert node.run("reinit", "demo", "n2", "n3", "--force", "--from-leader").exit_code == 0
    assert node.commands.calls == [("reinitialize", (True, True)), ("reinitialize", (True, True))]
    result = node.run("flush", "demo", "switchover", "--force")
    assert result.exit_code == 0 and node.commands.calls[-1] == ("cancel_switchover", ())


def test_dsn_history_formats_and_timestamp(node):
    assert node.run("dsn", "demo").output.strip() == "host=127.0.0.1 port=5433"
    assert node.run("dsn", "demo", "-r", "replica").output.strip() == "host=127.0.0.1 port=5434"
    assert node.run("dsn", "demo", "--member", "n3").output.strip() == "host=127.0.0.1 port=5435"
    history = node.run("history", "demo", "-f", "yaml").output
    assert "Reason: no recovery target specified" in history and "New Leader: n1" in history
    lines = node.run("list", "demo", "-t").output.splitlines()
    assert len(lines[0]) == 19 and lines[1].startswith("+ Cluster: demo")


# Every command line of Patroni 4.1's docs/patronictl.rst that raftpg supports, as written there (only the
# names mapped: cluster batman -> demo, postgresql0/1/2 -> n1/n2/n3, the config file -> this node's).
# Not run: demote-cluster/promote-cluster (no standby clusters), remove (it prompts: tests of its own below), and
# `query -U postgres --password` / `query -W` (they prompt or never end).
PATRONICTL_RST_LINES = [
    "dsn batman -r primary",
    "dsn batman --member postgresql1",
    "edit-config batman --pg max_connections=\"150\" --force",
    "edit-config batman --set loop_wait=\"15\" --set ttl=\"45\" --force",
    "edit-config batman --set maximum_lag_on_failover=\"null\" --force",
    "failover batman --candidate postgresql2 --force",
    "flush batman switchover --force",
    "flush batman restart -r replica --force",
    "flush batman postgresql0 postgresql1 restart --force",
    "history batman",
    "history batman -f yaml",
    "list batman",
    "list batman -e",
    "list batman -f yaml -t",
    "pause batman --wait",
    "reinit batman postgresql1 postgresql2 --force",
    "reinit batman postgresql2 --from-leader",
    "reload batman --force",
    "restart batman --force",
    "restart batman --any --force",
    "restart batman --scheduled 2033-09-13T18:00-03:00 --force",  # the docs' date, ten years on
    "resume batman --wait",
    "show-config batman",
    "switchover batman --leader postgresql0 --candidate postgresql2 --force",
    "switchover batman --leader postgresql0 --candidate postgresql2 --scheduled 2033-09-13T18:00-03:00 --force",
    "topology batman",
    "version",
    "version batman",
    "version batman postgresql1 postgresql2",
]
RST_NAMES = {"batman": "demo", "postgresql0": "n1", "postgresql1": "n2", "postgresql2": "n3"}


@pytest.mark.parametrize("line", PATRONICTL_RST_LINES)
def test_patronictl_docs_command_lines_run_unchanged(node, line):
    import shlex
    args = [RST_NAMES.get(word, word) for word in shlex.split(line)]
    if args[0] == "resume":
        node.set_cluster(config=DynamicConfig.from_dict({"pause": True}))
    patch = node.commands.patch_config

    async def patch_and_apply(change):  # the fake node takes the pause at once, as the agents would
        if "pause" in change:
            node.set_cluster(config=DynamicConfig.from_dict({"pause": change["pause"]}))
        return await patch(change)

    node.commands.patch_config = patch_and_apply
    if args[0] == "reinit" and "--force" not in args:
        result = node.run(*args, input="y\n")
    else:
        result = node.run(*args)
    assert result.exit_code == 0, (line, result.output)
    assert "Traceback" not in result.output


def test_insecure_skips_verifying_the_apis_certificate(tmp_path):
    foreign = trustme.CA()  # the API's certificate comes from a CA this config does not name
    cert = tmp_path / "node.pem"
    foreign.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(cert))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert))
    n = Node(tmp_path)
    n.config.write_text(n.config.read_text().replace("  authentication: {username",
                                                     f"  certfile: {cert}\n  authentication: {{username"))
    with serving(n.app, n.port, ssl_context=context):
        refused = n.run("list")
        accepted = n.run("-k", "list", "demo")
    assert refused.exit_code == 1 and "TLS certificate not trusted" in refused.output
    assert accepted.exit_code == 0 and "| n1 " in accepted.output


def test_watch_repeats_at_the_interval_and_a_single_list_does_not(monkeypatch):
    import raftpg.cli.ctl as ctl_module
    slept: list[float] = []
    monkeypatch.setattr(ctl_module.time, "sleep", slept.append)
    monkeypatch.setattr(ctl_module.click, "clear", lambda: None)
    assert len(list(ctl_module._watching(False, None))) == 1
    ticks = ctl_module._watching(False, 5.0)
    assert [next(ticks) for _ in range(3)] == [None, None, None]  # -w N: again and again until interrupted
    w = ctl_module._watching(True, None)
    next(w), next(w)
    assert slept == [5.0, 5.0, 2.0]  # -W: every 2 seconds, as patronictl


def test_restart_pending_asks_each_member_what_it_reports_now(node):
    from raftpg.model import LocalState
    assert isinstance(node.view.current.local, LocalState)
    node.view.current = replace(node.view.current, local=replace(node.view.current.local, pending_restart=True))
    result = node.run("restart", "demo", "--force", "--pending")  # the member keys say nothing is pending
    assert result.exit_code == 0 and result.output.count("Success: restart on member") == 3


def test_remove_asks_three_times_as_patronictl_does_and_sends_what_was_confirmed(node):
    for answers, error in [
        ("other\n", "Cluster names specified do not match"),
        ("demo\nyes\n", 'You did not exactly type "Yes I am aware"'),
        ("demo\nYes I am aware\nn2\n", "You did not specify the current leader of the cluster"),
    ]:
        result = node.run("remove", "demo", input=answers)
        assert result.exit_code == 1 and error in result.output and node.commands.calls == []
    result = node.run("remove", "demo", input="demo\nYes I am aware\nn1\n")
    assert result.exit_code == 0, result.output
    assert "Please specify the leader name to continue" in result.output
    assert node.commands.calls == [("remove_cluster", ("n1",))]
    assert node.run("remove", "other").exit_code != 0  # not this config's scope: refused before asking
    assert node.run("remove").exit_code == 2  # the cluster name is required, as in patronictl


def test_remove_of_a_cluster_without_a_leader_does_not_ask_for_one(node):
    node.set_cluster(leader=None)
    result = node.run("remove", "demo", input="demo\nYes I am aware\n")
    assert result.exit_code == 0, result.output
    assert node.commands.calls == [("remove_cluster", (None,))]
