//! The one place with raw system calls. Everything else calls these safe wrappers.
//!
//! Each wrapper returns `io::Result` carrying the kernel's errno, so callers can say which
//! call failed on what.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

pub mod sock;
pub mod trace;

/// A file mapped read-only into memory, unmapped on drop.
pub struct MappedFile {
    ptr: *const u8,
    len: usize,
}

// SAFETY: the mapping is read-only and lives as long as the value.
unsafe impl Send for MappedFile {}
unsafe impl Sync for MappedFile {}

impl MappedFile {
    pub fn map(f: &std::fs::File) -> io::Result<MappedFile> {
        let len = f.metadata()?.len() as usize;
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty file"));
        }
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                f.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // Read front to back once: let the kernel read ahead.
        unsafe { libc::madvise(p, len, libc::MADV_SEQUENTIAL) };
        Ok(MappedFile {
            ptr: p as *const u8,
            len,
        })
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `len` bytes, readable, and outlives the borrow.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}
pub use trace::{dgram_pair, foreground_group, tgkill};

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_retry(mut f: impl FnMut() -> libc::c_int) -> io::Result<libc::c_int> {
    loop {
        let r = f();
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(r);
    }
}

pub fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in string"))
}

// ---- terminals ------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WinSize {
    pub cols: u16,
    pub rows: u16,
}

pub fn isatty(fd: BorrowedFd) -> bool {
    unsafe { libc::isatty(fd.as_raw_fd()) == 1 }
}

pub fn get_winsize(fd: BorrowedFd) -> io::Result<WinSize> {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) })?;
    Ok(WinSize {
        cols: ws.ws_col,
        rows: ws.ws_row,
    })
}

pub fn set_winsize(fd: BorrowedFd, size: WinSize) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) })?;
    Ok(())
}

pub type Termios = libc::termios;

pub fn get_termios(fd: BorrowedFd) -> io::Result<Termios> {
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    check(unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) })?;
    Ok(t)
}

pub fn set_termios(fd: BorrowedFd, t: &Termios) -> io::Result<()> {
    check_retry(|| unsafe { libc::tcsetattr(fd.as_raw_fd(), libc::TCSADRAIN, t) })?;
    Ok(())
}

pub fn make_raw(t: &Termios) -> Termios {
    let mut raw = *t;
    unsafe { libc::cfmakeraw(&mut raw) };
    raw
}

/// Open a new pty master in the devpts instance mounted at /dev/pts (through /dev/ptmx),
/// unlock it, and return it with its number.
pub fn open_pty_master() -> io::Result<(OwnedFd, u32)> {
    let fd = check(unsafe {
        libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })?;
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    let unlock: libc::c_int = 0;
    check(unsafe { libc::ioctl(fd, libc::TIOCSPTLCK, &unlock) })?;
    let mut n: libc::c_uint = 0;
    check(unsafe { libc::ioctl(fd, libc::TIOCGPTN, &mut n) })?;
    Ok((master, n))
}

/// Whether a pty master is in packet mode (TIOCPKT).
pub fn pty_packet_mode(master: BorrowedFd) -> io::Result<bool> {
    let mut on: libc::c_int = 0;
    check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPKT, &mut on) })?;
    Ok(on != 0)
}

/// Whether a pty is locked (its slave cannot be opened: unlockpt not called yet).
pub fn pty_locked(master: BorrowedFd) -> io::Result<bool> {
    let mut on: libc::c_int = 0;
    check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTLCK, &mut on) })?;
    Ok(on != 0)
}

pub fn set_pty_locked(master: BorrowedFd, on: bool) -> io::Result<()> {
    let on: libc::c_int = on.into();
    check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &on) })?;
    Ok(())
}

pub fn set_pty_packet_mode(master: BorrowedFd, on: bool) -> io::Result<()> {
    let on: libc::c_int = on.into();
    check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCPKT, &on) })?;
    Ok(())
}

/// A new descriptor of the slave side of the pty whose master is `master` (TIOCGPTPEER):
/// reached without a path, so from any mount namespace.
pub fn pty_peer(master: BorrowedFd) -> io::Result<OwnedFd> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    let fd = check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether `fd` has something to read now (poll with no timeout).
pub fn readable(fd: BorrowedFd) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    unsafe { libc::poll(&mut p, 1, 0) > 0 && p.revents & libc::POLLIN != 0 }
}

/// Write `bytes` into a pty through its slave as the programs' output, passed through to
/// the master as they are: the terminal's output processing (OPOST, ONLCR ...) is off while
/// they are written, for they were processed when first written.
pub fn write_as_output(slave: BorrowedFd, bytes: &[u8]) -> io::Result<()> {
    let saved = get_termios(slave)?;
    let mut raw = saved;
    raw.c_oflag &= !libc::OPOST;
    set_termios(slave, &raw)?;
    let written = write_all(slave, bytes);
    set_termios(slave, &saved)?;
    written
}

pub fn set_controlling_tty(fd: BorrowedFd) -> io::Result<()> {
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) })?;
    Ok(())
}

