//! IPv4 header (RFC 791) with its header checksum.

use std::net::Ipv4Addr;

use zerocopy::network_endian::U16;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{Header, WireError, check_field, checksum};

/// Size of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;
/// Largest fragment offset, in 8-byte units (13 bits).
pub const FRAG_OFFSET_MAX: u16 = 0x1fff;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;

/// The fixed 20-byte IPv4 header (options, if any, follow it).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Ipv4Header {
    /// Version (high 4 bits) and header length in 32-bit words (low 4 bits).
    pub version_ihl: u8,
    /// DSCP (high 6 bits) and ECN (low 2 bits).
    pub tos: u8,
    /// Length of header and payload.
    pub total_len: U16,
    /// Identification, for reassembly.
    pub ident: U16,
    /// Flags (reserved, DF, MF) and fragment offset in 8-byte units.
    pub flags_frag: U16,
    /// Time to live.
    pub ttl: u8,
    /// Payload protocol ([`super::ip_proto`]).
    pub protocol: u8,
    /// Header checksum.
    pub checksum: U16,
    /// Source address.
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
}

impl Header for Ipv4Header {
    const NAME: &'static str = "ipv4";
}

impl Ipv4Header {
    /// The version field.
    pub fn version(&self) -> u8 {
        self.version_ihl >> 4
    }

    /// The header length in bytes (IHL * 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.version_ihl & 0x0f) * 4
    }

    /// The total length field.
    pub fn total_len(&self) -> usize {
        self.total_len.get().into()
    }

    /// Don't fragment.
    pub fn dont_frag(&self) -> bool {
        self.flags_frag.get() & FLAG_DF != 0
    }

    /// More fragments follow.
    pub fn more_frags(&self) -> bool {
        self.flags_frag.get() & FLAG_MF != 0
    }

    /// Fragment offset in 8-byte units.
    pub fn frag_offset(&self) -> u16 {
        self.flags_frag.get() & FRAG_OFFSET_MAX
    }

    /// True for any fragment of a fragmented datagram (first, middle or last).
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// Source address.
    pub fn src(&self) -> Ipv4Addr {
        self.src.into()
    }

    /// Destination address.
    pub fn dst(&self) -> Ipv4Addr {
        self.dst.into()
    }

    /// The checksum this header (without options) should carry; the current value of
    /// the checksum field does not matter.
    pub fn compute_checksum(&self) -> u16 {
        let b = self.as_bytes();
        checksum::internet_checksum(&b[12..], checksum::sum(&b[..10], 0).into())
    }
}

/// An IPv4 header as plain values. Options are skipped on parse and never emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Payload protocol ([`super::ip_proto`]).
    pub protocol: u8,
    /// Time to live.
    pub ttl: u8,
    /// DSCP and ECN byte.
    pub tos: u8,
    /// Identification.
    pub ident: u16,
    /// Don't fragment.
    pub dont_frag: bool,
    /// More fragments follow.
    pub more_frags: bool,
    /// Fragment offset in 8-byte units (0..=8191).
    pub frag_offset: u16,
    /// Payload length (total length minus header length).
    pub payload_len: usize,
}

impl Ipv4Repr {
    /// Parses and validates a header: version 4, IHL at least 5, total length within
    /// `bytes`, checksum correct. Returns it and the payload offset (after options);
    /// the payload is `payload_len` bytes from there (anything after is link padding).
    pub fn parse(bytes: &[u8]) -> Result<(Self, usize), WireError> {
        let (h, _) = Ipv4Header::view(bytes)?;
        if h.version() != 4 {
            return Err(WireError::BadVersion {
                what: Ipv4Header::NAME,
                found: h.version(),
                expected: 4,
            });
        }
        let hlen = h.header_len();
        if hlen < HEADER_LEN {
            return Err(WireError::BadHeaderLen {
                what: Ipv4Header::NAME,
                len: hlen,
                min: HEADER_LEN,
            });
        }
        let header = bytes.get(..hlen).ok_or(WireError::Truncated {
            what: Ipv4Header::NAME,
            need: hlen,
            have: bytes.len(),
        })?;
        let total = h.total_len();
        if total < hlen || total > bytes.len() {
            return Err(WireError::BadLength {
                what: Ipv4Header::NAME,
                field: total,
                min: hlen,
                have: bytes.len(),
            });
        }
        if checksum::sum(header, 0) != 0xffff {
            return Err(WireError::BadChecksum {
                what: Ipv4Header::NAME,
            });
        }
        let repr = Self {
            src: h.src(),
            dst: h.dst(),
            protocol: h.protocol,
            ttl: h.ttl,
            tos: h.tos,
            ident: h.ident.get(),
            dont_frag: h.dont_frag(),
            more_frags: h.more_frags(),
            frag_offset: h.frag_offset(),
            payload_len: total - hlen,
        };
        Ok((repr, hlen))
    }

