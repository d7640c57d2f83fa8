//! The control virtqueue (virtio 1.2, 5.1.6.5): commands from the guest's driver, each
//! a chain of readable buffers (`class`, `command`, data) followed by one writable ack
//! byte. We answer:
//! - `MQ` / `VQ_PAIRS_SET`: 1 up to the offered pairs is `OK` and becomes the number
//!   of receive queues frames go to; anything else `ERR`;
//! - `RX` / `PROMISC`, `ALLMULTI` (one byte of data): `OK`. The overlay only ever
//!   delivers frames routed to the interface, so there is no filter to change;
//! - `MAC` / `TABLE_SET` with a well-formed table: `OK`, for the same reason;
//! - everything else `ERR`: known classes with an unsupported command are counted as
//!   rejected, unknown classes as such.
//!
//! Like every other chain, a command chain is untrusted: a malformed one is returned
//! unanswered (used length 0) and counted; the queue keeps going.

use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemory};

use crate::chain::{Chain, WalkRules};
use crate::dataplane::{Broken, pop_head};
use crate::net::Negotiated;

/// `VIRTIO_NET_CTRL_*` classes and their commands.
pub mod class {
    /// Receive filtering.
    pub const RX: u8 = 0;
    /// `RX`: promiscuous mode on/off.
    pub const RX_PROMISC: u8 = 0;
    /// `RX`: all-multicast on/off.
    pub const RX_ALLMULTI: u8 = 1;
    /// MAC filter tables.
    pub const MAC: u8 = 1;
    /// `MAC`: set the unicast and multicast filter tables.
    pub const MAC_TABLE_SET: u8 = 0;
    /// VLAN filtering (not offered).
    pub const VLAN: u8 = 2;
    /// Gratuitous packet acks (not offered).
    pub const ANNOUNCE: u8 = 3;
    /// Multiqueue.
    pub const MQ: u8 = 4;
    /// `MQ`: set the number of queue pairs in use.
    pub const MQ_VQ_PAIRS_SET: u8 = 0;
}

/// `VIRTIO_NET_OK`.
pub const ACK_OK: u8 = 0;
/// `VIRTIO_NET_ERR`.
pub const ACK_ERR: u8 = 1;

/// Most bytes of a command chain we accept (a MAC table of about 10,000 addresses).
const MAX_COMMAND: u64 = 64 * 1024;

/// What the control queue saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtrlCounters {
    /// Commands answered `OK`.
    pub ok: u64,
    /// Commands of a known class answered `ERR` (unsupported command, bad data, pair
    /// count out of range).
    pub rejected: u64,
    /// Commands of an unknown class (answered `ERR`).
    pub unknown_class: u64,
    /// Chains that could not be answered (malformed, no ack byte): returned unused.
    pub bad_chain: u64,
}

/// Answers every pending command on the control queue `q`. `pairs` is updated by a
/// valid `VQ_PAIRS_SET`. Returns the used entries added.
pub fn process<M: GuestMemory>(
    q: &mut Queue,
    mem: &M,
    neg: Negotiated,
    max_pairs: u16,
    pairs: &mut u16,
    chain: &mut Chain,
    counters: &mut CtrlCounters,
) -> Result<usize, Broken> {
    let table = GuestAddress(q.desc_table());
    let size = q.size();
    let rules = WalkRules {
        writable: false,
        mixed: true,
        indirect: neg.indirect,
        max_total: MAX_COMMAND,
    };
    let mut used = 0;
    // Each command is bounded, and one pass takes at most twice a ring's worth.
    let mut rechecked = false;
    for _ in 0..2 * u32::from(size) {
        let Some(head) = pop_head(q, mem)? else {
            // Ask for a kick on the next command (EVENT_IDX moves avail_event), and look
            // once more for one that raced with the request.
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
        let len = match chain.walk(mem, table, size, head, rules) {
            Ok(()) if !chain.writable_segs().is_empty() => {
                let ack = answer(mem, chain, neg, max_pairs, pairs, counters);
                if chain.write_at(mem, readable_len(chain), &[ack]) == Some(1) {
                    1
                } else {
                    return Err(Broken("guest memory refused a write"));
                }
            }
            _ => {
                counters.bad_chain += 1;
                0
            }
        };
        q.add_used(mem, head, len)
            .map_err(|_| Broken("used ring unwritable or bad head"))?;
        used += 1;
    }
    Ok(used)
}

fn readable_len(chain: &Chain) -> u64 {
    chain.segs()[..chain.readable()]
        .iter()
        .map(|s| u64::from(s.len))
        .sum()
}

/// The ack for the command in `chain`'s readable part.
fn answer<M: GuestMemory>(
    mem: &M,
    chain: &Chain,
    neg: Negotiated,
    max_pairs: u16,
    pairs: &mut u16,
    counters: &mut CtrlCounters,
) -> u8 {
    let len = readable_len(chain);
    let mut head = [0u8; 2];
    if len < 2 || chain.read_at(mem, 0, &mut head) != Some(2) {
        counters.rejected += 1;
        return ACK_ERR;
    }
    let data_len = len - 2;
    let read_u = |at: u64, out: &mut [u8]| chain.read_at(mem, 2 + at, out) == Some(out.len());
    let ok = match (head[0], head[1]) {
        (class::MQ, class::MQ_VQ_PAIRS_SET) => {
            let mut n = [0u8; 2];
            let n = (neg.mq && data_len == 2 && read_u(0, &mut n)).then(|| u16::from_le_bytes(n));
            match n {
                Some(n) if (1..=max_pairs).contains(&n) => {
                    *pairs = n;
                    true
                }
                _ => false,
            }
        }
        (class::RX, class::RX_PROMISC | class::RX_ALLMULTI) => data_len == 1,
        (class::MAC, class::MAC_TABLE_SET) => {
            // Two tables, each a little-endian u32 count and that many 6-byte MACs.
            let mut n = [0u8; 4];
            let first = read_u(0, &mut n).then(|| u64::from(u32::from_le_bytes(n)));
            let second_at = first.map(|u| 4 + 6 * u);
            let second = second_at
                .filter(|at| at + 4 <= data_len)
                .filter(|at| read_u(*at, &mut n))
                .map(|at| (at, u64::from(u32::from_le_bytes(n))));
            matches!(second, Some((at, m)) if at + 4 + 6 * m == data_len)
        }
        (class::RX | class::MAC | class::VLAN | class::ANNOUNCE | class::MQ, _) => false,
        _ => {
            counters.unknown_class += 1;
            return ACK_ERR;
        }
    };
    if ok {
        counters.ok += 1;
        ACK_OK
    } else {
        counters.rejected += 1;
        ACK_ERR
    }
}

#[cfg(test)]
mod tests;
