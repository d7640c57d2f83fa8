//! Guest-facing virtio-net for vnetp.
//!
//! `virtio` owns the vhost-user virtio-net backend ([`backend::VhostUserPort`], one
//! [`pkt::Port`] per guest interface, built on rust-vmm's `vhost-user-backend`,
//! `virtio-queue` and `vm-memory`) and our own virtio-user frontend
//! ([`frontend::VirtioUser`], a guest driver without a VM, for benches and tests). All
//! guest memory is reached through `vm-memory`'s bounds-checked accessors and every
//! descriptor chain is checked ([`chain`]) before a byte moves. It must not route,
//! encapsulate or know about links: it hands frames to whoever polls the port.

// One exception, in `tails`: lending guest bytes to a frame (`pkt::ExtSeg::new`) rests
// on the port keeping the guest's memory mapped, which no type can state.
#![deny(unsafe_code)]

pub mod backend;
pub mod chain;
pub mod ctrl;
pub mod dataplane;
pub mod error;
pub mod frontend;
pub mod net;
pub mod tails;

pub use backend::{OffloadCounters, VhostUserConfig, VhostUserPort};
pub use error::VirtioError;
pub use frontend::VirtioUser;
pub use tails::TailCounters;
