//! Zero-copy views of wire headers: `zerocopy` `#[repr(C)]` structs with
//! network-endian fields, and smoltcp-style checked parsing and emitting.
//!
//! Every header has a fixed-size struct implementing [`Header`] (a bounds-checked view
//! over bytes with typed accessors) and a `Repr` of plain Rust values with
//! `parse(&[u8]) -> Result<(Repr, payload_offset), WireError>` and
//! `emit(&self, &mut [u8]) -> Result<header_len, WireError>`. Parsing never panics on
//! any input; every rejection is a precise [`WireError`].

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod ipv4;
pub mod ipv6;
mod mac;
pub mod udp;
pub mod vxlan;

pub use arp::{ArpHeader, ArpOp, ArpRepr};
pub use ethernet::{EthernetHeader, EthernetRepr, Vlan, VlanHeader, ethertype};
pub use ipv4::{Ipv4Header, Ipv4Repr};
pub use ipv6::{Ipv6Header, Ipv6Repr};
pub use mac::{MacAddr, MacParseError};
pub use udp::{UdpHeader, UdpRepr};
pub use vxlan::{VxlanHeader, VxlanRepr};

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// IP protocol numbers (IANA "Assigned Internet Protocol Numbers"), as carried in the
/// IPv4 protocol and IPv6 next-header fields.
pub mod ip_proto {
    /// IPv6 hop-by-hop options.
    pub const HOPOPT: u8 = 0;
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 routing header.
    pub const IPV6_ROUTE: u8 = 43;
    /// IPv6 fragment header.
    pub const IPV6_FRAG: u8 = 44;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// IPv6 destination options.
    pub const IPV6_OPTS: u8 = 60;
    /// SCTP.
    pub const SCTP: u8 = 132;
}

/// Why bytes are not a valid header, or a header does not fit where it is emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the header (or the length it announces) needs.
    #[error("{what}: truncated: need {need} bytes, have {have}")]
    Truncated {
        /// The header.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The version field is not the expected one.
    #[error("{what}: version {found}, expected {expected}")]
    BadVersion {
        /// The header.
        what: &'static str,
        /// Version found.
        found: u8,
        /// Version expected.
        expected: u8,
    },
    /// A header-length field below the header's minimum size.
    #[error("{what}: header length {len} bytes is below the minimum of {min}")]
    BadHeaderLen {
        /// The header.
        what: &'static str,
        /// Header length the field announces, in bytes.
        len: usize,
        /// Smallest valid header length.
        min: usize,
    },
    /// A length field outside `min..=have`.
    #[error("{what}: length field {field} is outside {min}..={have}")]
    BadLength {
        /// The header.
        what: &'static str,
        /// Value of the length field, in bytes.
        field: usize,
        /// Smallest valid value (the header's own size).
        min: usize,
        /// Largest valid value (the bytes available).
        have: usize,
    },
    /// A header checksum that does not verify.
    #[error("{what}: bad checksum")]
    BadChecksum {
        /// The header.
        what: &'static str,
    },
    /// A VXLAN header without the I (valid VNI) flag.
    #[error("vxlan: I flag missing (flags {flags:#04x})")]
    MissingVxlanFlag {
        /// The flags byte found.
        flags: u8,
    },
    /// ARP for something other than Ethernet hardware and IPv4 protocol addresses.
    #[error("arp: unsupported htype {htype:#06x}, ptype {ptype:#06x}, hlen {hlen}, plen {plen}")]
    UnsupportedArp {
        /// Hardware type.
        htype: u16,
        /// Protocol type.
        ptype: u16,
        /// Hardware address length.
        hlen: u8,
        /// Protocol address length.
        plen: u8,
    },
    /// Emitting: the output buffer is smaller than the header.
    #[error("{what}: no room to emit: need {need} bytes, have {have}")]
    NoRoom {
        /// The header.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// Emitting: a value does not fit its wire field.
    #[error("{what}: value {value} does not fit its field (max {max})")]
    FieldOutOfRange {
        /// The field.
        what: &'static str,
        /// Value given.
        value: u64,
        /// Largest value the field holds.
        max: u64,
    },
}

/// A fixed-size wire header: a `zerocopy` struct that can be viewed in place over bytes.
///
/// The views check only that enough bytes are there; semantic checks (version,
/// lengths, checksums) are the job of each header's `Repr::parse`.
pub trait Header: FromBytes + IntoBytes + KnownLayout + Immutable + Unaligned + Sized {
    /// Name used in errors and counters (`"ipv4"`, `"udp"`, ...).
    const NAME: &'static str;
    /// Size of the header on the wire.
    const LEN: usize = size_of::<Self>();

    /// The header at the start of `bytes`, and the bytes after it.
    fn view(bytes: &[u8]) -> Result<(&Self, &[u8]), WireError> {
        Self::ref_from_prefix(bytes).map_err(|_| WireError::Truncated {
            what: Self::NAME,
            need: Self::LEN,
            have: bytes.len(),
        })
    }

    /// The header at the start of `bytes`, writable, and the bytes after it.
    fn view_mut(bytes: &mut [u8]) -> Result<(&mut Self, &mut [u8]), WireError> {
        let have = bytes.len();
        Self::mut_from_prefix(bytes).map_err(|_| WireError::NoRoom {
            what: Self::NAME,
            need: Self::LEN,
            have,
        })
    }

    /// Copies the header to the start of `out`; returns [`Header::LEN`].
    fn write_into(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let have = out.len();
        self.write_to_prefix(out).map_err(|_| WireError::NoRoom {
            what: Self::NAME,
            need: Self::LEN,
            have,
        })?;
        Ok(Self::LEN)
    }
}

/// `value` as a field of at most `max`, or [`WireError::FieldOutOfRange`].
fn check_field(what: &'static str, value: u64, max: u64) -> Result<(), WireError> {
    if value > max {
        return Err(WireError::FieldOutOfRange { what, value, max });
    }
    Ok(())
}
