//! Ethernet II header (IEEE 802.3 clause 3.2) and one optional IEEE 802.1Q VLAN tag.

use zerocopy::network_endian::U16;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{Header, MacAddr, WireError, check_field};

/// EtherType values (IEEE registry) used by vnetp.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// IEEE 802.1Q VLAN tag (customer TPID).
    pub const VLAN: u16 = 0x8100;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
}

/// Size of the untagged Ethernet header.
pub const HEADER_LEN: usize = 14;
/// Size of an 802.1Q tag (TCI + inner EtherType; the TPID is the outer EtherType).
pub const VLAN_TAG_LEN: usize = 4;
/// Largest valid VLAN ID (4095 is reserved, but may appear on the wire).
pub const VLAN_ID_MAX: u16 = 0x0fff;

/// The 14-byte Ethernet II header.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct EthernetHeader {
    /// Destination MAC.
    pub dst: MacAddr,
    /// Source MAC.
    pub src: MacAddr,
    /// EtherType (or [`ethertype::VLAN`] when a tag follows).
    pub ethertype: U16,
}

impl Header for EthernetHeader {
    const NAME: &'static str = "ethernet";
}

impl EthernetHeader {
    /// The EtherType field.
    pub fn ethertype(&self) -> u16 {
        self.ethertype.get()
    }
}

/// The 4 bytes of an 802.1Q tag that follow the `0x8100` TPID.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct VlanHeader {
    /// Tag control information: PCP (3 bits), DEI (1 bit), VID (12 bits).
    pub tci: U16,
    /// EtherType of the payload.
    pub ethertype: U16,
}

impl Header for VlanHeader {
    const NAME: &'static str = "vlan";
}

impl VlanHeader {
    /// The tag's fields.
    pub fn vlan(&self) -> Vlan {
        Vlan::from_tci(self.tci.get())
    }

    /// The EtherType of the payload.
    pub fn ethertype(&self) -> u16 {
        self.ethertype.get()
    }
}

/// An 802.1Q tag's control information.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Vlan {
    /// Priority code point, 0..=7.
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// VLAN identifier, 0..=4095.
    pub vid: u16,
}

impl Vlan {
    /// A tag for `vid` with priority 0.
    pub fn new(vid: u16) -> Self {
        Self {
            pcp: 0,
            dei: false,
            vid,
        }
    }

    /// Splits a TCI field.
    pub fn from_tci(tci: u16) -> Self {
        Self {
            pcp: (tci >> 13) as u8,
            dei: tci & 0x1000 != 0,
            vid: tci & VLAN_ID_MAX,
        }
    }

    /// The TCI field, or an error when a field is out of range.
    pub fn tci(&self) -> Result<u16, WireError> {
        check_field("vlan pcp", self.pcp.into(), 7)?;
        check_field("vlan id", self.vid.into(), VLAN_ID_MAX.into())?;
        Ok(u16::from(self.pcp) << 13 | u16::from(self.dei) << 12 | self.vid)
    }
}

/// An Ethernet header with at most one VLAN tag, as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetRepr {
    /// Destination MAC.
    pub dst: MacAddr,
    /// Source MAC.
    pub src: MacAddr,
    /// The 802.1Q tag, if any.
    pub vlan: Option<Vlan>,
    /// EtherType of the payload (inside the tag when tagged).
    pub ethertype: u16,
}

impl EthernetRepr {
    /// Parses the header (and one 802.1Q tag); returns it and the payload offset.
    pub fn parse(bytes: &[u8]) -> Result<(Self, usize), WireError> {
        let (eth, rest) = EthernetHeader::view(bytes)?;
        let mut repr = Self {
            dst: eth.dst,
            src: eth.src,
            vlan: None,
            ethertype: eth.ethertype(),
        };
        if repr.ethertype != ethertype::VLAN {
            return Ok((repr, HEADER_LEN));
        }
        let (tag, _) = VlanHeader::view(rest).map_err(|_| WireError::Truncated {
            what: VlanHeader::NAME,
            need: HEADER_LEN + VLAN_TAG_LEN,
            have: bytes.len(),
        })?;
        repr.vlan = Some(tag.vlan());
        repr.ethertype = tag.ethertype();
        Ok((repr, HEADER_LEN + VLAN_TAG_LEN))
    }

