//! The injected core: system calls made inside a stopped, traced thread, on its behalf.
//!
//! No code is loaded into the program. A `syscall` instruction somewhere in its address
//! space (the vDSO has them; on restore, a two-page trampoline of our own) is enough: the
//! thread's registers are set to that address with the call's number and arguments, it
//! runs under PTRACE_SYSCALL to the call's exit stop, and the result is read from `rax`.
//! The thread never executes anything else, so a call changes nothing but what the call
//! itself changes. A scratch page in the target holds what a call reads or writes.

use crate::sys::{self, trace as t};
use std::io;

/// Syscall numbers (x86_64) the engine injects.
pub mod nr {
    pub const MMAP: i64 = 9;
    pub const MPROTECT: i64 = 10;
    pub const MADVISE: i64 = 28;
    pub const SECCOMP: i64 = 317;
    pub const MLOCKALL: i64 = 151;
    pub const MLOCK2: i64 = 325;
    pub const MSEAL: i64 = 462;
    pub const MUNMAP: i64 = 11;
    pub const BRK: i64 = 12;
    pub const RT_SIGACTION: i64 = 13;
    pub const IOCTL: i64 = 16;
    pub const CLOSE: i64 = 3;
    pub const OPEN: i64 = 2;
    pub const GETITIMER: i64 = 36;
    pub const SETITIMER: i64 = 38;
    pub const RECVMSG: i64 = 47;
    pub const EXIT_GROUP: i64 = 231;
    pub const SETPGID: i64 = 109;
    pub const SETSID: i64 = 112;
    pub const CAPSET: i64 = 126;
    pub const SIGALTSTACK: i64 = 131;
    pub const UMASK: i64 = 95;
    pub const PERSONALITY: i64 = 135;
    pub const PRCTL: i64 = 157;
    pub const ARCH_PRCTL: i64 = 158;
    pub const SET_TID_ADDRESS: i64 = 218;
    pub const EPOLL_CTL: i64 = 233;
    pub const DUP3: i64 = 292;
    pub const RSEQ: i64 = 334;
    pub const CLONE3: i64 = 435;
    pub const CLOSE_RANGE: i64 = 436;
    pub const FCHDIR: i64 = 81;
    pub const CHROOT: i64 = 161;
    pub const KILL: i64 = 62;
    pub const FCNTL: i64 = 72;
    pub const FLOCK: i64 = 73;
}

/// The errno of a failed injected call, named.
#[derive(Debug)]
pub struct CallError {
    pub call: &'static str,
    pub errno: i32,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} failed: {}",
            self.call,
            io::Error::from_raw_os_error(self.errno)
        )
    }
}

impl From<CallError> for io::Error {
    fn from(e: CallError) -> io::Error {
        io::Error::other(e.to_string())
    }
}

/// A traced, stopped thread that system calls can be made in.
pub struct Injector {
    pub tid: i32,
    /// Address of a `syscall` instruction in the thread's address space.
    pub syscall_at: u64,
}

impl Injector {
    /// Ready `tid` (already seized and stopped) for injection at `syscall_at`;
    /// `options` are further ptrace options to set (fork/clone tracing on restore).
    pub fn new(tid: i32, syscall_at: u64, options: libc::c_int) -> io::Result<Injector> {
        t::ptrace_setoptions(tid, libc::PTRACE_O_TRACESYSGOOD | options)?;
        Ok(Injector { tid, syscall_at })
    }

    /// Make the call; its raw result (negative: -errno).
    pub fn raw(&self, number: i64, args: &[u64]) -> io::Result<i64> {
        let mut regs = sys::ptrace_getregs(self.tid)?;
        regs[t::RIP] = self.syscall_at;
        regs[t::RAX] = number as u64;
        // Not in a syscall as far as signal restart logic goes.
        regs[t::ORIG_RAX] = u64::MAX;
        for (i, slot) in [t::RDI, t::RSI, t::RDX, t::R10, t::R8, t::R9]
            .into_iter()
            .enumerate()
        {
            regs[slot] = args.get(i).copied().unwrap_or(0);
        }
        t::ptrace_setregs(self.tid, &regs)?;
        loop {
            t::ptrace_syscall(self.tid, 0)?;
            let status = t::wait_raw(self.tid)?;
            if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                return Err(io::Error::other(format!(
                    "thread {} ended during an injected system call",
                    self.tid
                )));
            }
            if !libc::WIFSTOPPED(status) {
                continue;
            }
            if libc::WSTOPSIG(status) == libc::SIGTRAP | 0x80 {
                if t::ptrace_syscall_op(self.tid)? == 2 {
                    return Ok(sys::ptrace_getregs(self.tid)?[t::RAX] as i64);
                }
                continue;
            }
            // Event stops (a fork or clone we made), and signals: the thread runs nothing
            // but our calls, and the session's own signals are blocked meanwhile.
        }
    }

    /// Make the call; an error names it.
    pub fn call(&self, what: &'static str, number: i64, args: &[u64]) -> Result<u64, CallError> {
        match self.raw(number, args) {
            Ok(r) if (-4095..0).contains(&r) => Err(CallError {
                call: what,
                errno: -r as i32,
            }),
            Ok(r) => Ok(r as u64),
            Err(e) => Err(CallError {
                call: what,
                errno: e.raw_os_error().unwrap_or(libc::EIO),
            }),
        }
    }
}

/// Registers that make a thread stopped inside a system call go on with that call: the
/// kernel's -ERESTART* codes become a re-issue of the original call (`restart_syscall`
/// only when the kernel still holds its restart block, `live`). A thread not in a call
/// is unchanged.
pub fn restart_regs(mut regs: t::Regs, live: bool) -> t::Regs {
    const ERESTARTSYS: i64 = -512;
    const ERESTARTNOINTR: i64 = -513;
    const ERESTARTNOHAND: i64 = -514;
    const ERESTART_RESTARTBLOCK: i64 = -516;
    if (regs[t::ORIG_RAX] as i64) < 0 {
        return regs;
    }
    match regs[t::RAX] as i64 {
        ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => {
            regs[t::RAX] = regs[t::ORIG_RAX];
            regs[t::RIP] -= 2;
        }
        ERESTART_RESTARTBLOCK => {
            regs[t::RAX] = if live {
                219 // restart_syscall
            } else {
                regs[t::ORIG_RAX]
            };
            regs[t::RIP] -= 2;
        }
        _ => return regs,
    }
    regs[t::ORIG_RAX] = u64::MAX;
    regs
}

/// The address of a `syscall` instruction (0f 05) in the executable mappings of `pid`,
/// the vDSO first.
pub fn find_syscall_insn(pid: i32, maps: &[(u64, u64, bool, String)]) -> io::Result<u64> {
    let mut order: Vec<&(u64, u64, bool, String)> = maps.iter().filter(|m| m.2).collect();
    order.sort_by_key(|m| m.3 != "[vdso]");
    let mut buf = vec![0u8; 1 << 16];
    for (start, end, _, _) in order {
        let mut at = *start;
        while at < *end {
            let n = ((end - at) as usize).min(buf.len());
            let got = match sys::read_process_memory(pid, at, &mut buf[..n]) {
                Ok(g) if g > 0 => g,
                _ => break,
            };
            if let Some(i) = buf[..got].windows(2).position(|w| w == [0x0f, 0x05]) {
                return Ok(at + i as u64);
            }
            // Overlap by one byte so an instruction across the boundary is seen.
            at += got.max(2) as u64 - 1;
        }
    }
    Err(io::Error::other(format!(
        "no syscall instruction found in process {pid}"
    )))
}
