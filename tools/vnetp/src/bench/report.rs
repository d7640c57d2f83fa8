//! Bench results: latency percentiles, throughput, overlay/native ratios, and their
//! renderings as a terminal table, CSV and JSON.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::proto::SinkCounts;

/// Round-trip latency of one path at one frame size, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Echoes received.
    pub samples: u64,
    /// Probes without an echo in time.
    pub lost: u64,
    /// Smallest round trip.
    pub min_us: Option<f64>,
    /// Median.
    pub p50_us: Option<f64>,
    /// 99th percentile.
    pub p99_us: Option<f64>,
    /// 99.9th percentile.
    pub p999_us: Option<f64>,
}

/// Nearest-rank percentile of sorted samples; `per_mille` 500 is the median (integer
/// arithmetic, so 99.9 % of 1000 samples is exactly rank 999).
fn percentile(sorted: &[u64], per_mille: usize) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (per_mille * sorted.len()).div_ceil(1000);
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

impl Latency {
    /// Summarises round trips in nanoseconds (sorts them).
    pub fn from_samples(ns: &mut [u64], lost: u64) -> Self {
        ns.sort_unstable();
        let us = |v: Option<u64>| v.map(|n| n as f64 / 1000.0);
        Self {
            samples: ns.len() as u64,
            lost,
            min_us: us(ns.first().copied()),
            p50_us: us(percentile(ns, 500)),
            p99_us: us(percentile(ns, 990)),
            p999_us: us(percentile(ns, 999)),
        }
    }
}

/// One-way throughput of one path at one frame size, as the receiver counted it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Datagrams the sender handed to its socket.
    pub sent: u64,
    /// Datagrams the receiver counted.
    pub received: u64,
    /// Seconds the sender sent for.
    pub send_secs: f64,
    /// Seconds between the receiver's first and last datagram.
    pub recv_secs: f64,
    /// Frames per second received: over `recv_secs`, or over `send_secs` when every
    /// frame came in one receive batch (no window of the receiver's own).
    pub pps: f64,
    /// Gbit/s of frames (frame size x pps) received.
    pub gbps: f64,
    /// Fraction of sent datagrams not received.
    pub loss: f64,
}

impl Throughput {
    /// From the sender's count and the receiver's report.
    pub fn new(size: usize, sent: u64, send_ns: u64, c: SinkCounts) -> Self {
        let recv_secs = c.elapsed_ns as f64 / 1e9;
        let send_secs = send_ns as f64 / 1e9;
        let pps = if c.count >= 2 && recv_secs > 0.0 {
            c.count as f64 / recv_secs
        } else if c.count > 0 && send_secs > 0.0 {
            // Everything arrived in one receive batch (a receiver that ran late, after
            // the sender): no window of its own, so over the time they were sent in.
            c.count as f64 / send_secs
        } else {
            0.0
        };
        let loss = if sent > 0 {
            (1.0 - c.count as f64 / sent as f64).clamp(0.0, 1.0)
        } else {
            0.0
        };
        Self {
            sent,
            received: c.count,
            send_secs,
            recv_secs,
            pps,
            gbps: pps * size as f64 * 8.0 / 1e9,
            loss,
        }
    }
}

/// One measured frame size on one path, as the prober prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Which of the prober's targets (paths) it was measured against, in order.
    #[serde(default)]
    pub path: usize,
    /// Frame size in bytes (Ethernet header + IPv4 + UDP + payload, no FCS).
    pub size: usize,
    /// Round trips.
    pub latency: Latency,
    /// One-way rate.
    pub throughput: Throughput,
}

/// A path compared against the native one at the same size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VsNative {
    /// This path's Gbit/s over native's (1.0: no cost; below 1: slower).
    pub throughput: Option<f64>,
    /// This path's median round trip over native's (1.0: no cost; above 1: slower).
    pub latency_p50: Option<f64>,
}

/// One table row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Frame size.
    pub size: usize,
    /// Path name: `native`, `overlay`, `kernel-vxlan`.
    pub path: String,
    /// Round trips.
    pub latency: Latency,
    /// One-way rate.
    pub throughput: Throughput,
    /// Ratios against the native path (absent on the native rows).
    pub vs_native: Option<VsNative>,
}

