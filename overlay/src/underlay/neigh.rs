//! The neighbour table shared by ARP (IPv4) and neighbour discovery (IPv6): next-hop IP
//! to MAC, with a bounded queue of frames waiting for resolution.
//!
//! States follow RFC 4861 7.3.2 in a reduced form. An entry without a MAC is
//! *incomplete*: a request goes out every `retrans` up to `probes` times, then the
//! entry and its queued frames are dropped (counted). An entry with a MAC is
//! *reachable* for `reachable` after its last confirmation (an ARP/ND message from the
//! neighbour, or a datagram from it carrying that MAC); after that it is *stale*: still
//! used, refreshed by unicast requests to the known MAC, and removed when those go
//! unanswered (or right away when nothing used it), so the next frame resolves again by
//! broadcast and a neighbour that changed its MAC is re-learned.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use pkt::PktBuf;
use pkt::wire::MacAddr;

/// Timers and bounds of neighbour resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighborTimers {
    /// How long a confirmation keeps an entry reachable (Linux: 30 s base).
    pub reachable: Duration,
    /// Interval between requests (Linux `retrans_time`: 1 s).
    pub retrans: Duration,
    /// Requests sent before giving up (Linux `mcast_solicit`/`ucast_solicit`: 3).
    pub probes: u8,
    /// Frames queued per unresolved neighbour; more are dropped and counted.
    pub queue_per_neighbor: usize,
    /// Frames queued over all neighbours.
    pub queue_total: usize,
    /// Entries in the table; new neighbours beyond it are refused and counted.
    pub max_neighbors: usize,
}

impl Default for NeighborTimers {
    fn default() -> Self {
        Self {
            reachable: Duration::from_secs(30),
            retrans: Duration::from_secs(1),
            probes: 3,
            queue_per_neighbor: 32,
            queue_total: 512,
            max_neighbors: 1024,
        }
    }
}

/// One neighbour.
#[derive(Debug)]
struct Neighbor {
    mac: Option<MacAddr>,
    confirmed: Instant,
    used: Instant,
    probes: u8,
    next_probe: Instant,
    queue: VecDeque<PktBuf>,
}

/// A request the table wants sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Probe {
    /// Whom to ask about.
    pub ip: IpAddr,
    /// `Some(mac)`: a unicast refresh to the known MAC; `None`: broadcast/multicast.
    pub unicast: Option<MacAddr>,
}

/// What [`NeighborTable::resolve`] did with a frame.
#[derive(Debug)]
pub(crate) enum Resolved {
    /// The next hop's MAC: send now (the frame is given back).
    Mac(MacAddr, PktBuf),
    /// Queued; `Some` when a first request must go out now.
    Queued(Option<Probe>),
    /// Dropped: the neighbour's queue (or all queues) is full.
    QueueFull,
    /// Dropped: the table has no room for a new neighbour.
    TableFull,
}

/// Next-hop IP to MAC, with queues of frames waiting for resolution.
#[derive(Debug)]
pub(crate) struct NeighborTable {
    map: HashMap<IpAddr, Neighbor>,
    timers: NeighborTimers,
    queued: usize,
}

impl NeighborTable {
    pub(crate) fn new(timers: NeighborTimers) -> Self {
        Self {
            map: HashMap::with_capacity(16),
            timers,
            queued: 0,
        }
    }

    /// The MAC to send a frame for `ip` to, or the frame queued behind a resolution.
    pub(crate) fn resolve(&mut self, ip: IpAddr, buf: PktBuf, now: Instant) -> Resolved {
        if let Some(n) = self.map.get_mut(&ip) {
            n.used = now;
            if let Some(mac) = n.mac {
                return Resolved::Mac(mac, buf);
            }
            if n.queue.len() >= self.timers.queue_per_neighbor
                || self.queued >= self.timers.queue_total
            {
                return Resolved::QueueFull;
            }
            n.queue.push_back(buf);
            self.queued += 1;
            return Resolved::Queued(None);
        }
        if self.map.len() >= self.timers.max_neighbors {
            return Resolved::TableFull;
        }
        if self.queued >= self.timers.queue_total {
            return Resolved::QueueFull;
        }
        let mut queue = VecDeque::with_capacity(self.timers.queue_per_neighbor.min(8));
        queue.push_back(buf);
        self.queued += 1;
        self.map.insert(
            ip,
            Neighbor {
                mac: None,
                confirmed: now,
                used: now,
                probes: 1,
                next_probe: now + self.timers.retrans,
                queue,
            },
        );
        Resolved::Queued(Some(Probe { ip, unicast: None }))
    }

    /// The MAC of `ip`, if known (no side effect on timers).
    pub(crate) fn mac_of(&self, ip: &IpAddr) -> Option<MacAddr> {
        self.map.get(ip).and_then(|n| n.mac)
    }

