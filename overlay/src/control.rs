//! The control-socket command language: one untrusted text line in, one [`Command`] out.
//!
//! Two syntaxes are accepted on the same socket.
//!
//! Ours (lowercase keywords):
//!
//! ```text
//! link add NAME PEER [encap vnetp|vxlan] [vni N]
//! link del NAME
//! link list
//! route add src=MAC dst=MAC to=link:NAME|interface:NAME [from=any|link:NAME|interface:NAME]
//! route del src=MAC dst=MAC to=... [from=...]
//! route list
//! interface list
//! stats [json]
//! capture link:NAME|interface:NAME /abs/file.pcap [count N] [timeout SECS]
//! reload
//! help
//! ```
//!
//! VNET/P's text lines, for existing scripts:
//!
//! ```text
//! ADD <peer-ip> <port> udp                                       (a vnetp link named <ip>:<port>)
//! DEL <peer-ip> <port> udp
//! add <src-mac> <dst-mac> <dst-type> <dst-id> <src-type> [<src-id>]
//! del <src-mac> <dst-mac> <dst-type> <dst-id> <src-type> [<src-id>]
//! ```
//!
//! where a MAC is `any`, `none`, `not-<mac>` or a literal `52:54:00:12:34:56`, a
//! dst-type is `interface` or `edge` (a link) followed by its name, and a src-type is
//! `interface NAME`, `edge NAME` or `any`.
//!
//! A blank line, or one whose first non-blank character is `#`, parses as
//! [`Command::Nop`] so that a script can be piped into the socket unchanged; a `#`
//! after a command is not a comment (it is an extra, invalid argument). Lines longer
//! than [`MAX_LINE_LEN`] bytes are refused before they are looked at. Errors name the
//! command, the argument, what was expected and the offending token.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::SplitAsciiWhitespace;

use crate::types::{Encap, EndpointRef, MacMatch};

/// Longest accepted command line, in bytes, not counting a trailing `\n` or `\r\n`.
pub const MAX_LINE_LEN: usize = 4096;
/// Longest link or interface name, in characters.
pub const MAX_NAME_LEN: usize = 64;
/// UDP port of a vnetp link when the peer address has none.
pub const VNETP_DEFAULT_PORT: u16 = 9000;
/// UDP port of a vxlan link when the peer address has none (RFC 7348).
pub const VXLAN_DEFAULT_PORT: u16 = 4789;
/// Largest VXLAN network identifier (24 bits).
pub const MAX_VNI: u32 = 0x00ff_ffff;

/// The reply to `help`: every command the parser accepts.
pub const HELP: &str = "\
link add NAME PEER [encap vnetp|vxlan] [vni N]   PEER: 10.0.0.2[:9000] or fd00::2 / [fd00::2]:9000
link del NAME
link list
route add src=MAC dst=MAC to=link:NAME|interface:NAME [from=any|link:NAME|interface:NAME]
route del src=MAC dst=MAC to=... [from=...]      MAC: any, none, not-<mac> or 52:54:00:12:34:56
route list
interface list
interface add NAME tap MAC [mtu N] [ifname IF] [offload] | interface add NAME vhost-user MAC /SOCKET
interface del NAME
stats [json]
capture link:NAME|interface:NAME /abs/file.pcap [count N] [timeout SECS]
reload                                           re-read the config file, apply the difference
help
VNET/P syntax:
ADD <peer-ip> <port> udp | DEL <peer-ip> <port> udp
add|del <src-mac> <dst-mac> interface|edge <dst-id> interface <id>|edge <id>|any
";

/// One parsed control command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A blank line or a `#` comment: nothing to do.
    Nop,
    /// `link add` / VNET/P `ADD`: create a link to a peer host.
    LinkAdd {
        /// The link's name, used by routes (`to=link:NAME`).
        name: String,
        /// The peer's underlay address (default port filled in).
        peer: SocketAddr,
        /// The encapsulation on the wire.
        encap: Encap,
    },
    /// `link del` / VNET/P `DEL`: delete a link by name.
    LinkDel {
        /// The link's name.
        name: String,
    },
    /// `link list`.
    LinkList,
    /// `route add` / VNET/P `add`.
    RouteAdd(RouteSpec),
    /// `route del` / VNET/P `del`.
    RouteDel(RouteSpec),
    /// `route list`.
    RouteList,
    /// `interface list`.
    InterfaceList,
    /// `interface add NAME tap MAC [mtu N] [ifname IF] [offload]` or
    /// `interface add NAME vhost-user MAC SOCKET [mtu N]`.
    InterfaceAdd(crate::config::InterfaceConfig),
    /// `interface del NAME`.
    InterfaceDel {
        /// The interface.
        name: String,
    },
    /// `stats` (text) or `stats json`.
    Stats {
        /// Reply in JSON rather than text.
        json: bool,
    },
    /// `help`: reply with [`HELP`].
    Help,
    /// `capture ENDPOINT FILE [count N] [timeout SECS]`: write the next N frames
    /// seen at an endpoint (both directions, as guest Ethernet frames) to a pcap file.
    Capture {
        /// Where to capture.
        endpoint: EndpointRef,
        /// Absolute path of the pcap file the daemon writes.
        path: std::path::PathBuf,
        /// Frames to capture (1..=100000, default 100).
        count: u32,
        /// Give up after this many seconds (1..=3600, default 10).
        timeout_secs: u32,
    },
    /// `reload`: re-read the daemon's configuration file and apply the difference.
    Reload,
}

impl fmt::Display for Command {
    /// Our syntax, which [`parse_command`] reads back to the same command
    /// (`Nop` prints as an empty line).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Nop => Ok(()),
            Self::LinkAdd { name, peer, encap } => {
                write!(f, "link add {name} {peer} encap {encap}")
            }
            Self::LinkDel { name } => write!(f, "link del {name}"),
            Self::LinkList => f.write_str("link list"),
            Self::RouteAdd(spec) => write!(f, "route add {spec}"),
            Self::RouteDel(spec) => write!(f, "route del {spec}"),
            Self::RouteList => f.write_str("route list"),
            Self::InterfaceList => f.write_str("interface list"),
            Self::InterfaceAdd(c) => {
                write!(
                    f,
                    "interface add {} {} {}",
                    c.name,
                    c.kind.kind_name(),
                    c.mac
                )?;
                match &c.kind {
                    crate::config::InterfaceKind::VhostUser { socket } => {
                        write!(f, " {}", socket.display())?
                    }
                    crate::config::InterfaceKind::Tap { ifname } if ifname != &c.name => {
                        write!(f, " ifname {ifname}")?
                    }
                    _ => {}
                }
                if c.mtu != 1500 {
                    write!(f, " mtu {}", c.mtu)?;
                }
                if c.offload {
                    f.write_str(" offload")?;
                }
                Ok(())
            }
            Self::InterfaceDel { name } => write!(f, "interface del {name}"),
            Self::Stats { json: false } => f.write_str("stats"),
            Self::Stats { json: true } => f.write_str("stats json"),
            Self::Help => f.write_str("help"),
            Self::Capture {
                endpoint,
                path,
                count,
                timeout_secs,
            } => {
                write!(
                    f,
                    "capture {endpoint} {} count {count} timeout {timeout_secs}",
                    path.display()
                )
            }
            Self::Reload => f.write_str("reload"),
        }
    }
}

