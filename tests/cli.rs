//! The command line's errors: each says what is wrong in one line, exits non-zero,
//! never panics.

use std::path::Path;
use std::process::{Command, Output};

fn vnetp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vnetp"))
        .args(args)
        .output()
        .expect("run vnetp")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn tmp(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vnetp-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

const GOOD: &str = "[host]\nname = \"a\"\nunderlay = { kind = \"udp\", bind = \"127.0.0.1:0\" }\n\n[[link]]\nname = \"b\"\npeer = \"127.0.0.2:9000\"\n";

#[test]
fn check_accepts_a_good_config() {
    let p = tmp("good.toml", GOOD);
    let o = vnetp(&["run", "--check", "--config", p.to_str().unwrap_or_default()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("ok (host a, underlay udp, 1 link(s)"));
}

#[test]
fn missing_config_is_one_clear_line() {
    let o = vnetp(&["run", "--config", "/nonexistent/vnetp.toml"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.starts_with("vnetp: /nonexistent/vnetp.toml:0:0: cannot read"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");
}

#[test]
fn bad_config_names_file_line_column() {
    let p = tmp(
        "bad.toml",
        &GOOD.replace("127.0.0.2:9000", "127.0.0.2:99999"),
    );
    let o = vnetp(&["run", "--check", "--config", p.to_str().unwrap_or_default()]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("bad.toml:7:8: expected a peer address"), "{e}");
}

#[test]
fn ctl_without_daemon_says_what_to_do() {
    let o = vnetp(&["ctl", "--socket", "/nonexistent/a.sock", "stats"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("cannot connect to control socket /nonexistent/a.sock"),
        "{e}"
    );
    assert!(e.contains("is `vnetp run` running"), "{e}");
}

#[test]
fn unsupported_underlay_refused_at_start_with_reason() {
    let p = tmp(
        "xdp.toml",
        &GOOD.replace(
            "kind = \"udp\", bind = \"127.0.0.1:0\"",
            "kind = \"af_xdp\", ifname = \"lo\", ip = \"127.0.0.1\"",
        ),
    );
    let o = vnetp(&["run", "--config", p.to_str().unwrap_or_default()]);
    assert_eq!(o.status.code(), Some(1));
    // af_xdp exists now; on loopback it is refused with the reason.
    assert!(
        stderr(&o).contains("lo is not an Ethernet interface"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn demo_without_root_says_it_needs_root() {
    if !Path::new("/usr/bin/setpriv").exists() {
        eprintln!("setpriv missing: cannot drop privileges for this test");
        return;
    }
    let o = Command::new("/usr/bin/setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_vnetp"),
            "demo",
        ])
        .output()
        .expect("setpriv");
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.starts_with("vnetp: vnetp demo needs root"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
}

#[test]
fn control_socket_is_owner_only_and_answers_commands() {
    let sock = std::env::temp_dir().join(format!("vnetp-cli-{}/ctl.sock", std::process::id()));
    let p = tmp(
        "ctl.toml",
        &format!("{GOOD}\n[host.x]\n")
            .replace("\n[host.x]\n", "")
            .replace(
                "[host]\n",
                &format!("[host]\ncontrol = \"{}\"\n", sock.display()),
            ),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_vnetp"))
        .args(["run", "--config", p.to_str().unwrap_or_default()])
        .spawn()
        .expect("daemon");
    let ready = poll_30s(|| {
        vnetp(&["ctl", "--socket", sock.to_str().unwrap_or_default(), "help"])
            .status
            .success()
    });
    let mode = std::fs::metadata(&sock)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
    let list = vnetp(&[
        "ctl",
        "--socket",
        sock.to_str().unwrap_or_default(),
        "link",
        "list",
    ]);
    let bad = vnetp(&[
        "ctl",
        "--socket",
        sock.to_str().unwrap_or_default(),
        "route",
        "add",
        "src=zz",
    ]);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("wait daemon");
    assert!(ready, "daemon did not answer");
    assert_eq!(mode.ok(), Some(0o600));
    assert!(
        String::from_utf8_lossy(&list.stdout).starts_with("b peer=127.0.0.2:9000 encap=vnetp"),
        "{:?}",
        list
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("zz"), "{}", stderr(&bad));
    assert!(status.success(), "daemon exit after SIGTERM: {status}");
}

#[test]
fn control_socket_refuses_other_users() {
    if !Path::new("/usr/bin/setpriv").exists() || !rustix_is_root() {
        eprintln!("needs root and setpriv to act as another user");
        return;
    }
    let sock = std::env::temp_dir().join(format!("vnetp-cli-{}/perm.sock", std::process::id()));
    let p = tmp(
        "perm.toml",
        &GOOD.replace(
            "[host]\n",
            &format!("[host]\ncontrol = \"{}\"\n", sock.display()),
        ),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_vnetp"))
        .args(["run", "--config", p.to_str().unwrap_or_default()])
        .spawn()
        .expect("daemon");
    let ready = poll_30s(|| {
        vnetp(&["ctl", "--socket", sock.to_str().unwrap_or_default(), "help"])
            .status
            .success()
    });
    // Let "nobody" reach the socket's directory, so only the socket's own mode decides.
    let dir = sock.parent().map(Path::to_path_buf).unwrap_or_default();
    let _ = std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    let o = Command::new("/usr/bin/setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_vnetp"),
            "ctl",
            "--socket",
        ])
        .arg(&sock)
        .arg("stats")
        .output()
        .expect("setpriv");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    assert!(ready, "daemon did not answer");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
}

/// Polls `cond` every 20 ms until it holds, for up to 30 s: the daemon under test is
/// another process, which a busy machine may start late.
fn poll_30s(mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn rustix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A loopback TCP port nothing listens on, below the kernel's ephemeral range (32768 and
/// up by default), so no outgoing connection of another process can take it meanwhile;
/// the search starts from the pid so that parallel test processes try different ports.
fn free_tcp_port() -> u16 {
    let base = std::process::id() as usize;
    (0..12_000)
        .map(|i| 20_000 + ((base + i) % 12_000) as u16)
        .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free loopback port in 20000..32000")
}

#[test]
fn prometheus_metrics_are_served_when_configured() {
    use std::io::{Read, Write};
    let sock = std::env::temp_dir().join(format!("vnetp-cli-{}/metrics.sock", std::process::id()));
    let port = free_tcp_port();
    let p = tmp(
        "metrics.toml",
        &GOOD.replace(
            "[host]\n",
            &format!(
                "[host]\ncontrol = \"{}\"\nmetrics = \"127.0.0.1:{port}\"\n",
                sock.display()
            ),
        ),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_vnetp"))
        .args(["run", "--config", p.to_str().unwrap_or_default()])
        .spawn()
        .expect("daemon");
    let mut body = String::new();
    let got = poll_30s(|| {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
        body.clear();
        s.read_to_string(&mut body).is_ok() && body.starts_with("HTTP/1.0 200 OK")
    });
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    assert!(got, "no metrics answer: {body}");
    assert!(body.contains("text/plain; version=0.0.4"), "{body}");
    assert!(
        body.contains("vnetp_link_packets_total{host=\"a\",link=\"b\",direction=\"tx\"} 0"),
        "{body}"
    );
    assert!(body.contains("# TYPE vnetp_drops_total counter"), "{body}");
}
