//! The VF side of the model: hooks that play a VF on its mailbox, and a VF's own
//! register block ([`IxgbeVfModel`]).

use super::{IxgbeModel, MODEL_QUEUES, MODEL_VFS, MailboxLine};
use crate::igb::Registers;
use crate::ixgbe::regs;

impl IxgbeModel {
    /// Plays VF `vf` sending a message: what the device does when the VF writes its
    /// mailbox memory and sets VFMAILBOX.REQ (the words appear in PFMBMEM, and
    /// PFMBICR.VFREQ is set). Refused (false) while the PF holds the buffer.
    pub fn vf_send(&self, vf: u32, words: &[u32]) -> bool {
        let mut st = self.state();
        if vf >= MODEL_VFS || st.mailbox[vf as usize].pfu {
            return false;
        }
        for (i, &w) in words.iter().take(regs::sriov::MAILBOX_WORDS).enumerate() {
            st.set(regs::sriov::pfmbmem(vf, i as u32), w);
        }
        let icr = regs::sriov::pfmbicr(vf / 16);
        let v = st.reg(icr) | 1 << (vf % 16);
        st.set(icr, v);
        true
    }

    /// Plays the host resetting VF `vf` through PCIe (function-level reset, as VFIO
    /// does when a guest starts or stops using it): its queues stop, its mailbox is
    /// cleared, and PFVFLRE reports it to the PF.
    pub fn vf_flr(&self, vf: u32) {
        let mut st = self.state();
        if vf >= MODEL_VFS {
            return;
        }
        let q = vf * regs::sriov::QUEUES_PER_POOL;
        for i in q..q + regs::sriov::QUEUES_PER_POOL {
            st.set(regs::rxdctl(i), 0);
            st.set(regs::txdctl(i), 0);
        }
        st.mailbox[vf as usize] = MailboxLine::default();
        let reg = regs::sriov::pfvflre(vf / 32);
        let v = st.reg(reg) | 1 << (vf % 32);
        st.set(reg, v);
    }

    /// Plays VF `vf` taking (VFU) or releasing its mailbox buffer.
    pub fn vf_hold(&self, vf: u32, hold: bool) {
        if let Some(line) = self.state().mailbox.get_mut(vf as usize) {
            line.vfu = hold;
        }
    }

    /// Plays VF `vf` reading VFMAILBOX: whether the PF acknowledged its last message
    /// (PFACK, cleared by the read).
    pub fn vf_take_ack(&self, vf: u32) -> bool {
        self.state()
            .mailbox
            .get_mut(vf as usize)
            .is_some_and(|l| std::mem::take(&mut l.pf_ack))
    }

    /// Plays VF `vf` receiving: the PF's message if it sent one (PFSTS, cleared by the
    /// read), as the VF reads it from its mailbox memory.
    pub fn vf_receive(&self, vf: u32) -> Option<[u32; regs::sriov::MAILBOX_WORDS]> {
        let mut st = self.state();
        let line = st.mailbox.get_mut(vf as usize)?;
        if !std::mem::take(&mut line.pf_sts) {
            return None;
        }
        let mut m = [0; regs::sriov::MAILBOX_WORDS];
        for (i, w) in m.iter_mut().enumerate() {
            *w = st.reg(regs::sriov::pfmbmem(vf, i as u32));
        }
        Some(m)
    }

    /// The register block (BAR0) of VF `vf` (0..=31) on this device, as the VF driver
    /// sees it: its mailbox, its link status, and receive and transmit queue 0, which
    /// are the PF's queue 2·`vf` (the 64-pool layout). `None` past VF 31 (the model's
    /// queues end at 63).
    pub fn vf_function(&self, vf: u32) -> Option<IxgbeVfModel> {
        (vf < MODEL_QUEUES / regs::sriov::QUEUES_PER_POOL).then(|| IxgbeVfModel {
            model: self.clone(),
            vf,
        })
    }
}

/// One VF's register block on an [`IxgbeModel`] (see [`IxgbeModel::vf_function`]).
///
/// VFCTRL.RST disables the VF's queues and sets VFMAILBOX.RSTD; VFMAILBOX has the
/// buffer ownership (VFU/PFU), REQ/ACK that raise PFMBICR.VFREQ/VFACK for the PF,
/// and the read-to-clear PFSTS/PFACK/RSTD; VFMBMEM is the PF's PFMBMEM for this VF;
/// VFLINKS mirrors LINKS; the ring registers land on the PF's queue registers, with
/// all their side effects (TDT fetches and sends, with MAC anti-spoofing).
#[derive(Debug, Clone)]
pub struct IxgbeVfModel {
    model: IxgbeModel,
    vf: u32,
}

