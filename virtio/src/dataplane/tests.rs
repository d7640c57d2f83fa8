//! The queue passes against virtio-queue's mock split rings: good frames move with their
//! bytes intact, bad chains are counted and the transmit queue keeps going, a bad
//! receive chain or ring index marks the queue broken.

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::net::OFFERED_FEATURES;

const QSIZE: u16 = 16;
const NEXT: u16 = VRING_DESC_F_NEXT as u16;
const WRITE: u16 = VRING_DESC_F_WRITE as u16;

fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).expect("test memory")
}

fn d(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(Descriptor::new(addr, len, flags, next))
}

fn neg() -> Negotiated {
    Negotiated::from_bits(OFFERED_FEATURES)
}

fn pool() -> Mempool {
    Mempool::new(64, 2048).expect("pool")
}

/// A frame of `len` bytes: broadcast destination, then a counting pattern.
fn frame(len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| i as u8).collect();
    f[..6].copy_from_slice(&[0xff; 6]);
    f
}

/// Publishes chains (by head index) on the avail ring.
fn make_avail(q: &MockSplitQueue<'_, GuestMemoryMmap>, heads: &[u16]) {
    for (i, h) in heads.iter().enumerate() {
        q.avail()
            .ring()
            .ref_at(i)
            .expect("ring slot")
            .store(u16::to_le(*h));
    }
    q.avail().idx().store(u16::to_le(heads.len() as u16));
}

#[test]
fn transmit_frame_arrives_whole_and_a_looping_chain_is_counted_without_stopping() {
    let m = mem();
    let mq = MockSplitQueue::new(&m, QSIZE);
    let f = frame(100);
    // Chain 0: 12-byte header + frame split in two readable buffers.
    m.write_slice(&[0u8; 12], GuestAddress(0x1_0000))
        .expect("hdr");
    m.write_slice(&f[..40], GuestAddress(0x2_0000)).expect("p1");
    m.write_slice(&f[40..], GuestAddress(0x3_0000)).expect("p2");
    mq.desc_table()
        .store(0, d(0x1_0000, 12, NEXT, 1))
        .expect("d");
    mq.desc_table()
        .store(1, d(0x2_0000, 40, NEXT, 2))
        .expect("d");
    mq.desc_table().store(2, d(0x3_0000, 60, 0, 0)).expect("d");
    // Chain 3: a loop. Chain 5: a good one-buffer frame.
    mq.desc_table()
        .store(3, d(0x4_0000, 64, NEXT, 4))
        .expect("d");
    mq.desc_table()
        .store(4, d(0x4_1000, 64, NEXT, 3))
        .expect("d");
    let mut second = vec![0u8; 12];
    second.extend_from_slice(&frame(60));
    m.write_slice(&second, GuestAddress(0x5_0000)).expect("f2");
    mq.desc_table().store(5, d(0x5_0000, 72, 0, 0)).expect("d");
    make_avail(&mq, &[0, 3, 5]);
    let mut q: Queue = mq.create_queue().expect("queue");
    let (pool, mut batch, mut chain) = (pool(), Batch::new(), Chain::default());
    let (mut traffic, mut drops) = (Traffic::default(), [0; DROP_NAMES.len()]);
    let pass = guest_tx(
        &mut q,
        &m,
        neg(),
        &pool,
        &mut batch,
        &mut chain,
        &mut traffic,
        &mut drops,
    )
    .expect("queue stays usable");
    assert_eq!(pass, Pass { frames: 2, used: 3 });
    assert_eq!(batch.as_slice()[0].data(), &f[..]);
    assert_eq!(batch.as_slice()[1].data(), &frame(60)[..]);
    assert_eq!(drops[ChainError::Loop.index()], 1);
    assert_eq!(
        traffic,
        Traffic {
            packets: 2,
            bytes: 160,
            gso: 0
        }
    );
    // Every chain, the bad one included, went back to the guest.
    assert_eq!(u16::from_le(mq.used().idx().load()), 3);
}

