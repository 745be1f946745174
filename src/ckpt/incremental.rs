//! What the daemon keeps between checkpoints so that the next one stores only what changed
//! (issue 14): the image the last checkpoint wrote (its path and identity) and a write
//! tracker per process (`task::memory::tracking`), started (or given the mappings made
//! since) while the session was frozen for that checkpoint, just after its memory was
//! read.
//!
//! The rule that keeps an incremental image exact: a page is taken as the parent's only if
//! the process is the one tracked since then (same pid, same start time), its mapping is
//! still registered by that tracking (a mapping made, moved, or inherited by a fork since
//! is not), and the kernel's scan says the page is in memory and was not written. Anything
//! else is read. Whatever goes wrong (a checkpoint that fails after the scans protected the
//! pages again, a parent image changed or gone) makes the next checkpoint a full one.

use super::dump::PreCopyProcess;
use super::{procfs, state};
use crate::image::{self, SectionKind};
use crate::records::{CarriedFile, MapKind, MapRecord, ParentLink, SessionRecord, vm};
use crate::task::memory::tracking::Tracker;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// What `Tracking::arm` made ready.
pub struct Armed {
    /// What the pre-copy reads.
    pub procs: Vec<PreCopyProcess>,
    /// The host pids of the processes whose trackers count writes since the base image,
    /// as before: what they did not write since is the base's.
    pub since_base: std::collections::HashSet<i32>,
}

#[derive(Default)]
pub struct Tracking {
    /// The image the trackers count writes since (None: the next checkpoint is full).
    base: Option<(PathBuf, String)>,
    /// By host pid.
    procs: HashMap<i32, Tracked>,
}

struct Tracked {
    start_time: u64,
    tracker: Tracker,
}

/// What a checkpoint needs of the parent it refers to.
pub struct Parent {
    pub link: ParentLink,
    pub files: Vec<CarriedFile>,
    /// The name the parent was kept under (a hard link made for this checkpoint, which
    /// is to replace the parent's own path): removed again if the checkpoint fails.
    pub made: Option<PathBuf>,
}

/// A process's start time (/proc/PID/stat, field 22): with its pid, which process it is.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// The ranges of a process's memory the tracking registers: the mappings whose pages a
/// checkpoint reads page by page (private memory, private mappings of files).
pub fn ranges(maps: &[MapRecord]) -> Vec<(u64, u64)> {
    maps.iter()
        .filter(|m| tracked_kind(m))
        .map(|m| (m.start, m.end))
        .collect()
}

fn tracked_kind(m: &MapRecord) -> bool {
    match m.kind() {
        MapKind::Anon => m.inode == 0,
        MapKind::PrivateFile => true,
        _ => false,
    }
}

impl Tracking {
    /// Whether host process `pid` is tracked: its memory registered for write-protection
    /// is ours.
    pub fn holds(&self, pid: i32) -> bool {
        self.procs
            .get(&pid)
            .is_some_and(|t| start_time(pid) == Some(t.start_time))
    }

    /// Whether host process `pid` is the process tracked since the base image.
    pub fn tracks(&self, pid: i32) -> bool {
        self.base.is_some() && self.holds(pid)
    }

    /// The parent for a checkpoint into `out` (None: a full checkpoint): the base image,
    /// if it is still there and still the image it was. When `out` is where the base is,
    /// the base is kept under a name of its own beside it (`NAME.ID.img`) for the new image
    /// to refer to.
    pub fn parent_for(&self, out: &Path) -> Option<Parent> {
        let (base, id) = self.base.as_ref()?;
        let index = image::read_index(base, |k| k == SectionKind::SESSION).ok()?;
        if &index.id != id {
            return None;
        }
        let record: SessionRecord = index.meta(SectionKind::SESSION).ok()?;
        let dir = |p: &Path| p.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut made = None;
        // (The same file, however named: the image a session was resumed from may be
        // named otherwise than where its checkpoints go.)
        let same = base == out || {
            use std::os::unix::fs::MetadataExt;
            match (std::fs::metadata(base), std::fs::metadata(out)) {
                (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
                _ => false,
            }
        };
        let path = if same {
            let name = out.file_name()?.to_string_lossy().into_owned();
            let stem = name.strip_suffix(".img").unwrap_or(&name);
            let kept_name = format!("{stem}.{}.img", &id[..16]);
            let kept = dir(out).join(&kept_name);
            match image::read_index(&kept, |_| false) {
                Ok(k) if &k.id == id => {}
                _ => {
                    let _ = std::fs::remove_file(&kept);
                    std::fs::hard_link(base, &kept).ok()?;
                    made = Some(kept);
                }
            }
            kept_name
        } else if dir(base) == dir(out) {
            base.file_name()?.to_string_lossy().into_owned()
        } else {
            std::path::absolute(base)
                .ok()?
                .to_string_lossy()
                .into_owned()
        };
        Some(Parent {
            link: ParentLink {
                path,
                id: id.clone(),
            },
            files: record.files,
            made,
        })
    }

    /// Take the write trackers a resume started (`trackers`: a session pid and the
    /// userfaultfd of each; `init`: the session's init, host pid) and count writes from
    /// the image resumed, `path`, whose identity is `id`. A pid no longer found is left
    /// out (its process is read whole at the next checkpoint).
    pub fn adopt(&mut self, init: i32, trackers: Vec<(i32, OwnedFd)>, path: &Path, id: &str) {
        let Ok(path) = std::path::absolute(path) else {
            return;
        };
        // The session's pids as the host sees them.
        let mut host: HashMap<i32, i32> = HashMap::new();
        let mut stack = vec![init];
        while let Some(pid) = stack.pop() {
            let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                continue;
            };
            if let Some(ns) = procfs::status_last(&status, "NSpid:") {
                host.insert(ns, pid);
            }
            stack.extend(procfs::children(pid));
        }
        for (ns, uffd) in trackers {
            let Some(&pid) = host.get(&ns) else {
                continue;
            };
            let Some(start_time) = start_time(pid) else {
                continue;
            };
            self.procs.insert(
                pid,
                Tracked {
                    start_time,
                    tracker: Tracker::adopt(pid, uffd),
                },
            );
        }
        self.base = Some((path, id.to_string()));
    }