impl IxgbeVfModel {
    /// The PF register a VF ring register maps to.
    fn pf_offset(&self, offset: u32) -> Option<u32> {
        use regs::sriov::vf;
        let q = self.vf * regs::sriov::QUEUES_PER_POOL;
        match offset {
            o if (vf::vfrdbal(0)..vf::vfrdbal(1)).contains(&o) => {
                Some(regs::rdbal(q) + (o - vf::vfrdbal(0)))
            }
            o if (vf::vftdbal(0)..vf::vftdbal(1)).contains(&o) => {
                Some(regs::tdbal(q) + (o - vf::vftdbal(0)))
            }
            _ => None,
        }
    }
}

impl Registers for IxgbeVfModel {
    fn read(&self, offset: u32) -> u32 {
        use regs::sriov::vf;
        if let Some(pf) = self.pf_offset(offset) {
            return self.model.read(pf);
        }
        let mut st = self.model.state();
        match offset {
            vf::VFLINKS => st.read_links(),
            vf::VFMAILBOX => {
                let pf_in_reset = st.reg(regs::CTRL_EXT) & regs::CTRL_EXT_PFRSTD == 0;
                let line = &mut st.mailbox[self.vf as usize];
                let mut v = if pf_in_reset { vf::VFMAILBOX_RSTI } else { 0 };
                for (on, bit) in [
                    (line.vfu, vf::VFMAILBOX_VFU),
                    (line.pfu, vf::VFMAILBOX_PFU),
                    (std::mem::take(&mut line.pf_sts), vf::VFMAILBOX_PFSTS),
                    (std::mem::take(&mut line.pf_ack), vf::VFMAILBOX_PFACK),
                    (std::mem::take(&mut line.rstd), vf::VFMAILBOX_RSTD),
                ] {
                    if on {
                        v |= bit;
                    }
                }
                v
            }
            o if (vf::VFMBMEM..vf::VFMBMEM + 64).contains(&o) => {
                st.reg(regs::sriov::pfmbmem(self.vf, (o - vf::VFMBMEM) / 4))
            }
            _ => 0,
        }
    }

    fn write(&self, offset: u32, value: u32) {
        use regs::sriov::{self as sr, vf};
        if let Some(pf) = self.pf_offset(offset) {
            return self.model.write(pf, value);
        }
        let mut st = self.model.state();
        let me = self.vf;
        match offset {
            vf::VFCTRL if value & vf::VFCTRL_RST != 0 => {
                let q = me * sr::QUEUES_PER_POOL;
                for i in q..q + sr::QUEUES_PER_POOL {
                    st.set(regs::rxdctl(i), 0);
                    st.set(regs::txdctl(i), 0);
                }
                let pf_ready = st.reg(regs::CTRL_EXT) & regs::CTRL_EXT_PFRSTD != 0;
                let line = &mut st.mailbox[me as usize];
                *line = MailboxLine::default();
                line.rstd = pf_ready;
                line.reset_pending = !pf_ready;
            }
            vf::VFMAILBOX => {
                let line = &mut st.mailbox[me as usize];
                let (req, ack) = (
                    value & vf::VFMAILBOX_REQ != 0,
                    value & vf::VFMAILBOX_ACK != 0,
                );
                // VFU is granted only while the PF does not hold the buffer; REQ and
                // ACK hand it back.
                line.vfu = value & vf::VFMAILBOX_VFU != 0 && !line.pfu && !req && !ack;
                let icr = sr::pfmbicr(me / 16);
                let mut bits = 0;
                if req {
                    bits |= 1 << (me % 16);
                }
                if ack {
                    bits |= 1 << (sr::PFMBICR_VFACK_SHIFT + me % 16);
                }
                let v = st.reg(icr) | bits;
                st.set(icr, v);
            }
            o if (vf::VFMBMEM..vf::VFMBMEM + 64).contains(&o) => {
                st.set(sr::pfmbmem(me, (o - vf::VFMBMEM) / 4), value);
            }
            _ => {}
        }
    }
}
