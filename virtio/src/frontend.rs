//! [`VirtioUser`]: our own vhost-user frontend. It plays the guest's virtio-net driver
//! without a VM: shared memory from a memfd, split rings laid out in it (a receive and a
//! transmit ring per queue pair, and a control ring when asked for), frames sent and
//! received in batches, optionally with offload requests (TSO, partial checksums) in
//! their virtio-net headers. Benches and tests use it as a traffic
//! source and sink against any vhost-user backend (ours, DPDK's `net_vhost`).
//!
//! The backend is a peer, not part of us: every used-ring entry it writes is checked
//! (index, length) before we act on it.

use std::fs::File;
use std::num::Wrapping;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use offload::vnet_hdr::{self, VirtioNetHdr};
use pkt::OffloadMeta;
use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserHeaderFlag, VhostUserProtocolFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_CTRL_RX, VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_GUEST_CSUM,
    VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_TSO4,
    VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_MTU,
};
use virtio_bindings::virtio_ring::{
    VIRTIO_RING_F_EVENT_IDX, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};
use zerocopy::FromBytes;

use crate::error::VirtioError;
use crate::net::{RX_QUEUE, TX_QUEUE, VHOST_USER_F_PROTOCOL_FEATURES, bit};

/// Options of a [`VirtioUser`].
#[derive(Debug, Clone, Copy)]
pub struct VirtioUserOptions {
    /// Entries per ring (a power of two, at most 1024).
    pub queue_size: u16,
    /// Bytes per buffer, receive and transmit (a frame plus the 12-byte header must fit
    /// one transmit buffer; received frames span several with mergeable buffers).
    pub buf_size: u32,
    /// Negotiate `VIRTIO_RING_F_EVENT_IDX` when the backend offers it.
    pub event_idx: bool,
    /// Negotiate `VIRTIO_NET_F_MRG_RXBUF` when the backend offers it.
    pub mrg_rxbuf: bool,
    /// Queue pairs to set up (more than 1 needs `VIRTIO_NET_F_MQ` from the backend, and
    /// brings the control queue). They are all enabled; [`VirtioUser::ctrl`] with
    /// `VQ_PAIRS_SET` tells the backend how many to use.
    pub queue_pairs: u16,
    /// Negotiate the control queue (`VIRTIO_NET_F_CTRL_VQ`) even with one pair.
    pub ctrl_vq: bool,
    /// Negotiate checksum and TCP segmentation offload both ways (CSUM, GUEST_CSUM,
    /// HOST_TSO4/6, GUEST_TSO4/6) as far as the backend offers them.
    pub tso: bool,
}

impl Default for VirtioUserOptions {
    fn default() -> Self {
        Self {
            queue_size: 256,
            buf_size: 2048,
            event_idx: true,
            mrg_rxbuf: true,
            queue_pairs: 1,
            ctrl_vq: false,
            tso: false,
        }
    }
}

/// Guest-physical layout of one split ring and its buffers, and its driver state.
#[derive(Debug)]
struct Ring {
    /// The backend's index of this queue.
    index: usize,
    desc: u64,
    avail: u64,
    used: u64,
    bufs: u64,
    /// Next avail index we publish.
    avail_idx: Wrapping<u16>,
    /// Next used index we consume.
    last_used: Wrapping<u16>,
    /// Transmit and control rings: descriptor ids not in flight.
    free: Vec<u16>,
    /// For hand-made chains ([`VirtioUser::post_raw_tx_chain`]): the next descriptor id
    /// of the chain that owns each id, [`NO_LINK`] for the last or a single one.
    links: Vec<u16>,
    kick: EventFd,
    call: EventFd,
}

/// Gives the backend ring `r`: size, base 0, addresses, call and kick eventfds.
fn set_up_vring(
    frontend: &mut Frontend,
    socket: &Path,
    mem: &GuestMemoryMmap,
    qsize: u16,
    r: &Ring,
) -> Result<(), VirtioError> {
    let err = |step: &'static str| {
        move |e: vhost::Error| VirtioError::Frontend {
            socket: socket.to_path_buf(),
            step,
            reason: e.to_string(),
        }
    };
    let host = |gpa: u64| -> Result<u64, VirtioError> {
        mem.get_host_address(GuestAddress(gpa))
            .map(|p| p as u64)
            .map_err(|e| VirtioError::Memory(e.to_string()))
    };
    let i = r.index;
    frontend
        .set_vring_num(i, qsize)
        .map_err(err("SET_VRING_NUM"))?;
    frontend
        .set_vring_base(i, 0)
        .map_err(err("SET_VRING_BASE"))?;
    let cfg = VringConfigData {
        queue_max_size: qsize,
        queue_size: qsize,
        flags: 0,
        desc_table_addr: host(r.desc)?,
        used_ring_addr: host(r.used)?,
        avail_ring_addr: host(r.avail)?,
        log_addr: None,
    };
    frontend
        .set_vring_addr(i, &cfg)
        .map_err(err("SET_VRING_ADDR"))?;
    frontend
        .set_vring_call(i, &r.call)
        .map_err(err("SET_VRING_CALL"))?;
    frontend
        .set_vring_kick(i, &r.kick)
        .map_err(err("SET_VRING_KICK"))
}

