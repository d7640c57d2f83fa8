//! Shards: several dispatcher threads, each running its own [`Engine`] to completion.
//!
//! Every shard has the whole link and route tables (replicated: the control handle
//! applies each command to every shard) and its own underlay socket. Each interface is
//! owned by exactly one shard, which runs its real port; every other shard has a
//! [`StandInPort`] at the same slot that hands frames for the interface to the owner
//! through the interface's [`InboundRing`], a bounded lock-free queue, and wakes the
//! owner through the ring's eventfd once per batch. The owner drains the ring each
//! round into the interface's normal transmit path. Nothing on the packet path takes
//! a lock or allocates: the [`ShardRegistry`] that decides ownership is locked only
//! when an interface is created or removed. It also tells the daemon's steering
//! function ([`ShardRegistry::set_steering`]) each interface's MAC and owner whenever
//! that changes, so the underlay can hand each datagram to its owner's socket; a
//! datagram received elsewhere still reaches the owner through the ring.
//!
//! One shard is the same code with no registry: interfaces have no ring and no
//! stand-ins exist.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crossbeam_queue::ArrayQueue;
use pkt::wire::MacAddr;
use pkt::{Batch, Mempool, Offloads, PktBuf, Port, PortCaps, PortKind, PortStats};

use crate::config::{Config, InterfaceKind};
use crate::engine::{
    CacheStats, Engine, EngineError, InterfaceFactory, InterfaceReport, LinkReport, PortReport,
    ShardLoad, Stats,
};
use crate::server::{EngineEnd, EngineHandle};

/// Frames one interface's inbound ring holds.
pub const RING_CAPACITY: usize = 1024;

/// Errors building shards.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// An engine could not be built.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// No underlay port was given.
    #[error("shards need at least one underlay port (one per shard)")]
    NoUnderlay,
    /// An interface could not be created.
    #[error("{0}")]
    Interface(String),
    /// A link could not be added.
    #[error("link {name}: {message}")]
    Link {
        /// The link.
        name: String,
        /// Why.
        message: String,
    },
    /// A route could not be added.
    #[error("route {route}: {message}")]
    Route {
        /// The route.
        route: String,
        /// Why.
        message: String,
    },
    /// A shard's thread panicked (the others were stopped).
    #[error("dataplane shard {0} panicked; the daemon stopped every shard")]
    Panicked(usize),
    /// `[host] cpus` names a CPU this process may not run on.
    #[error("cpus: CPU {cpu} is not available to vnetp (it may run on CPUs {allowed})")]
    Cpu {
        /// The CPU asked for.
        cpu: usize,
        /// The CPUs it may run on, comma-separated.
        allowed: String,
    },
    /// A system call failed (eventfd, pipe, thread).
    #[error("{what}: {source}")]
    Io {
        /// What was being set up.
        what: &'static str,
        /// The cause.
        source: std::io::Error,
    },
}

/// The bounded queue of frames other shards send to one interface, and the eventfd
/// that wakes its owner.
pub struct InboundRing {
    frames: ArrayQueue<PktBuf>,
    wake: OwnedFd,
}

impl std::fmt::Debug for InboundRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundRing")
            .field("len", &self.frames.len())
            .finish_non_exhaustive()
    }
}

impl InboundRing {
    /// An empty ring of [`RING_CAPACITY`] frames with a non-blocking eventfd.
    pub fn new() -> std::io::Result<Self> {
        Self::with_capacity(RING_CAPACITY)
    }

    /// An empty ring of `capacity` frames (at least 1).
    pub fn with_capacity(capacity: usize) -> std::io::Result<Self> {
        let wake = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::NONBLOCK | rustix::event::EventfdFlags::CLOEXEC,
        )?;
        Ok(Self {
            frames: ArrayQueue::new(capacity.max(1)),
            wake,
        })
    }

    /// Takes the oldest frame.
    #[inline]
    pub fn pop(&self) -> Option<PktBuf> {
        self.frames.pop()
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// True when no frame waits.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Readable after a sender queued frames, until [`InboundRing::clear_wake`].
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Resets the eventfd (the owner does so when its wait found it readable, before
    /// draining the ring, so a later push wakes it again).
    pub fn clear_wake(&self) {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.wake, &mut buf);
    }

    fn wake(&self) {
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }
}

