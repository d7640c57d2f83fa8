//! Helpers shared by the network-namespace test binaries (`two_hosts`, `raw_underlay`).
#![allow(dead_code, reason = "each test binary uses its own subset")]

use std::path::Path;
use std::time::Duration;

use vnetp::netns::{self, Daemon, Netns};

/// The `vnetp` binary under test.
pub fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_vnetp"))
}

/// Pings `ip` from `ns` three times; the first echo may wait for ARP/ND on the overlay
/// and the underlay, so one of the three may go unanswered.
///
/// Replies are counted by sequence number, however late they come: ping's own loss
/// figure counts a reply later than twice the largest round trip so far (at least the
/// 0.2 s interval) after the last request as lost, which a starved daemon easily is.
/// With `-w`, ping keeps going (sending more requests) until three replies are in;
/// only the answers to the first three requests count here.
pub fn ping(ns: &Netns, ip: &str) {
    let out = ns.exec(&["ping", "-c", "3", "-i", "0.2", "-w", "30", ip]);
    let out = out.unwrap_or_else(|e| panic!("ping {ip} from {} failed: {e}", ns.name));
    assert!(answered(&out, 3) >= 2, "{out}");
}

/// How many of echo requests 1..=`first` ping's output shows a reply to.
pub fn answered(ping_output: &str, first: u32) -> usize {
    (1..=first)
        .filter(|seq| {
            let tag = format!("icmp_seq={seq} ");
            ping_output
                .lines()
                .any(|l| l.contains(" bytes from ") && l.contains(&tag))
        })
        .count()
}

/// True when two pings from `ns` to `ip` both go unanswered.
pub fn ping_fails(ns: &Netns, ip: &str) -> bool {
    ns.exec(&["ping", "-c", "2", "-i", "0.2", "-W", "1", ip])
        .is_err()
}

/// Waits until a process in `ns` listens on TCP `ip:port` (a server just spawned, which
/// a starved machine may not have run yet); panics after 30 s.
pub fn wait_tcp_listening(ns: &Netns, ip: &str, port: u16) {
    let want = format!("{ip}:{port}");
    let listening = netns::wait_for(Duration::from_secs(30), || {
        ns.exec(&["ss", "-Hltn"])
            .is_ok_and(|out| out.split_whitespace().any(|w| w == want))
    });
    assert!(listening, "nothing listens on {want} in {}", ns.name);
}

/// A daemon's `stats json`.
pub fn stats(d: &Daemon) -> serde_json::Value {
    serde_json::from_str(&d.ctl("stats json").expect("stats")).expect("stats is JSON")
}

/// A JSON number, 0 when absent.
pub fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// A pseudo-random file (xorshift), so a transfer that garbles any byte is caught.
pub fn random_file(path: &Path, len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(path, &data).expect("write test file");
    data
}

/// Copies 4 MiB over TCP from `from` to `to_ip` in `to` with socat and compares every
/// byte.
pub fn tcp_copy(dir: &Path, from: &Netns, to: &Netns, to_ip: &str) {
    let src = dir.join("copy-in");
    let dst = dir.join("copy-out");
    let data = random_file(&src, 4 << 20);
    let listen = format!("TCP-LISTEN:5001,bind={to_ip},reuseaddr");
    let out = format!("OPEN:{},creat,trunc", dst.display());
    let mut server = to
        .spawn(
            &["socat", "-u", &listen, &out],
            Some(&dir.join("socat-server.log")),
        )
        .expect("socat server");
    wait_tcp_listening(to, to_ip, 5001);
    let connect = format!("TCP:{to_ip}:5001,retry=50,interval=0.1");
    let input = format!("OPEN:{}", src.display());
    // A bound for a hung transfer, not a speed limit: a starved machine with a faulty
    // underlay may take far longer than the usual second.
    from.exec(&["timeout", "300", "socat", "-u", &input, &connect])
        .expect("socat client");
    let status = server.wait().expect("socat server exit");
    assert!(status.success(), "socat server: {status}");
    let got = std::fs::read(&dst).expect("read copy");
    assert_eq!(got.len(), data.len(), "copied length");
    assert!(got == data, "copied bytes differ");
}

/// Sends one UDP datagram with these bytes from `ns` (source port `src_port`) to `dst`.
pub fn send_udp(ns: &Netns, dir: &Path, bytes: &[u8], dst: &str, src_port: u16) {
    let f = dir.join(format!("dgram-{src_port}"));
    std::fs::write(&f, bytes).expect("write datagram");
    let input = format!("OPEN:{}", f.display());
    let out = format!("UDP4-SENDTO:{dst},sourceport={src_port}");
    ns.exec(&["socat", "-u", &input, &out]).expect("socat send");
}
