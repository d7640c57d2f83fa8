//! [`VirtioUser`]: our own vhost-user frontend. It plays the guest's virtio-net driver
//! without a VM: shared memory from a memfd, two split rings (receive and transmit) laid
//! out in it, frames sent and received in batches. Benches and tests use it as a traffic
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

use offload::vnet_hdr;
use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserHeaderFlag, VhostUserProtocolFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

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
}

impl Default for VirtioUserOptions {
    fn default() -> Self {
        Self {
            queue_size: 256,
            buf_size: 2048,
            event_idx: true,
            mrg_rxbuf: true,
        }
    }
}

/// Guest-physical layout of one split ring and its buffers.
#[derive(Debug, Clone, Copy)]
struct Ring {
    desc: u64,
    avail: u64,
    used: u64,
    bufs: u64,
    /// Next avail index we publish.
    avail_idx: Wrapping<u16>,
    /// Next used index we consume.
    last_used: Wrapping<u16>,
}

/// Marks the end of a hand-made chain in `VirtioUser::tx_links`.
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

/// A virtio-net driver over vhost-user without a VM.
pub struct VirtioUser {
    socket: PathBuf,
    // Held for the connection: dropping it disconnects from the backend.
    _frontend: Frontend,
    mem: GuestMemoryMmap,
    qsize: u16,
    buf_size: u32,
    features: u64,
    hdr_len: usize,
    rings: [Ring; 2],
    kick: [EventFd; 2],
    call: [EventFd; 2],
    epoll: Epoll,
    tx_free: Vec<u16>,
    /// For hand-made chains ([`VirtioUser::post_raw_tx_chain`]): the next descriptor id
    /// of the chain that owns each id, [`NO_LINK`] for the last or a single one.
    tx_links: Vec<u16>,
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
        let q = u64::from(qsize);
        // Layout per ring: descriptors, avail (flags, idx, ring, used_event), used
        // (flags, idx, ring, avail_event), then the buffers.
        let mut at = 0u64;
        let mut rings = [Ring {
            desc: 0,
            avail: 0,
            used: 0,
            bufs: 0,
            avail_idx: Wrapping(0),
            last_used: Wrapping(0),
        }; 2];
        for r in &mut rings {
            r.desc = at;
            r.avail = align(r.desc + 16 * q, 4096);
            r.used = align(r.avail + 6 + 2 * q, 4096);
            r.bufs = align(r.used + 6 + 8 * q, 4096);
            at = align(r.bufs + q * u64::from(opts.buf_size), 4096);
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

        let mut frontend = Frontend::connect(socket, 2).map_err(err("connect"))?;
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
        let features = offered & want;
        if features & bit(VIRTIO_F_VERSION_1) == 0 {
            return Err(VirtioError::Frontend {
                socket: socket.to_path_buf(),
                step: "GET_FEATURES",
                reason: "the backend does not offer VIRTIO_F_VERSION_1".into(),
            });
        }
        let mut proto = VhostUserProtocolFeatures::empty();
        if features & VHOST_USER_F_PROTOCOL_FEATURES != 0 {
            let p = frontend
                .get_protocol_features()
                .map_err(err("GET_PROTOCOL_FEATURES"))?;
            proto = p & (VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::REPLY_ACK);
            frontend
                .set_protocol_features(proto)
                .map_err(err("SET_PROTOCOL_FEATURES"))?;
            if proto.contains(VhostUserProtocolFeatures::REPLY_ACK) {
                // Every later request waits for the backend's ack, so `connect` returns
                // only once the backend has applied the whole setup.
                frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
            }
        }
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
        let kick = [new_fd()?, new_fd()?];
        let call = [new_fd()?, new_fd()?];
        let host = |gpa: u64| -> Result<u64, VirtioError> {
            mem.get_host_address(GuestAddress(gpa))
                .map(|p| p as u64)
                .map_err(|e| VirtioError::Memory(e.to_string()))
        };
        for (i, r) in rings.iter().enumerate() {
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
                .set_vring_call(i, &call[i])
                .map_err(err("SET_VRING_CALL"))?;
            frontend
                .set_vring_kick(i, &kick[i])
                .map_err(err("SET_VRING_KICK"))?;
        }
        if features & VHOST_USER_F_PROTOCOL_FEATURES != 0 {
            for i in 0..2 {
                frontend
                    .set_vring_enable(i, true)
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
        for (i, c) in call.iter().enumerate() {
            epoll
                .ctl(
                    ControlOperation::Add,
                    c.as_raw_fd(),
                    EpollEvent::new(EventSet::IN, i as u64),
                )
                .map_err(VirtioError::Eventfd)?;
        }
        let hdr_len = vnet_hdr::LEN;
        let mut me = Self {
            socket: socket.to_path_buf(),
            _frontend: frontend,
            mem,
            qsize,
            buf_size: opts.buf_size,
            features,
            hdr_len,
            rings,
            kick,
            call,
            epoll,
            tx_free: (0..qsize).rev().collect(),
            tx_links: vec![NO_LINK; usize::from(qsize)],
            scratch: vec![0u8; 65_536 + hdr_len],
            mac,
            stats: FrontendStats::default(),
        };
        me.post_all_rx()?;
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

    fn write_desc(&self, q: usize, id: u16, len: u32, flags: u16) -> Result<(), VirtioError> {
        let r = &self.rings[q];
        let buf = r.bufs + u64::from(id) * u64::from(self.buf_size);
        let d = Descriptor::new(buf, len, flags, 0);
        self.mem
            .write_obj(d, GuestAddress(r.desc + 16 * u64::from(id)))
            .map_err(Self::mem_err)
    }

    fn push_avail(&mut self, q: usize, id: u16) -> Result<(), VirtioError> {
        let r = self.rings[q];
        let slot = u64::from(r.avail_idx.0 % self.qsize);
        self.mem
            .write_obj(id.to_le(), GuestAddress(r.avail + 4 + 2 * slot))
            .map_err(Self::mem_err)?;
        self.rings[q].avail_idx += Wrapping(1);
        Ok(())
    }

    /// Publishes the avail index and kicks unless the backend suppressed it.
    fn publish(&mut self, q: usize, old: Wrapping<u16>) -> Result<(), VirtioError> {
        let r = self.rings[q];
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
            self.kick[q].write(1).map_err(VirtioError::Eventfd)?;
            self.stats.kicks += 1;
        }
        Ok(())
    }

    fn post_all_rx(&mut self) -> Result<(), VirtioError> {
        let old = self.rings[RX_QUEUE].avail_idx;
        for id in 0..self.qsize {
            self.write_desc(RX_QUEUE, id, self.buf_size, VRING_DESC_F_WRITE as u16)?;
            self.push_avail(RX_QUEUE, id)?;
        }
        self.publish(RX_QUEUE, old)
    }

    /// Used entries ready on queue `q`.
    fn used_pending(&self, q: usize) -> Result<u16, VirtioError> {
        let r = &self.rings[q];
        let idx: u16 = self
            .mem
            .load(GuestAddress(r.used + 2), Ordering::Acquire)
            .map_err(Self::mem_err)?;
        Ok((Wrapping(u16::from_le(idx)) - r.last_used).0)
    }

    /// Reads used entry `last_used` of queue `q` and advances; returns (id, len).
    fn pop_used(&mut self, q: usize) -> Result<(u16, u32), VirtioError> {
        let r = self.rings[q];
        let slot = u64::from(r.last_used.0 % self.qsize);
        let at = GuestAddress(r.used + 4 + 8 * slot);
        let id: u32 = self.mem.read_obj(at).map_err(Self::mem_err)?;
        let len: u32 = self
            .mem
            .read_obj(at.unchecked_add(4))
            .map_err(Self::mem_err)?;
        self.rings[q].last_used += Wrapping(1);
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

    fn reclaim_tx(&mut self) -> Result<(), VirtioError> {
        let n = self.used_pending(TX_QUEUE)?;
        for _ in 0..n {
            let (id, _) = self.pop_used(TX_QUEUE)?;
            if id >= self.qsize || self.tx_free.len() >= usize::from(self.qsize) {
                self.stats.bad_used += 1;
                continue;
            }
            // Free the whole chain; a hand-made chain may span several ids.
            let mut id = id;
            for _ in 0..self.qsize {
                self.tx_free.push(id);
                let next = std::mem::replace(&mut self.tx_links[usize::from(id)], NO_LINK);
                if next == NO_LINK || self.tx_free.len() >= usize::from(self.qsize) {
                    break;
                }
                id = next;
            }
        }
        self.set_used_event(TX_QUEUE)
    }

    /// Posts one hand-made transmit chain, valid or not, and kicks: for testing how a
    /// backend copes with a misbehaving driver. Each descriptor takes a free transmit
    /// slot; `Ok(false)` when there are not enough free slots.
    pub fn post_raw_tx_chain(&mut self, descs: &[RawDesc]) -> Result<bool, VirtioError> {
        self.reclaim_tx()?;
        if descs.is_empty() || descs.len() > self.tx_free.len() {
            return Ok(false);
        }
        let start = self.tx_free.len() - descs.len();
        let ids: Vec<u16> = self.tx_free.drain(start..).rev().collect();
        for (i, d) in descs.iter().enumerate() {
            let id = ids[i];
            let own = self.rings[TX_QUEUE].bufs + u64::from(id) * u64::from(self.buf_size);
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
            let r = &self.rings[TX_QUEUE];
            self.mem
                .write_obj(desc, GuestAddress(r.desc + 16 * u64::from(id)))
                .map_err(Self::mem_err)?;
            self.tx_links[usize::from(id)] = ids.get(i + 1).copied().unwrap_or(NO_LINK);
        }
        let old = self.rings[TX_QUEUE].avail_idx;
        self.push_avail(TX_QUEUE, ids[0])?;
        self.publish(TX_QUEUE, old)?;
        Ok(true)
    }

    /// Queues as many of `frames` as there are free transmit buffers (each frame gets a
    /// zeroed virtio-net header) and kicks once. Returns how many were queued.
    pub fn send<F: AsRef<[u8]>>(&mut self, frames: &[F]) -> Result<usize, VirtioError> {
        self.reclaim_tx()?;
        let old = self.rings[TX_QUEUE].avail_idx;
        let room = self.buf_size as usize - self.hdr_len;
        let mut sent = 0;
        for f in frames {
            let f = f.as_ref();
            if f.len() > room {
                return Err(VirtioError::FrameTooLarge { len: f.len(), room });
            }
            let Some(id) = self.tx_free.pop() else { break };
            let buf = self.rings[TX_QUEUE].bufs + u64::from(id) * u64::from(self.buf_size);
            self.mem
                .write_slice(&[0u8; vnet_hdr::LEN][..self.hdr_len], GuestAddress(buf))
                .map_err(Self::mem_err)?;
            self.mem
                .write_slice(f, GuestAddress(buf + self.hdr_len as u64))
                .map_err(Self::mem_err)?;
            self.write_desc(TX_QUEUE, id, (self.hdr_len + f.len()) as u32, 0)?;
            self.push_avail(TX_QUEUE, id)?;
            sent += 1;
        }
        if sent > 0 {
            self.publish(TX_QUEUE, old)?;
            self.stats.tx_packets += sent as u64;
        }
        Ok(sent)
    }

    /// Hands every received frame (without its header) to `f`, reposts the buffers and
    /// returns how many frames there were.
    pub fn recv(&mut self, mut f: impl FnMut(&[u8])) -> Result<usize, VirtioError> {
        let mut frames = 0;
        let old = self.rings[RX_QUEUE].avail_idx;
        let mut pending = self.used_pending(RX_QUEUE)?;
        let mut reposted = 0;
        while pending > 0 {
            let mut filled = 0usize;
            let mut bufs_left = 1u16;
            let mut first = true;
            let mut bad = false;
            while bufs_left > 0 && pending > 0 {
                let (id, len) = self.pop_used(RX_QUEUE)?;
                pending -= 1;
                if id >= self.qsize || len > self.buf_size {
                    self.stats.bad_used += 1;
                    bad = true;
                    break;
                }
                let buf = self.rings[RX_QUEUE].bufs + u64::from(id) * u64::from(self.buf_size);
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
                self.push_avail(RX_QUEUE, id)?;
                reposted += 1;
            }
            if bad || filled < self.hdr_len {
                self.stats.bad_used += 1;
                continue;
            }
            let frame = &self.scratch[self.hdr_len..filled];
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += frame.len() as u64;
            f(frame);
            frames += 1;
            if pending == 0 {
                pending = self.used_pending(RX_QUEUE)?;
            }
        }
        if reposted > 0 {
            self.publish(RX_QUEUE, old)?;
        }
        self.set_used_event(RX_QUEUE)?;
        Ok(frames)
    }

    /// Waits until the backend signals a queue or `timeout` passes.
    pub fn wait(&self, timeout: Duration) -> Result<(), VirtioError> {
        let mut ev = [EpollEvent::default(); 2];
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        match self.epoll.wait(ms, &mut ev) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(VirtioError::Eventfd(e)),
        }
        for c in &self.call {
            let _ = c.read();
        }
        Ok(())
    }

    /// Receives until `count` frames arrived or `deadline` passed; returns frames seen.
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
