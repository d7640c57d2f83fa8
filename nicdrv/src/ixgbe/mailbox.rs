//! The PF side of the 82599 PF<->VF mailbox: the message handler and the register
//! protocol that moves messages between it and the device (82599 datasheet 7.10.2.9,
//! registers in [`super::regs::sriov`]).
//!
//! [`super::IxgbePort`] runs it from its `rx_batch` when configured for SR-IOV
//! ([`super::IxgbeConfig::sriov`], [`super::sriov`], which also puts the device in
//! virtualization mode). It is tested against the model's mailbox registers, with the
//! tests playing the VF's part, and with our VF driver against the PF port.
//!
//! # The message set
//!
//! The 82599's mailbox API (Linux ixgbevf) uses the message ids, word layout, flags
//! and API numbering of the 82576's, so [`handle_message`] is the handler in
//! [`crate::igb::mailbox`] in its [`Dialect::Ixgbe`], which differs in two messages:
//!
//! - id 0x06 is `SET_MACVLAN` (extra unicast filters: msginfo = index, 0 = clear
//!   all) on the 82599, where the 82576 has `SET_PROMISC`. We keep no extra filters:
//!   "clear" and "add the VF's own address" are acknowledged, any other address is
//!   refused ([`Refusal::Unsupported`]).
//! - ixgbevf's `SET_MAC_ADDR` carries no msginfo; the 82576's MAC-filter
//!   sub-commands in that field are refused ([`Refusal::Unsupported`]).
//!
//! API 1.2 and later (`GET_RETA` 0x0a, `GET_RSS_KEY` 0x0b, `UPDATE_XCAST_MODE` 0x0c,
//! `GET_LINK_STATE` 0x10, ...) are not offered: API_NEGOTIATE for them is NACKed and
//! ixgbevf falls back to 1.1, as it does with older Linux PFs. This file keeps the
//! register protocol.

use pkt::DropCounter;

use super::regs::sriov as r;
use crate::igb::Registers;
pub use crate::igb::mailbox::{Changes, Dialect, Handled, Refusal, VfPolicy, VfState, msg};

/// Mailbox words.
pub const WORDS: usize = r::MAILBOX_WORDS;

/// `SET_MACVLAN` (0x06 in the ixgbe API): add (msginfo = index > 0) or clear
/// (msginfo 0) extra unicast filters.
pub const SET_MACVLAN: u32 = msg::SET_MACVLAN;

/// Handles one message from an 82599 VF (the ixgbevf dialect): updates `vf` and
/// returns the reply. Pure: no I/O, no allocation, no panic for any input.
pub fn handle_message(vf: &mut VfState, m: &[u32; WORDS]) -> Handled {
    crate::igb::mailbox::handle(Dialect::Ixgbe, vf, m)
}

/// Mailbox protocol failures on the PF side, counted by name.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct ProtocolCounters {
    /// The VF held the buffer (VFU) when the PF wanted it: the message waits.
    busy: u64,
    /// A request from a VF number we have no state for.
    unknown_vf: u64,
    /// Messages handled.
    handled: u64,
    /// Function-level resets of a VF (PFVFLRE) handled.
    flr: u64,
}

/// The PF's side of the mailbox for `vfs` VFs (pools 0..vfs; the PF's own pool is
/// `vfs`): reads requests, answers them through [`handle_message`], and programs what
/// a reset or a MAC change asks for (receive and transmit enable per pool, MAC
/// anti-spoofing, the VF's receive address and its pool).
#[derive(Debug)]
pub struct PfMailbox {
    vfs: Vec<VfState>,
    refusals: [u64; Refusal::ALL.len()],
    proto: ProtocolCounters,
}

impl PfMailbox {
    /// Mailbox state for one VF per policy; refused above [`r::MAX_VFS`] VFs.
    pub fn new(policies: &[VfPolicy]) -> Result<Self, super::IxgbeError> {
        if policies.len() > r::MAX_VFS {
            return Err(super::IxgbeError::Config(format!(
                "{} VFs: the 82599 has at most {}; give fewer `vf` interfaces",
                policies.len(),
                r::MAX_VFS
            )));
        }
        Ok(Self {
            vfs: policies.iter().cloned().map(VfState::new).collect(),
            refusals: [0; Refusal::ALL.len()],
            proto: ProtocolCounters::default(),
        })
    }

