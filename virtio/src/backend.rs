//! [`VhostUserPort`]: a guest's virtio-net interface, served over a vhost-user socket.
//!
//! Two sides share one `Shared` block:
//! - the protocol side (a thread per port, plus the rust-vmm `vhost-user-backend` worker
//!   thread of the current connection) accepts connections, handles the memory table and
//!   vring setup, and serves the control queue;
//! - the data side is the engine thread calling [`pkt::Port::rx_batch`] and
//!   [`pkt::Port::tx_batch`]. It works on the vrings directly, taking each vring's lock
//!   once per batch, never per frame.
//!
//! Queues: `pairs` receive/transmit pairs (receive queue `2p`, transmit `2p + 1`) and a
//! control queue after them. The one data thread polls the transmit queues of every
//! pair round-robin within a batch and picks a guest receive queue per flow by a hash of
//! its addresses and ports, so one flow stays on one queue. Which pairs are in use: the
//! number a `VQ_PAIRS_SET` on our control queue asked for, or, for a frontend that runs
//! the control queue itself (QEMU, DPDK's virtio-user), the pairs it enabled with
//! `SET_VRING_ENABLE`. The control queue is served on the vhost-user worker thread (it
//! is rare and small), never by the data thread.
//!
//! Offloads: the port always takes TSO frames and partial checksums from the engine
//! (its [`PortCaps`] say TSO4|TSO6|TX_CSUM). A guest that negotiated GUEST_TSO4/6 gets
//! such a frame whole with its virtio-net header; for one that did not, the port cuts
//! it into segments with `offload::gso` (full checksums), and completes partial
//! checksums for a guest without GUEST_CSUM. HOST_TSO4/6 (the guest sends 64 KiB
//! frames) is offered only when the packet buffers hold such a frame; the guest's TSO
//! request becomes the frame's offload metadata, which the engine carries whole over a
//! link that takes it or segments where needed.
//!
//! Wake-ups: the port's poll fd is an epoll set holding the guest's kick eventfds of
//! every data queue (edge-triggered) and a pipe for everything else (a connection came or
//! went, a queue was enabled). A guest kick makes the engine's poll return straight from
//! the kernel: one thread wake-up per guest-to-engine hop, not two (the worker thread
//! never sees a data kick). The vrings the rust-vmm handler keeps are `NetVring`s: when
//! the frontend sets a data queue's kick (`SET_VRING_KICK`, at any time), the new eventfd
//! goes into the epoll set, the old one out (before it is closed: a registration lives as
//! long as the file, which the frontend holds too), and the handler gets a stand-in
//! eventfd that never fires, so its worker keeps the queue's state without its kicks.
//! Nothing is read from a kick eventfd: edge-triggered entries leave the epoll's ready
//! list when the engine collects them ([`Port::clear_poll_fd`], one `epoll_wait` per
//! wake-up), so no syscall is spent while nothing happened and a blocking eventfd can
//! never block the engine. The epoll fd is never writable, so the engine polling it for
//! room (POLLOUT, see `Shared::wake`) sleeps until the guest kicks its receive queue.
//!
//! Hand-over: each connection gets a fresh `VhostUserDaemon`, fresh vrings and a fresh
//! guest memory map. The worker publishes them (an `Arc`-cloned set) into `Shared::slot`
//! and bumps `Shared::epoch`; the data side compares the epoch once per batch (one
//! atomic load) and re-reads the slot only when it changed. On disconnect the slot is
//! emptied and the epoch bumped again, so a guest that goes away never stalls the engine,
//! and its memory is unmapped once the data side lets go of its clone.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{
    Arc, Condvar, Mutex, OnceLock, PoisonError, RwLockReadGuard, RwLockWriteGuard, Weak,
};
use std::thread::JoinHandle;

use pkt::{Batch, DropCounter, Mempool, Offloads, Port, PortCaps, PortKind, PortStats};
use rustix::event::{EventfdFlags, PollFd, PollFlags, epoll, eventfd};
use vhost::vhost_user::Listener;
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{
    ShutdownHandle, VhostUserBackend, VhostUserDaemon, VringRwLock, VringState, VringStateGuard,
    VringStateMutGuard, VringT,
};
use virtio_queue::{Error as QueueError, QueueT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier,
};

use crate::chain::Chain;
use crate::ctrl::{self, CtrlCounters};
use crate::dataplane::{self, DROP_NAMES, Delivery, Drops, Traffic, drop};
use crate::error::VirtioError;
use crate::net::{self, MAX_QUEUE_PAIRS, MAX_QUEUE_SIZE, Negotiated, RX_QUEUE, TX_QUEUE};
use crate::tails::{self, TailCounters, TxTails};

/// Guest memory as the vhost-user backend maps it.
type Mem = GuestMemoryAtomic<GuestMemoryMmap>;

/// Frame size (Ethernet header and one VLAN tag included) the packet buffers must hold
/// for TSO to be offered: the largest IPv4 datagram. Linux guests keep a TSO frame, IPv6
/// included, within 64 KiB (`gso_max_size`); a larger one is dropped as
/// `bad_desc_too_long`, never truncated.
pub const MAX_TSO_FRAME: usize = 65_535 + 18;

/// How soon a sleeping engine looks for returned tails while some are out (they come
/// back when the port holding them sends, normally within the same round).
const TAIL_RECHECK: std::time::Duration = std::time::Duration::from_micros(200);

/// Names of the control-queue counters reported with the drops.
const CTRL_NAMES: [&str; 3] = ["ctrl_rejected", "ctrl_unknown_class", "ctrl_bad_chain"];

/// What one connection gives the data side.
#[derive(Clone)]
struct Conn {
    vrings: Vec<VringRwLock>,
    mem: Mem,
}

