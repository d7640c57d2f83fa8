//! The virtio-net header (virtio 1.2, 5.1.6 "struct virtio_net_hdr"): the 12 bytes in
//! front of every frame between a guest (or a tap with `IFF_VNET_HDR`) and us, carrying
//! checksum and segmentation offload requests. Little-endian, as in virtio 1.x.

use pkt::OffloadMeta;
use zerocopy::little_endian::U16;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::checksum::OffloadError;

/// Size of the header with `num_buffers` (virtio 1.x, or legacy with mergeable
/// receive buffers).
pub const LEN: usize = 12;

/// `VIRTIO_NET_HDR_F_*` flags.
pub mod flags {
    /// The L4 checksum is partial: complete it from `csum_start` into
    /// `csum_start + csum_offset`.
    pub const NEEDS_CSUM: u8 = 1;
    /// The checksum has been validated (receive only).
    pub const DATA_VALID: u8 = 2;
    /// `csum_start`/`csum_offset` carry coalescing info (receive only, `VIRTIO_NET_F_RSC_EXT`).
    pub const RSC_INFO: u8 = 4;
    /// Every flag defined by virtio 1.2.
    pub const ALL: u8 = NEEDS_CSUM | DATA_VALID | RSC_INFO;
}

pub use flags::{DATA_VALID, NEEDS_CSUM, RSC_INFO};

/// `VIRTIO_NET_HDR_GSO_*` types.
pub mod gso {
    /// No segmentation.
    pub const NONE: u8 = 0;
    /// TCP over IPv4 (TSO).
    pub const TCPV4: u8 = 1;
    /// UDP fragmentation offload (UFO, deprecated).
    pub const UDP: u8 = 3;
    /// TCP over IPv6 (TSO).
    pub const TCPV6: u8 = 4;
    /// UDP segmentation (USO, virtio 1.2).
    pub const UDP_L4: u8 = 5;
    /// Flag: the TCP segments carry ECN (CWR set on the first only).
    pub const ECN: u8 = 0x80;
}

/// The 12-byte virtio-net header.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct VirtioNetHdr {
    /// [`flags`].
    pub flags: u8,
    /// [`gso`] type, possibly with [`gso::ECN`].
    pub gso_type: u8,
    /// Length of the headers to replicate per segment.
    pub hdr_len: U16,
    /// Maximum segment payload size.
    pub gso_size: U16,
    /// Where checksumming starts.
    pub csum_start: U16,
    /// Where the checksum goes, relative to `csum_start`.
    pub csum_offset: U16,
    /// Receive buffers this frame spans (mergeable receive buffers); 0 on transmit.
    pub num_buffers: U16,
}

impl VirtioNetHdr {
    /// The header for `meta`, with `num_buffers` for a mergeable receive.
    pub fn from_meta(meta: &OffloadMeta, num_buffers: u16) -> Self {
        Self {
            flags: meta.flags,
            gso_type: meta.gso_type,
            hdr_len: meta.hdr_len.into(),
            gso_size: meta.gso_size.into(),
            csum_start: meta.csum_start.into(),
            csum_offset: meta.csum_offset.into(),
            num_buffers: num_buffers.into(),
        }
    }

    /// The offload fields as metadata, unchecked.
    pub fn to_meta(&self) -> OffloadMeta {
        OffloadMeta {
            flags: self.flags,
            gso_type: self.gso_type,
            hdr_len: self.hdr_len.get(),
            gso_size: self.gso_size.get(),
            csum_start: self.csum_start.get(),
            csum_offset: self.csum_offset.get(),
        }
    }

    /// Checks the flags and GSO type are ones virtio 1.2 defines, and that a GSO
    /// request has a segment size.
    pub fn validate(&self) -> Result<(), OffloadError> {
        if self.flags & !flags::ALL != 0 {
            return Err(OffloadError::BadFlags(self.flags));
        }
        let kind = self.gso_type & !gso::ECN;
        match kind {
            gso::NONE => Ok(()),
            gso::TCPV4 | gso::UDP | gso::TCPV6 | gso::UDP_L4 if self.gso_size.get() == 0 => {
                Err(OffloadError::ZeroGsoSize {
                    gso_type: self.gso_type,
                })
            }
            gso::TCPV4 | gso::UDP | gso::TCPV6 | gso::UDP_L4 => Ok(()),
            _ => Err(OffloadError::BadGsoType(self.gso_type)),
        }
    }
}

impl From<&VirtioNetHdr> for OffloadMeta {
    fn from(h: &VirtioNetHdr) -> Self {
        h.to_meta()
    }
}

