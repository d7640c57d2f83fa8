//! Frames per second through a vhost-user io-forward, ours against DPDK testpmd's, in
//! one run on this machine.
//!
//! Both sides get the same traffic: our virtio-user frontend sends on socket A and
//! receives on socket B (one thread), while one forwarding thread moves batches from A's
//! transmit ring to B's receive ring. "ours" is two `VhostUserPort`s with a loop of
//! `rx_batch`/`tx_batch` on one thread pinned to CPU 1; "testpmd" is `dpdk-testpmd --forward-mode=io`
//! with two `net_vhost` ports on one forwarding lcore (CPU 1); the traffic thread runs on
//! CPU 0 in both. Run as root:
//!
//! With a `vnetp` binary as second argument, a third column measures the whole
//! overlay: our frontend sends into a `vnetp run` daemon's vhost-user interface, routed
//! to a VNET/P link whose underlay is a loopback UDP socket; frames are counted where
//! they leave, at a UDP sink (one dataplane thread in the daemon).
//!
//! ```text
//! cargo build --release -p vnetp
//! cargo run --release -p virtio --example fwd_ratio -- [seconds] [target/release/vnetp]
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pkt::{Batch, HEADROOM, Mempool, Port};
use virtio::frontend::{VirtioUser, VirtioUserOptions};
use virtio::{VhostUserConfig, VhostUserPort};

/// Pins the calling thread to `cpu`, as testpmd pins its forwarding lcore (best effort).
fn pin(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

fn connect(sock: &Path) -> Result<VirtioUser, String> {
    let mut last = String::new();
    for _ in 0..600 {
        match VirtioUser::connect(sock, VirtioUserOptions::default()) {
            Ok(v) => return Ok(v),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("connect {}: {last}", sock.display()))
}

/// Sends `len`-byte frames on `tx` as fast as the ring takes them for `secs`, receiving
/// on `rx`; returns frames received per second.
fn pump(tx: &mut VirtioUser, rx: &mut VirtioUser, len: usize, secs: f64) -> Result<f64, String> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    let frames: Vec<&[u8]> = vec![&f; 32];
    // Warm up, then measure.
    let mut got = 0u64;
    let warm = Instant::now() + Duration::from_millis(300);
    while Instant::now() < warm {
        tx.send(&frames).map_err(|e| e.to_string())?;
        rx.recv(|_| {}).map_err(|e| e.to_string())?;
    }
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        tx.send(&frames).map_err(|e| e.to_string())?;
        got += rx.recv(|_| {}).map_err(|e| e.to_string())? as u64;
    }
    let el = start.elapsed().as_secs_f64();
    if std::env::var_os("FWD_RATIO_DEBUG").is_some() {
        eprintln!(
            "tx {:?} rx {:?} got {got} in {el:.2}s",
            tx.stats(),
            rx.stats()
        );
    }
    Ok(got as f64 / el)
}

fn ours(dir: &Path, len: usize, secs: f64) -> Result<f64, String> {
    let pool = Mempool::new(8192, HEADROOM + 12 + 9216).map_err(|e| e.to_string())?;
    let port = |name: &str, last: u8| {
        VhostUserPort::listen(
            VhostUserConfig {
                name: name.into(),
                socket: dir.join(format!("ours-{name}.sock")),
                mac: [0x52, 0x54, 0, 0, 0, last],
                mtu: 1500,
                ..Default::default()
            },
            pool.clone(),
        )
        .map_err(|e| e.to_string())
    };
    let (mut a, mut b) = (port("a", 1)?, port("b", 2)?);
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let fwd = std::thread::spawn(move || {
        // The forwarding core, like testpmd's lcore 1.
        pin(1);
        let mut batch = Batch::new();
        while !s.load(Ordering::Relaxed) {
            if a.rx_batch(&mut batch) > 0 || !batch.is_empty() {
                b.tx_batch(&mut batch);
                // Like testpmd's io mode: what the peer ring cannot take is dropped.
                batch.clear();
            }
        }
    });
    let mut x = connect(&dir.join("ours-a.sock"))?;
    let mut y = connect(&dir.join("ours-b.sock"))?;
    let r = pump(&mut x, &mut y, len, secs);
    stop.store(true, Ordering::Relaxed);
    let _ = fwd.join();
    r
}

