#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build, test and demo libmevbackup.
# Idempotent: does nothing (and needs no network) when everything is present.
set -euo pipefail

packages=(
  g++ cmake ninja-build meson pkg-config binutils
  libpq-dev zlib1g-dev libssl-dev libfmt-dev doctest-dev nlohmann-json3-dev
  libisal-dev libdeflate-dev libzstd-dev
  postgresql-15 postgresql-client-15
  python3 python3-pytest gzip util-linux
  libarchive-dev tar
  # S3-compatible object storage: client libraries; test server (npm), proxy and checker
  libcurl4-openssl-dev libpugixml-dev nodejs python3-botocore awscli
)
# Redis support: hiredis to talk to servers, redis-server/redis-tools for the tests'
# throwaway servers and redis-check-rdb.
packages+=(libhiredis-dev redis-server redis-tools)
# The CLI's argument parser (header-only).
packages+=(libcli11-dev)
# Fault-injection tests (network, S3, TLS, clock): faketime moves the CLI's clock,
# openssl makes the test certificates.
packages+=(faketime openssl)
# The Python bindings' type check (tests/python/test_bindings_typing.py); the struct drift
# test compiles with cc (from g++'s gcc).
packages+=(python3-mypy)
# Sanitizer and fuzzing jobs (docs/fuzzing.md): clang with its libFuzzer/ASan runtimes
# (libclang-rt-dev); gcc's libasan comes with g++.
packages+=(clang libclang-rt-dev)
# Monitoring tests: promtool (in Debian's prometheus package) checks the textfile and the
# alert rules (docs/mevbackup.rules.yml).
packages+=(prometheus)
# age interop tests (tests/python/test_age.py): files the library encrypts are decrypted
# by the stock age tool, and age-keygen's keys and age's files are read by the library.
packages+=(age)
# Signed manifests (tests/python/test_signing.py): a signature is checked with the stock
# tools, jq rebuilding the signed bytes and openssl pkeyutl verifying them.
packages+=(jq)
# The AWS shared credentials and config files (~/.aws/credentials, ~/.aws/config) are INI.
packages+=(libinih-dev)
# bench/bench.py's peers: pg_dump piped into pigz and zstd (the command-line tools).
packages+=(pigz zstd)
# The whole-service plan file is TOML (src/plan).
packages+=(libtomlplusplus-dev)
# The drill's HTML report is rendered in headless Chromium and its screenshot read with
# PIL (tests/python/test_drill_report.py).
packages+=(chromium python3-pil)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm: Debian's package, unless a nodejs that bundles npm (NodeSource's) is installed.
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}; run as root (or: sudo $0)" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
# The tests start their own throwaway servers; don't let the package create and start
# a system cluster on port 5432.
if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
  mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/mevbackup-no-main.conf
fi
# Likewise the redis-server package would start a system Redis on 6379: the tests never
# use it (they start their own on free ports), so forbid service starts during the install.
policy_rc_d_added=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
  policy_rc_d_added=1
  trap '[ "$policy_rc_d_added" = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
