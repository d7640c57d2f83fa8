//! A poll-mode driver for the Intel 82576 ("igb") physical function, as a
//! [`pkt::Port`] of [`PortKind::Ethernet`] frames.
//!
//! The driver owns [`IgbConfig::queues`] receive and transmit queue pairs (1..=4) with
//! advanced descriptors. Frames are received straight into [`Mempool`] buffers mapped
//! for DMA, and sent from them without a copy (a frame from another pool is copied
//! into ours once). Each batch costs at most one tail-register write per queue and
//! direction, after a write barrier.
//!
//! With more than one queue the device spreads received flows by RSS: the Toeplitz
//! hash of addresses and TCP/UDP ports under [`IgbConfig::rss_key`] (random by
//! default, or e.g. [`offload::rss::DEFAULT_KEY`], Microsoft's verification key)
//! indexes a 128-entry redirection table (RETA) that deals the queues out in turn.
//! `rx_batch` drains the queues round-robin within the batch's room; `tx_batch` puts
//! each frame on the queue its flow hashes to (addresses and ports, or MACs), so a
//! flow stays in order. [`IgbPort::queue_stats`] counts per queue.
//!
//! Offloads ([`IgbConfig::offloads`], on by default): receive checksum checking
//! (RXCSUM.IPOFLD/TUOFLD); a frame whose IPv4 header and TCP/UDP checksums the device
//! checked and found good carries [`offload::vnet_hdr::DATA_VALID`], a bad or unchecked
//! one carries nothing, so the stack checks it again (and counts a bad one). On
//! transmit, a frame asking for its TCP/UDP checksum ([`offload::vnet_hdr::NEEDS_CSUM`])
//! gets it from the device through an advanced context descriptor, written only when
//! the header layout changes; a large TCP frame with `GSO_TCPV4/6` longer than the
//! MTU is segmented by the device (TSO: context MSS/L4LEN, DCMD.TSE) into segments of
//! `gso_size`, each with its IPv4 header checksum, length, ID, sequence number and
//! TCP checksum. Layouts the device cannot describe get their checksum in software;
//! a large frame the device cannot segment (UDP GSO, IPv6 extension headers) is
//! dropped and counted (`tx_bad_offload`): the engine segments for ports without the
//! capability, and [`PortCaps`] reports only what the device does here.
//!
//! It reaches the device only through two seams, so the ring logic runs on the host
//! without hardware: [`Registers`] (BAR0; a VFIO mapping, or the register-level model
//! in [`model`]) and [`Dma`] (descriptor ring memory and the IOVA of pool buffers).
//! [`open_vfio`] builds the real thing.
//!
//! With [`IgbConfig::sriov`] the PF also serves SR-IOV virtual functions: VMDq pools,
//! anti-spoofing, and the PF end of the PF/VF mailbox, polled from `rx_batch`
//! ([`sriov`], [`mailbox`]). [`vf`] is the driver for one VF.
//!
//! SR-IOV and RSS exclude each other in this driver: under SR-IOV the PF has one
//! queue, its pool's (queue `num_vfs`), and VMDq picks the pool; `queues > 1` with
//! SR-IOV is a configuration error.
//!
//! 802.1Q offload ([`IgbConfig::vlan_strip`], off by default): CTRL.VME makes the
//! device strip a received frame's tag; the driver moves the TCI from the write-back
//! (status VP) into [`pkt::Meta::vlan`]. A frame sent with a tag in its meta gets it
//! inserted by the device (DCMD.VLE, the TCI in the advanced context descriptor's VLAN
//! field, the same context that carries checksum and TSO layouts, so each TSO segment
//! is tagged); the frame in memory stays untagged and its MACLEN excludes the tag.
//! [`PortCaps`] reports [`Offloads::VLAN`] only then. Without it, a tagged meta is
//! dropped and counted (`tx_bad_vlan`) rather than sent on the wrong VLAN, and a VP
//! write-back (a VF under a port VLAN) is delivered as before and counted
//! ([`OffloadStats::rx_vlan_unrequested`]). Not with SR-IOV: in VMDq mode the device
//! strips per pool (VMOLR.STRVLAN), which this driver does not yet program for the PF.
//!
//! Not yet: interrupts, software segmentation inside the driver.

