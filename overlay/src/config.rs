//! The TOML configuration of a host: parsing, validation, and errors that name the
//! file, line and column and say what was expected.
//!
//! Parsing happens in two steps. Serde reads the file into `Raw*` structs that keep
//! each value's byte span and refuse unknown keys; validation then turns them into
//! [`Config`], checking addresses, MACs, names, clashes and dangling references, and
//! pointing at the offending value when one is wrong. Nothing is applied until the
//! whole file is valid.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};

use pkt::wire::MacAddr;
use serde::Deserialize;
use toml::Spanned;

use crate::control::RouteSpec;
use crate::types::{Encap, EndpointRef, MacMatch};

/// Default UDP port of a `vnetp` link.
pub const VNETP_PORT: u16 = 9000;
/// Default UDP port of a `vxlan` link (IANA).
pub const VXLAN_PORT: u16 = 4789;
/// Largest guest MTU (VNET/P ran 64 KiB guest MTUs): a frame (MTU + 14 bytes) plus the
/// encryption overhead (28) still fits one UDP datagram over IPv4 (65507 bytes).
pub const MAX_MTU: u32 = 65_507 - 14 - 28;
/// Largest `mtu` of a vfio underlay: jumbo frames both the 82576 and the 82599 take.
pub const MAX_VFIO_MTU: u32 = 9000;

/// A configuration error with its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ConfigError {
    /// The file (as given by the user).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong and what was expected.
    pub message: String,
}

/// The validated configuration of one host.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[host]`.
    pub host: HostConfig,
    /// `[[link]]`, in file order.
    pub links: Vec<LinkConfig>,
    /// `[[interface]]`, in file order.
    pub interfaces: Vec<InterfaceConfig>,
    /// `[[route]]`, in file order.
    pub routes: Vec<RouteSpec>,
}

/// `[host]`.
#[derive(Debug, Clone, PartialEq)]
pub struct HostConfig {
    /// The host's name (logs, statistics).
    pub name: String,
    /// The underlay that carries links.
    pub underlay: UnderlayConfig,
    /// Path of the control socket, if any.
    pub control: Option<PathBuf>,
    /// Where Prometheus text metrics are served (`metrics = "127.0.0.1:9100"`).
    pub metrics: Option<SocketAddr>,
    /// Who moves packets.
    pub dispatch: Dispatch,
    /// Faults to inject on the underlay (`[host.fault]`, for tests and chaos runs).
    pub fault: Option<pkt::FaultConfig>,
    /// The VF token (a UUID, lower case) vnetp sets on its vfio PF, which a VF user
    /// (QEMU's `vf-token=`) must present; `None`: one is generated when `vf`
    /// interfaces need it.
    pub vf_token: Option<String>,
    /// Dispatcher threads (`shards = N`, 1..=[`MAX_SHARDS`], default 1): each runs its
    /// own engine and owns a share of the interfaces. Above 1 only with the UDP
    /// underlay (one `SO_REUSEPORT` socket per shard).
    pub shards: usize,
    /// The CPU each shard's thread is pinned to (`cpus = [2, 3]`, one per shard, no
    /// CPU twice); empty: not pinned.
    pub cpus: Vec<usize>,
}

/// Most dispatcher shards (`[host] shards`).
pub const MAX_SHARDS: usize = 16;

/// The underlay port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnderlayConfig {
    /// A kernel UDP socket bound to this address.
    Udp {
        /// Local address and port.
        bind: SocketAddr,
    },
    /// A raw-frame underlay (AF_XDP or AF_PACKET) on a kernel interface.
    Raw {
        /// `af_xdp` or `af_packet`.
        kind: RawKind,
        /// Kernel interface name.
        ifname: String,
        /// Our underlay IP address.
        ip: IpAddr,
        /// Our UDP port.
        port: u16,
        /// Next hop for peers off-link.
        gateway: Option<IpAddr>,
    },
    /// A NIC claimed through VFIO.
    Vfio {
        /// PCI address, `0000:01:00.0`.
        pci: String,
        /// Our underlay IP address.
        ip: IpAddr,
        /// Our UDP port.
        port: u16,
        /// Next hop for peers off-link.
        gateway: Option<IpAddr>,
        /// The NIC's L3 MTU (1500..=9000, default 1500): above 1500 it takes long
        /// frames (jumbo), so datagrams up to this size leave unfragmented. The
        /// physical network must carry them too.
        mtu: u32,
    },
}

impl UnderlayConfig {
    /// The config's name for this kind.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Udp { .. } => "udp",
            Self::Raw {
                kind: RawKind::AfXdp,
                ..
            } => "af_xdp",
            Self::Raw {
                kind: RawKind::AfPacket,
                ..
            } => "af_packet",
            Self::Vfio { .. } => "vfio",
        }
    }
}

