//! Guests over vhost-user, with real peers and no mocks: a `vnetp run` daemon with two
//! vhost-user interfaces in a network namespace, driven by our virtio-user frontend and
//! by DPDK testpmd (its `net_virtio_user` driver against our backend, its `net_vhost`
//! backend against our frontend). Needs root (CI runs as root); the testpmd tests need
//! `dpdk-testpmd` (Debian package dpdk-dev, installed by scripts/setup.sh).
//!
//! A real Linux guest in QEMU on this backend: tests/vhost_user_guest.rs.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use virtio::frontend::{VirtioUser, VirtioUserOptions};
use vnetp::netns::{self, Daemon, Netns};

const MAC0: [u8; 6] = [0x52, 0x54, 0x00, 0x00, 0x00, 0x01];
const MAC1: [u8; 6] = [0x52, 0x54, 0x00, 0x00, 0x00, 0x02];
/// IEEE 802 local experimental EtherType: nothing else on the path answers it.
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_vnetp"))
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A test host: its own namespace and a daemon with vhost-user interfaces vm0 and vm1
/// (MACs [`MAC0`], [`MAC1`]) and routes between them.
struct Host {
    dir: PathBuf,
    daemon: Daemon,
    _ns: Netns,
}

impl Host {
    fn start(tag: &str) -> Self {
        assert!(
            netns::is_root(),
            "the vhost-user tests need root (network namespaces): run them with sudo"
        );
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("vnetp-vu-{tag}-{pid}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        let ns = Netns::new(&format!("vu-{tag}-{pid}")).expect("namespace");
        let mut cfg = String::new();
        let _ = writeln!(
            cfg,
            "[host]\nname = \"{tag}\"\nunderlay = {{ kind = \"udp\", bind = \"127.0.0.1:9000\" }}\ncontrol = \"{}\"\n",
            dir.join("ctl.sock").display()
        );
        for (name, mac) in [("vm0", MAC0), ("vm1", MAC1)] {
            let _ = writeln!(
                cfg,
                "[[interface]]\nname = \"{name}\"\nkind = \"vhost-user\"\nsocket = \"{}\"\nmac = \"{}\"\n",
                dir.join(format!("{name}.sock")).display(),
                mac_str(mac)
            );
            let _ = writeln!(
                cfg,
                "[[route]]\nsrc = \"any\"\ndst = \"{}\"\nto = {{ interface = \"{name}\" }}\n",
                mac_str(mac)
            );
        }
        let path = dir.join("host.toml");
        std::fs::write(&path, cfg).expect("write config");
        let daemon = Daemon::start(
            &ns,
            exe(),
            &path,
            &dir.join("ctl.sock"),
            &dir.join("daemon.log"),
        )
        .expect("daemon starts");
        Self {
            dir,
            daemon,
            _ns: ns,
        }
    }

    fn sock(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.sock"))
    }

    /// The port counters of interface `name` from `stats json`.
    fn port(&self, name: &str) -> serde_json::Value {
        let s: serde_json::Value =
            serde_json::from_str(&self.daemon.ctl("stats json").expect("stats")).expect("json");
        s["interfaces"]
            .as_array()
            .expect("interfaces")
            .iter()
            .find(|i| i["name"] == name)
            .unwrap_or_else(|| panic!("no interface {name} in {s}"))["port"]
            .clone()
    }

    /// Everything the daemon knows, for failure messages.
    fn diag(&self) -> String {
        format!(
            "stats: {}\nlog:\n{}",
            self.daemon.ctl("stats json").unwrap_or_default(),
            self.log()
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.daemon.log).unwrap_or_default()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.daemon.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn connect(sock: &Path) -> VirtioUser {
    let mut last = None;
    for _ in 0..100 {
        match VirtioUser::connect(sock, VirtioUserOptions::default()) {
            Ok(v) => return v,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("connect to {}: {last:?}", sock.display());
}

/// Frame `seq` of `len` bytes from `src` to `dst`, the sequence number after the header.
fn frame(dst: [u8; 6], src: [u8; 6], seq: u32, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&ETHERTYPE);
    f[14..18].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in f[18..].iter_mut().enumerate() {
        *b = (i as u32 ^ seq) as u8;
    }
    f
}

/// What a receiver saw: frames, bytes, distinct sequence numbers, frames whose bytes
/// were wrong.
#[derive(Default, Debug)]
struct Seen {
    frames: u64,
    bytes: u64,
    seqs: HashSet<u32>,
    corrupt: u64,
}

impl Seen {
    fn check(&mut self, f: &[u8], len: usize, dst: [u8; 6]) {
        self.frames += 1;
        self.bytes += f.len() as u64;
        if f.len() < 18 || f[12..14] != ETHERTYPE {
            self.corrupt += 1;
            return;
        }
        let seq = u32::from_be_bytes([f[14], f[15], f[16], f[17]]);
        if f.len() != len
            || f[..6] != dst
            || f != frame(dst, f[6..12].try_into().unwrap_or([0; 6]), seq, len)
        {
            self.corrupt += 1;
        }
        self.seqs.insert(seq);
    }
}

/// Sends `count` frames of `len` bytes from `tx` to `dst` while receiving on `rx`, with
/// at most 128 in flight; bounded by a deadline. Returns what `rx` saw.
fn stream(
    tx: &mut VirtioUser,
    rx: &mut VirtioUser,
    dst: [u8; 6],
    src: [u8; 6],
    count: u32,
    len: usize,
) -> Seen {
    let mut seen = Seen::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut next = 0u32;
    let mut pending: Vec<Vec<u8>> = Vec::with_capacity(32);
    while (next < count || seen.frames < u64::from(count)) && Instant::now() < deadline {
        // At most half the receiver's ring in flight: testpmd's io-forward drops what a
        // full ring cannot take, and this stream counts every frame.
        if next < count && u64::from(next) < seen.frames + 128 {
            pending.clear();
            let end = (next + 32).min(count);
            pending.extend((next..end).map(|s| frame(dst, src, s, len)));
            next += tx.send(&pending).expect("send") as u32;
        }
        let got = rx.recv(|f| seen.check(f, len, dst)).expect("recv");
        if got == 0 {
            rx.wait(Duration::from_millis(5)).expect("wait");
        }
    }
    seen
}

#[test]
fn frontend_to_frontend_through_vnetp_counts_and_bytes_match_and_guest_can_reconnect() {
    let host = Host::start("ff");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(host.sock("vm0"))
            .expect("socket exists")
            .permissions(),
    );
    assert_eq!(
        mode & 0o777,
        0o600,
        "vhost-user socket is private to the daemon's user"
    );
    let mut g0 = connect(&host.sock("vm0"));
    let mut g1 = connect(&host.sock("vm1"));
    assert_eq!(g0.mac(), Some(MAC0), "MAC from the config space");
    assert_eq!(g1.mac(), Some(MAC1));

    for (count, len) in [(2000u32, 64usize), (1000, 1514)] {
        let before = host.port("vm1")["tx_packets"].as_u64().unwrap_or(0);
        let seen = stream(&mut g0, &mut g1, MAC1, MAC0, count, len);
        assert_eq!(
            seen.frames,
            u64::from(count),
            "frames of {len} B at vm1; log:\n{}",
            host.log()
        );
        assert_eq!(seen.bytes, u64::from(count) * len as u64);
        assert_eq!(
            seen.seqs.len(),
            count as usize,
            "every sequence number once"
        );
        assert_eq!(seen.corrupt, 0, "bytes intact");
        let after = host.port("vm1")["tx_packets"].as_u64().unwrap_or(0);
        assert_eq!(after - before, u64::from(count), "daemon's count for vm1");
    }
    // And the other way.
    let seen = stream(&mut g1, &mut g0, MAC0, MAC1, 500, 200);
    assert_eq!((seen.frames, seen.corrupt), (500, 0), "{}", host.diag());

    // vm1's guest goes away: vm0's traffic to it is dropped and counted, nothing else
    // is disturbed; a new guest on the same socket gets traffic again.
    let conns_before = g1.stats();
    drop(g1);
    assert!(
        netns::wait_for(Duration::from_secs(10), || host
            .log()
            .contains("guest disconnected")),
        "the daemon notices the departure; log:\n{}",
        host.log()
    );
    let sent = g0
        .send(
            &(0..10)
                .map(|s| frame(MAC1, MAC0, s, 64))
                .collect::<Vec<_>>(),
        )
        .expect("send while vm1 is away");
    assert_eq!(sent, 10);
    assert!(
        netns::wait_for(Duration::from_secs(10), || {
            host.port("vm1")["drops"]["tx_no_guest"]
                .as_u64()
                .unwrap_or(0)
                >= 10
        }),
        "frames to a departed guest are counted as tx_no_guest: {}",
        host.port("vm1")
    );
    let mut g1 = connect(&host.sock("vm1"));
    let seen = stream(&mut g0, &mut g1, MAC1, MAC0, 300, 128);
    assert_eq!(
        (seen.frames, seen.corrupt),
        (300, 0),
        "after reconnect; {}",
        host.diag()
    );
    assert!(conns_before.rx_packets > 0);
    assert!(host.daemon.ctl("stats").is_ok(), "daemon still answers");
}

#[test]
fn vnetp_restart_with_guests_attached_exits_cleanly_and_guests_resume_on_the_same_stale_sockets() {
    let mut host = Host::start("rs");
    let mut g0 = connect(&host.sock("vm0"));
    let mut g1 = connect(&host.sock("vm1"));
    let seen = stream(&mut g0, &mut g1, MAC1, MAC0, 200, 64);
    assert_eq!((seen.frames, seen.corrupt), (200, 0), "{}", host.diag());
    // SIGTERM while both guests are connected: a clean exit, not a hang or a kill.
    assert_eq!(host.daemon.stop(), Some(0), "log:\n{}", host.log());
    drop((g0, g1));
    // A daemon killed outright leaves its socket files behind: the next one replaces them.
    for vm in ["vm0", "vm1"] {
        drop(std::os::unix::net::UnixListener::bind(host.sock(vm)).expect("stale socket"));
        assert!(host.sock(vm).exists());
    }
    host.daemon = Daemon::start(
        &host._ns,
        exe(),
        &host.dir.join("host.toml"),
        &host.dir.join("ctl.sock"),
        &host.dir.join("daemon2.log"),
    )
    .expect("daemon restarts on the same sockets");
    let mut g0 = connect(&host.sock("vm0"));
    let mut g1 = connect(&host.sock("vm1"));
    let seen = stream(&mut g0, &mut g1, MAC1, MAC0, 200, 64);
    assert_eq!(
        (seen.frames, seen.corrupt),
        (200, 0),
        "after restart; {}",
        host.diag()
    );
}

#[test]
fn malformed_descriptor_chains_from_a_live_guest_are_counted_and_the_queue_keeps_going() {
    use virtio::frontend::{RawDesc, RawNext};
    const NEXT: u16 = 1;
    const WRITE: u16 = 2;
    const INDIRECT: u16 = 4;
    let own = |len: u32, flags: u16, next: RawNext| RawDesc {
        addr: None,
        len,
        flags,
        next,
    };
    let host = Host::start("raw");
    let mut g0 = connect(&host.sock("vm0"));
    let mut g1 = connect(&host.sock("vm1"));
    let cases: Vec<(&str, Vec<RawDesc>)> = vec![
        (
            "bad_desc_loop",
            vec![
                own(64, NEXT, RawNext::Index(1)),
                own(64, NEXT, RawNext::Index(0)),
            ],
        ),
        ("bad_desc_index", vec![own(64, NEXT, RawNext::Raw(999))]),
        (
            "bad_desc_address",
            vec![RawDesc {
                addr: Some(1 << 40),
                len: 64,
                flags: 0,
                next: RawNext::End,
            }],
        ),
        ("bad_desc_zero_len", vec![own(0, 0, RawNext::End)]),
        ("bad_desc_direction", vec![own(64, WRITE, RawNext::End)]),
        (
            "bad_desc_indirect",
            vec![own(32, INDIRECT | NEXT, RawNext::Index(0))],
        ),
        ("bad_desc_too_long", vec![own(4000, 0, RawNext::End)]),
        ("rx_runt", vec![own(20, 0, RawNext::End)]),
    ];
    for (counter, chain) in &cases {
        assert!(
            g0.post_raw_tx_chain(chain).expect("post"),
            "room for {counter}"
        );
        assert!(
            netns::wait_for(Duration::from_secs(10), || {
                host.port("vm0")["drops"][*counter].as_u64().unwrap_or(0) == 1
            }),
            "{counter} counted once: {}",
            host.port("vm0")
        );
    }
    // Every bad chain went back to the guest, and the queue still carries frames.
    let seen = stream(&mut g0, &mut g1, MAC1, MAC0, 300, 64);
    assert_eq!((seen.frames, seen.corrupt), (300, 0), "{}", host.diag());
    assert_eq!(host.port("vm0")["drops"]["queue_broken"], 0);
}

#[test]
fn a_guest_reconnecting_repeatedly_under_traffic_disturbs_nothing() {
    let host = Host::start("churn");
    let mut g0 = connect(&host.sock("vm0"));
    let burst: Vec<Vec<u8>> = (0..32).map(|s| frame(MAC1, MAC0, s, 256)).collect();
    for round in 0..20 {
        let mut g1 = connect(&host.sock("vm1"));
        // Traffic into vm1 while it comes and goes; some of it lands, the rest is counted.
        for _ in 0..4 {
            g0.send(&burst).expect("send");
            let _ = g1.recv(|_| {}).expect("recv");
        }
        if round % 2 == 0 {
            let _ = g1.send(&[frame(MAC0, MAC1, round, 64)]).expect("send back");
        }
        drop(g1);
    }
    assert!(
        host.daemon.ctl("stats").is_ok(),
        "daemon alive; {}",
        host.diag()
    );
    assert!(!host.log().contains("panicked"), "{}", host.log());
    // Afterwards both directions are exact again.
    let mut g1 = connect(&host.sock("vm1"));
    let _ = g0.recv(|_| {}).expect("drain");
    let seen = stream(&mut g0, &mut g1, MAC1, MAC0, 500, 64);
    assert_eq!((seen.frames, seen.corrupt), (500, 0), "{}", host.diag());
    let seen = stream(&mut g1, &mut g0, MAC0, MAC1, 500, 64);
    assert_eq!((seen.frames, seen.corrupt), (500, 0), "{}", host.diag());
}

#[test]
fn malformed_guest_traffic_is_counted_and_the_daemon_keeps_serving() {
    let host = Host::start("bad");
    let mut g0 = connect(&host.sock("vm0"));
    let mut g1 = connect(&host.sock("vm1"));
    // Runts (shorter than an Ethernet header) are dropped by name at the port.
    let runts: Vec<Vec<u8>> = (0..5).map(|_| vec![0u8; 8]).collect();
    assert_eq!(g0.send(&runts).expect("send"), 5);
    assert!(
        netns::wait_for(Duration::from_secs(10), || {
            host.port("vm0")["drops"]["rx_runt"].as_u64().unwrap_or(0) == 5
        }),
        "runts counted: {}",
        host.port("vm0")
    );
    let seen = stream(&mut g0, &mut g1, MAC1, MAC0, 100, 64);
    assert_eq!((seen.frames, seen.corrupt), (100, 0), "{}", host.diag());
}

/// A `dpdk-testpmd` in io-forward mode between two vdevs (port 0 <-> port 1), without
/// hugepages; killed on drop.
struct Testpmd {
    child: Child,
    log: PathBuf,
}

impl Testpmd {
    fn start(dir: &Path, tag: &str, vdevs: [&str; 2]) -> Self {
        assert!(
            netns::have("dpdk-testpmd"),
            "dpdk-testpmd is missing: scripts/setup.sh installs it (Debian package dpdk-dev)"
        );
        let log = dir.join(format!("testpmd-{tag}.log"));
        let out = std::fs::File::create(&log).expect("testpmd log");
        let err = out.try_clone().expect("log fd");
        let prefix = format!("vnetp-{tag}-{}", std::process::id());
        // testpmd's stdout is a file here: line-buffer it so readiness shows up.
        let mut cmd = Command::new("stdbuf");
        cmd.args(["-oL", "dpdk-testpmd"]);
        cmd.args([
            "-l",
            "0,1",
            "--no-huge",
            "-m",
            "256",
            "--no-shconf",
            "--no-pci",
        ])
        .args(["--file-prefix", &prefix, "--log-level", "lib.eal:warning"]);
        for v in vdevs {
            cmd.args(["--vdev", v]);
        }
        cmd.args([
            "--",
            "--forward-mode=io",
            "--auto-start",
            "--nb-cores=1",
            "--total-num-mbufs=8192",
            "--txd=512",
            "--rxd=512",
        ])
        .stdin(Stdio::piped())
        .stdout(out)
        .stderr(err);
        let child = cmd.spawn().expect("start dpdk-testpmd");
        let mut me = Self { child, log };
        // Ready when every vdev is set up: net_vhost has bound its socket, virtio-user
        // has configured its port (forwarding starts later, after the link check).
        let ready = netns::wait_for(Duration::from_secs(30), || {
            let text = std::fs::read_to_string(&me.log).unwrap_or_default();
            text.contains("Checking link statuses") || matches!(me.child.try_wait(), Ok(Some(_)))
        });
        assert!(
            ready && matches!(me.child.try_wait(), Ok(None)),
            "testpmd did not start:\n{}",
            me.log_text()
        );
        me
    }

    /// Waits until packet forwarding runs (after the link check, up to ~10 s) and
    /// `vhost_ports` of its `net_vhost` ports have a ready guest: frames forwarded to a
    /// port before that are dropped by testpmd.
    fn wait_forwarding(&self, vhost_ports: usize) {
        let ok = netns::wait_for(Duration::from_secs(30), || {
            let t = self.log_text();
            t.contains("Press enter to exit")
                && t.matches("virtio is now ready for processing").count() >= vhost_ports
        });
        assert!(ok, "testpmd never started forwarding:\n{}", self.log_text());
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn testpmd_virtio_user_as_guest_driver_carries_a_counted_stream_through_vnetp() {
    let host = Host::start("tpv");
    let feed = host.dir.join("feed.sock");
    let vdev_feed = format!("net_vhost0,iface={},queues=1", feed.display());
    let vdev_guest = format!(
        "net_virtio_user1,path={},queues=1,queue_size=256",
        host.sock("vm0").display()
    );
    // Our frontend feeds testpmd's vhost port; testpmd forwards into its virtio-user
    // port, a guest driver on vnetp's vm0; vnetp routes to vm1, where we count.
    let tp = Testpmd::start(&host.dir, "tpv", [&vdev_feed, &vdev_guest]);
    let mut feeder = connect(&feed);
    let mut g1 = connect(&host.sock("vm1"));
    assert!(
        netns::wait_for(Duration::from_secs(10), || {
            host.log().contains("guest connected")
                && host.log().matches("guest connected").count() >= 2
        }),
        "testpmd's virtio-user connected to vm0; log:\n{}\ntestpmd:\n{}",
        host.log(),
        tp.log_text()
    );
    tp.wait_forwarding(1);
    let count = 1000u32;
    let seen = stream(&mut feeder, &mut g1, MAC1, MAC0, count, 64);
    assert_eq!(
        (seen.frames, seen.seqs.len(), seen.corrupt),
        (u64::from(count), count as usize, 0),
        "testpmd guest -> vnetp -> vm1; testpmd:\n{}",
        tp.log_text()
    );
    assert!(host.port("vm0")["rx_packets"].as_u64().unwrap_or(0) >= u64::from(count));
    // The other way: vnetp delivers into testpmd's virtio-user receive ring.
    let seen = stream(&mut g1, &mut feeder, MAC0, MAC1, count, 1000);
    assert_eq!(
        (seen.frames, seen.corrupt),
        (u64::from(count), 0),
        "vm1 -> vnetp -> testpmd guest; testpmd:\n{}",
        tp.log_text()
    );
}

#[test]
fn our_frontend_drives_testpmd_vhost_backend() {
    assert!(
        netns::is_root(),
        "needs root like the other vhost-user tests"
    );
    let dir = std::env::temp_dir().join(format!("vnetp-vu-tpf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let (a, b) = (dir.join("a.sock"), dir.join("b.sock"));
    let va = format!("net_vhost0,iface={},queues=1", a.display());
    let vb = format!("net_vhost1,iface={},queues=1", b.display());
    let tp = Testpmd::start(&dir, "tpf", [&va, &vb]);
    let mut x = connect(&a);
    let mut y = connect(&b);
    tp.wait_forwarding(2);
    for (count, len) in [(2000u32, 64usize), (1000, 1514)] {
        let seen = stream(&mut x, &mut y, MAC1, MAC0, count, len);
        assert_eq!(
            (seen.frames, seen.seqs.len(), seen.corrupt),
            (u64::from(count), count as usize, 0),
            "{len} B through testpmd's vhost io-forward; missing {:?}; x {:?} y {:?}; testpmd:\n{}",
            (0..count)
                .filter(|q| !seen.seqs.contains(q))
                .collect::<Vec<_>>(),
            x.stats(),
            y.stats(),
            tp.log_text()
        );
    }
    drop((x, y, tp));
    let _ = std::fs::remove_dir_all(&dir);
}
