//! SR-IOV on the 82576 while vnetp's PF driver owns the port: pools for the VFs (VMDq,
//! VFRE/VFTE, VMOLR, receive addresses with pool select, anti-spoofing), and the PF
//! end of each VF's mailbox, serviced from the PF's poll loop (no thread, no
//! interrupt). Message handling itself is [`super::mailbox::handle_message`].
//!
//! Pool layout, as Linux igb does it: VF n owns pool n (its queues are PF queues n and
//! n+8), the PF takes pool `num_vfs` and uses queue `num_vfs`. That also keeps the PF's
//! DMA on the PF's own PCI requester ID in QEMU's model, which issues queue q's DMA as
//! VF q%8 when that VF exists (../shared/notes/qemu-igb-vfio.md).

use pkt::DropCounter;

use super::Registers;
use super::mailbox::{self, Handled, Refusal, VfPolicy, VfState, WORDS};
use super::regs;
use crate::sysfs::SriovVfs;

/// SR-IOV settings of the PF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SriovConfig {
    /// One policy per VF, VF 0 first (1..=7 VFs).
    pub vfs: Vec<VfPolicy>,
    /// Look at the mailbox every this many `rx_batch` calls (two register reads).
    pub poll_every: u32,
}

impl SriovConfig {
    /// VFs with fixed MACs, nothing else allowed.
    pub fn fixed_macs(macs: &[[u8; 6]]) -> Self {
        Self {
            vfs: macs.iter().map(|&m| VfPolicy::fixed_mac(m)).collect(),
            poll_every: 64,
        }
    }
}

/// Counters of the mailbox service, beside the per-refusal ones.
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    messages: u64,
    acked: u64,
    busy: u64,
    reply_lost: u64,
    flr: u64,
    vlan_filters_full: u64,
    refused: [u64; Refusal::ALL.len()],
}

/// The PF's view of its VFs.
#[derive(Debug)]
pub struct PfSriov {
    vfs: Vec<VfState>,
    pf_pool: u32,
    poll_every: u32,
    calls: u32,
    last_service: std::time::Instant,
    counters: Counters,
}

/// Longest time between two mailbox services while `rx_batch` is being called.
pub const MAX_SERVICE_GAP: std::time::Duration = std::time::Duration::from_millis(20);

/// Receive-address entry of VF `vf` (entry 0 is the PF's).
const fn rar_of(vf: u32) -> u32 {
    vf + 1
}

impl PfSriov {
    /// Checks the configuration (1..=7 VFs).
    pub fn new(cfg: &SriovConfig) -> Result<Self, super::IgbError> {
        let n = cfg.vfs.len();
        if !(1..regs::MAX_POOLS as usize).contains(&n) {
            return Err(super::IgbError::Config(format!(
                "{n} VFs: the 82576 has 8 pools, one for the PF: configure 1..=7 VFs"
            )));
        }
        for (i, p) in cfg.vfs.iter().enumerate() {
            if p.vlan.is_some_and(|v| v == 0 || v > 4094) {
                return Err(super::IgbError::Config(format!(
                    "VF {i}: VLAN {:?} is out of range: use 1..=4094",
                    p.vlan
                )));
            }
        }
        Ok(Self {
            vfs: cfg.vfs.iter().cloned().map(VfState::new).collect(),
            pf_pool: n as u32,
            poll_every: cfg.poll_every.max(1),
            calls: 0,
            last_service: std::time::Instant::now(),
            counters: Counters::default(),
        })
    }

    /// The PF's pool, which is also the PF's queue index.
    pub fn pf_pool(&self) -> u32 {
        self.pf_pool
    }

    /// The VFs' state (for diagnostics and tests).
    pub fn vfs(&self) -> &[VfState] {
        &self.vfs
    }

