//! [`UdpPort`]: a kernel UDP socket as a [`PortKind::Datagram`] port, moving a batch per
//! `recvmmsg(2)` / `sendmmsg(2)` call.
//!
//! The kernel builds and strips the outer Ethernet/IP/UDP headers; frames carry only the
//! UDP payload (the VNET/P or VXLAN encapsulation and the inner frame), and
//! [`pkt::Meta::addr`] says which peer a datagram came from or goes to. Datagrams are
//! received straight into pool buffers at [`HEADROOM`], so the overlay can strip the
//! encapsulation header or prepend one without copying.
//!
//! With [`UdpOptions::gro`], the kernel may hand over several datagrams of one flow as a
//! single coalesced buffer (UDP GRO, Linux 5.0+); the port splits it back into one
//! frame per datagram, so callers never see the difference.
//!
//! With [`UdpOptions::gso`], a run of consecutive frames to one peer, all of one size
//! (the last may be shorter), leaves as one message with a `UDP_SEGMENT` control
//! message (UDP GSO, Linux 4.18+): the kernel routes, allocates and (on a GSO-capable
//! path such as veth or loopback) carries the run as one packet, and cuts it into the
//! same datagrams on the wire or at the receiver. Where the kernel refuses (`EIO`: the
//! device cannot; `EMSGSIZE` or `EINVAL`: a segment does not fit the path MTU), the
//! port sends those frames one datagram each (the kernel fragments them if it must, as
//! without GSO), counts and logs the refusal, and stops using GSO for that size and larger
//! (`EMSGSIZE`, `EINVAL`) or altogether (`EIO`).

use std::collections::VecDeque;
use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use pkt::{
    BATCH_MAX, Batch, HEADROOM, Mempool, Meta, Offloads, PktBuf, Port, PortCaps, PortKind,
    PortStats,
};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType, ipproto, sockopt};

use crate::NicError;

/// Requested kernel socket buffer size, both directions: room for a few batches of
/// jumbo datagrams so a slow poll does not drop at the socket. Best-effort: the kernel
/// caps it at `net.core.rmem_max` / `wmem_max`.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Largest UDP payload over IPv4: 65535 minus the 20-byte IPv4 and 8-byte UDP headers.
const MAX_PAYLOAD_V4: usize = 65_507;
/// Largest UDP payload over IPv6 without jumbograms: 65535 (the IPv6 payload length,
/// which excludes the fixed header) minus the 8-byte UDP header.
const MAX_PAYLOAD_V6: usize = 65_527;

/// Control-message space per received datagram: a `UDP_GRO` cmsg and an `SO_RXQ_OVFL`
/// cmsg, each carrying 4 bytes (`CMSG_SPACE(4)` is at most 24 bytes on 64-bit Linux),
/// as `u64`s for `cmsghdr` alignment. A sent message uses it for one `UDP_SEGMENT`.
type CtrlBuf = [u64; 8];

/// Most datagrams in one UDP GSO message (the kernel's `UDP_MAX_SEGMENTS`, 64 on every
/// kernel that has GSO).
const GSO_MAX_SEGMENTS: usize = 64;

/// The message arrays handed to `recvmmsg`/`sendmmsg`, allocated once per port.
///
/// The raw pointers inside (`msg_name`, `msg_iov`, `msg_control`, `iov_base`) are
/// rewritten before every call and only point into these arrays or into buffers the
/// port owns for the duration of the call.
struct MsgArrays {
    hdrs: Box<[libc::mmsghdr]>,
    iovs: Box<[libc::iovec]>,
    addrs: Box<[libc::sockaddr_storage]>,
    ctrl: Box<[CtrlBuf]>,
}

// SAFETY: the raw pointers in the arrays are scratch values, written immediately before
// each syscall made through `&mut UdpPort` and never read by Rust code afterwards, so
// moving the arrays to another thread cannot create shared access to anything.
unsafe impl Send for MsgArrays {}

impl MsgArrays {
    fn new() -> Self {
        // SAFETY: these are plain C structs for which all-zero bytes are a valid value
        // (null pointers, zero lengths, AF_UNSPEC).
        let zero_hdr = || unsafe { std::mem::zeroed::<libc::mmsghdr>() };
        // SAFETY: as above.
        let zero_addr = || unsafe { std::mem::zeroed::<libc::sockaddr_storage>() };
        Self {
            hdrs: (0..BATCH_MAX).map(|_| zero_hdr()).collect(),
            // Two per frame: a frame with an external tail is sent from two places.
            iovs: (0..2 * BATCH_MAX)
                .map(|_| libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                })
                .collect(),
            addrs: (0..BATCH_MAX).map(|_| zero_addr()).collect(),
            ctrl: vec![[0; 8]; BATCH_MAX].into_boxed_slice(),
        }
    }

    /// Gives message `i` its control buffer, for the kernel to report a GRO segment size.
    fn link_ctrl(&mut self, i: usize) {
        let ctrl: *mut CtrlBuf = &mut self.ctrl[i];
        let hdr = &mut self.hdrs[i];
        hdr.msg_hdr.msg_control = ctrl.cast();
        hdr.msg_hdr.msg_controllen = size_of::<CtrlBuf>() as _;
    }

    /// The `UDP_GRO` segment size the kernel reported for received message `i`, if it
    /// coalesced several datagrams into it.
    fn gro_segment_size(&self, i: usize) -> Option<usize> {
        self.cmsg_int(i, libc::SOL_UDP, libc::UDP_GRO)
            .and_then(|size| usize::try_from(size).ok())
            .filter(|&s| s > 0)
    }

    /// The socket's running count of datagrams the kernel dropped for lack of receive
    /// buffer space (`SO_RXQ_OVFL`), as reported with received message `i`.
    fn kernel_drops(&self, i: usize) -> Option<u32> {
        self.cmsg_int(i, libc::SOL_SOCKET, libc::SO_RXQ_OVFL)
            .map(|v| v as u32)
    }

    /// The 4-byte value of the control message (`level`, `kind`) of message `i`.
    fn cmsg_int(&self, i: usize, level: libc::c_int, kind: libc::c_int) -> Option<libc::c_int> {
        let hdr = &self.hdrs[i].msg_hdr;
        if hdr.msg_control.is_null() {
            return None;
        }
        // SAFETY: `msg_control`/`msg_controllen` describe `self.ctrl[i]` as the kernel
        // left it (it only shrinks `msg_controllen`); the CMSG_* helpers stay within
        // that length and return null when no whole header fits.
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(hdr) };
        while !cmsg.is_null() {
            // SAFETY: non-null `cmsg` points at a whole, aligned `cmsghdr` inside the
            // control buffer (CMSG_FIRSTHDR/CMSG_NXTHDR guarantee it).
            let c = unsafe { &*cmsg };
            if c.cmsg_level == level
                && c.cmsg_type == kind
                && c.cmsg_len as usize >= size_of::<libc::cmsghdr>() + size_of::<libc::c_int>()
            {
                // SAFETY: the length check above puts an `int` of data after the header,
                // inside the buffer; it may be unaligned, hence `read_unaligned`.
                return Some(unsafe {
                    libc::CMSG_DATA(cmsg).cast::<libc::c_int>().read_unaligned()
                });
            }
            // SAFETY: as for CMSG_FIRSTHDR: yields the next header inside the buffer or null.
            cmsg = unsafe { libc::CMSG_NXTHDR(hdr, cmsg) };
        }
        None
    }

    /// Points message `m` at its address slot and at the `count` iovecs from `first`
    /// (one or two per datagram); with `segment`, adds a `UDP_SEGMENT` control message so
    /// the kernel sends them as one GSO run of `segment`-byte datagrams.
    fn link_run(
        &mut self,
        m: usize,
        first: usize,
        count: usize,
        namelen: libc::socklen_t,
        segment: Option<u16>,
    ) {
        let name: *mut libc::sockaddr_storage = &mut self.addrs[m];
        let iov: *mut libc::iovec = &mut self.iovs[first];
        let ctrl: *mut CtrlBuf = &mut self.ctrl[m];
        let hdr = &mut self.hdrs[m];
        hdr.msg_hdr.msg_name = name.cast();
        hdr.msg_hdr.msg_namelen = namelen;
        hdr.msg_hdr.msg_iov = iov;
        hdr.msg_hdr.msg_iovlen = count as _;
        hdr.msg_hdr.msg_control = std::ptr::null_mut();
        hdr.msg_hdr.msg_controllen = 0;
        hdr.msg_hdr.msg_flags = 0;
        hdr.msg_len = 0;
        let Some(size) = segment else {
            return;
        };
        // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic on a length.
        let (space, len) = unsafe {
            (
                libc::CMSG_SPACE(size_of::<u16>() as u32) as usize,
                libc::CMSG_LEN(size_of::<u16>() as u32) as usize,
            )
        };
        debug_assert!(space <= size_of::<CtrlBuf>());
        hdr.msg_hdr.msg_control = ctrl.cast();
        hdr.msg_hdr.msg_controllen = space as _;
        // SAFETY: `msg_control` points at `self.ctrl[m]` (u64-aligned, 64 bytes) and
        // `msg_controllen` (at most that size) leaves room for one header plus a u16,
        // so CMSG_FIRSTHDR returns a pointer to a whole header inside it; CMSG_DATA
        // points inside the same buffer, and the u16 is written unaligned-safe.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&hdr.msg_hdr);
            if cmsg.is_null() {
                hdr.msg_hdr.msg_control = std::ptr::null_mut();
                hdr.msg_hdr.msg_controllen = 0;
                return;
            }
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = libc::UDP_SEGMENT;
            (*cmsg).cmsg_len = len as _;
            libc::CMSG_DATA(cmsg).cast::<u16>().write_unaligned(size);
        }
    }

    /// Points message `i` at its own address slot and its own single iovec.
    fn link(&mut self, i: usize, namelen: libc::socklen_t) {
        let name: *mut libc::sockaddr_storage = &mut self.addrs[i];
        let iov: *mut libc::iovec = &mut self.iovs[i];
        let hdr = &mut self.hdrs[i];
        hdr.msg_hdr.msg_name = name.cast();
        hdr.msg_hdr.msg_namelen = namelen;
        hdr.msg_hdr.msg_iov = iov;
        hdr.msg_hdr.msg_iovlen = 1;
        hdr.msg_hdr.msg_control = std::ptr::null_mut();
        hdr.msg_hdr.msg_controllen = 0;
        hdr.msg_hdr.msg_flags = 0;
        hdr.msg_len = 0;
    }
}