/// Told which shard owns which interface MAC, each time that changes: the daemon
/// steers the underlay's datagrams to the owner's socket with it.
pub type SteerFn = Box<dyn FnMut(&[(MacAddr, usize)]) + Send>;

/// Which shard owns each interface, and the interfaces' rings. Locked only when an
/// interface is created or removed (control time), never per frame.
pub struct ShardRegistry {
    shards: usize,
    map: Mutex<HashMap<String, Owned>>,
    /// Called with every interface's (MAC, owner) when an interface is created or
    /// removed; locked after `map`.
    steer: Mutex<Option<SteerFn>>,
}

impl std::fmt::Debug for ShardRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardRegistry")
            .field("shards", &self.shards)
            .field("map", &self.map)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Owned {
    owner: usize,
    mac: MacAddr,
    ring: Arc<InboundRing>,
    /// Shards that hold this interface (the owner and its stand-ins).
    holders: usize,
}

impl ShardRegistry {
    /// A registry for `shards` shards (at least 1).
    pub fn new(shards: usize) -> Arc<Self> {
        Arc::new(Self {
            shards: shards.max(1),
            map: Mutex::new(HashMap::new()),
            steer: Mutex::new(None),
        })
    }

    /// Calls `steer` with every interface's MAC and owner now, and again whenever an
    /// interface is created or removed (not when another shard takes a hold on an
    /// existing one), until replaced. It runs under the registry's lock, so its calls
    /// come in the order of the changes.
    pub fn set_steering(&self, mut steer: SteerFn) {
        let map = self.lock();
        steer(&Self::targets(&map));
        *self.steer_lock() = Some(steer);
    }

    fn steer_lock(&self) -> MutexGuard<'_, Option<SteerFn>> {
        self.steer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every interface's (MAC, owner), by interface name.
    fn targets(map: &HashMap<String, Owned>) -> Vec<(MacAddr, usize)> {
        let mut named: Vec<(&String, &Owned)> = map.iter().collect();
        named.sort_by_key(|(name, _)| *name);
        named.into_iter().map(|(_, o)| (o.mac, o.owner)).collect()
    }