/// Raw-frame socket kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawKind {
    /// AF_XDP.
    AfXdp,
    /// AF_PACKET.
    AfPacket,
}

/// Dispatch mode (notes/vnetp-semantics.md, "Dispatch modes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dispatch {
    /// Switch between kick-driven and polling by measured rate.
    #[default]
    Adaptive,
    /// Process on the guest's kick.
    Guest,
    /// Dedicated polling.
    Polling,
}

/// `[[link]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkConfig {
    /// Unique name.
    pub name: String,
    /// Peer underlay address.
    pub peer: SocketAddr,
    /// Encapsulation.
    pub encap: Encap,
    /// AES-256-GCM key: frames on this link are encrypted and authenticated.
    pub key: Option<crate::crypto::LinkKey>,
    /// Largest IP packet this link carries whole (default 1500). TCP frames a guest or
    /// tap hands over as one large TSO frame are cut to fit; set 65000 on both ends to
    /// carry them whole, as VNET/P did with its 64 KiB MTU.
    pub mtu: u32,
}

/// `[[interface]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    /// Unique name.
    pub name: String,
    /// What backs it.
    pub kind: InterfaceKind,
    /// The guest's (or tap's) MAC.
    pub mac: MacAddr,
    /// MTU of the guest side (default 1500).
    pub mtu: u32,
    /// Drop (and count) frames whose source MAC is not `mac` (default true).
    pub anti_spoof: bool,
    /// Tap only: let the kernel hand over and take 64 KiB TCP frames (TSO) with partial
    /// checksums (default false).
    pub offload: bool,
    /// Vhost-user only: frames from the guest at least this long leave their payload
    /// in guest memory instead of being copied (zero-copy transmit); 0 copies every
    /// frame; `None`: the port's default.
    pub zero_copy_threshold: Option<usize>,
}

/// What backs an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceKind {
    /// A kernel TAP device created by vnetp.
    Tap {
        /// Device name (defaults to the interface name).
        ifname: String,
    },
    /// A vhost-user socket vnetp listens on.
    VhostUser {
        /// Socket path.
        socket: PathBuf,
    },
    /// An SR-IOV virtual function handed to a guest.
    Vf {
        /// PCI address of the VF.
        pci: String,
        /// VLAN to tag the VF's traffic with.
        vlan: Option<u16>,
    },
}

impl InterfaceKind {
    /// The config's name for this kind.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Tap { .. } => "tap",
            Self::VhostUser { .. } => "vhost-user",
            Self::Vf { .. } => "vf",
        }
    }
}

// ---- raw (serde) layer -------------------------------------------------------------

type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    host: S<RawHost>,
    #[serde(default)]
    link: Vec<S<RawLink>>,
    #[serde(default)]
    interface: Vec<S<RawInterface>>,
    #[serde(default)]
    route: Vec<S<RawRoute>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    name: S<String>,
    underlay: S<RawUnderlay>,
    control: Option<S<String>>,
    metrics: Option<S<String>>,
    dispatch: Option<S<String>>,
    fault: Option<S<RawFault>>,
    vf_token: Option<S<String>>,
    shards: Option<S<i64>>,
    cpus: Option<S<Vec<S<i64>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    drop: Option<S<f64>>,
    duplicate: Option<S<f64>>,
    reorder: Option<S<f64>>,
    corrupt: Option<S<f64>>,
    flap_up_ms: Option<S<i64>>,
    flap_down_ms: Option<S<i64>>,
    delay_ms: Option<S<i64>>,
    jitter_ms: Option<S<i64>>,
    seed: Option<S<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnderlay {
    kind: S<String>,
    bind: Option<S<String>>,
    ifname: Option<S<String>>,
    ip: Option<S<String>>,
    port: Option<S<i64>>,
    gateway: Option<S<String>>,
    pci: Option<S<String>>,
    mtu: Option<S<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    name: S<String>,
    peer: S<String>,
    encap: Option<S<String>>,
    vni: Option<S<i64>>,
    key: Option<S<String>>,
    mtu: Option<S<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    name: S<String>,
    kind: S<String>,
    mac: S<String>,
    socket: Option<S<String>>,
    ifname: Option<S<String>>,
    pci: Option<S<String>>,
    vlan: Option<S<i64>>,
    mtu: Option<S<i64>>,
    anti_spoof: Option<S<bool>>,
    offload: Option<S<bool>>,
    zero_copy_threshold: Option<S<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    link: Option<String>,
    interface: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawFrom {
    Word(String),
    Endpoint(RawEndpoint),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    src: S<String>,
    dst: S<String>,
    to: S<RawEndpoint>,
    from: Option<S<RawFrom>>,
}

// ---- validation --------------------------------------------------------------------

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
}

