#!/usr/bin/env bash
# Runs CMD with a throwaway PostgreSQL 15 cluster: a temporary directory, a free loopback
# port, trust authentication for the local `postgres` role. Exports STINT_TEST_POSTGRES_URL
# for the tests and stops the cluster (and deletes it) on exit, whatever CMD does. Also
# exports STINT_TEST_PG_BIN (initdb, pg_ctl) and STINT_TEST_PG_USER (the OS user that must
# run them: `postgres` as root, empty otherwise) for tests that need a cluster of their own
# to stop and restart (tests/it/failover.rs).
#
#   scripts/with-postgres.sh cargo test
#
# initdb refuses to run as root, so as root the cluster runs as the unprivileged
# `postgres` user (created by the Debian package). Missing binaries are installed with
# apt-get (postgresql-15) first. fsync is off: the cluster is thrown away afterwards.
set -euo pipefail

if [ "$#" -eq 0 ]; then
    echo "usage: $0 CMD [ARGS...]" >&2
    exit 2
fi

PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
if [ ! -x "$PG_BIN/initdb" ]; then
    echo "== PostgreSQL 15 not found in $PG_BIN: installing postgresql-15" >&2
    if [ "$(id -u)" -ne 0 ]; then
        echo "not root: install postgresql-15 (or set PG_BIN) and retry" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql-15 >/dev/null
fi

# Who runs the server: ourselves, unless we are root.
as_pg() { "$@"; }
if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    as_pg() { su postgres -s /bin/sh -c "$(printf '%q ' "$@")"; }
fi

PG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/stint-pg.XXXXXX")"
chmod 0755 "$PG_DIR"
[ "$(id -u)" -eq 0 ] && chown postgres "$PG_DIR"

# A free loopback port: ask the kernel for one.
PG_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' 2>/dev/null || echo $((20000 + RANDOM % 20000)))"

cleanup() {
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
}
trap cleanup EXIT INT TERM

as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 --no-locale >"$PG_DIR/initdb.log" 2>&1 \
    || { cat "$PG_DIR/initdb.log" >&2; exit 1; }
as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$PG_DIR -c max_connections=300 -c fsync=off" \
    start >/dev/null || { cat "$PG_DIR/server.log" >&2; exit 1; }

export STINT_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
export STINT_TEST_PG_BIN="$PG_BIN"
STINT_TEST_PG_USER=""
[ "$(id -u)" -eq 0 ] && STINT_TEST_PG_USER="postgres"
export STINT_TEST_PG_USER
echo "== PostgreSQL 15 on 127.0.0.1:$PG_PORT (STINT_TEST_POSTGRES_URL set)" >&2
set +e
"$@"
status=$?
set -e
exit "$status"
