//! Engine tests with in-memory ports: routing, encapsulation, classification and drop
//! counters, without sockets. The real sockets and taps are exercised by the
//! two-namespace integration tests.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::*;
use pkt::PortStats;

type Frames = Arc<Mutex<Vec<(Vec<u8>, Option<SocketAddr>)>>>;
type Queue = Arc<Mutex<VecDeque<(Vec<u8>, Option<SocketAddr>)>>>;

struct MemPort {
    name: String,
    kind: PortKind,
    pool: Mempool,
    rx: Queue,
    tx: Frames,
    tx_room: usize,
    offloads: pkt::Offloads,
    tails: Tails,
}

/// Received frames longer than `split` keep their bytes past it as an external tail
/// (as a guest port's zero-copy frames do); tokens come back in `ring`. `sent_tailed`
/// records, per frame sent, whether it still had a tail.
#[derive(Clone)]
struct Tails {
    split: Arc<Mutex<Option<usize>>>,
    ring: Arc<pkt::DoneRing>,
    sent_tailed: Arc<Mutex<Vec<bool>>>,
    /// Received frames ask for a partial checksum at (start, offset).
    csum: Arc<Mutex<Option<(u16, u16)>>>,
}

impl Default for Tails {
    fn default() -> Self {
        Self {
            split: Default::default(),
            ring: pkt::DoneRing::new(64),
            sent_tailed: Default::default(),
            csum: Default::default(),
        }
    }
}

impl Port for MemPort {
    fn name(&self) -> &str {
        &self.name
    }
    fn rx_batch(&mut self, batch: &mut Batch) -> usize {
        let mut n = 0;
        let mut q = self.rx.lock().unwrap();
        while !batch.is_full() {
            let Some((bytes, addr)) = q.pop_front() else {
                break;
            };
            let mut b = self.pool.alloc().unwrap();
            match *self.tails.split.lock().unwrap() {
                Some(at) if bytes.len() > at => {
                    b.extend_from_slice(&bytes[..at]).unwrap();
                    // Leaked: the bytes must outlive every holder of the tail.
                    let tail: &'static [u8] = Vec::leak(bytes[at..].to_vec());
                    let done = pkt::Completion::new(self.tails.ring.clone(), n as u32);
                    b.attach_ext(pkt::ExtSeg::from_static(tail, None, done));
                }
                _ => b.extend_from_slice(&bytes).unwrap(),
            }
            b.meta.addr = addr;
            if let Some((start, off)) = *self.tails.csum.lock().unwrap() {
                b.meta.offload.flags = offload::vnet_hdr::NEEDS_CSUM;
                b.meta.offload.csum_start = start;
                b.meta.offload.csum_offset = off;
            }
            batch.push(b).unwrap();
            n += 1;
        }
        n
    }
    fn tx_batch(&mut self, batch: &mut Batch) -> usize {
        let n = batch.len().min(self.tx_room);
        let mut out = self.tx.lock().unwrap();
        let tailed_ok = self.offloads.contains(pkt::Offloads::EXT_TAIL);
        for b in batch.iter().take(n) {
            assert!(
                tailed_ok || b.is_linear(),
                "{}: a port without EXT_TAIL was given a frame with a tail",
                self.name
            );
            let (head, tail) = b.parts();
            out.push(([head, tail].concat(), b.meta.addr));
            self.tails.sent_tailed.lock().unwrap().push(!b.is_linear());
        }
        batch.consume_front(n);
        n
    }
    fn caps(&self) -> pkt::PortCaps {
        pkt::PortCaps {
            kind: self.kind,
            mtu: 1500,
            rx_queues: 1,
            tx_queues: 1,
            offloads: self.offloads,
        }
    }
    fn stats(&self) -> PortStats {
        PortStats::default()
    }
    fn poll_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
}

struct Handles {
    rx: Queue,
    tx: Frames,
    tails: Tails,
}

fn port(pool: &Mempool, name: &str, kind: PortKind) -> (Box<dyn Port>, Handles) {
    port_with(pool, name, kind, usize::MAX, pkt::Offloads::NONE)
}

/// An in-memory port that takes at most `tx_room` frames per call and claims `offloads`.
fn port_with(
    pool: &Mempool,
    name: &str,
    kind: PortKind,
    tx_room: usize,
    offloads: pkt::Offloads,
) -> (Box<dyn Port>, Handles) {
    let h = Handles {
        rx: Default::default(),
        tx: Default::default(),
        tails: Tails::default(),
    };
    let p = MemPort {
        name: name.into(),
        kind,
        pool: pool.clone(),
        rx: Arc::clone(&h.rx),
        tx: Arc::clone(&h.tx),
        tx_room,
        offloads,
        tails: h.tails.clone(),
    };
    (Box::new(p), h)
}

const VM0: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
const VM1: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
const REMOTE: [u8; 6] = [0x52, 0x54, 0, 0, 0, 9];

fn frame(dst: [u8; 6], src: [u8; 6], fill: u8) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend(std::iter::repeat_n(fill, 46));
    f
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct World {
    engine: Engine,
    underlay: Handles,
    vm0: Handles,
    vm1: Handles,
}