impl Ctx<'_> {
    fn err(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let (line, column) = line_col(self.text, span.start);
        ConfigError {
            file: self.file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Names of links and interfaces: 1 to 64 of `[A-Za-z0-9._-]`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn valid_pci(s: &str) -> bool {
    // dddd:bb:ss.f, hex digits.
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

fn port_of(cx: &Ctx, p: &S<i64>) -> Result<u16, ConfigError> {
    u16::try_from(*p.get_ref())
        .ok()
        .filter(|&v| v != 0)
        .ok_or_else(|| {
            cx.err(
                p.span(),
                format!("expected a UDP port 1..=65535, got {}", p.get_ref()),
            )
        })
}

fn ip_of(cx: &Ctx, s: &S<String>) -> Result<IpAddr, ConfigError> {
    s.get_ref().parse().map_err(|_| {
        cx.err(
            s.span(),
            format!("expected an IPv4 or IPv6 address, got {:?}", s.get_ref()),
        )
    })
}

fn require<'r, T>(
    cx: &Ctx,
    v: &'r Option<S<T>>,
    outer: Range<usize>,
    what: &str,
) -> Result<&'r S<T>, ConfigError> {
    v.as_ref()
        .ok_or_else(|| cx.err(outer, format!("missing key `{what}`")))
}

fn forbid<T>(cx: &Ctx, v: &Option<S<T>>, key: &str, kind: &str) -> Result<(), ConfigError> {
    match v {
        Some(s) => Err(cx.err(
            s.span(),
            format!("key `{key}` does not apply to kind {kind:?}"),
        )),
        None => Ok(()),
    }
}

fn underlay(cx: &Ctx, u: &S<RawUnderlay>) -> Result<UnderlayConfig, ConfigError> {
    let r = u.get_ref();
    let kind = r.kind.get_ref().as_str();
    match kind {
        "udp" => {
            let bind = require(cx, &r.bind, u.span(), "bind")?;
            for (k, v) in [("ifname", &r.ifname), ("ip", &r.ip), ("gateway", &r.gateway), ("pci", &r.pci)] {
                forbid(cx, v, k, kind)?;
            }
            forbid(cx, &r.port, "port", kind)?;
            forbid(cx, &r.mtu, "mtu", kind)?;
            let addr = bind.get_ref().parse::<SocketAddr>().map_err(|_| {
                cx.err(bind.span(), format!("expected IP:PORT such as \"10.0.0.1:9000\" or \"[fd00::1]:9000\", got {:?}", bind.get_ref()))
            })?;
            Ok(UnderlayConfig::Udp { bind: addr })
        }
        "af_xdp" | "af_packet" | "vfio" => {
            forbid(cx, &r.bind, "bind", kind)?;
            let ip = ip_of(cx, require(cx, &r.ip, u.span(), "ip")?)?;
            let port = match &r.port {
                Some(p) => port_of(cx, p)?,
                None => VNETP_PORT,
            };
            let gateway = r.gateway.as_ref().map(|g| ip_of(cx, g)).transpose()?;
            if let Some(g) = gateway
                && g.is_ipv4() != ip.is_ipv4() {
                    let span = r.gateway.as_ref().map_or(u.span(), |g| g.span());
                    return Err(cx.err(span, "gateway must be of the same IP family as ip"));
                }
            if kind == "vfio" {
                forbid(cx, &r.ifname, "ifname", kind)?;
                let pci = require(cx, &r.pci, u.span(), "pci")?;
                if !valid_pci(pci.get_ref()) {
                    return Err(cx.err(pci.span(), format!("expected a PCI address like \"0000:01:00.0\", got {:?}", pci.get_ref())));
                }
                let mtu = match &r.mtu {
                    None => 1500,
                    Some(m) => u32::try_from(*m.get_ref())
                        .ok()
                        .filter(|v| (1500..=MAX_VFIO_MTU).contains(v))
                        .ok_or_else(|| cx.err(m.span(), format!("expected a NIC MTU 1500..={MAX_VFIO_MTU}, got {}", m.get_ref())))?,
                };
                Ok(UnderlayConfig::Vfio { pci: pci.get_ref().clone(), ip, port, gateway, mtu })
            } else {
                forbid(cx, &r.pci, "pci", kind)?;
                // The kernel owns the interface's MTU (`ip link set ... mtu`).
                forbid(cx, &r.mtu, "mtu", kind)?;
                let ifname = require(cx, &r.ifname, u.span(), "ifname")?;
                if !valid_ifname(ifname.get_ref()) {
                    return Err(cx.err(ifname.span(), format!("expected a kernel interface name (1-15 characters, no '/' or spaces), got {:?}", ifname.get_ref())));
                }
                let kind = if kind == "af_xdp" { RawKind::AfXdp } else { RawKind::AfPacket };
                Ok(UnderlayConfig::Raw { kind, ifname: ifname.get_ref().clone(), ip, port, gateway })
            }
        }
        other => Err(cx.err(
            r.kind.span(),
            format!("unknown underlay kind {other:?}: expected \"udp\", \"af_xdp\", \"af_packet\" or \"vfio\""),
        )),
    }
}

/// Kernel interface names: 1 to 15 bytes, no `/`, no whitespace, not `.`/`..`.
pub fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && !s
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

fn link(cx: &Ctx, l: &S<RawLink>) -> Result<LinkConfig, ConfigError> {
    let r = l.get_ref();
    let encap = match r.encap.as_ref().map(|e| (e.get_ref().as_str(), e.span())) {
        None | Some(("vnetp", _)) => {
            if let Some(v) = &r.vni {
                return Err(cx.err(v.span(), "`vni` applies only to encap = \"vxlan\""));
            }
            Encap::Vnetp
        }
        Some(("vxlan", _)) => {
            let vni = require(cx, &r.vni, l.span(), "vni (encap = \"vxlan\" needs a VNI)")?;
            let v = u32::try_from(*vni.get_ref())
                .ok()
                .filter(|&v| v <= 0xff_ffff)
                .ok_or_else(|| {
                    cx.err(
                        vni.span(),
                        format!("expected a VNI 0..=16777215, got {}", vni.get_ref()),
                    )
                })?;
            Encap::Vxlan { vni: v }
        }
        Some((other, span)) => {
            return Err(cx.err(
                span,
                format!("unknown encap {other:?}: expected \"vnetp\" or \"vxlan\""),
            ));
        }
    };
    let default_port = if matches!(encap, Encap::Vxlan { .. }) {
        VXLAN_PORT
    } else {
        VNETP_PORT
    };
    let text = r.peer.get_ref();
    let peer = match text.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => match text.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, default_port),
            Err(_) => {
                return Err(cx.err(
                    r.peer.span(),
                    format!("expected a peer address like \"10.0.0.2:9000\", \"[fd00::2]:9000\" or \"10.0.0.2\", got {text:?}"),
                ));
            }
        },
    };
    if peer.port() == 0 {
        return Err(cx.err(r.peer.span(), "peer port must not be 0"));
    }
    let key = match &r.key {
        None => None,
        Some(k) => {
            if encap != Encap::Vnetp {
                return Err(cx.err(
                    k.span(),
                    "`key` needs encap = \"vnetp\" (VXLAN peers expect plain VXLAN)",
                ));
            }
            let key = crate::crypto::parse_key(k.get_ref()).ok_or_else(|| {
                cx.err(
                    k.span(),
                    "expected a key of 64 hex digits (32 bytes), e.g. from `openssl rand -hex 32`",
                )
            })?;
            Some(crate::crypto::LinkKey(key))
        }
    };
    let mtu = match &r.mtu {
        None => 1500,
        Some(m) => u32::try_from(*m.get_ref())
            .ok()
            .filter(|v| (576..=65_000).contains(v))
            .ok_or_else(|| {
                cx.err(
                    m.span(),
                    format!("expected a link MTU 576..=65000, got {}", m.get_ref()),
                )
            })?,
    };
    Ok(LinkConfig {
        name: r.name.get_ref().clone(),
        peer,
        encap,
        key,
        mtu,
    })
}

