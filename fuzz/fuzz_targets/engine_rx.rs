//! Arbitrary datagrams from the underlay through the engine: link classification,
//! VXLAN decapsulation, routing and fan-out. Every input is forwarded or counted.
#![no_main]

use std::net::SocketAddr;

use overlay::config::Dispatch;
use overlay::control::parse_command;
use overlay::engine::Engine;
use pkt::{Batch, Mempool, Port, PortCaps, PortKind, PortStats};

struct OneShot {
    pool: Mempool,
    frames: Vec<(Vec<u8>, SocketAddr)>,
    kind: PortKind,
}

impl Port for OneShot {
    fn name(&self) -> &str {
        "fuzz"
    }
    fn rx_batch(&mut self, batch: &mut Batch) -> usize {
        let mut n = 0;
        while !batch.is_full() {
            let Some((bytes, addr)) = self.frames.pop() else { break };
            let Some(mut b) = self.pool.alloc() else { break };
            if b.extend_from_slice(&bytes).is_err() {
                continue;
            }
            b.meta.addr = Some(addr);
            let _ = batch.push(b);
            n += 1;
        }
        n
    }
    fn tx_batch(&mut self, batch: &mut Batch) -> usize {
        let n = batch.len();
        batch.clear();
        n
    }
    fn caps(&self) -> PortCaps {
        PortCaps { kind: self.kind, mtu: 1500, rx_queues: 1, tx_queues: 1, offloads: pkt::Offloads::NONE }
    }
    fn stats(&self) -> PortStats {
        PortStats::default()
    }
    fn poll_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
}

const SENDERS: [&str; 4] = ["10.0.0.2:9000", "10.0.0.3:4789", "10.0.0.3:50000", "10.0.0.9:9000"];

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(pool) = Mempool::new(128, 2048) else { return };
    // Split the input into datagrams at 0xfe 0xfe; the first byte of each picks a sender.
    let frames: Vec<(Vec<u8>, SocketAddr)> = data
        .split(|&b| b == 0xfe)
        .filter_map(|d| d.split_first())
        .filter(|(_, rest)| rest.len() <= 1900)
        .filter_map(|(s, rest)| SENDERS[*s as usize % 4].parse().ok().map(|a| (rest.to_vec(), a)))
        .take(200)
        .collect();
    let total = frames.len();
    let up = OneShot { pool: pool.clone(), frames, kind: PortKind::Datagram };
    let Ok(mut e) = Engine::new("fuzz", pool.clone(), Box::new(up), Dispatch::Polling) else { return };
    for c in [
        "link add b 10.0.0.2:9000",
        "link add x 10.0.0.3:4789 encap vxlan vni 42",
        "route add src=any dst=any to=link:b",
        "route add src=any dst=ff:ff:ff:ff:ff:ff to=link:x",
        "route add src=not-52:54:00:00:00:01 dst=any to=link:x from=link:b",
    ] {
        if let Ok(cmd) = parse_command(c) {
            let _ = e.apply(cmd);
        }
    }
    while e.poll_once() > 0 {}
    let s = e.stats();
    let d = s.drops;
    let counted = d.rx_unknown_sender + d.rx_unknown_vni + d.rx_bad_vxlan + d.rx_runt + d.no_route;
    let accepted: u64 = s.links.iter().map(|l| l.counters.rx_packets).sum();
    assert!(counted + accepted >= total as u64, "a datagram vanished uncounted");
    assert_eq!(pool.available(), pool.capacity(), "a buffer leaked");
});
