//! Real Linux guests on vhost-user: two hosts in network namespaces, a `vnetp run`
//! daemon in each with one vhost-user interface and the VNET/P link between them, and in
//! each namespace a QEMU guest (TCG, tests/vm/harness.sh mode `none`) whose only NIC is
//! a virtio-net-pci on that daemon's socket, RAM in a shared memfd. Guest A pings guest B
//! across the overlay and sends it 1 MiB of random bytes over TCP; both guests print the
//! MD5 of what they sent and received and the test compares them. Then the daemon of
//! host B is killed with SIGKILL and started again while both guests keep running: QEMU
//! redials the socket (`reconnect-ms`), and guest A must see the peer go away, come
//! back, answer pings and take a second checked transfer.
//!
//! The guests' NICs have two queue pairs (`queues=2`, `mq=on`) and TSO: each guest
//! switches to both pairs with `ethtool -L` (QEMU's control queue, then
//! SET_VRING_ENABLE to us) and checks `ethtool -k` shows TCP segmentation offload on.
//! The daemons take 64 KiB frames (`offload = true`) and the link carries them whole
//! (`mtu = 65000`), so guest A's TSO frames reach guest B as large frames; the test
//! checks the daemons' byte and frame counters show frames larger than the MTU. The
//! guest has no ethtool of its own: the host's binary and its libraries are copied in
//! and run through the dynamic loader.
//!
//! Needs root (namespaces) and QEMU (`sudo scripts/setup.sh` or
//! `sudo tests/vm/harness.sh install`); builds the guest image cache when missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vnetp::netns::{self, Daemon, LinkEncap, Netns, Side, TwoHosts};

/// Keeps this test's addresses (10.98/10.99.INDEX.x) apart from the other two-host tests.
const INDEX: u8 = 201;
/// Bytes of each TCP transfer.
const TRANSFER: u32 = 1 << 20;

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_vnetp"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn harness() -> PathBuf {
    repo().join("tests/vm/harness.sh")
}

