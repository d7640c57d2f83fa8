//! The VFIO path on a real kernel: a QEMU (TCG) guest with an emulated Intel 82576
//! behind a virtual intel-iommu (tests/vm/harness.sh), where vnetp's igb driver claims
//! the PF through vfio-pci and exchanges frames with this test over QEMU's
//! `-netdev dgram` wire (one Ethernet frame per UDP datagram on loopback).
//!
//! Needs QEMU >= 8.0 with the igb device (`sudo scripts/setup.sh` installs it) and a
//! cached guest kernel (the test builds the cache itself, downloading the kernel
//! package once). About 10 s per guest boot on two cores.

use std::io::Read;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The guest NIC's MAC (QEMU `-device igb,mac=...`).
const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x01];
/// The host's end of the wire, as the guest payload addresses it.
const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const GUEST_MAGIC: &[u8; 8] = b"VNETP-GT";
const HOST_MAGIC: &[u8; 8] = b"VNETP-HT";
/// Frames each way.
const FRAMES: u32 = 64;

// Same frame layout as tests/vm/igb_guest.rs.
fn frame_len(seq: u32) -> usize {
    60 + (seq as usize * 97) % 1455
}

fn build(dst: [u8; 6], src: [u8; 6], magic: &[u8; 8], seq: u32) -> Vec<u8> {
    let len = frame_len(seq);
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(magic);
    f.extend_from_slice(&seq.to_be_bytes());
    let header = f.len();
    f.extend((header..len).map(|i| {
        (i as u32)
            .wrapping_mul(7)
            .wrapping_add(seq.wrapping_mul(13)) as u8
    }));
    f
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn harness() -> PathBuf {
    repo().join("tests/vm/harness.sh")
}

/// QEMU with igb and the guest image; builds the image cache when missing.
fn vm_ready() {
    let has_igb = Command::new("qemu-system-x86_64")
        .args(["-device", "help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("\"igb\""))
        .unwrap_or(false);
    assert!(
        has_igb,
        "QEMU with the igb device is missing: run `sudo scripts/setup.sh` (it installs QEMU from bookworm-backports)"
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

/// Builds the guest payload as a static binary and returns its path.
fn guest_payload() -> PathBuf {
    static_example("igb_vm_guest")
}

/// Builds the `nicdrv` example `name` as a static binary (it runs inside the guest,
/// which has no libc) and returns its path.
fn static_example(name: &str) -> PathBuf {
    static_example_of("nicdrv", name)
}

/// [`static_example`] for an example of package `package`.
fn static_example_of(package: &str, name: &str) -> PathBuf {
    const TRIPLE: &str = "x86_64-unknown-linux-gnu";
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(repo())
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            package,
            "--example",
            name,
            "--target",
            TRIPLE,
        ])
        // Only the target's artifacts get these flags (build scripts stay dynamic).
        .env_remove("RUSTFLAGS")
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static")
        .stdin(Stdio::null())
        .output()
        .expect("run cargo build for a guest program");
    assert!(
        out.status.success(),
        "building the static guest program {name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from);
    let path = target.join(TRIPLE).join("release/examples").join(name);
    assert!(path.exists(), "no guest program at {}", path.display());
    path
}

/// A free UDP port on loopback (for QEMU's end of the wire).
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

/// One guest run: the harness's exit status and its output (serial console included).
struct GuestRun {
    status: Option<i32>,
    output: String,
}

/// Boots the guest (mode pf-vfio) with a dgram wire whose host end is `host`, runs the
/// payload with `args`, and calls `on_frame` for every frame the guest sends until the
/// guest exits. `on_frame` returns frames to send back into the guest.
fn run_guest(
    host: &UdpSocket,
    payload: &Path,
    args: &[&str],
    on_frame: impl FnMut(&[u8]) -> Vec<Vec<u8>>,
) -> GuestRun {
    run_guest_in("pf-vfio", &[], host, payload, args, on_frame)
}

/// [`run_guest`] in harness mode `mode`, with extra harness environment `env`.
fn run_guest_in(
    mode: &str,
    env: &[(&str, &str)],
    host: &UdpSocket,
    payload: &Path,
    args: &[&str],
    mut on_frame: impl FnMut(&[u8]) -> Vec<Vec<u8>>,
) -> GuestRun {
    let host_port = host.local_addr().expect("host addr").port();
    let qemu_port = free_port();
    let nic = format!(
        "-device pcie-root-port,id=rp0,chassis=1,slot=1 \
         -netdev dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port={qemu_port},remote.type=inet,remote.host=127.0.0.1,remote.port={host_port} \
         -device igb,bus=rp0,netdev=n0,mac=52:54:00:12:34:01"
    );
    let log = std::env::temp_dir().join(format!(
        "vnetp-vfio-vm-{}-{qemu_port}.log",
        std::process::id()
    ));
    let mut child = Command::new(harness())
        .arg("run")
        .arg(mode)
        .arg(payload)
        .args(args)
        .env("VM_NIC", nic)
        .env("VM_TIMEOUT", "120")
        .env("VM_LOG", &log)
        // After the defaults, so a test's own VM_TIMEOUT wins.
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tests/vm/harness.sh");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    host.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(200);
    let mut buf = vec![0u8; 65536];
    let status = loop {
        match host.recv_from(&mut buf) {
            Ok((n, _)) => {
                for reply in on_frame(&buf[..n]) {
                    host.send_to(&reply, ("127.0.0.1", qemu_port))
                        .expect("send to the guest");
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("host socket: {e}"),
        }
        if let Some(st) = child.try_wait().expect("wait for the harness") {
            break st.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
    };
    let output = format!(
        "{}{}",
        out_reader.join().unwrap_or_default(),
        err_reader.join().unwrap_or_default()
    );
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(log.with_extension("log.qemu"));
    GuestRun { status, output }
}

/// `key=value` from the guest's `guest-result` line.
fn result_field(output: &str, key: &str) -> Option<u64> {
    let line = output.lines().find(|l| l.contains("guest-result "))?;
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
}

/// TCP payload of the guest's TSO frame (same in tests/vm/igb_guest.rs).
const TSO_PAYLOAD: usize = 20_000;
/// UDP flows the host sends for RSS, two good frames each, and the frames among them
/// sent with a bad UDP checksum.
const RSS_FLOWS: u16 = 16;
const RSS_BAD: u16 = 4;

/// RSS test frame `idx` of flow `flow` (10.9.0.1:10000+flow -> 10.9.0.2:4789), with
/// a correct UDP checksum when `good`, a wrong one otherwise.
fn rss_frame(flow: u16, idx: u16, good: bool) -> Vec<u8> {
    let (src, dst) = (Ipv4Addr::new(10, 9, 0, 1), Ipv4Addr::new(10, 9, 0, 2));
    let payload_len = 120 + usize::from(flow) * 9;
    let udp_len = 8 + payload_len;
    let mut f = Vec::with_capacity(34 + udp_len);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&HOST_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + udp_len) as u16;
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        17,
        0,
        0,
    ]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    let c = offload::checksum::internet_checksum(&f[14..34], 0);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&(10_000 + flow).to_be_bytes());
    f.extend_from_slice(&4789u16.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(b"VNETP-RS");
    f.extend_from_slice(&flow.to_be_bytes());
    f.extend_from_slice(&idx.to_be_bytes());
    f.push(u8::from(good));
    f.extend((0..payload_len - 13).map(|i| (i as u8).wrapping_add(flow as u8)));
    offload::checksum::fill_udp_checksum_v4(src, dst, &mut f[34..]).expect("udp checksum");
    if !good {
        f[40] ^= 0x5a;
    }
    f
}

/// The RSS frames the host sends: every flow twice, the first RSS_BAD of them bad.
fn rss_frames() -> Vec<(u16, Vec<u8>)> {
    (0..RSS_FLOWS)
        .flat_map(|flow| (0..2).map(move |idx| (flow, idx)))
        .map(|(flow, idx)| (flow, rss_frame(flow, idx, !(idx == 1 && flow < RSS_BAD))))
        .collect()
}

/// The queue (of 2) the 82576 picks for RSS flow `flow` under the Microsoft key: the
/// Toeplitz hash of addresses and ports, RETA entry `hash & 0x7f`, entries dealt
/// round-robin over the queues by the driver.
fn rss_queue(flow: u16) -> usize {
    let h = offload::rss::flow_hash(
        &offload::rss::DEFAULT_KEY,
        Ipv4Addr::new(10, 9, 0, 1).into(),
        Ipv4Addr::new(10, 9, 0, 2).into(),
        Some((10_000 + flow, 4789)),
    );
    (h & 0x7f) as usize % 2
}

/// Checks the segments the device made of the guest's TSO frame: MTU-sized, valid
/// IPv4 header and TCP checksums, contiguous sequence numbers, the payload whole.
fn check_tso_segments(segs: &[Vec<u8>], out: &str) {
    assert_eq!(
        segs.len(),
        TSO_PAYLOAD.div_ceil(1460),
        "TSO segments on the wire:\n{out}"
    );
    let mut payload = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        assert!(s.len() <= 1514, "segment {i} is {} bytes", s.len());
        assert!(
            offload::checksum::verify_ipv4_header(&s[14..34]),
            "segment {i}: IPv4 header checksum"
        );
        let ip = |at: usize| Ipv4Addr::new(s[at], s[at + 1], s[at + 2], s[at + 3]);
        let total = usize::from(u16::from_be_bytes([s[16], s[17]]));
        assert_eq!(total + 14, s.len(), "segment {i}: IPv4 total length");
        let tcp = &s[34..];
        assert!(
            offload::checksum::verify_tcp_v4(ip(26), ip(30), tcp),
            "segment {i}: TCP checksum"
        );
        let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        assert_eq!(
            seq as usize,
            1000 + payload.len(),
            "segment {i}: sequence number"
        );
        // PSH only on the last segment would be the real 82576 (DTXTCPFLGL/H); QEMU's
        // segmentation (net_tx_pkt.c) clears FIN/PSH on every segment, the last too.
        if i + 1 < segs.len() {
            assert_eq!(tcp[13] & 0x09, 0, "segment {i}: FIN/PSH before the last");
        }
        payload.extend_from_slice(&tcp[20..]);
    }
    let want: Vec<u8> = (0..TSO_PAYLOAD).map(|i| (i * 11 + 5) as u8).collect();
    assert!(
        payload == want,
        "the TSO payload arrived changed or incomplete ({} bytes)",
        payload.len()
    );
}

#[test]
fn igb_pf_on_vfio_exchanges_frames_with_the_host() {
    vm_ready();
    let payload = guest_payload();
    let host = UdpSocket::bind("127.0.0.1:0").expect("host socket");
    let mut from_guest: Vec<Option<usize>> = vec![None; FRAMES as usize];
    let (mut unexpected, mut replied) = (0, false);
    let mut segments: Vec<Vec<u8>> = Vec::new();
    let mut rss_sent = false;
    let n = FRAMES.to_string();
    let run = run_guest(
        &host,
        &payload,
        &[
            "--frames",
            &n,
            "--host-frames",
            &n,
            "--queues",
            "2",
            "--rss-tso",
        ],
        |f| {
            // Segments of the guest's TSO frame: TCP from port 40000.
            if f.len() > 54 && f[12..14] == [0x08, 0x00] && f[23] == 6 && f[34..36] == [0x9c, 0x40]
            {
                segments.push(f.to_vec());
                let got: usize = segments.iter().map(|s| s.len() - 54).sum();
                if got >= TSO_PAYLOAD && !rss_sent {
                    rss_sent = true;
                    return rss_frames().into_iter().map(|(_, f)| f).collect();
                }
                return Vec::new();
            }
            let seq = f
                .get(22..26)
                .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]));
            match seq {
                Some(s)
                    if s < FRAMES && f == build(HOST_MAC, GUEST_MAC, GUEST_MAGIC, s).as_slice() =>
                {
                    from_guest[s as usize] = Some(f.len());
                }
                _ => unexpected += 1,
            }
            // Once every guest frame arrived the guest is receiving: answer with ours.
            if !replied && from_guest.iter().all(Option::is_some) {
                replied = true;
                return (0..FRAMES)
                    .map(|s| build(GUEST_MAC, HOST_MAC, HOST_MAGIC, s))
                    .collect();
            }
            Vec::new()
        },
    );
    let out = &run.output;
    assert_eq!(run.status, Some(0), "guest run failed:\n{out}");
    let got: Vec<usize> = from_guest.iter().flatten().copied().collect();
    assert_eq!(
        got.len(),
        FRAMES as usize,
        "host saw {} of {FRAMES} guest frames:\n{out}",
        got.len()
    );
    let want_bytes: u64 = (0..FRAMES).map(|s| frame_len(s) as u64).sum();
    assert_eq!(got.iter().map(|&l| l as u64).sum::<u64>(), want_bytes);
    assert_eq!(unexpected, 0, "unexpected frames on the wire:\n{out}");
    // The guest's own accounting: driver counters and the device's GPRC/GPTC.
    assert_eq!(
        result_field(out, "tx_frames"),
        Some(u64::from(FRAMES)),
        "{out}"
    );
    assert_eq!(result_field(out, "tx_bytes"), Some(want_bytes), "{out}");
    assert_eq!(
        result_field(out, "rx_frames"),
        Some(u64::from(FRAMES)),
        "{out}"
    );
    assert_eq!(result_field(out, "rx_bytes"), Some(want_bytes), "{out}");
    assert_eq!(result_field(out, "hw_rx"), Some(u64::from(FRAMES)), "{out}");
    assert_eq!(result_field(out, "hw_tx"), Some(u64::from(FRAMES)), "{out}");
    // TSO: the device cut the guest's 20 000-byte frame into checked MTU segments.
    check_tso_segments(&segments, out);
    // RSS: each UDP flow on the queue its Toeplitz hash picks, both queues used; the
    // device's checksum verdicts: good frames marked, bad ones not.
    let mut want = [0u64; 2];
    for (flow, _) in rss_frames() {
        want[rss_queue(flow)] += 1;
    }
    assert!(
        want.iter().all(|&n| n > 0),
        "the chosen flows must spread: {want:?}"
    );
    let rss = |key: &str| tagged_field(out, "guest-rss ", key).and_then(|v| v.parse::<u64>().ok());
    assert_eq!(
        (rss("q0"), rss("q1")),
        (Some(want[0]), Some(want[1])),
        "frames per queue:\n{out}"
    );
    let total = u64::from(RSS_FLOWS) * 2;
    let bad = u64::from(RSS_BAD);
    assert_eq!(rss("udp"), Some(total), "{out}");
    assert_eq!(
        rss("valid"),
        Some(total - bad),
        "good frames marked DATA_VALID:\n{out}"
    );
    assert_eq!(rss("bad_flagged"), Some(0), "{out}");
    assert_eq!(rss("csum_bad"), Some(bad), "{out}");
    assert!(
        !out.contains("DMAR: ["),
        "IOMMU faults in the guest:\n{out}"
    );
    assert!(
        !out.contains("vtd_iommu_translate"),
        "QEMU saw translation failures:\n{out}"
    );
}

