//! The forwarding engine: moves batches between interfaces, links and the underlay.
//!
//! One engine runs on one dataplane thread and owns every port it serves (with several
//! shards, one engine per thread: see [`crate::shard`]). Its loop
//! takes a batch from each port, classifies and routes every frame, and queues it on
//! per-destination transmit batches that are flushed once per round: the packet path
//! makes no allocation, takes no lock and makes no system call of its own (ports make
//! one per batch). Changes from the control socket arrive as [`Request`]s between
//! rounds, so the tables need no locking.

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pkt::wire::MacAddr;
use pkt::{Batch, DropCounter, Mempool, PktBuf, Port, PortKind};
use serde::{Deserialize, Serialize};

use crate::capture::Capture;
use crate::config::{Config, Dispatch, InterfaceConfig};
use crate::control::{Command, RouteSpec};
use crate::link::{LinkCounters, LinkTable};
use crate::route::{Route, RouteTable};
use crate::shard::{Lease, Seat, SeatedPort, ShardRegistry};
use crate::types::{Encap, Endpoint, EndpointRef};

/// Largest UDP payload over IPv4 (65535 - 20 - 8): the most one datagram carries.
const MAX_DATAGRAM: usize = 65_507;

/// How to segment a large TCP frame.
#[derive(Debug, Clone, Copy)]
enum Segment {
    /// So each segment fits this MTU.
    ToMtu(usize),
    /// With at most this much payload per segment.
    Mss(usize),
}

/// Most destinations one frame is copied to (fan-out of broadcast routes).
const MAX_FANOUT: usize = 64;

/// Kick-driven dispatch keeps polling this long after the last frame before it
/// sleeps on the ports' fds: a request's answer usually comes back through the same
/// daemon within tens of microseconds, and catching it by polling saves a sleep and a
/// wake-up per hop. Short, so an idle daemon still sleeps almost all the time.
const BUSY_POLL_WINDOW: Duration = Duration::from_micros(BUSY_POLL_US);
/// [`BUSY_POLL_WINDOW`] in microseconds.
const BUSY_POLL_US: u64 = 50;

/// Most fds [`Engine::wait`] polls from a stack array (more go through a vector).
const POLL_INLINE: usize = 16;

/// Errors building an engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The underlay port carries something the engine cannot use yet.
    #[error(
        "underlay port {0:?} carries raw Ethernet frames; this engine needs a datagram underlay (kind = \"udp\")"
    )]
    UnsupportedUnderlay(String),
    /// Too many interfaces.
    #[error("too many interfaces (at most {0})")]
    TooManyInterfaces(usize),
}

/// A control request and where its answer goes.
#[derive(Debug)]
pub struct Request {
    /// The command.
    pub cmd: Command,
    /// Receives `Ok(text)` or `Err(message)`.
    pub reply: mpsc::Sender<Result<String, String>>,
}

macro_rules! counters {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $f:ident),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub struct $name { $($(#[$fm])* #[serde(default)] pub $f: u64,)* }
        impl $name {
            /// Adds `other`'s counts to these (statistics of several shards).
            pub fn add(&mut self, other: &Self) {
                $(self.$f += other.$f;)*
            }

            /// The counters as named drops.
            pub fn list(&self) -> Vec<DropCounter> {
                vec![$(DropCounter { name: stringify!($f), count: self.$f }),*]
            }
        }
    };
}

counters! {
    /// Frames the engine dropped, by reason.
    EngineDrops {
        /// A datagram from a sender that is no configured peer.
        rx_unknown_sender,
        /// A VXLAN datagram from a known peer with a VNI no link has.
        rx_unknown_vni,
        /// A datagram from a VXLAN peer that is not valid VXLAN.
        rx_bad_vxlan,
        /// A frame shorter than an Ethernet header.
        rx_runt,
        /// A datagram without a sender address.
        rx_no_address,
        /// No route matched.
        no_route,
        /// No buffer for a copy to a further destination.
        fanout_no_buffer,
        /// More destinations than the fan-out limit (64).
        fanout_too_wide,
        /// A destination's transmit queue was full.
        tx_queue_full,
        /// No headroom for an outer header.
        tx_no_headroom,
        /// A partial checksum could not be completed.
        tx_bad_checksum_request,
        /// A frame larger than its destination's MTU that could not be segmented
        /// (not TCP, or no buffer).
        tx_too_big,
        /// A guest sent a frame with a source MAC other than its own (anti-spoofing).
        rx_spoofed,
        /// An encrypted frame whose sequence number was seen before or is too old.
        rx_replay,
        /// An encrypted frame that failed authentication (wrong key or tampered).
        rx_auth_failed,
        /// A frame with an external tail (a guest's buffer) that had to be joined into
        /// one buffer (for a port without `EXT_TAIL`, segmentation or encryption) but
        /// did not fit it.
        tx_linearize_failed,
    }
}

/// Per-interface counters (frames that entered and left the overlay through it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceCounters {
    /// Frames received from the guest.
    pub rx_packets: u64,
    /// Bytes received from the guest.
    pub rx_bytes: u64,
    /// Frames queued to the guest.
    pub tx_packets: u64,
    /// Bytes queued to the guest.
    pub tx_bytes: u64,
}

impl InterfaceCounters {
    /// Adds `other`'s counts to these (statistics of several shards).
    pub fn add(&mut self, other: &Self) {
        self.rx_packets += other.rx_packets;
        self.rx_bytes += other.rx_bytes;
        self.tx_packets += other.tx_packets;
        self.tx_bytes += other.tx_bytes;
    }
}