    /// Programs VMDq and the pools, after the global reset and before the PF's queues
    /// are enabled (datasheet 4.6.11 "Virtualization Initialization Flow" order: VT
    /// mode, pools, then per-queue setup).
    pub fn program_device<R: Registers>(&self, r: &R, pf_mac: [u8; 6], pf_max_frame: u32) {
        let pf = self.pf_pool;
        r.write(regs::MRQC, regs::MRQC_ENABLE_VMDQ);
        r.write(
            regs::VT_CTL,
            pf << regs::VT_CTL_DEFAULT_POOL_SHIFT | regs::VT_CTL_VM_REPL_EN,
        );
        let (ral, rah) = mailbox::mac_to_words(pf_mac);
        r.write(regs::ral(0), ral);
        r.write(
            regs::rah(0),
            rah | regs::RAH_AV | 1 << (regs::RAH_POOL_SHIFT + pf),
        );
        let mut vmolr = regs::VMOLR_AUPE | regs::VMOLR_BAM | regs::VMOLR_STRCRC;
        if pf_max_frame > 1522 {
            vmolr |= regs::VMOLR_LPE | (pf_max_frame & regs::VMOLR_RLPML_MASK);
        }
        r.write(regs::VMOLR0 + 4 * pf, vmolr);
        // VFs get their pools at their VF_RESET; until then only the PF moves frames.
        r.write(regs::VFRE, 1 << pf);
        r.write(regs::VFTE, 1 << pf);
        let vf_bits = (1u32 << self.vfs.len()) - 1;
        r.write(
            regs::DTXSWC,
            vf_bits << regs::DTXSWC_MAC_SPOOF_SHIFT
                | vf_bits << regs::DTXSWC_VLAN_SPOOF_SHIFT
                | regs::DTXSWC_VMDQ_LOOPBACK_EN,
        );
        for vf in 0..self.vfs.len() as u32 {
            r.write(regs::ral(rar_of(vf)), 0);
            r.write(regs::rah(rar_of(vf)), 0);
            r.write(regs::VMOLR0 + 4 * vf, 0);
            r.write(regs::VMVIR0 + 4 * vf, 0);
        }
        for i in 0..regs::VLVF_LEN {
            r.write(regs::VLVF0 + 4 * i, 0);
        }
        // The VFs' drivers (Linux igbvf) need their MSI-X vectors, which the device
        // raises only in MSI-X mode; the PF's own causes stay masked (EIMC at reset).
        r.write(
            regs::GPIE,
            regs::GPIE_MSIX_MODE | regs::GPIE_PBA | regs::GPIE_EIAME | regs::GPIE_NSICR,
        );
        // We poll the mailbox: no mailbox interrupts.
        r.write(regs::MBVFIMR, 0);
        r.write(regs::MBVFICR, u32::MAX);
        r.write(regs::VFLRE, u32::MAX);
    }

    /// Tells the VFs the PF is up (they see RSTD and may send VF_RESET).
    pub fn announce_reset_done<R: Registers>(&self, r: &R) {
        r.write(
            regs::CTRL_EXT,
            r.read(regs::CTRL_EXT) | regs::CTRL_EXT_PFRSTD,
        );
    }

    /// Called from every `rx_batch`: services the mailbox every `poll_every` calls, and
    /// at least every [`MAX_SERVICE_GAP`] when the caller polls slowly (an idle engine
    /// sleeps between rounds; a VF driver gives up on a reply after about a second).
    #[inline]
    pub fn tick<R: Registers>(&mut self, r: &R) {
        self.calls = self.calls.wrapping_add(1);
        if self.calls.is_multiple_of(self.poll_every)
            || self.last_service.elapsed() >= MAX_SERVICE_GAP
        {
            self.service(r);
        }
    }

    /// Handles VF resets (VFLRE) and every pending VF message; returns how many
    /// messages were answered.
    pub fn service<R: Registers>(&mut self, r: &R) -> usize {
        self.last_service = std::time::Instant::now();
        let mask = (1u32 << self.vfs.len()) - 1;
        let flr = r.read(regs::VFLRE) & mask;
        if flr != 0 {
            r.write(regs::VFLRE, flr);
            for vf in bits(flr) {
                self.counters.flr += 1;
                self.vfs[vf as usize].reset();
                self.apply(r, vf, mailbox::Changes::default());
            }
        }
        let icr = r.read(regs::MBVFICR);
        let acks = icr & (mask << regs::MBVFICR_VFACK_SHIFT);
        if acks != 0 {
            r.write(regs::MBVFICR, acks);
        }
        let mut answered = 0;
        for vf in bits(icr & mask) {
            if self.service_one(r, vf) {
                answered += 1;
            }
        }
        answered
    }

