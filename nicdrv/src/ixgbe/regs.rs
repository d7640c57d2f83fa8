//! Intel 82599 registers the driver uses, as data: byte offsets in BAR0 and bit fields.
//!
//! Each item names its register as the "Intel 82599 10 GbE Controller Datasheet" does,
//! with the section of chapter 8 ("Programming Interface") that describes it, so it can
//! be checked against the source. Per-queue registers repeat every 0x40 bytes (the
//! datasheet's "n"); the driver uses queue 0 and the functions below take the index.
//! Offsets were cross-checked against the register headers of public ixgbe drivers.

/// Device Control Register - CTRL (0x00000), 8.2.3.1.1.
pub const CTRL: u32 = 0x0_0000;
/// CTRL.PCIe Master Disable (bit 2): stop issuing new master requests (before a reset).
pub const CTRL_MASTER_DISABLE: u32 = 1 << 2;
/// CTRL.LRST (bit 3): link reset.
pub const CTRL_LRST: u32 = 1 << 3;
/// CTRL.RST (bit 26): device reset, self-clearing.
pub const CTRL_RST: u32 = 1 << 26;
/// What the init sequence writes to reset (4.6.3.2: "CTRL.RST | CTRL.LRST").
pub const CTRL_RST_MASK: u32 = CTRL_LRST | CTRL_RST;

/// Device Status Register - STATUS (0x00008), 8.2.3.1.2.
pub const STATUS: u32 = 0x0_0008;
/// STATUS.PCIe Master Enable Status (bit 19): cleared once no master request is pending
/// after CTRL.PCIe Master Disable.
pub const STATUS_MASTER_ENABLE: u32 = 1 << 19;

/// Extended Device Control Register - CTRL_EXT (0x00018), 8.2.3.1.3.
pub const CTRL_EXT: u32 = 0x0_0018;
/// CTRL_EXT.NS_DIS (bit 16): no-snoop disable (4.6.7 asks for it).
pub const CTRL_EXT_NS_DIS: u32 = 1 << 16;
/// CTRL_EXT.PFRSTD (bit 14): "PF reset done". Until the PF sets it, VFs see their
/// mailbox in reset (VFMAILBOX.RSTI) and a VF reset does not complete (RSTD), 7.10.2.
pub const CTRL_EXT_PFRSTD: u32 = 1 << 14;

/// Extended Interrupt Cause Register - EICR (0x00800), 8.2.3.5.1; read to clear.
pub const EICR: u32 = 0x0_0800;
/// Extended Interrupt Mask Clear Register - EIMC (0x00888), 8.2.3.5.5.
pub const EIMC: u32 = 0x0_0888;
/// All EIMC bits of the 82599 (bit 31 is reserved).
pub const EIMC_ALL: u32 = 0x7fff_ffff;

/// EEPROM/Flash Control Register - EEC (0x10010), 8.2.3.2.1.
pub const EEC: u32 = 0x1_0010;
/// EEC.Auto_RD (bit 9): the EEPROM auto-read after reset is done.
pub const EEC_ARD: u32 = 1 << 9;

/// Receive DMA Control Register - RDRXCTL (0x02F00), 8.2.3.8.8.
pub const RDRXCTL: u32 = 0x0_2f00;
/// RDRXCTL.CRCStrip (bit 1): strip the CRC; must match HLREG0.RXCRCSTRP.
pub const RDRXCTL_CRCSTRIP: u32 = 1 << 1;
/// RDRXCTL.DMAIDONE (bit 3): DMA initialisation after reset is done (4.6.3).
pub const RDRXCTL_DMAIDONE: u32 = 1 << 3;

/// Auto-Negotiation Control Register - AUTOC (0x042A0), 8.2.3.22.19.
pub const AUTOC: u32 = 0x0_42a0;
/// AUTOC.Restart_AN (bit 12): apply the link mode and restart negotiation.
pub const AUTOC_AN_RESTART: u32 = 1 << 12;
/// AUTOC.LMS, bits 15:13: link mode select.
pub const AUTOC_LMS_MASK: u32 = 7 << 13;
/// AUTOC.LMS = 011b: 10 GbE serial link (SFI / KR) without backplane negotiation.
pub const AUTOC_LMS_10G_SERIAL: u32 = 3 << 13;
/// AUTOC.10G_PMA_PMD_PARALLEL, bits 8:7.
pub const AUTOC_10G_PMA_PMD_MASK: u32 = 3 << 7;
/// AUTOC.10G_PMA_PMD_PARALLEL = 00b: XAUI.
pub const AUTOC_10G_XAUI: u32 = 0;

