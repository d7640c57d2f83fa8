//! A poll-mode driver for an 82599 virtual function (8086:10ed) as a [`Port`]: the
//! VF side of the PF mailbox (reset, MAC address, API version, queue counts) and one
//! receive and one transmit queue on advanced descriptors (82599 datasheet 7.10.2,
//! registers in [`super::regs::sriov::vf`]).
//!
//! It talks to whichever PF driver owns the device: Linux ixgbe, or vnetp's own
//! [`super::mailbox::PfMailbox`] (run by the SR-IOV PF port from its `rx_batch`).
//! Tested against the model's VF register block ([`super::model::IxgbeVfModel`]) with
//! our PF answering; it has not run on an 82599. `vnetp run` does not use it: a `vf`
//! interface hands the VF to a guest, whose own driver (Linux ixgbevf) talks to our PF.
//!
//! Not here: checksum offload, multiple queues, interrupts, and the PF's unsolicited
//! messages (PF_CONTROL after a PF reset: the port then needs re-creating).

use std::time::Duration;

use pkt::wire::MacAddr;
use pkt::{Batch, DropCounter, HEADROOM, Mempool, Offloads, Port, PortCaps, PortKind, PortStats};

use super::mailbox::{WORDS, msg};
use super::regs::{self, sriov::vf as vr};
use super::{IxgbeError, poll};
use crate::igb::mailbox::mac_from_words;
use crate::igb::ring::{self, RxRing, RxWriteBack, TxRing, read_barrier, write_barrier};
use crate::igb::{Dma, Registers};

/// Per-queue register offsets inside a VF queue's 0x40-byte block (the PF's layout).
mod block {
    pub const BAL: u32 = 0x00;
    pub const BAH: u32 = 0x04;
    pub const LEN: u32 = 0x08;
    pub const HEAD: u32 = 0x10;
    pub const SRRCTL: u32 = 0x14;
    pub const TAIL: u32 = 0x18;
    pub const CTL: u32 = 0x28;
}

/// How to set up the VF port.
#[derive(Debug, Clone)]
pub struct IxgbeVfConfig {
    /// Receive descriptors (multiple of 8, 8..=4096).
    pub rx_ring: usize,
    /// Transmit descriptors (multiple of 8, 8..=4096).
    pub tx_ring: usize,
    /// Largest L3 payload; above 1500 the VF asks the PF for long frames (SET_LPE).
    pub mtu: usize,
    /// How long one mailbox exchange may take before the PF counts as absent.
    pub mailbox_timeout: Duration,
    /// Read VFLINKS every this many `tx_batch` calls.
    pub link_check_every: u32,
}

impl Default for IxgbeVfConfig {
    fn default() -> Self {
        Self {
            rx_ring: 256,
            tx_ring: 256,
            mtu: 1500,
            mailbox_timeout: Duration::from_millis(500),
            link_check_every: 1024,
        }
    }
}

/// The VF's side of the mailbox. VFMAILBOX's PFSTS, PFACK and RSTD clear when read,
/// so every read is latched here and consumed by whoever waits for that bit.
#[derive(Debug, Default)]
struct VfMailbox {
    latched: u32,
}

impl VfMailbox {
    fn read<R: Registers>(&mut self, r: &R) -> u32 {
        let v = r.read(vr::VFMAILBOX);
        self.latched |= v & (vr::VFMAILBOX_PFSTS | vr::VFMAILBOX_PFACK | vr::VFMAILBOX_RSTD);
        v
    }

    fn take<R: Registers>(&mut self, r: &R, bit: u32) -> bool {
        self.read(r);
        let hit = self.latched & bit != 0;
        self.latched &= !bit;
        hit
    }

    fn lock<R: Registers>(&mut self, r: &R, limit: Duration) -> Result<(), IxgbeError> {
        poll(
            || {
                r.write(vr::VFMAILBOX, vr::VFMAILBOX_VFU);
                self.read(r) & vr::VFMAILBOX_VFU != 0
            },
            "VF mailbox lock (VFMAILBOX.VFU)",
            limit,
        )
    }