/// Marks the end of a hand-made chain in a ring's `links`.
const NO_LINK: u16 = u16::MAX;

/// Where a hand-made descriptor's `next` points ([`VirtioUser::post_raw_tx_chain`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawNext {
    /// No next descriptor (the `next` field is 0; set `VRING_DESC_F_NEXT` to lie).
    End,
    /// The descriptor at this position of the same hand-made chain.
    Index(u16),
    /// This raw descriptor-table index, whatever it holds.
    Raw(u16),
}

/// One hand-made descriptor ([`VirtioUser::post_raw_tx_chain`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawDesc {
    /// Guest address; `None` for the descriptor's own zeroed transmit buffer.
    pub addr: Option<u64>,
    /// Length in bytes.
    pub len: u32,
    /// `VRING_DESC_F_*` flags.
    pub flags: u16,
    /// The `next` field.
    pub next: RawNext,
}

/// Counters of a [`VirtioUser`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrontendStats {
    /// Frames handed to the backend.
    pub tx_packets: u64,
    /// Frames received from the backend.
    pub rx_packets: u64,
    /// Bytes received (frames without header).
    pub rx_bytes: u64,
    /// Kicks sent (the backend had notifications enabled).
    pub kicks: u64,
    /// Used entries from the backend that were out of range (bad id or length).
    pub bad_used: u64,
}

/// Virtio feature bits our frontend asks for with [`VirtioUserOptions::tso`].
const TSO_WANTED: u64 = bit(VIRTIO_NET_F_CSUM)
    | bit(VIRTIO_NET_F_GUEST_CSUM)
    | bit(VIRTIO_NET_F_HOST_TSO4)
    | bit(VIRTIO_NET_F_HOST_TSO6)
    | bit(VIRTIO_NET_F_GUEST_TSO4)
    | bit(VIRTIO_NET_F_GUEST_TSO6);

/// A virtio-net driver over vhost-user without a VM.
pub struct VirtioUser {
    socket: PathBuf,
    // Held for the connection: dropping it disconnects from the backend.
    frontend: Frontend,
    mem: GuestMemoryMmap,
    qsize: u16,
    buf_size: u32,
    features: u64,
    hdr_len: usize,
    /// Receive ring of pair `p` at `2p`, transmit at `2p + 1`, then the control ring.
    rings: Vec<Ring>,
    pairs: u16,
    /// Position of the control ring in `rings`.
    ctrl: Option<usize>,
    max_pairs: u16,
    epoll: Epoll,
    scratch: Vec<u8>,
    mac: Option<[u8; 6]>,
    stats: FrontendStats,
}

impl std::fmt::Debug for VirtioUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioUser")
            .field("socket", &self.socket)
            .field("features", &format_args!("{:#x}", self.features))
            .finish()
    }
}

const fn align(x: u64, a: u64) -> u64 {
    (x + a - 1) & !(a - 1)
}

