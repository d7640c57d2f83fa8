//! The port's wake-up path: guest kicks reach its poll fd straight from the kernel,
//! through whatever kick eventfd the frontend set last, and nothing stale stays behind.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pkt::{Batch, Mempool, Port};
use rustix::event::{PollFd, PollFlags, Timespec};

use super::{VhostUserConfig, VhostUserPort};
use crate::frontend::{VirtioUser, VirtioUserOptions};
use crate::net::{RX_QUEUE, TX_QUEUE};

fn socket(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("vnetp-wake-{}-{name}.sock", std::process::id()))
}

fn port(name: &str) -> VhostUserPort {
    port_with(name, 1)
}

fn port_with(name: &str, max_queue_pairs: u16) -> VhostUserPort {
    port_cfg(VhostUserConfig {
        name: name.into(),
        socket: socket(name),
        max_queue_pairs,
        ..VhostUserConfig::default()
    })
}

fn port_cfg(cfg: VhostUserConfig) -> VhostUserPort {
    VhostUserPort::listen(cfg, Mempool::new(512, 2048).expect("mempool")).expect("listen")
}

fn guest(name: &str) -> VirtioUser {
    VirtioUser::connect(&socket(name), VirtioUserOptions::default()).expect("connect")
}

fn guest_with(name: &str, queue_pairs: u16) -> VirtioUser {
    let opts = VirtioUserOptions {
        queue_pairs,
        ctrl_vq: true,
        ..VirtioUserOptions::default()
    };
    VirtioUser::connect(&socket(name), opts).expect("connect")
}

/// Whether the poll fd wakes a poll for IN|OUT within `ms`, as the engine polls it while
/// it holds frames for the guest: only readability may wake it, never writability.
fn wakes(port: &VhostUserPort, ms: i64) -> bool {
    let fd = port.poll_fd().expect("the port has a poll fd");
    let mut fds = [PollFd::from_borrowed_fd(fd, PollFlags::IN | PollFlags::OUT)];
    let t = Timespec {
        tv_sec: ms / 1000,
        tv_nsec: (ms % 1000) * 1_000_000,
    };
    let n = rustix::event::poll(&mut fds, Some(&t)).expect("poll");
    assert!(
        !fds[0].revents().contains(PollFlags::OUT),
        "the poll fd must never be writable"
    );
    n > 0
}

/// Does what the engine does after a wake-up until the poll fd stays quiet for 100 ms:
/// connection hand-over and queue enables wake the port once each.
fn settle(port: &mut VhostUserPort) {
    let mut batch = Batch::new();
    for _ in 0..100 {
        port.clear_poll_fd();
        port.rx_batch(&mut batch);
        batch.clear();
        if !wakes(port, 100) {
            return;
        }
    }
    panic!("the poll fd stays readable with nothing to do");
}

/// Fds registered in the epoll set behind the poll fd (`tfd:` lines of its fdinfo).
fn registered(port: &VhostUserPort) -> usize {
    let fd = port.poll_fd().expect("the port has a poll fd").as_raw_fd();
    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .expect("fdinfo")
        .lines()
        .filter(|l| l.starts_with("tfd:"))
        .count()
}

/// The tokens the port's epoll set reports ready now (queue indices, or the wake-up
/// pipe's). Collects edge-triggered kicks as `clear_poll_fd` does, but drains nothing.
fn ready_tokens(port: &VhostUserPort) -> Vec<u64> {
    use rustix::event::epoll;
    let mut ready = [epoll::Event {
        flags: epoll::EventFlags::empty(),
        data: epoll::EventData::new_u64(0),
    }; 8];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let n = epoll::wait(&port.shared.poll, &mut ready[..], Some(&now)).expect("epoll_wait");
    ready[..n].iter().map(|e| e.data.u64()).collect()
}

#[test]
fn a_kick_on_either_data_queue_wakes_the_poll_fd_without_the_worker_and_clearing_it_lets_it_sleep()
{
    let mut p = port("kick");
    let mut g = guest("kick");
    settle(&mut p);
    // The wake-up pipe and the kicks of the receive and transmit queue.
    assert_eq!(registered(&p), 3);
    for which in [TX_QUEUE, RX_QUEUE] {
        g.kick(0, which).expect("kick");
        assert!(
            wakes(&p, 5_000),
            "a kick on queue {which} did not wake the poll fd"
        );
        // Straight from the kernel: the kick's own eventfd is ready in the set. (The
        // worker may also write the pipe late, for a queue enable it saw after
        // `settle` under load: that wake-up is not the kick's.)
        assert!(
            ready_tokens(&p).contains(&(which as u64)),
            "a kick on queue {which} reached the poll fd through the worker, not its eventfd"
        );
        g.kick(0, which).expect("kick");
        assert!(
            wakes(&p, 5_000),
            "a second kick on queue {which} did not wake the poll fd"
        );
        p.clear_poll_fd();
        assert!(
            !ready_tokens(&p).contains(&(which as u64)),
            "a collected kick on queue {which} still wakes the poll fd"
        );
    }
}

