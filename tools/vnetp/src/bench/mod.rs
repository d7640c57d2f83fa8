//! `vnetp bench`: a loopback benchmark between two hosts in network namespaces.
//!
//! Host B runs a reflector (`vnetp bench-agent serve`); host A runs a prober
//! (`vnetp bench-agent probe`) once per path: natively over the veth underlay, through
//! the vnetp overlay (a daemon on each host), and through the Linux kernel's own VXLAN
//! between the same namespaces, the reference an overlay is judged against. The
//! overlay's guests ([`Guest`]) are taps with the agents' UDP sockets behind them, or
//! vhost-user guests: our virtio-user frontend attached to each daemon's vhost-user
//! interface ([`guest`]), as a VM attaches, with no system call per frame. Each path is
//! measured for round-trip latency (min, p50, p99, p99.9) and one-way throughput over a
//! sweep of frame sizes; the report puts each path next to native.

pub mod agent;
pub mod guest;
pub mod plot;
pub mod proto;
pub mod report;

use std::io::{BufRead, BufReader, IsTerminal as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use overlay::config::Dispatch;
use vnetp::netns::{self, Daemon, LinkEncap, TwoHosts};

use agent::ProbeBudget;
use report::{Point, Report};

/// The full sweep of frame sizes (bytes, Ethernet header included, no FCS); the last
/// is the largest that fits a 64 KiB IP datagram with the overlay's headers.
pub const SIZES: [usize; 7] = [64, 512, 1500, 9000, 16384, 32768, 65000];
/// The `--quick` sweep.
pub const QUICK_SIZES: [usize; 3] = [64, 1500, 9000];
/// Smallest frame: our 16-byte header in a UDP/IPv4 datagram.
const MIN_SIZE: usize = proto::HEADER + proto::FRAME_OVERHEAD;
/// Largest frame: the overlay's largest MTU plus the Ethernet header.
const MAX_SIZE: usize = overlay::config::MAX_MTU as usize + 14;
/// The veth underlay's MTU during the bench: its maximum, so no size fragments.
const UNDERLAY_MTU: u32 = 65_535;
/// UDP port of the reflector on host B.
const AGENT_PORT: u16 = 7000;
/// The kernel VXLAN devices: name, VNI, UDP port (apart from vnetp's 9000/4789).
const KVX_DEV: &str = "kvx0";
const KVX_VNI: &str = "4242";
const KVX_PORT: &str = "4790";

/// What to measure.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Frame sizes, ascending.
    pub sizes: Vec<usize>,
    /// Time and probe counts per size.
    pub budget: ProbeBudget,
    /// MTU of the taps, vhost-user interfaces and kernel VXLAN devices: the largest
    /// size minus its header.
    pub tap_mtu: u32,
    /// Also measure Linux kernel VXLAN.
    pub kernel_vxlan: bool,
    /// The daemons' dispatch mode (`[host] dispatch`).
    pub dispatch: Dispatch,
    /// How the overlay's guests attach.
    pub guest: Guest,
    /// The vhost-user interfaces' `zero_copy_threshold` (`None`: the default).
    pub zero_copy_threshold: Option<usize>,
    /// The daemons' dispatcher shards (`[host] shards`).
    pub shards: usize,
}

/// How the overlay path's guests attach to the daemons (`vnetp bench --guest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guest {
    /// A tap per daemon, the agents' UDP sockets behind it in the host's kernel stack.
    Tap,
    /// A vhost-user interface per daemon with our virtio-user frontend attached.
    VhostUser,
    /// Both, each its own overlay path, measured in the same run.
    Both,
}

impl Guest {
    /// True when the overlay has tap guests.
    pub fn tap(self) -> bool {
        matches!(self, Self::Tap | Self::Both)
    }

    /// True when the overlay has vhost-user guests.
    pub fn vhost_user(self) -> bool {
        matches!(self, Self::VhostUser | Self::Both)
    }
}

/// The guest mode named on the command line.
pub fn parse_guest(mode: &str) -> anyhow::Result<Guest> {
    match mode {
        "tap" => Ok(Guest::Tap),
        "vhost-user" => Ok(Guest::VhostUser),
        "both" => Ok(Guest::Both),
        other => bail!("unknown guest {other:?}: expected tap, vhost-user or both"),
    }
}

