//! Batched tap I/O through io_uring: receive reads stay posted on the tap like a NIC's
//! receive ring, and a transmit batch goes to the kernel as one `io_uring_enter`.
//!
//! Receive: [`RingIo`] keeps one multishot read (`IORING_OP_READ_MULTISHOT`) posted on
//! the tap over a provided-buffer ring (`IORING_REGISTER_PBUF_RING`) of up to
//! [`RX_SLOTS`] pool buffers, like a NIC receive ring: each completion is one frame in
//! one buffer (header into the headroom, frame at [`HEADROOM`]), named by its buffer id;
//! the slot gets a fresh buffer. Separate single-shot reads would all wake on every
//! frame (the tap has one wait queue) and those that find nothing are handed to io-wq
//! threads that block in `read`, one per posted read. Reaping completions reads shared
//! memory only: a receive call with nothing ready makes no system call.
//!
//! Transmit: one `writev` (virtio-net header, frame) per frame, all submitted with one
//! `io_uring_enter`. A frame's buffer stays in its [`TxSlot`] until the kernel
//! completes the write; at most [`TX_SLOTS`] writes are in flight and frames beyond
//! that stay in the caller's batch (not accepted).
//!
//! Wake-ups: an eventfd registered with the ring (`IORING_REGISTER_EVENTFD`) is
//! signalled on every completion; it is the port's poll fd.
//!
//! Teardown: the read is cancelled and the drop waits (bounded) until the
//! kernel has completed every request; a buffer whose request is still outstanding
//! after that is leaked rather than returned to the pool, so a buffer the kernel may
//! still write is never reused.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::{IoUring, opcode, types};
use pkt::{Batch, HEADROOM, Mempool, PktBuf};

use super::{Counters, ETH_HLEN, VNET_HDR_LEN, emit_vnet_hdr, parse_vnet_hdr};

/// Receive buffers kept with the kernel (fewer with a small pool: a quarter of its
/// buffers, rounded down to a power of two as the buffer ring needs).
pub(crate) const RX_SLOTS: usize = 256;
/// The buffer group of the receive buffers.
const RX_BGID: u16 = 0;
/// `user_data` of the multishot read.
const RX_READ: u64 = 0;
/// Transmit writes in flight at most.
pub(crate) const TX_SLOTS: usize = 128;
/// Submission queue entries: every repost and every write of one call fit at once.
const SQ_ENTRIES: u32 = 256;
/// How long receive rests after an error completion, or a slot after an empty pool,
/// before the read is posted (or the slot filled) again: a dead device must not turn
/// into a busy loop.
const RX_RETRY: Duration = Duration::from_millis(1);
/// How long a drop waits for the kernel to give back buffers.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// `user_data` bit marking a transmit write (clear: a receive read).
const TX_TAG: u64 = 1 << 63;
/// `user_data` of cancel requests (their completions carry no buffer).
const CANCEL_TAG: u64 = 1 << 62;

/// The provided-buffer ring: `entries` `io_uring_buf`s in page-aligned memory of our
/// own, the kernel consuming from the head and us adding at the tail.
struct BufRing {
    base: *mut types::BufRingEntry,
    bytes: usize,
    entries: u16,
    /// Our tail, published to the kernel by [`BufRing::publish`].
    tail: u16,
}

impl BufRing {
    fn new(entries: u16) -> std::io::Result<Self> {
        let bytes = usize::from(entries) * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: a fresh anonymous private mapping, no address hint: it aliases
        // nothing. It is unmapped in `Drop`, after the ring that uses it is gone.
        let base = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                bytes,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::PRIVATE,
            )
        }?;
        Ok(Self {
            base: base.cast(),
            bytes,
            entries,
            tail: 0,
        })
    }

    /// Adds one buffer (`addr`, `len`) under id `bid` at our tail (not yet visible).
    fn push(&mut self, addr: *mut u8, len: usize, bid: u16) {
        let at = usize::from(self.tail & (self.entries - 1));
        // SAFETY: `at` is below `entries`, inside the mapping; the kernel only reads
        // entries between its head and the published tail, and this one is past it.
        let entry = unsafe { &mut *self.base.add(at) };
        entry.set_addr(addr as u64);
        entry.set_len(u32::try_from(len).unwrap_or(u32::MAX));
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every buffer pushed so far visible to the kernel.
    fn publish(&self) {
        // SAFETY: `base` is the ring's first entry (initialised: the mapping is zeroed);
        // the tail field is a naturally aligned u16 inside it that the kernel only
        // reads, so an atomic release store is the right access.
        let tail = unsafe {
            std::sync::atomic::AtomicU16::from_ptr(types::BufRingEntry::tail(self.base).cast_mut())
        };
        tail.store(self.tail, std::sync::atomic::Ordering::Release);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, of this length, used by nothing else now
        // (the ring that read it was dropped first, or unregistered the group).
        let _ = unsafe { rustix::mm::munmap(self.base.cast(), self.bytes) };
    }
}

