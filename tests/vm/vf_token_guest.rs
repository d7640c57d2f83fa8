//! The VF user of the VF-token VM test (tests/vfio_vm.rs
//! `a_vf_of_a_vnetp_owned_pf_opens_only_with_its_vf_token`): runs inside the QEMU guest
//! as a second process next to `vnetp run`, which owns the 82576 PF through vfio-pci
//! and set a VF token on it. This is QEMU's path for handing the VF to a guest
//! (`-device vfio-pci,host=<vf>,vf-token=<uuid>`), with vnetp's own VF driver in
//! place of the guest:
//!
//! 1. opens the VF `--vf BDF` with no token, and with `--wrong-token UUID`: both must
//!    be refused with the `vfio` crate's errors (printed as `guest-token-error`);
//! 2. opens it with `--token UUID`, does the reset/MAC/API handshake with vnetp's PF
//!    mailbox through `nicdrv::igb::IgbVfPort`, and prints `guest-token-vf`;
//! 3. sends `--frames N` test frames to the host and receives as many back, checking
//!    every byte, and prints one `guest-result` line (the layout of
//!    tests/vm/igb_guest.rs).
//!
//! Built statically (`-C target-feature=+crt-static`) by tests/vfio_vm.rs.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use nicdrv::igb::{IgbVfConfig, IgbVfPort, VfioDma};
use pkt::{Batch, Mempool, Port};
use vfio::{OpenOptions, VfToken, VfioError};

const GUEST_MAGIC: &[u8; 8] = b"VNETP-GT";
const HOST_MAGIC: &[u8; 8] = b"VNETP-HT";
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];
const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

fn frame_len(seq: u32) -> usize {
    60 + (seq as usize * 97) % 1455
}

fn build(dst: [u8; 6], src: [u8; 6], magic: &[u8; 8], seq: u32) -> Vec<u8> {
    let len = frame_len(seq);
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETHERTYPE);
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

fn arg(name: &str) -> Result<String, String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .ok_or_else(|| format!("missing {name}"))
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("guest: FAIL: {e}");
            ExitCode::from(1)
        }
    }
}

fn run() -> Result<(), String> {
    let vf = arg("--vf")?;
    let token = VfToken::parse(&arg("--token")?).map_err(|e| e.to_string())?;
    let wrong = VfToken::parse(&arg("--wrong-token")?).map_err(|e| e.to_string())?;
    let frames: u32 = arg("--frames")?.parse().map_err(|_| "bad --frames")?;
    let container = vfio::Container::new().map_err(|e| e.to_string())?;

    // 1. The kernel must refuse the VF without the PF owner's token, and with another.
    match container.open_device(&vf) {
        Ok(_) => return Err(format!("{vf} opened without a VF token")),
        Err(e) => {
            println!("guest-token-error none: {e}");
            if !matches!(e, VfioError::VfTokenRequired { .. }) {
                return Err(format!("no token: expected VfTokenRequired, got {e:?}"));
            }
        }
    }
    match container.open_device_with_options(&vf, &OpenOptions::new().vf_token(wrong)) {
        Ok(_) => return Err(format!("{vf} opened with the wrong VF token")),
        Err(e) => {
            println!("guest-token-error wrong: {e}");
            if !matches!(e, VfioError::VfTokenMismatch { .. }) {
                return Err(format!("wrong token: expected VfTokenMismatch, got {e:?}"));
            }
        }
    }

    // The refused attempts attached the VF's group to this container: let it go, so
    // the driver's own container can take the group.
    drop(container);

    // 2. With the right token: our VF driver against vnetp's PF mailbox.
    let t0 = Instant::now();
    let pool =
        Mempool::new(1024, nicdrv::igb::pool_buffer_size(1500)).map_err(|e| e.to_string())?;
    let cfg = IgbVfConfig {
        rx_ring: 256,
        tx_ring: 256,
        // No MAC of our own: the one vnetp's PF assigns in the VF_RESET reply.
        mac: None,
        ..IgbVfConfig::default()
    };
    let options = OpenOptions::new().vf_token(token);
    let mut port = nicdrv::igb::open_vf_vfio_with(&vf, pool.clone(), cfg, &options)
        .map_err(|e| format!("open with the right token, VF handshake with vnetp's PF: {e}"))?;
    let mac = port.mac().0;
    println!(
        "guest-token-vf opened=1 mac={} api={} init_ms={}",
        mac.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
        port.api(),
        t0.elapsed().as_millis()
    );
    if !port.wait_link(Duration::from_secs(15)) {
        return Err("VF link did not come up within 15 s".into());
    }
    exchange(&mut port, &pool, mac, frames, t0)
}

/// Step 3: `frames` test frames to the host, as many back; other frames (none are
/// expected, but the wire is shared with vnetp's PF) are counted and ignored.
fn exchange(
    port: &mut IgbVfPort<vfio::MappedBar, VfioDma>,
    pool: &Mempool,
    mac: [u8; 6],
    frames: u32,
    t0: Instant,
) -> Result<(), String> {
    let mut seq = 0;
    let mut pending = Batch::new();
    let mut sent_bytes = 0u64;
    let deadline = Instant::now() + Duration::from_secs(20);
    while (seq < frames || !pending.is_empty()) && Instant::now() < deadline {
        while seq < frames && pending.len() < 16 {
            let f = build(HOST_MAC, mac, GUEST_MAGIC, seq);
            let mut buf = pool.alloc().ok_or("pool empty")?;
            buf.extend_from_slice(&f).map_err(|e| e.to_string())?;
            sent_bytes += f.len() as u64;
            let _ = pending.push(buf);
            seq += 1;
        }
        if port.tx_batch(&mut pending) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    while port.tx_in_flight() > 0 && Instant::now() < deadline {
        port.reclaim_tx();
        std::thread::sleep(Duration::from_millis(1));
    }
    let st = port.stats();
    if st.tx_packets != u64::from(frames) || st.tx_bytes != sent_bytes {
        return Err(format!("transmit incomplete: {st:?}"));
    }

    let mut rx = Batch::new();
    let mut seen = vec![false; frames as usize];
    let (mut got, mut got_bytes, mut bad, mut other) = (0u32, 0u64, 0u32, 0u32);
    let deadline = Instant::now() + Duration::from_secs(40);
    while got < frames && Instant::now() < deadline {
        if port.rx_batch(&mut rx) == 0 {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        for buf in rx.drain() {
            let d = buf.data();
            let ours = d.get(14..22) == Some(HOST_MAGIC.as_slice());
            let seq = d
                .get(22..26)
                .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]));
            match seq {
                Some(s)
                    if ours
                        && s < frames
                        && !seen[s as usize]
                        && d == build(mac, HOST_MAC, HOST_MAGIC, s).as_slice() =>
                {
                    seen[s as usize] = true;
                    got += 1;
                    got_bytes += d.len() as u64;
                }
                _ if !ours => other += 1,
                _ => bad += 1,
            }
        }
    }
    let st = port.stats();
    println!(
        "guest-result tx_frames={} tx_bytes={} rx_frames={got} rx_bytes={got_bytes} rx_bad={bad} rx_other={other} elapsed_ms={}",
        st.tx_packets,
        st.tx_bytes,
        t0.elapsed().as_millis()
    );
    let want_bytes: u64 = (0..frames).map(|s| frame_len(s) as u64).sum();
    if got != frames || got_bytes != want_bytes || bad != 0 {
        return Err(format!(
            "received {got}/{frames} frames, {got_bytes}/{want_bytes} bytes, {bad} unexpected"
        ));
    }
    Ok(())
}
