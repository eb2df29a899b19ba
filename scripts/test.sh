#!/usr/bin/env bash
# Installs what is missing, then builds with CMake and with Meson and runs every test
# of each build (unit, C API, exported symbols, integration against real servers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# The S3 tests' server, pinned by tests/s3/package-lock.json.
[ -f tests/s3/node_modules/s3rver/bin/s3rver.js ] || (cd tests/s3 && npm ci --no-audit --no-fund --loglevel=error)

echo "== CMake build and tests"
bash scripts/build.sh
(cd build && ctest --output-on-failure --timeout 1500)

echo "== Meson build and tests"
if [ -f build-meson/build.ninja ]; then
  meson setup --reconfigure build-meson >/dev/null
else
  meson setup build-meson >/dev/null
fi
meson compile -C build-meson
meson test -C build-meson --print-errorlogs --timeout-multiplier 2
echo "== all tests passed"