fn interface(cx: &Ctx, i: &S<RawInterface>) -> Result<InterfaceConfig, ConfigError> {
    let r = i.get_ref();
    let name = r.name.get_ref().clone();
    let mac: MacAddr = r
        .mac
        .get_ref()
        .parse()
        .map_err(|e: pkt::wire::MacParseError| cx.err(r.mac.span(), e.to_string()))?;
    if mac.is_multicast() {
        return Err(cx.err(
            r.mac.span(),
            format!("{mac} is a multicast MAC: an interface needs a unicast MAC"),
        ));
    }
    let mtu = match &r.mtu {
        None => 1500,
        Some(m) => u32::try_from(*m.get_ref())
            .ok()
            .filter(|v| (68..=MAX_MTU).contains(v))
            .ok_or_else(|| {
                cx.err(
                    m.span(),
                    format!("expected an MTU 68..={MAX_MTU}, got {}", m.get_ref()),
                )
            })?,
    };
    let k = r.kind.get_ref().as_str();
    let kind = match k {
        "tap" => {
            forbid(cx, &r.socket, "socket", k)?;
            forbid(cx, &r.pci, "pci", k)?;
            forbid(cx, &r.vlan, "vlan", k)?;
            forbid(cx, &r.zero_copy_threshold, "zero_copy_threshold", k)?;
            let ifname = match &r.ifname {
                Some(s) => {
                    if !valid_ifname(s.get_ref()) {
                        return Err(cx.err(s.span(), format!("expected a kernel interface name (1-15 characters, no '/', ':' or spaces), got {:?}", s.get_ref())));
                    }
                    s.get_ref().clone()
                }
                None => {
                    if !valid_ifname(&name) {
                        return Err(cx.err(r.name.span(), format!("interface name {name:?} is not a valid kernel interface name (1-15 characters): set `ifname`")));
                    }
                    name.clone()
                }
            };
            InterfaceKind::Tap { ifname }
        }
        "vhost-user" => {
            forbid(cx, &r.ifname, "ifname", k)?;
            forbid(cx, &r.pci, "pci", k)?;
            forbid(cx, &r.vlan, "vlan", k)?;
            let s = require(cx, &r.socket, i.span(), "socket")?;
            if s.get_ref().is_empty() {
                return Err(cx.err(s.span(), "socket path must not be empty"));
            }
            InterfaceKind::VhostUser {
                socket: PathBuf::from(s.get_ref()),
            }
        }
        "vf" => {
            forbid(cx, &r.socket, "socket", k)?;
            forbid(cx, &r.ifname, "ifname", k)?;
            forbid(cx, &r.zero_copy_threshold, "zero_copy_threshold", k)?;
            let pci = require(cx, &r.pci, i.span(), "pci")?;
            if !valid_pci(pci.get_ref()) {
                return Err(cx.err(
                    pci.span(),
                    format!(
                        "expected a PCI address like \"0000:01:10.0\", got {:?}",
                        pci.get_ref()
                    ),
                ));
            }
            let vlan = match &r.vlan {
                None => None,
                Some(v) => Some(
                    u16::try_from(*v.get_ref())
                        .ok()
                        .filter(|v| (1..=4094).contains(v))
                        .ok_or_else(|| {
                            cx.err(
                                v.span(),
                                format!("expected a VLAN id 1..=4094, got {}", v.get_ref()),
                            )
                        })?,
                ),
            };
            InterfaceKind::Vf {
                pci: pci.get_ref().clone(),
                vlan,
            }
        }
        other => {
            return Err(cx.err(
                r.kind.span(),
                format!(
                    "unknown interface kind {other:?}: expected \"vhost-user\", \"tap\" or \"vf\""
                ),
            ));
        }
    };
    let anti_spoof = r.anti_spoof.as_ref().is_none_or(|a| *a.get_ref());
    let offload = r.offload.as_ref().is_some_and(|a| *a.get_ref());
    let zero_copy_threshold = match &r.zero_copy_threshold {
        None => None,
        Some(v) => Some(
            usize::try_from(*v.get_ref())
                .ok()
                .filter(|&t| t <= 65_535)
                .ok_or_else(|| {
                    cx.err(
                        v.span(),
                        format!(
                            "expected a frame length 0..=65535 (0: always copy), got {}",
                            v.get_ref()
                        ),
                    )
                })?,
        ),
    };
    Ok(InterfaceConfig {
        name,
        kind,
        mac,
        mtu,
        anti_spoof,
        offload,
        zero_copy_threshold,
    })
}

