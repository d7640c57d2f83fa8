//! External frame tails: bytes a [`crate::PktBuf`] refers to without owning them.
//!
//! A guest's transmit buffer is already in memory this process can read (the vhost-user
//! memory map) and, once the guest's memory is DMA-mapped, that a NIC can read. Copying a
//! large frame out of it into a pool buffer only to hand the copy to the NIC (or to the
//! kernel) costs a copy per frame; an [`ExtSeg`] lets the frame travel as
//! `[pool buffer: outer headers + the first bytes of the frame][ExtSeg: the rest]`.
//!
//! The owner of the bytes (the guest port) may not reuse them until every holder is done:
//! each [`ExtSeg`] carries a [`Completion`], and dropping it (after the kernel copied
//! the frame, after the NIC wrote the descriptor back, or after a port joined the two
//! parts with [`crate::PktBuf::linearize`]) pushes its token into the owner's
//! [`DoneRing`]. The owner drains that ring on its own thread and returns the buffers
//! to the guest then. This is DPDK's external mbuf with a free callback, without a
//! callback: no code of the owner runs on the holder's thread.
//!
//! No allocation and no lock per frame: a token is a `u32`, the ring a bounded lock-free
//! queue, and the owner never has more tokens outstanding than the ring holds.

use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_queue::ArrayQueue;

/// Tokens of finished external segments, on their way back to the segments' owner.
#[derive(Debug)]
pub struct DoneRing {
    done: ArrayQueue<u32>,
    /// Tokens that did not fit (a bug in the owner's in-flight limit); counted so a
    /// stuck guest buffer is visible instead of silent.
    lost: AtomicU64,
}

impl DoneRing {
    /// A ring for at most `capacity` outstanding segments (`capacity >= 1`).
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            done: ArrayQueue::new(capacity.max(1)),
            lost: AtomicU64::new(0),
        })
    }

    /// How many tokens the ring holds at most: the owner must not have more segments
    /// outstanding than this.
    pub fn capacity(&self) -> usize {
        self.done.capacity()
    }

    /// The next finished token, if any. Called by the owner only.
    #[inline]
    pub fn pop(&self) -> Option<u32> {
        self.done.pop()
    }

    /// True when no token is waiting.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.done.is_empty()
    }

    /// Tokens lost because the ring was full (should stay 0).
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    #[inline]
    fn push(&self, token: u32) {
        if self.done.push(token).is_err() {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The owner's handle on one outstanding segment: dropping it reports `token` done.
#[derive(Debug)]
pub struct Completion {
    ring: Arc<DoneRing>,
    token: u32,
}

impl Completion {
    /// A completion that reports `token` into `ring` when dropped.
    pub fn new(ring: Arc<DoneRing>, token: u32) -> Self {
        Self { ring, token }
    }

    /// The token this completion reports.
    pub fn token(&self) -> u32 {
        self.token
    }
}

impl Drop for Completion {
    #[inline]
    fn drop(&mut self) {
        self.ring.push(self.token);
    }
}

/// Bytes outside the pool that continue a frame, with the owner's completion.
#[derive(Debug)]
pub struct ExtSeg {
    ptr: NonNull<u8>,
    len: u32,
    dma: Option<u64>,
    done: Completion,
}

// SAFETY: the bytes are only read through `&self` and the constructor's contract keeps
// them valid and unchanged until `done` is dropped, on whichever thread that happens.
unsafe impl Send for ExtSeg {}
// SAFETY: as above; `ExtSeg` gives out only shared views of immutable bytes.
unsafe impl Sync for ExtSeg {}

impl ExtSeg {
    /// A segment of `len` bytes at `ptr`; `dma` is the same bytes' device address
    /// (IOVA) when a device may read them, `done` the owner's completion.
    ///
    /// # Safety
    /// `ptr..ptr+len` must be readable memory that nobody writes and nobody unmaps until
    /// `done` has been dropped (the segment's owner keeps the guest's buffer and its
    /// memory map alive until the token comes back). If `dma` is `Some`, the same bytes
    /// must stay mapped at that device address for as long.
    pub unsafe fn new(ptr: NonNull<u8>, len: u32, dma: Option<u64>, done: Completion) -> Self {
        Self {
            ptr,
            len,
            dma,
            done,
        }
    }

    /// A segment over bytes that live and stay unchanged for the rest of the process
    /// (tests, constant frames); safe because a `&'static [u8]` guarantees exactly what
    /// [`ExtSeg::new`] asks for. Segments longer than `u32::MAX` bytes are cut there.
    pub fn from_static(bytes: &'static [u8], dma: Option<u64>, done: Completion) -> Self {
        Self {
            ptr: NonNull::from(bytes).cast(),
            len: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
            dma,
            done,
        }
    }

    /// The bytes.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the constructor's contract: readable, unchanged while `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len as usize) }
    }

    /// Length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True for an empty segment.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The device address of the bytes, when they are DMA-mapped.
    #[inline]
    pub fn dma(&self) -> Option<u64> {
        self.dma
    }

    /// The owner's token.
    pub fn token(&self) -> u32 {
        self.done.token()
    }
}

/// Makes host memory readable by a device: the VFIO container of the NIC a port sends
/// on. A guest port hands its memory regions to one so the tails it attaches carry a
/// device address ([`ExtSeg::dma`]) and the NIC gathers them in place.
pub trait DmaMap: Send + Sync {
    /// Maps `len` bytes at host address `vaddr` (page-aligned, as memory regions are)
    /// for device reads; returns the device address (IOVA) of `vaddr`.
    ///
    /// # Safety
    /// `vaddr..vaddr+len` must stay mapped in this process until [`DmaMap::unmap`]
    /// is called for the returned address.
    unsafe fn map(&self, vaddr: *const u8, len: usize) -> Result<u64, String>;

    /// Removes a mapping made by [`DmaMap::map`]. The caller makes sure no device
    /// access to it is outstanding (every tail carrying it came back).
    fn unmap(&self, iova: u64, len: usize);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_a_segment_reports_its_token_once() {
        let ring = DoneRing::new(4);
        let bytes = [7u8; 100];
        let ptr = NonNull::new(bytes.as_ptr().cast_mut()).unwrap();
        // SAFETY: `bytes` outlives the segment and is not written meanwhile.
        let seg = unsafe { ExtSeg::new(ptr, 100, Some(0x1000), Completion::new(ring.clone(), 42)) };
        assert_eq!(seg.as_slice(), &bytes[..]);
        assert_eq!(seg.dma(), Some(0x1000));
        assert_eq!(ring.pop(), None);
        drop(seg);
        assert_eq!(ring.pop(), Some(42));
        assert_eq!(ring.pop(), None);
        assert_eq!(ring.lost(), 0);
    }

    #[test]
    fn an_overfull_ring_counts_lost_tokens() {
        let ring = DoneRing::new(1);
        drop(Completion::new(ring.clone(), 1));
        drop(Completion::new(ring.clone(), 2));
        assert_eq!(ring.pop(), Some(1));
        assert_eq!(ring.lost(), 1);
    }
}
