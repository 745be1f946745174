//! The image's schema: what an image says about a session, the records the checkpoint
//! fills and the resume reads (postcard, in the image's SESSION section), and what they
//! mean. Processes, threads and signals are here; descriptors, one typed variant per kind,
//! in `fd`; mappings and the files carried for them in `memory`. Nothing here reads a
//! process or writes an image; `validate` checks a record read from an image before
//! anything uses it (an image is never trusted).

mod fd;
mod memory;
mod sysv;

pub use fd::*;
pub use memory::*;
pub use sysv::*;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub name: String,
    pub command: String,
    pub processes: Vec<ProcessRecord>,
    /// Where each run of saved memory belongs, in the order of the page chunks. A run of
    /// `PageRun::UNUSED` holds bytes no process has (pages a pre-copy read and the
    /// process wrote again before the freeze); a process's runs do not overlap.
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
    /// The SysV IPC objects of the session's own IPC namespace.
    pub sysv: SysvObjects,
    /// Open file descriptions that no process holds, only a socket's queue (sent with
    /// SCM_RIGHTS and not yet received; `SocketRecord::in_flight` says where): each as a
    /// descriptor record whose `fd` is its place in this list.
    pub in_flight: Vec<FdRecord>,
    /// An incremental image: the image it was made after, whose memory and files it
    /// refers to for what did not change since.
    pub parent: Option<ParentLink>,
    /// Runs of memory (in address order per process) that hold what the parent image
    /// has for the same process at the same place: pages the process did not write
    /// since the parent was made. (What the parent holds nothing of there is memory
    /// that was never written: zeros, or the mapped file's.)
    pub parent_runs: Vec<PageRun>,
}

/// Where an incremental image's parent is, and which image it must be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentLink {
    /// Its path: relative to the directory of the image naming it, or absolute.
    pub path: String,
    /// Its identity (`Image::id`): the SHA-256 of its section table, which holds the
    /// checksum of every section it has.
    pub id: String,
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
    pub timers: Vec<PosixTimer>,
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
    /// KSM merges all its memory (PR_SET_MEMORY_MERGE; `ksm_merge_any` in ksm_stat).
    pub ksm_merge_any: bool,
    /// What mlockall(MCL_FUTURE) set for the mappings it makes from now on: 0, or
    /// MCL_FUTURE (2), with MCL_ONFAULT (4) when so.
    pub lock_future: u32,
    /// It is a child subreaper (PR_SET_CHILD_SUBREAPER): orphans below it become its.
    pub child_subreaper: bool,
    /// /proc/PID/oom_score_adj.
    pub oom_score_adj: i32,
    /// Transparent huge pages turned off for it (PR_SET_THP_DISABLE).
    pub thp_disabled: bool,
    /// Its seccomp filters, oldest first (carried as root only).
    pub seccomp: Vec<SeccompFilter>,
    /// The signal it gets when its parent ends (PR_SET_PDEATHSIG; 0: none).
    pub pdeath_signal: i32,
    /// The controlling terminal (its device number; 0: none) and, when there is one, its
    /// foreground process group as the session sees it.
    pub ctty: u32,
    pub fg_pgid: i32,
    pub threads: Vec<ThreadRecord>,
    pub maps: Vec<MapRecord>,
    pub fds: Vec<FdRecord>,
    /// Pages (address, length) of private mappings it shares copy-on-write with its
    /// parent (the same mapping in both, the page in memory in both with the same
    /// content): the image holds them once, in the parent's pages, and a resume makes
    /// this process from its restored parent so that they are shared again.
    pub inherited: Vec<(u64, u64)>,
}

/// A POSIX timer of the process: how it notifies, and what is left of it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PosixTimer {
    pub id: i32,
    pub clock: i32,
    pub signo: i32,
    /// SIGEV_SIGNAL / SIGEV_NONE / SIGEV_THREAD, with SIGEV_THREAD_ID (4) when it targets
    /// one thread, `tid`.
    pub notify: i32,
    pub tid: i32,
    pub value: u64,
    /// The kernel's itimerspec: interval (s, ns), then time left (s, ns).
    pub spec: [u64; 4],
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
    /// How it is scheduled.
    pub sched: SchedRecord,
}

/// A seccomp filter: the flags it was installed with and its BPF program (8 bytes an
/// instruction).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompFilter {
    pub flags: u64,
    pub code: Vec<u8>,
}

