//! The 82599 PF in SR-IOV mode on the model: the virtualization setup it programs, our
//! VF driver bringing itself up against it with the mailbox answered from the PF's
//! own `rx_batch` (the PF port runs its poll loop on a thread, as the engine does;
//! there is no mailbox thread), switching by MAC between the PF's and the VF's
//! queues, local switching, anti-spoofing, and the refusals.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use pkt::{Batch, Mempool, Port};

use super::mailbox::VfPolicy;
use super::model::{IxgbeModel, MODEL_MAC, ModelDma, RxOutcome};
use super::regs::{self, sriov as r};
use super::sriov::IxgbeSriovConfig;
use super::tests::{ModelPort, healthy, pool};
use super::vf::IxgbeVfConfig;
use super::vf_test_util::{MAC0, MAC1, OTHER, frame, open_vf, small_vf};
use super::{IxgbeConfig, IxgbeError, IxgbePort};
use crate::igb::Registers;

fn sriov_config(vfs: Vec<VfPolicy>) -> IxgbeConfig {
    IxgbeConfig {
        rx_ring: 16,
        tx_ring: 16,
        sriov: Some(IxgbeSriovConfig { vfs, poll_every: 1 }),
        ..IxgbeConfig::default()
    }
}

fn sriov_port(vfs: Vec<VfPolicy>, pool: &Mempool) -> (IxgbeModel, ModelPort) {
    let model = IxgbeModel::new();
    let dma = ModelDma::new(&model, pool);
    let mut port = IxgbePort::new("pf", model.clone(), dma, pool.clone(), sriov_config(vfs))
        .expect("SR-IOV init");
    assert!(port.wait_link(Duration::from_secs(5)), "link up");
    (model, port)
}

/// The PF port's poll loop on its own thread, as vnetp's engine runs it: nothing but
/// `rx_batch` calls (which service the mailbox). Frames it receives are kept.
struct PfEngine {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(ModelPort, Vec<Vec<u8>>)>,
}

impl PfEngine {
    fn start(mut port: ModelPort) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut batch = Batch::new();
            let mut got = Vec::new();
            while !s.load(Ordering::Relaxed) {
                port.rx_batch(&mut batch);
                got.extend(batch.drain().map(|b| b.data().to_vec()));
                std::thread::sleep(Duration::from_micros(50));
            }
            (port, got)
        });
        Self { stop, handle }
    }

    fn finish(self) -> (ModelPort, Vec<Vec<u8>>) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("PF engine thread")
    }
}

fn counter(port: &ModelPort, name: &str) -> u64 {
    port.stats()
        .drops
        .iter()
        .find(|c| c.name == name)
        .map_or(0, |c| c.count)
}

fn rx_all<P: Port>(port: &mut P) -> Vec<Vec<u8>> {
    let mut batch = Batch::new();
    port.rx_batch(&mut batch);
    batch.drain().map(|b| b.data().to_vec()).collect()
}

fn send<P: Port>(port: &mut P, pool: &Mempool, frames: &[Vec<u8>]) -> usize {
    let mut batch = Batch::new();
    for f in frames {
        let mut b = pool.alloc().expect("buffer");
        b.extend_from_slice(f).expect("fits");
        batch.push(b).expect("room");
    }
    port.tx_batch(&mut batch)
}

