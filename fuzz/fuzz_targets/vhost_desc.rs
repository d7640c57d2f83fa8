//! Guest descriptor chains and rings from arbitrary bytes: the fuzz input becomes guest
//! memory (descriptor table, avail ring, buffers) plus ring parameters, and both queue
//! passes and the control queue run over it (TSO and MQ bits among the negotiated
//! features, from the input), the transmit pass with and without zero-copy tails. Any panic, overflow or out-of-bounds access is a bug; bad input
//! must end in a counted drop or a "broken queue" result.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use pkt::{Batch, HEADROOM, Mempool};
use virtio::chain::Chain;
use virtio::dataplane::{self, DROP_NAMES, Traffic};
use virtio::net::Negotiated;
use virtio::tails::TxTails;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

const MEM: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (params, body) = data.split_at(8);
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]) else {
        return;
    };
    // The same memory, shared the way the port holds a guest's map (zero-copy path).
    let shared = Arc::new(mem.clone());
    let n = body.len().min(MEM);
    if mem.write_slice(&body[..n], GuestAddress(0)).is_err() {
        return;
    }
    // Ring size: a power of two from 1 to 256; ring addresses inside (or just past)
    // memory, from the input.
    let size = 1u16 << (params[0] % 9);
    let desc = u64::from(u16::from_le_bytes([params[1], params[2]])) & !15;
    let avail = u64::from(u16::from_le_bytes([params[3], params[4]])) & !1;
    let used = u64::from(u16::from_le_bytes([params[5], params[6]])) & !3;
    // Features: bits 8-15 (GUEST_TSO6 .. MRG_RXBUF), 28-35 (INDIRECT, EVENT_IDX,
    // VERSION_1), and CSUM/GUEST_CSUM/GUEST_TSO4 (0, 1, 7) and CTRL_VQ/MQ (17, 22).
    let neg = Negotiated::from_bits(
        u64::from(params[7]) << 8
            | u64::from(params[7]) << 28
            | 1 << 32
            | u64::from(params[2] & 0x83)
            | u64::from(params[1] & 0x42) << 16,
    );
    let Ok(pool) = Mempool::new(128, HEADROOM + 2048) else {
        return;
    };
    // The control queue over the same memory: commands and ack buffers from the input.
    if let Ok(mut q) = Queue::new(256) {
        q.set_size(size);
        q.set_desc_table_address(Some(desc as u32), Some(0));
        q.set_avail_ring_address(Some(avail as u32), Some(0));
        q.set_used_ring_address(Some(used as u32), Some(0));
        q.set_ready(true);
        let mut chain = Chain::default();
        let mut pairs = 0u16;
        let mut counters = virtio::ctrl::CtrlCounters::default();
        let _ = virtio::ctrl::process(&mut q, &mem, neg, 4, &mut pairs, &mut chain, &mut counters);
        assert!(pairs <= 4, "VQ_PAIRS_SET beyond the offered pairs");
    }
    for rx in [false, true] {
        let Ok(mut q) = Queue::new(256) else { return };
        q.set_size(size);
        q.set_desc_table_address(Some(desc as u32), Some(0));
        q.set_avail_ring_address(Some(avail as u32), Some(0));
        q.set_used_ring_address(Some(used as u32), Some(0));
        q.set_ready(true);
        let mut chain = Chain::default();
        let mut traffic = Traffic::default();
        let mut drops = [0u64; DROP_NAMES.len()];
        let mut batch = Batch::new();
        if rx {
            for i in 0..4u8 {
                let Some(mut b) = pool.alloc() else { break };
                b.reset_for_rx(HEADROOM);
                let len = 14 + usize::from(params[i as usize]) * 7;
                if b.append(len).is_err() {
                    break;
                }
                b.meta.offload.flags = params[1] & 3;
                b.meta.offload.csum_start = u16::from(params[2]);
                b.meta.offload.csum_offset = u16::from(params[3]);
                let _ = batch.push(b);
            }
            // A few passes, as the engine would retry.
            for _ in 0..3 {
                if dataplane::guest_rx(
                    &mut q,
                    &mem,
                    neg,
                    &mut batch,
                    &mut chain,
                    &mut traffic,
                    &mut drops,
                )
                .is_err()
                {
                    break;
                }
            }
        } else if params[0] & 0x80 == 0 {
            for _ in 0..3 {
                match dataplane::guest_tx(
                    &mut q,
                    &mem,
                    neg,
                    &pool,
                    &mut batch,
                    &mut chain,
                    &mut traffic,
                    &mut drops,
                ) {
                    Ok(_) => batch.clear(),
                    Err(_) => break,
                }
            }
        } else {
            // Zero-copy: frames past a threshold from the input lend their bytes; the
            // chains come back through the tails' ring once the frames are dropped.
            let threshold = 200 + usize::from(params[6]) * 4;
            let mut tails = TxTails::new(threshold, 1 + usize::from(params[5] % 64));
            tails.set_memory(&Arc::clone(&shared));
            for _ in 0..3 {
                let pass = dataplane::guest_tx_tails(
                    &mut q,
                    1,
                    neg,
                    &pool,
                    &mut batch,
                    &mut chain,
                    &mut traffic,
                    &mut drops,
                    &mut tails,
                );
                // Frames taken before a broken queue was found keep their tails too.
                let base = shared.get_host_address(GuestAddress(0)).unwrap() as usize;
                for b in batch.as_slice() {
                    if let Some(ext) = b.ext() {
                        let at = ext.as_slice().as_ptr() as usize - base;
                        assert!(at + ext.len() <= MEM, "tail outside guest memory");
                    }
                }
                batch.clear();
                tails.drain(|_, head| {
                    let _ = q.add_used(&*shared, head, 0);
                });
                assert_eq!(tails.in_flight(), 0, "a dropped frame kept its tail");
                if pass.is_err() {
                    break;
                }
            }
        }
    }
});
