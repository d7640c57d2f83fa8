//! Frames with external tails ([`pkt::ExtSeg`]) through the 82576 driver and the model:
//! the device gathers the pool buffer and the tail from their own descriptors, through
//! the model's IOMMU check, and the tail's owner gets it back only after write-back.

use std::net::Ipv4Addr;
use std::ptr::NonNull;
use std::sync::Arc;

use offload::checksum::{verify_ipv4_header, verify_tcp_v4};
use pkt::{Batch, Completion, DmaMap, DoneRing, ExtSeg, Mempool, Offloads, Port};

use super::model::IgbModel;
use super::offload_tests::{ModelPort, cfg, port_with, tcp_frame_v4};
use super::{IgbConfig, pool_buffer_size};

/// Memory standing in for a guest's: host memory the port maps through its
/// [`DmaMap`], which frames' tails point into. Leaked, so it outlives every frame
/// (tests drop the port, and the frames in its ring, after this).
struct Guest {
    mem: &'static mut [u8],
    iova: u64,
    map: Arc<dyn DmaMap>,
    done: Arc<DoneRing>,
    /// Next free byte of `mem`.
    used: usize,
}

impl Guest {
    fn mapped(port: &ModelPort, bytes: usize) -> Self {
        let mem = vec![0u8; bytes].leak();
        let map = port.dma_map().expect("the model port has a DMA map");
        // SAFETY: `mem` is leaked: it stays mapped in this process for good.
        let iova = unsafe { map.map(mem.as_ptr(), mem.len()) }.expect("map");
        Self {
            mem,
            iova,
            map,
            done: DoneRing::new(1024),
            used: 0,
        }
    }

    /// Copies `bytes` into guest memory after the previous tail and returns a tail
    /// over them claiming device address `dma`.
    fn tail_as(&mut self, bytes: &[u8], token: u32, dma: Option<u64>) -> ExtSeg {
        let at = self.used;
        self.used += bytes.len();
        self.mem[at..at + bytes.len()].copy_from_slice(bytes);
        let ptr = NonNull::new(self.mem[at..].as_mut_ptr()).expect("non-null");
        // SAFETY: the memory is leaked and these bytes are never written again (each
        // tail gets fresh bytes).
        unsafe {
            ExtSeg::new(
                ptr,
                bytes.len() as u32,
                dma,
                Completion::new(self.done.clone(), token),
            )
        }
    }

    /// A tail holding `bytes` at their mapped device address.
    fn tail(&mut self, bytes: &[u8], token: u32) -> ExtSeg {
        let dma = self.iova + self.used as u64;
        self.tail_as(bytes, token, Some(dma))
    }

    fn returned(&self) -> Vec<u32> {
        std::iter::from_fn(|| self.done.pop()).collect()
    }
}

/// A pool buffer with `head`, followed by `tail`.
fn tailed(pool: &Mempool, head: &[u8], tail: ExtSeg) -> pkt::PktBuf {
    let mut b = pool.alloc().expect("buffer");
    b.extend_from_slice(head).expect("fits");
    b.attach_ext(tail);
    b
}

/// A test frame of `len` bytes (Ethernet header, then a pattern with `seq`).
fn frame(seq: u32, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&super::offload_tests::PEER_MAC);
    f.extend_from_slice(&super::model::MODEL_MAC);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(&seq.to_be_bytes());
    while f.len() < len {
        f.push((f.len() as u32).wrapping_mul(13).wrapping_add(seq) as u8);
    }
    f
}

fn jumbo_port() -> (IgbModel, ModelPort, Mempool) {
    let pool = Mempool::new(512, pool_buffer_size(9000)).expect("pool");
    let (model, port) = port_with(
        IgbConfig {
            mtu: 9000,
            ..cfg(1)
        },
        &pool,
    );
    (model, port, pool)
}

#[test]
fn the_pf_port_advertises_external_tails_and_gives_a_dma_map() {
    let pool = super::offload_tests::pool();
    let (_model, port) = port_with(cfg(1), &pool);
    assert!(port.caps().offloads.contains(Offloads::EXT_TAIL));
    assert!(port.dma_map().is_some());
}

#[test]
fn tailed_1500_and_9000_byte_frames_leave_the_model_byte_identical() {
    let (model, mut port, pool) = jumbo_port();
    let mut guest = Guest::mapped(&port, 64 * 1024);
    let mut expected = Vec::new();
    let mut b = Batch::new();
    for (seq, (len, head)) in [(1514usize, 64usize), (9014, 64), (9014, 1500), (1514, 14)]
        .into_iter()
        .enumerate()
    {
        let f = frame(seq as u32, len);
        let tail = guest.tail(&f[head..], seq as u32);
        b.push(tailed(&pool, &f[..head], tail)).expect("room");
        expected.push(f);
    }
    assert_eq!(port.tx_batch(&mut b), 4);
    assert_eq!(model.take_wire(), expected);
    let o = port.offload_stats();
    assert_eq!((o.tx_zero_copy, o.tx_tail_copied), (4, 0));
    assert_eq!(
        port.stats().tx_bytes,
        expected.iter().map(|f| f.len() as u64).sum()
    );
    port.reclaim_tx();
    let mut back = guest.returned();
    back.sort_unstable();
    assert_eq!(back, vec![0, 1, 2, 3], "every tail went back to its owner");
    assert_eq!(model.state().dma_faults, 0);
}