/// A route as the user names it: endpoints by name, resolved later by the engine.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteSpec {
    /// Qualifier for the frame's source MAC.
    pub src: MacMatch,
    /// Qualifier for the frame's destination MAC.
    pub dst: MacMatch,
    /// Where matching frames go.
    pub to: EndpointRef,
    /// The arrival endpoint the route is limited to; `None` is any.
    pub from: Option<EndpointRef>,
}

impl fmt::Display for RouteSpec {
    /// `src=.. dst=.. to=link:NAME from=any`: the arguments of `route add`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "src={} dst={} to={}", self.src, self.dst, self.to)?;
        match &self.from {
            Some(from) => write!(f, " from={from}"),
            None => f.write_str(" from=any"),
        }
    }
}

/// Why a control line was refused. Tokens are quoted as typed (cut after 100
/// characters), so the reply can be shown to the user as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlParseError {
    /// The line is longer than [`MAX_LINE_LEN`].
    #[error("line too long: {len} bytes, the limit is {MAX_LINE_LEN}")]
    TooLong {
        /// The line's length in bytes.
        len: usize,
    },
    /// The first word is no command.
    #[error(
        "unknown command {token:?}: expected link, route, interface, stats, help, \
         or VNET/P's ADD, DEL, add, del (try help)"
    )]
    UnknownCommand {
        /// The first word of the line.
        token: String,
    },
    /// The line ended before a required argument.
    #[error("{command}: missing {expected}")]
    Missing {
        /// The command being parsed (`link add`, `ADD`, ...).
        command: &'static str,
        /// What should have come next.
        expected: &'static str,
    },
    /// An argument after the last one the command takes.
    #[error("{command}: unexpected extra argument {token:?}")]
    Extra {
        /// The command being parsed.
        command: &'static str,
        /// The first extra token.
        token: String,
    },
    /// An argument that does not parse.
    #[error("{command}: {what}: expected {expected}, got {token:?}")]
    Invalid {
        /// The command being parsed.
        command: &'static str,
        /// Which argument (`src`, `peer`, `vni`, ...).
        what: &'static str,
        /// What it should look like.
        expected: &'static str,
        /// The token as given.
        token: String,
    },
    /// An option or key given twice.
    #[error("{command}: {what} given more than once")]
    Repeated {
        /// The command being parsed.
        command: &'static str,
        /// The option or key.
        what: &'static str,
    },
    /// Arguments that are fine alone but not together.
    #[error("{command}: {reason}")]
    Inconsistent {
        /// The command being parsed.
        command: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

type Result<T> = std::result::Result<T, ControlParseError>;

const EXPECT_MAC: &str = "a MAC, any, none or not-<mac>";
const EXPECT_MAC_NOT_KEYWORD: &str = "a MAC, any, none or not-<mac> (this is VNET/P's route line; ours is `link add` or `route add`)";
const EXPECT_NAME: &str = "a name of 1 to 64 characters from A-Z a-z 0-9 . _ : [ ] -";
const EXPECT_ENDPOINT: &str = "link:NAME or interface:NAME";
const EXPECT_FROM: &str = "any, link:NAME or interface:NAME";
const EXPECT_PEER: &str = "an address like 10.0.0.2, 10.0.0.2:9000, fd00::2 or [fd00::2]:9000";
const EXPECT_IP: &str = "an IP address like 10.0.0.2 or fd00::2";
const EXPECT_PORT: &str = "a port in 1..=65535";
const EXPECT_VNI: &str = "a VNI in 0..=16777215";

/// Longest token quoted back in an error, in characters.
const SHOWN_MAX: usize = 100;

/// A token for an error message, cut to [`SHOWN_MAX`] characters.
fn shown(token: &str) -> String {
    match token.char_indices().nth(SHOWN_MAX) {
        Some((cut, _)) => format!("{}...", &token[..cut]),
        None => token.to_string(),
    }
}

/// True for a valid link or interface name: 1 to [`MAX_NAME_LEN`] characters from
/// `A-Z a-z 0-9 . _ : [ ] -` (enough for VNET/P's `10.0.0.2:9000` and
/// `[fd00::2]:9000` link names).
pub fn is_valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'[' | b']' | b'-')
        })
}

/// The remaining words of a line, and the command they belong to (for errors).
struct Args<'a> {
    command: &'static str,
    tokens: SplitAsciiWhitespace<'a>,
}

impl<'a> Args<'a> {
    /// The same words, now parsed as `command`.
    fn within(self, command: &'static str) -> Self {
        Self { command, ..self }
    }

    fn next(&mut self) -> Option<&'a str> {
        self.tokens.next()
    }

    fn required(&mut self, expected: &'static str) -> Result<&'a str> {
        self.tokens.next().ok_or(ControlParseError::Missing {
            command: self.command,
            expected,
        })
    }

    /// Fails if any word is left.
    fn finish(mut self) -> Result<()> {
        match self.tokens.next() {
            Some(token) => Err(ControlParseError::Extra {
                command: self.command,
                token: shown(token),
            }),
            None => Ok(()),
        }
    }

    fn invalid(
        &self,
        what: &'static str,
        expected: &'static str,
        token: &str,
    ) -> ControlParseError {
        ControlParseError::Invalid {
            command: self.command,
            what,
            expected,
            token: shown(token),
        }
    }

    fn repeated(&self, what: &'static str) -> ControlParseError {
        ControlParseError::Repeated {
            command: self.command,
            what,
        }
    }

    fn inconsistent(&self, reason: &'static str) -> ControlParseError {
        ControlParseError::Inconsistent {
            command: self.command,
            reason,
        }
    }

    fn name(&self, what: &'static str, token: &str) -> Result<String> {
        if is_valid_name(token) {
            Ok(token.to_string())
        } else {
            Err(self.invalid(what, EXPECT_NAME, token))
        }
    }

    /// The next word, which must be a valid name.
    fn next_name(&mut self, what: &'static str, missing: &'static str) -> Result<String> {
        let token = self.required(missing)?;
        self.name(what, token)
    }

    /// The next word, which must be a MAC qualifier.
    fn next_mac(&mut self, what: &'static str, missing: &'static str) -> Result<MacMatch> {
        let token = self.required(missing)?;
        self.mac(what, token)
    }

    fn mac(&self, what: &'static str, token: &str) -> Result<MacMatch> {
        token
            .parse()
            .map_err(|_| self.invalid(what, EXPECT_MAC, token))
    }

    /// `link:NAME`, `edge:NAME` or `interface:NAME`.
    fn endpoint(
        &self,
        what: &'static str,
        expected: &'static str,
        token: &str,
    ) -> Result<EndpointRef> {
        match token.split_once(':') {
            Some(("link" | "edge", name)) => Ok(EndpointRef::Link(self.name(what, name)?)),
            Some(("interface", name)) => Ok(EndpointRef::Interface(self.name(what, name)?)),
            _ => Err(self.invalid(what, expected, token)),
        }
    }

    /// A decimal number of at most `max`, digits only.
    fn number(
        &self,
        what: &'static str,
        expected: &'static str,
        token: &str,
        min: u32,
        max: u32,
    ) -> Result<u32> {
        let err = || self.invalid(what, expected, token);
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        token
            .parse::<u32>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(err)
    }

    fn port(&self, token: &str) -> Result<u16> {
        let n = self.number("port", EXPECT_PORT, token, 1, u32::from(u16::MAX))?;
        u16::try_from(n).map_err(|_| self.invalid("port", EXPECT_PORT, token))
    }

    /// An IP address, IPv6 optionally in brackets; never the unspecified address.
    fn ip(&self, what: &'static str, expected: &'static str, token: &str) -> Result<IpAddr> {
        let ip = match token.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            Some(inner) => inner.parse::<Ipv6Addr>().map(IpAddr::V6),
            None => token.parse::<IpAddr>(),
        }
        .map_err(|_| self.invalid(what, expected, token))?;
        if ip.is_unspecified() {
            return Err(self.invalid(what, "a peer address other than 0.0.0.0 or ::", token));
        }
        Ok(ip)
    }

    /// A peer: a socket address, or an IP that gets `default_port`.
    fn peer(&self, token: &str, default_port: u16) -> Result<SocketAddr> {
        let peer = match token.parse::<SocketAddr>() {
            Ok(sa) => sa,
            Err(_) => SocketAddr::new(self.ip("peer", EXPECT_PEER, token)?, default_port),
        };
        if peer.port() == 0 {
            return Err(self.invalid("peer", "a peer port in 1..=65535", token));
        }
        if peer.ip().is_unspecified() {
            return Err(self.invalid("peer", "a peer address other than 0.0.0.0 or ::", token));
        }
        Ok(peer)
    }
}