/// Report name of the tap-guest overlay path ("overlay" alone, as before, when it is
/// the only overlay path).
const OVERLAY_TAP: &str = "overlay (tap guests)";
/// Report name of the vhost-user-guest overlay path.
pub const OVERLAY_VHOST_USER: &str = "overlay (vhost-user guests)";

impl Plan {
    /// The default plan (under 30 s), the `--quick` one, or explicit sizes.
    pub fn new(quick: bool, sizes: Option<&[usize]>) -> anyhow::Result<Self> {
        let mut sizes: Vec<usize> = match sizes {
            Some(s) => s.to_vec(),
            None if quick => QUICK_SIZES.to_vec(),
            None => SIZES.to_vec(),
        };
        if let Some(bad) = sizes.iter().find(|s| !(MIN_SIZE..=MAX_SIZE).contains(*s)) {
            bail!("frame size {bad} out of range: sizes must be {MIN_SIZE}..={MAX_SIZE} bytes");
        }
        if sizes.is_empty() {
            bail!("no frame sizes given: e.g. --sizes 64,1500,9000");
        }
        sizes.sort_unstable();
        sizes.dedup();
        let largest = sizes.last().copied().unwrap_or(1500);
        let tap_mtu = (largest - 14).clamp(1500, overlay::config::MAX_MTU as usize) as u32;
        let budget = if quick {
            ProbeBudget {
                latency_count: 200,
                latency_time: Duration::from_millis(150),
                tput_time: Duration::from_millis(150),
            }
        } else {
            ProbeBudget {
                latency_count: 1000,
                latency_time: Duration::from_millis(400),
                tput_time: Duration::from_millis(400),
            }
        };
        Ok(Self {
            sizes,
            budget,
            tap_mtu,
            kernel_vxlan: true,
            dispatch: Dispatch::Adaptive,
            guest: Guest::Tap,
            zero_copy_threshold: None,
            shards: 1,
        })
    }
}

/// The dispatch mode named on the command line.
pub fn parse_dispatch(mode: &str) -> anyhow::Result<Dispatch> {
    match mode {
        "adaptive" => Ok(Dispatch::Adaptive),
        "guest" => Ok(Dispatch::Guest),
        "polling" => Ok(Dispatch::Polling),
        other => bail!("unknown dispatch {other:?}: expected adaptive, guest or polling"),
    }
}

/// The configuration-file name of a dispatch mode.
pub fn dispatch_name(mode: Dispatch) -> &'static str {
    match mode {
        Dispatch::Adaptive => "adaptive",
        Dispatch::Guest => "guest",
        Dispatch::Polling => "polling",
    }
}

/// Where `vnetp bench` writes its results.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    /// CSV file.
    pub csv: Option<PathBuf>,
    /// JSON file.
    pub json: Option<PathBuf>,
    /// SVG plot.
    pub svg: PathBuf,
}

/// The encapsulation named on the command line.
pub fn parse_encap(encap: &str) -> anyhow::Result<LinkEncap> {
    match encap {
        "vnetp" => Ok(LinkEncap::Vnetp),
        "vxlan" => Ok(LinkEncap::Vxlan(42)),
        other => bail!("unknown encap {other:?}: expected vnetp or vxlan"),
    }
}

/// A short name of an encapsulation.
pub fn encap_name(encap: LinkEncap) -> &'static str {
    match encap {
        LinkEncap::Vnetp => "vnetp",
        LinkEncap::Vxlan(_) => "vxlan",
    }
}

/// Refuses to start without root or `ip`, in one line that says what to do.
pub fn preflight(cmd: &str) -> anyhow::Result<()> {
    if !netns::is_root() {
        bail!(
            "vnetp {cmd} needs root: it creates network namespaces, a veth pair and tap devices (try: sudo vnetp {cmd})"
        );
    }
    if !netns::have("ip") {
        bail!("vnetp {cmd} needs the `ip` command (Debian package iproute2)");
    }
    Ok(())
}

/// A flag set by SIGINT/SIGTERM, so a run stops at the next step and cleans up.
pub fn interrupt_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&flag))?;
    }
    Ok(flag)
}

