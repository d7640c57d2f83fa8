//! Ring, doorbell, reset and misbehaving-device tests of the 82576 driver against the
//! register-level model.

use pkt::{Batch, HEADROOM, Mempool, Port};

use crate::test_util::{PatchedReads, batch_of, seq_frame};

use super::model::{IgbModel, MODEL_MAC, ModelDma, RxOutcome};
use super::offload_tests::{ModelPort, port_with};
use super::{IgbConfig, IgbError, IgbPort, Registers, regs};

fn pool(count: u32) -> Mempool {
    Mempool::new(count, super::pool_buffer_size(1500)).expect("pool")
}

fn small_rings() -> IgbConfig {
    IgbConfig {
        rx_ring: 16,
        tx_ring: 16,
        ..IgbConfig::default()
    }
}

/// A frame to our MAC whose payload encodes `seq`, `len` bytes long.
fn frame(seq: u32, len: usize) -> Vec<u8> {
    seq_frame(MODEL_MAC, seq, len)
}

fn no_faults(model: &IgbModel) {
    assert_eq!(
        model.state().dma_faults,
        0,
        "the device touched unmapped memory"
    );
}

#[test]
fn init_resets_then_programs_rings_and_brings_the_link_up() {
    let pool = pool(256);
    let (model, port) = port_with(small_rings(), &pool);
    assert_eq!(port.mac().0, MODEL_MAC);
    assert!(port.refresh_link_for_test());
    let r = |off| model.read(off);
    assert_ne!(r(regs::RCTL) & regs::RCTL_RXEN, 0);
    assert_ne!(r(regs::RCTL) & regs::RCTL_SECRC, 0, "CRC must be stripped");
    assert_eq!(r(regs::RDLEN0), 16 * 16);
    assert_eq!(
        r(regs::SRRCTL0) & regs::SRRCTL_BSIZEPACKET_MASK,
        2,
        "2 KiB buffers"
    );
    assert_eq!(r(regs::RDT0), 15, "every slot but one posted");
    assert_ne!(r(regs::TXDCTL0) & regs::XDCTL_ENABLE, 0);
    assert_ne!(r(regs::TCTL) & regs::TCTL_EN, 0);
    assert_eq!(pool.available(), 256 - 16, "one buffer per receive slot");
    no_faults(&model);
}

impl ModelPort {
    fn refresh_link_for_test(&self) -> bool {
        self.registers().read(regs::STATUS) & regs::STATUS_LU != 0
    }
}

#[test]
fn tx_batch_sends_every_frame_with_one_doorbell() {
    let pool = pool(256);
    let (model, mut port) = port_with(small_rings(), &pool);
    let frames: Vec<Vec<u8>> = (0..10).map(|i| frame(i, 60 + i as usize * 100)).collect();
    let mut b = batch_of(&pool, &frames);
    let doorbells = model.state().tx_doorbells;
    assert_eq!(port.tx_batch(&mut b), 10);
    assert!(b.is_empty());
    assert_eq!(
        model.state().tx_doorbells,
        doorbells + 1,
        "one TDT write per batch"
    );
    assert_eq!(model.take_wire(), frames);
    let s = port.stats();
    assert_eq!(s.tx_packets, 10);
    assert_eq!(
        s.tx_bytes,
        frames.iter().map(|f| f.len() as u64).sum::<u64>()
    );
    assert_eq!(port.hw_good_frames().1, 10, "GPTC agrees");
    no_faults(&model);
}

#[test]
fn tx_ring_wraps_around_and_reclaims_buffers() {
    let pool = pool(256);
    let (model, mut port) = port_with(small_rings(), &pool);
    let free_before = pool.available();
    let doorbells = model.state().tx_doorbells;
    let mut sent = Vec::new();
    for round in 0..30u32 {
        let frames: Vec<Vec<u8>> = (0..7).map(|i| frame(round * 7 + i, 64)).collect();
        let mut b = batch_of(&pool, &frames);
        assert_eq!(port.tx_batch(&mut b), 7, "round {round}");
        sent.extend(frames);
    }
    assert_eq!(
        model.take_wire(),
        sent,
        "210 frames through a 16-slot ring, in order"
    );
    assert_eq!(model.state().tx_doorbells, doorbells + 30);
    port.reclaim_tx();
    assert_eq!(port.tx_in_flight(), 0);
    assert_eq!(
        pool.available(),
        free_before,
        "every transmitted buffer went back"
    );
    no_faults(&model);
}

