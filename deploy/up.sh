#!/usr/bin/env bash
# The main job: set up what is missing, apply the schema, load the default fleet's registry,
# start the ingest service, the API and a simulated plant (two sites, 9 gateways, 424 sensors,
# real time) with an incident scenario every few minutes on a third site, and show live
# progress until Ctrl-C (or --duration-s S), then stop them.
# The first run creates the API users: admin, and the demo logins operator and inspector
# (passwords in var/*-password, mode 0600).
# Logs: var/log/ingest.log (JSON lines), var/log/api.log, var/log/simulator.log.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=0
while [ $# -gt 0 ]; do
  case $1 in
    --duration-s) duration=$2; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; echo "usage: deploy/up.sh [--duration-s S]"; exit 0 ;;
    *) echo "up.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

bash deploy/setup.sh
export TUNGKU_MQTT_PORT=${TUNGKU_MQTT_PORT:-1884}
tungku=.venv/bin/tungku
mkdir -p var/log var/registry
$tungku db migrate
$tungku fleet export --out var/registry >/dev/null
$tungku fleet export --fleet simulator/fleets/scenario.toml --out var/registry >/dev/null
$tungku registry load var/registry/*.toml
sites=$(ls var/registry | sed 's/\.toml$//')
if [ ! -e var/facilities-created ]; then
  # A facility record to start from, once; an admin completes it through the API.
  for s in $sites; do
    $tungku facility identity --site "$s" --company "PT Demo Smelter ($s)" --estate IMIP >/dev/null
  done
  touch var/facilities-created
fi
for who in admin:admin operator:operator inspector:inspector; do
  user=${who%%:*}; role=${who#*:}
  if [ ! -s "var/$user-password" ]; then
    # Kept only once the user exists, so the file never holds a password nobody has.
    (umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(12))' >"var/$user-password.new")
    # shellcheck disable=SC2046
    $tungku user create "$user" --role "$role" $(for s in $sites; do echo --site "$s"; done) \
      <"var/$user-password.new"
    mv "var/$user-password.new" "var/$user-password"
  fi
done

pids=()
stop() {
  trap - INT TERM EXIT
  echo "stopping simulator and ingest ..." >&2
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop INT TERM EXIT

$tungku ingest run >>var/log/ingest.log 2>&1 &
pids+=($!)
$tungku api >>var/log/api.log 2>&1 &
pids+=($!)
$tungku simulate --realtime --port "$TUNGKU_MQTT_PORT" --spool-dir var/simulator-spool \
  >>var/log/simulator.log 2>&1 &
pids=($! "${pids[@]}")  # the simulator stops first, so its last readings are ingested
# An incident every few minutes on the scenario site, each played fast (hours of plant time
# ending now) with its hot-work permits recorded.
(
  child=
  trap '[ -n "$child" ] && kill -TERM "$child" 2>/dev/null; exit 0' TERM
  while true; do
    for sc in hot-work pump-trip tap-runout positive-pressure oxygen-enrichment slag-quench sensor-faults; do
      echo "$(date -u +%FT%TZ) scenario $sc" >>var/log/scenarios.log
      $tungku simulate --scenario "$sc" --port "$TUNGKU_MQTT_PORT" >>var/log/scenarios.log 2>&1 &
      child=$!; wait "$child" || true
      sleep "${TUNGKU_SCENARIO_EVERY_S:-300}" & child=$!; wait "$child" || true
    done
  done
) &
pids=($! "${pids[@]}")

cat <<INFO

Tungku is running: broker 127.0.0.1:$TUNGKU_MQTT_PORT, database ${TUNGKU_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/tungku} (schema tungku),
metrics http://127.0.0.1:9108/metrics. Logs in var/log/. Ctrl-C stops it.
Control room: http://${TUNGKU_API_HOST:-127.0.0.1}:${TUNGKU_API_PORT:-8600}/  (API docs: /api/v1/docs)
  demo logins: operator / $(cat var/operator-password)   inspector / $(cat var/inspector-password)
  admin: its password is in var/admin-password
An incident scenario plays every ${TUNGKU_SCENARIO_EVERY_S:-300} s on site scenario-site (var/log/scenarios.log).
Try: .venv/bin/tungku rejects    (messages the service refused, and why)

INFO
sleep 1  # let the service open its metrics endpoint
if [ "$duration" != 0 ]; then
  $tungku monitor --duration-s "$duration"
else
  $tungku monitor
fi