/// State shared by the protocol threads and the data side.
struct Shared {
    name: String,
    config: [u8; 12],
    /// Queue pairs offered.
    pairs: u16,
    /// Virtio features offered.
    features: u64,
    acked: AtomicU64,
    /// Pairs the guest asked for on our control queue; 0 until it did (then the pairs
    /// the frontend enabled are used).
    ctrl_pairs: AtomicU16,
    ctrl_counters: Mutex<CtrlCounters>,
    /// The engine's wake-up for what is not a guest kick (read end of a pipe, in the
    /// `poll` set): a connection came or went, a data queue was enabled. A pipe, not an
    /// eventfd, because the engine also polls for POLLOUT while it holds frames for the
    /// guest: an eventfd is always writable and would make it spin while the guest's
    /// receive ring is full, a pipe's read end never is (nor is an epoll fd), so the
    /// engine sleeps until the guest kicks (we ask for that kick when its ring runs dry).
    wake: OwnedFd,
    /// Write end of the wake-up pipe.
    wake_tx: OwnedFd,
    /// Set (after writing `wake`) when `wake` may be readable: the data side reads the
    /// pipe only then, so an idle poll costs no syscall.
    kicked: AtomicBool,
    /// The port's poll fd: an epoll set of `wake` (level-triggered, [`WAKE_TOKEN`]) and
    /// the kick eventfds of the data queues (edge-triggered, the queue index).
    poll: OwnedFd,
    /// The kicks of the current connection's queues, emptied from `poll` on disconnect.
    kicks: Mutex<Vec<Arc<Kick>>>,
    /// Asks the current worker to publish its vrings.
    grab: OwnedFd,
    /// Ends the accept loop.
    stop: OwnedFd,
    stopping: AtomicBool,
    epoch: AtomicU64,
    slot: Mutex<Option<Conn>>,
    /// Signalled when the worker has published a connection into `slot`.
    published: Condvar,
    pending_mem: Mutex<Option<Mem>>,
    shutdown: Mutex<Option<ShutdownHandle>>,
    connections: AtomicU64,
    /// Per queue: how many times the frontend stopped it (GET_VRING_BASE). The data
    /// side compares it with what it saw last, so a queue stopped and set up again
    /// between two of its batches still counts as reset: chains lent before the stop
    /// never go into the new ring.
    stops: [AtomicU32; QUEUES],
    /// Per queue: tails lent from it that are not back yet, as the data side last
    /// published it (under the queue's vring lock). A stop waits for 0.
    lent: [AtomicU32; QUEUES],
    /// Stops that gave up waiting for lent tails ([`VhostUserConfig::stop_wait`]).
    stop_timeouts: AtomicU64,
    /// How long a stop waits for lent tails ([`VhostUserConfig::stop_wait`]).
    stop_wait: std::time::Duration,
}

/// Queues of a port (receive and transmit of every pair).
const QUEUES: usize = 2 * MAX_QUEUE_PAIRS as usize;

/// Default of [`VhostUserConfig::stop_wait`].
pub const DEFAULT_STOP_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

impl Shared {
    fn poke(fd: &OwnedFd) {
        // A full counter (2^64-2) still wakes the reader; nothing else can fail here.
        let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
    }

    fn drain(fd: &OwnedFd) {
        let mut b = [0u8; 256];
        let _ = rustix::io::read(fd, &mut b);
    }

    /// Wakes the engine. The flag goes up after the write, so whoever clears the flag
    /// and then drains the pipe cannot leave a readable pipe behind unflagged.
    fn wake_engine(&self) {
        // A full pipe is already readable: nothing to do on EAGAIN.
        let _ = rustix::io::write(&self.wake_tx, &[1u8]);
        self.kicked.store(true, Ordering::Release);
    }

    /// Clears the engine's wake-up, with a syscall only when a kick came in.
    fn clear_wake(&self) {
        if self.kicked.swap(false, Ordering::AcqRel) {
            Self::drain(&self.wake);
        }
    }

    /// Index of the control queue for what the guest negotiated: after the offered
    /// pairs with MQ, else 2 (virtio 1.2, 5.1.2).
    fn ctrl_index(&self) -> Option<usize> {
        let neg = Negotiated::from_bits(self.acked.load(Ordering::Acquire));
        match (neg.ctrl_vq, neg.mq) {
            (false, _) => None,
            (true, true) => Some(net::ctrl_queue(self.pairs)),
            (true, false) => Some(2),
        }
    }

    /// Whether queue `q` carries frames (its kicks go to the engine): a receive or
    /// transmit queue of an offered pair that is not the control queue (queue 2 is the
    /// control queue of a guest without MQ). Decided when the kick is set: the frontend
    /// negotiates features before it sets up the vrings, and sets them up again after a
    /// change.
    fn is_data_queue(&self, q: usize) -> bool {
        q < 2 * usize::from(self.pairs) && Some(q) != self.ctrl_index()
    }

    /// Takes every kick eventfd of the connection out of the epoll set (disconnect).
    fn forget_kicks(&self) {
        let kicks = std::mem::take(&mut *self.kicks.lock().unwrap_or_else(PoisonError::into_inner));
        for k in kicks {
            k.forget(self);
        }
    }

    fn publish(&self, conn: Option<Conn>) {
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = conn;
        self.epoch.fetch_add(1, Ordering::Release);
        self.published.notify_all();
        self.wake_engine();
    }
}

/// The rust-vmm backend: protocol callbacks, no packet work.
#[derive(Clone)]
struct NetBackend {
    shared: Arc<Shared>,
}

impl VhostUserBackend for NetBackend {
    type Bitmap = ();
    type Vring = NetVring;

    fn num_queues(&self) -> usize {
        net::num_queues(self.shared.pairs)
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        self.shared.features
    }

    fn acked_features(&self, features: u64) {
        self.shared.acked.store(features, Ordering::Release);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
            | VhostUserProtocolFeatures::MQ
    }

    fn set_event_idx(&self, _enabled: bool) {
        // The vrings carry it; the data path asks the queue.
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        net::config_read(&self.shared.config, offset, size)
    }

    fn update_memory(&self, _mem: Mem) -> std::io::Result<()> {
        // The data side holds the same `GuestMemoryAtomic`, which the handler updates.
        Ok(())
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        // A bit mask per worker thread: one worker for every queue, so the hand-over sees
        // every vring. It answers the control queue and hears of a data queue only when
        // it is enabled; the data queues' kicks go to the engine (see `NetVring`).
        vec![(1u64 << net::num_queues(self.shared.pairs)) - 1]
    }

    fn stop_vring(&self, queue_index: u32) -> std::io::Result<()> {
        // GET_VRING_BASE: the frontend takes the ring back, so the device must be done
        // with its buffers (vhost-user-backend asks asynchronous backends to block here).
        let q = queue_index as usize;
        let (Some(stops), Some(lent)) = (self.shared.stops.get(q), self.shared.lent.get(q)) else {
            return Ok(());
        };
        stops.fetch_add(1, Ordering::AcqRel);
        if lent.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        // The data side returns tails on its next batch: make sure it runs.
        self.shared.wake_engine();
        let deadline = std::time::Instant::now() + self.shared.stop_wait;
        while lent.load(Ordering::Acquire) > 0 {
            if std::time::Instant::now() >= deadline {
                self.shared.stop_timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(interface = %self.shared.name, queue = q, tails = lent.load(Ordering::Relaxed), "queue stopped with transmit tails still out; their chains will not be returned");
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC).ok()
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[NetVring],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        if u64::from(device_event) == grab_event(self.shared.pairs) {
            Shared::drain(&self.shared.grab);
            let mem = self
                .shared
                .pending_mem
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(mem) = mem {
                // Before the frontend's first message: every kick it sets finds its place.
                let mut kicks = self
                    .shared
                    .kicks
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                kicks.clear();
                for (q, v) in vrings.iter().enumerate() {
                    let _ = v.kick.place.set((q, Arc::downgrade(&self.shared)));
                    kicks.push(Arc::clone(&v.kick));
                }
                drop(kicks);
                self.shared.publish(Some(Conn {
                    vrings: vrings.iter().map(|v| v.ring.clone()).collect(),
                    mem,
                }));
            }
        } else if Some(usize::from(device_event)) == self.shared.ctrl_index() {
            if let Some(v) = vrings.get(usize::from(device_event)) {
                serve_ctrl(&self.shared, &v.ring);
            }
        } else {
            // A data queue was enabled (the handler calls us for it: a kick may have come
            // while it was off), or its kick could not join the epoll set: the engine has
            // work (frames, or room for frames).
            self.shared.wake_engine();
        }
        Ok(())
    }
}

/// [`WAKE_TOKEN`]'s place in the port's epoll set: above every queue index.
const WAKE_TOKEN: u64 = u64::MAX;

/// The kick eventfd of one queue, as far as the engine's epoll set is concerned.
#[derive(Default)]
struct Kick {
    /// The queue's index and its port, set at the hand-over, before the frontend's
    /// first message.
    place: OnceLock<(usize, Weak<Shared>)>,
    /// The eventfd in the port's epoll set, if the queue carries frames and has one.
    fd: Mutex<Option<OwnedFd>>,
}

impl Kick {
    /// Takes the eventfd out of the epoll set and closes it.
    fn forget(&self, shared: &Shared) {
        if let Some(old) = self
            .fd
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            // Before closing: the registration lives as long as the file, and the frontend
            // holds it too.
            let _ = epoll::delete(&shared.poll, &old);
        }
    }
}

