//! Descriptors, one file per kind: how each is read from a frozen process at checkpoint
//! and made again at resume, side by side: `files` (regular files, directories, files
//! deleted while open, devices, locks), `pipes` (pipes and named pipes), `ttys` (ptys,
//! `/dev/tty`), `sockets` (unix and TCP), `notify` (eventfd, timerfd, signalfd, epoll,
//! inotify). The records are `crate::records::FdRecord`, one `FdObject` variant per kind.
//!
//! This file holds what is common to every kind. At checkpoint: `read` (a descriptor's
//! flags, owner and locks, and its kind's state, or a refusal naming it), the numbering
//! of open file descriptions shared between descriptors, and the owners in the session's
//! ids. At resume: the init opens or creates each open file description once and sends it
//! to every process that held it, over the datagram socket all restored processes
//! inherit; an injected `recvmsg` takes it and `dup3` puts it at its number. Descriptions
//! shared before stay shared, offsets too.

pub mod files;
pub mod notify;
pub mod pipes;
pub mod sockets;
pub mod ttys;

use crate::ckpt::procfs;
use crate::inject::nr;
use crate::records::*;
use crate::restore::Restorer;
use crate::sys::{self, trace as t};
use anyhow::{Context, Result, anyhow};
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::rc::Rc;

// ---- checkpoint ----------------------------------------------------------------------

/// Descriptor `fd` of process `pid` (`who` in messages): its flags, owner, locks and
/// what it is open on, read by its kind's module; a kind crterm cannot carry is refused
/// here, by name (an `Unsupported` error: the dumper words it as such).
pub fn read(pid: i32, fd: i32, pidfd: BorrowedFd, who: &str) -> io::Result<FdRecord> {
    let fail = |what: &str, e: &dyn std::fmt::Display| -> io::Error {
        io::Error::other(format!("{who}: cannot read the {what} of fd {fd}: {e}"))
    };
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .map_err(|e| fail("fdinfo", &e))?;
    let unparsable = |what: &str| fail(what, &"its fdinfo does not say it as the kernel does");
    let (flags, pos) = procfs::fdinfo_flags_and_pos(&info).ok_or_else(|| unparsable("flags"))?;
    let fd_path = format!("/proc/{pid}/fd/{fd}");
    let target = std::fs::read_link(&fd_path)
        .map_err(|e| fail("target", &e))?
        .display()
        .to_string();
    let refuse = |what: &str| {
        io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{who} holds fd {fd}, {what} ({target}), which this version cannot carry"),
        )
    };
    let locks = procfs::parse_locks(&info).map_err(|what| refuse(&what))?;
    let object = match object(pid, fd, &fd_path, &target, &info) {
        Ok(object) => object,
        Err(Why::Refused(what)) => return Err(refuse(&what)),
        Err(Why::Unparsable(what)) => return Err(unparsable(what)),
        Err(Why::Failed(what, e)) => return Err(fail(what, &e)),
    };
    // (The owner in the host's pids: `translate_owners` gives the session's.) An O_PATH
    // descriptor has none: the kernel refuses it F_GETOWN_EX, as it refuses O_ASYNC.
    let (owner, signal) = if flags as i32 & libc::O_PATH != 0 {
        ((OWNER_TID, 0), 0)
    } else {
        sys::trace::fd_owner(pidfd, fd).map_err(|e| fail("owner (F_GETOWN_EX)", &e))?
    };
    Ok(FdRecord {
        fd,
        desc: 0,
        target,
        flags,
        pos,
        owner,
        signal,
        locks,
        object,
    })
}

