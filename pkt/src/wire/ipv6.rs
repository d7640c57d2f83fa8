//! The fixed IPv6 header (RFC 8200 section 3). Extension headers are not parsed: they
//! are the payload, announced by `next_header`.

use std::net::Ipv6Addr;

use zerocopy::network_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{Header, WireError, check_field};

/// Size of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;
/// Largest flow label (20 bits).
pub const FLOW_LABEL_MAX: u32 = 0xf_ffff;

/// The fixed 40-byte IPv6 header.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Ipv6Header {
    /// Version (4 bits), traffic class (8 bits), flow label (20 bits).
    pub version_tc_flow: U32,
    /// Length of everything after this header.
    pub payload_len: U16,
    /// Type of the next header ([`super::ip_proto`]).
    pub next_header: u8,
    /// Hop limit.
    pub hop_limit: u8,
    /// Source address.
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
}

impl Header for Ipv6Header {
    const NAME: &'static str = "ipv6";
}

impl Ipv6Header {
    /// The version field.
    pub fn version(&self) -> u8 {
        (self.version_tc_flow.get() >> 28) as u8
    }

    /// The traffic class.
    pub fn traffic_class(&self) -> u8 {
        (self.version_tc_flow.get() >> 20) as u8
    }

    /// The flow label.
    pub fn flow_label(&self) -> u32 {
        self.version_tc_flow.get() & FLOW_LABEL_MAX
    }

    /// The payload length field.
    pub fn payload_len(&self) -> usize {
        self.payload_len.get().into()
    }

    /// Source address.
    pub fn src(&self) -> Ipv6Addr {
        self.src.into()
    }

    /// Destination address.
    pub fn dst(&self) -> Ipv6Addr {
        self.dst.into()
    }
}

/// An IPv6 header as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Type of the next header ([`super::ip_proto`]).
    pub next_header: u8,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class (DSCP and ECN).
    pub traffic_class: u8,
    /// Flow label (0..=0xfffff).
    pub flow_label: u32,
    /// Length of everything after the fixed header.
    pub payload_len: usize,
}

impl Ipv6Repr {
    /// Parses and validates the fixed header: version 6, payload length within
    /// `bytes`. Returns it and the payload offset (40).
    pub fn parse(bytes: &[u8]) -> Result<(Self, usize), WireError> {
        let (h, rest) = Ipv6Header::view(bytes)?;
        if h.version() != 6 {
            return Err(WireError::BadVersion {
                what: Ipv6Header::NAME,
                found: h.version(),
                expected: 6,
            });
        }
        if h.payload_len() > rest.len() {
            return Err(WireError::BadLength {
                what: Ipv6Header::NAME,
                field: h.payload_len(),
                min: 0,
                have: rest.len(),
            });
        }
        let repr = Self {
            src: h.src(),
            dst: h.dst(),
            next_header: h.next_header,
            hop_limit: h.hop_limit,
            traffic_class: h.traffic_class(),
            flow_label: h.flow_label(),
            payload_len: h.payload_len(),
        };
        Ok((repr, HEADER_LEN))
    }

    /// Writes the header at the start of `out`; returns [`HEADER_LEN`].
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        check_field(
            "ipv6 payload length",
            self.payload_len as u64,
            u16::MAX.into(),
        )?;
        check_field(
            "ipv6 flow label",
            self.flow_label.into(),
            FLOW_LABEL_MAX.into(),
        )?;
        let first = 6 << 28 | u32::from(self.traffic_class) << 20 | self.flow_label;
        Ipv6Header {
            version_tc_flow: first.into(),
            payload_len: (self.payload_len as u16).into(),
            next_header: self.next_header,
            hop_limit: self.hop_limit,
            src: self.src.octets(),
            dst: self.dst.octets(),
        }
        .write_into(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic in a test is its failure report
mod tests {
    use super::super::ip_proto;
    use super::*;
    use proptest::prelude::*;

    /// fd00::1 -> fd00::2, UDP, traffic class 0, flow label 0x12345, hop limit 64,
    /// payload length 12.
    const HEADER: [u8; 40] = [
        0x60, 0x01, 0x23, 0x45, 0x00, 0x0c, 0x11, 0x40, // ver/tc/flow, len, nh, hops
        0xfd, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // src
        0xfd, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // dst
    ];

    fn repr() -> Ipv6Repr {
        Ipv6Repr {
            src: "fd00::1".parse().unwrap(),
            dst: "fd00::2".parse().unwrap(),
            next_header: ip_proto::UDP,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0x12345,
            payload_len: 12,
        }
    }

    fn packet() -> Vec<u8> {
        let mut p = HEADER.to_vec();
        p.extend_from_slice(&[0u8; 12]);
        p
    }

    #[test]
    fn parses_golden_header() {
        assert_eq!(Ipv6Repr::parse(&packet()).unwrap(), (repr(), 40));
    }

    #[test]
    fn emits_golden_header() {
        let mut out = [0u8; 40];
        assert_eq!(repr().emit(&mut out).unwrap(), 40);
        assert_eq!(out, HEADER);
    }

    #[test]
    fn truncated_header_is_an_error() {
        for n in 0..40 {
            assert_eq!(
                Ipv6Repr::parse(&HEADER[..n]),
                Err(WireError::Truncated {
                    what: "ipv6",
                    need: 40,
                    have: n
                })
            );
        }
    }

    #[test]
    fn payload_length_past_the_buffer_is_an_error() {
        assert_eq!(
            Ipv6Repr::parse(&packet()[..51]),
            Err(WireError::BadLength {
                what: "ipv6",
                field: 12,
                min: 0,
                have: 11
            })
        );
    }

    #[test]
    fn rejects_bad_version() {
        let mut p = packet();
        p[0] = 0x40;
        assert_eq!(
            Ipv6Repr::parse(&p),
            Err(WireError::BadVersion {
                what: "ipv6",
                found: 4,
                expected: 6
            })
        );
    }

    #[test]
    fn emit_refuses_bad_fields_and_small_buffer() {
        let big = Ipv6Repr {
            payload_len: 65536,
            ..repr()
        };
        assert!(matches!(
            big.emit(&mut [0u8; 40]),
            Err(WireError::FieldOutOfRange { .. })
        ));
        let flow = Ipv6Repr {
            flow_label: 0x10_0000,
            ..repr()
        };
        assert!(matches!(
            flow.emit(&mut [0u8; 40]),
            Err(WireError::FieldOutOfRange {
                what: "ipv6 flow label",
                ..
            })
        ));
        assert!(matches!(
            repr().emit(&mut [0u8; 39]),
            Err(WireError::NoRoom { .. })
        ));
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Ipv6Repr::parse(&bytes);
        }

        #[test]
        fn emit_then_parse_round_trips(s in any::<[u8; 16]>(), d in any::<[u8; 16]>(), nh in any::<u8>(), hl in any::<u8>(), tc in any::<u8>(), fl in 0u32..=FLOW_LABEL_MAX, len in 0usize..100) {
            let r = Ipv6Repr { src: s.into(), dst: d.into(), next_header: nh, hop_limit: hl, traffic_class: tc, flow_label: fl, payload_len: len };
            let mut out = vec![0u8; HEADER_LEN + len];
            r.emit(&mut out).unwrap();
            prop_assert_eq!(Ipv6Repr::parse(&out).unwrap(), (r, HEADER_LEN));
        }
    }
}
