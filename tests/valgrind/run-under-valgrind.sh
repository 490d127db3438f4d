#!/usr/bin/env bash
# Runs programs under `valgrind --leak-check=full` and fails on any valgrind error or any
# definitely or indirectly lost block (still-reachable memory of libraries is not an error).
#
#   run-under-valgrind.sh bench NETIO3_BENCH asyncmsg|libfabric
#       a netio3-bench latency run: netio3-bench run (client and its server child), 20,000 messages
#   run-under-valgrind.sh examples EXAMPLE_SEND EXAMPLE_RECV RUN_EXAMPLES_SH
#       the ibmsg examples as two processes (tests/ibmsg/run_examples.sh with valgrind wrappers)
set -u
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
valgrind_args=(--leak-check=full --errors-for-leak-kinds=definite,indirect --trace-children=yes
  "--log-file=$logs/valgrind.%p.log")

case "${1:-}" in
  bench)
    bench=$2 backend=$3
    args=(run --size 64 --messages 20000 --quiet --backend "$backend")
    [[ "$backend" == libfabric ]] && args+=(--provider tcp)
    valgrind "${valgrind_args[@]}" "$bench" "${args[@]}" >"$logs/output.txt" 2>&1 ||
      { cat "$logs/output.txt"; echo "FAIL: netio3-bench failed under valgrind" >&2; exit 1; }
    expected=2 # client and server
    ;;
  examples)
    send=$2 recv=$3 run_examples=$4
    valgrind_args+=("--suppressions=$(dirname "$0")/examples.supp")
    for role in send recv; do
      program=$send
      [[ $role == recv ]] && program=$recv
      cat >"$logs/$role.sh" <<EOF
#!/usr/bin/env bash
exec valgrind ${valgrind_args[*]} "$program" "\$@"
EOF
      chmod +x "$logs/$role.sh"
    done
    bash "$run_examples" "$logs/send.sh" "$logs/recv.sh" || { echo "FAIL: the examples failed under valgrind" >&2; exit 1; }
    expected=3 # two senders, one receiver (and failed connect attempts of the sender)
    ;;
  *)
    echo "usage: run-under-valgrind.sh bench NETIO3_BENCH BACKEND | examples SEND RECV RUN_EXAMPLES_SH" >&2
    exit 2
    ;;
esac

count=0
status=0
for log in "$logs"/valgrind.*.log; do
  [[ -e "$log" ]] || continue
  count=$((count + 1))
  command=$(grep -m1 "Command:" "$log" | sed 's/^==[0-9]*== //')
  if ! grep -q "ERROR SUMMARY: 0 errors" "$log"; then
    echo "FAIL: valgrind found errors in $command:" >&2
    cat "$log" >&2
    status=1
  fi
done
if [[ $count -lt $expected ]]; then
  echo "FAIL: expected at least $expected valgrind logs, found $count" >&2
  exit 1
fi
[[ $status -eq 0 ]] && echo "valgrind: $count processes, 0 errors, no definitely or indirectly lost memory"
exit $status