    /// The VFs' states, by VF number.
    pub fn vfs(&self) -> &[VfState] {
        &self.vfs
    }

    /// The pool the PF keeps for itself (the one after the VFs').
    pub fn pf_pool(&self) -> u32 {
        self.vfs.len() as u32
    }

    /// Handles every pending VF request (PFMBICR.VFREQ), one message each; returns how
    /// many were handled. Bounded: at most one message per VF per call. A request
    /// whose buffer the VF still holds stays pending for the next call.
    ///
    /// First, VFs reset through PCIe (FLR, PFVFLRE) lose their state and their pool
    /// until they send VF_RESET again.
    pub fn service<R: Registers>(&mut self, regs: &R) -> usize {
        for n in 0..2u32 {
            let flr = regs.read(r::pfvflre(n));
            if flr == 0 {
                continue;
            }
            regs.write(r::pfvflrec(n), flr);
            for bit in (0..32).filter(|b| flr & (1 << b) != 0) {
                self.function_reset(regs, 32 * n + bit);
            }
        }
        let mut handled = 0;
        for n in 0..(r::MAX_VFS as u32).div_ceil(16) {
            let cause = regs.read(r::pfmbicr(n)) & r::PFMBICR_VFREQ_MASK;
            if cause == 0 {
                continue;
            }
            for bit in 0..16 {
                if cause & (1 << bit) != 0 && self.service_one(regs, 16 * n + bit) {
                    handled += 1;
                }
            }
        }
        handled
    }

    fn service_one<R: Registers>(&mut self, regs: &R, vf: u32) -> bool {
        // PFMBICR is write-1-to-clear: clear this VF's request once we take it.
        let clear = || regs.write(r::pfmbicr(vf / 16), 1 << (vf % 16));
        let Some(state) = self.vfs.get_mut(vf as usize) else {
            clear();
            self.proto.unknown_vf += 1;
            return false;
        };
        // 7.10.2.9.2: take the buffer (PFU), read the message, acknowledge it.
        if !lock(regs, vf) {
            self.proto.busy += 1;
            return false;
        }
        clear();
        let mut m = [0u32; WORDS];
        for (i, w) in m.iter_mut().enumerate() {
            *w = regs.read(r::pfmbmem(vf, i as u32));
        }
        regs.write(r::pfmailbox(vf), r::PFMAILBOX_ACK);
        let h = handle_message(state, &m);
        let mac = state.mac;
        let vlan = state.policy.vlan;
        let max_frame = state.max_frame;
        if let Some(why) = h.refused
            && let Some(i) = Refusal::ALL.iter().position(|&x| x == why)
        {
            self.refusals[i] += 1;
        }
        if h.changes.reset {
            self.enable_pool(regs, vf, vlan.is_some());
        }
        if h.changes.mac {
            program_mac(regs, vf, mac);
        }
        if h.changes.offload && max_frame > 0 {
            grow_max_frame(regs, max_frame);
        }
        if h.len > 0 {
            // 7.10.2.9.1: take the buffer again, write the reply, then STS (which also
            // releases PFU).
            if !lock(regs, vf) {
                self.proto.busy += 1;
                return true;
            }
            for (i, &w) in h.reply[..h.len].iter().enumerate() {
                regs.write(r::pfmbmem(vf, i as u32), w);
            }
            regs.write(r::pfmailbox(vf), r::PFMAILBOX_STS);
        }
        self.proto.handled += 1;
        true
    }

    /// A VF went through a function-level reset: forget what it negotiated and stop
    /// its pool and its MAC filter (its next VF_RESET brings them back).
    fn function_reset<R: Registers>(&mut self, regs: &R, vf: u32) {
        let Some(state) = self.vfs.get_mut(vf as usize) else {
            self.proto.unknown_vf += 1;
            return;
        };
        state.reset();
        self.proto.flr += 1;
        let (reg, bit) = (vf / 32, 1u32 << (vf % 32));
        regs.write(r::pfvfre(reg), regs.read(r::pfvfre(reg)) & !bit);
        regs.write(r::pfvfte(reg), regs.read(r::pfvfte(reg)) & !bit);
        regs.write(r::rah(1 + vf), 0);
        regs.write(r::mpsar_lo(1 + vf), 0);
        regs.write(r::mpsar_hi(1 + vf), 0);
    }

