//! The register-level model's offload engine, from the 82576 datasheet: the RSS hash
//! and queue of a received frame (7.1.1.7: Toeplitz over addresses and ports as MRQC
//! selects, queue from the 128-entry RETA), the receive checksum status a write-back
//! carries (7.1.5: IPCS/L4I/UDPCS, IPE/L4E), and transmit checksum insertion and TCP
//! segmentation from an advanced context descriptor (7.2.4, 7.2.5), and 802.1Q tag
//! stripping and insertion.
//!
//! The model computes everything itself from the bytes; the driver's own reasoning
//! (`hw_offload`) is not used here, so a driver bug shows as a test failure.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use offload::checksum::{fold, sum};

use super::regs::{self, desc};

/// What the receive parser found in a frame.
#[derive(Debug, Clone, Copy)]
struct RxParse {
    l3: usize,
    v4: bool,
    src: IpAddr,
    dst: IpAddr,
    /// TCP (6) or UDP (17) when the frame is not a fragment, with its L4 offset and
    /// length (from the IP header).
    l4: Option<(u8, usize, usize)>,
    /// IPv4 header length.
    ihl: usize,
}

fn parse(f: &[u8]) -> Option<RxParse> {
    let be16 = |at: usize| f.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let (mut l3, mut et) = (14, be16(12)?);
    if et == 0x8100 {
        et = be16(16)?;
        l3 = 18;
    }
    match et {
        0x0800 => {
            let ihl = usize::from(*f.get(l3)? & 0x0f) * 4;
            let total = usize::from(be16(l3 + 2)?);
            if ihl < 20 || total < ihl || l3 + total > f.len() {
                return None;
            }
            let a = |at: usize| Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]);
            let frag = be16(l3 + 6)? & 0x3fff != 0;
            let proto = f[l3 + 9];
            let l4 = (!frag && matches!(proto, 6 | 17)).then_some((proto, l3 + ihl, total - ihl));
            Some(RxParse {
                l3,
                v4: true,
                src: IpAddr::V4(a(l3 + 12)),
                dst: IpAddr::V4(a(l3 + 16)),
                l4,
                ihl,
            })
        }
        0x86dd => {
            let plen = usize::from(be16(l3 + 4)?);
            if l3 + 40 + plen > f.len() {
                return None;
            }
            let a = |at: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&f[at..at + 16]);
                Ipv6Addr::from(b)
            };
            let nh = f[l3 + 6];
            let l4 = matches!(nh, 6 | 17).then_some((nh, l3 + 40, plen));
            Some(RxParse {
                l3,
                v4: false,
                src: IpAddr::V6(a(l3 + 8)),
                dst: IpAddr::V6(a(l3 + 24)),
                l4,
                ihl: 0,
            })
        }
        _ => None,
    }
}

/// The RSS type and hash of a received frame, when MRQC hashes its kind; `key` is
/// RSSRK's 40 bytes.
pub(super) fn rss(f: &[u8], mrqc: u32, key: &[u8; 40]) -> Option<(u32, u32)> {
    let p = parse(f)?;
    let ports = p.l4.and_then(|(proto, at, _)| {
        let b = f.get(at..at + 4)?;
        Some((
            proto,
            u16::from_be_bytes([b[0], b[1]]),
            u16::from_be_bytes([b[2], b[3]]),
        ))
    });
    let on = |bit: u32| mrqc & bit != 0;
    let (kind, with_ports) = match (p.v4, ports) {
        (true, Some((6, ..))) if on(regs::MRQC_RSS_FIELD_IPV4_TCP) => (1, true),
        (true, Some((17, ..))) if on(regs::MRQC_RSS_FIELD_IPV4_UDP) => (7, true),
        (true, _) if on(regs::MRQC_RSS_FIELD_IPV4) => (2, false),
        (false, Some((6, ..))) if on(regs::MRQC_RSS_FIELD_IPV6_TCP) => (3, true),
        (false, Some((17, ..))) if on(regs::MRQC_RSS_FIELD_IPV6_UDP) => (8, true),
        (false, _) if on(regs::MRQC_RSS_FIELD_IPV6) => (5, false),
        _ => return None,
    };
    let ports = ports.filter(|_| with_ports).map(|(_, s, d)| (s, d));
    Some((kind, offload::rss::flow_hash(key, p.src, p.dst, ports)))
}

