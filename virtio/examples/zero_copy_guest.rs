//! The guest side of the zero-copy QEMU test (tests/vfio_vm.rs
//! `vhost_user_frames_leave_through_the_igb_pf_without_a_copy`): runs inside the TCG
//! guest next to `vnetp run`, plays a VM's virtio-net driver on the daemon's vhost-user
//! interface with our frontend ([`VirtioUser`]), and sends
//!
//! - `--frames N`: N frames of 1400 bytes, then N of 8000 (sequence numbers 0..2N, the
//!   pattern of [`test_frame`], which the host side rebuilds and compares byte for
//!   byte), 16 at a time;
//! - `--tso BYTES` (optional): then one TCP/IPv4 frame with a BYTES-long payload (the
//!   pattern of [`tso_frame`]) as a guest's TCP stack hands it over: a TSO request
//!   (gso_size 1460, partial checksum) in its virtio-net header;
//! - `--rate SECS` (optional): frames of `--rate-len` bytes to `--rate-dst` for SECS
//!   seconds, as fast as the backend takes them; prints the frames per second.
//!
//! Prints one `guest-zc` line with what it did. Every loop ends by count or time.
//!
//! ```text
//! zero_copy_guest --socket /tmp/vm0.sock --mac 52:54:00:aa:00:01 --dst 52:54:00:aa:00:02 --frames 64
//! zero_copy_guest --socket /tmp/vm1.sock --mac 52:54:00:aa:00:03 --rate 2 --rate-len 1400 --rate-dst 52:54:00:aa:00:04
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use virtio::VirtioUser;
use virtio::frontend::VirtioUserOptions;

/// Sizes of the test frames: the first N frames, then the next N.
const SIZES: [usize; 2] = [1400, 8000];
/// The test frames' EtherType (local experimental) and marker.
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];
const MAGIC: &[u8; 8] = b"VNETP-ZG";
/// The rate frames' marker (the host counts them, not checks them).
const RATE_MAGIC: &[u8; 8] = b"VNETP-ZR";
/// Frames handed to the frontend per send.
const BATCH: usize = 32;
/// Test frames in flight at most.
const PACE: usize = 16;
/// How long the guest keeps trying to reach the daemon's socket, and to send.
const CONNECT_TIME: Duration = Duration::from_secs(20);
const SEND_TIME: Duration = Duration::from_secs(30);

/// Test frame `seq` of `len` bytes from `src` to `dst` (same in tests/vfio_vm.rs).
fn test_frame(dst: [u8; 6], src: [u8; 6], seq: u32, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETHERTYPE);
    f.extend_from_slice(MAGIC);
    f.extend_from_slice(&seq.to_be_bytes());
    let header = f.len();
    f.extend((header..len).map(|i| (i as u32).wrapping_mul(31).wrapping_add(seq * 7) as u8));
    f
}

/// The TSO frame: IPv4 10.77.0.1:40000 -> 10.77.0.2:5001, sequence number 1000,
/// payload byte `i` = `i * 11 + 5`, checksums complete (same in tests/vfio_vm.rs).
fn tso_frame(dst: [u8; 6], src: [u8; 6], payload: usize) -> Vec<u8> {
    let mut f = vec![0u8; 54];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&[10, 77, 0, 1]);
    f[30..34].copy_from_slice(&[10, 77, 0, 2]);
    let ip = offload::checksum::internet_checksum(&f[14..34], 0);
    f[24..26].copy_from_slice(&ip.to_be_bytes());
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[36..38].copy_from_slice(&5001u16.to_be_bytes());
    f[38..42].copy_from_slice(&1000u32.to_be_bytes());
    f[46] = 0x50;
    f[47] = 0x18;
    f[48..50].copy_from_slice(&65535u16.to_be_bytes());
    f.extend((0..payload).map(|i| (i * 11 + 5) as u8));
    let _ = offload::checksum::fill_tcp_checksum_v4(
        [10, 77, 0, 1].into(),
        [10, 77, 0, 2].into(),
        &mut f[34..],
    );
    f
}

struct Args {
    socket: PathBuf,
    mac: [u8; 6],
    dst: [u8; 6],
    frames: u32,
    tso: usize,
    rate: Option<Duration>,
    rate_len: usize,
    rate_dst: [u8; 6],
}

fn mac(s: &str) -> Result<[u8; 6], String> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut m {
        let p = parts.next().ok_or_else(|| format!("bad MAC {s:?}"))?;
        *b = u8::from_str_radix(p, 16).map_err(|_| format!("bad MAC {s:?}"))?;
    }
    if parts.next().is_some() {
        return Err(format!("bad MAC {s:?}"));
    }
    Ok(m)
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        socket: PathBuf::new(),
        mac: [0; 6],
        dst: [0xff; 6],
        frames: 0,
        tso: 0,
        rate: None,
        rate_len: 1400,
        rate_dst: [0xff; 6],
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{k}: bad number {v:?}"))
        };
        match k.as_str() {
            "--socket" => a.socket = v.into(),
            "--mac" => a.mac = mac(&v)?,
            "--dst" => a.dst = mac(&v)?,
            "--frames" => a.frames = u32::try_from(num(&v)?).map_err(|e| e.to_string())?,
            "--tso" => a.tso = num(&v)? as usize,
            "--rate" => a.rate = Some(Duration::from_secs(num(&v)?)),
            "--rate-len" => a.rate_len = num(&v)? as usize,
            "--rate-dst" => a.rate_dst = mac(&v)?,
            _ => return Err(format!("unknown option {k}")),
        }
    }
    if a.socket.as_os_str().is_empty() {
        return Err("--socket is required".into());
    }
    if a.tso > 9000 {
        return Err("--tso: at most 9000 bytes (one transmit buffer)".into());
    }
    if !(60..=SIZES[1]).contains(&a.rate_len) {
        return Err(format!("--rate-len must be 60..={}", SIZES[1]));
    }
    Ok(a)
}