struct Interface {
    name: String,
    kind: &'static str,
    mac: MacAddr,
    anti_spoof: bool,
    config: Option<InterfaceConfig>,
    /// The port's MTU and whether it takes TSO frames (cached: no call per frame).
    mtu: usize,
    tso: bool,
    /// The port sends frames with an external tail as they are (`EXT_TAIL`); others
    /// get every frame joined into one buffer first.
    ext_tail: bool,
    port: Box<dyn Port>,
    txq: Batch,
    counters: InterfaceCounters,
    /// With several shards: the interface's owner and inbound ring.
    shard: Option<Lease>,
    /// `port` is a [`StandInPort`](crate::shard::StandInPort): frames go to the owning
    /// shard untouched (it counts them, segments them and captures them).
    stand_in: bool,
}

impl Interface {
    /// The ring this shard drains into the interface, when it owns it among several.
    fn inbound(&self, me: Option<&Seat>) -> Option<&crate::shard::InboundRing> {
        match (&self.shard, me) {
            (Some(l), Some(seat)) if l.owner() == seat.index => Some(l.ring()),
            _ => None,
        }
    }
}

/// Statistics of the whole engine, as the control socket reports them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stats {
    /// The host's name.
    pub host: String,
    /// Engine drops by reason.
    pub drops: EngineDrops,
    /// Route cache hits and misses.
    pub route_cache: CacheStats,
    /// Packet pool occupancy.
    pub pool: PoolStats,
    /// The underlay port.
    pub underlay: PortReport,
    /// Each link.
    pub links: Vec<LinkReport>,
    /// Each interface.
    pub interfaces: Vec<InterfaceReport>,
    /// Number of routes.
    pub routes: usize,
    /// Number of dispatcher shards (1 without sharding).
    pub shards: usize,
    /// Each shard's share of the work, shard 0 first (merged statistics of several
    /// shards only; absent with one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_shard: Vec<ShardLoad>,
}

/// One shard's share of a sharded daemon's work, for balancing (`stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardLoad {
    /// The shard.
    pub shard: usize,
    /// Interfaces it owns.
    pub interfaces: usize,
    /// Datagrams its underlay socket received.
    pub underlay_rx_packets: u64,
    /// Datagrams its underlay socket sent.
    pub underlay_tx_packets: u64,
    /// Frames it took from the guests of the interfaces it owns.
    pub guest_rx_packets: u64,
    /// Frames it handed to other shards' interfaces through their rings.
    pub handed_off: u64,
}

/// Route cache statistics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheStats {
    /// Lookups answered by the cache.
    pub hits: u64,
    /// Lookups that walked the table.
    pub misses: u64,
}

/// Pool statistics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolStats {
    /// Buffers in the pool.
    pub capacity: usize,
    /// Buffers free now.
    pub available: usize,
    /// Allocations that found no buffer.
    pub alloc_failures: u64,
}

/// A port's counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PortReport {
    /// Port name.
    pub name: String,
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Named drops.
    pub drops: std::collections::BTreeMap<String, u64>,
    /// Named counters of work that is not a drop (offloads), when the port has any.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub events: std::collections::BTreeMap<String, u64>,
}

impl PortReport {
    fn new(port: &dyn Port) -> Self {
        let s = port.stats();
        Self {
            name: port.name().to_string(),
            rx_packets: s.rx_packets,
            rx_bytes: s.rx_bytes,
            tx_packets: s.tx_packets,
            tx_bytes: s.tx_bytes,
            drops: s
                .drops
                .iter()
                .map(|d| (d.name.to_string(), d.count))
                .collect(),
            events: port
                .events()
                .iter()
                .map(|d| (d.name.to_string(), d.count))
                .collect(),
        }
    }
}

/// A link's report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkReport {
    /// Link name.
    pub name: String,
    /// Peer address.
    pub peer: String,
    /// Encapsulation.
    pub encap: String,
    /// Frames are encrypted and authenticated.
    pub encrypted: bool,
    /// Counters.
    #[serde(flatten)]
    pub counters: LinkCounters,
}

/// An interface's report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InterfaceReport {
    /// Interface name.
    pub name: String,
    /// Kind (`tap`, `vhost-user`, ...).
    pub kind: String,
    /// MAC.
    pub mac: String,
    /// The shard that owns the interface (0 without sharding).
    pub shard: usize,
    /// Overlay-side counters.
    #[serde(flatten)]
    pub counters: InterfaceCounters,
    /// The port's own counters.
    pub port: PortReport,
}

/// The forwarding engine of one host.
pub struct Engine {
    host: String,
    pool: Mempool,
    underlay: Box<dyn Port>,
    underlay_txq: Batch,
    /// The underlay sends frames with an external tail as they are (`EXT_TAIL`).
    underlay_ext_tail: bool,
    interfaces: Vec<Option<Interface>>,
    links: LinkTable,
    routes: RouteTable,
    drops: EngineDrops,
    rx: Batch,
    /// Scratch for software segmentation; keeps its capacity between frames.
    segs: Vec<PktBuf>,
    /// Scratch for the destinations of a fanned-out frame (at most [`MAX_FANOUT`]).
    fanout: Vec<Endpoint>,
    dispatch: Dispatch,
    capture: Option<Capture>,
    reload: Option<ReloadSource>,
    factory: Option<Box<dyn InterfaceFactory>>,
    /// This engine's shard among several (`None`: the only one).
    seat: Option<Seat>,
}

/// Creates the port behind an interface when `reload` adds one (the tools layer knows
/// the device crates; the engine does not).
pub trait InterfaceFactory: Send {
    /// A port for this interface, or why not.
    fn create(&mut self, cfg: &InterfaceConfig) -> Result<Box<dyn Port>, String>;
}

/// What `reload` needs: the file, what was applied from it, and a port factory.
struct ReloadSource {
    path: std::path::PathBuf,
    applied: Config,
}

/// Most interfaces per engine.
pub const MAX_INTERFACES: usize = 1024;