/// Traffic and drop counters, plain integers: the port is used by one thread at a time.
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
    rx_truncated: u64,
    rx_no_buffer: u64,
    rx_gro_no_buffer: u64,
    rx_error: u64,
    /// Datagrams the kernel dropped because the socket's receive buffer was full
    /// (`SO_RXQ_OVFL`, cumulative since the socket was opened).
    rx_kernel_dropped: u64,
    /// Coalesced GRO buffers split (not a drop; tells tests GRO was exercised).
    rx_gro_split: u64,
    tx_no_address: u64,
    tx_wrong_family: u64,
    tx_too_big: u64,
    tx_error: u64,
    /// GSO messages the kernel refused (their frames went out one by one instead).
    tx_gso_refused: u64,
    /// Messages sent as a GSO run of several datagrams (not a drop; shows GSO works).
    tx_gso_runs: u64,
}

/// Options of a [`UdpPort`] beyond its address and pool. `Default` is a plain socket
/// (no GRO, no GSO); [`UdpPort::bind`] picks [`UdpOptions::for_pool`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpOptions {
    /// Let the kernel coalesce consecutive datagrams of a flow into one buffer (UDP
    /// GRO, Linux 5.0+), which the port splits again: fewer, larger socket reads when
    /// the peer sends bursts (a NIC doing GRO, or a sender using UDP GSO). Needs a pool
    /// whose buffers hold a whole 64 KiB datagram plus [`HEADROOM`], since the kernel
    /// coalesces up to that size whatever our buffer; split-off datagrams after the
    /// first are copied into buffers of their own.
    pub gro: bool,
    /// Send runs of same-size datagrams to one peer as one UDP GSO message
    /// (`UDP_SEGMENT`, Linux 4.18+); falls back to one datagram each where the kernel
    /// refuses. What goes on the wire is the same either way.
    pub gso: bool,
    /// Set `SO_REUSEPORT` before binding, so several sockets (one per dispatcher
    /// shard) share the address; the kernel spreads received datagrams over them by
    /// a hash of the 4-tuple. Off, a second bind to the address fails with "address
    /// in use", which is what a single daemon wants.
    pub reuse_port: bool,
}

impl UdpOptions {
    /// The fastest options `pool` allows: GSO always, GRO when its buffers hold a
    /// whole 64 KiB datagram (for a socket of family `ipv6`).
    pub fn for_pool(pool: &Mempool, ipv6: bool) -> Self {
        let max = if ipv6 { MAX_PAYLOAD_V6 } else { MAX_PAYLOAD_V4 };
        Self {
            gro: pool.buf_size() >= HEADROOM + max,
            gso: true,
            reuse_port: false,
        }
    }
}

/// A coalesced GRO buffer being split: `buf.data()` holds the datagrams not yet
/// handed out, each `seg` bytes (the last may be shorter).
#[derive(Debug)]
struct GroPending {
    buf: PktBuf,
    seg: usize,
}

/// A non-blocking kernel UDP socket (IPv4 or IPv6) as a batch port.
///
/// Receive: one `recvmmsg` per [`Port::rx_batch`], each datagram landing in its own
/// pool buffer at [`HEADROOM`]; the sender is in [`pkt::Meta::addr`]. Transmit: one
/// `sendmmsg` per [`Port::tx_batch`], each frame to its [`pkt::Meta::addr`].
///
/// Named drop counters: `rx_truncated` (datagram larger than a pool buffer),
/// `rx_no_buffer` (receive calls that left datagrams queued in the socket because the
/// pool was empty), `rx_error` (receive calls failing with an error other than
/// would-block), `rx_gro_no_buffer` (datagrams split from a GRO buffer and dropped
/// because the pool ran out), `tx_no_address` (frame without [`pkt::Meta::addr`]),
/// `tx_wrong_family` (IPv4 peer on an IPv6 socket or the reverse), `tx_too_big`
/// (`EMSGSIZE`), `tx_error` (any other per-datagram send error, e.g. unreachable).
/// GSO messages the kernel refused are not drops (their frames go out one datagram
/// each): they are counted inside the port and logged once per refused size.
///
/// The port keeps up to [`BATCH_MAX`] pool buffers posted for receive between calls,
/// as a NIC ring does: size the pool for it. With GRO, a full batch may leave split
/// datagrams inside the port, so call [`Port::rx_batch`] again before waiting on
/// [`Port::poll_fd`] whenever it filled the batch.
pub struct UdpPort {
    name: String,
    fd: OwnedFd,
    local: SocketAddr,
    pool: Mempool,
    mtu: usize,
    /// Buffers posted for receive, like a NIC ring's descriptors; kept across calls so
    /// an idle poll costs no pool traffic.
    posted: Vec<PktBuf>,
    /// Frames of the batch being sent, staged so undeliverable ones can be dropped.
    staged: Vec<PktBuf>,
    msgs: MsgArrays,
    gro: bool,
    /// Send same-size runs with UDP GSO; cleared when the kernel says it cannot (EIO).
    gso: bool,
    /// Segment sizes at or above this are sent without GSO (the kernel refused one:
    /// a segment larger than the path MTU).
    gso_size_limit: usize,
    /// Messages of the batch being sent, as (first staged frame, frame count).
    runs: Box<[(u16, u16)]>,
    /// Per staged frame, the index of its first iovec (one more entry than frames):
    /// a frame with an external tail takes two.
    iov_at: Box<[u16]>,
    /// Coalesced buffers (and datagrams queued behind them, to keep order) waiting
    /// for batch room; empty whenever `recvmmsg` is called, so it never exceeds
    /// [`BATCH_MAX`] entries and never reallocates.
    pending: VecDeque<GroPending>,
    c: Counters,
}

impl std::fmt::Debug for UdpPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpPort")
            .field("local", &self.local)
            .field("mtu", &self.mtu)
            .field("counters", &self.c)
            .finish_non_exhaustive()
    }
}

impl UdpPort {
    /// Opens a non-blocking UDP socket bound to `addr` (IPv4 or IPv6 by the address;
    /// IPv6 sockets are IPv6-only). Port 0 picks a free port: see
    /// [`UdpPort::local_addr`]. Datagrams are received into buffers from `pool`, so the
    /// largest datagram is the pool's buffer size minus [`HEADROOM`]. Uses GSO, and
    /// GRO where the pool allows it ([`UdpOptions::for_pool`]).
    pub fn bind(addr: SocketAddr, pool: Mempool) -> Result<Self, NicError> {
        let options = UdpOptions::for_pool(&pool, addr.is_ipv6());
        Self::bind_with(addr, pool, options)
    }

    /// [`UdpPort::bind`] with options (see [`UdpOptions`]).
    pub fn bind_with(
        addr: SocketAddr,
        pool: Mempool,
        options: UdpOptions,
    ) -> Result<Self, NicError> {
        let max_payload = if addr.is_ipv6() {
            MAX_PAYLOAD_V6
        } else {
            MAX_PAYLOAD_V4
        };
        if options.gro && pool.buf_size() < HEADROOM + max_payload {
            return Err(NicError::PoolTooSmall {
                port: format!("UDP GRO socket {addr}"),
                buf_size: pool.buf_size(),
                need: max_payload,
            });
        }
        let family = if addr.is_ipv6() {
            AddressFamily::INET6
        } else {
            AddressFamily::INET
        };
        let fd = rustix::net::socket_with(
            family,
            SocketType::DGRAM,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            Some(ipproto::UDP),
        )
        .map_err(|errno| NicError::Socket { addr, errno })?;
        // Best-effort: without privileges the kernel caps these at rmem_max/wmem_max,
        // which still works, only with less slack.
        let _ = sockopt::set_socket_recv_buffer_size(&fd, SOCKET_BUFFER_BYTES);
        let _ = sockopt::set_socket_send_buffer_size(&fd, SOCKET_BUFFER_BYTES);
        if addr.is_ipv6() {
            // One socket per family keeps peer addresses unambiguous (no v4-mapped forms).
            sockopt::set_ipv6_v6only(&fd, true)
                .map_err(|errno| NicError::Socket { addr, errno })?;
        }
        if options.reuse_port {
            sockopt::set_socket_reuseport(&fd, true)
                .map_err(|errno| NicError::Socket { addr, errno })?;
        }
        rustix::net::bind(&fd, &addr).map_err(|errno| match errno {
            Errno::ADDRINUSE => NicError::AddrInUse { addr },
            Errno::ADDRNOTAVAIL => NicError::AddrNotAvailable { addr },
            Errno::ACCESS | Errno::PERM => NicError::BindPermission { addr },
            errno => NicError::Bind { addr, errno },
        })?;
        // Best effort: lets the port report datagrams the kernel dropped (full buffer).
        let _ = set_int_sockopt(&fd, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1);
        if options.gro {
            set_udp_gro(&fd).map_err(|errno| NicError::Gro { addr, errno })?;
        }
        let local = rustix::net::getsockname(&fd)
            .ok()
            .and_then(|a| SocketAddr::try_from(a).ok())
            .unwrap_or(addr);
        let mtu = pool.buf_size().saturating_sub(HEADROOM).min(max_payload);
        Ok(Self {
            name: format!("udp:{local}"),
            fd,
            local,
            pool,
            mtu,
            posted: Vec::with_capacity(BATCH_MAX),
            staged: Vec::with_capacity(BATCH_MAX),
            msgs: MsgArrays::new(),
            gro: options.gro,
            gso: options.gso,
            gso_size_limit: max_payload,
            runs: vec![(0, 0); BATCH_MAX].into_boxed_slice(),
            iov_at: vec![0; BATCH_MAX + 1].into_boxed_slice(),
            pending: VecDeque::with_capacity(BATCH_MAX),
            c: Counters::default(),
        })
    }

    /// The address the socket is bound to (with the port the kernel chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// A second descriptor of this socket, for control-time changes made after the
    /// port moved to its dispatcher thread, such as [`attach_reuseport_cbpf`].
    pub fn try_clone_fd(&self) -> std::io::Result<OwnedFd> {
        self.fd.try_clone()
    }

    /// Moves datagrams split from pending GRO buffers into `batch`, in order, while it
    /// has room. Every datagram but a buffer's last is copied into a buffer of its own;
    /// the last is the coalesced buffer itself, its head moved to that datagram.
    fn drain_pending(&mut self, batch: &mut Batch) -> usize {
        let mut pushed = 0;
        while batch.room() > 0 {
            let Some(front) = self.pending.front_mut() else {
                break;
            };
            let seg = front.seg;
            let out = if front.buf.len() <= seg {
                match self.pending.pop_front() {
                    Some(last) => last.buf,
                    None => break,
                }
            } else {
                // Buffers posted for receive first: they are ours and idle right now.
                let spare = self.posted.pop().or_else(|| self.pool.alloc());
                let copy = spare.and_then(|mut copy| {
                    copy.reset_for_rx(HEADROOM)
                        .get_mut(..seg)?
                        .copy_from_slice(&front.buf.data()[..seg]);
                    copy.set_len(seg).ok()?;
                    copy.meta = front.buf.meta;
                    Some(copy)
                });
                // Cannot fail: the buffer holds more than `seg` bytes.
                let _ = front.buf.strip_front(seg);
                match copy {
                    Some(copy) => copy,
                    None => {
                        // Nothing to split into. Drop rather than hold datagrams that
                        // the socket's readiness would no longer announce.
                        self.c.rx_gro_no_buffer += 1;
                        continue;
                    }
                }
            };
            let len = out.len();
            if batch.push(out).is_ok() {
                self.c.rx_packets += 1;
                self.c.rx_bytes += len as u64;
                pushed += 1;
            }
        }
        pushed
    }

