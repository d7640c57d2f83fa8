//! 802.1Q strip and insert of the 82576 driver against the register-level model,
//! which strips and inserts tags itself (CTRL.VME, DCMD.VLE with the context's VLAN).

use std::net::{Ipv4Addr, Ipv6Addr};

use offload::checksum::{verify_ipv4_header, verify_tcp_v4, verify_tcp_v6, verify_udp_v4};
use offload::vnet_hdr::DATA_VALID;
use pkt::{Batch, HEADROOM, Mempool, Offloads, Port};

use super::model::{IgbModel, ModelDma, RxOutcome};
use super::offload_tests::{
    ModelPort, buf_of, cfg, partial, pool, port_with, tcp_frame_v4, tcp_frame_v6, udp_frame,
};
use super::{IgbConfig, IgbError, IgbPort, Registers, SriovConfig, regs};

/// A TCI with priority 5, DEI clear, VLAN 100: every field of the tag is non-zero.
const TCI: u16 = 5 << 13 | 100;

fn vlan_cfg() -> IgbConfig {
    IgbConfig {
        vlan_strip: true,
        ..cfg(1)
    }
}

/// `f` with an 802.1Q tag carrying `tci` after its MAC addresses.
fn tagged(f: &[u8], tci: u16) -> Vec<u8> {
    let mut t = f[..12].to_vec();
    t.extend_from_slice(&[0x81, 0x00]);
    t.extend_from_slice(&tci.to_be_bytes());
    t.extend_from_slice(&f[12..]);
    t
}

/// The tag of a transmitted frame and the frame without it; panics when untagged.
fn untag(f: &[u8]) -> (u16, Vec<u8>) {
    assert_eq!(
        f[12..14],
        [0x81, 0x00],
        "802.1Q TPID after the MAC addresses"
    );
    let mut u = f[..12].to_vec();
    u.extend_from_slice(&f[16..]);
    (u16::from_be_bytes([f[14], f[15]]), u)
}

fn rx_frame() -> Vec<u8> {
    udp_frame(Ipv4Addr::new(10, 0, 0, 1), 4000, 4789, 300)
}

fn received(port: &mut ModelPort, n: usize) -> Batch {
    let mut b = Batch::new();
    assert_eq!(port.rx_batch(&mut b), n);
    b
}

#[test]
fn stripping_is_off_by_default_and_tags_stay_in_the_frame() {
    let pool = pool();
    let (model, mut port) = port_with(cfg(1), &pool);
    assert_eq!(model.read(regs::CTRL) & regs::CTRL_VME, 0);
    assert!(!port.caps().offloads.contains(Offloads::VLAN));
    let t = tagged(&rx_frame(), TCI);
    assert_eq!(model.receive(&t), RxOutcome::Delivered);
    let b = received(&mut port, 1);
    let got = b.iter().next().expect("frame");
    assert_eq!(got.data(), &t[..], "tag kept in the bytes");
    assert_eq!(got.meta.vlan, None);
    assert_eq!(
        got.meta.offload.flags, DATA_VALID,
        "the device checks checksums behind a tag"
    );
    let o = port.offload_stats();
    assert_eq!((o.rx_vlan_stripped, o.rx_vlan_unrequested), (0, 0));
}

#[test]
fn tagged_frames_arrive_untagged_with_their_tci_in_meta() {
    let pool = pool();
    let (model, mut port) = port_with(vlan_cfg(), &pool);
    assert_ne!(model.read(regs::CTRL) & regs::CTRL_VME, 0, "CTRL.VME set");
    assert!(port.caps().offloads.contains(Offloads::VLAN));
    let plain = rx_frame();
    let other = udp_frame(Ipv4Addr::new(10, 0, 0, 7), 1, 2, 40);
    for f in [tagged(&plain, TCI), plain.clone(), tagged(&other, 0x0fff)] {
        assert_eq!(model.receive(&f), RxOutcome::Delivered);
    }
    let b = received(&mut port, 3);
    let got: Vec<(Vec<u8>, Option<u16>, u8)> = b
        .iter()
        .map(|p| (p.data().to_vec(), p.meta.vlan, p.meta.offload.flags))
        .collect();
    assert_eq!(
        got,
        vec![
            (plain.clone(), Some(TCI), DATA_VALID),
            (plain, None, DATA_VALID),
            (other, Some(0x0fff), DATA_VALID),
        ]
    );
    assert_eq!(port.offload_stats().rx_vlan_stripped, 2);
    assert_eq!(port.stats().rx_bytes, (2 * rx_frame().len() + 82) as u64);
}

