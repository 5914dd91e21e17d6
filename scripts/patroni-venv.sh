#!/bin/sh
# A bench-only virtualenv with Patroni 4.1.5 (its own Raft and etcd v3 support), for bench/compare.py
# and other side-by-side measurements. Not a project dependency. Idempotent: does nothing when the venv
# already has Patroni 4.1.5 and psycopg and the agents' OS user can run it. Prints the venv's python last.
#
#     scripts/patroni-venv.sh [VENV_DIR]      (default /opt/patroni-venv; root, or a writable directory)
#
# The venv is built on the system's /usr/bin/python3 (not a pyenv or other per-user interpreter): as root,
# the benches run the agents as the postgres OS user, which must be able to read the interpreter.
set -eu
VENV="${1:-/opt/patroni-venv}"
PATRONI_VERSION=4.1.5
PYTHON=/usr/bin/python3
[ -x "$PYTHON" ] || PYTHON=python3
as_agent() {
    if [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1; then runuser -u postgres -- "$@"; else "$@"; fi
}
check() {
    as_agent "$VENV/bin/python" -c "
import sys
from importlib.metadata import version
import patroni, psycopg, pysyncobj, etcd  # noqa: F401 - the raft and etcd3 extras, and a driver
sys.exit(0 if version('patroni') == '$PATRONI_VERSION' else 1)" 2>/dev/null
}
if [ -x "$VENV/bin/python" ] && check; then
    echo "$VENV/bin/python"
    exit 0
fi
"$PYTHON" -m venv --clear "$VENV"
"$VENV/bin/pip" install --quiet "patroni[etcd3,raft]==$PATRONI_VERSION" 'psycopg[binary]'
chmod -R a+rX "$VENV"
check || { echo "patroni-venv: $VENV has no Patroni $PATRONI_VERSION that user postgres can run" >&2; exit 1; }
echo "$VENV/bin/python"