/// Link Status Register - LINKS (0x042A4), 8.2.3.22.20.
pub const LINKS: u32 = 0x0_42a4;
/// LINKS.Link Up (bit 30).
pub const LINKS_UP: u32 = 1 << 30;
/// LINKS.LINK_SPEED, bits 29:28.
pub const LINKS_SPEED_MASK: u32 = 3 << 28;
/// LINKS.LINK_SPEED = 11b: 10 Gb/s.
pub const LINKS_SPEED_10G: u32 = 3 << 28;
/// LINKS.LINK_SPEED = 10b: 1 Gb/s.
pub const LINKS_SPEED_1G: u32 = 2 << 28;
/// LINKS.LINK_SPEED = 01b: 100 Mb/s.
pub const LINKS_SPEED_100M: u32 = 1 << 28;

/// MAC Core Control 0 Register - HLREG0 (0x04240), 8.2.3.22.8.
pub const HLREG0: u32 = 0x0_4240;
/// HLREG0.TXCRCEN (bit 0): append the CRC on transmit.
pub const HLREG0_TXCRCEN: u32 = 1 << 0;
/// HLREG0.RXCRCSTRP (bit 1): strip the CRC on receive.
pub const HLREG0_RXCRCSTRP: u32 = 1 << 1;
/// HLREG0.JUMBOEN (bit 2): accept frames up to MAXFRS.MFS.
pub const HLREG0_JUMBOEN: u32 = 1 << 2;
/// HLREG0.TXPADEN (bit 10): pad short frames to 64 bytes.
pub const HLREG0_TXPADEN: u32 = 1 << 10;

/// Max Frame Size Register - MAXFRS (0x04268), 8.2.3.22.13.
pub const MAXFRS: u32 = 0x0_4268;
/// MAXFRS.MFS, bits 31:16: largest frame accepted with HLREG0.JUMBOEN (CRC included).
pub const MAXFRS_MFS_SHIFT: u32 = 16;

/// Receive Control Register - RXCTRL (0x03000), 8.2.3.8.10.
pub const RXCTRL: u32 = 0x0_3000;
/// RXCTRL.RXEN (bit 0): receive enable.
pub const RXCTRL_RXEN: u32 = 1 << 0;

/// Filter Control Register - FCTRL (0x05080), 8.2.3.7.1.
pub const FCTRL: u32 = 0x0_5080;
/// FCTRL.MPE (bit 8): multicast promiscuous.
pub const FCTRL_MPE: u32 = 1 << 8;
/// FCTRL.UPE (bit 9): unicast promiscuous.
pub const FCTRL_UPE: u32 = 1 << 9;
/// FCTRL.BAM (bit 10): accept broadcast.
pub const FCTRL_BAM: u32 = 1 << 10;

/// Receive Checksum Control - RXCSUM (0x05000), 8.2.3.7.5. IP and L4 checksums are
/// checked and reported in the descriptor whatever this register says; it only chooses
/// between the fragment checksum and the RSS hash in the write-back.
pub const RXCSUM: u32 = 0x0_5000;

/// RXCSUM.PCSD (bit 13): the write-back carries the RSS hash, not the fragment checksum.
pub const RXCSUM_PCSD: u32 = 1 << 13;
/// Multiple Receive Queues Command Register - MRQC (8.2.3.7.12). At 0x05818 as in the
/// public Linux ixgbe register header (`IXGBE_MRQC`), which drives 82599 RSS with it.
pub const MRQC: u32 = 0x0_5818;
/// MRQC.MRQE = 0001b: RSS only (no VMDq, no DCB), up to 16 queues.
pub const MRQC_RSSEN: u32 = 0x1;
/// MRQC.MRQE field, bits 3:0.
pub const MRQC_MRQE_MASK: u32 = 0xf;
/// MRQC.MRQE = 1000b: VMDq with 64 pools, no RSS (the SR-IOV layout this driver uses:
/// two queues per pool, pool p owns queues 2p and 2p+1).
pub const MRQC_VMDQEN: u32 = 0x8;
/// MRQC hash field enable: TCP over IPv4 (addresses and ports).
pub const MRQC_RSS_FIELD_IPV4_TCP: u32 = 1 << 16;
/// MRQC hash field enable: IPv4 addresses.
pub const MRQC_RSS_FIELD_IPV4: u32 = 1 << 17;
/// MRQC hash field enable: IPv6 addresses.
pub const MRQC_RSS_FIELD_IPV6: u32 = 1 << 20;
/// MRQC hash field enable: TCP over IPv6.
pub const MRQC_RSS_FIELD_IPV6_TCP: u32 = 1 << 21;
/// MRQC hash field enable: UDP over IPv4.
pub const MRQC_RSS_FIELD_IPV4_UDP: u32 = 1 << 22;
/// MRQC hash field enable: UDP over IPv6.
pub const MRQC_RSS_FIELD_IPV6_UDP: u32 = 1 << 23;
/// Every hash field the driver enables: addresses, and ports for TCP and UDP (the
/// underlay's tunnels are UDP flows told apart by their source port).
pub const MRQC_RSS_FIELDS: u32 = MRQC_RSS_FIELD_IPV4
    | MRQC_RSS_FIELD_IPV4_TCP
    | MRQC_RSS_FIELD_IPV4_UDP
    | MRQC_RSS_FIELD_IPV6
    | MRQC_RSS_FIELD_IPV6_TCP
    | MRQC_RSS_FIELD_IPV6_UDP;
