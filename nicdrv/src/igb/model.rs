//! A register-level model of the parts of the 82576 the driver uses, for tests and
//! benchmarks on a host without the device.
//!
//! It keeps BAR0 as an array of registers with the device's side effects: CTRL.RST
//! resets the MAC and drops the link, MDIC reaches a PHY at address 1 whose
//! auto-negotiation restart brings the link up (at once, unless the "cable" is
//! unplugged), a TDT write makes the device fetch descriptors from TDH to TDT, send each
//! frame onto a wire the test can read and write DD back for RS descriptors, and
//! [`IgbModel::receive`] puts a frame from the wire into the next receive descriptor
//! with an advanced write-back. DMA goes through an IOMMU-like check: an address
//! outside the registered regions touches nothing and counts as a fault.
//!
//! SR-IOV, as far as the PF and VF drivers use it: every queue (0..=15) transmits on
//! its TDT write, VMDq pools pick receive queues (receive addresses with pool select,
//! broadcast to VMOLR.BAM pools, the default pool, VFRE), VFTE gates transmit, MAC
//! anti-spoofing (DTXSWC) drops frames whose source is not the pool's address, and the
//! PF/VF mailbox has the device's semantics (VMBMEM, PFMailbox/VFMailbox lock bits,
//! MBVFICR and VFLRE write-1-to-clear, RSTI/RSTD, clear-on-read VF bits). [`IgbModel::vf`]
//! gives VF n's own BAR0, mapped onto the PF's registers as the device does.
//!
//! Offloads (in `model_offload.rs`): with MRQC in RSS mode and RXCSUM.PCSD set, a
//! received frame's Toeplitz hash (addresses and ports as MRQC's field bits select,
//! key from RSSRK) picks its queue through RETA and is written back with its RSS type;
//! RXCSUM.IPOFLD/TUOFLD make the write-back carry IPCS/L4I/UDPCS and IPE/L4E as the
//! model finds the checksums. On transmit, advanced context descriptors are latched
//! per queue (two slots), and a frame's POPTS.TXSM/IXSM insert its L4 and IPv4 header
//! checksums, DCMD.TSE segments it by the context's MSS and L4LEN (lengths, IPv4 ID and
//! checksum, sequence numbers, FIN/PSH on the last segment, TCP checksums). A frame
//! whose context is missing or impossible is dropped and counted
//! ([`ModelState::bad_contexts`]).
//!
//! 802.1Q outside VMDq mode: with CTRL.VME a received frame's tag (EtherType 0x8100,
//! VET's reset value) is removed before the frame is written, its TCI goes into the
//! write-back's VLAN field and status VP is set; the checksum and RSS engines see the
//! untagged frame. A transmitted frame whose first data descriptor has DCMD.VLE gets
//! a tag with the TCI of its context's VLAN field inserted after the MAC addresses,
//! in each TSO segment, after the checksums are computed on the untagged frame (whose
//! MACLEN excludes the tag); VLE without a context is counted in
//! [`ModelState::bad_contexts`].
//!
//! What it leaves out: interrupts, VLAN filtering and per-pool stripping, flow control,
//! descriptor prefetch and write-back thresholds, timing. What it says about
//! real hardware is only what the datasheet says; QEMU's igb model (in the VM tests) is
//! the second opinion.

use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard};

use pkt::DmaMap;

use pkt::Mempool;

use super::model_offload::{self, TxCtx};
use super::queue::QueueRegs;
use super::regs::{self, desc, stats, vf};
use super::{Dma, IgbError, Registers, RingMemory};

const BAR_BYTES: usize = 128 * 1024;