/// Why a descriptor's object was not read.
pub enum Why {
    /// A kind (or state) crterm cannot carry: what it is.
    Refused(String),
    /// Its fdinfo does not say this as the kernel does.
    Unparsable(&'static str),
    /// Reading this failed.
    Failed(&'static str, io::Error),
}

/// What descriptor `fd` of `pid` is open on (`target`: its link, `info`: its fdinfo),
/// by kind.
fn object(pid: i32, fd: i32, fd_path: &str, target: &str, info: &str) -> Result<FdObject, Why> {
    use std::os::unix::fs::FileTypeExt;
    let failed = |what| move |e| Why::Failed(what, e);
    if target.starts_with("pipe:") {
        return Ok(FdObject::Pipe(
            pipes::read(pid, fd).map_err(failed("queue"))?,
        ));
    }
    if target.starts_with("socket:") {
        let s = match sockets::read(pid, fd, target) {
            Ok(s) => s,
            // A kind of socket read far enough to know it is not carried.
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                return Err(Why::Refused(e.to_string()));
            }
            Err(e) => return Err(Why::Failed("socket", e)),
        };
        if let Some(what) = sockets::refusal(&s) {
            return Err(Why::Refused(what));
        }
        return Ok(FdObject::Socket(s));
    }
    if let Some(kind) = target.strip_prefix("anon_inode:") {
        return match notify::read(kind, info) {
            Ok(Some(object)) => Ok(object),
            Ok(None) => Err(Why::Refused(anon_kind(kind))),
            Err(what) => Err(Why::Unparsable(what)),
        };
    }
    // Kernel objects other than files name themselves `KIND:[INODE]` (a namespace, opened
    // from /proc/PID/ns): nothing a path leads to again.
    if !target.starts_with('/') {
        return Err(Why::Refused(other_kind(target)));
    }
    // Through the magic link: the very file the process holds, even if renamed or deleted.
    let m = std::fs::metadata(fd_path).map_err(failed("file"))?;
    // A process's own files in /proc (its status, maps, fd directory) name it by a pid in
    // one pid namespace's /proc: opened again by that path after a resume, they would be
    // another process's or nobody's. (The system's, /proc/meminfo and the like, reopen.)
    if sys::is_procfs(fd_path) && procfs::names_a_process(target) {
        return Err(Why::Refused("a process's file in /proc".into()));
    }
    let ft = m.file_type();
    if ft.is_file()
        && target.starts_with("/memfd:")
        && let Some(memfd) = files::read_memfd(pid, fd, &m, target)?
    {
        return Ok(memfd);
    }
    if ft.is_file() || ft.is_dir() {
        return files::read(&m, target);
    }
    if ft.is_symlink() {
        return files::read_symlink(&m, target);
    }
    if ft.is_fifo() {
        return Ok(FdObject::Fifo(
            pipes::read(pid, fd).map_err(failed("queue"))?,
        ));
    }
    if ft.is_socket() {
        return Err(Why::Refused("a socket file opened by path".into()));
    }
    if !ft.is_char_device() {
        return Err(Why::Refused("a file of a kind crterm cannot carry".into()));
    }
    if target == "/dev/ptmx" || target == "/dev/pts/ptmx" {
        return match ttys::read_master(pid, fd, info).map_err(failed("pty master"))? {
            Some((index, tty)) => Ok(FdObject::PtyMaster { index, tty }),
            None => Err(Why::Unparsable("pty number")),
        };
    }
    if target == "/dev/tty" {
        return Ok(FdObject::ControllingTty);
    }
    // A slave whose master is closed (hung up: reads end, writes fail): its number is
    // free for another pty, and a resume cannot make a pty hung up at that number.
    if target.starts_with("/dev/pts/") && target.ends_with(" (deleted)") {
        return Err(Why::Refused(
            "a pty slave whose master is closed (hung up)".into(),
        ));
    }
    if target.starts_with("/dev/pts/") {
        let tty = ttys::read_slave(pid, fd).map_err(failed("terminal settings"))?;
        return Ok(FdObject::PtySlave(tty));
    }
    Ok(FdObject::Device)
}

/// What a kernel object without a file (`anon_inode:KIND`) that crterm cannot carry is, for
/// the refusal: by name where it is a known one.
fn anon_kind(kind: &str) -> String {
    let named = match kind {
        "[fanotify]" => {
            "a fanotify group (its marks and queued events cannot be read and set again)"
        }
        "[pidfd]" => "a pidfd (a process's id, held across the resume, would name another)",
        "[io_uring]" => "an io_uring instance",
        "[userfaultfd]" => "a userfaultfd",
        "[perf_event]" => "a perf event",
        k if k.starts_with("bpf") => "a BPF object",
        _ => return format!("a kernel object crterm cannot carry ({kind})"),
    };
    named.to_string()
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

/// Descriptors' owners (who gets SIGIO and SIGURG) in the session's ids: a thread, a
/// process, a process group of the session, or refused (one outside would be sent
/// signals by a process the resume makes anew, or by none).
pub fn translate_owners(procs: &mut [ProcessRecord], tasks: &[(i32, Vec<i32>)]) -> io::Result<()> {
    use crate::records::{OWNER_PGRP, OWNER_PID, OWNER_TID};
    let mut tids = std::collections::HashMap::new();
    let mut pids = std::collections::HashMap::new();
    let mut groups = std::collections::HashMap::new();
    for (p, (host, host_tids)) in procs.iter().zip(tasks) {
        pids.insert(*host, p.pid);
        for (t, h) in p.threads.iter().zip(host_tids) {
            tids.insert(*h, t.tid);
        }
        let host_pgid = std::fs::read_to_string(format!("/proc/{host}/stat"))
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

/// Number the open file descriptions: descriptors of the session that are one
/// description (kcmp says so) get the same `desc`. `hosts[i]` is the host pid of
/// `record.processes[i]` among the non-zombies (zombies come first and hold no files);
/// `in_flight[i]` our copy of `record.in_flight[i]`, a description in flight, whose place
/// the sockets' `InFlight::descs` name until now. One that no process holds must be of a
/// kind a resume makes without a holder.
pub fn number_descriptions(
    record: &mut SessionRecord,
    hosts: &[i32],
    in_flight: &[OwnedFd],
) -> io::Result<()> {
    let live: Vec<usize> = (0..record.processes.len())
        .filter(|&i| record.processes[i].zombie.is_none())
        .collect();
    // (host pid, fd, target) of the first holder of each description.
    let mut firsts: Vec<(i32, i32, String)> = Vec::new();
    // `f` as descriptor `fd` of `host`.
    let mut number = |host: i32, fd: i32, f: &mut FdRecord| {
        let found = firsts.iter().position(|(hp, hfd, target)| {
            *target == f.target
                && sys::trace::same_file_description(*hp, *hfd, host, fd).unwrap_or(false)
        });
        f.desc = match found {
            Some(d) => d as u32,
            None => {
                firsts.push((host, fd, f.target.clone()));
                (firsts.len() - 1) as u32
            }
        };
    };
    for (&pi, &host) in live.iter().zip(hosts) {
        for f in &mut record.processes[pi].fds {
            number(host, f.fd, f);
        }
    }
    let held = live
        .iter()
        .flat_map(|&pi| &record.processes[pi].fds)
        .map(|f| f.desc + 1)
        .max()
        .unwrap_or(0);
    let me = std::process::id() as i32;
    for (f, copy) in record.in_flight.iter_mut().zip(in_flight) {
        number(me, copy.as_raw_fd(), f);
        // (`/dev/tty` is opened again by its holder itself: no description to send.)
        let tty = matches!(f.object, FdObject::ControllingTty);
        if tty || (f.desc >= held && !crate::records::in_flight_kind_ok(&f.object)) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "a descriptor in flight (SCM_RIGHTS) that no process holds: {} ({}), which this version cannot carry",
                    f.kind_name(),
                    f.target
                ),
            ));
        }
    }
    // The sockets' messages name the descriptions they carry by number now.
    let descs: Vec<u32> = record.in_flight.iter().map(|f| f.desc).collect();
    let renumber = |f: &mut FdRecord| {
        if let FdObject::Socket(s) = &mut f.object {
            for m in &mut s.in_flight {
                for d in &mut m.descs {
                    *d = descs[*d as usize];
                }
            }
        }
    };
    for &pi in &live {
        record.processes[pi].fds.iter_mut().for_each(renumber);
    }
    record.in_flight.iter_mut().for_each(renumber);
    Ok(())
}

