//! Errors of the `virtio` crate, worded for the person running vnetp.

use std::path::PathBuf;

/// What went wrong setting up a guest interface or the virtio-user frontend.
#[derive(Debug, thiserror::Error)]
pub enum VirtioError {
    /// The vhost-user socket could not be created.
    #[error(
        "cannot listen on vhost-user socket {socket}: {reason} (check the directory exists and is writable)"
    )]
    Listen {
        /// The socket path.
        socket: PathBuf,
        /// Why.
        reason: String,
    },
    /// The MTU does not fit the packet pool's buffers.
    #[error(
        "interface {name}: mtu {mtu} does not fit the packet buffers ({room} bytes per frame); lower the mtu"
    )]
    MtuTooLarge {
        /// Interface name.
        name: String,
        /// Requested MTU.
        mtu: u16,
        /// Bytes a buffer holds after its headroom.
        room: usize,
    },
    /// The queue pair count is out of range.
    #[error("interface {name}: {pairs} queue pairs asked for; use 1 to {max}")]
    QueuePairs {
        /// Interface name.
        name: String,
        /// Requested pairs.
        pairs: u16,
        /// Most pairs supported.
        max: u16,
    },
    /// An eventfd, pipe or epoll instance could not be created.
    #[error("cannot create an eventfd or pipe: {0} (raise the open-files limit?)")]
    Eventfd(std::io::Error),
    /// A thread could not be started.
    #[error("cannot start the vhost-user thread: {0}")]
    Thread(std::io::Error),
    /// Talking to the vhost-user backend failed (frontend).
    #[error("vhost-user backend at {socket}: {step} failed: {reason}")]
    Frontend {
        /// The socket path.
        socket: PathBuf,
        /// The protocol step.
        step: &'static str,
        /// Why.
        reason: String,
    },
    /// Shared memory for the frontend could not be created.
    #[error("cannot create the frontend's shared memory ({0}); is /dev/shm or memfd available?")]
    Memory(String),
    /// A frame does not fit the frontend's buffers.
    #[error("frame of {len} bytes does not fit a {room}-byte transmit buffer")]
    FrameTooLarge {
        /// Frame length.
        len: usize,
        /// Buffer room.
        room: usize,
    },
}