    /// Sends `words` and waits for the PF's acknowledgement and reply (7.10.2.9).
    fn exchange<R: Registers>(
        &mut self,
        r: &R,
        words: &[u32],
        limit: Duration,
    ) -> Result<[u32; WORDS], IxgbeError> {
        self.latched &= !(vr::VFMAILBOX_PFSTS | vr::VFMAILBOX_PFACK);
        self.lock(r, limit)?;
        for i in 0..WORDS {
            r.write(
                vr::VFMBMEM + 4 * i as u32,
                words.get(i).copied().unwrap_or(0),
            );
        }
        r.write(vr::VFMAILBOX, vr::VFMAILBOX_REQ);
        poll(
            || self.take(r, vr::VFMAILBOX_PFACK),
            "PF acknowledgement (VFMAILBOX.PFACK)",
            limit,
        )?;
        poll(
            || self.take(r, vr::VFMAILBOX_PFSTS),
            "PF reply (VFMAILBOX.PFSTS)",
            limit,
        )?;
        self.lock(r, limit)?;
        let mut reply = [0u32; WORDS];
        for (i, w) in reply.iter_mut().enumerate() {
            *w = r.read(vr::VFMBMEM + 4 * i as u32);
        }
        r.write(vr::VFMAILBOX, vr::VFMAILBOX_ACK);
        Ok(reply)
    }
}

/// Drop counters of the VF port.
#[derive(Debug, Default, Clone, Copy)]
struct VfDrops {
    rx_no_buffer: u64,
    rx_bad_descriptor: u64,
    rx_frame_errors: u64,
    rx_unposted_dd: u64,
    tx_link_down: u64,
    tx_bad_length: u64,
    tx_no_buffer: u64,
}

/// An 82599 VF as a [`Port`]: its queue 0 for receive and transmit.
pub struct IxgbeVfPort<R: Registers, D: Dma> {
    name: String,
    regs: R,
    dma: D,
    pool: Mempool,
    cfg: IxgbeVfConfig,
    mac: [u8; 6],
    api: u32,
    queues: Option<(u32, u32)>,
    max_frame: usize,
    rx: RxRing,
    tx: TxRing,
    spill: Batch,
    link_up: bool,
    tx_calls: u32,
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
    drops: VfDrops,
}

impl<R: Registers, D: Dma> std::fmt::Debug for IxgbeVfPort<R, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IxgbeVfPort")
            .field("name", &self.name)
            .field("mac", &MacAddr(self.mac))
            .field("api", &self.api)
            .finish()
    }
}

fn mailbox_refused(what: &str, hint: &str) -> IxgbeError {
    IxgbeError::Config(format!("82599 VF: the PF refused {what}: {hint}"))
}

