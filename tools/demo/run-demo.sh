#!/usr/bin/env bash
# The demonstration's two processes on 127.0.0.1: `netio3-demo receive` (any free port), then
# `netio3-demo send` against the port it printed; prints the receiver's table (one line per message
# size). Fails unless both exit 0 and every size arrived. Used by scripts/demo and by ctest
# (tools.netio3_demo, with short runs).
#
#   run-demo.sh NETIO3_DEMO [SECONDS_PER_SIZE]      default 1
set -uo pipefail # not -e: the helpers below report a failed step themselves
demo=$1
seconds=${2:-1}
# start_listener, wait_listener, fail; outputs in $work (the examples' runner uses them too).
# shellcheck source-path=SCRIPTDIR source=../../examples/listener-pair.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../examples/listener-pair.sh"

start_listener receiver "$demo" receive 127.0.0.1
"$demo" send 127.0.0.1 "$port" "$seconds" || fail "the sender failed"
wait_listener receiver
rows=$(grep -c -E "^ +[0-9]+ (B|KiB|MiB) +[0-9]+ " "$work/receiver.out" || true)
[[ $rows -eq 4 ]] || fail "expected 4 message sizes in the receiver's table, got $rows"
sed 1d "$work/receiver.out"