    /// Takes the buffer (PFU); false when the VF holds it.
    fn lock<R: Registers>(r: &R, vf: u32) -> bool {
        let mbx = regs::PFMAILBOX0 + 4 * vf;
        // A few tries: the VF holds VFU only while it copies 16 words.
        for _ in 0..4 {
            r.write(mbx, regs::PFMAILBOX_PFU);
            if r.read(mbx) & regs::PFMAILBOX_PFU != 0 {
                return true;
            }
        }
        false
    }

    fn service_one<R: Registers>(&mut self, r: &R, vf: u32) -> bool {
        if !Self::lock(r, vf) {
            // Leave VFREQ set: the next poll tries again.
            self.counters.busy += 1;
            return false;
        }
        r.write(regs::MBVFICR, 1 << (regs::MBVFICR_VFREQ_SHIFT + vf));
        let mem = regs::VMBMEM0 + 0x40 * vf;
        let mut m = [0u32; WORDS];
        for (i, w) in m.iter_mut().enumerate() {
            *w = r.read(mem + 4 * i as u32);
        }
        // ACK releases the buffer (PFU not written) and raises PFACK at the VF.
        r.write(regs::PFMAILBOX0 + 4 * vf, regs::PFMAILBOX_ACK);
        self.counters.messages += 1;
        let Some(state) = self.vfs.get_mut(vf as usize) else {
            return false;
        };
        let h: Handled = mailbox::handle_message(state, &m);
        match h.refused {
            Some(why) => {
                if let Some(i) = Refusal::ALL.iter().position(|&x| x == why) {
                    self.counters.refused[i] += 1;
                }
                tracing::debug!(
                    vf,
                    message = format_args!("{:#010x}", m[0]),
                    counter = why.counter(),
                    "VF message refused"
                );
            }
            None => self.counters.acked += 1,
        }
        if h.len > 0 {
            if Self::lock(r, vf) {
                for (i, w) in h.reply[..h.len].iter().enumerate() {
                    r.write(mem + 4 * i as u32, *w);
                }
                // STS raises PFSTS at the VF and releases the buffer.
                r.write(regs::PFMAILBOX0 + 4 * vf, regs::PFMAILBOX_STS);
            } else {
                self.counters.reply_lost += 1;
            }
        }
        self.apply(r, vf, h.changes);
        true
    }

    /// Programs VF `vf`'s pool from its state. Cheap enough to redo whole on any change
    /// (messages are rare): receive address, VMOLR, port VLAN, and the shared tables.
    fn apply<R: Registers>(&mut self, r: &R, vf: u32, ch: mailbox::Changes) {
        let Some(st) = self.vfs.get(vf as usize) else {
            return;
        };
        let bit = 1u32 << vf;
        if st.cts {
            if ch.reset {
                r.write(regs::VFRE, r.read(regs::VFRE) | bit);
                r.write(regs::VFTE, r.read(regs::VFTE) | bit);
            }
        } else {
            r.write(regs::VFRE, r.read(regs::VFRE) & !bit);
            r.write(regs::VFTE, r.read(regs::VFTE) & !bit);
        }
        let (ral, rah) = mailbox::mac_to_words(st.mac);
        r.write(regs::ral(rar_of(vf)), ral);
        let av = if st.cts { regs::RAH_AV } else { 0 };
        r.write(
            regs::rah(rar_of(vf)),
            rah | av | 1 << (regs::RAH_POOL_SHIFT + vf),
        );
        let mut vmolr = regs::VMOLR_BAM | regs::VMOLR_STRCRC;
        if st.policy.vlan.is_some() {
            vmolr |= regs::VMOLR_STRVLAN;
        } else {
            vmolr |= regs::VMOLR_AUPE;
        }
        if st.mc_len > 0 {
            vmolr |= regs::VMOLR_ROMPE;
        }
        if st.promisc_multicast {
            vmolr |= regs::VMOLR_MPME;
        }
        if st.promisc_unicast {
            vmolr |= regs::VMOLR_ROPE;
        }
        if st.max_frame > 0 {
            vmolr |= regs::VMOLR_LPE | (st.max_frame & regs::VMOLR_RLPML_MASK);
        }
        r.write(regs::VMOLR0 + 4 * vf, vmolr);
        let vmvir = st
            .policy
            .vlan
            .map_or(0, |v| u32::from(v) | regs::VMVIR_VLANA_DEFAULT);
        r.write(regs::VMVIR0 + 4 * vf, vmvir);
        if ch.multicast || !st.cts {
            self.rebuild_mta(r);
        }
        // VLAN filters: rebuilt on every change and on reset (the port VLAN counts).
        self.rebuild_vlans(r);
    }