mod hw_offload;
pub mod mailbox;
pub mod model;
mod model_offload;
mod queue;
pub mod regs;
pub mod ring;
pub mod sriov;
pub mod vf;
mod vfio_glue;

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pkt::{Batch, DropCounter, HEADROOM, Mempool, Offloads, Port, PortCaps, PortKind, PortStats};

use pkt::wire::MacAddr;
use queue::QueuePair;
pub use queue::{OffloadStats, QueueRegs};
pub use ring::RingMemory;
use ring::RxRing;
pub use sriov::SriovConfig;
pub use vf::{IgbVfConfig, IgbVfPort};
pub use vfio_glue::{
    EXTERNAL_DMA_MAPPINGS, VfioDma, open_vf_vfio, open_vf_vfio_with, open_vfio, open_vfio_with,
};

/// 32-bit register access to the device's BAR0, by byte offset.
pub trait Registers: Send {
    /// Reads the register at `offset`.
    fn read(&self, offset: u32) -> u32;
    /// Writes the register at `offset`.
    fn write(&self, offset: u32, value: u32);
}

impl Registers for vfio::MappedBar {
    #[inline]
    fn read(&self, offset: u32) -> u32 {
        self.read32(offset as usize)
    }

    #[inline]
    fn write(&self, offset: u32, value: u32) {
        self.write32(offset as usize, value)
    }
}

/// Device-visible memory: descriptor rings, and the addresses of packet buffers.
pub trait Dma: Send {
    /// Allocates zeroed memory for a ring of `bytes` (128-byte aligned at least).
    fn alloc_ring(&mut self, bytes: usize) -> Result<RingMemory, IgbError>;
    /// The device-visible address of `p`, a pointer into the driver's packet pool;
    /// `None` when `p` is outside every mapping.
    fn iova_of(&self, p: *const u8) -> Option<u64>;
    /// A handle that makes other memory (a guest's) readable by the device, for
    /// frames with external tails; `None` when this DMA side cannot map more.
    fn dma_map(&self) -> Option<Arc<dyn pkt::DmaMap>> {
        None
    }
}

/// Why the 82576 could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum IgbError {
    /// The VFIO layer failed (its message says what to do).
    #[error(transparent)]
    Vfio(#[from] vfio::VfioError),
    /// The device is not an 82576 PF.
    #[error(
        "{bdf} is {vendor:04x}:{device:04x}, not an Intel 82576 PF (8086:10c9/10e6/10e7/10e8/1526/150a/150d/1518): pick the right device (`lspci -nn`)"
    )]
    NotIgb {
        /// The device.
        bdf: String,
        /// PCI vendor ID.
        vendor: u16,
        /// PCI device ID.
        device: u16,
    },
    /// A step of the init sequence did not complete.
    #[error(
        "82576 {step} did not complete within {ms} ms: the device is hung or not an 82576; reset it (unbind/rebind, or power-cycle)"
    )]
    Timeout {
        /// The step.
        step: &'static str,
        /// How long we waited.
        ms: u64,
    },
    /// The PHY did not answer an MDIC access.
    #[error(
        "82576 PHY register {reg} access failed (MDIC {mdic:#010x}): the internal PHY does not answer at address 1"
    )]
    Phy {
        /// PHY register.
        reg: u32,
        /// MDIC read back.
        mdic: u32,
    },
    /// The packet pool does not fit the configuration.
    #[error("igb: packet pool unsuitable: {0}")]
    Pool(String),
    /// The configuration is out of range.
    #[error("igb: bad configuration: {0}")]
    Config(String),
    /// The device is not an 82576 VF.
    #[error(
        "{bdf} is {vendor:04x}:{device:04x}, not an Intel 82576 VF (8086:10ca): pick a VF (`ls /sys/bus/pci/devices/<pf>/virtfn*`)"
    )]
    NotIgbVf {
        /// The device.
        bdf: String,
        /// PCI vendor ID.
        vendor: u16,
        /// PCI device ID.
        device: u16,
    },
    /// The VF's mailbox exchange with the PF failed.
    #[error(
        "82576 VF mailbox, {step}: {detail}: is the PF driver up? (Linux igb answers only while the PF's netdev is up: `ip link set <pf> up`; vnetp's PF needs SR-IOV in its configuration)"
    )]
    VfMailbox {
        /// The message or step.
        step: &'static str,
        /// What happened.
        detail: String,
    },
    /// The PF refused a VF request.
    #[error("82576 VF: the PF refused {what}: {detail}")]
    VfRefused {
        /// The message.
        what: &'static str,
        /// Why, and what to do.
        detail: String,
    },
}

