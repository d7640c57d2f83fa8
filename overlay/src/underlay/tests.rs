//! Tests of the underlay stack's logic over in-memory Ethernet wires. Two stacks talk
//! to each other through real frames; time is driven explicitly.
#![allow(clippy::unwrap_used)] // a panic in a test is its failure report

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use pkt::wire::{ArpOp, ArpRepr, EthernetRepr, Ipv4Repr, MacAddr, checksum, ethertype, ip_proto};
use pkt::{Batch, Mempool, Port, PortKind};

use super::*;

const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0a]);
const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0b]);

struct Host {
    stack: L2Underlay,
    wire: MemWire,
}

fn pool() -> Mempool {
    Mempool::new(1024, 2048).unwrap()
}

fn host(pool: &Mempool, mac: MacAddr, ip: &str, f: impl FnOnce(&mut UnderlayOptions)) -> Host {
    let (port, wire) = MemPort::new(pool.clone(), 1500);
    let mut o = UnderlayOptions::new(mac, ip.parse().unwrap(), 9000);
    f(&mut o);
    let stack = L2Underlay::new(Box::new(port), pool.clone(), o).unwrap();
    Host { stack, wire }
}

/// Moves frames between the two wires and lets both stacks receive, until quiet.
/// Returns what each side delivered.
fn pump(a: &mut Host, b: &mut Host, now: Instant) -> (Vec<PktBuf>, Vec<PktBuf>) {
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let mut moved = 0;
        for f in a.wire.take_sent() {
            b.wire.inject_buf(f);
            moved += 1;
        }
        for f in b.wire.take_sent() {
            a.wire.inject_buf(f);
            moved += 1;
        }
        let mut batch = Batch::new();
        moved += a.stack.rx_batch_at(&mut batch, now);
        got_a.extend(batch.drain());
        moved += b.stack.rx_batch_at(&mut batch, now);
        got_b.extend(batch.drain());
        if moved == 0 && a.wire.pending() == 0 && b.wire.pending() == 0 {
            break;
        }
    }
    (got_a, got_b)
}

fn datagram(pool: &Mempool, to: &str, payload: &[u8]) -> PktBuf {
    let mut b = pool.alloc().unwrap();
    b.extend_from_slice(payload).unwrap();
    b.meta.addr = Some(to.parse().unwrap());
    b
}

fn send(h: &mut Host, bufs: Vec<PktBuf>, now: Instant) -> usize {
    let mut batch = Batch::new();
    for b in bufs {
        batch.push(b).unwrap();
    }
    let n = h.stack.tx_batch_at(&mut batch, now);
    assert!(batch.is_empty(), "every datagram accepted");
    n
}

#[test]
fn starts_with_a_gratuitous_arp() {
    let pool = pool();
    let a = host(&pool, MAC_A, "10.0.0.1", |_| {});
    let sent = a.wire.take_sent();
    assert_eq!(sent.len(), 1);
    let f = sent[0].data();
    assert_eq!(f.len(), 60, "padded to the Ethernet minimum");
    let (eth, off) = EthernetRepr::parse(f).unwrap();
    assert_eq!(eth.dst, MacAddr::BROADCAST);
    let (arp, _) = ArpRepr::parse(&f[off..]).unwrap();
    assert_eq!(arp.op, ArpOp::Request);
    assert_eq!(arp.sender_ip, arp.target_ip);
    assert_eq!(arp.sender_mac, MAC_A);
}

