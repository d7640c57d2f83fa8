//! Transmit checksum offload: the header layout an advanced context descriptor holds,
//! and the descriptors of a frame whose TCP/UDP checksum the device inserts (82599
//! datasheet 7.2.3.2.3 and 7.2.3.2.4).

use pkt::PktBuf;

use super::regs;
use crate::igb::ring::TxRing;

/// The header layout a TX checksum offload needs, as one advanced context descriptor
/// holds it (82599 datasheet 7.2.3.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TxContext {
    /// MACLEN: Ethernet header, with a VLAN tag if present.
    pub(super) maclen: u8,
    /// IPLEN: the IP header, options or extension headers included.
    pub(super) iplen: u16,
    pub(super) ipv4: bool,
    pub(super) tcp: bool,
}

impl TxContext {
    /// The layout of `buf`, which asks for its L4 checksum (`NEEDS_CSUM`); `None` when
    /// the device cannot describe it (not IPv4/IPv6 TCP/UDP, odd offsets).
    pub(super) fn of(buf: &PktBuf) -> Option<Self> {
        let d = buf.data();
        let m = &buf.meta.offload;
        let (maclen, ethertype) = match d.get(12..14)? {
            [0x81, 0x00] => (18usize, d.get(16..18)?),
            et => (14, et),
        };
        let ipv4 = match ethertype {
            [0x08, 0x00] => true,
            [0x86, 0xdd] => false,
            _ => return None,
        };
        let start = usize::from(m.csum_start);
        let iplen = start.checked_sub(maclen)?;
        let tcp = match m.csum_offset {
            16 => true,
            6 => false,
            _ => return None,
        };
        let field_end = start + usize::from(m.csum_offset) + 2;
        if !(20..=511).contains(&iplen) || field_end > d.len() {
            return None;
        }
        // The offset names TCP or UDP; the header must agree (IPv4 protocol, or the
        // IPv6 next header when there are no extension headers).
        let proto = if ipv4 {
            d.get(maclen + 9).copied()
        } else if iplen == 40 {
            d.get(maclen + 6).copied()
        } else {
            None
        };
        if proto.is_some_and(|p| p != if tcp { 6 } else { 17 }) {
            return None;
        }
        Some(Self {
            maclen: maclen as u8,
            iplen: iplen as u16,
            ipv4,
            tcp,
        })
    }
}

/// Writes an advanced context descriptor (context 0) at the TX tail. It asks for no
/// write-back (RS clear): it is done when the data descriptor after it is.
#[inline]
pub(super) fn post_context(tx: &mut TxRing, ctx_slots: &mut [bool], ctx: TxContext) {
    use regs::desc;
    let slot = tx.tail;
    let macip = u32::from(ctx.iplen) | u32::from(ctx.maclen) << desc::CTX_MACLEN_SHIFT;
    let mut tucmd = desc::TX_DTYP_CTXT | desc::TX_CMD_DEXT;
    if ctx.ipv4 {
        tucmd |= desc::CTX_TUCMD_IPV4;
    }
    if ctx.tcp {
        tucmd |= desc::CTX_TUCMD_L4T_TCP;
    }
    tx.mem.write(slot, 0, u64::from(macip));
    // mss_l4len_idx = 0: context index 0, no TSO.
    tx.mem.write(slot, 1, u64::from(tucmd));
    tx.bufs[slot] = None;
    ctx_slots[slot] = true;
    tx.tail = (slot + 1) % tx.size();
}

/// Writes the data descriptors of a frame whose L4 checksum the device inserts
/// (POPTS.TXSM with context 0, CC set), split at a 4 KiB boundary as
/// [`TxRing::post`] does. The caller checked the free slots.
#[inline]
pub(super) fn post_checksummed(tx: &mut TxRing, iova: u64, len: usize, buf: PktBuf) {
    use regs::desc;
    const SPLIT: usize = 4096;
    let olinfo = (len as u32) << desc::TX_PAYLEN_SHIFT | desc::TX_OLINFO_CC | desc::TX_OLINFO_TXSM;
    let base = desc::TX_DTYP_DATA | desc::TX_CMD_DEXT | desc::TX_CMD_IFCS | desc::TX_CMD_RS;
    let first = (SPLIT - iova as usize % SPLIT).min(len);
    let mut segs = [(iova, first), (iova + first as u64, len - first)];
    if first == len {
        segs[1].1 = 0;
    }
    let mut buf = Some(buf);
    for (i, &(seg_iova, seg_len)) in segs.iter().enumerate() {
        if seg_len == 0 {
            continue;
        }
        let last = i == 1 || segs[1].1 == 0;
        let slot = tx.tail;
        let cmd = seg_len as u32 | base | if last { desc::TX_CMD_EOP } else { 0 };
        tx.mem.write(slot, 0, seg_iova);
        tx.mem
            .write(slot, 1, u64::from(cmd) | u64::from(olinfo) << 32);
        tx.bufs[slot] = if last { buf.take() } else { None };
        tx.tail = (slot + 1) % tx.size();
    }
}