struct TxSlot {
    buf: Option<PktBuf>,
    hdr: [u8; VNET_HDR_LEN],
    iov: [libc::iovec; 2],
    /// The `tx_batch` call that submitted it, to count what one call sent.
    call: u64,
}

/// A fixed ring of receive completions (buffer id, result) in completion order.
struct ReadyQueue {
    slots: Box<[(u16, i32)]>,
    head: usize,
    len: usize,
}

impl ReadyQueue {
    fn new(cap: usize) -> Self {
        Self {
            slots: vec![(0, 0); cap].into_boxed_slice(),
            head: 0,
            len: 0,
        }
    }

    /// Never full: each receive buffer is in the queue at most once.
    fn push(&mut self, slot: (u16, i32)) {
        if self.len < self.slots.len() {
            let at = (self.head + self.len) % self.slots.len();
            self.slots[at] = slot;
            self.len += 1;
        }
    }

    fn pop(&mut self) -> Option<(u16, i32)> {
        if self.len == 0 {
            return None;
        }
        let slot = self.slots[self.head];
        self.head = (self.head + 1) % self.slots.len();
        self.len -= 1;
        Some(slot)
    }
}

/// The io_uring half of a [`super::TapPort`]. Dropped before the tap fd it reads.
pub(crate) struct RingIo {
    ring: IoUring,
    eventfd: OwnedFd,
    tap: RawFd,
    /// Receive buffers by buffer id: `Some` while the kernel may fill it (in the
    /// buffer ring) or while its completion waits in `ready`; `None` when the pool had
    /// none to give.
    rx: Box<[Option<PktBuf>]>,
    /// Dropped after `ring` (declaration order): the kernel reads it until then.
    bufring: BufRing,
    ready: ReadyQueue,
    /// True while the multishot read is posted (its last completion lacks `F_MORE`).
    reading: bool,
    /// Receive buffer ids the pool could not fill, tried again at `retry_at`.
    rx_empty: Vec<u16>,
    /// When receive resumes after an error completion or an empty pool.
    retry_at: Option<Instant>,
    tx: Box<[TxSlot]>,
    tx_free: Vec<u16>,
    /// Swapped with the caller's batch in `tx_batch` so unaccepted frames go back in
    /// order without allocating.
    scratch: Batch,
    tx_call: u64,
    /// Entries pushed to the submission queue that a failed submit left there.
    unsubmitted: bool,
    /// Completions were reaped since the eventfd was last read: it has been signalled.
    reaped: bool,
}

// SAFETY: the raw pointers (buffer ring, iovecs) point into memory the struct owns or
// into pool buffers it holds; only the kernel uses them, and `RingIo` is used by one
// thread at a time like the rest of the port.
unsafe impl Send for RingIo {}

const EMPTY_IOV: libc::iovec = libc::iovec {
    iov_base: std::ptr::null_mut(),
    iov_len: 0,
};