/// How a thread is scheduled (`crate::task::sched`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedRecord {
    /// SCHED_OTHER (0), SCHED_FIFO (1), SCHED_RR (2), SCHED_BATCH (3), SCHED_IDLE (5).
    pub policy: u32,
    /// SCHED_FLAG_RESET_ON_FORK.
    pub reset_on_fork: bool,
    /// Its nice value (-20..=19).
    pub nice: i32,
    /// Its real-time priority (1..=99 under SCHED_FIFO and SCHED_RR, else 0).
    pub priority: u32,
    /// The CPUs it may run on (a bitmask by CPU number), when fewer than the session's
    /// daemon may; none: every one.
    pub affinity: Option<Vec<u64>>,
    /// Its I/O priority (class << 13 | level); 0: none set (it follows the nice value).
    pub ioprio: u32,
    /// Its timer slack (PR_GET_TIMERSLACK), in nanoseconds.
    pub timer_slack: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRun {
    pub pid: i32,
    pub addr: u64,
    pub len: u64,
}

impl PageRun {
    /// The `pid` of a run of the page stream that no process has (its `addr` means
    /// nothing): no process of a session has pid 0.
    pub const UNUSED: i32 = 0;
}

impl ProcessRecord {
    /// Stopped by job control.
    pub fn stopped(&self) -> bool {
        self.stop_signal != 0
    }
}

impl SessionRecord {
    /// Every pid the image's processes need in the session's pid namespace: their pids,
    /// their threads', and their groups' and sessions' (whose leaders may be gone).
    pub fn ids_in_use(&self) -> impl Iterator<Item = i32> + '_ {
        self.processes.iter().flat_map(|p| {
            [p.pid, p.pgid, p.sid]
                .into_iter()
                .chain(p.threads.iter().map(|t| t.tid))
        })
    }

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

    /// The bytes of memory the image's own page data gives its processes.
    pub fn memory_bytes(&self) -> u64 {
        self.page_runs
            .iter()
            .filter(|r| r.pid != PageRun::UNUSED)
            .map(|r| r.len)
            .sum()
    }

    /// The bytes of its page data no process has (`PageRun::UNUSED`).
    pub fn unused_bytes(&self) -> u64 {
        self.page_runs
            .iter()
            .filter(|r| r.pid == PageRun::UNUSED)
            .map(|r| r.len)
            .sum()
    }

    pub fn threads(&self) -> usize {
        self.processes.iter().map(|p| p.threads.len()).sum()
    }
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

/// Whether a description of this kind can be in flight with no process holding it: one a
/// resume makes without a holder's help (not `/dev/tty`, which a process opens itself;
/// not an epoll or inotify set, whose registrations name a holder's descriptors; not a
/// file whose content only a holder reaches: deleted while open, a memfd).
pub fn in_flight_kind_ok(object: &FdObject) -> bool {
    !matches!(
        object,
        FdObject::ControllingTty
            | FdObject::Epoll { .. }
            | FdObject::Inotify { .. }
            | FdObject::Memfd { .. }
            | FdObject::Symlink { .. }
    )
}

/// Whether a queued datagram a resume sends again goes to the socket that had it, here:
/// to its port, at the loopback or the address it is bound to (what a checkpoint accepts;
/// an image that says otherwise would have the resume send packets elsewhere).
fn datagram_stays_here(receiver: &[u8], to: &[u8]) -> bool {
    use crate::sys::sock::inet_parts;
    match (inet_parts(receiver), inet_parts(to)) {
        (Some((ip, port)), Some((to_ip, to_port))) => {
            port == to_port && (to_ip.is_loopback() || to_ip == ip)
        }
        _ => false,
    }
}

