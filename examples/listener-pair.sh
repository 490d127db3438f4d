# shellcheck shell=bash
# Sourced by run-examples.sh and run-hello.sh: what both do around a pair of example programs, one
# listening on 127.0.0.1 (it prints "listening on 127.0.0.1:PORT") and one connecting to it.
#   start_listener NAME PROGRAM ARGS...   starts it; sets $port, or fails
#   wait_listener NAME                    waits for it to exit (it exits once its peer has left); fails unless 0 and silent
# Outputs go to $work/NAME.out and $work/NAME.err; fail prints them all.
work=$(mktemp -d)
listener_pid=
cleanup() {
  [[ -n "$listener_pid" ]] && kill -KILL "$listener_pid" 2>/dev/null && wait "$listener_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for file in "$work"/*; do echo "--- $(basename "$file"):"; cat "$file"; done >&2
  exit 1
}

start_listener() {
  local name=$1
  shift
  : >"$work/$name.out" # exists before the background job's redirection creates it
  "$@" >"$work/$name.out" 2>"$work/$name.err" &
  listener_pid=$!
  port=
  for _ in $(seq 1 600); do # a deadline of 30 s, not a timing assumption
    port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$work/$name.out")
    [[ -n "$port" ]] && break
    kill -0 "$listener_pid" 2>/dev/null || fail "the $name exited before listening"
    sleep 0.05
  done
  [[ -n "$port" ]] || fail "the $name did not print 'listening on 127.0.0.1:PORT'"
}

wait_listener() {
  local name=$1 status
  for _ in $(seq 1 1200); do
    kill -0 "$listener_pid" 2>/dev/null || break
    sleep 0.05
  done
  wait "$listener_pid"
  status=$?
  listener_pid=
  [[ $status -eq 0 ]] || fail "the $name exited with $status"
  [[ ! -s "$work/$name.err" ]] || fail "the $name printed errors"
}
