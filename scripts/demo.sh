#!/usr/bin/env bash
# Sets up this machine, builds vnetp and runs the embedded demo (needs root).
# Usage: sudo scripts/demo.sh [--encap vnetp|vxlan] [--seconds N]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
cargo build --release --locked --quiet -p vnetp
exec target/release/vnetp demo "$@"
