//! Zero-copy transmit from the guest: a large frame's bytes past its headers stay in
//! the guest's buffer and travel as the frame's external tail ([`pkt::ExtSeg`]).
//!
//! The guest may reuse a transmit buffer once it is in the used ring, so a chain whose
//! bytes are lent out is not put there when the frame is built but when its tail comes
//! back: dropping (or joining) the frame pushes the tail's token into the port's
//! [`DoneRing`], which the port drains on its own thread at the start of each batch
//! ([`TxTails::drain`]) and then adds the used entries.
//!
//! A token names a slot of a fixed table (no allocation per frame); the slot records
//! the queue and head, the connection and queue generation it was lent under, and the
//! memory snapshot the bytes lie in. A token coming back after the guest went away or
//! reset the queue is counted (`tx_zero_copy_stale`) and never reaches a ring it does
//! not belong to, and a memory snapshot (with its DMA mappings) is kept until the last
//! tail lent from it is back. At most as many tails are out as the ring holds; past
//! that frames are copied as before (`tx_zero_copy_fallback`).
//!
//! This is the crate's one `unsafe` block: the promise [`ExtSeg::new`] asks for (the
//! bytes stay mapped until the token is back) is kept by this table, not by a type.

use std::ptr::NonNull;
use std::sync::Arc;

use pkt::{Completion, DmaMap, DoneRing, ExtSeg, PktBuf};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::chain::Seg;
use crate::net::MAX_QUEUE_PAIRS;

/// Bytes of a frame (after the virtio-net header) copied into the packet buffer when
/// the rest stays in the guest: every header routing, encapsulation and checksum
/// completion reads or writes (Ethernet + 802.1Q + IPv6 with options + TCP with
/// options) lies in them.
pub const COPY_HEAD: usize = 192;

/// Frames (without the virtio-net header) at least this long go zero-copy by default.
/// The `guest_tx` bench finds lending cheaper than copying from 256 bytes on (the
/// chain walk and header copy dominate below 1 KiB); 512 leaves small frames, which
/// save little, on the path that returns their buffers at once (docs/benchmarks.md,
/// issue 7).
pub const DEFAULT_THRESHOLD: usize = 512;

/// Most tails one port has out at once (the [`DoneRing`] capacity).
pub const MAX_IN_FLIGHT: usize = 512;

/// Bits of a token naming the slot; the rest is the slot's use count.
const SLOT_BITS: u32 = 10;
const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;

/// Queues a port has (receive and transmit of every pair).
const QUEUES: usize = 2 * MAX_QUEUE_PAIRS as usize;

/// What the zero-copy path did, for the port's events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TailCounters {
    /// Frames sent with their bytes left in the guest's buffer.
    pub zero_copy: u64,
    /// Frames long enough for zero-copy that were copied (scattered buffer, headers
    /// past the copied part, every slot out).
    pub fallback: u64,
    /// Tails that came back after their connection ended or their queue was reset:
    /// their chains were not returned to a ring they no longer belong to.
    pub stale: u64,
    /// Tails that were out when their guest went away.
    pub orphaned: u64,
    /// Memory regions a DMA map refused (their tails go without a device address).
    pub dma_map_failed: u64,
}

/// One lent-out chain.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    busy: bool,
    /// Bumped on every use, so a token names one use of the slot.
    seq: u32,
    conn: u32,
    qgen: u32,
    queue: u8,
    head: u16,
    /// Id of the memory snapshot the bytes lie in.
    snap: u32,
}

/// A guest memory map with the tails lent from it and its DMA mappings.
struct Snap {
    id: u32,
    mem: Arc<GuestMemoryMmap>,
    in_flight: usize,
    /// Per region: guest address, length, host address, device address if mapped.
    regions: Vec<Region>,
    /// The device map the regions were mapped through (unmapped through it too).
    dma: Option<Arc<dyn DmaMap>>,
}

#[derive(Debug, Clone, Copy)]
struct Region {
    gpa: u64,
    len: u64,
    host: usize,
    iova: Option<u64>,
}

/// Where a frame's tail lies: `len` bytes at guest address `gpa`, one region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailPlan {
    /// Guest address of the tail.
    pub gpa: u64,
    /// Its length.
    pub len: usize,
}

