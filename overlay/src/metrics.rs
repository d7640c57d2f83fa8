//! Prometheus text metrics (`[host] metrics = "127.0.0.1:9100"`): a tiny HTTP endpoint
//! that answers every request with the engine's counters in the Prometheus text format
//! (version 0.0.4). It asks the engine for its statistics like a control client does,
//! so the packet path is untouched; one connection is served at a time, with timeouts.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::control::Command;
use crate::server::EngineHandle;

/// A running metrics endpoint; dropping it stops it.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    /// Listens on `addr` (port 0 picks one: see [`MetricsServer::local_addr`]).
    pub fn start(addr: SocketAddr, engine: EngineHandle) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("vnetp-metrics".into())
            .spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => serve(stream, &engine),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(20))
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(100)),
                    }
                }
            })?;
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut stream: TcpStream, engine: &EngineHandle) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    // Read (and ignore) the request head, bounded.
    let mut head = [0u8; 4096];
    let mut got = 0;
    while got < head.len() {
        match stream.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                got += n;
                if head[..got].windows(4).any(|w| w == b"\r\n\r\n")
                    || head[..got].windows(2).any(|w| w == b"\n\n")
                {
                    break;
                }
            }
        }
    }
    let (status, body) = match engine.call(Command::Stats { json: true }, Duration::from_secs(5)) {
        Ok(json) => match serde_json::from_str::<serde_json::Value>(&json) {
            Ok(v) => ("200 OK", render(&v)),
            Err(e) => (
                "500 Internal Server Error",
                format!("# cannot read stats: {e}\n"),
            ),
        },
        Err(e) => ("503 Service Unavailable", format!("# {e}\n")),
    };
    let _ = write!(
        stream,
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Escapes a label value (Prometheus text format: backslash, quote, newline).
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn num(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The engine's statistics (as `stats json` reports them) in Prometheus text format.
pub fn render(s: &serde_json::Value) -> String {
    let host = esc(s["host"].as_str().unwrap_or(""));
    let mut o = String::new();
    let family = |name: &str, kind: &str, help: &str, o: &mut String| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        "vnetp_drops_total",
        "counter",
        "Frames the engine dropped, by reason.",
        &mut o,
    );
    if let Some(d) = s["drops"].as_object() {
        for (reason, v) in d {
            let _ = writeln!(
                o,
                "vnetp_drops_total{{host=\"{host}\",reason=\"{}\"}} {}",
                esc(reason),
                num(v)
            );
        }
    }
    family(
        "vnetp_link_packets_total",
        "counter",
        "Frames through a link.",
        &mut o,
    );
    family(
        "vnetp_link_bytes_total",
        "counter",
        "Bytes (inner frames) through a link.",
        &mut o,
    );
    for l in s["links"].as_array().into_iter().flatten() {
        let name = esc(l["name"].as_str().unwrap_or(""));
        for dir in ["rx", "tx"] {
            let _ = writeln!(
                o,
                "vnetp_link_packets_total{{host=\"{host}\",link=\"{name}\",direction=\"{dir}\"}} {}",
                num(&l[format!("{dir}_packets")])
            );
            let _ = writeln!(
                o,
                "vnetp_link_bytes_total{{host=\"{host}\",link=\"{name}\",direction=\"{dir}\"}} {}",
                num(&l[format!("{dir}_bytes")])
            );
        }
    }
    family(
        "vnetp_interface_packets_total",
        "counter",
        "Frames through an interface.",
        &mut o,
    );
    family(
        "vnetp_interface_bytes_total",
        "counter",
        "Bytes through an interface.",
        &mut o,
    );
    for i in s["interfaces"].as_array().into_iter().flatten() {
        let name = esc(i["name"].as_str().unwrap_or(""));
        for dir in ["rx", "tx"] {
            let _ = writeln!(
                o,
                "vnetp_interface_packets_total{{host=\"{host}\",interface=\"{name}\",direction=\"{dir}\"}} {}",
                num(&i[format!("{dir}_packets")])
            );
            let _ = writeln!(
                o,
                "vnetp_interface_bytes_total{{host=\"{host}\",interface=\"{name}\",direction=\"{dir}\"}} {}",
                num(&i[format!("{dir}_bytes")])
            );
        }
    }
    family(
        "vnetp_port_drops_total",
        "counter",
        "Frames a port dropped, by reason.",
        &mut o,
    );
    let ports: Vec<&serde_json::Value> = std::iter::once(&s["underlay"])
        .chain(
            s["interfaces"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| &i["port"]),
        )
        .collect();
    for p in &ports {
        let port = esc(p["name"].as_str().unwrap_or(""));
        if let Some(d) = p["drops"].as_object() {
            for (reason, v) in d {
                let _ = writeln!(
                    o,
                    "vnetp_port_drops_total{{host=\"{host}\",port=\"{port}\",reason=\"{}\"}} {}",
                    esc(reason),
                    num(v)
                );
            }
        }
    }
    family(
        "vnetp_port_events_total",
        "counter",
        "Work a port did that is not a drop (offloads), by kind.",
        &mut o,
    );
    for p in &ports {
        let port = esc(p["name"].as_str().unwrap_or(""));
        if let Some(d) = p["events"].as_object() {
            for (event, v) in d {
                let _ = writeln!(
                    o,
                    "vnetp_port_events_total{{host=\"{host}\",port=\"{port}\",event=\"{}\"}} {}",
                    esc(event),
                    num(v)
                );
            }
        }
    }
    family(
        "vnetp_pool_buffers",
        "gauge",
        "Packet buffers in the pool, by state.",
        &mut o,
    );
    let _ = writeln!(
        o,
        "vnetp_pool_buffers{{host=\"{host}\",state=\"free\"}} {}",
        num(&s["pool"]["available"])
    );
    let _ = writeln!(
        o,
        "vnetp_pool_buffers{{host=\"{host}\",state=\"total\"}} {}",
        num(&s["pool"]["capacity"])
    );
    family(
        "vnetp_route_cache_lookups_total",
        "counter",
        "Route cache lookups, by result.",
        &mut o,
    );
    let _ = writeln!(
        o,
        "vnetp_route_cache_lookups_total{{host=\"{host}\",result=\"hit\"}} {}",
        num(&s["route_cache"]["hits"])
    );
    let _ = writeln!(
        o,
        "vnetp_route_cache_lookups_total{{host=\"{host}\",result=\"miss\"}} {}",
        num(&s["route_cache"]["misses"])
    );
    family("vnetp_routes", "gauge", "Routes in the table.", &mut o);
    let _ = writeln!(o, "vnetp_routes{{host=\"{host}\"}} {}", num(&s["routes"]));
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_escaped_labels() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"host":"a\"b","drops":{"no_route":3},"links":[{"name":"to-b","rx_packets":1,"rx_bytes":60,"tx_packets":2,"tx_bytes":120}],
               "interfaces":[{"name":"vm0","rx_packets":5,"rx_bytes":300,"tx_packets":6,"tx_bytes":360,"port":{"name":"tap:vm0","drops":{"rx_runt":1},"events":{"tx_gso_frames":9}}}],
               "underlay":{"name":"udp:x","drops":{"rx_truncated":4}},"pool":{"available":10,"capacity":16},"route_cache":{"hits":7,"misses":1},"routes":2}"#,
        )
        .unwrap();
        let t = render(&v);
        for line in [
            "vnetp_drops_total{host=\"a\\\"b\",reason=\"no_route\"} 3",
            "vnetp_link_packets_total{host=\"a\\\"b\",link=\"to-b\",direction=\"tx\"} 2",
            "vnetp_interface_bytes_total{host=\"a\\\"b\",interface=\"vm0\",direction=\"rx\"} 300",
            "vnetp_port_drops_total{host=\"a\\\"b\",port=\"udp:x\",reason=\"rx_truncated\"} 4",
            "vnetp_port_drops_total{host=\"a\\\"b\",port=\"tap:vm0\",reason=\"rx_runt\"} 1",
            "vnetp_port_events_total{host=\"a\\\"b\",port=\"tap:vm0\",event=\"tx_gso_frames\"} 9",
            "vnetp_pool_buffers{host=\"a\\\"b\",state=\"free\"} 10",
            "vnetp_route_cache_lookups_total{host=\"a\\\"b\",result=\"miss\"} 1",
            "# TYPE vnetp_routes gauge",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
    }
}
