#!/usr/bin/env bash
# Install and start what Tungku needs on a Debian machine (bookworm or trixie), idempotently:
# Mosquitto, PostgreSQL with TimescaleDB, the Python environment (.venv), the database.
# Fast when everything is already there. Run as root (or with sudo available).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
log() { printf 'setup: %s\n' "$*" >&2; }
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive

# 1. OS packages that are missing.
need=()
command -v mosquitto >/dev/null || need+=(mosquitto)
command -v mosquitto_pub >/dev/null || need+=(mosquitto-clients)
ls /etc/postgresql/*/main >/dev/null 2>&1 || need+=(postgresql)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
# WeasyPrint (PDF reports) draws text with Pango and subsets fonts with HarfBuzz.
# Debian's Chromium drives the browser tests (Playwright with executable_path).
for lib in libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core chromium; do
  dpkg -s "$lib" >/dev/null 2>&1 || need+=("$lib")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# 2. PostgreSQL running, with TimescaleDB preloaded.
pg_major=$(ls /etc/postgresql | sort -V | tail -n 1)
pg_online() { pg_lsclusters -h | awk -v v="$pg_major" '$1==v && $2=="main" {print $4}' | grep -q online; }
pg_log_tail() { tail -n 20 "/var/log/postgresql/postgresql-$pg_major-main.log" >&2 2>/dev/null || true; }
if ! pg_online; then
  log "starting PostgreSQL $pg_major"
  # A cluster whose processes were killed can leave a postmaster.pid behind;
  # pg_ctlcluster removes a stale one itself. One retry covers a slow shutdown in progress.
  if ! $SUDO pg_ctlcluster --skip-systemctl-redirect "$pg_major" main start; then
    log "start failed; retrying in 3 s"; pg_log_tail; sleep 3
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$pg_major" main start || { pg_log_tail; exit 1; }
  fi
fi
$SUDO bash "$here/deploy/install-timescaledb.sh"
# Accepting connections, not merely started (recovery after a kill can take a few seconds).
for _ in $(seq 60); do
  pg_isready -q -p "$(pg_conftool -s "$pg_major" main show port 2>/dev/null || echo 5432)" && break
  sleep 0.5
done
pg_isready -p "$(pg_conftool -s "$pg_major" main show port 2>/dev/null || echo 5432)" >/dev/null || { log "PostgreSQL $pg_major does not accept connections"; pg_log_tail; exit 1; }

# 3. The database and the extension (created as the postgres superuser over the local socket).
db=${TUNGKU_DB_NAME:-tungku}
as_postgres() { $SUDO runuser -u postgres -- "$@"; }
if ! as_postgres psql -Atqc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
  log "creating database $db"
  as_postgres createdb "$db"
fi
as_postgres env PGOPTIONS="-c client_min_messages=warning" psql -q -d "$db" -c "CREATE EXTENSION IF NOT EXISTS timescaledb WITH SCHEMA public" 2>&1 \
  | grep -v -E '^(WARNING|HINT|DETAIL)|^$|^ ' || true

# 4. Python environment, pinned by requirements.lock.
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
stamp=.venv/.tungku-installed
if [ ! -f "$stamp" ] || [ requirements.lock -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  log "installing Python packages"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -c requirements.lock -e ".[dev]" 2>&1 | grep -v -E "^WARNING: Location" || true
  .venv/bin/python -c "import ingest, simulator, paho.mqtt, psycopg, numpy" || { log "Python install failed"; exit 1; }
  touch "$stamp"
fi

# 5. The project's broker (persistent sessions, no silent queue drops), on port 1884.
bash "$here/deploy/broker.sh" start >/dev/null
log "ready: PostgreSQL $pg_major + TimescaleDB ($(as_postgres psql -Atqc 'SHOW timescaledb.license' -d "$db")), broker 127.0.0.1:${TUNGKU_MQTT_PORT:-1884}, .venv"
