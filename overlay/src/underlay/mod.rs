//! The raw-L2 underlay stack: ARP, IPv6 neighbour discovery, IPv4/IPv6, UDP and ICMP
//! echo on top of a port that moves whole Ethernet frames (AF_PACKET, AF_XDP, a NIC
//! queue).
//!
//! [`L2Underlay`] wraps such a port and is itself a [`PortKind::Datagram`] port with
//! the semantics of a kernel UDP socket: a frame's bytes are the UDP payload and
//! [`pkt::Meta::addr`] is the peer (on transmit) or the sender (on receive). So the
//! engine cannot tell it from a UDP socket. Underneath, it resolves next hops (the
//! peer on-link, the static gateway otherwise) with ARP or neighbour solicitation,
//! queues a bounded number of frames per unresolved neighbour, answers ARP, neighbour
//! solicitation and ping for its own address, fragments outer packets that exceed the
//! underlay MTU and reassembles peers' fragments in bounded memory.
//!
//! Time-based work (resolution retries, entry expiry, reassembly timeouts) runs from
//! `rx_batch`/`tx_batch`, with one clock read per call; the engine polls its underlay
//! at least every 200 ms, which is the timers' resolution. Every frame that is not for
//! us, malformed or undeliverable is counted under a name in [`Port::stats`].

mod arp;
mod frag;
mod memport;
mod nd;
mod neigh;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use pkt::wire::{
    ArpOp, ArpRepr, EthernetRepr, Ipv4Repr, Ipv6Repr, MacAddr, UdpRepr, checksum, ethertype,
    ip_proto, ipv4, ipv6, udp,
};
use pkt::{
    BATCH_MAX, Batch, DropCounter, HEADROOM, Mempool, Offloads, PktBuf, Port, PortCaps, PortKind,
    PortStats,
};

use crate::encap::{self, EncapError, OuterHeaders, OuterInfo};

pub use frag::{MAX_DATAGRAMS, MAX_FRAGMENTS, REASSEMBLY_TIMEOUT};
pub use memport::{MemPort, MemWire};
pub use neigh::NeighborTimers;

use frag::{FragIp, FragKey, Fragment, Reassembler};
use neigh::{NeighborTable, Probe, Resolved};

/// Smallest Ethernet frame without FCS (IEEE 802.3 clause 3.2.8): short frames we
/// build are padded to it.
pub(crate) const MIN_FRAME: usize = 60;
/// How often the timers run at most.
const TICK: Duration = Duration::from_millis(100);
/// Smallest MTU IPv4 allows every link (RFC 791) and IPv6 requires (RFC 8200 5).
const MIN_MTU_V4: usize = 68;
const MIN_MTU_V6: usize = 1280;

/// How an [`L2Underlay`] is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnderlayOptions {
    /// Our MAC address on the underlay (the interface's).
    pub mac: MacAddr,
    /// Our underlay IP address (the kernel must not have it on the same interface,
    /// or both answer).
    pub ip: IpAddr,
    /// Our UDP port.
    pub port: u16,
    /// Length of the on-link prefix around `ip`: peers inside it are resolved
    /// directly, others through `gateway`.
    pub prefix_len: u8,
    /// Next hop for peers outside the prefix.
    pub gateway: Option<IpAddr>,
    /// The underlay's L3 MTU; `None`: the wrapped port's.
    pub mtu: Option<usize>,
    /// Neighbour resolution timers and bounds.
    pub timers: NeighborTimers,
}

impl UnderlayOptions {
    /// Options for `(mac, ip, port)`: a /24 (IPv4) or /64 (IPv6) on-link prefix, no
    /// gateway, the port's MTU, default timers.
    pub fn new(mac: MacAddr, ip: IpAddr, port: u16) -> Self {
        Self {
            mac,
            ip,
            port,
            prefix_len: if ip.is_ipv4() { 24 } else { 64 },
            gateway: None,
            mtu: None,
            timers: NeighborTimers::default(),
        }
    }
}

/// Why an [`L2Underlay`] cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum UnderlayError {
    /// The wrapped port does not carry Ethernet frames.
    #[error(
        "port {port:?} does not carry Ethernet frames: the L2 underlay stack needs a raw-frame port (af_packet, af_xdp, a NIC queue)"
    )]
    NotEthernet {
        /// The port's name.
        port: String,
    },
    /// The MAC cannot be a host's.
    #[error(
        "underlay MAC {0} is not a unicast address: give the interface a unicast, non-zero MAC"
    )]
    BadMac(MacAddr),
    /// The IP cannot be a host's.
    #[error("underlay address {0} cannot be a host address: use a unicast address")]
    BadIp(IpAddr),
    /// The prefix length is longer than the address.
    #[error(
        "on-link prefix /{len} is too long for {ip}: use at most /32 for IPv4 or /128 for IPv6"
    )]
    BadPrefix {
        /// The address.
        ip: IpAddr,
        /// The prefix length given.
        len: u8,
    },
    /// The gateway is of the other IP family.
    #[error("gateway {gateway} is not of the same IP family as the underlay address {ip}")]
    GatewayFamily {
        /// The gateway.
        gateway: IpAddr,
        /// Our address.
        ip: IpAddr,
    },
    /// The gateway is not on-link.
    #[error(
        "gateway {gateway} is outside the on-link prefix {ip}/{len}: the gateway must be a neighbour on the underlay"
    )]
    GatewayOffLink {
        /// The gateway.
        gateway: IpAddr,
        /// Our address.
        ip: IpAddr,
        /// The prefix length.
        len: u8,
    },
    /// The MTU is below what the IP version requires.
    #[error(
        "underlay MTU {mtu} is too small: IPv4 needs at least {MIN_MTU_V4}, IPv6 at least {MIN_MTU_V6}"
    )]
    MtuTooSmall {
        /// The MTU.
        mtu: usize,
    },
    /// Pool buffers cannot hold a full underlay frame.
    #[error(
        "packet pool buffers of {buf_size} bytes cannot hold an underlay frame of {need} bytes after the {HEADROOM}-byte headroom: use buffers of at least {} bytes or a smaller underlay MTU", need + HEADROOM
    )]
    PoolTooSmall {
        /// The pool's buffer size.
        buf_size: usize,
        /// Largest underlay frame.
        need: usize,
    },
}

