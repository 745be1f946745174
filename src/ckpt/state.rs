//! Reading a frozen session's state into a `SessionRecord`: the process tree with the ids
//! the session sees, each thread's registers, signal state and what only the process can
//! tell (injected calls), mappings, descriptors with their kinds' state (pipes' and
//! sockets' queues read without consuming them, ptys' queues taken out to be put back),
//! and refusals, by name, of what a resume could not bring back.
//!
//! This runs in the session's daemon (`hold`), the tracer of the frozen session: every
//! change it makes to the session (a thread's registers and mask for an injected call, a
//! process made dumpable, a pty's queue read out) is undone by it before the session goes
//! on, so the death of the dump process, which only reads memory and writes the image,
//! cannot leave the session changed.

use super::freeze::Frozen;
use super::inside::MadeDumpable;
use super::procfs;
use super::record::*;
use crate::sys;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

/// The socket options a TCP socket gets back.
const TCP_OPTIONS: &[(i32, i32)] = &[
    (libc::SOL_SOCKET, libc::SO_REUSEADDR),
    (libc::SOL_SOCKET, libc::SO_REUSEPORT),
    (libc::SOL_SOCKET, libc::SO_KEEPALIVE),
    (libc::IPPROTO_TCP, libc::TCP_NODELAY),
    (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY),
];

fn read_socket(pid: i32, fd: i32, target: &str) -> io::Result<SocketRecord> {
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
    // Kernel objects other than files name themselves `KIND:[INODE]` (a namespace, opened
    // from /proc/PID/ns): nothing a path leads to again.
    if !link.starts_with('/') {
        return (FdKind::Other, None);
    }
    // Through the magic link: the very file the process holds, even if renamed or deleted.
    let Ok(m) = std::fs::metadata(path) else {
        return (FdKind::Other, None);
    };
    // A process's own files in /proc (its status, maps, fd directory) name it by a pid in
    // one pid namespace's /proc: opened again by that path after a resume, they would be
    // another process's or nobody's. (The system's, /proc/meminfo and the like, reopen.)
    if sys::is_procfs(path) && procfs::names_a_process(link) {
        return (FdKind::Other, None);
    }
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
        nlink: m.nlink(),
        sha256: None,
    });
    (kind, identity)
}

fn read(path: String) -> io::Result<String> {
    std::fs::read_to_string(path)
}

fn link(path: String) -> io::Result<String> {
    std::fs::read_link(path).map(|p| p.display().to_string())
}

