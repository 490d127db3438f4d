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
# shellcheck source-path=SCRIPTDIR source=listener-pair.sh
source "$(dirname "${BASH_SOURCE[0]}")/listener-pair.sh"

start_listener publisher "$publisher" 127.0.0.1 0

timeout 60 "$subscriber" 127.0.0.1 "$port" 127.0.0.1 >"$work/subscriber.out" 2>"$work/subscriber.err"
status=$?
[[ $status -eq 0 ]] || fail "the subscriber exited with $status"
for number in $(seq 0 9); do echo "tag 42: message $number"; done >"$work/expected"
cmp -s "$work/expected" "$work/subscriber.out" || fail "the subscriber printed something else"

wait_listener publisher
if grep -qv -x "subscribed to tag 42 at 127.0.0.1:$port" "$work/subscriber.err"; then
  fail "the subscriber printed errors"
fi
echo "the subscriber example received the publisher example's ten messages on port $port"
