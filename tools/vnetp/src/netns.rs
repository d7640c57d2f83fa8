//! Test hosts in network namespaces: namespaces, veth pairs, vnetp daemons inside
//! them, and the two-host topology used by `vnetp demo` and the integration tests.
//!
//! Everything created here is named with a caller-chosen tag and torn down on drop,
//! so an interrupted run leaves nothing behind and parallel tests do not collide.

use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A failed host command, with what it printed.
#[derive(Debug, thiserror::Error)]
#[error("`{cmd}` failed: {detail}")]
pub struct CmdError {
    /// The command line.
    pub cmd: String,
    /// Exit status and stderr, or the spawn error.
    pub detail: String,
}

/// Runs a command; returns its stdout, or its stderr as the error.
pub fn run(args: &[&str]) -> Result<String, CmdError> {
    let cmd = args.join(" ");
    let (prog, rest) = args.split_first().ok_or_else(|| CmdError {
        cmd: cmd.clone(),
        detail: "empty command".into(),
    })?;
    let out: Output = Command::new(prog)
        .args(rest)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| CmdError {
            cmd: cmd.clone(),
            detail: format!("cannot start {prog}: {e}"),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(CmdError {
            cmd,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// True when `prog` is on PATH.
pub fn have(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

/// True when running as root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A network namespace, deleted (with every process in it) on drop.
#[derive(Debug)]
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
}

impl Netns {
    /// Creates the namespace (replacing a stale one of the same name) and brings up `lo`.
    pub fn new(name: &str) -> Result<Self, CmdError> {
        let _ = run(&["ip", "netns", "del", name]);
        run(&["ip", "netns", "add", name])?;
        let ns = Self {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NAME ARGS...`.
    pub fn ip(&self, args: &[&str]) -> Result<String, CmdError> {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        run(&v)
    }

    /// Runs `ARGS...` inside the namespace and waits for it.
    pub fn exec(&self, args: &[&str]) -> Result<String, CmdError> {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        run(&v)
    }

    /// Starts `ARGS...` inside the namespace; its output goes to `log` (or is discarded).
    pub fn spawn(&self, args: &[&str], log: Option<&Path>) -> std::io::Result<Child> {
        let (out, err) = match log {
            Some(p) => {
                let f = File::create(p)?;
                (Stdio::from(f.try_clone()?), Stdio::from(f))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(pids) = run(&["ip", "netns", "pids", &self.name]) {
            for pid in pids.split_whitespace() {
                let _ = run(&["kill", "-9", pid]);
            }
        }
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}

/// Joins two namespaces with a veth pair, addresses (CIDR) on each end, links up.
pub fn veth(
    a: &Netns,
    a_if: &str,
    a_cidr: &str,
    b: &Netns,
    b_if: &str,
    b_cidr: &str,
) -> Result<(), CmdError> {
    run(&[
        "ip", "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ])?;
    for (ns, ifname, cidr) in [(a, a_if, a_cidr), (b, b_if, b_cidr)] {
        if cidr.contains(':') {
            ns.ip(&["addr", "add", cidr, "dev", ifname, "nodad"])?;
        } else {
            ns.ip(&["addr", "add", cidr, "dev", ifname])?;
        }
        ns.ip(&["link", "set", ifname, "up"])?;
    }
    Ok(())
}

/// A `vnetp run` daemon inside a namespace; stopped with SIGTERM (then SIGKILL) on drop.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    /// Its control socket.
    pub socket: PathBuf,
    /// Where its output goes.
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `exe run --config CONFIG` in `ns` and waits until its control socket answers.
    pub fn start(
        ns: &Netns,
        exe: &Path,
        config: &Path,
        socket: &Path,
        log: &Path,
    ) -> Result<Self, CmdError> {
        let exe_s = exe.display().to_string();
        let cfg = config.display().to_string();
        let child = ns
            .spawn(&[&exe_s, "run", "--config", &cfg], Some(log))
            .map_err(|e| CmdError {
                cmd: format!("{exe_s} run"),
                detail: e.to_string(),
            })?;
        let mut d = Self {
            child: Some(child),
            socket: socket.to_path_buf(),
            log: log.to_path_buf(),
        };
        let ready = wait_for(Duration::from_secs(20), || {
            if let Some(c) = d.child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                return true;
            }
            crate::client::command(socket, "help").is_ok()
        });
        let exited = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
        if !ready || exited.is_some() {
            let log_text = std::fs::read_to_string(log).unwrap_or_default();
            return Err(CmdError {
                cmd: format!("{exe_s} run --config {cfg}"),
                detail: format!("daemon not ready: {log_text}"),
            });
        }
        Ok(d)
    }

    /// Sends a control command.
    pub fn ctl(&self, line: &str) -> Result<String, crate::client::ClientError> {
        crate::client::command(&self.socket, line)
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills it with SIGKILL, as a crash would, and reaps it: nothing gets cleaned up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it with SIGTERM; waits up to 30 s, then kills. Returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let pid = child.id().to_string();
        // `ip netns exec` execs the daemon, so this pid is the daemon itself.
        let _ = run(&["kill", "-TERM", &pid]);
        // A clean exit returns at once; the bound is for a daemon starved of CPU (its
        // threads join, its taps go), which must still count as clean, not as killed.
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            if let Ok(Some(st)) = child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How the two hosts' link is encapsulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEncap {
    /// VNET/P on UDP 9000.
    Vnetp,
    /// VXLAN with this VNI on UDP 4789.
    Vxlan(u32),
}

/// Addresses of one side of the two-host topology.
#[derive(Debug, Clone)]
pub struct Side {
    /// Underlay IP (on the veth).
    pub underlay_ip: String,
    /// Overlay IP (on the tap).
    pub overlay_ip: String,
    /// The tap's MAC.
    pub mac: String,
    /// Tap device name.
    pub tap: String,
}

/// Two hosts `a` and `b` in namespaces joined by a veth pair (the underlay).
#[derive(Debug)]
pub struct TwoHosts {
    /// Host A's namespace.
    pub a: Netns,
    /// Host B's namespace.
    pub b: Netns,
    /// Addresses of A.
    pub side_a: Side,
    /// Addresses of B.
    pub side_b: Side,
    /// Scratch directory for configs, sockets and logs.
    pub dir: PathBuf,
    /// Underlay over IPv6.
    pub ipv6: bool,
}

impl TwoHosts {
    /// Builds the namespaces `<tag>-a` and `<tag>-b` and the underlay between them.
    /// `index` (0..=250) keeps address ranges of concurrent topologies apart.
    pub fn new(tag: &str, index: u8, ipv6: bool, dir: &Path) -> Result<Self, CmdError> {
        let a = Netns::new(&format!("{tag}-a"))?;
        let b = Netns::new(&format!("{tag}-b"))?;
        let (ua, ub, plen) = if ipv6 {
            (
                format!("fd00:99:{index}::1"),
                format!("fd00:99:{index}::2"),
                64,
            )
        } else {
            (format!("10.99.{index}.1"), format!("10.99.{index}.2"), 24)
        };
        veth(
            &a,
            "ul0",
            &format!("{ua}/{plen}"),
            &b,
            "ul0",
            &format!("{ub}/{plen}"),
        )?;
        std::fs::create_dir_all(dir).map_err(|e| CmdError {
            cmd: format!("mkdir {}", dir.display()),
            detail: e.to_string(),
        })?;
        let side = |n: u8, ul: String| Side {
            underlay_ip: ul,
            overlay_ip: format!("10.98.{index}.{n}"),
            mac: format!("52:54:00:98:{index:02x}:{n:02x}"),
            tap: format!("vtap{n}"),
        };
        Ok(Self {
            a,
            b,
            side_a: side(1, ua),
            side_b: side(2, ub),
            dir: dir.to_path_buf(),
            ipv6,
        })
    }

    fn sockaddr(&self, ip: &str, port: u16) -> String {
        if self.ipv6 {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        }
    }

    /// The TOML config of one side: underlay UDP socket, one link to the other side,
    /// one tap interface, unicast and broadcast routes.
    pub fn config(&self, me: &Side, peer: &Side, name: &str, encap: LinkEncap) -> String {
        let iface = format!(
            "[[interface]]\nname = \"vm0\"\nkind = \"tap\"\nifname = \"{}\"\nmac = \"{}\"\n",
            me.tap, me.mac
        );
        self.config_with_interface(me, peer, name, encap, &iface)
    }

    /// [`TwoHosts::config`] with a vhost-user interface listening on `socket` instead of
    /// the tap: the side's MAC is the guest's, whose VMM connects to `socket`.
    pub fn vhost_user_config(
        &self,
        me: &Side,
        peer: &Side,
        name: &str,
        encap: LinkEncap,
        socket: &Path,
    ) -> String {
        let iface = format!(
            "[[interface]]\nname = \"vm0\"\nkind = \"vhost-user\"\nsocket = \"{}\"\nmac = \"{}\"\n",
            socket.display(),
            me.mac
        );
        self.config_with_interface(me, peer, name, encap, &iface)
    }

    /// A side's config around one interface block named `vm0`.
    fn config_with_interface(
        &self,
        me: &Side,
        peer: &Side,
        name: &str,
        encap: LinkEncap,
        iface: &str,
    ) -> String {
        let port = match encap {
            LinkEncap::Vnetp => 9000,
            LinkEncap::Vxlan(_) => 4789,
        };
        let mut s = String::new();
        let _ = writeln!(s, "[host]\nname = \"{name}\"");
        let _ = writeln!(
            s,
            "underlay = {{ kind = \"udp\", bind = \"{}\" }}",
            self.sockaddr(&me.underlay_ip, port)
        );
        let _ = writeln!(s, "control = \"{}\"\n", self.socket(name).display());
        let _ = writeln!(
            s,
            "[[link]]\nname = \"peer\"\npeer = \"{}\"",
            self.sockaddr(&peer.underlay_ip, port)
        );
        match encap {
            LinkEncap::Vnetp => s.push_str("encap = \"vnetp\"\n\n"),
            LinkEncap::Vxlan(vni) => {
                let _ = writeln!(s, "encap = \"vxlan\"\nvni = {vni}\n");
            }
        }
        let _ = writeln!(s, "{iface}");
        for (dst, to) in [
            (peer.mac.as_str(), "{ link = \"peer\" }"),
            ("ff:ff:ff:ff:ff:ff", "{ link = \"peer\" }"),
            (me.mac.as_str(), "{ interface = \"vm0\" }"),
            ("ff:ff:ff:ff:ff:ff", "{ interface = \"vm0\" }"),
        ] {
            let _ = writeln!(s, "[[route]]\nsrc = \"any\"\ndst = \"{dst}\"\nto = {to}\n");
        }
        s
    }

    /// Control socket path of a host.
    pub fn socket(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.sock"))
    }

    /// Writes `config` and starts a daemon for host `name` in `ns`.
    pub fn start_daemon(
        &self,
        ns: &Netns,
        name: &str,
        config: &str,
        exe: &Path,
    ) -> Result<Daemon, CmdError> {
        let path = self.dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).map_err(|e| CmdError {
            cmd: format!("write {}", path.display()),
            detail: e.to_string(),
        })?;
        Daemon::start(
            ns,
            exe,
            &path,
            &self.socket(name),
            &self.dir.join(format!("{name}.log")),
        )
    }

    /// Puts the overlay address on a side's tap (once the daemon created it).
    pub fn address_tap(&self, ns: &Netns, side: &Side) -> Result<(), CmdError> {
        ns.ip(&[
            "addr",
            "add",
            &format!("{}/24", side.overlay_ip),
            "dev",
            &side.tap,
        ])?;
        ns.ip(&["link", "set", &side.tap, "up"])?;
        Ok(())
    }

    /// Sets the MTU of both ends of the veth underlay (veth allows up to 65535).
    pub fn set_underlay_mtu(&self, mtu: u32) -> Result<(), CmdError> {
        let m = mtu.to_string();
        self.a.ip(&["link", "set", "ul0", "mtu", &m])?;
        self.b.ip(&["link", "set", "ul0", "mtu", &m])?;
        Ok(())
    }

    /// [`TwoHosts::start_overlay`] with both taps' MTU set through the interface's
    /// `mtu` configuration key.
    pub fn start_overlay_mtu(
        &self,
        exe: &Path,
        encap: LinkEncap,
        mtu: u32,
    ) -> Result<(Daemon, Daemon), CmdError> {
        let cfg = |me: &Side, peer: &Side, name: &str| {
            self.config(me, peer, name, encap).replace(
                "kind = \"tap\"\n",
                &format!("kind = \"tap\"\nmtu = {mtu}\n"),
            )
        };
        let da = self.start_daemon(&self.a, "a", &cfg(&self.side_a, &self.side_b, "a"), exe)?;
        let db = self.start_daemon(&self.b, "b", &cfg(&self.side_b, &self.side_a, "b"), exe)?;
        self.address_tap(&self.a, &self.side_a)?;
        self.address_tap(&self.b, &self.side_b)?;
        Ok((da, db))
    }

    /// Starts both daemons with `encap` and addresses both taps.
    pub fn start_overlay(
        &self,
        exe: &Path,
        encap: LinkEncap,
    ) -> Result<(Daemon, Daemon), CmdError> {
        let da = self.start_daemon(
            &self.a,
            "a",
            &self.config(&self.side_a, &self.side_b, "a", encap),
            exe,
        )?;
        let db = self.start_daemon(
            &self.b,
            "b",
            &self.config(&self.side_b, &self.side_a, "b", encap),
            exe,
        )?;
        self.address_tap(&self.a, &self.side_a)?;
        self.address_tap(&self.b, &self.side_b)?;
        Ok((da, db))
    }
}
