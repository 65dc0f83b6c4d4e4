#!/usr/bin/env bash
# The whole test gate, the one command the README gives and CI runs:
# formatting, lints, every test (unit, end-to-end over the real binaries, tidy checks, the
# browser tests of tests/browser — they need node, Chromium and `npm ci` there, as .ci/run
# installs; ELVES_SKIP_BROWSER=1 skips them), then each fuzz target for a bounded time.
#
#   bash scripts/test.sh            # everything
#   ELVES_FUZZ_SECS=0 bash scripts/test.sh   # skip fuzzing
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/elves-target}"
fuzz_secs="${ELVES_FUZZ_SECS:-30}"

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests (cargo nextest)"
cargo nextest run --workspace --locked --no-fail-fast

if [ "$fuzz_secs" != "0" ]; then
  if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
    exit 1
  fi
  for target in $(cd fuzz && cargo fuzz list); do
    step "fuzz $target for ${fuzz_secs}s"
    (cd fuzz && RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$HOME/.cache/elves-fuzz-target" \
      cargo fuzz run "$target" -- -max_total_time="$fuzz_secs" -print_final_stats=0 2>&1 | tail -n 3)
  done
fi

step "all checks passed"
