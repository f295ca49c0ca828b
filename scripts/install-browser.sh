#!/usr/bin/env bash
# Installs what the browser tests (tests/it/web_browser.rs) drive: Debian's Chromium and its
# chromedriver. Idempotent: apt-get runs only when one of the two is missing. Run as root or
# with sudo. The tests fail, never skip, when the browser is missing.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-browser: run as root or install sudo" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Fonts so that pages (and their screenshots) render text, not boxes.
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
echo "install-browser: $(/usr/bin/chromium --version 2>/dev/null || echo chromium installed)"
