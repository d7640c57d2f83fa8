//! Bring-up: the configuration check and the 82599 init sequence (datasheet 4.6.3)
//! behind [`IxgbePort::new`], with the guard that stops the queues if it fails.

use std::cell::Cell;
use std::time::Duration;

use pkt::wire::MacAddr;
use pkt::{Batch, HEADROOM, Mempool};

use super::{
    Drops, FRAME_OVERHEAD, HwStats, IxgbeConfig, IxgbeError, IxgbePort, MAX_MTU, QueueStats,
    RxChecksumStats, TxQueue, pool_buffer_size, regs, rss, sriov,
};
use crate::igb::ring::{self, RxRing, TxRing, write_barrier};
use crate::igb::{Dma, Registers};

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

/// The error for a receive ring (`what`) that could not be filled with buffers.
pub(super) fn fill_error(e: ring::RxFillError, what: &str) -> IxgbeError {
    IxgbeError::Pool(match e {
        ring::RxFillError::NoBuffer => format!("ran out of buffers filling the {what}"),
        ring::RxFillError::Unmapped => {
            "the pool is not mapped for DMA: map it whole first".to_owned()
        }
    })
}

/// Polls `done` until it holds or `limit` passes (bounded: every wait in init ends).
pub(super) fn poll(
    done: impl FnMut() -> bool,
    step: &'static str,
    limit: Duration,
) -> Result<(), IxgbeError> {
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
pub(super) fn check_config(
    cfg: &IxgbeConfig,
    pool: &Mempool,
) -> Result<(usize, usize), IxgbeError> {
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
}