// ---- resume --------------------------------------------------------------------------

/// A descriptor number no process of the image uses (≥ 3): the transfer socket's.
pub fn free_fd_number(record: &SessionRecord) -> i32 {
    let used: BTreeSet<i32> = record
        .processes
        .iter()
        .flat_map(|p| p.fds.iter().map(|f| f.fd))
        .collect();
    (3..).find(|n| !used.contains(n)).expect("a free number")
}

/// The status flags a description is given when it is made. O_ASYNC is not among them:
/// it registers the descriptor number that sets it (the signal's si_fd), so the holder
/// sets it itself (`Restorer::set_owners`); open() would keep the flag without registering.
pub(crate) const STATUS_FLAGS: i32 = libc::O_APPEND | libc::O_NONBLOCK | libc::O_NOATIME;

/// Flags to open a description again with: as it was, but not creating or truncating,
/// and without O_ASYNC (above).
pub(crate) fn open_flags(f: &FdRecord) -> i32 {
    f.flags as i32 & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL | libc::O_ASYNC)
}

pub(crate) struct Descriptions {
    by_desc: HashMap<u32, Rc<OwnedFd>>,
    /// Anonymous pipes by inode: (read end, write end).
    pipes: HashMap<String, (Rc<OwnedFd>, Rc<OwnedFd>)>,
    /// The pipe ends (inode, access mode) already given to a description: another
    /// description of that end (opened again through /proc/PID/fd) is a new open.
    pipe_ends: std::collections::HashSet<(String, i32)>,
    /// Connected unix sockets, made as pairs beforehand, by the inode each had.
    sockets: HashMap<u64, OwnedFd>,
    /// Named pipes by path, held open both ways while the session's ends are made.
    fifos: HashMap<String, Rc<OwnedFd>>,
    /// What the file policy did with each open regular file, by path.
    files: std::collections::BTreeMap<String, files::FileOutcome>,
}

