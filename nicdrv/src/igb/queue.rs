//! One receive and one transmit queue on advanced descriptors, shared by the PF and VF
//! drivers: setup in the datasheet's order and the batch paths. The two functions
//! differ only in where the queue's registers sit ([`QueueRegs`]).

use std::time::Duration;

use pkt::{Batch, DropCounter, HEADROOM, Mempool, PktBuf};

use super::hw_offload::{self, RxVerdict, TxContext, TxOffloadError, TxPlan};
use super::ring::{self, RxRing, RxWriteBack, TxRing, read_barrier, write_barrier};
use super::{Dma, IgbError, Registers, poll, regs};

/// Longest frame with an external tail `tx_batch` takes (a TSO frame; others are
/// held to the MTU): virtio-net's largest GSO frame, 64 KiB of IP packet behind an
/// Ethernet header with a tag. Unlike a linear frame it need not fit a pool buffer.
pub const TAILED_FRAME_MAX: usize = 65_536 + 18;

/// Byte offsets of one queue's registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueRegs {
    /// RDBAL.
    pub rdbal: u32,
    /// RDBAH.
    pub rdbah: u32,
    /// RDLEN.
    pub rdlen: u32,
    /// SRRCTL.
    pub srrctl: u32,
    /// RDH.
    pub rdh: u32,
    /// RDT.
    pub rdt: u32,
    /// RXDCTL.
    pub rxdctl: u32,
    /// TDBAL.
    pub tdbal: u32,
    /// TDBAH.
    pub tdbah: u32,
    /// TDLEN.
    pub tdlen: u32,
    /// TDH.
    pub tdh: u32,
    /// TDT.
    pub tdt: u32,
    /// TXDCTL.
    pub txdctl: u32,
}

impl QueueRegs {
    /// PF queue `n` (0..=15) in the 0x0C000/0x0E000 blocks.
    pub fn pf(n: u32) -> Self {
        let q = |base| regs::queue_reg(base, n);
        Self {
            rdbal: q(regs::RDBAL0),
            rdbah: q(regs::RDBAH0),
            rdlen: q(regs::RDLEN0),
            srrctl: q(regs::SRRCTL0),
            rdh: q(regs::RDH0),
            rdt: q(regs::RDT0),
            rxdctl: q(regs::RXDCTL0),
            tdbal: q(regs::TDBAL0),
            tdbah: q(regs::TDBAH0),
            tdlen: q(regs::TDLEN0),
            tdh: q(regs::TDH0),
            tdt: q(regs::TDT0),
            txdctl: q(regs::TXDCTL0),
        }
    }

    /// Queue 0 of a VF, in the VF's own BAR0.
    pub const fn vf() -> Self {
        use regs::vf;
        Self {
            rdbal: vf::RDBAL,
            rdbah: vf::RDBAH,
            rdlen: vf::RDLEN,
            srrctl: vf::SRRCTL,
            rdh: vf::RDH,
            rdt: vf::RDT,
            rxdctl: vf::RXDCTL,
            tdbal: vf::TDBAL,
            tdbah: vf::TDBAH,
            tdlen: vf::TDLEN,
            tdh: vf::TDH,
            tdt: vf::TDT,
            txdctl: vf::TXDCTL,
        }
    }
}

/// Drop counters of the batch paths, in the order [`QueuePair::drop_counters`] lists them.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Drops {
    pub rx_no_buffer: u64,
    pub rx_bad_descriptor: u64,
    pub rx_frame_errors: u64,
    pub rx_unposted_dd: u64,
    pub tx_link_down: u64,
    pub tx_bad_length: u64,
    pub tx_no_buffer: u64,
    pub tx_bad_offload: u64,
    /// Frames whose meta carried a tag to insert on a queue without VLAN insertion.
    pub tx_bad_vlan: u64,
    /// Frames whose external tail the device cannot reach and whose buffer has no
    /// room to take a copy of it.
    pub tx_tail_no_room: u64,
}

