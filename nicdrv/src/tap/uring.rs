//! Batched tap I/O through io_uring: receive reads stay posted on the tap like a NIC's
//! receive ring, and a transmit batch goes to the kernel as one `io_uring_enter`.
//!
//! Receive: [`RingIo`] keeps up to [`RX_SLOTS`] `readv`s posted, each into its own pool
//! buffer (header into the headroom, frame at [`HEADROOM`], plus one shared overflow
//! byte that tells a cut frame from one that fits). A completed read is one frame; the
//! slot is posted again with a fresh buffer. Reaping completions reads shared memory
//! only: a receive call with nothing ready makes no system call.
//!
//! Transmit: one `writev` (virtio-net header, frame) per frame, all submitted with one
//! `io_uring_enter`. A frame's buffer stays in its [`TxSlot`] until the kernel
//! completes the write; at most [`TX_SLOTS`] writes are in flight and frames beyond
//! that stay in the caller's batch (not accepted).
//!
//! Wake-ups: an eventfd registered with the ring (`IORING_REGISTER_EVENTFD`) is
//! signalled on every completion; it is the port's poll fd.
//!
//! Teardown: every posted read is cancelled and the drop waits (bounded) until the
//! kernel has completed every request; a buffer whose request is still outstanding
//! after that is leaked rather than returned to the pool, so a buffer the kernel may
//! still write is never reused.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::{IoUring, opcode, types};
use pkt::{Batch, HEADROOM, Mempool, PktBuf};

use super::{Counters, ETH_HLEN, VNET_HDR_LEN, emit_vnet_hdr, parse_vnet_hdr};

/// Receive reads kept posted (fewer with a small pool: a quarter of its buffers).
pub(crate) const RX_SLOTS: usize = 64;
/// Transmit writes in flight at most.
pub(crate) const TX_SLOTS: usize = 128;
/// Submission queue entries: every repost and every write of one call fit at once.
const SQ_ENTRIES: u32 = 256;
/// How long a receive slot rests after an error completion or an empty pool before
/// it is posted again: a dead device must not turn into a busy loop.
const RX_RETRY: Duration = Duration::from_millis(1);
/// How long a drop waits for the kernel to give back buffers.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// `user_data` bit marking a transmit write (clear: a receive read).
const TX_TAG: u64 = 1 << 63;
/// `user_data` of cancel requests (their completions carry no buffer).
const CANCEL_TAG: u64 = 1 << 62;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RxState {
    /// No read posted; the slot may hold a buffer to post next.
    Idle,
    /// A read is with the kernel: the buffer must not be touched.
    Posted,
    /// The read completed with this result; the frame waits in the ready queue.
    Done(i32),
}

struct RxSlot {
    buf: Option<PktBuf>,
    /// Frame space and the shared overflow byte; the kernel reads it at submission.
    iov: [libc::iovec; 2],
    state: RxState,
}

struct TxSlot {
    buf: Option<PktBuf>,
    hdr: [u8; VNET_HDR_LEN],
    iov: [libc::iovec; 2],
    /// The `tx_batch` call that submitted it, to count what one call sent.
    call: u64,
}

/// A fixed ring of receive slot indices in completion order.
struct ReadyQueue {
    slots: Box<[u16]>,
    head: usize,
    len: usize,
}

impl ReadyQueue {
    fn new(cap: usize) -> Self {
        Self {
            slots: vec![0; cap].into_boxed_slice(),
            head: 0,
            len: 0,
        }
    }

    /// Never full: each receive slot is in the queue at most once.
    fn push(&mut self, slot: u16) {
        if self.len < self.slots.len() {
            let at = (self.head + self.len) % self.slots.len();
            self.slots[at] = slot;
            self.len += 1;
        }
    }

