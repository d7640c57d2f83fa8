//! A poll-mode driver for the Intel 82576 ("igb") physical function, as a
//! [`pkt::Port`] of [`PortKind::Ethernet`] frames.
//!
//! The driver owns one receive and one transmit queue with advanced descriptors. Frames
//! are received straight into [`Mempool`] buffers mapped for DMA, and sent from them
//! without a copy (a frame from another pool is copied into ours once). Each batch
//! costs one tail-register write per direction, after a write barrier.
//!
//! It reaches the device only through two seams, so the ring logic runs on the host
//! without hardware: [`Registers`] (BAR0; a VFIO mapping, or the register-level model
//! in [`model`]) and [`Dma`] (descriptor ring memory and the IOVA of pool buffers).
//! [`open_vfio`] builds the real thing.
//!
//! Not yet: multiple queues and RSS, checksum/VLAN offloads, interrupts, the VF driver
//! and the PF side of the PF/VF mailbox.

pub mod model;
pub mod regs;
pub mod ring;
mod vfio_glue;

use std::cell::Cell;
use std::time::{Duration, Instant};

use pkt::{
    Batch, DropCounter, HEADROOM, Mempool, Offloads, PktBuf, Port, PortCaps, PortKind, PortStats,
};

use pkt::wire::MacAddr;
pub use ring::RingMemory;
use ring::{RxRing, RxWriteBack, TxRing, read_barrier, write_barrier};
pub use vfio_glue::{VfioDma, open_vfio};

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
}

