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

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use pkt::Mempool;
use pkt::wire::checksum;

use super::regs::{self, desc, stats};
use crate::igb::{Dma, IgbError, Registers, RingMemory};

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

    /// A pointer to `len` bytes at `iova`, if all of them lie in one region.
    fn dma(&mut self, iova: u64, len: usize) -> Option<*mut u8> {
        let end = iova.checked_add(len as u64)?;
        let ok = self.regions.iter().any(|&(s, l)| iova >= s && end <= s + l);
        if ok {
            Some(iova as usize as *mut u8)
        } else {
            self.dma_faults += 1;
            None
        }
    }

    fn dma_read_u64(&mut self, iova: u64) -> Option<u64> {
        let p = self.dma(iova, 8)?;
        // SAFETY: `dma` checked that the 8 bytes lie in a registered region, which the
        // registrant keeps alive (see `ModelDma`); unaligned read for arbitrary IOVAs.
        Some(u64::from_le(unsafe {
            std::ptr::read_unaligned(p.cast::<u64>())
        }))
    }

    fn dma_write_u64(&mut self, iova: u64, v: u64) {
        if let Some(p) = self.dma(iova, 8) {
            // SAFETY: as in `dma_read_u64`; volatile so the driver's volatile reads and
            // these writes stay in program order.
            unsafe { std::ptr::write_unaligned(p.cast::<u64>(), v.to_le()) }
        }
    }

    fn tx_running(&self, q: u32) -> bool {
        // In virtualization mode a queue sends only while its pool may (PFVFTE).
        let pool = q / self.queues_per_pool();
        let pool_on =
            !self.vt_enabled() || self.reg(regs::sriov::pfvfte(pool / 32)) & 1 << (pool % 32) != 0;
        pool_on
            && self.reg(regs::DMATXCTL) & regs::DMATXCTL_TE != 0
            && self.reg(regs::txdctl(q)) & regs::XDCTL_ENABLE != 0
            && self.link_up
    }

    /// The counter RQSMR (receive) or TQSM (transmit) maps queue `q` to.
    fn stat_counter(&self, map_base: fn(u32) -> u32, q: u32) -> u32 {
        (self.reg(map_base(q / 4)) >> (8 * (q % 4))) & 0xf
    }

    /// Processes descriptors from TDH to TDT of queue `q`, as the device does after a
    /// TDT write.
    fn transmit(&mut self, q: u32) {
        if !self.tx_running(q) {
            return;
        }
        let n = self.reg(regs::tdlen(q)) / 16;
        let base = u64::from(self.reg(regs::tdbal(q))) | u64::from(self.reg(regs::tdbah(q))) << 32;
        if n == 0 || self.reg(regs::tdt(q)) >= n {
            return;
        }
        let qc = self.stat_counter(regs::tqsm, q);
        let mut frame = Vec::new();
        let mut broken = false;
        while self.reg(regs::tdh(q)) != self.reg(regs::tdt(q)) {
            let head = self.reg(regs::tdh(q));
            let d = base + u64::from(head) * 16;
            let (Some(addr), Some(q1)) = (self.dma_read_u64(d), self.dma_read_u64(d + 8)) else {
                // The ring itself is unreachable: the real device would stop with a
                // PCIe error; the model stops fetching.
                return;
            };
            let cmd = q1 as u32;
            let olinfo = (q1 >> 32) as u32;
            match cmd & desc::TX_DTYP_MASK {
                desc::TX_DTYP_CTXT if cmd & desc::TX_CMD_DEXT != 0 => {
                    // 7.2.3.2.3: vlan_macip_lens in dword 0, type_tucmd_mlhl in dword 2,
                    // mss_l4len_idx (IDX in bits 6:4) in dword 3.
                    let macip = addr as u32;
                    let idx = ((olinfo >> 4) & 1) as usize;
                    self.tx_contexts += 1;
                    self.ctx[q as usize][idx] = TxContext {
                        maclen: ((macip >> desc::CTX_MACLEN_SHIFT) & 0x7f) as usize,
                        iplen: (macip & 0x1ff) as usize,
                        tcp: cmd & desc::CTX_TUCMD_L4T_TCP != 0,
                    };
                }
                desc::TX_DTYP_DATA if cmd & desc::TX_CMD_DEXT != 0 => {
                    let len = (cmd & 0xffff) as usize;
                    match (len, self.dma(addr, len)) {
                        (1.., Some(p)) => {
                            // SAFETY: `dma` checked the range lies in a registered region.
                            let bytes = unsafe { std::slice::from_raw_parts(p, len) };
                            frame.extend_from_slice(bytes);
                        }
                        _ => {
                            self.tx_bad_descriptors += 1;
                            broken = true;
                        }
                    }
                    if cmd & desc::TX_CMD_EOP != 0 {
                        if !broken && !frame.is_empty() && self.spoofed(q, &frame) {
                            self.tx_spoofed += 1;
                            self.add(regs::sriov::SSVPC, 1);
                            broken = true;
                        }
                        if !broken && !frame.is_empty() {
                            if olinfo & desc::TX_OLINFO_TXSM != 0 {
                                let idx = ((olinfo >> 4) & 1) as usize;
                                insert_l4_checksum(&mut frame, self.ctx[q as usize][idx]);
                            }
                            self.add(stats::GPTC, 1);
                            self.add(stats::qptc(qc), 1);
                            self.tx_per_queue[q as usize] += 1;
                            self.add(stats::GOTCL, frame.len() as u32 + 4);
                            if self.switched_locally(q, &frame) {
                                self.tx_looped_back += 1;
                                let _ = self.receive(&frame);
                            } else if self.keep_wire {
                                self.wire.push_back(std::mem::take(&mut frame));
                            }
                        }
                        frame.clear();
                        broken = false;
                    }
                }
                _ => self.tx_bad_descriptors += 1,
            }
            if cmd & desc::TX_CMD_RS != 0 {
                let status = olinfo | desc::TX_STATUS_DD;
                self.dma_write_u64(d + 8, u64::from(cmd) | u64::from(status) << 32);
            }
            self.set(regs::tdh(q), (head + 1) % n);
        }
    }

    /// The receive queue for `frame` and, in RSS mode, its hash and RSS type: MRQC.MRQE
    /// = RSS hashes the fields MRQC enables with the key in RSSRK and looks the low 7
    /// bits of the hash up in RETA (7.1.2.8); any other mode uses queue 0.
    fn steer(&self, frame: &[u8]) -> (u32, Option<(u32, u8)>) {
        let mrqc = self.reg(regs::MRQC);
        if mrqc & regs::MRQC_MRQE_MASK != regs::MRQC_RSSEN {
            return (0, None);
        }
        let Some(input) = super::rss::rss_input(frame, mrqc) else {
            return (0, None);
        };
        let mut key = [0u8; 40];
        for n in 0..regs::RSSRK_REGS {
            let at = 4 * n as usize;
            key[at..at + 4].copy_from_slice(&self.reg(regs::rssrk(n)).to_le_bytes());
        }
        let hash = offload::rss::toeplitz(&key, input.bytes());
        let entry = hash & 0x7f;
        let q = (self.reg(regs::reta(entry / 4)) >> (8 * (entry % 4))) & 0xf;
        (q, Some((hash, input.kind)))
    }

    /// The pool whose receive address (RAL/RAH\[1..=64\] with MPSAR) is `dst`, while
    /// any pool is enabled (PFVFRE): VMDq switching by destination MAC (7.10.3).
    fn pool_of(&self, dst: &[u8]) -> Option<u32> {
        use regs::sriov as sr;
        if self.reg(sr::pfvfre(0)) | self.reg(sr::pfvfre(1)) == 0 {
            return None;
        }
        (1..=MODEL_VFS).find_map(|n| {
            let (ral, rah) = (self.reg(sr::ral(n)), self.reg(sr::rah(n)));
            let hit = rah & regs::RAH_AV != 0
                && dst[..4] == ral.to_le_bytes()
                && dst[4..6] == rah.to_le_bytes()[..2];
            let pools =
                u64::from(self.reg(sr::mpsar_lo(n))) | u64::from(self.reg(sr::mpsar_hi(n))) << 32;
            (hit && pools != 0).then(|| pools.trailing_zeros())
        })
    }

    /// Virtualization mode is on (VT_CTL.VT_Ena).
    fn vt_enabled(&self) -> bool {
        self.reg(regs::sriov::VT_CTL) & regs::sriov::VT_CTL_VT_ENABLE != 0
    }

    /// Queues per pool for GCR_EXT.VT_Mode (16, 32 or 64 pools; 64 when unset).
    fn queues_per_pool(&self) -> u32 {
        use regs::sriov as sr;
        match self.reg(sr::GCR_EXT) & sr::GCR_EXT_VT_MODE_MASK {
            1 => 8,
            2 => 4,
            _ => 2,
        }
    }

    /// The pools (MPSAR bits) of the first valid receive address entry 0..=64 that
    /// holds `dst`.
    fn rar_pools(&self, dst: &[u8]) -> Option<u64> {
        use regs::sriov as sr;
        (0..=MODEL_VFS).find_map(|n| {
            let (ral, rah) = (self.reg(sr::ral(n)), self.reg(sr::rah(n)));
            let hit = rah & regs::RAH_AV != 0
                && dst[..4] == ral.to_le_bytes()
                && dst[4..6] == rah.to_le_bytes()[..2];
            hit.then(|| {
                u64::from(self.reg(sr::mpsar_lo(n))) | u64::from(self.reg(sr::mpsar_hi(n))) << 32
            })
        })
    }

    /// With local switching on (VT mode, PFDTXGSWC.LBE), a unicast frame sent on
    /// queue `q` to an address of another pool stays inside the device (7.10.3.x).
    fn switched_locally(&self, q: u32, frame: &[u8]) -> bool {
        use regs::sriov as sr;
        if !self.vt_enabled()
            || self.reg(sr::PFDTXGSWC) & sr::PFDTXGSWC_VT_LBEN == 0
            || frame.len() < 14
            || frame[0] & 1 == 1
        {
            return false;
        }
        let pool = q / self.queues_per_pool();
        self.rar_pools(&frame[..6])
            .is_some_and(|pools| pools != 0 && pools & (1 << pool) == 0)
    }

    /// Virtualization-mode receive (7.10.3): the destination's pools from the receive
    /// addresses (MPSAR), else the default pool (VT_CTL.DEF_PL) when unicast
    /// promiscuous; broadcast to every pool whose VMOLR.BAM is set (VT_CTL.Rpl_En) or
    /// the default pool; each pool only if enabled (PFVFRE) and its VMOLR accepts the
    /// frame (AUPE for untagged frames, BAM for broadcast). Multicast goes to the
    /// default pool with FCTRL.MPE (no MTA model).
    fn receive_vt(&mut self, frame: &[u8]) -> RxOutcome {
        use regs::sriov as sr;
        let fctrl = self.reg(regs::FCTRL);
        let vt = self.reg(sr::VT_CTL);
        let default = 1u64 << ((vt & sr::VT_CTL_POOL_MASK) >> sr::VT_CTL_POOL_SHIFT);
        let broadcast = frame[..6] == [0xff; 6];
        let pools = if broadcast {
            if fctrl & regs::FCTRL_BAM == 0 {
                return RxOutcome::Filtered;
            }
            if vt & sr::VT_CTL_REPLEN != 0 {
                (0..sr::POOLS)
                    .filter(|&p| self.reg(sr::vmolr(p)) & sr::VMOLR_BAM != 0)
                    .fold(0u64, |m, p| m | 1 << p)
            } else {
                default
            }
        } else if frame[0] & 1 == 1 {
            if fctrl & regs::FCTRL_MPE == 0 {
                return RxOutcome::Filtered;
            }
            default
        } else {
            match self.rar_pools(&frame[..6]) {
                Some(p) if p != 0 => p,
                _ if fctrl & regs::FCTRL_UPE != 0 && vt & sr::VT_CTL_DIS_DEFPL == 0 => default,
                _ => return RxOutcome::Filtered,
            }
        };
        let tagged = frame[12..14] == [0x81, 0x00];
        let qpp = self.queues_per_pool();
        let mut outcome = RxOutcome::Filtered;
        for pool in (0..sr::POOLS).filter(|p| pools & (1 << p) != 0) {
            if self.reg(sr::pfvfre(pool / 32)) & 1 << (pool % 32) == 0 {
                continue;
            }
            let vmolr = self.reg(sr::vmolr(pool));
            if (!tagged && vmolr & sr::VMOLR_AUPE == 0) || (broadcast && vmolr & sr::VMOLR_BAM == 0)
            {
                self.rx_vmolr_refused += 1;
                continue;
            }
            let o = self.deliver(pool * qpp, frame, None);
            if outcome != RxOutcome::Delivered {
                outcome = o;
            }
        }
        outcome
    }

    /// Offers a frame from the wire (or looped back) to the receive side.
    fn receive(&mut self, frame: &[u8]) -> RxOutcome {
        if self.reg(regs::RXCTRL) & regs::RXCTRL_RXEN == 0 || !self.link_up || frame.len() < 14 {
            return RxOutcome::Filtered;
        }
        if self.vt_enabled() {
            return self.receive_vt(frame);
        }
        if !self.accepts(frame) {
            return RxOutcome::Filtered;
        }
        let (q, hash) = match self.pool_of(&frame[..6]) {
            Some(pool) => {
                let (reg, bit) = (pool / 32, 1 << (pool % 32));
                if self.reg(regs::sriov::pfvfre(reg)) & bit == 0 {
                    return RxOutcome::Filtered;
                }
                (pool * regs::sriov::QUEUES_PER_POOL, None)
            }
            None => self.steer(frame),
        };
        self.deliver(q, frame, hash)
    }

    /// Writes `frame` into receive queue `q`'s next descriptor with a write-back.
    fn deliver(&mut self, q: u32, frame: &[u8], hash: Option<(u32, u8)>) -> RxOutcome {
        let st = self;
        if st.reg(regs::rxdctl(q)) & regs::XDCTL_ENABLE == 0 {
            // 8.2.3.8.6: frames for a disabled queue are dropped.
            return RxOutcome::Filtered;
        }
        let qc = st.stat_counter(regs::rqsmr, q);
        let n = st.reg(regs::rdlen(q)) / 16;
        let (head, tail) = (st.reg(regs::rdh(q)), st.reg(regs::rdt(q)));
        if n == 0 || head == tail || tail >= n {
            if st.reg(regs::srrctl(q)) & regs::SRRCTL_DROP_EN != 0 {
                st.add(stats::qprdc(qc), 1);
            } else {
                st.add(stats::MPC0, 1);
            }
            return RxOutcome::NoDescriptor;
        }
        let bufsize = (st.reg(regs::srrctl(q)) & regs::SRRCTL_BSIZEPACKET_MASK) as usize * 1024;
        let tagged = frame[12..14] == [0x81, 0x00];
        let max = if st.reg(regs::HLREG0) & regs::HLREG0_JUMBOEN != 0 {
            ((st.reg(regs::MAXFRS) >> regs::MAXFRS_MFS_SHIFT) as usize).saturating_sub(4)
        } else {
            1518 + if tagged { 4 } else { 0 }
        };
        if frame.len() > bufsize || frame.len() > max {
            st.add(stats::ROC, 1);
            return RxOutcome::Oversize;
        }
        let base = u64::from(st.reg(regs::rdbal(q))) | u64::from(st.reg(regs::rdbah(q))) << 32;
        let d = base + u64::from(head) * 16;
        let Some(addr) = st.dma_read_u64(d) else {
            return RxOutcome::Fault;
        };
        let Some(p) = st.dma(addr, frame.len()) else {
            return RxOutcome::Fault;
        };
        // SAFETY: `dma` checked the destination lies in a registered region; the frame
        // is a separate Rust slice (a looped-back frame is the model's own buffer, not
        // ring or pool memory), so the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(frame.as_ptr(), p, frame.len()) };
        let mut status = desc::RX_STATUS_DD | desc::RX_STATUS_EOP | rx_checksum_status(frame);
        if tagged {
            status |= desc::RX_STATUS_VP;
        }
        // 7.1.6.2: qword 0 holds the RSS type (bits 3:0) and, with RXCSUM.PCSD, the
        // RSS hash (bits 63:32).
        let qword0 = match hash {
            Some((h, kind)) if st.reg(regs::RXCSUM) & regs::RXCSUM_PCSD != 0 => {
                u64::from(kind) | u64::from(h) << 32
            }
            Some((_, kind)) => u64::from(kind),
            None => 0,
        };
        st.dma_write_u64(d, qword0);
        st.dma_write_u64(d + 8, u64::from(status) | (frame.len() as u64) << 32);
        st.set(regs::rdh(q), (head + 1) % n);
        st.add(stats::GPRC, 1);
        st.add(stats::qprc(qc), 1);
        st.rx_per_queue[q as usize] += 1;
        st.add(stats::GORCL, frame.len() as u32 + 4);
        RxOutcome::Delivered
    }

    /// Whether MAC anti-spoofing (PFVFSPOOF) drops `frame` sent on queue `q`: its
    /// pool checks sources and the source is not an address of that pool.
    fn spoofed(&self, q: u32, frame: &[u8]) -> bool {
        use regs::sriov as sr;
        let pool = q / sr::QUEUES_PER_POOL;
        if self.reg(sr::pfvfspoof(pool / 8)) & 1 << (pool % 8) == 0 || frame.len() < 12 {
            return false;
        }
        self.pool_of(&frame[6..12]) != Some(pool)
    }

    fn accepts(&self, frame: &[u8]) -> bool {
        let fctrl = self.reg(regs::FCTRL);
        let dst = &frame[..6];
        if dst == [0xff; 6] {
            return fctrl & regs::FCTRL_BAM != 0;
        }
        if dst[0] & 1 == 1 {
            return fctrl & regs::FCTRL_MPE != 0;
        }
        if fctrl & regs::FCTRL_UPE != 0 || self.pool_of(dst).is_some() {
            return true;
        }
        let (ral, rah) = (self.reg(regs::RAL0), self.reg(regs::RAH0));
        rah & regs::RAH_AV != 0
            && dst[..4] == ral.to_le_bytes()
            && dst[4..] == rah.to_le_bytes()[..2]
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

/// The L4 checksum the device inserts for POPTS.TXSM: the one's-complement sum from
/// the L4 header (MACLEN + IPLEN) to the end, seeded with what the field holds (the
/// pseudo-header sum software put there), complemented into the field.
fn insert_l4_checksum(frame: &mut [u8], ctx: TxContext) {
    let start = ctx.maclen + ctx.iplen;
    let at = start + if ctx.tcp { 16 } else { 6 };
    if at + 2 > frame.len() {
        return;
    }
    let seed = u32::from(u16::from_be_bytes([frame[at], frame[at + 1]]));
    frame[at..at + 2].copy_from_slice(&[0, 0]);
    let mut c = checksum::internet_checksum(&frame[start..], seed);
    if !ctx.tcp && c == 0 {
        c = 0xffff;
    }
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// The receive checksum status and errors the device reports for `frame` (7.1.6.2):
/// IPCS (+IPE) for IPv4 headers, L4I (+TCPE) for TCP and UDP over unfragmented IPv4.
fn rx_checksum_status(frame: &[u8]) -> u32 {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] {
        return 0;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 || ip.len() < ihl {
        return 0;
    }
    let mut s = desc::RX_STATUS_IPCS;
    if checksum::sum(&ip[..ihl], 0) != 0xffff {
        s |= desc::RX_ERR_IPE;
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
    let proto = ip[9];
    if fragment || total < ihl || total > ip.len() || !(proto == 6 || proto == 17) {
        return s;
    }
    let l4 = &ip[ihl..total];
    if proto == 17 && l4.len() >= 8 && l4[6..8] == [0, 0] {
        // UDP without a checksum: nothing to check.
        return s;
    }
    let pseudo = ip[12..20]
        .chunks_exact(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>()
        + u32::from(proto)
        + l4.len() as u32;
    s |= desc::RX_STATUS_L4CS;
    if checksum::sum(l4, pseudo) != 0xffff {
        s |= desc::RX_ERR_TCPE;
    }
    s
}

/// Result of offering a frame to the model's receive side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxOutcome {
    /// Written into a descriptor.
    Delivered,
    /// Receiver off, link down, too short, or the address filter said no.
    Filtered,
    /// No descriptor available (counted in the queue's QPRDC with Drop_En, else
    /// MPC\[0\]).
    NoDescriptor,
    /// Longer than the buffer or the maximum frame (counted in ROC).
    Oversize,
    /// The descriptor or its buffer address faulted.
    Fault,
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

    /// Plays VF `vf` sending a message: what the device does when the VF writes its
    /// mailbox memory and sets VFMAILBOX.REQ (the words appear in PFMBMEM, and
    /// PFMBICR.VFREQ is set). Refused (false) while the PF holds the buffer.
    pub fn vf_send(&self, vf: u32, words: &[u32]) -> bool {
        let mut st = self.state();
        if vf >= MODEL_VFS || st.mailbox[vf as usize].pfu {
            return false;
        }
        for (i, &w) in words.iter().take(regs::sriov::MAILBOX_WORDS).enumerate() {
            st.set(regs::sriov::pfmbmem(vf, i as u32), w);
        }
        let icr = regs::sriov::pfmbicr(vf / 16);
        let v = st.reg(icr) | 1 << (vf % 16);
        st.set(icr, v);
        true
    }

    /// Plays the host resetting VF `vf` through PCIe (function-level reset, as VFIO
    /// does when a guest starts or stops using it): its queues stop, its mailbox is
    /// cleared, and PFVFLRE reports it to the PF.
    pub fn vf_flr(&self, vf: u32) {
        let mut st = self.state();
        if vf >= MODEL_VFS {
            return;
        }
        let q = vf * regs::sriov::QUEUES_PER_POOL;
        for i in q..q + regs::sriov::QUEUES_PER_POOL {
            st.set(regs::rxdctl(i), 0);
            st.set(regs::txdctl(i), 0);
        }
        st.mailbox[vf as usize] = MailboxLine::default();
        let reg = regs::sriov::pfvflre(vf / 32);
        let v = st.reg(reg) | 1 << (vf % 32);
        st.set(reg, v);
    }

    /// Plays VF `vf` taking (VFU) or releasing its mailbox buffer.
    pub fn vf_hold(&self, vf: u32, hold: bool) {
        if let Some(line) = self.state().mailbox.get_mut(vf as usize) {
            line.vfu = hold;
        }
    }

    /// Plays VF `vf` reading VFMAILBOX: whether the PF acknowledged its last message
    /// (PFACK, cleared by the read).
    pub fn vf_take_ack(&self, vf: u32) -> bool {
        self.state()
            .mailbox
            .get_mut(vf as usize)
            .is_some_and(|l| std::mem::take(&mut l.pf_ack))
    }

    /// Plays VF `vf` receiving: the PF's message if it sent one (PFSTS, cleared by the
    /// read), as the VF reads it from its mailbox memory.
    pub fn vf_receive(&self, vf: u32) -> Option<[u32; regs::sriov::MAILBOX_WORDS]> {
        let mut st = self.state();
        let line = st.mailbox.get_mut(vf as usize)?;
        if !std::mem::take(&mut line.pf_sts) {
            return None;
        }
        let mut m = [0; regs::sriov::MAILBOX_WORDS];
        for (i, w) in m.iter_mut().enumerate() {
            *w = st.reg(regs::sriov::pfmbmem(vf, i as u32));
        }
        Some(m)
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

    /// Lets the device reach `len` bytes at `start` (identity-mapped).
    pub fn allow_dma(&self, start: *const u8, len: usize) {
        self.state().regions.push((start as u64, len as u64));
    }

    /// Removes the mapping that starts at `start`, as an IOMMU unmap would: the device
    /// can no longer reach that memory.
    pub fn revoke_dma(&self, start: *const u8) {
        self.state().regions.retain(|&(s, _)| s != start as u64);
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

/// [`Dma`] for the model: rings in host memory, every address identity-mapped and
/// registered with the model's IOMMU check.
#[derive(Debug)]
pub struct ModelDma {
    model: IxgbeModel,
    pool_base: usize,
    pool_len: usize,
}

impl ModelDma {
    /// Registers `pool`'s region with `model` and returns the DMA side of the port.
    pub fn new(model: &IxgbeModel, pool: &Mempool) -> Self {
        let (base, len) = pool.region();
        model.allow_dma(base, len);
        Self {
            model: model.clone(),
            pool_base: base as usize,
            pool_len: len,
        }
    }
}

/// [`pkt::DmaMap`] for the model: identity-mapped like every model address,
/// registered with (and taken back from) the model's IOMMU check.
#[derive(Debug)]
pub struct ModelDmaMap {
    model: IxgbeModel,
}

impl pkt::DmaMap for ModelDmaMap {
    unsafe fn map(&self, vaddr: *const u8, len: usize) -> Result<u64, String> {
        self.model.allow_dma(vaddr, len);
        Ok(vaddr as u64)
    }

    fn unmap(&self, iova: u64, _len: usize) {
        self.model.revoke_dma(iova as usize as *const u8);
    }
}

impl Dma for ModelDma {
    fn alloc_ring(&mut self, bytes: usize) -> Result<RingMemory, IgbError> {
        crate::igb::model::host_ring(bytes, |start, len| self.model.allow_dma(start, len))
    }

    fn dma_map(&self) -> Option<std::sync::Arc<dyn pkt::DmaMap>> {
        Some(std::sync::Arc::new(ModelDmaMap {
            model: self.model.clone(),
        }))
    }

    #[inline]
    fn iova_of(&self, p: *const u8) -> Option<u64> {
        let off = (p as usize).checked_sub(self.pool_base)?;
        (off < self.pool_len).then_some(p as u64)
    }
}

impl IxgbeModel {
    /// The register block (BAR0) of VF `vf` (0..=31) on this device, as the VF driver
    /// sees it: its mailbox, its link status, and receive and transmit queue 0, which
    /// are the PF's queue 2·`vf` (the 64-pool layout). `None` past VF 31 (the model's
    /// queues end at 63).
    pub fn vf_function(&self, vf: u32) -> Option<IxgbeVfModel> {
        (vf < MODEL_QUEUES / regs::sriov::QUEUES_PER_POOL).then(|| IxgbeVfModel {
            model: self.clone(),
            vf,
        })
    }
}

/// One VF's register block on an [`IxgbeModel`] (see [`IxgbeModel::vf_function`]).
///
/// VFCTRL.RST disables the VF's queues and sets VFMAILBOX.RSTD; VFMAILBOX has the
/// buffer ownership (VFU/PFU), REQ/ACK that raise PFMBICR.VFREQ/VFACK for the PF,
/// and the read-to-clear PFSTS/PFACK/RSTD; VFMBMEM is the PF's PFMBMEM for this VF;
/// VFLINKS mirrors LINKS; the ring registers land on the PF's queue registers, with
/// all their side effects (TDT fetches and sends, with MAC anti-spoofing).
#[derive(Debug, Clone)]
pub struct IxgbeVfModel {
    model: IxgbeModel,
    vf: u32,
}

impl IxgbeVfModel {
    /// The PF register a VF ring register maps to.
    fn pf_offset(&self, offset: u32) -> Option<u32> {
        use regs::sriov::vf;
        let q = self.vf * regs::sriov::QUEUES_PER_POOL;
        match offset {
            o if (vf::vfrdbal(0)..vf::vfrdbal(1)).contains(&o) => {
                Some(regs::rdbal(q) + (o - vf::vfrdbal(0)))
            }
            o if (vf::vftdbal(0)..vf::vftdbal(1)).contains(&o) => {
                Some(regs::tdbal(q) + (o - vf::vftdbal(0)))
            }
            _ => None,
        }
    }
}

impl Registers for IxgbeVfModel {
    fn read(&self, offset: u32) -> u32 {
        use regs::sriov::vf;
        if let Some(pf) = self.pf_offset(offset) {
            return self.model.read(pf);
        }
        let mut st = self.model.state();
        match offset {
            vf::VFLINKS => st.read_links(),
            vf::VFMAILBOX => {
                let pf_in_reset = st.reg(regs::CTRL_EXT) & regs::CTRL_EXT_PFRSTD == 0;
                let line = &mut st.mailbox[self.vf as usize];
                let mut v = if pf_in_reset { vf::VFMAILBOX_RSTI } else { 0 };
                for (on, bit) in [
                    (line.vfu, vf::VFMAILBOX_VFU),
                    (line.pfu, vf::VFMAILBOX_PFU),
                    (std::mem::take(&mut line.pf_sts), vf::VFMAILBOX_PFSTS),
                    (std::mem::take(&mut line.pf_ack), vf::VFMAILBOX_PFACK),
                    (std::mem::take(&mut line.rstd), vf::VFMAILBOX_RSTD),
                ] {
                    if on {
                        v |= bit;
                    }
                }
                v
            }
            o if (vf::VFMBMEM..vf::VFMBMEM + 64).contains(&o) => {
                st.reg(regs::sriov::pfmbmem(self.vf, (o - vf::VFMBMEM) / 4))
            }
            _ => 0,
        }
    }

    fn write(&self, offset: u32, value: u32) {
        use regs::sriov::{self as sr, vf};
        if let Some(pf) = self.pf_offset(offset) {
            return self.model.write(pf, value);
        }
        let mut st = self.model.state();
        let me = self.vf;
        match offset {
            vf::VFCTRL if value & vf::VFCTRL_RST != 0 => {
                let q = me * sr::QUEUES_PER_POOL;
                for i in q..q + sr::QUEUES_PER_POOL {
                    st.set(regs::rxdctl(i), 0);
                    st.set(regs::txdctl(i), 0);
                }
                let pf_ready = st.reg(regs::CTRL_EXT) & regs::CTRL_EXT_PFRSTD != 0;
                let line = &mut st.mailbox[me as usize];
                *line = MailboxLine::default();
                line.rstd = pf_ready;
                line.reset_pending = !pf_ready;
            }
            vf::VFMAILBOX => {
                let line = &mut st.mailbox[me as usize];
                let (req, ack) = (
                    value & vf::VFMAILBOX_REQ != 0,
                    value & vf::VFMAILBOX_ACK != 0,
                );
                // VFU is granted only while the PF does not hold the buffer; REQ and
                // ACK hand it back.
                line.vfu = value & vf::VFMAILBOX_VFU != 0 && !line.pfu && !req && !ack;
                let icr = sr::pfmbicr(me / 16);
                let mut bits = 0;
                if req {
                    bits |= 1 << (me % 16);
                }
                if ack {
                    bits |= 1 << (sr::PFMBICR_VFACK_SHIFT + me % 16);
                }
                let v = st.reg(icr) | bits;
                st.set(icr, v);
            }
            o if (vf::VFMBMEM..vf::VFMBMEM + 64).contains(&o) => {
                st.set(sr::pfmbmem(me, (o - vf::VFMBMEM) / 4), value);
            }
            _ => {}
        }
    }
}
