//! Multiple queues with RSS, checksum offload and TSO of the 82576 driver against the
//! register-level model, which computes hashes, checksums and segments itself.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use offload::checksum::{
    fill_tcp_checksum_v4, fill_udp_checksum_v4, verify_ipv4_header, verify_tcp_v4, verify_tcp_v6,
    verify_udp_v4,
};
use offload::vnet_hdr::{DATA_VALID, NEEDS_CSUM};
use pkt::{Batch, HEADROOM, Mempool, Offloads, Port};

use super::model::{IgbModel, MODEL_MAC, ModelDma};
use super::model_offload;
use super::{IgbConfig, IgbError, IgbPort, Registers, regs};

pub(super) type ModelPort = IgbPort<IgbModel, ModelDma>;

pub(super) const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

pub(super) fn cfg(queues: usize) -> IgbConfig {
    IgbConfig {
        rx_ring: 64,
        tx_ring: 64,
        queues,
        rss_key: Some(offload::rss::DEFAULT_KEY),
        ..IgbConfig::default()
    }
}

pub(super) fn port_with(cfg: IgbConfig, pool: &Mempool) -> (IgbModel, ModelPort) {
    let model = IgbModel::new();
    let dma = ModelDma::new(&model, pool);
    let port = IgbPort::new("igb-model", model.clone(), dma, pool.clone(), cfg).expect("init");
    (model, port)
}

pub(super) fn pool() -> Mempool {
    Mempool::new(1024, super::pool_buffer_size(1500)).expect("pool")
}

/// Ethernet + IPv4 header (checksum filled) for an L4 segment of `l4_len` bytes.
fn eth_ipv4(dst: [u8; 6], src: Ipv4Addr, dstip: Ipv4Addr, proto: u8, l4_len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(34 + l4_len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + l4_len) as u16;
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0x12,
        0x34,
        0x40,
        0,
        64,
        proto,
    ]);
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dstip.octets());
    let c = offload::checksum::internet_checksum(&f[14..34], 0);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

/// A UDP/IPv4 frame to the model's MAC with a correct checksum.
pub(super) fn udp_frame(src: Ipv4Addr, sport: u16, dport: u16, payload_len: usize) -> Vec<u8> {
    let dst = Ipv4Addr::new(10, 0, 0, 2);
    let mut f = eth_ipv4(MODEL_MAC, src, dst, 17, 8 + payload_len);
    let ul = (8 + payload_len) as u16;
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&ul.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend((0..payload_len).map(|i| (i as u8).wrapping_mul(3).wrapping_add(sport as u8)));
    fill_udp_checksum_v4(src, dst, &mut f[34..]).expect("udp checksum");
    f
}