    fn pop(&mut self) -> Option<u16> {
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
    rx: Box<[RxSlot]>,
    /// Sink for the byte past a receive buffer; its content is never read.
    overflow: Box<[u8; 1]>,
    ready: ReadyQueue,
    /// Receive slots to post on the next call, and those resting until `retry_at`.
    rx_idle: Vec<u16>,
    rx_resting: Vec<u16>,
    retry_at: Option<Instant>,
    tx: Box<[TxSlot]>,
    tx_free: Vec<u16>,
    /// Swapped with the caller's batch in `tx_batch` so unaccepted frames go back in
    /// order without allocating.
    scratch: Batch,
    tx_call: u64,
    /// Entries pushed to the submission queue that a failed submit left there.
    unsubmitted: bool,
}

// SAFETY: the raw pointers in the iovecs point into pool buffers and boxes the struct
// owns; they are only used by the kernel, and `RingIo` is used by one thread at a time
// like the rest of the port.
unsafe impl Send for RingIo {}

const EMPTY_IOV: libc::iovec = libc::iovec {
    iov_base: std::ptr::null_mut(),
    iov_len: 0,
};

impl RingIo {
    /// Sets up the ring on `tap` (which must stay open until this is dropped) and posts
    /// the receive reads. Fails when the kernel refuses io_uring (ENOSYS, EPERM).
    pub(crate) fn new(tap: BorrowedFd<'_>, pool: &Mempool) -> std::io::Result<Self> {
        let ring = IoUring::builder()
            .setup_cqsize(SQ_ENTRIES * 2)
            .build(SQ_ENTRIES)?;
        let eventfd = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?;
        ring.submitter().register_eventfd(eventfd.as_raw_fd())?;
        let rx_slots = (pool.capacity() / 4).clamp(1, RX_SLOTS);
        let rx = (0..rx_slots)
            .map(|_| RxSlot {
                buf: None,
                iov: [EMPTY_IOV; 2],
                state: RxState::Idle,
            })
            .collect();
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
            rx,
            overflow: Box::new([0]),
            ready: ReadyQueue::new(rx_slots),
            rx_idle: (0..rx_slots as u16).rev().collect(),
            rx_resting: Vec::with_capacity(rx_slots),
            retry_at: None,
            tx,
            tx_free: (0..TX_SLOTS as u16).rev().collect(),
            scratch: Batch::new(),
            tx_call: 0,
            unsubmitted: false,
        };
        let mut c = Counters::default();
        io.post_idle(pool, &mut c);
        io.submit();
        Ok(io)
    }

