//! [`VfioError`]: why a device could not be claimed or mapped, phrased so the user
//! knows what to do next.

use std::io;
use std::path::PathBuf;

/// Errors of the VFIO layer.
#[derive(Debug, thiserror::Error)]
pub enum VfioError {
    /// The PCI address is not `DDDD:BB:DD.F`.
    #[error(
        "{0:?} is not a PCI address: write it as domain:bus:device.function, e.g. 0000:01:00.0 (see `lspci -D`)"
    )]
    BadAddress(String),
    /// No such PCI function.
    #[error("no PCI device {bdf} (no {path}): check the address with `lspci -D`")]
    NoDevice {
        /// The address asked for.
        bdf: String,
        /// The sysfs path that is missing.
        path: PathBuf,
    },
    /// The device has no IOMMU group: the IOMMU is off.
    #[error(
        "{bdf} has no IOMMU group: the IOMMU is off: boot with intel_iommu=on (or amd_iommu=on) and enable VT-d/AMD-Vi in the firmware"
    )]
    IommuOff {
        /// The device.
        bdf: String,
    },
    /// The device is bound to another driver.
    #[error(
        "{bdf} is bound to {driver}, not vfio-pci: bind it first (`vnetp bind {bdf}`, or driver_override + drivers_probe)"
    )]
    NotBound {
        /// The device.
        bdf: String,
        /// Its current driver ("no driver" when unbound).
        driver: String,
    },
    /// The VFIO modules are not loaded.
    #[error("{path}: VFIO is not available: load it with `modprobe vfio-pci` ({source})")]
    NoVfio {
        /// The node that could not be opened.
        path: PathBuf,
        /// The kernel's error.
        source: io::Error,
    },
    /// Access to a VFIO node denied.
    #[error("{path}: permission denied: run as root or give this user the group's device node")]
    Permission {
        /// The node.
        path: PathBuf,
    },
    /// The group or device is already open elsewhere.
    #[error(
        "{what}: device busy: another process (a VM, another vnetp) holds it; stop it or pick another device"
    )]
    Busy {
        /// What was busy.
        what: String,
    },
    /// The group has members not bound to vfio-pci.
    #[error(
        "IOMMU group {group} not viable: bind {} too (every device of a group must be on vfio-pci or unbound)", others.join(", ")
    )]
    NotViable {
        /// The group.
        group: u32,
        /// Members still bound to another driver.
        others: Vec<String>,
    },
    /// The kernel speaks another VFIO API.
    #[error("VFIO API version {0} is not the supported version 0: this kernel is not supported")]
    ApiVersion(i32),
    /// No type1 v2 IOMMU backend.
    #[error(
        "the VFIO container has no type1v2 IOMMU backend: load vfio_iommu_type1 (`modprobe vfio_iommu_type1`)"
    )]
    NoType1,
    /// A DMA mapping could not be made.
    #[error(
        "DMA map of {size:#x} bytes at IOVA {iova:#x}: {source}: raise the locked-memory limit (`ulimit -l`) or map less"
    )]
    DmaMap {
        /// The IOVA asked for.
        iova: u64,
        /// The size asked for.
        size: u64,
        /// The kernel's error.
        source: io::Error,
    },
    /// An [`crate::ExternalDma`] already holds as many mappings as it was allowed.
    #[error(
        "{held} external DMA mappings already held (the limit): unmap a region first or raise the limit"
    )]
    TooManyMappings {
        /// Mappings held, the limit.
        held: usize,
    },
    /// The IOVA space has no free range this large.
    #[error("no free IOVA range of {0:#x} bytes: unmap something or map smaller regions")]
    IovaExhausted(u64),
    /// A region index or access outside the device's regions.
    #[error("{bdf}: {what}")]
    Region {
        /// The device.
        bdf: String,
        /// What is wrong.
        what: String,
    },
    /// Memory for DMA could not be allocated.
    #[error("cannot allocate {bytes} bytes of DMA memory: {source}")]
    DmaAlloc {
        /// The size asked for.
        bytes: usize,
        /// The kernel's error.
        source: io::Error,
    },
    /// The device cannot be reset through VFIO.
    #[error(
        "{0}: the device offers no reset (no FLR or PM reset): reset it by the device's own means"
    )]
    NoReset(String),
    /// A VF token that is not a UUID.
    #[error(
        "{0:?} is not a VF token: write a UUID in the 8-4-4-4-12 hex form, e.g. bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3 (`uuidgen` makes one)"
    )]
    BadVfToken(String),
    /// A VF whose PF a VFIO user owns was opened without the VF token.
    #[error(
        "{bdf}: VF token required: its PF {pf} is owned by a VFIO user (vnetp), so the VF opens only with the VF token that user set: pass it (QEMU: `-device vfio-pci,host={bdf},vf-token=<uuid>`; vnetp logs the line at start, or pin the token with `vf_token` in its [host])"
    )]
    VfTokenRequired {
        /// The VF.
        bdf: String,
        /// Its PF.
        pf: String,
    },
    /// A VF was opened with a token other than the one its PF's owner set.
    #[error(
        "{bdf}: the VF token does not match the one the PF owner set on {pf}: use the token from vnetp's log (`vf-token=` in its QEMU line) or the `vf_token` in its [host]"
    )]
    VfTokenMismatch {
        /// The VF.
        bdf: String,
        /// Its PF.
        pf: String,
    },
    /// A PF whose VFs are open elsewhere was opened without their VF token.
    #[error(
        "{bdf}: its VFs are in use by another VFIO user (a VM) with a VF token: open the PF with that same token (`vf_token` in vnetp's [host]), or stop the VF users first"
    )]
    PfVfTokenInUse {
        /// The PF.
        bdf: String,
    },
    /// A VF token was given where the kernel takes none.
    #[error("{bdf}: a VF token does not apply here: {why}")]
    VfTokenNotApplicable {
        /// The device.
        bdf: String,
        /// Why, and what to do.
        why: String,
    },
    /// The device has no VF token to set.
    #[error(
        "{bdf}: cannot set a VF token: it is not an SR-IOV PF bound to vfio-pci (or the kernel predates Linux 5.7): set it on the PF whose VFs you hand out, with vfio-pci loaded with enable_sriov=1"
    )]
    VfTokenUnsupported {
        /// The device.
        bdf: String,
    },
    /// Any other failed system call.
    #[error("{what}: {source}")]
    Sys {
        /// The call and its object.
        what: String,
        /// The kernel's error.
        source: io::Error,
    },
}

impl VfioError {
    pub(crate) fn sys(what: impl Into<String>, source: io::Error) -> Self {
        Self::Sys {
            what: what.into(),
            source,
        }
    }
}

/// Result of the VFIO layer.
pub type Result<T> = std::result::Result<T, VfioError>;
