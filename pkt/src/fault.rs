//! [`FaultPort`]: a port wrapper that misbehaves on purpose — drops, duplicates,
//! reorders, corrupts and delays frames and takes the link down — so tests can show that the
//! overlay and the traffic it carries survive a bad network. Deterministic for a
//! given seed. For tests and chaos experiments only; never on by default.

use std::collections::VecDeque;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use crate::{BATCH_MAX, Batch, DropCounter, PktBuf, Port, PortCaps, PortStats};

/// What to inflict, as probabilities per frame (0.0 ..= 1.0).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FaultConfig {
    /// Drop a frame (both directions).
    pub drop: f64,
    /// Deliver a received frame twice.
    pub duplicate: f64,
    /// Hold a received frame back and deliver it after the next one.
    pub reorder: f64,
    /// Flip one byte of a received frame.
    pub corrupt: f64,
    /// Link flapping: up for `.0`, then down (everything dropped) for `.1`, repeating.
    pub flap: Option<(Duration, Duration)>,
    /// Hold every received frame this long before delivering it (a slow path).
    pub delay: Duration,
    /// Add up to this much more delay per frame, uniformly at random. Frames keep
    /// their order (a later frame is never due before an earlier one), as on one wire.
    pub jitter: Duration,
    /// Seed of the pseudo-random sequence.
    pub seed: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    dropped: u64,
    duplicated: u64,
    reordered: u64,
    corrupted: u64,
    link_down: u64,
    delayed: u64,
    delay_overflow: u64,
}

/// Most frames held back by `delay` at once; past it, frames are dropped and counted
/// (`fault_delay_overflow`), as a real queue with a limit would.
pub const DELAY_QUEUE_MAX: usize = 1024;

/// Wraps a port and applies [`FaultConfig`] to what it receives and sends.
pub struct FaultPort {
    inner: Box<dyn Port>,
    cfg: FaultConfig,
    state: u64,
    held: Option<PktBuf>,
    pending: VecDeque<PktBuf>,
    delayed: VecDeque<(Instant, PktBuf)>,
    scratch: Batch,
    start: Instant,
    counters: Counters,
}

impl FaultPort {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn Port>, cfg: FaultConfig) -> Self {
        Self {
            inner,
            cfg,
            state: cfg.seed | 1,
            held: None,
            pending: VecDeque::with_capacity(4 * BATCH_MAX),
            delayed: VecDeque::new(),
            scratch: Batch::new(),
            start: Instant::now(),
            counters: Counters::default(),
        }
    }

    /// xorshift64*: a uniform number in [0, 1).
    fn chance(&mut self) -> f64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        (self.state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Queues a frame for delivery: at once, or at `now + delay (+ jitter)`.
    fn deliver(&mut self, buf: PktBuf, now: Instant) {
        if self.cfg.delay.is_zero() && self.cfg.jitter.is_zero() {
            self.pending.push_back(buf);
            return;
        }
        if self.delayed.len() >= DELAY_QUEUE_MAX {
            self.counters.delay_overflow += 1;
            return;
        }
        let extra = self.cfg.jitter.mul_f64(self.chance());
        let mut due = now + self.cfg.delay + extra;
        if let Some((last, _)) = self.delayed.back() {
            due = due.max(*last);
        }
        self.delayed.push_back((due, buf));
        self.counters.delayed += 1;
    }

    /// Moves frames whose delay has passed to the delivery queue.
    fn release_due(&mut self, now: Instant) {
        while let Some((due, _)) = self.delayed.front() {
            if *due > now {
                break;
            }
            if let Some((_, buf)) = self.delayed.pop_front() {
                self.pending.push_back(buf);
            }
        }
    }

    fn link_up(&self) -> bool {
        match self.cfg.flap {
            None => true,
            Some((up, down)) => {
                let period = (up + down).as_nanos().max(1);
                self.start.elapsed().as_nanos() % period < up.as_nanos()
            }
        }
    }
}

