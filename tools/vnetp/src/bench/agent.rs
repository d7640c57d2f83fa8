//! The bench's traffic agents, run inside the test hosts' namespaces as the hidden
//! `vnetp bench-agent` subcommand: a reflector that echoes latency probes and counts
//! throughput datagrams, and a prober that measures one path and prints a JSON line per
//! frame size. Both move datagrams a batch at a time through our own [`UdpPort`]
//! (`recvmmsg`/`sendmmsg`), and every loop ends by count and by time.

use std::io::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use nicdrv::{UdpOptions, UdpPort};
use pkt::{Batch, HEADROOM, Mempool, Port};
use rustix::event::{PollFd, PollFlags, Timespec};

use super::guest::{GuestProbe, GuestTarget, TARGET_PREFIX};
use super::proto::{FRAME_OVERHEAD, HEADER, Header, Kind, REPORT_LEN, SinkCounts};
use super::report::{Latency, Point, Throughput};

/// Largest UDP payload over IPv4; buffers hold one.
const MAX_PAYLOAD: usize = 65_507;
/// Most datagrams one throughput run sends, whatever its duration.
const MAX_TPUT_PACKETS: u64 = 50_000_000;
/// Tries to get a first echo through at the first size (ARP over the overlay resolves
/// meanwhile, and the reflector may still be starting): 10 s at most.
const FIRST_WARMUP_TRIES: u32 = 50;
/// The same at later sizes, once the path is known to work.
const WARMUP_TRIES: u32 = 10;
/// How long a latency probe waits for its echo before counting it lost.
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);

fn wait(port: &UdpPort, flags: PollFlags, ms: i64) {
    if let Some(fd) = port.poll_fd() {
        let mut fds = [PollFd::from_borrowed_fd(fd, flags)];
        let t = Timespec {
            tv_sec: ms / 1000,
            tv_nsec: (ms % 1000) * 1_000_000,
        };
        let _ = rustix::event::poll(&mut fds, Some(&t));
    }
}

/// Touches every buffer of a fresh pool once, so page faults of its lazily mapped
/// memory land here and not inside a measurement.
fn prefault(pool: &Mempool) {
    let mut held = Vec::with_capacity(pool.capacity());
    while let Some(mut b) = pool.alloc() {
        if let Ok(d) = b.append(b.tailroom()) {
            d.fill(0);
        }
        held.push(b);
    }
}

/// Reflects echo probes, counts sink runs, answers reports; stops on a quit datagram
/// or after `max` time. With `guest`, a vhost-user guest attached to that socket does
/// the same for frames from the prober's guest, on a second thread.
pub fn serve(port: u16, max: Duration, guest: Option<&Path>) -> anyhow::Result<()> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let g = guest.map(|socket| {
            let stop = &stop;
            scope.spawn(move || {
                let r = super::guest::serve(socket, max, stop);
                if let Err(e) = &r {
                    // Now, into the reflector's log: the process is killed, not joined.
                    eprintln!("bench guest reflector: {e:#}");
                }
                r
            })
        });
        let r = serve_udp(port, max);
        stop.store(true, Ordering::Relaxed);
        let g = match g.map(|h| h.join()) {
            None => Ok(()),
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(anyhow::anyhow!("the bench guest reflector panicked")),
        };
        r.and(g)
    })
}

fn serve_udp(port: u16, max: Duration) -> anyhow::Result<()> {
    let pool = Mempool::new(1024, HEADROOM + MAX_PAYLOAD).context("bench reflector pool")?;
    prefault(&pool);
    let bind = SocketAddr::from(([0, 0, 0, 0], port));
    // A plain socket (no GRO): the agents stand for an application, not for vnetp.
    let mut sock = UdpPort::bind_with(bind, pool, UdpOptions::default())
        .with_context(|| format!("bench reflector on {bind}"))?;
    let (mut rx, mut tx) = (Batch::new(), Batch::new());
    let deadline = Instant::now() + max;
    let mut run = u32::MAX;
    let mut counts = SinkCounts::default();
    let (mut first, mut last) = (Instant::now(), Instant::now());
    let mut quit = false;
    while !quit && Instant::now() < deadline {
        if sock.rx_batch(&mut rx) == 0 {
            wait(&sock, PollFlags::IN, 100);
            continue;
        }
        let now = Instant::now();
        for mut buf in rx.drain() {
            let Some(h) = Header::parse(buf.data()) else {
                continue;
            };
            match h.kind {
                Kind::Echo => {
                    let _ = tx.push(buf);
                }
                Kind::Sink => {
                    if h.run != run {
                        run = h.run;
                        counts = SinkCounts::default();
                        first = now;
                    }
                    counts.count += 1;
                    counts.bytes += buf.len() as u64;
                    last = now;
                }
                Kind::Report => {
                    let mut c = if h.run == run {
                        counts
                    } else {
                        SinkCounts::default()
                    };
                    c.elapsed_ns = last.duration_since(first).as_nanos() as u64;
                    if buf.len() < REPORT_LEN && buf.append(REPORT_LEN - buf.len()).is_err() {
                        continue;
                    }
                    if c.emit(h.run, buf.data_mut()) {
                        let _ = tx.push(buf);
                    }
                }
                Kind::Quit => quit = true,
                Kind::ReportAnswer => {}
            }
        }
        if !tx.is_empty() {
            sock.tx_batch(&mut tx);
            tx.clear();
        }
    }
    Ok(())
}

