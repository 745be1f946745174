//! Descriptors on restore: the init opens or creates each open file description once
//! (files at their offsets, pipes refilled with their queued bytes, eventfds, timerfds,
//! signalfds, epoll sets, the session's ptys) and sends it to every process that held it,
//! over the datagram socket all restored processes inherit; an injected `recvmsg` takes it
//! and `dup3` puts it at its number. Descriptions shared before stay shared, offsets too.

use super::{PAGE, Restorer};
use crate::ckpt::record::{FdKind, FdRecord, ProcessRecord, SessionRecord, TtyRecord};
use crate::inject::nr;
use crate::sys::{self, trace as t};
use anyhow::{Context, Result, anyhow, bail};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::rc::Rc;

/// The pty number a `/proc/PID/stat` tty_nr names, if it is a devpts slave.
pub fn pts_number(tty_nr: u32) -> Option<u32> {
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
    (136..144)
        .contains(&major)
        .then(|| (major - 136) * 256 + minor)
}

fn pts_of_path(path: &str) -> Option<u32> {
    path.strip_prefix("/dev/pts/")?.parse().ok()
}

/// Open the session's ptys in its fresh devpts, in order, until every number the image
/// uses exists; set their saved settings, sizes and modes, and put back the bytes that were
/// queued in them both ways. Returns the masters by number.
/// The numbers of the ptys a session uses, in order (0, its own, first).
pub fn pty_numbers(record: &SessionRecord) -> Vec<u32> {
    let mut n = std::collections::BTreeSet::from([0]);
    for p in &record.processes {
        n.extend(pts_number(p.ctty));
        for f in &p.fds {
            n.extend(f.pty_index().or_else(|| pts_of_path(&f.target)));
        }
    }
    n.into_iter().collect()
}

pub fn open_ptys(record: &SessionRecord) -> Result<BTreeMap<u32, OwnedFd>> {
    // Per pty: what a slave's record holds (settings, typed input) and what a master's
    // holds (settings, output, packet mode).
    type Saved<'a> = (Option<&'a TtyRecord>, Option<&'a TtyRecord>);
    let mut wanted: BTreeMap<u32, Saved> = BTreeMap::new();
    wanted.insert(0, (None, None));
    for p in &record.processes {
        if let Some(n) = pts_number(p.ctty) {
            wanted.entry(n).or_default();
        }
        for f in &p.fds {
            if let Some(n) = f.pty_index() {
                let e = wanted.entry(n).or_default();
                e.1 = e.1.or(f.tty.as_ref());
            } else if let Some(n) = pts_of_path(&f.target) {
                let e = wanted.entry(n).or_default();
                e.0 = e.0.or(f.tty.as_ref());
            }
        }
    }
    let last = *wanted.keys().last().expect("0 is there");
    if last > 255 {
        bail!("the image uses pty {last}; at most 256 ptys are restored");
    }
    let mut masters = BTreeMap::new();
    let mut spare = Vec::new();
    loop {
        let (m, n) = sys::open_pty_master().context("cannot open a pty in the session's devpts")?;
        if wanted.contains_key(&n) {
            masters.insert(n, m);
        } else {
            spare.push(m);
        }
        if n >= last {
            break;
        }
    }
    drop(spare);
    for (n, (slave_rec, master_rec)) in wanted {
        let Some(settings) = slave_rec.or(master_rec) else {
            continue;
        };
        let master = masters[&n].as_fd();
        let slave = sys::pty_peer(master).with_context(|| format!("opening /dev/pts/{n}"))?;
        if settings.termios.len() == std::mem::size_of::<sys::Termios>() {
            // SAFETY: the bytes were read from a termios of this very layout.
            let t: sys::Termios = unsafe {
                std::ptr::read_unaligned(settings.termios.as_ptr().cast::<sys::Termios>())
            };
            let _ = sys::set_termios(slave.as_fd(), &t);
        }
        let size = sys::WinSize {
            cols: settings.cols,
            rows: settings.rows,
        };
        let _ = sys::set_winsize(master, size);
        // What was typed and not yet read is waiting for the program again, and what the
        // programs wrote and the master's holder had not read, for that holder.
        if let Some(typed) = slave_rec.map(|t| &t.typed).filter(|t| !t.is_empty()) {
            sys::write_all(master, typed)
                .with_context(|| format!("putting typed input back into /dev/pts/{n}"))?;
        }
        if let Some(m) = master_rec {
            if !m.output.is_empty() {
                sys::write_as_output(slave.as_fd(), &m.output)
                    .with_context(|| format!("putting output back into /dev/pts/{n}"))?;
            }
            if m.packet {
                sys::set_pty_packet_mode(master, true)
                    .with_context(|| format!("packet mode on /dev/pts/{n}"))?;
            }
            // Last: a locked pty's slave cannot be opened, not even to set it up.
            if m.locked {
                sys::set_pty_locked(master, true)
                    .with_context(|| format!("locking /dev/pts/{n}"))?;
            }
        }
    }
    Ok(masters)
}

/// A descriptor number no process of the image uses (≥ 3): the transfer socket's.
pub fn free_fd_number(record: &SessionRecord) -> i32 {
    let used: BTreeSet<i32> = record
        .processes
        .iter()
        .flat_map(|p| p.fds.iter().map(|f| f.fd))
        .collect();
    (3..).find(|n| !used.contains(n)).expect("a free number")
}