/// Builds the topology for a plan: the veth at its largest MTU, a vnetp daemon on
/// each host with taps at the plan's MTU, and (when planned) kernel VXLAN devices.
pub fn setup(
    hosts: &TwoHosts,
    exe: &Path,
    encap: LinkEncap,
    plan: &Plan,
) -> anyhow::Result<(Daemon, Daemon)> {
    hosts
        .set_underlay_mtu(UNDERLAY_MTU)
        .context("veth underlay MTU")?;
    let daemons = start_daemons(hosts, exe, encap, plan).context("starting the vnetp daemons")?;
    if plan.kernel_vxlan {
        kernel_vxlan(hosts, plan.tap_mtu).context(
            "Linux kernel VXLAN between the hosts (is the vxlan module available? `modprobe vxlan`)",
        )?;
    }
    Ok(daemons)
}

/// The vhost-user guest of one side: the side's own MAC and overlay address when it is
/// the only guest, others (52:54:00:97:..) next to a tap.
#[derive(Debug, Clone)]
struct GuestSide {
    socket: PathBuf,
    mac: String,
    ip: String,
}

fn guest_side(hosts: &TwoHosts, plan: &Plan, name: &str, side: &netns::Side, n: u8) -> GuestSide {
    let socket = hosts.dir.join(format!("{name}-guest.sock"));
    if plan.guest.tap() {
        GuestSide {
            socket,
            mac: format!("52:54:00:97:00:{n:02x}"),
            ip: format!("10.97.0.{n}"),
        }
    } else {
        GuestSide {
            socket,
            mac: side.mac.clone(),
            ip: side.overlay_ip.clone(),
        }
    }
}

/// A side's daemon config for the plan: tap, vhost-user interface or both (a second
/// interface `vm1` with its own routes), at the plan's MTU and dispatch mode.
fn daemon_config(
    hosts: &TwoHosts,
    encap: LinkEncap,
    plan: &Plan,
    name: &str,
    (me, me_n): (&netns::Side, u8),
    (peer, peer_n): (&netns::Side, u8),
) -> String {
    let mtu = plan.tap_mtu;
    let g = guest_side(hosts, plan, name, me, me_n);
    let base = match plan.guest {
        Guest::Tap | Guest::Both => hosts.config(me, peer, name, encap).replace(
            "kind = \"tap\"\n",
            &format!("kind = \"tap\"\nmtu = {mtu}\n"),
        ),
        Guest::VhostUser => hosts
            .vhost_user_config(me, peer, name, encap, &g.socket)
            .replace(
                "kind = \"vhost-user\"\n",
                &format!("kind = \"vhost-user\"\nmtu = {mtu}\n"),
            ),
    };
    let mut cfg = base.replace(
        "[host]\n",
        &format!(
            "[host]\ndispatch = \"{}\"\nshards = {}\n",
            dispatch_name(plan.dispatch),
            plan.shards
        ),
    );
    if plan.guest == Guest::Both {
        let peer_name = if name == "a" { "b" } else { "a" };
        let pg = guest_side(hosts, plan, peer_name, peer, peer_n);
        cfg.push_str(&format!(
            "\n[[interface]]\nname = \"vm1\"\nkind = \"vhost-user\"\nsocket = \"{}\"\nmac = \"{}\"\nmtu = {mtu}\n\n\
             [[route]]\nsrc = \"any\"\ndst = \"{}\"\nto = {{ link = \"peer\" }}\n\n\
             [[route]]\nsrc = \"any\"\ndst = \"{}\"\nto = {{ interface = \"vm1\" }}\n",
            g.socket.display(),
            g.mac,
            pg.mac,
            g.mac
        ));
    }
    if let Some(t) = plan.zero_copy_threshold {
        cfg = cfg.replace(
            "kind = \"vhost-user\"\n",
            &format!("kind = \"vhost-user\"\nzero_copy_threshold = {t}\n"),
        );
    }
    cfg
}

/// Starts a daemon on each host with the plan's guests at the plan's MTU and dispatch
/// mode, and addresses both taps (when there are taps).
fn start_daemons(
    hosts: &TwoHosts,
    exe: &Path,
    encap: LinkEncap,
    plan: &Plan,
) -> Result<(Daemon, Daemon), netns::CmdError> {
    let (a, b) = ((&hosts.side_a, 1), (&hosts.side_b, 2));
    let ca = daemon_config(hosts, encap, plan, "a", a, b);
    let cb = daemon_config(hosts, encap, plan, "b", b, a);
    let da = hosts.start_daemon(&hosts.a, "a", &ca, exe)?;
    let db = hosts.start_daemon(&hosts.b, "b", &cb, exe)?;
    if plan.guest.tap() {
        hosts.address_tap(&hosts.a, &hosts.side_a)?;
        hosts.address_tap(&hosts.b, &hosts.side_b)?;
    }
    Ok((da, db))
}

