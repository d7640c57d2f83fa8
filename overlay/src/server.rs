//! The control socket: a Unix stream socket (mode 0600, owner-only) that takes one
//! command per line and answers each with zero or more lines of text followed by a
//! line `ok` or `error: <message>`.
//!
//! The server only parses and forwards: each command travels to the engine's thread
//! (to every shard's, with several: see [`EngineHandle`]) as a [`Request`] and is
//! applied between two forwarding rounds, so the tables are never shared or locked. Peers must run as root or as the daemon's own user
//! (checked with SO_PEERCRED).

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::control::{Command, parse_command};
use crate::engine::{Request, Stats};
use crate::shard::ShardRegistry;
use crate::types::EndpointRef;

/// Most control connections served at once.
pub const MAX_CLIENTS: usize = 16;

/// Longest command line accepted.
pub const MAX_LINE: usize = 4096;

/// Errors starting the control server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The socket could not be created.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another daemon answers on the path.
    #[error("control socket {0} is in use by a running daemon")]
    InUse(PathBuf),
}

/// A way to send commands to the engine threads from any other thread (control socket
/// clients, the metrics endpoint). Cheap to clone.
///
/// With several shards every command goes to every shard: all are sent, then all
/// answers awaited. A change answers shard 0's reply when every shard applied it; when
/// only some did, it is undone where it can be (an `interface add`, `link add` or a
/// route change on the shards that made it) and the first error is the answer. Read-only
/// listings answer shard 0's text (the tables are the same on every shard); `stats`
/// and `link list` report the shards' counters merged ([`Stats::merge`]). A capture of
/// an interface runs on its owning shard.
#[derive(Clone)]
pub struct EngineHandle {
    shards: Vec<ShardTx>,
    registry: Option<Arc<ShardRegistry>>,
}

#[derive(Clone)]
struct ShardTx {
    tx: mpsc::Sender<Request>,
    waker: Arc<OwnedFd>,
}

type Answer = Result<String, String>;

impl ShardTx {
    fn send(&self, cmd: Command) -> Option<mpsc::Receiver<Answer>> {
        let (rtx, rrx) = mpsc::channel();
        self.tx.send(Request { cmd, reply: rtx }).ok()?;
        let _ = rustix::io::write(&*self.waker, &[1]);
        Some(rrx)
    }

    fn call(&self, cmd: Command, wait: Duration) -> Answer {
        match self.send(cmd) {
            None => Err("the engine has stopped".to_string()),
            Some(rx) => rx
                .recv_timeout(wait)
                .unwrap_or_else(|_| Err("the engine did not answer".to_string())),
        }
    }
}

impl EngineHandle {
    /// Which shard owns each interface (`None` with one shard).
    pub fn registry(&self) -> Option<&Arc<ShardRegistry>> {
        self.registry.as_ref()
    }

    /// Sends `cmd` and waits up to `wait` for the engine's answer.
    pub fn call(&self, cmd: Command, wait: Duration) -> Answer {
        let n = self.shards.len();
        if n == 1 {
            return self.shards[0].call(cmd, wait);
        }
        match cmd {
            Command::Capture { ref endpoint, .. } => match endpoint {
                EndpointRef::Link(_) => Err(format!(
                    "capture of a link or the underlay needs shards = 1 (frames spread over {n} shards)"
                )),
                EndpointRef::Interface(name) => {
                    // An unknown name: shard 0 says so.
                    let owner = self
                        .registry
                        .as_ref()
                        .and_then(|r| r.owner(name))
                        .unwrap_or(0);
                    self.shards
                        .get(owner)
                        .map_or_else(|| Err("no such shard".to_string()), |s| s.call(cmd, wait))
                }
            },
            Command::Stats { json } => {
                let merged = self.merged_stats(wait)?;
                if json {
                    serde_json::to_string(&merged).map_err(|e| format!("cannot encode stats: {e}"))
                } else {
                    Ok(crate::ctl::stats_table(&merged))
                }
            }
            Command::LinkList => {
                let merged = self.merged_stats(wait)?;
                let lines: Vec<String> = merged
                    .links
                    .iter()
                    .map(|l| crate::ctl::link_line(&l.name, &l.peer, &l.encap, &l.counters))
                    .collect();
                Ok(lines.join("\n"))
            }
            Command::Nop | Command::Help | Command::RouteList | Command::InterfaceList => {
                self.all(&cmd, wait).swap_remove(0)
            }
            Command::LinkAdd { .. }
            | Command::LinkDel { .. }
            | Command::RouteAdd(_)
            | Command::RouteDel(_)
            | Command::InterfaceAdd(_)
            | Command::InterfaceDel { .. }
            | Command::Reload => self.change(cmd, wait),
        }
    }

