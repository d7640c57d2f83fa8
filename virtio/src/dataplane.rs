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

/// Most receive chains one frame may span with mergeable receive buffers.
pub const MAX_MERGE: usize = 64;

/// Named drop counters of a guest port, in [`Drops`] order.
pub const DROP_NAMES: [&str; 17] = [
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
fn pop_head<M: GuestMemory>(q: &mut Queue, mem: &M) -> Result<Option<u16>, Broken> {
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
            indirect: neg.indirect,
            max_total: space.len() as u64,
        };
        let verdict = match chain.walk(mem, table, size, head, rules) {
            Err(e) => Err(e.index()),
            Ok(()) => {
                let total = chain.total() as usize;
                match chain.read_at(mem, 0, &mut space[..total]) {
                    Some(n) if n == total => parse_tx_frame(&mut buf, total, neg),
                    _ => Err(ChainError::BadAddress.index()),
                }
            }
        };
        add_used(q, mem, head, 0)?;
        pass.used += 1;
        match verdict {
            Ok(()) => {
                traffic.packets += 1;
                traffic.bytes += buf.len() as u64;
                pass.frames += 1;
                // Cannot fail: the loop runs only while the batch has room.
                let _ = batch.push(buf);
            }
            Err(counter) => drops[counter] += 1,
        }
    }
    Ok(pass)
}

/// Checks the header of a frame just copied from a transmit chain, moves its offload
/// request into the metadata and strips it. `Err` holds the drop counter index.
fn parse_tx_frame(buf: &mut pkt::PktBuf, total: usize, neg: Negotiated) -> Result<(), usize> {
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
    if meta.gso_type != vnet_hdr::gso::NONE {
        // We do not offer HOST_TSO*/HOST_UFO: a GSO frame breaks the negotiation.
        return Err(drop::RX_GSO_NOT_NEGOTIATED);
    }
    // DATA_VALID means nothing on transmit (virtio 1.2, 5.1.6.2).
    meta.flags &= vnet_hdr::NEEDS_CSUM;
    if meta.flags != 0 && !neg.csum {
        return Err(drop::RX_BAD_VNET_HDR);
    }
    buf.strip_front(hdr_len).map_err(|_| drop::RX_RUNT)?;
    buf.meta = pkt::Meta {
        addr: None,
        offload: meta,
    };
    Ok(())
}

/// Copies frames from the front of `batch` into the guest's receive queue and removes
/// them; frames that cannot be delivered for a reason that will not change are dropped
/// and counted. Stops, leaving the rest in `batch`, when the guest has no buffers.
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
    let hdr_len = neg.hdr_len;
    let table = GuestAddress(q.desc_table());
    let size = q.size();
    let rules = WalkRules {
        writable: true,
        indirect: neg.indirect,
        max_total: u64::from(u32::MAX),
    };
    let mut heads = [(0u16, 0u32); MAX_MERGE];
    let mut consumed = 0;
    let mut rechecked = false;
    'frames: while consumed < batch.len() {
        let buf = &mut batch.as_mut_slice()[consumed];
        let mut meta = buf.meta.offload;
        // Settle the checksum once: a retried frame must not be summed twice.
        if meta.gso_type != vnet_hdr::gso::NONE && !neg.guest_tso {
            drops[drop::TX_GSO_UNSUPPORTED] += 1;
            consumed += 1;
            continue;
        }
        if !neg.guest_csum {
            if offload::checksum::complete_if_needed(buf.data_mut(), &mut meta).is_err() {
                drops[drop::TX_BAD_CHECKSUM_REQUEST] += 1;
                consumed += 1;
                continue;
            }
            meta.flags = 0;
            buf.meta.offload = meta;
        }
        let mut hdr = [0u8; vnet_hdr::LEN];
        // Cannot fail: `hdr` is exactly LEN bytes.
        let _ = vnet_hdr::emit(&meta, 1, &mut hdr);
        let data = buf.data();
        let need = hdr_len + data.len();
        let saved = q.next_avail();
        let mut first = [Seg::default(); vnet_hdr::LEN];
        let mut first_n = 0;
        let mut k = 0;
        let mut done = 0usize;
        while done < need {
            let Some(head) = pop_head(q, mem)? else {
                q.set_next_avail(saved);
                if !rechecked
                    && q.enable_notification(mem)
                        .map_err(|_| Broken("used ring unwritable"))?
                {
                    rechecked = true;
                    continue 'frames;
                }
                break 'frames;
            };
            if let Err(e) = chain.walk(mem, table, size, head, rules) {
                drops[e.index()] += 1;
                return Err(Broken("malformed receive chain"));
            }
            let cap = chain.total() as usize;
            if (k == 0 && cap < hdr_len) || (!neg.mrg_rxbuf && cap < need) || k == MAX_MERGE {
                q.set_next_avail(saved);
                drops[drop::TX_GUEST_BUFFER_TOO_SMALL] += 1;
                consumed += 1;
                continue 'frames;
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
                let d_start = done.max(hdr_len);
                let bytes = &data[d_start - hdr_len..end - hdr_len];
                ok &= chain.write_at(mem, (d_start - done) as u64, bytes) == Some(bytes.len());
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
        pass.used += k;
        traffic.packets += 1;
        traffic.bytes += data.len() as u64;
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
