//! The 82576 driver's batch paths against the register-level model: the cost of
//! `tx_batch` (reclaim, descriptor writes, one doorbell) and `rx_batch` (write-back
//! checks, buffer swap, re-arm, one doorbell) per batch of 64 frames.
//!
//! `igb_model_mq` times the same paths with RSS over 1 and 4 queue pairs, on 64
//! UDP/IPv4 flows (one frame each, valid checksums): `rx_batch` drains the queues
//! round-robin and maps the device's checksum verdict, `tx_batch` hashes each frame's
//! flow to its queue and rings one doorbell per queue used. `tx_csum_64x1514` asks
//! the device for every frame's UDP checksum (one context descriptor, reused), and
//! `tx_tso_30k` hands it one 30 000-byte TCP frame to segment (one context and 8-9
//! data descriptors).
//!
//! `IGB_BENCH_ROUNDS=N IGB_BENCH_PATH=tx|rx [IGB_BENCH_QUEUES=4] <bench binary>` runs
//! N batches of 64 UDP flows through [`tx_only`] / [`rx_only`] (never inlined) and
//! exits, for `valgrind --tool=callgrind --toggle-collect='*tx_only*'` (instructions
//! per frame, docs/benchmarks.md).
//!
//! `igb_model_tail` times `tx_batch` on 64 frames of 1514 and 9014 bytes (MTU 9000)
//! three ways: `linear` (the whole frame in the pool buffer), `gather` (64 bytes of
//! headers in the pool buffer, the rest an external tail with a device address in
//! memory mapped through the port's `DmaMap`: two or more data descriptors, no copy)
//! and `copy` (the same tail without a device address, joined into the buffer by
//! `tx_batch`). The tails' tokens return to their ring when `tx_batch` reclaims the
//! previous batch, inside the timed section.
//!
//! `mailbox` times the PF side of the SR-IOV mailbox: the pure message handler on a
//! SET_MULTICAST of 30 hashes, and an idle poll of the service (what every
//! `poll_every`-th `rx_batch` pays when no VF is talking).
//!
//! The model's own work (fetching TX descriptors, writing RX frames) happens outside
//! the timed section. Register accesses go through the model's mutex, which costs
//! more than the real MMIO write on x86 would only for the doorbell (one per batch).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use nicdrv::igb::model::{IgbModel, MODEL_MAC, ModelDma};
use nicdrv::igb::{IgbConfig, IgbPort, pool_buffer_size};
use pkt::{Batch, Completion, DoneRing, ExtSeg, Mempool, Port};

const FRAMES: usize = 64;

fn model_port() -> (IgbModel, Mempool, IgbPort<IgbModel, ModelDma>) {
    model_port_with(IgbConfig::default(), pool_buffer_size(1500))
}

fn model_port_with(
    cfg: IgbConfig,
    buf_size: usize,
) -> (IgbModel, Mempool, IgbPort<IgbModel, ModelDma>) {
    let pool = Mempool::new(4096, buf_size).expect("pool");
    let model = IgbModel::new();
    {
        let mut st = model.state();
        st.keep_wire = false;
        st.defer_tx = true;
    }
    let dma = ModelDma::new(&model, &pool);
    let port = IgbPort::new("bench", model.clone(), dma, pool.clone(), cfg).expect("init");
    (model, pool, port)
}

fn frame(len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&MODEL_MAC);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("igb_model");
    g.throughput(Throughput::Elements(FRAMES as u64));
    for len in [64usize, 1514] {
        let (model, pool, mut port) = model_port();
        let bytes = frame(len);
        g.bench_function(format!("tx_batch_64x{len}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut batch = Batch::new();
                for _ in 0..iters {
                    for _ in 0..FRAMES {
                        let mut buf = pool.alloc().expect("buffer");
                        buf.extend_from_slice(&bytes).expect("fits");
                        let _ = batch.push(buf);
                    }
                    let t = Instant::now();
                    let n = port.tx_batch(&mut batch);
                    total += t.elapsed();
                    assert_eq!(n, FRAMES);
                    model.process_tx();
                }
                total
            })
        });

        let (model, _pool, mut port) = model_port();
        g.bench_function(format!("rx_batch_64x{len}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut batch = Batch::new();
                for _ in 0..iters {
                    for _ in 0..FRAMES {
                        model.receive(&bytes);
                    }
                    let t = Instant::now();
                    let n = port.rx_batch(&mut batch);
                    total += t.elapsed();
                    assert_eq!(n, FRAMES);
                    batch.clear();
                }
                total
            })
        });
    }
    g.finish();
}

/// A UDP/IPv4 frame of flow `flow` to the model's MAC, `len` bytes, checksums valid.
fn udp_frame(flow: u16, len: usize) -> Vec<u8> {
    let (src, dst) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&MODEL_MAC);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let total = (len - 14) as u16;
    f[14..24].copy_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        17,
    ]);
    f[26..30].copy_from_slice(&src.octets());
    f[30..34].copy_from_slice(&dst.octets());
    let c = offload::checksum::internet_checksum(&f[14..34], 0);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f[34..36].copy_from_slice(&(10_000 + flow).to_be_bytes());
    f[36..38].copy_from_slice(&4789u16.to_be_bytes());
    f[38..40].copy_from_slice(&(total - 20).to_be_bytes());
    offload::checksum::fill_udp_checksum_v4(src, dst, &mut f[34..]).expect("udp");
    f
}