/// Address the model's EEPROM holds, loaded into RAL0/RAH0 at reset.
pub const MODEL_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// Everything the model holds; tests reach it through [`IgbModel::state`].
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
    /// The cable: with it unplugged, auto-negotiation never completes.
    pub cable: bool,
    /// Keep transmitted frames on [`ModelState::wire`] (off: only count them).
    pub keep_wire: bool,
    /// Leave descriptors for [`IgbModel::process_tx`] instead of fetching them on the
    /// TDT write (benchmarks time the driver alone this way).
    pub defer_tx: bool,
    /// Frames the transmit MAC anti-spoofing check dropped.
    pub spoofed: u64,
    /// Good frames received per pool (what VFGPRC counts).
    pub pool_rx: [u32; 8],
    /// Good frames transmitted per pool (VFGPTC).
    pub pool_tx: [u32; 8],
    /// Context descriptors fetched.
    pub tx_contexts: u64,
    /// Frames dropped because their context was missing or impossible (the real
    /// device's behaviour is undefined there).
    pub bad_contexts: u64,
    /// Frames written to each receive queue (0..=15).
    pub queue_rx: [u64; 16],
    /// Latched transmit contexts, two per queue.
    tx_ctx: [[Option<TxCtx>; 2]; 16],
    /// Each VF's VFMailbox bits.
    vf_mbx: [u32; 8],
    /// Each VF's PFMailbox bits (VFU/PFU as the PF reads them).
    pf_mbx: [u32; 8],
    link_up: bool,
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

    fn reset(&mut self) {
        self.regs.iter_mut().for_each(|r| *r = 0);
        self.set(regs::EECD, regs::EECD_AUTO_RD);
        let m = MODEL_MAC;
        self.set(regs::RAL0, u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
        self.set(
            regs::RAH0,
            u32::from_le_bytes([m[4], m[5], 0, 0]) | regs::RAH_AV,
        );
        self.link_up = false;
        // Until the PF driver sets CTRL_EXT.PFRSTD, VFs see "PF reset in progress".
        self.vf_mbx = [vf::MAILBOX_RSTI; 8];
        self.pf_mbx = [0; 8];
        self.pool_rx = [0; 8];
        self.pool_tx = [0; 8];
        self.tx_ctx = [[None; 2]; 16];
    }

    fn vmdq(&self) -> bool {
        self.reg(regs::MRQC) & 1 != 0
    }

    /// Whether pool `pool` may send a frame with source `src` (MAC anti-spoofing).
    fn source_allowed(&self, pool: u32, src: &[u8]) -> bool {
        if self.reg(regs::DTXSWC) >> (regs::DTXSWC_MAC_SPOOF_SHIFT + pool) & 1 == 0 {
            return true;
        }
        (0..16).any(|n| {
            let (ral, rah) = (self.reg(regs::ral(n)), self.reg(regs::rah(n)));
            rah & regs::RAH_AV != 0
                && rah >> (regs::RAH_POOL_SHIFT + pool) & 1 != 0
                && src[..4] == ral.to_le_bytes()
                && src[4..6] == rah.to_le_bytes()[..2]
        })
    }

    /// The pools a received frame goes to in VMDq mode.
    fn pools_for(&self, dst: &[u8]) -> u32 {
        let mut pools = 0;
        if dst == [0xff; 6] {
            for p in 0..8 {
                if self.reg(regs::VMOLR0 + 4 * p) & regs::VMOLR_BAM != 0 {
                    pools |= 1 << p;
                }
            }
        } else {
            for n in 0..16 {
                let (ral, rah) = (self.reg(regs::ral(n)), self.reg(regs::rah(n)));
                if rah & regs::RAH_AV != 0
                    && dst[..4] == ral.to_le_bytes()
                    && dst[4..6] == rah.to_le_bytes()[..2]
                {
                    pools |= (rah >> regs::RAH_POOL_SHIFT) & 0xff;
                }
            }
            let vt = self.reg(regs::VT_CTL);
            if pools == 0 && dst[0] & 1 == 0 && vt & regs::VT_CTL_DISABLE_DEF_POOL == 0 {
                pools = 1 << ((vt >> regs::VT_CTL_DEFAULT_POOL_SHIFT) & 7);
            }
        }
        pools & self.reg(regs::VFRE)
    }

    /// VF n wrote VTCTRL.RST: its queues stop, its pool is disabled, the PF sees VFLRE.
    fn vf_reset(&mut self, n: u32) {
        for q in [n, n + 8] {
            let qr = QueueRegs::pf(q);
            let (rx, tx) = (self.reg(qr.rxdctl), self.reg(qr.txdctl));
            self.set(qr.rxdctl, rx & !regs::XDCTL_ENABLE);
            self.set(qr.txdctl, tx & !regs::XDCTL_ENABLE);
        }
        let bit = 1 << n;
        let (vfre, vfte, lre) = (
            self.reg(regs::VFRE),
            self.reg(regs::VFTE),
            self.reg(regs::VFLRE),
        );
        self.set(regs::VFRE, vfre & !bit);
        self.set(regs::VFTE, vfte & !bit);
        self.set(regs::VFLRE, lre | bit);
    }

    /// A write to VF n's VFMailbox.
    fn vf_mailbox_write(&mut self, n: usize, v: u32) {
        let icr = self.reg(regs::MBVFICR);
        if v & vf::MAILBOX_REQ != 0 {
            self.set(
                regs::MBVFICR,
                icr | 1 << (regs::MBVFICR_VFREQ_SHIFT + n as u32),
            );
        }
        let icr = self.reg(regs::MBVFICR);
        if v & vf::MAILBOX_ACK != 0 {
            self.set(
                regs::MBVFICR,
                icr | 1 << (regs::MBVFICR_VFACK_SHIFT + n as u32),
            );
        }
        // The buffer: taken only while the PF does not hold it; released otherwise.
        if v & vf::MAILBOX_VFU != 0 {
            if self.pf_mbx[n] & regs::PFMAILBOX_PFU == 0 {
                self.vf_mbx[n] |= vf::MAILBOX_VFU;
                self.pf_mbx[n] |= regs::PFMAILBOX_VFU;
            }
        } else {
            self.vf_mbx[n] &= !vf::MAILBOX_VFU;
            self.pf_mbx[n] &= !regs::PFMAILBOX_VFU;
        }
    }

    /// A write to the PF's PFMailbox\[n\].
    fn pf_mailbox_write(&mut self, n: usize, v: u32) {
        if v & regs::PFMAILBOX_STS != 0 {
            self.vf_mbx[n] |= vf::MAILBOX_PFSTS;
        }
        if v & regs::PFMAILBOX_ACK != 0 {
            self.vf_mbx[n] |= vf::MAILBOX_PFACK;
        }
        if v & regs::PFMAILBOX_PFU != 0 {
            if self.pf_mbx[n] & regs::PFMAILBOX_VFU == 0 {
                self.pf_mbx[n] |= regs::PFMAILBOX_PFU;
                self.vf_mbx[n] |= vf::MAILBOX_PFU;
            }
        } else {
            self.pf_mbx[n] &= !regs::PFMAILBOX_PFU;
            self.vf_mbx[n] &= !vf::MAILBOX_PFU;
        }
        if v & regs::PFMAILBOX_RVFU != 0 {
            self.vf_mbx[n] &= !vf::MAILBOX_VFU;
            self.pf_mbx[n] &= !regs::PFMAILBOX_VFU;
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
            unsafe { std::ptr::write_volatile(p.cast::<u64>(), v.to_le()) }
        }
    }

    fn tx_enabled(&self, q: u32) -> bool {
        self.reg(regs::TCTL) & regs::TCTL_EN != 0
            && self.reg(QueueRegs::pf(q).txdctl) & regs::XDCTL_ENABLE != 0
            && (!self.vmdq() || self.reg(regs::VFTE) & 1 << (q % 8) != 0)
            && self.link_up
    }

    /// Processes queue `q`'s descriptors from TDH to TDT, as the device does after a
    /// TDT write.
    fn transmit(&mut self, q: u32) {
        if !self.tx_enabled(q) {
            return;
        }
        let qr = QueueRegs::pf(q);
        let n = (self.reg(qr.tdlen) as usize / 16) as u32;
        let base = u64::from(self.reg(qr.tdbal)) | u64::from(self.reg(qr.tdbah)) << 32;
        if n == 0 {
            return;
        }
        let mut frame = Vec::new();
        let mut faulted = false;
        // The first data descriptor of a frame holds its offload requests.
        let mut first: Option<(u32, u32)> = None;
        while self.reg(qr.tdh) != self.reg(qr.tdt) && self.reg(qr.tdt) < n {
            let head = self.reg(qr.tdh);
            let d = base + u64::from(head) * 16;
            let (Some(addr), Some(q1)) = (self.dma_read_u64(d), self.dma_read_u64(d + 8)) else {
                return;
            };
            let cmd = q1 as u32;
            let len = (cmd & 0xffff) as usize;
            // Data descriptors gather one frame, each through the IOMMU check.
            if cmd & desc::TX_CMD_DEXT != 0 && cmd & desc::TX_DTYP_MASK == desc::TX_DTYP_CTXT {
                let c = TxCtx {
                    macip: addr as u32,
                    tucmd: cmd,
                    mss_l4len: (q1 >> 32) as u32,
                };
                self.tx_ctx[q as usize % 16][c.index()] = Some(c);
                self.tx_contexts += 1;
            }
            if cmd & desc::TX_CMD_DEXT != 0 && cmd & desc::TX_DTYP_MASK == desc::TX_DTYP_DATA {
                let (fcmd, folinfo) = *first.get_or_insert((cmd, (q1 >> 32) as u32));
                match self.dma(addr, len) {
                    Some(p) => {
                        // SAFETY: `dma` checked the range lies in a registered region.
                        let bytes = unsafe { std::slice::from_raw_parts(p, len) };
                        frame.extend_from_slice(bytes);
                    }
                    // The real device sends zeros for a faulting read (seen on QEMU);
                    // the model sends nothing of the frame and leaves the fault
                    // counted, whichever of its descriptors faulted.
                    None => faulted = true,
                }
                if cmd & desc::TX_CMD_EOP != 0 {
                    first = None;
                    if std::mem::take(&mut faulted) {
                        frame.clear();
                    }
                    let spoofed = self.vmdq()
                        && frame.len() >= 12
                        && !self.source_allowed(q % 8, &frame[6..12]);
                    if spoofed {
                        self.spoofed += 1;
                        frame.clear();
                    }
                    if !frame.is_empty() {
                        let idx = ((folinfo >> desc::TX_OLINFO_IDX_SHIFT) & 1) as usize;
                        let ctx = self.tx_ctx[q as usize % 16][idx];
                        let mut out = Vec::new();
                        let sent = model_offload::tx_offload(
                            std::mem::take(&mut frame),
                            fcmd,
                            folinfo,
                            ctx,
                            |f| out.push(f),
                        );
                        if sent.is_err() {
                            self.bad_contexts += 1;
                        }
                        if fcmd & desc::TX_CMD_VLE != 0 {
                            match ctx {
                                Some(c) => {
                                    let tci = (c.macip >> desc::CTX_VLAN_SHIFT) as u16;
                                    out.iter_mut()
                                        .for_each(|f| model_offload::insert_vlan(f, tci));
                                }
                                None => {
                                    self.bad_contexts += 1;
                                    out.clear();
                                }
                            }
                        }
                        for f in out {
                            self.pool_tx[(q % 8) as usize] += 1;
                            self.add(stats::GPTC, 1);
                            self.add(stats::GOTCL, f.len() as u32 + 4);
                            if self.keep_wire {
                                self.wire.push_back(f);
                            }
                        }
                    }
                    frame.clear();
                }
            }
            if cmd & desc::TX_CMD_RS != 0 {
                let status = (q1 >> 32) as u32 | desc::TX_STATUS_DD;
                self.dma_write_u64(d + 8, u64::from(cmd) | u64::from(status) << 32);
            }
            self.set(qr.tdh, (head + 1) % n);
        }
    }

    /// Writes `frame` into queue `q`'s next receive descriptor.
    fn deliver(&mut self, q: u32, frame: &[u8]) -> RxOutcome {
        self.deliver_with(q, frame, 0, 0, 0)
    }

    /// [`Self::deliver`] with extra write-back status bits, qword 0 (packet type, RSS
    /// hash) and the VLAN field (the stripped TCI, with VP in `extra_status`).
    fn deliver_with(
        &mut self,
        q: u32,
        frame: &[u8],
        extra_status: u32,
        qword0: u64,
        vlan: u16,
    ) -> RxOutcome {
        let qr = QueueRegs::pf(q);
        if self.reg(qr.rxdctl) & regs::XDCTL_ENABLE == 0 {
            return RxOutcome::Filtered;
        }
        let n = self.reg(qr.rdlen) / 16;
        let (head, tail) = (self.reg(qr.rdh), self.reg(qr.rdt));
        if n == 0 || head == tail || tail >= n {
            self.add(stats::RNBC, 1);
            return RxOutcome::NoDescriptor;
        }
        let bufsize = (self.reg(qr.srrctl) & regs::SRRCTL_BSIZEPACKET_MASK) as usize * 1024;
        let max = if self.reg(regs::RCTL) & regs::RCTL_LPE != 0 {
            self.reg(regs::RLPML) as usize - 4
        } else {
            1518
        };
        if frame.len() > bufsize || frame.len() > max {
            self.add(stats::ROC, 1);
            return RxOutcome::Oversize;
        }
        let base = u64::from(self.reg(qr.rdbal)) | u64::from(self.reg(qr.rdbah)) << 32;
        let d = base + u64::from(head) * 16;
        let Some(addr) = self.dma_read_u64(d) else {
            return RxOutcome::Fault;
        };
        let Some(p) = self.dma(addr, frame.len()) else {
            return RxOutcome::Fault;
        };
        // SAFETY: `dma` checked the destination lies in a registered region; the frame
        // is a separate Rust slice, so the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(frame.as_ptr(), p, frame.len()) };
        self.dma_write_u64(d, qword0);
        let status = desc::RX_STATUS_DD | desc::RX_STATUS_EOP | extra_status;
        self.dma_write_u64(
            d + 8,
            u64::from(status) | (frame.len() as u64) << 32 | u64::from(vlan) << 48,
        );
        self.set(qr.rdh, (head + 1) % n);
        self.add(stats::GPRC, 1);
        self.add(stats::GORCL, frame.len() as u32);
        self.queue_rx[q as usize % 16] += 1;
        RxOutcome::Delivered
    }

    fn accepts(&self, frame: &[u8]) -> bool {
        let rctl = self.reg(regs::RCTL);
        let dst = &frame[..6];
        if dst == [0xff; 6] {
            return rctl & regs::RCTL_BAM != 0;
        }
        if dst[0] & 1 == 1 {
            return rctl & regs::RCTL_MPE != 0;
        }
        if rctl & regs::RCTL_UPE != 0 {
            return true;
        }
        let (ral, rah) = (self.reg(regs::RAL0), self.reg(regs::RAH0));
        rah & regs::RAH_AV != 0
            && dst[..4] == ral.to_le_bytes()
            && dst[4..] == rah.to_le_bytes()[..2]
    }
}

