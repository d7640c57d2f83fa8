//! Packet buffers and the port abstraction every vnetp data path is built on.
//!
//! `pkt` owns the memory frames live in ([`Mempool`], a single DMA-capable region
//! carved into fixed-size buffers), the move-only [`PktBuf`] handle with headroom for
//! outer headers, the fixed-capacity [`Batch`] that is the unit of work everywhere, the
//! [`Port`] trait with its [`PortCaps`] and named drop counters, and zero-copy views of
//! the wire headers ([`wire`]). It must not know about routing, guests or any
//! particular device: those live in `overlay`, `virtio` and `nicdrv`.
//!
//! `unsafe` is confined to [`pool`], which hands out disjoint slices of one mapping, and
//! [`ext`], whose constructor states what keeps borrowed guest bytes valid.

pub mod batch;
pub mod ext;
pub mod fault;
pub mod meta;
pub mod pool;
pub mod port;
pub mod wire;

pub use batch::{BATCH_MAX, Batch};
pub use ext::{Completion, DmaMap, DoneRing, ExtSeg};
pub use fault::{FaultConfig, FaultPort};
pub use meta::{Meta, OffloadMeta};
pub use pool::{HEADROOM, Mempool, PktBuf, PoolError};
pub use port::{DropCounter, Offloads, Port, PortCaps, PortKind, PortStats};