fn field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
}

/// `(a, b)` as fdinfo prints timer values.
fn pair(v: &str) -> Option<(u64, u64)> {
    let v = v.trim().strip_prefix('(')?.strip_suffix(')')?;
    let (a, b) = v.split_once(',')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// The status flags a description is given when it is made. O_ASYNC is not among them:
/// it registers the descriptor number that sets it (the signal's si_fd), so the holder
/// sets it itself (`Restorer::set_owners`); open() would keep the flag without registering.
pub(super) const STATUS_FLAGS: i32 = libc::O_APPEND | libc::O_NONBLOCK | libc::O_NOATIME;

/// Flags to open a description again with: as it was, but not creating or truncating,
/// and without O_ASYNC (above).
fn open_flags(f: &FdRecord) -> i32 {
    f.flags as i32 & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL | libc::O_ASYNC)
}

pub(super) struct Descriptions {
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
    files: std::collections::BTreeMap<String, FileOutcome>,
}

/// What the file policy says for an open regular file or directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum FilePlan {
    /// There as it was (or only grown, and only read): open it.
    Open,
    /// Changed where the session writes, and `--force`: open it as it is.
    OpenChanged,
    /// Deleted while open: an unnamed file with the carried content.
    Deleted,
    /// Missing: make it again at its path from this carried file.
    MakeAgain(usize),
    /// Missing with its directory, and `--force`: an unnamed copy.
    Unnamed,
    /// Missing and not carried, and `--force`: this in its place, and why.
    Instead(&'static str, String),
}

/// What a resume did with an open regular file (`crterm resume` prints a table of them
/// when any was not simply opened).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum FileOutcome {
    /// There, unchanged (or only grown, for a file the session reads): opened.
    Opened,
    /// Missing here, or deleted while open: made again from the content in the image.
    MadeAgain,
    /// Refused but for `--force`: what was done instead.
    Forced(String),
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

/// Every connected unix socket of the image, made again: a pair for two ends held in the
/// session, each end's queue refilled from the other and half-closed as it was; an end whose
/// peer was outside the session gets its queued bytes and then finds the connection closed
/// (the program sees what it sees when the other side goes away). Returns the sockets by
/// inode and a line for each connection that came back closed.
fn connected_sockets(record: &SessionRecord) -> Result<(HashMap<u64, OwnedFd>, Vec<String>)> {
    use crate::ckpt::record::SocketRecord;
    let mut by_inode: BTreeMap<u64, (&ProcessRecord, &FdRecord, &SocketRecord)> = BTreeMap::new();
    let mut made = HashMap::new();
    let mut closed = Vec::new();
    let live = || record.processes.iter().filter(|p| p.zombie.is_none());
    // Listening sockets first: a connection that was not accepted yet is made again by
    // connecting to its listener.
    let mut listeners: HashMap<u64, &SocketRecord> = HashMap::new();
    for p in live() {
        for f in &p.fds {
            let Some(s) = f.socket.as_ref().filter(|s| s.listening) else {
                continue;
            };
            if listeners.contains_key(&s.inode) {
                continue;
            }
            let what = || format!("process {} ({}) fd {}", p.pid, p.comm, f.fd);
            let sock = if s.inet() {
                tcp_socket(s)
            } else {
                named_socket(s)
            }
            .with_context(what)?;
            made.insert(s.inode, sock);
            listeners.insert(s.inode, s);
        }
    }
    for p in live() {
        for f in &p.fds {
            let Some(s) = &f.socket else { continue };
            if s.listening || made.contains_key(&s.inode) {
                continue;
            }
            if s.pending_on != 0 {
                let what = || format!("process {} ({}) fd {}", p.pid, p.comm, f.fd);
                let l = listeners
                    .get(&s.pending_on)
                    .ok_or_else(|| anyhow!("{}: its listener is not in the image", what()))?;
                let sock = sys::sock::unix_socket(s.kind).with_context(what)?;
                sys::sock::connect_unix(sock.as_fd(), &l.name).with_context(|| {
                    format!("{}: connecting to {} again", what(), l.display_name())
                })?;
                made.insert(s.inode, sock);
                continue;
            }
            if s.inet() && !s.peer_addr.is_empty() {
                if let std::collections::hash_map::Entry::Vacant(e) = made.entry(s.inode) {
                    let what = || format!("process {} ({}) fd {}", p.pid, p.comm, f.fd);
                    e.insert(closed_tcp(s).with_context(what)?);
                    closed.push(format!(
                        "{}: its TCP connection to {} comes back closed",
                        what(),
                        sys::sock::inet_text(&s.peer_addr)
                    ));
                }
            } else if s.peer != 0 {
                by_inode.entry(s.inode).or_insert((p, f, s));
            }
        }
    }
    for (&inode, &(p, f, s)) in &by_inode {
        if made.contains_key(&inode) {
            continue;
        }
        let what = || format!("process {} ({}) fd {} ({})", p.pid, p.comm, f.fd, f.target);
        let (mine, other) = sys::sock::pair(s.kind).with_context(what)?;
        if s.passcred {
            sys::sock::set_int(mine.as_fd(), libc::SOL_SOCKET, libc::SO_PASSCRED, 1)?;
        }
        let peer = by_inode.get(&s.peer).filter(|_| s.peer_inside);
        for piece in &s.queued {
            sys::sock::send_now(other.as_fd(), piece, s.stream())
                .with_context(|| format!("{}: refilling its queue", what()))?;
        }
        match peer {
            Some(&(_, _, ps)) => {
                if ps.passcred {
                    sys::sock::set_int(other.as_fd(), libc::SOL_SOCKET, libc::SO_PASSCRED, 1)?;
                }
                for piece in &ps.queued {
                    sys::sock::send_now(mine.as_fd(), piece, ps.stream())
                        .with_context(|| format!("{}: refilling its peer's queue", what()))?;
                }
                half_close(mine.as_fd(), s.shutdown, ps.shutdown);
                half_close(other.as_fd(), ps.shutdown, s.shutdown);
                made.insert(inode, mine);
                made.insert(s.peer, other);
            }
            None => {
                drop(other);
                closed.push(format!(
                    "process {} ({}) fd {}: its unix connection to the outside comes back closed",
                    p.pid, p.comm, f.fd
                ));
                made.insert(inode, mine);
            }
        }
    }
    Ok((made, closed))
}