impl VirtioUser {
    /// Connects to the vhost-user backend listening on `socket`, negotiates features,
    /// shares memory and starts both queues with every receive buffer posted.
    pub fn connect(socket: &Path, opts: VirtioUserOptions) -> Result<Self, VirtioError> {
        let err = |step: &'static str| {
            let socket = socket.to_path_buf();
            move |e: vhost::Error| VirtioError::Frontend {
                socket,
                step,
                reason: e.to_string(),
            }
        };
        let qsize = opts.queue_size;
        if !qsize.is_power_of_two() || qsize > 1024 || opts.buf_size < 64 {
            return Err(VirtioError::Frontend {
                socket: socket.to_path_buf(),
                step: "options",
                reason: "queue_size must be a power of two up to 1024 and buf_size at least 64"
                    .into(),
            });
        }
        let pairs = opts.queue_pairs;
        if pairs == 0 || pairs > crate::net::MAX_QUEUE_PAIRS {
            return Err(VirtioError::Frontend {
                socket: socket.to_path_buf(),
                step: "options",
                reason: format!("queue_pairs must be 1 to {}", crate::net::MAX_QUEUE_PAIRS),
            });
        }
        let want_ctrl = opts.ctrl_vq || pairs > 1;
        let nrings = 2 * usize::from(pairs) + usize::from(want_ctrl);
        let q = u64::from(qsize);
        // Layout per ring: descriptors, avail (flags, idx, ring, used_event), used
        // (flags, idx, ring, avail_event), then the buffers.
        let mut at = 0u64;
        let mut layout = Vec::with_capacity(nrings);
        for _ in 0..nrings {
            let desc = at;
            let avail = align(desc + 16 * q, 4096);
            let used = align(avail + 6 + 2 * q, 4096);
            let bufs = align(used + 6 + 8 * q, 4096);
            at = align(bufs + q * u64::from(opts.buf_size), 4096);
            layout.push((desc, avail, used, bufs));
        }
        let size = at;
        let fd = rustix::fs::memfd_create("vnetp-virtio-user", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(|e| VirtioError::Memory(e.to_string()))?;
        let file = File::from(fd);
        file.set_len(size)
            .map_err(|e| VirtioError::Memory(e.to_string()))?;
        let mem = GuestMemoryMmap::from_ranges_with_files([(
            GuestAddress(0),
            size as usize,
            Some(FileOffset::new(file, 0)),
        )])
        .map_err(|e| VirtioError::Memory(e.to_string()))?;

        let mut frontend = Frontend::connect(socket, 3).map_err(err("connect"))?;
        frontend.set_owner().map_err(err("SET_OWNER"))?;
        let offered = frontend.get_features().map_err(err("GET_FEATURES"))?;
        let mut want = bit(VIRTIO_F_VERSION_1)
            | bit(VIRTIO_NET_F_MAC)
            | bit(VIRTIO_NET_F_MTU)
            | VHOST_USER_F_PROTOCOL_FEATURES;
        if opts.mrg_rxbuf {
            want |= bit(VIRTIO_NET_F_MRG_RXBUF);
        }
        if opts.event_idx {
            want |= bit(VIRTIO_RING_F_EVENT_IDX);
        }
        if want_ctrl {
            want |= bit(VIRTIO_NET_F_CTRL_VQ) | bit(VIRTIO_NET_F_CTRL_RX);
        }
        if pairs > 1 {
            want |= bit(VIRTIO_NET_F_MQ);
        }
        if opts.tso {
            want |= TSO_WANTED;
        }
        let features = offered & want;
        let missing = |what: &str| VirtioError::Frontend {
            socket: socket.to_path_buf(),
            step: "GET_FEATURES",
            reason: format!("the backend does not offer {what}"),
        };
        if features & bit(VIRTIO_F_VERSION_1) == 0 {
            return Err(missing("VIRTIO_F_VERSION_1"));
        }
        if want_ctrl && features & bit(VIRTIO_NET_F_CTRL_VQ) == 0 {
            return Err(missing("VIRTIO_NET_F_CTRL_VQ"));
        }
        if pairs > 1 && features & bit(VIRTIO_NET_F_MQ) == 0 {
            return Err(missing("VIRTIO_NET_F_MQ (more than one queue pair)"));
        }
        let mut proto = VhostUserProtocolFeatures::empty();
        if features & VHOST_USER_F_PROTOCOL_FEATURES != 0 {
            let p = frontend
                .get_protocol_features()
                .map_err(err("GET_PROTOCOL_FEATURES"))?;
            proto = p
                & (VhostUserProtocolFeatures::CONFIG
                    | VhostUserProtocolFeatures::REPLY_ACK
                    | VhostUserProtocolFeatures::MQ);
            frontend
                .set_protocol_features(proto)
                .map_err(err("SET_PROTOCOL_FEATURES"))?;
            if proto.contains(VhostUserProtocolFeatures::MQ) {
                frontend.get_queue_num().map_err(err("GET_QUEUE_NUM"))?;
            }
            if proto.contains(VhostUserProtocolFeatures::REPLY_ACK) {
                // Every later request waits for the backend's ack, so `connect` returns
                // only once the backend has applied the whole setup.
                frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
            }
        }
        // With MQ the control queue follows max_virtqueue_pairs pairs (virtio 1.2,
        // 5.1.2): read that from the config space.
        let max_pairs = if features & bit(VIRTIO_NET_F_MQ) != 0 {
            if !proto.contains(VhostUserProtocolFeatures::CONFIG) {
                return Err(missing(
                    "VHOST_USER_PROTOCOL_F_CONFIG (to read max_virtqueue_pairs)",
                ));
            }
            let (_, b) = frontend
                .get_config(8, 2, VhostUserConfigFlags::WRITABLE, &[0u8; 2])
                .map_err(err("GET_CONFIG"))?;
            let n = b.get(..2).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
            if n < pairs {
                return Err(VirtioError::Frontend {
                    socket: socket.to_path_buf(),
                    step: "GET_CONFIG",
                    reason: format!("the backend has {n} queue pairs, {pairs} asked for"),
                });
            }
            n
        } else {
            1
        };
        frontend
            .set_features(features)
            .map_err(err("SET_FEATURES"))?;
        let regions: Vec<VhostUserMemoryRegionInfo> = mem
            .iter()
            .map(VhostUserMemoryRegionInfo::from_guest_region)
            .collect::<Result<_, _>>()
            .map_err(err("memory region"))?;
        frontend
            .set_mem_table(&regions)
            .map_err(err("SET_MEM_TABLE"))?;

        let new_fd = || EventFd::new(EFD_NONBLOCK).map_err(VirtioError::Eventfd);
        let mut rings = Vec::with_capacity(nrings);
        for (i, &(desc, avail, used, bufs)) in layout.iter().enumerate() {
            let index = if i < 2 * usize::from(pairs) {
                i
            } else {
                2 * usize::from(max_pairs)
            };
            let is_tx = i % 2 == 1 || i >= 2 * usize::from(pairs);
            rings.push(Ring {
                index,
                desc,
                avail,
                used,
                bufs,
                avail_idx: Wrapping(0),
                last_used: Wrapping(0),
                free: if is_tx {
                    (0..qsize).rev().collect()
                } else {
                    Vec::new()
                },
                links: vec![NO_LINK; usize::from(qsize)],
                kick: new_fd()?,
                call: new_fd()?,
            });
        }
        for r in &rings {
            set_up_vring(&mut frontend, socket, &mem, qsize, r)?;
        }
        if features & VHOST_USER_F_PROTOCOL_FEATURES != 0 {
            for r in &rings {
                frontend
                    .set_vring_enable(r.index, true)
                    .map_err(err("SET_VRING_ENABLE"))?;
            }
        }
        let mac = if proto.contains(VhostUserProtocolFeatures::CONFIG)
            && features & bit(VIRTIO_NET_F_MAC) != 0
        {
            frontend
                .get_config(0, 6, VhostUserConfigFlags::WRITABLE, &[0u8; 6])
                .ok()
                .and_then(|(_, b)| <[u8; 6]>::try_from(b.as_slice()).ok())
        } else {
            None
        };
        let epoll = Epoll::new().map_err(VirtioError::Eventfd)?;
        for (i, r) in rings.iter().enumerate() {
            epoll
                .ctl(
                    ControlOperation::Add,
                    r.call.as_raw_fd(),
                    EpollEvent::new(EventSet::IN, i as u64),
                )
                .map_err(VirtioError::Eventfd)?;
        }
        let hdr_len = vnet_hdr::LEN;
        let mut me = Self {
            socket: socket.to_path_buf(),
            frontend,
            mem,
            qsize,
            buf_size: opts.buf_size,
            features,
            hdr_len,
            rings,
            pairs,
            ctrl: want_ctrl.then_some(2 * usize::from(pairs)),
            max_pairs,
            epoll,
            scratch: vec![0u8; 65_536 + 1024 + hdr_len],
            mac,
            stats: FrontendStats::default(),
        };
        for p in 0..pairs {
            me.post_all_rx(2 * usize::from(p))?;
        }
        Ok(me)
    }