#[test]
fn a_replaced_kick_fd_wakes_the_poll_fd_and_the_old_one_no_longer_does() {
    let mut p = port("replace");
    let mut g = guest("replace");
    settle(&mut p);
    let old = g.replace_kick(0, TX_QUEUE).expect("SET_VRING_KICK");
    settle(&mut p);
    assert_eq!(registered(&p), 3, "the old kick is still in the epoll set");
    old.write(1).expect("write the old kick");
    // An eventfd write reaches the epoll set within the write itself; only the kick's
    // token counts (the worker may write the pipe late for an enable under load).
    assert!(
        !ready_tokens(&p).contains(&(TX_QUEUE as u64)),
        "the replaced kick eventfd still wakes the port"
    );
    g.kick(0, TX_QUEUE).expect("kick");
    assert!(
        wakes(&p, 5_000),
        "the new kick eventfd does not wake the port"
    );
}

#[test]
fn a_reconnected_guest_leaves_no_stale_kick_fd_in_the_poll_set() {
    let mut p = port("reconnect");
    let g = guest("reconnect");
    settle(&mut p);
    // Kept open past the disconnect, as a frontend (QEMU) keeps its eventfds.
    let stale: Vec<_> = [RX_QUEUE, TX_QUEUE]
        .iter()
        .map(|&w| g.kick_fd(0, w).expect("kick fd"))
        .collect();
    drop(g);
    let deadline = Instant::now() + Duration::from_secs(10);
    while registered(&p) != 1 {
        assert!(
            Instant::now() < deadline,
            "the old guest's kicks stay in the epoll set"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut g = guest("reconnect");
    settle(&mut p);
    assert_eq!(registered(&p), 3);
    for fd in &stale {
        fd.write(1).expect("write the stale kick");
    }
    let ready = ready_tokens(&p);
    assert!(
        !ready.contains(&(RX_QUEUE as u64)) && !ready.contains(&(TX_QUEUE as u64)),
        "the old guest's kick eventfd still wakes the port"
    );
    g.kick(0, TX_QUEUE).expect("kick");
    assert!(
        wakes(&p, 5_000),
        "the new guest's kick does not wake the port"
    );
    assert_eq!(p.connections(), 2);
}

#[test]
fn the_control_queue_kick_stays_with_the_worker_with_and_without_mq() {
    // Both ports offer two pairs. A guest without MQ has its control queue at 2; with MQ
    // queue 2 is pair 1's receive queue and the control queue comes after the pairs.
    for (name, pairs) in [("ctrl-no-mq", 1u16), ("ctrl-mq", 2)] {
        let mut p = port_with(name, 2);
        let mut g = guest_with(name, pairs);
        settle(&mut p);
        assert_eq!(
            registered(&p),
            1 + 2 * usize::from(pairs),
            "{name}: the epoll set must hold the pipe and the data queues' kicks only"
        );
        // The worker answers: promiscuous mode on (class RX, command PROMISC).
        let ack = g
            .ctrl(0, 0, &[1], Duration::from_secs(5))
            .expect("control command");
        assert_eq!(ack, 0, "{name}: the control command was not answered OK");
        for pair in 0..pairs {
            for which in [RX_QUEUE, TX_QUEUE] {
                settle(&mut p);
                g.kick(pair, which).expect("kick");
                assert!(
                    wakes(&p, 5_000),
                    "{name}: pair {pair} queue {which} kick lost"
                );
                let q = 2 * u64::from(pair) + which as u64;
                assert!(
                    ready_tokens(&p).contains(&q),
                    "{name}: pair {pair} queue {which} kick did not come through its eventfd"
                );
            }
        }
    }
}

/// The value of the port's event counter `name`.
fn event(port: &VhostUserPort, name: &str) -> u64 {
    port.events()
        .iter()
        .find(|c| c.name == name)
        .map_or_else(|| panic!("no event counter {name}"), |c| c.count)
}

/// A guest on a fresh port (a queue stop waits `stop_wait` for lent tails) with one
/// 1400-byte frame sent; the port has taken it, its bytes past the headers still lent
/// from the guest's transmit buffer.
fn lent_frame(name: &str, stop_wait: Duration) -> (VhostUserPort, VirtioUser, Batch) {
    let mut p = port_cfg(VhostUserConfig {
        name: name.into(),
        socket: socket(name),
        stop_wait,
        ..VhostUserConfig::default()
    });
    let mut g = guest(name);
    settle(&mut p);
    let mut frame = vec![0u8; 1400];
    frame[..12].copy_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
    frame[12..14].copy_from_slice(&[0x88, 0xb5]);
    assert_eq!(g.send(&[&frame]).expect("send"), 1);
    let mut batch = Batch::new();
    let end = Instant::now() + Duration::from_secs(30);
    while batch.is_empty() && Instant::now() < end {
        p.rx_batch(&mut batch);
    }
    assert_eq!(batch.len(), 1, "the frame did not reach the port");
    assert!(
        !batch.as_slice()[0].is_linear(),
        "the frame was copied, not lent"
    );
    assert_eq!(p.tails.lent(TX_QUEUE), 1);
    (p, g, batch)
}

/// After a queue restart, the guest's transmit queue still works and no used entry of
/// the old ring reaches the new one (`bad_used` counts used entries for buffers the
/// guest has not posted).
fn check_restarted_queue(p: &mut VhostUserPort, g: &mut VirtioUser) {
    let mut frame = vec![0u8; 1400];
    frame[12..14].copy_from_slice(&[0x88, 0xb5]);
    assert_eq!(g.send(&[&frame]).expect("send"), 1);
    assert_eq!(
        g.stats().bad_used,
        0,
        "a chain from before the restart came back"
    );
    let mut batch = Batch::new();
    let end = Instant::now() + Duration::from_secs(30);
    while batch.is_empty() && Instant::now() < end {
        p.rx_batch(&mut batch);
    }
    assert_eq!(batch.len(), 1, "the restarted queue carries no frames");
    batch.clear();
    p.rx_batch(&mut batch);
    assert_eq!(p.tails.lent(TX_QUEUE), 0);
    // The new chain comes back as the guest's one and only used entry.
    assert_eq!(g.send(&[&frame]).expect("send"), 1);
    assert_eq!(g.stats().bad_used, 0);
}

#[test]
fn a_queue_stop_waits_for_lent_tails_and_their_chains_stay_out_of_the_new_ring() {
    // The stop waits up to a minute here, not the default 100 ms: it must see the tail
    // come back from this thread, which a busy machine may not run for a while.
    let (mut p, g, mut batch) = lent_frame("stopwait", Duration::from_secs(60));
    // The guest stops and sets up its transmit queue again (GET_VRING_BASE ...): the
    // stop must wait until the tail is back, as the engine gives it back meanwhile.
    let restart = std::thread::spawn(move || {
        let mut g = g;
        let base = g.restart_queue(0, TX_QUEUE).expect("restart");
        (g, base)
    });
    let end = Instant::now() + Duration::from_secs(30);
    while p.shared.stops[TX_QUEUE].load(std::sync::atomic::Ordering::Acquire) == 0 {
        assert!(
            Instant::now() < end,
            "GET_VRING_BASE never reached the port"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // The frame leaves (sent, say): its tail goes back to the port's next batch.
    batch.clear();
    let mut scratch = Batch::new();
    while !restart.is_finished() {
        assert!(Instant::now() < end, "the restart did not finish");
        p.rx_batch(&mut scratch);
        scratch.clear();
        std::thread::sleep(Duration::from_millis(1));
    }
    let (mut g, base) = restart.join().expect("restart thread");
    assert_eq!(base, 1, "the backend had taken one chain");
    assert_eq!(
        event(&p, "tx_zero_copy_stop_timeout"),
        0,
        "the stop gave up waiting"
    );
    assert_eq!(event(&p, "tx_zero_copy_stale"), 1);
    check_restarted_queue(&mut p, &mut g);
}

#[test]
fn a_tail_back_only_after_a_queue_restart_never_reaches_the_new_ring() {
    // The frame is held across the whole restart (a NIC that has not sent it yet): the
    // stop gives up after its bound and the queue is ready again before the port looks.
    let (mut p, mut g, mut batch) = lent_frame("stoplate", super::DEFAULT_STOP_WAIT);
    assert_eq!(g.restart_queue(0, TX_QUEUE).expect("restart"), 1);
    assert_eq!(event(&p, "tx_zero_copy_stop_timeout"), 1);
    batch.clear();
    let mut scratch = Batch::new();
    p.rx_batch(&mut scratch);
    assert_eq!(event(&p, "tx_zero_copy_stale"), 1);
    check_restarted_queue(&mut p, &mut g);
}
