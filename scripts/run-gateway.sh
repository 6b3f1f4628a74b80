#!/usr/bin/env bash
# Starts the FastCGI app and nginx in front of it, in the foreground; Ctrl-C or SIGTERM stops both.
# Usage: scripts/run-gateway.sh PATH/TO/FCGIApp. Configuration: the environment, then ./.env.
set -euo pipefail
app_binary=${1:?usage: run-gateway.sh PATH/TO/FCGIApp}
cd "$(dirname "$0")/.."

# .env fills what the environment leaves unset (the app reads it the same way).
if [ -f .env ]; then
  while IFS= read -r line || [ -n "$line" ]; do
    line=${line#export }
    [[ "$line" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || continue
    name=${line%%=*}; value=${line#*=}
    value=${value%\"}; value=${value#\"}; value=${value%\'}; value=${value#\'}
    [ -z "${!name:-}" ] && export "$name=$value"
  done < .env
fi

export PORT=${PORT:-8000}
export RUN_DIR=${RUN_DIR:-$PWD/.run}
export FCGI_SOCKET=${FCGI_SOCKET:-$RUN_DIR/fcgi.sock}
export WS_SOCKET=${WS_SOCKET:-$RUN_DIR/ws.sock}
export OUTPUT_DIR=$(mkdir -p "${OUTPUT_DIR:-output_images}" && cd "${OUTPUT_DIR:-output_images}" && pwd)
export WORKFLOW_DIR=${WORKFLOW_DIR:-$PWD/workflow}
export COMFYUI_SERVER=${COMFYUI_SERVER:-http://127.0.0.1:8188}
mkdir -p "$RUN_DIR"
scripts/render-nginx.sh

"$app_binary" &
app=$!
for _ in $(seq 1 100); do
  [ -S "$FCGI_SOCKET" ] && break
  kill -0 "$app" 2>/dev/null || { wait "$app"; exit $?; }
  sleep 0.1
done
nginx -e "$RUN_DIR/logs/error.log" -p "$RUN_DIR/nginx" -c "$RUN_DIR/nginx/nginx.conf" &
web=$!

stop() {
  kill -QUIT "$web" 2>/dev/null || true   # nginx: finish open requests, then exit
  kill -TERM "$app" 2>/dev/null || true   # app: drain in-flight requests, then exit
  wait "$web" 2>/dev/null || true
  wait "$app" 2>/dev/null
}
trap 'stop; exit 0' INT TERM
scheme=http; [ -n "${TLS_CERT:-}" ] && scheme=https
echo "Comfy Gateway on $scheme://127.0.0.1:$PORT (ComfyUI: $COMFYUI_SERVER)"
set +e
wait -n "$app" "$web"
status=$?
stop
exit "$status"
