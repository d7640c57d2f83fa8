//! A poll-mode driver for one Intel 82576 virtual function (PCI 8086:10ca), as a
//! [`pkt::Port`] of Ethernet frames.
//!
//! The VF owns one receive and one transmit queue in its own BAR0 (the 0x2800/0x3800
//! blocks), on the same advanced descriptors and batch paths as the PF driver. Before
//! it may use them, it asks the PF over the mailbox (datasheet 7.8.2.9 "PF/VF
//! Mailbox"): VF reset (the PF answers with the VF's MAC and enables its pool), API
//! negotiation (answered by vnetp's PF, NACKed by Linux igb, which speaks only the base
//! protocol), the MAC address, and long frames when the MTU needs them. The PF may be
//! Linux igb or vnetp's own ([`super::sriov`]).
//!
//! Link state is VTSTATUS.LU (the port's link). Not handled: PF resets after init (the
//! port reports link down and counts `pf_reset`; reopen it), interrupts, multicast and
//! VLAN requests (the overlay sends unicast and broadcast only).

use std::time::{Duration, Instant};

use pkt::wire::MacAddr;
use pkt::{Batch, DropCounter, Mempool, Offloads, Port, PortCaps, PortKind, PortStats};

use super::mailbox::{self, WORDS, msg};
use super::queue::{QueuePair, QueueRegs};
use super::regs::{self, vf};
use super::{Dma, IgbError, Registers, wait_until};

/// How to set up the VF port.
#[derive(Debug, Clone)]
pub struct IgbVfConfig {
    /// Receive descriptors (multiple of 8, 8..=4096).
    pub rx_ring: usize,
    /// Transmit descriptors (multiple of 8, 8..=4096).
    pub tx_ring: usize,
    /// Largest L3 payload; above 1500 the VF asks the PF for long frames.
    pub mtu: usize,
    /// Ask the PF for this MAC instead of the one it assigned (the PF may refuse).
    pub mac: Option<[u8; 6]>,
    /// Read the link state every this many `tx_batch` calls.
    pub link_check_every: u32,
    /// How long to wait for each mailbox reply.
    pub mailbox_timeout: Duration,
}

impl Default for IgbVfConfig {
    fn default() -> Self {
        Self {
            rx_ring: 512,
            tx_ring: 512,
            mtu: 1500,
            mac: None,
            link_check_every: 1024,
            // A PF that polls (vnetp) or runs under emulation answers in milliseconds;
            // be generous.
            mailbox_timeout: Duration::from_secs(3),
        }
    }
}

/// The VF side of the mailbox: VFMailbox bits that clear on read are kept here until
/// used, as the Linux driver keeps them.
#[derive(Debug, Default)]
struct VfMailbox {
    sticky: u32,
}

impl VfMailbox {
    fn status<R: Registers>(&mut self, r: &R) -> u32 {
        let v = r.read(vf::MAILBOX);
        self.sticky |= v & vf::MAILBOX_R2C;
        v | self.sticky
    }

    /// True (and forgotten) when `bit` was seen.
    fn take<R: Registers>(&mut self, r: &R, bit: u32) -> bool {
        if self.status(r) & bit != 0 {
            self.sticky &= !bit;
            true
        } else {
            false
        }
    }

    fn wait<R: Registers>(
        &mut self,
        r: &R,
        bit: u32,
        limit: Duration,
        step: &'static str,
    ) -> Result<(), IgbError> {
        if !wait_until(|| self.take(r, bit), limit) {
            return Err(IgbError::VfMailbox {
                step,
                detail: format!(
                    "no {} from the PF within {} ms (VFMailbox {:#x})",
                    if bit == vf::MAILBOX_PFACK {
                        "ACK"
                    } else {
                        "reply"
                    },
                    limit.as_millis(),
                    r.read(vf::MAILBOX)
                ),
            });
        }
        Ok(())
    }

