//! The Internet checksum (RFC 1071): the one's-complement sum of 16-bit big-endian
//! words. `offload` builds pseudo-header and L4 checksums on these functions; they live
//! here because the IPv4 header needs them and `pkt` depends on nothing above it.

/// Folds a wide one's-complement accumulator to 16 bits (end-around carry).
///
/// Only an all-zero accumulator folds to 0; any other multiple of `0xffff` folds to
/// `0xffff` ("negative zero"), which is what checksum verification expects.
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    // Two rounds bring 64 bits to at most 17, two more to 16.
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// The one's-complement sum of `data` added to `initial`, folded to 16 bits and not
/// complemented.
///
/// `data` is read as big-endian 16-bit words; an odd last byte is padded with a zero
/// byte (RFC 1071 4.1). To sum a message in pieces, pass the previous result as
/// `initial`: every piece but the last must have an even length.
#[inline]
pub fn sum(data: &[u8], initial: u32) -> u16 {
    // 2^16 = 1 (mod 0xffff), so summing 32-bit big-endian words and folding gives the
    // same result as summing 16-bit words. Each 8-byte chunk adds less than 2^33, so a
    // u64 cannot overflow before 2^31 chunks (16 GiB), far beyond any frame.
    let mut acc = u64::from(initial);
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
        acc += u64::from(u32::from_be_bytes([c[4], c[5], c[6], c[7]]));
    }
    let mut words = chunks.remainder().chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    fold(acc)
}

/// The Internet checksum of `data` with `initial` (a partial sum, e.g. a pseudo-header)
/// added: the complement of [`sum`], ready to store in a header.
#[inline]
pub fn internet_checksum(data: &[u8], initial: u32) -> u16 {
    !sum(data, initial)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The textbook byte-pair loop the fast sum must agree with.
    fn naive_sum(data: &[u8], initial: u32) -> u16 {
        let mut acc = u64::from(initial);
        for pair in data.chunks(2) {
            let hi = u64::from(pair[0]) << 8;
            let lo = pair.get(1).map_or(0, |b| u64::from(*b));
            acc += hi | lo;
            while acc > 0xffff {
                acc = (acc & 0xffff) + (acc >> 16);
            }
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn rfc1071_example_sums_to_ddf2() {
        // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&data, 0), 0xddf2);
        assert_eq!(internet_checksum(&data, 0), 0x220d);
    }

    #[test]
    fn odd_length_pads_last_byte_low() {
        assert_eq!(sum(&[0x12, 0x34, 0x56], 0), 0x1234 + 0x5600);
        assert_eq!(sum(&[0xab], 0), 0xab00);
    }

    #[test]
    fn empty_sum_is_initial_folded() {
        assert_eq!(sum(&[], 0), 0);
        assert_eq!(sum(&[], 0x1_0001), 0x0002);
        assert_eq!(internet_checksum(&[], 0), 0xffff);
    }

    #[test]
    fn fold_keeps_negative_zero() {
        assert_eq!(fold(0), 0);
        assert_eq!(fold(0xffff), 0xffff);
        assert_eq!(fold(0x1_fffe), 0xffff);
        assert_eq!(fold(u64::MAX), 0xffff);
    }

    #[test]
    fn known_ipv4_header_verifies() {
        // 192.168.0.1 -> 192.168.0.199, UDP, DF, TTL 64, total length 115: checksum b861.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(sum(&hdr, 0), 0xffff);
        let mut zeroed = hdr;
        zeroed[10] = 0;
        zeroed[11] = 0;
        assert_eq!(internet_checksum(&zeroed, 0), 0xb861);
    }

    proptest! {
        #[test]
        fn fast_sum_matches_naive(data in proptest::collection::vec(any::<u8>(), 0..600), init in any::<u32>()) {
            prop_assert_eq!(sum(&data, init), naive_sum(&data, init));
        }

        #[test]
        fn sum_chains_over_even_split(data in proptest::collection::vec(any::<u8>(), 0..300), split in 0usize..150) {
            let split = (split * 2).min(data.len() & !1);
            let whole = sum(&data, 0);
            let chained = sum(&data[split..], u32::from(sum(&data[..split], 0)));
            prop_assert_eq!(whole, chained);
        }
    }
}