    /// True when `ip` has an entry (resolved or not).
    pub(crate) fn contains(&self, ip: &IpAddr) -> bool {
        self.map.contains_key(ip)
    }

    /// Number of entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Frames waiting for resolution, over all neighbours.
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    /// Records that `ip` is at `mac`, now. Updates an existing entry (a changed MAC
    /// replaces the old one); creates one only when `create` (the neighbour addressed
    /// us, RFC 826's "merge" rule). Returns the frames that were waiting for it, to send
    /// now. When the entry was already resolved, `out` is left untouched.
    pub(crate) fn learn(
        &mut self,
        ip: IpAddr,
        mac: MacAddr,
        now: Instant,
        create: bool,
        out: &mut VecDeque<PktBuf>,
    ) {
        let room = self.map.len() < self.timers.max_neighbors;
        match self.map.get_mut(&ip) {
            Some(n) => {
                n.mac = Some(mac);
                n.confirmed = now;
                n.probes = 0;
                n.next_probe = now + self.timers.reachable;
                if !n.queue.is_empty() {
                    self.queued -= n.queue.len();
                    out.append(&mut n.queue);
                }
            }
            None if create && room => {
                self.map.insert(
                    ip,
                    Neighbor {
                        mac: Some(mac),
                        confirmed: now,
                        used: now,
                        probes: 0,
                        next_probe: now + self.timers.reachable,
                        queue: VecDeque::new(),
                    },
                );
            }
            None => {}
        }
    }

    /// A datagram from `ip` arrived from `mac`: confirms the entry if the MAC matches
    /// (upper-layer reachability confirmation, RFC 4861 7.3.1).
    pub(crate) fn confirm(&mut self, ip: &IpAddr, mac: MacAddr, now: Instant) {
        if let Some(n) = self.map.get_mut(ip)
            && n.mac == Some(mac)
            && now.saturating_duration_since(n.confirmed) > self.timers.reachable / 4
        {
            n.confirmed = now;
            n.probes = 0;
            n.next_probe = now + self.timers.reachable;
        }
    }

    /// Runs the timers: pushes requests to send onto `probes` (at most its spare
    /// capacity; the rest wait for the next tick) and returns how many queued frames
    /// were dropped because their neighbour did not answer.
    pub(crate) fn tick(&mut self, now: Instant, probes: &mut Vec<Probe>) -> u64 {
        let t = self.timers;
        let mut dropped = 0u64;
        let mut queued = self.queued;
        self.map.retain(|ip, n| {
            if now < n.next_probe {
                return true;
            }
            match n.mac {
                None => {
                    if n.probes >= t.probes {
                        dropped += n.queue.len() as u64;
                        queued -= n.queue.len();
                        return false;
                    }
                    if probes.len() < probes.capacity() {
                        probes.push(Probe {
                            ip: *ip,
                            unicast: None,
                        });
                        n.probes += 1;
                        n.next_probe = now + t.retrans;
                    }
                    true
                }
                Some(mac) => {
                    let stale = now.saturating_duration_since(n.confirmed) >= t.reachable;
                    if !stale {
                        n.next_probe = n.confirmed + t.reachable;
                        return true;
                    }
                    // Nobody used it since it was confirmed: forget it quietly.
                    if n.used <= n.confirmed || n.probes >= t.probes {
                        return false;
                    }
                    if probes.len() < probes.capacity() {
                        probes.push(Probe {
                            ip: *ip,
                            unicast: Some(mac),
                        });
                        n.probes += 1;
                        n.next_probe = now + t.retrans;
                    }
                    true
                }
            }
        });
        self.queued = queued;
        dropped
    }

