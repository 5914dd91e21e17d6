"""raftpgctl ``dsn`` and ``query``, as patronictl has them: where to connect, and SQL on a member or role.

The member's address comes from ``GET /cluster`` (its ``host`` and ``port``); ``query`` connects with the
config's ``postgresql.authentication.superuser`` unless ``-U``/``--password`` say otherwise, and prints
rows as patronictl does (tsv by default; pretty, json, yaml). An SQL error prints one row with the time
and ``ERROR, SQLSTATE: ...`` and the command exits 0, as patronictl's does.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import click
import psycopg

from raftpg.cli import ctl_output as out
from raftpg.cli.ctl_members import ROLES, split_names, with_role
from raftpg.cli.ctl_support import Ctl, CtlError
from raftpg.model.values import object_or_empty

pass_ctl = click.make_pass_decorator(Ctl)


def pick_member(ctl: Ctl, cluster: dict[str, Any], cluster_name: str | None, role: str | None,
                member: str | None) -> dict[str, Any] | None:
    """patronictl's get_any_member: the named member, or the first with ``role`` (default: the leader)."""
    if cluster_name is not None:
        split_names(ctl, cluster, (cluster_name,))
    if member is not None:
        return next((m for m in cluster.get("members") or [] if m["name"] == member and m.get("host")), None)
    return next((m for m in with_role(cluster, role or "leader") if m.get("host")), None)


def _stamp() -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S")


@click.command()
@click.argument("cluster_name", required=False)
@click.option("--role", "-r", type=click.Choice(ROLES), default=None, help="A member with this role.")
@click.option("--member", "-m", help="This member.")
@pass_ctl
def dsn(ctl: Ctl, cluster_name: str | None, role: str | None, member: str | None) -> None:
    """Where to connect to a member (default: the leader): host=... port=..."""
    if role and member:
        raise CtlError("--role and --member are mutually exclusive options")
    chosen = pick_member(ctl, ctl.cluster(), cluster_name, role, member)
    if chosen is None:
        raise CtlError("Can not find a suitable member")
    click.echo(f"host={chosen['host']} port={chosen.get('port') or 5432}")


def _credentials(ctl: Ctl) -> dict[str, Any]:
    ctl.client  # noqa: B018 - loads the config
    pg = object_or_empty(ctl._raw.get("postgresql"))
    superuser = object_or_empty(object_or_empty(pg.get("authentication")).get("superuser"))
    return {k: v for k, v in (("user", superuser.get("username")), ("password", superuser.get("password"))) if v}


def run_sql(conninfo: dict[str, Any], sql: str) -> tuple[list[str] | None, list[list[Any]]]:
    try:
        with psycopg.connect(**conninfo, autocommit=True, connect_timeout=5,
                             application_name="raftpgctl") as conn:
            cur = conn.execute(sql.encode("utf-8"))
            if cur.description is None:
                return None, []
            return [d.name for d in cur.description], [list(r) for r in cur.fetchall()]
    except psycopg.Error as exc:
        code = getattr(getattr(exc, "diag", None), "sqlstate", None) or str(exc).strip()
        return None, [[_stamp(), f"ERROR, SQLSTATE: {code}".replace("\n", " ")]]


@click.command()
@click.argument("cluster_name", required=False)
@click.option("--format", "fmt", type=click.Choice(["pretty", "tsv", "json", "yaml", "yml"]), default="tsv",
              help="Output format.")
@click.option("--file", "-f", "p_file", type=click.File("rb"), help="Run the SQL in this file.")
@click.option("--password", is_flag=True, help="Ask for the password.")
@click.option("-U", "--username", help="Database user name.")
@click.option("-W", "w", is_flag=True, help="Repeat every 2 seconds.")
@click.option("-w", "--watch", type=float, help="Repeat every so many seconds.")
@click.option("--role", "-r", type=click.Choice(ROLES), default=None, help="Query a member with this role.")
@click.option("--member", "-m", help="Query this member.")
@click.option("--delimiter", default="\t", help="The column delimiter (tsv).")
@click.option("--command", "-c", help="The SQL to run.")
@click.option("-d", "--dbname", help="Database name.")
@pass_ctl
def query(ctl: Ctl, cluster_name: str | None, fmt: str, p_file: Any, password: bool, username: str | None,
          w: bool, watch: float | None, role: str | None, member: str | None, delimiter: str,
          command: str | None, dbname: str | None) -> None:
    """Run SQL on a member (default: the leader), as patronictl query does."""
    if p_file is not None and command is not None:
        raise CtlError("--file and --command are mutually exclusive options")
    if p_file is None and command is None:
        raise CtlError("You need to specify either --command or --file")
    if role and member:
        raise CtlError("--role and --member are mutually exclusive options")
    sql = p_file.read().decode("utf-8") if p_file is not None else str(command)
    params = _credentials(ctl)
    if username:
        params = {"user": username}
    if password:
        params["password"] = click.prompt("Password", hide_input=True, type=str)
    params["dbname"] = dbname or "postgres"
    interval = watch or (2.0 if w else None)
    while True:
        chosen = pick_member(ctl, ctl.cluster(), cluster_name, role, member)
        if chosen is None:
            target = f"member {member}" if member else f"role {role or 'leader'!r}"
            header, rows = None, [[_stamp(), f"No connection to {target} is available"]]
        else:
            header, rows = run_sql({**params, "host": chosen["host"], "port": chosen.get("port") or 5432}, sql)
        click.echo(out.render(header or [], rows, fmt, delimiter=delimiter) if header or rows else "")
        if interval is None:
            return
        time.sleep(interval)
