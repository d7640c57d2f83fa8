//! Shard tests: the ring and stand-in port on their own, the ownership registry, the
//! statistics merge, and two engines on two threads with in-memory ports.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::config::InterfaceConfig;
use crate::control::{Command, RouteSpec};
use crate::engine::{InterfaceCounters, PoolStats};
use crate::link::LinkCounters;
use crate::types::EndpointRef;

fn pool(n: u32) -> Mempool {
    Mempool::new(n, 2048).unwrap()
}

fn frame(pool: &Mempool, seq: u32) -> PktBuf {
    let mut b = pool.alloc().expect("a buffer");
    let mut f = [0u8; 60];
    f[..6].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 9]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f[14..18].copy_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&f).unwrap();
    b
}

fn seq_of(b: &PktBuf) -> u32 {
    u32::from_be_bytes(b.data()[14..18].try_into().unwrap())
}

/// The eventfd's counter: how many wake-ups were written since the last read.
fn wakeups(ring: &InboundRing) -> u64 {
    let mut buf = [0u8; 8];
    match rustix::io::read(ring.wake_fd(), &mut buf) {
        Ok(8) => u64::from_ne_bytes(buf),
        _ => 0,
    }
}

/// Shards built from `cfg` over these underlays, with in-memory devices (returned:
/// they record what the factories made).
fn build(cfg: &Config, pool: &Mempool, underlays: Vec<Box<dyn Port>>) -> (Shards, MemDevices) {
    let devices = MemDevices {
        pool: Some(pool.clone()),
        ..Default::default()
    };
    let shards =
        Shards::build(cfg, pool, underlays, || Box::new(devices.clone()), None).expect("shards");
    (shards, devices)
}

#[test]
fn frames_cross_threads_in_order() {
    let pool = pool(256);
    let ring = Arc::new(InboundRing::new().unwrap());
    let mut standin = StandInPort::new("vm0", 1, Arc::clone(&ring));
    const FRAMES: u32 = 2000;
    let consumer = {
        let ring = Arc::clone(&ring);
        std::thread::spawn(move || {
            let mut got = Vec::with_capacity(FRAMES as usize);
            let deadline = Instant::now() + Duration::from_secs(20);
            while got.len() < FRAMES as usize && Instant::now() < deadline {
                match ring.pop() {
                    Some(b) => got.push(seq_of(&b)),
                    None => std::thread::yield_now(),
                }
            }
            got
        })
    };
    let mut batch = Batch::new();
    let mut next = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while next < FRAMES && Instant::now() < deadline {
        // Only as many as the ring (and the pool) have room for: this test is about
        // order, not drops.
        while !batch.is_full() && next < FRAMES && ring.len() + batch.len() < 200 {
            batch.push(frame(&pool, next)).unwrap();
            next += 1;
        }
        standin.tx_batch(&mut batch);
        std::thread::yield_now();
    }
    let got = consumer.join().unwrap();
    assert_eq!(got, (0..FRAMES).collect::<Vec<_>>());
    assert_eq!(standin.stats().drop_count("shard_ring_full"), 0);
    assert_eq!(standin.stats().tx_packets, u64::from(FRAMES));
    assert_eq!(
        standin.events(),
        [pkt::DropCounter {
            name: "shard_handoff",
            count: u64::from(FRAMES)
        }]
    );
}

#[test]
fn a_full_ring_counts_shard_ring_full_and_returns_the_buffers() {
    let pool = pool(64);
    let ring = Arc::new(InboundRing::with_capacity(4).unwrap());
    let mut standin = StandInPort::new("vm0", 0, Arc::clone(&ring));
    let mut batch = Batch::new();
    for i in 0..6 {
        batch.push(frame(&pool, i)).unwrap();
    }
    assert_eq!(standin.tx_batch(&mut batch), 6, "every frame is taken");
    assert!(batch.is_empty());
    assert_eq!(standin.stats().drop_count("shard_ring_full"), 2);
    assert_eq!(ring.len(), 4);
    assert_eq!(pool.available(), 64 - 4, "the two dropped frames are back");
    let firsts: Vec<u32> = std::iter::from_fn(|| ring.pop())
        .map(|b| seq_of(&b))
        .collect();
    assert_eq!(firsts, [0, 1, 2, 3], "the ring keeps the oldest");
    assert_eq!(pool.available(), 64);
}