/// A TCP/IPv4 frame with `payload_len` bytes, flags ACK|PSH|FIN, checksum filled.
pub(super) fn tcp_frame_v4(payload_len: usize) -> Vec<u8> {
    let (src, dst) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 9));
    let mut f = eth_ipv4(PEER_MAC, src, dst, 6, 20 + payload_len);
    f[..6].copy_from_slice(&PEER_MAC);
    f[6..12].copy_from_slice(&MODEL_MAC);
    f.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51, 0xff, 0xff, 0xff, 0x00, 0, 0, 0, 7]);
    f.extend_from_slice(&[0x50, 0x19, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend((0..payload_len).map(|i| (i * 7 + 3) as u8));
    fill_tcp_checksum_v4(src, dst, &mut f[34..]).expect("tcp checksum");
    f
}

/// The same over IPv6.
pub(super) fn tcp_frame_v6(payload_len: usize) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&MODEL_MAC);
    f.extend_from_slice(&[0x86, 0xdd]);
    let tl = (20 + payload_len) as u16;
    f.extend_from_slice(&[0x60, 0, 0, 0, (tl >> 8) as u8, tl as u8, 6, 64]);
    let (s, d): (Ipv6Addr, Ipv6Addr) = ("fd00::1".parse().unwrap(), "fd00::9".parse().unwrap());
    f.extend_from_slice(&s.octets());
    f.extend_from_slice(&d.octets());
    f.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 7]);
    f.extend_from_slice(&[0x50, 0x19, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend((0..payload_len).map(|i| (i * 5 + 1) as u8));
    offload::checksum::fill_tcp_checksum_v6(&s, &d, &mut f[54..]).expect("tcp checksum");
    f
}

pub(super) fn buf_of(pool: &Mempool, f: &[u8]) -> pkt::PktBuf {
    let mut b = pool.alloc().expect("buffer");
    b.extend_from_slice(f).expect("fits");
    b
}

/// The queue the RSS rules put a UDP/IPv4 flow on: Toeplitz over addresses and ports
/// with the Microsoft key, RETA entry `hash & 0x7f` dealt round-robin over `queues`.
fn expected_queue(src: Ipv4Addr, sport: u16, dport: u16, queues: u32) -> u32 {
    let h = offload::rss::flow_hash(
        &offload::rss::DEFAULT_KEY,
        IpAddr::V4(src),
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        Some((sport, dport)),
    );
    (h & 0x7f) % queues
}

#[test]
fn rss_init_programs_key_table_and_mrqc_and_caps_tell_the_truth() {
    let pool = pool();
    let (model, port) = port_with(cfg(4), &pool);
    let r = |o| model.read(o);
    assert_eq!(r(regs::MRQC) & 3, regs::MRQC_ENABLE_RSS);
    assert_ne!(r(regs::MRQC) & regs::MRQC_RSS_FIELD_IPV4_UDP, 0);
    assert_ne!(r(regs::RXCSUM) & regs::RXCSUM_PCSD, 0, "RSS needs PCSD");
    assert_eq!(r(regs::RSSRK), u32::from_le_bytes([0x6d, 0x5a, 0x56, 0xda]));
    assert_eq!(r(regs::RETA), u32::from_le_bytes([0, 1, 2, 3]));
    assert_eq!(r(regs::RETA + 4 * 31), u32::from_le_bytes([0, 1, 2, 3]));
    for q in 0..4 {
        let qr = super::QueueRegs::pf(q);
        assert_ne!(r(qr.rxdctl) & regs::XDCTL_ENABLE, 0, "rx queue {q}");
        assert_ne!(r(qr.txdctl) & regs::XDCTL_ENABLE, 0, "tx queue {q}");
        assert_eq!(r(qr.rdt), 63, "queue {q} posted");
    }
    let caps = port.caps();
    assert_eq!((caps.rx_queues, caps.tx_queues), (4, 4));
    assert!(
        caps.offloads
            .contains(Offloads::RSS | Offloads::RX_CSUM | Offloads::TX_CSUM)
    );
    assert!(caps.offloads.contains(Offloads::TSO4 | Offloads::TSO6));
    assert!(!caps.offloads.contains(Offloads::VLAN), "not implemented");
    assert_eq!(pool.available(), 1024 - 4 * 64);

    let (_, single) = port_with(
        IgbConfig {
            offloads: false,
            ..cfg(1)
        },
        &Mempool::new(256, 2176).unwrap(),
    );
    let caps = single.caps();
    assert_eq!(
        (caps.rx_queues, caps.offloads),
        (1, Offloads::EXT_TAIL),
        "tails (gathered or copied) need no offload"
    );
}

#[test]
fn a_random_rss_key_is_drawn_and_programmed() {
    let pool = pool();
    let (model, port) = port_with(
        IgbConfig {
            rss_key: None,
            ..cfg(2)
        },
        &pool,
    );
    let key = port.rss_key();
    assert_ne!(key, offload::rss::DEFAULT_KEY);
    for (i, k) in key.chunks_exact(4).enumerate() {
        assert_eq!(
            model.read(regs::RSSRK + 4 * i as u32),
            u32::from_le_bytes([k[0], k[1], k[2], k[3]])
        );
    }
    let (_, other) = port_with(
        IgbConfig {
            rss_key: None,
            ..cfg(2)
        },
        &pool,
    );
    assert_ne!(other.rss_key(), key, "each port draws its own");
}

#[test]
fn bad_queue_counts_are_clear_errors() {
    let pool = pool();
    let model = IgbModel::new();
    let err = IgbPort::new(
        "x",
        model.clone(),
        ModelDma::new(&model, &pool),
        pool.clone(),
        cfg(5),
    )
    .expect_err("5 queues");
    assert!(err.to_string().contains("1..=4"), "{err}");
    let sriov = IgbConfig {
        sriov: Some(super::SriovConfig {
            vfs: Vec::new(),
            poll_every: 1,
        }),
        ..cfg(2)
    };
    let err = IgbPort::new(
        "x",
        model.clone(),
        ModelDma::new(&model, &pool),
        pool.clone(),
        sriov,
    )
    .expect_err("RSS with SR-IOV");
    assert!(
        matches!(err, IgbError::Config(_)) && err.to_string().contains("queues = 1"),
        "{err}"
    );
    let few = Mempool::new(300, 2176).unwrap();
    let err = IgbPort::new(
        "x",
        model.clone(),
        ModelDma::new(&model, &few),
        few.clone(),
        cfg(4),
    )
    .expect_err("300 buffers for 4 rings of 64");
    assert!(matches!(err, IgbError::Pool(_)), "{err}");
}

#[test]
fn rss_spreads_flows_over_queues_and_keeps_each_flow_on_one() {
    let pool = pool();
    let (model, mut port) = port_with(cfg(4), &pool);
    let mut want = [0u64; 4];
    let mut b = Batch::new();
    let mut got = 0;
    for flow in 0..32u16 {
        let src = Ipv4Addr::new(192, 168, 1, 1 + flow as u8);
        let sport = 4000 + flow * 7;
        let q = expected_queue(src, sport, 4789, 4);
        for i in 0..3 {
            let before = model.state().queue_rx;
            assert_eq!(
                model.receive(&udp_frame(src, sport, 4789, 40 + i)),
                super::model::RxOutcome::Delivered
            );
            let after = model.state().queue_rx;
            let hit: Vec<usize> = (0..16).filter(|&n| after[n] != before[n]).collect();
            assert_eq!(
                hit,
                vec![q as usize],
                "flow {flow} frame {i} on the queue its hash picks"
            );
            want[q as usize] += 1;
        }
        got += port.rx_batch(&mut b);
        b.clear();
    }
    assert_eq!(got, 96);
    let per_queue: Vec<u64> = port.queue_stats().iter().map(|s| s.rx_packets).collect();
    assert_eq!(per_queue, want.to_vec(), "the driver drained every queue");
    assert!(
        per_queue.iter().filter(|&&n| n > 0).count() >= 3,
        "spread: {per_queue:?}"
    );
    assert_eq!(port.offload_stats().rx_csum_good, 96);
    assert_eq!(model.state().dma_faults, 0);
}

#[test]
fn rx_batch_drains_all_queues_round_robin_within_the_batch_room() {
    let pool = pool();
    let (model, mut port) = port_with(cfg(2), &pool);
    // Enough frames on both queues to overfill one batch.
    let mut per_q = [0usize; 2];
    let mut flow = 0u16;
    while per_q.iter().any(|&n| n < 50) {
        let src = Ipv4Addr::new(10, 1, 0, flow as u8);
        let q = expected_queue(src, 1000 + flow, 4789, 2) as usize;
        flow += 1;
        if per_q[q] >= 50 {
            continue;
        }
        model.receive(&udp_frame(src, 999 + flow, 4789, 20));
        per_q[q] += 1;
    }
    let mut b = Batch::new();
    let first = port.rx_batch(&mut b);
    assert_eq!(first, pkt::BATCH_MAX, "one full batch");
    b.clear();
    let second = port.rx_batch(&mut b);
    assert_eq!(first + second, 100, "the rest in the next");
    let s = port.queue_stats();
    assert_eq!((s[0].rx_packets, s[1].rx_packets), (50, 50));
}

#[test]
fn tx_puts_each_flow_on_one_queue_in_order() {
    let pool = pool();
    let (model, mut port) = port_with(cfg(4), &pool);
    // 8 flows, 6 frames each, interleaved; payload byte 0 carries the frame's index.
    let mut frames = Vec::new();
    for i in 0..6u8 {
        for flow in 0..8u8 {
            let mut f = udp_frame(Ipv4Addr::new(10, 0, 0, 1), 5000 + u16::from(flow), 4789, 16);
            f[0..6].copy_from_slice(&PEER_MAC);
            f[42] = i;
            frames.push(f);
        }
    }
    let mut b = Batch::new();
    for f in &frames {
        b.push(buf_of(&pool, f)).expect("room");
    }
    assert_eq!(port.tx_batch(&mut b), 48);
    assert!(b.is_empty());
    let wire = model.take_wire();
    assert_eq!(wire.len(), 48);
    for flow in 0..8u16 {
        let seq: Vec<u8> = wire
            .iter()
            .filter(|f| u16::from_be_bytes([f[34], f[35]]) == 5000 + flow)
            .map(|f| f[42])
            .collect();
        assert_eq!(seq, (0..6).collect::<Vec<u8>>(), "flow {flow} in order");
    }
    let used: Vec<u64> = port.queue_stats().iter().map(|s| s.tx_packets).collect();
    assert_eq!(used.iter().sum::<u64>(), 48);
    assert!(
        used.iter().all(|&n| n % 6 == 0),
        "whole flows per queue: {used:?}"
    );
    assert!(
        used.iter().filter(|&&n| n > 0).count() > 1,
        "spread: {used:?}"
    );
    let pool_tx = model.state().pool_tx;
    assert_eq!(
        pool_tx[..4]
            .iter()
            .map(|&n| u64::from(n))
            .collect::<Vec<_>>(),
        used,
        "the device agrees"
    );
}

#[test]
fn rx_checksum_verdicts_mark_good_frames_and_leave_bad_ones_to_software() {
    let pool = pool();
    let (model, mut port) = port_with(cfg(1), &pool);
    let good = udp_frame(Ipv4Addr::new(10, 0, 0, 1), 1, 2, 100);
    let mut bad_udp = good.clone();
    bad_udp[50] ^= 0xff;
    let mut bad_ip = good.clone();
    bad_ip[22] = 1; // TTL changed, header checksum not
    let mut zero_udp = good.clone();
    zero_udp[40..42].copy_from_slice(&[0, 0]); // no UDP checksum: valid on IPv4
    let mut not_ip = good.clone();
    not_ip[12..14].copy_from_slice(&[0x88, 0xb5]);
    let mut tcp = tcp_frame_v4(300);
    tcp[..6].copy_from_slice(&MODEL_MAC);
    let mut bad_tcp = tcp.clone();
    bad_tcp[100] ^= 1;
    for f in [&good, &bad_udp, &bad_ip, &zero_udp, &not_ip, &tcp, &bad_tcp] {
        assert_eq!(model.receive(f), super::model::RxOutcome::Delivered);
    }
    let mut b = Batch::new();
    assert_eq!(port.rx_batch(&mut b), 7);
    let flags: Vec<u8> = b.iter().map(|p| p.meta.offload.flags).collect();
    assert_eq!(flags, vec![DATA_VALID, 0, 0, DATA_VALID, 0, DATA_VALID, 0]);
    let bytes: Vec<Vec<u8>> = b.iter().map(|p| p.data().to_vec()).collect();
    assert_eq!(
        bytes[1], bad_udp,
        "a bad frame is delivered as it came, unmarked"
    );
    let o = port.offload_stats();
    assert_eq!(
        (o.rx_csum_good, o.rx_csum_bad, o.rx_csum_unchecked),
        (3, 3, 1)
    );
}

#[test]
fn rx_without_offloads_marks_nothing() {
    let pool = pool();
    let (model, mut port) = port_with(
        IgbConfig {
            offloads: false,
            ..cfg(1)
        },
        &pool,
    );
    assert_eq!(model.read(regs::RXCSUM), 0);
    model.receive(&udp_frame(Ipv4Addr::new(10, 0, 0, 1), 1, 2, 100));
    let mut b = Batch::new();
    assert_eq!(port.rx_batch(&mut b), 1);
    assert_eq!(b.iter().next().map(|p| p.meta.offload.flags), Some(0));
}

/// `f` handed over for checksum offload, as a stack does (virtio `NEEDS_CSUM`): the
/// L4 checksum field holds the pseudo-header sum.
pub(super) fn partial(pool: &Mempool, f: &[u8], tcp: bool) -> pkt::PktBuf {
    let mut b = buf_of(pool, f);
    let at = 34 + if tcp { 16 } else { 6 };
    let (s, d) = (
        Ipv4Addr::new(f[26], f[27], f[28], f[29]),
        Ipv4Addr::new(f[30], f[31], f[32], f[33]),
    );
    let p =
        offload::checksum::pseudo_header_v4(s, d, if tcp { 6 } else { 17 }, (f.len() - 34) as u16);
    b.data_mut()[at..at + 2].copy_from_slice(&offload::checksum::fold(u64::from(p)).to_be_bytes());
    b.meta.offload.flags = NEEDS_CSUM;
    b.meta.offload.csum_start = 34;
    b.meta.offload.csum_offset = if tcp { 16 } else { 6 };
    b
}

#[test]
fn tx_checksum_offload_fills_udp_and_tcp_with_one_context_per_layout() {
    let pool = pool();
    let (model, mut port) = port_with(cfg(1), &pool);
    let udp = udp_frame(Ipv4Addr::new(10, 0, 0, 1), 7, 8, 200);
    let tcp = tcp_frame_v4(500);
    let mut b = Batch::new();
    for f in [&udp, &udp, &tcp, &tcp] {
        b.push(partial(&pool, f, f[23] == 6)).expect("room");
    }
    assert_eq!(port.tx_batch(&mut b), 4);
    let wire = model.take_wire();
    assert_eq!(
        wire,
        vec![udp.clone(), udp.clone(), tcp.clone(), tcp.clone()],
        "checksums as software computes them"
    );
    let a = |f: &[u8], at: usize| Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]);
    assert!(verify_udp_v4(
        a(&wire[0], 26),
        a(&wire[0], 30),
        &wire[0][34..]
    ));
    assert!(verify_tcp_v4(
        a(&wire[2], 26),
        a(&wire[2], 30),
        &wire[2][34..]
    ));
    assert_eq!(
        model.state().tx_contexts,
        2,
        "one context for UDP, reused, one for TCP"
    );
    assert_eq!(port.offload_stats().tx_csum, 4);
    port.reclaim_tx();
    assert_eq!(port.tx_in_flight(), 0, "context slots reclaimed too");
}

