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
//! What it leaves out: interrupts, multiple queues, VMDq/SR-IOV, offloads, flow
//! control, descriptor prefetch and write-back thresholds, timing. What it says about
//! real hardware is only what the datasheet says; QEMU's igb model (in the VM tests) is
//! the second opinion.

use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard};

use pkt::Mempool;

use super::regs::{self, desc, stats};
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

    fn tx_enabled(&self) -> bool {
        self.reg(regs::TCTL) & regs::TCTL_EN != 0
            && self.reg(regs::TXDCTL0) & regs::XDCTL_ENABLE != 0
            && self.link_up
    }

    /// Processes descriptors from TDH to TDT, as the device does after a TDT write.
    fn transmit(&mut self) {
        if !self.tx_enabled() {
            return;
        }
        let n = (self.reg(regs::TDLEN0) as usize / 16) as u32;
        let base = u64::from(self.reg(regs::TDBAL0)) | u64::from(self.reg(regs::TDBAH0)) << 32;
        if n == 0 {
            return;
        }
        let mut frame = Vec::new();
        while self.reg(regs::TDH0) != self.reg(regs::TDT0) && self.reg(regs::TDT0) < n {
            let head = self.reg(regs::TDH0);
            let d = base + u64::from(head) * 16;
            let (Some(addr), Some(q1)) = (self.dma_read_u64(d), self.dma_read_u64(d + 8)) else {
                return;
            };
            let cmd = q1 as u32;
            let len = (cmd & 0xffff) as usize;
            if cmd & desc::TX_CMD_DEXT != 0 && cmd & (0xf << 20) == desc::TX_DTYP_DATA {
                match self.dma(addr, len) {
                    Some(p) => {
                        // SAFETY: `dma` checked the range lies in a registered region.
                        let bytes = unsafe { std::slice::from_raw_parts(p, len) };
                        frame.extend_from_slice(bytes);
                    }
                    // The real device sends zeros for a faulting read (seen on QEMU);
                    // the model sends nothing and leaves the fault counted.
                    None => frame.clear(),
                }
                if cmd & desc::TX_CMD_EOP != 0 {
                    if !frame.is_empty() {
                        self.add(stats::GPTC, 1);
                        self.add(stats::GOTCL, frame.len() as u32 + 4);
                        if self.keep_wire {
                            self.wire.push_back(std::mem::take(&mut frame));
                        }
                    }
                    frame.clear();
                }
            }
            if cmd & desc::TX_CMD_RS != 0 {
                let status = (q1 >> 32) as u32 | desc::TX_STATUS_DD;
                self.dma_write_u64(d + 8, u64::from(cmd) | u64::from(status) << 32);
            }
            self.set(regs::TDH0, (head + 1) % n);
        }
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

    /// Offers a frame from the wire to receive queue 0.
    pub fn receive(&self, frame: &[u8]) -> RxOutcome {
        let mut st = self.state();
        if st.reg(regs::RCTL) & regs::RCTL_RXEN == 0
            || st.reg(regs::RXDCTL0) & regs::XDCTL_ENABLE == 0
            || !st.link_up
            || frame.len() < 14
            || !st.accepts(frame)
        {
            return RxOutcome::Filtered;
        }
        let n = st.reg(regs::RDLEN0) / 16;
        let (head, tail) = (st.reg(regs::RDH0), st.reg(regs::RDT0));
        if n == 0 || head == tail || tail >= n {
            st.add(stats::RNBC, 1);
            return RxOutcome::NoDescriptor;
        }
        let bufsize = (st.reg(regs::SRRCTL0) & regs::SRRCTL_BSIZEPACKET_MASK) as usize * 1024;
        let max = if st.reg(regs::RCTL) & regs::RCTL_LPE != 0 {
            st.reg(regs::RLPML) as usize - 4
        } else {
            1518
        };
        if frame.len() > bufsize || frame.len() > max {
            st.add(stats::ROC, 1);
            return RxOutcome::Oversize;
        }
        let base = u64::from(st.reg(regs::RDBAL0)) | u64::from(st.reg(regs::RDBAH0)) << 32;
        let d = base + u64::from(head) * 16;
        let Some(addr) = st.dma_read_u64(d) else {
            return RxOutcome::Fault;
        };
        let Some(p) = st.dma(addr, frame.len()) else {
            return RxOutcome::Fault;
        };
        // SAFETY: `dma` checked the destination lies in a registered region; the frame
        // is a separate Rust slice, so the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(frame.as_ptr(), p, frame.len()) };
        st.dma_write_u64(d, 0);
        let status = desc::RX_STATUS_DD | desc::RX_STATUS_EOP;
        st.dma_write_u64(d + 8, u64::from(status) | (frame.len() as u64) << 32);
        st.set(regs::RDH0, (head + 1) % n);
        st.add(stats::GPRC, 1);
        st.add(stats::GORCL, frame.len() as u32);
        RxOutcome::Delivered
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

    /// Fetches and sends the descriptors posted so far (with [`ModelState::defer_tx`]).
    pub fn process_tx(&self) {
        self.state().transmit();
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
            regs::TDT0 => {
                st.set(regs::TDT0, value & 0xffff);
                st.tx_doorbells += 1;
                if !st.defer_tx {
                    st.transmit();
                }
            }
            regs::RDT0 => {
                st.set(regs::RDT0, value & 0xffff);
                st.rx_doorbells += 1;
            }
            regs::RDLEN0 | regs::TDLEN0 => st.set(offset, value & 0xf_ff80),
            _ => st.set(offset, value),
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

impl Dma for ModelDma {
    fn alloc_ring(&mut self, bytes: usize) -> Result<RingMemory, IgbError> {
        let chunks = bytes.div_ceil(128).max(1);
        let raw = Box::into_raw(vec![RingChunk([0; 128]); chunks].into_boxed_slice());
        let owner = HostRing(raw);
        let ptr =
            NonNull::new(raw.cast::<u8>()).ok_or_else(|| IgbError::Config("empty ring".into()))?;
        self.model.allow_dma(ptr.as_ptr(), chunks * 128);
        // SAFETY: the allocation is `chunks * 128 >= bytes` bytes, 128-byte aligned,
        // zeroed, owned by the ring through `owner`, and used by nothing else.
        Ok(unsafe { RingMemory::new(ptr, bytes, ptr.as_ptr() as u64, Box::new(owner)) })
    }

    #[inline]
    fn iova_of(&self, p: *const u8) -> Option<u64> {
        let off = (p as usize).checked_sub(self.pool_base)?;
        (off < self.pool_len).then_some(p as u64)
    }
}