    /// Bytes [`EthernetRepr::emit`] writes: 14, or 18 with a tag.
    pub fn header_len(&self) -> usize {
        if self.vlan.is_some() {
            HEADER_LEN + VLAN_TAG_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Writes the header at the start of `out`; returns its length.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let need = self.header_len();
        if out.len() < need {
            return Err(WireError::NoRoom {
                what: EthernetHeader::NAME,
                need,
                have: out.len(),
            });
        }
        let (outer_type, tag) = match self.vlan {
            Some(v) => (
                ethertype::VLAN,
                Some(VlanHeader {
                    tci: v.tci()?.into(),
                    ethertype: self.ethertype.into(),
                }),
            ),
            None => (self.ethertype, None),
        };
        let eth = EthernetHeader {
            dst: self.dst,
            src: self.src,
            ethertype: outer_type.into(),
        };
        let n = eth.write_into(out)?;
        match tag {
            Some(t) => Ok(n + t.write_into(&mut out[n..])?),
            None => Ok(n),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic in a test is its failure report
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UNTAGGED: [u8; 14] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst: broadcast
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // src
        0x08, 0x06, // ARP
    ];

    const TAGGED: [u8; 18] = [
        0x52, 0x54, 0x00, 0x00, 0x00, 0x02, // dst
        0x52, 0x54, 0x00, 0x00, 0x00, 0x01, // src
        0x81, 0x00, // 802.1Q
        0xa0, 0x64, // PCP 5, DEI 0, VID 100
        0x86, 0xdd, // IPv6
    ];

    #[test]
    fn parses_untagged_arp_broadcast() {
        let (r, off) = EthernetRepr::parse(&UNTAGGED).unwrap();
        assert_eq!(off, 14);
        assert_eq!(r.dst, MacAddr::BROADCAST);
        assert_eq!(r.src, MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]));
        assert_eq!(r.vlan, None);
        assert_eq!(r.ethertype, ethertype::ARP);
    }

    #[test]
    fn parses_tagged_frame() {
        let (r, off) = EthernetRepr::parse(&TAGGED).unwrap();
        assert_eq!(off, 18);
        assert_eq!(
            r.vlan,
            Some(Vlan {
                pcp: 5,
                dei: false,
                vid: 100
            })
        );
        assert_eq!(r.ethertype, ethertype::IPV6);
    }

    #[test]
    fn emits_golden_bytes() {
        for golden in [&UNTAGGED[..], &TAGGED[..]] {
            let (r, _) = EthernetRepr::parse(golden).unwrap();
            let mut out = [0u8; 18];
            let n = r.emit(&mut out).unwrap();
            assert_eq!(&out[..n], golden);
        }
    }

    #[test]
    fn truncated_header_and_tag_are_errors() {
        for n in 0..14 {
            assert_eq!(
                EthernetRepr::parse(&UNTAGGED[..n]),
                Err(WireError::Truncated {
                    what: "ethernet",
                    need: 14,
                    have: n
                })
            );
        }
        for n in 14..18 {
            assert_eq!(
                EthernetRepr::parse(&TAGGED[..n]),
                Err(WireError::Truncated {
                    what: "vlan",
                    need: 18,
                    have: n
                })
            );
        }
    }

    #[test]
    fn emit_refuses_small_buffer_and_bad_vid() {
        let (r, _) = EthernetRepr::parse(&TAGGED).unwrap();
        assert_eq!(
            r.emit(&mut [0u8; 17]),
            Err(WireError::NoRoom {
                what: "ethernet",
                need: 18,
                have: 17
            })
        );
        let bad = EthernetRepr {
            vlan: Some(Vlan::new(4096)),
            ..r
        };
        assert!(matches!(
            bad.emit(&mut [0u8; 18]),
            Err(WireError::FieldOutOfRange {
                what: "vlan id",
                ..
            })
        ));
    }

    fn arb_repr() -> impl Strategy<Value = EthernetRepr> {
        let vlan = proptest::option::of(
            (0u8..8, any::<bool>(), 0u16..4096).prop_map(|(pcp, dei, vid)| Vlan { pcp, dei, vid }),
        );
        (any::<[u8; 6]>(), any::<[u8; 6]>(), vlan, any::<u16>())
            .prop_filter(
                "untagged repr cannot carry the VLAN type",
                |(_, _, v, t)| v.is_some() || *t != ethertype::VLAN,
            )
            .prop_map(|(d, s, vlan, ethertype)| EthernetRepr {
                dst: MacAddr(d),
                src: MacAddr(s),
                vlan,
                ethertype,
            })
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = EthernetRepr::parse(&bytes);
        }

        #[test]
        fn emit_then_parse_round_trips(r in arb_repr()) {
            let mut out = [0u8; 18];
            let n = r.emit(&mut out).unwrap();
            prop_assert_eq!(EthernetRepr::parse(&out[..n]).unwrap(), (r, n));
        }
    }
}
