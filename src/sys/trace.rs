//! Raw calls for driving other processes: ptrace beyond seize/interrupt/detach, writing
//! their memory, comparing their descriptors, and creating processes with exact pids.

use super::{check, check_retry};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// x86_64 `user_regs_struct` as 27 words, with the indices the engine uses.
pub type Regs = [u64; 27];
pub const R10: usize = 7;
pub const R9: usize = 8;
pub const R8: usize = 9;
pub const RAX: usize = 10;
pub const RDX: usize = 12;
pub const RSI: usize = 13;
pub const RDI: usize = 14;
pub const ORIG_RAX: usize = 15;
pub const RIP: usize = 16;
pub const RSP: usize = 19;

pub fn ptrace_setregs(tid: i32, regs: &Regs) -> io::Result<()> {
    check(unsafe {
        libc::ptrace(libc::PTRACE_SETREGS, tid, 0usize, regs.as_ptr() as usize) as libc::c_int
    })?;
    Ok(())
}

const NT_X86_XSTATE: usize = 0x202;

/// Put back an XSAVE area read with `ptrace_get_xstate` (same CPU layout).
pub fn ptrace_set_xstate(tid: i32, xstate: &[u8]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: xstate.as_ptr() as *mut libc::c_void,
        iov_len: xstate.len(),
    };
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_SETREGSET,
            tid,
            NT_X86_XSTATE,
            &mut iov as *mut libc::iovec as usize,
        ) as libc::c_int
    })?;
    Ok(())
}

pub fn ptrace_setoptions(tid: i32, options: libc::c_int) -> io::Result<()> {
    check(unsafe {
        libc::ptrace(libc::PTRACE_SETOPTIONS, tid, 0usize, options as usize) as libc::c_int
    })?;
    Ok(())
}

/// Resume until the next system call entry or exit (PTRACE_SYSCALL), delivering `sig`.
pub fn ptrace_syscall(tid: i32, sig: i32) -> io::Result<()> {
    check(unsafe { libc::ptrace(libc::PTRACE_SYSCALL, tid, 0usize, sig as usize) as libc::c_int })?;
    Ok(())
}

/// A `siginfo_t` as the kernel keeps it (128 bytes; the signal's number first).
pub type SigInfo = [u8; 128];

/// The signals queued for a stopped traced thread, in order, each with its siginfo
/// (PTRACE_PEEKSIGINFO, without taking them): its own queue, or with `shared` its
/// process's.
pub fn ptrace_peek_siginfo(tid: i32, shared: bool) -> io::Result<Vec<SigInfo>> {
    const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
    const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;
    #[repr(C)]
    struct Args {
        off: u64,
        flags: u32,
        nr: i32,
    }
    let mut out: Vec<SigInfo> = Vec::new();
    let mut buf = vec![[0u8; 128]; 32];
    loop {
        let args = Args {
            off: out.len() as u64,
            flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 },
            nr: buf.len() as i32,
        };
        let got = check(unsafe {
            libc::ptrace(
                PTRACE_PEEKSIGINFO,
                tid,
                &args as *const Args as usize,
                buf.as_mut_ptr() as usize,
            ) as libc::c_int
        })? as usize;
        out.extend_from_slice(&buf[..got.min(buf.len())]);
        if got < buf.len() {
            return Ok(out);
        }
        if out.len() > 1 << 16 {
            return Err(io::Error::other("more than 65536 signals queued"));
        }
    }
}

/// The siginfo of the signal a traced thread is stopped delivering (PTRACE_GETSIGINFO).
pub fn ptrace_get_siginfo(tid: i32) -> io::Result<SigInfo> {
    let mut info = [0u8; 128];
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_GETSIGINFO,
            tid,
            0usize,
            info.as_mut_ptr() as usize,
        ) as libc::c_int
    })?;
    Ok(info)
}

/// The blocked-signal mask of a stopped traced thread.
pub fn ptrace_get_sigmask(tid: i32) -> io::Result<u64> {
    let mut mask = 0u64;
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_GETSIGMASK,
            tid,
            8usize,
            &mut mask as *mut u64 as usize,
        ) as libc::c_int
    })?;
    Ok(mask)
}

pub fn ptrace_set_sigmask(tid: i32, mask: u64) -> io::Result<()> {
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_SETSIGMASK,
            tid,
            8usize,
            &mask as *const u64 as usize,
        ) as libc::c_int
    })?;
    Ok(())
}