/// Models the 82576 devices we accept: PF device IDs of the family.
pub const IGB_PF_DEVICE_IDS: &[u16] = &[
    0x10c9, 0x10e6, 0x10e7, 0x10e8, 0x1526, 0x150a, 0x150d, 0x1518,
];

/// How to set up the port.
#[derive(Debug, Clone)]
pub struct IgbConfig {
    /// Receive descriptors (multiple of 8, 8..=4096).
    pub rx_ring: usize,
    /// Transmit descriptors (multiple of 8, 8..=4096).
    pub tx_ring: usize,
    /// Largest L3 payload (without Ethernet header); above 1500 enables long frames.
    pub mtu: usize,
    /// Accept every unicast and multicast frame, not only ours and broadcast.
    pub promiscuous: bool,
    /// Read the link state every this many `tx_batch` calls (a register read costs
    /// about a microsecond on PCIe, too much per batch).
    pub link_check_every: u32,
    /// Serve SR-IOV virtual functions (the VFs must be enabled with `sriov_numvfs`,
    /// before or after). `None`: the PF alone, queue 0.
    pub sriov: Option<SriovConfig>,
    /// Receive/transmit queue pairs, 1..=4 ([`regs::MAX_PF_QUEUES`]); more than one
    /// turns on RSS. Must be 1 with SR-IOV.
    pub queues: usize,
    /// The 40-byte RSS key (RSSRK); `None`: a random one, drawn at start.
    pub rss_key: Option<[u8; 40]>,
    /// Checksum offload on receive and transmit, and TSO. A TSO frame must fit one
    /// buffer of the port's pool: give the pool larger buffers than
    /// [`pool_buffer_size`] to send frames above the MTU.
    pub offloads: bool,
    /// 802.1Q offload: strip tags on receive into [`pkt::Meta::vlan`] (CTRL.VME) and
    /// insert [`pkt::Meta::vlan`] tags on transmit. Off by default; not with SR-IOV.
    pub vlan_strip: bool,
}

impl Default for IgbConfig {
    fn default() -> Self {
        Self {
            rx_ring: 512,
            tx_ring: 512,
            mtu: 1500,
            promiscuous: false,
            link_check_every: 1024,
            sriov: None,
            queues: 1,
            rss_key: None,
            offloads: true,
            vlan_strip: false,
        }
    }
}

/// The smallest [`Mempool`] buffer size for frames of `mtu` bytes of payload: the
/// device writes receive buffers in whole KiB, after our headroom.
pub fn pool_buffer_size(mtu: usize) -> usize {
    HEADROOM + (mtu + FRAME_OVERHEAD).div_ceil(1024) * 1024
}

/// Ethernet header plus one VLAN tag: a frame is at most `mtu + FRAME_OVERHEAD` bytes
/// (without FCS, which the device strips on receive and appends on transmit).
const FRAME_OVERHEAD: usize = 14 + 4;

/// Counters read from the device's clear-on-read statistics registers, accumulated.
#[derive(Debug, Default, Clone, Copy)]
struct HwStats {
    missed: u64,
    no_descriptor: u64,
    crc_errors: u64,
    oversize: u64,
    good_rx: u64,
    good_tx: u64,
}

/// Frames one queue pair moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    /// Frames received on the queue.
    pub rx_packets: u64,
    /// Frames sent on the queue.
    pub tx_packets: u64,
}

/// The 82576 PF as a [`Port`]: queue pairs 0..queues (RSS), or the PF's pool's queue
/// under SR-IOV.
pub struct IgbPort<R: Registers, D: Dma> {
    name: String,
    regs: R,
    dma: D,
    pool: Mempool,
    cfg: IgbConfig,
    mac: [u8; 6],
    qs: Vec<QueuePair>,
    /// The queue `rx_batch` starts with (rotates, so no queue starves another).
    rx_first: usize,
    /// Per-queue staging of a transmit batch (allocated once).
    tx_split: Vec<Batch>,
    rss_key: [u8; 40],
    link_up: bool,
    tx_calls: u32,
    sriov: Option<sriov::PfSriov>,
    hw: Cell<HwStats>,
}

impl<R: Registers, D: Dma> std::fmt::Debug for IgbPort<R, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IgbPort")
            .field("name", &self.name)
            .field("mac", &self.mac)
            .field("link_up", &self.link_up)
            .finish()
    }
}