/// An inotify instance with its watches at their numbers: added in order, a placeholder
/// watch on some other directory where a number is missing (removed afterwards, and the
/// notices of their removal read out, so the program sees none of it).
fn inotify_again(f: &FdRecord) -> Result<OwnedFd> {
    use std::os::unix::fs::MetadataExt;
    let fd = sys::inotify_init(libc::IN_NONBLOCK)?;
    let mut watches = f.watches.clone();
    watches.sort_by_key(|w| w.wd);
    let watched: BTreeSet<(u64, u64)> = watches
        .iter()
        .filter_map(|w| std::fs::metadata(&w.path).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    // Directories to hold placeholder watches: each a different inode, none watched.
    let mut spare = [
        "/", "/usr", "/etc", "/var", "/bin", "/lib", "/sbin", "/opt", "/srv",
    ]
    .into_iter()
    .filter(|p| std::fs::metadata(p).is_ok_and(|m| !watched.contains(&(m.dev(), m.ino()))))
    .collect::<Vec<_>>()
    .into_iter();
    // A new instance numbers watches 1, 2, 3 ...
    let mut placeholders = Vec::new();
    let mut next = 1;
    for w in &watches {
        while next < w.wd {
            let p = spare
                .next()
                .ok_or_else(|| anyhow!("inotify watch {} cannot get its number back", w.wd))?;
            placeholders.push(sys::inotify_add(fd.as_fd(), p, libc::IN_ATTRIB)?);
            next += 1;
        }
        let wd = sys::inotify_add(fd.as_fd(), &w.path, w.mask)
            .with_context(|| format!("watching {} again (inotify wd {})", w.path, w.wd))?;
        if wd != w.wd {
            bail!(
                "watching {} again gave inotify wd {wd}, not {}",
                w.path,
                w.wd
            );
        }
        next += 1;
    }
    for wd in placeholders {
        sys::inotify_rm(fd.as_fd(), wd)?;
    }
    let mut buf = [0u8; 4096];
    while sys::read(fd.as_fd(), &mut buf).is_ok_and(|n| n > 0) {}
    t::set_status_flags(fd.as_fd(), f.flags as i32 & STATUS_FLAGS)?;
    Ok(fd)
}

/// A TCP socket listening (or bound) where it was, with its options. A port another
/// program has taken now is an error that says so.
fn tcp_socket(s: &crate::ckpt::record::SocketRecord) -> Result<OwnedFd> {
    let sock = sys::sock::socket(s.domain, s.kind).context("socket")?;
    for &(level, opt, v) in &s.options {
        let _ = sys::sock::set_int(sock.as_fd(), level, opt, v);
    }
    let bound = s.addr.len() >= 4 && s.addr[2..4] != [0, 0];
    if bound {
        let addr = sys::sock::inet_text(&s.addr);
        sys::sock::bind(sock.as_fd(), &s.addr).map_err(|e| {
            if e.raw_os_error() == Some(libc::EADDRINUSE) {
                anyhow!("cannot listen on TCP {addr} again: another program has taken the port")
            } else {
                anyhow!("cannot bind TCP {addr} again: {e}")
            }
        })?;
    }
    if s.listening {
        sys::sock::listen(sock.as_fd(), libc::SOMAXCONN)?;
    }
    Ok(sock)
}

/// A TCP connection whose other side has closed it: a real TCP socket, connected over
/// the loopback to a peer that sends what the old connection had queued, then closes.
fn closed_tcp(s: &crate::ckpt::record::SocketRecord) -> Result<OwnedFd> {
    let listener = sys::sock::socket(s.domain, libc::SOCK_STREAM).context("socket")?;
    sys::sock::bind(listener.as_fd(), &sys::sock::loopback(s.domain))
        .context("binding a loopback socket")?;
    sys::sock::listen(listener.as_fd(), 1)?;
    let at = sys::sock::local_addr(listener.as_fd())?;
    let sock = sys::sock::socket(s.domain, s.kind).context("socket")?;
    for &(level, opt, v) in &s.options {
        let _ = sys::sock::set_int(sock.as_fd(), level, opt, v);
    }
    sys::sock::connect(sock.as_fd(), &at).context("connecting over the loopback")?;
    let peer = sys::sock::accept(listener.as_fd())?;
    for piece in &s.queued {
        sys::sock::send_now(peer.as_fd(), piece, true).context("refilling its queue")?;
    }
    drop(peer);
    Ok(sock)
}

/// A named pipe opened for reading and writing (which never blocks), made again if its
/// path is gone, and refilled with the bytes that were queued in it.
fn open_fifo(f: &FdRecord) -> Result<OwnedFd> {
    let path = sys::cstring(&f.target)?;
    if std::fs::symlink_metadata(&f.target).is_err() {
        sys::mkfifo(&path, 0o600).with_context(|| format!("making {} again", f.target))?;
    }
    let fd = sys::open(&path, libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .with_context(|| format!("cannot open {}", f.target))?;
    if f.pipe_size > 0 {
        let _ = t::set_pipe_size(fd.as_fd(), f.pipe_size as i32);
    }
    sys::write_all(fd.as_fd(), &f.queued).context("refilling the named pipe")?;
    Ok(fd)
}

/// Shut one end down as it was: writing if it had shut its sending side, reading if its
/// receiving side was shut by itself rather than by the peer's writing side.
fn half_close(end: BorrowedFd, mine: u8, peers: u8) {
    const RCV: u8 = 1;
    const SEND: u8 = 2;
    if mine & SEND != 0 {
        let _ = sys::sock::shutdown(end, libc::SHUT_WR);
    }
    if mine & RCV != 0 && peers & SEND == 0 {
        let _ = sys::sock::shutdown(end, libc::SHUT_RD);
    }
}

impl Restorer<'_> {
    /// Give every process its descriptors, then its epoll sets their registrations.
    pub(super) fn install_files(&mut self) -> Result<()> {
        let mut descs = Descriptions::new();
        let (sockets, closed) = connected_sockets(self.record)?;
        descs.sockets = sockets;
        self.warnings.extend(closed);
        let table = self.install_descriptions(&mut descs);
        self.warnings.extend(files_table(&descs.files));
        table
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
        for &pid in &pids {
            let rec = self.proc(pid).rec;
            for f in rec
                .fds
                .iter()
                .filter(|f| f.target == "anon_inode:[eventpoll]")
            {
                self.register_epoll(pid, f)
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
        let made: OwnedFd = match f.kind {
            FdKind::File | FdKind::Directory => {
                let (fd, outcome) = self.open_file(rec, f)?;
                let path = f.target.trim_end_matches(" (deleted)").to_string();
                if f.kind == FdKind::File {
                    descs.files.insert(path, outcome);
                }
                fd
            }
            FdKind::CharDevice if f.target == "/dev/tty" => return Ok(None),
            FdKind::PtyMaster => {
                let n = f
                    .pty_index()
                    .ok_or_else(|| anyhow!("a pty master without its number"))?;
                let master = self
                    .masters
                    .get(&n)
                    .ok_or_else(|| anyhow!("pty {n} was not made"))?;
                master
                    .try_clone()
                    .with_context(|| format!("the master of pty {n}"))?
            }
            FdKind::CharDevice => {
                let flags = open_flags(f) | libc::O_NOCTTY | libc::O_CLOEXEC;
                sys::open(&sys::cstring(&f.target)?, flags)
                    .with_context(|| format!("cannot open {}", f.target))?
            }
            FdKind::Pipe if f.target.starts_with("pipe:") => {
                let (r, w) = match descs.pipes.get(&f.target) {
                    Some(p) => p.clone(),
                    None => {
                        let (r, w) = t::pipe_with(0)?;
                        if f.pipe_size > 0 {
                            let _ = t::set_pipe_size(w.as_fd(), f.pipe_size as i32);
                        }
                        sys::write_all(w.as_fd(), &f.queued)
                            .context("refilling the pipe with its queued bytes")?;
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
            FdKind::Pipe => {
                let fifo = match descs.fifos.get(&f.target) {
                    Some(fifo) => fifo.clone(),
                    None => {
                        let fifo = Rc::new(open_fifo(f)?);
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
            FdKind::Socket => {
                let s = f
                    .socket
                    .as_ref()
                    .ok_or_else(|| anyhow!("a socket without its record"))?;
                match descs.sockets.remove(&s.inode) {
                    Some(end) => end,
                    None if s.inet() => tcp_socket(s)?,
                    None if s.listening || !s.name.is_empty() => named_socket(s)?,
                    None => sys::sock::unix_socket(s.kind).context("socket")?,
                }
            }
            FdKind::Anon => self.anon(f)?,
            FdKind::Other => bail!("a file of a kind crterm cannot restore"),
        };
        if !matches!(f.kind, FdKind::CharDevice) {
            let _ = t::set_status_flags(made.as_fd(), f.flags as i32 & STATUS_FLAGS);
        }
        let made = Rc::new(made);
        descs.by_desc.insert(f.desc, made.clone());
        Ok(Some(made))
    }

    /// What the file policy says for regular file or directory `f`: there and unchanged
    /// (or only grown, when only read): open it; missing and carried, or deleted while
    /// open: make it again from the image; missing and not carried, or changed where the
    /// session writes: refused, naming it, unless `--force`. Looks, changes nothing: every
    /// file is planned before any is made, so a refusal leaves no file behind.
    pub(super) fn file_plan(&self, rec: &ProcessRecord, f: &FdRecord) -> Result<FilePlan> {
        plan_file(self.record, self.opts.force, rec, f)
    }
    /// The file policy for every open file of the session, before any process or file is
    /// made: a refusal leaves nothing behind.
    pub(super) fn check_file_policy(&self) -> Result<()> {
        for p in &self.record.processes {
            let _as = if p.zombie.is_none() {
                Some(self.act_as(p)?)
            } else {
                None
            };
            for f in &p.fds {
                if matches!(f.kind, FdKind::File | FdKind::Directory) {
                    self.file_plan(p, f)
                        .with_context(|| format!("process {} ({}) fd {}", p.pid, p.comm, f.fd))?;
                }
            }
        }
        Ok(())
    }

    /// Regular file or directory `f`, made as `file_plan` says, at its offset.
    fn open_file(&self, rec: &ProcessRecord, f: &FdRecord) -> Result<(OwnedFd, FileOutcome)> {
        let (path, outcome): (&str, FileOutcome) = match self.file_plan(rec, f)? {
            FilePlan::Open => (&f.target, FileOutcome::Opened),
            FilePlan::OpenChanged => (
                &f.target,
                FileOutcome::Forced("changed since the checkpoint; opened as it is".into()),
            ),
            FilePlan::Deleted => return Ok((self.deleted_file(f)?, FileOutcome::MadeAgain)),
            FilePlan::Unnamed => {
                return Ok((
                    self.deleted_file(f)?,
                    FileOutcome::Forced("its directory is missing here; an unnamed copy".into()),
                ));
            }
            FilePlan::MakeAgain(index) => {
                self.make_again(f, index)?;
                (&f.target, FileOutcome::MadeAgain)
            }
            FilePlan::Instead(instead, why) => {
                let flags = if f.kind == FdKind::Directory {
                    libc::O_RDONLY | libc::O_DIRECTORY
                } else {
                    libc::O_RDWR
                };
                let fd = sys::open(&sys::cstring(instead)?, flags)?;
                return Ok((
                    fd,
                    FileOutcome::Forced(format!("{why}; {instead} in its place")),
                ));
            }
        };
        let mut flags = open_flags(f);
        flags |= libc::O_CLOEXEC | libc::O_NOCTTY;
        let fd = sys::open(&sys::cstring(path)?, flags)
            .with_context(|| format!("cannot open {path}"))?;
        if f.pos > 0 {
            t::lseek(fd.as_fd(), f.pos).context("seeking to the saved offset")?;
        }
        Ok((fd, outcome))
    }

    /// Make missing file `f` again at its path from carried file `index`: content,
    /// permissions and modification time (so that a later resume finds it unchanged).
    fn make_again(&self, f: &FdRecord, index: usize) -> Result<()> {
        let id = f
            .identity
            .as_ref()
            .ok_or_else(|| anyhow!("a file without its identity"))?;
        let content = self.carried_content(index)?;
        if content.len() as u64 != self.record.files[index].size {
            bail!("the image's copy of {} is damaged", f.target);
        }
        let made = sys::create_new(&sys::cstring(&f.target)?, id.mode)
            .with_context(|| format!("cannot make {} again", f.target))?;
        sys::write_with_holes(made.as_fd(), &content, &self.record.files[index].holes)?;
        sys::set_mtime(made.as_fd(), id.mtime_ns)?;
        Ok(())
    }

    /// A file deleted while open: made again, unnamed (O_TMPFILE) in the directory it was
    /// in, with the content the image carries (its holes as holes) and its permissions,
    /// once however many descriptions it has; and opened as each was.
    fn deleted_file(&self, f: &FdRecord) -> Result<OwnedFd> {
        let id = f
            .identity
            .as_ref()
            .ok_or_else(|| anyhow!("a deleted file without its identity"))?;
        let dev = (libc::major(id.dev), libc::minor(id.dev));
        let made = self.deleted.borrow().get(&(dev, id.ino)).cloned();
        let file = match made {
            Some(file) => file,
            None => {
                let file = Rc::new(self.make_deleted(f, id, dev)?);
                self.deleted
                    .borrow_mut()
                    .insert((dev, id.ino), file.clone());
                file
            }
        };
        let mut flags = open_flags(f);
        flags |= libc::O_CLOEXEC | libc::O_NOCTTY;
        let again = sys::cstring(&format!("/proc/self/fd/{}", file.as_raw_fd()))?;
        let fd = sys::open(&again, flags).context("opening it as it was")?;
        if f.pos > 0 {
            t::lseek(fd.as_fd(), f.pos).context("seeking to the saved offset")?;
        }
        Ok(fd)
    }

    fn make_deleted(
        &self,
        f: &FdRecord,
        id: &crate::ckpt::record::FileIdentity,
        dev: (u32, u32),
    ) -> Result<OwnedFd> {
        let (index, carried) = self
            .record
            .files
            .iter()
            .enumerate()
            .find(|(_, c)| c.copies.iter().any(|k| k.dev == dev && k.inode == id.ino))
            .ok_or_else(|| anyhow!("the image holds no copy of it"))?;
        let content = self.carried_content(index)?;
        if content.len() as u64 != carried.size {
            bail!("the image's copy of it is damaged");
        }
        let path = f.target.trim_end_matches(" (deleted)");
        let dir = std::path::Path::new(path)
            .parent()
            .filter(|d| d.is_dir())
            .unwrap_or(std::path::Path::new("/tmp"));
        let file = sys::open_unnamed(dir, 0o600)
            .with_context(|| format!("making it again in {}", dir.display()))?;
        sys::write_with_holes(file.as_fd(), &content, &carried.holes)?;
        sys::fchmod(file.as_fd(), id.mode).context("giving it its permissions")?;
        Ok(file)
    }

    /// eventfd, timerfd, signalfd, epoll: made from what fdinfo said.
    fn anon(&self, f: &FdRecord) -> Result<OwnedFd> {
        let nonblock = f.flags as i32 & libc::O_NONBLOCK;
        let info = f.fdinfo.as_str();
        match f.target.as_str() {
            "anon_inode:[eventfd]" => {
                let count = field(info, "eventfd-count:")
                    .and_then(|v| u64::from_str_radix(v, 16).ok())
                    .unwrap_or(0);
                let sem = if field(info, "eventfd-semaphore:") == Some("1") {
                    libc::EFD_SEMAPHORE
                } else {
                    0
                };
                Ok(t::eventfd(count, nonblock | sem)?)
            }
            "anon_inode:[timerfd]" => {
                let clock: i32 = field(info, "clockid:")
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| anyhow!("timerfd without a clock"))?;
                let (vs, vn) = field(info, "it_value:").and_then(pair).unwrap_or((0, 0));
                let (is, inn) = field(info, "it_interval:").and_then(pair).unwrap_or((0, 0));
                Ok(t::timerfd(
                    clock,
                    nonblock,
                    vs * 1_000_000_000 + vn,
                    is * 1_000_000_000 + inn,
                )?)
            }
            "anon_inode:[signalfd]" => {
                let mask = field(info, "sigmask:")
                    .and_then(|v| u64::from_str_radix(v, 16).ok())
                    .unwrap_or(0);
                Ok(t::signalfd_for(mask, nonblock)?)
            }
            "anon_inode:[eventpoll]" => Ok(t::epoll_create()?),
            "anon_inode:inotify" => inotify_again(f),
            other => bail!("{other} is not supported yet"),
        }
    }

    /// The file locks the session held (fdinfo's `lock:` lines), taken again by their
    /// holders: flock and open-file-description locks once per description, POSIX
    /// record locks once per process and range. A lock another program holds now stops
    /// the resume, naming the file.
    pub(super) fn restore_locks(&self) -> Result<()> {
        let mut done = BTreeSet::new();
        for (&pid, p) in &self.procs {
            let rec = p.rec;
            for f in &rec.fds {
                for line in f.fdinfo.lines().filter_map(|l| l.strip_prefix("lock:")) {
                    let w: Vec<&str> = line.split_whitespace().collect();
                    if w.len() < 8 {
                        continue;
                    }
                    let write = w[3] == "WRITE";
                    let start: i64 = w[6].parse().unwrap_or(0);
                    let len: i64 = match w[7] {
                        "EOF" => 0,
                        end => end.parse::<i64>().map_or(0, |e| e - start + 1),
                    };
                    let key = match w[1] {
                        "FLOCK" => (0, f.desc as i64, 0, 0),
                        "OFDLCK" => (1, f.desc as i64, start, len),
                        "POSIX" => (2, pid as i64 * (1 << 32) + f.fd as i64, start, len),
                        _ => continue,
                    };
                    if !done.insert((key, w[5].to_string())) {
                        continue;
                    }
                    let fd = f.fd as u64;
                    let taken = if w[1] == "FLOCK" {
                        let op = if write { libc::LOCK_EX } else { libc::LOCK_SH } | libc::LOCK_NB;
                        self.call(pid, "flock", nr::FLOCK, &[fd, op as u64])
                    } else {
                        // struct flock: type, whence (SEEK_SET), start, len, pid.
                        let mut fl = [0u8; 32];
                        let kind = if write { libc::F_WRLCK } else { libc::F_RDLCK } as i16;
                        fl[0..2].copy_from_slice(&kind.to_le_bytes());
                        fl[8..16].copy_from_slice(&start.to_le_bytes());
                        fl[16..24].copy_from_slice(&len.to_le_bytes());
                        let at = self.put(pid, 0, &fl)?;
                        let cmd = if w[1] == "POSIX" {
                            libc::F_SETLK
                        } else {
                            libc::F_OFD_SETLK
                        };
                        self.call(pid, "fcntl(F_SETLK)", nr::FCNTL, &[fd, cmd as u64, at])
                    };
                    taken.with_context(|| {
                        format!(
                            "{} was locked by process {} ({}); another program holds a lock on it now",
                            f.target, rec.pid, rec.comm
                        )
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Send `fd` to process `pid` and put it at number `want`.
    pub(super) fn transfer(
        &self,
        pid: i32,
        fd: BorrowedFd,
        want: i32,
        cloexec: bool,
    ) -> Result<()> {
        let got = self.receive(pid, fd)?;
        self.place(pid, got, want, cloexec)
    }

    /// Send `fd` to process `pid`; the number it got there.
    pub(super) fn receive(&self, pid: i32, fd: BorrowedFd) -> Result<i32> {
        sys::send_with_fd(self.xfer.as_fd(), b"f", fd).context("sending a descriptor")?;
        let base = self.scratch() + 3 * PAGE - 512;
        let (iov, buf, control) = (base + 64, base + 128, base + 192);
        let mut msg = [0u64; 7];
        msg[2] = iov;
        msg[3] = 1;
        msg[4] = control;
        msg[5] = 24;
        let mut bytes: Vec<u8> = msg.iter().flat_map(|w| w.to_le_bytes()).collect();
        bytes.resize(64, 0);
        bytes.extend_from_slice(&buf.to_le_bytes());
        bytes.extend_from_slice(&8u64.to_le_bytes());
        t::write_process_memory(pid, base, &bytes)?;
        t::write_process_memory(pid, control, &[0u8; 24])?;
        self.call(pid, "recvmsg", nr::RECVMSG, &[self.xfer_fd as u64, base, 0])?;
        let mut got = [0u8; 4];
        sys::read_process_memory(pid, control + 16, &mut got)?;
        Ok(i32::from_le_bytes(got))
    }

    /// Move descriptor `got` of process `pid` to `want`.
    pub(super) fn place(&self, pid: i32, got: i32, want: i32, cloexec: bool) -> Result<()> {
        if got != want {
            let flags = if cloexec { libc::O_CLOEXEC as u64 } else { 0 };
            self.call(pid, "dup3", nr::DUP3, &[got as u64, want as u64, flags])?;
            self.call(pid, "close", nr::CLOSE, &[got as u64])?;
        } else if cloexec {
            self.call(pid, "fcntl", 72, &[got as u64, libc::F_SETFD as u64, 1])?;
        }
        Ok(())
    }

    /// `/dev/tty`: opened by the process itself, which has its controlling terminal.
    fn open_inside(&self, pid: i32, f: &FdRecord) -> Result<()> {
        let at = self.put_path(pid, &f.target)?;
        let flags = (open_flags(f) & !libc::O_CLOEXEC) as u64;
        let got = self.call(pid, "open", nr::OPEN, &[at, flags, 0])? as i32;
        self.place(pid, got, f.fd, cloexec(f))
    }

    /// Add the epoll set's registrations again, from the process itself (a registration is
    /// keyed by the number the process gave its target).
    fn register_epoll(&self, pid: i32, f: &FdRecord) -> Result<()> {
        for line in f.fdinfo.lines().filter(|l| l.starts_with("tfd:")) {
            let words: Vec<&str> = line.split_whitespace().collect();
            let get = |key: &str| {
                words
                    .iter()
                    .position(|w| *w == key)
                    .and_then(|i| words.get(i + 1))
                    .copied()
            };
            let tfd: u64 = get("tfd:")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| anyhow!("unreadable registration: {line}"))?;
            let events = get("events:")
                .and_then(|v| u32::from_str_radix(v, 16).ok())
                .unwrap_or(0);
            let data = get("data:")
                .and_then(|v| u64::from_str_radix(v, 16).ok())
                .unwrap_or(0);
            let mut ev = events.to_le_bytes().to_vec();
            ev.extend_from_slice(&data.to_le_bytes());
            let at = self.put(pid, 0, &ev)?;
            const EPOLL_CTL_ADD: u64 = 1;
            self.call(
                pid,
                "epoll_ctl",
                nr::EPOLL_CTL,
                &[f.fd as u64, EPOLL_CTL_ADD, tfd, at],
            )?;
        }
        Ok(())
    }
}

/// A unix socket bound to its name again (and listening, if it was). A socket file left
/// at its path by the checkpointed program (it was killed, so it could not remove it) is
/// replaced; one that a running program listens on is not.
fn named_socket(s: &crate::ckpt::record::SocketRecord) -> Result<OwnedFd> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if s.domain != libc::AF_UNIX || s.name.is_empty() {
        bail!("only unix sockets are carried");
    }
    let name = s.display_name();
    let sock = sys::sock::unix_socket(s.kind).context("socket")?;
    let path = (s.name[0] != 0).then(|| std::path::PathBuf::from(&name));
    if let Some(path) = &path
        && let Ok(meta) = std::fs::symlink_metadata(path)
    {
        if !meta.file_type().is_socket() {
            bail!("cannot bind {name} again: a file that is not a socket is there");
        }
        let probe = sys::sock::unix_socket(s.kind).context("socket")?;
        if sys::sock::connect_unix(probe.as_fd(), &s.name).is_ok() {
            bail!("cannot bind {name} again: a running program has it");
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket file {name}"))?;
    }
    sys::sock::bind_unix(sock.as_fd(), &s.name)
        .with_context(|| format!("cannot bind {name} again"))?;
    if let Some(path) = &path
        && s.mode != 0
    {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(s.mode))
            .with_context(|| format!("setting the mode of {name}"))?;
    }
    if s.listening {
        sys::sock::listen(sock.as_fd(), libc::SOMAXCONN)?;
    }
    if s.passcred {
        sys::sock::set_int(sock.as_fd(), libc::SOL_SOCKET, libc::SO_PASSCRED, 1)?;
    }
    Ok(sock)
}

fn cloexec(f: &FdRecord) -> bool {
    f.flags as i32 & libc::O_CLOEXEC != 0
}

/// The open files table `crterm resume` shows (nothing when every file was simply
/// opened): one line of counts, then a line for each file not simply opened.
fn files_table(files: &std::collections::BTreeMap<String, FileOutcome>) -> Vec<String> {
    let count = |f: fn(&FileOutcome) -> bool| files.values().filter(|o| f(o)).count();
    let made = count(|o| *o == FileOutcome::MadeAgain);
    let forced = count(|o| matches!(o, FileOutcome::Forced(_)));
    if made + forced == 0 {
        return Vec::new();
    }
    let mut out = vec![format!(
        "open files: {} opened as they were, {made} made again from the image, {forced} forced",
        files.len() - made - forced
    )];
    for (path, o) in files {
        match o {
            FileOutcome::Opened => {}
            FileOutcome::MadeAgain => out.push(format!("  made again  {path}")),
            FileOutcome::Forced(how) => out.push(format!("  forced      {path}: {how}")),
        }
    }
    out
}

/// The file policy's plan for open file `f` of process `rec` (`Restorer::file_plan`).
fn plan_file(
    record: &SessionRecord,
    force: bool,
    rec: &ProcessRecord,
    f: &FdRecord,
) -> Result<FilePlan> {
    use std::os::unix::fs::MetadataExt;
    if f.target.ends_with(" (deleted)") {
        return Ok(FilePlan::Deleted);
    }
    let refuse_or = |why: String, plan: FilePlan| -> Result<FilePlan> {
        if force {
            Ok(plan)
        } else {
            Err(anyhow!(
                "{} {why}; resume with --force to go on anyway",
                f.target
            ))
        }
    };
    let meta = match std::fs::metadata(&f.target) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let carried = f.identity.as_ref().and_then(|id| {
                let dev = (libc::major(id.dev), libc::minor(id.dev));
                record
                    .files
                    .iter()
                    .position(|c| c.copies.iter().any(|k| k.dev == dev && k.inode == id.ino))
            });
            let dir_here = std::path::Path::new(&f.target)
                .parent()
                .is_some_and(|d| d.is_dir());
            return match (f.kind, carried) {
                    (FdKind::Directory, _) => refuse_or(
                        "is missing here".into(),
                        FilePlan::Instead("/", "is missing here".into()),
                    ),
                    (_, Some(index)) if dir_here => Ok(FilePlan::MakeAgain(index)),
                    (_, Some(_)) => refuse_or(
                        "is missing here and so is its directory (--force: an unnamed copy)"
                            .into(),
                        FilePlan::Unnamed,
                    ),
                    (_, None) => refuse_or(
                        "is missing here, and the image holds no copy of it (it was larger than --carry-files)".into(),
                        FilePlan::Instead(
                            "/dev/null",
                            "is missing here and not in the image".into(),
                        ),
                    ),
                };
        }
        Err(e) => bail!("cannot look at {}: {e}", f.target),
    };
    let (Some(id), FdKind::File) = (&f.identity, f.kind) else {
        return Ok(FilePlan::Open);
    };
    let writes = f.flags as i32 & libc::O_ACCMODE != libc::O_RDONLY;
    let mtime = meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128;
    // The content it had is still its beginning (when it was hashed).
    let prefix_same = || match &id.sha256 {
        Some(h) => crate::ckpt::record::hash_prefix(&f.target, id.size).as_ref() == Some(h),
        None => true,
    };
    let same = meta.size() == id.size && mtime == id.mtime_ns && prefix_same();
    let only_grew = !writes && meta.size() >= id.size && prefix_same();
    if same || only_grew {
        return Ok(FilePlan::Open);
    }
    refuse_or(
        format!(
            "changed since the checkpoint ({} bytes then, {} now) and process {} ({}) {} it",
            id.size,
            meta.size(),
            rec.pid,
            rec.comm,
            if writes { "writes" } else { "reads" }
        ),
        FilePlan::OpenChanged,
    )
}

/// The file policy for every open file of an image's session as it stands here, without
/// making anything (`crterm check`): Err names the first file a resume would refuse.
pub fn check_open_files(record: &SessionRecord) -> Result<()> {
    for p in &record.processes {
        for f in &p.fds {
            if matches!(f.kind, FdKind::File | FdKind::Directory) {
                plan_file(record, false, p, f)
                    .with_context(|| format!("process {} ({}) fd {}", p.pid, p.comm, f.fd))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pts_numbers_from_tty_nr() {
        assert_eq!(pts_number(136 << 8), Some(0));
        assert_eq!(pts_number((136 << 8) | 5), Some(5));
        assert_eq!(pts_number((137 << 8) | 1), Some(257));
        assert_eq!(pts_number((4 << 8) | 1), None);
        assert_eq!(pts_number(0), None);
    }

    #[test]
    fn timer_pairs() {
        assert_eq!(pair("(1, 500)"), Some((1, 500)));
        assert_eq!(pair(" (0, 0)"), Some((0, 0)));
        assert_eq!(pair("nonsense"), None);
    }
}
