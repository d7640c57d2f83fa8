//! The 82576 driver's batch paths against the register-level model: the cost of
//! `tx_batch` (reclaim, descriptor writes, one doorbell) and `rx_batch` (write-back
//! checks, buffer swap, re-arm, one doorbell) per batch of 64 frames.
//!
//! `mailbox` times the PF side of the SR-IOV mailbox: the pure message handler on a
//! SET_MULTICAST of 30 hashes, and an idle poll of the service (what every
//! `poll_every`-th `rx_batch` pays when no VF is talking).
//!
//! The model's own work (fetching TX descriptors, writing RX frames) happens outside
//! the timed section. Register accesses go through the model's mutex, which costs
//! more than the real MMIO write on x86 would only for the doorbell (one per batch).

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nicdrv::igb::model::{IgbModel, MODEL_MAC, ModelDma};
use nicdrv::igb::{IgbConfig, IgbPort, pool_buffer_size};
use pkt::{Batch, Mempool, Port};

const FRAMES: usize = 64;

fn model_port() -> (IgbModel, Mempool, IgbPort<IgbModel, ModelDma>) {
    let pool = Mempool::new(4096, pool_buffer_size(1500)).expect("pool");
    let model = IgbModel::new();
    {
        let mut st = model.state();
        st.keep_wire = false;
        st.defer_tx = true;
    }
    let dma = ModelDma::new(&model, &pool);
    let port = IgbPort::new(
        "bench",
        model.clone(),
        dma,
        pool.clone(),
        IgbConfig::default(),
    )
    .expect("init");
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

criterion_group!(benches, bench, mailbox);
criterion_main!(benches);
