//! Criterion benchmarks of the packet path: route lookup, encapsulation, checksum, and a
//! whole [`Engine::poll_once`] round over in-memory ports.
//!
//! Every figure is per frame. Benches that move a batch declare
//! `Throughput::Elements(64)`, so criterion prints frames per second beside the time per
//! batch (ns/frame = time / 64); single-frame benches time one frame per iteration.
//! Nothing in a measured loop allocates: frames are generated up front, ports refill a
//! batch from the pool and the transmit side just frees what it is given.
//! Figures and how to read them: docs/benchmarks.md.

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{Criterion, Throughput, criterion_group};
use overlay::config::Dispatch;
use overlay::control::RouteSpec;
use overlay::encap::{self, OuterHeaders};
use overlay::engine::Engine;
use overlay::route::{Route, RouteTable};
use overlay::types::{Encap, Endpoint, EndpointRef, MacMatch};
use pkt::wire::MacAddr;
use pkt::{BATCH_MAX, Batch, Mempool, Port, PortCaps, PortKind, PortStats};

/// Frames per engine round: one full batch.
const BATCH: u64 = BATCH_MAX as u64;
/// Guest interfaces on the benchmarked host.
const INTERFACES: u8 = 4;
/// Links (vnetp, one peer each) on the benchmarked host.
const LINKS: u8 = 8;
/// Unicast routes: one per local interface, the rest to MACs behind the links.
const UNICAST_ROUTES: u8 = 64;
/// Ethernet frame sizes the engine benches move.
const FRAME_SIZES: [usize; 2] = [64, 1500];

/// MAC of local interface `i` (`52:54:00:00:00:0i`).
fn local_mac(i: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0, 0, 0, i])
}

/// MAC of the `i`-th remote guest (`52:54:00:00:01:ii`).
fn remote_mac(i: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0, 0, 1, i])
}

/// MAC of the `i`-th unicast route's destination: the local interfaces first.
fn unicast_mac(i: u8) -> MacAddr {
    if i < INTERFACES {
        local_mac(i)
    } else {
        remote_mac(i - INTERFACES)
    }
}

/// The underlay address of link `i`'s peer.
fn peer(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 2 + i], 9000))
}

/// An IPv4 Ethernet frame of `len` bytes (at least 14) from `src` to `dst`.
fn frame(dst: MacAddr, src: MacAddr, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x08, 0x00]);
    f.resize(len, 0x5a);
    f
}

/// The realistic table every bench routes with, as (src, dst, to) by endpoint slot:
/// 64 unicast routes (4 local interfaces, 60 remote guests spread over 8 links) and a
/// broadcast route to every interface and link (12 copies before the arrival is left out).
fn table_routes() -> Vec<(MacMatch, MacMatch, Endpoint)> {
    let mut routes = Vec::new();
    for i in 0..UNICAST_ROUTES {
        let to = if i < INTERFACES {
            Endpoint::Interface(u16::from(i))
        } else {
            Endpoint::Link(u16::from((i - INTERFACES) % LINKS))
        };
        routes.push((MacMatch::Any, MacMatch::Exact(unicast_mac(i)), to));
    }
    let everyone = (0..INTERFACES)
        .map(|i| Endpoint::Interface(u16::from(i)))
        .chain((0..LINKS).map(|l| Endpoint::Link(u16::from(l))));
    for to in everyone {
        routes.push((MacMatch::Any, MacMatch::Exact(MacAddr::BROADCAST), to));
    }
    routes
}

fn route_table() -> RouteTable {
    let mut t = RouteTable::new();
    for (src, dst, to) in table_routes() {
        t.add(Route {
            src,
            dst,
            to,
            from: None,
        })
        .expect("bench routes are distinct");
    }
    t
}

