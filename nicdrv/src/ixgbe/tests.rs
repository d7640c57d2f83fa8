//! Init order, link, ring, doorbell, write-back and misbehaving-device tests of the
//! 82599 driver against the register-level model.

use pkt::wire::checksum;
use pkt::{Batch, HEADROOM, Mempool, Port};

use crate::test_util::{PatchedReads, batch_of, seq_frame};

use super::model::{InitStep, IxgbeModel, MODEL_MAC, ModelDma, RxOutcome};
use super::{IxgbeConfig, IxgbeError, IxgbePort, LinkSpeed, regs};
use crate::igb::Registers;

pub(super) type ModelPort = IxgbePort<IxgbeModel, ModelDma>;

pub(super) fn pool(count: u32) -> Mempool {
    Mempool::new(count, super::pool_buffer_size(1500)).expect("pool")
}

pub(super) fn small_rings() -> IxgbeConfig {
    IxgbeConfig {
        rx_ring: 16,
        tx_ring: 16,
        ..IxgbeConfig::default()
    }
}

pub(super) fn port_with(cfg: IxgbeConfig, pool: &Mempool) -> (IxgbeModel, ModelPort) {
    let model = IxgbeModel::new();
    let dma = ModelDma::new(&model, pool);
    let mut port =
        IxgbePort::new("ixgbe-model", model.clone(), dma, pool.clone(), cfg).expect("init");
    // Negotiation takes a few LINKS reads in the model; bounded by the model's
    // countdown, not by time.
    assert!(port.wait_link(std::time::Duration::from_secs(5)), "link up");
    (model, port)
}

/// A frame to our MAC whose payload encodes `seq`, `len` bytes long.
fn frame(seq: u32, len: usize) -> Vec<u8> {
    seq_frame(MODEL_MAC, seq, len)
}

/// An IPv4 frame to our MAC carrying `proto` (6 TCP, 17 UDP) with `payload`, header
/// and L4 checksums correct.
fn ipv4_frame(proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&MODEL_MAC);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00]);
    let mut l4 = if proto == 6 {
        let mut t = vec![0u8; 20];
        t[..4].copy_from_slice(&[0x30, 0x39, 0x23, 0x28]);
        t[12] = 5 << 4;
        t[13] = 0x18;
        t
    } else {
        let mut u = vec![0x30, 0x39, 0x23, 0x28, 0, 0, 0, 0];
        u[4..6].copy_from_slice(&(8 + payload.len() as u16).to_be_bytes());
        u
    };
    l4.extend_from_slice(payload);
    let total = (20 + l4.len()) as u16;
    let mut ip = [
        0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    let c = checksum::internet_checksum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let at = if proto == 6 { 16 } else { 6 };
    let c = checksum::internet_checksum(&l4, pseudo(proto, l4.len()));
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&l4);
    f
}

/// The IPv4 pseudo-header sum of [`ipv4_frame`]'s addresses.
fn pseudo(proto: u8, l4_len: usize) -> u32 {
    (10 << 8) + 1 + (10 << 8) + 2 + u32::from(proto) + l4_len as u32
}

fn udp_frame(payload: &[u8]) -> Vec<u8> {
    ipv4_frame(17, payload)
}

/// `valid` as a stack hands it over for checksum offload (virtio `NEEDS_CSUM`): the
/// L4 checksum field holds the folded pseudo-header sum.
fn partial(pool: &Mempool, valid: &[u8]) -> pkt::PktBuf {
    let proto = valid[23];
    let at = if proto == 6 { 16 } else { 6 };
    let mut b = pool.alloc().expect("buffer");
    b.extend_from_slice(valid).expect("fits");
    let seed = checksum::fold(u64::from(pseudo(proto, valid.len() - 34)));
    b.data_mut()[34 + at..34 + at + 2].copy_from_slice(&seed.to_be_bytes());
    b.meta.offload.flags = offload::vnet_hdr::NEEDS_CSUM;
    b.meta.offload.csum_start = 34;
    b.meta.offload.csum_offset = at as u16;
    b
}

pub(super) fn healthy(model: &IxgbeModel) {
    let st = model.state();
    assert_eq!(st.dma_faults, 0, "the device touched unmapped memory");
    assert!(st.violations.is_empty(), "{:?}", st.violations);
}

