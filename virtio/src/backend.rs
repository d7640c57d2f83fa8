//! [`VhostUserPort`]: a guest's virtio-net interface, served over a vhost-user socket.
//!
//! Two sides share one `Shared` block:
//! - the protocol side (a thread per port, plus the rust-vmm `vhost-user-backend` worker
//!   thread of the current connection) accepts connections, handles the memory table and
//!   vring setup, and turns guest kicks into a wake-up on the port's wake-up pipe;
//! - the data side is the engine thread calling [`pkt::Port::rx_batch`] and
//!   [`pkt::Port::tx_batch`]. It works on the vrings directly, taking each vring's lock
//!   once per batch, never per frame.
//!
//! Hand-over: each connection gets a fresh `VhostUserDaemon`, fresh vrings and a fresh
//! guest memory map. The worker publishes them (an `Arc`-cloned set) into `Shared::slot`
//! and bumps `Shared::epoch`; the data side compares the epoch once per batch (one
//! atomic load) and re-reads the slot only when it changed. On disconnect the slot is
//! emptied and the epoch bumped again, so a guest that goes away never stalls the engine,
//! and its memory is unmapped once the data side lets go of its clone.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use pkt::{Batch, DropCounter, Mempool, Offloads, Port, PortCaps, PortKind, PortStats};
use rustix::event::{EventfdFlags, PollFd, PollFlags, eventfd};
use vhost::vhost_user::Listener;
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{ShutdownHandle, VhostUserBackend, VhostUserDaemon, VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier,
};

use crate::chain::Chain;
use crate::dataplane::{self, DROP_NAMES, Drops, Traffic, drop};
use crate::error::VirtioError;
use crate::net::{
    self, MAX_QUEUE_SIZE, NUM_QUEUES, Negotiated, OFFERED_FEATURES, RX_QUEUE, TX_QUEUE,
};

/// Guest memory as the vhost-user backend maps it.
type Mem = GuestMemoryAtomic<GuestMemoryMmap>;

/// `device_event` of our hand-over eventfd (`register_listener` reserves 0..=num_queues).
const GRAB_EVENT: u64 = NUM_QUEUES as u64 + 1;

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
    acked: AtomicU64,
    /// The engine's wake-up (read end of a pipe): readable after a guest kick. A pipe,
    /// not an eventfd, because the engine also polls for POLLOUT while it holds frames
    /// for the guest: an eventfd is always writable and would make it spin while the
    /// guest's receive ring is full, a pipe's read end never is, so the engine sleeps
    /// until the guest kicks (we ask for that kick when its ring runs dry).
    wake: OwnedFd,
    /// Write end of the wake-up pipe.
    wake_tx: OwnedFd,
    /// Set (after writing `wake`) when `wake` may be readable: the data side reads the
    /// pipe only then, so an idle poll costs no syscall.
    kicked: AtomicBool,
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
}

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
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        OFFERED_FEATURES
    }

    fn acked_features(&self, features: u64) {
        self.shared.acked.store(features, Ordering::Release);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
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
        // A bit mask per worker thread: one worker for both queues.
        vec![(1u64 << NUM_QUEUES) - 1]
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC).ok()
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        if u64::from(device_event) == GRAB_EVENT {
            Shared::drain(&self.shared.grab);
            let mem = self
                .shared
                .pending_mem
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(mem) = mem {
                self.shared.publish(Some(Conn {
                    vrings: vrings.to_vec(),
                    mem,
                }));
            }
        } else {
            // A kick on either queue: the engine has work (frames, or room for frames).
            self.shared.wake_engine();
        }
        Ok(())
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
}

