#!/usr/bin/env bash
# Installs every system package vnetp's demo and tests need. Idempotent; needs root.
# Usage: scripts/setup.sh
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/setup.sh: needs root to install packages (run it with sudo)" >&2
    exit 1
fi
pkgs=(iproute2 iputils-ping iperf3 jq tshark socat ethtool procps kmod pciutils pci.ids dpdk-dev valgrind linux-perf)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture; answer no, without a prompt.
    echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The kernel modules the tests use (built in on some kernels: failures are fine).
for m in tun veth vxlan; do modprobe "$m" 2>/dev/null || true; done
bash "$(dirname "$0")/../tests/vm/harness.sh" install # QEMU (igb) for the VFIO VM tests
command -v cargo >/dev/null || { echo "scripts/setup.sh: cargo (Rust 1.95+) is required" >&2; exit 1; }
echo "setup: system packages present (${pkgs[*]})"