#[test]
fn runt_and_gso_frames_from_the_guest_are_dropped_by_name() {
    let m = mem();
    let mq = MockSplitQueue::new(&m, QSIZE);
    m.write_slice(&[0u8; 20], GuestAddress(0x1_0000))
        .expect("runt");
    mq.desc_table().store(0, d(0x1_0000, 20, 0, 0)).expect("d");
    let mut gso = vec![0u8; 12 + 60];
    gso[1] = offload::vnet_hdr::gso::TCPV4;
    gso[4] = 100; // gso_size
    m.write_slice(&gso, GuestAddress(0x2_0000)).expect("gso");
    mq.desc_table().store(1, d(0x2_0000, 72, 0, 0)).expect("d");
    make_avail(&mq, &[0, 1]);
    let mut q: Queue = mq.create_queue().expect("queue");
    let (pool, mut batch, mut chain) = (pool(), Batch::new(), Chain::default());
    let (mut traffic, mut drops) = (Traffic::default(), [0; DROP_NAMES.len()]);
    let pass = guest_tx(
        &mut q,
        &m,
        neg(),
        &pool,
        &mut batch,
        &mut chain,
        &mut traffic,
        &mut drops,
    )
    .expect("usable");
    assert_eq!(pass.frames, 0);
    assert_eq!(drops[drop::RX_RUNT], 1);
    assert_eq!(drops[drop::RX_GSO_NOT_NEGOTIATED], 1);
}

#[test]
fn avail_index_beyond_the_ring_marks_the_queue_broken() {
    let m = mem();
    let mq = MockSplitQueue::new(&m, QSIZE);
    mq.avail().idx().store(u16::to_le(QSIZE + 1));
    let mut q: Queue = mq.create_queue().expect("queue");
    let (pool, mut batch, mut chain) = (pool(), Batch::new(), Chain::default());
    let (mut traffic, mut drops) = (Traffic::default(), [0; DROP_NAMES.len()]);
    let r = guest_tx(
        &mut q,
        &m,
        neg(),
        &pool,
        &mut batch,
        &mut chain,
        &mut traffic,
        &mut drops,
    );
    assert!(r.is_err());
}

#[test]
fn receive_spreads_a_frame_over_mergeable_buffers_and_sets_num_buffers() {
    let m = mem();
    let mq = MockSplitQueue::new(&m, QSIZE);
    for i in 0..4u16 {
        mq.desc_table()
            .store(i, d(0x1_0000 + u64::from(i) * 0x1000, 64, WRITE, 0))
            .expect("d");
    }
    make_avail(&mq, &[0, 1, 2, 3]);
    let mut q: Queue = mq.create_queue().expect("queue");
    let pool = pool();
    let mut batch = Batch::new();
    let f = frame(100);
    let mut b = pool.alloc().expect("buf");
    b.reset_for_rx(pkt::HEADROOM);
    b.extend_from_slice(&f).expect("fill");
    batch.push(b).expect("push");
    let (mut chain, mut traffic, mut drops) =
        (Chain::default(), Traffic::default(), [0; DROP_NAMES.len()]);
    let pass = guest_rx(
        &mut q,
        &m,
        neg(),
        &mut batch,
        &mut chain,
        &mut traffic,
        &mut drops,
    )
    .expect("usable");
    assert_eq!(pass, Pass { frames: 1, used: 2 });
    assert!(batch.is_empty());
    let mut got = [0u8; 128];
    m.read_slice(&mut got[..64], GuestAddress(0x1_0000))
        .expect("r");
    m.read_slice(&mut got[64..], GuestAddress(0x1_1000))
        .expect("r");
    // Header: no flags, num_buffers = 2 (bytes 10..12, little-endian).
    assert_eq!(&got[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0]);
    assert_eq!(&got[12..112], &f[..]);
    let used0 = mq.used().ring().ref_at(0).expect("u").load();
    let used1 = mq.used().ring().ref_at(1).expect("u").load();
    let lens = [used0, used1].map(|e| {
        let raw: [u8; 8] = vm_memory::ByteValued::as_slice(&e)
            .try_into()
            .expect("8 bytes");
        u32::from_le_bytes(raw[4..8].try_into().expect("4"))
    });
    assert_eq!(lens, [64, 48]);
}

