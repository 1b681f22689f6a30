#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for the dashboard's browser tests, only when
# it is missing. The tests drive it through Playwright with this executable; they never
# download a browser of their own (`playwright install` is not used).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
command -v chromium