    /// Tells the steering function (if any) about the interfaces in `map`.
    fn resteer(&self, map: &HashMap<String, Owned>) {
        if let Some(steer) = self.steer_lock().as_mut() {
            steer(&Self::targets(map));
        }
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Owned>> {
        // The map stays consistent under a panic elsewhere: every change is one insert,
        // update or remove.
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The shard that owns interface `name`, if it exists.
    pub fn owner(&self, name: &str) -> Option<usize> {
        self.lock().get(name).map(|o| o.owner)
    }

    /// A shard's hold on interface `name` (with MAC `mac`): its owner and ring. The
    /// first shard to ask for a name decides its owner: the shard owning the fewest
    /// interfaces, ties to the lowest index. Every shard that asks gets the same
    /// answer until the last hold is dropped.
    pub fn claim(self: &Arc<Self>, name: &str, mac: MacAddr) -> std::io::Result<Lease> {
        let mut map = self.lock();
        let (owner, ring) = match map.get_mut(name) {
            Some(o) => {
                o.holders += 1;
                (o.owner, Arc::clone(&o.ring))
            }
            None => {
                let mut load = vec![0usize; self.shards];
                for o in map.values() {
                    if let Some(l) = load.get_mut(o.owner) {
                        *l += 1;
                    }
                }
                let owner = (0..self.shards).min_by_key(|&i| (load[i], i)).unwrap_or(0);
                let ring = Arc::new(InboundRing::new()?);
                map.insert(
                    name.to_string(),
                    Owned {
                        owner,
                        mac,
                        ring: Arc::clone(&ring),
                        holders: 1,
                    },
                );
                self.resteer(&map);
                (owner, ring)
            }
        };
        Ok(Lease {
            registry: Arc::clone(self),
            name: name.to_string(),
            owner,
            ring,
        })
    }
}

/// One shard's hold on an interface: who owns it and its ring. Dropping the last
/// lease of a name forgets the interface; its ring goes with the last reference, and
/// the frames still in it return to their pool.
#[derive(Debug)]
pub struct Lease {
    registry: Arc<ShardRegistry>,
    name: String,
    owner: usize,
    ring: Arc<InboundRing>,
}

impl Lease {
    /// The owning shard.
    pub fn owner(&self) -> usize {
        self.owner
    }

    /// The interface's inbound ring.
    pub fn ring(&self) -> &InboundRing {
        &self.ring
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut map = self.registry.lock();
        if let Some(o) = map.get_mut(&self.name)
            && Arc::ptr_eq(&o.ring, &self.ring)
        {
            o.holders = o.holders.saturating_sub(1);
            if o.holders == 0 {
                map.remove(&self.name);
                self.registry.resteer(&map);
            }
        }
    }
}

/// The interface as a shard that does not own it sees it: frames sent to it go into
/// the owner's ring (all of them: the owner applies the interface's MTU, segmentation
/// and offloads), and nothing is ever received from it.
///
/// Named drop: `shard_ring_full` (the owner's ring had no room). Event:
/// `shard_handoff` (frames put in the ring).
pub struct StandInPort {
    name: String,
    ring: Arc<InboundRing>,
    sent: u64,
    sent_bytes: u64,
    ring_full: u64,
}

impl StandInPort {
    /// A stand-in for interface `interface`, feeding `ring` (owned by shard `owner`).
    pub fn new(interface: &str, owner: usize, ring: Arc<InboundRing>) -> Self {
        Self {
            name: format!("shard{owner}:{interface}"),
            ring,
            sent: 0,
            sent_bytes: 0,
            ring_full: 0,
        }
    }

    /// A stand-in for the interface `lease` holds.
    pub fn for_lease(lease: &Lease) -> Self {
        Self::new(&lease.name, lease.owner, Arc::clone(&lease.ring))
    }
}

impl Port for StandInPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_batch(&mut self, _batch: &mut Batch) -> usize {
        0
    }

    /// Moves every frame into the ring (or drops it, counted, when the ring is full)
    /// and wakes the owner once if any went in.
    fn tx_batch(&mut self, batch: &mut Batch) -> usize {
        let n = batch.len();
        let mut pushed = 0u64;
        for buf in batch.drain() {
            let len = buf.frame_len() as u64;
            match self.ring.frames.push(buf) {
                Ok(()) => {
                    pushed += 1;
                    self.sent_bytes += len;
                }
                // The rejected frame returns to its pool here.
                Err(_) => self.ring_full += 1,
            }
        }
        if pushed > 0 {
            self.sent += pushed;
            self.ring.wake();
        }
        n
    }

    fn caps(&self) -> PortCaps {
        // The owner's transmit path does segmentation and joins tails: take anything.
        PortCaps {
            kind: PortKind::Ethernet,
            mtu: 65_535,
            rx_queues: 0,
            tx_queues: 1,
            offloads: Offloads::TX_CSUM | Offloads::TSO4 | Offloads::TSO6 | Offloads::EXT_TAIL,
        }
    }

    fn stats(&self) -> PortStats {
        PortStats::new(
            (0, 0),
            (self.sent, self.sent_bytes),
            &[("shard_ring_full", self.ring_full)],
        )
    }

    fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    fn events(&self) -> Vec<pkt::DropCounter> {
        vec![pkt::DropCounter {
            name: "shard_handoff",
            count: self.sent,
        }]
    }
}

/// A shard's place among its siblings, as its engine knows it.
#[derive(Debug, Clone)]
pub(crate) struct Seat {
    pub index: usize,
    pub registry: Arc<ShardRegistry>,
}

/// A new interface's port on one shard: the real one (owner) or a stand-in.
pub(crate) struct SeatedPort {
    pub port: Box<dyn Port>,
    pub lease: Option<Lease>,
    pub stand_in: bool,
}

/// Makes the port for interface `cfg` on the shard at `seat` (no seat: one shard, the
/// device factory's port as it is).
pub(crate) fn seat_port(
    seat: Option<&Seat>,
    factory: &mut dyn InterfaceFactory,
    cfg: &crate::config::InterfaceConfig,
) -> Result<SeatedPort, String> {
    let Some(seat) = seat else {
        return Ok(SeatedPort {
            port: factory.create(cfg)?,
            lease: None,
            stand_in: false,
        });
    };
    let lease = seat
        .registry
        .claim(&cfg.name, cfg.mac)
        .map_err(|e| format!("interface {}: ring eventfd: {e}", cfg.name))?;
    if lease.owner == seat.index {
        // On failure the lease drops here, and with the last one the claim.
        let port = factory.create(cfg)?;
        Ok(SeatedPort {
            port,
            lease: Some(lease),
            stand_in: false,
        })
    } else {
        Ok(SeatedPort {
            port: Box::new(StandInPort::for_lease(&lease)),
            lease: Some(lease),
            stand_in: true,
        })
    }
}

/// Every shard's engine, built from one configuration, with the control handle that
/// reaches them all.
pub struct Shards {
    engines: Vec<Engine>,
    ends: Vec<EngineEnd>,
    handle: EngineHandle,
    /// The CPU of each shard's thread and its affinity set (`[host] cpus`, checked when
    /// built); empty: not pinned.
    pins: Vec<(usize, rustix::thread::CpuSet)>,
}

impl Shards {
    /// One shard per port in `underlays` (all bound to the same address), each with a
    /// device factory from `factory` (called once per shard; only an interface's owner
    /// asks its factory for the real port), the configured interfaces spread over
    /// them in file order, and the links and routes of `cfg` on every shard. With
    /// `reload`, `ctl reload` re-reads that file.
    pub fn build(
        cfg: &Config,
        pool: &Mempool,
        underlays: Vec<Box<dyn Port>>,
        mut factory: impl FnMut() -> Box<dyn InterfaceFactory>,
        reload: Option<&Path>,
    ) -> Result<Self, ShardError> {
        let n = underlays.len();
        if n == 0 {
            return Err(ShardError::NoUnderlay);
        }
        let registry = (n > 1).then(|| ShardRegistry::new(n));
        let (handle, ends) =
            crate::server::engine_channels(n, registry.clone()).map_err(|e| ShardError::Io {
                what: "control channel",
                source: e,
            })?;
        let mut engines = Vec::with_capacity(n);
        for (index, underlay) in underlays.into_iter().enumerate() {
            let mut e = Engine::new(&cfg.host.name, pool.clone(), underlay, cfg.host.dispatch)?;
            if let Some(r) = &registry {
                e.take_seat(index, Arc::clone(r));
            }
            match reload {
                Some(path) => e.enable_reload(path.to_path_buf(), cfg.clone(), factory()),
                None => e.set_interface_factory(factory()),
            }
            for i in &cfg.interfaces {
                if let InterfaceKind::Vf { pci, .. } = &i.kind {
                    // The NIC switches the VF's frames; the PF driver set its MAC and VLAN.
                    if index == 0 {
                        tracing::info!(interface = %i.name, pci = %pci, mac = %i.mac, "SR-IOV VF handed to a guest");
                    }
                    continue;
                }
                e.create_interface(i).map_err(ShardError::Interface)?;
            }
            for l in &cfg.links {
                e.add_keyed_link(&l.name, l.peer, l.encap, l.key)
                    .and_then(|ep| e.set_link_mtu(ep, l.mtu as usize))
                    .map_err(|message| ShardError::Link {
                        name: l.name.clone(),
                        message,
                    })?;
            }
            for r in &cfg.routes {
                e.add_route(r).map_err(|message| ShardError::Route {
                    route: r.to_string(),
                    message,
                })?;
            }
            engines.push(e);
        }
        // Refuse CPUs the daemon may not use now, before it says it is running.
        let pins = pin_sets(&cfg.host.cpus)?;
        Ok(Self {
            engines,
            ends,
            handle,
            pins,
        })
    }