#[test]
fn init_follows_the_datasheet_order() {
    let pool = pool(256);
    let (model, port) = port_with(small_rings(), &pool);
    use InitStep::*;
    assert_eq!(
        model.state().steps,
        vec![
            InterruptsMasked,
            MasterDisabled,
            ResetIssued,
            InterruptsMasked,
            DmaInitDoneSeen,
            LinkSetup,
            RxQueueEnabled,
            RxEnabled,
            TxEnabled,
            TxQueueEnabled,
        ]
    );
    healthy(&model);
    assert_eq!(port.mac().0, MODEL_MAC);
    let r = |off| model.read(off);
    assert_ne!(r(regs::RXCTRL) & regs::RXCTRL_RXEN, 0);
    assert_ne!(r(regs::HLREG0) & regs::HLREG0_RXCRCSTRP, 0, "CRC stripped");
    assert_ne!(
        r(regs::RDRXCTL) & regs::RDRXCTL_CRCSTRIP,
        0,
        "RDRXCTL agrees with HLREG0"
    );
    assert_eq!(r(regs::HLREG0) & regs::HLREG0_JUMBOEN, 0);
    assert_ne!(r(regs::FCTRL) & regs::FCTRL_BAM, 0);
    assert_ne!(r(regs::RAH0) & regs::RAH_AV, 0);
    assert_eq!(r(regs::rdlen(0)), 16 * 16);
    let srrctl = r(regs::srrctl(0));
    assert_eq!(srrctl & regs::SRRCTL_BSIZEPACKET_MASK, 2, "2 KiB buffers");
    assert_eq!(
        srrctl & regs::SRRCTL_DESCTYPE_MASK,
        regs::SRRCTL_DESCTYPE_ADV_ONEBUF
    );
    assert_ne!(srrctl & regs::SRRCTL_DROP_EN, 0);
    assert_eq!(r(regs::rdt(0)), 15, "every slot but one posted");
    assert_ne!(r(regs::DMATXCTL) & regs::DMATXCTL_TE, 0);
    assert_ne!(r(regs::txdctl(0)) & regs::XDCTL_ENABLE, 0);
    assert_eq!(r(regs::RTTDCS) & regs::RTTDCS_ARBDIS, 0, "arbiter back on");
    assert_eq!(
        r(regs::AUTOC) & regs::AUTOC_LMS_MASK,
        regs::AUTOC_LMS_10G_SERIAL
    );
    assert_eq!(pool.available(), 256 - 16, "one buffer per receive slot");
}

#[test]
fn the_model_flags_an_init_out_of_order() {
    // Raw register writes that skip steps: the order check must catch each one.
    let model = IxgbeModel::new();
    model.write(regs::CTRL, regs::CTRL_RST_MASK);
    model.write(regs::rdlen(0), 256);
    while model.read(regs::CTRL) & regs::CTRL_RST != 0 {}
    model.write(regs::rxdctl(0), regs::XDCTL_ENABLE);
    model.write(regs::RXCTRL, regs::RXCTRL_RXEN);
    model.write(regs::tdlen(0), 256);
    model.write(regs::txdctl(0), regs::XDCTL_ENABLE);
    let _ = model.read(regs::txdctl(0));
    let st = model.state();
    let want = [
        "CTRL.RST without disabling PCIe mastering first",
        "RX ring base written while the reset was in progress",
        "RXDCTL written before the driver saw RDRXCTL.DMAIDONE",
        "RX queue enabled with interrupts not masked after reset",
        "TXDCTL.ENABLE set before DMATXCTL.TE",
    ];
    for w in want {
        assert!(
            st.violations.iter().any(|v| v == w),
            "missing {w:?} in {:?}",
            st.violations
        );
    }
    drop(st);
    assert_eq!(
        model.read(regs::txdctl(0)) & regs::XDCTL_ENABLE,
        0,
        "the TX queue stays off without DMATXCTL.TE"
    );

    // A clean reset, then the receiver and the tail before the queue.
    let model = IxgbeModel::new();
    model.write(regs::CTRL, regs::CTRL_MASTER_DISABLE);
    model.write(regs::CTRL, regs::CTRL_RST_MASK);
    while model.read(regs::CTRL) & regs::CTRL_RST != 0 {}
    model.write(regs::EIMC, regs::EIMC_ALL);
    assert_ne!(model.read(regs::RDRXCTL) & regs::RDRXCTL_DMAIDONE, 0);
    assert!(model.state().violations.is_empty());
    model.write(regs::RXCTRL, regs::RXCTRL_RXEN);
    model.write(regs::rdt(0), 5);
    model.write(regs::rdlen(0), 256);
    assert_eq!(
        model.state().violations,
        vec![
            "RXCTRL.RXEN set before the RX queue was enabled",
            "RDT bumped before the RX queue was enabled",
            "RX ring programmed with RXCTRL.RXEN set",
        ]
    );
}

