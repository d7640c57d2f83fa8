//! The packet work on one virtqueue, separate from the vhost-user protocol so it can be
//! tested against `virtio_queue`'s mock rings: [`guest_tx`] turns the guest's transmit
//! chains into frames, [`guest_rx`] copies frames into the guest's receive chains.
//!
//! Everything the guest wrote is untrusted. A malformed chain on the transmit queue is
//! returned to the guest unused and counted; on the receive queue it marks the queue
//! broken (virtio 1.2, 2.1.2: the device may stop using a queue it cannot trust) and the
//! port stops touching it until the guest resets or reconnects.

use std::num::Wrapping;
use std::sync::atomic::Ordering;

use offload::vnet_hdr::{self, VirtioNetHdr};
use pkt::{Batch, HEADROOM, Mempool};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory};
use zerocopy::FromBytes;

use crate::chain::{Chain, ChainError, Seg, WalkRules};
use crate::net::Negotiated;
use crate::tails::{COPY_HEAD, TxTails};

/// Most receive chains one frame may span with mergeable receive buffers.
pub const MAX_MERGE: usize = 64;

/// Named drop counters of a guest port, in [`Drops`] order.
pub const DROP_NAMES: [&str; 19] = [
    "bad_desc_index",
    "bad_desc_loop",
    "bad_desc_indirect",
    "bad_desc_address",
    "bad_desc_zero_len",
    "bad_desc_direction",
    "bad_desc_too_many_segments",
    "bad_desc_too_long",
    "rx_runt",
    "rx_bad_vnet_hdr",
    "rx_gso_not_negotiated",
    "rx_no_buffer",
    "tx_no_guest",
    "tx_guest_buffer_too_small",
    "tx_gso_unsupported",
    "tx_bad_checksum_request",
    "queue_broken",
    "rx_bad_gso",
    "tx_gso_no_buffer",
];

/// Indices into [`DROP_NAMES`] for the non-descriptor drops.
#[allow(missing_docs)]
pub mod drop {
    pub const RX_RUNT: usize = 8;
    pub const RX_BAD_VNET_HDR: usize = 9;
    pub const RX_GSO_NOT_NEGOTIATED: usize = 10;
    pub const RX_NO_BUFFER: usize = 11;
    pub const TX_NO_GUEST: usize = 12;
    pub const TX_GUEST_BUFFER_TOO_SMALL: usize = 13;
    pub const TX_GSO_UNSUPPORTED: usize = 14;
    pub const TX_BAD_CHECKSUM_REQUEST: usize = 15;
    pub const QUEUE_BROKEN: usize = 16;
    pub const RX_BAD_GSO: usize = 17;
    pub const TX_GSO_NO_BUFFER: usize = 18;
}

/// Drop counts, indexed like [`DROP_NAMES`].
pub type Drops = [u64; DROP_NAMES.len()];

/// Traffic counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Frames moved.
    pub packets: u64,
    /// Bytes moved (frames without the virtio-net header).
    pub bytes: u64,
    /// Of `packets`, frames moved whole with a segmentation offload request (TSO).
    pub gso: u64,
}

/// The queue can no longer be trusted (bad ring index, bad receive chain, ring memory
/// gone); the caller stops using it until the guest resets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Broken(pub &'static str);

/// Result of one pass over a queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Frames moved into or out of the batch (transmit: received from the guest;
    /// receive: removed from the batch, delivered or dropped).
    pub frames: usize,
    /// Used-ring entries added (the guest may need a notification).
    pub used: usize,
}

/// Takes the next available head index, or `None` when the ring is empty.
pub(crate) fn pop_head<M: GuestMemory>(q: &mut Queue, mem: &M) -> Result<Option<u16>, Broken> {
    let avail = q
        .avail_idx(mem, Ordering::Acquire)
        .map_err(|_| Broken("avail ring unreadable"))?;
    let next = Wrapping(q.next_avail());
    let pending = (avail - next).0;
    if pending == 0 {
        return Ok(None);
    }
    let size = q.size();
    if size == 0 || pending > size {
        return Err(Broken("avail index ahead of the ring size"));
    }
    // virtio 1.2, 2.7.6: flags u16, idx u16, ring[size] u16.
    let slot = u64::from(next.0 % size);
    let at = GuestAddress(q.avail_ring())
        .checked_add(4 + 2 * slot)
        .ok_or(Broken("avail ring address overflows"))?;
    let head: u16 = mem
        .read_obj::<u16>(at)
        .map(u16::from_le)
        .map_err(|_| Broken("avail ring unreadable"))?;
    q.set_next_avail((next + Wrapping(1)).0);
    Ok(Some(head))
}

