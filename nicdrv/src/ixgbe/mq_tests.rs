//! Multiqueue and RSS tests of the 82599 driver against the model: the registers RSS
//! needs, steering by Toeplitz hash and redirection table, round-robin draining, a
//! transmit queue per flow, and the per-queue counters.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use pkt::{Batch, Port};

use super::model::{IxgbeModel, MODEL_MAC, RxOutcome};
use super::regs::{self, stats};
use super::tests::{ModelPort, healthy, pool, port_with};
use super::{IxgbeConfig, IxgbeError, IxgbePort, model::ModelDma};
use crate::igb::Registers;

const DPORT: u16 = 4789;

fn mq(queues: usize) -> IxgbeConfig {
    IxgbeConfig {
        rx_ring: 64,
        tx_ring: 64,
        queues,
        ..IxgbeConfig::default()
    }
}

/// A UDP/IPv4 frame to our MAC: 10.0.0.`src`:`sport` -> 10.0.0.2:4789, `seq` in the
/// payload, no UDP checksum.
fn udp_flow(src: u8, sport: u16, seq: u32) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 20 + 8 + 8);
    f.extend_from_slice(&MODEL_MAC);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00]);
    let mut ip = [
        0x45, 0, 0, 36, 0, 1, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, src, 10, 0, 0, 2,
    ];
    let c = pkt::wire::checksum::internet_checksum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&DPORT.to_be_bytes());
    f.extend_from_slice(&[0, 16, 0, 0]);
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&[0xab; 4]);
    f
}

/// The queue the device should pick for a flow, computed without the driver's or the
/// model's parser: the RSS specification's hash of the 4-tuple, the low 7 bits
/// indexing a table whose entry i is i mod `queues`.
fn expected_queue(src: u8, sport: u16, queues: usize) -> usize {
    let h = offload::rss::flow_hash(
        &offload::rss::DEFAULT_KEY,
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, src)),
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        Some((sport, DPORT)),
    );
    (h & 0x7f) as usize % queues
}

fn rx_counts(port: &ModelPort) -> Vec<u64> {
    (0..port.queues())
        .map(|q| port.queue_stats(q).expect("queue").rx_packets)
        .collect()
}

fn seq_of(frame: &[u8]) -> u32 {
    u32::from_be_bytes([frame[42], frame[43], frame[44], frame[45]])
}

#[test]
fn multiqueue_init_programs_rss_key_reta_mrqc_and_enables_every_queue() {
    let pool = pool(1024);
    let (model, port) = port_with(mq(4), &pool);
    healthy(&model);
    assert_eq!(port.queues(), 4);
    assert_eq!(port.caps().rx_queues, 4);
    assert_eq!(port.caps().tx_queues, 4);
    let r = |o| model.peek(o);
    assert_eq!(r(regs::MRQC), regs::MRQC_RSSEN | regs::MRQC_RSS_FIELDS);
    assert_ne!(r(regs::RXCSUM) & regs::RXCSUM_PCSD, 0);
    let key = offload::rss::DEFAULT_KEY;
    for n in 0..regs::RSSRK_REGS {
        let at = 4 * n as usize;
        assert_eq!(r(regs::rssrk(n)).to_le_bytes(), key[at..at + 4], "RSSRK{n}");
    }
    let entries: Vec<u32> = (0..regs::RETA_REGS)
        .flat_map(|n| r(regs::reta(n)).to_le_bytes())
        .map(u32::from)
        .collect();
    assert_eq!(entries.len(), 128);
    assert!(entries.iter().enumerate().all(|(i, &e)| e == i as u32 % 4));
    for q in 0..4 {
        assert_ne!(r(regs::rxdctl(q)) & regs::XDCTL_ENABLE, 0, "rx {q}");
        assert_ne!(r(regs::txdctl(q)) & regs::XDCTL_ENABLE, 0, "tx {q}");
        assert_ne!(r(regs::rdlen(q)), 0);
        assert_ne!(r(regs::tdlen(q)), 0);
    }
    // Queue 4 was never touched.
    assert_eq!(r(regs::rdlen(4)), 0);
    let enabled = model
        .state()
        .steps
        .iter()
        .filter(|s| **s == super::model::InitStep::RxQueueEnabled)
        .count();
    assert_eq!(enabled, 4);
    drop(port);
    // The single-queue port leaves RSS off.
    let (model, _port) = port_with(mq(1), &pool);
    assert_eq!(model.peek(regs::MRQC), 0);
}

