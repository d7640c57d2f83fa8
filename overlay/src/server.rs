//! The control socket: a Unix stream socket (mode 0600, owner-only) that takes one
//! command per line and answers each with zero or more lines of text followed by a
//! line `ok` or `error: <message>`.
//!
//! The server only parses and forwards: each command travels to the engine's thread
//! as a [`Request`] and is applied between two forwarding rounds, so the tables are
//! never shared or locked. Peers must run as root or as the daemon's own user
//! (checked with SO_PEERCRED).

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::control::parse_command;
use crate::engine::Request;

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

/// A way to send commands to the engine thread from any other thread (control socket
/// clients, the metrics endpoint). Cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Request>,
    waker: Arc<OwnedFd>,
}

impl EngineHandle {
    /// Sends `cmd` and waits up to `wait` for the engine's answer.
    pub fn call(&self, cmd: crate::control::Command, wait: Duration) -> Result<String, String> {
        let (rtx, rrx) = mpsc::channel();
        if self.tx.send(Request { cmd, reply: rtx }).is_err() {
            return Err("the engine has stopped".to_string());
        }
        let _ = rustix::io::write(&*self.waker, &[1]);
        rrx.recv_timeout(wait)
            .unwrap_or_else(|_| Err("the engine did not answer".to_string()))
    }
}

/// A channel to the engine: the handle for other threads, the end the engine polls.
pub fn engine_channel() -> std::io::Result<(EngineHandle, EngineEnd)> {
    let (wake_rx, wake_tx) = rustix::pipe::pipe_with(
        rustix::pipe::PipeFlags::NONBLOCK | rustix::pipe::PipeFlags::CLOEXEC,
    )?;
    let (tx, rx) = mpsc::channel();
    Ok((
        EngineHandle {
            tx,
            waker: Arc::new(wake_tx),
        },
        EngineEnd {
            requests: rx,
            waker: wake_rx,
        },
    ))
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