    /// Steers the underlay by interface MAC: `steer` is called with every interface's
    /// (MAC, owner shard) now and whenever an interface is created or removed (see
    /// [`ShardRegistry::set_steering`]). False, and `steer` is never called, with one
    /// shard.
    pub fn steer_underlay(&self, steer: SteerFn) -> bool {
        match self.handle.registry() {
            Some(r) => {
                r.set_steering(steer);
                true
            }
            None => false,
        }
    }

    /// The handle that sends control commands to every shard.
    pub fn handle(&self) -> EngineHandle {
        self.handle.clone()
    }

    /// Number of shards.
    pub fn len(&self) -> usize {
        self.engines.len()
    }

    /// Always false: there is at least one shard.
    pub fn is_empty(&self) -> bool {
        self.engines.is_empty()
    }

    /// The engines, shard 0 first (for tests that step them by hand).
    pub fn engines_mut(&mut self) -> &mut [Engine] {
        &mut self.engines
    }

    /// Runs every shard on its own thread (`vnetp-shard-{i}`) until `stop` is set,
    /// then joins them all. A thread that cannot be started, or that panics, stops
    /// the others (a shard's interfaces would otherwise be dead while the daemon runs).
    pub fn run(self, stop: &AtomicBool) -> Result<(), ShardError> {
        /// Sets `stop` when its thread unwinds.
        struct StopOnPanic<'a>(&'a AtomicBool);
        impl Drop for StopOnPanic<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
        }
        let Self {
            engines,
            ends,
            pins,
            ..
        } = self;
        std::thread::scope(|s| {
            let mut threads = Vec::with_capacity(engines.len());
            for (i, (mut engine, end)) in engines.into_iter().zip(ends).enumerate() {
                let pin = pins.get(i).copied();
                let spawned = std::thread::Builder::new()
                    .name(format!("vnetp-shard-{i}"))
                    .spawn_scoped(s, move || {
                        let _guard = StopOnPanic(stop);
                        if let Some((cpu, set)) = pin {
                            // Checked against the allowed set just before; a CPU going
                            // offline in between leaves the thread where it is.
                            match rustix::thread::sched_setaffinity(None, &set) {
                                Ok(()) => tracing::info!(shard = i, cpu, "shard pinned"),
                                Err(e) => tracing::warn!(shard = i, cpu, error = %e, "cannot pin shard; it runs unpinned"),
                            }
                        }
                        engine.run(stop, Some((&end.requests, &end.waker)));
                    });
                match spawned {
                    Ok(t) => threads.push(t),
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        return Err(ShardError::Io {
                            what: "dataplane thread",
                            source: e,
                        });
                    }
                }
            }
            let mut panicked = None;
            for (i, t) in threads.into_iter().enumerate() {
                if t.join().is_err() {
                    tracing::error!(shard = i, "a dataplane shard panicked");
                    panicked = panicked.or(Some(i));
                }
            }
            panicked.map_or(Ok(()), |i| Err(ShardError::Panicked(i)))
        })
    }
}

