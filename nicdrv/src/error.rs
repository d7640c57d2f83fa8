//! [`NicError`]: why a port could not be opened, phrased so the user knows what to do.

use std::net::SocketAddr;

use rustix::io::Errno;

/// Errors of opening and configuring underlay and host ports.
///
/// Runtime per-packet failures are never errors: they are named drop counters in
/// [`pkt::PortStats`].
#[derive(Debug, thiserror::Error)]
pub enum NicError {
    /// The kernel refused to create a socket.
    #[error(
        "cannot create a UDP socket for {addr}: {errno} (is IPv6 disabled, or the open-file limit reached?)"
    )]
    Socket {
        /// The address the socket was for.
        addr: SocketAddr,
        /// The kernel's error.
        errno: Errno,
    },
    /// The kernel refused UDP GRO.
    #[error(
        "UDP socket {addr}: cannot enable UDP GRO: {errno}: it needs Linux 5.0 or later; open the port without GRO"
    )]
    Gro {
        /// The socket's address.
        addr: SocketAddr,
        /// The kernel's error.
        errno: Errno,
    },
    /// Another socket holds the address.
    #[error(
        "bind {addr}: address in use: stop the process holding it (`ss -ulpn`) or choose another port"
    )]
    AddrInUse {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The address is not configured on this host.
    #[error(
        "bind {addr}: address not available: use an IP address configured on a local interface (`ip addr`) or the unspecified address"
    )]
    AddrNotAvailable {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// A privileged port without the privilege.
    #[error("bind {addr}: permission denied: ports below 1024 need root or CAP_NET_BIND_SERVICE")]
    BindPermission {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// Any other bind failure.
    #[error("bind {addr}: {errno}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The kernel's error.
        errno: Errno,
    },
    /// The pool's buffers cannot hold what the port must receive.
    #[error("{port}: packet pool buffers of {buf_size} bytes cannot hold {need} bytes of frame after the {headroom}-byte headroom: create the pool with buffers of at least {min} bytes, or lower the MTU", headroom = pkt::HEADROOM, min = need + pkt::HEADROOM)]
    PoolTooSmall {
        /// The port being opened.
        port: String,
        /// The pool's buffer size.
        buf_size: usize,
        /// Largest frame the port must hold.
        need: usize,
    },
    /// `/dev/net/tun` exists but we may not use it.
    #[error("cannot open /dev/net/tun: run as root or grant CAP_NET_ADMIN")]
    TunPermission,
    /// No tun driver.
    #[error(
        "cannot open /dev/net/tun: the tun driver is missing: load it (`modprobe tun`) or create the node (`mknod /dev/net/tun c 10 200`)"
    )]
    TunMissing,
    /// Any other failure opening `/dev/net/tun`.
    #[error("cannot open /dev/net/tun: {0}")]
    TunOpen(Errno),
    /// The interface name is not one Linux accepts.
    #[error("invalid interface name {name:?}: {reason}")]
    BadIfName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The MAC address cannot be an interface's address.
    #[error(
        "tap {ifname}: MAC {mac} is not a unicast address: use a non-zero address whose first byte is even (e.g. 52:54:00:..)"
    )]
    BadMac {
        /// The interface.
        ifname: String,
        /// The MAC, as text.
        mac: String,
    },
    /// The MTU is outside what a tap accepts.
    #[error("tap {ifname}: MTU {mtu} is out of range: use 68..=65535")]
    BadMtu {
        /// The interface.
        ifname: String,
        /// The MTU asked for.
        mtu: u32,
    },
    /// TUNSETIFF failed.
    #[error("create tap {ifname}: {errno}: {hint}")]
    TapCreate {
        /// The interface.
        ifname: String,
        /// The kernel's error.
        errno: Errno,
        /// What to do about it.
        hint: &'static str,
    },
    /// A configuration ioctl on a tap failed.
    #[error("tap {ifname}: cannot {what}: {errno}")]
    TapConfig {
        /// The interface.
        ifname: String,
        /// The step that failed.
        what: &'static str,
        /// The kernel's error.
        errno: Errno,
    },
}
