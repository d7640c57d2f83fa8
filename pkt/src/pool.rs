//! [`Mempool`]: one memory region carved into fixed-size packet buffers, and the
//! move-only [`PktBuf`] handle to one of them.
//!
//! The region is a single anonymous mapping today; because it is one contiguous
//! mapping it can later be backed by a memfd or hugetlbfs file and DMA-mapped through
//! VFIO in one call. Free buffers are indices in a lock-free [`ArrayQueue`], so
//! allocation and release are one atomic operation each, with no lock and no heap
//! allocation per packet.
//!
//! In front of the queue, each thread keeps a small LIFO cache of free indices per
//! pool (as DPDK's per-lcore mempool cache does): a thread that allocates and frees
//! in turn reuses the buffers it touched last, whose lines are still in its caches,
//! instead of walking the whole FIFO ring of the pool (with 64 KiB buffers that is
//! every page of a 128 MiB region). The cache moves buffers to and from the queue in
//! bulk when it runs empty or full, and gives everything back when the thread exits.
//! Pools of fewer than [`CACHE_MIN_POOL`] buffers have no cache, so small pools keep
//! the plain queue's exact "free means allocatable from any thread" behaviour.
//! [`Mempool::available`] counts cached buffers too.

use std::cell::RefCell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crossbeam_queue::ArrayQueue;

use crate::Meta;
use crate::ext::ExtSeg;

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

/// Pools with at least this many buffers get per-thread caches; smaller ones (tests,
/// tiny ports) use the shared queue alone.
pub const CACHE_MIN_POOL: usize = 1024;
/// Most free buffers one thread caches for one pool.
const CACHE_MAX: usize = 256;
/// Buffers moved between a thread's cache and the shared queue at once.
const CACHE_BULK: usize = 64;

struct Inner {
    base: NonNull<u8>,
    bytes: usize,
    buf_size: usize,
    free: ArrayQueue<u32>,
    alloc_failures: AtomicU64,
    /// Unique for the life of the process (addresses get reused; ids do not), so a
    /// thread's cache of a dropped pool never matches a new one.
    id: u64,
    /// Per-thread cache limit for this pool (0: no cache).
    cache_max: usize,
    /// How many buffers each thread's cache holds, for [`Mempool::available`]. Locked
    /// only when a thread first uses the pool and when someone asks for the count.
    cached: Mutex<Vec<Arc<AtomicUsize>>>,
}

/// Source of [`Inner::id`].
static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);

/// One thread's cache of free indices of one pool.
struct LocalCache {
    id: u64,
    pool: Weak<Inner>,
    /// Free indices, most recently freed last (LIFO).
    idx: Vec<u32>,
    /// `idx.len()`, published for [`Mempool::available`]; only this thread writes it.
    count: Arc<AtomicUsize>,
}

impl LocalCache {
    fn publish(&self) {
        self.count.store(self.idx.len(), Ordering::Relaxed);
    }
}

/// A thread's caches, one per pool it has used (most threads use one or two pools).
struct LocalCaches(Vec<LocalCache>);

impl LocalCaches {
    /// The cache of `pool`, created on first use. `None` when the pool has no cache.
    #[inline]
    fn get(&mut self, pool: &Arc<Inner>) -> Option<&mut LocalCache> {
        if pool.cache_max == 0 {
            return None;
        }
        // Fast path: the pool used last sits first (the common single-pool case).
        let pos = if self.0.first().is_some_and(|c| c.id == pool.id) {
            0
        } else {
            self.find_or_create(pool)?
        };
        self.0.get_mut(pos)
    }

    /// Moves `pool`'s cache to the front, creating it if this thread has none yet;
    /// returns its position (0). `None` if the pool's registry is poisoned.
    #[cold]
    fn find_or_create(&mut self, pool: &Arc<Inner>) -> Option<usize> {
        if let Some(p) = self.0.iter().position(|c| c.id == pool.id) {
            self.0.swap(0, p);
            return Some(0);
        }
        // Forget caches of pools that are gone before growing.
        self.0.retain(|c| c.pool.strong_count() > 0);
        let count = Arc::new(AtomicUsize::new(0));
        {
            let mut reg = pool.cached.lock().ok()?;
            reg.retain(|c| Arc::strong_count(c) > 1);
            reg.push(Arc::clone(&count));
        }
        self.0.push(LocalCache {
            id: pool.id,
            pool: Arc::downgrade(pool),
            idx: Vec::with_capacity(pool.cache_max + CACHE_BULK),
            count,
        });
        let last = self.0.len() - 1;
        self.0.swap(0, last);
        Some(0)
    }
}

