#!/usr/bin/env bash
# tests/vm/harness.sh: boots a Linux guest under QEMU (TCG) with an emulated Intel 82576
# ("igb", SR-IOV capable) behind a virtual intel-iommu, so vnetp's VFIO code and NIC
# drivers run against a real kernel vfio-pci inside the guest. The host needs no VFIO.
#
#   tests/vm/harness.sh install                     root; idempotent; ~0.2 s when done
#   tests/vm/harness.sh cache                       guest kernel + initramfs -> .cache/vm/
#   tests/vm/harness.sh run MODE PAYLOAD [ARGS...]  boot, run PAYLOAD, exit with its status
#
# MODE     pf-vfio  every 82576 PF (or the first VM_VFIO_PFS of them) on vfio-pci, no VFs
#          vf-vfio  PFs on kernel igb, netdev up, VM_NUMVFS VFs each, VFs on vfio-pci
#          igb      kernel igb keeps the PFs;   none: no binding at all
# PAYLOAD  a statically linked binary (runs as /payload ARGS...) or 'sh:<shell snippet>'
#
# Environment:
#   VM_CACHE     cache directory (default: <repo>/.cache/vm)
#   VM_LOG       serial console log file (default: a fresh file under $VM_CACHE/logs);
#                QEMU's own stderr goes to "$VM_LOG.qemu"
#   VM_TIMEOUT   seconds before QEMU is killed (default 120) -> exit 124
#   VM_NIC       QEMU arguments for the NIC topology (default: one igb, user netdev)
#   VM_MEM       guest RAM in MiB (default 512)
#   VM_MEMFD=1   guest RAM in a shared memfd (needed by vhost-user NICs in VM_NIC)
#   VM_VFIO_PFS  pf-vfio: bind only the first N PFs;  VM_NUMVFS: VFs per PF (default 2)
#   VM_VFIO_SRIOV=1  load vfio-pci with enable_sriov=1 (a vfio-owned PF may create VFs)
#   VM_SMP       guest vCPUs (default 1)
#   VM_ALLOW_DMAR=1  do not fail the run when the guest logged IOMMU (DMAR) faults
#   VM_FILES     host files (space-separated) copied to the guest's /opt
#   VM_KPKG      guest kernel package for `cache` (default: newest linux-image-amd64)
# The payload sees VFIO_BDFS (functions bound to vfio-pci), VFIO_BDF, VFIO_GROUP, IGB_PFS.
#
# Exit status: the payload's (0..120); 121 payload killed by a signal; 122 the payload
# passed but the guest logged IOMMU faults (DMAR) or QEMU reported a translation failure;
# 124 timeout; 125 harness or guest failure. The serial log is printed on stdout.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
VM_CACHE=${VM_CACHE:-$REPO/.cache/vm}
# Modules the guest loads, in dependency order computed by `modprobe --show-depends`.
# virtio_net (with virtio_pci) serves the vhost-user guests of tests/vhost_user_guest.rs;
# igbvf is the Linux VF driver that talks to vnetp's userspace PF (tests/vfio_vm.rs).
GUEST_MODULES=(igb igbvf vfio_iommu_type1 vfio-pci tun virtio_pci virtio_net)
DEFAULT_NIC=(-device pcie-root-port,id=rp0,chassis=1,slot=1 -netdev user,id=n0
    -device igb,bus=rp0,netdev=n0,mac=52:54:00:12:34:01)

fail() {
    echo "vm-harness: $*" >&2
    exit 125
}

qemu_has_igb() {
    command -v qemu-system-x86_64 >/dev/null &&
        qemu-system-x86_64 -device help 2>/dev/null | grep -q '"igb"'
}

cmd_install() {
    [ "$(id -u)" -eq 0 ] || fail "install needs root (run: sudo $0 install)"
    # Another session may hold the dpkg lock: wait for it rather than fail.
    local apt=(apt-get -q -o DPkg::Lock::Timeout=600)
    export DEBIAN_FRONTEND=noninteractive
    if ! qemu_has_igb; then
        # The igb device needs QEMU >= 8.0; Debian 12 (bookworm) has 7.2, backports has 10.
        local codename
        codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
        if [ "$codename" = bookworm ]; then
            local list=/etc/apt/sources.list.d/vnetp-bookworm-backports.sources uri
            # Use the machine's own Debian mirror, with the backports suite.
            uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
            [ -n "$uri" ] || uri=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
            [ -n "$uri" ] || fail "cannot find this machine's Debian mirror (no debian.sources or sources.list)"
            if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d; then
                printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
                    "$uri" >"$list"
            fi
            "${apt[@]}" update -qq
            "${apt[@]}" install -y -qq -t bookworm-backports --no-install-recommends qemu-system-x86 >/dev/null
        else
            "${apt[@]}" update -qq
            "${apt[@]}" install -y -qq --no-install-recommends qemu-system-x86 >/dev/null
        fi
        qemu_has_igb || fail "the installed QEMU has no igb device: QEMU 8.0 or later is needed"
    fi
    local p missing=()
    for p in cpio kmod busybox-static xz-utils; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        "${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    echo "vm-harness: $(qemu-system-x86_64 --version | head -1)"
}