/// The zero-copy state of one port.
pub struct TxTails {
    ring: Arc<DoneRing>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    threshold: usize,
    conn: u32,
    qgen: [u32; QUEUES],
    /// Per queue: tails lent from it and not back yet (any connection).
    lent: [u32; QUEUES],
    /// The memory map tails are lent from now.
    current: Option<Snap>,
    /// Earlier maps with tails still out.
    retired: Vec<Snap>,
    next_snap: u32,
    dma: Option<Arc<dyn DmaMap>>,
    counters: TailCounters,
    /// The port's name, for the mapping logs.
    name: String,
}

impl std::fmt::Debug for TxTails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxTails")
            .field("threshold", &self.threshold)
            .field("in_flight", &self.in_flight())
            .field("counters", &self.counters)
            .finish()
    }
}

impl TxTails {
    /// Zero-copy for frames of at least `threshold` bytes (0: never), with at most
    /// `capacity` tails out (1 to [`MAX_IN_FLIGHT`]).
    pub fn new(threshold: usize, capacity: usize) -> Self {
        let capacity = capacity.clamp(1, MAX_IN_FLIGHT);
        Self {
            ring: DoneRing::new(capacity),
            slots: vec![Slot::default(); capacity],
            free: (0..capacity as u32).rev().collect(),
            // A frame shorter than the copied head has no tail to lend.
            threshold: if threshold == 0 {
                usize::MAX
            } else {
                threshold.max(COPY_HEAD + 1)
            },
            conn: 0,
            qgen: [0; QUEUES],
            lent: [0; QUEUES],
            current: None,
            retired: Vec::new(),
            next_snap: 0,
            dma: None,
            counters: TailCounters::default(),
            name: String::new(),
        }
    }

    /// Names the port in the logs of DMA mappings.
    pub fn with_name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// What the zero-copy path did.
    pub fn counters(&self) -> TailCounters {
        self.counters
    }

    /// Tails out now.
    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Tails lent from queue `q` that are not back yet.
    pub fn lent(&self, q: usize) -> u32 {
        self.lent.get(q).copied().unwrap_or(0)
    }

    /// True when tokens are waiting for [`TxTails::drain`].
    pub fn has_returns(&self) -> bool {
        !self.ring.is_empty()
    }

    /// Gives tails device addresses from now on: the current memory map is mapped at
    /// once (unless an earlier map has it), later ones when they arrive. Each memory
    /// map is unmapped through the map that mapped it.
    pub fn set_dma_map(&mut self, map: Arc<dyn DmaMap>) {
        self.dma = Some(map);
        if let Some(s) = self.current.as_mut() {
            map_regions(self.dma.as_ref(), s, &mut self.counters, &self.name);
        }
    }

    /// A new connection (or none): tails out now belong to the old one.
    pub fn new_connection(&mut self) {
        self.counters.orphaned += self.in_flight() as u64;
        self.conn = self.conn.wrapping_add(1);
        self.retire_current();
    }

    /// The guest stopped or reset queue `q`: chains lent from it are not its any more.
    pub fn reset_queue(&mut self, q: usize) {
        if let Some(g) = self.qgen.get_mut(q) {
            *g = g.wrapping_add(1);
        }
    }

