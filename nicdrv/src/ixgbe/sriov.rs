//! The 82599 PF in SR-IOV (virtualization) mode while vnetp's driver owns it: the VT
//! setup at init (82599 datasheet 4.6.10, "virtualization initialization"), and the
//! PF end of every VF's mailbox, serviced from the PF's own `rx_batch` (no thread, no
//! interrupt). Messages are handled by [`super::mailbox::PfMailbox`].
//!
//! Pool layout, as Linux ixgbe lays it out with VFs: 64 pools of two queues each
//! (GCR_EXT.VT_Mode = 64, MRQC = VMDq without RSS, MTQC = VT with 64 pools). VF n owns
//! pool n (queues 2n and 2n+1); the PF takes pool `num_vfs`, the one after the VFs',
//! and runs **one** queue pair there (queue 2·`num_vfs`): RSS across the PF's pool
//! (MRQC = VMDq+RSS) is not done, so [`super::IxgbeConfig::queues`] must be 1.

use std::time::{Duration, Instant};

use pkt::DropCounter;

use super::IxgbeError;
use super::mailbox::{PfMailbox, VfPolicy};
use super::regs::{self, sriov as r};
use crate::igb::Registers;
pub use crate::igb::sriov::VfAssignment;
use crate::sysfs::SriovVfs;

/// Longest time between two mailbox services while `rx_batch` is being called (a VF
/// driver gives up on a reply after about a second; ixgbevf waits less per try).
pub const MAX_SERVICE_GAP: Duration = Duration::from_millis(20);

/// SR-IOV settings of the 82599 PF ([`super::IxgbeConfig::sriov`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IxgbeSriovConfig {
    /// One policy per VF, VF 0 first (1..=63 VFs): its MAC (all-zero: the VF exists
    /// but is not handed out, and its reset is refused) and what it may change. A
    /// port VLAN is refused for now (VMVIR and the VLAN filters are not programmed). Every VF that exists (`sriov_numvfs`) needs an entry, so the PF's own
    /// pool is past all of theirs.
    pub vfs: Vec<VfPolicy>,
    /// Look at the mailbox every this many `rx_batch` calls (four register reads),
    /// and at least every [`MAX_SERVICE_GAP`].
    pub poll_every: u32,
}

impl IxgbeSriovConfig {
    /// VFs with fixed MACs, nothing else allowed.
    pub fn fixed_macs(macs: &[[u8; 6]]) -> Self {
        Self {
            vfs: macs.iter().map(|&m| VfPolicy::fixed_mac(m)).collect(),
            poll_every: 16,
        }
    }

    /// Checks the VF count and port VLANs.
    pub(super) fn check(&self) -> Result<(), IxgbeError> {
        let n = self.vfs.len();
        if !(1..=r::MAX_VFS).contains(&n) {
            return Err(IxgbeError::Config(format!(
                "sriov: {n} VFs: the 82599 has 64 pools, one kept for the PF: configure 1..={} VFs",
                r::MAX_VFS
            )));
        }
        for (i, p) in self.vfs.iter().enumerate() {
            if let Some(vlan) = p.vlan {
                // VMVIR (tag insertion) and the VLVF/VFTA filters are not programmed
                // yet: a port VLAN would leave the VF deaf (no AUPE) and mute (VLAN
                // anti-spoofing without a tag).
                return Err(IxgbeError::Config(format!(
                    "sriov: VF {i}: port VLAN {vlan}: port VLANs on 82599 VFs are not supported yet; remove `vlan` from its `vf` interface (the guest can tag its own frames), or use an 82576 PF"
                )));
            }
        }
        Ok(())
    }
}

/// The PF's SR-IOV state: its pool and the mailbox service.
#[derive(Debug)]
pub(super) struct PfSriov {
    mailbox: PfMailbox,
    poll_every: u32,
    calls: u32,
    last_service: Instant,
    /// Times the mailbox was looked at.
    services: u64,
}

impl PfSriov {
    pub(super) fn new(cfg: &IxgbeSriovConfig) -> Result<Self, IxgbeError> {
        cfg.check()?;
        Ok(Self {
            mailbox: PfMailbox::new(&cfg.vfs)?,
            poll_every: cfg.poll_every.max(1),
            calls: 0,
            last_service: Instant::now(),
            services: 0,
        })
    }

    /// The PF's pool: the one after the VFs'.
    pub(super) fn pf_pool(&self) -> u32 {
        self.mailbox.pf_pool()
    }

    /// The PF's queue index (its pool's first queue in the 64-pool layout).
    pub(super) fn pf_queue(&self) -> u32 {
        self.pf_pool() * r::QUEUES_PER_POOL
    }

    pub(super) fn mailbox(&self) -> &PfMailbox {
        &self.mailbox
    }