#[test]
fn rss_steers_each_udp_flow_to_the_queue_its_toeplitz_hash_selects() {
    let pool = pool(1024);
    let (model, mut port) = port_with(mq(4), &pool);
    let mut queue_of_flow: BTreeMap<u16, usize> = BTreeMap::new();
    let mut batch = Batch::new();
    for round in 0..3u32 {
        for i in 0..48u16 {
            let sport = 40_000 + 7 * i;
            assert_eq!(
                model.receive(&udp_flow(1, sport, round)),
                RxOutcome::Delivered
            );
            let before = rx_counts(&port);
            assert_eq!(port.rx_batch(&mut batch), 1);
            let after = rx_counts(&port);
            let q = (0..4)
                .find(|&q| after[q] != before[q])
                .expect("a queue moved");
            assert_eq!(q, expected_queue(1, sport, 4), "flow {sport}");
            assert_eq!(
                *queue_of_flow.entry(sport).or_insert(q),
                q,
                "flow {sport} moved"
            );
            let got = batch.drain().next().expect("frame");
            assert_eq!(seq_of(got.data()), round);
        }
    }
    let used: BTreeSet<usize> = queue_of_flow.values().copied().collect();
    assert_eq!(used.len(), 4, "48 flows over 4 queues used {used:?}");
    // The driver's per-queue counts, the model's and the device's QPRC agree.
    let counts = rx_counts(&port);
    let st_counts = model.state().rx_per_queue;
    for q in 0..4 {
        assert_eq!(counts[q], st_counts[q]);
        assert_eq!(
            u64::from(model.read(stats::qprc(q as u32))),
            counts[q],
            "QPRC{q}"
        );
    }
    assert_eq!(counts.iter().sum::<u64>(), 144);
    healthy(&model);
}

#[test]
fn frames_without_a_hashable_flow_go_to_queue_zero() {
    let pool = pool(1024);
    let (model, mut port) = port_with(mq(4), &pool);
    // An ARP-like frame (EtherType 0x0806) to our MAC.
    let mut f = udp_flow(1, 1, 0);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    for _ in 0..5 {
        assert_eq!(model.receive(&f), RxOutcome::Delivered);
    }
    let mut batch = Batch::new();
    assert_eq!(port.rx_batch(&mut batch), 5);
    assert_eq!(rx_counts(&port), vec![5, 0, 0, 0]);
}

#[test]
fn rx_batch_drains_every_queue_round_robin_keeping_each_queue_in_order() {
    let pool = pool(1024);
    let (model, mut port) = port_with(mq(4), &pool);
    // 20 frames for each queue: pick one flow per queue.
    let mut flow_for = [None; 4];
    let mut sport = 1000u16;
    while flow_for.iter().any(Option::is_none) {
        flow_for[expected_queue(9, sport, 4)].get_or_insert(sport);
        sport += 1;
    }
    for seq in 0..20 {
        for s in flow_for.iter().flatten() {
            assert_eq!(model.receive(&udp_flow(9, *s, seq)), RxOutcome::Delivered);
        }
    }
    let mut seen: BTreeMap<u16, Vec<u32>> = BTreeMap::new();
    let mut calls = 0;
    let mut total = 0;
    let mut first_queues = Vec::new();
    while total < 80 {
        let mut batch = Batch::new();
        let before = rx_counts(&port);
        let n = port.rx_batch(&mut batch);
        assert!(n > 0, "frames left behind after {total}");
        let after = rx_counts(&port);
        first_queues.push((0..4).filter(|&q| after[q] > before[q]).collect::<Vec<_>>());
        for b in batch.drain() {
            let d = b.data();
            seen.entry(u16::from_be_bytes([d[34], d[35]]))
                .or_default()
                .push(seq_of(d));
        }
        total += n;
        calls += 1;
    }
    // 80 frames in batches of 64 take two calls; the second starts at queue 1, so
    // queue 0's frames wait behind nobody and the rest are not starved.
    assert_eq!(calls, 2, "{first_queues:?}");
    assert_eq!(first_queues[0], vec![0, 1, 2, 3]);
    for s in flow_for.iter().flatten() {
        assert_eq!(
            seen[s],
            (0..20).collect::<Vec<_>>(),
            "flow {s} out of order"
        );
    }
    healthy(&model);
}