/// How much to measure per frame size.
#[derive(Debug, Clone, Copy)]
pub struct ProbeBudget {
    /// Latency probes per size.
    pub latency_count: u32,
    /// Most time spent on latency per size.
    pub latency_time: Duration,
    /// Duration of the throughput run per size.
    pub tput_time: Duration,
}

/// One path the prober measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The reflector's UDP socket, through the namespace's kernel stack: `IP:PORT`.
    Udp(SocketAddr),
    /// The reflector's vhost-user guest, from a guest of our own on this socket:
    /// `vhost-user:...` (see [`GuestTarget`]).
    Guest(GuestTarget),
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.starts_with(TARGET_PREFIX) {
            return s.parse().map(Self::Guest);
        }
        s.parse()
            .map(Self::Udp)
            .map_err(|e| format!("{s:?}: {e}: expected IP:PORT or {TARGET_PREFIX}..."))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Udp(a) => write!(f, "{a}"),
            Self::Guest(g) => write!(f, "{g}"),
        }
    }
}

/// A target's open end: a connected UDP socket or an attached guest.
enum Probe {
    Udp(UdpSocket, SocketAddr),
    Guest(Box<GuestProbe>),
}

/// Measures latency and throughput to each of `targets` for each frame size, size by
/// size (all targets at one size, then the next size), so the paths compared at a size
/// are measured seconds apart. Prints one JSON [`Point`] per line as soon as measured.
pub fn probe(
    targets: &[Target],
    sizes: &[usize],
    budget: ProbeBudget,
    run_base: u32,
) -> anyhow::Result<()> {
    let largest = sizes.iter().copied().max().unwrap_or(1500);
    let mut probes = Vec::with_capacity(targets.len());
    for (ti, target) in targets.iter().enumerate() {
        probes.push(match target {
            Target::Udp(target) => {
                let sock = UdpSocket::bind(("0.0.0.0", 0)).context("bench probe socket")?;
                sock.connect(target)
                    .with_context(|| format!("bench probe: connect {target}"))?;
                sock.set_read_timeout(Some(PROBE_TIMEOUT))?;
                Probe::Udp(sock, *target)
            }
            Target::Guest(g) => {
                let mut p = GuestProbe::connect(g.clone(), largest)?;
                // A run number no measurement uses.
                let warm_run = run_base.wrapping_sub(1 + ti as u32);
                p.warm(largest, warm_run)?;
                Probe::Guest(Box::new(p))
            }
        });
    }
    let mut out = std::io::stdout().lock();
    for (si, &size) in sizes.iter().enumerate() {
        let payload = size.saturating_sub(FRAME_OVERHEAD).max(HEADER);
        if payload > MAX_PAYLOAD {
            anyhow::bail!("frame size {size} exceeds the largest UDP datagram");
        }
        for (ti, (probe, target)) in probes.iter_mut().zip(targets).enumerate() {
            let run = run_base.wrapping_add((si * targets.len() + ti) as u32);
            let tries = if si == 0 {
                FIRST_WARMUP_TRIES
            } else {
                WARMUP_TRIES
            };
            let latency = match probe {
                Probe::Udp(sock, _) => latency(sock, payload, run, budget, tries)?,
                Probe::Guest(g) => {
                    g.latency(size, run, budget.latency_count, budget.latency_time, tries)?
                }
            };
            if si == 0 && latency.samples == 0 {
                anyhow::bail!(
                    "no echo from the reflector at {target} for {size}-byte frames after {tries} tries: the path carries no traffic"
                );
            }
            let throughput = match probe {
                Probe::Udp(sock, target) => {
                    throughput(sock, *target, size, payload, run, budget.tput_time)?
                }
                Probe::Guest(g) => g.throughput(size, run, budget.tput_time)?,
            };
            let p = Point {
                path: ti,
                size,
                latency,
                throughput,
            };
            writeln!(out, "{}", serde_json::to_string(&p)?)?;
            out.flush()?;
        }
    }
    Ok(())
}

