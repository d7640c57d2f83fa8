//! A poll-mode driver for the Intel 82599 ("ixgbe", 10 GbE; X520 adapters) physical
//! function, as a [`pkt::Port`] of [`PortKind::Ethernet`](pkt::PortKind::Ethernet) frames.
//!
//! The driver owns receive and transmit queue 0 with advanced descriptors, which the
//! 82599 lays out as the 82576 does: the ring code is [`crate::igb::ring`]'s, and the
//! device is reached through the same two seams as the igb driver,
//! [`crate::igb::Registers`] (BAR0: a VFIO mapping, or the register-level model in
//! [`model`]) and [`crate::igb::Dma`] (ring memory and the IOVA of pool buffers).
//! Frames are received straight into [`Mempool`] buffers mapped for DMA and sent from
//! them without a copy (a frame from another pool is copied into ours once). Each
//! batch costs one tail-register write per direction, after a write barrier.
//!
//! Receive reports the device's IPv4/TCP/UDP checksum verdict: a frame whose checksums
//! the device checked and found good carries [`offload::vnet_hdr::DATA_VALID`]; a bad
//! or unchecked one carries nothing, so software checks it again. Transmit fills in a
//! TCP or UDP checksum a frame asks for ([`offload::vnet_hdr::NEEDS_CSUM`]) through an
//! advanced context descriptor, written only when the frame's header layout differs
//! from the last one; layouts the device cannot describe are completed in software.
//!
//! [`IxgbePort::new`] follows the datasheet's init sequence (82599 datasheet 4.6.3) and
//! [`open_vfio`] claims a real device. It has run against the model only, never
//! against an 82599: docs/ixgbe.md lists what that leaves unproven.
//!
//! With [`IxgbeConfig::queues`] above 1 the port runs that many receive and transmit
//! queues: the device spreads received flows over them by RSS (Toeplitz hash,
//! redirection table; [`rss`]), `rx_batch` drains them round-robin, and `tx_batch`
//! keeps each flow on one transmit queue.
//!
//! SR-IOV: with [`IxgbeConfig::sriov`] the PF runs in virtualization mode ([`sriov`]:
//! 64 pools, VF n in pool n, the PF alone on one queue of the pool after the VFs')
//! and answers its VFs' mailboxes ([`mailbox`]) from its own `rx_batch`. [`vf`] is a
//! driver for an 82599 VF. All of it is tested on the model (see docs/ixgbe.md).
//!
//! Not yet: TSO, VLAN offload, interrupts, SFP+ module identification.

mod datapath;
mod init;
pub mod mailbox;
pub mod model;
pub mod regs;
pub mod rss;
pub mod sriov;
mod tx_csum;
pub mod vf;
mod vfio_glue;

use std::cell::Cell;
use std::time::{Duration, Instant};

use pkt::wire::MacAddr;
use pkt::{Batch, DropCounter, HEADROOM, Mempool};

use crate::igb::ring::{RxRing, TxRing};
use crate::igb::{Dma, IgbError, Registers};
use datapath::reclaim_queue;
use init::poll;
use tx_csum::TxContext;
pub use vfio_glue::{IxgbeVfioDma, open_vfio, open_vfio_vf};

/// Why the 82599 could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum IxgbeError {
    /// The VFIO layer failed (its message says what to do).
    #[error(transparent)]
    Vfio(#[from] vfio::VfioError),
    /// Descriptor ring memory could not be set up (the message says why).
    #[error("82599 descriptor ring memory: {0}")]
    Dma(#[from] IgbError),
    /// The device is not an 82599 PF.
    #[error(
        "{bdf} is {vendor:04x}:{device:04x}, not the Intel 82599 function this call opens (PFs: 8086:10fb and family, see IXGBE_PF_DEVICE_IDS, through open_vfio; VFs: 8086:10ed through open_vfio_vf): pick the right device (`lspci -nn`)"
    )]
    NotIxgbe {
        /// The device.
        bdf: String,
        /// PCI vendor ID.
        vendor: u16,
        /// PCI device ID.
        device: u16,
    },
    /// A step of the init sequence did not complete.
    #[error(
        "82599 {step} did not complete within {ms} ms: the device is hung, in a low-power state or not an 82599; reset it (unbind and rebind, or power-cycle the host) and retry"
    )]
    Timeout {
        /// The step.
        step: &'static str,
        /// How long we waited.
        ms: u64,
    },
    /// The packet pool does not fit the configuration.
    #[error("ixgbe: packet pool unsuitable: {0}")]
    Pool(String),
    /// The configuration is out of range.
    #[error("ixgbe: bad configuration: {0}")]
    Config(String),
}

