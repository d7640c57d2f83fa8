//! [`VfToken`]: the UUID that the VFIO owner of an SR-IOV PF and the users of its VFs
//! share, so the kernel lets them cooperate (vfio-pci's "VF token").
//!
//! The PF owner sets it with `VFIO_DEVICE_FEATURE` (SET | PCI_VF_TOKEN); a VF user
//! presents it when opening the VF (`"0000:01:10.0 vf_token=<uuid>"`, QEMU's
//! `-device vfio-pci,host=...,vf-token=<uuid>`). It is a shared assertion of trust
//! between the two users, not a secret the kernel keeps from root.

use std::fmt;
use std::io::Read;
use std::str::FromStr;

use crate::{Result, VfioError};

/// A VF token: a UUID in its 16 bytes, in the order the text spells them (the
/// kernel's `uuid_t`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VfToken([u8; 16]);

/// Byte offsets of the dashes in the 36-character text form.
const DASHES: [usize; 4] = [8, 13, 18, 23];

impl VfToken {
    /// The token with these 16 bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The 16 bytes, as `VFIO_DEVICE_FEATURE_PCI_VF_TOKEN` takes them.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parses the `8-4-4-4-12` hex form (`bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3`),
    /// upper or lower case, as the kernel's `uuid_parse` accepts it.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || VfioError::BadVfToken(text.to_owned());
        let b = text.as_bytes();
        if b.len() != 36 {
            return Err(bad());
        }
        let mut out = [0u8; 16];
        let mut n = 0;
        let mut i = 0;
        while i < b.len() {
            if DASHES.contains(&i) {
                if b[i] != b'-' {
                    return Err(bad());
                }
                i += 1;
                continue;
            }
            let hi = hex_digit(b[i]).ok_or_else(bad)?;
            let lo = b.get(i + 1).and_then(|&c| hex_digit(c)).ok_or_else(bad)?;
            *out.get_mut(n).ok_or_else(bad)? = hi << 4 | lo;
            n += 1;
            i += 2;
        }
        if n != 16 {
            return Err(bad());
        }
        Ok(Self(out))
    }

    /// A fresh random token (a version 4 UUID) from the kernel's random source.
    pub fn random() -> Result<Self> {
        let mut b = [0u8; 16];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b))
            .map_err(|e| VfioError::sys("read /dev/urandom for a VF token", e))?;
        Ok(Self::from_random_bytes(b))
    }

    /// Turns 16 random bytes into a version 4, RFC 4122 variant UUID.
    fn from_random_bytes(mut b: [u8; 16]) -> Self {
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Self(b)
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for VfToken {
    /// The lower-case `8-4-4-4-12` form, as QEMU's `vf-token=` and the kernel take it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for VfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VfToken({self})")
    }
}

impl FromStr for VfToken {
    type Err = VfioError;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vf_token_parses_and_formats_the_8_4_4_4_12_form() {
        let t = VfToken::parse("BD8D9D2B-5a5f-4f5a-a211-f591514ba1f3").unwrap();
        assert_eq!(
            t.as_bytes(),
            &[
                0xbd, 0x8d, 0x9d, 0x2b, 0x5a, 0x5f, 0x4f, 0x5a, 0xa2, 0x11, 0xf5, 0x91, 0x51, 0x4b,
                0xa1, 0xf3
            ]
        );
        assert_eq!(t.to_string(), "bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3");
        assert_eq!(
            "bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3"
                .parse::<VfToken>()
                .unwrap(),
            t
        );
        assert_eq!(
            VfToken::from_bytes([0; 16]).to_string(),
            "00000000-0000-0000-0000-000000000000"
        );
    }

    #[test]
    fn malformed_vf_tokens_are_refused_with_the_expected_form() {
        for bad in [
            "",
            "bd8d9d2b5a5f4f5aa211f591514ba1f3",
            "bd8d9d2b-5a5f-4f5a-a211-f591514ba1f",
            "bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3a",
            "bd8d9d2b-5a5f-4f5a-a211_f591514ba1f3",
            "bd8d9d2-b5a5f-4f5a-a211-f591514ba1f3",
            "gd8d9d2b-5a5f-4f5a-a211-f591514ba1f3",
            "bd8d9d2b-5a5f-4f5a-a211-f591514ba1f\u{e9}",
            "+d8d9d2b-5a5f-4f5a-a211-f591514ba1f3",
        ] {
            let e = VfToken::parse(bad).unwrap_err().to_string();
            assert!(e.contains("8-4-4-4-12"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn random_vf_tokens_are_version_4_and_differ() {
        let a = VfToken::random().unwrap();
        let b = VfToken::random().unwrap();
        assert_ne!(a, b);
        for t in [a, b] {
            let s = t.to_string();
            assert_eq!(&s[14..15], "4", "{s}");
            assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
            assert_eq!(VfToken::parse(&s).unwrap(), t);
        }
        let fixed = VfToken::from_random_bytes([0xff; 16]).to_string();
        assert_eq!(fixed, "ffffffff-ffff-4fff-bfff-ffffffffffff");
    }
}
