//! Receive-side scaling: the Toeplitz hash that NICs (82576 datasheet 7.1.1.7, 82599
//! datasheet 7.1.2.8) and Microsoft's RSS specification use to spread flows over
//! queues, in software, so the same flow lands on the same queue whichever side
//! computes it.

use std::net::{IpAddr, SocketAddr};

/// The 40-byte key of Microsoft's RSS verification suite (also the datasheets'
/// example key), used when the operator gives none.
pub const DEFAULT_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

/// The Toeplitz hash of `input` under `key`: for every set bit of the input, XOR in
/// the 32 key bits starting at that bit position. Inputs longer than the key allows
/// (key length - 4 bytes) are cut there, as hardware does.
pub fn toeplitz(key: &[u8], input: &[u8]) -> u32 {
    if key.len() < 4 {
        return 0;
    }
    let mut hash = 0u32;
    // A 64-bit window of key bits; its top 32 bits are the key at the current bit.
    let mut window = u64::from(u32::from_be_bytes([key[0], key[1], key[2], key[3]])) << 32;
    for (next, &byte) in (4..).zip(input.iter().take(key.len() - 4)) {
        if let Some(&k) = key.get(next) {
            window |= u64::from(k) << 24;
        }
        for bit in (0..8).rev() {
            if byte & (1 << bit) != 0 {
                hash ^= (window >> 32) as u32;
            }
            window <<= 1;
        }
    }
    hash
}

/// The RSS hash of an IP flow: source address, destination address, then (when given)
/// source and destination ports, as the specification orders them.
pub fn flow_hash(key: &[u8], src: IpAddr, dst: IpAddr, ports: Option<(u16, u16)>) -> u32 {
    let mut input = [0u8; 36];
    let mut n = 0;
    let mut put = |b: &[u8]| {
        input[n..n + b.len()].copy_from_slice(b);
        n += b.len();
    };
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            put(&s.octets());
            put(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            put(&s.octets());
            put(&d.octets());
        }
        // Mixed families never form one flow: hash the source alone.
        (s, _) => match s {
            IpAddr::V4(s) => put(&s.octets()),
            IpAddr::V6(s) => put(&s.octets()),
        },
    }
    if let Some((sp, dp)) = ports {
        put(&sp.to_be_bytes());
        put(&dp.to_be_bytes());
    }
    toeplitz(key, &input[..n])
}

/// The RSS hash of a TCP/UDP flow given as socket addresses.
pub fn socket_hash(key: &[u8], src: SocketAddr, dst: SocketAddr) -> u32 {
    flow_hash(key, src.ip(), dst.ip(), Some((src.port(), dst.port())))
}

/// The queue a hash selects through a redirection table (RETA), as the NIC does with
/// the hash's low bits.
pub fn queue_for(hash: u32, reta: &[u16]) -> Option<u16> {
    if reta.is_empty() {
        None
    } else {
        Some(reta[hash as usize % reta.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Microsoft's "Verifying the RSS Hash Calculation" vectors: (destination, source,
    /// IP-only hash, IP+TCP hash).
    const V4: [(&str, &str, u32, u32); 5] = [
        (
            "161.142.100.80:1766",
            "66.9.149.187:2794",
            0x323e_8fc2,
            0x51cc_c178,
        ),
        (
            "65.69.140.83:4739",
            "199.92.111.2:14230",
            0xd718_262a,
            0xc626_b0ea,
        ),
        (
            "12.22.207.184:38024",
            "24.19.198.95:12898",
            0xd2d0_a5de,
            0x5c2b_394a,
        ),
        (
            "209.142.163.6:2217",
            "38.27.205.30:48228",
            0x8298_9176,
            0xafc7_327f,
        ),
        (
            "202.188.127.2:1303",
            "153.39.163.191:44251",
            0x5d18_09c5,
            0x10e8_28a2,
        ),
    ];

    const V6: [(&str, &str, u32, u32); 3] = [
        (
            "[3ffe:2501:200:3::1]:1766",
            "[3ffe:2501:200:1fff::7]:2794",
            0x2cc1_8cd5,
            0x4020_7d3d,
        ),
        (
            "[ff02::1]:4739",
            "[3ffe:501:8::260:97ff:fe40:efab]:14230",
            0x0f0c_461c,
            0xdde5_1bbf,
        ),
        (
            "[fe80::200:f8ff:fe21:67cf]:38024",
            "[3ffe:1900:4545:3:200:f8ff:fe21:67cf]:44251",
            0x4b61_e985,
            0x02d1_feef,
        ),
    ];

    #[test]
    fn toeplitz_matches_the_ipv4_verification_vectors() {
        for (dst, src, ip_only, with_tcp) in V4 {
            let (d, s) = (sa(dst), sa(src));
            assert_eq!(
                flow_hash(&DEFAULT_KEY, s.ip(), d.ip(), None),
                ip_only,
                "{src} -> {dst}"
            );
            assert_eq!(socket_hash(&DEFAULT_KEY, s, d), with_tcp, "{src} -> {dst}");
        }
    }

    #[test]
    fn toeplitz_matches_the_ipv6_verification_vectors() {
        for (dst, src, ip_only, with_tcp) in V6 {
            let (d, s) = (sa(dst), sa(src));
            assert_eq!(
                flow_hash(&DEFAULT_KEY, s.ip(), d.ip(), None),
                ip_only,
                "{src} -> {dst}"
            );
            assert_eq!(socket_hash(&DEFAULT_KEY, s, d), with_tcp, "{src} -> {dst}");
        }
    }

    #[test]
    fn short_keys_and_empty_tables_are_harmless() {
        assert_eq!(toeplitz(&[1, 2, 3], &[0xff; 8]), 0);
        assert_eq!(queue_for(7, &[]), None);
        assert_eq!(queue_for(7, &[0, 1, 2, 3]), Some(3));
    }
}
