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
            let typed = sys::take_typed_input(host, f.fd)
                .map_err(|e| io::Error::other(format!("the keys typed at pty {n}: {e}")))?;
            tty.typed = typed.clone();
            p.2 = typed;
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

impl Restorer<'_> {
    /// `/dev/tty`: opened by the process itself, which has its controlling terminal.
    pub(crate) fn open_inside(&self, pid: i32, f: &FdRecord) -> Result<()> {
        let at = self.put_path(pid, &f.target)?;
        let flags = (open_flags(f) & !libc::O_CLOEXEC) as u64;
        let got = self.call(pid, "open", nr::OPEN, &[at, flags, 0])? as i32;
        self.place(pid, got, f.fd, cloexec(f))
    }
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
