#!/usr/bin/env bash
# netio3-cat end to end: real publisher and subscriber processes on 127.0.0.1, one case per run.
#
#   test_cat.sh NETIO3_CAT CASE BACKEND        BACKEND: asyncmsg or libfabric_tcp
#
# Cases: stdin_lines escaped_text hex_format count_format tag_ranges copy_method zerocopy_method
# interrupted killed_publisher unreachable_publisher bad_arguments. Exit 0: passed, 1: failed (with
# both sides' output), 77: skipped (libfabric's tcp provider is not on this machine).
#
# Nothing here depends on timing: the publisher listens on port 0 and prints its port, its default
# --wait-for 1 holds the first message until the subscriber's tags are in its map (they travel with
# the subscriber's hello, before the data connection is up), and every wait has a deadline that
# only keeps a broken build from hanging.
set -u
tool=$1
case_name=$2
backend=$3
work=$(mktemp -d)
pids=()

cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    kill -KILL "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "FAIL ($case_name over $backend): $*" >&2
  local file
  for file in "$work"/*.out "$work"/*.err; do
    [[ -s "$file" ]] && { echo "--- $(basename "$file"):"; cat -A "$file" | head -50; } >&2
  done
  exit 1
}

case "$backend" in
asyncmsg) backend_options=(--backend asyncmsg) ;;
libfabric_tcp)
  if command -v fi_info >/dev/null && ! fi_info -p tcp >/dev/null 2>&1; then
    echo "SKIP: libfabric's tcp provider is not available here (fi_info -p tcp)"
    exit 77
  fi
  backend_options=(--backend libfabric --provider tcp)
  ;;
*) echo "unknown backend $backend" >&2; exit 2 ;;
esac

# start_publisher NAME INPUT_FILE ARGS...: starts `netio3-cat publish --listen 127.0.0.1:0 ARGS`
# reading INPUT_FILE, waits for its "listening on" line; sets publisher_pid and port.
start_publisher() {
  local name=$1 input=$2
  shift 2
  "$tool" publish --listen 127.0.0.1:0 "${backend_options[@]}" "$@" <"$input" >"$work/$name.out" 2>"$work/$name.err" &
  publisher_pid=$!
  pids+=("$publisher_pid")
  local attempt
  for attempt in $(seq 1 600); do
    if grep -q "listening on 127.0.0.1:" "$work/$name.err"; then
      port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/$name.err" | head -1)
      return 0
    fi
    kill -0 "$publisher_pid" 2>/dev/null || fail "the publisher $name exited before listening"
    sleep 0.05
  done
  fail "the publisher $name did not print 'listening on' within 30 s"
}

# wait_exit PID: waits (deadline 60 s) for PID to exit; sets exit_status.
wait_exit() {
  local pid=$1 attempt
  for attempt in $(seq 1 1200); do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid"
      exit_status=$?
      return 0
    fi
    sleep 0.05
  done
  fail "process $pid did not exit within 60 s"
}

# wait_for_lines FILE COUNT: until FILE has at least COUNT lines (deadline 60 s).
wait_for_lines() {
  local attempt
  for attempt in $(seq 1 1200); do
    [[ -f "$1" && $(wc -l <"$1") -ge $2 ]] && return 0
    sleep 0.05
  done
  fail "$1 did not reach $2 lines within 60 s"
}

# wait_for_text FILE TEXT: until FILE contains TEXT (deadline 60 s).
wait_for_text() {
  local attempt
  for attempt in $(seq 1 1200); do
    grep -qF -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  fail "$(basename "$1") did not show '$2' within 60 s"
}

# subscribe NAME ARGS...: runs `netio3-cat subscribe ARGS` to completion; sets exit_status.
subscribe() {
  local name=$1
  shift
  timeout 60 "$tool" subscribe "${backend_options[@]}" --local-ip 127.0.0.1 "$@" >"$work/$name.out" 2>"$work/$name.err"
  exit_status=$?
}

expect_output() { # FILE EXPECTED_FILE
  cmp -s "$1" "$2" || fail "$(basename "$1") differs from what was expected:$(printf '\n')$(diff "$2" "$1" | head -20)"
}

expect_in() { # FILE TEXT
  grep -qF -- "$2" "$1" || fail "$(basename "$1") lacks '$2'"
}

publisher_ends_cleanly() { # NAME PUBLISHED_COUNT
  wait_exit "$publisher_pid"
  [[ $exit_status -eq 0 ]] || fail "the publisher $1 exited with $exit_status"
  expect_in "$work/$1.err" "published $2 messages"
}

case_stdin_lines() {
  printf 'first line\nsecond: spaces, punctuation !?#[]{}\n\n  indented\nlast line, no newline' >"$work/input"
  start_publisher pub "$work/input" --tag 7
  subscribe sub --tag 7 --count 5 "127.0.0.1:$port"
  [[ $exit_status -eq 0 ]] || fail "subscribe exited with $exit_status"
  printf 'first line\nsecond: spaces, punctuation !?#[]{}\n\n  indented\nlast line, no newline\n' >"$work/expected"
  expect_output "$work/sub.out" "$work/expected"
  expect_in "$work/sub.err" "received 5 messages"
  publisher_ends_cleanly pub 5
}

case_escaped_text() {
  printf 'a\tb\\c\001\377\r\nplain\n' >"$work/input"
  start_publisher pub "$work/input" --tag 42
  subscribe sub --tag 42 --show-tag --count 2 "127.0.0.1:$port"
  [[ $exit_status -eq 0 ]] || fail "subscribe exited with $exit_status"
  printf '%s\n' 'tag 42: a\tb\\c\x01\xff\r' 'tag 42: plain' >"$work/expected"
  expect_output "$work/sub.out" "$work/expected"
  publisher_ends_cleanly pub 2
}

case_hex_format() {
  printf '0123456789abcdefXYZ\n\n' >"$work/input"
  start_publisher pub "$work/input" --tag 3
  subscribe sub --tag 3 --format hex --count 2 "127.0.0.1:$port"
  [[ $exit_status -eq 0 ]] || fail "subscribe exited with $exit_status"
  cat >"$work/expected" <<'EOF'
message 1: tag 3, 19 bytes
00000000  30 31 32 33 34 35 36 37  38 39 61 62 63 64 65 66  |0123456789abcdef|
00000010  58 59 5a                                          |XYZ|
message 2: tag 3, 0 bytes
EOF
  expect_output "$work/sub.out" "$work/expected"
  publisher_ends_cleanly pub 2
}

case_count_format() {
  start_publisher pub /dev/null --tag 7 --size 100 --count 5000
  subscribe sub --tag 7 --format count --count 5000 "127.0.0.1:$port"
  [[ $exit_status -eq 0 ]] || fail "subscribe exited with $exit_status"
  echo "tag 7: 5000 messages, 500000 bytes" >"$work/expected"
  expect_output "$work/sub.out" "$work/expected"
  expect_in "$work/sub.err" "received 5000 messages, 500000 bytes"
  publisher_ends_cleanly pub 5000
}

case_tag_ranges() {
  # Generated messages go to tags 1..6 in turn (100 each); the subscriber takes 2 and 4-5 only.
  start_publisher pub /dev/null --tag 1-6 --size 10 --count 600
  subscribe sub --tag 2,4-5 --format count --count 300 "127.0.0.1:$port"
  [[ $exit_status -eq 0 ]] || fail "subscribe exited with $exit_status"
  printf 'tag %s: 100 messages, 1000 bytes\n' 2 4 5 >"$work/expected"
  expect_output "$work/sub.out" "$work/expected"
  publisher_ends_cleanly pub 300 # the other 300 had no subscriber
  expect_in "$work/pub.err" "300 dropped (no subscriber)"
  # A range given in hex, and a subscriber of a tag nobody publishes is simply not served.
  start_publisher pub2 /dev/null --tag 0x10-0x12 --size 8 --count 30
  subscribe sub2 --tag 16-17 --format count --count 20 "127.0.0.1:$port"
  [[ $exit_status -eq 0 ]] || fail "subscribe (hex range) exited with $exit_status"
  printf 'tag %s: 10 messages, 80 bytes\n' 16 17 >"$work/expected2"
  expect_output "$work/sub2.out" "$work/expected2"
  publisher_ends_cleanly pub2 20
}

generated_line() { # SEQUENCE SIZE: what --size SIZE generates for message SEQUENCE
  local head="#$1 " letters=abcdefghijklmnopqrstuvwxyz line
  line=$head
  while [[ ${#line} -lt $2 ]]; do line+=$letters; done
  echo "${line:0:$2}"
}

check_method() { # METHOD
  start_publisher pub /dev/null --tag 9 --size 40 --count 3 --method "$1"
  subscribe sub --tag 9 --count 3 "127.0.0.1:$port"
  [[ $exit_status -eq 0 ]] || fail "subscribe exited with $exit_status"
  { generated_line 0 40; generated_line 1 40; generated_line 2 40; } >"$work/expected"
  expect_output "$work/sub.out" "$work/expected"
  publisher_ends_cleanly pub 3
  # Many more messages than the publisher has buffers (or zero-copy slots): every one arrives.
  start_publisher pub2 /dev/null --tag 9 --size 1000 --count 2000 --method "$1"
  subscribe sub2 --tag 9 --format count --count 2000 "127.0.0.1:$port"
  [[ $exit_status -eq 0 ]] || fail "subscribe (2000 messages) exited with $exit_status"
  echo "tag 9: 2000 messages, 2000000 bytes" >"$work/expected2"
  expect_output "$work/sub2.out" "$work/expected2"
  publisher_ends_cleanly pub2 2000
}

case_copy_method() { check_method copy; }
case_zerocopy_method() { check_method zerocopy; }

case_interrupted() {
  # Ctrl-C (SIGINT) ends the subscriber cleanly (it unsubscribes, status 0), then the publisher.
  start_publisher pub /dev/null --tag 5 --size 16 --rate 1000
  "$tool" subscribe "${backend_options[@]}" --local-ip 127.0.0.1 --tag 5 "127.0.0.1:$port" >"$work/sub.out" 2>"$work/sub.err" &
  local subscriber_pid=$!
  pids+=("$subscriber_pid")
  wait_for_lines "$work/sub.out" 5
  # The acknowledgement comes on the control connection, independently of the data: wait for it too.
  wait_for_text "$work/sub.err" "subscribed to tag 5 at 127.0.0.1:$port"
  kill -INT "$subscriber_pid"
  wait_exit "$subscriber_pid"
  [[ $exit_status -eq 0 ]] || fail "the interrupted subscriber exited with $exit_status"
  expect_in "$work/sub.err" "unsubscribed from tag 5"
  expect_in "$work/sub.err" "received "
  kill -INT "$publisher_pid"
  wait_exit "$publisher_pid"
  [[ $exit_status -eq 0 ]] || fail "the interrupted publisher exited with $exit_status"
  expect_in "$work/pub.err" "subscribers: 1"
  expect_in "$work/pub.err" "published "
}

case_killed_publisher() {
  start_publisher pub /dev/null --tag 5 --size 24 --rate 2000
  "$tool" subscribe "${backend_options[@]}" --local-ip 127.0.0.1 --tag 5 "127.0.0.1:$port" >"$work/sub.out" 2>"$work/sub.err" &
  local subscriber_pid=$!
  pids+=("$subscriber_pid")
  wait_for_lines "$work/sub.out" 20
  kill -KILL "$publisher_pid"
  wait_exit "$subscriber_pid"
  [[ $exit_status -eq 1 ]] || fail "subscribe exited with $exit_status after its publisher was killed (1 expected)"
  expect_in "$work/sub.err" "lost the publisher at 127.0.0.1:$port"
  # What arrived was printed, in order, from the first message on.
  local received index=0 line
  received=$(wc -l <"$work/sub.out")
  [[ $received -ge 20 ]] || fail "only $received messages printed"
  while IFS= read -r line; do
    [[ "$line" == "$(generated_line $index 24)" ]] || fail "message $index is '$line'"
    index=$((index + 1))
  done <"$work/sub.out"
}

case_unreachable_publisher() {
  # A port where a publisher listened a moment ago: now nobody does.
  start_publisher pub /dev/null --tag 1 --size 8
  local dead_port=$port
  kill -TERM "$publisher_pid"
  wait_exit "$publisher_pid"
  subscribe sub --tag 1 "127.0.0.1:$dead_port"
  [[ $exit_status -eq 1 ]] || fail "subscribe to a dead port exited with $exit_status (1 expected)"
  expect_in "$work/sub.err" "cannot reach the publisher at 127.0.0.1:$dead_port"
  # A second publisher on a port that is taken fails, saying so.
  start_publisher pub2 /dev/null --tag 1 --size 8
  "$tool" publish --listen "127.0.0.1:$port" "${backend_options[@]}" --tag 1 </dev/null >"$work/pub3.out" 2>"$work/pub3.err"
  exit_status=$?
  [[ $exit_status -eq 1 ]] || fail "a publisher on a taken port exited with $exit_status (1 expected)"
  expect_in "$work/pub3.err" "127.0.0.1:$port"
}

expect_usage_error() { # TEXT_IN_MESSAGE ARGS...
  local text=$1
  shift
  "$tool" "$@" </dev/null >"$work/usage.out" 2>"$work/usage.err"
  local status=$?
  [[ $status -eq 2 ]] || fail "netio3-cat $* exited with $status (2 expected)"
  grep -qF -- "$text" "$work/usage.err" || fail "netio3-cat $*: the message does not name '$text': $(cat "$work/usage.err")"
}

case_bad_arguments() {
  local publisher=127.0.0.1:5555 listen=(--listen 127.0.0.1:0)
  expect_usage_error "subcommand"
  expect_usage_error "frobnicate" frobnicate
  expect_usage_error "--tag" subscribe "$publisher"
  expect_usage_error "PUBLISHER" subscribe --tag 7
  expect_usage_error "--tag" subscribe --tag x "$publisher"
  expect_usage_error "--tag" subscribe --tag 5-3 "$publisher"
  expect_usage_error "--tag" subscribe --tag 1,,2 "$publisher"
  expect_usage_error "--tag" subscribe --tag 0-2000000 "$publisher"
  expect_usage_error "PUBLISHER" subscribe --tag 7 127.0.0.1
  expect_usage_error "PUBLISHER" subscribe --tag 7 127.0.0.1:0
  expect_usage_error "PUBLISHER" subscribe --tag 7 ::1:5555
  expect_usage_error "PUBLISHER" subscribe --tag 7 300.1.1.1:5555
  expect_usage_error "--format" subscribe --tag 7 --format yaml "$publisher"
  expect_usage_error "--local-ip" subscribe --tag 7 --local-ip 300.1.1.1 "$publisher"
  expect_usage_error "--max-size" subscribe --tag 7 --max-size 4x "$publisher"
  expect_usage_error "--count" subscribe --tag 7 --count many "$publisher"
  expect_usage_error "--backend" subscribe --tag 7 --backend carrier-pigeon "$publisher"
  expect_usage_error "--provider" subscribe --tag 7 --provider tcp "$publisher"
  expect_usage_error "--listen" publish --tag 7
  expect_usage_error "--listen" publish --listen 127.0.0.1:99999 --tag 7
  expect_usage_error "--listen" publish --listen '[::1' --tag 7
  expect_usage_error "--tag" publish "${listen[@]}"
  expect_usage_error "--rate" publish "${listen[@]}" --tag 7 --rate -1
  expect_usage_error "--method" publish "${listen[@]}" --tag 7 --method fast
  expect_usage_error "--size" publish "${listen[@]}" --tag 7 --size 100k --buffer-size 16k
  expect_usage_error "--size" publish "${listen[@]}" --tag 7 --size lots
  expect_usage_error "--buffer-size" publish "${listen[@]}" --tag 7 --buffer-size 13
  expect_usage_error "--flush-interval" publish "${listen[@]}" --tag 7 --flush-interval -5
  expect_usage_error "--bogus" publish "${listen[@]}" --tag 7 --bogus
  # --help is not an error, and says how to use each role.
  "$tool" --help >"$work/help.out" 2>&1 || fail "--help exited with $?"
  expect_in "$work/help.out" "publish"
  "$tool" subscribe --help >"$work/help.out" 2>&1 || fail "subscribe --help exited with $?"
  expect_in "$work/help.out" "--format"
}

declare -F "case_$case_name" >/dev/null || { echo "unknown case $case_name" >&2; exit 2; }
"case_$case_name"
echo "PASS: $case_name over $backend"
