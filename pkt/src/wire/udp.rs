//! UDP header (RFC 768). The checksum needs the IP pseudo-header, so it is computed
//! and verified in `offload`; here it is carried as a plain field.

use zerocopy::network_endian::U16;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{Header, WireError, check_field};

/// Size of the UDP header.
pub const HEADER_LEN: usize = 8;
/// Offset of the checksum field inside the header.
pub const CHECKSUM_OFFSET: usize = 6;

/// The 8-byte UDP header.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct UdpHeader {
    /// Source port.
    pub src_port: U16,
    /// Destination port.
    pub dst_port: U16,
    /// Length of header and payload.
    pub len: U16,
    /// Checksum (0: none, IPv4 only).
    pub checksum: U16,
}

impl Header for UdpHeader {
    const NAME: &'static str = "udp";
}

impl UdpHeader {
    /// Source port.
    pub fn src_port(&self) -> u16 {
        self.src_port.get()
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        self.dst_port.get()
    }

    /// The length field.
    pub fn len(&self) -> usize {
        self.len.get().into()
    }

    /// True when the length field is 0 (never valid outside IPv6 jumbograms).
    pub fn is_empty(&self) -> bool {
        self.len.get() == 0
    }
}

/// A UDP header as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Payload length (length field minus 8).
    pub payload_len: usize,
    /// The checksum field as found or to be written (not verified here).
    pub checksum: u16,
}

impl UdpRepr {
    /// Parses the header: the length field must be at least 8 and fit in `bytes`.
    /// Returns it and the payload offset (8); the payload is `payload_len` bytes.
    pub fn parse(bytes: &[u8]) -> Result<(Self, usize), WireError> {
        let (h, _) = UdpHeader::view(bytes)?;
        if h.len() < HEADER_LEN || h.len() > bytes.len() {
            return Err(WireError::BadLength {
                what: UdpHeader::NAME,
                field: h.len(),
                min: HEADER_LEN,
                have: bytes.len(),
            });
        }
        let repr = Self {
            src_port: h.src_port(),
            dst_port: h.dst_port(),
            payload_len: h.len() - HEADER_LEN,
            checksum: h.checksum.get(),
        };
        Ok((repr, HEADER_LEN))
    }

    /// Writes the header at the start of `out`; returns [`HEADER_LEN`].
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let max_payload = usize::from(u16::MAX) - HEADER_LEN;
        check_field(
            "udp payload length",
            self.payload_len as u64,
            max_payload as u64,
        )?;
        UdpHeader {
            src_port: self.src_port.into(),
            dst_port: self.dst_port.into(),
            len: ((HEADER_LEN + self.payload_len) as u16).into(),
            checksum: self.checksum.into(),
        }
        .write_into(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic in a test is its failure report
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Port 4000 -> 9000, 4-byte payload "ping", checksum 0xbeef (not verified here).
    const DATAGRAM: [u8; 12] = [
        0x0f, 0xa0, 0x23, 0x28, 0x00, 0x0c, 0xbe, 0xef, b'p', b'i', b'n', b'g',
    ];

    fn repr() -> UdpRepr {
        UdpRepr {
            src_port: 4000,
            dst_port: 9000,
            payload_len: 4,
            checksum: 0xbeef,
        }
    }

    #[test]
    fn parses_and_emits_golden_datagram() {
        assert_eq!(UdpRepr::parse(&DATAGRAM).unwrap(), (repr(), 8));
        let mut out = [0u8; 8];
        assert_eq!(repr().emit(&mut out).unwrap(), 8);
        assert_eq!(out, DATAGRAM[..8]);
    }

    #[test]
    fn truncated_header_is_an_error() {
        for n in 0..8 {
            assert_eq!(
                UdpRepr::parse(&DATAGRAM[..n]),
                Err(WireError::Truncated {
                    what: "udp",
                    need: 8,
                    have: n
                })
            );
        }
    }

    #[test]
    fn length_field_is_checked_both_ways() {
        assert_eq!(
            UdpRepr::parse(&DATAGRAM[..11]),
            Err(WireError::BadLength {
                what: "udp",
                field: 12,
                min: 8,
                have: 11
            })
        );
        let mut d = DATAGRAM;
        d[5] = 7;
        assert_eq!(
            UdpRepr::parse(&d),
            Err(WireError::BadLength {
                what: "udp",
                field: 7,
                min: 8,
                have: 12
            })
        );
    }

    #[test]
    fn emit_refuses_oversized_payload() {
        let big = UdpRepr {
            payload_len: 65528,
            ..repr()
        };
        assert!(matches!(
            big.emit(&mut [0u8; 8]),
            Err(WireError::FieldOutOfRange { .. })
        ));
        assert!(matches!(
            repr().emit(&mut [0u8; 7]),
            Err(WireError::NoRoom { .. })
        ));
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = UdpRepr::parse(&bytes);
        }

        #[test]
        fn emit_then_parse_round_trips(sp in any::<u16>(), dp in any::<u16>(), len in 0usize..100, csum in any::<u16>()) {
            let r = UdpRepr { src_port: sp, dst_port: dp, payload_len: len, checksum: csum };
            let mut out = vec![0u8; HEADER_LEN + len];
            r.emit(&mut out).unwrap();
            prop_assert_eq!(UdpRepr::parse(&out).unwrap(), (r, HEADER_LEN));
        }
    }
}