/// Redirection Table - RETA\[n\] (0x05C00 + 4*n, n = 0..31), 8.2.3.7.13: 128 one-byte
/// entries, four per register, entry 4n+i in byte i; the 82599 uses bits 3:0.
pub const fn reta(n: u32) -> u32 {
    0x0_5c00 + 4 * n
}
/// Registers of the redirection table.
pub const RETA_REGS: u32 = 32;
/// RSS Random Key Register - RSSRK\[n\] (0x05C80 + 4*n, n = 0..9), 8.2.3.7.14: the
/// 40-byte Toeplitz key, byte 4n+i in bits 8i+7:8i.
pub const fn rssrk(n: u32) -> u32 {
    0x0_5c80 + 4 * n
}
/// Registers of the RSS key.
pub const RSSRK_REGS: u32 = 10;
/// Receive Queue Statistic Mapping - RQSMR\[n\] (0x02300 + 4*n), 8.2.3.8.12: which of
/// the 16 per-queue counters (QPRC, QPRDC) queues 4n..4n+3 count in, one byte each.
pub const fn rqsmr(n: u32) -> u32 {
    0x0_2300 + 4 * n
}
/// Transmit Queue Statistic Mapping - TQSM\[n\] (0x08600 + 4*n), 8.2.3.9.14: the
/// same for QPTC.
pub const fn tqsm(n: u32) -> u32 {
    0x0_8600 + 4 * n
}
/// Receive queues (and transmit queues) the driver can use: RSS spreads over at most
/// 16; the driver takes up to 4.
pub const MAX_QUEUES: usize = 4;
/// Multicast Table Array - MTA\[n\] (0x05200 + 4*n, n = 0..127), 8.2.3.7.7.
pub const MTA: u32 = 0x0_5200;
/// Entries of the multicast table array.
pub const MTA_LEN: u32 = 128;
/// Receive Address Low - RAL\[0\] (0x0A200 + 8*n), 8.2.3.7.9.
pub const RAL0: u32 = 0x0_a200;
/// Receive Address High - RAH\[0\] (0x0A204 + 8*n), 8.2.3.7.10.
pub const RAH0: u32 = 0x0_a204;
/// RAH.AV (bit 31): the address is valid.
pub const RAH_AV: u32 = 1 << 31;

/// Receive queue `n`'s register at `reg` within its 0x40-byte block: queues 0..63 at
/// 0x01000, queues 64..127 at 0x0D000 (8.2.3.8; the SR-IOV PF's queue can be past 63).
const fn rx_block(n: u32, reg: u32) -> u32 {
    if n < 64 {
        0x0_1000 + 0x40 * n + reg
    } else {
        0x0_d000 + 0x40 * (n - 64) + reg
    }
}
/// Receive Descriptor Base Address Low - RDBAL\[n\] (0x01000 + 0x40*n, n < 64), 8.2.3.8.1.
pub const fn rdbal(n: u32) -> u32 {
    rx_block(n, 0x000)
}
/// Receive Descriptor Base Address High - RDBAH\[n\] (0x01004 + 0x40*n), 8.2.3.8.2.
pub const fn rdbah(n: u32) -> u32 {
    rx_block(n, 0x004)
}
/// Receive Descriptor Length - RDLEN\[n\] (0x01008 + 0x40*n), 8.2.3.8.3: bytes, 128-byte multiple.
pub const fn rdlen(n: u32) -> u32 {
    rx_block(n, 0x008)
}
/// Receive Descriptor Head - RDH\[n\] (0x01010 + 0x40*n), 8.2.3.8.4.
pub const fn rdh(n: u32) -> u32 {
    rx_block(n, 0x010)
}
/// Split Receive Control - SRRCTL\[n\] (0x01014 + 0x40*n), 8.2.3.8.7.
pub const fn srrctl(n: u32) -> u32 {
    rx_block(n, 0x014)
}
/// Receive Descriptor Tail - RDT\[n\] (0x01018 + 0x40*n), 8.2.3.8.5.
pub const fn rdt(n: u32) -> u32 {
    rx_block(n, 0x018)
}
/// Receive Descriptor Control - RXDCTL\[n\] (0x01028 + 0x40*n), 8.2.3.8.6.
pub const fn rxdctl(n: u32) -> u32 {
    rx_block(n, 0x028)
}
/// Rx DCA Control - DCA_RXCTRL\[n\] (0x0100C + 0x40*n), 8.2.3.11.1.
pub const fn dca_rxctrl(n: u32) -> u32 {
    rx_block(n, 0x00c)
}
/// DCA_RXCTRL bit 12, which 4.6.7 says to clear (reserved, defaults to 1).
pub const DCA_RXCTRL_BIT12: u32 = 1 << 12;

