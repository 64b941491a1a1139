#!/usr/bin/env bash
# Run a command with a throwaway PostgreSQL 15 cluster on 127.0.0.1, exported as ADAPTERHUB_TEST_POSTGRES_URL.
# Installs Debian's postgresql package when no server binaries are found. initdb refuses root, so the cluster
# runs as the `postgres` user when we are root.
set -euo pipefail

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
PGBIN="$(find_bin)"
if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/initdb" ]; then
  echo "with-postgres: installing PostgreSQL from Debian packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq postgresql >/dev/null
  PGBIN="$(find_bin)"
fi

WORK="$(mktemp -d /tmp/adapterhub-pg.XXXXXX)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
as_pg() {
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi
}
if [ "$(id -u)" = 0 ]; then chown postgres "$WORK"; fi
chmod 700 "$WORK"
as_pg "'$PGBIN/initdb' -D '$WORK/data' -A trust -U postgres --no-sync >'$WORK/initdb.log' 2>&1" || { cat "$WORK/initdb.log" >&2; exit 1; }
as_pg "'$PGBIN/pg_ctl' -D '$WORK/data' -l '$WORK/server.log' -w -o \"-p $PORT -k '$WORK' -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200\" start >/dev/null"
cleanup() { as_pg "'$PGBIN/pg_ctl' -D '$WORK/data' -m immediate -w stop >/dev/null 2>&1" || true; rm -rf "$WORK"; }
trap cleanup EXIT

export ADAPTERHUB_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$PORT/postgres"
echo "with-postgres: PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT" >&2
"$@"