#[test]
fn the_eventfd_is_written_once_per_batch_not_per_frame() {
    let pool = pool(128);
    let ring = Arc::new(InboundRing::new().unwrap());
    let mut standin = StandInPort::new("vm0", 0, Arc::clone(&ring));
    assert_eq!(wakeups(&ring), 0, "nothing sent, nothing to wake for");
    let mut batch = Batch::new();
    for i in 0..40 {
        batch.push(frame(&pool, i)).unwrap();
    }
    standin.tx_batch(&mut batch);
    assert_eq!(wakeups(&ring), 1, "one batch of 40 frames, one wake-up");
    for round in 0..3 {
        batch.push(frame(&pool, round)).unwrap();
        batch.push(frame(&pool, round)).unwrap();
        standin.tx_batch(&mut batch);
    }
    assert_eq!(wakeups(&ring), 3, "three batches");
    standin.tx_batch(&mut batch);
    assert_eq!(wakeups(&ring), 0, "an empty batch wakes nobody");
}

#[test]
fn dropping_a_ring_with_frames_in_it_returns_every_buffer() {
    let pool = pool(64);
    let ring = Arc::new(InboundRing::new().unwrap());
    let mut standin = StandInPort::new("vm0", 0, Arc::clone(&ring));
    let mut batch = Batch::new();
    for i in 0..50 {
        batch.push(frame(&pool, i)).unwrap();
    }
    standin.tx_batch(&mut batch);
    assert_eq!(pool.available(), 14);
    drop(standin);
    drop(ring);
    assert_eq!(pool.available(), 64);
}

#[test]
fn the_registry_gives_each_interface_to_the_least_loaded_shard_and_forgets_it_with_the_last_lease()
{
    let reg = ShardRegistry::new(3);
    let a0 = reg.claim("a", mac(1)).unwrap();
    let b0 = reg.claim("b", mac(2)).unwrap();
    let c0 = reg.claim("c", mac(3)).unwrap();
    let d0 = reg.claim("d", mac(4)).unwrap();
    assert_eq!(
        [a0.owner(), b0.owner(), c0.owner(), d0.owner()],
        [0, 1, 2, 0],
        "fewest owned interfaces first, ties to the lowest index"
    );
    // Other shards asking for the same name get the same owner and ring.
    let b1 = reg.claim("b", mac(2)).unwrap();
    assert_eq!(b1.owner(), 1);
    assert!(std::ptr::eq(b0.ring(), b1.ring()));
    drop(b0);
    assert_eq!(reg.owner("b"), Some(1), "still held by one shard");
    drop(b1);
    assert_eq!(reg.owner("b"), None, "forgotten with the last lease");
    // Shard 1 now owns nothing: the next interface goes there.
    assert_eq!(reg.claim("e", mac(5)).unwrap().owner(), 1);
    drop((a0, c0, d0));
}

/// What a steering function is told: each interface's MAC and owner.
type Targets = Vec<(MacAddr, usize)>;

/// A unicast interface MAC ending in `n`.
fn mac(n: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0, 0, 0, n])
}

#[test]
fn steering_hears_of_every_interface_created_or_removed_but_not_of_further_holds() {
    let reg = ShardRegistry::new(2);
    let a0 = reg.claim("a", mac(1)).unwrap();
    let heard: Arc<Mutex<Vec<Targets>>> = Arc::default();
    let h = Arc::clone(&heard);
    reg.set_steering(Box::new(move |t| h.lock().unwrap().push(t.to_vec())));
    let calls = || heard.lock().unwrap().clone();
    assert_eq!(calls(), [vec![(mac(1), 0)]], "told at once of what exists");
    let b0 = reg.claim("b", mac(2)).unwrap();
    assert_eq!(calls().len(), 2);
    assert_eq!(calls()[1], [(mac(1), 0), (mac(2), 1)]);
    // Shard 1 takes its hold on "a", shard 0 on "b": no change of ownership.
    let a1 = reg.claim("a", mac(1)).unwrap();
    let b1 = reg.claim("b", mac(2)).unwrap();
    drop(a1);
    assert_eq!(calls().len(), 2, "holds come and go without a new program");
    drop(a0);
    assert_eq!(
        calls().len(),
        3,
        "the last hold's end removes the interface"
    );
    assert_eq!(calls()[2], [(mac(2), 1)]);
    drop((b0, b1));
    assert_eq!(calls()[3], []);
}

