//! The bench's vhost-user guests: our virtio-user frontend ([`VirtioUser`]) attached to
//! a daemon's vhost-user interface plays a VM's virtio-net driver, so the overlay path
//! is measured guest to guest with no tap and no socket in between (`vnetp bench
//! --guest vhost-user`). The prober's guest sends Ethernet/IPv4/UDP frames carrying the
//! same [`proto`](super::proto) payload as the tap agents' datagrams; the reflector's
//! guest counts them, echoes latency probes (addresses swapped) and answers reports,
//! so the results are the same [`Point`](super::report::Point)s.
//!
//! Frames are built once per frame size in buffers made before the measurement; per
//! frame only the 16-byte header is rewritten, and the frontend copies each frame into
//! its shared memory as a guest driver would. Every loop ends by time.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use pkt::wire::{EthernetRepr, Ipv4Repr, MacAddr, UdpRepr, ethertype, ip_proto};
use virtio::VirtioUser;
use virtio::frontend::VirtioUserOptions;

use super::proto::{FRAME_OVERHEAD, HEADER, Header, Kind, REPORT_LEN, SinkCounts};
use super::report::{Latency, Throughput};

/// Frames handed to the frontend per send.
const BATCH: usize = 32;
/// Echo frames the reflector holds between a receive and its send.
const ECHO_SLOTS: usize = 64;
/// Largest frame a guest sends or echoes: the overlay's largest MTU plus Ethernet.
pub const MAX_FRAME: usize = overlay::config::MAX_MTU as usize + 14;
/// The virtio-net header in front of every frame in the rings.
const VNET_HDR: usize = 12;
/// How long a guest polls its rings (yielding the core) after traffic before it
/// sleeps on the backend's call eventfds, as the daemons' engines do.
const BUSY_POLL: Duration = Duration::from_micros(50);
/// How long a latency probe waits for its echo before counting it lost.
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);
/// Most frames one throughput run sends, whatever its duration.
const MAX_TPUT_FRAMES: u64 = 50_000_000;
/// How long the prober keeps trying to connect to its daemon's socket.
const CONNECT_TIME: Duration = Duration::from_secs(10);

/// Frontend options for frames up to `largest` bytes: each transmit buffer holds one
/// frame behind its virtio-net header (receive spans buffers: mergeable buffers).
pub fn frontend_options(largest: usize) -> VirtioUserOptions {
    let buf = (largest.clamp(64, MAX_FRAME) + VNET_HDR)
        .next_multiple_of(1024)
        .max(2048);
    VirtioUserOptions {
        buf_size: u32::try_from(buf).unwrap_or(u32::MAX),
        ..VirtioUserOptions::default()
    }
}

/// One bench path through vhost-user guests, as the prober is told it on its command
/// line: `vhost-user:SOCKET,MAC,PEER_MAC,IP,PEER_IP,PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestTarget {
    /// The prober's daemon's vhost-user socket.
    pub socket: PathBuf,
    /// The prober guest's MAC (its interface's, or the daemon drops it as spoofed).
    pub mac: MacAddr,
    /// The reflector guest's MAC (routed to the link by the prober's daemon).
    pub peer_mac: MacAddr,
    /// The prober guest's IPv4 address.
    pub ip: Ipv4Addr,
    /// The reflector guest's IPv4 address.
    pub peer_ip: Ipv4Addr,
    /// UDP destination port.
    pub port: u16,
}

/// Prefix of a [`GuestTarget`] on the command line.
pub const TARGET_PREFIX: &str = "vhost-user:";

impl fmt::Display for GuestTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TARGET_PREFIX}{},{},{},{},{},{}",
            self.socket.display(),
            self.mac,
            self.peer_mac,
            self.ip,
            self.peer_ip,
            self.port
        )
    }
}

