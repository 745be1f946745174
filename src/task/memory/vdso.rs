//! The vDSO on resume. The same kernel's vDSO block (`[vvar]`, `[vvar_vclock]`,
//! `[vdso]`) is placed where it was (`arch_prctl(ARCH_MAP_VDSO_64)`): glibc keeps pointers
//! into it. Another kernel's (another layout, or other code) cannot be: this kernel's is
//! placed below the old one's place, and the old one is made again as plain memory whose
//! code is the image's copy of the old vDSO with every entry point jumping to this
//! kernel's (`crate::machine::vdso_proxy`). At checkpoint the vDSO's bytes are kept in
//! the record (`MachineRecord::vdso`, read by `crate::machine::vdso_here`).

use crate::inject::nr;
use crate::records::{MapKind, ProcessRecord};
use crate::restore::{PAGE, Restorer, TASK_SIZE, TRAMPOLINE_PAGES};
use crate::sys::trace as t;
use anyhow::{Context, Result, anyhow, bail};

/// Where a process's vDSO goes.
pub(super) struct VdsoPlan {
    /// Where `arch_prctl(ARCH_MAP_VDSO_64)` places this kernel's vDSO block (none: the
    /// process had no vDSO).
    pub at: Option<u64>,
    /// Another kernel's vDSO to stand in for, at the old place.
    pub proxy: Option<Proxy>,
}

pub(super) struct Proxy {
    /// Where this kernel's `[vdso]` code ends up.
    new_vdso: u64,
    /// This kernel's vDSO code.
    here_vdso: Vec<u8>,
}

impl Restorer<'_> {
    /// The same kernel's vDSO goes where it was; another kernel's is placed elsewhere, and
    /// the old one's entry points lead to it. An image without the old vDSO's copy (made
    /// before it kept one) cannot be redirected: refused, naming both layouts.
    pub(super) fn vdso_plan(&self, rec: &ProcessRecord) -> Result<VdsoPlan> {
        let here = crate::machine::vdso_layout_here();
        let here_vdso = crate::machine::vdso_here();
        let theirs =
            crate::machine::vdso_layout(rec.maps.iter().map(|m| (m.path.as_str(), m.start, m.end)));
        let old_start = rec
            .maps
            .iter()
            .filter(|m| matches!(m.path.as_str(), "[vvar]" | "[vvar_vclock]" | "[vdso]"))
            .map(|m| m.start)
            .min();
        let old_vdso = &self.record.machine.vdso;
        let same = theirs == here && (old_vdso.is_empty() || *old_vdso == here_vdso);
        if old_start.is_none() || same {
            return Ok(VdsoPlan {
                at: old_start,
                proxy: None,
            });
        }
        if old_vdso.is_empty() {
            bail!("{}", crate::machine::vdso_message(&theirs, &here));
        }
        let new_at = self.free_vdso_address(rec, here.iter().map(|(_, s)| s).sum())?;
        let new_vdso = new_at
            + here
                .iter()
                .take_while(|(n, _)| n != "[vdso]")
                .map(|(_, s)| s)
                .sum::<u64>();
        Ok(VdsoPlan {
            at: Some(new_at),
            proxy: Some(Proxy {
                new_vdso,
                here_vdso,
            }),
        })
    }

    /// An address for this kernel's vDSO block (`len` bytes) below the old one, free in
    /// process `rec` and apart from the trampoline.
    fn free_vdso_address(&self, rec: &ProcessRecord, len: u64) -> Result<u64> {
        let old = rec
            .maps
            .iter()
            .filter(|m| m.kind() == MapKind::Kernel && m.path != "[vsyscall]")
            .map(|m| m.start)
            .min()
            .unwrap_or(TASK_SIZE / 2);
        let tramp = (self.tramp, self.tramp + TRAMPOLINE_PAGES * PAGE);
        let clear = |a: u64| {
            let end = a + len;
            rec.maps.iter().all(|m| end <= m.start || m.end <= a)
                && (end <= tramp.0 || tramp.1 <= a)
        };
        let step = 16 * PAGE;
        (1..4096u64)
            .filter_map(|k| old.checked_sub(len + k * step))
            .find(|&a| a >= 1 << 20 && clear(a))
            .ok_or_else(|| {
                anyhow!(
                    "process {}: no free address for this kernel's vDSO",
                    rec.pid
                )
            })
    }

    /// The old kernel's vDSO regions made again as plain memory: its data pages empty and
    /// read-only, its code the image's copy with every entry point leading to this
    /// kernel's vDSO, placed at `plan.new_vdso` (`machine::vdso_proxy`).
    pub(super) fn map_vdso_proxy(&self, pid: i32, plan: &Proxy) -> Result<()> {
        let (new_vdso, here_vdso) = (plan.new_vdso, &plan.here_vdso[..]);
        let rec = self.proc(pid).rec;
        let old = &self.record.machine.vdso;
        for m in rec
            .maps
            .iter()
            .filter(|m| matches!(m.path.as_str(), "[vvar]" | "[vvar_vclock]" | "[vdso]"))
        {
            let len = m.end - m.start;
            let code = m.path == "[vdso]";
            let flags = (libc::MAP_ANONYMOUS | libc::MAP_PRIVATE | libc::MAP_FIXED) as u64;
            let prot = if code {
                libc::PROT_READ | libc::PROT_WRITE
            } else {
                libc::PROT_READ
            } as u64;
            let got = self.call(
                pid,
                "mmap",
                nr::MMAP,
                &[m.start, len, prot, flags, u64::MAX, 0],
            )?;
            if got != m.start {
                bail!(
                    "process {pid}: the old vDSO's place {:#x} is taken",
                    m.start
                );
            }
            if code {
                if old.len() as u64 != len {
                    bail!(
                        "the image's copy of the old vDSO has {} bytes, its mapping {len}",
                        old.len()
                    );
                }
                let proxy = crate::machine::vdso_proxy(old, here_vdso, new_vdso)
                    .ok_or_else(|| anyhow!("the image's copy of the old vDSO names no function"))?;
                t::write_process_memory(pid, m.start, &proxy)
                    .with_context(|| format!("process {pid}: writing the old vDSO's proxy"))?;
                let rx = (libc::PROT_READ | libc::PROT_EXEC) as u64;
                self.call(pid, "mprotect", nr::MPROTECT, &[m.start, len, rx])?;
            }
        }
        Ok(())
    }
}
