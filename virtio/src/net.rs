//! virtio-net device facts (virtio 1.2, 5.1): feature bits we offer, the header length
//! they imply, and the device configuration space.

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_CTRL_RX, VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_GUEST_CSUM,
    VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MQ,
    VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

/// Index of the first receive queue (device to guest); pair `p` receives on `2p`.
pub const RX_QUEUE: usize = 0;
/// Index of the first transmit queue (guest to device); pair `p` sends on `2p + 1`.
pub const TX_QUEUE: usize = 1;
/// Most queue pairs a port offers (the vhost-user worker's queue mask is 64 bits wide,
/// and more pairs than this only cost polling time on one dataplane thread).
pub const MAX_QUEUE_PAIRS: u16 = 16;
/// Queue pairs offered when the configuration does not say.
pub const DEFAULT_QUEUE_PAIRS: u16 = 4;
/// Largest ring we accept (QEMU's and DPDK's maximum for split rings).
pub const MAX_QUEUE_SIZE: usize = 1024;
/// Largest guest MTU we announce support for (as VNET/P: 64 KiB frames).
pub const MAX_MTU: u16 = 65_535 - 14 - 4;
/// `VHOST_USER_F_PROTOCOL_FEATURES`: the vhost-user protocol extension bit.
pub const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;

/// Bit mask of virtio feature `bit`.
pub const fn bit(bit: u32) -> u64 {
    1u64 << bit
}

/// Every virtio feature the backend offers whatever its configuration.
pub const OFFERED_FEATURES: u64 = bit(VIRTIO_F_VERSION_1)
    | bit(VIRTIO_NET_F_MAC)
    | bit(VIRTIO_NET_F_MTU)
    | bit(VIRTIO_NET_F_STATUS)
    | bit(VIRTIO_NET_F_MRG_RXBUF)
    | bit(VIRTIO_NET_F_CSUM)
    | bit(VIRTIO_NET_F_GUEST_CSUM)
    | bit(VIRTIO_NET_F_CTRL_VQ)
    | bit(VIRTIO_NET_F_CTRL_RX)
    | bit(VIRTIO_RING_F_INDIRECT_DESC)
    | bit(VIRTIO_RING_F_EVENT_IDX)
    | VHOST_USER_F_PROTOCOL_FEATURES;

/// TCP segmentation offload both ways: the guest may send (HOST_TSO4/6) and take
/// (GUEST_TSO4/6) frames of up to 64 KiB. Offered only when the packet buffers hold such
/// a frame.
pub const TSO_FEATURES: u64 = bit(VIRTIO_NET_F_HOST_TSO4)
    | bit(VIRTIO_NET_F_HOST_TSO6)
    | bit(VIRTIO_NET_F_GUEST_TSO4)
    | bit(VIRTIO_NET_F_GUEST_TSO6);

/// The features a port with `pairs` queue pairs offers, with TSO or without.
pub const fn offered_features(pairs: u16, tso: bool) -> u64 {
    let mut f = OFFERED_FEATURES;
    if pairs > 1 {
        f |= bit(VIRTIO_NET_F_MQ);
    }
    if tso {
        f |= TSO_FEATURES;
    }
    f
}

/// Number of virtqueues of a device with `pairs` queue pairs: a receive and a transmit
/// queue per pair, then the control queue.
pub const fn num_queues(pairs: u16) -> usize {
    2 * pairs as usize + 1
}

/// Index of the control queue of a device with `pairs` queue pairs (virtio 1.2, 5.1.2).
pub const fn ctrl_queue(pairs: u16) -> usize {
    2 * pairs as usize
}

/// What the data path needs to know of the negotiated features, decoded once per batch
/// from one atomic word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Bytes of `virtio_net_hdr` in front of every frame: 12 with VERSION_1 or
    /// MRG_RXBUF, 10 for a legacy driver without them.
    pub hdr_len: usize,
    /// The guest accepts frames spread over several receive chains.
    pub mrg_rxbuf: bool,
    /// The guest accepts partial checksums (`NEEDS_CSUM`) on receive.
    pub guest_csum: bool,
    /// The guest takes TCP/IPv4 segmentation offload frames on receive.
    pub guest_tso4: bool,
    /// The guest takes TCP/IPv6 segmentation offload frames on receive.
    pub guest_tso6: bool,
    /// The guest takes TSO frames with the ECN bit.
    pub guest_ecn: bool,
    /// The guest may send TCP/IPv4 segmentation offload frames.
    pub host_tso4: bool,
    /// The guest may send TCP/IPv6 segmentation offload frames.
    pub host_tso6: bool,
    /// The guest may send partial checksums.
    pub csum: bool,
    /// Indirect descriptor tables are allowed.
    pub indirect: bool,
    /// Several queue pairs (`VIRTIO_NET_F_MQ`).
    pub mq: bool,
    /// The guest drives a control queue (`VIRTIO_NET_F_CTRL_VQ`).
    pub ctrl_vq: bool,
}

