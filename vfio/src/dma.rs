//! DMA memory: [`DmaMemory`] (memfd-backed, huge pages when available), and the guards
//! that keep an IOVA mapping and the memory behind it alive together: [`DmaRegion`]
//! for memory this crate allocates, [`PoolMapping`] for a [`pkt::Mempool`].

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;

use crate::container::{Container, owned};
use crate::{Result, VfioError};

const HUGE_PAGE: usize = 2 << 20;

/// Zeroed shared memory from a memfd, mapped into this process.
///
/// Backed by 2 MiB huge pages when the request is at least that large and the system
/// has free huge pages (fewer IOMMU entries); otherwise by normal pages. The memory is
/// populated at creation, so the device never faults it in.
#[derive(Debug)]
pub struct DmaMemory {
    ptr: NonNull<u8>,
    len: usize,
    huge: bool,
    _fd: OwnedFd,
}

// SAFETY: the mapping is owned by this value alone and freed only in `Drop`; moving it to
// another thread moves that ownership.
unsafe impl Send for DmaMemory {}
// SAFETY: `&DmaMemory` gives out only the address and length, never a reference into the
// memory, so shared access cannot race through it.
unsafe impl Sync for DmaMemory {}

impl DmaMemory {
    /// Allocates at least `bytes` (rounded up to a page, or a huge page).
    pub fn new(bytes: usize) -> Result<Self> {
        if bytes >= HUGE_PAGE
            && let Ok(m) = Self::create(bytes.next_multiple_of(HUGE_PAGE), true)
        {
            return Ok(m);
        }
        Self::create(bytes.max(1).next_multiple_of(4096), false)
    }

    fn create(len: usize, huge: bool) -> Result<Self> {
        let err = |source| VfioError::DmaAlloc { bytes: len, source };
        let flags = libc::MFD_CLOEXEC | if huge { libc::MFD_HUGETLB } else { 0 };
        // SAFETY: the name is a NUL-terminated literal; the call returns a new fd or -1.
        let fd = unsafe { libc::memfd_create(c"vnetp-dma".as_ptr(), flags) };
        if fd < 0 {
            return Err(err(io::Error::last_os_error()));
        }
        let fd = owned(fd);
        // SAFETY: ftruncate on an fd we own.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } < 0 {
            return Err(err(io::Error::last_os_error()));
        }
        // SAFETY: a new shared mapping of our own memfd; it aliases no Rust object and is
        // unmapped only in `Drop`.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(err(io::Error::last_os_error()));
        }
        let ptr =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| err(io::Error::other("null mapping")))?;
        Ok(Self {
            ptr,
            len,
            huge,
            _fd: fd,
        })
    }

    /// Start of the memory. Access it only while the device cannot (or through
    /// volatile reads and writes, for memory shared with a running device).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: allocations have at least one page.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when backed by huge pages.
    pub fn is_huge(&self) -> bool {
        self.huge
    }
}

impl Drop for DmaMemory {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `create`; every IOVA mapping
        // of it was removed before (the guards drop their mapping first).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// Memory mapped for DMA at [`DmaRegion::iova`]; unmapped, then freed, on drop.
#[derive(Debug)]
pub struct DmaRegion {
    container: Container,
    iova: u64,
    mem: DmaMemory,
}

impl DmaRegion {
    pub(crate) fn new(container: Container, mem: DmaMemory, iova: u64) -> Self {
        Self {
            container,
            iova,
            mem,
        }
    }

    /// The device-visible address of the first byte.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// The memory.
    pub fn memory(&self) -> &DmaMemory {
        &self.mem
    }
}

impl Drop for DmaRegion {
    fn drop(&mut self) {
        // The IOMMU entry goes first; `mem` is freed after this body returns.
        self.container.inner.unmap(self.iova, self.mem.len() as u64);
    }
}

/// A [`pkt::Mempool`]'s region mapped for DMA at [`PoolMapping::iova`]. Holds a clone of
/// the pool, so its memory outlives the mapping.
#[derive(Debug)]
pub struct PoolMapping {
    container: Container,
    pool: pkt::Mempool,
    iova: u64,
    base: usize,
    len: usize,
    map_len: usize,
}

impl PoolMapping {
    pub(crate) fn new(container: Container, pool: pkt::Mempool, iova: u64, map_len: usize) -> Self {
        let (base, len) = pool.region();
        Self {
            container,
            pool,
            iova,
            base: base as usize,
            len,
            map_len,
        }
    }

    /// The IOVA of the pool's first byte.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// The pool.
    pub fn pool(&self) -> &pkt::Mempool {
        &self.pool
    }

    /// The IOVA of a pointer into the pool's region, `None` outside it.
    #[inline]
    pub fn iova_of(&self, p: *const u8) -> Option<u64> {
        let off = (p as usize).checked_sub(self.base)?;
        (off < self.len).then_some(self.iova + off as u64)
    }
}

impl Drop for PoolMapping {
    fn drop(&mut self) {
        self.container.inner.unmap(self.iova, self.map_len as u64);
    }
}
