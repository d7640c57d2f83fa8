//! IPv6 neighbour discovery (RFC 4861: neighbour solicitation and advertisement) and
//! ICMPv6 echo (RFC 4443) frames of the IPv6 underlay.

use std::net::Ipv6Addr;

use offload::checksum::pseudo_header_v6;
use pkt::PktBuf;
use pkt::wire::{EthernetRepr, Ipv6Repr, MacAddr, checksum, ethertype, ip_proto, ipv6};

/// ICMPv6 echo request.
pub(crate) const ECHO_REQUEST: u8 = 128;
/// ICMPv6 echo reply.
pub(crate) const ECHO_REPLY: u8 = 129;
/// Neighbour solicitation.
pub(crate) const NEIGHBOR_SOLICIT: u8 = 135;
/// Neighbour advertisement.
pub(crate) const NEIGHBOR_ADVERT: u8 = 136;
/// Option: source link-layer address.
const OPT_SOURCE_LL: u8 = 1;
/// Option: target link-layer address.
const OPT_TARGET_LL: u8 = 2;
/// ND messages must arrive with hop limit 255 (RFC 4861 7.1.1): proof of being on-link.
pub(crate) const ND_HOP_LIMIT: u8 = 255;
/// NS/NA with one link-layer address option: 4 header + 4 flags/reserved + 16 target + 8.
const ND_LEN: usize = 32;
/// Advertisement flags.
const FLAG_SOLICITED: u8 = 0x40;
const FLAG_OVERRIDE: u8 = 0x20;

/// The solicited-node multicast address of `ip` (RFC 4291 2.7.1): ff02::1:ffXX:XXXX.
pub(crate) fn solicited_node(ip: &Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

/// The Ethernet multicast MAC of an IPv6 multicast address (RFC 2464 7): 33:33 and its
/// last 32 bits.
pub(crate) fn multicast_mac(ip: &Ipv6Addr) -> MacAddr {
    let o = ip.octets();
    MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// The ICMPv6 checksum of `msg` (its checksum field ignored) over the pseudo-header.
pub(crate) fn icmpv6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, msg: &[u8]) -> u16 {
    let pseudo = pseudo_header_v6(src, dst, ip_proto::ICMPV6, msg.len() as u32);
    let head = checksum::sum(&msg[..2], pseudo);
    checksum::internet_checksum(msg.get(4..).unwrap_or(&[]), head.into())
}

/// True when the ICMPv6 message `msg` carries a correct checksum.
pub(crate) fn icmpv6_valid(src: &Ipv6Addr, dst: &Ipv6Addr, msg: &[u8]) -> bool {
    msg.len() >= 4 && icmpv6_checksum(src, dst, msg).to_be_bytes() == [msg[2], msg[3]]
}

/// A parsed neighbour solicitation or advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NdMessage {
    /// [`NEIGHBOR_SOLICIT`] or [`NEIGHBOR_ADVERT`].
    pub kind: u8,
    /// The target address.
    pub target: Ipv6Addr,
    /// The link-layer address option (source LL in an NS, target LL in an NA).
    pub lladdr: Option<MacAddr>,
}

/// Parses an NS or NA (checksum and hop limit already checked by the caller). `None`
/// for anything malformed (RFC 4861 7.1: code 0, length at least 24, options of
/// non-zero length within the message).
pub(crate) fn parse_nd(msg: &[u8]) -> Option<NdMessage> {
    let kind = *msg.first()?;
    if !(kind == NEIGHBOR_SOLICIT || kind == NEIGHBOR_ADVERT) || *msg.get(1)? != 0 {
        return None;
    }
    let target: [u8; 16] = msg.get(8..24)?.try_into().ok()?;
    let want = if kind == NEIGHBOR_SOLICIT {
        OPT_SOURCE_LL
    } else {
        OPT_TARGET_LL
    };
    let mut lladdr = None;
    let mut opts = &msg[24..];
    while !opts.is_empty() {
        let len = usize::from(*opts.get(1)?) * 8;
        if len == 0 || len > opts.len() {
            return None;
        }
        if opts[0] == want && len >= 8 {
            let mac: [u8; 6] = opts[2..8].try_into().ok()?;
            lladdr = Some(MacAddr(mac));
        }
        opts = &opts[len..];
    }
    Some(NdMessage {
        kind,
        target: target.into(),
        lladdr,
    })
}