#[test]
fn sriov_init_puts_the_pf_alone_in_the_pool_after_the_vfs() {
    let pool = pool(512);
    let vfs = vec![
        VfPolicy::fixed_mac(MAC0),
        VfPolicy::fixed_mac(MAC1),
        VfPolicy::fixed_mac(OTHER),
    ];
    let (model, port) = sriov_port(vfs, &pool);
    // Three VFs: pools 0..2; the PF takes pool 3, whose first queue is 6.
    assert_eq!(port.pf_pool(), Some(3));
    assert_eq!(port.first_queue_index(), 6);
    assert_eq!(
        model.peek(r::GCR_EXT) & r::GCR_EXT_VT_MODE_MASK,
        3,
        "64 pools"
    );
    assert_eq!(model.peek(regs::MRQC), regs::MRQC_VMDQEN);
    assert_eq!(model.peek(regs::MTQC), regs::MTQC_VT_ENA | regs::MTQC_64VF);
    assert_eq!(
        model.peek(r::VT_CTL),
        r::VT_CTL_VT_ENABLE | r::VT_CTL_REPLEN | 3 << r::VT_CTL_POOL_SHIFT,
        "VT on, the PF's pool is the default"
    );
    // Only the PF's pool moves frames until a VF resets.
    assert_eq!(model.peek(r::pfvfre(0)), 1 << 3);
    assert_eq!(model.peek(r::pfvfte(0)), 1 << 3);
    assert_eq!(model.peek(r::pfvfre(1)), 0);
    assert_eq!(
        model.peek(r::vmolr(3)),
        r::VMOLR_AUPE | r::VMOLR_BAM | r::VMOLR_ROMPE
    );
    assert_eq!(model.peek(r::vmolr(0)), 0);
    assert_eq!(
        model.peek(r::mpsar_lo(0)),
        1 << 3,
        "the PF's MAC is its pool's"
    );
    assert_eq!(model.peek(r::PFDTXGSWC), r::PFDTXGSWC_VT_LBEN);
    assert_eq!(
        model.peek(r::GPIE) & r::GPIE_VTMODE_MASK,
        r::GPIE_VTMODE_64,
        "VF interrupts laid out for 64 pools"
    );
    assert_ne!(model.peek(regs::CTRL_EXT) & regs::CTRL_EXT_PFRSTD, 0);
    // The PF's rings are on queue 6; queue 0 (VF 0's) is untouched.
    assert_ne!(model.peek(regs::rxdctl(6)) & regs::XDCTL_ENABLE, 0);
    assert_ne!(model.peek(regs::txdctl(6)) & regs::XDCTL_ENABLE, 0);
    assert_eq!(model.peek(regs::rdlen(0)), 0);
    assert_eq!(model.peek(regs::rxdctl(0)) & regs::XDCTL_ENABLE, 0);
    // Queue 6 counts in counter 0, everything else in counter 15.
    assert_eq!(model.peek(regs::rqsmr(1)), 0x0f00_0f0f);
    assert_eq!(model.peek(regs::rqsmr(0)), 0x0f0f_0f0f);
    healthy(&model);
    drop(port);
    // Closing the PF stops every pool and withdraws "reset done".
    assert_eq!(model.peek(r::pfvfre(0)), 0);
    assert_eq!(model.peek(r::pfvfte(0)), 0);
    assert_eq!(model.peek(regs::CTRL_EXT) & regs::CTRL_EXT_PFRSTD, 0);
    assert_eq!(model.peek(regs::rxdctl(6)) & regs::XDCTL_ENABLE, 0);
}

#[test]
fn vf_comes_up_against_the_sriov_pf_serviced_from_its_rx_batch_and_frames_are_switched() {
    let pool = pool(2048);
    let vfs = vec![VfPolicy::fixed_mac(MAC0), VfPolicy::fixed_mac(MAC1)];
    let (model, pf) = sriov_port(vfs, &pool);
    let pf_queue = pf.first_queue_index() as usize;
    assert_eq!(pf_queue, 4, "two VFs: the PF is pool 2, queue 4");

    let engine = PfEngine::start(pf);
    let vf = open_vf(&model, &pool, 1, small_vf());
    let (mut pf, pf_got) = engine.finish();
    let mut vf = vf.expect("VF up");
    assert!(
        pf_got.is_empty(),
        "no frame reached the PF during the handshake"
    );

    assert_eq!(vf.mac().0, MAC1);
    assert_eq!(vf.api(), super::mailbox::msg::API_11);
    let mbx = pf.sriov_mailbox().expect("SR-IOV");
    assert_eq!(mbx.counter("mbx_handled"), 3, "reset, API, queues");
    assert!(mbx.vfs()[1].cts && !mbx.vfs()[0].cts);
    // The mailbox counters are the PF port's counters too.
    assert_eq!(counter(&pf, "mbx_handled"), 3);
    assert!(counter(&pf, "mbx_services") >= 3);
    // VF 1's pool is on both ways beside the PF's; MAC anti-spoofing for it alone.
    assert_eq!(model.peek(r::pfvfre(0)), 1 << 2 | 1 << 1);
    assert_eq!(model.peek(r::pfvfte(0)), 1 << 2 | 1 << 1);
    assert_eq!(model.peek(r::pfvfspoof(0)), 1 << 1);
    assert_eq!(
        model.peek(r::vmolr(1)),
        r::VMOLR_AUPE | r::VMOLR_BAM | r::VMOLR_ROMPE
    );

    // By destination MAC: the VF's frame on the VF's queue, the PF's on the PF's.
    let to_vf = frame(MAC1, OTHER, 1);
    let to_pf = frame(MODEL_MAC, OTHER, 2);
    assert_eq!(model.receive(&to_vf), RxOutcome::Delivered);
    assert_eq!(model.receive(&to_pf), RxOutcome::Delivered);
    assert_eq!(
        model.receive(&frame(OTHER, MAC1, 3)),
        RxOutcome::Filtered,
        "nobody's address"
    );
    {
        let st = model.state();
        assert_eq!(st.rx_per_queue[2], 1, "VF 1's queue");
        assert_eq!(st.rx_per_queue[pf_queue], 1, "the PF's queue");
        assert_eq!(st.rx_per_queue[0], 0, "VF 0 is not up");
    }
    assert_eq!(rx_all(&mut vf), vec![to_vf]);
    assert_eq!(rx_all(&mut pf), vec![to_pf]);

    // Broadcast reaches every enabled pool that accepts it: the PF and VF 1.
    let bcast = frame([0xff; 6], OTHER, 4);
    assert_eq!(model.receive(&bcast), RxOutcome::Delivered);
    assert_eq!(rx_all(&mut vf), vec![bcast.clone()]);
    assert_eq!(rx_all(&mut pf), vec![bcast]);

    // The PF still sends to the wire; to VF 1's MAC the device switches it locally.
    let out = frame(OTHER, MODEL_MAC, 5);
    let local = frame(MAC1, MODEL_MAC, 6);
    assert_eq!(send(&mut pf, &pool, &[out.clone(), local.clone()]), 2);
    assert_eq!(model.take_wire(), vec![out]);
    assert_eq!(model.state().tx_looped_back, 1);
    assert_eq!(rx_all(&mut vf), vec![local]);

    // VF 1 sends from its own address; a spoofed source is dropped and counted.
    let good = frame(OTHER, MAC1, 7);
    assert_eq!(
        send(&mut vf, &pool, &[good.clone(), frame(OTHER, OTHER, 8)]),
        2
    );
    assert_eq!(model.take_wire(), vec![good]);
    assert_eq!(model.state().tx_spoofed, 1);
    assert_eq!(model.read(r::SSVPC), 1);
    // The PF is not anti-spoof checked: its frames from another source still go.
    let relayed = frame(OTHER, MAC0, 9);
    assert_eq!(send(&mut pf, &pool, std::slice::from_ref(&relayed)), 1);
    assert_eq!(model.take_wire(), vec![relayed]);
    healthy(&model);
}