#[test]
fn a_tails_token_comes_back_only_after_the_device_wrote_the_frame_back() {
    let pool = super::offload_tests::pool();
    let (model, mut port) = port_with(cfg(1), &pool);
    let mut guest = Guest::mapped(&port, 16 * 1024);
    model.state().defer_tx = true;
    let f = frame(7, 1514);
    let mut b = Batch::new();
    b.push(tailed(&pool, &f[..60], guest.tail(&f[60..], 70)))
        .expect("room");
    assert_eq!(port.tx_batch(&mut b), 1);
    port.reclaim_tx();
    assert_eq!(guest.returned(), vec![], "posted, not yet written back");
    assert!(
        port.tx_in_flight() >= 2,
        "head and tail descriptors in flight"
    );
    model.process_tx();
    assert_eq!(guest.returned(), vec![], "written back, not yet reclaimed");
    port.reclaim_tx();
    assert_eq!(guest.returned(), vec![70]);
    assert_eq!(port.tx_in_flight(), 0);
    assert_eq!(model.take_wire(), vec![f]);
}

#[test]
fn the_receive_poll_gives_tails_back_when_nothing_more_is_sent() {
    let pool = super::offload_tests::pool();
    let (model, mut port) = port_with(cfg(1), &pool);
    let mut guest = Guest::mapped(&port, 16 * 1024);
    model.state().defer_tx = true;
    let f = frame(9, 1514);
    let mut b = Batch::new();
    b.push(tailed(&pool, &f[..60], guest.tail(&f[60..], 90)))
        .expect("room");
    assert_eq!(port.tx_batch(&mut b), 1);
    model.process_tx();
    // The last frame of a burst: no transmit follows, only the engine's polling. The
    // guest's buffer must not wait for traffic that may never come.
    assert_eq!(port.rx_batch(&mut Batch::new()), 0);
    assert_eq!(guest.returned(), vec![90]);
    assert_eq!(port.tx_in_flight(), 0);
    assert_eq!(model.take_wire(), vec![f]);
}

#[test]
fn tso_over_a_tailed_frame_cuts_like_software_with_right_checksums() {
    let pool = super::offload_tests::pool();
    let (model, mut port) = port_with(cfg(1), &pool);
    let mut guest = Guest::mapped(&port, 64 * 1024);
    let frame = tcp_frame_v4(30_000 - 54);
    let mut request = frame.clone();
    let meta = offload::gso::tso_request(&mut request, 1500).expect("tso request");
    // Headers and a few payload bytes in the pool buffer, the rest in guest memory.
    let mut buf = tailed(&pool, &request[..100], guest.tail(&request[100..], 5));
    buf.meta.offload = meta;
    let mut b = Batch::new();
    b.push(buf).expect("room");
    assert_eq!(port.tx_batch(&mut b), 1);
    let wire = model.take_wire();
    let mut sw = Vec::new();
    offload::gso::segment_tcp(&frame, 1460, &pool, |s| sw.push(s.data().to_vec()))
        .expect("software segmentation");
    assert_eq!(wire.len(), (frame.len() - 54).div_ceil(1460));
    for (i, seg) in wire.iter().enumerate() {
        assert!(verify_ipv4_header(&seg[14..34]), "segment {i}");
        let a = |at: usize| Ipv4Addr::new(seg[at], seg[at + 1], seg[at + 2], seg[at + 3]);
        assert!(verify_tcp_v4(a(26), a(30), &seg[34..]), "segment {i}");
    }
    assert_eq!(wire, sw, "the device's segments are software's");
    let o = port.offload_stats();
    assert_eq!((o.tx_tso, o.tx_zero_copy, o.tx_tail_copied), (1, 1, 0));
    port.reclaim_tx();
    assert_eq!(guest.returned(), vec![5]);
    assert_eq!(model.state().bad_contexts, 0);
    assert_eq!(model.state().dma_faults, 0);
}