impl Engine {
    /// An engine with this underlay and no links, interfaces or routes.
    pub fn new(
        host: &str,
        pool: Mempool,
        underlay: Box<dyn Port>,
        dispatch: Dispatch,
    ) -> Result<Self, EngineError> {
        if underlay.caps().kind != PortKind::Datagram {
            return Err(EngineError::UnsupportedUnderlay(
                underlay.name().to_string(),
            ));
        }
        Ok(Self {
            host: host.to_string(),
            pool,
            underlay_ext_tail: underlay.caps().offloads.contains(pkt::Offloads::EXT_TAIL),
            underlay,
            underlay_txq: Batch::new(),
            interfaces: Vec::new(),
            links: LinkTable::new(),
            routes: RouteTable::new(),
            drops: EngineDrops::default(),
            rx: Batch::new(),
            segs: Vec::new(),
            fanout: Vec::with_capacity(MAX_FANOUT),
            dispatch,
            capture: None,
            reload: None,
            factory: None,
            seat: None,
        })
    }

    /// Adds a guest-facing interface backed by `port`; returns its endpoint.
    pub fn add_interface(
        &mut self,
        name: &str,
        kind: &'static str,
        mac: MacAddr,
        port: Box<dyn Port>,
    ) -> Result<Endpoint, EngineError> {
        let slot = match self.interfaces.iter().position(Option::is_none) {
            Some(s) => s,
            None if self.interfaces.len() < MAX_INTERFACES => {
                self.interfaces.push(None);
                self.interfaces.len() - 1
            }
            None => return Err(EngineError::TooManyInterfaces(MAX_INTERFACES)),
        };
        self.interfaces[slot] = Some(Interface {
            name: name.to_string(),
            kind,
            mac,
            anti_spoof: true,
            config: None,
            mtu: port.caps().mtu,
            tso: port
                .caps()
                .offloads
                .contains(pkt::Offloads::TSO4 | pkt::Offloads::TSO6),
            ext_tail: port.caps().offloads.contains(pkt::Offloads::EXT_TAIL),
            port,
            txq: Batch::new(),
            counters: InterfaceCounters::default(),
            shard: None,
            stand_in: false,
        });
        self.routes.flush_cache();
        Ok(Endpoint::Interface(slot as u16))
    }

    /// Adds the interface a configuration entry describes, backed by `port`.
    pub fn add_configured_interface(
        &mut self,
        cfg: &InterfaceConfig,
        port: Box<dyn Port>,
    ) -> Result<Endpoint, EngineError> {
        let ep = self.add_interface(&cfg.name, cfg.kind.kind_name(), cfg.mac, port)?;
        if let Endpoint::Interface(i) = ep
            && let Some(f) = self.interfaces[i as usize].as_mut()
        {
            f.anti_spoof = cfg.anti_spoof;
            f.config = Some(cfg.clone());
        }
        Ok(ep)
    }

    /// Lets `reload` re-read `path`; `applied` is what the engine was built from.
    pub fn enable_reload(
        &mut self,
        path: std::path::PathBuf,
        applied: Config,
        factory: Box<dyn InterfaceFactory>,
    ) {
        self.reload = Some(ReloadSource { path, applied });
        self.factory = Some(factory);
    }

    /// Lets `interface add` create ports through `factory` (without `reload`).
    pub fn set_interface_factory(&mut self, factory: Box<dyn InterfaceFactory>) {
        self.factory = Some(factory);
    }

    /// Makes this engine shard `index` of those `registry` serves: interfaces it
    /// creates from then on are its own or stand-ins for another shard's, as the
    /// registry decides. Call before adding interfaces.
    pub fn take_seat(&mut self, index: usize, registry: std::sync::Arc<ShardRegistry>) {
        self.seat = Some(Seat { index, registry });
    }

    /// Number of shards this engine is one of.
    pub fn shard_count(&self) -> usize {
        self.seat.as_ref().map_or(1, |s| s.registry.shards())
    }

    /// Adds interface `cfg` with the port [`crate::shard::seat_port`] made for it.
    fn add_seated_interface(
        &mut self,
        cfg: &InterfaceConfig,
        seated: SeatedPort,
    ) -> Result<Endpoint, EngineError> {
        let ep = self.add_configured_interface(cfg, seated.port)?;
        if let Endpoint::Interface(i) = ep
            && let Some(f) = self.interfaces[i as usize].as_mut()
        {
            f.shard = seated.lease;
            f.stand_in = seated.stand_in;
        }
        Ok(ep)
    }

    /// Creates an interface at run time (`interface add`), through the device factory.
    pub fn create_interface(&mut self, cfg: &InterfaceConfig) -> Result<String, String> {
        if self.interface_list().any(|(_, n, ..)| n == cfg.name)
            || self.links.find(&cfg.name).is_some()
        {
            return Err(format!("name {:?} is already in use", cfg.name));
        }
        if self.interface_list().any(|(.., mac)| mac == cfg.mac) {
            return Err(format!(
                "MAC {} is already used by another interface",
                cfg.mac
            ));
        }
        let Some(factory) = self.factory.as_mut() else {
            return Err(
                "this daemon cannot create interfaces at run time (no device factory)".into(),
            );
        };
        let seated = crate::shard::seat_port(self.seat.as_ref(), factory.as_mut(), cfg)?;
        self.add_seated_interface(cfg, seated)
            .map_err(|e| e.to_string())?;
        Ok(String::new())
    }