#[test]
fn a_reset_that_never_completes_is_a_clear_timeout() {
    let model = IxgbeModel::new();
    // CTRL.RST never clears.
    let stuck = PatchedReads(model.clone(), |m: &IxgbeModel, offset| {
        let v = m.read(offset);
        if offset == regs::CTRL {
            v | regs::CTRL_RST
        } else {
            v
        }
    });
    let p = pool(256);
    let err = IxgbePort::new(
        "x",
        stuck,
        ModelDma::new(&model, &p),
        p.clone(),
        small_rings(),
    )
    .expect_err("reset never done");
    assert!(
        matches!(err, IxgbeError::Timeout { step, .. } if step.contains("CTRL.RST")),
        "{err}"
    );
    assert!(err.to_string().contains("reset it"), "{err}");
    assert_eq!(p.available(), 256, "nothing allocated before the reset");
}

#[test]
fn a_blank_eeprom_mac_is_refused() {
    let model = IxgbeModel::new();
    // RAL/RAH read as zero: nothing was loaded from the NVM.
    let blank = PatchedReads(model.clone(), |m: &IxgbeModel, offset| match offset {
        regs::RAL0 => 0,
        regs::RAH0 => 0,
        _ => m.read(offset),
    });
    let p = pool(256);
    let err = IxgbePort::new(
        "x",
        blank,
        ModelDma::new(&model, &p),
        p.clone(),
        small_rings(),
    )
    .expect_err("no MAC");
    assert!(err.to_string().contains("no usable MAC"), "{err}");
}

#[test]
fn link_comes_up_through_links_at_10g_and_follows_the_cable() {
    let pool = pool(256);
    let model = IxgbeModel::new();
    model.state().link_reads = 5;
    let mut port = IxgbePort::new(
        "x",
        model.clone(),
        ModelDma::new(&model, &pool),
        pool.clone(),
        small_rings(),
    )
    .expect("init");
    assert!(!port.refresh_link(), "still negotiating");
    assert!(port.wait_link(std::time::Duration::from_secs(5)));
    assert_eq!(port.link_speed(), Some(LinkSpeed::Gb10));
    model.set_cable(false);
    assert!(!port.refresh_link());
    assert_eq!(port.link_speed(), None);
    model.set_cable(true);
    assert!(port.wait_link(std::time::Duration::from_secs(5)));
    healthy(&model);
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
    healthy(&model);
}

#[test]
fn tx_ring_wraps_around_many_times_and_reclaims_buffers() {
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
        "210 frames through a 16-slot ring (13 wraps), in order"
    );
    assert_eq!(model.state().tx_doorbells, doorbells + 30);
    port.reclaim_tx();
    assert_eq!(port.tx_in_flight(), 0);
    assert_eq!(
        pool.available(),
        free_before,
        "every transmitted buffer went back"
    );
    healthy(&model);
}

#[test]
fn full_tx_ring_hands_the_rest_back_in_order() {
    let pool = pool(256);
    let (model, mut port) = port_with(small_rings(), &pool);
    // Transmit DMA off: nothing completes.
    model.write(regs::DMATXCTL, 0);
    let frames: Vec<Vec<u8>> = (0..40).map(|i| frame(i, 64)).collect();
    let mut b = batch_of(&pool, &frames);
    let first = port.tx_batch(&mut b);
    assert!(
        (8..=15).contains(&first),
        "16 slots, one kept empty, some frames split at 4 KiB: {first}"
    );
    assert_eq!(b.len(), 40 - first);
    assert_eq!(
        b.iter().next().map(|p| p.data().to_vec()),
        Some(frames[first].clone()),
        "the rest stays in order"
    );
    assert_eq!(port.tx_batch(&mut b), 0, "still full");
    model.write(regs::DMATXCTL, regs::DMATXCTL_TE);
    model.write(regs::tdt(0), model.read(regs::tdt(0)));
    let second = port.tx_batch(&mut b);
    assert!(second >= 8, "{second}");
    assert_eq!(model.take_wire(), frames[..first + second].to_vec());
    healthy(&model);
}