#[test]
fn is_a_datagram_port_and_refuses_bad_setups() {
    let pool = pool();
    let a = host(&pool, MAC_A, "10.0.0.1", |_| {});
    assert_eq!(a.stack.caps().kind, PortKind::Datagram);
    let bad = |f: &dyn Fn(&mut UnderlayOptions)| {
        let (port, _w) = MemPort::new(pool.clone(), 1500);
        let mut o = UnderlayOptions::new(MAC_A, "10.0.0.1".parse().unwrap(), 9000);
        f(&mut o);
        L2Underlay::new(Box::new(port), pool.clone(), o).unwrap_err()
    };
    assert!(matches!(
        bad(&|o| o.mac = MacAddr::BROADCAST),
        UnderlayError::BadMac(_)
    ));
    assert!(matches!(
        bad(&|o| o.gateway = Some("10.0.1.1".parse().unwrap())),
        UnderlayError::GatewayOffLink { .. }
    ));
    assert!(matches!(
        bad(&|o| o.gateway = Some("fd00::1".parse().unwrap())),
        UnderlayError::GatewayFamily { .. }
    ));
    assert!(matches!(
        bad(&|o| o.mtu = Some(40)),
        UnderlayError::MtuTooSmall { .. }
    ));
    assert!(matches!(
        bad(&|o| o.prefix_len = 33),
        UnderlayError::BadPrefix { .. }
    ));
    let small = Mempool::new(8, 1024).unwrap();
    let (port, _w) = MemPort::new(small.clone(), 1500);
    let o = UnderlayOptions::new(MAC_A, "10.0.0.1".parse().unwrap(), 9000);
    let e = L2Underlay::new(Box::new(port), small, o).unwrap_err();
    assert!(matches!(e, UnderlayError::PoolTooSmall { .. }), "{e}");
}

#[test]
fn resolves_by_arp_then_datagrams_flow_both_ways() {
    let pool = pool();
    let mut a = host(&pool, MAC_A, "10.0.0.1", |_| {});
    let mut b = host(&pool, MAC_B, "10.0.0.2", |_| {});
    let now = Instant::now();
    pump(&mut a, &mut b, now); // gratuitous ARPs: nobody learns from them unasked
    assert_eq!(a.stack.neighbor("10.0.0.2".parse().unwrap()), None);
    send(
        &mut a,
        vec![datagram(&pool, "10.0.0.2:9000", b"hello")],
        now,
    );
    assert_eq!(a.stack.queued_for_resolution(), 1);
    let (_, got_b) = pump(&mut a, &mut b, now);
    assert_eq!(got_b.len(), 1);
    assert_eq!(got_b[0].data(), b"hello");
    assert_eq!(got_b[0].meta.addr, Some("10.0.0.1:9000".parse().unwrap()));
    // B learned A from A's request (it was the target): no ARP needed back.
    assert_eq!(b.stack.neighbor("10.0.0.1".parse().unwrap()), Some(MAC_A));
    assert_eq!(a.stack.neighbor("10.0.0.2".parse().unwrap()), Some(MAC_B));
    send(&mut b, vec![datagram(&pool, "10.0.0.1:9000", b"back")], now);
    assert_eq!(b.wire.sent_len(), 1, "sent at once, no resolution");
    let (got_a, _) = pump(&mut a, &mut b, now);
    assert_eq!(got_a[0].data(), b"back");
    assert_eq!(a.stack.events().arp_replies, 0);
    assert_eq!(b.stack.events().arp_replies, 1);
}

#[test]
fn dead_neighbor_drops_its_queue_after_the_timeout_and_the_queue_is_bounded() {
    let pool = pool();
    let mut a = host(&pool, MAC_A, "10.0.0.1", |o| {
        o.timers.queue_per_neighbor = 4;
    });
    a.wire.discard_sent();
    let t0 = Instant::now();
    let bufs = (0..6)
        .map(|_| datagram(&pool, "10.0.0.9:9000", b"x"))
        .collect();
    send(&mut a, bufs, t0);
    assert_eq!(a.stack.drops().tx_resolve_queue_full, 2);
    assert_eq!(a.stack.queued_for_resolution(), 4);
    let mut batch = Batch::new();
    for s in 1..=3 {
        a.stack.rx_batch_at(&mut batch, t0 + Duration::from_secs(s));
    }
    assert_eq!(
        a.wire.take_sent().len(),
        3,
        "three ARP requests, one per second"
    );
    assert_eq!(a.stack.drops().tx_resolve_timeout, 4);
    assert_eq!(a.stack.queued_for_resolution(), 0);
    let st = a.stack.stats();
    assert_eq!(st.drop_count("tx_resolve_timeout"), 4);
    drop(a);
    assert_eq!(pool.available(), pool.capacity(), "no buffer leaked");
}