impl Drop for Kick {
    fn drop(&mut self) {
        if let Some(shared) = self.place.get().and_then(|(_, s)| s.upgrade()) {
            self.forget(&shared);
        }
    }
}

/// A vring as the rust-vmm handler keeps it ([`VringRwLock`]), whose kick eventfd, for a
/// queue that carries frames, goes into the port's epoll set instead: the handler gets
/// a stand-in eventfd that never fires, so its worker thread keeps the queue's state
/// (ready once kick and call are set, registered while enabled) but never wakes for a
/// kick. Everything but `set_kick` is the inner ring's.
#[derive(Clone)]
struct NetVring {
    ring: VringRwLock,
    kick: Arc<Kick>,
}

impl NetVring {
    /// Puts the frontend's new kick eventfd in place of the old one: into the epoll set
    /// for a data queue, to the handler for the control queue (or if the epoll set
    /// refuses it: the worker then turns its kicks into wake-ups).
    fn replace_kick(&self, shared: &Shared, q: usize, file: Option<File>) {
        let mut held = self.kick.fd.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = held.take() {
            let _ = epoll::delete(&shared.poll, &old);
        }
        let Some(file) = file else {
            self.ring.set_kick(None);
            return;
        };
        if !shared.is_data_queue(q) {
            self.ring.set_kick(Some(file));
            return;
        }
        let fd = OwnedFd::from(file);
        let stand_in = match eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(interface = %shared.name, queue = q, error = %e, "no stand-in kick eventfd; the queue's kicks go through the vhost-user worker");
                self.ring.set_kick(Some(File::from(fd)));
                return;
            }
        };
        let flags = epoll::EventFlags::IN | epoll::EventFlags::ET;
        match epoll::add(
            &shared.poll,
            &fd,
            epoll::EventData::new_u64(q as u64),
            flags,
        ) {
            Ok(()) => {
                *held = Some(fd);
                self.ring.set_kick(Some(File::from(stand_in)));
            }
            Err(e) => {
                tracing::warn!(interface = %shared.name, queue = q, error = %e, "kick eventfd refused by the epoll set; the queue's kicks go through the vhost-user worker");
                self.ring.set_kick(Some(File::from(fd)));
            }
        }
    }
}

impl<'a> VringStateGuard<'a, Mem> for NetVring {
    type G = RwLockReadGuard<'a, VringState<Mem>>;
}

impl<'a> VringStateMutGuard<'a, Mem> for NetVring {
    type G = RwLockWriteGuard<'a, VringState<Mem>>;
}

impl VringT<Mem> for NetVring {
    fn new(mem: Mem, max_queue_size: u16) -> Result<Self, QueueError> {
        Ok(Self {
            ring: VringRwLock::new(mem, max_queue_size)?,
            kick: Arc::default(),
        })
    }

    fn get_ref(&self) -> RwLockReadGuard<'_, VringState<Mem>> {
        self.ring.get_ref()
    }

    fn get_mut(&self) -> RwLockWriteGuard<'_, VringState<Mem>> {
        self.ring.get_mut()
    }

    fn add_used(&self, desc_index: u16, len: u32) -> Result<(), QueueError> {
        self.ring.add_used(desc_index, len)
    }

    fn signal_used_queue(&self) -> std::io::Result<()> {
        self.ring.signal_used_queue()
    }

    fn enable_notification(&self) -> Result<bool, QueueError> {
        self.ring.enable_notification()
    }

    fn disable_notification(&self) -> Result<(), QueueError> {
        self.ring.disable_notification()
    }

    fn needs_notification(&self) -> Result<bool, QueueError> {
        self.ring.needs_notification()
    }

    fn set_enabled(&self, enabled: bool) {
        self.ring.set_enabled(enabled);
    }

    fn set_queue_info(
        &self,
        desc_table: u64,
        avail_ring: u64,
        used_ring: u64,
    ) -> Result<(), QueueError> {
        self.ring.set_queue_info(desc_table, avail_ring, used_ring)
    }

    fn queue_next_avail(&self) -> u16 {
        self.ring.queue_next_avail()
    }

    fn set_queue_next_avail(&self, base: u16) {
        self.ring.set_queue_next_avail(base);
    }

    fn set_queue_next_used(&self, idx: u16) {
        self.ring.set_queue_next_used(idx);
    }

    fn queue_used_idx(&self) -> Result<u16, QueueError> {
        self.ring.queue_used_idx()
    }

    fn set_queue_size(&self, num: u16) {
        self.ring.set_queue_size(num);
    }

    fn set_queue_event_idx(&self, enabled: bool) {
        self.ring.set_queue_event_idx(enabled);
    }

    fn set_queue_ready(&self, ready: bool) {
        self.ring.set_queue_ready(ready);
    }

    fn set_kick(&self, file: Option<File>) {
        match self
            .kick
            .place
            .get()
            .and_then(|(q, s)| Some((*q, s.upgrade()?)))
        {
            Some((q, shared)) => self.replace_kick(&shared, q, file),
            // Not handed over (cannot happen: the hand-over precedes the first message):
            // the worker takes the kicks.
            None => self.ring.set_kick(file),
        }
    }

    fn read_kick(&self) -> std::io::Result<bool> {
        self.ring.read_kick()
    }

    fn set_call(&self, file: Option<File>) {
        self.ring.set_call(file);
    }

    fn set_err(&self, file: Option<File>) {
        self.ring.set_err(file);
    }
}

/// `device_event` of our hand-over eventfd (`register_listener` reserves 0..=num_queues).
fn grab_event(pairs: u16) -> u64 {
    net::num_queues(pairs) as u64 + 1
}