/// PCI device IDs of 82599 physical functions (vendor 8086) the driver accepts.
pub const IXGBE_PF_DEVICE_IDS: &[u16] = &[
    0x10f7, // KX4
    0x10f8, // combined backplane
    0x10f9, // CX4
    0x10fb, // SFP+ (X520-DA2, the common one)
    0x10fc, // XAUI LOM
    0x1507, // SFP+ EM
    0x1514, // KX4 mezzanine
    0x1517, // KR
    0x151c, // T3 LOM
    0x1529, // SFP+ FCoE
    0x152a, // backplane FCoE
    0x154a, // SFP+ SF QP
    0x154d, // SFP+ SF2
    0x154f, // LS
    0x1557, // 82599EN SFP+
    0x1558, // QSFP+ SF QP
];

/// PCI device IDs of 82599 virtual functions (vendor 8086) the VF driver accepts.
pub const IXGBE_VF_DEVICE_IDS: &[u16] = &[0x10ed];

/// How to set up the port.
#[derive(Debug, Clone)]
pub struct IxgbeConfig {
    /// Receive descriptors (multiple of 8, 8..=4096).
    pub rx_ring: usize,
    /// Transmit descriptors (multiple of 8, 8..=4096).
    pub tx_ring: usize,
    /// Largest L3 payload (without Ethernet header); above 1500 enables jumbo frames.
    pub mtu: usize,
    /// Accept every unicast and multicast frame, not only ours and broadcast.
    pub promiscuous: bool,
    /// Program AUTOC for a 10 Gb/s serial link (SFI, as on SFP+ adapters such as the
    /// X520) before restarting negotiation. Off: keep the link mode the EEPROM loaded
    /// (backplane and copper boards).
    pub force_10g_serial: bool,
    /// Read the link state every this many `tx_batch` calls (a register read costs
    /// about a microsecond on PCIe, too much per batch).
    pub link_check_every: u32,
    /// Receive and transmit queue pairs, 1..=[`regs::MAX_QUEUES`]. Above 1, RSS spreads
    /// received flows over the queues and each transmitted flow keeps to one queue.
    /// Every queue has `rx_ring` receive descriptors filled from the pool.
    pub queues: usize,
    /// The 40-byte Toeplitz key programmed into RSSRK (used with `queues` > 1).
    pub rss_key: [u8; 40],
    /// Serve SR-IOV virtual functions: the device runs in virtualization mode, each VF
    /// gets its pool and MAC from this (port VLANs are refused for now), and the PF
    /// keeps one queue pair in its own pool (`queues` must be 1). The VFs must exist
    /// (`sriov_numvfs`) first; [`sriov::config_from_sysfs`] builds this from them.
    pub sriov: Option<sriov::IxgbeSriovConfig>,
}

impl Default for IxgbeConfig {
    fn default() -> Self {
        Self {
            rx_ring: 512,
            tx_ring: 512,
            mtu: 1500,
            promiscuous: false,
            force_10g_serial: true,
            link_check_every: 1024,
            queues: 1,
            rss_key: offload::rss::DEFAULT_KEY,
            sriov: None,
        }
    }
}

/// The smallest [`Mempool`] buffer size for frames of `mtu` bytes of payload: the
/// device writes receive buffers in whole KiB (SRRCTL.BSIZEPACKET), after our headroom.
pub fn pool_buffer_size(mtu: usize) -> usize {
    HEADROOM + (mtu + FRAME_OVERHEAD).div_ceil(1024) * 1024
}