/// Sends `buf` with `seq` and waits for its echo; the round trip, or None when lost.
fn round_trip(
    sock: &UdpSocket,
    buf: &mut [u8],
    rbuf: &mut [u8],
    run: u32,
    seq: u64,
) -> Option<u64> {
    Header {
        kind: Kind::Echo,
        run,
        seq,
    }
    .emit(buf);
    let t0 = Instant::now();
    sock.send(buf).ok()?;
    // Stale echoes of earlier (timed-out) probes are skipped, a bounded number of them.
    for _ in 0..16 {
        let n = sock.recv(rbuf).ok()?;
        if let Some(h) = Header::parse(&rbuf[..n])
            && h.kind == Kind::Echo
            && h.run == run
            && h.seq == seq
        {
            return Some(t0.elapsed().as_nanos() as u64);
        }
        if t0.elapsed() > PROBE_TIMEOUT {
            return None;
        }
    }
    None
}

fn latency(
    sock: &UdpSocket,
    payload: usize,
    run: u32,
    budget: ProbeBudget,
    tries: u32,
) -> anyhow::Result<Latency> {
    let mut buf = vec![0u8; payload];
    let mut rbuf = vec![0u8; MAX_PAYLOAD];
    let mut seq = 0u64;
    let mut through = false;
    for _ in 0..tries {
        seq += 1;
        let t0 = Instant::now();
        if round_trip(sock, &mut buf, &mut rbuf, run, seq).is_some() {
            through = true;
            break;
        }
        // A refused or unroutable probe fails at once: give the reflector time to start.
        std::thread::sleep(PROBE_TIMEOUT.saturating_sub(t0.elapsed()));
    }
    let mut samples = Vec::with_capacity(budget.latency_count as usize);
    let mut lost = 0u64;
    if through {
        let end = Instant::now() + budget.latency_time;
        for _ in 0..budget.latency_count {
            if Instant::now() >= end {
                break;
            }
            seq += 1;
            match round_trip(sock, &mut buf, &mut rbuf, run, seq) {
                Some(ns) => samples.push(ns),
                None => lost += 1,
            }
        }
    }
    Ok(Latency::from_samples(&mut samples, lost))
}

fn throughput(
    ctl: &UdpSocket,
    target: SocketAddr,
    size: usize,
    payload: usize,
    run: u32,
    time: Duration,
) -> anyhow::Result<Throughput> {
    let pool = Mempool::new(512, HEADROOM + payload).context("bench sender pool")?;
    prefault(&pool);
    // A plain socket (no GSO), as an application sends: `sendmmsg` of 64 datagrams.
    let mut sock = UdpPort::bind_with(
        SocketAddr::from(([0, 0, 0, 0], 0)),
        pool.clone(),
        UdpOptions::default(),
    )
    .context("bench sender socket")?;
    let mut batch = Batch::new();
    let mut seq = 0u64;
    let mut sent = 0u64;
    let start = Instant::now();
    let end = start + time;
    while Instant::now() < end && seq < MAX_TPUT_PACKETS {
        while !batch.is_full() {
            let Some(mut buf) = pool.alloc() else {
                break;
            };
            let Ok(data) = buf.append(payload) else {
                break;
            };
            seq += 1;
            Header {
                kind: Kind::Sink,
                run,
                seq,
            }
            .emit(data);
            buf.meta.addr = Some(target);
            let _ = batch.push(buf);
        }
        let before = batch.len();
        let n = sock.tx_batch(&mut batch);
        sent += n as u64;
        if n < before && !batch.is_empty() {
            // Socket buffer full: wait until it drains rather than spin.
            wait(&sock, PollFlags::OUT, 10);
        }
    }
    batch.clear();
    let send_ns = start.elapsed().as_nanos() as u64;
    // Let the last datagrams land, then ask for the counts.
    std::thread::sleep(Duration::from_millis(50));
    let mut req = [0u8; REPORT_LEN];
    Header {
        kind: Kind::Report,
        run,
        seq: 0,
    }
    .emit(&mut req);
    let mut rbuf = vec![0u8; MAX_PAYLOAD];
    let mut counts = None;
    'ask: for _ in 0..10 {
        ctl.send(&req)?;
        for _ in 0..64 {
            let Ok(n) = ctl.recv(&mut rbuf) else {
                break;
            };
            if let Some((r, c)) = SinkCounts::parse(&rbuf[..n])
                && r == run
            {
                counts = Some(c);
                break 'ask;
            }
        }
    }
    let c = counts.unwrap_or_default();
    Ok(Throughput::new(size, sent, send_ns, c))
}