/// `--tails` frame `seq` (same in tests/vm/igb_guest.rs).
fn tail_frame(seq: u32, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&HOST_MAC);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(b"VNETP-ZC");
    f.extend_from_slice(&seq.to_be_bytes());
    let header = f.len();
    f.extend((header..len).map(|i| (i as u32).wrapping_mul(29).wrapping_add(seq) as u8));
    f
}

#[test]
fn igb_pf_gathers_frame_tails_from_separately_mapped_memory() {
    vm_ready();
    let payload = guest_payload();
    let host = UdpSocket::bind("127.0.0.1:0").expect("host socket");
    let want = [tail_frame(0, 1514), tail_frame(1, 9014)];
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut segments: Vec<Vec<u8>> = Vec::new();
    let mut unexpected = 0;
    let run = run_guest(&host, &payload, &["--tails"], |f| {
        if f.len() > 54 && f[12..14] == [0x08, 0x00] && f[23] == 6 && f[34..36] == [0x9c, 0x40] {
            segments.push(f.to_vec());
        } else if f.get(14..22) == Some(b"VNETP-ZC".as_slice()) {
            got.push(f.to_vec());
        } else {
            unexpected += 1;
        }
        Vec::new()
    });
    let out = &run.output;
    assert_eq!(run.status, Some(0), "guest run failed:\n{out}");
    assert!(
        got == want,
        "the 1514- and 9014-byte frames arrived changed or incomplete ({:?} bytes):\n{out}",
        got.iter().map(Vec::len).collect::<Vec<_>>()
    );
    check_tso_segments(&segments, out);
    assert_eq!(unexpected, 0, "unexpected frames on the wire:\n{out}");
    let tails = |key: &str| tagged_field(out, "guest-tails ", key);
    assert_eq!(tails("zero_copy"), Some("3"), "{out}");
    assert_eq!(tails("tail_copied"), Some("0"), "{out}");
    assert_eq!(
        tails("tokens"),
        Some("3"),
        "every tail came back to its owner:\n{out}"
    );
    assert_eq!(tails("lost"), Some("0"), "{out}");
    assert!(
        !out.contains("DMAR: ["),
        "IOMMU faults in the guest:\n{out}"
    );
    assert!(
        !out.contains("vtd_iommu_translate"),
        "QEMU saw translation failures:\n{out}"
    );
}