/// Ethernet header plus one VLAN tag: a frame is at most `mtu + FRAME_OVERHEAD` bytes
/// (without FCS, which the device strips on receive and appends on transmit).
const FRAME_OVERHEAD: usize = 14 + 4;

/// Largest MTU: MAXFRS.MFS and a 16 KiB receive buffer (SRRCTL.BSIZEPACKET <= 16).
const MAX_MTU: usize = 9710;

/// Link speed as LINKS reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkSpeed {
    /// 100 Mb/s.
    Mb100,
    /// 1 Gb/s.
    Gb1,
    /// 10 Gb/s.
    Gb10,
}

/// Drop counters, in the order `stats()` reports them.
#[derive(Debug, Default, Clone, Copy)]
struct Drops {
    rx_no_buffer: u64,
    rx_bad_descriptor: u64,
    rx_frame_errors: u64,
    rx_unposted_dd: u64,
    tx_link_down: u64,
    tx_bad_length: u64,
    tx_no_buffer: u64,
    tx_bad_offload: u64,
    /// Frames whose external tail the device cannot reach and whose buffer has no
    /// room to take a copy of it.
    tx_tail_no_room: u64,
}

/// Counters read from the device's clear-on-read statistics registers, accumulated.
#[derive(Debug, Default, Clone, Copy)]
struct HwStats {
    missed: u64,
    no_descriptor: u64,
    crc_errors: u64,
    length_errors: u64,
    oversize: u64,
    undersize: u64,
    good_rx: u64,
    good_tx: u64,
}

/// Receive checksum verdicts of the device, per frame delivered.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RxChecksumStats {
    /// Frames whose IP and L4 checksums the device checked and found good.
    pub good: u64,
    /// Frames with a bad IPv4 header or TCP/UDP checksum (delivered unmarked).
    pub bad: u64,
    /// Frames the device did not check fully (not IPv4 TCP/UDP, fragments, ...).
    pub unchecked: u64,
}

/// Frames and bytes one queue pair moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    /// Frames delivered from this receive queue.
    pub rx_packets: u64,
    /// Bytes delivered from this receive queue.
    pub rx_bytes: u64,
    /// Frames posted to this transmit queue.
    pub tx_packets: u64,
    /// Bytes posted to this transmit queue.
    pub tx_bytes: u64,
}

/// One transmit queue: its ring and the context-descriptor state that goes with it
/// (the device keeps contexts per queue).
struct TxQueue {
    ring: TxRing,
    /// Slots holding a context descriptor (no write-back of their own).
    ctx_slots: Vec<bool>,
    /// The context the device holds in slot 0 of this queue, if any was written.
    ctx: Option<TxContext>,
}

/// The 82599 PF as a [`Port`](pkt::Port): `cfg.queues` receive and transmit queues.
pub struct IxgbePort<R: Registers, D: Dma> {
    name: String,
    regs: R,
    dma: D,
    pool: Mempool,
    cfg: IxgbeConfig,
    mac: [u8; 6],
    max_frame: usize,
    rx: Vec<RxRing>,
    tx: Vec<TxQueue>,
    /// The device's index of our queue pair 0 (0, or the PF pool's first queue with
    /// SR-IOV); our queue q is the device's `qbase + q`.
    qbase: u32,
    /// SR-IOV: the PF's pool and its VFs' mailbox.
    sriov: Option<sriov::PfSriov>,
    /// The receive queue `rx_batch` starts with next (round-robin).
    rx_first: usize,
    queue_stats: Vec<QueueStats>,
    /// Checksums `tx_batch` completed in software (layouts the device cannot take).
    tx_sw_csum: u64,
    /// Frames that did not fit the TX ring, handed back to the caller's batch.
    spill: Batch,
    link_up: bool,
    tx_calls: u32,
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
    tx_copied: u64,
    /// Frames sent as a gather of the pool buffer and an external tail read in place.
    tx_zero_copy: u64,
    /// Frames whose external tail was copied into the pool buffer first.
    tx_tail_copied: u64,
    csum: RxChecksumStats,
    drops: Drops,
    hw: Cell<HwStats>,
}

