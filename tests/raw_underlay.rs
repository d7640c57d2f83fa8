//! Raw L2 underlays: `vnetp run` with `underlay = { kind = "af_packet" | "af_xdp", ... }` in
//! network namespaces, speaking its own ARP/ND, IPv4/IPv6 and UDP on a veth whose
//! kernel side has no address (vnetp owns the underlay address). Peers are other vnetp
//! daemons, the Linux kernel's VXLAN device, and a kernel router between two subnets.
//! Needs root (CI runs as root).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

mod common;

use common::{exe, ping, stats, tcp_copy, u};
use vnetp::netns::{self, Daemon, LinkEncap, Netns, Side, TwoHosts};

fn dir(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("vnetp-raw-{tag}-{}", std::process::id()))
}

fn hosts(tag: &str, index: u8, ipv6: bool) -> TwoHosts {
    assert!(
        netns::is_root(),
        "the raw underlay tests need root (network namespaces, veth, AF_PACKET): run them with sudo"
    );
    TwoHosts::new(
        &format!("vr{index}-{}", std::process::id()),
        index,
        ipv6,
        &dir(tag),
    )
    .expect("build the two hosts")
}

/// Takes the underlay address away from the kernel: vnetp answers for it.
fn release_to_vnetp(ns: &Netns, ifname: &str) {
    ns.ip(&["addr", "flush", "dev", ifname])
        .expect("flush addresses");
}

fn port_of(encap: LinkEncap) -> u16 {
    match encap {
        LinkEncap::Vnetp => 9000,
        LinkEncap::Vxlan(_) => 4789,
    }
}

