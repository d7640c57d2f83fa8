//! Read-only view of the host's PCI network devices through sysfs: what `vnetp status`
//! prints and what `vnetp bind` checks before it writes anything.
//!
//! Every path is taken relative to a root directory ([`Sysfs::new`]), `/` on a real host,
//! so the logic can be pointed at a directory tree built by a test.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;

/// PCI class code prefix of network controllers (PCI code and ID assignment spec, 0x02).
const CLASS_NETWORK: u32 = 0x02;
/// The kernel driver that hands devices to userspace.
pub const VFIO_PCI: &str = "vfio-pci";

/// Why a PCI look-up failed.
#[derive(Debug, thiserror::Error)]
pub enum PciError {
    /// The text is not a PCI address.
    #[error(
        "bad PCI address {0:?}: expected DOMAIN:BUS:DEVICE.FUNCTION in hex, like 0000:01:00.0 (`vnetp status` lists the NICs)"
    )]
    BadAddress(String),
    /// No device at that address.
    #[error("no such device {0}: `vnetp status` lists the NICs and their PCI addresses")]
    NoSuchDevice(PciAddr),
    /// sysfs has no PCI bus at all.
    #[error("cannot read {path}: {source} (is sysfs mounted at /sys?)")]
    NoSysfs {
        /// The directory.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// A PCI address `domain:bus:device.function`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddr {
    /// PCI segment (domain).
    pub domain: u32,
    /// Bus number.
    pub bus: u8,
    /// Device number, 0..32.
    pub device: u8,
    /// Function number, 0..8.
    pub function: u8,
}

impl fmt::Display for PciAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl FromStr for PciAddr {
    type Err = PciError;

    /// Accepts `0000:01:00.0` and the short form `01:00.0` (domain 0).
    fn from_str(s: &str) -> Result<Self, PciError> {
        let bad = || PciError::BadAddress(s.to_string());
        let (rest, func) = s.rsplit_once('.').ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split(':').collect();
        let (dom, bus, dev) = match parts.as_slice() {
            [d, b, v] => (*d, *b, *v),
            [b, v] => ("0", *b, *v),
            _ => return Err(bad()),
        };
        let hex = |t: &str, max_len: usize| -> Result<u32, PciError> {
            if t.is_empty() || t.len() > max_len || !t.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad());
            }
            u32::from_str_radix(t, 16).map_err(|_| bad())
        };
        let domain = hex(dom, 8)?;
        let bus = hex(bus, 2)?;
        let device = hex(dev, 2)?;
        let function = hex(func, 1)?;
        if device >= 32 || function >= 8 {
            return Err(bad());
        }
        Ok(Self {
            domain,
            bus: bus as u8,
            device: device as u8,
            function: function as u8,
        })
    }
}

impl Serialize for PciAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A kernel network interface backed by a PCI device.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Netdev {
    /// Interface name (`eth0`).
    pub name: String,
    /// `operstate`: up, down, dormant, unknown, ...
    pub operstate: String,
}

/// SR-IOV state of a physical function.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Sriov {
    /// VFs enabled now (`sriov_numvfs`).
    pub numvfs: u32,
    /// Most VFs the device supports (`sriov_totalvfs`).
    pub totalvfs: u32,
    /// Addresses of the enabled VFs.
    pub vfs: Vec<PciAddr>,
}

