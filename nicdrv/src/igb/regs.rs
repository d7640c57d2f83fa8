//! Intel 82576 registers the driver uses, as data: byte offsets in BAR0 and bit fields.
//!
//! Each item names the register heading in the "Intel 82576EB Gigabit Ethernet
//! Controller Datasheet", chapter 8 ("Programming Interface"), so it can be checked
//! against the source. Per-queue registers repeat every 0x40 bytes for queues 0..=3 in
//! these blocks (the datasheet's "n" index); the PF driver uses queues 0..=3 (RSS) or
//! its pool's queue under SR-IOV.

/// Device Control Register - CTRL (0x00000).
pub const CTRL: u32 = 0x0000;
/// CTRL.SLU: set link up (copper: let the MAC follow the PHY's link indication).
pub const CTRL_SLU: u32 = 1 << 6;
/// CTRL.VME: VLAN mode enable (strip tags on receive when not in VMDq mode).
pub const CTRL_VME: u32 = 1 << 30;
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
/// General Purpose Interrupt Enable - GPIE (0x01514).
pub const GPIE: u32 = 0x1514;
/// GPIE.NSICR: reading ICR clears it regardless of the interrupt state.
pub const GPIE_NSICR: u32 = 1 << 0;
/// GPIE.Multiple_MSIX: MSI-X mode, one vector per cause group. SR-IOV needs it: the
/// VFs' interrupts are MSI-X vectors the device raises only in this mode.
pub const GPIE_MSIX_MODE: u32 = 1 << 4;
/// GPIE.EIAME: extended interrupt auto-mask enable.
pub const GPIE_EIAME: u32 = 1 << 30;
/// GPIE.PBA_support: MSI-X pending bits in the PBA.
pub const GPIE_PBA: u32 = 1 << 31;
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
/// RXCSUM.IPOFLD: check the IPv4 header checksum on receive (status IPCS, error IPE).
pub const RXCSUM_IPOFLD: u32 = 1 << 8;
/// RXCSUM.TUOFLD: check TCP/UDP checksums on receive (status L4I/UDPCS, error L4E).
pub const RXCSUM_TUOFLD: u32 = 1 << 9;
/// RXCSUM.PCSD: packet checksum disable. The descriptor's upper dword of qword 0
/// carries either the fragment checksum and IP ID (0) or the RSS hash (1); RSS
/// needs 1 (QEMU's igb disables RSS without it, as the datasheet's table says).
pub const RXCSUM_PCSD: u32 = 1 << 13;

