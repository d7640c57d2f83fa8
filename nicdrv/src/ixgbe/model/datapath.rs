//! The model's data path: descriptor fetch and transmit, receive steering (RSS, VMDq
//! pools, virtualization-mode switching, local loopback), anti-spoofing, and the
//! checksums the device inserts and checks.

use pkt::wire::checksum;

use super::{MODEL_VFS, ModelState, TxContext};
use crate::ixgbe::regs::{self, desc, stats};

impl ModelState {
    fn tx_running(&self, q: u32) -> bool {
        // In virtualization mode a queue sends only while its pool may (PFVFTE).
        let pool = q / self.queues_per_pool();
        let pool_on =
            !self.vt_enabled() || self.reg(regs::sriov::pfvfte(pool / 32)) & 1 << (pool % 32) != 0;
        pool_on
            && self.reg(regs::DMATXCTL) & regs::DMATXCTL_TE != 0
            && self.reg(regs::txdctl(q)) & regs::XDCTL_ENABLE != 0
            && self.link_up
    }

    /// The counter RQSMR (receive) or TQSM (transmit) maps queue `q` to.
    fn stat_counter(&self, map_base: fn(u32) -> u32, q: u32) -> u32 {
        (self.reg(map_base(q / 4)) >> (8 * (q % 4))) & 0xf
    }

    /// Processes descriptors from TDH to TDT of queue `q`, as the device does after a
    /// TDT write.
    pub(super) fn transmit(&mut self, q: u32) {
        if !self.tx_running(q) {
            return;
        }
        let n = self.reg(regs::tdlen(q)) / 16;
        let base = u64::from(self.reg(regs::tdbal(q))) | u64::from(self.reg(regs::tdbah(q))) << 32;
        if n == 0 || self.reg(regs::tdt(q)) >= n {
            return;
        }
        let qc = self.stat_counter(regs::tqsm, q);
        let mut frame = Vec::new();
        let mut broken = false;
        while self.reg(regs::tdh(q)) != self.reg(regs::tdt(q)) {
            let head = self.reg(regs::tdh(q));
            let d = base + u64::from(head) * 16;
            let (Some(addr), Some(q1)) = (self.dma_read_u64(d), self.dma_read_u64(d + 8)) else {
                // The ring itself is unreachable: the real device would stop with a
                // PCIe error; the model stops fetching.
                return;
            };
            let cmd = q1 as u32;
            let olinfo = (q1 >> 32) as u32;
            match cmd & desc::TX_DTYP_MASK {
                desc::TX_DTYP_CTXT if cmd & desc::TX_CMD_DEXT != 0 => {
                    // 7.2.3.2.3: vlan_macip_lens in dword 0, type_tucmd_mlhl in dword 2,
                    // mss_l4len_idx (IDX in bits 6:4) in dword 3.
                    let macip = addr as u32;
                    let idx = ((olinfo >> 4) & 1) as usize;
                    self.tx_contexts += 1;
                    self.ctx[q as usize][idx] = TxContext {
                        maclen: ((macip >> desc::CTX_MACLEN_SHIFT) & 0x7f) as usize,
                        iplen: (macip & 0x1ff) as usize,
                        tcp: cmd & desc::CTX_TUCMD_L4T_TCP != 0,
                    };
                }
                desc::TX_DTYP_DATA if cmd & desc::TX_CMD_DEXT != 0 => {
                    let len = (cmd & 0xffff) as usize;
                    match (len, self.dma(addr, len)) {
                        (1.., Some(p)) => {
                            // SAFETY: `dma` checked the range lies in a registered region.
                            let bytes = unsafe { std::slice::from_raw_parts(p, len) };
                            frame.extend_from_slice(bytes);
                        }
                        _ => {
                            self.tx_bad_descriptors += 1;
                            broken = true;
                        }
                    }
                    if cmd & desc::TX_CMD_EOP != 0 {
                        if !broken && !frame.is_empty() && self.spoofed(q, &frame) {
                            self.tx_spoofed += 1;
                            self.add(regs::sriov::SSVPC, 1);
                            broken = true;
                        }
                        if !broken && !frame.is_empty() {
                            if olinfo & desc::TX_OLINFO_TXSM != 0 {
                                let idx = ((olinfo >> 4) & 1) as usize;
                                insert_l4_checksum(&mut frame, self.ctx[q as usize][idx]);
                            }
                            self.add(stats::GPTC, 1);
                            self.add(stats::qptc(qc), 1);
                            self.tx_per_queue[q as usize] += 1;
                            self.add(stats::GOTCL, frame.len() as u32 + 4);
                            if self.switched_locally(q, &frame) {
                                self.tx_looped_back += 1;
                                let _ = self.receive(&frame);
                            } else if self.keep_wire {
                                self.wire.push_back(std::mem::take(&mut frame));
                            }
                        }
                        frame.clear();
                        broken = false;
                    }
                }
                _ => self.tx_bad_descriptors += 1,
            }
            if cmd & desc::TX_CMD_RS != 0 {
                let status = olinfo | desc::TX_STATUS_DD;
                self.dma_write_u64(d + 8, u64::from(cmd) | u64::from(status) << 32);
            }
            self.set(regs::tdh(q), (head + 1) % n);
        }
    }