macro_rules! counters {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $f:ident),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name { $($(#[$fm])* pub $f: u64,)* }
        impl $name {
            /// The counters with their names.
            pub fn list(&self) -> Vec<DropCounter> {
                vec![$(DropCounter { name: stringify!($f), count: self.$f }),*]
            }
        }
    };
}

counters! {
    /// Frames the underlay stack dropped, by reason.
    UnderlayDrops {
        /// A unicast frame for another MAC.
        rx_not_for_us,
        /// An IP packet for another address.
        rx_not_our_ip,
        /// A UDP datagram to another port.
        rx_other_port,
        /// An IP packet of a protocol we do not serve.
        rx_other_proto,
        /// A frame neither ARP nor IP of our family.
        rx_other_ethertype,
        /// An 802.1Q-tagged frame (the underlay is untagged).
        rx_vlan,
        /// A header, or the length it announces, cut short.
        rx_truncated,
        /// Any other malformed IP or UDP header.
        rx_bad_header,
        /// A bad IPv4 header, UDP or ICMP checksum.
        rx_bad_checksum,
        /// A malformed ARP packet.
        rx_bad_arp,
        /// A malformed ICMP/ICMPv6 message or neighbour discovery packet.
        rx_bad_icmp,
        /// ICMP other than echo request, NS and NA (router adverts, MLD, ...).
        rx_icmp_ignored,
        /// Another host claims our IP address.
        rx_address_conflict,
        /// A fragment that would make a datagram too big for a buffer.
        rx_frag_too_big,
        /// A fragment overlapping another: the datagram was dropped.
        rx_frag_overlap,
        /// Fragment lengths that disagree: the datagram was dropped.
        rx_frag_inconsistent,
        /// More fragments than a datagram may have.
        rx_frag_too_many,
        /// Every reassembly slot busy.
        rx_frag_no_slot,
        /// No buffer for a reassembly.
        rx_frag_no_buffer,
        /// A partly received datagram timed out.
        rx_frag_timeout,
        /// A frame without a peer address.
        tx_no_address,
        /// A peer of the other IP family.
        tx_wrong_family,
        /// A peer off-link with no gateway configured.
        tx_no_route,
        /// Frames queued for a neighbour that never answered.
        tx_resolve_timeout,
        /// The neighbour's resolution queue was full.
        tx_resolve_queue_full,
        /// The neighbour table was full.
        tx_neighbor_table_full,
        /// A datagram too big even for fragmentation.
        tx_too_big,
        /// No buffer for a fragment or a control frame.
        tx_no_buffer,
        /// The wrapped port's transmit queue stayed full.
        tx_ring_full,
        /// An outer header could not be written (no headroom).
        tx_bad_header,
        /// A frame with an external tail that must be fragmented did not fit one
        /// buffer to be cut.
        tx_linearize_failed,
    }
}

counters! {
    /// Things the underlay stack did (not drops).
    UnderlayEvents {
        /// Datagrams delivered to the caller.
        rx_datagrams,
        /// Datagrams completed by reassembly.
        rx_reassembled,
        /// Datagrams sent.
        tx_datagrams,
        /// Datagrams sent as fragments.
        tx_fragmented,
        /// ARP requests sent (resolution, refresh, gratuitous).
        arp_requests,
        /// ARP replies sent.
        arp_replies,
        /// Neighbour solicitations sent.
        nd_solicits,
        /// Neighbour advertisements sent.
        nd_adverts,
        /// Echo replies sent.
        echo_replies,
        /// Neighbours (re)learned with a new or changed MAC.
        neighbors_learned,
    }
}

/// The UDP/IP/ARP/ND stack over an Ethernet port, as a datagram port.
///
/// Named drop counters: the wrapped port's, then every field of [`UnderlayDrops`]
/// (a name both have is reported once, with the counts added).
pub struct L2Underlay {
    inner: Box<dyn Port>,
    name: String,
    pool: Mempool,
    opts: UnderlayOptions,
    mtu: usize,
    neigh: NeighborTable,
    reasm: Reassembler,
    /// Frames ready for the wrapped port.
    out: Batch,
    /// Frames received from the wrapped port, being classified.
    rx: Batch,
    /// Datagrams classified but not yet handed out (the caller's batch was smaller
    /// than what the wrapped port delivered).
    pending: VecDeque<PktBuf>,
    /// The caller's transmit batch while it is processed.
    staged: Vec<PktBuf>,
    /// Copies made while fragmenting.
    frag_scratch: Vec<PktBuf>,
    /// Frames released by a resolution.
    released: VecDeque<PktBuf>,
    /// Requests the neighbour timers asked for.
    probes: Vec<Probe>,
    next_tick: Instant,
    ident: u32,
    drops: UnderlayDrops,
    events: UnderlayEvents,
}

impl std::fmt::Debug for L2Underlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L2Underlay")
            .field("name", &self.name)
            .field("opts", &self.opts)
            .field("mtu", &self.mtu)
            .field("drops", &self.drops)
            .finish_non_exhaustive()
    }
}

