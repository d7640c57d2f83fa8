//! Underlay and host ports: the [`pkt::Port`]s that move frames between vnetp and the
//! world outside a guest.
//!
//! `nicdrv` owns the devices: kernel sockets today ([`UdpPort`], a UDP socket moving a
//! batch per `recvmmsg`/`sendmmsg`; [`TapPort`], a Linux tap device with a virtio-net
//! header), and userspace poll-mode drivers on VFIO-claimed NICs later (descriptor
//! rings, doorbells, PF/VF mailbox). It opens and configures a device, moves batches,
//! and counts every frame it drops under a name. It must not route, classify or
//! encapsulate: which frame goes where, and the outer headers, belong to `overlay`.
//!
//! `unsafe` here is limited to syscalls and ioctls without a safe wrapper (and, later,
//! MMIO and descriptor rings); each block says why it holds.

pub mod af_packet;
pub mod af_xdp;
mod error;
pub mod igb;
pub mod ixgbe;
mod sysfs;
pub mod tap;
#[cfg(test)]
mod test_util;
pub mod udp;

pub use af_packet::{AfPacketError, AfPacketOptions, AfPacketPort};
pub use af_xdp::{AfXdpError, AfXdpOptions, AfXdpPort, XdpMode};
pub use error::NicError;
pub use tap::{TapIo, TapPort};
pub use udp::{UdpOptions, UdpPort};
