//! Reading a frozen session into an image: the process tree with the ids the session sees,
//! each thread's registers and signal mask, mappings, file descriptors and the present
//! pages of memory, plus the terminal model.
//!
//! What is saved is not yet everything a restore needs (signal handlers, timers, pipes'
//! queued bytes, the pty's state and more follow with the restore work), and memory
//! comes from the running kernel as it is: pages not present (never touched, or swapped
//! out) are skipped; `[vvar]`, `[vdso]` and `[vsyscall]` are never copied (the kernel
//! provides them again).

use super::freeze::Frozen;
use crate::image::{CHUNK_SIZE, Feed, ImageWriter, SectionKind};
use crate::sys;
use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub name: String,
    pub command: String,
    pub processes: Vec<ProcessRecord>,
    /// Where each run of saved memory belongs, in the order of the page chunks.
    pub page_runs: Vec<PageRun>,
    /// Mapped files' contents, deduplicated, in the order of the FILES chunks.
    pub files: Vec<CarriedFile>,
    /// Mapped files that could not be carried, and why.
    pub files_not_carried: Vec<(String, String)>,
    /// CLOCK_MONOTONIC and CLOCK_BOOTTIME as the session saw them at the checkpoint (ns):
    /// a resume goes on from there.
    pub monotonic_ns: i64,
    pub boottime_ns: i64,
    /// What the machine it was made on needs of the one it resumes on.
    pub machine: crate::machine::MachineRecord,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// Ids as the session sees them (its own pid namespace).
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub comm: String,
    pub cmdline: Vec<String>,
    pub exe: String,
    pub cwd: String,
    /// Stopped by job control (Ctrl-Z).
    pub stopped: bool,
    /// Exited and not yet reaped by its parent: the exit status it waits to hand over
    /// (as waitpid reports it). A zombie has no threads, memory or files.
    pub zombie: Option<i32>,
    /// Signals pending for the whole process, ignored, and caught.
    pub shared_pending_signals: u64,
    pub ignored_signals: u64,
    pub caught_signals: u64,
    /// The kernel's sigaction per signal 1..=64: (handler, flags, restorer, mask).
    pub sigactions: Vec<[u64; 4]>,
    /// ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF: (interval s, µs, value s, µs).
    pub itimers: Vec<[u64; 4]>,
    /// POSIX timers, their target threads as the session sees them.
    pub timers: Vec<super::inside::PosixTimer>,
    pub mm: MmRecord,
    pub root: String,
    pub umask: u32,
    pub personality: u64,
    /// Whether the process may be dumped and traced by its user (PR_SET_DUMPABLE).
    pub dumpable: bool,
    /// (soft, hard) per resource, RLIMIT_CPU .. RLIMIT_RTTIME.
    pub rlimits: Vec<(u64, u64)>,
    /// Capability sets: inheritable, permitted, effective, bounding, ambient.
    pub caps: [u64; 5],
    /// Real, effective, saved and filesystem user and group ids.
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    /// The controlling terminal (its device number; 0: none) and, when there is one, its
    /// foreground process group as the session sees it.
    pub ctty: u32,
    pub fg_pgid: i32,
    pub threads: Vec<ThreadRecord>,
    pub maps: Vec<MapRecord>,
    pub fds: Vec<FdRecord>,
}

/// The memory layout the kernel keeps per process (what PR_SET_MM_MAP sets again).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmRecord {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    /// The auxiliary vector as the process got it (pairs of words).
    pub auxv: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadRecord {
    pub tid: i32,
    /// The thread's name (`/proc/PID/task/TID/comm`).
    pub comm: String,
    /// x86_64 `user_regs_struct`.
    pub regs: Vec<u64>,
    /// The XSAVE area (x87, SSE, AVX, AVX-512 ...) in this CPU's layout.
    pub xstate: Vec<u8>,
    /// rseq registration: (area, length, signature, flags).
    pub rseq: Option<(u64, u32, u32, u32)>,
    pub blocked_signals: u64,
    /// Signals pending for this thread alone.
    pub pending_signals: u64,
    /// The address the kernel clears (and wakes) when the thread ends.
    pub clear_child_tid: u64,
    /// The alternate signal stack: (sp, flags, size).
    pub altstack: [u64; 3],
    /// The robust futex list glibc keeps per thread: (head, length).
    pub robust_list: (u64, u64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapRecord {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub offset: u64,
    pub path: String,
    /// The mapped file's device (major, minor) and inode; 0 for anonymous memory.
    pub dev: (u32, u32),
    pub inode: u64,
}

/// The content of a file the session maps, carried in the image once however many
/// processes and mappings use it (its bytes are in the FILES chunks, in record order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarriedFile {
    pub sha256: String,
    pub size: u64,
    /// Every (path, device, inode, mtime) of the session that has this content.
    pub copies: Vec<FileCopy>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCopy {
    pub path: String,
    pub dev: (u32, u32),
    pub inode: u64,
    pub mtime_ns: i128,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdRecord {
    pub fd: i32,
    /// Which open file description this is, numbered across the session: descriptors with
    /// the same number share one (after fork or dup), and with it the offset and flags.
    pub desc: u32,
    pub target: String,
    pub flags: u32,
    pub pos: u64,
    pub kind: FdKind,
    /// For regular files and directories: what identifies the file, so that a resume can
    /// tell whether it changed.
    pub identity: Option<FileIdentity>,
    /// The kernel's own description (/proc/PID/fdinfo/FD): an eventfd's count, a timerfd's
    /// clock and settings, a signalfd's mask, an epoll set's registrations, inotify
    /// watches. Kept whole; restore reads what it needs.
    pub fdinfo: String,
    /// Bytes queued in a pipe, read without consuming them, and the pipe's capacity.
    pub queued: Vec<u8>,
    pub pipe_size: u32,
    /// For a terminal: its settings (the kernel's termios, as bytes) and window size.
    pub tty: Option<TtyRecord>,
    pub socket: Option<SocketRecord>,
    /// For an inotify instance: its watches.
    pub watches: Vec<InotifyWatch>,
}

/// One inotify watch: its descriptor number, its mask and the path of what it watches
/// (found by inode among the files the session has open, its directories and mapped files:
/// the kernel keeps no path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InotifyWatch {
    pub wd: i32,
    pub mask: u32,
    pub ino: u64,
    pub dev: (u32, u32),
    pub path: String,
}

/// The watches an inotify descriptor's fdinfo lists (`inotify wd:1 ino:263 sdev:fe00000
/// mask:2 ...`, numbers in hex; sdev is the kernel's dev_t, major << 20 | minor).
fn parse_watches(fdinfo: &str) -> Vec<InotifyWatch> {
    fdinfo
        .lines()
        .filter_map(|l| l.strip_prefix("inotify "))
        .filter_map(|l| {
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .and_then(|v| u64::from_str_radix(v, 16).ok())
            };
            let sdev = field("sdev:")?;
            Some(InotifyWatch {
                wd: field("wd:")? as i32,
                mask: field("mask:")? as u32,
                ino: field("ino:")?,
                dev: ((sdev >> 20) as u32, (sdev & 0xfffff) as u32),
                path: String::new(),
            })
        })
        .collect()
}

/// A socket (what is carried: a unix socket listening on a name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketRecord {
    pub domain: i32,
    pub kind: i32,
    pub listening: bool,
    /// Connections that arrived and were not accepted yet.
    pub pending: bool,
    pub passcred: bool,
    /// The unix address: a path, or an abstract name (leading 0 byte); empty if unbound.
    pub name: Vec<u8>,
    /// The mode of the socket file of a path name (screen marks attached sessions by it).
    pub mode: u32,
    pub inode: u64,
    /// The socket at the other end (0: not connected), and whether it is held in the
    /// session (a pair made again on resume) or outside (the connection comes back closed).
    pub peer: u64,
    pub peer_inside: bool,
    /// RCV_SHUTDOWN (1), SEND_SHUTDOWN (2).
    pub shutdown: u8,
    /// A connection not accepted yet: the listening socket of the session it waits in
    /// (resume connects to it again), else 0.
    pub pending_on: u64,
    /// The bytes waiting to be read: one piece per datagram, or one for a stream.
    pub queued: Vec<Vec<u8>>,
    /// A TCP socket's own address and its peer's (sockaddr bytes; empty: none).
    pub addr: Vec<u8>,
    pub peer_addr: Vec<u8>,
    /// Options set again on resume: (level, option, value).
    pub options: Vec<(i32, i32, i32)>,
}

