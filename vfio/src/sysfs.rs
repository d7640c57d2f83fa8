//! What sysfs says about a PCI function: its IOMMU group, its driver, and which other
//! members of the group keep the group from being viable.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::{Result, VfioError};

/// A PCI address, `domain:bus:device.function`, in the kernel's canonical spelling.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PciAddress(String);

impl PciAddress {
    /// Parses `DDDD:BB:DD.F` (hex; the domain may be omitted and then is 0000).
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || VfioError::BadAddress(text.to_owned());
        let (rest, func) = text.rsplit_once('.').ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split(':').collect();
        let (domain, bus, dev) = match parts.as_slice() {
            [d, b, v] => (*d, *b, *v),
            [b, v] => ("0", *b, *v),
            _ => return Err(bad()),
        };
        let hex = |s: &str, max: u32| {
            if s.is_empty() || s.len() > 4 {
                return None;
            }
            u32::from_str_radix(s, 16).ok().filter(|v| *v <= max)
        };
        let domain = hex(domain, 0xffff).ok_or_else(bad)?;
        let bus = hex(bus, 0xff).ok_or_else(bad)?;
        let dev = hex(dev, 0x1f).ok_or_else(bad)?;
        let func = hex(func, 7).ok_or_else(bad)?;
        Ok(Self(format!("{domain:04x}:{bus:02x}:{dev:02x}.{func}")))
    }

    /// The canonical text, e.g. `0000:01:00.0`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The sysfs tree to read; tests point it at a temporary copy.
#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Self::at("/sys")
    }
}

/// Drivers the kernel accepts on the other members of a viable group.
const VIABLE_DRIVERS: &[&str] = &["vfio-pci", "pci-stub", "pcieport"];

impl Sysfs {
    /// A sysfs tree mounted at `root` (normally `/sys`).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn device_dir(&self, bdf: &PciAddress) -> PathBuf {
        self.root.join("bus/pci/devices").join(bdf.as_str())
    }

    /// The device's IOMMU group number.
    pub fn iommu_group(&self, bdf: &PciAddress) -> Result<u32> {
        let dir = self.device_dir(bdf);
        if !dir.exists() {
            return Err(VfioError::NoDevice {
                bdf: bdf.to_string(),
                path: dir,
            });
        }
        let link =
            std::fs::read_link(dir.join("iommu_group")).map_err(|_| VfioError::IommuOff {
                bdf: bdf.to_string(),
            })?;
        link.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                VfioError::sys(
                    format!("{bdf}: iommu_group link"),
                    std::io::Error::other(format!("unexpected target {}", link.display())),
                )
            })
    }

    /// The name of the driver bound to the device, or `None`.
    pub fn driver(&self, bdf: &PciAddress) -> Option<String> {
        driver_of(&self.device_dir(bdf))
    }

    /// The PF of `bdf` when it is an SR-IOV VF (its `physfn` link), else `None`.
    pub fn physfn(&self, bdf: &PciAddress) -> Option<PciAddress> {
        let link = std::fs::read_link(self.device_dir(bdf).join("physfn")).ok()?;
        PciAddress::parse(link.file_name()?.to_str()?).ok()
    }

    /// True when `bdf` is an SR-IOV PF (it has `sriov_totalvfs`).
    pub fn is_sriov_pf(&self, bdf: &PciAddress) -> bool {
        self.device_dir(bdf).join("sriov_totalvfs").exists()
    }

    /// Members of `group` bound to a driver that makes the group not viable.
    pub fn blocking_members(&self, group: u32) -> Vec<String> {
        let dir = self
            .root
            .join("kernel/iommu_groups")
            .join(group.to_string())
            .join("devices");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| driver_of(&e.path()).is_some_and(|d| !VIABLE_DRIVERS.contains(&d.as_str())))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out
    }
}