/// SRRCTL.BSIZEPACKET, bits 4:0: receive buffer size in KiB (1..=16).
pub const SRRCTL_BSIZEPACKET_MASK: u32 = 0x1f;
/// SRRCTL.DESCTYPE, bits 27:25 = 001b: advanced descriptors, one buffer.
pub const SRRCTL_DESCTYPE_ADV_ONEBUF: u32 = 1 << 25;
/// SRRCTL.DESCTYPE field mask.
pub const SRRCTL_DESCTYPE_MASK: u32 = 7 << 25;
/// SRRCTL.Drop_En (bit 28): drop frames for this queue when it has no descriptor.
pub const SRRCTL_DROP_EN: u32 = 1 << 28;
/// RXDCTL.ENABLE / TXDCTL.ENABLE (bit 25): the queue is enabled (reads 1 once it is).
pub const XDCTL_ENABLE: u32 = 1 << 25;

/// DMA Tx Control - DMATXCTL (0x04A80), 8.2.3.9.2.
pub const DMATXCTL: u32 = 0x0_4a80;
/// DMATXCTL.TE (bit 0): transmit enable.
pub const DMATXCTL_TE: u32 = 1 << 0;
/// DCB Transmit Descriptor Plane Control and Status - RTTDCS (0x04900), 8.2.3.10.2.
pub const RTTDCS: u32 = 0x0_4900;
/// RTTDCS.ARBDIS (bit 6): transmit arbiter off while the queues are configured (4.6.8).
pub const RTTDCS_ARBDIS: u32 = 1 << 6;
/// Multiple Transmit Queues Command Register - MTQC (0x08120), 8.2.3.9.15.
pub const MTQC: u32 = 0x0_8120;
/// MTQC.VT_Ena (bit 1): transmit queues belong to pools (virtualization).
pub const MTQC_VT_ENA: u32 = 1 << 1;
/// MTQC.NUM_TC_OR_Q = 01b (bits 3:2) with VT_Ena: 64 pools of two transmit queues.
pub const MTQC_64VF: u32 = 1 << 2;

/// Transmit Descriptor Base Address Low - TDBAL\[n\] (0x06000 + 0x40*n), 8.2.3.9.5.
pub const fn tdbal(n: u32) -> u32 {
    0x0_6000 + 0x40 * n
}
/// Transmit Descriptor Base Address High - TDBAH\[n\] (0x06004 + 0x40*n), 8.2.3.9.6.
pub const fn tdbah(n: u32) -> u32 {
    0x0_6004 + 0x40 * n
}
/// Transmit Descriptor Length - TDLEN\[n\] (0x06008 + 0x40*n), 8.2.3.9.7.
pub const fn tdlen(n: u32) -> u32 {
    0x0_6008 + 0x40 * n
}
/// Transmit Descriptor Head - TDH\[n\] (0x06010 + 0x40*n), 8.2.3.9.8.
pub const fn tdh(n: u32) -> u32 {
    0x0_6010 + 0x40 * n
}
/// Transmit Descriptor Tail - TDT\[n\] (0x06018 + 0x40*n), 8.2.3.9.9.
pub const fn tdt(n: u32) -> u32 {
    0x0_6018 + 0x40 * n
}
/// Transmit Descriptor Control - TXDCTL\[n\] (0x06028 + 0x40*n), 8.2.3.9.10.
pub const fn txdctl(n: u32) -> u32 {
    0x0_6028 + 0x40 * n
}
/// TXDCTL.PTHRESH (bits 6:0) = 32 and HTHRESH (bits 14:8) = 1: prefetch when at least
/// 32 descriptors are free on chip and one is ready in memory (the usual poll-mode
/// setting; WTHRESH stays 0 so each RS descriptor is written back at once).
pub const TXDCTL_THRESH: u32 = 32 | (1 << 8);

/// Statistics registers, 8.2.3.23; all clear on read.
pub mod stats {
    /// CRC Error Count - CRCERRS (0x04000).
    pub const CRCERRS: u32 = 0x0_4000;
    /// Receive Length Error Count - RLEC (0x04040).
    pub const RLEC: u32 = 0x0_4040;
    /// Missed Packets Count - MPC\[0\] (0x03FA0): no room in packet buffer 0.
    pub const MPC0: u32 = 0x0_3fa0;
    /// Good Packets Received Count - GPRC (0x04074).
    pub const GPRC: u32 = 0x0_4074;
    /// Good Packets Transmitted Count - GPTC (0x04080).
    pub const GPTC: u32 = 0x0_4080;
    /// Good Octets Received Count Low - GORCL (0x04088).
    pub const GORCL: u32 = 0x0_4088;
    /// Good Octets Received Count High - GORCH (0x0408C).
    pub const GORCH: u32 = 0x0_408c;
    /// Good Octets Transmitted Count Low - GOTCL (0x04090).
    pub const GOTCL: u32 = 0x0_4090;
    /// Good Octets Transmitted Count High - GOTCH (0x04094).
    pub const GOTCH: u32 = 0x0_4094;
    /// Receive Oversize Count - ROC (0x040AC).
    pub const ROC: u32 = 0x0_40ac;
    /// Receive Undersize Count - RUC (0x040A4).
    pub const RUC: u32 = 0x0_40a4;
    /// Queue Packets Received Drop Count - QPRDC\[0\] (0x01430): dropped for want of a
    /// descriptor on queue 0 (with SRRCTL.Drop_En).
    pub const QPRDC0: u32 = 0x0_1430;

