//! The PF side of the 82576 PF<->VF mailbox, as a pure function: [`handle_message`]
//! takes one VF's 16-word message and that VF's [`VfState`], and returns the reply and
//! what changed. It touches no register, so the fuzz target and unit tests drive it
//! directly; [`super::sriov`] moves words between it and the device.
//!
//! The message set is the one Linux igbvf speaks (and the Linux igb PF answers):
//! word 0 holds the message type in bits 15:0, "message info" in bits 23:16, and the
//! ACK/NACK/CTS flags in bits 31:29. Our PF adds API negotiation (1.0 and 1.1) and
//! GET_QUEUES, which igbvf never sends and our own VF driver tries first. The 82599's
//! VFs (Linux ixgbevf) speak the same set but for two messages: [`handle`] takes the
//! [`Dialect`], and the ixgbe PF uses it too.
//!
//! Every message the PF cannot honour gets a NACK and a named counter, never a panic.

/// Message types (word 0, bits 15:0).
pub mod msg {
    /// VF reset: the VF asks for its MAC address and the right to configure.
    pub const VF_RESET: u32 = 0x01;
    /// Set the VF's unicast MAC address (bytes in words 1..=2).
    pub const SET_MAC_ADDR: u32 = 0x02;
    /// Set the VF's multicast hashes (count in msginfo, 16-bit hashes from word 1).
    pub const SET_MULTICAST: u32 = 0x03;
    /// Join (msginfo bit 0 = add) or leave a VLAN (id in word 1).
    pub const SET_VLAN: u32 = 0x04;
    /// Set the longest frame the VF receives (word 1, bytes with CRC).
    pub const SET_LPE: u32 = 0x05;
    /// Promiscuous modes (msginfo: bit 0 unicast, bit 1 multicast); igb dialect.
    pub const SET_PROMISC: u32 = 0x06;
    /// Extra unicast filters (msginfo = index, 0 = clear all); the 82599's id 0x06
    /// ([`super::Dialect::Ixgbe`]).
    pub const SET_MACVLAN: u32 = 0x06;
    /// Negotiate the mailbox API version (word 1).
    pub const API_NEGOTIATE: u32 = 0x08;
    /// Ask for queue counts (API 1.1).
    pub const GET_QUEUES: u32 = 0x09;
    /// The PF's unsolicited control message (link change, PF reset).
    pub const PF_CONTROL: u32 = 0x0100;
    /// Flag: the sender of this reply accepted the request.
    pub const ACK: u32 = 0x8000_0000;
    /// Flag: the request was refused.
    pub const NACK: u32 = 0x4000_0000;
    /// Flag: clear to send: the VF finished its reset and may configure.
    pub const CTS: u32 = 0x2000_0000;
    /// Message info field (bits 23:16).
    pub const INFO_SHIFT: u32 = 16;
    /// Mask of the message info field.
    pub const INFO_MASK: u32 = 0xff << INFO_SHIFT;
    /// SET_PROMISC info: unicast promiscuous.
    pub const PROMISC_UNICAST: u32 = 0x01;
    /// SET_PROMISC info: multicast promiscuous.
    pub const PROMISC_MULTICAST: u32 = 0x02;
    /// SET_MAC_ADDR info: clear the VF's extra unicast filters.
    pub const MAC_FILTER_CLR: u32 = 0x01;
    /// SET_MAC_ADDR info: add an extra unicast filter.
    pub const MAC_FILTER_ADD: u32 = 0x02;
    /// API version 1.0 (the base protocol), numbered as the Intel VF drivers do.
    pub const API_10: u32 = 0;
    /// API version 1.1 (adds GET_QUEUES).
    pub const API_11: u32 = 2;
}

/// Mailbox words.
pub const WORDS: usize = super::regs::MAILBOX_WORDS;
/// Multicast hashes one VF may hold (what fits in one message).
pub const MAX_MC_HASHES: usize = 30;
/// VLANs one VF may join.
pub const MAX_VLANS: usize = 8;
/// Longest frame a VF may ask for (bytes, with CRC).
pub const MAX_FRAME: u32 = 9728;
/// Shortest sensible SET_LPE value (an Ethernet minimum frame).
pub const MIN_FRAME: u32 = 64;

