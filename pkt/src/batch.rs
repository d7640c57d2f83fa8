//! [`Batch`]: a fixed-capacity vector of frames, the unit every port moves.

use crate::PktBuf;

/// Most frames a batch holds; ports move up to this many per call (DPDK's and VNET/P's
/// dispatcher use the same order of magnitude: 32 to 64).
pub const BATCH_MAX: usize = 64;

/// A batch of frames. Its storage is allocated once; pushing never reallocates.
#[derive(Debug)]
pub struct Batch {
    bufs: Vec<PktBuf>,
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    /// An empty batch with room for [`BATCH_MAX`] frames.
    pub fn new() -> Self {
        Self {
            bufs: Vec::with_capacity(BATCH_MAX),
        }
    }

    /// An empty batch that owns no storage yet, for swapping a batch out of a struct
    /// without allocating (`std::mem::replace(&mut self.rx, Batch::unallocated())`).
    /// It grows on first push like any `Vec`; swap the real batch back after use.
    pub const fn unallocated() -> Self {
        Self { bufs: Vec::new() }
    }

    /// Number of frames in the batch.
    pub fn len(&self) -> usize {
        self.bufs.len()
    }

    /// True when the batch holds no frame.
    pub fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }

    /// True when no more frames fit.
    pub fn is_full(&self) -> bool {
        self.bufs.len() >= BATCH_MAX
    }

    /// How many more frames fit.
    pub fn room(&self) -> usize {
        BATCH_MAX - self.bufs.len()
    }

    /// Appends a frame; gives it back when the batch is full.
    pub fn push(&mut self, buf: PktBuf) -> Result<(), PktBuf> {
        if self.is_full() {
            return Err(buf);
        }
        self.bufs.push(buf);
        Ok(())
    }

    /// Removes and yields every frame, front first.
    pub fn drain(&mut self) -> std::vec::Drain<'_, PktBuf> {
        self.bufs.drain(..)
    }

    /// Removes the first `n` frames (those a port has sent), returning them to their pool.
    pub fn consume_front(&mut self, n: usize) {
        let n = n.min(self.bufs.len());
        self.bufs.drain(..n);
    }

    /// Drops every frame, returning them to their pool.
    pub fn clear(&mut self) {
        self.bufs.clear();
    }

    /// The frames, read-only.
    pub fn iter(&self) -> std::slice::Iter<'_, PktBuf> {
        self.bufs.iter()
    }

    /// The frames, mutable.
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, PktBuf> {
        self.bufs.iter_mut()
    }

    /// The frames as a slice.
    pub fn as_slice(&self) -> &[PktBuf] {
        &self.bufs
    }

    /// The frames as a mutable slice.
    pub fn as_mut_slice(&mut self) -> &mut [PktBuf] {
        &mut self.bufs
    }
}

impl<'a> IntoIterator for &'a Batch {
    type Item = &'a PktBuf;
    type IntoIter = std::slice::Iter<'a, PktBuf>;
    fn into_iter(self) -> Self::IntoIter {
        self.bufs.iter()
    }
}