#[test]
fn gathered_frames_wrap_a_small_ring_in_order_and_every_buffer_comes_back() {
    let pool = super::offload_tests::pool();
    let (model, mut port) = port_with(
        IgbConfig {
            tx_ring: 16,
            ..cfg(1)
        },
        &pool,
    );
    let mut guest = Guest::mapped(&port, 256 * 1024);
    let free_before = pool.available();
    let mut sent = Vec::new();
    let mut token = 0;
    for round in 0..40u32 {
        let mut b = Batch::new();
        for i in 0..3 {
            let f = frame(round * 3 + i, 200 + 300 * i as usize);
            b.push(tailed(&pool, &f[..42], guest.tail(&f[42..], token)))
                .expect("room");
            token += 1;
            sent.push(f);
        }
        // Each frame takes 2 or 3 descriptors: the 16-slot ring wraps every few rounds.
        assert_eq!(port.tx_batch(&mut b), 3, "round {round}");
    }
    assert_eq!(model.take_wire(), sent, "120 gathered frames, in order");
    port.reclaim_tx();
    assert_eq!(port.tx_in_flight(), 0);
    let mut back = guest.returned();
    back.sort_unstable();
    assert_eq!(back, (0..token).collect::<Vec<_>>());
    assert_eq!(pool.available(), free_before, "every head buffer went back");
    assert_eq!(port.offload_stats().tx_zero_copy, 120);
    assert_eq!(model.state().dma_faults, 0);
}

#[test]
fn a_tail_at_an_unmapped_address_is_refused_by_the_model_and_still_given_back() {
    let pool = super::offload_tests::pool();
    let (model, mut port) = port_with(cfg(1), &pool);
    let mut guest = Guest::mapped(&port, 16 * 1024);
    // Bytes outside the mapped guest region, claiming a device address there.
    let outside = vec![0u8; 4096];
    let bad = frame(1, 600);
    let good = frame(2, 600);
    let bad_tail = guest.tail_as(&bad[60..], 1, Some(outside.as_ptr() as u64));
    let mut b = Batch::new();
    b.push(tailed(&pool, &bad[..60], bad_tail)).expect("room");
    b.push(tailed(&pool, &good[..60], guest.tail(&good[60..], 2)))
        .expect("room");
    assert_eq!(port.tx_batch(&mut b), 2);
    assert_eq!(
        model.take_wire(),
        vec![good],
        "nothing of the faulting frame goes out, not even its head"
    );
    // One fault per descriptor of the tail (one or two, as its claimed address
    // falls on the page).
    assert!(model.state().dma_faults >= 1);
    port.reclaim_tx();
    let mut back = guest.returned();
    back.sort_unstable();
    assert_eq!(back, vec![1, 2]);
    drop(outside);
}

#[test]
fn an_unmapped_region_faults_afterwards() {
    let pool = super::offload_tests::pool();
    let (model, mut port) = port_with(cfg(1), &pool);
    let mut guest = Guest::mapped(&port, 8 * 1024);
    let f = frame(3, 1000);
    let tail = guest.tail(&f[100..], 3);
    guest.map.unmap(guest.iova, guest.mem.len());
    let mut b = Batch::new();
    b.push(tailed(&pool, &f[..100], tail)).expect("room");
    assert_eq!(port.tx_batch(&mut b), 1);
    assert!(model.take_wire().is_empty());
    assert!(model.state().dma_faults >= 1, "one per tail descriptor");
    port.reclaim_tx();
    assert_eq!(guest.returned(), vec![3]);
}

#[test]
fn a_tail_without_a_device_address_is_copied_and_given_back_at_once() {
    let pool = super::offload_tests::pool();
    let (model, mut port) = port_with(cfg(1), &pool);
    let mut guest = Guest::mapped(&port, 8 * 1024);
    let f = frame(4, 1514);
    let tail = guest.tail_as(&f[80..], 9, None);
    let mut b = Batch::new();
    b.push(tailed(&pool, &f[..80], tail)).expect("room");
    model.state().defer_tx = true;
    assert_eq!(port.tx_batch(&mut b), 1);
    assert_eq!(guest.returned(), vec![9], "copied: the owner has it back");
    model.process_tx();
    assert_eq!(model.take_wire(), vec![f]);
    let o = port.offload_stats();
    assert_eq!((o.tx_zero_copy, o.tx_tail_copied), (0, 1));
}

#[test]
fn a_tail_that_cannot_be_copied_is_dropped_and_counted() {
    let pool = super::offload_tests::pool();
    let (model, mut port) = port_with(cfg(1), &pool);
    let mut guest = Guest::mapped(&port, 16 * 1024);
    // Too long for the buffer's tailroom, and no device address.
    let f = frame(5, 9014);
    let tail = guest.tail_as(&f[100..], 11, None);
    let mut b = Batch::new();
    b.push(tailed(&pool, &f[..100], tail)).expect("room");
    assert_eq!(port.tx_batch(&mut b), 0);
    assert_eq!(port.stats().drop_count("tx_tail_no_room"), 1);
    assert_eq!(guest.returned(), vec![11]);
    assert!(model.take_wire().is_empty());
}