    /// The receive queue for `frame` and, in RSS mode, its hash and RSS type: MRQC.MRQE
    /// = RSS hashes the fields MRQC enables with the key in RSSRK and looks the low 7
    /// bits of the hash up in RETA (7.1.2.8); any other mode uses queue 0.
    fn steer(&self, frame: &[u8]) -> (u32, Option<(u32, u8)>) {
        let mrqc = self.reg(regs::MRQC);
        if mrqc & regs::MRQC_MRQE_MASK != regs::MRQC_RSSEN {
            return (0, None);
        }
        let Some(input) = crate::ixgbe::rss::rss_input(frame, mrqc) else {
            return (0, None);
        };
        let mut key = [0u8; 40];
        for n in 0..regs::RSSRK_REGS {
            let at = 4 * n as usize;
            key[at..at + 4].copy_from_slice(&self.reg(regs::rssrk(n)).to_le_bytes());
        }
        let hash = offload::rss::toeplitz(&key, input.bytes());
        let entry = hash & 0x7f;
        let q = (self.reg(regs::reta(entry / 4)) >> (8 * (entry % 4))) & 0xf;
        (q, Some((hash, input.kind)))
    }

    /// The pool whose receive address (RAL/RAH\[1..=64\] with MPSAR) is `dst`, while
    /// any pool is enabled (PFVFRE): VMDq switching by destination MAC (7.10.3).
    fn pool_of(&self, dst: &[u8]) -> Option<u32> {
        use regs::sriov as sr;
        if self.reg(sr::pfvfre(0)) | self.reg(sr::pfvfre(1)) == 0 {
            return None;
        }
        (1..=MODEL_VFS).find_map(|n| {
            let (ral, rah) = (self.reg(sr::ral(n)), self.reg(sr::rah(n)));
            let hit = rah & regs::RAH_AV != 0
                && dst[..4] == ral.to_le_bytes()
                && dst[4..6] == rah.to_le_bytes()[..2];
            let pools =
                u64::from(self.reg(sr::mpsar_lo(n))) | u64::from(self.reg(sr::mpsar_hi(n))) << 32;
            (hit && pools != 0).then(|| pools.trailing_zeros())
        })
    }

    /// Virtualization mode is on (VT_CTL.VT_Ena).
    fn vt_enabled(&self) -> bool {
        self.reg(regs::sriov::VT_CTL) & regs::sriov::VT_CTL_VT_ENABLE != 0
    }

    /// Queues per pool for GCR_EXT.VT_Mode (16, 32 or 64 pools; 64 when unset).
    fn queues_per_pool(&self) -> u32 {
        use regs::sriov as sr;
        match self.reg(sr::GCR_EXT) & sr::GCR_EXT_VT_MODE_MASK {
            1 => 8,
            2 => 4,
            _ => 2,
        }
    }