/// The socket options a TCP socket gets back.
const TCP_OPTIONS: &[(i32, i32)] = &[
    (libc::SOL_SOCKET, libc::SO_REUSEADDR),
    (libc::SOL_SOCKET, libc::SO_REUSEPORT),
    (libc::SOL_SOCKET, libc::SO_KEEPALIVE),
    (libc::IPPROTO_TCP, libc::TCP_NODELAY),
    (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY),
];

impl SocketRecord {
    fn read(pid: i32, fd: i32, target: &str) -> io::Result<SocketRecord> {
        use std::os::unix::fs::PermissionsExt;
        let sock = sys::trace::copy_fd_of(pid, fd)?;
        let info = sys::sock::socket_info(sock.as_fd())?;
        let path = (info.name.first().is_some_and(|&b| b != 0))
            .then(|| String::from_utf8_lossy(&info.name).into_owned());
        let inet = matches!(info.domain, libc::AF_INET | libc::AF_INET6);
        let (addr, peer_addr, options) = if inet {
            let fd = sock.as_fd();
            let options = TCP_OPTIONS
                .iter()
                .filter(|(level, _)| *level != libc::IPPROTO_IPV6 || info.domain == libc::AF_INET6)
                .filter_map(|&(level, opt)| {
                    sys::sock::get_opt(fd, level, opt)
                        .ok()
                        .map(|v| (level, opt, v))
                })
                .collect();
            (
                sys::sock::local_addr(fd).unwrap_or_default(),
                sys::sock::peer_addr(fd).unwrap_or_default(),
                options,
            )
        } else {
            Default::default()
        };
        Ok(SocketRecord {
            addr,
            peer_addr,
            options,
            domain: info.domain,
            kind: info.kind,
            listening: info.listening,
            pending: info.listening && sys::readable(sock.as_fd()),
            passcred: info.passcred,
            mode: path
                .and_then(|p| std::fs::symlink_metadata(p).ok())
                .map_or(0, |m| m.permissions().mode() & 0o7777),
            name: info.name,
            inode: target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse().ok())
                .unwrap_or(0),
            peer: 0,
            peer_inside: false,
            shutdown: 0,
            pending_on: 0,
            queued: Vec::new(),
        })
    }

    pub fn stream(&self) -> bool {
        self.kind == libc::SOCK_STREAM
    }

    pub fn inet(&self) -> bool {
        matches!(self.domain, libc::AF_INET | libc::AF_INET6)
    }

    /// The name for messages: the path, `@name` for an abstract one.
    pub fn display_name(&self) -> String {
        if self.inet() {
            return format!("TCP {}", sys::sock::inet_text(&self.addr));
        }
        match self.name.first() {
            None => "(unbound)".into(),
            Some(0) => format!("@{}", String::from_utf8_lossy(&self.name[1..])),
            Some(_) => String::from_utf8_lossy(&self.name).into_owned(),
        }
    }
}

impl FdRecord {
    /// For a pty master: the number of its pty.
    pub fn pty_index(&self) -> Option<u32> {
        if self.kind != FdKind::PtyMaster {
            return None;
        }
        self.fdinfo
            .lines()
            .find_map(|l| l.strip_prefix("tty-index:"))
            .and_then(|v| v.trim().parse().ok())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtyRecord {
    pub termios: Vec<u8>,
    pub cols: u16,
    pub rows: u16,
    /// Bytes typed but not yet read by the program (a terminal in raw mode only: in
    /// canonical mode a partial line cannot be read out). Put back on resume.
    pub typed: Vec<u8>,
    /// Through a pty master (screen's, tmux's): the programs' output not yet read by the
    /// master's holder, and whether the master is in packet mode.
    pub output: Vec<u8>,
    pub packet: bool,
    /// Whether the pty is locked (its slave cannot be opened yet).
    pub locked: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FdKind {
    File,
    Directory,
    CharDevice,
    Pipe,
    Socket,
    /// eventfd, timerfd, signalfd, epoll, inotify ... (the target names which).
    Anon,
    Other,
    /// The master side of a pty of the session (`/dev/ptmx`; which pty: `tty-index` in
    /// the fdinfo).
    PtyMaster,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    /// Permission bits, for a file made again where it is missing.
    pub mode: u32,
    /// SHA-256 of its content (files up to `HASHED_FILE_LIMIT`), read after the thaw: a
    /// file changed with its size and mtime kept is caught too.
    pub sha256: Option<String>,
}

/// Open regular files up to this size are carried unless `--carry-files` says otherwise.
pub const DEFAULT_CARRY_FILES: u64 = 4 << 20;

/// Files deleted while open are carried up to this size.
pub const DELETED_FILE_LIMIT: u64 = 1 << 30;

/// Open files up to this size have their content hashed for the identity check.
pub const HASHED_FILE_LIMIT: u64 = 16 << 20;

/// SHA-256 of the first `len` bytes of the file at `path` (None if it has fewer).
pub fn hash_prefix(path: &str, len: u64) -> Option<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?.take(len);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0u64;
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        got += n as u64;
    }
    (got == len).then(|| {
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    })
}

fn fd_kind_and_identity(link: &str, path: &str) -> (FdKind, Option<FileIdentity>) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if link.starts_with("pipe:") {
        return (FdKind::Pipe, None);
    }
    if link.starts_with("socket:") {
        return (FdKind::Socket, None);
    }
    if link.starts_with("anon_inode:") {
        return (FdKind::Anon, None);
    }
    // Through the magic link: the very file the process holds, even if renamed or deleted.
    let Ok(m) = std::fs::metadata(path) else {
        return (FdKind::Other, None);
    };
    let ft = m.file_type();
    let kind = if ft.is_file() {
        FdKind::File
    } else if ft.is_dir() {
        FdKind::Directory
    } else if ft.is_char_device() {
        FdKind::CharDevice
    } else if ft.is_fifo() {
        FdKind::Pipe
    } else if ft.is_socket() {
        FdKind::Socket
    } else {
        FdKind::Other
    };
    let kind = if kind == FdKind::CharDevice && (link == "/dev/ptmx" || link == "/dev/pts/ptmx") {
        FdKind::PtyMaster
    } else {
        kind
    };
    let identity = matches!(kind, FdKind::File | FdKind::Directory).then(|| FileIdentity {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        mode: m.mode() & 0o7777,
        sha256: None,
    });
    (kind, identity)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRun {
    pub pid: i32,
    pub addr: u64,
    pub len: u64,
}

impl SessionRecord {
    pub fn memory_bytes(&self) -> u64 {
        self.page_runs.iter().map(|r| r.len).sum()
    }

    pub fn threads(&self) -> usize {
        self.processes.iter().map(|p| p.threads.len()).sum()
    }
}

const PAGE: u64 = 4096;
static ZERO_PAGE: [u8; PAGE as usize] = [0; PAGE as usize];

fn read(path: String) -> io::Result<String> {
    std::fs::read_to_string(path)
}

/// The last value of a `/proc/PID/status` line such as `NSpid:\t812\t3` (the innermost
/// namespace's view).
fn status_last(status: &str, key: &str) -> Option<i32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}