// ---- files and descriptors ------------------------------------------------------------

pub fn open(path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    let fd = check_retry(|| unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, 0o600) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    trace::pipe_with(0)
}

pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socket_pair(libc::SOCK_SEQPACKET)
}

/// A connected pair of unix sockets of `kind` (close-on-exec).
fn socket_pair(kind: libc::c_int) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    check(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            kind | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn set_nonblocking(fd: BorrowedFd, on: bool) -> io::Result<()> {
    let flags = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    let flags = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags) })?;
    Ok(())
}

pub fn set_cloexec(fd: BorrowedFd, on: bool) -> io::Result<()> {
    let flags = if on { libc::FD_CLOEXEC } else { 0 };
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, flags) })?;
    Ok(())
}

pub fn read(fd: BorrowedFd, buf: &mut [u8]) -> io::Result<usize> {
    let n = check_retry(|| unsafe {
        libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) as libc::c_int
    })?;
    Ok(n as usize)
}

pub fn write(fd: BorrowedFd, buf: &[u8]) -> io::Result<usize> {
    let n = check_retry(|| unsafe {
        libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) as libc::c_int
    })?;
    Ok(n as usize)
}

pub fn write_all(fd: BorrowedFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                poll(&mut [PollFd::new(fd.as_raw_fd(), libc::POLLOUT)], -1)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Move a descriptor to number `to` (close-on-exec), closing the old number.
pub fn move_fd(fd: OwnedFd, to: RawFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() == to {
        return Ok(fd);
    }
    check_retry(|| unsafe { libc::dup3(fd.as_raw_fd(), to, libc::O_CLOEXEC) })?;
    drop(fd);
    Ok(unsafe { OwnedFd::from_raw_fd(to) })
}

/// XCR0: the XSAVE state components the kernel enabled for user space.
pub fn xcr0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: XGETBV with ECX = 0 reads XCR0; every x86-64 CPU Linux runs with XSAVE
    // enabled has it (OSXSAVE), and it touches no memory.
    unsafe {
        std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi, options(nomem, nostack));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

pub fn sethostname(name: &str) -> io::Result<()> {
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })?;
    Ok(())
}

/// Create a new file (it must not exist) with permission bits `mode`, for writing.
pub fn create_new(path: &CStr, mode: u32) -> io::Result<OwnedFd> {
    let fd = check_retry(|| unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: just opened, owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // The umask may have taken bits away.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) })?;
    Ok(fd)
}

/// The holes of a file of `size` bytes, (offset, length) in order (SEEK_DATA/SEEK_HOLE;
/// a file system without them reports none). The file's offset is left where it was: a
/// read after it would otherwise start where the last hole did.
pub fn holes_of(fd: BorrowedFd, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let was = check_off(unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_CUR) })?;
    let holes = holes_from(fd, size);
    check_off(unsafe { libc::lseek(fd.as_raw_fd(), was as libc::off_t, libc::SEEK_SET) })?;
    holes
}

fn holes_from(fd: BorrowedFd, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut holes = Vec::new();
    let mut at = 0u64;
    while at < size {
        let data = unsafe { libc::lseek(fd.as_raw_fd(), at as libc::off_t, libc::SEEK_DATA) };
        let data = if data < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENXIO) {
                return Err(e);
            }
            size
        } else {
            (data as u64).min(size)
        };
        if data > at {
            holes.push((at, data - at));
        }
        if data >= size {
            break;
        }
        let hole = check_off(unsafe {
            libc::lseek(fd.as_raw_fd(), data as libc::off_t, libc::SEEK_HOLE)
        })?;
        at = hole.max(data + 1);
    }
    Ok(holes)
}

fn check_off(r: libc::off_t) -> io::Result<u64> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as u64)
    }
}

/// Write `content` into a new file as a file with `holes` (left unwritten, the file then
/// cut to its size): a sparse file made again sparse.
pub fn write_with_holes(fd: BorrowedFd, content: &[u8], holes: &[(u64, u64)]) -> io::Result<()> {
    let mut at = 0u64;
    let size = content.len() as u64;
    for &(start, len) in holes.iter().chain(std::iter::once(&(size, 0))) {
        let (start, end) = (start.min(size), start.saturating_add(len).min(size));
        if start > at {
            let mut off = at;
            while off < start {
                let part = &content[off as usize..start as usize];
                let n = check_isize(unsafe {
                    libc::pwrite(
                        fd.as_raw_fd(),
                        part.as_ptr().cast(),
                        part.len(),
                        off as libc::off_t,
                    )
                })?;
                if n == 0 {
                    return Err(io::Error::other("a write wrote nothing"));
                }
                off += n as u64;
            }
        }
        at = at.max(end);
    }
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) })?;
    Ok(())
}

fn check_isize(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Give the file open at `fd` the owner (`uid`, `gid`).
pub fn fchown(fd: BorrowedFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: fchown takes no pointer.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) })?;
    Ok(())
}

