#!/usr/bin/env bash
# Installs the build into a temporary prefix and uses it as the original ibmsg's users would:
# compiles the example programs with `cc -std=c99 -Wall -Werror prog.c $(pkg-config --cflags --libs
# ibmsg)`, runs them end to end as two processes, and builds one with find_package(netio3) and the
# netio3::ibmsg target.
#
#   run_installed.sh BUILD_DIR LIBDIR TEST_SOURCE_DIR C_COMPILER TOOLS_BUILT(yes|no)
set -u
build=$1
libdir=$2
source_dir=$3
cc=$4
tools=$5
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

cmake --install "$build" --prefix "$prefix" >"$prefix/install.log" 2>&1 || { cat "$prefix/install.log"; fail "cmake --install"; }
[[ -f "$prefix/include/ibmsg.h" ]] || fail "ibmsg.h is not installed"
[[ -f "$prefix/$libdir/libibmsg.a" ]] || fail "libibmsg.a is not installed"
if [[ "$tools" == yes ]]; then
  [[ -x "$prefix/bin/ibmsg-send" && -x "$prefix/bin/ibmsg-recv" ]] || fail "the tools are not installed"
  "$prefix/bin/ibmsg-send" -h | grep -q "usage: ibmsg-send" || fail "the installed ibmsg-send does not run"
fi

export PKG_CONFIG_PATH="$prefix/$libdir/pkgconfig"
flags=$(pkg-config --cflags --libs ibmsg) || fail "pkg-config does not know ibmsg"
for program in example_send example_recv; do
  # shellcheck disable=SC2086 # the flags are meant to be split
  "$cc" -std=c99 -Wall -Werror "$source_dir/$program.c" $flags -o "$prefix/$program" ||
    fail "$program does not compile against the installed ibmsg.h"
done
"$source_dir/run_examples.sh" "$prefix/example_send" "$prefix/example_recv" || fail "the installed examples do not work"

mkdir -p "$prefix/consumer"
cp "$source_dir/example_send.c" "$prefix/consumer/"
cat >"$prefix/consumer/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.20)
project(ibmsg_consumer LANGUAGES C CXX)
find_package(netio3 REQUIRED)
add_executable(example_send example_send.c)
target_link_libraries(example_send PRIVATE netio3::ibmsg)
CMAKE
cmake -S "$prefix/consumer" -B "$prefix/consumer/build" -DCMAKE_PREFIX_PATH="$prefix" >"$prefix/consumer.log" 2>&1 &&
  cmake --build "$prefix/consumer/build" >>"$prefix/consumer.log" 2>&1 ||
  { cat "$prefix/consumer.log"; fail "find_package(netio3) with netio3::ibmsg"; }
"$prefix/consumer/build/example_send" 2>&1 | grep -q "usage" || fail "the CMake-built example does not run"
echo "installed ibmsg works with pkg-config (C99 -Wall -Werror) and find_package(netio3)"