/// Kernel VXLAN address of side `n` (1 or 2).
fn kvx_ip(n: u8) -> String {
    format!("10.96.0.{n}")
}

fn kernel_vxlan(hosts: &TwoHosts, mtu: u32) -> Result<(), netns::CmdError> {
    let m = mtu.to_string();
    for (ns, me, peer, n) in [
        (&hosts.a, &hosts.side_a, &hosts.side_b, 1u8),
        (&hosts.b, &hosts.side_b, &hosts.side_a, 2u8),
    ] {
        ns.ip(&[
            "link",
            "add",
            KVX_DEV,
            "type",
            "vxlan",
            "id",
            KVX_VNI,
            "remote",
            &peer.underlay_ip,
            "local",
            &me.underlay_ip,
            "dstport",
            KVX_PORT,
            "dev",
            "ul0",
        ])?;
        ns.ip(&["link", "set", KVX_DEV, "mtu", &m])?;
        ns.ip(&["addr", "add", &format!("{}/24", kvx_ip(n)), "dev", KVX_DEV])?;
        ns.ip(&["link", "set", KVX_DEV, "up"])?;
    }
    Ok(())
}

/// Runs the reflector on B and the prober on A for each path; returns the report.
pub fn measure(
    hosts: &TwoHosts,
    exe: &Path,
    encap: LinkEncap,
    plan: &Plan,
    interrupted: &AtomicBool,
) -> anyhow::Result<Report> {
    let exe_s = exe.display().to_string();
    let port = AGENT_PORT.to_string();
    let ga = guest_side(hosts, plan, "a", &hosts.side_a, 1);
    let gb = guest_side(hosts, plan, "b", &hosts.side_b, 2);
    let gb_socket = gb.socket.display().to_string();
    let mut serve = vec![
        exe_s.as_str(),
        "bench-agent",
        "serve",
        "--port",
        &port,
        "--seconds",
        "900",
    ];
    if plan.guest.vhost_user() {
        serve.extend(["--guest", &gb_socket]);
    }
    let mut reflector = hosts
        .b
        .spawn(&serve, Some(&hosts.dir.join("bench-reflector.log")))
        .context("starting the bench reflector on host B")?;
    std::thread::sleep(Duration::from_millis(100));
    if let Ok(Some(status)) = reflector.try_wait() {
        let log =
            std::fs::read_to_string(hosts.dir.join("bench-reflector.log")).unwrap_or_default();
        bail!(
            "the bench reflector on host B exited ({status}): {}",
            log.trim()
        );
    }
    let udp = |ip: &str| format!("{ip}:{AGENT_PORT}");
    let mut paths: Vec<(&str, String)> = vec![("native", udp(&hosts.side_b.underlay_ip))];
    match plan.guest {
        Guest::Tap => paths.push(("overlay", udp(&hosts.side_b.overlay_ip))),
        Guest::Both => paths.push((OVERLAY_TAP, udp(&hosts.side_b.overlay_ip))),
        Guest::VhostUser => {}
    }
    if plan.guest.vhost_user() {
        let target = guest::GuestTarget {
            socket: ga.socket.clone(),
            mac: ga.mac.parse().context("guest MAC")?,
            peer_mac: gb.mac.parse().context("guest MAC")?,
            ip: ga.ip.parse().context("guest IP")?,
            peer_ip: gb.ip.parse().context("guest IP")?,
            port: AGENT_PORT,
        };
        paths.push((OVERLAY_VHOST_USER, target.to_string()));
    }
    if plan.kernel_vxlan {
        paths.push(("kernel-vxlan", udp(&kvx_ip(2))));
    }
    let total = (paths.len() * plan.sizes.len()) as u64;
    let pb = if std::io::stderr().is_terminal() {
        let pb = ProgressBar::new(total);
        if let Ok(style) =
            ProgressStyle::with_template("bench {bar:30} {pos}/{len} {msg} ({elapsed})")
        {
            pb.set_style(style);
        }
        pb
    } else {
        ProgressBar::hidden()
    };
    let sizes = plan
        .sizes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let targets: Vec<String> = paths.iter().map(|(_, t)| t.clone()).collect();
    let names: Vec<&str> = paths.iter().map(|(n, _)| *n).collect();
    let outcome = probe_all(
        hosts,
        &exe_s,
        &targets,
        &names,
        &sizes,
        plan,
        &pb,
        interrupted,
    );
    pb.finish_and_clear();
    // `ip netns exec` execs the agent, so this is the reflector itself.
    let _ = reflector.kill();
    let _ = reflector.wait();
    let points = outcome?;
    let results: Vec<(String, Vec<Point>)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let pts = points.iter().filter(|p| p.path == i).cloned().collect();
            ((*n).to_string(), pts)
        })
        .collect();
    Ok(Report::new(
        encap_name(encap),
        plan.tap_mtu,
        UNDERLAY_MTU,
        &plan.sizes,
        &results,
    ))
}

