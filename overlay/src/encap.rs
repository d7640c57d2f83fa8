//! Encapsulations of guest frames on [`PktBuf`]s: the VXLAN header (RFC 7348), and
//! the outer Ethernet (+802.1Q) + IPv4/IPv6 + UDP headers a raw-L2 underlay (AF_PACKET,
//! AF_XDP, a NIC queue) needs. Headers are prepended into the headroom and stripped by
//! moving the buffer's head: the frame itself is never copied.
//!
//! A datagram underlay (a kernel UDP socket) uses only [`vxlan_push`]/[`vxlan_pull`]
//! (or nothing, for the vnetp encap): the kernel builds the outer headers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use offload::checksum::{self, OffloadError};
use pkt::PktBuf;
use pkt::wire::{
    EthernetHeader, EthernetRepr, Header, Ipv4Header, Ipv4Repr, Ipv6Header, Ipv6Repr, MacAddr,
    UdpRepr, Vlan, VlanHeader, VxlanRepr, WireError, ethernet, ethertype, ip_proto, ipv4, ipv6,
    udp, vxlan,
};

/// TTL (IPv4) and hop limit (IPv6) of outer packets.
pub const OUTER_TTL: u8 = 64;
/// The lowest VXLAN source port: RFC 7348 section 5 recommends 49152..=65535.
pub const SOURCE_PORT_MIN: u16 = 49152;
/// Largest VLAN ID that may be sent (4095 is reserved by IEEE 802.1Q).
pub const VLAN_ID_MAX: u16 = 4094;

/// Why a frame cannot be encapsulated or decapsulated. Each variant is a named drop
/// counter ([`EncapError::counter_name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncapError {
    /// Receive: a header, or the length it announces, is cut short.
    #[error("{what}: truncated: need {need} bytes, have {have}")]
    Truncated {
        /// The header.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// Receive: a VXLAN header without the I flag.
    #[error("vxlan: I flag missing (flags {flags:#04x})")]
    BadVxlan {
        /// The flags byte found.
        flags: u8,
    },
    /// Receive: the outer frame is neither IPv4 nor IPv6.
    #[error("outer frame is not IP (ethertype {ethertype:#06x})")]
    NotIp {
        /// The EtherType found.
        ethertype: u16,
    },
    /// Receive: the outer IP packet does not carry UDP.
    #[error("outer packet is not UDP (protocol {protocol})")]
    NotUdp {
        /// The IPv4 protocol or IPv6 next header found.
        protocol: u8,
    },
    /// Receive: the outer packet is an IP fragment (reassembly is not supported).
    #[error("outer packet is a fragment")]
    Fragment,
    /// Receive: an IPv4 header or UDP checksum does not verify.
    #[error("{what}: bad checksum")]
    BadChecksum {
        /// The header.
        what: &'static str,
    },
    /// Receive: any other malformed header (version, header length, length field).
    #[error("malformed outer header: {0}")]
    BadHeader(WireError),
    /// Transmit: not enough headroom in front of the frame.
    #[error("no headroom for outer headers: need {need} bytes, have {have}")]
    NoHeadroom {
        /// Bytes needed.
        need: usize,
        /// Headroom available.
        have: usize,
    },
    /// Transmit: source and destination are not the same IP version.
    #[error("outer source and destination are of different IP versions")]
    AddressFamilyMismatch,
    /// Transmit: a VNI wider than 24 bits.
    #[error("vni {0} does not fit 24 bits")]
    BadVni(u32),
    /// Transmit: a VLAN ID above 4094.
    #[error("vlan id {0} is out of range 0..=4094")]
    BadVlan(u16),
    /// Transmit: the frame is too long for one outer packet.
    #[error("frame of {len} bytes is too long for one outer packet")]
    TooLong {
        /// The frame length.
        len: usize,
    },
    /// Transmit: a header could not be written (a bug: inputs are checked first).
    #[error("cannot write outer header: {0}")]
    Emit(WireError),
    /// Transmit: the UDP checksum could not be computed (a bug: inputs are checked first).
    #[error("cannot compute outer checksum: {0}")]
    Checksum(OffloadError),
}