    /// Queue Packets Received Count - QPRC\[n\] (0x01030 + 0x40*n, n = 0..15): frames
    /// received on the queues RQSMR maps to counter n.
    pub const fn qprc(n: u32) -> u32 {
        0x0_1030 + 0x40 * n
    }
    /// Queue Packets Received Drop Count - QPRDC\[n\] (0x01430 + 0x40*n, n = 0..15).
    pub const fn qprdc(n: u32) -> u32 {
        0x0_1430 + 0x40 * n
    }
    /// Queue Packets Transmitted Count - QPTC\[n\] (0x06030 + 0x40*n, n = 0..15), as
    /// the public Linux ixgbe header places it; TQSM maps queues to counters.
    pub const fn qptc(n: u32) -> u32 {
        0x0_6030 + 0x40 * n
    }
    /// Every statistics register the driver reads, for clearing them at init (4.6.3).
    pub const ALL: &[u32] = &[
        CRCERRS, RLEC, MPC0, GPRC, GPTC, GORCL, GORCH, GOTCL, GOTCH, ROC, RUC, QPRDC0,
    ];
}

/// Advanced descriptor fields (7.1.6 receive, 7.2.3.2.4 transmit data, 7.2.3.2.3
/// transmit context). Same layout as the 82576's; the error bits differ.
pub mod desc {
    /// RX write-back extended status DD (bit 0): the descriptor is done.
    pub const RX_STATUS_DD: u32 = 1 << 0;
    /// RX write-back extended status EOP (bit 1): last descriptor of a frame.
    pub const RX_STATUS_EOP: u32 = 1 << 1;
    /// RX write-back extended status VP (bit 3): the frame had an 802.1Q tag.
    pub const RX_STATUS_VP: u32 = 1 << 3;
    /// RX write-back extended status L4I (bit 5): the TCP/UDP checksum was checked.
    pub const RX_STATUS_L4CS: u32 = 1 << 5;
    /// RX write-back extended status IPCS (bit 6): the IPv4 header checksum was checked.
    pub const RX_STATUS_IPCS: u32 = 1 << 6;
    /// RX write-back extended error CE (bit 24): CRC or symbol error.
    pub const RX_ERR_CE: u32 = 1 << 24;
    /// RX write-back extended error LE (bit 25): length error.
    pub const RX_ERR_LE: u32 = 1 << 25;
    /// RX write-back extended error PE (bit 27): packet error.
    pub const RX_ERR_PE: u32 = 1 << 27;
    /// RX write-back extended error OSE (bit 28): oversize.
    pub const RX_ERR_OSE: u32 = 1 << 28;
    /// RX write-back extended error USE / RXE (bit 29): undersize or other MAC error.
    pub const RX_ERR_USE: u32 = 1 << 29;
    /// RX write-back extended error TCPE / L4E (bit 30): bad TCP/UDP checksum.
    pub const RX_ERR_TCPE: u32 = 1 << 30;
    /// RX write-back extended error IPE (bit 31): bad IPv4 header checksum.
    pub const RX_ERR_IPE: u32 = 1 << 31;
    /// Errors that mean a damaged frame, to be dropped (checksum errors are not:
    /// software checks those frames again).
    pub const RX_ERR_FRAME: u32 = RX_ERR_CE | RX_ERR_LE | RX_ERR_PE | RX_ERR_OSE | RX_ERR_USE;

