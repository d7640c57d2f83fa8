//! Descriptor rings shared with the device: [`RingMemory`] (volatile access to 16-byte
//! advanced descriptors), and the receive and transmit ring state machines.
//!
//! Ownership follows the descriptor: a slot's [`PktBuf`] stays in the ring while the
//! device may read or write it, and leaves only after the device wrote DD back.

use std::any::Any;
use std::ptr::NonNull;
use std::sync::atomic::{Ordering, fence};

use pkt::{HEADROOM, Mempool, PktBuf};

use super::regs::desc;

/// Bytes per advanced descriptor.
pub const DESC_BYTES: usize = 16;

/// Transmit buffers are split at this boundary (see [`TxRing::post`]).
const TX_SPLIT: usize = 4096;

/// Memory holding one descriptor ring, visible to the device at [`RingMemory::iova`].
pub struct RingMemory {
    ptr: NonNull<u8>,
    len: usize,
    iova: u64,
    _owner: Box<dyn Any + Send>,
}

impl std::fmt::Debug for RingMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingMemory")
            .field("len", &self.len)
            .field("iova", &format_args!("{:#x}", self.iova))
            .finish()
    }
}

// SAFETY: the memory is owned through `_owner` (which is `Send`) and accessed only via
// `&mut self` or volatile reads; moving it to another thread moves that ownership.
unsafe impl Send for RingMemory {}

impl RingMemory {
    /// Wraps `len` bytes at `ptr`, seen by the device at `iova`, kept alive by `owner`.
    ///
    /// # Safety
    /// `ptr..ptr+len` must be readable and writable, 8-byte aligned, used by nothing but
    /// this ring and the device, and stay valid for as long as `owner` lives.
    pub unsafe fn new(ptr: NonNull<u8>, len: usize, iova: u64, owner: Box<dyn Any + Send>) -> Self {
        Self {
            ptr,
            len,
            iova,
            _owner: owner,
        }
    }

    /// The device-visible address of the ring.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-sized ring (never built by the driver).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Descriptors that fit.
    pub fn descriptors(&self) -> usize {
        self.len / DESC_BYTES
    }

    #[inline]
    fn qword(&self, slot: usize, word: usize) -> *mut u64 {
        // Callers index with `slot < descriptors()` and `word < 2`; `assert` here would
        // cost a branch per access, so the ring code keeps the invariant instead.
        debug_assert!(slot < self.descriptors() && word < 2);
        let off = (slot * DESC_BYTES + word * 8).min(self.len - 8);
        // SAFETY: `off + 8 <= len` (clamped above), so the pointer stays in the mapping.
        unsafe { self.ptr.as_ptr().add(off).cast::<u64>() }
    }

    /// Reads qword `word` (0 or 1) of descriptor `slot`; the device may write it.
    #[inline]
    pub fn read(&self, slot: usize, word: usize) -> u64 {
        // SAFETY: `qword` yields an aligned pointer inside the ring; volatile because the
        // device writes descriptors behind the compiler's back.
        u64::from_le(unsafe { std::ptr::read_volatile(self.qword(slot, word)) })
    }

    /// Writes qword `word` of descriptor `slot`.
    #[inline]
    pub fn write(&mut self, slot: usize, word: usize, value: u64) {
        // SAFETY: as in `read`; `&mut self` keeps other Rust writers out.
        unsafe { std::ptr::write_volatile(self.qword(slot, word), value.to_le()) }
    }
}

/// Joins a frame's external tail to its buffer when the device cannot gather it (no
/// device address, or empty): `Ok(true)` when a tail was copied, `Ok(false)` when the
/// frame goes as it is, `Err` when the tail does not fit the buffer (the caller drops
/// and counts it).
#[inline]
pub fn join_unreachable_tail(buf: &mut pkt::PktBuf) -> Result<bool, pkt::PoolError> {
    let reachable = buf.ext().is_none_or(|e| e.dma().is_some() && !e.is_empty());
    if reachable {
        return Ok(false);
    }
    buf.linearize().map(|()| true)
}

/// Makes descriptor writes visible to the device before the doorbell that follows.
///
/// On x86-64 stores are not reordered with other stores and the uncached MMIO write
/// is ordered after them, so a compiler fence is enough there; elsewhere the release
/// fence orders the stores against the MMIO write.
#[inline]
pub fn write_barrier() {
    fence(Ordering::Release);
}