impl EncapError {
    /// The stable name of the drop counter for this error.
    pub fn counter_name(&self) -> &'static str {
        match self {
            Self::Truncated { .. } => "rx_truncated",
            Self::BadVxlan { .. } => "rx_bad_vxlan",
            Self::NotIp { .. } => "rx_not_ip",
            Self::NotUdp { .. } => "rx_not_udp",
            Self::Fragment => "rx_fragment",
            Self::BadChecksum { .. } => "rx_bad_checksum",
            Self::BadHeader(_) => "rx_bad_header",
            Self::NoHeadroom { .. } => "tx_no_headroom",
            Self::AddressFamilyMismatch => "tx_address_family",
            Self::BadVni(_) => "tx_bad_vni",
            Self::BadVlan(_) => "tx_bad_vlan",
            Self::TooLong { .. } => "tx_too_long",
            Self::Emit(_) | Self::Checksum(_) => "tx_bad_header",
        }
    }
}

/// Classifies a parse error of received bytes.
impl From<WireError> for EncapError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Truncated { what, need, have } => Self::Truncated { what, need, have },
            WireError::BadLength {
                what, field, have, ..
            } if field > have => Self::Truncated {
                what,
                need: field,
                have,
            },
            WireError::MissingVxlanFlag { flags } => Self::BadVxlan { flags },
            WireError::BadChecksum { what } => Self::BadChecksum { what },
            other => Self::BadHeader(other),
        }
    }
}

/// Prepends a VXLAN header for `vni` (I flag set, reserved bits zero).
pub fn vxlan_push(buf: &mut PktBuf, vni: u32) -> Result<(), EncapError> {
    if vni > vxlan::VNI_MAX {
        return Err(EncapError::BadVni(vni));
    }
    let have = buf.headroom();
    let hdr = buf
        .prepend(vxlan::HEADER_LEN)
        .map_err(|_| EncapError::NoHeadroom {
            need: vxlan::HEADER_LEN,
            have,
        })?;
    VxlanRepr { vni }.emit(hdr).map_err(EncapError::Emit)?;
    Ok(())
}

/// Strips the VXLAN header at the front of `buf` and returns its VNI. `buf` is left
/// unchanged on error.
pub fn vxlan_pull(buf: &mut PktBuf) -> Result<u32, EncapError> {
    let (repr, off) = VxlanRepr::parse(buf.data())?;
    buf.strip_front(off).map_err(|_| EncapError::Truncated {
        what: "vxlan",
        need: off,
        have: buf.len(),
    })?;
    Ok(repr.vni)
}

/// The outer headers of a packet on a raw-L2 underlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OuterHeaders {
    /// This host's underlay MAC.
    pub src_mac: MacAddr,
    /// The next hop's MAC (the peer, or the gateway).
    pub dst_mac: MacAddr,
    /// 802.1Q VLAN ID of the underlay, if tagged.
    pub vlan: Option<u16>,
    /// This host's underlay address and UDP port.
    pub src: SocketAddr,
    /// The peer's underlay address and UDP port.
    pub dst: SocketAddr,
}

impl OuterHeaders {
    /// Bytes [`push_outer`] prepends: 42 (IPv4), 62 (IPv6), 4 more with a VLAN tag.
    pub fn header_len(&self) -> usize {
        let eth = ethernet::HEADER_LEN
            + if self.vlan.is_some() {
                ethernet::VLAN_TAG_LEN
            } else {
                0
            };
        let ip = if self.src.is_ipv4() {
            ipv4::HEADER_LEN
        } else {
            ipv6::HEADER_LEN
        };
        eth + ip + udp::HEADER_LEN
    }
}