#[test]
fn tx_checksum_for_a_layout_the_device_cannot_describe_is_done_in_software() {
    let pool = pool();
    let (model, mut port) = port_with(cfg(1), &pool);
    // A TCP segment behind an EtherType no context can describe (0x88b5).
    let mut want = tcp_frame_v4(100);
    want[12..14].copy_from_slice(&[0x88, 0xb5]);
    let mut odd = partial(&pool, &tcp_frame_v4(100), true);
    odd.data_mut()[12..14].copy_from_slice(&[0x88, 0xb5]);
    let mut broken = buf_of(&pool, &tcp_frame_v4(100));
    broken.meta.offload.flags = NEEDS_CSUM;
    broken.meta.offload.csum_start = 2000;
    let mut b = Batch::new();
    b.push(odd).expect("room");
    b.push(broken).expect("room");
    assert_eq!(port.tx_batch(&mut b), 1);
    assert_eq!(port.offload_stats().tx_sw_csum, 1);
    assert_eq!(port.stats().drop_count("tx_bad_offload"), 1);
    assert_eq!(model.take_wire(), vec![want], "completed in software");
    assert_eq!(model.state().tx_contexts, 0);
}

/// Cuts `frame` with the device model through the driver and checks the segments
/// against software segmentation of the same frame (offload::gso).
fn tso_round_trip(frame: &[u8], v4: bool) {
    let big = Mempool::new(600, HEADROOM + 32 * 1024).expect("pool");
    let (model, mut port) = port_with(cfg(1), &big);
    let mut buf = buf_of(&big, frame);
    let meta = offload::gso::tso_request(buf.data_mut(), 1500).expect("tso request");
    buf.meta.offload = meta;
    let mut b = Batch::new();
    b.push(buf).expect("room");
    assert_eq!(port.tx_batch(&mut b), 1);
    let wire = model.take_wire();
    let l4 = if v4 { 34 } else { 54 };
    let payload = frame.len() - l4 - 20;
    let mss = if v4 { 1460 } else { 1440 };
    assert_eq!(wire.len(), payload.div_ceil(mss), "MSS-sized segments");
    let mut sw = Vec::new();
    offload::gso::segment_tcp(frame, mss, &big, |s| sw.push(s.data().to_vec()))
        .expect("software segmentation");
    let mut joined = Vec::new();
    for (i, seg) in wire.iter().enumerate() {
        assert!(seg.len() <= 1514, "segment {i}: {} bytes", seg.len());
        if v4 {
            assert!(verify_ipv4_header(&seg[14..34]), "segment {i}");
            let a = |at: usize| Ipv4Addr::new(seg[at], seg[at + 1], seg[at + 2], seg[at + 3]);
            assert!(verify_tcp_v4(a(26), a(30), &seg[34..]), "segment {i}");
        } else {
            let a = |at: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&seg[at..at + 16]);
                Ipv6Addr::from(o)
            };
            assert!(verify_tcp_v6(&a(22), &a(38), &seg[54..]), "segment {i}");
        }
        assert_eq!(
            seg[l4 + 13] & 0x09 != 0,
            i + 1 == wire.len(),
            "FIN/PSH only on the last"
        );
        joined.extend_from_slice(&seg[l4 + 20..]);
    }
    assert_eq!(joined, frame[l4 + 20..], "payload reassembles");
    assert_eq!(
        wire, sw,
        "the device's segments are software's, byte for byte"
    );
    let o = port.offload_stats();
    assert_eq!((o.tx_tso, o.tx_contexts), (1, 1));
    assert_eq!(port.stats().tx_packets, 1);
    assert_eq!(
        port.hw_good_frames().1,
        wire.len() as u64,
        "GPTC counts segments"
    );
    port.reclaim_tx();
    assert_eq!(port.tx_in_flight(), 0);
    assert_eq!(model.state().bad_contexts, 0);
    assert_eq!(model.state().dma_faults, 0);
}

