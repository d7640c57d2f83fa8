//! PF<->VF mailbox messages from an untrusted VF (a guest's driver) into the PF side
//! (`nicdrv::igb::mailbox::handle_message`), and through the whole PF service path
//! (`nicdrv::igb::sriov::PfSriov` over the register model: VMBMEM, lock bits,
//! MBVFICR). Nothing panics, every reply fits the mailbox, refusals are NACKs, and
//! the policy holds: a VF with a fixed MAC or a port VLAN never changes them.
//!
//! Input: byte 0 picks the policy (bit 0 MAC change allowed, bit 1 port VLAN, bit 2
//! unicast promiscuous allowed); the rest is a sequence of 64-byte messages (16
//! little-endian words; a short last one is zero-padded).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nicdrv::igb::Registers;
use nicdrv::igb::mailbox::{self, VfPolicy, VfState, WORDS, handle_message, msg};
use nicdrv::igb::model::IgbModel;
use nicdrv::igb::regs;
use nicdrv::igb::sriov::{PfSriov, SriovConfig};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x00, 0x10, 0x01];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let policy = VfPolicy {
        mac: MAC,
        allow_mac_change: sel & 1 != 0,
        vlan: (sel & 2 != 0).then_some(100),
        allow_promisc: sel & 4 != 0,
    };
    let messages: Vec<[u32; WORDS]> = rest
        .chunks(WORDS * 4)
        .take(64)
        .map(|c| {
            let mut m = [0u32; WORDS];
            for (i, w) in c.chunks(4).enumerate() {
                let mut b = [0u8; 4];
                b[..w.len()].copy_from_slice(w);
                m[i] = u32::from_le_bytes(b);
            }
            m
        })
        .collect();

    // The pure handler.
    let mut vf = VfState::new(policy.clone());
    for m in &messages {
        let h = handle_message(&mut vf, m);
        assert!(h.len <= WORDS);
        match h.refused {
            Some(mailbox::Refusal::StaleReply) => assert_eq!(h.len, 0),
            Some(_) => assert_ne!(h.reply[0] & msg::NACK, 0, "a refusal is a NACK"),
            None => assert_ne!(h.reply[0] & msg::ACK, 0, "an acceptance is an ACK"),
        }
        assert!(vf.mc_len <= mailbox::MAX_MC_HASHES);
        assert!(vf.vlan_len <= mailbox::MAX_VLANS);
        if !policy.allow_mac_change {
            assert_eq!(vf.mac, MAC, "a fixed MAC never changes");
        }
        if policy.vlan.is_some() {
            assert_eq!(vf.vlan_len, 0, "a port-VLAN VF joins no VLANs");
        }
    }

    // The 82599 dialect (id 0x06 is SET_MACVLAN there) and its PF service path.
    let mut vf = VfState::new(policy.clone());
    let ixgbe_model = nicdrv::ixgbe::model::IxgbeModel::new();
    let mut ixgbe_pf =
        nicdrv::ixgbe::mailbox::PfMailbox::new(&[policy.clone()]).expect("one VF fits");
    for m in &messages {
        let h = nicdrv::ixgbe::mailbox::handle_message(&mut vf, m);
        assert!(h.len <= WORDS);
        if h.len > 0 {
            assert_ne!(
                h.reply[0] & (msg::ACK | msg::NACK),
                0,
                "replies are flagged"
            );
        }
        if !policy.allow_mac_change {
            assert_eq!(vf.mac, MAC, "a fixed MAC never changes (82599)");
        }
        if ixgbe_model.vf_send(0, m) {
            ixgbe_pf.service(&ixgbe_model);
            let _ = ixgbe_model.vf_take_ack(0);
            let _ = ixgbe_model.vf_receive(0);
        }
    }
    if !policy.allow_mac_change {
        assert_eq!(ixgbe_pf.vfs()[0].mac, MAC);
    }

    // The same messages through the device path: VF writes, PF services.
    let model = IgbModel::new();
    let cfg = SriovConfig {
        vfs: vec![policy],
        poll_every: 1,
    };
    let Ok(mut pf) = PfSriov::new(&cfg) else {
        return;
    };
    pf.program_device(&model, [0x52, 0x54, 0, 0, 0, 1], 1522);
    pf.announce_reset_done(&model);
    let vfr = model.vf(0);
    for m in &messages {
        vfr.write(regs::vf::MAILBOX, regs::vf::MAILBOX_VFU);
        for (i, w) in m.iter().enumerate() {
            vfr.write(regs::vf::VMBMEM + 4 * i as u32, *w);
        }
        vfr.write(regs::vf::MAILBOX, regs::vf::MAILBOX_REQ);
        pf.service(&model);
        // The VF reads whatever came back and acknowledges.
        let _ = vfr.read(regs::vf::MAILBOX);
        vfr.write(regs::vf::MAILBOX, regs::vf::MAILBOX_ACK);
        pf.service(&model);
    }
    let st = &pf.vfs()[0];
    if !st.policy.allow_mac_change {
        assert_eq!(st.mac, MAC);
    }
    assert_eq!(pf.counter("mbx_reply_lost"), 0);
});