/// What vnetp's configuration lets a VF do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfPolicy {
    /// The MAC address the VF gets on reset (all zero: none; the reset is NACKed).
    pub mac: [u8; 6],
    /// The VF may change its MAC (otherwise SET_MAC_ADDR to another address is NACKed
    /// and MAC anti-spoofing keeps it to `mac`).
    pub allow_mac_change: bool,
    /// Port VLAN set by vnetp: inserted on transmit, stripped on receive; the VF may
    /// not join VLANs itself.
    pub vlan: Option<u16>,
    /// The VF may turn on unicast promiscuous mode.
    pub allow_promisc: bool,
}

impl VfPolicy {
    /// A VF with a fixed MAC and nothing else allowed.
    pub fn fixed_mac(mac: [u8; 6]) -> Self {
        Self {
            mac,
            allow_mac_change: false,
            vlan: None,
            allow_promisc: false,
        }
    }
}

/// One VF as the PF sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfState {
    /// What the configuration allows.
    pub policy: VfPolicy,
    /// Its current unicast MAC.
    pub mac: [u8; 6],
    /// Clear to send: set by VF_RESET; until then only VF_RESET is answered.
    pub cts: bool,
    /// Multicast hashes (12-bit MTA indexes), `mc_len` of them valid.
    pub mc_hashes: [u16; MAX_MC_HASHES],
    /// Valid entries of `mc_hashes`.
    pub mc_len: usize,
    /// VLANs joined, `vlan_len` of them valid.
    pub vlans: [u16; MAX_VLANS],
    /// Valid entries of `vlans`.
    pub vlan_len: usize,
    /// Longest frame (with CRC) when long packets are on; 0: standard frames.
    pub max_frame: u32,
    /// Unicast promiscuous.
    pub promisc_unicast: bool,
    /// Multicast promiscuous.
    pub promisc_multicast: bool,
    /// Negotiated API ([`msg::API_10`] or [`msg::API_11`]).
    pub api: u32,
}

impl VfState {
    /// A VF that has not reset yet.
    pub fn new(policy: VfPolicy) -> Self {
        Self {
            mac: policy.mac,
            policy,
            cts: false,
            mc_hashes: [0; MAX_MC_HASHES],
            mc_len: 0,
            vlans: [0; MAX_VLANS],
            vlan_len: 0,
            max_frame: 0,
            promisc_unicast: false,
            promisc_multicast: false,
            api: msg::API_10,
        }
    }

    /// What a function-level reset (VFLRE) or VF_RESET clears.
    pub fn reset(&mut self) {
        *self = Self::new(self.policy.clone());
    }

    /// Multicast hashes in use.
    pub fn multicast(&self) -> &[u16] {
        &self.mc_hashes[..self.mc_len]
    }

    /// VLANs joined.
    pub fn joined_vlans(&self) -> &[u16] {
        &self.vlans[..self.vlan_len]
    }
}

/// Why a message was refused or ignored: each is a counter of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// A message other than VF_RESET before the VF reset.
    NotClearToSend,
    /// A message type we do not know.
    UnknownType,
    /// VF_RESET, but the configuration gives the VF no MAC.
    NoMacAssigned,
    /// SET_MAC_ADDR to a multicast or all-zero address.
    BadMac,
    /// SET_MAC_ADDR to another address when the policy forbids it.
    MacChangeDenied,
    /// SET_MAC_ADDR with MAC-filter sub-commands (not supported).
    Unsupported,
    /// SET_MULTICAST with more hashes than fit, or a hash above 12 bits.
    BadMulticast,
    /// SET_VLAN while vnetp set a port VLAN.
    VlanDenied,
    /// SET_VLAN with an id above 4095 or a bad add flag.
    BadVlan,
    /// SET_VLAN add with every slot in use.
    VlanTableFull,
    /// SET_LPE outside 64..=9728.
    BadFrameSize,
    /// SET_PROMISC unicast when the policy forbids it, or unknown flags.
    PromiscDenied,
    /// API_NEGOTIATE with a version we do not speak.
    BadApi,
    /// GET_QUEUES before API 1.1 was negotiated.
    ApiTooOld,
    /// A message that already carries ACK/NACK (a stale echo): ignored, no reply.
    StaleReply,
}

