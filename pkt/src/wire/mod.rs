//! Zero-copy views of wire headers: `zerocopy` `#[repr(C)]` structs with
//! network-endian fields, and smoltcp-style checked parsing and emitting.

mod mac;

pub use mac::{MacAddr, MacParseError};
