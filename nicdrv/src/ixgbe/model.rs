//! A register-level model of the parts of the 82599 the driver uses, for tests and
//! benchmarks on a host without the device (QEMU has no 82599).
//!
//! BAR0 is an array of registers with the side effects the datasheet gives them:
//!
//! - CTRL.RST resets every register, drops the link, and completes only after a few
//!   more reads of CTRL (reads show RST set until then); EEC.Auto_RD and
//!   RDRXCTL.DMAIDONE read 0 until it has completed (4.6.3).
//! - AUTOC.Restart_AN starts negotiation; LINKS.Link_Up shows after a few more LINKS
//!   reads if the "cable" is plugged (4.6.4). Unplugging drops it at once.
//! - RXDCTL/TXDCTL.ENABLE read back set one read after they are written (4.6.7, 4.6.8).
//! - A TDT write makes the device fetch descriptors from TDH to TDT (advanced context
//!   and data descriptors, TCP/UDP checksum insertion), put each frame on a wire the
//!   test reads, and write DD back for RS descriptors.
//! - [`IxgbeModel::receive`] puts a frame from the wire through the address filter
//!   into the next receive descriptor with an advanced write-back, checksums checked:
//!   on a VF pool's queue when its address is a pool's (RAL/RAH with MPSAR), else on
//!   the queue RSS picks (MRQC, RSSRK, RETA; 7.1.2.8) or queue 0.
//! - Queues 0..63 each have their ring registers; QPRC/QPRDC/QPTC count through the
//!   RQSMR/TQSM mapping.
//! - The PF/VF mailbox (PFMAILBOX, PFMBMEM, PFMBICR) with hooks that play the VF,
//!   one VF's register block ([`IxgbeVfModel`]), and MAC anti-spoofing (PFVFSPOOF,
//!   SSVPC). A VF's reset (VFCTRL.RST) completes (VFMAILBOX.RSTD) only once the PF
//!   has set CTRL_EXT.PFRSTD; until then the VF reads RSTI. A VF's function-level
//!   reset ([`IxgbeModel::vf_flr`]) stops its queues and raises PFVFLRE.
//! - Virtualization mode (VT_CTL.VT_Ena): receive switching by destination MAC over
//!   every receive address entry and its MPSAR pools, the default pool (VT_CTL.DEF_PL)
//!   for unmatched unicast in promiscuous mode, broadcast replicated to every pool
//!   with VMOLR.BAM (VT_CTL.Rpl_En), per-pool PFVFRE and VMOLR (AUPE for untagged
//!   frames, BAM), pool p on queue p·(queues per pool from GCR_EXT.VT_Mode), a
//!   pool's queues sending only while its PFVFTE bit is set; and
//!   local switching (PFDTXGSWC.LBE): a unicast frame a pool sends to another pool's
//!   address is delivered inside the device instead of the wire.
//!
//! Every DMA goes through an IOMMU-like check: an address outside the registered
//! regions touches nothing and is counted in [`ModelState::dma_faults`].
//!
//! The model also checks the order of the init sequence and records what the driver
//! did: [`ModelState::steps`] (milestones) and [`ModelState::violations`] (steps taken
//! before what the datasheet says must come first, e.g. a queue enabled before the
//! reset completed, RXEN before the ring is set up, TXDCTL.ENABLE before
//! DMATXCTL.TE).
//!
//! Left out: interrupts, queues 64..127 (so the PF's SR-IOV queue must be below 64:
//! at most 31 VFs on the model), VLAN filters and VLAN anti-spoofing (registers
//! only), multicast tables per pool, broadcast loopback, flow control, DCB, the security block,
//! descriptor prefetch and write-back thresholds, TSO, frames spread over several
//! receive buffers, timing, and the PHY/SFP module. What it says
//! about the device is what the datasheet says, as this project read it; it has not
//! been compared with a real 82599 (see docs/ixgbe.md).

mod datapath;
mod dma;
mod vf;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use super::regs::{self, stats};
use crate::igb::Registers;
pub use datapath::RxOutcome;
pub use dma::{ModelDma, ModelDmaMap};
pub use vf::IxgbeVfModel;