impl Refusal {
    /// The counter's name.
    pub fn counter(self) -> &'static str {
        match self {
            Self::NotClearToSend => "mbx_nack_before_reset",
            Self::UnknownType => "mbx_nack_unknown_type",
            Self::NoMacAssigned => "mbx_nack_no_mac",
            Self::BadMac => "mbx_nack_bad_mac",
            Self::MacChangeDenied => "mbx_nack_mac_denied",
            Self::Unsupported => "mbx_nack_unsupported",
            Self::BadMulticast => "mbx_nack_bad_multicast",
            Self::VlanDenied => "mbx_nack_vlan_denied",
            Self::BadVlan => "mbx_nack_bad_vlan",
            Self::VlanTableFull => "mbx_nack_vlan_full",
            Self::BadFrameSize => "mbx_nack_bad_frame_size",
            Self::PromiscDenied => "mbx_nack_promisc_denied",
            Self::BadApi => "mbx_nack_bad_api",
            Self::ApiTooOld => "mbx_nack_api_too_old",
            Self::StaleReply => "mbx_ignored_stale",
        }
    }

    /// Every refusal, in counter order.
    pub const ALL: [Refusal; 15] = [
        Self::NotClearToSend,
        Self::UnknownType,
        Self::NoMacAssigned,
        Self::BadMac,
        Self::MacChangeDenied,
        Self::Unsupported,
        Self::BadMulticast,
        Self::VlanDenied,
        Self::BadVlan,
        Self::VlanTableFull,
        Self::BadFrameSize,
        Self::PromiscDenied,
        Self::BadApi,
        Self::ApiTooOld,
        Self::StaleReply,
    ];
}

/// What the device must be told after a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// The VF reset: enable its pool (VFRE/VFTE) and reprogram everything below.
    pub reset: bool,
    /// Its receive address (RAL/RAH) changed.
    pub mac: bool,
    /// The shared multicast table must be rebuilt.
    pub multicast: bool,
    /// Its VLAN filters changed.
    pub vlan: bool,
    /// Its VMOLR (long frames, promiscuous modes) changed.
    pub offload: bool,
}

/// The outcome of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handled {
    /// Words to write back to the VF (`len` of them); `len == 0`: no reply.
    pub reply: [u32; WORDS],
    /// Reply length in words.
    pub len: usize,
    /// Why it was refused, if it was.
    pub refused: Option<Refusal>,
    /// What to reprogram.
    pub changes: Changes,
}

impl Handled {
    fn reply(words: &[u32], changes: Changes) -> Self {
        let mut reply = [0; WORDS];
        let len = words.len().min(WORDS);
        reply[..len].copy_from_slice(&words[..len]);
        Self {
            reply,
            len,
            refused: None,
            changes,
        }
    }

    fn nack(word0: u32, why: Refusal, cts: bool) -> Self {
        let flags = msg::NACK | if cts { msg::CTS } else { 0 };
        let mut h = Self::reply(&[word0 | flags], Changes::default());
        h.refused = Some(why);
        h
    }
}

/// The MAC address carried in words 1..=2 (bytes in memory order).
pub fn mac_from_words(w1: u32, w2: u32) -> [u8; 6] {
    let a = w1.to_le_bytes();
    let b = w2.to_le_bytes();
    [a[0], a[1], a[2], a[3], b[0], b[1]]
}

/// Words 1..=2 carrying `mac`.
pub fn mac_to_words(mac: [u8; 6]) -> (u32, u32) {
    (
        u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]),
        u32::from_le_bytes([mac[4], mac[5], 0, 0]),
    )
}

fn valid_unicast(mac: [u8; 6]) -> bool {
    mac[0] & 1 == 0 && mac != [0; 6]
}

