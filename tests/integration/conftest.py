"""Generic fixtures for integration tests that need the ``postgres`` OS user (PostgreSQL refuses to run as root).

- ``postgres_tmp_dir``: a fresh directory under /tmp owned by the postgres user, removed afterwards.
- ``run_as_postgres(fn, *args, timeout_s=...)``: call ``fn(*args)`` in a forked child running as the postgres
  user (as the current user when not root); return its (picklable) result, or fail the test with the child's
  traceback. The child is killed at the deadline; anything it started without stopping sees it exit.
"""

from __future__ import annotations

import os
import pickle
import pwd
import select
import shutil
import signal
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

PG_OS_USER = "postgres"


def _postgres_user() -> pwd.struct_passwd | None:
    """The account to switch to, or None when already unprivileged."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(PG_OS_USER)
    except KeyError:
        pytest.skip(f"running as root and there is no {PG_OS_USER!r} OS user to run PostgreSQL as")


@pytest.fixture
def postgres_tmp_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="raftpg-it-", dir="/tmp"))
    user = _postgres_user()
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _child(fn: Callable[..., Any], args: tuple[Any, ...], user: pwd.struct_passwd | None, write_fd: int) -> None:
    try:
        if user is not None:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            os.environ.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)
        os.chdir("/tmp")
        result = ("ok", fn(*args))
    except BaseException:
        result = ("error", traceback.format_exc())
    try:
        payload = pickle.dumps(result)
    except Exception:
        payload = pickle.dumps(("error", f"result not picklable: {result!r}"))
    with os.fdopen(write_fd, "wb") as f:
        f.write(payload)


@pytest.fixture
def run_as_postgres() -> Callable[..., Any]:
    user = _postgres_user()

    def run(fn: Callable[..., Any], *args: Any, timeout_s: float = 120.0) -> Any:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child never returns into pytest
            os.close(read_fd)
            try:
                _child(fn, args, user, write_fd)
            finally:
                os._exit(0)
        os.close(write_fd)
        chunks, deadline = [], time.monotonic() + timeout_s
        with os.fdopen(read_fd, "rb") as f:
            while (remaining := deadline - time.monotonic()) > 0:
                if select.select([f], [], [], remaining)[0]:
                    chunk = os.read(f.fileno(), 65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
            else:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"{fn.__name__} as {PG_OS_USER} gave no result within {timeout_s:g}s", pytrace=False)
        os.waitpid(pid, 0)
        status, value = pickle.loads(b"".join(chunks))
        if status == "error":
            pytest.fail(f"{fn.__name__} failed as {PG_OS_USER}:\n{value}", pytrace=False)
        return value

    return run


# real-agent cluster fixtures (tests/integration/cluster_fixtures.py), available to every test here
from cluster_fixtures import make_cluster  # noqa: E402,F401