fn driver_of(dev: &Path) -> Option<String> {
    let link = std::fs::read_link(dev.join("driver")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn pci_addresses_parse_to_canonical_form() {
        assert_eq!(
            PciAddress::parse("0000:01:00.0").unwrap().as_str(),
            "0000:01:00.0"
        );
        assert_eq!(
            PciAddress::parse("1:10.2").unwrap().as_str(),
            "0000:01:10.2"
        );
        assert_eq!(
            PciAddress::parse("0001:AF:1f.7").unwrap().as_str(),
            "0001:af:1f.7"
        );
        for bad in [
            "",
            "01:00",
            "0000:01:00.8",
            "0000:01:20.0",
            "x:01:00.0",
            "0000:100:00.0",
        ] {
            let err = PciAddress::parse(bad).unwrap_err();
            assert!(err.to_string().contains("lspci -D"), "{bad}: {err}");
        }
    }

    /// Builds `sys/bus/pci/devices/<bdf>` with an iommu_group link and a driver link,
    /// the way the kernel lays them out.
    fn fake_device(root: &Path, bdf: &str, group: Option<u32>, driver: Option<&str>) {
        let dev = root.join("devices/pci0000:00").join(bdf);
        std::fs::create_dir_all(&dev).unwrap();
        let devs = root.join("bus/pci/devices");
        std::fs::create_dir_all(&devs).unwrap();
        let _ = symlink(&dev, devs.join(bdf));
        if let Some(g) = group {
            let gdir = root.join("kernel/iommu_groups").join(g.to_string());
            std::fs::create_dir_all(gdir.join("devices")).unwrap();
            symlink(&gdir, dev.join("iommu_group")).unwrap();
            symlink(&dev, gdir.join("devices").join(bdf)).unwrap();
        }
        if let Some(d) = driver {
            let ddir = root.join("bus/pci/drivers").join(d);
            std::fs::create_dir_all(&ddir).unwrap();
            symlink(&ddir, dev.join("driver")).unwrap();
        }
    }

    #[test]
    fn group_and_driver_come_from_sysfs_links() {
        let tmp = tempfile::tempdir().unwrap();
        fake_device(tmp.path(), "0000:01:00.0", Some(7), Some("vfio-pci"));
        let sys = Sysfs::at(tmp.path());
        let bdf = PciAddress::parse("0000:01:00.0").unwrap();
        assert_eq!(sys.iommu_group(&bdf).unwrap(), 7);
        assert_eq!(sys.driver(&bdf).as_deref(), Some("vfio-pci"));
    }

    #[test]
    fn device_without_group_means_iommu_off() {
        let tmp = tempfile::tempdir().unwrap();
        fake_device(tmp.path(), "0000:01:00.0", None, Some("igb"));
        let err = Sysfs::at(tmp.path())
            .iommu_group(&PciAddress::parse("0000:01:00.0").unwrap())
            .unwrap_err();
        assert!(
            err.to_string().contains("boot with intel_iommu=on"),
            "{err}"
        );
        let err = Sysfs::at(tmp.path())
            .iommu_group(&PciAddress::parse("0000:02:00.0").unwrap())
            .unwrap_err();
        assert!(matches!(err, VfioError::NoDevice { .. }), "{err}");
    }

    #[test]
    fn vf_and_pf_roles_come_from_physfn_and_sriov_totalvfs() {
        let tmp = tempfile::tempdir().unwrap();
        fake_device(tmp.path(), "0000:01:00.0", Some(3), Some("vfio-pci"));
        fake_device(tmp.path(), "0000:01:10.0", Some(4), Some("vfio-pci"));
        let dir = |b: &str| tmp.path().join("devices/pci0000:00").join(b);
        std::fs::write(dir("0000:01:00.0").join("sriov_totalvfs"), "7\n").unwrap();
        symlink(dir("0000:01:00.0"), dir("0000:01:10.0").join("physfn")).unwrap();
        let sys = Sysfs::at(tmp.path());
        let (pf, vf) = (
            PciAddress::parse("0000:01:00.0").unwrap(),
            PciAddress::parse("0000:01:10.0").unwrap(),
        );
        assert_eq!(sys.physfn(&vf), Some(pf.clone()));
        assert_eq!(sys.physfn(&pf), None);
        assert!(sys.is_sriov_pf(&pf));
        assert!(!sys.is_sriov_pf(&vf));
    }

    #[test]
    fn not_viable_names_the_members_to_bind() {
        let tmp = tempfile::tempdir().unwrap();
        fake_device(tmp.path(), "0000:01:00.0", Some(7), Some("vfio-pci"));
        fake_device(tmp.path(), "0000:01:00.1", Some(7), Some("igb"));
        fake_device(tmp.path(), "0000:00:1c.0", Some(7), Some("pcieport"));
        fake_device(tmp.path(), "0000:01:00.2", Some(7), None);
        let others = Sysfs::at(tmp.path()).blocking_members(7);
        assert_eq!(others, vec!["0000:01:00.1".to_owned()]);
        let err = VfioError::NotViable { group: 7, others };
        assert_eq!(
            err.to_string(),
            "IOMMU group 7 not viable: bind 0000:01:00.1 too (every device of a group must be on vfio-pci or unbound)"
        );
    }
}