/// Where a thread in a syscall stop is: 1 entry, 2 exit, 3 seccomp (PTRACE_GET_SYSCALL_INFO).
pub fn ptrace_syscall_op(tid: i32) -> io::Result<u8> {
    let mut info = [0u8; 88];
    check(unsafe {
        libc::ptrace(
            0x420e, // PTRACE_GET_SYSCALL_INFO
            tid,
            info.len(),
            info.as_mut_ptr() as usize,
        ) as libc::c_int
    })?;
    Ok(info[0])
}

/// waitpid(tid, __WALL) returning the raw status.
pub fn wait_raw(tid: i32) -> io::Result<i32> {
    let mut status = 0;
    check_retry(|| unsafe { libc::waitpid(tid, &mut status, libc::__WALL) })?;
    Ok(status)
}

/// Copy `buf` to `addr` in process `pid` (process_vm_writev); the whole of it or an error.
pub fn write_process_memory(pid: i32, addr: u64, buf: &[u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let local = libc::iovec {
            iov_base: buf[done..].as_ptr() as *mut libc::c_void,
            iov_len: buf.len() - done,
        };
        let remote = libc::iovec {
            iov_base: (addr as usize + done) as *mut libc::c_void,
            iov_len: buf.len() - done,
        };
        let n = unsafe { libc::process_vm_writev(pid, &local, 1, &remote, 1, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Err(io::Error::other(format!(
                "short write into process {pid} at {:#x}",
                addr as usize + done
            )));
        }
        done += n as usize;
    }
    Ok(())
}

/// Whether two descriptors (of the same or two processes) are one open file description.
pub fn same_file_description(pid1: i32, fd1: i32, pid2: i32, fd2: i32) -> io::Result<bool> {
    const KCMP_FILE: libc::c_long = 0;
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1 as libc::c_long,
            pid2 as libc::c_long,
            KCMP_FILE,
            fd1 as libc::c_long,
            fd2 as libc::c_long,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r == 0)
}

/// Whether descriptor `fd1` of `pid1` is the file registered in epoll set `efd` of
/// `pid2` as the `toff`-th registration through number `tfd` (kcmp KCMP_EPOLL_TFD).
pub fn same_epoll_target(
    pid1: i32,
    fd1: i32,
    pid2: i32,
    efd: i32,
    tfd: i32,
    toff: u32,
) -> io::Result<bool> {
    const KCMP_EPOLL_TFD: libc::c_long = 7;
    let slot: [u32; 3] = [efd as u32, tfd as u32, toff];
    // SAFETY: the kernel reads the three words of `slot`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1 as libc::c_long,
            pid2 as libc::c_long,
            KCMP_EPOLL_TFD,
            fd1 as libc::c_long,
            slot.as_ptr() as libc::c_long,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r == 0)
}

/// What kcmp compares: a process's memory, descriptor table, file-system context
/// (cwd, root, umask), signal handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shared {
    Vm = 1,
    Files = 2,
    Fs = 3,
    Sighand = 4,
}

/// How two processes' `what` compare (kcmp: the kernel's objects in an order of its own;
/// Equal: one object, shared).
pub fn kcmp_order(pid1: i32, pid2: i32, what: Shared) -> io::Result<std::cmp::Ordering> {
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1 as libc::c_long,
            pid2 as libc::c_long,
            what as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    };
    match r {
        0 => Ok(std::cmp::Ordering::Equal),
        1 => Ok(std::cmp::Ordering::Less),
        2 => Ok(std::cmp::Ordering::Greater),
        _ => Err(io::Error::last_os_error()),
    }
}

/// fcntl commands the libc crate does not name; `struct f_owner_ex` is two ints (type, pid).
pub const F_SETSIG: i32 = 10;
pub const F_GETSIG: i32 = 11;
pub const F_SETOWN_EX: i32 = 15;
pub const F_GETOWN_EX: i32 = 16;

/// A pidfd of process `pid`.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(pidfd as i32) })
}

/// Who a process's descriptor `fd` sends SIGIO and SIGURG to, and which signal, read from
/// a copy of it (one open file description, so the same owner): ((F_OWNER_* type, id in
/// our pid namespace), signal).
pub fn fd_owner(pidfd: BorrowedFd, fd: i32) -> io::Result<((i32, i32), i32)> {
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let copy = unsafe { OwnedFd::from_raw_fd(r as i32) };
    let mut owner = [0i32; 2];
    check(unsafe { libc::fcntl(copy.as_raw_fd(), F_GETOWN_EX, owner.as_mut_ptr()) })?;
    let signal = check(unsafe { libc::fcntl(copy.as_raw_fd(), F_GETSIG) })?;
    Ok(((owner[0], owner[1]), signal))
}