fn route_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_lookup");
    g.throughput(Throughput::Elements(BATCH));

    // Hit: one batch of 64 frames from vm0 to every unicast destination, all cached.
    let mut table = route_table();
    let arrival = Endpoint::Interface(0);
    let batch: Vec<Vec<u8>> = (0..UNICAST_ROUTES)
        .map(|i| frame(unicast_mac(i), local_mac(0), 64))
        .collect();
    // Warm the cache, then check a second pass only hits (before measuring, so the check
    // holds when a filter skips the bench).
    for _ in 0..2 {
        for f in &batch {
            table.lookup(arrival, f);
        }
    }
    assert_eq!(
        table.cache_stats(),
        (BATCH, BATCH),
        "cache_hit must only hit the cache"
    );
    g.bench_function("cache_hit", |b| {
        b.iter(|| {
            let mut n = 0;
            for f in &batch {
                n += table.lookup(arrival, black_box(f)).len();
            }
            black_box(n)
        })
    });

    // Miss: 8192 distinct (dst, src) keys cycled in order, 8x the 1024 cache entries, so
    // the round-robin ways of every set are always overwritten before a key returns.
    let mut table = route_table();
    let keys: Vec<[u8; 14]> = (0..128u8)
        .flat_map(|s| (0..UNICAST_ROUTES).map(move |d| (d, s)))
        .map(|(d, s)| {
            let mut k = [0u8; 14];
            k[..6].copy_from_slice(&unicast_mac(d).0);
            k[6..12].copy_from_slice(&[0x52, 0x54, 0, 0, 2, s]);
            k[12..].copy_from_slice(&[0x08, 0x00]);
            k
        })
        .collect();
    // Two passes over every key: the second must miss as often as the first.
    for _ in 0..2 {
        for k in &keys {
            table.lookup(arrival, k);
        }
    }
    let (hits, misses) = table.cache_stats();
    assert!(
        hits * 100 <= misses,
        "cache_miss must miss: {hits} hits, {misses} misses"
    );
    let mut chunks = keys.chunks_exact(BATCH_MAX).cycle();
    g.bench_function("cache_miss", |b| {
        b.iter(|| {
            let mut n = 0;
            let chunk = chunks.next().unwrap_or_default();
            for f in chunk {
                n += table.lookup(arrival, black_box(f)).len();
            }
            black_box(n)
        })
    });
    assert!(
        hits * 100 <= misses,
        "cache_miss must miss: {hits} hits, {misses} misses"
    );
    g.finish();
}

fn encapsulation(c: &mut Criterion) {
    let pool = Mempool::new(8, 2048).expect("mempool");
    let inner = frame(remote_mac(0), local_mac(0), 64);
    let mut buf = pool.alloc().expect("a free buffer");
    buf.extend_from_slice(&inner).expect("64 bytes fit");
    let outer = OuterHeaders {
        src_mac: MacAddr([0x02, 0, 0, 0, 0, 1]),
        dst_mac: MacAddr([0x02, 0, 0, 0, 0, 2]),
        vlan: None,
        src: SocketAddr::from(([192, 168, 1, 1], 9000)),
        dst: SocketAddr::from(([192, 168, 1, 2], 9000)),
    };

    let mut g = c.benchmark_group("encap");
    g.throughput(Throughput::Elements(1));
    g.bench_function("vxlan_push_pull", |b| {
        b.iter(|| {
            encap::vxlan_push(&mut buf, black_box(42)).expect("headroom for vxlan");
            black_box(encap::vxlan_pull(&mut buf).expect("the header just pushed"))
        })
    });
    let mut ident = 0u16;
    g.bench_function("push_outer_ipv4", |b| {
        b.iter(|| {
            ident = ident.wrapping_add(1);
            encap::push_outer(&mut buf, black_box(&outer), ident).expect("headroom for outer");
            black_box(buf.data()[0]);
            buf.strip_front(outer.header_len())
                .expect("the headers just pushed");
        })
    });
    encap::push_outer(&mut buf, &outer, 1).expect("headroom for outer");
    let wire = buf.data().to_vec();
    assert_eq!(wire.len(), 42 + 64);
    g.bench_function("parse_outer_ipv4", |b| {
        b.iter(|| black_box(encap::parse_outer(black_box(&wire))).is_ok())
    });
    g.finish();

    // The software fallback a port without TX_CSUM pays: a UDP/IPv4 checksum over a
    // full 1500-byte segment.
    let segment: Vec<u8> = (0..1500u32).map(|i| (i * 7) as u8).collect();
    let (src, dst) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
    let mut g = c.benchmark_group("checksum");
    g.throughput(Throughput::Bytes(segment.len() as u64));
    g.bench_function("1500B", |b| {
        b.iter(|| offload::checksum::udp_checksum_v4(src, dst, black_box(&segment)).ok())
    });
    g.finish();
}

/// An in-memory port: `rx_batch` fills the batch from the pool with copies of
/// pre-generated frames (cycling through them), `tx_batch` frees what it is given.
struct RefillPort {
    kind: PortKind,
    pool: Mempool,
    frames: Vec<Vec<u8>>,
    addr: Option<SocketAddr>,
    next: usize,
}

