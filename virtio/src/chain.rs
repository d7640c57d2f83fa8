//! Walking a guest's descriptor chain (virtio 1.2, 2.7.5 and 2.7.5.3) into a bounded list
//! of checked segments. Every field comes from guest memory and is untrusted: indices,
//! addresses, lengths, flags and indirect tables are checked here, once, so the data path
//! only ever copies to or from ranges that lie inside guest memory.
//!
//! We walk the table ourselves rather than with `virtio_queue::DescriptorChain`, whose
//! iterator ends silently on a bad descriptor: a guest's mistake must become a named drop
//! counter, not a short frame.

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};

/// Most segments one chain may have (direct plus indirect). Linux and DPDK use 1 to 3 for
/// a frame; 64 leaves room for scattered jumbo frames and bounds the work per chain.
pub const MAX_SEGS: usize = 64;

/// Size of one split-ring descriptor in bytes.
const DESC_SIZE: u64 = 16;

/// One checked guest buffer: `len` bytes at guest physical address `addr`, all inside
/// guest memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seg {
    /// Guest physical address.
    pub addr: u64,
    /// Length in bytes (never 0).
    pub len: u32,
}

/// Why a chain was refused. Each maps to one named drop counter ([`ChainError::counter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainError {
    /// A head or `next` index outside the descriptor table.
    BadIndex,
    /// The chain visits more descriptors than the table holds: a loop.
    Loop,
    /// A malformed indirect descriptor: nested, combined with NEXT, not negotiated, or a
    /// table length that is zero or not a multiple of 16.
    BadIndirect,
    /// A descriptor, indirect table or buffer outside guest memory.
    BadAddress,
    /// A buffer of length zero.
    ZeroLength,
    /// A device-writable buffer where a readable one was expected, or the reverse.
    WrongDirection,
    /// More than [`MAX_SEGS`] buffers.
    TooManySegments,
    /// More bytes than the caller can take (`max_total`).
    TooLong,
}

impl ChainError {
    /// The stable name of the drop counter for this error.
    pub fn counter(self) -> &'static str {
        match self {
            Self::BadIndex => "bad_desc_index",
            Self::Loop => "bad_desc_loop",
            Self::BadIndirect => "bad_desc_indirect",
            Self::BadAddress => "bad_desc_address",
            Self::ZeroLength => "bad_desc_zero_len",
            Self::WrongDirection => "bad_desc_direction",
            Self::TooManySegments => "bad_desc_too_many_segments",
            Self::TooLong => "bad_desc_too_long",
        }
    }

    /// Every error, in counter order (for building statistics).
    pub const ALL: [ChainError; 8] = [
        Self::BadIndex,
        Self::Loop,
        Self::BadIndirect,
        Self::BadAddress,
        Self::ZeroLength,
        Self::WrongDirection,
        Self::TooManySegments,
        Self::TooLong,
    ];

    /// Position of this error in [`ChainError::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What a walk expects of the chain.
#[derive(Debug, Clone, Copy)]
pub struct WalkRules {
    /// `true` for device-writable buffers (a receive queue), `false` for readable (transmit).
    /// Ignored when `mixed` is set.
    pub writable: bool,
    /// Readable buffers followed by writable ones (a control queue command and its ack,
    /// virtio 1.2, 5.1.6.5); a readable buffer after a writable one is `WrongDirection`.
    pub mixed: bool,
    /// Whether `VIRTIO_F_RING_INDIRECT_DESC` was negotiated.
    pub indirect: bool,
    /// Most bytes the chain may hold in total.
    pub max_total: u64,
}

/// A walked chain: its checked segments in order and their total length.
#[derive(Debug, Clone)]
pub struct Chain {
    segs: [Seg; MAX_SEGS],
    n: usize,
    total: u64,
    readable: usize,
}

impl Default for Chain {
    fn default() -> Self {
        Self {
            segs: [Seg::default(); MAX_SEGS],
            n: 0,
            total: 0,
            readable: 0,
        }
    }
}

impl Chain {
    /// The segments, in chain order.
    pub fn segs(&self) -> &[Seg] {
        &self.segs[..self.n]
    }

    /// Total bytes over all segments.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Of a chain walked with `mixed` rules: the leading readable segments (the rest are
    /// writable). Otherwise 0 for a writable chain and all segments for a readable one.
    pub fn readable(&self) -> usize {
        self.readable
    }

    /// The segments after the readable ones (a `mixed` chain's writable part).
    pub fn writable_segs(&self) -> &[Seg] {
        &self.segs[self.readable..self.n]
    }

