#!/usr/bin/env bash
# The project's test command: bash scripts/test.sh [pytest args...]
# Sets up .venv, Debian's Chromium (for e2e/), node (for the worker's modules) and a throwaway PostgreSQL cluster
# (exported as TEST_POSTGRES_URL), then runs pytest from the repository root.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
export PGBIN

log "setting up…"
ensure_venv
cd "$ROOT"

if [ ! -x /usr/bin/chromium ]; then
  is_root || die "/usr/bin/chromium is missing; install Debian's chromium package (apt-get install chromium) and rerun"
  log "installing chromium…"
  apt_install chromium
fi
if ! command -v node >/dev/null; then
  # The service worker's modules are checked against their Python twins under node.
  is_root || die "node is missing; install Debian's nodejs package (apt-get install nodejs) and rerun"
  log "installing node…"
  apt_install nodejs
fi
if [ ! -x "$PGBIN/initdb" ]; then
  is_root || die "$PGBIN/initdb is missing; install Debian's postgresql-15 package and rerun"
  log "installing PostgreSQL 15…"
  apt_install postgresql-15
fi

PG_DIR=$(mktemp -d)
cleanup() {
  bash "$ROOT/scripts/pg_cluster.sh" stop "$PG_DIR" || rmdir "$PG_DIR" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PG_PORT=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
log "starting PostgreSQL on 127.0.0.1:$PG_PORT…"
bash "$ROOT/scripts/pg_cluster.sh" start "$PG_DIR" "$PG_PORT"
export TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/postgres"

log "running pytest…"
rc=0
python -m pytest "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
  log "error: pytest collected no tests"
  exit 1
fi
exit "$rc"