/// Which PF/VF mailbox a message comes through: the two speak the same ids, word
/// layout, flags and API numbering but for two messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// The 82576's (Linux igbvf): id 0x06 is [`msg::SET_PROMISC`], and SET_MAC_ADDR's
    /// msginfo carries the MAC-filter sub-commands.
    Igb,
    /// The 82599's (Linux ixgbevf): id 0x06 is [`msg::SET_MACVLAN`] (we keep no extra
    /// filters: "clear" and "add the VF's own address" are acknowledged, any other
    /// address refused), and SET_MAC_ADDR carries no msginfo (any is refused).
    Ixgbe,
}

/// Handles one message from an 82576 VF: updates `vf` and returns the reply.
///
/// Pure: no I/O, no allocation, no panic for any input.
pub fn handle_message(vf: &mut VfState, m: &[u32; WORDS]) -> Handled {
    handle(Dialect::Igb, vf, m)
}

/// Handles one message from a VF speaking `dialect`: updates `vf` and returns the
/// reply.
///
/// Pure: no I/O, no allocation, no panic for any input.
pub fn handle(dialect: Dialect, vf: &mut VfState, m: &[u32; WORDS]) -> Handled {
    let word0 = m[0];
    if word0 & (msg::ACK | msg::NACK) != 0 {
        // An ACK/NACK is the VF echoing a reply: nothing to answer.
        return Handled {
            reply: [0; WORDS],
            len: 0,
            refused: Some(Refusal::StaleReply),
            changes: Changes::default(),
        };
    }
    let kind = word0 & 0xffff;
    let info = (word0 & msg::INFO_MASK) >> msg::INFO_SHIFT;
    if kind == msg::VF_RESET {
        vf.reset();
        if !valid_unicast(vf.policy.mac) {
            // Linux igbvf then runs with a random MAC, which anti-spoofing drops:
            // say so with a NACK rather than pretending.
            let mut h = Handled::reply(&[msg::VF_RESET | msg::NACK, 0, 0, 0], Changes::default());
            h.refused = Some(Refusal::NoMacAssigned);
            return h;
        }
        vf.cts = true;
        let (w1, w2) = mac_to_words(vf.mac);
        // Word 3: the multicast filter type (0: hash on bits 47:36), as igbvf expects.
        return Handled::reply(
            &[msg::VF_RESET | msg::ACK, w1, w2, 0],
            Changes {
                reset: true,
                mac: true,
                multicast: true,
                vlan: true,
                offload: true,
            },
        );
    }
    if !vf.cts {
        return Handled::nack(word0, Refusal::NotClearToSend, false);
    }
    let ok = |changes| Handled::reply(&[word0 | msg::ACK | msg::CTS], changes);
    let nack = |why| Handled::nack(word0, why, true);
    match kind {
        msg::SET_MAC_ADDR => {
            let mac = mac_from_words(m[1], m[2]);
            match info {
                0 => {}
                // igbvf's unicast filter list: "clear" is a no-op (we keep no extra
                // filters); "add" only of the address it already has.
                msg::MAC_FILTER_CLR if dialect == Dialect::Igb => return ok(Changes::default()),
                msg::MAC_FILTER_ADD if dialect == Dialect::Igb && mac == vf.mac => {
                    return ok(Changes::default());
                }
                _ => return nack(Refusal::Unsupported),
            }
            if !valid_unicast(mac) {
                return nack(Refusal::BadMac);
            }
            if mac == vf.mac {
                return ok(Changes::default());
            }
            if !vf.policy.allow_mac_change {
                return nack(Refusal::MacChangeDenied);
            }
            vf.mac = mac;
            ok(Changes {
                mac: true,
                ..Changes::default()
            })
        }
        msg::SET_MULTICAST => {
            let n = info as usize;
            if n > MAX_MC_HASHES {
                return nack(Refusal::BadMulticast);
            }
            let mut hashes = [0u16; MAX_MC_HASHES];
            for (i, h) in hashes.iter_mut().enumerate().take(n) {
                // Two 16-bit hashes per word, low half first, from word 1.
                let w = m[1 + i / 2];
                let v = if i % 2 == 0 { w & 0xffff } else { w >> 16 };
                if v > 0xfff {
                    return nack(Refusal::BadMulticast);
                }
                *h = v as u16;
            }
            vf.mc_hashes = hashes;
            vf.mc_len = n;
            ok(Changes {
                multicast: true,
                offload: true,
                ..Changes::default()
            })
        }
        msg::SET_VLAN => {
            if vf.policy.vlan.is_some() {
                return nack(Refusal::VlanDenied);
            }
            if info > 1 || m[1] > 0xfff {
                return nack(Refusal::BadVlan);
            }
            let vid = m[1] as u16;
            let pos = vf.joined_vlans().iter().position(|&v| v == vid);
            let changed = match (info == 1, pos) {
                (true, Some(_)) | (false, None) => false,
                (true, None) => {
                    if vid == 0 {
                        // VLAN 0 is priority tagging: nothing to filter.
                        false
                    } else if vf.vlan_len == MAX_VLANS {
                        return nack(Refusal::VlanTableFull);
                    } else {
                        vf.vlans[vf.vlan_len] = vid;
                        vf.vlan_len += 1;
                        true
                    }
                }
                (false, Some(i)) => {
                    vf.vlans.copy_within(i + 1..vf.vlan_len, i);
                    vf.vlan_len -= 1;
                    true
                }
            };
            ok(Changes {
                vlan: changed,
                ..Changes::default()
            })
        }
        msg::SET_LPE => {
            if info != 0 || !(MIN_FRAME..=MAX_FRAME).contains(&m[1]) {
                return nack(Refusal::BadFrameSize);
            }
            vf.max_frame = m[1];
            ok(Changes {
                offload: true,
                ..Changes::default()
            })
        }
        msg::SET_MACVLAN if dialect == Dialect::Ixgbe => {
            // No extra filters: "clear" (index 0) and the VF's own address are no-ops.
            if info == 0 || mac_from_words(m[1], m[2]) == vf.mac {
                ok(Changes::default())
            } else {
                nack(Refusal::Unsupported)
            }
        }
        msg::SET_PROMISC => {
            let known = msg::PROMISC_UNICAST | msg::PROMISC_MULTICAST;
            if info & !known != 0 || (info & msg::PROMISC_UNICAST != 0 && !vf.policy.allow_promisc)
            {
                return nack(Refusal::PromiscDenied);
            }
            vf.promisc_unicast = info & msg::PROMISC_UNICAST != 0;
            vf.promisc_multicast = info & msg::PROMISC_MULTICAST != 0;
            ok(Changes {
                offload: true,
                ..Changes::default()
            })
        }
        msg::API_NEGOTIATE => {
            if info != 0 || !matches!(m[1], msg::API_10 | msg::API_11) {
                return nack(Refusal::BadApi);
            }
            vf.api = m[1];
            ok(Changes::default())
        }
        msg::GET_QUEUES => {
            if vf.api != msg::API_11 {
                return nack(Refusal::ApiTooOld);
            }
            // One TX and one RX queue per VF (our PF's layout); word 3: a port VLAN
            // is inserted for the VF ("transparent VLAN"); word 4: default queue 0.
            Handled::reply(
                &[
                    word0 | msg::ACK | msg::CTS,
                    1,
                    1,
                    u32::from(vf.policy.vlan.is_some()),
                    0,
                ],
                Changes::default(),
            )
        }
        _ => nack(Refusal::UnknownType),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xab, 0xcd, 0x01];

    fn words(w: &[u32]) -> [u32; WORDS] {
        let mut m = [0; WORDS];
        m[..w.len()].copy_from_slice(w);
        m
    }

    fn reset_vf(policy: VfPolicy) -> VfState {
        let mut vf = VfState::new(policy);
        let h = handle_message(&mut vf, &words(&[msg::VF_RESET]));
        assert_eq!(h.refused, None);
        vf
    }

    #[test]
    fn reset_reply_carries_the_mac_and_ack_without_cts() {
        let mut vf = VfState::new(VfPolicy::fixed_mac(MAC));
        let h = handle_message(&mut vf, &words(&[msg::VF_RESET]));
        let (w1, w2) = mac_to_words(MAC);
        assert_eq!(h.len, 4);
        // Exactly VF_RESET|ACK: Linux igbvf compares word 0 for equality.
        assert_eq!(h.reply[..4], [0x8000_0001, w1, w2, 0]);
        assert_eq!(mac_from_words(h.reply[1], h.reply[2]), MAC);
        assert!(vf.cts && h.changes.reset);
    }

    #[test]
    fn messages_before_reset_are_nacked_without_cts() {
        let mut vf = VfState::new(VfPolicy::fixed_mac(MAC));
        let (w1, w2) = mac_to_words(MAC);
        let h = handle_message(&mut vf, &words(&[msg::SET_MAC_ADDR, w1, w2]));
        assert_eq!(h.reply[0], msg::SET_MAC_ADDR | msg::NACK);
        assert_eq!(h.refused, Some(Refusal::NotClearToSend));
    }

    #[test]
    fn reset_without_a_configured_mac_is_nacked() {
        let mut vf = VfState::new(VfPolicy::fixed_mac([0; 6]));
        let h = handle_message(&mut vf, &words(&[msg::VF_RESET]));
        assert_eq!(h.reply[0], msg::VF_RESET | msg::NACK);
        assert_eq!(h.refused, Some(Refusal::NoMacAssigned));
        assert!(!vf.cts);
    }

    #[test]
    fn mac_change_follows_the_policy() {
        let other = [0x52, 0x54, 0, 0, 0, 0x99];
        let (w1, w2) = mac_to_words(other);
        let mut fixed = reset_vf(VfPolicy::fixed_mac(MAC));
        let h = handle_message(&mut fixed, &words(&[msg::SET_MAC_ADDR, w1, w2]));
        assert_eq!(h.reply[0], msg::SET_MAC_ADDR | msg::NACK | msg::CTS);
        assert_eq!(h.refused, Some(Refusal::MacChangeDenied));
        assert_eq!(fixed.mac, MAC);
        // Setting the address it already has is fine.
        let (s1, s2) = mac_to_words(MAC);
        let h = handle_message(&mut fixed, &words(&[msg::SET_MAC_ADDR, s1, s2]));
        assert_eq!(h.reply[0], msg::SET_MAC_ADDR | msg::ACK | msg::CTS);
        let mut free = reset_vf(VfPolicy {
            allow_mac_change: true,
            ..VfPolicy::fixed_mac(MAC)
        });
        let h = handle_message(&mut free, &words(&[msg::SET_MAC_ADDR, w1, w2]));
        assert_eq!(h.reply[0], msg::SET_MAC_ADDR | msg::ACK | msg::CTS);
        assert!(h.changes.mac);
        assert_eq!(free.mac, other);
        let (m1, m2) = mac_to_words([0x01, 0, 0x5e, 0, 0, 1]);
        let h = handle_message(&mut free, &words(&[msg::SET_MAC_ADDR, m1, m2]));
        assert_eq!(h.refused, Some(Refusal::BadMac));
    }

    #[test]
    fn igbvf_mac_filter_commands_clear_is_acked_foreign_add_refused() {
        let mut vf = reset_vf(VfPolicy::fixed_mac(MAC));
        let clr = msg::SET_MAC_ADDR | msg::MAC_FILTER_CLR << msg::INFO_SHIFT;
        assert_eq!(handle_message(&mut vf, &words(&[clr])).refused, None);
        let (w1, w2) = mac_to_words(MAC);
        let add = msg::SET_MAC_ADDR | msg::MAC_FILTER_ADD << msg::INFO_SHIFT;
        assert_eq!(
            handle_message(&mut vf, &words(&[add, w1, w2])).refused,
            None
        );
        let (o1, o2) = mac_to_words([0x52, 0, 0, 0, 0, 0x33]);
        assert_eq!(
            handle_message(&mut vf, &words(&[add, o1, o2])).refused,
            Some(Refusal::Unsupported)
        );
        assert_eq!(vf.mac, MAC);
    }

    #[test]
    fn multicast_hashes_are_unpacked_and_bounded() {
        let mut vf = reset_vf(VfPolicy::fixed_mac(MAC));
        let h = handle_message(
            &mut vf,
            &words(&[
                msg::SET_MULTICAST | 3 << msg::INFO_SHIFT,
                0x0456_0123,
                0x0fff,
            ]),
        );
        assert_eq!(h.refused, None);
        assert_eq!(vf.multicast(), &[0x123, 0x456, 0xfff]);
        let h = handle_message(
            &mut vf,
            &words(&[msg::SET_MULTICAST | 31 << msg::INFO_SHIFT]),
        );
        assert_eq!(h.refused, Some(Refusal::BadMulticast));
        let h = handle_message(
            &mut vf,
            &words(&[msg::SET_MULTICAST | 1 << msg::INFO_SHIFT, 0x1000]),
        );
        assert_eq!(h.refused, Some(Refusal::BadMulticast));
        assert_eq!(vf.multicast().len(), 3, "a refused message changes nothing");
    }

    #[test]
    fn vlans_join_leave_and_respect_a_port_vlan() {
        let mut vf = reset_vf(VfPolicy::fixed_mac(MAC));
        for vid in 1..=MAX_VLANS as u32 {
            let h = handle_message(&mut vf, &words(&[msg::SET_VLAN | 1 << 16, vid]));
            assert_eq!(h.refused, None);
        }
        let h = handle_message(&mut vf, &words(&[msg::SET_VLAN | 1 << 16, 100]));
        assert_eq!(h.refused, Some(Refusal::VlanTableFull));
        let h = handle_message(&mut vf, &words(&[msg::SET_VLAN, 3]));
        assert!(h.changes.vlan);
        assert!(!vf.joined_vlans().contains(&3));
        let h = handle_message(&mut vf, &words(&[msg::SET_VLAN | 1 << 16, 4096]));
        assert_eq!(h.refused, Some(Refusal::BadVlan));
        let mut port = reset_vf(VfPolicy {
            vlan: Some(100),
            ..VfPolicy::fixed_mac(MAC)
        });
        let h = handle_message(&mut port, &words(&[msg::SET_VLAN | 1 << 16, 5]));
        assert_eq!(h.refused, Some(Refusal::VlanDenied));
    }

    #[test]
    fn lpe_promisc_api_and_queues() {
        let mut vf = reset_vf(VfPolicy::fixed_mac(MAC));
        assert_eq!(
            handle_message(&mut vf, &words(&[msg::SET_LPE, 9000])).refused,
            None
        );
        assert_eq!(vf.max_frame, 9000);
        assert_eq!(
            handle_message(&mut vf, &words(&[msg::SET_LPE, 20_000])).refused,
            Some(Refusal::BadFrameSize)
        );
        assert_eq!(
            handle_message(&mut vf, &words(&[msg::SET_PROMISC | 1 << 16])).refused,
            Some(Refusal::PromiscDenied)
        );
        assert_eq!(
            handle_message(&mut vf, &words(&[msg::SET_PROMISC | 2 << 16])).refused,
            None
        );
        assert!(vf.promisc_multicast);
        assert_eq!(
            handle_message(&mut vf, &words(&[msg::GET_QUEUES])).refused,
            Some(Refusal::ApiTooOld)
        );
        assert_eq!(
            handle_message(&mut vf, &words(&[msg::API_NEGOTIATE, 7])).refused,
            Some(Refusal::BadApi)
        );
        let h = handle_message(&mut vf, &words(&[msg::API_NEGOTIATE, msg::API_11]));
        assert_eq!(h.reply[0], msg::API_NEGOTIATE | msg::ACK | msg::CTS);
        let h = handle_message(&mut vf, &words(&[msg::GET_QUEUES]));
        assert_eq!(h.len, 5);
        assert_eq!(h.reply[1..5], [1, 1, 0, 0]);
        assert_eq!(
            handle_message(&mut vf, &words(&[0x77])).refused,
            Some(Refusal::UnknownType)
        );
        let h = handle_message(&mut vf, &words(&[msg::SET_LPE | msg::ACK]));
        assert_eq!((h.len, h.refused), (0, Some(Refusal::StaleReply)));
    }
}
