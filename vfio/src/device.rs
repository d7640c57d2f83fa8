//! [`Device`]: one PCI function opened through VFIO: its regions, config space, BARs
//! mapped into this process, and reset.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use volatile::VolatilePtr;

use crate::container::{Container, owned};
use crate::sys;
use crate::sysfs::{PciAddress, Sysfs};
use crate::token::VfToken;
use crate::{Result, VfioError};

/// PCI config space offsets (PCI Local Bus Specification 3.0, 6.1).
pub mod pci {
    /// Vendor ID (16 bits).
    pub const VENDOR_ID: u64 = 0x00;
    /// Device ID (16 bits).
    pub const DEVICE_ID: u64 = 0x02;
    /// Command register (16 bits).
    pub const COMMAND: u64 = 0x04;
    /// Command: respond to memory space accesses (BARs).
    pub const COMMAND_MEMORY: u16 = 1 << 1;
    /// Command: the device may master the bus (DMA).
    pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
}

/// What VFIO reports about one region of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Region index (0..=5 BARs, 6 ROM, 7 config space for PCI devices).
    pub index: u32,
    /// Size in bytes (0 when the region is absent).
    pub size: u64,
    /// Offset of the region in the device fd, for pread/pwrite/mmap.
    pub offset: u64,
    /// `VFIO_REGION_INFO_FLAG_*` bits.
    pub flags: u32,
}

impl Region {
    /// The region can be read.
    pub fn readable(&self) -> bool {
        self.flags & sys::REGION_INFO_FLAG_READ != 0
    }

    /// The region can be written.
    pub fn writable(&self) -> bool {
        self.flags & sys::REGION_INFO_FLAG_WRITE != 0
    }

    /// The region can be mapped into this process.
    pub fn mappable(&self) -> bool {
        self.flags & sys::REGION_INFO_FLAG_MMAP != 0
    }
}

/// A PCI function claimed through VFIO.
pub struct Device {
    fd: Arc<OwnedFd>,
    bdf: PciAddress,
    group: u32,
    flags: u32,
    num_regions: u32,
    num_irqs: u32,
    config: Region,
    // Dropped after `fd`: the group and container outlive the device fd.
    _group_fd: Arc<OwnedFd>,
    _container: Container,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("bdf", &self.bdf)
            .field("group", &self.group)
            .field("regions", &self.num_regions)
            .field("irqs", &self.num_irqs)
            .finish()
    }
}

