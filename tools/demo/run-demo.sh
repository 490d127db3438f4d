#!/usr/bin/env bash
# The demonstration's two processes on 127.0.0.1: `netio3-demo receive` (any free port), then
# `netio3-demo send` against the port it printed; prints the receiver's table (one line per message
# size). Fails unless both exit 0 and every size arrived. Used by scripts/demo and by ctest
# (tools.netio3_demo, with short runs).
#
#   run-demo.sh NETIO3_DEMO [SECONDS_PER_SIZE]      default 1
set -euo pipefail
demo=$1
seconds=${2:-1}
work=$(mktemp -d)
receiver_pid=
cleanup() {
  [[ -n "$receiver_pid" ]] && kill -KILL "$receiver_pid" 2>/dev/null && wait "$receiver_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "run-demo: $*" >&2; cat "$work"/* >&2 2>/dev/null; exit 1; }

: >"$work/receiver.out"
"$demo" receive 127.0.0.1 >>"$work/receiver.out" 2>"$work/receiver.err" &
receiver_pid=$!
port=
for _ in $(seq 1 600); do # a deadline of 30 s, not a timing assumption
  port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$work/receiver.out")
  [[ -n "$port" ]] && break
  kill -0 "$receiver_pid" 2>/dev/null || fail "the receiver exited before listening"
  sleep 0.05
done
[[ -n "$port" ]] || fail "the receiver did not print 'listening on 127.0.0.1:PORT'"
"$demo" send 127.0.0.1 "$port" "$seconds" || fail "the sender failed"
status=0
wait "$receiver_pid" || status=$?
receiver_pid=
[[ $status -eq 0 ]] || fail "the receiver exited with $status"
[[ ! -s "$work/receiver.err" ]] || fail "the receiver printed errors"
rows=$(grep -c -E "^ +[0-9]+ (B|KiB|MiB) +[0-9]+ " "$work/receiver.out" || true)
[[ $rows -eq 4 ]] || fail "expected 4 message sizes in the receiver's table, got $rows"
sed 1d "$work/receiver.out"