fn report(name: &str, shard: usize, rx: u64, tx: u64, drops: &[(&str, u64)]) -> InterfaceReport {
    InterfaceReport {
        name: name.into(),
        kind: "tap".into(),
        mac: "52:54:00:00:00:01".into(),
        shard,
        counters: InterfaceCounters {
            rx_packets: rx,
            rx_bytes: rx * 100,
            tx_packets: tx,
            tx_bytes: tx * 100,
        },
        port: PortReport {
            name: format!("{name}@{shard}"),
            tx_packets: tx,
            drops: drops.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
            ..PortReport::default()
        },
    }
}

fn shard_stats(interfaces: Vec<InterfaceReport>, link_rx: u64, no_route: u64) -> Stats {
    Stats {
        host: "h".into(),
        drops: crate::engine::EngineDrops {
            no_route,
            ..Default::default()
        },
        route_cache: CacheStats {
            hits: 10,
            misses: 1,
        },
        pool: PoolStats {
            capacity: 1024,
            available: 1000,
            alloc_failures: 3,
        },
        underlay: PortReport {
            name: "udp:10.0.0.1:9000".into(),
            rx_packets: link_rx,
            drops: [("rx_truncated".to_string(), 1)].into(),
            ..PortReport::default()
        },
        links: vec![LinkReport {
            name: "to-b".into(),
            peer: "10.0.0.2:9000".into(),
            encap: "vnetp".into(),
            encrypted: false,
            counters: LinkCounters {
                rx_packets: link_rx,
                ..Default::default()
            },
        }],
        interfaces,
        routes: 2,
        shards: 2,
        per_shard: Vec::new(),
    }
}

#[test]
fn merged_stats_sum_counters_report_the_pool_once_and_the_owners_port() {
    let mut s0 = shard_stats(
        vec![
            report("vm0", 0, 5, 7, &[("rx_runt", 1)]),
            report("vm1", 1, 0, 0, &[("shard_ring_full", 4)]),
        ],
        3,
        1,
    );
    let mut s1 = shard_stats(
        vec![
            report("vm0", 0, 0, 2, &[("shard_ring_full", 6)]),
            report("vm1", 1, 8, 9, &[("rx_runt", 2)]),
        ],
        4,
        2,
    );
    // Each shard's stand-in handed frames to the other shard's interface.
    s0.interfaces[1]
        .port
        .events
        .insert("shard_handoff".into(), 11);
    s1.interfaces[0]
        .port
        .events
        .insert("shard_handoff".into(), 13);
    s1.underlay.tx_packets = 21;
    let m = Stats::merge(vec![s0, s1]).unwrap();
    assert_eq!(m.shards, 2);
    assert_eq!(
        m.per_shard,
        [
            ShardLoad {
                shard: 0,
                interfaces: 1,
                underlay_rx_packets: 3,
                underlay_tx_packets: 0,
                guest_rx_packets: 5,
                handed_off: 11,
            },
            ShardLoad {
                shard: 1,
                interfaces: 1,
                underlay_rx_packets: 4,
                underlay_tx_packets: 21,
                guest_rx_packets: 8,
                handed_off: 13,
            },
        ],
        "each shard's own work"
    );
    assert_eq!(m.drops.no_route, 3);
    assert_eq!((m.route_cache.hits, m.route_cache.misses), (20, 2));
    assert_eq!(
        (m.pool.capacity, m.pool.available, m.pool.alloc_failures),
        (1024, 1000, 3),
        "one pool, reported once"
    );
    assert_eq!(m.underlay.rx_packets, 7);
    assert_eq!(m.underlay.drops["rx_truncated"], 2);
    assert_eq!(m.links[0].counters.rx_packets, 7);
    assert_eq!(m.routes, 2);
    let vm0 = &m.interfaces[0];
    assert_eq!((vm0.name.as_str(), vm0.shard), ("vm0", 0));
    assert_eq!(vm0.counters.rx_packets, 5);
    assert_eq!(vm0.counters.tx_packets, 9, "summed over the shards");
    assert_eq!(vm0.counters.tx_bytes, 900);
    assert_eq!(vm0.port.name, "vm0@0", "the owner's port");
    assert_eq!(
        vm0.port.tx_packets, 7,
        "the stand-in's sends are not the port's"
    );
    assert_eq!(vm0.port.drops["rx_runt"], 1);
    assert_eq!(
        vm0.port.drops["shard_ring_full"], 6,
        "plus the stand-in's drops"
    );
    let vm1 = &m.interfaces[1];
    assert_eq!((vm1.shard, vm1.port.name.as_str()), (1, "vm1@1"));
    assert_eq!(vm1.counters.rx_packets, 8);
    assert_eq!(vm1.port.drops["shard_ring_full"], 4);
    assert_eq!(vm1.port.drops["rx_runt"], 2);
    // The JSON round trip the control handle makes keeps every number.
    let back: Stats = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
    assert_eq!(
        serde_json::to_value(&back).unwrap(),
        serde_json::to_value(&m).unwrap()
    );
}

