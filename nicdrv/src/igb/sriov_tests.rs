//! SR-IOV against the register model: our VF driver does its handshake with our PF's
//! mailbox service, frames flow through the VF's pool, bad messages get NACKs and
//! counters, and the anti-spoofing bits do what they say.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pkt::{Batch, Mempool, Port};

use crate::test_util::batch_of;

use super::mailbox::{self, VfPolicy, msg};
use super::model::{IgbModel, MODEL_MAC, ModelDma, VfModel};
use super::{IgbConfig, IgbError, IgbPort, IgbVfConfig, IgbVfPort, Registers, SriovConfig, regs};

const VF_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x00, 0x10, 0x01];
const PEER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x09];

type Pf = IgbPort<IgbModel, ModelDma>;
type Vf = IgbVfPort<VfModel, ModelDma>;

fn pool() -> Mempool {
    Mempool::new(256, super::pool_buffer_size(1500)).expect("pool")
}

fn pf_with(model: &IgbModel, pool: &Mempool, policy: VfPolicy) -> Pf {
    let cfg = IgbConfig {
        rx_ring: 16,
        tx_ring: 16,
        sriov: Some(SriovConfig {
            vfs: vec![policy],
            poll_every: 1,
        }),
        ..IgbConfig::default()
    };
    IgbPort::new(
        "pf",
        model.clone(),
        ModelDma::new(model, pool),
        pool.clone(),
        cfg,
    )
    .expect("PF init")
}

fn vf_cfg() -> IgbVfConfig {
    IgbVfConfig {
        rx_ring: 16,
        tx_ring: 16,
        mailbox_timeout: Duration::from_secs(5),
        ..IgbVfConfig::default()
    }
}

/// Opens VF 0 while a thread keeps servicing the PF's mailbox (as the PF's poll loop
/// would); returns the PF back when the VF is up.
fn open_vf(
    model: &IgbModel,
    pf: Pf,
    pool: &Mempool,
    cfg: IgbVfConfig,
) -> (Pf, Result<Vf, IgbError>) {
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let server = std::thread::spawn(move || {
        let mut pf = pf;
        // Bounded: the VF's handshake takes a few messages; stop when told.
        for _ in 0..200_000 {
            if stop2.load(Ordering::Relaxed) {
                break;
            }
            pf.service_mailbox();
            std::thread::sleep(Duration::from_micros(50));
        }
        pf
    });
    let vf = IgbVfPort::new(
        "vf0",
        model.vf(0),
        ModelDma::new(model, pool),
        pool.clone(),
        cfg,
    );
    stop.store(true, Ordering::Relaxed);
    let pf = server.join().expect("PF thread");
    (pf, vf)
}

fn frame(dst: [u8; 6], src: [u8; 6], seq: u8, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]);
    while f.len() < len {
        f.push(seq.wrapping_add(f.len() as u8));
    }
    f
}

#[test]
fn vf_driver_handshakes_with_our_pf_and_gets_its_pool() {
    let model = IgbModel::new();
    let pool = pool();
    let pf = pf_with(&model, &pool, VfPolicy::fixed_mac(VF_MAC));
    let (pf, vf) = open_vf(&model, pf, &pool, vf_cfg());
    let vf = vf.expect("VF init");
    assert_eq!(vf.mac().0, VF_MAC, "the MAC the PF assigned");
    assert_eq!(vf.api(), msg::API_11, "our PF speaks API 1.1");
    assert_eq!(vf.queues(), Some((1, 1)));
    let r = |off| model.read(off);
    assert_eq!(
        r(regs::VFRE) & 0b11,
        0b11,
        "VF 0 and the PF (pool 1) receive"
    );
    assert_eq!(r(regs::VFTE) & 0b11, 0b11);
    let (ral, rah) = mailbox::mac_to_words(VF_MAC);
    assert_eq!(r(regs::ral(1)), ral);
    assert_eq!(
        r(regs::rah(1)),
        rah | regs::RAH_AV | 1 << regs::RAH_POOL_SHIFT,
        "VF 0's address, valid, in pool 0"
    );
    assert_ne!(
        r(regs::rah(0)) & 1 << (regs::RAH_POOL_SHIFT + 1),
        0,
        "the PF's address is in pool 1"
    );
    let dtxswc = r(regs::DTXSWC);
    assert_ne!(
        dtxswc & 1 << regs::DTXSWC_MAC_SPOOF_SHIFT,
        0,
        "MAC anti-spoof on VF 0"
    );
    assert_ne!(
        dtxswc & 1 << regs::DTXSWC_VLAN_SPOOF_SHIFT,
        0,
        "VLAN anti-spoof on VF 0"
    );
    assert_eq!(
        dtxswc & 1 << (regs::DTXSWC_MAC_SPOOF_SHIFT + 1),
        0,
        "not on the PF"
    );
    assert_ne!(r(regs::CTRL_EXT) & regs::CTRL_EXT_PFRSTD, 0);
    assert_ne!(
        r(regs::GPIE) & regs::GPIE_MSIX_MODE,
        0,
        "VF interrupts need MSI-X mode"
    );
    // The PF runs on its own pool's queue (1), never on VF 0's queue 0.
    let q1 = super::QueueRegs::pf(1);
    assert_eq!(r(q1.rdlen), 16 * 16);
    assert_ne!(r(q1.txdctl) & regs::XDCTL_ENABLE, 0);
    assert_eq!(
        r(regs::RDBAL0),
        model.vf(0).read(super::QueueRegs::vf().rdbal),
        "VF 0's ring is PF queue 0"
    );
    assert_ne!(r(regs::RDBAL0), r(q1.rdbal));
    let s = pf.sriov().expect("sriov");
    // VF_RESET, API_NEGOTIATE, GET_QUEUES, SET_MAC_ADDR.
    assert_eq!(s.counter("mbx_acked"), 4);
    assert_eq!(s.counter("mbx_messages"), 4);
    assert!(s.vfs()[0].cts);
}

