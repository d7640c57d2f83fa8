#!/usr/bin/env bash
# Parallel TCP streams between two hosts (network namespaces over a veth), each stream
# between its own pair of tap guests, with the daemons at 1 and at N dispatcher shards,
# alternated in one run so both see the same machine. Prints each round and the ratio.
# Needs root and a release build (cargo build --release -p vnetp).
# Usage: sudo scripts/bench-shards.sh [--shards N] [--streams S] [--seconds T] [--rounds R]
set -euo pipefail
cd "$(dirname "$0")/.."

SHARDS=2 STREAMS=2 SECONDS_PER=3 ROUNDS=2
while [ $# -gt 0 ]; do
    case "$1" in
        --shards) SHARDS=$2; shift 2 ;;
        --streams) STREAMS=$2; shift 2 ;;
        --seconds) SECONDS_PER=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        *) echo "usage: $0 [--shards N] [--streams S] [--seconds T] [--rounds R]" >&2; exit 2 ;;
    esac
done
for v in "$SHARDS" "$STREAMS" "$SECONDS_PER" "$ROUNDS"; do
    [[ "$v" =~ ^[0-9]+$ ]] && [ "$v" -ge 1 ] || { echo "$0: counts must be positive integers" >&2; exit 2; }
done
[ "$STREAMS" -le 8 ] || { echo "$0: at most 8 streams" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "$0: needs root (network namespaces, taps)" >&2; exit 1; }
VNETP=target/release/vnetp
[ -x "$VNETP" ] || { echo "$0: build first: cargo build --release -p vnetp" >&2; exit 1; }
for t in iperf3 jq ss; do command -v $t >/dev/null || { echo "$0: needs $t (scripts/setup.sh installs it)" >&2; exit 1; }; done

TAG="vbs$$"
DIR=$(mktemp -d /tmp/vnetp-bench-shards.XXXXXX)
cleanup() {
    for h in a b; do
        [ -f "$DIR/$h.pid" ] && kill "$(cat "$DIR/$h.pid")" 2>/dev/null || true
    done
    sleep 0.5
    for ns in $(ip netns list | awk '{print $1}' | grep "^$TAG-" || true); do
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$DIR"
}
trap cleanup EXIT

mac() { printf '52:54:00:99:%02x:%02x' "$1" "$2"; }   # host (1 a, 2 b), guest index
gip() { echo "10.98.240.$(( $1 * 20 + $2 ))"; }      # overlay address of guest $2 of host $1

ip netns add "$TAG-a"
ip netns add "$TAG-b"
ip link add ul0 netns "$TAG-a" type veth peer name ul0 netns "$TAG-b"
ip -n "$TAG-a" addr add 10.99.240.1/24 dev ul0
ip -n "$TAG-b" addr add 10.99.240.2/24 dev ul0
for h in a b; do ip -n "$TAG-$h" link set ul0 up; ip -n "$TAG-$h" link set lo up; done

config() { # host-name host-no peer-no shards
    local name=$1 me=$2 peer=$3 shards=$4 i
    printf '[host]\nname = "%s"\nshards = %s\nunderlay = { kind = "udp", bind = "10.99.240.%s:9000" }\ncontrol = "%s/%s.sock"\n\n' \
        "$name" "$shards" "$me" "$DIR" "$name"
    printf '[[link]]\nname = "peer"\npeer = "10.99.240.%s:9000"\n\n' "$peer"
    for ((i = 0; i < STREAMS; i++)); do
        printf '[[interface]]\nname = "vm%s"\nkind = "tap"\nifname = "vt%s"\nmac = "%s"\n\n' "$i" "$i" "$(mac "$me" "$i")"
        printf '[[route]]\nsrc = "any"\ndst = "%s"\nto = { interface = "vm%s" }\n\n' "$(mac "$me" "$i")" "$i"
        printf '[[route]]\nsrc = "any"\ndst = "ff:ff:ff:ff:ff:ff"\nto = { interface = "vm%s" }\n\n' "$i"
        printf '[[route]]\nsrc = "any"\ndst = "%s"\nto = { link = "peer" }\n\n' "$(mac "$peer" "$i")"
    done
    printf '[[route]]\nsrc = "any"\ndst = "ff:ff:ff:ff:ff:ff"\nto = { link = "peer" }\n'
}

