//! Regular files, directories, files deleted while open, character devices, and the
//! locks held through descriptors. At checkpoint a file is its identity (device, inode,
//! size, mtime, mode, links; its content hashed after the thaw, and carried when small or
//! deleted: `ckpt::dump`); at resume the file policy decides, before anything is made,
//! whether each is opened, made again from the image, or refused.

use super::open_flags;
use crate::inject::nr;
use crate::records::*;
use crate::restore::Restorer;
use crate::sys::{self, trace as t};
use anyhow::{Context, Result, anyhow, bail};
use std::collections::BTreeSet;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::rc::Rc;

// ---- checkpoint ----------------------------------------------------------------------

/// What identifies a file, from what stat says of it (its content hash comes later).
fn identity_of(m: &std::fs::Metadata) -> FileIdentity {
    use std::os::unix::fs::MetadataExt;
    FileIdentity {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        mode: m.mode() & 0o7777,
        nlink: m.nlink(),
        sha256: None,
    }
}

/// A regular file or directory (`m`: what stat says of it through the descriptor): its
/// identity, or a refusal of what a resume could not make again.
pub fn read(m: &std::fs::Metadata, target: &str) -> Result<FdObject, super::Why> {
    use super::Why::Refused;
    use std::os::unix::fs::MetadataExt;
    let deleted = target.ends_with(" (deleted)");
    let identity = identity_of(m);
    if m.is_dir() {
        if deleted {
            return Err(Refused("a directory deleted while open".into()));
        }
        return Ok(FdObject::Directory(identity));
    }
    if deleted && m.size() > DELETED_FILE_LIMIT {
        return Err(Refused(
            "a file deleted while open, larger than 1 GiB".into(),
        ));
    }
    // Unlinked from this path, it still has a name elsewhere (a hard link), which nothing
    // records: made again unnamed, it would no longer be that file.
    if deleted && m.nlink() > 0 {
        return Err(Refused(
            "a file removed from this path that still has another name (a hard link)".into(),
        ));
    }
    Ok(FdObject::File(identity))
}

/// A memfd (`target`: `/memfd:NAME (deleted)`, `m`: what stat says of it): its name,
/// seals and identity; None for a file of that name that is no memfd (it has no seals to
/// give, as a file of a disk has none), which is read as any file. A memfd of huge pages
/// is refused.
pub fn read_memfd(
    pid: i32,
    fd: i32,
    m: &std::fs::Metadata,
    target: &str,
) -> Result<Option<FdObject>, super::Why> {
    use std::os::unix::fs::MetadataExt;
    const HUGETLBFS_MAGIC: i64 = 0x958458f6;
    let Some(name) = target
        .strip_prefix("/memfd:")
        .and_then(|t| t.strip_suffix(" (deleted)"))
    else {
        return Ok(None);
    };
    let failed = |e| super::Why::Failed("memfd", e);
    let copy = sys::trace::copy_fd_of(pid, fd).map_err(failed)?;
    if sys::trace::fs_type(copy.as_fd()).map_err(failed)? == HUGETLBFS_MAGIC {
        return Err(super::Why::Refused(
            "a memfd of huge pages (MFD_HUGETLB)".into(),
        ));
    }
    let seals = match sys::trace::get_seals(copy.as_fd()) {
        Ok(seals) => seals,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
        Err(e) => return Err(failed(e)),
    };
    if m.size() > DELETED_FILE_LIMIT {
        return Err(super::Why::Refused("a memfd larger than 1 GiB".into()));
    }
    Ok(Some(FdObject::Memfd {
        name: name.to_string(),
        seals,
        identity: identity_of(m),
    }))
}