#[test]
fn an_iommu_fault_in_the_guest_fails_the_run() {
    vm_ready();
    let payload = guest_payload();
    let host = UdpSocket::bind("127.0.0.1:0").expect("host socket");
    let run = run_guest(&host, &payload, &["--provoke-fault"], |_| Vec::new());
    let out = &run.output;
    assert_eq!(
        run.status,
        Some(122),
        "the harness must turn an IOMMU fault into status 122:\n{out}"
    );
    assert!(
        out.contains("DMAR: [DMA Read") && out.contains("fault addr 0xdead0000"),
        "the guest kernel must log the fault:\n{out}"
    );
}

/// The guest script of one side of the two-guest overlay test: `vnetp run` with a vfio
/// underlay on the 82576 and a tap interface, then ping and a checksummed TCP transfer
/// from side 2 to side 1 across the overlay.
fn overlay_guest_script(me: u8, peer: u8) -> String {
    const SCRIPT: &str = r#"
cat > /tmp/h.toml <<'CFG'
[host]
name = "h@ME@"
underlay = { kind = "vfio", pci = "0000:01:00.0", ip = "10.0.0.@ME@", port = 9000 }
control = "/tmp/h.sock"

[[link]]
name = "peer"
peer = "10.0.0.@PEER@:9000"
encap = "vnetp"

[[interface]]
name = "vm0"
kind = "tap"
mac = "52:54:00:aa:00:0@ME@"

[[route]]
src = "any"
dst = "52:54:00:aa:00:0@PEER@"
to = { link = "peer" }

[[route]]
src = "any"
dst = "ff:ff:ff:ff:ff:ff"
to = { link = "peer" }

[[route]]
src = "any"
dst = "52:54:00:aa:00:0@ME@"
to = { interface = "vm0" }

[[route]]
src = "any"
dst = "ff:ff:ff:ff:ff:ff"
to = { interface = "vm0" }
CFG
ip link set lo up
/opt/vnetp run --config /tmp/h.toml > /tmp/vnetp.log 2>&1 &
i=0; while [ $i -lt 600 ] && ! ip link show vm0 >/dev/null 2>&1; do sleep 0.1; i=$((i+1)); done
# The listeners come before the address: once the peer's ping is answered it connects
# at once, without retrying, so a listener started after a slow `seq` was refused.
# The receiver's stdin must stay open: a background job's stdin is /dev/null, busybox
# nc answers its EOF with shutdown(SHUT_WR), and the sending nc exits as soon as it
# reads that FIN, after however many 1 KiB chunks it had written.
if [ @ME@ = 1 ]; then sleep 600 | nc -l -p 5000 > /tmp/recv & ncpid=$!; else nc -l -p 5001 > /tmp/ack & fi
ip addr add 192.168.77.@ME@/24 dev vm0 && ip link set vm0 up || { cat /tmp/vnetp.log; exit 2; }
# 4788895 bytes.
seq 1 700000 > /tmp/data
ok=0
for i in $(seq 1 40); do if ping -c 1 -W 2 192.168.77.@PEER@ >/dev/null 2>&1; then ok=1; break; fi; done
[ $ok = 1 ] || { echo "guest: no reply from the peer"; cat /tmp/vnetp.log; exit 3; }
ping -c 3 -W 3 192.168.77.@PEER@; pingrc=$?
if [ @ME@ = 1 ]; then
  want=$(wc -c < /tmp/data); i=0
  while [ $i -lt 1500 ] && [ $(wc -c < /tmp/recv) -lt $want ]; do sleep 0.1; i=$((i+1)); done
  kill $ncpid
  got=$(md5sum < /tmp/recv | cut -d' ' -f1); exp=$(md5sum < /tmp/data | cut -d' ' -f1)
  echo done | nc 192.168.77.@PEER@ 5001
  echo "guest-result side=1 ping=$pingrc bytes=$(wc -c < /tmp/recv)/$want md5=$got expected=$exp"
  /opt/vnetp ctl --socket /tmp/h.sock stats
  [ $pingrc = 0 ] && [ "$got" = "$exp" ]
else
  nc 192.168.77.1 5000 < /tmp/data
  # Stay up until side 1 has everything (powering off would drop unsent data).
  i=0; while [ $i -lt 1500 ] && ! grep -q done /tmp/ack; do sleep 0.1; i=$((i+1)); done
  echo "guest-result side=2 ping=$pingrc"
  /opt/vnetp ctl --socket /tmp/h.sock stats
  [ $pingrc = 0 ]
fi
"#;
    SCRIPT
        .replace("@ME@", &me.to_string())
        .replace("@PEER@", &peer.to_string())
}

