//! Criterion benchmarks of the raw-L2 underlay stack (`overlay::underlay`): receive
//! classify + decapsulation of a batch of UDP frames, and transmit encapsulation with a
//! resolved neighbour, per frame.
//!
//! Frames are built and put on an in-memory wire in the untimed setup of each
//! iteration (`iter_batched`), so the timed part is exactly `rx_batch`/`tx_batch` of
//! the stack: parse Ethernet/IP/UDP, verify checksums, check addresses, strip the
//! headers (receive), or look up the next hop and prepend the headers (transmit).
//! Each iteration moves one batch of 64 frames: ns/frame = time / 64.

use std::net::SocketAddr;
use std::time::Instant;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use overlay::encap::{self, OuterHeaders};
use overlay::underlay::{L2Underlay, MemPort, MemWire, UnderlayOptions};
use pkt::wire::MacAddr;
use pkt::{BATCH_MAX, Batch, Mempool, PktBuf};

const OUR_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 1]);
const PEER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 2]);
/// Datagram payload sizes: a small frame and a full 1500-byte inner frame would not
/// fit one outer packet, so the large one is 1400 bytes (no fragmentation).
const SIZES: [usize; 2] = [64, 1400];

fn addrs(v6: bool) -> (SocketAddr, SocketAddr) {
    if v6 {
        (
            "[fd00::1]:9000".parse().expect("addr"),
            "[fd00::2]:9000".parse().expect("addr"),
        )
    } else {
        (
            "10.0.0.1:9000".parse().expect("addr"),
            "10.0.0.2:9000".parse().expect("addr"),
        )
    }
}

fn stack(pool: &Mempool, v6: bool) -> (L2Underlay, MemWire) {
    let (port, wire) = MemPort::new(pool.clone(), 1500);
    let (me, _) = addrs(v6);
    let opts = UnderlayOptions::new(OUR_MAC, me.ip(), me.port());
    let s = L2Underlay::new(Box::new(port), pool.clone(), opts).expect("stack");
    wire.discard_sent();
    (s, wire)
}

/// A whole outer frame from the peer to us carrying `len` payload bytes.
fn frame(pool: &Mempool, v6: bool, len: usize) -> Vec<u8> {
    let (me, peer) = addrs(v6);
    let mut b: PktBuf = pool.alloc().expect("buffer");
    b.extend_from_slice(&vec![0x5a; len]).expect("payload");
    let h = OuterHeaders {
        src_mac: PEER_MAC,
        dst_mac: OUR_MAC,
        vlan: None,
        src: peer,
        dst: me,
    };
    encap::push_outer(&mut b, &h, 1).expect("outer headers");
    b.data().to_vec()
}

fn rx(c: &mut Criterion) {
    let mut g = c.benchmark_group("underlay_rx_classify_decap");
    g.throughput(Throughput::Elements(BATCH_MAX as u64));
    for v6 in [false, true] {
        for len in SIZES {
            let pool = Mempool::new(1024, 2048).expect("pool");
            let (mut s, wire) = stack(&pool, v6);
            let f = frame(&pool, v6, len);
            let now = Instant::now();
            let name = format!("{}/{len}B", if v6 { "ipv6" } else { "ipv4" });
            g.bench_function(name, |b| {
                b.iter_batched(
                    || {
                        for _ in 0..BATCH_MAX {
                            wire.inject(&f);
                        }
                        Batch::new()
                    },
                    |mut batch| {
                        let n = s.rx_batch_at(&mut batch, now);
                        assert_eq!(n, BATCH_MAX);
                        // Returned: freed after the timing.
                        batch
                    },
                    BatchSize::PerIteration,
                );
            });
        }
    }
    g.finish();
}

fn tx(c: &mut Criterion) {
    let mut g = c.benchmark_group("underlay_tx_encap");
    g.throughput(Throughput::Elements(BATCH_MAX as u64));
    for v6 in [false, true] {
        for len in SIZES {
            let pool = Mempool::new(1024, 2048).expect("pool");
            let (mut s, wire) = stack(&pool, v6);
            let (_, peer) = addrs(v6);
            // Resolve the peer once: a datagram from it teaches nothing, so inject the
            // peer's reply to our resolution request.
            let mut batch = Batch::new();
            let mk = |pool: &Mempool| {
                let mut d = pool.alloc().expect("buffer");
                d.extend_from_slice(&vec![0x33; len]).expect("payload");
                d.meta.addr = Some(peer);
                d
            };
            batch.push(mk(&pool)).expect("room");
            let now = Instant::now();
            s.tx_batch_at(&mut batch, now);
            let mut peer_stack = {
                let (port, pw) = MemPort::new(pool.clone(), 1500);
                let o = UnderlayOptions::new(PEER_MAC, peer.ip(), peer.port());
                let ps = L2Underlay::new(Box::new(port), pool.clone(), o).expect("peer");
                (ps, pw)
            };
            for f in wire.take_sent() {
                peer_stack.1.inject_buf(f);
            }
            peer_stack.0.rx_batch_at(&mut batch, now);
            batch.clear();
            for f in peer_stack.1.take_sent() {
                wire.inject_buf(f);
            }
            s.rx_batch_at(&mut batch, now);
            batch.clear();
            wire.discard_sent();
            assert_eq!(s.neighbor(peer.ip()), Some(PEER_MAC), "peer resolved");
            let name = format!("{}/{len}B", if v6 { "ipv6" } else { "ipv4" });
            g.bench_function(name, |b| {
                b.iter_batched(
                    || {
                        wire.discard_sent();
                        let mut batch = Batch::new();
                        for _ in 0..BATCH_MAX {
                            let _ = batch.push(mk(&pool));
                        }
                        batch
                    },
                    |mut batch| {
                        let n = s.tx_batch_at(&mut batch, now);
                        assert_eq!(n, BATCH_MAX);
                        batch
                    },
                    BatchSize::PerIteration,
                );
            });
        }
    }
    g.finish();
}

criterion_group!(benches, rx, tx);
criterion_main!(benches);