/// What the device's offloads did on one queue.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OffloadStats {
    /// Received frames whose checksums the device checked and found good (delivered
    /// with `DATA_VALID`).
    pub rx_csum_good: u64,
    /// Received frames the device found a bad checksum in (delivered unmarked, so the
    /// stack checks, drops and counts them).
    pub rx_csum_bad: u64,
    /// Received frames the device did not check (not TCP/UDP over IP, fragments).
    pub rx_csum_unchecked: u64,
    /// Frames sent with the device inserting their L4 checksum.
    pub tx_csum: u64,
    /// Frames the device segmented (TSO).
    pub tx_tso: u64,
    /// Checksums completed in software because the device could not describe the frame.
    pub tx_sw_csum: u64,
    /// Context descriptors written.
    pub tx_contexts: u64,
    /// Received frames whose 802.1Q tag the device stripped (status VP), delivered
    /// with the tag in [`pkt::Meta::vlan`].
    pub rx_vlan_stripped: u64,
    /// Received frames with status VP on a queue that did not ask for stripping (a
    /// VF under a port VLAN, or a misbehaving device): delivered without a tag in
    /// their meta, as before stripping existed.
    pub rx_vlan_unrequested: u64,
    /// Frames sent with the device inserting their [`pkt::Meta::vlan`] tag (DCMD.VLE).
    pub tx_vlan_inserted: u64,
    /// Frames sent as a gather: the pool buffer and an external tail the device read
    /// in place ([`pkt::ExtSeg::dma`]), no copy.
    pub tx_zero_copy: u64,
    /// Frames whose external tail was copied into the pool buffer first (no device
    /// address, headers reaching into the tail, or a buffer from another pool).
    pub tx_tail_copied: u64,
}

/// The queue pair's rings, frames and counters.
pub(super) struct QueuePair {
    pub regs: QueueRegs,
    pub rx: RxRing,
    pub tx: TxRing,
    /// Frames that did not fit the TX ring, handed back to the caller's batch.
    spill: Batch,
    pub max_frame: usize,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_copied: u64,
    pub drops: Drops,
    /// Checksum and segmentation offloads on (the PF; the VF driver runs without).
    pub hw_offload: bool,
    /// Longest frame `tx_batch` takes: `max_frame`, or with offloads a TSO frame as
    /// long as a pool buffer holds.
    pub tx_max: usize,
    /// 802.1Q offload on: the device strips tags on receive (the caller set CTRL.VME)
    /// and inserts [`pkt::Meta::vlan`] tags on transmit.
    pub vlan: bool,
    /// The context the device holds in slot 0, if one was written.
    tx_ctx: Option<TxContext>,
    /// TX slots holding a context descriptor (no write-back of their own).
    ctx_slots: Vec<bool>,
    pub offload: OffloadStats,
}

impl QueuePair {
    /// Checks ring sizes and the pool against `mtu`; returns (max frame, SRRCTL
    /// buffer size in KiB).
    pub fn check(
        rx_ring: usize,
        tx_ring: usize,
        mtu: usize,
        pool: &Mempool,
    ) -> Result<(usize, usize), IgbError> {
        for (what, n) in [("rx_ring", rx_ring), ("tx_ring", tx_ring)] {
            if !(8..=4096).contains(&n) || !n.is_multiple_of(8) {
                return Err(IgbError::Config(format!(
                    "{what} = {n}: use a multiple of 8 in 8..=4096"
                )));
            }
        }
        if !(68..=9216).contains(&mtu) {
            return Err(IgbError::Config(format!("mtu = {mtu}: use 68..=9216")));
        }
        let max_frame = mtu + super::FRAME_OVERHEAD;
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
        if pool.capacity() < rx_ring + 2 * pkt::BATCH_MAX {
            return Err(IgbError::Pool(format!(
                "{} buffers cannot fill a {rx_ring}-slot receive ring and leave room for batches in flight: create it with at least {}",
                pool.capacity(),
                rx_ring + 2 * pkt::BATCH_MAX
            )));
        }
        Ok((max_frame, bsize_kb))
    }