    /// The pools (MPSAR bits) of the first valid receive address entry 0..=64 that
    /// holds `dst`.
    fn rar_pools(&self, dst: &[u8]) -> Option<u64> {
        use regs::sriov as sr;
        (0..=MODEL_VFS).find_map(|n| {
            let (ral, rah) = (self.reg(sr::ral(n)), self.reg(sr::rah(n)));
            let hit = rah & regs::RAH_AV != 0
                && dst[..4] == ral.to_le_bytes()
                && dst[4..6] == rah.to_le_bytes()[..2];
            hit.then(|| {
                u64::from(self.reg(sr::mpsar_lo(n))) | u64::from(self.reg(sr::mpsar_hi(n))) << 32
            })
        })
    }

    /// With local switching on (VT mode, PFDTXGSWC.LBE), a unicast frame sent on
    /// queue `q` to an address of another pool stays inside the device (7.10.3.x).
    fn switched_locally(&self, q: u32, frame: &[u8]) -> bool {
        use regs::sriov as sr;
        if !self.vt_enabled()
            || self.reg(sr::PFDTXGSWC) & sr::PFDTXGSWC_VT_LBEN == 0
            || frame.len() < 14
            || frame[0] & 1 == 1
        {
            return false;
        }
        let pool = q / self.queues_per_pool();
        self.rar_pools(&frame[..6])
            .is_some_and(|pools| pools != 0 && pools & (1 << pool) == 0)
    }

    /// Virtualization-mode receive (7.10.3): the destination's pools from the receive
    /// addresses (MPSAR), else the default pool (VT_CTL.DEF_PL) when unicast
    /// promiscuous; broadcast to every pool whose VMOLR.BAM is set (VT_CTL.Rpl_En) or
    /// the default pool; each pool only if enabled (PFVFRE) and its VMOLR accepts the
    /// frame (AUPE for untagged frames, BAM for broadcast). Multicast goes to the
    /// default pool with FCTRL.MPE (no MTA model).
    fn receive_vt(&mut self, frame: &[u8]) -> RxOutcome {
        use regs::sriov as sr;
        let fctrl = self.reg(regs::FCTRL);
        let vt = self.reg(sr::VT_CTL);
        let default = 1u64 << ((vt & sr::VT_CTL_POOL_MASK) >> sr::VT_CTL_POOL_SHIFT);
        let broadcast = frame[..6] == [0xff; 6];
        let pools = if broadcast {
            if fctrl & regs::FCTRL_BAM == 0 {
                return RxOutcome::Filtered;
            }
            if vt & sr::VT_CTL_REPLEN != 0 {
                (0..sr::POOLS)
                    .filter(|&p| self.reg(sr::vmolr(p)) & sr::VMOLR_BAM != 0)
                    .fold(0u64, |m, p| m | 1 << p)
            } else {
                default
            }
        } else if frame[0] & 1 == 1 {
            if fctrl & regs::FCTRL_MPE == 0 {
                return RxOutcome::Filtered;
            }
            default
        } else {
            match self.rar_pools(&frame[..6]) {
                Some(p) if p != 0 => p,
                _ if fctrl & regs::FCTRL_UPE != 0 && vt & sr::VT_CTL_DIS_DEFPL == 0 => default,
                _ => return RxOutcome::Filtered,
            }
        };
        let tagged = frame[12..14] == [0x81, 0x00];
        let qpp = self.queues_per_pool();
        let mut outcome = RxOutcome::Filtered;
        for pool in (0..sr::POOLS).filter(|p| pools & (1 << p) != 0) {
            if self.reg(sr::pfvfre(pool / 32)) & 1 << (pool % 32) == 0 {
                continue;
            }
            let vmolr = self.reg(sr::vmolr(pool));
            if (!tagged && vmolr & sr::VMOLR_AUPE == 0) || (broadcast && vmolr & sr::VMOLR_BAM == 0)
            {
                self.rx_vmolr_refused += 1;
                continue;
            }
            let o = self.deliver(pool * qpp, frame, None);
            if outcome != RxOutcome::Delivered {
                outcome = o;
            }
        }
        outcome
    }