impl<R: Registers, D: Dma> std::fmt::Debug for IxgbePort<R, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IxgbePort")
            .field("name", &self.name)
            .field("mac", &self.mac)
            .field("link_up", &self.link_up)
            .finish()
    }
}

impl<R: Registers, D: Dma> IxgbePort<R, D> {
    /// The MAC address the device came up with (RAL\[0\]/RAH\[0\], from its EEPROM).
    pub fn mac(&self) -> MacAddr {
        MacAddr(self.mac)
    }

    /// Reads LINKS.Link_Up now and remembers it.
    pub fn refresh_link(&mut self) -> bool {
        self.link_up = self.regs.read(regs::LINKS) & regs::LINKS_UP != 0;
        self.link_up
    }

    /// The negotiated speed, or `None` while the link is down.
    pub fn link_speed(&self) -> Option<LinkSpeed> {
        let links = self.regs.read(regs::LINKS);
        if links & regs::LINKS_UP == 0 {
            return None;
        }
        match links & regs::LINKS_SPEED_MASK {
            regs::LINKS_SPEED_10G => Some(LinkSpeed::Gb10),
            regs::LINKS_SPEED_1G => Some(LinkSpeed::Gb1),
            regs::LINKS_SPEED_100M => Some(LinkSpeed::Mb100),
            _ => None,
        }
    }