impl RingIo {
    /// Sets up the ring on `tap` (which must stay open until this is dropped), fills
    /// the buffer ring and posts the multishot read. Fails when the kernel refuses
    /// io_uring (ENOSYS, EPERM) or lacks the multishot read (before 6.7).
    pub(crate) fn new(tap: BorrowedFd<'_>, pool: &Mempool) -> std::io::Result<Self> {
        let ring = IoUring::builder()
            .setup_cqsize(SQ_ENTRIES * 2)
            .build(SQ_ENTRIES)?;
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        if !probe.is_supported(opcode::ReadMulti::CODE) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "no IORING_OP_READ_MULTISHOT (Linux 6.7+)",
            ));
        }
        let eventfd = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?;
        ring.submitter().register_eventfd(eventfd.as_raw_fd())?;
        let quarter = (pool.capacity() / 4).clamp(1, RX_SLOTS);
        // A power of two no larger than a quarter of the pool.
        let entries = 1u16 << (usize::BITS - 1 - quarter.leading_zeros());
        let bufring = BufRing::new(entries)?;
        // SAFETY: the mapping holds `entries` entries and lives in `self` until after
        // the ring is dropped (field order).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(bufring.base as u64, entries, RX_BGID, 0)
        }?;
        let tx = (0..TX_SLOTS)
            .map(|_| TxSlot {
                buf: None,
                hdr: [0; VNET_HDR_LEN],
                iov: [EMPTY_IOV; 2],
                call: 0,
            })
            .collect();
        let mut io = Self {
            ring,
            eventfd,
            tap: tap.as_raw_fd(),
            rx: (0..entries).map(|_| None).collect(),
            bufring,
            ready: ReadyQueue::new(usize::from(entries)),
            reading: false,
            rx_empty: (0..entries).rev().collect(),
            retry_at: None,
            tx,
            tx_free: (0..TX_SLOTS as u16).rev().collect(),
            scratch: Batch::new(),
            tx_call: 0,
            unsubmitted: false,
            reaped: true,
        };
        let mut c = Counters::default();
        io.fill_empty(pool, &mut c);
        io.post_read();
        io.submit();
        Ok(io)
    }

    /// The eventfd signalled on every completion.
    pub(crate) fn poll_fd(&self) -> BorrowedFd<'_> {
        self.eventfd.as_fd()
    }

    /// Resets the eventfd so the next wait sleeps until a new completion. Only when a
    /// completion arrived since the last reset: a wait that found the port writable
    /// (frames queued for it) also lands here, and most of those had no completion.
    pub(crate) fn clear_poll_fd(&mut self) {
        if !self.reaped && self.ring.completion().is_empty() {
            return;
        }
        self.reaped = false;
        let mut count = [0u8; 8];
        let _ = rustix::io::read(&self.eventfd, &mut count);
    }

    /// When a call has work the eventfd will not announce: frames reaped by `tx_batch`
    /// and not yet delivered (now), or resting receive slots (their retry time).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        if self.ready.len > 0 {
            return Some(Instant::now());
        }
        self.retry_at
    }

    /// Moves every completion out of the completion queue: receive results into the
    /// ready queue, finished writes back to the pool (counted). Returns how many
    /// writes of call `call` succeeded. Reads shared memory only: no system call.
    fn reap(&mut self, c: &mut Counters, call: u64) -> usize {
        let mut sent = 0;
        for cqe in self.ring.completion() {
            self.reaped = true;
            let ud = cqe.user_data();
            let res = cqe.result();
            if ud & CANCEL_TAG != 0 {
                continue;
            }
            if ud & TX_TAG != 0 {
                let i = (ud & !TX_TAG) as usize;
                let Some(slot) = self.tx.get_mut(i) else {
                    continue;
                };
                let Some(buf) = slot.buf.take() else {
                    continue;
                };
                if res >= 0 && res as usize == VNET_HDR_LEN + buf.len() {
                    c.tx_packets += 1;
                    c.tx_bytes += buf.len() as u64;
                    if slot.call == call {
                        sent += 1;
                    }
                } else if res == -libc::EIO {
                    c.tx_link_down += 1;
                } else {
                    c.tx_error += 1;
                }
                self.tx_free.push(i as u16);
                continue;
            }
            if ud != RX_READ {
                continue;
            }
            let flags = cqe.flags();
            if !io_uring::cqueue::more(flags) {
                self.reading = false;
                if res == -libc::ENOBUFS {
                    // Every buffer is with us: frames wait in the tap until reposted.
                    c.rx_no_buffer += 1;
                } else if res < 0 && res != -libc::ECANCELED {
                    // EIO/EBADFD when the device goes away, EAGAIN if the kernel would
                    // not wait: counted, and receive rests before it reads again.
                    c.rx_error += 1;
                    self.retry_at
                        .get_or_insert_with(|| Instant::now() + RX_RETRY);
                }
            }
            if let Some(bid) = io_uring::cqueue::buffer_select(flags) {
                self.ready.push((bid, res));
            }
        }
        sent
    }

    /// Gives a buffer to every empty receive slot and publishes them to the kernel.
    /// Slots the pool cannot fill wait for the retry time.
    fn fill_empty(&mut self, pool: &Mempool, c: &mut Counters) {
        let mut starved = false;
        let mut added = false;
        while let Some(bid) = self.rx_empty.pop() {
            let Some(buf) = pool.alloc() else {
                starved = true;
                self.rx_empty.push(bid);
                break;
            };
            self.provide(bid, buf);
            added = true;
        }
        if added {
            self.bufring.publish();
        }
        if starved {
            c.rx_no_buffer += 1;
            self.retry_at
                .get_or_insert_with(|| Instant::now() + RX_RETRY);
        }
    }

    /// Puts `buf` into the buffer ring under `bid` (published by the caller).
    fn provide(&mut self, bid: u16, mut buf: PktBuf) {
        // The header lands in the headroom, the frame at HEADROOM.
        let space = buf.reset_for_rx(HEADROOM - VNET_HDR_LEN);
        self.bufring.push(space.as_mut_ptr(), space.len(), bid);
        self.rx[usize::from(bid)] = Some(buf);
    }

    /// Posts the multishot read unless it is posted or receive rests.
    fn post_read(&mut self) {
        if self.reading || self.retry_at.is_some() {
            return;
        }
        let entry = opcode::ReadMulti::new(types::Fd(self.tap), 0, RX_BGID)
            .build()
            .user_data(RX_READ);
        // SAFETY: the read takes its buffers from the registered buffer ring, whose
        // buffers stay in `self.rx` until their completion is reaped or the drop has
        // waited for the read to end.
        if unsafe { self.ring.submission().push(&entry) }.is_ok() {
            self.reading = true;
            self.unsubmitted = true;
        }
    }

    /// One `io_uring_enter` for everything pushed; on failure the entries stay queued
    /// for the next call.
    fn submit(&mut self) {
        if self.unsubmitted && self.ring.submit().is_ok() {
            self.unsubmitted = false;
        }
    }

    /// Delivers completed reads to `batch`, gives their slots fresh buffers, posts the
    /// read again if it ended, and submits (a system call only when there is something
    /// to submit).
    pub(crate) fn rx_batch(
        &mut self,
        batch: &mut Batch,
        pool: &Mempool,
        c: &mut Counters,
    ) -> usize {
        self.reap(c, 0);
        let mut pushed = 0;
        let mut returned = false;
        while batch.room() > 0 {
            let Some((bid, res)) = self.ready.pop() else {
                break;
            };
            let Some(mut buf) = self.rx.get_mut(usize::from(bid)).and_then(Option::take) else {
                continue;
            };
            returned = true;
            let n = usize::try_from(res).unwrap_or(0);
            // A frame cut to the buffer comes back as long as the buffer: a frame that
            // fills it exactly counts as cut too (the daemon's buffers have room to
            // spare past the largest frame the MTU allows).
            if res < 0 {
                c.rx_error += 1;
            } else if n >= buf.tailroom() {
                c.rx_truncated += 1;
            } else if n < VNET_HDR_LEN + ETH_HLEN {
                c.rx_runt += 1;
            } else if buf.set_len(n).is_ok() {
                let mut hdr = [0u8; VNET_HDR_LEN];
                hdr.copy_from_slice(&buf.data()[..VNET_HDR_LEN]);
                if buf.strip_front(VNET_HDR_LEN).is_ok() {
                    buf.meta = pkt::Meta {
                        addr: None,
                        offload: parse_vnet_hdr(&hdr),
                        vlan: None,
                    };
                    let len = buf.len();
                    match batch.push(buf) {
                        Ok(()) => {
                            c.rx_packets += 1;
                            c.rx_bytes += len as u64;
                            pushed += 1;
                        }
                        // Cannot happen (room checked); the buffer reads again.
                        Err(back) => self.provide(bid, back),
                    }
                    if self.rx[usize::from(bid)].is_none() {
                        self.rx_empty.push(bid);
                    }
                    continue;
                }
                c.rx_truncated += 1;
            } else {
                c.rx_truncated += 1;
            }
            // A dropped frame's buffer reads the next one.
            self.provide(bid, buf);
        }
        if let Some(at) = self.retry_at
            && Instant::now() >= at
        {
            self.retry_at = None;
        }
        if returned || (!self.rx_empty.is_empty() && self.retry_at.is_none()) {
            self.fill_empty(pool, c);
            self.bufring.publish();
        }
        self.post_read();
        self.submit();
        pushed
    }

    /// Submits one write per frame from the front of `batch` (one `io_uring_enter`);
    /// frames beyond the free write slots stay in `batch`. Returns how many writes
    /// had completed successfully by the time it returns (the kernel usually writes
    /// to a tap during the submission itself).
    pub(crate) fn tx_batch(&mut self, batch: &mut Batch, c: &mut Counters) -> usize {
        self.tx_call = self.tx_call.wrapping_add(1);
        let call = self.tx_call;
        let mut sent = self.reap(c, call);
        std::mem::swap(batch, &mut self.scratch);
        let mut full = false;
        for buf in self.scratch.drain() {
            if full {
                let _ = batch.push(buf);
                continue;
            }
            if buf.len() < ETH_HLEN {
                c.tx_runt += 1;
                continue;
            }
            let Some(i) = self.tx_free.pop() else {
                full = true;
                let _ = batch.push(buf);
                continue;
            };
            let slot = &mut self.tx[usize::from(i)];
            slot.hdr = emit_vnet_hdr(&buf.meta.offload);
            let data = buf.data();
            slot.iov = [
                libc::iovec {
                    iov_base: slot.hdr.as_mut_ptr().cast(),
                    iov_len: VNET_HDR_LEN,
                },
                libc::iovec {
                    // The kernel only reads through it (a write).
                    iov_base: data.as_ptr().cast_mut().cast(),
                    iov_len: data.len(),
                },
            ];
            let entry = opcode::Writev::new(types::Fd(self.tap), slot.iov.as_ptr(), 2)
                .build()
                .user_data(TX_TAG | u64::from(i));
            // SAFETY: the iovecs point into the slot's header (the slot box never moves)
            // and `buf`'s pool buffer, which stays in the slot until the write's
            // completion is reaped or the drop has waited for it.
            let pushed = unsafe { self.ring.submission().push(&entry) };
            if pushed.is_err() {
                self.tx_free.push(i);
                full = true;
                let _ = batch.push(buf);
                continue;
            }
            slot.buf = Some(buf);
            slot.call = call;
            self.unsubmitted = true;
        }
        self.submit();
        sent += self.reap(c, call);
        sent
    }

    /// Requests still with the kernel.
    fn outstanding(&self) -> usize {
        usize::from(self.reading) + self.tx.iter().filter(|s| s.buf.is_some()).count()
    }
}