#[test]
fn frames_flow_through_the_vf_and_the_pf_queues() {
    let model = IgbModel::new();
    let pool = pool();
    let pf = pf_with(&model, &pool, VfPolicy::fixed_mac(VF_MAC));
    let (mut pf, vf) = open_vf(&model, pf, &pool, vf_cfg());
    let mut vf = vf.expect("VF init");
    assert!(vf.wait_link(Duration::from_secs(1)));
    // VF -> wire.
    let out: Vec<Vec<u8>> = (0..5)
        .map(|i| frame(PEER, VF_MAC, i, 60 + 100 * i as usize))
        .collect();
    let mut b = batch_of(&pool, &out);
    assert_eq!(vf.tx_batch(&mut b), 5);
    assert_eq!(model.take_wire(), out);
    // Wire -> VF (its MAC) and -> PF (the PF's MAC, queue 1).
    let to_vf = frame(VF_MAC, PEER, 7, 300);
    let to_pf = frame(MODEL_MAC, PEER, 8, 200);
    assert_eq!(model.receive(&to_vf), super::model::RxOutcome::Delivered);
    assert_eq!(model.receive(&to_pf), super::model::RxOutcome::Delivered);
    let mut rx = Batch::new();
    assert_eq!(vf.rx_batch(&mut rx), 1);
    assert_eq!(rx.drain().next().expect("frame").data(), to_vf.as_slice());
    assert_eq!(pf.rx_batch(&mut rx), 1);
    assert_eq!(rx.drain().next().expect("frame").data(), to_pf.as_slice());
    // A broadcast reaches both pools.
    let bcast = frame([0xff; 6], PEER, 9, 64);
    assert_eq!(model.receive(&bcast), super::model::RxOutcome::Delivered);
    assert_eq!(vf.rx_batch(&mut rx), 1);
    rx.clear();
    assert_eq!(pf.rx_batch(&mut rx), 1);
    rx.clear();
    assert_eq!(vf.hw_good_frames(), (2, 5));
    let st = vf.stats();
    assert_eq!((st.rx_packets, st.tx_packets), (2, 5));
}

#[test]
fn vf_sending_with_a_foreign_source_mac_is_dropped_by_anti_spoofing() {
    let model = IgbModel::new();
    let pool = pool();
    let pf = pf_with(&model, &pool, VfPolicy::fixed_mac(VF_MAC));
    let (_pf, vf) = open_vf(&model, pf, &pool, vf_cfg());
    let mut vf = vf.expect("VF init");
    let forged = frame(PEER, [0x52, 0x54, 0, 0, 0x66, 0x66], 1, 60);
    let honest = frame(PEER, VF_MAC, 2, 60);
    let mut b = batch_of(&pool, &[forged, honest.clone()]);
    assert_eq!(vf.tx_batch(&mut b), 2, "the driver posts both");
    assert_eq!(
        model.take_wire(),
        vec![honest],
        "the device sends only the honest one"
    );
    assert_eq!(model.state().spoofed, 1);
}

