//! The SR-IOV VFs a PF has as sysfs lists them (`sriov_numvfs`, `virtfnN` links), and
//! the VF policies a PF driver's SR-IOV configuration is built from: one shared reading
//! for the igb and ixgbe PFs (their `sriov::config_from_sysfs`).

use std::path::{Path, PathBuf};

use crate::igb::mailbox::VfPolicy;
use crate::igb::sriov::VfAssignment;

/// The sysfs directory of PCI function `pf` ("0000:01:00.0").
pub(crate) fn pci_device_dir(pf: &str) -> PathBuf {
    Path::new("/sys/bus/pci/devices").join(pf)
}

/// The VFs that exist under a PF's sysfs directory.
#[derive(Debug)]
pub(crate) struct SriovVfs<'a> {
    dir: &'a Path,
    pf: &'a str,
    /// `sriov_numvfs`: how many VFs exist (at least 1).
    pub(crate) numvfs: usize,
}

impl<'a> SriovVfs<'a> {
    /// Reads `sriov_numvfs` in `dir`, the sysfs directory of `pf`; no VFs (or no
    /// readable count) is an error that says how to create them.
    pub(crate) fn read(dir: &'a Path, pf: &'a str) -> Result<Self, String> {
        let vfs = Self { dir, pf, numvfs: 0 };
        let numvfs: usize = std::fs::read_to_string(dir.join("sriov_numvfs"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if numvfs == 0 {
            return Err(format!("{pf} has no SR-IOV VFs: {}", vfs.create_hint()));
        }
        Ok(Self { numvfs, ..vfs })
    }

    /// How to create VFs under this PF.
    fn create_hint(&self) -> String {
        format!(
            "create them first: `echo N > {}/sriov_numvfs` (a PF bound to vfio-pci needs the module option enable_sriov=1)",
            self.dir.display()
        )
    }

    /// One policy for each of the first `count` VFs: the assigned ones (found by their
    /// `virtfnN` link) get their MAC and VLAN, the others no MAC (their reset is
    /// refused). An assignment naming no VF among them is an error.
    pub(crate) fn policies(
        &self,
        count: usize,
        assignments: &[VfAssignment],
    ) -> Result<Vec<VfPolicy>, String> {
        let mut vfs = vec![VfPolicy::fixed_mac([0; 6]); count];
        for a in assignments {
            let index = (0..count).find(|n| {
                std::fs::read_link(self.dir.join(format!("virtfn{n}")))
                    .ok()
                    .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
                    .is_some_and(|name| name == a.pci)
            });
            let Some(index) = index else {
                return Err(format!(
                    "{} is not one of the {} VFs of {}: pick one of its virtfnN, or {}",
                    a.pci,
                    self.numvfs,
                    self.pf,
                    self.create_hint()
                ));
            };
            vfs[index] = VfPolicy {
                mac: a.mac,
                allow_mac_change: false,
                vlan: a.vlan,
                allow_promisc: false,
            };
        }
        Ok(vfs)
    }
}

/// A fake PF directory for tests: `root/pf` with `sriov_numvfs` = `numvfs` and a
/// `virtfnN` link to `../vf` for each of `vfs`.
#[cfg(test)]
pub(crate) fn fake_pf(root: &Path, pf: &str, numvfs: usize, vfs: &[&str]) -> PathBuf {
    let dir = root.join(pf);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("sriov_numvfs"), format!("{numvfs}\n")).expect("numvfs");
    for (n, vf) in vfs.iter().enumerate() {
        let link = dir.join(format!("virtfn{n}"));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(format!("../{vf}"), link).expect("link");
    }
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assigned_vfs_are_found_by_their_virtfn_links_the_rest_get_no_mac() {
        let root = std::env::temp_dir().join(format!("vnetp-sysfs-{}", std::process::id()));
        let pf = "0000:05:00.0";
        let dir = fake_pf(
            &root,
            pf,
            3,
            &["0000:05:10.0", "0000:05:10.2", "0000:05:10.4"],
        );
        let vfs = SriovVfs::read(&dir, pf).expect("VFs");
        assert_eq!(vfs.numvfs, 3);
        let a = VfAssignment {
            pci: "0000:05:10.2".into(),
            mac: [0x52, 0x54, 0, 0, 0, 2],
            vlan: Some(5),
        };
        let p = vfs.policies(3, std::slice::from_ref(&a)).expect("policies");
        assert_eq!(p.len(), 3);
        assert_eq!((p[0].mac, p[2].mac), ([0; 6], [0; 6]), "unassigned: no MAC");
        assert_eq!((p[1].mac, p[1].vlan), (a.mac, Some(5)));
        assert!(!p[1].allow_mac_change && !p[1].allow_promisc);
        // Only the first `count` links are looked at; the message counts them all.
        let late = VfAssignment {
            pci: "0000:05:10.4".into(),
            ..a
        };
        let e = vfs.policies(2, &[late]).expect_err("past count");
        assert!(e.contains("is not one of the 3 VFs of 0000:05:00.0"), "{e}");
        assert!(e.contains("sriov_numvfs"), "{e}");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_pf_without_vfs_says_how_to_create_them() {
        let root = std::env::temp_dir().join(format!("vnetp-sysfs-none-{}", std::process::id()));
        let pf = "0000:06:00.0";
        let dir = fake_pf(&root, pf, 0, &[]);
        let e = SriovVfs::read(&dir, pf).expect_err("no VFs");
        assert!(e.starts_with("0000:06:00.0 has no SR-IOV VFs"), "{e}");
        assert!(e.contains("enable_sriov=1"), "{e}");
        std::fs::write(dir.join("sriov_numvfs"), "many\n").expect("numvfs");
        let e = SriovVfs::read(&dir, pf).expect_err("unreadable count");
        assert!(e.contains("has no SR-IOV VFs"), "{e}");
        let e = SriovVfs::read(&root.join("0000:07:00.0"), "0000:07:00.0").expect_err("no dir");
        assert!(e.contains("has no SR-IOV VFs"), "{e}");
        let _ = std::fs::remove_dir_all(&root);
    }
}