fn connect(a: &Args) -> Result<VirtioUser, String> {
    let opts = VirtioUserOptions {
        // One buffer holds the largest frame behind its header, so its bytes after the
        // copied head lie in one range: the backend may lend them out.
        buf_size: 9 * 1024 + 128,
        tso: a.tso > 0,
        ..VirtioUserOptions::default()
    };
    let end = Instant::now() + CONNECT_TIME;
    loop {
        match VirtioUser::connect(&a.socket, opts) {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > end => {
                return Err(format!("connect {}: {e}", a.socket.display()));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Sends every frame of `frames`, [`PACE`] at a time, each group once the backend
/// is done with the one before (so no queue on the way, such as the underlay's
/// neighbour resolution queue of 32 or the host's socket, overflows); returns how many
/// went.
fn send_all(g: &mut VirtioUser, frames: &[Vec<u8>]) -> Result<usize, String> {
    let end = Instant::now() + SEND_TIME;
    let mut sent = 0;
    while sent < frames.len() && Instant::now() < end {
        if g.tx_pending(0).map_err(|e| e.to_string())? > 0 {
            g.wait(Duration::from_millis(10))
                .map_err(|e| e.to_string())?;
            continue;
        }
        let upto = (sent + PACE).min(frames.len());
        sent += g.send(&frames[sent..upto]).map_err(|e| e.to_string())?;
        // Frames for us (broadcasts) would fill the receive ring: take them.
        g.recv(|_| {}).map_err(|e| e.to_string())?;
    }
    Ok(sent)
}

/// Waits (bounded) until the backend returned every transmit buffer; returns how many
/// it still holds.
fn wait_idle(g: &mut VirtioUser) -> Result<usize, String> {
    let end = Instant::now() + SEND_TIME;
    let mut pending = g.tx_pending(0).map_err(|e| e.to_string())?;
    while pending > 0 && Instant::now() < end {
        g.wait(Duration::from_millis(10))
            .map_err(|e| e.to_string())?;
        pending = g.tx_pending(0).map_err(|e| e.to_string())?;
    }
    Ok(pending)
}

/// Sends rate frames for `secs`; returns (frames the backend took, seconds).
fn pump(g: &mut VirtioUser, a: &Args, secs: Duration) -> Result<(u64, f64), String> {
    let mut f = vec![0u8; a.rate_len];
    f[..6].copy_from_slice(&a.rate_dst);
    f[6..12].copy_from_slice(&a.mac);
    f[12..14].copy_from_slice(&ETHERTYPE);
    f[14..22].copy_from_slice(RATE_MAGIC);
    let frames = vec![f; BATCH];
    let start = Instant::now();
    let end = start + secs;
    let mut sent = 0u64;
    while Instant::now() < end {
        let n = g.send(&frames).map_err(|e| e.to_string())?;
        sent += n as u64;
        if n == 0 {
            g.wait(Duration::from_millis(1))
                .map_err(|e| e.to_string())?;
        }
        g.recv(|_| {}).map_err(|e| e.to_string())?;
    }
    Ok((sent, start.elapsed().as_secs_f64()))
}

fn run(a: &Args) -> Result<(), String> {
    let mut g = connect(a)?;
    let mut line = format!("guest-zc socket={}", a.socket.display());
    if a.frames > 0 {
        let frames: Vec<Vec<u8>> = SIZES
            .iter()
            .enumerate()
            .flat_map(|(i, &len)| (0..a.frames).map(move |s| (i as u32 * a.frames + s, len)))
            .map(|(seq, len)| test_frame(a.dst, a.mac, seq, len))
            .collect();
        let sent = send_all(&mut g, &frames)?;
        line += &format!(" sent={sent}/{}", frames.len());
    }
    if a.tso > 0 {
        let mut f = tso_frame(a.dst, a.mac, a.tso);
        let meta = offload::gso::tso_request(&mut f, 1500).map_err(|e| e.to_string())?;
        wait_idle(&mut g)?;
        let n = g.send_with(0, &meta, &[f]).map_err(|e| e.to_string())?;
        line += &format!(" tso_sent={n} gso_size={}", meta.gso_size);
    }
    if let Some(secs) = a.rate {
        let (n, el) = pump(&mut g, a, secs)?;
        line += &format!(
            " rate_len={} rate_frames={n} rate_secs={el:.2} rate_fps={:.0}",
            a.rate_len,
            n as f64 / el
        );
    }
    // The backend returns a lent buffer once the NIC has sent its bytes: wait for all
    // of them before the connection (and the memory) goes.
    let pending = wait_idle(&mut g)?;
    line += &format!(" pending={pending} bad_used={}", g.stats().bad_used);
    println!("{line}");
    Ok(())
}

fn main() -> ExitCode {
    match parse_args().and_then(|a| run(&a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("guest-zc error: {e}");
            ExitCode::FAILURE
        }
    }
}
