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

/// One mapping an [`ExternalDma`] made: what the caller was given and what the
/// kernel holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ExternalMapping {
    /// The IOVA returned to the caller (of its `vaddr`).
    iova: u64,
    /// The caller's length.
    len: u64,
    /// The whole pages mapped: first IOVA and length.
    map_iova: u64,
    map_len: u64,
}

/// The mappings an [`ExternalDma`] holds, at most `max`.
#[derive(Debug)]
struct ExternalTable {
    max: usize,
    held: Vec<ExternalMapping>,
}

impl ExternalTable {
    fn full(&self) -> bool {
        self.held.len() >= self.max
    }

    /// Takes out the mapping the caller knows as `(iova, len)`.
    fn remove(&mut self, iova: u64, len: u64) -> Option<ExternalMapping> {
        let at = self
            .held
            .iter()
            .position(|m| m.iova == iova && m.len == len)?;
        Some(self.held.swap_remove(at))
    }
}

/// Memory this process does not own, made readable by the devices of a container: a
/// guest's memory regions, which a guest port maps so the NIC can gather the frames'
/// tails in place ([`pkt::ExtSeg::dma`]).
///
/// Mappings are read-only for the device (MAP_DMA with READ alone): a transmit path
/// never needs to write guest memory, and a device bug cannot corrupt it. Their IOVAs
/// come from the container's one allocator, so they never overlap the rings or the
/// packet pool. At most `max_mappings` are held at a time (each pins memory and takes
/// IOMMU entries); one more is a [`VfioError::TooManyMappings`]. What is still mapped
/// when the last handle goes is unmapped then.
#[derive(Debug)]
pub struct ExternalDma {
    container: Container,
    table: std::sync::Mutex<ExternalTable>,
}

impl ExternalDma {
    pub(crate) fn new(container: Container, max_mappings: usize) -> Self {
        Self {
            container,
            table: std::sync::Mutex::new(ExternalTable {
                max: max_mappings,
                held: Vec::new(),
            }),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, ExternalTable> {
        // The table is updated in single statements; a poisoned lock holds whole entries.
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Mappings held now.
    pub fn held(&self) -> usize {
        self.table().held.len()
    }

    /// Maps `len` bytes at `vaddr` for device reads; returns the IOVA of `vaddr`. The
    /// whole pages around the range are mapped.
    ///
    /// # Safety
    /// `vaddr..vaddr+len` must stay mapped in this process until
    /// [`ExternalDma::unmap`] is called with the returned IOVA and `len` (or this
    /// handle is dropped).
    pub unsafe fn map(&self, vaddr: *const u8, len: usize) -> Result<u64> {
        let mut table = self.table();
        if table.full() {
            return Err(VfioError::TooManyMappings {
                held: table.held.len(),
            });
        }
        let page = crate::IOVA_PAGE;
        let start = vaddr as u64 / page * page;
        let end = (vaddr as u64)
            .checked_add(len.max(1) as u64)
            .and_then(|e| e.checked_next_multiple_of(page))
            .ok_or(VfioError::IovaExhausted(len as u64))?;
        let map_len = end - start;
        // SAFETY: the caller keeps `start..end` (the pages of its range) mapped until
        // the unmap below, in `unmap` or `Drop`.
        let map_iova = unsafe { self.container.inner.map_read_only(start, map_len)? };
        let iova = map_iova + (vaddr as u64 - start);
        table.held.push(ExternalMapping {
            iova,
            len: len as u64,
            map_iova,
            map_len,
        });
        Ok(iova)
    }

    /// Removes the mapping [`ExternalDma::map`] returned `iova` for (with the same
    /// `len`); an unknown pair is logged and ignored, so a confused caller cannot
    /// unmap the rings or the pool.
    pub fn unmap(&self, iova: u64, len: usize) {
        let found = self.table().remove(iova, len as u64);
        match found {
            Some(m) => self.container.inner.unmap(m.map_iova, m.map_len),
            None => tracing::warn!(iova, len, "unmap of an IOVA this handle did not map"),
        }
    }
}

impl pkt::DmaMap for ExternalDma {
    unsafe fn map(&self, vaddr: *const u8, len: usize) -> std::result::Result<u64, String> {
        // SAFETY: the trait's contract is this method's.
        unsafe { ExternalDma::map(self, vaddr, len) }.map_err(|e| e.to_string())
    }

    fn unmap(&self, iova: u64, len: usize) {
        ExternalDma::unmap(self, iova, len);
    }
}

impl Drop for ExternalDma {
    fn drop(&mut self) {
        let held = std::mem::take(&mut self.table().held);
        for m in held {
            self.container.inner.unmap(m.map_iova, m.map_len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(iova: u64, len: u64) -> ExternalMapping {
        ExternalMapping {
            iova,
            len,
            map_iova: iova & !0xfff,
            map_len: (len + 0xfff) & !0xfff,
        }
    }

    #[test]
    fn the_external_table_is_bounded_and_removes_only_what_it_holds() {
        let mut t = ExternalTable {
            max: 2,
            held: Vec::new(),
        };
        assert!(!t.full());
        t.held.push(mapping(0x10_0000, 0x4000));
        t.held.push(mapping(0x20_0010, 100));
        assert!(t.full(), "two of two held");
        assert_eq!(t.remove(0x10_0000, 0x1000), None, "length must match");
        assert_eq!(t.remove(0x30_0000, 0x4000), None, "unknown IOVA");
        assert_eq!(t.remove(0x20_0010, 100), Some(mapping(0x20_0010, 100)));
        assert!(!t.full());
        assert_eq!(t.held, vec![mapping(0x10_0000, 0x4000)]);
    }
}
