//! Links: tunnels to peer hosts, and how a received datagram finds its link.
//!
//! VNET/P identifies a link by the sender's underlay address, so only configured peers
//! are accepted. A `vnetp` link is matched by the peer's IP and UDP port. A VXLAN sender
//! picks its source port from a hash of the inner flow (RFC 7348 5), so a `vxlan` link
//! is matched by the peer's IP and the VNI in the VXLAN header, never by source port;
//! frames to it go to its configured port.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use crate::types::Encap;

/// A link to a peer host.
#[derive(Debug, Clone)]
pub struct Link {
    /// The link's name (unique among links and interfaces).
    pub name: String,
    /// Where frames for this link are sent.
    pub peer: SocketAddr,
    /// How frames are wrapped.
    pub encap: Encap,
    /// Traffic counters.
    pub counters: LinkCounters,
    /// Encryption and authentication, when the link has a key.
    pub crypto: Option<crate::crypto::LinkCrypto>,
    /// The key `crypto` was made from.
    pub key: Option<crate::crypto::LinkKey>,
    /// Largest IP packet carried whole; larger TSO frames are segmented to fit.
    pub mtu: usize,
}

/// Per-link traffic counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinkCounters {
    /// Frames received from the peer and accepted.
    pub rx_packets: u64,
    /// Bytes of those frames (inner frame length).
    pub rx_bytes: u64,
    /// Frames queued to the peer.
    pub tx_packets: u64,
    /// Bytes of those frames (inner frame length).
    pub tx_bytes: u64,
}

impl LinkCounters {
    /// Adds `other`'s counts to these (statistics of several shards).
    pub fn add(&mut self, other: &Self) {
        self.rx_packets += other.rx_packets;
        self.rx_bytes += other.rx_bytes;
        self.tx_packets += other.tx_packets;
        self.tx_bytes += other.tx_bytes;
    }
}

/// Why a received datagram matched no link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmatched {
    /// No link has this sender.
    UnknownSender,
    /// A VXLAN peer's IP is known but no link has this VNI.
    UnknownVni,
    /// The sender is a VXLAN peer but the datagram is not VXLAN.
    BadVxlan,
}

impl Unmatched {
    /// The engine's drop-counter name for this reason.
    pub fn counter_name(self) -> &'static str {
        match self {
            Self::UnknownSender => "rx_unknown_sender",
            Self::UnknownVni => "rx_unknown_vni",
            Self::BadVxlan => "rx_bad_vxlan",
        }
    }
}

/// Errors changing the link table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The name is taken.
    #[error("a link named {0:?} already exists")]
    DuplicateName(String),
    /// Another link already receives from this peer.
    #[error("link {existing:?} already uses peer {peer} with the same encapsulation")]
    DuplicatePeer {
        /// The link already using it.
        existing: String,
        /// The peer.
        peer: String,
    },
    /// No such link.
    #[error("no link named {0:?}")]
    NotFound(String),
    /// The table is full.
    #[error("too many links (at most {0})")]
    Full(usize),
}

/// Most links one host can have.
pub const MAX_LINKS: usize = 4096;

/// The links of a host, in stable slots: a slot number is the link's
/// [`crate::types::Endpoint::Link`] id and is not reused while routes may refer to it.
#[derive(Debug, Default)]
pub struct LinkTable {
    slots: Vec<Option<Link>>,
    by_addr: HashMap<SocketAddr, u16>,
    by_vni: HashMap<(IpAddr, u32), u16>,
    vxlan_ips: HashMap<IpAddr, usize>,
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn canonical_addr(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical(a.ip()), a.port())
}