/// Answers the commands on the control queue (vhost-user worker thread).
fn serve_ctrl(shared: &Shared, vring: &VringRwLock) {
    let Some(mem) = shared
        .slot
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .map(|c| c.mem.clone())
    else {
        return;
    };
    let neg = Negotiated::from_bits(shared.acked.load(Ordering::Acquire));
    let mut state = vring.get_mut();
    let mem = mem.memory();
    if !state.get_queue().ready() || !state.is_enabled() {
        return;
    }
    let mut pairs = shared.ctrl_pairs.load(Ordering::Acquire);
    let before = pairs;
    let mut chain = Box::<Chain>::default();
    let mut counters = CtrlCounters::default();
    let result = ctrl::process(
        state.get_queue_mut(),
        &*mem,
        neg,
        shared.pairs,
        &mut pairs,
        &mut chain,
        &mut counters,
    );
    let used = match result {
        Ok(n) => n,
        Err(b) => {
            tracing::warn!(interface = %shared.name, why = b.0, "control queue unusable until the guest resets it");
            0
        }
    };
    if pairs != before {
        shared.ctrl_pairs.store(pairs, Ordering::Release);
        tracing::info!(interface = %shared.name, pairs, "guest set its queue pairs");
    }
    {
        let mut c = shared
            .ctrl_counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        c.ok += counters.ok;
        c.rejected += counters.rejected;
        c.unknown_class += counters.unknown_class;
        c.bad_chain += counters.bad_chain;
    }
    if used > 0
        && state
            .get_queue_mut()
            .needs_notification(&*mem)
            .unwrap_or(true)
    {
        let _ = state.signal_used_queue();
    }
}

/// Settings of one guest interface.
#[derive(Debug, Clone)]
pub struct VhostUserConfig {
    /// Interface name, for logs and statistics.
    pub name: String,
    /// The socket vnetp listens on (created; a stale socket file is replaced).
    pub socket: PathBuf,
    /// The guest's MAC, announced in the config space.
    pub mac: [u8; 6],
    /// The guest MTU, announced in the config space (`VIRTIO_NET_F_MTU`).
    pub mtu: u16,
    /// Most queue pairs the guest may use (`VIRTIO_NET_F_MQ` when above 1), 1 to
    /// [`MAX_QUEUE_PAIRS`]; default [`net::DEFAULT_QUEUE_PAIRS`].
    pub max_queue_pairs: u16,
    /// Frames from the guest at least this long (virtio-net header excluded) leave
    /// their bytes past the first [`tails::COPY_HEAD`] in guest memory, as an external
    /// tail, when those lie in one range ([`crate::tails`]); 0 copies every frame.
    /// Default [`tails::DEFAULT_THRESHOLD`].
    pub zero_copy_threshold: usize,
    /// Longest a GET_VRING_BASE waits for the tails lent from its queue to come back
    /// (the NIC or the kernel still reading the guest's bytes). Past it the stop goes
    /// ahead and the late chains are counted stale, never put into the queue's next
    /// ring. Default [`DEFAULT_STOP_WAIT`].
    pub stop_wait: std::time::Duration,
}

impl Default for VhostUserConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            socket: PathBuf::new(),
            mac: [0x52, 0x54, 0, 0, 0, 1],
            mtu: 1500,
            max_queue_pairs: net::DEFAULT_QUEUE_PAIRS,
            zero_copy_threshold: tails::DEFAULT_THRESHOLD,
            stop_wait: DEFAULT_STOP_WAIT,
        }
    }
}

/// What the port did with offload requests (not drops: work done for the guest).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OffloadCounters {
    /// TSO frames the guest sent (carried on whole, with their metadata).
    pub rx_gso_frames: u64,
    /// TSO frames handed to the guest whole (it negotiated GUEST_TSO4/6).
    pub tx_gso_frames: u64,
    /// TSO frames cut into segments for a guest that takes no TSO.
    pub tx_gso_segmented: u64,
    /// Segments those frames became.
    pub tx_gso_segments: u64,
    /// Partial checksums completed for a guest without GUEST_CSUM.
    pub tx_csum_completed: u64,
}

/// A guest's virtio-net interface over vhost-user, as a [`Port`].
///
/// `rx_batch` takes frames the guest transmitted; `tx_batch` delivers frames into the
/// guest's receive ring. While no guest is connected, `tx_batch` drops (`tx_no_guest`).
pub struct VhostUserPort {
    name: String,
    mtu: u16,
    pairs: u16,
    shared: Arc<Shared>,
    pool: Mempool,
    thread: Option<JoinHandle<()>>,
    conn: Option<Conn>,
    seen_epoch: u64,
    /// Per queue: stopped until the guest resets it (index = queue index).
    broken: [bool; 2 * MAX_QUEUE_PAIRS as usize],
    /// The pair whose transmit queue `rx_batch` polls first (round-robin).
    rx_next: u16,
    chain: Box<Chain>,
    /// Segments of a cut TSO frame still to be delivered, and the pair they go to. While
    /// some are left, the frame they came from stays at the front of the engine's batch
    /// (removed once its last segment is in), so the engine keeps calling `tx_batch`.
    segs: Vec<pkt::PktBuf>,
    segs_done: usize,
    segs_pair: u16,
    rx: Traffic,
    tx: Traffic,
    offload: OffloadCounters,
    drops: Drops,
    /// Frames lent to the engine with their tails in guest memory, and the chains
    /// whose tails came back (scratch for one drain, never grown).
    tails: TxTails,
    returned: Vec<(usize, u16)>,
    /// [`Shared::stops`] as last seen.
    seen_stops: [u32; QUEUES],
}