impl Negotiated {
    /// Decodes acked feature bits.
    pub fn from_bits(acked: u64) -> Self {
        let has = |b: u32| acked & bit(b) != 0;
        let mrg_rxbuf = has(VIRTIO_NET_F_MRG_RXBUF);
        Self {
            hdr_len: if has(VIRTIO_F_VERSION_1) || mrg_rxbuf {
                12
            } else {
                10
            },
            mrg_rxbuf,
            guest_csum: has(VIRTIO_NET_F_GUEST_CSUM),
            guest_tso4: has(VIRTIO_NET_F_GUEST_TSO4),
            guest_tso6: has(VIRTIO_NET_F_GUEST_TSO6),
            guest_ecn: has(VIRTIO_NET_F_GUEST_ECN),
            host_tso4: has(VIRTIO_NET_F_HOST_TSO4),
            host_tso6: has(VIRTIO_NET_F_HOST_TSO6),
            csum: has(VIRTIO_NET_F_CSUM),
            indirect: has(VIRTIO_RING_F_INDIRECT_DESC),
            mq: has(VIRTIO_NET_F_MQ),
            ctrl_vq: has(VIRTIO_NET_F_CTRL_VQ),
        }
    }

    /// Whether the guest takes a frame with this `gso_type` (from the offload metadata)
    /// whole; `NONE` always.
    pub fn guest_takes_gso(&self, gso_type: u8) -> bool {
        use offload::vnet_hdr::gso;
        if gso_type & gso::ECN != 0 && !self.guest_ecn {
            return false;
        }
        match gso_type & !gso::ECN {
            gso::NONE => true,
            gso::TCPV4 => self.guest_tso4,
            gso::TCPV6 => self.guest_tso6,
            _ => false,
        }
    }

    /// Whether the guest may send a frame with this `gso_type` (we offer neither UFO,
    /// USO nor HOST_ECN).
    pub fn host_takes_gso(&self, gso_type: u8) -> bool {
        use offload::vnet_hdr::gso;
        match gso_type {
            gso::NONE => true,
            gso::TCPV4 => self.host_tso4,
            gso::TCPV6 => self.host_tso6,
            _ => false,
        }
    }
}

/// The device configuration space (`struct virtio_net_config`, virtio 1.2, 5.1.4) up to
/// and including `mtu`: mac\[6\], status, max_virtqueue_pairs, mtu; little-endian.
pub fn config_space(mac: [u8; 6], mtu: u16, pairs: u16) -> [u8; 12] {
    let mut c = [0u8; 12];
    c[..6].copy_from_slice(&mac);
    c[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
    c[8..10].copy_from_slice(&pairs.to_le_bytes());
    c[10..12].copy_from_slice(&mtu.to_le_bytes());
    c
}

/// The `size` bytes of the configuration space at `offset` (zeros past its end), as
/// `VHOST_USER_GET_CONFIG` answers.
pub fn config_read(space: &[u8], offset: u32, size: u32) -> Vec<u8> {
    // The size comes from the frontend: never allocate more than the protocol's 256-byte
    // config payload.
    let mut out = vec![0u8; size.min(256) as usize];
    let size = out.len() as u32;
    let start = (offset as usize).min(space.len());
    let end = (offset as usize)
        .saturating_add(size as usize)
        .min(space.len());
    out[..end - start].copy_from_slice(&space[start..end]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_space_has_mac_link_up_pairs_and_mtu() {
        let c = config_space([0x52, 0x54, 0, 0, 0, 1], 9000, 4);
        assert_eq!(
            c,
            [0x52, 0x54, 0, 0, 0, 1, 0x01, 0x00, 0x04, 0x00, 0x28, 0x23]
        );
        assert_eq!(config_read(&c, 10, 4), vec![0x28, 0x23, 0, 0]);
        assert_eq!(config_read(&c, 100, 2), vec![0, 0]);
        assert_eq!(config_read(&c, u32::MAX, u32::MAX).len(), 256);
    }

    #[test]
    fn legacy_driver_without_mrg_rxbuf_gets_a_10_byte_header() {
        assert_eq!(Negotiated::from_bits(0).hdr_len, 10);
        assert_eq!(Negotiated::from_bits(OFFERED_FEATURES).hdr_len, 12);
        assert!(Negotiated::from_bits(OFFERED_FEATURES).mrg_rxbuf);
    }

    #[test]
    fn mq_and_tso_are_offered_only_when_configured() {
        let one = Negotiated::from_bits(offered_features(1, false));
        assert!(!one.mq && one.ctrl_vq && !one.host_tso4 && !one.guest_tso6);
        let all = Negotiated::from_bits(offered_features(4, true));
        assert!(all.mq && all.host_tso4 && all.host_tso6 && all.guest_tso4 && all.guest_tso6);
        assert_eq!((num_queues(4), ctrl_queue(4)), (9, 8));
    }

    #[test]
    fn gso_types_follow_the_negotiated_bits() {
        use offload::vnet_hdr::gso;
        let n = Negotiated::from_bits(offered_features(1, true) & !bit(VIRTIO_NET_F_GUEST_TSO6));
        assert!(n.guest_takes_gso(gso::NONE) && n.guest_takes_gso(gso::TCPV4));
        assert!(!n.guest_takes_gso(gso::TCPV6) && !n.guest_takes_gso(gso::TCPV4 | gso::ECN));
        assert!(!n.guest_takes_gso(gso::UDP_L4));
        assert!(n.host_takes_gso(gso::TCPV6) && !n.host_takes_gso(gso::UDP));
        assert!(!n.host_takes_gso(gso::TCPV4 | gso::ECN));
    }
}