// ---- two engines on two threads -----------------------------------------------------

type Queue = Arc<Mutex<VecDeque<(Vec<u8>, Option<SocketAddr>)>>>;

/// An in-memory port: frames put in `rx` are received, frames sent land in `tx`.
struct MemPort {
    name: String,
    kind: PortKind,
    pool: Mempool,
    rx: Queue,
    tx: Queue,
}

impl MemPort {
    fn new(name: &str, kind: PortKind, pool: &Mempool) -> (Self, Queue, Queue) {
        let (rx, tx) = (Queue::default(), Queue::default());
        (
            Self {
                name: name.into(),
                kind,
                pool: pool.clone(),
                rx: Arc::clone(&rx),
                tx: Arc::clone(&tx),
            },
            rx,
            tx,
        )
    }
}

impl Port for MemPort {
    fn name(&self) -> &str {
        &self.name
    }
    fn rx_batch(&mut self, batch: &mut Batch) -> usize {
        let mut q = self.rx.lock().unwrap();
        let mut n = 0;
        while !batch.is_full() {
            let Some((bytes, addr)) = q.pop_front() else {
                break;
            };
            let mut b = self.pool.alloc().unwrap();
            b.extend_from_slice(&bytes).unwrap();
            b.meta.addr = addr;
            batch.push(b).unwrap();
            n += 1;
        }
        n
    }
    fn tx_batch(&mut self, batch: &mut Batch) -> usize {
        let n = batch.len();
        let mut q = self.tx.lock().unwrap();
        for b in batch.drain() {
            q.push_back((b.data().to_vec(), b.meta.addr));
        }
        n
    }
    fn caps(&self) -> PortCaps {
        PortCaps {
            kind: self.kind,
            mtu: 1500,
            rx_queues: 1,
            tx_queues: 1,
            offloads: Offloads::NONE,
        }
    }
    fn stats(&self) -> PortStats {
        PortStats::default()
    }
    fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

/// Makes in-memory interface ports, keeping each one's transmit queue by name and
/// counting how many ports were made for each name (the owner's only).
#[derive(Clone, Default)]
struct MemDevices {
    pool: Option<Mempool>,
    sent: Arc<Mutex<HashMap<String, (Queue, usize)>>>,
    /// An interface this factory cannot make a port for.
    refuse: Option<&'static str>,
}

impl InterfaceFactory for MemDevices {
    fn create(&mut self, cfg: &InterfaceConfig) -> Result<Box<dyn Port>, String> {
        if self.refuse == Some(cfg.name.as_str()) {
            return Err(format!("cannot make {}", cfg.name));
        }
        let pool = self.pool.clone().ok_or("no pool")?;
        let (port, _rx, tx) = MemPort::new(&cfg.name, PortKind::Ethernet, &pool);
        let mut sent = self.sent.lock().unwrap();
        let e = sent.entry(cfg.name.clone()).or_insert((tx.clone(), 0));
        e.0 = tx;
        e.1 += 1;
        Ok(Box::new(port))
    }
}

const CONFIG: &str = r#"
[host]
name = "a"
underlay = { kind = "udp", bind = "10.0.0.1:9000" }
dispatch = "polling"

[[link]]
name = "to-b"
peer = "10.0.0.2:9000"

[[interface]]
name = "vm0"
kind = "tap"
mac = "52:54:00:00:00:01"

[[interface]]
name = "vm1"
kind = "tap"
mac = "52:54:00:00:00:02"

[[route]]
src = "any"
dst = "52:54:00:00:00:01"
to = { interface = "vm0" }
"#;

fn eth(dst: [u8; 6], fill: u8) -> Vec<u8> {
    let mut f = vec![fill; 80];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 0x99]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f
}

