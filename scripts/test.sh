#!/usr/bin/env bash
# Sets up this machine and runs vnetp's whole test suite: format, lints (all targets,
# benches included), docs, unit and property tests, the two-host network-namespace
# tests (needs root), and short fuzz runs.
# Usage: sudo scripts/test.sh        (FUZZ_SECONDS=N to change each fuzz run, 0 to skip)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TERM_COLOR=never
step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }

step "format"
cargo fmt --all --check
step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "docs"
RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps --locked --quiet
step "tests (unit, property, CLI, two-host netns)"
cargo nextest run --workspace --locked --no-fail-fast
if [ "${FUZZ_SECONDS:-10}" != 0 ]; then
    step "fuzz (${FUZZ_SECONDS:-10}s per target)"
    bash scripts/fuzz.sh "${FUZZ_SECONDS:-10}"
fi
step "done"