/// Set a file's permission bits.
pub fn fchmod(fd: BorrowedFd, mode: u32) -> io::Result<()> {
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) })?;
    Ok(())
}

/// Set a file's modification time (ns since the epoch); its access time is now.
pub fn set_mtime(fd: BorrowedFd, mtime_ns: i128) -> io::Result<()> {
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        libc::timespec {
            tv_sec: (mtime_ns.div_euclid(1_000_000_000)) as libc::time_t,
            tv_nsec: (mtime_ns.rem_euclid(1_000_000_000)) as libc::c_long,
        },
    ];
    check(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) })?;
    Ok(())
}

/// An empty memfd (close-on-exec).
pub fn memfd(name: &CStr) -> io::Result<OwnedFd> {
    let fd = check(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) })?;
    // SAFETY: just made, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Take descriptor `fd`, inherited from the parent (an error if it is not open).
pub fn inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    check(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    set_cloexec(unsafe { BorrowedFd::borrow_raw(fd) }, true)?;
    // SAFETY: open (checked above), and nothing else in this process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Make `cmd`'s program start with `fd` as its descriptor `to` (not close-on-exec).
pub fn pass_fd_as(cmd: &mut std::process::Command, fd: OwnedFd, to: RawFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY: dup2 and fcntl are async-signal-safe; `fd` lives in the closure, so it is
    // open in the child when the closure runs.
    unsafe {
        cmd.pre_exec(move || {
            let from = fd.as_raw_fd();
            if from == to {
                check(libc::fcntl(from, libc::F_SETFD, 0))?;
            } else {
                check(libc::dup2(from, to))?;
            }
            Ok(())
        });
    }
}

pub fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    check_retry(|| unsafe { libc::dup2(from, to) })?;
    Ok(())
}

// ---- unix sockets ---------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
pub struct PeerCred {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

pub fn peer_cred(fd: BorrowedFd) -> io::Result<PeerCred> {
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok(PeerCred {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// Room for one descriptor in a control message, and a msghdr over `iov` and it.
struct FdMessage {
    cbuf: Vec<u8>,
}

impl FdMessage {
    fn new() -> FdMessage {
        let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
        FdMessage {
            cbuf: vec![0u8; space],
        }
    }

    fn header(&mut self, iov: &mut libc::iovec) -> libc::msghdr {
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov;
        msg.msg_iovlen = 1;
        msg.msg_control = self.cbuf.as_mut_ptr().cast();
        msg.msg_controllen = self.cbuf.len();
        msg
    }
}

/// Send bytes with one file descriptor attached (SCM_RIGHTS).
pub fn send_with_fd(sock: BorrowedFd, data: &[u8], fd: BorrowedFd) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut _,
        iov_len: data.len(),
    };
    let mut control = FdMessage::new();
    let msg = control.header(&mut iov);
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd.as_raw_fd());
    }
    check_retry(|| unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) as i32 })?;
    Ok(())
}

/// Receive one message and the file descriptor attached to it, if any.
pub fn recv_with_fd(sock: BorrowedFd, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = FdMessage::new();
    let mut msg = control.header(&mut iov);
    let n = check_retry(|| unsafe {
        libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) as i32
    })?;
    let mut fd = None;
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if !cmsg.is_null()
            && (*cmsg).cmsg_level == libc::SOL_SOCKET
            && (*cmsg).cmsg_type == libc::SCM_RIGHTS
        {
            let raw = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
            fd = Some(OwnedFd::from_raw_fd(raw));
        }
    }
    Ok((n as usize, fd))
}

// ---- poll and signals -----------------------------------------------------------------

pub type PollFd = libc::pollfd;

pub trait PollFdExt {
    fn new(fd: RawFd, events: libc::c_short) -> Self;
    fn has(&self, events: libc::c_short) -> bool;
}

impl PollFdExt for PollFd {
    fn new(fd: RawFd, events: libc::c_short) -> Self {
        libc::pollfd {
            fd,
            events,
            revents: 0,
        }
    }
    fn has(&self, events: libc::c_short) -> bool {
        self.revents & events != 0
    }
}

/// poll(2); EINTR is reported as zero ready descriptors.
pub fn poll(fds: &mut [PollFd], timeout_ms: i32) -> io::Result<usize> {
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(r as usize)
}

/// Block `signals` for this thread and return a signalfd that reports them.
pub fn signalfd(signals: &[libc::c_int]) -> io::Result<OwnedFd> {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in signals {
            libc::sigaddset(&mut set, *s);
        }
        check(libc::pthread_sigmask(
            libc::SIG_BLOCK,
            &set,
            std::ptr::null_mut(),
        ))?;
        let fd = check(libc::signalfd(
            -1,
            &set,
            libc::SFD_CLOEXEC | libc::SFD_NONBLOCK,
        ))?;
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// No SIGCHLD when a child (or a traced thread) stops or continues, only when one ends:
/// the daemon traces a whole session during a checkpoint, and each injected call's stops
/// would otherwise wake its event loop.
pub fn sigchld_on_exit_only() -> io::Result<()> {
    // SAFETY: a plain sigaction with the default handler.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = libc::SIG_DFL;
        act.sa_flags = libc::SA_NOCLDSTOP;
        check(libc::sigaction(libc::SIGCHLD, &act, std::ptr::null_mut()))?;
    }
    Ok(())
}