/// A whole bench run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Overlay encapsulation.
    pub encap: String,
    /// MTU of the overlay's tap devices (and of the kernel VXLAN devices).
    pub tap_mtu: u32,
    /// MTU of the veth underlay.
    pub underlay_mtu: u32,
    /// Frame sizes measured.
    pub sizes: Vec<usize>,
    /// Paths measured, native first.
    pub paths: Vec<String>,
    /// Every (size, path), sizes ascending, paths in `paths` order.
    pub rows: Vec<Row>,
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a > 0.0 => Some(a / b),
        _ => None,
    }
}

/// A ratio with two decimals, or three significant digits when it is below 0.1: an
/// overlay path measured at 0.3 % of native (a starved machine) prints as 0.00300, not
/// as a zero it is not.
fn fmt_ratio(v: f64) -> String {
    let decimals = if v > 0.0 && v < 0.1 {
        (2 - v.log10().floor() as i32).clamp(2, 12) as usize
    } else {
        2
    };
    format!("{v:.decimals$}")
}

impl Report {
    /// Builds the rows from each path's points; the first path is the native baseline.
    pub fn new(
        encap: &str,
        tap_mtu: u32,
        underlay_mtu: u32,
        sizes: &[usize],
        paths: &[(String, Vec<Point>)],
    ) -> Self {
        let mut rows = Vec::new();
        for &size in sizes {
            let native = paths
                .first()
                .and_then(|(_, pts)| pts.iter().find(|p| p.size == size));
            for (i, (name, pts)) in paths.iter().enumerate() {
                let Some(p) = pts.iter().find(|p| p.size == size) else {
                    continue;
                };
                let vs_native = match native {
                    Some(n) if i > 0 => Some(VsNative {
                        throughput: ratio(Some(p.throughput.gbps), Some(n.throughput.gbps)),
                        latency_p50: ratio(p.latency.p50_us, n.latency.p50_us),
                    }),
                    _ => None,
                };
                rows.push(Row {
                    size,
                    path: name.clone(),
                    latency: p.latency.clone(),
                    throughput: p.throughput.clone(),
                    vs_native,
                });
            }
        }
        Self {
            encap: encap.to_string(),
            tap_mtu,
            underlay_mtu,
            sizes: sizes.to_vec(),
            paths: paths.iter().map(|(n, _)| n.clone()).collect(),
            rows,
        }
    }

    /// The terminal table.
    pub fn table(&self) -> String {
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        let r = |v: Option<f64>| v.map_or("-".to_string(), fmt_ratio);
        let mut s = String::new();
        // As wide as the longest path name ("overlay (vhost-user guests)").
        let w = self.paths.iter().map(String::len).fold(13, usize::max);
        let _ = writeln!(
            s,
            "{:>6} {:<w$} {:>8} {:>8} {:>8} {:>8} {:>10} {:>8} {:>6}  {:>13} {:>13}",
            "frame",
            "path",
            "min us",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "kpps",
            "Gbit/s",
            "loss",
            "tput/native",
            "p50/native"
        );
        for row in &self.rows {
            let (t, l) = (&row.throughput, &row.latency);
            let (tr, lr) = row.vs_native.map_or(("".into(), "".into()), |v| {
                (r(v.throughput), r(v.latency_p50))
            });
            let _ = writeln!(
                s,
                "{:>6} {:<w$} {:>8} {:>8} {:>8} {:>8} {:>10.1} {:>8.3} {:>5.1}%  {:>13} {:>13}",
                row.size,
                row.path,
                f(l.min_us),
                f(l.p50_us),
                f(l.p99_us),
                f(l.p999_us),
                t.pps / 1e3,
                t.gbps,
                t.loss * 100.0,
                tr,
                lr
            );
        }
        s
    }

