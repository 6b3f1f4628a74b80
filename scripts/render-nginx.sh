#!/usr/bin/env bash
# Renders nginx/ (templates) into "$RUN_DIR/nginx/" for this run's port and paths, then checks it
# with `nginx -t`. Reads: RUN_DIR, PORT, FCGI_SOCKET, WS_SOCKET, OUTPUT_DIR, STATIC_DIR,
# MAX_BODY (nginx size, e.g. 32m), GENERATE_TIMEOUT (seconds), TLS_CERT, TLS_KEY,
# METRICS_ALLOW (addresses or CIDRs that may read /metrics; default 127.0.0.1 ::1).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
: "${RUN_DIR:?}" "${PORT:?}" "${FCGI_SOCKET:?}" "${WS_SOCKET:?}" "${OUTPUT_DIR:?}"
STATIC_DIR=${STATIC_DIR:-$here/static}
MAX_BODY=${MAX_BODY:-32m}
GENERATE_TIMEOUT=${GENERATE_TIMEOUT:-600}

listen="$PORT"
tls=""
if [ -n "${TLS_CERT:-}" ] || [ -n "${TLS_KEY:-}" ]; then
  [ -r "${TLS_CERT:-}" ] || { echo "invalid configuration: TLS_CERT: cannot read \"${TLS_CERT:-}\"" >&2; exit 2; }
  [ -r "${TLS_KEY:-}" ] || { echo "invalid configuration: TLS_KEY: cannot read \"${TLS_KEY:-}\"" >&2; exit 2; }
  listen="$PORT ssl"
  tls="ssl_certificate $TLS_CERT; ssl_certificate_key $TLS_KEY; ssl_protocols TLSv1.2 TLSv1.3; http2 on;"
  # nginx 1.22 (Debian 12) has no `http2 on;`: it is a listen parameter there.
  if nginx -v 2>&1 | grep -q 'nginx/1\.2[0-4]\.'; then
    listen="$PORT ssl http2"
    tls="ssl_certificate $TLS_CERT; ssl_certificate_key $TLS_KEY; ssl_protocols TLSv1.2 TLSv1.3;"
  fi
fi
metrics_allow=""
for address in ${METRICS_ALLOW:-127.0.0.1 ::1}; do
  address=${address%,}
  [[ "$address" =~ ^[0-9A-Fa-f:.]+(/[0-9]{1,3})?$ ]] || { echo "invalid configuration: METRICS_ALLOW: \"$address\" is not an address or CIDR" >&2; exit 2; }
  metrics_allow+="allow $address; "
done
user_directive=""
if [ "$(id -u)" = 0 ]; then user_directive="user $(id -un) $(id -gn);"; fi
# A generate call waits up to GENERATE_TIMEOUT; nginx must wait a little longer than the app.
seconds() {
  local value=$1 unit=1
  case "$value" in *d) unit=86400;; *h) unit=3600;; *m) unit=60;; esac
  value=${value%[smhd]}
  echo $(( value * unit ))
}
read_timeout="$(( $(seconds "$GENERATE_TIMEOUT") + 30 ))s"

out="$RUN_DIR/nginx"
mkdir -p "$out/conf.d" "$out/snippets" "$RUN_DIR/logs" "$RUN_DIR/tmp"
escape() { printf '%s' "$1" | sed -e 's/[\/&|]/\\&/g'; }
for template in nginx.conf conf.d/gateway.conf snippets/fastcgi-gateway.conf snippets/websocket-proxy.conf; do
  sed -e "s|@RUN_DIR@|$(escape "$RUN_DIR")|g" \
      -e "s|@USER_DIRECTIVE@|$(escape "$user_directive")|g" \
      -e "s|@LISTEN@|$(escape "$listen")|g" \
      -e "s|@TLS@|$(escape "$tls")|g" \
      -e "s|@METRICS_ALLOW@|$(escape "$metrics_allow")|g" \
      -e "s|@FCGI_SOCKET@|$(escape "$FCGI_SOCKET")|g" \
      -e "s|@WS_SOCKET@|$(escape "$WS_SOCKET")|g" \
      -e "s|@OUTPUT_DIR@|$(escape "$OUTPUT_DIR")|g" \
      -e "s|@STATIC_DIR@|$(escape "$STATIC_DIR")|g" \
      -e "s|@MAX_BODY@|$(escape "$MAX_BODY")|g" \
      -e "s|@FASTCGI_READ_TIMEOUT@|$(escape "$read_timeout")|g" \
      "$here/nginx/$template" > "$out/$template"
done
nginx -t -q -e "$RUN_DIR/logs/error.log" -p "$out" -c "$out/nginx.conf"