/// A guest's virtio-net interface over vhost-user, as a [`Port`].
///
/// `rx_batch` takes frames the guest transmitted; `tx_batch` delivers frames into the
/// guest's receive ring. While no guest is connected, `tx_batch` drops (`tx_no_guest`).
pub struct VhostUserPort {
    name: String,
    mtu: u16,
    shared: Arc<Shared>,
    pool: Mempool,
    thread: Option<JoinHandle<()>>,
    conn: Option<Conn>,
    seen_epoch: u64,
    broken: [bool; NUM_QUEUES],
    chain: Box<Chain>,
    rx: Traffic,
    tx: Traffic,
    drops: Drops,
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
    /// restart). Frames from the guest are copied into buffers from `pool`.
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
        let fd = || {
            eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)
                .map_err(|e| VirtioError::Eventfd(e.into()))
        };
        let (wake, wake_tx) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::NONBLOCK | rustix::pipe::PipeFlags::CLOEXEC,
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
            config: net::config_space(cfg.mac, mtu),
            acked: AtomicU64::new(0),
            wake,
            wake_tx,
            kicked: AtomicBool::new(false),
            grab: fd()?,
            stop: fd()?,
            stopping: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            slot: Mutex::new(None),
            published: Condvar::new(),
            pending_mem: Mutex::new(None),
            shutdown: Mutex::new(None),
            connections: AtomicU64::new(0),
        });
        let s = Arc::clone(&shared);
        let socket = cfg.socket.clone();
        let thread = std::thread::Builder::new()
            .name(format!("vhost-{}", cfg.name))
            .spawn(move || accept_loop(&s, listener, poll_sock, &socket))
            .map_err(VirtioError::Thread)?;
        Ok(Self {
            name: cfg.name,
            mtu,
            shared,
            pool,
            thread: Some(thread),
            conn: None,
            seen_epoch: 0,
            broken: [false; NUM_QUEUES],
            chain: Box::default(),
            rx: Traffic::default(),
            tx: Traffic::default(),
            drops: [0; DROP_NAMES.len()],
        })
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
            self.broken = [false; NUM_QUEUES];
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
        // Clear the wake-up before looking at the ring: a kick that lands after this
        // leaves the poll fd readable, so the engine cannot sleep on a chain the guest
        // published after our last look (the ring check below comes after the clear).
        self.shared.clear_wake();
        self.refresh();
        let neg = Negotiated::from_bits(self.shared.acked.load(Ordering::Acquire));
        let Some((vring, mem)) = usable(&self.conn, TX_QUEUE) else {
            return 0;
        };
        let mut state = vring.get_mut();
        // The memory snapshot is taken under the vring lock: one taken before it could
        // predate the guest's memory table while the queue, set up meanwhile, is ready.
        let mem = mem.memory();
        if !state.get_queue().ready() || !state.is_enabled() {
            drop(state);
            self.broken[TX_QUEUE] = false;
            return 0;
        }
        if self.broken[TX_QUEUE] {
            return 0;
        }
        let before = batch.len();
        let result = dataplane::guest_tx(
            state.get_queue_mut(),
            &*mem,
            neg,
            &self.pool,
            batch,
            &mut self.chain,
            &mut self.rx,
            &mut self.drops,
        );
        let pass = match result {
            Ok(p) => p,
            Err(b) => {
                let rings = ring_addrs(state.get_queue());
                drop(state);
                self.mark_broken(TX_QUEUE, b.0, rings);
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

    fn tx_batch(&mut self, batch: &mut Batch) -> usize {
        if batch.is_empty() {
            return 0;
        }
        self.refresh();
        let neg = Negotiated::from_bits(self.shared.acked.load(Ordering::Acquire));
        let n = batch.len();
        let Some((vring, mem)) = usable(&self.conn, RX_QUEUE) else {
            self.drops[drop::TX_NO_GUEST] += n as u64;
            batch.clear();
            return n;
        };
        let mut state = vring.get_mut();
        // The memory snapshot is taken under the vring lock: one taken before it could
        // predate the guest's memory table while the queue, set up meanwhile, is ready.
        let mem = mem.memory();
        if !state.get_queue().ready() || !state.is_enabled() || self.broken[RX_QUEUE] {
            let ready = state.get_queue().ready();
            drop(state);
            if !ready {
                self.broken[RX_QUEUE] = false;
            }
            let reason = if self.broken[RX_QUEUE] {
                drop::QUEUE_BROKEN
            } else {
                drop::TX_NO_GUEST
            };
            self.drops[reason] += n as u64;
            batch.clear();
            return n;
        }
        let result = dataplane::guest_rx(
            state.get_queue_mut(),
            &*mem,
            neg,
            batch,
            &mut self.chain,
            &mut self.tx,
            &mut self.drops,
        );
        match result {
            Ok(pass) => {
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
            Err(b) => {
                let rings = ring_addrs(state.get_queue());
                drop(state);
                self.mark_broken(RX_QUEUE, b.0, rings);
                let left = batch.len();
                self.drops[drop::QUEUE_BROKEN] += left as u64;
                batch.clear();
                n
            }
        }
    }

    fn caps(&self) -> PortCaps {
        PortCaps {
            kind: PortKind::Ethernet,
            mtu: usize::from(self.mtu),
            rx_queues: 1,
            tx_queues: 1,
            offloads: Offloads::TX_CSUM,
        }
    }

    fn stats(&self) -> PortStats {
        PortStats {
            rx_packets: self.rx.packets,
            rx_bytes: self.rx.bytes,
            tx_packets: self.tx.packets,
            tx_bytes: self.tx.bytes,
            drops: DROP_NAMES
                .iter()
                .zip(self.drops.iter())
                .map(|(name, count)| DropCounter {
                    name,
                    count: *count,
                })
                .collect(),
        }
    }

    fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.shared.wake.as_fd())
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
    *shared
        .pending_mem
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(mem);
    let handlers = daemon.get_epoll_handlers();
    for h in &handlers {
        h.register_listener(shared.grab.as_raw_fd(), EventSet::IN, GRAB_EVENT)
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
    shared.publish(None);
    for h in &handlers {
        let _ = h.unregister_listener(shared.grab.as_raw_fd(), EventSet::IN, GRAB_EVENT);
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
