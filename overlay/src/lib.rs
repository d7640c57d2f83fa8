//! The VNET/P overlay core.
//!
//! `overlay` owns the behaviour of the network: the configuration and its validation,
//! the routing table and route cache (VNET/P's priorities, exactly), links to peer
//! hosts identified by their underlay address, the guest-facing interfaces, the
//! forwarding engine that moves batches between them, the control protocol and the
//! encapsulations. It knows packet endpoints only through [`pkt::Port`]: it never
//! imports a device driver, a guest-memory crate or VFIO.
#![forbid(unsafe_code)]

mod capture;
pub mod config;
pub mod control;
pub mod crypto;
mod ctl;
pub mod encap;
pub mod engine;
pub mod link;
pub mod metrics;
pub mod route;
pub mod server;
pub mod shard;
pub mod types;
pub mod underlay;