/// Orders the read of a descriptor's DD bit before reads of its other fields.
#[inline]
pub fn read_barrier() {
    fence(Ordering::Acquire);
}

/// What a receive descriptor's write-back says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxWriteBack {
    /// Extended status and errors (low dword of qword 1).
    pub status_error: u32,
    /// Bytes written to the buffer.
    pub length: u16,
    /// The VLAN tag, when the device stripped one.
    pub vlan: u16,
}

impl RxWriteBack {
    /// Decodes qword 1 of an advanced receive write-back descriptor.
    #[inline]
    pub fn from_qword(q: u64) -> Self {
        Self {
            status_error: q as u32,
            length: (q >> 32) as u16,
            vlan: (q >> 48) as u16,
        }
    }

    /// DD: the device is done with the descriptor.
    #[inline]
    pub fn done(&self) -> bool {
        self.status_error & desc::RX_STATUS_DD != 0
    }
}

/// The receive ring: one pool buffer per slot, all of them posted except the slot at
/// the tail, which the driver keeps (the device owns `tail+1 ..= tail-1`, wrapping).
pub struct RxRing {
    /// Descriptor memory.
    pub mem: RingMemory,
    /// Buffer posted in each slot.
    pub bufs: Vec<Option<PktBuf>>,
    /// IOVA of each slot's buffer (where the device writes the frame).
    pub iovas: Vec<u64>,
    /// Next slot the device will complete.
    pub next: usize,
    /// The tail register's value: the one slot the device does not own.
    pub tail: usize,
}

/// Why [`RxRing::filled`] could not post a buffer in every slot, or
/// [`RxRing::take_refilled`] a fresh one in place of a taken frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxFillError {
    /// The pool ran out of buffers.
    NoBuffer,
    /// A pool buffer has no IOVA: the pool is not mapped for DMA.
    Unmapped,
}

impl RxRing {
    /// A receive ring over `mem` with `size` slots, each posted (armed) with a fresh
    /// buffer from `pool` at its IOVA from `dma`; the tail starts one slot behind the
    /// head, as the device needs.
    pub fn filled<D: super::Dma + ?Sized>(
        mem: RingMemory,
        size: usize,
        pool: &Mempool,
        dma: &D,
    ) -> Result<Self, RxFillError> {
        let mut ring = Self {
            mem,
            bufs: (0..size).map(|_| None).collect(),
            iovas: vec![0; size],
            next: 0,
            tail: size - 1,
        };
        for slot in 0..size {
            let mut buf = pool.alloc().ok_or(RxFillError::NoBuffer)?;
            let p = buf.reset_for_rx(HEADROOM).as_ptr();
            ring.iovas[slot] = dma.iova_of(p).ok_or(RxFillError::Unmapped)?;
            ring.bufs[slot] = Some(buf);
            ring.arm(slot);
        }
        Ok(ring)
    }

    /// Number of descriptors.
    #[inline]
    pub fn size(&self) -> usize {
        self.bufs.len()
    }

    /// Takes the frame the device wrote into `slot` (`len` bytes, metadata cleared)
    /// and posts a fresh buffer from `pool` in its place (the caller re-arms the slot).
    /// On `Err` the slot keeps its old buffer, whose frame is lost: the pool is empty,
    /// or its buffer has no IOVA (not reachable with a pool mapped whole). `len` must
    /// fit the old buffer.
    #[inline]
    pub fn take_refilled<D: super::Dma + ?Sized>(
        &mut self,
        slot: usize,
        len: usize,
        pool: &Mempool,
        dma: &D,
    ) -> Result<PktBuf, RxFillError> {
        let mut fresh = pool.alloc().ok_or(RxFillError::NoBuffer)?;
        let p = fresh.reset_for_rx(HEADROOM).as_ptr();
        let iova = dma.iova_of(p).ok_or(RxFillError::Unmapped)?;
        self.iovas[slot] = iova;
        // A slot always holds a buffer once filled; an empty one has no frame to give.
        let mut full = self.bufs[slot]
            .replace(fresh)
            .ok_or(RxFillError::NoBuffer)?;
        // Cannot fail: the caller checked that `len` fits the buffer.
        let _ = full.set_len(len);
        full.meta = pkt::Meta::default();
        Ok(full)
    }

    /// Writes the read-format descriptor for `slot`: packet buffer address, no header
    /// buffer. Overwrites the write-back, clearing DD.
    #[inline]
    pub fn arm(&mut self, slot: usize) {
        let iova = self.iovas[slot];
        self.mem.write(slot, 0, iova);
        self.mem.write(slot, 1, 0);
    }
}

