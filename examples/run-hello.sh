#!/usr/bin/env bash
# Runs the guide's first two programs as a user would, on 127.0.0.1: the hello receiver (any free
# port), then the hello sender against the port it printed. The receiver must print the ten
# messages, exactly and in order, and both must exit 0 with nothing on stderr. Used by ctest (label
# examples).
#
#   run-hello.sh RECEIVER_PROGRAM SENDER_PROGRAM
set -u
receiver=$1
sender=$2
work=$(mktemp -d)
receiver_pid=
cleanup() {
  [[ -n "$receiver_pid" ]] && kill -KILL "$receiver_pid" 2>/dev/null && wait "$receiver_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for file in "$work"/*; do echo "--- $(basename "$file"):"; cat "$file"; done >&2
  exit 1
}

"$receiver" 127.0.0.1 0 >"$work/receiver.out" 2>"$work/receiver.err" &
receiver_pid=$!
port=
for attempt in $(seq 1 600); do # a deadline of 30 s, not a timing assumption
  port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$work/receiver.out")
  [[ -n "$port" ]] && break
  kill -0 "$receiver_pid" 2>/dev/null || fail "the receiver exited before listening"
  sleep 0.05
done
[[ -n "$port" ]] || fail "the receiver did not print 'listening on 127.0.0.1:PORT'"

timeout 60 "$sender" 127.0.0.1 "$port" >"$work/sender.out" 2>"$work/sender.err"
status=$?
[[ $status -eq 0 ]] || fail "the sender exited with $status"
[[ ! -s "$work/sender.err" ]] || fail "the sender printed errors"

for attempt in $(seq 1 1200); do # it exits once the sender's connection has closed
  kill -0 "$receiver_pid" 2>/dev/null || break
  sleep 0.05
done
wait "$receiver_pid"
status=$?
receiver_pid=
[[ $status -eq 0 ]] || fail "the receiver exited with $status"
[[ ! -s "$work/receiver.err" ]] || fail "the receiver printed errors"
{ echo "listening on 127.0.0.1:$port"; for number in $(seq 0 9); do echo "received: hello $number"; done; } >"$work/expected"
cmp -s "$work/expected" "$work/receiver.out" || fail "the receiver printed something else"
echo "the hello receiver got the hello sender's ten messages on port $port"