    /// Offers a frame from the wire (or looped back) to the receive side.
    pub(super) fn receive(&mut self, frame: &[u8]) -> RxOutcome {
        if self.reg(regs::RXCTRL) & regs::RXCTRL_RXEN == 0 || !self.link_up || frame.len() < 14 {
            return RxOutcome::Filtered;
        }
        if self.vt_enabled() {
            return self.receive_vt(frame);
        }
        if !self.accepts(frame) {
            return RxOutcome::Filtered;
        }
        let (q, hash) = match self.pool_of(&frame[..6]) {
            Some(pool) => {
                let (reg, bit) = (pool / 32, 1 << (pool % 32));
                if self.reg(regs::sriov::pfvfre(reg)) & bit == 0 {
                    return RxOutcome::Filtered;
                }
                (pool * regs::sriov::QUEUES_PER_POOL, None)
            }
            None => self.steer(frame),
        };
        self.deliver(q, frame, hash)
    }

    /// Writes `frame` into receive queue `q`'s next descriptor with a write-back.
    fn deliver(&mut self, q: u32, frame: &[u8], hash: Option<(u32, u8)>) -> RxOutcome {
        let st = self;
        if st.reg(regs::rxdctl(q)) & regs::XDCTL_ENABLE == 0 {
            // 8.2.3.8.6: frames for a disabled queue are dropped.
            return RxOutcome::Filtered;
        }
        let qc = st.stat_counter(regs::rqsmr, q);
        let n = st.reg(regs::rdlen(q)) / 16;
        let (head, tail) = (st.reg(regs::rdh(q)), st.reg(regs::rdt(q)));
        if n == 0 || head == tail || tail >= n {
            if st.reg(regs::srrctl(q)) & regs::SRRCTL_DROP_EN != 0 {
                st.add(stats::qprdc(qc), 1);
            } else {
                st.add(stats::MPC0, 1);
            }
            return RxOutcome::NoDescriptor;
        }
        let bufsize = (st.reg(regs::srrctl(q)) & regs::SRRCTL_BSIZEPACKET_MASK) as usize * 1024;
        let tagged = frame[12..14] == [0x81, 0x00];
        let max = if st.reg(regs::HLREG0) & regs::HLREG0_JUMBOEN != 0 {
            ((st.reg(regs::MAXFRS) >> regs::MAXFRS_MFS_SHIFT) as usize).saturating_sub(4)
        } else {
            1518 + if tagged { 4 } else { 0 }
        };
        if frame.len() > bufsize || frame.len() > max {
            st.add(stats::ROC, 1);
            return RxOutcome::Oversize;
        }
        let base = u64::from(st.reg(regs::rdbal(q))) | u64::from(st.reg(regs::rdbah(q))) << 32;
        let d = base + u64::from(head) * 16;
        let Some(addr) = st.dma_read_u64(d) else {
            return RxOutcome::Fault;
        };
        let Some(p) = st.dma(addr, frame.len()) else {
            return RxOutcome::Fault;
        };
        // SAFETY: `dma` checked the destination lies in a registered region; the frame
        // is a separate Rust slice (a looped-back frame is the model's own buffer, not
        // ring or pool memory), so the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(frame.as_ptr(), p, frame.len()) };
        let mut status = desc::RX_STATUS_DD | desc::RX_STATUS_EOP | rx_checksum_status(frame);
        if tagged {
            status |= desc::RX_STATUS_VP;
        }
        // 7.1.6.2: qword 0 holds the RSS type (bits 3:0) and, with RXCSUM.PCSD, the
        // RSS hash (bits 63:32).
        let qword0 = match hash {
            Some((h, kind)) if st.reg(regs::RXCSUM) & regs::RXCSUM_PCSD != 0 => {
                u64::from(kind) | u64::from(h) << 32
            }
            Some((_, kind)) => u64::from(kind),
            None => 0,
        };
        st.dma_write_u64(d, qword0);
        st.dma_write_u64(d + 8, u64::from(status) | (frame.len() as u64) << 32);
        st.set(regs::rdh(q), (head + 1) % n);
        st.add(stats::GPRC, 1);
        st.add(stats::qprc(qc), 1);
        st.rx_per_queue[q as usize] += 1;
        st.add(stats::GORCL, frame.len() as u32 + 4);
        RxOutcome::Delivered
    }