fn endpoint(cx: &Ctx, e: &RawEndpoint, span: Range<usize>) -> Result<EndpointRef, ConfigError> {
    match (&e.link, &e.interface) {
        (Some(l), None) => Ok(EndpointRef::Link(l.clone())),
        (None, Some(i)) => Ok(EndpointRef::Interface(i.clone())),
        _ => Err(cx.err(
            span,
            "expected exactly one of { link = \"NAME\" } or { interface = \"NAME\" }",
        )),
    }
}

fn mac_match(cx: &Ctx, s: &S<String>) -> Result<MacMatch, ConfigError> {
    s.get_ref().parse().map_err(|_| {
        cx.err(
            s.span(),
            format!(
                "expected a MAC (52:54:00:00:00:01), \"any\", \"none\" or \"not-<mac>\", got {:?}",
                s.get_ref()
            ),
        )
    })
}

fn route(cx: &Ctx, r: &S<RawRoute>) -> Result<(RouteSpec, [Range<usize>; 2]), ConfigError> {
    let raw = r.get_ref();
    let src = mac_match(cx, &raw.src)?;
    let dst = mac_match(cx, &raw.dst)?;
    let to = endpoint(cx, raw.to.get_ref(), raw.to.span())?;
    let (from, from_span) = match &raw.from {
        None => (None, r.span()),
        Some(f) => match f.get_ref() {
            RawFrom::Word(w) if w == "any" => (None, f.span()),
            RawFrom::Word(w) => {
                return Err(cx.err(f.span(), format!("expected \"any\", {{ link = \"NAME\" }} or {{ interface = \"NAME\" }}, got {w:?}")));
            }
            RawFrom::Endpoint(e) => (Some(endpoint(cx, e, f.span())?), f.span()),
        },
    };
    Ok((RouteSpec { src, dst, to, from }, [raw.to.span(), from_span]))
}