    fn is_v6(&self) -> bool {
        self.local.is_ipv6()
    }

    /// True when a datagram is queued in the socket (one extra syscall; only used when
    /// the pool is empty, to tell whether that cost us anything).
    fn datagram_waiting(&self) -> bool {
        let mut none: [u8; 0] = [];
        rustix::net::recv(
            &self.fd,
            &mut none[..],
            rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT,
        )
        .is_ok()
    }
}

/// Turns on UDP GRO (`setsockopt(SOL_UDP, UDP_GRO, 1)`; rustix has no wrapper).
fn set_udp_gro(fd: &OwnedFd) -> Result<(), Errno> {
    set_int_sockopt(fd, libc::SOL_UDP, libc::UDP_GRO, 1)
}

/// `setsockopt` of one `int` (for options rustix has no wrapper for).
fn set_int_sockopt(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> Result<(), Errno> {
    let on: libc::c_int = value;
    // SAFETY: these options read one `int` from the pointer, which points at a live
    // local of the length passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 { Err(last_errno()) } else { Ok(()) }
}

/// The `errno` of the last failed libc call.
fn last_errno() -> Errno {
    Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO)
}

/// Reads the socket address the kernel wrote into `ss` (`len` bytes of it).
fn sockaddr_to_std(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(ss.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: `sockaddr_storage` is large enough and suitably aligned for every
            // socket address type, and the family field says it holds a `sockaddr_in`.
            let sin = unsafe { &*std::ptr::from_ref(ss).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for `sockaddr_in6`.
            let sin6 = unsafe { &*std::ptr::from_ref(ss).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Writes `addr` into `ss` as a C socket address; returns its length.
fn std_to_sockaddr(addr: &SocketAddr, ss: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: `sockaddr_storage` is large enough and suitably aligned for a
            // `sockaddr_in`, and we hold the only reference to it.
            let sin = unsafe { &mut *std::ptr::from_mut(ss).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            };
            sin.sin_zero = [0; 8];
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for `sockaddr_in6`.
            let sin6 = unsafe { &mut *std::ptr::from_mut(ss).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// What happened to the message at the front of a `sendmmsg` call that sent nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendFailure {
    /// The socket buffer is full: stop, keep this frame and the rest.
    WouldBlock,
    /// This datagram is too big for the path: drop it.
    TooBig,
    /// This datagram cannot be sent (unreachable, refused, ...): drop it.
    Error,
    /// The kernel refused this GSO message as such: stop, send its frames without GSO.
    GsoRefused(Errno),
}

impl SendFailure {
    fn from_errno(errno: Errno, gso: bool) -> Self {
        match errno {
            // EINTR cannot happen on a non-blocking send; if it ever does, let the
            // caller retry rather than spin here.
            Errno::AGAIN | Errno::INTR | Errno::NOBUFS => Self::WouldBlock,
            // udp_send_skb: EIO when the route's device cannot segment or checksum;
            // a segment larger than the path MTU is EMSGSIZE (EINVAL before Linux
            // 6.11); EINVAL also for too many segments.
            Errno::IO | Errno::INVAL | Errno::MSGSIZE if gso => Self::GsoRefused(errno),
            Errno::MSGSIZE => Self::TooBig,
            _ => Self::Error,
        }
    }
}

/// Outcome of sending messages `0..runs.len()`, counted in frames (a GSO message
/// carries several).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct SendOutcome {
    /// Messages `0..done` were sent or dropped; `done..` stay queued.
    done: usize,
    sent: usize,
    too_big: usize,
    error: usize,
    /// Message `done` is a GSO message the kernel refused with this error.
    gso_refused: Option<Errno>,
}

/// Drives `sendmmsg` over the messages `runs` describes (first frame, frame count):
/// `send(start)` sends from message `start` on and returns how many messages went out
/// (at least one) or why the message at `start` failed. A message that fails for its
/// own reason is dropped and sending resumes after it; would-block and a refused GSO
/// message stop. Usually one call; one more per failed message.
fn send_all(
    runs: &[(u16, u16)],
    mut send: impl FnMut(usize) -> Result<usize, Errno>,
) -> SendOutcome {
    let frames = |range: std::ops::Range<usize>| -> usize {
        runs[range].iter().map(|&(_, n)| usize::from(n)).sum()
    };
    let count = runs.len();
    let mut out = SendOutcome::default();
    while out.done < count {
        match send(out.done) {
            Ok(0) => break,
            Ok(n) => {
                let n = n.min(count - out.done);
                out.sent += frames(out.done..out.done + n);
                out.done += n;
            }
            Err(errno) => {
                let k = frames(out.done..out.done + 1);
                match SendFailure::from_errno(errno, k > 1) {
                    SendFailure::WouldBlock => break,
                    SendFailure::GsoRefused(e) => {
                        out.gso_refused = Some(e);
                        break;
                    }
                    SendFailure::TooBig => {
                        out.too_big += k;
                        out.done += 1;
                    }
                    SendFailure::Error => {
                        out.error += k;
                        out.done += 1;
                    }
                }
            }
        }
    }
    out
}

/// Cuts frames `from..count` into messages, written to `runs` as (first, count):
/// consecutive frames to one peer, all `key(first).0` bytes but the last (which may be
/// shorter), at most [`GSO_MAX_SEGMENTS`] and `max_bytes` in all, go in one message
/// when `gso_ok(size)` allows; every other frame is a message of its own. `key(i)` is
/// frame `i`'s (length, peer). Returns the number of messages.
fn plan_runs(
    from: usize,
    count: usize,
    key: impl Fn(usize) -> (usize, Option<SocketAddr>),
    gso_ok: impl Fn(usize) -> bool,
    max_bytes: usize,
    runs: &mut [(u16, u16)],
) -> usize {
    let mut m = 0;
    let mut i = from;
    while i < count && m < runs.len() {
        let (seg, addr) = key(i);
        let mut k = 1;
        if seg > 0 && gso_ok(seg) {
            let mut total = seg;
            while i + k < count && k < GSO_MAX_SEGMENTS {
                let (len, a) = key(i + k);
                if a != addr || len > seg || len == 0 || total + len > max_bytes {
                    break;
                }
                total += len;
                k += 1;
                if len < seg {
                    // Only the last datagram of a run may be short.
                    break;
                }
            }
        }
        // Both fit u16: indices and counts are below BATCH_MAX.
        runs[m] = (i as u16, k as u16);
        m += 1;
        i += k;
    }
    m
}

impl Port for UdpPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_batch(&mut self, batch: &mut Batch) -> usize {
        let mut pushed = self.drain_pending(batch);
        let want = batch.room();
        if want == 0 || !self.pending.is_empty() {
            return pushed;
        }
        while self.posted.len() < want {
            match self.pool.alloc() {
                Some(buf) => self.posted.push(buf),
                None => break,
            }
        }
        let n = self.posted.len().min(want);
        if n == 0 {
            if self.datagram_waiting() {
                self.c.rx_no_buffer += 1;
            }
            return pushed;
        }
        let namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        for (i, buf) in self.posted.iter_mut().take(n).enumerate() {
            let space = buf.reset_for_rx(HEADROOM);
            self.msgs.iovs[i] = libc::iovec {
                iov_base: space.as_mut_ptr().cast(),
                iov_len: space.len(),
            };
            self.msgs.link(i, namelen);
            self.msgs.link_ctrl(i);
        }
        // SAFETY: messages 0..n each point at their own `sockaddr_storage` (with
        // `msg_namelen` its full size), at their own control buffer (GRO only, with
        // `msg_controllen` its size) and at one iovec covering the writable tail of a
        // pool buffer in `self.posted`, which we own and do not touch until the call
        // returns; the kernel writes within those lengths only.
        let rc = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                self.msgs.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            match last_errno() {
                Errno::AGAIN | Errno::INTR => {}
                _ => self.c.rx_error += 1,
            }
            return pushed;
        }
        let got = (rc as usize).min(n);
        if let Some(dropped) = got
            .checked_sub(1)
            .and_then(|last| self.msgs.kernel_drops(last))
        {
            self.c.rx_kernel_dropped = u64::from(dropped);
        }
        for (i, mut buf) in self.posted.drain(..got).enumerate() {
            let hdr = &self.msgs.hdrs[i];
            let len = hdr.msg_len as usize;
            if hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || buf.set_len(len).is_err() {
                self.c.rx_truncated += 1;
                continue;
            }
            buf.meta = Meta {
                addr: sockaddr_to_std(&self.msgs.addrs[i], hdr.msg_hdr.msg_namelen),
                ..Meta::default()
            };
            let seg = if self.gro {
                self.msgs.gro_segment_size(i)
            } else {
                None
            };
            match seg {
                Some(seg) if len > seg => {
                    self.c.rx_gro_split += 1;
                    self.pending.push_back(GroPending { buf, seg });
                }
                // Once anything waits, everything after it waits too: order matters.
                _ if !self.pending.is_empty() => {
                    self.pending.push_back(GroPending { buf, seg: len })
                }
                _ => {
                    if batch.push(buf).is_ok() {
                        self.c.rx_packets += 1;
                        self.c.rx_bytes += len as u64;
                        pushed += 1;
                    }
                }
            }
        }
        pushed + self.drain_pending(batch)
    }

    /// Sends every frame to its [`pkt::Meta::addr`] with one `sendmmsg` (runs of
    /// same-size frames to one peer as UDP GSO messages). Frames that cannot be
    /// delivered (no address, wrong family, too big, unreachable) are removed and
    /// counted; frames the socket had no room for stay at the front of `batch`.
    /// Returns how many were sent.
    fn tx_batch(&mut self, batch: &mut Batch) -> usize {
        if batch.is_empty() {
            return 0;
        }
        let v6 = self.is_v6();
        self.staged.clear();
        for buf in batch.drain() {
            match buf.meta.addr {
                None => self.c.tx_no_address += 1,
                Some(addr) if addr.is_ipv6() != v6 => self.c.tx_wrong_family += 1,
                Some(_) => self.staged.push(buf),
            }
        }
        let count = self.staged.len();
        let max_bytes = if v6 { MAX_PAYLOAD_V6 } else { MAX_PAYLOAD_V4 };
        let fd = self.fd.as_raw_fd();
        let mut from = 0;
        let mut sent = 0;
        // Each pass either finishes or stops at a refused GSO message, after which GSO
        // is off for that message's size: at most one pass per frame, plus one.
        for _ in 0..=BATCH_MAX {
            // A frame is its buffer's bytes and, if it has one, its external tail: two
            // iovecs, which the kernel joins (and a GSO run cuts across) as it copies.
            let mut v = 0;
            for (i, buf) in self.staged.iter().enumerate() {
                self.iov_at[i] = v as u16;
                let (head, tail) = buf.parts();
                for part in std::iter::once(head).chain((!tail.is_empty()).then_some(tail)) {
                    // `sendmmsg` only reads through `iov_base`; the mut cast is the C type's.
                    self.msgs.iovs[v] = libc::iovec {
                        iov_base: part.as_ptr().cast_mut().cast(),
                        iov_len: part.len(),
                    };
                    v += 1;
                }
            }
            self.iov_at[count] = v as u16;
            let (gso, limit) = (self.gso, self.gso_size_limit);
            let staged = &self.staged;
            let nm = plan_runs(
                from,
                count,
                |i| (staged[i].frame_len(), staged[i].meta.addr),
                |size| gso && size < limit && size <= usize::from(u16::MAX),
                max_bytes,
                &mut self.runs,
            );
            for m in 0..nm {
                let (first, k) = self.runs[m];
                let (first, k) = (usize::from(first), usize::from(k));
                let Some(addr) = staged[first].meta.addr else {
                    continue;
                };
                let namelen = std_to_sockaddr(&addr, &mut self.msgs.addrs[m]);
                let segment = (k > 1).then(|| staged[first].frame_len() as u16);
                let iov = usize::from(self.iov_at[first]);
                let iovs = usize::from(self.iov_at[first + k]) - iov;
                self.msgs.link_run(m, iov, iovs, namelen, segment);
            }
            let hdrs = &mut self.msgs.hdrs;
            let runs = &self.runs[..nm];
            let out = send_all(runs, |start| {
                // SAFETY: messages start..nm point at their own initialised socket
                // address, at their own control buffer (GSO runs only, with a valid
                // UDP_SEGMENT header) and at iovecs covering frames in `self.staged`
                // (buffer parts and external tails, valid while the frames live),
                // which stay alive and unmodified for the call; the kernel only reads
                // them (and writes `msg_len`). `start < nm <= hdrs.len()`.
                let rc = unsafe {
                    libc::sendmmsg(
                        fd,
                        hdrs.as_mut_ptr().add(start),
                        (nm - start) as libc::c_uint,
                        libc::MSG_DONTWAIT,
                    )
                };
                if rc < 0 {
                    Err(last_errno())
                } else {
                    Ok(rc as usize)
                }
            });
            self.c.tx_too_big += out.too_big as u64;
            self.c.tx_error += out.error as u64;
            self.c.tx_packets += out.sent as u64;
            sent += out.sent;
            for (m, &(first, k)) in runs[..out.done].iter().enumerate() {
                let (first, k) = (usize::from(first), usize::from(k));
                let bytes: usize = staged[first..first + k].iter().map(PktBuf::frame_len).sum();
                // Sent, not dropped: the kernel set `msg_len` (which `link_run` zeroed).
                if self.msgs.hdrs[m].msg_len as usize == bytes {
                    self.c.tx_bytes += bytes as u64;
                    if k > 1 {
                        self.c.tx_gso_runs += 1;
                    }
                }
            }
            from = match runs.get(out.done) {
                Some(&(first, _)) => usize::from(first),
                None => count,
            };
            match out.gso_refused {
                Some(errno) => {
                    self.c.tx_gso_refused += 1;
                    let size = staged.get(from).map_or(0, PktBuf::frame_len);
                    if errno == Errno::IO || size <= 1 {
                        self.gso = false;
                        tracing::info!(port = %self.name, "the kernel cannot send UDP GSO here (EIO): sending one datagram per frame");
                    } else {
                        self.gso_size_limit = self.gso_size_limit.min(size);
                        tracing::info!(port = %self.name, size, %errno, "the kernel refused UDP GSO segments of this size (larger than the path MTU?): sending them one by one");
                    }
                }
                None => break,
            }
        }
        // What was neither sent nor dropped goes back, in order.
        for buf in self.staged.drain(from.min(count)..) {
            // Cannot fail: these frames came out of this batch.
            let _ = batch.push(buf);
        }
        self.staged.clear();
        sent
    }

    fn caps(&self) -> PortCaps {
        PortCaps {
            kind: PortKind::Datagram,
            mtu: self.mtu,
            rx_queues: 1,
            tx_queues: 1,
            // Frames with an external tail go out as two iovecs, copied by the kernel.
            offloads: Offloads::EXT_TAIL,
        }
    }

    fn stats(&self) -> PortStats {
        let c = &self.c;
        PortStats::new(
            (c.rx_packets, c.rx_bytes),
            (c.tx_packets, c.tx_bytes),
            &[
                ("rx_truncated", c.rx_truncated),
                ("rx_no_buffer", c.rx_no_buffer),
                ("rx_gro_no_buffer", c.rx_gro_no_buffer),
                ("rx_error", c.rx_error),
                ("rx_kernel_dropped", c.rx_kernel_dropped),
                ("tx_no_address", c.tx_no_address),
                ("tx_wrong_family", c.tx_wrong_family),
                ("tx_too_big", c.tx_too_big),
                ("tx_error", c.tx_error),
            ],
        )
    }

    fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.fd.as_fd())
    }
}