    /// The eventfd signalled on every completion.
    pub(crate) fn poll_fd(&self) -> BorrowedFd<'_> {
        self.eventfd.as_fd()
    }

    /// Resets the eventfd so the next wait sleeps until a new completion.
    pub(crate) fn clear_poll_fd(&mut self) {
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
            let i = ud as usize;
            if let Some(slot) = self.rx.get_mut(i)
                && slot.state == RxState::Posted
            {
                slot.state = RxState::Done(res);
                self.ready.push(i as u16);
            }
        }
        sent
    }

    /// Posts a read on every idle receive slot (a fresh buffer each when the slot has
    /// none). Slots the pool cannot fill rest until the retry time.
    fn post_idle(&mut self, pool: &Mempool, c: &mut Counters) {
        let mut starved = false;
        while let Some(i) = self.rx_idle.pop() {
            let slot = &mut self.rx[usize::from(i)];
            let Some(mut buf) = slot.buf.take().or_else(|| pool.alloc()) else {
                starved = true;
                self.rx_resting.push(i);
                continue;
            };
            // The header lands in the headroom, the frame at HEADROOM.
            let space = buf.reset_for_rx(HEADROOM - VNET_HDR_LEN);
            slot.iov = [
                libc::iovec {
                    iov_base: space.as_mut_ptr().cast(),
                    iov_len: space.len(),
                },
                libc::iovec {
                    iov_base: self.overflow.as_mut_ptr().cast(),
                    iov_len: 1,
                },
            ];
            let entry = opcode::Readv::new(types::Fd(self.tap), slot.iov.as_ptr(), 2)
                .build()
                .user_data(u64::from(i));
            // SAFETY: the iovecs point into `buf`'s pool buffer and `self.overflow`;
            // the buffer stays in the slot (state `Posted`, untouched) until the read's
            // completion is reaped or the drop has waited for it, and the overflow box
            // lives as long as the ring. The iovec array itself lives in the slot.
            let pushed = unsafe { self.ring.submission().push(&entry) };
            slot.buf = Some(buf);
            if pushed.is_err() {
                // Cannot happen with SQ_ENTRIES above every slot; try again later.
                self.rx_resting.push(i);
                continue;
            }
            slot.state = RxState::Posted;
            self.unsubmitted = true;
        }
        if starved {
            c.rx_no_buffer += 1;
        }
        if !self.rx_resting.is_empty() && self.retry_at.is_none() {
            self.retry_at = Some(Instant::now() + RX_RETRY);
        }
    }

    /// One `io_uring_enter` for everything pushed; on failure the entries stay queued
    /// for the next call.
    fn submit(&mut self) {
        if self.unsubmitted && self.ring.submit().is_ok() {
            self.unsubmitted = false;
        }
    }

    /// Delivers completed reads to `batch`, posts their slots again, submits once.
    pub(crate) fn rx_batch(
        &mut self,
        batch: &mut Batch,
        pool: &Mempool,
        c: &mut Counters,
    ) -> usize {
        self.reap(c, 0);
        let mut pushed = 0;
        while batch.room() > 0 {
            let Some(i) = self.ready.pop() else { break };
            let slot = &mut self.rx[usize::from(i)];
            let RxState::Done(res) = slot.state else {
                continue;
            };
            slot.state = RxState::Idle;
            if res < 0 {
                // EIO/EBADFD when the device goes away, EAGAIN if the kernel would
                // not wait: counted, and the slot rests before it reads again.
                c.rx_error += 1;
                self.rx_resting.push(i);
                continue;
            }
            let n = res as usize;
            let Some(mut buf) = slot.buf.take() else {
                self.rx_idle.push(i);
                continue;
            };
            let room = buf.tailroom();
            if n > room {
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
                    if let Err(back) = batch.push(buf) {
                        // Cannot happen (room checked); the buffer reads again.
                        slot.buf = Some(back);
                    } else {
                        c.rx_packets += 1;
                        c.rx_bytes += len as u64;
                        pushed += 1;
                    }
                    self.rx_idle.push(i);
                    continue;
                }
                c.rx_truncated += 1;
            } else {
                c.rx_truncated += 1;
            }
            // A dropped frame's buffer reads the next one.
            slot.buf = Some(buf);
            self.rx_idle.push(i);
        }
        if let Some(at) = self.retry_at
            && Instant::now() >= at
        {
            self.retry_at = None;
            self.rx_idle.append(&mut self.rx_resting);
        }
        if !self.rx_idle.is_empty() {
            self.post_idle(pool, c);
        }
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
        self.rx
            .iter()
            .filter(|s| s.state == RxState::Posted)
            .count()
            + self.tx.iter().filter(|s| s.buf.is_some()).count()
    }
}

impl Drop for RingIo {
    fn drop(&mut self) {
        for i in 0..self.rx.len() {
            if self.rx[i].state != RxState::Posted {
                continue;
            }
            let cancel = opcode::AsyncCancel::new(i as u64)
                .build()
                .user_data(CANCEL_TAG);
            // SAFETY: a cancel request carries no buffer.
            if unsafe { self.ring.submission().push(&cancel) }.is_err() {
                let _ = self.ring.submit();
                // SAFETY: as above.
                let _ = unsafe { self.ring.submission().push(&cancel) };
            }
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let mut c = Counters::default();
        loop {
            // Finished reads give their buffers back; writes are freed by `reap`.
            for slot in self.rx.iter_mut() {
                if matches!(slot.state, RxState::Done(_)) {
                    slot.state = RxState::Idle;
                }
            }
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
            self.reap(&mut c, 0);
        }
        let left = self.outstanding();
        if left > 0 {
            tracing::warn!(
                requests = left,
                "tap io_uring: the kernel kept buffers past the drop; leaking them"
            );
            for slot in self.rx.iter_mut().filter(|s| s.state == RxState::Posted) {
                if let Some(buf) = slot.buf.take() {
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
}
