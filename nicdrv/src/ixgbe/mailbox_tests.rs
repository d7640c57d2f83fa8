//! The 82599 PF mailbox against the model's mailbox registers, the tests playing the
//! VF (what ixgbevf sends), and the ixgbe dialect of the message handler.

use super::mailbox::{PfMailbox, SET_MACVLAN, VfPolicy, VfState, WORDS, handle_message, msg};
use super::model::IxgbeModel;
use super::regs::{self, sriov as r};
use crate::igb::mailbox::{Refusal, mac_to_words};

const MAC0: [u8; 6] = [0x52, 0x54, 0x00, 0x10, 0xed, 0x00];
const MAC1: [u8; 6] = [0x52, 0x54, 0x00, 0x10, 0xed, 0x01];
const OTHER: [u8; 6] = [0x52, 0x54, 0x00, 0x66, 0x66, 0x66];
/// ixgbe_mbox_api_14, which a current ixgbevf tries first.
const API_14: u32 = 5;

fn words(w: &[u32]) -> [u32; WORDS] {
    let mut m = [0; WORDS];
    m[..w.len()].copy_from_slice(w);
    m
}

/// Sends `m` from VF `vf`, lets the PF service its mailbox, and returns the reply.
fn exchange(model: &IxgbeModel, pf: &mut PfMailbox, vf: u32, m: &[u32]) -> [u32; WORDS] {
    assert!(model.vf_send(vf, m), "buffer free");
    assert_eq!(pf.service(model), 1);
    assert!(model.vf_take_ack(vf), "the PF acknowledged the message");
    model.vf_receive(vf).expect("a reply")
}

fn two_vfs() -> (IxgbeModel, PfMailbox) {
    let pf =
        PfMailbox::new(&[VfPolicy::fixed_mac(MAC0), VfPolicy::fixed_mac(MAC1)]).expect("mailbox");
    (IxgbeModel::new(), pf)
}

#[test]
fn vf_reset_gets_its_mac_and_enables_its_pool_with_mac_anti_spoofing() {
    let (model, mut pf) = two_vfs();
    let reply = exchange(&model, &mut pf, 1, &[msg::VF_RESET]);
    let (w1, w2) = mac_to_words(MAC1);
    // VF_RESET | ACK, the MAC, multicast filter type 0: what ixgbevf's reset expects.
    assert_eq!(reply[..4], [0x8000_0001, w1, w2, 0]);
    assert!(pf.vfs()[1].cts && !pf.vfs()[0].cts);
    // Pool 1 may receive and transmit; pool 0 (not reset) may not.
    assert_eq!(model.peek(r::pfvfre(0)), 1 << 1);
    assert_eq!(model.peek(r::pfvfte(0)), 1 << 1);
    // MAC anti-spoofing for pool 1 only; no port VLAN, so no VLAN anti-spoofing.
    assert_eq!(model.peek(r::pfvfspoof(0)), 1 << 1);
    // Receive address 2 holds VF 1's MAC, for pool 1.
    assert_eq!(model.peek(r::ral(2)), w1);
    assert_eq!(model.peek(r::rah(2)), w2 | regs::RAH_AV);
    assert_eq!(model.peek(r::mpsar_lo(2)), 1 << 1);
    assert_eq!(model.peek(r::pfmbicr(0)), 0, "request cleared");
    assert_eq!(pf.counter("mbx_handled"), 1);
}

#[test]
fn a_port_vlan_turns_on_vlan_anti_spoofing_too() {
    let mut policy = VfPolicy::fixed_mac(MAC0);
    policy.vlan = Some(100);
    let mut pf = PfMailbox::new(&[policy]).expect("mailbox");
    let model = IxgbeModel::new();
    exchange(&model, &mut pf, 0, &[msg::VF_RESET]);
    assert_eq!(
        model.peek(r::pfvfspoof(0)),
        1 | 1 << r::PFVFSPOOF_VLAN_SHIFT
    );
    // The VF may not join VLANs itself.
    let reply = exchange(
        &model,
        &mut pf,
        0,
        &[msg::SET_VLAN | 1 << msg::INFO_SHIFT, 7],
    );
    assert_eq!(reply[0] & msg::NACK, msg::NACK);
    assert_eq!(pf.counter("mbx_nack_vlan_denied"), 1);
}

