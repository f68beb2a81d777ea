#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian/Ubuntu machine with Python 3.11:
# a virtualenv in .venv with the pinned lock file and probatorium itself.
# The lock pins everything: core, engines, tests, the bench competitors'
# frameworks (requirements/competitors.in) and the refapps' own requirements.
# Usage: bash scripts/setup.sh      (PYTHON=python3.12 to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "setup: $PY is missing or older than Python 3.11" >&2; exit 2
fi
if ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then
  # Debian splits venv/ensurepip into python3-venv.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  else
    echo "setup: the venv module is missing: apt-get install python3-venv" >&2; exit 2
  fi
fi
# Real backing services (postgres, redis, memcached) come from Debian packages.
bash scripts/install-debian-packages.sh
stamp=.venv/.lock-stamp
if [ ! -x .venv/bin/python ] || ! cmp -s requirements.lock "$stamp" 2>/dev/null; then
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q -r requirements.lock
  .venv/bin/python -m pip install -q --no-deps -e .
  cp requirements.lock "$stamp"
fi
echo "setup: ready (.venv/bin/probatorium)"