    /// TX descriptor DTYP (cmd_type_len bits 23:20) = 0011b: advanced data.
    pub const TX_DTYP_DATA: u32 = 3 << 20;
    /// TX descriptor DTYP = 0010b: advanced context.
    pub const TX_DTYP_CTXT: u32 = 2 << 20;
    /// DTYP field mask.
    pub const TX_DTYP_MASK: u32 = 0xf << 20;
    /// DCMD.EOP (bit 24): end of packet.
    pub const TX_CMD_EOP: u32 = 1 << 24;
    /// DCMD.IFCS (bit 25): insert the FCS.
    pub const TX_CMD_IFCS: u32 = 1 << 25;
    /// DCMD.RS (bit 27): report status (write DD back).
    pub const TX_CMD_RS: u32 = 1 << 27;
    /// DCMD.DEXT (bit 29): advanced descriptor.
    pub const TX_CMD_DEXT: u32 = 1 << 29;
    /// olinfo_status STA.DD (bit 0), written back when done.
    pub const TX_STATUS_DD: u32 = 1 << 0;
    /// olinfo_status CC (bit 7): a context descriptor applies to this frame.
    pub const TX_OLINFO_CC: u32 = 1 << 7;
    /// olinfo_status POPTS.TXSM (bit 9): insert the TCP/UDP checksum.
    pub const TX_OLINFO_TXSM: u32 = 1 << 9;
    /// olinfo_status PAYLEN, bits 31:14.
    pub const TX_PAYLEN_SHIFT: u32 = 14;
    /// Context descriptor vlan_macip_lens: MACLEN, bits 15:9 (IPLEN is bits 8:0).
    pub const CTX_MACLEN_SHIFT: u32 = 9;
    /// Context descriptor type_tucmd_mlhl TUCMD.IPV4 (bit 10): IPv4 (else IPv6).
    pub const CTX_TUCMD_IPV4: u32 = 1 << 10;
    /// Context descriptor TUCMD.L4T, bits 12:11: 00b UDP, 01b TCP.
    pub const CTX_TUCMD_L4T_TCP: u32 = 1 << 11;
}

