//! Multi-core dispatch: two hosts whose daemons run two shards each (`[host] shards =
//! 2`), with two tap interfaces per host, so each shard owns one. The second tap of
//! each host lives in its own namespace (a second "guest"), so every frame between
//! the two guests of one host, and every frame received by the shard that does not own
//! its destination, crosses a shard ring. Real kernels, real sockets. Needs root.

use std::path::{Path, PathBuf};
use std::time::Duration;

mod common;

use common::{exe, ping, ping_fails, stats, u};
use vnetp::netns::{self, Daemon, Netns, TwoHosts};

/// Keeps these tests' addresses (10.98/10.99.INDEX.x, INDEX + 1) apart from the
/// other two-host tests.
const INDEX: u8 = 50;

/// One guest: the tap's name, MAC and overlay address.
#[derive(Clone)]
struct Guest {
    tap: String,
    mac: String,
    ip: String,
}

/// Guest `n` of the topology with address range `index`.
fn guest(index: u8, n: u8) -> Guest {
    Guest {
        tap: format!("vtap{n}"),
        mac: format!("52:54:00:98:{index:02x}:{n:02x}"),
        ip: format!("10.98.{index}.{n}"),
    }
}

/// The two hosts, each with two guests: host A's taps vtap1 (in A's namespace) and
/// vtap3 (moved to namespace `a1`), host B's vtap2 and vtap4 (`b1`). Fields drop in
/// order: the daemons stop before their namespaces go.
struct Topology {
    da: Daemon,
    db: Daemon,
    a1: Netns,
    b1: Netns,
    h: TwoHosts,
}

/// A host's config: two shards, the UDP underlay, one link, two taps, and routes for
/// the four guests' MACs and broadcast.
fn config(
    h: &TwoHosts,
    name: &str,
    me: [&Guest; 2],
    peer: [&Guest; 2],
    host_extra: &str,
) -> String {
    let (my_ul, peer_ul) = if name == "a" {
        (&h.side_a.underlay_ip, &h.side_b.underlay_ip)
    } else {
        (&h.side_b.underlay_ip, &h.side_a.underlay_ip)
    };
    let mut s = format!(
        "[host]\nname = \"{name}\"\nshards = 2\n{host_extra}underlay = {{ kind = \"udp\", bind = \"{my_ul}:9000\" }}\ncontrol = \"{}\"\n\n[[link]]\nname = \"peer\"\npeer = \"{peer_ul}:9000\"\nencap = \"vnetp\"\n\n",
        h.socket(name).display()
    );
    for (i, g) in me.iter().enumerate() {
        s += &format!(
            "[[interface]]\nname = \"vm{i}\"\nkind = \"tap\"\nifname = \"{}\"\nmac = \"{}\"\n\n",
            g.tap, g.mac
        );
    }
    let mut routes = vec![
        (peer[0].mac.clone(), "{ link = \"peer\" }".to_string()),
        (peer[1].mac.clone(), "{ link = \"peer\" }".to_string()),
        ("ff:ff:ff:ff:ff:ff".into(), "{ link = \"peer\" }".into()),
    ];
    for (i, g) in me.iter().enumerate() {
        routes.push((g.mac.clone(), format!("{{ interface = \"vm{i}\" }}")));
        routes.push((
            "ff:ff:ff:ff:ff:ff".into(),
            format!("{{ interface = \"vm{i}\" }}"),
        ));
    }
    for (dst, to) in routes {
        s += &format!("[[route]]\nsrc = \"any\"\ndst = \"{dst}\"\nto = {to}\n\n");
    }
    s
}

/// Puts `g`'s address on its tap in `ns` and brings it up.
fn address(ns: &Netns, g: &Guest) {
    ns.ip(&["addr", "add", &format!("{}/24", g.ip), "dev", &g.tap])
        .expect("address the tap");
    ns.ip(&["link", "set", &g.tap, "up"]).expect("tap up");
}

/// The CPUs a process or thread may run on, from its `/proc/.../status`
/// `Cpus_allowed_list` ("0-3,6").
fn allowed_cpus(status: &Path) -> Vec<usize> {
    let text = std::fs::read_to_string(status).expect("status");
    let list = text
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list")
        .trim();
    list.split(',')
        .flat_map(|r| {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            let (a, b): (usize, usize) = (a.parse().expect("cpu"), b.parse().expect("cpu"));
            a..=b
        })
        .collect()
}