/// Host with two interfaces vm0, vm1 and links `b` (vnetp) and `x` (vxlan 42).
fn world() -> World {
    let pool = Mempool::new(256, 2048).unwrap();
    let (up, underlay) = port(&pool, "udp", PortKind::Datagram);
    let mut engine = Engine::new("a", pool.clone(), up, Dispatch::Adaptive).unwrap();
    let (p0, vm0) = port(&pool, "vm0", PortKind::Ethernet);
    let (p1, vm1) = port(&pool, "vm1", PortKind::Ethernet);
    engine
        .add_interface("vm0", "tap", MacAddr(VM0), p0)
        .unwrap();
    engine
        .add_interface("vm1", "tap", MacAddr(VM1), p1)
        .unwrap();
    engine
        .add_link("b", sa("10.0.0.2:9000"), Encap::Vnetp)
        .unwrap();
    engine
        .add_link("x", sa("10.0.0.3:4789"), Encap::Vxlan { vni: 42 })
        .unwrap();
    World {
        engine,
        underlay,
        vm0,
        vm1,
    }
}

fn route(e: &mut Engine, src: &str, dst: &str, to: EndpointRef, from: Option<EndpointRef>) {
    let spec = RouteSpec {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        to,
        from,
    };
    e.add_route(&spec).unwrap();
}

fn link(n: &str) -> EndpointRef {
    EndpointRef::Link(n.into())
}

fn iface(n: &str) -> EndpointRef {
    EndpointRef::Interface(n.into())
}

#[test]
fn interface_frame_goes_out_on_vnetp_link_as_whole_frame() {
    let mut w = world();
    route(&mut w.engine, "any", "52:54:00:00:00:09", link("b"), None);
    let f = frame(REMOTE, VM0, 7);
    w.vm0.rx.lock().unwrap().push_back((f.clone(), None));
    assert_eq!(w.engine.poll_once(), 1);
    let sent = w.underlay.tx.lock().unwrap();
    assert_eq!(sent.as_slice(), &[(f, Some(sa("10.0.0.2:9000")))]);
    assert_eq!(w.engine.stats().links[0].counters.tx_packets, 1);
}

#[test]
fn vxlan_link_prepends_header_with_vni() {
    let mut w = world();
    route(&mut w.engine, "any", "52:54:00:00:00:09", link("x"), None);
    let f = frame(REMOTE, VM0, 1);
    w.vm0.rx.lock().unwrap().push_back((f.clone(), None));
    w.engine.poll_once();
    let sent = w.underlay.tx.lock().unwrap();
    let (bytes, addr) = &sent[0];
    assert_eq!(&bytes[..8], &[0x08, 0, 0, 0, 0, 0, 42, 0]);
    assert_eq!(&bytes[8..], f.as_slice());
    assert_eq!(*addr, Some(sa("10.0.0.3:4789")));
}

#[test]
fn datagram_from_link_is_decapsulated_and_routed_to_interface() {
    let mut w = world();
    route(
        &mut w.engine,
        "any",
        "52:54:00:00:00:01",
        iface("vm0"),
        None,
    );
    let f = frame(VM0, REMOTE, 3);
    let mut vx = vec![0x08, 0, 0, 0, 0, 0, 42, 0];
    vx.extend_from_slice(&f);
    {
        let mut q = w.underlay.rx.lock().unwrap();
        q.push_back((f.clone(), Some(sa("10.0.0.2:9000"))));
        q.push_back((vx, Some(sa("10.0.0.3:55555"))));
    }
    w.engine.poll_once();
    let got = w.vm0.tx.lock().unwrap();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|(b, _)| b == &f));
    let s = w.engine.stats();
    assert_eq!(s.links[0].counters.rx_packets, 1);
    assert_eq!(s.links[1].counters.rx_packets, 1);
}

#[test]
fn unknown_sender_wrong_vni_garbage_and_runts_are_counted() {
    let mut w = world();
    route(&mut w.engine, "any", "any", iface("vm0"), None);
    {
        let mut q = w.underlay.rx.lock().unwrap();
        q.push_back((frame(VM0, REMOTE, 0), Some(sa("10.0.0.7:9000")))); // unknown sender
        q.push_back((frame(VM0, REMOTE, 0), Some(sa("10.0.0.2:9001")))); // right IP, wrong port
        let mut vx43 = vec![0x08, 0, 0, 0, 0, 0, 43, 0];
        vx43.extend_from_slice(&frame(VM0, REMOTE, 0));
        q.push_back((vx43, Some(sa("10.0.0.3:4789")))); // wrong VNI
        q.push_back((vec![0xff; 5], Some(sa("10.0.0.3:4789")))); // truncated VXLAN
        q.push_back((
            vec![0x08, 0, 0, 0, 0, 0, 42, 0, 1, 2],
            Some(sa("10.0.0.3:4789")),
        )); // runt inner
        q.push_back((vec![1, 2, 3], Some(sa("10.0.0.2:9000")))); // runt vnetp
        q.push_back((frame(VM0, REMOTE, 0), None)); // no address
    }
    w.engine.poll_once();
    assert!(w.vm0.tx.lock().unwrap().is_empty());
    let d = w.engine.stats().drops;
    assert_eq!(d.rx_unknown_sender, 2);
    assert_eq!(d.rx_unknown_vni, 1);
    assert_eq!(d.rx_bad_vxlan, 1);
    assert_eq!(d.rx_runt, 2);
    assert_eq!(d.rx_no_address, 1);
}