impl Port for FaultPort {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn rx_batch(&mut self, batch: &mut Batch) -> usize {
        let before = batch.len();
        if self.pending.len() < BATCH_MAX {
            let mut scratch = std::mem::replace(&mut self.scratch, Batch::unallocated());
            let n = self.inner.rx_batch(&mut scratch);
            let up = self.link_up();
            let now = Instant::now();
            for mut buf in scratch.drain() {
                if !up {
                    self.counters.link_down += 1;
                    continue;
                }
                if self.chance() < self.cfg.drop {
                    self.counters.dropped += 1;
                    continue;
                }
                if !buf.is_empty() && self.chance() < self.cfg.corrupt {
                    // Corrupting must never write a guest's buffer: join an external
                    // tail into the pool buffer first (if it does not fit, the byte
                    // flipped lies in the buffer's part).
                    let _ = buf.linearize();
                    let at = (self.chance() * buf.len() as f64) as usize % buf.len();
                    buf.data_mut()[at] ^= 0x5a;
                    self.counters.corrupted += 1;
                }
                if self.held.is_none() && self.chance() < self.cfg.reorder {
                    self.held = Some(buf);
                    self.counters.reordered += 1;
                    continue;
                }
                if self.chance() < self.cfg.duplicate
                    && let Some(copy) = buf.try_clone()
                {
                    self.deliver(copy, now);
                    self.counters.duplicated += 1;
                }
                self.deliver(buf, now);
                // A held frame goes out after the one that overtook it.
                if let Some(h) = self.held.take() {
                    self.deliver(h, now);
                }
            }
            if n == 0 {
                // Nothing new arrived: a held frame is late, not lost.
                if let Some(h) = self.held.take() {
                    self.deliver(h, now);
                }
            }
            self.scratch = scratch;
        }
        if !self.delayed.is_empty() {
            self.release_due(Instant::now());
        }
        while !batch.is_full() {
            let Some(b) = self.pending.pop_front() else {
                break;
            };
            let _ = batch.push(b);
        }
        batch.len() - before
    }

    fn tx_batch(&mut self, batch: &mut Batch) -> usize {
        let up = self.link_up();
        let mut kept = Batch::unallocated();
        std::mem::swap(&mut kept, &mut self.scratch);
        let mut dropped = 0;
        for buf in batch.drain() {
            if !up {
                self.counters.link_down += 1;
                dropped += 1;
            } else if self.chance() < self.cfg.drop {
                self.counters.dropped += 1;
                dropped += 1;
            } else {
                let _ = kept.push(buf);
            }
        }
        let sent = self.inner.tx_batch(&mut kept);
        for b in kept.drain() {
            let _ = batch.push(b);
        }
        self.scratch = kept;
        // Frames we dropped count as sent: the caller must not retry them.
        sent + dropped
    }

    fn caps(&self) -> PortCaps {
        self.inner.caps()
    }

    fn events(&self) -> Vec<DropCounter> {
        self.inner.events()
    }

    fn stats(&self) -> PortStats {
        let mut s = self.inner.stats();
        let c = self.counters;
        s.drops.extend([
            DropCounter {
                name: "fault_dropped",
                count: c.dropped,
            },
            DropCounter {
                name: "fault_duplicated",
                count: c.duplicated,
            },
            DropCounter {
                name: "fault_reordered",
                count: c.reordered,
            },
            DropCounter {
                name: "fault_corrupted",
                count: c.corrupted,
            },
            DropCounter {
                name: "fault_link_down",
                count: c.link_down,
            },
            DropCounter {
                name: "fault_delayed",
                count: c.delayed,
            },
            DropCounter {
                name: "fault_delay_overflow",
                count: c.delay_overflow,
            },
        ]);
        s
    }

    fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        self.inner.poll_fd()
    }

    fn clear_poll_fd(&mut self) {
        self.inner.clear_poll_fd();
    }

    fn next_deadline(&self) -> Option<Instant> {
        match (self.pending.is_empty(), self.delayed.front()) {
            (false, _) => Some(Instant::now()),
            (true, Some((due, _))) => Some(*due),
            (true, None) => self.held.as_ref().map(|_| Instant::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Mempool, Offloads, PortKind};

    /// Hands out numbered frames, `per_call` at a time, and records what is sent.
    struct Counter {
        pool: Mempool,
        next: u32,
        total: u32,
        per_call: u32,
        sent: Vec<u32>,
    }

    impl Port for Counter {
        fn name(&self) -> &str {
            "counter"
        }
        fn rx_batch(&mut self, batch: &mut Batch) -> usize {
            let mut n = 0;
            while n < self.per_call && self.next < self.total && !batch.is_full() {
                let mut b = self.pool.alloc().unwrap();
                b.extend_from_slice(&self.next.to_be_bytes()).unwrap();
                batch.push(b).unwrap();
                self.next += 1;
                n += 1;
            }
            n as usize
        }
        fn tx_batch(&mut self, batch: &mut Batch) -> usize {
            let n = batch.len();
            for b in batch.drain() {
                self.sent
                    .push(u32::from_be_bytes(b.data().try_into().unwrap()));
            }
            n
        }
        fn caps(&self) -> PortCaps {
            PortCaps {
                kind: PortKind::Datagram,
                mtu: 1500,
                rx_queues: 1,
                tx_queues: 1,
                offloads: Offloads::NONE,
            }
        }
        fn stats(&self) -> PortStats {
            PortStats::default()
        }
        fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
            None
        }
    }

    fn receive_all(p: &mut FaultPort) -> Vec<u32> {
        let mut got = Vec::new();
        let mut b = Batch::new();
        for _ in 0..10_000 {
            p.rx_batch(&mut b);
            got.extend(
                b.drain()
                    .map(|f| u32::from_be_bytes(f.data().try_into().unwrap_or([0xff; 4]))),
            );
        }
        got
    }

    fn faulty(cfg: FaultConfig, total: u32) -> FaultPort {
        let pool = Mempool::new(1024, 256).unwrap();
        FaultPort::new(
            Box::new(Counter {
                pool,
                next: 0,
                total,
                per_call: 7,
                sent: Vec::new(),
            }),
            cfg,
        )
    }

    #[test]
    fn no_faults_is_transparent() {
        let mut p = faulty(FaultConfig::default(), 1000);
        assert_eq!(receive_all(&mut p), (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn drops_about_the_configured_share_and_counts_each() {
        let mut p = faulty(
            FaultConfig {
                drop: 0.1,
                seed: 7,
                ..Default::default()
            },
            10_000,
        );
        let got = receive_all(&mut p);
        let dropped = p.stats().drop_count("fault_dropped");
        assert_eq!(got.len() as u64 + dropped, 10_000);
        assert!((700..1300).contains(&dropped), "{dropped}");
        assert!(got.windows(2).all(|w| w[0] < w[1]), "order kept");
    }

    #[test]
    fn reorder_and_duplicate_lose_nothing() {
        let cfg = FaultConfig {
            reorder: 0.05,
            duplicate: 0.05,
            seed: 3,
            ..Default::default()
        };
        let mut p = faulty(cfg, 5000);
        let mut got = receive_all(&mut p);
        let s = p.stats();
        assert!(s.drop_count("fault_reordered") > 100);
        assert!(
            got.windows(2).any(|w| w[0] > w[1]),
            "something overtook something"
        );
        assert_eq!(got.len() as u64, 5000 + s.drop_count("fault_duplicated"));
        got.sort_unstable();
        got.dedup();
        assert_eq!(got, (0..5000).collect::<Vec<_>>());
    }

    #[test]
    fn corrupt_changes_bytes_and_counts() {
        let mut p = faulty(
            FaultConfig {
                corrupt: 1.0,
                seed: 5,
                ..Default::default()
            },
            100,
        );
        let got = receive_all(&mut p);
        assert_eq!(p.stats().drop_count("fault_corrupted"), 100);
        assert!(got.iter().enumerate().all(|(i, v)| *v != i as u32));
    }

    /// Hands out one frame whose last bytes are an external tail over `tail`.
    struct TailSource {
        pool: Mempool,
        tail: &'static [u8],
        ring: std::sync::Arc<crate::DoneRing>,
        sent: bool,
    }

    impl Port for TailSource {
        fn name(&self) -> &str {
            "tails"
        }
        fn rx_batch(&mut self, batch: &mut Batch) -> usize {
            if std::mem::replace(&mut self.sent, true) {
                return 0;
            }
            let mut b = self.pool.alloc().unwrap();
            b.extend_from_slice(&[0u8; 4]).unwrap();
            let ptr = std::ptr::NonNull::new(self.tail.as_ptr().cast_mut()).unwrap();
            let done = crate::Completion::new(self.ring.clone(), 9);
            // SAFETY: a `'static` slice nobody writes.
            b.attach_ext(unsafe { crate::ExtSeg::new(ptr, self.tail.len() as u32, None, done) });
            batch.push(b).unwrap();
            1
        }
        fn tx_batch(&mut self, batch: &mut Batch) -> usize {
            let n = batch.len();
            batch.drain().for_each(drop);
            n
        }
        fn caps(&self) -> PortCaps {
            PortCaps {
                kind: PortKind::Ethernet,
                mtu: 1500,
                rx_queues: 1,
                tx_queues: 1,
                offloads: Offloads::EXT_TAIL,
            }
        }
        fn stats(&self) -> PortStats {
            PortStats::default()
        }
        fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
            None
        }
    }

    #[test]
    fn corrupting_a_frame_with_a_tail_never_writes_the_tail() {
        static TAIL: [u8; 600] = [0x11; 600];
        let ring = crate::DoneRing::new(4);
        let src = TailSource {
            pool: Mempool::new(8, 2048).unwrap(),
            tail: &TAIL,
            ring: ring.clone(),
            sent: false,
        };
        let cfg = FaultConfig {
            corrupt: 1.0,
            seed: 7,
            ..Default::default()
        };
        let mut p = FaultPort::new(Box::new(src), cfg);
        let mut b = Batch::new();
        assert_eq!(p.rx_batch(&mut b), 1);
        let f = b.drain().next().unwrap();
        assert!(f.is_linear(), "joined before a byte was flipped");
        assert_eq!(ring.pop(), Some(9), "the tail went back to its owner");
        assert_eq!(f.len(), 604);
        let flipped = f.data().iter().zip([0u8; 4].iter().chain(TAIL.iter()));
        assert_eq!(flipped.filter(|(a, b)| a != b).count(), 1);
        assert!(TAIL.iter().all(|&x| x == 0x11));
    }

    #[test]
    fn link_down_drops_both_ways() {
        let cfg = FaultConfig {
            flap: Some((Duration::ZERO, Duration::from_secs(3600))),
            ..Default::default()
        };
        let mut p = faulty(cfg, 50);
        assert!(receive_all(&mut p).is_empty());
        let pool = Mempool::new(4, 256).unwrap();
        let mut b = Batch::new();
        b.push(pool.alloc().unwrap()).unwrap();
        assert_eq!(p.tx_batch(&mut b), 1, "dropped frames count as consumed");
        assert!(b.is_empty());
        assert_eq!(p.stats().drop_count("fault_link_down"), 51);
    }

    #[test]
    fn delay_holds_frames_back_in_order_and_reports_when_they_are_due() {
        let delay = Duration::from_millis(150);
        let cfg = FaultConfig {
            delay,
            jitter: Duration::from_millis(20),
            seed: 9,
            ..Default::default()
        };
        let mut p = faulty(cfg, 40);
        let start = Instant::now();
        let mut b = Batch::new();
        let mut got = Vec::new();
        // The first call takes frames in and holds them: the deadline is asked at once
        // (after more calls, a thread descheduled past the delay would find them gone).
        p.rx_batch(&mut b);
        let due = p.next_deadline().expect("frames are held");
        assert!(due >= start + delay, "deadline is at least the delay away");
        // Read everything the inner port has; nothing may come out before `delay`.
        for call in 0..20 {
            if call > 0 {
                p.rx_batch(&mut b);
            }
            if start.elapsed() < delay {
                assert!(b.is_empty(), "a frame came out before its delay");
            }
            got.extend(b.drain().map(|f| f.data()[3]));
        }
        while got.len() < 40 && start.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(10));
            p.rx_batch(&mut b);
            got.extend(b.drain().map(|f| f.data()[3]));
        }
        assert_eq!(got, (0..40).collect::<Vec<u8>>(), "all delivered, in order");
        assert_eq!(p.stats().drop_count("fault_delayed"), 40);
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn delay_queue_is_bounded_and_overflow_is_counted() {
        let cfg = FaultConfig {
            delay: Duration::from_secs(3600),
            ..Default::default()
        };
        let total = (DELAY_QUEUE_MAX + 100) as u32;
        let pool = Mempool::new(2048, 256).unwrap();
        let mut p = FaultPort::new(
            Box::new(Counter {
                pool: pool.clone(),
                next: 0,
                total,
                per_call: 64,
                sent: Vec::new(),
            }),
            cfg,
        );
        assert!(receive_all(&mut p).is_empty());
        let s = p.stats();
        assert_eq!(s.drop_count("fault_delayed"), DELAY_QUEUE_MAX as u64);
        assert_eq!(s.drop_count("fault_delay_overflow"), 100);
        drop(p);
        assert_eq!(pool.available(), 2048, "held frames return to the pool");
    }
}