impl Drop for RingIo {
    fn drop(&mut self) {
        if self.reading {
            let cancel = opcode::AsyncCancel::new(RX_READ)
                .build()
                .user_data(CANCEL_TAG);
            // SAFETY: a cancel request carries no buffer.
            let _ = unsafe { self.ring.submission().push(&cancel) };
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let mut c = Counters::default();
        loop {
            // Writes are freed by `reap`; frames read before the end are dropped.
            self.reap(&mut c, 0);
            while self.ready.pop().is_some() {}
            if self.outstanding() == 0 || Instant::now() >= deadline {
                break;
            }
            let wait = types::Timespec::new().nsec(50_000_000);
            let args = types::SubmitArgs::new().timespec(&wait);
            if let Err(e) = self.ring.submitter().submit_with_args(1, &args)
                && e.raw_os_error() != Some(libc::ETIME)
            {
                // No timed wait on this kernel (or a signal): do not spin.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if self.outstanding() == 0 {
            // The read has ended: no buffer in the ring is written any more.
            let _ = self.ring.submitter().unregister_buf_ring(RX_BGID);
            return;
        }
        tracing::warn!(
            requests = self.outstanding(),
            "tap io_uring: the kernel kept buffers past the drop; leaking them"
        );
        if self.reading {
            for buf in self.rx.iter_mut().filter_map(Option::take) {
                std::mem::forget(buf);
            }
        }
        for slot in self.tx.iter_mut() {
            if let Some(buf) = slot.buf.take() {
                std::mem::forget(buf);
            }
        }
    }
}
