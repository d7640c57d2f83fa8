//! The operator's commands, run as the real binary against this machine: `status` on
//! its real sysfs, `bind`/`unbind` refusing what they must (no such device, bad
//! address, no root, a NIC carrying the host's routes, no IOMMU) without touching any
//! device, the bench agents over loopback, and `bench` and `demo` between two hosts in
//! network namespaces. The bind happy path needs an IOMMU: it runs in the VFIO VM
//! harness, and its checks are unit-tested on a sysfs-shaped tree in `bind.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use assert_cmd::Command;

const EXE: &str = env!("CARGO_BIN_EXE_vnetp");

fn vnetp(args: &[&str]) -> Output {
    Command::new(EXE)
        .args(args)
        .timeout(Duration::from_secs(120))
        .output()
        .expect("run vnetp")
}

/// Runs vnetp as user nobody (uid 65534), as tests/cli.rs does.
fn vnetp_as_nobody(args: &[&str]) -> Option<Output> {
    if !Path::new("/usr/bin/setpriv").exists() {
        eprintln!("setpriv missing: cannot drop privileges for this test");
        return None;
    }
    let mut v = vec!["--reuid=65534", "--regid=65534", "--clear-groups", EXE];
    v.extend_from_slice(args);
    Some(
        Command::new("/usr/bin/setpriv")
            .args(v)
            .timeout(Duration::from_secs(60))
            .output()
            .expect("setpriv"),
    )
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// One line on stderr, starting with `vnetp: ` + `start`, exit code 1.
fn assert_one_line_error(o: &Output, start: &str) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.starts_with(&format!("vnetp: {start}")), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
}

fn need_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (network namespaces, veth, tap): run it with sudo"
    );
}

/// PCI network controllers and their drivers, read from sysfs by the test itself.
fn sysfs_nics() -> BTreeMap<String, Option<String>> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir("/sys/bus/pci/devices")
        .expect("sysfs")
        .flatten()
    {
        let class = std::fs::read_to_string(e.path().join("class")).unwrap_or_default();
        if class.trim().starts_with("0x02") {
            let driver = std::fs::read_link(e.path().join("driver"))
                .ok()
                .and_then(|p| Some(p.file_name()?.to_string_lossy().into_owned()));
            m.insert(e.file_name().to_string_lossy().into_owned(), driver);
        }
    }
    m
}

/// The PCI address of each interface in `ip route` (the main table), if PCI-backed.
fn routed_pci_nic() -> Option<(String, String)> {
    let routes = std::process::Command::new("ip")
        .args(["-4", "route", "show"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&routes.stdout).into_owned();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        while let Some(w) = words.next() {
            if w == "dev"
                && let Some(ifname) = words.next()
            {
                let dev = std::fs::canonicalize(format!("/sys/class/net/{ifname}/device")).ok()?;
                // A virtio NIC's netdev hangs off virtioN under the PCI function.
                for p in dev.ancestors() {
                    let name = p.file_name()?.to_string_lossy().into_owned();
                    if sysfs_nics().contains_key(&name) {
                        return Some((name, ifname.to_string()));
                    }
                }
            }
        }
    }
    None
}

#[test]
fn status_lists_every_nic_of_this_host_as_text_and_json() {
    let nics = sysfs_nics();
    let text = vnetp(&["status"]);
    assert!(text.status.success(), "{}", stderr(&text));
    let t = stdout(&text);
    let json = vnetp(&["status", "--json"]);
    assert!(json.status.success(), "{}", stderr(&json));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("status --json");
    let listed: BTreeMap<String, Option<String>> = v["nics"]
        .as_array()
        .expect("nics array")
        .iter()
        .map(|n| {
            (
                n["address"].as_str().unwrap_or_default().to_string(),
                n["driver"].as_str().map(str::to_string),
            )
        })
        .collect();
    assert_eq!(listed, nics, "status --json vs sysfs");
    for (addr, driver) in &nics {
        assert!(t.contains(addr.as_str()), "{addr} missing from:\n{t}");
        if let Some(d) = driver {
            assert!(t.contains(&format!("driver {d}")), "{t}");
        }
    }
    let iommu = std::fs::read_dir("/sys/kernel/iommu_groups")
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    assert_eq!(v["iommu_enabled"].as_bool(), Some(iommu));
    if let Some((addr, ifname)) = routed_pci_nic() {
        let n = v["nics"]
            .as_array()
            .and_then(|a| a.iter().find(|n| n["address"] == addr.as_str()))
            .cloned()
            .unwrap_or_default();
        let state = std::fs::read_to_string(format!("/sys/class/net/{ifname}/operstate"))
            .unwrap_or_default();
        assert!(
            n["netdevs"].as_array().is_some_and(|d| d
                .iter()
                .any(|d| d["name"] == ifname.as_str() && d["operstate"] == state.trim())),
            "{n}"
        );
    }
}