impl RefillPort {
    fn new(kind: PortKind, pool: &Mempool, frames: Vec<Vec<u8>>, addr: Option<SocketAddr>) -> Self {
        Self {
            kind,
            pool: pool.clone(),
            frames,
            addr,
            next: 0,
        }
    }

    fn sink(kind: PortKind, pool: &Mempool) -> Self {
        Self::new(kind, pool, Vec::new(), None)
    }
}

impl Port for RefillPort {
    fn name(&self) -> &str {
        "mem"
    }

    fn rx_batch(&mut self, batch: &mut Batch) -> usize {
        let mut n = 0;
        while !batch.is_full() {
            let Some(bytes) = self.frames.get(self.next) else {
                break;
            };
            let Some(mut b) = self.pool.alloc() else {
                break;
            };
            if b.extend_from_slice(bytes).is_err() {
                break;
            }
            b.meta.addr = self.addr;
            if batch.push(b).is_err() {
                break;
            }
            self.next += 1;
            if self.next == self.frames.len() {
                self.next = 0;
            }
            n += 1;
        }
        n
    }

    fn tx_batch(&mut self, batch: &mut Batch) -> usize {
        let n = batch.len();
        batch.clear();
        n
    }

    fn caps(&self) -> PortCaps {
        PortCaps {
            kind: self.kind,
            mtu: 1500,
            rx_queues: 1,
            tx_queues: 1,
            offloads: pkt::Offloads::NONE,
        }
    }

    fn stats(&self) -> PortStats {
        PortStats::default()
    }

    fn poll_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
}

/// Where the engine bench's frames come from.
#[derive(Clone, Copy)]
enum Source {
    /// Interface vm0 sends to remote guests behind the vnetp links.
    Interface,
    /// Link 0's peer sends to the local interfaces.
    Underlay,
}

/// A host with 4 interfaces, 8 vnetp links and [`table_routes`]; `source` feeds 64
/// pre-generated frames of `len` bytes per round, every other port only transmits.
fn host(source: Source, len: usize) -> Engine {
    host_with_pool(source, len, Mempool::new(1024, 2048).expect("mempool"))
}

/// A pool shaped like the one `vnetp run` maps for taps at a 64 KiB MTU: 2048 buffers
/// of 64 KiB + headroom (128 MiB). A FIFO free list walks all of it; a per-thread
/// LIFO cache keeps reusing a few hot buffers.
fn daemon_pool() -> Mempool {
    Mempool::new(2048, 128 + 12 + 65_535 + 14 + 4 + 8).expect("daemon-sized mempool")
}

/// [`host`] on a given pool.
fn host_with_pool(source: Source, len: usize, pool: Mempool) -> Engine {
    let underlay = match source {
        Source::Interface => RefillPort::sink(PortKind::Datagram, &pool),
        Source::Underlay => {
            // Remote guests behind link 0 to every local interface in turn.
            let frames = (0..BATCH_MAX)
                .map(|i| {
                    frame(
                        local_mac(i as u8 % INTERFACES),
                        remote_mac(i as u8 % LINKS * LINKS),
                        len,
                    )
                })
                .collect();
            RefillPort::new(PortKind::Datagram, &pool, frames, Some(peer(0)))
        }
    };
    let mut engine =
        Engine::new("bench", pool.clone(), Box::new(underlay), Dispatch::Polling).expect("engine");
    for i in 0..INTERFACES {
        let port = match (source, i) {
            (Source::Interface, 0) => {
                let frames = (0..BATCH_MAX)
                    .map(|d| {
                        frame(
                            remote_mac(d as u8 % (UNICAST_ROUTES - INTERFACES)),
                            local_mac(0),
                            len,
                        )
                    })
                    .collect();
                RefillPort::new(PortKind::Ethernet, &pool, frames, None)
            }
            _ => RefillPort::sink(PortKind::Ethernet, &pool),
        };
        engine
            .add_interface(&format!("vm{i}"), "tap", local_mac(i), Box::new(port))
            .expect("interface");
    }
    for l in 0..LINKS {
        engine
            .add_link(&format!("l{l}"), peer(l), Encap::Vnetp)
            .expect("link");
    }
    for (src, dst, to) in table_routes() {
        let to = match to {
            Endpoint::Interface(i) => EndpointRef::Interface(format!("vm{i}")),
            Endpoint::Link(l) => EndpointRef::Link(format!("l{l}")),
        };
        engine
            .add_route(&RouteSpec {
                src,
                dst,
                to,
                from: None,
            })
            .expect("route");
    }
    // Every frame must reach a port: a bench of drops would measure the wrong path.
    for _ in 0..4 {
        assert_eq!(engine.poll_once(), BATCH_MAX);
    }
    let s = engine.stats();
    assert_eq!(s.drops, Default::default(), "no frame may be dropped");
    let sent: u64 = match source {
        Source::Interface => s.links.iter().map(|l| l.counters.tx_packets).sum(),
        Source::Underlay => s.interfaces.iter().map(|f| f.counters.tx_packets).sum(),
    };
    assert_eq!(sent, 4 * BATCH);
    engine
}