fn testpmd(dir: &Path, len: usize, secs: f64) -> Result<f64, String> {
    let (a, b) = (
        dir.join(format!("tp-{len}-a.sock")),
        dir.join(format!("tp-{len}-b.sock")),
    );
    let log = dir.join(format!("testpmd-{len}.log"));
    let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut child = Command::new("stdbuf")
        .args(["-oL", "dpdk-testpmd", "-l", "0,1", "--no-huge", "-m", "256"])
        .args([
            "--no-shconf",
            "--no-pci",
            "--file-prefix",
            "vnetp-fwd-ratio",
        ])
        .arg("--vdev")
        .arg(format!("net_vhost0,iface={},queues=1", a.display()))
        .arg("--vdev")
        .arg(format!("net_vhost1,iface={},queues=1", b.display()))
        .args(["--", "--forward-mode=io", "--auto-start", "--nb-cores=1"])
        .args(["--total-num-mbufs=8192", "--txd=512", "--rxd=512"])
        .stdin(Stdio::piped())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("dpdk-testpmd: {e} (install Debian package dpdk-dev)"))?;
    let result = (|| {
        let mut x = connect(&a)?;
        let mut y = connect(&b)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("Press enter to exit")
        {
            if Instant::now() > deadline {
                return Err("testpmd did not start forwarding".to_string());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        pump(&mut x, &mut y, len, secs)
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Frames per second from our frontend through a `vnetp run` daemon into its UDP
/// underlay, counted at a loopback UDP sink.
fn overlay(dir: &Path, vnetp: &Path, len: usize, secs: f64) -> Result<f64, String> {
    use std::net::UdpSocket;
    use std::sync::atomic::AtomicU64;
    let sink = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let sink_addr = sink.local_addr().map_err(|e| e.to_string())?;
    sink.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let sock = dir.join("overlay-vm0.sock");
    let cfg = format!(
        "[host]\nname = \"bench\"\nunderlay = {{ kind = \"udp\", bind = \"127.0.0.1:0\" }}\n\n\
         [[link]]\nname = \"sink\"\npeer = \"{sink_addr}\"\nencap = \"vnetp\"\n\n\
         [[interface]]\nname = \"vm0\"\nkind = \"vhost-user\"\nsocket = \"{}\"\nmac = \"52:54:00:00:00:01\"\n\n\
         [[route]]\nsrc = \"any\"\ndst = \"52:54:00:00:00:02\"\nto = {{ link = \"sink\" }}\n",
        sock.display()
    );
    let cfg_path = dir.join("overlay.toml");
    std::fs::write(&cfg_path, cfg).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.join("overlay.log")).map_err(|e| e.to_string())?;
    let mut child = Command::new(vnetp)
        .args(["run", "--config"])
        .arg(&cfg_path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("{}: {e}", vnetp.display()))?;
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (c, s) = (Arc::clone(&count), Arc::clone(&stop));
    let counter = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !s.load(Ordering::Relaxed) {
            if sink.recv(&mut buf).is_ok() {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let result = (|| {
        let mut x = connect(&sock)?;
        let mut f = vec![0u8; len];
        f[..6].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x88, 0xb5]);
        let frames: Vec<&[u8]> = vec![&f; 32];
        let warm = Instant::now() + Duration::from_millis(300);
        while Instant::now() < warm {
            x.send(&frames).map_err(|e| e.to_string())?;
        }
        let before = count.load(Ordering::Relaxed);
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(secs);
        while Instant::now() < end {
            if x.send(&frames).map_err(|e| e.to_string())? == 0 {
                std::thread::yield_now();
            }
        }
        let got = count.load(Ordering::Relaxed) - before;
        Ok(got as f64 / start.elapsed().as_secs_f64())
    })();
    stop.store(true, Ordering::Relaxed);
    let _ = counter.join();
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn main() -> Result<(), String> {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    // The traffic generator's core, like testpmd's main lcore 0.
    pin(0);
    let dir: PathBuf = std::env::temp_dir().join(format!("vnetp-fwd-ratio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let vnetp: Option<PathBuf> = std::env::args().nth(2).map(PathBuf::from);
    println!(
        "| frame | ours io-fwd (Mfps) | testpmd vhost io-fwd (Mfps) | ours / testpmd | vnetp guest -> underlay (Mfps) |"
    );
    println!("|------:|------:|------:|------:|------:|");
    for len in [64usize, 1500] {
        let o = ours(&dir, len, secs)?;
        let t = testpmd(&dir, len, secs)?;
        let v = match &vnetp {
            Some(exe) => format!("{:.3}", overlay(&dir, exe, len, secs)? / 1e6),
            None => "-".into(),
        };
        println!(
            "| {len} B | {:.3} | {:.3} | {:.2} | {v} |",
            o / 1e6,
            t / 1e6,
            o / t
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