/// True when `a` and `b` share the first `len` bits.
fn same_prefix(a: IpAddr, b: IpAddr, len: u8) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

impl L2Underlay {
    /// Wraps the Ethernet port `inner`; control frames and fragment copies come from
    /// `pool`. Announces our address (gratuitous ARP, or an unsolicited neighbour
    /// advertisement) right away.
    pub fn new(
        inner: Box<dyn Port>,
        pool: Mempool,
        opts: UnderlayOptions,
    ) -> Result<Self, UnderlayError> {
        let caps = inner.caps();
        if caps.kind != PortKind::Ethernet {
            return Err(UnderlayError::NotEthernet {
                port: inner.name().to_string(),
            });
        }
        if opts.mac.is_multicast() || opts.mac == MacAddr::ZERO {
            return Err(UnderlayError::BadMac(opts.mac));
        }
        let ip = opts.ip;
        if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::from([255, 255, 255, 255]) {
            return Err(UnderlayError::BadIp(ip));
        }
        let max_len = if ip.is_ipv4() { 32 } else { 128 };
        if opts.prefix_len > max_len {
            return Err(UnderlayError::BadPrefix {
                ip,
                len: opts.prefix_len,
            });
        }
        if let Some(gateway) = opts.gateway {
            if gateway.is_ipv4() != ip.is_ipv4() {
                return Err(UnderlayError::GatewayFamily { gateway, ip });
            }
            if !same_prefix(ip, gateway, opts.prefix_len) && !is_link_local(gateway) {
                return Err(UnderlayError::GatewayOffLink {
                    gateway,
                    ip,
                    len: opts.prefix_len,
                });
            }
        }
        let mtu = opts.mtu.unwrap_or(caps.mtu);
        let min = if ip.is_ipv4() { MIN_MTU_V4 } else { MIN_MTU_V6 };
        if mtu < min {
            return Err(UnderlayError::MtuTooSmall { mtu });
        }
        let need = mtu + pkt::wire::ethernet::HEADER_LEN;
        if pool.buf_size() < need + HEADROOM {
            return Err(UnderlayError::PoolTooSmall {
                buf_size: pool.buf_size(),
                need,
            });
        }
        let now = Instant::now();
        let mut me = Self {
            name: format!("l2:{}", inner.name()),
            inner,
            pool,
            opts,
            mtu,
            neigh: NeighborTable::new(opts.timers),
            reasm: Reassembler::new(REASSEMBLY_TIMEOUT),
            out: Batch::new(),
            rx: Batch::new(),
            pending: VecDeque::with_capacity(BATCH_MAX),
            staged: Vec::with_capacity(BATCH_MAX),
            frag_scratch: Vec::with_capacity(BATCH_MAX),
            released: VecDeque::with_capacity(opts.timers.queue_per_neighbor),
            probes: Vec::with_capacity(BATCH_MAX / 2),
            next_tick: now,
            ident: std::process::id().wrapping_mul(0x9e37_79b9),
            drops: UnderlayDrops::default(),
            events: UnderlayEvents::default(),
        };
        me.announce();
        me.flush_out();
        Ok(me)
    }

    /// Our MAC.
    pub fn mac(&self) -> MacAddr {
        self.opts.mac
    }

    /// Our underlay address and port.
    pub fn local_addr(&self) -> SocketAddr {
        SocketAddr::new(self.opts.ip, self.opts.port)
    }

    /// The underlay L3 MTU in use.
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// The MAC the neighbour table holds for `ip`, if resolved.
    pub fn neighbor(&self, ip: IpAddr) -> Option<MacAddr> {
        self.neigh.mac_of(&ip)
    }

    /// Frames waiting for neighbour resolution.
    pub fn queued_for_resolution(&self) -> usize {
        self.neigh.queued()
    }

    /// Datagrams being reassembled.
    pub fn reassembling(&self) -> usize {
        self.reasm.in_progress()
    }

    /// This stack's drop counters.
    pub fn drops(&self) -> UnderlayDrops {
        self.drops
    }

    /// This stack's activity counters.
    pub fn events(&self) -> UnderlayEvents {
        self.events
    }

    /// The next hop for `ip`: itself on-link, the gateway otherwise.
    fn next_hop(&self, ip: IpAddr) -> Option<IpAddr> {
        if same_prefix(self.opts.ip, ip, self.opts.prefix_len)
            || (is_link_local(ip) && ip.is_ipv6() == self.opts.ip.is_ipv6())
        {
            Some(ip)
        } else {
            self.opts.gateway
        }
    }