/// Everything `vnetp status` reports about one NIC.
#[derive(Debug, Clone, Serialize)]
pub struct NicInfo {
    /// PCI address.
    pub address: PciAddr,
    /// PCI vendor ID (JSON: 4 hex digits).
    #[serde(serialize_with = "hex4")]
    pub vendor_id: u16,
    /// PCI device ID (JSON: 4 hex digits).
    #[serde(serialize_with = "hex4")]
    pub device_id: u16,
    /// 24-bit class code (JSON: `0x020000`).
    #[serde(serialize_with = "hex_class")]
    pub class: u32,
    /// Vendor name from pci.ids, when known.
    pub vendor_name: Option<String>,
    /// Device name from pci.ids, when known.
    pub device_name: Option<String>,
    /// Kernel driver bound now, if any.
    pub driver: Option<String>,
    /// `driver_override`, when set.
    pub driver_override: Option<String>,
    /// IOMMU group number; `None` when the IOMMU is off.
    pub iommu_group: Option<u32>,
    /// The other devices in the same IOMMU group.
    pub group_members: Vec<PciAddr>,
    /// NUMA node; `None` when the platform does not say (-1).
    pub numa_node: Option<u32>,
    /// Kernel interfaces of the device.
    pub netdevs: Vec<Netdev>,
    /// SR-IOV, when the device is a physical function that supports it.
    pub sriov: Option<Sriov>,
    /// For a VF: its physical function.
    pub physfn: Option<PciAddr>,
}

fn hex4<S: serde::Serializer>(v: &u16, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{v:04x}"))
}

fn hex_class<S: serde::Serializer>(v: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("0x{v:06x}"))
}

impl NicInfo {
    /// `vendor device` names or the hex IDs.
    pub fn describe(&self) -> String {
        match (&self.vendor_name, &self.device_name) {
            (Some(v), Some(d)) => format!("{v} {d}"),
            (Some(v), None) => format!("{v} device {:04x}", self.device_id),
            _ => format!("device {:04x}:{:04x}", self.vendor_id, self.device_id),
        }
    }
}

/// Vendor and device names from a pci.ids database.
#[derive(Debug, Default)]
pub struct PciIds {
    vendors: HashMap<u16, (String, HashMap<u16, String>)>,
}

impl PciIds {
    /// Parses the pci.ids text format (vendor lines, tab-indented device lines; the
    /// class section at the end is ignored).
    pub fn parse(text: &str) -> Self {
        let mut vendors: HashMap<u16, (String, HashMap<u16, String>)> = HashMap::new();
        let mut current: Option<u16> = None;
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if line.starts_with("C ") {
                break;
            }
            if let Some(dev) = line.strip_prefix('\t') {
                if dev.starts_with('\t') {
                    continue; // subsystem line
                }
                if let (Some(v), Some((id, name))) = (current, split_id(dev))
                    && let Some(entry) = vendors.get_mut(&v)
                {
                    entry.1.insert(id, name.to_string());
                }
            } else if let Some((id, name)) = split_id(line) {
                vendors.insert(id, (name.to_string(), HashMap::new()));
                current = Some(id);
            } else {
                current = None;
            }
        }
        Self { vendors }
    }

    /// Loads the database from the usual places under `root`; empty when absent.
    pub fn load(root: &Path) -> Self {
        for p in ["usr/share/misc/pci.ids", "usr/share/hwdata/pci.ids"] {
            if let Ok(text) = std::fs::read_to_string(root.join(p)) {
                return Self::parse(&text);
            }
        }
        Self::default()
    }

    /// The vendor's and the device's names, when known.
    pub fn names(&self, vendor: u16, device: u16) -> (Option<String>, Option<String>) {
        match self.vendors.get(&vendor) {
            Some((v, devs)) => (Some(v.clone()), devs.get(&device).cloned()),
            None => (None, None),
        }
    }
}

fn split_id(line: &str) -> Option<(u16, &str)> {
    let (id, name) = line.split_once("  ")?;
    Some((u16::from_str_radix(id.trim(), 16).ok()?, name.trim()))
}

/// sysfs, procfs and the pci.ids database under one root directory.
#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
}

impl Sysfs {
    /// The host itself (`/`).
    pub fn host() -> Self {
        Self::new("/")
    }

    /// Everything under `root` (a test's directory tree).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/sys/bus/pci/devices`.
    pub fn devices_dir(&self) -> PathBuf {
        self.root.join("sys/bus/pci/devices")
    }

    /// `<root>/sys/bus/pci/devices/<addr>`.
    pub fn device_dir(&self, addr: PciAddr) -> PathBuf {
        self.devices_dir().join(addr.to_string())
    }