impl Device {
    pub(crate) fn open(
        container: Container,
        group_fd: Arc<OwnedFd>,
        group: u32,
        bdf: PciAddress,
        vf_token: Option<&VfToken>,
        sysfs: &Sysfs,
    ) -> Result<Self> {
        let name = std::ffi::CString::new(device_name(&bdf, vf_token))
            .map_err(|_| VfioError::BadAddress(bdf.to_string()))?;
        // SAFETY: GET_DEVICE_FD reads the NUL-terminated name; it returns a new fd or -1.
        let fd = unsafe {
            libc::ioctl(
                group_fd.as_raw_fd(),
                sys::GROUP_GET_DEVICE_FD,
                name.as_ptr(),
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            let role = SriovRole::of(sysfs, &bdf);
            return Err(open_error(&bdf, e, vf_token.is_some(), &role));
        }
        let fd = Arc::new(owned(fd));
        let mut info = sys::DeviceInfo {
            argsz: size_of::<sys::DeviceInfo>() as u32,
            ..Default::default()
        };
        // SAFETY: DEVICE_GET_INFO writes into `info`, a live struct of its declared size.
        if unsafe { libc::ioctl(fd.as_raw_fd(), sys::DEVICE_GET_INFO, &mut info) } < 0 {
            return Err(VfioError::sys(
                format!("{bdf}: get device info"),
                io::Error::last_os_error(),
            ));
        }
        if info.flags & sys::DEVICE_FLAGS_PCI == 0 {
            return Err(VfioError::Region {
                bdf: bdf.to_string(),
                what: "not a PCI device (vfio-platform devices are not supported)".into(),
            });
        }
        let config = region_info(&fd, &bdf, sys::PCI_CONFIG_REGION_INDEX)?;
        let dev = Self {
            fd,
            bdf,
            group,
            flags: info.flags,
            num_regions: info.num_regions,
            num_irqs: info.num_irqs,
            config,
            _group_fd: group_fd,
            _container: container,
        };
        tracing::debug!(device = %dev.bdf, group, regions = dev.num_regions, irqs = dev.num_irqs, "VFIO device open");
        Ok(dev)
    }

    /// The device's PCI address.
    pub fn address(&self) -> &PciAddress {
        &self.bdf
    }

    /// The device's IOMMU group.
    pub fn group(&self) -> u32 {
        self.group
    }

    /// Number of regions (BARs, ROM, config space, device-specific).
    pub fn num_regions(&self) -> u32 {
        self.num_regions
    }

    /// Number of interrupt kinds (INTx, MSI, MSI-X, ...).
    pub fn num_irqs(&self) -> u32 {
        self.num_irqs
    }

    /// Information about region `index`.
    pub fn region(&self, index: u32) -> Result<Region> {
        if index >= self.num_regions {
            return Err(VfioError::Region {
                bdf: self.bdf.to_string(),
                what: format!(
                    "region {index} does not exist (the device has {})",
                    self.num_regions
                ),
            });
        }
        region_info(&self.fd, &self.bdf, index)
    }

    /// Reads config space at `offset` into `buf`.
    pub fn read_config(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.config_range(offset, buf.len())?;
        // SAFETY: pread writes at most `buf.len()` bytes into `buf`.
        let n = unsafe {
            libc::pread(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                (self.config.offset + offset) as libc::off_t,
            )
        };
        if n != buf.len() as isize {
            return Err(self.config_error("read", offset, n));
        }
        Ok(())
    }

    /// Writes `buf` to config space at `offset`.
    pub fn write_config(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.config_range(offset, buf.len())?;
        // SAFETY: pwrite reads `buf.len()` bytes from `buf`.
        let n = unsafe {
            libc::pwrite(
                self.fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                (self.config.offset + offset) as libc::off_t,
            )
        };
        if n != buf.len() as isize {
            return Err(self.config_error("write", offset, n));
        }
        Ok(())
    }

    /// Reads a 16-bit config register.
    pub fn read_config_u16(&self, offset: u64) -> Result<u16> {
        let mut b = [0u8; 2];
        self.read_config(offset, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// Writes a 16-bit config register.
    pub fn write_config_u16(&self, offset: u64, value: u16) -> Result<()> {
        self.write_config(offset, &value.to_le_bytes())
    }

    /// The PCI vendor and device IDs.
    pub fn ids(&self) -> Result<(u16, u16)> {
        Ok((
            self.read_config_u16(pci::VENDOR_ID)?,
            self.read_config_u16(pci::DEVICE_ID)?,
        ))
    }

    /// Turns on memory decoding and bus mastering, which BAR access and DMA need.
    pub fn enable_bus_master(&self) -> Result<()> {
        let cmd = self.read_config_u16(pci::COMMAND)?;
        let want = cmd | pci::COMMAND_MEMORY | pci::COMMAND_BUS_MASTER;
        if want != cmd {
            self.write_config_u16(pci::COMMAND, want)?;
        }
        Ok(())
    }

    /// True when VFIO can reset the device (FLR, PM or bus reset).
    pub fn can_reset(&self) -> bool {
        self.flags & sys::DEVICE_FLAGS_RESET != 0
    }

    /// Resets the device. Config space command bits are cleared by a reset: call
    /// [`Device::enable_bus_master`] again after it.
    pub fn reset(&self) -> Result<()> {
        if !self.can_reset() {
            return Err(VfioError::NoReset(self.bdf.to_string()));
        }
        // SAFETY: DEVICE_RESET takes no argument.
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), sys::DEVICE_RESET) } < 0 {
            return Err(VfioError::sys(
                format!("{}: reset", self.bdf),
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Sets the VF token of this SR-IOV PF (`VFIO_DEVICE_FEATURE` SET | PCI_VF_TOKEN):
    /// from now on the kernel opens its VFs only for users that present the same
    /// token (QEMU's `vf-token=`, [`crate::OpenOptions::vf_token`]). VFs already open
    /// stay open. The kernel never reads a token back, so keep it to hand it out.
    pub fn set_vf_token(&self, token: &VfToken) -> Result<()> {
        let arg = sys::DeviceFeatureVfToken {
            argsz: size_of::<sys::DeviceFeatureVfToken>() as u32,
            flags: sys::DEVICE_FEATURE_SET | sys::DEVICE_FEATURE_PCI_VF_TOKEN,
            uuid: *token.as_bytes(),
        };
        // SAFETY: DEVICE_FEATURE reads `argsz` bytes from `arg`: the header and the
        // 16-byte UUID, a live struct of exactly that size.
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), sys::DEVICE_FEATURE, &arg) } < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ENOTTY) => VfioError::VfTokenUnsupported {
                    bdf: self.bdf.to_string(),
                },
                _ => VfioError::sys(format!("{}: set the VF token", self.bdf), e),
            });
        }
        tracing::debug!(device = %self.bdf, "VF token set");
        Ok(())
    }

    /// Maps BAR `index` (0..=5) into this process for MMIO.
    pub fn map_bar(&self, index: u32) -> Result<MappedBar> {
        let region = self.region(index)?;
        let bad = |what: String| VfioError::Region {
            bdf: self.bdf.to_string(),
            what,
        };
        if index > 5 {
            return Err(bad(format!("region {index} is not a BAR")));
        }
        if region.size == 0 {
            return Err(bad(format!("BAR{index} is not implemented by the device")));
        }
        if !region.mappable() {
            return Err(bad(format!(
                "BAR{index} cannot be mmapped (an I/O port BAR, or vfio-pci refuses it)"
            )));
        }
        let len = region.size as usize;
        // SAFETY: a new shared mapping of the device fd at the region's offset; it aliases
        // no Rust object and is unmapped only in `MappedBar::drop`.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.fd.as_raw_fd(),
                region.offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(VfioError::sys(
                format!("{}: mmap BAR{index}", self.bdf),
                io::Error::last_os_error(),
            ));
        }
        let ptr = NonNull::new(p.cast::<u8>())
            .ok_or_else(|| bad(format!("BAR{index} mapped at address 0")))?;
        Ok(MappedBar {
            ptr,
            len,
            _fd: Arc::clone(&self.fd),
        })
    }

    /// How many MSI-X vectors the device offers (0 without MSI-X).
    pub fn msix_vectors(&self) -> Result<u32> {
        let mut info = sys::IrqInfo {
            argsz: size_of::<sys::IrqInfo>() as u32,
            index: sys::PCI_MSIX_IRQ_INDEX,
            ..Default::default()
        };
        // SAFETY: GET_IRQ_INFO writes into `info`, a live struct of its declared size.
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), sys::DEVICE_GET_IRQ_INFO, &mut info) } < 0 {
            return Err(VfioError::sys(
                format!("{}: MSI-X info", self.bdf),
                io::Error::last_os_error(),
            ));
        }
        Ok(if info.flags & sys::IRQ_INFO_EVENTFD != 0 {
            info.count
        } else {
            0
        })
    }

    /// Enables MSI-X vectors `0..vectors`, each signalling its own eventfd (returned
    /// in vector order, non-blocking): reading one returns how often it fired.
    pub fn enable_msix(&self, vectors: u32) -> Result<Vec<OwnedFd>> {
        let max = self.msix_vectors()?;
        if vectors == 0 || vectors > max {
            return Err(VfioError::Region {
                bdf: self.bdf.to_string(),
                what: format!("cannot enable {vectors} MSI-X vectors: the device offers {max}"),
            });
        }
        let mut fds = Vec::with_capacity(vectors as usize);
        for _ in 0..vectors {
            // SAFETY: eventfd returns a new fd or -1.
            let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
            if fd < 0 {
                return Err(VfioError::sys("eventfd", io::Error::last_os_error()));
            }
            fds.push(owned(fd));
        }
        let head = size_of::<sys::IrqSet>();
        let argsz = head + 4 * vectors as usize;
        // u32 words keep the header's alignment; the fds follow it as i32s.
        let mut buf = vec![0u32; argsz.div_ceil(4)];
        let set = sys::IrqSet {
            argsz: argsz as u32,
            flags: sys::IRQ_SET_DATA_EVENTFD | sys::IRQ_SET_ACTION_TRIGGER,
            index: sys::PCI_MSIX_IRQ_INDEX,
            start: 0,
            count: vectors,
        };
        buf[..5].copy_from_slice(&[set.argsz, set.flags, set.index, set.start, set.count]);
        for (i, fd) in fds.iter().enumerate() {
            buf[head / 4 + i] = fd.as_raw_fd() as u32;
        }
        // SAFETY: SET_IRQS reads `argsz` bytes from `buf`, which is that long and laid
        // out as `struct vfio_irq_set` followed by `count` fds.
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), sys::DEVICE_SET_IRQS, buf.as_ptr()) } < 0 {
            return Err(VfioError::sys(
                format!("{}: enable MSI-X", self.bdf),
                io::Error::last_os_error(),
            ));
        }
        Ok(fds)
    }

    /// Signals MSI-X vector `vector`'s eventfd from the kernel side, as if the device
    /// had fired it (VFIO's trigger without data): checks the wiring end to end
    /// without the device's cooperation.
    pub fn trigger_msix(&self, vector: u32) -> Result<()> {
        let set = sys::IrqSet {
            argsz: size_of::<sys::IrqSet>() as u32,
            flags: sys::IRQ_SET_DATA_NONE | sys::IRQ_SET_ACTION_TRIGGER,
            index: sys::PCI_MSIX_IRQ_INDEX,
            start: vector,
            count: 1,
        };
        // SAFETY: SET_IRQS reads `set`, a live struct of its declared size.
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), sys::DEVICE_SET_IRQS, &set) } < 0 {
            return Err(VfioError::sys(
                format!("{}: trigger MSI-X vector {vector}", self.bdf),
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Disables every MSI-X vector.
    pub fn disable_msix(&self) -> Result<()> {
        let set = sys::IrqSet {
            argsz: size_of::<sys::IrqSet>() as u32,
            flags: sys::IRQ_SET_DATA_NONE | sys::IRQ_SET_ACTION_TRIGGER,
            index: sys::PCI_MSIX_IRQ_INDEX,
            start: 0,
            count: 0,
        };
        // SAFETY: SET_IRQS reads `set`, a live struct of its declared size.
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), sys::DEVICE_SET_IRQS, &set) } < 0 {
            return Err(VfioError::sys(
                format!("{}: disable MSI-X", self.bdf),
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    fn config_range(&self, offset: u64, len: usize) -> Result<()> {
        if offset.saturating_add(len as u64) > self.config.size {
            return Err(VfioError::Region {
                bdf: self.bdf.to_string(),
                what: format!(
                    "config access at {offset:#x}+{len} is past the {}-byte config space",
                    self.config.size
                ),
            });
        }
        Ok(())
    }

    fn config_error(&self, op: &str, offset: u64, n: isize) -> VfioError {
        let e = if n < 0 {
            io::Error::last_os_error()
        } else {
            io::Error::other(format!("short {op} of {n} bytes"))
        };
        VfioError::sys(format!("{}: config {op} at {offset:#x}", self.bdf), e)
    }
}

/// The name GROUP_GET_DEVICE_FD matches: the address, then the VF token as an option
/// (vfio_pci_core_match: `"0000:01:10.0 vf_token=<uuid>"`).
fn device_name(bdf: &PciAddress, vf_token: Option<&VfToken>) -> String {
    match vf_token {
        Some(t) => format!("{bdf} vf_token={t}"),
        None => bdf.to_string(),
    }
}

/// What the device is to SR-IOV, for explaining a refused open.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SriovRole {
    /// A VF; its PF and the PF's driver.
    Vf {
        pf: PciAddress,
        pf_driver: Option<String>,
    },
    /// An SR-IOV PF.
    Pf,
    /// Neither.
    Other,
}

impl SriovRole {
    fn of(sysfs: &Sysfs, bdf: &PciAddress) -> Self {
        if let Some(pf) = sysfs.physfn(bdf) {
            let pf_driver = sysfs.driver(&pf);
            Self::Vf { pf, pf_driver }
        } else if sysfs.is_sriov_pf(bdf) {
            Self::Pf
        } else {
            Self::Other
        }
    }
}

/// The error for a refused GROUP_GET_DEVICE_FD, from the kernel's errno, whether we
/// gave a VF token, and the device's SR-IOV role (vfio_pci_validate_vf_token:
/// EACCES for a missing or wrong token, EINVAL for a token where none applies).
fn open_error(bdf: &PciAddress, e: io::Error, token: bool, role: &SriovRole) -> VfioError {
    let bdf_s = bdf.to_string();
    match (e.raw_os_error(), role) {
        (Some(libc::EBUSY), _) => VfioError::Busy { what: bdf_s },
        (Some(libc::EACCES), SriovRole::Vf { pf, .. }) if token => VfioError::VfTokenMismatch {
            bdf: bdf_s,
            pf: pf.to_string(),
        },
        (Some(libc::EACCES), SriovRole::Vf { pf, .. }) => VfioError::VfTokenRequired {
            bdf: bdf_s,
            pf: pf.to_string(),
        },
        (Some(libc::EACCES), SriovRole::Pf) => VfioError::PfVfTokenInUse { bdf: bdf_s },
        (Some(libc::EINVAL), SriovRole::Vf { pf, pf_driver }) if token => {
            VfioError::VfTokenNotApplicable {
                bdf: bdf_s,
                why: format!(
                    "its PF {pf} is bound to {}, not vfio-pci, and only a VFIO-owned PF has VF tokens: open the VF without one",
                    pf_driver.as_deref().unwrap_or("no driver")
                ),
            }
        }
        (Some(libc::EINVAL), SriovRole::Other) if token => VfioError::VfTokenNotApplicable {
            bdf: bdf_s,
            why: "it is neither an SR-IOV PF nor a VF: open it without a token".into(),
        },
        _ => VfioError::sys(format!("{bdf}: get device fd"), e),
    }
}

fn region_info(fd: &OwnedFd, bdf: &PciAddress, index: u32) -> Result<Region> {
    let mut r = sys::RegionInfo {
        argsz: size_of::<sys::RegionInfo>() as u32,
        index,
        ..Default::default()
    };
    // SAFETY: GET_REGION_INFO writes into `r`, a live struct of its declared size.
    if unsafe { libc::ioctl(fd.as_raw_fd(), sys::DEVICE_GET_REGION_INFO, &mut r) } < 0 {
        return Err(VfioError::sys(
            format!("{bdf}: region {index} info"),
            io::Error::last_os_error(),
        ));
    }
    Ok(Region {
        index,
        size: r.size,
        offset: r.offset,
        flags: r.flags,
    })
}

/// A BAR mapped into this process: 32-bit MMIO registers by byte offset.
///
/// Reads and writes are volatile and bounds-checked; an offset outside the BAR or not
/// 4-byte aligned reads as all-ones (what PCI returns for an unclaimed access) and
/// writes nothing, so a driver bug cannot touch memory outside the BAR.
pub struct MappedBar {
    ptr: NonNull<u8>,
    len: usize,
    _fd: Arc<OwnedFd>,
}

impl std::fmt::Debug for MappedBar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedBar").field("len", &self.len).finish()
    }
}