/// Sends raw words as VF `n` would and lets the PF answer; returns the reply's word 0.
fn raw_exchange(model: &IgbModel, pf: &mut Pf, words: &[u32]) -> u32 {
    let vf = model.vf(0);
    vf.write(regs::vf::MAILBOX, regs::vf::MAILBOX_VFU);
    for (i, w) in words.iter().enumerate() {
        vf.write(regs::vf::VMBMEM + 4 * i as u32, *w);
    }
    vf.write(regs::vf::MAILBOX, regs::vf::MAILBOX_REQ);
    assert_eq!(pf.service_mailbox(), 1, "one message answered");
    let status = vf.read(regs::vf::MAILBOX);
    assert_ne!(status & regs::vf::MAILBOX_PFACK, 0, "the PF acknowledged");
    assert_ne!(status & regs::vf::MAILBOX_PFSTS, 0, "the PF replied");
    let w0 = vf.read(regs::vf::VMBMEM);
    vf.write(regs::vf::MAILBOX, regs::vf::MAILBOX_ACK);
    w0
}

#[test]
fn bad_messages_get_nack_and_named_counters() {
    let model = IgbModel::new();
    let pool = pool();
    let mut pf = pf_with(&model, &pool, VfPolicy::fixed_mac(VF_MAC));
    let (w1, w2) = mailbox::mac_to_words([0x52, 0, 0, 0, 0, 0x42]);
    // Before VF_RESET nothing but VF_RESET is honoured.
    let w0 = raw_exchange(&model, &mut pf, &[msg::SET_MAC_ADDR, w1, w2]);
    assert_eq!(w0, msg::SET_MAC_ADDR | msg::NACK);
    assert_eq!(
        raw_exchange(&model, &mut pf, &[msg::VF_RESET]),
        msg::VF_RESET | msg::ACK
    );
    // A MAC the policy does not allow; then garbage.
    assert_eq!(
        raw_exchange(&model, &mut pf, &[msg::SET_MAC_ADDR, w1, w2]),
        msg::SET_MAC_ADDR | msg::NACK | msg::CTS
    );
    assert_eq!(
        raw_exchange(&model, &mut pf, &[0xdead]),
        0xdead | msg::NACK | msg::CTS
    );
    assert_eq!(
        raw_exchange(&model, &mut pf, &[msg::SET_MULTICAST | 200 << 16]),
        msg::SET_MULTICAST | 200 << 16 | msg::NACK | msg::CTS
    );
    let s = pf.sriov().expect("sriov");
    assert_eq!(s.counter("mbx_nack_before_reset"), 1);
    assert_eq!(s.counter("mbx_nack_mac_denied"), 1);
    assert_eq!(s.counter("mbx_nack_unknown_type"), 1);
    assert_eq!(s.counter("mbx_nack_bad_multicast"), 1);
    assert_eq!(s.vfs()[0].mac, VF_MAC, "the refused MAC was not taken");
    let (ral, _) = mailbox::mac_to_words(VF_MAC);
    assert_eq!(model.read(regs::ral(1)), ral);
    // The counters are in the port's stats too.
    let stats = pf.stats();
    assert!(
        stats
            .drops
            .iter()
            .any(|d| d.name == "mbx_nack_mac_denied" && d.count == 1)
    );
}

#[test]
fn a_vf_reset_disables_its_pool_until_it_asks_again() {
    let model = IgbModel::new();
    let pool = pool();
    let mut pf = pf_with(&model, &pool, VfPolicy::fixed_mac(VF_MAC));
    assert_eq!(
        raw_exchange(&model, &mut pf, &[msg::VF_RESET]),
        msg::VF_RESET | msg::ACK
    );
    assert_ne!(model.read(regs::VFRE) & 1, 0);
    model.vf(0).write(regs::vf::CTRL, regs::vf::CTRL_RST);
    assert_eq!(pf.service_mailbox(), 0);
    let s = pf.sriov().expect("sriov");
    assert_eq!(s.counter("vf_flr"), 1);
    assert!(!s.vfs()[0].cts, "configuration needs a new VF_RESET");
    assert_eq!(model.read(regs::VFRE) & 1, 0);
    assert_eq!(
        model.read(regs::rah(1)) & regs::RAH_AV,
        0,
        "its address is off"
    );
    assert_eq!(model.read(regs::VFLRE), 0, "VFLRE acknowledged");
}