#[test]
fn api_negotiation_falls_back_to_1_1_and_get_queues_answers() {
    let (model, mut pf) = two_vfs();
    exchange(&model, &mut pf, 0, &[msg::VF_RESET]);
    let reply = exchange(&model, &mut pf, 0, &[msg::API_NEGOTIATE, API_14]);
    assert_eq!(reply[0], msg::API_NEGOTIATE | msg::NACK | msg::CTS);
    assert_eq!(pf.counter("mbx_nack_bad_api"), 1);
    let reply = exchange(&model, &mut pf, 0, &[msg::API_NEGOTIATE, msg::API_11]);
    assert_eq!(reply[0], msg::API_NEGOTIATE | msg::ACK | msg::CTS);
    let reply = exchange(&model, &mut pf, 0, &[msg::GET_QUEUES]);
    assert_eq!(
        reply[..5],
        [msg::GET_QUEUES | msg::ACK | msg::CTS, 1, 1, 0, 0]
    );
}

#[test]
fn mac_set_to_another_address_is_refused_unless_allowed() {
    let (model, mut pf) = two_vfs();
    exchange(&model, &mut pf, 0, &[msg::VF_RESET]);
    let (o1, o2) = mac_to_words(OTHER);
    let reply = exchange(&model, &mut pf, 0, &[msg::SET_MAC_ADDR, o1, o2]);
    assert_eq!(reply[0], msg::SET_MAC_ADDR | msg::NACK | msg::CTS);
    assert_eq!(pf.counter("mbx_nack_mac_denied"), 1);
    assert_eq!(pf.vfs()[0].mac, MAC0);
    let (m1, _) = mac_to_words(MAC0);
    assert_eq!(
        model.peek(r::ral(1)),
        m1,
        "the filter keeps the assigned MAC"
    );

    let mut policy = VfPolicy::fixed_mac(MAC0);
    policy.allow_mac_change = true;
    let mut pf = PfMailbox::new(&[policy]).expect("mailbox");
    exchange(&model, &mut pf, 0, &[msg::VF_RESET]);
    let reply = exchange(&model, &mut pf, 0, &[msg::SET_MAC_ADDR, o1, o2]);
    assert_eq!(reply[0], msg::SET_MAC_ADDR | msg::ACK | msg::CTS);
    assert_eq!(model.peek(r::ral(1)), o1);
    assert_eq!(model.peek(r::rah(1)), o2 | regs::RAH_AV);
}

#[test]
fn id_6_is_set_macvlan_on_the_82599_not_the_82576s_set_promisc() {
    let mut vf = VfState::new(VfPolicy::fixed_mac(MAC0));
    assert_eq!(
        handle_message(&mut vf, &words(&[msg::VF_RESET])).refused,
        None
    );
    let (o1, o2) = mac_to_words(OTHER);
    let (m1, m2) = mac_to_words(MAC0);
    // Clear all extra filters: nothing to clear, acknowledged.
    let h = handle_message(&mut vf, &words(&[SET_MACVLAN]));
    assert_eq!(h.reply[0], SET_MACVLAN | msg::ACK | msg::CTS);
    // Add its own address: acknowledged; another one: refused as unsupported.
    let h = handle_message(
        &mut vf,
        &words(&[SET_MACVLAN | 1 << msg::INFO_SHIFT, m1, m2]),
    );
    assert_eq!(h.refused, None);
    let add_other = words(&[SET_MACVLAN | 1 << msg::INFO_SHIFT, o1, o2]);
    let h = handle_message(&mut vf, &add_other);
    assert_eq!(h.reply[0], add_other[0] | msg::NACK | msg::CTS);
    assert_eq!(h.refused, Some(Refusal::Unsupported));
    assert!(!vf.promisc_unicast && !vf.promisc_multicast);
    // The 82576 handler reads the same words as a promiscuous-mode request.
    let mut igb_vf = VfState::new(VfPolicy::fixed_mac(MAC0));
    crate::igb::mailbox::handle_message(&mut igb_vf, &words(&[msg::VF_RESET]));
    let h = crate::igb::mailbox::handle_message(&mut igb_vf, &add_other);
    assert_eq!(h.refused, Some(Refusal::PromiscDenied));
}