// SAFETY: the mapping is owned by this value; MMIO registers are accessed with single
// volatile 32-bit operations, which the device serialises, so moving the mapping or
// sharing it between threads cannot break memory safety.
unsafe impl Send for MappedBar {}
// SAFETY: see `Send`.
unsafe impl Sync for MappedBar {}

impl MappedBar {
    /// Size of the BAR in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: a mapped BAR has a size.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn in_range(&self, offset: usize) -> bool {
        offset.is_multiple_of(4) && offset.checked_add(4).is_some_and(|end| end <= self.len)
    }

    /// The register at byte `offset` as a volatile pointer (the `volatile` crate), or
    /// `None` outside the BAR or unaligned.
    #[inline]
    fn register(&self, offset: usize) -> Option<VolatilePtr<'_, u32>> {
        if !self.in_range(offset) {
            return None;
        }
        // SAFETY: `offset` is 4-byte aligned and the 4 bytes lie inside the mapping (just
        // checked), which lives as long as `self`, so the pointer is valid, aligned and
        // non-null for the borrow's lifetime; MMIO is only ever touched volatilely.
        Some(unsafe {
            VolatilePtr::new(NonNull::new_unchecked(
                self.ptr.as_ptr().add(offset).cast::<u32>(),
            ))
        })
    }

    /// Reads the 32-bit register at byte `offset` (all ones outside the BAR, as a bus
    /// read of an absent device returns).
    #[inline]
    pub fn read32(&self, offset: usize) -> u32 {
        self.register(offset).map_or(u32::MAX, VolatilePtr::read)
    }

    /// Writes the 32-bit register at byte `offset` (ignored outside the BAR).
    #[inline]
    pub fn write32(&self, offset: usize, value: u32) {
        if let Some(r) = self.register(offset) {
            r.write(value);
        }
    }
}

