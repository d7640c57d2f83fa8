//! Arbitrary Ethernet frames into the raw-L2 underlay stack (`overlay::underlay`):
//! ARP, IPv4/IPv6, ICMP and neighbour discovery, UDP, and fragment reassembly, with the
//! stack's timers running between batches. Every frame is delivered, answered or
//! counted; nothing panics; no buffer leaks.
//!
//! Input: frames separated by the byte 0xfe. The first byte of each picks a prefix the
//! fuzzer need not discover (none, or an Ethernet header to our MAC or broadcast with
//! the ARP, IPv4 or IPv6 type) and how far the clock moves before that frame.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use overlay::underlay::{L2Underlay, MemPort, UnderlayOptions};
use pkt::wire::MacAddr;
use pkt::{Batch, Mempool};

const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

fn prefix(sel: u8, v6: bool) -> Vec<u8> {
    let dst = if sel & 1 == 0 { OUR_MAC } else { [0xff; 6] };
    let ethertype: Option<[u8; 2]> = match (sel >> 1) & 3 {
        0 => None,
        1 => Some([0x08, 0x06]),
        _ if v6 => Some([0x86, 0xdd]),
        _ => Some([0x08, 0x00]),
    };
    match ethertype {
        None => Vec::new(),
        Some(t) => [&dst[..], &PEER_MAC[..], &t[..]].concat(),
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let v6 = mode & 1 == 1;
    let Ok(pool) = Mempool::new(256, 2048) else {
        return;
    };
    let (port, wire) = MemPort::new(pool.clone(), 1500);
    let (me, peer): (&str, SocketAddr) = if v6 {
        (
            "fd00::1",
            "[fd00::2]:9000".parse().unwrap_or_else(|_| unreachable!()),
        )
    } else {
        (
            "10.0.0.1",
            "10.0.0.2:9000".parse().unwrap_or_else(|_| unreachable!()),
        )
    };
    let Ok(ip) = me.parse() else { return };
    let mut opts = UnderlayOptions::new(MacAddr(OUR_MAC), ip, 9000);
    if mode & 2 == 2 {
        opts.gateway = Some(
            if v6 { "fd00::fe" } else { "10.0.0.254" }
                .parse()
                .unwrap_or(ip),
        );
    }
    let Ok(mut stack) = L2Underlay::new(Box::new(port), pool.clone(), opts) else {
        return;
    };
    let mut now = Instant::now();
    // A datagram waiting for resolution, so ARP/NA replies release something.
    let mut tx = Batch::new();
    if let Some(mut b) = pool.alloc() {
        let _ = b.extend_from_slice(&[0x55; 100]);
        b.meta.addr = Some(peer);
        let _ = tx.push(b);
        stack.tx_batch_at(&mut tx, now);
    }
    let mut frames = 0usize;
    let mut delivered = 0usize;
    let mut rx = Batch::new();
    for chunk in data.split(|&b| b == 0xfe).take(200) {
        let Some((&sel, rest)) = chunk.split_first() else {
            continue;
        };
        if rest.len() > 1600 {
            continue;
        }
        let frame = [prefix(sel, v6), rest.to_vec()].concat();
        if wire.inject(&frame) {
            frames += 1;
        }
        now += Duration::from_millis(u64::from(sel >> 3) * 50);
        delivered += stack.rx_batch_at(&mut rx, now);
        for b in rx.drain() {
            assert!(b.meta.addr.is_some(), "a datagram without its sender");
        }
        wire.discard_sent();
    }
    // Run the timers past every timeout: queues and reassemblies must drain.
    for s in 1..=40 {
        stack.rx_batch_at(&mut rx, now + Duration::from_secs(s));
        rx.clear();
    }
    assert!(delivered <= frames, "more datagrams out than frames in");
    assert_eq!(
        stack.queued_for_resolution(),
        0,
        "queued frames outlived the timeout"
    );
    assert_eq!(stack.reassembling(), 0, "reassembly outlived its timeout");
    drop(stack);
    drop(tx);
    wire.discard_sent();
    drop(wire);
    assert_eq!(pool.available(), pool.capacity(), "a buffer leaked");
});
