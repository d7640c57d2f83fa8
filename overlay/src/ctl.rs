//! Carrying out control commands against an [`Engine`]. Each command is applied whole
//! or not at all: every check runs before the first change.

use std::fmt::Write as _;

use crate::control::Command;
use crate::engine::Engine;
use crate::types::Endpoint;

pub(crate) fn apply(engine: &mut Engine, cmd: Command) -> Result<String, String> {
    match cmd {
        Command::Nop => Ok(String::new()),
        Command::Help => Ok(crate::control::HELP.trim_end().to_string()),
        Command::LinkAdd { name, peer, encap } => {
            engine.add_link(&name, peer, encap)?;
            Ok(String::new())
        }
        Command::LinkDel { name } => {
            let slot = engine
                .links()
                .find(&name)
                .ok_or_else(|| format!("no link named {name:?}"))?;
            let users = engine.routes().references(Endpoint::Link(slot));
            if users > 0 {
                return Err(format!(
                    "link {name:?} is used by {users} route(s): delete them first"
                ));
            }
            engine
                .links_mut()
                .remove(&name)
                .map_err(|e| e.to_string())?;
            engine.routes_mut().flush_cache();
            Ok(String::new())
        }
        Command::LinkList => {
            let lines: Vec<String> = engine
                .links()
                .iter()
                .map(|(_, l)| {
                    link_line(
                        &l.name,
                        &l.peer.to_string(),
                        &l.encap.to_string(),
                        &l.counters,
                    )
                })
                .collect();
            Ok(lines.join("\n"))
        }
        Command::RouteAdd(spec) => {
            engine.add_route(&spec)?;
            Ok(String::new())
        }
        Command::RouteDel(spec) => {
            let r = engine.route_from_spec(&spec)?;
            engine.routes_mut().remove(&r).map_err(|e| e.to_string())?;
            Ok(String::new())
        }
        Command::RouteList => {
            let specs: Vec<String> = engine
                .routes()
                .iter()
                .map(|r| engine.spec_from_route(r).to_string())
                .collect();
            Ok(specs.join("\n"))
        }
        Command::InterfaceList => {
            let lines: Vec<String> = engine
                .interface_list()
                .zip(engine.interface_owners())
                .map(|((_, name, kind, mac), (_, owner))| match owner {
                    // ` shard=` only with several shards: one-shard output is unchanged.
                    Some(s) => format!("{name} kind={kind} mac={mac} shard={s}"),
                    None => format!("{name} kind={kind} mac={mac}"),
                })
                .collect();
            Ok(lines.join("\n"))
        }
        Command::Capture { .. } => Err("capture runs only through the control socket".to_string()),
        Command::Reload => engine.reload(),
        Command::InterfaceAdd(cfg) => engine.create_interface(&cfg),
        Command::InterfaceDel { name } => engine.remove_interface(&name),
        Command::Stats { json } => {
            let s = engine.stats();
            if json {
                serde_json::to_string(&s).map_err(|e| format!("cannot encode stats: {e}"))
            } else {
                Ok(stats_table(&s))
            }
        }
    }
}

/// One line of `link list`; `encap` as [`crate::types::Encap`] displays it.
pub(crate) fn link_line(
    name: &str,
    peer: &str,
    encap: &str,
    c: &crate::link::LinkCounters,
) -> String {
    format!(
        "{} peer={} encap={} rx_packets={} rx_bytes={} tx_packets={} tx_bytes={}",
        name,
        peer,
        encap.replace(' ', ":").replace(":vni:", ":"),
        c.rx_packets,
        c.rx_bytes,
        c.tx_packets,
        c.tx_bytes
    )
}

/// `stats` as a table (the text form).
pub(crate) fn stats_table(s: &crate::engine::Stats) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "host {}  routes {}  route cache hits {} misses {}",
        s.host, s.routes, s.route_cache.hits, s.route_cache.misses
    );
    let _ = writeln!(
        o,
        "pool {}/{} free, {} allocation failures",
        s.pool.available, s.pool.capacity, s.pool.alloc_failures
    );
    for l in &s.per_shard {
        let _ = writeln!(
            o,
            "shard {}: {} interface(s), underlay rx {} tx {}, from guests {}, handed off {}",
            l.shard,
            l.interfaces,
            l.underlay_rx_packets,
            l.underlay_tx_packets,
            l.guest_rx_packets,
            l.handed_off
        );
    }
    let _ = writeln!(
        o,
        "{:<24} {:>12} {:>14} {:>12} {:>14}",
        "endpoint", "rx_packets", "rx_bytes", "tx_packets", "tx_bytes"
    );
    let u = &s.underlay;
    let _ = writeln!(
        o,
        "{:<24} {:>12} {:>14} {:>12} {:>14}",
        format!("underlay {}", u.name),
        u.rx_packets,
        u.rx_bytes,
        u.tx_packets,
        u.tx_bytes
    );
    for l in &s.links {
        let c = l.counters;
        let _ = writeln!(
            o,
            "{:<24} {:>12} {:>14} {:>12} {:>14}",
            format!("link {}", l.name),
            c.rx_packets,
            c.rx_bytes,
            c.tx_packets,
            c.tx_bytes
        );
    }
    for i in &s.interfaces {
        let c = i.counters;
        let _ = writeln!(
            o,
            "{:<24} {:>12} {:>14} {:>12} {:>14}",
            format!("interface {}", i.name),
            c.rx_packets,
            c.rx_bytes,
            c.tx_packets,
            c.tx_bytes
        );
    }
    let mut drops: Vec<String> = s
        .drops
        .list()
        .iter()
        .filter(|d| d.count > 0)
        .map(|d| format!("{}={}", d.name, d.count))
        .collect();
    drops.extend(
        u.drops
            .iter()
            .filter(|(_, c)| **c > 0)
            .map(|(n, c)| format!("underlay.{n}={c}")),
    );
    for i in &s.interfaces {
        drops.extend(
            i.port
                .drops
                .iter()
                .filter(|(_, c)| **c > 0)
                .map(|(n, c)| format!("{}.{n}={c}", i.name)),
        );
    }
    let _ = write!(
        o,
        "drops: {}",
        if drops.is_empty() {
            "none".to_string()
        } else {
            drops.join(" ")
        }
    );
    o
}