impl SessionRecord {
    /// Every descriptor record: each process's, with who holds it for messages, and the
    /// descriptions in flight that no process holds.
    pub fn all_fds(&self) -> impl Iterator<Item = (String, &FdRecord)> {
        let held = self.processes.iter().flat_map(|p| {
            p.fds.iter().map(move |f| {
                let who = format!("process {} ({}) fd {}", p.pid, p.comm.escape_debug(), f.fd);
                (who, f)
            })
        });
        let flying = self.in_flight.iter().map(|f| {
            let who = format!(
                "descriptor {} in flight ({})",
                f.fd,
                f.target.escape_debug()
            );
            (who, f)
        });
        held.chain(flying)
    }

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
        self.sysv.validate().or_else(bad)?;
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
            if p.seccomp.len() > 64
                || p.seccomp
                    .iter()
                    .any(|f| f.code.is_empty() || f.code.len() % 8 != 0 || f.code.len() > 1024 * 8)
            {
                return bad(format!("the seccomp filters of {who}"));
            }
            if !(-1000..=1000).contains(&p.oom_score_adj) || ![0, 2, 6].contains(&p.lock_future) {
                return bad(format!("the mlockall flags or OOM score of {who}"));
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
                let s = &t.sched;
                let realtime = matches!(s.policy, 1 | 2);
                if ![0, 1, 2, 3, 5].contains(&s.policy)
                    || !(-20..=19).contains(&s.nice)
                    || (realtime && !(1..=99).contains(&s.priority))
                    || (!realtime && s.priority != 0)
                    || s.ioprio >> 13 > 3
                    || s.affinity.as_ref().is_some_and(|m| m.len() > 128)
                {
                    return bad(format!("the scheduling of thread {} of {who}", t.tid));
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
                    || map.vm & !(vm::CARRIED | vm::REFUSED | vm::WRITE_TRACKED) != 0
                    || (map.vm & vm::DROPPABLE != 0 && map.kind() != MapKind::Anon)
                    || map.file_end.is_some_and(|e| {
                        e % page != 0
                            || e < map.offset
                            || e - map.offset >= map.end - map.start
                            || map.inode == 0
                            || !matches!(map.kind(), MapKind::Anon | MapKind::SharedAnon)
                            || map.vm & vm::DROPPABLE != 0
                    })
                {
                    return bad(format!("mapping {:#x}-{:#x} of {who}", map.start, map.end));
                }
                end = map.end;
            }
            // Inherited pages: of a live parent of the image, in order, within mappings
            // the parent has alike.
            let parent = self
                .processes
                .iter()
                .find(|q| q.pid == p.ppid && q.zombie.is_none());
            let mut end = 0u64;
            for &(at, len) in &p.inherited {
                let last = at.checked_add(len);
                let inside = |maps: &[MapRecord]| {
                    maps.iter()
                        .any(|m| m.start <= at && last.is_some_and(|l| l <= m.end) && inherits(m))
                };
                let alike = parent.is_some_and(|q| {
                    p.maps
                        .iter()
                        .filter(|m| m.start <= at && last.is_some_and(|l| l <= m.end))
                        .any(|m| q.maps.iter().any(|n| n.same_as(m)))
                });
                if len == 0
                    || at % page != 0
                    || len % page != 0
                    || at < end
                    || !inside(&p.maps)
                    || !alike
                {
                    return bad(format!("the pages {who} shares with its parent"));
                }
                end = at + len;
            }
            let mut fds = std::collections::BTreeSet::new();
            for f in &p.fds {
                if !(0..FD_MAX).contains(&f.fd) || !fds.insert(f.fd) {
                    return bad(format!("descriptor {} of {who}", f.fd));
                }
                let fd_bad = f.target.len() > TEXT
                    || !f.object_ok()
                    || f.locks.len() > 1 << 16
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
        let mut descs: std::collections::BTreeMap<u32, (&str, &str)> = Default::default();
        for f in self.all_fds().map(|(_, f)| f) {
            let this = (f.target.as_str(), f.kind_name());
            if *descs.entry(f.desc).or_insert(this) != this {
                return bad(format!("file description {} is two files", f.desc));
            }
        }
        // Descriptions in flight: each a kind a resume makes without its holder, each in
        // some socket's queue, where the messages that carry them are.
        if self.in_flight.len() > 1 << 16 {
            return bad("the descriptors in flight".into());
        }
        for (i, f) in self.in_flight.iter().enumerate() {
            let fd_bad = f.fd != i as i32
                || f.target.len() > TEXT
                || !f.object_ok()
                || !f.locks.is_empty()
                || f.owner.1 != 0
                || f.signal != 0
                || !crate::records::in_flight_kind_ok(&f.object);
            if fd_bad {
                return bad(format!("descriptor {i} in flight"));
            }
        }
        // Queued UDP datagrams: each with a sender that is a UDP socket of the session.
        let udp: std::collections::HashSet<u64> = self
            .all_fds()
            .filter_map(|(_, f)| f.socket())
            .filter(|s| s.inet() && !s.stream())
            .map(|s| s.inode)
            .collect();
        for (who, f) in self.all_fds() {
            let Some(s) = f.socket() else { continue };
            let udp_queue = s.inet() && !s.stream() && !s.queued.is_empty();
            if (udp_queue || !s.datagrams_from.is_empty())
                && !(udp_queue
                    && s.datagrams_from.len() == s.queued.len()
                    && s.datagrams_from.iter().all(|d| {
                        udp.contains(&d.sender)
                            && d.from.len() <= 28
                            && d.to.len() <= 28
                            && datagram_stays_here(&s.addr, &d.to)
                    }))
            {
                return bad(format!("the datagrams queued for {who}"));
            }
            let mut end = 0u64;
            let mut last_piece = None;
            for m in &s.in_flight {
                let piece = s.queued.get(m.piece as usize).map_or(0, |q| q.len() as u64);
                let ok = (m.piece as usize) < s.queued.len()
                    && (1..=253).contains(&m.descs.len())
                    && m.descs.iter().all(|d| descs.contains_key(d))
                    && m.offset.checked_add(m.len).is_some_and(|e| e <= piece)
                    && if s.stream() {
                        m.piece == 0 && m.len > 0 && m.offset >= end
                    } else {
                        m.offset == 0 && m.len == piece && last_piece.is_none_or(|l| m.piece > l)
                    };
                if !ok {
                    return bad(format!("the descriptors in flight to {who}"));
                }
                end = m.offset + m.len;
                last_piece = Some(m.piece);
            }
        }
        // An epoll registration's file, when not at its number: a description made for
        // another descriptor (not one a process opens itself).
        for f in self.processes.iter().flat_map(|p| &p.fds) {
            if let FdObject::Epoll { registrations } = &f.object
                && registrations.iter().filter_map(|r| r.desc).any(|d| {
                    descs
                        .get(&d)
                        .is_none_or(|&(_, kind)| kind == "controlling terminal")
                })
            {
                return bad(format!("the epoll registrations of descriptor {}", f.fd));
            }
        }
        // The page runs: inside the mappings of their process, and as long as the page
        // chunks together.
        let mut run_total = 0u64;
        for r in &self.page_runs {
            let end = r.addr.checked_add(r.len);
            if r.pid == PageRun::UNUSED {
                if r.len == 0 || r.len % page != 0 {
                    return bad("a run of unused page data".into());
                }
                run_total = match run_total.checked_add(r.len) {
                    Some(t) => t,
                    None => return bad("the page runs add up to more than 2^64".into()),
                };
                continue;
            }
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
        // An incremental image: its parent named, its runs of the parent's pages inside
        // their process's mappings, in address order, apart from its own runs.
        if let Some(link) = &self.parent {
            let hex = link.id.len() == 64 && link.id.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex || link.path.is_empty() || link.path.len() > TEXT || link.path.contains('\0') {
                return bad("the name of its parent image".into());
            }
        } else if !self.parent_runs.is_empty() || self.files.iter().any(|f| f.in_parent) {
            return bad("it refers to a parent image it does not name".into());
        }
        let mut own: std::collections::BTreeMap<i32, Vec<(u64, u64)>> = Default::default();
        for r in &self.page_runs {
            own.entry(r.pid).or_default().push((r.addr, r.addr + r.len));
        }
        own.remove(&PageRun::UNUSED);
        for (pid, v) in own.iter_mut() {
            v.sort_unstable();
            // A process's runs apart: which of two would a resume write last?
            if v.windows(2).any(|w| w[1].0 < w[0].1) {
                return bad(format!("pages of process {pid} given twice"));
            }
        }
        let mut last: Option<(i32, u64)> = None;
        let mut done = std::collections::BTreeSet::new();
        for r in &self.parent_runs {
            // A process's runs together (each new process is one not seen before).
            if last.is_none_or(|(pid, _)| pid != r.pid) && !done.insert(r.pid) {
                return bad(format!("the parent's pages of process {}", r.pid));
            }
            let p = self
                .processes
                .iter()
                .find(|p| p.pid == r.pid && p.zombie.is_none());
            let end = r.addr.checked_add(r.len);
            let in_order = last.is_none_or(|(pid, e)| pid != r.pid || r.addr >= e);
            let ok = match (p, end) {
                (Some(p), Some(end)) => {
                    r.len > 0
                        && r.addr % page == 0
                        && r.len % page == 0
                        && in_order
                        && {
                            // (Across adjacent mappings, as a run of its own pages may.)
                            let mut at = r.addr;
                            while let Some(m) = p.maps.iter().find(|m| m.start <= at && at < m.end)
                            {
                                at = m.end;
                                if at >= end {
                                    break;
                                }
                            }
                            at >= end
                        }
                        && own.get(&r.pid).is_none_or(|v| {
                            let i = v.partition_point(|&(_, e)| e <= r.addr);
                            v.get(i).is_none_or(|&(s, _)| s >= end)
                        })
                }
                _ => false,
            };
            if !ok {
                return bad(format!(
                    "the parent's pages at {:#x} (+{:#x}) of process {}",
                    r.addr, r.len, r.pid
                ));
            }
            last = Some((r.pid, r.addr + r.len));
        }
        // Whole pages in every chunk, as a checkpoint writes them: a resume writes pages
        // into some mappings whole (`task::memory::pages::PageWriter`).
        if let Some(i) = pages.iter().position(|&l| l % page != 0) {
            return bad(format!("page chunk {i} does not hold whole pages"));
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
            if f.in_parent {
                continue;
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
