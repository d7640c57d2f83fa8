//! ARP (RFC 826) for Ethernet hardware addresses and IPv4 protocol addresses.

use std::net::Ipv4Addr;

use zerocopy::network_endian::U16;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{Header, MacAddr, WireError, ethertype};

/// Size of an Ethernet/IPv4 ARP packet (without Ethernet padding).
pub const PACKET_LEN: usize = 28;
/// Hardware type Ethernet (IANA ARP parameters).
pub const HTYPE_ETHERNET: u16 = 1;

/// The 28-byte Ethernet/IPv4 ARP packet.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ArpHeader {
    /// Hardware type (1: Ethernet).
    pub htype: U16,
    /// Protocol type (an EtherType; 0x0800: IPv4).
    pub ptype: U16,
    /// Hardware address length (6).
    pub hlen: u8,
    /// Protocol address length (4).
    pub plen: u8,
    /// Operation (1: request, 2: reply).
    pub op: U16,
    /// Sender hardware address.
    pub sha: MacAddr,
    /// Sender protocol address.
    pub spa: [u8; 4],
    /// Target hardware address.
    pub tha: MacAddr,
    /// Target protocol address.
    pub tpa: [u8; 4],
}

impl Header for ArpHeader {
    const NAME: &'static str = "arp";
}

/// An ARP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpOp {
    /// 1: who has `target_ip`?
    Request,
    /// 2: `sender_ip` is at `sender_mac`.
    Reply,
    /// Any other code (RARP, InARP, ...), carried through unchanged.
    Unknown(u16),
}

impl From<u16> for ArpOp {
    fn from(v: u16) -> Self {
        match v {
            1 => Self::Request,
            2 => Self::Reply,
            other => Self::Unknown(other),
        }
    }
}

impl From<ArpOp> for u16 {
    fn from(op: ArpOp) -> Self {
        match op {
            ArpOp::Request => 1,
            ArpOp::Reply => 2,
            ArpOp::Unknown(v) => v,
        }
    }
}

/// An Ethernet/IPv4 ARP packet as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRepr {
    /// The operation.
    pub op: ArpOp,
    /// Sender hardware address.
    pub sender_mac: MacAddr,
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address (zero in a request).
    pub target_mac: MacAddr,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    /// Parses an Ethernet/IPv4 ARP packet; returns it and the offset of what follows
    /// (Ethernet padding, if any).
    pub fn parse(bytes: &[u8]) -> Result<(Self, usize), WireError> {
        let (h, _) = ArpHeader::view(bytes)?;
        let (htype, ptype) = (h.htype.get(), h.ptype.get());
        if htype != HTYPE_ETHERNET || ptype != ethertype::IPV4 || h.hlen != 6 || h.plen != 4 {
            return Err(WireError::UnsupportedArp {
                htype,
                ptype,
                hlen: h.hlen,
                plen: h.plen,
            });
        }
        let repr = Self {
            op: h.op.get().into(),
            sender_mac: h.sha,
            sender_ip: h.spa.into(),
            target_mac: h.tha,
            target_ip: h.tpa.into(),
        };
        Ok((repr, PACKET_LEN))
    }

    /// Writes the packet at the start of `out`; returns [`PACKET_LEN`].
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        ArpHeader {
            htype: HTYPE_ETHERNET.into(),
            ptype: ethertype::IPV4.into(),
            hlen: 6,
            plen: 4,
            op: u16::from(self.op).into(),
            sha: self.sender_mac,
            spa: self.sender_ip.octets(),
            tha: self.target_mac,
            tpa: self.target_ip.octets(),
        }
        .write_into(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic in a test is its failure report
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A whole ARP request frame as a Linux guest sends it: 52:54:00:12:34:56
    /// (10.0.0.1) asks who has 10.0.0.2.
    const REQUEST_FRAME: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08,
        0x06, // ethernet
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // htype, ptype, hlen, plen, op
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x0a, 0x00, 0x00, 0x01, // sender
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x02, // target
    ];

    fn request() -> ArpRepr {
        ArpRepr {
            op: ArpOp::Request,
            sender_mac: MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]),
            sender_ip: Ipv4Addr::new(10, 0, 0, 1),
            target_mac: MacAddr::ZERO,
            target_ip: Ipv4Addr::new(10, 0, 0, 2),
        }
    }

    #[test]
    fn parses_golden_request() {
        let (eth, off) = super::super::EthernetRepr::parse(&REQUEST_FRAME).unwrap();
        assert_eq!(eth.ethertype, ethertype::ARP);
        assert_eq!(
            ArpRepr::parse(&REQUEST_FRAME[off..]).unwrap(),
            (request(), 28)
        );
    }

    #[test]
    fn emits_golden_request_and_reply_op() {
        let mut out = [0u8; 28];
        assert_eq!(request().emit(&mut out).unwrap(), 28);
        assert_eq!(out, REQUEST_FRAME[14..]);
        let reply = ArpRepr {
            op: ArpOp::Reply,
            ..request()
        };
        reply.emit(&mut out).unwrap();
        assert_eq!(out[6..8], [0x00, 0x02]);
    }

    #[test]
    fn truncated_packet_is_an_error() {
        for n in 0..28 {
            assert_eq!(
                ArpRepr::parse(&REQUEST_FRAME[14..14 + n]),
                Err(WireError::Truncated {
                    what: "arp",
                    need: 28,
                    have: n
                })
            );
        }
        assert!(matches!(
            request().emit(&mut [0u8; 27]),
            Err(WireError::NoRoom { what: "arp", .. })
        ));
    }

    #[test]
    fn rejects_non_ethernet_ipv4_arp() {
        let mut p = [0u8; 28];
        p.copy_from_slice(&REQUEST_FRAME[14..]);
        p[5] = 16; // IPv6-sized protocol addresses
        assert_eq!(
            ArpRepr::parse(&p),
            Err(WireError::UnsupportedArp {
                htype: 1,
                ptype: 0x0800,
                hlen: 6,
                plen: 16
            })
        );
    }

    #[test]
    fn unknown_op_is_carried() {
        assert_eq!(ArpOp::from(3), ArpOp::Unknown(3));
        assert_eq!(u16::from(ArpOp::Unknown(3)), 3);
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = ArpRepr::parse(&bytes);
        }

        #[test]
        fn emit_then_parse_round_trips(op in any::<u16>(), sm in any::<[u8; 6]>(), si in any::<[u8; 4]>(), tm in any::<[u8; 6]>(), ti in any::<[u8; 4]>()) {
            let r = ArpRepr { op: op.into(), sender_mac: MacAddr(sm), sender_ip: si.into(), target_mac: MacAddr(tm), target_ip: ti.into() };
            let mut out = [0u8; 28];
            r.emit(&mut out).unwrap();
            prop_assert_eq!(ArpRepr::parse(&out).unwrap(), (r, 28));
        }
    }
}
