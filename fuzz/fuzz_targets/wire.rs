//! Every parser of wire bytes on arbitrary input: the `pkt::wire` headers (Ethernet,
//! ARP, IPv4, IPv6, UDP, VXLAN), the raw-L2 outer headers (`overlay::encap::parse_outer`)
//! and the virtio-net header. Parsing must return an error, never panic; and what parses
//! must survive a round trip: emitting the `Repr` and parsing the result gives the same
//! `Repr`, and the emitted bytes are the input's wherever the `Repr` holds every field.
#![no_main]

use std::sync::OnceLock;

use offload::vnet_hdr;
use overlay::encap::{self, OuterHeaders};
use pkt::Mempool;
use pkt::wire::{
    ArpRepr, EthernetRepr, Ipv4Repr, Ipv6Repr, UdpRepr, VxlanRepr, ethertype, ip_proto, ipv4, ipv6,
    udp,
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Each parser on the bytes as they are...
    for parse in [ethernet, arp, ipv4, ipv6, udp, vxlan, outer, virtio_net_hdr] {
        parse(data);
    }
    // ...and on the layers of a frame, so a whole-frame input reaches every parser.
    layers(data, 0);
    // Hashes whatever part of a flow is there; must not panic on any frame.
    let _ = encap::vxlan_source_port(data);
});

/// Walks Ethernet, ARP or IP, UDP and VXLAN headers down a frame, checking each layer,
/// and into one frame inside a VXLAN tunnel.
fn layers(frame: &[u8], depth: u8) {
    let Ok((eth, l3)) = EthernetRepr::parse(frame) else {
        return;
    };
    let l3 = &frame[l3..];
    let l4 = match eth.ethertype {
        ethertype::ARP => return arp(l3),
        ethertype::IPV4 => {
            ipv4(l3);
            match Ipv4Repr::parse(l3) {
                Ok((ip, off)) if ip.protocol == ip_proto::UDP => &l3[off..off + ip.payload_len],
                _ => return,
            }
        }
        ethertype::IPV6 => {
            ipv6(l3);
            match Ipv6Repr::parse(l3) {
                Ok((ip, off)) if ip.next_header == ip_proto::UDP => &l3[off..off + ip.payload_len],
                _ => return,
            }
        }
        _ => return,
    };
    udp(l4);
    let Ok((u, off)) = UdpRepr::parse(l4) else {
        return;
    };
    let payload = &l4[off..off + u.payload_len];
    vxlan(payload);
    match VxlanRepr::parse(payload) {
        Ok((_, inner)) if depth == 0 => layers(&payload[inner..], 1),
        // A vnetp payload is a whole frame.
        _ if depth == 0 => layers(payload, 1),
        _ => {}
    }
}

/// The header (and one 802.1Q tag) holds nothing the `Repr` drops: bytes round-trip.
fn ethernet(data: &[u8]) {
    let Ok((repr, off)) = EthernetRepr::parse(data) else {
        return;
    };
    assert_eq!(off, repr.header_len());
    let mut out = [0u8; 18];
    let n = repr.emit(&mut out).expect("a parsed header emits");
    assert_eq!(n, off);
    assert_eq!(&out[..n], &data[..n], "ethernet bytes round-trip");
    assert_eq!(EthernetRepr::parse(&out[..n]), Ok((repr, off)));
}

/// Only Ethernet/IPv4 ARP parses, and its 28 bytes are all in the `Repr`.
fn arp(data: &[u8]) {
    let Ok((repr, off)) = ArpRepr::parse(data) else {
        return;
    };
    let mut out = [0u8; 28];
    let n = repr.emit(&mut out).expect("a parsed packet emits");
    assert_eq!(n, off);
    assert_eq!(&out[..], &data[..n], "arp bytes round-trip");
    assert_eq!(ArpRepr::parse(&out), Ok((repr, off)));
}

/// Options and the reserved flag are dropped; the checksum is recomputed (and may be
/// the other one's-complement zero). Everything else round-trips.
fn ipv4(data: &[u8]) {
    let Ok((repr, off)) = Ipv4Repr::parse(data) else {
        return;
    };
    assert!(off >= ipv4::HEADER_LEN && off + repr.payload_len <= data.len());
    let mut out = vec![0u8; ipv4::HEADER_LEN + repr.payload_len];
    let n = repr.emit(&mut out).expect("a parsed header emits");
    assert_eq!(n, ipv4::HEADER_LEN);
    assert_eq!(
        Ipv4Repr::parse(&out),
        Ok((repr, n)),
        "ipv4 repr round-trips"
    );
    if off == ipv4::HEADER_LEN {
        let mut original = [0u8; ipv4::HEADER_LEN];
        original.copy_from_slice(&data[..ipv4::HEADER_LEN]);
        original[6] &= 0x7f; // reserved flag
        original[10..12].copy_from_slice(&out[10..12]); // checksum
        assert_eq!(&out[..n], &original[..], "ipv4 bytes round-trip");
    }
}