fn sockaddr(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// A config with an af_packet underlay on `ifname`, one link to `peer_ip`, one tap.
fn raw_config(
    name: &str,
    socket: &Path,
    (kind, ifname): (&str, &str),
    me: &Side,
    gateway: Option<&str>,
    (peer_ip, peer_mac): (&str, &str),
    encap: LinkEncap,
) -> String {
    let port = port_of(encap);
    let mut s = String::new();
    let _ = writeln!(s, "[host]\nname = \"{name}\"");
    let gw = gateway.map_or(String::new(), |g| format!(", gateway = \"{g}\""));
    let _ = writeln!(
        s,
        "underlay = {{ kind = \"{kind}\", ifname = \"{ifname}\", ip = \"{}\", port = {port}{gw} }}",
        me.underlay_ip
    );
    let _ = writeln!(s, "control = \"{}\"\n", socket.display());
    let _ = writeln!(
        s,
        "[[link]]\nname = \"peer\"\npeer = \"{}\"",
        sockaddr(peer_ip, port)
    );
    match encap {
        LinkEncap::Vnetp => s.push_str("encap = \"vnetp\"\n\n"),
        LinkEncap::Vxlan(vni) => {
            let _ = writeln!(s, "encap = \"vxlan\"\nvni = {vni}\n");
        }
    }
    let _ = writeln!(
        s,
        "[[interface]]\nname = \"vm0\"\nkind = \"tap\"\nifname = \"{}\"\nmac = \"{}\"\n",
        me.tap, me.mac
    );
    for (dst, to) in [
        (peer_mac, "{ link = \"peer\" }"),
        ("ff:ff:ff:ff:ff:ff", "{ link = \"peer\" }"),
        (me.mac.as_str(), "{ interface = \"vm0\" }"),
        ("ff:ff:ff:ff:ff:ff", "{ interface = \"vm0\" }"),
    ] {
        let _ = writeln!(s, "[[route]]\nsrc = \"any\"\ndst = \"{dst}\"\nto = {to}\n");
    }
    s
}

fn start(h: &TwoHosts, ns: &Netns, name: &str, config: &str) -> Daemon {
    h.start_daemon(ns, name, config, exe())
        .unwrap_or_else(|e| panic!("daemon {name}: {e}"))
}

const AF_PACKET: &str = "af_packet";
const AF_XDP: &str = "af_xdp";

/// Both hosts are vnetp on `kind` underlays (no kernel address on either veth).
fn both_raw(kind: &str, tag: &str, index: u8, ipv6: bool, encap: LinkEncap) {
    let h = hosts(tag, index, ipv6);
    release_to_vnetp(&h.a, "ul0");
    release_to_vnetp(&h.b, "ul0");
    let (sa, sb) = (&h.side_a, &h.side_b);
    let ca = raw_config(
        "a",
        &h.socket("a"),
        (kind, "ul0"),
        sa,
        None,
        (&sb.underlay_ip, &sb.mac),
        encap,
    );
    let cb = raw_config(
        "b",
        &h.socket("b"),
        (kind, "ul0"),
        sb,
        None,
        (&sa.underlay_ip, &sa.mac),
        encap,
    );
    let da = start(&h, &h.a, "a", &ca);
    let db = start(&h, &h.b, "b", &cb);
    h.address_tap(&h.a, sa).expect("tap a");
    h.address_tap(&h.b, sb).expect("tap b");
    ping(&h.a, &sb.overlay_ip);
    ping(&h.b, &sa.overlay_ip);
    // Full-size TCP segments (tap MTU 1500) exceed the 1500-byte underlay once
    // encapsulated: this also moves fragmented outer packets both ways.
    tcp_copy(&h.dir, &h.a, &h.b, &sb.overlay_ip);
    // A sent the data (over 2900 full-size segments), B acknowledged it (fewer
    // frames: delayed ACKs, tap GRO).
    let (sa, sb) = (stats(&da), stats(&db));
    for (s, dir) in [(&sa, "tx_packets"), (&sb, "rx_packets")] {
        assert!(u(&s["links"][0][dir]) > 2000, "{dir}: {s}");
    }
    for (s, dir) in [(&sa, "rx_packets"), (&sb, "tx_packets")] {
        assert!(u(&s["links"][0][dir]) > 200, "{dir}: {s}");
    }
    for s in [sa, sb] {
        assert_eq!(s["drops"]["rx_unknown_sender"], 0, "{s}");
        let d = &s["underlay"]["drops"];
        for name in [
            "rx_bad_checksum",
            "rx_frag_overlap",
            "rx_frag_inconsistent",
            "tx_bad_header",
        ] {
            assert_eq!(u(&d[name]), 0, "{name}: {s}");
        }
    }
}

#[test]
fn ping_and_tcp_over_af_packet_vnetp_encap_ipv4() {
    both_raw(AF_PACKET, "packetvnetp4", 31, false, LinkEncap::Vnetp);
}

#[test]
fn ping_and_tcp_over_af_packet_vxlan_encap_ipv4() {
    both_raw(AF_PACKET, "packetvxlan4", 32, false, LinkEncap::Vxlan(42));
}

#[test]
fn ping_and_tcp_over_af_packet_vnetp_encap_ipv6() {
    both_raw(AF_PACKET, "packetvnetp6", 33, true, LinkEncap::Vnetp);
}

#[test]
fn ping_and_tcp_over_af_packet_vxlan_encap_ipv6() {
    both_raw(AF_PACKET, "packetvxlan6", 34, true, LinkEncap::Vxlan(7));
}

#[test]
fn ping_and_tcp_over_af_xdp_vnetp_encap_ipv4() {
    // 59, not 51: tests/shards.rs uses 50 and 51.
    both_raw(AF_XDP, "xdpvnetp4", 59, false, LinkEncap::Vnetp);
}

#[test]
fn ping_and_tcp_over_af_xdp_vxlan_encap_ipv4() {
    both_raw(AF_XDP, "xdpvxlan4", 52, false, LinkEncap::Vxlan(42));
}

#[test]
fn ping_and_tcp_over_af_xdp_vnetp_encap_ipv6() {
    both_raw(AF_XDP, "xdpvnetp6", 53, true, LinkEncap::Vnetp);
}

#[test]
fn ping_and_tcp_over_af_xdp_vxlan_encap_ipv6() {
    both_raw(AF_XDP, "xdpvxlan6", 54, true, LinkEncap::Vxlan(7));
}

/// Host B is the Linux kernel's VXLAN device over its own IP stack; host A is vnetp on
/// a `kind` underlay. B's VXLAN MTU is 1500 over a 1500-byte underlay (no `dev`,
/// so the kernel does not cap the MTU at 1450), so B's kernel fragments full-size
/// frames (vnetp reassembles) and vnetp fragments its own (B's kernel reassembles).
fn kernel_vxlan_peer(kind: &str, tag: &str, index: u8) -> (TwoHosts, Daemon) {
    let h = hosts(tag, index, false);
    release_to_vnetp(&h.a, "ul0");
    let (sa, sb) = (&h.side_a, &h.side_b);
    let vni = 4242;
    let cfg = raw_config(
        "a",
        &h.socket("a"),
        (kind, "ul0"),
        sa,
        None,
        (&sb.underlay_ip, &sb.mac),
        LinkEncap::Vxlan(vni),
    );
    let da = start(&h, &h.a, "a", &cfg);
    h.address_tap(&h.a, sa).expect("tap a");
    // Over veth, the kernel leaves an inner TCP checksum "partial" for the (absent)
    // hardware to fill, and a VXLAN tunnel carries it unfilled: a real NIC would have
    // computed it. Make B's kernel compute it, as it does for a NIC without offload.
    h.b.exec(&["ethtool", "-K", "ul0", "tx", "off"])
        .expect("ethtool");
    let vni_s = vni.to_string();
    h.b.ip(&[
        "link",
        "add",
        &sb.tap,
        "type",
        "vxlan",
        "id",
        &vni_s,
        "remote",
        &sa.underlay_ip,
        "local",
        &sb.underlay_ip,
        "dstport",
        "4789",
    ])
    .expect("kernel vxlan");
    h.b.ip(&["link", "set", &sb.tap, "address", &sb.mac, "mtu", "1500"])
        .expect("vxlan mac and mtu");
    h.b.ip(&[
        "addr",
        "add",
        &format!("{}/24", sb.overlay_ip),
        "dev",
        &sb.tap,
    ])
    .expect("vxlan addr");
    h.b.ip(&["link", "set", &sb.tap, "up"]).expect("vxlan up");
    (h, da)
}

#[test]
fn interoperates_with_linux_kernel_vxlan_with_fragmentation_both_ways_af_packet() {
    kernel_vxlan_interop(AF_PACKET, "kvx", 35);
}

#[test]
fn interoperates_with_linux_kernel_vxlan_with_fragmentation_both_ways_af_xdp() {
    kernel_vxlan_interop(AF_XDP, "xdpkvx", 55);
}

fn kernel_vxlan_interop(kind: &str, tag: &str, index: u8) {
    let (h, da) = kernel_vxlan_peer(kind, tag, index);
    ping(&h.a, &h.side_b.overlay_ip);
    ping(&h.b, &h.side_a.overlay_ip);
    tcp_copy(&h.dir, &h.a, &h.b, &h.side_b.overlay_ip);
    tcp_copy(&h.dir, &h.b, &h.a, &h.side_a.overlay_ip);
    // TCP sets DF, so B's kernel soon lowers its path MTU instead of fragmenting.
    // Full-size echo requests without DF are fragmented by B's kernel for every
    // packet (vnetp reassembles), and the full-size replies by vnetp (B reassembles).
    let snmp = || h.b.exec(&["cat", "/proc/net/snmp"]).expect("snmp");
    let before = snmp();
    let out =
        h.b.exec(&[
            "ping",
            "-M",
            "dont",
            "-s",
            "1472",
            "-c",
            "20",
            "-i",
            "0.05",
            "-w",
            "60",
            &h.side_a.overlay_ip,
        ])
        .expect("full-size ping");
    // Every one of the 20 answered, however late (see common::ping: ping's own loss
    // figure gives up on a reply 50 ms after the last request once it has any).
    assert_eq!(common::answered(&out, 20), 20, "{out}");
    let after = snmp();
    let delta = |f: &str| snmp_field(&after, "Ip", f) - snmp_field(&before, "Ip", f);
    assert!(
        delta("FragOKs") >= 20,
        "B's kernel fragmented:\n{before}\n{after}"
    );
    assert!(
        delta("ReasmOKs") >= 20,
        "B's kernel reassembled:\n{before}\n{after}"
    );
    let s = stats(&da);
    assert!(u(&s["links"][0]["rx_packets"]) > 1000, "{s}");
    let d = &s["underlay"]["drops"];
    for name in [
        "rx_bad_checksum",
        "rx_frag_overlap",
        "rx_frag_inconsistent",
        "rx_frag_timeout",
    ] {
        assert_eq!(u(&d[name]), 0, "{name}: {s}");
    }
}

/// A field of /proc/net/snmp (a header line and a value line per protocol).
fn snmp_field(snmp: &str, proto: &str, field: &str) -> u64 {
    let prefix = format!("{proto}:");
    let mut lines = snmp.lines().filter(|l| l.starts_with(&prefix));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == field)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn underlay_address_answers_arp_nd_and_ping_from_the_kernel() {
    for (kind, index, ipv6) in [
        (AF_PACKET, 36u8, false),
        (AF_PACKET, 37, true),
        (AF_XDP, 56, false),
        (AF_XDP, 57, true),
    ] {
        let h = hosts(&format!("arp{index}"), index, ipv6);
        release_to_vnetp(&h.a, "ul0");
        let (sa, sb) = (&h.side_a, &h.side_b);
        let cfg = raw_config(
            "a",
            &h.socket("a"),
            (kind, "ul0"),
            sa,
            None,
            (&sb.underlay_ip, &sb.mac),
            LinkEncap::Vnetp,
        );
        let mut da = start(&h, &h.a, "a", &cfg);
        // The kernel of B resolves A's underlay address (ARP or ND) and pings it.
        ping(&h.b, &sa.underlay_ip);
        let mac_a =
            h.a.exec(&["cat", "/sys/class/net/ul0/address"])
                .expect("mac");
        let neigh =
            h.b.ip(&["neigh", "show", &sa.underlay_ip, "dev", "ul0"])
                .expect("neigh");
        assert!(
            neigh.contains(mac_a.trim()) && !neigh.contains("FAILED"),
            "B's kernel resolved {} to {:?}, want {}",
            sa.underlay_ip,
            neigh,
            mac_a.trim()
        );
        let s = stats(&da);
        assert_eq!(u(&s["underlay"]["drops"]["rx_bad_icmp"]), 0, "{s}");
        if kind == AF_XDP {
            // The filter passes what is not addressed to vnetp: the kernel still
            // answers for an address of its own on the same interface.
            let own = if ipv6 {
                format!("fd00:99:{index}::77")
            } else {
                format!("10.99.{index}.77")
            };
            let cidr = format!("{own}/{}", if ipv6 { 64 } else { 24 });
            let mut add = vec!["addr", "add", &cidr, "dev", "ul0"];
            if ipv6 {
                add.push("nodad");
            }
            h.a.ip(&add).expect("kernel address");
            ping(&h.b, &own);
            // The program is attached through a BPF link: it goes with the daemon.
            assert!(
                h.a.ip(&["link", "show", "ul0"])
                    .expect("link")
                    .contains("xdp")
            );
            da.stop();
            let link = h.a.ip(&["link", "show", "ul0"]).expect("link");
            assert!(!link.contains("xdp"), "XDP program left attached: {link}");
        }
    }
}

#[test]
fn reaches_a_peer_behind_a_gateway_af_packet() {
    behind_a_gateway(AF_PACKET, 38);
}

#[test]
fn reaches_a_peer_behind_a_gateway_af_xdp() {
    behind_a_gateway(AF_XDP, 58);
}

/// A and B on two subnets joined by a kernel router R; each reaches the other
/// through its static gateway.
fn behind_a_gateway(kind: &str, i: u8) {
    assert!(netns::is_root(), "needs root");
    let pid = std::process::id();
    let d = dir(&format!("gw{i}"));
    std::fs::create_dir_all(&d).expect("dir");
    let a = Netns::new(&format!("vr{i}a-{pid}")).expect("ns a");
    let r = Netns::new(&format!("vr{i}r-{pid}")).expect("ns r");
    let b = Netns::new(&format!("vr{i}b-{pid}")).expect("ns b");
    netns::veth(
        &a,
        "ul0",
        &format!("10.96.{i}.1/24"),
        &r,
        "ra",
        &format!("10.96.{i}.254/24"),
    )
    .expect("veth a-r");
    netns::veth(
        &r,
        "rb",
        &format!("10.95.{i}.254/24"),
        &b,
        "ul0",
        &format!("10.95.{i}.2/24"),
    )
    .expect("veth r-b");
    r.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .expect("forwarding");
    release_to_vnetp(&a, "ul0");
    release_to_vnetp(&b, "ul0");
    let side = |n: u8, ul: &str| Side {
        underlay_ip: ul.to_string(),
        overlay_ip: format!("10.94.{i}.{n}"),
        mac: format!("52:54:00:94:{i:02x}:{n:02x}"),
        tap: format!("vtap{n}"),
    };
    let (sa, sb) = (
        side(1, &format!("10.96.{i}.1")),
        side(2, &format!("10.95.{i}.2")),
    );
    let h = TwoHostsLike { dir: d.clone() };
    let ca = raw_config(
        "a",
        &h.socket("a"),
        (kind, "ul0"),
        &sa,
        Some(&format!("10.96.{i}.254")),
        (&sb.underlay_ip, &sb.mac),
        LinkEncap::Vnetp,
    );
    let cb = raw_config(
        "b",
        &h.socket("b"),
        (kind, "ul0"),
        &sb,
        Some(&format!("10.95.{i}.254")),
        (&sa.underlay_ip, &sa.mac),
        LinkEncap::Vnetp,
    );
    let _da = h.start(&a, "a", &ca);
    let _db = h.start(&b, "b", &cb);
    for (ns, s) in [(&a, &sa), (&b, &sb)] {
        ns.ip(&[
            "addr",
            "add",
            &format!("{}/24", s.overlay_ip),
            "dev",
            &s.tap,
        ])
        .expect("tap addr");
        ns.ip(&["link", "set", &s.tap, "up"]).expect("tap up");
    }
    ping(&a, &sb.overlay_ip);
    ping(&b, &sa.overlay_ip);
    tcp_copy(&d, &a, &b, &sb.overlay_ip);
    // The router's kernel forwarded our packets: it resolved both underlay addresses.
    let neigh = r.ip(&["neigh", "show"]).expect("neigh");
    assert!(
        neigh.contains(&format!("10.96.{i}.1 ")) && neigh.contains(&format!("10.95.{i}.2 ")),
        "{neigh}"
    );
}

/// Config/daemon helpers for topologies other than [`TwoHosts`].
struct TwoHostsLike {
    dir: std::path::PathBuf,
}

impl TwoHostsLike {
    fn socket(&self, name: &str) -> std::path::PathBuf {
        self.dir.join(format!("{name}.sock"))
    }

    fn start(&self, ns: &Netns, name: &str, config: &str) -> Daemon {
        let path = self.dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).expect("write config");
        Daemon::start(
            ns,
            exe(),
            &path,
            &self.socket(name),
            &self.dir.join(format!("{name}.log")),
        )
        .unwrap_or_else(|e| panic!("daemon {name}: {e}"))
    }
}