#[test]
fn one_batch_from_interleaved_senders_is_classified_datagram_by_datagram() {
    // The engine remembers the last sender matched by address within a batch; a run
    // of one peer's datagrams must not leak its link to the datagrams around it.
    let mut w = world();
    w.engine
        .add_link("c", sa("10.0.0.4:9000"), Encap::Vnetp)
        .unwrap();
    route(
        &mut w.engine,
        "any",
        "52:54:00:00:00:01",
        iface("vm0"),
        None,
    );
    let b = sa("10.0.0.2:9000");
    let c = sa("10.0.0.4:9000");
    let vx = |fill| {
        let mut d = vec![0x08, 0, 0, 0, 0, 0, 42, 0];
        d.extend_from_slice(&frame(VM0, REMOTE, fill));
        d
    };
    let senders = [
        (frame(VM0, REMOTE, 1), Some(b)),
        (frame(VM0, REMOTE, 2), Some(b)),
        (frame(VM0, REMOTE, 3), Some(sa("10.0.0.2:9001"))), // same IP, other port
        (frame(VM0, REMOTE, 4), Some(b)),
        (vx(5), Some(sa("10.0.0.3:4789"))),
        (frame(VM0, REMOTE, 6), Some(c)),
        (vx(7), Some(sa("10.0.0.3:4789"))),
        (frame(VM0, REMOTE, 8), Some(b)),
    ];
    w.underlay.rx.lock().unwrap().extend(senders);
    assert_eq!(w.engine.poll_once(), 8);
    let got: Vec<u8> = w
        .vm0
        .tx
        .lock()
        .unwrap()
        .iter()
        .map(|(f, _)| f[14])
        .collect();
    assert_eq!(got, [1, 2, 4, 5, 6, 7, 8]);
    let s = w.engine.stats();
    let rx: Vec<u64> = s.links.iter().map(|l| l.counters.rx_packets).collect();
    assert_eq!(rx, [4, 2, 1], "links b, x, c");
    assert_eq!(s.drops.rx_unknown_sender, 1);
}

#[test]
fn broadcast_fans_out_to_all_but_arrival() {
    let mut w = world();
    for to in [iface("vm0"), iface("vm1"), link("b")] {
        route(&mut w.engine, "any", "ff:ff:ff:ff:ff:ff", to, None);
    }
    let f = frame([0xff; 6], VM0, 5);
    w.vm0.rx.lock().unwrap().push_back((f.clone(), None));
    w.engine.poll_once();
    assert!(w.vm0.tx.lock().unwrap().is_empty(), "no hairpin");
    assert_eq!(w.vm1.tx.lock().unwrap().len(), 1);
    assert_eq!(w.underlay.tx.lock().unwrap().len(), 1);
    assert_eq!(w.vm1.tx.lock().unwrap()[0].0, f);
}

#[test]
fn no_route_is_counted() {
    let mut w = world();
    w.vm0
        .rx
        .lock()
        .unwrap()
        .push_back((frame(REMOTE, VM0, 0), None));
    w.engine.poll_once();
    assert_eq!(w.engine.stats().drops.no_route, 1);
}

#[test]
fn unsent_frames_stay_queued_until_the_port_takes_them() {
    let pool = Mempool::new(256, 2048).unwrap();
    let (p, _h) = port_with(&pool, "u", PortKind::Datagram, 0, pkt::Offloads::NONE);
    let mut e = Engine::new("a", pool.clone(), p, Dispatch::Adaptive).unwrap();
    let (p0, vm0) = port(&pool, "vm0", PortKind::Ethernet);
    e.add_interface("vm0", "tap", MacAddr(VM0), p0).unwrap();
    e.add_link("b", sa("10.0.0.2:9000"), Encap::Vnetp).unwrap();
    route(&mut e, "any", "any", link("b"), None);
    vm0.rx
        .lock()
        .unwrap()
        .push_back((frame(REMOTE, VM0, 0), None));
    e.poll_once();
    assert!(e.pending_tx());
    assert_eq!(pool.available(), 255);
}