// ---- steering a reuseport group by inner destination MAC ----------------------------

/// Where the inner Ethernet destination MAC starts in a datagram's payload: at 0 for
/// the vnetp encapsulation (the whole frame is the payload), at 8 for VXLAN (after
/// its 8-byte header).
pub const INNER_MAC_OFFSETS: [u32; 2] = [0, 8];

/// Most instructions the kernel takes in a classic BPF program (`BPF_MAXINSNS`).
pub const CBPF_MAX_INSNS: usize = 4096;

/// What a reuseport program returns to leave the choice to the kernel's 4-tuple hash:
/// any index at or above the group's socket count does.
const RET_HASH: u32 = u32::MAX;

// Classic BPF opcodes (linux/filter.h), as `sock_filter::code`.
const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const LD_H_ABS: u16 = (libc::BPF_LD | libc::BPF_H | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// Instructions one (MAC, offset) test takes: load word, compare, load half, compare,
/// return the socket.
const INSNS_PER_TEST: usize = 5;

/// A classic BPF program for `SO_ATTACH_REUSEPORT_CBPF` that picks, for each received
/// datagram, the socket whose index its inner destination MAC maps to, and leaves
/// every other datagram (broadcast, multicast, unknown MAC, encrypted payload) to the
/// kernel's 4-tuple hash.
///
/// The kernel runs it with the packet data at the UDP payload and uses its return
/// value as an index into the group's sockets in the order they were bound. A load
/// beyond a short datagram makes it return 0 (socket 0). Per target and offset:
/// `ld [off]; jeq hi32(mac) ? next : skip; ldh [off+4]; jeq lo16(mac) ? next : skip;
/// ret socket`; then `ret 0xffffffff`.
pub struct MacSteering {
    insns: Vec<libc::sock_filter>,
    steered: usize,
}

impl std::fmt::Debug for MacSteering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MacSteering")
            .field("instructions", &self.insns.len())
            .field("steered", &self.steered)
            .finish()
    }
}

impl MacSteering {
    /// The program sending datagrams whose inner destination MAC (at any of
    /// `offsets` in the payload) is a target's MAC to that target's socket index.
    /// Group addresses are skipped (a broadcast goes by the hash); targets beyond
    /// what fits in [`CBPF_MAX_INSNS`] are left out, in order: see
    /// [`MacSteering::steered`].
    pub fn new(targets: &[([u8; 6], u32)], offsets: &[u32]) -> Self {
        let per_target = INSNS_PER_TEST * offsets.len();
        // No offset: nothing to test, every datagram hashes.
        let room = (CBPF_MAX_INSNS - 1).checked_div(per_target).unwrap_or(0);
        let unicast: Vec<&([u8; 6], u32)> =
            targets.iter().filter(|(mac, _)| mac[0] & 1 == 0).collect();
        let steered = unicast.len().min(room);
        let mut insns = Vec::with_capacity(steered * per_target + 1);
        for &off in offsets {
            for (mac, socket) in &unicast[..steered] {
                let hi = u32::from_be_bytes([mac[0], mac[1], mac[2], mac[3]]);
                let lo = u32::from(u16::from_be_bytes([mac[4], mac[5]]));
                // Jumps are relative to the next instruction: "skip" lands on the next
                // test's first instruction.
                insns.extend([
                    insn(LD_W_ABS, 0, 0, off),
                    insn(JEQ_K, 0, 3, hi),
                    insn(LD_H_ABS, 0, 0, off.saturating_add(4)),
                    insn(JEQ_K, 0, 1, lo),
                    insn(RET_K, 0, 0, *socket),
                ]);
            }
        }
        insns.push(insn(RET_K, 0, 0, RET_HASH));
        Self { insns, steered }
    }

    /// The program's instructions (at least one: the final return).
    pub fn instructions(&self) -> &[libc::sock_filter] {
        &self.insns
    }

    /// How many targets the program steers (the unicast ones that fit).
    pub fn steered(&self) -> usize {
        self.steered
    }

    /// What the kernel would return for a datagram with this payload (for tests and
    /// tools; the kernel runs the program itself): a socket index, `0` for a load
    /// beyond the payload, `u32::MAX` for the hash.
    pub fn run(&self, payload: &[u8]) -> u32 {
        let mut acc = 0u32;
        let mut pc = 0usize;
        while let Some(i) = self.insns.get(pc) {
            pc += 1;
            match i.code {
                LD_W_ABS | LD_H_ABS => {
                    let width = if i.code == LD_W_ABS { 4 } else { 2 };
                    let start = i.k as usize;
                    let Some(b) = payload.get(start..start.saturating_add(width)) else {
                        return 0;
                    };
                    acc = b.iter().fold(0, |a, &x| (a << 8) | u32::from(x));
                }
                JEQ_K => pc += usize::from(if acc == i.k { i.jt } else { i.jf }),
                RET_K => return i.k,
                _ => return 0,
            }
        }
        0
    }
}

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Attaches `program` to the `SO_REUSEPORT` group of the UDP socket `fd`, replacing
/// the one there: from then on the kernel gives each datagram to the group's socket
/// the program returns (see [`MacSteering`]).
pub fn attach_reuseport_cbpf(fd: BorrowedFd<'_>, program: &MacSteering) -> std::io::Result<()> {
    let insns = program.instructions();
    let len = u16::try_from(insns.len())
        .ok()
        .filter(|&n| usize::from(n) <= CBPF_MAX_INSNS)
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let fprog = libc::sock_fprog {
        len,
        filter: insns.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points at `len` instructions of `insns`, alive for the call; the
    // kernel copies them (it never writes through the pointer) and reads one
    // `sock_fprog` of the length passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            std::ptr::from_ref(&fprog).cast(),
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a test failing on an unexpected error is the point"
)]
mod tests {

