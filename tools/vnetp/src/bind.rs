//! `vnetp bind` / `vnetp unbind`: move NICs to vfio-pci (so `vnetp run` can drive them
//! from userspace) and back to their kernel drivers, through `driver_override` and
//! `drivers_probe`.
//!
//! Every check runs before the first write ([`plan_bind`], [`plan_unbind`]: read-only,
//! testable on a directory tree), so a refused command changes nothing.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::pci::{PciAddr, PciError, Sysfs, VFIO_PCI};

/// Drivers that leave an IOMMU group viable for VFIO besides vfio-pci itself.
const VIABLE_DRIVERS: [&str; 3] = [VFIO_PCI, "pci-stub", "pcieport"];

/// Why a bind or unbind was refused.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Address or device problem.
    #[error(transparent)]
    Pci(#[from] PciError),
    /// Not a network controller.
    #[error(
        "{addr} is not a network controller (class 0x{class:06x}): vnetp binds NICs only (`vnetp status` lists them)"
    )]
    NotNic {
        /// Device.
        addr: PciAddr,
        /// Its class code.
        class: u32,
    },
    /// Not running as root.
    #[error("vnetp {cmd} needs root: it writes to /sys/bus/pci (try: sudo vnetp {cmd} ...)")]
    NotRoot {
        /// `bind` or `unbind`.
        cmd: &'static str,
    },
    /// The NIC carries the host's routes.
    #[error(
        "{addr} ({ifname}) carries this host's routes (`ip route show dev {ifname}`): binding it would cut the host off that network; move the routes first, or pass --force"
    )]
    ActiveRoutes {
        /// Device.
        addr: PciAddr,
        /// Its interface.
        ifname: String,
    },
    /// No IOMMU.
    #[error(
        "IOMMU disabled: boot with intel_iommu=on iommu=pt (AMD: amd_iommu=on iommu=pt) and enable VT-d/AMD-Vi in the firmware; then `vnetp status` shows IOMMU groups"
    )]
    IommuDisabled,
    /// IOMMU on, but this device has no group.
    #[error("{0} has no IOMMU group: the IOMMU does not cover it, so VFIO cannot claim it")]
    NoGroup(PciAddr),
    /// Another device of the group is on a host driver.
    #[error(
        "IOMMU group {group} not viable: also bind {other} (now on {driver}), e.g. `vnetp bind {addr} {other}`, or unbind it from {driver}"
    )]
    GroupNotViable {
        /// Group number.
        group: u32,
        /// The device asked for.
        addr: PciAddr,
        /// The member in the way.
        other: PciAddr,
        /// Its driver.
        driver: String,
    },
    /// `--vfs` on a device without SR-IOV or beyond its limit.
    #[error("{addr}: cannot create {want} VFs: {why}")]
    Vfs {
        /// Device.
        addr: PciAddr,
        /// VFs asked for.
        want: u32,
        /// Reason and what to do.
        why: String,
    },
}

/// What `bind` will do to one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindStep {
    /// Device.
    pub addr: PciAddr,
    /// Driver it leaves (None: unbound).
    pub from: Option<String>,
    /// Already on vfio-pci: nothing to move.
    pub already: bool,
    /// VFs to enable afterwards.
    pub vfs: Option<u32>,
}

/// Options of `vnetp bind`.
#[derive(Debug, Clone, Copy, Default)]
pub struct BindOptions {
    /// Bind even when the NIC carries routes.
    pub force: bool,
    /// Create this many SR-IOV VFs on each device (and bind them to vfio-pci).
    pub vfs: Option<u32>,
}

/// Parses addresses, reporting the first bad one.
pub fn parse_addrs(words: &[String]) -> Result<Vec<PciAddr>, PciError> {
    words.iter().map(|w| w.parse()).collect()
}