/// Builds `vnetp` itself as a static binary for the guests; returns a stripped copy.
fn guest_vnetp() -> PathBuf {
    const TRIPLE: &str = "x86_64-unknown-linux-gnu";
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(repo())
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "vnetp",
            "--bin",
            "vnetp",
            "--target",
            TRIPLE,
        ])
        .env_remove("RUSTFLAGS")
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static")
        .stdin(Stdio::null())
        .output()
        .expect("run cargo build for the guest vnetp");
    assert!(
        out.status.success(),
        "building the static vnetp failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from);
    let built = target.join(TRIPLE).join("release/vnetp");
    // A smaller initramfs boots faster; the copy keeps the build's file untouched.
    let dir = std::env::temp_dir().join(format!("vnetp-vfio-vm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let copy = dir.join("vnetp");
    std::fs::copy(&built, &copy).expect("copy vnetp");
    let _ = Command::new("strip").arg(&copy).status();
    copy
}

#[test]
fn two_guests_run_the_overlay_on_vfio_underlays() {
    vm_ready();
    let vnetp = guest_vnetp();
    let (pa, pb) = (free_port(), free_port());
    let nic = |local: u16, remote: u16, n: u8| {
        format!(
            "-device pcie-root-port,id=rp0,chassis=1,slot=1 \
             -netdev dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port={local},remote.type=inet,remote.host=127.0.0.1,remote.port={remote} \
             -device igb,bus=rp0,netdev=n0,mac=52:54:00:12:34:0{n}"
        )
    };
    let run = |me: u8, peer: u8, nic: String| {
        let vnetp = vnetp.clone();
        std::thread::spawn(move || {
            let out = Command::new(harness())
                .arg("run")
                .arg("pf-vfio")
                .arg(format!("sh:{}", overlay_guest_script(me, peer)))
                .env("VM_NIC", nic)
                .env("VM_FILES", &vnetp)
                .env("VM_TIMEOUT", "300")
                .stdin(Stdio::null())
                .output()
                .expect("start tests/vm/harness.sh");
            GuestRun {
                status: out.status.code(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            }
        })
    };
    let a = run(1, 2, nic(pa, pb, 1));
    let b = run(2, 1, nic(pb, pa, 2));
    let (a, b) = (a.join().expect("guest 1"), b.join().expect("guest 2"));
    let _ = std::fs::remove_dir_all(vnetp.parent().unwrap_or(Path::new("/nonexistent")));
    let both = format!(
        "--- guest 1 ---\n{}\n--- guest 2 ---\n{}",
        a.output, b.output
    );
    assert_eq!(a.status, Some(0), "guest 1 (receiver) failed:\n{both}");
    assert_eq!(b.status, Some(0), "guest 2 (sender) failed:\n{both}");
    let line = a
        .output
        .lines()
        .find(|l| l.contains("guest-result side=1"))
        .unwrap_or_default();
    assert!(
        line.contains("ping=0") && line.contains("bytes=4788895/4788895"),
        "{both}"
    );
    assert!(!both.contains("DMAR: ["), "IOMMU faults:\n{both}");
}

#[test]
fn msix_vector_0_is_routed_to_its_eventfd() {
    vm_ready();
    let payload = guest_payload();
    let host = UdpSocket::bind("127.0.0.1:0").expect("host socket");
    let run = run_guest(&host, &payload, &["--msix"], |_| Vec::new());
    let out = &run.output;
    assert_eq!(run.status, Some(0), "guest run failed:\n{out}");
    let line = out
        .lines()
        .find(|l| l.contains("guest-msix "))
        .unwrap_or_default();
    // VFIO routes the vector and its trigger reaches the eventfd. Whether the device
    // itself fires it is printed (`device_fired`), not required: under QEMU 10's igb
    // an IMS/ICS write from the PF did not raise vector 0 here (open question).
    assert!(
        line.contains("before=0") && line.contains("routed=true") && !line.contains("triggered=0"),
        "{out}"
    );
}

/// The MAC of the VF in the SR-IOV runs (tests/vm/igb_guest.rs `VF_MAC`).
const VF_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x10];

/// Checks one frame of the test pattern from `src`; returns its sequence number.
fn test_frame_seq(f: &[u8], src: [u8; 6]) -> Option<u32> {
    let s = f.get(22..26)?;
    let s = u32::from_be_bytes([s[0], s[1], s[2], s[3]]);
    (s < FRAMES && f == build(HOST_MAC, src, GUEST_MAGIC, s).as_slice()).then_some(s)
}

/// Host side of a frame exchange with a guest port whose MAC is `guest_mac`: records
/// the test frames, answers with ours once all arrived, answers ARP for 10.9.0.1 from
/// `arp_from`, and counts everything else.
struct HostPeer {
    guest_mac: [u8; 6],
    from_guest: Vec<Option<usize>>,
    replied: bool,
    arp_requests: u32,
    other: u32,
}

impl HostPeer {
    fn new(guest_mac: [u8; 6]) -> Self {
        Self {
            guest_mac,
            from_guest: vec![None; FRAMES as usize],
            replied: false,
            arp_requests: 0,
            other: 0,
        }
    }

    fn on_frame(&mut self, f: &[u8]) -> Vec<Vec<u8>> {
        if let Some(s) = test_frame_seq(f, self.guest_mac) {
            self.from_guest[s as usize] = Some(f.len());
        } else if let Some(reply) = arp_reply(f) {
            self.arp_requests += 1;
            return vec![reply];
        } else {
            self.other += 1;
        }
        if !self.replied && self.from_guest.iter().all(Option::is_some) {
            self.replied = true;
            return (0..FRAMES)
                .map(|s| build(self.guest_mac, HOST_MAC, HOST_MAGIC, s))
                .collect();
        }
        Vec::new()
    }

    fn check(&self, out: &str) {
        let got: Vec<usize> = self.from_guest.iter().flatten().copied().collect();
        assert_eq!(
            got.len(),
            FRAMES as usize,
            "host saw {} of {FRAMES} guest frames:\n{out}",
            got.len()
        );
        let want_bytes: u64 = (0..FRAMES).map(|s| frame_len(s) as u64).sum();
        assert_eq!(
            got.iter().map(|&l| l as u64).sum::<u64>(),
            want_bytes,
            "{out}"
        );
        assert_eq!(
            result_field(out, "tx_frames"),
            Some(u64::from(FRAMES)),
            "{out}"
        );
        assert_eq!(result_field(out, "tx_bytes"), Some(want_bytes), "{out}");
        assert_eq!(
            result_field(out, "rx_frames"),
            Some(u64::from(FRAMES)),
            "{out}"
        );
        assert_eq!(result_field(out, "rx_bytes"), Some(want_bytes), "{out}");
        assert!(
            !out.contains("DMAR: ["),
            "IOMMU faults in the guest:\n{out}"
        );
        assert!(
            !out.contains("vtd_iommu_translate"),
            "QEMU saw translation failures:\n{out}"
        );
    }
}

/// The ARP reply for 10.9.0.1 (HOST_MAC) to an ARP request for it; None otherwise.
fn arp_reply(f: &[u8]) -> Option<Vec<u8>> {
    const HOST_IP: [u8; 4] = [10, 9, 0, 1];
    if f.len() < 42 || f[12..14] != [0x08, 0x06] || f[20..22] != [0, 1] || f[38..42] != HOST_IP {
        return None;
    }
    let (sha, spa) = (&f[22..28], &f[28..32]);
    let mut r = Vec::with_capacity(42);
    r.extend_from_slice(sha);
    r.extend_from_slice(&HOST_MAC);
    r.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2]);
    r.extend_from_slice(&HOST_MAC);
    r.extend_from_slice(&HOST_IP);
    r.extend_from_slice(sha);
    r.extend_from_slice(spa);
    Some(r)
}