fn arp_frame(op: ArpOp, from_mac: MacAddr, from_ip: &str, to_mac: MacAddr, to_ip: &str) -> Vec<u8> {
    let pool = Mempool::new(1, 256).unwrap();
    let mut b = pool.alloc().unwrap();
    let arp = ArpRepr {
        op,
        sender_mac: from_mac,
        sender_ip: from_ip.parse().unwrap(),
        target_mac: to_mac,
        target_ip: to_ip.parse().unwrap(),
    };
    let dst = if op == ArpOp::Request {
        MacAddr::BROADCAST
    } else {
        to_mac
    };
    arp::arp_frame(&mut b, dst, &arp).unwrap();
    b.data().to_vec()
}

#[test]
fn answers_arp_for_its_address_only_and_relearns_a_changed_mac() {
    let pool = pool();
    let mut a = host(&pool, MAC_A, "10.0.0.1", |_| {});
    a.wire.discard_sent();
    let now = Instant::now();
    let peer = MacAddr([0x02, 0, 0, 0, 0, 0x77]);
    a.wire.inject(&arp_frame(
        ArpOp::Request,
        peer,
        "10.0.0.7",
        MacAddr::ZERO,
        "10.0.0.1",
    ));
    a.wire.inject(&arp_frame(
        ArpOp::Request,
        peer,
        "10.0.0.7",
        MacAddr::ZERO,
        "10.0.0.99",
    ));
    let mut batch = Batch::new();
    assert_eq!(a.stack.rx_batch_at(&mut batch, now), 0);
    let sent = a.wire.take_sent();
    assert_eq!(sent.len(), 1, "one reply, for our address");
    let (eth, off) = EthernetRepr::parse(sent[0].data()).unwrap();
    assert_eq!(eth.dst, peer);
    let (r, _) = ArpRepr::parse(&sent[0].data()[off..]).unwrap();
    assert_eq!(
        (r.op, r.sender_mac, r.target_mac),
        (ArpOp::Reply, MAC_A, peer)
    );
    let ip7: IpAddr = "10.0.0.7".parse().unwrap();
    assert_eq!(a.stack.neighbor(ip7), Some(peer));
    // The peer moves to a new MAC and says so (any ARP from it updates the entry).
    let moved = MacAddr([0x02, 0, 0, 0, 0, 0x78]);
    a.wire.inject(&arp_frame(
        ArpOp::Request,
        moved,
        "10.0.0.7",
        MacAddr::ZERO,
        "10.0.0.7",
    ));
    a.stack.rx_batch_at(&mut batch, now);
    assert_eq!(a.stack.neighbor(ip7), Some(moved));
    a.wire.discard_sent();
    send(&mut a, vec![datagram(&pool, "10.0.0.7:9000", b"x")], now);
    let sent = a.wire.take_sent();
    assert_eq!(EthernetRepr::parse(sent[0].data()).unwrap().0.dst, moved);
    // Someone else claiming our address is counted, not learned.
    a.wire.inject(&arp_frame(
        ArpOp::Reply,
        peer,
        "10.0.0.1",
        MAC_A,
        "10.0.0.1",
    ));
    a.stack.rx_batch_at(&mut batch, now);
    assert_eq!(a.stack.drops().rx_address_conflict, 1);
}

