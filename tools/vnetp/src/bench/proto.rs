//! The bench agents' datagram format: a 16-byte header at the start of every UDP
//! payload, then padding up to the frame size being measured.
//!
//! ```text
//! 0  magic  u16 "vB"        4  run  u32 (big-endian)
//! 2  kind   u8              8  seq  u64 (big-endian)
//! 3  zero   u8
//! ```
//! A report answer adds `count u64, bytes u64, elapsed_ns u64` after the header.

/// Header length; the smallest payload is 64 - 42 = 22 bytes, so it fits every size.
pub const HEADER: usize = 16;
/// Length of a report answer.
pub const REPORT_LEN: usize = HEADER + 24;
/// Ethernet + IPv4 + UDP header bytes in front of the payload: frame = payload + 42.
pub const FRAME_OVERHEAD: usize = 14 + 20 + 8;
const MAGIC: [u8; 2] = *b"vB";

/// What a datagram asks of the reflector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Send it back unchanged (latency probe).
    Echo = 1,
    /// Count it (throughput run).
    Sink = 2,
    /// Answer with the counts of a throughput run.
    Report = 3,
    /// The answer to [`Kind::Report`].
    ReportAnswer = 4,
    /// Stop the reflector.
    Quit = 5,
}

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What it asks.
    pub kind: Kind,
    /// Throughput run (or latency series) it belongs to.
    pub run: u32,
    /// Sequence number.
    pub seq: u64,
}

impl Header {
    /// Writes the header into the first [`HEADER`] bytes; false when `buf` is shorter.
    pub fn emit(&self, buf: &mut [u8]) -> bool {
        let Some(h) = buf.get_mut(..HEADER) else {
            return false;
        };
        h[..2].copy_from_slice(&MAGIC);
        h[2] = self.kind as u8;
        h[3] = 0;
        h[4..8].copy_from_slice(&self.run.to_be_bytes());
        h[8..16].copy_from_slice(&self.seq.to_be_bytes());
        true
    }

    /// Parses a header; `None` for anything that is not ours.
    pub fn parse(buf: &[u8]) -> Option<Self> {
        let h = buf.get(..HEADER)?;
        if h[..2] != MAGIC || h[3] != 0 {
            return None;
        }
        let kind = match h[2] {
            1 => Kind::Echo,
            2 => Kind::Sink,
            3 => Kind::Report,
            4 => Kind::ReportAnswer,
            5 => Kind::Quit,
            _ => return None,
        };
        Some(Self {
            kind,
            run: u32::from_be_bytes(h[4..8].try_into().ok()?),
            seq: u64::from_be_bytes(h[8..16].try_into().ok()?),
        })
    }
}

/// Counts of one throughput run as the reflector saw them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkCounts {
    /// Datagrams received.
    pub count: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// From the first to the last datagram's arrival.
    pub elapsed_ns: u64,
}

impl SinkCounts {
    /// Writes a report answer for `run` into `buf` (at least [`REPORT_LEN`] bytes).
    pub fn emit(&self, run: u32, buf: &mut [u8]) -> bool {
        if buf.len() < REPORT_LEN {
            return false;
        }
        let h = Header {
            kind: Kind::ReportAnswer,
            run,
            seq: 0,
        };
        h.emit(buf);
        buf[16..24].copy_from_slice(&self.count.to_be_bytes());
        buf[24..32].copy_from_slice(&self.bytes.to_be_bytes());
        buf[32..40].copy_from_slice(&self.elapsed_ns.to_be_bytes());
        true
    }

    /// Parses a report answer.
    pub fn parse(buf: &[u8]) -> Option<(u32, Self)> {
        let h = Header::parse(buf)?;
        if h.kind != Kind::ReportAnswer || buf.len() < REPORT_LEN {
            return None;
        }
        let u = |r: std::ops::Range<usize>| Some(u64::from_be_bytes(buf.get(r)?.try_into().ok()?));
        Some((
            h.run,
            Self {
                count: u(16..24)?,
                bytes: u(24..32)?,
                elapsed_ns: u(32..40)?,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_golden_bytes() {
        let mut b = [0xffu8; 20];
        let h = Header {
            kind: Kind::Sink,
            run: 0x0102_0304,
            seq: 0x1122_3344_5566_7788,
        };
        assert!(h.emit(&mut b));
        assert_eq!(
            b[..16],
            [
                b'v', b'B', 2, 0, 1, 2, 3, 4, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88
            ]
        );
        assert_eq!(Header::parse(&b), Some(h));
    }

    #[test]
    fn foreign_or_short_datagrams_are_not_parsed() {
        assert_eq!(Header::parse(&[0u8; 40]), None);
        assert_eq!(Header::parse(b"vB\x01\x00short"), None);
        let mut b = [0u8; 16];
        Header {
            kind: Kind::Echo,
            run: 1,
            seq: 1,
        }
        .emit(&mut b);
        b[2] = 9;
        assert_eq!(Header::parse(&b), None);
    }

    #[test]
    fn report_answer_round_trips() {
        let c = SinkCounts {
            count: 5,
            bytes: 500,
            elapsed_ns: 123_456,
        };
        let mut b = [0u8; REPORT_LEN];
        assert!(c.emit(7, &mut b));
        assert_eq!(SinkCounts::parse(&b), Some((7, c)));
        assert_eq!(SinkCounts::parse(&b[..REPORT_LEN - 1]), None);
    }
}
