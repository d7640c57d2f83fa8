//! Safe VFIO: claim a PCI device from userspace, map its BARs and let it DMA into
//! memory we own, through the IOMMU.
//!
//! `vfio` owns the kernel interface: the [`Container`] (one IOMMU address space, with
//! an IOVA allocator), the groups attached to it, each [`Device`] (regions, config
//! space, BARs mapped as [`MappedBar`], reset), and DMA memory: [`DmaRegion`]
//! (memfd-backed, huge pages when available) and [`PoolMapping`] (a [`pkt::Mempool`]
//! made visible to devices), [`ExternalDma`] (memory of someone else, such as a guest's
//! memory regions, made readable by devices: [`pkt::DmaMap`]). It speaks the raw VFIO ioctls of `linux/vfio.h` directly
//! (the few structs are in `sys`), so every failure maps to an error that tells the
//! user what to do. It must not know any particular NIC: drivers live in `nicdrv`.
//!
//! ```no_run
//! let container = vfio::Container::new()?;
//! let dev = container.open_device("0000:01:00.0")?;
//! dev.enable_bus_master()?;
//! let bar0 = dev.map_bar(0)?;
//! let status = bar0.read32(0x8);
//! let ring = container.alloc_dma(4096)?; // device sees it at ring.iova()
//! # let _ = (status, ring);
//! # Ok::<(), vfio::VfioError>(())
//! ```
//!
//! SR-IOV: the VFIO owner of a PF sets a VF token ([`Device::set_vf_token`], or
//! [`set_vf_token`] before a driver opens the PF itself), and a VF user presents it
//! ([`OpenOptions::vf_token`], QEMU's `vf-token=`); a missing or wrong token is a
//! [`VfioError::VfTokenRequired`] or [`VfioError::VfTokenMismatch`].
//!
//! Interrupts: [`Device::enable_msix`] wires MSI-X vectors to eventfds (vnetp's
//! drivers poll today and do not use them yet). Limits: sparse-mmap BARs (where
//! vfio-pci withholds the MSI-X table page) are refused by [`Device::map_bar`] rather
//! than mapped in pieces; INTx and MSI are not offered.

mod container;
mod device;
mod dma;
mod error;
mod iova;
mod sys;
mod sysfs;
mod token;

pub use container::{Container, OpenOptions, set_vf_token};
pub use device::{Device, MappedBar, Region, pci};
pub use dma::{DmaMemory, DmaRegion, ExternalDma, PoolMapping};
pub use error::{Result, VfioError};
pub use iova::{IOVA_PAGE, IovaAllocator};
pub use sysfs::{PciAddress, Sysfs};
pub use token::VfToken;
