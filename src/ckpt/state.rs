//! Reading a frozen session's state into a `SessionRecord`: each process's record put
//! together from its kinds' readers (`crate::task`: ids and tree, threads, signals,
//! timers, memory; `crate::fds`: descriptors; `inside`: what only the process can tell),
//! and the refusals, by name, of what a resume could not bring back.
//!
//! This runs in the session's daemon (`hold`), the tracer of the frozen session: every
//! change it makes to the session (a thread's registers and mask for an injected call, a
//! process made dumpable, a pty's queue read out) is undone by it before the session goes
//! on, so the death of the dump process, which only reads memory and writes the image,
//! cannot leave the session changed.

use super::freeze::Frozen;
use super::inside::MadeDumpable;
use super::procfs;
use crate::records::*;
use crate::sys;
use crate::task::{memory, signals, threads, timers, tree};
use std::io;
use std::os::fd::AsFd;

fn read(path: String) -> io::Result<String> {
    std::fs::read_to_string(path)
}

fn link(path: String) -> io::Result<String> {
    std::fs::read_link(path).map(|p| p.display().to_string())
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
        threads.push(
            threads::read(pid, tid, held)
                .map_err(|e| io::Error::other(format!("{who}: cannot read {e}")))?,
        );
    }
    // smaps: the maps lines, and each mapping's flags (madvise, mlock, mseal, the open
    // mode of a shared file).
    let maps = memory::read_maps(pid).map_err(|e| fail("its mappings", &e))?;
    // What only the process can tell, by injected calls (after the registers are read).
    let inside = super::inside::read_inside(pid, tids, &exec_maps(&maps), made_dumpable)
        .map_err(|e| io::Error::other(format!("reading process {pid}'s signal handlers: {e}")))?;
    for (t, (ctid, ss, slack)) in threads.iter_mut().zip(&inside.threads) {
        t.clear_child_tid = *ctid;
        t.altstack = *ss;
        t.sched.timer_slack = *slack;
    }
    let mut timers = inside.timers;
    let session_tids: Vec<i32> = threads.iter().map(|t| t.tid).collect();
    timers::in_session_tids(&mut timers, tids, &session_tids);
    let mut mm = memory::read_mm(pid, &stat).map_err(|e| fail("its memory layout", &e))?;
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
            fds.push(crate::fds::read(pid, fd, pidfd.as_fd(), &who)?);
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
        .map_err(|e| fail("its personality", &e))
        .and_then(|p| u64::from_str_radix(p.trim(), 16).map_err(|e| fail("its personality", &e)))?;
    Ok(ProcessRecord {
        cmdline,
        exe: link(format!("/proc/{pid}/exe")).map_err(|e| fail("its executable", &e))?,
        cwd: link(format!("/proc/{pid}/cwd")).map_err(|e| fail("its working directory", &e))?,
        root: link(format!("/proc/{pid}/root")).map_err(|e| fail("its root", &e))?,
        stop_signal,
        shared_pending: signals::read_shared_queue(tids[0])
            .map_err(|e| fail("its queued signals", &e))?,
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
            .ok_or_else(|| fail("its umask", &"not in its status"))?,
        personality,
        dumpable: inside.dumpable,
        rlimits,
        caps: [cap_inh, cap_prm, cap_eff, cap_bnd, cap_amb],
        no_new_privs: procfs::status_words::<1>(&status, "NoNewPrivs:", false)[0] != 0,
        xcomp_perm: inside.xcomp_perm,
        lock_future: inside.lock_future,
        child_subreaper: inside.child_subreaper,
        oom_score_adj: read(format!("/proc/{pid}/oom_score_adj"))
            .map_err(|e| fail("its OOM score adjustment", &e))
            .and_then(|v| {
                v.trim()
                    .parse()
                    .map_err(|e| fail("its OOM score adjustment", &e))
            })?,
        thp_disabled: inside.thp_disabled,
        pdeath_signal: inside.pdeath_signal,
        ksm_merge_any: memory::read_ksm_merge_any(pid).map_err(|e| fail("its KSM state", &e))?,
        // Field 7; the foreground group (field 8) is a host id, translated by the caller.
        ctty: stat.get(4).copied().unwrap_or(0) as u32,
        fg_pgid: stat.get(5).copied().unwrap_or(0) as i64 as i32,
        threads,
        maps,
        fds,
        ..tree::read_base(pid, &status)?
    })
}