#[test]
fn control_commands_change_routes_at_run_time() {
    let mut w = world();
    let cmd = |s: &str| crate::control::parse_command(s).unwrap();
    assert!(
        w.engine
            .apply(cmd("route add src=any dst=52:54:00:00:00:09 to=link:b"))
            .is_ok()
    );
    w.vm0
        .rx
        .lock()
        .unwrap()
        .push_back((frame(REMOTE, VM0, 0), None));
    w.engine.poll_once();
    assert_eq!(w.underlay.tx.lock().unwrap().len(), 1);
    assert!(
        w.engine
            .apply(cmd("link del b"))
            .unwrap_err()
            .contains("used by 1 route")
    );
    assert!(
        w.engine
            .apply(cmd("route del src=any dst=52:54:00:00:00:09 to=link:b"))
            .is_ok()
    );
    w.vm0
        .rx
        .lock()
        .unwrap()
        .push_back((frame(REMOTE, VM0, 0), None));
    w.engine.poll_once();
    assert_eq!(
        w.underlay.tx.lock().unwrap().len(),
        1,
        "route removed: frame dropped"
    );
    assert_eq!(w.engine.stats().drops.no_route, 1);
    assert!(w.engine.apply(cmd("link del b")).is_ok());
    assert!(
        w.engine
            .apply(cmd("route add src=any dst=any to=link:b"))
            .unwrap_err()
            .contains("no link")
    );
    let list = w.engine.apply(cmd("link list")).unwrap();
    assert!(list.starts_with("x peer=10.0.0.3:4789"), "{list}");
    let json = w.engine.apply(cmd("stats json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["drops"]["no_route"], 1);
}

#[test]
fn vnetp_text_lines_add_links_and_routes() {
    let mut w = world();
    let cmd = |s: &str| crate::control::parse_command(s).unwrap();
    w.engine.apply(cmd("ADD 10.0.0.5 9000 udp")).unwrap();
    w.engine
        .apply(cmd("add any 52:54:00:00:00:09 edge 10.0.0.5:9000 any"))
        .unwrap();
    w.vm0
        .rx
        .lock()
        .unwrap()
        .push_back((frame(REMOTE, VM0, 0), None));
    w.engine.poll_once();
    assert_eq!(
        w.underlay.tx.lock().unwrap()[0].1,
        Some(sa("10.0.0.5:9000"))
    );
    let routes = w.engine.apply(cmd("route list")).unwrap();
    assert!(routes.contains("to=link:10.0.0.5:9000"), "{routes}");
}

#[test]
fn raw_underlay_refused_until_the_underlay_stack_exists() {
    let pool = Mempool::new(8, 2048).unwrap();
    let (p, _) = port(&pool, "raw", PortKind::Ethernet);
    assert!(matches!(
        Engine::new("a", pool, p, Dispatch::Adaptive),
        Err(EngineError::UnsupportedUnderlay(_))
    ));
}

#[test]
fn pool_buffers_all_return_after_traffic() {
    let mut w = world();
    route(
        &mut w.engine,
        "any",
        "ff:ff:ff:ff:ff:ff",
        iface("vm1"),
        None,
    );
    route(&mut w.engine, "any", "ff:ff:ff:ff:ff:ff", link("b"), None);
    for i in 0..200u8 {
        w.vm0
            .rx
            .lock()
            .unwrap()
            .push_back((frame([0xff; 6], VM0, i), None));
    }
    while w.engine.poll_once() > 0 {}
    assert_eq!(w.vm1.tx.lock().unwrap().len(), 200);
    assert_eq!(w.underlay.tx.lock().unwrap().len(), 200);
    assert_eq!(w.engine.stats().pool.available, 256);
}

#[test]
fn spoofed_source_mac_is_dropped_unless_allowed() {
    let mut w = world();
    route(&mut w.engine, "any", "any", link("b"), None);
    w.vm0
        .rx
        .lock()
        .unwrap()
        .push_back((frame(REMOTE, VM1, 0), None)); // vm0 claims vm1's MAC
    w.engine.poll_once();
    assert_eq!(w.engine.stats().drops.rx_spoofed, 1);
    assert!(w.underlay.tx.lock().unwrap().is_empty());
    if let Some(f) = w.engine.interfaces[0].as_mut() {
        f.anti_spoof = false;
    }
    w.vm0
        .rx
        .lock()
        .unwrap()
        .push_back((frame(REMOTE, VM1, 0), None));
    w.engine.poll_once();
    assert_eq!(w.underlay.tx.lock().unwrap().len(), 1);
}

#[test]
fn capture_writes_a_pcap_of_frames_at_the_endpoint() {
    let mut w = world();
    route(&mut w.engine, "any", "52:54:00:00:00:09", link("b"), None);
    let path = std::env::temp_dir().join(format!("vnetp-capture-{}.pcap", std::process::id()));
    let (tx, rx) = mpsc::channel();
    w.engine.handle(Request {
        cmd: crate::control::parse_command(&format!("capture link:b {} count 3", path.display()))
            .unwrap(),
        reply: tx,
    });
    for i in 0..5u8 {
        w.vm0
            .rx
            .lock()
            .unwrap()
            .push_back((frame(REMOTE, VM0, i), None));
    }
    w.engine.poll_once();
    w.engine.finish_capture_if_done();
    let answer = rx
        .try_recv()
        .expect("capture answered")
        .expect("capture ok");
    assert!(answer.starts_with("captured 3 frame(s)"), "{answer}");
    let file = std::fs::File::open(&path).unwrap();
    let mut r = pcap_file::pcap::PcapReader::new(file).unwrap();
    let mut fills = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        assert_eq!(&p.data[..6], &REMOTE);
        fills.push(p.data[20]);
    }
    assert_eq!(fills, vec![0, 1, 2]);
    let _ = std::fs::remove_file(&path);
}

struct MemFactory(Mempool);

impl InterfaceFactory for MemFactory {
    fn create(&mut self, cfg: &InterfaceConfig) -> Result<Box<dyn Port>, String> {
        if cfg.name == "broken" {
            return Err("no such device".into());
        }
        Ok(port(&self.0, &cfg.name, PortKind::Ethernet).0)
    }
}

#[test]
fn reload_applies_only_the_difference_and_refuses_bad_files_whole() {
    let pool = Mempool::new(256, 2048).unwrap();
    let (up, _underlay) = port(&pool, "udp", PortKind::Datagram);
    let dir = std::env::temp_dir().join(format!("vnetp-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("h.toml");
    let base = "[host]\nname = \"a\"\nunderlay = { kind = \"udp\", bind = \"10.0.0.1:9000\" }\n\n\
        [[link]]\nname = \"b\"\npeer = \"10.0.0.2:9000\"\n\n\
        [[interface]]\nname = \"vm0\"\nkind = \"tap\"\nmac = \"52:54:00:00:00:01\"\n\n\
        [[route]]\nsrc = \"any\"\ndst = \"any\"\nto = { link = \"b\" }\n";
    std::fs::write(&path, base).unwrap();
    let cfg = crate::config::load(&path).unwrap();
    let mut e = Engine::new("a", pool.clone(), up, Dispatch::Adaptive).unwrap();
    let mut f = MemFactory(pool.clone());
    for i in &cfg.interfaces {
        e.add_configured_interface(i, f.create(i).unwrap()).unwrap();
    }
    for l in &cfg.links {
        e.add_link(&l.name, l.peer, l.encap).unwrap();
    }
    for r in &cfg.routes {
        e.add_route(r).unwrap();
    }
    e.enable_reload(path.clone(), cfg, Box::new(MemFactory(pool.clone())));
    e.links.get_mut(0).unwrap().counters.tx_packets = 7; // marks the unchanged link

    // Add a link, an interface and a route.
    let grown = format!(
        "{base}\n[[link]]\nname = \"c\"\npeer = \"10.0.0.3:9000\"\n\n[[interface]]\nname = \"vm1\"\nkind = \"tap\"\nmac = \"52:54:00:00:00:02\"\n\n[[route]]\nsrc = \"any\"\ndst = \"ff:ff:ff:ff:ff:ff\"\nto = {{ interface = \"vm1\" }}\n"
    );
    std::fs::write(&path, &grown).unwrap();
    let out = e.reload().unwrap();
    assert_eq!(out, "reloaded: interfaces +1 -0, links +1 -0, routes +1 -0");
    assert_eq!(
        e.links.get(0).unwrap().counters.tx_packets,
        7,
        "unchanged link untouched"
    );
    assert_eq!(e.routes.len(), 2);

    // A bad file, or a port that cannot be created: nothing changes.
    std::fs::write(&path, "[host]\nname = \"a\"\nunderlay = 3\n").unwrap();
    assert!(e.reload().unwrap_err().contains("h.toml:3:"));
    let broken = format!(
        "{grown}\n[[interface]]\nname = \"broken\"\nkind = \"tap\"\nmac = \"52:54:00:00:00:03\"\n"
    );
    std::fs::write(&path, broken).unwrap();
    assert!(e.reload().unwrap_err().contains("nothing was changed"));
    assert_eq!(e.interface_list().count(), 2);

    // Back to the base file: c, vm1 and the broadcast route go away.
    std::fs::write(&path, base).unwrap();
    assert_eq!(
        e.reload().unwrap(),
        "reloaded: interfaces +0 -1, links +0 -1, routes +0 -1"
    );
    assert_eq!(e.links.len(), 1);

    // Changing an interface's MAC in place is refused.
    std::fs::write(&path, base.replace("00:00:00:01", "00:00:00:09")).unwrap();
    assert!(
        e.reload()
            .unwrap_err()
            .contains("changed its kind, MAC or MTU")
    );

    // Control-socket changes are undone by a reload: the file is the truth.
    e.apply(
        crate::control::parse_command("route add src=any dst=52:54:00:00:00:07 to=link:b").unwrap(),
    )
    .unwrap();
    std::fs::write(&path, base).unwrap();
    assert_eq!(
        e.reload().unwrap(),
        "reloaded: interfaces +0 -0, links +0 -0, routes +0 -1"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TCP/IPv4 frame from VM0 to REMOTE with `len` payload bytes and a full checksum.
fn tcp_frame(len: usize) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&REMOTE);
    f.extend_from_slice(&VM0);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (40 + len) as u16;
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0x40,
        0,
        64,
        6,
        0,
        0,
        10,
        0,
        0,
        1,
        10,
        0,
        0,
        2,
    ]);
    f.extend_from_slice(&[
        0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 7, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0,
    ]);
    f.extend((0..len).map(|i| (i % 251) as u8));
    let csum = offload::checksum::internet_checksum(&f[14..34], 0);
    f[24..26].copy_from_slice(&csum.to_be_bytes());
    let tcp = offload::checksum::tcp_checksum_v4(
        "10.0.0.1".parse().unwrap(),
        "10.0.0.2".parse().unwrap(),
        &f[34..],
    )
    .unwrap();
    f[50..52].copy_from_slice(&tcp.to_be_bytes());
    f
}

fn valid_tcp(f: &[u8]) -> bool {
    offload::checksum::verify_ipv4_header(&f[14..34])
        && offload::checksum::verify_tcp_v4(
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            &f[34..],
        )
}

fn big_world(link_mtu: usize, vm1_tso: bool) -> World {
    let pool = Mempool::new(512, 70_000).unwrap();
    let (up, underlay) = port(&pool, "udp", PortKind::Datagram);
    let mut engine = Engine::new("a", pool.clone(), up, Dispatch::Adaptive).unwrap();
    let (p0, vm0) = port(&pool, "vm0", PortKind::Ethernet);
    let offloads = if vm1_tso {
        pkt::Offloads::TSO4 | pkt::Offloads::TSO6
    } else {
        pkt::Offloads::NONE
    };
    let (p1, h1) = port_with(&pool, "vm1", PortKind::Ethernet, usize::MAX, offloads);
    engine
        .add_interface("vm0", "tap", MacAddr(VM0), p0)
        .unwrap();
    engine
        .add_interface("vm1", "tap", MacAddr(VM1), p1)
        .unwrap();
    let ep = engine
        .add_link("b", sa("10.0.0.2:9000"), Encap::Vnetp)
        .unwrap();
    engine.set_link_mtu(ep, link_mtu).unwrap();
    World {
        engine,
        underlay,
        vm0,
        vm1: h1,
    }
}

#[test]
fn tso_frame_to_a_1500_link_is_cut_into_valid_segments() {
    let mut w = big_world(1500, false);
    route(&mut w.engine, "any", "52:54:00:00:00:09", link("b"), None);
    let pool = w.engine.pool.clone();
    let mut b = pool.alloc().unwrap();
    b.extend_from_slice(&tcp_frame(20_000)).unwrap();
    let mut meta = offload::gso::tso_request(b.data_mut(), 1500).unwrap();
    meta.gso_size = 1448;
    b.meta.offload = meta;
    w.engine.route_frame(Endpoint::Interface(0), b);
    w.engine.flush();
    let sent = w.underlay.tx.lock().unwrap();
    assert_eq!(sent.len(), 20_000usize.div_ceil(1448));
    let mut payload = Vec::new();
    for (f, _) in sent.iter() {
        assert!(f.len() - 14 <= 1500, "{}", f.len());
        assert!(valid_tcp(f));
        payload.extend_from_slice(&f[54..]);
    }
    assert_eq!(payload, tcp_frame(20_000)[54..].to_vec());
}

#[test]
fn tso_frame_to_a_64k_link_travels_whole_with_a_full_checksum() {
    let mut w = big_world(65_000, false);
    route(&mut w.engine, "any", "52:54:00:00:00:09", link("b"), None);
    let pool = w.engine.pool.clone();
    let mut b = pool.alloc().unwrap();
    b.extend_from_slice(&tcp_frame(20_000)).unwrap();
    let mut meta = offload::gso::tso_request(b.data_mut(), 1500).unwrap();
    meta.gso_size = 1448;
    b.meta.offload = meta;
    w.engine.route_frame(Endpoint::Interface(0), b);
    w.engine.flush();
    let sent = w.underlay.tx.lock().unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, tcp_frame(20_000));
}