impl FromStr for GuestTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("expected {TARGET_PREFIX}SOCKET,MAC,PEER_MAC,IP,PEER_IP,PORT, got {s:?}");
        let rest = s.strip_prefix(TARGET_PREFIX).ok_or_else(bad)?;
        // From the right, so a socket path may hold commas.
        let f: Vec<&str> = rest.rsplitn(6, ',').collect();
        let [port, peer_ip, ip, peer_mac, mac, socket] = f[..] else {
            return Err(bad());
        };
        if socket.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            socket: PathBuf::from(socket),
            mac: mac.parse().map_err(|_| bad())?,
            peer_mac: peer_mac.parse().map_err(|_| bad())?,
            ip: ip.parse().map_err(|_| bad())?,
            peer_ip: peer_ip.parse().map_err(|_| bad())?,
            port: port.parse().map_err(|_| bad())?,
        })
    }
}

/// Addresses of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Addrs {
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
}

/// Writes Ethernet, IPv4 (checksummed) and UDP (no checksum) headers for a frame of
/// `frame.len()` bytes; the UDP payload is what follows [`FRAME_OVERHEAD`].
fn emit_headers(frame: &mut [u8], a: &Addrs) -> Option<()> {
    let payload = frame.len().checked_sub(FRAME_OVERHEAD)?;
    EthernetRepr {
        dst: a.dst_mac,
        src: a.src_mac,
        vlan: None,
        ethertype: ethertype::IPV4,
    }
    .emit(frame)
    .ok()?;
    Ipv4Repr {
        src: a.src_ip,
        dst: a.dst_ip,
        protocol: ip_proto::UDP,
        ttl: 64,
        tos: 0,
        ident: 0,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
        payload_len: 8 + payload,
    }
    .emit(frame.get_mut(14..)?)
    .ok()?;
    UdpRepr {
        src_port: a.src_port,
        dst_port: a.dst_port,
        payload_len: payload,
        checksum: 0,
    }
    .emit(frame.get_mut(34..)?)
    .ok()?;
    Some(())
}

/// The addresses and UDP payload of one of our frames (IPv4 without options, UDP);
/// `None` for anything else.
fn parse_frame(frame: &[u8]) -> Option<(Addrs, &[u8])> {
    let (eth, off) = EthernetRepr::parse(frame).ok()?;
    if eth.ethertype != ethertype::IPV4 || off != 14 {
        return None;
    }
    let (ip, hlen) = Ipv4Repr::parse(frame.get(14..)?).ok()?;
    if ip.protocol != ip_proto::UDP || hlen != 20 || ip.is_fragment() {
        return None;
    }
    let l4 = frame.get(34..34 + ip.payload_len)?;
    let (udp, uoff) = UdpRepr::parse(l4).ok()?;
    let payload = l4.get(uoff..uoff + udp.payload_len)?;
    Some((
        Addrs {
            src_mac: eth.src,
            dst_mac: eth.dst,
            src_ip: ip.src,
            dst_ip: ip.dst,
            src_port: udp.src_port,
            dst_port: udp.dst_port,
        },
        payload,
    ))
}

/// The addresses of the answer to a frame with `a`.
fn reply(a: &Addrs) -> Addrs {
    Addrs {
        src_mac: a.dst_mac,
        dst_mac: a.src_mac,
        src_ip: a.dst_ip,
        dst_ip: a.src_ip,
        src_port: a.dst_port,
        dst_port: a.src_port,
    }
}