/// MRQC.Multiple Receive Queues Enable = 010b: RSS only, queues picked by the
/// redirection table (datasheet 8.10.x "Multiple Receive Queues Command").
pub const MRQC_ENABLE_RSS: u32 = 0x2;
/// MRQC hash fields: TCP over IPv4.
pub const MRQC_RSS_FIELD_IPV4_TCP: u32 = 1 << 16;
/// MRQC hash fields: IPv4 addresses only (frames without a hashed L4).
pub const MRQC_RSS_FIELD_IPV4: u32 = 1 << 17;
/// MRQC hash fields: TCP over IPv6 (with extension headers).
pub const MRQC_RSS_FIELD_IPV6_TCP_EX: u32 = 1 << 18;
/// MRQC hash fields: IPv6 addresses only.
pub const MRQC_RSS_FIELD_IPV6: u32 = 1 << 20;
/// MRQC hash fields: TCP over IPv6.
pub const MRQC_RSS_FIELD_IPV6_TCP: u32 = 1 << 21;
/// MRQC hash fields: UDP over IPv4.
pub const MRQC_RSS_FIELD_IPV4_UDP: u32 = 1 << 22;
/// MRQC hash fields: UDP over IPv6.
pub const MRQC_RSS_FIELD_IPV6_UDP: u32 = 1 << 23;
/// Redirection Table - RETA\[31:0\] (0x05C00 + 4*n): 128 one-byte entries, the low
/// bits of each a queue index; entry `hash & 0x7f` picks the queue.
pub const RETA: u32 = 0x5c00;
/// Entries in the redirection table.
pub const RETA_ENTRIES: u32 = 128;
/// RSS Random Key - RSSRK\[9:0\] (0x05C80 + 4*n): 40 bytes, byte 0 lowest in RSSRK\[0\].
pub const RSSRK: u32 = 0x5c80;
/// Queues the PF driver runs without SR-IOV (the 82576 has 16; four cover the
/// dispatcher cores this product targets).
pub const MAX_PF_QUEUES: usize = 4;

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
    /// RX write-back extended status VP (bit 3): the frame was 802.1Q-tagged and the
    /// device stripped the tag; its TCI is in the write-back's VLAN field (qword 1,
    /// bits 63:48).
    pub const RX_STATUS_VP: u32 = 1 << 3;
    /// RX write-back extended status UDPCS (bit 4): the L4 checksum checked was UDP's.
    pub const RX_STATUS_UDPCS: u32 = 1 << 4;
    /// RX write-back extended status L4I (bit 5): the TCP/UDP checksum was checked.
    pub const RX_STATUS_L4I: u32 = 1 << 5;
    /// RX write-back extended status IPCS (bit 6): the IPv4 header checksum was checked.
    pub const RX_STATUS_IPCS: u32 = 1 << 6;
    /// RX write-back extended error L4E (bit 29): bad TCP/UDP checksum.
    pub const RX_ERR_L4E: u32 = 1 << 29;
    /// RX write-back extended error IPE (bit 30): bad IPv4 header checksum.
    pub const RX_ERR_IPE: u32 = 1 << 30;
    /// RX write-back qword 0, packet type bit "IPv4" (pkt_info bit 4).
    pub const RX_PKT_IPV4: u32 = 1 << 4;
    /// RX write-back qword 0, RSS type (pkt_info bits 3:0); 0 when no hash was taken.
    pub const RX_RSS_TYPE_MASK: u32 = 0xf;

    /// TX descriptor DTYP = 0010b: advanced context descriptor.
    pub const TX_DTYP_CTXT: u32 = 2 << 20;
    /// DTYP field mask (cmd_type_len bits 23:20).
    pub const TX_DTYP_MASK: u32 = 0xf << 20;
    /// DCMD.VLE (bit 30): insert an 802.1Q tag, its TCI from the context's VLAN field.
    pub const TX_CMD_VLE: u32 = 1 << 30;
    /// Context vlan_macip_lens: VLAN (the TCI to insert) in bits 31:16.
    pub const CTX_VLAN_SHIFT: u32 = 16;
    /// DCMD.TSE (bit 31): TCP segmentation for this frame (with a context's MSS/L4LEN).
    pub const TX_CMD_TSE: u32 = 1 << 31;
    /// olinfo_status POPTS.IXSM (bit 8): insert the IPv4 header checksum.
    pub const TX_OLINFO_IXSM: u32 = 1 << 8;
    /// olinfo_status POPTS.TXSM (bit 9): insert the TCP/UDP checksum.
    pub const TX_OLINFO_TXSM: u32 = 1 << 9;
    /// olinfo_status IDX, bits 6:4: the context slot (0 or 1) this frame uses.
    pub const TX_OLINFO_IDX_SHIFT: u32 = 4;
    /// Context vlan_macip_lens: IPLEN bits 8:0, MACLEN bits 15:9.
    pub const CTX_MACLEN_SHIFT: u32 = 9;
    /// Context type_tucmd_mlhl TUCMD.IPV4 (bit 10): IPv4 (else IPv6).
    pub const CTX_TUCMD_IPV4: u32 = 1 << 10;
    /// Context TUCMD.L4T, bits 12:11: 00b UDP, 01b TCP.
    pub const CTX_TUCMD_L4T_TCP: u32 = 1 << 11;
    /// Context mss_l4len_idx: IDX bits 6:4.
    pub const CTX_IDX_SHIFT: u32 = 4;
    /// Context mss_l4len_idx: L4LEN bits 15:8 (TCP header bytes, for TSO).
    pub const CTX_L4LEN_SHIFT: u32 = 8;
    /// Context mss_l4len_idx: MSS bits 31:16 (TCP payload bytes per segment).
    pub const CTX_MSS_SHIFT: u32 = 16;

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