#[test]
fn rx_batch_writes_back_length_and_reposts_with_one_doorbell() {
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
    assert_eq!(got, frames, "write-back lengths cut each frame exactly");
    assert!(b.iter().all(|p| p.headroom() == HEADROOM));
    assert_eq!(model.state().rx_doorbells, doorbells + 1, "one RDT write");
    assert_eq!(
        model.read(regs::rdt(0)),
        4,
        "tail follows the last re-armed slot"
    );
    let s = port.stats();
    assert_eq!(
        (s.rx_packets, s.rx_bytes),
        (5, frames.iter().map(|f| f.len() as u64).sum())
    );
    assert_eq!(port.hw_good_frames().0, 5, "GPRC agrees");
    let doorbells = model.state().rx_doorbells;
    assert_eq!(port.rx_batch(&mut Batch::new()), 0, "nothing more");
    assert_eq!(
        model.state().rx_doorbells,
        doorbells,
        "no doorbell for an empty poll"
    );
    healthy(&model);
}

#[test]
fn rx_ring_wraps_around_many_times_without_losing_or_leaking() {
    let pool = pool(256);
    let (model, mut port) = port_with(small_rings(), &pool);
    let mut seq = 0u32;
    let mut b = Batch::new();
    for round in 0..40 {
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
    assert!(
        seq > 16 * 10,
        "{seq} frames: the ring wrapped more than ten times"
    );
    // With 15 outstanding the 16th finds no descriptor: dropped by the device
    // (SRRCTL.Drop_En) and counted in QPRDC.
    for i in 0..15 {
        assert_eq!(model.receive(&frame(1000 + i, 64)), RxOutcome::Delivered);
    }
    assert_eq!(model.receive(&frame(2000, 64)), RxOutcome::NoDescriptor);
    assert_eq!(port.rx_batch(&mut b), 15);
    b.clear();
    assert_eq!(port.stats().drop_count("hw_rx_no_descriptor"), 1);
    assert_eq!(pool.available(), 256 - 16, "only the ring holds buffers");
    healthy(&model);
}

#[test]
fn rx_write_back_errors_and_bad_lengths_are_counted_never_read() {
    use regs::desc;
    let pool = pool(256);
    let (model, mut port) = port_with(small_rings(), &pool);
    // Length past the 2 KiB buffer.
    model.write_rx_writeback(0, desc::RX_STATUS_DD | desc::RX_STATUS_EOP, 60_000);
    // Not EOP: a frame spread over buffers the driver did not ask for.
    model.write_rx_writeback(1, desc::RX_STATUS_DD, 100);
    // CRC error reported.
    model.write_rx_writeback(
        2,
        desc::RX_STATUS_DD | desc::RX_STATUS_EOP | desc::RX_ERR_CE,
        100,
    );
    // Zero length.
    model.write_rx_writeback(3, desc::RX_STATUS_DD | desc::RX_STATUS_EOP, 0);
    model.write(regs::rdh(0), 4);
    let mut b = Batch::new();
    assert_eq!(port.rx_batch(&mut b), 0);
    let s = port.stats();
    assert_eq!(s.drop_count("rx_bad_descriptor"), 3);
    assert_eq!(s.drop_count("rx_frame_errors"), 1);
    // The slots were re-armed: the ring keeps working.
    let f = frame(7, 200);
    assert_eq!(model.receive(&f), RxOutcome::Delivered);
    assert_eq!(port.rx_batch(&mut b), 1);
    assert_eq!(b.iter().next().map(|p| p.data().to_vec()), Some(f));
    healthy(&model);
}

#[test]
fn rx_dd_on_a_slot_not_posted_is_counted_and_dropped() {
    use regs::desc;
    let pool = pool(256);
    let (model, mut port) = port_with(small_rings(), &pool);
    let tail = model.read(regs::rdt(0));
    model.write_rx_writeback(tail, desc::RX_STATUS_DD | desc::RX_STATUS_EOP, 64);
    let mut b = Batch::new();
    assert_eq!(port.rx_batch(&mut b), 0);
    assert_eq!(port.stats().drop_count("rx_unposted_dd"), 1);
    assert_eq!(
        port.rx_batch(&mut b),
        0,
        "counted once: the slot was re-armed"
    );
    assert_eq!(port.stats().drop_count("rx_unposted_dd"), 1);
    healthy(&model);
}

#[test]
fn rx_checksum_verdicts_reach_the_frame_metadata() {
    let pool = pool(256);
    let (model, mut port) = port_with(small_rings(), &pool);
    let good = udp_frame(b"checksummed by the device");
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    for f in [&good, &bad, &frame(1, 64)] {
        assert_eq!(model.receive(f), RxOutcome::Delivered);
    }
    let mut b = Batch::new();
    assert_eq!(port.rx_batch(&mut b), 3);
    let flags: Vec<u8> = b.iter().map(|p| p.meta.offload.flags).collect();
    assert_eq!(flags, vec![offload::vnet_hdr::DATA_VALID, 0, 0]);
    let c = port.rx_checksum_stats();
    assert_eq!((c.good, c.bad, c.unchecked), (1, 1, 1));
    assert!(port.caps().offloads.contains(pkt::Offloads::RX_CSUM));
    healthy(&model);
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
    assert!(model.take_wire().is_empty());
    model.set_cable(true);
    assert!(port.wait_link(std::time::Duration::from_secs(5)));
    let mut b = batch_of(&pool, &[frame(4, 64)]);
    assert_eq!(port.tx_batch(&mut b), 1);
    assert_eq!(model.take_wire(), vec![frame(4, 64)]);
    healthy(&model);
}

#[test]
fn dma_outside_the_mapped_iova_is_refused_by_the_model() {
    let pool = pool(256);
    let (model, mut port) = port_with(small_rings(), &pool);
    // Tear the pool's IOMMU mapping down under the running device.
    model.revoke_dma(pool.region().0);
    assert_eq!(model.receive(&frame(1, 64)), RxOutcome::Fault);
    assert!(model.state().dma_faults >= 1);
    assert_eq!(
        port.rx_batch(&mut Batch::new()),
        0,
        "nothing was written back"
    );
    let mut b = batch_of(&pool, &[frame(2, 64)]);
    assert_eq!(port.tx_batch(&mut b), 1, "the driver posted it");
    assert!(model.take_wire().is_empty(), "the device could not read it");
    let st = model.state();
    assert!(st.dma_faults >= 2, "{}", st.dma_faults);
    assert_eq!(st.tx_bad_descriptors, 1);
}

#[test]
fn bad_tx_lengths_are_dropped_with_a_counter() {
    let pool = pool(256);
    let (model, mut port) = port_with(small_rings(), &pool);
    let mut b = batch_of(&pool, &[frame(1, 1600), Vec::new(), frame(2, 1518)]);
    assert_eq!(port.tx_batch(&mut b), 1);
    assert_eq!(port.stats().drop_count("tx_bad_length"), 2);
    assert_eq!(model.take_wire(), vec![frame(2, 1518)]);
    healthy(&model);
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
    healthy(&model);
}

#[test]
fn jumbo_frames_program_maxfrs_and_pass_both_ways() {
    let cfg = IxgbeConfig {
        mtu: 9000,
        ..small_rings()
    };
    let pool = Mempool::new(256, super::pool_buffer_size(9000)).expect("pool");
    let (model, mut port) = port_with(cfg, &pool);
    assert_ne!(model.read(regs::HLREG0) & regs::HLREG0_JUMBOEN, 0);
    assert_eq!(model.read(regs::MAXFRS) >> regs::MAXFRS_MFS_SHIFT, 9018 + 4);
    let big = frame(9, 9018);
    assert_eq!(model.receive(&big), RxOutcome::Delivered);
    assert_eq!(model.receive(&frame(10, 9019)), RxOutcome::Oversize);
    let mut b = Batch::new();
    assert_eq!(port.rx_batch(&mut b), 1);
    assert_eq!(port.tx_batch(&mut b), 1);
    assert_eq!(model.take_wire(), vec![big]);
    assert_eq!(port.stats().drop_count("hw_rx_oversize"), 1);
    healthy(&model);
}

#[test]
fn unsuitable_pools_and_rings_are_clear_errors() {
    let model = IxgbeModel::new();
    let small = Mempool::new(256, 2048).expect("pool");
    let err = IxgbePort::new(
        "x",
        model.clone(),
        ModelDma::new(&model, &small),
        small.clone(),
        small_rings(),
    )
    .expect_err("2048-byte buffers cannot take 1518-byte frames in whole KiB");
    assert!(err.to_string().contains("at least 2176 bytes"), "{err}");
    let few = pool(64);
    let err = IxgbePort::new(
        "x",
        model.clone(),
        ModelDma::new(&model, &few),
        few.clone(),
        IxgbeConfig::default(),
    )
    .expect_err("64 buffers cannot fill 512 slots");
    assert!(matches!(err, IxgbeError::Pool(_)), "{err}");
    let p = pool(256);
    for cfg in [
        IxgbeConfig {
            rx_ring: 12,
            ..small_rings()
        },
        IxgbeConfig {
            mtu: 20_000,
            ..small_rings()
        },
    ] {
        let err = IxgbePort::new(
            "x",
            model.clone(),
            ModelDma::new(&model, &p),
            p.clone(),
            cfg,
        )
        .expect_err("out of range");
        assert!(matches!(err, IxgbeError::Config(_)), "{err}");
    }
}

#[test]
fn full_batches_keep_flowing_around_a_default_ring() {
    let pool = pool(2048);
    let (model, mut port) = port_with(IxgbeConfig::default(), &pool);
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
        assert_eq!(port.tx_batch(&mut b), 64, "round {round}");
        assert!(b.is_empty());
    }
    assert_eq!(model.take_wire().len(), 40 * 64);
    healthy(&model);
}