/// Waits (bounded) until `q` holds `n` frames; returns them.
fn wait_frames(q: &Queue, n: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while q.lock().unwrap().len() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    q.lock().unwrap().iter().map(|(f, _)| f.clone()).collect()
}

#[test]
fn two_shards_hand_frames_to_the_owner_apply_routes_on_both_and_merge_stats() {
    let pool = pool(512);
    let cfg = crate::config::parse("a.toml", CONFIG).unwrap();
    let (u0, in0, _out0) = MemPort::new("udp:0", PortKind::Datagram, &pool);
    let (u1, in1, _out1) = MemPort::new("udp:1", PortKind::Datagram, &pool);
    let (shards, devices) = build(&cfg, &pool, vec![Box::new(u0), Box::new(u1)]);
    assert_eq!(shards.len(), 2);
    {
        let made = devices.sent.lock().unwrap();
        assert_eq!(made["vm0"].1, 1, "one real port per interface");
        assert_eq!(made["vm1"].1, 1);
    }
    let handle = shards.handle();
    let peer: SocketAddr = "10.0.0.2:9000".parse().unwrap();
    let vm0_tx = devices.sent.lock().unwrap()["vm0"].0.clone();
    let vm1_tx = devices.sent.lock().unwrap()["vm1"].0.clone();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let running = s.spawn(|| shards.run(&stop));
        let call = |cmd| handle.call(cmd, Duration::from_secs(10));

        let listed = call(Command::InterfaceList).unwrap();
        assert_eq!(
            listed,
            "vm0 kind=tap mac=52:54:00:00:00:01 shard=0\nvm1 kind=tap mac=52:54:00:00:00:02 shard=1"
        );

        // vm0 is shard 0's; this frame arrives through shard 1's underlay socket.
        in1.lock()
            .unwrap()
            .push_back((eth([0x52, 0x54, 0, 0, 0, 1], 0xa1), Some(peer)));
        let got = wait_frames(&vm0_tx, 1);
        assert_eq!(got, [eth([0x52, 0x54, 0, 0, 0, 1], 0xa1)]);

        // A route added through the handle applies on both shards: a frame for vm1
        // (shard 1's) arrives through each shard's socket and both reach it.
        call(Command::RouteAdd(RouteSpec {
            src: crate::types::MacMatch::Any,
            dst: crate::types::MacMatch::Exact(pkt::wire::MacAddr([0x52, 0x54, 0, 0, 0, 2])),
            to: EndpointRef::Interface("vm1".into()),
            from: None,
        }))
        .unwrap();
        in0.lock()
            .unwrap()
            .push_back((eth([0x52, 0x54, 0, 0, 0, 2], 0xb0), Some(peer)));
        in1.lock()
            .unwrap()
            .push_back((eth([0x52, 0x54, 0, 0, 0, 2], 0xb1), Some(peer)));
        let mut got = wait_frames(&vm1_tx, 2);
        got.sort();
        assert_eq!(
            got,
            [
                eth([0x52, 0x54, 0, 0, 0, 2], 0xb0),
                eth([0x52, 0x54, 0, 0, 0, 2], 0xb1)
            ]
        );

        // Stats: the link's and the interfaces' counters summed over both shards.
        let json = call(Command::Stats { json: true }).unwrap();
        let st: Stats = serde_json::from_str(&json).unwrap();
        assert_eq!(st.shards, 2);
        assert_eq!(st.routes, 2);
        assert_eq!(st.links[0].counters.rx_packets, 3, "1 + 2 over two sockets");
        let vm0 = st.interfaces.iter().find(|i| i.name == "vm0").unwrap();
        let vm1 = st.interfaces.iter().find(|i| i.name == "vm1").unwrap();
        assert_eq!((vm0.shard, vm0.counters.tx_packets), (0, 1));
        assert_eq!(
            vm0.port.events["shard_handoff"], 1,
            "shard 1 handed it over"
        );
        assert_eq!(
            vm1.port.events["shard_handoff"], 1,
            "shard 0 handed one over"
        );
        assert_eq!((vm1.shard, vm1.counters.tx_packets), (1, 2));
        let text = call(Command::LinkList).unwrap();
        assert!(text.contains("rx_packets=3"), "{text}");
        // A link capture cannot see every frame with two shards.
        let e = call(Command::Capture {
            endpoint: EndpointRef::Link("to-b".into()),
            path: std::env::temp_dir().join("never.pcap"),
            count: 1,
            timeout_secs: 1,
        })
        .unwrap_err();
        assert_eq!(
            e,
            "capture of a link or the underlay needs shards = 1 (frames spread over 2 shards)"
        );

        stop.store(true, Ordering::Relaxed);
        running.join().unwrap().unwrap();
    });
}

