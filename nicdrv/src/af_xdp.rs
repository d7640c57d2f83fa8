//! [`AfXdpPort`]: an `AF_XDP` socket on queue 0 of an interface as a
//! [`PortKind::Ethernet`] port, with a small XDP program of our own that steers to the
//! socket only the frames addressed to our underlay address and passes everything else
//! to the kernel.
//!
//! Receive: the kernel (or the driver, in native mode) writes frames into a UMEM
//! region we registered and posts descriptors on the RX ring; we copy each frame into a
//! pool buffer at [`HEADROOM`] and give the UMEM frame back on the fill ring. Transmit:
//! frames are copied into free UMEM frames, posted on the TX ring, and one `sendto`
//! per batch kicks the kernel; the completion ring returns the frames. No system call
//! per frame in either direction, none at all on receive.
//!
//! Only receive queue 0 is served (a warning says so when the interface has more).
//!
//! The XDP program is a few dozen eBPF instructions assembled here (see
//! [`filter_program`]) and loaded with the `bpf(2)` system call, attached through a BPF
//! link so that it detaches by itself when the port (or the process) goes away. It
//! redirects, by the receive queue's index in an `XSKMAP`:
//! IPv4 packets to our address, ARP packets asking for it, and IPv6 packets to our
//! address or its solicited-node group (neighbour solicitations). Everything else,
//! including frames for the kernel's own addresses on the same interface, is
//! `XDP_PASS`. (Steering by UDP port alone would starve the underlay stack of the ARP,
//! neighbour discovery, ICMP and non-first fragments it must see.)
//!
//! Why no crate: the XDP-socket crates known to build here (xsk-rs with libxdp and
//! libbpf built from source) need clang, libelf and a C filter compiled at build time;
//! what this port needs from them is a handful of setsockopt/mmap calls and a
//! 40-instruction program, which are written here against the kernel ABI instead.

use std::mem::size_of;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use pkt::wire::MacAddr;
use pkt::{Batch, HEADROOM, Mempool, Offloads, Port, PortCaps, PortKind, PortStats};
use rustix::io::Errno;

use crate::af_packet::{AfPacketError, IfInfo, interface_info};

/// Why an [`AfXdpPort`] could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AfXdpError {
    /// The interface cannot be used (missing, down, not Ethernet, bad name).
    #[error(transparent)]
    Interface(#[from] AfPacketError),
    /// AF_XDP sockets or BPF need privileges.
    #[error(
        "cannot open an AF_XDP socket on {ifname}: permission denied: run as root (CAP_NET_RAW, CAP_NET_ADMIN and CAP_BPF)"
    )]
    Permission {
        /// The interface.
        ifname: String,
    },
    /// The kernel has no AF_XDP or no XDP for this interface.
    #[error("XDP is not supported on {ifname}: {why}: use kind = \"af_packet\" on this host")]
    Unsupported {
        /// The interface.
        ifname: String,
        /// What failed.
        why: String,
    },
    /// Another XDP program holds the interface.
    #[error(
        "interface {ifname} already has an XDP program attached: detach it (`ip link set {ifname} xdp off`) or use kind = \"af_packet\""
    )]
    Busy {
        /// The interface.
        ifname: String,
    },
    /// The pool's buffers (or the UMEM frames) cannot hold a full frame.
    #[error(
        "{ifname}: MTU {mtu} frames do not fit the {frame_size}-byte XDP frames or the packet pool's {buf_size}-byte buffers: lower the interface MTU"
    )]
    FrameTooSmall {
        /// The interface.
        ifname: String,
        /// The interface MTU.
        mtu: usize,
        /// UMEM frame size.
        frame_size: usize,
        /// Pool buffer size.
        buf_size: usize,
    },
    /// The kernel refused the XDP program.
    #[error("the kernel refused the XDP filter program for {ifname}: {errno}: {log}")]
    Verifier {
        /// The interface.
        ifname: String,
        /// The kernel's error.
        errno: Errno,
        /// The verifier's log.
        log: String,
    },
    /// Any other step failed.
    #[error("AF_XDP socket on {ifname}: cannot {what}: {errno}")]
    Socket {
        /// The interface.
        ifname: String,
        /// The step that failed.
        what: &'static str,
        /// The kernel's error.
        errno: Errno,
    },
}