/// Read all pending signals from a signalfd.
pub fn read_signals(fd: BorrowedFd) -> Vec<libc::c_int> {
    let mut out = Vec::new();
    loop {
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                std::mem::size_of::<libc::signalfd_siginfo>(),
            )
        };
        if n <= 0 {
            return out;
        }
        out.push(info.ssi_signo as libc::c_int);
    }
}

/// Unblock every signal and restore default dispositions (for a child about to exec).
pub fn reset_signals() {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for s in 1..libc::SIGRTMIN() {
            if s != libc::SIGKILL && s != libc::SIGSTOP {
                libc::signal(s, libc::SIG_DFL);
            }
        }
    }
}

/// Whether `path` is on a proc file system (statfs).
pub fn is_procfs(path: &str) -> bool {
    const PROC_SUPER_MAGIC: i64 = 0x9fa0;
    let Ok(c) = CString::new(path) else {
        return false;
    };
    // SAFETY: a NUL-terminated path and a statfs buffer the kernel fills.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == PROC_SUPER_MAGIC }
}

pub fn kill(pid: i32, sig: libc::c_int) -> io::Result<()> {
    check(unsafe { libc::kill(pid, sig) })?;
    Ok(())
}

// ---- processes and namespaces ---------------------------------------------------------

pub enum Forked {
    Parent(i32),
    Child,
}

/// clone(2) with fork semantics (no new stack) and the given namespace flags.
///
/// # Safety
/// The caller must be single-threaded; the child may only use what survives a fork.
pub unsafe fn fork_into(flags: libc::c_int) -> io::Result<Forked> {
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(if r == 0 {
        Forked::Child
    } else {
        Forked::Parent(r as i32)
    })
}

/// # Safety
/// As for `fork_into`.
pub unsafe fn fork() -> io::Result<Forked> {
    unsafe { fork_into(0) }
}

/// Let SIGPIPE end this process, as it ends other command-line tools whose reader went
/// away (`crterm ls | head -1`): quietly, instead of an error about a broken pipe. (Rust
/// starts programs with SIGPIPE ignored, which suits the daemon and the dumper: they
/// handle EPIPE themselves.)
pub fn die_quietly_on_broken_pipe() {
    // SAFETY: resetting a signal's disposition to its default touches no memory.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

pub fn setsid() -> io::Result<()> {
    check(unsafe { libc::setsid() })?;
    Ok(())
}

pub fn exit_now(code: i32) -> ! {
    unsafe { libc::_exit(code) }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    Exited(i32),
    Signaled(i32),
}

impl WaitStatus {
    /// The shell's convention: the exit code, or 128 + the signal number.
    pub fn code(self) -> i32 {
        match self {
            WaitStatus::Exited(c) => c,
            WaitStatus::Signaled(s) => 128 + s,
        }
    }
}

/// waitpid with WNOHANG when `block` is false. Ok(None): nothing to reap now.
pub fn wait(pid: i32, block: bool) -> io::Result<Option<(i32, WaitStatus)>> {
    let mut status = 0;
    let flags = if block { 0 } else { libc::WNOHANG };
    let r = check_retry(|| unsafe { libc::waitpid(pid, &mut status, flags) })?;
    if r == 0 {
        return Ok(None);
    }
    let ws = if libc::WIFEXITED(status) {
        WaitStatus::Exited(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        WaitStatus::Signaled(libc::WTERMSIG(status))
    } else {
        return Ok(None);
    };
    Ok(Some((r, ws)))
}

pub fn prctl_set_pdeathsig(sig: libc::c_int) -> io::Result<()> {
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) })?;
    Ok(())
}

pub fn prctl_set_name(name: &CStr) {
    unsafe {
        libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0);
    }
}

pub fn getpid() -> i32 {
    unsafe { libc::getpid() }
}

pub fn geteuid() -> u32 {
    unsafe { libc::geteuid() }
}

/// This thread's supplementary groups.
pub fn getgroups() -> Vec<u32> {
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n <= 0 {
        return Vec::new();
    }
    let mut v = vec![0 as libc::gid_t; n as usize];
    let got = unsafe { libc::getgroups(n, v.as_mut_ptr()) };
    v.truncate(got.max(0) as usize);
    v
}

