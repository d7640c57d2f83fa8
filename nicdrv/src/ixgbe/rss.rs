//! Receive-side scaling on the 82599 (datasheet 7.1.2.8): which bytes of a frame the
//! Toeplitz hash covers for the hash fields MRQC enables, the RSS type the device
//! reports, and the key and redirection table the driver programs.
//!
//! The model hashes received frames with [`rss_input`] and [`offload::rss::toeplitz`]
//! as the device would; the driver keeps each transmitted flow on one queue with the
//! cheaper [`tx_flow_hash`] over the same fields.

use super::regs;

/// Largest hash input: two IPv6 addresses and two ports.
const MAX_INPUT: usize = 36;

/// The bytes one frame's RSS hash covers, and the RSS type the device reports for it
/// (the RSSTYPE of the receive write-back, 7.1.6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RssInput {
    bytes: [u8; MAX_INPUT],
    len: usize,
    /// RSS type: 1 TCP/IPv4, 2 IPv4, 3 TCP/IPv6, 5 IPv6, 7 UDP/IPv4, 8 UDP/IPv6.
    pub kind: u8,
}

impl RssInput {
    /// The hash input: source address, destination address, then source and
    /// destination ports when the type includes them.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    fn push(&mut self, b: &[u8]) {
        self.bytes[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
    }
}

/// RSS type: TCP over IPv4.
pub const RSS_TYPE_IPV4_TCP: u8 = 0x1;
/// RSS type: IPv4 addresses only.
pub const RSS_TYPE_IPV4: u8 = 0x2;
/// RSS type: TCP over IPv6.
pub const RSS_TYPE_IPV6_TCP: u8 = 0x3;
/// RSS type: IPv6 addresses only.
pub const RSS_TYPE_IPV6: u8 = 0x5;
/// RSS type: UDP over IPv4.
pub const RSS_TYPE_IPV4_UDP: u8 = 0x7;
/// RSS type: UDP over IPv6.
pub const RSS_TYPE_IPV6_UDP: u8 = 0x8;

