//! [`TapPort`]: a Linux tap device as a [`PortKind::Ethernet`] port.
//!
//! The device is created with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, so every frame read
//! or written is preceded by a 12-byte virtio-net header (virtio 1.2, 5.1.6, with
//! `num_buffers`), little-endian. The tap is not persistent: it disappears when the
//! port is dropped.
//!
//! No offload is enabled on the device (no `TUNSETOFFLOAD`), so the kernel resolves
//! checksums and segmentation before a frame reaches us: received frames are complete
//! and fully checksummed, at most marked "data valid". Frames we write may still ask
//! for offloads through [`pkt::OffloadMeta`] (the kernel accepts a partial checksum or
//! a GSO frame from userspace whatever the device's offload flags).

use offload::vnet_hdr::{self, VirtioNetHdr};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use zerocopy::FromBytes;

use pkt::{
    Batch, HEADROOM, Mempool, OffloadMeta, Offloads, PktBuf, Port, PortCaps, PortKind, PortStats,
};
use rustix::io::Errno;

use crate::NicError;

mod uring;

/// How a [`TapPort`] moves frames to and from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapIo {
    /// io_uring when the kernel allows it (reads kept posted, one `io_uring_enter` per
    /// batch), else [`TapIo::Plain`] (logged once at info).
    Auto,
    /// One `readv`/`writev` per frame on a non-blocking fd.
    Plain,
}

impl TapIo {
    /// The environment variable that forces [`TapIo::Plain`] (`VNETP_TAP_IO=plain`),
    /// for comparisons; any other value, or none, means [`TapIo::Auto`].
    pub const ENV: &str = "VNETP_TAP_IO";

    /// [`TapIo::Plain`] when `VNETP_TAP_IO=plain`, else [`TapIo::Auto`].
    pub fn from_env() -> Self {
        match std::env::var(Self::ENV) {
            Ok(v) if v.eq_ignore_ascii_case("plain") => Self::Plain,
            _ => Self::Auto,
        }
    }
}