#[test]
fn receive_without_buffers_leaves_the_frame_queued() {
    let m = mem();
    let mq = MockSplitQueue::new(&m, QSIZE);
    let mut q: Queue = mq.create_queue().expect("queue");
    let pool = pool();
    let mut batch = Batch::new();
    let mut b = pool.alloc().expect("buf");
    b.reset_for_rx(pkt::HEADROOM);
    b.extend_from_slice(&frame(60)).expect("fill");
    batch.push(b).expect("push");
    let (mut chain, mut traffic, mut drops) =
        (Chain::default(), Traffic::default(), [0; DROP_NAMES.len()]);
    let pass = guest_rx(
        &mut q,
        &m,
        neg(),
        &mut batch,
        &mut chain,
        &mut traffic,
        &mut drops,
    )
    .expect("usable");
    assert_eq!(pass.frames, 0);
    assert_eq!(batch.len(), 1);
}

#[test]
fn a_bad_receive_chain_marks_the_queue_broken_and_is_counted() {
    let m = mem();
    let mq = MockSplitQueue::new(&m, QSIZE);
    // Readable (not WRITE) buffer on the receive queue.
    mq.desc_table()
        .store(0, d(0x1_0000, 2048, 0, 0))
        .expect("d");
    make_avail(&mq, &[0]);
    let mut q: Queue = mq.create_queue().expect("queue");
    let pool = pool();
    let mut batch = Batch::new();
    let mut b = pool.alloc().expect("buf");
    b.reset_for_rx(pkt::HEADROOM);
    b.extend_from_slice(&frame(60)).expect("fill");
    batch.push(b).expect("push");
    let (mut chain, mut traffic, mut drops) =
        (Chain::default(), Traffic::default(), [0; DROP_NAMES.len()]);
    let r = guest_rx(
        &mut q,
        &m,
        neg(),
        &mut batch,
        &mut chain,
        &mut traffic,
        &mut drops,
    );
    assert!(r.is_err());
    assert_eq!(drops[ChainError::WrongDirection.index()], 1);
}

#[test]
fn partial_checksum_is_completed_for_a_guest_without_guest_csum() {
    let m = mem();
    let mq = MockSplitQueue::new(&m, QSIZE);
    mq.desc_table()
        .store(0, d(0x1_0000, 2048, WRITE, 0))
        .expect("d");
    make_avail(&mq, &[0]);
    let mut q: Queue = mq.create_queue().expect("queue");
    // IPv4/UDP 10.0.0.1 -> 10.0.0.2, 4 bytes payload; checksum field holds the folded
    // pseudo-header sum, as a NEEDS_CSUM sender leaves it.
    let mut f = vec![0u8; 14 + 20 + 8 + 4];
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&(32u16).to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&[10, 0, 0, 1]);
    f[30..34].copy_from_slice(&[10, 0, 0, 2]);
    f[34..36].copy_from_slice(&1000u16.to_be_bytes());
    f[36..38].copy_from_slice(&2000u16.to_be_bytes());
    f[38..40].copy_from_slice(&12u16.to_be_bytes());
    f[42..46].copy_from_slice(b"ping");
    let pseudo =
        offload::checksum::pseudo_header_v4([10, 0, 0, 1].into(), [10, 0, 0, 2].into(), 17, 12);
    let folded = {
        let mut s = pseudo;
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    };
    f[40..42].copy_from_slice(&folded.to_be_bytes());
    let pool = pool();
    let mut batch = Batch::new();
    let mut b = pool.alloc().expect("buf");
    b.reset_for_rx(pkt::HEADROOM);
    b.extend_from_slice(&f).expect("fill");
    b.meta.offload = pkt::OffloadMeta {
        flags: offload::vnet_hdr::NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 6,
        ..Default::default()
    };
    batch.push(b).expect("push");
    let no_guest_csum = Negotiated {
        guest_csum: false,
        ..neg()
    };
    let (mut chain, mut traffic, mut drops) =
        (Chain::default(), Traffic::default(), [0; DROP_NAMES.len()]);
    guest_rx(
        &mut q,
        &m,
        no_guest_csum,
        &mut batch,
        &mut chain,
        &mut traffic,
        &mut drops,
    )
    .expect("usable");
    let mut got = vec![0u8; 12 + f.len()];
    m.read_slice(&mut got, GuestAddress(0x1_0000)).expect("r");
    assert_eq!(got[0], 0, "no NEEDS_CSUM flag for this guest");
    let udp = &got[12 + 34..];
    assert!(offload::checksum::verify_udp_v4(
        [10, 0, 0, 1].into(),
        [10, 0, 0, 2].into(),
        udp
    ));
}

