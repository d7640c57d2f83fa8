//! `vnetp`: the one binary. Parses the command line and wires the daemon: builds ports
//! from the configuration and hands them to the overlay engine.
#![forbid(unsafe_code)]

mod demo;
mod run;

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
        Cmd::Demo { encap, seconds } => demo::demo(&encap, seconds),
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
