//! What an image says about a session: the records the checkpoint fills and the resume
//! reads (postcard, in the image's SESSION section), and what they mean. Nothing here reads
//! a process or writes an image; `validate` checks a record read from an image before
//! anything uses it (an image is never trusted).

use serde::{Deserialize, Serialize};

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
    /// The session ran in a user namespace of its own mapping this user and group to
    /// themselves (a session of an ordinary user): its capabilities meant something only
    /// there, so a resume, even by root, gives it such a namespace again.
    pub user_namespace: Option<(u32, u32)>,
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
    /// Stopped by job control (Ctrl-Z): the signal that stopped it (SIGTSTP, SIGSTOP,
    /// SIGTTIN, SIGTTOU; a parent's waitpid reports it); 0: not stopped.
    pub stop_signal: i32,
    /// Exited and not yet reaped by its parent: the exit status it waits to hand over
    /// (as waitpid reports it). A zombie has no threads, memory or files.
    pub zombie: Option<i32>,
    /// Signals queued for the whole process, in order, each with its siginfo (sender,
    /// value, code: 128 bytes, the number first); ignored and caught signals.
    pub shared_pending: Vec<Vec<u8>>,
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
    /// Real, effective, saved and filesystem user and group ids, and the supplementary
    /// groups, as the host sees them.
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    pub groups: Vec<u32>,
    /// PR_SET_NO_NEW_PRIVS was set (it cannot be unset).
    pub no_new_privs: bool,
    /// The dynamic XSAVE features the process was permitted (arch_prctl
    /// ARCH_GET_XCOMP_PERM: AMX's tile data, which a process must ask for before it can
    /// use it), as a mask of XSAVE components.
    pub xcomp_perm: u64,
    /// The signal it gets when its parent ends (PR_SET_PDEATHSIG; 0: none).
    pub pdeath_signal: i32,
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
    /// Signals queued for this thread alone, in order, each with its siginfo (with the one
    /// the freeze caught it on its way to, first).
    pub pending: Vec<Vec<u8>>,
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
    /// What `VmFlags` in /proc/PID/smaps says of it beyond its protection: `vm::*` bits.
    pub vm: u32,
}

/// A mapping's flags from the two-letter names `VmFlags` in /proc/PID/smaps gives them,
/// as `MapRecord::vm` bits: those a resume sets again (`CARRIED`), and those a checkpoint
/// refuses (`REFUSED`). The other names are the protection, or set by the kernel alike on
/// both sides (`ac`, `gd`, `me` ...).
pub mod vm {
    /// The file was opened writable: a shared mapping of it may be made writable later.
    pub const MAY_WRITE: u32 = 1 << 0;
    /// mlock.
    pub const LOCKED: u32 = 1 << 1;
    /// mlock2(MLOCK_ONFAULT).
    pub const LOCK_ON_FAULT: u32 = 1 << 2;
    pub const SEQUENTIAL: u32 = 1 << 3;
    pub const RANDOM: u32 = 1 << 4;
    pub const DONT_FORK: u32 = 1 << 5;
    /// MAP_NORESERVE (or no commit charge).
    pub const NO_RESERVE: u32 = 1 << 6;
    pub const DONT_DUMP: u32 = 1 << 7;
    /// Merged with equal pages (KSM).
    pub const MERGEABLE: u32 = 1 << 8;
    pub const HUGEPAGE: u32 = 1 << 9;
    pub const NO_HUGEPAGE: u32 = 1 << 10;
    pub const WIPE_ON_FORK: u32 = 1 << 11;
    /// MAP_DROPPABLE: its pages may be dropped under memory pressure.
    pub const DROPPABLE: u32 = 1 << 12;
    /// mseal: it cannot be unmapped, moved or reprotected.
    pub const SEALED: u32 = 1 << 13;
    /// Huge pages of hugetlbfs (MAP_HUGETLB).
    pub const HUGETLB: u32 = 1 << 16;
    /// A shadow stack (x86 user shadow stacks).
    pub const SHADOW_STACK: u32 = 1 << 17;
    /// Registered with userfaultfd.
    pub const USERFAULT: u32 = 1 << 18;
    /// Device memory (a driver's pages: VM_PFNMAP, VM_IO).
    pub const DEVICE: u32 = 1 << 19;

