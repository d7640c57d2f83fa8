//! Intel 82576 registers the driver uses, as data: byte offsets in BAR0 and bit fields.
//!
//! Each item names the register heading in the "Intel 82576EB Gigabit Ethernet
//! Controller Datasheet", chapter 8 ("Programming Interface"), so it can be checked
//! against the source. Per-queue registers repeat every 0x40 bytes for queues 0..=3 in
//! these blocks (the datasheet's "n" index); the driver uses queue 0 only.

/// Device Control Register - CTRL (0x00000).
pub const CTRL: u32 = 0x0000;
/// CTRL.SLU: set link up (copper: let the MAC follow the PHY's link indication).
pub const CTRL_SLU: u32 = 1 << 6;
/// CTRL.RST: device reset (self-clearing): resets everything except the PCI config
/// space and the PHY.
pub const CTRL_RST: u32 = 1 << 26;

/// Device Status Register - STATUS (0x00008).
pub const STATUS: u32 = 0x0008;
/// STATUS.LU: link up.
pub const STATUS_LU: u32 = 1 << 1;

/// EEPROM/Flash Control Register - EECD (0x00010).
pub const EECD: u32 = 0x0010;
/// EECD.AUTO_RD: EEPROM auto-read after reset is done.
pub const EECD_AUTO_RD: u32 = 1 << 9;

/// MDI Control Register - MDIC (0x00020): indirect access to the internal PHY.
pub const MDIC: u32 = 0x0020;
/// MDIC.DATA, bits 15:0.
pub const MDIC_DATA_MASK: u32 = 0xffff;
/// MDIC.REGADD, bits 20:16: PHY register.
pub const MDIC_REG_SHIFT: u32 = 16;
/// MDIC.PHYADD, bits 25:21: PHY address (the 82576's internal PHY answers at 1).
pub const MDIC_PHY_SHIFT: u32 = 21;
/// MDIC.OP = 01b: MDI write.
pub const MDIC_OP_WRITE: u32 = 1 << 26;
/// MDIC.OP = 10b: MDI read.
pub const MDIC_OP_READ: u32 = 2 << 26;
/// MDIC.R: ready (the operation completed).
pub const MDIC_READY: u32 = 1 << 28;
/// MDIC.E: error (no PHY answered, or a bad register).
pub const MDIC_ERROR: u32 = 1 << 30;
/// The internal PHY's MDIO address.
pub const PHY_ADDR: u32 = 1;

/// PHY Control Register (PHY register 0, IEEE 802.3 clause 22 "BMCR").
pub const PHY_BMCR: u32 = 0;
/// BMCR: speed selection MSB (with LSB 0: 1000 Mb/s).
pub const BMCR_SPEED_1000: u16 = 1 << 6;
/// BMCR: full duplex.
pub const BMCR_FULL_DUPLEX: u16 = 1 << 8;
/// BMCR: restart auto-negotiation (self-clearing).
pub const BMCR_AN_RESTART: u16 = 1 << 9;
/// BMCR: auto-negotiation enable.
pub const BMCR_AN_ENABLE: u16 = 1 << 12;

/// Interrupt Mask Clear - IMC (0x0150C).
pub const IMC: u32 = 0x150c;
/// Extended Interrupt Mask Clear - EIMC (0x01528).
pub const EIMC: u32 = 0x1528;
/// Interrupt Cause Read - ICR (0x01500), clear on read.
pub const ICR: u32 = 0x1500;

/// Receive Control Register - RCTL (0x00100).
pub const RCTL: u32 = 0x0100;
/// RCTL.RXEN: receiver enable.
pub const RCTL_RXEN: u32 = 1 << 1;
/// RCTL.UPE: unicast promiscuous.
pub const RCTL_UPE: u32 = 1 << 3;
/// RCTL.MPE: multicast promiscuous.
pub const RCTL_MPE: u32 = 1 << 4;
/// RCTL.LPE: long packet enable (frames up to RLPML).
pub const RCTL_LPE: u32 = 1 << 5;
/// RCTL.BAM: accept broadcast.
pub const RCTL_BAM: u32 = 1 << 15;
/// RCTL.SECRC: strip the Ethernet CRC from received frames.
pub const RCTL_SECRC: u32 = 1 << 26;

/// Receive Long Packet Maximum Length - RLPML (0x05004).
pub const RLPML: u32 = 0x5004;
/// Receive Checksum Control - RXCSUM (0x05000).
pub const RXCSUM: u32 = 0x5000;

/// Multicast Table Array - MTA\[127:0\] (0x05200 + 4*n).
pub const MTA: u32 = 0x5200;
/// Entries of the multicast table array.
pub const MTA_LEN: u32 = 128;
/// Receive Address Low - RAL\[0\] (0x05400).
pub const RAL0: u32 = 0x5400;
/// Receive Address High - RAH\[0\] (0x05404).
pub const RAH0: u32 = 0x5404;
/// RAH.AV: the address is valid (used by the filter).
pub const RAH_AV: u32 = 1 << 31;