    fn lock<R: Registers>(
        &mut self,
        r: &R,
        limit: Duration,
        step: &'static str,
    ) -> Result<(), IgbError> {
        let locked = wait_until(
            || {
                r.write(vf::MAILBOX, vf::MAILBOX_VFU);
                self.status(r) & vf::MAILBOX_VFU != 0
            },
            limit,
        );
        if !locked {
            return Err(IgbError::VfMailbox {
                step,
                detail: "the PF holds the mailbox buffer".into(),
            });
        }
        Ok(())
    }

    /// Sends `words` and waits for the PF's ACK.
    fn send<R: Registers>(
        &mut self,
        r: &R,
        words: &[u32],
        limit: Duration,
        step: &'static str,
    ) -> Result<(), IgbError> {
        self.lock(r, limit, step)?;
        // A stale ACK from an earlier exchange would end the wait below too early.
        self.sticky &= !vf::MAILBOX_PFACK;
        for (i, w) in words.iter().take(WORDS).enumerate() {
            r.write(vf::VMBMEM + 4 * i as u32, *w);
        }
        // REQ without VFU: raises VFREQ at the PF and releases the buffer.
        r.write(vf::MAILBOX, vf::MAILBOX_REQ);
        self.wait(r, vf::MAILBOX_PFACK, limit, step)
    }

    /// Waits for the PF's message and reads `n` words of it.
    fn receive<R: Registers>(
        &mut self,
        r: &R,
        n: usize,
        limit: Duration,
        step: &'static str,
    ) -> Result<[u32; WORDS], IgbError> {
        self.wait(r, vf::MAILBOX_PFSTS, limit, step)?;
        self.lock(r, limit, step)?;
        let mut m = [0u32; WORDS];
        for (i, w) in m.iter_mut().enumerate().take(n.min(WORDS)) {
            *w = r.read(vf::VMBMEM + 4 * i as u32);
        }
        // ACK without VFU: tells the PF we read it, releases the buffer.
        r.write(vf::MAILBOX, vf::MAILBOX_ACK);
        Ok(m)
    }

    /// One request and its reply.
    fn request<R: Registers>(
        &mut self,
        r: &R,
        words: &[u32],
        reply_len: usize,
        limit: Duration,
        step: &'static str,
    ) -> Result<[u32; WORDS], IgbError> {
        self.send(r, words, limit, step)?;
        let reply = self.receive(r, reply_len, limit, step)?;
        if reply[0] & 0xffff != words[0] & 0xffff {
            return Err(IgbError::VfMailbox {
                step,
                detail: format!(
                    "the PF answered {:#010x} to message {:#x}",
                    reply[0], words[0]
                ),
            });
        }
        Ok(reply)
    }
}

/// One 82576 VF as a [`Port`].
pub struct IgbVfPort<R: Registers, D: Dma> {
    name: String,
    regs: R,
    dma: D,
    pool: Mempool,
    cfg: IgbVfConfig,
    mac: [u8; 6],
    api: u32,
    queues: Option<(u32, u32)>,
    mbx: VfMailbox,
    q: QueuePair,
    link_up: bool,
    tx_calls: u32,
    pf_resets: u64,
    pf_messages: u64,
}

impl<R: Registers, D: Dma> std::fmt::Debug for IgbVfPort<R, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IgbVfPort")
            .field("name", &self.name)
            .field("mac", &self.mac)
            .field("api", &self.api)
            .field("link_up", &self.link_up)
            .finish()
    }
}