    /// Puts the device in virtualization mode, after the global reset and before any
    /// queue is set up (4.6.10: VT mode, pool enables, filters, then the PF's queues):
    /// GCR_EXT 64 pools, MRQC VMDq, VT_CTL with the PF's pool as default, only the PF's
    /// pool enabled both ways (VFs get theirs at their VF_RESET), VMOLR of the PF's
    /// pool, local switching, no mailbox interrupts (polled), stale requests cleared.
    /// MTQC is set with the transmit path (it needs the arbiter off), the MAC filter's
    /// pool select with the MAC ([`PfSriov::select_pf_mac_pool`]).
    pub(super) fn program_vt<R: Registers>(&self, regs: &R) {
        let pf = self.pf_pool();
        let gcr = regs.read(r::GCR_EXT) & !r::GCR_EXT_VT_MODE_MASK;
        regs.write(r::GCR_EXT, gcr | r::GCR_EXT_VT_MODE_64);
        regs.write(regs::MRQC, regs::MRQC_VMDQEN);
        regs.write(
            r::VT_CTL,
            r::VT_CTL_VT_ENABLE | r::VT_CTL_REPLEN | (pf << r::VT_CTL_POOL_SHIFT),
        );
        let (reg, bit) = (pf / 32, 1u32 << (pf % 32));
        for n in 0..2 {
            let v = if n == reg { bit } else { 0 };
            regs.write(r::pfvfre(n), v);
            regs.write(r::pfvfte(n), v);
        }
        for n in 0..8 {
            regs.write(r::pfvfspoof(n), 0);
        }
        for pool in 0..r::POOLS {
            let v = if pool == pf {
                r::VMOLR_AUPE | r::VMOLR_BAM | r::VMOLR_ROMPE
            } else {
                0
            };
            regs.write(r::vmolr(pool), v);
        }
        // The VFs' receive address entries (1 + vf) start empty.
        for vf in 0..self.mailbox.vfs().len() as u32 {
            regs.write(r::rah(1 + vf), 0);
            regs.write(r::mpsar_lo(1 + vf), 0);
            regs.write(r::mpsar_hi(1 + vf), 0);
        }
        regs.write(r::PFDTXGSWC, r::PFDTXGSWC_VT_LBEN);
        // The VFs' drivers (ixgbevf) take their mailbox and queue interrupts as MSI-X,
        // laid out per pool; the PF's own causes stay masked (EIMC at reset).
        let gpie = regs.read(r::GPIE) & !r::GPIE_VTMODE_MASK;
        regs.write(
            r::GPIE,
            gpie | r::GPIE_VTMODE_64 | r::GPIE_MSIX_MODE | r::GPIE_EIAME | r::GPIE_PBA_SUPPORT,
        );
        for n in 0..(r::MAX_VFS as u32).div_ceil(16) {
            regs.write(r::pfmbimr(n), 0);
            regs.write(r::pfmbicr(n), u32::MAX);
        }
    }

    /// Receive address 0 (the PF's MAC) goes to the PF's pool (MPSAR).
    pub(super) fn select_pf_mac_pool<R: Registers>(&self, regs: &R) {
        let pf = self.pf_pool();
        let (lo, hi) = if pf < 32 {
            (1 << pf, 0)
        } else {
            (0, 1 << (pf - 32))
        };
        regs.write(r::mpsar_lo(0), lo);
        regs.write(r::mpsar_hi(0), hi);
    }

    /// Each queue counts in statistics counter 15, the PF's queue in counter 0 (so
    /// QPRDC0 is the PF's own no-descriptor drops, not the VFs').
    pub(super) fn map_queue_counters<R: Registers>(&self, regs: &R) {
        let q = self.pf_queue();
        for n in 0..32 {
            let mut v = 0x0f0f_0f0f_u32;
            if n == q / 4 {
                v &= !(0xff << (8 * (q % 4)));
            }
            regs.write(regs::rqsmr(n), v);
            regs.write(regs::tqsm(n), v);
        }
    }

    /// Tells the VFs the PF is up: their resets now complete (RSTD) and their
    /// VF_RESET messages get answered.
    pub(super) fn announce_reset_done<R: Registers>(regs: &R) {
        regs.write(
            regs::CTRL_EXT,
            regs.read(regs::CTRL_EXT) | regs::CTRL_EXT_PFRSTD,
        );
    }

    /// Stops every pool and withdraws "PF reset done" (the port is closing).
    pub(super) fn shut_down<R: Registers>(regs: &R) {
        for n in 0..2 {
            regs.write(r::pfvfre(n), 0);
            regs.write(r::pfvfte(n), 0);
        }
        regs.write(
            regs::CTRL_EXT,
            regs.read(regs::CTRL_EXT) & !regs::CTRL_EXT_PFRSTD,
        );
    }

