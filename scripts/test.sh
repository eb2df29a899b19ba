#!/usr/bin/env bash
# Installs what is missing, then builds with CMake and with Meson and runs every test
# of each build (unit, C API, exported symbols, integration against real servers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

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