    /// Walks the chain starting at descriptor `head` of the table at `table` (with
    /// `queue_size` entries), replacing this chain's contents. On error the contents are
    /// unspecified.
    pub fn walk<M: GuestMemory>(
        &mut self,
        mem: &M,
        table: GuestAddress,
        queue_size: u16,
        head: u16,
        rules: WalkRules,
    ) -> Result<(), ChainError> {
        self.n = 0;
        self.total = 0;
        self.readable = 0;
        let mut seen_write = false;
        let mut table = table;
        let mut size = u32::from(queue_size);
        let mut idx = u32::from(head);
        // A chain can visit each descriptor of its table at most once. The indices seen
        // in the current table are kept (a chain has at most MAX_SEGS + 1 of them), so a
        // loop is named as such before the length or segment limits would trip.
        let mut visited = [0u16; MAX_SEGS + 1];
        let mut nv = 0usize;
        let mut ttl = size;
        let mut in_indirect = false;
        loop {
            if idx >= size {
                return Err(ChainError::BadIndex);
            }
            if ttl == 0 || visited[..nv].contains(&(idx as u16)) {
                return Err(ChainError::Loop);
            }
            if nv == visited.len() {
                return Err(ChainError::TooManySegments);
            }
            visited[nv] = idx as u16;
            nv += 1;
            ttl -= 1;
            let at = table
                .checked_add(u64::from(idx) * DESC_SIZE)
                .ok_or(ChainError::BadAddress)?;
            let desc: Descriptor = mem.read_obj(at).map_err(|_| ChainError::BadAddress)?;
            if desc.refers_to_indirect_table() {
                // virtio 1.2, 2.7.5.3.1: no nesting, no NEXT together with INDIRECT.
                if in_indirect || !rules.indirect || desc.has_next() {
                    return Err(ChainError::BadIndirect);
                }
                let len = u64::from(desc.len());
                if len == 0 || len % DESC_SIZE != 0 || len / DESC_SIZE > u64::from(u16::MAX) {
                    return Err(ChainError::BadIndirect);
                }
                if !mem.check_range(desc.addr(), len as usize, Permissions::Read) {
                    return Err(ChainError::BadAddress);
                }
                table = desc.addr();
                size = (len / DESC_SIZE) as u32;
                ttl = size;
                idx = 0;
                nv = 0;
                in_indirect = true;
                continue;
            }
            let len = desc.len();
            if len == 0 {
                return Err(ChainError::ZeroLength);
            }
            let write = desc.is_write_only();
            if rules.mixed {
                if !write && seen_write {
                    return Err(ChainError::WrongDirection);
                }
                seen_write |= write;
            } else if write != rules.writable {
                return Err(ChainError::WrongDirection);
            }
            if self.n == MAX_SEGS {
                return Err(ChainError::TooManySegments);
            }
            self.total += u64::from(len);
            if self.total > rules.max_total {
                return Err(ChainError::TooLong);
            }
            let perm = if write {
                Permissions::Write
            } else {
                Permissions::Read
            };
            if !mem.check_range(desc.addr(), len as usize, perm) {
                return Err(ChainError::BadAddress);
            }
            self.segs[self.n] = Seg {
                addr: desc.addr().0,
                len,
            };
            self.n += 1;
            if !write {
                self.readable = self.n;
            }
            if !desc.has_next() {
                return Ok(());
            }
            idx = u32::from(desc.next());
        }
    }

    /// Copies the chain's bytes from `offset` on into `out`, as far as both reach; returns
    /// the bytes copied. Segments were checked by [`Chain::walk`]; a failure here means
    /// guest memory changed under us and is reported as `None`.
    pub fn read_at<M: GuestMemory>(&self, mem: &M, offset: u64, out: &mut [u8]) -> Option<usize> {
        self.copy(offset, out.len(), |seg_addr, done, n| {
            mem.read_slice(&mut out[done..done + n], seg_addr).is_ok()
        })
    }

    /// Copies `bytes` into the chain's buffers from `offset` on, as far as the chain
    /// reaches; returns the bytes written (`None` if guest memory refused a write).
    pub fn write_at<M: GuestMemory>(&self, mem: &M, offset: u64, bytes: &[u8]) -> Option<usize> {
        self.copy(offset, bytes.len(), |seg_addr, done, n| {
            mem.write_slice(&bytes[done..done + n], seg_addr).is_ok()
        })
    }

    fn copy(
        &self,
        offset: u64,
        want: usize,
        mut f: impl FnMut(GuestAddress, usize, usize) -> bool,
    ) -> Option<usize> {
        let mut skip = offset;
        let mut done = 0usize;
        for seg in self.segs() {
            if done == want {
                break;
            }
            let len = u64::from(seg.len);
            if skip >= len {
                skip -= len;
                continue;
            }
            let n = ((len - skip) as usize).min(want - done);
            if !f(GuestAddress(seg.addr + skip), done, n) {
                return None;
            }
            done += n;
            skip = 0;
        }
        Some(done)
    }
}

#[cfg(test)]
mod tests;