    /// Removes an interface no route uses (`interface del`); its device goes with it.
    pub fn remove_interface(&mut self, name: &str) -> Result<String, String> {
        let slot = self
            .interface_list()
            .find(|(_, n, ..)| *n == name)
            .map(|(i, ..)| i)
            .ok_or_else(|| format!("no interface named {name:?}"))?;
        let users = self.routes.references(Endpoint::Interface(slot));
        if users > 0 {
            return Err(format!(
                "interface {name:?} is used by {users} route(s): delete them first"
            ));
        }
        self.interfaces[slot as usize] = None;
        self.routes.flush_cache();
        Ok(String::new())
    }

    /// Answers a control request: most at once; a capture when it completes.
    pub fn handle(&mut self, req: Request) {
        match req.cmd {
            Command::Capture {
                endpoint,
                path,
                count,
                timeout_secs,
            } => {
                if self.capture.is_some() {
                    let _ = req.reply.send(Err("a capture is already running".into()));
                    return;
                }
                let shards = self.shard_count();
                if shards > 1 && matches!(endpoint, EndpointRef::Link(_)) {
                    let _ = req.reply.send(Err(format!(
                        "capture of a link or the underlay needs shards = 1 (frames spread over {shards} shards)"
                    )));
                    return;
                }
                match self.resolve(&endpoint) {
                    Ok(ep) => {
                        let timeout = Duration::from_secs(u64::from(timeout_secs));
                        self.capture = Some(Capture::new(ep, path, count, timeout, req.reply));
                    }
                    Err(e) => {
                        let _ = req.reply.send(Err(e));
                    }
                }
            }
            cmd => {
                let _ = req.reply.send(self.apply(cmd));
            }
        }
    }

    fn finish_capture_if_done(&mut self) {
        if self
            .capture
            .as_ref()
            .is_some_and(|c| c.done(Instant::now()))
            && let Some(c) = self.capture.take()
        {
            c.finish();
        }
    }

    /// The link table.
    pub fn links(&self) -> &LinkTable {
        &self.links
    }

    /// The routing table.
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// Applies a control command; the answer is text for the user.
    pub fn apply(&mut self, cmd: Command) -> Result<String, String> {
        crate::ctl::apply(self, cmd)
    }

    // ---- accessors for the control layer ----

    pub(crate) fn links_mut(&mut self) -> &mut LinkTable {
        &mut self.links
    }

    pub(crate) fn routes_mut(&mut self) -> &mut RouteTable {
        &mut self.routes
    }

    /// Each interface's owning shard, by slot, when there are several shards.
    pub(crate) fn interface_owners(&self) -> impl Iterator<Item = (u16, Option<usize>)> {
        self.interfaces.iter().enumerate().filter_map(|(i, s)| {
            s.as_ref()
                .map(|f| (i as u16, f.shard.as_ref().map(Lease::owner)))
        })
    }

    pub(crate) fn interface_list(
        &self,
    ) -> impl Iterator<Item = (u16, &str, &'static str, MacAddr)> {
        self.interfaces.iter().enumerate().filter_map(|(i, s)| {
            s.as_ref()
                .map(|f| (i as u16, f.name.as_str(), f.kind, f.mac))
        })
    }

    /// Resolves a user's endpoint name.
    pub fn resolve(&self, e: &EndpointRef) -> Result<Endpoint, String> {
        match e {
            EndpointRef::Link(n) => self
                .links
                .find(n)
                .map(Endpoint::Link)
                .ok_or_else(|| format!("no link named {n:?}")),
            EndpointRef::Interface(n) => self
                .interface_list()
                .find(|(_, name, _, _)| name == n)
                .map(|(i, ..)| Endpoint::Interface(i))
                .ok_or_else(|| format!("no interface named {n:?}")),
        }
    }

    /// The user's name of an endpoint.
    pub fn endpoint_ref(&self, e: Endpoint) -> EndpointRef {
        match e {
            Endpoint::Link(l) => EndpointRef::Link(
                self.links
                    .get(l)
                    .map_or_else(|| format!("#{l}"), |l| l.name.clone()),
            ),
            Endpoint::Interface(i) => EndpointRef::Interface(
                self.interfaces
                    .get(i as usize)
                    .and_then(Option::as_ref)
                    .map_or_else(|| format!("#{i}"), |f| f.name.clone()),
            ),
        }
    }

    /// Turns a user's route into a table route.
    pub fn route_from_spec(&self, spec: &RouteSpec) -> Result<Route, String> {
        Ok(Route {
            src: spec.src,
            dst: spec.dst,
            to: self.resolve(&spec.to)?,
            from: spec.from.as_ref().map(|f| self.resolve(f)).transpose()?,
        })
    }

    /// The user's form of a table route.
    pub fn spec_from_route(&self, r: &Route) -> RouteSpec {
        RouteSpec {
            src: r.src,
            dst: r.dst,
            to: self.endpoint_ref(r.to),
            from: r.from.map(|f| self.endpoint_ref(f)),
        }
    }

    /// Adds a route given by names.
    pub fn add_route(&mut self, spec: &RouteSpec) -> Result<(), String> {
        let r = self.route_from_spec(spec)?;
        self.routes.add(r).map_err(|e| e.to_string())
    }

    /// Adds a link.
    pub fn add_link(
        &mut self,
        name: &str,
        peer: SocketAddr,
        encap: Encap,
    ) -> Result<Endpoint, String> {
        self.add_keyed_link(name, peer, encap, None)
    }

    /// Adds a link whose frames are encrypted and authenticated with `key` (vnetp only).
    pub fn add_keyed_link(
        &mut self,
        name: &str,
        peer: SocketAddr,
        encap: Encap,
        key: Option<crate::crypto::LinkKey>,
    ) -> Result<Endpoint, String> {
        if self.interface_list().any(|(_, n, ..)| n == name) {
            return Err(format!("name {name:?} is already used by an interface"));
        }
        if key.is_some() && encap != Encap::Vnetp {
            return Err("a link key needs encap vnetp".into());
        }
        let slot = self
            .links
            .add(name, peer, encap)
            .map_err(|e| e.to_string())?;
        if let (Some(k), Some(l)) = (key, self.links.get_mut(slot)) {
            l.crypto = Some(crate::crypto::LinkCrypto::new(&k.0));
            l.key = Some(k);
        }
        self.routes.flush_cache();
        Ok(Endpoint::Link(slot))
    }