    /// Features both sides agreed on.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// The MAC the backend announced in its config space, if it did.
    pub fn mac(&self) -> Option<[u8; 6]> {
        self.mac
    }

    /// Queue pairs set up.
    pub fn pairs(&self) -> u16 {
        self.pairs
    }

    /// The backend's `max_virtqueue_pairs` (1 without MQ).
    pub fn max_pairs(&self) -> u16 {
        self.max_pairs
    }

    /// Counters.
    pub fn stats(&self) -> FrontendStats {
        self.stats
    }

    fn event_idx(&self) -> bool {
        self.features & bit(VIRTIO_RING_F_EVENT_IDX) != 0
    }

    fn mrg(&self) -> bool {
        self.features & bit(VIRTIO_NET_F_MRG_RXBUF) != 0
    }

    fn mem_err(e: vm_memory::GuestMemoryError) -> VirtioError {
        VirtioError::Memory(e.to_string())
    }

    fn buf_addr(&self, q: usize, id: u16) -> u64 {
        self.rings[q].bufs + u64::from(id) * u64::from(self.buf_size)
    }

    fn write_desc(&self, q: usize, id: u16, len: u32, flags: u16) -> Result<(), VirtioError> {
        let d = Descriptor::new(self.buf_addr(q, id), len, flags, 0);
        self.mem
            .write_obj(d, GuestAddress(self.rings[q].desc + 16 * u64::from(id)))
            .map_err(Self::mem_err)
    }

    fn push_avail(&mut self, q: usize, id: u16) -> Result<(), VirtioError> {
        let r = &mut self.rings[q];
        let slot = u64::from(r.avail_idx.0 % self.qsize);
        self.mem
            .write_obj(id.to_le(), GuestAddress(r.avail + 4 + 2 * slot))
            .map_err(Self::mem_err)?;
        r.avail_idx += Wrapping(1);
        Ok(())
    }