    /// [`Port::rx_batch`] with the caller's clock (tests drive time with it).
    pub fn rx_batch_at(&mut self, batch: &mut Batch, now: Instant) -> usize {
        self.maybe_tick(now);
        let mut n = 0;
        while !batch.is_full() {
            let Some(b) = self.pending.pop_front() else {
                break;
            };
            let _ = batch.push(b);
            n += 1;
        }
        if n > 0 || !self.pending.is_empty() {
            return n;
        }
        let mut rx = std::mem::replace(&mut self.rx, Batch::unallocated());
        self.inner.rx_batch(&mut rx);
        for buf in rx.drain() {
            if let Some(d) = self.rx_frame(buf, now) {
                self.events.rx_datagrams += 1;
                if let Err(d) = batch.push(d) {
                    self.pending.push_back(d);
                } else {
                    n += 1;
                }
            }
        }
        self.rx = rx;
        self.flush_out();
        n
    }

    /// [`Port::tx_batch`] with the caller's clock.
    pub fn tx_batch_at(&mut self, batch: &mut Batch, now: Instant) -> usize {
        self.maybe_tick(now);
        self.flush_out();
        let mut staged = std::mem::take(&mut self.staged);
        staged.extend(batch.drain());
        let mut accepted = 0;
        let mut blocked = false;
        for buf in staged.drain(..) {
            if blocked {
                let _ = batch.push(buf);
                continue;
            }
            match self.tx_one(buf, now) {
                Ok(()) => accepted += 1,
                Err(buf) => {
                    blocked = true;
                    let _ = batch.push(buf);
                }
            }
        }
        self.staged = staged;
        self.flush_out();
        accepted
    }

    fn maybe_tick(&mut self, now: Instant) {
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + TICK;
        let mut probes = std::mem::take(&mut self.probes);
        self.drops.tx_resolve_timeout += self.neigh.tick(now, &mut probes);
        for p in probes.drain(..) {
            self.send_probe(p);
        }
        self.probes = probes;
        self.drops.rx_frag_timeout += self.reasm.expire(now);
    }

    /// Hands queued frames to the wrapped port; what it does not take stays queued.
    fn flush_out(&mut self) {
        if !self.out.is_empty() {
            self.inner.tx_batch(&mut self.out);
        }
    }

    /// Makes room for `n` frames in the output queue, flushing it if needed.
    fn out_room(&mut self, n: usize) -> bool {
        if self.out.room() < n {
            self.flush_out();
        }
        self.out.room() >= n
    }

    /// Queues a control frame (ARP, ND, echo reply) for sending.
    fn send_control(&mut self, buf: PktBuf) {
        if !self.out_room(1) {
            self.drops.tx_ring_full += 1;
            return;
        }
        let _ = self.out.push(buf);
    }

    /// Allocates an empty control-frame buffer, or counts its absence.
    fn alloc(&mut self) -> Option<PktBuf> {
        let b = self.pool.alloc();
        if b.is_none() {
            self.drops.tx_no_buffer += 1;
        }
        b
    }

    /// Announces our address: gratuitous ARP, or an unsolicited NA to all nodes.
    fn announce(&mut self) {
        let Some(mut b) = self.alloc() else { return };
        let ok = match self.opts.ip {
            IpAddr::V4(ip) => {
                self.events.arp_requests += 1;
                arp::announce(&mut b, self.opts.mac, ip)
            }
            IpAddr::V6(ip) => {
                self.events.nd_adverts += 1;
                nd::advertise(&mut b, self.opts.mac, ip, None)
            }
        };
        if ok.is_some() {
            self.send_control(b);
        }
    }

    /// Sends an ARP request or neighbour solicitation.
    fn send_probe(&mut self, p: Probe) {
        let Some(mut b) = self.alloc() else { return };
        let ok = match (self.opts.ip, p.ip) {
            (IpAddr::V4(me), IpAddr::V4(target)) => {
                self.events.arp_requests += 1;
                arp::request(&mut b, self.opts.mac, me, target, p.unicast)
            }
            (IpAddr::V6(me), IpAddr::V6(target)) => {
                self.events.nd_solicits += 1;
                nd::solicit(&mut b, self.opts.mac, me, target, p.unicast)
            }
            _ => None,
        };
        if ok.is_some() {
            self.send_control(b);
        }
    }

    // ---- transmit ----

    /// Accepts one datagram: sends it, queues it behind a resolution, or drops it
    /// (counted). Gives it back only when the output queue has no room.
    fn tx_one(&mut self, buf: PktBuf, now: Instant) -> Result<(), PktBuf> {
        let Some(peer) = buf.meta.addr else {
            self.drops.tx_no_address += 1;
            return Ok(());
        };
        if peer.is_ipv4() != self.opts.ip.is_ipv4() {
            self.drops.tx_wrong_family += 1;
            return Ok(());
        }
        let Some(hop) = self.next_hop(peer.ip()) else {
            self.drops.tx_no_route += 1;
            return Ok(());
        };
        // The datagram is the whole frame, its external tail included.
        let frames = self.frames_for(buf.frame_len());
        if frames == 0 {
            self.drops.tx_too_big += 1;
            return Ok(());
        }
        if !self.out_room(frames) {
            return Err(buf);
        }
        match self.neigh.resolve(hop, buf, now) {
            Resolved::Mac(mac, buf) => self.emit(buf, peer, mac),
            Resolved::Queued(Some(probe)) => self.send_probe(probe),
            Resolved::Queued(None) => {}
            Resolved::QueueFull => self.drops.tx_resolve_queue_full += 1,
            Resolved::TableFull => self.drops.tx_neighbor_table_full += 1,
        }
        Ok(())
    }

