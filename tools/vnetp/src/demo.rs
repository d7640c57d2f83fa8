//! `vnetp demo`: two hosts in network namespaces joined by a veth pair, a vnetp daemon
//! in each with a tap interface, ping and iperf3 through the overlay next to the same
//! over the native underlay path, then `vnetp bench` between the two hosts (overlay,
//! native and Linux kernel VXLAN). Everything is removed on exit or Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use vnetp::netns::{self, Netns, TwoHosts};

use crate::bench;

pub fn demo(encap: &str, seconds: u32, quick: bool, svg: &Path) -> anyhow::Result<ExitCode> {
    bench::preflight("demo")?;
    let encap = bench::parse_encap(encap)?;
    let plan = bench::Plan::new(quick, None)?;
    let seconds = if quick { 1 } else { seconds };
    let interrupted = bench::interrupt_flag()?;
    let check = || -> anyhow::Result<()> {
        if interrupted.load(Ordering::Relaxed) {
            bail!("interrupted; cleaned up");
        }
        Ok(())
    };
    let exe = std::env::current_exe().context("cannot find the vnetp executable")?;
    let pid = std::process::id();
    let dir = PathBuf::from(format!("/tmp/vnetp-demo-{pid}"));
    println!(
        "vnetp demo: building two hosts (network namespaces vnetp-demo-{pid}-a/b) joined by a veth underlay"
    );
    let hosts = TwoHosts::new(&format!("vnetp-demo-{pid}"), 0, false, &dir)?;
    let (da, db) = bench::setup(&hosts, &exe, encap, &plan)?;
    check()?;
    let (a, b) = (&hosts.a, &hosts.b);
    let (_sa, sb) = (&hosts.side_a, &hosts.side_b);
    // The first ping also resolves ARP across the overlay.
    let _ = a.exec(&["ping", "-c", "1", "-W", "5", &sb.overlay_ip]);
    check()?;

    let ping_native = ping(a, &sb.underlay_ip);
    check()?;
    let ping_overlay = ping(a, &sb.overlay_ip);
    check()?;
    let (tcp_native, tcp_overlay) = if netns::have("iperf3") {
        let n = iperf(a, b, &sb.underlay_ip, seconds, &dir);
        check()?;
        let o = iperf(a, b, &sb.overlay_ip, seconds, &dir);
        check()?;
        (n, o)
    } else {
        println!(
            "(iperf3 not installed: skipping the throughput test; scripts/setup.sh installs it)"
        );
        (None, None)
    };

    let name = bench::encap_name(encap);
    println!();
    println!(
        "{:<22} {:>16} {:>18} {:>16}",
        "",
        "native (veth)",
        format!("overlay ({name})"),
        "overlay/native"
    );
    let ratio = |n: Option<f64>, o: Option<f64>| match (n, o) {
        (Some(n), Some(o)) if n > 0.0 => format!("{:.2}", o / n),
        _ => "-".to_string(),
    };
    let fmt =
        |v: Option<f64>, unit: &str| v.map_or("failed".to_string(), |v| format!("{v:.3} {unit}"));
    println!(
        "{:<22} {:>16} {:>18} {:>16}",
        "ping rtt (avg)",
        fmt(ping_native, "ms"),
        fmt(ping_overlay, "ms"),
        ratio(ping_native, ping_overlay)
    );
    if netns::have("iperf3") {
        let g = |v: Option<f64>| v.map(|b| b / 1e9);
        println!(
            "{:<22} {:>16} {:>18} {:>16}",
            "TCP throughput",
            fmt(g(tcp_native), "Gbit/s"),
            fmt(g(tcp_overlay), "Gbit/s"),
            ratio(tcp_native, tcp_overlay)
        );
    }
    println!(
        "\nbench: {} frame size(s) x native, overlay, kernel VXLAN (taps at MTU {})",
        plan.sizes.len(),
        plan.tap_mtu
    );
    let report = bench::measure(&hosts, &exe, encap, &plan, &interrupted)?;
    check()?;
    bench::emit(
        &report,
        &bench::Outputs {
            svg: svg.to_path_buf(),
            ..Default::default()
        },
    )?;
    // Every size must have crossed the overlay both ways.
    let overlay_rows: Vec<_> = report.rows.iter().filter(|r| r.path == "overlay").collect();
    let bench_ok = !overlay_rows.is_empty()
        && overlay_rows
            .iter()
            .all(|r| r.throughput.received > 0 && r.latency.samples > 0);
    for (host, d) in [("a", &da), ("b", &db)] {
        match d.ctl("stats") {
            Ok(s) => {
                println!(
                    "\nhost {host} (vnetp ctl --socket {} stats):",
                    d.socket.display()
                );
                for l in s.lines() {
                    println!("  {l}");
                }
            }
            Err(e) => println!("host {host}: stats unavailable: {e}"),
        }
    }
    let ok =
        bench_ok && ping_overlay.is_some() && (tcp_overlay.is_some() || !netns::have("iperf3"));
    println!(
        "\n{}",
        if ok {
            "demo: overlay carried ping, TCP and the bench between the hosts"
        } else {
            "demo: the overlay did NOT carry traffic (see logs above)"
        }
    );
    drop((da, db));
    drop(hosts);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Average RTT in ms of 10 pings, or None.
fn ping(ns: &Netns, ip: &str) -> Option<f64> {
    let out = ns
        .exec(&["ping", "-c", "10", "-i", "0.05", "-W", "2", "-q", ip])
        .ok()?;
    // "rtt min/avg/max/mdev = 0.031/0.045/0.071/0.011 ms"
    let stats = out.lines().find(|l| l.contains("min/avg/max"))?;
    stats
        .split('=')
        .nth(1)?
        .trim()
        .split('/')
        .nth(1)?
        .parse()
        .ok()
}

/// TCP throughput in bit/s of an iperf3 run from `client` to `server_ip` in `server`.
fn iperf(
    client: &Netns,
    server: &Netns,
    server_ip: &str,
    seconds: u32,
    dir: &std::path::Path,
) -> Option<f64> {
    let mut srv = server
        .spawn(
            &["iperf3", "-s", "-1", "-B", server_ip],
            Some(&dir.join("iperf3-server.log")),
        )
        .ok()?;
    // Until the server listens (a busy machine may start it late), not a fixed pause.
    let listening = format!("{server_ip}:5201");
    netns::wait_for(Duration::from_secs(30), || {
        server
            .exec(&["ss", "-Hltn"])
            .is_ok_and(|out| out.split_whitespace().any(|w| w == listening))
    });
    let secs = seconds.to_string();
    let out = client.exec(&["iperf3", "-c", server_ip, "-t", &secs, "-J"]);
    let _ = srv.kill();
    let _ = srv.wait();
    let json: serde_json::Value = serde_json::from_str(&out.ok()?).ok()?;
    json["end"]["sum_received"]["bits_per_second"].as_f64()
}