/// The transmit ring: slots `clean..tail` hold frames the device may still read.
pub struct TxRing {
    /// Descriptor memory.
    pub mem: RingMemory,
    /// Frame in flight in each slot.
    pub bufs: Vec<Option<PktBuf>>,
    /// Oldest slot not yet reclaimed.
    pub clean: usize,
    /// The tail register's value: the next slot to fill.
    pub tail: usize,
}

impl TxRing {
    /// Number of descriptors.
    #[inline]
    pub fn size(&self) -> usize {
        self.bufs.len()
    }

    /// Slots that can take a frame now (one stays empty so a full ring differs from an
    /// empty one).
    #[inline]
    pub fn free(&self) -> usize {
        let used = (self.tail + self.size() - self.clean) % self.size();
        self.size() - 1 - used
    }

    /// Frames posted and not yet reclaimed.
    #[inline]
    pub fn in_flight(&self) -> usize {
        (self.tail + self.size() - self.clean) % self.size()
    }

    /// Descriptors a frame of `len` bytes at `iova` takes: two when it crosses a 4 KiB
    /// boundary (see [`TxRing::post`]).
    #[inline]
    pub fn slots_for(iova: u64, len: usize) -> usize {
        if (iova as usize % TX_SPLIT) + len > TX_SPLIT {
            2
        } else {
            1
        }
    }

    /// Writes advanced data descriptors for a frame in one buffer from the tail slot:
    /// IFCS (the device appends the FCS), RS (write DD back), EOP on the last one.
    ///
    /// A buffer that crosses a 4 KiB boundary is given as two segments, one per page.
    /// The 82576 would take it whole, but QEMU's model maps each TX buffer as one
    /// piece and drops frames whose pages are not contiguous behind the IOMMU; two
    /// descriptors cost the hardware nothing. The caller checks [`TxRing::free`]
    /// against [`TxRing::slots_for`] first.
    #[inline]
    pub fn post(&mut self, iova: u64, len: usize, buf: PktBuf) {
        let first = (TX_SPLIT - iova as usize % TX_SPLIT).min(len);
        let olinfo = (len as u32) << desc::TX_PAYLEN_SHIFT;
        let base = desc::TX_DTYP_DATA | desc::TX_CMD_DEXT | desc::TX_CMD_IFCS | desc::TX_CMD_RS;
        if first < len {
            let slot = self.tail;
            self.mem.write(slot, 0, iova);
            self.mem.write(
                slot,
                1,
                u64::from(first as u32 | base) | (u64::from(olinfo) << 32),
            );
            self.bufs[slot] = None;
            self.tail = (slot + 1) % self.size();
        }
        let (seg_iova, seg_len) = if first < len {
            (iova + first as u64, len - first)
        } else {
            (iova, len)
        };
        let slot = self.tail;
        let cmd = seg_len as u32 | base | desc::TX_CMD_EOP;
        self.mem.write(slot, 0, seg_iova);
        self.mem
            .write(slot, 1, u64::from(cmd) | (u64::from(olinfo) << 32));
        self.bufs[slot] = Some(buf);
        self.tail = (slot + 1) % self.size();
    }

    /// Descriptors [`TxRing::post_pages`] takes for a frame of `len` bytes at `iova`:
    /// one per 4 KiB page it touches.
    #[inline]
    pub fn pages_for(iova: u64, len: usize) -> usize {
        (iova as usize % TX_SPLIT + len).div_ceil(TX_SPLIT).max(1)
    }

    /// Writes the advanced data descriptors of a frame in one buffer from the tail
    /// slot, one per 4 KiB page it touches (see [`TxRing::post`] for why), each with
    /// IFCS and RS, EOP on the last, `cmd` (e.g. TSE) and `olinfo` (PAYLEN, POPTS,
    /// context index) added. The caller checks [`TxRing::free`] against
    /// [`TxRing::pages_for`] first.
    #[inline]
    pub fn post_pages(&mut self, iova: u64, len: usize, buf: PktBuf, cmd: u32, olinfo: u32) {
        let base =
            desc::TX_DTYP_DATA | desc::TX_CMD_DEXT | desc::TX_CMD_IFCS | desc::TX_CMD_RS | cmd;
        if iova as usize % TX_SPLIT + len <= TX_SPLIT {
            // The common case: one page, one descriptor.
            let slot = self.tail;
            let c = len as u32 | base | desc::TX_CMD_EOP;
            self.mem.write(slot, 0, iova);
            self.mem
                .write(slot, 1, u64::from(c) | u64::from(olinfo) << 32);
            self.bufs[slot] = Some(buf);
            self.tail = (slot + 1) % self.size();
            return;
        }
        self.post_split(iova, len, buf, base, olinfo);
    }