    /// Makes `mem` the memory tails are lent from (a pointer comparison when it is
    /// already). The previous map is kept until its tails are back.
    pub fn set_memory(&mut self, mem: &Arc<GuestMemoryMmap>) {
        if self
            .current
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(&s.mem, mem))
        {
            return;
        }
        self.retire_current();
        let mut s = Snap {
            id: self.next_snap,
            mem: Arc::clone(mem),
            in_flight: 0,
            dma: None,
            regions: mem
                .iter()
                .filter_map(|r| {
                    let host = mem.get_host_address(r.start_addr()).ok()? as usize;
                    Some(Region {
                        gpa: r.start_addr().0,
                        len: r.len(),
                        host,
                        iova: None,
                    })
                })
                .collect(),
        };
        self.next_snap = self.next_snap.wrapping_add(1);
        map_regions(self.dma.as_ref(), &mut s, &mut self.counters, &self.name);
        self.current = Some(s);
    }

    /// The memory tails are lent from now.
    pub fn memory(&self) -> Option<&Arc<GuestMemoryMmap>> {
        self.current.as_ref().map(|s| &s.mem)
    }

    /// Whether a frame of `frame_len` bytes (after the virtio-net header) should go
    /// zero-copy; counts it as a fallback when it should but no slot is free.
    #[inline]
    pub fn wants(&mut self, frame_len: usize) -> bool {
        if frame_len < self.threshold {
            return false;
        }
        if self.free.is_empty() || self.current.is_none() {
            self.counters.fallback += 1;
            return false;
        }
        true
    }

    /// Counts `n` returned chains that could not go back to their ring (the queue went
    /// away or broke meanwhile).
    pub fn count_stale(&mut self, n: usize) {
        self.counters.stale += n as u64;
    }

    /// Counts a frame that [`TxTails::wants`] accepted but that was copied after all.
    pub fn fell_back(&mut self) {
        self.counters.fallback += 1;
    }

    /// Where the chain's bytes from `from` to `total` lie, when that is one range of
    /// guest memory inside one region (segments that follow each other in guest memory
    /// count as one).
    pub fn plan(&self, segs: &[Seg], from: usize, total: usize) -> Option<TailPlan> {
        let mem = self.memory()?;
        let mut off = 0usize;
        let mut start: Option<u64> = None;
        let mut next_addr = 0u64;
        for s in segs {
            let (addr, len) = (s.addr, s.len as usize);
            match start {
                None if off + len > from => {
                    start = Some(addr + (from - off) as u64);
                    next_addr = addr + len as u64;
                }
                None => {}
                Some(_) if addr == next_addr => next_addr = addr + len as u64,
                Some(_) => return None,
            }
            off += len;
        }
        let gpa = start?;
        let len = total.checked_sub(from)?;
        // One region: the host bytes are one mapping.
        mem.get_slice(GuestAddress(gpa), len).ok()?;
        // Frames go to a NIC (a DMA map is set) but this region could not be mapped:
        // the NIC would copy the tail anyway, so copy it here and give the chain back
        // at once instead of after the send.
        if self.dma.is_some()
            && self.current.as_ref().is_some_and(|s| {
                s.regions
                    .iter()
                    .any(|r| gpa >= r.gpa && gpa - r.gpa < r.len && r.iova.is_none())
            })
        {
            return None;
        }
        Some(TailPlan { gpa, len })
    }

    /// Hangs the planned tail behind `buf` and lends chain `head` of queue `q` out.
    /// False (nothing changed) when the plan no longer fits the memory or no slot is
    /// free.
    pub fn attach(&mut self, q: usize, head: u16, plan: TailPlan, buf: &mut PktBuf) -> bool {
        let Some(snap) = self.current.as_mut() else {
            return false;
        };
        let Ok(len) = u32::try_from(plan.len) else {
            return false;
        };
        let Ok(slice) = snap.mem.get_slice(GuestAddress(plan.gpa), plan.len) else {
            return false;
        };
        let Some(ptr) = NonNull::new(slice.ptr_guard().as_ptr().cast_mut()) else {
            return false;
        };
        let dma = snap
            .regions
            .iter()
            .find(|r| plan.gpa >= r.gpa && plan.gpa - r.gpa < r.len)
            .and_then(|r| r.iova.map(|iova| iova + (plan.gpa - r.gpa)));
        let Some(i) = self.free.pop() else {
            return false;
        };
        let slot = &mut self.slots[i as usize];
        slot.seq = slot.seq.wrapping_add(1);
        *slot = Slot {
            busy: true,
            seq: slot.seq,
            conn: self.conn,
            qgen: self.qgen.get(q).copied().unwrap_or(0),
            queue: q as u8,
            head,
            snap: snap.id,
        };
        let token = (slot.seq << SLOT_BITS) | i;
        snap.in_flight += 1;
        if let Some(l) = self.lent.get_mut(q) {
            *l += 1;
        }
        let done = Completion::new(Arc::clone(&self.ring), token);
        #[allow(unsafe_code)]
        // SAFETY: `ptr..ptr+len` is one range inside a region of `snap.mem` (checked by
        // `get_slice`). The snapshot is kept (with its DMA mapping) until this token
        // is back: `drain` drops a retired snapshot only when its `in_flight` reaches
        // 0, and `Drop` leaks those still lent from. The guest owns the bytes and must
        // not write them before the chain is in the used ring, which happens only after
        // the token is back; a guest that does anyway only changes its own frame.
        let seg = unsafe { ExtSeg::new(ptr, len, dma, done) };
        buf.attach_ext(seg);
        self.counters.zero_copy += 1;
        true
    }

    /// Takes back every finished tail: `used(queue, head)` for each chain that still
    /// belongs to the current connection and queue generation; stale ones are counted.
    pub fn drain(&mut self, mut used: impl FnMut(usize, u16)) {
        while let Some(token) = self.ring.pop() {
            let i = token & SLOT_MASK;
            let Some(slot) = self.slots.get_mut(i as usize) else {
                continue;
            };
            if !slot.busy || (slot.seq << SLOT_BITS) >> SLOT_BITS != token >> SLOT_BITS {
                // Not a token we have out: ignore it (cannot happen but costs nothing).
                self.counters.stale += 1;
                continue;
            }
            slot.busy = false;
            let s = *slot;
            self.free.push(i);
            let q = usize::from(s.queue);
            if let Some(l) = self.lent.get_mut(q) {
                *l = l.saturating_sub(1);
            }
            if s.conn == self.conn && self.qgen.get(q) == Some(&s.qgen) {
                used(q, s.head);
            } else {
                self.counters.stale += 1;
            }
            match self.current.as_mut() {
                Some(c) if c.id == s.snap => c.in_flight -= 1,
                _ => {
                    if let Some(pos) = self.retired.iter().position(|m| m.id == s.snap) {
                        self.retired[pos].in_flight -= 1;
                        if self.retired[pos].in_flight == 0 {
                            let old = self.retired.swap_remove(pos);
                            unmap_regions(&old);
                        }
                    }
                }
            }
        }
    }

    /// The current memory map stops being current: dropped now if nothing is lent from
    /// it, else when its last tail is back.
    fn retire_current(&mut self) {
        if let Some(old) = self.current.take() {
            if old.in_flight == 0 {
                unmap_regions(&old);
            } else {
                self.retired.push(old);
            }
        }
    }
}

