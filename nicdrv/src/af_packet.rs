//! [`AfPacketPort`]: a Linux `AF_PACKET` socket on one interface as a
//! [`PortKind::Ethernet`] port: whole Ethernet frames in and out, no kernel IP stack.
//!
//! Receive uses a `TPACKET_V3` memory-mapped ring (packet(7), Documentation/networking/
//! packet_mmap.rst): the kernel fills blocks of frames and hands a whole block to user
//! space by flipping its status word; we copy each frame into a pool buffer at
//! [`HEADROOM`] (so the overlay can strip and prepend headers in place) and give the
//! block back. No system call per frame, none at all while blocks are ready.
//! Transmit is one `sendmmsg(2)` per batch on the bound socket, each message one
//! iovec over a frame in its pool buffer (no copy on our side).
//!
//! The socket ignores frames the host itself sends on the interface
//! (`PACKET_IGNORE_OUTGOING`) and joins all multicast groups (`PACKET_MR_ALLMULTI`)
//! so IPv6 neighbour solicitations reach us on NICs that filter multicast.

use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{Ordering, fence};

use pkt::wire::MacAddr;
use pkt::{BATCH_MAX, Batch, HEADROOM, Mempool, Offloads, Port, PortCaps, PortKind, PortStats};
use rustix::io::Errno;

/// `ETH_P_ALL` in network byte order, as `sockaddr_ll` and `socket(2)` want it.
const ETH_P_ALL_BE: u16 = (libc::ETH_P_ALL as u16).to_be();
/// Ethernet header plus one VLAN tag: the most a frame adds to the L3 MTU.
const L2_OVERHEAD: usize = 18;

/// Why an [`AfPacketPort`] could not be opened, phrased so the user knows what to do.
#[derive(Debug, thiserror::Error)]
pub enum AfPacketError {
    /// The name is not one Linux accepts.
    #[error("invalid interface name {0:?}: use 1 to 15 characters without '/' or whitespace")]
    BadIfName(String),
    /// No such interface in this network namespace.
    #[error(
        "interface {0:?} does not exist in this network namespace: check `ip link` (and run vnetp in the namespace that owns it)"
    )]
    NoInterface(String),
    /// Raw sockets need `CAP_NET_RAW`.
    #[error(
        "cannot open an AF_PACKET socket on {ifname}: permission denied: run as root or grant CAP_NET_RAW"
    )]
    Permission {
        /// The interface.
        ifname: String,
    },
    /// The interface is down.
    #[error("interface {0} is down: bring it up (`ip link set {0} up`)")]
    Down(String),
    /// The interface is not Ethernet.
    #[error(
        "interface {ifname} is not an Ethernet interface (ARP hardware type {hwtype}): raw underlays (af_packet, af_xdp) need Ethernet"
    )]
    NotEthernet {
        /// The interface.
        ifname: String,
        /// `ARPHRD_*` type reported.
        hwtype: u16,
    },
    /// The pool's buffers cannot hold a full frame.
    #[error(
        "{ifname}: packet pool buffers of {buf_size} bytes cannot hold a {need}-byte frame (MTU {mtu}) after the {HEADROOM}-byte headroom: use buffers of at least {} bytes or lower the interface MTU", need + HEADROOM
    )]
    PoolTooSmall {
        /// The interface.
        ifname: String,
        /// Pool buffer size.
        buf_size: usize,
        /// Largest frame.
        need: usize,
        /// The interface MTU.
        mtu: usize,
    },
    /// Ring geometry the kernel cannot use.
    #[error(
        "AF_PACKET ring: block size {block_size} must be a multiple of the page size and hold a {frame}-byte frame; blocks 1..=4096"
    )]
    BadRing {
        /// Block size asked for.
        block_size: usize,
        /// Largest frame.
        frame: usize,
    },
    /// A socket call failed.
    #[error("{ifname}: cannot {what}: {errno}")]
    Socket {
        /// The interface.
        ifname: String,
        /// The step that failed.
        what: &'static str,
        /// The kernel's error.
        errno: Errno,
    },
}