/// SR-IOV registers of the PF (8.2.3.27, "PF/VF mailbox and virtualization") and of a
/// VF's own BAR0 (8.3). Offsets and bits as in the public Linux ixgbe/ixgbevf headers
/// (`ixgbe_type.h`, `ixgbe_mbx.h`); the section numbers are the datasheet's chapter
/// structure as we know it, not re-read page by page.
pub mod sriov {
    /// Mailbox words (64 bytes), 8.2.3.27.
    pub const MAILBOX_WORDS: usize = 16;
    /// VFs the 82599 supports (pools 0..63; the PF keeps one pool).
    pub const MAX_VFS: usize = 63;
    /// PF Mailbox - PFMAILBOX\[n\] (0x04B00 + 4*n, n = 0..63), 8.2.3.27.1.
    pub const fn pfmailbox(vf: u32) -> u32 {
        0x0_4b00 + 4 * vf
    }
    /// PFMAILBOX.STS (bit 0): the PF wrote a message for the VF (sets its PFSTS).
    pub const PFMAILBOX_STS: u32 = 1 << 0;
    /// PFMAILBOX.ACK (bit 1): the PF took the VF's message (sets its PFACK).
    pub const PFMAILBOX_ACK: u32 = 1 << 1;
    /// PFMAILBOX.VFU (bit 2, read only): the VF holds the buffer.
    pub const PFMAILBOX_VFU: u32 = 1 << 2;
    /// PFMAILBOX.PFU (bit 3): the PF holds the buffer; set only while VFU is clear.
    pub const PFMAILBOX_PFU: u32 = 1 << 3;
    /// PFMAILBOX.RVFU (bit 4): release a VF that hangs on to the buffer.
    pub const PFMAILBOX_RVFU: u32 = 1 << 4;
    /// PF Mailbox Memory - PFMBMEM\[n\] (0x13000 + 0x40*n), 16 words per VF, 8.2.3.27.2.
    pub const fn pfmbmem(vf: u32, word: u32) -> u32 {
        0x1_3000 + 0x40 * vf + 4 * word
    }
    /// PF Mailbox Interrupt Causes - PFMBICR\[n\] (0x00710 + 4*n, n = 0..3), 8.2.3.27.3:
    /// write 1 to clear. Register n covers VFs 16n..16n+15.
    pub const fn pfmbicr(n: u32) -> u32 {
        0x0_0710 + 4 * n
    }
    /// PFMBICR.VFREQ, bits 15:0: VF 16n+i sent a message.
    pub const PFMBICR_VFREQ_MASK: u32 = 0xffff;
    /// PFMBICR.VFACK, bits 31:16: VF 16n+i acknowledged a message.
    pub const PFMBICR_VFACK_SHIFT: u32 = 16;
    /// PF Mailbox Interrupt Mask - PFMBIMR\[n\] (0x00720 + 4*n), 8.2.3.27.4.
    pub const fn pfmbimr(n: u32) -> u32 {
        0x0_0720 + 4 * n
    }
    /// Virtualization Control - VT_CTL (0x051B0), 8.2.3.27.13.
    pub const VT_CTL: u32 = 0x0_51b0;
    /// VT_CTL.VT_Ena (bit 0): virtualization (pool switching) on.
    pub const VT_CTL_VT_ENABLE: u32 = 1 << 0;
    /// VT_CTL.DEF_PL, bits 12:7: the default pool, which gets frames no filter claims.
    pub const VT_CTL_POOL_SHIFT: u32 = 7;
    /// VT_CTL.DEF_PL field mask.
    pub const VT_CTL_POOL_MASK: u32 = 0x3f << VT_CTL_POOL_SHIFT;
    /// VT_CTL.Dis_Def_Pool (bit 29): drop frames no filter claims instead.
    pub const VT_CTL_DIS_DEFPL: u32 = 1 << 29;
    /// VT_CTL.Rpl_En (bit 30): replicate broadcast and multicast to every pool that
    /// accepts them.
    pub const VT_CTL_REPLEN: u32 = 1 << 30;
    /// PCIe Control Extended - GCR_EXT (0x11050), 8.2.3.27.x: the VT mode, which
    /// fixes how many pools (and queues per pool) the device exposes.
    pub const GCR_EXT: u32 = 0x1_1050;
    /// GCR_EXT.VT_Mode, bits 1:0.
    pub const GCR_EXT_VT_MODE_MASK: u32 = 3;
    /// GCR_EXT.VT_Mode = 11b: 64 pools (VFs), two queues each.
    pub const GCR_EXT_VT_MODE_64: u32 = 3;
    /// General Purpose Interrupt Enable - GPIE (0x00898), 8.2.3.5.18.
    pub const GPIE: u32 = 0x0_0898;
    /// GPIE.Multiple_MSIX (bit 4): MSI-X mode (the VFs' drivers use MSI-X vectors).
    pub const GPIE_MSIX_MODE: u32 = 1 << 4;
    /// GPIE.VT_Mode, bits 15:14 = 11b: interrupt layout of 64 pools (as GCR_EXT).
    pub const GPIE_VTMODE_64: u32 = 3 << 14;
    /// GPIE.VT_Mode field mask.
    pub const GPIE_VTMODE_MASK: u32 = 3 << 14;
    /// GPIE.EIAME (bit 30): auto-mask on interrupt.
    pub const GPIE_EIAME: u32 = 1 << 30;
    /// GPIE.PBA_support (bit 31): MSI-X pending-bit array support.
    pub const GPIE_PBA_SUPPORT: u32 = 1 << 31;
    /// Pools in the 64-pool mode (the VFs' and the PF's).
    pub const POOLS: u32 = 64;
    /// PF VM Offload - VMOLR\[n\] (0x0F000 + 4*n, n = 0..63), 8.2.3.27.x: what pool
    /// n accepts.
    pub const fn vmolr(pool: u32) -> u32 {
        0x0_f000 + 4 * pool
    }
    /// VMOLR.AUPE (bit 24): accept untagged frames.
    pub const VMOLR_AUPE: u32 = 1 << 24;
    /// VMOLR.ROMPE (bit 25): accept multicast that hits the MTA.
    pub const VMOLR_ROMPE: u32 = 1 << 25;
    /// VMOLR.ROPE (bit 26): accept unicast that hits the unicast table array.
    pub const VMOLR_ROPE: u32 = 1 << 26;
    /// VMOLR.BAM (bit 27): accept broadcast.
    pub const VMOLR_BAM: u32 = 1 << 27;
    /// VMOLR.MPE (bit 28): multicast promiscuous.
    pub const VMOLR_MPE: u32 = 1 << 28;
    /// PF DMA Tx General Switch Control - PFDTXGSWC (0x08220), 8.2.3.27.x.
    pub const PFDTXGSWC: u32 = 0x0_8220;
    /// PFDTXGSWC.LBE (bit 0): local switching: a pool's frame to another pool's
    /// address is looped back inside the device (VM-to-VM and PF-to-VF traffic).
    pub const PFDTXGSWC_VT_LBEN: u32 = 1 << 0;
    /// PF VF Receive Enable - PFVFRE\[n\] (0x051E0 + 4*n, n = 0..1): bit i of register
    /// n lets pool 32n+i receive.
    pub const fn pfvfre(n: u32) -> u32 {
        0x0_51e0 + 4 * n
    }
    /// PF VF Transmit Enable - PFVFTE\[n\] (0x08110 + 4*n, n = 0..1).
    pub const fn pfvfte(n: u32) -> u32 {
        0x0_8110 + 4 * n
    }
    /// PF VF Anti-Spoof Control - PFVFSPOOF\[n\] (0x08200 + 4*n, n = 0..7): pools
    /// 8n..8n+7, MAC anti-spoofing in bits 7:0, VLAN anti-spoofing in bits 15:8.
    pub const fn pfvfspoof(n: u32) -> u32 {
        0x0_8200 + 4 * n
    }
    /// PFVFSPOOF: VLAN anti-spoof bits start here.
    pub const PFVFSPOOF_VLAN_SHIFT: u32 = 8;
    /// Receive Address Low - RAL\[n\] (0x0A200 + 8*n, n = 0..127).
    pub const fn ral(n: u32) -> u32 {
        0x0_a200 + 8 * n
    }
    /// Receive Address High - RAH\[n\] (0x0A204 + 8*n).
    pub const fn rah(n: u32) -> u32 {
        0x0_a204 + 8 * n
    }
    /// MAC Pool Select Array low - MPSAR\[2n\] (0x0A600 + 8*n): pools 0..31 that
    /// receive frames matching RAL/RAH\[n\].
    pub const fn mpsar_lo(n: u32) -> u32 {
        0x0_a600 + 8 * n
    }
    /// MPSAR high half (0x0A604 + 8*n): pools 32..63.
    pub const fn mpsar_hi(n: u32) -> u32 {
        0x0_a604 + 8 * n
    }

