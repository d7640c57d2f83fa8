//! Outer IP fragmentation and reassembly.
//!
//! Transmit: a UDP datagram that does not fit the underlay MTU is cut into fragments
//! (IPv4: RFC 791 3.2; IPv6: a fragment header, RFC 8200 4.5), each a frame of its own;
//! the first reuses the datagram's buffer, the others are copies into fresh buffers.
//!
//! Receive: fragments from peers are copied into one pool buffer per datagram, at most
//! [`MAX_DATAGRAMS`] datagrams at a time, each of at most [`MAX_FRAGMENTS`] fragments
//! and a pool buffer's size, dropped whole on overlap (RFC 5722), inconsistency or
//! after a timeout. Memory is therefore bounded by `MAX_DATAGRAMS` buffers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use pkt::wire::{EthernetRepr, Ipv4Repr, Ipv6Repr, ip_proto, ipv4, ipv6};
use pkt::{Batch, HEADROOM, Mempool, PktBuf};

/// Datagrams being reassembled at once.
pub const MAX_DATAGRAMS: usize = 16;
/// Fragments of one datagram.
pub const MAX_FRAGMENTS: usize = 64;
/// Size of the IPv6 fragment header.
pub const IPV6_FRAG_HEADER_LEN: usize = 8;
/// How long a partly received datagram is kept (RFC 8200 4.5 says 60 s; Linux uses
/// 30 s; an underlay path that loses one fragment has lost the datagram, and holding a
/// buffer longer only costs memory).
pub const REASSEMBLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Which outer IP version and addresses a fragmented datagram carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FragIp {
    /// IPv4.
    V4(Ipv4Addr, Ipv4Addr),
    /// IPv6.
    V6(Ipv6Addr, Ipv6Addr),
}

impl FragIp {
    /// IP header bytes in front of each fragment's data.
    fn header_len(self) -> usize {
        match self {
            Self::V4(..) => ipv4::HEADER_LEN,
            Self::V6(..) => ipv6::HEADER_LEN + IPV6_FRAG_HEADER_LEN,
        }
    }
}

/// Bytes of datagram per fragment for `mtu` (a multiple of 8), or 0 when the MTU is too
/// small to fragment at all.
pub(crate) fn chunk_len(ip: FragIp, mtu: usize) -> usize {
    mtu.saturating_sub(ip.header_len()) & !7
}

/// Fragments a datagram of `len` bytes needs at `mtu` (0: cannot be fragmented).
pub(crate) fn fragments_needed(ip: FragIp, mtu: usize, len: usize) -> usize {
    match chunk_len(ip, mtu) {
        0 => 0,
        c => len.div_ceil(c),
    }
}

/// Writes the Ethernet and IP (+ fragment) headers of one fragment at the start of
/// `out`; returns their length.
fn write_headers(
    out: &mut [u8],
    eth: &EthernetRepr,
    ip: FragIp,
    ident: u32,
    offset: usize,
    more: bool,
    len: usize,
) -> Option<usize> {
    let l3 = eth.emit(out).ok()?;
    match ip {
        FragIp::V4(src, dst) => {
            Ipv4Repr {
                src,
                dst,
                protocol: ip_proto::UDP,
                ttl: crate::encap::OUTER_TTL,
                tos: 0,
                ident: ident as u16,
                dont_frag: false,
                more_frags: more,
                frag_offset: u16::try_from(offset / 8).ok()?,
                payload_len: len,
            }
            .emit(&mut out[l3..])
            .ok()?;
            Some(l3 + ipv4::HEADER_LEN)
        }
        FragIp::V6(src, dst) => {
            Ipv6Repr {
                src,
                dst,
                next_header: ip_proto::IPV6_FRAG,
                hop_limit: crate::encap::OUTER_TTL,
                traffic_class: 0,
                flow_label: 0,
                payload_len: IPV6_FRAG_HEADER_LEN + len,
            }
            .emit(&mut out[l3..])
            .ok()?;
            let f = out.get_mut(l3 + ipv6::HEADER_LEN..l3 + ipv6::HEADER_LEN + 8)?;
            let off_flags = u16::try_from(offset / 8).ok()? << 3 | u16::from(more);
            f[0] = ip_proto::UDP;
            f[1] = 0;
            f[2..4].copy_from_slice(&off_flags.to_be_bytes());
            f[4..8].copy_from_slice(&ident.to_be_bytes());
            Some(l3 + ipv6::HEADER_LEN + IPV6_FRAG_HEADER_LEN)
        }
    }
}