/// The receive status bits (IPCS, L4I, UDPCS, IPE, L4E) and packet type (pkt_info)
/// the device writes back for `f` under RXCSUM `rxcsum`.
pub(super) fn rx_checksum(f: &[u8], rxcsum: u32) -> (u32, u32) {
    let Some(p) = parse(f) else {
        return (0, 0);
    };
    let mut status = 0;
    let mut info = if p.v4 { desc::RX_PKT_IPV4 } else { 1 << 6 };
    if p.v4 && rxcsum & regs::RXCSUM_IPOFLD != 0 {
        status |= desc::RX_STATUS_IPCS;
        if sum(&f[p.l3..p.l3 + p.ihl], 0) != 0xffff {
            status |= desc::RX_ERR_IPE;
        }
    }
    if let Some((proto, at, len)) = p.l4 {
        info |= if proto == 6 { 1 << 8 } else { 1 << 9 };
        if rxcsum & regs::RXCSUM_TUOFLD != 0 {
            let seg = &f[at..at + len];
            status |= desc::RX_STATUS_L4I;
            if proto == 17 {
                status |= desc::RX_STATUS_UDPCS;
            }
            let good = match (p.src, p.dst, proto) {
                (IpAddr::V4(s), IpAddr::V4(d), 17) => offload::checksum::verify_udp_v4(s, d, seg),
                (IpAddr::V4(s), IpAddr::V4(d), _) => offload::checksum::verify_tcp_v4(s, d, seg),
                (IpAddr::V6(s), IpAddr::V6(d), 17) => offload::checksum::verify_udp_v6(&s, &d, seg),
                (IpAddr::V6(s), IpAddr::V6(d), _) => offload::checksum::verify_tcp_v6(&s, &d, seg),
                _ => false,
            };
            if !good {
                status |= desc::RX_ERR_L4E;
            }
        }
    }
    (status, info)
}

/// One latched transmit context (the advanced context descriptor's fields).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct TxCtx {
    /// vlan_macip_lens.
    pub macip: u32,
    /// type_tucmd_mlhl.
    pub tucmd: u32,
    /// mss_l4len_idx.
    pub mss_l4len: u32,
}

impl TxCtx {
    /// The context slot (IDX) a context descriptor writes.
    pub fn index(&self) -> usize {
        ((self.mss_l4len >> desc::CTX_IDX_SHIFT) & 1) as usize
    }
}

/// A context or frame the device cannot act on (the model counts and drops it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BadContext;