impl<R: Registers, D: Dma> IgbVfPort<R, D> {
    /// Resets the VF, does the mailbox handshake with the PF and starts the queues.
    pub fn new(
        name: &str,
        regs: R,
        mut dma: D,
        pool: Mempool,
        cfg: IgbVfConfig,
    ) -> Result<Self, IgbError> {
        let (max_frame, bsize_kb) = QueuePair::check(cfg.rx_ring, cfg.tx_ring, cfg.mtu, &pool)?;
        let t = cfg.mailbox_timeout;
        let mut mbx = VfMailbox::default();
        // Mask the VF's interrupts; we poll.
        regs.write(vf::EIMC, u32::MAX);
        // VF reset: the queues stop, the PF sees VFLRE and disables our pool.
        regs.write(vf::CTRL, vf::CTRL_RST);
        std::thread::sleep(Duration::from_millis(1));
        // The mailbox is usable once RSTI (PF resetting) and RSTD (reset done, clears
        // on read) are both clear.
        // The last value read, for the error.
        let mut v = 0;
        let reset_done = wait_until(
            || {
                v = regs.read(vf::MAILBOX);
                v & (vf::MAILBOX_RSTI | vf::MAILBOX_RSTD) == 0
            },
            t,
        );
        if !reset_done {
            return Err(IgbError::VfMailbox {
                step: "wait for the PF reset",
                detail: format!(
                    "VFMailbox stays {v:#x} (RSTI: the PF driver has not finished its reset)"
                ),
            });
        }
        mbx.sticky = 0;

        let reply = mbx.request(&regs, &[msg::VF_RESET], 3, t, "VF_RESET")?;
        // Linux igb gives VFs no MAC unless the admin set one (NACK); a VF that brings
        // its own (the config's) then sets it with SET_MAC_ADDR, as igbvf does.
        let assigned = match reply[0] {
            w if w == msg::VF_RESET | msg::ACK => Some(mailbox::mac_from_words(reply[1], reply[2])),
            w if w == msg::VF_RESET | msg::NACK => None,
            w => {
                return Err(IgbError::VfMailbox {
                    step: "VF_RESET",
                    detail: format!("unexpected reply {w:#010x}"),
                });
            }
        };
        let Some(want) = cfg.mac.or(assigned) else {
            return Err(IgbError::VfRefused {
                what: "VF_RESET",
                detail: "the PF assigned this VF no MAC address: set one on the PF (Linux: `ip link set <pf> vf N mac ..`; vnetp: the interface's mac) or in the VF's config".into(),
            });
        };

        // API 1.1 when the PF speaks it (vnetp's PF); Linux igb NACKs: base protocol.
        let reply = mbx.request(
            &regs,
            &[msg::API_NEGOTIATE, msg::API_11],
            1,
            t,
            "API_NEGOTIATE",
        )?;
        let mut api = msg::API_10;
        let mut queues = None;
        if reply[0] & msg::ACK != 0 {
            api = msg::API_11;
            let q = mbx.request(&regs, &[msg::GET_QUEUES], 5, t, "GET_QUEUES")?;
            if q[0] & msg::ACK != 0 {
                queues = Some((q[1], q[2]));
            }
        }

        let (w1, w2) = mailbox::mac_to_words(want);
        let reply = mbx.request(&regs, &[msg::SET_MAC_ADDR, w1, w2], 1, t, "SET_MAC_ADDR")?;
        let mac = match assigned {
            _ if reply[0] & msg::ACK != 0 => want,
            // Our own address, refused: keep it (the PF filters on it already).
            Some(a) if a == want => a,
            _ => {
                return Err(IgbError::VfRefused {
                    what: "SET_MAC_ADDR",
                    detail: format!(
                        "the PF refused MAC {want:02x?} (assigned: {assigned:02x?}): allow the VF to change its MAC on the PF, or drop the mac setting"
                    ),
                });
            }
        };
        if cfg.mtu > 1500 {
            let reply = mbx.request(
                &regs,
                &[msg::SET_LPE, (max_frame + 4) as u32],
                1,
                t,
                "SET_LPE",
            )?;
            if reply[0] & msg::ACK == 0 {
                return Err(IgbError::VfRefused {
                    what: "SET_LPE",
                    detail: format!(
                        "the PF refused frames of {} bytes: lower the MTU",
                        max_frame + 4
                    ),
                });
            }
        }

        let q = QueuePair::setup(
            QueueRegs::vf(),
            &regs,
            &mut dma,
            &pool,
            cfg.rx_ring,
            cfg.tx_ring,
            max_frame,
            bsize_kb,
        )?;
        let link_up = regs.read(vf::STATUS) & regs::STATUS_LU != 0;
        tracing::info!(port = name, mac = ?mac, api, ?queues, link_up, "82576 VF initialised");
        Ok(Self {
            name: name.to_owned(),
            regs,
            dma,
            pool,
            cfg,
            mac,
            api,
            queues,
            mbx,
            q,
            link_up,
            tx_calls: 0,
            pf_resets: 0,
            pf_messages: 0,
        })
    }