/// Act on the file system as `uid`, `gid` with `groups` (the file system ids and the
/// supplementary groups), on this thread only (raw system calls: glibc would change every
/// thread). `groups` None: leave them.
pub fn act_as_on_this_thread(uid: u32, gid: u32, groups: Option<&[u32]>) -> io::Result<()> {
    if let Some(g) = groups {
        let r = unsafe { libc::syscall(libc::SYS_setgroups, g.len(), g.as_ptr()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // setfsuid and setfsgid return the previous id whatever happens: ask again.
    unsafe {
        libc::syscall(libc::SYS_setfsgid, gid);
        libc::syscall(libc::SYS_setfsuid, uid);
    }
    let now_gid = unsafe { libc::syscall(libc::SYS_setfsgid, u32::MAX) } as u32;
    let now_uid = unsafe { libc::syscall(libc::SYS_setfsuid, u32::MAX) } as u32;
    if (now_uid, now_gid) != (uid, gid) {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    // A change of file system ids makes the process undumpable, and so would be the
    // processes it makes next (they could not be traced by a tracer whose privilege is a
    // user namespace's): dumpable again. Its real ids are unchanged, so no more can trace
    // it than before.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
    Ok(())
}

/// The groups user `uid` belongs to (its primary group `gid` among them), from the
/// system's user and group databases; None when the user is unknown.
pub fn user_groups(uid: u32, gid: u32) -> Option<Vec<u32>> {
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 1 << 14];
    let mut found = std::ptr::null_mut();
    let r = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) };
    if r != 0 || found.is_null() {
        return None;
    }
    let mut n: libc::c_int = 64;
    loop {
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let mut count = n;
        let r = unsafe { libc::getgrouplist(pw.pw_name, gid, groups.as_mut_ptr(), &mut count) };
        if r >= 0 {
            groups.truncate(count.max(0) as usize);
            return Some(groups);
        }
        if count <= n || count > 1 << 16 {
            return None;
        }
        n = count;
    }
}

pub fn getegid() -> u32 {
    unsafe { libc::getegid() }
}

pub fn mount(
    source: &CStr,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.map_or(std::ptr::null(), |f| f.as_ptr()),
            flags,
            data.map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    })?;
    Ok(())
}

/// execvp: returns only on failure.
pub fn execvp(argv: &[CString]) -> io::Error {
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    unsafe { libc::execvp(ptrs[0], ptrs.as_ptr()) };
    io::Error::last_os_error()
}

/// Close every descriptor from `from` up (close_range, Linux 5.9+).
pub fn close_fds_from(from: RawFd) {
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            from as libc::c_uint,
            libc::c_uint::MAX,
            0u32,
        );
    }
}

// ---- ptrace ---------------------------------------------------------------------------

/// PTRACE_SEIZE: trace a thread without stopping it.
pub fn ptrace_seize(tid: i32) -> io::Result<()> {
    check(unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid, 0usize, 0usize) as libc::c_int })?;
    Ok(())
}

/// PTRACE_INTERRUPT: stop a seized thread (it reports PTRACE_EVENT_STOP).
pub fn ptrace_interrupt(tid: i32) -> io::Result<()> {
    check(unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0usize, 0usize) as libc::c_int })?;
    Ok(())
}

/// PTRACE_DETACH, delivering `sig` (0: none) as the thread goes on.
pub fn ptrace_detach(tid: i32, sig: i32) -> io::Result<()> {
    check(unsafe { libc::ptrace(libc::PTRACE_DETACH, tid, 0usize, sig as usize) as libc::c_int })?;
    Ok(())
}

/// How a traced thread stopped, as waitpid reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceStop {
    /// PTRACE_EVENT_STOP: our interrupt (SIGTRAP), or a group stop (job control) while
    /// seized, with the signal that stopped the group (SIGSTOP, SIGTSTP, SIGTTIN,
    /// SIGTTOU).
    Event(i32),
    /// About to receive this signal; it must be passed on when detaching.
    Signal(i32),
    /// The thread is gone.
    Exited,
}

/// Wait for a traced thread to stop (`__WALL`: threads too).
/// `wait_traced`, giving up after `within`: None if the thread has not stopped by then.
pub fn wait_traced_within(tid: i32, within: std::time::Duration) -> io::Result<Option<TraceStop>> {
    let deadline = std::time::Instant::now() + within;
    let mut nap = std::time::Duration::from_micros(50);
    loop {
        let mut status = 0;
        let got = check_retry(|| unsafe {
            libc::waitpid(tid, &mut status, libc::__WALL | libc::WNOHANG)
        })?;
        if got == tid {
            return Ok(Some(trace_stop(status)));
        }
        if std::time::Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(std::time::Duration::from_millis(10));
    }
}

fn trace_stop(status: i32) -> TraceStop {
    if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
        TraceStop::Exited
    } else if libc::WIFSTOPPED(status) && (status >> 16) == libc::PTRACE_EVENT_STOP {
        TraceStop::Event(libc::WSTOPSIG(status))
    } else if libc::WIFSTOPPED(status) {
        TraceStop::Signal(libc::WSTOPSIG(status))
    } else {
        TraceStop::Event(0)
    }
}

pub fn wait_traced(tid: i32) -> io::Result<TraceStop> {
    let mut status = 0;
    check_retry(|| unsafe { libc::waitpid(tid, &mut status, libc::__WALL) })?;
    Ok(trace_stop(status))
}