#[test]
fn tx_checksum_offload_fills_tcp_and_udp_with_a_context_per_layout() {
    let pool = pool(256);
    let (model, mut port) = port_with(small_rings(), &pool);
    let want = vec![
        udp_frame(b"first datagram"),
        udp_frame(b"second datagram, same layout"),
        ipv4_frame(6, b"a tcp segment"),
    ];
    let mut b = Batch::new();
    for f in &want {
        let p = partial(&pool, f);
        assert_ne!(
            p.data(),
            &f[..],
            "the test must start from a partial checksum"
        );
        b.push(p).expect("room");
    }
    assert_eq!(port.tx_batch(&mut b), 3);
    assert_eq!(model.take_wire(), want, "checksums inserted by the device");
    assert_eq!(
        model.state().tx_contexts,
        2,
        "one context for UDP, reused, one for TCP"
    );
    assert_eq!(port.tx_software_checksums(), 0);
    let free = pool.available();
    port.reclaim_tx();
    assert_eq!(port.tx_in_flight(), 0, "context slots reclaimed too");
    assert_eq!(pool.available(), free + 3);
    assert!(port.caps().offloads.contains(pkt::Offloads::TX_CSUM));
    healthy(&model);
}

#[test]
fn tx_checksum_layouts_the_device_cannot_take_are_done_in_software_or_counted() {
    let pool = pool(256);
    let (model, mut port) = port_with(small_rings(), &pool);
    // Not IP by its ethertype: no context can describe it; software completes it.
    let mut odd = udp_frame(b"behind an unknown ethertype");
    odd[12..14].copy_from_slice(&[0x88, 0xb5]);
    let mut b = Batch::new();
    b.push(partial(&pool, &odd)).expect("room");
    // A checksum field past the end of the frame: nothing can complete it.
    let mut broken = partial(&pool, &udp_frame(b"x"));
    broken.meta.offload.csum_start = 2000;
    b.push(broken).expect("room");
    assert_eq!(port.tx_batch(&mut b), 1);
    assert_eq!(model.take_wire(), vec![odd]);
    assert_eq!(port.tx_software_checksums(), 1);
    assert_eq!(port.stats().drop_count("tx_bad_offload"), 1);
    assert_eq!(model.state().tx_contexts, 0);
    healthy(&model);
}

