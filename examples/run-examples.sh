#!/usr/bin/env bash
# Runs the two examples as a user would, on 127.0.0.1: the publisher (any free port), then the
# subscriber against the port it printed. The subscriber must print the ten messages, exactly, and
# nothing on stderr but its subscription (which may also come too late to be printed: it travels on
# the control connection, the messages on the data connection); both must exit 0. Used by ctest (label examples) and tests/install/check-install.
#
#   run-examples.sh PUBLISHER_PROGRAM SUBSCRIBER_PROGRAM
set -u
publisher=$1
subscriber=$2
work=$(mktemp -d)
publisher_pid=
cleanup() {
  [[ -n "$publisher_pid" ]] && kill -KILL "$publisher_pid" 2>/dev/null && wait "$publisher_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for file in "$work"/*; do echo "--- $(basename "$file"):"; cat "$file"; done >&2
  exit 1
}

"$publisher" 127.0.0.1 0 >"$work/publisher.out" 2>"$work/publisher.err" &
publisher_pid=$!
port=
for attempt in $(seq 1 600); do # a deadline of 30 s, not a timing assumption
  port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$work/publisher.out")
  [[ -n "$port" ]] && break
  kill -0 "$publisher_pid" 2>/dev/null || fail "the publisher exited before listening"
  sleep 0.05
done
[[ -n "$port" ]] || fail "the publisher did not print 'listening on 127.0.0.1:PORT'"

timeout 60 "$subscriber" 127.0.0.1 "$port" 127.0.0.1 >"$work/subscriber.out" 2>"$work/subscriber.err"
status=$?
[[ $status -eq 0 ]] || fail "the subscriber exited with $status"
for number in $(seq 0 9); do echo "tag 42: message $number"; done >"$work/expected"
cmp -s "$work/expected" "$work/subscriber.out" || fail "the subscriber printed something else"

for attempt in $(seq 1 1200); do # it exits once the subscriber has left
  kill -0 "$publisher_pid" 2>/dev/null || break
  sleep 0.05
done
wait "$publisher_pid"
status=$?
publisher_pid=
[[ $status -eq 0 ]] || fail "the publisher exited with $status"
[[ ! -s "$work/publisher.err" ]] || fail "the publisher printed errors"
if grep -qv -x "subscribed to tag 42 at 127.0.0.1:$port" "$work/subscriber.err"; then
  fail "the subscriber printed errors"
fi
echo "the subscriber example received the publisher example's ten messages on port $port"