impl Descriptions {
    pub fn new() -> Descriptions {
        Descriptions {
            by_desc: HashMap::new(),
            pipes: HashMap::new(),
            pipe_ends: Default::default(),
            sockets: HashMap::new(),
            fifos: HashMap::new(),
            files: Default::default(),
        }
    }
}

impl Restorer<'_> {
    /// Give every process its descriptors, then its epoll sets their registrations.
    pub(crate) fn install_files(&mut self) -> Result<()> {
        let mut descs = Descriptions::new();
        let connected = sockets::connected(self.record)?;
        descs.sockets = connected.sockets;
        self.warnings.extend(connected.closed);
        let mut table = self.install_descriptions(&mut descs);
        if table.is_ok() {
            table = self.send_in_flight(&mut descs, &connected.refills);
        }
        if table.is_ok() {
            table = sockets::refill_udp(self.record, |d| descs.by_desc.get(&d).cloned());
        }
        self.warnings.extend(files::files_table(&descs.files));
        table
    }

    /// The descriptors in flight, sent again in their sockets' queues (with the bytes
    /// around them), once every process holds its descriptors: a description also held by
    /// a process is that one; one no process holds is made as the first process would
    /// make it.
    fn send_in_flight(
        &mut self,
        descs: &mut Descriptions,
        refills: &[sockets::Refill],
    ) -> Result<()> {
        let Some(first) = self.record.processes.iter().find(|p| p.zombie.is_none()) else {
            return Ok(());
        };
        for r in refills {
            let _as = self.act_as(first)?;
            r.run(|d| {
                let f = self
                    .record
                    .all_fds()
                    .map(|(_, f)| f)
                    .find(|f| f.desc == d)
                    .ok_or_else(|| anyhow!("file description {d} in flight is not in the image"))?;
                self.description(descs, first, f)
                    .with_context(|| format!("the descriptor in flight {}", f.target))?
                    .ok_or_else(|| anyhow!("{} cannot be sent in flight", f.target))
            })?;
        }
        Ok(())
    }

    fn install_descriptions(&mut self, descs: &mut Descriptions) -> Result<()> {
        let pids: Vec<i32> = self.procs.keys().copied().collect();
        for &pid in &pids {
            let rec = self.proc(pid).rec;
            // Its files are opened as it would open them: a description is made as the
            // first of its holders.
            let _as = self.act_as(rec)?;
            for f in &rec.fds {
                let what = || format!("process {pid} ({}) fd {} ({})", rec.comm, f.fd, f.target);
                match self.description(descs, rec, f).with_context(what)? {
                    Some(fd) => self
                        .transfer(pid, fd.as_fd(), f.fd, cloexec(f))
                        .with_context(what)?,
                    None => self.open_inside(pid, f).with_context(what)?,
                }
            }
        }
        // Once per epoll set, by its first holder (a child that inherited it shares it).
        let mut registered = std::collections::HashSet::new();
        for &pid in &pids {
            let rec = self.proc(pid).rec;
            for f in rec
                .fds
                .iter()
                .filter(|f| matches!(f.object, FdObject::Epoll { .. }))
                .filter(|f| registered.insert(f.desc))
            {
                self.register_epoll(pid, f, descs)
                    .with_context(|| format!("process {pid} ({}) epoll fd {}", rec.comm, f.fd))?;
            }
        }
        Ok(())
    }

    /// The init's descriptor for `f`'s open file description (made once, shared by all
    /// its holders), or None for what the process must open itself (`/dev/tty`).
    fn description(
        &self,
        descs: &mut Descriptions,
        rec: &ProcessRecord,
        f: &FdRecord,
    ) -> Result<Option<Rc<OwnedFd>>> {
        if let Some(d) = descs.by_desc.get(&f.desc) {
            return Ok(Some(d.clone()));
        }
        let access = f.flags as i32 & libc::O_ACCMODE;
        let nonblock = f.flags as i32 & libc::O_NONBLOCK;
        let made: OwnedFd = match &f.object {
            FdObject::File(_) | FdObject::Directory(_) => {
                let (fd, outcome) = self.open_file(rec, f)?;
                let path = f.target.trim_end_matches(" (deleted)").to_string();
                if matches!(f.object, FdObject::File(_)) {
                    descs.files.insert(path, outcome);
                }
                fd
            }
            FdObject::Memfd { .. } => self.reopen_unnamed(f)?,
            FdObject::Symlink { text, .. } => {
                let (fd, outcome) = files::open_symlink(&f.target, text, f, self.opts.force)?;
                descs.files.insert(f.target.clone(), outcome);
                fd
            }
            FdObject::ControllingTty => return Ok(None),
            FdObject::PtyMaster { index: n, .. } => {
                let master = self
                    .masters
                    .get(n)
                    .ok_or_else(|| anyhow!("pty {n} was not made"))?;
                master
                    .try_clone()
                    .with_context(|| format!("the master of pty {n}"))?
            }
            FdObject::Device | FdObject::PtySlave(_) => {
                // (Opened as it was, status flags included.)
                let flags = open_flags(f) | libc::O_NOCTTY | libc::O_CLOEXEC;
                let fd = sys::open(&sys::cstring(&f.target)?, flags)
                    .with_context(|| format!("cannot open {}", f.target))?;
                let fd = Rc::new(fd);
                descs.by_desc.insert(f.desc, fd.clone());
                return Ok(Some(fd));
            }
            FdObject::Pipe(pipe) => {
                let (r, w) = match descs.pipes.get(&f.target) {
                    Some(p) => p.clone(),
                    None => {
                        let (r, w) = pipes::make(pipe)?;
                        let p = (Rc::new(r), Rc::new(w));
                        descs.pipes.insert(f.target.clone(), p.clone());
                        p
                    }
                };
                let end = if access == libc::O_WRONLY { w } else { r };
                if access != libc::O_RDWR && descs.pipe_ends.insert((f.target.clone(), access)) {
                    // The first description of each end is the end pipe() made; its status
                    // flags are set on it.
                    t::set_status_flags(end.as_fd(), f.flags as i32 & STATUS_FLAGS)?;
                    descs.by_desc.insert(f.desc, end.clone());
                    return Ok(Some(end));
                }
                // Another description of the pipe (the process opened /proc/PID/fd/N, maybe
                // read-write): opened again the same way, with flags of its own (without
                // blocking: the init holds both ends meanwhile).
                let again = sys::cstring(&format!("/proc/self/fd/{}", end.as_raw_fd()))?;
                let flags = access | libc::O_NONBLOCK | libc::O_CLOEXEC;
                sys::open(&again, flags).context("opening the pipe again as it was")?
            }
            FdObject::Fifo(pipe) => {
                let fifo = match descs.fifos.get(&f.target) {
                    Some(fifo) => fifo.clone(),
                    None => {
                        let fifo = Rc::new(pipes::open_fifo(&f.target, pipe)?);
                        descs.fifos.insert(f.target.clone(), fifo.clone());
                        fifo
                    }
                };
                // Another description of it, as this one was opened (without blocking:
                // the init holds both ends meanwhile).
                let again = sys::cstring(&format!("/proc/self/fd/{}", fifo.as_raw_fd()))?;
                let flags = (f.flags as i32 & (libc::O_ACCMODE | STATUS_FLAGS))
                    | libc::O_NONBLOCK
                    | libc::O_CLOEXEC;
                sys::open(&again, flags).context("opening the named pipe as it was")?
            }
            FdObject::Socket(s) => match descs.sockets.remove(&s.inode) {
                Some(end) => end,
                None if s.inet() => sockets::tcp_socket(s)?,
                None if s.domain == libc::AF_NETLINK => sockets::netlink_socket(s)?,
                None if s.listening || !s.name.is_empty() => sockets::named_socket(s)?,
                None => sys::sock::unix_socket(s.kind).context("socket")?,
            },
            FdObject::EventFd { .. }
            | FdObject::TimerFd(_)
            | FdObject::SignalFd { .. }
            | FdObject::Epoll { .. }
            | FdObject::Inotify { .. } => notify::make(&f.object, nonblock)?,
        };
        let _ = t::set_status_flags(made.as_fd(), f.flags as i32 & STATUS_FLAGS);
        let made = Rc::new(made);
        descs.by_desc.insert(f.desc, made.clone());
        Ok(Some(made))
    }
}

