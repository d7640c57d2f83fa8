//! Small types shared by the routing table, the control protocol and the engine.

use std::fmt;

use pkt::wire::MacAddr;

/// An endpoint of the overlay, by its stable slot number in the engine's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// A guest-facing interface on this host.
    Interface(u16),
    /// A link (tunnel) to a peer host.
    Link(u16),
}

/// An endpoint named by the user (config file or control socket).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EndpointRef {
    /// `interface NAME` / `{ interface = "NAME" }`.
    Interface(String),
    /// `link NAME` / `edge NAME` / `{ link = "NAME" }`.
    Link(String),
}

impl fmt::Display for EndpointRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Interface(n) => write!(f, "interface:{n}"),
            Self::Link(n) => write!(f, "link:{n}"),
        }
    }
}

/// How a route matches one MAC address (VNET/P's qualifiers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MacMatch {
    /// `any`: every MAC.
    Any,
    /// `none`: no MAC; the route is inert.
    None,
    /// `not-<mac>`: every MAC but this one.
    Not(MacAddr),
    /// A literal MAC ("direct"): exactly this one.
    Exact(MacAddr),
}

impl fmt::Display for MacMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::None => f.write_str("none"),
            Self::Not(m) => write!(f, "not-{m}"),
            Self::Exact(m) => write!(f, "{m}"),
        }
    }
}

impl std::str::FromStr for MacMatch {
    type Err = pkt::wire::MacParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "any" => Ok(Self::Any),
            "none" => Ok(Self::None),
            _ => match s.strip_prefix("not-") {
                Some(m) => Ok(Self::Not(m.parse()?)),
                None => Ok(Self::Exact(s.parse()?)),
            },
        }
    }
}

/// A link's encapsulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encap {
    /// VNET/P: the whole Ethernet frame is the UDP payload (default port 9000).
    Vnetp,
    /// VXLAN (RFC 7348) with this 24-bit VNI (default port 4789).
    Vxlan {
        /// The VXLAN network identifier.
        vni: u32,
    },
}

impl fmt::Display for Encap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Vnetp => f.write_str("vnetp"),
            Self::Vxlan { vni } => write!(f, "vxlan vni {vni}"),
        }
    }
}