#[test]
fn tx_buffers_crossing_a_page_take_two_descriptors_and_arrive_whole() {
    let pool = pool(256);
    let (model, mut port) = port_with(small_rings(), &pool);
    // 2176-byte buffers: over 64 of them, many cross a 4 KiB boundary.
    let frames: Vec<Vec<u8>> = (0..60).map(|i| frame(i, 1514)).collect();
    let mut crossing = 0;
    let mut sent = 0;
    for chunk in frames.chunks(5) {
        let mut b = batch_of(&pool, chunk);
        for p in b.iter() {
            let a = p.data().as_ptr() as usize;
            crossing += usize::from(a / 4096 != (a + p.len() - 1) / 4096);
        }
        sent += port.tx_batch(&mut b);
        assert!(b.is_empty());
    }
    assert_eq!(sent, 60);
    assert!(crossing > 0, "the test must exercise the split");
    assert_eq!(model.take_wire(), frames);
    port.reclaim_tx();
    assert_eq!(port.tx_in_flight(), 0);
    no_faults(&model);
}

#[test]
fn full_tx_ring_hands_the_rest_back_in_order() {
    let pool = pool(256);
    let (model, mut port) = port_with(small_rings(), &pool);
    // Stop the device's transmitter so nothing completes.
    model.write(regs::TCTL, 0);
    let frames: Vec<Vec<u8>> = (0..40).map(|i| frame(i, 64)).collect();
    let mut b = batch_of(&pool, &frames);
    let first = port.tx_batch(&mut b);
    assert!(
        (8..=15).contains(&first),
        "16 slots, one kept empty, some frames split: {first}"
    );
    assert_eq!(b.len(), 40 - first);
    let first_left: Vec<u8> = b
        .iter()
        .next()
        .map(|p| p.data().to_vec())
        .unwrap_or_default();
    assert_eq!(first_left, frames[first], "the rest stays in order");
    let mut again = Batch::new();
    std::mem::swap(&mut again, &mut b);
    assert_eq!(port.tx_batch(&mut again), 0, "still full");
    assert_eq!(again.len(), 40 - first);
    // Transmitter back on: the next doorbell drains the ring, then more fits.
    model.write(regs::TCTL, regs::TCTL_EN | regs::TCTL_PSP);
    model.write(regs::TDT0, model.read(regs::TDT0));
    let second = port.tx_batch(&mut again);
    assert!(second >= 8, "{second}");
    assert_eq!(model.take_wire(), frames[..first + second].to_vec());
    no_faults(&model);
}

#[test]
fn rx_batch_delivers_frames_and_reposts_with_one_doorbell() {
    let pool = pool(256);
    let (model, mut port) = port_with(small_rings(), &pool);
    let frames: Vec<Vec<u8>> = (0..5).map(|i| frame(i, 60 + 300 * i as usize)).collect();
    for f in &frames {
        assert_eq!(model.receive(f), RxOutcome::Delivered);
    }
    let doorbells = model.state().rx_doorbells;
    let mut b = Batch::new();
    assert_eq!(port.rx_batch(&mut b), 5);
    let got: Vec<Vec<u8>> = b.iter().map(|p| p.data().to_vec()).collect();
    assert_eq!(got, frames);
    assert!(b.iter().all(|p| p.headroom() == HEADROOM));
    assert_eq!(model.state().rx_doorbells, doorbells + 1);
    assert_eq!(
        model.read(regs::RDT0),
        4,
        "tail follows the last re-armed slot"
    );
    let s = port.stats();
    assert_eq!(
        (s.rx_packets, s.rx_bytes),
        (5, frames.iter().map(|f| f.len() as u64).sum())
    );
    assert_eq!(port.rx_batch(&mut Batch::new()), 0, "nothing more");
    no_faults(&model);
}