fn engine_round(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(BATCH));
    for len in FRAME_SIZES {
        let mut e = host(Source::Interface, len);
        g.bench_function(format!("interface_to_link/{len}B"), |b| {
            b.iter(|| e.poll_once())
        });
        let mut e = host(Source::Underlay, len);
        g.bench_function(format!("underlay_to_interface/{len}B"), |b| {
            b.iter(|| e.poll_once())
        });

        // The same rounds on a pool shaped like the daemon's (64 KiB buffers).
        let mut e = host_with_pool(Source::Interface, len, daemon_pool());
        g.bench_function(format!("interface_to_link_daemon_pool/{len}B"), |b| {
            b.iter(|| e.poll_once())
        });

        // The ports' own share of the rounds above: alloc + copy in, free on transmit.
        let pool = Mempool::new(1024, 2048).expect("mempool");
        let frames = vec![frame(remote_mac(0), local_mac(0), len); BATCH_MAX];
        let mut port = RefillPort::new(PortKind::Ethernet, &pool, frames, None);
        let mut batch = Batch::new();
        g.bench_function(format!("ports_only/{len}B"), |b| {
            b.iter(|| {
                let n = port.rx_batch(&mut batch);
                port.tx_batch(&mut batch);
                n
            })
        });
    }
    g.finish();
}

/// Link encryption: seal on the sender plus open on the receiver, per frame.
fn link_crypto(c: &mut Criterion) {
    use overlay::crypto::LinkCrypto;
    let pool = Mempool::new(8, 2048).expect("mempool");
    let key = [7u8; 32];
    let mut g = c.benchmark_group("crypto");
    g.throughput(Throughput::Elements(1));
    for len in [64usize, 1500] {
        let (mut tx, mut rx) = (LinkCrypto::new(&key), LinkCrypto::new(&key));
        let mut buf = pool.alloc().expect("a free buffer");
        buf.extend_from_slice(&frame(remote_mac(0), local_mac(0), len))
            .expect("frame fits");
        g.bench_function(format!("seal_open_{len}B"), |b| {
            b.iter(|| {
                tx.seal(&mut buf).expect("room for header and tag");
                rx.open(&mut buf).expect("authentic");
                black_box(buf.len())
            })
        });
        assert_eq!(buf.len(), len, "seal+open is the identity");
    }
    g.finish();
}

criterion_group!(
    benches,
    route_lookup,
    encapsulation,
    engine_round,
    link_crypto
);

/// Instruction counting under callgrind, outside criterion: with
/// `VNETP_ICOUNT_ROUNDS=N` the binary builds one host (`VNETP_ICOUNT_CASE`:
/// `interface_to_link` or `underlay_to_interface`, 64-byte frames, daemon-sized pool
/// with `VNETP_ICOUNT_POOL=daemon`), runs N engine rounds of 64 frames and exits.
/// Two runs with different N give instructions per frame without the setup:
/// (Ir(N2) - Ir(N1)) / ((N2 - N1) * 64). See docs/benchmarks.md.
fn icount(rounds: u64) {
    let source = match std::env::var("VNETP_ICOUNT_CASE").as_deref() {
        Ok("underlay_to_interface") => Source::Underlay,
        _ => Source::Interface,
    };
    let pool = match std::env::var("VNETP_ICOUNT_POOL").as_deref() {
        Ok("daemon") => daemon_pool(),
        _ => Mempool::new(1024, 2048).expect("mempool"),
    };
    let mut e = host_with_pool(source, 64, pool);
    let mut moved = 0;
    for _ in 0..rounds {
        moved += e.poll_once();
    }
    assert_eq!(
        moved as u64,
        rounds * BATCH,
        "every round moves a full batch"
    );
    black_box(moved);
}

fn main() {
    if let Some(rounds) = std::env::var("VNETP_ICOUNT_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        icount(rounds);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
