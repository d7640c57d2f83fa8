//! Addresses, configuration and VF bring-up shared by the 82599 VF and SR-IOV tests.

use std::time::Duration;

use pkt::Mempool;

use super::IxgbeError;
use super::model::{IxgbeModel, IxgbeVfModel, ModelDma};
use super::vf::{IxgbeVfConfig, IxgbeVfPort};

pub(super) const MAC0: [u8; 6] = [0x52, 0x54, 0x00, 0x10, 0xed, 0x00];
pub(super) const MAC1: [u8; 6] = [0x52, 0x54, 0x00, 0x10, 0xed, 0x01];
pub(super) const OTHER: [u8; 6] = [0x52, 0x54, 0x00, 0x66, 0x66, 0x66];

pub(super) type ModelVfPort = IxgbeVfPort<IxgbeVfModel, ModelDma>;

/// Small rings; each mailbox exchange may wait 10 s (default 500 ms) for the PF thread,
/// which a busy machine may not run for a while. Tests of a PF that never answers set
/// their own short timeout.
pub(super) fn small_vf() -> IxgbeVfConfig {
    IxgbeVfConfig {
        rx_ring: 16,
        tx_ring: 16,
        mailbox_timeout: Duration::from_secs(10),
        ..IxgbeVfConfig::default()
    }
}

/// A 64-byte frame to `dst` from `src` whose payload counts up from `seq`.
pub(super) fn frame(dst: [u8; 6], src: [u8; 6], seq: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend((0..50).map(|i| seq.wrapping_add(i)));
    f
}

/// Brings up our VF driver, named `vf<vf>`, on VF function `vf` of `model` with buffers
/// from `pool`; the PF must answer its mailbox meanwhile.
pub(super) fn open_vf(
    model: &IxgbeModel,
    pool: &Mempool,
    vf: u32,
    cfg: IxgbeVfConfig,
) -> Result<ModelVfPort, IxgbeError> {
    let regs = model.vf_function(vf).unwrap_or_else(|| panic!("VF {vf}"));
    let dma = ModelDma::new(model, pool);
    IxgbeVfPort::new(&format!("vf{vf}"), regs, dma, pool.clone(), cfg)
}