/// An IPv4/TCP frame 10.0.0.1:40000 -> 10.0.0.2:5201 with `payload` bytes and the
/// checksum field holding the pseudo-header sum (as a TSO sender leaves it).
fn tcp4(payload: usize) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20 + payload];
    f[..6].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    let total = (f.len() - 14) as u16;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&[10, 0, 0, 1]);
    f[30..34].copy_from_slice(&[10, 0, 0, 2]);
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[36..38].copy_from_slice(&5201u16.to_be_bytes());
    f[46] = 0x50;
    f[47] = 0x18;
    for (i, b) in f[54..].iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    f
}

fn tso_hdr(gso_size: u16, hdr_len: u16, flags: u8) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0] = flags;
    h[1] = offload::vnet_hdr::gso::TCPV4;
    h[2..4].copy_from_slice(&hdr_len.to_le_bytes());
    h[4..6].copy_from_slice(&gso_size.to_le_bytes());
    h[6..8].copy_from_slice(&34u16.to_le_bytes());
    h[8..10].copy_from_slice(&16u16.to_le_bytes());
    h
}

fn tso_neg() -> Negotiated {
    Negotiated::from_bits(crate::net::offered_features(1, true))
}

#[test]
fn a_negotiated_tso_frame_from_the_guest_keeps_its_request_and_bad_ones_are_counted() {
    let m = mem();
    let mq = MockSplitQueue::new(&m, QSIZE);
    let f = tcp4(3000);
    let cases: [([u8; 12], usize); 4] = [
        (tso_hdr(1448, 54, 1), 0),     // good
        (tso_hdr(1448, 54, 0), 0),     // no NEEDS_CSUM
        (tso_hdr(1448, 60_000, 1), 0), // hdr_len past the frame
        (tso_hdr(0, 54, 1), 0),        // gso_size 0
    ];
    let mut at = 0x1_0000u64;
    for (i, (h, _)) in cases.iter().enumerate() {
        let mut chain = h.to_vec();
        chain.extend_from_slice(&f);
        m.write_slice(&chain, GuestAddress(at)).expect("frame");
        mq.desc_table()
            .store(i as u16, d(at, chain.len() as u32, 0, 0))
            .expect("d");
        at += 0x1_0000;
    }
    // A non-TCP frame asking for TSO.
    let mut udp = tso_hdr(1448, 54, 1).to_vec();
    let mut g = tcp4(100);
    g[23] = 17;
    udp.extend_from_slice(&g);
    m.write_slice(&udp, GuestAddress(at)).expect("frame");
    mq.desc_table()
        .store(4, d(at, udp.len() as u32, 0, 0))
        .expect("d");
    make_avail(&mq, &[0, 1, 2, 3, 4]);
    let mut q: Queue = mq.create_queue().expect("queue");
    let pool = Mempool::new(16, 8192).expect("pool");
    let (mut batch, mut chain) = (Batch::new(), Chain::default());
    let (mut traffic, mut drops) = (Traffic::default(), [0; DROP_NAMES.len()]);
    let pass = guest_tx(
        &mut q,
        &m,
        tso_neg(),
        &pool,
        &mut batch,
        &mut chain,
        &mut traffic,
        &mut drops,
    )
    .expect("usable");
    assert_eq!(pass, Pass { frames: 1, used: 5 });
    let got = &batch.as_slice()[0];
    assert_eq!(got.data(), &f[..]);
    assert_eq!(got.meta.offload.gso_type, offload::vnet_hdr::gso::TCPV4);
    assert_eq!(got.meta.offload.gso_size, 1448);
    assert_eq!(traffic.gso, 1);
    assert_eq!(
        drops[drop::RX_BAD_GSO],
        3,
        "no NEEDS_CSUM, hdr_len, not TCP"
    );
    assert_eq!(drops[drop::RX_BAD_VNET_HDR], 1, "gso_size 0");
}