fn add_used<M: GuestMemory>(q: &mut Queue, mem: &M, head: u16, len: u32) -> Result<(), Broken> {
    q.add_used(mem, head, len)
        .map_err(|_| Broken("used ring unwritable or bad head"))
}

/// Moves up to `batch.room()` frames from the guest's transmit queue into `batch`.
/// Chains that fail the checks are returned to the guest and counted in `drops`.
#[allow(clippy::too_many_arguments)]
pub fn guest_tx<M: GuestMemory>(
    q: &mut Queue,
    mem: &M,
    neg: Negotiated,
    pool: &Mempool,
    batch: &mut Batch,
    chain: &mut Chain,
    traffic: &mut Traffic,
    drops: &mut Drops,
) -> Result<Pass, Broken> {
    guest_tx_inner(q, mem, neg, pool, batch, chain, traffic, drops, None)
}

/// [`guest_tx`] with zero-copy: a long frame whose bytes past the first
/// [`COPY_HEAD`] lie in one range of guest memory leaves them there, as its external
/// tail, and its chain goes into the used ring only when the tail comes back
/// ([`TxTails::drain`]). The memory is `tails`' current map; `queue` is `q`'s index.
#[allow(clippy::too_many_arguments)]
pub fn guest_tx_tails(
    q: &mut Queue,
    queue: usize,
    neg: Negotiated,
    pool: &Mempool,
    batch: &mut Batch,
    chain: &mut Chain,
    traffic: &mut Traffic,
    drops: &mut Drops,
    tails: &mut TxTails,
) -> Result<Pass, Broken> {
    let Some(mem) = tails.memory().cloned() else {
        return Ok(Pass::default());
    };
    guest_tx_inner(
        q,
        &*mem,
        neg,
        pool,
        batch,
        chain,
        traffic,
        drops,
        Some((tails, queue)),
    )
}

#[allow(clippy::too_many_arguments)]
fn guest_tx_inner<M: GuestMemory>(
    q: &mut Queue,
    mem: &M,
    neg: Negotiated,
    pool: &Mempool,
    batch: &mut Batch,
    chain: &mut Chain,
    traffic: &mut Traffic,
    drops: &mut Drops,
    mut zc: Option<(&mut TxTails, usize)>,
) -> Result<Pass, Broken> {
    let mut pass = Pass::default();
    let hdr_len = neg.hdr_len;
    let table = GuestAddress(q.desc_table());
    let size = q.size();
    let mut rechecked = false;
    while !batch.is_full() {
        let Some(mut buf) = pool.alloc() else {
            drops[drop::RX_NO_BUFFER] += 1;
            break;
        };
        let Some(head) = pop_head(q, mem)? else {
            // Empty: ask for a kick, then look once more for a chain that raced with it.
            if rechecked
                || !q
                    .enable_notification(mem)
                    .map_err(|_| Broken("used ring unwritable"))?
            {
                break;
            }
            rechecked = true;
            continue;
        };
        if pass.used == 0 {
            q.disable_notification(mem)
                .map_err(|_| Broken("used ring unwritable"))?;
        }
        let space = buf.reset_for_rx(HEADROOM - hdr_len);
        let rules = WalkRules {
            writable: false,
            mixed: false,
            indirect: neg.indirect,
            max_total: space.len() as u64,
        };
        let mut plan = None;
        let mut verdict = match chain.walk(mem, table, size, head, rules) {
            Err(e) => Err(e.index()),
            Ok(()) => {
                let total = chain.total() as usize;
                let from = hdr_len + COPY_HEAD;
                if let Some((t, _)) = zc.as_mut()
                    && t.wants(total.saturating_sub(hdr_len))
                {
                    plan = t.plan(chain.segs(), from, total);
                    if plan.is_none() {
                        t.fell_back();
                    }
                }
                let copy = plan.map_or(total, |_| from);
                match chain.read_at(mem, 0, &mut space[..copy]) {
                    Some(n) if n == copy => parse_tx_frame(&mut buf, copy, total - copy, neg),
                    _ => Err(ChainError::BadAddress.index()),
                }
            }
        };
        let mut lent = false;
        if let (Some(p), Some((t, queue))) = (plan, zc.as_mut()) {
            lent = verdict.is_ok() && headers_in(&buf) && t.attach(*queue, head, p, &mut buf);
            if !lent {
                // Copied after all: a refusal seen on the head alone is checked again
                // on the whole frame.
                t.fell_back();
                let total = chain.total() as usize;
                let space = buf.reset_for_rx(HEADROOM - hdr_len);
                verdict = match chain.read_at(mem, 0, &mut space[..total]) {
                    Some(n) if n == total => parse_tx_frame(&mut buf, total, 0, neg),
                    _ => Err(ChainError::BadAddress.index()),
                };
            }
        }
        if !lent {
            add_used(q, mem, head, 0)?;
            pass.used += 1;
        }
        match verdict {
            Ok(()) => {
                traffic.packets += 1;
                traffic.bytes += buf.frame_len() as u64;
                traffic.gso += u64::from(buf.meta.offload.gso_type != vnet_hdr::gso::NONE);
                pass.frames += 1;
                // Cannot fail: the loop runs only while the batch has room.
                let _ = batch.push(buf);
            }
            Err(counter) => drops[counter] += 1,
        }
    }
    Ok(pass)
}