const BAR_BYTES: usize = 128 * 1024;

/// Queues the model runs: 0..63, the ones at 0x01000/0x06000 (RSS spreads over at
/// most 16; VF pools own two each, see [`IxgbeVfModel`]).
const MODEL_QUEUES: u32 = 64;

/// Per-queue statistics counters (QPRC, QPRDC, QPTC).
const QUEUE_COUNTERS: u32 = 16;

/// The queue a per-queue ring register belongs to (RDBAL..RXDCTL at 0x01000 + 0x40*n,
/// TDBAL..TXDCTL at 0x06000 + 0x40*n); 0 for any other register, whose offset then
/// matches no `regs::xxx(q)` comparison but queue 0's.
fn queue_of(offset: u32) -> u32 {
    let q = match offset {
        0x1000..0x2000 => (offset - 0x1000) / 0x40,
        0x6000..0x7000 => (offset - 0x6000) / 0x40,
        _ => 0,
    };
    if q < MODEL_QUEUES { q } else { 0 }
}

/// The per-queue statistics counters (clear on read).
fn is_queue_counter(offset: u32) -> bool {
    (0..QUEUE_COUNTERS)
        .any(|n| offset == stats::qprc(n) || offset == stats::qprdc(n) || offset == stats::qptc(n))
}

/// Address the model's EEPROM holds, loaded into RAL\[0\]/RAH\[0\] at reset.
pub const MODEL_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x82, 0x59, 0x01];

/// Milestones of the init sequence, in the order the model saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitStep {
    /// EIMC written with every cause.
    InterruptsMasked,
    /// CTRL.PCIe Master Disable set.
    MasterDisabled,
    /// CTRL.RST written.
    ResetIssued,
    /// The driver read RDRXCTL with DMAIDONE set after a reset.
    DmaInitDoneSeen,
    /// AUTOC written with Restart_AN.
    LinkSetup,
    /// RXDCTL\[0\].ENABLE set.
    RxQueueEnabled,
    /// RXCTRL.RXEN set.
    RxEnabled,
    /// DMATXCTL.TE set.
    TxEnabled,
    /// TXDCTL\[0\].ENABLE set.
    TxQueueEnabled,
}

/// One VF's side of its mailbox as the device tracks it (7.10.2.9).
#[derive(Debug, Clone, Copy, Default)]
struct MailboxLine {
    /// The VF holds the buffer (VFMAILBOX.VFU).
    vfu: bool,
    /// The PF holds the buffer (PFMAILBOX.PFU).
    pfu: bool,
    /// The PF sent a message the VF has not read (VFMAILBOX.PFSTS).
    pf_sts: bool,
    /// The PF acknowledged the VF's message (VFMAILBOX.PFACK).
    pf_ack: bool,
    /// A VF reset completed (VFMAILBOX.RSTD, read to clear).
    rstd: bool,
    /// The VF reset while the PF had not said "reset done" (CTRL_EXT.PFRSTD): RSTD
    /// comes when it does.
    reset_pending: bool,
}

/// VF mailboxes the model has (pools 0..63).
const MODEL_VFS: u32 = 64;

/// The VF whose PFMAILBOX register `offset` is.
fn pfmailbox_vf(offset: u32) -> Option<u32> {
    let base = regs::sriov::pfmailbox(0);
    (base..regs::sriov::pfmailbox(MODEL_VFS))
        .contains(&offset)
        .then(|| (offset - base) / 4)
        .filter(|_| offset.is_multiple_of(4))
}

/// One TX context (advanced context descriptor), as the device latches it.
#[derive(Debug, Clone, Copy, Default)]
struct TxContext {
    maclen: usize,
    iplen: usize,
    tcp: bool,
}

