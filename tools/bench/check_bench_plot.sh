#!/usr/bin/env bash
# tools.netio3_bench_plot: `netio3-bench run --sizes ... --plot FILE.png` writes a PNG (a short
# sweep of two sizes over loopback), and refuses a --plot name that is not a .png before running.
# Skipped (exit 77, ctest's SKIP_RETURN_CODE) when gnuplot is not installed: it is a benchmark
# package (scripts/install-deps --bench), not a build dependency.
#
#   check_bench_plot.sh NETIO3_BENCH_PROGRAM
set -u
bench=$1
if ! command -v gnuplot >/dev/null; then
  echo "SKIPPED: gnuplot is not installed (Debian: gnuplot-nox; scripts/install-deps --bench)"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() {
  echo "FAIL: $*" >&2
  for file in "$work"/*.txt; do [[ -e "$file" ]] && { echo "--- $(basename "$file"):"; cat "$file"; }; done >&2
  exit 1
}

timeout 120 "$bench" run --sizes 64,4k --messages 2000 --plot "$work/sweep.png" >"$work/stdout.txt" 2>"$work/stderr.txt"
status=$?
[[ $status -eq 0 ]] || fail "netio3-bench run --plot exited with $status"
[[ -s "$work/sweep.png" ]] || fail "no $work/sweep.png (or it is empty)"
# Every PNG starts with the same eight bytes: 89 50 4e 47 0d 0a 1a 0a.
signature=$(head -c 8 "$work/sweep.png" | od -An -tx1 | tr -d ' \n')
[[ "$signature" == 89504e470d0a1a0a ]] || fail "sweep.png does not start with the PNG signature (it starts with $signature)"
grep -q "plot written to $work/sweep.png" "$work/stderr.txt" || fail "netio3-bench did not say where the plot went"
grep -q '64 B' "$work/stdout.txt" || fail "the results table is missing"

# A name that is not a PNG is refused before anything runs (status 2: a usage error).
"$bench" run --sizes 64 --messages 100 --plot "$work/sweep.svg" >"$work/bad-stdout.txt" 2>"$work/bad-stderr.txt"
status=$?
[[ $status -ne 0 ]] || fail "--plot sweep.svg was accepted"
grep -q "does not end in .png" "$work/bad-stderr.txt" || fail "--plot sweep.svg: no message saying why it was refused"
[[ ! -e "$work/sweep.svg" ]] || fail "--plot sweep.svg wrote a file"
echo "netio3-bench --plot wrote a $(stat -c %s "$work/sweep.png")-byte PNG"