/// A copy of another process's descriptor (pidfd_getfd).
pub fn copy_fd_of(pid: i32, fd: i32) -> io::Result<OwnedFd> {
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(io::Error::last_os_error());
    }
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// A child process with exactly `pid` in this pid namespace, fork-like; in the child it
/// returns 0.
///
/// # Safety
/// As for `fork_into`: the child must only use raw system calls.
pub unsafe fn fork_with_pid(pid: i32) -> io::Result<i32> {
    let tid = [pid];
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: tid.as_ptr() as u64,
        set_tid_size: 1,
        ..Default::default()
    };
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as i32)
}

/// Sleep forever with raw system calls only (a fresh clone waiting to be seized).
pub fn pause_forever() -> ! {
    loop {
        unsafe { libc::syscall(libc::SYS_pause) };
    }
}

/// A pipe with O_CLOEXEC and the given extra flags.
pub fn pipe_with(flags: libc::c_int) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), flags | libc::O_CLOEXEC) })?;
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn set_pipe_size(fd: BorrowedFd, size: i32) -> io::Result<()> {
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, size) })?;
    Ok(())
}

pub fn get_pipe_size(fd: BorrowedFd) -> io::Result<i32> {
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ) })
}

pub fn set_status_flags(fd: BorrowedFd, flags: libc::c_int) -> io::Result<()> {
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags) })?;
    Ok(())
}

pub fn lseek(fd: BorrowedFd, pos: u64) -> io::Result<()> {
    let r = unsafe { libc::lseek(fd.as_raw_fd(), pos as libc::off_t, libc::SEEK_SET) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn eventfd(count: u64, flags: libc::c_int) -> io::Result<OwnedFd> {
    let fd = check(unsafe { libc::eventfd(0, flags | libc::EFD_CLOEXEC) })?;
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if count > 0 {
        super::write_all(
            unsafe { BorrowedFd::borrow_raw(fd.as_raw_fd()) },
            &count.to_ne_bytes(),
        )?;
    }
    Ok(fd)
}

/// A timerfd on `clock` armed with `value` left and `interval` (nanoseconds; 0: disarmed).
pub fn timerfd(
    clock: i32,
    flags: libc::c_int,
    value_ns: u64,
    interval_ns: u64,
) -> io::Result<OwnedFd> {
    let fd = check(unsafe { libc::timerfd_create(clock, flags | libc::TFD_CLOEXEC) })?;
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let ts = |ns: u64| libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    let spec = libc::itimerspec {
        it_interval: ts(interval_ns),
        // A timer due now (or overdue) must still fire: 1 ns rather than "disarm".
        it_value: ts(if value_ns == 0 && interval_ns > 0 {
            1
        } else {
            value_ns
        }),
    };
    check(unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) })?;
    Ok(fd)
}

pub fn signalfd_for(mask: u64, flags: libc::c_int) -> io::Result<OwnedFd> {
    let r = unsafe {
        libc::syscall(
            libc::SYS_signalfd4,
            -1,
            &mask as *const u64,
            8usize,
            flags | libc::SFD_CLOEXEC,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

pub fn epoll_create() -> io::Result<OwnedFd> {
    let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A memfd holding `content` (for a mapped file that is gone or changed).
pub fn memfd_with(name: &std::ffi::CStr, content: &[u8]) -> io::Result<OwnedFd> {
    let fd = check(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) })?;
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    super::write_all(unsafe { BorrowedFd::borrow_raw(fd.as_raw_fd()) }, content)?;
    Ok(fd)
}

/// An empty memfd named `name` that may be sealed (close-on-exec).
pub fn memfd_sealable(name: &std::ffi::CStr) -> io::Result<OwnedFd> {
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    let fd = check(unsafe { libc::memfd_create(name.as_ptr(), flags) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A memfd's seals (F_GET_SEALS; EINVAL: a file that is not a memfd or of tmpfs).
pub fn get_seals(fd: BorrowedFd) -> io::Result<u32> {
    Ok(check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) })? as u32)
}

pub fn add_seals(fd: BorrowedFd, seals: u32) -> io::Result<()> {
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals as libc::c_int) })?;
    Ok(())
}