    /// [`TxRing::post_pages`] for a frame over more than one page.
    #[inline(never)]
    fn post_split(&mut self, iova: u64, len: usize, buf: PktBuf, base: u32, olinfo: u32) {
        self.post_pieces(iova, len, base, olinfo, Some(buf));
    }

    /// Writes one data descriptor per 4 KiB page of `len` bytes at `iova` from the
    /// tail slot; the last one gets EOP and holds `buf` when `buf` is `Some` (the end
    /// of the frame), none of them does otherwise.
    #[inline]
    fn post_pieces(&mut self, iova: u64, len: usize, base: u32, olinfo: u32, buf: Option<PktBuf>) {
        let (mut at, end) = (iova, iova + len as u64);
        let eop = if buf.is_some() { desc::TX_CMD_EOP } else { 0 };
        let mut buf = buf;
        while at < end {
            let piece = (TX_SPLIT as u64 - at % TX_SPLIT as u64).min(end - at);
            let last = at + piece == end;
            let slot = self.tail;
            let c = piece as u32 | base | if last { eop } else { 0 };
            self.mem.write(slot, 0, at);
            self.mem
                .write(slot, 1, u64::from(c) | u64::from(olinfo) << 32);
            self.bufs[slot] = if last { buf.take() } else { None };
            self.tail = (slot + 1) % self.size();
            at += piece;
        }
    }

    /// Descriptors [`TxRing::post_gather`] takes for a frame of `head_len` bytes at
    /// `head` followed by `tail_len` bytes at `tail`.
    #[inline]
    pub fn gather_slots(head: u64, head_len: usize, tail: u64, tail_len: usize) -> usize {
        let pages = |iova: u64, len: usize| {
            if len == 0 {
                0
            } else {
                (iova as usize % TX_SPLIT + len).div_ceil(TX_SPLIT)
            }
        };
        pages(head, head_len) + pages(tail, tail_len)
    }

    /// Writes the data descriptors of a frame in two places: `head_len` bytes at
    /// `head` (the pool buffer: outer headers and the first bytes) and `tail_len`
    /// bytes at `tail` (an external tail the device reads in place), each split per
    /// 4 KiB page as in [`TxRing::post_pages`], with `cmd` and `olinfo` on every one,
    /// EOP on the last. `buf` (which holds the tail) stays in the last descriptor's
    /// slot, so the tail's owner gets it back only after the device wrote DD for the
    /// whole frame. The caller checks [`TxRing::free`] against
    /// [`TxRing::gather_slots`] first; `tail_len` is not 0.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn post_gather(
        &mut self,
        head: u64,
        head_len: usize,
        tail: u64,
        tail_len: usize,
        buf: PktBuf,
        cmd: u32,
        olinfo: u32,
    ) {
        let base =
            desc::TX_DTYP_DATA | desc::TX_CMD_DEXT | desc::TX_CMD_IFCS | desc::TX_CMD_RS | cmd;
        self.post_pieces(head, head_len, base, olinfo, None);
        self.post_pieces(tail, tail_len, base, olinfo, Some(buf));
    }

    /// Writes an advanced context descriptor (its two qwords) at the tail. It has no
    /// write-back of its own: it is done when the data descriptor after it is.
    #[inline]
    pub fn post_context(&mut self, words: [u64; 2]) {
        let slot = self.tail;
        self.mem.write(slot, 0, words[0]);
        self.mem.write(slot, 1, words[1]);
        self.bufs[slot] = None;
        self.tail = (slot + 1) % self.size();
    }

    /// Releases the frames whose descriptors the device completed (DD written back),
    /// oldest first; returns how many descriptors.
    #[inline]
    pub fn reclaim(&mut self) -> usize {
        let mut n = 0;
        while self.clean != self.tail {
            let wb = self.mem.read(self.clean, 1);
            if (wb >> 32) as u32 & desc::TX_STATUS_DD == 0 {
                break;
            }
            // Dropping the buffer returns it to its pool.
            self.bufs[self.clean] = None;
            self.clean = (self.clean + 1) % self.size();
            n += 1;
        }
        n
    }
}