    /// Sets the largest IP packet a link carries whole (see `LinkConfig::mtu`).
    pub fn set_link_mtu(&mut self, ep: Endpoint, mtu: usize) -> Result<Endpoint, String> {
        if let Endpoint::Link(l) = ep
            && let Some(link) = self.links.get_mut(l)
        {
            link.mtu = mtu;
        }
        Ok(ep)
    }

    /// Statistics of everything.
    pub fn stats(&self) -> Stats {
        let (hits, misses) = self.routes.cache_stats();
        Stats {
            host: self.host.clone(),
            drops: self.drops,
            route_cache: CacheStats { hits, misses },
            pool: PoolStats {
                capacity: self.pool.capacity(),
                available: self.pool.available(),
                alloc_failures: self.pool.alloc_failures(),
            },
            underlay: PortReport::new(self.underlay.as_ref()),
            links: self
                .links
                .iter()
                .map(|(_, l)| LinkReport {
                    name: l.name.clone(),
                    peer: l.peer.to_string(),
                    encap: l.encap.to_string(),
                    encrypted: l.crypto.is_some(),
                    counters: l.counters,
                })
                .collect(),
            interfaces: self
                .interfaces
                .iter()
                .flatten()
                .map(|f| InterfaceReport {
                    name: f.name.clone(),
                    kind: f.kind.to_string(),
                    mac: f.mac.to_string(),
                    shard: f.shard.as_ref().map_or(0, Lease::owner),
                    counters: f.counters,
                    port: PortReport::new(f.port.as_ref()),
                })
                .collect(),
            routes: self.routes.len(),
            shards: self.shard_count(),
            per_shard: Vec::new(),
        }
    }

    /// One round: a batch from every port, routed and sent. Returns frames received.
    pub fn poll_once(&mut self) -> usize {
        let mut moved = 0;
        for i in 0..self.interfaces.len() {
            let n = match self.interfaces[i].as_mut() {
                Some(f) => f.port.rx_batch(&mut self.rx),
                None => continue,
            };
            if n > 0 {
                moved += n;
                self.rx_from_interface(i as u16);
            }
        }
        let n = self.underlay.rx_batch(&mut self.rx);
        if n > 0 {
            moved += n;
            self.rx_from_underlay();
        }
        if self.seat.is_some() {
            moved += self.drain_inbound();
        }
        self.flush();
        moved
    }

    /// Takes up to a batch from the inbound ring of every interface this shard owns
    /// (frames other shards received for it) into the interface's transmit path.
    fn drain_inbound(&mut self) -> usize {
        let mut moved = 0;
        for i in 0..self.interfaces.len() {
            let Some(ring) = self.interfaces[i]
                .as_ref()
                .and_then(|f| f.inbound(self.seat.as_ref()))
            else {
                continue;
            };
            while !self.rx.is_full() {
                let Some(buf) = ring.pop() else { break };
                let _ = self.rx.push(buf);
            }
            if self.rx.is_empty() {
                continue;
            }
            moved += self.rx.len();
            let mut rx = std::mem::replace(&mut self.rx, Batch::unallocated());
            for buf in rx.drain() {
                self.deliver(Endpoint::Interface(i as u16), buf);
            }
            self.rx = rx;
        }
        moved
    }

    fn rx_from_interface(&mut self, slot: u16) {
        let arrival = Endpoint::Interface(slot);
        let mut rx = std::mem::replace(&mut self.rx, Batch::unallocated());
        for buf in rx.drain() {
            if buf.len() < 14 {
                self.drops.rx_runt += 1;
                continue;
            }
            if let Some(f) = self.interfaces[slot as usize].as_mut() {
                if f.anti_spoof && buf.data()[6..12] != f.mac.0 {
                    self.drops.rx_spoofed += 1;
                    continue;
                }
                f.counters.rx_packets += 1;
                f.counters.rx_bytes += buf.frame_len() as u64;
            }
            if let Some(c) = self.capture.as_mut() {
                c.offer(arrival, &buf);
            }
            self.route_frame(arrival, buf);
        }
        self.rx = rx;
    }

    fn rx_from_underlay(&mut self) {
        let mut rx = std::mem::replace(&mut self.rx, Batch::unallocated());
        // A batch mostly comes from one peer: remember the last sender a link matched
        // by address alone (vnetp links; VXLAN needs each datagram's VNI), so the link
        // table's hash lookup runs once per run of datagrams, not once per datagram.
        // Links cannot change within a batch.
        let mut last: Option<(SocketAddr, u16)> = None;
        for mut buf in rx.drain() {
            let Some(src) = buf.meta.addr else {
                self.drops.rx_no_address += 1;
                continue;
            };
            let classified = match last {
                Some((addr, slot)) if addr == src => Ok((slot, false)),
                _ => self.links.classify(src, buf.data()),
            };
            let (slot, vxlan) = match classified {
                Ok(m) => {
                    if !m.1 {
                        last = Some((src, m.0));
                    }
                    m
                }
                Err(why) => {
                    match why {
                        crate::link::Unmatched::UnknownSender => self.drops.rx_unknown_sender += 1,
                        crate::link::Unmatched::UnknownVni => self.drops.rx_unknown_vni += 1,
                        crate::link::Unmatched::BadVxlan => self.drops.rx_bad_vxlan += 1,
                    }
                    continue;
                }
            };
            // `classify` checked the VXLAN header: only strip it here.
            if vxlan && buf.strip_front(pkt::wire::vxlan::HEADER_LEN).is_err() {
                self.drops.rx_bad_vxlan += 1;
                continue;
            }
            if let Some(c) = self.links.get_mut(slot).and_then(|l| l.crypto.as_mut())
                && let Err(e) = c.open(&mut buf)
            {
                match e {
                    crate::crypto::CryptoError::Replay => self.drops.rx_replay += 1,
                    crate::crypto::CryptoError::Auth => self.drops.rx_auth_failed += 1,
                    _ => self.drops.rx_runt += 1,
                }
                continue;
            }
            if buf.len() < 14 {
                self.drops.rx_runt += 1;
                continue;
            }
            buf.meta = pkt::Meta::default();
            if let Some(l) = self.links.get_mut(slot) {
                l.counters.rx_packets += 1;
                l.counters.rx_bytes += buf.frame_len() as u64;
            }
            if let Some(c) = self.capture.as_mut() {
                c.offer(Endpoint::Link(slot), &buf);
            }
            self.route_frame(Endpoint::Link(slot), buf);
        }
        self.rx = rx;
    }