fn status_hex(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

fn link(path: String) -> String {
    std::fs::read_link(path)
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// What every record holds, a zombie's too: the ids as the session sees them and the
/// name; everything else empty.
fn base_record(pid: i32, status: &str) -> ProcessRecord {
    // The parent's id as the session sees it.
    let host_ppid = status_last(status, "PPid:").unwrap_or(0);
    ProcessRecord {
        pid: status_last(status, "NSpid:").unwrap_or(pid),
        ppid: read(format!("/proc/{host_ppid}/status"))
            .ok()
            .and_then(|s| status_last(&s, "NSpid:"))
            .unwrap_or(0),
        pgid: status_last(status, "NSpgid:").unwrap_or(0),
        sid: status_last(status, "NSsid:").unwrap_or(0),
        comm: read(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim_end()
            .to_string(),
        cmdline: Vec::new(),
        exe: String::new(),
        cwd: String::new(),
        stopped: false,
        zombie: None,
        shared_pending_signals: 0,
        ignored_signals: 0,
        caught_signals: 0,
        sigactions: Vec::new(),
        itimers: Vec::new(),
        timers: Vec::new(),
        mm: MmRecord::default(),
        root: String::new(),
        umask: 0o022,
        personality: 0,
        dumpable: true,
        rlimits: Vec::new(),
        caps: [0; 5],
        uids: [0; 4],
        gids: [0; 4],
        ctty: 0,
        fg_pgid: 0,
        threads: Vec::new(),
        maps: Vec::new(),
        fds: Vec::new(),
    }
}

/// The fields of `/proc/PID/stat` after the command name (field 3 is index 0).
fn stat_fields(pid: i32) -> io::Result<Vec<u64>> {
    let stat = read(format!("/proc/{pid}/stat"))?;
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other(format!("unreadable /proc/{pid}/stat")))?;
    Ok(rest
        .split_whitespace()
        .map(|f| f.parse::<i64>().map_or(0, |v| v as u64))
        .collect())
}

fn status_words<const N: usize>(status: &str, key: &str, hex: bool) -> [u64; N] {
    let mut out = [0u64; N];
    if let Some(v) = status.lines().find_map(|l| l.strip_prefix(key)) {
        for (o, f) in out.iter_mut().zip(v.split_whitespace()) {
            *o = if hex {
                u64::from_str_radix(f, 16).unwrap_or(0)
            } else {
                f.parse().unwrap_or(0)
            };
        }
    }
    out
}

/// The memory layout fields of /proc/PID/stat (fields 26-28, 45-51) and the auxv.
fn mm_record(pid: i32, stat: &[u64]) -> MmRecord {
    let f = |n: usize| stat.get(n - 3).copied().unwrap_or(0);
    let auxv = std::fs::read(format!("/proc/{pid}/auxv"))
        .unwrap_or_default()
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    MmRecord {
        start_code: f(26),
        end_code: f(27),
        start_stack: f(28),
        start_data: f(45),
        end_data: f(46),
        start_brk: f(47),
        brk: 0,
        arg_start: f(48),
        arg_end: f(49),
        env_start: f(50),
        env_end: f(51),
        auxv,
    }
}

/// Where a mapping's content comes from, for saving and for restoring it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapKind {
    /// Private memory of the process: every present page is saved.
    Anon,
    /// A private mapping of a file: pages still the file's are not saved (the file, or its
    /// copy in the image, gives them back); pages the process changed are.
    PrivateFile,
    /// A shared mapping of a file: the file holds the content.
    SharedFile,
    /// Shared memory with no file behind it (or a deleted one): pages saved.
    SharedAnon,
    /// `[vvar]`, `[vdso]`, `[vsyscall]`: the kernel provides them.
    Kernel,
    /// nscd's cache, shared with the nscd daemon outside the session (the seed's "nscd"
    /// case). Nothing is saved: on resume the mapping is zero-filled memory, which glibc's
    /// nscd client takes for a cache nscd stopped updating long ago, so it asks nscd for a
    /// new one (or does without nscd when there is none).
    NscdCache,
}

/// Where nscd keeps the caches it shares with its clients: its database files, and its
/// run directory (a cache that is not persistent is a deleted file there).
const NSCD_CACHE_DIRS: [&str; 3] = ["/var/cache/nscd/", "/run/nscd/", "/var/run/nscd/"];

impl MapRecord {
    pub fn kind(&self) -> MapKind {
        if matches!(
            self.path.as_str(),
            "[vvar]" | "[vvar_vclock]" | "[vdso]" | "[vsyscall]"
        ) {
            return MapKind::Kernel;
        }
        let shared = self.perms.as_bytes().get(3) == Some(&b's');
        if shared && NSCD_CACHE_DIRS.iter().any(|d| self.path.starts_with(d)) {
            return MapKind::NscdCache;
        }
        let file =
            self.inode != 0 && self.path.starts_with('/') && !self.path.ends_with(" (deleted)");
        match (shared, file) {
            (false, false) => MapKind::Anon,
            (false, true) => MapKind::PrivateFile,
            (true, true) => MapKind::SharedFile,
            (true, false) => MapKind::SharedAnon,
        }
    }

    pub fn executable(&self) -> bool {
        self.perms.as_bytes().get(2) == Some(&b'x')
    }
}

fn process_record(pid: i32, tids: &[i32], job_stopped: bool) -> io::Result<ProcessRecord> {
    let status = read(format!("/proc/{pid}/status"))?;
    let stat = stat_fields(pid)?;
    let cmdline = read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let mut threads = Vec::new();
    for &tid in tids {
        let tstatus = read(format!("/proc/{pid}/task/{tid}/status")).unwrap_or_default();
        threads.push(ThreadRecord {
            tid: status_last(&tstatus, "NSpid:").unwrap_or(tid),
            comm: read(format!("/proc/{pid}/task/{tid}/comm"))
                .unwrap_or_default()
                .trim_end_matches('\n')
                .to_string(),
            regs: sys::ptrace_getregs(tid)?.to_vec(),
            xstate: sys::ptrace_get_xstate(tid)?,
            rseq: sys::ptrace_get_rseq(tid).unwrap_or(None),
            blocked_signals: status_hex(&tstatus, "SigBlk:"),
            pending_signals: status_hex(&tstatus, "SigPnd:"),
            clear_child_tid: 0,
            altstack: [0, libc::SS_DISABLE as u64, 0],
            robust_list: sys::trace::get_robust_list(tid).unwrap_or((0, 0)),
        });
    }
    let maps: Vec<MapRecord> = read(format!("/proc/{pid}/maps"))?
        .lines()
        .filter_map(parse_map)
        .collect();
    // What only the process can tell, by injected calls (after the registers are read).
    let inside = super::inside::read_inside(pid, tids, &exec_maps(&maps))
        .map_err(|e| io::Error::other(format!("reading process {pid}'s signal handlers: {e}")))?;
    for (t, (ctid, ss)) in threads.iter_mut().zip(&inside.threads) {
        t.clear_child_tid = *ctid;
        t.altstack = *ss;
    }
    // Timers name their thread by host tid: the session's.
    let mut timers = inside.timers;
    for t in &mut timers {
        if let Some(i) = tids.iter().position(|&h| h == t.tid) {
            t.tid = threads[i].tid;
        }
    }
    let mut mm = mm_record(pid, &stat);
    mm.brk = inside.brk;
    let mut rlimits = Vec::new();
    for res in 0..16 {
        rlimits.push(sys::trace::get_rlimit(pid, res)?);
    }
    let mut fds = Vec::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in dir.flatten() {
            let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let info = read(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
            let field = |k: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .map(|v| v.trim().to_string())
                    .unwrap_or_default()
            };
            let fd_path = format!("/proc/{pid}/fd/{fd}");
            let target = link(fd_path.clone());
            let (kind, identity) = fd_kind_and_identity(&target, &fd_path);
            let (queued, pipe_size) = if kind == FdKind::Pipe {
                sys::peek_pipe(pid, fd).unwrap_or_default()
            } else {
                (Vec::new(), 0)
            };
            let tty = if kind == FdKind::CharDevice && target.starts_with("/dev/pts/") {
                sys::peek_tty(pid, fd)
                    .ok()
                    .map(|(termios, size)| TtyRecord {
                        termios,
                        cols: size.cols,
                        rows: size.rows,
                        typed: Vec::new(),
                        output: Vec::new(),
                        packet: false,
                        locked: false,
                    })
            } else if kind == FdKind::PtyMaster {
                // Through a copy of the very descriptor: opening the path would make a new
                // pty.
                let master = sys::trace::copy_fd_of(pid, fd)?;
                let (termios, size) = sys::tty_settings(master.as_fd())?;
                Some(TtyRecord {
                    termios,
                    cols: size.cols,
                    rows: size.rows,
                    typed: Vec::new(),
                    output: Vec::new(),
                    packet: sys::pty_packet_mode(master.as_fd())?,
                    locked: sys::pty_locked(master.as_fd())?,
                })
            } else {
                None
            };
            let socket = if kind == FdKind::Socket && target.starts_with("socket:") {
                Some(SocketRecord::read(pid, fd, &target)?)
            } else {
                None
            };
            let watches = if target == "anon_inode:inotify" {
                parse_watches(&info)
            } else {
                Vec::new()
            };
            fds.push(FdRecord {
                fd,
                desc: 0,
                target,
                tty,
                socket,
                watches,
                flags: u32::from_str_radix(&field("flags:"), 8).unwrap_or(0),
                pos: field("pos:").parse().unwrap_or(0),
                kind,
                identity,
                fdinfo: info.clone(),
                queued,
                pipe_size,
            });
        }
    }
    fds.sort_by_key(|f| f.fd);
    let [cap_inh] = status_words::<1>(&status, "CapInh:", true);
    let [cap_prm] = status_words::<1>(&status, "CapPrm:", true);
    let [cap_eff] = status_words::<1>(&status, "CapEff:", true);
    let [cap_bnd] = status_words::<1>(&status, "CapBnd:", true);
    let [cap_amb] = status_words::<1>(&status, "CapAmb:", true);
    let uids = status_words::<4>(&status, "Uid:", false).map(|v| v as u32);
    let gids = status_words::<4>(&status, "Gid:", false).map(|v| v as u32);
    let personality = read(format!("/proc/{pid}/personality"))
        .ok()
        .and_then(|p| u64::from_str_radix(p.trim(), 16).ok())
        .unwrap_or(0);
    Ok(ProcessRecord {
        cmdline,
        exe: link(format!("/proc/{pid}/exe")),
        cwd: link(format!("/proc/{pid}/cwd")),
        root: link(format!("/proc/{pid}/root")),
        stopped: job_stopped,
        shared_pending_signals: status_hex(&status, "ShdPnd:"),
        ignored_signals: status_hex(&status, "SigIgn:"),
        caught_signals: status_hex(&status, "SigCgt:"),
        sigactions: inside.sigactions,
        itimers: inside.itimers,
        timers,
        mm,
        umask: status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            .unwrap_or(0o022),
        personality,
        dumpable: inside.dumpable,
        rlimits,
        caps: [cap_inh, cap_prm, cap_eff, cap_bnd, cap_amb],
        uids,
        gids,
        // Field 7; the foreground group (field 8) is a host id, translated by the caller.
        ctty: stat.get(4).copied().unwrap_or(0) as u32,
        fg_pgid: stat.get(5).copied().unwrap_or(0) as i64 as i32,
        threads,
        maps,
        fds,
        ..base_record(pid, &status)
    })
}