/// Everything the model holds; tests reach it through [`IxgbeModel::state`].
#[derive(Debug)]
pub struct ModelState {
    regs: Vec<u32>,
    /// `(start, len)` of memory the device may reach (identity-mapped IOVAs).
    regions: Vec<(u64, u64)>,
    /// Frames the device transmitted, oldest first.
    pub wire: VecDeque<Vec<u8>>,
    /// DMA accesses outside every region (what an IOMMU would report as faults).
    pub dma_faults: u64,
    /// TDT writes (doorbells) seen.
    pub tx_doorbells: u64,
    /// RDT writes seen.
    pub rx_doorbells: u64,
    /// The cable (or SFP+ link partner): with it unplugged the link never comes up.
    pub cable: bool,
    /// Keep transmitted frames on [`ModelState::wire`] (off: only count them).
    pub keep_wire: bool,
    /// Leave descriptors for [`IxgbeModel::process_tx`] instead of fetching them on the
    /// TDT write (benchmarks time the driver alone this way).
    pub defer_tx: bool,
    /// CTRL reads a reset takes to complete.
    pub reset_reads: u32,
    /// LINKS reads negotiation takes after Restart_AN (or a cable plug-in).
    pub link_reads: u32,
    /// Init milestones in the order seen.
    pub steps: Vec<InitStep>,
    /// Out-of-order init steps, in words.
    pub violations: Vec<String>,
    /// TX descriptors the device could not use (DMA fault, bad type, zero length).
    pub tx_bad_descriptors: u64,
    /// TX context descriptors fetched.
    pub tx_contexts: u64,
    /// Frames delivered per receive queue (what QPRC would count with a one-to-one
    /// RQSMR mapping; kept here so tests can check the steering itself).
    pub rx_per_queue: [u64; MODEL_QUEUES as usize],
    /// Frames sent per transmit queue.
    pub tx_per_queue: [u64; MODEL_QUEUES as usize],
    /// Frames a pool sent from an address not its own, dropped by MAC anti-spoofing.
    pub tx_spoofed: u64,
    /// Frames a pool sent to another pool's address that local switching
    /// (PFDTXGSWC.LBE) delivered inside the device instead of the wire.
    pub tx_looped_back: u64,
    /// Frames a pool's VMOLR refused in virtualization mode (untagged without AUPE,
    /// broadcast without BAM).
    pub rx_vmolr_refused: u64,
    /// TXDCTL.ENABLE never reads back set (a hung transmit queue), for init-failure
    /// tests.
    pub tx_enable_stuck: bool,
    resetting: u32,
    link_countdown: Option<u32>,
    link_up: bool,
    masked_since_reset: bool,
    dma_init_seen: bool,
    /// Queues whose ENABLE reads back 0 once more (bit n: queue n).
    rx_enable_pending: u64,
    tx_enable_pending: u64,
    /// The two context slots of each transmit queue.
    ctx: [[TxContext; 2]; MODEL_QUEUES as usize],
    mailbox: [MailboxLine; MODEL_VFS as usize],
}

impl ModelState {
    fn reg(&self, off: u32) -> u32 {
        self.regs.get(off as usize / 4).copied().unwrap_or(u32::MAX)
    }

    fn set(&mut self, off: u32, v: u32) {
        if let Some(r) = self.regs.get_mut(off as usize / 4) {
            *r = v;
        }
    }

    fn add(&mut self, off: u32, v: u32) {
        let cur = self.reg(off);
        self.set(off, cur.wrapping_add(v));
    }

    fn violation(&mut self, what: &str) {
        self.violations.push(what.to_owned());
    }

    /// Power-on or CTRL.RST: registers to their defaults; the reset completes later.
    fn reset(&mut self) {
        self.regs.iter_mut().for_each(|r| *r = 0);
        self.link_up = false;
        self.link_countdown = None;
        self.masked_since_reset = false;
        self.dma_init_seen = false;
        self.rx_enable_pending = 0;
        self.tx_enable_pending = 0;
        self.ctx = [[TxContext::default(); 2]; MODEL_QUEUES as usize];
        self.resetting = self.reset_reads;
        self.set(regs::CTRL, regs::CTRL_RST);
        if self.resetting == 0 {
            self.finish_reset();
        }
    }