    /// Called from every `rx_batch`: services the mailbox every `poll_every` calls,
    /// and at least every [`MAX_SERVICE_GAP`] when the caller polls slowly.
    #[inline]
    pub(super) fn tick<R: Registers>(&mut self, regs: &R) {
        self.calls = self.calls.wrapping_add(1);
        if self.calls.is_multiple_of(self.poll_every)
            || self.last_service.elapsed() >= MAX_SERVICE_GAP
        {
            self.last_service = Instant::now();
            self.services += 1;
            self.mailbox.service(regs);
        }
    }

    /// The mailbox's named counters, and how often it was serviced.
    pub(super) fn counters(&self) -> impl Iterator<Item = DropCounter> + '_ {
        self.mailbox.counters().into_iter().chain([DropCounter {
            name: "mbx_services",
            count: self.services,
        }])
    }
}

/// Builds the PF's SR-IOV configuration from the VFs that exist under `pf` in sysfs
/// (`sriov_numvfs`, `virtfnN` links): every existing VF gets a pool (so the PF's own
/// pool is past them), the assigned ones their MAC and VLAN, the others no MAC (their
/// reset is refused and counted in `mbx_nack_no_mac`).
pub fn config_from_sysfs(
    pf: &str,
    assignments: &[VfAssignment],
) -> Result<IxgbeSriovConfig, IxgbeError> {
    config_from_dir(&crate::sysfs::pci_device_dir(pf), pf, assignments)
}

fn config_from_dir(
    dir: &std::path::Path,
    pf: &str,
    assignments: &[VfAssignment],
) -> Result<IxgbeSriovConfig, IxgbeError> {
    let sysfs = SriovVfs::read(dir, pf).map_err(IxgbeError::Config)?;
    let numvfs = sysfs.numvfs;
    if numvfs > r::MAX_VFS {
        return Err(IxgbeError::Config(format!(
            "{pf} has {numvfs} VFs; the 82599 PF needs a pool of its own: use at most {} (`echo 0 > {d}/sriov_numvfs; echo {} > {d}/sriov_numvfs`)",
            r::MAX_VFS,
            r::MAX_VFS,
            d = dir.display()
        )));
    }
    let vfs = sysfs
        .policies(numvfs, assignments)
        .map_err(IxgbeError::Config)?;
    Ok(IxgbeSriovConfig {
        vfs,
        poll_every: 16,
    })
}

#[cfg(test)]
mod sysfs_tests {
    use super::*;

    #[test]
    fn ixgbe_vfs_are_found_by_their_virtfn_links_and_all_get_pools() {
        let dir = std::env::temp_dir().join(format!("vnetp-ixgbe-sriov-{}", std::process::id()));
        let pf = crate::sysfs::fake_pf(
            &dir,
            "0000:03:00.0",
            3,
            &["0000:03:10.0", "0000:03:10.2", "0000:03:10.4"],
        );
        let a = VfAssignment {
            pci: "0000:03:10.4".into(),
            mac: [0x52, 0x54, 0, 0, 0, 4],
            vlan: Some(9),
        };
        let cfg = config_from_dir(&pf, "0000:03:00.0", std::slice::from_ref(&a)).expect("config");
        assert_eq!(cfg.vfs.len(), 3, "every existing VF has a pool");
        assert_eq!(cfg.vfs[0].mac, [0; 6], "unassigned: no MAC");
        assert_eq!((cfg.vfs[2].mac, cfg.vfs[2].vlan), (a.mac, Some(9)));
        let e = cfg
            .check()
            .expect_err("port VLANs are refused on the 82599");
        assert!(e.to_string().contains("remove `vlan`"), "{e}");
        let untagged = VfAssignment {
            vlan: None,
            ..a.clone()
        };
        let cfg = config_from_dir(&pf, "0000:03:00.0", &[untagged]).expect("config");
        cfg.check().expect("valid without a VLAN");
        let wrong = VfAssignment {
            pci: "0000:04:10.0".into(),
            ..a
        };
        let e = config_from_dir(&pf, "0000:03:00.0", &[wrong]).expect_err("not a VF");
        assert!(e.to_string().contains("is not one of the 3 VFs"), "{e}");
        std::fs::write(pf.join("sriov_numvfs"), "64\n").expect("numvfs");
        let e = config_from_dir(&pf, "0000:03:00.0", &[]).expect_err("too many");
        assert!(e.to_string().contains("at most 63"), "{e}");
        std::fs::write(pf.join("sriov_numvfs"), "0\n").expect("numvfs");
        let e = config_from_dir(&pf, "0000:03:00.0", &[]).expect_err("no VFs");
        assert!(e.to_string().contains("enable_sriov=1"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sriov_configs_out_of_range_are_clear_errors() {
        let none = IxgbeSriovConfig::fixed_macs(&[]);
        assert!(none.check().unwrap_err().to_string().contains("1..=63"));
        let mut vlan = IxgbeSriovConfig::fixed_macs(&[[2, 0, 0, 0, 0, 1]]);
        vlan.vfs[0].vlan = Some(100);
        assert!(
            vlan.check()
                .unwrap_err()
                .to_string()
                .contains("not supported yet")
        );
    }
}