/// Parses and validates configuration text. `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    let cx = Ctx { file, text };
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let msg = e.message().trim().replace('\n', " ");
        cx.err(span, msg)
    })?;
    let host_r = raw.host.get_ref();
    let name = host_r.name.get_ref().clone();
    if !valid_name(&name) {
        return Err(cx.err(
            host_r.name.span(),
            format!("expected a host name of 1-64 characters [A-Za-z0-9._-], got {name:?}"),
        ));
    }
    let underlay = underlay(&cx, &host_r.underlay)?;
    let control = host_r.control.as_ref().map(|c| {
        if c.get_ref().is_empty() {
            Err(cx.err(c.span(), "control socket path must not be empty"))
        } else {
            Ok(PathBuf::from(c.get_ref()))
        }
    });
    let control = control.transpose()?;
    let metrics = match &host_r.metrics {
        None => None,
        Some(m) => Some(m.get_ref().parse::<SocketAddr>().map_err(|_| {
            cx.err(m.span(), format!("expected IP:PORT for the metrics endpoint, such as \"127.0.0.1:9100\", got {:?}", m.get_ref()))
        })?),
    };
    let fault = host_r
        .fault
        .as_ref()
        .map(|f| fault(&cx, f.get_ref()))
        .transpose()?;
    let vf_token = host_r
        .vf_token
        .as_ref()
        .map(|t| vf_token(&cx, t, &underlay))
        .transpose()?;
    let shards = match host_r.shards.as_ref() {
        None => 1,
        Some(n) => {
            let v = usize::try_from(*n.get_ref())
                .ok()
                .filter(|v| (1..=MAX_SHARDS).contains(v))
                .ok_or_else(|| {
                    cx.err(
                        n.span(),
                        format!("expected shards 1..={MAX_SHARDS}, got {}", n.get_ref()),
                    )
                })?;
            if v > 1 && !matches!(underlay, UnderlayConfig::Udp { .. }) {
                return Err(cx.err(
                    n.span(),
                    "shards > 1 needs the udp underlay (af_packet, af_xdp and vfio underlays run one shard)",
                ));
            }
            v
        }
    };
    let cpus = match host_r.cpus.as_ref() {
        None => Vec::new(),
        Some(list) => cpus(&cx, list, shards)?,
    };
    let dispatch = match host_r.dispatch.as_ref() {
        None => Dispatch::Adaptive,
        Some(d) => match d.get_ref().as_str() {
            "adaptive" => Dispatch::Adaptive,
            "guest" => Dispatch::Guest,
            "polling" => Dispatch::Polling,
            other => {
                return Err(cx.err(d.span(), format!("unknown dispatch {other:?}: expected \"adaptive\", \"guest\" or \"polling\"")));
            }
        },
    };

    let mut names: HashMap<String, &'static str> = HashMap::new();
    let mut check_name = |n: &S<String>, what: &'static str| -> Result<(), ConfigError> {
        if !valid_name(n.get_ref()) {
            return Err(cx.err(
                n.span(),
                format!(
                    "expected a {what} name of 1-64 characters [A-Za-z0-9._-], got {:?}",
                    n.get_ref()
                ),
            ));
        }
        if let Some(prev) = names.insert(n.get_ref().clone(), what) {
            return Err(cx.err(
                n.span(),
                format!("name {:?} is already used by a {prev}", n.get_ref()),
            ));
        }
        Ok(())
    };

    let mut links = Vec::new();
    let mut peers: HashSet<(SocketAddr, Option<u32>)> = HashSet::new();
    for l in &raw.link {
        check_name(&l.get_ref().name, "link")?;
        let lc = link(&cx, l)?;
        let key = match lc.encap {
            Encap::Vnetp => (lc.peer, None),
            Encap::Vxlan { vni } => (SocketAddr::new(lc.peer.ip(), 0), Some(vni)),
        };
        if !peers.insert(key) {
            return Err(cx.err(l.get_ref().peer.span(), format!("another link already uses peer {} with this encapsulation: each peer (and VNI) may have one link", lc.peer)));
        }
        if let UnderlayConfig::Udp { bind } = &underlay
            && bind.is_ipv4() != lc.peer.is_ipv4()
            && !bind.ip().is_unspecified()
        {
            return Err(cx.err(
                l.get_ref().peer.span(),
                format!(
                    "peer {} is not of the underlay's IP family ({bind})",
                    lc.peer
                ),
            ));
        }
        links.push(lc);
    }

    let mut interfaces = Vec::new();
    let mut macs = HashSet::new();
    let mut devs = HashSet::new();
    for i in &raw.interface {
        check_name(&i.get_ref().name, "interface")?;
        let ic = interface(&cx, i)?;
        if !macs.insert(ic.mac) {
            return Err(cx.err(
                i.get_ref().mac.span(),
                format!("MAC {} is already used by another interface", ic.mac),
            ));
        }
        if matches!(ic.kind, InterfaceKind::Vf { .. })
            && !matches!(underlay, UnderlayConfig::Vfio { .. })
        {
            return Err(cx.err(
                i.get_ref().kind.span(),
                "interface kind \"vf\" needs underlay kind \"vfio\": the VF belongs to the PF that vnetp claims, which sets its MAC and VLAN",
            ));
        }
        let dev = match &ic.kind {
            InterfaceKind::Tap { ifname } => format!("tap {ifname}"),
            InterfaceKind::VhostUser { socket } => format!("socket {}", socket.display()),
            InterfaceKind::Vf { pci, .. } => format!("pci {pci}"),
        };
        if !devs.insert(dev.clone()) {
            return Err(cx.err(
                i.span(),
                format!("{dev} is already used by another interface"),
            ));
        }
        interfaces.push(ic);
    }

    let mut routes = Vec::new();
    let mut seen = HashSet::new();
    for r in &raw.route {
        let (spec, [to_span, from_span]) = route(&cx, r)?;
        let exists = |e: &EndpointRef| match e {
            EndpointRef::Link(n) => links.iter().any(|l| &l.name == n),
            EndpointRef::Interface(n) => interfaces.iter().any(|i| &i.name == n),
        };
        if !exists(&spec.to) {
            return Err(cx.err(
                to_span,
                format!("route destination {} is not defined", spec.to),
            ));
        }
        let is_vf = |e: &EndpointRef| match e {
            EndpointRef::Interface(n) => interfaces
                .iter()
                .any(|i| &i.name == n && matches!(i.kind, InterfaceKind::Vf { .. })),
            EndpointRef::Link(_) => false,
        };
        if is_vf(&spec.to) || spec.from.as_ref().is_some_and(is_vf) {
            return Err(cx.err(
                r.span(),
                "routes cannot use a \"vf\" interface: the NIC switches a VF's frames in hardware, outside vnetp's routes; remove this route",
            ));
        }
        if let Some(f) = &spec.from
            && !exists(f)
        {
            return Err(cx.err(from_span, format!("route source {f} is not defined")));
        }
        if !seen.insert(spec.to_string()) {
            return Err(cx.err(r.span(), format!("duplicate route: {spec}")));
        }
        routes.push(spec);
    }
    Ok(Config {
        host: HostConfig {
            name,
            underlay,
            control,
            metrics,
            dispatch,
            fault,
            vf_token,
            shards,
            cpus,
        },
        links,
        interfaces,
        routes,
    })
}

