//! The 82599 driver's batch paths against the register-level model: the cost of
//! `tx_batch` (reclaim, link check every 1024 calls, descriptor writes, one TDT
//! doorbell) and `rx_batch` (write-back checks, checksum verdict, buffer swap, re-arm,
//! one RDT doorbell) per batch of 64 frames.
//!
//! The model's own work (fetching TX descriptors, writing RX frames) happens outside
//! the timed section. Register accesses go through the model's mutex, which costs more
//! than an MMIO write would; there are one or two per batch.
//!
//! The `_4q` cases run four queue pairs with RSS: 64 UDP flows per batch, spread by
//! the model's Toeplitz hash on receive and by the driver's flow hash on transmit.
//!
//! Two modes:
//! - `cargo bench -p nicdrv --bench ixgbe_model`: criterion, nanoseconds per batch.
//! - `IXGBE_BENCH_ROUNDS=N IXGBE_BENCH_PATH=tx|rx [IXGBE_BENCH_QUEUES=4] <bench
//!   binary>`: runs N batches of the chosen path through [`tx_only`] / [`rx_only`]
//!   (never inlined) and exits, for `valgrind --tool=callgrind
//!   --toggle-collect='*tx_only*'` to count instructions per frame (see
//!   docs/benchmarks.md).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use nicdrv::ixgbe::model::{IxgbeModel, MODEL_MAC, ModelDma};
use nicdrv::ixgbe::{IxgbeConfig, IxgbePort, pool_buffer_size};
use pkt::{Batch, Mempool, Port};

const FRAMES: usize = 64;

type ModelPort = IxgbePort<IxgbeModel, ModelDma>;

fn model_port(queues: usize) -> (IxgbeModel, Mempool, ModelPort) {
    let pool = Mempool::new(4096, pool_buffer_size(1500)).expect("pool");
    let model = IxgbeModel::new();
    {
        let mut st = model.state();
        st.keep_wire = false;
        st.defer_tx = true;
        st.link_reads = 0;
    }
    let dma = ModelDma::new(&model, &pool);
    let mut port = IxgbePort::new(
        "bench",
        model.clone(),
        dma,
        pool.clone(),
        IxgbeConfig {
            queues,
            ..IxgbeConfig::default()
        },
    )
    .expect("init");
    assert!(port.wait_link(Duration::from_secs(1)), "model link up");
    (model, pool, port)
}

fn frame(len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&MODEL_MAC);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f
}

/// 64 frames of 64 distinct UDP flows (source ports), `len` bytes each.
fn udp_flows(len: usize) -> Vec<Vec<u8>> {
    (0..FRAMES as u16)
        .map(|i| {
            let mut f = frame(len);
            f[12..14].copy_from_slice(&[0x08, 0x00]);
            f[14..34].copy_from_slice(&[
                0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
            ]);
            f[16..18].copy_from_slice(&((len - 14) as u16).to_be_bytes());
            f[34..36].copy_from_slice(&(40_000 + 7 * i).to_be_bytes());
            f[36..38].copy_from_slice(&4789u16.to_be_bytes());
            f[38..40].copy_from_slice(&((len - 34) as u16).to_be_bytes());
            f
        })
        .collect()
}

fn fill_tx(pool: &Mempool, batch: &mut Batch, frames: &[Vec<u8>]) {
    for f in frames.iter().cycle().take(FRAMES) {
        let mut buf = pool.alloc().expect("buffer");
        buf.extend_from_slice(f).expect("fits");
        let _ = batch.push(buf);
    }
}

/// The timed TX path: one `tx_batch` call (kept out of line for callgrind).
#[inline(never)]
fn tx_only(port: &mut ModelPort, batch: &mut Batch) -> usize {
    port.tx_batch(black_box(batch))
}

/// The timed RX path: one `rx_batch` call (kept out of line for callgrind).
#[inline(never)]
fn rx_only(port: &mut ModelPort, batch: &mut Batch) -> usize {
    port.rx_batch(black_box(batch))
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("ixgbe_model");
    g.throughput(Throughput::Elements(FRAMES as u64));
    let cases = [
        (64usize, 1usize, vec![frame(64)]),
        (1514, 1, vec![frame(1514)]),
        (64, 4, udp_flows(64)),
    ];
    for (len, queues, frames) in cases {
        let tag = if queues > 1 {
            format!("{len}_{queues}q")
        } else {
            format!("{len}")
        };
        let (model, pool, mut port) = model_port(queues);
        g.bench_function(format!("tx_batch_64x{tag}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut batch = Batch::new();
                for _ in 0..iters {
                    fill_tx(&pool, &mut batch, &frames);
                    let t = Instant::now();
                    let n = tx_only(&mut port, &mut batch);
                    total += t.elapsed();
                    assert_eq!(n, FRAMES);
                    model.process_tx();
                }
                total
            })
        });

        let (model, _pool, mut port) = model_port(queues);
        g.bench_function(format!("rx_batch_64x{tag}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut batch = Batch::new();
                for _ in 0..iters {
                    for f in frames.iter().cycle().take(FRAMES) {
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
    g.finish();
}

/// Runs `rounds` batches of one path with 64-byte frames, for callgrind.
fn fixed_rounds(rounds: u64, path: &str, queues: usize) {
    let frames = if queues > 1 {
        udp_flows(64)
    } else {
        vec![frame(64)]
    };
    let (model, pool, mut port) = model_port(queues);
    let mut batch = Batch::new();
    let mut sent = 0usize;
    for _ in 0..rounds {
        match path {
            "tx" => {
                fill_tx(&pool, &mut batch, &frames);
                sent += tx_only(&mut port, &mut batch);
                model.process_tx();
            }
            _ => {
                for f in frames.iter().cycle().take(FRAMES) {
                    model.receive(f);
                }
                sent += rx_only(&mut port, &mut batch);
                batch.clear();
            }
        }
    }
    println!("ixgbe_model {path} ({queues} queue(s)): {sent} frames in {rounds} batches");
}

criterion_group!(benches, bench);

fn main() {
    if let Ok(rounds) = std::env::var("IXGBE_BENCH_ROUNDS") {
        let rounds = rounds.parse().unwrap_or(100);
        let path = std::env::var("IXGBE_BENCH_PATH").unwrap_or_else(|_| "tx".into());
        let queues = std::env::var("IXGBE_BENCH_QUEUES")
            .ok()
            .and_then(|q| q.parse().ok())
            .unwrap_or(1);
        fixed_rounds(rounds, &path, queues);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