#[test]
fn a_tso_frame_reaches_a_tso_guest_whole_with_its_header() {
    let m = mem();
    let mq = MockSplitQueue::new(&m, QSIZE);
    for i in 0..8u16 {
        mq.desc_table()
            .store(i, d(0x1_0000 + u64::from(i) * 1024, 1024, WRITE, 0))
            .expect("d");
    }
    make_avail(&mq, &[0, 1, 2, 3, 4, 5, 6, 7]);
    let mut q: Queue = mq.create_queue().expect("queue");
    let pool = Mempool::new(4, 8192).expect("pool");
    let f = tcp4(4000);
    let mut b = pool.alloc().expect("buf");
    b.reset_for_rx(pkt::HEADROOM);
    b.extend_from_slice(&f).expect("fill");
    b.meta.offload = offload::vnet_hdr::parse(&tso_hdr(1448, 54, 1))
        .expect("hdr")
        .0;
    let (mut chain, mut traffic, mut drops) =
        (Chain::default(), Traffic::default(), [0; DROP_NAMES.len()]);
    let mut rechecked = false;
    let r = deliver_frame(
        &mut q,
        &m,
        tso_neg(),
        &mut b,
        &mut chain,
        &mut rechecked,
        &mut traffic,
        &mut drops,
    )
    .expect("usable");
    let need = 12 + f.len();
    assert_eq!(r, Delivery::Delivered(need.div_ceil(1024)));
    let mut got = vec![0u8; need];
    m.read_slice(&mut got, GuestAddress(0x1_0000)).expect("r");
    let mut want_hdr = tso_hdr(1448, 54, 1);
    want_hdr[10] = need.div_ceil(1024) as u8;
    assert_eq!(&got[..12], &want_hdr);
    assert!(got[12..] == f[..], "the frame arrives whole");
    assert_eq!(traffic.gso, 1);
    // The same frame for a guest without TSO is refused here (the port cuts it first).
    let no_tso = Negotiated {
        guest_tso4: false,
        ..tso_neg()
    };
    let r = deliver_frame(
        &mut q,
        &m,
        no_tso,
        &mut b,
        &mut chain,
        &mut rechecked,
        &mut traffic,
        &mut drops,
    )
    .expect("usable");
    assert_eq!(r, Delivery::Dropped);
    assert_eq!(drops[drop::TX_GSO_UNSUPPORTED], 1);
}

#[test]
fn flow_hash_keeps_a_flow_and_tells_flows_apart() {
    let a = tcp4(10);
    let mut a_big = tcp4(1000);
    a_big[18..20].copy_from_slice(&[0x12, 0x34]); // another IP ID: same flow
    assert_eq!(flow_hash(&a), flow_hash(&a_big));
    let spread: std::collections::HashSet<u32> = (0..64u16)
        .map(|port| {
            let mut f = tcp4(10);
            f[34..36].copy_from_slice(&(40000 + port).to_be_bytes());
            flow_hash(&f) % 4
        })
        .collect();
    assert_eq!(spread.len(), 4, "64 flows use all 4 queues");
    assert_eq!(flow_hash(&[0u8; 3]), flow_hash(&[0u8; 3]));
}

mod zero_copy {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::tails::{COPY_HEAD, TxTails};

    /// Queue index the tests lend from (transmit queue of pair 0).
    const TXQ: usize = 1;

    /// A 1500-byte frame with a 12-byte header in one descriptor per chain, heads
    /// `0..n` at `0x1_0000 + 0x1000 * head`.
    fn one_buffer_chains(m: &GuestMemoryMmap, mq: &MockSplitQueue<'_, GuestMemoryMmap>, n: u16) {
        for h in 0..n {
            let mut bytes = vec![0u8; 12];
            bytes.extend(frame(1500).iter().map(|b| b ^ h as u8));
            let at = 0x1_0000 + 0x1000 * u64::from(h);
            m.write_slice(&bytes, GuestAddress(at)).expect("frame");
            mq.desc_table()
                .store(h, d(at, bytes.len() as u32, 0, 0))
                .expect("d");
        }
        make_avail(mq, &(0..n).collect::<Vec<_>>());
    }

    fn expected(h: u16) -> Vec<u8> {
        frame(1500).iter().map(|b| b ^ h as u8).collect()
    }

    fn whole(b: &pkt::PktBuf) -> Vec<u8> {
        let (head, tail) = b.parts();
        [head, tail].concat()
    }

    struct Pass1 {
        batch: Batch,
        drops: Drops,
        pass: Pass,
    }