/// Result of offering a frame to the model's receive side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxOutcome {
    /// Written into a descriptor.
    Delivered,
    /// Receiver off, link down or the address filter said no.
    Filtered,
    /// No descriptor available (counted in RNBC).
    NoDescriptor,
    /// Longer than the buffer or the maximum frame (counted in ROC).
    Oversize,
    /// The descriptor's buffer address faulted.
    Fault,
}

/// The model: a cheap handle; clones share the device.
#[derive(Debug, Clone)]
pub struct IgbModel {
    inner: Arc<Mutex<ModelState>>,
}

impl Default for IgbModel {
    fn default() -> Self {
        Self::new()
    }
}

impl IgbModel {
    /// A device after power-on, cable plugged in.
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
            spoofed: 0,
            tx_contexts: 0,
            bad_contexts: 0,
            queue_rx: [0; 16],
            tx_ctx: [[None; 2]; 16],
            pool_rx: [0; 8],
            pool_tx: [0; 8],
            vf_mbx: [0; 8],
            pf_mbx: [0; 8],
            link_up: false,
        };
        st.reset();
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

    /// Plugs or unplugs the cable; unplugging drops the link at once.
    pub fn set_cable(&self, plugged: bool) {
        let mut st = self.state();
        st.cable = plugged;
        // Auto-negotiation (enabled by the driver) completes at once on plug-in.
        st.link_up = plugged && st.reg(regs::CTRL) & regs::CTRL_SLU != 0;
    }

    /// Lets the device reach `len` bytes at `start` (identity-mapped).
    pub fn allow_dma(&self, start: *const u8, len: usize) {
        self.state().regions.push((start as u64, len as u64));
    }

    /// Regions the device may reach now (rings, pools, mapped guest memory).
    pub fn dma_regions(&self) -> usize {
        self.state().regions.len()
    }

    /// Takes back a region given with [`IgbModel::allow_dma`] (same start and length);
    /// later accesses to it fault.
    pub fn revoke_dma(&self, start: *const u8, len: usize) {
        let region = (start as u64, len as u64);
        let mut st = self.state();
        if let Some(at) = st.regions.iter().position(|&r| r == region) {
            st.regions.remove(at);
        }
    }

    /// Offers a frame from the wire: to receive queue 0, or under VMDq to the queue of
    /// every pool that takes it.
    pub fn receive(&self, frame: &[u8]) -> RxOutcome {
        let mut st = self.state();
        if st.reg(regs::RCTL) & regs::RCTL_RXEN == 0 || !st.link_up || frame.len() < 14 {
            return RxOutcome::Filtered;
        }
        if !st.vmdq() {
            if !st.accepts(frame) {
                return RxOutcome::Filtered;
            }
            // CTRL.VME: the tag leaves the frame for the write-back.
            let stripped = if st.reg(regs::CTRL) & regs::CTRL_VME != 0 {
                model_offload::strip_vlan(frame)
            } else {
                None
            };
            let (frame, vp, tci) = match &stripped {
                Some((f, tci)) => (f.as_slice(), desc::RX_STATUS_VP, *tci),
                None => (frame, 0, 0),
            };
            let (mut status, mut info) = model_offload::rx_checksum(frame, st.reg(regs::RXCSUM));
            status |= vp;
            let mut queue = 0;
            let mut hash = 0;
            let rss_on = st.reg(regs::MRQC) & 3 == regs::MRQC_ENABLE_RSS
                && st.reg(regs::RXCSUM) & regs::RXCSUM_PCSD != 0;
            if rss_on {
                let mut key = [0u8; 40];
                for (i, k) in key.chunks_exact_mut(4).enumerate() {
                    k.copy_from_slice(&st.reg(regs::RSSRK + 4 * i as u32).to_le_bytes());
                }
                if let Some((kind, h)) = model_offload::rss(frame, st.reg(regs::MRQC), &key) {
                    let entry = h & 0x7f;
                    let reta = st.reg(regs::RETA + 4 * (entry / 4)).to_le_bytes();
                    queue = u32::from(reta[(entry % 4) as usize] & 0x0f);
                    hash = h;
                    info |= kind;
                }
            }
            return st.deliver_with(
                queue,
                frame,
                status,
                u64::from(info) | u64::from(hash) << 32,
                tci,
            );
        }
        let pools = st.pools_for(&frame[..6]);
        let mut outcome = RxOutcome::Filtered;
        for p in 0..8 {
            if pools & 1 << p != 0 {
                let o = st.deliver(p, frame);
                if o == RxOutcome::Delivered {
                    st.pool_rx[p as usize] += 1;
                }
                if outcome != RxOutcome::Delivered {
                    outcome = o;
                }
            }
        }
        outcome
    }

    /// Writes qword 1 of receive descriptor `slot` as the device would on write-back:
    /// for tests of a misbehaving device (wrong length, DD where it may not write).
    pub fn write_rx_writeback(&self, slot: u32, status_error: u32, length: u16) {
        let mut st = self.state();
        let base = u64::from(st.reg(regs::RDBAL0)) | u64::from(st.reg(regs::RDBAH0)) << 32;
        st.dma_write_u64(
            base + u64::from(slot) * 16 + 8,
            u64::from(status_error) | u64::from(length) << 32,
        );
    }

    /// Fetches and sends the descriptors posted so far on every queue (with
    /// [`ModelState::defer_tx`]).
    pub fn process_tx(&self) {
        let mut st = self.state();
        for q in 0..16 {
            if st.reg(QueueRegs::pf(q).tdt) != st.reg(QueueRegs::pf(q).tdh) {
                st.transmit(q);
            }
        }
    }

    /// VF `n`'s own BAR0 (0..=7), sharing this device.
    pub fn vf(&self, n: u32) -> VfModel {
        VfModel {
            model: self.clone(),
            n: n % 8,
        }
    }

    /// Takes the frames transmitted so far.
    pub fn take_wire(&self) -> Vec<Vec<u8>> {
        self.state().wire.drain(..).collect()
    }
}