impl Drop for LocalCaches {
    fn drop(&mut self) {
        // The thread is exiting: its cached buffers go back to their pools.
        for c in &mut self.0 {
            if let Some(pool) = c.pool.upgrade() {
                for i in c.idx.drain(..) {
                    let _ = pool.free.push(i);
                }
            }
            c.idx.clear();
            c.publish();
        }
    }
}

thread_local! {
    static CACHES: RefCell<LocalCaches> = const { RefCell::new(LocalCaches(Vec::new())) };
}

impl Inner {
    /// Takes a free index: this thread's cache first, refilled from the queue in bulk.
    #[inline]
    fn take(self: &Arc<Self>) -> Option<u32> {
        if self.cache_max == 0 {
            return self.free.pop();
        }
        let cached = CACHES.try_with(|caches| {
            let mut caches = caches.try_borrow_mut().ok()?;
            let cache = caches.get(self)?;
            if cache.idx.is_empty() {
                while cache.idx.len() < CACHE_BULK {
                    match self.free.pop() {
                        Some(i) => cache.idx.push(i),
                        None => break,
                    }
                }
            }
            let i = cache.idx.pop();
            cache.publish();
            // `None` here means the queue is empty too: no point asking it again.
            Some(i)
        });
        match cached {
            Ok(Some(i)) => i,
            // No cache usable (thread exiting, re-entered): the shared queue.
            _ => self.free.pop(),
        }
    }

