//! What only a process itself can tell, asked of it by system calls injected into its
//! frozen threads (`crate::inject`) through a scratch page mapped for the purpose and
//! removed afterwards: its signal handlers and parent-death signal (`task::signals`),
//! interval and POSIX timers (`task::timers`), current program break, securebits,
//! dumpability, permitted XSAVE components, and per thread the clear-child-tid address
//! and the alternate signal stack.
//!
//! The threads' registers and signal masks are put back exactly (a thread caught inside a
//! system call is set up to go on with it), so a checkpoint that goes on leaves the
//! programs as they were.

use crate::inject::{self, Injector, nr};
use crate::records::PosixTimer;
use crate::sys::{self, trace as t};
use crate::task::{signals, timers};
use std::io;

/// A process's mappings as the injector looks for code: (start, end, executable, path).
pub type CodeMap = (u64, u64, bool, String);

pub struct Inside {
    /// The kernel's `struct sigaction` per signal 1..=64 (handler, flags, restorer, mask);
    /// SIGKILL and SIGSTOP entries are zero.
    pub sigactions: Vec<[u64; 4]>,
    /// ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF as (interval s, µs, value s, µs).
    pub itimers: Vec<[u64; 4]>,
    pub brk: u64,
    /// Per thread, in the order given: (clear_child_tid, sigaltstack sp, flags, size,
    /// timer slack).
    pub threads: Vec<(u64, [u64; 3], u64)>,
    /// POSIX timers (timer_create), with `tid` still the host's thread id.
    pub timers: Vec<PosixTimer>,
    /// Whether the process was dumpable. One that was not (ssh-agent, gpg-agent make
    /// themselves so) is made dumpable for the checkpoint, so that its /proc files can be
    /// read, and made undumpable again before it goes on (`set_undumpable`).
    pub dumpable: bool,
    /// Its securebits (PR_GET_SECUREBITS): 0 unless a privileged program set them.
    pub securebits: u64,
    /// The signal it gets when its parent ends (PR_GET_PDEATHSIG; 0: none).
    pub pdeath_signal: i32,
    /// The dynamic XSAVE components it was permitted (ARCH_GET_XCOMP_PERM; AMX tile
    /// data must be asked for before use).
    pub xcomp_perm: u64,
    /// What mlockall(MCL_FUTURE) set (`ProcessRecord::lock_future`).
    pub lock_future: u32,
    /// Whether it is a child subreaper (PR_GET_CHILD_SUBREAPER).
    pub child_subreaper: bool,
    /// Whether transparent huge pages are turned off for it (PR_GET_THP_DISABLE).
    pub thp_disabled: bool,
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

/// Processes a checkpoint made dumpable (to read their /proc files), to be made
/// undumpable again before they go on, whatever happens: each is noted before the change
/// is made, and `undo` (or dropping) sets them back.
#[derive(Default)]
pub struct MadeDumpable(Vec<(i32, Vec<i32>, Vec<CodeMap>)>);

impl MadeDumpable {
    pub fn undo(&mut self) {
        for (pid, tids, maps) in self.0.drain(..) {
            let _ = set_undumpable(pid, &tids, &maps);
        }
    }

