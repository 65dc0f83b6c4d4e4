#!/usr/bin/env bash
# Instruction counts of the hot pure paths, under valgrind's callgrind: for each operation,
# (instructions of a run of N repetitions − instructions of a run of 0) ÷ N. Counts do not move
# with the machine's load, so they show regressions that timings on a shared machine hide.
#
#   cargo build --release -p elves-bench
#   scripts/callgrind.sh [N]            # default N = 2000; needs valgrind (apt-get install valgrind)
#
# ELVES_BENCH overrides the bench binary (default: $CARGO_TARGET_DIR or target, release).
set -euo pipefail
n="${1:-2000}"
bench="${ELVES_BENCH:-${CARGO_TARGET_DIR:-target}/release/elves-bench}"
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is not installed" >&2; exit 2; }
[ -x "$bench" ] || { echo "callgrind.sh: $bench not found: cargo build --release -p elves-bench" >&2; exit 2; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Total instructions (Ir) of one run of `elves-bench callgrind OP --iters K`.
count() {
  local out="$tmp/cg.$1.$2"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bench" callgrind "$1" --iters "$2" \
    >/dev/null 2>"$out.log" || { cat "$out.log" >&2; exit 1; }
  awk '/^(summary|totals):/ { print $2; exit }' "$out"
}

echo "| operation | instructions per call (N = $n) |"
echo "|---|--:|"
for op in sign-verify sign-verify-md5 output-parse output-parse64k cron-next cron-next-dst; do
  base="$(count "$op" 0)"
  full="$(count "$op" "$n")"
  echo "| \`$op\` | $(( (full - base) / n )) |"
done