/// A zombie: its ids and the exit status it holds (`/proc/PID/stat` field 52).
fn zombie_record(pid: i32) -> io::Result<ProcessRecord> {
    let status = read(format!("/proc/{pid}/status"))?;
    let stat = read(format!("/proc/{pid}/stat"))?;
    let exit_code = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(49))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(ProcessRecord {
        zombie: Some(exit_code),
        ..base_record(pid, &status)
    })
}

fn parse_map(line: &str) -> Option<MapRecord> {
    let mut f = line.split_whitespace();
    let range = f.next()?;
    let perms = f.next()?.to_string();
    let offset = u64::from_str_radix(f.next()?, 16).ok()?;
    let (major, minor) = f.next()?.split_once(':')?;
    let inode = f.next()?.parse().ok()?;
    let path = f.collect::<Vec<_>>().join(" ");
    let (s, e) = range.split_once('-')?;
    Some(MapRecord {
        start: u64::from_str_radix(s, 16).ok()?,
        end: u64::from_str_radix(e, 16).ok()?,
        perms,
        offset,
        path,
        dev: (
            u32::from_str_radix(major, 16).ok()?,
            u32::from_str_radix(minor, 16).ok()?,
        ),
        inode,
    })
}

/// Present pages of a mapping, as runs of (address, length), from /proc/PID/pagemap;
/// with `changed_only`, only pages that are the process's own (not the file's).
fn present_runs(pagemap: &std::fs::File, map: &MapRecord, changed_only: bool) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let pages = (map.end - map.start) / PAGE;
    let mut buf = vec![0u8; 8 * 512];
    let mut page = 0;
    while page < pages {
        let n = (pages - page).min(512) as usize;
        let off = (map.start / PAGE + page) * 8;
        let got = sys::pread(pagemap.as_fd(), &mut buf[..n * 8], off).unwrap_or(0) / 8;
        if got == 0 {
            break;
        }
        for i in 0..got {
            let entry = u64::from_le_bytes(buf[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            // Bit 63: present; bit 62: swapped out (its content is still the process's).
            // Bit 61: a page of the file (or shared memory), not one the process wrote.
            let own = !changed_only || entry & (1 << 61) == 0;
            if entry & (3 << 62) != 0 && own {
                let addr = map.start + (page + i as u64) * PAGE;
                match runs.last_mut() {
                    Some((a, l)) if *a + *l == addr => *l += PAGE,
                    _ => runs.push((addr, PAGE)),
                }
            }
        }
        page += got as u64;
    }
    runs
}

/// Refuse, before anything is written, what a resume could not bring back: the checkpoint
/// fails naming the process, the descriptor and its kind, and the session goes on. (An
/// `Unsupported` error: the dumper words it as such.)
/// A process under seccomp (a sandboxed helper, like man-db's) is refused: its filter
/// cannot be read without privilege, and resumed without it, the program would run with
/// its sandbox silently gone.
fn check_no_seccomp(host_pid: i32, p: &ProcessRecord) -> io::Result<()> {
    let status = read(format!("/proc/{host_pid}/status"))?;
    match status_last(&status, "Seccomp:") {
        Some(mode) if mode != 0 => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "process {} ({}) runs under a seccomp filter, which this version cannot carry (resumed, it would run without its sandbox)",
                p.pid, p.comm
            ),
        )),
        _ => Ok(()),
    }
}