    /// Forget them: the session ends with the checkpoint.
    pub fn forget(&mut self) {
        self.0.clear();
    }
}

impl Drop for MadeDumpable {
    fn drop(&mut self) {
        self.undo();
    }
}

/// Read what is inside process `pid` (host view), whose threads `tids` are frozen.
/// `exec_maps`: its executable mappings (start, end, executable, path). A process that is
/// not dumpable is made so (noted in `made` first).
pub fn read_inside(
    pid: i32,
    tids: &[i32],
    exec_maps: &[CodeMap],
    made: &mut MadeDumpable,
) -> io::Result<Inside> {
    inject_into(pid, tids, exec_maps, |main, at, scratch| {
        read_with(main, pid, tids, at, scratch, exec_maps, made)
    })
}

/// Make process `pid` undumpable again (see `Inside::dumpable`).
pub fn set_undumpable(pid: i32, tids: &[i32], exec_maps: &[CodeMap]) -> io::Result<()> {
    inject_into(pid, tids, exec_maps, |main, _, _| {
        main.call("prctl(PR_SET_DUMPABLE)", nr::PRCTL, &[PR_SET_DUMPABLE, 0])?;
        Ok(())
    })
}

/// What the session's own namespaces hold, asked from inside one of its processes.
pub struct SessionNamespaces {
    /// The host name (UTS namespace).
    pub hostname: String,
}

/// The session's namespaces as process `pid` sees them: the host name (`uname`). (The
/// SysV objects of its IPC namespace are read by `sysv::read_objects`.)
pub fn session_namespaces(
    pid: i32,
    tids: &[i32],
    exec_maps: &[CodeMap],
) -> io::Result<SessionNamespaces> {
    inject_into(pid, tids, exec_maps, |main, _, scratch| {
        const UNAME: i64 = 63;
        main.call("uname", UNAME, &[scratch])?;
        let mut uts = [0u8; 65 * 2];
        sys::read_process_memory(pid, scratch, &mut uts)?;
        let node = &uts[65..];
        let hostname =
            String::from_utf8_lossy(&node[..node.iter().position(|&b| b == 0).unwrap_or(65)])
                .into_owned();
        Ok(SessionNamespaces { hostname })
    })
}

const PR_GET_DUMPABLE: u64 = 3;
const PR_SET_DUMPABLE: u64 = 4;

/// Run `f` with an injector on the main thread of frozen process `pid` and a scratch page
/// in it; the threads' registers and masks are put back afterwards.
fn inject_into<T>(
    pid: i32,
    tids: &[i32],
    exec_maps: &[CodeMap],
    f: impl FnOnce(&Injector, u64, u64) -> io::Result<T>,
) -> io::Result<T> {
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
    let _near = sys::NearThread::new(tids[0]);
    let main = Injector::new(tids[0], at, 0)?;
    let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    let scratch = main.call("mmap", nr::MMAP, &[0, 4096, prot, flags, u64::MAX, 0])?;
    let result = f(&main, at, scratch);
    let _ = main.call("munmap", nr::MUNMAP, &[scratch, 4096]);
    drop(saved);
    result
}

pub(crate) fn read_words<const N: usize>(pid: i32, addr: u64) -> io::Result<[u64; N]> {
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

fn read_with(
    main: &Injector,
    pid: i32,
    tids: &[i32],
    at: u64,
    scratch: u64,
    exec_maps: &[CodeMap],
    made: &mut MadeDumpable,
) -> io::Result<Inside> {
    let dumpable = main.call("prctl(PR_GET_DUMPABLE)", nr::PRCTL, &[PR_GET_DUMPABLE])? != 0;
    if !dumpable {
        made.0.push((pid, tids.to_vec(), exec_maps.to_vec()));
        main.call("prctl(PR_SET_DUMPABLE)", nr::PRCTL, &[PR_SET_DUMPABLE, 1])?;
        super::hooks::fail_at("dumpable")?;
    }
    let sigactions = signals::read_actions(main, pid, scratch)?;
    let itimers = timers::read_itimers(main, pid, scratch)?;
    let brk = main.call("brk", nr::BRK, &[0])?;
    const PR_GET_SECUREBITS: u64 = 27;
    let securebits = main.call("prctl(PR_GET_SECUREBITS)", nr::PRCTL, &[PR_GET_SECUREBITS])?;
    let pdeath_signal = signals::read_pdeath_signal(main, pid, scratch)?;
    const ARCH_GET_XCOMP_PERM: u64 = 0x1022;
    // A kernel without dynamic XSAVE features (before 5.16) has none to permit.
    let xcomp_perm = match main.call(
        "arch_prctl(ARCH_GET_XCOMP_PERM)",
        nr::ARCH_PRCTL,
        &[ARCH_GET_XCOMP_PERM, scratch],
    ) {
        Ok(_) => read_words::<1>(pid, scratch)?[0],
        Err(e) if e.errno == libc::EINVAL => 0,
        Err(e) => return Err(e.into()),
    };
    let timers = timers::read_posix_timers(main, pid, scratch)?;
    const PR_GET_CHILD_SUBREAPER: u64 = 37;
    main.call(
        "prctl(PR_GET_CHILD_SUBREAPER)",
        nr::PRCTL,
        &[PR_GET_CHILD_SUBREAPER, scratch],
    )?;
    let child_subreaper = read_words::<1>(pid, scratch)?[0] as u32 != 0;
    const PR_GET_THP_DISABLE: u64 = 42;
    let thp_disabled = main.call(
        "prctl(PR_GET_THP_DISABLE)",
        nr::PRCTL,
        &[PR_GET_THP_DISABLE],
    )? != 0;
    let lock_future = crate::task::memory::read_lock_future(main, pid)?;
    let mut threads = Vec::new();
    for &tid in tids {
        let _near = sys::NearThread::new(tid);
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
        const PR_GET_TIMERSLACK: u64 = 30;
        let slack = inj.call("prctl(PR_GET_TIMERSLACK)", nr::PRCTL, &[PR_GET_TIMERSLACK])?;
        threads.push((ctid, ss, slack));
    }
    Ok(Inside {
        sigactions,
        itimers,
        brk,
        threads,
        timers,
        dumpable,
        securebits,
        pdeath_signal,
        xcomp_perm,
        lock_future,
        child_subreaper,
        thp_disabled,
    })
}

/// A connection not accepted yet, made again by the process that holds its client end
/// (`fds::sockets::requeue_pending`): what it connects to and what it sends.
pub struct Reconnect<'a> {
    /// The client end's type (SOCK_STREAM, SOCK_SEQPACKET).
    pub kind: i32,
    /// The listener's address (a `sockaddr_un` as long as its name needs).
    pub addr: &'a [u8],
    /// What the client had sent: one piece of a stream, or its messages.
    pub pieces: &'a [Vec<u8>],
    pub passcred: bool,
    /// It had shut down its sending side.
    pub shut_wr: bool,
    /// Its status flags (O_NONBLOCK, O_APPEND ...).
    pub status: i32,
    /// The descriptors that held the old end, and whether each is close-on-exec.
    pub fds: &'a [(i32, bool)],
}

/// Make process `pid` (frozen, threads `tids`) connect a new client end to the listener
/// of `r` and send what the old one had sent, then put it at the old one's numbers (the
/// old end is closed by it). The connection is the process's own, as the first one was
/// (the listener's holder sees its credentials).
pub fn reconnect(pid: i32, tids: &[i32], exec_maps: &[CodeMap], r: &Reconnect) -> io::Result<()> {
    const SOCKET: i64 = 41;
    const CONNECT: i64 = 42;
    const SENDTO: i64 = 44;
    const SHUTDOWN: i64 = 48;
    const SETSOCKOPT: i64 = 54;
    // The address, an int 1 for SO_PASSCRED, then the bytes, in memory of its own.
    let mut bytes = r.addr.to_vec();
    bytes.resize(bytes.len().div_ceil(8) * 8, 0);
    let one_at = bytes.len() as u64;
    bytes.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
    let data_at = bytes.len() as u64;
    for p in r.pieces {
        bytes.extend_from_slice(p);
    }
    let size = (bytes.len().max(1).div_ceil(4096) * 4096) as u64;
    inject_into(pid, tids, exec_maps, |main, _, _| {
        let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let buf = main.call("mmap", nr::MMAP, &[0, size, prot, flags, u64::MAX, 0])?;
        let result = (|| -> io::Result<()> {
            t::write_process_memory(pid, buf, &bytes)?;
            let kind = (r.kind | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) as u64;
            let fd = main.call("socket", SOCKET, &[libc::AF_UNIX as u64, kind, 0])?;
            let made = (|| -> io::Result<()> {
                if r.passcred {
                    let (level, opt) = (libc::SOL_SOCKET as u64, libc::SO_PASSCRED as u64);
                    main.call("setsockopt", SETSOCKOPT, &[fd, level, opt, buf + one_at, 4])?;
                }
                main.call("connect", CONNECT, &[fd, buf, r.addr.len() as u64])?;
                let send = (libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) as u64;
                let mut at = buf + data_at;
                for p in r.pieces {
                    let mut left = p.len() as u64;
                    loop {
                        let n = main.call("sendto", SENDTO, &[fd, at, left, send, 0, 0])?;
                        if r.kind != libc::SOCK_STREAM && n != left {
                            return Err(io::Error::other("a message went out in part"));
                        }
                        at += n;
                        left -= n;
                        if left == 0 {
                            break;
                        }
                    }
                }
                if r.shut_wr {
                    main.call("shutdown", SHUTDOWN, &[fd, libc::SHUT_WR as u64])?;
                }
                main.call(
                    "fcntl(F_SETFL)",
                    nr::FCNTL,
                    &[fd, libc::F_SETFL as u64, r.status as u64],
                )?;
                for &(n, cloexec) in r.fds {
                    let flag = if cloexec { libc::O_CLOEXEC as u64 } else { 0 };
                    main.call("dup3", nr::DUP3, &[fd, n as u64, flag])?;
                }
                Ok(())
            })();
            let _ = main.call("close", nr::CLOSE, &[fd]);
            made
        })();
        let _ = main.call("munmap", nr::MUNMAP, &[buf, size]);
        result
    })
}

/// Make process `pid` (frozen, threads `tids`) create a userfaultfd with `flags`
/// (O_CLOEXEC and O_NONBLOCK are added), and hand it over: ours, and the process's own
/// descriptor closed again, so the program sees none (`task::memory::tracking`).
pub fn take_userfaultfd(
    pid: i32,
    tids: &[i32],
    exec_maps: &[CodeMap],
    flags: u64,
) -> io::Result<std::os::fd::OwnedFd> {
    const USERFAULTFD: i64 = 323;
    inject_into(pid, tids, exec_maps, |main, _, _| {
        let flags = flags | (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
        let fd = main.call("userfaultfd", USERFAULTFD, &[flags])?;
        let ours = sys::trace::copy_fd_of(pid, fd as i32);
        let _ = main.call("close", nr::CLOSE, &[fd]);
        ours
    })
}
