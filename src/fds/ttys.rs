//! Terminals: the session's ptys (their settings, window sizes, packet mode, locks, and
//! the bytes queued both ways, taken out at checkpoint and put back), pty slaves and
//! masters held by the session's processes, and `/dev/tty`.

use super::{cloexec, open_flags};
use crate::inject::nr;
use crate::records::*;
use crate::restore::Restorer;
use crate::sys;
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

// ---- checkpoint ----------------------------------------------------------------------

/// Pty master `fd` of `pid` (`info`: its fdinfo), through a copy of the very descriptor
/// (opening the path would make a new pty).
pub fn read_master(pid: i32, fd: i32, info: &str) -> io::Result<Option<(u32, TtyRecord)>> {
    let master = sys::trace::copy_fd_of(pid, fd)?;
    let (termios, size) = sys::tty_settings(master.as_fd())?;
    let Ok(index) = crate::ckpt::procfs::fdinfo_field(info, "tty-index:").parse() else {
        return Ok(None);
    };
    // The slave's node, in the holder's devpts.
    let node = std::fs::metadata(format!("/proc/{pid}/root/dev/pts/{index}"))?;
    let tty = TtyRecord {
        termios,
        cols: size.cols,
        rows: size.rows,
        typed: Vec::new(),
        output: Vec::new(),
        packet: sys::pty_packet_mode(master.as_fd())?,
        locked: sys::pty_locked(master.as_fd())?,
        mode: node.permissions().mode() & 0o7777,
        owner: (node.uid(), node.gid()),
    };
    Ok(Some((index, tty)))
}

/// Pty slave `fd` of `pid`: its settings and window size.
pub fn read_slave(pid: i32, fd: i32) -> io::Result<TtyRecord> {
    let (termios, size) = sys::peek_tty(pid, fd)?;
    let node = std::fs::metadata(format!("/proc/{pid}/fd/{fd}"))?;
    Ok(TtyRecord {
        termios,
        cols: size.cols,
        rows: size.rows,
        typed: Vec::new(),
        output: Vec::new(),
        packet: false,
        locked: false,
        mode: node.permissions().mode() & 0o7777,
        owner: (node.uid(), node.gid()),
    })
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
            let _ = put_typed_input(master.as_fd(), &typed);
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
/// at its slave and not read (`take_typed_input`). Only ptys whose master is at hand are
/// touched: what is taken must go back.
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
            let FdObject::PtyMaster { index: n, tty } = &mut f.object else {
                continue;
            };
            let n = *n;
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
            let Some(n) = f
                .target
                .strip_prefix("/dev/pts/")
                .and_then(|n| n.parse().ok())
            else {
                continue;
            };
            let FdObject::PtySlave(tty) = &mut f.object else {
                continue;
            };
            let Some(p) = taken.ptys.iter_mut().find(|p| p.0 == n) else {
                continue;
            };
            if !seen.insert(n) {
                continue;
            }
            let (typed, failed) = take_typed_input(host, f.fd);
            tty.typed = typed.clone();
            p.2 = typed;
            if let Some(e) = failed {
                return Err(io::Error::other(format!("the keys typed at pty {n}: {e}")));
            }
        }
    }
    crate::ckpt::hooks::fail_at("queues")?;
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

// ---- resume --------------------------------------------------------------------------

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