/// `key=value` from the first line containing `tag`.
fn tagged_field<'a>(output: &'a str, tag: &str, key: &str) -> Option<&'a str> {
    let line = output.lines().find(|l| l.contains(tag))?;
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

#[test]
fn igb_vf_driver_on_vfio_exchanges_frames_while_linux_igb_owns_the_pf() {
    vm_ready();
    let payload = guest_payload();
    let host = UdpSocket::bind("127.0.0.1:0").expect("host socket");
    let mut peer = HostPeer::new(VF_MAC);
    let n = FRAMES.to_string();
    let run = run_guest_in(
        "vf-vfio",
        &[("VM_NUMVFS", "1")],
        &host,
        &payload,
        &["--vf", "--frames", &n, "--host-frames", &n],
        |f| peer.on_frame(f),
    );
    let out = &run.output;
    for l in out.lines().filter(|l| l.contains("guest")) {
        eprintln!("{l}");
    }
    assert_eq!(run.status, Some(0), "guest run failed:\n{out}");
    // Linux igb speaks only the base mailbox API: our API 1.1 request was NACKed.
    assert!(out.contains("mailbox API 0"), "{out}");
    peer.check(out);
}

#[test]
fn linux_igbvf_works_against_our_userspace_pf_mailbox() {
    vm_ready();
    let payload = guest_payload();
    let host = UdpSocket::bind("127.0.0.1:0").expect("host socket");
    let mut peer = HostPeer::new(GUEST_MAC);
    let n = FRAMES.to_string();
    // Two vCPUs: igbvf busy-waits for mailbox replies with its lock held, so the
    // userspace PF must run on the other one.
    let run = run_guest_in(
        "pf-vfio",
        &[
            ("VM_VFIO_SRIOV", "1"),
            ("VM_SMP", "2"),
            ("VM_TIMEOUT", "150"),
        ],
        &host,
        &payload,
        &["--pf-sriov", "--frames", &n, "--host-frames", &n],
        |f| {
            // ARP from the VF counts only when it comes from the VF's MAC.
            if f.get(6..12) == Some(VF_MAC.as_slice()) || f.get(6..12) == Some(GUEST_MAC.as_slice())
            {
                peer.on_frame(f)
            } else {
                peer.other += 1;
                Vec::new()
            }
        },
    );
    let out = &run.output;
    for l in out.lines().filter(|l| l.contains("guest")) {
        eprintln!("{l}");
    }
    eprintln!(
        "host: ARP requests from the VF {}, other frames {}",
        peer.arp_requests, peer.other
    );
    assert_eq!(run.status, Some(0), "guest run failed:\n{out}");
    // igbvf's reset handshake got its MAC from our PF, and the netdev came up.
    assert_eq!(
        tagged_field(out, "guest-sriov ", "carrier"),
        Some("1"),
        "{out}"
    );
    assert_eq!(
        tagged_field(out, "guest-sriov ", "mac"),
        Some("52:54:00:12:34:10"),
        "{out}"
    );
    assert_eq!(
        tagged_field(out, "guest-mbx ", "vf0_cts"),
        Some("true"),
        "{out}"
    );
    let acked: u64 = tagged_field(out, "guest-mbx ", "mbx_acked")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(acked >= 2, "VF_RESET and SET_MAC_ADDR at least:\n{out}");
    // Frames from igbvf reach the wire, and our ARP replies reach igbvf.
    assert!(
        peer.arp_requests >= 1,
        "no ARP request from the VF on the wire:\n{out}"
    );
    let replies: u32 = tagged_field(out, "guest-sriov ", "arp_replies")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(replies >= 1, "igbvf saw no ARP reply:\n{out}");
    // The PF itself still moves frames on its own pool (queue 1: its own requester ID).
    peer.check(out);
}

/// The guest script of the daemon SR-IOV test: VF 0 exists before `vnetp run` claims
/// the PF with a `vf` interface for it; then Linux igbvf takes the VF and ARPs for the
/// host through the NIC, while vnetp's poll loop answers the VF's mailbox.
const DAEMON_VF_SCRIPT: &str = r#"
pf=/sys/bus/pci/devices/$VFIO_BDF
echo 1 > $pf/sriov_numvfs || { echo "guest-sriov error=numvfs"; exit 3; }
vf=$(basename $(readlink $pf/virtfn0))
cat > /tmp/h.toml <<CFG
[host]
name = "h"
underlay = { kind = "vfio", pci = "$VFIO_BDF", ip = "10.0.0.1", port = 9000 }
control = "/tmp/h.sock"

[[interface]]
name = "guestvf"
kind = "vf"
pci = "$vf"
mac = "52:54:00:12:34:10"
CFG
ip link set lo up
RUST_LOG=info /opt/vnetp run --config /tmp/h.toml > /tmp/vnetp.log 2>&1 &
i=0; while [ $i -lt 600 ] && [ ! -S /tmp/h.sock ]; do sleep 0.1; i=$((i+1)); done
[ -S /tmp/h.sock ] || { cat /tmp/vnetp.log; echo "guest-sriov error=daemon"; exit 5; }
echo igbvf > /sys/bus/pci/devices/$vf/driver_override
if [ -e /sys/bus/pci/devices/$vf/driver ]; then echo $vf > /sys/bus/pci/devices/$vf/driver/unbind; fi
echo $vf > /sys/bus/pci/drivers_probe
i=0; while [ $i -lt 300 ] && ! ls /sys/bus/pci/devices/$vf/net >/dev/null 2>&1; do sleep 0.2; i=$((i+1)); done
n=$(ls /sys/bus/pci/devices/$vf/net 2>/dev/null | head -1)
[ -n "$n" ] || { cat /tmp/vnetp.log; echo "guest-sriov error=no-netdev"; exit 4; }
ip link set $n up
ip addr add 10.9.0.2/24 dev $n
i=0; while [ $i -lt 300 ] && [ "$(cat /sys/class/net/$n/carrier 2>/dev/null)" != 1 ]; do sleep 0.2; i=$((i+1)); done
out=$(arping -c 3 -w 10 -I $n 10.9.0.1 2>&1)
replies=$(echo "$out" | sed -n 's/^Received \([0-9]*\) .*/\1/p')
echo "guest-sriov netdev=$n carrier=$(cat /sys/class/net/$n/carrier) mac=$(cat /sys/class/net/$n/address) arp_replies=${replies:-0}"
/opt/vnetp ctl --socket /tmp/h.sock stats | grep -E 'mbx|vf_' | sed 's/^/guest-stats: /'
sed 's/^/guest-vnetp: /' /tmp/vnetp.log | grep -v ' TRACE ' | tail -20
[ "${replies:-0}" -ge 1 ]
"#;