    /// The MAC address the PF gave the VF (or the one it accepted from the config).
    pub fn mac(&self) -> MacAddr {
        MacAddr(self.mac)
    }

    /// The negotiated mailbox API ([`msg::API_10`] with Linux igb, [`msg::API_11`]
    /// with vnetp's PF).
    pub fn api(&self) -> u32 {
        self.api
    }

    /// TX and RX queue counts the PF reported (API 1.1 only).
    pub fn queues(&self) -> Option<(u32, u32)> {
        self.queues
    }

    /// Reads VTSTATUS.LU and looks at the mailbox for PF messages (a PF reset or a
    /// message without CTS takes the link down until the port is reopened).
    pub fn refresh_link(&mut self) -> bool {
        let status = self.mbx.status(&self.regs);
        if status & vf::MAILBOX_RSTD != 0 {
            self.mbx.sticky &= !vf::MAILBOX_RSTD;
            self.pf_resets += 1;
        }
        if self.mbx.take(&self.regs, vf::MAILBOX_PFSTS) {
            // An unsolicited PF message (link change): read and acknowledge it.
            let t = Duration::from_millis(10);
            if self.mbx.lock(&self.regs, t, "PF message").is_ok() {
                let w0 = self.regs.read(vf::VMBMEM);
                self.regs.write(vf::MAILBOX, vf::MAILBOX_ACK);
                self.pf_messages += 1;
                if w0 & 0xffff == msg::PF_CONTROL && w0 & msg::CTS == 0 {
                    self.pf_resets += 1;
                }
            }
        }
        self.link_up = self.pf_resets == 0 && self.regs.read(vf::STATUS) & regs::STATUS_LU != 0;
        self.link_up
    }

    /// Waits up to `limit` for the link; returns whether it came up.
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

    /// Frames posted for transmit that the device has not completed.
    pub fn tx_in_flight(&self) -> usize {
        self.q.tx.in_flight()
    }

    /// Releases transmitted frames the device is done with; returns how many.
    pub fn reclaim_tx(&mut self) -> usize {
        self.q.tx.reclaim()
    }

    /// The VF's own good-frame counters (VFGPRC, VFGPTC; they do not clear on read).
    pub fn hw_good_frames(&self) -> (u32, u32) {
        (self.regs.read(vf::GPRC), self.regs.read(vf::GPTC))
    }

    /// The register block (for diagnostics and tests).
    pub fn registers(&self) -> &R {
        &self.regs
    }
}

impl<R: Registers, D: Dma> Port for IgbVfPort<R, D> {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_batch(&mut self, batch: &mut Batch) -> usize {
        self.q.rx_batch(&self.regs, &self.dma, &self.pool, batch)
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
            self.q.tx.reclaim();
            self.q.drop_link_down(batch);
            return 0;
        }
        self.q.tx_batch(&self.regs, &self.dma, &self.pool, batch)
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
        let mut drops: Vec<DropCounter> = self.q.drop_counters().into();
        drops.push(DropCounter {
            name: "pf_reset",
            count: self.pf_resets,
        });
        drops.push(DropCounter {
            name: "pf_messages",
            count: self.pf_messages,
        });
        PortStats {
            rx_packets: self.q.rx_packets,
            rx_bytes: self.q.rx_bytes,
            tx_packets: self.q.tx_packets,
            tx_bytes: self.q.tx_bytes,
            drops,
        }
    }

    fn poll_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
}

impl<R: Registers, D: Dma> Drop for IgbVfPort<R, D> {
    fn drop(&mut self) {
        // Stop the queues before the rings and buffers they may still access are freed.
        self.q.stop(&self.regs);
    }
}