/// What every record holds, a zombie's too: the ids as the session sees them and the
/// name; everything else empty.
fn base_record(pid: i32, status: &str) -> ProcessRecord {
    // The parent's id as the session sees it.
    let host_ppid = procfs::status_last(status, "PPid:").unwrap_or(0);
    ProcessRecord {
        pid: procfs::status_last(status, "NSpid:").unwrap_or(pid),
        ppid: read(format!("/proc/{host_ppid}/status"))
            .ok()
            .and_then(|s| procfs::status_last(&s, "NSpid:"))
            .unwrap_or(0),
        pgid: procfs::status_last(status, "NSpgid:").unwrap_or(0),
        sid: procfs::status_last(status, "NSsid:").unwrap_or(0),
        comm: read(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim_end()
            .to_string(),
        cmdline: Vec::new(),
        exe: String::new(),
        cwd: String::new(),
        stop_signal: 0,
        zombie: None,
        shared_pending: Vec::new(),
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
        uids: procfs::status_words::<4>(status, "Uid:", false).map(|v| v as u32),
        gids: procfs::status_words::<4>(status, "Gid:", false).map(|v| v as u32),
        groups: procfs::status_list(status, "Groups:"),
        no_new_privs: false,
        xcomp_perm: 0,
        pdeath_signal: 0,
        ctty: 0,
        fg_pgid: 0,
        threads: Vec::new(),
        maps: Vec::new(),
        fds: Vec::new(),
    }
}

/// The memory layout fields of /proc/PID/stat (fields 26-28, 45-51) and the auxv.
fn mm_record(pid: i32, stat: &[u64]) -> MmRecord {
    let f = |n: usize| stat.get(n - 3).copied().unwrap_or(0);
    let auxv = procfs::auxv_words(&std::fs::read(format!("/proc/{pid}/auxv")).unwrap_or_default());
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

fn process_record(
    pid: i32,
    tids: &[i32],
    stop_signal: i32,
    held: &dyn Fn(i32) -> io::Result<Option<sys::trace::SigInfo>>,
    made_dumpable: &mut MadeDumpable,
) -> io::Result<ProcessRecord> {
    let status = read(format!("/proc/{pid}/status"))?;
    // Whatever cannot be read fails the checkpoint naming the process and what: a record
    // with a default in its place would resume as something else.
    let who = format!(
        "process {} ({})",
        procfs::status_last(&status, "NSpid:").unwrap_or(pid),
        procfs::fdinfo_field(&status, "Name:")
    );
    let fail = |what: &str, e: &dyn std::fmt::Display| -> io::Error {
        io::Error::other(format!("{who}: cannot read {what}: {e}"))
    };
    let stat = procfs::stat_fields(&read(format!("/proc/{pid}/stat"))?)
        .ok_or_else(|| fail("its stat", &"unparsable"))?;
    let cmdline = read(format!("/proc/{pid}/cmdline"))
        .map_err(|e| fail("its command line", &e))?
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let mut threads = Vec::new();
    for &tid in tids {
        let thread = |what: &str| format!("thread {tid}'s {what}");
        let tstatus = read(format!("/proc/{pid}/task/{tid}/status"))
            .map_err(|e| fail(&thread("status"), &e))?;
        threads.push(ThreadRecord {
            tid: procfs::status_last(&tstatus, "NSpid:").unwrap_or(tid),
            comm: read(format!("/proc/{pid}/task/{tid}/comm"))
                .map_err(|e| fail(&thread("name"), &e))?
                .trim_end_matches('\n')
                .to_string(),
            regs: sys::ptrace_getregs(tid)
                .map_err(|e| fail(&thread("registers"), &e))?
                .to_vec(),
            xstate: sys::ptrace_get_xstate(tid).map_err(|e| fail(&thread("XSAVE state"), &e))?,
            // A kernel without the request (before 5.13) has no rseq to carry.
            rseq: match sys::ptrace_get_rseq(tid) {
                Ok(r) => r,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL)) => None,
                Err(e) => return Err(fail(&thread("rseq registration"), &e)),
            },
            blocked_signals: procfs::status_hex(&tstatus, "SigBlk:"),
            pending: {
                // The signal the freeze caught it on its way to comes first: it was
                // taken from a queue already.
                let mut q = Vec::new();
                if let Some(info) = held(tid).map_err(|e| fail(&thread("signal on its way"), &e))? {
                    q.push(info.to_vec());
                }
                for i in sys::trace::ptrace_peek_siginfo(tid, false)
                    .map_err(|e| fail(&thread("queued signals"), &e))?
                {
                    q.push(i.to_vec());
                }
                q
            },
            clear_child_tid: 0,
            altstack: [0, libc::SS_DISABLE as u64, 0],
            robust_list: sys::trace::get_robust_list(tid)
                .map_err(|e| fail(&thread("robust futex list"), &e))?,
        });
    }
    // smaps: the maps lines, and each mapping's flags (madvise, mlock, mseal, the open
    // mode of a shared file).
    let smaps = read(format!("/proc/{pid}/smaps")).map_err(|e| fail("its mappings", &e))?;
    let maps: Vec<MapRecord> = procfs::parse_smaps(&smaps)
        .ok_or_else(|| fail("its mappings", &"an smaps text that does not parse"))?;
    // What only the process can tell, by injected calls (after the registers are read).
    let inside = super::inside::read_inside(pid, tids, &exec_maps(&maps), made_dumpable)
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
    // From /proc (prlimit on another user's process needs CAP_SYS_RESOURCE, which even
    // root may lack).
    let rlimits = procfs::parse_limits(&read(format!("/proc/{pid}/limits"))?)
        .ok_or_else(|| io::Error::other(format!("unreadable /proc/{pid}/limits")))?;
    let mut fds = Vec::new();
    {
        let dir = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map_err(|e| fail("its descriptors", &e))?;
        let pidfd = sys::trace::pidfd_open(pid).map_err(|e| fail("a pidfd of it", &e))?;
        for e in dir {
            let e = e.map_err(|e| fail("its descriptors", &e))?;
            let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let fd_what = |what: &str| format!("{what} of fd {fd}");
            let info = read(format!("/proc/{pid}/fdinfo/{fd}"))
                .map_err(|e| fail(&fd_what("the fdinfo"), &e))?;
            let (flags, pos) = procfs::fdinfo_flags_and_pos(&info);
            let fd_path = format!("/proc/{pid}/fd/{fd}");
            let target = link(fd_path.clone()).map_err(|e| fail(&fd_what("the target"), &e))?;
            let (kind, identity) = fd_kind_and_identity(&target, &fd_path);
            let (queued, pipe_size) = if kind == FdKind::Pipe {
                sys::peek_pipe(pid, fd).map_err(|e| fail(&fd_what("the queue"), &e))?
            } else {
                (Vec::new(), 0)
            };
            let tty = if kind == FdKind::CharDevice && target.starts_with("/dev/pts/") {
                let (termios, size) = sys::peek_tty(pid, fd)
                    .map_err(|e| fail(&fd_what("the terminal settings"), &e))?;
                Some(TtyRecord {
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
                Some(read_socket(pid, fd, &target)?)
            } else {
                None
            };
            let watches = if target == "anon_inode:inotify" {
                procfs::parse_watches(&info)
            } else {
                Vec::new()
            };
            // (The owner in the host's pids: `translate_owners` gives the session's.)
            let (owner, signal) = sys::trace::fd_owner(pidfd.as_fd(), fd)
                .map_err(|e| fail(&fd_what("the owner (F_GETOWN_EX)"), &e))?;
            fds.push(FdRecord {
                fd,
                desc: 0,
                target,
                tty,
                socket,
                watches,
                flags,
                pos,
                kind,
                identity,
                fdinfo: info.clone(),
                queued,
                pipe_size,
                owner,
                signal,
            });
        }
    }
    fds.sort_by_key(|f| f.fd);
    let [cap_inh] = procfs::status_words::<1>(&status, "CapInh:", true);
    let [cap_prm] = procfs::status_words::<1>(&status, "CapPrm:", true);
    let [cap_eff] = procfs::status_words::<1>(&status, "CapEff:", true);
    let [cap_bnd] = procfs::status_words::<1>(&status, "CapBnd:", true);
    let [cap_amb] = procfs::status_words::<1>(&status, "CapAmb:", true);
    if inside.securebits != 0 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "process {} ({}) has securebits {:#x} set, which this version cannot carry",
                procfs::status_last(&status, "NSpid:").unwrap_or(pid),
                procfs::fdinfo_field(&status, "Name:"),
                inside.securebits
            ),
        ));
    }
    let personality = read(format!("/proc/{pid}/personality"))
        .ok()
        .and_then(|p| u64::from_str_radix(p.trim(), 16).ok())
        .unwrap_or(0);
    Ok(ProcessRecord {
        cmdline,
        exe: link(format!("/proc/{pid}/exe")).map_err(|e| fail("its executable", &e))?,
        cwd: link(format!("/proc/{pid}/cwd")).map_err(|e| fail("its working directory", &e))?,
        root: link(format!("/proc/{pid}/root")).map_err(|e| fail("its root", &e))?,
        stop_signal,
        shared_pending: sys::trace::ptrace_peek_siginfo(tids[0], true)
            .map_err(|e| fail("its queued signals", &e))?
            .into_iter()
            .map(|i| i.to_vec())
            .collect(),
        ignored_signals: procfs::status_hex(&status, "SigIgn:"),
        caught_signals: procfs::status_hex(&status, "SigCgt:"),
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
        no_new_privs: procfs::status_words::<1>(&status, "NoNewPrivs:", false)[0] != 0,
        xcomp_perm: inside.xcomp_perm,
        pdeath_signal: inside.pdeath_signal,
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

/// Refuse, before anything is written, what a resume could not bring back: the checkpoint
/// fails naming the process, the descriptor and its kind, and the session goes on. (An
/// `Unsupported` error: the dumper words it as such.)
/// A process under seccomp (a sandboxed helper, like man-db's) is refused: its filter
/// cannot be read without privilege, and resumed without it, the program would run with
/// its sandbox silently gone.
fn check_no_seccomp(host_pid: i32, p: &ProcessRecord) -> io::Result<()> {
    let status = read(format!("/proc/{host_pid}/status"))?;
    match procfs::status_last(&status, "Seccomp:") {
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

/// What a descriptor of a kind crterm cannot carry is, for the refusal.
fn other_kind(target: &str) -> String {
    const NAMESPACES: [&str; 9] = [
        "cgroup",
        "ipc",
        "mnt",
        "net",
        "pid",
        "time",
        "user",
        "uts",
        "pid_for_children",
    ];
    if procfs::names_a_process(target) {
        return "a process's file in /proc".to_string();
    }
    match target.split_once(":[") {
        Some((ns, _)) if NAMESPACES.contains(&ns) => {
            format!("a namespace file ({ns}, opened from /proc/PID/ns)")
        }
        _ => "a file of a kind crterm cannot carry".to_string(),
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
            // Unlinked from this path, it still has a name elsewhere (a hard link), which
            // nothing records: made again unnamed, it would no longer be that file.
            FdKind::File
                if f.target.ends_with(" (deleted)")
                    && f.identity.as_ref().is_some_and(|i| i.nlink > 0) =>
            {
                Some(
                    "a file removed from this path that still has another name (a hard link)"
                        .to_string(),
                )
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
            FdKind::Other => Some(other_kind(&f.target)),
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
    if procfs::names_a_process(&p.cwd) {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "process {} ({}) works in a process's directory in /proc ({}), which this version cannot carry",
                p.pid, p.comm, p.cwd
            ),
        ));
    }
    // SIGKILL cannot be blocked or held back: a process with it queued is on its way out.
    let queued = p
        .shared_pending
        .iter()
        .chain(p.threads.iter().flat_map(|t| &t.pending));
    if queued
        .into_iter()
        .any(|i| super::record::signal_of(i) == libc::SIGKILL)
    {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "process {} ({}) is being killed (SIGKILL is queued for it)",
                p.pid, p.comm
            ),
        ));
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

/// Descriptors' owners (who gets SIGIO and SIGURG) in the session's ids: a thread, a
/// process, a process group of the session, or refused (one outside would be sent
/// signals by a process the resume makes anew, or by none).
fn translate_owners(procs: &mut [ProcessRecord], tasks: &[(i32, Vec<i32>)]) -> io::Result<()> {
    use super::record::{OWNER_PGRP, OWNER_PID, OWNER_TID};
    let mut tids = std::collections::HashMap::new();
    let mut pids = std::collections::HashMap::new();
    let mut groups = std::collections::HashMap::new();
    for (p, (host, host_tids)) in procs.iter().zip(tasks) {
        pids.insert(*host, p.pid);
        for (t, h) in p.threads.iter().zip(host_tids) {
            tids.insert(*h, t.tid);
        }
        let host_pgid = read(format!("/proc/{host}/stat"))
            .ok()
            .and_then(|s| procfs::stat_fields(&s))
            .and_then(|f| f.get(2).copied());
        if let Some(g) = host_pgid {
            groups.insert(g as i32, p.pgid);
        }
    }
    for p in procs.iter_mut() {
        let (pid, comm) = (p.pid, p.comm.clone());
        for f in &mut p.fds {
            let (kind, id) = f.owner;
            if id == 0 {
                continue;
            }
            let ours = match kind {
                OWNER_TID => tids.get(&id),
                OWNER_PID => pids.get(&id),
                OWNER_PGRP => groups.get(&id),
                _ => None,
            };
            match ours {
                Some(&ours) => f.owner = (kind, ours),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!(
                            "process {pid} ({comm}) holds fd {}, {}, whose SIGIO goes to {} {id} outside the session, which this version cannot carry",
                            f.fd,
                            f.target,
                            match kind {
                                OWNER_TID => "thread",
                                OWNER_PGRP => "process group",
                                _ => "process",
                            }
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Refuse processes (not threads of one) that share their memory, descriptor table,
/// file-system context or signal handlers (clone with CLONE_VM, CLONE_FILES, CLONE_FS,
/// CLONE_SIGHAND without CLONE_THREAD; a vfork child before it runs another program): a
/// resume would make each its own. `procs[i]` is host pid `hosts[i]`. Sorted by kcmp's
/// order, sharers are neighbours: n log n comparisons, not n².
fn check_unshared(procs: &[ProcessRecord], hosts: &[i32]) -> io::Result<()> {
    use sys::trace::{Shared, kcmp_order};
    for (what, name) in [
        (
            Shared::Vm,
            "their memory (CLONE_VM: a vfork child that has not run another program yet, or a clone)",
        ),
        (Shared::Sighand, "their signal handlers (CLONE_SIGHAND)"),
        (Shared::Files, "one descriptor table (CLONE_FILES)"),
        (
            Shared::Fs,
            "their working directory, root and umask (CLONE_FS)",
        ),
    ] {
        // Each can be compared (an error in the sort would make its order inconsistent).
        for &h in hosts {
            kcmp_order(h, h, what).map_err(|e| {
                io::Error::other(format!("comparing the session's processes (kcmp): {e}"))
            })?;
        }
        let mut order: Vec<usize> = (0..hosts.len()).collect();
        let mut failed = None;
        order.sort_by(|&a, &b| {
            kcmp_order(hosts[a], hosts[b], what).unwrap_or_else(|e| {
                failed.get_or_insert(e);
                std::cmp::Ordering::Equal
            })
        });
        if let Some(e) = failed {
            return Err(io::Error::other(format!(
                "comparing the session's processes (kcmp): {e}"
            )));
        }
        for w in order.windows(2) {
            let (a, b) = (&procs[w[0]], &procs[w[1]]);
            if kcmp_order(hosts[w[0]], hosts[w[1]], what)? == std::cmp::Ordering::Equal {
                let (a, b) = if a.pid < b.pid { (a, b) } else { (b, a) };
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "process {} ({}) and process {} ({}) share {name}, which this version cannot carry",
                        a.pid, a.comm, b.pid, b.comm
                    ),
                ));
            }
        }
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

/// What a checkpoint took out of the session's ptys (a pty's queues cannot be peeked): keys
/// typed and not yet read, and output a master's holder has not read yet. `put_back`
/// writes them back, in order, before the session goes on (dropping does it too), so a
/// checkpoint that fails or goes on leaves the queues as they were.
pub struct TakenQueues {
    /// (pty number, its master: our copy, or the daemon's own for pty 0, typed, output)
    ptys: Vec<(u32, OwnedFd, Vec<u8>, Vec<u8>)>,
}

impl TakenQueues {
    /// Typed input into the master, output through the slave as it was (OPOST off: it
    /// was processed when it was first written).
    pub fn put_back(&mut self) {
        for (_, master, typed, output) in self.ptys.drain(..) {
            if !typed.is_empty() {
                let _ = sys::write_all(master.as_fd(), &typed);
            }
            if !output.is_empty()
                && let Ok(peer) = sys::pty_peer(master.as_fd())
            {
                let _ = sys::write_as_output(peer.as_fd(), &output);
            }
        }
    }

    /// Forget them: the session ends with the checkpoint (they are in the image).
    pub fn forget(&mut self) {
        self.ptys.clear();
    }
}

impl Drop for TakenQueues {
    fn drop(&mut self) {
        self.put_back();
    }
}

/// Take the bytes queued in the session's ptys out while the session is frozen, into the
/// record: through each pty master the session holds (screen's, tmux's) and the daemon's
/// own (`own_master`, pty 0), the output its holder has not read yet, and the keys typed
/// at its slave and not read (a terminal in raw mode only: in canonical mode a partial line
/// cannot be read out, and reading the complete lines before it would reorder them when put
/// back). Only ptys whose master is at hand are touched: what is taken must go back.
pub fn take_pty_queues(
    record: &mut SessionRecord,
    hosts: &[i32],
    own_master: Option<OwnedFd>,
) -> io::Result<TakenQueues> {
    let mut taken = TakenQueues { ptys: Vec::new() };
    if let Some(m) = own_master {
        taken.ptys.push((0, m, Vec::new(), Vec::new()));
    }
    let live: Vec<usize> = (0..record.processes.len())
        .filter(|&i| record.processes[i].zombie.is_none())
        .collect();
    // Output through the masters the session holds.
    for (&pi, &host) in live.iter().zip(hosts) {
        let p = &mut record.processes[pi];
        let who = format!("process {} ({})", p.pid, p.comm);
        for f in &mut p.fds {
            let Some(n) = f.pty_index() else { continue };
            let Some(tty) = f.tty.as_mut() else { continue };
            if taken.ptys.iter().any(|p| p.0 == n) {
                continue;
            }
            let master = sys::trace::copy_fd_of(host, f.fd).map_err(|e| {
                io::Error::other(format!("{who}: cannot reach the master of pty {n}: {e}"))
            })?;
            let (output, failed) = read_pty_output(master.as_fd(), tty.packet);
            tty.output = output.clone();
            // What was read goes back whatever happens next.
            taken.ptys.push((n, master, Vec::new(), output));
            if let Some(e) = failed {
                return Err(io::Error::other(format!(
                    "{who}: the output waiting in pty {n}: {e}"
                )));
            }
        }
    }
    // Typed input at the slaves of those ptys, once per pty.
    let mut seen = std::collections::HashSet::<u32>::new();
    for (&pi, &host) in live.iter().zip(hosts) {
        for f in &mut record.processes[pi].fds {
            if f.kind != FdKind::CharDevice {
                continue;
            }
            let Some(n) = f
                .target
                .strip_prefix("/dev/pts/")
                .and_then(|n| n.parse().ok())
            else {
                continue;
            };
            let Some(tty) = f.tty.as_mut() else { continue };
            let Some(p) = taken.ptys.iter_mut().find(|p| p.0 == n) else {
                continue;
            };
            if !seen.insert(n) {
                continue;
            }
            let typed = sys::take_typed_input(host, f.fd)
                .map_err(|e| io::Error::other(format!("the keys typed at pty {n}: {e}")))?;
            tty.typed = typed.clone();
            p.2 = typed;
        }
    }
    super::hooks::fail_at("queues")?;
    Ok(taken)
}

/// What a pty's programs wrote and its master's holder has not read yet (consumed: put it
/// back with `TakenQueues::put_back`), and why it could not all be read. In packet mode
/// each read starts with a status byte.
fn read_pty_output(master: std::os::fd::BorrowedFd, packet: bool) -> (Vec<u8>, Option<io::Error>) {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    while sys::readable(master) {
        if out.len() >= 16 << 20 {
            return (out, Some(io::Error::other("more than 16 MiB")));
        }
        match sys::read(master, &mut buf) {
            Ok(0) => break,
            // No process holds the slave: nothing more will come.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return (out, Some(e)),
            Ok(n) if packet => {
                if buf[0] == 0 {
                    out.extend_from_slice(&buf[1..n]);
                }
            }
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    (out, None)
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
            .and_then(|st| procfs::status_last(&st, "NSpid:"))
            .unwrap_or(*pid);
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for e in dir.flatten() {
            let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let target = link(format!("/proc/{pid}/fd/{fd}")).unwrap_or_default();
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

/// A process's mappings as the injector looks for code.
fn exec_maps(maps: &[MapRecord]) -> Vec<super::inside::CodeMap> {
    maps.iter()
        .map(|m| (m.start, m.end, m.executable(), m.path.clone()))
        .collect()
}

/// What the daemon knows of the session it checkpoints.
#[derive(Debug, Clone)]
pub struct About {
    pub name: String,
    pub command: String,
    /// Started with `--cpu baseline`.
    pub cpu_baseline: bool,
    /// The session runs in a user namespace mapping this (uid, gid) to themselves.
    pub user_namespace: Option<(u32, u32)>,
}

/// The state of a frozen session: its record (without the memory and files the dump
/// process adds) and the host pid of each of its live processes, in record order.
pub struct SessionState {
    pub record: SessionRecord,
    pub hosts: Vec<i32>,
}

/// Read the frozen session's state, refusing by name anything a resume could not bring
/// back (before any page is read). Processes that were not dumpable are made so, noted in
/// `made_dumpable`, which the caller undoes before the session goes on.
pub fn read_session(
    frozen: &Frozen,
    about: &About,
    made_dumpable: &mut MadeDumpable,
) -> io::Result<SessionState> {
    let mut record = SessionRecord {
        name: about.name.clone(),
        command: about.command.clone(),
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
        user_namespace: about.user_namespace,
    };
    let tasks = frozen.tasks();
    // The session's clocks: the host's plus its time namespace's offsets.
    if let Some((pid, _)) = tasks.first() {
        let (mono, boot) = sys::time_offsets(*pid);
        record.monotonic_ns = sys::clock_ns(libc::CLOCK_MONOTONIC) + mono;
        record.boottime_ns = sys::clock_ns(libc::CLOCK_BOOTTIME) + boot;
    }
    for &pid in frozen.zombies() {
        let z = match zombie_record(pid) {
            Ok(z) => z,
            // Reaped meanwhile (by the init, whose orphans it reaps as it runs on).
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io::Error::other(format!("reading zombie {pid}: {e}"))),
        };
        let status = z.zombie.unwrap_or(0);
        if status & 0x7f != 0 && status & 0x80 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "process {} ({}) is a zombie whose core was dumped, a status a resume cannot make again without dumping a core",
                    z.pid, z.comm
                ),
            ));
        }
        record.processes.push(z);
    }
    let first_live = record.processes.len();
    // Host pid -> the session's pid, for ids the kernel gives in the host's numbers.
    let mut host_to_ns = std::collections::HashMap::new();
    for (pid, _) in &tasks {
        if let Ok(st) = read(format!("/proc/{pid}/status"))
            && let Some(ns) = procfs::status_last(&st, "NSpid:")
        {
            host_to_ns.insert(*pid, ns);
        }
    }
    let mut hosts = Vec::new();
    for (pid, tids) in &tasks {
        let held = |tid| frozen.held_signal(tid);
        let mut p = process_record(*pid, tids, frozen.stop_signal(*pid), &held, made_dumpable)?;
        check_carriable(&p)?;
        check_no_seccomp(*pid, &p)?;
        p.fg_pgid = if p.fg_pgid > 0 {
            host_to_ns.get(&p.fg_pgid).copied().unwrap_or(0)
        } else {
            0
        };
        hosts.push(*pid);
        record.processes.push(p);
    }
    check_unshared(&record.processes[first_live..], &hosts)?;
    translate_owners(&mut record.processes[first_live..], &tasks)?;
    if let (Some((pid, tids)), Some(p)) = (tasks.first(), record.processes.get(first_live)) {
        let ns = super::inside::session_namespaces(*pid, tids, &exec_maps(&p.maps))
            .map_err(|e| io::Error::other(format!("asking the session's namespaces: {e}")))?;
        check_sysv_objects(&ns.sysv)?;
        record.machine.hostname = ns.hostname;
    }
    read_sockets(&mut record, &hosts)?;
    find_watched_paths(&mut record)?;
    number_descriptions(&mut record, &hosts)?;
    // What a resume of this version could not bring back is refused now, not at resume.
    crate::restore::check_supported(&record)
        .map_err(|e| io::Error::new(io::ErrorKind::Unsupported, format!("{e:#}")))?;
    Ok(SessionState { record, hosts })
}