#[test]
fn tso_of_a_30k_tcp_ipv4_frame_gives_mss_segments_with_correct_checksums() {
    tso_round_trip(&tcp_frame_v4(30_000 - 54), true);
}

#[test]
fn tso_of_a_tcp_ipv6_frame_gives_mss_segments_with_correct_checksums() {
    tso_round_trip(&tcp_frame_v6(20_000), false);
}

#[test]
fn large_frames_the_device_cannot_segment_are_dropped_and_counted() {
    let big = Mempool::new(600, HEADROOM + 32 * 1024).expect("pool");
    let (model, mut port) = port_with(cfg(1), &big);
    // UDP GSO: the 82576 has no UDP segmentation.
    let mut udp = buf_of(&big, &udp_frame(Ipv4Addr::new(10, 0, 0, 1), 1, 2, 5000));
    udp.meta.offload = pkt::OffloadMeta {
        flags: NEEDS_CSUM,
        gso_type: offload::vnet_hdr::gso::UDP,
        gso_size: 1400,
        csum_start: 34,
        csum_offset: 6,
        hdr_len: 42,
    };
    // A TSO request whose MSS would make segments longer than the MTU.
    let mut fat = buf_of(&big, &tcp_frame_v4(8000));
    fat.meta.offload = offload::gso::tso_request(fat.data_mut(), 1500).expect("request");
    fat.meta.offload.gso_size = 4000;
    // Large, and no request at all.
    let plain = buf_of(&big, &tcp_frame_v4(3000));
    let mut b = Batch::new();
    for p in [udp, fat, plain] {
        b.push(p).expect("room");
    }
    assert_eq!(port.tx_batch(&mut b), 0);
    assert_eq!(port.stats().drop_count("tx_bad_offload"), 2);
    assert_eq!(
        port.stats().drop_count("tx_bad_length"),
        1,
        "large, asking for nothing"
    );
    assert!(model.take_wire().is_empty());
}