#[test]
fn stale_neighbor_that_went_silent_is_resolved_again_by_broadcast() {
    let pool = pool();
    let mut a = host(&pool, MAC_A, "10.0.0.1", |_| {});
    let mut b = host(&pool, MAC_B, "10.0.0.2", |_| {});
    let t0 = Instant::now();
    send(&mut a, vec![datagram(&pool, "10.0.0.2:9000", b"1")], t0);
    pump(&mut a, &mut b, t0);
    // B "changes its MAC": a new stack on the same address that never heard of A.
    let new_mac = MacAddr([0x02, 0, 0, 0, 0, 0x0c]);
    let mut b2 = host(&pool, new_mac, "10.0.0.2", |_| {});
    b2.wire.discard_sent();
    let r = NeighborTimers::default().reachable;
    let mut t = t0 + Duration::from_secs(1);
    send(&mut a, vec![datagram(&pool, "10.0.0.2:9000", b"2")], t);
    a.wire.discard_sent(); // lost: sent to the old MAC
    // Once stale, unicast probes to the old MAC go unanswered; then the entry goes.
    for _ in 0..5 {
        t = t.max(t0 + r) + Duration::from_secs(1);
        let mut batch = Batch::new();
        a.stack.rx_batch_at(&mut batch, t);
        for f in a.wire.take_sent() {
            assert_eq!(
                EthernetRepr::parse(f.data()).unwrap().0.dst,
                MAC_B,
                "unicast refresh"
            );
        }
    }
    assert_eq!(a.stack.neighbor("10.0.0.2".parse().unwrap()), None);
    send(&mut a, vec![datagram(&pool, "10.0.0.2:9000", b"3")], t);
    let (_, got) = pump(&mut a, &mut b2, t);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data(), b"3");
    assert_eq!(a.stack.neighbor("10.0.0.2".parse().unwrap()), Some(new_mac));
    drop(b);
}

#[test]
fn frames_not_for_us_are_counted() {
    let pool = pool();
    let mut a = host(&pool, MAC_A, "10.0.0.1", |_| {});
    let mut b = host(&pool, MAC_B, "10.0.0.2", |_| {});
    let now = Instant::now();
    send(&mut b, vec![datagram(&pool, "10.0.0.1:9000", b"ok")], now);
    pump(&mut a, &mut b, now);
    let make = |to: &str, dst_mac: MacAddr| {
        let mut d = datagram(&pool, to, b"payload");
        let h = OuterHeaders {
            src_mac: MAC_B,
            dst_mac,
            vlan: None,
            src: "10.0.0.2:9000".parse().unwrap(),
            dst: d.meta.addr.unwrap(),
        };
        encap::push_outer(&mut d, &h, 1).unwrap();
        d.data().to_vec()
    };
    a.wire
        .inject(&make("10.0.0.1:9000", MacAddr([2, 9, 9, 9, 9, 9])));
    a.wire.inject(&make("10.0.0.5:9000", MAC_A));
    a.wire.inject(&make("10.0.0.1:9001", MAC_A));
    a.wire.inject(&[0x02, 0, 0, 0, 0, 0x0a, 0, 0, 0, 0]); // to us, cut short
    let mut bad = make("10.0.0.1:9000", MAC_A);
    bad[14 + 10] ^= 0xff; // IPv4 header checksum
    a.wire.inject(&bad);
    a.wire.inject(&make("10.0.0.1:9000", MAC_A));
    let mut batch = Batch::new();
    assert_eq!(a.stack.rx_batch_at(&mut batch, now), 1);
    let d = a.stack.drops();
    assert_eq!(
        (
            d.rx_not_for_us,
            d.rx_not_our_ip,
            d.rx_other_port,
            d.rx_truncated,
            d.rx_bad_checksum
        ),
        (1, 1, 1, 1, 1)
    );
}

