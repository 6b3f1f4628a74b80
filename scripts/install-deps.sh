#!/usr/bin/env bash
# Installs what is missing, and nothing else. `system`: what the gateway needs to build and run.
# `test`: also the ComfyUI emulator's Python runtime and, for the drawing page's real-browser
# test, headless Chromium + chromedriver (Debian), Selenium, PyYAML and moto (PyPI), and
# PostgreSQL for the shared job store's tests (a private cluster each). `bench`: also wrk.
set -euo pipefail
# Debian has no Swift package: say where it comes from instead of make's "No such file".
if ! command -v "${SWIFT:-swift}" >/dev/null; then
  echo "install-deps.sh: no Swift toolchain on PATH (the gateway needs Swift 6): install it from" >&2
  echo "  https://www.swift.org/install/linux/ (swiftly, or the Debian 12 tarball), then run make again" >&2
  exit 1
fi
# libpng, libwebp and libjpeg-turbo: output_format webp and jpeg.
want=(libfcgi-dev libcurl4-openssl-dev libssl-dev libpng-dev libwebp-dev libturbojpeg0-dev nginx curl)
case "${1:-system}" in
  # openssl: the tests' own TLS certificates; procps: pgrep, for the PostgreSQL clusters.
  test) want+=(python3 python3-pip python3-venv chromium chromium-driver postgresql openssl procps) ;;
  bench) want+=(python3 python3-pip wrk postgresql) ;;
esac

missing=()
for package in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
# Any nginx flavour will do (nginx, nginx-light, nginx-full, ...).
if [[ " ${missing[*]} " == *" nginx "* ]] && command -v nginx >/dev/null; then
  missing=("${missing[@]/nginx}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  if [ -n "$sudo" ] && ! command -v sudo >/dev/null; then
    echo "install-deps.sh: missing Debian packages, and no sudo to install them; as root, run:" >&2
    echo "  apt-get install --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's package starts a system nginx on :80; the gateway runs its own, so leave that one alone.

# pip_install MODULE SPEC WHY: installs SPEC from PyPI unless MODULE imports already.
pip_install() {
  python3 -c "import $1" 2>/dev/null && return 0
  echo "installing: $2 ($3)"
  python3 -m pip install -q "$2" 2>/dev/null || python3 -m pip install -q --break-system-packages "$2"
}

if [ "${1:-system}" != system ]; then
  pip_install aiohttp aiohttp "the ComfyUI emulator"
fi

if [ "${1:-system}" = test ]; then
  pip_install selenium selenium "the drawing page's browser test"
  pip_install yaml pyyaml "replaying the Dify demo's HTTP node"
  pip_install moto.server "moto[server]" "the S3 end-to-end tests"
  pip_install botocore botocore "checking presigned URLs"
  pip_install PIL pillow "decoding webp and jpeg outputs independently"
  # schemathesis in a venv of its own (.build/schemathesis): its pins must not move moto's or selenium's.
  venv="$(cd "$(dirname "$0")/.." && pwd)/.build/schemathesis"
  if [ ! -x "$venv/bin/st" ]; then
    echo "installing: schemathesis 4.32.5 (property-based checks of the API against /openapi.json)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q schemathesis==4.32.5
  fi
fi