    #[inline]
    fn route_frame(&mut self, arrival: Endpoint, buf: PktBuf) {
        // The lookup borrows the table, delivery needs the engine: copy out only what
        // delivery needs. Unicast (the common case) is one endpoint in a register;
        // fan-out goes through a scratch vector that keeps its capacity.
        let found = self.routes.lookup(arrival, buf.data());
        match found {
            [] => self.drops.no_route += 1,
            [one] => {
                let one = *one;
                self.deliver(one, buf);
            }
            _ => {
                if found.len() > MAX_FANOUT {
                    self.drops.fanout_too_wide += 1;
                }
                let mut dests = std::mem::take(&mut self.fanout);
                dests.clear();
                dests.extend_from_slice(&found[..found.len().min(MAX_FANOUT)]);
                if let Some((&last, rest)) = dests.split_last() {
                    for &d in rest {
                        match buf.try_clone() {
                            Some(copy) => self.deliver(d, copy),
                            None => self.drops.fanout_no_buffer += 1,
                        }
                    }
                    self.deliver(last, buf);
                }
                self.fanout = dests;
            }
        }
    }

    #[inline]
    fn deliver(&mut self, dest: Endpoint, mut buf: PktBuf) {
        if let Some(c) = self.capture.as_mut() {
            c.offer(dest, &buf);
        }
        match dest {
            Endpoint::Interface(i) => {
                let Some(f) = self.interfaces.get_mut(i as usize).and_then(Option::as_mut) else {
                    self.drops.no_route += 1;
                    return;
                };
                if f.stand_in {
                    // The owning shard counts, segments and sends it.
                    if f.txq.is_full() {
                        f.port.tx_batch(&mut f.txq);
                    }
                    if f.txq.push(buf).is_err() {
                        self.drops.tx_queue_full += 1;
                    }
                    return;
                }
                // Ethernet header plus one VLAN tag beyond the MTU.
                let big = buf.frame_len() > f.mtu + 18;
                let gso = buf.meta.offload.gso_type != 0;
                // TSO preparation and software segmentation read and rewrite the whole
                // frame: only a port that sends tails as they are, and only a frame that
                // needs neither, keeps its tail.
                if !buf.is_linear() && (!f.ext_tail || big || gso) && buf.linearize().is_err() {
                    self.drops.tx_linearize_failed += 1;
                    return;
                }
                if big && !gso {
                    // A large frame (from a link carrying whole TSO frames): hand it to
                    // a TSO-capable port as one, or cut it to the MTU in software.
                    let mtu = f.mtu;
                    if f.tso {
                        match offload::gso::tso_request(buf.data_mut(), mtu) {
                            Ok(m) => buf.meta.offload = m,
                            Err(_) => {
                                return self.segment_and_deliver(dest, buf, Segment::ToMtu(mtu));
                            }
                        }
                    } else {
                        return self.segment_and_deliver(dest, buf, Segment::ToMtu(mtu));
                    }
                } else if gso && !f.tso {
                    let mss = usize::from(buf.meta.offload.gso_size);
                    return self.segment_and_deliver(dest, buf, Segment::Mss(mss));
                }
                let Some(f) = self.interfaces.get_mut(i as usize).and_then(Option::as_mut) else {
                    return;
                };
                if f.txq.is_full() {
                    f.port.tx_batch(&mut f.txq);
                }
                let len = buf.frame_len() as u64;
                match f.txq.push(buf) {
                    Ok(()) => {
                        f.counters.tx_packets += 1;
                        f.counters.tx_bytes += len;
                    }
                    Err(_) => self.drops.tx_queue_full += 1,
                }
            }
            Endpoint::Link(l) => {
                let Some(link) = self.links.get_mut(l) else {
                    self.drops.no_route += 1;
                    return;
                };
                let o = buf.meta.offload;
                if o.gso_type != 0 {
                    // A TSO frame: carry it whole if the link takes it, else cut it into
                    // the largest multiple of the sender's segment size that fits.
                    let overhead = 14
                        + link.crypto.as_ref().map_or(0, |_| 28)
                        + if matches!(link.encap, Encap::Vxlan { .. }) {
                            8
                        } else {
                            0
                        };
                    let limit = link.mtu.min(MAX_DATAGRAM - overhead);
                    let l3_len = buf.frame_len() - 14;
                    if l3_len > limit {
                        if buf.linearize().is_err() {
                            self.drops.tx_linearize_failed += 1;
                            return;
                        }
                        let gso = usize::from(o.gso_size).max(1);
                        let hdrs = offload::gso::l3l4_header_len(buf.data()).unwrap_or(limit);
                        let mss = (limit.saturating_sub(hdrs) / gso * gso).max(gso);
                        return self.segment_and_deliver(dest, buf, Segment::Mss(mss));
                    }
                }
                let Some(link) = self.links.get_mut(l) else {
                    return;
                };
                // Encryption rewrites the whole frame in place; a port without
                // `EXT_TAIL` only ever sees whole frames.
                if !buf.is_linear()
                    && (link.crypto.is_some() || !self.underlay_ext_tail)
                    && buf.linearize().is_err()
                {
                    self.drops.tx_linearize_failed += 1;
                    return;
                }
                if o.flags & offload::vnet_hdr::NEEDS_CSUM != 0 {
                    // The wire carries no offload metadata: finish the checksum here,
                    // over the tail where it stays (the field is among the headers).
                    let (start, off) = (o.csum_start as usize, o.csum_offset as usize);
                    if !complete_csum(&mut buf, start, off) {
                        self.drops.tx_bad_checksum_request += 1;
                        return;
                    }
                }
                let len = buf.frame_len() as u64;
                if let Encap::Vxlan { vni } = link.encap
                    && crate::encap::vxlan_push(&mut buf, vni).is_err()
                {
                    self.drops.tx_no_headroom += 1;
                    return;
                }
                if let Some(c) = link.crypto.as_mut()
                    && c.seal(&mut buf).is_err()
                {
                    self.drops.tx_no_headroom += 1;
                    return;
                }
                buf.meta = pkt::Meta {
                    addr: Some(link.peer),
                    ..Default::default()
                };
                if self.underlay_txq.is_full() {
                    self.underlay.tx_batch(&mut self.underlay_txq);
                }
                match self.underlay_txq.push(buf) {
                    Ok(()) => {
                        link.counters.tx_packets += 1;
                        link.counters.tx_bytes += len;
                    }
                    Err(_) => self.drops.tx_queue_full += 1,
                }
            }
        }
    }