#[test]
fn answers_ping_for_its_address() {
    let pool = pool();
    let mut a = host(&pool, MAC_A, "10.0.0.1", |_| {});
    a.wire.discard_sent();
    let mut icmp = vec![8u8, 0, 0, 0, 0x12, 0x34, 0, 1];
    icmp.extend_from_slice(b"abcdefgh");
    let c = checksum::internet_checksum(&icmp, 0);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = vec![0u8; 14 + 20];
    EthernetRepr {
        dst: MAC_A,
        src: MAC_B,
        vlan: None,
        ethertype: ethertype::IPV4,
    }
    .emit(&mut f)
    .unwrap();
    Ipv4Repr {
        src: "10.0.0.2".parse().unwrap(),
        dst: "10.0.0.1".parse().unwrap(),
        protocol: ip_proto::ICMP,
        ttl: 64,
        tos: 0,
        ident: 1,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
        payload_len: icmp.len(),
    }
    .emit(&mut f[14..])
    .unwrap();
    f.extend_from_slice(&icmp);
    a.wire.inject(&f);
    let mut batch = Batch::new();
    a.stack.rx_batch_at(&mut batch, Instant::now());
    let sent = a.wire.take_sent();
    assert_eq!(sent.len(), 1);
    let r = sent[0].data();
    let (ip, off) = Ipv4Repr::parse(&r[14..]).unwrap();
    assert_eq!(ip.dst, "10.0.0.2".parse::<std::net::Ipv4Addr>().unwrap());
    let msg = &r[14 + off..14 + off + ip.payload_len];
    assert_eq!(msg[0], 0, "echo reply");
    assert_eq!(&msg[4..], &icmp[4..]);
    assert_eq!(checksum::sum(msg, 0), 0xffff);
    assert_eq!(a.stack.events().echo_replies, 1);
}

#[test]
fn large_datagrams_are_fragmented_and_reassembled_v4_and_v6() {
    for (ip_a, ip_b) in [("10.0.0.1", "10.0.0.2"), ("fd00::1", "fd00::2")] {
        let pool = pool();
        let mut a = host(&pool, MAC_A, ip_a, |_| {});
        let mut b = host(&pool, MAC_B, ip_b, |_| {});
        let now = Instant::now();
        let payload: Vec<u8> = (0..1600u32).map(|i| (i * 13) as u8).collect();
        let to = SocketAddr::new(ip_b.parse().unwrap(), 9000).to_string();
        send(
            &mut a,
            vec![
                datagram(&pool, &to, &payload),
                datagram(&pool, &to, b"small"),
            ],
            now,
        );
        let (_, got) = pump(&mut a, &mut b, now);
        assert_eq!(got.len(), 2, "{ip_a}");
        assert_eq!(got[0].data(), &payload[..]);
        assert_eq!(got[1].data(), b"small");
        assert_eq!(a.stack.events().tx_fragmented, 1);
        assert_eq!(b.stack.events().rx_reassembled, 1);
        drop(got);
        drop((a, b));
        assert_eq!(pool.available(), pool.capacity(), "no buffer leaked");
    }
}

#[test]
fn ipv6_neighbors_resolve_by_solicitation_and_answer_ping() {
    let pool = pool();
    let mut a = host(&pool, MAC_A, "fd00::1", |_| {});
    let mut b = host(&pool, MAC_B, "fd00::2", |_| {});
    let now = Instant::now();
    pump(&mut a, &mut b, now);
    send(&mut a, vec![datagram(&pool, "[fd00::2]:9000", b"v6")], now);
    let (_, got) = pump(&mut a, &mut b, now);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].meta.addr, Some("[fd00::1]:9000".parse().unwrap()));
    assert_eq!(a.stack.neighbor("fd00::2".parse().unwrap()), Some(MAC_B));
    assert_eq!(b.stack.neighbor("fd00::1".parse().unwrap()), Some(MAC_A));
    assert_eq!(a.stack.events().nd_solicits, 1);
    // An echo request to B, built as A's stack would build a reply, answered by B.
    let mut req = pool.alloc().unwrap();
    let mut msg = vec![nd::ECHO_REQUEST, 0, 0, 0, 0, 1, 0, 1];
    msg.extend_from_slice(b"ping6");
    nd::echo_reply(
        &mut req,
        MAC_A,
        MAC_B,
        "fd00::1".parse().unwrap(),
        "fd00::2".parse().unwrap(),
        &msg,
    )
    .unwrap();
    let off = 14 + 40;
    req.data_mut()[off] = nd::ECHO_REQUEST;
    let (s, d) = ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
    let c = nd::icmpv6_checksum(&s, &d, &req.data()[off..]);
    req.data_mut()[off + 2..off + 4].copy_from_slice(&c.to_be_bytes());
    b.wire.inject_buf(req);
    let mut batch = Batch::new();
    b.stack.rx_batch_at(&mut batch, now);
    let sent = b.wire.take_sent();
    assert_eq!(sent.len(), 1);
    let r = &sent[0].data()[off..];
    assert_eq!(r[0], nd::ECHO_REPLY);
    assert!(nd::icmpv6_valid(&d, &s, r));
}

