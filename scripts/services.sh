#!/usr/bin/env bash
# Starts the services the tests need: a throwaway PostgreSQL cluster for the billing and fleet
# tests, and a throwaway Mosquitto broker for the fleet tests (start_mosquitto below).
#
# Installs Debian's postgresql where no server is found (apt-get update once, then
# apt-get install -y --no-install-recommends postgresql), makes a cluster in .cache/pg/data
# (trust auth, listening on 127.0.0.1 only, on a free port), starts it (or keeps the one
# already running there), creates the database `cabinet_test` and writes its URL to
# .cache/pg.url, which tests/billing/conftest.py reads (CABINET_TEST_PG_URL overrides).
# Run as root, the server runs as the `postgres` user. `scripts/services.sh stop` stops it.
#
# Where no server can be had (no root for apt, no postgres user), it says why and exits 0
# without writing .cache/pg.url: the PostgreSQL tests then skip, except in CI (CI=true),
# where this script fails instead.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PG_DIR="$ROOT/.cache/pg"
URL_FILE="$ROOT/.cache/pg.url"
DB=cabinet_test
USER_NAME=cabinet

fail() {
  echo "services.sh: $*" >&2
  if [ "${CI:-}" = "true" ]; then exit 1; fi
  echo "services.sh: PostgreSQL tests will skip (they fail in CI)" >&2
  rm -f "$URL_FILE"
  exit 0
}

pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$dir" ] && [ -x "$dir/pg_ctl" ] && echo "$dir"
}

as_pg() {  # run a PostgreSQL program as the cluster's owner
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [ "${1:-}" = "stop" ]; then
  if [ -f "$ROOT/.cache/mqtt/pid" ]; then
    kill "$(cat "$ROOT/.cache/mqtt/pid")" 2>/dev/null || true
    rm -f "$ROOT/.cache/mqtt/pid" "$ROOT/.cache/mqtt.url"
  fi
  BIN=$(pg_bin) || exit 0
  [ -f "$PG_DIR/data/postmaster.pid" ] && as_pg "$BIN/pg_ctl" -D "$PG_DIR/data" -m fast stop
  rm -f "$URL_FILE"
  exit 0
fi

# The browser tests (tests/browser, docs/kiosk.md) drive Debian's Chromium at /usr/bin/chromium,
# with a font that has Japanese and Chinese glyphs; install them where missing (root only; in
# CI without them the browser tests fail and say so). Playwright's own download is never used.
if [ ! -x /usr/bin/chromium ] || ! fc-list :lang=ja 2>/dev/null | grep -q .; then
  if [ "$(id -u)" = 0 ]; then
    echo "services.sh: installing Debian's chromium and fonts-wqy-microhei (once)"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends \
        chromium fonts-wqy-microhei >/dev/null; } || echo "services.sh: apt-get install chromium failed" >&2
    APT_UPDATED=1
  else
    echo "services.sh: /usr/bin/chromium or a CJK font is missing and not root to install them" >&2
  fi
fi

