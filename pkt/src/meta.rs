//! Per-frame metadata that travels with a [`crate::PktBuf`] but not on the wire.

use std::net::SocketAddr;

/// Offload request or result attached to a frame, in the terms of `virtio_net_hdr`
/// (virtio 1.2, 5.1.6): the lingua franca between guests, taps and NICs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OffloadMeta {
    /// `VIRTIO_NET_HDR_F_*` flags (bit 0: needs checksum, bit 1: data valid).
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*` type (0: none, 1: TCPv4, 3: UDP, 4: TCPv6).
    pub gso_type: u8,
    /// Length of the headers to replicate per segment.
    pub hdr_len: u16,
    /// Maximum segment payload size.
    pub gso_size: u16,
    /// Where checksumming starts (from the start of the Ethernet frame).
    pub csum_start: u16,
    /// Where the checksum is stored, relative to `csum_start`.
    pub csum_offset: u16,
}

/// Metadata of one frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta {
    /// Datagram ports: the peer a frame came from (RX) or goes to (TX).
    pub addr: Option<SocketAddr>,
    /// Offload state of the frame.
    pub offload: OffloadMeta,
    /// The 802.1Q tag control information (PCP, DEI, VID) that travels beside the
    /// frame instead of in it: on receive, the tag a NIC stripped; on transmit, the
    /// tag a NIC with [`crate::Offloads::VLAN`] should insert. `None` (the default):
    /// no tag beside the frame (a tag may still be in its bytes).
    pub vlan: Option<u16>,
}