/// Runs the prober in host A against every target (one per path, named by `names`)
/// and collects its points.
#[allow(clippy::too_many_arguments)]
fn probe_all(
    hosts: &TwoHosts,
    exe: &str,
    targets: &[String],
    names: &[&str],
    sizes: &str,
    plan: &Plan,
    pb: &ProgressBar,
    interrupted: &AtomicBool,
) -> anyhow::Result<Vec<Point>> {
    let log = hosts.dir.join("bench-probe.log");
    let b = &plan.budget;
    let mut child = Command::new("ip")
        .args(["netns", "exec", &hosts.a.name, exe, "bench-agent", "probe"])
        .args(targets.iter().flat_map(|t| ["--target", t.as_str()]))
        .args(["--sizes", sizes])
        .args(["--latency-count", &b.latency_count.to_string()])
        .args(["--latency-ms", &b.latency_time.as_millis().to_string()])
        .args(["--throughput-ms", &b.tput_time.as_millis().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).context("bench probe log")?)
        .spawn()
        .context("starting the bench prober on host A")?;
    let mut points = Vec::new();
    let stdout = child.stdout.take();
    let pid = child.id().to_string();
    let done = AtomicBool::new(false);
    let read = std::thread::scope(|scope| {
        // A Ctrl-C that reached only us (not the prober) still ends the run promptly.
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                if interrupted.load(Ordering::Relaxed) {
                    let _ = netns::run(&["kill", "-TERM", &pid]);
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let read = || -> anyhow::Result<()> {
            let Some(out) = stdout else {
                return Ok(());
            };
            for line in BufReader::new(out).lines() {
                let line = line.context("reading the bench prober")?;
                let p: Point = serde_json::from_str(&line)
                    .with_context(|| format!("bench prober printed {line:?}"))?;
                pb.set_message(format!(
                    "{} B {}",
                    p.size,
                    names.get(p.path).copied().unwrap_or("?")
                ));
                points.push(p);
                pb.inc(1);
            }
            Ok(())
        };
        let r = read();
        done.store(true, Ordering::Relaxed);
        r
    });
    let status = child.wait().context("waiting for the bench prober")?;
    read?;
    if interrupted.load(Ordering::Relaxed) {
        bail!("interrupted; cleaned up");
    }
    if !status.success() || points.len() != plan.sizes.len() * targets.len() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        bail!("bench prober in host A failed ({status}): {}", text.trim());
    }
    Ok(points)
}

/// Prints the table and writes the files of a report; returns the lines that say where.
pub fn emit(report: &Report, out: &Outputs) -> anyhow::Result<()> {
    print!("{}", report.table());
    if let Some(p) = &out.csv {
        std::fs::write(p, report.csv()).with_context(|| format!("cannot write {}", p.display()))?;
        println!("csv: {}", p.display());
    }
    if let Some(p) = &out.json {
        let text = serde_json::to_string_pretty(report)?;
        std::fs::write(p, text + "\n").with_context(|| format!("cannot write {}", p.display()))?;
        println!("json: {}", p.display());
    }
    plot::write_svg(report, &out.svg)?;
    println!("plot: {}", out.svg.display());
    Ok(())
}