#[test]
fn large_frame_from_a_link_is_segmented_or_handed_over_as_tso() {
    for tso in [false, true] {
        let mut w = big_world(65_000, tso);
        route(
            &mut w.engine,
            "any",
            "52:54:00:00:00:02",
            iface("vm1"),
            None,
        );
        let mut f = tcp_frame(20_000);
        f[..6].copy_from_slice(&VM1);
        w.underlay
            .rx
            .lock()
            .unwrap()
            .push_back((f.clone(), Some(sa("10.0.0.2:9000"))));
        w.engine.poll_once();
        let got = w.vm1.tx.lock().unwrap();
        if tso {
            assert_eq!(got.len(), 1, "one TSO frame");
            assert_eq!(got[0].0.len(), f.len());
        } else {
            assert_eq!(got.len(), 20_000usize.div_ceil(1460));
            assert!(
                got.iter()
                    .all(|(s, _)| s.len() <= 1514
                        && offload::checksum::verify_ipv4_header(&s[14..34]))
            );
        }
    }
}

#[test]
fn interfaces_are_added_and_removed_at_run_time() {
    let mut w = world();
    let cmd = |s: &str| crate::control::parse_command(s).unwrap();
    assert!(
        w.engine
            .apply(cmd("interface add vm9 tap 52:54:00:00:00:99"))
            .unwrap_err()
            .contains("no device factory")
    );
    let pool = w.engine.pool.clone();
    w.engine.factory = Some(Box::new(MemFactory(pool)));
    w.engine
        .apply(cmd("interface add vm9 tap 52:54:00:00:00:99 mtu 9000"))
        .unwrap();
    assert!(
        w.engine
            .apply(cmd("interface add vm9 tap 52:54:00:00:00:98"))
            .unwrap_err()
            .contains("already in use")
    );
    assert!(
        w.engine
            .apply(cmd("interface add vm8 tap 52:54:00:00:00:99"))
            .unwrap_err()
            .contains("already used")
    );
    assert!(
        w.engine
            .apply(cmd("interface add broken tap 52:54:00:00:00:97"))
            .unwrap_err()
            .contains("no such device")
    );
    w.engine
        .apply(cmd("route add src=any dst=any to=interface:vm9"))
        .unwrap();
    assert!(
        w.engine
            .apply(cmd("interface del vm9"))
            .unwrap_err()
            .contains("used by 1 route")
    );
    w.engine
        .apply(cmd("route del src=any dst=any to=interface:vm9"))
        .unwrap();
    w.engine.apply(cmd("interface del vm9")).unwrap();
    assert_eq!(w.engine.interface_list().count(), 2);
}