impl std::fmt::Debug for VhostUserPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhostUserPort")
            .field("name", &self.name)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl VhostUserPort {
    /// Listens on `cfg.socket` and serves one guest connection at a time, accepting the
    /// next one when a guest goes away (QEMU's `reconnect=` finds us again after a
    /// restart). Frames from the guest are copied into buffers from `pool`; TSO
    /// (HOST_TSO4/6, GUEST_TSO4/6) is offered when those buffers hold a
    /// [`MAX_TSO_FRAME`] behind the virtio-net header.
    pub fn listen(cfg: VhostUserConfig, pool: Mempool) -> Result<Self, VirtioError> {
        let mtu = cfg.mtu.min(net::MAX_MTU);
        let frame_room = pool.buf_size().saturating_sub(pkt::HEADROOM);
        if usize::from(mtu) + 14 + 4 > frame_room {
            return Err(VirtioError::MtuTooLarge {
                name: cfg.name,
                mtu,
                room: frame_room,
            });
        }
        if !(1..=MAX_QUEUE_PAIRS).contains(&cfg.max_queue_pairs) {
            return Err(VirtioError::QueuePairs {
                name: cfg.name,
                pairs: cfg.max_queue_pairs,
                max: MAX_QUEUE_PAIRS,
            });
        }
        let pairs = cfg.max_queue_pairs;
        // The guest's TSO frame is copied into one buffer, behind the header's room.
        let tso = pool.buf_size() >= MAX_TSO_FRAME + pkt::HEADROOM;
        let features = net::offered_features(pairs, tso);
        let fd = || {
            eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)
                .map_err(|e| VirtioError::Eventfd(e.into()))
        };
        let (wake, wake_tx) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::NONBLOCK | rustix::pipe::PipeFlags::CLOEXEC,
        )
        .map_err(|e| VirtioError::Eventfd(e.into()))?;
        let poll = epoll::create(epoll::CreateFlags::CLOEXEC)
            .map_err(|e| VirtioError::Eventfd(e.into()))?;
        epoll::add(
            &poll,
            &wake,
            epoll::EventData::new_u64(WAKE_TOKEN),
            epoll::EventFlags::IN,
        )
        .map_err(|e| VirtioError::Eventfd(e.into()))?;
        let listen_err = |e: std::io::Error| VirtioError::Listen {
            socket: cfg.socket.clone(),
            reason: e.to_string(),
        };
        // A socket file left by an earlier run would make bind fail; nothing else may be
        // in its place.
        match std::fs::symlink_metadata(&cfg.socket) {
            Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
                std::fs::remove_file(&cfg.socket).map_err(listen_err)?;
            }
            Ok(_) => {
                return Err(VirtioError::Listen {
                    socket: cfg.socket.clone(),
                    reason:
                        "a file that is not a socket is in the way; remove it or pick another path"
                            .into(),
                });
            }
            Err(_) => {}
        }
        let sock = UnixListener::bind(&cfg.socket).map_err(listen_err)?;
        // Only the daemon's user may connect: a guest connection maps memory into us.
        std::fs::set_permissions(
            &cfg.socket,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .map_err(listen_err)?;
        let poll_sock = sock.try_clone().map_err(listen_err)?;
        let listener = Listener::from(sock);
        let shared = Arc::new(Shared {
            name: cfg.name.clone(),
            config: net::config_space(cfg.mac, mtu, pairs),
            pairs,
            features,
            acked: AtomicU64::new(0),
            ctrl_pairs: AtomicU16::new(0),
            ctrl_counters: Mutex::new(CtrlCounters::default()),
            wake,
            wake_tx,
            kicked: AtomicBool::new(false),
            poll,
            kicks: Mutex::new(Vec::new()),
            grab: fd()?,
            stop: fd()?,
            stopping: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            slot: Mutex::new(None),
            published: Condvar::new(),
            pending_mem: Mutex::new(None),
            shutdown: Mutex::new(None),
            connections: AtomicU64::new(0),
            stops: std::array::from_fn(|_| AtomicU32::new(0)),
            lent: std::array::from_fn(|_| AtomicU32::new(0)),
            stop_timeouts: AtomicU64::new(0),
            stop_wait: cfg.stop_wait,
        });
        let s = Arc::clone(&shared);
        let socket = cfg.socket.clone();
        let thread = std::thread::Builder::new()
            .name(format!("vhost-{}", cfg.name))
            .spawn(move || accept_loop(&s, listener, poll_sock, &socket))
            .map_err(VirtioError::Thread)?;
        tracing::debug!(interface = %cfg.name, pairs, tso, "vhost-user features chosen");
        let tails =
            TxTails::new(cfg.zero_copy_threshold, tails::MAX_IN_FLIGHT).with_name(&cfg.name);
        Ok(Self {
            name: cfg.name,
            mtu,
            pairs,
            shared,
            pool,
            thread: Some(thread),
            conn: None,
            seen_epoch: 0,
            broken: [false; 2 * MAX_QUEUE_PAIRS as usize],
            rx_next: 0,
            chain: Box::default(),
            // Enough for a 64 KiB frame cut at a 1,200-byte MSS without growing.
            segs: Vec::with_capacity(64),
            segs_done: 0,
            segs_pair: 0,
            rx: Traffic::default(),
            tx: Traffic::default(),
            offload: OffloadCounters::default(),
            drops: [0; DROP_NAMES.len()],
            tails,
            returned: Vec::with_capacity(tails::MAX_IN_FLIGHT),
            seen_stops: [0; QUEUES],
        })
    }

    /// Virtio features this port offers.
    pub fn offered_features(&self) -> u64 {
        self.shared.features
    }

    /// Virtio features the current (or last) guest acknowledged.
    pub fn acked_features(&self) -> u64 {
        self.shared.acked.load(Ordering::Acquire)
    }

    /// What the port did with offload requests.
    pub fn offload_counters(&self) -> OffloadCounters {
        OffloadCounters {
            rx_gso_frames: self.rx.gso,
            tx_gso_frames: self.tx.gso,
            ..self.offload
        }
    }

    /// Control-queue commands: answered OK, rejected, unknown class, malformed.
    pub fn ctrl_counters(&self) -> CtrlCounters {
        *self
            .shared
            .ctrl_counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Gives the tails this port lends out a device address, so a NIC can gather them
    /// in place: every guest memory region is mapped through `map` (now and on each
    /// new memory table) and unmapped once no tail lent from it is out.
    pub fn set_dma_map(&mut self, map: Arc<dyn pkt::DmaMap>) {
        self.tails.set_dma_map(map);
    }

    /// What the zero-copy transmit path did.
    pub fn tail_counters(&self) -> TailCounters {
        self.tails.counters()
    }

    /// Tails lent out and not back yet.
    pub fn tails_in_flight(&self) -> usize {
        self.tails.in_flight()
    }

    /// Connections accepted so far (a reconnect counts again).
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Picks up a new or ended connection; one atomic load when nothing changed.
    #[inline]
    fn refresh(&mut self) {
        let epoch = self.shared.epoch.load(Ordering::Acquire);
        if epoch != self.seen_epoch {
            self.seen_epoch = epoch;
            self.conn = self
                .shared
                .slot
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            self.broken = [false; 2 * MAX_QUEUE_PAIRS as usize];
            self.rx_next = 0;
            // Tails lent to the old guest come back stale; its memory stays mapped
            // until they have.
            self.tails.new_connection();
            // Segments for a guest that went away are of no use to the next one.
            self.segs.clear();
            self.segs_done = 0;
        }
    }

    /// Pairs whose queues may carry frames now: 1 without MQ, else what the guest set
    /// on the control queue, else all offered (the frontend's enable state decides).
    fn pair_limit(&self, neg: Negotiated) -> u16 {
        if !neg.mq {
            return 1;
        }
        match self.shared.ctrl_pairs.load(Ordering::Relaxed) {
            0 => self.pairs,
            n => n.min(self.pairs),
        }
    }

    /// Drops every frame in `batch` and every pending segment, counted under `reason`
    /// (a cut frame counts by its segments).
    fn drop_all(&mut self, batch: &mut Batch, reason: usize) {
        let left = self.segs.len() - self.segs_done;
        let held = usize::from(left > 0 && !batch.is_empty());
        self.drops[reason] += (batch.len() - held + left) as u64;
        batch.clear();
        self.segs.clear();
        self.segs_done = 0;
    }

    /// Moves frames from the guest's transmit queue `q` into `batch`.
    fn rx_queue(&mut self, q: usize, neg: Negotiated, batch: &mut Batch) -> usize {
        let Some((vring, mem)) = usable(&self.conn, q) else {
            return 0;
        };
        let mut state = vring.get_mut();
        // The memory snapshot is taken under the vring lock: one taken before it could
        // predate the guest's memory table while the queue, set up meanwhile, is ready.
        let mem = mem.memory().into_inner();
        if !state.get_queue().ready() || !state.is_enabled() {
            if !state.get_queue().ready() {
                // Stopped or reset: chains lent from it are no longer the guest's.
                self.tails.reset_queue(q);
            }
            drop(state);
            self.broken[q] = false;
            return 0;
        }
        if self.broken[q] {
            return 0;
        }
        let before = batch.len();
        self.tails.set_memory(&mem);
        let result = dataplane::guest_tx_tails(
            state.get_queue_mut(),
            q,
            neg,
            &self.pool,
            batch,
            &mut self.chain,
            &mut self.rx,
            &mut self.drops,
            &mut self.tails,
        );
        // Published under the vring lock: a stop (which marks the queue not ready under
        // the same lock first) then sees every tail this pass lent.
        self.publish_lent(q);
        let pass = match result {
            Ok(p) => p,
            Err(b) => {
                let rings = ring_addrs(state.get_queue());
                drop(state);
                self.mark_broken(q, b.0, rings);
                return batch.len() - before;
            }
        };
        if pass.used > 0
            && state
                .get_queue_mut()
                .needs_notification(&*mem)
                .unwrap_or(true)
        {
            let _ = state.signal_used_queue();
        }
        pass.frames
    }

    /// Delivers `batch` (and any segments still pending) into the guest's usable receive
    /// queues, each frame to the queue of its flow; returns the frames removed.
    fn deliver(&mut self, conn: &Conn, neg: Negotiated, limit: u16, batch: &mut Batch) -> usize {
        let n = batch.len();
        // Lock every usable receive queue once for the batch (ascending order, as
        // nothing else holds two vring locks), then deliver in order, each frame to the
        // queue of its flow.
        let mut guards: [Option<_>; MAX_QUEUE_PAIRS as usize] = std::array::from_fn(|_| None);
        let mut usable = [0u16; MAX_QUEUE_PAIRS as usize];
        let mut nq = 0usize;
        let mut any_broken = false;
        for p in 0..limit {
            let q = 2 * usize::from(p) + RX_QUEUE;
            let Some(v) = conn.vrings.get(q) else { break };
            let state = v.get_mut();
            let ready = state.get_queue().ready();
            if !ready {
                self.broken[q] = false;
                continue;
            }
            if self.broken[q] {
                any_broken = true;
                continue;
            }
            if state.is_enabled() {
                guards[usize::from(p)] = Some(state);
                usable[nq] = p;
                nq += 1;
            }
        }
        if nq == 0 {
            let reason = if any_broken {
                drop::QUEUE_BROKEN
            } else {
                drop::TX_NO_GUEST
            };
            drop(guards);
            self.drop_all(batch, reason);
            return n;
        }
        // The memory snapshot is taken under the vring locks: one taken before them could
        // predate the guest's memory table while a queue, set up meanwhile, is ready.
        let mem = conn.mem.memory();
        let mut used = [0usize; MAX_QUEUE_PAIRS as usize];
        let mut rechecked = [false; MAX_QUEUE_PAIRS as usize];
        let mut consumed = 0;
        let mut blocked = false;
        let mut broken: Option<(u16, &'static str)> = None;
        'work: loop {
            // Segments of a cut frame go first, to the pair of their flow; the frame
            // itself is at `consumed` until they are all in.
            let cut = self.segs_done < self.segs.len();
            while self.segs_done < self.segs.len() {
                let mut p = self.segs_pair;
                if guards[usize::from(p)].is_none() {
                    // Its queue went away: the flow moves to a queue that is there.
                    p = usable[self.segs_done % nq];
                    self.segs_pair = p;
                }
                let Some(state) = guards[usize::from(p)].as_mut() else {
                    break 'work;
                };
                let seg = &mut self.segs[self.segs_done];
                match dataplane::deliver_frame(
                    state.get_queue_mut(),
                    &*mem,
                    neg,
                    seg,
                    &mut self.chain,
                    &mut rechecked[usize::from(p)],
                    &mut self.tx,
                    &mut self.drops,
                ) {
                    Ok(Delivery::Delivered(u)) => used[usize::from(p)] += u,
                    Ok(Delivery::Dropped) => {}
                    Ok(Delivery::NoRoom) => {
                        blocked = true;
                        break 'work;
                    }
                    Err(b) => {
                        broken = Some((p, b.0));
                        break 'work;
                    }
                }
                self.segs_done += 1;
            }
            self.segs.clear();
            self.segs_done = 0;
            if cut && consumed < batch.len() {
                consumed += 1;
            }
            let Some(buf) = batch.as_mut_slice().get_mut(consumed) else {
                break;
            };
            let p = if nq == 1 {
                usable[0]
            } else {
                usable[dataplane::flow_hash(buf.data()) as usize % nq]
            };
            let gso = buf.meta.offload.gso_type;
            if gso != offload::vnet_hdr::gso::NONE && !neg.guest_takes_gso(gso) {
                // The guest takes no TSO of this kind: cut the frame here, at the
                // sender's segment size or what the guest's MTU holds if smaller.
                // Cutting reads the whole frame: an external tail is joined first (it
                // always fits: the engine joins tails of frames cut for this port).
                let _ = buf.linearize();
                let data = buf.data();
                let hdrs = offload::gso::l3l4_header_len(data).unwrap_or(0);
                let fit = usize::from(self.mtu).saturating_sub(hdrs);
                let mss = usize::from(buf.meta.offload.gso_size).min(fit.max(1));
                let segs = &mut self.segs;
                match offload::gso::segment_tcp(data, mss, &self.pool, |s| segs.push(s)) {
                    Ok(k) => {
                        self.offload.tx_gso_segmented += 1;
                        self.offload.tx_gso_segments += k as u64;
                    }
                    Err(offload::gso::GsoError::NoBuffer) => {
                        self.drops[drop::TX_GSO_NO_BUFFER] += 1;
                    }
                    Err(_) => self.drops[drop::TX_GSO_UNSUPPORTED] += 1,
                }
                self.segs_pair = p;
                if self.segs.is_empty() {
                    consumed += 1;
                }
                continue;
            }
            let partial = buf.meta.offload.flags & offload::vnet_hdr::NEEDS_CSUM != 0;
            let Some(state) = guards[usize::from(p)].as_mut() else {
                break;
            };
            match dataplane::deliver_frame(
                state.get_queue_mut(),
                &*mem,
                neg,
                buf,
                &mut self.chain,
                &mut rechecked[usize::from(p)],
                &mut self.tx,
                &mut self.drops,
            ) {
                Ok(Delivery::Delivered(u)) => {
                    used[usize::from(p)] += u;
                    self.offload.tx_csum_completed += u64::from(partial && !neg.guest_csum);
                }
                Ok(Delivery::Dropped) => {}
                Ok(Delivery::NoRoom) => {
                    blocked = true;
                    break;
                }
                Err(b) => {
                    broken = Some((p, b.0));
                    break;
                }
            }
            consumed += 1;
        }
        for p in 0..usize::from(limit) {
            let Some(state) = guards[p].as_mut() else {
                continue;
            };
            if used[p] == 0 {
                continue;
            }
            if !blocked {
                // Delivered everything: no kick needed for more buffers.
                let _ = state.get_queue_mut().disable_notification(&*mem);
            }
            if state
                .get_queue_mut()
                .needs_notification(&*mem)
                .unwrap_or(true)
            {
                let _ = state.signal_used_queue();
            }
        }
        let rings = broken.and_then(|(p, _)| {
            guards[usize::from(p)]
                .as_ref()
                .map(|s| ring_addrs(s.get_queue()))
        });
        drop(guards);
        batch.consume_front(consumed);
        if let (Some((p, why)), Some(rings)) = (broken, rings) {
            self.mark_broken(2 * usize::from(p) + RX_QUEUE, why, rings);
            // The frame (or cut frame) that broke the queue is dropped with it; the rest
            // wait for another queue or are dropped on the next call if none is left.
            if self.segs_done < self.segs.len() {
                self.drops[drop::QUEUE_BROKEN] += (self.segs.len() - self.segs_done) as u64;
                self.segs.clear();
                self.segs_done = 0;
                // The frame they were cut from.
                if !batch.is_empty() {
                    batch.consume_front(1);
                    consumed += 1;
                }
            } else if !batch.is_empty() {
                batch.consume_front(1);
                self.drops[drop::QUEUE_BROKEN] += 1;
                consumed += 1;
            }
        }
        consumed
    }

    /// Treats every queue the frontend stopped since the last look as reset (its lent
    /// chains are no longer its), even if it is ready again by now.
    fn sync_stops(&mut self) {
        // Only data queues lend tails: those of the offered pairs.
        let queues = 2 * usize::from(self.pairs);
        for (q, seen) in self.seen_stops.iter_mut().enumerate().take(queues) {
            let now = self.shared.stops[q].load(Ordering::Acquire);
            if now != *seen {
                *seen = now;
                self.tails.reset_queue(q);
            }
        }
    }

    /// Publishes how many tails queue `q` has out, for a stop waiting on them.
    fn publish_lent(&self, q: usize) {
        if let Some(l) = self.shared.lent.get(q) {
            l.store(self.tails.lent(q), Ordering::Release);
        }
    }

    /// Puts the chains whose tails came back into their used rings and notifies the
    /// guest as after a transmit pass; one vring lock per queue with returns.
    fn return_tails(&mut self) {
        self.sync_stops();
        if !self.tails.has_returns() {
            return;
        }
        let returned = &mut self.returned;
        returned.clear();
        self.tails.drain(|q, head| returned.push((q, head)));
        // Stale returns count too: a stop may be waiting for exactly those.
        for q in 0..2 * usize::from(self.pairs) {
            self.publish_lent(q);
        }
        let queues = self
            .returned
            .iter()
            .fold(0u64, |m, &(q, _)| m | 1 << (q % 64));
        let Some(conn) = self.conn.as_ref() else {
            // Cannot happen (a connection change makes them stale first).
            self.tails.count_stale(self.returned.len());
            return;
        };
        for q in (0..64).filter(|q| queues & 1 << q != 0) {
            let mine = self.returned.iter().filter(|e| e.0 == q);
            let Some(v) = conn.vrings.get(q) else {
                self.tails.count_stale(mine.count());
                continue;
            };
            let mut state = v.get_mut();
            let mem = conn.mem.memory();
            if !state.get_queue().ready() || self.broken[q] {
                drop(state);
                self.tails.count_stale(mine.count());
                continue;
            }
            let mut added = 0;
            for &(_, head) in mine {
                if state.get_queue_mut().add_used(&*mem, head, 0).is_ok() {
                    added += 1;
                }
            }
            if added > 0
                && state
                    .get_queue_mut()
                    .needs_notification(&*mem)
                    .unwrap_or(true)
            {
                let _ = state.signal_used_queue();
            }
        }
    }

    fn mark_broken(&mut self, q: usize, why: &'static str, rings: [u64; 3]) {
        self.broken[q] = true;
        self.drops[drop::QUEUE_BROKEN] += 1;
        tracing::warn!(
            interface = %self.name,
            queue = q,
            why,
            desc = format_args!("{:#x}", rings[0]),
            avail = format_args!("{:#x}", rings[1]),
            used = format_args!("{:#x}", rings[2]),
            "guest queue marked broken: not used until the guest resets or reconnects"
        );
    }
}