/// Applies the offloads the first data descriptor of a frame asks for (`cmd`,
/// `olinfo`) under context `ctx` (`None`: never written) and hands out the frames to
/// send: one, or the segments of a TSO frame.
pub(super) fn tx_offload(
    mut frame: Vec<u8>,
    cmd: u32,
    olinfo: u32,
    ctx: Option<TxCtx>,
    mut out: impl FnMut(Vec<u8>),
) -> Result<(), BadContext> {
    let tso = cmd & desc::TX_CMD_TSE != 0;
    let txsm = olinfo & desc::TX_OLINFO_TXSM != 0;
    let ixsm = olinfo & desc::TX_OLINFO_IXSM != 0;
    if !tso && !txsm && !ixsm {
        out(frame);
        return Ok(());
    }
    let c = ctx.ok_or(BadContext)?;
    let maclen = (c.macip >> desc::CTX_MACLEN_SHIFT & 0x7f) as usize;
    let iplen = (c.macip & 0x1ff) as usize;
    let ipv4 = c.tucmd & desc::CTX_TUCMD_IPV4 != 0;
    let tcp = c.tucmd >> 11 & 3 == 1;
    let l4 = maclen + iplen;
    let field = l4 + if tcp { 16 } else { 6 };
    let version = frame.get(maclen).map(|v| v >> 4);
    if maclen < 14
        || iplen < 20
        || field + 2 > frame.len()
        || version != Some(if ipv4 { 4 } else { 6 })
    {
        return Err(BadContext);
    }
    if !tso {
        if ixsm && ipv4 {
            ipv4_header_checksum(&mut frame[maclen..l4]);
        }
        if txsm {
            let at = field;
            let s = fold(u64::from(sum(&frame[l4..], 0)));
            let mut c = !s;
            if !tcp && c == 0 {
                c = 0xffff;
            }
            frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
        out(frame);
        return Ok(());
    }
    // TCP segmentation (7.2.5): the header replicated per segment, lengths, IPv4 ID
    // and checksum, sequence numbers, flags and TCP checksums per segment.
    let l4len = (c.mss_l4len >> desc::CTX_L4LEN_SHIFT & 0xff) as usize;
    let mss = (c.mss_l4len >> desc::CTX_MSS_SHIFT) as usize;
    let hdr = l4 + l4len;
    let paylen = (olinfo >> desc::TX_PAYLEN_SHIFT) as usize;
    if !tcp || l4len < 20 || mss == 0 || hdr >= frame.len() || paylen != frame.len() - hdr {
        return Err(BadContext);
    }
    let payload = &frame[hdr..];
    let seq0 = u32::from_be_bytes([frame[l4 + 4], frame[l4 + 5], frame[l4 + 6], frame[l4 + 7]]);
    let id0 = u16::from_be_bytes([frame[maclen + 4], frame[maclen + 5]]);
    let seed = u16::from_be_bytes([frame[field], frame[field + 1]]);
    let count = payload.len().div_ceil(mss);
    for i in 0..count {
        let chunk = &payload[i * mss..((i + 1) * mss).min(payload.len())];
        let mut seg = Vec::with_capacity(hdr + chunk.len());
        seg.extend_from_slice(&frame[..hdr]);
        seg.extend_from_slice(chunk);
        let l4_bytes = seg.len() - l4;
        if ipv4 {
            let total = (seg.len() - maclen) as u16;
            seg[maclen + 2..maclen + 4].copy_from_slice(&total.to_be_bytes());
            seg[maclen + 4..maclen + 6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
            if ixsm {
                ipv4_header_checksum(&mut seg[maclen..l4]);
            }
        } else {
            let plen = (seg.len() - maclen - 40) as u16;
            seg[maclen + 4..maclen + 6].copy_from_slice(&plen.to_be_bytes());
        }
        let seq = seq0.wrapping_add((i * mss) as u32);
        seg[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
        if i + 1 < count {
            // DTXTCPFLGL's default masks: FIN and PSH only on the last segment.
            seg[l4 + 13] &= !(0x01 | 0x08);
        }
        if txsm {
            // The field holds the pseudo-header sum without a length; add this one's.
            let len = l4_bytes as u32;
            let seeded = fold(u64::from(seed) + u64::from(len >> 16) + u64::from(len & 0xffff));
            seg[field..field + 2].copy_from_slice(&seeded.to_be_bytes());
            let c = !fold(u64::from(sum(&seg[l4..], 0)));
            seg[field..field + 2].copy_from_slice(&c.to_be_bytes());
        }
        out(seg);
    }
    Ok(())
}

/// The 802.1Q EtherType (VET's reset value).
const TPID_8021Q: [u8; 2] = [0x81, 0x00];

/// Removes the 802.1Q tag of a tagged frame (CTRL.VME on receive): the frame without
/// its 4 tag bytes, and the TCI. `None` for an untagged or truncated frame.
pub(super) fn strip_vlan(f: &[u8]) -> Option<(Vec<u8>, u16)> {
    if f.len() < 18 || f[12..14] != TPID_8021Q {
        return None;
    }
    let tci = u16::from_be_bytes([f[14], f[15]]);
    let mut out = Vec::with_capacity(f.len() - 4);
    out.extend_from_slice(&f[..12]);
    out.extend_from_slice(&f[16..]);
    Some((out, tci))
}

/// Inserts an 802.1Q tag with `tci` after the MAC addresses (DCMD.VLE on transmit).
pub(super) fn insert_vlan(f: &mut Vec<u8>, tci: u16) {
    let at = f.len().min(12);
    let t = tci.to_be_bytes();
    f.splice(at..at, [TPID_8021Q[0], TPID_8021Q[1], t[0], t[1]]);
}

/// Fills in an IPv4 header's checksum.
fn ipv4_header_checksum(h: &mut [u8]) {
    h[10..12].copy_from_slice(&[0, 0]);
    let c = !fold(u64::from(sum(h, 0)));
    h[10..12].copy_from_slice(&c.to_be_bytes());
}

/// The pseudo-header sums, for tests that build TSO requests by hand.
#[cfg(test)]
pub(super) fn pseudo(src: IpAddr, dst: IpAddr, proto: u8, len: u32) -> u32 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            offload::checksum::pseudo_header_v4(s, d, proto, len as u16)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => offload::checksum::pseudo_header_v6(&s, &d, proto, len),
        _ => 0,
    }
}