/// Refuse, before anything is written, what a resume could not bring back: the checkpoint
/// fails naming the process, the descriptor and its kind, and the session goes on. (An
/// `Unsupported` error: the dumper words it as such.)
fn check_carriable(p: &ProcessRecord) -> io::Result<()> {
    // What it may set of its scheduling: CAP_SYS_NICE counts only in a root session.
    const CAP_SYS_NICE: u64 = 1 << 23;
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    crate::task::sched::check(p, root && p.caps[2] & CAP_SYS_NICE != 0)?;
    // SAFETY: geteuid cannot fail.
    if p.ksm_merge_any && unsafe { libc::geteuid() } != 0 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "process {} ({}) has KSM merging all its memory (PR_SET_MEMORY_MERGE), which only a privileged user can set again, so this version cannot carry it here",
                p.pid, p.comm
            ),
        ));
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
        .any(|i| crate::records::signal_of(i) == libc::SIGKILL)
    {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "process {} ({}) is being killed (SIGKILL is queued for it)",
                p.pid, p.comm
            ),
        ));
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
pub(crate) fn exec_maps(maps: &[MapRecord]) -> Vec<super::inside::CodeMap> {
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
    tracked: &dyn Fn(i32) -> bool,
    sysv: crate::sysv::Reader,
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
        sysv: SysvObjects::default(),
        in_flight: Vec::new(),
        parent: None,
        parent_runs: Vec::new(),
    };
    let tasks = frozen.tasks();
    // The session's clocks: the host's plus its time namespace's offsets.
    if let Some((pid, _)) = tasks.first() {
        let (mono, boot) = sys::time_offsets(*pid);
        record.monotonic_ns = sys::clock_ns(libc::CLOCK_MONOTONIC) + mono;
        record.boottime_ns = sys::clock_ns(libc::CLOCK_BOOTTIME) + boot;
    }
    for &pid in frozen.zombies() {
        let z = match tree::read_zombie(pid) {
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
        // Memory registered for write-protection is crterm's own tracking only in a
        // process it tracks; anywhere else it is the program's userfaultfd: refused.
        if !tracked(*pid) {
            for m in p.maps.iter_mut().filter(|m| m.vm & vm::WRITE_TRACKED != 0) {
                m.vm = (m.vm & !vm::WRITE_TRACKED) | vm::USERFAULT;
            }
        }
        check_carriable(&p)?;
        p.seccomp = crate::task::seccomp::read(*pid, tids, &p)?;
        p.fg_pgid = if p.fg_pgid > 0 {
            host_to_ns.get(&p.fg_pgid).copied().unwrap_or(0)
        } else {
            0
        };
        hosts.push(*pid);
        record.processes.push(p);
    }
    check_unshared(&record.processes[first_live..], &hosts)?;
    crate::fds::translate_owners(&mut record.processes[first_live..], &tasks)?;
    crate::fds::files::check_memfds(&record)?;
    if let (Some((pid, tids)), Some(p)) = (tasks.first(), record.processes.get(first_live)) {
        let ns = super::inside::session_namespaces(*pid, tids, &exec_maps(&p.maps))
            .map_err(|e| io::Error::other(format!("asking the session's namespaces: {e}")))?;
        record.machine.hostname = ns.hostname;
    }
    let (sysv, undo_lists) = sysv
        .read(&hosts)
        .map_err(|e| io::Error::other(format!("reading the session's SysV IPC objects: {e}")))?;
    record.sysv = sysv;
    for (p, host) in record.processes[first_live..].iter().zip(&hosts) {
        crate::sysv::check_no_undo(&record.sysv, undo_lists.contains(host), p.pid, &p.comm)?;
    }
    crate::sysv::check_attachments(&record)?;
    // (This one changes the session, frozen: see there.)
    let sent = crate::fds::sockets::requeue_pending(&mut record, &tasks, first_live)?;
    let in_flight = crate::fds::sockets::read_connections(&mut record, &hosts, sent)?;
    crate::fds::notify::find_watched_paths(&mut record)?;
    crate::fds::number_descriptions(&mut record, &hosts, &in_flight)?;
    drop(in_flight);
    crate::fds::notify::find_epoll_targets(&mut record, &hosts)?;
    // What a resume of this version could not bring back is refused now, not at resume.
    crate::restore::check_supported(&record)
        .map_err(|e| io::Error::new(io::ErrorKind::Unsupported, format!("{e:#}")))?;
    Ok(SessionState { record, hosts })
}