/// Extended Device Control Register - CTRL_EXT (0x00018).
pub const CTRL_EXT: u32 = 0x0018;
/// CTRL_EXT.PFRSTD: the PF driver finished its reset; VFs see RSTD in their mailbox.
pub const CTRL_EXT_PFRSTD: u32 = 1 << 14;

/// RCTL.VFE: VLAN filter enable (VFTA/VLVF).
pub const RCTL_VFE: u32 = 1 << 18;

/// Per-queue register block of queue `n` (0..=15): the 82576 maps all sixteen queues
/// at 0x0C000/0x0E000 + 0x40*n (datasheet 8.10 and 8.12, "n" index).
pub const fn queue_reg(rx_base: u32, n: u32) -> u32 {
    rx_base + 0x40 * n
}

/// Multiple Receive Queues Command - MRQC (0x05818).
pub const MRQC: u32 = 0x5818;
/// MRQC.Multiple Receive Queues Enable = 011b: VMDq (pools selected by the MAC/VLAN
/// filters), the mode SR-IOV needs.
pub const MRQC_ENABLE_VMDQ: u32 = 0x3;
/// VMDq Control - VT_CTL (0x0581C).
pub const VT_CTL: u32 = 0x581c;
/// VT_CTL.DEF_PL, bits 9:7: the pool that gets unicast frames no filter matched.
pub const VT_CTL_DEFAULT_POOL_SHIFT: u32 = 7;
/// VT_CTL.Dis_Def_Pool: drop unmatched unicast frames instead.
pub const VT_CTL_DISABLE_DEF_POOL: u32 = 1 << 29;
/// VT_CTL.Rpl_En: replicate broadcast/multicast to every pool that accepts them.
pub const VT_CTL_VM_REPL_EN: u32 = 1 << 30;

/// VF Receive Enable - VFRE (0x00C8C): bit n lets pool n receive.
pub const VFRE: u32 = 0x0c8c;
/// VF Transmit Enable - VFTE (0x00C90): bit n lets pool n transmit.
pub const VFTE: u32 = 0x0c90;
/// DMA Tx Switch Control - DTXSWC (0x03500).
pub const DTXSWC: u32 = 0x3500;
/// DTXSWC.MACAS, bits 7:0: MAC anti-spoofing for pool n (drop frames whose source MAC
/// is not one of the pool's receive addresses).
pub const DTXSWC_MAC_SPOOF_SHIFT: u32 = 0;
/// DTXSWC.VLANAS, bits 15:8: VLAN anti-spoofing for pool n.
pub const DTXSWC_VLAN_SPOOF_SHIFT: u32 = 8;
/// DTXSWC.Loopback_en: switch VM-to-VM traffic inside the device.
pub const DTXSWC_VMDQ_LOOPBACK_EN: u32 = 1 << 31;

/// VM Offload Register - VMOLR\[n\] (0x05AD0 + 4*n).
pub const VMOLR0: u32 = 0x5ad0;
/// VMOLR.RLPML, bits 13:0: the pool's longest frame when LPE is set.
pub const VMOLR_RLPML_MASK: u32 = 0x3fff;
/// VMOLR.LPE: long packets for this pool.
pub const VMOLR_LPE: u32 = 1 << 16;
/// VMOLR.AUPE: accept untagged frames.
pub const VMOLR_AUPE: u32 = 1 << 24;
/// VMOLR.ROMPE: accept multicast frames that hit the MTA.
pub const VMOLR_ROMPE: u32 = 1 << 25;
/// VMOLR.ROPE: accept unicast frames that hit the UTA (unicast promiscuous).
pub const VMOLR_ROPE: u32 = 1 << 26;
/// VMOLR.BAM: accept broadcast.
pub const VMOLR_BAM: u32 = 1 << 27;
/// VMOLR.MPME: multicast promiscuous.
pub const VMOLR_MPME: u32 = 1 << 28;
/// VMOLR.STRVLAN: strip the VLAN tag on receive.
pub const VMOLR_STRVLAN: u32 = 1 << 30;
/// VMOLR.STRCRC: strip the CRC on receive.
pub const VMOLR_STRCRC: u32 = 1 << 31;