fn ipv6(data: &[u8]) {
    let Ok((repr, off)) = Ipv6Repr::parse(data) else {
        return;
    };
    assert!(off + repr.payload_len <= data.len());
    let mut out = vec![0u8; ipv6::HEADER_LEN + repr.payload_len];
    let n = repr.emit(&mut out).expect("a parsed header emits");
    assert_eq!(n, off);
    assert_eq!(&out[..n], &data[..n], "ipv6 bytes round-trip");
    assert_eq!(Ipv6Repr::parse(&out), Ok((repr, off)));
}

fn udp(data: &[u8]) {
    let Ok((repr, off)) = UdpRepr::parse(data) else {
        return;
    };
    assert!(off + repr.payload_len <= data.len());
    let mut out = vec![0u8; udp::HEADER_LEN + repr.payload_len];
    let n = repr.emit(&mut out).expect("a parsed header emits");
    assert_eq!(n, off);
    assert_eq!(&out[..n], &data[..n], "udp bytes round-trip");
    assert_eq!(UdpRepr::parse(&out), Ok((repr, off)));
}

/// Reserved bits are ignored on parse and written as zero: only the flag and VNI survive.
fn vxlan(data: &[u8]) {
    let Ok((repr, off)) = VxlanRepr::parse(data) else {
        return;
    };
    let mut out = [0u8; 8];
    let n = repr.emit(&mut out).expect("a parsed header emits");
    assert_eq!(n, off);
    assert_eq!(out[0], 0x08);
    assert_eq!(&out[4..7], &data[4..7], "vni round-trips");
    assert_eq!(VxlanRepr::parse(&out), Ok((repr, off)));
}

/// A pool big enough for any UDP payload, shared by every run (mapping one per run
/// would dominate the time).
fn pool() -> &'static Mempool {
    static POOL: OnceLock<Mempool> = OnceLock::new();
    POOL.get_or_init(|| Mempool::new(2, 72 * 1024).expect("fuzz mempool"))
}

/// What `parse_outer` accepts, re-encapsulated by `push_outer`, parses to the same
/// addresses, ports, VLAN and payload (IPv4 options are not re-emitted, so the payload
/// may start earlier).
fn outer(data: &[u8]) {
    let Ok(info) = encap::parse_outer(data) else {
        return;
    };
    let end = info.payload_offset + info.payload_len;
    assert!(end <= data.len(), "payload inside the frame");
    let payload = &data[info.payload_offset..end];
    if info.vlan.is_some_and(|v| v > encap::VLAN_ID_MAX) {
        return; // VID 4095 is received but never sent.
    }
    let Some(mut buf) = pool().alloc() else {
        return;
    };
    if buf.extend_from_slice(payload).is_err() {
        return;
    }
    let h = OuterHeaders {
        src_mac: info.src_mac,
        dst_mac: info.dst_mac,
        vlan: info.vlan,
        src: info.src,
        dst: info.dst,
    };
    encap::push_outer(&mut buf, &h, 1).expect("what was received can be sent");
    let again = encap::parse_outer(buf.data()).expect("what we send parses");
    assert_eq!(again.payload_offset, h.header_len());
    assert_eq!(
        (again.src_mac, again.dst_mac, again.vlan),
        (info.src_mac, info.dst_mac, info.vlan)
    );
    assert_eq!(
        (again.src, again.dst, again.payload_len),
        (info.src, info.dst, info.payload_len)
    );
    assert_eq!(&buf.data()[again.payload_offset..], payload);
}

/// The header is 12 bytes of plain fields: bytes round-trip (with `num_buffers`).
fn virtio_net_hdr(data: &[u8]) {
    let Ok((meta, off)) = vnet_hdr::parse(data) else {
        return;
    };
    assert_eq!(off, vnet_hdr::LEN);
    let num_buffers = u16::from_le_bytes([data[10], data[11]]);
    let mut out = [0u8; vnet_hdr::LEN];
    let n = vnet_hdr::emit(&meta, num_buffers, &mut out).expect("a parsed header emits");
    assert_eq!(n, off);
    assert_eq!(&out[..], &data[..n], "virtio-net header bytes round-trip");
    assert_eq!(vnet_hdr::parse(&out).ok(), Some((meta, off)));
}