#[test]
fn tso_frames_wait_for_ring_space_and_go_out_unchanged_later() {
    let big = Mempool::new(600, HEADROOM + 32 * 1024).expect("pool");
    let cfg = IgbConfig {
        tx_ring: 16,
        ..cfg(1)
    };
    let (model, mut port) = port_with(cfg, &big);
    model.write(regs::TCTL, 0); // nothing completes
    let frame = tcp_frame_v4(30_000 - 54);
    let mut b = Batch::new();
    for _ in 0..3 {
        let mut buf = buf_of(&big, &frame);
        buf.meta.offload = offload::gso::tso_request(buf.data_mut(), 1500).expect("request");
        b.push(buf).expect("room");
    }
    let first = port.tx_batch(&mut b);
    assert_eq!(
        first, 1,
        "a 30 KB frame takes 8-9 descriptors: one fits in 15"
    );
    model.write(regs::TCTL, regs::TCTL_EN | regs::TCTL_PSP);
    model.write(regs::TDT0, model.read(regs::TDT0));
    let mut rest = 0;
    for _ in 0..4 {
        rest += port.tx_batch(&mut b);
    }
    assert_eq!(rest, 2);
    let wire = model.take_wire();
    assert_eq!(wire.len(), 3 * (30_000usize - 54).div_ceil(1460));
    for seg in &wire {
        let a = |at: usize| Ipv4Addr::new(seg[at], seg[at + 1], seg[at + 2], seg[at + 3]);
        assert!(
            verify_tcp_v4(a(26), a(30), &seg[34..]),
            "a frame planned twice is prepared once"
        );
    }
}