#[test]
fn vnetp_run_with_a_vf_interface_serves_linux_igbvf() {
    vm_ready();
    let vnetp = guest_vnetp();
    let host = UdpSocket::bind("127.0.0.1:0").expect("host socket");
    let mut arp_requests = 0;
    let files = vnetp.display().to_string();
    let run = run_guest_in(
        "pf-vfio",
        &[
            ("VM_VFIO_SRIOV", "1"),
            ("VM_SMP", "2"),
            ("VM_TIMEOUT", "150"),
            ("VM_FILES", &files),
        ],
        &host,
        Path::new(&format!("sh:{DAEMON_VF_SCRIPT}")),
        &[],
        |f| {
            if f.get(6..12) != Some(VF_MAC.as_slice()) {
                return Vec::new();
            }
            match arp_reply(f) {
                Some(r) => {
                    arp_requests += 1;
                    vec![r]
                }
                None => Vec::new(),
            }
        },
    );
    let _ = std::fs::remove_dir_all(vnetp.parent().unwrap_or(Path::new("/nonexistent")));
    let out = &run.output;
    for l in out.lines().filter(|l| l.contains("guest")) {
        eprintln!("{l}");
    }
    assert_eq!(run.status, Some(0), "guest run failed:\n{out}");
    assert_eq!(
        tagged_field(out, "guest-sriov ", "carrier"),
        Some("1"),
        "{out}"
    );
    assert_eq!(
        tagged_field(out, "guest-sriov ", "mac"),
        Some("52:54:00:12:34:10"),
        "the MAC of the vf interface in vnetp's config:\n{out}"
    );
    assert!(arp_requests >= 1, "no ARP request from the VF:\n{out}");
    assert!(
        out.contains("mbx_acked"),
        "vnetp's stats show the mailbox:\n{out}"
    );
    assert!(!out.contains("DMAR: ["), "IOMMU faults:\n{out}");
}

/// The guest script of the VF-token test: `vnetp run` owns the PF (vfio-pci with
/// enable_sriov=1) with a `vf` interface and no `vf_token` configured, so it generates
/// one, sets it on the PF and logs the QEMU option. The VF stays on vfio-pci, and a
/// second process, our VF driver (tests/vm/vf_token_guest.rs), opens it as QEMU's
/// `vf-token=` would: without a token, with a wrong one, then with the logged one.
const VF_TOKEN_SCRIPT: &str = r#"
pf=/sys/bus/pci/devices/$VFIO_BDF
echo 1 > $pf/sriov_numvfs || { echo "guest-token error=numvfs"; exit 3; }
vf=$(basename $(readlink $pf/virtfn0))
# vfio-pci captures the VFs of a PF it owns (driver_override); bind it if not probed.
if [ "$(basename "$(readlink /sys/bus/pci/devices/$vf/driver)")" != vfio-pci ]; then
  echo vfio-pci > /sys/bus/pci/devices/$vf/driver_override
  if [ -e /sys/bus/pci/devices/$vf/driver ]; then echo $vf > /sys/bus/pci/devices/$vf/driver/unbind; fi
  echo $vf > /sys/bus/pci/drivers_probe
fi
echo "guest: VF $vf on $(basename "$(readlink /sys/bus/pci/devices/$vf/driver)")"
cat > /tmp/h.toml <<CFG
[host]
name = "h"
underlay = { kind = "vfio", pci = "$VFIO_BDF", ip = "10.0.0.1", port = 9000 }
control = "/tmp/h.sock"

[[interface]]
name = "guestvf"
kind = "vf"
pci = "$vf"
mac = "52:54:00:12:34:10"
CFG
ip link set lo up
/opt/vnetp run --config /tmp/h.toml > /tmp/vnetp.log 2>&1 &
i=0; while [ $i -lt 600 ] && ! grep -q ' running' /tmp/vnetp.log; do sleep 0.1; i=$((i+1)); done
grep -q ' running' /tmp/vnetp.log || { cat /tmp/vnetp.log; echo "guest-token error=daemon"; exit 5; }
token=$(sed -n 's/.*vf-token=\([0-9a-f-]\{36\}\).*/\1/p' /tmp/vnetp.log | head -1)
[ -n "$token" ] || { cat /tmp/vnetp.log; echo "guest-token error=no-token-logged"; exit 6; }
echo "guest-token-qemu: $(grep -o -e "-device vfio-pci,host=$vf,vf-token=$token" /tmp/vnetp.log | head -1)"
/opt/vf_token_guest --vf $vf --token $token --wrong-token 0badc0de-0000-4000-8000-000000000000 --frames 64
rc=$?
/opt/vnetp ctl --socket /tmp/h.sock stats | grep -E 'mbx|vf_' | sed 's/^/guest-stats: /'
sed 's/^/guest-vnetp: /' /tmp/vnetp.log | grep -v ' TRACE ' | tail -20
exit $rc
"#;

/// The VF user of the VF-token test (a `nicdrv` example), built statically.
fn guest_vf_token_user() -> PathBuf {
    static_example("vf_token_guest")
}