#[test]
fn off_link_peers_go_through_the_gateway() {
    let pool = pool();
    let mut a = host(&pool, MAC_A, "10.0.0.1", |o| {
        o.gateway = Some("10.0.0.254".parse().unwrap())
    });
    let mut gw = host(&pool, MAC_B, "10.0.0.254", |_| {});
    let now = Instant::now();
    pump(&mut a, &mut gw, now);
    send(&mut a, vec![datagram(&pool, "10.5.0.9:9000", b"far")], now);
    // The gateway answers ARP for itself; the datagram then goes to its MAC, addressed
    // to the far peer (the gateway's stack counts it as not for its IP).
    pump(&mut a, &mut gw, now);
    assert_eq!(a.stack.neighbor("10.0.0.254".parse().unwrap()), Some(MAC_B));
    assert_eq!(gw.stack.drops().rx_not_our_ip, 1);
    let mut c = host(&pool, MAC_A, "10.0.0.3", |_| {});
    c.wire.discard_sent();
    send(&mut c, vec![datagram(&pool, "10.5.0.9:9000", b"far")], now);
    assert_eq!(c.stack.drops().tx_no_route, 1);
}

#[test]
fn a_full_wrapped_port_leaves_datagrams_with_the_caller() {
    let pool = pool();
    let mut a = host(&pool, MAC_A, "10.0.0.1", |_| {});
    let mut b = host(&pool, MAC_B, "10.0.0.2", |_| {});
    let now = Instant::now();
    send(&mut a, vec![datagram(&pool, "10.0.0.2:9000", b"0")], now);
    pump(&mut a, &mut b, now);
    a.wire.set_tx_limit(Some(0));
    let mut batch = Batch::new();
    for _ in 0..BATCH_MAX {
        batch.push(datagram(&pool, "10.0.0.2:9000", b"x")).unwrap();
    }
    let mut total = 0;
    for _ in 0..3 {
        total += a.stack.tx_batch_at(&mut batch, now);
    }
    assert_eq!(total, BATCH_MAX, "the internal queue takes one batch");
    for _ in 0..4 {
        batch.push(datagram(&pool, "10.0.0.2:9000", b"y")).unwrap();
    }
    assert_eq!(a.stack.tx_batch_at(&mut batch, now), 0);
    assert_eq!(batch.len(), 4, "given back, not dropped");
    a.wire.set_tx_limit(None);
    assert_eq!(a.stack.tx_batch_at(&mut batch, now), 4);
    assert_eq!(a.wire.sent_len(), BATCH_MAX + 4);
}

/// A datagram to `to` whose bytes past `head` are an external tail, as a guest port
/// lends them; its token (7) comes back in `ring`.
fn tailed_datagram(
    pool: &Mempool,
    to: &str,
    payload: &[u8],
    head: usize,
    ring: &std::sync::Arc<pkt::DoneRing>,
) -> PktBuf {
    let mut b = datagram(pool, to, &payload[..head]);
    // Leaked: the bytes must outlive every holder of the tail.
    let tail: &'static [u8] = Vec::leak(payload[head..].to_vec());
    let done = pkt::Completion::new(std::sync::Arc::clone(ring), 7);
    b.attach_ext(pkt::ExtSeg::from_static(tail, Some(0x1000), done));
    b
}

