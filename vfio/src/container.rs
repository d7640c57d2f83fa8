//! [`Container`]: one IOMMU address space (a VFIO container) holding the groups of the
//! devices vnetp drives, and the DMA mappings those devices may reach.

use std::collections::HashMap;
use std::fs::OpenOptions as FileOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::device::Device;
use crate::dma::{DmaMemory, DmaRegion, ExternalDma, PoolMapping};
use crate::iova::IovaAllocator;
use crate::sys;
use crate::sysfs::{PciAddress, Sysfs};
use crate::token::VfToken;
use crate::{Result, VfioError};

/// IOVA space assumed when the kernel does not report its usable ranges: from 1 MiB to
/// 2^39 (the narrowest address width Intel IOMMUs implement), below the x86 MSI window.
const FALLBACK_IOVA_RANGES: &[(u64, u64)] =
    &[(0x10_0000, 0xfedf_ffff), (0xfef0_0000, (1 << 39) - 1)];

/// Shared state of a container: its fd and the groups attached to it.
pub(crate) struct ContainerInner {
    pub(crate) fd: OwnedFd,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Group fds by number: several devices of one group share it.
    groups: HashMap<u32, Arc<OwnedFd>>,
    /// The IOVA allocator, created when the IOMMU backend is set (first group).
    iova: Option<IovaAllocator>,
}

impl ContainerInner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a way
        // that matters (maps are inserted after success), so a poisoned lock is used.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Maps `size` bytes at `vaddr` for device reads and writes at a fresh IOVA.
    ///
    /// # Safety
    /// `vaddr..vaddr+size` must be a mapping that stays valid until the returned IOVA
    /// is unmapped with [`ContainerInner::unmap`].
    pub(crate) unsafe fn map(&self, vaddr: u64, size: u64) -> Result<u64> {
        // SAFETY: the caller's promise, passed on.
        unsafe {
            self.map_with(
                vaddr,
                size,
                sys::DMA_MAP_FLAG_READ | sys::DMA_MAP_FLAG_WRITE,
            )
        }
    }

    /// [`ContainerInner::map`] for device reads only: the device cannot write the
    /// memory, and the kernel pins it without asking for write access.
    ///
    /// # Safety
    /// As for [`ContainerInner::map`].
    pub(crate) unsafe fn map_read_only(&self, vaddr: u64, size: u64) -> Result<u64> {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.map_with(vaddr, size, sys::DMA_MAP_FLAG_READ) }
    }

    /// Maps `size` bytes at `vaddr` with the given MAP_DMA `flags` at a fresh IOVA from
    /// the container's one allocator, so no two mappings (rings, pool, external
    /// memory) can overlap.
    ///
    /// # Safety
    /// As for [`ContainerInner::map`].
    unsafe fn map_with(&self, vaddr: u64, size: u64, flags: u32) -> Result<u64> {
        let mut st = self.lock();
        let alloc = st.iova.as_mut().ok_or_else(|| {
            VfioError::sys(
                "DMA map",
                io::Error::other("the container has no device yet: open a device first"),
            )
        })?;
        let iova = alloc.alloc(size, if size >= 0x20_0000 { 0x20_0000 } else { 0 })?;
        let map = sys::DmaMap {
            argsz: size_of::<sys::DmaMap>() as u32,
            flags,
            vaddr,
            iova,
            size,
        };
        // SAFETY: MAP_DMA reads `map`, a live struct of the size it declares; the memory
        // it pins is valid for as long as the caller promised.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), sys::IOMMU_MAP_DMA, &map) };
        if r < 0 {
            let source = io::Error::last_os_error();
            alloc.free(iova, size);
            return Err(VfioError::DmaMap { iova, size, source });
        }
        Ok(iova)
    }

    /// Removes a mapping made by [`ContainerInner::map`]. Failure is logged: it can only
    /// mean the container is already gone.
    pub(crate) fn unmap(&self, iova: u64, size: u64) {
        let unmap = sys::DmaUnmap {
            argsz: size_of::<sys::DmaUnmap>() as u32,
            flags: 0,
            iova,
            size,
        };
        // SAFETY: UNMAP_DMA reads and updates `unmap`, a live struct of its declared size.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), sys::IOMMU_UNMAP_DMA, &unmap) };
        if r < 0 {
            tracing::warn!(iova, size, error = %io::Error::last_os_error(), "VFIO DMA unmap failed");
            return;
        }
        if let Some(a) = self.lock().iova.as_mut() {
            a.free(iova, size);
        }
    }
}