impl<R: Registers, D: Dma> IxgbeVfPort<R, D> {
    /// Resets the VF (VFCTRL.RST, then RSTD), asks the PF for its MAC (VF_RESET),
    /// negotiates API 1.1 (falling back to 1.0) and the queue counts, asks for long
    /// frames above MTU 1500, and starts queue 0.
    pub fn new(
        name: &str,
        regs: R,
        mut dma: D,
        pool: Mempool,
        cfg: IxgbeVfConfig,
    ) -> Result<Self, IxgbeError> {
        let pf_cfg = super::IxgbeConfig {
            rx_ring: cfg.rx_ring,
            tx_ring: cfg.tx_ring,
            mtu: cfg.mtu,
            ..super::IxgbeConfig::default()
        };
        let (max_frame, bsize_kb) = super::init::check_config(&pf_cfg, &pool)?;
        let limit = cfg.mailbox_timeout;
        let mut mbx = VfMailbox::default();

        regs.write(vr::VFCTRL, vr::VFCTRL_RST);
        poll(
            || mbx.take(&regs, vr::VFMAILBOX_RSTD),
            "VF reset (VFMAILBOX.RSTD)",
            Duration::from_millis(100),
        )?;
        let reply = mbx.exchange(&regs, &[msg::VF_RESET], limit)?;
        if reply[0] != msg::VF_RESET | msg::ACK {
            return Err(mailbox_refused(
                "the VF reset",
                "the PF gave this VF no MAC address; assign one (vnetp: a `vf` interface with a mac; Linux: `ip link set <pf> vf <n> mac <mac>`) and retry",
            ));
        }
        let mac = mac_from_words(reply[1], reply[2]);
        if mac == [0; 6] || mac[0] & 1 == 1 {
            return Err(mailbox_refused(
                "a usable MAC address",
                "the reset reply carried a blank or multicast address; assign the VF a unicast MAC on the PF",
            ));
        }
        let mut api = msg::API_10;
        let reply = mbx.exchange(&regs, &[msg::API_NEGOTIATE, msg::API_11], limit)?;
        if reply[0] & msg::ACK != 0 {
            api = msg::API_11;
        }
        let mut queues = None;
        if api == msg::API_11 {
            let reply = mbx.exchange(&regs, &[msg::GET_QUEUES], limit)?;
            if reply[0] & msg::ACK != 0 {
                queues = Some((reply[1], reply[2]));
            }
        }
        if cfg.mtu > 1500 {
            let reply = mbx.exchange(&regs, &[msg::SET_LPE, (max_frame + 4) as u32], limit)?;
            if reply[0] & msg::ACK == 0 {
                return Err(mailbox_refused(
                    "long frames (SET_LPE)",
                    "use MTU 1500 on this VF, or allow jumbo frames on the PF",
                ));
            }
        }

        // Receive queue 0 (7.10.2.x, the PF's 4.6.7 steps on the VF's registers).
        let rxq = |reg| vr::vf_rx(0, reg);
        let txq = |reg| vr::vf_tx(0, reg);
        let rx_mem = dma.alloc_ring(cfg.rx_ring * ring::DESC_BYTES)?;
        let rx = RxRing::filled(rx_mem, cfg.rx_ring, &pool, &dma)
            .map_err(|e| super::init::fill_error(e, "VF receive ring"))?;
        let base = rx.mem.iova();
        regs.write(rxq(block::CTL), 0);
        regs.write(rxq(block::BAL), base as u32);
        regs.write(rxq(block::BAH), (base >> 32) as u32);
        regs.write(rxq(block::LEN), (cfg.rx_ring * ring::DESC_BYTES) as u32);
        regs.write(
            rxq(block::SRRCTL),
            bsize_kb as u32 | regs::SRRCTL_DESCTYPE_ADV_ONEBUF | regs::SRRCTL_DROP_EN,
        );
        regs.write(rxq(block::HEAD), 0);
        regs.write(rxq(block::TAIL), 0);
        regs.write(rxq(block::CTL), regs::XDCTL_ENABLE);
        poll(
            || regs.read(rxq(block::CTL)) & regs::XDCTL_ENABLE != 0,
            "VF receive queue enable (VFRXDCTL.ENABLE)",
            Duration::from_millis(100),
        )?;
        write_barrier();
        regs.write(rxq(block::TAIL), rx.tail as u32);

        let tx = TxRing {
            mem: dma.alloc_ring(cfg.tx_ring * ring::DESC_BYTES)?,
            bufs: (0..cfg.tx_ring).map(|_| None).collect(),
            clean: 0,
            tail: 0,
        };
        let base = tx.mem.iova();
        regs.write(txq(block::CTL), 0);
        regs.write(txq(block::BAL), base as u32);
        regs.write(txq(block::BAH), (base >> 32) as u32);
        regs.write(txq(block::LEN), (cfg.tx_ring * ring::DESC_BYTES) as u32);
        regs.write(txq(block::HEAD), 0);
        regs.write(txq(block::TAIL), 0);
        regs.write(txq(block::CTL), regs::TXDCTL_THRESH | regs::XDCTL_ENABLE);
        if let Err(e) = poll(
            || regs.read(txq(block::CTL)) & regs::XDCTL_ENABLE != 0,
            "VF transmit queue enable (VFTXDCTL.ENABLE)",
            Duration::from_millis(100),
        ) {
            // The receive queue is live: stop it before its ring is freed.
            regs.write(rxq(block::CTL), 0);
            regs.write(txq(block::CTL), 0);
            return Err(e);
        }
        let link_up = regs.read(vr::VFLINKS) & regs::LINKS_UP != 0;
        tracing::info!(port = name, mac = %MacAddr(mac), api, ?queues, link_up, "82599 VF initialised");
        Ok(Self {
            name: name.to_owned(),
            regs,
            dma,
            pool,
            cfg,
            mac,
            api,
            queues,
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
            drops: VfDrops::default(),
        })
    }

    /// The MAC address the PF assigned.
    pub fn mac(&self) -> MacAddr {
        MacAddr(self.mac)
    }

    /// The negotiated mailbox API ([`msg::API_10`] or [`msg::API_11`]).
    pub fn api(&self) -> u32 {
        self.api
    }

    /// Transmit and receive queue counts from GET_QUEUES (API 1.1 only).
    pub fn queues(&self) -> Option<(u32, u32)> {
        self.queues
    }

    /// Reads VFLINKS.Link_Up now and remembers it.
    pub fn refresh_link(&mut self) -> bool {
        self.link_up = self.regs.read(vr::VFLINKS) & regs::LINKS_UP != 0;
        self.link_up
    }

    /// Descriptors posted for transmit that the device has not completed.
    pub fn tx_in_flight(&self) -> usize {
        self.tx.in_flight()
    }

