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

# Sanitizers and fuzzing (docs/fuzzing.md).
echo "== ASan + UBSan build (build-asan) and every test"
if [ ! -f build-asan/build.ninja ]; then
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMEVB_SANITIZE=ON -DMEVB_BUILD_FUZZ=OFF >/dev/null
fi
cmake --build build-asan -j"$(nproc)"
(cd build-asan && UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure --timeout 1500)

echo "== libFuzzer targets (build-fuzz, clang), a bounded run of each from its seeds"
if [ ! -f build-fuzz/build.ninja ]; then
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMEVB_FUZZ=ON \
    -DMEVB_BUILD_EXAMPLES=OFF >/dev/null
fi
cmake --build build-fuzz -j"$(nproc)" --target mevb_fuzz_all
(cd build-fuzz && ctest --output-on-failure -L fuzz -j"$(nproc)")
echo "== all tests passed"
