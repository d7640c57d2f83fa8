//! The [`Port`] trait: one shape for every packet endpoint (kernel socket, tap, NIC
//! queue, guest queue, test model), moving frames a [`Batch`] at a time.

use std::os::fd::BorrowedFd;

use crate::Batch;

/// What a port carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    /// Whole Ethernet frames (tap, AF_PACKET, AF_XDP, a NIC queue, a guest queue).
    Ethernet,
    /// Datagram payloads addressed by [`crate::Meta::addr`] (a kernel UDP socket): the
    /// kernel builds the outer Ethernet/IP/UDP headers.
    Datagram,
}

/// Offload capabilities of a port, as bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offloads(pub u32);

impl Offloads {
    /// No offload at all.
    pub const NONE: Self = Self(0);
    /// Accepts frames whose L4 checksum is left for the port to fill (partial checksum).
    pub const TX_CSUM: Self = Self(1 << 0);
    /// Reports verified checksums on receive.
    pub const RX_CSUM: Self = Self(1 << 1);
    /// Segments large TCP/IPv4 frames.
    pub const TSO4: Self = Self(1 << 2);
    /// Segments large TCP/IPv6 frames.
    pub const TSO6: Self = Self(1 << 3);
    /// Inserts and strips 802.1Q tags.
    pub const VLAN: Self = Self(1 << 4);
    /// Spreads receive flows over queues by a Toeplitz hash.
    pub const RSS: Self = Self(1 << 5);
    /// Sends frames with an external tail ([`crate::ExtSeg`]) without joining the two
    /// parts first (gather I/O: two NIC descriptors, or two iovecs). A port without
    /// this bit only ever sees linear frames: the dispatcher joins them before
    /// `tx_batch` ([`crate::PktBuf::linearize`]).
    pub const EXT_TAIL: Self = Self(1 << 6);

    /// True when every bit of `other` is set.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Offloads {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// Static capabilities of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortCaps {
    /// What the port carries.
    pub kind: PortKind,
    /// Largest payload it moves: the L3 MTU for Ethernet ports, the largest datagram
    /// for datagram ports.
    pub mtu: usize,
    /// Receive queues.
    pub rx_queues: u16,
    /// Transmit queues.
    pub tx_queues: u16,
    /// Offloads the port performs.
    pub offloads: Offloads,
}

/// A named drop counter (`rx_no_route`, `tx_ring_full`, `bad_descriptor`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropCounter {
    /// The counter's name, stable across releases: operators and tests read it.
    pub name: &'static str,
    /// Frames dropped for this reason.
    pub count: u64,
}

/// Traffic counters of a port. Built on request, never on the packet path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Drops by reason.
    pub drops: Vec<DropCounter>,
}

impl PortStats {
    /// Stats from the four traffic counts and `(name, count)` drop pairs.
    pub fn new(rx: (u64, u64), tx: (u64, u64), drops: &[(&'static str, u64)]) -> Self {
        Self {
            rx_packets: rx.0,
            rx_bytes: rx.1,
            tx_packets: tx.0,
            tx_bytes: tx.1,
            drops: drops
                .iter()
                .map(|&(name, count)| DropCounter { name, count })
                .collect(),
        }
    }

    /// The count of the named drop counter (0 when the port has no such counter).
    pub fn drop_count(&self, name: &str) -> u64 {
        self.drops
            .iter()
            .find(|d| d.name == name)
            .map_or(0, |d| d.count)
    }
}

/// A packet endpoint that moves frames in batches.
///
/// Implementations never block in `rx_batch`/`tx_batch`: they move what is ready and
/// return. A caller that has nothing to do waits on [`Port::poll_fd`].
pub trait Port: Send {
    /// A short name for logs and statistics.
    fn name(&self) -> &str;

    /// Appends up to `batch.room()` received frames to `batch`; returns how many.
    fn rx_batch(&mut self, batch: &mut Batch) -> usize;

    /// Sends frames from the front of `batch` and removes those it sent; returns how
    /// many. Frames left in the batch were not accepted (ring full, would block): the
    /// caller retries or drops them and counts it.
    fn tx_batch(&mut self, batch: &mut Batch) -> usize;

    /// Static capabilities.
    fn caps(&self) -> PortCaps;

    /// Counters, including named drops.
    fn stats(&self) -> PortStats;

    /// A file descriptor that becomes readable when `rx_batch` has work, if the port
    /// has one (kernel sockets, taps, eventfds). Polled ports return `None`.
    fn poll_fd(&self) -> Option<BorrowedFd<'_>>;

    /// Called by a dispatcher whose wait found [`Port::poll_fd`] readable, before its
    /// next batch calls. A port whose fd stays readable until what made it so is
    /// consumed (an epoll set of eventfds that nobody reads) consumes it here, so the
    /// next wait sleeps; the work it announced is left for the batch calls. The default
    /// does nothing: most fds are cleared by the batch calls themselves.
    fn clear_poll_fd(&mut self) {}

    /// When `rx_batch` will next have work that no file descriptor announces (frames
    /// a wrapper holds back until a time, a retry timer): a sleeping dispatcher wakes
    /// by then at the latest. `None` (the default): the poll fd says everything.
    fn next_deadline(&self) -> Option<std::time::Instant> {
        None
    }

    /// Named counters of things the port did that are not drops (offload work such as
    /// TSO frames carried whole or segmented, checksums completed), for `ctl stats`
    /// and metrics. Read off the hot path; the default has none.
    fn events(&self) -> Vec<DropCounter> {
        Vec::new()
    }
}
