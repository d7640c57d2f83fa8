//! [`IovaAllocator`]: hands out device-visible address ranges (IOVAs) for DMA mappings.
//!
//! First fit over a set of free ranges kept sorted in a `BTreeMap`; freeing merges a
//! range with its neighbours. Only mapping and unmapping use it, never the packet path.

use std::collections::BTreeMap;

use crate::{Result, VfioError};

/// Alignment of every IOVA range: the smallest IOMMU page.
pub const IOVA_PAGE: u64 = 4096;

/// A first-fit allocator of IOVA ranges.
#[derive(Debug, Clone)]
pub struct IovaAllocator {
    /// start -> end (exclusive) of each free range; ranges never touch.
    free: BTreeMap<u64, u64>,
}

impl IovaAllocator {
    /// An allocator over the given usable ranges `(start, end_inclusive)`, as the
    /// kernel reports them. Ranges are trimmed to whole pages; IOVA 0 is never used,
    /// so a zero address in a descriptor is always a bug the IOMMU catches.
    pub fn new(ranges: &[(u64, u64)]) -> Self {
        let mut a = Self {
            free: BTreeMap::new(),
        };
        for &(start, last) in ranges {
            let Some(start) = start.max(IOVA_PAGE).checked_next_multiple_of(IOVA_PAGE) else {
                continue;
            };
            let end = last.saturating_add(1) / IOVA_PAGE * IOVA_PAGE;
            if end > start {
                a.release(start, end - start);
            }
        }
        a
    }

    /// Takes a range of `size` bytes (rounded up to pages) aligned to `align` (a power
    /// of two, at least a page).
    pub fn alloc(&mut self, size: u64, align: u64) -> Result<u64> {
        let size = size
            .max(1)
            .checked_next_multiple_of(IOVA_PAGE)
            .ok_or(VfioError::IovaExhausted(size))?;
        let align = align
            .max(IOVA_PAGE)
            .checked_next_power_of_two()
            .ok_or(VfioError::IovaExhausted(size))?;
        let found = self.free.iter().find_map(|(&start, &end)| {
            let at = start.checked_next_multiple_of(align)?;
            (at.checked_add(size)? <= end).then_some((start, end, at))
        });
        let (start, end, at) = found.ok_or(VfioError::IovaExhausted(size))?;
        self.free.remove(&start);
        if at > start {
            self.free.insert(start, at);
        }
        if at + size < end {
            self.free.insert(at + size, end);
        }
        Ok(at)
    }

    /// Gives back a range taken with [`IovaAllocator::alloc`] (same size).
    pub fn free(&mut self, iova: u64, size: u64) {
        self.release(iova, size.max(1).next_multiple_of(IOVA_PAGE));
    }

    fn release(&mut self, mut start: u64, size: u64) {
        let mut end = start + size;
        if let Some((&s, &e)) = self.free.range(..=start).next_back()
            && e >= start
        {
            start = s;
            end = end.max(e);
            self.free.remove(&s);
        }
        while let Some((&s, &e)) = self.free.range(start..).next() {
            if s > end {
                break;
            }
            end = end.max(e);
            self.free.remove(&s);
        }
        self.free.insert(start, end);
    }

    /// Free bytes in total.
    pub fn free_bytes(&self) -> u64 {
        self.free.iter().map(|(s, e)| e - s).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_aligned_disjoint_and_skip_zero() {
        let mut a = IovaAllocator::new(&[(0, 0xfff_ffff)]);
        let x = a.alloc(100, 0).unwrap();
        assert_eq!(x, IOVA_PAGE);
        let y = a.alloc(0x20_0000, 0x20_0000).unwrap();
        assert_eq!(y % 0x20_0000, 0);
        let z = a.alloc(IOVA_PAGE, 0).unwrap();
        assert_eq!(
            z,
            2 * IOVA_PAGE,
            "first fit reuses the gap before the aligned block"
        );
        assert!(y >= z + IOVA_PAGE || z >= y + 0x20_0000);
    }

    #[test]
    fn freeing_merges_so_the_whole_space_comes_back() {
        let mut a = IovaAllocator::new(&[(0x10_0000, 0x4f_ffff)]);
        let total = a.free_bytes();
        let blocks: Vec<u64> = (0..8).map(|_| a.alloc(0x8000, 0).unwrap()).collect();
        for b in blocks.iter().step_by(2) {
            a.free(*b, 0x8000);
        }
        for b in blocks.iter().skip(1).step_by(2) {
            a.free(*b, 0x8000);
        }
        assert_eq!(a.free_bytes(), total);
        assert_eq!(a.free.len(), 1);
        assert_eq!(a.alloc(total, 0).unwrap(), 0x10_0000);
    }

    #[test]
    fn exhaustion_is_an_error_not_a_panic() {
        let mut a = IovaAllocator::new(&[(0x1000, 0x2fff)]);
        assert!(a.alloc(0x2000, 0).is_ok());
        let err = a.alloc(1, 0).unwrap_err();
        assert!(err.to_string().contains("no free IOVA range"));
        assert!(
            IovaAllocator::new(&[(u64::MAX - 10, u64::MAX)])
                .alloc(1, 0)
                .is_err()
        );
        let mut a = IovaAllocator::new(&[(0, u64::MAX)]);
        assert!(a.alloc(u64::MAX, 0).is_err());
        assert!(a.alloc(1, u64::MAX).is_err());
        assert!(a.alloc(1, 0).is_ok());
    }

    #[test]
    fn reported_ranges_with_holes_are_respected() {
        // x86: the MSI window 0xfee00000..=0xfeefffff is reserved.
        let mut a = IovaAllocator::new(&[(0, 0xfedf_ffff), (0xfef0_0000, 0xff_ffff_ffff)]);
        let big = a.alloc(0xfed0_0000, 0).unwrap();
        assert_eq!(big, IOVA_PAGE);
        let next = a.alloc(0x20_0000, 0).unwrap();
        assert!(next >= 0xfef0_0000, "{next:#x}");
    }
}