    fn run(q: &mut Queue, pool: &Mempool, tails: &mut TxTails) -> Pass1 {
        let (mut batch, mut chain) = (Batch::new(), Chain::default());
        let (mut traffic, mut drops) = (Traffic::default(), [0; DROP_NAMES.len()]);
        let pass = guest_tx_tails(
            q,
            TXQ,
            neg(),
            pool,
            &mut batch,
            &mut chain,
            &mut traffic,
            &mut drops,
            tails,
        )
        .expect("queue usable");
        assert_eq!(
            traffic.bytes,
            1500 * batch.len() as u64,
            "whole frames counted"
        );
        Pass1 { batch, drops, pass }
    }

    fn used_idx(mq: &MockSplitQueue<'_, GuestMemoryMmap>) -> u16 {
        u16::from_le(mq.used().idx().load())
    }

    /// What the port does with returned tails: their chains go into the used ring.
    fn return_used(tails: &mut TxTails, q: &mut Queue, m: &GuestMemoryMmap) -> Vec<u16> {
        let mut heads = Vec::new();
        tails.drain(|queue, head| {
            assert_eq!(queue, TXQ);
            q.add_used(m, head, 0).expect("used");
            heads.push(head);
        });
        heads
    }

    #[test]
    fn a_lent_chain_is_used_only_after_its_frame_is_dropped() {
        let m = Arc::new(mem());
        let mq = MockSplitQueue::new(&*m, QSIZE);
        one_buffer_chains(&m, &mq, 2);
        let mut q: Queue = mq.create_queue().expect("queue");
        let mut tails = TxTails::new(1024, 8);
        tails.set_memory(&m);
        let pool = pool();
        let mut r = run(&mut q, &pool, &mut tails);
        assert_eq!(r.pass, Pass { frames: 2, used: 0 });
        assert_eq!(r.drops.iter().sum::<u64>(), 0);
        assert_eq!(tails.counters().zero_copy, 2);
        assert_eq!(tails.in_flight(), 2);
        for (h, b) in r.batch.iter().enumerate() {
            assert!(!b.is_linear());
            assert_eq!(b.len(), COPY_HEAD, "headers in the buffer");
            assert_eq!(whole(b), expected(h as u16));
        }
        assert!(return_used(&mut tails, &mut q, &m).is_empty());
        assert_eq!(used_idx(&mq), 0, "nothing used while the tails are out");
        // The second frame is joined (as for a port without EXT_TAIL), the first dropped.
        let mut frames = r.batch.drain();
        let first = frames.next().expect("frame 0");
        let mut second = frames.next().expect("frame 1");
        drop(frames);
        second.linearize().expect("fits");
        assert_eq!(second.data(), expected(1).as_slice());
        assert_eq!(return_used(&mut tails, &mut q, &m), [1]);
        assert_eq!(used_idx(&mq), 1);
        drop(first);
        assert_eq!(return_used(&mut tails, &mut q, &m), [0]);
        assert_eq!(used_idx(&mq), 2);
        assert_eq!(tails.in_flight(), 0);
        assert_eq!(tails.counters().stale, 0);
    }

    #[test]
    fn a_token_from_an_old_connection_or_a_reset_queue_is_ignored_and_counted() {
        let m = Arc::new(mem());
        let mq = MockSplitQueue::new(&*m, QSIZE);
        one_buffer_chains(&m, &mq, 2);
        let mut q: Queue = mq.create_queue().expect("queue");
        let mut tails = TxTails::new(1024, 8);
        tails.set_memory(&m);
        let pool = pool();
        let mut r = run(&mut q, &pool, &mut tails);
        let mut frames = r.batch.drain();
        let a = frames.next().expect("frame 0");
        let b = frames.next().expect("frame 1");
        drop(frames);
        tails.reset_queue(TXQ);
        drop(a);
        assert!(return_used(&mut tails, &mut q, &m).is_empty());
        tails.new_connection();
        assert_eq!(
            tails.counters().orphaned,
            1,
            "one tail was out at the disconnect"
        );
        // The old connection's memory stays mapped while the tail is out.
        assert!(Arc::strong_count(&m) >= 2);
        assert_eq!(whole(&b), expected(1));
        drop(b);
        assert!(return_used(&mut tails, &mut q, &m).is_empty());
        assert_eq!(used_idx(&mq), 0);
        assert_eq!(tails.counters().stale, 2);
        assert_eq!(tails.in_flight(), 0);
        assert_eq!(
            Arc::strong_count(&m),
            1,
            "the old map is let go once its tails are back"
        );
    }