    /// The multicast table is shared: the union of every VF's hashes.
    fn rebuild_mta<R: Registers>(&self, r: &R) {
        let mut mta = [0u32; regs::MTA_LEN as usize];
        for st in self.vfs.iter().filter(|s| s.cts) {
            for &h in st.multicast() {
                let h = u32::from(h) & 0xfff;
                mta[(h >> 5) as usize] |= 1 << (h & 0x1f);
            }
        }
        for (i, v) in mta.iter().enumerate() {
            r.write(regs::MTA + 4 * i as u32, *v);
        }
    }

    /// VLVF entries (one per VLAN id, with the pools in it) and the VFTA bits; RCTL.VFE
    /// when any VLAN is in use.
    fn rebuild_vlans<R: Registers>(&mut self, r: &R) {
        let mut entries: [(u16, u32); regs::VLVF_LEN as usize] = [(0, 0); regs::VLVF_LEN as usize];
        let mut used = 0;
        for (vf, st) in self.vfs.iter().enumerate().filter(|(_, s)| s.cts) {
            let port = st.policy.vlan.into_iter();
            for vid in port.chain(st.joined_vlans().iter().copied()) {
                match entries[..used].iter_mut().find(|e| e.0 == vid) {
                    Some(e) => e.1 |= 1 << vf,
                    None if used < regs::VLVF_LEN as usize => {
                        entries[used] = (vid, 1 << vf);
                        used += 1;
                    }
                    None => self.counters.vlan_filters_full += 1,
                }
            }
        }
        let mut vfta = [0u32; 128];
        for (i, slot) in entries.iter().enumerate() {
            let v = if i < used {
                let (vid, pools) = *slot;
                vfta[usize::from(vid >> 5)] |= 1 << (vid & 0x1f);
                u32::from(vid) | pools << regs::VLVF_POOLSEL_SHIFT | regs::VLVF_VLANID_ENABLE
            } else {
                0
            };
            r.write(regs::VLVF0 + 4 * i as u32, v);
        }
        for (i, v) in vfta.iter().enumerate() {
            r.write(regs::VFTA + 4 * i as u32, *v);
        }
        let rctl = r.read(regs::RCTL);
        let want = if used > 0 {
            rctl | regs::RCTL_VFE
        } else {
            rctl & !regs::RCTL_VFE
        };
        if want != rctl {
            r.write(regs::RCTL, want);
        }
    }

    /// Named counters of the mailbox service.
    pub fn counters(&self) -> Vec<DropCounter> {
        let c = &self.counters;
        let mut v = vec![
            DropCounter {
                name: "mbx_messages",
                count: c.messages,
            },
            DropCounter {
                name: "mbx_acked",
                count: c.acked,
            },
            DropCounter {
                name: "mbx_busy",
                count: c.busy,
            },
            DropCounter {
                name: "mbx_reply_lost",
                count: c.reply_lost,
            },
            DropCounter {
                name: "vf_flr",
                count: c.flr,
            },
            DropCounter {
                name: "vlan_filters_full",
                count: c.vlan_filters_full,
            },
        ];
        v.extend(
            Refusal::ALL
                .iter()
                .zip(c.refused)
                .map(|(r, count)| DropCounter {
                    name: r.counter(),
                    count,
                }),
        );
        v
    }