/// Prepends Ethernet (+802.1Q), IPv4 or IPv6, and UDP headers to the frame in `buf`,
/// which becomes the UDP payload. IPv4: DF set, identification `ipv4_id`, header
/// checksum computed, UDP checksum 0. IPv6: UDP checksum computed (mandatory). TTL or
/// hop limit [`OUTER_TTL`]. `buf` is left unchanged on error.
pub fn push_outer(buf: &mut PktBuf, h: &OuterHeaders, ipv4_id: u16) -> Result<(), EncapError> {
    let addrs = match (h.src.ip(), h.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => OuterIp::V4(s, d),
        (IpAddr::V6(s), IpAddr::V6(d)) => OuterIp::V6(s, d),
        _ => return Err(EncapError::AddressFamilyMismatch),
    };
    if let Some(vid) = h.vlan.filter(|v| *v > VLAN_ID_MAX) {
        return Err(EncapError::BadVlan(vid));
    }
    // The payload is the whole frame, an external tail included: the outer lengths
    // cover it, and IPv6's UDP checksum sums it where it lies.
    let payload_len = buf.frame_len();
    // IPv4's total length covers its own header; IPv6's payload length does not.
    let max_payload = match addrs {
        OuterIp::V4(..) => usize::from(u16::MAX) - ipv4::HEADER_LEN - udp::HEADER_LEN,
        OuterIp::V6(..) => usize::from(u16::MAX) - udp::HEADER_LEN,
    };
    if payload_len > max_payload {
        return Err(EncapError::TooLong { len: payload_len });
    }
    let (need, have) = (h.header_len(), buf.headroom());
    if have < need {
        return Err(EncapError::NoHeadroom { need, have });
    }
    buf.prepend(need)
        .map_err(|_| EncapError::NoHeadroom { need, have })?;
    let (frame, tail) = buf.parts_mut();
    let written = write_outer(frame, tail, h, addrs, ipv4_id, payload_len);
    if written.is_err() {
        // Give the headroom back so the caller sees the frame as it was.
        let _ = buf.strip_front(need);
    }
    written
}

/// The outer addresses, by IP version.
#[derive(Clone, Copy)]
enum OuterIp {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

/// Writes the outer headers at the start of `frame`, in front of `payload_len` bytes
/// (the rest of `frame`, then `tail`).
fn write_outer(
    frame: &mut [u8],
    tail: &[u8],
    h: &OuterHeaders,
    addrs: OuterIp,
    ipv4_id: u16,
    payload_len: usize,
) -> Result<(), EncapError> {
    let eth = EthernetRepr {
        dst: h.dst_mac,
        src: h.src_mac,
        vlan: h.vlan.map(Vlan::new),
        ethertype: match addrs {
            OuterIp::V4(..) => ethertype::IPV4,
            OuterIp::V6(..) => ethertype::IPV6,
        },
    };
    let l3 = eth.emit(frame).map_err(EncapError::Emit)?;
    let udp_len = udp::HEADER_LEN + payload_len;
    let ip_len = match addrs {
        OuterIp::V4(src, dst) => Ipv4Repr {
            src,
            dst,
            protocol: ip_proto::UDP,
            ttl: OUTER_TTL,
            tos: 0,
            ident: ipv4_id,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
            payload_len: udp_len,
        }
        .emit(&mut frame[l3..]),
        OuterIp::V6(src, dst) => Ipv6Repr {
            src,
            dst,
            next_header: ip_proto::UDP,
            hop_limit: OUTER_TTL,
            traffic_class: 0,
            flow_label: 0,
            payload_len: udp_len,
        }
        .emit(&mut frame[l3..]),
    }
    .map_err(EncapError::Emit)?;
    let l4 = l3 + ip_len;
    UdpRepr {
        src_port: h.src.port(),
        dst_port: h.dst.port(),
        payload_len,
        checksum: 0,
    }
    .emit(&mut frame[l4..])
    .map_err(EncapError::Emit)?;
    if let OuterIp::V6(src, dst) = addrs {
        if tail.is_empty() {
            let seg = frame
                .get_mut(l4..l4 + udp_len)
                .ok_or(EncapError::TooLong { len: payload_len })?;
            checksum::fill_udp_checksum_v6(&src, &dst, seg).map_err(EncapError::Checksum)?;
        } else {
            // The pseudo-header sum in the field, completed over both parts.
            let pseudo = checksum::pseudo_header_v6(&src, &dst, ip_proto::UDP, udp_len as u32);
            let field = l4 + 6;
            frame[field..field + 2].copy_from_slice(&checksum::fold(pseudo.into()).to_be_bytes());
            checksum::complete_partial_split(frame, tail, l4, 6).map_err(EncapError::Checksum)?;
        }
    }
    Ok(())
}

/// What [`parse_outer`] found in a received underlay frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OuterInfo {
    /// Outer source MAC.
    pub src_mac: MacAddr,
    /// Outer destination MAC.
    pub dst_mac: MacAddr,
    /// Outer 802.1Q VLAN ID, if tagged.
    pub vlan: Option<u16>,
    /// The sender's underlay address and UDP port.
    pub src: SocketAddr,
    /// The receiver's underlay address and UDP port.
    pub dst: SocketAddr,
    /// Offset of the UDP payload in the frame.
    pub payload_offset: usize,
    /// Length of the UDP payload (link padding after it excluded).
    pub payload_len: usize,
}

