#!/usr/bin/env bash
# `make test`: start the local services the tests drive for real when they are not running.
# PostgreSQL on 127.0.0.1:5432 (the Debian cluster), Redis on 127.0.0.1:6379 and Mosquitto on
# 127.0.0.1:1883. A service that stays down is named and the script fails, so CI stops here
# rather than in the tests that need it (they fail under CI=true).
set -euo pipefail

answers() {  # host port: whether something accepts a TCP connection there
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

ensure() {  # name port hint start-command...
  local name=$1 port=$2 hint=$3
  shift 3
  answers 127.0.0.1 "$port" && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "services.sh: $name is not running on 127.0.0.1:$port; start it (as root: $hint)" >&2
    return 1
  fi
  echo "services.sh: starting $name"
  "$@" >/dev/null
  for _ in $(seq 1 100); do  # up to 10 s for the server to listen
    answers 127.0.0.1 "$port" && return 0
    sleep 0.1
  done
  echo "services.sh: $name did not start listening on 127.0.0.1:$port" >&2
  return 1
}

start_postgres() {
  if command -v pg_ctlcluster >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q '^15 main'; then
    pg_ctlcluster 15 main start
  else
    service postgresql start
  fi
}

ensure PostgreSQL 5432 "pg_ctlcluster 15 main start" start_postgres

start_redis() {
  if command -v redis-server >/dev/null; then
    redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save "" --appendonly no
  else
    service redis-server start
  fi
}

ensure Redis 6379 "redis-server --daemonize yes" start_redis

# the MQTT broker of the XiaoZhi MQTT + UDP tests (Debian's config: 127.0.0.1:1883)
start_mosquitto() {
  mkdir -p /run/mosquitto && chown mosquitto: /run/mosquitto 2>/dev/null || true
  mosquitto -d -c /etc/mosquitto/mosquitto.conf
}

ensure Mosquitto 1883 "mosquitto -d -c /etc/mosquitto/mosquitto.conf" start_mosquitto
