//! vhost-user messages from an untrusted front-end, over a real Unix socket, into vnetp's
//! backend (rust-vmm's `vhost` parser + our `VhostUserPort` handlers). Each input is
//! written as the byte stream of one connection; the backend must never crash and must
//! keep accepting the next connection. Messages that would need file descriptors
//! (SET_MEM_TABLE, SET_VRING_KICK, ...) arrive without them and must be refused cleanly.
#![no_main]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use pkt::{Batch, Mempool, Port};
use virtio::{VhostUserConfig, VhostUserPort};

struct Backend {
    socket: PathBuf,
    port: Mutex<VhostUserPort>,
}

fn backend() -> &'static Backend {
    static B: OnceLock<Backend> = OnceLock::new();
    B.get_or_init(|| {
        let socket =
            std::env::temp_dir().join(format!("vnetp-fuzz-vhost-{}.sock", std::process::id()));
        let pool = Mempool::new(256, 2048).expect("pool");
        let cfg = VhostUserConfig {
            name: "fuzz".into(),
            socket: socket.clone(),
            mac: [0x52, 0x54, 0, 0, 0, 1],
            mtu: 1500,
            max_queue_pairs: 4,
            ..Default::default()
        };
        let port = VhostUserPort::listen(cfg, pool).expect("listen");
        Backend {
            socket,
            port: Mutex::new(port),
        }
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let b = backend();
    let mut conn = None;
    for _ in 0..200 {
        if let Ok(s) = UnixStream::connect(&b.socket) {
            conn = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let Some(mut s) = conn else {
        panic!("the backend stopped accepting connections")
    };
    let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
    let _ = s.set_read_timeout(Some(Duration::from_millis(5)));
    let _ = s.write_all(data);
    let mut reply = [0u8; 512];
    let _ = s.read(&mut reply);
    // Play the engine for a moment: it picks up whatever the connection set up.
    if let Ok(mut port) = b.port.lock() {
        let mut batch = Batch::new();
        port.rx_batch(&mut batch);
        port.tx_batch(&mut batch);
    }
    drop(s);
});
