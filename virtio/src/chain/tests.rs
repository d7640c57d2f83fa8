//! Malformed descriptor chains, built in guest memory with virtio-queue's mock split
//! queue: each must end in its own named error, never a panic or a short read.

use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;

const QSIZE: u16 = 16;
const MEM: usize = 0x10_0000;
const NEXT: u16 = VRING_DESC_F_NEXT as u16;
const WRITE: u16 = VRING_DESC_F_WRITE as u16;
const INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;

fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).expect("test memory")
}

fn d(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(Descriptor::new(addr, len, flags, next))
}

const TX: WalkRules = WalkRules {
    writable: false,
    mixed: false,
    indirect: true,
    max_total: 65_536,
};

fn walk(
    mem: &GuestMemoryMmap,
    q: &MockSplitQueue<'_, GuestMemoryMmap>,
    head: u16,
    rules: WalkRules,
) -> Result<Chain, ChainError> {
    let mut c = Chain::default();
    c.walk(mem, q.desc_table_addr(), QSIZE, head, rules)?;
    Ok(c)
}

fn store(q: &MockSplitQueue<'_, GuestMemoryMmap>, descs: &[RawDescriptor]) {
    for (i, x) in descs.iter().enumerate() {
        q.desc_table()
            .store(i as u16, *x)
            .expect("store descriptor");
    }
}

#[test]
fn good_two_segment_chain_yields_both_segments_in_order() {
    let m = mem();
    let q = MockSplitQueue::new(&m, QSIZE);
    store(
        &q,
        &[
            d(0x1_0000, 12, NEXT, 3),
            d(0, 0, 0, 0),
            d(0, 0, 0, 0),
            d(0x2_0000, 100, 0, 0),
        ],
    );
    let c = walk(&m, &q, 0, TX).expect("valid chain");
    assert_eq!(
        c.segs(),
        &[
            Seg {
                addr: 0x1_0000,
                len: 12
            },
            Seg {
                addr: 0x2_0000,
                len: 100
            }
        ]
    );
    assert_eq!(c.total(), 112);
}

#[test]
fn head_outside_the_table_is_bad_index() {
    let m = mem();
    let q = MockSplitQueue::new(&m, QSIZE);
    assert_eq!(walk(&m, &q, QSIZE, TX).unwrap_err(), ChainError::BadIndex);
}

#[test]
fn next_outside_the_table_is_bad_index() {
    let m = mem();
    let q = MockSplitQueue::new(&m, QSIZE);
    store(&q, &[d(0x1_0000, 64, NEXT, 999)]);
    assert_eq!(walk(&m, &q, 0, TX).unwrap_err(), ChainError::BadIndex);
}

#[test]
fn a_chain_that_loops_is_caught() {
    let m = mem();
    let q = MockSplitQueue::new(&m, QSIZE);
    store(&q, &[d(0x1_0000, 64, NEXT, 1), d(0x1_1000, 64, NEXT, 0)]);
    assert_eq!(walk(&m, &q, 0, TX).unwrap_err(), ChainError::Loop);
    // A self-loop too.
    store(&q, &[d(0x1_0000, 64, NEXT, 0)]);
    assert_eq!(walk(&m, &q, 0, TX).unwrap_err(), ChainError::Loop);
}

#[test]
fn a_loop_in_a_large_ring_is_named_a_loop_not_a_length_or_segment_error() {
    let m = mem();
    let q = MockSplitQueue::new(&m, 256);
    q.desc_table()
        .store(0, d(0x1_0000, 64, NEXT, 1))
        .expect("store");
    q.desc_table()
        .store(1, d(0x1_1000, 64, NEXT, 0))
        .expect("store");
    let mut c = Chain::default();
    let rules = WalkRules {
        max_total: 1500,
        ..TX
    };
    assert_eq!(
        c.walk(&m, q.desc_table_addr(), 256, 0, rules).unwrap_err(),
        ChainError::Loop
    );
}

#[test]
fn buffer_outside_guest_memory_is_bad_address() {
    let m = mem();
    let q = MockSplitQueue::new(&m, QSIZE);
    store(&q, &[d(MEM as u64 - 10, 64, 0, 0)]);
    assert_eq!(walk(&m, &q, 0, TX).unwrap_err(), ChainError::BadAddress);
    store(&q, &[d(u64::MAX - 4, 64, 0, 0)]);
    assert_eq!(walk(&m, &q, 0, TX).unwrap_err(), ChainError::BadAddress);
}

#[test]
fn zero_length_buffer_is_refused() {
    let m = mem();
    let q = MockSplitQueue::new(&m, QSIZE);
    store(&q, &[d(0x1_0000, 0, 0, 0)]);
    assert_eq!(walk(&m, &q, 0, TX).unwrap_err(), ChainError::ZeroLength);
}

#[test]
fn writable_buffer_on_transmit_and_readable_on_receive_are_wrong_direction() {
    let m = mem();
    let q = MockSplitQueue::new(&m, QSIZE);
    store(&q, &[d(0x1_0000, 64, WRITE, 0)]);
    assert_eq!(walk(&m, &q, 0, TX).unwrap_err(), ChainError::WrongDirection);
    store(&q, &[d(0x1_0000, 64, 0, 0)]);
    let rx = WalkRules {
        writable: true,
        ..TX
    };
    assert_eq!(walk(&m, &q, 0, rx).unwrap_err(), ChainError::WrongDirection);
}

