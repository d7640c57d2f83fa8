#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (default 10 s each), starting from
# the corpus kept in fuzz/corpus/<target>. Installs cargo-fuzz when missing.
# Usage: scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
# cargo-fuzz needs nightly flags (sanitizers); the stable compiler allows them here.
export RUSTC_BOOTSTRAP=1
cargo fuzz build --release --debug-assertions >/dev/null 2>&1 || cargo fuzz build --release --debug-assertions
for t in $(cargo fuzz list); do
    mkdir -p "fuzz/corpus/$t"
    printf 'fuzz %-12s ' "$t"
    if ! cargo fuzz run --release --debug-assertions "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -max_len=4096 -rss_limit_mb=2048 -print_final_stats=1 > "fuzz/$t.log" 2>&1; then
        echo "FAILED (fuzz/$t.log)"; tail -40 "fuzz/$t.log"; exit 1
    fi
    grep -Eo 'stat::number_of_executed_units: *[0-9]+' "fuzz/$t.log" | awk '{print $2 " runs, no crash"}'
done