    /// Publishes the avail index and kicks unless the backend suppressed it.
    fn publish(&mut self, q: usize, old: Wrapping<u16>) -> Result<(), VirtioError> {
        let r = &self.rings[q];
        self.mem
            .store(
                r.avail_idx.0.to_le(),
                GuestAddress(r.avail + 2),
                Ordering::Release,
            )
            .map_err(Self::mem_err)?;
        std::sync::atomic::fence(Ordering::SeqCst);
        let kick = if self.event_idx() {
            // virtio 1.2, 2.7.10: kick if avail_event lies in (old, new].
            let ev: u16 = self
                .mem
                .load(
                    GuestAddress(r.used + 4 + 8 * u64::from(self.qsize)),
                    Ordering::Acquire,
                )
                .map_err(Self::mem_err)?;
            let ev = Wrapping(u16::from_le(ev));
            (r.avail_idx - ev - Wrapping(1)).0 < (r.avail_idx - old).0
        } else {
            let flags: u16 = self
                .mem
                .load(GuestAddress(r.used), Ordering::Acquire)
                .map_err(Self::mem_err)?;
            u16::from_le(flags) & 1 == 0
        };
        if kick {
            r.kick.write(1).map_err(VirtioError::Eventfd)?;
            self.stats.kicks += 1;
        }
        Ok(())
    }

    fn post_all_rx(&mut self, q: usize) -> Result<(), VirtioError> {
        let old = self.rings[q].avail_idx;
        for id in 0..self.qsize {
            self.write_desc(q, id, self.buf_size, VRING_DESC_F_WRITE as u16)?;
            self.push_avail(q, id)?;
        }
        self.publish(q, old)
    }

    /// Used entries ready on ring `q`.
    fn used_pending(&self, q: usize) -> Result<u16, VirtioError> {
        let r = &self.rings[q];
        let idx: u16 = self
            .mem
            .load(GuestAddress(r.used + 2), Ordering::Acquire)
            .map_err(Self::mem_err)?;
        Ok((Wrapping(u16::from_le(idx)) - r.last_used).0)
    }

    /// Reads used entry `last_used` of ring `q` and advances; returns (id, len).
    fn pop_used(&mut self, q: usize) -> Result<(u16, u32), VirtioError> {
        let r = &mut self.rings[q];
        let slot = u64::from(r.last_used.0 % self.qsize);
        let at = GuestAddress(r.used + 4 + 8 * slot);
        let id: u32 = self.mem.read_obj(at).map_err(Self::mem_err)?;
        let len: u32 = self
            .mem
            .read_obj(at.unchecked_add(4))
            .map_err(Self::mem_err)?;
        r.last_used += Wrapping(1);
        Ok((u32::from_le(id) as u16, u32::from_le(len)))
    }

    /// Tells the backend which used index we want a call at (EVENT_IDX).
    fn set_used_event(&self, q: usize) -> Result<(), VirtioError> {
        if self.event_idx() {
            let r = &self.rings[q];
            self.mem
                .store(
                    r.last_used.0.to_le(),
                    GuestAddress(r.avail + 4 + 2 * u64::from(self.qsize)),
                    Ordering::Release,
                )
                .map_err(Self::mem_err)?;
        }
        Ok(())
    }

    fn reclaim(&mut self, q: usize) -> Result<(), VirtioError> {
        let n = self.used_pending(q)?;
        let qsize = usize::from(self.qsize);
        for _ in 0..n {
            let (id, _) = self.pop_used(q)?;
            let r = &mut self.rings[q];
            if id >= self.qsize || r.free.len() >= qsize {
                self.stats.bad_used += 1;
                continue;
            }
            // Free the whole chain; a hand-made chain may span several ids.
            let mut id = id;
            for _ in 0..qsize {
                r.free.push(id);
                let next = std::mem::replace(&mut r.links[usize::from(id)], NO_LINK);
                if next == NO_LINK || r.free.len() >= qsize {
                    break;
                }
                id = next;
            }
        }
        self.set_used_event(q)
    }

    /// The ring of pair `pair`'s queue (`RX_QUEUE` or `TX_QUEUE`), or an error.
    fn ring_of(&self, pair: u16, which: usize) -> Result<usize, VirtioError> {
        if pair >= self.pairs {
            return Err(VirtioError::Frontend {
                socket: self.socket.clone(),
                step: "queue pair",
                reason: format!("pair {pair} asked for, {} set up", self.pairs),
            });
        }
        Ok(2 * usize::from(pair) + which)
    }

    /// Kicks pair `pair`'s queue (`RX_QUEUE` or `TX_QUEUE`) without posting anything,
    /// as a driver may: for testing that a kick alone reaches the backend.
    pub fn kick(&mut self, pair: u16, which: usize) -> Result<(), VirtioError> {
        let q = self.ring_of(pair, which)?;
        self.rings[q].kick.write(1).map_err(VirtioError::Eventfd)?;
        self.stats.kicks += 1;
        Ok(())
    }

