#!/usr/bin/env bash
# Runs the test suite (QEMU guest tests excluded) starved of CPU, to flush out tests
# that pass only when every thread gets the CPU at once: the suite runs in a cgroup
# allowed QUOTA ms of CPU per second, so its threads stall for up to 1 s - QUOTA ms at
# a time. Every test must pass here: a test that fails only here waits on time, not on
# the event it means (see docs/reliability.md, "Tests under load").
# Needs root (cgroups; the suite's namespaces). Usage:
#   sudo scripts/stress-tests.sh [--quota-ms 300] [--rounds 1] [nextest filter]
set -euo pipefail
cd "$(dirname "$0")/.."

QUOTA_MS=300 ROUNDS=1
FILTER='not (binary(vfio_vm) | binary(vhost_user_guest) | test(/in_a_qemu_guest/))'
while [ $# -gt 0 ]; do
    case "$1" in
        --quota-ms) QUOTA_MS=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        -h|--help) sed -n 2,8p "$0"; exit 0 ;;
        *) FILTER="($FILTER) & ($1)"; shift ;;
    esac
done
[[ "$QUOTA_MS" =~ ^[0-9]+$ ]] && [ "$QUOTA_MS" -ge 50 ] && [ "$QUOTA_MS" -le 1000 ] \
    || { echo "$0: --quota-ms must be 50..1000" >&2; exit 2; }
[[ "$ROUNDS" =~ ^[0-9]+$ ]] && [ "$ROUNDS" -ge 1 ] || { echo "$0: --rounds must be >= 1" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "$0: needs root (cgroups, network namespaces)" >&2; exit 1; }

# Build first, unthrottled: only the tests run starved.
cargo nextest run --workspace --locked --no-run -E "$FILTER"

NAME="vnetp-stress-$$"
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    # cgroup v2: cpu.max is "quota period" in microseconds.
    CG=/sys/fs/cgroup/$NAME
    grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control \
        || echo +cpu >/sys/fs/cgroup/cgroup.subtree_control
    mkdir "$CG"
    echo "$((QUOTA_MS * 1000)) 1000000" >"$CG/cpu.max"
elif [ -d /sys/fs/cgroup/cpu ]; then
    CG=/sys/fs/cgroup/cpu/$NAME
    mkdir "$CG"
    echo 1000000 >"$CG/cpu.cfs_period_us"
    echo "$((QUOTA_MS * 1000))" >"$CG/cpu.cfs_quota_us"
else
    echo "$0: no cgroup cpu controller found" >&2
    exit 1
fi
cleanup() {
    # Move anything left back to the root group, then remove ours.
    if [ -f "$CG/cgroup.procs" ]; then
        while read -r pid; do echo "$pid" >"$(dirname "$CG")/cgroup.procs" 2>/dev/null || true; done <"$CG/cgroup.procs"
    fi
    rmdir "$CG" 2>/dev/null || true
}
trap cleanup EXIT

echo "stress-tests: $QUOTA_MS ms of CPU per second, $ROUNDS round(s), filter: $FILTER"
sh -c "echo \$\$ >'$CG/cgroup.procs'; exec cargo nextest run --workspace --locked -j2 --no-fail-fast --stress-count $ROUNDS -E '$FILTER'"
