//! A poll-mode driver for the Intel 82599 ("ixgbe", 10 GbE; X520 adapters) physical
//! function, as a [`pkt::Port`] of [`PortKind::Ethernet`] frames.
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
use pkt::{
    Batch, DropCounter, HEADROOM, Mempool, Offloads, PktBuf, Port, PortCaps, PortKind, PortStats,
};

use crate::igb::ring::{self, RxRing, RxWriteBack, TxRing, read_barrier, write_barrier};
use crate::igb::{Dma, IgbError, Registers};
use tx_csum::{TxContext, post_checksummed, post_context};
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

/// The 82599 PF as a [`Port`]: `cfg.queues` receive and transmit queues.
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

/// Stops the receiver and every queue if init fails once rings are handed to the
/// device, so no DMA reaches ring or buffer memory after it is freed.
struct StopQueuesOnError<'a, R: Registers> {
    regs: &'a R,
    qbase: u32,
    queues: u32,
}

impl<R: Registers> Drop for StopQueuesOnError<'_, R> {
    fn drop(&mut self) {
        let r = self.regs;
        r.write(regs::RXCTRL, r.read(regs::RXCTRL) & !regs::RXCTRL_RXEN);
        for q in self.qbase..self.qbase + self.queues {
            r.write(regs::rxdctl(q), 0);
            r.write(regs::txdctl(q), 0);
        }
    }
}

/// Polls `done` until it holds or `limit` passes (bounded: every wait in init ends).
/// The error for a receive ring (`what`) that could not be filled with buffers.
fn fill_error(e: ring::RxFillError, what: &str) -> IxgbeError {
    IxgbeError::Pool(match e {
        ring::RxFillError::NoBuffer => format!("ran out of buffers filling the {what}"),
        ring::RxFillError::Unmapped => {
            "the pool is not mapped for DMA: map it whole first".to_owned()
        }
    })
}

fn poll(done: impl FnMut() -> bool, step: &'static str, limit: Duration) -> Result<(), IxgbeError> {
    if crate::igb::wait_until(done, limit) {
        Ok(())
    } else {
        Err(IxgbeError::Timeout {
            step,
            ms: limit.as_millis() as u64,
        })
    }
}

/// Checks the configuration against the pool; returns (max frame, BSIZEPACKET in KiB).
fn check_config(cfg: &IxgbeConfig, pool: &Mempool) -> Result<(usize, usize), IxgbeError> {
    for (what, n) in [("rx_ring", cfg.rx_ring), ("tx_ring", cfg.tx_ring)] {
        if !(8..=4096).contains(&n) || !n.is_multiple_of(8) {
            return Err(IxgbeError::Config(format!(
                "{what} = {n}: use a multiple of 8 in 8..=4096 (RDLEN/TDLEN are 128-byte multiples)"
            )));
        }
    }
    if !(1..=regs::MAX_QUEUES).contains(&cfg.queues) {
        return Err(IxgbeError::Config(format!(
            "queues = {}: use 1..={}",
            cfg.queues,
            regs::MAX_QUEUES
        )));
    }
    if let Some(s) = &cfg.sriov {
        s.check()?;
        if cfg.queues != 1 {
            return Err(IxgbeError::Config(format!(
                "queues = {} with SR-IOV: the PF keeps one queue pair in its own pool (no RSS across a pool yet); set queues = 1",
                cfg.queues
            )));
        }
    }
    if !(68..=MAX_MTU).contains(&cfg.mtu) {
        return Err(IxgbeError::Config(format!(
            "mtu = {}: use 68..={MAX_MTU}",
            cfg.mtu
        )));
    }
    let max_frame = cfg.mtu + FRAME_OVERHEAD;
    let space = pool.buf_size() - HEADROOM;
    let bsize_kb = (space / 1024)
        .min(regs::SRRCTL_BSIZEPACKET_MASK as usize)
        .min(16);
    if bsize_kb * 1024 < max_frame {
        return Err(IxgbeError::Pool(format!(
            "buffers of {} bytes leave {space} bytes after the {HEADROOM}-byte headroom; the device writes whole KiB and a {max_frame}-byte frame needs {} KiB: create the pool with buffers of at least {} bytes (ixgbe::pool_buffer_size)",
            pool.buf_size(),
            max_frame.div_ceil(1024),
            pool_buffer_size(cfg.mtu)
        )));
    }
    let need = cfg.queues * cfg.rx_ring + 2 * pkt::BATCH_MAX;
    if pool.capacity() < need {
        return Err(IxgbeError::Pool(format!(
            "{} buffers cannot fill {} {}-slot receive ring(s) and leave room for batches in flight: create it with at least {need}, or use fewer queues or smaller rings",
            pool.capacity(),
            cfg.queues,
            cfg.rx_ring,
        )));
    }
    Ok((max_frame, bsize_kb))
}