/// `cpus = [..]` pinning host A's two shards to the last two CPUs this test may use
/// (none when it may use fewer than two).
fn pinned_cpus() -> Option<[usize; 2]> {
    let cpus = allowed_cpus(Path::new("/proc/self/status"));
    match cpus[..] {
        [.., a, b] => Some([a, b]),
        _ => None,
    }
}

fn topology(tag: &str, index_offset: u8) -> Topology {
    assert!(
        netns::is_root(),
        "the shard tests need root (network namespaces, veth, tap): run them with sudo"
    );
    let index = INDEX + index_offset;
    let dir = std::env::temp_dir().join(format!("vnetp-test-{tag}-{}", std::process::id()));
    let h = TwoHosts::new(
        &format!("vs{index}-{}", std::process::id()),
        index,
        false,
        &dir,
    )
    .expect("build the two hosts");
    let a1 = Netns::new(&format!("vs{index}-{}-a1", std::process::id())).expect("netns a1");
    let b1 = Netns::new(&format!("vs{index}-{}-b1", std::process::id())).expect("netns b1");
    let [g1, g2, g3, g4] = [1, 2, 3, 4].map(|n| guest(index, n));
    let pin = pinned_cpus().map_or(String::new(), |[a, b]| format!("cpus = [{a}, {b}]\n"));
    let da = h
        .start_daemon(
            &h.a,
            "a",
            &config(&h, "a", [&g1, &g3], [&g2, &g4], &pin),
            exe(),
        )
        .expect("daemon a");
    let db = h
        .start_daemon(
            &h.b,
            "b",
            &config(&h, "b", [&g2, &g4], [&g1, &g3], ""),
            exe(),
        )
        .expect("daemon b");
    // The second guest of each host gets its own network stack: its tap moves to its
    // namespace (the daemon keeps its fd; the device keeps working there).
    h.a.ip(&["link", "set", &g3.tap, "netns", &a1.name])
        .expect("move vtap3");
    h.b.ip(&["link", "set", &g4.tap, "netns", &b1.name])
        .expect("move vtap4");
    address(&h.a, &g1);
    address(&a1, &g3);
    address(&h.b, &g2);
    address(&b1, &g4);
    Topology { da, db, a1, b1, h }
}

/// The pid of the daemon started with `config` (its command line names the file).
fn daemon_pid(config: &Path) -> u32 {
    let want = config.display().to_string();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                args.contains(&b"run".as_slice()) && args.contains(&want.as_bytes())
            })
        })
        .unwrap_or_else(|| panic!("no daemon running {want}"))
}

/// A process's threads: name and `/proc` directory.
fn threads(pid: u32) -> Vec<(String, PathBuf)> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("task dir")
        .filter_map(|e| {
            let dir = e.ok()?.path();
            let name = std::fs::read_to_string(dir.join("comm")).ok()?;
            Some((name.trim().to_string(), dir))
        })
        .collect()
}

/// The interface entry named `name` in a daemon's `stats json`.
fn interface<'a>(s: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    s["interfaces"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == name))
        .unwrap_or_else(|| panic!("no interface {name} in {s}"))
}

