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

/// The file each epoll registration is of, where the owner no longer holds it at the
/// number it was registered through (it closed that number, or the number holds another
/// file now): the description of it some process of the session holds
/// (`EpollRegistration::desc`, kcmp KCMP_EPOLL_TFD says which). A registration of a file
/// the session holds no descriptor of (one held only outside, or in flight) is refused.
/// Runs after the descriptions are numbered; `hosts[i]` is the host pid of the i-th live
/// process.
pub fn find_epoll_targets(record: &mut SessionRecord, hosts: &[i32]) -> io::Result<()> {
    let live: Vec<usize> = (0..record.processes.len())
        .filter(|&i| record.processes[i].zombie.is_none())
        .collect();
    // Every descriptor of the session: (host pid, fd, description, made by the init).
    let held: Vec<(i32, i32, u32, bool)> = live
        .iter()
        .zip(hosts)
        .flat_map(|(&pi, &host)| {
            record.processes[pi].fds.iter().map(move |f| {
                (
                    host,
                    f.fd,
                    f.desc,
                    !matches!(f.object, FdObject::ControllingTty),
                )
            })
        })
        .collect();
    for (&pi, &host) in live.iter().zip(hosts) {
        let p = &mut record.processes[pi];
        let own: Vec<i32> = p.fds.iter().map(|f| f.fd).collect();
        for f in &mut p.fds {
            let efd = f.fd;
            let FdObject::Epoll { registrations } = &mut f.object else {
                continue;
            };
            let mut seen: Vec<i32> = Vec::new();
            for r in registrations.iter_mut() {
                let toff = seen.iter().filter(|&&n| n == r.fd).count() as u32;
                seen.push(r.fd);
                let is = |holder: i32, fd: i32| {
                    sys::trace::same_epoll_target(holder, fd, host, efd, r.fd, toff)
                        .unwrap_or(false)
                };
                if own.contains(&r.fd) && is(host, r.fd) {
                    continue;
                }
                // The owner's own descriptors first, then the others'.
                let found = held
                    .iter()
                    .filter(|h| h.0 == host)
                    .chain(held.iter().filter(|h| h.0 != host))
                    .find(|h| is(h.0, h.1));
                match found {
                    Some(&(_, _, desc, true)) => r.desc = Some(desc),
                    _ => {
                        return Err(io::Error::new(
                            io::ErrorKind::Unsupported,
                            format!(
                                "process {} ({}) holds fd {efd}, an epoll set with a registration (through fd {}) of a file the session holds no descriptor of, which this version cannot carry",
                                p.pid, p.comm, r.fd
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// As root: the path of watch `w`'s inode, found by opening the kernel's file handle of
/// it (open_by_handle_at, which takes CAP_DAC_READ_SEARCH) on its file system (one of
/// the `known` paths on that device, or its mount point) and reading where it is. None
/// when that cannot be done or finds no path (the inode is deleted).
fn path_by_handle(
    w: &InotifyWatch,
    known: &std::collections::HashMap<((u32, u32), u64), String>,
) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let (kind, bytes) = w.handle.as_ref()?;
    let on_device = known
        .iter()
        // A directory (opening a device or a FIFO to reach its file system would do more).
        .find(|((dev, _), p)| *dev == w.dev && std::path::Path::new(p).is_dir())
        .map(|(_, p)| p.clone())
        .or_else(|| mount_point_of(w.dev))?;
    let mount = sys::open(
        &sys::cstring(&on_device).ok()?,
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
    )
    .ok()?;
    // (open_by_handle_at takes no O_PATH descriptor for its file system.)
    let file = sys::open_by_handle(mount.as_fd(), *kind, bytes).ok()?;
    let path = std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&file)
    ))
    .ok()?;
    let path = path.to_str()?.to_string();
    let m = std::fs::metadata(&path).ok()?;
    let same = m.ino() == w.ino && (libc::major(m.dev()), libc::minor(m.dev())) == w.dev;
    (same && !path.ends_with(" (deleted)")).then_some(path)
}

/// Where a file system of device `dev` is mounted, from /proc/self/mountinfo.
fn mount_point_of(dev: (u32, u32)) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (major, minor) = f.get(2)?.split_once(':')?;
        ((major.parse().ok()?, minor.parse().ok()?) == dev)
            .then(|| f.get(4).map(|s| s.to_string()))?
    })
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
                match known
                    .get(&(w.dev, w.ino))
                    .cloned()
                    .or_else(|| path_by_handle(w, &known))
                {
                    Some(path) => w.path = path,
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
    pub(crate) fn register_epoll(
        &self,
        pid: i32,
        f: &FdRecord,
        descs: &super::Descriptions,
    ) -> Result<()> {
        let FdObject::Epoll { registrations } = &f.object else {
            return Ok(());
        };
        let holds = |fd: i32| self.proc(pid).rec.fds.iter().find(|g| g.fd == fd);
        for r in registrations {
            let (tfd, events, data) = (r.fd as u64, r.events, r.data);
            let mut ev = events.to_le_bytes().to_vec();
            ev.extend_from_slice(&data.to_le_bytes());
            let at = self.put(pid, 0, &ev)?;
            const EPOLL_CTL_ADD: u64 = 1;
            let add = || {
                self.call(
                    pid,
                    "epoll_ctl",
                    nr::EPOLL_CTL,
                    &[f.fd as u64, EPOLL_CTL_ADD, tfd, at],
                )
            };
            let Some(desc) = r.desc else {
                add()?;
                continue;
            };
            // Its file put at the number for the moment (what the number holds now set
            // aside and put back, with its close-on-exec flag), so the registration is
            // keyed as it was.
            let file = descs.by_desc.get(&desc).ok_or_else(|| {
                anyhow!("the file of the registration through fd {tfd} was not made")
            })?;
            let got = self.receive(pid, file.as_fd())? as u64;
            let aside = match holds(r.fd) {
                Some(g) => {
                    let spare = self.call(
                        pid,
                        "fcntl(F_DUPFD)",
                        nr::FCNTL,
                        &[tfd, libc::F_DUPFD as u64, 0],
                    )?;
                    Some((spare, g))
                }
                None => None,
            };
            // (Received at the lowest free number: that may be the very one.)
            if got != tfd {
                self.call(pid, "dup3", nr::DUP3, &[got, tfd, 0])?;
            }
            add()?;
            match aside {
                Some((spare, g)) => {
                    let flags = if super::cloexec(g) {
                        libc::O_CLOEXEC as u64
                    } else {
                        0
                    };
                    self.call(pid, "dup3", nr::DUP3, &[spare, tfd, flags])?;
                    self.call(pid, "close", nr::CLOSE, &[spare])?;
                }
                None => {
                    self.call(pid, "close", nr::CLOSE, &[tfd])?;
                }
            }
            if got != tfd {
                self.call(pid, "close", nr::CLOSE, &[got])?;
            }
        }
        Ok(())
    }
}