/// Parses one control line (see the module documentation for the syntax).
/// A trailing `\n` or `\r\n` is ignored.
pub fn parse_command(line: &str) -> Result<Command> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.len() > MAX_LINE_LEN {
        return Err(ControlParseError::TooLong { len: line.len() });
    }
    let line = line.trim_ascii();
    if line.is_empty() || line.starts_with('#') {
        return Ok(Command::Nop);
    }
    let mut args = Args {
        command: "",
        tokens: line.split_ascii_whitespace(),
    };
    let Some(first) = args.next() else {
        return Ok(Command::Nop);
    };
    match first {
        "link" => link(args.within("link")),
        "route" => route(args.within("route")),
        "interface" => {
            let mut args = args.within("interface");
            match args.required("add, del or list")? {
                "list" => args
                    .within("interface list")
                    .finish()
                    .map(|()| Command::InterfaceList),
                "add" => interface_add(args.within("interface add")),
                "del" => {
                    let mut args = args.within("interface del");
                    let name = args.next_name("name", "the interface name")?;
                    args.finish().map(|()| Command::InterfaceDel { name })
                }
                other => Err(args.invalid("subcommand", "add, del or list", other)),
            }
        }
        "stats" => {
            let mut args = args.within("stats");
            let json = match args.next() {
                None => false,
                Some("json") => true,
                Some(other) => return Err(args.invalid("format", "json or nothing", other)),
            };
            args.finish().map(|()| Command::Stats { json })
        }
        "help" => args.within("help").finish().map(|()| Command::Help),
        "reload" => args.within("reload").finish().map(|()| Command::Reload),
        "capture" => capture(args.within("capture")),
        "ADD" => {
            let (name, peer) = vnetp_link(args.within("ADD"))?;
            Ok(Command::LinkAdd {
                name,
                peer,
                encap: Encap::Vnetp,
            })
        }
        "DEL" => vnetp_link(args.within("DEL")).map(|(name, _)| Command::LinkDel { name }),
        "add" => vnetp_route(args.within("add")).map(Command::RouteAdd),
        "del" => vnetp_route(args.within("del")).map(Command::RouteDel),
        other => Err(ControlParseError::UnknownCommand {
            token: shown(other),
        }),
    }
}

/// `interface add NAME tap|vhost-user MAC [SOCKET] [mtu N] [ifname IF] [offload]`.
fn interface_add(mut args: Args<'_>) -> Result<Command> {
    use crate::config::{InterfaceConfig, InterfaceKind, MAX_MTU, valid_ifname};
    let name = args.next_name("name", "the interface name")?;
    let kind = args.required("tap or vhost-user")?;
    let mac_token = args.required("the interface's MAC")?;
    let mac: pkt::wire::MacAddr = mac_token
        .parse()
        .map_err(|_| args.invalid("mac", "a unicast MAC like 52:54:00:00:00:01", mac_token))?;
    if mac.is_multicast() || mac == pkt::wire::MacAddr::ZERO {
        return Err(args.invalid("mac", "a unicast MAC like 52:54:00:00:00:01", mac_token));
    }
    let mut kind = match kind {
        "tap" => {
            if !valid_ifname(&name) {
                InterfaceKind::Tap {
                    ifname: String::new(),
                }
            } else {
                InterfaceKind::Tap {
                    ifname: name.clone(),
                }
            }
        }
        "vhost-user" => {
            let socket = args.required("the vhost-user socket path")?;
            if !socket.starts_with('/') {
                return Err(args.invalid("socket", "an absolute socket path", socket));
            }
            InterfaceKind::VhostUser {
                socket: socket.into(),
            }
        }
        other => return Err(args.invalid("kind", "tap or vhost-user", other)),
    };
    let (mut mtu, mut offload) = (None, false);
    while let Some(key) = args.next() {
        match key {
            "mtu" => {
                let v = args.required("an MTU")?;
                let n = args.number("mtu", "an MTU 68..=65465", v, 68, MAX_MTU)?;
                set_once(&args, &mut mtu, "mtu", n)?;
            }
            "ifname" => {
                let v = args.required("a kernel interface name")?;
                match &mut kind {
                    InterfaceKind::Tap { ifname } if valid_ifname(v) => *ifname = v.to_string(),
                    _ => {
                        return Err(args.invalid(
                            "ifname",
                            "a kernel interface name (tap only, 1-15 characters)",
                            v,
                        ));
                    }
                }
            }
            "offload" if matches!(kind, InterfaceKind::Tap { .. }) => offload = true,
            other => return Err(args.invalid("option", "mtu N, ifname IF or offload", other)),
        }
    }
    if matches!(&kind, InterfaceKind::Tap { ifname } if ifname.is_empty()) {
        return Err(args.invalid(
            "name",
            "a name that is a valid kernel interface name, or an ifname option",
            &name,
        ));
    }
    Ok(Command::InterfaceAdd(InterfaceConfig {
        name,
        kind,
        mac,
        mtu: mtu.unwrap_or(1500),
        anti_spoof: true,
        offload,
        zero_copy_threshold: None,
    }))
}

/// `capture ENDPOINT FILE [count N] [timeout SECS]`.
fn capture(mut args: Args<'_>) -> Result<Command> {
    const EXPECT_EP: &str = "link:NAME or interface:NAME";
    let ep = args.required(EXPECT_EP)?;
    let endpoint = args.endpoint("endpoint", EXPECT_EP, ep)?;
    let file = args.required("an absolute path for the pcap file")?;
    if !file.starts_with('/') || file.len() > 1024 {
        return Err(args.invalid("file", "an absolute path for the pcap file", file));
    }
    let (mut count, mut timeout) = (None, None);
    while let Some(key) = args.next() {
        match key {
            "count" => {
                let v = args.required("a frame count")?;
                let n = args.number("count", "a frame count 1..=100000", v, 1, 100_000)?;
                set_once(&args, &mut count, "count", n)?;
            }
            "timeout" => {
                let v = args.required("seconds")?;
                let n = args.number("timeout", "seconds 1..=3600", v, 1, 3600)?;
                set_once(&args, &mut timeout, "timeout", n)?;
            }
            other => return Err(args.invalid("option", "count N or timeout SECS", other)),
        }
    }
    Ok(Command::Capture {
        endpoint,
        path: std::path::PathBuf::from(file),
        count: count.unwrap_or(100),
        timeout_secs: timeout.unwrap_or(10),
    })
}

