#!/usr/bin/env bash
# Make the TimescaleDB extension available to the local PostgreSQL cluster and preload it.
#
# Order of preference, detected rather than assumed:
#   1. already installed (extension control file present)  -> nothing to build
#   2. the OS packages postgresql-<major>-timescaledb        -> apt-get install it
#   3. otherwise (Debian bookworm has no package)            -> fetch Debian trixie's source
#      package through a throw-away sources list (its own Dir::State::Lists, so the
#      machine's apt state is untouched), build the Apache-2 edition with cmake, install.
# Finally adds shared_preload_libraries = 'timescaledb' and restarts the cluster if needed.
# Idempotent: a second run changes nothing.
set -euo pipefail

log() { printf 'install-timescaledb: %s\n' "$*" >&2; }

export DEBIAN_FRONTEND=noninteractive
pg_major=${PG_MAJOR:-$(ls /etc/postgresql | sort -V | tail -n 1)}
[ -n "$pg_major" ] || { log "no PostgreSQL cluster under /etc/postgresql"; exit 1; }
conf_dir=/etc/postgresql/$pg_major/main
ext_control=/usr/share/postgresql/$pg_major/extension/timescaledb.control

apt_updated=0
apt_update_once() {
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
}

if [ -f "$ext_control" ]; then
  log "TimescaleDB already available for PostgreSQL $pg_major"
else
  apt_update_once
  if apt-cache show "postgresql-$pg_major-timescaledb" >/dev/null 2>&1; then
    log "installing the OS package postgresql-$pg_major-timescaledb"
    apt-get install -y -qq "postgresql-$pg_major-timescaledb"
  else
    log "no OS package: building from Debian trixie's source package"
    apt-get install -y -qq --no-install-recommends \
      "postgresql-server-dev-$pg_major" cmake dpkg-dev build-essential >/dev/null
    work=$(mktemp -d /tmp/tungku-tsdb.XXXXXX)
    mkdir -p "$work/lists/partial"
    # Reuse the mirror this machine is already configured with; only the suite differs.
    mirror=$(grep -h -m1 -E '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n 1 || true)
    if [ -z "$mirror" ]; then
      mirror=$(grep -h -m1 -E '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -n 1)
    fi
    [ -n "$mirror" ] || { log "cannot find the configured Debian mirror"; exit 1; }
    printf 'deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s trixie main\n' "$mirror" >"$work/sources.list"
    apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
              -o "Dir::State::Lists=$work/lists" -o "APT::Sandbox::User=root")
    apt-get "${apt_opts[@]}" update -qq
    (cd "$work" && apt-get "${apt_opts[@]}" source -qq timescaledb >/dev/null)
    src=$(find "$work" -maxdepth 1 -type d -name 'timescaledb-*' | head -n 1)
    [ -n "$src" ] || { log "apt-get source produced no source tree"; exit 1; }
    log "building $(basename "$src")"
    cmake -S "$src" -B "$src/build" -DAPACHE_ONLY=1 -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF \
      -DWARNINGS_AS_ERRORS=OFF -DUSE_OPENSSL=0 -DCMAKE_BUILD_TYPE=Release \
      -DPG_CONFIG="/usr/lib/postgresql/$pg_major/bin/pg_config" >"$work/cmake.log" 2>&1 \
      || { tail -n 40 "$work/cmake.log"; exit 1; }
    make -C "$src/build" -j"$(nproc)" >"$work/make.log" 2>&1 || { tail -n 40 "$work/make.log"; exit 1; }
    make -C "$src/build" install >"$work/install.log" 2>&1 || { tail -n 40 "$work/install.log"; exit 1; }
    rm -rf "$work"
  fi
fi

# Preload the library and size PostgreSQL for a write-heavy ingest; a restart is needed
# only when these settings change.
# - track_commit_timestamp: when each transaction committed. The benchmark reads it for
#   publish -> commit latency, and it tells an inspector when a reading became durable.
# - shared_buffers 1GB (default 128MB): during a 2M-reading ingest, backends were evicting
#   dirty buffers themselves (pg_stat_bgwriter.buffers_backend 1.9M).
# - max_wal_size 4GB, checkpoint_timeout 15min (defaults 1GB, 5min): 96 of 99 checkpoints
#   were forced by WAL volume, each followed by full-page images in the WAL.
# - wal_compression: smaller full-page images.
restart=0
want=$(cat <<'CONF'
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
track_commit_timestamp = on
shared_buffers = 1GB
wal_buffers = 16MB
max_wal_size = 4GB
checkpoint_timeout = 15min
wal_compression = on
CONF
)
mkdir -p "$conf_dir/conf.d"
if [ "$(cat "$conf_dir/conf.d/tungku-timescaledb.conf" 2>/dev/null)" != "$want" ]; then
  printf '%s\n' "$want" >"$conf_dir/conf.d/tungku-timescaledb.conf"
  restart=1
fi
if ! grep -qE "^\s*include_dir\s*=\s*'conf.d'" "$conf_dir/postgresql.conf"; then
  echo "include_dir = 'conf.d'" >>"$conf_dir/postgresql.conf"
  restart=1
fi
if [ "$restart" = 1 ]; then
  log "restarting PostgreSQL $pg_major with timescaledb preloaded"
  pg_ctlcluster --skip-systemctl-redirect "$pg_major" main restart
fi
if ! pg_lsclusters -h | awk -v v="$pg_major" '$1==v && $2=="main" {print $4}' | grep -q online; then
  pg_ctlcluster --skip-systemctl-redirect "$pg_major" main start
fi
log "ok: shared_preload_libraries = $(runuser -u postgres -- psql -Atc 'SHOW shared_preload_libraries')"