/// Posts raw descriptors on queue 0 of a model brought up by hand, as a buggy driver
/// might, and lets the device process them.
#[test]
fn bad_context_descriptors_are_counted_and_the_ring_keeps_going() {
    use super::Dma;
    use regs::desc;
    let pool = Mempool::new(16, 4096).expect("pool");
    let model = IgbModel::new();
    let mut dma = ModelDma::new(&model, &pool);
    let mut ring = dma.alloc_ring(16 * 16).expect("ring");
    model.write(regs::CTRL, regs::CTRL_SLU);
    model.write(regs::MDIC, 0x0420_1340); // autoneg restart on PHY 1: link up
    let frame = tcp_frame_v4(1000);
    let mut buf = buf_of(&pool, &frame);
    let iova = dma.iova_of(buf.data_mut().as_ptr()).expect("mapped");
    let len = frame.len() as u32;
    let data = |cmd: u32, olinfo: u32| {
        u64::from(
            len | desc::TX_DTYP_DATA
                | desc::TX_CMD_DEXT
                | desc::TX_CMD_EOP
                | desc::TX_CMD_IFCS
                | desc::TX_CMD_RS
                | cmd,
        ) | u64::from(olinfo) << 32
    };
    let ctx = |macip: u32, tucmd: u32, mss_l4len: u32| {
        [
            u64::from(macip),
            u64::from(tucmd | desc::TX_DTYP_CTXT | desc::TX_CMD_DEXT) | u64::from(mss_l4len) << 32,
        ]
    };
    let tcp4 = desc::CTX_TUCMD_IPV4 | desc::CTX_TUCMD_L4T_TCP;
    let slots: Vec<[u64; 2]> = vec![
        // 1. Checksum asked for, no context ever written.
        [iova, data(0, len << 14 | desc::TX_OLINFO_TXSM)],
        // 2. TSO with MSS 0.
        ctx(20 | 14 << 9, tcp4, 20 << 8),
        [
            iova,
            data(desc::TX_CMD_TSE, (len - 54) << 14 | desc::TX_OLINFO_TXSM),
        ],
        // 3. A MACLEN of 2.
        ctx(20 | 2 << 9, tcp4, 0),
        [iova, data(0, len << 14 | desc::TX_OLINFO_TXSM)],
        // 4. TSO whose PAYLEN disagrees with the frame.
        ctx(20 | 14 << 9, tcp4, 536 << 16 | 20 << 8),
        [iova, data(desc::TX_CMD_TSE, 7 << 14 | desc::TX_OLINFO_TXSM)],
        // 5. A sound frame after all that: sent.
        [iova, data(0, len << 14)],
    ];
    for (i, s) in slots.iter().enumerate() {
        ring.write(i, 0, s[0]);
        ring.write(i, 1, s[1]);
    }
    let base = ring.iova();
    model.write(regs::TDBAL0, base as u32);
    model.write(regs::TDBAH0, (base >> 32) as u32);
    model.write(regs::TDLEN0, 16 * 16);
    model.write(regs::TXDCTL0, regs::XDCTL_ENABLE);
    model.write(regs::TCTL, regs::TCTL_EN);
    model.write(regs::TDT0, slots.len() as u32);
    assert_eq!(model.state().bad_contexts, 4);
    assert_eq!(
        model.take_wire(),
        vec![frame],
        "only the sound frame went out"
    );
    assert_eq!(
        model.read(regs::TDH0),
        slots.len() as u32,
        "every descriptor consumed"
    );
    drop(buf);
}