#[test]
fn a_port_vlan_is_inserted_filtered_and_not_changeable_by_the_vf() {
    let model = IgbModel::new();
    let pool = pool();
    let policy = VfPolicy {
        vlan: Some(100),
        ..VfPolicy::fixed_mac(VF_MAC)
    };
    let mut pf = pf_with(&model, &pool, policy);
    raw_exchange(&model, &mut pf, &[msg::VF_RESET]);
    assert_eq!(
        model.read(regs::VMVIR0),
        100 | regs::VMVIR_VLANA_DEFAULT,
        "VLAN 100 inserted on VF 0's frames"
    );
    assert_eq!(
        model.read(regs::VLVF0),
        100 | 1 << regs::VLVF_POOLSEL_SHIFT | regs::VLVF_VLANID_ENABLE
    );
    assert_ne!(model.read(regs::VFTA + 4 * (100 >> 5)) & 1 << (100 & 31), 0);
    assert_ne!(model.read(regs::RCTL) & regs::RCTL_VFE, 0);
    let vmolr = model.read(regs::VMOLR0);
    assert_ne!(vmolr & regs::VMOLR_STRVLAN, 0);
    assert_eq!(
        vmolr & regs::VMOLR_AUPE,
        0,
        "no untagged frames for a port-VLAN VF"
    );
    assert_eq!(
        raw_exchange(&model, &mut pf, &[msg::SET_VLAN | 1 << 16, 5]),
        msg::SET_VLAN | 1 << 16 | msg::NACK | msg::CTS
    );
    assert_eq!(
        pf.sriov().expect("sriov").counter("mbx_nack_vlan_denied"),
        1
    );
}

/// Opens VF 0 with a 30 ms mailbox timeout, expecting it to fail; returns the error.
fn open_vf_failing(model: &IgbModel, pool: &Mempool, why: &str) -> String {
    let cfg = IgbVfConfig {
        mailbox_timeout: Duration::from_millis(30),
        ..vf_cfg()
    };
    IgbVfPort::new(
        "vf0",
        model.vf(0),
        ModelDma::new(model, pool),
        pool.clone(),
        cfg,
    )
    .expect_err(why)
    .to_string()
}

#[test]
fn a_vf_without_a_pf_driver_fails_with_a_clear_error() {
    let model = IgbModel::new();
    let pool = pool();
    let text = open_vf_failing(&model, &pool, "no PF driver: RSTI never clears");
    assert!(
        text.contains("RSTI") && text.contains("PF driver"),
        "{text}"
    );
    // The register as the VF last read it: RSTI (bit 6) still set.
    assert!(text.contains("VFMailbox stays 0x40 "), "{text}");
}

/// Opens VF 0 next to a PF that is up (reset done announced) but whose mailbox nobody
/// services (no rx_batch), after `prepare`; returns the VF's error.
fn open_vf_next_to_an_idle_pf(prepare: impl FnOnce(&IgbModel), why: &str) -> String {
    let model = IgbModel::new();
    let pool = pool();
    let _pf = pf_with(&model, &pool, VfPolicy::fixed_mac(VF_MAC));
    prepare(&model);
    open_vf_failing(&model, &pool, why)
}

#[test]
fn a_pf_that_never_services_its_mailbox_times_out_with_the_register_state() {
    let text = open_vf_next_to_an_idle_pf(|_| {}, "no ACK ever comes");
    assert!(
        text.contains("mailbox, VF_RESET: no ACK from the PF within 30 ms (VFMailbox 0x"),
        "{text}"
    );
}

#[test]
fn a_pf_holding_the_mailbox_buffer_keeps_the_vf_from_sending() {
    // The PF takes VF 0's buffer and never lets it go.
    let hold = |m: &IgbModel| m.write(regs::PFMAILBOX0, regs::PFMAILBOX_PFU);
    let text = open_vf_next_to_an_idle_pf(hold, "the buffer stays the PF's");
    assert!(
        text.contains("mailbox, VF_RESET: the PF holds the mailbox buffer"),
        "{text}"
    );
}

#[test]
fn a_vf_asking_for_a_mac_the_pf_forbids_gets_a_clear_error() {
    let model = IgbModel::new();
    let pool = pool();
    let pf = pf_with(&model, &pool, VfPolicy::fixed_mac(VF_MAC));
    let cfg = IgbVfConfig {
        mac: Some([0x52, 0x54, 0, 0, 0, 0x77]),
        ..vf_cfg()
    };
    let (pf, vf) = open_vf(&model, pf, &pool, cfg);
    let err = vf.expect_err("MAC change refused");
    assert!(err.to_string().contains("refused MAC"), "{err}");
    assert_eq!(pf.sriov().expect("sriov").counter("mbx_nack_mac_denied"), 1);
}