/// QEMU and the guest image; builds the image cache when missing or stale.
fn vm_ready() {
    assert!(
        netns::have("qemu-system-x86_64"),
        "QEMU is missing: run `sudo scripts/setup.sh` (or `sudo tests/vm/harness.sh install`)"
    );
    let out = Command::new("timeout")
        .arg("600")
        .arg(harness())
        .arg("cache")
        .stdin(Stdio::null())
        .output()
        .expect("run tests/vm/harness.sh cache");
    assert!(
        out.status.success(),
        "building the guest image failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The guest script of `role` 1 (host A) or 2 (host B). A pings B and sends it two 1 MiB
/// transfers, the second after B's daemon was restarted; B receives them and acknowledges
/// each once every byte arrived (a sender's `nc` ends when its data is queued, not delivered).
/// Every wait is bounded; each side prints `guest-...` lines the host test checks.
fn guest_script(role: u8, me: &Side, peer: &Side) -> String {
    const SCRIPT: &str = r#"
ip link set lo up
dev=""; for n in /sys/class/net/*; do [ "${n##*/}" != lo ] && dev=${n##*/}; done
[ -n "$dev" ] || { echo "guest: no NIC"; exit 2; }
ip addr add @MYIP@/24 dev $dev && ip link set $dev up || exit 2
echo "guest-nic $dev $(cat /sys/class/net/$dev/address) driver=$(basename $(readlink /sys/class/net/$dev/device/driver))"
# The host's ethtool, run through the dynamic loader with the libraries next to it.
ET="/opt/ld-linux-x86-64.so.2 --library-path /opt /opt/ethtool"
$ET -L $dev combined 2; echo "guest-ethtool-L rc=$?"
$ET -l $dev | sed -n '/Current/,$p' | grep -i combined | sed 's/^/guest-channels /'
echo "guest-tso $($ET -k $dev | grep '^tcp-segmentation-offload:' | tr -d ' ')"
# wait_file FILE BYTES TENTHS: until FILE holds BYTES bytes, at most TENTHS/10 s.
wait_file() { i=0; while [ $i -lt $3 ] && [ $(wc -c < $1) -lt $2 ]; do sleep 0.1; i=$((i+1)); done; }
# reach TRIES: until one ping of the peer is answered.
reach() { i=0; while [ $i -lt $1 ]; do ping -c 1 -W 1 @PEERIP@ >/dev/null 2>&1 && return 0; i=$((i+1)); done; return 1; }
if [ @ME@ = 2 ]; then
  # A listener's stdin must stay open: busybox nc answers EOF on it with a FIN, and the
  # sending nc would stop early.
  : > /tmp/r1; : > /tmp/r2
  sleep 900 | nc -l -p 5001 > /tmp/r1 & p1=$!
  sleep 900 | nc -l -p 5002 > /tmp/r2 & p2=$!
  echo "guest-ready"
  for n in 1 @ROUNDS@; do
    f=/tmp/r$n; wait_file $f @BYTES@ 3000
    echo "guest-recv n=$n bytes=$(wc -c < $f) md5=$(md5sum < $f | cut -d' ' -f1)"
    j=0; while [ $j -lt 50 ] && ! echo ack$n | nc @PEERIP@ 600$n; do sleep 0.2; j=$((j+1)); done
    [ $n = @ROUNDS@ ] && break
  done
  kill $p1 $p2 2>/dev/null
  $ET -S $dev 2>&1 | grep -E '[rt]x[0-9]+_kicks' | tr -d ' ' | sed 's/^/guest-queue-stat /'
  exit 0
fi
: > /tmp/a1; : > /tmp/a2
nc -l -p 6001 > /tmp/a1 & nc -l -p 6002 > /tmp/a2 &
dd if=/dev/urandom of=/tmp/d1 bs=65536 count=@BLOCKS@ 2>/dev/null
dd if=/dev/urandom of=/tmp/d2 bs=65536 count=@BLOCKS@ 2>/dev/null
reach 300 || { echo "guest: no reply from the peer"; exit 3; }
ping -c 3 -W 2 @PEERIP@; echo "guest-ping n=1 rc=$?"
send() {
  echo "guest-sent n=$1 bytes=$(wc -c < /tmp/d$1) md5=$(md5sum < /tmp/d$1 | cut -d' ' -f1)"
  j=0; while [ $j -lt 120 ] && ! nc @PEERIP@ 500$1 < /tmp/d$1; do sleep 0.5; j=$((j+1)); done
  wait_file /tmp/a$1 5 3000
  grep -q ack$1 /tmp/a$1 || { echo "guest: no ack for transfer $1"; exit 4; }
  echo "guest-acked n=$1"
}
send 1
$ET -S $dev 2>&1 | grep -E '[rt]x[0-9]+_kicks' | tr -d ' ' | sed 's/^/guest-queue-stat /'
[ @ROUNDS@ = 1 ] && exit 0
# The host kills B's daemon now: wait to lose the peer (bounded), then for it to return.
i=0; while [ $i -lt 60 ] && ping -c 1 -W 1 @PEERIP@ >/dev/null 2>&1; do sleep 0.2; i=$((i+1)); done
ping -c 1 -W 1 @PEERIP@ >/dev/null 2>&1 && { echo "guest: the peer never went away"; exit 5; }
echo "guest-peer-lost"
reach 300 || { echo "guest: the peer did not come back"; exit 6; }
echo "guest-peer-back"
ping -c 3 -W 2 @PEERIP@; echo "guest-ping n=2 rc=$?"
send 2
exit 0
"#;
    SCRIPT
        .replace("@ME@", &role.to_string())
        .replace("@MYIP@", &me.overlay_ip)
        .replace("@PEERIP@", &peer.overlay_ip)
        .replace("@BYTES@", &TRANSFER.to_string())
        .replace("@BLOCKS@", &(TRANSFER / 65536).to_string())
        .replace("@ROUNDS@", "2")
}

/// A guest booting in `ns`: the harness (and so QEMU) runs inside the namespace.
struct Guest {
    child: Child,
    /// The serial console, written while the guest runs.
    serial: PathBuf,
    /// The harness's own output (the serial log again, QEMU's stderr, its verdict).
    out: PathBuf,
}

impl Guest {
    fn start(ns: &Netns, dir: &Path, role: u8, side: &Side, peer: &Side, sock: &Path) -> Self {
        // Two queue pairs: 2 * 2 + 2 MSI-X vectors (queues, config, control).
        let nic = format!(
            "-chardev socket,id=c0,path={},reconnect-ms=1000 \
             -netdev vhost-user,id=n0,chardev=c0,queues=2 \
             -device virtio-net-pci,netdev=n0,mac={},mq=on,vectors=6,romfile=",
            sock.display(),
            side.mac
        );
        let serial = dir.join(format!("guest-{role}.serial"));
        let out = dir.join(format!("guest-{role}.out"));
        let h = harness().display().to_string();
        let script = format!("sh:{}", guest_script(role, side, peer));
        let env = [
            format!("VM_NIC={nic}"),
            "VM_MEMFD=1".to_string(),
            format!("VM_FILES={}", ethtool_files().join(" ")),
            "VM_MEM=256".to_string(),
            "VM_TIMEOUT=400".to_string(),
            format!("VM_LOG={}", serial.display()),
            // The harness's scratch files stay in the test's directory, even when the
            // guest is killed before the harness can clean up.
            format!("TMPDIR={}", dir.display()),
        ];
        let mut args: Vec<&str> = vec!["env"];
        args.extend(env.iter().map(String::as_str));
        args.extend([h.as_str(), "run", "none", &script]);
        let child = ns.spawn(&args, Some(&out)).expect("start the guest");
        Self { child, serial, out }
    }

    fn serial(&self) -> String {
        std::fs::read_to_string(&self.serial).unwrap_or_default()
    }

    /// Waits (bounded) for the harness to finish; returns its status and output.
    fn finish(&mut self, timeout: Duration) -> (Option<i32>, String) {
        let end = Instant::now() + timeout;
        let status = loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                break st.code();
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        (
            status,
            std::fs::read_to_string(&self.out).unwrap_or_default(),
        )
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The host's ethtool and the shared libraries it loads (as `ldd` names them), the
/// dynamic loader included, for the guest's /opt.
fn ethtool_files() -> Vec<String> {
    let ethtool = ["/usr/sbin/ethtool", "/sbin/ethtool"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("ethtool is missing on the host: run `sudo scripts/setup.sh`");
    let out = Command::new("ldd")
        .arg(ethtool)
        .output()
        .expect("run ldd on ethtool");
    let mut files = vec![ethtool.to_string()];
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux... (0x...)"
        let path = l
            .split("=>")
            .last()
            .and_then(|r| r.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(p) = path {
            files.push(p.to_string());
        }
    }
    assert!(
        files.iter().any(|f| f.contains("ld-linux")),
        "no dynamic loader in `ldd {ethtool}`: {files:?}"
    );
    files
}

/// A daemon config with TSO on the vhost-user interface (64 KiB buffers) and a link
/// that carries 64 KiB frames whole.
fn with_tso(cfg: String) -> String {
    let cfg = cfg.replacen(
        "kind = \"vhost-user\"\n",
        "kind = \"vhost-user\"\noffload = true\n",
        1,
    );
    let cfg = cfg.replacen("encap = \"vnetp\"\n", "encap = \"vnetp\"\nmtu = 65000\n", 1);
    assert!(
        cfg.contains("offload = true") && cfg.contains("mtu = 65000"),
        "config layout changed: {cfg}"
    );
    cfg
}

/// Bytes per frame of a counter pair in a stats JSON object.
fn per_frame(v: &serde_json::Value, bytes: &str, packets: &str) -> u64 {
    v[bytes].as_u64().unwrap_or(0) / v[packets].as_u64().unwrap_or(0).max(1)
}

/// `key=value` from the first serial line starting with `prefix`.
fn field(out: &str, prefix: &str, key: &str) -> Option<String> {
    let line = out.lines().find(|l| {
        l.trim_start_matches("serial: ")
            .trim_start()
            .starts_with(prefix)
    })?;
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
}

fn daemon_log(d: &Daemon) -> String {
    std::fs::read_to_string(&d.log).unwrap_or_default()
}

#[test]
fn linux_guests_on_vhost_user_talk_across_the_overlay_and_survive_a_daemon_restart() {
    assert!(
        netns::is_root(),
        "this test needs root (network namespaces): run it with sudo"
    );
    vm_ready();
    let started = Instant::now();
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("vnetp-vug-{pid}"));
    let h = TwoHosts::new(&format!("vg{INDEX}-{pid}"), INDEX, false, &dir)
        .expect("build the two hosts");
    let (sock_a, sock_b) = (dir.join("vm-a.sock"), dir.join("vm-b.sock"));
    let cfg_a = with_tso(h.vhost_user_config(&h.side_a, &h.side_b, "a", LinkEncap::Vnetp, &sock_a));
    let cfg_b = with_tso(h.vhost_user_config(&h.side_b, &h.side_a, "b", LinkEncap::Vnetp, &sock_b));
    let da = h
        .start_daemon(&h.a, "a", &cfg_a, exe())
        .expect("daemon a starts");
    let mut db = h
        .start_daemon(&h.b, "b", &cfg_b, exe())
        .expect("daemon b starts");

    let mut gb = Guest::start(&h.b, &dir, 2, &h.side_b, &h.side_a, &sock_b);
    let mut ga = Guest::start(&h.a, &dir, 1, &h.side_a, &h.side_b, &sock_a);

    // Once transfer 1 is acknowledged, crash and restart B's daemon under the guests.
    let acked = netns::wait_for(Duration::from_secs(300), || {
        ga.serial().contains("guest-acked n=1") || matches!(ga.child.try_wait(), Ok(Some(_)))
    });
    let first_done = started.elapsed();
    let mut restarted_at = None;
    if acked && ga.serial().contains("guest-acked n=1") {
        db.kill();
        // B comes back only once guest A has seen it gone: a fixed pause could end
        // before a slow guest's unanswered pings did, and A would say the peer never
        // went away.
        let _ = netns::wait_for(Duration::from_secs(120), || {
            ga.serial().contains("guest-peer-lost") || matches!(ga.child.try_wait(), Ok(Some(_)))
        });
        db = h
            .start_daemon(&h.b, "b", &cfg_b, exe())
            .expect("daemon b restarts");
        restarted_at = Some(started.elapsed());
    }

    let (sa, out_a) = ga.finish(Duration::from_secs(300));
    let (sb, out_b) = gb.finish(Duration::from_secs(60));
    let stats_a: serde_json::Value =
        serde_json::from_str(&da.ctl("stats json").unwrap_or_default()).unwrap_or_default();
    let all = format!(
        "--- guest a ---\n{out_a}\n--- guest b ---\n{out_b}\n--- daemon a ---\n{}\n--- daemon b (after restart) ---\n{}\nstats b: {}",
        daemon_log(&da),
        daemon_log(&db),
        db.ctl("stats json").unwrap_or_default()
    );
    eprintln!(
        "timings: transfer 1 acked at {first_done:?}, daemon b restarted at {restarted_at:?}, all done at {:?}",
        started.elapsed()
    );
    for l in format!("{out_a}\n{out_b}").lines() {
        if l.contains("guest-") {
            eprintln!("{l}");
        }
    }
    assert_eq!(sa, Some(0), "guest a failed:\n{all}");
    assert_eq!(sb, Some(0), "guest b failed:\n{all}");
    assert!(
        restarted_at.is_some(),
        "daemon b was never restarted:\n{all}"
    );
    assert!(
        out_a.contains("driver=virtio_net") && out_b.contains("driver=virtio_net"),
        "both guests use virtio-net:\n{all}"
    );
    assert!(out_a.contains("guest-peer-lost"), "{all}");
    // Multiqueue and TSO, as each guest's own driver reports them.
    for (out, name) in [(&out_a, "a"), (&out_b, "b")] {
        assert_eq!(
            field(out, "guest-ethtool-L", "rc").as_deref(),
            Some("0"),
            "ethtool -L combined 2 in guest {name}:\n{all}"
        );
        assert!(
            out.lines()
                .any(|l| l.contains("guest-tso tcp-segmentation-offload:on")),
            "TSO on in guest {name}:\n{all}"
        );
    }
    // Large frames crossed: guest A's interface and the link moved frames bigger than
    // a 1500-byte MTU allows, on average (TSO frames whole, not cut to the MTU).
    let port_a = &stats_a["interfaces"][0]["port"];
    let link_a = &stats_a["links"][0];
    eprintln!(
        "bytes per frame: from guest a {}, over the link {}",
        per_frame(port_a, "rx_bytes", "rx_packets"),
        per_frame(link_a, "tx_bytes", "tx_packets")
    );
    assert!(
        per_frame(port_a, "rx_bytes", "rx_packets") > 1514,
        "guest a sent TSO frames: {port_a}\n{all}"
    );
    assert!(
        per_frame(link_a, "tx_bytes", "tx_packets") > 1514,
        "the link carried them whole: {link_a}\n{all}"
    );
    assert!(
        port_a["events"]["rx_gso_frames"].as_u64().unwrap_or(0) > 0,
        "the port counted TSO frames from guest a (ctl stats events): {port_a}\n{all}"
    );
    for n in ["1", "2"] {
        assert_eq!(
            field(&out_a, &format!("guest-ping n={n}"), "rc").as_deref(),
            Some("0"),
            "ping {n}:\n{all}"
        );
        let sent = field(&out_a, &format!("guest-sent n={n}"), "md5");
        let got = field(&out_b, &format!("guest-recv n={n}"), "md5");
        assert!(sent.is_some() && sent == got, "transfer {n} md5:\n{all}");
        assert_eq!(
            field(&out_b, &format!("guest-recv n={n}"), "bytes").as_deref(),
            Some(TRANSFER.to_string().as_str()),
            "transfer {n} length:\n{all}"
        );
    }
    // One connection per daemon: QEMU's setup went through the first time (an early
    // SET_VRING_ENABLE used to drop it), and the restarted daemon carried guest B's
    // traffic with the QEMU that was already running.
    for (d, name) in [(&da, "a"), (&db, "b (restarted)")] {
        assert_eq!(
            daemon_log(d).matches("guest connected").count(),
            1,
            "daemon {name} connections:\n{all}"
        );
    }
    let stats: serde_json::Value =
        serde_json::from_str(&db.ctl("stats json").expect("stats of b")).expect("stats JSON");
    let port = &stats["interfaces"][0]["port"];
    assert!(
        port["tx_bytes"].as_u64().unwrap_or(0) >= u64::from(TRANSFER)
            && port["rx_packets"].as_u64().unwrap_or(0) > 0,
        "the restarted daemon b carried transfer 2 into guest b and its answers out:\n{all}"
    );
    assert!(
        per_frame(port, "tx_bytes", "tx_packets") > 1514,
        "guest b (GUEST_TSO) took large frames whole: {port}\n{all}"
    );
    assert!(
        port["events"]["tx_gso_frames"].as_u64().unwrap_or(0) > 0,
        "guest b was handed TSO frames whole (ctl stats events): {port}\n{all}"
    );
    drop((da, db));
    let _ = std::fs::remove_dir_all(&dir);
}