#[test]
fn a_vf_of_a_vnetp_owned_pf_opens_only_with_its_vf_token() {
    vm_ready();
    let built = guest_vnetp();
    let user = guest_vf_token_user();
    // Our own directory: guest_vnetp's is shared by the tests of this process.
    let dir = std::env::temp_dir().join(format!("vnetp-vf-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (vnetp, user_copy) = (dir.join("vnetp"), dir.join("vf_token_guest"));
    std::fs::copy(&built, &vnetp).expect("copy vnetp");
    std::fs::copy(&user, &user_copy).expect("copy the VF token guest program");
    let _ = Command::new("strip").arg(&user_copy).status();
    let host = UdpSocket::bind("127.0.0.1:0").expect("host socket");
    let mut peer = HostPeer::new(VF_MAC);
    let files = format!("{} {}", vnetp.display(), user_copy.display());
    let run = run_guest_in(
        "pf-vfio",
        &[
            ("VM_VFIO_SRIOV", "1"),
            ("VM_SMP", "2"),
            ("VM_TIMEOUT", "150"),
            ("VM_FILES", &files),
        ],
        &host,
        Path::new(&format!("sh:{VF_TOKEN_SCRIPT}")),
        &[],
        |f| {
            // Only the VF's frames: the PF (vnetp's underlay) shares the wire.
            if f.get(6..12) == Some(VF_MAC.as_slice()) {
                peer.on_frame(f)
            } else {
                Vec::new()
            }
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
    let out = &run.output;
    for l in out.lines().filter(|l| l.contains("guest")) {
        eprintln!("{l}");
    }
    assert_eq!(run.status, Some(0), "guest run failed:\n{out}");
    // vnetp generated a token and logged the exact QEMU option for the VF.
    let qemu = out
        .lines()
        .find_map(|l| l.split_once("guest-token-qemu: ").map(|(_, q)| q.trim()))
        .unwrap_or_default();
    assert!(
        qemu.starts_with("-device vfio-pci,host=0000:01:10.0,vf-token=") && qemu.len() == 80,
        "no QEMU option line in vnetp's log:\n{out}"
    );
    // Without the token and with a wrong one the kernel refuses the VF, and the vfio
    // crate says why and what to do.
    let none = out
        .lines()
        .find(|l| l.contains("guest-token-error none: "))
        .unwrap_or_default();
    assert!(
        none.contains(
            "0000:01:10.0: VF token required: its PF 0000:01:00.0 is owned by a VFIO user"
        ) && none.contains("-device vfio-pci,host=0000:01:10.0,vf-token=<uuid>"),
        "{out}"
    );
    let wrong = out
        .lines()
        .find(|l| l.contains("guest-token-error wrong: "))
        .unwrap_or_default();
    assert!(
        wrong.contains("the VF token does not match the one the PF owner set on 0000:01:00.0"),
        "{out}"
    );
    // With the right one our VF driver did the reset handshake with vnetp's PF mailbox
    // (its MAC is the one vnetp's config assigns) and frames flowed both ways.
    assert_eq!(
        tagged_field(out, "guest-token-vf ", "mac"),
        Some("52:54:00:12:34:10"),
        "{out}"
    );
    assert_eq!(
        tagged_field(out, "guest-token-vf ", "api"),
        Some("2"),
        "vnetp's PF speaks mailbox API 1.1 (igb's code 2):\n{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("guest-stats:") && l.contains("mbx_acked")),
        "vnetp's stats show the mailbox:\n{out}"
    );
    peer.check(out);
}

/// The guest script of the zero-copy test: `vnetp run` with a vfio underlay on the
/// 82576 (jumbo frames on: NIC MTU 9000) and two vhost-user interfaces, vm0 with the
/// default zero-copy threshold and vm1 copying every frame (threshold 0), both routed
/// over a link to the host (10.9.0.1, the test). Our frontend sends the test frames on
/// vm0 (and one TSO frame, which the engine cuts for the link's MTU), then frames for a
/// while on each interface for the frames/s comparison (TCG:
/// indicative only), and the daemon's stats are printed as JSON.
const ZERO_COPY_SCRIPT: &str = r#"
cat > /tmp/h.toml <<CFG
[host]
name = "zc"
underlay = { kind = "vfio", pci = "$VFIO_BDF", ip = "10.9.0.2", port = 9000, mtu = 9000 }
control = "/tmp/h.sock"

[[link]]
name = "host"
peer = "10.9.0.1:9000"
encap = "vnetp"
mtu = 8000

[[interface]]
name = "vm0"
kind = "vhost-user"
socket = "/tmp/vm0.sock"
mac = "52:54:00:aa:00:01"
mtu = 8000
# 64 KiB packet buffers: the port offers TSO to the guest (HOST_TSO4/6)
offload = true

[[interface]]
name = "vm1"
kind = "vhost-user"
socket = "/tmp/vm1.sock"
mac = "52:54:00:aa:00:03"
mtu = 8000
zero_copy_threshold = 0

[[route]]
src = "any"
dst = "52:54:00:aa:00:02"
to = { link = "host" }

[[route]]
src = "any"
dst = "52:54:00:aa:00:04"
to = { link = "host" }
CFG
ip link set lo up
/opt/vnetp run --config /tmp/h.toml > /tmp/vnetp.log 2>&1 &
vnetp=$!
i=0; while [ $i -lt 600 ] && ! grep -q ' running' /tmp/vnetp.log; do sleep 0.1; i=$((i+1)); done
grep -q ' running' /tmp/vnetp.log || { cat /tmp/vnetp.log; echo "guest-zc error=daemon"; exit 5; }
/opt/zero_copy_guest --socket /tmp/vm0.sock --mac 52:54:00:aa:00:01 --dst 52:54:00:aa:00:02 --frames 64 --tso @TSO@
rc=$?
if [ $rc = 0 ]; then
  for len in 1400 8000; do
    /opt/zero_copy_guest --socket /tmp/vm0.sock --mac 52:54:00:aa:00:01 --rate 2 --rate-len $len --rate-dst 52:54:00:aa:00:02 | sed 's/^guest-zc /guest-zc-rate threshold=default /'
    /opt/zero_copy_guest --socket /tmp/vm1.sock --mac 52:54:00:aa:00:03 --rate 2 --rate-len $len --rate-dst 52:54:00:aa:00:04 | sed 's/^guest-zc /guest-zc-rate threshold=0 /'
  done
fi
echo "guest-stats-json: $(/opt/vnetp ctl --socket /tmp/h.sock stats --json | tr -d '\n')"
kill $vnetp; wait $vnetp
sed 's/^/guest-vnetp: /' /tmp/vnetp.log | grep -v -e ' TRACE ' -e ' DEBUG ' | tail -60
exit $rc
"#;

/// The frontend of the zero-copy test (a `virtio` example), built statically.
fn guest_zero_copy_frontend() -> PathBuf {
    static_example_of("virtio", "zero_copy_guest")
}

/// Test frame `seq` of the zero-copy guest (same in virtio/examples/zero_copy_guest.rs).
fn zc_frame(dst: [u8; 6], src: [u8; 6], seq: u32, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(b"VNETP-ZG");
    f.extend_from_slice(&seq.to_be_bytes());
    let header = f.len();
    f.extend((header..len).map(|i| (i as u32).wrapping_mul(31).wrapping_add(seq * 7) as u8));
    f
}

/// What the host saw of the zero-copy guest's traffic, decapsulated.
#[derive(Default)]
struct ZeroCopyPeer {
    /// Per test frame: arrived byte for byte.
    got: Vec<bool>,
    /// Test frames that arrived changed (or twice).
    bad: u32,
    /// Frames of the rate runs.
    rate: u64,
    /// IPv4 fragments (the jumbo MTU should make them unnecessary).
    fragments: u32,
    /// Inner TCP frames: the segments the engine cut the guest's TSO frame into.
    tso: Vec<Vec<u8>>,
    other: u32,
}

/// Test frames per size (1400 and 8000 bytes).
const ZC_FRAMES: u32 = 64;
/// TCP payload of the guest's TSO frame (one 9 KiB transmit buffer holds it).
const ZC_TSO_PAYLOAD: usize = 9000;

/// Checks the inner segments of the guest's TSO frame after the engine cut it for the
/// link's MTU (8000): checksums valid, sequence numbers contiguous, payload whole
/// (the pattern of virtio/examples/zero_copy_guest.rs `tso_frame`).
fn check_zc_tso_segments(segs: &[Vec<u8>], out: &str) {
    assert!(
        segs.len() >= 2,
        "the 9000-byte TSO payload needs 2 segments at MTU 8000:\n{out}"
    );
    let mut payload = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        assert!(s.len() <= 14 + 8000, "segment {i} is {} bytes", s.len());
        assert!(
            offload::checksum::verify_ipv4_header(&s[14..34]),
            "segment {i}: IPv4 header checksum"
        );
        let tcp = &s[34..];
        assert!(
            offload::checksum::verify_tcp_v4([10, 77, 0, 1].into(), [10, 77, 0, 2].into(), tcp),
            "segment {i}: TCP checksum"
        );
        let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        assert_eq!(
            seq as usize,
            1000 + payload.len(),
            "segment {i}: sequence number"
        );
        payload.extend_from_slice(&tcp[20..]);
    }
    let want: Vec<u8> = (0..ZC_TSO_PAYLOAD).map(|i| (i * 11 + 5) as u8).collect();
    assert!(
        payload == want,
        "the TSO payload arrived changed or incomplete ({} bytes)",
        payload.len()
    );
}
const ZC_SRC: [u8; 6] = [0x52, 0x54, 0x00, 0xaa, 0x00, 0x01];
const ZC_DST: [u8; 6] = [0x52, 0x54, 0x00, 0xaa, 0x00, 0x02];

impl ZeroCopyPeer {
    fn on_frame(&mut self, f: &[u8]) -> Vec<Vec<u8>> {
        if let Some(reply) = arp_reply(f) {
            return vec![reply];
        }
        // IPv4 (no options) + UDP to port 9000 from vnetp's underlay (10.9.0.2).
        let is_udp = f.len() >= 42
            && f[12..14] == [0x08, 0x00]
            && f[14] == 0x45
            && f[23] == 17
            && f[26..30] == [10, 9, 0, 2];
        if !is_udp {
            self.other += 1;
            return Vec::new();
        }
        if u16::from_be_bytes([f[20], f[21]]) & 0x3fff != 0 {
            self.fragments += 1;
            return Vec::new();
        }
        let inner = &f[42..];
        match inner.get(14..22) {
            Some(b"VNETP-ZG") => {
                let seq = u32::from_be_bytes([inner[22], inner[23], inner[24], inner[25]]);
                let len = if seq < ZC_FRAMES { 1400 } else { 8000 };
                let i = seq as usize;
                if i < self.got.len()
                    && !self.got[i]
                    && inner == zc_frame(ZC_DST, ZC_SRC, seq, len).as_slice()
                {
                    self.got[i] = true;
                } else {
                    self.bad += 1;
                }
            }
            Some(b"VNETP-ZR") => self.rate += 1,
            _ if inner.len() > 54 && inner[12..14] == [0x08, 0x00] && inner[23] == 6 => {
                self.tso.push(inner.to_vec());
            }
            _ => self.other += 1,
        }
        Vec::new()
    }
}

#[test]
fn vhost_user_frames_leave_through_the_igb_pf_without_a_copy() {
    vm_ready();
    let built = guest_vnetp();
    let frontend = guest_zero_copy_frontend();
    // Our own directory: guest_vnetp's is shared by the tests of this process.
    let dir = std::env::temp_dir().join(format!("vnetp-zero-copy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (vnetp, frontend_copy) = (dir.join("vnetp"), dir.join("zero_copy_guest"));
    std::fs::copy(&built, &vnetp).expect("copy vnetp");
    std::fs::copy(&frontend, &frontend_copy).expect("copy the zero-copy guest program");
    let _ = Command::new("strip").arg(&frontend_copy).status();
    let host = UdpSocket::bind("127.0.0.1:0").expect("host socket");
    // Room for the rate runs' bursts of 8 KiB frames (best effort: up to rmem_max);
    // the test frames come 16 at a time.
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&host, 4 << 20);
    let mut peer = ZeroCopyPeer {
        got: vec![false; 2 * ZC_FRAMES as usize],
        ..ZeroCopyPeer::default()
    };
    let files = format!("{} {}", vnetp.display(), frontend_copy.display());
    let run = run_guest_in(
        "pf-vfio",
        &[
            ("VM_SMP", "2"),
            ("VM_MEM", "768"),
            ("VM_TIMEOUT", "150"),
            ("VM_FILES", &files),
        ],
        &host,
        Path::new(&format!(
            "sh:{}",
            ZERO_COPY_SCRIPT.replace("@TSO@", &ZC_TSO_PAYLOAD.to_string())
        )),
        &[],
        |f| peer.on_frame(f),
    );
    let _ = std::fs::remove_dir_all(&dir);
    let out = &run.output;
    for l in out.lines().filter(|l| l.contains("guest-zc")) {
        eprintln!("{l}");
    }
    assert_eq!(run.status, Some(0), "guest run failed:\n{out}");
    assert_eq!(
        tagged_field(out, "guest-zc socket=/tmp/vm0.sock", "sent"),
        Some("128/128"),
        "{out}"
    );
    let missing: Vec<usize> = (0..peer.got.len()).filter(|&i| !peer.got[i]).collect();
    assert!(
        missing.is_empty() && peer.bad == 0,
        "test frames missing {missing:?}, {} changed:\n{out}",
        peer.bad
    );
    assert_eq!(
        peer.fragments, 0,
        "the jumbo NIC MTU carries 8000-byte frames whole:\n{out}"
    );
    assert_eq!(
        tagged_field(out, "guest-zc socket=/tmp/vm0.sock", "tso_sent"),
        Some("1"),
        "{out}"
    );
    check_zc_tso_segments(&peer.tso, out);
    let json = out
        .lines()
        .find_map(|l| l.split_once("guest-stats-json: ").map(|(_, j)| j))
        .unwrap_or_default();
    let stats: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("stats JSON ({e}):\n{out}"));
    let port = |name: &str| {
        stats["interfaces"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["name"] == name))
            .map(|i| i["port"]["events"].clone())
            .unwrap_or_default()
    };
    let (vm0, vm1, nic) = (port("vm0"), port("vm1"), &stats["underlay"]["events"]);
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64();
    assert!(
        n(&vm0, "tx_zero_copy").unwrap_or(0) >= 2 * u64::from(ZC_FRAMES),
        "vm0 lent every test frame's tail: {vm0}\n{out}"
    );
    assert_eq!(n(&vm0, "dma_map_failed"), Some(0), "{vm0}\n{out}");
    assert_eq!(
        n(&vm1, "tx_zero_copy"),
        Some(0),
        "vm1 copies every frame: {vm1}"
    );
    assert!(
        n(nic, "tx_zero_copy").unwrap_or(0) >= 2 * u64::from(ZC_FRAMES),
        "the 82576 gathered the tails in place: {nic}\n{out}"
    );
    assert_eq!(
        n(nic, "tx_tail_copied"),
        Some(0),
        "no tail was copied: {nic}\n{out}"
    );
    assert!(
        out.contains("guest memory mapped for NIC reads"),
        "the daemon logs the mapping:\n{out}"
    );
    assert!(
        !out.contains("DMAR: ["),
        "IOMMU faults in the guest:\n{out}"
    );
    assert!(
        !out.contains("vtd_iommu_translate"),
        "QEMU saw translation failures:\n{out}"
    );
}