#[test]
fn a_gathering_port_gets_a_tailed_datagram_whole_behind_outer_headers_that_count_the_tail() {
    let pool = pool();
    let (port, wire) = MemPort::new(pool.clone(), 1500);
    let o = UnderlayOptions::new(MAC_A, "10.0.0.1".parse().unwrap(), 9000);
    let mut a = Host {
        stack: L2Underlay::new(Box::new(port.with_ext_tail()), pool.clone(), o).unwrap(),
        wire,
    };
    let mut b = host(&pool, MAC_B, "10.0.0.2", |_| {});
    assert!(
        a.stack.caps().offloads.contains(pkt::Offloads::EXT_TAIL),
        "the engine must not join tails the NIC would gather"
    );
    assert!(
        !b.stack.caps().offloads.contains(pkt::Offloads::EXT_TAIL),
        "nor hand tails to a stack over a port that cannot send them"
    );
    let now = Instant::now();
    // Resolve B first: the frames below are the only ones on the wire.
    send(
        &mut a,
        vec![datagram(&pool, "10.0.0.2:9000", b"hello")],
        now,
    );
    pump(&mut a, &mut b, now);
    let ring = pkt::DoneRing::new(4);
    let payload: Vec<u8> = (0..1400u32).map(|i| (i * 7 + 3) as u8).collect();
    send(
        &mut a,
        vec![tailed_datagram(
            &pool,
            "10.0.0.2:9000",
            &payload,
            100,
            &ring,
        )],
        now,
    );
    let sent = a.wire.take_sent();
    assert_eq!(sent.len(), 1);
    let f = &sent[0];
    let (head, tail) = f.parts();
    assert_eq!(tail.len(), 1300, "the tail travels as it is, not copied");
    assert_eq!(f.ext().and_then(pkt::ExtSeg::dma), Some(0x1000));
    assert_eq!(head.len(), 14 + 20 + 8 + 100);
    assert_eq!(
        u16::from_be_bytes([head[16], head[17]]),
        20 + 8 + 1400,
        "IPv4 length covers the tail"
    );
    assert_eq!(
        u16::from_be_bytes([head[38], head[39]]),
        8 + 1400,
        "UDP length covers the tail"
    );
    assert_eq!([&head[42..], tail].concat(), payload);
    assert!(ring.is_empty(), "the tail is out until the frame is gone");
    drop(sent);
    assert_eq!(ring.pop(), Some(7));
}

#[test]
fn a_tailed_datagram_past_the_mtu_is_joined_then_fragmented() {
    let pool = pool();
    let (port, wire) = MemPort::new(pool.clone(), 1500);
    let o = UnderlayOptions::new(MAC_A, "10.0.0.1".parse().unwrap(), 9000);
    let mut a = Host {
        stack: L2Underlay::new(Box::new(port.with_ext_tail()), pool.clone(), o).unwrap(),
        wire,
    };
    let mut b = host(&pool, MAC_B, "10.0.0.2", |_| {});
    let now = Instant::now();
    // Resolve B first: the frames below are the only ones on the wire.
    send(
        &mut a,
        vec![datagram(&pool, "10.0.0.2:9000", b"hello")],
        now,
    );
    pump(&mut a, &mut b, now);
    let ring = pkt::DoneRing::new(4);
    // 100 bytes in the buffer, 1700 in the tail: one datagram over a 1500 MTU.
    let payload: Vec<u8> = (0..1800u32).map(|i| (i * 11 + 1) as u8).collect();
    send(
        &mut a,
        vec![tailed_datagram(
            &pool,
            "10.0.0.2:9000",
            &payload,
            100,
            &ring,
        )],
        now,
    );
    assert_eq!(ring.pop(), Some(7), "the tail was joined and given back");
    let sent = a.wire.take_sent();
    assert_eq!(sent.len(), 2);
    assert!(
        sent.iter().all(|f| f.is_linear() && f.len() <= 14 + 1500),
        "fragments fit the MTU: {:?}",
        sent.iter().map(PktBuf::len).collect::<Vec<_>>()
    );
    for f in sent {
        b.wire.inject_buf(f);
    }
    let (_, got) = pump(&mut a, &mut b, now);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data(), &payload[..]);
    assert_eq!(a.stack.events().tx_fragmented, 1);
}