/// The general registers of a stopped traced thread (x86_64 `user_regs_struct`, 27 words).
pub fn ptrace_getregs(tid: i32) -> io::Result<[u64; 27]> {
    let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGS,
            tid,
            0usize,
            &mut regs as *mut _ as usize,
        ) as libc::c_int
    })?;
    const _: () = assert!(std::mem::size_of::<libc::user_regs_struct>() == 27 * 8);
    // SAFETY: user_regs_struct is 27 u64 words on x86_64 (checked above).
    Ok(unsafe { std::mem::transmute::<libc::user_regs_struct, [u64; 27]>(regs) })
}

/// Copy `len` bytes at `addr` in process `pid` into `buf` (process_vm_readv); returns how
/// many bytes were read (fewer at an unreadable page).
pub fn read_process_memory(pid: i32, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Read the pieces `remote` ((address, length), at most 1024) of process `pid`'s memory one
/// after another into `buf`, in one call; how many bytes came (fewer: a piece could not be
/// read, and the rest were not).
pub fn read_process_memory_scattered(
    pid: i32,
    remote: &[(u64, usize)],
    buf: &mut [u8],
) -> io::Result<usize> {
    let total: usize = remote.iter().map(|r| r.1).sum();
    if total > buf.len() || remote.len() > 1024 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: total,
    };
    let iov: Vec<libc::iovec> = remote
        .iter()
        .map(|&(addr, len)| libc::iovec {
            iov_base: addr as usize as *mut libc::c_void,
            iov_len: len,
        })
        .collect();
    // SAFETY: `local` is `total` bytes of `buf`; the remote pieces are only read.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, iov.as_ptr(), iov.len() as _, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// pread(2).
/// Start writing `len` bytes of `fd` at `offset` back to the disk, without waiting for it
/// (so that a later fsync finds most of the file already written).
pub fn start_writeback(fd: BorrowedFd, offset: u64, len: u64) -> io::Result<()> {
    let r = unsafe {
        libc::sync_file_range(
            fd.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A clock's time now, in nanoseconds.
pub fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// The offsets (ns) of process `pid`'s time namespace to the host's CLOCK_MONOTONIC and
/// CLOCK_BOOTTIME (zero outside a time namespace).
pub fn time_offsets(pid: i32) -> (i64, i64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/timens_offsets")).unwrap_or_default();
    let mut out = (0, 0);
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(clock), Some(s), Some(ns)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let (Ok(s), Ok(ns)) = (s.parse::<i64>(), ns.parse::<i64>()) else {
            continue;
        };
        let v = s * 1_000_000_000 + ns;
        match clock {
            "monotonic" | "1" => out.0 = v,
            "boottime" | "7" => out.1 = v,
            _ => {}
        }
    }
    out
}

/// Put this process, and so every process it makes from now on, into a new time
/// namespace whose CLOCK_MONOTONIC and CLOCK_BOOTTIME are the host's plus these offsets
/// (ns). The caller must be single-threaded.
///
/// unshare alone moves only the children; the caller joins too, because older kernels
/// (Debian 12's 6.1 among them) refuse to make a thread in a process whose children go
/// into another time namespace than its own (EINVAL from clone).
pub fn new_time_namespace(monotonic: i64, boottime: i64) -> io::Result<()> {
    check(unsafe { libc::unshare(libc::CLONE_NEWTIME) })?;
    let line = |clock: &str, v: i64| {
        let (s, ns) = (v.div_euclid(1_000_000_000), v.rem_euclid(1_000_000_000));
        format!("{clock} {s} {ns}\n")
    };
    std::fs::write(
        "/proc/self/timens_offsets",
        line("monotonic", monotonic) + &line("boottime", boottime),
    )?;
    let ns = std::fs::File::open("/proc/self/ns/time_for_children")?;
    check(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWTIME) })?;
    Ok(())
}

/// A new regular file with no name in directory `dir` (O_TMPFILE), open read-write.
pub fn open_unnamed(dir: &std::path::Path, mode: libc::mode_t) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let dir = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))?;
    let fd = check(unsafe {
        libc::open(
            dir.as_ptr(),
            libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
            mode,
        )
    })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn mkfifo(path: &CStr, mode: libc::mode_t) -> io::Result<()> {
    check(unsafe { libc::mkfifo(path.as_ptr(), mode) })?;
    Ok(())
}