#[test]
fn rx_ring_wraps_around_without_losing_or_leaking() {
    let pool = pool(256);
    let (model, mut port) = port_with(small_rings(), &pool);
    let mut seq = 0u32;
    let mut b = Batch::new();
    for round in 0..40 {
        // Up to 15 frames fit before the driver must re-post.
        let n = 1 + round % 15;
        for _ in 0..n {
            assert_eq!(model.receive(&frame(seq, 64)), RxOutcome::Delivered);
            seq += 1;
        }
        assert_eq!(port.rx_batch(&mut b), n as usize);
        for (i, p) in b.drain().enumerate() {
            let want = seq - n + i as u32;
            assert_eq!(p.data()[14..18], want.to_be_bytes(), "round {round}");
        }
    }
    // A 16th frame with 15 outstanding finds no descriptor; nothing is corrupted.
    for i in 0..15 {
        assert_eq!(model.receive(&frame(1000 + i, 64)), RxOutcome::Delivered);
    }
    assert_eq!(model.receive(&frame(2000, 64)), RxOutcome::NoDescriptor);
    assert_eq!(port.rx_batch(&mut b), 15);
    b.clear();
    assert_eq!(port.stats().drop_count("hw_rx_no_descriptor"), 1);
    assert_eq!(pool.available(), 256 - 16, "only the ring holds buffers");
    no_faults(&model);
}

#[test]
fn rx_length_past_the_buffer_is_counted_and_never_read() {
    let pool = pool(256);
    let (model, mut port) = port_with(small_rings(), &pool);
    model.write_rx_writeback(
        0,
        regs::desc::RX_STATUS_DD | regs::desc::RX_STATUS_EOP,
        60_000,
    );
    // Not EOP: a frame spread over buffers the driver did not ask for.
    model.write_rx_writeback(1, regs::desc::RX_STATUS_DD, 100);
    model.write_rx_writeback(
        2,
        regs::desc::RX_STATUS_DD | regs::desc::RX_STATUS_EOP | (1 << 31),
        100,
    );
    // The device's head moved past the three slots it wrote back.
    model.write(regs::RDH0, 3);
    let mut b = Batch::new();
    assert_eq!(port.rx_batch(&mut b), 0);
    let s = port.stats();
    assert_eq!(s.drop_count("rx_bad_descriptor"), 2);
    assert_eq!(s.drop_count("rx_frame_errors"), 1);
    // The slots were re-armed: the ring keeps working.
    let f = frame(7, 200);
    assert_eq!(model.receive(&f), RxOutcome::Delivered);
    assert_eq!(port.rx_batch(&mut b), 1);
    assert_eq!(b.iter().next().map(|p| p.data().to_vec()), Some(f));
    no_faults(&model);
}

#[test]
fn rx_dd_on_a_slot_not_posted_is_counted_and_dropped() {
    let pool = pool(256);
    let (model, mut port) = port_with(small_rings(), &pool);
    let tail = model.read(regs::RDT0);
    model.write_rx_writeback(
        tail,
        regs::desc::RX_STATUS_DD | regs::desc::RX_STATUS_EOP,
        64,
    );
    let mut b = Batch::new();
    assert_eq!(port.rx_batch(&mut b), 0);
    assert_eq!(port.stats().drop_count("rx_unposted_dd"), 1);
    assert_eq!(
        port.rx_batch(&mut b),
        0,
        "counted once: the slot was re-armed"
    );
    assert_eq!(port.stats().drop_count("rx_unposted_dd"), 1);
    no_faults(&model);
}

#[test]
fn rx_with_an_empty_pool_drops_counts_and_recovers() {
    let pool = pool(160);
    let (model, mut port) = port_with(small_rings(), &pool);
    let hoard: Vec<_> = std::iter::from_fn(|| pool.alloc()).collect();
    for i in 0..3 {
        model.receive(&frame(i, 64));
    }
    let mut b = Batch::new();
    assert_eq!(port.rx_batch(&mut b), 0);
    assert_eq!(port.stats().drop_count("rx_no_buffer"), 3);
    drop(hoard);
    model.receive(&frame(9, 64));
    assert_eq!(port.rx_batch(&mut b), 1);
    no_faults(&model);
}