    /// Releases transmitted frames the device is done with; returns how many.
    pub fn reclaim_tx(&mut self) -> usize {
        let mut n = 0;
        while self.tx.clean != self.tx.tail
            && (self.tx.mem.read(self.tx.clean, 1) >> 32) as u32 & regs::desc::TX_STATUS_DD != 0
        {
            self.tx.bufs[self.tx.clean] = None;
            self.tx.clean = (self.tx.clean + 1) % self.tx.size();
            n += 1;
        }
        n
    }
}

impl<R: Registers, D: Dma> Port for IxgbeVfPort<R, D> {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_batch(&mut self, batch: &mut Batch) -> usize {
        let size = self.rx.size();
        let mut got = 0;
        let mut armed = false;
        if RxWriteBack::from_qword(self.rx.mem.read(self.rx.tail, 1)).done() {
            self.drops.rx_unposted_dd += 1;
            let tail = self.rx.tail;
            self.rx.arm(tail);
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
                self.drops.rx_bad_descriptor += 1;
            } else if wb.status_error & regs::desc::RX_ERR_FRAME != 0 {
                self.drops.rx_frame_errors += 1;
            } else {
                match self.rx.take_refilled(slot, len, &self.pool, &self.dma) {
                    Ok(full) => {
                        let _ = batch.push(full);
                        self.rx_packets += 1;
                        self.rx_bytes += len as u64;
                        got += 1;
                    }
                    Err(_) => self.drops.rx_no_buffer += 1,
                }
            }
            self.rx.arm(slot);
            armed = true;
            self.rx.next = (slot + 1) % size;
        }
        if armed {
            self.rx.tail = (self.rx.next + size - 1) % size;
            write_barrier();
            self.regs
                .write(vr::vf_rx(0, block::TAIL), self.rx.tail as u32);
        }
        got
    }

    fn tx_batch(&mut self, batch: &mut Batch) -> usize {
        self.reclaim_tx();
        self.tx_calls = self.tx_calls.wrapping_add(1);
        if !self.link_up
            || self
                .tx_calls
                .is_multiple_of(self.cfg.link_check_every.max(1))
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
        for mut buf in batch.drain() {
            if !spill.is_empty() || free == 0 {
                let _ = spill.push(buf);
                continue;
            }
            // The VF does not advertise EXT_TAIL, so the engine joins tails first; a
            // tailed frame reaching it anyway is joined here (a no-op for linear
            // ones), and one too long for its buffer is a length drop.
            if buf.linearize().is_err() {
                self.drops.tx_bad_length += 1;
                continue;
            }
            let len = buf.len();
            if len == 0 || len > self.max_frame {
                self.drops.tx_bad_length += 1;
                continue;
            }
            // Frames from another pool would need a copy; the VF's callers use ours.
            let Some(iova) = self.dma.iova_of(buf.data().as_ptr()) else {
                self.drops.tx_no_buffer += 1;
                continue;
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
            self.regs
                .write(vr::vf_tx(0, block::TAIL), self.tx.tail as u32);
        }
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
        let d = self.drops;
        PortStats {
            rx_packets: self.rx_packets,
            rx_bytes: self.rx_bytes,
            tx_packets: self.tx_packets,
            tx_bytes: self.tx_bytes,
            drops: [
                ("rx_no_buffer", d.rx_no_buffer),
                ("rx_bad_descriptor", d.rx_bad_descriptor),
                ("rx_frame_errors", d.rx_frame_errors),
                ("rx_unposted_dd", d.rx_unposted_dd),
                ("tx_link_down", d.tx_link_down),
                ("tx_bad_length", d.tx_bad_length),
                ("tx_no_buffer", d.tx_no_buffer),
            ]
            .into_iter()
            .map(|(name, count)| DropCounter { name, count })
            .collect(),
        }
    }

    fn poll_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
}

impl<R: Registers, D: Dma> Drop for IxgbeVfPort<R, D> {
    fn drop(&mut self) {
        // Stop both queues before their rings and buffers are freed.
        self.regs.write(vr::vf_rx(0, block::CTL), 0);
        self.regs.write(vr::vf_tx(0, block::CTL), 0);
        for reg in [vr::vf_rx(0, block::CTL), vr::vf_tx(0, block::CTL)] {
            if poll(
                || self.regs.read(reg) & regs::XDCTL_ENABLE == 0,
                "VF queue disable",
                Duration::from_millis(10),
            )
            .is_err()
            {
                tracing::warn!(port = %self.name, "82599 VF queue still enabled at close");
            }
        }
    }
}