    fn netns_free_wait(mut cond: impl FnMut() -> bool) -> bool {
        (0..500).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(2));
            cond()
        })
    }

    #[test]
    fn datagrams_the_kernel_dropped_for_a_full_buffer_are_reported() {
        let mut port = UdpPort::bind("127.0.0.1:0".parse().unwrap(), pool(256, 2048)).unwrap();
        let to = port.local_addr();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let payload = [0x5a; 1400];
        // Far more than a 4 MiB receive buffer holds (bounded: 20 000 datagrams).
        for _ in 0..20_000 {
            let _ = tx.send_to(&payload, to);
        }
        // The kernel stamps each queued datagram with the drop count at that moment:
        // drain what was queued, then one more datagram carries the final count.
        let mut batch = Batch::new();
        while port.rx_batch(&mut batch) > 0 {
            batch.clear();
        }
        tx.send_to(&payload, to).unwrap();
        assert!(netns_free_wait(|| {
            port.rx_batch(&mut batch);
            !batch.is_empty()
        }));
        let dropped = port.stats().drop_count("rx_kernel_dropped");
        assert!(
            dropped > 0,
            "the kernel must have dropped some of 20 000 unread datagrams"
        );
        assert!(dropped < 20_000);
    }
    use std::time::{Duration, Instant};

    use super::*;

    fn pool(count: u32, buf_size: usize) -> Mempool {
        Mempool::new(count, buf_size).unwrap()
    }

    fn frame(pool: &Mempool, bytes: &[u8], to: Option<SocketAddr>) -> PktBuf {
        let mut b = pool.alloc().unwrap();
        b.extend_from_slice(bytes).unwrap();
        b.meta.addr = to;
        b
    }

    /// A recognisable payload of `len` bytes for datagram `i`.
    fn payload(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i * 7 + j) as u8).collect()
    }

    /// Waits up to 10 ms for `port` to become readable (callers loop to a deadline).
    fn wait_readable(port: &UdpPort) {
        let ts = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 10_000_000,
        };
        let mut fds = [rustix::event::PollFd::new(
            &port.fd,
            rustix::event::PollFlags::IN,
        )];
        let _ = rustix::event::poll(&mut fds, Some(&ts));
    }

    /// Receives until `n` frames arrived or two seconds passed.
    fn recv_n(port: &mut UdpPort, n: usize) -> Vec<PktBuf> {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut out = Vec::new();
        let mut batch = Batch::new();
        while out.len() < n && Instant::now() < deadline {
            if port.rx_batch(&mut batch) == 0 {
                wait_readable(port);
            }
            out.extend(batch.drain());
        }
        out
    }

    fn batch_of_64_arrives_intact(loopback: &str) {
        let pool = pool(256, 2048);
        let mut a = UdpPort::bind(format!("{loopback}:0").parse().unwrap(), pool.clone()).unwrap();
        let mut b = UdpPort::bind(format!("{loopback}:0").parse().unwrap(), pool.clone()).unwrap();
        let mtu = a.caps().mtu;
        assert_eq!(mtu, 2048 - HEADROOM);
        let sizes: Vec<usize> = (0..64)
            .map(|i| if i == 63 { mtu } else { (i * 97) % mtu })
            .collect();
        let mut batch = Batch::new();
        for (i, &len) in sizes.iter().enumerate() {
            batch
                .push(frame(&pool, &payload(i, len), Some(b.local_addr())))
                .unwrap();
        }
        assert_eq!(a.tx_batch(&mut batch), 64);
        assert!(batch.is_empty());

        let got = recv_n(&mut b, 64);
        assert_eq!(got.len(), 64);
        for (i, buf) in got.iter().enumerate() {
            assert_eq!(buf.data(), &payload(i, sizes[i])[..], "datagram {i}");
            assert_eq!(buf.meta.addr, Some(a.local_addr()));
            assert_eq!(
                buf.headroom(),
                HEADROOM,
                "received at HEADROOM so headers can be prepended"
            );
        }
        let total: usize = sizes.iter().sum();
        let (sa, sb) = (a.stats(), b.stats());
        assert_eq!((sa.tx_packets, sa.tx_bytes), (64, total as u64));
        assert_eq!((sb.rx_packets, sb.rx_bytes), (64, total as u64));
        assert!(
            sa.drops.iter().chain(&sb.drops).all(|d| d.count == 0),
            "{sa:?} {sb:?}"
        );
        drop(got);
        drop(a);
        drop(b);
        assert_eq!(pool.available(), 256, "every buffer returns to the pool");
    }

    /// A frame whose bytes past `split` are an external tail (leaked, so they outlive
    /// the frame), reporting `token` into `ring` when released.
    fn tailed(
        pool: &Mempool,
        bytes: &[u8],
        split: usize,
        to: SocketAddr,
        ring: &std::sync::Arc<pkt::DoneRing>,
        token: u32,
    ) -> PktBuf {
        let mut b = frame(pool, &bytes[..split], Some(to));
        let tail: &'static [u8] = Vec::leak(bytes[split..].to_vec());
        let done = pkt::Completion::new(ring.clone(), token);
        b.attach_ext(pkt::ExtSeg::from_static(tail, None, done));
        b
    }

    #[test]
    fn frames_with_tails_arrive_byte_identical_alone_and_in_gso_runs() {
        let pool = pool(256, 2048);
        let mut a = UdpPort::bind("127.0.0.1:0".parse().unwrap(), pool.clone()).unwrap();
        let mut b = UdpPort::bind("127.0.0.1:0".parse().unwrap(), pool.clone()).unwrap();
        assert!(a.caps().offloads.contains(Offloads::EXT_TAIL));
        let ring = pkt::DoneRing::new(64);
        let to = b.local_addr();
        // Frames 0..10: one GSO run of 1400-byte datagrams, split at odd places so
        // segments begin and end inside both iovecs; 10: a short last datagram with a
        // tail; 11: a linear frame; 12: a lone tailed frame of another size.
        let sizes = [
            1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400, 1400, 900, 1400, 333,
        ];
        let mut batch = Batch::new();
        let mut tails = 0;
        for (i, &len) in sizes.iter().enumerate() {
            let bytes = payload(i, len);
            let f = if i == 11 {
                frame(&pool, &bytes, Some(to))
            } else {
                tails += 1;
                tailed(&pool, &bytes, 64 + 13 * i, to, &ring, i as u32)
            };
            batch.push(f).unwrap();
        }
        assert_eq!(a.tx_batch(&mut batch), sizes.len());
        let mut back: Vec<u32> = std::iter::from_fn(|| ring.pop()).collect();
        back.sort_unstable();
        assert_eq!(
            back.len(),
            tails,
            "every tail released once the call returned"
        );
        let got = recv_n(&mut b, sizes.len());
        assert_eq!(got.len(), sizes.len());
        for (i, buf) in got.iter().enumerate() {
            assert_eq!(buf.data(), &payload(i, sizes[i])[..], "datagram {i}");
        }
        let total: u64 = sizes.iter().sum::<usize>() as u64;
        assert_eq!((a.stats().tx_packets, a.stats().tx_bytes), (13, total));
        assert!(a.c.tx_gso_runs >= 1, "{:?}", a.c);
    }

    #[test]
    fn batch_of_64_mixed_sizes_arrives_intact_over_ipv4() {
        batch_of_64_arrives_intact("127.0.0.1");
    }

    #[test]
    fn batch_of_64_mixed_sizes_arrives_intact_over_ipv6() {
        if UdpPort::bind("[::1]:0".parse().unwrap(), pool(1, 256)).is_err() {
            eprintln!("skipped: no IPv6 loopback on this host");
            return;
        }
        batch_of_64_arrives_intact("[::1]");
    }

    #[test]
    fn rx_on_empty_socket_returns_zero_and_leaves_batch_alone() {
        let pool = pool(8, 2048);
        let mut port = UdpPort::bind("127.0.0.1:0".parse().unwrap(), pool.clone()).unwrap();
        let mut batch = Batch::new();
        batch.push(frame(&pool, b"already here", None)).unwrap();
        assert_eq!(port.rx_batch(&mut batch), 0);
        assert_eq!(batch.len(), 1);
        assert_eq!(batch.as_slice()[0].data(), b"already here");
        assert_eq!(port.stats().drop_count("rx_error"), 0);
    }

    #[test]
    fn truncated_datagram_is_dropped_and_counted() {
        let big = pool(8, 2048);
        let small = pool(8, 256);
        let mut tx = UdpPort::bind("127.0.0.1:0".parse().unwrap(), big.clone()).unwrap();
        let mut rx = UdpPort::bind("127.0.0.1:0".parse().unwrap(), small).unwrap();
        assert_eq!(rx.caps().mtu, 256 - HEADROOM);
        let to = Some(rx.local_addr());
        let mut batch = Batch::new();
        for len in [100, 500, 128] {
            batch.push(frame(&big, &payload(len, len), to)).unwrap();
        }
        assert_eq!(tx.tx_batch(&mut batch), 3);
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut got = Vec::new();
        while rx.stats().rx_packets + rx.stats().drop_count("rx_truncated") < 3
            && Instant::now() < deadline
        {
            let mut b = Batch::new();
            if rx.rx_batch(&mut b) == 0 {
                wait_readable(&rx);
            }
            got.extend(b.drain());
        }
        let lens: Vec<usize> = got.iter().map(PktBuf::len).collect();
        assert_eq!(lens, [100, 128]);
        assert_eq!(rx.stats().drop_count("rx_truncated"), 1);
    }

    #[test]
    fn frame_without_address_is_dropped_and_counted() {
        let pool = pool(16, 2048);
        let mut a = UdpPort::bind("127.0.0.1:0".parse().unwrap(), pool.clone()).unwrap();
        let mut b = UdpPort::bind("127.0.0.1:0".parse().unwrap(), pool.clone()).unwrap();
        let to = Some(b.local_addr());
        let mut batch = Batch::new();
        batch.push(frame(&pool, b"one", to)).unwrap();
        batch.push(frame(&pool, b"lost", None)).unwrap();
        batch.push(frame(&pool, b"two", to)).unwrap();
        assert_eq!(a.tx_batch(&mut batch), 2);
        assert!(batch.is_empty(), "the dropped frame is removed too");
        assert_eq!(a.stats().drop_count("tx_no_address"), 1);
        let got = recv_n(&mut b, 2);
        let data: Vec<&[u8]> = got.iter().map(PktBuf::data).collect();
        assert_eq!(data, [&b"one"[..], &b"two"[..]]);
    }

    #[test]
    fn ipv4_peer_on_ipv6_socket_is_dropped_as_wrong_family() {
        let pool = pool(4, 2048);
        let Ok(mut port) = UdpPort::bind("[::1]:0".parse().unwrap(), pool.clone()) else {
            eprintln!("skipped: no IPv6 loopback on this host");
            return;
        };
        let mut batch = Batch::new();
        batch
            .push(frame(&pool, b"x", Some("127.0.0.1:9".parse().unwrap())))
            .unwrap();
        assert_eq!(port.tx_batch(&mut batch), 0);
        assert!(batch.is_empty());
        assert_eq!(port.stats().drop_count("tx_wrong_family"), 1);
    }

    #[test]
    fn oversized_datagram_is_dropped_and_the_rest_still_sent() {
        let pool = pool(8, 70_000);
        let mut a = UdpPort::bind("127.0.0.1:0".parse().unwrap(), pool.clone()).unwrap();
        let mut b = UdpPort::bind("127.0.0.1:0".parse().unwrap(), pool.clone()).unwrap();
        assert_eq!(a.caps().mtu, MAX_PAYLOAD_V4);
        let to = Some(b.local_addr());
        let mut batch = Batch::new();
        batch
            .push(frame(&pool, &payload(0, MAX_PAYLOAD_V4), to))
            .unwrap();
        batch
            .push(frame(&pool, &payload(1, MAX_PAYLOAD_V4 + 1), to))
            .unwrap();
        batch.push(frame(&pool, b"after", to)).unwrap();
        assert_eq!(a.tx_batch(&mut batch), 2);
        assert!(batch.is_empty());
        assert_eq!(a.stats().drop_count("tx_too_big"), 1);
        let got = recv_n(&mut b, 2);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0].data(),
            &payload(0, MAX_PAYLOAD_V4)[..],
            "a maximal datagram fits a jumbo pool"
        );
        assert_eq!(got[1].data(), b"after");
    }

    #[test]
    fn empty_pool_leaves_datagrams_queued_and_counts_rx_no_buffer() {
        let tx_pool = pool(8, 2048);
        let rx_pool = pool(2, 2048);
        let mut a = UdpPort::bind("127.0.0.1:0".parse().unwrap(), tx_pool.clone()).unwrap();
        let mut b = UdpPort::bind("127.0.0.1:0".parse().unwrap(), rx_pool).unwrap();
        let mut batch = Batch::new();
        for i in 0..4u8 {
            batch
                .push(frame(&tx_pool, &[i], Some(b.local_addr())))
                .unwrap();
        }
        assert_eq!(a.tx_batch(&mut batch), 4);
        let first = recv_n(&mut b, 2);
        assert_eq!(first.len(), 2, "the pool holds two buffers");
        let mut held = Batch::new();
        assert_eq!(b.rx_batch(&mut held), 0);
        assert_eq!(b.stats().drop_count("rx_no_buffer"), 1);
        drop(first);
        let rest = recv_n(&mut b, 2);
        let data: Vec<&[u8]> = rest.iter().map(PktBuf::data).collect();
        assert_eq!(
            data,
            [&[2u8][..], &[3u8][..]],
            "nothing was lost while the pool was empty"
        );
    }

    #[test]
    fn bind_twice_reports_address_in_use() {
        let pool = pool(2, 2048);
        let a = UdpPort::bind("127.0.0.1:0".parse().unwrap(), pool.clone()).unwrap();
        let err = UdpPort::bind(a.local_addr(), pool).unwrap_err();
        assert!(matches!(err, NicError::AddrInUse { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("bind {}: address in use", a.local_addr())),
            "{text}"
        );
    }

    #[test]
    fn reuse_port_sockets_share_an_address_and_a_plain_one_still_finds_it_in_use() {
        let pool = pool(4, 2048);
        let shared = UdpOptions {
            reuse_port: true,
            ..UdpOptions::default()
        };
        let a = UdpPort::bind_with("127.0.0.1:0".parse().unwrap(), pool.clone(), shared).unwrap();
        let b = UdpPort::bind_with(a.local_addr(), pool.clone(), shared).unwrap();
        assert_eq!(a.local_addr(), b.local_addr());
        let err = UdpPort::bind_with(a.local_addr(), pool, UdpOptions::default()).unwrap_err();
        assert!(matches!(err, NicError::AddrInUse { .. }), "{err:?}");
    }

    #[test]
    fn bind_to_a_foreign_address_says_it_is_not_local() {
        // 192.0.2.0/24 is TEST-NET-1: never configured on a host.
        match UdpPort::bind("192.0.2.1:0".parse().unwrap(), pool(2, 2048)) {
            Err(NicError::AddrNotAvailable { .. }) => {}
            Ok(_) => eprintln!("skipped: net.ipv4.ip_nonlocal_bind is set"),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    #[test]
    fn send_all_drops_failing_datagrams_and_stops_on_would_block() {
        // Kernel model: 3 go out, #3 is too big, 2 go out, #6 unreachable, then full.
        let mut script = vec![
            Ok(3),
            Err(Errno::MSGSIZE),
            Ok(2),
            Err(Errno::NETUNREACH),
            Err(Errno::AGAIN),
        ]
        .into_iter();
        let mut starts = Vec::new();
        let out = send_all(&singles(10), |start| {
            starts.push(start);
            script.next().unwrap()
        });
        assert_eq!(starts, [0, 3, 4, 6, 7]);
        assert_eq!(
            out,
            SendOutcome {
                done: 7,
                sent: 5,
                too_big: 1,
                error: 1,
                gso_refused: None,
            }
        );
    }

    /// `n` messages of one frame each.
    fn singles(n: u16) -> Vec<(u16, u16)> {
        (0..n).map(|i| (i, 1)).collect()
    }

    #[test]
    fn send_all_on_immediate_would_block_sends_nothing() {
        let out = send_all(&singles(5), |_| Err(Errno::AGAIN));
        assert_eq!(out, SendOutcome::default());
    }

    #[test]
    fn send_all_counts_frames_of_gso_runs_and_stops_at_a_refused_run() {
        // Messages of 4, 1, 3 and 2 frames: the first goes out, the single fails with
        // EINVAL (a plain error: dropped), the run of 3 is refused with EINVAL (GSO).
        let runs = [(0, 4), (4, 1), (5, 3), (8, 2)];
        let mut script = vec![Ok(1), Err(Errno::INVAL), Err(Errno::INVAL)].into_iter();
        let out = send_all(&runs, |_| script.next().unwrap());
        assert_eq!(
            out,
            SendOutcome {
                done: 2,
                sent: 4,
                too_big: 0,
                error: 1,
                gso_refused: Some(Errno::INVAL),
            }
        );
        // An unreachable peer drops every frame of a run; EMSGSIZE refuses it (GSO).
        let mut script = vec![Err(Errno::NETUNREACH), Ok(3)].into_iter();
        let out = send_all(&runs, |_| script.next().unwrap());
        assert_eq!((out.done, out.sent, out.error), (4, 6, 4));
        let out = send_all(&runs, |_| Err(Errno::MSGSIZE));
        assert_eq!((out.done, out.gso_refused), (0, Some(Errno::MSGSIZE)));
        // A single datagram too big for the path is dropped as before.
        let out = send_all(&runs[1..2], |_| Err(Errno::MSGSIZE));
        assert_eq!((out.done, out.too_big, out.gso_refused), (1, 1, None));
    }

    fn addr(port: u16) -> Option<SocketAddr> {
        Some(SocketAddr::from(([10, 0, 0, 1], port)))
    }

    /// `plan_runs` over frames given as (length, peer port) with GSO allowed for every
    /// size below `limit`.
    fn plan(frames: &[(usize, u16)], limit: usize, max_bytes: usize) -> Vec<(u16, u16)> {
        let mut runs = vec![(0, 0); BATCH_MAX];
        let n = plan_runs(
            0,
            frames.len(),
            |i| (frames[i].0, addr(frames[i].1)),
            |size| size < limit,
            max_bytes,
            &mut runs,
        );
        runs.truncate(n);
        runs
    }

    #[test]
    fn plan_runs_groups_same_size_frames_to_one_peer() {
        let f = [
            (100, 1),
            (100, 1),
            (100, 1),
            (60, 1), // a short last datagram ends the run
            (100, 1),
            (100, 2), // another peer
            (100, 2),
            (200, 2), // larger than the run's size: a new run
            (200, 2),
            (0, 2), // empty datagrams never join a run
            (0, 2),
        ];
        assert_eq!(
            plan(&f, usize::MAX, MAX_PAYLOAD_V4),
            [(0, 4), (4, 1), (5, 2), (7, 2), (9, 1), (10, 1)]
        );
        // No GSO for sizes at or over the limit.
        assert_eq!(plan(&f[..3], 100, MAX_PAYLOAD_V4), [(0, 1), (1, 1), (2, 1)]);
        // A run stops before the byte limit.
        assert_eq!(plan(&f[..3], usize::MAX, 250), [(0, 2), (2, 1)]);
    }

    #[test]
    fn plan_runs_caps_a_run_at_the_kernels_segment_limit() {
        let f = vec![(10, 1); BATCH_MAX];
        assert_eq!(plan(&f, usize::MAX, MAX_PAYLOAD_V4), [(0, 64)]);
        assert_eq!(GSO_MAX_SEGMENTS, BATCH_MAX, "one full batch is one message");
    }

    #[test]
    fn gso_runs_arrive_as_the_same_datagrams_in_order() {
        let pool = pool(512, 2048);
        let plain = UdpOptions::default();
        let mut a = UdpPort::bind("127.0.0.1:0".parse().unwrap(), pool.clone()).unwrap();
        let mut b =
            UdpPort::bind_with("127.0.0.1:0".parse().unwrap(), pool.clone(), plain).unwrap();
        let mut c =
            UdpPort::bind_with("127.0.0.1:0".parse().unwrap(), pool.clone(), plain).unwrap();
        assert!(a.gso, "bind uses GSO");
        // To b: 20 x 1000 B, a 300 B tail, 10 x 1400 B; to c between them: 5 x 1000 B.
        let mut want_b = Vec::new();
        let mut want_c = Vec::new();
        let mut batch = Batch::new();
        let mut push = |i: usize, len: usize, to: &UdpPort, want: &mut Vec<Vec<u8>>| {
            let p = payload(i, len);
            batch.push(frame(&pool, &p, Some(to.local_addr()))).unwrap();
            want.push(p);
        };
        for i in 0..20 {
            push(i, 1000, &b, &mut want_b);
        }
        for i in 20..25 {
            push(i, 1000, &c, &mut want_c);
        }
        push(25, 300, &b, &mut want_b);
        for i in 26..36 {
            push(i, 1400, &b, &mut want_b);
        }
        let total: usize = want_b.iter().chain(&want_c).map(Vec::len).sum();
        assert_eq!(a.tx_batch(&mut batch), 36);
        assert!(batch.is_empty());
        assert!(a.c.tx_gso_runs >= 3, "{:?}", a.c);
        let s = a.stats();
        assert_eq!((s.tx_packets, s.tx_bytes), (36, total as u64));
        assert!(s.drops.iter().all(|d| d.count == 0), "{s:?}");
        for (port, want) in [(&mut b, &want_b), (&mut c, &want_c)] {
            let got = recv_n(port, want.len());
            let data: Vec<&[u8]> = got.iter().map(PktBuf::data).collect();
            let want: Vec<&[u8]> = want.iter().map(Vec::as_slice).collect();
            assert_eq!(data, want, "one datagram per frame, in order");
        }
    }

    #[test]
    fn a_gso_run_the_socket_cannot_take_stays_queued_whole_and_in_order() {
        // A token bucket holds what left, so after one 64-datagram GSO message the tiny
        // send buffer is full and the next batch's message would block.
        let setup = [
            "ip link set lo up",
            "tc qdisc add dev lo root tbf rate 8kbit burst 1600 latency 10s",
        ];
        let ran = in_private_netns(&setup, || {
            let pool = pool(512, 2048);
            let mut a = UdpPort::bind("127.0.0.1:0".parse().unwrap(), pool.clone()).unwrap();
            let mut b = UdpPort::bind("127.0.0.1:0".parse().unwrap(), pool.clone()).unwrap();
            sockopt::set_socket_send_buffer_size(&a.fd, 4096).unwrap();
            let to = Some(b.local_addr());
            let want: Vec<Vec<u8>> = (0..128).map(|i| payload(i, 500)).collect();
            let mut first = Batch::new();
            let mut second = Batch::new();
            for (i, p) in want.iter().enumerate() {
                let batch = if i < 64 { &mut first } else { &mut second };
                batch.push(frame(&pool, p, to)).unwrap();
            }
            assert_eq!(
                a.tx_batch(&mut first),
                64,
                "an empty send buffer takes one run"
            );
            assert_eq!(a.c.tx_gso_runs, 1);
            assert_eq!(a.tx_batch(&mut second), 0, "the buffer is full now");
            assert_eq!(second.len(), 64, "nothing of the run was lost");
            for (k, buf) in second.iter().enumerate() {
                assert_eq!(buf.data(), &want[64 + k][..], "order kept");
            }
            assert!(
                a.stats().drops.iter().all(|d| d.count == 0),
                "would-block is no drop"
            );
            let del = std::process::Command::new("tc")
                .args(["qdisc", "del", "dev", "lo", "root"])
                .status();
            assert!(del.is_ok_and(|s| s.success()));
            let deadline = Instant::now() + Duration::from_secs(2);
            while !second.is_empty() && Instant::now() < deadline {
                a.tx_batch(&mut second);
            }
            assert!(second.is_empty());
            // Deleting the qdisc drops what it still held of the first run; the retried
            // run must arrive whole and in order after whatever got through before.
            let last = &want[127][..];
            let mut got = Vec::new();
            while got.last().map(PktBuf::data) != Some(last) {
                let more = recv_n(&mut b, 1);
                assert!(!more.is_empty(), "the retried run must arrive");
                got.extend(more);
            }
            assert!(got.len() >= 64);
            let tail = &got[got.len() - 64..];
            for (k, buf) in tail.iter().enumerate() {
                assert!(
                    buf.data() == &want[64 + k][..],
                    "retried datagram {k} out of order"
                );
            }
        });
        if ran.is_none() {
            eprintln!("skipped: needs root and tc to build a private network namespace");
        }
    }

    #[test]
    fn gso_refused_by_the_kernel_falls_back_to_one_datagram_per_frame() {
        // Loopback at MTU 1500: a 2000-byte segment does not fit the path, so the
        // kernel refuses GSO (EMSGSIZE); sent one by one, the datagrams are fragmented.
        let setup = ["ip link set lo up", "ip link set lo mtu 1500"];
        let ran = in_private_netns(&setup, || {
            let pool = pool(512, 4096);
            let mut a = UdpPort::bind("127.0.0.1:0".parse().unwrap(), pool.clone()).unwrap();
            let mut b = UdpPort::bind("127.0.0.1:0".parse().unwrap(), pool.clone()).unwrap();
            let to = Some(b.local_addr());
            let mut want = Vec::new();
            for round in 0..2 {
                let mut batch = Batch::new();
                for i in 0..16 {
                    let p = payload(round * 100 + i, 2000);
                    batch.push(frame(&pool, &p, to)).unwrap();
                    want.push(p);
                }
                // Small ones after the refused run still go as a GSO run.
                for i in 16..32 {
                    let p = payload(round * 100 + i, 500);
                    batch.push(frame(&pool, &p, to)).unwrap();
                    want.push(p);
                }
                assert_eq!(a.tx_batch(&mut batch), 32, "{:?}", a.c);
                assert!(batch.is_empty());
            }
            assert_eq!(
                a.c.tx_gso_refused, 1,
                "refused once, then that size is not tried again"
            );
            assert!(a.stats().drops.iter().all(|d| d.count == 0), "not a drop");
            assert!(a.gso, "GSO stays on for sizes that fit");
            assert!(a.c.tx_gso_runs >= 2, "{:?}", a.c);
            let got = recv_n(&mut b, want.len());
            let data: Vec<&[u8]> = got.iter().map(PktBuf::data).collect();
            let want: Vec<&[u8]> = want.iter().map(Vec::as_slice).collect();
            assert_eq!(data, want);
            assert_eq!(a.stats().tx_packets, 64);
        });
        if ran.is_none() {
            eprintln!("skipped: needs root and ip to build a private network namespace");
        }
    }

    const MAC_X: [u8; 6] = [0x52, 0x54, 0x00, 0xaa, 0x00, 0x01];
    const MAC_Y: [u8; 6] = [0x52, 0x54, 0x00, 0xbb, 0x00, 0x02];

    /// An Ethernet frame to `dst` (IPv4 ethertype, a few bytes of body).
    fn eth_to(dst: [u8; 6], tag: u8) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend([0x02, 0, 0, 0, 0, 0x99, 0x08, 0x00]);
        f.extend([tag; 20]);
        f
    }

    /// A VXLAN datagram (VNI 42) carrying `frame`.
    fn vxlan(frame: &[u8]) -> Vec<u8> {
        [&[0x08, 0, 0, 0, 0, 0, 42, 0][..], frame].concat()
    }

    #[test]
    fn mac_steering_program_has_one_test_per_mac_and_offset_and_ends_in_the_hash() {
        let p = MacSteering::new(&[(MAC_X, 1), (MAC_Y, 0)], &INNER_MAC_OFFSETS);
        assert_eq!(p.steered(), 2);
        let i = p.instructions();
        assert_eq!(i.len(), 2 * 2 * 5 + 1);
        let shape: Vec<(u16, u8, u8, u32)> =
            i[..5].iter().map(|x| (x.code, x.jt, x.jf, x.k)).collect();
        assert_eq!(
            shape,
            [
                (0x20, 0, 0, 0),           // ld [0]
                (0x15, 0, 3, 0x5254_00aa), // jeq hi32 else next test
                (0x28, 0, 0, 4),           // ldh [4]
                (0x15, 0, 1, 0x0001),      // jeq lo16 else next test
                (0x06, 0, 0, 1),           // ret socket 1
            ]
        );
        // The VXLAN tests read at 8 and 12.
        assert_eq!((i[10].code, i[10].k), (0x20, 8));
        assert_eq!((i[12].code, i[12].k), (0x28, 12));
        let last = i[i.len() - 1];
        assert_eq!((last.code, last.k), (0x06, u32::MAX));
    }

    #[test]
    fn mac_steering_picks_the_owner_for_both_encaps_and_the_hash_for_the_rest() {
        let p = MacSteering::new(&[(MAC_X, 1), (MAC_Y, 2)], &INNER_MAC_OFFSETS);
        assert_eq!(p.run(&eth_to(MAC_X, 1)), 1);
        assert_eq!(p.run(&eth_to(MAC_Y, 1)), 2);
        assert_eq!(p.run(&vxlan(&eth_to(MAC_X, 1))), 1);
        assert_eq!(p.run(&vxlan(&eth_to(MAC_Y, 1))), 2);
        assert_eq!(p.run(&eth_to([0xff; 6], 1)), u32::MAX, "broadcast");
        assert_eq!(
            p.run(&eth_to([0x52, 0x54, 0x00, 0xaa, 0x00, 0x02], 1)),
            u32::MAX
        );
        // Same first four bytes, other last two: no hit.
        assert_eq!(
            p.run(&[0x52, 0x54, 0x00, 0xaa, 0x00]),
            0,
            "a runt reads past its end"
        );
        // An encrypted link's payload: salt and sequence, no MAC to find.
        let sealed = [
            0x9c, 0x1e, 0x55, 0x07, 0, 0, 0x18, 0x7a, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66,
        ];
        assert_eq!(p.run(&sealed), u32::MAX);
    }

    #[test]
    fn mac_steering_skips_group_macs_and_keeps_within_the_kernel_limit() {
        let p = MacSteering::new(&[([0x01, 0, 0x5e, 0, 0, 1], 1), (MAC_X, 1)], &[0]);
        assert_eq!(p.steered(), 1);
        assert_eq!(p.instructions().len(), 6);
        let many: Vec<([u8; 6], u32)> = (0..1000u32)
            .map(|n| {
                let b = n.to_be_bytes();
                ([0x02, 0, 0, 0, b[2], b[3]], n % 4)
            })
            .collect();
        let p = MacSteering::new(&many, &INNER_MAC_OFFSETS);
        assert_eq!(p.steered(), (CBPF_MAX_INSNS - 1) / 10);
        assert!(p.instructions().len() <= CBPF_MAX_INSNS);
        // The first ones are steered, the rest hash.
        assert_eq!(p.run(&eth_to(many[3].0, 0)), 3);
        assert_eq!(p.run(&eth_to(many[999].0, 0)), u32::MAX);
        assert_eq!(MacSteering::new(&[(MAC_X, 1)], &[]).instructions().len(), 1);
    }

    #[test]
    fn a_reuseport_program_delivers_each_datagram_to_the_socket_of_its_inner_mac() {
        // Each port keeps a batch of buffers posted.
        let pool = pool(4 * BATCH_MAX as u32, 2048);
        let shared = UdpOptions {
            reuse_port: true,
            ..UdpOptions::default()
        };
        let first =
            UdpPort::bind_with("127.0.0.1:0".parse().unwrap(), pool.clone(), shared).unwrap();
        let addr = first.local_addr();
        let mut ports = vec![first];
        for _ in 1..3 {
            ports.push(UdpPort::bind_with(addr, pool.clone(), shared).unwrap());
        }
        // Through a second descriptor of a socket other than the first: any member
        // of the group sets the group's program.
        let fd = ports[2].try_clone_fd().unwrap();
        let program = MacSteering::new(&[(MAC_X, 1), (MAC_Y, 2)], &INNER_MAC_OFFSETS);
        attach_reuseport_cbpf(fd.as_fd(), &program).unwrap();

        // One sender, so without the program the hash would put all on one socket.
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let x = eth_to(MAC_X, 1);
        let y = vxlan(&eth_to(MAC_Y, 2));
        let bcast = eth_to([0xff; 6], 3);
        let runt = vec![0x52, 0x54, 0x00];
        let x_again = eth_to(MAC_X, 4);
        for d in [&x, &y, &bcast, &runt, &x_again] {
            tx.send_to(d, addr).unwrap();
        }
        let mut got: Vec<(usize, Vec<u8>)> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut batch = Batch::new();
        while got.len() < 5 && Instant::now() < deadline {
            let mut any = false;
            for (i, p) in ports.iter_mut().enumerate() {
                if p.rx_batch(&mut batch) > 0 {
                    any = true;
                    got.extend(batch.drain().map(|b| (i, b.data().to_vec())));
                }
            }
            if !any {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(got.len(), 5, "every datagram arrives: {got:?}");
        let on = |d: &Vec<u8>| got.iter().find(|(_, g)| g == d).map(|(i, _)| *i);
        assert_eq!(on(&x), Some(1), "vnetp frame to X");
        assert_eq!(on(&x_again), Some(1), "vnetp frame to X");
        assert_eq!(on(&y), Some(2), "VXLAN frame to Y");
        assert!(on(&bcast).is_some(), "broadcast goes by the hash");
        assert_eq!(on(&runt), Some(0), "a runt fails its load: socket 0");
    }

    #[test]
    fn socket_addresses_round_trip_through_c_form() {
        // SAFETY: all-zero is a valid `sockaddr_storage`.
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        for addr in ["10.1.2.3:9000", "[fe80::1%3]:4789", "[2001:db8::5]:1"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let len = std_to_sockaddr(&addr, &mut ss);
            assert_eq!(sockaddr_to_std(&ss, len), Some(addr));
        }
        assert_eq!(
            sockaddr_to_std(&ss, 4),
            None,
            "a short address is not trusted"
        );
    }

    /// Runs `f` on a thread moved into a fresh network namespace (its own loopback),
    /// after running `setup` there as `ip`/`tc` commands. `None` when that is not
    /// possible here (not root, no `tc`).
    fn in_private_netns<T: Send>(setup: &[&str], f: impl FnOnce() -> T + Send) -> Option<T> {
        std::thread::scope(|s| {
            let thread = s.spawn(|| {
                // SAFETY: unshare takes no pointers; CLONE_NEWNET moves only this thread
                // (and what it spawns) into a new network namespace.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    return None;
                }
                for cmd in setup {
                    let mut words = cmd.split_whitespace();
                    let ok = std::process::Command::new(words.next()?)
                        .args(words)
                        .status()
                        .is_ok_and(|st| st.success());
                    if !ok {
                        return None;
                    }
                }
                Some(f())
            });
            match thread.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    #[test]
    fn full_socket_buffer_keeps_unsent_frames_in_the_batch() {
        // A token bucket of 1 KB/s on loopback holds the datagrams, so the sender's
        // small socket buffer fills and sendmmsg reports EAGAIN part-way.
        let setup = [
            "ip link set lo up",
            "tc qdisc add dev lo root tbf rate 8kbit burst 1600 latency 10s",
        ];
        let ran = in_private_netns(&setup, || {
            let pool = pool(256, 2048);
            // Plain datagrams: this test is about partial sends of single datagrams.
            let mut a = UdpPort::bind_with(
                "127.0.0.1:0".parse().unwrap(),
                pool.clone(),
                UdpOptions::default(),
            )
            .unwrap();
            let mut b = UdpPort::bind("127.0.0.1:0".parse().unwrap(), pool.clone()).unwrap();
            sockopt::set_socket_send_buffer_size(&a.fd, 4096).unwrap();
            let mut batch = Batch::new();
            for i in 0..64 {
                batch
                    .push(frame(&pool, &payload(i, 1000), Some(b.local_addr())))
                    .unwrap();
            }
            let sent = a.tx_batch(&mut batch);
            assert!(sent < 64, "the socket buffer should have filled");
            assert_eq!(batch.len(), 64 - sent, "unsent frames stay in the batch");
            assert_eq!(
                a.tx_batch(&mut batch),
                0,
                "still full: nothing sent, nothing lost"
            );
            assert_eq!(batch.len(), 64 - sent);
            for (k, buf) in batch.iter().enumerate() {
                assert_eq!(buf.data(), &payload(sent + k, 1000)[..], "order kept");
            }
            assert!(
                a.stats().drops.iter().all(|d| d.count == 0),
                "would-block is not a drop"
            );

            // Open the tap: the rest goes out on retry and arrives.
            let del = std::process::Command::new("tc")
                .args(["qdisc", "del", "dev", "lo", "root"])
                .status();
            assert!(del.is_ok_and(|s| s.success()));
            let deadline = Instant::now() + Duration::from_secs(2);
            while !batch.is_empty() && Instant::now() < deadline {
                a.tx_batch(&mut batch);
            }
            assert!(batch.is_empty());
            // Frames arrive in order; the last 64 - sent are the retried ones.
            let want: Vec<Vec<u8>> = (sent..64).map(|i| payload(i, 1000)).collect();
            let mut got = Vec::new();
            while got.len() < want.len()
                || got.last().map(|b: &PktBuf| b.data()) != Some(&want[want.len() - 1][..])
            {
                let more = recv_n(&mut b, 1);
                assert!(!more.is_empty(), "retried frames must arrive");
                got.extend(more);
            }
            let tail: Vec<&[u8]> = got[got.len() - want.len()..]
                .iter()
                .map(PktBuf::data)
                .collect();
            assert_eq!(tail, want);
        });
        if ran.is_none() {
            eprintln!("skipped: needs root and tc to build a private network namespace");
        }
    }

    fn gro_pool() -> Mempool {
        // Jumbo buffers: the kernel coalesces up to 64 KiB whatever our buffer size.
        pool(256, HEADROOM + MAX_PAYLOAD_V4)
    }

    /// Makes the kernel cut every datagram `a` sends into `seg`-byte datagrams (UDP GSO),
    /// which is how a loopback test gets the receive side to see coalesced buffers.
    fn set_udp_segment(a: &UdpPort, seg: u16) {
        let seg = libc::c_int::from(seg);
        // SAFETY: UDP_SEGMENT reads one `int` from a live local of the length passed.
        let rc = unsafe {
            libc::setsockopt(
                a.fd.as_raw_fd(),
                libc::SOL_UDP,
                libc::UDP_SEGMENT,
                std::ptr::from_ref(&seg).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "UDP_SEGMENT: {}", std::io::Error::last_os_error());
    }

    /// `count` datagrams of `seg` bytes (the last `last` bytes), numbered from `first`.
    fn segments(first: usize, count: usize, seg: usize, last: usize) -> Vec<Vec<u8>> {
        (0..count)
            .map(|k| payload(first + k, if k + 1 == count { last } else { seg }))
            .collect()
    }

    #[test]
    fn gro_splits_coalesced_datagrams_back_in_order() {
        let pool = gro_pool();
        let gro = UdpOptions {
            gro: true,
            gso: false,
            reuse_port: false,
        };
        let mut rx = UdpPort::bind_with("127.0.0.1:0".parse().unwrap(), pool.clone(), gro).unwrap();
        // Plain: the socket-wide UDP_SEGMENT below does the segmenting.
        let mut tx = UdpPort::bind_with(
            "127.0.0.1:0".parse().unwrap(),
            pool.clone(),
            UdpOptions::default(),
        )
        .unwrap();
        set_udp_segment(&tx, 1000);
        // 65 + 11 + 1 datagrams: more than one batch, a short last segment, and a
        // datagram too small to be segmented behind them.
        let groups = [
            segments(0, 65, 1000, 1000),
            segments(65, 11, 1000, 500),
            segments(76, 1, 300, 300),
        ];
        let mut batch = Batch::new();
        for g in &groups {
            batch
                .push(frame(&pool, &g.concat(), Some(rx.local_addr())))
                .unwrap();
        }
        assert_eq!(tx.tx_batch(&mut batch), 3);

        let want: Vec<Vec<u8>> = groups.concat();
        let got = recv_n(&mut rx, want.len());
        let data: Vec<&[u8]> = got.iter().map(PktBuf::data).collect();
        assert_eq!(data.len(), want.len());
        for (k, (g, w)) in data.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "datagram {k}");
        }
        assert!(
            got.iter()
                .all(|b| b.meta.addr == Some(tx.local_addr()) && b.headroom() >= HEADROOM)
        );
        assert!(rx.c.rx_gro_split >= 2, "the kernel coalesced: {:?}", rx.c);
        let stats = rx.stats();
        assert_eq!(stats.rx_packets, 77);
        assert_eq!(
            stats.rx_bytes,
            want.iter().map(Vec::len).sum::<usize>() as u64
        );
        assert!(stats.drops.iter().all(|d| d.count == 0), "{stats:?}");
        drop((got, rx, tx));
        assert_eq!(pool.available(), 256);
    }

    #[test]
    fn gro_split_without_buffers_drops_and_counts() {
        let tx_pool = gro_pool();
        let rx_pool = pool(4, HEADROOM + MAX_PAYLOAD_V4);
        let gro = UdpOptions {
            gro: true,
            gso: false,
            reuse_port: false,
        };
        let mut rx = UdpPort::bind_with("127.0.0.1:0".parse().unwrap(), rx_pool, gro).unwrap();
        // Plain: the socket-wide UDP_SEGMENT below does the segmenting.
        let mut tx = UdpPort::bind_with(
            "127.0.0.1:0".parse().unwrap(),
            tx_pool.clone(),
            UdpOptions::default(),
        )
        .unwrap();
        set_udp_segment(&tx, 1000);
        let want = segments(0, 10, 1000, 1000);
        let mut batch = Batch::new();
        batch
            .push(frame(&tx_pool, &want.concat(), Some(rx.local_addr())))
            .unwrap();
        assert_eq!(tx.tx_batch(&mut batch), 1);
        // Four buffers: one holds the coalesced ten, three take copies, six are lost,
        // and the last datagram is the coalesced buffer itself.
        let got = recv_n(&mut rx, 4);
        let data: Vec<&[u8]> = got.iter().map(PktBuf::data).collect();
        let expect: Vec<&[u8]> = [0, 1, 2, 9].iter().map(|&k| &want[k][..]).collect();
        assert_eq!(data, expect);
        assert_eq!(rx.stats().drop_count("rx_gro_no_buffer"), 6);
    }

    #[test]
    fn gro_needs_a_pool_of_64k_buffers() {
        let err = UdpPort::bind_with(
            "127.0.0.1:0".parse().unwrap(),
            pool(2, 2048),
            UdpOptions {
                gro: true,
                gso: false,
                reuse_port: false,
            },
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                NicError::PoolTooSmall {
                    need: MAX_PAYLOAD_V4,
                    ..
                }
            ),
            "{err}"
        );
    }
}