type ModelPort = IgbPort<IgbModel, ModelDma>;

/// The timed TX path: one `tx_batch` call (kept out of line for callgrind).
#[inline(never)]
fn tx_only(port: &mut ModelPort, batch: &mut Batch) -> usize {
    port.tx_batch(std::hint::black_box(batch))
}

/// The timed RX path: one `rx_batch` call (kept out of line for callgrind).
#[inline(never)]
fn rx_only(port: &mut ModelPort, batch: &mut Batch) -> usize {
    port.rx_batch(std::hint::black_box(batch))
}

/// Runs `rounds` batches of 64 UDP flows on one path, for callgrind.
fn fixed_rounds(rounds: u64, path: &str, queues: usize) {
    let flows: Vec<Vec<u8>> = (0..FRAMES as u16).map(|i| udp_frame(i, 64)).collect();
    let cfg = IgbConfig {
        queues,
        rss_key: Some(offload::rss::DEFAULT_KEY),
        ..IgbConfig::default()
    };
    let (model, pool, mut port) = model_port_with(cfg, pool_buffer_size(1500));
    let mut batch = Batch::new();
    let mut moved = 0;
    for _ in 0..rounds {
        if path == "tx" {
            for f in &flows {
                let mut buf = pool.alloc().expect("buffer");
                buf.extend_from_slice(f).expect("fits");
                let _ = batch.push(buf);
            }
            moved += tx_only(&mut port, &mut batch);
            model.process_tx();
        } else {
            for f in &flows {
                model.receive(f);
            }
            moved += rx_only(&mut port, &mut batch);
            batch.clear();
        }
    }
    println!("igb_model {path} ({queues} queue(s)): {moved} frames in {rounds} batches");
}

fn multiqueue(c: &mut Criterion) {
    let mut g = c.benchmark_group("igb_model_mq");
    g.throughput(Throughput::Elements(FRAMES as u64));
    let flows: Vec<Vec<u8>> = (0..FRAMES as u16).map(|i| udp_frame(i, 64)).collect();
    for queues in [1usize, 4] {
        let cfg = IgbConfig {
            queues,
            rss_key: Some(offload::rss::DEFAULT_KEY),
            ..IgbConfig::default()
        };
        let (model, pool, mut port) = model_port_with(cfg.clone(), pool_buffer_size(1500));
        g.bench_function(format!("tx_batch_64flows_{queues}q"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut batch = Batch::new();
                for _ in 0..iters {
                    for f in &flows {
                        let mut buf = pool.alloc().expect("buffer");
                        buf.extend_from_slice(f).expect("fits");
                        let _ = batch.push(buf);
                    }
                    let t = Instant::now();
                    let n = tx_only(&mut port, &mut batch);
                    total += t.elapsed();
                    assert_eq!(n, FRAMES);
                    model.process_tx();
                }
                total
            })
        });
        let (model, _pool, mut port) = model_port_with(cfg, pool_buffer_size(1500));
        g.bench_function(format!("rx_batch_64flows_{queues}q"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut batch = Batch::new();
                for _ in 0..iters {
                    for f in &flows {
                        model.receive(f);
                    }
                    let t = Instant::now();
                    let n = rx_only(&mut port, &mut batch);
                    total += t.elapsed();
                    assert_eq!(n, FRAMES);
                    batch.clear();
                }
                total
            })
        });
    }

    // Checksum offload: every frame asks for its UDP checksum.
    let (model, pool, mut port) = model_port();
    let frame = udp_frame(1, 1514);
    g.bench_function("tx_csum_64x1514", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut batch = Batch::new();
            for _ in 0..iters {
                for _ in 0..FRAMES {
                    let mut buf = pool.alloc().expect("buffer");
                    buf.extend_from_slice(&frame).expect("fits");
                    buf.meta.offload.flags = offload::vnet_hdr::NEEDS_CSUM;
                    buf.meta.offload.csum_start = 34;
                    buf.meta.offload.csum_offset = 6;
                    let _ = batch.push(buf);
                }
                let t = Instant::now();
                let n = port.tx_batch(&mut batch);
                total += t.elapsed();
                assert_eq!(n, FRAMES);
                model.process_tx();
            }
            total
        })
    });

    // TSO: one 30 000-byte TCP frame per call.
    g.throughput(Throughput::Elements(1));
    let (model, pool, mut port) = model_port_with(IgbConfig::default(), pkt::HEADROOM + 32 * 1024);
    let mut tcp = udp_frame(2, 30_000);
    tcp[23] = 6;
    tcp[24..26].copy_from_slice(&[0, 0]);
    let c = offload::checksum::internet_checksum(&tcp[14..34], 0);
    tcp[24..26].copy_from_slice(&c.to_be_bytes());
    tcp[46] = 0x50; // data offset 5
    tcp[47] = 0x10; // ACK
    offload::checksum::fill_tcp_checksum_v4(
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        &mut tcp[34..],
    )
    .expect("tcp");
    g.bench_function("tx_tso_30k", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut batch = Batch::new();
            for _ in 0..iters {
                let mut buf = pool.alloc().expect("buffer");
                buf.extend_from_slice(&tcp).expect("fits");
                buf.meta.offload = offload::gso::tso_request(buf.data_mut(), 1500).expect("tso");
                let _ = batch.push(buf);
                let t = Instant::now();
                let n = port.tx_batch(&mut batch);
                total += t.elapsed();
                assert_eq!(n, 1);
                model.process_tx();
            }
            total
        })
    });
    g.finish();
}