#[test]
fn model_rss_hash_matches_the_microsoft_verification_vectors() {
    // 66.9.149.187:2794 -> 161.142.100.80:1766, TCP: 0x51ccc178; IPv4 only: 0x323e8fc2.
    let (s, d) = (
        Ipv4Addr::new(66, 9, 149, 187),
        Ipv4Addr::new(161, 142, 100, 80),
    );
    let mut f = eth_ipv4(MODEL_MAC, s, d, 6, 20);
    f.extend_from_slice(&2794u16.to_be_bytes());
    f.extend_from_slice(&1766u16.to_be_bytes());
    f.extend_from_slice(&[0; 16]);
    f[46] = 0x50;
    let all = regs::MRQC_RSS_FIELD_IPV4 | regs::MRQC_RSS_FIELD_IPV4_TCP;
    let key = offload::rss::DEFAULT_KEY;
    assert_eq!(model_offload::rss(&f, all, &key), Some((1, 0x51cc_c178)));
    assert_eq!(
        model_offload::rss(&f, regs::MRQC_RSS_FIELD_IPV4, &key),
        Some((2, 0x323e_8fc2))
    );
    assert_eq!(model_offload::rss(&f, 0, &key), None);
    let p = model_offload::pseudo(IpAddr::V4(s), IpAddr::V4(d), 6, 20);
    assert_ne!(p, 0);
}

