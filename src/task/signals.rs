//! Signals: each process's handlers, the signals queued for it and for each of its
//! threads (with their siginfo: sender, value, code), the signal a stopped job was stopped
//! by, and the signal it gets when its parent ends. (Blocked masks are per thread, set with
//! the registers: `threads`; ignored and caught sets come with the handlers.)
//!
//! Checkpoint: handlers and the parent-death signal are asked of the process by injected
//! calls (`crate::ckpt::inside`, through `read_actions`, `read_pdeath_signal`); the queues
//! are peeked without taking anything (PTRACE_PEEKSIGINFO, per thread and shared), the
//! signal a thread was caught on its way to by the freeze first; the stop signal comes
//! from the freeze (`crate::ckpt::freeze`).
//!
//! Resume: handlers set with rt_sigaction (`set_actions`), the parent-death signal after
//! the process has its ids back (`set_pdeath_signal`, called by `creds`), the queues
//! refilled in order with their siginfo as the last thing before the registers
//! (`queue_signals`), and stopped jobs stopped again by their own signal as everything is
//! let go (`stop_again`).

use crate::inject::{Injector, nr};
use crate::records::signal_of;
use crate::restore::{Restorer, TRACE_CHILDREN};
use crate::sys::{self, trace as t};
use anyhow::{Context, Result, anyhow};
use std::io;

// ---- checkpoint ----------------------------------------------------------------------

/// Signals whose handlers are saved: 1..=64 but SIGKILL and SIGSTOP.
pub fn handled_signals() -> impl Iterator<Item = u64> {
    (1..=64u64).filter(|&s| s != libc::SIGKILL as u64 && s != libc::SIGSTOP as u64)
}

/// The kernel's `struct sigaction` (handler, flags, restorer, mask) per signal 1..=64 of
/// the process `main` drives (`pid`), read into its `scratch` page; SIGKILL's and
/// SIGSTOP's are zero.
pub(crate) fn read_actions(main: &Injector, pid: i32, scratch: u64) -> io::Result<Vec<[u64; 4]>> {
    let mut sigactions = vec![[0u64; 4]; 64];
    for sig in handled_signals() {
        main.call("rt_sigaction", nr::RT_SIGACTION, &[sig, 0, scratch, 8])?;
        sigactions[sig as usize - 1] = crate::ckpt::inside::read_words::<4>(pid, scratch)?;
        // Registers set for a call, the mask all blocked, the scratch page mapped.
        crate::ckpt::hooks::fail_at("injected")?;
    }
    Ok(sigactions)
}

/// The signal the process gets when its parent ends (PR_GET_PDEATHSIG; 0: none).
pub(crate) fn read_pdeath_signal(main: &Injector, pid: i32, scratch: u64) -> io::Result<i32> {
    const PR_GET_PDEATHSIG: u64 = 2;
    main.call(
        "prctl(PR_GET_PDEATHSIG)",
        nr::PRCTL,
        &[PR_GET_PDEATHSIG, scratch],
    )?;
    Ok(crate::ckpt::inside::read_words::<1>(pid, scratch)?[0] as u32 as i32)
}

/// The signals queued for thread `tid`, in order, as siginfo bytes: `held` first, the
/// signal the freeze caught it on its way to (taken from the queue already).
pub(crate) fn read_thread_queue(tid: i32, held: Option<t::SigInfo>) -> io::Result<Vec<Vec<u8>>> {
    let mut q: Vec<Vec<u8>> = held.into_iter().map(|i| i.to_vec()).collect();
    q.extend(
        t::ptrace_peek_siginfo(tid, false)?
            .into_iter()
            .map(|i| i.to_vec()),
    );
    Ok(q)
}

/// The signals queued for the process (its shared queue), read through its thread `tid`.
pub(crate) fn read_shared_queue(tid: i32) -> io::Result<Vec<Vec<u8>>> {
    Ok(t::ptrace_peek_siginfo(tid, true)?
        .into_iter()
        .map(|i| i.to_vec())
        .collect())
}

// ---- resume --------------------------------------------------------------------------