#[test]
fn a_vf_not_in_the_config_has_its_reset_refused_and_counted() {
    let pool = pool(1024);
    // VF 0 exists but was handed no MAC (sysfs has it, no `vf` interface names it).
    let vfs = vec![VfPolicy::fixed_mac([0; 6]), VfPolicy::fixed_mac(MAC1)];
    let (model, pf) = sriov_port(vfs, &pool);
    let engine = PfEngine::start(pf);
    let vf0 = open_vf(&model, &pool, 0, small_vf());
    // VF 5 is past the configured VFs (its pool would be the PF's or beyond).
    let vf5 = open_vf(
        &model,
        &pool,
        5,
        IxgbeVfConfig {
            mailbox_timeout: Duration::from_millis(30),
            ..small_vf()
        },
    );
    let (pf, _) = engine.finish();
    match vf0 {
        Err(IxgbeError::Config(m)) => assert!(m.contains("no MAC address"), "{m}"),
        other => panic!("{other:?}"),
    }
    match vf5 {
        Err(IxgbeError::Timeout { step, .. }) => assert!(step.contains("PF"), "{step}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(counter(&pf, "mbx_nack_no_mac"), 1);
    assert!(counter(&pf, "mbx_unknown_vf") >= 1);
    // Nothing was enabled for either: only the PF's pool (2) moves frames.
    assert_eq!(model.peek(r::pfvfre(0)), 1 << 2);
    assert_eq!(model.peek(r::pfvfspoof(0)), 0);
    assert_eq!(model.receive(&frame(MAC1, OTHER, 1)), RxOutcome::Filtered);
    healthy(&model);
}

#[test]
fn a_vf_reset_waits_for_the_pfs_reset_done() {
    // No PF driver has said "reset done" (CTRL_EXT.PFRSTD): the VF's reset does not
    // complete, and the VF says which step it waited for.
    let model = IxgbeModel::new();
    let pool = pool(256);
    match open_vf(&model, &pool, 0, small_vf()) {
        Err(IxgbeError::Timeout { step, .. }) => assert!(step.contains("RSTD"), "{step}"),
        other => panic!("{other:?}"),
    }
    assert_ne!(
        model.vf_function(0).expect("VF 0").read(r::vf::VFMAILBOX) & r::vf::VFMAILBOX_RSTI,
        0,
        "the VF sees its PF in reset"
    );
    // Once a PF comes up, the pending reset completes (RSTD), and RSTI is gone.
    let (_m, _pf) = (model.clone(), {
        let dma = ModelDma::new(&model, &pool);
        IxgbePort::new(
            "pf",
            model.clone(),
            dma,
            pool.clone(),
            sriov_config(vec![VfPolicy::fixed_mac(MAC0)]),
        )
        .expect("PF up")
    });
    let mbx = model.vf_function(0).expect("VF 0").read(r::vf::VFMAILBOX);
    assert_ne!(mbx & r::vf::VFMAILBOX_RSTD, 0, "{mbx:#x}");
    assert_eq!(mbx & r::vf::VFMAILBOX_RSTI, 0, "{mbx:#x}");
}

#[test]
fn sriov_with_several_queues_or_no_vfs_is_a_clear_error() {
    let pool = pool(1024);
    let model = IxgbeModel::new();
    let mut cfg = sriov_config(vec![VfPolicy::fixed_mac(MAC0)]);
    cfg.queues = 2;
    let dma = ModelDma::new(&model, &pool);
    match IxgbePort::new("pf", model.clone(), dma, pool.clone(), cfg) {
        Err(IxgbeError::Config(m)) => assert!(m.contains("set queues = 1"), "{m}"),
        other => panic!("{other:?}"),
    }
    let dma = ModelDma::new(&model, &pool);
    match IxgbePort::new("pf", model.clone(), dma, pool.clone(), sriov_config(vec![])) {
        Err(IxgbeError::Config(m)) => assert!(m.contains("1..=63"), "{m}"),
        other => panic!("{other:?}"),
    }
    let dma = ModelDma::new(&model, &pool);
    let too_many = vec![VfPolicy::fixed_mac(MAC0); 64];
    match IxgbePort::new("pf", model, dma, pool, sriov_config(too_many)) {
        Err(IxgbeError::Config(m)) => assert!(m.contains("1..=63"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_vf_function_level_reset_stops_its_pool_until_it_resets_again() {
    let pool = pool(2048);
    let vfs = vec![VfPolicy::fixed_mac(MAC0), VfPolicy::fixed_mac(MAC1)];
    let (model, pf) = sriov_port(vfs, &pool);
    let up = |pf: ModelPort| {
        let engine = PfEngine::start(pf);
        let vf = open_vf(&model, &pool, 0, small_vf());
        let (pf, _) = engine.finish();
        (pf, vf.expect("VF up"))
    };
    let (mut pf, vf) = up(pf);
    assert_eq!(model.peek(r::pfvfre(0)), 1 << 2 | 1);
    assert_eq!(model.receive(&frame(MAC0, OTHER, 1)), RxOutcome::Delivered);

    // The host resets VF 0 (a guest let go of it); the PF sees it on its next poll.
    drop(vf);
    model.vf_flr(0);
    let _ = rx_all(&mut pf);
    assert_eq!(counter(&pf, "vf_flr"), 1);
    assert!(!pf.sriov_mailbox().expect("SR-IOV").vfs()[0].cts);
    assert_eq!(model.peek(r::pfvfre(0)), 1 << 2, "only the PF's pool");
    assert_eq!(model.peek(r::pfvfte(0)), 1 << 2);
    assert_eq!(model.peek(r::pfvflre(0)), 0, "event cleared");
    assert_eq!(model.receive(&frame(MAC0, OTHER, 2)), RxOutcome::Filtered);

    // Its driver starts again: reset, MAC, pool back.
    let (pf, mut vf) = up(pf);
    assert_eq!(vf.mac().0, MAC0);
    assert_eq!(model.peek(r::pfvfre(0)), 1 << 2 | 1);
    let f = frame(MAC0, OTHER, 3);
    assert_eq!(model.receive(&f), RxOutcome::Delivered);
    assert_eq!(rx_all(&mut vf), vec![f]);
    assert_eq!(counter(&pf, "mbx_handled"), 6, "two handshakes of three");
    healthy(&model);
}

#[test]
fn a_jumbo_vf_raises_the_ports_frame_limit_and_gets_its_jumbo_frames() {
    // Buffers big enough for the VF's 9000-byte MTU; the PF keeps MTU 1500.
    let pool = Mempool::new(1024, super::pool_buffer_size(9000)).expect("pool");
    let (model, pf) = sriov_port(vec![VfPolicy::fixed_mac(MAC0)], &pool);
    assert_eq!(model.peek(regs::HLREG0) & regs::HLREG0_JUMBOEN, 0);
    let engine = PfEngine::start(pf);
    let vf = open_vf(
        &model,
        &pool,
        0,
        IxgbeVfConfig {
            mtu: 9000,
            ..small_vf()
        },
    );
    let (pf, _) = engine.finish();
    let mut vf = vf.expect("VF up with long frames");
    // SET_LPE asked for 9000 + 14 + 4 (tag) + 4 (FCS).
    assert_ne!(model.peek(regs::HLREG0) & regs::HLREG0_JUMBOEN, 0);
    assert_eq!(model.peek(regs::MAXFRS) >> regs::MAXFRS_MFS_SHIFT, 9022);
    let mut big = frame(MAC0, OTHER, 1);
    big.resize(9000 + 14, 0x5a);
    assert_eq!(model.receive(&big), RxOutcome::Delivered);
    assert_eq!(rx_all(&mut vf), vec![big]);
    assert_eq!(counter(&pf, "mbx_handled"), 4, "reset, API, queues, LPE");
    healthy(&model);
}