/// Why a datagram could not be fragmented (it is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FragTxError {
    /// The pool ran out of buffers for the copies.
    NoBuffer,
    /// A header did not fit (a buffer without headroom, or an MTU too small).
    BadHeader,
}

/// Cuts the datagram in `buf` (UDP header and payload) into fragments of `mtu` and
/// pushes them onto `out`, which must have room for
/// [`fragments_needed`]`(ip, mtu, buf.len())` frames. `scratch` is an empty vector with
/// capacity for that many, used to hold copies until all are allocated.
#[allow(clippy::too_many_arguments)] // the parts of one outer header, kept flat
pub(crate) fn fragment(
    mut buf: PktBuf,
    eth: &EthernetRepr,
    ip: FragIp,
    mtu: usize,
    ident: u32,
    pool: &Mempool,
    scratch: &mut Vec<PktBuf>,
    out: &mut Batch,
) -> Result<usize, FragTxError> {
    let chunk = chunk_len(ip, mtu);
    if chunk == 0 {
        return Err(FragTxError::BadHeader);
    }
    let len = buf.len();
    let hlen = eth.header_len() + ip.header_len();
    scratch.clear();
    let mut offset = chunk;
    while offset < len {
        let n = chunk.min(len - offset);
        let Some(mut f) = pool.alloc() else {
            scratch.clear();
            return Err(FragTxError::NoBuffer);
        };
        let ok = f.append(hlen + n).ok().and_then(|space| {
            let h = write_headers(space, eth, ip, ident, offset, offset + n < len, n)?;
            space[h..].copy_from_slice(&buf.data()[offset..offset + n]);
            Some(())
        });
        if ok.is_none() {
            scratch.clear();
            return Err(FragTxError::BadHeader);
        }
        scratch.push(f);
        offset += n;
    }
    let first = chunk.min(len);
    buf.truncate(first);
    let space = buf.prepend(hlen).map_err(|_| FragTxError::BadHeader)?;
    if write_headers(space, eth, ip, ident, 0, first < len, first).is_none() {
        scratch.clear();
        return Err(FragTxError::BadHeader);
    }
    let total = 1 + scratch.len();
    if out.room() < total {
        scratch.clear();
        return Err(FragTxError::BadHeader);
    }
    let _ = out.push(buf);
    for f in scratch.drain(..) {
        let _ = out.push(f);
    }
    Ok(total)
}

/// Identifies the fragments of one datagram (RFC 791 3.2; RFC 8200 4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FragKey {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Identification (IPv4: 16 bits).
    pub ident: u32,
    /// Protocol of the reassembled payload.
    pub proto: u8,
}

/// One received fragment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fragment<'a> {
    /// Offset of `data` in the datagram, in bytes.
    pub offset: usize,
    /// More fragments follow.
    pub more: bool,
    /// The fragment's bytes.
    pub data: &'a [u8],
}

/// Why a fragment was dropped (each an `rx_frag_*` drop counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FragRxError {
    /// The datagram would exceed a pool buffer or 64 KiB.
    TooBig,
    /// The fragment overlaps one already received (the datagram is dropped).
    Overlap,
    /// Lengths disagree (two last fragments, data past the end, a middle fragment
    /// whose length is no multiple of 8); the datagram is dropped.
    Inconsistent,
    /// More fragments than [`MAX_FRAGMENTS`].
    TooManyFragments,
    /// Every reassembly slot is busy.
    NoSlot,
    /// The pool has no buffer for a new datagram.
    NoBuffer,
}

