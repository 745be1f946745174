//! Seccomp filters. A process under a filter runs sandboxed: resumed without it, it would
//! run on with its sandbox silently gone, so a filter is carried exactly or refused.
//!
//! Checkpoint: the filters can be read only with CAP_SYS_ADMIN
//! (PTRACE_SECCOMP_GET_FILTER, with each filter's flags from PTRACE_SECCOMP_GET_METADATA):
//! as root they are read, oldest first, and every thread must have the same ones; for an
//! ordinary user, and for strict mode, a filter that hands its decisions to a listener
//! (SECCOMP_FILTER_FLAG_NEW_LISTENER) or one too large for the resume's scratch pages,
//! the process is refused.
//!
//! Resume: the filters are installed by the process itself, with all its threads
//! (SECCOMP_FILTER_FLAG_TSYNC, which needs no_new_privs or CAP_SYS_ADMIN: one it
//! could not install is refused at checkpoint), after everything else it is made to do
//! but the last injected call; PTRACE_O_SUSPEND_SECCOMP (root only) keeps them from the calls the
//! resume still injects. It ends when the threads are let go.

use crate::inject::nr;
use crate::records::{ProcessRecord, SeccompFilter};
use crate::restore::{PAGE, Restorer, TRACE_CHILDREN};
use crate::sys::trace as t;
use anyhow::{Context, Result};
use std::io;

const FLAG_TSYNC: u64 = 1;
const FLAG_NEW_LISTENER: u64 = 1 << 3;
/// The largest filter carried, in instructions: it is handed over in the scratch pages.
const MAX_INSNS: usize = 1024;

// ---- checkpoint ----------------------------------------------------------------------

/// The seccomp filters of process `p` (host pid `pid`, threads `tids`), oldest first.
pub(crate) fn read(pid: i32, tids: &[i32], p: &ProcessRecord) -> io::Result<Vec<SeccompFilter>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let refuse = |why: &str| {
        io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "process {} ({}) runs under a seccomp filter{why}, which this version cannot carry (resumed, it would run without its sandbox)",
                p.pid, p.comm
            ),
        )
    };
    match crate::ckpt::procfs::status_last(&status, "Seccomp:") {
        None | Some(0) => return Ok(Vec::new()),
        Some(2) => {}
        Some(_) => return Err(refuse(" in strict mode")),
    }
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(refuse(
            " (its filter can be read only by a privileged user)",
        ));
    }
    let filters_of = |tid: i32| -> io::Result<Vec<SeccompFilter>> {
        let mut out = Vec::new();
        for index in 0.. {
            let Some(code) = t::ptrace_seccomp_filter(tid, index)? else {
                break;
            };
            let flags = t::ptrace_seccomp_flags(tid, index)?;
            out.push(SeccompFilter { flags, code });
        }
        out.reverse();
        Ok(out)
    };
    let filters = filters_of(tids[0])?;
    for &tid in &tids[1..] {
        if filters_of(tid)? != filters {
            return Err(refuse(" that its threads do not share"));
        }
    }
    if filters.iter().any(|f| f.flags & FLAG_NEW_LISTENER != 0) {
        return Err(refuse(
            " whose decisions a listener makes (SECCOMP_FILTER_FLAG_NEW_LISTENER)",
        ));
    }
    // Installed again by the process itself, with the identity it has then.
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    if !p.no_new_privs && p.caps[2] & CAP_SYS_ADMIN == 0 {
        return Err(refuse(
            " it could not install again itself (it has neither no_new_privs nor CAP_SYS_ADMIN)",
        ));
    }
    if filters.iter().any(|f| f.code.len() > MAX_INSNS * 8) {
        return Err(refuse(&format!(" of more than {MAX_INSNS} instructions")));
    }
    Ok(filters)
}

// ---- resume --------------------------------------------------------------------------

impl Restorer<'_> {
    /// Process `pid`'s seccomp filters installed again, oldest first, for all its threads;
    /// the resume's own calls after it are let through (PTRACE_O_SUSPEND_SECCOMP).
    pub(crate) fn install_seccomp(&self, pid: i32) -> Result<()> {
        let p = self.proc(pid);
        if p.rec.seccomp.is_empty() {
            return Ok(());
        }
        const PTRACE_O_SUSPEND_SECCOMP: libc::c_int = 1 << 21;
        for &tid in &p.tids {
            t::ptrace_setoptions(
                tid,
                libc::PTRACE_O_TRACESYSGOOD | TRACE_CHILDREN | PTRACE_O_SUSPEND_SECCOMP,
            )
            .with_context(|| format!("thread {tid}: suspending seccomp for the resume"))?;
        }
        const SECCOMP_SET_MODE_FILTER: u64 = 1;
        for f in &p.rec.seccomp {
            debug_assert!(f.code.len() as u64 <= 2 * PAGE);
            let code = self.put(pid, 16, &f.code)?;
            // struct sock_fprog: length (u16), padding, the instructions' address.
            let mut prog = ((f.code.len() / 8) as u64).to_le_bytes().to_vec();
            prog.extend_from_slice(&code.to_le_bytes());
            let at = self.put(pid, 0, &prog)?;
            self.call(
                pid,
                "seccomp(SECCOMP_SET_MODE_FILTER)",
                nr::SECCOMP,
                &[SECCOMP_SET_MODE_FILTER, f.flags | FLAG_TSYNC, at],
            )?;
        }
        Ok(())
    }
}