/// A memfd sealed against writing (F_SEAL_WRITE) that a process maps shared is refused: a
/// resume writes the pages of shared mappings through them, and the kernel does not let
/// a memfd be sealed so while a mapping may write it.
pub fn check_memfds(record: &SessionRecord) -> std::io::Result<()> {
    for p in &record.processes {
        for f in &p.fds {
            let FdObject::Memfd {
                seals, identity, ..
            } = &f.object
            else {
                continue;
            };
            if *seals & libc::F_SEAL_WRITE as u32 == 0 {
                continue;
            }
            let dev = (libc::major(identity.dev), libc::minor(identity.dev));
            let mapper = record.processes.iter().find(|q| {
                q.maps.iter().any(|m| {
                    m.perms.as_bytes().get(3) == Some(&b's')
                        && (m.dev, m.inode) == (dev, identity.ino)
                })
            });
            if let Some(q) = mapper {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    format!(
                        "process {} ({}) holds fd {}, a memfd sealed against writing (F_SEAL_WRITE) that process {} ({}) maps shared ({}), which this version cannot carry",
                        p.pid, p.comm, f.fd, q.pid, q.comm, f.target
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A symbolic link held itself (O_PATH | O_NOFOLLOW; `m`: what stat says of it through
/// the descriptor): its text, read at its path, which must still be this link.
pub fn read_symlink(m: &std::fs::Metadata, target: &str) -> Result<FdObject, super::Why> {
    use std::os::unix::fs::MetadataExt;
    let moved = || super::Why::Refused("a symbolic link no longer at its path".into());
    let here = std::fs::symlink_metadata(target).map_err(|_| moved())?;
    if (here.dev(), here.ino()) != (m.dev(), m.ino()) {
        return Err(moved());
    }
    let text = std::fs::read_link(target).map_err(|_| moved())?;
    let text = text
        .to_str()
        .ok_or_else(|| super::Why::Refused("a symbolic link whose text is not UTF-8".into()))?;
    Ok(FdObject::Symlink {
        text: text.to_string(),
        identity: identity_of(m),
    })
}

// ---- resume --------------------------------------------------------------------------

/// What the file policy says of a symbolic link held itself: there with its text: open
/// it (None); missing: make it again (`Some(MadeAgain)`); something else at its path:
/// refused, or with `--force` opened as it is.
fn symlink_plan(path: &str, text: &str, force: bool) -> Result<Option<FileOutcome>> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Some(FileOutcome::MadeAgain)),
        Err(e) => bail!("cannot look at {path}: {e}"),
        Ok(m)
            if m.file_type().is_symlink()
                && std::fs::read_link(path).is_ok_and(|t| t.as_os_str() == text) =>
        {
            Ok(None)
        }
        Ok(_) if force => Ok(Some(FileOutcome::Forced(
            "no longer the symbolic link it was; opened as it is".into(),
        ))),
        Ok(_) => bail!(
            "{path} was a symbolic link to {text} and is something else now (--force: open what is there)"
        ),
    }
}

/// A symbolic link held itself, opened again (made again first where it is missing).
pub(crate) fn open_symlink(
    path: &str,
    text: &str,
    f: &FdRecord,
    force: bool,
) -> Result<(OwnedFd, FileOutcome)> {
    let plan = symlink_plan(path, text, force)?;
    if plan == Some(FileOutcome::MadeAgain) {
        std::os::unix::fs::symlink(text, path)
            .with_context(|| format!("cannot make the symbolic link {path} again"))?;
    }
    let fd = sys::open(&sys::cstring(path)?, open_flags(f) | libc::O_CLOEXEC)
        .with_context(|| format!("cannot open {path}"))?;
    Ok((fd, plan.unwrap_or(FileOutcome::Opened)))
}

/// What the file policy says for an open regular file or directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FilePlan {
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
pub(crate) enum FileOutcome {
    /// There, unchanged (or only grown, for a file the session reads): opened.
    Opened,
    /// Missing here, or deleted while open: made again from the content in the image.
    MadeAgain,
    /// Refused but for `--force`: what was done instead.
    Forced(String),
}

/// The open files table `crterm resume` shows (nothing when every file was simply
/// opened): one line of counts, then a line for each file not simply opened.
pub(crate) fn files_table(files: &std::collections::BTreeMap<String, FileOutcome>) -> Vec<String> {
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
            let carried = f.identity().and_then(|id| {
                let dev = (libc::major(id.dev), libc::minor(id.dev));
                record
                    .files
                    .iter()
                    .position(|c| c.copies.iter().any(|k| k.dev == dev && k.inode == id.ino))
            });
            let dir_here = std::path::Path::new(&f.target)
                .parent()
                .is_some_and(|d| d.is_dir());
            return match (&f.object, carried) {
                    (FdObject::Directory(_), _) => refuse_or(
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
    let FdObject::File(id) = &f.object else {
        return Ok(FilePlan::Open);
    };
    let writes = f.flags as i32 & libc::O_ACCMODE != libc::O_RDONLY;
    let mtime = meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128;
    // The content it had is still its beginning (when it was hashed).
    let prefix_same = || match &id.sha256 {
        Some(h) => crate::records::hash_prefix(&f.target, id.size).as_ref() == Some(h),
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
            let what = || format!("process {} ({}) fd {}", p.pid, p.comm, f.fd);
            if f.is_file_or_dir() {
                plan_file(record, false, p, f).with_context(what)?;
            }
            if let FdObject::Symlink { text, .. } = &f.object {
                symlink_plan(&f.target, text, false).with_context(what)?;
            }
        }
    }
    // Files in flight: opened as the first process (`Restorer::send_in_flight`).
    if let Some(first) = record.processes.iter().find(|p| p.zombie.is_none()) {
        for f in record.in_flight.iter().filter(|f| f.is_file_or_dir()) {
            plan_file(record, false, first, f)
                .with_context(|| format!("descriptor {} in flight", f.fd))?;
        }
    }
    Ok(())
}

impl Restorer<'_> {
    /// What the file policy says for regular file or directory `f`: there and unchanged
    /// (or only grown, when only read): open it; missing and carried, or deleted while
    /// open: make it again from the image; missing and not carried, or changed where the
    /// session writes: refused, naming it, unless `--force`. Looks, changes nothing: every
    /// file is planned before any is made, so a refusal leaves no file behind.
    pub(crate) fn file_plan(&self, rec: &ProcessRecord, f: &FdRecord) -> Result<FilePlan> {
        plan_file(self.record, self.opts.force, rec, f)
    }

    /// The file policy for every open file of the session, before any process or file is
    /// made: a refusal leaves nothing behind.
    pub(crate) fn check_file_policy(&self) -> Result<()> {
        for p in &self.record.processes {
            let _as = if p.zombie.is_none() {
                Some(self.act_as(p)?)
            } else {
                None
            };
            for f in &p.fds {
                let what = || format!("process {} ({}) fd {}", p.pid, p.comm, f.fd);
                if f.is_file_or_dir() {
                    self.file_plan(p, f).with_context(what)?;
                }
                if let FdObject::Symlink { text, .. } = &f.object {
                    symlink_plan(&f.target, text, self.opts.force).with_context(what)?;
                }
            }
        }
        // Files in flight: opened as the first process (`send_in_flight`).
        if let Some(first) = self.record.processes.iter().find(|p| p.zombie.is_none()) {
            let _as = self.act_as(first)?;
            for f in self.record.in_flight.iter().filter(|f| f.is_file_or_dir()) {
                self.file_plan(first, f)
                    .with_context(|| format!("descriptor {} in flight", f.fd))?;
            }
        }
        Ok(())
    }

    /// Regular file or directory `f`, made as `file_plan` says, at its offset.
    pub(crate) fn open_file(
        &self,
        rec: &ProcessRecord,
        f: &FdRecord,
    ) -> Result<(OwnedFd, FileOutcome)> {
        let (path, outcome): (&str, FileOutcome) = match self.file_plan(rec, f)? {
            FilePlan::Open => (&f.target, FileOutcome::Opened),
            FilePlan::OpenChanged => (
                &f.target,
                FileOutcome::Forced("changed since the checkpoint; opened as it is".into()),
            ),
            FilePlan::Deleted => return Ok((self.reopen_unnamed(f)?, FileOutcome::MadeAgain)),
            FilePlan::Unnamed => {
                return Ok((
                    self.reopen_unnamed(f)?,
                    FileOutcome::Forced("its directory is missing here; an unnamed copy".into()),
                ));
            }
            FilePlan::MakeAgain(index) => {
                self.make_again(f, index)?;
                (&f.target, FileOutcome::MadeAgain)
            }
            FilePlan::Instead(instead, why) => {
                let flags = if matches!(f.object, FdObject::Directory(_)) {
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
            .identity()
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

    /// The file deleted while open, or the memfd, that descriptors of the image hold as
    /// (device, inode), made once for every description and shared mapping of it (by
    /// whichever needs it first): a file deleted while open unnamed (O_TMPFILE) in the
    /// directory it was in, a memfd with its name, each with the content the image carries
    /// (holes as holes) and its permissions; a memfd's seals are noted, to be set once
    /// memory is in place (pages of shared mappings are written through them). None when
    /// no descriptor holds it.
    pub(crate) fn unnamed_file(&self, dev: (u32, u32), ino: u64) -> Result<Option<Rc<OwnedFd>>> {
        if let Some(file) = self.deleted.borrow().get(&(dev, ino)) {
            return Ok(Some(file.clone()));
        }
        let ours =
            |id: &FileIdentity| (libc::major(id.dev), libc::minor(id.dev)) == dev && id.ino == ino;
        let holder = self
            .record
            .processes
            .iter()
            .flat_map(|p| &p.fds)
            .find(|f| match &f.object {
                FdObject::File(id) => f.target.ends_with(" (deleted)") && ours(id),
                FdObject::Memfd { identity, .. } => ours(identity),
                _ => false,
            });
        let Some(f) = holder else {
            return Ok(None);
        };
        let file = match &f.object {
            FdObject::Memfd {
                name,
                seals,
                identity: id,
            } => {
                let (content, carried) = self.carried_by_inode(dev, ino)?;
                let file = sys::trace::memfd_sealable(&sys::cstring(name)?)
                    .context("making the memfd again")?;
                sys::write_with_holes(file.as_fd(), &content, &carried.holes)?;
                sys::fchmod(file.as_fd(), id.mode).context("giving it its permissions")?;
                let file = Rc::new(file);
                self.seals.borrow_mut().push((file.clone(), *seals));
                file
            }
            FdObject::File(id) => Rc::new(self.make_deleted(f, id, dev)?),
            _ => unreachable!("found above"),
        };
        self.deleted.borrow_mut().insert((dev, ino), file.clone());
        Ok(Some(file))
    }

    /// A description of a file deleted while open, or of a memfd: opened again as it was
    /// from the one file made (`unnamed_file`), at its offset.
    pub(crate) fn reopen_unnamed(&self, f: &FdRecord) -> Result<OwnedFd> {
        let id = match &f.object {
            FdObject::File(id) | FdObject::Memfd { identity: id, .. } => id,
            _ => bail!("neither a deleted file nor a memfd"),
        };
        let dev = (libc::major(id.dev), libc::minor(id.dev));
        let file = self
            .unnamed_file(dev, id.ino)?
            .ok_or_else(|| anyhow!("it was not made"))?;
        let flags = open_flags(f) | libc::O_CLOEXEC | libc::O_NOCTTY;
        let again = sys::cstring(&format!("/proc/self/fd/{}", file.as_raw_fd()))?;
        let fd = sys::open(&again, flags).context("opening it as it was")?;
        if f.pos > 0 {
            t::lseek(fd.as_fd(), f.pos).context("seeking to the saved offset")?;
        }
        Ok(fd)
    }

    /// The content the image carries of the file (device, inode), and the record of it.
    fn carried_by_inode(&self, dev: (u32, u32), ino: u64) -> Result<(Vec<u8>, &CarriedFile)> {
        let (index, carried) = self
            .record
            .files
            .iter()
            .enumerate()
            .find(|(_, c)| c.copies.iter().any(|k| k.dev == dev && k.inode == ino))
            .ok_or_else(|| anyhow!("the image holds no copy of it"))?;
        let content = self.carried_content(index)?;
        if content.len() as u64 != carried.size {
            bail!("the image's copy of it is damaged");
        }
        Ok((content, carried))
    }

    /// The memfds' seals, once their content and the memory mapping them are in place.
    pub(crate) fn seal_memfds(&self) -> Result<()> {
        for (file, seals) in self.seals.borrow().iter() {
            if *seals != 0 {
                sys::trace::add_seals(file.as_fd(), *seals).context("sealing a memfd again")?;
            }
        }
        Ok(())
    }

    fn make_deleted(
        &self,
        f: &FdRecord,
        id: &crate::records::FileIdentity,
        dev: (u32, u32),
    ) -> Result<OwnedFd> {
        let (content, carried) = self.carried_by_inode(dev, id.ino)?;
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

    /// The file locks the session held (fdinfo's `lock:` lines), taken again by their
    /// holders: flock and open-file-description locks once per description, POSIX
    /// record locks once per process and range. A lock another program holds now stops
    /// the resume, naming the file.
    pub(crate) fn restore_locks(&self) -> Result<()> {
        let mut done = BTreeSet::new();
        for (&pid, p) in &self.procs {
            let rec = p.rec;
            for f in &rec.fds {
                for lock in &f.locks {
                    let (write, start, len) = (lock.write, lock.start, lock.len);
                    let key = match lock.kind {
                        LockKind::Flock => (0, f.desc as i64, 0, 0),
                        LockKind::Ofd => (1, f.desc as i64, start, len),
                        LockKind::Posix => (2, pid as i64 * (1 << 32) + f.fd as i64, start, len),
                    };
                    if !done.insert((key, lock.file.clone())) {
                        continue;
                    }
                    let fd = f.fd as u64;
                    let taken = if lock.kind == LockKind::Flock {
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
                        let cmd = if lock.kind == LockKind::Posix {
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
}