fn poll(done: impl FnMut() -> bool, step: &'static str, limit: Duration) -> Result<(), IgbError> {
    if wait_until(done, limit) {
        Ok(())
    } else {
        Err(IgbError::Timeout {
            step,
            ms: limit.as_millis() as u64,
        })
    }
}

/// Polls `done` every 200 us until it holds (true) or `limit` has passed (false): how
/// the igb and ixgbe drivers wait for a device during bring-up.
pub(crate) fn wait_until(mut done: impl FnMut() -> bool, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

impl<R: Registers, D: Dma> IgbPort<R, D> {
    /// Resets and initialises the device in the datasheet's order ("Software
    /// Initialization": interrupts off, global reset, general configuration, PHY and
    /// link, statistics, receive, transmit) and starts its queues. The link may still
    /// be coming up when this returns: see [`IgbPort::wait_link`].
    pub fn new(
        name: &str,
        regs: R,
        mut dma: D,
        pool: Mempool,
        cfg: IgbConfig,
    ) -> Result<Self, IgbError> {
        let (max_frame, bsize_kb) = QueuePair::check(cfg.rx_ring, cfg.tx_ring, cfg.mtu, &pool)?;
        let nq = cfg.queues;
        if !(1..=regs::MAX_PF_QUEUES).contains(&nq) {
            return Err(IgbError::Config(format!(
                "queues = {nq}: use 1..={}",
                regs::MAX_PF_QUEUES
            )));
        }
        if nq > 1 && cfg.sriov.is_some() {
            return Err(IgbError::Config(format!(
                "queues = {nq} with SR-IOV: the PF then owns one queue (its VMDq pool's); set queues = 1, or drop the VFs for RSS"
            )));
        }
        if cfg.vlan_strip && cfg.sriov.is_some() {
            return Err(IgbError::Config(
                "vlan_strip with SR-IOV: in VMDq mode the 82576 strips per pool (VMOLR.STRVLAN), which this driver does not program for the PF yet; turn one of them off".into(),
            ));
        }
        if pool.capacity() < nq * cfg.rx_ring + 2 * pkt::BATCH_MAX {
            return Err(IgbError::Pool(format!(
                "{} buffers cannot fill {nq} receive rings of {} slots and leave room for batches in flight: create it with at least {}",
                pool.capacity(),
                cfg.rx_ring,
                nq * cfg.rx_ring + 2 * pkt::BATCH_MAX
            )));
        }
        let rss_key = match cfg.rss_key {
            Some(k) => k,
            None => random_key(name),
        };
        let sriov = cfg.sriov.as_ref().map(sriov::PfSriov::new).transpose()?;
        let queue = sriov.as_ref().map_or(0, |s| s.pf_pool());

        // Interrupts During Initialization: mask everything, before and after reset.
        regs.write(regs::IMC, u32::MAX);
        regs.write(regs::EIMC, u32::MAX);
        // Global Reset and General Configuration.
        regs.write(regs::CTRL, regs.read(regs::CTRL) | regs::CTRL_RST);
        std::thread::sleep(Duration::from_millis(1));
        poll(
            || regs.read(regs::CTRL) & regs::CTRL_RST == 0,
            "reset",
            Duration::from_millis(100),
        )?;
        regs.write(regs::IMC, u32::MAX);
        regs.write(regs::EIMC, u32::MAX);
        let _ = regs.read(regs::ICR);
        if poll(
            || regs.read(regs::EECD) & regs::EECD_AUTO_RD != 0,
            "EEPROM auto-read",
            Duration::from_millis(50),
        )
        .is_err()
        {
            tracing::warn!(
                port = name,
                "82576: EEPROM auto-read not reported done; using RAL0/RAH0 as they are"
            );
        }
        let vme = if cfg.vlan_strip { regs::CTRL_VME } else { 0 };
        regs.write(regs::CTRL, regs.read(regs::CTRL) | regs::CTRL_SLU | vme);
        // Link Setup: restart auto-negotiation on the internal PHY (copper).
        mdic_write(
            &regs,
            regs::PHY_BMCR,
            regs::BMCR_AN_ENABLE
                | regs::BMCR_AN_RESTART
                | regs::BMCR_FULL_DUPLEX
                | regs::BMCR_SPEED_1000,
        )?;
        // Initialization of Statistics: the counters clear on read.
        for r in [
            regs::stats::CRCERRS,
            regs::stats::MPC,
            regs::stats::GPRC,
            regs::stats::GPTC,
            regs::stats::GORCL,
            regs::stats::GORCH,
            regs::stats::GOTCL,
            regs::stats::GOTCH,
            regs::stats::RNBC,
            regs::stats::ROC,
        ] {
            let _ = regs.read(r);
        }

        // Receive Initialization.
        let (ral, rah) = (regs.read(regs::RAL0), regs.read(regs::RAH0));
        let mut mac = [0u8; 6];
        mac[..4].copy_from_slice(&ral.to_le_bytes());
        mac[4..].copy_from_slice(&rah.to_le_bytes()[..2]);
        regs.write(regs::RAH0, rah | regs::RAH_AV);
        for i in 0..regs::MTA_LEN {
            regs.write(regs::MTA + 4 * i, 0);
        }
        // Virtualization: pools before any queue is enabled.
        if let Some(s) = &sriov {
            s.program_device(&regs, mac, max_frame as u32 + 4);
        }
        let mut rctl = regs::RCTL_BAM | regs::RCTL_SECRC;
        if cfg.promiscuous {
            rctl |= regs::RCTL_UPE | regs::RCTL_MPE;
        }
        if cfg.mtu > 1500 {
            rctl |= regs::RCTL_LPE;
            regs.write(regs::RLPML, (max_frame + 4) as u32);
        }
        regs.write(regs::RCTL, rctl);
        let mut rxcsum = 0;
        if cfg.offloads {
            rxcsum |= regs::RXCSUM_IPOFLD | regs::RXCSUM_TUOFLD;
        }
        if nq > 1 {
            // Multiple Receive Queues: key, redirection table, then MRQC (datasheet
            // 7.1.1.7 "RSS"); PCSD so the descriptor carries the hash.
            rxcsum |= regs::RXCSUM_PCSD;
            for (i, k) in rss_key.chunks_exact(4).enumerate() {
                regs.write(
                    regs::RSSRK + 4 * i as u32,
                    u32::from_le_bytes([k[0], k[1], k[2], k[3]]),
                );
            }
            for n in 0..regs::RETA_ENTRIES / 4 {
                let e = |j: u32| ((4 * n + j) as usize % nq) as u8;
                regs.write(
                    regs::RETA + 4 * n,
                    u32::from_le_bytes([e(0), e(1), e(2), e(3)]),
                );
            }
            regs.write(
                regs::MRQC,
                regs::MRQC_ENABLE_RSS
                    | regs::MRQC_RSS_FIELD_IPV4
                    | regs::MRQC_RSS_FIELD_IPV4_TCP
                    | regs::MRQC_RSS_FIELD_IPV4_UDP
                    | regs::MRQC_RSS_FIELD_IPV6
                    | regs::MRQC_RSS_FIELD_IPV6_TCP
                    | regs::MRQC_RSS_FIELD_IPV6_UDP,
            );
        }
        regs.write(regs::RXCSUM, rxcsum);
        // Transmit Initialization (global part; the queue follows with receive's).
        regs.write(
            regs::TCTL,
            regs::TCTL_PSP | regs::TCTL_CT_15 | regs::TCTL_COLD_FD,
        );
        let mut qs = Vec::with_capacity(nq);
        for n in 0..nq {
            let mut q = QueuePair::setup(
                QueueRegs::pf(queue + n as u32),
                &regs,
                &mut dma,
                &pool,
                cfg.rx_ring,
                cfg.tx_ring,
                max_frame,
                bsize_kb,
            )?;
            if cfg.offloads {
                q.enable_offloads(&pool);
            }
            q.vlan = cfg.vlan_strip;
            qs.push(q);
        }
        regs.write(regs::RCTL, rctl | regs::RCTL_RXEN);
        regs.write(regs::TCTL, regs.read(regs::TCTL) | regs::TCTL_EN);
        if let Some(s) = &sriov {
            s.announce_reset_done(&regs);
        }

        let link_up = regs.read(regs::STATUS) & regs::STATUS_LU != 0;
        tracing::info!(port = name, mac = ?mac, link_up, queue, queues = nq, offloads = cfg.offloads, vfs = sriov.as_ref().map_or(0, |s| s.vfs().len()), rx_ring = cfg.rx_ring, tx_ring = cfg.tx_ring, "82576 initialised");
        Ok(Self {
            name: name.to_owned(),
            regs,
            dma,
            pool,
            cfg,
            mac,
            qs,
            rx_first: 0,
            tx_split: (0..nq).map(|_| Batch::new()).collect(),
            rss_key,
            link_up,
            tx_calls: 0,
            sriov,
            hw: Cell::new(HwStats::default()),
        })
    }

    /// Services the SR-IOV mailbox now (it is also polled from `rx_batch`); returns the
    /// messages answered. 0 without SR-IOV.
    pub fn service_mailbox(&mut self) -> usize {
        match &mut self.sriov {
            Some(s) => s.service(&self.regs),
            None => 0,
        }
    }

    /// The SR-IOV side (VF states and mailbox counters), when configured.
    pub fn sriov(&self) -> Option<&sriov::PfSriov> {
        self.sriov.as_ref()
    }

    /// The MAC address the device came up with (RAL0/RAH0, from its EEPROM).
    pub fn mac(&self) -> MacAddr {
        MacAddr(self.mac)
    }

    /// Reads STATUS.LU now and remembers it.
    pub fn refresh_link(&mut self) -> bool {
        self.link_up = self.regs.read(regs::STATUS) & regs::STATUS_LU != 0;
        self.link_up
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
        self.qs.iter().map(|q| q.tx_copied).sum()
    }

    /// Descriptors posted for transmit that the device has not completed, over all
    /// queues.
    pub fn tx_in_flight(&self) -> usize {
        self.qs.iter().map(|q| q.tx.in_flight()).sum()
    }

    /// Releases transmitted frames the device is done with; returns how many
    /// descriptors.
    pub fn reclaim_tx(&mut self) -> usize {
        self.qs.iter_mut().map(QueuePair::reclaim).sum()
    }

    /// The handle a guest port maps its memory with, so that the frames it hands this
    /// port carry tails the device gathers in place ([`pkt::ExtSeg::dma`]): the VFIO
    /// container's read-only external mappings, or the model's DMA check. `None` for
    /// a DMA side without one (tails are then copied).
    pub fn dma_map(&self) -> Option<Arc<dyn pkt::DmaMap>> {
        self.dma.dma_map()
    }

    /// Frames each queue pair moved, queue 0 first.
    pub fn queue_stats(&self) -> Vec<QueueStats> {
        self.qs
            .iter()
            .map(|q| QueueStats {
                rx_packets: q.rx_packets,
                tx_packets: q.tx_packets,
            })
            .collect()
    }

    /// What the device's checksum, segmentation and VLAN offloads did, over all queues.
    pub fn offload_stats(&self) -> OffloadStats {
        self.qs.iter().fold(OffloadStats::default(), |mut a, q| {
            let o = q.offload;
            a.rx_csum_good += o.rx_csum_good;
            a.rx_csum_bad += o.rx_csum_bad;
            a.rx_csum_unchecked += o.rx_csum_unchecked;
            a.tx_csum += o.tx_csum;
            a.tx_tso += o.tx_tso;
            a.tx_sw_csum += o.tx_sw_csum;
            a.tx_contexts += o.tx_contexts;
            a.rx_vlan_stripped += o.rx_vlan_stripped;
            a.rx_vlan_unrequested += o.rx_vlan_unrequested;
            a.tx_vlan_inserted += o.tx_vlan_inserted;
            a.tx_zero_copy += o.tx_zero_copy;
            a.tx_tail_copied += o.tx_tail_copied;
            a
        })
    }

    /// The RSS key programmed into RSSRK (used only with more than one queue).
    pub fn rss_key(&self) -> [u8; 40] {
        self.rss_key
    }

    /// The register block (for diagnostics and tests).
    pub fn registers(&self) -> &R {
        &self.regs
    }

    /// Receive descriptor ring of queue 0 (for tests of device misbehaviour).
    pub fn rx_ring(&self) -> &RxRing {
        &self.qs[0].rx
    }

    fn drop_counters(&self) -> Vec<DropCounter> {
        let hw = self.read_hw_stats();
        let mut v: Vec<DropCounter> = self.qs[0].drop_counters().into();
        for q in &self.qs[1..] {
            for (sum, c) in v.iter_mut().zip(q.drop_counters()) {
                sum.count += c.count;
            }
        }
        v.extend(
            [
                ("hw_rx_missed", hw.missed),
                ("hw_rx_no_descriptor", hw.no_descriptor),
                ("hw_rx_crc_errors", hw.crc_errors),
                ("hw_rx_oversize", hw.oversize),
            ]
            .into_iter()
            .map(|(name, count)| DropCounter { name, count }),
        );
        if let Some(s) = &self.sriov {
            v.extend(s.counters());
        }
        v
    }

    /// Accumulates the device's clear-on-read statistics registers.
    fn read_hw_stats(&self) -> HwStats {
        let mut s = self.hw.get();
        let r = |reg| u64::from(self.regs.read(reg));
        s.missed += r(regs::stats::MPC);
        s.no_descriptor += r(regs::stats::RNBC);
        s.crc_errors += r(regs::stats::CRCERRS);
        s.oversize += r(regs::stats::ROC);
        s.good_rx += r(regs::stats::GPRC);
        s.good_tx += r(regs::stats::GPTC);
        self.hw.set(s);
        s
    }

    /// Good frames the device itself counted (GPRC, GPTC), for cross-checking.
    pub fn hw_good_frames(&self) -> (u64, u64) {
        let s = self.read_hw_stats();
        (s.good_rx, s.good_tx)
    }
}

/// A random RSS key (getrandom); Microsoft's verification key if the kernel has no
/// randomness to give, which spreads flows as well but is predictable.
fn random_key(port: &str) -> [u8; 40] {
    let mut key = [0u8; 40];
    match rustix::rand::getrandom(&mut key, rustix::rand::GetRandomFlags::empty()) {
        Ok(40) => key,
        _ => {
            tracing::warn!(
                port,
                "no random bytes for the RSS key; using the well-known one"
            );
            offload::rss::DEFAULT_KEY
        }
    }
}

impl<R: Registers, D: Dma> IgbPort<R, D> {
    /// The offloads this port performs.
    fn offloads(&self) -> Offloads {
        let mut o = Offloads::NONE;
        if self.cfg.offloads {
            o = o | Offloads::RX_CSUM | Offloads::TX_CSUM | Offloads::TSO4 | Offloads::TSO6;
        }
        if self.qs.len() > 1 {
            o = o | Offloads::RSS;
        }
        if self.cfg.vlan_strip {
            o = o | Offloads::VLAN;
        }
        // Tails are gathered in place when they carry a device address and copied
        // otherwise, so every tailed frame is welcome.
        o | Offloads::EXT_TAIL
    }
}

/// Writes a PHY register through MDIC and waits for MDIC.R.
fn mdic_write<R: Registers>(regs: &R, reg: u32, value: u16) -> Result<(), IgbError> {
    regs.write(
        regs::MDIC,
        u32::from(value)
            | reg << regs::MDIC_REG_SHIFT
            | regs::PHY_ADDR << regs::MDIC_PHY_SHIFT
            | regs::MDIC_OP_WRITE,
    );
    poll(
        || regs.read(regs::MDIC) & regs::MDIC_READY != 0,
        "PHY write (MDIC ready)",
        Duration::from_millis(10),
    )?;
    let mdic = regs.read(regs::MDIC);
    if mdic & regs::MDIC_ERROR != 0 {
        return Err(IgbError::Phy { reg, mdic });
    }
    Ok(())
}

/// Reads a PHY register through MDIC.
pub fn mdic_read<R: Registers>(regs: &R, reg: u32) -> Result<u16, IgbError> {
    regs.write(
        regs::MDIC,
        reg << regs::MDIC_REG_SHIFT | regs::PHY_ADDR << regs::MDIC_PHY_SHIFT | regs::MDIC_OP_READ,
    );
    poll(
        || regs.read(regs::MDIC) & regs::MDIC_READY != 0,
        "PHY read (MDIC ready)",
        Duration::from_millis(10),
    )?;
    let mdic = regs.read(regs::MDIC);
    if mdic & regs::MDIC_ERROR != 0 {
        return Err(IgbError::Phy { reg, mdic });
    }
    Ok((mdic & regs::MDIC_DATA_MASK) as u16)
}

impl<R: Registers, D: Dma> Port for IgbPort<R, D> {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_batch(&mut self, batch: &mut Batch) -> usize {
        if let Some(s) = &mut self.sriov {
            s.tick(&self.regs);
        }
        let n = self.qs.len();
        let mut got = 0;
        for i in 0..n {
            if batch.room() == 0 {
                break;
            }
            let q = (self.rx_first + i) % n;
            got += self.qs[q].rx_batch(&self.regs, &self.dma, &self.pool, batch);
        }
        self.rx_first = (self.rx_first + 1) % n;
        // Sent frames are released here too, not only by the next transmit: a frame's
        // external tail is a guest's buffer, which the guest gets back only then, and a
        // guest that waits for it (a TCP stack's small queues) may send nothing more.
        // One descriptor read per queue with frames in flight, none when idle.
        for q in &mut self.qs {
            q.reclaim();
        }
        got
    }

    fn tx_batch(&mut self, batch: &mut Batch) -> usize {
        self.tx_calls = self.tx_calls.wrapping_add(1);
        if self
            .tx_calls
            .is_multiple_of(self.cfg.link_check_every.max(1))
            || !self.link_up
        {
            self.refresh_link();
        }
        if !self.link_up {
            for q in &mut self.qs {
                q.reclaim();
            }
            self.qs[0].drop_link_down(batch);
            return 0;
        }
        let n = self.qs.len();
        if n == 1 {
            return self.qs[0].tx_batch(&self.regs, &self.dma, &self.pool, batch);
        }
        // Each flow to its queue, in order; what a full ring leaves goes back to the
        // caller (per flow still in order).
        for buf in batch.drain() {
            let q = hw_offload::flow_hash(buf.data()) as usize % n;
            let _ = self.tx_split[q].push(buf);
        }
        let mut sent = 0;
        for (q, split) in self.qs.iter_mut().zip(self.tx_split.iter_mut()) {
            if split.is_empty() {
                continue;
            }
            sent += q.tx_batch(&self.regs, &self.dma, &self.pool, split);
            for buf in split.drain() {
                let _ = batch.push(buf);
            }
        }
        sent
    }

    fn caps(&self) -> PortCaps {
        PortCaps {
            kind: PortKind::Ethernet,
            mtu: self.cfg.mtu,
            rx_queues: self.qs.len() as u16,
            tx_queues: self.qs.len() as u16,
            offloads: self.offloads(),
        }
    }

    fn stats(&self) -> PortStats {
        tracing::debug!(
            port = %self.name,
            rdh = self.regs.read(self.qs[0].regs.rdh),
            rdt = self.regs.read(self.qs[0].regs.rdt),
            rx_next = self.qs[0].rx.next,
            tdh = self.regs.read(self.qs[0].regs.tdh),
            tdt = self.regs.read(self.qs[0].regs.tdt),
            tx_clean = self.qs[0].tx.clean,
            status = format_args!("{:#x}", self.regs.read(regs::STATUS)),
            rctl = format_args!("{:#x}", self.regs.read(regs::RCTL)),
            "82576 ring state"
        );
        PortStats {
            rx_packets: self.qs.iter().map(|q| q.rx_packets).sum(),
            rx_bytes: self.qs.iter().map(|q| q.rx_bytes).sum(),
            tx_packets: self.qs.iter().map(|q| q.tx_packets).sum(),
            tx_bytes: self.qs.iter().map(|q| q.tx_bytes).sum(),
            drops: self.drop_counters(),
        }
    }

    fn events(&self) -> Vec<DropCounter> {
        let o = self.offload_stats();
        [
            ("tx_csum", o.tx_csum),
            ("tx_tso", o.tx_tso),
            ("tx_sw_csum", o.tx_sw_csum),
            ("rx_csum_good", o.rx_csum_good),
            ("rx_csum_bad", o.rx_csum_bad),
            ("tx_zero_copy", o.tx_zero_copy),
            ("tx_tail_copied", o.tx_tail_copied),
        ]
        .into_iter()
        .map(|(name, count)| DropCounter { name, count })
        .collect()
    }

    fn poll_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
}

impl<R: Registers, D: Dma> Drop for IgbPort<R, D> {
    fn drop(&mut self) {
        // Stop the device before the rings and buffers it may still access are freed.
        self.regs.write(regs::RCTL, 0);
        self.regs.write(regs::TCTL, 0);
        for q in &self.qs {
            q.stop(&self.regs);
        }
    }
}

#[cfg(test)]
mod offload_tests;
#[cfg(test)]
mod sriov_tests;
#[cfg(test)]
mod tail_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod vlan_tests;
