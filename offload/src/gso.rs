//! Software TCP segmentation (TSO/GSO fallback): cuts a large TCP frame into frames
//! whose payload is at most `mss` bytes, with correct IPv4/IPv6 lengths, IPv4 IDs and
//! header checksums, TCP sequence numbers, flags and checksums.
//!
//! Used where a large frame (a guest's or tap's TSO frame, VNET/P's 64 KiB MTU) must
//! reach a side that did not negotiate TSO, or an underlay whose MTU is smaller.

use std::net::{Ipv4Addr, Ipv6Addr};

use pkt::wire::ip_proto;
use pkt::{Mempool, PktBuf};

use crate::checksum::{internet_checksum, tcp_checksum_v4, tcp_checksum_v6};

/// Why a frame could not be segmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GsoError {
    /// Not Ethernet + IPv4/IPv6 + TCP (or IPv6 with extension headers).
    #[error("not a TCP frame over IPv4 or IPv6")]
    NotTcp,
    /// A header is cut short or a length field disagrees with the frame.
    #[error("truncated or inconsistent headers")]
    Truncated,
    /// The segment size is 0 or cannot fit a buffer.
    #[error("segment size {0} is unusable")]
    BadMss(usize),
    /// The pool ran out of buffers.
    #[error("no buffer for a segment")]
    NoBuffer,
}

struct Layout {
    l3: usize,
    l4: usize,
    payload: usize,
    v4: bool,
}

fn layout(frame: &[u8]) -> Result<Layout, GsoError> {
    let get16 = |at: usize| {
        frame
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or(GsoError::Truncated)
    };
    let mut l3 = 14;
    let mut ethertype = get16(12)?;
    if ethertype == 0x8100 {
        ethertype = get16(16)?;
        l3 = 18;
    }
    let (l4, v4) = match ethertype {
        0x0800 => {
            let vihl = *frame.get(l3).ok_or(GsoError::Truncated)?;
            let ihl = usize::from(vihl & 0x0f) * 4;
            if vihl >> 4 != 4 || ihl < 20 || frame.get(l3 + 9) != Some(&ip_proto::TCP) {
                return Err(GsoError::NotTcp);
            }
            if usize::from(get16(l3 + 2)?) != frame.len() - l3 {
                return Err(GsoError::Truncated);
            }
            (l3 + ihl, true)
        }
        0x86dd => {
            if frame.get(l3 + 6) != Some(&ip_proto::TCP) {
                return Err(GsoError::NotTcp);
            }
            if usize::from(get16(l3 + 4)?) != frame.len().saturating_sub(l3 + 40) {
                return Err(GsoError::Truncated);
            }
            (l3 + 40, false)
        }
        _ => return Err(GsoError::NotTcp),
    };
    let doff = usize::from(*frame.get(l4 + 12).ok_or(GsoError::Truncated)? >> 4) * 4;
    if doff < 20 || l4 + doff > frame.len() {
        return Err(GsoError::Truncated);
    }
    Ok(Layout {
        l3,
        l4,
        payload: l4 + doff,
        v4,
    })
}