#[test]
fn mixed_offload_traffic_under_back_pressure_keeps_order_and_buffers() {
    let pool = pool(512);
    let (model, mut port) = port_with(small_rings(), &pool);
    let free_at_start = pool.available();
    // xorshift64: a fixed seed, so a failure replays exactly.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut rand = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut want = Vec::new();
    let mut pending = Batch::new();
    let mut backed_up = 0;
    for round in 0..300u32 {
        // One round in three the transmit DMA is off: the ring fills, frames (and
        // context descriptors) wait, and the rest spills back to `pending`.
        let stalled = rand(3) == 0;
        model.write(regs::DMATXCTL, if stalled { 0 } else { regs::DMATXCTL_TE });
        if !stalled {
            model.write(regs::tdt(0), model.read(regs::tdt(0)));
        }
        for i in 0..rand(12).min(pending.room() as u64) {
            let payload = vec![round as u8; rand(1400) as usize];
            let (valid, buf) = match rand(3) {
                0 => {
                    let f = frame(round * 100 + i as u32, 60 + payload.len());
                    let mut b = pool.alloc().expect("buffer");
                    b.extend_from_slice(&f).expect("fits");
                    (f, b)
                }
                1 => {
                    let f = udp_frame(&payload);
                    let b = partial(&pool, &f);
                    (f, b)
                }
                _ => {
                    let f = ipv4_frame(6, &payload);
                    let b = partial(&pool, &f);
                    (f, b)
                }
            };
            want.push(valid);
            pending.push(buf).expect("room");
        }
        port.tx_batch(&mut pending);
        backed_up += usize::from(!pending.is_empty());
    }
    assert!(backed_up > 10, "the ring filled only {backed_up} times");
    model.write(regs::DMATXCTL, regs::DMATXCTL_TE);
    model.write(regs::tdt(0), model.read(regs::tdt(0)));
    for _ in 0..100 {
        if pending.is_empty() {
            break;
        }
        port.tx_batch(&mut pending);
    }
    assert!(pending.is_empty(), "{} frames never left", pending.len());
    assert!(want.len() > 1000, "{} frames", want.len());
    let got = model.take_wire();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "frames reordered or checksums wrong");
    port.reclaim_tx();
    assert_eq!(port.tx_in_flight(), 0);
    assert_eq!(pool.available(), free_at_start, "no buffer leaked");
    assert_eq!(port.stats().drop_count("tx_bad_offload"), 0);
    healthy(&model);
}