/// How [`Container::open_device_with_options`] opens a device.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    vf_token: Option<VfToken>,
    sysfs: Sysfs,
}

impl OpenOptions {
    /// No VF token, the system's `/sys`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Presents `token` when opening: needed for a VF whose PF is owned by a VFIO
    /// user that set a token ([`Device::set_vf_token`]), and for such a PF while its
    /// VFs are open. Opening a PF with no VF in use sets its token to this one.
    pub fn vf_token(mut self, token: VfToken) -> Self {
        self.vf_token = Some(token);
        self
    }

    /// Reads device facts (group, driver, SR-IOV role) from this sysfs tree.
    pub fn sysfs(mut self, sysfs: Sysfs) -> Self {
        self.sysfs = sysfs;
        self
    }
}

/// Sets the VF token of the SR-IOV PF at `pf` (bound to vfio-pci) by opening it in a
/// container of its own, and closes it again.
///
/// For a process that hands the PF to a driver which opens it by itself: call this
/// first, while nothing holds the PF's group (the kernel keeps the token for as long
/// as vfio-pci stays bound to the PF; a later plain open of the PF works as long as
/// none of its VFs is in use). Closing resets the function, as every VFIO release
/// does. When the PF is already open in this process, use [`Device::set_vf_token`].
pub fn set_vf_token(pf: &str, token: &VfToken) -> Result<()> {
    let container = Container::new()?;
    // Presenting the token at open also proves it to VF users already running.
    let dev = container.open_device_with_options(pf, &OpenOptions::new().vf_token(*token))?;
    dev.set_vf_token(token)
}

/// A VFIO container: one IOMMU domain for every device opened through it.
///
/// Cheap to clone; devices and DMA mappings keep it alive.
#[derive(Clone)]
pub struct Container {
    pub(crate) inner: Arc<ContainerInner>,
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container")
            .field("fd", &self.inner.fd.as_raw_fd())
            .finish()
    }
}

pub(crate) fn open_node(path: &Path) -> Result<OwnedFd> {
    match FileOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => Ok(f.into()),
        Err(e) => Err(match e.raw_os_error() {
            Some(libc::EACCES | libc::EPERM) => VfioError::Permission {
                path: path.to_owned(),
            },
            Some(libc::EBUSY) => VfioError::Busy {
                what: path.display().to_string(),
            },
            Some(libc::ENOENT | libc::ENODEV | libc::ENXIO) => VfioError::NoVfio {
                path: path.to_owned(),
                source: e,
            },
            _ => VfioError::sys(format!("open {}", path.display()), e),
        }),
    }
}

impl Container {
    /// Opens `/dev/vfio/vfio` and checks the kernel's VFIO API and type1v2 IOMMU.
    pub fn new() -> Result<Self> {
        let fd = open_node(Path::new("/dev/vfio/vfio"))?;
        // SAFETY: GET_API_VERSION takes no argument.
        let api = unsafe { libc::ioctl(fd.as_raw_fd(), sys::GET_API_VERSION) };
        if api != sys::VFIO_API_VERSION {
            return Err(VfioError::ApiVersion(api));
        }
        // SAFETY: CHECK_EXTENSION takes the extension number by value.
        let ext = unsafe { libc::ioctl(fd.as_raw_fd(), sys::CHECK_EXTENSION, sys::TYPE1V2_IOMMU) };
        if ext <= 0 {
            return Err(VfioError::NoType1);
        }
        Ok(Self {
            inner: Arc::new(ContainerInner {
                fd,
                state: Mutex::new(State::default()),
            }),
        })
    }

    /// Opens the device at PCI address `bdf` (which must be bound to vfio-pci), attaching
    /// its IOMMU group to this container.
    pub fn open_device(&self, bdf: &str) -> Result<Device> {
        self.open_device_with(&Sysfs::default(), bdf)
    }

    /// [`Container::open_device`] reading device facts from the given sysfs tree.
    pub fn open_device_with(&self, sysfs: &Sysfs, bdf: &str) -> Result<Device> {
        self.open_device_with_options(bdf, &OpenOptions::new().sysfs(sysfs.clone()))
    }