/// Set once the io_uring fallback was logged: the reason is the same for every tap.
static FALLBACK_LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Bytes of the virtio-net header on every tap frame (`struct virtio_net_hdr_v1`:
/// the legacy 10-byte header plus `num_buffers`).
const VNET_HDR_LEN: usize = vnet_hdr::LEN;
/// An Ethernet header: the shortest frame the kernel can make sense of.
const ETH_HLEN: usize = 14;
/// What an Ethernet frame adds to the L3 MTU: header plus one 802.1Q tag.
const ETH_OVERHEAD: usize = ETH_HLEN + 4;
/// `IFNAMSIZ`: interface names are at most 15 bytes plus the NUL.
const IFNAMSIZ: usize = libc::IFNAMSIZ;
/// MTU range a tap accepts (`ETH_MIN_MTU`..=`MAX_MTU` in drivers/net/tun.c).
const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;

/// Parses the 12-byte little-endian virtio-net header in front of a received frame
/// (`offload::vnet_hdr` owns the layout; the kernel's header is taken as it is).
fn parse_vnet_hdr(b: &[u8; VNET_HDR_LEN]) -> OffloadMeta {
    // Cannot fail: the array is exactly one header long.
    VirtioNetHdr::read_from_bytes(b).map_or_else(|_| OffloadMeta::default(), |h| h.to_meta())
}

/// Builds the 12-byte little-endian virtio-net header for a frame to send
/// (`num_buffers` is receive-only and written as 0).
fn emit_vnet_hdr(m: &OffloadMeta) -> [u8; VNET_HDR_LEN] {
    let mut b = [0u8; VNET_HDR_LEN];
    // Cannot fail: the array is exactly one header long.
    let _ = vnet_hdr::emit(m, 0, &mut b);
    b
}

/// Checks `name` the way the kernel's `dev_valid_name` does and returns it as the
/// NUL-padded C array an `ifreq` carries.
fn ifname_to_c(name: &str) -> Result<[libc::c_char; IFNAMSIZ], NicError> {
    let bad = |reason| {
        Err(NicError::BadIfName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() >= IFNAMSIZ {
        return bad("Linux interface names are at most 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("\".\" and \"..\" are reserved");
    }
    if name
        .bytes()
        .any(|c| c == b'/' || c == b':' || c.is_ascii_whitespace() || c == 0)
    {
        return bad("it must not contain '/', ':', NUL or whitespace");
    }
    let mut out = [0 as libc::c_char; IFNAMSIZ];
    for (o, b) in out.iter_mut().zip(name.bytes()) {
        *o = b as libc::c_char;
    }
    Ok(out)
}

/// The name the kernel wrote back into an `ifreq` (it expands `%d` templates).
fn ifname_from_c(raw: &[libc::c_char; IFNAMSIZ]) -> String {
    let bytes: Vec<u8> = raw
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn mac_text(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = *mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// The `ifreq` requests this module issues, each with the `ifreq` field it uses.
#[derive(Debug, Clone, Copy)]
enum IfreqIoctl {
    /// `TUNSETIFF` on the tun fd: create or attach the device; `ifru_flags`.
    TunSetIff,
    /// `SIOCSIFHWADDR`: set the MAC; `ifru_hwaddr`.
    SetHwAddr,
    /// `SIOCSIFMTU`: set the MTU; `ifru_mtu`.
    SetMtu,
    /// `SIOCGIFMTU`: read the MTU; `ifru_mtu`.
    GetMtu,
    /// `SIOCGIFFLAGS`: read the interface flags; `ifru_flags`.
    GetFlags,
    /// `SIOCSIFFLAGS`: write the interface flags; `ifru_flags`.
    SetFlags,
}

impl IfreqIoctl {
    fn request(self) -> libc::Ioctl {
        // The SIOC* constants are `c_ulong` in libc while the request type varies by
        // C library; the values all fit.
        match self {
            Self::TunSetIff => libc::TUNSETIFF,
            Self::SetHwAddr => libc::SIOCSIFHWADDR as libc::Ioctl,
            Self::SetMtu => libc::SIOCSIFMTU as libc::Ioctl,
            Self::GetMtu => libc::SIOCGIFMTU as libc::Ioctl,
            Self::GetFlags => libc::SIOCGIFFLAGS as libc::Ioctl,
            Self::SetFlags => libc::SIOCSIFFLAGS as libc::Ioctl,
        }
    }
}

/// Issues an `ifreq` ioctl.
fn ifreq_ioctl(fd: BorrowedFd<'_>, req: IfreqIoctl, ifr: &mut libc::ifreq) -> Result<(), Errno> {
    // SAFETY: every `IfreqIoctl` request takes a pointer to a `struct ifreq`, which
    // `ifr` is, valid and exclusively borrowed for the call; the kernel reads and writes
    // only within it.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req.request(), std::ptr::from_mut(ifr)) };
    if rc < 0 { Err(last_errno()) } else { Ok(()) }
}

/// The tun requests taking a pointer to an `int`.
#[derive(Debug, Clone, Copy)]
enum TunIntIoctl {
    /// `TUNSETVNETHDRSZ`: length of the virtio-net header.
    SetVnetHdrSz,
    /// `TUNSETVNETLE`: header fields little-endian whatever the host.
    SetVnetLe,
}

fn tun_int_ioctl(fd: BorrowedFd<'_>, req: TunIntIoctl, value: libc::c_int) -> Result<(), Errno> {
    let request = match req {
        TunIntIoctl::SetVnetHdrSz => libc::TUNSETVNETHDRSZ,
        TunIntIoctl::SetVnetLe => libc::TUNSETVNETLE,
    };
    let mut value = value;
    // SAFETY: both requests read one `int` through the pointer, which points to a live
    // local for the duration of the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request, std::ptr::from_mut(&mut value)) };
    if rc < 0 { Err(last_errno()) } else { Ok(()) }
}

fn last_errno() -> Errno {
    Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO)
}

/// An `ifreq` naming `name`, every other field zero.
fn ifreq_for(name: &[libc::c_char; IFNAMSIZ]) -> libc::ifreq {
    // SAFETY: `ifreq` is a C struct (name array and a union of integers, sockaddrs and
    // a pointer) for which all-zero bytes are valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    ifr.ifr_name = *name;
    ifr
}

/// Traffic and drop counters, plain integers: the port is used by one thread at a time.
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
    rx_runt: u64,
    rx_truncated: u64,
    rx_no_buffer: u64,
    rx_error: u64,
    tx_runt: u64,
    tx_link_down: u64,
    tx_error: u64,
}

/// A tap device carrying whole Ethernet frames with a virtio-net header.
///
/// With io_uring (the default, [`TapIo`]) reads stay posted on the device into pool
/// buffers, like a NIC receive ring, and a receive call reaps what completed; transmit
/// submits one `writev` per frame for the whole batch with one `io_uring_enter` and
/// keeps each buffer until its write completes. The plain path reads frames one `read`
/// each until the device has none left or the batch is full, and writes one `writev`
/// each. Either way the header lands in the headroom and the frame starts at
/// [`HEADROOM`].
///
/// Named drop counters: `rx_runt` (shorter than an Ethernet header), `rx_truncated`
/// (larger than a pool buffer), `rx_no_buffer` (receive calls that left frames queued
/// because the pool was empty), `rx_error` (a failed read, e.g. the device went away,
/// or an io_uring read completing with an error), `tx_runt`, `tx_link_down` (the interface
/// was set down), `tx_error` (any other write error, e.g. a malformed offload header).
pub struct TapPort {
    name: String,
    ifname: String,
    /// Declared before `fd`: dropped (reads cancelled, buffers waited for) while the
    /// device is still open.
    ring: Option<uring::RingIo>,
    fd: OwnedFd,
    pool: Mempool,
    mtu: usize,
    /// A buffer taken from the pool for a read that found nothing; reused next time.
    spare: Option<PktBuf>,
    /// Offloads turned on with [`TapPort::enable_offloads`].
    offloads: Offloads,
    c: Counters,
}

impl std::fmt::Debug for TapPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapPort")
            .field("ifname", &self.ifname)
            .field("mtu", &self.mtu)
            .field("counters", &self.c)
            .finish_non_exhaustive()
    }
}

impl TapPort {
    /// Creates the tap device `ifname` (or attaches to an existing tap of that name),
    /// sets its MAC and MTU when given, and brings the link up.
    ///
    /// Needs CAP_NET_ADMIN. `pool` buffers must hold [`HEADROOM`] plus the MTU plus an
    /// Ethernet header and one VLAN tag. The device lives in the calling thread's
    /// network namespace and is removed when the port is dropped (unless it already
    /// existed as a persistent tap).
    ///
    /// I/O goes through io_uring unless `VNETP_TAP_IO=plain` ([`TapIo::from_env`]).
    pub fn create(
        ifname: &str,
        mac: Option<[u8; 6]>,
        mtu: Option<u32>,
        pool: Mempool,
    ) -> Result<Self, NicError> {
        Self::create_with_io(ifname, mac, mtu, pool, TapIo::from_env())
    }

    /// [`TapPort::create`] with the I/O path chosen by the caller.
    pub fn create_with_io(
        ifname: &str,
        mac: Option<[u8; 6]>,
        mtu: Option<u32>,
        pool: Mempool,
        io: TapIo,
    ) -> Result<Self, NicError> {
        let raw_name = ifname_to_c(ifname)?;
        if let Some(mac) = mac
            && (mac[0] & 1 != 0 || mac == [0; 6])
        {
            return Err(NicError::BadMac {
                ifname: ifname.to_owned(),
                mac: mac_text(&mac),
            });
        }
        if let Some(mtu) = mtu {
            if !MTU_RANGE.contains(&mtu) {
                return Err(NicError::BadMtu {
                    ifname: ifname.to_owned(),
                    mtu,
                });
            }
            check_pool(ifname, &pool, mtu as usize)?;
        }

        let fd = rustix::fs::open(
            "/dev/net/tun",
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|errno| match errno {
            Errno::ACCESS | Errno::PERM => NicError::TunPermission,
            Errno::NOENT | Errno::NODEV | Errno::NXIO => NicError::TunMissing,
            errno => NicError::TunOpen(errno),
        })?;

        let mut ifr = ifreq_for(&raw_name);
        ifr.ifr_ifru.ifru_flags =
            (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
        ifreq_ioctl(fd.as_fd(), IfreqIoctl::TunSetIff, &mut ifr).map_err(|errno| {
            let hint = match errno {
                Errno::PERM | Errno::ACCESS => "run as root or grant CAP_NET_ADMIN",
                Errno::BUSY => "a tap of this name is already open in another process: choose another name",
                Errno::INVAL => {
                    "an interface of this name exists and is not a tap with these flags (`ip -d link show`): choose another name"
                }
                _ => "see `dmesg` for the kernel's reason",
            };
            NicError::TapCreate { ifname: ifname.to_owned(), errno, hint }
        })?;
        let ifname = ifname_from_c(&ifr.ifr_name);
        let raw_name = ifr.ifr_name;
        let config = |what, errno| NicError::TapConfig {
            ifname: ifname.clone(),
            what,
            errno,
        };

        tun_int_ioctl(
            fd.as_fd(),
            TunIntIoctl::SetVnetHdrSz,
            VNET_HDR_LEN as libc::c_int,
        )
        .map_err(|e| config("set the virtio-net header size (TUNSETVNETHDRSZ)", e))?;
        if let Err(e) = tun_int_ioctl(fd.as_fd(), TunIntIoctl::SetVnetLe, 1) {
            // Little-endian hosts already get little-endian headers without it.
            if cfg!(target_endian = "big") {
                return Err(config(
                    "make the virtio-net header little-endian (TUNSETVNETLE)",
                    e,
                ));
            }
        }

        // Interface ioctls go through any socket; the tun fd does not take them.
        let ctl = rustix::net::socket_with(
            rustix::net::AddressFamily::INET,
            rustix::net::SocketType::DGRAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| config("open a control socket", e))?;

        if let Some(mac) = mac {
            let mut ifr = ifreq_for(&raw_name);
            // SAFETY: writing plain integers into the `ifru_hwaddr` member of a zeroed
            // union; every bit pattern is a valid `sockaddr`.
            unsafe {
                ifr.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
                for (d, s) in ifr.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac) {
                    *d = s as libc::c_char;
                }
            }
            ifreq_ioctl(ctl.as_fd(), IfreqIoctl::SetHwAddr, &mut ifr)
                .map_err(|e| config("set the MAC address (SIOCSIFHWADDR)", e))?;
        }
        if let Some(mtu) = mtu {
            let mut ifr = ifreq_for(&raw_name);
            ifr.ifr_ifru.ifru_mtu = mtu as libc::c_int;
            ifreq_ioctl(ctl.as_fd(), IfreqIoctl::SetMtu, &mut ifr)
                .map_err(|e| config("set the MTU (SIOCSIFMTU)", e))?;
        }
        let mut ifr = ifreq_for(&raw_name);
        ifreq_ioctl(ctl.as_fd(), IfreqIoctl::GetMtu, &mut ifr)
            .map_err(|e| config("read the MTU (SIOCGIFMTU)", e))?;
        // SAFETY: SIOCGIFMTU filled the `ifru_mtu` member; any int is valid.
        let mtu = unsafe { ifr.ifr_ifru.ifru_mtu }.max(0) as usize;
        check_pool(&ifname, &pool, mtu)?;

        let mut ifr = ifreq_for(&raw_name);
        ifreq_ioctl(ctl.as_fd(), IfreqIoctl::GetFlags, &mut ifr)
            .map_err(|e| config("read the interface flags (SIOCGIFFLAGS)", e))?;
        // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member; any short is valid.
        let flags = unsafe { ifr.ifr_ifru.ifru_flags };
        ifr.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        ifreq_ioctl(ctl.as_fd(), IfreqIoctl::SetFlags, &mut ifr)
            .map_err(|e| config("bring the link up (SIOCSIFFLAGS)", e))?;

        let ring = match io {
            TapIo::Plain => None,
            TapIo::Auto => Self::setup_ring(&ifname, &fd, &pool)?,
        };
        tracing::debug!(%ifname, mtu, io_uring = ring.is_some(), "tap created");
        Ok(Self {
            name: format!("tap:{ifname}"),
            ifname,
            ring,
            fd,
            pool,
            mtu,
            spare: None,
            offloads: Offloads::NONE,
            c: Counters::default(),
        })
    }

    /// The io_uring half, or `None` (logged once) when the kernel refuses io_uring.
    fn setup_ring(
        ifname: &str,
        fd: &OwnedFd,
        pool: &Mempool,
    ) -> Result<Option<uring::RingIo>, NicError> {
        // Posted reads must wait in the kernel for a frame, not fail with EAGAIN: the
        // ring owns all I/O on this fd from here on.
        let blocking = rustix::fs::fcntl_getfl(fd)
            .and_then(|fl| rustix::fs::fcntl_setfl(fd, fl - rustix::fs::OFlags::NONBLOCK));
        if let Err(errno) = blocking {
            return Err(NicError::TapConfig {
                ifname: ifname.to_owned(),
                what: "make the tap fd blocking for io_uring (F_SETFL)",
                errno,
            });
        }
        match uring::RingIo::new(fd.as_fd(), pool) {
            Ok(ring) => Ok(Some(ring)),
            Err(e) => {
                if !FALLBACK_LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::info!(
                        %ifname,
                        error = %e,
                        "io_uring unavailable: tap I/O uses one read/write per frame"
                    );
                }
                rustix::fs::fcntl_getfl(fd)
                    .and_then(|fl| rustix::fs::fcntl_setfl(fd, fl | rustix::fs::OFlags::NONBLOCK))
                    .map_err(|errno| NicError::TapConfig {
                        ifname: ifname.to_owned(),
                        what: "make the tap fd non-blocking (F_SETFL)",
                        errno,
                    })?;
                Ok(None)
            }
        }
    }

    /// The interface name (as the kernel knows it).
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The I/O path in use: [`TapIo::Auto`] when io_uring is on, else [`TapIo::Plain`].
    pub fn io(&self) -> TapIo {
        if self.ring.is_some() {
            TapIo::Auto
        } else {
            TapIo::Plain
        }
    }

    /// Turns on checksum and TCP segmentation offload (`TUNSETOFFLOAD` with
    /// `TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6`): the kernel then hands us TCP frames of up
    /// to 64 KiB with a partial checksum and a segment size in the virtio-net header,
    /// and accepts such frames from us. The pool must hold 64 KiB frames.
    pub fn enable_offloads(&mut self) -> Result<(), NicError> {
        check_pool(&self.ifname, &self.pool, 65_535)?;
        let flags = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
        // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned int of flags),
        // not through a pointer; the fd is a tun device we own.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                flags as libc::c_ulong,
            )
        };
        if rc < 0 {
            return Err(NicError::TapConfig {
                ifname: self.ifname.clone(),
                what: "enable checksum/TSO offload (TUNSETOFFLOAD)",
                errno: last_errno(),
            });
        }
        self.offloads = Offloads::TX_CSUM | Offloads::TSO4 | Offloads::TSO6;
        Ok(())
    }

    /// True when the device has a frame for us (a zero-timeout `poll`).
    fn readable(&self) -> bool {
        let mut fds = [rustix::event::PollFd::new(
            &self.fd,
            rustix::event::PollFlags::IN,
        )];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
    }
}