    /// What the device has loaded once the reset is over: EEPROM contents (MAC
    /// address), DMA init done, bus mastering back on, CRC handling defaults.
    fn finish_reset(&mut self) {
        self.set(regs::CTRL, 0);
        self.set(regs::EEC, regs::EEC_ARD);
        self.set(regs::RDRXCTL, regs::RDRXCTL_DMAIDONE);
        self.set(regs::STATUS, regs::STATUS_MASTER_ENABLE);
        self.set(regs::HLREG0, regs::HLREG0_TXCRCEN | regs::HLREG0_RXCRCSTRP);
        self.set(regs::dca_rxctrl(0), regs::DCA_RXCTRL_BIT12);
        let m = MODEL_MAC;
        self.set(regs::RAL0, u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
        self.set(
            regs::RAH0,
            u32::from_le_bytes([m[4], m[5], 0, 0]) | regs::RAH_AV,
        );
    }

    /// Queue `q` belongs to a pool the PF enabled for a VF (PFVFRE).
    fn vf_queue(&self, q: u32) -> bool {
        let pool = q / regs::sriov::QUEUES_PER_POOL;
        self.reg(regs::sriov::pfvfre(pool / 32)) & 1 << (pool % 32) != 0
    }

    fn in_reset(&self) -> bool {
        self.resetting > 0
    }

    /// Checks a write that configures the device (not a reset, interrupt mask or
    /// statistics access): it must come after the reset completed and DMA init was seen.
    fn check_configured_after_reset(&mut self, what: &str) {
        if self.in_reset() {
            self.violation(&format!("{what} written while the reset was in progress"));
        } else if !self.dma_init_seen {
            self.violation(&format!(
                "{what} written before the driver saw RDRXCTL.DMAIDONE"
            ));
        }
    }

    fn read_links(&mut self) -> u32 {
        if let Some(left) = self.link_countdown {
            if left == 0 {
                self.link_countdown = None;
                self.link_up = self.cable;
            } else {
                self.link_countdown = Some(left - 1);
            }
        }
        if !self.link_up {
            return 0;
        }
        let speed = if self.reg(regs::AUTOC) & regs::AUTOC_LMS_MASK == regs::AUTOC_LMS_10G_SERIAL {
            regs::LINKS_SPEED_10G
        } else {
            regs::LINKS_SPEED_1G
        };
        regs::LINKS_UP | speed
    }
}

/// The model: a cheap handle; clones share the device.
#[derive(Debug, Clone)]
pub struct IxgbeModel {
    inner: Arc<Mutex<ModelState>>,
}

impl Default for IxgbeModel {
    fn default() -> Self {
        Self::new()
    }
}

impl IxgbeModel {
    /// A device after power-on (reset complete), cable plugged in.
    pub fn new() -> Self {
        let mut st = ModelState {
            regs: vec![0; BAR_BYTES / 4],
            regions: Vec::new(),
            wire: VecDeque::new(),
            dma_faults: 0,
            tx_doorbells: 0,
            rx_doorbells: 0,
            cable: true,
            keep_wire: true,
            defer_tx: false,
            reset_reads: 3,
            link_reads: 2,
            steps: Vec::new(),
            violations: Vec::new(),
            tx_bad_descriptors: 0,
            tx_contexts: 0,
            resetting: 0,
            link_countdown: None,
            link_up: false,
            masked_since_reset: false,
            dma_init_seen: false,
            rx_per_queue: [0; MODEL_QUEUES as usize],
            tx_per_queue: [0; MODEL_QUEUES as usize],
            tx_spoofed: 0,
            tx_looped_back: 0,
            rx_vmolr_refused: 0,
            tx_enable_stuck: false,
            rx_enable_pending: 0,
            tx_enable_pending: 0,
            ctx: [[TxContext::default(); 2]; MODEL_QUEUES as usize],
            mailbox: [MailboxLine::default(); MODEL_VFS as usize],
        };
        st.reset();
        st.resetting = 0;
        st.finish_reset();
        Self {
            inner: Arc::new(Mutex::new(st)),
        }
    }

