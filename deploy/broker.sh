#!/usr/bin/env bash
# Start or stop the project's own Mosquitto instance (config: deploy/mosquitto/tungku.conf.in).
# Usage: deploy/broker.sh start|stop|status   (port: TUNGKU_MQTT_PORT, default 1884)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
port=${TUNGKU_MQTT_PORT:-1884}
dir=$here/var/mosquitto
conf=$dir/tungku.conf
pidfile=$dir/mosquitto.pid

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

case ${1:-start} in
  start)
    if running; then echo "broker already running on 127.0.0.1:$port (pid $(cat "$pidfile"))"; exit 0; fi
    mkdir -p "$dir"
    sed -e "s|@PORT@|$port|" -e "s|@DATA_DIR@|$dir|" -e "s|@LOG_FILE@|$dir/mosquitto.log|" \
      "$here/deploy/mosquitto/tungku.conf.in" >"$conf"
    echo "pid_file $pidfile" >>"$conf"
    # Started as root, Mosquitto drops to the user mosquitto: it must own its data folder.
    if [ "$(id -u)" = 0 ] && id mosquitto >/dev/null 2>&1; then chown -R mosquitto: "$dir"; fi
    mosquitto -d -c "$conf"
    for _ in $(seq 50); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "broker running on 127.0.0.1:$port"; exit 0
      fi
      sleep 0.1
    done
    echo "broker did not start; see $dir/mosquitto.log" >&2; exit 1 ;;
  stop)
    if running; then kill "$(cat "$pidfile")"; echo "broker stopped"; else echo "broker not running"; fi ;;
  status)
    if running; then echo "running on 127.0.0.1:$port"; else echo "not running"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