impl<R: Registers, D: Dma> IxgbePort<R, D> {
    /// Resets and initialises the device in the order of 82599 datasheet 4.6.3
    /// (interrupts off, master disable and global reset, interrupts off again, EEPROM
    /// and DMA init done, link setup, statistics, receive, transmit) and starts its
    /// queues. The link may still be negotiating when this returns: see
    /// [`IxgbePort::wait_link`].
    pub fn new(
        name: &str,
        regs: R,
        mut dma: D,
        pool: Mempool,
        cfg: IxgbeConfig,
    ) -> Result<Self, IxgbeError> {
        let (max_frame, bsize_kb) = check_config(&cfg, &pool)?;

        // 4.6.3.1 Interrupts during initialization: mask them all.
        regs.write(regs::EIMC, regs::EIMC_ALL);
        // 4.6.3.2 Global reset: stop bus mastering first (5.2.5.3.2), then CTRL.RST.
        regs.write(
            regs::CTRL,
            regs.read(regs::CTRL) | regs::CTRL_MASTER_DISABLE,
        );
        if poll(
            || regs.read(regs::STATUS) & regs::STATUS_MASTER_ENABLE == 0,
            "PCIe master disable",
            Duration::from_millis(100),
        )
        .is_err()
        {
            // Requests still pending: the reset below clears them (the datasheet's
            // fallback); say so, it hints at a device that was busy.
            tracing::warn!(
                port = name,
                "82599: master requests still pending; resetting anyway"
            );
        }
        regs.write(regs::CTRL, regs.read(regs::CTRL) | regs::CTRL_RST_MASK);
        std::thread::sleep(Duration::from_millis(1));
        poll(
            || regs.read(regs::CTRL) & regs::CTRL_RST == 0,
            "global reset (CTRL.RST)",
            Duration::from_millis(100),
        )?;
        // At least 10 ms before touching the device further (4.6.3.2).
        std::thread::sleep(Duration::from_millis(10));
        regs.write(regs::EIMC, regs::EIMC_ALL);
        let _ = regs.read(regs::EICR);
        poll(
            || regs.read(regs::EEC) & regs::EEC_ARD != 0,
            "EEPROM auto-read (EEC.Auto_RD)",
            Duration::from_millis(100),
        )?;
        poll(
            || regs.read(regs::RDRXCTL) & regs::RDRXCTL_DMAIDONE != 0,
            "DMA initialisation (RDRXCTL.DMAIDONE)",
            Duration::from_millis(100),
        )?;

        // 4.6.4 Link setup: 10 Gb/s serial (SFI) unless the EEPROM's mode is to stay.
        let mut autoc = regs.read(regs::AUTOC);
        if cfg.force_10g_serial {
            autoc = (autoc & !regs::AUTOC_LMS_MASK) | regs::AUTOC_LMS_10G_SERIAL;
            autoc = (autoc & !regs::AUTOC_10G_PMA_PMD_MASK) | regs::AUTOC_10G_XAUI;
        }
        regs.write(regs::AUTOC, autoc | regs::AUTOC_AN_RESTART);

        // 4.6.5 Statistics: the counters clear on read.
        for &r in regs::stats::ALL {
            let _ = regs.read(r);
        }

        // 4.6.10 Virtualization: VT mode, pools and filters before any queue.
        let sriov = cfg.sriov.as_ref().map(sriov::PfSriov::new).transpose()?;
        let qbase = sriov.as_ref().map_or(0, sriov::PfSriov::pf_queue);
        if let Some(s) = &sriov {
            s.program_vt(&regs);
        }

        // 4.6.7 Receive initialization, with the receiver off while it is configured.
        regs.write(regs::RXCTRL, regs.read(regs::RXCTRL) & !regs::RXCTRL_RXEN);
        let (ral, rah) = (regs.read(regs::RAL0), regs.read(regs::RAH0));
        let mut mac = [0u8; 6];
        mac[..4].copy_from_slice(&ral.to_le_bytes());
        mac[4..].copy_from_slice(&rah.to_le_bytes()[..2]);
        if mac == [0; 6] || mac[0] & 1 == 1 {
            return Err(IxgbeError::Config(format!(
                "the EEPROM gave no usable MAC address ({}): the NVM is blank or unreadable; check the adapter with `ethtool -e` under the kernel ixgbe driver",
                MacAddr(mac)
            )));
        }
        regs.write(regs::RAH0, rah | regs::RAH_AV);
        if let Some(s) = &sriov {
            s.select_pf_mac_pool(&regs);
        }
        for i in 0..regs::MTA_LEN {
            regs.write(regs::MTA + 4 * i, 0);
        }
        let mut fctrl = regs::FCTRL_BAM;
        if cfg.promiscuous {
            fctrl |= regs::FCTRL_UPE | regs::FCTRL_MPE;
        }
        regs.write(regs::FCTRL, fctrl);
        let mut hlreg0 = regs.read(regs::HLREG0)
            | regs::HLREG0_RXCRCSTRP
            | regs::HLREG0_TXCRCEN
            | regs::HLREG0_TXPADEN;
        if cfg.mtu > 1500 {
            hlreg0 |= regs::HLREG0_JUMBOEN;
            regs.write(
                regs::MAXFRS,
                ((max_frame + 4) as u32) << regs::MAXFRS_MFS_SHIFT,
            );
        } else {
            hlreg0 &= !regs::HLREG0_JUMBOEN;
        }
        regs.write(regs::HLREG0, hlreg0);
        // CRC stripping must agree between HLREG0 and RDRXCTL (8.2.3.8.8).
        regs.write(
            regs::RDRXCTL,
            regs.read(regs::RDRXCTL) | regs::RDRXCTL_CRCSTRIP,
        );
        regs.write(
            regs::CTRL_EXT,
            regs.read(regs::CTRL_EXT) | regs::CTRL_EXT_NS_DIS,
        );
        // One per-queue statistics counter per queue (RQSMR/TQSM reset to "all queues
        // count in counter 0").
        if let Some(s) = &sriov {
            s.map_queue_counters(&regs);
        } else {
            regs.write(regs::rqsmr(0), rss::reta_word(0, regs::MAX_QUEUES));
            regs.write(regs::tqsm(0), rss::reta_word(0, regs::MAX_QUEUES));
        }
        // 4.6.7.1 / 7.1.2.8: RSS over the queues (key, redirection table, hash fields),
        // the hash written back in place of the fragment checksum.
        if cfg.queues > 1 {
            for n in 0..regs::RSSRK_REGS {
                regs.write(regs::rssrk(n), rss::rssrk_word(&cfg.rss_key, n));
            }
            for n in 0..regs::RETA_REGS {
                regs.write(regs::reta(n), rss::reta_word(n, cfg.queues));
            }
            regs.write(regs::RXCSUM, regs.read(regs::RXCSUM) | regs::RXCSUM_PCSD);
            regs.write(regs::MRQC, regs::MRQC_RSSEN | regs::MRQC_RSS_FIELDS);
        } else if sriov.is_none() {
            regs.write(regs::MRQC, 0);
        }

        let mut rx = Vec::with_capacity(cfg.queues);
        let mut tx = Vec::with_capacity(cfg.queues);
        // From here on a failure must stop the queues before the rings above (dropped
        // after the guard, which is declared later) are freed.
        let guard = StopQueuesOnError {
            regs: &regs,
            qbase,
            queues: cfg.queues as u32,
        };
        for q in 0..cfg.queues {
            let qr = qbase + q as u32;
            regs.write(
                regs::dca_rxctrl(qr),
                regs.read(regs::dca_rxctrl(qr)) & !regs::DCA_RXCTRL_BIT12,
            );
            let rx_mem = dma.alloc_ring(cfg.rx_ring * ring::DESC_BYTES)?;
            let ring = RxRing::filled(rx_mem, cfg.rx_ring, &pool, &dma)
                .map_err(|e| fill_error(e, "receive rings"))?;
            let base = ring.mem.iova();
            regs.write(regs::rxdctl(qr), 0);
            regs.write(regs::rdbal(qr), base as u32);
            regs.write(regs::rdbah(qr), (base >> 32) as u32);
            regs.write(regs::rdlen(qr), (cfg.rx_ring * ring::DESC_BYTES) as u32);
            regs.write(
                regs::srrctl(qr),
                bsize_kb as u32 | regs::SRRCTL_DESCTYPE_ADV_ONEBUF | regs::SRRCTL_DROP_EN,
            );
            regs.write(regs::rdh(qr), 0);
            regs.write(regs::rdt(qr), 0);
            regs.write(regs::rxdctl(qr), regs::XDCTL_ENABLE);
            poll(
                || regs.read(regs::rxdctl(qr)) & regs::XDCTL_ENABLE != 0,
                "receive queue enable (RXDCTL.ENABLE)",
                Duration::from_millis(100),
            )?;
            write_barrier();
            regs.write(regs::rdt(qr), ring.tail as u32);
            rx.push(ring);
        }
        regs.write(regs::RXCTRL, regs.read(regs::RXCTRL) | regs::RXCTRL_RXEN);

        // 4.6.8 Transmit initialization: one packet buffer, no DCB (arbiter off while
        // MTQC changes; with SR-IOV the 64-pool VT layout), then the ring,
        // DMATXCTL.TE, and the queue.
        regs.write(regs::RTTDCS, regs.read(regs::RTTDCS) | regs::RTTDCS_ARBDIS);
        let mtqc = if sriov.is_some() {
            regs::MTQC_VT_ENA | regs::MTQC_64VF
        } else {
            0
        };
        regs.write(regs::MTQC, mtqc);
        regs.write(regs::RTTDCS, regs.read(regs::RTTDCS) & !regs::RTTDCS_ARBDIS);
        for q in qbase..qbase + cfg.queues as u32 {
            let tx_mem = dma.alloc_ring(cfg.tx_ring * ring::DESC_BYTES)?;
            let ring = TxRing {
                mem: tx_mem,
                bufs: (0..cfg.tx_ring).map(|_| None).collect(),
                clean: 0,
                tail: 0,
            };
            let base = ring.mem.iova();
            regs.write(regs::txdctl(q), 0);
            regs.write(regs::tdbal(q), base as u32);
            regs.write(regs::tdbah(q), (base >> 32) as u32);
            regs.write(regs::tdlen(q), (cfg.tx_ring * ring::DESC_BYTES) as u32);
            regs.write(regs::tdh(q), 0);
            regs.write(regs::tdt(q), 0);
            regs.write(regs::txdctl(q), regs::TXDCTL_THRESH);
            tx.push(TxQueue {
                ctx_slots: vec![false; ring.size()],
                ctx: None,
                ring,
            });
        }
        regs.write(
            regs::DMATXCTL,
            regs.read(regs::DMATXCTL) | regs::DMATXCTL_TE,
        );
        for q in qbase..qbase + cfg.queues as u32 {
            regs.write(regs::txdctl(q), regs::TXDCTL_THRESH | regs::XDCTL_ENABLE);
            poll(
                || regs.read(regs::txdctl(q)) & regs::XDCTL_ENABLE != 0,
                "transmit queue enable (TXDCTL.ENABLE)",
                Duration::from_millis(100),
            )?;
        }

        std::mem::forget(guard);
        if sriov.is_some() {
            // The PF is up: VF resets complete and their mailboxes get answered.
            sriov::PfSriov::announce_reset_done(&regs);
        }
        let link_up = regs.read(regs::LINKS) & regs::LINKS_UP != 0;
        tracing::info!(port = name, mac = %MacAddr(mac), link_up, queues = cfg.queues, first_queue = qbase, vfs = cfg.sriov.as_ref().map_or(0, |s| s.vfs.len()), rx_ring = cfg.rx_ring, tx_ring = cfg.tx_ring, "82599 initialised");
        let queues = cfg.queues;
        Ok(Self {
            name: name.to_owned(),
            regs,
            dma,
            pool,
            cfg,
            mac,
            max_frame,
            rx,
            tx,
            qbase,
            sriov,
            rx_first: 0,
            queue_stats: vec![QueueStats::default(); queues],
            tx_sw_csum: 0,
            spill: Batch::new(),
            link_up,
            tx_calls: 0,
            rx_packets: 0,
            rx_bytes: 0,
            tx_packets: 0,
            tx_bytes: 0,
            tx_copied: 0,
            tx_zero_copy: 0,
            tx_tail_copied: 0,
            csum: RxChecksumStats::default(),
            drops: Drops::default(),
            hw: Cell::new(HwStats::default()),
        })
    }

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