/// Guest addresses of a queue's descriptor table, avail and used rings, for logs.
fn ring_addrs(q: &virtio_queue::Queue) -> [u64; 3] {
    [q.desc_table(), q.avail_ring(), q.used_ring()]
}

/// The vring and memory of queue `q`, if it is ready and enabled.
fn usable(conn: &Option<Conn>, q: usize) -> Option<(&VringRwLock, &Mem)> {
    let c = conn.as_ref()?;
    let v = c.vrings.get(q)?;
    Some((v, &c.mem))
}

impl Port for VhostUserPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_batch(&mut self, batch: &mut Batch) -> usize {
        // Clear the wake-up before looking at the rings: a kick that lands after this
        // leaves the poll fd readable, so the engine cannot sleep on a chain the guest
        // published after our last look (the ring checks below come after the clear).
        self.shared.clear_wake();
        self.refresh();
        self.return_tails();
        let neg = Negotiated::from_bits(self.shared.acked.load(Ordering::Acquire));
        // Every pair the guest may transmit on: a frontend may still drain a pair it is
        // turning off, so transmit queues are polled up to the offered pairs with MQ.
        let pairs = if neg.mq { self.pairs } else { 1 };
        let start = self.rx_next % pairs;
        self.rx_next = (start + 1) % pairs;
        let mut frames = 0;
        for k in 0..pairs {
            if batch.is_full() {
                break;
            }
            let q = 2 * usize::from((start + k) % pairs) + TX_QUEUE;
            frames += self.rx_queue(q, neg, batch);
        }
        frames
    }

    fn tx_batch(&mut self, batch: &mut Batch) -> usize {
        if batch.is_empty() && self.segs_done == self.segs.len() {
            return 0;
        }
        self.refresh();
        self.return_tails();
        let neg = Negotiated::from_bits(self.shared.acked.load(Ordering::Acquire));
        let n = batch.len();
        let limit = self.pair_limit(neg);
        // Taken out for the batch (no clone: the vring locks borrow from it).
        let Some(conn) = self.conn.take() else {
            self.drop_all(batch, drop::TX_NO_GUEST);
            return n;
        };
        let done = self.deliver(&conn, neg, limit, batch);
        self.conn = Some(conn);
        done
    }

    fn caps(&self) -> PortCaps {
        PortCaps {
            kind: PortKind::Ethernet,
            mtu: usize::from(self.mtu),
            rx_queues: self.pairs,
            tx_queues: self.pairs,
            // Whatever the guest negotiated: the port cuts TSO frames and completes
            // checksums itself for a guest that takes neither. A frame with an external
            // tail (another guest's buffer) is copied into the guest from both places.
            offloads: Offloads::TX_CSUM | Offloads::TSO4 | Offloads::TSO6 | Offloads::EXT_TAIL,
        }
    }

    fn stats(&self) -> PortStats {
        PortStats {
            rx_packets: self.rx.packets,
            rx_bytes: self.rx.bytes,
            tx_packets: self.tx.packets,
            tx_bytes: self.tx.bytes,
            drops: {
                let c = self.ctrl_counters();
                DROP_NAMES
                    .iter()
                    .zip(self.drops.iter())
                    .map(|(name, count)| DropCounter {
                        name,
                        count: *count,
                    })
                    .chain(
                        CTRL_NAMES
                            .iter()
                            .zip([c.rejected, c.unknown_class, c.bad_chain])
                            .map(|(name, count)| DropCounter { name, count }),
                    )
                    .collect()
            },
        }
    }

    fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.shared.poll.as_fd())
    }

    fn clear_poll_fd(&mut self) {
        // Collecting the ready entries takes the edge-triggered kicks off the ready list
        // (their eventfds are never read); a kick after this puts its entry back, so the
        // next wait cannot sleep through it. One entry per queue and the pipe: one call
        // collects them all.
        let mut ready = [epoll::Event {
            flags: epoll::EventFlags::empty(),
            data: epoll::EventData::new_u64(0),
        }; 2 * MAX_QUEUE_PAIRS as usize + 2];
        let now = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let n = epoll::wait(&self.shared.poll, &mut ready[..], Some(&now)).unwrap_or(0);
        if ready[..n.min(ready.len())]
            .iter()
            .any(|e| e.data.u64() == WAKE_TOKEN)
        {
            // The pipe is readable: drain it whatever the flag says. A writer stalled
            // between its write and raising the flag would otherwise leave a readable
            // pipe that no batch drains, and the engine spinning until it runs again.
            self.shared.kicked.store(false, Ordering::Release);
            Shared::drain(&self.shared.wake);
        } else {
            self.shared.clear_wake();
        }
    }

    fn next_deadline(&self) -> Option<std::time::Instant> {
        // Tails coming back are announced by no fd: the guest may be waiting for the
        // used entries (its ring full) and send no kick. While tails are out, look
        // again soon; once some are back, at once.
        if self.tails.has_returns() {
            Some(std::time::Instant::now())
        } else if self.tails.in_flight() > 0 {
            Some(std::time::Instant::now() + TAIL_RECHECK)
        } else {
            None
        }
    }

    fn events(&self) -> Vec<DropCounter> {
        let o = self.offload_counters();
        let t = self.tails.counters();
        [
            ("rx_gso_frames", o.rx_gso_frames),
            ("tx_gso_frames", o.tx_gso_frames),
            ("tx_gso_segmented", o.tx_gso_segmented),
            ("tx_gso_segments", o.tx_gso_segments),
            ("tx_csum_completed", o.tx_csum_completed),
            ("tx_zero_copy", t.zero_copy),
            ("tx_zero_copy_fallback", t.fallback),
            ("tx_zero_copy_stale", t.stale),
            ("tx_zero_copy_orphaned", t.orphaned),
            ("dma_map_failed", t.dma_map_failed),
            (
                "tx_zero_copy_stop_timeout",
                self.shared.stop_timeouts.load(Ordering::Relaxed),
            ),
        ]
        .into_iter()
        .map(|(name, count)| DropCounter { name, count })
        .collect()
    }
}

