//! What zero-copy transmit saves per frame, by frame size: the guest's transmit queue
//! read into frames ([`dataplane::guest_tx`], a copy into a pool buffer, against
//! [`dataplane::guest_tx_tails`], which leaves the bytes past the headers in guest
//! memory), then every frame's bytes copied once more, as the kernel's `sendmmsg`
//! copies them, and the frames released (zero-copy: their chains returned to the used
//! ring). One iteration moves 64 frames (`Throughput::Elements(64)`), on
//! `virtio_queue`'s mock rings. The crossover sets `tails::DEFAULT_THRESHOLD`
//! (docs/benchmarks.md, issue 7).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use pkt::{Batch, Mempool};
use virtio::chain::Chain;
use virtio::dataplane::{self, DROP_NAMES, Traffic};
use virtio::net::{Negotiated, OFFERED_FEATURES};
use virtio::tails::TxTails;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Frames per iteration (one engine batch).
const FRAMES: u16 = 64;
/// Guest address of chain `i`'s buffer: one 16 KiB slot each.
fn slot(i: u16) -> u64 {
    0x10_0000 + 0x4000 * u64::from(i)
}

/// The guest's transmit ring with 64 one-buffer chains of a header and `len` bytes.
fn guest(len: usize) -> (Arc<GuestMemoryMmap>, Vec<u8>) {
    let m = Arc::new(
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x20_0000)]).expect("guest memory"),
    );
    let mut bytes = vec![0u8; 12 + len];
    bytes[12..18].copy_from_slice(&[0xff; 6]);
    for (i, b) in bytes[26..].iter_mut().enumerate() {
        *b = i as u8;
    }
    for i in 0..FRAMES {
        m.write_slice(&bytes, GuestAddress(slot(i))).expect("frame");
    }
    (m, bytes)
}

fn publish(mq: &MockSplitQueue<'_, GuestMemoryMmap>, len: usize) {
    for i in 0..FRAMES {
        let d = Descriptor::new(slot(i), (12 + len) as u32, 0, 0);
        mq.desc_table()
            .store(i, RawDescriptor::from(d))
            .expect("descriptor");
        mq.avail()
            .ring()
            .ref_at(usize::from(i))
            .expect("ring")
            .store(u16::to_le(i));
    }
    mq.avail().idx().store(u16::to_le(FRAMES));
}

/// Copies every frame once more (the kernel's copy) into `sink`.
fn send(batch: &mut Batch, sink: &mut [u8]) {
    for b in batch.iter() {
        let (head, tail) = b.parts();
        sink[..head.len()].copy_from_slice(head);
        sink[head.len()..head.len() + tail.len()].copy_from_slice(tail);
        black_box(&sink[0]);
    }
    batch.clear();
}

fn guest_tx(c: &mut Criterion) {
    let neg = Negotiated::from_bits(OFFERED_FEATURES);
    let pool = Mempool::new(256, 16 * 1024).expect("pool");
    let mut g = c.benchmark_group("guest_tx");
    g.throughput(Throughput::Elements(u64::from(FRAMES)));
    for len in [256usize, 512, 768, 1024, 1500, 4096, 9000] {
        let (m, _) = guest(len);
        let mq = MockSplitQueue::new(&*m, 256);
        publish(&mq, len);
        let mut sink = vec![0u8; 16 * 1024];
        let mut batch = Batch::new();
        let mut chain = Chain::default();
        let mut traffic = Traffic::default();
        let mut drops = [0; DROP_NAMES.len()];
        g.bench_function(format!("copy/{len}"), |b| {
            b.iter_batched(
                || mq.create_queue::<Queue>().expect("queue"),
                |mut q| {
                    let _ = dataplane::guest_tx(
                        &mut q,
                        &*m,
                        neg,
                        &pool,
                        &mut batch,
                        &mut chain,
                        &mut traffic,
                        &mut drops,
                    );
                    send(&mut batch, &mut sink);
                },
                BatchSize::SmallInput,
            )
        });
        let mut tails = TxTails::new(200, 512);
        tails.set_memory(&m);
        g.bench_function(format!("zero_copy/{len}"), |b| {
            b.iter_batched(
                || mq.create_queue::<Queue>().expect("queue"),
                |mut q| {
                    let _ = dataplane::guest_tx_tails(
                        &mut q,
                        1,
                        neg,
                        &pool,
                        &mut batch,
                        &mut chain,
                        &mut traffic,
                        &mut drops,
                        &mut tails,
                    );
                    send(&mut batch, &mut sink);
                    tails.drain(|_, head| {
                        let _ = q.add_used(&*m, head, 0);
                    });
                },
                BatchSize::SmallInput,
            )
        });
        assert_eq!(tails.in_flight(), 0);
    }
    g.finish();
}

criterion_group!(benches, guest_tx);
criterion_main!(benches);