/// `link add|del|list ...`.
fn link(mut args: Args<'_>) -> Result<Command> {
    match args.required("add, del or list")? {
        "add" => link_add(args.within("link add")),
        "del" => {
            let mut args = args.within("link del");
            let name = args.next_name("name", "the link name")?;
            args.finish().map(|()| Command::LinkDel { name })
        }
        "list" => args
            .within("link list")
            .finish()
            .map(|()| Command::LinkList),
        other => Err(args.invalid("subcommand", "add, del or list", other)),
    }
}

/// `link add NAME PEER [encap vnetp|vxlan] [vni N]` (options in any order).
fn link_add(mut args: Args<'_>) -> Result<Command> {
    let name = args.next_name("name", "the link name")?;
    let peer = args.required("the peer address")?;
    let mut vxlan: Option<bool> = None;
    let mut vni: Option<u32> = None;
    while let Some(option) = args.next() {
        match option {
            "encap" => {
                if vxlan.is_some() {
                    return Err(args.repeated("encap"));
                }
                vxlan = Some(match args.required("vnetp or vxlan after encap")? {
                    "vnetp" => false,
                    "vxlan" => true,
                    other => return Err(args.invalid("encap", "vnetp or vxlan", other)),
                });
            }
            "vni" => {
                if vni.is_some() {
                    return Err(args.repeated("vni"));
                }
                let token = args.required("a number after vni")?;
                vni = Some(args.number("vni", EXPECT_VNI, token, 0, MAX_VNI)?);
            }
            other => return Err(args.invalid("option", "encap or vni", other)),
        }
    }
    let (encap, default_port) = match (vxlan.unwrap_or(false), vni) {
        (false, None) => (Encap::Vnetp, VNETP_DEFAULT_PORT),
        (false, Some(_)) => return Err(args.inconsistent("vni is only valid with encap vxlan")),
        (true, Some(vni)) => (Encap::Vxlan { vni }, VXLAN_DEFAULT_PORT),
        (true, None) => return Err(args.inconsistent("encap vxlan needs vni N")),
    };
    let peer = args.peer(peer, default_port)?;
    Ok(Command::LinkAdd { name, peer, encap })
}

/// `route add|del|list ...`.
fn route(mut args: Args<'_>) -> Result<Command> {
    match args.required("add, del or list")? {
        "add" => route_spec(args.within("route add")).map(Command::RouteAdd),
        "del" => route_spec(args.within("route del")).map(Command::RouteDel),
        "list" => args
            .within("route list")
            .finish()
            .map(|()| Command::RouteList),
        other => Err(args.invalid("subcommand", "add, del or list", other)),
    }
}

/// Stores a key's value, refusing a second one.
fn set_once<T>(args: &Args<'_>, slot: &mut Option<T>, what: &'static str, value: T) -> Result<()> {
    if slot.is_some() {
        return Err(args.repeated(what));
    }
    *slot = Some(value);
    Ok(())
}

/// `src=MAC dst=MAC to=ENDPOINT [from=any|ENDPOINT]`, keys in any order.
fn route_spec(mut args: Args<'_>) -> Result<RouteSpec> {
    let mut src = None;
    let mut dst = None;
    let mut to = None;
    let mut from = None;
    while let Some(token) = args.next() {
        let Some((key, value)) = token.split_once('=') else {
            return Err(args.invalid("argument", "src=, dst=, to= or from=", token));
        };
        match key {
            "src" => set_once(&args, &mut src, "src=", args.mac("src", value)?)?,
            "dst" => set_once(&args, &mut dst, "dst=", args.mac("dst", value)?)?,
            "to" => set_once(
                &args,
                &mut to,
                "to=",
                args.endpoint("to", EXPECT_ENDPOINT, value)?,
            )?,
            "from" => {
                let ep = match value {
                    "any" => None,
                    _ => Some(args.endpoint("from", EXPECT_FROM, value)?),
                };
                set_once(&args, &mut from, "from=", ep)?;
            }
            _ => return Err(args.invalid("argument", "src=, dst=, to= or from=", token)),
        }
    }
    let missing = |expected| ControlParseError::Missing {
        command: args.command,
        expected,
    };
    Ok(RouteSpec {
        src: src.ok_or_else(|| missing("src=MAC"))?,
        dst: dst.ok_or_else(|| missing("dst=MAC"))?,
        to: to.ok_or_else(|| missing("to=link:NAME or to=interface:NAME"))?,
        from: from.flatten(),
    })
}

/// VNET/P's `ADD|DEL <peer-ip> <port> udp`: the link's name (`ip:port`, `[ip6]:port`)
/// and peer address.
fn vnetp_link(mut args: Args<'_>) -> Result<(String, SocketAddr)> {
    let token = args.required("<peer-ip>")?;
    let ip = args.ip("peer-ip", EXPECT_IP, token)?;
    let token = args.required("<port>")?;
    let port = args.port(token)?;
    let transport = args.required("the transport, udp")?;
    if !transport.eq_ignore_ascii_case("udp") {
        return Err(args.invalid("transport", "udp (the only transport links use)", transport));
    }
    let peer = SocketAddr::new(ip, port);
    // SocketAddr prints `10.0.0.2:9000` and `[fd00::2]:9000`, at most 47 characters,
    // which is always a valid name; checked rather than assumed.
    let name = peer.to_string();
    if !is_valid_name(&name) {
        return Err(args.invalid("peer-ip", EXPECT_IP, &name));
    }
    args.finish()?;
    Ok((name, peer))
}