impl Restorer<'_> {
    /// Every handler as it was (ignored, default or caught, with its flags and mask).
    pub(crate) fn set_actions(&self, pid: i32) -> Result<()> {
        let rec = self.proc(pid).rec;
        for sig in handled_signals() {
            let act = rec
                .sigactions
                .get(sig as usize - 1)
                .copied()
                .unwrap_or([0; 4]);
            let bytes: Vec<u8> = act.iter().flat_map(|w| w.to_le_bytes()).collect();
            let at = self.put(pid, 0, &bytes)?;
            self.call(pid, "rt_sigaction", nr::RT_SIGACTION, &[sig, at, 0, 8])?;
        }
        Ok(())
    }

    /// The signal the process gets when its parent ends: set after its ids, whose change
    /// clears it.
    pub(crate) fn set_pdeath_signal(&self, pid: i32) -> Result<()> {
        let rec = self.proc(pid).rec;
        if rec.pdeath_signal != 0 {
            const PR_SET_PDEATHSIG: u64 = 1;
            self.call(
                pid,
                "prctl(PR_SET_PDEATHSIG)",
                nr::PRCTL,
                &[PR_SET_PDEATHSIG, rec.pdeath_signal as u64],
            )?;
        }
        Ok(())
    }

    /// The signals queued for process `pid` and each of its threads, in their order, each
    /// with its siginfo (sender, value, code) as it was: sent by the thread to itself
    /// (rt_tgsigqueueinfo; rt_sigqueueinfo by the main thread for the process's queue),
    /// which the kernel allows with any siginfo. Every signal is blocked meanwhile, so
    /// none is delivered before the threads get their own masks back.
    pub(crate) fn queue_signals(&self, pid: i32) -> Result<()> {
        const RT_SIGQUEUEINFO: i64 = 129;
        const RT_TGSIGQUEUEINFO: i64 = 297;
        let p = self.proc(pid);
        for (th, &tid) in p.rec.threads.iter().zip(&p.tids) {
            t::ptrace_set_sigmask(tid, !0)
                .with_context(|| format!("thread {tid}: blocking its signals"))?;
            let inj = Injector::new(tid, self.tramp, TRACE_CHILDREN)?;
            let queue = |info: &[u8], call: i64, args: &dyn Fn(u64, u64) -> Vec<u64>| {
                let signo = signal_of(info);
                if signo == libc::SIGSTOP {
                    // Cannot be blocked: sent when everything is let go.
                    return Ok(());
                }
                let signo = signo as u64;
                let at = self.put(pid, 0, info)?;
                inj.call("sigqueueinfo", call, &args(signo, at))
                    .map(|_| ())
                    .map_err(|e| anyhow!("thread {tid} of process {pid}: {e}"))
            };
            if tid == pid {
                for info in &p.rec.shared_pending {
                    queue(info, RT_SIGQUEUEINFO, &|s, at| vec![pid as u64, s, at])?;
                }
            }
            for info in &th.pending {
                queue(info, RT_TGSIGQUEUEINFO, &|s, at| {
                    vec![pid as u64, tid as u64, s, at]
                })?;
            }
        }
        Ok(())
    }

    /// Stopped jobs stopped again (by a signal sent before the threads are let go), and
    /// SIGSTOPs that were queued sent again.
    pub(crate) fn stop_again(&self) {
        for (&pid, p) in &self.procs {
            // Stopped again by the signal that stopped it (its action is the default:
            // it has been stopped since): its parent's waitpid sees that signal.
            if p.rec.stopped() {
                let _ = sys::kill(pid, p.rec.stop_signal);
            }
            // A SIGSTOP queued and not yet taken (nothing can catch it, nothing sees its
            // siginfo): sent again, to the process or the thread it was queued for.
            if p.rec
                .shared_pending
                .iter()
                .any(|i| signal_of(i) == libc::SIGSTOP)
            {
                let _ = sys::kill(pid, libc::SIGSTOP);
            }
            for (th, &tid) in p.rec.threads.iter().zip(&p.tids) {
                if th.pending.iter().any(|i| signal_of(i) == libc::SIGSTOP) {
                    let _ = sys::tgkill(pid, tid, libc::SIGSTOP);
                }
            }
        }
    }
}