/// Guest memory for tailed frames: leaked (it outlives every frame), mapped through
/// the port's `DmaMap`; returns the memory, its IOVA and the tokens' ring.
fn guest_memory(
    port: &ModelPort,
    bytes: usize,
) -> (&'static mut [u8], u64, std::sync::Arc<pkt::DoneRing>) {
    let mem = vec![0u8; bytes].leak();
    let map = port.dma_map().expect("the model port has a DMA map");
    // SAFETY: `mem` is leaked: it stays mapped in this process for good.
    let iova = unsafe { map.map(mem.as_ptr(), mem.len()) }.expect("map");
    (mem, iova, pkt::DoneRing::new(64))
}

/// A pool buffer holding `head`, with a tail over `tail` (copied to `mem[at..]`)
/// claiming device address `dma`.
fn tailed(
    pool: &Mempool,
    head: &[u8],
    tail: &[u8],
    mem: &mut [u8],
    at: usize,
    dma: Option<u64>,
    done: (&std::sync::Arc<pkt::DoneRing>, u32),
) -> pkt::PktBuf {
    mem[at..at + tail.len()].copy_from_slice(tail);
    let ptr = std::ptr::NonNull::new(mem[at..].as_mut_ptr()).expect("non-null");
    // SAFETY: `mem` is leaked and these bytes are not written again.
    let seg = unsafe {
        pkt::ExtSeg::new(
            ptr,
            tail.len() as u32,
            dma,
            pkt::Completion::new(done.0.clone(), done.1),
        )
    };
    let mut b = pool.alloc().expect("buffer");
    b.extend_from_slice(head).expect("fits");
    b.attach_ext(seg);
    b
}

#[test]
fn tailed_frames_are_gathered_with_checksum_offload_and_given_back_after_write_back() {
    let pool = pool(256);
    let (model, mut port) = port_with(small_rings(), &pool);
    assert!(port.caps().offloads.contains(pkt::Offloads::EXT_TAIL));
    let (mem, iova, done) = guest_memory(&port, 16 * 1024);
    let plain = frame(1, 1514);
    let udp = udp_frame(&[0x5a; 1200]);
    let udp_partial = partial(&pool, &udp).data().to_vec();
    let mut b = Batch::new();
    b.push(tailed(
        &pool,
        &plain[..64],
        &plain[64..],
        mem,
        0,
        Some(iova),
        (&done, 1),
    ))
    .expect("room");
    // The checksum field (34 + 6) is in the pool buffer, the payload in the tail.
    let mut p = tailed(
        &pool,
        &udp_partial[..50],
        &udp_partial[50..],
        mem,
        4096,
        Some(iova + 4096),
        (&done, 2),
    );
    p.meta.offload = partial(&pool, &udp).meta.offload;
    b.push(p).expect("room");
    assert_eq!(port.tx_batch(&mut b), 2);
    assert_eq!(
        model.take_wire(),
        vec![plain, udp],
        "gathered, checksum inserted"
    );
    assert_eq!((port.tx_zero_copy(), port.tx_tail_copied()), (2, 0));
    assert_eq!(model.state().tx_contexts, 1);
    port.reclaim_tx();
    assert_eq!(port.tx_in_flight(), 0);
    let mut back: Vec<u32> = std::iter::from_fn(|| done.pop()).collect();
    back.sort_unstable();
    assert_eq!(back, vec![1, 2]);
    healthy(&model);
}