fn check_carriable(p: &ProcessRecord) -> io::Result<()> {
    for f in &p.fds {
        let what = match f.kind {
            FdKind::Socket => match &f.socket {
                None => Some("a socket file opened by path".to_string()),
                Some(s) if s.inet() && s.stream() => None,
                Some(s) if s.inet() => Some(format!(
                    "a UDP or raw {} socket (TCP and unix sockets are carried)",
                    if s.domain == libc::AF_INET {
                        "IPv4"
                    } else {
                        "IPv6"
                    }
                )),
                Some(s) if s.domain != libc::AF_UNIX => Some(format!(
                    "{} (only unix and TCP sockets are carried)",
                    match s.domain {
                        libc::AF_NETLINK => "a netlink socket".to_string(),
                        libc::AF_PACKET => "a packet socket".to_string(),
                        d => format!("a socket of address family {d}"),
                    }
                )),
                Some(s) if s.listening && s.name.is_empty() => {
                    Some("a listening unix socket without a name".to_string())
                }
                Some(_) => None,
            },
            FdKind::Directory if f.target.ends_with(" (deleted)") => {
                Some("a directory deleted while open".to_string())
            }
            FdKind::File
                if f.target.ends_with(" (deleted)")
                    && f.identity
                        .as_ref()
                        .is_some_and(|i| i.size > DELETED_FILE_LIMIT) =>
            {
                Some("a file deleted while open, larger than 1 GiB".to_string())
            }
            FdKind::Anon
                if !matches!(
                    f.target.as_str(),
                    "anon_inode:[eventfd]"
                        | "anon_inode:[timerfd]"
                        | "anon_inode:[signalfd]"
                        | "anon_inode:[eventpoll]"
                        | "anon_inode:inotify"
                ) =>
            {
                Some("a kernel object crterm cannot carry".to_string())
            }
            FdKind::Other => Some("a file of a kind crterm cannot carry".to_string()),
            _ => None,
        };
        if let Some(what) = what {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "process {} ({}) holds fd {}, {what} ({}), which this version cannot carry",
                    p.pid, p.comm, f.fd, f.target
                ),
            ));
        }
    }
    // SysV shared memory belongs to the host's IPC namespace, by a key other programs may
    // share: carried as plain memory, it would lose its id and its sharers.
    if let Some(m) = p.maps.iter().find(|m| m.path.starts_with("/SYSV")) {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "process {} ({}) has SysV shared memory attached (shmat, key 0x{}), which this version cannot carry",
                p.pid,
                p.comm,
                m.path
                    .trim_start_matches("/SYSV")
                    .trim_end_matches(" (deleted)")
            ),
        ));
    }
    Ok(())
}

/// Number the open file descriptions: descriptors of the session that are one
/// description (kcmp says so) get the same `desc`. `hosts[i]` is the host pid of
/// `record.processes[i]` among the non-zombies (zombies come first and hold no files).
fn number_descriptions(record: &mut SessionRecord, hosts: &[i32]) -> io::Result<()> {
    let live: Vec<usize> = (0..record.processes.len())
        .filter(|&i| record.processes[i].zombie.is_none())
        .collect();
    // (host pid, fd, target) of the first holder of each description.
    let mut firsts: Vec<(i32, i32, String)> = Vec::new();
    for (&pi, &host) in live.iter().zip(hosts) {
        for f in &mut record.processes[pi].fds {
            let mut found = None;
            for (d, (hp, hfd, target)) in firsts.iter().enumerate() {
                if *target == f.target
                    && sys::trace::same_file_description(*hp, *hfd, host, f.fd).unwrap_or(false)
                {
                    found = Some(d);
                    break;
                }
            }
            f.desc = match found {
                Some(d) => d as u32,
                None => {
                    firsts.push((host, f.fd, f.target.clone()));
                    (firsts.len() - 1) as u32
                }
            };
        }
    }
    Ok(())
}

/// What only the whole session tells of its unix sockets: each one's peer (sock_diag),
/// whether that peer is held in the session too, and the bytes queued to be read (peeked,
/// not consumed). Refuses what cannot be carried, naming the process and descriptor:
/// descriptors in flight, a datagram socket connected to one that is not connected back.
fn read_sockets(record: &mut SessionRecord, hosts: &[i32]) -> io::Result<()> {
    let live: Vec<usize> = (0..record.processes.len())
        .filter(|&i| record.processes[i].zombie.is_none())
        .collect();
    let has_sockets = live
        .iter()
        .any(|&i| record.processes[i].fds.iter().any(|f| f.socket.is_some()));
    if !has_sockets {
        return Ok(());
    }
    let diag = sys::sock::unix_diag()
        .map_err(|e| io::Error::other(format!("reading the session's unix sockets: {e}")))?;
    let held: std::collections::HashSet<u64> = live
        .iter()
        .flat_map(|&i| &record.processes[i].fds)
        .filter_map(|f| f.socket.as_ref().map(|s| s.inode))
        .collect();
    let mut queues: std::collections::HashMap<u64, Vec<Vec<u8>>> = Default::default();
    // Connections not accepted yet, by the inode of their client end (sock_diag lists
    // those for a listener: its embryo sockets have none): the listener of the session
    // they wait in.
    let waiting_in: std::collections::HashMap<u64, u64> = diag
        .iter()
        .filter(|(ino, _)| held.contains(ino))
        .flat_map(|(&listener, d)| d.pending.iter().map(move |&c| (c, listener)))
        .collect();
    for (&pi, &host) in live.iter().zip(hosts) {
        let p = &mut record.processes[pi];
        for f in &mut p.fds {
            let Some(s) = f.socket.as_mut() else { continue };
            if s.listening {
                continue;
            }
            if s.inet() {
                // A TCP connection comes back closed, with what had arrived still to read.
                if !s.peer_addr.is_empty() {
                    let sock = sys::trace::copy_fd_of(host, f.fd)?;
                    s.queued = sys::sock::peek_queue(sock.as_fd(), true)?;
                }
                continue;
            }
            if s.domain != libc::AF_UNIX {
                continue;
            }
            let d = diag.get(&s.inode).cloned().unwrap_or_default();
            s.peer = d.peer;
            s.shutdown = d.shutdown;
            s.peer_inside = d.peer != 0 && held.contains(&d.peer);
            // A connection waiting in a listener of the session: made again by connecting
            // to it, which needs the bytes sent so far to be none (they cannot be peeked).
            if let Some(&listener) = waiting_in.get(&s.inode) {
                if d.unread_sent > 0 {
                    let refuse = format!(
                        "process {} ({}) holds fd {}, a unix socket connection not accepted yet that has sent data ({}), which this version cannot carry",
                        p.pid, p.comm, f.fd, f.target
                    );
                    return Err(io::Error::new(io::ErrorKind::Unsupported, refuse));
                }
                s.pending_on = listener;
                continue;
            }
            let refuse = |what: &str| {
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "process {} ({}) holds fd {}, a unix socket {what} ({}), which this version cannot carry",
                        p.pid, p.comm, f.fd, f.target
                    ),
                )
            };
            if s.peer_inside && diag.get(&d.peer).map(|d| d.peer) != Some(s.inode) {
                return Err(refuse("connected to a socket that is not connected back"));
            }
            if let Some(q) = queues.get(&s.inode) {
                s.queued = q.clone();
                continue;
            }
            let sock = sys::trace::copy_fd_of(host, f.fd)?;
            s.queued = match sys::sock::peek_queue(sock.as_fd(), s.stream()) {
                Ok(q) => q,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    return Err(refuse(&format!("with {e} queued")));
                }
                Err(e) => return Err(e),
            };
            queues.insert(s.inode, s.queued.clone());
        }
    }
    Ok(())
}

/// SysV IPC objects: the session has an IPC namespace of its own, so every object in it
/// is the session's. Carried, one would lose its key's meaning to programs outside and,
/// for semaphores, the undo state the kernel keeps per process; so any stops the
/// checkpoint, named. (A process with shared memory attached is named earlier, by its
/// mapping.)
fn check_sysv_objects(found: &[String]) -> io::Result<()> {
    if found.is_empty() {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "the session holds SysV IPC objects, which this version cannot carry: {}",
            found.join(", ")
        ),
    ))
}