/// Parses the outer Ethernet (+802.1Q), IPv4 or IPv6, and UDP headers of a frame from
/// a raw-L2 underlay. Rejects non-IP, non-UDP and fragmented packets, a bad IPv4
/// header checksum, and a bad UDP checksum: on IPv6 always (0 is invalid there), on
/// IPv4 when the sender set one.
pub fn parse_outer(frame: &[u8]) -> Result<OuterInfo, EncapError> {
    parse_outer_checked(frame, true)
}

/// [`parse_outer`], except that with `verify_udp` false the UDP checksum is taken as
/// good: the NIC checked it and said so (`DATA_VALID` in the frame's offload meta).
pub fn parse_outer_checked(frame: &[u8], verify_udp: bool) -> Result<OuterInfo, EncapError> {
    let (eth, l3) = EthernetRepr::parse(frame)?;
    let ip_bytes = &frame[l3..];
    let (src, dst, l4, udp_bytes) = match eth.ethertype {
        ethertype::IPV4 => {
            let (ip, off) = Ipv4Repr::parse(ip_bytes)?;
            if ip.is_fragment() {
                return Err(EncapError::Fragment);
            }
            if ip.protocol != ip_proto::UDP {
                return Err(EncapError::NotUdp {
                    protocol: ip.protocol,
                });
            }
            let udp_bytes = &ip_bytes[off..off + ip.payload_len];
            (IpAddr::V4(ip.src), IpAddr::V4(ip.dst), l3 + off, udp_bytes)
        }
        ethertype::IPV6 => {
            let (ip, off) = Ipv6Repr::parse(ip_bytes)?;
            match ip.next_header {
                ip_proto::UDP => {}
                ip_proto::IPV6_FRAG => return Err(EncapError::Fragment),
                other => return Err(EncapError::NotUdp { protocol: other }),
            }
            let udp_bytes = &ip_bytes[off..off + ip.payload_len];
            (IpAddr::V6(ip.src), IpAddr::V6(ip.dst), l3 + off, udp_bytes)
        }
        other => return Err(EncapError::NotIp { ethertype: other }),
    };
    let (udp, payload_off) = UdpRepr::parse(udp_bytes)?;
    let segment = &udp_bytes[..payload_off + udp.payload_len];
    let checksum_ok = !verify_udp
        || match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => checksum::verify_udp_v4(s, d, segment),
            (IpAddr::V6(s), IpAddr::V6(d)) => checksum::verify_udp_v6(&s, &d, segment),
            _ => false,
        };
    if !checksum_ok {
        return Err(EncapError::BadChecksum { what: "udp" });
    }
    Ok(OuterInfo {
        src_mac: eth.src,
        dst_mac: eth.dst,
        vlan: eth.vlan.map(|v| v.vid),
        src: SocketAddr::new(src, udp.src_port),
        dst: SocketAddr::new(dst, udp.dst_port),
        payload_offset: l4 + payload_off,
        payload_len: udp.payload_len,
    })
}

/// The UDP source port for a VXLAN packet carrying `inner_frame`: a hash of its flow
/// (MACs; for IPv4/IPv6 the addresses and protocol; for TCP/UDP/SCTP the ports) in
/// 49152..=65535 (RFC 7348 section 5), so ECMP and RSS spread flows while each flow
/// stays in order. Never fails: whatever part of the tuple is present is hashed.
pub fn vxlan_source_port(inner_frame: &[u8]) -> u16 {
    let mut hash = Fnv1a::new();
    hash.write(inner_frame.get(..12).unwrap_or(inner_frame));
    let Ok((eth, mut rest)) = EthernetHeader::view(inner_frame) else {
        return hash.port();
    };
    let mut etype = eth.ethertype();
    if etype == ethertype::VLAN
        && let Ok((tag, after)) = VlanHeader::view(rest)
    {
        etype = tag.ethertype();
        rest = after;
    }
    match etype {
        ethertype::IPV4 => {
            if let Ok((ip, _)) = Ipv4Header::view(rest) {
                hash.write(&ip.src);
                hash.write(&ip.dst);
                hash.write(&[ip.protocol]);
                if !ip.is_fragment() {
                    hash_ports(&mut hash, ip.protocol, rest.get(ip.header_len()..));
                }
            }
        }
        ethertype::IPV6 => {
            if let Ok((ip, l4)) = Ipv6Header::view(rest) {
                hash.write(&ip.src);
                hash.write(&ip.dst);
                hash.write(&[ip.next_header]);
                hash_ports(&mut hash, ip.next_header, Some(l4));
            }
        }
        _ => {}
    }
    hash.port()
}