impl LinkTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a link; returns its slot.
    pub fn add(&mut self, name: &str, peer: SocketAddr, encap: Encap) -> Result<u16, LinkError> {
        if self.find(name).is_some() {
            return Err(LinkError::DuplicateName(name.to_string()));
        }
        let peer_c = canonical_addr(peer);
        let clash = match encap {
            Encap::Vnetp => self.by_addr.get(&peer_c),
            Encap::Vxlan { vni } => self.by_vni.get(&(peer_c.ip(), vni)),
        };
        if let Some(&slot) = clash {
            let existing = self.get(slot).map(|l| l.name.clone()).unwrap_or_default();
            return Err(LinkError::DuplicatePeer {
                existing,
                peer: peer.to_string(),
            });
        }
        let slot = match self.slots.iter().position(Option::is_none) {
            Some(s) => s,
            None if self.slots.len() < MAX_LINKS => {
                self.slots.push(None);
                self.slots.len() - 1
            }
            None => return Err(LinkError::Full(MAX_LINKS)),
        };
        let slot16 = slot as u16;
        match encap {
            Encap::Vnetp => {
                self.by_addr.insert(peer_c, slot16);
            }
            Encap::Vxlan { vni } => {
                self.by_vni.insert((peer_c.ip(), vni), slot16);
                *self.vxlan_ips.entry(peer_c.ip()).or_default() += 1;
            }
        }
        self.slots[slot] = Some(Link {
            name: name.to_string(),
            peer,
            encap,
            counters: LinkCounters::default(),
            crypto: None,
            key: None,
            mtu: 1500,
        });
        Ok(slot16)
    }

    /// Removes a link by name; returns its slot.
    pub fn remove(&mut self, name: &str) -> Result<u16, LinkError> {
        let slot = self
            .find(name)
            .ok_or_else(|| LinkError::NotFound(name.to_string()))?;
        if let Some(link) = self.slots[slot as usize].take() {
            let peer_c = canonical_addr(link.peer);
            match link.encap {
                Encap::Vnetp => {
                    self.by_addr.remove(&peer_c);
                }
                Encap::Vxlan { vni } => {
                    self.by_vni.remove(&(peer_c.ip(), vni));
                    if let Some(n) = self.vxlan_ips.get_mut(&peer_c.ip()) {
                        *n -= 1;
                        if *n == 0 {
                            self.vxlan_ips.remove(&peer_c.ip());
                        }
                    }
                }
            }
        }
        Ok(slot)
    }

    /// The slot of the link with this name.
    pub fn find(&self, name: &str) -> Option<u16> {
        self.slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|l| l.name == name))
            .map(|p| p as u16)
    }

    /// The link in a slot.
    pub fn get(&self, slot: u16) -> Option<&Link> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    /// The link in a slot, mutable.
    pub fn get_mut(&mut self, slot: u16) -> Option<&mut Link> {
        self.slots.get_mut(slot as usize).and_then(Option::as_mut)
    }

    /// Every link with its slot.
    pub fn iter(&self) -> impl Iterator<Item = (u16, &Link)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|l| (i as u16, l)))
    }

    /// Number of links.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// True when there is no link.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Finds the link a datagram from `src` with this payload belongs to. For a VXLAN
    /// link the second value is `true`: the payload starts with a VXLAN header that has
    /// been checked (RFC 7348 5: 8 bytes, I flag set), so the caller only strips it.
    #[inline]
    pub fn classify(&self, src: SocketAddr, payload: &[u8]) -> Result<(u16, bool), Unmatched> {
        let src = canonical_addr(src);
        if let Some(&slot) = self.by_addr.get(&src) {
            return Ok((slot, false));
        }
        if self.vxlan_ips.contains_key(&src.ip()) {
            let vni = pkt::wire::VxlanRepr::parse(payload)
                .map_err(|_| Unmatched::BadVxlan)?
                .0
                .vni;
            return self
                .by_vni
                .get(&(src.ip(), vni))
                .map(|&s| (s, true))
                .ok_or(Unmatched::UnknownVni);
        }
        Err(Unmatched::UnknownSender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn vnetp_link_matched_by_ip_and_port() {
        let mut t = LinkTable::new();
        let a = t.add("a", sa("10.0.0.2:9000"), Encap::Vnetp).unwrap();
        assert_eq!(t.classify(sa("10.0.0.2:9000"), b"x"), Ok((a, false)));
        assert_eq!(
            t.classify(sa("10.0.0.2:9001"), b"x"),
            Err(Unmatched::UnknownSender)
        );
        assert_eq!(
            t.classify(sa("10.0.0.3:9000"), b"x"),
            Err(Unmatched::UnknownSender)
        );
    }

    #[test]
    fn vxlan_link_matched_by_ip_and_vni_any_source_port() {
        let mut t = LinkTable::new();
        let a = t
            .add("a", sa("10.0.0.2:4789"), Encap::Vxlan { vni: 42 })
            .unwrap();
        let hdr42 = [0x08, 0, 0, 0, 0, 0, 42, 0];
        let hdr43 = [0x08, 0, 0, 0, 0, 0, 43, 0];
        assert_eq!(t.classify(sa("10.0.0.2:51234"), &hdr42), Ok((a, true)));
        assert_eq!(
            t.classify(sa("10.0.0.2:51234"), &hdr43),
            Err(Unmatched::UnknownVni)
        );
        assert_eq!(
            t.classify(sa("10.0.0.2:51234"), &[0; 8]),
            Err(Unmatched::BadVxlan)
        );
        assert_eq!(
            t.classify(sa("10.0.0.2:51234"), &[0x08; 4]),
            Err(Unmatched::BadVxlan)
        );
    }

    #[test]
    fn ipv4_mapped_sender_matches_ipv4_peer() {
        let mut t = LinkTable::new();
        let a = t.add("a", sa("10.0.0.2:9000"), Encap::Vnetp).unwrap();
        assert_eq!(
            t.classify(sa("[::ffff:10.0.0.2]:9000"), b""),
            Ok((a, false))
        );
    }

    #[test]
    fn duplicate_names_and_peers_refused_and_slots_reused() {
        let mut t = LinkTable::new();
        t.add("a", sa("10.0.0.2:9000"), Encap::Vnetp).unwrap();
        assert!(matches!(
            t.add("a", sa("10.0.0.3:9000"), Encap::Vnetp),
            Err(LinkError::DuplicateName(_))
        ));
        assert!(matches!(
            t.add("b", sa("10.0.0.2:9000"), Encap::Vnetp),
            Err(LinkError::DuplicatePeer { .. })
        ));
        assert_eq!(t.remove("a"), Ok(0));
        assert!(t.remove("a").is_err());
        assert_eq!(t.add("b", sa("10.0.0.2:9000"), Encap::Vnetp), Ok(0));
        assert_eq!(t.len(), 1);
    }
}
