//! The 82599 VF driver against our PF mailbox on the model: the handshake, the pool
//! and anti-spoofing it leaves, frames both ways through the VF's queue, and the
//! PF's refusals.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use pkt::{Batch, Port};

use super::IxgbeError;
use super::mailbox::{PfMailbox, VfPolicy, msg};
use super::model::{IxgbeModel, RxOutcome};
use super::regs::{self, sriov as r};
use super::tests::{healthy, pool, port_with, small_rings};
use super::vf::IxgbeVfConfig;
use super::vf_test_util::{MAC0, MAC1, OTHER, frame, open_vf, small_vf};
use crate::igb::Registers;

/// Tells the VFs the PF is up (CTRL_EXT.PFRSTD), as a PF driver does once it has
/// initialised: without it a VF's reset never completes.
pub(super) fn pf_reset_done(model: &IxgbeModel) {
    model.write(
        regs::CTRL_EXT,
        model.peek(regs::CTRL_EXT) | regs::CTRL_EXT_PFRSTD,
    );
}

/// Our PF's mailbox on its own, serviced on a thread of its own (the PF port here runs
/// without SR-IOV; sriov_tests.rs has the PF port servicing it from `rx_batch`).
struct PfThread {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<PfMailbox>,
}

impl PfThread {
    fn start(model: &IxgbeModel, mut pf: PfMailbox) -> Self {
        pf_reset_done(model);
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (model.clone(), Arc::clone(&stop));
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                pf.service(&m);
                std::thread::sleep(Duration::from_micros(50));
            }
            pf
        });
        Self { stop, handle }
    }

    fn finish(self) -> PfMailbox {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("PF thread")
    }
}

#[test]
fn vf_handshake_gets_mac_api_and_queues_and_frames_flow_through_its_pool() {
    let pool = pool(1024);
    // The PF port owns queue 0 (pool 0); VF 1 gets pool 1, queues 2 and 3.
    let (model, _pf_port) = port_with(small_rings(), &pool);
    let pf =
        PfMailbox::new(&[VfPolicy::fixed_mac(MAC0), VfPolicy::fixed_mac(MAC1)]).expect("mailbox");
    let pf = PfThread::start(&model, pf);
    let vf = open_vf(&model, &pool, 1, small_vf());
    let pf = pf.finish();
    let mut vf = vf.expect("VF up");

    assert_eq!(vf.mac().0, MAC1);
    assert_eq!(vf.api(), msg::API_11);
    assert_eq!(vf.queues(), Some((1, 1)));
    assert_eq!(pf.counter("mbx_handled"), 3, "reset, API, queues");
    assert!(pf.vfs()[1].cts && !pf.vfs()[0].cts);
    // Pool 1 enabled both ways, MAC anti-spoofing on for it alone.
    assert_eq!(model.peek(r::pfvfre(0)), 1 << 1);
    assert_eq!(model.peek(r::pfvfte(0)), 1 << 1);
    assert_eq!(model.peek(r::pfvfspoof(0)), 1 << 1);
    assert!(vf.refresh_link());

    // A frame for the VF's MAC lands on its queue, not the PF's.
    let f = frame(MAC1, OTHER, 1);
    assert_eq!(model.receive(&f), RxOutcome::Delivered);
    assert_eq!(model.state().rx_per_queue[2], 1);
    let mut batch = Batch::new();
    assert_eq!(vf.rx_batch(&mut batch), 1);
    assert_eq!(batch.drain().next().expect("frame").data(), &f[..]);

    // From its own address the VF sends; from another, anti-spoofing drops it.
    let mut batch = Batch::new();
    for src in [MAC1, OTHER] {
        let mut b = pool.alloc().expect("buffer");
        b.extend_from_slice(&frame(OTHER, src, 2)).expect("fits");
        batch.push(b).expect("room");
    }
    assert_eq!(vf.tx_batch(&mut batch), 2, "both posted");
    let wire = model.take_wire();
    assert_eq!(wire, vec![frame(OTHER, MAC1, 2)]);
    assert_eq!(model.state().tx_spoofed, 1);
    assert_eq!(model.read(r::SSVPC), 1);
    assert_eq!(vf.reclaim_tx(), 2, "the spoofed descriptor completes too");
    assert_eq!(vf.stats().rx_packets, 1);
    healthy(&model);
}

#[test]
fn a_vf_without_a_mac_is_refused_with_a_clear_error() {
    let pool = pool(1024);
    let (model, _pf_port) = port_with(small_rings(), &pool);
    let pf = PfMailbox::new(&[VfPolicy::fixed_mac([0; 6])]).expect("mailbox");
    let pf = PfThread::start(&model, pf);
    let vf = open_vf(&model, &pool, 0, small_vf());
    let pf = pf.finish();
    match vf {
        Err(IxgbeError::Config(m)) => assert!(m.contains("no MAC address"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(pf.counter("mbx_nack_no_mac"), 1);
    // The pool stays off: nothing was enabled for a VF the PF refused.
    assert_eq!(model.peek(r::pfvfre(0)), 0);
}

#[test]
fn a_pf_that_never_answers_is_a_timeout_naming_the_step() {
    let pool = pool(1024);
    let (model, _pf_port) = port_with(small_rings(), &pool);
    // The PF says it is up, but nobody answers its mailbox.
    pf_reset_done(&model);
    let cfg = IxgbeVfConfig {
        mailbox_timeout: Duration::from_millis(20),
        ..small_vf()
    };
    match open_vf(&model, &pool, 0, cfg) {
        Err(IxgbeError::Timeout { step, .. }) => assert!(step.contains("PF"), "{step}"),
        other => panic!("{other:?}"),
    }
    // The request is still there for a PF that comes up later.
    assert_ne!(model.peek(r::pfmbicr(0)) & 1, 0);
}

#[test]
fn the_vf_register_block_maps_its_queue_onto_its_pools_pf_queue() {
    let model = IxgbeModel::new();
    let vf3 = model.vf_function(3).expect("VF 3");
    vf3.write(r::vf::vfrdbal(0), 0x1234_0000);
    vf3.write(r::vf::vftdbal(0), 0x5678_0000);
    assert_eq!(model.peek(regs::rdbal(6)), 0x1234_0000);
    assert_eq!(model.peek(regs::tdbal(6)), 0x5678_0000);
    assert!(model.vf_function(32).is_none());
}

#[test]
fn a_vf_whose_transmit_queue_never_enables_stops_its_receive_queue() {
    let pool = pool(1024);
    let (model, _pf_port) = port_with(small_rings(), &pool);
    let pf =
        PfMailbox::new(&[VfPolicy::fixed_mac(MAC0), VfPolicy::fixed_mac(MAC1)]).expect("mailbox");
    let pf = PfThread::start(&model, pf);
    model.state().tx_enable_stuck = true;
    let vf = open_vf(&model, &pool, 1, small_vf());
    pf.finish();
    match vf {
        Err(IxgbeError::Timeout { step, .. }) => assert!(step.contains("VFTXDCTL"), "{step}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(model.peek(regs::rxdctl(2)) & regs::XDCTL_ENABLE, 0);
    assert_eq!(model.receive(&frame(MAC1, OTHER, 1)), RxOutcome::Filtered);
}