    /// A copy (`dup`) of the kick eventfd of pair `pair`'s queue (`RX_QUEUE` or
    /// `TX_QUEUE`), which outlives the connection: for testing what a backend does when
    /// a stale one fires.
    pub fn kick_fd(&self, pair: u16, which: usize) -> Result<EventFd, VirtioError> {
        let q = self.ring_of(pair, which)?;
        self.rings[q].kick.try_clone().map_err(VirtioError::Eventfd)
    }

    /// Gives the backend a fresh kick eventfd for pair `pair`'s queue (`RX_QUEUE` or
    /// `TX_QUEUE`) with `SET_VRING_KICK`, as a frontend may at any time, and returns the
    /// old one, which this driver no longer kicks.
    pub fn replace_kick(&mut self, pair: u16, which: usize) -> Result<EventFd, VirtioError> {
        let q = self.ring_of(pair, which)?;
        let fresh = EventFd::new(EFD_NONBLOCK).map_err(VirtioError::Eventfd)?;
        self.frontend
            .set_vring_kick(self.rings[q].index, &fresh)
            .map_err(|e| VirtioError::Frontend {
                socket: self.socket.clone(),
                step: "SET_VRING_KICK",
                reason: e.to_string(),
            })?;
        Ok(std::mem::replace(&mut self.rings[q].kick, fresh))
    }

    /// Stops pair `pair`'s queue (`RX_QUEUE` or `TX_QUEUE`) with GET_VRING_BASE and sets
    /// it up again from index 0 with empty rings, as a driver resetting one queue does;
    /// returns the base the backend reported. Transmit chains the backend had not
    /// returned are forgotten (every slot is free again), receive buffers posted anew.
    pub fn restart_queue(&mut self, pair: u16, which: usize) -> Result<u16, VirtioError> {
        let q = self.ring_of(pair, which)?;
        let index = self.rings[q].index;
        let base = self
            .frontend
            .get_vring_base(index)
            .map_err(|e| VirtioError::Frontend {
                socket: self.socket.clone(),
                step: "GET_VRING_BASE",
                reason: e.to_string(),
            })?;
        let qsize = self.qsize;
        let r = &mut self.rings[q];
        for at in [r.avail + 2, r.used + 2] {
            self.mem
                .store(0u16, GuestAddress(at), Ordering::Release)
                .map_err(Self::mem_err)?;
        }
        r.avail_idx = Wrapping(0);
        r.last_used = Wrapping(0);
        if which == TX_QUEUE {
            r.free = (0..qsize).rev().collect();
        }
        r.links.fill(NO_LINK);
        set_up_vring(
            &mut self.frontend,
            &self.socket,
            &self.mem,
            qsize,
            &self.rings[q],
        )?;
        if self.features & VHOST_USER_F_PROTOCOL_FEATURES != 0 {
            self.frontend
                .set_vring_enable(index, true)
                .map_err(|e| VirtioError::Frontend {
                    socket: self.socket.clone(),
                    step: "SET_VRING_ENABLE",
                    reason: e.to_string(),
                })?;
        }
        if which == RX_QUEUE {
            self.post_all_rx(q)?;
        }
        Ok(base as u16)
    }

    /// Posts one hand-made transmit chain on pair 0, valid or not, and kicks: for
    /// testing how a backend copes with a misbehaving driver. Each descriptor takes a
    /// free transmit slot; `Ok(false)` when there are not enough free slots.
    pub fn post_raw_tx_chain(&mut self, descs: &[RawDesc]) -> Result<bool, VirtioError> {
        let q = TX_QUEUE;
        self.reclaim(q)?;
        if descs.is_empty() || descs.len() > self.rings[q].free.len() {
            return Ok(false);
        }
        let free = &mut self.rings[q].free;
        let start = free.len() - descs.len();
        let ids: Vec<u16> = free.drain(start..).rev().collect();
        for (i, d) in descs.iter().enumerate() {
            let id = ids[i];
            let own = self.buf_addr(q, id);
            if d.addr.is_none() {
                // A valid, zeroed virtio-net header and frame.
                let n = (d.len as usize).min(self.buf_size as usize);
                self.mem
                    .write_slice(&vec![0u8; n], GuestAddress(own))
                    .map_err(Self::mem_err)?;
            }
            let next = match d.next {
                RawNext::End => 0,
                RawNext::Index(n) => ids.get(usize::from(n)).copied().unwrap_or(n),
                RawNext::Raw(n) => n,
            };
            let desc = Descriptor::new(d.addr.unwrap_or(own), d.len, d.flags, next);
            self.mem
                .write_obj(desc, GuestAddress(self.rings[q].desc + 16 * u64::from(id)))
                .map_err(Self::mem_err)?;
            self.rings[q].links[usize::from(id)] = ids.get(i + 1).copied().unwrap_or(NO_LINK);
        }
        let old = self.rings[q].avail_idx;
        self.push_avail(q, ids[0])?;
        self.publish(q, old)?;
        Ok(true)
    }