/// What `vnetp bench` measures, as its command line gives it.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Link encapsulation: vnetp or vxlan.
    #[arg(long, default_value = "vnetp")]
    pub encap: String,
    /// Short run (CI): 3 sizes, short measurements.
    #[arg(long)]
    pub quick: bool,
    /// Frame sizes in bytes, comma-separated (default 64..65000).
    #[arg(long, value_delimiter = ',')]
    pub sizes: Option<Vec<usize>>,
    /// Skip the Linux kernel VXLAN comparison.
    #[arg(long)]
    pub no_kernel_vxlan: bool,
    /// The daemons' dispatch mode: adaptive, guest or polling.
    #[arg(long, default_value = "adaptive")]
    pub dispatch: String,
    /// The overlay's guests: tap (taps, UDP sockets behind them), vhost-user (our
    /// virtio-user frontend on each daemon's vhost-user interface) or both.
    #[arg(long, default_value = "tap")]
    pub guest: String,
    /// The vhost-user interfaces' zero_copy_threshold (0: copy every frame; default:
    /// the port's).
    #[arg(long)]
    pub zero_copy_threshold: Option<usize>,
    /// The daemons' dispatcher shards (`[host] shards`, 1..=16).
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
}

/// `vnetp bench`.
pub fn bench(opts: &Options, out: &Outputs) -> anyhow::Result<ExitCode> {
    let encap = parse_encap(&opts.encap)?;
    let mut plan = Plan::new(opts.quick, opts.sizes.as_deref())?;
    plan.zero_copy_threshold = opts.zero_copy_threshold;
    plan.kernel_vxlan = !opts.no_kernel_vxlan;
    plan.dispatch = parse_dispatch(&opts.dispatch)?;
    plan.guest = parse_guest(&opts.guest)?;
    if !(1..=overlay::config::MAX_SHARDS).contains(&opts.shards) {
        bail!(
            "--shards {} out of range: 1..={}",
            opts.shards,
            overlay::config::MAX_SHARDS
        );
    }
    plan.shards = opts.shards;
    preflight("bench")?;
    let interrupted = interrupt_flag()?;
    let exe = std::env::current_exe().context("cannot find the vnetp executable")?;
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("vnetp-bench-{pid}"));
    let hosts = TwoHosts::new(&format!("vnetp-bench-{pid}"), 0, false, &dir)?;
    let guests = match plan.guest {
        Guest::Tap => "taps",
        Guest::VhostUser => "vhost-user guests",
        Guest::Both => "taps and vhost-user guests",
    };
    println!(
        "vnetp bench: hosts vnetp-bench-{pid}-a/b over a veth (MTU {UNDERLAY_MTU}); {} overlay, dispatch {}, {} shard(s), {guests} at MTU {}; {} size(s) x {} path(s)",
        encap_name(encap),
        dispatch_name(plan.dispatch),
        plan.shards,
        plan.tap_mtu,
        plan.sizes.len(),
        2 + usize::from(plan.guest == Guest::Both) + usize::from(plan.kernel_vxlan)
    );
    let result = setup(&hosts, &exe, encap, &plan)
        .and_then(|daemons| Ok((measure(&hosts, &exe, encap, &plan, &interrupted)?, daemons)));
    let (report, daemons) = match result {
        Ok(r) => r,
        Err(e) => {
            drop(hosts);
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let memory = [("a", &daemons.0), ("b", &daemons.1)]
        .map(|(name, d)| daemon_memory(name, d, &hosts.dir.join(format!("{name}.toml"))));
    drop(daemons);
    drop(hosts);
    let _ = std::fs::remove_dir_all(&dir);
    emit(&report, out)?;
    for line in memory {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// One line on a daemon's memory after the run: its packet pool (from `stats json`),
/// its resident and peak resident memory (from /proc), and the datagrams the kernel
/// dropped at its underlay socket, so a run shows memory stayed bounded.
fn daemon_memory(name: &str, daemon: &Daemon, config: &Path) -> String {
    let stats: Option<serde_json::Value> = daemon
        .ctl("stats json")
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let get = |path: &[&str]| -> String {
        let mut v = stats.as_ref();
        for k in path {
            v = v.and_then(|v| v.get(k));
        }
        v.map_or_else(|| "?".to_string(), ToString::to_string)
    };
    let (rss, hwm) = daemon_pid(config)
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .map(|status| (status_kib(&status, "VmRSS:"), status_kib(&status, "VmHWM:")))
        .unwrap_or((None, None));
    let mib =
        |k: Option<u64>| k.map_or_else(|| "?".to_string(), |k| format!("{:.1}", k as f64 / 1024.0));
    format!(
        "daemon {name}: pool {} buffers, {} free after the run, {} allocation failures; resident {} MiB (peak {} MiB); underlay rx_kernel_dropped {}",
        get(&["pool", "capacity"]),
        get(&["pool", "available"]),
        get(&["pool", "alloc_failures"]),
        mib(rss),
        mib(hwm),
        get(&["underlay", "drops", "rx_kernel_dropped"]),
    )
}

/// The pid of the `vnetp run --config CONFIG` process (bounded scan of /proc).
fn daemon_pid(config: &Path) -> Option<u32> {
    let want = config.display().to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .take(100_000)
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|&b| b == 0).collect();
                args.contains(&&b"run"[..]) && args.contains(&want.as_bytes())
            })
        })
}