/// Largest CPU number `cpus` accepts (the kernel's default `CPU_SETSIZE` less one).
pub const MAX_CPU: usize = 1023;

/// `cpus`: one CPU number per shard, each at most once.
fn cpus(cx: &Ctx, list: &S<Vec<S<i64>>>, shards: usize) -> Result<Vec<usize>, ConfigError> {
    let items = list.get_ref();
    if items.len() != shards {
        return Err(cx.err(
            list.span(),
            format!(
                "cpus lists {} CPU(s) for {shards} shard(s): give one per shard",
                items.len()
            ),
        ));
    }
    let mut out: Vec<usize> = Vec::with_capacity(items.len());
    for c in items {
        let n = usize::try_from(*c.get_ref())
            .ok()
            .filter(|n| *n <= MAX_CPU)
            .ok_or_else(|| {
                cx.err(
                    c.span(),
                    format!("expected a CPU number 0..={MAX_CPU}, got {}", c.get_ref()),
                )
            })?;
        if out.contains(&n) {
            return Err(cx.err(
                c.span(),
                format!("cpu {n} is listed twice: each shard needs its own CPU"),
            ));
        }
        out.push(n);
    }
    Ok(out)
}

/// `vf_token`: a UUID in the 8-4-4-4-12 hex form, only with a vfio underlay.
fn vf_token(cx: &Ctx, t: &S<String>, underlay: &UnderlayConfig) -> Result<String, ConfigError> {
    if !matches!(underlay, UnderlayConfig::Vfio { .. }) {
        return Err(cx.err(
            t.span(),
            "`vf_token` applies only to underlay kind \"vfio\": it is set on the PF vnetp claims",
        ));
    }
    let s = t.get_ref();
    let ok = s.len() == 36
        && s.bytes().enumerate().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    if !ok {
        return Err(cx.err(
            t.span(),
            format!("expected a UUID such as \"bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3\" (8-4-4-4-12 hex digits; `uuidgen` makes one), got {s:?}"),
        ));
    }
    Ok(s.to_ascii_lowercase())
}