#[test]
fn the_receive_poll_gives_tails_back_when_nothing_more_is_sent() {
    let pool = pool(256);
    let (model, mut port) = port_with(small_rings(), &pool);
    let (mem, iova, done) = guest_memory(&port, 16 * 1024);
    model.state().defer_tx = true;
    let f = frame(3, 1514);
    let mut b = Batch::new();
    b.push(tailed(
        &pool,
        &f[..64],
        &f[64..],
        mem,
        0,
        Some(iova),
        (&done, 30),
    ))
    .expect("room");
    assert_eq!(port.tx_batch(&mut b), 1);
    model.process_tx();
    assert!(done.is_empty(), "written back, not yet reclaimed");
    // No transmit follows: the receive poll alone must release the frame.
    assert_eq!(port.rx_batch(&mut Batch::new()), 0);
    assert_eq!(done.pop(), Some(30));
    assert_eq!(port.tx_in_flight(), 0);
    assert_eq!(model.take_wire(), vec![f]);
    healthy(&model);
}

#[test]
fn a_tail_software_must_checksum_or_the_device_cannot_reach_is_copied() {
    let pool = pool(256);
    let (model, mut port) = port_with(small_rings(), &pool);
    let (mem, iova, done) = guest_memory(&port, 16 * 1024);
    // An unknown ethertype: no context describes it, software completes the checksum,
    // whose field (34 + 6) lies in the tail.
    let mut odd = udp_frame(b"behind an unknown ethertype");
    odd[12..14].copy_from_slice(&[0x88, 0xb5]);
    let part = partial(&pool, &odd);
    let bytes = part.data().to_vec();
    let mut p = tailed(
        &pool,
        &bytes[..20],
        &bytes[20..],
        mem,
        0,
        Some(iova),
        (&done, 1),
    );
    p.meta.offload = part.meta.offload;
    let plain = frame(2, 900);
    let mut b = Batch::new();
    b.push(p).expect("room");
    b.push(tailed(
        &pool,
        &plain[..30],
        &plain[30..],
        mem,
        4096,
        None,
        (&done, 2),
    ))
    .expect("room");
    assert_eq!(port.tx_batch(&mut b), 2);
    assert_eq!(model.take_wire(), vec![odd, plain]);
    assert_eq!((port.tx_zero_copy(), port.tx_tail_copied()), (0, 2));
    assert_eq!(port.tx_software_checksums(), 1);
    let mut back: Vec<u32> = std::iter::from_fn(|| done.pop()).collect();
    back.sort_unstable();
    assert_eq!(back, vec![1, 2], "copied tails go back at once");
    healthy(&model);
}

#[test]
fn a_tail_at_an_unmapped_address_is_refused_by_the_82599_model() {
    let pool = pool(256);
    let (model, mut port) = port_with(small_rings(), &pool);
    let (mem, _iova, done) = guest_memory(&port, 8 * 1024);
    let outside = vec![0u8; 4096];
    let f = frame(3, 700);
    let mut b = Batch::new();
    b.push(tailed(
        &pool,
        &f[..60],
        &f[60..],
        mem,
        0,
        Some(outside.as_ptr() as u64),
        (&done, 7),
    ))
    .expect("room");
    assert_eq!(port.tx_batch(&mut b), 1);
    assert!(
        model.take_wire().is_empty(),
        "nothing of the frame goes out"
    );
    assert!(model.state().dma_faults >= 1);
    port.reclaim_tx();
    assert_eq!(done.pop(), Some(7));
}