    /// Fills and enables the receive queue (datasheet "Receive Initialization", the
    /// per-queue steps), then the transmit queue. The caller enables the receiver and
    /// transmitter (RCTL/TCTL) where the function has them.
    #[allow(clippy::too_many_arguments)]
    pub fn setup<R: Registers, D: Dma>(
        qr: QueueRegs,
        r: &R,
        dma: &mut D,
        pool: &Mempool,
        rx_ring: usize,
        tx_ring: usize,
        max_frame: usize,
        bsize_kb: usize,
    ) -> Result<Self, IgbError> {
        let rx_mem = dma.alloc_ring(rx_ring * ring::DESC_BYTES)?;
        let rx = RxRing::filled(rx_mem, rx_ring, pool, dma).map_err(|e| {
            IgbError::Pool(
                match e {
                    ring::RxFillError::NoBuffer => "ran out of buffers filling the receive ring",
                    ring::RxFillError::Unmapped => "the pool is not mapped for DMA",
                }
                .into(),
            )
        })?;
        let base = rx.mem.iova();
        r.write(qr.rxdctl, 0);
        r.write(qr.rdbal, base as u32);
        r.write(qr.rdbah, (base >> 32) as u32);
        r.write(qr.rdlen, (rx_ring * ring::DESC_BYTES) as u32);
        r.write(
            qr.srrctl,
            bsize_kb as u32 | regs::SRRCTL_DESCTYPE_ADV_ONEBUF | regs::SRRCTL_DROP_EN,
        );
        r.write(qr.rdh, 0);
        r.write(qr.rdt, 0);
        r.write(qr.rxdctl, regs::XDCTL_ENABLE);
        poll(
            || r.read(qr.rxdctl) & regs::XDCTL_ENABLE != 0,
            "receive queue enable",
            Duration::from_millis(100),
        )?;
        write_barrier();
        r.write(qr.rdt, rx.tail as u32);

        let tx_mem = dma.alloc_ring(tx_ring * ring::DESC_BYTES)?;
        let tx = TxRing {
            mem: tx_mem,
            bufs: (0..tx_ring).map(|_| None).collect(),
            clean: 0,
            tail: 0,
        };
        let base = tx.mem.iova();
        r.write(qr.txdctl, 0);
        r.write(qr.tdbal, base as u32);
        r.write(qr.tdbah, (base >> 32) as u32);
        r.write(qr.tdlen, (tx_ring * ring::DESC_BYTES) as u32);
        r.write(qr.tdh, 0);
        r.write(qr.tdt, 0);
        r.write(qr.txdctl, regs::XDCTL_ENABLE);
        poll(
            || r.read(qr.txdctl) & regs::XDCTL_ENABLE != 0,
            "transmit queue enable",
            Duration::from_millis(100),
        )?;
        Ok(Self {
            regs: qr,
            rx,
            tx,
            spill: Batch::new(),
            max_frame,
            rx_packets: 0,
            rx_bytes: 0,
            tx_packets: 0,
            tx_bytes: 0,
            tx_copied: 0,
            drops: Drops::default(),
            hw_offload: false,
            tx_max: max_frame,
            vlan: false,
            tx_ctx: None,
            ctx_slots: vec![false; tx_ring],
            offload: OffloadStats::default(),
        })
    }

    /// Turns on checksum offload on receive (the caller set RXCSUM) and checksum and
    /// segmentation offload on transmit, for TSO frames up to what a buffer of `pool`
    /// holds.
    pub fn enable_offloads(&mut self, pool: &Mempool) {
        self.hw_offload = true;
        self.tx_max = (pool.buf_size() - HEADROOM).max(self.max_frame);
    }