/// Adds the L4 ports (the first 4 bytes of TCP, UDP and SCTP) to the flow hash.
fn hash_ports(hash: &mut Fnv1a, protocol: u8, l4: Option<&[u8]>) {
    if matches!(protocol, ip_proto::TCP | ip_proto::UDP | ip_proto::SCTP)
        && let Some(ports) = l4.and_then(|b| b.get(..4))
    {
        hash.write(ports);
    }
}

/// 64-bit FNV-1a: simple, stable across releases and platforms, no allocation.
struct Fnv1a(u64);

impl Fnv1a {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Self {
        Self(Self::OFFSET)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(Self::PRIME);
        }
    }

    /// Maps the hash onto 49152..=65535 by multiply-shift (as Linux's
    /// `udp_flow_src_port` does), which uses the well-mixed high bits.
    fn port(&self) -> u16 {
        let h32 = u64::from((self.0 ^ (self.0 >> 32)) as u32);
        let range = u64::from(u16::MAX - SOURCE_PORT_MIN) + 1;
        SOURCE_PORT_MIN + ((h32 * range) >> 32) as u16
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic in a test is its failure report
mod tests {
    use super::*;
    use pkt::Mempool;
    use proptest::prelude::*;

    /// A 60-byte guest frame: an ARP request from 52:54:00:12:34:56 (10.0.0.1) for
    /// 10.0.0.2, padded to the Ethernet minimum.
    const INNER: [u8; 60] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x06, 0x00,
        0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x0a, 0x00,
        0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x02, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    /// The vnetp outer headers for `INNER`: 02:00:00:00:00:01 -> 02:00:00:00:00:02,
    /// 192.168.1.1:9000 -> 192.168.1.2:9000, ident 1, DF, TTL 64. IPv4 header checksum
    /// 0xb740 (computed with python3 while writing this test), UDP checksum 0.
    const OUTER_V4: [u8; 42] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08,
        0x00, // ethernet
        0x45, 0x00, 0x00, 0x58, 0x00, 0x01, 0x40, 0x00, 0x40, 0x11, 0xb7,
        0x40, // ipv4: len 88
        0xc0, 0xa8, 0x01, 0x01, 0xc0, 0xa8, 0x01, 0x02, // 192.168.1.1 -> 192.168.1.2
        0x23, 0x28, 0x23, 0x28, 0x00, 0x44, 0x00, 0x00, // udp 9000 -> 9000, len 68
    ];

    /// VXLAN (VNI 42) over IPv6 on VLAN 100 for `INNER`: [fd00::1]:50000 ->
    /// [fd00::2]:4789, hop limit 64. UDP checksum 0xc5c3 (computed with python3).
    const OUTER_V6_VXLAN: [u8; 74] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // MACs
        0x81, 0x00, 0x00, 0x64, 0x86, 0xdd, // 802.1Q VID 100, IPv6
        0x60, 0x00, 0x00, 0x00, 0x00, 0x4c, 0x11, 0x40, // ipv6: payload 76, UDP, hops 64
        0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x01, // fd00::1
        0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x02, // fd00::2
        0xc3, 0x50, 0x12, 0xb5, 0x00, 0x4c, 0xc5, 0xc3, // udp 50000 -> 4789, len 76
        0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, 0x00, // vxlan vni 42
    ];

    const MAC1: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
    const MAC2: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);

    fn pool() -> Mempool {
        Mempool::new(8, 2048).unwrap()
    }

    fn buf_with(pool: &Mempool, bytes: &[u8]) -> PktBuf {
        let mut b = pool.alloc().unwrap();
        b.extend_from_slice(bytes).unwrap();
        b
    }

    fn v4_headers() -> OuterHeaders {
        OuterHeaders {
            src_mac: MAC1,
            dst_mac: MAC2,
            vlan: None,
            src: "192.168.1.1:9000".parse().unwrap(),
            dst: "192.168.1.2:9000".parse().unwrap(),
        }
    }

    fn v6_headers() -> OuterHeaders {
        OuterHeaders {
            src_mac: MAC1,
            dst_mac: MAC2,
            vlan: Some(100),
            src: "[fd00::1]:50000".parse().unwrap(),
            dst: "[fd00::2]:4789".parse().unwrap(),
        }
    }

    fn golden_v4() -> Vec<u8> {
        [&OUTER_V4[..], &INNER[..]].concat()
    }

    fn golden_v6() -> Vec<u8> {
        [&OUTER_V6_VXLAN[..], &INNER[..]].concat()
    }

    #[test]
    fn vxlan_vni_42_is_golden_and_round_trips() {
        let pool = pool();
        let mut b = buf_with(&pool, &INNER);
        let head = b.headroom();
        vxlan_push(&mut b, 42).unwrap();
        assert_eq!(
            b.data()[..8],
            [0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, 0x00]
        );
        assert_eq!(b.headroom(), head - 8, "prepended in place");
        assert_eq!(vxlan_pull(&mut b).unwrap(), 42);
        assert_eq!(b.data(), INNER);
    }

    #[test]
    fn vxlan_pull_rejects_missing_flag_and_short_frames() {
        let pool = pool();
        let mut b = buf_with(&pool, &[0, 0, 0, 0, 0, 0, 0x2a, 0, 1, 2]);
        let err = vxlan_pull(&mut b).unwrap_err();
        assert_eq!(err, EncapError::BadVxlan { flags: 0 });
        assert_eq!(err.counter_name(), "rx_bad_vxlan");
        assert_eq!(b.len(), 10, "unchanged on error");
        let mut short = buf_with(&pool, &[0x08, 0, 0]);
        assert_eq!(
            vxlan_pull(&mut short).unwrap_err().counter_name(),
            "rx_truncated"
        );
    }

    #[test]
    fn vxlan_push_rejects_wide_vni() {
        let pool = pool();
        let mut b = buf_with(&pool, &INNER);
        assert_eq!(
            vxlan_push(&mut b, 1 << 24),
            Err(EncapError::BadVni(1 << 24))
        );
        assert_eq!(b.data(), INNER);
    }

    #[test]
    fn push_outer_v4_is_golden() {
        let pool = pool();
        let mut b = buf_with(&pool, &INNER);
        push_outer(&mut b, &v4_headers(), 1).unwrap();
        assert_eq!(b.data(), golden_v4());
        assert!(offload::checksum::verify_ipv4_header(&b.data()[14..34]));
    }

    #[test]
    fn push_outer_v6_vxlan_is_golden() {
        let pool = pool();
        let mut b = buf_with(&pool, &INNER);
        vxlan_push(&mut b, 42).unwrap();
        push_outer(&mut b, &v6_headers(), 0).unwrap();
        assert_eq!(b.data(), golden_v6());
    }

    #[test]
    fn push_outer_over_a_frame_with_a_tail_gives_the_golden_bytes() {
        // The inner frame's last bytes stay an external tail, split at an odd offset:
        // lengths and the IPv6 UDP checksum must cover them.
        let pool = pool();
        for (split, v6) in [(9usize, true), (10, true), (9, false)] {
            let mut b = buf_with(&pool, &INNER[..split]);
            let tail: &'static [u8] = Vec::leak(INNER[split..].to_vec());
            let ring = pkt::DoneRing::new(1);
            b.attach_ext(pkt::ExtSeg::from_static(
                tail,
                None,
                pkt::Completion::new(ring, 0),
            ));
            let golden = if v6 {
                vxlan_push(&mut b, 42).unwrap();
                push_outer(&mut b, &v6_headers(), 0).unwrap();
                golden_v6()
            } else {
                push_outer(&mut b, &v4_headers(), 1).unwrap();
                golden_v4()
            };
            let (head, tail) = b.parts();
            assert_eq!([head, tail].concat(), golden, "split {split}");
        }
    }

    #[test]
    fn parse_outer_reads_golden_v4() {
        let info = parse_outer(&golden_v4()).unwrap();
        assert_eq!(
            info,
            OuterInfo {
                src_mac: MAC1,
                dst_mac: MAC2,
                vlan: None,
                src: v4_headers().src,
                dst: v4_headers().dst,
                payload_offset: 42,
                payload_len: 60,
            }
        );
    }

    #[test]
    fn parse_outer_reads_golden_v6_and_ignores_padding() {
        let mut frame = golden_v6();
        frame.extend_from_slice(&[0xee; 6]);
        let info = parse_outer(&frame).unwrap();
        assert_eq!(info.vlan, Some(100));
        assert_eq!(info.src, v6_headers().src);
        assert_eq!(info.dst, v6_headers().dst);
        assert_eq!((info.payload_offset, info.payload_len), (66, 68));
        let payload = &frame[info.payload_offset..info.payload_offset + info.payload_len];
        assert_eq!(payload[..8], OUTER_V6_VXLAN[66..]);
    }

    #[test]
    fn every_truncation_is_counted_as_truncated() {
        for golden in [golden_v4(), golden_v6()] {
            for n in 0..golden.len() {
                let err = parse_outer(&golden[..n]).unwrap_err();
                assert_eq!(err.counter_name(), "rx_truncated", "{n} bytes: {err}");
            }
        }
    }

    #[test]
    fn parse_outer_rejects_not_ip_not_udp_and_fragments() {
        let arp = INNER;
        assert_eq!(
            parse_outer(&arp),
            Err(EncapError::NotIp { ethertype: 0x0806 })
        );

        let mut tcp = golden_v4();
        tcp[23] = ip_proto::TCP;
        tcp[24..26].copy_from_slice(&[0xb7, 0x4b]); // header checksum fixed for protocol 6
        assert_eq!(parse_outer(&tcp), Err(EncapError::NotUdp { protocol: 6 }));

        let mut frag = golden_v4();
        frag[20] = 0x20; // MF instead of DF
        frag[24..26].copy_from_slice(&[0xd7, 0x40]);
        assert_eq!(parse_outer(&frag), Err(EncapError::Fragment));
        assert_eq!(EncapError::Fragment.counter_name(), "rx_fragment");

        let mut frag6 = golden_v6();
        frag6[24] = ip_proto::IPV6_FRAG;
        assert_eq!(parse_outer(&frag6), Err(EncapError::Fragment));
    }

    #[test]
    fn parse_outer_rejects_bad_checksums() {
        let mut v6 = golden_v6();
        v6[70] ^= 0x01; // VNI bit flipped: UDP checksum no longer matches
        assert_eq!(
            parse_outer(&v6),
            Err(EncapError::BadChecksum { what: "udp" })
        );
        let mut zero = golden_v6();
        zero[64..66].copy_from_slice(&[0, 0]);
        assert_eq!(
            parse_outer(&zero).unwrap_err().counter_name(),
            "rx_bad_checksum"
        );

        let mut v4 = golden_v4();
        v4[22] = 63; // TTL changed, header checksum not
        assert_eq!(
            parse_outer(&v4),
            Err(EncapError::BadChecksum { what: "ipv4" })
        );
        let mut udp4 = golden_v4();
        udp4[40..42].copy_from_slice(&[0x12, 0x34]); // a wrong non-zero UDP checksum
        assert_eq!(
            parse_outer(&udp4),
            Err(EncapError::BadChecksum { what: "udp" })
        );
        // A NIC's DATA_VALID verdict stands for the UDP sum only, not the IPv4 header.
        assert!(parse_outer_checked(&udp4, false).is_ok());
        assert_eq!(
            parse_outer_checked(&v4, false),
            Err(EncapError::BadChecksum { what: "ipv4" })
        );
    }

    #[test]
    fn push_outer_checks_inputs_and_leaves_buffer_alone() {
        let pool = pool();
        let mut b = buf_with(&pool, &INNER);
        let mixed = OuterHeaders {
            dst: "[fd00::2]:4789".parse().unwrap(),
            ..v4_headers()
        };
        assert_eq!(
            push_outer(&mut b, &mixed, 0),
            Err(EncapError::AddressFamilyMismatch)
        );
        let vlan = OuterHeaders {
            vlan: Some(4095),
            ..v4_headers()
        };
        assert_eq!(push_outer(&mut b, &vlan, 0), Err(EncapError::BadVlan(4095)));
        b.prepend(pkt::HEADROOM - 40).unwrap();
        let err = push_outer(&mut b, &v4_headers(), 0).unwrap_err();
        assert_eq!(err, EncapError::NoHeadroom { need: 42, have: 40 });
        assert_eq!(err.counter_name(), "tx_no_headroom");
        assert_eq!(b.headroom(), 40);
    }

    #[test]
    fn push_outer_refuses_oversized_frames() {
        let pool = Mempool::new(1, 70_000).unwrap();
        let mut b = pool.alloc().unwrap();
        b.append(65_536 - 28).unwrap();
        assert_eq!(
            push_outer(&mut b, &v4_headers(), 0),
            Err(EncapError::TooLong { len: 65_508 })
        );
        b.truncate(65_535 - 28);
        assert!(push_outer(&mut b, &v4_headers(), 0).is_ok());
    }

    #[test]
    fn counter_names_are_snake_case_and_distinct_per_kind() {
        let errors = [
            EncapError::Truncated {
                what: "udp",
                need: 8,
                have: 0,
            },
            EncapError::BadVxlan { flags: 0 },
            EncapError::NotIp { ethertype: 0 },
            EncapError::NotUdp { protocol: 6 },
            EncapError::Fragment,
            EncapError::BadChecksum { what: "udp" },
            EncapError::BadHeader(WireError::BadVersion {
                what: "ipv4",
                found: 5,
                expected: 4,
            }),
            EncapError::NoHeadroom { need: 1, have: 0 },
            EncapError::AddressFamilyMismatch,
            EncapError::BadVni(1 << 24),
            EncapError::BadVlan(4095),
            EncapError::TooLong { len: 70_000 },
        ];
        let names: Vec<_> = errors.iter().map(EncapError::counter_name).collect();
        for n in &names {
            assert!(
                n.bytes().all(|c| c.is_ascii_lowercase() || c == b'_'),
                "{n}"
            );
            assert!(n.starts_with("rx_") || n.starts_with("tx_"), "{n}");
        }
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
    }

    #[test]
    fn source_port_follows_the_inner_flow() {
        // Two UDP flows between the same hosts that differ only in the source port.
        let mut a = [0u8; 42];
        a[..12].copy_from_slice(&INNER[..12]);
        a[12..14].copy_from_slice(&[0x08, 0x00]);
        a[14] = 0x45;
        a[23] = ip_proto::UDP;
        a[26..34].copy_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        a[34..38].copy_from_slice(&[0x13, 0x88, 0x23, 0x28]);
        let mut b = a;
        b[35] = 0x89;
        let (pa, pb) = (vxlan_source_port(&a), vxlan_source_port(&b));
        assert_eq!(pa, vxlan_source_port(&a), "stable");
        assert_ne!(pa, pb, "ports are part of the flow");
        let mut payload_differs = a;
        payload_differs[41] = 0xff;
        assert_eq!(vxlan_source_port(&payload_differs), pa, "payload is not");
        assert!(pa >= SOURCE_PORT_MIN && pb >= SOURCE_PORT_MIN);
    }

    proptest! {
        #[test]
        fn source_port_is_in_range_for_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            prop_assert!(vxlan_source_port(&bytes) >= SOURCE_PORT_MIN);
        }

        #[test]
        fn parse_outer_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = parse_outer(&bytes);
        }

        #[test]
        fn push_then_parse_outer_round_trips(len in 0usize..1400, v6 in any::<bool>(), vlan in proptest::option::of(0u16..=VLAN_ID_MAX), sport in any::<u16>(), id in any::<u16>()) {
            let pool = pool();
            let mut b = pool.alloc().unwrap();
            b.append(len).unwrap().iter_mut().enumerate().for_each(|(i, x)| *x = i as u8);
            let base = if v6 { v6_headers() } else { v4_headers() };
            let h = OuterHeaders { vlan, src: SocketAddr::new(base.src.ip(), sport), ..base };
            push_outer(&mut b, &h, id).unwrap();
            let info = parse_outer(b.data()).unwrap();
            prop_assert_eq!((info.src, info.dst, info.vlan), (h.src, h.dst, h.vlan));
            prop_assert_eq!((info.payload_offset, info.payload_len), (h.header_len(), len));
        }
    }
}