#[test]
fn a_stripped_tag_is_counted_not_used_on_a_queue_that_did_not_ask() {
    let pool = pool();
    let (model, mut port) = port_with(cfg(1), &pool);
    // The device strips although the driver did not ask (as a VF under a port VLAN
    // sees it): the frame is delivered as before, without a tag in its meta.
    model.write(regs::CTRL, model.read(regs::CTRL) | regs::CTRL_VME);
    let plain = rx_frame();
    assert_eq!(model.receive(&tagged(&plain, TCI)), RxOutcome::Delivered);
    let b = received(&mut port, 1);
    let got = b.iter().next().expect("frame");
    assert_eq!((got.data(), got.meta.vlan), (&plain[..], None));
    assert_eq!(port.offload_stats().rx_vlan_unrequested, 1);
    assert_eq!(port.offload_stats().rx_vlan_stripped, 0);
}

#[test]
fn a_frame_with_a_meta_tag_leaves_tagged_and_contexts_are_reused_per_tag() {
    let pool = pool();
    let (model, mut port) = port_with(vlan_cfg(), &pool);
    let f = tcp_frame_v4(200);
    let mut b = Batch::new();
    for tag in [Some(TCI), Some(TCI), None, Some(7), Some(TCI)] {
        let mut buf = buf_of(&pool, &f);
        buf.meta.vlan = tag;
        b.push(buf).expect("room");
    }
    assert_eq!(port.tx_batch(&mut b), 5);
    let wire = model.take_wire();
    assert_eq!(
        wire,
        vec![
            tagged(&f, TCI),
            tagged(&f, TCI),
            f.clone(),
            tagged(&f, 7),
            tagged(&f, TCI)
        ]
    );
    assert_eq!(
        model.state().tx_contexts,
        3,
        "a context per change of tag; an untagged frame needs none"
    );
    let o = port.offload_stats();
    assert_eq!((o.tx_vlan_inserted, o.tx_contexts), (4, 3));
    port.reclaim_tx();
    assert_eq!(port.tx_in_flight(), 0, "context slots reclaimed too");
    assert_eq!(model.state().bad_contexts, 0);
}

#[test]
fn checksum_offload_and_insertion_together_give_tagged_frames_with_right_checksums() {
    let pool = pool();
    let (model, mut port) = port_with(vlan_cfg(), &pool);
    let udp = udp_frame(Ipv4Addr::new(10, 0, 0, 1), 7, 8, 200);
    let tcp = tcp_frame_v4(500);
    let mut b = Batch::new();
    for (f, tag) in [(&udp, TCI), (&tcp, TCI), (&udp, 9)] {
        let mut buf = partial(&pool, f, f[23] == 6);
        buf.meta.vlan = Some(tag);
        b.push(buf).expect("room");
    }
    assert_eq!(port.tx_batch(&mut b), 3);
    let wire = model.take_wire();
    assert_eq!(wire.len(), 3);
    for (i, (seg, (want, tag))) in wire
        .iter()
        .zip([(&udp, TCI), (&tcp, TCI), (&udp, 9)])
        .enumerate()
    {
        assert_eq!(
            seg,
            &tagged(want, tag),
            "frame {i}: checksums as software's"
        );
        let (tci, u) = untag(seg);
        assert_eq!(tci, tag);
        let a = |at: usize| Ipv4Addr::new(u[at], u[at + 1], u[at + 2], u[at + 3]);
        if u[23] == 17 {
            assert!(verify_udp_v4(a(26), a(30), &u[34..]), "frame {i}");
        } else {
            assert!(verify_tcp_v4(a(26), a(30), &u[34..]), "frame {i}");
        }
    }
    let o = port.offload_stats();
    assert_eq!((o.tx_csum, o.tx_vlan_inserted, o.tx_contexts), (3, 3, 3));
}

fn tso_tagged(frame: &[u8], v4: bool) {
    let big = Mempool::new(600, HEADROOM + 32 * 1024).expect("pool");
    let (model, mut port) = port_with(vlan_cfg(), &big);
    let mut buf = buf_of(&big, frame);
    buf.meta.offload = offload::gso::tso_request(buf.data_mut(), 1500).expect("tso request");
    buf.meta.vlan = Some(TCI);
    let mut b = Batch::new();
    b.push(buf).expect("room");
    assert_eq!(port.tx_batch(&mut b), 1);
    let wire = model.take_wire();
    let l4 = if v4 { 34 } else { 54 };
    let mss = if v4 { 1460 } else { 1440 };
    assert_eq!(wire.len(), (frame.len() - l4 - 20).div_ceil(mss));
    let mut sw = Vec::new();
    offload::gso::segment_tcp(frame, mss, &big, |s| sw.push(s.data().to_vec()))
        .expect("software segmentation");
    for (i, seg) in wire.iter().enumerate() {
        assert!(seg.len() <= 1518, "segment {i}: {} bytes", seg.len());
        let (tci, u) = untag(seg);
        assert_eq!(tci, TCI, "segment {i} tagged");
        if v4 {
            assert!(verify_ipv4_header(&u[14..34]), "segment {i}");
            let a = |at: usize| Ipv4Addr::new(u[at], u[at + 1], u[at + 2], u[at + 3]);
            assert!(verify_tcp_v4(a(26), a(30), &u[34..]), "segment {i}");
        } else {
            let a = |at: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&u[at..at + 16]);
                Ipv6Addr::from(o)
            };
            assert!(verify_tcp_v6(&a(22), &a(38), &u[54..]), "segment {i}");
        }
        assert_eq!(u, sw[i], "segment {i}: software's segment, plus the tag");
    }
    let o = port.offload_stats();
    assert_eq!((o.tx_tso, o.tx_vlan_inserted, o.tx_contexts), (1, 1, 1));
    assert_eq!(model.state().bad_contexts, 0);
}

