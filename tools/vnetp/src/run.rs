//! `vnetp run`: build the ports a configuration asks for and run the engine.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};
use nicdrv::udp::{INNER_MAC_OFFSETS, MacSteering, attach_reuseport_cbpf};
use nicdrv::{AfPacketPort, AfXdpOptions, AfXdpPort, TapPort, UdpOptions, UdpPort};
use overlay::config::{self, Config, InterfaceConfig, InterfaceKind, RawKind, UnderlayConfig};
use overlay::engine::InterfaceFactory;
use overlay::metrics::MetricsServer;
use overlay::server::ControlServer;
use overlay::shard::{Shards, SteerFn};
use overlay::underlay::{L2Underlay, UnderlayOptions};
use pkt::wire::MacAddr;
use pkt::{HEADROOM, Mempool};

/// Buffers in the packet pool: enough for every port's batches and queues...
const POOL_BUFFERS: u32 = 8192;
/// ...within this much memory when buffers are large (64 KiB frames).
const POOL_BYTES: usize = 128 << 20;

pub fn run(path: &Path, check: bool) -> anyhow::Result<ExitCode> {
    let cfg = config::load(path)?;
    if check {
        // One shard says nothing of shards: that output is unchanged.
        let shards = match cfg.host.shards {
            1 => String::new(),
            n => format!(", {n} shards"),
        };
        println!(
            "{}: ok (host {}, underlay {}, {} link(s), {} interface(s), {} route(s){shards})",
            path.display(),
            cfg.host.name,
            cfg.host.underlay.kind_name(),
            cfg.links.len(),
            cfg.interfaces.len(),
            cfg.routes.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    init_logging();
    daemon(path, cfg)?;
    Ok(ExitCode::SUCCESS)
}

/// The function that (re)attaches the underlay's reuseport program whenever the
/// interfaces' owners change: each datagram for an interface goes to its owner's
/// socket, so it is decapsulated where the interface lives instead of crossing a shard
/// ring. Datagrams it cannot place (broadcast, encrypted, interfaces beyond the
/// program's size) go by the kernel's 4-tuple hash, as without it: the receiving shard
/// still hands them to the owner.
fn steer_by_mac(fd: OwnedFd) -> SteerFn {
    let mut told_overflow = false;
    Box::new(move |targets: &[(MacAddr, usize)]| {
        // Interface MACs are unicast (config and control refuse others).
        let targets: Vec<([u8; 6], u32)> = targets
            .iter()
            .map(|(mac, shard)| (mac.0, u32::try_from(*shard).unwrap_or(u32::MAX)))
            .collect();
        let program = MacSteering::new(&targets, &INNER_MAC_OFFSETS);
        if program.steered() < targets.len() && !told_overflow {
            told_overflow = true;
            tracing::debug!(
                interfaces = targets.len(),
                steered = program.steered(),
                "too many interfaces for one steering program: the rest go by the 4-tuple hash"
            );
        }
        match attach_reuseport_cbpf(fd.as_fd(), &program) {
            Ok(()) => tracing::info!(
                interfaces = program.steered(),
                instructions = program.instructions().len(),
                "underlay datagrams steered to the shard owning their destination MAC"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                "cannot steer underlay datagrams by destination MAC; the kernel's 4-tuple hash spreads them over the shards"
            ),
        }
    })
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VNETP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Size of one pool buffer: headroom, a virtio-net header, the largest frame.
fn buffer_size(cfg: &Config) -> usize {
    let mtu = cfg
        .interfaces
        .iter()
        .map(|i| if i.offload { 65_535 } else { i.mtu as usize })
        .chain(cfg.links.iter().map(|l| l.mtu as usize))
        .max()
        .unwrap_or(1500)
        .max(1500);
    // Frame = MTU + Ethernet + 802.1Q; datagrams from VXLAN peers add 8.
    HEADROOM + 12 + mtu + 14 + 4 + 8
}

fn daemon(path: &Path, cfg: Config) -> anyhow::Result<()> {
    let mut buf_size = buffer_size(&cfg);
    if let UnderlayConfig::Vfio { mtu, .. } = cfg.host.underlay {
        // The NIC writes receive buffers in whole KiB after the headroom.
        buf_size = buf_size
            .max(nicdrv::igb::pool_buffer_size(mtu as usize))
            .max(nicdrv::ixgbe::pool_buffer_size(mtu as usize));
    }
    let shards = cfg.host.shards.max(1);
    // Every further shard's socket keeps a batch of buffers posted for receive.
    let count =
        (POOL_BYTES / buf_size).clamp(1024, POOL_BUFFERS as usize) + (shards - 1) * pkt::BATCH_MAX;
    let count = u32::try_from(count).context("packet pool size")?;
    let pool = Mempool::new(count, buf_size).context("packet pool")?;
    // With a vfio underlay: the NIC's handle for mapping guest memory, so vhost-user
    // interfaces lend it frame tails it gathers in place (zero-copy transmit).
    let mut dma: Option<Arc<dyn pkt::DmaMap>> = None;
    // With several shards: the UDP sockets of shards 1 and up.
    let mut more_underlays: Vec<Box<dyn pkt::Port>> = Vec::new();
    // With several UDP shards: a second descriptor of shard 0's socket, through which
    // the reuseport group's steering program is (re)attached.
    let mut steer_fd: Option<OwnedFd> = None;
    let underlay: Box<dyn pkt::Port> = match &cfg.host.underlay {
        UnderlayConfig::Udp { bind } => {
            let options = UdpOptions {
                // Only with several shards: one daemon alone must still find its
                // address in use when another daemon has it.
                reuse_port: shards > 1,
                ..UdpOptions::for_pool(&pool, bind.is_ipv6())
            };
            let first = UdpPort::bind_with(*bind, pool.clone(), options)
                .with_context(|| format!("underlay udp {bind}"))?;
            // The other shards' sockets, on the first one's address (its port, when
            // the configuration asked for port 0). Bound in shard order, one after
            // the other: the kernel numbers a reuseport group's sockets in bind
            // order, and the steering program returns that number as the shard.
            let addr = first.local_addr();
            if shards > 1 {
                steer_fd = Some(first.try_clone_fd().context("underlay socket descriptor")?);
            }
            for i in 1..shards {
                let port = UdpPort::bind_with(addr, pool.clone(), options)
                    .with_context(|| format!("underlay udp {addr} (shard {i})"))?;
                more_underlays.push(Box::new(port) as Box<dyn pkt::Port>);
            }
            Box::new(first)
        }
        UnderlayConfig::Raw {
            kind: RawKind::AfPacket,
            ifname,
            ip,
            port,
            gateway,
        } => {
            // vnetp owns `ip` on this interface: the kernel must not have it too.
            let raw = AfPacketPort::open(ifname, pool.clone())
                .with_context(|| format!("underlay af_packet on {ifname}"))?;
            let mut o = UnderlayOptions::new(raw.mac(), *ip, *port);
            o.gateway = *gateway;
            Box::new(
                L2Underlay::new(Box::new(raw), pool.clone(), o)
                    .with_context(|| format!("underlay af_packet {ip} on {ifname}"))?,
            )
        }
        UnderlayConfig::Raw {
            kind: RawKind::AfXdp,
            ifname,
            ip,
            port,
            gateway,
        } => {
            // The XDP filter steers frames for `ip` to vnetp; the kernel keeps the rest.
            let raw = AfXdpPort::open(ifname, *ip, pool.clone(), AfXdpOptions::default())
                .with_context(|| format!("underlay af_xdp on {ifname}"))?;
            let mut o = UnderlayOptions::new(raw.mac(), *ip, *port);
            o.gateway = *gateway;
            Box::new(
                L2Underlay::new(Box::new(raw), pool.clone(), o)
                    .with_context(|| format!("underlay af_xdp {ip} on {ifname}"))?,
            )
        }
        UnderlayConfig::Vfio {
            pci,
            ip,
            port,
            gateway,
            mtu,
        } => {
            // A PF bound to vfio-pci; its queues carry the underlay.
            let (nic, mac, map) = open_vfio_nic(pci, *mtu as usize, &pool, &cfg)?;
            dma = map;
            let mut o = UnderlayOptions::new(mac, *ip, *port);
            o.gateway = *gateway;
            Box::new(
                L2Underlay::new(nic, pool.clone(), o)
                    .with_context(|| format!("underlay vfio {ip} on {pci}"))?,
            )
        }
    };
    if let Some(f) = cfg.host.fault {
        tracing::warn!(?f, "injecting faults on the underlay ([host.fault])");
    }
    // One underlay port per shard (config validation allows several only for udp).
    let underlays: Vec<Box<dyn pkt::Port>> = std::iter::once(underlay)
        .chain(more_underlays)
        .map(|u| match cfg.host.fault {
            Some(f) => Box::new(pkt::FaultPort::new(u, f)) as Box<dyn pkt::Port>,
            None => u,
        })
        .collect();
    let sharded = Shards::build(
        &cfg,
        &pool,
        underlays,
        || {
            Box::new(DevicePorts {
                pool: pool.clone(),
                dma: dma.clone(),
            })
        },
        Some(path),
    )?;
    if let Some(fd) = steer_fd {
        sharded.steer_underlay(steer_by_mac(fd));
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("signal handler")?;
    }
    let handle = sharded.handle();
    let control = match &cfg.host.control {
        Some(p) => Some(ControlServer::start(p, handle.clone())?),
        None => None,
    };
    let metrics = match cfg.host.metrics {
        Some(addr) => {
            let m = MetricsServer::start(addr, handle.clone())
                .with_context(|| format!("metrics endpoint {addr}"))?;
            tracing::info!(addr = %m.local_addr(), "serving Prometheus metrics");
            Some(m)
        }
        None => None,
    };
    drop(handle);
    tracing::info!(
        host = %cfg.host.name,
        underlay = cfg.host.underlay.kind_name(),
        links = cfg.links.len(),
        interfaces = cfg.interfaces.len(),
        routes = cfg.routes.len(),
        shards,
        "running"
    );
    sharded.run(&stop)?;
    tracing::info!(host = %cfg.host.name, "stopped");
    drop(metrics);
    drop(control);
    Ok(())
}

/// The port behind one configured interface. A vhost-user interface gets `dma`, the
/// vfio NIC's mapping handle, when there is one.
///
/// Why dropping is safe in any order: the handle keeps the VFIO container open, so the
/// mappings live until the NIC and every port holding it are gone. A port closed while
/// its tails are still queued on the NIC keeps that guest memory mapped, in this process
/// and in the IOMMU (`TxTails` leaks it); the NIC stops its DMA engines when it is
/// dropped, before the last handle unmaps anything.
fn interface_port(
    i: &InterfaceConfig,
    pool: &Mempool,
    dma: Option<&Arc<dyn pkt::DmaMap>>,
) -> anyhow::Result<Box<dyn pkt::Port>> {
    Ok(match &i.kind {
        InterfaceKind::Tap { ifname } => {
            let mut tap = TapPort::create(ifname, Some(i.mac.0), Some(i.mtu), pool.clone())
                .with_context(|| format!("interface {} (tap {ifname})", i.name))?;
            if i.offload {
                tap.enable_offloads()
                    .with_context(|| format!("interface {} (tap {ifname}): offload", i.name))?;
            }
            Box::new(tap)
        }
        InterfaceKind::VhostUser { socket } => {
            let mut port = virtio::VhostUserPort::listen(
                virtio::VhostUserConfig {
                    name: i.name.clone(),
                    socket: socket.clone(),
                    mac: i.mac.0,
                    mtu: u16::try_from(i.mtu).unwrap_or(u16::MAX),
                    zero_copy_threshold: i
                        .zero_copy_threshold
                        .unwrap_or(virtio::tails::DEFAULT_THRESHOLD),
                    ..Default::default()
                },
                pool.clone(),
            )
            .with_context(|| format!("interface {} (vhost-user {})", i.name, socket.display()))?;
            // Threshold 0 never lends a tail: no memory to pin for the NIC.
            if let Some(map) = dma.filter(|_| i.zero_copy_threshold != Some(0)) {
                // Each guest memory map is mapped for the NIC's reads when it arrives;
                // a refused map (memlock) leaves its frames copied (`dma_map_failed`).
                port.set_dma_map(Arc::clone(map));
            }
            Box::new(port)
        }
        InterfaceKind::Vf { pci, .. } => bail!(
            "interface {} (vf {pci}): SR-IOV VFs are set up when the PF is claimed, at start; `ctl reload` cannot add one: restart vnetp",
            i.name
        ),
    })
}

/// Which of our PF drivers runs a PCI function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VfioDriver {
    /// Intel 82576 (`nicdrv::igb`).
    Igb,
    /// Intel 82599 (`nicdrv::ixgbe`).
    Ixgbe,
}

/// Picks the driver for the function at `pci` from its vendor and device IDs.
fn vfio_driver(pci: &str, vendor: u16, device: u16) -> anyhow::Result<VfioDriver> {
    if vendor == 0x8086 && nicdrv::igb::IGB_PF_DEVICE_IDS.contains(&device) {
        return Ok(VfioDriver::Igb);
    }
    if vendor == 0x8086 && nicdrv::ixgbe::IXGBE_PF_DEVICE_IDS.contains(&device) {
        return Ok(VfioDriver::Ixgbe);
    }
    let list = |ids: &[u16]| {
        ids.iter()
            .map(|d| format!("{d:04x}"))
            .collect::<Vec<_>>()
            .join("/")
    };
    bail!(
        "underlay vfio {pci}: device {vendor:04x}:{device:04x} has no vnetp driver; supported: Intel 82576 PF (8086:{}) and Intel 82599 PF (8086:{}); VFs cannot carry the underlay. Check the address with `vnetp status`",
        list(nicdrv::igb::IGB_PF_DEVICE_IDS),
        list(nicdrv::ixgbe::IXGBE_PF_DEVICE_IDS)
    )
}

/// The PF of a vfio underlay, its MAC address, and its handle for mapping other
/// memory (guests') for its reads.
type VfioNic = (
    Box<dyn pkt::Port>,
    pkt::wire::MacAddr,
    Option<Arc<dyn pkt::DmaMap>>,
);

/// Opens the PF at `pci` with the driver its device ID calls for and an L3 MTU of
/// `mtu`, waits for its link, and returns it with its MAC address and DMA map handle.
fn open_vfio_nic(pci: &str, mtu: usize, pool: &Mempool, cfg: &Config) -> anyhow::Result<VfioNic> {
    let addr: crate::pci::PciAddr = pci
        .parse()
        .with_context(|| format!("underlay vfio {pci}"))?;
    let info = crate::pci::Sysfs::host()
        .nic(addr, &crate::pci::PciIds::default())
        .with_context(|| format!("underlay vfio {pci}"))?;
    let link_wait = std::time::Duration::from_secs(5);
    let warn_down = || {
        tracing::warn!(pci = %pci, "link still down after 5 s; frames are dropped until it is up");
    };
    Ok(match vfio_driver(pci, info.vendor_id, info.device_id)? {
        VfioDriver::Igb => {
            // With the token, the PF opens even while a guest holds one of its VFs
            // (a vnetp restart under running guests).
            let options = match set_pf_vf_token(pci, cfg)? {
                Some(t) => vfio::OpenOptions::new().vf_token(t),
                None => vfio::OpenOptions::new(),
            };
            let mut nic = nicdrv::igb::open_vfio_with(
                pci,
                pool.clone(),
                igb_config(pci, mtu, cfg)?,
                &options,
            )
            .with_context(|| format!("underlay vfio {pci} (82576)"))?;
            if !nic.wait_link(link_wait) {
                warn_down();
            }
            let (mac, map) = (nic.mac(), nic.dma_map());
            (Box::new(nic), mac, map)
        }
        VfioDriver::Ixgbe => {
            set_pf_vf_token(pci, cfg)?;
            let mut nic = nicdrv::ixgbe::open_vfio(pci, pool.clone(), ixgbe_config(pci, mtu, cfg)?)
                .with_context(|| format!("underlay vfio {pci} (82599)"))?;
            if !nic.wait_link(link_wait) {
                warn_down();
            }
            let (mac, map) = (nic.mac(), nic.dma_map());
            (Box::new(nic), mac, map)
        }
    })
}

/// The VFs the `vf` interfaces name, with the MAC and VLAN the PF driver gives each
/// (one type for the 82576 and the 82599).
fn vf_assignments(cfg: &Config) -> Vec<nicdrv::igb::sriov::VfAssignment> {
    cfg.interfaces
        .iter()
        .filter_map(|i| match &i.kind {
            InterfaceKind::Vf { pci, vlan } => Some(nicdrv::igb::sriov::VfAssignment {
                pci: pci.clone(),
                mac: i.mac.0,
                vlan: *vlan,
            }),
            _ => None,
        })
        .collect()
}

/// The 82576 settings for the vfio underlay: its MTU, and SR-IOV pools when `vf`
/// interfaces name VFs of this PF.
fn igb_config(pf: &str, mtu: usize, cfg: &Config) -> anyhow::Result<nicdrv::igb::IgbConfig> {
    let vfs = vf_assignments(cfg);
    let sriov = if vfs.is_empty() {
        None
    } else {
        Some(
            nicdrv::igb::sriov::config_from_sysfs(pf, &vfs)
                .with_context(|| format!("SR-IOV on {pf}"))?,
        )
    };
    Ok(nicdrv::igb::IgbConfig {
        sriov,
        mtu,
        ..Default::default()
    })
}

/// The 82599 settings for the vfio underlay: its MTU, and SR-IOV (virtualization mode,
/// a pool per VF) when `vf` interfaces name VFs of this PF.
fn ixgbe_config(pf: &str, mtu: usize, cfg: &Config) -> anyhow::Result<nicdrv::ixgbe::IxgbeConfig> {
    let vfs = vf_assignments(cfg);
    let sriov = if vfs.is_empty() {
        None
    } else {
        Some(
            nicdrv::ixgbe::sriov::config_from_sysfs(pf, &vfs)
                .with_context(|| format!("SR-IOV on {pf} (82599)"))?,
        )
    };
    Ok(nicdrv::ixgbe::IxgbeConfig {
        sriov,
        mtu,
        ..Default::default()
    })
}

/// Sets the VF token on the PF at `pf` before its driver claims it: `[host] vf_token`,
/// or a fresh one when `vf` interfaces need one. VF users (QEMU's `vf-token=`) must
/// present it; the log says how. Returns the token, if one was set.
fn set_pf_vf_token(pf: &str, cfg: &Config) -> anyhow::Result<Option<vfio::VfToken>> {
    let vfs: Vec<&str> = cfg
        .interfaces
        .iter()
        .filter_map(|i| match &i.kind {
            InterfaceKind::Vf { pci, .. } => Some(pci.as_str()),
            _ => None,
        })
        .collect();
    let token = match &cfg.host.vf_token {
        Some(t) => vfio::VfToken::parse(t).context("[host] vf_token")?,
        None if vfs.is_empty() => return Ok(None),
        None => {
            let t = vfio::VfToken::random().context("a VF token for the vf interfaces")?;
            tracing::info!(
                pf,
                "no [host] vf_token configured: generated one for this run"
            );
            t
        }
    };
    // The driver opens the PF itself, so the token is set through a short open of
    // its own first; the kernel keeps it while vfio-pci stays bound.
    vfio::set_vf_token(pf, &token).with_context(|| format!("VF token on {pf}"))?;
    for vf in &vfs {
        tracing::info!(
            pf,
            vf,
            "hand the VF to a guest with QEMU option: -device vfio-pci,host={vf},vf-token={token}"
        );
    }
    if vfs.is_empty() {
        tracing::info!(
            pf,
            "VF token set: VF users open the VFs with vf-token={token}"
        );
    }
    Ok(Some(token))
}

/// Creates interface ports for `reload` and the control socket's interface additions.
struct DevicePorts {
    pool: Mempool,
    /// The vfio NIC's mapping handle, for vhost-user interfaces added later.
    dma: Option<Arc<dyn pkt::DmaMap>>,
}

impl InterfaceFactory for DevicePorts {
    fn create(&mut self, cfg: &InterfaceConfig) -> Result<Box<dyn pkt::Port>, String> {
        interface_port(cfg, &self.pool, self.dma.as_ref()).map_err(|e| format!("{e:#}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nicdrv::igb::Dma as _;
    use nicdrv::igb::model::{IgbModel, ModelDma};

    /// A vhost-user interface made by the daemon's factory (as `reload` and the control
    /// socket's `interface add` make them) with the 82576 model's DMA map as the NIC's;
    /// our frontend sends one 1400-byte frame. Returns the frame as the port received
    /// it, the port's events, and the regions the model could reach while the frame was
    /// held and after the port closed.
    fn one_frame_through(
        tag: &str,
        threshold: Option<usize>,
    ) -> (Vec<u8>, Vec<(&'static str, u64)>, usize, usize) {
        let dir = std::env::temp_dir().join(format!("vnetp-run-dma-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("vm0.sock");
        let cfg = InterfaceConfig {
            name: "vm0".into(),
            kind: InterfaceKind::VhostUser {
                socket: socket.clone(),
            },
            mac: pkt::wire::MacAddr([0x52, 0x54, 0, 0, 0, 1]),
            mtu: 1500,
            anti_spoof: true,
            offload: false,
            zero_copy_threshold: threshold,
        };
        let pool = Mempool::new(1024, 4096).unwrap();
        let model = IgbModel::new();
        let mut factory = DevicePorts {
            pool: pool.clone(),
            dma: ModelDma::new(&model, &pool).dma_map(),
        };
        let mut port = factory.create(&cfg).unwrap();
        let mut guest =
            virtio::VirtioUser::connect(&socket, virtio::frontend::VirtioUserOptions::default())
                .unwrap();
        let mut frame = vec![0u8; 1400];
        frame[..6].copy_from_slice(&[0xff; 6]);
        frame[6..12].copy_from_slice(&cfg.mac.0);
        frame[12..14].copy_from_slice(&[0x88, 0xb5]);
        for (i, b) in frame[14..].iter_mut().enumerate() {
            *b = i as u8;
        }
        assert_eq!(guest.send(&[&frame]).unwrap(), 1);
        let mut batch = pkt::Batch::new();
        for _ in 0..500 {
            if port.rx_batch(&mut batch) > 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let while_held = model.dma_regions();
        let got = batch.drain().next().map(|b| {
            let (head, tail) = b.parts();
            [head, tail].concat()
        });
        // Every tail back: the port's next poll returns it and closing unmaps.
        port.rx_batch(&mut batch);
        let events = port.events().iter().map(|d| (d.name, d.count)).collect();
        drop((port, guest, factory));
        let _ = std::fs::remove_dir_all(&dir);
        let got = got.expect("the guest's frame reached the port");
        (got, events, while_held, model.dma_regions())
    }

    fn event(events: &[(&'static str, u64)], name: &str) -> u64 {
        events.iter().find(|(n, _)| *n == name).map_or(0, |e| e.1)
    }

    #[test]
    fn vhost_user_interfaces_map_guest_memory_for_the_nic_and_unmap_it_when_closed() {
        let (got, events, held, after) = one_frame_through("map", None);
        assert_eq!(got.len(), 1400);
        assert_eq!(event(&events, "tx_zero_copy"), 1, "{events:?}");
        assert_eq!(event(&events, "dma_map_failed"), 0);
        assert_eq!(held, 2, "the pool and the guest's memory region");
        assert_eq!(
            after, 1,
            "the guest's region is unmapped once its tail is back"
        );
    }

    #[test]
    fn an_interface_with_threshold_0_maps_nothing() {
        let (got, events, held, _) = one_frame_through("copy", Some(0));
        assert_eq!(got.len(), 1400);
        assert_eq!(event(&events, "tx_zero_copy"), 0);
        assert_eq!(held, 1, "only the pool: no guest memory pinned");
    }

    #[test]
    fn vfio_underlay_picks_the_driver_by_device_id() {
        assert_eq!(
            vfio_driver("0000:01:00.0", 0x8086, 0x10c9).unwrap(),
            VfioDriver::Igb
        );
        assert_eq!(
            vfio_driver("0000:03:00.0", 0x8086, 0x10fb).unwrap(),
            VfioDriver::Ixgbe
        );
        assert_eq!(
            vfio_driver("0000:03:00.1", 0x8086, 0x1557).unwrap(),
            VfioDriver::Ixgbe
        );
    }

    #[test]
    fn vfio_underlay_refuses_vfs_and_other_vendors_naming_the_supported_ids() {
        // An 82599 VF, an 82576 VF, and another vendor's device with an Intel ID.
        for (vendor, device) in [(0x8086, 0x10ed), (0x8086, 0x10ca), (0x15b3, 0x10fb)] {
            let e = vfio_driver("0000:05:10.0", vendor, device)
                .unwrap_err()
                .to_string();
            assert!(e.contains("0000:05:10.0"), "{e}");
            assert!(e.contains(&format!("{vendor:04x}:{device:04x}")), "{e}");
            assert!(e.contains("10c9") && e.contains("10fb"), "{e}");
        }
    }
}