#[test]
fn a_peer_that_changes_its_mac_is_relearned() {
    let (h, _da) = kernel_vxlan_peer(AF_PACKET, "mac", 39);
    ping(&h.a, &h.side_b.overlay_ip);
    // B's underlay NIC gets a new MAC; A still has the old one cached.
    h.b.ip(&["link", "set", "ul0", "down"]).expect("down");
    h.b.ip(&["link", "set", "ul0", "address", "02:00:00:00:39:02"])
        .expect("new mac");
    h.b.ip(&["link", "set", "ul0", "up"]).expect("up");
    // B's kernel flushed its neighbours with the change and asks for A again; the
    // request carries the new MAC, which A must take over for its replies to arrive.
    ping(&h.b, &h.side_a.overlay_ip);
    ping(&h.a, &h.side_b.overlay_ip);
}

#[test]
fn a_dead_peers_queued_frames_are_dropped_and_counted_after_the_arp_timeout() {
    let h = hosts("dead", 40, false);
    release_to_vnetp(&h.a, "ul0");
    let (sa, sb) = (&h.side_a, &h.side_b);
    // The link's peer address is on-link but nobody has it.
    let dead = "10.99.40.9";
    let cfg = raw_config(
        "a",
        &h.socket("a"),
        (AF_PACKET, "ul0"),
        sa,
        None,
        (dead, &sb.mac),
        LinkEncap::Vnetp,
    );
    let da = start(&h, &h.a, "a", &cfg);
    h.address_tap(&h.a, sa).expect("tap a");
    // Buffers the idle daemon holds (ports keep some posted for receive).
    let idle_free = u(&stats(&da)["pool"]["available"]);
    // A static overlay neighbour, so the guest side sends echo requests at once.
    h.a.ip(&[
        "neigh",
        "replace",
        &sb.overlay_ip,
        "lladdr",
        &sb.mac,
        "dev",
        &sa.tap,
    ])
    .expect("static neigh");
    let _ = h.a.exec(&[
        "ping",
        "-c",
        "100",
        "-i",
        "0.005",
        "-W",
        "1",
        &sb.overlay_ip,
    ]);
    // Every frame the engine gave the underlay is either queued (and, after three
    // unanswered ARP requests a second apart, dropped as tx_resolve_timeout) or
    // refused because the per-neighbour queue (32 frames) was full.
    let settled = netns::wait_for(Duration::from_secs(60), || {
        let s = stats(&da);
        let d = &s["underlay"]["drops"];
        let sent = u(&s["links"][0]["tx_packets"]);
        sent >= 100
            && u(&d["tx_resolve_timeout"]) + u(&d["tx_resolve_queue_full"]) == sent
            && u(&s["pool"]["available"]) == idle_free
    });
    let s = stats(&da);
    assert!(settled, "frames unaccounted for or buffers held: {s}");
    let d = &s["underlay"]["drops"];
    assert!(u(&d["tx_resolve_timeout"]) >= 32, "{s}");
    assert!(u(&d["tx_resolve_queue_full"]) >= 1, "{s}");
}

