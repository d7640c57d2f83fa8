//! The 82576 over VFIO: [`open_vfio`] claims the PF, maps BAR0 and the packet pool,
//! and hands them to [`IgbPort::new`]; [`open_vf_vfio`] does the same for a VF.

use std::ptr::NonNull;
use std::sync::Arc;

use pkt::Mempool;

use super::{
    Dma, IGB_PF_DEVICE_IDS, IgbConfig, IgbError, IgbPort, IgbVfConfig, IgbVfPort, RingMemory,
};

/// External memory regions (a guest's) a port's container maps at most: QEMU's
/// vhost-user backends see up to 32 memory slots (VHOST_USER_MAX_RAM_SLOTS), and a
/// port may serve a few guests.
pub const EXTERNAL_DMA_MAPPINGS: usize = 64;

/// [`Dma`] through a VFIO container: rings in memfd memory mapped at fresh IOVAs, the
/// packet pool mapped whole, and external memory mapped read-only on request
/// ([`Dma::dma_map`]).
pub struct VfioDma {
    container: vfio::Container,
    pool: vfio::PoolMapping,
    external: Arc<vfio::ExternalDma>,
    // Keeps the device fd open for as long as the port lives.
    _device: vfio::Device,
}

impl VfioDma {
    /// DMA for a device opened through `container`, whose packet pool is mapped as
    /// `pool`; holds `device` open for as long as the port lives.
    pub fn new(container: vfio::Container, pool: vfio::PoolMapping, device: vfio::Device) -> Self {
        let external = Arc::new(container.external_dma(EXTERNAL_DMA_MAPPINGS));
        Self {
            container,
            pool,
            external,
            _device: device,
        }
    }
}

impl std::fmt::Debug for VfioDma {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfioDma")
            .field("pool_iova", &format_args!("{:#x}", self.pool.iova()))
            .finish()
    }
}

impl Dma for VfioDma {
    fn alloc_ring(&mut self, bytes: usize) -> Result<RingMemory, IgbError> {
        let region = self.container.alloc_dma(bytes)?;
        let ptr = NonNull::new(region.memory().as_ptr())
            .ok_or_else(|| IgbError::Config("DMA memory mapped at address 0".into()))?;
        let iova = region.iova();
        // SAFETY: the region is at least `bytes` long (page-rounded), page-aligned,
        // zeroed, used only by this ring, and kept alive by the box we hand over.
        Ok(unsafe { RingMemory::new(ptr, bytes, iova, Box::new(region)) })
    }

    #[inline]
    fn iova_of(&self, p: *const u8) -> Option<u64> {
        self.pool.iova_of(p)
    }

    fn dma_map(&self) -> Option<Arc<dyn pkt::DmaMap>> {
        Some(self.external.clone())
    }
}

/// Claims the 82576 PF at `bdf` (bound to vfio-pci) and brings it up as a port whose
/// frames live in `pool`.
pub fn open_vfio(
    bdf: &str,
    pool: Mempool,
    cfg: IgbConfig,
) -> Result<IgbPort<vfio::MappedBar, VfioDma>, IgbError> {
    open_vfio_with(bdf, pool, cfg, &vfio::OpenOptions::new())
}

/// [`open_vfio`] with VFIO open options: a PF whose VFs a guest may hold open must be
/// opened with the VF token they were given ([`vfio::OpenOptions::vf_token`]); opening
/// it with a token while no VF is in use also sets that token.
pub fn open_vfio_with(
    bdf: &str,
    pool: Mempool,
    cfg: IgbConfig,
    options: &vfio::OpenOptions,
) -> Result<IgbPort<vfio::MappedBar, VfioDma>, IgbError> {
    let container = vfio::Container::new()?;
    let device = container.open_device_with_options(bdf, options)?;
    let (vendor, dev_id) = device.ids()?;
    if vendor != 0x8086 || !IGB_PF_DEVICE_IDS.contains(&dev_id) {
        return Err(IgbError::NotIgb {
            bdf: bdf.to_owned(),
            vendor,
            device: dev_id,
        });
    }
    if device.can_reset()
        && let Err(e) = device.reset()
    {
        // CTRL.RST in the init sequence resets the MAC anyway.
        tracing::warn!(device = bdf, error = %e, "function reset failed; relying on the device reset");
    }
    device.enable_bus_master()?;
    let bar = device.map_bar(0)?;
    let pool_map = container.map_pool(&pool)?;
    let name = format!("igb:{}", device.address());
    let dma = VfioDma::new(container, pool_map, device);
    IgbPort::new(&name, bar, dma, pool, cfg)
}

/// PCI device ID of the 82576 virtual function.
pub const IGB_VF_DEVICE_ID: u16 = 0x10ca;

/// Claims the 82576 VF at `bdf` (bound to vfio-pci; its PF driven by Linux igb with the
/// netdev up, or by vnetp with SR-IOV configured) and brings it up as a port.
pub fn open_vf_vfio(
    bdf: &str,
    pool: Mempool,
    cfg: IgbVfConfig,
) -> Result<IgbVfPort<vfio::MappedBar, VfioDma>, IgbError> {
    open_vf_vfio_with(bdf, pool, cfg, &vfio::OpenOptions::new())
}

/// [`open_vf_vfio`] with VFIO open options: a VF whose PF is owned by a VFIO user
/// (vnetp) opens only with the VF token that owner set ([`vfio::OpenOptions::vf_token`]),
/// as QEMU's `vfio-pci,vf-token=` does.
pub fn open_vf_vfio_with(
    bdf: &str,
    pool: Mempool,
    cfg: IgbVfConfig,
    options: &vfio::OpenOptions,
) -> Result<IgbVfPort<vfio::MappedBar, VfioDma>, IgbError> {
    let container = vfio::Container::new()?;
    let device = container.open_device_with_options(bdf, options)?;
    let (vendor, dev_id) = device.ids()?;
    if vendor != 0x8086 || dev_id != IGB_VF_DEVICE_ID {
        return Err(IgbError::NotIgbVf {
            bdf: bdf.to_owned(),
            vendor,
            device: dev_id,
        });
    }
    // No function reset here: VTCTRL.RST in the init sequence resets the VF's queues,
    // and the PF learns of it through VFLRE either way.
    device.enable_bus_master()?;
    let bar = device.map_bar(0)?;
    let pool_map = container.map_pool(&pool)?;
    let name = format!("igbvf:{}", device.address());
    let dma = VfioDma::new(container, pool_map, device);
    IgbVfPort::new(&name, bar, dma, pool, cfg)
}