/// A port whose poll fd (a pipe) stays readable until `clear_poll_fd` drains it, as a
/// vhost-user port's epoll set of kick eventfds does.
struct WakePort {
    name: String,
    rd: std::os::fd::OwnedFd,
    cleared: Arc<std::sync::atomic::AtomicUsize>,
}

impl Port for WakePort {
    fn name(&self) -> &str {
        &self.name
    }
    fn rx_batch(&mut self, _batch: &mut Batch) -> usize {
        0
    }
    fn tx_batch(&mut self, batch: &mut Batch) -> usize {
        let n = batch.len();
        batch.clear();
        n
    }
    fn caps(&self) -> pkt::PortCaps {
        pkt::PortCaps {
            kind: PortKind::Ethernet,
            mtu: 1500,
            rx_queues: 1,
            tx_queues: 1,
            offloads: pkt::Offloads::NONE,
        }
    }
    fn stats(&self) -> PortStats {
        PortStats::default()
    }
    fn poll_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        Some(self.rd.as_fd())
    }
    fn clear_poll_fd(&mut self) {
        let mut b = [0u8; 16];
        let _ = rustix::io::read(&self.rd, &mut b);
        self.cleared.fetch_add(1, Ordering::Relaxed);
    }
}

/// A [`WakePort`], the write end of its pipe and its count of clears.
fn wake_port(
    name: &str,
) -> (
    Box<dyn Port>,
    std::os::fd::OwnedFd,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    let (rd, wr) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::NONBLOCK).unwrap();
    let cleared = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let p = WakePort {
        name: name.into(),
        rd,
        cleared: Arc::clone(&cleared),
    };
    (Box::new(p), wr, cleared)
}