    /// The model's state, locked.
    pub fn state(&self) -> MutexGuard<'_, ModelState> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A register's value without the side effects a read by the driver has (clear on
    /// read, enable latency), for tests.
    pub fn peek(&self, offset: u32) -> u32 {
        self.state().reg(offset)
    }

    /// Plugs or unplugs the cable. Unplugging drops the link at once; plugging it in
    /// brings it back after negotiation if the driver has started it (AUTOC written).
    pub fn set_cable(&self, plugged: bool) {
        let mut st = self.state();
        st.cable = plugged;
        if !plugged {
            st.link_up = false;
            st.link_countdown = None;
        } else if st.reg(regs::AUTOC) & regs::AUTOC_LMS_MASK != 0 && !st.link_up {
            st.link_countdown = Some(st.link_reads);
        }
    }

    /// Offers a frame from the wire to the receive side: queue 0, or with MRQC in RSS
    /// mode the queue the redirection table gives for the frame's Toeplitz hash, or a
    /// VF pool's queue for its address; in virtualization mode (VT_CTL.VT_Ena) the
    /// queues of the pools the frame is for (see `receive_vt`).
    pub fn receive(&self, frame: &[u8]) -> RxOutcome {
        self.state().receive(frame)
    }

    /// Writes qword 1 of receive descriptor `slot` as the device would on write-back:
    /// for tests of a misbehaving device (wrong length, DD where it may not write).
    pub fn write_rx_writeback(&self, slot: u32, status_error: u32, length: u16) {
        let mut st = self.state();
        let base = u64::from(st.reg(regs::rdbal(0))) | u64::from(st.reg(regs::rdbah(0))) << 32;
        st.dma_write_u64(
            base + u64::from(slot) * 16 + 8,
            u64::from(status_error) | u64::from(length) << 32,
        );
    }

    /// Fetches and sends the descriptors posted so far (with [`ModelState::defer_tx`]).
    pub fn process_tx(&self) {
        let mut st = self.state();
        for q in 0..MODEL_QUEUES {
            st.transmit(q);
        }
    }

    /// Takes the frames transmitted so far.
    pub fn take_wire(&self) -> Vec<Vec<u8>> {
        self.state().wire.drain(..).collect()
    }
}

/// Registers whose writes configure the receive or transmit path, for the order check.
fn configures(offset: u32) -> Option<&'static str> {
    let q = queue_of(offset);
    Some(match offset {
        o if o == regs::rdbal(q) || o == regs::rdbah(q) || o == regs::rdlen(q) => "RX ring base",
        o if o == regs::srrctl(q) => "SRRCTL",
        o if o == regs::rxdctl(q) => "RXDCTL",
        o if o == regs::tdbal(q) || o == regs::tdbah(q) || o == regs::tdlen(q) => "TX ring base",
        o if o == regs::txdctl(q) => "TXDCTL",
        regs::MRQC => "MRQC",
        regs::RXCTRL => "RXCTRL",
        regs::DMATXCTL => "DMATXCTL",
        regs::AUTOC => "AUTOC",
        regs::FCTRL => "FCTRL",
        regs::HLREG0 => "HLREG0",
        _ => return None,
    })
}

impl Registers for IxgbeModel {
    fn read(&self, offset: u32) -> u32 {
        let mut st = self.state();
        let q = queue_of(offset);
        match offset {
            regs::CTRL if st.in_reset() => {
                st.resetting -= 1;
                if st.resetting == 0 {
                    st.finish_reset();
                }
                st.reg(regs::CTRL)
            }
            regs::LINKS => st.read_links(),
            o if let Some(vf) = pfmailbox_vf(o) => {
                let line = st.mailbox[vf as usize];
                let mut v = 0;
                if line.pfu {
                    v |= regs::sriov::PFMAILBOX_PFU;
                }
                if line.vfu {
                    v |= regs::sriov::PFMAILBOX_VFU;
                }
                v
            }
            regs::RDRXCTL => {
                let v = st.reg(regs::RDRXCTL);
                if v & regs::RDRXCTL_DMAIDONE != 0 && !st.dma_init_seen {
                    st.dma_init_seen = true;
                    st.steps.push(InitStep::DmaInitDoneSeen);
                }
                v
            }
            o if o == regs::rxdctl(q) && st.rx_enable_pending & (1u64 << q) != 0 => {
                st.rx_enable_pending &= !(1u64 << q);
                st.reg(o) & !regs::XDCTL_ENABLE
            }
            o if o == regs::txdctl(q) && st.tx_enable_stuck => st.reg(o) & !regs::XDCTL_ENABLE,
            o if o == regs::txdctl(q) && st.tx_enable_pending & (1u64 << q) != 0 => {
                st.tx_enable_pending &= !(1u64 << q);
                st.reg(o) & !regs::XDCTL_ENABLE
            }
            // Clear-on-read registers.
            o if o == regs::EICR || stats::ALL.contains(&o) || is_queue_counter(o) => {
                let v = st.reg(o);
                st.set(o, 0);
                v
            }
            _ => st.reg(offset),
        }
    }