impl Drop for VhostUserPort {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Release);
        Shared::poke(&self.shared.stop);
        if let Some(h) = self
            .shared
            .shutdown
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            h.shutdown();
        }
        self.conn = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Accepts guests one after another until the port is dropped.
fn accept_loop(shared: &Arc<Shared>, mut listener: Listener, sock: UnixListener, socket: &Path) {
    let span = tracing::info_span!("vhost-user", interface = %shared.name);
    let _g = span.enter();
    tracing::info!(socket = %socket.display(), "listening for a guest");
    while !shared.stopping.load(Ordering::Acquire) {
        // Wait for a guest or the stop request: the daemon's own accept would block.
        let mut fds = [
            PollFd::new(&shared.stop, PollFlags::IN),
            PollFd::new(&sock, PollFlags::IN),
        ];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "polling the vhost-user socket failed; interface stops");
                return;
            }
        }
        if fds[0].revents().contains(PollFlags::IN) {
            break;
        }
        if let Err(e) = serve_one(shared, &mut listener) {
            tracing::warn!(error = %e, "guest connection failed; waiting for the next");
            // Do not spin on a persistent failure.
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    let _ = std::fs::remove_file(socket);
    tracing::info!("stopped listening");
}

/// Serves one guest connection from accept to disconnect, then frees its resources.
fn serve_one(shared: &Arc<Shared>, listener: &mut Listener) -> Result<(), String> {
    let mem: Mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let backend = NetBackend {
        shared: Arc::clone(shared),
    };
    let mut daemon = VhostUserDaemon::new(shared.name.clone(), backend, mem.clone())
        .map_err(|e| format!("starting the vhost-user handler: {e}"))?;
    shared.acked.store(0, Ordering::Release);
    shared.ctrl_pairs.store(0, Ordering::Release);
    *shared
        .pending_mem
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(mem);
    let handlers = daemon.get_epoll_handlers();
    for h in &handlers {
        h.register_listener(
            shared.grab.as_raw_fd(),
            EventSet::IN,
            grab_event(shared.pairs),
        )
        .map_err(|e| format!("registering the hand-over event: {e}"))?;
    }
    Shared::poke(&shared.grab);
    // The data side must see this connection's vrings before the guest can finish its
    // setup and send: otherwise its first frames would meet "no guest".
    {
        let slot = shared.slot.lock().unwrap_or_else(PoisonError::into_inner);
        let (slot, _) = shared
            .published
            .wait_timeout_while(slot, std::time::Duration::from_secs(10), |s| s.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            return Err("the vring worker did not start within 10 s".into());
        }
    }
    daemon
        .start(listener)
        .map_err(|e| format!("accepting the guest: {e}"))?;
    let n = shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::info!(connection = n, "guest connected");
    *shared
        .shutdown
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = daemon.shutdown_handle();
    if shared.stopping.load(Ordering::Acquire) {
        daemon.request_shutdown();
    }
    let result = daemon.wait();
    *shared
        .shutdown
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = None;
    // The next guest's kicks must not share the epoll set with this one's.
    shared.forget_kicks();
    shared.publish(None);
    for h in &handlers {
        let _ = h.unregister_listener(
            shared.grab.as_raw_fd(),
            EventSet::IN,
            grab_event(shared.pairs),
        );
        h.send_exit_event();
    }
    drop(handlers);
    // Dropping the daemon joins its worker thread and unmaps the guest's memory once the
    // data side has dropped its clone (on its next batch).
    drop(daemon);
    match result {
        Ok(()) => {
            tracing::info!(connection = n, "guest disconnected");
            Ok(())
        }
        Err(e) => {
            tracing::info!(connection = n, reason = %e, "guest disconnected");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests;