    /// Lets pool `vf` receive and transmit, and turns on MAC (and with a port VLAN,
    /// VLAN) anti-spoofing for it, so it can send only from the address we gave it.
    /// Its VMOLR accepts broadcast and multicast-table hits, and untagged frames
    /// unless the VF has a port VLAN (then only that VLAN's frames are its).
    fn enable_pool<R: Registers>(&self, regs: &R, vf: u32, vlan: bool) {
        let mut vmolr = r::VMOLR_BAM | r::VMOLR_ROMPE;
        if !vlan {
            vmolr |= r::VMOLR_AUPE;
        }
        regs.write(r::vmolr(vf), vmolr);
        let (reg, bit) = (vf / 32, 1 << (vf % 32));
        regs.write(r::pfvfre(reg), regs.read(r::pfvfre(reg)) | bit);
        regs.write(r::pfvfte(reg), regs.read(r::pfvfte(reg)) | bit);
        let (sreg, sbit) = (vf / 8, 1 << (vf % 8));
        let mut spoof = regs.read(r::pfvfspoof(sreg)) | sbit;
        if vlan {
            spoof |= sbit << r::PFVFSPOOF_VLAN_SHIFT;
        }
        regs.write(r::pfvfspoof(sreg), spoof);
    }

    /// Named counters: one per refusal, then the protocol's.
    pub fn counters(&self) -> Vec<DropCounter> {
        Refusal::ALL
            .iter()
            .zip(self.refusals)
            .map(|(r, count)| DropCounter {
                name: r.counter(),
                count,
            })
            .chain([
                DropCounter {
                    name: "mbx_busy",
                    count: self.proto.busy,
                },
                DropCounter {
                    name: "mbx_unknown_vf",
                    count: self.proto.unknown_vf,
                },
                DropCounter {
                    name: "mbx_handled",
                    count: self.proto.handled,
                },
                DropCounter {
                    name: "vf_flr",
                    count: self.proto.flr,
                },
            ])
            .collect()
    }

    /// One counter by name (0 for an unknown name).
    pub fn counter(&self, name: &str) -> u64 {
        self.counters()
            .into_iter()
            .find(|c| c.name == name)
            .map_or(0, |c| c.count)
    }
}

/// Takes the VF's mailbox buffer for the PF: write PFU, read it back (the device
/// refuses it while the VF holds VFU).
fn lock<R: Registers>(regs: &R, vf: u32) -> bool {
    regs.write(r::pfmailbox(vf), r::PFMAILBOX_PFU);
    regs.read(r::pfmailbox(vf)) & r::PFMAILBOX_PFU != 0
}

/// A VF asked for frames up to `frame` bytes (SET_LPE, FCS included). The 82599 has
/// one frame limit for the whole port (MAXFRS with HLREG0.JUMBOEN, shared by every
/// pool), so it only grows, as Linux ixgbe does it; a smaller request changes nothing.
fn grow_max_frame<R: Registers>(regs: &R, frame: u32) {
    use super::regs as g;
    let hlreg0 = regs.read(g::HLREG0);
    let current = if hlreg0 & g::HLREG0_JUMBOEN != 0 {
        regs.read(g::MAXFRS) >> g::MAXFRS_MFS_SHIFT
    } else {
        // Without JUMBOEN the MAC takes standard frames (1518 bytes, 1522 tagged).
        1522
    };
    if frame > current {
        regs.write(g::MAXFRS, frame << g::MAXFRS_MFS_SHIFT);
        regs.write(g::HLREG0, hlreg0 | g::HLREG0_JUMBOEN);
    }
}

/// Receive address entry 1 + `vf` holds the VF's MAC, for its pool only.
fn program_mac<R: Registers>(regs: &R, vf: u32, mac: [u8; 6]) {
    let n = 1 + vf;
    let (lo, hi) = crate::igb::mailbox::mac_to_words(mac);
    regs.write(r::rah(n), 0);
    regs.write(r::ral(n), lo);
    let (mlo, mhi) = if vf < 32 {
        (1 << vf, 0)
    } else {
        (0, 1 << (vf - 32))
    };
    regs.write(r::mpsar_lo(n), mlo);
    regs.write(r::mpsar_hi(n), mhi);
    regs.write(r::rah(n), hi | super::regs::RAH_AV);
}