    /// Releases transmitted frames the device is done with, oldest first; returns how
    /// many descriptors. A context descriptor is done when the data descriptor after
    /// it is (the device writes DD back only where RS was set).
    pub fn reclaim(&mut self) -> usize {
        let size = self.tx.size();
        let done = |tx: &TxRing, slot: usize| {
            (tx.mem.read(slot, 1) >> 32) as u32 & regs::desc::TX_STATUS_DD != 0
        };
        let mut n = 0;
        while self.tx.clean != self.tx.tail {
            let slot = self.tx.clean;
            let next = (slot + 1) % size;
            if self.ctx_slots[slot] {
                if next == self.tx.tail || !done(&self.tx, next) {
                    break;
                }
                self.ctx_slots[slot] = false;
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

    /// Stops both queues (before their memory is freed).
    pub fn stop<R: Registers>(&self, r: &R) {
        r.write(self.regs.rxdctl, 0);
        r.write(self.regs.txdctl, 0);
    }

    /// The drop counters with their names.
    pub fn drop_counters(&self) -> [DropCounter; 10] {
        let d = self.drops;
        [
            ("rx_no_buffer", d.rx_no_buffer),
            ("rx_bad_descriptor", d.rx_bad_descriptor),
            ("rx_frame_errors", d.rx_frame_errors),
            ("rx_unposted_dd", d.rx_unposted_dd),
            ("tx_link_down", d.tx_link_down),
            ("tx_bad_length", d.tx_bad_length),
            ("tx_no_buffer", d.tx_no_buffer),
            ("tx_bad_offload", d.tx_bad_offload),
            ("tx_bad_vlan", d.tx_bad_vlan),
            ("tx_tail_no_room", d.tx_tail_no_room),
        ]
        .map(|(name, count)| DropCounter { name, count })
    }

    /// Moves completed receive descriptors into `batch`; one RDT write per call.
    pub fn rx_batch<R: Registers, D: Dma>(
        &mut self,
        r: &R,
        dma: &D,
        pool: &Mempool,
        batch: &mut Batch,
    ) -> usize {
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
            } else {
                let flags = if self.hw_offload {
                    self.rx_csum_flags(wb.status_error, self.rx.mem.read(slot, 0) as u32)
                } else {
                    0
                };
                let vlan = self.rx_vlan(wb);
                match self.rx.take_refilled(slot, len, pool, dma) {
                    Ok(mut full) => {
                        full.meta.offload.flags = flags;
                        full.meta.vlan = vlan;
                        let _ = batch.push(full);
                        self.rx_packets += 1;
                        self.rx_bytes += len as u64;
                        got += 1;
                    }
                    Err(_) => self.drops.rx_no_buffer += 1,
                }
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
            r.write(self.regs.rdt, self.rx.tail as u32);
        }
        got
    }

    /// Posts `batch` (link checked by the caller); frames that do not fit stay in
    /// `batch`, in order. One TDT write per call.
    ///
    /// A frame with an external tail the device can reach ([`pkt::ExtSeg::dma`]) goes
    /// out as a gather: the pool buffer's descriptors, then the tail's, EOP on the
    /// last, the frame (and so the tail) held until the device wrote that one back. A
    /// tail without a device address is copied into the buffer first.
    pub fn tx_batch<R: Registers, D: Dma>(
        &mut self,
        r: &R,
        dma: &D,
        pool: &Mempool,
        batch: &mut Batch,
    ) -> usize {
        self.reclaim();
        let mut free = self.tx.free();
        let mut sent = 0;
        let mut spill = std::mem::replace(&mut self.spill, Batch::unallocated());
        for mut buf in batch.drain() {
            // Once one frame waits, every later one waits too: order is kept.
            if free == 0 || !spill.is_empty() {
                let _ = spill.push(buf);
                continue;
            }
            // A tail the device cannot reach is joined to the frame.
            match crate::igb::ring::join_unreachable_tail(&mut buf) {
                Ok(false) => {}
                Ok(true) => self.offload.tx_tail_copied += 1,
                Err(_) => {
                    self.drops.tx_tail_no_room += 1;
                    continue;
                }
            }
            let len = buf.frame_len();
            let max = if buf.is_linear() {
                self.tx_max
            } else {
                self.tx_max.max(TAILED_FRAME_MAX)
            };
            if len == 0 || len > max {
                self.drops.tx_bad_length += 1;
                continue;
            }
            let tag = buf.meta.vlan;
            if tag.is_some() && !self.vlan {
                // Sending it untagged would put it on the wrong VLAN.
                self.drops.tx_bad_vlan += 1;
                continue;
            }
            // The inserted tag takes 4 of the frame's bytes on the wire.
            let limit = self.max_frame - if tag.is_some() { 4 } else { 0 };
            let (mut buf, iova) = match dma.iova_of(buf.data().as_ptr()) {
                Some(iova) => (buf, iova),
                None => match self.copy_into_pool(pool, &buf) {
                    Some(own) => match dma.iova_of(own.data().as_ptr()) {
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
            let Some(plan) = self.plan_frame(&mut buf, limit) else {
                continue;
            };
            let ctx = match (plan, tag) {
                (TxPlan::Plain, None) => None,
                // Only the VLAN field counts for a plain frame: any context holding
                // the tag serves.
                (TxPlan::Plain, Some(t)) => Some(match self.tx_ctx {
                    Some(c) if c.vlan == t => c,
                    _ => TxContext::vlan_only(t),
                }),
                (TxPlan::Checksum(c) | TxPlan::Segment(c), t) => Some(TxContext {
                    vlan: t.unwrap_or(0),
                    ..c
                }),
            };
            let vle = if tag.is_some() {
                regs::desc::TX_CMD_VLE
            } else {
                0
            };
            let new_ctx = ctx.is_some() && ctx != self.tx_ctx;
            // Planning may have joined the tail; what is left is reachable.
            let tail = buf.ext().and_then(|e| Some((e.dma()?, e.len())));
            let head_len = buf.len();
            let slots = match tail {
                None => TxRing::pages_for(iova, len),
                Some((at, tail_len)) => TxRing::gather_slots(iova, head_len, at, tail_len),
            };
            let need = slots + usize::from(new_ctx);
            if need >= self.tx.size() {
                // Could never fit, even in an empty ring.
                self.drops.tx_bad_length += 1;
                continue;
            }
            if need > free {
                let _ = spill.push(buf);
                continue;
            }
            if let Some(c) = ctx.filter(|_| new_ctx) {
                let slot = self.tx.tail;
                self.tx.post_context(c.descriptor());
                self.ctx_slots[slot] = true;
                self.tx_ctx = ctx;
                self.offload.tx_contexts += 1;
            }
            // PAYLEN counts the whole frame, tail included.
            let payload = (len as u32) << regs::desc::TX_PAYLEN_SHIFT;
            let (cmd, olinfo) = match plan {
                TxPlan::Plain => {
                    if buf.meta.offload.flags & offload::vnet_hdr::NEEDS_CSUM != 0 {
                        // A layout the device cannot describe (plan checked the
                        // request is sound, and the frame is linear then): complete
                        // it here.
                        let mut meta = buf.meta.offload;
                        if offload::checksum::complete_if_needed(buf.data_mut(), &mut meta).is_ok()
                        {
                            buf.meta.offload = meta;
                            self.offload.tx_sw_csum += 1;
                        }
                    }
                    (vle, payload)
                }
                TxPlan::Checksum(_) => {
                    self.offload.tx_csum += 1;
                    (vle, payload | regs::desc::TX_OLINFO_TXSM)
                }
                TxPlan::Segment(c) => {
                    self.offload.tx_tso += 1;
                    hw_offload::prepare_segmentation(&mut buf, &c);
                    let mut olinfo = ((len - c.header_len()) as u32) << regs::desc::TX_PAYLEN_SHIFT
                        | regs::desc::TX_OLINFO_TXSM;
                    if c.ipv4 {
                        olinfo |= regs::desc::TX_OLINFO_IXSM;
                    }
                    (regs::desc::TX_CMD_TSE | vle, olinfo)
                }
            };
            match tail {
                None => self.tx.post_pages(iova, len, buf, cmd, olinfo),
                Some((at, tail_len)) => {
                    self.offload.tx_zero_copy += 1;
                    self.tx
                        .post_gather(iova, head_len, at, tail_len, buf, cmd, olinfo);
                }
            }
            self.tx_packets += 1;
            self.tx_bytes += len as u64;
            self.offload.tx_vlan_inserted += u64::from(tag.is_some());
            free -= need;
            sent += 1;
        }
        if sent > 0 {
            write_barrier();
            r.write(self.regs.tdt, self.tx.tail as u32);
        }
        // Frames that did not fit go back to the caller, in order; the drained batch
        // (empty, storage kept) becomes the next spill buffer.
        std::mem::swap(batch, &mut spill);
        self.spill = spill;
        sent
    }

    /// How `buf` goes out on this queue, with frames of at most `limit` bytes; `None`
    /// for a frame to drop (counted). A tailed frame whose headers or checksum field
    /// reach into the tail, so that the device cannot be told about them or software
    /// must write into them, is joined first (counted in `tx_tail_copied`).
    #[inline]
    fn plan_frame(&mut self, buf: &mut PktBuf, limit: usize) -> Option<TxPlan> {
        if !self.hw_offload {
            if buf.frame_len() > limit {
                self.drops.tx_bad_length += 1;
                return None;
            }
            return Some(TxPlan::Plain);
        }
        let mut planned = hw_offload::plan(buf, limit);
        let sw_csum = planned == Ok(TxPlan::Plain)
            && buf.meta.offload.flags & offload::vnet_hdr::NEEDS_CSUM != 0;
        if !buf.is_linear() && (sw_csum || planned == Err(TxOffloadError::Unsupported)) {
            if buf.linearize().is_err() {
                self.drops.tx_tail_no_room += 1;
                return None;
            }
            self.offload.tx_tail_copied += 1;
            planned = hw_offload::plan(buf, limit);
        }
        match planned {
            Ok(p) => Some(p),
            Err(TxOffloadError::TooLong) => {
                self.drops.tx_bad_length += 1;
                None
            }
            Err(TxOffloadError::Bad | TxOffloadError::Unsupported) => {
                self.drops.tx_bad_offload += 1;
                None
            }
        }
    }

    /// The checksum flags for a received frame from its write-back, counted.
    #[inline]
    fn rx_csum_flags(&mut self, status_error: u32, pkt_info: u32) -> u8 {
        match hw_offload::rx_verdict(status_error, pkt_info) {
            RxVerdict::Good => {
                self.offload.rx_csum_good += 1;
                offload::vnet_hdr::DATA_VALID
            }
            RxVerdict::Bad => {
                self.offload.rx_csum_bad += 1;
                0
            }
            RxVerdict::Unchecked => {
                self.offload.rx_csum_unchecked += 1;
                0
            }
        }
    }

    /// The tag a write-back carries for the frame's meta, counted: the stripped TCI
    /// when the device set VP on a queue that asked for stripping.
    #[inline]
    fn rx_vlan(&mut self, wb: RxWriteBack) -> Option<u16> {
        if wb.status_error & regs::desc::RX_STATUS_VP == 0 {
            return None;
        }
        if self.vlan {
            self.offload.rx_vlan_stripped += 1;
            Some(wb.vlan)
        } else {
            self.offload.rx_vlan_unrequested += 1;
            None
        }
    }

    /// Drops a whole batch because the link is down.
    pub fn drop_link_down(&mut self, batch: &mut Batch) {
        self.drops.tx_link_down += batch.len() as u64;
        batch.clear();
    }

    /// Takes a frame from another pool into one of ours (the device can reach only
    /// our mapping).
    #[cold]
    fn copy_into_pool(&mut self, pool: &Mempool, buf: &PktBuf) -> Option<PktBuf> {
        let mut own = pool.alloc()?;
        own.extend_from_slice(buf.data()).ok()?;
        if let Some(ext) = buf.ext() {
            // The whole frame comes over; the tail goes back when `buf` is dropped.
            own.extend_from_slice(ext.as_slice()).ok()?;
            self.offload.tx_tail_copied += 1;
        }
        own.meta = buf.meta;
        self.tx_copied += 1;
        Some(own)
    }
}
