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
//! Not yet: TSO, multiple queues, RSS, VLAN offload, interrupts, SFP+ module identification, the VF driver and the PF
//! side of the PF/VF mailbox.

pub mod model;
pub mod regs;
mod tx_csum;
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
pub use vfio_glue::{IxgbeVfioDma, open_vfio};

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
        "{bdf} is {vendor:04x}:{device:04x}, not an Intel 82599 PF (8086:10fb and family, see IXGBE_PF_DEVICE_IDS): pick the right device (`lspci -nn`); 82599 VFs (8086:10ed) need the VF driver, which vnetp does not have yet"
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

/// The 82599 PF as a [`Port`]: queue 0 for receive and transmit.
pub struct IxgbePort<R: Registers, D: Dma> {
    name: String,
    regs: R,
    dma: D,
    pool: Mempool,
    cfg: IxgbeConfig,
    mac: [u8; 6],
    max_frame: usize,
    rx: RxRing,
    tx: TxRing,
    /// TX slots holding a context descriptor (no write-back of their own).
    tx_ctx_slots: Vec<bool>,
    /// The context the device holds in slot 0, if any was written.
    tx_ctx: Option<TxContext>,
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

/// Polls `done` until it holds or `limit` passes (bounded: every wait in init ends).
fn poll(
    mut done: impl FnMut() -> bool,
    step: &'static str,
    limit: Duration,
) -> Result<(), IxgbeError> {
    let start = Instant::now();
    loop {
        if done() {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(IxgbeError::Timeout {
                step,
                ms: limit.as_millis() as u64,
            });
        }
        std::thread::sleep(Duration::from_micros(200));
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
    if pool.capacity() < cfg.rx_ring + 2 * pkt::BATCH_MAX {
        return Err(IxgbeError::Pool(format!(
            "{} buffers cannot fill a {}-slot receive ring and leave room for batches in flight: create it with at least {}",
            pool.capacity(),
            cfg.rx_ring,
            cfg.rx_ring + 2 * pkt::BATCH_MAX
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
        regs.write(
            regs::dca_rxctrl(0),
            regs.read(regs::dca_rxctrl(0)) & !regs::DCA_RXCTRL_BIT12,
        );

        let rx_mem = dma.alloc_ring(cfg.rx_ring * ring::DESC_BYTES)?;
        let mut rx = RxRing {
            mem: rx_mem,
            bufs: (0..cfg.rx_ring).map(|_| None).collect(),
            iovas: vec![0; cfg.rx_ring],
            next: 0,
            tail: cfg.rx_ring - 1,
        };
        for slot in 0..cfg.rx_ring {
            let mut buf = pool.alloc().ok_or_else(|| {
                IxgbeError::Pool("ran out of buffers filling the receive ring".into())
            })?;
            let p = buf.reset_for_rx(HEADROOM).as_ptr();
            rx.iovas[slot] = dma.iova_of(p).ok_or_else(|| {
                IxgbeError::Pool("the pool is not mapped for DMA: map it whole first".into())
            })?;
            rx.bufs[slot] = Some(buf);
            rx.arm(slot);
        }
        let base = rx.mem.iova();
        regs.write(regs::rxdctl(0), 0);
        regs.write(regs::rdbal(0), base as u32);
        regs.write(regs::rdbah(0), (base >> 32) as u32);
        regs.write(regs::rdlen(0), (cfg.rx_ring * ring::DESC_BYTES) as u32);
        regs.write(
            regs::srrctl(0),
            bsize_kb as u32 | regs::SRRCTL_DESCTYPE_ADV_ONEBUF | regs::SRRCTL_DROP_EN,
        );
        regs.write(regs::rdh(0), 0);
        regs.write(regs::rdt(0), 0);
        regs.write(regs::rxdctl(0), regs::XDCTL_ENABLE);
        poll(
            || regs.read(regs::rxdctl(0)) & regs::XDCTL_ENABLE != 0,
            "receive queue enable (RXDCTL.ENABLE)",
            Duration::from_millis(100),
        )?;
        write_barrier();
        regs.write(regs::rdt(0), rx.tail as u32);
        regs.write(regs::RXCTRL, regs.read(regs::RXCTRL) | regs::RXCTRL_RXEN);

        // 4.6.8 Transmit initialization: one packet buffer, no DCB (arbiter off while
        // MTQC changes), then the ring, DMATXCTL.TE, and the queue.
        regs.write(regs::RTTDCS, regs.read(regs::RTTDCS) | regs::RTTDCS_ARBDIS);
        regs.write(regs::MTQC, 0);
        regs.write(regs::RTTDCS, regs.read(regs::RTTDCS) & !regs::RTTDCS_ARBDIS);
        let tx_mem = dma.alloc_ring(cfg.tx_ring * ring::DESC_BYTES)?;
        let tx = TxRing {
            mem: tx_mem,
            bufs: (0..cfg.tx_ring).map(|_| None).collect(),
            clean: 0,
            tail: 0,
        };
        let base = tx.mem.iova();
        regs.write(regs::txdctl(0), 0);
        regs.write(regs::tdbal(0), base as u32);
        regs.write(regs::tdbah(0), (base >> 32) as u32);
        regs.write(regs::tdlen(0), (cfg.tx_ring * ring::DESC_BYTES) as u32);
        regs.write(regs::tdh(0), 0);
        regs.write(regs::tdt(0), 0);
        regs.write(regs::txdctl(0), regs::TXDCTL_THRESH);
        regs.write(
            regs::DMATXCTL,
            regs.read(regs::DMATXCTL) | regs::DMATXCTL_TE,
        );
        regs.write(regs::txdctl(0), regs::TXDCTL_THRESH | regs::XDCTL_ENABLE);
        poll(
            || regs.read(regs::txdctl(0)) & regs::XDCTL_ENABLE != 0,
            "transmit queue enable (TXDCTL.ENABLE)",
            Duration::from_millis(100),
        )?;

        let link_up = regs.read(regs::LINKS) & regs::LINKS_UP != 0;
        tracing::info!(port = name, mac = %MacAddr(mac), link_up, rx_ring = cfg.rx_ring, tx_ring = cfg.tx_ring, "82599 initialised");
        Ok(Self {
            name: name.to_owned(),
            regs,
            dma,
            pool,
            cfg,
            mac,
            max_frame,
            rx,
            tx_ctx_slots: vec![false; tx.size()],
            tx_ctx: None,
            tx_sw_csum: 0,
            tx,
            spill: Batch::new(),
            link_up,
            tx_calls: 0,
            rx_packets: 0,
            rx_bytes: 0,
            tx_packets: 0,
            tx_bytes: 0,
            tx_copied: 0,
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

    /// Descriptors posted for transmit that the device has not completed.
    pub fn tx_in_flight(&self) -> usize {
        self.tx.in_flight()
    }

    /// Releases transmitted frames the device is done with, oldest first; returns how
    /// many descriptors. A context descriptor is done when the data descriptor after
    /// it is (the device writes DD back only where RS was set).
    pub fn reclaim_tx(&mut self) -> usize {
        let size = self.tx.size();
        let done = |tx: &TxRing, slot: usize| {
            (tx.mem.read(slot, 1) >> 32) as u32 & regs::desc::TX_STATUS_DD != 0
        };
        let mut n = 0;
        while self.tx.clean != self.tx.tail {
            let slot = self.tx.clean;
            let next = (slot + 1) % size;
            if self.tx_ctx_slots[slot] {
                if next == self.tx.tail || !done(&self.tx, next) {
                    break;
                }
                self.tx_ctx_slots[slot] = false;
            } else if !done(&self.tx, slot) {
                break;
            } else {
                // Dropping the buffer returns it to its pool.
                self.tx.bufs[slot] = None;
            }
            self.tx.clean = next;
            n += 1;
        }
        n
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
            ("hw_rx_missed", hw.missed),
            ("hw_rx_no_descriptor", hw.no_descriptor),
            ("hw_rx_crc_errors", hw.crc_errors),
            ("hw_rx_length_errors", hw.length_errors),
            ("hw_rx_oversize", hw.oversize),
            ("hw_rx_undersize", hw.undersize),
        ]
        .into_iter()
        .map(|(name, count)| DropCounter { name, count })
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
        own.meta = buf.meta;
        self.tx_copied += 1;
        Some(own)
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

impl<R: Registers, D: Dma> Port for IxgbePort<R, D> {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_batch(&mut self, batch: &mut Batch) -> usize {
        let size = self.rx.size();
        let mut got = 0;
        let mut armed_any = false;
        // The slot at the tail is ours, not posted: a DD there is the device writing
        // where it was not allowed to. Count it and re-arm the slot.
        if RxWriteBack::from_qword(self.rx.mem.read(self.rx.tail, 1)).done() {
            self.drops.rx_unposted_dd += 1;
            self.rx.arm(self.rx.tail);
        }
        let room = batch.room();
        while self.rx.next != self.rx.tail && got < room {
            let slot = self.rx.next;
            let wb = RxWriteBack::from_qword(self.rx.mem.read(slot, 1));
            if !wb.done() {
                break;
            }
            read_barrier();
            let len = usize::from(wb.length);
            let eop = wb.status_error & regs::desc::RX_STATUS_EOP != 0;
            let space = self.rx.bufs[slot]
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
                        if let Some(mut full) = self.rx.bufs[slot].replace(fresh) {
                            // Cannot fail: `len <= space` was checked above.
                            let _ = full.set_len(len);
                            full.meta = pkt::Meta::default();
                            full.meta.offload.flags = flags;
                            let _ = batch.push(full);
                            self.rx.iovas[slot] = iova;
                            self.rx_packets += 1;
                            self.rx_bytes += len as u64;
                            got += 1;
                        }
                    }
                    // Not reachable with a pool mapped whole; keep the old buffer.
                    None => self.drops.rx_no_buffer += 1,
                }
            } else {
                self.drops.rx_no_buffer += 1;
            }
            self.rx.arm(slot);
            armed_any = true;
            self.rx.next = (slot + 1) % size;
        }
        if armed_any {
            // The slot before `next` becomes the one we keep; the old tail slot,
            // re-armed long ago, goes back to the device.
            self.rx.tail = (self.rx.next + size - 1) % size;
            write_barrier();
            self.regs.write(regs::rdt(0), self.rx.tail as u32);
        }
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
        let mut free = self.tx.free();
        let mut sent = 0;
        let mut spill = std::mem::replace(&mut self.spill, Batch::unallocated());
        for buf in batch.drain() {
            // Once one frame waits, every later one waits too: order is kept.
            if free == 0 || !spill.is_empty() {
                let _ = spill.push(buf);
                continue;
            }
            let len = buf.len();
            if len == 0 || len > self.max_frame {
                self.drops.tx_bad_length += 1;
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
            let new_ctx = ctx.is_some() && ctx != self.tx_ctx;
            let need = TxRing::slots_for(iova, len) + usize::from(new_ctx);
            if need > free {
                let _ = spill.push(buf);
                continue;
            }
            match ctx {
                Some(c) => {
                    if new_ctx {
                        post_context(&mut self.tx, &mut self.tx_ctx_slots, c);
                        self.tx_ctx = Some(c);
                    }
                    post_checksummed(&mut self.tx, iova, len, buf);
                }
                None => self.tx.post(iova, len, buf),
            }
            self.tx_packets += 1;
            self.tx_bytes += len as u64;
            free -= need;
            sent += 1;
        }
        if sent > 0 {
            write_barrier();
            self.regs.write(regs::tdt(0), self.tx.tail as u32);
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
            rx_queues: 1,
            tx_queues: 1,
            offloads: Offloads::RX_CSUM | Offloads::TX_CSUM,
        }
    }

    fn stats(&self) -> PortStats {
        tracing::debug!(
            port = %self.name,
            rdh = self.regs.read(regs::rdh(0)),
            rdt = self.regs.read(regs::rdt(0)),
            rx_next = self.rx.next,
            tdh = self.regs.read(regs::tdh(0)),
            tdt = self.regs.read(regs::tdt(0)),
            tx_clean = self.tx.clean,
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
        self.regs.write(regs::rxdctl(0), 0);
        self.regs.write(regs::txdctl(0), 0);
        for (reg, what) in [(regs::rxdctl(0), "rx"), (regs::txdctl(0), "tx")] {
            if poll(
                || self.regs.read(reg) & regs::XDCTL_ENABLE == 0,
                "queue disable",
                Duration::from_millis(10),
            )
            .is_err()
            {
                tracing::warn!(port = %self.name, queue = what, "82599 queue still enabled at close");
            }
        }
        self.regs.write(
            regs::DMATXCTL,
            self.regs.read(regs::DMATXCTL) & !regs::DMATXCTL_TE,
        );
    }
}

#[cfg(test)]
mod tests;