/// Refuses a pool whose buffers cannot hold a full frame of `mtu` plus the header.
fn check_pool(ifname: &str, pool: &Mempool, mtu: usize) -> Result<(), NicError> {
    let need = mtu + ETH_OVERHEAD;
    if pool.buf_size() < HEADROOM + need {
        return Err(NicError::PoolTooSmall {
            port: format!("tap {ifname}"),
            buf_size: pool.buf_size(),
            need,
        });
    }
    Ok(())
}

impl Port for TapPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_batch(&mut self, batch: &mut Batch) -> usize {
        if let Some(ring) = &mut self.ring {
            return ring.rx_batch(batch, &self.pool, &mut self.c);
        }
        let mut pushed = 0;
        while batch.room() > 0 {
            let Some(mut buf) = self.spare.take().or_else(|| self.pool.alloc()) else {
                if self.readable() {
                    self.c.rx_no_buffer += 1;
                }
                break;
            };
            // The header lands in the headroom, the frame at HEADROOM.
            let space = buf.reset_for_rx(HEADROOM - VNET_HDR_LEN);
            let room = space.len();
            // tun silently cuts a frame to the buffer; a byte past the buffer tells a
            // cut frame from one that fits exactly.
            let mut overflow = [0u8; 1];
            let mut iov = [IoSliceMut::new(&mut *space), IoSliceMut::new(&mut overflow)];
            let n = match rustix::io::readv(&self.fd, &mut iov) {
                Ok(n) => n,
                Err(Errno::AGAIN | Errno::INTR) => {
                    self.spare = Some(buf);
                    break;
                }
                Err(_) => {
                    self.c.rx_error += 1;
                    self.spare = Some(buf);
                    break;
                }
            };
            if n > room {
                self.c.rx_truncated += 1;
                self.spare = Some(buf);
                continue;
            }
            if n < VNET_HDR_LEN + ETH_HLEN {
                self.c.rx_runt += 1;
                self.spare = Some(buf);
                continue;
            }
            let mut hdr = [0u8; VNET_HDR_LEN];
            hdr.copy_from_slice(&space[..VNET_HDR_LEN]);
            if buf.set_len(n).is_err() || buf.strip_front(VNET_HDR_LEN).is_err() {
                self.c.rx_truncated += 1;
                self.spare = Some(buf);
                continue;
            }
            buf.meta = pkt::Meta {
                addr: None,
                offload: parse_vnet_hdr(&hdr),
                vlan: None,
            };
            let len = buf.len();
            if batch.push(buf).is_ok() {
                self.c.rx_packets += 1;
                self.c.rx_bytes += len as u64;
                pushed += 1;
            }
        }
        pushed
    }

    /// Writes frames from the front of `batch`: with io_uring one `writev` each, all
    /// submitted at once, as many as there are free write slots; on the plain path one
    /// `writev` system call each until the device would block. Frames it refuses (too
    /// short, link down, bad offload header) are removed and counted. Returns how many
    /// were written by the time it returns.
    fn tx_batch(&mut self, batch: &mut Batch) -> usize {
        if let Some(ring) = &mut self.ring {
            return ring.tx_batch(batch, &mut self.c);
        }
        let mut done = 0;
        let mut sent = 0;
        for buf in batch.iter() {
            if buf.len() < ETH_HLEN {
                self.c.tx_runt += 1;
                done += 1;
                continue;
            }
            let hdr = emit_vnet_hdr(&buf.meta.offload);
            match rustix::io::writev(&self.fd, &[IoSlice::new(&hdr), IoSlice::new(buf.data())]) {
                Ok(_) => {
                    self.c.tx_packets += 1;
                    self.c.tx_bytes += buf.len() as u64;
                    sent += 1;
                }
                Err(Errno::AGAIN | Errno::INTR | Errno::NOBUFS) => break,
                Err(Errno::IO) => self.c.tx_link_down += 1,
                Err(_) => self.c.tx_error += 1,
            }
            done += 1;
        }
        batch.consume_front(done);
        sent
    }

    fn caps(&self) -> PortCaps {
        PortCaps {
            kind: PortKind::Ethernet,
            mtu: self.mtu,
            rx_queues: 1,
            tx_queues: 1,
            offloads: self.offloads,
        }
    }

    fn stats(&self) -> PortStats {
        let c = &self.c;
        PortStats::new(
            (c.rx_packets, c.rx_bytes),
            (c.tx_packets, c.tx_bytes),
            &[
                ("rx_runt", c.rx_runt),
                ("rx_truncated", c.rx_truncated),
                ("rx_no_buffer", c.rx_no_buffer),
                ("rx_error", c.rx_error),
                ("tx_runt", c.tx_runt),
                ("tx_link_down", c.tx_link_down),
                ("tx_error", c.tx_error),
            ],
        )
    }

    fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.ring {
            Some(ring) => Some(ring.poll_fd()),
            None => Some(self.fd.as_fd()),
        }
    }

    fn clear_poll_fd(&mut self) {
        if let Some(ring) = &mut self.ring {
            ring.clear_poll_fd();
        }
    }

    fn next_deadline(&self) -> Option<std::time::Instant> {
        self.ring.as_ref().and_then(uring::RingIo::next_deadline)
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a test failing on an unexpected error is the point"
)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    const MAC: [u8; 6] = [0x02, 0x76, 0x6e, 0x74, 0x00, 0x01];
    /// IEEE 802 "local experimental" EtherType: nothing else on the tap uses it.
    const ETHERTYPE_TEST: [u8; 2] = [0x88, 0xb5];

    fn pool() -> Mempool {
        Mempool::new(64, 2048).unwrap()
    }

    /// A tap name unique to this process and test.
    fn tap_name(suffix: char) -> String {
        format!("vnt{}{suffix}", std::process::id())
    }

    /// Creates a tap, or `None` (after saying why) when this host cannot: not root, or
    /// no tun driver.
    fn create_or_skip(
        ifname: &str,
        mac: Option<[u8; 6]>,
        mtu: Option<u32>,
        pool: Mempool,
    ) -> Option<TapPort> {
        match TapPort::create(ifname, mac, mtu, pool) {
            Ok(tap) => Some(tap),
            Err(e @ (NicError::TunPermission | NicError::TunMissing)) => {
                eprintln!("skipped: {e}");
                None
            }
            Err(
                e @ NicError::TapCreate {
                    errno: Errno::PERM | Errno::ACCESS,
                    ..
                },
            ) => {
                eprintln!("skipped: {e}");
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    fn sysfs(ifname: &str, attr: &str) -> String {
        std::fs::read_to_string(format!("/sys/class/net/{ifname}/{attr}"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// A broadcast test frame with `body` after the Ethernet header.
    fn test_frame(body: &[u8]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&MAC);
        f.extend_from_slice(&ETHERTYPE_TEST);
        f.extend_from_slice(body);
        f
    }

    /// An AF_PACKET socket bound to `ifname`, seeing every frame on it both ways.
    /// Created with protocol 0, which receives nothing until `bind` names the protocol
    /// and the interface (as libpcap and our AF_PACKET port do): created with ETH_P_ALL
    /// it would queue frames of every interface until bound, another test's among them.
    fn packet_socket(ifname: &str) -> OwnedFd {
        let fd = rustix::net::socket_with(
            rustix::net::AddressFamily::PACKET,
            rustix::net::SocketType::RAW,
            rustix::net::SocketFlags::NONBLOCK | rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let index = rustix::net::netdevice::name_to_index(&fd, ifname).unwrap();
        // SAFETY: all-zero is a valid `sockaddr_ll`.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = index as i32;
        // SAFETY: `sll` is a valid `sockaddr_ll` of the length passed, alive for the call.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::from_ref(&sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "bind AF_PACKET: {}", std::io::Error::last_os_error());
        fd
    }

    /// Reads frames from `sock` until one carries the test EtherType, for up to 30 s
    /// (returns as soon as it arrives; the bound is for a starved machine).
    fn packet_recv_test_frame(sock: &OwnedFd) -> Option<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            match rustix::net::recv(sock, &mut buf[..], rustix::net::RecvFlags::empty()) {
                Ok((n, _)) if n >= ETH_HLEN && buf[12..14] == ETHERTYPE_TEST => {
                    return Some(buf[..n].to_vec());
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        None
    }

    /// Receives from `tap` until a frame with the test EtherType arrives, for up to 30 s.
    fn tap_recv_test_frame(tap: &mut TapPort) -> Option<PktBuf> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut batch = Batch::new();
        while Instant::now() < deadline {
            if tap.rx_batch(&mut batch) == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
            // IPv6 router solicitations and MLD reports show up too: skip them.
            if let Some(found) = batch
                .drain()
                .find(|b| b.data().get(12..14) == Some(&ETHERTYPE_TEST[..]))
            {
                return Some(found);
            }
        }
        None
    }

    #[test]
    fn vnet_header_is_little_endian_12_bytes() {
        let bytes = [
            0x01, 0x03, 0x36, 0x00, 0xb4, 0x05, 0x22, 0x00, 0x10, 0x00, 0x00, 0x00,
        ];
        let meta = OffloadMeta {
            flags: 1,
            gso_type: 3,
            hdr_len: 54,
            gso_size: 1460,
            csum_start: 34,
            csum_offset: 16,
        };
        assert_eq!(parse_vnet_hdr(&bytes), meta);
        assert_eq!(emit_vnet_hdr(&meta), bytes);
        let mut with_buffers = bytes;
        with_buffers[10] = 7; // num_buffers: receive-side only, not part of the metadata
        assert_eq!(parse_vnet_hdr(&with_buffers), meta);
    }

    #[test]
    fn interface_names_are_checked_like_the_kernel_does() {
        assert!(ifname_to_c("vnt0").is_ok());
        assert!(
            ifname_to_c("a23456789012345").is_ok(),
            "15 bytes is the limit"
        );
        for bad in [
            "",
            "a234567890123456",
            "a/b",
            "a b",
            "a:b",
            ".",
            "..",
            "tab\t",
        ] {
            let err = ifname_to_c(bad).unwrap_err();
            assert!(matches!(err, NicError::BadIfName { .. }), "{bad:?}");
            assert!(
                err.to_string()
                    .starts_with(&format!("invalid interface name {bad:?}: "))
            );
        }
        let raw = ifname_to_c("vnt0").unwrap();
        assert_eq!(ifname_from_c(&raw), "vnt0");
    }

    #[test]
    fn bad_mac_mtu_and_small_pool_are_refused_before_touching_the_kernel() {
        let err = TapPort::create("vnt-x", Some([0x01, 0, 0, 0, 0, 1]), None, pool()).unwrap_err();
        assert!(
            matches!(err, NicError::BadMac { .. }),
            "multicast MAC: {err}"
        );
        let err = TapPort::create("vnt-x", Some([0; 6]), None, pool()).unwrap_err();
        assert!(matches!(err, NicError::BadMac { .. }), "zero MAC: {err}");
        let err = TapPort::create("vnt-x", None, Some(67), pool()).unwrap_err();
        assert!(matches!(err, NicError::BadMtu { mtu: 67, .. }), "{err}");
        let err = TapPort::create("vnt-x", None, Some(9000), pool()).unwrap_err();
        assert!(
            matches!(err, NicError::PoolTooSmall { need: 9018, .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains(&format!("at least {} bytes", 9018 + HEADROOM)),
            "{err}"
        );
    }

    #[test]
    fn tap_appears_with_mac_mtu_and_link_up_and_vanishes_on_drop() {
        let name = tap_name('a');
        let Some(tap) = create_or_skip(&name, Some(MAC), Some(1400), pool()) else {
            return;
        };
        assert_eq!(tap.ifname(), name);
        assert_eq!(sysfs(&name, "address"), mac_text(&MAC));
        assert_eq!(sysfs(&name, "mtu"), "1400");
        let flags =
            u32::from_str_radix(sysfs(&name, "flags").trim_start_matches("0x"), 16).unwrap();
        assert_ne!(flags & libc::IFF_UP as u32, 0, "link is up");
        // tun does not report an operational state, only the carrier.
        assert_eq!(sysfs(&name, "carrier"), "1");
        assert_eq!(
            tap.caps(),
            PortCaps {
                kind: PortKind::Ethernet,
                mtu: 1400,
                rx_queues: 1,
                tx_queues: 1,
                offloads: Offloads::NONE
            }
        );
        drop(tap);
        assert!(
            !std::path::Path::new(&format!("/sys/class/net/{name}")).exists(),
            "not persistent"
        );
    }

    #[test]
    fn frame_written_by_tx_batch_reaches_the_kernel() {
        let name = tap_name('b');
        let pool = pool();
        let Some(mut tap) = create_or_skip(&name, Some(MAC), None, pool.clone()) else {
            return;
        };
        let sniffer = packet_socket(&name);
        let frame = test_frame(b"from vnetp to the kernel");
        let mut batch = Batch::new();
        let mut buf = pool.alloc().unwrap();
        buf.extend_from_slice(&frame).unwrap();
        batch.push(buf).unwrap();
        assert_eq!(tap.tx_batch(&mut batch), 1);
        assert!(batch.is_empty());
        // Our transmit is the kernel's receive on the tap.
        assert_eq!(packet_recv_test_frame(&sniffer), Some(frame.clone()));
        assert_eq!(
            sysfs(&name, "statistics/rx_packets")
                .parse::<u64>()
                .unwrap_or(0),
            1
        );
        let stats = tap.stats();
        assert_eq!((stats.tx_packets, stats.tx_bytes), (1, frame.len() as u64));
    }

    #[test]
    fn frame_sent_by_the_kernel_arrives_in_rx_batch() {
        let name = tap_name('c');
        let Some(mut tap) = create_or_skip(&name, Some(MAC), None, pool()) else {
            return;
        };
        let sender = packet_socket(&name);
        let frame = test_frame(b"from the kernel to vnetp");
        // The kernel's transmit on the tap is our receive.
        assert_eq!(
            rustix::net::send(&sender, &frame, rustix::net::SendFlags::empty()),
            Ok(frame.len())
        );
        let got = tap_recv_test_frame(&mut tap).expect("the frame should arrive");
        assert_eq!(got.data(), &frame[..]);
        assert_eq!(
            got.headroom(),
            HEADROOM,
            "the virtio-net header was stripped from the headroom"
        );
        assert_eq!(
            got.meta.offload.gso_type, 0,
            "no offloads enabled: no GSO frames"
        );
        assert_eq!(got.meta.addr, None);
        assert!(tap.stats().rx_packets >= 1);
    }

    #[test]
    fn frame_larger_than_a_pool_buffer_is_counted_truncated() {
        let name = tap_name('d');
        let Some(mut tap) = create_or_skip(&name, Some(MAC), Some(1500), pool()) else {
            return;
        };
        // Raise the MTU behind the port's back so the kernel sends a frame bigger than
        // our 2048-byte buffers.
        let ctl = rustix::net::socket(
            rustix::net::AddressFamily::INET,
            rustix::net::SocketType::DGRAM,
            None,
        )
        .unwrap();
        let mut ifr = ifreq_for(&ifname_to_c(&name).unwrap());
        ifr.ifr_ifru.ifru_mtu = 4000;
        ifreq_ioctl(ctl.as_fd(), IfreqIoctl::SetMtu, &mut ifr).unwrap();
        let sender = packet_socket(&name);
        let big = test_frame(&[0x5a; 3000]);
        let small = test_frame(b"after the big one");
        for f in [&big, &small] {
            assert_eq!(
                rustix::net::send(&sender, f, rustix::net::SendFlags::empty()),
                Ok(f.len())
            );
        }
        let got = tap_recv_test_frame(&mut tap).expect("the small frame should arrive");
        assert_eq!(got.data(), &small[..]);
        assert_eq!(tap.stats().drop_count("rx_truncated"), 1);
    }

    #[test]
    fn runt_and_malformed_frames_are_dropped_and_the_rest_sent() {
        let name = tap_name('e');
        let pool = pool();
        let Some(mut tap) = create_or_skip(&name, Some(MAC), None, pool.clone()) else {
            return;
        };
        let sniffer = packet_socket(&name);
        let mut batch = Batch::new();
        let mut runt = pool.alloc().unwrap();
        runt.extend_from_slice(&[0; 10]).unwrap();
        batch.push(runt).unwrap();
        // Asks for a checksum at an offset past the end of the frame: the kernel refuses.
        let mut bad = pool.alloc().unwrap();
        bad.extend_from_slice(&test_frame(b"bad offload")).unwrap();
        bad.meta.offload = OffloadMeta {
            flags: 1,
            csum_start: 1000,
            csum_offset: 6,
            ..OffloadMeta::default()
        };
        batch.push(bad).unwrap();
        let good_frame = test_frame(b"good");
        let mut good = pool.alloc().unwrap();
        good.extend_from_slice(&good_frame).unwrap();
        batch.push(good).unwrap();

        assert_eq!(tap.tx_batch(&mut batch), 1);
        assert!(batch.is_empty());
        let stats = tap.stats();
        assert_eq!(stats.drop_count("tx_runt"), 1);
        assert_eq!(stats.drop_count("tx_error"), 1);
        assert_eq!(packet_recv_test_frame(&sniffer), Some(good_frame));
    }

    /// A batch of test frames, each body starting with its index.
    fn numbered_batch(pool: &Mempool, n: usize) -> (Batch, Vec<Vec<u8>>) {
        let mut batch = Batch::new();
        let mut frames = Vec::new();
        for i in 0..n {
            let frame = test_frame(format!("frame {i:03}").as_bytes());
            let mut buf = pool.alloc().unwrap();
            buf.extend_from_slice(&frame).unwrap();
            batch.push(buf).unwrap();
            frames.push(frame);
        }
        (batch, frames)
    }

    /// Reads up to `n` test frames from `sock`, for two seconds.
    fn packet_recv_test_frames(sock: &OwnedFd, n: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        while got.len() < n {
            match packet_recv_test_frame(sock) {
                Some(f) => got.push(f),
                None => break,
            }
        }
        got
    }

    /// Receives test frames from `tap` until `n` arrived or 30 s passed.
    fn tap_recv_test_frames(tap: &mut TapPort, n: usize) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut got = Vec::new();
        let mut batch = Batch::new();
        while got.len() < n && Instant::now() < deadline {
            if tap.rx_batch(&mut batch) == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
            got.extend(
                batch
                    .drain()
                    .filter(|b| b.data().get(12..14) == Some(&ETHERTYPE_TEST[..]))
                    .map(|b| b.data().to_vec()),
            );
        }
        got
    }

    /// Creates a tap on the io_uring path, or `None` when this host has no tap or no
    /// io_uring (after saying why).
    fn create_uring_or_skip(ifname: &str, pool: Mempool) -> Option<TapPort> {
        let tap = create_or_skip(ifname, Some(MAC), None, pool)?;
        if tap.io() != TapIo::Auto {
            eprintln!("skipped: io_uring is not available here");
            return None;
        }
        Some(tap)
    }

    #[test]
    fn posted_reads_complete_in_order_and_resume_after_running_out_of_buffers() {
        let name = tap_name('f');
        let Some(mut tap) = create_uring_or_skip(&name, pool()) else {
            return;
        };
        let sender = packet_socket(&name);
        // More frames than receive buffers (16 with a 64-buffer pool), all sent before
        // the first receive call: the read runs out of buffers (ENOBUFS), the rest wait
        // in the tap's queue, and the read is posted again once buffers come back.
        let frames: Vec<Vec<u8>> = (0..40)
            .map(|i| test_frame(format!("to vnetp {i:03}").as_bytes()))
            .collect();
        for f in &frames {
            assert_eq!(
                rustix::net::send(&sender, f, rustix::net::SendFlags::empty()),
                Ok(f.len())
            );
        }
        assert_eq!(tap_recv_test_frames(&mut tap, frames.len()), frames);
        let stats = tap.stats();
        assert!(stats.drop_count("rx_no_buffer") >= 1, "{stats:?}");
        assert_eq!(stats.drop_count("rx_error"), 0);
        assert_eq!(stats.drop_count("rx_truncated"), 0);
    }

    #[test]
    fn one_tx_batch_is_written_in_order() {
        let name = tap_name('g');
        let pool = pool();
        let Some(mut tap) = create_uring_or_skip(&name, pool.clone()) else {
            return;
        };
        let sniffer = packet_socket(&name);
        let (mut batch, frames) = numbered_batch(&pool, 32);
        assert_eq!(tap.tx_batch(&mut batch), 32);
        assert!(batch.is_empty());
        assert_eq!(packet_recv_test_frames(&sniffer, 32), frames);
        let stats = tap.stats();
        assert_eq!(stats.tx_packets, 32);
        assert_eq!(stats.drop_count("tx_error"), 0);
    }

    #[test]
    fn frames_past_the_free_write_slots_stay_in_the_batch() {
        let name = tap_name('h');
        let pool = Mempool::new(512, 2048).unwrap();
        let Some(mut tap) = create_uring_or_skip(&name, pool.clone()) else {
            return;
        };
        // Fill every write slot without reaping: a full batch per call, and the
        // completions of earlier calls are reaped only at the start of the next one.
        let mut accepted = 0;
        let mut left = 0;
        for _ in 0..(uring::TX_SLOTS / pkt::BATCH_MAX + 1) {
            let (mut batch, _) = numbered_batch(&pool, pkt::BATCH_MAX);
            tap.tx_batch(&mut batch);
            accepted += pkt::BATCH_MAX - batch.len();
            left += batch.len();
        }
        // Writes to a tap complete during the submission, so the slots free up again;
        // whatever was not accepted is still in the caller's batch, nothing is lost.
        assert_eq!(
            accepted + left,
            (uring::TX_SLOTS / pkt::BATCH_MAX + 1) * pkt::BATCH_MAX
        );
        assert_eq!(tap.stats().tx_packets, accepted as u64);
    }

    #[test]
    fn a_write_to_a_downed_tap_is_counted_link_down() {
        let name = tap_name('i');
        let pool = pool();
        let Some(mut tap) = create_uring_or_skip(&name, pool.clone()) else {
            return;
        };
        let ctl = rustix::net::socket(
            rustix::net::AddressFamily::INET,
            rustix::net::SocketType::DGRAM,
            None,
        )
        .unwrap();
        let mut ifr = ifreq_for(&ifname_to_c(&name).unwrap());
        ifreq_ioctl(ctl.as_fd(), IfreqIoctl::GetFlags, &mut ifr).unwrap();
        // SAFETY: SIOCGIFFLAGS filled `ifru_flags`.
        let flags = unsafe { ifr.ifr_ifru.ifru_flags };
        ifr.ifr_ifru.ifru_flags = flags & !(libc::IFF_UP as libc::c_short);
        ifreq_ioctl(ctl.as_fd(), IfreqIoctl::SetFlags, &mut ifr).unwrap();
        let (mut batch, _) = numbered_batch(&pool, 3);
        assert_eq!(tap.tx_batch(&mut batch), 0);
        assert!(
            batch.is_empty(),
            "submitted: the error comes back as a completion"
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while tap.stats().drop_count("tx_link_down") < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            tap.rx_batch(&mut Batch::new());
        }
        assert_eq!(tap.stats().drop_count("tx_link_down"), 3);
        assert_eq!(tap.stats().tx_packets, 0);
    }

    #[test]
    fn dropping_the_port_with_reads_posted_returns_every_buffer() {
        let name = tap_name('j');
        let pool = pool();
        let Some(tap) = create_uring_or_skip(&name, pool.clone()) else {
            return;
        };
        assert_eq!(
            pool.available(),
            pool.capacity() - pool.capacity() / 4,
            "a quarter of a small pool is posted for reads"
        );
        drop(tap);
        assert_eq!(pool.available(), pool.capacity());
        assert!(!std::path::Path::new(&format!("/sys/class/net/{name}")).exists());
    }

    #[test]
    fn the_plain_path_still_moves_frames_when_forced() {
        let name = tap_name('k');
        let pool = pool();
        let Some(mut tap) =
            (match TapPort::create_with_io(&name, Some(MAC), None, pool.clone(), TapIo::Plain) {
                Ok(t) => Some(t),
                Err(e) => {
                    eprintln!("skipped: {e}");
                    None
                }
            })
        else {
            return;
        };
        plain_path_moves_frames(&mut tap, &name, &pool);
    }

    /// `tap` uses the read/write path and moves frames both ways.
    fn plain_path_moves_frames(tap: &mut TapPort, name: &str, pool: &Mempool) {
        assert_eq!(tap.io(), TapIo::Plain);
        assert_eq!(
            tap.poll_fd().map(|fd| fd.as_raw_fd()),
            Some(tap.fd.as_raw_fd())
        );
        let sock = packet_socket(name);
        let (mut batch, frames) = numbered_batch(pool, 4);
        assert_eq!(tap.tx_batch(&mut batch), 4);
        assert_eq!(packet_recv_test_frames(&sock, 4), frames);
        let frame = test_frame(b"plain receive");
        assert_eq!(
            rustix::net::send(&sock, &frame, rustix::net::SendFlags::empty()),
            Ok(frame.len())
        );
        assert_eq!(tap_recv_test_frames(tap, 1), vec![frame]);
    }

    /// Makes `io_uring_setup` fail with EPERM on the calling thread, as a seccomp
    /// policy (a container runtime's, say) or `kernel.io_uring_disabled` does.
    #[cfg(target_arch = "x86_64")]
    fn refuse_io_uring_on_this_thread() {
        const IO_URING_SETUP: u32 = 425;
        // Offset of `nr` in `struct seccomp_data`.
        const NR: u32 = 0;
        let stmt = |code: u16, k: u32| libc::sock_filter {
            code,
            jt: 0,
            jf: 0,
            k,
        };
        let filter = [
            stmt((libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16, NR),
            libc::sock_filter {
                code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
                jt: 0,
                jf: 1,
                k: IO_URING_SETUP,
            },
            stmt(
                (libc::BPF_RET | libc::BPF_K) as u16,
                libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
            ),
            stmt(
                (libc::BPF_RET | libc::BPF_K) as u16,
                libc::SECCOMP_RET_ALLOW,
            ),
        ];
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr().cast_mut(),
        };
        // SAFETY: plain prctl calls; `prog` and `filter` outlive the second one, which
        // copies the program into the kernel. The filter only affects this thread.
        unsafe {
            assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
            assert_eq!(
                libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &raw const prog,
                    0,
                    0
                ),
                0,
                "seccomp: {}",
                std::io::Error::last_os_error()
            );
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn a_refused_io_uring_falls_back_to_the_plain_path() {
        // On a thread of its own: the seccomp filter stays with the thread.
        std::thread::spawn(|| {
            refuse_io_uring_on_this_thread();
            let name = tap_name('m');
            let pool = pool();
            let mut tap =
                match TapPort::create_with_io(&name, Some(MAC), None, pool.clone(), TapIo::Auto) {
                    Ok(t) => t,
                    // Without root there is no tap to make; with root a refused
                    // io_uring must not be an error.
                    Err(e) if !rustix::process::geteuid().is_root() => {
                        eprintln!("skipped: {e}");
                        return;
                    }
                    Err(e) => panic!("a refused io_uring failed the tap: {e}"),
                };
            plain_path_moves_frames(&mut tap, &name, &pool);
        })
        .join()
        .expect("the fallback thread");
    }

    #[test]
    fn the_eventfd_wakes_a_poll_when_a_read_completes() {
        let name = tap_name('l');
        let Some(mut tap) = create_uring_or_skip(&name, pool()) else {
            return;
        };
        let sender = packet_socket(&name);
        // Start from a quiet eventfd (the kernel's own IPv6 frames may have woken it).
        tap.rx_batch(&mut Batch::new());
        tap.clear_poll_fd();
        let frame = test_frame(b"wake up");
        assert_eq!(
            rustix::net::send(&sender, &frame, rustix::net::SendFlags::empty()),
            Ok(frame.len())
        );
        let fd = tap.poll_fd().unwrap();
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        let thirty_s = rustix::event::Timespec {
            tv_sec: 30,
            tv_nsec: 0,
        };
        assert_eq!(rustix::event::poll(&mut fds, Some(&thirty_s)), Ok(1));
        tap.clear_poll_fd();
        assert_eq!(tap_recv_test_frames(&mut tap, 1), vec![frame]);
    }
}