    pub const CARRIED: u32 = (1 << 14) - 1;
    pub const REFUSED: u32 = HUGETLB | SHADOW_STACK | USERFAULT | DEVICE;

    /// The bit of a two-letter name; 0 for names that are not carried or refused.
    pub fn bit(name: &str) -> u32 {
        match name {
            "mw" => MAY_WRITE,
            "lo" => LOCKED,
            "lf" => LOCK_ON_FAULT,
            "sr" => SEQUENTIAL,
            "rr" => RANDOM,
            "dc" => DONT_FORK,
            "nr" => NO_RESERVE,
            "dd" => DONT_DUMP,
            "mg" => MERGEABLE,
            "hg" => HUGEPAGE,
            "nh" => NO_HUGEPAGE,
            "wf" => WIPE_ON_FORK,
            "dp" => DROPPABLE,
            "sl" => SEALED,
            "ht" => HUGETLB,
            "ss" => SHADOW_STACK,
            "um" | "uw" | "ui" => USERFAULT,
            "pf" | "io" => DEVICE,
            _ => 0,
        }
    }

    /// What a refused bit is, for the message.
    pub fn refused_name(bits: u32) -> &'static str {
        if bits & HUGETLB != 0 {
            "hugetlb memory (MAP_HUGETLB)"
        } else if bits & SHADOW_STACK != 0 {
            "a shadow stack"
        } else if bits & USERFAULT != 0 {
            "memory registered with userfaultfd"
        } else {
            "device memory (a driver's pages)"
        }
    }
}

/// The content of a file the session maps, carried in the image once however many
/// processes and mappings use it (its bytes are in the FILES chunks, in record order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarriedFile {
    pub sha256: String,
    pub size: u64,
    /// Every (path, device, inode, mtime) of the session that has this content.
    pub copies: Vec<FileCopy>,
    /// The holes of a sparse file, (offset, length), in order: made again as holes.
    pub holes: Vec<(u64, u64)>,
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
    /// Who is sent SIGIO (with O_ASYNC) and SIGURG for it: F_GETOWN_EX's (type, id) with
    /// the session's id (`OWNER_*`; id 0: nobody), and F_GETSIG's signal (0: SIGIO).
    pub owner: (i32, i32),
    pub signal: i32,
}

/// `FdRecord::owner` types (the kernel's F_OWNER_*).
pub const OWNER_TID: i32 = 0;
pub const OWNER_PID: i32 = 1;
pub const OWNER_PGRP: i32 = 2;

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

impl SocketRecord {
    pub fn stream(&self) -> bool {
        self.kind == libc::SOCK_STREAM
    }

    pub fn inet(&self) -> bool {
        matches!(self.domain, libc::AF_INET | libc::AF_INET6)
    }

