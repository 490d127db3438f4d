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
# shellcheck source-path=SCRIPTDIR source=listener-pair.sh
source "$(dirname "${BASH_SOURCE[0]}")/listener-pair.sh"

start_listener receiver "$receiver" 127.0.0.1 0

timeout 60 "$sender" 127.0.0.1 "$port" >"$work/sender.out" 2>"$work/sender.err"
status=$?
[[ $status -eq 0 ]] || fail "the sender exited with $status"
[[ ! -s "$work/sender.err" ]] || fail "the sender printed errors"

wait_listener receiver
{ echo "listening on 127.0.0.1:$port"; for number in $(seq 0 9); do echo "received: hello $number"; done; } >"$work/expected"
cmp -s "$work/expected" "$work/receiver.out" || fail "the receiver printed something else"
echo "the hello receiver got the hello sender's ten messages on port $port"
