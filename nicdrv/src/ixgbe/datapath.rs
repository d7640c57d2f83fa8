//! The batch paths: `rx_batch` drains the receive queues round-robin, `tx_batch`
//! posts frames (zero-copy, gathered tails, checksum contexts) and reclaims what the
//! device completed; the rest of [`Port`] for [`IxgbePort`].

use pkt::{Batch, DropCounter, HEADROOM, Offloads, PktBuf, Port, PortCaps, PortKind, PortStats};

use super::tx_csum::{TxContext, post_checksummed, post_context};
use super::{IxgbePort, TxQueue, regs, rss};
use crate::igb::ring::{RxWriteBack, TxRing, read_barrier, write_barrier};
use crate::igb::{Dma, Registers};

impl<R: Registers, D: Dma> IxgbePort<R, D> {
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
            } else {
                let flags = self.rx_csum_flags(wb.status_error);
                match self.rx[q].take_refilled(slot, len, &self.pool, &self.dma) {
                    Ok(mut full) => {
                        full.meta.offload.flags = flags;
                        let _ = batch.push(full);
                        self.rx_packets += 1;
                        self.rx_bytes += len as u64;
                        self.queue_stats[q].rx_packets += 1;
                        self.queue_stats[q].rx_bytes += len as u64;
                        got += 1;
                    }
                    Err(_) => self.drops.rx_no_buffer += 1,
                }
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
pub(super) fn reclaim_queue(q: &mut TxQueue) -> usize {
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
            // A tail the device cannot reach is joined to the frame.
            match crate::igb::ring::join_unreachable_tail(&mut buf) {
                Ok(false) => {}
                Ok(true) => self.tx_tail_copied += 1,
                Err(_) => {
                    self.drops.tx_tail_no_room += 1;
                    continue;
                }
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