    /// Sends `cmd` to every shard, then waits for every answer (within `wait` in all).
    fn all(&self, cmd: &Command, wait: Duration) -> Vec<Answer> {
        let pending: Vec<_> = self.shards.iter().map(|s| s.send(cmd.clone())).collect();
        let deadline = Instant::now() + wait;
        pending
            .into_iter()
            .map(|rx| match rx {
                None => Err("the engine has stopped".to_string()),
                Some(rx) => rx
                    .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                    .unwrap_or_else(|_| Err("the engine did not answer".to_string())),
            })
            .collect()
    }

    /// A change on every shard, undone where it can be on shards that made it when
    /// others did not.
    fn change(&self, cmd: Command, wait: Duration) -> Answer {
        let answers = self.all(&cmd, wait);
        let Some(first_err) = answers.iter().position(Result::is_err) else {
            return answers.into_iter().next().unwrap_or(Ok(String::new()));
        };
        let made: Vec<usize> = (0..answers.len()).filter(|&i| answers[i].is_ok()).collect();
        if !made.is_empty() {
            let undo = match &cmd {
                Command::InterfaceAdd(cfg) => Some(Command::InterfaceDel {
                    name: cfg.name.clone(),
                }),
                Command::LinkAdd { name, .. } => Some(Command::LinkDel { name: name.clone() }),
                Command::RouteAdd(spec) => Some(Command::RouteDel(spec.clone())),
                Command::RouteDel(spec) => Some(Command::RouteAdd(spec.clone())),
                _ => None,
            };
            let undone = undo.is_some_and(|u| {
                made.iter()
                    .all(|&i| self.shards[i].call(u.clone(), wait).is_ok())
            });
            tracing::warn!(
                command = ?cmd,
                applied_on = ?made,
                undone,
                "shards diverged: the command failed on some shards only"
            );
        }
        answers
            .into_iter()
            .nth(first_err)
            .unwrap_or_else(|| Err("no shard answered".into()))
    }

    /// Every shard's statistics (asked as JSON and read back typed), merged.
    fn merged_stats(&self, wait: Duration) -> Result<Stats, String> {
        let mut parts = Vec::with_capacity(self.shards.len());
        for a in self.all(&Command::Stats { json: true }, wait) {
            let s: Stats =
                serde_json::from_str(&a?).map_err(|e| format!("cannot read shard stats: {e}"))?;
            parts.push(s);
        }
        Stats::merge(parts).ok_or_else(|| "no shard answered".to_string())
    }
}

/// A channel to the engine: the handle for other threads, the end the engine polls.
pub fn engine_channel() -> std::io::Result<(EngineHandle, EngineEnd)> {
    let (handle, mut ends) = engine_channels(1, None)?;
    let end = ends
        .pop()
        .ok_or_else(|| std::io::Error::other("no channel"))?;
    Ok((handle, end))
}

/// Channels to `n` shards (at least 1): one handle that reaches them all, and each
/// shard's end, shard 0 first. `registry` says which shard owns each interface (for
/// captures); `None` with one shard.
pub fn engine_channels(
    n: usize,
    registry: Option<Arc<ShardRegistry>>,
) -> std::io::Result<(EngineHandle, Vec<EngineEnd>)> {
    let mut shards = Vec::with_capacity(n.max(1));
    let mut ends = Vec::with_capacity(n.max(1));
    for _ in 0..n.max(1) {
        let (wake_rx, wake_tx) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::NONBLOCK | rustix::pipe::PipeFlags::CLOEXEC,
        )?;
        let (tx, rx) = mpsc::channel();
        shards.push(ShardTx {
            tx,
            waker: Arc::new(wake_tx),
        });
        ends.push(EngineEnd {
            requests: rx,
            waker: wake_rx,
        });
    }
    Ok((EngineHandle { shards, registry }, ends))
}

