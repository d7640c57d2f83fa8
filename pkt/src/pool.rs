//! [`Mempool`]: one memory region carved into fixed-size packet buffers, and the
//! move-only [`PktBuf`] handle to one of them.
//!
//! The region is a single anonymous mapping today; because it is one contiguous
//! mapping it can later be backed by a memfd or hugetlbfs file and DMA-mapped through
//! VFIO in one call. Free buffers are indices in a lock-free [`ArrayQueue`], so
//! allocation and release are one atomic operation each, with no lock and no heap
//! allocation per packet.

use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_queue::ArrayQueue;

use crate::Meta;

/// Bytes kept free in front of a received or created frame, so outer headers
/// (Ethernet + 802.1Q + IPv6 + UDP + VXLAN = 78 bytes) and a virtio-net header can be
/// prepended without moving the frame.
pub const HEADROOM: usize = 128;

/// Errors of the packet-buffer layer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    /// The requested geometry is unusable.
    #[error(
        "mempool: buffer size {buf_size} must exceed the {HEADROOM}-byte headroom and count must be 1..=2^24"
    )]
    BadGeometry {
        /// Requested buffer size.
        buf_size: usize,
    },
    /// The kernel refused the mapping.
    #[error("mempool: cannot map {bytes} bytes: {errno}")]
    Map {
        /// Size of the mapping.
        bytes: usize,
        /// The kernel's error.
        errno: rustix::io::Errno,
    },
    /// A headroom/tailroom adjustment did not fit the buffer.
    #[error("packet buffer: {what} of {n} bytes does not fit")]
    NoRoom {
        /// The operation.
        what: &'static str,
        /// Bytes requested.
        n: usize,
    },
}

struct Inner {
    base: NonNull<u8>,
    bytes: usize,
    buf_size: usize,
    free: ArrayQueue<u32>,
    alloc_failures: AtomicU64,
}

// SAFETY: `base` points to a private mapping owned by `Inner` for its whole life; the
// buffers inside it are handed out exclusively (one index, one owner), so sharing the
// pool between threads cannot create aliasing mutable access.
unsafe impl Send for Inner {}
// SAFETY: see `Send`; all shared state besides the mapping is atomic.
unsafe impl Sync for Inner {}

impl Drop for Inner {
    fn drop(&mut self) {
        // SAFETY: `base`/`bytes` describe exactly the mapping made in `Mempool::new`, and
        // `Inner` is dropped only after every `PktBuf` (each holds an `Arc<Inner>`) is gone.
        unsafe {
            let _ = rustix::mm::munmap(self.base.as_ptr().cast(), self.bytes);
        }
    }
}

/// A pool of equally sized packet buffers in one memory region. Cheap to clone.
#[derive(Clone)]
pub struct Mempool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Mempool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mempool")
            .field("buf_size", &self.inner.buf_size)
            .field("capacity", &self.capacity())
            .field("available", &self.available())
            .finish()
    }
}

