//! Control queue commands against virtio-queue's mock split ring: each answer byte is
//! read back from guest memory.

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::net::offered_features;

const QSIZE: u16 = 16;
const NEXT: u16 = VRING_DESC_F_NEXT as u16;
const WRITE: u16 = VRING_DESC_F_WRITE as u16;

fn d(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(Descriptor::new(addr, len, flags, next))
}

/// Runs `commands` (each: command bytes, then a 1-byte ack buffer) through `process`
/// and returns the ack bytes, the pair count and the counters.
fn run(commands: &[&[u8]], neg: Negotiated) -> (Vec<u8>, u16, CtrlCounters, usize) {
    let m = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).expect("mem");
    let mq = MockSplitQueue::new(&m, QSIZE);
    for (i, c) in commands.iter().enumerate() {
        let (cmd, ack) = (0x1_0000 + 0x1000 * i as u64, 0x8_0000 + 0x10 * i as u64);
        m.write_slice(c, GuestAddress(cmd)).expect("cmd");
        m.write_slice(&[0xee], GuestAddress(ack)).expect("ack");
        let idx = 2 * i as u16;
        mq.desc_table()
            .store(idx, d(cmd, c.len() as u32, NEXT, idx + 1))
            .expect("d");
        mq.desc_table()
            .store(idx + 1, d(ack, 1, WRITE, 0))
            .expect("d");
        mq.avail()
            .ring()
            .ref_at(i)
            .expect("slot")
            .store(u16::to_le(idx));
    }
    mq.avail().idx().store(u16::to_le(commands.len() as u16));
    let mut q: Queue = mq.create_queue().expect("queue");
    let (mut pairs, mut counters, mut chain) = (1u16, CtrlCounters::default(), Chain::default());
    let used = process(&mut q, &m, neg, 4, &mut pairs, &mut chain, &mut counters).expect("ok");
    let acks = (0..commands.len())
        .map(|i| {
            m.read_obj::<u8>(GuestAddress(0x8_0000 + 0x10 * i as u64))
                .expect("ack")
        })
        .collect();
    (acks, pairs, counters, used)
}

fn mq_neg() -> Negotiated {
    Negotiated::from_bits(offered_features(4, false))
}

#[test]
fn vq_pairs_set_in_range_is_ok_and_out_of_range_is_err() {
    let (acks, pairs, c, used) = run(
        &[
            &[class::MQ, 0, 3, 0],
            &[class::MQ, 0, 5, 0],
            &[class::MQ, 0, 0, 0],
            &[class::MQ, 0, 2],
        ],
        mq_neg(),
    );
    assert_eq!(acks, [ACK_OK, ACK_ERR, ACK_ERR, ACK_ERR]);
    assert_eq!(pairs, 3);
    assert_eq!((c.ok, c.rejected, c.unknown_class), (1, 3, 0));
    assert_eq!(used, 4);
}

#[test]
fn vq_pairs_set_without_mq_negotiated_is_err() {
    let (acks, pairs, _, _) = run(
        &[&[class::MQ, 0, 2, 0]],
        Negotiated::from_bits(offered_features(1, false)),
    );
    assert_eq!((acks[0], pairs), (ACK_ERR, 1));
}

#[test]
fn promisc_allmulti_and_mac_tables_are_accepted() {
    let mut table = vec![class::MAC, class::MAC_TABLE_SET, 1, 0, 0, 0];
    table.extend_from_slice(&[0x52, 0x54, 0, 0, 0, 9]);
    table.extend_from_slice(&[2, 0, 0, 0]);
    table.extend_from_slice(&[0x33, 0x33, 0, 0, 0, 1, 0x01, 0, 0x5e, 0, 0, 1]);
    let mut short = table.clone();
    short.pop();
    let (acks, _, c, _) = run(
        &[
            &[class::RX, class::RX_PROMISC, 1],
            &[class::RX, class::RX_ALLMULTI, 0],
            &table,
            &short,
            &[class::RX, class::RX_PROMISC],
        ],
        mq_neg(),
    );
    assert_eq!(acks, [ACK_OK, ACK_OK, ACK_OK, ACK_ERR, ACK_ERR]);
    assert_eq!((c.ok, c.rejected), (3, 2));
}

#[test]
fn unknown_class_is_err_and_counted() {
    let (acks, _, c, _) = run(&[&[0x77, 0, 1], &[class::VLAN, 0, 1, 0]], mq_neg());
    assert_eq!(acks, [ACK_ERR, ACK_ERR]);
    assert_eq!((c.unknown_class, c.rejected), (1, 1));
}

#[test]
fn command_without_an_ack_buffer_is_returned_unanswered() {
    let m = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).expect("mem");
    let mq = MockSplitQueue::new(&m, QSIZE);
    m.write_slice(&[class::MQ, 0, 2, 0], GuestAddress(0x1_0000))
        .expect("cmd");
    mq.desc_table().store(0, d(0x1_0000, 4, 0, 0)).expect("d");
    mq.avail().ring().ref_at(0).expect("slot").store(0);
    mq.avail().idx().store(u16::to_le(1));
    let mut q: Queue = mq.create_queue().expect("queue");
    let (mut pairs, mut c, mut chain) = (1u16, CtrlCounters::default(), Chain::default());
    let used = process(&mut q, &m, mq_neg(), 4, &mut pairs, &mut chain, &mut c).expect("ok");
    assert_eq!((used, c.bad_chain, pairs), (1, 1, 1));
    assert_eq!(u16::from_le(mq.used().idx().load()), 1);
}