    /// Returns an index: to this thread's cache, spilling the oldest half of a full
    /// cache to the queue in bulk.
    #[inline]
    fn give(self: &Arc<Self>, idx: u32) {
        if self.cache_max != 0 {
            let done = CACHES.try_with(|caches| {
                let Ok(mut caches) = caches.try_borrow_mut() else {
                    return false;
                };
                let Some(cache) = caches.get(self) else {
                    return false;
                };
                cache.idx.push(idx);
                if cache.idx.len() > self.cache_max {
                    // The oldest entries (front) are the coldest: they go back.
                    let spill = CACHE_BULK.min(cache.idx.len());
                    for i in cache.idx.drain(..spill) {
                        // Cannot fail: the queue has room for every index.
                        let _ = self.free.push(i);
                    }
                }
                cache.publish();
                true
            });
            if done == Ok(true) {
                return;
            }
        }
        // Cannot fail: every index was taken from this queue, which has room for all.
        let _ = self.free.push(idx);
    }
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
        let cache_max = if count as usize >= CACHE_MIN_POOL {
            CACHE_MAX.min(count as usize / 8)
        } else {
            0
        };
        Ok(Self {
            inner: Arc::new(Inner {
                base,
                bytes,
                buf_size,
                free,
                alloc_failures: AtomicU64::new(0),
                id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
                cache_max,
                cached: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Takes a free buffer, empty, with [`HEADROOM`] bytes in front. `None` when the
    /// pool is exhausted (counted in [`Mempool::alloc_failures`]).
    #[inline]
    pub fn alloc(&self) -> Option<PktBuf> {
        match self.inner.take() {
            Some(idx) => Some(PktBuf {
                pool: Arc::clone(&self.inner),
                idx,
                head: HEADROOM as u32,
                len: 0,
                meta: Meta::default(),
                ext: None,
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

    /// Buffers currently free: in the shared queue or in any thread's cache. Exact
    /// when no other thread is allocating or freeing at the same moment.
    pub fn available(&self) -> usize {
        let cached: usize = self
            .inner
            .cached
            .lock()
            .map(|reg| reg.iter().map(|c| c.load(Ordering::Relaxed)).sum())
            .unwrap_or(0);
        self.inner.free.len() + cached
    }

    /// Most free buffers one thread keeps cached for this pool (0: no cache). Sizing
    /// a pool: up to this many per thread may be free yet not allocatable elsewhere.
    pub fn cache_size(&self) -> usize {
        self.inner.cache_max
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
    /// The frame's tail when it stays where it is (a guest's buffer): the frame is
    /// `data()` followed by these bytes. See [`crate::ext`].
    ext: Option<ExtSeg>,
}

impl std::fmt::Debug for PktBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PktBuf")
            .field("idx", &self.idx)
            .field("head", &self.head)
            .field("len", &self.len)
            .field("meta", &self.meta)
            .field("ext", &self.ext.as_ref().map(ExtSeg::len))
            .finish()
    }
}

impl Drop for PktBuf {
    #[inline]
    fn drop(&mut self) {
        self.pool.give(self.idx);
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

    /// Shortens the buffer's part of the frame to `len` bytes (no-op if already
    /// shorter); an external tail is not touched, so linearize first to cut a frame.
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
        self.ext = None;
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

    /// A copy of this frame (data and metadata) in a new buffer of the same pool. An
    /// external tail is copied in too, so the copy is one linear frame; `None` when the
    /// pool is empty or the whole frame does not fit one buffer.
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
        if let Some(ext) = &self.ext {
            copy.extend_from_slice(ext.as_slice()).ok()?;
        }
        Some(copy)
    }

    /// Hangs `ext` behind the frame's bytes: the frame becomes `data()` followed by
    /// `ext`. A tail already attached is released first (its owner gets it back).
    #[inline]
    pub fn attach_ext(&mut self, ext: ExtSeg) {
        self.ext = Some(ext);
    }

    /// The external tail, if the frame has one.
    #[inline]
    pub fn ext(&self) -> Option<&ExtSeg> {
        self.ext.as_ref()
    }

    /// The frame as its two parts: the buffer's bytes and the external tail (empty for
    /// a linear frame).
    #[inline]
    pub fn parts(&self) -> (&[u8], &[u8]) {
        (
            self.data(),
            self.ext.as_ref().map_or(&[][..], ExtSeg::as_slice),
        )
    }

    /// [`PktBuf::parts`] with the buffer's part writable (headers are rewritten in
    /// place; the tail is never written).
    #[inline]
    pub fn parts_mut(&mut self) -> (&mut [u8], &[u8]) {
        let (h, l) = (self.head as usize, self.len as usize);
        let size = self.pool.buf_size;
        // SAFETY: as in `whole_mut`: this `PktBuf` is the only holder of buffer `idx`,
        // which lies inside the mapping; the tail is memory outside the pool, so the
        // two slices cannot overlap.
        let whole = unsafe {
            std::slice::from_raw_parts_mut(
                self.pool.base.as_ptr().add(self.idx as usize * size),
                size,
            )
        };
        let tail = self.ext.as_ref().map_or(&[][..], ExtSeg::as_slice);
        (&mut whole[h..h + l], tail)
    }

    /// True when the whole frame is in this buffer (no external tail).
    #[inline]
    pub fn is_linear(&self) -> bool {
        self.ext.is_none()
    }

    /// Length of the whole frame: [`PktBuf::len`] plus the external tail.
    #[inline]
    pub fn frame_len(&self) -> usize {
        self.len as usize + self.ext.as_ref().map_or(0, ExtSeg::len)
    }

    /// Copies the external tail into this buffer's tailroom and releases it, so the
    /// whole frame is in [`PktBuf::data`]. A no-op for a linear frame. Fails, leaving
    /// the frame as it was, when the tail does not fit the tailroom.
    #[inline]
    pub fn linearize(&mut self) -> Result<(), PoolError> {
        let Some(ext) = self.ext.take() else {
            return Ok(());
        };
        match self.append(ext.len()) {
            Ok(room) => {
                room.copy_from_slice(ext.as_slice());
                Ok(())
            }
            Err(e) => {
                self.ext = Some(ext);
                Err(e)
            }
        }
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
    fn a_freed_buffer_is_the_next_one_allocated_on_the_same_thread() {
        let pool = Mempool::new(CACHE_MIN_POOL as u32, 256).unwrap();
        assert!(pool.cache_size() > 0);
        let a = pool.alloc().unwrap();
        let b = pool.alloc().unwrap();
        let (ia, ib) = (a.idx, b.idx);
        drop(a);
        drop(b);
        // LIFO: the hottest buffer (freed last) comes back first, then the one before.
        assert_eq!(pool.alloc().unwrap().idx, ib);
        let again = pool.alloc().unwrap();
        let again2 = pool.alloc().unwrap();
        assert_eq!((again.idx, again2.idx), (ib, ia));
    }

    #[test]
    fn small_pools_have_no_thread_cache() {
        let pool = Mempool::new(CACHE_MIN_POOL as u32 - 1, 256).unwrap();
        assert_eq!(pool.cache_size(), 0);
        let a = pool.alloc().unwrap();
        let first = a.idx;
        drop(a);
        assert_ne!(pool.alloc().unwrap().idx, first, "FIFO without a cache");
    }

    #[test]
    fn the_whole_pool_is_allocatable_through_the_cache_and_counted_when_exhausted() {
        let pool = Mempool::new(CACHE_MIN_POOL as u32, 256).unwrap();
        let held: Vec<PktBuf> = std::iter::from_fn(|| pool.alloc()).collect();
        assert_eq!(held.len(), CACHE_MIN_POOL);
        assert_eq!(pool.available(), 0);
        assert_eq!(pool.alloc_failures(), 1);
        let mut seen = vec![false; CACHE_MIN_POOL];
        for b in &held {
            assert!(
                !std::mem::replace(&mut seen[b.idx as usize], true),
                "index handed out twice"
            );
        }
        drop(held);
        assert_eq!(
            pool.available(),
            CACHE_MIN_POOL,
            "cached buffers count as free"
        );
        assert!(
            pool.inner.free.len() < CACHE_MIN_POOL,
            "some stay in this thread's cache"
        );
    }

    #[test]
    fn a_finished_thread_gives_its_cached_buffers_back() {
        let pool = Mempool::new(2 * CACHE_MIN_POOL as u32, 256).unwrap();
        let p = pool.clone();
        std::thread::spawn(move || {
            // Churn: allocate in bursts larger than the cache, free, repeat.
            for _ in 0..10 {
                let burst: Vec<PktBuf> = (0..600).filter_map(|_| p.alloc()).collect();
                assert_eq!(burst.len(), 600);
            }
            assert!(
                p.inner.free.len() < p.capacity(),
                "the thread holds a cache"
            );
            assert_eq!(p.available(), p.capacity());
        })
        .join()
        .unwrap();
        assert_eq!(
            pool.inner.free.len(),
            pool.capacity(),
            "flushed at thread exit"
        );
        assert_eq!(pool.available(), pool.capacity());
        let reg = pool.inner.cached.lock().unwrap();
        assert!(reg.iter().all(|c| c.load(Ordering::Relaxed) == 0));
    }

    #[test]
    fn buffers_freed_on_another_thread_are_accounted_and_reusable() {
        let pool = Mempool::new(CACHE_MIN_POOL as u32, 256).unwrap();
        let held: Vec<PktBuf> = (0..512).map(|_| pool.alloc().unwrap()).collect();
        // A joined (not scoped) thread: `join` returns after its thread-local
        // destructors ran, which is when its cache goes back.
        std::thread::spawn(move || drop(held)).join().unwrap();
        assert_eq!(pool.available(), CACHE_MIN_POOL);
        let all: Vec<PktBuf> = std::iter::from_fn(|| pool.alloc()).collect();
        assert_eq!(
            all.len(),
            CACHE_MIN_POOL,
            "nothing stranded in the other thread"
        );
    }

    #[test]
    fn a_dropped_pool_leaves_no_stale_cache_behind() {
        for _ in 0..3 {
            let pool = Mempool::new(CACHE_MIN_POOL as u32, 256).unwrap();
            let b = pool.alloc().unwrap();
            drop(b);
            drop(pool);
        }
        let pool = Mempool::new(CACHE_MIN_POOL as u32, 256).unwrap();
        let b = pool.alloc().unwrap();
        assert!((b.idx as usize) < CACHE_MIN_POOL);
        drop(b);
        assert_eq!(pool.available(), CACHE_MIN_POOL);
        CACHES.with(|c| assert!(c.borrow().0.len() <= 2, "stale caches pruned"));
    }

    #[test]
    fn an_external_tail_joins_the_frame_and_goes_back_to_its_owner() {
        use crate::ext::{Completion, DoneRing, ExtSeg};
        let pool = Mempool::new(4, 2048).unwrap();
        let ring = DoneRing::new(8);
        let tail: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let ext = |token| {
            let ptr = std::ptr::NonNull::new(tail.as_ptr().cast_mut()).unwrap();
            // SAFETY: `tail` outlives every segment made here and is never written.
            unsafe { ExtSeg::new(ptr, 1000, None, Completion::new(ring.clone(), token)) }
        };
        let mut b = pool.alloc().unwrap();
        b.extend_from_slice(b"head").unwrap();
        b.attach_ext(ext(1));
        assert!(!b.is_linear());
        assert_eq!((b.len(), b.frame_len()), (4, 1004));
        let copy = b.try_clone().unwrap();
        assert!(copy.is_linear());
        assert_eq!(&copy.data()[..4], b"head");
        assert_eq!(&copy.data()[4..], &tail[..]);
        assert_eq!(ring.pop(), None, "cloning keeps the original's tail");
        b.linearize().unwrap();
        assert_eq!(ring.pop(), Some(1), "linearizing releases the tail");
        assert_eq!(b.data(), copy.data());
        // A tail that does not fit stays attached; dropping the frame releases it.
        let mut small = pool.alloc().unwrap();
        small.append(2048 - HEADROOM - 500).unwrap();
        small.attach_ext(ext(2));
        assert!(small.linearize().is_err());
        assert_eq!(small.frame_len(), 2048 - HEADROOM - 500 + 1000);
        drop(small);
        assert_eq!(ring.pop(), Some(2));
        assert_eq!(ring.lost(), 0);
    }

    #[test]
    fn bad_geometry_is_an_error() {
        assert!(Mempool::new(0, 2048).is_err());
        assert!(Mempool::new(8, 64).is_err());
    }
}