fn mailbox(c: &mut Criterion) {
    use nicdrv::igb::mailbox::{VfPolicy, VfState, handle_message, msg};
    use nicdrv::igb::sriov::{PfSriov, SriovConfig};
    let mut g = c.benchmark_group("igb_mailbox");
    let policy = VfPolicy::fixed_mac([0x52, 0x54, 0, 0, 0x10, 1]);
    let mut vf = VfState::new(policy.clone());
    let mut reset = [0u32; 16];
    reset[0] = msg::VF_RESET;
    handle_message(&mut vf, &reset);
    let mut mc = [0x0abc_0123u32; 16];
    mc[0] = msg::SET_MULTICAST | 30 << msg::INFO_SHIFT;
    g.bench_function("handle_set_multicast_30", |b| {
        b.iter(|| handle_message(&mut vf, std::hint::black_box(&mc)))
    });
    let model = IgbModel::new();
    let mut pf = PfSriov::new(&SriovConfig {
        vfs: vec![policy],
        poll_every: 1,
    })
    .expect("sriov");
    pf.program_device(&model, MODEL_MAC, 1522);
    g.bench_function("service_idle", |b| b.iter(|| pf.service(&model)));
    g.finish();
}

/// How a frame reaches `tx_batch` in `igb_model_tail`.
#[derive(Clone, Copy)]
enum TailMode {
    Linear,
    Gather,
    Copy,
}

fn tails(c: &mut Criterion) {
    const HEAD: usize = 64;
    let mut g = c.benchmark_group("igb_model_tail");
    g.throughput(Throughput::Elements(FRAMES as u64));
    for len in [1514usize, 9014] {
        for (name, mode) in [
            ("linear", TailMode::Linear),
            ("gather", TailMode::Gather),
            ("copy", TailMode::Copy),
        ] {
            let (model, pool, mut port) = model_port_with(
                IgbConfig {
                    mtu: 9000,
                    ..IgbConfig::default()
                },
                pool_buffer_size(9000),
            );
            let bytes = frame(len);
            // Guest memory: one tail per frame of a batch, leaked so it outlives
            // every frame the port holds.
            let guest: &'static mut [u8] = vec![0u8; FRAMES * len].leak();
            for chunk in guest.chunks_exact_mut(len) {
                chunk.copy_from_slice(&bytes);
            }
            let map = port.dma_map().expect("model DMA map");
            // SAFETY: `guest` is leaked: mapped in this process for good.
            let iova = unsafe { map.map(guest.as_ptr(), guest.len()) }.expect("map");
            let done = DoneRing::new(4 * FRAMES);
            g.bench_function(format!("tx_batch_64x{len}_{name}"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    let mut batch = Batch::new();
                    for _ in 0..iters {
                        for i in 0..FRAMES {
                            let mut buf = pool.alloc().expect("buffer");
                            if let TailMode::Linear = mode {
                                buf.extend_from_slice(&bytes).expect("fits");
                            } else {
                                buf.extend_from_slice(&bytes[..HEAD]).expect("fits");
                                let at = i * len + HEAD;
                                let ptr = std::ptr::NonNull::new(guest[at..].as_ptr().cast_mut())
                                    .expect("non-null");
                                let dma = match mode {
                                    TailMode::Gather => Some(iova + at as u64),
                                    _ => None,
                                };
                                // SAFETY: `guest` is leaked and never written after the
                                // fill above.
                                let tail = unsafe {
                                    ExtSeg::new(
                                        ptr,
                                        (len - HEAD) as u32,
                                        dma,
                                        Completion::new(done.clone(), i as u32),
                                    )
                                };
                                buf.attach_ext(tail);
                            }
                            let _ = batch.push(buf);
                        }
                        let t = Instant::now();
                        let n = tx_only(&mut port, &mut batch);
                        total += t.elapsed();
                        assert_eq!(n, FRAMES);
                        model.process_tx();
                        while done.pop().is_some() {}
                    }
                    total
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench, multiqueue, tails, mailbox);

fn main() {
    if let Ok(rounds) = std::env::var("IGB_BENCH_ROUNDS") {
        let rounds = rounds.parse().unwrap_or(100);
        let path = std::env::var("IGB_BENCH_PATH").unwrap_or_else(|_| "tx".into());
        let queues = std::env::var("IGB_BENCH_QUEUES")
            .ok()
            .and_then(|q| q.parse().ok())
            .unwrap_or(1);
        fixed_rounds(rounds, &path, queues);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