    /// `<root>/sys/bus/pci/drivers/<name>`.
    pub fn driver_dir(&self, name: &str) -> PathBuf {
        self.root.join("sys/bus/pci/drivers").join(name)
    }

    /// `<root>/sys/bus/pci/drivers_probe`.
    pub fn drivers_probe(&self) -> PathBuf {
        self.root.join("sys/bus/pci/drivers_probe")
    }

    /// True when the kernel has IOMMU groups at all (the IOMMU is on).
    pub fn iommu_enabled(&self) -> bool {
        std::fs::read_dir(self.root.join("sys/kernel/iommu_groups"))
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    }

    /// Every PCI device address, sorted.
    pub fn addresses(&self) -> Result<Vec<PciAddr>, PciError> {
        let dir = self.devices_dir();
        let rd = std::fs::read_dir(&dir).map_err(|source| PciError::NoSysfs {
            path: dir.display().to_string(),
            source,
        })?;
        let mut v: Vec<PciAddr> = rd
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        v.sort();
        Ok(v)
    }

    /// True when a device exists at `addr`.
    pub fn exists(&self, addr: PciAddr) -> bool {
        self.device_dir(addr).is_dir()
    }

    /// The device's 24-bit class code.
    pub fn class(&self, addr: PciAddr) -> Option<u32> {
        let s = read_trim(&self.device_dir(addr).join("class"))?;
        u32::from_str_radix(s.trim_start_matches("0x"), 16).ok()
    }

    /// True for a network controller (class 0x02xxxx).
    pub fn is_nic(&self, addr: PciAddr) -> bool {
        self.class(addr).is_some_and(|c| c >> 16 == CLASS_NETWORK)
    }

    /// The kernel driver bound to the device now.
    pub fn driver(&self, addr: PciAddr) -> Option<String> {
        link_name(&self.device_dir(addr).join("driver"))
    }

    /// The device's IOMMU group number.
    pub fn iommu_group(&self, addr: PciAddr) -> Option<u32> {
        link_name(&self.device_dir(addr).join("iommu_group"))?
            .parse()
            .ok()
    }

