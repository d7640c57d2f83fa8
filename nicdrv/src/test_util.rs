//! Frame and batch builders shared by the igb and ixgbe model tests.

use pkt::{Batch, Mempool};

use crate::igb::Registers;

/// A frame to `dst` from 02:00:00:00:00:01 whose payload encodes `seq`, `len` bytes
/// long.
pub(crate) fn seq_frame(dst: [u8; 6], seq: u32, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(&seq.to_be_bytes());
    while f.len() < len {
        f.push((f.len() as u32).wrapping_mul(31).wrapping_add(seq) as u8);
    }
    f.truncate(len);
    f
}

/// `frames`, each copied into a buffer of `pool`, as one batch.
pub(crate) fn batch_of(pool: &Mempool, frames: &[Vec<u8>]) -> Batch {
    let mut b = Batch::new();
    for f in frames {
        let mut buf = pool.alloc().expect("buffer");
        buf.extend_from_slice(f).expect("fits");
        b.push(buf).expect("room");
    }
    b
}

/// A register block that writes to `.0` and reads through `.1(&.0, offset)`: a model
/// with some reads changed, for a device that misbehaves.
pub(crate) struct PatchedReads<M, F>(pub M, pub F);

impl<M: Registers, F: Fn(&M, u32) -> u32 + Send> Registers for PatchedReads<M, F> {
    fn read(&self, offset: u32) -> u32 {
        (self.1)(&self.0, offset)
    }

    fn write(&self, offset: u32, value: u32) {
        self.0.write(offset, value)
    }
}