    /// [`Container::open_device`] with options: a VF token for a VF whose PF a VFIO
    /// user owns (what QEMU's `vf-token=` passes), or a PF whose VFs are in use.
    pub fn open_device_with_options(&self, bdf: &str, options: &OpenOptions) -> Result<Device> {
        let sysfs = &options.sysfs;
        let bdf = PciAddress::parse(bdf)?;
        let group_no = sysfs.iommu_group(&bdf)?;
        let driver = sysfs.driver(&bdf);
        if driver.as_deref() != Some("vfio-pci") {
            return Err(VfioError::NotBound {
                bdf: bdf.to_string(),
                driver: driver.unwrap_or_else(|| "no driver".to_owned()),
            });
        }
        let group = self.attach_group(sysfs, group_no)?;
        Device::open(
            self.clone(),
            group,
            group_no,
            bdf,
            options.vf_token.as_ref(),
            sysfs,
        )
    }

    fn attach_group(&self, sysfs: &Sysfs, group_no: u32) -> Result<Arc<OwnedFd>> {
        let mut st = self.inner.lock();
        if let Some(g) = st.groups.get(&group_no) {
            return Ok(Arc::clone(g));
        }
        let path = Path::new("/dev/vfio").join(group_no.to_string());
        let group = open_node(&path)?;
        let mut status = sys::GroupStatus {
            argsz: size_of::<sys::GroupStatus>() as u32,
            flags: 0,
        };
        // SAFETY: GROUP_GET_STATUS writes into `status`, a live struct of its declared size.
        let r = unsafe { libc::ioctl(group.as_raw_fd(), sys::GROUP_GET_STATUS, &mut status) };
        if r < 0 {
            return Err(VfioError::sys(
                format!("group {group_no}: get status"),
                io::Error::last_os_error(),
            ));
        }
        if status.flags & sys::GROUP_FLAGS_VIABLE == 0 {
            return Err(VfioError::NotViable {
                group: group_no,
                others: sysfs.blocking_members(group_no),
            });
        }
        let cfd = self.inner.fd.as_raw_fd();
        // SAFETY: SET_CONTAINER reads the container fd through the pointer.
        let r = unsafe { libc::ioctl(group.as_raw_fd(), sys::GROUP_SET_CONTAINER, &cfd) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::EBUSY) {
                VfioError::Busy {
                    what: format!("IOMMU group {group_no}"),
                }
            } else {
                VfioError::sys(format!("group {group_no}: set container"), e)
            });
        }
        if st.iova.is_none() {
            // The IOMMU backend is chosen once, after the first group joined.
            // SAFETY: SET_IOMMU takes the backend type by value.
            let r = unsafe { libc::ioctl(cfd, sys::SET_IOMMU, sys::TYPE1V2_IOMMU) };
            if r < 0 {
                return Err(VfioError::sys(
                    "set the type1v2 IOMMU",
                    io::Error::last_os_error(),
                ));
            }
            let ranges = self.iova_ranges().unwrap_or_else(|e| {
                tracing::debug!(error = %e, "no IOVA ranges reported; using the default");
                FALLBACK_IOVA_RANGES.to_vec()
            });
            tracing::debug!(?ranges, "IOVA ranges");
            st.iova = Some(IovaAllocator::new(&ranges));
        }
        let group = Arc::new(group);
        st.groups.insert(group_no, Arc::clone(&group));
        Ok(group)
    }

    /// The IOVA ranges the IOMMU accepts, from VFIO_IOMMU_GET_INFO's IOVA-range
    /// capability (`(start, last)`, inclusive).
    fn iova_ranges(&self) -> Result<Vec<(u64, u64)>> {
        let fd = self.inner.fd.as_raw_fd();
        let head = size_of::<sys::IommuInfo>();
        let mut buf = vec![0u64; head / 8];
        for _ in 0..2 {
            let argsz = (buf.len() * 8) as u32;
            buf[0] = u64::from(argsz); // argsz in the low half, flags 0
            // SAFETY: GET_INFO writes at most `argsz` bytes into `buf`, which is that large
            // and 8-byte aligned, as the struct needs.
            let r = unsafe { libc::ioctl(fd, sys::IOMMU_GET_INFO, buf.as_mut_ptr()) };
            if r < 0 {
                return Err(VfioError::sys("IOMMU get info", io::Error::last_os_error()));
            }
            let need = (buf[0] & 0xffff_ffff) as usize;
            if need <= buf.len() * 8 {
                break;
            }
            buf.resize(need.div_ceil(8), 0);
        }
        let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
        parse_iova_ranges(&bytes).ok_or_else(|| {
            VfioError::sys(
                "IOMMU get info",
                io::Error::other("no IOVA range capability"),
            )
        })
    }

    /// Allocates `bytes` of zeroed, DMA-able memory (memfd-backed, on huge pages when
    /// the system has them) and maps it for the devices of this container.
    pub fn alloc_dma(&self, bytes: usize) -> Result<DmaRegion> {
        let mem = DmaMemory::new(bytes)?;
        // SAFETY: `mem` is a live mapping of `mem.len()` bytes; `DmaRegion` drops the
        // IOVA mapping before the memory (field order).
        let iova = unsafe { self.inner.map(mem.as_ptr() as u64, mem.len() as u64)? };
        Ok(DmaRegion::new(self.clone(), mem, iova))
    }

    /// A handle that maps memory this process does not own (a guest's memory regions)
    /// for device reads, at most `max_mappings` regions at a time; see [`ExternalDma`].
    pub fn external_dma(&self, max_mappings: usize) -> ExternalDma {
        ExternalDma::new(self.clone(), max_mappings)
    }

    /// Maps a packet pool's whole region for DMA; the mapping keeps the pool alive.
    pub fn map_pool(&self, pool: &pkt::Mempool) -> Result<PoolMapping> {
        let (base, len) = pool.region();
        // The IOMMU maps whole pages; the pool's mapping is page-aligned and the kernel
        // backs its last partial page entirely.
        let map_len = len.next_multiple_of(4096);
        // SAFETY: the region is the pool's single mapping (rounded up to its last page);
        // `PoolMapping` holds a clone of the pool, so the memory outlives the IOVA mapping.
        let iova = unsafe { self.inner.map(base as u64, map_len as u64)? };
        Ok(PoolMapping::new(self.clone(), pool.clone(), iova, map_len))
    }
}