    /// Every device of IOMMU group `group`, sorted.
    pub fn group_devices(&self, group: u32) -> Vec<PciAddr> {
        let dir = self
            .root
            .join(format!("sys/kernel/iommu_groups/{group}/devices"));
        let mut v: Vec<PciAddr> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The device's kernel interfaces (directly under `net/`, or under a virtio child).
    pub fn netdevs(&self, addr: PciAddr) -> Vec<Netdev> {
        let dev = self.device_dir(addr);
        let mut dirs = vec![dev.join("net")];
        if let Ok(rd) = std::fs::read_dir(&dev) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with("virtio") {
                    dirs.push(e.path().join("net"));
                }
            }
        }
        let mut out = Vec::new();
        for d in dirs {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let operstate =
                    read_trim(&e.path().join("operstate")).unwrap_or_else(|| "unknown".into());
                out.push(Netdev { name, operstate });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// SR-IOV state, when the device supports it.
    pub fn sriov(&self, addr: PciAddr) -> Option<Sriov> {
        let dev = self.device_dir(addr);
        let totalvfs = read_trim(&dev.join("sriov_totalvfs"))?.parse().ok()?;
        let numvfs = read_trim(&dev.join("sriov_numvfs"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut vfs: Vec<(u32, PciAddr)> = std::fs::read_dir(&dev)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let n = e
                            .file_name()
                            .to_str()?
                            .strip_prefix("virtfn")?
                            .parse()
                            .ok()?;
                        Some((n, link_name(&e.path())?.parse().ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        vfs.sort();
        Some(Sriov {
            numvfs,
            totalvfs,
            vfs: vfs.into_iter().map(|(_, a)| a).collect(),
        })
    }

    /// Everything about one device.
    pub fn nic(&self, addr: PciAddr, ids: &PciIds) -> Result<NicInfo, PciError> {
        if !self.exists(addr) {
            return Err(PciError::NoSuchDevice(addr));
        }
        let dev = self.device_dir(addr);
        let id = |f: &str| {
            read_trim(&dev.join(f))
                .and_then(|s| u16::from_str_radix(s.trim_start_matches("0x"), 16).ok())
                .unwrap_or(0)
        };
        let (vendor_id, device_id) = (id("vendor"), id("device"));
        let (vendor_name, device_name) = ids.names(vendor_id, device_id);
        let iommu_group = self.iommu_group(addr);
        let group_members = iommu_group
            .map(|g| {
                self.group_devices(g)
                    .into_iter()
                    .filter(|a| *a != addr)
                    .collect()
            })
            .unwrap_or_default();
        Ok(NicInfo {
            address: addr,
            vendor_id,
            device_id,
            class: self.class(addr).unwrap_or(0),
            vendor_name,
            device_name,
            driver: self.driver(addr),
            driver_override: read_trim(&dev.join("driver_override"))
                .filter(|s| !s.is_empty() && s != "(null)"),
            iommu_group,
            group_members,
            numa_node: read_trim(&dev.join("numa_node")).and_then(|s| s.parse().ok()),
            netdevs: self.netdevs(addr),
            sriov: self.sriov(addr),
            physfn: link_name(&dev.join("physfn")).and_then(|s| s.parse().ok()),
        })
    }

    /// Every network controller on the host, sorted by address.
    pub fn nics(&self) -> Result<Vec<NicInfo>, PciError> {
        let ids = PciIds::load(&self.root);
        self.addresses()?
            .into_iter()
            .filter(|a| self.is_nic(*a))
            .map(|a| self.nic(a, &ids))
            .collect()
    }

    /// Interfaces that carry routes of this host: IPv4 routes of the main table and
    /// IPv6 routes other than link-local and multicast (which every interface has).
    pub fn routed_interfaces(&self) -> BTreeSet<String> {
        let mut set = BTreeSet::new();
        if let Ok(t) = std::fs::read_to_string(self.root.join("proc/net/route")) {
            for line in t.lines().skip(1) {
                if let Some(ifname) = line.split_whitespace().next() {
                    set.insert(ifname.to_string());
                }
            }
        }
        if let Ok(t) = std::fs::read_to_string(self.root.join("proc/net/ipv6_route")) {
            for line in t.lines() {
                let cols: Vec<&str> = line.split_whitespace().collect();
                let (Some(dst), Some(ifname)) = (cols.first(), cols.last()) else {
                    continue;
                };
                if cols.len() < 10 || dst.starts_with("fe80") || dst.starts_with("ff") {
                    continue;
                }
                set.insert((*ifname).to_string());
            }
        }
        set.remove("lo");
        set
    }
}

/// A file's content without surrounding whitespace.
fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The last component of a symlink's target (`driver` -> `.../drivers/igb` -> `igb`).
fn link_name(p: &Path) -> Option<String> {
    let target = std::fs::read_link(p).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

#[cfg(test)]
pub(crate) mod fake {
    //! A directory tree shaped like sysfs, for tests of the logic above and of bind.

    use super::*;
    use std::os::unix::fs::symlink;

    /// A fake root with `sys/bus/pci/devices`, `sys/kernel/iommu_groups`, `proc/net`.
    pub struct FakeHost {
        /// Its root.
        pub root: PathBuf,
    }

    impl FakeHost {
        pub fn new(tag: &str) -> Self {
            let root =
                std::env::temp_dir().join(format!("vnetp-fake-sysfs-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            for d in [
                "sys/bus/pci/devices",
                "sys/bus/pci/drivers",
                "sys/kernel/iommu_groups",
                "proc/net",
                "usr/share/misc",
            ] {
                std::fs::create_dir_all(root.join(d)).unwrap_or_default();
            }
            std::fs::write(root.join("sys/bus/pci/drivers_probe"), "").unwrap_or_default();
            std::fs::write(
                root.join("proc/net/route"),
                "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n",
            )
            .unwrap_or_default();
            Self { root }
        }

        pub fn sysfs(&self) -> Sysfs {
            Sysfs::new(&self.root)
        }

        /// Adds a device with class, IDs, driver and IOMMU group.
        pub fn device(
            &self,
            addr: &str,
            class: u32,
            ids: (u16, u16),
            driver: Option<&str>,
            group: Option<u32>,
        ) -> PathBuf {
            let dev = self.root.join("sys/bus/pci/devices").join(addr);
            std::fs::create_dir_all(&dev).unwrap_or_default();
            let w = |f: &str, s: String| std::fs::write(dev.join(f), s).unwrap_or_default();
            w("class", format!("0x{class:06x}\n"));
            w("vendor", format!("0x{:04x}\n", ids.0));
            w("device", format!("0x{:04x}\n", ids.1));
            w("numa_node", "-1\n".into());
            w("driver_override", "(null)\n".into());
            if let Some(d) = driver {
                let ddir = self.root.join("sys/bus/pci/drivers").join(d);
                std::fs::create_dir_all(&ddir).unwrap_or_default();
                std::fs::write(ddir.join("unbind"), "").unwrap_or_default();
                symlink(&ddir, dev.join("driver")).unwrap_or_default();
            }
            if let Some(g) = group {
                let gdir = self
                    .root
                    .join(format!("sys/kernel/iommu_groups/{g}/devices"));
                std::fs::create_dir_all(&gdir).unwrap_or_default();
                symlink(&dev, gdir.join(addr)).unwrap_or_default();
                symlink(
                    self.root.join(format!("sys/kernel/iommu_groups/{g}")),
                    dev.join("iommu_group"),
                )
                .unwrap_or_default();
            }
            dev
        }

        /// Gives a device a netdev with an operstate.
        pub fn netdev(&self, addr: &str, name: &str, state: &str) {
            let d = self
                .root
                .join("sys/bus/pci/devices")
                .join(addr)
                .join("net")
                .join(name);
            std::fs::create_dir_all(&d).unwrap_or_default();
            std::fs::write(d.join("operstate"), format!("{state}\n")).unwrap_or_default();
        }

        /// Adds an IPv4 route through `ifname`.
        pub fn route(&self, ifname: &str) {
            let p = self.root.join("proc/net/route");
            let mut t = std::fs::read_to_string(&p).unwrap_or_default();
            t.push_str(&format!(
                "{ifname}\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
            ));
            std::fs::write(p, t).unwrap_or_default();
        }
    }

    impl Drop for FakeHost {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeHost;
    use super::*;

    fn addr(s: &str) -> PciAddr {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn pci_address_parses_long_and_short_forms_and_prints_long() {
        assert_eq!(addr("0000:01:00.0").to_string(), "0000:01:00.0");
        assert_eq!(addr("03:1f.7").to_string(), "0000:03:1f.7");
        assert_eq!(addr("10000:ab:02.1").to_string(), "10000:ab:02.1");
    }

    #[test]
    fn pci_address_rejects_malformed_text() {
        for bad in [
            "",
            "eth0",
            "0000:01:00",
            "0000:01:20.0",
            "0000:01:00.8",
            "0000:001:00.0",
            "x:1:0.0",
            "0000:01:00.0.1",
        ] {
            let e = bad.parse::<PciAddr>().err();
            assert!(matches!(e, Some(PciError::BadAddress(_))), "{bad:?}");
        }
    }

    #[test]
    fn pci_ids_give_vendor_and_device_names_and_skip_subsystems() {
        let ids = PciIds::parse(
            "# comment\n8086  Intel Corporation\n\t10c9  82576 Gigabit Network Connection\n\t\t8086 a03c  subsys\n\t10fb  82599ES 10-Gigabit SFI/SFP+ Network Connection\n1af4  Red Hat, Inc.\n\t1041  Virtio 1.0 network device\nC 02  Network controller\n\t00  Ethernet controller\n",
        );
        assert_eq!(
            ids.names(0x8086, 0x10c9),
            (
                Some("Intel Corporation".into()),
                Some("82576 Gigabit Network Connection".into())
            )
        );
        assert_eq!(
            ids.names(0x1af4, 0x1041).1.as_deref(),
            Some("Virtio 1.0 network device")
        );
        assert_eq!(
            ids.names(0x1af4, 0x9999),
            (Some("Red Hat, Inc.".into()), None)
        );
        assert_eq!(ids.names(0x0002, 0x0000), (None, None));
    }

    #[test]
    fn fake_tree_reports_driver_group_members_netdev_and_sriov() {
        let h = FakeHost::new("info");
        let pf = h.device(
            "0000:01:00.0",
            0x020000,
            (0x8086, 0x10c9),
            Some("igb"),
            Some(7),
        );
        h.device(
            "0000:01:00.1",
            0x020000,
            (0x8086, 0x10c9),
            Some("igb"),
            Some(7),
        );
        h.device("0000:00:1f.0", 0x060100, (0x8086, 0x2918), None, Some(3));
        h.netdev("0000:01:00.0", "enp1s0f0", "up");
        std::fs::write(pf.join("sriov_totalvfs"), "7\n").unwrap_or_default();
        std::fs::write(pf.join("sriov_numvfs"), "1\n").unwrap_or_default();
        let vf = h.device("0000:01:10.0", 0x020000, (0x8086, 0x10ca), None, Some(9));
        std::os::unix::fs::symlink(&vf, pf.join("virtfn0")).unwrap_or_default();
        std::os::unix::fs::symlink(&pf, vf.join("physfn")).unwrap_or_default();
        std::fs::write(
            h.root.join("usr/share/misc/pci.ids"),
            "8086  Intel Corporation\n\t10c9  82576 Gigabit Network Connection\n",
        )
        .unwrap_or_default();

        let nics = h.sysfs().nics().unwrap_or_default();
        let got: Vec<String> = nics.iter().map(|n| n.address.to_string()).collect();
        assert_eq!(got, ["0000:01:00.0", "0000:01:00.1", "0000:01:10.0"]);
        let n = &nics[0];
        assert_eq!(n.driver.as_deref(), Some("igb"));
        assert_eq!(n.iommu_group, Some(7));
        assert_eq!(n.group_members, [addr("0000:01:00.1")]);
        assert_eq!(n.numa_node, None);
        assert_eq!(
            n.describe(),
            "Intel Corporation 82576 Gigabit Network Connection"
        );
        assert_eq!(
            n.netdevs,
            [Netdev {
                name: "enp1s0f0".into(),
                operstate: "up".into()
            }]
        );
        let s = n.sriov.clone().unwrap_or(Sriov {
            numvfs: 0,
            totalvfs: 0,
            vfs: vec![],
        });
        assert_eq!((s.numvfs, s.totalvfs), (1, 7));
        assert_eq!(s.vfs, [addr("0000:01:10.0")]);
        assert_eq!(nics[2].physfn, Some(addr("0000:01:00.0")));
        assert_eq!(nics[2].describe(), "Intel Corporation device 10ca");
        assert!(h.sysfs().iommu_enabled());
    }

    #[test]
    fn routed_interfaces_ignore_link_local_ipv6_and_loopback() {
        let h = FakeHost::new("routes");
        h.route("eth0");
        std::fs::write(
            h.root.join("proc/net/ipv6_route"),
            "fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth1\n\
             fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth2\n\
             00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000001 00000000 00200001       lo\n",
        )
        .unwrap_or_default();
        let got: Vec<String> = h.sysfs().routed_interfaces().into_iter().collect();
        assert_eq!(got, ["eth0", "eth2"]);
    }

    #[test]
    fn this_host_lists_its_nics_without_error() {
        // Real sysfs: whatever the machine has, listing must work and every entry must
        // be a network controller that exists.
        let s = Sysfs::host();
        let nics = s.nics();
        assert!(nics.is_ok(), "{:?}", nics.err());
        for n in nics.unwrap_or_default() {
            assert_eq!(n.class >> 16, CLASS_NETWORK);
            assert!(s.exists(n.address));
        }
    }
}
