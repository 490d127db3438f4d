#!/usr/bin/env bash
# End to end with two processes: the receiver example listens, the sender example (unmodified
# original style) connects, sends one 4096-byte message, waits for SENT, disconnects and exits 0;
# twice, so that the receiver serves more than one connection. Only NETIO3_TEST_ADDRESS (default
# 127.0.0.1; the Soft-RoCE machine sets its rxe0 address) is used.
#
#   run_examples.sh SEND_PROGRAM RECV_PROGRAM
set -u
address=${NETIO3_TEST_ADDRESS:-127.0.0.1}
send=$1
recv=$2
work=$(mktemp -d)
recv_pid=
cleanup() {
  if [[ -n "$recv_pid" ]] && kill -0 "$recv_pid" 2>/dev/null; then
    kill -TERM "$recv_pid" 2>/dev/null
    wait "$recv_pid" 2>/dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; echo "--- receiver output:" >&2; cat "$work/recv.out" "$work/recv.err" >&2; exit 1; }

# A free port: the receiver fails at once when the port is taken, then another is tried.
for attempt in $(seq 1 20); do
  port=$((20000 + (RANDOM * 7 + attempt) % 40000))
  "$recv" "$address" "$port" >"$work/recv.out" 2>"$work/recv.err" &
  recv_pid=$!
  sleep 0.3
  kill -0 "$recv_pid" 2>/dev/null && break
  wait "$recv_pid" 2>/dev/null
  recv_pid=
done
[[ -n "$recv_pid" ]] || fail "the receiver could not listen on any port"

send_once() {
  # Until the receiver listens, the sender's connect is refused and it exits 1: retry.
  for attempt in $(seq 1 100); do
    if "$send" "$address" "$port" >"$work/send.out" 2>"$work/send.err"; then
      [[ ! -s "$work/send.out" && ! -s "$work/send.err" ]] || fail "the sender printed: $(cat "$work/send.out" "$work/send.err")"
      return 0
    fi
    grep -q "could not connect" "$work/send.err" || fail "the sender failed: $(cat "$work/send.err")"
    sleep 0.1
  done
  fail "the sender never connected"
}

wait_for_lines() { # PATTERN COUNT
  for attempt in $(seq 1 300); do
    [[ $(grep -c "^$1\$" "$work/recv.out") -ge $2 ]] && return 0
    sleep 0.1
  done
  fail "expected $2 lines '$1'"
}

send_once
wait_for_lines "message received" 1
send_once
wait_for_lines "message received" 2
wait_for_lines "connection established" 2
kill -0 "$recv_pid" 2>/dev/null || fail "the receiver exited"
[[ ! -s "$work/recv.err" ]] || fail "the receiver printed errors"
[[ $(grep -c -v -e "^message received\$" -e "^connection established\$" "$work/recv.out") -eq 0 ]] ||
  fail "unexpected receiver output"
echo "two sender processes delivered their messages to the receiver process on port $port"