impl Default for IgbConfig {
    fn default() -> Self {
        Self {
            rx_ring: 512,
            tx_ring: 512,
            mtu: 1500,
            promiscuous: false,
            link_check_every: 1024,
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
}

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

/// The 82576 PF as a [`Port`]: queue 0 for receive and transmit.
pub struct IgbPort<R: Registers, D: Dma> {
    name: String,
    regs: R,
    dma: D,
    pool: Mempool,
    cfg: IgbConfig,
    mac: [u8; 6],
    max_frame: usize,
    rx: RxRing,
    tx: TxRing,
    /// Frames that did not fit the TX ring, handed back to the caller's batch.
    spill: Batch,
    link_up: bool,
    tx_calls: u32,
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
    tx_copied: u64,
    drops: Drops,
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

fn poll(
    mut done: impl FnMut() -> bool,
    step: &'static str,
    limit: Duration,
) -> Result<(), IgbError> {
    let start = Instant::now();
    loop {
        if done() {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(IgbError::Timeout {
                step,
                ms: limit.as_millis() as u64,
            });
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
        for (what, n) in [("rx_ring", cfg.rx_ring), ("tx_ring", cfg.tx_ring)] {
            if !(8..=4096).contains(&n) || !n.is_multiple_of(8) {
                return Err(IgbError::Config(format!(
                    "{what} = {n}: use a multiple of 8 in 8..=4096"
                )));
            }
        }
        if !(68..=9216).contains(&cfg.mtu) {
            return Err(IgbError::Config(format!(
                "mtu = {}: use 68..=9216",
                cfg.mtu
            )));
        }
        let max_frame = cfg.mtu + FRAME_OVERHEAD;
        let space = pool.buf_size() - HEADROOM;
        let bsize_kb = (space / 1024).min(regs::SRRCTL_BSIZEPACKET_MASK as usize);
        if bsize_kb * 1024 < max_frame {
            return Err(IgbError::Pool(format!(
                "buffers of {} bytes leave {space} bytes after the {HEADROOM}-byte headroom; the device writes whole KiB and a {max_frame}-byte frame needs {} KiB: create the pool with buffers of at least {} bytes",
                pool.buf_size(),
                max_frame.div_ceil(1024),
                max_frame.div_ceil(1024) * 1024 + HEADROOM
            )));
        }
        if pool.capacity() < cfg.rx_ring + 2 * pkt::BATCH_MAX {
            return Err(IgbError::Pool(format!(
                "{} buffers cannot fill a {}-slot receive ring and leave room for batches in flight: create it with at least {}",
                pool.capacity(),
                cfg.rx_ring,
                cfg.rx_ring + 2 * pkt::BATCH_MAX
            )));
        }

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
        regs.write(regs::CTRL, regs.read(regs::CTRL) | regs::CTRL_SLU);
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
        let mut rctl = regs::RCTL_BAM | regs::RCTL_SECRC;
        if cfg.promiscuous {
            rctl |= regs::RCTL_UPE | regs::RCTL_MPE;
        }
        if cfg.mtu > 1500 {
            rctl |= regs::RCTL_LPE;
            regs.write(regs::RLPML, (max_frame + 4) as u32);
        }
        regs.write(regs::RCTL, rctl);
        regs.write(regs::RXCSUM, 0);
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
                IgbError::Pool("ran out of buffers filling the receive ring".into())
            })?;
            let p = buf.reset_for_rx(HEADROOM).as_ptr();
            rx.iovas[slot] = dma
                .iova_of(p)
                .ok_or_else(|| IgbError::Pool("the pool is not mapped for DMA".into()))?;
            rx.bufs[slot] = Some(buf);
            rx.arm(slot);
        }
        let base = rx.mem.iova();
        regs.write(regs::RXDCTL0, 0);
        regs.write(regs::RDBAL0, base as u32);
        regs.write(regs::RDBAH0, (base >> 32) as u32);
        regs.write(regs::RDLEN0, (cfg.rx_ring * ring::DESC_BYTES) as u32);
        regs.write(
            regs::SRRCTL0,
            bsize_kb as u32 | regs::SRRCTL_DESCTYPE_ADV_ONEBUF | regs::SRRCTL_DROP_EN,
        );
        regs.write(regs::RDH0, 0);
        regs.write(regs::RDT0, 0);
        regs.write(regs::RXDCTL0, regs::XDCTL_ENABLE);
        poll(
            || regs.read(regs::RXDCTL0) & regs::XDCTL_ENABLE != 0,
            "receive queue enable",
            Duration::from_millis(100),
        )?;
        write_barrier();
        regs.write(regs::RDT0, rx.tail as u32);
        regs.write(regs::RCTL, rctl | regs::RCTL_RXEN);

        // Transmit Initialization.
        regs.write(
            regs::TCTL,
            regs::TCTL_PSP | regs::TCTL_CT_15 | regs::TCTL_COLD_FD,
        );
        let tx_mem = dma.alloc_ring(cfg.tx_ring * ring::DESC_BYTES)?;
        let tx = TxRing {
            mem: tx_mem,
            bufs: (0..cfg.tx_ring).map(|_| None).collect(),
            clean: 0,
            tail: 0,
        };
        let base = tx.mem.iova();
        regs.write(regs::TXDCTL0, 0);
        regs.write(regs::TDBAL0, base as u32);
        regs.write(regs::TDBAH0, (base >> 32) as u32);
        regs.write(regs::TDLEN0, (cfg.tx_ring * ring::DESC_BYTES) as u32);
        regs.write(regs::TDH0, 0);
        regs.write(regs::TDT0, 0);
        regs.write(regs::TXDCTL0, regs::XDCTL_ENABLE);
        poll(
            || regs.read(regs::TXDCTL0) & regs::XDCTL_ENABLE != 0,
            "transmit queue enable",
            Duration::from_millis(100),
        )?;
        regs.write(regs::TCTL, regs.read(regs::TCTL) | regs::TCTL_EN);

        let link_up = regs.read(regs::STATUS) & regs::STATUS_LU != 0;
        tracing::info!(port = name, mac = ?mac, link_up, rx_ring = cfg.rx_ring, tx_ring = cfg.tx_ring, "82576 initialised");
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
            spill: Batch::new(),
            link_up,
            tx_calls: 0,
            rx_packets: 0,
            rx_bytes: 0,
            tx_packets: 0,
            tx_bytes: 0,
            tx_copied: 0,
            drops: Drops::default(),
            hw: Cell::new(HwStats::default()),
        })
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
        self.tx_copied
    }

    /// Frames posted for transmit whose descriptors the device has not completed.
    pub fn tx_in_flight(&self) -> usize {
        self.tx.in_flight()
    }

    /// Releases transmitted frames the device is done with; returns how many.
    pub fn reclaim_tx(&mut self) -> usize {
        self.tx.reclaim()
    }

    /// The register block (for diagnostics and tests).
    pub fn registers(&self) -> &R {
        &self.regs
    }

    /// Receive descriptor ring (for tests of device misbehaviour).
    pub fn rx_ring(&self) -> &RxRing {
        &self.rx
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
            ("hw_rx_missed", hw.missed),
            ("hw_rx_no_descriptor", hw.no_descriptor),
            ("hw_rx_crc_errors", hw.crc_errors),
            ("hw_rx_oversize", hw.oversize),
        ]
        .into_iter()
        .map(|(name, count)| DropCounter { name, count })
        .collect()
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
                        if let Some(mut full) = self.rx.bufs[slot].replace(fresh) {
                            // Cannot fail: `len <= space` was checked above.
                            let _ = full.set_len(len);
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
            self.regs.write(regs::RDT0, self.rx.tail as u32);
        }
        got
    }

    fn tx_batch(&mut self, batch: &mut Batch) -> usize {
        self.tx.reclaim();
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
            let (buf, iova) = match self.dma.iova_of(buf.data().as_ptr()) {
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
            let need = TxRing::slots_for(iova, len);
            if need > free {
                let _ = spill.push(buf);
                continue;
            }
            self.tx.post(iova, len, buf);
            self.tx_packets += 1;
            self.tx_bytes += len as u64;
            free -= need;
            sent += 1;
        }
        if sent > 0 {
            write_barrier();
            self.regs.write(regs::TDT0, self.tx.tail as u32);
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
            offloads: Offloads::NONE,
        }
    }

    fn stats(&self) -> PortStats {
        tracing::debug!(
            port = %self.name,
            rdh = self.regs.read(regs::RDH0),
            rdt = self.regs.read(regs::RDT0),
            rx_next = self.rx.next,
            tdh = self.regs.read(regs::TDH0),
            tdt = self.regs.read(regs::TDT0),
            tx_clean = self.tx.clean,
            status = format_args!("{:#x}", self.regs.read(regs::STATUS)),
            rctl = format_args!("{:#x}", self.regs.read(regs::RCTL)),
            "82576 ring state"
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

impl<R: Registers, D: Dma> Drop for IgbPort<R, D> {
    fn drop(&mut self) {
        // Stop the device before the rings and buffers it may still access are freed.
        self.regs.write(regs::RCTL, 0);
        self.regs.write(regs::TCTL, 0);
        self.regs.write(regs::RXDCTL0, 0);
        self.regs.write(regs::TXDCTL0, 0);
    }
}

#[cfg(test)]
mod tests;