    /// Takes a frame from another pool into one of ours (the device can reach only
    /// our mapping).
    #[cold]
    fn copy_into_pool(&mut self, buf: &PktBuf) -> Option<PktBuf> {
        let mut own = self.pool.alloc()?;
        own.extend_from_slice(buf.data()).ok()?;
        if let Some(ext) = buf.ext() {
            // The whole frame comes over; the tail goes back when `buf` is dropped.
            own.extend_from_slice(ext.as_slice()).ok()?;
            self.tx_tail_copied += 1;
        }
        own.meta = buf.meta;
        self.tx_copied += 1;
        Some(own)
    }

    /// Takes what receive queue `q` has written back, up to the batch's room; one RDT
    /// write for the queue if any slot was re-armed.
    #[inline]
    fn rx_queue(&mut self, batch: &mut Batch, q: usize) -> usize {
        let size = self.rx[q].size();
        let mut got = 0;
        let mut armed_any = false;
        // The slot at the tail is ours, not posted: a DD there is the device writing
        // where it was not allowed to. Count it and re-arm the slot.
        if RxWriteBack::from_qword(self.rx[q].mem.read(self.rx[q].tail, 1)).done() {
            self.drops.rx_unposted_dd += 1;
            let tail = self.rx[q].tail;
            self.rx[q].arm(tail);
        }
        let room = batch.room();
        while self.rx[q].next != self.rx[q].tail && got < room {
            let slot = self.rx[q].next;
            let wb = RxWriteBack::from_qword(self.rx[q].mem.read(slot, 1));
            if !wb.done() {
                break;
            }
            read_barrier();
            let len = usize::from(wb.length);
            let eop = wb.status_error & regs::desc::RX_STATUS_EOP != 0;
            let space = self.rx[q].bufs[slot]
                .as_ref()
                .map_or(0, |b| b.capacity() - HEADROOM);
            if !eop || len == 0 || len > space || len > self.max_frame {
                // A frame spread over buffers (the device ignored BSIZEPACKET), or a
                // length the buffer cannot hold: never read past the buffer.
                self.drops.rx_bad_descriptor += 1;
            } else if wb.status_error & regs::desc::RX_ERR_FRAME != 0 {
                self.drops.rx_frame_errors += 1;
            } else if let Some(mut fresh) = self.pool.alloc() {
                let p = fresh.reset_for_rx(HEADROOM).as_ptr();
                match self.dma.iova_of(p) {
                    Some(iova) => {
                        let flags = self.rx_csum_flags(wb.status_error);
                        if let Some(mut full) = self.rx[q].bufs[slot].replace(fresh) {
                            // Cannot fail: `len <= space` was checked above.
                            let _ = full.set_len(len);
                            full.meta = pkt::Meta::default();
                            full.meta.offload.flags = flags;
                            let _ = batch.push(full);
                            self.rx[q].iovas[slot] = iova;
                            self.rx_packets += 1;
                            self.rx_bytes += len as u64;
                            self.queue_stats[q].rx_packets += 1;
                            self.queue_stats[q].rx_bytes += len as u64;
                            got += 1;
                        }
                    }
                    // Not reachable with a pool mapped whole; keep the old buffer.
                    None => self.drops.rx_no_buffer += 1,
                }
            } else {
                self.drops.rx_no_buffer += 1;
            }
            self.rx[q].arm(slot);
            armed_any = true;
            self.rx[q].next = (slot + 1) % size;
        }
        if armed_any {
            // The slot before `next` becomes the one we keep; the old tail slot,
            // re-armed long ago, goes back to the device.
            self.rx[q].tail = (self.rx[q].next + size - 1) % size;
            write_barrier();
            self.regs
                .write(regs::rdt(self.qbase + q as u32), self.rx[q].tail as u32);
        }
        got
    }

