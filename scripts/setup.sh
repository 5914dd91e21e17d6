#!/usr/bin/env bash
# Installs what raftpg needs on a fresh Debian/Ubuntu machine, idempotently, and prints the venv path.
#   system packages: postgresql (server binaries), python3-venv; with --test also etcd-server, haproxy,
#   nftables, faketime, iproute2 (for the integration tests and jepsen-lite), and Patroni 4.1.5 in
#   /opt/patroni-venv (scripts/patroni-venv.sh; the migration test)
#   a virtualenv with raftpg installed (editable): /opt/raftpg-venv when root (so the postgres OS user
#   can run it), ./.venv otherwise
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

need=()
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
if [ "$want_test" = 1 ]; then
  command -v etcd >/dev/null || need+=(etcd-server)
  command -v haproxy >/dev/null || need+=(haproxy)
  command -v nft >/dev/null || need+=(nftables)
  command -v faketime >/dev/null || need+=(faketime)
  command -v ip >/dev/null || need+=(iproute2)
fi
if [ "${#need[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "installing Debian packages: ${need[*]}" >&2
  $SUDO apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need[@]}" >&2
  # Debian's postgresql package starts a default cluster on 5432; raftpg runs its own servers
  if printf '%s\n' "${need[@]}" | grep -qx postgresql; then
    $SUDO systemctl stop postgresql >/dev/null 2>&1 || $SUDO service postgresql stop >/dev/null 2>&1 || true
  fi
  if printf '%s\n' "${need[@]}" | grep -qx etcd-server; then
    $SUDO systemctl stop etcd >/dev/null 2>&1 || $SUDO service etcd stop >/dev/null 2>&1 || true
  fi
fi

if [ "$(id -u)" = 0 ]; then VENV=/opt/raftpg-venv; else VENV="$PWD/.venv"; fi
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q --upgrade pip >&2
fi
extras="."; [ "$want_test" = 1 ] && extras=".[test]"
"$VENV/bin/pip" install -q -e "$extras" >&2
if [ "$want_test" = 1 ]; then
  # test-only: Patroni 4.1.5 in its own venv, for the migration test and the side-by-side benches
  sh scripts/patroni-venv.sh >&2 || echo "warning: Patroni could not be installed; its tests will skip" >&2
fi
if [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1; then
  # the agents run as postgres: it must be able to import raftpg from this checkout
  if ! runuser -u postgres -- "$VENV/bin/python" -c 'import raftpg' >/dev/null 2>&1; then
    echo "the postgres user cannot read $PWD: installing a copy of raftpg into the venv" >&2
    "$VENV/bin/pip" install -q --no-deps --force-reinstall "." >&2
  fi
fi
echo "$VENV"