/// Open the session's ptys in its fresh devpts, in order, until every number the image
/// uses exists; set their saved settings, sizes and modes, and put back the bytes that were
/// queued in them both ways. Returns the masters by number.
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
                e.1 = e.1.or(f.tty());
            } else if let Some(n) = pts_of_path(&f.target) {
                let e = wanted.entry(n).or_default();
                e.0 = e.0.or(f.tty());
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
        // Its node's owner and mode, as the programs left them (`mesg n`; a program that
        // hands a pty to another user).
        if settings.mode != 0 {
            let node = std::fs::metadata(format!("/proc/self/fd/{}", slave.as_raw_fd()))?;
            if (node.uid(), node.gid()) != settings.owner {
                sys::fchown(slave.as_fd(), settings.owner.0, settings.owner.1)
                    .with_context(|| format!("giving /dev/pts/{n} its owner"))?;
            }
            if node.permissions().mode() & 0o7777 != settings.mode {
                sys::fchmod(slave.as_fd(), settings.mode)
                    .with_context(|| format!("giving /dev/pts/{n} its mode"))?;
            }
        }
        let size = sys::WinSize {
            cols: settings.cols,
            rows: settings.rows,
        };
        let _ = sys::set_winsize(master, size);
        // What was typed and not yet read is waiting for the program again, and what the
        // programs wrote and the master's holder had not read, for that holder.
        if let Some(typed) = slave_rec.map(|t| &t.typed) {
            put_typed_input(master, typed)
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

impl Restorer<'_> {
    /// `/dev/tty`: opened by the process itself, which has its controlling terminal.
    pub(crate) fn open_inside(&self, pid: i32, f: &FdRecord) -> Result<()> {
        let at = self.put_path(pid, &f.target)?;
        let flags = (open_flags(f) & !libc::O_CLOEXEC) as u64;
        let got = self.call(pid, "open", nr::OPEN, &[at, flags, 0])? as i32;
        self.place(pid, got, f.fd, cloexec(f))
    }
}

// ---- typed input, both ways ----------------------------------------------------------
//
// The line discipline keeps what was typed and not read after its input processing
// (erase and kill done, CR made NL ...). In canonical mode a read returns one complete
// line, and the line being typed is not readable at all. So: complete lines are read one
// by one as the program would (each read says how the line ended), then canonical mode
// is switched off for an instant to take the rest, the line being typed, and back on (with
// nothing left, that leaves the line discipline as it was). The record holds the bytes to
// write to the master to build the same queue again (`put_typed_input`): each line with
// its end, the line being typed last.

/// Bytes of a terminal's own that end a line in canonical mode, besides NL.
fn line_ends(t: &sys::Termios) -> Vec<u8> {
    let mut ends = vec![b'\n'];
    ends.push(t.c_cc[libc::VEOL]);
    if t.c_lflag & libc::IEXTEN != 0 {
        ends.push(t.c_cc[libc::VEOL2]);
    }
    ends.retain(|&c| c != 0);
    ends
}

/// The settings under which `typed` is written back: the line discipline takes every byte
/// as it is (no input processing, no signals, no erase or kill), ends lines where they
/// ended, and echoes each byte once, unchanged (OPOST off), so that the echo says when it
/// has taken them all. Flow control stays as it was (in packet mode its changes reach the
/// master's holder). Returns those settings and the byte that quotes the next one.
fn write_back_settings(t: &sys::Termios) -> (sys::Termios, u8) {
    let mut w = *t;
    w.c_iflag &= libc::IXON | libc::IXOFF | libc::IXANY | libc::IUTF8;
    w.c_oflag &= !libc::OPOST;
    w.c_lflag = libc::ECHO | (t.c_lflag & libc::ICANON);
    let mut quote = 0;
    if t.c_lflag & libc::ICANON != 0 {
        w.c_lflag |= libc::IEXTEN;
        for c in [libc::VERASE, libc::VKILL, libc::VWERASE, libc::VREPRINT] {
            w.c_cc[c] = 0;
        }
        if t.c_lflag & libc::IEXTEN == 0 {
            w.c_cc[libc::VEOL2] = 0;
        }
        if w.c_cc[libc::VEOF] == 0 {
            w.c_cc[libc::VEOF] = 4;
        }
        let used = [w.c_cc[libc::VEOF], w.c_cc[libc::VEOL], w.c_cc[libc::VEOL2]];
        quote = (0x16u8..=0xff).find(|c| !used.contains(c)).unwrap_or(0x16);
        w.c_cc[libc::VLNEXT] = quote;
    } else {
        w.c_cc[libc::VMIN] = t.c_cc[libc::VMIN];
    }
    (w, quote)
}

/// Take out what was typed at the terminal process `pid` holds as `fd` and no program has
/// read yet, as the bytes that build the same queue again (see above), and why it could
/// not all be taken (what was taken must go back all the same).
pub fn take_typed_input(pid: i32, fd: i32) -> (Vec<u8>, Option<io::Error>) {
    match take_typed(pid, fd) {
        Ok(r) => r,
        Err(e) => (Vec::new(), Some(e)),
    }
}

fn take_typed(pid: i32, fd: i32) -> io::Result<(Vec<u8>, Option<io::Error>)> {
    let tty = sys::open_tty_of(pid, fd)?;
    let t = sys::get_termios(tty.as_fd())?;
    let mut buf = [0u8; 8192];
    if t.c_lflag & libc::ICANON == 0 {
        let mut out = Vec::new();
        let failed = read_available(tty.as_fd(), &mut buf, |b| out.extend_from_slice(b));
        return Ok((out, failed));
    }
    let (w, quote) = write_back_settings(&t);
    let ends = line_ends(&w);
    let eof = w.c_cc[libc::VEOF];
    let mut special = ends.clone();
    special.extend([eof, quote]);
    if t.c_iflag & libc::IXON != 0 {
        special.extend([t.c_cc[libc::VSTART], t.c_cc[libc::VSTOP]]);
    }
    special.retain(|&c| c != 0);
    let quoted = |out: &mut Vec<u8>, bytes: &[u8]| {
        for &b in bytes {
            if special.contains(&b) {
                out.push(quote);
            }
            out.push(b);
        }
    };
    let mut out = Vec::new();
    // Complete lines, one per read: one that does not end in a line end was ended by EOF
    // (^D, which the read drops; an empty one reads as 0 bytes).
    let mut failed = None;
    for _ in 0..=4096 {
        match sys::read(tty.as_fd(), &mut buf) {
            Ok(n) => {
                let line = &buf[..n];
                match line.last() {
                    Some(c) if ends.contains(c) => {
                        quoted(&mut out, &line[..n - 1]);
                        out.push(*c);
                    }
                    _ => {
                        quoted(&mut out, line);
                        out.push(eof);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    // The line being typed.
    if failed.is_none() {
        let mut raw = t;
        raw.c_lflag &= !libc::ICANON;
        raw.c_cc[libc::VMIN] = 0;
        raw.c_cc[libc::VTIME] = 0;
        match sys::set_termios_now(tty.as_fd(), &raw) {
            Ok(()) => {
                failed = read_available(tty.as_fd(), &mut buf, |b| quoted(&mut out, b));
                if let Err(e) = sys::set_termios_now(tty.as_fd(), &t) {
                    failed.get_or_insert(e);
                }
            }
            Err(e) => failed = Some(e),
        }
    }
    Ok((out, failed))
}

/// Read what a terminal (non-blocking, non-canonical) holds until none is left, handing
/// each read to `got` (the kernel holds at most 4 KiB of input per terminal); the error
/// that stopped it early, if any.
fn read_available(
    tty: std::os::fd::BorrowedFd,
    buf: &mut [u8],
    mut got: impl FnMut(&[u8]),
) -> Option<io::Error> {
    loop {
        match sys::read(tty, buf) {
            Ok(0) => return None,
            Ok(n) => got(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) => return Some(e),
        }
    }
}

/// Write `typed` (as `take_typed_input` gave it) into the pty whose master is `master`,
/// under the settings its slave has now, and wait until the line discipline has taken it
/// all (its echo, read off the master here, says so): the settings are changed for that
/// while and then set back, and nothing is echoed to the master's holder.
pub fn put_typed_input(master: std::os::fd::BorrowedFd, typed: &[u8]) -> io::Result<()> {
    if typed.is_empty() {
        return Ok(());
    }
    let t = sys::get_termios(master)?;
    let needs_care = t.c_lflag & (libc::ICANON | libc::ECHO | libc::ECHONL | libc::ISIG) != 0
        || t.c_iflag
            & (libc::INLCR | libc::IGNCR | libc::ICRNL | libc::ISTRIP | libc::IUCLC | libc::PARMRK)
            != 0;
    if !needs_care {
        return sys::write_all(master, typed);
    }
    let (w, quote) = write_back_settings(&t);
    // What will be echoed: every byte but the quotes and the EOFs.
    let mut echoed = 0usize;
    if t.c_lflag & libc::ICANON != 0 {
        let eof = w.c_cc[libc::VEOF];
        let mut quoting = false;
        for &b in typed {
            if quoting {
                quoting = false;
                echoed += 1;
            } else if b == quote {
                quoting = true;
            } else if b != eof {
                echoed += 1;
            }
        }
    } else {
        echoed = typed.len();
    }
    let packet = sys::pty_packet_mode(master).unwrap_or(false);
    sys::set_termios_now(master, &w)?;
    let written = sys::write_all(master, typed).and_then(|()| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut got = 0;
        let mut buf = [0u8; 4096];
        while got < echoed {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(io::Error::other(format!(
                    "the terminal took {got} of {echoed} typed bytes back in time"
                )));
            }
            let mut p = [<sys::PollFd as sys::PollFdExt>::new(
                master.as_raw_fd(),
                libc::POLLIN,
            )];
            if sys::poll(&mut p, left.as_millis() as i32 + 1)? == 0 {
                continue;
            }
            match sys::read(master, &mut buf) {
                Ok(n) if packet => got += n.saturating_sub(1) * usize::from(buf[0] == 0),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    let back = sys::set_termios_now(master, &t);
    written.and(back)
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
}