#[test]
fn tx_keeps_each_flow_on_one_queue_and_spreads_flows_with_a_doorbell_per_queue() {
    let pool = pool(1024);
    let (model, mut port) = port_with(mq(4), &pool);
    let mut used = BTreeSet::new();
    for i in 0..32u16 {
        let sport = 50_000 + 13 * i;
        let frames: Vec<Vec<u8>> = (0..4).map(|s| udp_flow(3, sport, s)).collect();
        let mut batch = Batch::new();
        for f in &frames {
            let mut b = pool.alloc().expect("buffer");
            b.extend_from_slice(f).expect("fits");
            batch.push(b).expect("room");
        }
        let (before, bells) = {
            let st = model.state();
            (st.tx_per_queue, st.tx_doorbells)
        };
        assert_eq!(port.tx_batch(&mut batch), 4);
        let st = model.state();
        let moved: Vec<usize> = (0..4)
            .filter(|&q| st.tx_per_queue[q] != before[q])
            .collect();
        assert_eq!(moved.len(), 1, "flow {sport} spread over {moved:?}");
        assert_eq!(st.tx_per_queue[moved[0]] - before[moved[0]], 4);
        assert_eq!(st.tx_doorbells - bells, 1, "one TDT write for one queue");
        used.insert(moved[0]);
        drop(st);
        assert_eq!(model.take_wire(), frames, "flow {sport} reordered");
        port.reclaim_tx();
    }
    assert_eq!(used.len(), 4, "32 flows used queues {used:?}");
    let st_counts = model.state().tx_per_queue;
    for (q, &model_count) in st_counts.iter().enumerate().take(4) {
        let s = port.queue_stats(q).expect("queue");
        assert_eq!(s.tx_packets, model_count);
        assert_eq!(u64::from(model.read(stats::qptc(q as u32))), s.tx_packets);
    }
    assert_eq!(port.stats().tx_packets, 128);
    assert_eq!(port.tx_in_flight(), 0);

    // A batch mixing every flow rings each touched queue's doorbell once.
    let mut batch = Batch::new();
    for i in 0..32u16 {
        let mut b = pool.alloc().expect("buffer");
        b.extend_from_slice(&udp_flow(3, 50_000 + 13 * i, 9))
            .expect("fits");
        batch.push(b).expect("room");
    }
    let bells = model.state().tx_doorbells;
    assert_eq!(port.tx_batch(&mut batch), 32);
    assert_eq!(model.state().tx_doorbells - bells, 4);
    assert_eq!(model.take_wire().len(), 32);
    healthy(&model);
}

#[test]
fn queue_counts_outside_one_to_four_are_clear_errors() {
    let pool = pool(1024);
    for queues in [0, 5] {
        let model = IxgbeModel::new();
        let dma = ModelDma::new(&model, &pool);
        match IxgbePort::new("q", model.clone(), dma, pool.clone(), mq(queues)) {
            Err(IxgbeError::Config(m)) => assert!(m.contains("queues"), "{m}"),
            other => panic!("queues = {queues}: {other:?}"),
        }
    }
    // Four queues of 512 descriptors need more buffers than a 1024-buffer pool has.
    let model = IxgbeModel::new();
    let dma = ModelDma::new(&model, &pool);
    let cfg = IxgbeConfig {
        queues: 4,
        ..IxgbeConfig::default()
    };
    match IxgbePort::new("q", model, dma, pool.clone(), cfg) {
        Err(IxgbeError::Pool(m)) => assert!(m.contains("fewer queues"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_queue_that_never_enables_fails_init_with_every_queue_stopped() {
    let pool = pool(1024);
    let model = IxgbeModel::new();
    model.state().tx_enable_stuck = true;
    let dma = ModelDma::new(&model, &pool);
    match IxgbePort::new("stuck", model.clone(), dma, pool.clone(), mq(2)) {
        Err(IxgbeError::Timeout { step, .. }) => assert!(step.contains("TXDCTL"), "{step}"),
        other => panic!("{other:?}"),
    }
    // The receive queues were live; the failed init stopped them and the receiver
    // before their rings were freed.
    assert_eq!(model.peek(regs::RXCTRL) & regs::RXCTRL_RXEN, 0);
    for q in 0..2 {
        assert_eq!(
            model.peek(regs::rxdctl(q)) & regs::XDCTL_ENABLE,
            0,
            "rx {q}"
        );
    }
    let f = udp_flow(1, 1, 0);
    assert_eq!(model.receive(&f), RxOutcome::Filtered);
    assert_eq!(model.state().dma_faults, 0);
}
