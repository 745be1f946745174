//! Threads: each thread of a process with its tid, name, registers (general and the
//! XSAVE area), blocked signals, clear-child-tid address, robust futex list, rseq area
//! and alternate signal stack.
//!
//! Checkpoint: registers and XSAVE state by ptrace, the rest from /proc and, for what
//! only the thread can tell (clear-child-tid, alternate stack), injected calls
//! (`crate::ckpt::inside`); `read` puts the record together. A thread caught inside a
//! system call is recorded as the kernel left it (rax = -ERESTART...).
//!
//! Resume: the main thread gets its per-thread state, the others are made with their
//! tids (clone3 `set_tid`) and get theirs (`restore_threads`); last, every thread's
//! registers go back in this CPU's XSAVE layout with its signal mask (`set_final`), and
//! a thread that was inside a system call is set up to re-issue it and stepped into it
//! (`reissues_call`, `step_into_call`), so a signal that comes after the resume
//! interrupts the call as it would have.

use crate::ckpt::procfs;
use crate::inject::{Injector, nr};
use crate::records::ThreadRecord;
use crate::restore::{Restorer, TRACE_CHILDREN};
use crate::sys::{self, trace as t};
use crate::task::signals;
use anyhow::{Context, Result, anyhow, bail};
use std::io;

// ---- checkpoint ----------------------------------------------------------------------

/// Thread `tid` of frozen process `pid` (host ids), but what only it can tell (its
/// clear-child-tid address and alternate stack: `crate::ckpt::inside`). `held`: the
/// signal the freeze caught a thread on its way to. An error names what could not be
/// read ("thread N's registers: ...").
pub(crate) fn read(
    pid: i32,
    tid: i32,
    held: &dyn Fn(i32) -> io::Result<Option<t::SigInfo>>,
) -> io::Result<ThreadRecord> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        io::Error::other(format!("thread {tid}'s {what}: {e}"))
    };
    let read = |what: &str, file: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/{file}"))
            .map_err(|e| fail(what, &e))
    };
    let status = read("status", "status")?;
    Ok(ThreadRecord {
        tid: procfs::status_last(&status, "NSpid:").unwrap_or(tid),
        comm: read("name", "comm")?.trim_end_matches('\n').to_string(),
        regs: sys::ptrace_getregs(tid)
            .map_err(|e| fail("registers", &e))?
            .to_vec(),
        xstate: sys::ptrace_get_xstate(tid).map_err(|e| fail("XSAVE state", &e))?,
        // A kernel without the request (before 5.13) has no rseq to carry.
        rseq: match sys::ptrace_get_rseq(tid) {
            Ok(r) => r,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL)) => None,
            Err(e) => return Err(fail("rseq registration", &e)),
        },
        blocked_signals: procfs::status_hex(&status, "SigBlk:"),
        pending: held(tid)
            .and_then(|held| signals::read_thread_queue(tid, held))
            .map_err(|e| fail("queued signals", &e))?,
        clear_child_tid: 0,
        altstack: [0, libc::SS_DISABLE as u64, 0],
        robust_list: t::get_robust_list(tid).map_err(|e| fail("robust futex list", &e))?,
        sched: super::sched::read(tid).map_err(|e| match e.kind() {
            io::ErrorKind::Unsupported => io::Error::new(e.kind(), format!("thread {tid}'s {e}")),
            _ => fail("scheduling", &e),
        })?,
    })
}

// ---- resume --------------------------------------------------------------------------