    /// Queues as many of `frames` as there are free transmit buffers on pair 0 (each
    /// frame gets a zeroed virtio-net header) and kicks once. Returns how many were
    /// queued.
    pub fn send<F: AsRef<[u8]>>(&mut self, frames: &[F]) -> Result<usize, VirtioError> {
        self.send_with(0, &OffloadMeta::default(), frames)
    }

    /// [`VirtioUser::send`] on queue pair `pair`, every frame with the virtio-net header
    /// for `meta` (a TSO or partial-checksum request, as a guest driver would set it).
    pub fn send_with<F: AsRef<[u8]>>(
        &mut self,
        pair: u16,
        meta: &OffloadMeta,
        frames: &[F],
    ) -> Result<usize, VirtioError> {
        let q = self.ring_of(pair, TX_QUEUE)?;
        self.reclaim(q)?;
        let old = self.rings[q].avail_idx;
        let room = self.buf_size as usize - self.hdr_len;
        let mut hdr = [0u8; vnet_hdr::LEN];
        vnet_hdr::emit(meta, 0, &mut hdr).map_err(|e| VirtioError::Memory(e.to_string()))?;
        let mut sent = 0;
        for f in frames {
            let f = f.as_ref();
            if f.len() > room {
                return Err(VirtioError::FrameTooLarge { len: f.len(), room });
            }
            let Some(id) = self.rings[q].free.pop() else {
                break;
            };
            let buf = self.buf_addr(q, id);
            self.mem
                .write_slice(&hdr[..self.hdr_len], GuestAddress(buf))
                .map_err(Self::mem_err)?;
            self.mem
                .write_slice(f, GuestAddress(buf + self.hdr_len as u64))
                .map_err(Self::mem_err)?;
            self.write_desc(q, id, (self.hdr_len + f.len()) as u32, 0)?;
            self.push_avail(q, id)?;
            sent += 1;
        }
        if sent > 0 {
            self.publish(q, old)?;
            self.stats.tx_packets += sent as u64;
        }
        Ok(sent)
    }

    /// Transmit buffers of pair `pair` the backend has not returned yet (after taking
    /// back those it has): 0 once it is done with every frame sent.
    pub fn tx_pending(&mut self, pair: u16) -> Result<usize, VirtioError> {
        let q = self.ring_of(pair, TX_QUEUE)?;
        self.reclaim(q)?;
        Ok(usize::from(self.qsize) - self.rings[q].free.len())
    }

    /// Hands every received frame of pair 0 (without its header) to `f`, reposts the
    /// buffers and returns how many frames there were.
    pub fn recv(&mut self, mut f: impl FnMut(&[u8])) -> Result<usize, VirtioError> {
        self.recv_with(0, |_, frame| f(frame))
    }

    /// [`VirtioUser::recv`] on queue pair `pair`, with each frame's offload metadata
    /// (the virtio-net header the backend wrote: TSO request, checksum flags).
    pub fn recv_with(
        &mut self,
        pair: u16,
        mut f: impl FnMut(&OffloadMeta, &[u8]),
    ) -> Result<usize, VirtioError> {
        let q = self.ring_of(pair, RX_QUEUE)?;
        let mut frames = 0;
        let old = self.rings[q].avail_idx;
        let mut pending = self.used_pending(q)?;
        let mut reposted = 0;
        while pending > 0 {
            let mut filled = 0usize;
            let mut bufs_left = 1u16;
            let mut first = true;
            let mut bad = false;
            while bufs_left > 0 && pending > 0 {
                let (id, len) = self.pop_used(q)?;
                pending -= 1;
                if id >= self.qsize || len > self.buf_size {
                    self.stats.bad_used += 1;
                    bad = true;
                    break;
                }
                let buf = self.buf_addr(q, id);
                let len = len as usize;
                if filled + len <= self.scratch.len() {
                    self.mem
                        .read_slice(&mut self.scratch[filled..filled + len], GuestAddress(buf))
                        .map_err(Self::mem_err)?;
                    filled += len;
                } else {
                    bad = true;
                }
                if first {
                    first = false;
                    if self.mrg() && filled >= self.hdr_len {
                        bufs_left = u16::from_le_bytes([self.scratch[10], self.scratch[11]]).max(1);
                    }
                }
                bufs_left -= 1;
                self.push_avail(q, id)?;
                reposted += 1;
            }
            if bad || filled < self.hdr_len {
                self.stats.bad_used += 1;
                continue;
            }
            let mut raw = [0u8; vnet_hdr::LEN];
            raw[..self.hdr_len].copy_from_slice(&self.scratch[..self.hdr_len]);
            let meta = VirtioNetHdr::read_from_bytes(&raw)
                .map(|h| h.to_meta())
                .unwrap_or_default();
            let frame = &self.scratch[self.hdr_len..filled];
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += frame.len() as u64;
            f(&meta, frame);
            frames += 1;
            if pending == 0 {
                pending = self.used_pending(q)?;
            }
        }
        if reposted > 0 {
            self.publish(q, old)?;
        }
        self.set_used_event(q)?;
        Ok(frames)
    }