#[derive(Debug)]
struct Slot {
    key: FragKey,
    buf: PktBuf,
    ranges: [(u32, u32); MAX_FRAGMENTS],
    nranges: usize,
    received: usize,
    total: Option<usize>,
    deadline: Instant,
}

/// Bounded reassembly of received fragments.
#[derive(Debug)]
pub(crate) struct Reassembler {
    slots: Vec<Option<Slot>>,
    timeout: Duration,
}

impl Reassembler {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            slots: (0..MAX_DATAGRAMS).map(|_| None).collect(),
            timeout,
        }
    }

    /// Datagrams partly received.
    pub(crate) fn in_progress(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// Adds a fragment. Returns the whole datagram (in a buffer at [`HEADROOM`]) when
    /// this fragment completed it. On error, the fragment, and for overlap or
    /// inconsistency the whole datagram, is dropped.
    pub(crate) fn insert(
        &mut self,
        key: FragKey,
        frag: Fragment<'_>,
        now: Instant,
        pool: &Mempool,
    ) -> Result<Option<PktBuf>, FragRxError> {
        let end = frag.offset + frag.data.len();
        if end > usize::from(u16::MAX) || end > pool.buf_size().saturating_sub(HEADROOM) {
            self.remove(&key);
            return Err(FragRxError::TooBig);
        }
        if frag.more && !frag.data.len().is_multiple_of(8) {
            self.remove(&key);
            return Err(FragRxError::Inconsistent);
        }
        let idx = match self
            .slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.key == key))
        {
            Some(i) => i,
            None => {
                let free = self
                    .slots
                    .iter()
                    .position(|s| s.as_ref().is_none_or(|s| s.deadline <= now))
                    .ok_or(FragRxError::NoSlot)?;
                let mut buf = pool.alloc().ok_or(FragRxError::NoBuffer)?;
                buf.reset_for_rx(HEADROOM);
                self.slots[free] = Some(Slot {
                    key,
                    buf,
                    ranges: [(0, 0); MAX_FRAGMENTS],
                    nranges: 0,
                    received: 0,
                    total: None,
                    deadline: now + self.timeout,
                });
                free
            }
        };
        let result = Self::add(self.slots[idx].as_mut(), frag, end);
        match result {
            Ok(true) => {
                let slot = self.slots[idx].take();
                Ok(slot.map(|s| s.buf))
            }
            Ok(false) => Ok(None),
            Err(e) => {
                self.slots[idx] = None;
                Err(e)
            }
        }
    }

    /// Adds `frag` to `slot`; true when the datagram is complete.
    fn add(slot: Option<&mut Slot>, frag: Fragment<'_>, end: usize) -> Result<bool, FragRxError> {
        let Some(s) = slot else {
            return Err(FragRxError::NoSlot);
        };
        let (start, stop) = (frag.offset as u32, end as u32);
        if s.ranges[..s.nranges]
            .iter()
            .any(|&(a, b)| start < b && a < stop)
        {
            return Err(FragRxError::Overlap);
        }
        if !frag.more {
            if s.total.is_some_and(|t| t != end) {
                return Err(FragRxError::Inconsistent);
            }
            s.total = Some(end);
        }
        if let Some(t) = s.total
            && (end > t || s.ranges[..s.nranges].iter().any(|&(_, b)| b as usize > t))
        {
            return Err(FragRxError::Inconsistent);
        }
        if s.nranges >= MAX_FRAGMENTS {
            return Err(FragRxError::TooManyFragments);
        }
        s.ranges[s.nranges] = (start, stop);
        s.nranges += 1;
        let space = s.buf.reset_for_rx(HEADROOM);
        let Some(dst) = space.get_mut(frag.offset..end) else {
            return Err(FragRxError::TooBig);
        };
        dst.copy_from_slice(frag.data);
        s.received += frag.data.len();
        match s.total {
            Some(t) if s.received == t => {
                s.buf.set_len(t).map_err(|_| FragRxError::TooBig)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn remove(&mut self, key: &FragKey) {
        for s in &mut self.slots {
            if s.as_ref().is_some_and(|s| s.key == *key) {
                *s = None;
            }
        }
    }

    /// Drops datagrams whose time ran out; returns how many.
    pub(crate) fn expire(&mut self, now: Instant) -> u64 {
        let mut n = 0;
        for s in &mut self.slots {
            if s.as_ref().is_some_and(|s| s.deadline <= now) {
                *s = None;
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic in a test is its failure report
mod tests {
    use super::*;
    use pkt::wire::{MacAddr, ethertype};

    fn key() -> FragKey {
        FragKey {
            src: IpAddr::from([10, 0, 0, 2]),
            dst: IpAddr::from([10, 0, 0, 1]),
            ident: 7,
            proto: ip_proto::UDP,
        }
    }

    fn frag(offset: usize, more: bool, data: &[u8]) -> Fragment<'_> {
        Fragment { offset, more, data }
    }

    #[test]
    fn out_of_order_fragments_reassemble() {
        let pool = Mempool::new(8, 2048).unwrap();
        let mut r = Reassembler::new(REASSEMBLY_TIMEOUT);
        let now = Instant::now();
        let data: Vec<u8> = (0..100u8).collect();
        assert!(
            r.insert(key(), frag(96, false, &data[96..]), now, &pool)
                .unwrap()
                .is_none()
        );
        assert!(
            r.insert(key(), frag(0, true, &data[..48]), now, &pool)
                .unwrap()
                .is_none()
        );
        let whole = r
            .insert(key(), frag(48, true, &data[48..96]), now, &pool)
            .unwrap()
            .unwrap();
        assert_eq!(whole.data(), &data[..]);
        assert_eq!(whole.headroom(), HEADROOM);
        assert_eq!(r.in_progress(), 0);
    }

    #[test]
    fn overlap_drops_the_datagram() {
        let pool = Mempool::new(8, 2048).unwrap();
        let mut r = Reassembler::new(REASSEMBLY_TIMEOUT);
        let now = Instant::now();
        let d = [0u8; 64];
        r.insert(key(), frag(0, true, &d[..16]), now, &pool)
            .unwrap();
        assert_eq!(
            r.insert(key(), frag(8, true, &d[..16]), now, &pool)
                .unwrap_err(),
            FragRxError::Overlap
        );
        assert_eq!(r.in_progress(), 0);
        assert_eq!(pool.available(), 8);
    }

    #[test]
    fn inconsistent_and_oversized_fragments_are_refused() {
        let pool = Mempool::new(8, 512).unwrap();
        let mut r = Reassembler::new(REASSEMBLY_TIMEOUT);
        let now = Instant::now();
        let d = [0u8; 600];
        assert_eq!(
            r.insert(key(), frag(0, true, &d[..12]), now, &pool)
                .unwrap_err(),
            FragRxError::Inconsistent
        );
        r.insert(key(), frag(16, false, &d[..16]), now, &pool)
            .unwrap();
        assert_eq!(
            r.insert(key(), frag(64, false, &d[..8]), now, &pool)
                .unwrap_err(),
            FragRxError::Inconsistent
        );
        assert_eq!(
            r.insert(key(), frag(0, false, &d[..600]), now, &pool)
                .unwrap_err(),
            FragRxError::TooBig
        );
        assert_eq!(pool.available(), 8);
    }

    #[test]
    fn slots_are_bounded_and_expire() {
        let pool = Mempool::new(64, 512).unwrap();
        let mut r = Reassembler::new(REASSEMBLY_TIMEOUT);
        let now = Instant::now();
        let d = [0u8; 8];
        for i in 0..MAX_DATAGRAMS as u32 {
            r.insert(FragKey { ident: i, ..key() }, frag(0, true, &d), now, &pool)
                .unwrap();
        }
        let extra = FragKey {
            ident: 999,
            ..key()
        };
        assert_eq!(
            r.insert(extra, frag(0, true, &d), now, &pool).unwrap_err(),
            FragRxError::NoSlot
        );
        assert_eq!(r.expire(now + REASSEMBLY_TIMEOUT), MAX_DATAGRAMS as u64);
        assert_eq!(pool.available(), 64);
        r.insert(extra, frag(0, true, &d), now + REASSEMBLY_TIMEOUT, &pool)
            .unwrap();
    }

    #[test]
    fn fragments_then_reassembles_to_the_same_bytes() {
        let pool = Mempool::new(16, 2048).unwrap();
        let eth = EthernetRepr {
            dst: MacAddr([2, 0, 0, 0, 0, 2]),
            src: MacAddr([2, 0, 0, 0, 0, 1]),
            vlan: None,
            ethertype: ethertype::IPV4,
        };
        for (ip, mtu) in [
            (FragIp::V4([10, 0, 0, 1].into(), [10, 0, 0, 2].into()), 576),
            (
                FragIp::V6("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap()),
                1280,
            ),
        ] {
            let eth = EthernetRepr {
                ethertype: if matches!(ip, FragIp::V4(..)) {
                    ethertype::IPV4
                } else {
                    ethertype::IPV6
                },
                ..eth
            };
            let data: Vec<u8> = (0..1600u32).map(|i| (i * 7) as u8).collect();
            let mut b = pool.alloc().unwrap();
            b.extend_from_slice(&data).unwrap();
            let need = fragments_needed(ip, mtu, data.len());
            let mut scratch = Vec::with_capacity(need);
            let mut out = Batch::new();
            assert_eq!(
                fragment(b, &eth, ip, mtu, 0x1234, &pool, &mut scratch, &mut out).unwrap(),
                need
            );
            let mut r = Reassembler::new(REASSEMBLY_TIMEOUT);
            let mut whole = None;
            for f in out.drain() {
                assert!(
                    f.len() <= 14 + mtu,
                    "fragment of {} bytes over MTU {mtu}",
                    f.len()
                );
                let (off, more, payload, ident) = match ip {
                    FragIp::V4(..) => {
                        let (h, o) = Ipv4Repr::parse(&f.data()[14..]).unwrap();
                        assert!(!h.dont_frag);
                        (
                            usize::from(h.frag_offset) * 8,
                            h.more_frags,
                            f.data()[14 + o..14 + o + h.payload_len].to_vec(),
                            u32::from(h.ident),
                        )
                    }
                    FragIp::V6(..) => {
                        let (h, o) = Ipv6Repr::parse(&f.data()[14..]).unwrap();
                        assert_eq!(h.next_header, ip_proto::IPV6_FRAG);
                        let fh = &f.data()[14 + o..14 + o + 8];
                        let of = u16::from_be_bytes([fh[2], fh[3]]);
                        let id = u32::from_be_bytes([fh[4], fh[5], fh[6], fh[7]]);
                        (
                            usize::from(of >> 3) * 8,
                            of & 1 == 1,
                            f.data()[14 + o + 8..14 + o + h.payload_len].to_vec(),
                            id,
                        )
                    }
                };
                assert_eq!(ident, 0x1234);
                let k = FragKey { ident, ..key() };
                if let Some(w) = r
                    .insert(k, frag(off, more, &payload), Instant::now(), &pool)
                    .unwrap()
                {
                    whole = Some(w);
                }
            }
            assert_eq!(whole.unwrap().data(), &data[..]);
        }
    }
}
