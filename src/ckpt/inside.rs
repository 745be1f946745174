//! What only a process itself can tell: its signal handlers, interval timers and current
//! program break, and per thread the clear-child-tid address and the alternate signal
//! stack. Read with system calls injected into the frozen threads (`crate::inject`),
//! through a scratch page mapped for the purpose and removed afterwards.
//!
//! The threads' registers and signal masks are put back exactly (a thread caught inside a
//! system call is set up to go on with it), so a checkpoint that goes on leaves the
//! programs as they were.

use crate::inject::{self, Injector, nr};
use crate::sys::{self, trace as t};
use std::io;

/// Signals whose handlers are saved: 1..=64 but SIGKILL and SIGSTOP.
pub fn handled_signals() -> impl Iterator<Item = u64> {
    (1..=64u64).filter(|&s| s != libc::SIGKILL as u64 && s != libc::SIGSTOP as u64)
}

pub struct Inside {
    /// The kernel's `struct sigaction` per signal 1..=64 (handler, flags, restorer, mask);
    /// SIGKILL and SIGSTOP entries are zero.
    pub sigactions: Vec<[u64; 4]>,
    /// ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF as (interval s, µs, value s, µs).
    pub itimers: Vec<[u64; 4]>,
    pub brk: u64,
    /// Per thread, in the order given: (clear_child_tid, sigaltstack sp, flags, size).
    pub threads: Vec<(u64, [u64; 3])>,
}

/// Registers and signal masks taken before injecting, put back on drop.
struct Saved {
    threads: Vec<(i32, t::Regs, u64)>,
}

impl Drop for Saved {
    fn drop(&mut self) {
        for (tid, regs, mask) in &self.threads {
            let _ = t::ptrace_setregs(*tid, &inject::restart_regs(*regs, true));
            let _ = t::ptrace_set_sigmask(*tid, *mask);
        }
    }
}

/// Read what is inside process `pid` (host view), whose threads `tids` are frozen.
/// `exec_maps`: its executable mappings (start, end, executable, path).
pub fn read_inside(
    pid: i32,
    tids: &[i32],
    exec_maps: &[(u64, u64, bool, String)],
) -> io::Result<Inside> {
    let mut saved = Saved {
        threads: Vec::new(),
    };
    for &tid in tids {
        let regs = sys::ptrace_getregs(tid)?;
        let mask = t::ptrace_get_sigmask(tid)?;
        saved.threads.push((tid, regs, mask));
        // Nothing of the session's is delivered while we drive the thread.
        t::ptrace_set_sigmask(tid, !0)?;
    }
    let at = inject::find_syscall_insn(pid, exec_maps)?;
    let main = Injector::new(tids[0], at, 0)?;
    let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    let scratch = main.call("mmap", nr::MMAP, &[0, 4096, prot, flags, u64::MAX, 0])?;
    let result = read_with(&main, pid, tids, at, scratch);
    let _ = main.call("munmap", nr::MUNMAP, &[scratch, 4096]);
    drop(saved);
    result
}

fn read_words<const N: usize>(pid: i32, addr: u64) -> io::Result<[u64; N]> {
    let mut b = vec![0u8; N * 8];
    if sys::read_process_memory(pid, addr, &mut b)? != b.len() {
        return Err(io::Error::other("short read of the scratch page"));
    }
    let mut out = [0u64; N];
    for (i, w) in out.iter_mut().enumerate() {
        *w = u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    }
    Ok(out)
}

fn read_with(main: &Injector, pid: i32, tids: &[i32], at: u64, scratch: u64) -> io::Result<Inside> {
    let mut sigactions = vec![[0u64; 4]; 64];
    for sig in handled_signals() {
        main.call("rt_sigaction", nr::RT_SIGACTION, &[sig, 0, scratch, 8])?;
        sigactions[sig as usize - 1] = read_words::<4>(pid, scratch)?;
    }
    let mut itimers = Vec::new();
    for which in 0..3 {
        main.call("getitimer", nr::GETITIMER, &[which, scratch])?;
        itimers.push(read_words::<4>(pid, scratch)?);
    }
    let brk = main.call("brk", nr::BRK, &[0])?;
    let mut threads = Vec::new();
    for &tid in tids {
        let inj = Injector::new(tid, at, 0)?;
        const PR_GET_TID_ADDRESS: u64 = 40;
        inj.call(
            "prctl(PR_GET_TID_ADDRESS)",
            nr::PRCTL,
            &[PR_GET_TID_ADDRESS, scratch],
        )?;
        let [ctid] = read_words::<1>(pid, scratch)?;
        inj.call("sigaltstack", nr::SIGALTSTACK, &[0, scratch])?;
        let ss = read_words::<3>(pid, scratch)?;
        threads.push((ctid, ss));
    }
    Ok(Inside {
        sigactions,
        itimers,
        brk,
        threads,
    })
}