/// Options of an [`AfPacketPort`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfPacketOptions {
    /// Bytes per receive ring block (a multiple of the page size).
    pub block_size: usize,
    /// Blocks in the receive ring.
    pub block_count: usize,
    /// How long the kernel may keep a partly filled block before handing it over, in
    /// milliseconds: the worst added receive latency when traffic is light.
    pub block_timeout_ms: u32,
    /// Send straight to the driver, skipping the qdisc layer (`PACKET_QDISC_BYPASS`):
    /// faster, but frames are dropped rather than queued when the device is busy.
    pub qdisc_bypass: bool,
}

impl Default for AfPacketOptions {
    fn default() -> Self {
        Self {
            block_size: 1 << 18,
            block_count: 16,
            block_timeout_ms: 1,
            qdisc_bypass: false,
        }
    }
}

/// Counters; plain integers, the port is used by one thread at a time.
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
    rx_truncated: u64,
    rx_no_buffer: u64,
    tx_too_big: u64,
    tx_error: u64,
}

/// The receive ring mapping, unmapped on drop.
struct Ring {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by the port and only touched through `&mut self`; the
// kernel's concurrent writes are synchronised by the block status word protocol.
unsafe impl Send for Ring {}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` describe exactly the mapping made in `AfPacketPort::open`,
        // and nothing refers to it after the port (its only owner) is dropped.
        unsafe {
            let _ = rustix::mm::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

/// The `sendmmsg` arrays, allocated once.
struct TxArrays {
    hdrs: Box<[libc::mmsghdr]>,
    iovs: Box<[libc::iovec]>,
}

// SAFETY: the raw pointers inside are scratch values written right before each
// `sendmmsg` made through `&mut AfPacketPort` and never read afterwards.
unsafe impl Send for TxArrays {}

/// An `AF_PACKET` socket bound to one interface, with a `TPACKET_V3` receive ring.
///
/// Named drop counters: `rx_truncated` (a frame longer than a pool buffer, or than the
/// ring's snap length), `rx_no_buffer` (frames left for later because the pool was
/// empty), `rx_kernel_dropped` (frames the kernel dropped because the ring was full,
/// from `PACKET_STATISTICS`, read when stats are taken), `tx_too_big` (`EMSGSIZE`),
/// `tx_error` (any other send error).
pub struct AfPacketPort {
    name: String,
    ifname: String,
    ifindex: i32,
    mac: MacAddr,
    mtu: usize,
    fd: OwnedFd,
    ring: Ring,
    block_size: usize,
    block_count: usize,
    /// The block being read.
    block: usize,
    /// Frames left in the current block and the offset of the next one (0: the block
    /// is not being read yet).
    left: u32,
    offset: usize,
    pool: Mempool,
    tx: TxArrays,
    c: Counters,
    kernel_drops: std::cell::Cell<u64>,
}

impl std::fmt::Debug for AfPacketPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfPacketPort")
            .field("ifname", &self.ifname)
            .field("mac", &self.mac)
            .field("mtu", &self.mtu)
            .field("counters", &self.c)
            .finish_non_exhaustive()
    }
}

/// The `errno` of the last failed libc call.
fn last_errno() -> Errno {
    Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO)
}

/// `setsockopt(fd, SOL_PACKET, opt, &value)`.
fn set_packet_opt<T>(fd: BorrowedFd<'_>, opt: libc::c_int, value: &T) -> Result<(), Errno> {
    // SAFETY: the kernel reads `size_of::<T>()` bytes from a pointer to a live `T`;
    // callers pass the type each option expects (int, tpacket_req3, packet_mreq).
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            opt,
            std::ptr::from_ref(value).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 { Err(last_errno()) } else { Ok(()) }
}

/// An `ifreq` naming `ifname` (validated: 1..=15 bytes, no NUL).
fn ifreq_for(ifname: &str) -> Option<libc::ifreq> {
    let bytes = ifname.as_bytes();
    if bytes.is_empty()
        || bytes.len() >= libc::IFNAMSIZ
        || bytes
            .iter()
            .any(|&b| b == 0 || b == b'/' || b.is_ascii_whitespace())
    {
        return None;
    }
    // SAFETY: `ifreq` is a C struct of a name array and a union of integers, sockaddrs
    // and a pointer: all-zero bytes are a valid value of each.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Some(ifr)
}

/// Issues an `ifreq` ioctl (`SIOCGIFINDEX`, `SIOCGIFHWADDR`, `SIOCGIFMTU`,
/// `SIOCGIFFLAGS`) on `fd`.
fn ifreq_ioctl(fd: BorrowedFd<'_>, req: libc::c_ulong, ifr: &mut libc::ifreq) -> Result<(), Errno> {
    // SAFETY: each of these requests reads the name and writes one field of the
    // `struct ifreq` the pointer refers to, which is live and exclusively ours.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, std::ptr::from_mut(ifr)) };
    if rc < 0 { Err(last_errno()) } else { Ok(()) }
}

/// What a port needs to know about its interface.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IfInfo {
    pub ifindex: i32,
    pub mac: MacAddr,
    pub mtu: usize,
}

/// Looks `ifname` up with ioctls on `fd` (any socket): index, up, Ethernet, MAC, MTU.
pub(crate) fn interface_info(fd: BorrowedFd<'_>, ifname: &str) -> Result<IfInfo, AfPacketError> {
    let ifr0 = ifreq_for(ifname).ok_or_else(|| AfPacketError::BadIfName(ifname.into()))?;
    let sock_err = |what: &'static str| {
        let ifname = ifname.to_string();
        move |errno: Errno| AfPacketError::Socket {
            ifname,
            what,
            errno,
        }
    };
    let mut ifr = ifr0;
    ifreq_ioctl(fd, libc::SIOCGIFINDEX, &mut ifr).map_err(|e| match e {
        Errno::NODEV => AfPacketError::NoInterface(ifname.into()),
        e => sock_err("look up the interface")(e),
    })?;
    // SAFETY: SIOCGIFINDEX wrote the `ifru_ifindex` member of the union.
    let ifindex = unsafe { ifr.ifr_ifru.ifru_ifindex };
    let mut ifr = ifr0;
    ifreq_ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr).map_err(sock_err("read the interface flags"))?;
    // SAFETY: SIOCGIFFLAGS wrote the `ifru_flags` member.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short == 0 {
        return Err(AfPacketError::Down(ifname.into()));
    }
    let mut ifr = ifr0;
    ifreq_ioctl(fd, libc::SIOCGIFHWADDR, &mut ifr).map_err(sock_err("read the MAC address"))?;
    // SAFETY: SIOCGIFHWADDR wrote the `ifru_hwaddr` sockaddr.
    let hw = unsafe { ifr.ifr_ifru.ifru_hwaddr };
    if hw.sa_family != libc::ARPHRD_ETHER {
        return Err(AfPacketError::NotEthernet {
            ifname: ifname.into(),
            hwtype: hw.sa_family,
        });
    }
    let mut mac = MacAddr::ZERO;
    for (d, s) in mac.0.iter_mut().zip(hw.sa_data) {
        *d = s as u8;
    }
    let mut ifr = ifr0;
    ifreq_ioctl(fd, libc::SIOCGIFMTU, &mut ifr).map_err(sock_err("read the MTU"))?;
    // SAFETY: SIOCGIFMTU wrote the `ifru_mtu` member.
    let mtu = usize::try_from(unsafe { ifr.ifr_ifru.ifru_mtu }).unwrap_or(0);

    Ok(IfInfo { ifindex, mac, mtu })
}

impl AfPacketPort {
    /// Opens a non-blocking `AF_PACKET` socket on `ifname` with default options.
    pub fn open(ifname: &str, pool: Mempool) -> Result<Self, AfPacketError> {
        Self::open_with(ifname, pool, AfPacketOptions::default())
    }

    /// Opens the port with `opts`.
    pub fn open_with(
        ifname: &str,
        pool: Mempool,
        opts: AfPacketOptions,
    ) -> Result<Self, AfPacketError> {
        if ifreq_for(ifname).is_none() {
            return Err(AfPacketError::BadIfName(ifname.into()));
        }
        let sock_err = |what: &'static str| {
            let ifname = ifname.to_string();
            move |errno: Errno| AfPacketError::Socket {
                ifname,
                what,
                errno,
            }
        };
        // Protocol 0: receive nothing until bound to the interface.
        // SAFETY: plain socket(2) call; the returned descriptor is owned right below.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(match last_errno() {
                Errno::PERM | Errno::ACCESS => AfPacketError::Permission {
                    ifname: ifname.into(),
                },
                e => sock_err("create the socket")(e),
            });
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(raw) };

        let IfInfo { ifindex, mac, mtu } = interface_info(fd.as_fd(), ifname)?;

        let need = mtu + L2_OVERHEAD;
        if pool.buf_size() < need + HEADROOM {
            return Err(AfPacketError::PoolTooSmall {
                ifname: ifname.into(),
                buf_size: pool.buf_size(),
                need,
                mtu,
            });
        }
        // SAFETY: sysconf only reads a system constant.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let frame = (need + libc::TPACKET3_HDRLEN).next_multiple_of(libc::TPACKET_ALIGNMENT);
        if !opts.block_size.is_multiple_of(page)
            || opts.block_size < frame
            || !(1..=4096).contains(&opts.block_count)
        {
            return Err(AfPacketError::BadRing {
                block_size: opts.block_size,
                frame,
            });
        }

        let version = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        set_packet_opt(fd.as_fd(), libc::PACKET_VERSION, &version)
            .map_err(sock_err("select TPACKET_V3"))?;
        // Best effort (Linux 4.20+): without it we would also see frames the host
        // stack sends on this interface; they are not for us and would be counted.
        let one: libc::c_int = 1;
        let _ = set_packet_opt(fd.as_fd(), libc::PACKET_IGNORE_OUTGOING, &one);
        if opts.qdisc_bypass {
            set_packet_opt(fd.as_fd(), libc::PACKET_QDISC_BYPASS, &one)
                .map_err(sock_err("bypass the qdisc"))?;
        }
        let frame_size = 2048u32.max(frame as u32).next_power_of_two();
        let req = libc::tpacket_req3 {
            tp_block_size: opts.block_size as u32,
            tp_block_nr: opts.block_count as u32,
            tp_frame_size: frame_size,
            tp_frame_nr: ((opts.block_size * opts.block_count) / frame_size as usize) as u32,
            tp_retire_blk_tov: opts.block_timeout_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        set_packet_opt(fd.as_fd(), libc::PACKET_RX_RING, &req)
            .map_err(sock_err("set up the receive ring"))?;
        let len = opts.block_size * opts.block_count;
        // SAFETY: maps the ring the kernel just allocated for this socket; a fresh
        // shared mapping aliases no Rust object, and `Ring` unmaps it exactly once.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                &fd,
                0,
            )
        }
        .map_err(sock_err("map the receive ring"))?;
        let base = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| sock_err("map the receive ring")(Errno::NOMEM))?;
        let ring = Ring { base, len };

        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex,
            mr_type: libc::PACKET_MR_ALLMULTI as libc::c_ushort,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        set_packet_opt(fd.as_fd(), libc::PACKET_ADD_MEMBERSHIP, &mreq)
            .map_err(sock_err("join all multicast groups"))?;

        // SAFETY: all-zero is a valid `sockaddr_ll`; the fields that matter are set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as libc::c_ushort;
        sll.sll_protocol = ETH_P_ALL_BE;
        sll.sll_ifindex = ifindex;
        // SAFETY: `sll` is a live, initialised `sockaddr_ll` of the length passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::from_ref(&sll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(sock_err("bind to the interface")(last_errno()));
        }

        // SAFETY: plain C structs for which all-zero bytes are valid (null pointers,
        // zero lengths).
        let zero_hdr = || unsafe { std::mem::zeroed::<libc::mmsghdr>() };
        let tx = TxArrays {
            hdrs: (0..BATCH_MAX).map(|_| zero_hdr()).collect(),
            iovs: (0..BATCH_MAX)
                .map(|_| libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                })
                .collect(),
        };
        tracing::debug!(ifname, ifindex, %mac, mtu, "af_packet port open");
        Ok(Self {
            name: format!("af_packet:{ifname}"),
            ifname: ifname.to_string(),
            ifindex,
            mac,
            mtu,
            fd,
            ring,
            block_size: opts.block_size,
            block_count: opts.block_count,
            block: 0,
            left: 0,
            offset: 0,
            pool,
            tx,
            c: Counters::default(),
            kernel_drops: std::cell::Cell::new(0),
        })
    }

    /// The interface's MAC address.
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// The interface's L3 MTU.
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// The interface index.
    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }

    /// Pointer to the start of block `i`.
    fn block_ptr(&self, i: usize) -> *mut u8 {
        // SAFETY: `i < block_count`, so the offset stays inside the mapping.
        unsafe { self.ring.base.as_ptr().add(i * self.block_size) }
    }

    /// The status word of block `i`, read with acquire semantics: once it shows
    /// `TP_STATUS_USER`, the kernel's writes to the block are visible.
    fn block_status(&self, i: usize) -> u32 {
        let desc = self.block_ptr(i).cast::<libc::tpacket_block_desc>();
        // SAFETY: the block starts with a `tpacket_block_desc` (the ring is
        // TPACKET_V3), page-aligned; the kernel writes the status concurrently, hence
        // the volatile read, ordered before our reads of the block by the fence.
        let status = unsafe { std::ptr::addr_of!((*desc).hdr.bh1.block_status).read_volatile() };
        fence(Ordering::Acquire);
        status
    }

    /// Hands block `i` back to the kernel.
    fn release_block(&mut self, i: usize) {
        let desc = self.block_ptr(i).cast::<libc::tpacket_block_desc>();
        fence(Ordering::Release);
        // SAFETY: as in `block_status`; we own the block (status USER) until this
        // write, after which we no longer read it.
        unsafe {
            std::ptr::addr_of_mut!((*desc).hdr.bh1.block_status)
                .write_volatile(libc::TP_STATUS_KERNEL);
        }
    }

    /// Reads the kernel's drop count (`PACKET_STATISTICS` resets on read, so it is
    /// accumulated).
    fn read_kernel_drops(&self) -> u64 {
        // SAFETY: all-zero is a valid `tpacket_stats_v3`.
        let mut st: libc::tpacket_stats_v3 = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `st`, a live local.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                std::ptr::from_mut(&mut st).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            self.kernel_drops
                .set(self.kernel_drops.get() + u64::from(st.tp_drops));
        }
        self.kernel_drops.get()
    }
}

impl Port for AfPacketPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_batch(&mut self, batch: &mut Batch) -> usize {
        let mut n = 0;
        while !batch.is_full() {
            let blk = self.block;
            if self.left == 0 {
                if self.block_status(blk) & libc::TP_STATUS_USER == 0 {
                    break;
                }
                let desc = self.block_ptr(blk).cast::<libc::tpacket_block_desc>();
                // SAFETY: the block is ours (status USER, acquire fence done); its
                // descriptor's fields are plain integers the kernel wrote before.
                let (num, first) = unsafe {
                    let h = std::ptr::addr_of!((*desc).hdr.bh1).read_unaligned();
                    (h.num_pkts, h.offset_to_first_pkt as usize)
                };
                if num == 0 {
                    self.release_block(blk);
                    self.block = (blk + 1) % self.block_count;
                    continue;
                }
                self.left = num;
                self.offset = first;
            }
            let Some(mut buf) = self.pool.alloc() else {
                self.c.rx_no_buffer += 1;
                break;
            };
            let base = self.block_ptr(blk);
            let max = self.block_size;
            let hdr_len = size_of::<libc::tpacket3_hdr>();
            let mut next = 0usize;
            let mut frame: Option<&[u8]> = None;
            let mut truncated = false;
            if self.offset + hdr_len <= max {
                // SAFETY: the header lies inside the block (checked above), which we
                // own; it may be unaligned only if the kernel misbehaved, hence
                // `read_unaligned`.
                let h = unsafe {
                    base.add(self.offset)
                        .cast::<libc::tpacket3_hdr>()
                        .read_unaligned()
                };
                next = h.tp_next_offset as usize;
                let start = self.offset + usize::from(h.tp_mac);
                let len = h.tp_snaplen as usize;
                truncated = h.tp_snaplen < h.tp_len;
                if start + len <= max {
                    // SAFETY: `[start, start + len)` lies inside the block we own, and
                    // the kernel does not write it until we release the block.
                    frame = Some(unsafe { std::slice::from_raw_parts(base.add(start), len) });
                }
            }
            match frame {
                Some(f) if !truncated && buf.reset_for_rx(HEADROOM).len() >= f.len() => {
                    buf.reset_for_rx(HEADROOM)[..f.len()].copy_from_slice(f);
                    let _ = buf.set_len(f.len());
                    self.c.rx_packets += 1;
                    self.c.rx_bytes += f.len() as u64;
                    let _ = batch.push(buf);
                    n += 1;
                }
                _ => self.c.rx_truncated += 1,
            }
            self.left -= 1;
            if self.left == 0 || next == 0 {
                self.left = 0;
                self.release_block(blk);
                self.block = (blk + 1) % self.block_count;
            } else {
                self.offset += next;
            }
        }
        n
    }

    fn tx_batch(&mut self, batch: &mut Batch) -> usize {
        let count = batch.len();
        if count == 0 {
            return 0;
        }
        for (i, buf) in batch.iter().enumerate() {
            let data = buf.data();
            // `sendmmsg` only reads through `iov_base`; the mut cast is the C type's.
            self.tx.iovs[i] = libc::iovec {
                iov_base: data.as_ptr().cast_mut().cast(),
                iov_len: data.len(),
            };
            let iov: *mut libc::iovec = &mut self.tx.iovs[i];
            let h = &mut self.tx.hdrs[i];
            h.msg_hdr.msg_name = std::ptr::null_mut();
            h.msg_hdr.msg_namelen = 0;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        let mut done = 0;
        let mut sent = 0;
        while done < count {
            // SAFETY: messages done..count each point at one iovec over a frame in
            // `batch`, alive and unmodified during the call; no address (the socket
            // is bound to the interface), no control data. The kernel only reads them
            // and writes `msg_len`.
            let rc = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    self.tx.hdrs.as_mut_ptr().add(done),
                    (count - done) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if rc > 0 {
                let k = (rc as usize).min(count - done);
                for h in &self.tx.hdrs[done..done + k] {
                    self.c.tx_bytes += u64::from(h.msg_len);
                }
                done += k;
                sent += k;
                continue;
            }
            match last_errno() {
                Errno::AGAIN | Errno::INTR | Errno::NOBUFS => break,
                Errno::MSGSIZE => self.c.tx_too_big += 1,
                _ => self.c.tx_error += 1,
            }
            // This frame cannot be sent: drop it and go on with the rest.
            done += 1;
        }
        self.c.tx_packets += sent as u64;
        batch.consume_front(done);
        sent
    }

    fn caps(&self) -> PortCaps {
        PortCaps {
            kind: PortKind::Ethernet,
            mtu: self.mtu,
            rx_queues: 1,
            tx_queues: 1,
            offloads: Offloads::NONE,
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
                ("rx_kernel_dropped", self.read_kernel_drops()),
                ("tx_too_big", c.tx_too_big),
                ("tx_error", c.tx_error),
            ],
        )
    }

    fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.fd.as_fd())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic in a test is its failure report
mod tests {
    use super::*;

    #[test]
    fn missing_interface_and_bad_names_are_clear_errors() {
        let pool = Mempool::new(64, 2048).unwrap();
        match AfPacketPort::open("nosuchif0", pool.clone()) {
            Err(AfPacketError::NoInterface(n)) => assert_eq!(n, "nosuchif0"),
            // Without CAP_NET_RAW the socket itself is refused first.
            Err(AfPacketError::Permission { .. }) => {}
            other => panic!("unexpected: {other:?}"),
        }
        assert!(matches!(
            AfPacketPort::open("a/b", pool.clone()),
            Err(AfPacketError::BadIfName(_))
        ));
        assert!(matches!(
            AfPacketPort::open("", pool),
            Err(AfPacketError::BadIfName(_))
        ));
    }
}