    /// The checksum flags for a frame from its write-back status, counted.
    #[inline]
    fn rx_csum_flags(&mut self, status_error: u32) -> u8 {
        use regs::desc;
        let checked = desc::RX_STATUS_IPCS | desc::RX_STATUS_L4CS;
        if status_error & (desc::RX_ERR_IPE | desc::RX_ERR_TCPE) != 0 {
            self.csum.bad += 1;
            0
        } else if status_error & checked == checked {
            self.csum.good += 1;
            offload::vnet_hdr::DATA_VALID
        } else {
            self.csum.unchecked += 1;
            0
        }
    }
}

/// Releases what the device completed on one transmit queue, oldest first; returns
/// how many descriptors. A context descriptor is done when the data descriptor after
/// it is (the device writes DD back only where RS was set).
fn reclaim_queue(q: &mut TxQueue) -> usize {
    let size = q.ring.size();
    let done = |tx: &TxRing, slot: usize| {
        (tx.mem.read(slot, 1) >> 32) as u32 & regs::desc::TX_STATUS_DD != 0
    };
    let mut n = 0;
    while q.ring.clean != q.ring.tail {
        let slot = q.ring.clean;
        let next = (slot + 1) % size;
        if q.ctx_slots[slot] {
            if next == q.ring.tail || !done(&q.ring, next) {
                break;
            }
            q.ctx_slots[slot] = false;
        } else if !done(&q.ring, slot) {
            break;
        } else {
            // Dropping the buffer returns it to its pool.
            q.ring.bufs[slot] = None;
        }
        q.ring.clean = next;
        n += 1;
    }
    n
}

