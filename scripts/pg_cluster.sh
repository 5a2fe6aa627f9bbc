#!/usr/bin/env bash
# Throwaway PostgreSQL 15 cluster for tests.
#
#   bash scripts/pg_cluster.sh start DIR PORT   # initdb (if needed) + start on 127.0.0.1:PORT
#   bash scripts/pg_cluster.sh stop DIR         # stop and remove DIR
#
# Connect as postgres@127.0.0.1:PORT/postgres, no password. Prints nothing but errors.
# PostgreSQL refuses to run as root, so as root the server runs as the postgres user.
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
MARKER=.throwaway-pg-cluster  # stop only deletes directories that start created

die() { echo "pg_cluster: $*" >&2; exit 1; }

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

show_log() {
  [ -f "$1/server.log" ] && tail -n 20 "$1/server.log" >&2
  return 0
}

is_running() {
  [ -f "$1/data/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$1/data" status >/dev/null 2>&1
}

wait_ready() {
  local dir=$1 port=$2
  for _ in $(seq 1 150); do
    if as_pg "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$port" -d postgres -U postgres; then return 0; fi
    sleep 0.2
  done
  show_log "$dir"
  die "server in $dir did not accept connections on 127.0.0.1:$port within 30 s"
}

start() {
  local dir=$1 port=$2
  [[ $port =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$port'"
  [ -x "$PGBIN/initdb" ] || die "no PostgreSQL binaries in $PGBIN (apt-get install postgresql-15)"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  # runuser keeps the caller's working directory, which postgres may not be allowed to read.
  cd /

  if is_running "$dir"; then
    wait_ready "$dir" "$port"
    return 0
  fi

  if [ ! -f "$dir/data/PG_VERSION" ]; then
    [ -z "$(ls -A "$dir")" ] || [ -f "$dir/$MARKER" ] || die "$dir is not empty and not a cluster made by this script"
    touch "$dir/$MARKER"
    mkdir -p "$dir/sock"
    if [ "$(id -u)" = 0 ]; then
      id postgres >/dev/null 2>&1 || die "running as root but there is no postgres user to run the server"
      chown -R postgres: "$dir"
    fi
    # -A trust covers the local socket and the 127.0.0.1/::1 host lines.
    if ! as_pg "$PGBIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync \
        >"$dir/initdb.log" 2>&1; then
      cat "$dir/initdb.log" >&2
      die "initdb failed in $dir"
    fi
    echo "include_if_exists = 'cluster.conf'" >>"$dir/data/postgresql.conf"
  fi

  # Rewritten on every start so a stopped cluster can come back on another port.
  cat >"$dir/data/cluster.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/sock'
EOF
  [ "$(id -u)" = 0 ] && chown postgres: "$dir/data/cluster.conf"

  if ! as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 start >/dev/null 2>&1; then
    show_log "$dir"
    die "could not start PostgreSQL in $dir on 127.0.0.1:$port"
  fi
  wait_ready "$dir" "$port"
}

stop() {
  local dir=$1
  [ -e "$dir" ] || return 0
  dir=$(cd "$dir" && pwd)
  cd /
  [ -f "$dir/$MARKER" ] || die "$dir was not made by 'pg_cluster.sh start'; not removing it"
  if is_running "$dir"; then
    as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 || {
      show_log "$dir"
      die "could not stop PostgreSQL in $dir"
    }
  fi
  rm -rf "$dir"
}

case "${1:-}" in
  start) [ $# -eq 3 ] || die "usage: $0 start DIR PORT"; start "$2" "$3" ;;
  stop) [ $# -eq 2 ] || die "usage: $0 stop DIR"; stop "$2" ;;
  *) die "usage: $0 start DIR PORT | stop DIR" ;;
esac