/// Checks everything `bind` needs, without writing: each device exists and is a NIC,
/// carries no host routes (unless forced), has an IOMMU group whose other members are
/// on vfio-pci, unbound, or in this same request, and supports the VFs asked for.
pub fn plan_bind(
    sys: &Sysfs,
    addrs: &[PciAddr],
    opts: BindOptions,
) -> Result<Vec<BindStep>, BindError> {
    for &a in addrs {
        check_nic(sys, a)?;
    }
    let routed = sys.routed_interfaces();
    let asked: BTreeSet<PciAddr> = addrs.iter().copied().collect();
    let mut steps = Vec::new();
    for &addr in addrs {
        let driver = sys.driver(addr);
        let already = driver.as_deref() == Some(VFIO_PCI);
        if !already
            && !opts.force
            && let Some(d) = sys
                .netdevs(addr)
                .into_iter()
                .find(|d| routed.contains(&d.name))
        {
            return Err(BindError::ActiveRoutes {
                addr,
                ifname: d.name,
            });
        }
        let Some(group) = sys.iommu_group(addr) else {
            return Err(if sys.iommu_enabled() {
                BindError::NoGroup(addr)
            } else {
                BindError::IommuDisabled
            });
        };
        for other in sys.group_devices(group) {
            if asked.contains(&other) {
                continue;
            }
            if let Some(d) = sys.driver(other)
                && !VIABLE_DRIVERS.contains(&d.as_str())
            {
                return Err(BindError::GroupNotViable {
                    group,
                    addr,
                    other,
                    driver: d,
                });
            }
        }
        if let Some(want) = opts.vfs {
            let why = match sys.sriov(addr) {
                None => Some("it has no SR-IOV capability (no sriov_totalvfs)".to_string()),
                Some(s) if want > s.totalvfs => Some(format!(
                    "it supports at most {} (sriov_totalvfs)",
                    s.totalvfs
                )),
                Some(_) => None,
            };
            if let Some(why) = why {
                return Err(BindError::Vfs { addr, want, why });
            }
        }
        steps.push(BindStep {
            addr,
            from: driver,
            already,
            vfs: opts.vfs,
        });
    }
    Ok(steps)
}

/// Checks `unbind`: each device exists and is a NIC. Returns the devices and the
/// driver each is on now.
pub fn plan_unbind(
    sys: &Sysfs,
    addrs: &[PciAddr],
) -> Result<Vec<(PciAddr, Option<String>)>, BindError> {
    addrs
        .iter()
        .map(|&a| {
            check_nic(sys, a)?;
            Ok((a, sys.driver(a)))
        })
        .collect()
}

fn check_nic(sys: &Sysfs, addr: PciAddr) -> Result<(), BindError> {
    if !sys.exists(addr) {
        return Err(PciError::NoSuchDevice(addr).into());
    }
    if !sys.is_nic(addr) {
        return Err(BindError::NotNic {
            addr,
            class: sys.class(addr).unwrap_or(0),
        });
    }
    Ok(())
}

fn write(path: &Path, value: &str) -> anyhow::Result<()> {
    std::fs::write(path, value)
        .with_context(|| format!("cannot write {value:?} to {}", path.display()))
}

/// Loads vfio-pci when the kernel does not have it yet (SR-IOV on a vfio-pci PF needs
/// its `enable_sriov` parameter).
fn load_vfio(sys: &Sysfs, sriov: bool) -> anyhow::Result<()> {
    if !sys.driver_dir(VFIO_PCI).is_dir() {
        let mut args = vec!["modprobe", "vfio-pci"];
        if sriov {
            args.push("enable_sriov=1");
        }
        vnetp::netns::run(&args).map_err(|e| {
            anyhow::anyhow!(
                "cannot load vfio-pci ({e}): install your kernel's modules package, or build the kernel with CONFIG_VFIO_PCI"
            )
        })?;
    }
    if sriov {
        let p = sys
            .root()
            .join("sys/module/vfio_pci/parameters/enable_sriov");
        let on = std::fs::read_to_string(&p)
            .map(|s| s.trim() == "Y")
            .unwrap_or(false);
        if !on {
            anyhow::bail!(
                "vfio-pci is loaded without SR-IOV support: run `modprobe -r vfio-pci && modprobe vfio-pci enable_sriov=1`, then retry"
            );
        }
    }
    Ok(())
}

/// Moves one device to `driver` (or back to the kernel's choice with `None`).
fn move_device(sys: &Sysfs, addr: PciAddr, to: Option<&str>) -> anyhow::Result<()> {
    let dev = sys.device_dir(addr);
    let a = addr.to_string();
    // driver_override makes the next probe pick exactly this driver (or, cleared, the
    // kernel's usual match).
    write(&dev.join("driver_override"), to.unwrap_or("\n"))?;
    if sys.driver(addr).is_some() {
        write(&dev.join("driver/unbind"), &a)?;
    }
    write(&sys.drivers_probe(), &a)?;
    Ok(())
}

