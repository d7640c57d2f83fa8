//! The model's IOMMU check (every DMA the device makes lands only in registered
//! regions) and the [`Dma`] seam that registers the driver's memory with it.

use pkt::Mempool;

use super::{IxgbeModel, ModelState};
use crate::igb::{Dma, IgbError, RingMemory};

impl ModelState {
    /// A pointer to `len` bytes at `iova`, if all of them lie in one region.
    pub(super) fn dma(&mut self, iova: u64, len: usize) -> Option<*mut u8> {
        let end = iova.checked_add(len as u64)?;
        let ok = self.regions.iter().any(|&(s, l)| iova >= s && end <= s + l);
        if ok {
            Some(iova as usize as *mut u8)
        } else {
            self.dma_faults += 1;
            None
        }
    }

    pub(super) fn dma_read_u64(&mut self, iova: u64) -> Option<u64> {
        let p = self.dma(iova, 8)?;
        // SAFETY: `dma` checked that the 8 bytes lie in a registered region, which the
        // registrant keeps alive (see `ModelDma`); unaligned read for arbitrary IOVAs.
        Some(u64::from_le(unsafe {
            std::ptr::read_unaligned(p.cast::<u64>())
        }))
    }

    pub(super) fn dma_write_u64(&mut self, iova: u64, v: u64) {
        if let Some(p) = self.dma(iova, 8) {
            // SAFETY: as in `dma_read_u64`; volatile so the driver's volatile reads and
            // these writes stay in program order.
            unsafe { std::ptr::write_unaligned(p.cast::<u64>(), v.to_le()) }
        }
    }
}

impl IxgbeModel {
    /// Lets the device reach `len` bytes at `start` (identity-mapped).
    pub fn allow_dma(&self, start: *const u8, len: usize) {
        self.state().regions.push((start as u64, len as u64));
    }

    /// Removes the mapping that starts at `start`, as an IOMMU unmap would: the device
    /// can no longer reach that memory.
    pub fn revoke_dma(&self, start: *const u8) {
        self.state().regions.retain(|&(s, _)| s != start as u64);
    }
}

/// [`Dma`] for the model: rings in host memory, every address identity-mapped and
/// registered with the model's IOMMU check.
#[derive(Debug)]
pub struct ModelDma {
    model: IxgbeModel,
    pool_base: usize,
    pool_len: usize,
}

impl ModelDma {
    /// Registers `pool`'s region with `model` and returns the DMA side of the port.
    pub fn new(model: &IxgbeModel, pool: &Mempool) -> Self {
        let (base, len) = pool.region();
        model.allow_dma(base, len);
        Self {
            model: model.clone(),
            pool_base: base as usize,
            pool_len: len,
        }
    }
}

/// [`pkt::DmaMap`] for the model: identity-mapped like every model address,
/// registered with (and taken back from) the model's IOMMU check.
#[derive(Debug)]
pub struct ModelDmaMap {
    model: IxgbeModel,
}

impl pkt::DmaMap for ModelDmaMap {
    unsafe fn map(&self, vaddr: *const u8, len: usize) -> Result<u64, String> {
        self.model.allow_dma(vaddr, len);
        Ok(vaddr as u64)
    }

    fn unmap(&self, iova: u64, _len: usize) {
        self.model.revoke_dma(iova as usize as *const u8);
    }
}

impl Dma for ModelDma {
    fn alloc_ring(&mut self, bytes: usize) -> Result<RingMemory, IgbError> {
        crate::igb::model::host_ring(bytes, |start, len| self.model.allow_dma(start, len))
    }

    fn dma_map(&self) -> Option<std::sync::Arc<dyn pkt::DmaMap>> {
        Some(std::sync::Arc::new(ModelDmaMap {
            model: self.model.clone(),
        }))
    }

    #[inline]
    fn iova_of(&self, p: *const u8) -> Option<u64> {
        let off = (p as usize).checked_sub(self.pool_base)?;
        (off < self.pool_len).then_some(p as u64)
    }
}
