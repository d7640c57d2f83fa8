//! The control-socket client: one command line out, the answer back.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Why a control command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket is missing or refuses connections.
    #[error(
        "cannot connect to control socket {path}: {source} (is `vnetp run` running with `control = \"{path}\"`?)"
    )]
    Connect {
        /// Socket path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Reading or writing failed.
    #[error("control socket I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon answered with an error.
    #[error("{0}")]
    Daemon(String),
    /// The connection closed before an answer.
    #[error("the daemon closed the connection without answering")]
    NoAnswer,
}

/// Sends one command; returns the answer's text (without the final `ok`).
pub fn command(socket: &Path, line: &str) -> Result<String, ClientError> {
    let stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    // A capture answers when it is complete (its timeout is at most an hour).
    let wait = if line.starts_with("capture") {
        3700
    } else {
        15
    };
    stream.set_read_timeout(Some(Duration::from_secs(wait)))?;
    let mut w = stream.try_clone()?;
    writeln!(w, "{line}")?;
    let mut body = String::new();
    for l in BufReader::new(stream).lines() {
        let l = l?;
        if l == "ok" {
            return Ok(body.trim_end().to_string());
        }
        if let Some(e) = l.strip_prefix("error: ") {
            return Err(ClientError::Daemon(e.to_string()));
        }
        body.push_str(&l);
        body.push('\n');
    }
    Err(ClientError::NoAnswer)
}
