//! The 82599 over VFIO: [`open_vfio`] claims the PF, maps BAR0 and the packet pool,
//! and hands them to [`IxgbePort::new`].

use pkt::Mempool;

use super::vf::{IxgbeVfConfig, IxgbeVfPort};
use super::{IXGBE_PF_DEVICE_IDS, IXGBE_VF_DEVICE_IDS, IxgbeConfig, IxgbeError, IxgbePort};

/// [`crate::igb::Dma`] through a VFIO container (rings in memfd memory at fresh IOVAs,
/// the packet pool mapped whole): the 82599 uses the same one as the 82576.
pub type IxgbeVfioDma = crate::igb::VfioDma;

/// Opens the function at `bdf` through a new VFIO container, checks that it is an Intel
/// device with one of `ids`, resets it if it can (`reset` says what resets it
/// otherwise, for the log), enables bus mastering and maps BAR 0 and `pool`: the
/// register window, the DMA handle and the function's address.
fn claim(
    bdf: &str,
    pool: &Mempool,
    ids: &[u16],
    reset: &str,
) -> Result<(vfio::MappedBar, IxgbeVfioDma, String), IxgbeError> {
    let container = vfio::Container::new()?;
    let device = container.open_device(bdf)?;
    let (vendor, dev_id) = device.ids()?;
    if vendor != 0x8086 || !ids.contains(&dev_id) {
        return Err(IxgbeError::NotIxgbe {
            bdf: bdf.to_owned(),
            vendor,
            device: dev_id,
        });
    }
    if device.can_reset()
        && let Err(e) = device.reset()
    {
        tracing::warn!(device = bdf, error = %e, "function reset failed; relying on {reset}");
    }
    device.enable_bus_master()?;
    let bar = device.map_bar(0)?;
    let pool_map = container.map_pool(pool)?;
    let address = device.address().to_string();
    Ok((bar, IxgbeVfioDma::new(container, pool_map, device), address))
}

/// Claims the 82599 PF at `bdf` (bound to vfio-pci: `vnetp bind <bdf>`) and brings it
/// up as a port whose frames live in `pool` (buffers of at least
/// [`super::pool_buffer_size`]`(cfg.mtu)` bytes).
pub fn open_vfio(
    bdf: &str,
    pool: Mempool,
    cfg: IxgbeConfig,
) -> Result<IxgbePort<vfio::MappedBar, IxgbeVfioDma>, IxgbeError> {
    // CTRL.RST in the init sequence resets the MAC anyway.
    let (bar, dma, address) = claim(bdf, &pool, IXGBE_PF_DEVICE_IDS, "the device reset")?;
    IxgbePort::new(&format!("ixgbe:{address}"), bar, dma, pool, cfg)
}

/// Claims the 82599 VF at `bdf` (8086:10ed, bound to vfio-pci) and brings it up as a
/// port: the PF driver that owns the device (Linux ixgbe, which must have given the VF
/// a MAC) answers its mailbox. Not used by `vnetp run` yet.
pub fn open_vfio_vf(
    bdf: &str,
    pool: Mempool,
    cfg: IxgbeVfConfig,
) -> Result<IxgbeVfPort<vfio::MappedBar, IxgbeVfioDma>, IxgbeError> {
    // VFCTRL.RST in the VF init resets the function's queues anyway.
    let (bar, dma, address) = claim(bdf, &pool, IXGBE_VF_DEVICE_IDS, "VFCTRL.RST")?;
    IxgbeVfPort::new(&format!("ixgbevf:{address}"), bar, dma, pool, cfg)
}
