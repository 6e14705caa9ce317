#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine: system packages (ffmpeg for streaming video;
# chromium for the browser test with --test) and a virtual environment in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
packages="ffmpeg"
if [ "${1:-}" = "--test" ]; then packages="$packages chromium fonts-dejavu-core"; fi
missing=""
for p in $packages; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -r requirements.txt