    /// Drops every entry and queued frame; returns how many frames were queued.
    pub(crate) fn clear(&mut self) -> usize {
        let q = self.queued;
        self.map.clear();
        self.queued = 0;
        q
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic in a test is its failure report
mod tests {
    use super::*;
    use pkt::Mempool;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    const M1: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const M2: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    fn timers() -> NeighborTimers {
        NeighborTimers {
            queue_per_neighbor: 2,
            queue_total: 3,
            max_neighbors: 2,
            ..NeighborTimers::default()
        }
    }

    #[test]
    fn unresolved_neighbor_queues_then_drops_after_probes() {
        let pool = Mempool::new(8, 256).unwrap();
        let mut t = NeighborTable::new(timers());
        let t0 = Instant::now();
        assert!(matches!(
            t.resolve(ip(2), pool.alloc().unwrap(), t0),
            Resolved::Queued(Some(Probe { unicast: None, .. }))
        ));
        assert!(matches!(
            t.resolve(ip(2), pool.alloc().unwrap(), t0),
            Resolved::Queued(None)
        ));
        assert!(matches!(
            t.resolve(ip(2), pool.alloc().unwrap(), t0),
            Resolved::QueueFull
        ));
        let mut probes = Vec::with_capacity(4);
        let s = Duration::from_secs(1);
        assert_eq!(t.tick(t0 + s / 2, &mut probes), 0);
        assert!(probes.is_empty(), "no second probe before retrans");
        assert_eq!(t.tick(t0 + s, &mut probes), 0);
        assert_eq!(t.tick(t0 + 2 * s, &mut probes), 0);
        assert_eq!(probes.len(), 2, "probes 2 and 3");
        assert_eq!(
            t.tick(t0 + 3 * s, &mut probes),
            2,
            "both queued frames dropped"
        );
        assert_eq!(t.len(), 0);
        assert_eq!(t.queued(), 0);
        assert_eq!(pool.available(), 8, "dropped frames went back to the pool");
    }

    #[test]
    fn learning_releases_the_queue_and_a_new_mac_replaces_the_old() {
        let pool = Mempool::new(8, 256).unwrap();
        let mut t = NeighborTable::new(timers());
        let t0 = Instant::now();
        let _ = t.resolve(ip(2), pool.alloc().unwrap(), t0);
        let mut out = VecDeque::new();
        t.learn(ip(2), M1, t0, false, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(t.queued(), 0);
        assert!(
            matches!(t.resolve(ip(2), pool.alloc().unwrap(), t0), Resolved::Mac(m, _) if m == M1)
        );
        t.learn(ip(2), M2, t0, false, &mut out);
        assert_eq!(t.mac_of(&ip(2)), Some(M2));
    }

    #[test]
    fn only_addressed_learning_creates_entries_and_the_table_is_bounded() {
        let pool = Mempool::new(8, 256).unwrap();
        let mut t = NeighborTable::new(timers());
        let t0 = Instant::now();
        let mut out = VecDeque::new();
        t.learn(ip(5), M1, t0, false, &mut out);
        assert!(!t.contains(&ip(5)));
        t.learn(ip(5), M1, t0, true, &mut out);
        t.learn(ip(6), M1, t0, true, &mut out);
        t.learn(ip(7), M1, t0, true, &mut out);
        assert_eq!(t.len(), 2);
        assert!(matches!(
            t.resolve(ip(8), pool.alloc().unwrap(), t0),
            Resolved::TableFull
        ));
    }

    #[test]
    fn stale_entry_in_use_is_probed_unicast_then_forgotten() {
        let pool = Mempool::new(8, 256).unwrap();
        let mut t = NeighborTable::new(timers());
        let t0 = Instant::now();
        let mut out = VecDeque::new();
        t.learn(ip(2), M1, t0, true, &mut out);
        let r = timers().reachable;
        let s = Duration::from_secs(1);
        // Used after its confirmation: refreshed rather than forgotten.
        let _ = t.resolve(ip(2), pool.alloc().unwrap(), t0 + s);
        let mut probes = Vec::with_capacity(4);
        t.tick(t0 + r, &mut probes);
        assert_eq!(
            probes,
            [Probe {
                ip: ip(2),
                unicast: Some(M1)
            }]
        );
        t.tick(t0 + r + s, &mut probes);
        t.tick(t0 + r + 2 * s, &mut probes);
        assert_eq!(probes.len(), 3);
        assert!(t.contains(&ip(2)), "still used while probing");
        t.tick(t0 + r + 3 * s, &mut probes);
        assert!(!t.contains(&ip(2)), "unanswered refresh forgets the MAC");
    }

    #[test]
    fn unused_stale_entry_is_forgotten_without_traffic() {
        let mut t = NeighborTable::new(timers());
        let t0 = Instant::now();
        let mut out = VecDeque::new();
        t.learn(ip(2), M1, t0, true, &mut out);
        let mut probes = Vec::with_capacity(4);
        t.tick(t0 + timers().reachable, &mut probes);
        assert!(probes.is_empty());
        assert!(!t.contains(&ip(2)));
    }

    #[test]
    fn confirmation_from_traffic_keeps_an_entry_reachable() {
        let pool = Mempool::new(8, 256).unwrap();
        let mut t = NeighborTable::new(timers());
        let t0 = Instant::now();
        let mut out = VecDeque::new();
        t.learn(ip(2), M1, t0, true, &mut out);
        let r = timers().reachable;
        let _ = t.resolve(ip(2), pool.alloc().unwrap(), t0 + r / 2);
        t.confirm(&ip(2), M1, t0 + r / 2);
        t.confirm(&ip(2), M2, t0 + r); // wrong MAC: no confirmation
        let mut probes = Vec::with_capacity(4);
        t.tick(t0 + r, &mut probes);
        assert!(probes.is_empty());
        assert_eq!(t.mac_of(&ip(2)), Some(M1));
    }
}