impl Restorer<'_> {
    /// Per thread: clear-child-tid, rseq and the alternate signal stack; threads other
    /// than the main one are created here, with their tids.
    pub(crate) fn restore_threads(&mut self, pid: i32) -> Result<()> {
        let rec = self.proc(pid).rec;
        let main = &rec.threads[0];
        self.call(
            pid,
            "set_tid_address",
            nr::SET_TID_ADDRESS,
            &[main.clear_child_tid],
        )?;
        self.thread_extras(pid, pid, main)?;
        for th in &rec.threads[1..] {
            const CLONE_THREAD_FLAGS: u64 = (libc::CLONE_VM
                | libc::CLONE_FS
                | libc::CLONE_FILES
                | libc::CLONE_SIGHAND
                | libc::CLONE_THREAD
                | libc::CLONE_SYSVSEM) as u64;
            let mut flags = CLONE_THREAD_FLAGS;
            if th.clear_child_tid != 0 {
                flags |= libc::CLONE_CHILD_CLEARTID as u64;
            }
            let tid_at = self.put(pid, 256, &th.tid.to_le_bytes())?;
            let args: [u64; 11] = [flags, 0, th.clear_child_tid, 0, 0, 0, 0, 0, tid_at, 1, 0];
            let bytes: Vec<u8> = args.iter().flat_map(|w| w.to_le_bytes()).collect();
            let at = self.put(pid, 0, &bytes)?;
            // The init's page-decoding thread has just ended and its pid, which can be
            // this tid, is freed a moment after: EEXIST then means "try again".
            let mut tries = 0;
            let got = loop {
                match self
                    .proc(pid)
                    .inj
                    .call("clone3 (thread)", nr::CLONE3, &[at, 88])
                {
                    Ok(t) => break t as i32,
                    Err(e) if e.errno == libc::EEXIST && tries < 1000 => {
                        tries += 1;
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    Err(e) => bail!("process {pid} ({}): {e}", self.proc(pid).rec.comm),
                }
            };
            if got != th.tid {
                bail!("thread {} of process {pid} came back as {got}", th.tid);
            }
            super::tree::wait_new_task(got)?;
            self.procs.get_mut(&pid).expect("exists").tids.push(got);
            self.thread_extras(pid, got, th)?;
        }
        Ok(())
    }

    fn thread_extras(&self, pid: i32, tid: i32, th: &ThreadRecord) -> Result<()> {
        let inj = Injector::new(tid, self.tramp, TRACE_CHILDREN)?;
        let fail = |e: crate::inject::CallError| anyhow!("thread {tid} of process {pid}: {e}");
        if !th.comm.is_empty() {
            let mut name = th.comm.as_bytes()[..th.comm.len().min(15)].to_vec();
            name.push(0);
            let at = self.put(pid, 192, &name)?;
            const PR_SET_NAME: u64 = 15;
            inj.call("prctl(PR_SET_NAME)", nr::PRCTL, &[PR_SET_NAME, at])
                .map_err(fail)?;
        }
        if th.robust_list.0 != 0 {
            const SET_ROBUST_LIST: i64 = 273;
            inj.call(
                "set_robust_list",
                SET_ROBUST_LIST,
                &[th.robust_list.0, th.robust_list.1],
            )
            .map_err(fail)?;
        }
        if let Some((addr, len, sig, _)) = th.rseq {
            inj.call("rseq", nr::RSEQ, &[addr, len as u64, 0, sig as u64])
                .map_err(fail)?;
        }
        if th.altstack[1] & libc::SS_DISABLE as u64 == 0 && th.altstack[0] != 0 {
            let bytes: Vec<u8> = th.altstack.iter().flat_map(|w| w.to_le_bytes()).collect();
            let at = self.put(pid, 128, &bytes)?;
            inj.call("sigaltstack", nr::SIGALTSTACK, &[at, 0])
                .map_err(fail)?;
        }
        Ok(())
    }
}

/// Whether a thread's saved registers re-issue a system call on restore.
pub(crate) fn reissues_call(th: &ThreadRecord) -> bool {
    let mut regs: t::Regs = [0; 27];
    regs.copy_from_slice(&th.regs);
    crate::inject::restart_regs(regs, false) != regs
}

/// Let a thread set up to re-issue its call enter it (it runs that one `syscall`
/// instruction, and any handler of a signal pending for it first), so that it is inside
/// the call, as it was at the checkpoint, when the session goes on: a signal that comes
/// then (the SIGWINCH of the resize) interrupts the call as it would have, instead of
/// being handled just before the call starts (vim then blocks with keys it has read).
pub(crate) fn step_into_call(tid: i32) -> Result<()> {
    let mut pass = 0;
    for _ in 0..16 {
        t::ptrace_syscall(tid, pass)?;
        let st = t::wait_raw(tid)?;
        if !libc::WIFSTOPPED(st) {
            bail!("thread {tid} ended as it was let go");
        }
        let sig = libc::WSTOPSIG(st);
        if sig == libc::SIGTRAP | 0x80 {
            return Ok(());
        }
        // A signal for it: delivered as it would have been; event stops: go on.
        pass = if st >> 16 == 0 && sig != libc::SIGTRAP {
            sig
        } else {
            0
        };
    }
    bail!("thread {tid} did not get back into its system call")
}

/// A thread's saved registers (a call it was in is re-issued), XSAVE state and mask.
pub(crate) fn set_final(
    tid: i32,
    th: &ThreadRecord,
    xsave: &(crate::machine::XsaveLayout, crate::machine::XsaveLayout),
) -> Result<()> {
    let mut regs: t::Regs = [0; 27];
    regs.copy_from_slice(&th.regs);
    let regs = crate::inject::restart_regs(regs, false);
    let xstate = xsave.0.convert(&xsave.1, &th.xstate);
    t::ptrace_set_xstate(tid, &xstate)
        .with_context(|| format!("thread {tid}: setting the FPU/AVX state"))?;
    t::ptrace_setregs(tid, &regs).with_context(|| format!("thread {tid}: setting registers"))?;
    t::ptrace_set_sigmask(tid, th.blocked_signals)
        .with_context(|| format!("thread {tid}: setting the signal mask"))?;
    Ok(())
}