/// VM VLAN Insert Register - VMVIR\[n\] (0x03700 + 4*n).
pub const VMVIR0: u32 = 0x3700;
/// VMVIR.VLANA = 01b: always insert the default VLAN (port VLAN).
pub const VMVIR_VLANA_DEFAULT: u32 = 1 << 30;
/// VLAN VM Filter - VLVF\[n\] (0x05D00 + 4*n), 32 entries.
pub const VLVF0: u32 = 0x5d00;
/// Entries of VLVF.
pub const VLVF_LEN: u32 = 32;
/// VLVF.POOLSEL, bits 19:12: pools that belong to this VLAN.
pub const VLVF_POOLSEL_SHIFT: u32 = 12;
/// VLVF.VI_En: the entry is valid.
pub const VLVF_VLANID_ENABLE: u32 = 1 << 31;
/// VLAN Filter Table Array - VFTA\[127:0\] (0x05600 + 4*n).
pub const VFTA: u32 = 0x5600;

/// RAH.POOLSEL, bits 25:18: the pools a receive address belongs to.
pub const RAH_POOL_SHIFT: u32 = 18;
/// Receive Address Low of entry `n` (0..=15): RAL\[n\] at 0x05400 + 8*n.
pub const fn ral(n: u32) -> u32 {
    RAL0 + 8 * n
}
/// Receive Address High of entry `n` (0..=15).
pub const fn rah(n: u32) -> u32 {
    RAH0 + 8 * n
}

/// PF Mailbox - PFMailbox\[n\] (0x00C00 + 4*n), the PF's side of VF n's mailbox.
pub const PFMAILBOX0: u32 = 0x0c00;
/// PFMailbox.STS: status/command from the PF is ready (raises PFSTS at the VF).
pub const PFMAILBOX_STS: u32 = 1 << 0;
/// PFMailbox.ACK: the PF read the VF's message (raises PFACK at the VF).
pub const PFMAILBOX_ACK: u32 = 1 << 1;
/// PFMailbox.VFU: the VF holds the buffer (read only).
pub const PFMAILBOX_VFU: u32 = 1 << 2;
/// PFMailbox.PFU: the PF holds the buffer (set only while VFU is clear).
pub const PFMAILBOX_PFU: u32 = 1 << 3;
/// PFMailbox.RVFU: take the buffer back from a VF that holds it.
pub const PFMAILBOX_RVFU: u32 = 1 << 4;
/// Virtualization Mailbox Memory - VMBMEM\[n\] (0x00800 + 0x40*n): 16 words per VF.
pub const VMBMEM0: u32 = 0x0800;
/// Words in one mailbox buffer.
pub const MAILBOX_WORDS: usize = 16;
/// Mailbox VF Interrupt Cause - MBVFICR (0x00C80), write 1 to clear.
pub const MBVFICR: u32 = 0x0c80;
/// MBVFICR.VFREQ, bits 7:0: VF n sent a message.
pub const MBVFICR_VFREQ_SHIFT: u32 = 0;
/// MBVFICR.VFACK, bits 23:16: VF n acknowledged a PF message.
pub const MBVFICR_VFACK_SHIFT: u32 = 16;
/// Mailbox VF Interrupt Mask - MBVFIMR (0x00C84).
pub const MBVFIMR: u32 = 0x0c84;
/// VF Function Level Reset Events - VFLRE (0x00C88), write 1 to clear.
pub const VFLRE: u32 = 0x0c88;
/// The 82576 has eight pools: up to seven VFs plus the PF.
pub const MAX_POOLS: u32 = 8;