    /// Cuts a TCP frame into segments in software and delivers each. `buf` is linear
    /// (the callers join a tail first).
    fn segment_and_deliver(&mut self, dest: Endpoint, buf: PktBuf, how: Segment) {
        let mut segs = std::mem::take(&mut self.segs);
        let result = match how {
            Segment::ToMtu(mtu) => {
                offload::gso::segment_tcp_to_mtu(buf.data(), mtu, &self.pool, |s| segs.push(s))
            }
            Segment::Mss(mss) => {
                offload::gso::segment_tcp(buf.data(), mss, &self.pool, |s| segs.push(s))
            }
        };
        drop(buf);
        if result.is_err() {
            self.drops.tx_too_big += 1;
        }
        for s in segs.drain(..) {
            self.deliver(dest, s);
        }
        self.segs = segs;
    }

    /// Sends every queued frame it can; what a port did not take stays queued.
    fn flush(&mut self) {
        for f in self.interfaces.iter_mut().flatten() {
            if !f.txq.is_empty() {
                f.port.tx_batch(&mut f.txq);
            }
        }
        if !self.underlay_txq.is_empty() {
            self.underlay.tx_batch(&mut self.underlay_txq);
        }
    }

    fn pending_tx(&self) -> bool {
        !self.underlay_txq.is_empty() || self.interfaces.iter().flatten().any(|f| !f.txq.is_empty())
    }

    /// Blocks until a port or `waker` is readable (or a queued port writable), at most
    /// `timeout`. Returns which polled fds were readable, bit `i` for the `i`-th in
    /// [`Engine::poll_ports`] order (bit 63 for the 63rd and every later one), for
    /// [`Engine::clear_ready`].
    ///
    /// Kick-driven dispatch calls this once per wake-up, which in a ping-pong is once
    /// per frame: up to [`POLL_INLINE`] fds go in an array on the stack, so the common
    /// case allocates nothing.
    fn wait(&self, waker: Option<&std::os::fd::OwnedFd>, timeout: Duration) -> u64 {
        use rustix::event::{PollFd, PollFlags};
        let flags = |pending_tx: bool| {
            if pending_tx {
                PollFlags::IN | PollFlags::OUT
            } else {
                PollFlags::IN
            }
        };
        let fds = self
            .poll_ports()
            .map(|(fd, pending_tx)| (fd, flags(pending_tx)))
            .chain(waker.map(|w| (w.as_fd(), PollFlags::IN)));
        // A port holding frames until a time (fault delay) bounds the sleep.
        let deadline = std::iter::once(self.underlay.next_deadline())
            .chain(
                self.interfaces
                    .iter()
                    .flatten()
                    .map(|f| f.port.next_deadline()),
            )
            .flatten()
            .min();
        let timeout = deadline.map_or(timeout, |d| {
            timeout.min(d.saturating_duration_since(Instant::now()))
        });
        let ts = rustix::event::Timespec::try_from(timeout).unwrap_or(rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        });
        let Some((pad, _)) = fds.clone().next() else {
            // No fd to wait on: just sleep.
            let _ = rustix::event::poll(&mut [], Some(&ts));
            return 0;
        };
        let readable = |polled: &[PollFd<'_>]| {
            polled
                .iter()
                .enumerate()
                .filter(|(_, p)| !p.revents().is_empty())
                .fold(0u64, |bits, (i, _)| bits | 1 << i.min(63))
        };
        // Unused slots watch the first fd for nothing (no events requested).
        let mut inline: [PollFd<'_>; POLL_INLINE] =
            std::array::from_fn(|_| PollFd::from_borrowed_fd(pad, PollFlags::empty()));
        let mut n = 0;
        for (fd, f) in fds.clone() {
            if n == POLL_INLINE {
                // More ports than fit: the rare daemon with many interfaces.
                let mut all: Vec<PollFd<'_>> =
                    fds.map(|(fd, f)| PollFd::from_borrowed_fd(fd, f)).collect();
                let _ = rustix::event::poll(&mut all, Some(&ts));
                return readable(&all);
            }
            inline[n] = PollFd::from_borrowed_fd(fd, f);
            n += 1;
        }
        let _ = rustix::event::poll(&mut inline[..n], Some(&ts));
        readable(&inline[..n])
    }