/// Each shard owns one tap; two threads, two sockets on the one underlay port; every
/// guest reaches every other guest, on the same host (shard to shard) and across the
/// underlay; a TCP copy each way arrives byte for byte, its frames received by the
/// shard that owns their destination (steered by MAC, not handed over); the stats add
/// up over the shards.
#[test]
fn two_shards_split_the_interfaces_and_carry_every_pair() {
    let t = topology("shards", 0);
    let index = INDEX;
    let ip = |n: u8| format!("10.98.{index}.{n}");
    for d in [&t.da, &t.db] {
        let list = d.ctl("interface list").expect("interface list");
        let lines: Vec<&str> = list.lines().collect();
        assert_eq!(lines.len(), 2, "{list}");
        assert!(
            lines[0].starts_with("vm0 ") && lines[0].ends_with(" shard=0"),
            "{list}"
        );
        assert!(
            lines[1].starts_with("vm1 ") && lines[1].ends_with(" shard=1"),
            "{list}"
        );
    }
    let threads = threads(daemon_pid(&t.h.dir.join("a.toml")));
    for (i, shard) in ["vnetp-shard-0", "vnetp-shard-1"].iter().enumerate() {
        let Some((_, dir)) = threads.iter().find(|(n, _)| n == shard) else {
            panic!("no thread {shard}: {threads:?}");
        };
        // Host A pins its shards (`cpus`) when this machine has two CPUs to give.
        if let Some(cpus) = pinned_cpus() {
            assert_eq!(
                allowed_cpus(&dir.join("status")),
                vec![cpus[i]],
                "{shard} is not pinned"
            );
        }
    }
    // One SO_REUSEPORT socket per shard on the underlay address.
    let sockets =
        t.h.a
            .exec(&["ss", "-Huan", "sport", "=", ":9000"])
            .expect("ss");
    assert_eq!(sockets.lines().count(), 2, "{sockets}");

    // Same host, shard 0's guest to shard 1's and back.
    ping(&t.h.a, &ip(3));
    ping(&t.a1, &ip(1));
    // Across the underlay, every pair.
    for (ns, to) in [
        (&t.h.a, 2),
        (&t.h.a, 4),
        (&t.a1, 2),
        (&t.a1, 4),
        (&t.h.b, 3),
        (&t.b1, 1),
    ] {
        ping(ns, &ip(to));
    }
    common::tcp_copy(&t.h.dir, &t.a1, &t.h.b, &ip(2));
    // And the other way round: A's vm0 (shard 0) to B's vm1 (shard 1), so every
    // interface of both hosts receives a TCP stream's data or its acknowledgements.
    common::tcp_copy(&t.h.dir, &t.h.a, &t.b1, &ip(4));

    // Both shards of a host send from the one underlay address, so without steering
    // the kernel's 4-tuple hash gives all of a peer's datagrams to one socket, and
    // the interface the other shard owns gets each of its frames through a ring.
    // Steered by inner MAC, a unicast frame is received by its owner's shard: only
    // broadcasts (ARP) and the same-host pings cross: a few dozen frames at most,
    // against hundreds (acknowledgements) or thousands (data) per stream.
    for (host, d) in [("a", &t.da), ("b", &t.db)] {
        let s = stats(d);
        for name in ["vm0", "vm1"] {
            let port = &interface(&s, name)["port"];
            let handoff = u(&port["events"]["shard_handoff"]);
            let sent = u(&port["tx_packets"]);
            assert!(
                sent > 200 && handoff <= 30,
                "host {host} {name}: {handoff} of {sent} frames came through another shard: {port}"
            );
        }
    }

    let s = stats(&t.da);
    assert_eq!(s["shards"], 2, "{s}");
    for (name, shard) in [("vm0", 0), ("vm1", 1)] {
        let i = interface(&s, name);
        assert_eq!(i["shard"], shard, "{i}");
        assert!(u(&i["rx_packets"]) > 0 && u(&i["tx_packets"]) > 0, "{i}");
    }
    // The copy's 4 MiB left through host A's vm1 (shard 1) and the link.
    assert!(u(&interface(&s, "vm1")["rx_bytes"]) > 4 << 20, "{s}");
    assert!(u(&interface(&s, "vm0")["rx_bytes"]) > 4 << 20, "{s}");
    assert!(u(&s["links"][0]["tx_bytes"]) > 8 << 20, "{s}");
    // Each shard did its own guest's share: it owns one interface, took that guest's
    // 4 MiB stream, and received its stream's acknowledgements on its own socket.
    let per_shard = s["per_shard"]
        .as_array()
        .expect("per_shard with two shards");
    assert_eq!(per_shard.len(), 2, "{s}");
    for (i, l) in per_shard.iter().enumerate() {
        assert_eq!(l["shard"], i, "{l}");
        assert_eq!(l["interfaces"], 1, "{l}");
        assert!(u(&l["guest_rx_packets"]) > 1000, "{l}");
        assert!(u(&l["underlay_rx_packets"]) > 100, "{l}");
        assert!(u(&l["underlay_tx_packets"]) > 1000, "{l}");
    }
    let text = t.da.ctl("stats").expect("stats");
    for i in 0..2 {
        assert!(
            text.contains(&format!("shard {i}: 1 interface(s), underlay rx ")),
            "{text}"
        );
    }
    let sb = stats(&t.db);
    assert!(u(&interface(&sb, "vm0")["tx_bytes"]) > 4 << 20, "{sb}");
    assert!(u(&interface(&sb, "vm1")["tx_bytes"]) > 4 << 20, "{sb}");
    assert_eq!(u(&s["drops"]["rx_unknown_sender"]), 0, "{s}");
}