/// Writes an Ethernet + IPv6 header and the ICMPv6 message `fill` writes (of `len`
/// bytes; its checksum is computed here) into the empty buffer `buf`.
#[allow(clippy::too_many_arguments)] // the fields of two headers, kept flat
fn icmpv6_frame(
    buf: &mut PktBuf,
    eth_src: MacAddr,
    eth_dst: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Option<()> {
    let eth = EthernetRepr {
        dst: eth_dst,
        src: eth_src,
        vlan: None,
        ethertype: ethertype::IPV6,
    };
    let ip = Ipv6Repr {
        src,
        dst,
        next_header: ip_proto::ICMPV6,
        hop_limit,
        traffic_class: 0,
        flow_label: 0,
        payload_len: len,
    };
    let hlen = eth.header_len() + ipv6::HEADER_LEN;
    let space = buf.append(hlen + len).ok()?;
    let n = eth.emit(space).ok()?;
    ip.emit(&mut space[n..]).ok()?;
    let msg = &mut space[hlen..];
    fill(msg);
    let c = icmpv6_checksum(&src, &dst, msg);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    Some(())
}

/// An NS for `target` from `(mac, ip)`: to the solicited-node multicast group, or, to
/// refresh a known neighbour, unicast to it.
pub(crate) fn solicit(
    buf: &mut PktBuf,
    mac: MacAddr,
    ip: Ipv6Addr,
    target: Ipv6Addr,
    unicast: Option<MacAddr>,
) -> Option<()> {
    let (dst_ip, dst_mac) = match unicast {
        Some(m) => (target, m),
        None => {
            let g = solicited_node(&target);
            (g, multicast_mac(&g))
        }
    };
    icmpv6_frame(buf, mac, dst_mac, ip, dst_ip, ND_HOP_LIMIT, ND_LEN, |m| {
        m.fill(0);
        m[0] = NEIGHBOR_SOLICIT;
        m[8..24].copy_from_slice(&target.octets());
        m[24] = OPT_SOURCE_LL;
        m[25] = 1;
        m[26..32].copy_from_slice(&mac.0);
    })
}

/// An NA for our `(mac, ip)`: solicited (to the soliciting node) or unsolicited (to
/// all nodes, announcing us at start), always with the override flag.
pub(crate) fn advertise(
    buf: &mut PktBuf,
    mac: MacAddr,
    ip: Ipv6Addr,
    to: Option<(Ipv6Addr, MacAddr)>,
) -> Option<()> {
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let (dst_ip, dst_mac, flags) = match to {
        Some((ip, mac)) => (ip, mac, FLAG_SOLICITED | FLAG_OVERRIDE),
        None => (all_nodes, multicast_mac(&all_nodes), FLAG_OVERRIDE),
    };
    icmpv6_frame(buf, mac, dst_mac, ip, dst_ip, ND_HOP_LIMIT, ND_LEN, |m| {
        m.fill(0);
        m[0] = NEIGHBOR_ADVERT;
        m[4] = flags;
        m[8..24].copy_from_slice(&ip.octets());
        m[24] = OPT_TARGET_LL;
        m[25] = 1;
        m[26..32].copy_from_slice(&mac.0);
    })
}

/// An echo reply to the echo request `icmp` (whole ICMPv6 message, checksum verified).
pub(crate) fn echo_reply(
    buf: &mut PktBuf,
    eth_src: MacAddr,
    eth_dst: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    icmp: &[u8],
) -> Option<()> {
    icmpv6_frame(
        buf,
        eth_src,
        eth_dst,
        src,
        dst,
        crate::encap::OUTER_TTL,
        icmp.len(),
        |m| {
            m.copy_from_slice(icmp);
            m[0] = ECHO_REPLY;
        },
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic in a test is its failure report
mod tests {
    use super::*;
    use pkt::Mempool;

    /// An NS from fd00::1 (52:54:00:00:00:01) for fd00::2 goes to ff02::1:ff00:2 and
    /// 33:33:ff:00:00:02 with hop limit 255, a source link-layer address option and a
    /// checksum that verifies over the pseudo-header.
    #[test]
    fn solicitation_round_trips_and_verifies() {
        let pool = Mempool::new(2, 512).unwrap();
        let mut b = pool.alloc().unwrap();
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        let src: Ipv6Addr = "fd00::1".parse().unwrap();
        let target: Ipv6Addr = "fd00::2".parse().unwrap();
        solicit(&mut b, mac, src, target, None).unwrap();
        let f = b.data();
        assert_eq!(&f[..6], &[0x33, 0x33, 0xff, 0, 0, 2]);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(f[14 + 7], 255, "hop limit");
        assert_eq!(&f[14 + 24..14 + 40], &solicited_node(&target).octets());
        let msg = &f[54..];
        assert_eq!(msg.len(), 32);
        let dst = solicited_node(&target);
        assert!(icmpv6_valid(&src, &dst, msg));
        // One's complement sum over pseudo-header and message is all ones.
        let pseudo = pseudo_header_v6(&src, &dst, ip_proto::ICMPV6, 32);
        assert_eq!(checksum::sum(msg, pseudo), 0xffff);
        let nd = parse_nd(msg).unwrap();
        assert_eq!(
            nd,
            NdMessage {
                kind: NEIGHBOR_SOLICIT,
                target,
                lladdr: Some(mac)
            }
        );
    }

    #[test]
    fn malformed_nd_is_refused() {
        let mut m = [0u8; 32];
        m[0] = NEIGHBOR_ADVERT;
        m[24] = OPT_TARGET_LL;
        m[25] = 0; // zero-length option
        assert_eq!(parse_nd(&m), None);
        m[25] = 2; // option past the end
        assert_eq!(parse_nd(&m), None);
        m[25] = 1;
        m[1] = 1; // non-zero code
        assert_eq!(parse_nd(&m), None);
        assert_eq!(parse_nd(&m[..20]), None);
    }

    #[test]
    fn solicited_node_and_multicast_mac() {
        let ip: Ipv6Addr = "fd00:99:1::abcd:1234".parse().unwrap();
        assert_eq!(
            solicited_node(&ip),
            "ff02::1:ffcd:1234".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            multicast_mac(&solicited_node(&ip)),
            MacAddr([0x33, 0x33, 0xff, 0xcd, 0x12, 0x34])
        );
    }
}
