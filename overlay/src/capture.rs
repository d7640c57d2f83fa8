//! Frame capture at an endpoint (`capture` on the control socket): the next N frames
//! seen at a link or interface, in both directions, written as a pcap file that
//! tshark and Wireshark open. Frames are captured as the guest sees them (inner
//! Ethernet frames, without tunnel headers).
//!
//! The engine copies a frame only while a capture is running, and writes the file
//! once the capture ends, so the packet path never makes a system call for it.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::types::Endpoint;

/// A running capture.
pub(crate) struct Capture {
    pub endpoint: Endpoint,
    path: PathBuf,
    wanted: usize,
    deadline: Instant,
    frames: Vec<(Duration, Vec<u8>)>,
    reply: mpsc::Sender<Result<String, String>>,
}

impl Capture {
    pub fn new(
        endpoint: Endpoint,
        path: PathBuf,
        count: u32,
        timeout: Duration,
        reply: mpsc::Sender<Result<String, String>>,
    ) -> Self {
        Self {
            endpoint,
            path,
            wanted: count as usize,
            deadline: Instant::now() + timeout,
            frames: Vec::new(),
            reply,
        }
    }

    /// Records a frame seen at `ep`.
    #[inline]
    pub fn offer(&mut self, ep: Endpoint, frame: &pkt::PktBuf) {
        if ep == self.endpoint && self.frames.len() < self.wanted {
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            // The whole frame, an external tail included.
            let (head, tail) = frame.parts();
            let mut bytes = Vec::with_capacity(head.len() + tail.len());
            bytes.extend_from_slice(head);
            bytes.extend_from_slice(tail);
            self.frames.push((ts, bytes));
        }
    }

    /// True when enough frames were seen or time is up.
    pub fn done(&self, now: Instant) -> bool {
        self.frames.len() >= self.wanted || now >= self.deadline
    }

    /// Writes the pcap file and answers the requester.
    pub fn finish(self) {
        let answer = write_pcap(&self.path, &self.frames)
            .map(|()| {
                format!(
                    "captured {} frame(s) to {}",
                    self.frames.len(),
                    self.path.display()
                )
            })
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()));
        let _ = self.reply.send(answer);
    }
}

fn write_pcap(path: &PathBuf, frames: &[(Duration, Vec<u8>)]) -> Result<(), String> {
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    let file = std::fs::File::create(path).map_err(|e| e.to_string())?;
    let header = PcapHeader {
        snaplen: 262_144,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(std::io::BufWriter::new(file), header)
        .map_err(|e| e.to_string())?;
    for (ts, data) in frames {
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        w.write_packet(&PcapPacket::new(*ts, len, data))
            .map_err(|e| e.to_string())?;
    }
    let mut inner = w.into_writer();
    std::io::Write::flush(&mut inner).map_err(|e| e.to_string())
}