#[test]
fn status_works_without_root() {
    let Some(o) = vnetp_as_nobody(&["status", "--json"]) else {
        return;
    };
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["nics"].as_array().map(Vec::len), Some(sysfs_nics().len()));
}

#[test]
fn bind_and_unbind_refuse_a_bad_address() {
    for cmd in ["bind", "unbind"] {
        let o = vnetp(&[cmd, "eth0"]);
        assert_one_line_error(
            &o,
            "bad PCI address \"eth0\": expected DOMAIN:BUS:DEVICE.FUNCTION",
        );
        let o = vnetp(&[cmd, "0000:01:00.9"]);
        assert_one_line_error(&o, "bad PCI address \"0000:01:00.9\"");
    }
}

#[test]
fn bind_and_unbind_refuse_a_missing_device() {
    for cmd in ["bind", "unbind"] {
        let o = vnetp(&[cmd, "0000:99:00.0"]);
        assert_one_line_error(
            &o,
            "no such device 0000:99:00.0: `vnetp status` lists the NICs",
        );
    }
}

#[test]
fn bind_and_unbind_refuse_a_device_that_is_not_a_nic() {
    let other = std::fs::read_dir("/sys/bus/pci/devices")
        .expect("sysfs")
        .flatten()
        .find(|e| {
            !std::fs::read_to_string(e.path().join("class"))
                .unwrap_or_default()
                .starts_with("0x02")
        });
    let Some(other) = other else {
        eprintln!("every PCI device here is a NIC: nothing to test");
        return;
    };
    let addr = other.file_name().to_string_lossy().into_owned();
    let o = vnetp(&["bind", &addr]);
    assert_one_line_error(&o, &format!("{addr} is not a network controller"));
}

#[test]
fn bind_and_unbind_without_root_say_so() {
    let Some(addr) = sysfs_nics().keys().next().cloned() else {
        eprintln!("no NIC on this machine: nothing to test");
        return;
    };
    for cmd in ["bind", "unbind"] {
        let Some(o) = vnetp_as_nobody(&[cmd, &addr]) else {
            return;
        };
        assert_one_line_error(
            &o,
            &format!("vnetp {cmd} needs root: it writes to /sys/bus/pci"),
        );
    }
}

#[test]
fn bind_refuses_the_nic_carrying_the_hosts_routes_and_changes_nothing() {
    need_root();
    let Some((addr, ifname)) = routed_pci_nic() else {
        eprintln!("no PCI NIC carries a route here: nothing to test");
        return;
    };
    let before = sysfs_nics();
    let o = vnetp(&["bind", &addr]);
    assert_one_line_error(&o, &format!("{addr} ({ifname}) carries this host's routes"));
    assert!(stderr(&o).contains("pass --force"), "{}", stderr(&o));
    assert_eq!(sysfs_nics(), before, "a refused bind changed a driver");
}

#[test]
fn bind_without_iommu_says_how_to_enable_it_and_changes_nothing() {
    need_root();
    if std::fs::read_dir("/sys/kernel/iommu_groups").is_ok_and(|mut d| d.next().is_some()) {
        eprintln!("this machine has an IOMMU: the VFIO VM harness tests bind instead");
        return;
    }
    let Some(addr) = sysfs_nics().keys().next().cloned() else {
        eprintln!("no NIC on this machine: nothing to test");
        return;
    };
    let before = sysfs_nics();
    // --force gets past the routes check; without an IOMMU nothing can be bound.
    let o = vnetp(&["bind", "--force", &addr]);
    assert_one_line_error(&o, "IOMMU disabled: boot with intel_iommu=on iommu=pt");
    assert_eq!(sysfs_nics(), before, "a refused bind changed a driver");
}

#[test]
fn unbind_of_a_nic_not_on_vfio_changes_nothing() {
    need_root();
    let Some((addr, driver)) = sysfs_nics().into_iter().next() else {
        eprintln!("no NIC on this machine: nothing to test");
        return;
    };
    if driver.as_deref() == Some("vfio-pci") {
        return;
    }
    let before = sysfs_nics();
    let o = vnetp(&["unbind", &addr]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("not on vfio-pci"), "{}", stdout(&o));
    assert_eq!(sysfs_nics(), before);
}

