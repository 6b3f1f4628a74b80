#!/usr/bin/env bash
# Installs what is missing, and nothing else. `system`: what the gateway needs to build and run.
# `test`: also the ComfyUI emulator's Python runtime and, for the drawing page's real-browser
# test, headless Chromium + chromedriver (Debian) and Selenium (PyPI). `bench`: also wrk.
set -euo pipefail
want=(libfcgi-dev libcurl4-openssl-dev libssl-dev nginx curl)
case "${1:-system}" in
  test) want+=(python3 chromium chromium-driver) ;;
  bench) want+=(python3 wrk) ;;
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
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's package starts a system nginx on :80; the gateway runs its own, so leave that one alone.

if [ "${1:-system}" != system ]; then
  if ! python3 -c 'import aiohttp' 2>/dev/null; then
    echo "installing: aiohttp (for the ComfyUI emulator)"
    python3 -m pip install -q aiohttp 2>/dev/null \
      || python3 -m pip install -q --break-system-packages aiohttp 2>/dev/null \
      || { sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"; DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-aiohttp >/dev/null; }
  fi
fi

if [ "${1:-system}" = test ]; then
  if ! python3 -c 'import selenium' 2>/dev/null; then
    echo "installing: selenium (for the drawing page's browser test)"
    python3 -m pip install -q selenium 2>/dev/null \
      || python3 -m pip install -q --break-system-packages selenium 2>/dev/null \
      || { sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"; DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-selenium >/dev/null; }
  fi
fi