fn addr4(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

fn addr6(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    Ipv6Addr::from(a)
}

/// Splits `frame` into segments of at most `mss` payload bytes, each in a new buffer
/// from `pool` handed to `sink` in order. Returns the number of segments. A frame that
/// already fits is copied as one segment with its checksums recomputed.
pub fn segment_tcp(
    frame: &[u8],
    mss: usize,
    pool: &Mempool,
    mut sink: impl FnMut(PktBuf),
) -> Result<usize, GsoError> {
    let l = layout(frame)?;
    let hdr_len = l.payload;
    if mss == 0 || hdr_len + mss > pool.buf_size().saturating_sub(pkt::HEADROOM) {
        return Err(GsoError::BadMss(mss));
    }
    let payload = &frame[hdr_len..];
    let seq0 = u32::from_be_bytes([
        frame[l.l4 + 4],
        frame[l.l4 + 5],
        frame[l.l4 + 6],
        frame[l.l4 + 7],
    ]);
    let flags0 = frame[l.l4 + 13];
    let id0 = u16::from_be_bytes([frame[l.l3 + 4], frame[l.l3 + 5]]);
    let count = payload.len().div_ceil(mss).max(1);
    for i in 0..count {
        let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        let mut seg = pool.alloc().ok_or(GsoError::NoBuffer)?;
        seg.extend_from_slice(&frame[..hdr_len])
            .map_err(|_| GsoError::NoBuffer)?;
        seg.extend_from_slice(chunk)
            .map_err(|_| GsoError::NoBuffer)?;
        seg.meta = pkt::Meta::default();
        let d = seg.data_mut();
        let l4_len = d.len() - l.l4;
        if l.v4 {
            let total = (d.len() - l.l3) as u16;
            d[l.l3 + 2..l.l3 + 4].copy_from_slice(&total.to_be_bytes());
            d[l.l3 + 4..l.l3 + 6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
            d[l.l3 + 10..l.l3 + 12].copy_from_slice(&[0, 0]);
            let csum = internet_checksum(&d[l.l3..l.l4], 0);
            d[l.l3 + 10..l.l3 + 12].copy_from_slice(&csum.to_be_bytes());
        } else {
            d[l.l3 + 4..l.l3 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        }
        let seq = seq0.wrapping_add((i * mss) as u32);
        d[l.l4 + 4..l.l4 + 8].copy_from_slice(&seq.to_be_bytes());
        let mut flags = flags0;
        if i + 1 < count {
            flags &= !(0x01 | 0x08); // FIN and PSH only on the last segment
        }
        if i > 0 {
            flags &= !0x80; // CWR only on the first
        }
        d[l.l4 + 13] = flags;
        let csum = if l.v4 {
            tcp_checksum_v4(addr4(&d[l.l3 + 12..]), addr4(&d[l.l3 + 16..]), &d[l.l4..])
        } else {
            tcp_checksum_v6(&addr6(&d[l.l3 + 8..]), &addr6(&d[l.l3 + 24..]), &d[l.l4..])
        }
        .map_err(|_| GsoError::Truncated)?;
        d[l.l4 + 16..l.l4 + 18].copy_from_slice(&csum.to_be_bytes());
        sink(seg);
    }
    Ok(count)
}

/// Bytes of IP and TCP headers in `frame` (what an MTU must hold besides payload).
pub fn l3l4_header_len(frame: &[u8]) -> Result<usize, GsoError> {
    let l = layout(frame)?;
    Ok(l.payload - l.l3)
}

/// Splits `frame` so every segment fits an interface of this MTU.
pub fn segment_tcp_to_mtu(
    frame: &[u8],
    mtu: usize,
    pool: &Mempool,
    sink: impl FnMut(PktBuf),
) -> Result<usize, GsoError> {
    let hdrs = l3l4_header_len(frame)?;
    segment_tcp(frame, mtu.saturating_sub(hdrs), pool, sink)
}

/// Turns a large TCP frame with a complete checksum into a TSO request for a device
/// of this MTU (virtio `NEEDS_CSUM` + `GSO_TCPV4/6`): the checksum field is set to the
/// pseudo-header sum, as the device expects, and the segment size to what the MTU
/// allows. The frame is unchanged when it is not TCP.
pub fn tso_request(frame: &mut [u8], mtu: usize) -> Result<pkt::OffloadMeta, GsoError> {
    let l = layout(frame)?;
    let mss = mtu.saturating_sub(l.payload - l.l3);
    if mss == 0 || mss > usize::from(u16::MAX) {
        return Err(GsoError::BadMss(mss));
    }
    let tcp_len = frame.len() - l.l4;
    let pseudo = if l.v4 {
        crate::checksum::pseudo_header_v4(
            addr4(&frame[l.l3 + 12..]),
            addr4(&frame[l.l3 + 16..]),
            ip_proto::TCP,
            tcp_len as u16,
        )
    } else {
        crate::checksum::pseudo_header_v6(
            &addr6(&frame[l.l3 + 8..]),
            &addr6(&frame[l.l3 + 24..]),
            ip_proto::TCP,
            tcp_len as u32,
        )
    };
    let folded = crate::checksum::fold(u64::from(pseudo));
    frame[l.l4 + 16..l.l4 + 18].copy_from_slice(&folded.to_be_bytes());
    Ok(pkt::OffloadMeta {
        flags: crate::vnet_hdr::NEEDS_CSUM,
        gso_type: if l.v4 {
            crate::vnet_hdr::gso::TCPV4
        } else {
            crate::vnet_hdr::gso::TCPV6
        },
        hdr_len: l.payload as u16,
        gso_size: mss as u16,
        csum_start: l.l4 as u16,
        csum_offset: 16,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::{verify_ipv4_header, verify_tcp_v4, verify_tcp_v6};
    use proptest::prelude::*;

    fn tcp_frame(v4: bool, payload: &[u8], flags: u8) -> Vec<u8> {
        let mut f = vec![0x52, 0x54, 0, 0, 0, 2, 0x52, 0x54, 0, 0, 0, 1];
        let tcp_len = 20 + payload.len();
        if v4 {
            f.extend_from_slice(&[0x08, 0x00]);
            let total = (20 + tcp_len) as u16;
            f.extend_from_slice(&[
                0x45,
                0,
                (total >> 8) as u8,
                total as u8,
                0x12,
                0x34,
                0x40,
                0,
                64,
                6,
                0,
                0,
                10,
                0,
                0,
                1,
                10,
                0,
                0,
                2,
            ]);
        } else {
            f.extend_from_slice(&[0x86, 0xdd]);
            f.extend_from_slice(&[0x60, 0, 0, 0, (tcp_len >> 8) as u8, tcp_len as u8, 6, 64]);
            f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        }
        // ports 40000 -> 5201, seq 0xfffffff0 (wraps), ack 7, data offset 5, flags.
        f.extend_from_slice(&[
            0x9c, 0x40, 0x14, 0x51, 0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 7, 0x50, flags, 0xff, 0xff, 0,
            0, 0, 0,
        ]);
        f.extend_from_slice(payload);
        f
    }

    fn check(v4: bool, payload_len: usize, mss: usize) {
        let payload: Vec<u8> = (0..payload_len).map(|i| (i * 7 + 3) as u8).collect();
        let frame = tcp_frame(v4, &payload, 0x80 | 0x18 | 0x01); // CWR, PSH|ACK, FIN
        let want = payload_len.div_ceil(mss).max(1);
        let pool = Mempool::new(want as u32 + 1, 4096).unwrap();
        let mut segs = Vec::new();
        let n = segment_tcp(&frame, mss, &pool, |s| segs.push(s)).unwrap();
        assert_eq!(n, payload_len.div_ceil(mss).max(1));
        let l3 = 14;
        let l4 = if v4 { 34 } else { 54 };
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let d = s.data();
            if v4 {
                assert!(verify_ipv4_header(&d[l3..l4]));
                assert!(
                    verify_tcp_v4(addr4(&d[26..]), addr4(&d[30..]), &d[l4..]),
                    "segment {i}"
                );
                assert_eq!(
                    u16::from_be_bytes([d[18], d[19]]),
                    0x1234u16.wrapping_add(i as u16)
                );
            } else {
                assert!(
                    verify_tcp_v6(&addr6(&d[22..]), &addr6(&d[38..]), &d[l4..]),
                    "segment {i}"
                );
            }
            let seq = u32::from_be_bytes([d[l4 + 4], d[l4 + 5], d[l4 + 6], d[l4 + 7]]);
            assert_eq!(seq, 0xffff_fff0u32.wrapping_add(joined.len() as u32));
            let flags = d[l4 + 13];
            assert_eq!(flags & 0x80 != 0, i == 0, "CWR on the first only");
            assert_eq!(flags & 0x09 != 0, i + 1 == n, "FIN/PSH on the last only");
            assert!(d.len() - l4 - 20 <= mss);
            joined.extend_from_slice(&d[l4 + 20..]);
        }
        assert_eq!(joined, payload);
        assert_eq!(pool.available(), want + 1 - n);
    }

    #[test]
    fn ipv4_64k_frame_becomes_mss_sized_valid_segments() {
        check(true, 65_000 - 54, 1448);
    }

    #[test]
    fn ipv6_frame_segments_with_valid_checksums() {
        check(false, 10_000, 1440);
    }

    #[test]
    fn small_frame_is_one_segment() {
        check(true, 100, 1448);
        check(true, 0, 1448);
    }

    #[test]
    fn non_tcp_and_broken_frames_are_errors() {
        let pool = Mempool::new(8, 2048).unwrap();
        let mut udp = tcp_frame(true, &[0; 10], 0x10);
        udp[23] = 17;
        assert_eq!(segment_tcp(&udp, 1000, &pool, drop), Err(GsoError::NotTcp));
        let mut short = tcp_frame(true, &[0; 10], 0x10);
        short.truncate(40);
        assert_eq!(
            segment_tcp(&short, 1000, &pool, drop),
            Err(GsoError::Truncated)
        );
        assert_eq!(
            segment_tcp(&[0; 5], 1000, &pool, drop),
            Err(GsoError::Truncated)
        );
        let ok = tcp_frame(true, &[0; 10], 0x10);
        assert_eq!(segment_tcp(&ok, 0, &pool, drop), Err(GsoError::BadMss(0)));
        assert_eq!(
            segment_tcp(&ok, 5000, &pool, drop),
            Err(GsoError::BadMss(5000))
        );
    }

    #[test]
    fn pool_exhaustion_is_an_error_not_a_panic() {
        let pool = Mempool::new(2, 2048).unwrap();
        let frame = tcp_frame(true, &[1; 5000], 0x10);
        let mut kept = Vec::new();
        assert_eq!(
            segment_tcp(&frame, 1000, &pool, |s| kept.push(s)),
            Err(GsoError::NoBuffer)
        );
        assert_eq!(kept.len(), 2);
    }

    #[test]
    fn tso_request_leaves_a_pseudo_header_sum_that_completes_to_the_right_checksum() {
        let payload: Vec<u8> = (0..20_000).map(|i| i as u8).collect();
        for v4 in [true, false] {
            let pool = Mempool::new(64, 4096).unwrap();
            let frame = tcp_frame(v4, &payload, 0x18);
            // Reference: software segmentation (full checksums) of the same frame.
            let mut full = frame.clone();
            let l4 = if v4 { 34 } else { 54 };
            let mut one = Vec::new();
            segment_tcp(&frame, 65_000, &Mempool::new(2, 70_000).unwrap(), |s| {
                one.push(s)
            })
            .unwrap();
            full[l4 + 16..l4 + 18].copy_from_slice(&one[0].data()[l4 + 16..l4 + 18]);
            let mut req = full.clone();
            let meta = tso_request(&mut req, 1500).unwrap();
            assert_eq!(meta.gso_size, if v4 { 1460 } else { 1440 });
            assert_eq!(meta.csum_start as usize, l4);
            crate::checksum::complete_partial(
                &mut req,
                meta.csum_start.into(),
                meta.csum_offset.into(),
            )
            .unwrap();
            assert_eq!(
                req, full,
                "completing the request gives the full checksum back"
            );
            let _ = pool;
        }
    }

    proptest! {
        #[test]
        fn segments_reassemble_to_the_original(len in 0usize..9000, mss in 16usize..2000, v4 in any::<bool>()) {
            check(v4, len, mss);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), mss in 0usize..3000) {
            let pool = Mempool::new(64, 4096).unwrap();
            let _ = segment_tcp(&bytes, mss, &pool, drop);
        }
    }
}