#[test]
fn tso_with_a_tag_tags_every_segment_and_keeps_checksums_right() {
    tso_tagged(&tcp_frame_v4(20_000), true);
    tso_tagged(&tcp_frame_v6(9_000), false);
}

#[test]
fn a_stripped_frame_sent_on_goes_out_as_it_came_in() {
    let pool = pool();
    let (model, mut port) = port_with(vlan_cfg(), &pool);
    let t = tagged(&rx_frame(), TCI);
    assert_eq!(model.receive(&t), RxOutcome::Delivered);
    let mut b = received(&mut port, 1);
    assert_eq!(port.tx_batch(&mut b), 1);
    assert_eq!(model.take_wire(), vec![t]);
}

#[test]
fn tagged_frames_a_port_cannot_tag_or_fit_are_dropped_and_counted() {
    let pool = pool();
    // Without VLAN offload: a meta tag would be lost, so the frame is not sent.
    let (model, mut port) = port_with(cfg(1), &pool);
    let f = tcp_frame_v4(100);
    let mut b = Batch::new();
    let mut buf = buf_of(&pool, &f);
    buf.meta.vlan = Some(TCI);
    b.push(buf).expect("room");
    b.push(buf_of(&pool, &f)).expect("room");
    assert_eq!(port.tx_batch(&mut b), 1);
    assert_eq!(port.stats().drop_count("tx_bad_vlan"), 1);
    assert_eq!(model.take_wire(), vec![f.clone()]);

    // With it, for both offload settings: a frame of the MTU fits with its tag, one
    // 4 bytes longer (carrying a tag of its own) does not.
    for offloads in [true, false] {
        let (model, mut port) = port_with(
            IgbConfig {
                offloads,
                ..vlan_cfg()
            },
            &pool,
        );
        let full = tcp_frame_v4(1500 - 40);
        let long = tagged(&full, 3);
        let mut b = Batch::new();
        for f in [&full, &long] {
            let mut buf = buf_of(&pool, f);
            buf.meta.vlan = Some(TCI);
            b.push(buf).expect("room");
        }
        assert_eq!(port.tx_batch(&mut b), 1, "offloads {offloads}");
        assert_eq!(port.stats().drop_count("tx_bad_length"), 1);
        assert_eq!(port.stats().drop_count("tx_bad_vlan"), 0);
        let wire = model.take_wire();
        assert_eq!(wire, vec![tagged(&full, TCI)], "offloads {offloads}");
        assert_eq!(wire[0].len(), 1518);
    }
}

#[test]
fn the_model_drops_and_counts_vle_without_a_context() {
    let pool = pool();
    let (model, mut port) = port_with(cfg(1), &pool);
    // A plain frame, then its data descriptor rewritten to ask for a tag while the
    // queue never had a context: the model must not invent a TCI.
    model.state().defer_tx = true;
    let mut b = Batch::new();
    b.push(buf_of(&pool, &tcp_frame_v4(64))).expect("room");
    assert_eq!(port.tx_batch(&mut b), 1);
    {
        let base = u64::from(model.read(regs::TDBAL0)) | u64::from(model.read(regs::TDBAH0)) << 32;
        let p = (base + 8) as usize as *mut u64;
        // SAFETY: slot 0 of the transmit ring the model allocated for this port
        // (identity-mapped, 8-byte aligned, alive while `port` is); the model is idle.
        unsafe {
            let q1 = u64::from_le(std::ptr::read_volatile(p));
            std::ptr::write_volatile(p, (q1 | u64::from(regs::desc::TX_CMD_VLE)).to_le());
        }
    }
    model.process_tx();
    assert!(model.take_wire().is_empty());
    assert_eq!(model.state().bad_contexts, 1);
}

#[test]
fn vlan_strip_with_sriov_is_a_clear_configuration_error() {
    let pool = pool();
    let model = IgbModel::new();
    let cfg = IgbConfig {
        vlan_strip: true,
        sriov: Some(SriovConfig {
            vfs: Vec::new(),
            poll_every: 1,
        }),
        ..cfg(1)
    };
    let err = IgbPort::new(
        "pf",
        model.clone(),
        ModelDma::new(&model, &pool),
        pool.clone(),
        cfg,
    )
    .expect_err("refused");
    assert!(
        matches!(&err, IgbError::Config(m) if m.contains("vlan_strip")),
        "{err}"
    );
}