/// Receive Descriptor Base Address Low - RDBAL\[n\] (0x0C000 + 0x40*n).
pub const RDBAL0: u32 = 0xc000;
/// Receive Descriptor Base Address High - RDBAH\[n\] (0x0C004 + 0x40*n).
pub const RDBAH0: u32 = 0xc004;
/// Receive Descriptor Ring Length - RDLEN\[n\] (0x0C008 + 0x40*n), in bytes (128-byte multiple).
pub const RDLEN0: u32 = 0xc008;
/// Split and Replication Receive Control - SRRCTL\[n\] (0x0C00C + 0x40*n).
pub const SRRCTL0: u32 = 0xc00c;
/// SRRCTL.BSIZEPACKET, bits 6:0: receive buffer size in KiB.
pub const SRRCTL_BSIZEPACKET_MASK: u32 = 0x7f;
/// SRRCTL.DESCTYPE = 001b: advanced descriptors, one buffer.
pub const SRRCTL_DESCTYPE_ADV_ONEBUF: u32 = 1 << 25;
/// SRRCTL.Drop_En: drop frames when this queue has no descriptors (instead of
/// stalling every queue behind it).
pub const SRRCTL_DROP_EN: u32 = 1 << 31;
/// Receive Descriptor Head - RDH\[n\] (0x0C010 + 0x40*n).
pub const RDH0: u32 = 0xc010;
/// Receive Descriptor Tail - RDT\[n\] (0x0C018 + 0x40*n).
pub const RDT0: u32 = 0xc018;
/// Receive Descriptor Control - RXDCTL\[n\] (0x0C028 + 0x40*n).
pub const RXDCTL0: u32 = 0xc028;
/// RXDCTL.ENABLE / TXDCTL.ENABLE: the queue is enabled (reads back 1 once it is).
pub const XDCTL_ENABLE: u32 = 1 << 25;

/// Transmit Control Register - TCTL (0x00400).
pub const TCTL: u32 = 0x0400;
/// TCTL.EN: transmitter enable.
pub const TCTL_EN: u32 = 1 << 1;
/// TCTL.PSP: pad short packets to 64 bytes.
pub const TCTL_PSP: u32 = 1 << 3;
/// TCTL.CT, bits 11:4: collision threshold (IEEE value 15).
pub const TCTL_CT_15: u32 = 0x0f << 4;
/// TCTL.COLD, bits 21:12: collision distance (full duplex value 0x3F).
pub const TCTL_COLD_FD: u32 = 0x3f << 12;

/// Transmit Descriptor Base Address Low - TDBAL\[n\] (0x0E000 + 0x40*n).
pub const TDBAL0: u32 = 0xe000;
/// Transmit Descriptor Base Address High - TDBAH\[n\] (0x0E004 + 0x40*n).
pub const TDBAH0: u32 = 0xe004;
/// Transmit Descriptor Ring Length - TDLEN\[n\] (0x0E008 + 0x40*n).
pub const TDLEN0: u32 = 0xe008;
/// Transmit Descriptor Head - TDH\[n\] (0x0E010 + 0x40*n).
pub const TDH0: u32 = 0xe010;
/// Transmit Descriptor Tail - TDT\[n\] (0x0E018 + 0x40*n).
pub const TDT0: u32 = 0xe018;
/// Transmit Descriptor Control - TXDCTL\[n\] (0x0E028 + 0x40*n).
pub const TXDCTL0: u32 = 0xe028;

/// Statistics registers (datasheet "Statistics Register Descriptions"); all clear on read.
pub mod stats {
    /// CRC Error Count - CRCERRS (0x04000).
    pub const CRCERRS: u32 = 0x4000;
    /// Missed Packets Count - MPC (0x04010): dropped for lack of packet buffer space.
    pub const MPC: u32 = 0x4010;
    /// Good Packets Received Count - GPRC (0x04074).
    pub const GPRC: u32 = 0x4074;
    /// Good Packets Transmitted Count - GPTC (0x04080).
    pub const GPTC: u32 = 0x4080;
    /// Good Octets Received Count Low - GORCL (0x04088); high half follows.
    pub const GORCL: u32 = 0x4088;
    /// Good Octets Received Count High - GORCH (0x0408C).
    pub const GORCH: u32 = 0x408c;
    /// Good Octets Transmitted Count Low - GOTCL (0x04090); high half follows.
    pub const GOTCL: u32 = 0x4090;
    /// Good Octets Transmitted Count High - GOTCH (0x04094).
    pub const GOTCH: u32 = 0x4094;
    /// Receive No Buffers Count - RNBC (0x040A0): no descriptor was available.
    pub const RNBC: u32 = 0x40a0;
    /// Receive Oversize Count - ROC (0x040AC).
    pub const ROC: u32 = 0x40ac;
}

/// Advanced descriptor fields (datasheet "Advanced Receive Descriptors" and
/// "Advanced Transmit Data Descriptor"). Descriptors are two little-endian qwords.
pub mod desc {
    /// RX write-back, extended status bit DD: the descriptor is done.
    pub const RX_STATUS_DD: u32 = 1 << 0;
    /// RX write-back, extended status bit EOP: last descriptor of a frame.
    pub const RX_STATUS_EOP: u32 = 1 << 1;
    /// RX write-back extended errors that mean a damaged frame: CE (CRC/alignment),
    /// SE (symbol), SEQ (sequence), CXE (carrier extension), RXE (RX data error).
    pub const RX_ERR_FRAME: u32 = (1 << 24) | (1 << 25) | (1 << 26) | (1 << 28) | (1 << 31);

    /// TX data descriptor DTYP = 0011b (advanced data), cmd_type_len bits 23:20.
    pub const TX_DTYP_DATA: u32 = 3 << 20;
    /// DCMD.EOP: end of packet.
    pub const TX_CMD_EOP: u32 = 1 << 24;
    /// DCMD.IFCS: insert the Ethernet FCS.
    pub const TX_CMD_IFCS: u32 = 1 << 25;
    /// DCMD.RS: report status (write DD back when done).
    pub const TX_CMD_RS: u32 = 1 << 27;
    /// DCMD.DEXT: descriptor extension (advanced format).
    pub const TX_CMD_DEXT: u32 = 1 << 29;
    /// olinfo_status PAYLEN, bits 31:14: the frame's length.
    pub const TX_PAYLEN_SHIFT: u32 = 14;
    /// TX write-back STA.DD: the descriptor is done.
    pub const TX_STATUS_DD: u32 = 1 << 0;
}