impl Mempool {
    /// Maps `count` buffers of `buf_size` bytes each (rounded up to 64 bytes).
    pub fn new(count: u32, buf_size: usize) -> Result<Self, PoolError> {
        if buf_size <= HEADROOM || count == 0 || count > (1 << 24) {
            return Err(PoolError::BadGeometry { buf_size });
        }
        let buf_size = buf_size.next_multiple_of(64);
        let bytes = buf_size
            .checked_mul(count as usize)
            .ok_or(PoolError::BadGeometry { buf_size })?;
        // SAFETY: a fresh private anonymous mapping aliases no Rust object; we own it
        // until `Inner::drop` unmaps it.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                bytes,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::PRIVATE | rustix::mm::MapFlags::NORESERVE,
            )
        }
        .map_err(|errno| PoolError::Map { bytes, errno })?;
        let base = NonNull::new(ptr.cast::<u8>()).ok_or(PoolError::BadGeometry { buf_size })?;
        let free = ArrayQueue::new(count as usize);
        for i in 0..count {
            // Cannot fail: the queue holds exactly `count` entries.
            let _ = free.push(i);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                base,
                bytes,
                buf_size,
                free,
                alloc_failures: AtomicU64::new(0),
            }),
        })
    }

    /// Takes a free buffer, empty, with [`HEADROOM`] bytes in front. `None` when the
    /// pool is exhausted (counted in [`Mempool::alloc_failures`]).
    #[inline]
    pub fn alloc(&self) -> Option<PktBuf> {
        match self.inner.free.pop() {
            Some(idx) => Some(PktBuf {
                pool: Arc::clone(&self.inner),
                idx,
                head: HEADROOM as u32,
                len: 0,
                meta: Meta::default(),
            }),
            None => {
                self.inner.alloc_failures.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Size of each buffer in bytes (headroom included).
    pub fn buf_size(&self) -> usize {
        self.inner.buf_size
    }

    /// Total number of buffers.
    pub fn capacity(&self) -> usize {
        self.inner.free.capacity()
    }

    /// Buffers currently free.
    pub fn available(&self) -> usize {
        self.inner.free.len()
    }

    /// Allocations that found the pool empty.
    pub fn alloc_failures(&self) -> u64 {
        self.inner.alloc_failures.load(Ordering::Relaxed)
    }

    /// Start and length of the pool's memory region, for DMA mapping.
    pub fn region(&self) -> (*const u8, usize) {
        (self.inner.base.as_ptr(), self.inner.bytes)
    }
}

/// One packet buffer, owned by exactly one holder; returns to its pool on drop.
///
/// Layout: `[headroom | data (len) | tailroom]`. Outer headers are prepended into the
/// headroom and stripped by moving `head` forward, never by copying the frame.
pub struct PktBuf {
    pool: Arc<Inner>,
    idx: u32,
    head: u32,
    len: u32,
    /// Metadata that travels with the frame.
    pub meta: Meta,
}

impl std::fmt::Debug for PktBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PktBuf")
            .field("idx", &self.idx)
            .field("head", &self.head)
            .field("len", &self.len)
            .field("meta", &self.meta)
            .finish()
    }
}

impl Drop for PktBuf {
    fn drop(&mut self) {
        // Cannot fail: every index was taken from this queue, which has room for all.
        let _ = self.pool.free.push(self.idx);
    }
}

impl PktBuf {
    #[inline]
    fn whole(&self) -> &[u8] {
        let size = self.pool.buf_size;
        // SAFETY: `idx < count`, so `[idx*size, (idx+1)*size)` lies inside the mapping;
        // this `PktBuf` is the only holder of `idx`, so no other reference to these bytes
        // exists; the mapping outlives `self` through the `Arc`.
        unsafe {
            std::slice::from_raw_parts(self.pool.base.as_ptr().add(self.idx as usize * size), size)
        }
    }

