#!/bin/sh
# A bench-only virtualenv with Patroni 4.1.5 (its own Raft and etcd v3 support), for bench/compare.py
# and other side-by-side measurements. Not a project dependency. Idempotent: does nothing when the venv
# already has Patroni 4.1.5 and psycopg. Prints the venv's python on its last line.
#
#     scripts/patroni-venv.sh [VENV_DIR]      (default /opt/patroni-venv; root, or a writable directory)
set -eu
VENV="${1:-/opt/patroni-venv}"
PATRONI_VERSION=4.1.5
check() {
    "$VENV/bin/python" - "$PATRONI_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
import patroni, psycopg, pysyncobj, etcd  # noqa: F401 - the raft and etcd3 extras, and a driver
sys.exit(0 if version("patroni") == sys.argv[1] else 1)
PY
}
if [ -x "$VENV/bin/python" ] && check; then
    echo "$VENV/bin/python"
    exit 0
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet "patroni[etcd3,raft]==$PATRONI_VERSION" 'psycopg[binary]'
check || { echo "patroni-venv: $VENV has no working Patroni $PATRONI_VERSION" >&2; exit 1; }
# agents run as the postgres OS user when started by root: the venv must be readable by everyone
chmod -R a+rX "$VENV"
echo "$VENV/bin/python"