/// Commands reach every shard: a deleted route stops the traffic of both shards'
/// guests and its return restores it; an interface added at run time goes to the
/// least-loaded shard and can be deleted; a capture on an interface sees its frames,
/// one on the link is refused with the reason; a reload applies on every shard.
#[test]
fn control_commands_apply_on_every_shard() {
    let t = topology("shardctl", 1);
    let index = INDEX + 1;
    let ip = |n: u8| format!("10.98.{index}.{n}");
    let mac4 = format!("52:54:00:98:{index:02x}:04");
    ping(&t.h.a, &ip(4));
    ping(&t.a1, &ip(4));
    let route = format!("src=any dst={mac4} to=link:peer");
    t.da.ctl(&format!("route del {route}")).expect("route del");
    assert!(
        ping_fails(&t.h.a, &ip(4)),
        "shard 0 still routes to vm1 of b"
    );
    assert!(
        ping_fails(&t.a1, &ip(4)),
        "shard 1 still routes to vm1 of b"
    );
    assert!(u(&stats(&t.da)["drops"]["no_route"]) > 0);
    t.da.ctl(&format!("route add {route}")).expect("route add");
    ping(&t.h.a, &ip(4));
    ping(&t.a1, &ip(4));

    // Runtime interfaces: both shards own one, so the new one goes to shard 0.
    let mac9 = format!("52:54:00:98:{index:02x}:09");
    t.da.ctl(&format!("interface add vm2 tap {mac9} ifname vtap9"))
        .expect("interface add");
    let list = t.da.ctl("interface list").expect("interface list");
    assert!(
        list.lines()
            .any(|l| l.starts_with("vm2 ") && l.ends_with(" shard=0")),
        "{list}"
    );
    t.h.a
        .ip(&["link", "show", "vtap9"])
        .expect("the tap exists");
    t.da.ctl("interface del vm2").expect("interface del");
    let list = t.da.ctl("interface list").expect("interface list");
    assert!(!list.contains("vm2"), "{list}");
    assert!(
        netns::wait_for(Duration::from_secs(5), || t
            .h
            .a
            .ip(&["link", "show", "vtap9"])
            .is_err()),
        "the deleted tap is still there"
    );

    // A link's frames are spread over the shards: its capture is refused.
    let pcap = t.h.dir.join("link.pcap");
    let err =
        t.da.ctl(&format!(
            "capture link:peer {} count 2 timeout 5",
            pcap.display()
        ))
        .expect_err("a link capture with two shards");
    assert!(err.to_string().contains("shards = 1"), "{err}");
    // An interface's frames all pass its owner: vm1 (shard 1) while its guest pings.
    let pcap = t.h.dir.join("vm1.pcap");
    let mut pinger =
        t.a1.spawn(&["ping", "-c", "20", "-i", "0.1", &ip(2)], None)
            .expect("ping");
    let answer =
        t.da.ctl(&format!(
            "capture interface:vm1 {} count 4 timeout 10",
            pcap.display()
        ))
        .expect("capture vm1");
    let _ = pinger.wait();
    assert!(answer.starts_with("captured 4 frame(s)"), "{answer}");
    let file = pcap.display().to_string();
    let out = netns::run(&[
        "tshark", "-n", "-r", &file, "-Y", "icmp", "-T", "fields", "-e", "ip.src", "-e", "ip.dst",
    ])
    .expect("tshark read");
    assert_eq!(out.lines().count(), 4, "{out}");
    for l in out.lines() {
        assert!(l.contains(&ip(3)) && l.contains(&ip(2)), "{l}");
    }

    // Reload: a new link appears on every shard (the stats sum would double it if
    // only one shard had it, and one shard's stats would miss it).
    let cfg = t.h.dir.join("a.toml");
    let mut text = std::fs::read_to_string(&cfg).expect("a.toml");
    text.push_str(&format!(
        "\n[[link]]\nname = \"spare\"\npeer = \"10.99.{index}.9:9000\"\n"
    ));
    std::fs::write(&cfg, text).expect("write a.toml");
    let r = t.da.ctl("reload").expect("reload");
    assert_eq!(r, "reloaded: interfaces +0 -0, links +1 -0, routes +0 -0");
    let s = stats(&t.da);
    assert_eq!(s["links"].as_array().map(Vec::len), Some(2), "{s}");
    let links = t.da.ctl("link list").expect("link list");
    assert!(links.contains("spare"), "{links}");
    ping(&t.a1, &ip(2));
}