    /// The name for messages: the path, `@name` for an abstract one.
    pub fn display_name(&self) -> String {
        if self.inet() {
            return format!("TCP {}", crate::sys::sock::inet_text(&self.addr));
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
    /// Its names (0: deleted, the open descriptors keep it).
    pub nlink: u64,
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
    use std::os::unix::fs::OpenOptionsExt;
    // The path comes from an image: only a regular file is read (a FIFO would block, a
    // device never end), and no more of it than it holds.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() || meta.len() < len {
        return None;
    }
    let mut f = f.take(len);
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRun {
    pub pid: i32,
    pub addr: u64,
    pub len: u64,
}

impl ProcessRecord {
    /// Stopped by job control.
    pub fn stopped(&self) -> bool {
        self.stop_signal != 0
    }
}

impl SessionRecord {
    /// The XSAVE components the session's register state needs: those any thread holds
    /// in a state other than their initial one (its XSTATE_BV) and the dynamic ones (AMX
    /// tile data) any process was permitted to use. PKRU is left out: the kernel gives
    /// every process a PKRU that is not the initial state, used or not, and a CPU
    /// without protection keys gives the default back.
    pub fn xsave_components_used(&self) -> u64 {
        const XSTATE_BV: usize = 512;
        const PKRU: u64 = 1 << 9;
        let mut used = 0;
        for p in &self.processes {
            used |= p.xcomp_perm & crate::machine::XSAVE_DYNAMIC;
            for t in &p.threads {
                if let Some(bv) = t.xstate.get(XSTATE_BV..XSTATE_BV + 8) {
                    used |= u64::from_le_bytes(bv.try_into().expect("8 bytes")) & !PKRU;
                }
            }
        }
        used
    }

    pub fn memory_bytes(&self) -> u64 {
        self.page_runs.iter().map(|r| r.len).sum()
    }

    pub fn threads(&self) -> usize {
        self.processes.iter().map(|p| p.threads.len()).sum()
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

/// Limits on what a record read from an image may hold, beyond which it is taken for
/// damaged or hostile (each well above what a session has).
pub mod limits {
    /// The kernel's highest pid (PID_MAX_LIMIT on 64-bit).
    pub const PID_MAX: i32 = 1 << 22;
    /// The highest descriptor number (the kernel's hard limit on fs.nr_open).
    pub const FD_MAX: i32 = 1 << 30;
    /// Per process.
    pub const THREADS: usize = 1 << 16;
    pub const MAPS: usize = 1 << 20;
    /// The user address space on x86_64 (4-level page tables; `[vsyscall]` is the kernel's).
    pub const TASK_SIZE: u64 = 0x7fff_ffff_f000;
    /// An XSAVE area (AMX's tile data makes it about 11 KiB today).
    pub const XSAVE: usize = 1 << 16;
    /// The vDSO's code.
    pub const VDSO: usize = 1 << 20;
    /// A process's `/proc/PID/fdinfo/FD`, a command line, a path.
    pub const TEXT: usize = 1 << 20;
}

/// The signal a queued siginfo is for (its first four bytes).
pub fn signal_of(info: &[u8]) -> i32 {
    info.get(..4)
        .map_or(0, |b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// A queue of siginfos: each 128 bytes, for a signal 1..=64 other than SIGKILL (a process
/// with SIGKILL queued is dying, not carried), at most 65536.
fn signal_queue_ok(q: &[Vec<u8>]) -> bool {
    q.len() <= 1 << 16
        && q.iter().all(|i| {
            let sig = signal_of(i);
            i.len() == 128 && (1..=64).contains(&sig) && sig != libc::SIGKILL
        })
}

impl SessionRecord {
    /// Check a record read from an image before anything uses it: every id, number,
    /// address and length within what the kernel allows, every cross-reference to
    /// something the record holds, and the page runs and carried files against the page
    /// and file chunks the image holds (`pages` and `files`: each chunk's decoded length,
    /// in order). Arithmetic is checked: a record that would overflow is refused.
    pub fn validate(&self, pages: &[u64], files: &[u64]) -> Result<(), String> {
        use limits::*;
        let bad = |what: String| Err(format!("the session record: {what}"));
        let page = 4096u64;
        if self.name.len() > 256 || self.command.len() > TEXT {
            return bad("its name".into());
        }
        if !(0..=1 << 62).contains(&self.monotonic_ns) || !(0..=1 << 62).contains(&self.boottime_ns)
        {
            return bad("its clocks".into());
        }
        let m = &self.machine;
        if m.xsave.size as usize > XSAVE
            || m.xsave.components.len() > 64
            || m.xsave
                .components
                .iter()
                .any(|&(i, off, len)| i >= 64 || (off as u64 + len as u64) > m.xsave.size as u64)
            || m.vdso.len() > VDSO
            || m.hostname.len() > 64
        {
            return bad("what it says of its machine".into());
        }
        if !self.processes.iter().any(|p| p.zombie.is_none()) {
            return bad("it holds no process".into());
        }
        let mut pids = std::collections::BTreeSet::new();
        let mut tids = std::collections::BTreeSet::new();
        for p in &self.processes {
            if !(2..=PID_MAX).contains(&p.pid) || !pids.insert(p.pid) {
                return bad(format!("process id {}", p.pid));
            }
        }
        for p in &self.processes {
            let who = format!("process {} ({})", p.pid, p.comm.escape_debug());
            let id_ok = |id: i32| (1..=PID_MAX).contains(&id);
            if !(p.ppid == 0 || p.ppid == 1 || pids.contains(&p.ppid))
                || !id_ok(p.pgid)
                || !id_ok(p.sid)
                || !(p.fg_pgid == 0 || id_ok(p.fg_pgid))
            {
                return bad(format!("the parent, group or session of {who}"));
            }
            if p.comm.len() > 64
                || p.exe.len() > TEXT
                || p.cwd.len() > TEXT
                || p.root.len() > TEXT
                || p.cmdline.iter().map(String::len).sum::<usize>() > TEXT
            {
                return bad(format!("the names of {who}"));
            }
            if ![
                0,
                libc::SIGSTOP,
                libc::SIGTSTP,
                libc::SIGTTIN,
                libc::SIGTTOU,
            ]
            .contains(&p.stop_signal)
            {
                return bad(format!("the stop signal of {who}"));
            }
            if p.zombie.is_some() {
                if !p.threads.is_empty() || !p.maps.is_empty() || !p.fds.is_empty() {
                    return bad(format!("{who} is a zombie with threads, memory or files"));
                }
                continue;
            }
            if p.threads.is_empty() || p.threads.len() > THREADS {
                return bad(format!("the threads of {who}"));
            }
            for t in &p.threads {
                let ours = t.tid == p.pid || !pids.contains(&t.tid);
                if !(2..=PID_MAX).contains(&t.tid) || !ours || !tids.insert(t.tid) {
                    return bad(format!("thread {} of {who}", t.tid));
                }
                if !signal_queue_ok(&t.pending) {
                    return bad(format!("the signals queued for thread {} of {who}", t.tid));
                }
                if t.regs.len() != 27
                    || t.xstate.len() > XSAVE
                    || t.comm.len() > 64
                    || t.altstack[2] > 1 << 40
                {
                    return bad(format!("the registers of thread {} of {who}", t.tid));
                }
            }
            if !signal_queue_ok(&p.shared_pending) {
                return bad(format!("the signals queued for {who}"));
            }
            if !(p.sigactions.is_empty() || p.sigactions.len() == 64)
                || p.itimers.len() > 3
                || p.rlimits.len() > 16
                || p.timers.len() > 1 << 16
                || p.groups.len() > 1 << 16
                || p.mm.auxv.len() > 1024
                || p.mm.auxv.len() % 2 != 0
            {
                return bad(format!("the signal, timer, limit or memory state of {who}"));
            }
            let mut timer_ids = std::collections::BTreeSet::new();
            for t in &p.timers {
                let targets_a_thread = t.notify & libc::SIGEV_THREAD_ID != 0;
                if t.id < 0
                    || !timer_ids.insert(t.id)
                    || !(0..=64).contains(&t.signo)
                    || (targets_a_thread && !p.threads.iter().any(|th| th.tid == t.tid))
                {
                    return bad(format!("timer {} of {who}", t.id));
                }
            }
            if p.maps.len() > MAPS {
                return bad(format!("the mappings of {who}"));
            }
            let mut end = 0u64;
            for map in &p.maps {
                let user = map.path != "[vsyscall]";
                if map.start >= map.end
                    || map.start % page != 0
                    || map.end % page != 0
                    || map.start < end
                    || (user && map.end > TASK_SIZE)
                    || map.offset % page != 0
                    || map.perms.len() != 4
                    || !map
                        .perms
                        .chars()
                        .zip(["r-", "w-", "x-", "ps"])
                        .all(|(c, ok)| ok.contains(c))
                    || map.path.len() > TEXT
                    || map.vm & !(vm::CARRIED | vm::REFUSED) != 0
                    || (map.vm & vm::DROPPABLE != 0 && map.kind() != MapKind::Anon)
                {
                    return bad(format!("mapping {:#x}-{:#x} of {who}", map.start, map.end));
                }
                end = map.end;
            }
            let mut fds = std::collections::BTreeSet::new();
            for f in &p.fds {
                if !(0..FD_MAX).contains(&f.fd) || !fds.insert(f.fd) {
                    return bad(format!("descriptor {} of {who}", f.fd));
                }
                let fd_bad = f.target.len() > TEXT
                    || f.fdinfo.len() > TEXT
                    || f.watches.len() > 1 << 20
                    || f.tty.as_ref().is_some_and(|t| t.termios.len() > 4096)
                    || f.socket.as_ref().is_some_and(|s| s.name.len() > 108)
                    || !(OWNER_TID..=OWNER_PGRP).contains(&f.owner.0)
                    || !(0..=PID_MAX).contains(&f.owner.1)
                    || !(0..=64).contains(&f.signal);
                if fd_bad {
                    return bad(format!("descriptor {} of {who}", f.fd));
                }
            }
        }
        // One open file description is one file: every descriptor sharing one says the same
        // of it.
        let mut descs: std::collections::BTreeMap<u32, (&str, FdKind)> = Default::default();
        for f in self.processes.iter().flat_map(|p| &p.fds) {
            let this = (f.target.as_str(), f.kind);
            if *descs.entry(f.desc).or_insert(this) != this {
                return bad(format!("file description {} is two files", f.desc));
            }
        }
        // The page runs: inside the mappings of their process, and as long as the page
        // chunks together.
        let mut run_total = 0u64;
        for r in &self.page_runs {
            let end = r.addr.checked_add(r.len);
            let p = self
                .processes
                .iter()
                .find(|p| p.pid == r.pid && p.zombie.is_none());
            let inside = |p: &ProcessRecord, end: u64| {
                // A run may span adjacent mappings.
                let mut at = r.addr;
                while at < end {
                    match p.maps.iter().find(|m| m.start <= at && at < m.end) {
                        Some(m) => at = m.end,
                        None => return false,
                    }
                }
                true
            };
            match (p, end) {
                (Some(p), Some(end))
                    if r.len > 0 && r.addr % page == 0 && r.len % page == 0 && inside(p, end) => {}
                _ => {
                    return bad(format!(
                        "pages at {:#x} (+{:#x}) of process {}",
                        r.addr, r.len, r.pid
                    ));
                }
            }
            run_total = match run_total.checked_add(r.len) {
                Some(t) => t,
                None => return bad("the page runs add up to more than 2^64".into()),
            };
        }
        let chunk_total = pages.iter().try_fold(0u64, |a, &b| a.checked_add(b));
        if chunk_total != Some(run_total) {
            return bad(format!(
                "its page runs hold {run_total} bytes, its page chunks {}",
                chunk_total.map_or("more than 2^64".into(), |t| t.to_string())
            ));
        }
        // The carried files: each starts a chunk of its own, so file i is the next
        // size/CHUNK (rounded up) chunks, all full but its last.
        let chunk = crate::image::CHUNK_SIZE as u64;
        let mut next = 0usize;
        for (i, f) in self.files.iter().enumerate() {
            let hex = f.sha256.len() == 64 && f.sha256.bytes().all(|b| b.is_ascii_hexdigit());
            // Holes in order, apart, within the file.
            let mut hole_end = 0u64;
            let holes_ok = f.holes.len() <= 1 << 16
                && f.holes.iter().all(|&(at, len)| {
                    let ok = len > 0
                        && at >= hole_end
                        && at.checked_add(len).is_some_and(|end| end <= f.size);
                    hole_end = at.saturating_add(len);
                    ok
                });
            if !hex
                || !holes_ok
                || f.copies.is_empty()
                || f.copies.iter().any(|c| c.path.len() > TEXT)
            {
                return bad(format!("carried file {i}"));
            }
            let count = f.size.div_ceil(chunk);
            let Some(mine) = usize::try_from(count)
                .ok()
                .and_then(|c| files.get(next..next.checked_add(c)?))
            else {
                return bad(format!(
                    "carried file {i} needs more file chunks than the image holds"
                ));
            };
            let fits = mine.iter().enumerate().all(|(k, &len)| {
                let want = if k + 1 < mine.len() {
                    chunk
                } else {
                    f.size - chunk * (count - 1)
                };
                len == want
            });
            if !fits {
                return bad(format!("the chunks of carried file {i}"));
            }
            next += mine.len();
        }
        if next != files.len() {
            return bad(format!(
                "{} file chunks belong to no carried file",
                files.len() - next
            ));
        }
        Ok(())
    }
}