/// Whether every byte the engine may rewrite (the partial checksum's field, a TSO
/// frame's headers) is in the buffer's part of a frame with a tail.
fn headers_in(buf: &pkt::PktBuf) -> bool {
    let m = &buf.meta.offload;
    let field = usize::from(m.csum_start) + usize::from(m.csum_offset) + 2;
    (m.flags & vnet_hdr::NEEDS_CSUM == 0 || field <= buf.len())
        && usize::from(m.hdr_len) <= buf.len()
}

/// Checks the header of a frame just copied from a transmit chain (its first `total`
/// bytes; `tail` more stay in the guest), moves its offload request into the metadata
/// and strips it. `Err` holds the drop counter index.
fn parse_tx_frame(
    buf: &mut pkt::PktBuf,
    total: usize,
    tail: usize,
    neg: Negotiated,
) -> Result<(), usize> {
    let hdr_len = neg.hdr_len;
    if total < hdr_len + 14 {
        return Err(drop::RX_RUNT);
    }
    buf.set_len(total).map_err(|_| drop::RX_RUNT)?;
    let mut raw = [0u8; vnet_hdr::LEN];
    raw[..hdr_len].copy_from_slice(&buf.data()[..hdr_len]);
    let hdr = VirtioNetHdr::read_from_bytes(&raw).map_err(|_| drop::RX_BAD_VNET_HDR)?;
    hdr.validate().map_err(|_| drop::RX_BAD_VNET_HDR)?;
    let mut meta = hdr.to_meta();
    if !neg.host_takes_gso(meta.gso_type) {
        // Only what we offered: HOST_TSO4/6 (and then neither ECN, UFO nor USO).
        return Err(drop::RX_GSO_NOT_NEGOTIATED);
    }
    // DATA_VALID means nothing on transmit (virtio 1.2, 5.1.6.2).
    meta.flags &= vnet_hdr::NEEDS_CSUM;
    if meta.flags != 0 && !neg.csum {
        return Err(drop::RX_BAD_VNET_HDR);
    }
    buf.strip_front(hdr_len).map_err(|_| drop::RX_RUNT)?;
    let frame_len = buf.len() + tail;
    if meta.flags != 0 {
        let field = usize::from(meta.csum_start) + usize::from(meta.csum_offset) + 2;
        if field > frame_len {
            return Err(drop::RX_BAD_VNET_HDR);
        }
    }
    if meta.gso_type != vnet_hdr::gso::NONE {
        check_tx_gso(buf.data(), frame_len, &meta)?;
    }
    buf.meta = pkt::Meta {
        addr: None,
        offload: meta,
        vlan: None,
    };
    Ok(())
}

/// A guest's TSO request must be one we can carry and cut: a partial TCP checksum
/// (virtio 1.2, 5.1.6.2: segmentation implies it), headers that lie inside the frame,
/// and Ethernet + IPv4/IPv6 + TCP whose lengths agree with the frame.
fn check_tx_gso(frame: &[u8], frame_len: usize, meta: &pkt::OffloadMeta) -> Result<(), usize> {
    if meta.flags & vnet_hdr::NEEDS_CSUM == 0 || usize::from(meta.hdr_len) > frame_len {
        return Err(drop::RX_BAD_GSO);
    }
    let hdrs = offload::gso::l3l4_header_len(frame).map_err(|_| drop::RX_BAD_GSO)?;
    if usize::from(meta.csum_start) + 16 + 2 > frame_len || hdrs < 40 {
        return Err(drop::RX_BAD_GSO);
    }
    Ok(())
}

/// What [`deliver_frame`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Copied into the guest's receive queue, taking this many used entries.
    Delivered(usize),
    /// Dropped for a reason that will not change (counted).
    Dropped,
    /// The guest has no receive buffers now: try again after its next kick.
    NoRoom,
}