cmd_cache() {
    # Test processes run in parallel and may all ask for the cache at once: one builds
    # it, the others wait for it under this lock and then find it ready.
    mkdir -p "$VM_CACHE"
    exec 9>"$VM_CACHE/.lock"
    flock 9
    if [ -f "$VM_CACHE/base.cpio.gz" ] && [ -f "$VM_CACHE/vmlinuz" ] &&
        [ "$(cat "$VM_CACHE/modules" 2>/dev/null)" = "${GUEST_MODULES[*]}" ]; then
        echo "vm-harness: cache ok in $VM_CACHE (kernel $(cat "$VM_CACHE/kver"))"
        return
    fi
    command -v busybox >/dev/null || fail "busybox missing: run sudo $0 install"
    local work pkg suite=""
    work=$(mktemp -d "$VM_CACHE/build.XXXXXX")
    # shellcheck disable=SC2064 # expand now: the path is fixed
    trap "rm -rf '$work'" EXIT
    mkdir -p "$work/deb" "$work/root"/{bin,dev,proc,sys,tmp,lib/modules}
    if [ -n "${VM_KPKG:-}" ]; then
        pkg=$VM_KPKG
    else
        grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d && suite=/bookworm-backports
        pkg=$(apt-cache depends "linux-image-amd64$suite" | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    fi
    [ -n "$pkg" ] || fail "cannot resolve the guest kernel package (apt-cache depends linux-image-amd64)"
    chmod 777 "$work" # apt's sandbox user writes the download here
    (cd "$work" && apt-get download -q "$pkg$suite" >/dev/null) || fail "apt-get download $pkg failed"
    dpkg-deb -x "$work"/linux-image-*.deb "$work/deb"
    local kver
    kver=$(ls "$work/deb/lib/modules" | head -1)
    # The package has no modules.dep: its postinst would generate it.
    depmod -b "$work/deb" "$kver"
    cp "$work/deb/boot/vmlinuz-$kver" "$VM_CACHE/vmlinuz.new"
    # busybox insmod reads neither .ko.xz nor .ko.zst: decompress here, in load order.
    local m out
    while read -r m; do
        out="$work/root/lib/modules/$(basename "$m" | sed -E 's/\.(xz|zst)$//')"
        case "$m" in
        *.xz) xz -dc "$m" >"$out" ;;
        *.zst) zstd -qdc "$m" >"$out" ;;
        *) cp "$m" "$out" ;;
        esac
        basename "$out" >>"$work/root/lib/modules/order"
    done < <(modprobe -d "$work/deb" -S "$kver" -a --show-depends "${GUEST_MODULES[@]}" |
        awk '$1 == "insmod" && !seen[$2]++ {print $2}')
    [ -s "$work/root/lib/modules/order" ] || fail "no guest modules found for kernel $kver"
    cp "$(command -v busybox)" "$work/root/bin/busybox"
    (cd "$work/root" && find . | cpio -o -H newc --quiet | gzip -1) >"$VM_CACHE/base.cpio.gz.new"
    echo "$kver" >"$VM_CACHE/kver"
    echo "${GUEST_MODULES[*]}" >"$VM_CACHE/modules"
    mv "$VM_CACHE/vmlinuz.new" "$VM_CACHE/vmlinuz"
    mv "$VM_CACHE/base.cpio.gz.new" "$VM_CACHE/base.cpio.gz"
    echo "vm-harness: cache built in $VM_CACHE (kernel $kver)"
}