    #[test]
    fn scattered_short_or_too_many_frames_are_copied() {
        let m = Arc::new(mem());
        let mq = MockSplitQueue::new(&*m, QSIZE);
        one_buffer_chains(&m, &mq, 3);
        // Chain 3: the frame in two buffers that do not follow each other.
        let f = frame(1500);
        m.write_slice(&[0u8; 12], GuestAddress(0x8_0000))
            .expect("hdr");
        m.write_slice(&f[..700], GuestAddress(0x9_0000))
            .expect("p1");
        m.write_slice(&f[700..], GuestAddress(0xa_0000))
            .expect("p2");
        mq.desc_table()
            .store(3, d(0x8_0000, 12, NEXT, 4))
            .expect("d");
        mq.desc_table()
            .store(4, d(0x9_0000, 700, NEXT, 5))
            .expect("d");
        mq.desc_table().store(5, d(0xa_0000, 800, 0, 0)).expect("d");
        make_avail(&mq, &[0, 1, 2, 3]);
        let mut q: Queue = mq.create_queue().expect("queue");
        // Room for two tails: the third frame is copied, and so is the scattered one.
        let mut tails = TxTails::new(1024, 2);
        tails.set_memory(&m);
        let pool = pool();
        let r = run(&mut q, &pool, &mut tails);
        assert_eq!(r.pass, Pass { frames: 4, used: 2 });
        let linear: Vec<bool> = r.batch.iter().map(pkt::PktBuf::is_linear).collect();
        assert_eq!(linear, [false, false, true, true]);
        assert_eq!(r.batch.as_slice()[2].data(), expected(2).as_slice());
        assert_eq!(r.batch.as_slice()[3].data(), f.as_slice());
        assert_eq!(tails.counters().zero_copy, 2);
        assert_eq!(tails.counters().fallback, 2);
        assert_eq!(used_idx(&mq), 2, "copied chains are used at once");
        // A threshold above the frame copies everything.
        let mut off = TxTails::new(2000, 2);
        off.set_memory(&m);
        assert!(!off.wants(1500));
    }

    /// A fake device map: region `k` at IOVA `0x1_0000_0000 * (k + 1)`, with the maps
    /// and unmaps it saw.
    #[derive(Default)]
    struct FakeDma {
        next: AtomicU64,
        log: Mutex<Vec<(&'static str, u64, usize)>>,
    }

    impl pkt::DmaMap for FakeDma {
        // Implementing the trait's `unsafe fn`; nothing unsafe is done.
        #[allow(unsafe_code)]
        unsafe fn map(&self, _vaddr: *const u8, len: usize) -> Result<u64, String> {
            let iova = 0x1_0000_0000 * (self.next.fetch_add(1, Ordering::Relaxed) + 1);
            self.log.lock().unwrap().push(("map", iova, len));
            Ok(iova)
        }
        fn unmap(&self, iova: u64, len: usize) {
            self.log.lock().unwrap().push(("unmap", iova, len));
        }
    }

    #[test]
    fn tails_carry_device_addresses_and_an_old_map_is_unmapped_after_its_tails() {
        let m = Arc::new(mem());
        let mq = MockSplitQueue::new(&*m, QSIZE);
        one_buffer_chains(&m, &mq, 1);
        let mut q: Queue = mq.create_queue().expect("queue");
        let dma = Arc::new(FakeDma::default());
        let mut tails = TxTails::new(1024, 8);
        tails.set_memory(&m);
        tails.set_dma_map(dma.clone());
        let pool = pool();
        let mut r = run(&mut q, &pool, &mut tails);
        let f = r.batch.drain().next().expect("frame");
        // Chain 0's frame starts at 0x1_000c (after the header); the tail after COPY_HEAD.
        let tail_gpa = 0x1_0000 + 12 + COPY_HEAD as u64;
        assert_eq!(
            f.ext().and_then(pkt::ExtSeg::dma),
            Some(0x1_0000_0000 + tail_gpa)
        );
        // A new memory table while the tail is out: mapped at once, the old one kept.
        let m2 = Arc::new(mem());
        tails.set_memory(&m2);
        let log = |d: &FakeDma| d.log.lock().unwrap().clone();
        assert_eq!(
            log(&dma),
            [
                ("map", 0x1_0000_0000, 0x10_0000),
                ("map", 0x2_0000_0000, 0x10_0000)
            ]
        );
        drop(f);
        assert!(return_used(&mut tails, &mut q, &m).len() == 1);
        assert_eq!(log(&dma)[2..], [("unmap", 0x1_0000_0000, 0x10_0000)]);
        drop(tails);
        assert_eq!(log(&dma)[3..], [("unmap", 0x2_0000_0000, 0x10_0000)]);
    }