/// `vnetp bind ADDR...`.
pub fn bind(words: &[String], opts: BindOptions) -> anyhow::Result<ExitCode> {
    let sys = Sysfs::host();
    let addrs = parse_addrs(words)?;
    for &a in &addrs {
        check_nic(&sys, a)?;
    }
    require_root("bind")?;
    let steps = plan_bind(&sys, &addrs, opts)?;
    load_vfio(&sys, opts.vfs.is_some_and(|n| n > 0))?;
    for s in &steps {
        if s.already {
            println!("{}: already on vfio-pci", s.addr);
        } else {
            move_device(&sys, s.addr, Some(VFIO_PCI))?;
            match sys.driver(s.addr) {
                Some(d) if d == VFIO_PCI => println!(
                    "{}: {} -> vfio-pci",
                    s.addr,
                    s.from.as_deref().unwrap_or("no driver")
                ),
                other => anyhow::bail!(
                    "{}: the kernel did not bind it to vfio-pci (driver now: {}): see `dmesg | tail`",
                    s.addr,
                    other.as_deref().unwrap_or("none")
                ),
            }
        }
        if let Some(n) = s.vfs {
            set_vfs(&sys, s.addr, n)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Enables `n` VFs on a PF and binds each to vfio-pci.
fn set_vfs(sys: &Sysfs, pf: PciAddr, n: u32) -> anyhow::Result<()> {
    let dev = sys.device_dir(pf);
    let now = sys.sriov(pf).map_or(0, |s| s.numvfs);
    if now != n {
        // The kernel refuses to change a non-zero VF count directly.
        if now != 0 {
            write(&dev.join("sriov_numvfs"), "0")?;
        }
        // Keep host drivers off the new VFs: they are for guests and vnetp.
        let _ = write(&dev.join("sriov_drivers_autoprobe"), "0");
        if n > 0 {
            write(&dev.join("sriov_numvfs"), &n.to_string())?;
        }
    }
    let vfs = sys.sriov(pf).map(|s| s.vfs).unwrap_or_default();
    for vf in &vfs {
        if sys.driver(*vf).as_deref() != Some(VFIO_PCI) {
            move_device(sys, *vf, Some(VFIO_PCI))?;
        }
    }
    println!(
        "{pf}: {} VF(s){}",
        vfs.len(),
        if vfs.is_empty() {
            String::new()
        } else {
            format!(
                " on vfio-pci: {}",
                vfs.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    Ok(())
}

/// `vnetp unbind ADDR...`: back to the kernel's own driver.
pub fn unbind(words: &[String]) -> anyhow::Result<ExitCode> {
    let sys = Sysfs::host();
    let addrs = parse_addrs(words)?;
    let plan = plan_unbind(&sys, &addrs)?;
    require_root("unbind")?;
    for (addr, driver) in plan {
        let dev = sys.device_dir(addr);
        let overridden = std::fs::read_to_string(dev.join("driver_override"))
            .is_ok_and(|s| s.trim() == VFIO_PCI);
        if driver.as_deref() != Some(VFIO_PCI) && !overridden {
            println!(
                "{addr}: not on vfio-pci (driver: {}): nothing to do",
                driver.as_deref().unwrap_or("none")
            );
            continue;
        }
        if sys.sriov(addr).is_some_and(|s| s.numvfs > 0) {
            write(&sys.device_dir(addr).join("sriov_numvfs"), "0")?;
        }
        move_device(&sys, addr, None)?;
        match sys.driver(addr) {
            Some(d) => println!(
                "{addr}: {} -> {d}",
                driver
                    .as_deref()
                    .unwrap_or("no driver (driver_override vfio-pci)")
            ),
            None => println!(
                "{addr}: released from vfio-pci; no kernel driver claimed it (load its module, e.g. `modprobe igb`)"
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn require_root(cmd: &'static str) -> Result<(), BindError> {
    if vnetp::netns::is_root() {
        Ok(())
    } else {
        Err(BindError::NotRoot { cmd })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::fake::FakeHost;

    fn a(s: &str) -> PciAddr {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn igb(h: &FakeHost, addr: &str, group: Option<u32>) {
        h.device(addr, 0x020000, (0x8086, 0x10c9), Some("igb"), group);
    }

    #[test]
    fn bind_plan_moves_a_nic_alone_in_its_group() {
        let h = FakeHost::new("plan-ok");
        igb(&h, "0000:01:00.0", Some(7));
        let steps = plan_bind(&h.sysfs(), &[a("0000:01:00.0")], BindOptions::default());
        let steps = steps.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            steps,
            [BindStep {
                addr: a("0000:01:00.0"),
                from: Some("igb".into()),
                already: false,
                vfs: None
            }]
        );
    }

    #[test]
    fn bind_refuses_a_group_with_a_member_on_a_host_driver_and_names_it() {
        let h = FakeHost::new("plan-group");
        igb(&h, "0000:01:00.0", Some(7));
        igb(&h, "0000:01:00.1", Some(7));
        let e = plan_bind(&h.sysfs(), &[a("0000:01:00.0")], BindOptions::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with("IOMMU group 7 not viable: also bind 0000:01:00.1 (now on igb)"),
            "{e}"
        );
        // Asking for both functions at once is viable.
        let both = plan_bind(
            &h.sysfs(),
            &[a("0000:01:00.0"), a("0000:01:00.1")],
            BindOptions::default(),
        );
        assert_eq!(both.map(|s| s.len()).ok(), Some(2));
    }

    #[test]
    fn bind_accepts_group_members_on_vfio_or_without_driver() {
        let h = FakeHost::new("plan-viable");
        igb(&h, "0000:01:00.0", Some(7));
        h.device(
            "0000:01:00.1",
            0x020000,
            (0x8086, 0x10c9),
            Some("vfio-pci"),
            Some(7),
        );
        h.device("0000:01:00.2", 0x020000, (0x8086, 0x10c9), None, Some(7));
        h.device(
            "0000:00:01.0",
            0x060400,
            (0x8086, 0x1234),
            Some("pcieport"),
            Some(7),
        );
        assert!(plan_bind(&h.sysfs(), &[a("0000:01:00.0")], BindOptions::default()).is_ok());
    }

    #[test]
    fn bind_without_iommu_says_how_to_turn_it_on() {
        let h = FakeHost::new("plan-noiommu");
        igb(&h, "0000:01:00.0", None);
        let e = plan_bind(&h.sysfs(), &[a("0000:01:00.0")], BindOptions::default());
        assert!(matches!(e, Err(BindError::IommuDisabled)), "{e:?}");
        // With the IOMMU on elsewhere, the device itself lacks a group.
        h.device("0000:02:00.0", 0x020000, (1, 2), None, Some(1));
        let e = plan_bind(&h.sysfs(), &[a("0000:01:00.0")], BindOptions::default());
        assert!(matches!(e, Err(BindError::NoGroup(_))), "{e:?}");
    }

    #[test]
    fn bind_refuses_a_routed_nic_unless_forced() {
        let h = FakeHost::new("plan-routes");
        igb(&h, "0000:01:00.0", Some(7));
        h.netdev("0000:01:00.0", "enp1s0", "up");
        h.route("enp1s0");
        let e = plan_bind(&h.sysfs(), &[a("0000:01:00.0")], BindOptions::default());
        assert!(
            matches!(e, Err(BindError::ActiveRoutes { ref ifname, .. }) if ifname == "enp1s0"),
            "{e:?}"
        );
        let forced = BindOptions {
            force: true,
            vfs: None,
        };
        assert!(plan_bind(&h.sysfs(), &[a("0000:01:00.0")], forced).is_ok());
    }

    #[test]
    fn bind_checks_vf_count_against_sriov_totalvfs() {
        let h = FakeHost::new("plan-vfs");
        igb(&h, "0000:01:00.0", Some(7));
        let opts = |n| BindOptions {
            force: false,
            vfs: Some(n),
        };
        let e = plan_bind(&h.sysfs(), &[a("0000:01:00.0")], opts(2));
        assert!(
            e.as_ref()
                .err()
                .is_some_and(|e| e.to_string().contains("no SR-IOV")),
            "{e:?}"
        );
        let dev = h.sysfs().device_dir(a("0000:01:00.0"));
        std::fs::write(dev.join("sriov_totalvfs"), "7\n").unwrap_or_default();
        let e = plan_bind(&h.sysfs(), &[a("0000:01:00.0")], opts(8));
        assert!(
            e.as_ref()
                .err()
                .is_some_and(|e| e.to_string().contains("at most 7")),
            "{e:?}"
        );
        assert!(plan_bind(&h.sysfs(), &[a("0000:01:00.0")], opts(7)).is_ok());
    }

    #[test]
    fn bind_and_unbind_refuse_missing_devices_and_non_nics() {
        let h = FakeHost::new("plan-missing");
        h.device(
            "0000:00:1f.2",
            0x010601,
            (0x8086, 0x2922),
            Some("ahci"),
            Some(3),
        );
        let e = plan_bind(&h.sysfs(), &[a("0000:99:00.0")], BindOptions::default());
        assert!(
            matches!(e, Err(BindError::Pci(PciError::NoSuchDevice(_)))),
            "{e:?}"
        );
        let e = plan_unbind(&h.sysfs(), &[a("0000:00:1f.2")]);
        assert!(
            matches!(
                e,
                Err(BindError::NotNic {
                    class: 0x010601,
                    ..
                })
            ),
            "{e:?}"
        );
    }

    #[test]
    fn move_device_writes_override_unbind_and_probe() {
        let h = FakeHost::new("move");
        igb(&h, "0000:01:00.0", Some(7));
        let sys = h.sysfs();
        let addr = a("0000:01:00.0");
        assert!(move_device(&sys, addr, Some(VFIO_PCI)).is_ok());
        let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        assert_eq!(
            read(sys.device_dir(addr).join("driver_override")),
            "vfio-pci"
        );
        assert_eq!(read(sys.driver_dir("igb").join("unbind")), "0000:01:00.0");
        assert_eq!(read(sys.drivers_probe()), "0000:01:00.0");
    }
}
