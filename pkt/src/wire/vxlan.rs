//! VXLAN header (RFC 7348 section 5).

use zerocopy::network_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{Header, WireError, check_field};

/// Size of the VXLAN header.
pub const HEADER_LEN: usize = 8;
/// The I flag: the VNI is valid. RFC 7348 requires it.
pub const FLAG_I: u8 = 0x08;
/// Largest VNI (24 bits).
pub const VNI_MAX: u32 = 0x00ff_ffff;
/// IANA port for VXLAN.
pub const PORT: u16 = 4789;

/// The 8-byte VXLAN header.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct VxlanHeader {
    /// Flags; only [`FLAG_I`] is defined.
    pub flags: u8,
    /// Reserved, ignored on receive.
    pub reserved: [u8; 3],
    /// VNI (high 24 bits) and a reserved byte.
    pub vni_reserved: U32,
}

impl Header for VxlanHeader {
    const NAME: &'static str = "vxlan";
}

impl VxlanHeader {
    /// The VNI field (whether or not the I flag is set).
    pub fn vni(&self) -> u32 {
        self.vni_reserved.get() >> 8
    }
}

/// A VXLAN header as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VxlanRepr {
    /// The 24-bit VXLAN network identifier.
    pub vni: u32,
}

impl VxlanRepr {
    /// Parses the header: the I flag must be set; reserved bits are ignored as RFC
    /// 7348 says. Returns it and the offset of the inner frame (8).
    pub fn parse(bytes: &[u8]) -> Result<(Self, usize), WireError> {
        let (h, _) = VxlanHeader::view(bytes)?;
        if h.flags & FLAG_I == 0 {
            return Err(WireError::MissingVxlanFlag { flags: h.flags });
        }
        Ok((Self { vni: h.vni() }, HEADER_LEN))
    }

    /// Writes the header at the start of `out`; returns [`HEADER_LEN`].
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        check_field("vxlan vni", self.vni.into(), VNI_MAX.into())?;
        VxlanHeader {
            flags: FLAG_I,
            reserved: [0; 3],
            vni_reserved: (self.vni << 8).into(),
        }
        .write_into(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic in a test is its failure report
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn vni_42_is_golden() {
        let golden = [0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, 0x00];
        let mut out = [0u8; 8];
        assert_eq!(VxlanRepr { vni: 42 }.emit(&mut out).unwrap(), 8);
        assert_eq!(out, golden);
        assert_eq!(
            VxlanRepr::parse(&golden).unwrap(),
            (VxlanRepr { vni: 42 }, 8)
        );
    }

    #[test]
    fn largest_vni_and_reserved_bits() {
        // Reserved bits set by a sender must be ignored.
        let bytes = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(VxlanRepr::parse(&bytes).unwrap().0.vni, VNI_MAX);
    }

    #[test]
    fn missing_i_flag_is_an_error() {
        let bytes = [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, 0x00];
        assert_eq!(
            VxlanRepr::parse(&bytes),
            Err(WireError::MissingVxlanFlag { flags: 0 })
        );
    }

    #[test]
    fn truncated_header_is_an_error() {
        let golden = [0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, 0x00];
        for n in 0..8 {
            assert_eq!(
                VxlanRepr::parse(&golden[..n]),
                Err(WireError::Truncated {
                    what: "vxlan",
                    need: 8,
                    have: n
                })
            );
        }
    }

    #[test]
    fn emit_refuses_wide_vni() {
        assert_eq!(
            VxlanRepr { vni: 1 << 24 }.emit(&mut [0u8; 8]),
            Err(WireError::FieldOutOfRange {
                what: "vxlan vni",
                value: 1 << 24,
                max: 0xff_ffff
            })
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = VxlanRepr::parse(&bytes);
        }

        #[test]
        fn emit_then_parse_round_trips(vni in 0u32..=VNI_MAX) {
            let mut out = [0u8; 8];
            VxlanRepr { vni }.emit(&mut out).unwrap();
            prop_assert_eq!(VxlanRepr::parse(&out).unwrap(), (VxlanRepr { vni }, 8));
        }
    }
}