    /// Writes counted so far may already be protected again (a dump scanned them): until
    /// a checkpoint succeeds, none is incremental.
    pub fn forget_base(&mut self) {
        self.base = None;
    }

    /// The checkpoint into `path`, whose identity is `id`, is written: the next counts
    /// from it.
    pub fn set_base(&mut self, path: PathBuf, id: String) {
        self.base = Some((path, id));
    }

    /// Make ready for a pre-copy (the session is frozen: `tasks`, (host pid, its threads),
    /// are its processes): every process tracked, every mapping of the kinds tracked
    /// registered, nothing protected that was not (the pre-copy's scans protect each range
    /// just before reading it; what was written since the base stays written, and what
    /// is registered now counts as written). A process tracked already keeps its tracker;
    /// one that has run another program since (nothing can be registered with its old
    /// one) gets a new one, with `new_ones` (else it is left to be read whole while
    /// frozen). The base is forgotten: the scans protect what was written
    /// since (the caller has the parent already). Returned: what the pre-copy reads, the
    /// registered ranges of each process that it may read, and which processes are still
    /// tracked since the base.
    pub fn arm(&mut self, tasks: &[(i32, Vec<i32>)], new_ones: bool) -> Armed {
        let had_base = self.base.take().is_some();
        let mut since_base = std::collections::HashSet::new();
        self.procs
            .retain(|pid, _| tasks.iter().any(|t| t.0 == *pid));
        let mut out = Vec::new();
        for (pid, tids) in tasks {
            let (Some(start_time), Ok(text)) = (
                start_time(*pid),
                std::fs::read_to_string(format!("/proc/{pid}/maps")),
            ) else {
                continue;
            };
            let maps: Vec<MapRecord> = text.lines().filter_map(procfs::parse_map).collect();
            let wanted = ranges(&maps);
            let kept = match self.procs.get_mut(pid) {
                Some(t) if t.start_time == start_time => {
                    t.tracker.register(&wanted);
                    wanted.is_empty() || wanted.iter().any(|r| t.tracker.ranges().contains(r))
                }
                _ => false,
            };
            if kept && had_base {
                since_base.insert(*pid);
            }
            // For an incremental image, a process not tracked since the parent is read
            // whole while frozen, as always: so the pages a child shares with its
            // parent since a fork are found shared, and saved once.
            if !kept && !new_ones {
                self.procs.remove(pid);
                continue;
            }
            if !kept {
                self.procs.remove(pid);
                let exec = state::exec_maps(&maps);
                match Tracker::start(*pid, tids, &exec, &wanted, false) {
                    Ok(tracker) => {
                        self.procs.insert(
                            *pid,
                            Tracked {
                                start_time,
                                tracker,
                            },
                        );
                    }
                    Err(_) => continue,
                }
            }
            let registered = self.procs[pid].tracker.ranges();
            out.push(PreCopyProcess {
                host: *pid,
                ranges: maps
                    .iter()
                    .filter(|m| {
                        tracked_kind(m)
                            && m.perms.starts_with('r')
                            && registered.contains(&(m.start, m.end))
                    })
                    .map(|m| (m.start, m.end, m.kind() == MapKind::Anon))
                    .collect(),
            });
        }
        Armed {
            procs: out,
            since_base,
        }
    }

    /// Track every process from now on (the session is frozen, its memory read): `procs`
    /// are (host pid, its threads, its mappings as the record has them). A process tracked already keeps its
    /// tracker, which registers the mappings made since (those without the tracking's
    /// registration bit in the record); a new one, or one that has run another program
    /// since (none of its mappings registered), gets a new tracker. A process that cannot
    /// be tracked is read whole at the next checkpoint.
    pub fn update(&mut self, procs: &[(i32, Vec<i32>, Vec<MapRecord>)]) {
        self.procs
            .retain(|pid, _| procs.iter().any(|p| p.0 == *pid));
        for (pid, tids, maps) in procs {
            let Some(start_time) = start_time(*pid) else {
                continue;
            };
            let eligible: Vec<&MapRecord> = maps.iter().filter(|m| tracked_kind(m)).collect();
            let fresh: Vec<(u64, u64)> = eligible
                .iter()
                .filter(|m| m.vm & vm::WRITE_TRACKED == 0)
                .map(|m| (m.start, m.end))
                .collect();
            let same_memory = eligible.iter().any(|m| m.vm & vm::WRITE_TRACKED != 0);
            if let Some(t) = self.procs.get_mut(pid)
                && t.start_time == start_time
                && same_memory
            {
                if t.tracker.add(&fresh).is_err() {
                    self.procs.remove(pid);
                }
                continue;
            }
            // (The old tracker first: a mapping registered with one cannot be with another.)
            self.procs.remove(pid);
            let exec = state::exec_maps(maps);
            if let Ok(tracker) = Tracker::start(*pid, tids, &exec, &ranges(maps), true) {
                self.procs.insert(
                    *pid,
                    Tracked {
                        start_time,
                        tracker,
                    },
                );
            }
        }
    }
}