/// Where the XDP program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// Native (driver) mode where the driver has it, generic otherwise.
    #[default]
    Auto,
    /// Driver mode only.
    Native,
    /// Generic (skb) mode only.
    Generic,
}

/// Options of an [`AfXdpPort`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfXdpOptions {
    /// UMEM frames (half for receive, half for transmit); a power of two.
    pub frames: u32,
    /// Bytes per UMEM frame (2048 or 4096).
    pub frame_size: u32,
    /// Where the program runs.
    pub mode: XdpMode,
}

impl Default for AfXdpOptions {
    fn default() -> Self {
        Self {
            frames: 4096,
            frame_size: 2048,
            mode: XdpMode::Auto,
        }
    }
}

// ---- the bpf(2) ABI (include/uapi/linux/bpf.h) ----

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type`: BPF_XDP.
const BPF_XDP: u32 = 37;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
/// `bpf_redirect_map` helper number.
const HELPER_REDIRECT_MAP: i32 = 51;
/// XDP verdict.
const XDP_PASS: i32 = 2;
/// Entries in the XSKMAP: one per possible receive queue.
const XSKMAP_ENTRIES: u32 = 64;

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    _rest: [u64; 4],
}

/// `bpf(cmd, attr, sizeof attr)`; a new descriptor or the errno.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> Result<libc::c_long, Errno> {
    // SAFETY: `attr` is a live, initialised `repr(C)` struct laid out as the kernel's
    // `union bpf_attr` member for `cmd`, with every field past the ones set zero; the
    // kernel reads (and for some commands writes) at most `size_of::<T>()` bytes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 { Err(last_errno()) } else { Ok(rc) }
}

/// Owns a descriptor returned by `bpf(2)` or `socket(2)`.
fn own_fd(raw: libc::c_long) -> OwnedFd {
    // SAFETY: `raw` is a fresh descriptor the kernel just returned to us; nobody else
    // owns it.
    unsafe { OwnedFd::from_raw_fd(raw as libc::c_int) }
}

fn last_errno() -> Errno {
    Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO)
}

// ---- the filter program ----

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// Jump targets of the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Pass,
    V4,
    Arp,
    V6,
    SolicitedNode,
    Redirect,
}

/// A tiny assembler: instructions plus jumps to patch once labels are placed.
struct Asm {
    insns: Vec<BpfInsn>,
    labels: [Option<usize>; 6],
    jumps: Vec<(usize, Label)>,
}

impl Asm {
    fn op(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.insns.push(BpfInsn {
            code,
            regs: dst | src << 4,
            off,
            imm,
        });
    }

    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: Label) {
        self.jumps.push((self.insns.len(), to));
        self.op(code, dst, src, 0, imm);
    }

    fn label(&mut self, l: Label) {
        self.labels[l as usize] = Some(self.insns.len());
    }

    /// `r4 = r2 + n; if r4 > r3 goto pass`: proves `n` bytes of packet are there.
    fn need(&mut self, n: i32) {
        self.op(0xbf, 4, 2, 0, 0); // r4 = r2
        self.op(0x07, 4, 0, 0, n); // r4 += n
        self.jump(0x2d, 4, 3, 0, Label::Pass); // if r4 > r3 goto pass
    }

    /// `r5 = *(u32 *)(r2 + off); r7 = word; if r5 != r7 goto to`.
    fn word_ne(&mut self, off: i16, word: u32, to: Label) {
        self.op(0x61, 5, 2, off, 0); // r5 = *(u32 *)(r2 + off)
        self.op(0xb4, 7, 0, 0, word as i32); // w7 = word (zero-extended)
        self.jump(0x5d, 5, 7, 0, to); // if r5 != r7 goto to
    }

    fn finish(mut self) -> Option<Vec<BpfInsn>> {
        for (at, l) in std::mem::take(&mut self.jumps) {
            let target = self.labels[l as usize]?;
            let off = i16::try_from(target as isize - at as isize - 1).ok()?;
            self.insns[at].off = off;
        }
        Some(self.insns)
    }
}

/// Four 32-bit words of an address as a little-endian load from the packet sees them.
fn le_words(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// The XDP filter for `ip`, redirecting to the XSKMAP `map_fd`: IPv4 to `ip`, ARP for
/// `ip`, IPv6 to `ip` or its solicited-node group go to the socket bound to the
/// receive queue; the rest, and everything on a queue without a socket, passes.
pub fn filter_program(ip: IpAddr, map_fd: i32) -> Option<Vec<BpfInsn>> {
    let mut a = Asm {
        insns: Vec::with_capacity(64),
        labels: [None; 6],
        jumps: Vec::new(),
    };
    a.op(0xbf, 6, 1, 0, 0); // r6 = ctx
    a.op(0x61, 2, 6, 0, 0); // r2 = ctx->data
    a.op(0x61, 3, 6, 4, 0); // r3 = ctx->data_end
    a.need(14);
    a.op(0x69, 5, 2, 12, 0); // r5 = ethertype (as loaded: little-endian)
    match ip {
        IpAddr::V4(_) => {
            a.jump(0x15, 5, 0, 0x0008, Label::V4);
            a.jump(0x15, 5, 0, 0x0608, Label::Arp);
        }
        IpAddr::V6(_) => a.jump(0x15, 5, 0, 0xdd86_u16 as i32, Label::V6),
    }
    a.jump(0x05, 0, 0, 0, Label::Pass);
    match ip {
        IpAddr::V4(v4) => {
            let word = u32::from_le_bytes(v4.octets());
            a.label(Label::V4);
            a.need(14 + 20);
            a.word_ne(14 + 16, word, Label::Pass); // destination address
            a.jump(0x05, 0, 0, 0, Label::Redirect);
            a.label(Label::Arp);
            a.need(14 + 28);
            a.word_ne(14 + 24, word, Label::Pass); // target protocol address
            a.jump(0x05, 0, 0, 0, Label::Redirect);
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let sn = [
                0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
            ];
            a.label(Label::V6);
            a.need(14 + 40);
            for (i, w) in le_words(&o).enumerate() {
                a.word_ne(14 + 24 + 4 * i as i16, w, Label::SolicitedNode);
            }
            a.jump(0x05, 0, 0, 0, Label::Redirect);
            a.label(Label::SolicitedNode);
            for (i, w) in le_words(&sn).enumerate() {
                a.word_ne(14 + 24 + 4 * i as i16, w, Label::Pass);
            }
            a.jump(0x05, 0, 0, 0, Label::Redirect);
        }
    }
    a.label(Label::Redirect);
    a.op(0x61, 2, 6, 16, 0); // r2 = ctx->rx_queue_index
    a.op(0x18, 1, 1, 0, map_fd); // r1 = map (ld_imm64, pseudo map fd)
    a.op(0x00, 0, 0, 0, 0);
    a.op(0xb7, 3, 0, 0, XDP_PASS); // r3 = XDP_PASS: the verdict when the slot is empty
    a.op(0x85, 0, 0, 0, HELPER_REDIRECT_MAP);
    a.op(0x95, 0, 0, 0, 0); // exit
    a.label(Label::Pass);
    a.op(0xb7, 0, 0, 0, XDP_PASS); // r0 = XDP_PASS
    a.op(0x95, 0, 0, 0, 0); // exit
    a.finish()
}

// ---- rings ----

/// `struct xdp_desc`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct XdpDesc {
    addr: u64,
    len: u32,
    options: u32,
}

/// A shared mapping, unmapped on drop.
struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by one port and touched only through `&mut self`; the
// kernel's side is synchronised through the rings' producer/consumer words.
unsafe impl Send for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly one mapping we made, unmapped once, after
        // the last use (the port owns it).
        unsafe {
            let _ = rustix::mm::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

/// One of the four rings shared with the kernel.
struct Ring<T> {
    map: Mapping,
    producer: usize,
    consumer: usize,
    desc: usize,
    mask: u32,
    _t: std::marker::PhantomData<T>,
}

impl<T: Copy> Ring<T> {
    fn word(&self, off: usize) -> &AtomicU32 {
        // SAFETY: `off` is the kernel-reported offset of a 4-byte-aligned u32 inside
        // the mapping, which lives as long as `self`; the kernel accesses it
        // atomically too.
        unsafe { &*self.map.base.as_ptr().add(off).cast::<AtomicU32>() }
    }

    fn producer(&self) -> &AtomicU32 {
        self.word(self.producer)
    }

    fn consumer(&self) -> &AtomicU32 {
        self.word(self.consumer)
    }

    fn slot(&self, idx: u32) -> *mut T {
        // SAFETY: `idx & mask` < ring size, and the descriptor array of `size`
        // entries of `T` starts at `desc` inside the mapping.
        unsafe {
            self.map
                .base
                .as_ptr()
                .add(self.desc)
                .cast::<T>()
                .add((idx & self.mask) as usize)
        }
    }

    fn read(&self, idx: u32) -> T {
        // SAFETY: `slot` is inside the mapping; the entry was published by the kernel
        // before the producer word we read with acquire ordering.
        unsafe { self.slot(idx).read_volatile() }
    }

    fn write(&self, idx: u32, v: T) {
        // SAFETY: `slot` is inside the mapping, and the kernel does not read this
        // entry until we publish it with a release store of the producer word.
        unsafe { self.slot(idx).write_volatile(v) }
    }
}

/// Counters.
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
    rx_no_buffer: u64,
    rx_truncated: u64,
    tx_too_big: u64,
    tx_ring_full: u64,
}

/// An `AF_XDP` socket on queue 0 of an interface, with our XDP filter attached.
///
/// Named drop counters: `rx_truncated` (a frame larger than a pool buffer),
/// `rx_no_buffer` (receive calls that left frames on the ring because the pool was
/// empty), `rx_kernel_dropped` and `rx_ring_full` (frames the kernel could not queue
/// to the socket, from `XDP_STATISTICS`), `tx_too_big` (a frame larger than a UMEM
/// frame), `tx_ring_full` (transmit calls that found no free UMEM frame or TX slot and
/// left frames with the caller).
pub struct AfXdpPort {
    name: String,
    ifname: String,
    info: IfInfo,
    /// Where the program runs: `"native"` or `"generic"`.
    mode: &'static str,
    /// Closing the link detaches the program: declared first, dropped first.
    _link: OwnedFd,
    _prog: OwnedFd,
    _map: OwnedFd,
    rx: Ring<XdpDesc>,
    tx: Ring<XdpDesc>,
    fill: Ring<u64>,
    comp: Ring<u64>,
    xsk: OwnedFd,
    umem: Mapping,
    frame_size: usize,
    /// UMEM frames free for transmit.
    free: Vec<u64>,
    pool: Mempool,
    c: Counters,
}

impl std::fmt::Debug for AfXdpPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfXdpPort")
            .field("ifname", &self.ifname)
            .field("mode", &self.mode)
            .field("counters", &self.c)
            .finish_non_exhaustive()
    }
}

fn set_xdp_opt<T>(fd: BorrowedFd<'_>, opt: libc::c_int, value: &T) -> Result<(), Errno> {
    // SAFETY: the kernel reads `size_of::<T>()` bytes from a live `T` of the type the
    // option expects (u32 ring sizes, `xdp_umem_reg`).
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            opt,
            std::ptr::from_ref(value).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 { Err(last_errno()) } else { Ok(()) }
}

/// Maps ring `pgoff` of the socket: `desc` offset plus `n` entries of `T`.
fn map_ring<T>(
    fd: BorrowedFd<'_>,
    off: &libc::xdp_ring_offset,
    n: u32,
    pgoff: u64,
) -> Result<Ring<T>, Errno> {
    let len = off.desc as usize + n as usize * size_of::<T>();
    // SAFETY: maps a ring the kernel allocated for this socket at its documented page
    // offset; a fresh shared mapping aliases no Rust object and `Mapping` unmaps it.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd.as_raw_fd(),
            pgoff as libc::off_t,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(last_errno());
    }
    let base = NonNull::new(ptr.cast::<u8>()).ok_or(Errno::NOMEM)?;
    Ok(Ring {
        map: Mapping { base, len },
        producer: off.producer as usize,
        consumer: off.consumer as usize,
        desc: off.desc as usize,
        mask: n - 1,
        _t: std::marker::PhantomData,
    })
}

impl AfXdpPort {
    /// Opens an AF_XDP socket on queue 0 of `ifname` and attaches the filter for `ip`.
    pub fn open(
        ifname: &str,
        ip: IpAddr,
        pool: Mempool,
        opts: AfXdpOptions,
    ) -> Result<Self, AfXdpError> {
        let err = |what: &'static str| {
            let ifname = ifname.to_string();
            move |errno: Errno| AfXdpError::Socket {
                ifname,
                what,
                errno,
            }
        };
        // SAFETY: plain socket(2) call; the result is owned right below.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(match last_errno() {
                Errno::PERM | Errno::ACCESS => AfXdpError::Permission {
                    ifname: ifname.into(),
                },
                Errno::AFNOSUPPORT => AfXdpError::Unsupported {
                    ifname: ifname.into(),
                    why: "this kernel has no AF_XDP sockets (CONFIG_XDP_SOCKETS)".into(),
                },
                e => err("create the socket")(e),
            });
        }
        let xsk = own_fd(raw.into());
        // Interface ioctls need an ordinary socket.
        let probe = rustix::net::socket(
            rustix::net::AddressFamily::INET,
            rustix::net::SocketType::DGRAM,
            None,
        )
        .map_err(err("create a probe socket"))?;
        let info = interface_info(probe.as_fd(), ifname)?;
        let frame_size = opts.frame_size as usize;
        let need = info.mtu + 18;
        if need > frame_size || pool.buf_size() < need + HEADROOM {
            return Err(AfXdpError::FrameTooSmall {
                ifname: ifname.into(),
                mtu: info.mtu,
                frame_size,
                buf_size: pool.buf_size(),
            });
        }
        let frames = opts.frames.max(64).next_power_of_two();
        let half = frames / 2;
        let umem_len = frames as usize * frame_size;
        // SAFETY: a fresh private anonymous mapping aliases no Rust object; `Mapping`
        // unmaps it after the socket (declared before it) is closed.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                umem_len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::PRIVATE | rustix::mm::MapFlags::POPULATE,
            )
        }
        .map_err(err("allocate the UMEM"))?;
        let base =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| err("allocate the UMEM")(Errno::NOMEM))?;
        let umem = Mapping {
            base,
            len: umem_len,
        };
        let reg = libc::xdp_umem_reg {
            addr: base.as_ptr() as u64,
            len: umem_len as u64,
            chunk_size: opts.frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        set_xdp_opt(xsk.as_fd(), libc::XDP_UMEM_REG, &reg).map_err(err("register the UMEM"))?;
        for opt in [
            libc::XDP_UMEM_FILL_RING,
            libc::XDP_UMEM_COMPLETION_RING,
            libc::XDP_RX_RING,
            libc::XDP_TX_RING,
        ] {
            set_xdp_opt(xsk.as_fd(), opt, &half).map_err(err("size the rings"))?;
        }
        // SAFETY: all-zero is a valid `xdp_mmap_offsets`.
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `off`, a live local.
        let rc = unsafe {
            libc::getsockopt(
                xsk.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                std::ptr::from_mut(&mut off).cast(),
                &mut len,
            )
        };
        if rc < 0 {
            return Err(err("read the ring offsets")(last_errno()));
        }
        let fd = xsk.as_fd();
        let rx = map_ring::<XdpDesc>(fd, &off.rx, half, libc::XDP_PGOFF_RX_RING as u64)
            .map_err(err("map the RX ring"))?;
        let tx = map_ring::<XdpDesc>(fd, &off.tx, half, libc::XDP_PGOFF_TX_RING as u64)
            .map_err(err("map the TX ring"))?;
        let fill = map_ring::<u64>(fd, &off.fr, half, libc::XDP_UMEM_PGOFF_FILL_RING)
            .map_err(err("map the fill ring"))?;
        let comp = map_ring::<u64>(fd, &off.cr, half, libc::XDP_UMEM_PGOFF_COMPLETION_RING)
            .map_err(err("map the completion ring"))?;
        // The first half of the UMEM is for receive: all of it on the fill ring.
        let prod = fill.producer().load(Ordering::Relaxed);
        for i in 0..half {
            fill.write(prod.wrapping_add(i), u64::from(i) * frame_size as u64);
        }
        fill.producer()
            .store(prod.wrapping_add(half), Ordering::Release);
        let free = (half..frames)
            .map(|i| u64::from(i) * frame_size as u64)
            .collect();

        let sxdp = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: 0, // zero-copy where the driver has it, copy mode otherwise
            sxdp_ifindex: info.ifindex as u32,
            sxdp_queue_id: 0,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: `sxdp` is a live, initialised `sockaddr_xdp` of the length passed.
        let rc = unsafe {
            libc::bind(
                xsk.as_raw_fd(),
                std::ptr::from_ref(&sxdp).cast(),
                size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(err("bind to queue 0")(last_errno()));
        }

        let (map, prog, link, mode) = attach_filter(ifname, info.ifindex, ip, &xsk, opts.mode)?;
        let rx_queues = std::fs::read_dir(format!("/sys/class/net/{ifname}/queues"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                    .count()
            })
            .unwrap_or(1);
        if rx_queues > 1 {
            tracing::warn!(
                ifname,
                rx_queues,
                "only receive queue 0 is served: frames hashed to other queues reach the kernel, not vnetp; use one queue (`ethtool -L {ifname} combined 1`) or steer the underlay flows to queue 0"
            );
        }
        tracing::info!(ifname, mode, %ip, "af_xdp port open");
        Ok(Self {
            name: format!("af_xdp:{ifname}"),
            ifname: ifname.to_string(),
            info,
            mode,
            _link: link,
            _prog: prog,
            _map: map,
            rx,
            tx,
            fill,
            comp,
            xsk,
            umem,
            frame_size,
            free,
            pool,
            c: Counters::default(),
        })
    }

    /// The interface's MAC address.
    pub fn mac(&self) -> MacAddr {
        self.info.mac
    }

    /// Where the XDP program runs: `"native"` or `"generic"`.
    pub fn mode(&self) -> &'static str {
        self.mode
    }

    /// Bytes of UMEM frame `addr`, `len` long, if inside the UMEM.
    fn frame(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(addr).ok()?;
        if start.checked_add(len)? > self.umem.len
            || start % self.frame_size + len > self.frame_size
        {
            return None;
        }
        // SAFETY: the range lies inside the UMEM mapping (checked above), which lives
        // as long as `self`; the kernel handed this frame to us on the RX ring and does
        // not write it until we return it on the fill ring.
        Some(unsafe { std::slice::from_raw_parts(self.umem.base.as_ptr().add(start), len) })
    }

    /// Moves completed transmit frames back to the free list.
    fn reclaim(&mut self) {
        let cons = self.comp.consumer().load(Ordering::Relaxed);
        let prod = self.comp.producer().load(Ordering::Acquire);
        let n = prod.wrapping_sub(cons);
        for i in 0..n {
            self.free.push(self.comp.read(cons.wrapping_add(i)));
        }
        self.comp.consumer().store(prod, Ordering::Release);
    }

    /// Wakes the kernel to send what is on the TX ring. In copy mode it sends a
    /// bounded number of frames per call and answers `EAGAIN` while more remain, so
    /// this repeats (a few times at most: a batch is 64 frames). Busy or out of
    /// buffers: the frames stay on the ring for the next kick.
    fn kick(&self) {
        for _ in 0..8 {
            // SAFETY: sendto with no data and no address only wakes the socket's TX.
            let rc = unsafe {
                libc::sendto(
                    self.xsk.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if rc >= 0 || last_errno() != Errno::AGAIN {
                break;
            }
        }
    }

    /// True when frames wait on the TX ring for the kernel.
    fn tx_pending(&self) -> bool {
        self.tx.producer().load(Ordering::Relaxed) != self.tx.consumer().load(Ordering::Acquire)
    }

    fn xdp_stats(&self) -> libc::xdp_statistics {
        // SAFETY: all-zero is a valid `xdp_statistics`.
        let mut st: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::xdp_statistics>() as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `st`, a live local.
        unsafe {
            libc::getsockopt(
                self.xsk.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_STATISTICS,
                std::ptr::from_mut(&mut st).cast(),
                &mut len,
            );
        }
        st
    }
}

/// Creates the XSKMAP holding `xsk`, loads the filter for `ip` and attaches it to
/// `ifindex` through a BPF link, natively if the driver can (or as `mode` says).
fn attach_filter(
    ifname: &str,
    ifindex: i32,
    ip: IpAddr,
    xsk: &OwnedFd,
    mode: XdpMode,
) -> Result<(OwnedFd, OwnedFd, OwnedFd, &'static str), AfXdpError> {
    let perm = |e: Errno, what: &'static str| match e {
        Errno::PERM | Errno::ACCESS => AfXdpError::Permission {
            ifname: ifname.into(),
        },
        e => AfXdpError::Socket {
            ifname: ifname.into(),
            what,
            errno: e,
        },
    };
    let mut m = MapCreateAttr {
        map_type: BPF_MAP_TYPE_XSKMAP,
        key_size: 4,
        value_size: 4,
        max_entries: XSKMAP_ENTRIES,
        ..Default::default()
    };
    m.map_name[..8].copy_from_slice(b"vnetp_xs");
    let map = own_fd(bpf(BPF_MAP_CREATE, &mut m).map_err(|e| perm(e, "create the XSKMAP"))?);
    let key: u32 = 0;
    let value: u32 = xsk.as_raw_fd() as u32;
    let mut u = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: std::ptr::from_ref(&key) as u64,
        value: std::ptr::from_ref(&value) as u64,
        ..Default::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut u).map_err(|e| perm(e, "put the socket in the XSKMAP"))?;

    let insns = filter_program(ip, map.as_raw_fd()).ok_or_else(|| AfXdpError::Verifier {
        ifname: ifname.into(),
        errno: Errno::INVAL,
        log: "filter does not assemble".into(),
    })?;
    let license = b"Dual MIT/GPL\0";
    let mut log = vec![0u8; 1 << 16];
    let mut load = |expected_attach_type: u32, with_log: bool| {
        let mut p = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            expected_attach_type,
            ..Default::default()
        };
        p.prog_name[..11].copy_from_slice(b"vnetp_steer");
        if with_log {
            p.log_level = 1;
            p.log_size = log.len() as u32;
            p.log_buf = log.as_mut_ptr() as u64;
        }
        bpf(BPF_PROG_LOAD, &mut p)
    };
    let prog = match load(BPF_XDP, false).or_else(|_| load(0, false)) {
        Ok(fd) => own_fd(fd),
        Err(e @ (Errno::PERM | Errno::ACCESS)) => return Err(perm(e, "load the XDP program")),
        Err(_) => {
            let errno = load(0, true).err().unwrap_or(Errno::INVAL);
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            return Err(AfXdpError::Verifier {
                ifname: ifname.into(),
                errno,
                log: String::from_utf8_lossy(&log[..end]).trim().to_string(),
            });
        }
    };
    let attach = |flags: u32| {
        let mut l = LinkCreateAttr {
            prog_fd: prog.as_raw_fd() as u32,
            target_ifindex: ifindex as u32,
            attach_type: BPF_XDP,
            flags,
            ..Default::default()
        };
        bpf(BPF_LINK_CREATE, &mut l).map(own_fd)
    };
    let tries: &[(u32, &'static str)] = match mode {
        XdpMode::Auto => &[
            (XDP_FLAGS_DRV_MODE, "native"),
            (XDP_FLAGS_SKB_MODE, "generic"),
        ],
        XdpMode::Native => &[(XDP_FLAGS_DRV_MODE, "native")],
        XdpMode::Generic => &[(XDP_FLAGS_SKB_MODE, "generic")],
    };
    let mut last = Errno::OPNOTSUPP;
    for &(flags, name) in tries {
        match attach(flags) {
            Ok(link) => return Ok((map, prog, link, name)),
            Err(Errno::BUSY) => {
                return Err(AfXdpError::Busy {
                    ifname: ifname.into(),
                });
            }
            Err(e @ (Errno::PERM | Errno::ACCESS)) => {
                return Err(perm(e, "attach the XDP program"));
            }
            Err(e) => last = e,
        }
    }
    Err(AfXdpError::Unsupported {
        ifname: ifname.into(),
        why: format!("attaching the XDP program failed: {last}"),
    })
}

impl Port for AfXdpPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_batch(&mut self, batch: &mut Batch) -> usize {
        // Frames a kick left on the TX ring (kernel busy) go out with the next poll.
        if self.tx_pending() {
            self.kick();
        }
        let cons = self.rx.consumer().load(Ordering::Relaxed);
        let prod = self.rx.producer().load(Ordering::Acquire);
        let ready = prod.wrapping_sub(cons).min(batch.room() as u32);
        if ready == 0 {
            return 0;
        }
        let fprod = self.fill.producer().load(Ordering::Relaxed);
        let mut taken = 0u32;
        let mut pushed = 0;
        while taken < ready {
            let d = self.rx.read(cons.wrapping_add(taken));
            let Some(mut buf) = self.pool.alloc() else {
                self.c.rx_no_buffer += 1;
                break;
            };
            let len = d.len as usize;
            match self.frame(d.addr, len) {
                Some(f) if buf.reset_for_rx(HEADROOM).len() >= len => {
                    buf.reset_for_rx(HEADROOM)[..len].copy_from_slice(f);
                    let _ = buf.set_len(len);
                    self.c.rx_packets += 1;
                    self.c.rx_bytes += len as u64;
                    let _ = batch.push(buf);
                    pushed += 1;
                }
                _ => self.c.rx_truncated += 1,
            }
            // The frame goes straight back to the fill ring (it has room: it held
            // every receive frame, and this one came from it).
            let base = d.addr - d.addr % self.frame_size as u64;
            self.fill.write(fprod.wrapping_add(taken), base);
            taken += 1;
        }
        self.rx
            .consumer()
            .store(cons.wrapping_add(taken), Ordering::Release);
        self.fill
            .producer()
            .store(fprod.wrapping_add(taken), Ordering::Release);
        pushed
    }

    fn tx_batch(&mut self, batch: &mut Batch) -> usize {
        if batch.is_empty() {
            return 0;
        }
        self.reclaim();
        let prod = self.tx.producer().load(Ordering::Relaxed);
        let cons = self.tx.consumer().load(Ordering::Acquire);
        let room = (self.tx.mask + 1) - prod.wrapping_sub(cons);
        let mut posted = 0u32;
        let mut done = 0;
        for buf in batch.iter() {
            let len = buf.len();
            if len > self.frame_size {
                self.c.tx_too_big += 1;
                done += 1;
                continue;
            }
            if posted >= room || self.free.is_empty() {
                self.c.tx_ring_full += 1;
                break;
            }
            let Some(addr) = self.free.pop() else { break };
            let start = addr as usize;
            // SAFETY: `addr` is a free transmit frame of the UMEM (the kernel gave it
            // back on the completion ring or never had it), `len <= frame_size`, so
            // the range is inside the mapping and nobody else touches it.
            let dst =
                unsafe { std::slice::from_raw_parts_mut(self.umem.base.as_ptr().add(start), len) };
            dst.copy_from_slice(buf.data());
            self.tx.write(
                prod.wrapping_add(posted),
                XdpDesc {
                    addr,
                    len: len as u32,
                    options: 0,
                },
            );
            posted += 1;
            done += 1;
            self.c.tx_bytes += len as u64;
        }
        if posted > 0 {
            self.tx
                .producer()
                .store(prod.wrapping_add(posted), Ordering::Release);
            self.kick();
        }
        self.c.tx_packets += u64::from(posted);
        batch.consume_front(done);
        posted as usize
    }

    fn caps(&self) -> PortCaps {
        PortCaps {
            kind: PortKind::Ethernet,
            mtu: self.info.mtu,
            rx_queues: 1,
            tx_queues: 1,
            offloads: Offloads::NONE,
        }
    }

    fn stats(&self) -> PortStats {
        let c = &self.c;
        let st = self.xdp_stats();
        PortStats::new(
            (c.rx_packets, c.rx_bytes),
            (c.tx_packets, c.tx_bytes),
            &[
                ("rx_truncated", c.rx_truncated),
                ("rx_no_buffer", c.rx_no_buffer),
                ("rx_kernel_dropped", st.rx_dropped),
                ("rx_ring_full", st.rx_ring_full),
                ("tx_too_big", c.tx_too_big),
                ("tx_ring_full", c.tx_ring_full),
            ],
        )
    }

    fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.xsk.as_fd())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic in a test is its failure report
mod tests {
    use super::*;

    #[test]
    fn filter_assembles_with_all_jumps_inside_the_program() {
        for ip in ["10.1.2.3", "fd00::1"] {
            let p = filter_program(ip.parse().unwrap(), 3).unwrap();
            for (i, insn) in p.iter().enumerate() {
                let class = insn.code & 0x07;
                if class == 0x05 && insn.code != 0x85 && insn.code != 0x95 {
                    let target = i as isize + 1 + insn.off as isize;
                    assert!((0..p.len() as isize).contains(&target), "{ip}: jump at {i}");
                }
            }
            assert_eq!(p.last().unwrap().code, 0x95, "ends with exit");
        }
    }

    #[test]
    fn ipv4_filter_compares_the_address_as_a_little_endian_load() {
        let p = filter_program("10.99.40.1".parse().unwrap(), 3).unwrap();
        let word = u32::from_le_bytes([10, 99, 40, 1]) as i32;
        assert!(p.iter().any(|i| i.code == 0xb4 && i.imm == word));
    }
}