/// `vnetp run` output for a config, expecting it to fail.
fn run_fails(ns: &Netns, dir: &Path, name: &str, config: &str) -> String {
    std::fs::create_dir_all(dir).expect("dir");
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).expect("write config");
    let cfg = path.display().to_string();
    let exe_s = exe().display().to_string();
    match ns.exec(&[&exe_s, "run", "--config", &cfg]) {
        Ok(out) => panic!("vnetp run succeeded with {config}: {out}"),
        Err(e) => e.detail,
    }
}

#[test]
fn a_missing_interface_is_a_clear_error_for_both_kinds() {
    assert!(netns::is_root(), "needs root");
    let ns = Netns::new(&format!("vr41-{}", std::process::id())).expect("ns");
    let d = dir("errors");
    let cfg = |kind: &str| {
        format!(
            "[host]\nname = \"e\"\nunderlay = {{ kind = \"{kind}\", ifname = \"nosuch0\", ip = \"10.0.0.1\" }}\n"
        )
    };
    let err = run_fails(&ns, &d, "missing", &cfg("af_packet"));
    assert!(
        err.contains("\"nosuch0\" does not exist in this network namespace"),
        "{err}"
    );
    let err = run_fails(&ns, &d, "xdp", &cfg("af_xdp"));
    assert!(
        err.contains("\"nosuch0\" does not exist in this network namespace"),
        "{err}"
    );
}
