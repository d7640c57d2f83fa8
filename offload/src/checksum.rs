//! Internet checksums in software: the RFC 1071 sum (from `pkt`), IPv4/IPv6
//! pseudo-headers, UDP and TCP checksums, and completion of a partial checksum
//! (virtio `NEEDS_CSUM`, Linux `CHECKSUM_PARTIAL`) for ports that cannot do it.

use std::net::{Ipv4Addr, Ipv6Addr};

use pkt::OffloadMeta;
pub use pkt::wire::checksum::{fold, internet_checksum, sum};
use pkt::wire::ip_proto;

use crate::vnet_hdr::flags;

/// Why an offload operation cannot be done on a frame or header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    /// Fewer bytes than the header or segment needs.
    #[error("{what}: truncated: need {need} bytes, have {have}")]
    Truncated {
        /// The header or segment.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// A segment longer than its length field can describe.
    #[error("{what}: {len} bytes exceed the maximum of {max}")]
    TooLong {
        /// The segment.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The largest length allowed.
        max: usize,
    },
    /// The checksum field named by `csum_start + csum_offset` is not inside the frame.
    #[error(
        "partial checksum: field at {csum_start}+{csum_offset} is outside the {len}-byte frame"
    )]
    BadCsumOffset {
        /// Where checksumming starts.
        csum_start: usize,
        /// Offset of the field from `csum_start`.
        csum_offset: usize,
        /// Frame length.
        len: usize,
    },
    /// A virtio-net header with flag bits this implementation does not know.
    #[error("virtio-net header: unknown flags {0:#04x}")]
    BadFlags(u8),
    /// A virtio-net header with an unknown GSO type.
    #[error("virtio-net header: unknown gso type {0:#04x}")]
    BadGsoType(u8),
    /// A virtio-net header asking for segmentation with a segment size of 0.
    #[error("virtio-net header: gso type {gso_type:#04x} with gso_size 0")]
    ZeroGsoSize {
        /// The GSO type.
        gso_type: u8,
    },
    /// The output buffer is too small for what is emitted.
    #[error("{what}: no room to emit: need {need} bytes, have {have}")]
    NoRoom {
        /// The header.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
}

/// Offset of the checksum field in a UDP header.
const UDP_CSUM_AT: usize = 6;
/// Offset of the checksum field in a TCP header.
const TCP_CSUM_AT: usize = 16;
/// Smallest UDP segment (header only).
const UDP_MIN: usize = 8;
/// Smallest TCP segment (header without options).
const TCP_MIN: usize = 20;

/// The unfolded sum of the IPv4 pseudo-header (RFC 768, RFC 9293 3.1), to pass as
/// `initial` to [`sum`].
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4_len: u16) -> u32 {
    let (s, d) = (src.octets(), dst.octets());
    [[s[0], s[1]], [s[2], s[3]], [d[0], d[1]], [d[2], d[3]]]
        .into_iter()
        .map(|w| u32::from(u16::from_be_bytes(w)))
        .sum::<u32>()
        + u32::from(protocol)
        + u32::from(l4_len)
}

/// The unfolded sum of the IPv6 pseudo-header (RFC 8200 8.1), to pass as `initial`
/// to [`sum`].
pub fn pseudo_header_v6(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, l4_len: u32) -> u32 {
    let words = src.segments().into_iter().chain(dst.segments());
    words.map(u32::from).sum::<u32>() + (l4_len >> 16) + (l4_len & 0xffff) + u32::from(next_header)
}

/// The L4 checksum of `segment` over `pseudo`, skipping the two bytes at `field_at`
/// (so the field's current value does not matter). `field_at` must be even.
fn l4_checksum(segment: &[u8], field_at: usize, pseudo: u32) -> u16 {
    let head = sum(&segment[..field_at], pseudo);
    internet_checksum(&segment[field_at + 2..], head.into())
}

/// Checks `segment` holds at least `min` bytes and at most `max`.
fn check_len(
    what: &'static str,
    segment: &[u8],
    min: usize,
    max: usize,
) -> Result<(), OffloadError> {
    if segment.len() < min {
        return Err(OffloadError::Truncated {
            what,
            need: min,
            have: segment.len(),
        });
    }
    if segment.len() > max {
        return Err(OffloadError::TooLong {
            what,
            len: segment.len(),
            max,
        });
    }
    Ok(())
}

