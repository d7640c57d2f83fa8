//! ARP (RFC 826) and ICMP echo (RFC 792) frames of the IPv4 underlay: requests,
//! replies, gratuitous announcements (RFC 5227 section 3), echo replies.

use std::net::Ipv4Addr;

use pkt::PktBuf;
use pkt::wire::{ArpOp, ArpRepr, EthernetRepr, Ipv4Repr, MacAddr, checksum, ethertype, ip_proto};

use super::MIN_FRAME;

/// ICMP echo reply type.
const ICMP_ECHO_REPLY: u8 = 0;
/// ICMP echo request type.
pub(crate) const ICMP_ECHO_REQUEST: u8 = 8;

/// Writes an ARP packet in an Ethernet frame into the empty buffer `buf`, padded to
/// the Ethernet minimum. `None` when it does not fit (a pool of tiny buffers).
pub(crate) fn arp_frame(buf: &mut PktBuf, eth_dst: MacAddr, arp: &ArpRepr) -> Option<()> {
    let space = buf.append(MIN_FRAME).ok()?;
    space.fill(0);
    let eth = EthernetRepr {
        dst: eth_dst,
        src: arp.sender_mac,
        vlan: None,
        ethertype: ethertype::ARP,
    };
    let n = eth.emit(space).ok()?;
    arp.emit(&mut space[n..]).ok()?;
    Some(())
}

/// A request for `target` from `(mac, ip)`; broadcast, or unicast to a known MAC when
/// refreshing (RFC 1122 2.3.2.1).
pub(crate) fn request(
    buf: &mut PktBuf,
    mac: MacAddr,
    ip: Ipv4Addr,
    target: Ipv4Addr,
    unicast: Option<MacAddr>,
) -> Option<()> {
    let arp = ArpRepr {
        op: ArpOp::Request,
        sender_mac: mac,
        sender_ip: ip,
        target_mac: MacAddr::ZERO,
        target_ip: target,
    };
    arp_frame(buf, unicast.unwrap_or(MacAddr::BROADCAST), &arp)
}

/// A gratuitous ARP announcing `(mac, ip)`: a broadcast request whose sender and
/// target address are both ours (RFC 5227 "ARP Announcement").
pub(crate) fn announce(buf: &mut PktBuf, mac: MacAddr, ip: Ipv4Addr) -> Option<()> {
    request(buf, mac, ip, ip, None)
}

/// The reply to `req` from `(mac, ip)`, unicast to the requester.
pub(crate) fn reply(buf: &mut PktBuf, mac: MacAddr, ip: Ipv4Addr, req: &ArpRepr) -> Option<()> {
    let arp = ArpRepr {
        op: ArpOp::Reply,
        sender_mac: mac,
        sender_ip: ip,
        target_mac: req.sender_mac,
        target_ip: req.sender_ip,
    };
    arp_frame(buf, req.sender_mac, &arp)
}

/// Writes an echo reply to the echo request `icmp` (the whole ICMP message, checksum
/// verified by the caller) into the empty buffer `buf`.
pub(crate) fn echo_reply(
    buf: &mut PktBuf,
    eth_src: MacAddr,
    eth_dst: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    icmp: &[u8],
) -> Option<()> {
    let eth = EthernetRepr {
        dst: eth_dst,
        src: eth_src,
        vlan: None,
        ethertype: ethertype::IPV4,
    };
    let ip = Ipv4Repr {
        src,
        dst,
        protocol: ip_proto::ICMP,
        ttl: crate::encap::OUTER_TTL,
        tos: 0,
        ident,
        dont_frag: false,
        more_frags: false,
        frag_offset: 0,
        payload_len: icmp.len(),
    };
    let hlen = eth.header_len() + pkt::wire::ipv4::HEADER_LEN;
    let total = (hlen + icmp.len()).max(MIN_FRAME);
    let space = buf.append(total).ok()?;
    space.fill(0);
    let n = eth.emit(space).ok()?;
    ip.emit(&mut space[n..]).ok()?;
    let msg = space.get_mut(hlen..hlen + icmp.len())?;
    msg.copy_from_slice(icmp);
    msg[0] = ICMP_ECHO_REPLY;
    msg[2] = 0;
    msg[3] = 0;
    let c = checksum::internet_checksum(msg, 0);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    Some(())
}