#[test]
fn interface_add_and_del_go_to_every_shard_and_a_failed_add_is_undone() {
    let pool = pool(256);
    let cfg = crate::config::parse("a.toml", CONFIG).unwrap();
    let (u0, ..) = MemPort::new("udp:0", PortKind::Datagram, &pool);
    let (u1, ..) = MemPort::new("udp:1", PortKind::Datagram, &pool);
    let devices = MemDevices {
        pool: Some(pool.clone()),
        ..Default::default()
    };
    // Shard 1's device factory cannot make vm3.
    let mut made = 0;
    let shards = Shards::build(
        &cfg,
        &pool,
        vec![Box::new(u0), Box::new(u1)],
        || {
            made += 1;
            let mut d = devices.clone();
            if made == 2 {
                d.refuse = Some("vm3");
            }
            Box::new(d)
        },
        None,
    )
    .unwrap();
    assert_eq!(made, 2);
    let handle = shards.handle();
    let stop = AtomicBool::new(false);
    let vm2 = |name: &str, last: u8| {
        let mut c = cfg.interfaces[0].clone();
        c.name = name.into();
        c.mac = pkt::wire::MacAddr([0x52, 0x54, 0, 0, 0, last]);
        c
    };
    std::thread::scope(|s| {
        let running = s.spawn(|| shards.run(&stop));
        let call = |cmd| handle.call(cmd, Duration::from_secs(10));
        call(Command::InterfaceAdd(vm2("vm2", 3))).unwrap();
        // Two interfaces each: vm2 went to shard 0 (ties to the lowest index).
        let listed = call(Command::InterfaceList).unwrap();
        assert!(
            listed.ends_with("vm2 kind=tap mac=52:54:00:00:00:03 shard=0"),
            "{listed}"
        );
        // vm3 goes to shard 1 (one interface against two), whose factory fails:
        // shard 0's stand-in is removed again and the first error is the answer.
        let e = call(Command::InterfaceAdd(vm2("vm3", 4))).unwrap_err();
        assert_eq!(e, "cannot make vm3");
        assert!(!call(Command::InterfaceList).unwrap().contains("vm3"));
        let r = handle.registry().unwrap();
        assert_eq!(r.owner("vm3"), None, "no shard holds vm3 any more");
        call(Command::InterfaceDel { name: "vm2".into() }).unwrap();
        assert!(!call(Command::InterfaceList).unwrap().contains("vm2"));
        assert_eq!(r.owner("vm2"), None);
        // A name already used by a link fails on every shard alike.
        let e = call(Command::InterfaceAdd(vm2("to-b", 5))).unwrap_err();
        assert!(e.contains("already in use"), "{e}");
        stop.store(true, Ordering::Relaxed);
        running.join().unwrap().unwrap();
    });
}