impl<R: Registers, D: Dma> Port for IxgbePort<R, D> {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_batch(&mut self, batch: &mut Batch) -> usize {
        // SR-IOV: the VFs' mailboxes are answered from here (every `poll_every` calls
        // or MAX_SERVICE_GAP), not from a thread of their own.
        if let Some(s) = &mut self.sriov {
            s.tick(&self.regs);
        }
        // Round-robin: each call starts one queue further, so a busy queue cannot
        // starve the others when batches fill up.
        let n = self.rx.len();
        let first = self.rx_first;
        self.rx_first = (first + 1) % n;
        let mut got = 0;
        for i in 0..n {
            if batch.room() == 0 {
                break;
            }
            got += self.rx_queue(batch, (first + i) % n);
        }
        // Sent frames are released on the receive poll too, so the external tails of
        // a burst's last frames (guest buffers) go back without waiting for the next
        // transmit (see the 82576's `rx_batch`).
        self.reclaim_tx();
        got
    }

    fn tx_batch(&mut self, batch: &mut Batch) -> usize {
        self.reclaim_tx();
        self.tx_calls = self.tx_calls.wrapping_add(1);
        if self
            .tx_calls
            .is_multiple_of(self.cfg.link_check_every.max(1))
            || !self.link_up
        {
            self.refresh_link();
        }
        if !self.link_up {
            self.drops.tx_link_down += batch.len() as u64;
            batch.clear();
            return 0;
        }
        let nq = self.tx.len();
        let mut free = [0usize; regs::MAX_QUEUES];
        for (f, q) in free.iter_mut().zip(&self.tx) {
            *f = q.ring.free();
        }
        let mut touched = 0u32;
        let mut sent = 0;
        let mut spill = std::mem::replace(&mut self.spill, Batch::unallocated());
        for mut buf in batch.drain() {
            // Once one frame waits, every later one waits too: order is kept (also
            // across queues, which costs a full queue's neighbours one batch).
            if !spill.is_empty() {
                let _ = spill.push(buf);
                continue;
            }
            if !buf.is_linear()
                && !buf
                    .ext()
                    .is_some_and(|e| e.dma().is_some() && !e.is_empty())
            {
                // The device cannot reach the tail: join it to the frame.
                if buf.linearize().is_err() {
                    self.drops.tx_tail_no_room += 1;
                    continue;
                }
                self.tx_tail_copied += 1;
            }
            let len = buf.frame_len();
            if len == 0 || len > self.max_frame {
                self.drops.tx_bad_length += 1;
                continue;
            }
            // A flow keeps to one queue, so the device sends its frames in order.
            let q = if nq == 1 {
                0
            } else {
                rss::tx_flow_hash(buf.data()) as usize % nq
            };
            if free[q] == 0 {
                let _ = spill.push(buf);
                continue;
            }
            let (mut buf, iova) = match self.dma.iova_of(buf.data().as_ptr()) {
                Some(iova) => (buf, iova),
                None => match self.copy_into_pool(&buf) {
                    Some(own) => match self.dma.iova_of(own.data().as_ptr()) {
                        Some(iova) => (own, iova),
                        None => {
                            self.drops.tx_no_buffer += 1;
                            continue;
                        }
                    },
                    None => {
                        self.drops.tx_no_buffer += 1;
                        continue;
                    }
                },
            };
            let mut ctx = None;
            if buf.meta.offload.flags & offload::vnet_hdr::NEEDS_CSUM != 0 {
                ctx = TxContext::of(&buf);
                if ctx.is_none() && !buf.is_linear() {
                    // Software must write the checksum, which may lie in the tail.
                    if buf.linearize().is_err() {
                        self.drops.tx_tail_no_room += 1;
                        continue;
                    }
                    self.tx_tail_copied += 1;
                }
                if ctx.is_none() {
                    // A layout the device cannot describe: complete it here.
                    let mut meta = buf.meta.offload;
                    match offload::checksum::complete_if_needed(buf.data_mut(), &mut meta) {
                        Ok(_) => {
                            buf.meta.offload = meta;
                            self.tx_sw_csum += 1;
                        }
                        Err(_) => {
                            self.drops.tx_bad_offload += 1;
                            continue;
                        }
                    }
                }
            }
            let txq = &mut self.tx[q];
            let new_ctx = ctx.is_some() && ctx != txq.ctx;
            let tail = buf.ext().and_then(|e| Some((e.dma()?, e.len())));
            let head_len = buf.len();
            let slots = match tail {
                None => TxRing::slots_for(iova, len),
                Some((at, tail_len)) => TxRing::gather_slots(iova, head_len, at, tail_len),
            };
            let need = slots + usize::from(new_ctx);
            if need > free[q] {
                let _ = spill.push(buf);
                continue;
            }
            if let Some(c) = ctx.filter(|_| new_ctx) {
                post_context(&mut txq.ring, &mut txq.ctx_slots, c);
                txq.ctx = Some(c);
            }
            match (ctx, tail) {
                (_, Some((at, tail_len))) => {
                    // 7.2.3.2.4: PAYLEN is the whole frame; CC names the context.
                    let mut olinfo = (len as u32) << regs::desc::TX_PAYLEN_SHIFT;
                    if ctx.is_some() {
                        olinfo |= regs::desc::TX_OLINFO_CC | regs::desc::TX_OLINFO_TXSM;
                    }
                    txq.ring
                        .post_gather(iova, head_len, at, tail_len, buf, 0, olinfo);
                    self.tx_zero_copy += 1;
                }
                (Some(_), None) => post_checksummed(&mut txq.ring, iova, len, buf),
                (None, None) => txq.ring.post(iova, len, buf),
            }
            self.tx_packets += 1;
            self.tx_bytes += len as u64;
            self.queue_stats[q].tx_packets += 1;
            self.queue_stats[q].tx_bytes += len as u64;
            free[q] -= need;
            touched |= 1 << q;
            sent += 1;
        }
        if touched != 0 {
            write_barrier();
            for (q, txq) in self.tx.iter().enumerate() {
                if touched & (1 << q) != 0 {
                    self.regs
                        .write(regs::tdt(self.qbase + q as u32), txq.ring.tail as u32);
                }
            }
        }
        // Frames that did not fit go back to the caller, in order; the drained batch
        // (empty, storage kept) becomes the next spill buffer.
        std::mem::swap(batch, &mut spill);
        self.spill = spill;
        sent
    }