#[test]
fn huge_total_length_is_too_long() {
    let m = mem();
    let q = MockSplitQueue::new(&m, QSIZE);
    store(
        &q,
        &[d(0x1_0000, 0x8000, NEXT, 1), d(0x2_0000, 0x8001, 0, 0)],
    );
    assert_eq!(walk(&m, &q, 0, TX).unwrap_err(), ChainError::TooLong);
}

#[test]
fn indirect_table_is_followed_when_negotiated() {
    let m = mem();
    let q = MockSplitQueue::new(&m, QSIZE);
    let table = GuestAddress(0x8000);
    m.write_obj(d(0x1_0000, 12, NEXT, 1), table).expect("write");
    m.write_obj(d(0x2_0000, 60, 0, 0), table.unchecked_add(16))
        .expect("write");
    store(&q, &[d(table.0, 32, INDIRECT, 0)]);
    let c = walk(&m, &q, 0, TX).expect("indirect chain");
    assert_eq!(c.total(), 72);
    let no_indirect = WalkRules {
        indirect: false,
        ..TX
    };
    assert_eq!(
        walk(&m, &q, 0, no_indirect).unwrap_err(),
        ChainError::BadIndirect
    );
}

#[test]
fn malformed_indirect_descriptors_are_refused() {
    let m = mem();
    let q = MockSplitQueue::new(&m, QSIZE);
    let table = GuestAddress(0x8000);
    // Length not a multiple of 16.
    store(&q, &[d(table.0, 24, INDIRECT, 0)]);
    assert_eq!(walk(&m, &q, 0, TX).unwrap_err(), ChainError::BadIndirect);
    // INDIRECT together with NEXT.
    store(&q, &[d(table.0, 32, INDIRECT | NEXT, 1)]);
    assert_eq!(walk(&m, &q, 0, TX).unwrap_err(), ChainError::BadIndirect);
    // A nested indirect table.
    m.write_obj(d(table.0, 16, INDIRECT, 0), table)
        .expect("write");
    store(&q, &[d(table.0, 16, INDIRECT, 0)]);
    assert_eq!(walk(&m, &q, 0, TX).unwrap_err(), ChainError::BadIndirect);
    // A table outside guest memory.
    store(&q, &[d(MEM as u64 - 16, 64, INDIRECT, 0)]);
    assert_eq!(walk(&m, &q, 0, TX).unwrap_err(), ChainError::BadAddress);
}

#[test]
fn more_than_max_segments_is_refused() {
    let m = mem();
    let q = MockSplitQueue::new(&m, QSIZE);
    let table = GuestAddress(0x8000);
    let n = MAX_SEGS as u16 + 1;
    for i in 0..n {
        let flags = if i + 1 < n { NEXT } else { 0 };
        let desc = d(0x1_0000 + u64::from(i) * 16, 16, flags, i + 1);
        m.write_obj(desc, table.unchecked_add(u64::from(i) * 16))
            .expect("write");
    }
    store(&q, &[d(table.0, u32::from(n) * 16, INDIRECT, 0)]);
    assert_eq!(
        walk(&m, &q, 0, TX).unwrap_err(),
        ChainError::TooManySegments
    );
}

#[test]
fn read_and_write_cross_segment_boundaries() {
    let m = mem();
    let q = MockSplitQueue::new(&m, QSIZE);
    store(
        &q,
        &[d(0x1_0000, 3, WRITE | NEXT, 1), d(0x2_0000, 5, WRITE, 0)],
    );
    let rx = WalkRules {
        writable: true,
        ..TX
    };
    let c = walk(&m, &q, 0, rx).expect("valid");
    assert_eq!(c.write_at(&m, 1, b"abcdefghij"), Some(7));
    let mut out = [0u8; 8];
    assert_eq!(c.read_at(&m, 0, &mut out), Some(8));
    assert_eq!(&out, b"\0abcdefg");
}

#[test]
fn mixed_chain_splits_at_the_first_writable_buffer_and_refuses_reading_after_writing() {
    let m = mem();
    let q = MockSplitQueue::new(&m, QSIZE);
    let ctrl = WalkRules { mixed: true, ..TX };
    store(
        &q,
        &[
            d(0x1_0000, 2, NEXT, 1),
            d(0x2_0000, 2, NEXT, 2),
            d(0x3_0000, 1, WRITE, 0),
        ],
    );
    let c = walk(&m, &q, 0, ctrl).expect("command then ack");
    assert_eq!(c.readable(), 2);
    assert_eq!(
        c.writable_segs(),
        &[Seg {
            addr: 0x3_0000,
            len: 1
        }]
    );
    store(
        &q,
        &[
            d(0x1_0000, 2, NEXT, 1),
            d(0x3_0000, 1, WRITE | NEXT, 2),
            d(0x2_0000, 2, 0, 0),
        ],
    );
    assert_eq!(
        walk(&m, &q, 0, ctrl).unwrap_err(),
        ChainError::WrongDirection
    );
}