#[test]
fn link_down_drops_tx_with_a_counter_and_link_up_resumes() {
    let pool = pool(256);
    let (model, mut port) = port_with(small_rings(), &pool);
    model.set_cable(false);
    assert!(!port.refresh_link());
    let mut b = batch_of(&pool, &[frame(1, 64), frame(2, 64)]);
    assert_eq!(port.tx_batch(&mut b), 0);
    assert!(b.is_empty());
    assert_eq!(port.stats().drop_count("tx_link_down"), 2);
    assert_eq!(
        model.receive(&frame(3, 64)),
        RxOutcome::Filtered,
        "no link, no frames"
    );
    model.set_cable(true);
    let mut b = batch_of(&pool, &[frame(4, 64)]);
    assert_eq!(
        port.tx_batch(&mut b),
        1,
        "the driver re-reads the link while it is down"
    );
    assert_eq!(model.take_wire(), vec![frame(4, 64)]);
    no_faults(&model);
}

#[test]
fn bad_tx_lengths_are_dropped_with_a_counter() {
    let pool = pool(256);
    let (model, mut port) = port_with(small_rings(), &pool);
    let mut b = batch_of(&pool, &[frame(1, 1600), Vec::new(), frame(2, 1518)]);
    assert_eq!(port.tx_batch(&mut b), 1);
    assert_eq!(port.stats().drop_count("tx_bad_length"), 2);
    assert_eq!(model.take_wire(), vec![frame(2, 1518)]);
}

#[test]
fn frames_from_another_pool_are_copied_into_ours() {
    let pool = pool(256);
    let other = Mempool::new(8, 2048).expect("pool");
    let (model, mut port) = port_with(small_rings(), &pool);
    let mut b = batch_of(&other, &[frame(5, 100)]);
    assert_eq!(port.tx_batch(&mut b), 1);
    assert_eq!(port.tx_copied(), 1);
    assert_eq!(model.take_wire(), vec![frame(5, 100)]);
    assert_eq!(other.available(), 8, "the foreign buffer went home at once");
    no_faults(&model);
}

#[test]
fn unsuitable_pools_and_rings_are_clear_errors() {
    let model = IgbModel::new();
    let small = Mempool::new(256, 2048).expect("pool");
    let err = IgbPort::new(
        "x",
        model.clone(),
        ModelDma::new(&model, &small),
        small.clone(),
        small_rings(),
    )
    .expect_err("2048-byte buffers cannot take 1518-byte frames in whole KiB");
    assert!(err.to_string().contains("at least 2176 bytes"), "{err}");
    let few = pool(64);
    let err = IgbPort::new(
        "x",
        model.clone(),
        ModelDma::new(&model, &few),
        few.clone(),
        IgbConfig::default(),
    )
    .expect_err("64 buffers cannot fill 512 slots");
    assert!(matches!(err, IgbError::Pool(_)), "{err}");
    let cfg = IgbConfig {
        rx_ring: 12,
        ..small_rings()
    };
    let p = pool(256);
    let err = IgbPort::new(
        "x",
        model.clone(),
        ModelDma::new(&model, &p),
        p.clone(),
        cfg,
    )
    .expect_err("not a multiple of 8");
    assert!(err.to_string().contains("multiple of 8"), "{err}");
}

#[test]
fn phy_that_does_not_answer_fails_init_with_the_mdic_value() {
    let model = IgbModel::new();
    // MDIC always reports an error (no PHY at address 1).
    let no_phy = PatchedReads(model.clone(), |m: &IgbModel, offset| {
        let v = m.read(offset);
        if offset == regs::MDIC {
            v | regs::MDIC_ERROR
        } else {
            v
        }
    });
    let p = pool(256);
    let err = IgbPort::new(
        "x",
        no_phy,
        ModelDma::new(&model, &p),
        p.clone(),
        small_rings(),
    )
    .expect_err("PHY error");
    assert!(matches!(err, IgbError::Phy { reg: 0, .. }), "{err}");
}

#[test]
fn rx_full_batches_keep_flowing_around_a_large_ring() {
    let pool = pool(2048);
    let (model, mut port) = port_with(IgbConfig::default(), &pool);
    let mut b = Batch::new();
    for round in 0..40u32 {
        for i in 0..64 {
            assert_eq!(
                model.receive(&frame(round * 64 + i, 64)),
                RxOutcome::Delivered,
                "round {round} frame {i}"
            );
        }
        assert_eq!(port.rx_batch(&mut b), 64, "round {round}");
        b.clear();
    }
    no_faults(&model);
}