    /// Sends one control-queue command (`class`, `command`, `data`; virtio 1.2,
    /// 5.1.6.5) and waits up to `timeout` for the backend's ack byte (`0` OK, `1` ERR).
    pub fn ctrl(
        &mut self,
        class: u8,
        command: u8,
        data: &[u8],
        timeout: Duration,
    ) -> Result<u8, VirtioError> {
        let socket = self.socket.clone();
        let fail = |reason: String| VirtioError::Frontend {
            socket: socket.clone(),
            step: "control queue",
            reason,
        };
        let Some(q) = self.ctrl else {
            return Err(fail(
                "no control queue: connect with ctrl_vq or more than one pair".into(),
            ));
        };
        if data.len() + 2 + 1 > self.buf_size as usize {
            return Err(fail(format!(
                "{} bytes of command data do not fit",
                data.len()
            )));
        }
        self.reclaim(q)?;
        if self.rings[q].free.len() < 2 {
            return Err(fail("an earlier command is still outstanding".into()));
        }
        let (Some(cmd_id), Some(ack_id)) = (self.rings[q].free.pop(), self.rings[q].free.pop())
        else {
            return Err(fail("no free descriptors".into()));
        };
        let cmd = self.buf_addr(q, cmd_id);
        let ack = self.buf_addr(q, ack_id);
        let mut bytes = vec![class, command];
        bytes.extend_from_slice(data);
        self.mem
            .write_slice(&bytes, GuestAddress(cmd))
            .map_err(Self::mem_err)?;
        self.mem
            .write_slice(&[0xff], GuestAddress(ack))
            .map_err(Self::mem_err)?;
        let desc = self.rings[q].desc;
        let d0 = Descriptor::new(cmd, bytes.len() as u32, VRING_DESC_F_NEXT as u16, ack_id);
        let d1 = Descriptor::new(ack, 1, VRING_DESC_F_WRITE as u16, 0);
        self.mem
            .write_obj(d0, GuestAddress(desc + 16 * u64::from(cmd_id)))
            .map_err(Self::mem_err)?;
        self.mem
            .write_obj(d1, GuestAddress(desc + 16 * u64::from(ack_id)))
            .map_err(Self::mem_err)?;
        self.rings[q].links[usize::from(cmd_id)] = ack_id;
        let old = self.rings[q].avail_idx;
        self.push_avail(q, cmd_id)?;
        self.publish(q, old)?;
        let deadline = std::time::Instant::now() + timeout;
        while self.used_pending(q)? == 0 {
            if std::time::Instant::now() >= deadline {
                let r = &self.rings[q];
                let used: u16 = self
                    .mem
                    .load(GuestAddress(r.used + 2), Ordering::Acquire)
                    .map_err(Self::mem_err)?;
                return Err(fail(format!(
                    "no answer within {timeout:?} (ring {}: avail {}, used {}, consumed {})",
                    r.index, r.avail_idx, used, r.last_used
                )));
            }
            self.wait(Duration::from_millis(20))?;
        }
        let (_, len) = {
            // Peek at the entry; `reclaim` frees the chain.
            let r = &self.rings[q];
            let slot = u64::from(r.last_used.0 % self.qsize);
            let at = GuestAddress(r.used + 4 + 8 * slot);
            let len: u32 = self
                .mem
                .read_obj(at.unchecked_add(4))
                .map_err(Self::mem_err)?;
            ((), u32::from_le(len))
        };
        self.reclaim(q)?;
        if len != 1 {
            return Err(fail(format!(
                "the backend answered with {len} bytes, not 1"
            )));
        }
        self.mem
            .read_obj::<u8>(GuestAddress(ack))
            .map_err(Self::mem_err)
    }

    /// Waits until the backend signals a queue or `timeout` passes.
    pub fn wait(&self, timeout: Duration) -> Result<(), VirtioError> {
        let mut ev = [EpollEvent::default(); 8];
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        match self.epoll.wait(ms, &mut ev) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(VirtioError::Eventfd(e)),
        }
        for r in &self.rings {
            let _ = r.call.read();
        }
        Ok(())
    }

    /// Receives on pair 0 until `count` frames arrived or `deadline` passed; returns
    /// frames seen.
    pub fn recv_until(
        &mut self,
        count: u64,
        deadline: std::time::Instant,
        mut f: impl FnMut(&[u8]),
    ) -> Result<u64, VirtioError> {
        let mut got = 0u64;
        while got < count && std::time::Instant::now() < deadline {
            let n = self.recv(&mut f)?;
            got += n as u64;
            if n == 0 {
                self.wait(Duration::from_millis(20))?;
            }
        }
        Ok(got)
    }
}
