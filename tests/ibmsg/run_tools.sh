#!/usr/bin/env bash
# The installed tools end to end: ibmsg-recv -n COUNT -c (checks order and contents) against
# ibmsg-send -n COUNT -s SIZE, in two processes, for small, default and large messages. Both must
# exit 0 and print their throughput summary. Only NETIO3_TEST_ADDRESS (default 127.0.0.1; the
# Soft-RoCE machine sets its rxe0 address) is used.
#
#   run_tools.sh IBMSG_SEND IBMSG_RECV
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
fail() { echo "FAIL: $*" >&2; cat "$work"/*.out "$work"/*.err >&2 2>/dev/null; exit 1; }

run_case() { # COUNT SIZE
  local count=$1 size=$2 port attempt status
  recv_pid=
  for attempt in $(seq 1 20); do
    port=$((20000 + (RANDOM * 7 + attempt) % 40000))
    "$recv" -n "$count" -s "$size" -c -q "$address" "$port" >"$work/recv.out" 2>"$work/recv.err" &
    recv_pid=$!
    sleep 0.3
    kill -0 "$recv_pid" 2>/dev/null && break
    wait "$recv_pid" 2>/dev/null
    recv_pid=
  done
  [[ -n "$recv_pid" ]] || fail "ibmsg-recv could not listen on any port"
  for attempt in $(seq 1 100); do
    if "$send" -n "$count" -s "$size" "$address" "$port" >"$work/send.out" 2>"$work/send.err"; then
      break
    fi
    grep -q "could not connect" "$work/send.err" || fail "ibmsg-send -n $count -s $size failed"
    sleep 0.1
  done
  grep -q "^sent $count messages of $size bytes" "$work/send.out" || fail "no summary from ibmsg-send"
  for attempt in $(seq 1 600); do
    kill -0 "$recv_pid" 2>/dev/null || break
    sleep 0.1
  done
  wait "$recv_pid"
  status=$?
  recv_pid=
  [[ $status -eq 0 ]] || fail "ibmsg-recv exited with $status"
  grep -q "^received $count messages, $((count * size)) bytes" "$work/recv.out" || fail "no summary from ibmsg-recv"
  [[ ! -s "$work/recv.err" ]] || fail "ibmsg-recv printed errors"
  echo "$(cat "$work/send.out")"
  echo "$(cat "$work/recv.out")"
}

run_case 10000 100
run_case 5000 4096
run_case 500 3
run_case 200 262144
