//! Notification descriptors: eventfd (its count, semaphore mode), timerfd (its clock and
//! what is left of it), signalfd (its mask), epoll (its registrations, added again from
//! the process itself, keyed by the number it registered) and inotify (its watches at
//! their numbers, each watch's path found by inode among what the session holds).

use crate::ckpt::procfs;
use crate::inject::nr;
use crate::records::*;
use crate::restore::Restorer;
use crate::sys::{self, trace as t};
use anyhow::{Context, Result, anyhow, bail};
use std::collections::BTreeSet;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

// ---- checkpoint ----------------------------------------------------------------------

/// The state of an anonymous-inode descriptor of kind `kind` (`[eventfd]`, `inotify` ...)
/// from its fdinfo `info`: Ok(None) for a kind crterm does not carry, Err naming what did
/// not parse.
pub fn read(kind: &str, info: &str) -> Result<Option<FdObject>, &'static str> {
    Ok(Some(match kind {
        "[eventfd]" => {
            let (count, semaphore) = procfs::parse_eventfd(info).ok_or("eventfd count")?;
            FdObject::EventFd { count, semaphore }
        }
        "[timerfd]" => FdObject::TimerFd(procfs::parse_timerfd(info).ok_or("timerfd settings")?),
        "[signalfd]" => FdObject::SignalFd {
            mask: procfs::parse_signalfd(info).ok_or("signalfd mask")?,
        },
        "[eventpoll]" => FdObject::Epoll {
            registrations: procfs::parse_epoll(info).ok_or("epoll registrations")?,
        },
        "inotify" => FdObject::Inotify {
            watches: procfs::parse_watches(info).ok_or("inotify watches")?,
        },
        _ => return Ok(None),
    }))
}

/// The path of every inotify watch: the file or directory with the watched inode among
/// what the session holds (open files, their directories, cwd, root, exe, mapped files).
/// A watch whose path is not found stops the checkpoint, named.
pub fn find_watched_paths(record: &mut SessionRecord) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !record.processes.iter().any(|p| {
        p.fds
            .iter()
            .any(|f| matches!(&f.object, FdObject::Inotify { watches } if !watches.is_empty()))
    }) {
        return Ok(());
    }
    let mut candidates: Vec<String> = Vec::new();
    for p in &record.processes {
        candidates.extend([p.cwd.clone(), p.root.clone(), p.exe.clone()]);
        candidates.extend(
            p.fds
                .iter()
                .filter(|f| f.is_file_or_dir())
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
            let FdObject::Inotify { watches } = &mut f.object else {
                continue;
            };
            for w in watches {
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

// ---- resume --------------------------------------------------------------------------

/// A notification descriptor made again (`nonblock`: O_NONBLOCK or 0). An epoll set is
/// made empty: `register_epoll` adds its registrations once every descriptor is in place.
pub fn make(object: &FdObject, nonblock: i32) -> Result<OwnedFd> {
    Ok(match object {
        FdObject::EventFd { count, semaphore } => {
            let sem = if *semaphore { libc::EFD_SEMAPHORE } else { 0 };
            t::eventfd(*count, nonblock | sem)?
        }
        FdObject::TimerFd(timer) => {
            t::timerfd(timer.clock, nonblock, timer.value_ns, timer.interval_ns)?
        }
        FdObject::SignalFd { mask } => t::signalfd_for(*mask, nonblock)?,
        FdObject::Epoll { .. } => t::epoll_create()?,
        FdObject::Inotify { watches } => inotify_again(watches)?,
        other => bail!("not a notification descriptor: {other:?}"),
    })
}

/// An inotify instance with its watches at their numbers: added in order, a placeholder
/// watch on some other directory where a number is missing (removed afterwards, and the
/// notices of their removal read out, so the program sees none of it).
pub(crate) fn inotify_again(watches: &[crate::records::InotifyWatch]) -> Result<OwnedFd> {
    use std::os::unix::fs::MetadataExt;
    let fd = sys::inotify_init(libc::IN_NONBLOCK)?;
    let mut watches = watches.to_vec();
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
    Ok(fd)
}

impl Restorer<'_> {
    /// Add the epoll set's registrations again, from the process itself (a registration is
    /// keyed by the number the process gave its target).
    pub(crate) fn register_epoll(&self, pid: i32, f: &FdRecord) -> Result<()> {
        let FdObject::Epoll { registrations } = &f.object else {
            return Ok(());
        };
        for r in registrations {
            let (tfd, events, data) = (r.fd as u64, r.events, r.data);
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