/// Registers of the 82576 virtual function's own BAR0 (datasheet 8.22 "Virtual
/// Function Device Registers"): the device maps them onto the PF's per-pool copies.
pub mod vf {
    /// VF Control - VTCTRL (0x00000).
    pub const CTRL: u32 = 0x0000;
    /// VTCTRL.RST: reset the VF's queues and interrupts (self-clearing); the PF sees it
    /// in VFLRE.
    pub const CTRL_RST: u32 = 1 << 26;
    /// VF Status - VTSTATUS (0x00008): the port's STATUS (LU = link up).
    pub const STATUS: u32 = 0x0008;
    /// VF Extended Interrupt Mask Clear - VTEIMC (0x01528).
    pub const EIMC: u32 = 0x1528;
    /// VF Extended Interrupt Cause - VTEICR (0x01580).
    pub const EICR: u32 = 0x1580;
    /// VF-to-PF Mailbox - VFMailbox (0x00C40).
    pub const MAILBOX: u32 = 0x0c40;
    /// VFMailbox.REQ: the VF's message is ready (raises VFREQ at the PF).
    pub const MAILBOX_REQ: u32 = 1 << 0;
    /// VFMailbox.ACK: the VF read the PF's message.
    pub const MAILBOX_ACK: u32 = 1 << 1;
    /// VFMailbox.VFU: the VF holds the buffer.
    pub const MAILBOX_VFU: u32 = 1 << 2;
    /// VFMailbox.PFU: the PF holds the buffer.
    pub const MAILBOX_PFU: u32 = 1 << 3;
    /// VFMailbox.PFSTS: the PF wrote a message (clears on read).
    pub const MAILBOX_PFSTS: u32 = 1 << 4;
    /// VFMailbox.PFACK: the PF read our message (clears on read).
    pub const MAILBOX_PFACK: u32 = 1 << 5;
    /// VFMailbox.RSTI: the PF is resetting; the mailbox is not usable.
    pub const MAILBOX_RSTI: u32 = 1 << 6;
    /// VFMailbox.RSTD: the PF finished a reset (clears on read).
    pub const MAILBOX_RSTD: u32 = 1 << 7;
    /// Bits of VFMailbox that clear when read.
    pub const MAILBOX_R2C: u32 = MAILBOX_PFSTS | MAILBOX_PFACK | MAILBOX_RSTD;
    /// VF Mailbox Memory - VMBMEM (0x00800), 16 words.
    pub const VMBMEM: u32 = 0x0800;
    /// VF queue 0 receive registers (0x02800 block).
    pub const RDBAL: u32 = 0x2800;
    /// RDBAH.
    pub const RDBAH: u32 = 0x2804;
    /// RDLEN.
    pub const RDLEN: u32 = 0x2808;
    /// SRRCTL.
    pub const SRRCTL: u32 = 0x280c;
    /// RDH.
    pub const RDH: u32 = 0x2810;
    /// RDT.
    pub const RDT: u32 = 0x2818;
    /// RXDCTL.
    pub const RXDCTL: u32 = 0x2828;
    /// VF queue 0 transmit registers (0x03800 block).
    pub const TDBAL: u32 = 0x3800;
    /// TDBAH.
    pub const TDBAH: u32 = 0x3804;
    /// TDLEN.
    pub const TDLEN: u32 = 0x3808;
    /// TDH.
    pub const TDH: u32 = 0x3810;
    /// TDT.
    pub const TDT: u32 = 0x3818;
    /// TXDCTL.
    pub const TXDCTL: u32 = 0x3828;
    /// Good Packets Received Count - VFGPRC (0x00F10), not cleared on read.
    pub const GPRC: u32 = 0x0f10;
    /// Good Packets Transmitted Count - VFGPTC (0x00F14), not cleared on read.
    pub const GPTC: u32 = 0x0f14;
}