    /// A device map that refuses every region, as VFIO does past RLIMIT_MEMLOCK.
    struct RefusingDma;

    impl pkt::DmaMap for RefusingDma {
        // Implementing the trait's `unsafe fn`; nothing unsafe is done.
        #[allow(unsafe_code)]
        unsafe fn map(&self, _vaddr: *const u8, _len: usize) -> Result<u64, String> {
            Err("Cannot allocate memory: raise the locked-memory limit".into())
        }
        fn unmap(&self, _iova: u64, _len: usize) {
            panic!("nothing was mapped");
        }
    }

    #[test]
    fn a_refused_map_is_counted_and_its_frames_are_copied_up_front() {
        let m = Arc::new(mem());
        let mq = MockSplitQueue::new(&*m, QSIZE);
        one_buffer_chains(&m, &mq, 1);
        let mut q: Queue = mq.create_queue().expect("queue");
        let mut tails = TxTails::new(1024, 8);
        tails.set_dma_map(Arc::new(RefusingDma));
        tails.set_memory(&m);
        assert_eq!(
            tails.counters().dma_map_failed,
            1,
            "one region, refused once"
        );
        let pool = pool();
        let mut r = run(&mut q, &pool, &mut tails);
        let f = r.batch.drain().next().expect("the frame still goes");
        // The NIC could not read it in place: copied here, the chain used at once.
        assert!(f.is_linear(), "a tail the NIC cannot reach was lent");
        assert_eq!(f.len(), 1500, "the whole frame, without its header");
        assert_eq!(tails.in_flight(), 0);
        assert_eq!(tails.counters().fallback, 1);
        drop(f);
        assert_eq!(return_used(&mut tails, &mut q, &m).len(), 0);
        drop(tails);
    }
}

#[test]
fn a_frame_with_a_tail_is_copied_into_mergeable_buffers_from_both_parts() {
    let m = mem();
    let mq = MockSplitQueue::new(&m, QSIZE);
    for i in 0..4u16 {
        mq.desc_table()
            .store(i, d(0x1_0000 + u64::from(i) * 0x1000, 512, WRITE, 0))
            .expect("d");
    }
    make_avail(&mq, &[0, 1, 2, 3]);
    let mut q: Queue = mq.create_queue().expect("queue");
    let pool = pool();
    let mut batch = Batch::new();
    let f = frame(1500);
    let ring = pkt::DoneRing::new(2);
    let mut b = pool.alloc().expect("buf");
    b.extend_from_slice(&f[..300]).expect("fill");
    let tail: &'static [u8] = Vec::leak(f[300..].to_vec());
    b.attach_ext(pkt::ExtSeg::from_static(
        tail,
        None,
        pkt::Completion::new(ring.clone(), 5),
    ));
    batch.push(b).expect("push");
    let (mut chain, mut traffic, mut drops) =
        (Chain::default(), Traffic::default(), [0; DROP_NAMES.len()]);
    let pass = guest_rx(
        &mut q,
        &m,
        neg(),
        &mut batch,
        &mut chain,
        &mut traffic,
        &mut drops,
    )
    .expect("usable");
    assert_eq!(pass, Pass { frames: 1, used: 3 });
    assert_eq!(traffic.bytes, 1500);
    assert_eq!(ring.pop(), Some(5), "the tail is released with the frame");
    let mut got = vec![0u8; 3 * 512];
    for i in 0..3u64 {
        let at = (i * 512) as usize;
        m.read_slice(&mut got[at..at + 512], GuestAddress(0x1_0000 + i * 0x1000))
            .expect("r");
    }
    assert_eq!(&got[12..1512], &f[..]);
}