impl Registers for IgbModel {
    fn read(&self, offset: u32) -> u32 {
        let mut st = self.state();
        match offset {
            regs::STATUS => {
                let base = st.reg(regs::STATUS) & !regs::STATUS_LU;
                base | if st.link_up { regs::STATUS_LU } else { 0 }
            }
            // Clear-on-read statistics.
            stats::CRCERRS
            | stats::MPC
            | stats::GPRC
            | stats::GPTC
            | stats::GORCL
            | stats::GORCH
            | stats::GOTCL
            | stats::GOTCH
            | stats::RNBC
            | stats::ROC
            | regs::ICR => {
                let v = st.reg(offset);
                st.set(offset, 0);
                v
            }
            o if (regs::PFMAILBOX0..regs::PFMAILBOX0 + 32).contains(&o) => {
                st.pf_mbx[((o - regs::PFMAILBOX0) / 4) as usize]
            }
            _ => st.reg(offset),
        }
    }

    fn write(&self, offset: u32, value: u32) {
        let mut st = self.state();
        match offset {
            regs::CTRL => {
                if value & regs::CTRL_RST != 0 {
                    st.reset();
                } else {
                    st.set(regs::CTRL, value);
                }
            }
            regs::MDIC => {
                let phy = (value >> regs::MDIC_PHY_SHIFT) & 0x1f;
                let reg = (value >> regs::MDIC_REG_SHIFT) & 0x1f;
                let mut v = value | regs::MDIC_READY;
                if phy != regs::PHY_ADDR {
                    v |= regs::MDIC_ERROR;
                } else if value & regs::MDIC_OP_WRITE != 0 && reg == regs::PHY_BMCR {
                    let bmcr = value as u16;
                    if bmcr & regs::BMCR_AN_ENABLE != 0 && bmcr & regs::BMCR_AN_RESTART != 0 {
                        // Auto-negotiation completes at once in the model.
                        st.link_up = st.cable;
                    }
                }
                st.set(regs::MDIC, v);
            }
            o if queue_of(o, regs::TDT0).is_some() => {
                st.set(o, value & 0xffff);
                st.tx_doorbells += 1;
                if !st.defer_tx {
                    st.transmit(queue_of(o, regs::TDT0).unwrap_or(0));
                }
            }
            o if queue_of(o, regs::RDT0).is_some() => {
                st.set(o, value & 0xffff);
                st.rx_doorbells += 1;
            }
            o if queue_of(o, regs::RDLEN0).is_some() || queue_of(o, regs::TDLEN0).is_some() => {
                st.set(o, value & 0xf_ff80)
            }
            o if (regs::PFMAILBOX0..regs::PFMAILBOX0 + 32).contains(&o) => {
                st.pf_mailbox_write(((o - regs::PFMAILBOX0) / 4) as usize, value)
            }
            regs::MBVFICR | regs::VFLRE => {
                let cur = st.reg(offset);
                st.set(offset, cur & !value);
            }
            regs::CTRL_EXT => {
                st.set(offset, value);
                if value & regs::CTRL_EXT_PFRSTD != 0 {
                    for m in st.vf_mbx.iter_mut() {
                        *m = (*m & !vf::MAILBOX_RSTI) | vf::MAILBOX_RSTD;
                    }
                }
            }
            _ => st.set(offset, value),
        }
    }
}