/// A small deterministic generator (xorshift64*), so the run can be repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random frames with random offload requests, biased towards almost-valid IP/TCP/UDP
/// layouts, through `tx_batch` into the model and back through `rx_batch`: nothing
/// panics, every frame is sent or counted, and the device never reads outside memory.
#[test]
fn random_frames_and_offload_requests_are_sent_or_counted_never_a_panic() {
    let big = Mempool::new(800, HEADROOM + 8 * 1024).expect("pool");
    let (model, mut port) = port_with(
        IgbConfig {
            queues: 2,
            ..cfg(2)
        },
        &big,
    );
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut offered = 0u64;
    for round in 0..400 {
        let mut b = Batch::new();
        for _ in 0..1 + rng.below(8) {
            let span = if rng.below(4) == 0 { 8000 } else { 1600 };
            let len = 14 + rng.below(span) as usize;
            let mut f: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if rng.below(4) != 0 {
                // Mostly IP: an EtherType, a version, a protocol that parse.
                let v4 = rng.below(2) == 0;
                let et: [u8; 2] = if v4 { [0x08, 0x00] } else { [0x86, 0xdd] };
                f[12..14].copy_from_slice(&et);
                if len > 24 {
                    f[14] = if v4 { 0x45 } else { 0x60 };
                    let proto = [6u8, 17, 1][rng.below(3) as usize];
                    f[if v4 { 23 } else { 20 }] = proto;
                }
            }
            let mut buf = buf_of(&big, &f);
            let m = &mut buf.meta.offload;
            let r = [rng.next(), rng.next(), rng.next(), rng.next(), rng.next()];
            m.flags = [0, NEEDS_CSUM, r[0] as u8][(r[0] >> 40) as usize % 3];
            m.gso_type = [0u8, 1, 3, 4, 5, r[1] as u8][(r[1] >> 40) as usize % 6];
            m.gso_size = [0u16, 536, 1460, r[2] as u16][(r[2] >> 40) as usize % 4];
            m.csum_start = [34u16, 54, 14, r[3] as u16][(r[3] >> 40) as usize % 4];
            m.csum_offset = [6u16, 16, 10, r[4] as u16][(r[4] >> 40) as usize % 4];
            b.push(buf).expect("room");
            offered += 1;
        }
        let mut tries = 0;
        while !b.is_empty() && tries < 10 {
            port.tx_batch(&mut b);
            tries += 1;
        }
        assert!(b.is_empty(), "round {round}: frames stuck");
        // Whatever went out comes back in (the filter takes frames to our MAC only).
        for mut f in model.take_wire() {
            if f.len() >= 14 {
                f[..6].copy_from_slice(&MODEL_MAC);
                let _ = model.receive(&f);
            }
        }
        let mut rx = Batch::new();
        while port.rx_batch(&mut rx) > 0 {
            rx.clear();
        }
    }
    let s = port.stats();
    let dropped = s.drop_count("tx_bad_length")
        + s.drop_count("tx_bad_offload")
        + s.drop_count("tx_no_buffer");
    assert_eq!(
        s.tx_packets + dropped,
        offered,
        "every frame sent or counted"
    );
    assert!(
        s.tx_packets > offered / 4,
        "most plain frames go out: {s:?}"
    );
    let o = port.offload_stats();
    assert!(
        o.tx_csum > 0 && o.tx_sw_csum > 0,
        "both checksum paths ran: {o:?}"
    );
    port.reclaim_tx();
    assert_eq!(port.tx_in_flight(), 0);
    assert_eq!(model.state().dma_faults, 0);
}