    /// The ports' poll fds in the order [`Engine::wait`] polls them (underlay first), each
    /// with whether frames wait to go out through it.
    fn poll_ports(&self) -> impl Iterator<Item = (BorrowedFd<'_>, bool)> + Clone {
        std::iter::once(
            self.underlay
                .poll_fd()
                .map(|fd| (fd, !self.underlay_txq.is_empty())),
        )
        .chain(
            self.interfaces
                .iter()
                .flatten()
                .map(|f| f.port.poll_fd().map(|fd| (fd, !f.txq.is_empty()))),
        )
        .chain(
            self.interfaces
                .iter()
                .flatten()
                .map(|f| f.inbound(self.seat.as_ref()).map(|r| (r.wake_fd(), false))),
        )
        .flatten()
    }

    /// Lets every port whose poll fd [`Engine::wait`] found readable (`ready`) clear it
    /// ([`Port::clear_poll_fd`]), in the same order as [`Engine::poll_ports`].
    fn clear_ready(&mut self, ready: u64) {
        let mut i = 0usize;
        let mut hit = |port: &mut dyn Port| {
            if port.poll_fd().is_none() {
                return;
            }
            if ready & (1 << i.min(63)) != 0 {
                port.clear_poll_fd();
            }
            i += 1;
        };
        hit(&mut *self.underlay);
        for f in self.interfaces.iter_mut().flatten() {
            hit(&mut *f.port);
        }
        for f in self.interfaces.iter().flatten() {
            if let Some(r) = f.inbound(self.seat.as_ref()) {
                if ready & (1 << i.min(63)) != 0 {
                    r.clear_wake();
                }
                i += 1;
            }
        }
    }

    /// Runs until `stop` is set: rounds of [`Engine::poll_once`], control requests
    /// between rounds, and waiting when idle per the dispatch mode. On stop, queued
    /// frames are flushed (bounded) before returning.
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        control: Option<(&mpsc::Receiver<Request>, &std::os::fd::OwnedFd)>,
    ) {
        let mut mode = Mode::Kick;
        let mut window_start = Instant::now();
        let mut window_frames = 0u64;
        let mut idle_rounds = 0u32;
        let mut last_active = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let n = self.poll_once();
            window_frames += n as u64;
            if let Some((rx, waker)) = control {
                drain_waker(waker);
                while let Ok(req) = rx.try_recv() {
                    self.handle(req);
                }
            }
            self.finish_capture_if_done();
            // VNET/P's adaptive dispatch: rate over a 10 ms window, 10k/1k pps hysteresis.
            let elapsed = window_start.elapsed();
            if elapsed >= Duration::from_millis(10) {
                let pps = window_frames as f64 / elapsed.as_secs_f64();
                mode = match (self.dispatch, mode) {
                    (Dispatch::Polling, _) => Mode::Poll,
                    (Dispatch::Guest, _) => Mode::Kick,
                    (Dispatch::Adaptive, Mode::Kick) if pps > 10_000.0 => Mode::Poll,
                    (Dispatch::Adaptive, Mode::Poll) if pps < 1_000.0 => Mode::Kick,
                    (_, m) => m,
                };
                window_start = Instant::now();
                window_frames = 0;
            }
            if n > 0 {
                idle_rounds = 0;
                last_active = Instant::now();
                continue;
            }
            idle_rounds = idle_rounds.saturating_add(1);
            if mode == Mode::Kick && last_active.elapsed() < BUSY_POLL_WINDOW {
                // Just after traffic the answer is often a few microseconds away (a
                // guest replying through the same daemon): keep polling briefly,
                // yielding the core, rather than pay a sleep and a wake-up for it.
                std::thread::yield_now();
                continue;
            }
            match mode {
                Mode::Poll if idle_rounds < 1000 => std::thread::yield_now(),
                // VNET/P sleeps 1 ms after 1,000 idle rounds; waiting on the ports
                // instead frees the core just as well but wakes on the next frame.
                Mode::Poll => {
                    let ready = self.wait(control.map(|(_, w)| w), Duration::from_millis(1));
                    self.clear_ready(ready);
                }
                Mode::Kick => {
                    let timeout = if self.pending_tx() {
                        Duration::from_millis(1)
                    } else {
                        Duration::from_millis(200)
                    };
                    let ready = self.wait(control.map(|(_, w)| w), timeout);
                    self.clear_ready(ready);
                }
            }
        }
        // Drain: give queued frames a bounded chance to leave.
        for _ in 0..100 {
            self.poll_once();
            if !self.pending_tx() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Kick,
    Poll,
}

/// Completes a partial checksum over the whole frame, tail included; false when the
/// request does not fit the frame.
fn complete_csum(buf: &mut PktBuf, start: usize, off: usize) -> bool {
    // The tail is borrowed from the buffer: detach nothing, split the borrow instead.
    let tail_len = buf.frame_len() - buf.len();
    if tail_len == 0 {
        return offload::checksum::complete_partial(buf.data_mut(), start, off).is_ok();
    }
    let (head, tail) = buf.parts_mut();
    offload::checksum::complete_partial_split(head, tail, start, off).is_ok()
}

fn drain_waker(w: &std::os::fd::OwnedFd) {
    let mut buf = [0u8; 64];
    while matches!(rustix::io::read(w.as_fd(), &mut buf), Ok(n) if n > 0) {}
}

mod reload;
#[cfg(test)]
mod tests;