    /// True for any fragment of a fragmented datagram.
    pub fn is_fragment(&self) -> bool {
        self.more_frags || self.frag_offset != 0
    }

    /// Writes a 20-byte header with its checksum at the start of `out`; returns
    /// [`HEADER_LEN`]. The payload is the caller's to write after it.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let max_payload = usize::from(u16::MAX) - HEADER_LEN;
        check_field(
            "ipv4 payload length",
            self.payload_len as u64,
            max_payload as u64,
        )?;
        check_field(
            "ipv4 fragment offset",
            self.frag_offset.into(),
            FRAG_OFFSET_MAX.into(),
        )?;
        let flags =
            if self.dont_frag { FLAG_DF } else { 0 } | if self.more_frags { FLAG_MF } else { 0 };
        let mut h = Ipv4Header {
            version_ihl: 0x45,
            tos: self.tos,
            total_len: ((HEADER_LEN + self.payload_len) as u16).into(),
            ident: self.ident.into(),
            flags_frag: (flags | self.frag_offset).into(),
            ttl: self.ttl,
            protocol: self.protocol,
            checksum: 0.into(),
            src: self.src.octets(),
            dst: self.dst.octets(),
        };
        h.checksum = h.compute_checksum().into();
        h.write_into(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic in a test is its failure report
mod tests {
    use super::super::ip_proto;
    use super::*;
    use proptest::prelude::*;

    /// 10.0.0.1:4000 -> 10.0.0.2:9000, UDP, 4-byte payload "ping", ident 0x1234, DF,
    /// TTL 64. Header checksum 0x1497 (checked with python3 while writing this test);
    /// UDP checksum 0x0000 (none).
    const PACKET: [u8; 32] = [
        0x45, 0x00, 0x00, 0x20, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x14,
        0x97, // ver..checksum
        0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, // src, dst
        0x0f, 0xa0, 0x23, 0x28, 0x00, 0x0c, 0x00, 0x00, // udp
        b'p', b'i', b'n', b'g',
    ];

    fn repr() -> Ipv4Repr {
        Ipv4Repr {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            protocol: ip_proto::UDP,
            ttl: 64,
            tos: 0,
            ident: 0x1234,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
            payload_len: 12,
        }
    }

    #[test]
    fn parses_golden_packet() {
        assert_eq!(Ipv4Repr::parse(&PACKET).unwrap(), (repr(), 20));
    }

    #[test]
    fn emits_golden_header_with_checksum() {
        let mut out = [0u8; 20];
        assert_eq!(repr().emit(&mut out).unwrap(), 20);
        assert_eq!(out, PACKET[..20]);
        let (h, _) = Ipv4Header::view(&out).unwrap();
        assert_eq!(h.compute_checksum(), 0x1497);
    }

    #[test]
    fn ethernet_padding_after_total_length_is_allowed() {
        let mut padded = [0u8; 46];
        padded[..32].copy_from_slice(&PACKET);
        assert_eq!(Ipv4Repr::parse(&padded).unwrap(), (repr(), 20));
    }

    #[test]
    fn truncated_header_is_an_error() {
        for n in 0..20 {
            assert_eq!(
                Ipv4Repr::parse(&PACKET[..n]),
                Err(WireError::Truncated {
                    what: "ipv4",
                    need: 20,
                    have: n
                })
            );
        }
    }

    #[test]
    fn total_length_past_the_buffer_is_an_error() {
        assert_eq!(
            Ipv4Repr::parse(&PACKET[..31]),
            Err(WireError::BadLength {
                what: "ipv4",
                field: 32,
                min: 20,
                have: 31
            })
        );
    }

    #[test]
    fn total_length_below_header_is_an_error() {
        let mut p = PACKET;
        p[3] = 19;
        assert!(matches!(
            Ipv4Repr::parse(&p),
            Err(WireError::BadLength { field: 19, .. })
        ));
    }

    #[test]
    fn rejects_bad_version_ihl_and_checksum() {
        let mut p = PACKET;
        p[0] = 0x65;
        assert_eq!(
            Ipv4Repr::parse(&p),
            Err(WireError::BadVersion {
                what: "ipv4",
                found: 6,
                expected: 4
            })
        );
        p[0] = 0x44;
        assert_eq!(
            Ipv4Repr::parse(&p),
            Err(WireError::BadHeaderLen {
                what: "ipv4",
                len: 16,
                min: 20
            })
        );
        p[0] = 0x4f;
        assert_eq!(
            Ipv4Repr::parse(&p),
            Err(WireError::Truncated {
                what: "ipv4",
                need: 60,
                have: 32
            })
        );
        let mut p = PACKET;
        p[8] = 63; // TTL changed, checksum not
        assert_eq!(
            Ipv4Repr::parse(&p),
            Err(WireError::BadChecksum { what: "ipv4" })
        );
    }

    #[test]
    fn options_are_skipped_and_checksummed() {
        // IHL 6 with one NOP-padded option word; total length 24.
        let mut h = [0u8; 24];
        h[..20].copy_from_slice(&PACKET[..20]);
        h[0] = 0x46;
        h[3] = 24;
        h[20..].copy_from_slice(&[0x01, 0x01, 0x01, 0x00]);
        h[10] = 0;
        h[11] = 0;
        let c = checksum::internet_checksum(&h, 0);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        let (r, off) = Ipv4Repr::parse(&h).unwrap();
        assert_eq!(off, 24);
        assert_eq!(r.payload_len, 0);
    }

    #[test]
    fn fragments_are_flagged() {
        let frag = Ipv4Repr {
            dont_frag: false,
            more_frags: true,
            ..repr()
        };
        assert!(frag.is_fragment());
        let last = Ipv4Repr {
            dont_frag: false,
            frag_offset: 185,
            ..repr()
        };
        assert!(last.is_fragment());
        assert!(!repr().is_fragment());
    }

    #[test]
    fn emit_refuses_oversized_payload_and_small_buffer() {
        let big = Ipv4Repr {
            payload_len: 65516,
            ..repr()
        };
        assert!(matches!(
            big.emit(&mut [0u8; 20]),
            Err(WireError::FieldOutOfRange { .. })
        ));
        assert!(matches!(
            repr().emit(&mut [0u8; 19]),
            Err(WireError::NoRoom { .. })
        ));
    }

    fn arb_repr() -> impl Strategy<Value = Ipv4Repr> {
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<(u8, u8, u8, u16)>(),
            any::<(bool, bool)>(),
            0u16..=FRAG_OFFSET_MAX,
            0usize..200,
        )
            .prop_map(
                |(
                    s,
                    d,
                    (protocol, ttl, tos, ident),
                    (dont_frag, more_frags),
                    frag_offset,
                    payload_len,
                )| Ipv4Repr {
                    src: s.into(),
                    dst: d.into(),
                    protocol,
                    ttl,
                    tos,
                    ident,
                    dont_frag,
                    more_frags,
                    frag_offset,
                    payload_len,
                },
            )
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Ipv4Repr::parse(&bytes);
        }

        #[test]
        fn parse_never_panics_on_plausible_headers(mut bytes in proptest::collection::vec(any::<u8>(), 20..100), ihl in 0u8..16) {
            bytes[0] = 0x40 | ihl;
            let _ = Ipv4Repr::parse(&bytes);
        }

        #[test]
        fn emit_then_parse_round_trips(r in arb_repr()) {
            let mut out = vec![0u8; HEADER_LEN + r.payload_len];
            r.emit(&mut out).unwrap();
            prop_assert_eq!(Ipv4Repr::parse(&out).unwrap(), (r, HEADER_LEN));
        }
    }
}