/// The queue index when `off` is `base` + 0x40*q for a queue 0..=15.
fn queue_of(off: u32, base: u32) -> Option<u32> {
    let d = off.checked_sub(base)?;
    (d % 0x40 == 0 && d / 0x40 < 16).then_some(d / 0x40)
}

/// VF n's BAR0 in the model: VF register offsets mapped onto the PF's per-pool copies
/// (queue 0 of the VF is PF queue n), the VF side of the mailbox, and VTCTRL.RST.
#[derive(Debug, Clone)]
pub struct VfModel {
    model: IgbModel,
    n: u32,
}

impl VfModel {
    /// The PF register behind VF register `off`, for queue and mailbox-memory offsets.
    fn pf_offset(&self, off: u32) -> Option<u32> {
        let q = QueueRegs::pf(self.n);
        let v = QueueRegs::vf();
        let pairs = [
            (v.rdbal, q.rdbal),
            (v.rdbah, q.rdbah),
            (v.rdlen, q.rdlen),
            (v.srrctl, q.srrctl),
            (v.rdh, q.rdh),
            (v.rdt, q.rdt),
            (v.rxdctl, q.rxdctl),
            (v.tdbal, q.tdbal),
            (v.tdbah, q.tdbah),
            (v.tdlen, q.tdlen),
            (v.tdh, q.tdh),
            (v.tdt, q.tdt),
            (v.txdctl, q.txdctl),
        ];
        if let Some(&(_, pf)) = pairs.iter().find(|(vf, _)| *vf == off) {
            return Some(pf);
        }
        (vf::VMBMEM..vf::VMBMEM + 0x40)
            .contains(&off)
            .then(|| regs::VMBMEM0 + 0x40 * self.n + (off - vf::VMBMEM))
    }
}