/// The engine's end: requests to apply and the fd that wakes its poll.
pub struct EngineEnd {
    /// Requests from clients.
    pub requests: mpsc::Receiver<Request>,
    /// Becomes readable when a request is queued.
    pub waker: OwnedFd,
}

/// A running control server; dropping it stops accepting and removes the socket.
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControlServer {
    /// Binds `path` (mode 0600; creates the parent directory) and serves it on a thread.
    pub fn start(path: &Path, engine: EngineHandle) -> Result<Self, ServerError> {
        let io = |source| ServerError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(ServerError::InUse(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(io)?;
        }
        // Create with a tight umask so the socket is never reachable by others, even briefly.
        let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
        let bound = UnixListener::bind(path);
        rustix::process::umask(old);
        let listener = bound.map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        listener.set_nonblocking(true).map_err(io)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("vnetp-control".into())
            .spawn(move || accept_loop(listener, engine, stop2))
            .map_err(io)?;
        Ok(Self {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(listener: UnixListener, engine: EngineHandle, stop: Arc<AtomicBool>) {
    let clients = Arc::new(AtomicUsize::new(0));
    let me = rustix::process::geteuid();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let allowed = rustix::net::sockopt::socket_peercred(stream.as_fd())
                    .map(|c| c.uid.is_root() || c.uid == me)
                    .unwrap_or(false);
                if !allowed {
                    let _ = writeln!(
                        stream,
                        "error: permission denied (peer is neither root nor the daemon's user)"
                    );
                    continue;
                }
                if clients.load(Ordering::Relaxed) >= MAX_CLIENTS {
                    let _ = writeln!(
                        stream,
                        "error: too many control connections (at most {MAX_CLIENTS})"
                    );
                    continue;
                }
                clients.fetch_add(1, Ordering::Relaxed);
                let (engine, clients, stop) =
                    (engine.clone(), Arc::clone(&clients), Arc::clone(&stop));
                let spawned = std::thread::Builder::new()
                    .name("vnetp-ctl-client".into())
                    .spawn(move || {
                        serve_client(stream, &engine, &stop);
                        clients.fetch_sub(1, Ordering::Relaxed);
                    });
                if spawned.is_err() {
                    tracing::warn!("cannot spawn a control client thread");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => {
                tracing::warn!("control socket accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn serve_client(stream: UnixStream, engine: &EngineHandle, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut out = std::io::BufWriter::new(write_half);
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match read_line_bounded(&mut reader, &mut line) {
            LineRead::Eof => return,
            LineRead::Timeout => continue,
            LineRead::TooLong => {
                let _ = writeln!(out, "error: line longer than {MAX_LINE} bytes");
                let _ = out.flush();
                return;
            }
            LineRead::Line => {}
        }
        let answer = match std::str::from_utf8(&line) {
            Err(_) => Err("command is not valid UTF-8".to_string()),
            Ok(text) => match parse_command(text.trim_end_matches(['\r', '\n'])) {
                Err(e) => Err(e.to_string()),
                Ok(cmd) => {
                    let wait = match &cmd {
                        crate::control::Command::Capture { timeout_secs, .. } => {
                            Duration::from_secs(u64::from(*timeout_secs) + 10)
                        }
                        _ => Duration::from_secs(10),
                    };
                    engine.call(cmd, wait)
                }
            },
        };
        let written = match answer {
            Ok(text) if text.is_empty() => writeln!(out, "ok"),
            Ok(text) => writeln!(out, "{text}\nok"),
            Err(e) => writeln!(out, "error: {}", e.replace('\n', " ")),
        };
        if written.and_then(|_| out.flush()).is_err() {
            return;
        }
    }
}

enum LineRead {
    Line,
    Eof,
    Timeout,
    TooLong,
}

fn read_line_bounded(r: &mut BufReader<UnixStream>, line: &mut Vec<u8>) -> LineRead {
    // Keep partial input across timeouts: only clear once a full line was handed out.
    if line.last() == Some(&b'\n') {
        line.clear();
    }
    loop {
        let buf = match r.fill_buf() {
            Ok([]) => return LineRead::Eof,
            Ok(b) => b,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return LineRead::Timeout;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return LineRead::Eof,
        };
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        line.extend_from_slice(chunk);
        let n = chunk.len();
        r.consume(n);
        if line.len() > MAX_LINE + 1 {
            return LineRead::TooLong;
        }
        if done {
            return LineRead::Line;
        }
    }
}