#[test]
fn only_the_port_whose_poll_fd_woke_the_engine_is_told_to_clear_it() {
    let pool = Mempool::new(64, 2048).unwrap();
    // The underlay and vm1 have no poll fd: they must not shift which port is told.
    let (up, _underlay) = port(&pool, "udp", PortKind::Datagram);
    let mut e = Engine::new("a", pool.clone(), up, Dispatch::Guest).unwrap();
    let (p0, _w0, cleared0) = wake_port("vm0");
    let (p1, _vm1) = port(&pool, "vm1", PortKind::Ethernet);
    let (p2, w2, cleared2) = wake_port("vm2");
    e.add_interface("vm0", "tap", MacAddr(VM0), p0).unwrap();
    e.add_interface("vm1", "tap", MacAddr(VM1), p1).unwrap();
    e.add_interface("vm2", "tap", MacAddr([0x52, 0x54, 0, 0, 0, 0x22]), p2)
        .unwrap();
    rustix::io::write(&w2, &[1]).unwrap();
    // Returns at once: vm2's fd is readable.
    let ready = e.wait(None, Duration::from_secs(10));
    assert_ne!(ready, 0);
    e.clear_ready(ready);
    assert_eq!(cleared0.load(Ordering::Relaxed), 0);
    assert_eq!(cleared2.load(Ordering::Relaxed), 1);
    // Cleared: nothing is readable any more.
    assert_eq!(e.wait(None, Duration::ZERO), 0);
}

/// A world whose vm0 hands out frames with an external tail after 64 bytes, with an
/// underlay and a vm1 that take tails as they are (`EXT_TAIL`) or not.
fn tail_world(ext_tail: bool) -> World {
    let pool = Mempool::new(256, 4096).unwrap();
    let offloads = if ext_tail {
        pkt::Offloads::EXT_TAIL
    } else {
        pkt::Offloads::NONE
    };
    let (up, underlay) = port_with(&pool, "udp", PortKind::Datagram, usize::MAX, offloads);
    let mut engine = Engine::new("a", pool.clone(), up, Dispatch::Adaptive).unwrap();
    let (p0, vm0) = port(&pool, "vm0", PortKind::Ethernet);
    let (p1, vm1) = port_with(&pool, "vm1", PortKind::Ethernet, usize::MAX, offloads);
    *vm0.tails.split.lock().unwrap() = Some(64);
    engine
        .add_interface("vm0", "vhost-user", MacAddr(VM0), p0)
        .unwrap();
    engine
        .add_interface("vm1", "vhost-user", MacAddr(VM1), p1)
        .unwrap();
    engine
        .add_link("b", sa("10.0.0.2:9000"), Encap::Vnetp)
        .unwrap();
    engine
        .add_link("x", sa("10.0.0.3:4789"), Encap::Vxlan { vni: 42 })
        .unwrap();
    World {
        engine,
        underlay,
        vm0,
        vm1,
    }
}