    #[inline]
    fn whole_mut(&mut self) -> &mut [u8] {
        let size = self.pool.buf_size;
        // SAFETY: as in `whole`, and `&mut self` makes this the only live reference.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.pool.base.as_ptr().add(self.idx as usize * size),
                size,
            )
        }
    }

    /// The frame's bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        let (h, l) = (self.head as usize, self.len as usize);
        &self.whole()[h..h + l]
    }

    /// The frame's bytes, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let (h, l) = (self.head as usize, self.len as usize);
        &mut self.whole_mut()[h..h + l]
    }

    /// Frame length.
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True for an empty frame.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Free bytes in front of the frame.
    #[inline]
    pub fn headroom(&self) -> usize {
        self.head as usize
    }

    /// Free bytes after the frame.
    #[inline]
    pub fn tailroom(&self) -> usize {
        self.pool.buf_size - self.head as usize - self.len as usize
    }

    /// Size of the whole buffer.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.pool.buf_size
    }

    /// Grows the frame by `n` bytes at the front and returns them (for an outer header).
    #[inline]
    pub fn prepend(&mut self, n: usize) -> Result<&mut [u8], PoolError> {
        if n > self.head as usize {
            return Err(PoolError::NoRoom { what: "prepend", n });
        }
        self.head -= n as u32;
        self.len += n as u32;
        let h = self.head as usize;
        Ok(&mut self.whole_mut()[h..h + n])
    }

    /// Removes `n` bytes from the front (strips an outer header).
    #[inline]
    pub fn strip_front(&mut self, n: usize) -> Result<(), PoolError> {
        if n > self.len as usize {
            return Err(PoolError::NoRoom { what: "strip", n });
        }
        self.head += n as u32;
        self.len -= n as u32;
        Ok(())
    }

    /// Grows the frame by `n` bytes at the end and returns them.
    #[inline]
    pub fn append(&mut self, n: usize) -> Result<&mut [u8], PoolError> {
        if n > self.tailroom() {
            return Err(PoolError::NoRoom { what: "append", n });
        }
        let end = (self.head + self.len) as usize;
        self.len += n as u32;
        Ok(&mut self.whole_mut()[end..end + n])
    }

    /// Appends a copy of `bytes`.
    #[inline]
    pub fn extend_from_slice(&mut self, bytes: &[u8]) -> Result<(), PoolError> {
        self.append(bytes.len())?.copy_from_slice(bytes);
        Ok(())
    }

    /// Shortens the frame to `len` bytes (no-op if already shorter).
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        if len < self.len as usize {
            self.len = len as u32;
        }
    }

    /// Empties the frame and places its start `head` bytes into the buffer; returns
    /// the writable space from there to the end, for a port to receive into.
    /// Follow with [`PktBuf::set_len`].
    #[inline]
    pub fn reset_for_rx(&mut self, head: usize) -> &mut [u8] {
        let head = head.min(self.pool.buf_size);
        self.head = head as u32;
        self.len = 0;
        &mut self.whole_mut()[head..]
    }

    /// Sets the frame length after receiving into [`PktBuf::reset_for_rx`]'s space.
    #[inline]
    pub fn set_len(&mut self, len: usize) -> Result<(), PoolError> {
        if self.head as usize + len > self.pool.buf_size {
            return Err(PoolError::NoRoom {
                what: "set_len",
                n: len,
            });
        }
        self.len = len as u32;
        Ok(())
    }

    /// A copy of this frame (data and metadata) in a new buffer of the same pool.
    pub fn try_clone(&self) -> Option<PktBuf> {
        let mut copy = Mempool {
            inner: Arc::clone(&self.pool),
        }
        .alloc()?;
        let head = self.head as usize;
        let len = self.len as usize;
        copy.head = self.head;
        copy.len = self.len;
        copy.meta = self.meta;
        let src = &self.whole()[head..head + len];
        copy.whole_mut()[head..head + len].copy_from_slice(src);
        Some(copy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_return_to_pool_on_drop() {
        let pool = Mempool::new(4, 2048).unwrap();
        let a = pool.alloc().unwrap();
        let b = pool.alloc().unwrap();
        assert_eq!(pool.available(), 2);
        drop(a);
        drop(b);
        assert_eq!(pool.available(), 4);
    }

    #[test]
    fn exhausted_pool_counts_failure() {
        let pool = Mempool::new(1, 256).unwrap();
        let _a = pool.alloc().unwrap();
        assert!(pool.alloc().is_none());
        assert_eq!(pool.alloc_failures(), 1);
    }

    #[test]
    fn prepend_and_strip_move_the_head_only() {
        let pool = Mempool::new(2, 2048).unwrap();
        let mut b = pool.alloc().unwrap();
        b.extend_from_slice(b"payload").unwrap();
        b.prepend(4).unwrap().copy_from_slice(b"HDR:");
        assert_eq!(b.data(), b"HDR:payload");
        assert_eq!(b.headroom(), HEADROOM - 4);
        b.strip_front(4).unwrap();
        assert_eq!(b.data(), b"payload");
        assert!(b.prepend(HEADROOM + 1).is_err());
        assert!(b.strip_front(100).is_err());
    }

    #[test]
    fn append_refuses_past_the_end() {
        let pool = Mempool::new(1, 256).unwrap();
        let mut b = pool.alloc().unwrap();
        assert_eq!(b.tailroom(), 256 - HEADROOM);
        assert!(b.append(256 - HEADROOM + 1).is_err());
        assert!(b.append(256 - HEADROOM).is_ok());
    }

    #[test]
    fn clone_copies_data_and_meta() {
        let pool = Mempool::new(2, 512).unwrap();
        let mut b = pool.alloc().unwrap();
        b.extend_from_slice(&[1, 2, 3]).unwrap();
        b.meta.offload.flags = 1;
        let c = b.try_clone().unwrap();
        assert_eq!(c.data(), &[1, 2, 3]);
        assert_eq!(c.meta, b.meta);
        assert!(b.try_clone().is_none(), "pool of two is now empty");
    }

    #[test]
    fn bad_geometry_is_an_error() {
        assert!(Mempool::new(0, 2048).is_err());
        assert!(Mempool::new(8, 64).is_err());
    }
}