# The fleet tests (tests/fleet, docs/fleet.md) need an MQTT broker: Debian's mosquitto, on
# 127.0.0.1 on a free port, persistence in .cache/mqtt, its URL in .cache/mqtt.url. Where none
# can be had the fleet tests skip (fail in CI=true, and so does this script).
start_mosquitto() {
  local dir="$ROOT/.cache/mqtt" url_file="$ROOT/.cache/mqtt.url" bin=/usr/sbin/mosquitto port
  mqtt_fail() {
    echo "services.sh: $*" >&2
    rm -f "$url_file"
    if [ "${CI:-}" = "true" ]; then exit 1; fi
    echo "services.sh: the fleet tests will skip (they fail in CI)" >&2
  }
  if [ ! -x "$bin" ]; then
    [ "$(id -u)" = 0 ] || { mqtt_fail "no mosquitto and not root to install it (apt-get install mosquitto)"; return 0; }
    echo "services.sh: installing Debian's mosquitto (once)"
    export DEBIAN_FRONTEND=noninteractive
    { [ -n "${APT_UPDATED:-}" ] || apt-get update -q >/dev/null; } \
      && apt-get install -y -q --no-install-recommends mosquitto >/dev/null \
      || { mqtt_fail "apt-get install mosquitto failed"; return 0; }
    APT_UPDATED=1
  fi
  mkdir -p "$dir"
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null && [ -f "$dir/port" ]; then
    port=$(cat "$dir/port")
  else
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    # Unlimited queues: a persistent session's backlog (a cabinet back from an hour offline, a
    # back-office slot being restarted) must never be dropped by the broker. The database is
    # saved every minute and at every clean stop (saving it every second costs a second a
    # save once it holds a benchmark's backlog).
    cat >"$dir/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence true
persistence_location $dir/
autosave_interval 60
max_queued_messages 0
max_inflight_messages 0
user $(id -un)
log_dest file $dir/mosquitto.log
pid_file $dir/pid
CONF
    "$bin" -c "$dir/mosquitto.conf" -d || { mqtt_fail "mosquitto did not start: see $dir/mosquitto.log"; return 0; }
    for _ in $(seq 100); do
      python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
      sleep 0.05
    done
    [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null \
      || { mqtt_fail "mosquitto exited: see $dir/mosquitto.log"; return 0; }
    echo "$port" >"$dir/port"
  fi
  echo "mqtt://127.0.0.1:$port" >"$url_file"
  echo "services.sh: mosquitto on 127.0.0.1:$port ($url_file)"
}

start_mosquitto

if [ -n "${CABINET_TEST_PG_URL:-}" ]; then
  echo "services.sh: using CABINET_TEST_PG_URL"
  exit 0
fi

BIN=$(pg_bin || true)
if [ -z "$BIN" ]; then
  [ "$(id -u)" = 0 ] || fail "no PostgreSQL server installed and not root to install it (apt-get install postgresql)"
  echo "services.sh: installing Debian's postgresql (once)"
  export DEBIAN_FRONTEND=noninteractive
  [ -n "${APT_UPDATED:-}" ] || apt-get update -q >/dev/null || fail "apt-get update failed"
  apt-get install -y -q --no-install-recommends postgresql >/dev/null \
    || fail "apt-get install postgresql failed"
  BIN=$(pg_bin || true)
  [ -n "$BIN" ] || fail "postgresql installed but no server found under /usr/lib/postgresql"
fi
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  fail "running as root but there is no postgres user to run the server"
fi

mkdir -p "$PG_DIR"
[ "$(id -u)" = 0 ] && chown postgres "$PG_DIR"

if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
  as_pg "$BIN/initdb" -D "$PG_DIR/data" -U "$USER_NAME" --auth=trust -E UTF8 \
    --no-instructions >"$PG_DIR/initdb.log" 2>&1 || fail "initdb failed: see $PG_DIR/initdb.log"
fi

running() { as_pg "$BIN/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1; }

if running && [ -f "$PG_DIR/port" ]; then
  PORT=$(cat "$PG_DIR/port")
else
  PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_pg "$BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
    -o "-p $PORT -c listen_addresses=127.0.0.1 -k $PG_DIR -c fsync=off" start >/dev/null \
    || fail "the server did not start: see $PG_DIR/server.log"
  echo "$PORT" | as_pg tee "$PG_DIR/port" >/dev/null
fi

if ! as_pg "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U "$USER_NAME" -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1; then
  as_pg "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U "$USER_NAME" "$DB" \
    || fail "createdb $DB failed"
fi
mkdir -p "$(dirname "$URL_FILE")"
echo "postgresql+psycopg://$USER_NAME@127.0.0.1:$PORT/$DB" >"$URL_FILE"
echo "services.sh: PostgreSQL $(basename "$(dirname "$BIN")") on 127.0.0.1:$PORT, database $DB ($URL_FILE)"