    /// PF VF Function Level Reset Event - PFVFLRE\[n\] (n = 0: 0x00600, VFs 0..31;
    /// n = 1: 0x001C0, VFs 32..63), 8.2.3.27.x: bit i set when VF 32n+i was reset
    /// through PCIe (FLR). The offsets are those of the public Linux ixgbe header as we
    /// remember them (`IXGBE_VFLRE`); they were not found again in a copy of it.
    pub const fn pfvflre(n: u32) -> u32 {
        if n == 0 { 0x0_0600 } else { 0x0_01c0 }
    }
    /// PFVFLREC\[n\] (0x00700 + 4*n): write 1 to clear the VFLRE bits.
    pub const fn pfvflrec(n: u32) -> u32 {
        0x0_0700 + 4 * n
    }
    /// Switch Security Violation Packet Count - SSVPC (0x08780), 8.2.3.23: frames a
    /// pool sent that anti-spoofing dropped (clear on read).
    pub const SSVPC: u32 = 0x0_8780;
    /// Queues each pool owns in the 64-pool layout (pool p: queues 2p and 2p+1).
    pub const QUEUES_PER_POOL: u32 = 2;

    /// A VF's own registers (its BAR0), 8.3.
    pub mod vf {
        /// VF Control - VFCTRL (0x00000).
        pub const VFCTRL: u32 = 0x0_0000;
        /// VFCTRL.RST (bit 26): reset the VF (its queues and mailbox state).
        pub const VFCTRL_RST: u32 = 1 << 26;
        /// VF Status - VFSTATUS (0x00008).
        pub const VFSTATUS: u32 = 0x0_0008;
        /// VF Link Status - VFLINKS (0x00010).
        pub const VFLINKS: u32 = 0x0_0010;
        /// VF Mailbox - VFMAILBOX (0x002FC).
        pub const VFMAILBOX: u32 = 0x0_02fc;
        /// VF Mailbox Memory - VFMBMEM (0x00200), 16 words.
        pub const VFMBMEM: u32 = 0x0_0200;
        /// VFMAILBOX.REQ (bit 0): the VF sent a message.
        pub const VFMAILBOX_REQ: u32 = 1 << 0;
        /// VFMAILBOX.ACK (bit 1): the VF took the PF's message.
        pub const VFMAILBOX_ACK: u32 = 1 << 1;
        /// VFMAILBOX.VFU (bit 2): the VF holds the buffer.
        pub const VFMAILBOX_VFU: u32 = 1 << 2;
        /// VFMAILBOX.PFU (bit 3, read only): the PF holds the buffer.
        pub const VFMAILBOX_PFU: u32 = 1 << 3;
        /// VFMAILBOX.PFSTS (bit 4, read to clear): the PF wrote a message.
        pub const VFMAILBOX_PFSTS: u32 = 1 << 4;
        /// VFMAILBOX.PFACK (bit 5, read to clear): the PF took the VF's message.
        pub const VFMAILBOX_PFACK: u32 = 1 << 5;
        /// VFMAILBOX.RSTI (bit 6): the PF is resetting.
        pub const VFMAILBOX_RSTI: u32 = 1 << 6;
        /// VFMAILBOX.RSTD (bit 7, read to clear): the PF finished resetting the VF.
        pub const VFMAILBOX_RSTD: u32 = 1 << 7;
        /// VF Receive Descriptor Base Address Low - VFRDBAL\[n\] (0x01000 + 0x40*n).
        pub const fn vfrdbal(n: u32) -> u32 {
            0x0_1000 + 0x40 * n
        }
        /// VF Transmit Descriptor Base Address Low - VFTDBAL\[n\] (0x02000 + 0x40*n).
        pub const fn vftdbal(n: u32) -> u32 {
            0x0_2000 + 0x40 * n
        }
        /// The VF's receive queue `n` register at `pf_offset - rdbal(0)` within the
        /// 0x40-byte block (RDBAH +4, RDLEN +8, RDH +0x10, SRRCTL +0x14, RDT +0x18,
        /// RXDCTL +0x28: the PF's per-queue layout).
        pub const fn vf_rx(n: u32, reg_in_block: u32) -> u32 {
            vfrdbal(n) + reg_in_block
        }
        /// The same for transmit queue `n` (TDBAH +4, TDLEN +8, TDH +0x10, TDT +0x18,
        /// TXDCTL +0x28).
        pub const fn vf_tx(n: u32, reg_in_block: u32) -> u32 {
            vftdbal(n) + reg_in_block
        }
    }
}