#[test]
fn removing_an_interface_frees_its_ring_on_every_shard_and_returns_the_frames_in_it() {
    let pool = pool(512);
    let cfg = crate::config::parse("a.toml", CONFIG).unwrap();
    let (u0, ..) = MemPort::new("udp:0", PortKind::Datagram, &pool);
    let (u1, in1, _) = MemPort::new("udp:1", PortKind::Datagram, &pool);
    let (mut shards, _) = build(&cfg, &pool, vec![Box::new(u0), Box::new(u1)]);
    let registry = Arc::clone(shards.handle().registry().unwrap());
    let idle = pool.available();
    // Shard 1 receives 10 frames for vm0 (shard 0's) and queues them in vm0's ring;
    // shard 0 does not run, so they stay there.
    let peer: SocketAddr = "10.0.0.2:9000".parse().unwrap();
    for i in 0..10 {
        in1.lock()
            .unwrap()
            .push_back((eth([0x52, 0x54, 0, 0, 0, 1], i), Some(peer)));
    }
    let engines = shards.engines_mut();
    assert_eq!(engines[1].poll_once(), 10);
    assert_eq!(pool.available(), idle - 10, "ten frames wait in vm0's ring");
    let route = RouteSpec {
        src: crate::types::MacMatch::Any,
        dst: crate::types::MacMatch::Exact(pkt::wire::MacAddr([0x52, 0x54, 0, 0, 0, 1])),
        to: EndpointRef::Interface("vm0".into()),
        from: None,
    };
    for e in engines.iter_mut() {
        e.apply(Command::RouteDel(route.clone())).unwrap();
    }
    engines[1]
        .apply(Command::InterfaceDel { name: "vm0".into() })
        .unwrap();
    assert_eq!(registry.owner("vm0"), Some(0), "shard 0 still has vm0");
    assert_eq!(pool.available(), idle - 10);
    engines[0]
        .apply(Command::InterfaceDel { name: "vm0".into() })
        .unwrap();
    assert_eq!(registry.owner("vm0"), None);
    assert_eq!(
        pool.available(),
        idle,
        "the ring went with the last shard's vm0"
    );
    // The slot is free on both shards alike: the next interface takes it everywhere.
    let mut vm9 = cfg.interfaces[0].clone();
    vm9.name = "vm9".into();
    for e in engines.iter_mut() {
        e.apply(Command::InterfaceAdd(vm9.clone())).unwrap();
    }
    for e in engines.iter() {
        assert_eq!(
            e.resolve(&EndpointRef::Interface("vm9".into())),
            Ok(crate::types::Endpoint::Interface(0))
        );
    }
}

#[test]
fn one_shard_has_no_registry_no_stand_ins_and_unchanged_listings() {
    let pool = pool(256);
    let cfg = crate::config::parse("a.toml", CONFIG).unwrap();
    let (u0, ..) = MemPort::new("udp:0", PortKind::Datagram, &pool);
    let (mut shards, _) = build(&cfg, &pool, vec![Box::new(u0)]);
    assert!(shards.handle().registry().is_none());
    assert!(
        !shards.steer_underlay(Box::new(|_| panic!("one shard steers nothing"))),
        "one socket: no program"
    );
    let e = &mut shards.engines_mut()[0];
    assert_eq!(
        e.apply(Command::InterfaceList).unwrap(),
        "vm0 kind=tap mac=52:54:00:00:00:01\nvm1 kind=tap mac=52:54:00:00:00:02"
    );
    let s = e.stats();
    assert_eq!(s.shards, 1);
    assert!(s.interfaces.iter().all(|i| i.shard == 0));
    assert!(
        s.interfaces
            .iter()
            .all(|i| !i.port.drops.contains_key("shard_ring_full")),
        "no stand-ins"
    );
}

/// An underlay whose receive panics once `armed` is set.
struct PanickyPort {
    armed: Arc<AtomicBool>,
}