start() { # shards
    local h n peer i
    for h in a b; do
        if [ $h = a ]; then n=1 peer=2; else n=2 peer=1; fi
        config $h $n $peer "$1" >"$DIR/$h.toml"
        ip netns exec "$TAG-$h" "$VNETP" run --config "$DIR/$h.toml" >"$DIR/$h.log" 2>&1 &
        echo $! >"$DIR/$h.pid"
        for ((i = 0; i < 200; i++)); do
            "$VNETP" ctl --socket "$DIR/$h.sock" help >/dev/null 2>&1 && break
            sleep 0.1
        done
        "$VNETP" ctl --socket "$DIR/$h.sock" help >/dev/null || { cat "$DIR/$h.log" >&2; exit 1; }
        # Each guest's tap goes to its own namespace: its own TCP stack.
        for ((i = 0; i < STREAMS; i++)); do
            local g="$TAG-$h$i"
            ip netns add "$g"
            ip -n "$g" link set lo up
            ip -n "$TAG-$h" link set "vt$i" netns "$g"
            ip -n "$g" addr add "$(gip $n "$i")/24" dev "vt$i"
            ip -n "$g" link set "vt$i" up
        done
    done
}

stop() {
    local h
    for h in a b; do
        kill "$(cat "$DIR/$h.pid")" 2>/dev/null || true
        timeout 30 tail --pid="$(cat "$DIR/$h.pid")" -f /dev/null || true
        rm -f "$DIR/$h.pid"
    done
}

measure() { # shards -> prints the streams' summed Gbit/s
    local i sum=0 pids=()
    start "$1"
    for ((i = 0; i < STREAMS; i++)); do
        ip netns exec "$TAG-b$i" timeout $((SECONDS_PER + 30)) iperf3 -s -1 -B "$(gip 2 "$i")" >/dev/null 2>&1 &
        pids+=($!)
    done
    for ((i = 0; i < STREAMS; i++)); do
        for ((t = 0; t < 100; t++)); do
            ip netns exec "$TAG-b$i" ss -Hltn "sport = :5201" | grep -q . && break
            sleep 0.1
        done
        # One ARP round trip first, so the streams start together.
        ip netns exec "$TAG-a$i" ping -c 1 -W 5 "$(gip 2 "$i")" >/dev/null
    done
    for ((i = 0; i < STREAMS; i++)); do
        ip netns exec "$TAG-a$i" timeout $((SECONDS_PER + 30)) iperf3 -c "$(gip 2 "$i")" -t "$SECONDS_PER" -J >"$DIR/c$i.json" &
        pids+=($!)
    done
    wait "${pids[@]}" || true
    for ((i = 0; i < STREAMS; i++)); do
        sum=$(jq -r --argjson s "$sum" '$s + (.end.sum_received.bits_per_second // 0)' "$DIR/c$i.json")
    done
    stop
    # The guests' namespaces go with their taps' daemon; the next start makes new ones.
    for ((i = 0; i < STREAMS; i++)); do
        for h in a b; do ip netns del "$TAG-$h$i" 2>/dev/null || true; done
    done
    awk -v s="$sum" 'BEGIN { printf "%.2f", s / 1e9 }'
}

echo "vnetp bench-shards: $STREAMS parallel TCP streams, ${SECONDS_PER}s each, shards 1 vs $SHARDS, $ROUNDS round(s); $(nproc) CPUs"
printf '%-6s %14s %14s %7s\n' round "1 shard Gb/s" "$SHARDS shards Gb/s" ratio
for ((r = 1; r <= ROUNDS; r++)); do
    one=$(measure 1)
    many=$(measure "$SHARDS")
    printf '%-6s %14s %14s %7s\n' "$r" "$one" "$many" "$(awk -v a="$one" -v b="$many" 'BEGIN { if (a > 0) printf "%.2f", b / a; else print "-" }')"
done
