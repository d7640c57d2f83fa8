//! The raw VFIO user API: ioctl numbers and argument structs, from `linux/vfio.h`.
//!
//! Each ioctl is `_IO(VFIO_TYPE, VFIO_BASE + n)` with `VFIO_TYPE = ';'` and
//! `VFIO_BASE = 100`; the argument is passed by pointer and carries its own size
//! (`argsz`), which is how the kernel extends the structs compatibly.

/// `_IO(';', 100 + n)`.
const fn io(n: u64) -> u64 {
    (b';' as u64) << 8 | (100 + n)
}

pub(crate) const VFIO_API_VERSION: i32 = 0;
pub(crate) const GET_API_VERSION: u64 = io(0);
pub(crate) const CHECK_EXTENSION: u64 = io(1);
pub(crate) const SET_IOMMU: u64 = io(2);
pub(crate) const GROUP_GET_STATUS: u64 = io(3);
pub(crate) const GROUP_SET_CONTAINER: u64 = io(4);
pub(crate) const GROUP_GET_DEVICE_FD: u64 = io(6);
pub(crate) const DEVICE_GET_INFO: u64 = io(7);
pub(crate) const DEVICE_GET_REGION_INFO: u64 = io(8);
pub(crate) const DEVICE_GET_IRQ_INFO: u64 = io(9);
pub(crate) const DEVICE_SET_IRQS: u64 = io(10);
pub(crate) const DEVICE_RESET: u64 = io(11);
pub(crate) const IOMMU_GET_INFO: u64 = io(12);
pub(crate) const IOMMU_MAP_DMA: u64 = io(13);
pub(crate) const IOMMU_UNMAP_DMA: u64 = io(14);
pub(crate) const DEVICE_FEATURE: u64 = io(17);

/// `VFIO_DEVICE_FEATURE_SET`: the feature's data follows the header.
pub(crate) const DEVICE_FEATURE_SET: u32 = 1 << 17;
/// `VFIO_DEVICE_FEATURE_PCI_VF_TOKEN`: the 16-byte VF token of an SR-IOV PF.
pub(crate) const DEVICE_FEATURE_PCI_VF_TOKEN: u32 = 0;

/// `struct vfio_device_feature` with the 16-byte UUID of PCI_VF_TOKEN as its data.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct DeviceFeatureVfToken {
    pub argsz: u32,
    pub flags: u32,
    pub uuid: [u8; 16],
}

/// `VFIO_TYPE1v2_IOMMU`: the type1 IOMMU backend with the v2 unmap semantics.
pub(crate) const TYPE1V2_IOMMU: u64 = 3;

pub(crate) const GROUP_FLAGS_VIABLE: u32 = 1 << 0;
pub(crate) const DEVICE_FLAGS_RESET: u32 = 1 << 0;
pub(crate) const DEVICE_FLAGS_PCI: u32 = 1 << 1;

pub(crate) const REGION_INFO_FLAG_READ: u32 = 1 << 0;
pub(crate) const REGION_INFO_FLAG_WRITE: u32 = 1 << 1;
pub(crate) const REGION_INFO_FLAG_MMAP: u32 = 1 << 2;

pub(crate) const DMA_MAP_FLAG_READ: u32 = 1 << 0;
pub(crate) const DMA_MAP_FLAG_WRITE: u32 = 1 << 1;

pub(crate) const IOMMU_INFO_CAPS: u32 = 1 << 1;
/// `VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE`: the IOVA ranges the IOMMU can map.
pub(crate) const IOMMU_TYPE1_INFO_CAP_IOVA_RANGE: u16 = 1;

/// `VFIO_PCI_CONFIG_REGION_INDEX`: regions 0..=5 are the BARs, 6 the ROM, 7 config space.
pub(crate) const PCI_CONFIG_REGION_INDEX: u32 = 7;

/// `struct vfio_group_status`.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct GroupStatus {
    pub argsz: u32,
    pub flags: u32,
}

/// `struct vfio_device_info`.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct DeviceInfo {
    pub argsz: u32,
    pub flags: u32,
    pub num_regions: u32,
    pub num_irqs: u32,
    pub cap_offset: u32,
    pub pad: u32,
}

/// `struct vfio_region_info`.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct RegionInfo {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub cap_offset: u32,
    pub size: u64,
    pub offset: u64,
}

/// `struct vfio_iommu_type1_dma_map`.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct DmaMap {
    pub argsz: u32,
    pub flags: u32,
    pub vaddr: u64,
    pub iova: u64,
    pub size: u64,
}

/// `struct vfio_iommu_type1_dma_unmap` (without the trailing bitmap data).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct DmaUnmap {
    pub argsz: u32,
    pub flags: u32,
    pub iova: u64,
    pub size: u64,
}

/// `struct vfio_iommu_type1_info`; capabilities follow it in the same buffer.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IommuInfo {
    pub argsz: u32,
    pub flags: u32,
    pub iova_pgsizes: u64,
    pub cap_offset: u32,
    pub pad: u32,
}

/// `VFIO_PCI_MSIX_IRQ_INDEX`.
pub(crate) const PCI_MSIX_IRQ_INDEX: u32 = 2;
pub(crate) const IRQ_INFO_EVENTFD: u32 = 1 << 0;
pub(crate) const IRQ_SET_DATA_NONE: u32 = 1 << 0;
pub(crate) const IRQ_SET_DATA_EVENTFD: u32 = 1 << 2;
pub(crate) const IRQ_SET_ACTION_TRIGGER: u32 = 1 << 5;

/// `struct vfio_irq_info`.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct IrqInfo {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub count: u32,
}

/// `struct vfio_irq_set` header; `count` 32-bit eventfds follow it for DATA_EVENTFD.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IrqSet {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub start: u32,
    pub count: u32,
}