impl Registers for VfModel {
    fn read(&self, offset: u32) -> u32 {
        match offset {
            vf::STATUS => self.model.read(regs::STATUS),
            vf::MAILBOX => {
                let mut st = self.model.state();
                let v = st.vf_mbx[self.n as usize];
                st.vf_mbx[self.n as usize] &= !vf::MAILBOX_R2C;
                v
            }
            vf::GPRC => self.model.state().pool_rx[self.n as usize],
            vf::GPTC => self.model.state().pool_tx[self.n as usize],
            o => match self.pf_offset(o) {
                Some(pf) => self.model.read(pf),
                None => 0,
            },
        }
    }

    fn write(&self, offset: u32, value: u32) {
        match offset {
            vf::CTRL => {
                if value & vf::CTRL_RST != 0 {
                    self.model.state().vf_reset(self.n);
                }
            }
            vf::MAILBOX => self.model.state().vf_mailbox_write(self.n as usize, value),
            o => {
                if let Some(pf) = self.pf_offset(o) {
                    self.model.write(pf, value);
                }
            }
        }
    }
}

/// [`Dma`] for the model: rings in host memory, every address identity-mapped and
/// registered with the model's IOMMU check.
#[derive(Debug)]
pub struct ModelDma {
    model: IgbModel,
    pool_base: usize,
    pool_len: usize,
}