pub fn inotify_init(flags: libc::c_int) -> io::Result<OwnedFd> {
    let fd = check(unsafe { libc::inotify_init1(flags | libc::IN_CLOEXEC) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Watch `path` (as `mask` says); the watch descriptor.
pub fn inotify_add(fd: BorrowedFd, path: &str, mask: u32) -> io::Result<i32> {
    let path = cstring(path)?;
    check(unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) })
}

pub fn inotify_rm(fd: BorrowedFd, wd: i32) -> io::Result<()> {
    check(unsafe { libc::inotify_rm_watch(fd.as_raw_fd(), wd) })?;
    Ok(())
}

pub fn pread(fd: BorrowedFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let n = unsafe {
        libc::pread(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            offset as libc::off_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

const NT_X86_XSTATE: usize = 0x202;
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;

/// The extended register state (x87, SSE, AVX, AVX-512 ...) of a stopped traced thread, in
/// the XSAVE layout of this CPU.
pub fn ptrace_get_xstate(tid: i32) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 16 << 10];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGSET,
            tid,
            NT_X86_XSTATE,
            &mut iov as *mut libc::iovec as usize,
        ) as libc::c_int
    })?;
    buf.truncate(iov.iov_len);
    Ok(buf)
}

/// A thread's rseq registration: (area address, length, signature, flags); None when it
/// has none.
pub fn ptrace_get_rseq(tid: i32) -> io::Result<Option<(u64, u32, u32, u32)>> {
    #[repr(C)]
    #[derive(Default)]
    struct RseqConfiguration {
        rseq_abi_pointer: u64,
        rseq_abi_size: u32,
        signature: u32,
        flags: u32,
        pad: u32,
    }
    let mut conf = RseqConfiguration::default();
    check(unsafe {
        libc::ptrace(
            PTRACE_GET_RSEQ_CONFIGURATION,
            tid,
            std::mem::size_of::<RseqConfiguration>(),
            &mut conf as *mut RseqConfiguration as usize,
        ) as libc::c_int
    })?;
    Ok((conf.rseq_abi_pointer != 0).then_some((
        conf.rseq_abi_pointer,
        conf.rseq_abi_size,
        conf.signature,
        conf.flags,
    )))
}

/// The bytes queued in a pipe that process `pid` holds as `fd`, without consuming them:
/// the pipe is opened again for reading through /proc (a reader of the same queue, whichever
/// end the process holds), and tee(2) duplicates the queue into a pipe of our own.
/// Returns the bytes and the pipe's capacity.
pub fn peek_pipe(pid: i32, fd: i32) -> io::Result<(Vec<u8>, u32)> {
    let path = cstring(&format!("/proc/{pid}/fd/{fd}"))?;
    let theirs = open(&path, libc::O_RDONLY | libc::O_NONBLOCK)?;
    let (r, w) = pipe()?;
    let mut queued: libc::c_int = 0;
    check(unsafe { libc::ioctl(theirs.as_raw_fd(), libc::FIONREAD, &mut queued) })?;
    // Room for a full pipe.
    let size = check(unsafe { libc::fcntl(theirs.as_raw_fd(), libc::F_GETPIPE_SZ) })?;
    let capacity = size.max(0) as u32;
    if queued == 0 {
        return Ok((Vec::new(), capacity));
    }
    check(unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, size) }).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("a pipe of {size} bytes to copy its {queued} queued bytes into: {e}"),
        )
    })?;
    let n = unsafe {
        libc::tee(
            theirs.as_raw_fd(),
            w.as_raw_fd(),
            usize::MAX >> 1,
            libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        // An empty pipe: nothing queued.
        if e.kind() == io::ErrorKind::WouldBlock {
            return Ok((Vec::new(), capacity));
        }
        return Err(e);
    }
    drop(w);
    if n as usize != queued as usize {
        return Err(io::Error::other(format!(
            "{queued} bytes queued, {n} copied"
        )));
    }
    let mut out = Vec::with_capacity(n as usize);
    let mut buf = [0u8; 65536];
    loop {
        match read(unsafe { BorrowedFd::borrow_raw(r.as_raw_fd()) }, &mut buf)? {
            0 => break,
            k => out.extend_from_slice(&buf[..k]),
        }
    }
    Ok((out, capacity))
}

/// Open the terminal process `pid` holds as `fd` through a descriptor of our own
/// (non-blocking, and without becoming its controlling terminal).
pub fn open_tty_of(pid: i32, fd: i32) -> io::Result<OwnedFd> {
    let path = cstring(&format!("/proc/{pid}/fd/{fd}"))?;
    open(&path, libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK)
}

/// Set a terminal's settings at once (TCSANOW: nothing waits for output to drain).
pub fn set_termios_now(fd: BorrowedFd, t: &Termios) -> io::Result<()> {
    check_retry(|| unsafe { libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, t) })?;
    Ok(())
}

/// The settings and window size of a terminal that process `pid` holds as `fd`, read
/// through a descriptor of our own (opened without becoming its controlling terminal).
pub fn peek_tty(pid: i32, fd: i32) -> io::Result<(Vec<u8>, WinSize)> {
    let path = cstring(&format!("/proc/{pid}/fd/{fd}"))?;
    let tty = open(&path, libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK)?;
    tty_settings(tty.as_fd())
}

/// A terminal's termios (as bytes, what TCSETS takes back) and window size; through a pty
/// master, those of its slave.
pub fn tty_settings(tty: BorrowedFd) -> io::Result<(Vec<u8>, WinSize)> {
    let t = get_termios(tty)?;
    let size = get_winsize(tty)?;
    // SAFETY: termios is plain data.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&t as *const Termios).cast::<u8>(),
            std::mem::size_of::<Termios>(),
        )
    }
    .to_vec();
    Ok((bytes, size))
}

