//! What the 82576 does for a frame besides moving it: the transmit context a frame's
//! offload request ([`pkt::OffloadMeta`], virtio-net terms) needs (checksum insertion,
//! TCP segmentation), the receive checksum verdict of a write-back, and the transmit
//! queue of a flow. A tag to insert (DCMD.VLE) rides in the same context's VLAN field.
//!
//! Advanced context descriptor layout: 82576 datasheet 7.2.2.3.x ("Advanced Transmit
//! Context Descriptor"): vlan_macip_lens (IPLEN 8:0, MACLEN 15:9, VLAN 31:16),
//! type_tucmd_mlhl (TUCMD, DTYP, DEXT), mss_l4len_idx (IDX 6:4, L4LEN 15:8, MSS 31:16).

use offload::vnet_hdr::{self, gso};
use pkt::PktBuf;

use super::regs::desc;

/// The header layout one advanced context descriptor holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TxContext {
    /// MACLEN: Ethernet header, with a VLAN tag if present.
    pub maclen: u8,
    /// IPLEN: the IP header, options or extension headers included.
    pub iplen: u16,
    /// IPv4 (else IPv6).
    pub ipv4: bool,
    /// TCP (else UDP).
    pub tcp: bool,
    /// TCP header bytes (TSO only; 0 otherwise).
    pub l4len: u8,
    /// Payload bytes per segment (TSO only; 0 otherwise).
    pub mss: u16,
    /// The 802.1Q TCI the device inserts into frames sent with DCMD.VLE (0 when no
    /// frame under this context asks for a tag).
    pub vlan: u16,
}

impl TxContext {
    /// A context that only carries a tag to insert, for a frame without checksum or
    /// segmentation requests (the device reads no other field for it).
    pub fn vlan_only(tci: u16) -> Self {
        Self {
            maclen: 0,
            iplen: 0,
            ipv4: false,
            tcp: false,
            l4len: 0,
            mss: 0,
            vlan: tci,
        }
    }

    /// The two qwords of the context descriptor (context slot 0).
    pub fn descriptor(&self) -> [u64; 2] {
        let macip = u32::from(self.iplen)
            | u32::from(self.maclen) << desc::CTX_MACLEN_SHIFT
            | u32::from(self.vlan) << desc::CTX_VLAN_SHIFT;
        let mut tucmd = desc::TX_DTYP_CTXT | desc::TX_CMD_DEXT;
        if self.ipv4 {
            tucmd |= desc::CTX_TUCMD_IPV4;
        }
        if self.tcp {
            tucmd |= desc::CTX_TUCMD_L4T_TCP;
        }
        let mss_l4len = u32::from(self.mss) << desc::CTX_MSS_SHIFT
            | u32::from(self.l4len) << desc::CTX_L4LEN_SHIFT;
        [
            u64::from(macip),
            u64::from(tucmd) | u64::from(mss_l4len) << 32,
        ]
    }

    /// Bytes of headers the device replicates per segment (TSO).
    pub fn header_len(&self) -> usize {
        usize::from(self.maclen) + usize::from(self.iplen) + usize::from(self.l4len)
    }
}

/// How a frame goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TxPlan {
    /// As it is (no request, or the checksum was completed in software).
    Plain,
    /// The device inserts the L4 checksum (and the IPv4 header checksum).
    Checksum(TxContext),
    /// The device cuts the frame into `mss`-sized TCP segments with their checksums.
    Segment(TxContext),
}

/// Why a frame's offload request cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TxOffloadError {
    /// The request is malformed or names fields outside the frame.
    Bad,
    /// A large frame the device cannot segment (UDP GSO, or a layout it cannot describe).
    Unsupported,
    /// Longer than the MTU allows and not asking for segmentation.
    TooLong,
}

/// The layout of a frame asking for its L4 checksum; `None` when the device cannot
/// describe it (not IPv4/IPv6 TCP/UDP, offsets out of the fields' ranges).
fn layout(d: &[u8], csum_start: usize, csum_offset: usize) -> Option<TxContext> {
    let (maclen, ethertype) = match d.get(12..14)? {
        [0x81, 0x00] => (18usize, d.get(16..18)?),
        et => (14, et),
    };
    let ipv4 = match ethertype {
        [0x08, 0x00] => true,
        [0x86, 0xdd] => false,
        _ => return None,
    };
    let iplen = csum_start.checked_sub(maclen)?;
    let tcp = match csum_offset {
        16 => true,
        6 => false,
        _ => return None,
    };
    if !(20..=511).contains(&iplen) || csum_start + csum_offset + 2 > d.len() {
        return None;
    }
    // The offset names TCP or UDP; the header must agree (IPv4 protocol, or the IPv6
    // next header when there are no extension headers).
    let proto = if ipv4 {
        d.get(maclen + 9).copied()
    } else if iplen == 40 {
        d.get(maclen + 6).copied()
    } else {
        None
    };
    if proto != Some(if tcp { 6 } else { 17 }) {
        return None;
    }
    Some(TxContext {
        maclen: maclen as u8,
        iplen: iplen as u16,
        ipv4,
        tcp,
        l4len: 0,
        mss: 0,
        vlan: 0,
    })
}