impl Port for PanickyPort {
    fn name(&self) -> &str {
        "panicky"
    }
    fn rx_batch(&mut self, _batch: &mut Batch) -> usize {
        assert!(!self.armed.load(Ordering::Relaxed), "a port bug");
        0
    }
    fn tx_batch(&mut self, batch: &mut Batch) -> usize {
        let n = batch.len();
        batch.clear();
        n
    }
    fn caps(&self) -> PortCaps {
        PortCaps {
            kind: PortKind::Datagram,
            mtu: 1500,
            rx_queues: 1,
            tx_queues: 1,
            offloads: Offloads::NONE,
        }
    }
    fn stats(&self) -> PortStats {
        PortStats::default()
    }
    fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

#[test]
fn a_panicking_shard_stops_the_others_and_run_says_which() {
    let pool = pool(256);
    let cfg = crate::config::parse("a.toml", CONFIG).unwrap();
    let (u0, ..) = MemPort::new("udp:0", PortKind::Datagram, &pool);
    let armed = Arc::new(AtomicBool::new(false));
    let u1 = PanickyPort {
        armed: Arc::clone(&armed),
    };
    let (shards, _) = build(&cfg, &pool, vec![Box::new(u0), Box::new(u1)]);
    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let stop2 = Arc::clone(&stop);
    let runner = std::thread::spawn(move || {
        let _ = done_tx.send(shards.run(&stop2));
    });
    armed.store(true, Ordering::Relaxed);
    let result = done_rx.recv_timeout(Duration::from_secs(20));
    // Whatever happened, let the threads go before asserting.
    stop.store(true, Ordering::Relaxed);
    runner.join().unwrap();
    match result {
        Ok(Err(ShardError::Panicked(1))) => {}
        other => panic!("expected shard 1's panic to stop every shard, got {other:?}"),
    }
    assert!(stop.load(Ordering::Relaxed));
}

#[test]
fn two_shards_steer_each_configured_interface_mac_to_its_owner_and_follow_a_removal() {
    let pool = pool(512);
    let cfg = crate::config::parse("a.toml", CONFIG).unwrap();
    let (u0, ..) = MemPort::new("udp:0", PortKind::Datagram, &pool);
    let (u1, ..) = MemPort::new("udp:1", PortKind::Datagram, &pool);
    let (mut shards, _) = build(&cfg, &pool, vec![Box::new(u0), Box::new(u1)]);
    let heard: Arc<Mutex<Vec<Targets>>> = Arc::default();
    let h = Arc::clone(&heard);
    assert!(shards.steer_underlay(Box::new(move |t| h.lock().unwrap().push(t.to_vec()))));
    assert_eq!(
        heard.lock().unwrap().clone(),
        [vec![(mac(1), 0), (mac(2), 1)]]
    );
    for e in shards.engines_mut() {
        e.apply(Command::InterfaceDel { name: "vm1".into() })
            .unwrap();
    }
    assert_eq!(
        heard.lock().unwrap().clone(),
        [vec![(mac(1), 0), (mac(2), 1)], vec![(mac(1), 0)]],
        "one new program, after the last shard let vm1 go"
    );
}

#[test]
fn pinning_takes_cpus_this_process_may_use_and_names_them_otherwise() {
    use rustix::thread::CpuSet;
    let allowed = rustix::thread::sched_getaffinity(None).expect("sched_getaffinity");
    let first = (0..CpuSet::MAX_CPU)
        .find(|&c| allowed.is_set(c))
        .expect("some CPU is allowed");
    let sets = pin_sets(&[first]).expect("an allowed CPU");
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0].0, first);
    assert!(sets[0].1.is_set(first));
    assert_eq!(sets[0].1.count(), 1, "one CPU per shard");
    assert!(pin_sets(&[]).expect("no pinning").is_empty());
    let bad = (0..CpuSet::MAX_CPU)
        .rev()
        .find(|&c| !allowed.is_set(c))
        .expect("some CPU is not allowed");
    let e = pin_sets(&[first, bad]).expect_err("a CPU this process may not use");
    assert!(
        matches!(e, ShardError::Cpu { cpu, .. } if cpu == bad),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains(&format!("CPU {bad} is not available"))
            && e.to_string().contains(&first.to_string()),
        "{e}"
    );
}