    fn frag_ip(&self, peer: IpAddr) -> Option<FragIp> {
        match (self.opts.ip, peer) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Some(FragIp::V4(s, d)),
            (IpAddr::V6(s), IpAddr::V6(d)) => Some(FragIp::V6(s, d)),
            _ => None,
        }
    }

    /// Frames a datagram of `payload` bytes becomes (0: it cannot be sent).
    fn frames_for(&self, payload: usize) -> usize {
        let (ip_hdr, max) = if self.opts.ip.is_ipv4() {
            (ipv4::HEADER_LEN, usize::from(u16::MAX) - ipv4::HEADER_LEN)
        } else {
            (ipv6::HEADER_LEN, usize::from(u16::MAX))
        };
        let l4 = payload + udp::HEADER_LEN;
        if l4 > max {
            return 0;
        }
        if ip_hdr + l4 <= self.mtu {
            return 1;
        }
        let ip = match self.opts.ip {
            IpAddr::V4(a) => FragIp::V4(a, a),
            IpAddr::V6(a) => FragIp::V6(a, a),
        };
        let n = frag::fragments_needed(ip, self.mtu, l4);
        if n > BATCH_MAX { 0 } else { n }
    }

    /// Wraps a datagram for `peer` behind next-hop `mac` and queues its frame(s).
    fn emit(&mut self, mut buf: PktBuf, peer: SocketAddr, mac: MacAddr) {
        let frames = self.frames_for(buf.frame_len());
        if frames == 0 {
            self.drops.tx_too_big += 1;
            return;
        }
        if !self.out_room(frames) {
            self.drops.tx_ring_full += 1;
            return;
        }
        let ident = self.ident;
        self.ident = self.ident.wrapping_add(1);
        if frames == 1 {
            let h = OuterHeaders {
                src_mac: self.opts.mac,
                dst_mac: mac,
                vlan: None,
                src: self.local_addr(),
                dst: peer,
            };
            match encap::push_outer(&mut buf, &h, ident as u16) {
                Ok(()) => {
                    self.events.tx_datagrams += 1;
                    let _ = self.out.push(buf);
                }
                Err(_) => self.drops.tx_bad_header += 1,
            }
            return;
        }
        let Some(ip) = self.frag_ip(peer.ip()) else {
            self.drops.tx_wrong_family += 1;
            return;
        };
        // Fragments are cut from (and the UDP checksum summed over) the buffer's bytes:
        // a tail joins them first, and goes back to its owner.
        if buf.linearize().is_err() {
            self.drops.tx_linearize_failed += 1;
            return;
        }
        if self.push_udp_header(&mut buf, peer).is_none() {
            self.drops.tx_bad_header += 1;
            return;
        }
        let eth = EthernetRepr {
            dst: mac,
            src: self.opts.mac,
            vlan: None,
            ethertype: if peer.is_ipv4() {
                ethertype::IPV4
            } else {
                ethertype::IPV6
            },
        };
        let mut scratch = std::mem::take(&mut self.frag_scratch);
        let r = frag::fragment(
            buf,
            &eth,
            ip,
            self.mtu,
            ident,
            &self.pool,
            &mut scratch,
            &mut self.out,
        );
        self.frag_scratch = scratch;
        match r {
            Ok(_) => {
                self.events.tx_datagrams += 1;
                self.events.tx_fragmented += 1;
            }
            Err(frag::FragTxError::NoBuffer) => self.drops.tx_no_buffer += 1,
            Err(frag::FragTxError::BadHeader) => self.drops.tx_bad_header += 1,
        }
    }

    /// Prepends a UDP header with its checksum (the datagram is about to be
    /// fragmented, so it is the only end-to-end check of the reassembly).
    fn push_udp_header(&self, buf: &mut PktBuf, peer: SocketAddr) -> Option<()> {
        let payload_len = buf.len();
        let hdr = buf.prepend(udp::HEADER_LEN).ok()?;
        UdpRepr {
            src_port: self.opts.port,
            dst_port: peer.port(),
            payload_len,
            checksum: 0,
        }
        .emit(hdr)
        .ok()?;
        let seg = buf.data_mut();
        let ok = match (self.opts.ip, peer.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => offload::checksum::fill_udp_checksum_v4(s, d, seg),
            (IpAddr::V6(s), IpAddr::V6(d)) => offload::checksum::fill_udp_checksum_v6(&s, &d, seg),
            _ => return None,
        };
        ok.ok()
    }

    /// Sends frames a resolution released to `mac`.
    fn send_released(&mut self, mac: MacAddr) {
        let mut released = std::mem::take(&mut self.released);
        for buf in released.drain(..) {
            match buf.meta.addr {
                Some(peer) => self.emit(buf, peer, mac),
                None => self.drops.tx_no_address += 1,
            }
        }
        self.released = released;
    }

    /// Records a neighbour and sends what waited for it.
    fn learn(&mut self, ip: IpAddr, mac: MacAddr, now: Instant, create: bool) {
        if mac.is_multicast() || mac == MacAddr::ZERO {
            return;
        }
        if self.neigh.mac_of(&ip) != Some(mac) && (create || self.neigh.contains(&ip)) {
            self.events.neighbors_learned += 1;
        }
        let mut released = std::mem::take(&mut self.released);
        self.neigh.learn(ip, mac, now, create, &mut released);
        self.released = released;
        if !self.released.is_empty() {
            self.send_released(mac);
        }
    }

    // ---- receive ----

    /// Classifies one received frame: a datagram for the caller, or consumed here
    /// (answered, learned from, reassembled, or dropped and counted).
    fn rx_frame(&mut self, buf: PktBuf, now: Instant) -> Option<PktBuf> {
        let data = buf.data();
        let Some(dst) = data.get(..6) else {
            self.drops.rx_truncated += 1;
            return None;
        };
        let mut dst_mac = MacAddr::ZERO;
        dst_mac.0.copy_from_slice(dst);
        if dst_mac != self.opts.mac && !dst_mac.is_multicast() {
            self.drops.rx_not_for_us += 1;
            return None;
        }
        // A NIC that checked the UDP checksum (DATA_VALID) spares us summing the frame.
        let verify_udp = buf.meta.offload.flags & offload::vnet_hdr::DATA_VALID == 0;
        match encap::parse_outer_checked(data, verify_udp) {
            Ok(info) => self.rx_udp(buf, info, now),
            Err(EncapError::Fragment | EncapError::NotUdp { .. } | EncapError::NotIp { .. }) => {
                self.rx_slow(buf, now)
            }
            Err(e) => {
                self.count_rx_error(e);
                None
            }
        }
    }

    fn count_rx_error(&mut self, e: EncapError) {
        match e {
            EncapError::Truncated { .. } => self.drops.rx_truncated += 1,
            EncapError::BadChecksum { .. } => self.drops.rx_bad_checksum += 1,
            _ => self.drops.rx_bad_header += 1,
        }
    }

    /// A whole UDP datagram.
    fn rx_udp(&mut self, mut buf: PktBuf, info: OuterInfo, now: Instant) -> Option<PktBuf> {
        if info.vlan.is_some() {
            self.drops.rx_vlan += 1;
            return None;
        }
        if info.dst.ip() != self.opts.ip {
            self.drops.rx_not_our_ip += 1;
            return None;
        }
        if info.dst.port() != self.opts.port {
            self.drops.rx_other_port += 1;
            return None;
        }
        if let Some(hop) = self.next_hop(info.src.ip()) {
            self.neigh.confirm(&hop, info.src_mac, now);
        }
        buf.strip_front(info.payload_offset).ok()?;
        buf.truncate(info.payload_len);
        buf.meta = pkt::Meta {
            addr: Some(info.src),
            ..pkt::Meta::default()
        };
        Some(buf)
    }

    /// ARP, ICMP, fragments and what else is not a whole UDP datagram.
    fn rx_slow(&mut self, buf: PktBuf, now: Instant) -> Option<PktBuf> {
        let data = buf.data();
        let (eth, l3) = match EthernetRepr::parse(data) {
            Ok(e) => e,
            Err(_) => {
                self.drops.rx_truncated += 1;
                return None;
            }
        };
        if eth.vlan.is_some() {
            self.drops.rx_vlan += 1;
            return None;
        }
        match (eth.ethertype, self.opts.ip.is_ipv4()) {
            (ethertype::ARP, true) => {
                self.rx_arp(&data[l3..], now);
                None
            }
            (ethertype::IPV4, true) => self.rx_ipv4(&buf, l3, eth.src, now),
            (ethertype::IPV6, false) => self.rx_ipv6(&buf, l3, eth.src, now),
            _ => {
                self.drops.rx_other_ethertype += 1;
                None
            }
        }
    }

    fn rx_arp(&mut self, bytes: &[u8], now: Instant) {
        let Ok((arp, _)) = ArpRepr::parse(bytes) else {
            self.drops.rx_bad_arp += 1;
            return;
        };
        let IpAddr::V4(me) = self.opts.ip else { return };
        if arp.sender_ip == me {
            if arp.sender_mac != self.opts.mac {
                self.drops.rx_address_conflict += 1;
            }
            return;
        }
        let for_us = arp.target_ip == me;
        if !arp.sender_ip.is_unspecified() {
            self.learn(IpAddr::V4(arp.sender_ip), arp.sender_mac, now, for_us);
        }
        if for_us && arp.op == ArpOp::Request {
            let Some(mut b) = self.alloc() else { return };
            if arp::reply(&mut b, self.opts.mac, me, &arp).is_some() {
                self.events.arp_replies += 1;
                self.send_control(b);
            }
        }
    }

    fn rx_ipv4(
        &mut self,
        buf: &PktBuf,
        l3: usize,
        src_mac: MacAddr,
        now: Instant,
    ) -> Option<PktBuf> {
        let bytes = &buf.data()[l3..];
        let (ip, off) = match Ipv4Repr::parse(bytes) {
            Ok(p) => p,
            Err(e) => {
                self.count_rx_error(e.into());
                return None;
            }
        };
        if IpAddr::V4(ip.dst) != self.opts.ip {
            self.drops.rx_not_our_ip += 1;
            return None;
        }
        let payload = &bytes[off..off + ip.payload_len];
        if ip.is_fragment() {
            let key = FragKey {
                src: ip.src.into(),
                dst: ip.dst.into(),
                ident: ip.ident.into(),
                proto: ip.protocol,
            };
            let frag = Fragment {
                offset: usize::from(ip.frag_offset) * 8,
                more: ip.more_frags,
                data: payload,
            };
            return self.rx_fragment(key, frag, src_mac, now);
        }
        if ip.protocol == ip_proto::ICMP {
            self.rx_icmp4(payload, ip.src, src_mac);
        } else {
            self.drops.rx_other_proto += 1;
        }
        None
    }

    fn rx_icmp4(&mut self, msg: &[u8], from: std::net::Ipv4Addr, src_mac: MacAddr) {
        if msg.len() < 8 || checksum::sum(msg, 0) != 0xffff {
            self.drops.rx_bad_icmp += 1;
            return;
        }
        if msg[0] != arp::ICMP_ECHO_REQUEST || msg[1] != 0 {
            self.drops.rx_icmp_ignored += 1;
            return;
        }
        let IpAddr::V4(me) = self.opts.ip else { return };
        let ident = self.ident as u16;
        self.ident = self.ident.wrapping_add(1);
        let Some(mut b) = self.alloc() else { return };
        if arp::echo_reply(&mut b, self.opts.mac, src_mac, me, from, ident, msg).is_some() {
            self.events.echo_replies += 1;
            self.send_control(b);
        } else {
            self.drops.tx_no_buffer += 1;
        }
    }

    fn rx_ipv6(
        &mut self,
        buf: &PktBuf,
        l3: usize,
        src_mac: MacAddr,
        now: Instant,
    ) -> Option<PktBuf> {
        let bytes = &buf.data()[l3..];
        let (ip, off) = match Ipv6Repr::parse(bytes) {
            Ok(p) => p,
            Err(e) => {
                self.count_rx_error(e.into());
                return None;
            }
        };
        let IpAddr::V6(me) = self.opts.ip else {
            return None;
        };
        let all_nodes = std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        let unicast = ip.dst == me;
        if !unicast && ip.dst != nd::solicited_node(&me) && ip.dst != all_nodes {
            self.drops.rx_not_our_ip += 1;
            return None;
        }
        let payload = &bytes[off..off + ip.payload_len];
        match ip.next_header {
            ip_proto::ICMPV6 => {
                self.rx_icmp6(payload, &ip, unicast, src_mac, now);
                None
            }
            ip_proto::IPV6_FRAG if unicast => {
                let Some(fh) = payload.get(..frag::IPV6_FRAG_HEADER_LEN) else {
                    self.drops.rx_truncated += 1;
                    return None;
                };
                let off_flags = u16::from_be_bytes([fh[2], fh[3]]);
                let key = FragKey {
                    src: ip.src.into(),
                    dst: ip.dst.into(),
                    ident: u32::from_be_bytes([fh[4], fh[5], fh[6], fh[7]]),
                    proto: fh[0],
                };
                let frag = Fragment {
                    offset: usize::from(off_flags >> 3) * 8,
                    more: off_flags & 1 == 1,
                    data: &payload[frag::IPV6_FRAG_HEADER_LEN..],
                };
                self.rx_fragment(key, frag, src_mac, now)
            }
            _ => {
                self.drops.rx_other_proto += 1;
                None
            }
        }
    }

    fn rx_icmp6(
        &mut self,
        msg: &[u8],
        ip: &Ipv6Repr,
        unicast: bool,
        src_mac: MacAddr,
        now: Instant,
    ) {
        if !nd::icmpv6_valid(&ip.src, &ip.dst, msg) {
            self.drops.rx_bad_icmp += 1;
            return;
        }
        let IpAddr::V6(me) = self.opts.ip else { return };
        match msg[0] {
            nd::NEIGHBOR_SOLICIT | nd::NEIGHBOR_ADVERT => {
                let Some(m) = nd::parse_nd(msg).filter(|_| ip.hop_limit == nd::ND_HOP_LIMIT) else {
                    self.drops.rx_bad_icmp += 1;
                    return;
                };
                if m.kind == nd::NEIGHBOR_ADVERT {
                    if m.target == me {
                        if m.lladdr.is_some_and(|l| l != self.opts.mac) {
                            self.drops.rx_address_conflict += 1;
                        }
                        return;
                    }
                    let mac = m.lladdr.unwrap_or(src_mac);
                    self.learn(IpAddr::V6(m.target), mac, now, false);
                    return;
                }
                if m.target != me {
                    self.drops.rx_not_our_ip += 1;
                    return;
                }
                let to = if ip.src.is_unspecified() {
                    // Duplicate address detection for our address: defend it.
                    None
                } else {
                    let mac = m.lladdr.unwrap_or(src_mac);
                    self.learn(IpAddr::V6(ip.src), mac, now, true);
                    Some((ip.src, mac))
                };
                let Some(mut b) = self.alloc() else { return };
                if nd::advertise(&mut b, self.opts.mac, me, to).is_some() {
                    self.events.nd_adverts += 1;
                    self.send_control(b);
                }
            }
            nd::ECHO_REQUEST if unicast && msg.len() >= 8 && msg[1] == 0 => {
                let Some(mut b) = self.alloc() else { return };
                if nd::echo_reply(&mut b, self.opts.mac, src_mac, me, ip.src, msg).is_some() {
                    self.events.echo_replies += 1;
                    self.send_control(b);
                } else {
                    self.drops.tx_no_buffer += 1;
                }
            }
            _ => self.drops.rx_icmp_ignored += 1,
        }
    }

    /// A fragment for us: reassembles, and delivers a completed UDP datagram.
    fn rx_fragment(
        &mut self,
        key: FragKey,
        frag: Fragment<'_>,
        src_mac: MacAddr,
        now: Instant,
    ) -> Option<PktBuf> {
        if key.proto != ip_proto::UDP {
            self.drops.rx_other_proto += 1;
            return None;
        }
        let whole = match self.reasm.insert(key, frag, now, &self.pool) {
            Ok(Some(w)) => w,
            Ok(None) => return None,
            Err(e) => {
                self.count_frag_error(e);
                return None;
            }
        };
        self.events.rx_reassembled += 1;
        self.rx_reassembled_udp(whole, key.src, key.dst, src_mac, now)
    }

    fn count_frag_error(&mut self, e: frag::FragRxError) {
        use frag::FragRxError as E;
        let d = &mut self.drops;
        match e {
            E::TooBig => d.rx_frag_too_big += 1,
            E::Overlap => d.rx_frag_overlap += 1,
            E::Inconsistent => d.rx_frag_inconsistent += 1,
            E::TooManyFragments => d.rx_frag_too_many += 1,
            E::NoSlot => d.rx_frag_no_slot += 1,
            E::NoBuffer => d.rx_frag_no_buffer += 1,
        }
    }

    /// A reassembled UDP datagram (header and payload at the buffer's start).
    fn rx_reassembled_udp(
        &mut self,
        mut buf: PktBuf,
        src: IpAddr,
        dst: IpAddr,
        src_mac: MacAddr,
        now: Instant,
    ) -> Option<PktBuf> {
        let (udp, off) = match UdpRepr::parse(buf.data()) {
            Ok(u) => u,
            Err(e) => {
                self.count_rx_error(e.into());
                return None;
            }
        };
        let seg = &buf.data()[..off + udp.payload_len];
        let ok = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => offload::checksum::verify_udp_v4(s, d, seg),
            (IpAddr::V6(s), IpAddr::V6(d)) => offload::checksum::verify_udp_v6(&s, &d, seg),
            _ => false,
        };
        if !ok {
            self.drops.rx_bad_checksum += 1;
            return None;
        }
        if udp.dst_port != self.opts.port {
            self.drops.rx_other_port += 1;
            return None;
        }
        if let Some(hop) = self.next_hop(src) {
            self.neigh.confirm(&hop, src_mac, now);
        }
        buf.strip_front(off).ok()?;
        buf.truncate(udp.payload_len);
        buf.meta = pkt::Meta {
            addr: Some(SocketAddr::new(src, udp.src_port)),
            ..pkt::Meta::default()
        };
        Some(buf)
    }
}