/// A 1400-byte frame from vm0 to `dst` with a payload that differs at every offset.
fn big_frame(dst: [u8; 6]) -> Vec<u8> {
    let mut f = frame(dst, VM0, 0);
    f.truncate(14);
    f.extend((0..1386u32).map(|i| (i * 7 + i / 251) as u8));
    f
}

#[test]
fn a_tailed_frame_reaches_ports_without_ext_tail_joined_and_byte_identical() {
    let mut w = tail_world(false);
    route(
        &mut w.engine,
        "any",
        "52:54:00:00:00:02",
        iface("vm1"),
        None,
    );
    route(&mut w.engine, "any", "52:54:00:00:00:09", link("x"), None);
    let to_vm1 = big_frame(VM1);
    let to_link = big_frame(REMOTE);
    w.vm0.rx.lock().unwrap().push_back((to_vm1.clone(), None));
    w.vm0.rx.lock().unwrap().push_back((to_link.clone(), None));
    assert_eq!(w.engine.poll_once(), 2);
    assert_eq!(w.vm1.tx.lock().unwrap()[0].0, to_vm1);
    let sent = w.underlay.tx.lock().unwrap();
    assert_eq!(
        &sent[0].0[8..],
        to_link.as_slice(),
        "after the VXLAN header"
    );
    assert_eq!(*w.vm1.tails.sent_tailed.lock().unwrap(), [false]);
    assert_eq!(*w.underlay.tails.sent_tailed.lock().unwrap(), [false]);
    // Joining released both tails to their owner at once.
    let mut back = [w.vm0.tails.ring.pop(), w.vm0.tails.ring.pop()];
    back.sort();
    assert_eq!(back, [Some(0), Some(1)]);
    let s = w.engine.stats();
    assert_eq!(
        s.interfaces[0].counters.rx_bytes,
        2 * 1400,
        "whole frames counted"
    );
    assert_eq!(s.links[1].counters.tx_bytes, 1400);
}

#[test]
fn a_tailed_frame_keeps_its_tail_to_ports_with_ext_tail() {
    let mut w = tail_world(true);
    route(
        &mut w.engine,
        "any",
        "52:54:00:00:00:02",
        iface("vm1"),
        None,
    );
    route(&mut w.engine, "any", "52:54:00:00:00:09", link("x"), None);
    let to_vm1 = big_frame(VM1);
    let to_link = big_frame(REMOTE);
    w.vm0.rx.lock().unwrap().push_back((to_vm1.clone(), None));
    w.vm0.rx.lock().unwrap().push_back((to_link.clone(), None));
    assert_eq!(w.engine.poll_once(), 2);
    assert_eq!(w.vm1.tx.lock().unwrap()[0].0, to_vm1);
    assert_eq!(&w.underlay.tx.lock().unwrap()[0].0[8..], to_link.as_slice());
    assert_eq!(*w.vm1.tails.sent_tailed.lock().unwrap(), [true]);
    assert_eq!(*w.underlay.tails.sent_tailed.lock().unwrap(), [true]);
    assert_eq!(w.engine.stats().drops.tx_linearize_failed, 0);
}

#[test]
fn a_partial_checksum_is_completed_over_the_tail_where_it_lies() {
    let mut w = tail_world(true);
    route(&mut w.engine, "any", "52:54:00:00:00:09", link("b"), None);
    let whole = tcp_frame(1400);
    let mut f = whole.clone();
    f[..6].copy_from_slice(&REMOTE);
    f[6..12].copy_from_slice(&VM0);
    // Zero the TCP checksum, leaving the pseudo-header sum as a guest would.
    let expect = f.clone();
    let (start, off) = (34usize, 16usize);
    let ip = &f[14..34];
    let src = std::net::Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = std::net::Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let l4_len = (f.len() - start) as u16;
    let pseudo = offload::checksum::pseudo_header_v4(src, dst, 6, l4_len);
    f[start + off..start + off + 2]
        .copy_from_slice(&offload::checksum::fold(pseudo.into()).to_be_bytes());
    assert_ne!(f, expect);
    // Ask for the checksum through the offload metadata of the port's frame.
    w.vm0.tails.split.lock().unwrap().replace(65);
    w.vm0.rx.lock().unwrap().push_back((f, None));
    *w.vm0.tails.csum.lock().unwrap() = Some((start as u16, off as u16));
    assert_eq!(w.engine.poll_once(), 1);
    let sent = w.underlay.tx.lock().unwrap();
    assert_eq!(sent[0].0, expect, "checksum as over the joined frame");
    assert_eq!(*w.underlay.tails.sent_tailed.lock().unwrap(), [true]);
}