/// The hash input of `frame` (Ethernet, at most one 802.1Q tag) under the MRQC hash
/// field enables `fields`, or `None` when no enabled field applies (the device then
/// reports no hash and uses RETA entry 0). IPv4 fragments and IPv6 with extension
/// headers hash their addresses only. Never reads past `frame`.
pub fn rss_input(frame: &[u8], fields: u32) -> Option<RssInput> {
    let be16 = |at: usize| {
        frame
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let mut l3 = 14;
    let mut ethertype = be16(12)?;
    if ethertype == 0x8100 {
        ethertype = be16(16)?;
        l3 = 18;
    }
    let mut input = RssInput {
        bytes: [0; MAX_INPUT],
        len: 0,
        kind: 0,
    };
    let (proto, l4, v4) = match ethertype {
        0x0800 => {
            let ip = frame.get(l3..l3 + 20)?;
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if ip[0] >> 4 != 4 || ihl < 20 {
                return None;
            }
            input.push(&ip[12..20]);
            let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
            (if fragment { 0 } else { ip[9] }, l3 + ihl, true)
        }
        0x86dd => {
            let ip = frame.get(l3..l3 + 40)?;
            if ip[0] >> 4 != 6 {
                return None;
            }
            input.push(&ip[8..40]);
            (ip[6], l3 + 40, false)
        }
        _ => return None,
    };
    let (tcp_field, udp_field, ip_field) = if v4 {
        (
            regs::MRQC_RSS_FIELD_IPV4_TCP,
            regs::MRQC_RSS_FIELD_IPV4_UDP,
            regs::MRQC_RSS_FIELD_IPV4,
        )
    } else {
        (
            regs::MRQC_RSS_FIELD_IPV6_TCP,
            regs::MRQC_RSS_FIELD_IPV6_UDP,
            regs::MRQC_RSS_FIELD_IPV6,
        )
    };
    let ports = frame.get(l4..l4 + 4);
    let with_ports = match (proto, ports) {
        (6, Some(_)) if fields & tcp_field != 0 => Some(if v4 {
            RSS_TYPE_IPV4_TCP
        } else {
            RSS_TYPE_IPV6_TCP
        }),
        (17, Some(_)) if fields & udp_field != 0 => Some(if v4 {
            RSS_TYPE_IPV4_UDP
        } else {
            RSS_TYPE_IPV6_UDP
        }),
        _ => None,
    };
    match (with_ports, ports) {
        (Some(kind), Some(p)) => {
            input.push(p);
            input.kind = kind;
        }
        _ if fields & ip_field != 0 => {
            input.kind = if v4 { RSS_TYPE_IPV4 } else { RSS_TYPE_IPV6 };
        }
        _ => return None,
    }
    Some(input)
}

/// RETA register `n` for `queues` queues spread round-robin over the 128 entries:
/// entry 4n+i (byte i) = (4n+i) mod `queues`.
pub fn reta_word(n: u32, queues: usize) -> u32 {
    let q = queues.max(1) as u32;
    (0..4).fold(0, |w, i| w | (((4 * n + i) % q) & 0xf) << (8 * i))
}

/// RSSRK register `n` from a 40-byte key: byte 4n+i in bits 8i+7:8i.
pub fn rssrk_word(key: &[u8; 40], n: u32) -> u32 {
    let at = 4 * n as usize;
    u32::from_le_bytes([key[at], key[at + 1], key[at + 2], key[at + 3]])
}

/// A cheap flow hash for picking a transmit queue: IP addresses and, for TCP and UDP
/// (not fragments), the ports, read as little-endian words and folded with a
/// multiply-rotate mix. Not Toeplitz: nothing needs to agree with it; it only keeps a
/// flow on one queue and spreads flows. Frames without an IP flow hash to 0.
#[inline]
pub fn tx_flow_hash(frame: &[u8]) -> u32 {
    let word = |at: usize| -> u64 {
        frame.get(at..at + 8).map_or(0, |b| {
            u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
        })
    };
    let ports = |at: usize| -> u64 {
        frame.get(at..at + 4).map_or(0, |b| {
            u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        })
    };
    let mix = |h: u64, w: u64| (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    let (l3, ethertype) = match frame.get(12..14) {
        Some([0x81, 0x00]) => (18, frame.get(16..18)),
        Some(_) => (14, frame.get(12..14)),
        None => return 0,
    };
    let h = match ethertype {
        Some([0x08, 0x00]) => {
            let Some(ip) = frame.get(l3..l3 + 20) else {
                return 0;
            };
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
            let l4 = if !fragment && ihl >= 20 && (ip[9] == 6 || ip[9] == 17) {
                ports(l3 + ihl)
            } else {
                0
            };
            mix(mix(0, word(l3 + 12)), l4)
        }
        Some([0x86, 0xdd]) => {
            let Some(ip) = frame.get(l3..l3 + 40) else {
                return 0;
            };
            let l4 = if ip[6] == 6 || ip[6] == 17 {
                ports(l3 + 40)
            } else {
                0
            };
            (0..4).fold(mix(0, l4), |h, i| mix(h, word(l3 + 8 + 8 * i)))
        }
        _ => return 0,
    };
    (h ^ (h >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Microsoft's RSS verification vector (also in the 82599 datasheet's example):
    /// 66.9.149.187:2794 -> 161.142.100.80:1766, IPv4 hash 0x323e8fc2, with TCP
    /// ports 0x51ccc178.
    fn tcp4_frame() -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[14 + 9] = 6;
        f[14 + 12..14 + 16].copy_from_slice(&[66, 9, 149, 187]);
        f[14 + 16..14 + 20].copy_from_slice(&[161, 142, 100, 80]);
        f[34..36].copy_from_slice(&2794u16.to_be_bytes());
        f[36..38].copy_from_slice(&1766u16.to_be_bytes());
        f
    }

    #[test]
    fn rss_input_matches_the_verification_vector() {
        let f = tcp4_frame();
        let all = rss_input(&f, regs::MRQC_RSS_FIELDS).unwrap();
        assert_eq!(all.kind, RSS_TYPE_IPV4_TCP);
        assert_eq!(
            offload::rss::toeplitz(&offload::rss::DEFAULT_KEY, all.bytes()),
            0x51cc_c178
        );
        let ip_only = rss_input(&f, regs::MRQC_RSS_FIELD_IPV4).unwrap();
        assert_eq!(ip_only.kind, RSS_TYPE_IPV4);
        assert_eq!(
            offload::rss::toeplitz(&offload::rss::DEFAULT_KEY, ip_only.bytes()),
            0x323e_8fc2
        );
    }

    #[test]
    fn rss_input_skips_ports_of_fragments_and_refuses_short_or_foreign_frames() {
        let mut f = tcp4_frame();
        f[14 + 6] = 0x20; // more fragments
        assert_eq!(
            rss_input(&f, regs::MRQC_RSS_FIELDS).unwrap().kind,
            RSS_TYPE_IPV4
        );
        let f = tcp4_frame();
        for cut in 0..34 {
            assert_eq!(rss_input(&f[..cut], regs::MRQC_RSS_FIELDS), None, "{cut}");
        }
        let mut arp = tcp4_frame();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(rss_input(&arp, regs::MRQC_RSS_FIELDS), None);
        assert_eq!(rss_input(&f, 0), None);
        assert_eq!(tx_flow_hash(&arp), 0);
    }

    #[test]
    fn tx_flow_hash_keeps_a_flow_and_tells_ports_and_addresses_apart() {
        let f = tcp4_frame();
        let h = tx_flow_hash(&f);
        assert_ne!(h, 0);
        assert_eq!(tx_flow_hash(&f), h);
        let mut other_port = f.clone();
        other_port[35] ^= 1;
        let mut other_addr = f.clone();
        other_addr[14 + 15] ^= 1;
        assert_ne!(tx_flow_hash(&other_port), h);
        assert_ne!(tx_flow_hash(&other_addr), h);
        // A payload change is the same flow.
        let mut payload = f.clone();
        payload[50] ^= 0xff;
        assert_eq!(tx_flow_hash(&payload), h);
        // Truncated headers never panic.
        for cut in 0..f.len() {
            let _ = tx_flow_hash(&f[..cut]);
        }
    }

    #[test]
    fn reta_and_key_words_pack_bytes_low_first() {
        assert_eq!(reta_word(0, 4), 0x0302_0100);
        assert_eq!(reta_word(1, 3), 0x0100_0201); // entries 4..7: 1, 2, 0, 1
        assert_eq!(reta_word(7, 1), 0);
        let key = offload::rss::DEFAULT_KEY;
        assert_eq!(rssrk_word(&key, 0), 0xda56_5a6d);
        assert_eq!(rssrk_word(&key, 9), 0xfa01_acbe);
    }
}
