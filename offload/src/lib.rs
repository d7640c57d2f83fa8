//! Offloads and their software fallbacks: the Internet checksum (RFC 1071) for IPv4
//! headers and UDP/TCP over IPv4 and IPv6, and the virtio-net header that carries
//! offload requests between guests, taps and NICs.
//!
//! `offload` decides and computes; it does not move packets and knows no device.
#![forbid(unsafe_code)]

pub mod checksum;
pub mod gso;
pub mod rss;
pub mod vnet_hdr;