    /// Waits up to `limit` for the link to come up; returns whether it did.
    pub fn wait_link(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        while !self.refresh_link() {
            if start.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Frames from other pools that `tx_batch` copied into this port's pool.
    pub fn tx_copied(&self) -> u64 {
        self.tx_copied
    }

    /// Frames sent as a gather of the pool buffer and an external tail the device read
    /// in place ([`pkt::ExtSeg::dma`]).
    pub fn tx_zero_copy(&self) -> u64 {
        self.tx_zero_copy
    }

    /// Frames whose external tail was copied into the pool buffer first (no device
    /// address, a checksum software must complete, or a buffer from another pool).
    pub fn tx_tail_copied(&self) -> u64 {
        self.tx_tail_copied
    }

    /// The handle a guest port maps its memory with so that the frames it hands this
    /// port carry tails the device gathers in place; see [`crate::igb::Dma::dma_map`].
    pub fn dma_map(&self) -> Option<std::sync::Arc<dyn pkt::DmaMap>> {
        self.dma.dma_map()
    }

    /// Descriptors posted for transmit (on every queue) that the device has not
    /// completed.
    pub fn tx_in_flight(&self) -> usize {
        self.tx.iter().map(|q| q.ring.in_flight()).sum()
    }

    /// Releases transmitted frames the device is done with, oldest first, on every
    /// queue; returns how many descriptors.
    pub fn reclaim_tx(&mut self) -> usize {
        self.tx.iter_mut().map(reclaim_queue).sum()
    }

    /// Receive and transmit queue pairs in use.
    pub fn queues(&self) -> usize {
        self.rx.len()
    }

    /// What queue pair `q` moved, or `None` past [`IxgbePort::queues`].
    pub fn queue_stats(&self, q: usize) -> Option<QueueStats> {
        self.queue_stats.get(q).copied()
    }

    /// TX checksums completed in software because the device could not take the
    /// frame's layout.
    pub fn tx_software_checksums(&self) -> u64 {
        self.tx_sw_csum
    }

    /// The device's receive checksum verdicts so far.
    pub fn rx_checksum_stats(&self) -> RxChecksumStats {
        self.csum
    }

    /// The device's index of the port's first queue pair: 0, or with SR-IOV the first
    /// queue of the PF's pool.
    pub fn first_queue_index(&self) -> u32 {
        self.qbase
    }

    /// With SR-IOV: the PF's pool and the VFs' mailbox state and counters.
    pub fn sriov_mailbox(&self) -> Option<&mailbox::PfMailbox> {
        self.sriov.as_ref().map(sriov::PfSriov::mailbox)
    }

    /// With SR-IOV: the pool the PF keeps for itself (the one after the VFs').
    pub fn pf_pool(&self) -> Option<u32> {
        self.sriov.as_ref().map(sriov::PfSriov::pf_pool)
    }

    /// The register block (for diagnostics and tests).
    pub fn registers(&self) -> &R {
        &self.regs
    }

    /// Good frames the device itself counted (GPRC, GPTC), for cross-checking.
    pub fn hw_good_frames(&self) -> (u64, u64) {
        let s = self.read_hw_stats();
        (s.good_rx, s.good_tx)
    }

    fn drop_counters(&self) -> Vec<DropCounter> {
        let d = self.drops;
        let hw = self.read_hw_stats();
        [
            ("rx_no_buffer", d.rx_no_buffer),
            ("rx_bad_descriptor", d.rx_bad_descriptor),
            ("rx_frame_errors", d.rx_frame_errors),
            ("rx_unposted_dd", d.rx_unposted_dd),
            ("tx_link_down", d.tx_link_down),
            ("tx_bad_length", d.tx_bad_length),
            ("tx_no_buffer", d.tx_no_buffer),
            ("tx_bad_offload", d.tx_bad_offload),
            ("tx_tail_no_room", d.tx_tail_no_room),
            ("hw_rx_missed", hw.missed),
            ("hw_rx_no_descriptor", hw.no_descriptor),
            ("hw_rx_crc_errors", hw.crc_errors),
            ("hw_rx_length_errors", hw.length_errors),
            ("hw_rx_oversize", hw.oversize),
            ("hw_rx_undersize", hw.undersize),
        ]
        .into_iter()
        .map(|(name, count)| DropCounter { name, count })
        .chain(self.sriov.iter().flat_map(sriov::PfSriov::counters))
        .collect()
    }

    /// Accumulates the device's clear-on-read statistics registers.
    fn read_hw_stats(&self) -> HwStats {
        use regs::stats;
        let mut s = self.hw.get();
        let r = |reg| u64::from(self.regs.read(reg));
        s.missed += r(stats::MPC0);
        s.no_descriptor += r(stats::QPRDC0);
        s.crc_errors += r(stats::CRCERRS);
        s.length_errors += r(stats::RLEC);
        s.oversize += r(stats::ROC);
        s.undersize += r(stats::RUC);
        s.good_rx += r(stats::GPRC);
        s.good_tx += r(stats::GPTC);
        self.hw.set(s);
        s
    }
}

impl<R: Registers, D: Dma> Drop for IxgbePort<R, D> {
    fn drop(&mut self) {
        // Stop the device before the rings and buffers it may still access are freed:
        // receiver off, then each queue (4.6.7.1 / 4.6.8.1), waiting a bounded time for
        // ENABLE to read back 0.
        self.regs.write(
            regs::RXCTRL,
            self.regs.read(regs::RXCTRL) & !regs::RXCTRL_RXEN,
        );
        if self.sriov.is_some() {
            // The VFs lose their PF: stop their pools too.
            sriov::PfSriov::shut_down(&self.regs);
        }
        let queues = self.qbase..self.qbase + self.rx.len() as u32;
        for q in queues.clone() {
            self.regs.write(regs::rxdctl(q), 0);
            self.regs.write(regs::txdctl(q), 0);
        }
        for q in queues {
            for (reg, what) in [(regs::rxdctl(q), "rx"), (regs::txdctl(q), "tx")] {
                if poll(
                    || self.regs.read(reg) & regs::XDCTL_ENABLE == 0,
                    "queue disable",
                    Duration::from_millis(10),
                )
                .is_err()
                {
                    tracing::warn!(port = %self.name, queue = q, dir = what, "82599 queue still enabled at close");
                }
            }
        }
        self.regs.write(
            regs::DMATXCTL,
            self.regs.read(regs::DMATXCTL) & !regs::DMATXCTL_TE,
        );
    }
}

#[cfg(test)]
mod mailbox_tests;
#[cfg(test)]
mod mq_tests;
#[cfg(test)]
mod sriov_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod vf_test_util;
#[cfg(test)]
mod vf_tests;