/// The type of the file system `fd`'s file is on (fstatfs's f_type).
pub fn fs_type(fd: BorrowedFd) -> io::Result<i64> {
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) })?;
    Ok(st.f_type as i64)
}

/// A thread's robust futex list: (head, length).
pub fn get_robust_list(tid: i32) -> io::Result<(u64, u64)> {
    let mut head = 0u64;
    let mut len = 0usize;
    let r = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            tid,
            &mut head as *mut u64,
            &mut len as *mut usize,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((head, len as u64))
}

/// An empty memfd of `size` bytes (shared memory to be filled).
pub fn memfd_sized(name: &std::ffi::CStr, size: u64) -> io::Result<OwnedFd> {
    let fd = check(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) })?;
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) })?;
    Ok(fd)
}

/// Set process `pid`'s (soft, hard) limits for `resource` (lowering needs no privilege).
pub fn set_rlimit(pid: i32, resource: u32, limits: (u64, u64)) -> io::Result<()> {
    let new = libc::rlimit64 {
        rlim_cur: limits.0,
        rlim_max: limits.1,
    };
    check(unsafe {
        libc::prlimit64(
            pid,
            resource as libc::__rlimit_resource_t,
            &new,
            std::ptr::null_mut(),
        )
    })?;
    Ok(())
}

/// The foreground process group of the terminal whose pty master is `master` (in our
/// pid namespace's numbers).
pub fn foreground_group(master: BorrowedFd) -> io::Result<i32> {
    let mut pgrp: libc::pid_t = 0;
    check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPGRP, &mut pgrp) })?;
    Ok(pgrp)
}

/// A pair of connected unix datagram sockets (close-on-exec).
pub fn dgram_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    super::socket_pair(libc::SOCK_DGRAM)
}

/// Map `len` bytes at exactly `at` in this process (failing if anything is there): the
/// first page executable and holding `code`, the rest read-write.
pub fn map_code_page(at: u64, len: u64, code: &[u8]) -> io::Result<()> {
    let p = unsafe {
        libc::mmap(
            at as usize as *mut libc::c_void,
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    if p as u64 != at {
        unsafe { libc::munmap(p, len as usize) };
        return Err(io::Error::other("the kernel placed the mapping elsewhere"));
    }
    // SAFETY: the mapping was just made, writable, and is at least a page long.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), p.cast::<u8>(), code.len().min(4096)) };
    check(unsafe { libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_EXEC) })?;
    Ok(())
}

pub fn tgkill(pid: i32, tid: i32, sig: i32) -> io::Result<()> {
    let r = unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Keep `buf` (or the whole pages inside it) out of children made by fork.
pub fn dont_fork(buf: &[u8]) {
    let start = (buf.as_ptr() as usize).div_ceil(4096) * 4096;
    let end = (buf.as_ptr() as usize + buf.len()) / 4096 * 4096;
    if end > start {
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTFORK) };
    }
}

/// The `index`-th seccomp filter of thread `tid` (0: the one installed last) as its BPF
/// instructions (8 bytes each); None past the oldest. Needs CAP_SYS_ADMIN.
pub fn ptrace_seccomp_filter(tid: i32, index: u64) -> io::Result<Option<Vec<u8>>> {
    const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
    // SAFETY: a null buffer asks for the count only.
    let n = unsafe { libc::ptrace(PTRACE_SECCOMP_GET_FILTER, tid, index as usize, 0usize) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOENT) => Ok(None),
            _ => Err(e),
        };
    }
    let mut buf = vec![0u8; n as usize * 8];
    // SAFETY: the kernel writes `n` instructions of 8 bytes into `buf`.
    let got = unsafe {
        libc::ptrace(
            PTRACE_SECCOMP_GET_FILTER,
            tid,
            index as usize,
            buf.as_mut_ptr() as usize,
        )
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(got as usize * 8);
    Ok(Some(buf))
}

/// The flags the `index`-th seccomp filter of thread `tid` was installed with
/// (SECCOMP_FILTER_FLAG_LOG, _NEW_LISTENER ...).
pub fn ptrace_seccomp_flags(tid: i32, index: u64) -> io::Result<u64> {
    const PTRACE_SECCOMP_GET_METADATA: libc::c_uint = 0x420d;
    let mut meta: [u64; 2] = [index, 0];
    // SAFETY: the kernel reads and writes the two words of `meta`.
    let r = unsafe {
        libc::ptrace(
            PTRACE_SECCOMP_GET_METADATA,
            tid,
            16usize,
            meta.as_mut_ptr() as usize,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(meta[1])
}