/// Decides how `buf` goes out on a port whose frames are at most `max_frame` bytes.
/// Pure, so a frame that waits for ring space is planned again unchanged; the caller
/// prepares it ([`prepare_segmentation`], or a software checksum for
/// [`TxPlan::Plain`] frames that still ask for one) once it posts it.
pub(super) fn plan(buf: &PktBuf, max_frame: usize) -> Result<TxPlan, TxOffloadError> {
    let m = buf.meta.offload;
    let gso_type = m.gso_type & !gso::ECN;
    let needs_csum = m.flags & vnet_hdr::NEEDS_CSUM != 0;
    // The whole frame's length; the headers must lie in `data()` (the pool buffer),
    // ahead of any external tail.
    let len = buf.frame_len();
    let d = buf.data();
    let start = usize::from(m.csum_start);
    if len > max_frame {
        if gso_type == gso::NONE {
            return Err(TxOffloadError::TooLong);
        }
        if !matches!(gso_type, gso::TCPV4 | gso::TCPV6) || !needs_csum || m.gso_size == 0 {
            return Err(TxOffloadError::Unsupported);
        }
        let Some(mut ctx) = layout(d, start, usize::from(m.csum_offset)) else {
            return Err(TxOffloadError::Unsupported);
        };
        if !ctx.tcp || ctx.ipv4 != (gso_type == gso::TCPV4) {
            return Err(TxOffloadError::Bad);
        }
        let doff = usize::from(d.get(start + 12).copied().unwrap_or(0) >> 4) * 4;
        let hdr = start + doff;
        let mss = usize::from(m.gso_size);
        // Every segment must fit the wire's frame size, as the kernel's would.
        if doff < 20 || hdr >= len || hdr + mss > max_frame {
            return Err(TxOffloadError::Bad);
        }
        if hdr > d.len() {
            // The TCP header reaches into an external tail: joined, then planned again.
            return Err(TxOffloadError::Unsupported);
        }
        ctx.l4len = doff as u8;
        ctx.mss = m.gso_size;
        return Ok(TxPlan::Segment(ctx));
    }
    if !needs_csum {
        return Ok(TxPlan::Plain);
    }
    if let Some(ctx) = layout(d, start, usize::from(m.csum_offset)) {
        return Ok(TxPlan::Checksum(ctx));
    }
    // A layout the device cannot describe: software completes it, if the request
    // names a field inside the frame.
    if start + usize::from(m.csum_offset) + 2 > len || !m.csum_offset.is_multiple_of(2) {
        return Err(TxOffloadError::Bad);
    }
    Ok(TxPlan::Plain)
}

/// Readies a frame planned as [`TxPlan::Segment`]: its TCP checksum field holds the
/// pseudo-header sum over the whole frame's L4 length (virtio semantics); the device
/// wants it without a length, since it adds each segment's own.
pub(super) fn prepare_segmentation(buf: &mut PktBuf, ctx: &TxContext) {
    let start = usize::from(ctx.maclen) + usize::from(ctx.iplen);
    let l4_len = (buf.frame_len() - start) as u32;
    let d = buf.data_mut();
    let at = start + 16;
    let Some(f) = d.get_mut(at..at + 2) else {
        return;
    };
    let field = u16::from_be_bytes([f[0], f[1]]);
    let less = u32::from(field) + u32::from(!(l4_len as u16)) + u32::from(!((l4_len >> 16) as u16));
    f.copy_from_slice(&offload::checksum::fold(u64::from(less)).to_be_bytes());
}

/// The device's receive checksum verdict on one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RxVerdict {
    /// Every checksum the frame has was checked and is right.
    Good,
    /// The device found a bad IPv4 header or L4 checksum.
    Bad,
    /// Not checked (not IP, not TCP/UDP, a fragment, or offload off).
    Unchecked,
}

/// The verdict of a write-back: `status_error` (qword 1 low dword) and `pkt_info`
/// (qword 0 low dword).
#[inline]
pub(super) fn rx_verdict(status_error: u32, pkt_info: u32) -> RxVerdict {
    if status_error & (desc::RX_ERR_IPE | desc::RX_ERR_L4E) != 0 {
        return RxVerdict::Bad;
    }
    let l4 = status_error & desc::RX_STATUS_L4I != 0;
    // An IPv4 frame is good only when its header was checked too.
    let ip = pkt_info & desc::RX_PKT_IPV4 == 0 || status_error & desc::RX_STATUS_IPCS != 0;
    if l4 && ip {
        RxVerdict::Good
    } else {
        RxVerdict::Unchecked
    }
}

/// A cheap hash of a frame's flow (IP addresses and TCP/UDP ports, or the MAC
/// addresses of non-IP frames), to keep each flow on one transmit queue.
#[inline]
pub(super) fn flow_hash(d: &[u8]) -> u32 {
    let word = |at: usize| {
        d.get(at..at + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let mix = |h: u32, w: u32| (h ^ w).wrapping_mul(0x9e37_79b1).rotate_left(13);
    let mut l3 = 14;
    let mut et = d
        .get(12..14)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    if et == 0x8100 {
        et = d
            .get(16..18)
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
        l3 = 18;
    }
    let mut h = 0x811c_9dc5;
    match et {
        0x0800 => {
            let ihl = usize::from(d.get(l3).copied().unwrap_or(0) & 0x0f) * 4;
            h = mix(mix(h, word(l3 + 12)), word(l3 + 16));
            let frag = d
                .get(l3 + 6..l3 + 8)
                .is_some_and(|b| u16::from_be_bytes([b[0], b[1]]) & 0x3fff != 0);
            if matches!(d.get(l3 + 9), Some(6 | 17)) && !frag {
                h = mix(h, word(l3 + ihl));
            }
        }
        0x86dd => {
            for i in 0..8 {
                h = mix(h, word(l3 + 8 + 4 * i));
            }
            if matches!(d.get(l3 + 6), Some(6 | 17)) {
                h = mix(h, word(l3 + 40));
            }
        }
        _ => {
            h = mix(mix(mix(h, word(0)), word(4)), word(8));
        }
    }
    h ^ h >> 16
}