/// A `Name:   1234 kB` field of /proc/PID/status, in KiB.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_sizes_the_taps_for_the_largest_frame() {
        let p = Plan::new(false, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.sizes, SIZES);
        assert_eq!(p.tap_mtu, 65000 - 14);
        let q = Plan::new(true, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((q.sizes.as_slice(), q.tap_mtu), (&QUICK_SIZES[..], 8986));
        let small = Plan::new(true, Some(&[512, 64, 512])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (small.sizes.as_slice(), small.tap_mtu),
            (&[64, 512][..], 1500)
        );
    }

    #[test]
    fn dispatch_names_round_trip_and_unknown_ones_are_refused() {
        for name in ["adaptive", "guest", "polling"] {
            let mode = parse_dispatch(name).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(dispatch_name(mode), name);
        }
        let err = parse_dispatch("busy").err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("expected adaptive, guest or polling")));
    }

    #[test]
    fn guest_modes_are_parsed_and_unknown_ones_are_refused() {
        let modes = ["tap", "vhost-user", "both"].map(|m| parse_guest(m).ok());
        assert_eq!(
            modes,
            [Some(Guest::Tap), Some(Guest::VhostUser), Some(Guest::Both)]
        );
        assert_eq!(
            modes.map(|m| m.map(|g| (g.tap(), g.vhost_user()))),
            [Some((true, false)), Some((false, true)), Some((true, true))]
        );
        let err = parse_guest("virtio").err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("expected tap, vhost-user or both")));
        // Every planned size fits a guest's frames and its frontend's buffers.
        let p = Plan::new(false, None).unwrap_or_else(|e| panic!("{e}"));
        let largest = p.sizes.last().copied().unwrap_or(0);
        assert!(largest <= guest::MAX_FRAME && largest <= p.tap_mtu as usize + 14);
        assert!(guest::frontend_options(largest).buf_size as usize >= largest + 12);
    }

    #[test]
    fn proc_status_fields_are_read_in_kib() {
        let status = "Name:\tvnetp\nVmHWM:\t  20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(10240));
        assert_eq!(status_kib(status, "VmHWM:"), Some(20480));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn plan_refuses_sizes_that_cannot_be_sent() {
        for bad in [&[10usize][..], &[70_000], &[]] {
            assert!(Plan::new(true, Some(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn svg_plot_is_written_with_both_panels_and_every_path() {
        let pt = |size, gbps, p50| Point {
            path: 0,
            size,
            latency: report::Latency {
                samples: 1,
                p50_us: Some(p50),
                ..Default::default()
            },
            throughput: report::Throughput {
                gbps,
                ..Default::default()
            },
        };
        let paths = vec![
            (
                "native".to_string(),
                vec![pt(64, 1.0, 10.0), pt(9000, 20.0, 30.0)],
            ),
            (
                "overlay".to_string(),
                vec![pt(64, 0.5, 20.0), pt(9000, 10.0, 60.0)],
            ),
        ];
        let r = Report::new("vnetp", 8986, 65535, &[64, 9000], &paths);
        let p = std::env::temp_dir().join(format!("vnetp-plot-test-{}.svg", std::process::id()));
        let res = plot::write_svg(&r, &p);
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let _ = std::fs::remove_file(&p);
        assert!(res.is_ok(), "{res:?}");
        assert!(text.starts_with("<svg"), "{}", &text[..text.len().min(200)]);
        for s in [
            "One-way throughput",
            "Round-trip latency",
            "native",
            "overlay",
            "<polyline",
        ] {
            assert!(text.contains(s), "plot lacks {s:?}");
        }
    }
}
