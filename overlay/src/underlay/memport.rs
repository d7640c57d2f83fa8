//! [`MemPort`]: an in-memory Ethernet port, a piece of wire whose two ends are a
//! [`MemPort`] (given to an [`super::L2Underlay`]) and a [`MemWire`] handle (kept by a
//! test, fuzzer or benchmark to put frames on the wire and take what was sent).
//!
//! It models no peer: whatever answers ARP or sends datagrams on it is the caller,
//! through real frames. Frames cross the wire in batches, under one lock per batch.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use pkt::{Batch, Mempool, Offloads, PktBuf, Port, PortCaps, PortKind, PortStats};

#[derive(Debug, Default)]
struct Wire {
    to_port: VecDeque<PktBuf>,
    from_port: VecDeque<PktBuf>,
    tx_limit: Option<usize>,
    rx_packets: u64,
    tx_packets: u64,
}

/// The port end of an in-memory Ethernet wire.
#[derive(Debug)]
pub struct MemPort {
    wire: Arc<Mutex<Wire>>,
    mtu: usize,
    offloads: Offloads,
    staged: Vec<PktBuf>,
}

/// The caller's end of an in-memory Ethernet wire.
#[derive(Debug, Clone)]
pub struct MemWire {
    wire: Arc<Mutex<Wire>>,
    pool: Mempool,
}

fn lock(w: &Mutex<Wire>) -> MutexGuard<'_, Wire> {
    // A panic elsewhere while holding the lock leaves plain queues: still usable.
    w.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl MemPort {
    /// A wire with an L3 MTU of `mtu`; frames the caller puts on it are copied into
    /// buffers from `pool`.
    pub fn new(pool: Mempool, mtu: usize) -> (Self, MemWire) {
        let wire = Arc::new(Mutex::new(Wire::default()));
        (
            Self {
                wire: Arc::clone(&wire),
                mtu,
                offloads: Offloads::NONE,
                staged: Vec::with_capacity(pkt::BATCH_MAX),
            },
            MemWire { wire, pool },
        )
    }

    /// Takes frames with external tails as they are (`EXT_TAIL`), as a NIC that gathers
    /// does; [`MemWire::take_sent`] then returns them with their tails.
    pub fn with_ext_tail(mut self) -> Self {
        self.offloads = Offloads::EXT_TAIL;
        self
    }
}

impl MemWire {
    /// Puts a copy of `frame` on the wire towards the port. False when the pool has no
    /// buffer or the frame does not fit one.
    pub fn inject(&self, frame: &[u8]) -> bool {
        let Some(mut b) = self.pool.alloc() else {
            return false;
        };
        if b.extend_from_slice(frame).is_err() {
            return false;
        }
        lock(&self.wire).to_port.push_back(b);
        true
    }

    /// Puts an already built frame on the wire towards the port.
    pub fn inject_buf(&self, frame: PktBuf) {
        lock(&self.wire).to_port.push_back(frame);
    }

    /// Takes every frame the port sent, oldest first.
    pub fn take_sent(&self) -> Vec<PktBuf> {
        lock(&self.wire).from_port.drain(..).collect()
    }

    /// Frames the port sent and nobody took yet.
    pub fn sent_len(&self) -> usize {
        lock(&self.wire).from_port.len()
    }

    /// Drops every frame the port sent (returning buffers to the pool).
    pub fn discard_sent(&self) {
        lock(&self.wire).from_port.clear();
    }

    /// Frames waiting to be received by the port.
    pub fn pending(&self) -> usize {
        lock(&self.wire).to_port.len()
    }

    /// Makes the port accept at most `n` frames per `tx_batch` (a full ring), or any
    /// number with `None`.
    pub fn set_tx_limit(&self, n: Option<usize>) {
        lock(&self.wire).tx_limit = n;
    }
}

impl Port for MemPort {
    fn name(&self) -> &str {
        "mem"
    }

    fn rx_batch(&mut self, batch: &mut Batch) -> usize {
        let mut w = lock(&self.wire);
        let mut n = 0;
        while !batch.is_full() {
            let Some(b) = w.to_port.pop_front() else {
                break;
            };
            let _ = batch.push(b);
            n += 1;
        }
        w.rx_packets += n as u64;
        n
    }

    fn tx_batch(&mut self, batch: &mut Batch) -> usize {
        let mut w = lock(&self.wire);
        let n = w.tx_limit.unwrap_or(usize::MAX).min(batch.len());
        self.staged.extend(batch.drain());
        let mut rest = self.staged.drain(..);
        for b in rest.by_ref().take(n) {
            w.from_port.push_back(b);
        }
        for b in rest {
            // Cannot fail: these came out of this batch.
            let _ = batch.push(b);
        }
        w.tx_packets += n as u64;
        n
    }

    fn caps(&self) -> PortCaps {
        PortCaps {
            kind: PortKind::Ethernet,
            mtu: self.mtu,
            rx_queues: 1,
            tx_queues: 1,
            offloads: self.offloads,
        }
    }

    fn stats(&self) -> PortStats {
        let w = lock(&self.wire);
        PortStats {
            rx_packets: w.rx_packets,
            rx_bytes: 0,
            tx_packets: w.tx_packets,
            tx_bytes: 0,
            drops: Vec::new(),
        }
    }

    fn poll_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
}