    /// The count of one named counter (0 if unknown).
    pub fn counter(&self, name: &str) -> u64 {
        self.counters()
            .iter()
            .find(|c| c.name == name)
            .map_or(0, |c| c.count)
    }
}

/// Indexes of the set bits of `v`, lowest first.
fn bits(v: u32) -> impl Iterator<Item = u32> {
    (0..32).filter(move |i| v & (1 << i) != 0)
}

/// One VF vnetp hands to a guest: its PCI address, MAC and optional port VLAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfAssignment {
    /// The VF's PCI address ("0000:01:10.0").
    pub pci: String,
    /// The MAC the VF gets (anti-spoofing keeps it to this one).
    pub mac: [u8; 6],
    /// Port VLAN, inserted and stripped by the device.
    pub vlan: Option<u16>,
}

/// Builds the PF's SR-IOV configuration from the VFs that exist under `pf` in sysfs
/// (`sriov_numvfs`, `virtfnN`): every existing VF gets a pool (so the PF's own pool is
/// past them), the assigned ones their MAC and VLAN, the others no MAC (their reset is
/// refused).
pub fn config_from_sysfs(
    pf: &str,
    assignments: &[VfAssignment],
) -> Result<SriovConfig, super::IgbError> {
    config_from_dir(&crate::sysfs::pci_device_dir(pf), pf, assignments)
}

fn config_from_dir(
    dir: &std::path::Path,
    pf: &str,
    assignments: &[VfAssignment],
) -> Result<SriovConfig, super::IgbError> {
    let sysfs = SriovVfs::read(dir, pf).map_err(super::IgbError::Config)?;
    let count = sysfs.numvfs.min(regs::MAX_POOLS as usize - 1);
    let vfs = sysfs
        .policies(count, assignments)
        .map_err(super::IgbError::Config)?;
    Ok(SriovConfig {
        vfs,
        poll_every: 16,
    })
}

#[cfg(test)]
mod sysfs_tests {
    use super::*;

    #[test]
    fn vfs_are_found_by_their_virtfn_links_and_all_get_pools() {
        let dir = std::env::temp_dir().join(format!("vnetp-sriov-{}", std::process::id()));
        let pf = crate::sysfs::fake_pf(&dir, "0000:01:00.0", 2, &["0000:01:10.0", "0000:01:10.2"]);
        let a = VfAssignment {
            pci: "0000:01:10.2".into(),
            mac: [0x52, 0x54, 0, 0, 0, 2],
            vlan: Some(7),
        };
        let cfg = config_from_dir(&pf, "0000:01:00.0", std::slice::from_ref(&a)).expect("config");
        assert_eq!(cfg.vfs.len(), 2, "every existing VF has a pool");
        assert_eq!(cfg.vfs[0].mac, [0; 6], "unassigned: no MAC");
        assert_eq!((cfg.vfs[1].mac, cfg.vfs[1].vlan), (a.mac, Some(7)));
        let wrong = VfAssignment {
            pci: "0000:02:10.0".into(),
            ..a
        };
        let e = config_from_dir(&pf, "0000:01:00.0", &[wrong]).expect_err("not a VF");
        assert!(e.to_string().contains("is not one of the 2 VFs"), "{e}");
        // More VFs than pools: the ones past the PF's pool get none.
        std::fs::write(pf.join("sriov_numvfs"), "9\n").expect("numvfs");
        let cfg = config_from_dir(&pf, "0000:01:00.0", &[]).expect("config");
        assert_eq!(cfg.vfs.len(), regs::MAX_POOLS as usize - 1);
        std::fs::write(pf.join("sriov_numvfs"), "0\n").expect("numvfs");
        let e = config_from_dir(&pf, "0000:01:00.0", &[]).expect_err("no VFs");
        assert!(e.to_string().contains("enable_sriov=1"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