/// The UDP checksum over IPv4 of `segment` (UDP header and payload). A computed 0 is
/// returned as `0xffff`, since 0 on the wire means "no checksum" (RFC 768).
pub fn udp_checksum_v4(src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> Result<u16, OffloadError> {
    check_len("udp", segment, UDP_MIN, u16::MAX.into())?;
    let pseudo = pseudo_header_v4(src, dst, ip_proto::UDP, segment.len() as u16);
    Ok(nonzero(l4_checksum(segment, UDP_CSUM_AT, pseudo)))
}

/// The UDP checksum over IPv6 of `segment`; never 0 (RFC 8200 8.1).
pub fn udp_checksum_v6(
    src: &Ipv6Addr,
    dst: &Ipv6Addr,
    segment: &[u8],
) -> Result<u16, OffloadError> {
    check_len("udp", segment, UDP_MIN, u16::MAX.into())?;
    let pseudo = pseudo_header_v6(src, dst, ip_proto::UDP, segment.len() as u32);
    Ok(nonzero(l4_checksum(segment, UDP_CSUM_AT, pseudo)))
}

/// The TCP checksum over IPv4 of `segment` (TCP header and payload).
pub fn tcp_checksum_v4(src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> Result<u16, OffloadError> {
    check_len("tcp", segment, TCP_MIN, u16::MAX.into())?;
    let pseudo = pseudo_header_v4(src, dst, ip_proto::TCP, segment.len() as u16);
    Ok(l4_checksum(segment, TCP_CSUM_AT, pseudo))
}

/// The TCP checksum over IPv6 of `segment`.
pub fn tcp_checksum_v6(
    src: &Ipv6Addr,
    dst: &Ipv6Addr,
    segment: &[u8],
) -> Result<u16, OffloadError> {
    check_len("tcp", segment, TCP_MIN, u32::MAX as usize)?;
    let pseudo = pseudo_header_v6(src, dst, ip_proto::TCP, segment.len() as u32);
    Ok(l4_checksum(segment, TCP_CSUM_AT, pseudo))
}

/// Computes and stores the UDP checksum of an IPv4 `segment`.
pub fn fill_udp_checksum_v4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    segment: &mut [u8],
) -> Result<(), OffloadError> {
    let c = udp_checksum_v4(src, dst, segment)?;
    segment[UDP_CSUM_AT..UDP_CSUM_AT + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Computes and stores the UDP checksum of an IPv6 `segment`.
pub fn fill_udp_checksum_v6(
    src: &Ipv6Addr,
    dst: &Ipv6Addr,
    segment: &mut [u8],
) -> Result<(), OffloadError> {
    let c = udp_checksum_v6(src, dst, segment)?;
    segment[UDP_CSUM_AT..UDP_CSUM_AT + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Computes and stores the TCP checksum of an IPv4 `segment`.
pub fn fill_tcp_checksum_v4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    segment: &mut [u8],
) -> Result<(), OffloadError> {
    let c = tcp_checksum_v4(src, dst, segment)?;
    segment[TCP_CSUM_AT..TCP_CSUM_AT + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Computes and stores the TCP checksum of an IPv6 `segment`.
pub fn fill_tcp_checksum_v6(
    src: &Ipv6Addr,
    dst: &Ipv6Addr,
    segment: &mut [u8],
) -> Result<(), OffloadError> {
    let c = tcp_checksum_v6(src, dst, segment)?;
    segment[TCP_CSUM_AT..TCP_CSUM_AT + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// True when an IPv4 UDP `segment` (exactly the UDP length) verifies, or carries no
/// checksum (field 0).
pub fn verify_udp_v4(src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> bool {
    if check_len("udp", segment, UDP_MIN, u16::MAX.into()).is_err() {
        return false;
    }
    if segment[UDP_CSUM_AT..UDP_CSUM_AT + 2] == [0, 0] {
        return true;
    }
    sum(
        segment,
        pseudo_header_v4(src, dst, ip_proto::UDP, segment.len() as u16),
    ) == 0xffff
}

/// True when an IPv6 UDP `segment` verifies. A zero checksum is invalid on IPv6.
pub fn verify_udp_v6(src: &Ipv6Addr, dst: &Ipv6Addr, segment: &[u8]) -> bool {
    if check_len("udp", segment, UDP_MIN, u16::MAX.into()).is_err() {
        return false;
    }
    if segment[UDP_CSUM_AT..UDP_CSUM_AT + 2] == [0, 0] {
        return false;
    }
    sum(
        segment,
        pseudo_header_v6(src, dst, ip_proto::UDP, segment.len() as u32),
    ) == 0xffff
}

/// True when an IPv4 TCP `segment` verifies.
pub fn verify_tcp_v4(src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> bool {
    check_len("tcp", segment, TCP_MIN, u16::MAX.into()).is_ok()
        && sum(
            segment,
            pseudo_header_v4(src, dst, ip_proto::TCP, segment.len() as u16),
        ) == 0xffff
}

/// True when an IPv6 TCP `segment` verifies.
pub fn verify_tcp_v6(src: &Ipv6Addr, dst: &Ipv6Addr, segment: &[u8]) -> bool {
    check_len("tcp", segment, TCP_MIN, u32::MAX as usize).is_ok()
        && sum(
            segment,
            pseudo_header_v6(src, dst, ip_proto::TCP, segment.len() as u32),
        ) == 0xffff
}

/// True when an IPv4 header (options included) has a correct header checksum.
pub fn verify_ipv4_header(header: &[u8]) -> bool {
    header.len() >= 20 && sum(header, 0) == 0xffff
}

/// Completes a partial checksum in software: the frame's 16-bit field at
/// `csum_start + csum_offset` already holds the folded pseudo-header sum (virtio
/// `NEEDS_CSUM`, Linux `CHECKSUM_PARTIAL`); the one's-complement sum from
/// `csum_start` to the end of `frame` is folded into it and stored complemented.
/// A result of 0 is stored as `0xffff`, which is equivalent for TCP and required for UDP.
pub fn complete_partial(
    frame: &mut [u8],
    csum_start: usize,
    csum_offset: usize,
) -> Result<(), OffloadError> {
    let field = csum_start
        .checked_add(csum_offset)
        .filter(|f| f.checked_add(2).is_some_and(|end| end <= frame.len()))
        .ok_or(OffloadError::BadCsumOffset {
            csum_start,
            csum_offset,
            len: frame.len(),
        })?;
    let c = nonzero(internet_checksum(&frame[csum_start..], 0));
    frame[field..field + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// [`complete_partial`] for a frame in two parts, `head` followed by `tail` (a frame
/// with an external tail, [`pkt::ExtSeg`]): the checksum field must lie in `head`,
/// which is the only part written. The sum runs from `csum_start` through both parts;
/// a `head` part of odd length shifts `tail` by one byte, which swaps the bytes of its
/// sum (RFC 1071 2(B)).
pub fn complete_partial_split(
    head: &mut [u8],
    tail: &[u8],
    csum_start: usize,
    csum_offset: usize,
) -> Result<(), OffloadError> {
    let bad = OffloadError::BadCsumOffset {
        csum_start,
        csum_offset,
        len: head.len() + tail.len(),
    };
    let field = csum_start
        .checked_add(csum_offset)
        .filter(|f| f.checked_add(2).is_some_and(|end| end <= head.len()))
        .ok_or(bad)?;
    let first = &head[csum_start..];
    let s1 = sum(first, 0);
    let s2 = sum(tail, 0);
    let s2 = if first.len() % 2 == 1 {
        s2.swap_bytes()
    } else {
        s2
    };
    let c = nonzero(!fold(u64::from(s1) + u64::from(s2)));
    head[field..field + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Applies [`complete_partial`] when `meta` asks for it (`NEEDS_CSUM`) and clears the
/// request; returns whether a checksum was computed.
pub fn complete_if_needed(frame: &mut [u8], meta: &mut OffloadMeta) -> Result<bool, OffloadError> {
    if meta.flags & flags::NEEDS_CSUM == 0 {
        return Ok(false);
    }
    complete_partial(frame, meta.csum_start.into(), meta.csum_offset.into())?;
    meta.flags &= !flags::NEEDS_CSUM;
    Ok(true)
}

/// A checksum of 0 written as its one's-complement twin `0xffff`.
fn nonzero(c: u16) -> u16 {
    if c == 0 { 0xffff } else { c }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic in a test is its failure report
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A real IPv4 UDP datagram, 10.0.0.1:4000 -> 10.0.0.2:9000, payload "ping",
    /// UDP checksum 0xda3a (checked with python3 while writing this test).
    const UDP_V4: [u8; 12] = [
        0x0f, 0xa0, 0x23, 0x28, 0x00, 0x0c, 0xda, 0x3a, b'p', b'i', b'n', b'g',
    ];
    const SRC4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    /// The same datagram between fd00::1 and fd00::2: UDP checksum 0xf438.
    const UDP_V6: [u8; 12] = [
        0x0f, 0xa0, 0x23, 0x28, 0x00, 0x0c, 0xf4, 0x38, b'p', b'i', b'n', b'g',
    ];

    fn v6() -> (Ipv6Addr, Ipv6Addr) {
        ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap())
    }

    fn naive_sum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for pair in data.chunks(2) {
            acc += u32::from(pair[0]) << 8 | u32::from(pair.get(1).copied().unwrap_or(0));
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn rfc1071_example() {
        assert_eq!(
            sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7], 0),
            0xddf2
        );
    }

    #[test]
    fn udp_v4_known_value() {
        assert_eq!(udp_checksum_v4(SRC4, DST4, &UDP_V4).unwrap(), 0xda3a);
        assert!(verify_udp_v4(SRC4, DST4, &UDP_V4));
        let mut bad = UDP_V4;
        bad[8] = b'P';
        assert!(!verify_udp_v4(SRC4, DST4, &bad));
        bad[6..8].copy_from_slice(&[0, 0]);
        assert!(
            verify_udp_v4(SRC4, DST4, &bad),
            "0 means no checksum on IPv4"
        );
    }

    #[test]
    fn udp_v6_known_value() {
        let (s, d) = v6();
        assert_eq!(udp_checksum_v6(&s, &d, &UDP_V6).unwrap(), 0xf438);
        assert!(verify_udp_v6(&s, &d, &UDP_V6));
        let mut zero = UDP_V6;
        zero[6..8].copy_from_slice(&[0, 0]);
        assert!(!verify_udp_v6(&s, &d, &zero), "0 is invalid on IPv6");
        fill_udp_checksum_v6(&s, &d, &mut zero).unwrap();
        assert_eq!(zero, UDP_V6);
    }

    #[test]
    fn tcp_fill_then_verify() {
        let mut seg = [0u8; 24];
        seg[..4].copy_from_slice(&[0x1f, 0x90, 0xc3, 0x50]);
        seg[12] = 0x50;
        seg[20..].copy_from_slice(b"data");
        fill_tcp_checksum_v4(SRC4, DST4, &mut seg).unwrap();
        assert!(verify_tcp_v4(SRC4, DST4, &seg));
        let (s, d) = v6();
        fill_tcp_checksum_v6(&s, &d, &mut seg).unwrap();
        assert!(verify_tcp_v6(&s, &d, &seg));
        assert!(!verify_tcp_v4(SRC4, DST4, &seg));
    }

    #[test]
    fn short_segments_are_errors() {
        assert_eq!(
            udp_checksum_v4(SRC4, DST4, &UDP_V4[..7]),
            Err(OffloadError::Truncated {
                what: "udp",
                need: 8,
                have: 7
            })
        );
        assert!(tcp_checksum_v4(SRC4, DST4, &[0u8; 19]).is_err());
        assert!(!verify_udp_v4(SRC4, DST4, &UDP_V4[..7]));
    }

    #[test]
    fn ipv4_header_verifies() {
        let hdr = [
            0x45, 0x00, 0x00, 0x20, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x14, 0x97, 0x0a, 0x00,
            0x00, 0x01, 0x0a, 0x00, 0x00, 0x02,
        ];
        assert!(verify_ipv4_header(&hdr));
        assert!(!verify_ipv4_header(&hdr[..19]));
    }

    #[test]
    fn complete_partial_matches_full_checksum() {
        // An Ethernet + IPv4 + UDP frame whose UDP checksum field holds the folded
        // pseudo-header sum, as a Linux guest with TX checksum offload sends it.
        let mut frame = vec![0u8; 34];
        frame.extend_from_slice(&UDP_V4);
        let pseudo = fold(pseudo_header_v4(SRC4, DST4, ip_proto::UDP, 12).into());
        frame[34 + 6..34 + 8].copy_from_slice(&pseudo.to_be_bytes());
        complete_partial(&mut frame, 34, 6).unwrap();
        assert_eq!(frame[40..42], [0xda, 0x3a]);
    }

    #[test]
    fn complete_partial_rejects_field_outside_frame() {
        let mut frame = [0u8; 20];
        assert_eq!(
            complete_partial(&mut frame, 10, 9),
            Err(OffloadError::BadCsumOffset {
                csum_start: 10,
                csum_offset: 9,
                len: 20
            })
        );
        assert!(complete_partial(&mut frame, usize::MAX, 1).is_err());
        assert!(complete_partial(&mut frame, 18, 0).is_ok());
    }

    #[test]
    fn complete_if_needed_clears_the_request() {
        let mut frame = [0u8; 16];
        let mut meta = OffloadMeta {
            flags: flags::NEEDS_CSUM,
            csum_start: 0,
            csum_offset: 6,
            ..Default::default()
        };
        assert!(complete_if_needed(&mut frame, &mut meta).unwrap());
        assert_eq!(meta.flags, 0);
        assert_eq!(frame[6..8], [0xff, 0xff]);
        assert!(!complete_if_needed(&mut frame, &mut meta).unwrap());
    }

    proptest! {
        #[test]
        fn a_split_frame_gets_the_checksum_of_the_joined_frame(
            frame in proptest::collection::vec(any::<u8>(), 40..600),
            start in 0usize..20,
            split in 23usize..40,
        ) {
            let mut whole = frame.clone();
            complete_partial(&mut whole, start, 2).unwrap();
            let mut head = frame[..split].to_vec();
            complete_partial_split(&mut head, &frame[split..], start, 2).unwrap();
            prop_assert_eq!(&head[..], &whole[..split]);
        }
    }

    #[test]
    fn a_split_checksum_field_in_the_tail_is_refused() {
        let mut head = [0u8; 10];
        assert!(complete_partial_split(&mut head, &[0; 20], 4, 6).is_err());
        assert!(complete_partial_split(&mut head, &[0; 20], 4, 4).is_ok());
    }

    proptest! {
        #[test]
        fn fast_sum_matches_naive(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            prop_assert_eq!(sum(&data, 0), naive_sum(&data));
        }

        #[test]
        fn filled_udp_checksum_verifies(payload in proptest::collection::vec(any::<u8>(), 0..300), s in any::<[u8; 4]>(), d in any::<[u8; 4]>()) {
            let mut seg = vec![0u8; 8];
            seg[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            seg.extend_from_slice(&payload);
            fill_udp_checksum_v4(s.into(), d.into(), &mut seg).unwrap();
            prop_assert!(verify_udp_v4(s.into(), d.into(), &seg));
            prop_assert_ne!(seg[6..8].to_vec(), vec![0, 0]);
        }

        #[test]
        fn complete_partial_agrees_with_udp_checksum(payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let (s, d) = v6();
            let mut seg = vec![0x12, 0x34, 0x12, 0xb5, 0, 0, 0, 0];
            seg[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            seg.extend_from_slice(&payload);
            let want = udp_checksum_v6(&s, &d, &seg).unwrap();
            let pseudo = fold(pseudo_header_v6(&s, &d, ip_proto::UDP, seg.len() as u32).into());
            seg[6..8].copy_from_slice(&pseudo.to_be_bytes());
            complete_partial(&mut seg, 0, 6).unwrap();
            prop_assert_eq!(u16::from_be_bytes([seg[6], seg[7]]), want);
        }
    }
}
