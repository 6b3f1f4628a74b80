#!/usr/bin/env bash
# Measures the gateway and writes BENCHMARKS.md. Usage: scripts/bench.sh PATH/TO/FCGIApp
# (`make bench` passes the release build). Starts its own ComfyUI emulators and `FCGIApp run`
# (the supervisor that renders nginx and starts the app and nginx, as `make run` and the
# end-to-end tests do) on free ports in a temporary directory, runs Tests/Bench/bench.py,
# stops everything.
# Knobs (environment): BENCH_REQUESTS (300), BENCH_SKETCHES (200), BENCH_SESSIONS (1000,10000),
# BENCH_DIRECT_SESSIONS (5000; 0 = skip), BENCH_JOBS (128), BENCH_JOB_CONCURRENCY (32),
# BENCH_WRK_DURATION (10s), BENCH_JOB_SUBMITS (2000), BENCH_PREFILL (10000,1000 finished,queued),
# BENCH_IMAGE_SIZE (1024), BENCH_IMAGE_REQUESTS (20), BENCH_OUTPUT (BENCHMARKS.md at the repository root).
set -euo pipefail
app_binary=$(cd "$(dirname "${1:?usage: bench.sh PATH/TO/FCGIApp}")" && pwd)/$(basename "$1")
[ -x "$app_binary" ] || { echo "bench.sh: $app_binary is not an executable" >&2; exit 2; }
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

REQUESTS=${BENCH_REQUESTS:-300}
SKETCHES=${BENCH_SKETCHES:-200}
SESSIONS=${BENCH_SESSIONS:-1000,10000}
DIRECT_SESSIONS=${BENCH_DIRECT_SESSIONS:-5000}
JOBS=${BENCH_JOBS:-128}
JOB_CONCURRENCY=${BENCH_JOB_CONCURRENCY:-32}
WRK_DURATION=${BENCH_WRK_DURATION:-10s}
JOB_SUBMITS=${BENCH_JOB_SUBMITS:-2000}
PREFILL=${BENCH_PREFILL:-10000,1000}
OUTPUT=${BENCH_OUTPUT:-$here/BENCHMARKS.md}
IMAGE_SIZE=${BENCH_IMAGE_SIZE:-1024}
IMAGE_REQUESTS=${BENCH_IMAGE_REQUESTS:-20}
FCGI_THREADS=${FCGI_THREADS:-256}
STEPS=2          # KSampler steps of a multi-backend job ...
STEP_MS=100      # ... times this = the emulator's time per job
HOLD=3           # seconds idle sessions are held before reading RSS

# Record how we were started, for BENCHMARKS.md.
if [ -n "${MAKELEVEL:-}" ]; then command_line="make bench"; else command_line="scripts/bench.sh ${1}"; fi

# Thousands of idle WebSockets need as many descriptors (client, nginx, app): use the hard limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

work=$(mktemp -d "${TMPDIR:-/tmp}/gw-bench.XXXXXX")
results="$work/results"
mkdir -p "$results"
bench=(python3 "$here/Tests/Bench/bench.py")
client_pid=""
emulator_pids=()
supervisor_pid=""
app_pid=""
nginx_pid=""
anchor_pids=()

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

stop_gateway() {
  # The supervisor drains the app and stops nginx.
  if [ -n "$supervisor_pid" ]; then kill -TERM "$supervisor_pid" 2>/dev/null || true; wait "$supervisor_pid" 2>/dev/null || true; fi
  supervisor_pid=""; nginx_pid=""; app_pid=""
}

cleanup() {
  local status=$?
  if [ -n "$client_pid" ]; then kill -TERM "$client_pid" 2>/dev/null || true; wait "$client_pid" 2>/dev/null || true; fi
  [ "$status" -eq 0 ] || check_emulators || true
  stop_gateway
  stop_anchor
  for pid in "${emulator_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${emulator_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$status" -ne 0 ]; then
    log "failed (status $status); logs kept in $work"
  else
    rm -rf "$work"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE

# run_client ARGS...: one bench.py step, in the background so that a signal to this script is
# acted on at once (bash runs traps only between foreground commands, but does interrupt `wait`).
run_client() {
  "${bench[@]}" "$@" &
  client_pid=$!
  local status=0
  wait "$client_pid" || status=$?
  client_pid=""
  return "$status"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_emulator NAME: starts one emulator, waits for its READY line; sets emulator_url.
start_emulator() {
  local dir="$work/$1"
  mkdir -p "$dir"
  python3 "$here/Tests/Emulator/comfyui_emulator.py" --port 0 --data-dir "$dir/comfy" >"$dir/ready" 2>"$dir/emulator.log" &
  emulator_pids+=($!)
  for _ in $(seq 1 200); do
    if grep -q '^READY ' "$dir/ready" 2>/dev/null; then
      emulator_url="http://127.0.0.1:$(sed -n 's/^READY //p' "$dir/ready")"
      return 0
    fi
    kill -0 "$!" 2>/dev/null || break
    sleep 0.05
  done
  echo "bench.sh: emulator $1 did not start:" >&2; cat "$dir/emulator.log" >&2; return 1
}

# Every emulator still running? (Says which one died, and how, instead of a client traceback.)
check_emulators() {
  local i=0 status
  for pid in "${emulator_pids[@]}"; do
    i=$((i + 1))
    if ! kill -0 "$pid" 2>/dev/null; then
      status=0; wait "$pid" 2>/dev/null || status=$?
      echo "bench.sh: emulator$i (pid $pid) is gone, exit status $status$( [ "$status" -gt 128 ] && echo " = killed by signal $((status - 128)), not by bench.sh")" >&2
      return 1
    fi
  done
}

emulator_config() {  # emulator_config URL JSON
  curl -fsS -X POST "$1/emulator/config" -d "$2" >/dev/null
}

# start_gateway NAME BACKENDS [INPUT_DIR]: FCGIApp + nginx on a free port; sets gateway_url and
# paths. INPUT_DIR, when given, is the backends' input folder (COMFYUI_INPUT_DIR).
start_gateway() {
  local dir="$work/$1"
  run_dir="$dir/run"; output_dir="$dir/output"; workflow_dir="$dir/workflow"
  mkdir -p "$run_dir" "$output_dir" "$workflow_dir"
  "${bench[@]}" style "$workflow_dir/realistic.json"
  local port; port=$(free_port)
  # The app runs in its own directory: a developer's ./.env (read by the app) must not leak in.
  # `exec`, so that $! is the supervisor's own pid.
  (
    cd "$dir"
    unset TLS_CERT TLS_KEY STORAGE ENABLE_OSS SERVER_BASE_URL COMFYUI_INPUT_DIR   # plain HTTP, local images, relative URLs, uploads
    [ -z "${3:-}" ] || export COMFYUI_INPUT_DIR=$3
    export PORT=$port RUN_DIR=$run_dir OUTPUT_DIR=$output_dir WORKFLOW_DIR=$workflow_dir COMFYUI_SERVER=$2 \
      FCGI_THREADS=$FCGI_THREADS LOG_LEVEL=warning STATIC_DIR=$here/static NGINX_TEMPLATE_DIR=$here/nginx \
      DRAWING_RATE=0 DRAWING_CONNECTIONS=0 MAX_SESSIONS_PER_CLIENT=0 \
      INPUT_URL_ALLOW_PRIVATE=${INPUT_URL_ALLOW_PRIVATE:-false}   # one client address opening thousands of sessions; loopback image URLs in 7
    exec "$app_binary" run
  ) >"$dir/app.log" 2>&1 &
  supervisor_pid=$!
  for _ in $(seq 1 400); do
    [ -s "$run_dir/nginx.pid" ] && [ -s "$run_dir/app.pid" ] && break
    kill -0 "$supervisor_pid" 2>/dev/null || { echo "bench.sh: FCGIApp run exited:" >&2; cat "$dir/app.log" >&2; return 1; }
    sleep 0.05
  done
  app_pid=$(cat "$run_dir/app.pid"); nginx_pid=$(cat "$run_dir/nginx.pid")
  gateway_url="http://127.0.0.1:$port"
  for _ in $(seq 1 200); do
    if curl -fsS -o /dev/null "$gateway_url/healthz" 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "bench.sh: the gateway never became healthy:" >&2; cat "$dir/app.log" "$run_dir/logs/error.log" >&2; return 1
}

# start_anchor: the smallest libfcgi responder (Tests/Bench/fcgi_anchor.c) behind an nginx
# rendered by the same `FCGIApp render-nginx` as the gateway's; sets anchor_url.
start_anchor() {
  local dir="$work/anchor"
  mkdir -p "$dir/run" "$dir/output"
  gcc -O2 -o "$dir/fcgi_anchor" "$here/Tests/Bench/fcgi_anchor.c" -lfcgi -lpthread
  "$dir/fcgi_anchor" "$dir/run/fcgi.sock" "$FCGI_THREADS" &
  anchor_pids+=($!)
  local port; port=$(free_port)
  (
    cd "$dir"
    unset TLS_CERT TLS_KEY
    export PORT=$port RUN_DIR=$dir/run OUTPUT_DIR=$dir/output WORKFLOW_DIR=$dir COMFYUI_SERVER=http://127.0.0.1:9 \
      STATIC_DIR=$here/static NGINX_TEMPLATE_DIR=$here/nginx
    "$app_binary" render-nginx
  ) >"$dir/render.log" 2>&1 || { cat "$dir/render.log" >&2; return 1; }
  nginx -e "$dir/run/logs/error.log" -p "$dir/run/nginx" -c "$dir/run/nginx/nginx.conf" >"$dir/nginx.log" 2>&1 &
  anchor_pids+=($!)
  anchor_url="http://127.0.0.1:$port"
  for _ in $(seq 1 200); do
    if curl -fsS -o /dev/null "$anchor_url/api/styles" 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "bench.sh: the anchor never answered" >&2; return 1
}

stop_anchor() {
  for pid in "${anchor_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  anchor_pids=()
}

cat >"$results/config.json" <<EOF
{"commit": "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')",
 "ulimit_n": "$(ulimit -n)", "fcgi_threads": $FCGI_THREADS, "log_level": "warning",
 "loadavg_start": "$(cut -d' ' -f1-3 /proc/loadavg)", "steps": $STEPS, "step_ms": $STEP_MS, "job_ms": $((STEPS * STEP_MS)), "hold": $HOLD}
EOF

# --- 1-3: one emulator doing no work, one gateway --------------------------------------------
log "starting emulators and the gateway"
start_emulator emulator1; emulator_urls=("$emulator_url")
start_emulator emulator2; emulator_urls+=("$emulator_url")
start_emulator emulator3; emulator_urls+=("$emulator_url")
start_emulator emulator4; emulator_urls+=("$emulator_url")
start_gateway gateway1 "${emulator_urls[0]}"
cp "$run_dir/nginx/nginx.conf" "$results/nginx.conf"   # the report quotes its connection limits
log "gateway on $gateway_url (app pid $app_pid, nginx pid $nginx_pid), emulator ${emulator_urls[0]}"

check_emulators
log "1. /api/generate vs direct ComfyUI client, $REQUESTS requests, concurrency 1 and 16"
run_client latency --gateway "$gateway_url" --emulator "${emulator_urls[0]}" \
  --requests "$REQUESTS" --concurrency 1,16 --app-pid "$app_pid" --nginx-pid "$nginx_pid" \
  --emulator-pid "${emulator_pids[0]}" --out "$results/latency.json"

check_emulators
log "1b. request body size: /api/generate bodies that stop at validation"
run_client parse --gateway "$gateway_url" --emulator "${emulator_urls[0]}" --out "$results/parse.json"

check_emulators
log "2. wrk: /api/styles and /healthz against the libfcgi anchor, and a static image"
image=$(find "$output_dir" -maxdepth 1 -name '*.png' ! -name '.*' -print -quit)
[ -n "$image" ] || { echo "bench.sh: no stored image to serve" >&2; exit 1; }
start_anchor
run_client wrk --gateway "$gateway_url" --anchor "$anchor_url" --static-path "/output_images/$(basename "$image")" \
  --duration "$WRK_DURATION" --out "$results/wrk.json"
stop_anchor

check_emulators
log "3a. sketch_update -> POST /prompt, $SKETCHES updates"
run_client sketch --gateway "$gateway_url" --emulator "${emulator_urls[0]}" \
  --updates "$SKETCHES" --out "$results/sketch.json"

check_emulators
log "3b. idle session WebSockets: $SESSIONS through nginx, $DIRECT_SESSIONS on the app's socket"
run_client sessions --gateway "$gateway_url" --app-pid "$app_pid" --nginx-pid "$nginx_pid" \
  --nginx-error-log "$run_dir/logs/error.log" --counts "$SESSIONS" \
  --direct-socket "$run_dir/ws.sock" --direct-count "$DIRECT_SESSIONS" --hold "$HOLD" \
  --out "$results/sessions.json"
stop_gateway

check_emulators
log "3c. sketch_update -> POST /prompt with COMFYUI_INPUT_DIR (the gateway beside ComfyUI), $SKETCHES updates"
start_gateway gateway-shared "${emulator_urls[0]}" "$work/emulator1/comfy/input"
uploads() { curl -fsS "${emulator_urls[0]}/emulator/stats" | python3 -c 'import json, sys; print(json.load(sys.stdin)["uploads"])'; }
uploads_before=$(uploads)
run_client sketch --gateway "$gateway_url" --emulator "${emulator_urls[0]}" \
  --updates "$SKETCHES" --out "$results/sketch-shared.json"
[ "$(uploads)" = "$uploads_before" ] \
  || { echo "bench.sh: the gateway with COMFYUI_INPUT_DIR uploaded sketches:" >&2; cat "$work/gateway-shared/app.log" >&2; exit 1; }
stop_gateway

# --- 4: 1, 2, 4 backends, each taking STEPS x STEP_MS per job --------------------------------
for count in 1 2 4; do
  backends=("${emulator_urls[@]:0:$count}")
  for url in "${backends[@]}"; do
    curl -fsS -X POST "$url/emulator/restart" >/dev/null   # fresh queue, history, caches, records
    emulator_config "$url" "{\"node_delay_ms\": 0, \"sampler_step_ms\": $STEP_MS}"
  done
  start_gateway "multi$count" "$(IFS=,; echo "${backends[*]}")"
  # Wait until every backend's WebSocket is up (healthz lists each one's state).
  for _ in $(seq 1 100); do
    [ "$( (curl -fsS "$gateway_url/healthz" || true) | grep -o '"state":"up"' | wc -l)" -ge "$count" ] && break
    sleep 0.1
  done
  check_emulators
  log "4. $count backend(s): $JOBS jobs, $JOB_CONCURRENCY concurrent"
  emulator_args=()
  for url in "${backends[@]}"; do emulator_args+=(--emulator "$url"); done
  run_client multi --gateway "$gateway_url" "${emulator_args[@]}" --jobs "$JOBS" \
    --concurrency "$JOB_CONCURRENCY" --steps "$STEPS" --out "$results/multi-$count.json"
  stop_gateway
done

# --- 5-6: the job store ----------------------------------------------------------------------
curl -fsS -X POST "${emulator_urls[0]}/emulator/restart" >/dev/null
emulator_config "${emulator_urls[0]}" '{"hang": true}'   # accepted jobs stay queued: the store's side alone
start_gateway jobs "${emulator_urls[0]}"
check_emulators
log "5. POST /api/jobs: $REQUESTS one at a time, $JOB_SUBMITS 16 at a time"
run_client jobs --gateway "$gateway_url" --requests "$REQUESTS" --burst "$JOB_SUBMITS" --concurrency 16 --out "$results/jobs.json"
stop_gateway
# A gateway of its own: once a key exists, its STATE_DIR needs keys for good.
start_gateway keys "${emulator_urls[0]}"
log "5b. GET /api/jobs/{id} before any API key exists, then with one"
job_body=$(python3 -c 'import json, sys; sys.path.insert(0, sys.argv[1]); import bench; print(json.dumps({"workflow_data": bench.txt2img(7), "output_node_id": "9"}))' "$here/Tests/Bench")
open_job=$(curl -fsS "$gateway_url/api/jobs" -H 'Content-Type: application/json' -d "$job_body" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
run_client keyed --gateway "$gateway_url" --job "$open_job" --duration "$WRK_DURATION" --out "$results/keyed-open.json"
secret=$(cd "$work/keys" && STATE_DIR="$work/keys/state" "$app_binary" keys create bench | tail -1)
sleep 1.2   # the gateway sees a new key within a second
keyed_job=$(curl -fsS "$gateway_url/api/jobs" -H 'Content-Type: application/json' -H "Authorization: Bearer $secret" -d "$job_body" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
run_client keyed --gateway "$gateway_url" --job "$keyed_job" --secret "$secret" --duration "$WRK_DURATION" --out "$results/keyed-key.json"
stop_gateway
log "6. restart with ${PREFILL%,*} finished and ${PREFILL#*,} queued jobs in the database"
run_client prefill --database "$work/jobs/state/jobs.sqlite" --finished "${PREFILL%,*}" --queued "${PREFILL#*,}" --out "$results/prefill.json"
started=$(date +%s.%N)
start_gateway jobs "${emulator_urls[0]}"
serving=$(date +%s.%N)
python3 - "$results/prefill.json" "$results/restart.json" "$started" "$serving" "$gateway_url" <<'PY'
import json, sys, urllib.request
prefill = json.load(open(sys.argv[1]))
def status(job):
    with urllib.request.urlopen(f"{sys.argv[5]}/api/jobs/{job}") as r:
        return json.load(r)["status"]
prefill.update(seconds=float(sys.argv[4]) - float(sys.argv[3]), finished_status=status(prefill["finished_id"]),
               queued_status=status(prefill["queued_id"]) if prefill["queued_id"] else None)
json.dump(prefill, open(sys.argv[2], "w"))
PY
stop_gateway

# --- 7: images: output conversion, input URLs --------------------------------------------------
curl -fsS -X POST "${emulator_urls[0]}/emulator/restart" >/dev/null
emulator_config "${emulator_urls[0]}" "{\"hang\": false, \"sampler_step_ms\": 0, \"image_size\": $IMAGE_SIZE}"
mkdir -p "$work/images"
python3 -u -m http.server 0 --bind 127.0.0.1 --directory "$work/images" >"$work/images.log" 2>&1 &
image_server_pid=$!
anchor_pids+=("$image_server_pid")   # stopped with the anchor's processes
for _ in $(seq 1 100); do
  image_port=$(sed -n 's/.*port \([0-9]*\).*/\1/p' "$work/images.log" | head -1)
  [ -n "$image_port" ] && break
  sleep 0.05
done
INPUT_URL_ALLOW_PRIVATE=true start_gateway images "${emulator_urls[0]}"
check_emulators
log "7. output_format png/webp/jpeg at ${IMAGE_SIZE}px, and input images by URL vs multipart"
run_client images --gateway "$gateway_url" --emulator "${emulator_urls[0]}" --image-server "http://127.0.0.1:$image_port" --image-dir "$work/images" \
  --image-size "$IMAGE_SIZE" --requests "$IMAGE_REQUESTS" --out "$results/images.json"
stop_gateway
stop_anchor

check_emulators
run_client report --results "$results" --output "$OUTPUT" --command "$command_line" \
  ${BENCH_NOTES:+--notes "$BENCH_NOTES"}
log "done: $OUTPUT"
