"""Small process, clock and HTTP helpers of the harness: ``/proc`` lookups (state, children, command
line), signals by PID, polling with a deadline, a JSON-over-HTTP call, and the libfaketime preload shim.

See ``cluster``'s docstring for why the shim exists (libfaketime 0.9.10 and monotonic sleeps).
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"
MONOFIX_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
/* libfaketime 0.9.10 with FAKETIME_DONT_FAKE_MONOTONIC=1 mangles absolute monotonic sleeps (EINVAL):
   send every sleep on a clock other than CLOCK_REALTIME straight to the kernel. */
int clock_nanosleep(clockid_t clock_id, int flags, const struct timespec *req, struct timespec *rem) {
    static int (*next)(clockid_t, int, const struct timespec *, struct timespec *);
    if (clock_id != CLOCK_REALTIME) {
        int saved = errno;
        long r = syscall(SYS_clock_nanosleep, clock_id, flags, req, rem);
        int err = r == 0 ? 0 : errno;
        errno = saved;
        return err;
    }
    if (!next) next = (int (*)(clockid_t, int, const struct timespec *, struct timespec *))
        dlsym(RTLD_NEXT, "clock_nanosleep");
    return next(clock_id, flags, req, rem);
}
"""


def build_monofix(out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    src, lib = out_dir / "monofix.c", out_dir / "monofix.so"
    src.write_text(MONOFIX_C)
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(lib), str(src), "-ldl"], check=True,
                   capture_output=True, timeout=60)
    lib.chmod(0o755)
    return lib


def faketime_env(offset_file: Path, monofix: Path) -> dict[str, str]:
    return {"LD_PRELOAD": f"{monofix} {FAKETIME_LIB}", "FAKETIME_TIMESTAMP_FILE": str(offset_file),
            "FAKETIME_CACHE_DURATION": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def faked_wall_time(env: dict[str, str]) -> float:
    """The wall time a process started with ``env`` sees (a probe process, ``date +%s.%N``)."""
    out = subprocess.run(["date", "+%s.%N"], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True,
                         text=True, timeout=10, check=True).stdout
    return float(out.strip())


def proc_state(pid: int) -> str | None:
    """The one-letter state of /proc/<pid>/stat (R, S, D, T, Z...), None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pids_with_arg(needle: str) -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and needle in cmdline(int(e))]


def signal_pid(pid: int | None, sig: int) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def http_json(addr: str, port: int, method: str, path: str, body: Any = None,
              timeout_s: float = 2.0) -> tuple[int, Any]:
    """(status, decoded JSON body or None); status 0 if no HTTP answer (refused, timeout, reset)."""
    conn = http.client.HTTPConnection(addr, port, timeout=timeout_s)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw) if raw else None
        except ValueError:
            return resp.status, raw.decode(errors="replace")
    except (OSError, http.client.HTTPException):
        return 0, None
    finally:
        conn.close()


def wait_until(predicate: Callable[[], Any], timeout_s: float, interval_s: float = 0.25) -> Any:
    """Poll ``predicate`` until truthy or the deadline; returns the last value (falsy on timeout)."""
    deadline = time.monotonic() + timeout_s
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval_s)
        value = predicate()
    return value


def first(items: Sequence[Any]) -> Any:
    return items[0] if items else None
