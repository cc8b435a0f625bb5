#!/usr/bin/env bash
# Installs entroguard and everything it needs into ./.venv; safe to run again (idempotent).
#   scripts/install.sh         runtime only
#   scripts/install.sh --dev   also the test and lint tools, and Ray (the campaign backend)
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev,ray]"

# The embedded default dataset (Fashion-MNIST, MIT licence) from Debian, where apt is available.
fmnist=/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
if [ ! -f "$fmnist" ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null \
        || echo "note: apt could not install dataset-fashion-mnist; entroguard will use torchvision's download"
fi

# The reverse proxy the tests run the documented deployment with (deploy/nginx-entroguard.conf).
if [ -n "$extras" ] && ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ] \
        && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    { apt-get install -y -qq nginx-light >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null; }; } \
        || echo "note: apt could not install nginx-light; the reverse-proxy test will be skipped"
fi

# The headless browser the tests screenshot the report with (tests/test_report_browser.py).
if [ -n "$extras" ] && ! command -v chromedriver >/dev/null 2>&1 \
        && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    { apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }; } \
        || echo "note: apt could not install chromium; the report's browser test will be skipped"
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade "pip>=24"
.venv/bin/python -m pip install -q -c constraints.txt -e ".${extras}"
echo "entroguard installed in $(pwd)/.venv"