/// Copies one frame into the guest's receive queue `q`, with a virtio-net header for
/// its offload metadata. A GSO frame the guest cannot take whole is dropped
/// (`tx_gso_unsupported`): the caller segments those first. A partial checksum is
/// completed first when the guest did not negotiate `GUEST_CSUM`. `rechecked` is the
/// queue's "asked for a kick and looked again" flag for this pass.
#[allow(clippy::too_many_arguments)]
pub fn deliver_frame<M: GuestMemory>(
    q: &mut Queue,
    mem: &M,
    neg: Negotiated,
    buf: &mut pkt::PktBuf,
    chain: &mut Chain,
    rechecked: &mut bool,
    traffic: &mut Traffic,
    drops: &mut Drops,
) -> Result<Delivery, Broken> {
    let hdr_len = neg.hdr_len;
    let table = GuestAddress(q.desc_table());
    let size = q.size();
    let rules = WalkRules {
        writable: true,
        mixed: false,
        indirect: neg.indirect,
        max_total: u64::from(u32::MAX),
    };
    let mut meta = buf.meta.offload;
    if !neg.guest_takes_gso(meta.gso_type) {
        drops[drop::TX_GSO_UNSUPPORTED] += 1;
        return Ok(Delivery::Dropped);
    }
    // Settle the checksum once: a retried frame must not be summed twice.
    if !neg.guest_csum {
        if meta.flags & vnet_hdr::NEEDS_CSUM != 0 {
            // Over an external tail where it lies (the field is among the headers).
            let (start, off) = (usize::from(meta.csum_start), usize::from(meta.csum_offset));
            let (head, tail) = buf.parts_mut();
            if offload::checksum::complete_partial_split(head, tail, start, off).is_err() {
                drops[drop::TX_BAD_CHECKSUM_REQUEST] += 1;
                return Ok(Delivery::Dropped);
            }
        }
        meta.flags = 0;
        buf.meta.offload = meta;
    }
    let mut hdr = [0u8; vnet_hdr::LEN];
    // Cannot fail: `hdr` is exactly LEN bytes.
    let _ = vnet_hdr::emit(&meta, 1, &mut hdr);
    // The frame may end in an external tail: copied straight from where it lies.
    let (head_part, tail_part) = buf.parts();
    let frame_len = head_part.len() + tail_part.len();
    let need = hdr_len + frame_len;
    let saved = q.next_avail();
    let mut heads = [(0u16, 0u32); MAX_MERGE];
    let mut first = [Seg::default(); vnet_hdr::LEN];
    let mut first_n = 0;
    let mut k = 0;
    let mut done = 0usize;
    while done < need {
        let Some(head) = pop_head(q, mem)? else {
            q.set_next_avail(saved);
            if !*rechecked
                && q.enable_notification(mem)
                    .map_err(|_| Broken("used ring unwritable"))?
            {
                // A buffer raced with the request for a kick: look once more.
                *rechecked = true;
                done = 0;
                k = 0;
                continue;
            }
            return Ok(Delivery::NoRoom);
        };
        if let Err(e) = chain.walk(mem, table, size, head, rules) {
            drops[e.index()] += 1;
            return Err(Broken("malformed receive chain"));
        }
        let cap = chain.total() as usize;
        if (k == 0 && cap < hdr_len) || (!neg.mrg_rxbuf && cap < need) || k == MAX_MERGE {
            q.set_next_avail(saved);
            drops[drop::TX_GUEST_BUFFER_TOO_SMALL] += 1;
            return Ok(Delivery::Dropped);
        }
        if k == 0 {
            first_n = chain.segs().len().min(first.len());
            first[..first_n].copy_from_slice(&chain.segs()[..first_n]);
        }
        let n = cap.min(need - done);
        let end = done + n;
        let mut ok = true;
        if done < hdr_len {
            let h_end = end.min(hdr_len);
            ok &= chain.write_at(mem, 0, &hdr[done..h_end]) == Some(h_end - done);
        }
        if end > hdr_len {
            // Frame bytes `a..b` go to chain offset `d_start - done`, from the buffer's
            // part and then the tail.
            let d_start = done.max(hdr_len);
            let (a, b) = (d_start - hdr_len, end - hdr_len);
            let h = head_part.len();
            let mut at = (d_start - done) as u64;
            for (part, from, to) in [
                (head_part, a.min(h), b.min(h)),
                (tail_part, a.max(h) - h, b.max(h) - h),
            ] {
                if from < to {
                    let bytes = &part[from..to];
                    ok &= chain.write_at(mem, at, bytes) == Some(bytes.len());
                    at += bytes.len() as u64;
                }
            }
        }
        if !ok {
            return Err(Broken("guest memory refused a write"));
        }
        heads[k] = (head, n as u32);
        k += 1;
        done = end;
    }
    if neg.mrg_rxbuf && hdr_len == vnet_hdr::LEN {
        let nb = (k as u16).to_le_bytes();
        if write_segs(mem, &first[..first_n], 10, &nb) != Some(2) {
            return Err(Broken("guest memory refused a write"));
        }
    }
    for &(head, len) in &heads[..k] {
        add_used(q, mem, head, len)?;
    }
    traffic.packets += 1;
    traffic.bytes += frame_len as u64;
    traffic.gso += u64::from(meta.gso_type != vnet_hdr::gso::NONE);
    Ok(Delivery::Delivered(k))
}