/// Connects a frontend to `socket`, retrying while the daemon sets it up.
fn connect(socket: &Path, opts: VirtioUserOptions) -> anyhow::Result<VirtioUser> {
    let end = Instant::now() + CONNECT_TIME;
    loop {
        match VirtioUser::connect(socket, opts) {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= end => {
                return Err(e).with_context(|| {
                    format!("bench guest: vhost-user connect {}", socket.display())
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// After an empty receive: poll (yielding) within [`BUSY_POLL`] of `since`, then sleep
/// on the backend's calls for at most `max`.
fn idle(vu: &VirtioUser, since: Instant, max: Duration) -> anyhow::Result<()> {
    if since.elapsed() < BUSY_POLL {
        std::thread::yield_now();
    } else {
        vu.wait(max)?;
    }
    Ok(())
}

/// The reflector's guest: counts sink frames, echoes probes, answers reports, until a
/// quit frame, `stop`, or `max` time.
pub fn serve(socket: &Path, max: Duration, stop: &AtomicBool) -> anyhow::Result<()> {
    let mut vu = connect(socket, frontend_options(MAX_FRAME))?;
    // Made here, filled without allocating per frame.
    let mut out: Vec<Vec<u8>> = (0..ECHO_SLOTS)
        .map(|_| Vec::with_capacity(MAX_FRAME))
        .collect();
    let deadline = Instant::now() + max;
    let mut run = u32::MAX;
    let mut counts = SinkCounts::default();
    let (mut first, mut last) = (Instant::now(), Instant::now());
    let mut busy = Instant::now();
    let mut quit = false;
    while !quit && !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let now = Instant::now();
        let mut n_out = 0usize;
        let n = vu.recv(|frame| {
            let Some((a, payload)) = parse_frame(frame) else {
                return;
            };
            let Some(h) = Header::parse(payload) else {
                return;
            };
            match h.kind {
                Kind::Echo => {
                    if let Some(e) = out.get_mut(n_out) {
                        e.clear();
                        e.extend_from_slice(frame);
                        if emit_headers(e, &reply(&a)).is_some() {
                            n_out += 1;
                        }
                    }
                }
                Kind::Sink => {
                    if h.run != run {
                        run = h.run;
                        counts = SinkCounts::default();
                        first = now;
                    }
                    counts.count += 1;
                    counts.bytes += payload.len() as u64;
                    last = now;
                }
                Kind::Report => {
                    let mut c = if h.run == run {
                        counts
                    } else {
                        SinkCounts::default()
                    };
                    c.elapsed_ns = last.duration_since(first).as_nanos() as u64;
                    if let Some(e) = out.get_mut(n_out) {
                        e.clear();
                        e.resize(FRAME_OVERHEAD + REPORT_LEN, 0);
                        if emit_headers(e, &reply(&a)).is_some()
                            && c.emit(h.run, &mut e[FRAME_OVERHEAD..])
                        {
                            n_out += 1;
                        }
                    }
                }
                Kind::Quit => quit = true,
                Kind::ReportAnswer => {}
            }
        })?;
        if n_out > 0 {
            // What the ring cannot take now is dropped, as a guest under load would.
            vu.send(&out[..n_out])?;
        }
        if n > 0 {
            busy = Instant::now();
        } else {
            idle(&vu, busy, Duration::from_millis(100))?;
        }
    }
    Ok(())
}

/// The prober's guest on one path.
pub struct GuestProbe {
    vu: VirtioUser,
    target: GuestTarget,
    /// [`BATCH`] frames of the current size, headers written.
    frames: Vec<Vec<u8>>,
    size: usize,
}

impl fmt::Debug for GuestProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestProbe")
            .field("target", &self.target)
            .field("size", &self.size)
            .finish()
    }
}

impl GuestProbe {
    /// Attaches a frontend for frames up to `largest` bytes to the target's socket.
    pub fn connect(target: GuestTarget, largest: usize) -> anyhow::Result<Self> {
        let vu = connect(&target.socket, frontend_options(largest))?;
        Ok(Self {
            vu,
            target,
            frames: (0..BATCH).map(|_| Vec::with_capacity(largest)).collect(),
            size: 0,
        })
    }

    fn addrs(&self) -> Addrs {
        let t = &self.target;
        Addrs {
            src_mac: t.mac,
            dst_mac: t.peer_mac,
            src_ip: t.ip,
            dst_ip: t.peer_ip,
            src_port: t.port,
            dst_port: t.port,
        }
    }

    /// Makes every frame `size` bytes with its headers (once per size).
    fn prepare(&mut self, size: usize) -> anyhow::Result<()> {
        if !(FRAME_OVERHEAD + HEADER..=MAX_FRAME).contains(&size) {
            anyhow::bail!("frame size {size} does not fit a bench guest frame");
        }
        if self.size == size {
            return Ok(());
        }
        let a = self.addrs();
        for f in &mut self.frames {
            f.clear();
            f.resize(size, 0);
            emit_headers(f, &a).context("bench guest frame headers")?;
        }
        self.size = size;
        Ok(())
    }

    /// Sends frame 0 with `h` and returns when `done` accepts a received payload or
    /// `timeout` passes; true when accepted.
    fn exchange(
        &mut self,
        h: Header,
        timeout: Duration,
        mut done: impl FnMut(&[u8]) -> bool,
    ) -> anyhow::Result<bool> {
        let f = &mut self.frames[0];
        h.emit(&mut f[FRAME_OVERHEAD..]);
        let t0 = Instant::now();
        if self.vu.send(&self.frames[..1])? == 0 {
            return Ok(false);
        }
        let mut hit = false;
        while !hit && t0.elapsed() < timeout {
            let n = self.vu.recv(|frame| {
                if let Some((_, p)) = parse_frame(frame)
                    && done(p)
                {
                    hit = true;
                }
            })?;
            if n == 0 && !hit {
                idle(&self.vu, t0, timeout.saturating_sub(t0.elapsed()))?;
            }
        }
        Ok(hit)
    }

    /// One echo of `seq`; its round trip in ns, or None when lost.
    fn round_trip(&mut self, run: u32, seq: u64) -> anyhow::Result<Option<u64>> {
        let t0 = Instant::now();
        let h = Header {
            kind: Kind::Echo,
            run,
            seq,
        };
        let ok = self.exchange(h, PROBE_TIMEOUT, |p| {
            Header::parse(p).is_some_and(|r| r.kind == Kind::Echo && r.run == run && r.seq == seq)
        })?;
        Ok(ok.then(|| t0.elapsed().as_nanos() as u64))
    }

    /// Round trips at `size`: up to `tries` to get a first echo through, then up to
    /// `count` probes within `time`.
    pub fn latency(
        &mut self,
        size: usize,
        run: u32,
        count: u32,
        time: Duration,
        tries: u32,
    ) -> anyhow::Result<Latency> {
        self.prepare(size)?;
        let mut seq = 0u64;
        let mut through = false;
        for _ in 0..tries {
            seq += 1;
            if self.round_trip(run, seq)?.is_some() {
                through = true;
                break;
            }
        }
        let mut samples = Vec::with_capacity(count as usize);
        let mut lost = 0u64;
        if through {
            let end = Instant::now() + time;
            for _ in 0..count {
                if Instant::now() >= end {
                    break;
                }
                seq += 1;
                match self.round_trip(run, seq)? {
                    Some(ns) => samples.push(ns),
                    None => lost += 1,
                }
            }
        }
        Ok(Latency::from_samples(&mut samples, lost))
    }

    /// Sends `size`-byte sink frames as fast as the ring takes them for `time`, then
    /// asks the reflector's guest for its counts.
    pub fn throughput(
        &mut self,
        size: usize,
        run: u32,
        time: Duration,
    ) -> anyhow::Result<Throughput> {
        let (sent, send_ns) = self.blast(size, run, time)?;
        // Let the last frames land, then ask for the counts.
        std::thread::sleep(Duration::from_millis(50));
        let mut counts = None;
        let req = Header {
            kind: Kind::Report,
            run,
            seq: 0,
        };
        for _ in 0..10 {
            let ok = self.exchange(req, PROBE_TIMEOUT, |p| match SinkCounts::parse(p) {
                Some((r, c)) if r == run => {
                    counts = Some(c);
                    true
                }
                _ => false,
            })?;
            if ok {
                break;
            }
        }
        Ok(Throughput::new(
            size,
            sent,
            send_ns,
            counts.unwrap_or_default(),
        ))
    }

    /// Sends `size`-byte sink frames of `run` for `time`; returns frames sent and ns.
    fn blast(&mut self, size: usize, run: u32, time: Duration) -> anyhow::Result<(u64, u64)> {
        self.prepare(size)?;
        let mut seq = 0u64;
        let mut sent = 0u64;
        let start = Instant::now();
        let end = start + time;
        let mut full_since = None;
        while Instant::now() < end && seq < MAX_TPUT_FRAMES {
            for (i, f) in self.frames.iter_mut().enumerate() {
                Header {
                    kind: Kind::Sink,
                    run,
                    seq: seq + 1 + i as u64,
                }
                .emit(&mut f[FRAME_OVERHEAD..]);
            }
            let n = self.vu.send(&self.frames)?;
            seq += n as u64;
            sent += n as u64;
            if n == 0 {
                // Ring full: poll for the backend to take some, then sleep on its call.
                let since = *full_since.get_or_insert_with(Instant::now);
                idle(&self.vu, since, Duration::from_millis(1))?;
            } else {
                full_since = None;
            }
        }
        Ok((sent, start.elapsed().as_nanos() as u64))
    }

    /// Touches every transmit buffer (and the receiver's) with `size`-byte frames of a
    /// throwaway run, so page faults of the fresh shared memory land here and not in a
    /// measurement; 100 ms.
    pub fn warm(&mut self, size: usize, run: u32) -> anyhow::Result<()> {
        self.blast(size, run, Duration::from_millis(100))
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> GuestTarget {
        GuestTarget {
            socket: PathBuf::from("/tmp/x,y/a-guest.sock"),
            mac: "52:54:00:97:00:01".parse().unwrap_or(MacAddr([0; 6])),
            peer_mac: "52:54:00:97:00:02".parse().unwrap_or(MacAddr([0; 6])),
            ip: Ipv4Addr::new(10, 97, 0, 1),
            peer_ip: Ipv4Addr::new(10, 97, 0, 2),
            port: 7000,
        }
    }

    #[test]
    fn guest_targets_round_trip_on_the_command_line() {
        let t = target();
        let s = t.to_string();
        assert!(
            s.starts_with("vhost-user:/tmp/x,y/a-guest.sock,52:54:00:97:00:01,"),
            "{s}"
        );
        assert_eq!(s.parse::<GuestTarget>(), Ok(t));
        for bad in [
            "/tmp/a.sock,52:54:00:97:00:01,52:54:00:97:00:02,10.0.0.1,10.0.0.2,7000",
            "vhost-user:/tmp/a.sock,52:54:00:97:00:01,10.0.0.1,10.0.0.2,7000",
            "vhost-user:,52:54:00:97:00:01,52:54:00:97:00:02,10.0.0.1,10.0.0.2,7000",
            "vhost-user:/a,52:54:00:97:00:01,52:54:00:97:00:02,10.0.0.1,10.0.0.2,port",
        ] {
            assert!(bad.parse::<GuestTarget>().is_err(), "{bad}");
        }
    }

    #[test]
    fn frames_carry_the_proto_payload_and_echo_back_with_addresses_swapped() {
        let t = target();
        let a = Addrs {
            src_mac: t.mac,
            dst_mac: t.peer_mac,
            src_ip: t.ip,
            dst_ip: t.peer_ip,
            src_port: 40000,
            dst_port: t.port,
        };
        for size in [FRAME_OVERHEAD + HEADER, 64, 1500, MAX_FRAME] {
            let mut f = vec![0u8; size];
            assert!(emit_headers(&mut f, &a).is_some(), "{size}");
            let h = Header {
                kind: Kind::Echo,
                run: 3,
                seq: 9,
            };
            assert!(h.emit(&mut f[FRAME_OVERHEAD..]));
            let (got, payload) = parse_frame(&f).unwrap_or_else(|| panic!("{size}"));
            assert_eq!(got, a);
            assert_eq!(payload.len(), size - FRAME_OVERHEAD);
            assert_eq!(Header::parse(payload), Some(h));
            let mut echo = f.clone();
            assert!(emit_headers(&mut echo, &reply(&got)).is_some());
            let (back, p2) = parse_frame(&echo).unwrap_or_else(|| panic!("{size}"));
            assert_eq!(back, reply(&a));
            assert_eq!(p2, payload);
        }
        // Too short for the headers, and not IPv4/UDP: refused.
        assert!(emit_headers(&mut [0u8; 41], &a).is_none());
        let mut arp = vec![0u8; 64];
        assert!(emit_headers(&mut arp, &a).is_some());
        arp[12..14].copy_from_slice(&ethertype::ARP.to_be_bytes());
        assert!(parse_frame(&arp).is_none());
    }

    #[test]
    fn frontend_buffers_hold_the_largest_frame_and_its_header() {
        for largest in [64, 1500, 9000, 65000, MAX_FRAME] {
            let o = frontend_options(largest);
            assert!(o.buf_size as usize >= largest + VNET_HDR, "{largest}");
            assert!(
                o.buf_size >= 2048 && o.buf_size.is_multiple_of(1024),
                "{largest}"
            );
        }
        assert_eq!(frontend_options(1500).buf_size, 2048);
    }
}