fn fault(cx: &Ctx, f: &RawFault) -> Result<pkt::FaultConfig, ConfigError> {
    let p = |v: &Option<S<f64>>| -> Result<f64, ConfigError> {
        match v {
            None => Ok(0.0),
            Some(x) if (0.0..=1.0).contains(x.get_ref()) => Ok(*x.get_ref()),
            Some(x) => Err(cx.err(
                x.span(),
                format!("expected a probability 0.0..=1.0, got {}", x.get_ref()),
            )),
        }
    };
    let ms = |v: &Option<S<i64>>| -> Result<Option<u64>, ConfigError> {
        v.as_ref()
            .map(|x| {
                u64::try_from(*x.get_ref())
                    .map_err(|_| cx.err(x.span(), "expected milliseconds >= 0"))
            })
            .transpose()
    };
    let flap = match (ms(&f.flap_up_ms)?, ms(&f.flap_down_ms)?) {
        (None, None) => None,
        (Some(up), Some(down)) => Some((
            std::time::Duration::from_millis(up),
            std::time::Duration::from_millis(down),
        )),
        _ => {
            let span = f
                .flap_up_ms
                .as_ref()
                .or(f.flap_down_ms.as_ref())
                .map_or(0..0, |x| x.span());
            return Err(cx.err(span, "flap needs both flap_up_ms and flap_down_ms"));
        }
    };
    Ok(pkt::FaultConfig {
        drop: p(&f.drop)?,
        duplicate: p(&f.duplicate)?,
        reorder: p(&f.reorder)?,
        corrupt: p(&f.corrupt)?,
        flap,
        delay: std::time::Duration::from_millis(ms(&f.delay_ms)?.unwrap_or(0)),
        jitter: std::time::Duration::from_millis(ms(&f.jitter_ms)?.unwrap_or(0)),
        seed: f.seed.as_ref().map_or(1, |s| *s.get_ref() as u64),
    })
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: 0,
        column: 0,
        message: format!("cannot read: {e}"),
    })?;
    parse(&file, &text)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod vf_kind_tests {
    use super::*;

    const VFIO_HOST: &str = "[host]\nname = \"a\"\nunderlay = { kind = \"vfio\", pci = \"0000:01:00.0\", ip = \"10.0.0.1\" }\n\n[[interface]]\nname = \"g0\"\nkind = \"vf\"\npci = \"0000:01:10.0\"\nmac = \"52:54:00:12:34:10\"\nvlan = 100\n";

    #[test]
    fn vf_interface_on_a_vfio_underlay_parses_with_mac_and_vlan() {
        let c = parse("h.toml", VFIO_HOST).expect("parses");
        assert_eq!(
            c.interfaces[0].kind,
            InterfaceKind::Vf {
                pci: "0000:01:10.0".into(),
                vlan: Some(100)
            }
        );
    }

    #[test]
    fn vf_interface_needs_a_vfio_underlay_and_no_routes() {
        let udp = VFIO_HOST.replace(
            "{ kind = \"vfio\", pci = \"0000:01:00.0\", ip = \"10.0.0.1\" }",
            "{ kind = \"udp\", bind = \"10.0.0.1:9000\" }",
        );
        let e = parse("h.toml", &udp).expect_err("udp underlay");
        assert!(
            e.to_string().contains("needs underlay kind \"vfio\""),
            "{e}"
        );
        let routed = format!(
            "{VFIO_HOST}\n[[route]]\nsrc = \"any\"\ndst = \"any\"\nto = {{ interface = \"g0\" }}\n"
        );
        let e = parse("h.toml", &routed).expect_err("route to a VF");
        assert!(
            e.to_string()
                .contains("routes cannot use a \"vf\" interface"),
            "{e}"
        );
    }
}

#[cfg(test)]
mod vf_token_tests {
    use super::*;

    fn host(extra: &str, underlay: &str) -> String {
        format!("[host]\nname = \"h\"\nunderlay = {underlay}\n{extra}\n")
    }
    const VFIO: &str = "{ kind = \"vfio\", pci = \"0000:01:00.0\", ip = \"10.0.0.1\" }";

    #[test]
    fn vf_token_on_a_vfio_host_is_kept_in_lower_case() {
        let c = parse(
            "h.toml",
            &host("vf_token = \"BD8D9D2B-5A5F-4F5A-A211-F591514BA1F3\"", VFIO),
        )
        .unwrap();
        assert_eq!(
            c.host.vf_token.as_deref(),
            Some("bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3")
        );
        assert_eq!(
            parse("h.toml", &host("", VFIO)).unwrap().host.vf_token,
            None
        );
    }

    #[test]
    fn bad_vf_token_is_refused_at_its_line_and_column() {
        let e = parse(
            "h.toml",
            &host("vf_token = \"bd8d9d2b-5a5f-4f5a-a211\"", VFIO),
        )
        .unwrap_err();
        assert_eq!((e.line, e.column), (4, 12), "{e}");
        assert!(e.message.contains("8-4-4-4-12"), "{e}");
        let e = parse(
            "h.toml",
            &host(
                "vf_token = \"bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3\"",
                "{ kind = \"udp\", bind = \"10.0.0.1:9000\" }",
            ),
        )
        .unwrap_err();
        assert!(e.message.contains("only to underlay kind \"vfio\""), "{e}");
        assert_eq!(e.to_string().split(':').next(), Some("h.toml"));
    }
}
