#!/usr/bin/env bash
# Idempotent: install the Debian packages whose servers probatorium starts
# itself (postgresql, redis-server, memcached) and the bench baselines'
# toolchains (nginx-light, golang-go) plus wrk, chromium + chromium-driver for the
# report's browser test, when their binaries are missing.
# As root with apt-get: apt-get update, then install only what is missing.
# Otherwise: print one line naming the packages to install and exit 0.
# Usage: bash scripts/install-debian-packages.sh
set -euo pipefail

missing=()
# PostgreSQL: the Debian layout keeps the server binaries out of PATH.
have_pg=0
for d in /usr/lib/postgresql/*/bin; do
  if [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then have_pg=1; fi
done
if [ "$have_pg" = 0 ] && ! { command -v initdb >/dev/null && command -v postgres >/dev/null; }; then
  missing+=(postgresql)
fi
if ! command -v psql >/dev/null && [ "$have_pg" = 1 ]; then
  missing+=(postgresql-client)
fi
command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
command -v memcached >/dev/null || [ -x /usr/bin/memcached ] || missing+=(memcached)
# The bench tier's non-Python baselines (nginx; go builds go-nethttp) and the
# peers of benchmarks/loadgen_vs_peers.py. golang-go: ~81 MB download, ~16 s here.
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v go >/dev/null || [ -x /usr/bin/go ] || missing+=(golang-go)
command -v wrk >/dev/null || missing+=(wrk)
# wt-report: the report's browser test (tests/report/test_browser.py) drives Debian's headless
# Chromium through Playwright, which cannot download its own browser here.
command -v chromium >/dev/null || [ -x /usr/bin/chromium ] || missing+=(chromium)
command -v chromedriver >/dev/null || [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
# The multi-host drivers' tests: real sshd inside network namespaces (the
# ansible driver), and ip/bridge for the namespaces themselves.
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ip >/dev/null || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || missing+=(iproute2)

if [ "${#missing[@]}" = 0 ]; then
  echo "install-debian-packages: postgresql, redis-server, memcached, nginx-light, golang-go, wrk, chromium, chromium-driver, openssh-server, iproute2 already present"
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  # The packages' own service units/init scripts may try to start system-wide
  # servers; probatorium never uses those, so forbid starting them here.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
  fi
  rc=0
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
  [ "$created_policy" = 1 ] && rm -f "$policy"
  if [ "$rc" != 0 ]; then
    echo "install-debian-packages: apt-get install ${missing[*]} failed (exit $rc)" >&2
    exit "$rc"
  fi
  echo "install-debian-packages: installed ${missing[*]}"
else
  echo "install-debian-packages: missing servers; install the Debian packages: ${missing[*]} (e.g. sudo apt-get install ${missing[*]})"
fi
exit 0