    fn caps(&self) -> PortCaps {
        PortCaps {
            kind: PortKind::Ethernet,
            mtu: self.cfg.mtu,
            rx_queues: self.rx.len() as u16,
            tx_queues: self.tx.len() as u16,
            // Tails are gathered in place when they carry a device address and
            // copied otherwise, so every tailed frame is welcome.
            offloads: if self.rx.len() > 1 {
                Offloads::RX_CSUM | Offloads::TX_CSUM | Offloads::RSS | Offloads::EXT_TAIL
            } else {
                Offloads::RX_CSUM | Offloads::TX_CSUM | Offloads::EXT_TAIL
            },
        }
    }

    fn stats(&self) -> PortStats {
        let q0 = self.qbase;
        tracing::debug!(
            port = %self.name,
            queue = q0,
            rdh = self.regs.read(regs::rdh(q0)),
            rdt = self.regs.read(regs::rdt(q0)),
            rx_next = self.rx[0].next,
            tdh = self.regs.read(regs::tdh(q0)),
            tdt = self.regs.read(regs::tdt(q0)),
            tx_clean = self.tx[0].ring.clean,
            links = format_args!("{:#x}", self.regs.read(regs::LINKS)),
            rxctrl = format_args!("{:#x}", self.regs.read(regs::RXCTRL)),
            "82599 ring state"
        );
        PortStats {
            rx_packets: self.rx_packets,
            rx_bytes: self.rx_bytes,
            tx_packets: self.tx_packets,
            tx_bytes: self.tx_bytes,
            drops: self.drop_counters(),
        }
    }

    fn events(&self) -> Vec<DropCounter> {
        vec![
            DropCounter {
                name: "tx_zero_copy",
                count: self.tx_zero_copy,
            },
            DropCounter {
                name: "tx_tail_copied",
                count: self.tx_tail_copied,
            },
        ]
    }

    fn poll_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
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
mod vf_tests;
