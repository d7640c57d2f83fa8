//! `vnetp status`: every NIC on the host with its driver, IOMMU group, NUMA node, link
//! state and SR-IOV functions, as text or JSON.

use std::fmt::Write as _;
use std::process::ExitCode;

use crate::pci::{NicInfo, Sysfs};

/// Prints the host's NICs.
pub fn status(json: bool) -> anyhow::Result<ExitCode> {
    let sys = Sysfs::host();
    let nics = sys.nics()?;
    if json {
        let v = serde_json::json!({
            "iommu_enabled": sys.iommu_enabled(),
            "nics": nics,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", render(&nics, sys.iommu_enabled()));
    }
    Ok(ExitCode::SUCCESS)
}

/// The text report: a block per NIC and a line about the IOMMU.
pub fn render(nics: &[NicInfo], iommu: bool) -> String {
    let mut s = String::new();
    if nics.is_empty() {
        s.push_str("no network controllers (PCI class 02) found\n");
    }
    for n in nics {
        let _ = writeln!(
            s,
            "{}  {} [{:04x}:{:04x}]",
            n.address,
            n.describe(),
            n.vendor_id,
            n.device_id
        );
        let driver = n.driver.as_deref().unwrap_or("none");
        let group = match n.iommu_group {
            Some(g) if n.group_members.is_empty() => format!("{g} (alone)"),
            Some(g) => format!(
                "{g} (with {})",
                n.group_members
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => "none".to_string(),
        };
        let numa = n.numa_node.map_or("-".to_string(), |x| x.to_string());
        let link = if n.netdevs.is_empty() {
            "no interface".to_string()
        } else {
            n.netdevs
                .iter()
                .map(|d| format!("{} {}", d.name, d.operstate))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            s,
            "    driver {driver}  iommu-group {group}  numa {numa}  link {link}"
        );
        if let Some(o) = &n.driver_override {
            let _ = writeln!(s, "    driver_override {o}");
        }
        if let Some(v) = &n.sriov {
            let vfs = if v.vfs.is_empty() {
                String::new()
            } else {
                format!(
                    ": {}",
                    v.vfs
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let _ = writeln!(s, "    sr-iov {} of {} VFs{vfs}", v.numvfs, v.totalvfs);
        }
        if let Some(pf) = n.physfn {
            let _ = writeln!(s, "    virtual function of {pf}");
        }
    }
    if !iommu {
        s.push_str(
            "IOMMU: off (no /sys/kernel/iommu_groups): `vnetp bind` needs it: boot with intel_iommu=on iommu=pt (AMD: amd_iommu=on iommu=pt)\n",
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::fake::FakeHost;

    #[test]
    fn text_report_shows_group_members_vfs_and_link_state() {
        let h = FakeHost::new("status-render");
        let pf = h.device(
            "0000:01:00.0",
            0x020000,
            (0x8086, 0x10c9),
            Some("igb"),
            Some(14),
        );
        h.device(
            "0000:01:00.1",
            0x020000,
            (0x8086, 0x10c9),
            Some("vfio-pci"),
            Some(14),
        );
        h.netdev("0000:01:00.0", "enp1s0f0", "down");
        std::fs::write(pf.join("sriov_totalvfs"), "7\n").unwrap_or_default();
        std::fs::write(pf.join("sriov_numvfs"), "0\n").unwrap_or_default();
        let nics = h.sysfs().nics().unwrap_or_default();
        let text = render(&nics, true);
        let want = "0000:01:00.0  device 8086:10c9 [8086:10c9]\n    driver igb  iommu-group 14 (with 0000:01:00.1)  numa -  link enp1s0f0 down\n    sr-iov 0 of 7 VFs\n0000:01:00.1  device 8086:10c9 [8086:10c9]\n    driver vfio-pci  iommu-group 14 (with 0000:01:00.0)  numa -  link no interface\n";
        assert_eq!(text, want);
        assert!(render(&[], false).contains("IOMMU: off"));
    }
}