/// VNET/P's `add|del <src-mac> <dst-mac> <dst-type> <dst-id> <src-type> [<src-id>]`.
fn vnetp_route(mut args: Args<'_>) -> Result<RouteSpec> {
    let token = args.required("<src-mac>")?;
    if matches!(token, "link" | "route") {
        return Err(args.invalid("src-mac", EXPECT_MAC_NOT_KEYWORD, token));
    }
    let src = args.mac("src-mac", token)?;
    let dst = args.next_mac("dst-mac", "<dst-mac>")?;
    let to = match args.required("<dst-type>, interface or edge")? {
        "interface" => {
            EndpointRef::Interface(args.next_name("dst-id", "<dst-id> after interface")?)
        }
        "edge" => EndpointRef::Link(args.next_name("dst-id", "<dst-id> after edge")?),
        other => return Err(args.invalid("dst-type", "interface or edge", other)),
    };
    let from = match args.required("<src-type>, interface, edge or any")? {
        "any" => None,
        "interface" => Some(EndpointRef::Interface(
            args.next_name("src-id", "<src-id> after interface")?,
        )),
        "edge" => Some(EndpointRef::Link(
            args.next_name("src-id", "<src-id> after edge")?,
        )),
        other => return Err(args.invalid("src-type", "interface, edge or any", other)),
    };
    args.finish()?;
    Ok(RouteSpec { src, dst, to, from })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pkt::wire::MacAddr;
    use proptest::prelude::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    const M1: MacAddr = MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    const M2: MacAddr = MacAddr([0x52, 0x54, 0, 0xab, 0xcd, 0xef]);

    fn link(name: &str) -> EndpointRef {
        EndpointRef::Link(name.to_string())
    }

    fn iface(name: &str) -> EndpointRef {
        EndpointRef::Interface(name.to_string())
    }

    fn err(line: &str) -> ControlParseError {
        match parse_command(line) {
            Err(e) => e,
            Ok(cmd) => ControlParseError::UnknownCommand {
                token: format!("unexpectedly parsed {line:?} as {cmd:?}"),
            },
        }
    }

    fn invalid(
        command: &'static str,
        what: &'static str,
        expected: &'static str,
        token: &str,
    ) -> ControlParseError {
        ControlParseError::Invalid {
            command,
            what,
            expected,
            token: token.to_string(),
        }
    }

    fn missing(command: &'static str, expected: &'static str) -> ControlParseError {
        ControlParseError::Missing { command, expected }
    }

    fn extra(command: &'static str, token: &str) -> ControlParseError {
        ControlParseError::Extra {
            command,
            token: token.to_string(),
        }
    }

    // ---- Our syntax. ----

    #[test]
    fn link_add_ipv4_with_port() -> TestResult {
        assert_eq!(
            parse_command("link add east 10.0.0.2:9100")?,
            Command::LinkAdd {
                name: "east".into(),
                peer: "10.0.0.2:9100".parse()?,
                encap: Encap::Vnetp
            }
        );
        Ok(())
    }

    #[test]
    fn link_add_without_port_uses_9000_for_vnetp() -> TestResult {
        let want = Command::LinkAdd {
            name: "east".into(),
            peer: "10.0.0.2:9000".parse()?,
            encap: Encap::Vnetp,
        };
        assert_eq!(parse_command("link add east 10.0.0.2")?, want);
        assert_eq!(parse_command("link add east 10.0.0.2 encap vnetp")?, want);
        Ok(())
    }

    #[test]
    fn link_add_vxlan_without_port_uses_4789() -> TestResult {
        assert_eq!(
            parse_command("link add vx 192.0.2.7 encap vxlan vni 42")?,
            Command::LinkAdd {
                name: "vx".into(),
                peer: "192.0.2.7:4789".parse()?,
                encap: Encap::Vxlan { vni: 42 }
            }
        );
        Ok(())
    }

    #[test]
    fn link_add_options_in_any_order() -> TestResult {
        assert_eq!(
            parse_command("link add vx 192.0.2.7 vni 42 encap vxlan")?,
            parse_command("link add vx 192.0.2.7 encap vxlan vni 42")?
        );
        Ok(())
    }

    #[test]
    fn link_add_vni_bounds() -> TestResult {
        assert!(matches!(
            parse_command("link add vx 192.0.2.7:8472 encap vxlan vni 16777215")?,
            Command::LinkAdd {
                encap: Encap::Vxlan { vni: 0xff_ffff },
                ..
            }
        ));
        assert!(matches!(
            parse_command("link add vx 192.0.2.7 encap vxlan vni 0")?,
            Command::LinkAdd {
                encap: Encap::Vxlan { vni: 0 },
                ..
            }
        ));
        assert_eq!(
            err("link add vx 192.0.2.7 encap vxlan vni 16777216"),
            invalid("link add", "vni", EXPECT_VNI, "16777216")
        );
        for bad in ["-1", "+5", "0x10", "", "4294967296", "ten"] {
            let line = format!("link add vx 192.0.2.7 encap vxlan vni {bad}");
            if bad.is_empty() {
                assert_eq!(err(&line), missing("link add", "a number after vni"));
            } else {
                assert_eq!(
                    err(&line),
                    invalid("link add", "vni", EXPECT_VNI, bad),
                    "{bad}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn link_add_ipv6_forms() -> TestResult {
        let peer = |s: &str| match parse_command(&format!("link add six {s}")) {
            Ok(Command::LinkAdd { peer, .. }) => Some(peer),
            _ => None,
        };
        assert_eq!(peer("[fd00::2]:9100"), Some("[fd00::2]:9100".parse()?));
        assert_eq!(peer("fd00::2"), Some("[fd00::2]:9000".parse()?));
        assert_eq!(peer("[fd00::2]"), Some("[fd00::2]:9000".parse()?));
        Ok(())
    }

    #[test]
    fn link_add_rejects_bad_peers() {
        for bad in [
            "10.0.0",
            "10.0.0.256",
            "host.example",
            "[10.0.0.2]",
            "fd00::2:9000:",
            "10.0.0.2:",
            "10.0.0.2:65536",
        ] {
            assert_eq!(
                err(&format!("link add p {bad}")),
                invalid("link add", "peer", EXPECT_PEER, bad),
                "{bad}"
            );
        }
        assert_eq!(
            err("link add p 10.0.0.2:0"),
            invalid("link add", "peer", "a peer port in 1..=65535", "10.0.0.2:0")
        );
        for unspecified in ["0.0.0.0", "::", "0.0.0.0:9000", "[::]:9000"] {
            assert_eq!(
                err(&format!("link add p {unspecified}")),
                invalid(
                    "link add",
                    "peer",
                    "a peer address other than 0.0.0.0 or ::",
                    unspecified
                )
            );
        }
    }

    #[test]
    fn link_add_vxlan_requires_vni() {
        assert_eq!(
            err("link add vx 192.0.2.7 encap vxlan"),
            ControlParseError::Inconsistent {
                command: "link add",
                reason: "encap vxlan needs vni N"
            }
        );
    }

    #[test]
    fn link_add_vnetp_with_vni_is_an_error() {
        let want = ControlParseError::Inconsistent {
            command: "link add",
            reason: "vni is only valid with encap vxlan",
        };
        assert_eq!(err("link add p 10.0.0.2 vni 5"), want);
        assert_eq!(err("link add p 10.0.0.2 encap vnetp vni 5"), want);
    }

    #[test]
    fn link_add_option_errors() {
        assert_eq!(
            err("link add p 10.0.0.2 encap gre"),
            invalid("link add", "encap", "vnetp or vxlan", "gre")
        );
        assert_eq!(
            err("link add p 10.0.0.2 encap"),
            missing("link add", "vnetp or vxlan after encap")
        );
        assert_eq!(
            err("link add p 10.0.0.2 mtu 9000"),
            invalid("link add", "option", "encap or vni", "mtu")
        );
        assert_eq!(
            err("link add p 10.0.0.2 encap vxlan encap vxlan vni 1"),
            ControlParseError::Repeated {
                command: "link add",
                what: "encap"
            }
        );
        assert_eq!(
            err("link add p 10.0.0.2 encap vxlan vni 1 vni 2"),
            ControlParseError::Repeated {
                command: "link add",
                what: "vni"
            }
        );
    }

    #[test]
    fn link_add_missing_arguments() {
        assert_eq!(err("link add"), missing("link add", "the link name"));
        assert_eq!(
            err("link add east"),
            missing("link add", "the peer address")
        );
        assert_eq!(err("link"), missing("link", "add, del or list"));
    }

    #[test]
    fn names_are_checked() -> TestResult {
        let longest = "n".repeat(MAX_NAME_LEN);
        assert!(
            matches!(parse_command(&format!("link del {longest}"))?, Command::LinkDel { name } if name == longest)
        );
        let too_long = "n".repeat(MAX_NAME_LEN + 1);
        assert_eq!(
            err(&format!("link del {too_long}")),
            invalid("link del", "name", EXPECT_NAME, &too_long)
        );
        for bad in ["a/b", "a,b", "é", "a\u{0}b", "x=y", "#x"] {
            assert_eq!(
                err(&format!("link del {bad}")),
                invalid("link del", "name", EXPECT_NAME, bad),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_command("link del [fd00::2]:9000_x.y-z")?,
            Command::LinkDel {
                name: "[fd00::2]:9000_x.y-z".into()
            }
        );
        assert_eq!(
            err("route add src=any dst=any to=link:"),
            invalid("route add", "to", EXPECT_NAME, "")
        );
        Ok(())
    }

    #[test]
    fn link_del_and_list() -> TestResult {
        assert_eq!(
            parse_command("link del east")?,
            Command::LinkDel {
                name: "east".into()
            }
        );
        assert_eq!(parse_command("link list")?, Command::LinkList);
        assert_eq!(err("link del"), missing("link del", "the link name"));
        assert_eq!(err("link del a b"), extra("link del", "b"));
        assert_eq!(err("link list all"), extra("link list", "all"));
        assert_eq!(
            err("link show"),
            invalid("link", "subcommand", "add, del or list", "show")
        );
        Ok(())
    }

    #[test]
    fn route_add_full() -> TestResult {
        assert_eq!(
            parse_command(
                "route add src=52:54:00:12:34:56 dst=not-52:54:00:ab:cd:ef to=link:east from=interface:vm0"
            )?,
            Command::RouteAdd(RouteSpec {
                src: MacMatch::Exact(M1),
                dst: MacMatch::Not(M2),
                to: link("east"),
                from: Some(iface("vm0")),
            })
        );
        Ok(())
    }

    #[test]
    fn route_add_from_defaults_to_any() -> TestResult {
        let want = Command::RouteAdd(RouteSpec {
            src: MacMatch::Any,
            dst: MacMatch::None,
            to: iface("vm0"),
            from: None,
        });
        assert_eq!(
            parse_command("route add src=any dst=none to=interface:vm0")?,
            want
        );
        assert_eq!(
            parse_command("route add to=interface:vm0 from=any dst=none src=any")?,
            want
        );
        Ok(())
    }

    #[test]
    fn route_edge_is_an_alias_for_link() -> TestResult {
        assert!(
            matches!(parse_command("route add src=any dst=any to=edge:e from=edge:f")?,
            Command::RouteAdd(RouteSpec { to: EndpointRef::Link(t), from: Some(EndpointRef::Link(f)), .. }) if t == "e" && f == "f")
        );
        Ok(())
    }

    #[test]
    fn route_del_and_list() -> TestResult {
        assert_eq!(
            parse_command("route del src=any dst=ff:ff:ff:ff:ff:ff to=link:east")?,
            Command::RouteDel(RouteSpec {
                src: MacMatch::Any,
                dst: MacMatch::Exact(MacAddr::BROADCAST),
                to: link("east"),
                from: None
            })
        );
        assert_eq!(parse_command("route list")?, Command::RouteList);
        assert_eq!(err("route list x"), extra("route list", "x"));
        assert_eq!(err("route"), missing("route", "add, del or list"));
        assert_eq!(
            err("route show"),
            invalid("route", "subcommand", "add, del or list", "show")
        );
        Ok(())
    }

    #[test]
    fn route_bad_mac_names_the_token() {
        let e = err("route add src=zz dst=any to=link:a");
        assert_eq!(e, invalid("route add", "src", EXPECT_MAC, "zz"));
        assert_eq!(
            e.to_string(),
            r#"route add: src: expected a MAC, any, none or not-<mac>, got "zz""#
        );
        assert_eq!(
            err("route add src=any dst=not-zz to=link:a"),
            invalid("route add", "dst", EXPECT_MAC, "not-zz")
        );
    }

    #[test]
    fn route_argument_errors() {
        assert_eq!(
            err("route add dst=any to=link:a"),
            missing("route add", "src=MAC")
        );
        assert_eq!(
            err("route add src=any to=link:a"),
            missing("route add", "dst=MAC")
        );
        assert_eq!(
            err("route add src=any dst=any"),
            missing("route add", "to=link:NAME or to=interface:NAME")
        );
        assert_eq!(
            err("route add src=any dst=any to=link:a via=b"),
            invalid("route add", "argument", "src=, dst=, to= or from=", "via=b")
        );
        assert_eq!(
            err("route add src=any dst=any to=link:a extra"),
            invalid("route add", "argument", "src=, dst=, to= or from=", "extra")
        );
        assert_eq!(
            err("route add src=any dst=any to=port:a"),
            invalid("route add", "to", EXPECT_ENDPOINT, "port:a")
        );
        assert_eq!(
            err("route add src=any dst=any to=any"),
            invalid("route add", "to", EXPECT_ENDPOINT, "any")
        );
        assert_eq!(
            err("route add src=any dst=any to=link:a from=bogus"),
            invalid("route add", "from", EXPECT_FROM, "bogus")
        );
        assert_eq!(
            err("route add src=any src=any dst=any to=link:a"),
            ControlParseError::Repeated {
                command: "route add",
                what: "src="
            }
        );
        assert_eq!(
            err("route del src=any dst=any to=link:a from=any from=any"),
            ControlParseError::Repeated {
                command: "route del",
                what: "from="
            }
        );
    }

    #[test]
    fn interface_add_and_del() -> TestResult {
        let Command::InterfaceAdd(c) =
            parse_command("interface add vm1 tap 52:54:00:00:00:01 mtu 9000 offload")?
        else {
            panic!("not an add");
        };
        assert_eq!((c.name.as_str(), c.mtu, c.offload), ("vm1", 9000, true));
        assert_eq!(
            c.kind,
            crate::config::InterfaceKind::Tap {
                ifname: "vm1".into()
            }
        );
        let again = parse_command(&Command::InterfaceAdd(c.clone()).to_string())?;
        assert_eq!(again, Command::InterfaceAdd(c));
        let Command::InterfaceAdd(v) =
            parse_command("interface add g1 vhost-user 52:54:00:00:00:02 /run/g1.sock")?
        else {
            panic!("not an add");
        };
        assert_eq!(
            v.kind,
            crate::config::InterfaceKind::VhostUser {
                socket: "/run/g1.sock".into()
            }
        );
        assert_eq!(
            parse_command("interface del vm1")?,
            Command::InterfaceDel { name: "vm1".into() }
        );
        for bad in [
            "interface add vm1 tap ff:ff:ff:ff:ff:ff",
            "interface add vm1 tap 52:54:00:00:00:01 mtu 70000",
            "interface add vm1 vhost-user 52:54:00:00:00:01 relative.sock",
            "interface add vm1 vf 52:54:00:00:00:01",
            "interface add a-name-too-long-for-the-kernel tap 52:54:00:00:00:01",
            "interface add vm1 vhost-user 52:54:00:00:00:01 /s offload",
        ] {
            assert!(parse_command(bad).is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn interface_stats_help() -> TestResult {
        assert_eq!(parse_command("interface list")?, Command::InterfaceList);
        assert_eq!(parse_command("stats")?, Command::Stats { json: false });
        assert_eq!(parse_command("stats json")?, Command::Stats { json: true });
        assert_eq!(parse_command("help")?, Command::Help);
        assert_eq!(err("interface"), missing("interface", "add, del or list"));
        assert_eq!(
            err("interface frob vm0"),
            invalid("interface", "subcommand", "add, del or list", "frob")
        );
        assert_eq!(err("interface list vm0"), extra("interface list", "vm0"));
        assert_eq!(
            err("stats xml"),
            invalid("stats", "format", "json or nothing", "xml")
        );
        assert_eq!(err("stats json now"), extra("stats", "now"));
        assert_eq!(err("help me"), extra("help", "me"));
        Ok(())
    }

    #[test]
    fn blank_lines_and_comments_are_nop() -> TestResult {
        for line in [
            "",
            "\n",
            "  \t ",
            "\r\n",
            "# a comment",
            "   # indented comment\n",
        ] {
            assert_eq!(parse_command(line)?, Command::Nop, "{line:?}");
        }
        // A `#` after a command is not a comment.
        assert_eq!(err("link list # all"), extra("link list", "#"));
        Ok(())
    }

    #[test]
    fn whitespace_and_line_endings_are_tolerated() -> TestResult {
        assert_eq!(parse_command("  link\tlist  \r\n")?, Command::LinkList);
        Ok(())
    }

    #[test]
    fn unknown_command() {
        assert_eq!(
            err("frobnicate now"),
            ControlParseError::UnknownCommand {
                token: "frobnicate".into()
            }
        );
        assert_eq!(
            err("LINK list"),
            ControlParseError::UnknownCommand {
                token: "LINK".into()
            }
        );
        assert!(
            err("frobnicate")
                .to_string()
                .starts_with("unknown command \"frobnicate\"")
        );
    }

    #[test]
    fn long_tokens_are_cut_in_errors() {
        let long = "x".repeat(1000);
        assert_eq!(
            err(&long),
            ControlParseError::UnknownCommand {
                token: format!("{}...", "x".repeat(SHOWN_MAX))
            }
        );
    }

    #[test]
    fn line_length_limit() -> TestResult {
        let pad = |n: usize| format!("link list{}", " ".repeat(n - "link list".len()));
        assert_eq!(parse_command(&pad(MAX_LINE_LEN))?, Command::LinkList);
        assert_eq!(
            parse_command(&format!("{}\r\n", pad(MAX_LINE_LEN)))?,
            Command::LinkList
        );
        assert_eq!(
            err(&pad(MAX_LINE_LEN + 1)),
            ControlParseError::TooLong {
                len: MAX_LINE_LEN + 1
            }
        );
        assert_eq!(
            err(&format!("#{}", "c".repeat(MAX_LINE_LEN))),
            ControlParseError::TooLong {
                len: MAX_LINE_LEN + 1
            }
        );
        Ok(())
    }

    // ---- VNET/P syntax. ----

    #[test]
    fn vnetp_add_link_ipv4() -> TestResult {
        assert_eq!(
            parse_command("ADD 10.0.0.2 9000 udp")?,
            Command::LinkAdd {
                name: "10.0.0.2:9000".into(),
                peer: "10.0.0.2:9000".parse()?,
                encap: Encap::Vnetp
            }
        );
        assert!(matches!(
            parse_command("ADD 10.0.0.2 9000 UDP")?,
            Command::LinkAdd { .. }
        ));
        Ok(())
    }

    #[test]
    fn vnetp_add_link_ipv6_is_named_in_brackets() -> TestResult {
        assert_eq!(
            parse_command("ADD fd00::2 9001 udp")?,
            Command::LinkAdd {
                name: "[fd00::2]:9001".into(),
                peer: "[fd00::2]:9001".parse()?,
                encap: Encap::Vnetp
            }
        );
        assert_eq!(
            parse_command("ADD [fd00::2] 9001 udp")?,
            parse_command("ADD fd00::2 9001 udp")?
        );
        Ok(())
    }

    #[test]
    fn vnetp_del_link() -> TestResult {
        assert_eq!(
            parse_command("DEL 10.0.0.2 9000 udp")?,
            Command::LinkDel {
                name: "10.0.0.2:9000".into()
            }
        );
        assert_eq!(
            parse_command("DEL 2001:db8::1 9000 udp")?,
            Command::LinkDel {
                name: "[2001:db8::1]:9000".into()
            }
        );
        Ok(())
    }

    #[test]
    fn vnetp_link_errors() {
        assert_eq!(
            err("ADD 10.0.0.2 9000 tcp"),
            invalid(
                "ADD",
                "transport",
                "udp (the only transport links use)",
                "tcp"
            )
        );
        assert_eq!(
            err("ADD 10.0.0.2 9000"),
            missing("ADD", "the transport, udp")
        );
        assert_eq!(err("ADD 10.0.0.2"), missing("ADD", "<port>"));
        assert_eq!(err("ADD"), missing("ADD", "<peer-ip>"));
        assert_eq!(err("DEL 10.0.0.2 9000 udp now"), extra("DEL", "now"));
        assert_eq!(
            err("ADD any 9000 udp"),
            invalid("ADD", "peer-ip", EXPECT_IP, "any")
        );
        assert_eq!(
            err("ADD 10.0.0.2:9000 9000 udp"),
            invalid("ADD", "peer-ip", EXPECT_IP, "10.0.0.2:9000")
        );
        assert_eq!(
            err("ADD 0.0.0.0 9000 udp"),
            invalid(
                "ADD",
                "peer-ip",
                "a peer address other than 0.0.0.0 or ::",
                "0.0.0.0"
            )
        );
        for bad in ["0", "65536", "-1", "+9000", "90a"] {
            assert_eq!(
                err(&format!("ADD 10.0.0.2 {bad} udp")),
                invalid("ADD", "port", EXPECT_PORT, bad),
                "{bad}"
            );
        }
    }

    #[test]
    fn vnetp_route_add_edge_from_any() -> TestResult {
        assert_eq!(
            parse_command("add any ff:ff:ff:ff:ff:ff edge 10.0.0.2:9000 any")?,
            Command::RouteAdd(RouteSpec {
                src: MacMatch::Any,
                dst: MacMatch::Exact(MacAddr::BROADCAST),
                to: link("10.0.0.2:9000"),
                from: None
            })
        );
        Ok(())
    }

    #[test]
    fn vnetp_route_add_interface_from_edge() -> TestResult {
        assert_eq!(
            parse_command(
                "add not-52:54:00:12:34:56 52:54:00:ab:cd:ef interface vm0 edge [fd00::2]:9000"
            )?,
            Command::RouteAdd(RouteSpec {
                src: MacMatch::Not(M1),
                dst: MacMatch::Exact(M2),
                to: iface("vm0"),
                from: Some(link("[fd00::2]:9000")),
            })
        );
        Ok(())
    }

    #[test]
    fn vnetp_route_del_from_interface() -> TestResult {
        assert_eq!(
            parse_command("del none any edge e1 interface vm1")?,
            Command::RouteDel(RouteSpec {
                src: MacMatch::None,
                dst: MacMatch::Any,
                to: link("e1"),
                from: Some(iface("vm1"))
            })
        );
        Ok(())
    }

    #[test]
    fn vnetp_route_and_ours_agree() -> TestResult {
        assert_eq!(
            parse_command("add 52:54:00:12:34:56 any interface vm0 edge e1")?,
            parse_command("route add src=52:54:00:12:34:56 dst=any to=interface:vm0 from=link:e1")?
        );
        Ok(())
    }

    #[test]
    fn vnetp_route_errors() {
        assert_eq!(
            err("add zz any edge e any"),
            invalid("add", "src-mac", EXPECT_MAC, "zz")
        );
        assert_eq!(
            err("del any zz edge e any"),
            invalid("del", "dst-mac", EXPECT_MAC, "zz")
        );
        assert_eq!(
            err("add link e 10.0.0.2"),
            invalid("add", "src-mac", EXPECT_MAC_NOT_KEYWORD, "link")
        );
        assert_eq!(
            err("add any any any any"),
            invalid("add", "dst-type", "interface or edge", "any")
        );
        assert_eq!(
            err("add any any link e any"),
            invalid("add", "dst-type", "interface or edge", "link")
        );
        assert_eq!(
            err("add any any edge e link f"),
            invalid("add", "src-type", "interface, edge or any", "link")
        );
        assert_eq!(err("add any any edge e any f"), extra("add", "f"));
        assert_eq!(
            err("add any any edge e interface"),
            missing("add", "<src-id> after interface")
        );
        assert_eq!(
            err("add any any edge e"),
            missing("add", "<src-type>, interface, edge or any")
        );
        assert_eq!(
            err("add any any edge"),
            missing("add", "<dst-id> after edge")
        );
        assert_eq!(
            err("add any any"),
            missing("add", "<dst-type>, interface or edge")
        );
        assert_eq!(err("add any"), missing("add", "<dst-mac>"));
        assert_eq!(err("add"), missing("add", "<src-mac>"));
        assert_eq!(
            err("add any any edge a/b any"),
            invalid("add", "dst-id", EXPECT_NAME, "a/b")
        );
    }

    #[test]
    fn route_spec_display_uses_our_syntax() {
        let spec = RouteSpec {
            src: MacMatch::Not(M1),
            dst: MacMatch::Any,
            to: link("x"),
            from: None,
        };
        assert_eq!(
            spec.to_string(),
            "src=not-52:54:00:12:34:56 dst=any to=link:x from=any"
        );
        let spec = RouteSpec {
            from: Some(iface("vm0")),
            ..spec
        };
        assert_eq!(
            spec.to_string(),
            "src=not-52:54:00:12:34:56 dst=any to=link:x from=interface:vm0"
        );
    }

    #[test]
    fn help_text_mentions_every_command() {
        for word in [
            "link add",
            "link del",
            "link list",
            "route add",
            "route del",
            "route list",
            "interface list",
            "stats",
            "help",
            "ADD",
            "DEL",
        ] {
            assert!(HELP.contains(word), "{word}");
        }
    }

    // ---- Properties. ----

    fn any_mac_match() -> impl Strategy<Value = MacMatch> {
        prop_oneof![
            Just(MacMatch::Any),
            Just(MacMatch::None),
            any::<[u8; 6]>().prop_map(|b| MacMatch::Not(MacAddr(b))),
            any::<[u8; 6]>().prop_map(|b| MacMatch::Exact(MacAddr(b))),
        ]
    }

    fn any_name() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._:\\[\\]-]{1,64}"
    }

    fn any_endpoint_ref() -> impl Strategy<Value = EndpointRef> {
        prop_oneof![
            any_name().prop_map(EndpointRef::Link),
            any_name().prop_map(EndpointRef::Interface)
        ]
    }

    fn any_route_spec() -> impl Strategy<Value = RouteSpec> {
        (
            any_mac_match(),
            any_mac_match(),
            any_endpoint_ref(),
            proptest::option::of(any_endpoint_ref()),
        )
            .prop_map(|(src, dst, to, from)| RouteSpec { src, dst, to, from })
    }

    fn any_peer() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), 1u16..).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
            (any::<[u16; 8]>(), 1u16..).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        ]
        .prop_filter("unspecified", |sa| !sa.ip().is_unspecified())
    }

    fn any_command() -> impl Strategy<Value = Command> {
        prop_oneof![
            Just(Command::Nop),
            (any_name(), any_peer(), proptest::option::of(0..=MAX_VNI)).prop_map(
                |(name, peer, vni)| Command::LinkAdd {
                    name,
                    peer,
                    encap: vni.map_or(Encap::Vnetp, |vni| Encap::Vxlan { vni }),
                }
            ),
            any_name().prop_map(|name| Command::LinkDel { name }),
            Just(Command::LinkList),
            any_route_spec().prop_map(Command::RouteAdd),
            any_route_spec().prop_map(Command::RouteDel),
            Just(Command::RouteList),
            Just(Command::InterfaceList),
            any::<bool>().prop_map(|json| Command::Stats { json }),
            Just(Command::Help),
        ]
    }

    /// Lines made of the language's own words, to reach deep into the parser.
    fn wordy_line() -> impl Strategy<Value = String> {
        let word = prop_oneof![
            Just("link".to_string()),
            Just("route".to_string()),
            Just("add".to_string()),
            Just("del".to_string()),
            Just("list".to_string()),
            Just("ADD".to_string()),
            Just("DEL".to_string()),
            Just("udp".to_string()),
            Just("edge".to_string()),
            Just("interface".to_string()),
            Just("any".to_string()),
            Just("none".to_string()),
            Just("encap".to_string()),
            Just("vxlan".to_string()),
            Just("vni".to_string()),
            Just("stats".to_string()),
            Just("json".to_string()),
            any_mac_match().prop_map(|m| m.to_string()),
            any_peer().prop_map(|p| p.to_string()),
            any_peer().prop_map(|p| p.ip().to_string()),
            any::<u32>().prop_map(|n| n.to_string()),
            "(src|dst|to|from)=[a-z:0-9.-]{0,20}",
            "[ -~é]{0,12}",
        ];
        proptest::collection::vec(word, 0..9).prop_map(|w| w.join(" "))
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_text(line in "\\PC{0,300}") {
            let _ = parse_command(&line);
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let line = String::from_utf8_lossy(&bytes);
            let _ = parse_command(&line);
        }

        #[test]
        fn never_panics_on_wordy_lines(line in wordy_line()) {
            if let Ok(cmd) = parse_command(&line) {
                // Whatever parses prints back to something that parses the same.
                prop_assert_eq!(parse_command(&cmd.to_string()), Ok(cmd));
            }
        }

        #[test]
        fn route_spec_display_round_trips(spec in any_route_spec()) {
            prop_assert_eq!(parse_command(&format!("route add {spec}")), Ok(Command::RouteAdd(spec.clone())));
            prop_assert_eq!(parse_command(&format!("route del {spec}")), Ok(Command::RouteDel(spec)));
        }

        #[test]
        fn command_display_round_trips(cmd in any_command()) {
            prop_assert_eq!(parse_command(&cmd.to_string()), Ok(cmd));
        }
    }
}