    fn write(&self, offset: u32, value: u32) {
        let mut st = self.state();
        let q = queue_of(offset);
        if let Some(what) = configures(offset) {
            st.check_configured_after_reset(what);
        }
        match offset {
            regs::CTRL => {
                if value & regs::CTRL_RST != 0 {
                    st.steps.push(InitStep::ResetIssued);
                    if st.reg(regs::STATUS) & regs::STATUS_MASTER_ENABLE != 0 {
                        st.violation("CTRL.RST without disabling PCIe mastering first");
                    }
                    st.reset();
                } else {
                    if value & regs::CTRL_MASTER_DISABLE != 0 {
                        st.steps.push(InitStep::MasterDisabled);
                        let s = st.reg(regs::STATUS) & !regs::STATUS_MASTER_ENABLE;
                        st.set(regs::STATUS, s);
                    }
                    st.set(regs::CTRL, value);
                }
            }
            regs::EIMC => {
                if value & regs::EIMC_ALL == regs::EIMC_ALL {
                    st.steps.push(InitStep::InterruptsMasked);
                    if !st.in_reset() {
                        st.masked_since_reset = true;
                    }
                }
            }
            regs::AUTOC => {
                st.set(regs::AUTOC, value & !regs::AUTOC_AN_RESTART);
                if value & regs::AUTOC_AN_RESTART != 0 {
                    st.steps.push(InitStep::LinkSetup);
                    st.link_up = false;
                    st.link_countdown = st.cable.then_some(st.link_reads);
                }
            }
            o if o == regs::srrctl(q) || o == regs::rdbal(q) || o == regs::rdlen(q) => {
                if st.reg(regs::rxdctl(q)) & regs::XDCTL_ENABLE != 0 {
                    st.violation("RX ring reprogrammed while the queue is enabled");
                }
                // A VF sets its queues up while the PF receives (7.10.2); the PF's own
                // init must do it with the receiver off.
                if st.reg(regs::RXCTRL) & regs::RXCTRL_RXEN != 0 && !st.vf_queue(q) {
                    st.violation("RX ring programmed with RXCTRL.RXEN set");
                }
                let v = if o == regs::rdlen(q) {
                    value & 0xf_ff80
                } else {
                    value
                };
                st.set(o, v);
            }
            o if o == regs::rxdctl(q) => {
                let was = st.reg(o) & regs::XDCTL_ENABLE != 0;
                if value & regs::XDCTL_ENABLE != 0 && !was {
                    if st.reg(regs::rdlen(q)) == 0 {
                        st.violation("RX queue enabled before its ring was programmed");
                    }
                    if st.reg(regs::RXCTRL) & regs::RXCTRL_RXEN != 0 && !st.vf_queue(q) {
                        st.violation("RX queue enabled with RXCTRL.RXEN set");
                    }
                    if !st.masked_since_reset {
                        st.violation("RX queue enabled with interrupts not masked after reset");
                    }
                    st.steps.push(InitStep::RxQueueEnabled);
                    st.rx_enable_pending |= 1u64 << q;
                }
                st.set(o, value);
            }
            regs::RXCTRL => {
                if value & regs::RXCTRL_RXEN != 0 && st.reg(regs::RXCTRL) & regs::RXCTRL_RXEN == 0 {
                    if !(0..MODEL_QUEUES).any(|q| st.reg(regs::rxdctl(q)) & regs::XDCTL_ENABLE != 0)
                    {
                        st.violation("RXCTRL.RXEN set before the RX queue was enabled");
                    }
                    st.steps.push(InitStep::RxEnabled);
                }
                st.set(regs::RXCTRL, value);
            }
            regs::DMATXCTL => {
                if value & regs::DMATXCTL_TE != 0 && st.reg(regs::DMATXCTL) & regs::DMATXCTL_TE == 0
                {
                    st.steps.push(InitStep::TxEnabled);
                }
                st.set(regs::DMATXCTL, value);
            }
            o if o == regs::txdctl(q) => {
                let was = st.reg(o) & regs::XDCTL_ENABLE != 0;
                let mut v = value;
                if value & regs::XDCTL_ENABLE != 0 && !was {
                    if st.reg(regs::DMATXCTL) & regs::DMATXCTL_TE == 0 {
                        // 4.6.8: DMATXCTL.TE first; the model leaves the queue off.
                        st.violation("TXDCTL.ENABLE set before DMATXCTL.TE");
                        v &= !regs::XDCTL_ENABLE;
                    } else {
                        if st.reg(regs::tdlen(q)) == 0 {
                            st.violation("TX queue enabled before its ring was programmed");
                        }
                        st.steps.push(InitStep::TxQueueEnabled);
                        st.tx_enable_pending |= 1u64 << q;
                    }
                }
                st.set(o, v);
            }
            o if o == regs::tdt(q) => {
                if st.reg(regs::txdctl(q)) & regs::XDCTL_ENABLE == 0 && value != 0 {
                    st.violation("TDT bumped before the TX queue was enabled");
                }
                st.set(o, value & 0xffff);
                st.tx_doorbells += 1;
                if !st.defer_tx {
                    st.transmit(q);
                }
            }
            o if o == regs::rdt(q) => {
                if st.reg(regs::rxdctl(q)) & regs::XDCTL_ENABLE == 0 && value != 0 {
                    st.violation("RDT bumped before the RX queue was enabled");
                }
                st.set(o, value & 0xffff);
                st.rx_doorbells += 1;
            }
            o if o == regs::tdlen(q) => st.set(o, value & 0xf_ff80),
            // DMAIDONE is read-only.
            regs::RDRXCTL => {
                let done = st.reg(regs::RDRXCTL) & regs::RDRXCTL_DMAIDONE;
                st.set(regs::RDRXCTL, value & !regs::RDRXCTL_DMAIDONE | done);
            }
            // Read-only or read-to-clear from the driver's side.
            regs::EEC | regs::STATUS | regs::LINKS => {}
            regs::CTRL_EXT => {
                if value & regs::CTRL_EXT_PFRSTD != 0 {
                    // "PF reset done": VF resets waiting for it complete now.
                    for line in st.mailbox.iter_mut().filter(|l| l.reset_pending) {
                        line.reset_pending = false;
                        line.rstd = true;
                    }
                }
                st.set(regs::CTRL_EXT, value);
            }
            o if let Some(vf) = pfmailbox_vf(o) => {
                use regs::sriov as sr;
                let line = &mut st.mailbox[vf as usize];
                if value & sr::PFMAILBOX_RVFU != 0 {
                    line.vfu = false;
                }
                // PFU is granted only while the VF does not hold the buffer.
                line.pfu = value & sr::PFMAILBOX_PFU != 0 && !line.vfu;
                if value & sr::PFMAILBOX_STS != 0 {
                    line.pf_sts = true;
                }
                if value & sr::PFMAILBOX_ACK != 0 {
                    line.pf_ack = true;
                }
            }
            // Write 1 to clear the FLR events.
            o if (0..2).any(|n| o == regs::sriov::pfvflrec(n)) => {
                let n = (o - regs::sriov::pfvflrec(0)) / 4;
                let v = st.reg(regs::sriov::pfvflre(n)) & !value;
                st.set(regs::sriov::pfvflre(n), v);
            }
            // Read-only: set by a VF's FLR.
            o if (0..2).any(|n| o == regs::sriov::pfvflre(n)) => {}
            // Write 1 to clear.
            o if (0..4).any(|n| o == regs::sriov::pfmbicr(n)) => {
                let v = st.reg(o) & !value;
                st.set(o, v);
            }
            _ => st.set(offset, value),
        }
    }
}