/// Parses `struct vfio_iommu_type1_info` and its capability chain for the IOVA ranges.
fn parse_iova_ranges(b: &[u8]) -> Option<Vec<(u64, u64)>> {
    let u32_at = |o: usize| Some(u32::from_ne_bytes(b.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_ne_bytes(b.get(o..o + 8)?.try_into().ok()?));
    let u16_at = |o: usize| Some(u16::from_ne_bytes(b.get(o..o + 2)?.try_into().ok()?));
    let flags = u32_at(4)?;
    if flags & sys::IOMMU_INFO_CAPS == 0 {
        return None;
    }
    let mut off = u32_at(16)? as usize;
    for _ in 0..32 {
        if off == 0 {
            return None;
        }
        let (id, next) = (u16_at(off)?, u32_at(off + 4)?);
        if id == sys::IOMMU_TYPE1_INFO_CAP_IOVA_RANGE {
            let n = u32_at(off + 8)? as usize;
            let ranges: Option<Vec<_>> = (0..n.min(256))
                .map(|i| Some((u64_at(off + 16 + i * 16)?, u64_at(off + 24 + i * 16)?)))
                .collect();
            return ranges.filter(|r| !r.is_empty());
        }
        off = next as usize;
    }
    None
}

/// Takes ownership of a raw fd returned by an ioctl.
pub(crate) fn owned(fd: libc::c_int) -> OwnedFd {
    // SAFETY: the caller passes a fresh fd the kernel just returned, owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iova_range_capability_is_parsed_from_the_chain() {
        // info (24 bytes) | unrelated cap id 2 at 24 | iova cap at 40 with two ranges
        let mut b = vec![0u8; 40 + 16 + 32];
        let total = b.len() as u32;
        b[0..4].copy_from_slice(&total.to_ne_bytes());
        b[4..8].copy_from_slice(&(sys::IOMMU_INFO_CAPS | 1).to_ne_bytes());
        b[16..20].copy_from_slice(&24u32.to_ne_bytes());
        b[24..26].copy_from_slice(&2u16.to_ne_bytes());
        b[28..32].copy_from_slice(&40u32.to_ne_bytes());
        b[40..42].copy_from_slice(&1u16.to_ne_bytes());
        b[48..52].copy_from_slice(&2u32.to_ne_bytes());
        b[56..64].copy_from_slice(&0u64.to_ne_bytes());
        b[64..72].copy_from_slice(&0xfedf_ffffu64.to_ne_bytes());
        b[72..80].copy_from_slice(&0xfef0_0000u64.to_ne_bytes());
        b[80..88].copy_from_slice(&0x7f_ffff_ffffu64.to_ne_bytes());
        assert_eq!(
            parse_iova_ranges(&b),
            Some(vec![(0, 0xfedf_ffff), (0xfef0_0000, 0x7f_ffff_ffff)])
        );
        // A truncated buffer or a loop in the chain is not a panic.
        assert_eq!(parse_iova_ranges(&b[..60]), None);
        b[28..32].copy_from_slice(&24u32.to_ne_bytes());
        assert_eq!(parse_iova_ranges(&b), None);
    }
}