/// The path of every inotify watch: the file or directory with the watched inode among
/// what the session holds (open files, their directories, cwd, root, exe, mapped files).
/// A watch whose path is not found stops the checkpoint, named.
fn find_watched_paths(record: &mut SessionRecord) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !record
        .processes
        .iter()
        .any(|p| p.fds.iter().any(|f| !f.watches.is_empty()))
    {
        return Ok(());
    }
    let mut candidates: Vec<String> = Vec::new();
    for p in &record.processes {
        candidates.extend([p.cwd.clone(), p.root.clone(), p.exe.clone()]);
        candidates.extend(
            p.fds
                .iter()
                .filter(|f| matches!(f.kind, FdKind::File | FdKind::Directory))
                .map(|f| f.target.clone()),
        );
        candidates.extend(p.maps.iter().map(|m| m.path.clone()));
    }
    let mut known: std::collections::HashMap<((u32, u32), u64), String> = Default::default();
    for c in candidates {
        let mut path = std::path::PathBuf::from(&c);
        if !c.starts_with('/') || c.ends_with(" (deleted)") {
            continue;
        }
        // The file and the directories above it.
        loop {
            if let Ok(m) = std::fs::metadata(&path) {
                let key = ((libc::major(m.dev()), libc::minor(m.dev())), m.ino());
                known
                    .entry(key)
                    .or_insert_with(|| path.display().to_string());
            }
            if !path.pop() {
                break;
            }
        }
    }
    for p in &mut record.processes {
        for f in &mut p.fds {
            for w in &mut f.watches {
                match known.get(&(w.dev, w.ino)) {
                    Some(path) => w.path = path.clone(),
                    None => {
                        return Err(io::Error::new(
                            io::ErrorKind::Unsupported,
                            format!(
                                "process {} ({}) holds fd {}, an inotify watch (wd {}) on inode {} of device {}:{} whose path crterm cannot find (it is not open, mapped or a directory above those), which this version cannot carry",
                                p.pid, p.comm, f.fd, w.wd, w.ino, w.dev.0, w.dev.1
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Take the bytes queued in the session's ptys out while the session is frozen: typed
/// input not yet read (raw-mode terminals only: a partial line cannot be read out), and
/// through each pty master the session holds, output its holder has not read yet. Returns
/// copies of those masters, by pty number, for `put_back_queues`.
fn take_pty_queues(record: &mut SessionRecord, hosts: &[i32]) -> Vec<(u32, OwnedFd)> {
    let live: Vec<usize> = (0..record.processes.len())
        .filter(|&i| record.processes[i].zombie.is_none())
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut masters: Vec<(u32, OwnedFd)> = Vec::new();
    for (&pi, &host) in live.iter().zip(hosts) {
        for f in &mut record.processes[pi].fds {
            let index = f.pty_index();
            let Some(tty) = f.tty.as_mut() else { continue };
            if f.kind == FdKind::CharDevice {
                if seen.insert(f.target.clone()) {
                    tty.typed = sys::take_typed_input(host, f.fd).unwrap_or_default();
                }
                continue;
            }
            let Some(n) = index else { continue };
            if masters.iter().any(|(m, _)| *m == n) {
                continue;
            }
            let Ok(master) = sys::trace::copy_fd_of(host, f.fd) else {
                continue;
            };
            tty.output = read_pty_output(master.as_fd(), tty.packet);
            masters.push((n, master));
        }
    }
    masters
}

/// What a pty's programs wrote and its master's holder has not read yet (consumed: put it
/// back with `put_back_queues`). In packet mode each read starts with a status byte.
fn read_pty_output(master: std::os::fd::BorrowedFd, packet: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    while out.len() < 16 << 20 && sys::readable(master) {
        match sys::read(master, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) if packet => {
                if buf[0] == 0 {
                    out.extend_from_slice(&buf[1..n]);
                }
            }
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

/// Put back what `take_pty_queues` took out of the ptys whose masters the session holds
/// (the session's own terminal, pts 0, is the daemon's: its typed input goes back through
/// the daemon): typed input into the master, output through the slave, as it was.
fn put_back_queues(record: &SessionRecord, masters: &[(u32, OwnedFd)]) {
    let fds = || record.processes.iter().flat_map(|p| &p.fds);
    for (n, master) in masters {
        let slave = format!("/dev/pts/{n}");
        if let Some(typed) = fds()
            .filter(|f| f.kind == FdKind::CharDevice && f.target == slave)
            .find_map(|f| f.tty.as_ref().filter(|t| !t.typed.is_empty()))
            .map(|t| &t.typed)
        {
            let _ = sys::write_all(master.as_fd(), typed);
        }
        if let Some(output) = fds()
            .filter(|f| f.kind == FdKind::PtyMaster && f.pty_index() == Some(*n))
            .find_map(|f| f.tty.as_ref().filter(|t| !t.output.is_empty()))
            .map(|t| &t.output)
            && let Ok(peer) = sys::pty_peer(master.as_fd())
        {
            let _ = sys::write_as_output(peer.as_fd(), output);
        }
    }
}

/// What a dump wrote.
pub struct DumpSummary {
    pub processes: usize,
    pub threads: usize,
    pub memory_bytes: u64,
    /// When the session went on.
    pub thawed_at: std::time::Instant,
}

/// The bytes typed at the session's own terminal (pts 0) that the dump took out of it (the
/// daemon puts them back when the session goes on).
pub fn typed_input(record: &SessionRecord) -> Vec<u8> {
    record
        .processes
        .iter()
        .flat_map(|p| &p.fds)
        .filter(|f| f.target == "/dev/pts/0")
        .find_map(|f| f.tty.as_ref().filter(|t| !t.typed.is_empty()))
        .map(|t| t.typed.clone())
        .unwrap_or_default()
}

/// Page data on its way into the image: the chunk being filled, straight from the
/// processes' memory.
struct PageStream {
    buf: Vec<u8>,
    len: usize,
}

impl PageStream {
    /// Copy `len` bytes at `addr` of host process `pid` (the session's `ns_pid`) into the
    /// stream and note them in `runs`. With `skip_zeros`, pages of zeros are left out: fresh
    /// memory is zero. (Not in a file mapping, where a zero page the process wrote differs
    /// from the file's.)
    #[allow(clippy::too_many_arguments)]
    fn copy(
        &mut self,
        feed: &mut Feed,
        pid: i32,
        ns_pid: i32,
        addr: u64,
        len: u64,
        skip_zeros: bool,
        runs: &mut Vec<PageRun>,
    ) -> io::Result<()> {
        let page = PAGE as usize;
        let zero = |b: &[u8]| skip_zeros && b == &ZERO_PAGE[..b.len()];
        let mut at = 0;
        while at < len {
            if self.len == CHUNK_SIZE {
                let full = std::mem::replace(&mut self.buf, feed.buffer()?);
                feed.send(full, CHUNK_SIZE)?;
                self.len = 0;
            }
            let n = (len - at).min((CHUNK_SIZE - self.len) as u64) as usize;
            let base = self.len;
            let got = sys::read_process_memory(pid, addr + at, &mut self.buf[base..base + n])?;
            if got == 0 {
                break;
            }
            // Keep the runs of pages that are not all zeros, moved together.
            let end = base + got;
            let mut keep = base;
            let mut i = base;
            while i < end {
                if zero(&self.buf[i..(i + page).min(end)]) {
                    i = (i + page).min(end);
                    continue;
                }
                let from = i;
                while i < end && !zero(&self.buf[i..(i + page).min(end)]) {
                    i = (i + page).min(end);
                }
                if from != keep {
                    self.buf.copy_within(from..i, keep);
                }
                keep += i - from;
                let run_addr = addr + at + (from - base) as u64;
                match runs.last_mut() {
                    Some(r) if r.pid == ns_pid && r.addr + r.len == run_addr => {
                        r.len += (i - from) as u64
                    }
                    _ => runs.push(PageRun {
                        pid: ns_pid,
                        addr: run_addr,
                        len: (i - from) as u64,
                    }),
                }
            }
            self.len = keep;
            at += got as u64;
        }
        Ok(())
    }

    fn finish(self, feed: &mut Feed) -> io::Result<()> {
        feed.send(self.buf, self.len)
    }
}

/// The content hash of every regular file the session holds open (small enough), read
/// through the path it had; once per file.
fn hash_open_files(record: &mut SessionRecord) {
    let mut done: std::collections::HashMap<(u64, u64), Option<String>> = Default::default();
    for p in &mut record.processes {
        for f in &mut p.fds {
            if f.kind != FdKind::File {
                continue;
            }
            let Some(id) = f.identity.as_mut() else {
                continue;
            };
            if id.size > HASHED_FILE_LIMIT || f.target.ends_with(" (deleted)") {
                continue;
            }
            id.sha256 = done
                .entry((id.dev, id.ino))
                .or_insert_with(|| hash_prefix(&f.target, id.size))
                .clone();
        }
    }
}

/// Put the content of every file the session maps into the FILES chunks, once per content:
/// the same inode mapped many times is read once, and equal contents under other inodes
/// (found by SHA-256) are stored once. Each file starts a chunk of its own (so one file can
/// be read back alone).
fn carry_files<W: Write + Send>(
    w: &mut ImageWriter<W>,
    record: &mut SessionRecord,
    deleted: Vec<FileToCarry>,
    budget: usize,
) -> io::Result<()> {
    use sha2::{Digest, Sha256};
    use std::collections::HashMap;
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let mut by_inode: HashMap<((u32, u32), u64), Option<usize>> = HashMap::new();
    let mut by_hash: HashMap<String, usize> = HashMap::new();
    // Mapped files, opened by path; then files deleted while open, already opened.
    let maps: Vec<FileToCarry> = record
        .processes
        .iter()
        .flat_map(|p| p.maps.iter())
        .filter(|m| m.inode != 0 && m.path.starts_with('/') && m.kind() != MapKind::NscdCache)
        .map(|m| FileToCarry {
            path: m.path.clone(),
            dev: m.dev,
            inode: m.inode,
            file: None,
            limit: None,
        })
        .chain(deleted)
        .collect();
    let mut buf = vec![0u8; 1 << 20];
    w.pipeline(SectionKind::FILES, budget, |feed| {
        for m in maps {
            use std::io::Seek;
            let key = (m.dev, m.inode);
            if by_inode.contains_key(&key) {
                continue;
            }
            let not_carried = |record: &mut SessionRecord, why: &str| {
                if !record.files_not_carried.iter().any(|(p, _)| *p == m.path) {
                    record
                        .files_not_carried
                        .push((m.path.clone(), why.to_string()));
                }
            };
            let Some(mut file) = m.file.or_else(|| std::fs::File::open(&m.path).ok()) else {
                not_carried(record, "gone");
                by_inode.insert(key, None);
                continue;
            };
            let meta = file.metadata()?;
            let same_file = meta.ino() == m.inode
                && (libc::major(meta.dev()), libc::minor(meta.dev())) == m.dev;
            if !same_file || !meta.is_file() {
                not_carried(record, "replaced since it was mapped");
                by_inode.insert(key, None);
                continue;
            }
            // An open file: whole, or not at all.
            let whole = match m.limit {
                Some(limit) => {
                    let mut content = Vec::new();
                    (&mut file).take(limit + 1).read_to_end(&mut content)?;
                    if content.len() as u64 > limit {
                        not_carried(
                            record,
                            &format!("larger than --carry-files ({limit} bytes)"),
                        );
                        by_inode.insert(key, None);
                        continue;
                    }
                    Some(content)
                }
                None => None,
            };
            let mut hasher = Sha256::new();
            match &whole {
                Some(content) => hasher.update(content),
                None => loop {
                    let n = file.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                },
            }
            let sha256: String = hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let copy = FileCopy {
                path: m.path.clone(),
                dev: m.dev,
                inode: m.inode,
                mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            };
            if let Some(&i) = by_hash.get(&sha256) {
                record.files[i].copies.push(copy);
                by_inode.insert(key, Some(i));
                continue;
            }
            // A new content: send it (read again from the page cache, where hashing just
            // put it).
            let mut size = 0u64;
            let mut from = whole.as_deref();
            if from.is_none() {
                file.seek(std::io::SeekFrom::Start(0))?;
            }
            loop {
                let mut chunk = feed.buffer()?;
                let n = match &mut from {
                    Some(rest) => {
                        let n = rest.len().min(CHUNK_SIZE);
                        chunk[..n].copy_from_slice(&rest[..n]);
                        *rest = &rest[n..];
                        n
                    }
                    None => read_full(&mut file, &mut chunk)?,
                };
                size += n as u64;
                feed.send(chunk, n)?;
                if n < CHUNK_SIZE {
                    break;
                }
            }
            if whole.is_none() && size != meta.size() {
                return Err(io::Error::other(format!(
                    "{} changed while it was being saved",
                    m.path
                )));
            }
            by_hash.insert(sha256.clone(), record.files.len());
            by_inode.insert(key, Some(record.files.len()));
            record.files.push(CarriedFile {
                sha256,
                size,
                copies: vec![copy],
            });
        }
        Ok(())
    })
}

/// A file whose content the image carries: mapped, or open (then `file` is a descriptor
/// of it, opened through its holder's while the session was frozen).
struct FileToCarry {
    path: String,
    dev: (u32, u32),
    inode: u64,
    file: Option<std::fs::File>,
    /// An open file the session may go on writing to: carried only up to this size, read
    /// whole before it is sent, so that a file still growing is not carried half.
    limit: Option<u64>,
}

/// Files the session holds open whose content the image carries: those deleted while open
/// (up to `DELETED_FILE_LIMIT`), and the others up to `carry_limit` (a resume where they
/// are missing makes them again). Opened now, through the holder's descriptor while the
/// session is frozen.
fn open_files_to_carry(
    record: &SessionRecord,
    hosts: &[i32],
    carry_limit: u64,
) -> Vec<FileToCarry> {
    let live = record.processes.iter().filter(|p| p.zombie.is_none());
    let mut out: Vec<FileToCarry> = Vec::new();
    for (p, &host) in live.zip(hosts) {
        for f in &p.fds {
            let Some(id) = &f.identity else { continue };
            let deleted = f.target.ends_with(" (deleted)");
            if f.kind != FdKind::File || (!deleted && id.size > carry_limit) {
                continue;
            }
            let dev = (libc::major(id.dev), libc::minor(id.dev));
            if out.iter().any(|d| d.dev == dev && d.inode == id.ino) {
                continue;
            }
            if let Ok(file) = std::fs::File::open(format!("/proc/{host}/fd/{}", f.fd)) {
                out.push(FileToCarry {
                    path: f.target.clone(),
                    dev,
                    inode: id.ino,
                    file: Some(file),
                    // A deleted file (checked against `DELETED_FILE_LIMIT` already) is
                    // streamed; nothing but its holders can change it.
                    limit: (!deleted).then_some(carry_limit),
                });
            }
        }
    }
    out
}

/// Read until `buf` is full or the file ends; how much was read.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    use std::io::Read;
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The connections the frozen session holds to the outside, one line each: TCP
/// connections, and unix sockets whose peer no process of the session holds.
pub fn outside_connections(frozen: &Frozen) -> io::Result<Vec<String>> {
    let tasks = frozen.tasks();
    // (host pid, session pid, fd, inode) of every socket descriptor.
    let mut sockets = Vec::new();
    for (pid, _) in &tasks {
        let ns = read(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|st| status_last(&st, "NSpid:"))
            .unwrap_or(*pid);
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for e in dir.flatten() {
            let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let target = link(format!("/proc/{pid}/fd/{fd}"));
            if let Some(ino) = target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            {
                sockets.push((*pid, ns, fd, ino));
            }
        }
    }
    if sockets.is_empty() {
        return Ok(Vec::new());
    }
    let held: std::collections::HashSet<u64> = sockets.iter().map(|s| s.3).collect();
    let diag = sys::sock::unix_diag()?;
    let mut out = Vec::new();
    for (pid, ns, fd, ino) in sockets {
        let Ok(sock) = sys::trace::copy_fd_of(pid, fd) else {
            continue;
        };
        let Ok(info) = sys::sock::socket_info(sock.as_fd()) else {
            continue;
        };
        if info.listening {
            continue;
        }
        if matches!(info.domain, libc::AF_INET | libc::AF_INET6) {
            if let Ok(peer) = sys::sock::peer_addr(sock.as_fd()) {
                out.push(format!(
                    "process {ns} fd {fd}: TCP to {}",
                    sys::sock::inet_text(&peer)
                ));
            }
        } else if info.domain == libc::AF_UNIX
            && let Some(d) = diag.get(&ino)
            && d.peer != 0
            && !held.contains(&d.peer)
        {
            out.push(format!(
                "process {ns} fd {fd}: a unix socket to a program outside"
            ));
        }
    }
    Ok(out)
}

/// Processes the checkpoint made dumpable (to read their /proc files): made undumpable
/// again before they go on, whatever happens.
struct MadeDumpable(Vec<(i32, Vec<i32>, Vec<super::inside::CodeMap>)>);

impl MadeDumpable {
    fn undo(&mut self) {
        for (pid, tids, maps) in self.0.drain(..) {
            let _ = super::inside::set_undumpable(pid, &tids, &maps);
        }
    }
}

impl Drop for MadeDumpable {
    fn drop(&mut self) {
        self.undo();
    }
}

/// A process's mappings as the injector looks for code.
fn exec_maps(maps: &[MapRecord]) -> Vec<super::inside::CodeMap> {
    maps.iter()
        .map(|m| (m.start, m.end, m.executable(), m.path.clone()))
        .collect()
}

/// Checkpoint the frozen session into `w`: the terminal model, the page data, the content
/// of the files the session maps, the session record.
///
/// The pages are copied out of the processes into chunk buffers that are compressed and
/// written meanwhile (`ImageWriter::pipeline`, at most `budget` bytes of buffers); once the
/// whole state is read, `before_thaw` is called and the session thawed, and the rest is
/// written while the session runs: the last chunks, the files (read after the
/// thaw), the record.
///
/// What the daemon knows of the session it checkpoints.
pub struct About<'a> {
    pub name: &'a str,
    pub command: &'a str,
    /// Started with `--cpu baseline`.
    pub cpu_baseline: bool,
    /// Open regular files up to this size are carried (`--carry-files`).
    pub carry_files: u64,
}

/// The page data is one stream, the runs of `page_runs` one after another, cut into
/// chunks of `CHUNK_SIZE`.
pub fn dump<W: Write + Send>(
    w: &mut ImageWriter<W>,
    frozen: Frozen,
    about: &About,
    term: &crate::term_model::Term,
    budget: usize,
    before_thaw: impl FnOnce(&SessionRecord),
) -> io::Result<DumpSummary> {
    w.meta(SectionKind::TERM_MODEL, term)?;
    let mut record = SessionRecord {
        name: about.name.to_string(),
        command: about.command.to_string(),
        processes: Vec::new(),
        page_runs: Vec::new(),
        files: Vec::new(),
        files_not_carried: Vec::new(),
        monotonic_ns: 0,
        boottime_ns: 0,
        machine: crate::machine::MachineRecord {
            xsave: crate::machine::XsaveLayout::here(),
            cpu_baseline: about.cpu_baseline,
            hostname: String::new(),
            vdso: crate::machine::vdso_here(),
        },
    };
    // The session's clocks: the host's plus its time namespace's offsets.
    if let Some((pid, _)) = frozen.tasks().first() {
        let (mono, boot) = sys::time_offsets(*pid);
        record.monotonic_ns = sys::clock_ns(libc::CLOCK_MONOTONIC) + mono;
        record.boottime_ns = sys::clock_ns(libc::CLOCK_BOOTTIME) + boot;
    }
    for &pid in frozen.zombies() {
        if let Ok(z) = zombie_record(pid) {
            record.processes.push(z);
        }
    }
    let first_live = record.processes.len();
    let tasks = frozen.tasks();
    // Host pid -> the session's pid, for ids the kernel gives in the host's numbers.
    let mut host_to_ns = std::collections::HashMap::new();
    for (pid, _) in &tasks {
        if let Ok(st) = read(format!("/proc/{pid}/status"))
            && let Some(ns) = status_last(&st, "NSpid:")
        {
            host_to_ns.insert(*pid, ns);
        }
    }
    // Every process's record first (with the system calls injected into it: done before
    // the pipeline's threads exist, which slow each injected call down several times), so
    // that anything the image cannot carry stops the checkpoint before any page is read.
    let mut hosts = Vec::new();
    // Declared after `frozen`, so dropped (undone) before the session is thawed.
    let mut made_dumpable = MadeDumpable(Vec::new());
    let mut frozen = Some(frozen);
    let first_task = tasks.first().cloned();
    for (pid, tids) in tasks {
        let job_stopped = frozen.as_ref().is_some_and(|f| f.job_stopped(pid));
        let mut proc_record = process_record(pid, &tids, job_stopped)?;
        if !proc_record.dumpable {
            made_dumpable
                .0
                .push((pid, tids.clone(), exec_maps(&proc_record.maps)));
        }
        check_carriable(&proc_record)?;
        check_no_seccomp(pid, &proc_record)?;
        proc_record.fg_pgid = if proc_record.fg_pgid > 0 {
            host_to_ns.get(&proc_record.fg_pgid).copied().unwrap_or(0)
        } else {
            0
        };
        hosts.push(pid);
        record.processes.push(proc_record);
    }
    if let (Some((pid, tids)), Some(p)) = (first_task, record.processes.get(first_live)) {
        let ns = super::inside::session_namespaces(pid, &tids, &exec_maps(&p.maps))
            .map_err(|e| io::Error::other(format!("asking the session's namespaces: {e}")))?;
        check_sysv_objects(&ns.sysv)?;
        record.machine.hostname = ns.hostname;
    }
    read_sockets(&mut record, &hosts)?;
    find_watched_paths(&mut record)?;
    let mut deleted = Vec::new();
    let thawed_at = w.pipeline(SectionKind::PAGES, budget, |feed| {
        let mut pages = PageStream {
            buf: feed.buffer()?,
            len: 0,
        };
        for (&pid, proc_record) in hosts.iter().zip(&record.processes[first_live..]) {
            let pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap"))?;
            for map in &proc_record.maps {
                let kind = map.kind();
                if matches!(
                    kind,
                    MapKind::Kernel | MapKind::SharedFile | MapKind::NscdCache
                ) || !map.perms.starts_with('r')
                {
                    continue;
                }
                // Shared memory is read whole: a page of it may be present in the shared
                // object without being mapped in this process (pagemap would not show it).
                let runs = if kind == MapKind::SharedAnon {
                    vec![(map.start, map.end - map.start)]
                } else {
                    present_runs(&pagemap, map, kind == MapKind::PrivateFile)
                };
                for (addr, len) in runs {
                    pages.copy(
                        feed,
                        pid,
                        proc_record.pid,
                        addr,
                        len,
                        kind == MapKind::Anon,
                        &mut record.page_runs,
                    )?;
                }
            }
        }
        number_descriptions(&mut record, &hosts)?;
        let masters = take_pty_queues(&mut record, &hosts);
        deleted = open_files_to_carry(&record, &hosts, about.carry_files);
        before_thaw(&record);
        put_back_queues(&record, &masters);
        made_dumpable.undo();
        if let Some(f) = frozen.take() {
            f.thaw();
        }
        let thawed_at = std::time::Instant::now();
        // The last chunk is compressed after the thaw: a small session (vim) is then not
        // frozen for any compression at all.
        pages.finish(feed)?;
        Ok(thawed_at)
    })?;
    // The session runs again: the files are read now.
    hash_open_files(&mut record);
    carry_files(w, &mut record, deleted, budget)?;
    w.meta(SectionKind::SESSION, &record)?;
    Ok(DumpSummary {
        processes: record.processes.len(),
        threads: record.threads(),
        memory_bytes: record.memory_bytes(),
        thawed_at,
    })
}