impl From<&OffloadMeta> for VirtioNetHdr {
    fn from(meta: &OffloadMeta) -> Self {
        Self::from_meta(meta, 0)
    }
}

/// Parses and validates the header at the start of `bytes`; returns its offload
/// metadata and the frame offset ([`LEN`]). `num_buffers` is ignored (it means
/// nothing on transmit).
pub fn parse(bytes: &[u8]) -> Result<(OffloadMeta, usize), OffloadError> {
    let (h, _) = VirtioNetHdr::ref_from_prefix(bytes).map_err(|_| OffloadError::Truncated {
        what: "virtio-net header",
        need: LEN,
        have: bytes.len(),
    })?;
    h.validate()?;
    Ok((h.to_meta(), LEN))
}

/// Writes the header for `meta` at the start of `out`; returns [`LEN`].
pub fn emit(meta: &OffloadMeta, num_buffers: u16, out: &mut [u8]) -> Result<usize, OffloadError> {
    let have = out.len();
    VirtioNetHdr::from_meta(meta, num_buffers)
        .write_to_prefix(out)
        .map_err(|_| OffloadError::NoRoom {
            what: "virtio-net header",
            need: LEN,
            have,
        })?;
    Ok(LEN)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic in a test is its failure report
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A TSOv4 request as a Linux guest sends it for a 14+20+32-byte header stack:
    /// NEEDS_CSUM, TCPV4, hdr_len 66, gso_size 1448, csum_start 34, csum_offset 16.
    const TSO4: [u8; 12] = [
        0x01, 0x01, 0x42, 0x00, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00, 0x00, 0x00,
    ];

    fn tso4() -> OffloadMeta {
        OffloadMeta {
            flags: 1,
            gso_type: 1,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        }
    }

    #[test]
    fn header_is_12_bytes() {
        assert_eq!(size_of::<VirtioNetHdr>(), LEN);
    }

    #[test]
    fn parses_golden_tso4() {
        assert_eq!(parse(&TSO4).unwrap(), (tso4(), 12));
    }

    #[test]
    fn emits_golden_tso4_and_receive_header() {
        let mut out = [0xffu8; 12];
        assert_eq!(emit(&tso4(), 0, &mut out).unwrap(), 12);
        assert_eq!(out, TSO4);
        let rx = OffloadMeta {
            flags: flags::DATA_VALID,
            ..Default::default()
        };
        emit(&rx, 3, &mut out).unwrap();
        assert_eq!(out, [0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x03, 0x00]);
    }

    #[test]
    fn truncated_header_is_an_error() {
        for n in 0..12 {
            assert_eq!(
                parse(&TSO4[..n]),
                Err(OffloadError::Truncated {
                    what: "virtio-net header",
                    need: 12,
                    have: n
                })
            );
        }
        assert!(matches!(
            emit(&tso4(), 0, &mut [0u8; 11]),
            Err(OffloadError::NoRoom { .. })
        ));
    }

    #[test]
    fn rejects_unknown_flags_and_gso_types() {
        let mut h = TSO4;
        h[0] = 0x09;
        assert_eq!(parse(&h), Err(OffloadError::BadFlags(0x09)));
        let mut h = TSO4;
        h[1] = 2;
        assert_eq!(parse(&h), Err(OffloadError::BadGsoType(2)));
        h[1] = gso::TCPV6 | gso::ECN;
        assert!(parse(&h).is_ok());
        h[4] = 0;
        h[5] = 0;
        assert_eq!(parse(&h), Err(OffloadError::ZeroGsoSize { gso_type: 0x84 }));
    }

    #[test]
    fn meta_conversions_round_trip() {
        let h = VirtioNetHdr::from(&tso4());
        assert_eq!(OffloadMeta::from(&h), tso4());
        assert_eq!(h.num_buffers.get(), 0);
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn emit_then_parse_round_trips(f in 0u8..8, g in prop::sample::select(vec![0u8, 1, 3, 4, 5, 0x81, 0x84]), hl in any::<u16>(), gs in 1u16.., cs in any::<u16>(), co in any::<u16>(), nb in any::<u16>()) {
            let meta = OffloadMeta { flags: f, gso_type: g, hdr_len: hl, gso_size: gs, csum_start: cs, csum_offset: co };
            let mut out = [0u8; 12];
            emit(&meta, nb, &mut out).unwrap();
            prop_assert_eq!(parse(&out).unwrap(), (meta, 12));
        }
    }
}