/// Copies frames from the front of `batch` into the guest's receive queue and removes
/// them ([`deliver_frame`] for each); frames that cannot be delivered for a reason that
/// will not change are dropped and counted. Stops, leaving the rest in `batch`, when
/// the guest has no buffers.
pub fn guest_rx<M: GuestMemory>(
    q: &mut Queue,
    mem: &M,
    neg: Negotiated,
    batch: &mut Batch,
    chain: &mut Chain,
    traffic: &mut Traffic,
    drops: &mut Drops,
) -> Result<Pass, Broken> {
    let mut pass = Pass::default();
    let mut consumed = 0;
    let mut rechecked = false;
    while consumed < batch.len() {
        let buf = &mut batch.as_mut_slice()[consumed];
        match deliver_frame(q, mem, neg, buf, chain, &mut rechecked, traffic, drops)? {
            Delivery::Delivered(used) => pass.used += used,
            Delivery::Dropped => {}
            Delivery::NoRoom => break,
        }
        consumed += 1;
    }
    if pass.used > 0 && consumed == batch.len() {
        // Delivered everything: no kick needed for more buffers.
        let _ = q.disable_notification(mem);
    }
    batch.consume_front(consumed);
    pass.frames = consumed;
    Ok(pass)
}

/// A hash of a frame's flow (IP addresses, protocol, TCP/UDP ports; the MAC addresses
/// for anything else), to keep a flow on one receive queue. Cheap, not keyed: it
/// spreads flows, it does not defend against anyone.
pub fn flow_hash(frame: &[u8]) -> u32 {
    let get = |at: usize, n: usize| frame.get(at..at + n);
    let mix = |h: u64, bytes: &[u8]| {
        bytes.chunks(8).fold(h, |h, c| {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            (h ^ u64::from_le_bytes(w))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(29)
        })
    };
    let mut l3 = 14;
    let mut ethertype = get(12, 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    if ethertype == Some(0x8100) {
        ethertype = get(16, 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        l3 = 18;
    }
    let (addrs, proto, l4) = match ethertype {
        Some(0x0800) => {
            let ihl = frame.get(l3).map_or(0, |v| usize::from(v & 0x0f) * 4);
            // Fragments after the first carry no ports.
            let frag =
                get(l3 + 6, 2).is_some_and(|f| u16::from_be_bytes([f[0], f[1]]) & 0x1fff != 0);
            let l4 = (!frag && ihl >= 20).then_some(l3 + ihl);
            (get(l3 + 12, 8), frame.get(l3 + 9).copied(), l4)
        }
        Some(0x86dd) => (get(l3 + 8, 32), frame.get(l3 + 6).copied(), Some(l3 + 40)),
        _ => (None, None, None),
    };
    let h = match (addrs, proto) {
        (Some(a), Some(p)) => {
            let h = mix(u64::from(p), a);
            match (p, l4.and_then(|at| get(at, 4))) {
                (6 | 17, Some(ports)) => mix(h, ports),
                _ => h,
            }
        }
        _ => mix(0, get(0, 12).unwrap_or(frame)),
    };
    (h ^ (h >> 32)) as u32
}

/// Writes `bytes` into `segs` from byte `offset` on; returns the bytes written.
fn write_segs<M: GuestMemory>(mem: &M, segs: &[Seg], offset: u64, bytes: &[u8]) -> Option<usize> {
    let mut skip = offset;
    let mut done = 0;
    for seg in segs {
        if done == bytes.len() {
            break;
        }
        let len = u64::from(seg.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = ((len - skip) as usize).min(bytes.len() - done);
        mem.write_slice(&bytes[done..done + n], GuestAddress(seg.addr + skip))
            .ok()?;
        done += n;
        skip = 0;
    }
    Some(done)
}

#[cfg(test)]
mod tests;