    /// Whether MAC anti-spoofing (PFVFSPOOF) drops `frame` sent on queue `q`: its
    /// pool checks sources and the source is not an address of that pool.
    fn spoofed(&self, q: u32, frame: &[u8]) -> bool {
        use regs::sriov as sr;
        let pool = q / sr::QUEUES_PER_POOL;
        if self.reg(sr::pfvfspoof(pool / 8)) & 1 << (pool % 8) == 0 || frame.len() < 12 {
            return false;
        }
        self.pool_of(&frame[6..12]) != Some(pool)
    }

    fn accepts(&self, frame: &[u8]) -> bool {
        let fctrl = self.reg(regs::FCTRL);
        let dst = &frame[..6];
        if dst == [0xff; 6] {
            return fctrl & regs::FCTRL_BAM != 0;
        }
        if dst[0] & 1 == 1 {
            return fctrl & regs::FCTRL_MPE != 0;
        }
        if fctrl & regs::FCTRL_UPE != 0 || self.pool_of(dst).is_some() {
            return true;
        }
        let (ral, rah) = (self.reg(regs::RAL0), self.reg(regs::RAH0));
        rah & regs::RAH_AV != 0
            && dst[..4] == ral.to_le_bytes()
            && dst[4..] == rah.to_le_bytes()[..2]
    }
}

/// The L4 checksum the device inserts for POPTS.TXSM: the one's-complement sum from
/// the L4 header (MACLEN + IPLEN) to the end, seeded with what the field holds (the
/// pseudo-header sum software put there), complemented into the field.
fn insert_l4_checksum(frame: &mut [u8], ctx: TxContext) {
    let start = ctx.maclen + ctx.iplen;
    let at = start + if ctx.tcp { 16 } else { 6 };
    if at + 2 > frame.len() {
        return;
    }
    let seed = u32::from(u16::from_be_bytes([frame[at], frame[at + 1]]));
    frame[at..at + 2].copy_from_slice(&[0, 0]);
    let mut c = checksum::internet_checksum(&frame[start..], seed);
    if !ctx.tcp && c == 0 {
        c = 0xffff;
    }
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// The receive checksum status and errors the device reports for `frame` (7.1.6.2):
/// IPCS (+IPE) for IPv4 headers, L4I (+TCPE) for TCP and UDP over unfragmented IPv4.
fn rx_checksum_status(frame: &[u8]) -> u32 {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] {
        return 0;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 || ip.len() < ihl {
        return 0;
    }
    let mut s = desc::RX_STATUS_IPCS;
    if checksum::sum(&ip[..ihl], 0) != 0xffff {
        s |= desc::RX_ERR_IPE;
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
    let proto = ip[9];
    if fragment || total < ihl || total > ip.len() || !(proto == 6 || proto == 17) {
        return s;
    }
    let l4 = &ip[ihl..total];
    if proto == 17 && l4.len() >= 8 && l4[6..8] == [0, 0] {
        // UDP without a checksum: nothing to check.
        return s;
    }
    let pseudo = ip[12..20]
        .chunks_exact(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>()
        + u32::from(proto)
        + l4.len() as u32;
    s |= desc::RX_STATUS_L4CS;
    if checksum::sum(l4, pseudo) != 0xffff {
        s |= desc::RX_ERR_TCPE;
    }
    s
}

/// Result of offering a frame to the model's receive side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxOutcome {
    /// Written into a descriptor.
    Delivered,
    /// Receiver off, link down, too short, or the address filter said no.
    Filtered,
    /// No descriptor available (counted in the queue's QPRDC with Drop_En, else
    /// MPC\[0\]).
    NoDescriptor,
    /// Longer than the buffer or the maximum frame (counted in ROC).
    Oversize,
    /// The descriptor or its buffer address faulted.
    Fault,
}