#[test]
fn bench_and_demo_without_root_say_so_in_one_line() {
    for cmd in ["bench", "demo"] {
        let Some(o) = vnetp_as_nobody(&[cmd, "--quick"]) else {
            return;
        };
        assert_one_line_error(&o, &format!("vnetp {cmd} needs root"));
    }
}

#[test]
fn bench_refuses_bad_sizes_and_encap() {
    let o = vnetp(&["bench", "--sizes", "10,1500"]);
    assert_one_line_error(&o, "frame size 10 out of range: sizes must be 58..=");
    let o = vnetp(&["bench", "--encap", "gre"]);
    assert_one_line_error(&o, "unknown encap \"gre\": expected vnetp or vxlan");
    let o = vnetp(&["bench", "--sizes", "64,big"]);
    assert_eq!(o.status.code(), Some(2), "clap rejects non-numbers");
    let o = vnetp(&["bench", "--shards", "17"]);
    assert_one_line_error(&o, "--shards 17 out of range: 1..=16");
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The agents alone over loopback: no namespaces, no root.
#[test]
fn bench_agents_measure_loopback_and_print_one_json_line_per_size() {
    let port = free_udp_port().to_string();
    let mut serve = std::process::Command::new(EXE)
        .args(["bench-agent", "serve", "--port", &port, "--seconds", "30"])
        .spawn()
        .expect("reflector");
    let target = format!("127.0.0.1:{port}");
    let o = vnetp(&[
        "bench-agent",
        "probe",
        "--target",
        &target,
        "--sizes",
        "64,1500,9000",
        "--latency-count",
        "200",
        "--latency-ms",
        "200",
        "--throughput-ms",
        "150",
    ]);
    let _ = serve.kill();
    let _ = serve.wait();
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 3);
    for (p, size) in lines.iter().zip([64, 1500, 9000]) {
        assert_eq!(p["size"], size);
        check_latency(&p["latency"], p);
        check_throughput(&p["throughput"], size as f64, p);
    }
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn check_latency(l: &serde_json::Value, ctx: &serde_json::Value) {
    assert!(l["samples"].as_u64().unwrap_or(0) > 0, "no echo: {ctx}");
    let (min, p50, p99, p999) = (
        f(&l["min_us"]),
        f(&l["p50_us"]),
        f(&l["p99_us"]),
        f(&l["p999_us"]),
    );
    assert!(
        min > 0.0 && min <= p50 && p50 <= p99 && p99 <= p999,
        "{ctx}"
    );
}

fn check_throughput(t: &serde_json::Value, size: f64, ctx: &serde_json::Value) {
    let (sent, recv) = (
        t["sent"].as_u64().unwrap_or(0),
        t["received"].as_u64().unwrap_or(0),
    );
    assert!(recv > 1 && recv <= sent, "{ctx}");
    let (pps, gbps) = (f(&t["pps"]), f(&t["gbps"]));
    assert!(pps > 0.0, "{ctx}");
    assert!(
        (gbps - pps * size * 8.0 / 1e9).abs() <= 1e-6 * gbps.max(1.0),
        "{ctx}"
    );
    let loss = f(&t["loss"]);
    assert!((0.0..=1.0).contains(&loss), "{ctx}");
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vnetp-cli-operator-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("scratch dir");
    d.join(name)
}

#[test]
fn bench_quick_writes_sane_json_csv_and_svg() {
    need_root();
    let (json, csv, svg) = (scratch("b.json"), scratch("b.csv"), scratch("b.svg"));
    let o = vnetp(&[
        "bench",
        "--quick",
        "--json",
        json.to_str().unwrap_or_default(),
        "--csv",
        csv.to_str().unwrap_or_default(),
        "--svg",
        svg.to_str().unwrap_or_default(),
    ]);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json file")).expect("JSON");
    assert_eq!(
        v["paths"],
        serde_json::json!(["native", "overlay", "kernel-vxlan"])
    );
    assert_eq!(v["sizes"], serde_json::json!([64, 1500, 9000]));
    assert_eq!(v["tap_mtu"], 8986);
    let rows = v["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 9, "{v}");
    for r in rows {
        check_latency(&r["latency"], r);
        check_throughput(&r["throughput"], f(&r["size"]), r);
        if r["path"] == "native" {
            assert!(r["vs_native"].is_null(), "{r}");
        } else {
            assert!(f(&r["vs_native"]["throughput"]) > 0.0, "{r}");
            assert!(f(&r["vs_native"]["latency_p50"]) > 0.0, "{r}");
        }
    }
    let c = std::fs::read_to_string(&csv).expect("csv file");
    assert_eq!(c.lines().count(), 10, "{c}");
    assert!(c.starts_with("frame_bytes,path,"), "{c}");
    let s = std::fs::read_to_string(&svg).expect("svg file");
    assert!(s.starts_with("<svg") && s.contains("kernel-vxlan"), "svg");
    let out = stdout(&o);
    assert!(
        out.contains("tput/native") && out.contains(&format!("plot: {}", svg.display())),
        "{out}"
    );
    for f in [json, csv, svg] {
        let _ = std::fs::remove_file(f);
    }
}

#[test]
fn demo_quick_shows_overlay_and_native_rows_with_ratios() {
    need_root();
    let svg = scratch("demo.svg");
    let o = vnetp(&["demo", "--quick", "--svg", svg.to_str().unwrap_or_default()]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(
        out.contains("native (veth)") && out.contains("overlay (vnetp)"),
        "{out}"
    );
    assert!(out.contains("overlay/native"), "{out}");
    let ping = out
        .lines()
        .find(|l| l.starts_with("ping rtt"))
        .unwrap_or_default();
    // Two measurements and their ratio, all numbers.
    assert_eq!(ping.matches(" ms").count(), 2, "{out}");
    let ratio = ping.split_whitespace().last().unwrap_or_default();
    assert!(ratio.parse::<f64>().is_ok_and(|r| r > 0.0), "{ping}");
    for path in ["native", "overlay", "kernel-vxlan"] {
        for size in ["64", "1500", "9000"] {
            let row = out.lines().find(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.first() == Some(&size) && w.get(1) == Some(&path)
            });
            let row = row.unwrap_or_else(|| panic!("no {size} {path} row in:\n{out}"));
            if path != "native" {
                let w: Vec<&str> = row.split_whitespace().collect();
                let last2 = &w[w.len() - 2..];
                assert!(
                    last2
                        .iter()
                        .all(|x| x.parse::<f64>().is_ok_and(|r| r > 0.0)),
                    "ratios in {row}"
                );
            }
        }
    }
    assert!(out.contains(&format!("plot: {}", svg.display())), "{out}");
    assert!(svg.exists());
    let _ = std::fs::remove_file(&svg);
    assert!(
        out.contains("demo: overlay carried ping, TCP and the bench"),
        "{out}"
    );
}

// ---- In a QEMU guest with an emulated 82576 behind a virtual IOMMU (tests/vm) ----

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// QEMU with igb and the cached guest image (`sudo scripts/setup.sh` installs QEMU; the
/// harness builds its cache on first use).
fn vm_ready() {
    let has_igb = std::process::Command::new("qemu-system-x86_64")
        .args(["-device", "help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("\"igb\""))
        .unwrap_or(false);
    assert!(
        has_igb,
        "QEMU with the igb device is missing: run `sudo scripts/setup.sh`"
    );
    let out = Command::new(repo().join("tests/vm/harness.sh"))
        .arg("cache")
        .timeout(Duration::from_secs(600))
        .output()
        .expect("tests/vm/harness.sh cache");
    assert!(
        out.status.success(),
        "guest image: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// vnetp built as a static binary (the guest has no libc), stripped to keep the
/// guest's initramfs small.
fn static_vnetp() -> PathBuf {
    const TRIPLE: &str = "x86_64-unknown-linux-gnu";
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(repo())
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "vnetp",
            "--bin",
            "vnetp",
        ])
        .args(["--target", TRIPLE])
        .env_remove("RUSTFLAGS")
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static")
        .timeout(Duration::from_secs(1200))
        .output()
        .expect("cargo build (static vnetp)");
    assert!(out.status.success(), "static build: {}", stderr(&out));
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from);
    let built = target.join(TRIPLE).join("release/vnetp");
    let copy = scratch("vnetp-static");
    std::fs::copy(&built, &copy).expect("copy the static vnetp");
    let _ = std::process::Command::new("strip").arg(&copy).status();
    copy
}

/// Boots the guest in `mode`, runs `vnetp ARGS` there; its exit status and the lines
/// it printed (between the harness's own lines).
fn in_guest(mode: &str, exe: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let log = scratch(&format!(
        "serial-{mode}-{}.log",
        args.join("_").replace('/', "")
    ));
    let out = Command::new(repo().join("tests/vm/harness.sh"))
        .arg("run")
        .arg(mode)
        .arg(exe)
        .args(args)
        .env("VM_TIMEOUT", "150")
        .env("VM_LOG", &log)
        .timeout(Duration::from_secs(400))
        .output()
        .expect("tests/vm/harness.sh run");
    let all = format!("{}{}", stdout(&out), stderr(&out));
    let serial: Vec<&str> = all
        .lines()
        .filter_map(|l| l.strip_prefix("serial: "))
        .collect();
    let start = serial.iter().position(|l| l.starts_with("harness: mode="));
    let end = serial
        .iter()
        .position(|l| l.starts_with("harness: payload exit"));
    let printed = match (start, end) {
        (Some(s), Some(e)) if s < e => serial[s + 1..e].join("\n"),
        _ => String::new(),
    };
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(log.with_extension("log.qemu"));
    (out.status.code(), printed, all)
}

fn guest_status(exe: &Path, mode: &str) -> serde_json::Value {
    let (code, printed, all) = in_guest(mode, exe, &["status", "--json"]);
    assert_eq!(code, Some(0), "status in the guest:\n{all}");
    serde_json::from_str(&printed).unwrap_or_else(|e| panic!("status JSON ({e}):\n{all}"))
}

fn igb_pf(status: &serde_json::Value) -> serde_json::Value {
    status["nics"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|n| n["vendor_id"] == "8086" && n["device_id"] == "10c9")
        })
        .cloned()
        .unwrap_or_else(|| panic!("no 82576 in the guest's status: {status}"))
}