pub(crate) fn cloexec(f: &FdRecord) -> bool {
    f.flags as i32 & libc::O_CLOEXEC != 0
}

impl Restorer<'_> {
    /// O_ASYNC, and who each description sends SIGIO and SIGURG to with which signal, set
    /// by its first holder, once per description: O_ASYNC registers the number it is set
    /// through (the signal's si_fd), and the owner the setter's credentials (checked
    /// against the receiver's when the kernel sends). A terminal makes its group (or the
    /// setter) the owner when O_ASYNC is set, so the owner is set after it, even none.
    pub(crate) fn set_owners(
        &self,
        pid: i32,
        owned: &mut std::collections::HashSet<u32>,
    ) -> Result<()> {
        let rec = self.proc(pid).rec;
        for f in &rec.fds {
            let async_ = f.flags as i32 & libc::O_ASYNC != 0;
            if (f.owner.1 == 0 && f.signal == 0 && !async_) || !owned.insert(f.desc) {
                continue;
            }
            let fd = f.fd as u64;
            let what = || format!("process {pid} ({}) fd {}: its owner", rec.comm, f.fd);
            if async_ {
                let flags = f.flags as i32 & (STATUS_FLAGS | libc::O_ASYNC);
                self.call(
                    pid,
                    "fcntl(F_SETFL)",
                    nr::FCNTL,
                    &[fd, libc::F_SETFL as u64, flags as u64],
                )
                .with_context(what)?;
            }
            if f.owner.1 != 0 || async_ {
                let bytes: Vec<u8> = [f.owner.0, f.owner.1]
                    .iter()
                    .flat_map(|w| w.to_le_bytes())
                    .collect();
                let at = self.put(pid, 0, &bytes)?;
                self.call(
                    pid,
                    "fcntl(F_SETOWN_EX)",
                    nr::FCNTL,
                    &[fd, t::F_SETOWN_EX as u64, at],
                )
                .with_context(what)?;
            }
            if f.signal != 0 {
                self.call(
                    pid,
                    "fcntl(F_SETSIG)",
                    nr::FCNTL,
                    &[fd, t::F_SETSIG as u64, f.signal as u64],
                )
                .with_context(what)?;
            }
        }
        Ok(())
    }
}
