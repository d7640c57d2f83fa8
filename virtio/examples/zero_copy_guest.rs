//! The guest side of the zero-copy QEMU test (tests/vfio_vm.rs
//! `vhost_user_frames_leave_through_the_igb_pf_without_a_copy`): runs inside the TCG
//! guest next to `vnetp run`, plays a VM's virtio-net driver on the daemon's vhost-user
//! interface with our frontend ([`VirtioUser`]), and sends
//!
//! - `--frames N`: N frames of 1400 bytes, then N of 8000 (sequence numbers 0..2N, the
//!   pattern of [`test_frame`], which the host side rebuilds and compares byte for
//!   byte), 16 at a time;
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

struct Args {
    socket: PathBuf,
    mac: [u8; 6],
    dst: [u8; 6],
    frames: u32,
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
            "--rate" => a.rate = Some(Duration::from_secs(num(&v)?)),
            "--rate-len" => a.rate_len = num(&v)? as usize,
            "--rate-dst" => a.rate_dst = mac(&v)?,
            _ => return Err(format!("unknown option {k}")),
        }
    }
    if a.socket.as_os_str().is_empty() {
        return Err("--socket is required".into());
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
        buf_size: 9 * 1024,
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
    let end = Instant::now() + SEND_TIME;
    let mut pending = g.tx_pending(0).map_err(|e| e.to_string())?;
    while pending > 0 && Instant::now() < end {
        g.wait(Duration::from_millis(10))
            .map_err(|e| e.to_string())?;
        pending = g.tx_pending(0).map_err(|e| e.to_string())?;
    }
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