/// A thread's scheduling attributes (`struct sched_attr`, as sched_getattr gives them).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct SchedAttr {
    pub size: u32,
    pub policy: u32,
    pub flags: u64,
    pub nice: i32,
    pub priority: u32,
    pub runtime: u64,
    pub deadline: u64,
    pub period: u64,
    pub util_min: u32,
    pub util_max: u32,
}

/// The scheduling attributes of thread `tid` (0: this one); any thread's may be read.
pub fn sched_getattr(tid: i32) -> io::Result<SchedAttr> {
    const SCHED_GETATTR: libc::c_long = 315;
    let mut attr = SchedAttr::default();
    let size = std::mem::size_of::<SchedAttr>() as libc::c_uint;
    // SAFETY: the kernel writes at most `size` bytes into `attr`.
    check(unsafe {
        libc::syscall(SCHED_GETATTR, tid, &mut attr as *mut SchedAttr, size, 0) as libc::c_int
    })?;
    Ok(attr)
}

/// The CPUs thread `tid` (0: this one) may run on, as a bitmask by CPU number.
pub fn sched_getaffinity(tid: i32) -> io::Result<Vec<u64>> {
    let mut mask = vec![0u64; 128];
    // SAFETY: the kernel writes at most the buffer's length.
    let n = unsafe {
        libc::syscall(
            libc::SYS_sched_getaffinity,
            tid,
            mask.len() * 8,
            mask.as_mut_ptr(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    mask.truncate((n as usize).div_ceil(8));
    while mask.last() == Some(&0) {
        mask.pop();
    }
    Ok(mask)
}

/// The I/O priority of thread `tid` (0: this one): class << 13 | level; 0: none set.
pub fn ioprio_get(tid: i32) -> io::Result<u32> {
    const IOPRIO_WHO_PROCESS: libc::c_int = 1;
    // SAFETY: no memory is passed.
    let r = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, tid) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as u32)
}

/// Give the calling thread its own copy of what `flags` names (unshare(2)).
pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare takes no pointer.
    check(unsafe { libc::unshare(flags) })?;
    Ok(())
}

/// Open the file the kernel's file handle (`kind`, `bytes`) names on the file system
/// `mount` is on, O_PATH (open_by_handle_at: needs CAP_DAC_READ_SEARCH).
pub fn open_by_handle(mount: BorrowedFd, kind: i32, bytes: &[u8]) -> io::Result<OwnedFd> {
    // struct file_handle: handle_bytes (u32), handle_type (i32), f_handle.
    let mut h = Vec::with_capacity(8 + bytes.len());
    h.extend_from_slice(&(bytes.len() as u32).to_ne_bytes());
    h.extend_from_slice(&kind.to_ne_bytes());
    h.extend_from_slice(bytes);
    // SAFETY: `h` is a file_handle of `bytes.len()` bytes.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount.as_raw_fd(),
            h.as_ptr(),
            libc::O_PATH | libc::O_CLOEXEC,
        ) as libc::c_int
    })?;
    // SAFETY: a new descriptor of ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A signal's name, as SIGTERM (a number for those without one here).
pub fn signal_name(sig: libc::c_int) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

/// Thread `tid` (stopped, driven by this thread through ptrace) kept on this thread's
/// CPU, and this thread there too, while it is driven: every step of an injected call is
/// then a switch on one CPU, not a wake-up of another (put back as they were when
/// dropped).
pub struct NearThread(Option<(i32, libc::cpu_set_t, libc::cpu_set_t)>);

impl NearThread {
    pub fn new(tid: i32) -> NearThread {
        unsafe {
            let cpu = libc::sched_getcpu();
            if cpu < 0 {
                return NearThread(None);
            }
            let size = std::mem::size_of::<libc::cpu_set_t>();
            let mut mine: libc::cpu_set_t = std::mem::zeroed();
            let mut theirs: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, size, &mut mine) != 0
                || libc::sched_getaffinity(tid, size, &mut theirs) != 0
                || !libc::CPU_ISSET(cpu as usize, &theirs)
            {
                return NearThread(None);
            }
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu as usize, &mut set);
            if libc::sched_setaffinity(0, size, &set) != 0 {
                return NearThread(None);
            }
            if libc::sched_setaffinity(tid, size, &set) != 0 {
                libc::sched_setaffinity(0, size, &mine);
                return NearThread(None);
            }
            NearThread(Some((tid, mine, theirs)))
        }
    }
}

impl Drop for NearThread {
    fn drop(&mut self) {
        if let Some((tid, mine, theirs)) = self.0.take() {
            let size = std::mem::size_of::<libc::cpu_set_t>();
            unsafe {
                libc::sched_setaffinity(tid, size, &theirs);
                libc::sched_setaffinity(0, size, &mine);
            }
        }
    }
}