/// Four guest boots (about 7 s each under TCG): `status` and `bind` with the kernel's
/// igb on the NIC, then `status` and `unbind` with the NIC on vfio-pci. The harness runs
/// one command per boot, so the second pair starts from the harness's own binding;
/// `bind` and `unbind` read the driver back from sysfs before they report success.
#[test]
fn bind_unbind_and_status_on_igb_in_a_qemu_guest() {
    need_root();
    vm_ready();
    let exe = static_vnetp();

    let st = guest_status(&exe, "igb");
    assert_eq!(st["iommu_enabled"], true, "{st}");
    let pf = igb_pf(&st);
    let addr = pf["address"].as_str().unwrap_or_default().to_string();
    assert_eq!(pf["driver"], "igb", "{pf}");
    assert!(pf["iommu_group"].is_u64(), "{pf}");
    assert_eq!(pf["sriov"]["totalvfs"], 7, "{pf}");
    // The guest has no pci.ids: names are absent, never wrong.
    assert!(pf["device_name"].is_null(), "{pf}");

    let (code, printed, all) = in_guest("igb", &exe, &["bind", &addr]);
    assert_eq!(code, Some(0), "bind in the guest:\n{all}");
    assert!(
        printed.contains(&format!("{addr}: igb -> vfio-pci")),
        "{printed}\n{all}"
    );

    let st = guest_status(&exe, "pf-vfio");
    assert_eq!(igb_pf(&st)["driver"], "vfio-pci", "{st}");

    let (code, printed, all) = in_guest("pf-vfio", &exe, &["unbind", &addr]);
    assert_eq!(code, Some(0), "unbind in the guest:\n{all}");
    assert!(
        printed.contains(&format!("{addr}: vfio-pci -> igb")),
        "{printed}\n{all}"
    );
    let _ = std::fs::remove_file(&exe);
}

/// The overlay path with vhost-user guests (our virtio-user frontend on each daemon's
/// vhost-user interface) instead of taps: same rows, same checks, its own label.
#[test]
fn bench_quick_with_vhost_user_guests_measures_the_overlay_guest_to_guest() {
    need_root();
    let json = scratch("bvu.json");
    let svg = scratch("bvu.svg");
    let o = vnetp(&[
        "bench",
        "--quick",
        "--guest",
        "vhost-user",
        "--no-kernel-vxlan",
        "--json",
        json.to_str().unwrap_or_default(),
        "--svg",
        svg.to_str().unwrap_or_default(),
    ]);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json file")).expect("JSON");
    assert_eq!(
        v["paths"],
        serde_json::json!(["native", "overlay (vhost-user guests)"])
    );
    let rows = v["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 6, "{v}");
    for r in rows {
        check_latency(&r["latency"], r);
        check_throughput(&r["throughput"], f(&r["size"]), r);
    }
    let out = stdout(&o);
    assert!(out.contains("vhost-user guests at MTU 8986"), "{out}");
    for f in [json, svg] {
        let _ = std::fs::remove_file(f);
    }
}
