//! The 82599 driver's batch paths against the register-level model: the cost of
//! `tx_batch` (reclaim, link check every 1024 calls, descriptor writes, one TDT
//! doorbell) and `rx_batch` (write-back checks, checksum verdict, buffer swap, re-arm,
//! one RDT doorbell) per batch of 64 frames.
//!
//! The model's own work (fetching TX descriptors, writing RX frames) happens outside
//! the timed section. Register accesses go through the model's mutex, which costs more
//! than an MMIO write would; there are one or two per batch.
//!
//! Two modes:
//! - `cargo bench -p nicdrv --bench ixgbe_model`: criterion, nanoseconds per batch.
//! - `IXGBE_BENCH_ROUNDS=N IXGBE_BENCH_PATH=tx|rx <bench binary>`: runs N batches of
//!   the chosen path through [`tx_only`] / [`rx_only`] (never inlined) and exits, for
//!   `valgrind --tool=callgrind --toggle-collect='*tx_only*'` to count instructions
//!   per frame (see docs/benchmarks.md).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use nicdrv::ixgbe::model::{IxgbeModel, MODEL_MAC, ModelDma};
use nicdrv::ixgbe::{IxgbeConfig, IxgbePort, pool_buffer_size};
use pkt::{Batch, Mempool, Port};

const FRAMES: usize = 64;

type ModelPort = IxgbePort<IxgbeModel, ModelDma>;

fn model_port() -> (IxgbeModel, Mempool, ModelPort) {
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
        IxgbeConfig::default(),
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

fn fill_tx(pool: &Mempool, batch: &mut Batch, bytes: &[u8]) {
    for _ in 0..FRAMES {
        let mut buf = pool.alloc().expect("buffer");
        buf.extend_from_slice(bytes).expect("fits");
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
    for len in [64usize, 1514] {
        let bytes = frame(len);
        let (model, pool, mut port) = model_port();
        g.bench_function(format!("tx_batch_64x{len}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut batch = Batch::new();
                for _ in 0..iters {
                    fill_tx(&pool, &mut batch, &bytes);
                    let t = Instant::now();
                    let n = tx_only(&mut port, &mut batch);
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
fn fixed_rounds(rounds: u64, path: &str) {
    let bytes = frame(64);
    let (model, pool, mut port) = model_port();
    let mut batch = Batch::new();
    let mut frames = 0usize;
    for _ in 0..rounds {
        match path {
            "tx" => {
                fill_tx(&pool, &mut batch, &bytes);
                frames += tx_only(&mut port, &mut batch);
                model.process_tx();
            }
            _ => {
                for _ in 0..FRAMES {
                    model.receive(&bytes);
                }
                frames += rx_only(&mut port, &mut batch);
                batch.clear();
            }
        }
    }
    println!("ixgbe_model {path}: {frames} frames in {rounds} batches");
}

criterion_group!(benches, bench);

fn main() {
    if let Ok(rounds) = std::env::var("IXGBE_BENCH_ROUNDS") {
        let rounds = rounds.parse().unwrap_or(100);
        let path = std::env::var("IXGBE_BENCH_PATH").unwrap_or_else(|_| "tx".into());
        fixed_rounds(rounds, &path);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