# The guest's /init, a busybox shell script. It travels in the per-run archive, so
# changing it never needs a cache rebuild.
guest_init() {
    cat <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
. /run.conf
for m in $(cat /lib/modules/order); do
    margs=""
    if [ "$m" = vfio-pci.ko ] && [ "$VFIO_SRIOV" = 1 ]; then margs="enable_sriov=1"; fi
    insmod /lib/modules/$m $margs || echo "harness: insmod $m failed"
done
VFIO_BDFS=""
bind_vfio() {
    echo vfio-pci > /sys/bus/pci/devices/$1/driver_override
    if [ -e /sys/bus/pci/devices/$1/driver ]; then echo $1 > /sys/bus/pci/devices/$1/driver/unbind; fi
    echo $1 > /sys/bus/pci/drivers_probe
    VFIO_BDFS="$VFIO_BDFS $1"
}
IGB_PFS=""
for d in /sys/bus/pci/devices/*; do
    if [ "$(cat $d/vendor):$(cat $d/device)" = "0x8086:0x10c9" ]; then IGB_PFS="$IGB_PFS ${d##*/}"; fi
done
left=$VFIO_PFS
for pf in $IGB_PFS; do
    case "$MODE" in
    pf-vfio)
        if [ "$left" -gt 0 ]; then bind_vfio $pf; left=$((left - 1)); fi ;;
    vf-vfio)
        # The PF driver answers the VF mailbox only while its netdev is up.
        for n in /sys/bus/pci/devices/$pf/net/*; do ip link set ${n##*/} up; done
        echo 0 > /sys/bus/pci/devices/$pf/sriov_drivers_autoprobe
        echo $NUMVFS > /sys/bus/pci/devices/$pf/sriov_numvfs
        # Enabling VFs re-initialises the PF and drops its link: wait for the carrier.
        for n in /sys/bus/pci/devices/$pf/net/*; do
            i=0; while [ $i -lt 300 ] && ! grep -q 1 $n/carrier 2>/dev/null; do sleep 0.2; i=$((i + 1)); done
        done
        for vf in /sys/bus/pci/devices/$pf/virtfn*; do bind_vfio $(basename $(readlink $vf)); done ;;
    esac
done
VFIO_BDFS="${VFIO_BDFS# }"; VFIO_BDF="${VFIO_BDFS%% *}"; VFIO_GROUP=""
if [ -n "$VFIO_BDF" ]; then VFIO_GROUP=$(basename $(readlink /sys/bus/pci/devices/$VFIO_BDF/iommu_group)); fi
export IGB_PFS VFIO_BDFS VFIO_BDF VFIO_GROUP
echo "harness: mode=$MODE igb=[$IGB_PFS] vfio=[$VFIO_BDFS] group=$VFIO_GROUP"
if [ -x /payload ]; then /payload $(cat /payload.args); else sh /payload.sh; fi
rc=$?
echo "harness: payload exit $rc"
[ $rc -gt 120 ] && rc=121
dmesg | grep -E 'DMAR: \[|DMAR: DRHD: handling|vfio|igbvf|igb.*([Ee]rror|[Ff]ail|[Hh]ang|VF)' | sed 's/^/guest-dmesg: /'
# isa-debug-exit at port 0xf4: writing v makes QEMU exit with status (v << 1) | 1.
printf "\\$(printf %o $rc)" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
poweroff -f
EOF
}

cmd_run() {
    [ $# -ge 2 ] || fail "usage: $0 run MODE PAYLOAD [ARGS...]"
    local mode=$1 payload=$2
    shift 2
    case "$mode" in pf-vfio | vf-vfio | igb | none) ;; *) fail "unknown mode $mode" ;; esac
    [ -f "$VM_CACHE/base.cpio.gz" ] || fail "no guest image in $VM_CACHE: run $0 cache"
    command -v qemu-system-x86_64 >/dev/null || fail "QEMU missing: run sudo $0 install"
    local t
    t=$(mktemp -d "${TMPDIR:-/tmp}/vnetp-vm.XXXXXX")
    # shellcheck disable=SC2064 # expand now: the path is fixed
    trap "rm -rf '$t'" EXIT
    mkdir "$t/root"
    guest_init >"$t/root/init"
    chmod 755 "$t/root/init"
    printf 'MODE=%s\nNUMVFS=%s\nVFIO_PFS=%s\nVFIO_SRIOV=%s\n' "$mode" "${VM_NUMVFS:-2}" "${VM_VFIO_PFS:-99}" "${VM_VFIO_SRIOV:-0}" >"$t/root/run.conf"
    if [[ $payload == sh:* ]]; then
        printf '%s\n' "${payload#sh:}" >"$t/root/payload.sh"
    else
        [ -f "$payload" ] || fail "payload $payload does not exist"
        cp "$payload" "$t/root/payload"
        chmod 755 "$t/root/payload"
    fi
    printf '%s' "$*" >"$t/root/payload.args"
    local f
    mkdir -p "$t/root/opt"
    for f in ${VM_FILES:-}; do
        [ -f "$f" ] || fail "VM_FILES: $f does not exist"
        cp "$f" "$t/root/opt/"
    done
    # A second archive appended to the cached one overlays it: the kernel unpacks both.
    (cd "$t/root" && find . | cpio -o -H newc --quiet | gzip -1) >"$t/run.cpio.gz"
    cat "$VM_CACHE/base.cpio.gz" "$t/run.cpio.gz" >"$t/initrd"
    local log=${VM_LOG:-}
    if [ -z "$log" ]; then
        mkdir -p "$VM_CACHE/logs"
        find "$VM_CACHE/logs" -type f -mmin +1440 -delete 2>/dev/null || true
        log=$(mktemp "$VM_CACHE/logs/serial.XXXXXX")
    fi
    local nic=("${DEFAULT_NIC[@]}")
    # shellcheck disable=SC2206 # VM_NIC is a list of QEMU words on purpose
    [ -n "${VM_NIC:-}" ] && nic=(${VM_NIC})
    local mem=${VM_MEM:-512} memory=() smp=${VM_SMP:-1}
    [[ $mem =~ ^[0-9]+$ ]] || fail "VM_MEM must be a number of MiB"
    [[ $smp =~ ^[1-8]$ ]] || fail "VM_SMP must be 1..8"
    # A vhost-user backend maps guest RAM itself: it must be a shared, passable fd.
    if [ "${VM_MEMFD:-0}" = 1 ]; then
        memory=(-object "memory-backend-memfd,id=mem0,size=${mem}M,share=on" -numa node,memdev=mem0)
    fi
    # no_timer_check: under a loaded TCG host the kernel's IO-APIC timer probe can
    # miss its window and, with interrupt remapping on, panics ("timer doesn't work
    # through Interrupt-remapped IO-APIC"); the probe proves nothing for our tests.
    local rc attempt
    for attempt in 1 2; do
        rc=0
        : >"$log"
        timeout --kill-after=5 "${VM_TIMEOUT:-120}" qemu-system-x86_64 \
            -accel tcg -M q35 -cpu max -smp "$smp" -m "$mem" "${memory[@]}" -nodefaults -display none -no-reboot \
            -serial "file:$log" -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
            -device intel-iommu,intremap=on,caching-mode=on \
            "${nic[@]}" \
            -kernel "$VM_CACHE/vmlinuz" -initrd "$t/initrd" \
            -append "console=ttyS0 intel_iommu=on iommu=pt panic=-1 quiet no_timer_check" \
            </dev/null >"$log.qemu" 2>&1 || rc=$?
        # Retry once only when the guest died before the payload started (a boot
        # failure of the guest kernel, not a test result).
        if [ $((rc & 1)) -eq 0 ] && [ $rc -ne 124 ] && ! grep -q '^harness: mode=' "$log"; then
            echo "vm-harness: guest died while booting (attempt $attempt, QEMU status $rc)" >&2
            sed 's/^/boot-failure: /' "$log" | tail -20 >&2
            continue
        fi
        break
    done
    sed 's/^/serial: /' "$log"
    sed 's/^/qemu: /' "$log.qemu"
    echo "vm-harness: serial log kept in $log"
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        echo "vm-harness: timeout after ${VM_TIMEOUT:-120} s" >&2
        exit 124
    fi
    # An odd status comes from isa-debug-exit; anything else means the guest died.
    [ $((rc & 1)) -eq 1 ] || fail "QEMU exited with $rc without a payload status (guest panic?)"
    local status=$((rc >> 1))
    if [ $status -eq 0 ] && [ "${VM_ALLOW_DMAR:-0}" != 1 ] &&
        grep -qE 'DMAR: \[|vtd_iommu_translate|detected translation failure' "$log" "$log.qemu"; then
        echo "vm-harness: the payload passed but the IOMMU reported faults (see DMAR lines above)" >&2
        exit 122
    fi
    exit $status
}

case "${1:-}" in
install) cmd_install ;;
cache) cmd_cache ;;
run)
    shift
    cmd_run "$@"
    ;;
*)
    sed -n '2,30p' "$0"
    exit 2
    ;;
esac