/// The one-CPU affinity set of each shard in `cpus` (`[host] cpus`), after checking
/// that every CPU is one this process may run on (online, in its cgroup and affinity).
fn pin_sets(cpus: &[usize]) -> Result<Vec<(usize, rustix::thread::CpuSet)>, ShardError> {
    if cpus.is_empty() {
        return Ok(Vec::new());
    }
    let allowed = rustix::thread::sched_getaffinity(None).map_err(|e| ShardError::Io {
        what: "sched_getaffinity",
        source: e.into(),
    })?;
    let allowed_list = || {
        (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&c| allowed.is_set(c))
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    cpus.iter()
        .map(|&cpu| {
            if cpu >= rustix::thread::CpuSet::MAX_CPU || !allowed.is_set(cpu) {
                return Err(ShardError::Cpu {
                    cpu,
                    allowed: allowed_list(),
                });
            }
            let mut set = rustix::thread::CpuSet::new();
            set.set(cpu);
            Ok((cpu, set))
        })
        .collect()
}

// ---- statistics of several shards ---------------------------------------------------

fn add_port(into: &mut PortReport, p: &PortReport) {
    into.rx_packets += p.rx_packets;
    into.rx_bytes += p.rx_bytes;
    into.tx_packets += p.tx_packets;
    into.tx_bytes += p.tx_bytes;
    add_named(&mut into.drops, &p.drops);
    add_named(&mut into.events, &p.events);
}

fn add_named(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

impl Stats {
    /// The statistics of a sharded engine from each shard's, shard 0 first: counters
    /// summed (engine drops, route cache, underlay socket, each link's and each
    /// interface's by name); the pool, shared by all shards, once; each interface's
    /// port report from its owner, plus the drops and events of its stand-ins on
    /// other shards (`shard_ring_full`, `shard_handoff`). `None` for no shard.
    pub fn merge(parts: Vec<Stats>) -> Option<Stats> {
        let shards = parts.len();
        let first = parts.first()?;
        let mut drops = first.drops;
        let mut route_cache = CacheStats { hits: 0, misses: 0 };
        let mut underlay = PortReport {
            name: first.underlay.name.clone(),
            ..PortReport::default()
        };
        for p in &parts {
            if !std::ptr::eq(p, first) {
                drops.add(&p.drops);
            }
            route_cache.hits += p.route_cache.hits;
            route_cache.misses += p.route_cache.misses;
            add_port(&mut underlay, &p.underlay);
        }
        let links: Vec<LinkReport> = first
            .links
            .iter()
            .map(|l| {
                let mut m = l.clone();
                m.counters = Default::default();
                for p in &parts {
                    if let Some(o) = p.links.iter().find(|o| o.name == l.name) {
                        m.counters.add(&o.counters);
                    }
                }
                m
            })
            .collect();
        let interfaces: Vec<InterfaceReport> = first
            .interfaces
            .iter()
            .map(|i| {
                let owner = parts.get(i.shard).unwrap_or(first);
                let mut m = owner
                    .interfaces
                    .iter()
                    .find(|o| o.name == i.name)
                    .unwrap_or(i)
                    .clone();
                m.shard = i.shard;
                m.counters = Default::default();
                for (s, p) in parts.iter().enumerate() {
                    let Some(o) = p.interfaces.iter().find(|o| o.name == i.name) else {
                        continue;
                    };
                    m.counters.add(&o.counters);
                    if s != i.shard {
                        add_named(&mut m.port.drops, &o.port.drops);
                        add_named(&mut m.port.events, &o.port.events);
                    }
                }
                m
            })
            .collect();
        let per_shard = parts
            .iter()
            .enumerate()
            .map(|(s, p)| {
                let mut load = ShardLoad {
                    shard: s,
                    underlay_rx_packets: p.underlay.rx_packets,
                    underlay_tx_packets: p.underlay.tx_packets,
                    ..ShardLoad::default()
                };
                for i in &p.interfaces {
                    if i.shard == s {
                        load.interfaces += 1;
                        load.guest_rx_packets += i.counters.rx_packets;
                    } else {
                        load.handed_off += i.port.events.get("shard_handoff").copied().unwrap_or(0);
                    }
                }
                load
            })
            .collect();
        Some(Stats {
            host: first.host.clone(),
            shards,
            per_shard,
            drops,
            route_cache,
            pool: first.pool.clone(),
            underlay,
            links,
            interfaces,
            routes: first.routes,
        })
    }
}

#[cfg(test)]
mod tests;