impl Drop for MappedBar {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `map_bar`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno(n: i32) -> io::Error {
        io::Error::from_raw_os_error(n)
    }

    #[test]
    fn refused_opens_name_the_vf_token_problem() {
        let vf = PciAddress::parse("0000:01:10.0").unwrap();
        let pf = PciAddress::parse("0000:01:00.0").unwrap();
        let vf_role = SriovRole::Vf {
            pf: pf.clone(),
            pf_driver: Some("vfio-pci".into()),
        };
        let e = open_error(&vf, errno(libc::EACCES), false, &vf_role);
        assert!(matches!(e, VfioError::VfTokenRequired { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("VF token required"), "{msg}");
        assert!(
            msg.contains("-device vfio-pci,host=0000:01:10.0,vf-token=<uuid>"),
            "{msg}"
        );

        let e = open_error(&vf, errno(libc::EACCES), true, &vf_role).to_string();
        assert!(
            e.contains("the VF token does not match the one the PF owner set on 0000:01:00.0"),
            "{e}"
        );

        let e = open_error(&pf, errno(libc::EACCES), false, &SriovRole::Pf).to_string();
        assert!(e.contains("VFs are in use by another VFIO user"), "{e}");

        let kernel_pf = SriovRole::Vf {
            pf: pf.clone(),
            pf_driver: Some("igb".into()),
        };
        let e = open_error(&vf, errno(libc::EINVAL), true, &kernel_pf).to_string();
        assert!(e.contains("bound to igb, not vfio-pci"), "{e}");
        assert!(e.contains("open the VF without one"), "{e}");

        let e = open_error(&pf, errno(libc::EINVAL), true, &SriovRole::Other).to_string();
        assert!(e.contains("neither an SR-IOV PF nor a VF"), "{e}");

        let e = open_error(&vf, errno(libc::EBUSY), true, &vf_role);
        assert!(matches!(e, VfioError::Busy { .. }), "{e}");
        // EACCES on a device SR-IOV has nothing to do with stays the kernel's error.
        let e = open_error(&pf, errno(libc::EACCES), false, &SriovRole::Other);
        assert!(matches!(e, VfioError::Sys { .. }), "{e}");
    }

    #[test]
    fn the_vf_token_travels_as_an_option_after_the_device_name() {
        let vf = PciAddress::parse("1:10.0").unwrap();
        let t = VfToken::parse("bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3").unwrap();
        assert_eq!(device_name(&vf, None), "0000:01:10.0");
        assert_eq!(
            device_name(&vf, Some(&t)),
            "0000:01:10.0 vf_token=bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3"
        );
    }

    #[test]
    fn the_vf_token_feature_argument_is_header_plus_uuid() {
        // struct vfio_device_feature (argsz, flags) + uuid_t: what the kernel checks
        // argsz against.
        assert_eq!(size_of::<sys::DeviceFeatureVfToken>(), 8 + 16);
        assert_eq!(sys::DEVICE_FEATURE, 0x3b75);
    }
}