#[test]
fn bad_messages_are_nacked_and_counted() {
    let (model, mut pf) = two_vfs();
    // Before its reset a VF gets NACK without CTS.
    let (m1, m2) = mac_to_words(MAC0);
    let reply = exchange(&model, &mut pf, 0, &[msg::SET_MAC_ADDR, m1, m2]);
    assert_eq!(reply[0], msg::SET_MAC_ADDR | msg::NACK);
    assert_eq!(pf.counter("mbx_nack_before_reset"), 1);
    exchange(&model, &mut pf, 0, &[msg::VF_RESET]);
    for (m, counter) in [
        (vec![0x7f], "mbx_nack_unknown_type"),
        (vec![msg::SET_LPE, 20], "mbx_nack_bad_frame_size"),
        (
            vec![msg::SET_MULTICAST | 31 << msg::INFO_SHIFT],
            "mbx_nack_bad_multicast",
        ),
        (
            vec![msg::SET_MAC_ADDR | 1 << msg::INFO_SHIFT, m1, m2],
            "mbx_nack_unsupported",
        ),
        (vec![msg::GET_QUEUES], "mbx_nack_api_too_old"),
    ] {
        let reply = exchange(&model, &mut pf, 0, &m);
        assert_eq!(
            reply[0] & (msg::NACK | msg::CTS),
            msg::NACK | msg::CTS,
            "{m:x?}"
        );
        assert_eq!(pf.counter(counter), 1, "{counter}");
    }
    // A stale echo gets no reply at all.
    assert!(model.vf_send(0, &[msg::VF_RESET | msg::ACK]));
    assert_eq!(pf.service(&model), 1);
    assert_eq!(model.vf_receive(0), None);
    assert_eq!(pf.counter("mbx_ignored_stale"), 1);
    // A request from a VF nobody configured is dropped with a counter.
    assert!(model.vf_send(5, &[msg::VF_RESET]));
    assert_eq!(pf.service(&model), 0);
    assert_eq!(model.vf_receive(5), None);
    assert_eq!(pf.counter("mbx_unknown_vf"), 1);
    assert_eq!(model.peek(r::pfmbicr(0)), 0);
    // Nothing of this enabled VF 1's pool.
    assert_eq!(model.peek(r::pfvfre(0)), 1);
}

#[test]
fn a_vf_holding_its_buffer_makes_the_request_wait() {
    let (model, mut pf) = two_vfs();
    assert!(model.vf_send(0, &[msg::VF_RESET]));
    model.vf_hold(0, true);
    assert_eq!(pf.service(&model), 0);
    assert_eq!(pf.counter("mbx_busy"), 1);
    assert_eq!(model.vf_receive(0), None);
    assert_ne!(model.peek(r::pfmbicr(0)) & 1, 0, "still pending");
    model.vf_hold(0, false);
    assert_eq!(pf.service(&model), 1);
    assert_eq!(model.vf_receive(0).expect("reply")[0], 0x8000_0001);
}

#[test]
fn any_message_gets_a_flagged_reply_or_none_and_never_panics() {
    // A cheap deterministic generator over every message id and odd words.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u32
    };
    for i in 0..20_000u32 {
        let mut vf = VfState::new(VfPolicy::fixed_mac(MAC0));
        if i % 2 == 0 {
            handle_message(&mut vf, &words(&[msg::VF_RESET]));
        }
        let mut m = [0u32; WORDS];
        m.iter_mut().for_each(|w| *w = next());
        // Mostly real ids with random info and flags.
        m[0] = (m[0] & 0xffff_0000) | (i % 0x12);
        let h = handle_message(&mut vf, &m);
        assert!(h.len <= WORDS);
        if h.len > 0 {
            assert_ne!(h.reply[0] & (msg::ACK | msg::NACK), 0, "{m:x?}");
        }
    }
}

#[test]
fn more_vfs_than_the_82599_has_is_a_clear_error() {
    let policies = vec![VfPolicy::fixed_mac(MAC0); r::MAX_VFS + 1];
    let e = PfMailbox::new(&policies).expect_err("too many");
    assert!(e.to_string().contains("at most 63"), "{e}");
}
