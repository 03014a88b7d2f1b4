#!/usr/bin/env bash
# Builds the fuzz targets once, then runs each for a bounded time and prints its figures.
#
#   fuzz/run.sh [seconds-per-target] [target...]     (default: 20 s, every target)
#
# Exits non-zero if any target found a crash, and says where the crashing input was written.
# The corpus of each target grows in fuzz/corpus/<target> (not committed): a later run starts
# from what an earlier one found.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-20}"
shift || true
export CARGO_INCREMENTAL=0

# cargo fuzz passes nightly-only flags (-Z, sanitizers, coverage instrumentation). With a nightly
# toolchain it runs on that; on a machine whose one toolchain is stable, RUSTC_BOOTSTRAP=1 lets
# stable take them, AddressSanitizer included.
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  toolchain=()
  export RUSTC_BOOTSTRAP=1
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo "${toolchain[@]}" fuzz list)
fi

cargo "${toolchain[@]}" fuzz build

logs=fuzz/target/logs
mkdir -p "$logs"
failed=()
for target in "${targets[@]}"; do
  echo "--- fuzz $target for ${seconds}s"
  log="$logs/$target.log"
  # -timeout: one input running 10 s is a hang, reported like a crash. The outer timeout only
  # guards against libFuzzer itself not stopping.
  status=0
  timeout --kill-after=10 "$((seconds * 2 + 60))" \
    cargo "${toolchain[@]}" fuzz run "$target" -- \
      -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
  # The last status line has the coverage (cov: edges, ft: features); the final stats the rest.
  grep -E '^#[0-9]+' "$log" | tail -n 1 || true
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" \
    | tr '\n' ' ' || true
  echo
  if [ "$status" -ne 0 ]; then
    failed+=("$target")
    echo "FAILED: $target (exit $status); the end of its log ($log):"
    tail -n 40 "$log"
    grep -E 'Test unit written to|cargo fuzz run ' "$log" || true
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz targets that failed: ${failed[*]}"
  echo "the crashing inputs are under fuzz/artifacts/<target>/; reproduce one with"
  echo "  cargo ${toolchain[*]} fuzz run <target> fuzz/artifacts/<target>/<file>"
  exit 1
fi
echo "every fuzz target ran ${seconds}s without a crash"