/// IPv6 link-local (fe80::/10): always on-link.
fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(a) => a.segments()[0] & 0xffc0 == 0xfe80,
        IpAddr::V4(_) => false,
    }
}

impl Drop for L2Underlay {
    fn drop(&mut self) {
        // Queued frames go back to the pool with the table; nothing to send.
        let _ = self.neigh.clear();
    }
}

impl Port for L2Underlay {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_batch(&mut self, batch: &mut Batch) -> usize {
        self.rx_batch_at(batch, Instant::now())
    }

    fn tx_batch(&mut self, batch: &mut Batch) -> usize {
        self.tx_batch_at(batch, Instant::now())
    }

    fn caps(&self) -> PortCaps {
        let max_ip = if self.opts.ip.is_ipv4() {
            usize::from(u16::MAX) - ipv4::HEADER_LEN - udp::HEADER_LEN
        } else {
            usize::from(u16::MAX) - udp::HEADER_LEN
        };
        PortCaps {
            kind: PortKind::Datagram,
            mtu: self
                .pool
                .buf_size()
                .saturating_sub(HEADROOM + udp::HEADER_LEN)
                .min(max_ip),
            rx_queues: 1,
            tx_queues: 1,
            // A datagram in one frame keeps its external tail behind the outer headers
            // (`encap::push_outer`), so tails go as far as the wrapped port takes them.
            offloads: if self.inner.caps().offloads.contains(Offloads::EXT_TAIL) {
                Offloads::EXT_TAIL
            } else {
                Offloads::NONE
            },
        }
    }

    fn stats(&self) -> PortStats {
        let mut s = self.inner.stats();
        // Same reason, same name: the wrapped port's count and ours add up.
        for d in self.drops.list() {
            match s.drops.iter_mut().find(|x| x.name == d.name) {
                Some(x) => x.count += d.count,
                None => s.drops.push(d),
            }
        }
        s
    }

    fn events(&self) -> Vec<DropCounter> {
        // The NIC's work (zero-copy gathers, offloads) under its own names, then ours.
        let mut e = self.inner.events();
        e.extend(self.events.list());
        e
    }

    fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        self.inner.poll_fd()
    }

    fn clear_poll_fd(&mut self) {
        self.inner.clear_poll_fd();
    }

    fn next_deadline(&self) -> Option<std::time::Instant> {
        self.inner.next_deadline()
    }
}