    /// CSV with a header line.
    pub fn csv(&self) -> String {
        let o = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
        let mut s = String::from(
            "frame_bytes,path,latency_samples,latency_lost,min_us,p50_us,p99_us,p999_us,sent,received,pps,gbps,loss,throughput_vs_native,p50_vs_native\n",
        );
        for row in &self.rows {
            let (t, l) = (&row.throughput, &row.latency);
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{},{},{:.1},{:.4},{:.4},{},{}",
                row.size,
                row.path,
                l.samples,
                l.lost,
                o(l.min_us),
                o(l.p50_us),
                o(l.p99_us),
                o(l.p999_us),
                t.sent,
                t.received,
                t.pps,
                t.gbps,
                t.loss,
                o(row.vs_native.and_then(|v| v.throughput)),
                o(row.vs_native.and_then(|v| v.latency_p50)),
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_ratios_keep_three_significant_digits_and_others_two_decimals() {
        assert_eq!(fmt_ratio(0.5), "0.50");
        assert_eq!(fmt_ratio(3.0), "3.00");
        assert_eq!(fmt_ratio(0.0), "0.00");
        assert_eq!(fmt_ratio(0.0512), "0.0512");
        assert_eq!(fmt_ratio(0.003_14), "0.00314");
        assert_eq!(fmt_ratio(0.1), "0.10");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<u64> = (1..=1000).rev().map(|x| x * 1000).collect();
        let l = Latency::from_samples(&mut v, 3);
        assert_eq!(l.samples, 1000);
        assert_eq!(l.lost, 3);
        assert_eq!(l.min_us, Some(1.0));
        assert_eq!(l.p50_us, Some(500.0));
        assert_eq!(l.p99_us, Some(990.0));
        assert_eq!(l.p999_us, Some(999.0));
        let e = Latency::from_samples(&mut [], 5);
        assert_eq!((e.samples, e.p50_us), (0, None));
    }

    #[test]
    fn throughput_counts_frames_received_per_second() {
        let c = SinkCounts {
            count: 1000,
            bytes: 1000 * 1458,
            elapsed_ns: 500_000_000,
        };
        let t = Throughput::new(1500, 1250, 510_000_000, c);
        assert_eq!(t.pps, 2000.0);
        assert_eq!(t.gbps, 2000.0 * 1500.0 * 8.0 / 1e9);
        assert!((t.loss - 0.2).abs() < 1e-12, "{}", t.loss);
        let none = Throughput::new(64, 10, 1, SinkCounts::default());
        assert_eq!((none.pps, none.loss), (0.0, 1.0));
        // All 64 read in one batch: no receive window, the send time stands in.
        let burst = SinkCounts {
            count: 64,
            bytes: 64 * 22,
            elapsed_ns: 0,
        };
        let t = Throughput::new(64, 64, 500_000_000, burst);
        assert_eq!((t.pps, t.loss), (128.0, 0.0));
    }

    fn point(size: usize, gbps: f64, p50: f64) -> Point {
        Point {
            path: 0,
            size,
            latency: Latency {
                samples: 1,
                p50_us: Some(p50),
                ..Latency::default()
            },
            throughput: Throughput {
                gbps,
                ..Throughput::default()
            },
        }
    }

    #[test]
    fn rows_carry_ratios_against_native_and_render_everywhere() {
        let paths = vec![
            (
                "native".to_string(),
                vec![point(64, 2.0, 10.0), point(1500, 8.0, 20.0)],
            ),
            (
                "overlay".to_string(),
                vec![point(64, 1.0, 30.0), point(1500, 0.0, 40.0)],
            ),
        ];
        let r = Report::new("vnetp", 9000, 65535, &[64, 1500], &paths);
        assert_eq!(r.rows.len(), 4);
        assert_eq!(r.rows[0].vs_native, None);
        assert_eq!(
            r.rows[1].vs_native,
            Some(VsNative {
                throughput: Some(0.5),
                latency_p50: Some(3.0)
            })
        );
        assert_eq!(r.rows[3].vs_native.and_then(|v| v.throughput), None);
        let table = r.table();
        assert_eq!(table.lines().count(), 5, "{table}");
        assert!(
            table
                .lines()
                .nth(2)
                .is_some_and(|l| l.contains("overlay") && l.contains("0.50") && l.contains("3.00")),
            "{table}"
        );
        let csv = r.csv();
        assert_eq!(csv.lines().count(), 5);
        assert!(
            csv.lines()
                .nth(2)
                .is_some_and(|l| l.starts_with("64,overlay,") && l.ends_with(",0.500,3.000")),
            "{csv}"
        );
        let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, r);
    }
}