impl ModelDma {
    /// Registers `pool`'s region with `model` and returns the DMA side of the port.
    pub fn new(model: &IgbModel, pool: &Mempool) -> Self {
        let (base, len) = pool.region();
        model.allow_dma(base, len);
        Self {
            model: model.clone(),
            pool_base: base as usize,
            pool_len: len,
        }
    }
}

/// One descriptor's worth of ring memory with the device's 128-byte alignment.
#[repr(C, align(128))]
#[derive(Clone, Copy)]
struct RingChunk([u8; 128]);

/// Host memory of a model ring, freed on drop. Held as a raw pointer (not a `Box`)
/// because the "device" writes it through other pointers while it is alive.
struct HostRing(*mut [RingChunk]);

// SAFETY: the allocation is owned by this value alone; see `RingMemory`.
unsafe impl Send for HostRing {}

impl Drop for HostRing {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `Box::into_raw` in `alloc_ring` and is freed once.
        drop(unsafe { Box::from_raw(self.0) });
    }
}

/// Ring memory for a device model: `bytes` (rounded up to whole 128-byte descriptors)
/// of zeroed, 128-byte aligned host memory, whose IOVA is its address. `allow` is told
/// the region so the model accepts DMA to it. Shared by the igb and ixgbe models.
pub(crate) fn host_ring(
    bytes: usize,
    allow: impl FnOnce(*const u8, usize),
) -> Result<RingMemory, IgbError> {
    let chunks = bytes.div_ceil(128).max(1);
    let raw = Box::into_raw(vec![RingChunk([0; 128]); chunks].into_boxed_slice());
    let owner = HostRing(raw);
    let ptr = NonNull::new(raw.cast::<u8>())
        .ok_or_else(|| IgbError::Config("ring allocation returned null".into()))?;
    allow(ptr.as_ptr(), chunks * 128);
    // SAFETY: the allocation is `chunks * 128 >= bytes` bytes, 128-byte aligned,
    // zeroed, owned by the ring through `owner`, and used by nothing else.
    Ok(unsafe { RingMemory::new(ptr, bytes, ptr.as_ptr() as u64, Box::new(owner)) })
}

/// [`DmaMap`] for the model: identity-mapped like every model address, registered
/// with (and taken back from) the model's IOMMU check.
#[derive(Debug)]
pub struct ModelDmaMap {
    model: IgbModel,
}

impl DmaMap for ModelDmaMap {
    unsafe fn map(&self, vaddr: *const u8, len: usize) -> Result<u64, String> {
        self.model.allow_dma(vaddr, len);
        Ok(vaddr as u64)
    }

    fn unmap(&self, iova: u64, len: usize) {
        self.model.revoke_dma(iova as usize as *const u8, len);
    }
}

impl Dma for ModelDma {
    fn alloc_ring(&mut self, bytes: usize) -> Result<RingMemory, IgbError> {
        host_ring(bytes, |start, len| self.model.allow_dma(start, len))
    }

    fn dma_map(&self) -> Option<Arc<dyn DmaMap>> {
        Some(Arc::new(ModelDmaMap {
            model: self.model.clone(),
        }))
    }

    #[inline]
    fn iova_of(&self, p: *const u8) -> Option<u64> {
        let off = (p as usize).checked_sub(self.pool_base)?;
        (off < self.pool_len).then_some(p as u64)
    }
}
