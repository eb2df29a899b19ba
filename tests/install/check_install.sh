#!/bin/sh
# Installs a build into a scratch prefix, then builds a consumer with find_package()
# and another with pkg-config against it, and runs both; then builds the C++ compose
# example with the installed C++ header (mevbackup.hpp) and pkg-config, and runs it on a
# local repository. With the CLI come the systemd units, which must run that CLI.
#   check_install.sh cmake BUILD_DIR SOURCE_DIR
#   check_install.sh meson BUILD_DIR SOURCE_DIR
set -eu
kind=$1 build=$2 src=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# root: what the installed files' own paths are relative to (meson's DESTDIR).
if [ "$kind" = cmake ]; then
  cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
  prefix=$tmp/prefix root=
else
  DESTDIR=$tmp/dest meson install -C "$build" --no-rebuild --quiet >/dev/null
  prefix=$(find "$tmp/dest" -name mevbackup.h -path '*/include/*' | sed 's|/include/mevbackup.h$||')
  root=$tmp/dest
fi
lib=$(find "$prefix" -name 'libmevbackup.so.0' | head -n1)
[ -n "$lib" ] || { echo "libmevbackup.so.0 not installed under $prefix"; exit 1; }
libdir=$(dirname "$lib")
readelf -d "$lib" | grep -q 'SONAME.*libmevbackup.so.0' || { echo "SONAME is not libmevbackup.so.0"; exit 1; }
[ -f "$prefix/include/mevbackup.h" ] || { echo "mevbackup.h not installed"; exit 1; }
[ -f "$prefix/include/mevbackup.hpp" ] || { echo "mevbackup.hpp not installed"; exit 1; }
[ ! -e "$prefix/include/mevbackup/" ] || { echo "the internal headers include/mevbackup/ were installed"; exit 1; }
[ -f "$libdir/pkgconfig/mevbackup.pc" ] || { echo "mevbackup.pc not installed"; exit 1; }
[ -f "$libdir/cmake/mevbackup/mevbackupConfig.cmake" ] || { echo "CMake package config not installed"; exit 1; }

# find_package(mevbackup) -> mevbackup::mevbackup
cmake -S "$src/tests/install/consumer" -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$tmp/consumer" >/dev/null
LD_LIBRARY_PATH=$libdir "$tmp/consumer/consumer"

# pkg-config, strict C99
flags=$(PKG_CONFIG_PATH=$libdir/pkgconfig pkg-config --cflags --libs mevbackup)
# CFLAGS/LDFLAGS: a sanitizer build (tests/CMakeLists.txt) builds its consumers with the sanitizers.
cc -std=c99 -Wall -Wextra -Werror -pedantic ${CFLAGS:-} "$src/tests/install/consumer/main.c" $flags ${LDFLAGS:-} -o "$tmp/pc-consumer"
LD_LIBRARY_PATH=$libdir "$tmp/pc-consumer"

# The C++ API: header-only over the C ABI, strict C++17, nothing but the installed package.
c++ -std=c++17 -Wall -Wextra -Werror -pedantic ${CXXFLAGS:-} "$src/examples/cpp/compose.cpp" $flags ${LDFLAGS:-} \
  -o "$tmp/cpp-compose"
out=$(LD_LIBRARY_PATH=$libdir "$tmp/cpp-compose" "$tmp/cpp-repo" 300000)
echo "$out"
case $out in
  *"300000 bytes -> zstd -> compose/payload-cpp.bin.zst"*identical*) ;;
  *) echo "the C++ compose example did not round-trip"; exit 1 ;;
esac
[ -f "$tmp/cpp-repo/compose/payload-cpp.bin.zst" ] || { echo "the C++ compose example stored nothing"; exit 1; }

# The systemd units come with the CLI, and their ExecStart= runs the CLI as installed.
cli=$(find "$prefix" -path '*/bin/mevbackup' -type f | head -n1)
if [ -n "$cli" ]; then
  run_unit=$(find "$prefix" -name 'mevbackup-run@.service' | head -n1)
  [ -n "$run_unit" ] || { echo "the systemd units were not installed"; exit 1; }
  units=$(dirname "$run_unit")
  for u in run@.service run@.timer drill@.service drill@.timer failure@.service; do
    [ -f "$units/mevbackup-$u" ] || { echo "mevbackup-$u not installed in $units"; exit 1; }
  done
  for u in run drill; do
    runs=$(sed -n 's/^ExecStart=\([^ ]*\) .*/\1/p' "$units/mevbackup-$u@.service")
    [ "$root$runs" = "$cli" ] || { echo "mevbackup-$u@.service runs '$runs', not the installed $cli"; exit 1; }
  done
  # Installed in place (no DESTDIR), they verify as they are, the manual page included.
  if [ -z "$root" ] && command -v systemd-analyze >/dev/null; then
    man=$(find "$prefix" -path '*/man1/mevbackup.1' | head -n1)
    out=$(cd "$units" && MANPATH=${man%/man1/mevbackup.1} systemd-analyze verify mevbackup-run@plan.service \
      mevbackup-run@plan.timer mevbackup-drill@plan.service mevbackup-drill@plan.timer \
      mevbackup-failure@mevbackup-run@plan.service.service 2>&1) || { echo "$out"; exit 1; }
    case $out in *mevbackup*) echo "$out"; exit 1 ;; esac
  fi
fi