impl Drop for TxTails {
    fn drop(&mut self) {
        // Frames holding tails may outlive the port (queued on another port): their
        // memory must stay mapped, so maps with tails out are leaked, not unmapped.
        let mut leaked = 0;
        for s in self.retired.drain(..).chain(self.current.take()) {
            if s.in_flight > 0 {
                leaked += s.in_flight;
                std::mem::forget(s);
            } else {
                unmap_regions(&s);
            }
        }
        if leaked > 0 {
            tracing::warn!(
                tails = leaked,
                "port closed with tails out: their guest memory stays mapped"
            );
        }
    }
}

/// Maps every region of `s` for device reads (when a map is set and it is not yet).
/// Logs once per memory map how much of it the NIC can read in place.
fn map_regions(
    dma: Option<&Arc<dyn DmaMap>>,
    s: &mut Snap,
    counters: &mut TailCounters,
    port: &str,
) {
    let Some(dma) = dma else { return };
    if s.dma.is_some() {
        return;
    }
    // Unmapped later through the same map, even if the port gets another meanwhile.
    s.dma = Some(Arc::clone(dma));
    let mut failed = 0u64;
    for r in s.regions.iter_mut() {
        #[allow(unsafe_code)]
        // SAFETY: `host..host+len` is a region of `s.mem`, which stays mapped until
        // `unmap_regions` runs for it (after its last tail is back) or forever (leaked
        // by `TxTails::drop` while tails are out).
        let mapped = unsafe { dma.map(r.host as *const u8, r.len as usize) };
        match mapped {
            Ok(iova) => r.iova = Some(iova),
            Err(e) => {
                failed += 1;
                counters.dma_map_failed += 1;
                tracing::warn!(
                    port,
                    gpa = r.gpa,
                    len = r.len,
                    error = %e,
                    "guest memory region not DMA-mapped: its frames are copied (counted in dma_map_failed, tx_zero_copy_fallback)"
                );
            }
        }
    }
    let total: u64 = s.regions.iter().map(|r| r.len).sum();
    let mapped_bytes: u64 = s
        .regions
        .iter()
        .filter(|r| r.iova.is_some())
        .map(|r| r.len)
        .sum();
    tracing::info!(
        port,
        regions = s.regions.len(),
        mapped_bytes,
        total_bytes = total,
        failed,
        "guest memory mapped for NIC reads (zero-copy transmit)"
    );
}

/// Removes the DMA mappings of `s` (every tail lent from it is back).
fn unmap_regions(s: &Snap) {
    let Some(dma) = s.dma.as_deref() else { return };
    for r in &s.regions {
        if let Some(iova) = r.iova {
            dma.unmap(iova, r.len as usize);
        }
    }
}
