//! `vnetp`: the one binary. Parses the command line and wires the daemon: builds ports
//! from the configuration and hands them to the overlay engine.
#![forbid(unsafe_code)]

mod bench;
mod bind;
mod demo;
mod pci;
mod run;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A fast userspace VNET/P overlay network for virtual machines.
#[derive(Parser)]
#[command(name = "vnetp", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the overlay daemon for one host (foreground; SIGTERM drains and exits).
    Run {
        /// The host's TOML configuration.
        #[arg(long, short)]
        config: PathBuf,
        /// Validate the configuration and exit.
        #[arg(long)]
        check: bool,
    },
    /// Send a command to a running daemon's control socket (try `help`).
    Ctl {
        /// The daemon's control socket.
        #[arg(long, short)]
        socket: PathBuf,
        /// Print statistics as JSON (`stats --json`).
        #[arg(long)]
        json: bool,
        /// The command, e.g. `link list`, `route add src=any dst=... to=link:b`, `stats`.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
    /// The embedded demo: two hosts in network namespaces, an overlay between them,
    /// ping and a TCP transfer through it next to the same over the native path.
    Demo {
        /// Link encapsulation: vnetp or vxlan.
        #[arg(long, default_value = "vnetp")]
        encap: String,
        /// Seconds of iperf3 per measurement.
        #[arg(long, default_value_t = 3)]
        seconds: u32,
        /// Short run (CI): fewer frame sizes, shorter measurements.
        #[arg(long)]
        quick: bool,
        /// Where the bench's SVG plot goes.
        #[arg(long, default_value = "/tmp/vnetp-bench.svg")]
        svg: PathBuf,
    },
    /// List the host's NICs: PCI address, name, driver, IOMMU group, NUMA node, link, VFs.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move NICs to vfio-pci for `vnetp run` (checks the IOMMU group first).
    Bind {
        /// PCI addresses, e.g. 0000:01:00.0.
        #[arg(required = true)]
        addrs: Vec<String>,
        /// Bind even a NIC that carries this host's routes.
        #[arg(long)]
        force: bool,
        /// Create this many SR-IOV VFs on each NIC and bind them to vfio-pci too.
        #[arg(long)]
        vfs: Option<u32>,
    },
    /// Give NICs back to their kernel drivers.
    Unbind {
        /// PCI addresses, e.g. 0000:01:00.0.
        #[arg(required = true)]
        addrs: Vec<String>,
    },
    /// Loopback benchmark between two hosts in network namespaces: latency and
    /// throughput over a sweep of frame sizes, overlay vs native vs kernel VXLAN.
    Bench {
        #[command(flatten)]
        options: bench::Options,
        /// Also write the results as CSV.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Also write the results as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Where the SVG plot goes.
        #[arg(long, default_value = "/tmp/vnetp-bench.svg")]
        svg: PathBuf,
    },
    /// The bench's traffic agents, run inside the hosts' namespaces by `vnetp bench`.
    #[command(hide = true)]
    BenchAgent {
        #[command(subcommand)]
        role: AgentRole,
    },
}

/// What a bench agent does.
#[derive(Subcommand)]
enum AgentRole {
    /// Reflect latency probes and count throughput datagrams.
    Serve {
        /// UDP port.
        #[arg(long)]
        port: u16,
        /// Exit after this many seconds at the latest.
        #[arg(long, default_value_t = 300)]
        seconds: u64,
        /// Also reflect for a vhost-user guest attached to this socket.
        #[arg(long)]
        guest: Option<PathBuf>,
    },
    /// Measure one path; print one JSON line per frame size.
    Probe {
        /// The reflector's address (IP:PORT), or `vhost-user:...` for a guest path,
        /// once per path to measure.
        #[arg(long, required = true)]
        target: Vec<bench::agent::Target>,
        /// Frame sizes, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        sizes: Vec<usize>,
        /// Latency probes per size.
        #[arg(long, default_value_t = 1000)]
        latency_count: u32,
        /// Most milliseconds of latency probing per size.
        #[arg(long, default_value_t = 400)]
        latency_ms: u64,
        /// Milliseconds of throughput per size.
        #[arg(long, default_value_t = 400)]
        throughput_ms: u64,
        /// First run number (keeps runs' counters apart at the reflector).
        #[arg(long, default_value_t = 0)]
        run_base: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Run { config, check } => run::run(&config, check),
        Cmd::Ctl {
            socket,
            json,
            words,
        } => ctl(&socket, json, &words),
        Cmd::Demo {
            encap,
            seconds,
            quick,
            svg,
        } => demo::demo(&encap, seconds, quick, &svg),
        Cmd::Status { json } => status::status(json),
        Cmd::Bind { addrs, force, vfs } => bind::bind(&addrs, bind::BindOptions { force, vfs }),
        Cmd::Unbind { addrs } => bind::unbind(&addrs),
        Cmd::Bench {
            options,
            csv,
            json,
            svg,
        } => bench::bench(&options, &bench::Outputs { csv, json, svg }),
        Cmd::BenchAgent { role } => bench_agent(role),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vnetp: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn ctl(socket: &std::path::Path, json: bool, words: &[String]) -> anyhow::Result<ExitCode> {
    let mut line: Vec<&str> = words
        .iter()
        .map(String::as_str)
        .filter(|w| *w != "--json")
        .collect();
    if json || words.iter().any(|w| w == "--json") {
        line.push("json");
    }
    // The daemon writes capture files: make the path absolute from here.
    let abs;
    if line.first() == Some(&"capture") && line.len() > 2 && !line[2].starts_with('/') {
        abs = std::env::current_dir()?.join(line[2]).display().to_string();
        line[2] = &abs;
    }
    let answer = vnetp::client::command(socket, &line.join(" "))?;
    if !answer.is_empty() {
        println!("{answer}");
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_agent(role: AgentRole) -> anyhow::Result<ExitCode> {
    match role {
        AgentRole::Serve {
            port,
            seconds,
            guest,
        } => {
            bench::agent::serve(
                port,
                std::time::Duration::from_secs(seconds),
                guest.as_deref(),
            )?;
        }
        AgentRole::Probe {
            target,
            sizes,
            latency_count,
            latency_ms,
            throughput_ms,
            run_base,
        } => bench::agent::probe(
            &target,
            &sizes,
            bench::agent::ProbeBudget {
                latency_count,
                latency_time: std::time::Duration::from_millis(latency_ms),
                tput_time: std::time::Duration::from_millis(throughput_ms),
            },
            run_base,
        )?,
    }
    Ok(ExitCode::SUCCESS)
}
