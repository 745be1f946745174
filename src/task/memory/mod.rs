//! Memory: a process's mappings, their pages (`pages`), the vDSO (`vdso`) and the
//! kernel's mm fields.
//!
//! Checkpoint: the mappings with their flags from /proc/PID/smaps (`read_maps`), the mm
//! fields from /proc/PID/stat and auxv (`read_mm`; the current brk is asked of the
//! process by an injected call, `crate::ckpt::inside`), process-wide KSM merging
//! (`read_ksm_merge_any`); the pages are read by the dump process (`pages`).
//!
//! Resume, process by process as the tree is made (`restore_memory_of`, a parent's before
//! it makes its children): each process's address space is emptied (all but the
//! trampoline; a child of a restored parent keeps the mappings it shares pages with it
//! copy-on-write, and only those pages), the vDSO is placed (`vdso`), every mapping is
//! made again at its address (files mapped from the file when it is the same one, else
//! from its copy in the image; deleted files and memfds made once for every holder), the
//! saved pages are written in (`pages`) and protections set; the advice once every
//! process is made (a parent's don't-fork advice would keep a mapping from its child);
//! locks and seals last (`lock_and_seal`); and the kernel's mm fields (brk, arguments,
//! environment, auxv, exe) are put back with PR_SET_MM_MAP (`restore_mm`).

pub mod lazy;
pub mod pages;
pub mod tracking;
mod vdso;

use crate::image::SectionKind;
use crate::inject::nr;
use crate::records::{CarriedFile, MapKind, MapRecord, MmRecord, SessionRecord, vm};
use crate::restore::{PAGE, Restorer, TASK_SIZE, TRAMPOLINE_PAGES};
use crate::sys::{self, trace as t};
use anyhow::{Context, Result, anyhow, bail};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::rc::Rc;

// ---- checkpoint ----------------------------------------------------------------------

/// The mappings of process `pid`, each with its flags (madvise, mlock, mseal, the open
/// mode of a shared file), from its smaps.
pub(crate) fn read_maps(pid: i32) -> io::Result<Vec<MapRecord>> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    crate::ckpt::procfs::parse_smaps(&smaps)
        .ok_or_else(|| io::Error::other("an smaps text that does not parse"))
}

/// The memory layout fields of /proc/PID/stat (fields 26-28, 45-51) and the auxv.
pub(crate) fn read_mm(pid: i32, stat: &[u64]) -> io::Result<MmRecord> {
    if stat.len() < 51 - 2 {
        return Err(io::Error::other(
            "its stat ends before the memory layout fields",
        ));
    }
    let f = |n: usize| stat[n - 3];
    let auxv = crate::ckpt::procfs::auxv_words(&std::fs::read(format!("/proc/{pid}/auxv"))?);
    Ok(MmRecord {
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
    })
}

/// Whether KSM merges all of process `pid`'s memory (PR_SET_MEMORY_MERGE). Setting it
/// again takes CAP_SYS_RESOURCE: for another user it is refused at checkpoint. (A kernel
/// without KSM, or before 6.4, has no such setting.)
pub(crate) fn read_ksm_merge_any(pid: i32) -> io::Result<bool> {
    let text = match std::fs::read_to_string(format!("/proc/{pid}/ksm_stat")) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    Ok(crate::ckpt::procfs::fdinfo_field(&text, "ksm_merge_any:") == "yes")
}

/// What mlockall(MCL_FUTURE) set in the process `main` drives (`pid`): the flags the
/// kernel gives the mappings it makes from now on, which /proc shows nowhere but in those
/// mappings. So a page is mapped in it and looked at, without reading its smaps (which
/// walks all its memory: 13 ms a GiB here, with the session frozen): its locked memory
/// (VmLck in its status) grows with a locked mapping, and the page is brought in at once
/// unless locking is on fault. 0, or MCL_FUTURE with MCL_ONFAULT when so.
pub(crate) fn read_lock_future(main: &crate::inject::Injector, pid: i32) -> io::Result<u32> {
    const MCL_FUTURE: u32 = 2;
    const MCL_ONFAULT: u32 = 4;
    let locked = || -> io::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmLck:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| io::Error::other("no VmLck in its status"))
    };
    let before = locked()?;
    let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    let probe = main.call("mmap", nr::MMAP, &[0, 4096, prot, flags, u64::MAX, 0])?;
    let found = (|| {
        let grew = locked()? > before;
        let pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap"))?;
        let mut entry = [0u8; 8];
        if sys::pread(pagemap.as_fd(), &mut entry, probe / 4096 * 8)? != 8 {
            return Err(io::Error::other("its pagemap ends early"));
        }
        let present = u64::from_le_bytes(entry) & (1 << 63) != 0;
        Ok(match (grew, present) {
            (false, _) => 0,
            (true, true) => MCL_FUTURE,
            (true, false) => MCL_FUTURE | MCL_ONFAULT,
        })
    })();
    main.call("munmap", nr::MUNMAP, &[probe, 4096])?;
    found
}

// ---- resume --------------------------------------------------------------------------

fn prot_of(perms: &str) -> u64 {
    let b = perms.as_bytes();
    let mut p = 0;
    if b.first() == Some(&b'r') {
        p |= libc::PROT_READ;
    }
    if b.get(1) == Some(&b'w') {
        p |= libc::PROT_WRITE;
    }
    if b.get(2) == Some(&b'x') {
        p |= libc::PROT_EXEC;
    }
    p as u64
}

/// The image's copy of the file mapping `m` maps: (its index, the copy).
fn carried_copy<'r>(record: &'r SessionRecord, m: &MapRecord) -> Option<(usize, &'r CarriedFile)> {
    record.files.iter().enumerate().find(|(_, f)| {
        f.copies
            .iter()
            .any(|c| c.dev == m.dev && c.inode == m.inode)
    })
}

/// Whether the file mapping `m` maps is here as it was (then it is mapped from here, not
/// from the image): at its path with the carried copy's size and modification time (the
/// same file on another machine, or after a reboot renumbered inodes), or as the very
/// inode. A file the image holds no copy of must be the very inode.
pub fn mapped_file_here(record: &SessionRecord, m: &MapRecord) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(&m.path) else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    let dev = (libc::major(meta.dev()), libc::minor(meta.dev()));
    let mtime = meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128;
    match carried_copy(record, m) {
        Some((_, f)) => {
            f.copies
                .iter()
                .any(|c| c.path == m.path && meta.size() == f.size && mtime == c.mtime_ns)
                || (dev == m.dev && meta.ino() == m.inode && meta.size() == f.size)
                // Another machine's copy of the same file (installed at another time):
                // the same content.
                || (meta.size() == f.size
                    && crate::records::hash_prefix(&m.path, f.size).as_deref()
                        == Some(f.sha256.as_str()))
        }
        None => dev == m.dev && meta.ino() == m.inode,
    }
}

/// Where each mapped file's content comes from, opened once for all processes.
#[derive(Default)]
pub(crate) struct MappedFiles {
    by_inode: HashMap<((u32, u32), u64, bool), Rc<OwnedFd>>,
    /// Shared memory objects without a file, by inode.
    shm: HashMap<((u32, u32), u64, bool), Rc<OwnedFd>>,
}

impl<'a> Restorer<'a> {
    /// The memory of process `pid`, just made: `from_parent` when its restored parent
    /// cloned it (it then keeps the mappings it shares pages with that parent).
    pub(crate) fn restore_memory_of(&mut self, pid: i32, from_parent: bool) -> Result<()> {
        let rec = self.proc(pid).rec;
        let vdso = self.vdso_plan(rec)?;
        // The mappings it keeps of its parent's: those it shares pages with.
        let kept: Vec<&MapRecord> = if from_parent {
            rec.maps
                .iter()
                .filter(|m| {
                    rec.inherited
                        .iter()
                        .any(|&(a, l)| m.start <= a && a + l <= m.end)
                })
                .collect()
        } else {
            Vec::new()
        };
        self.empty_address_space(pid, &kept, vdso.at)?;
        // Its mapped files are opened as it would open them.
        let acting = self.act_as(rec)?;
        let read_only = self.map_regions(pid, &kept)?;
        drop(acting);
        if let Some(plan) = &vdso.proxy {
            self.map_vdso_proxy(pid, plan)?;
        }
        let lazy = self.serve_lazily(pid, &kept)?;
        let into = self.page_writer(pid, &kept, &lazy);
        self.write_pages(&into, &lazy)?;
        // Its userfaultfd closed: the ranges it registered are ordinary memory again,
        // before anything else runs in the process or it makes a child.
        drop(into);
        self.map_read_only(pid, read_only)?;
        self.protect(pid)?;
        // KSM over all its memory, as it was (a child made from its parent has the
        // parent's: set either way then). Only a privileged resume meets one.
        let parent_merges = from_parent
            && self
                .record
                .processes
                .iter()
                .any(|p| p.pid == rec.ppid && p.ksm_merge_any);
        if rec.ksm_merge_any || parent_merges {
            const PR_SET_MEMORY_MERGE: u64 = 67;
            self.call(
                pid,
                "prctl(PR_SET_MEMORY_MERGE)",
                nr::PRCTL,
                &[PR_SET_MEMORY_MERGE, u64::from(rec.ksm_merge_any), 0, 0, 0],
            )?;
        }
        Ok(())
    }

    /// The mappings of process `pid` large enough for a userfaultfd to pay: private
    /// anonymous memory holding at least `lazy::LAZY_MIN` in the image, not kept from its
    /// parent, not droppable (which a userfaultfd cannot register).
    fn large_private(&self, pid: i32, kept: &[&MapRecord]) -> Vec<&'a MapRecord> {
        self.proc(pid)
            .rec
            .maps
            .iter()
            .filter(|m| {
                m.kind() == MapKind::Anon
                    && m.vm & vm::DROPPABLE == 0
                    && !kept.iter().any(|k| k.start == m.start)
                    && self.image_bytes(pid, m) >= lazy::LAZY_MIN
            })
            .collect()
    }

    /// A userfaultfd made by process `pid` (an injected call with `flags`), taken into
    /// this process; the process's own descriptor is closed.
    fn userfaultfd_of(&self, pid: i32, flags: u64) -> Result<OwnedFd> {
        const USERFAULTFD: i64 = 323;
        let flags = flags | (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
        let fd = self.call(pid, "userfaultfd", USERFAULTFD, &[flags])? as i32;
        let uffd = t::copy_fd_of(pid, fd);
        self.call(pid, "close", nr::CLOSE, &[fd as u64])?;
        let uffd = uffd.with_context(|| format!("process {pid}: taking its userfaultfd"))?;
        Ok(uffd)
    }

    /// In a lazy resume, register the mappings of process `pid` that are served lazily
    /// with a userfaultfd it makes, and hand it to the server; the ranges registered.
    /// Those are the large private ones (`large_private`) not shared with a child (whose
    /// fork must find the pages in) and not locked (an mlock would fault it all in at
    /// once anyway).
    fn serve_lazily(&self, pid: i32, kept: &[&MapRecord]) -> Result<Vec<(u64, u64)>> {
        let Some(server) = &self.lazy else {
            return Ok(Vec::new());
        };
        let shared_with_children: Vec<(u64, u64)> = self
            .record
            .processes
            .iter()
            .filter(|c| c.ppid == pid)
            .flat_map(|c| c.inherited.iter().map(|&(a, l)| (a, a + l)))
            .collect();
        let ranges: Vec<(u64, u64)> = self
            .large_private(pid, kept)
            .into_iter()
            .filter(|m| {
                m.vm & (vm::LOCKED | vm::LOCK_ON_FAULT) == 0
                    && !shared_with_children
                        .iter()
                        .any(|&(s, e)| s < m.end && m.start < e)
            })
            .map(|m| (m.start, m.end))
            .collect();
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        let uffd = self.userfaultfd_of(pid, 0)?;
        lazy::api(&uffd).with_context(|| format!("process {pid}: UFFDIO_API"))?;
        // A range the kernel will not register is copied in with the rest.
        let registered: Vec<(u64, u64)> = ranges
            .into_iter()
            .filter(|&(s, e)| lazy::register(&uffd, s, e).is_ok())
            .collect();
        if !registered.is_empty() {
            let runs = self.lazy_runs(pid, &registered)?;
            server
                .add(uffd, &runs)
                .map_err(|e| anyhow!("the image of process {pid}: {e}"))?;
        }
        Ok(registered)
    }

    /// How the pages of process `pid` are written: into its large private mappings not
    /// served lazily through a userfaultfd of its own (`UFFDIO_COPY`), the rest with
    /// process_vm_writev (`pages::PageWriter`). A fresh page written by
    /// process_vm_writev is a fault in the process, a page cleared, then the copy;
    /// UFFDIO_COPY puts the copy in place at once (measured on this machine, two
    /// threads copying 2 GiB: about 7 GB/s against 5). The userfaultfd only takes
    /// faults from user mode, which any user may have; nothing faults there: the process
    /// is stopped and everything written there goes through it. Where the kernel has no
    /// userfaultfd or refuses a range, those pages are written the other way.
    fn page_writer(&self, pid: i32, kept: &[&MapRecord], lazy: &[(u64, u64)]) -> pages::PageWriter {
        let ranges: Vec<(u64, u64)> = self
            .large_private(pid, kept)
            .into_iter()
            .map(|m| (m.start, m.end))
            .filter(|r| !lazy.contains(r))
            .collect();
        let uffd = match ranges.is_empty() {
            true => None,
            false => self
                .userfaultfd_of(pid, lazy::USER_MODE_ONLY)
                .ok()
                .filter(|fd| lazy::api_plain(fd).is_ok()),
        };
        let registered = match &uffd {
            Some(fd) => ranges
                .into_iter()
                .filter(|&(s, e)| lazy::register(fd, s, e).is_ok())
                .collect(),
            None => Vec::new(),
        };
        pages::PageWriter::new(pid, uffd, registered)
    }

    /// Every process's mappings get their advice, once all are made.
    pub(crate) fn advise_all(&self) -> Result<()> {
        for &pid in self.procs.keys() {
            self.advise(pid)?;
        }
        Ok(())
    }

    /// Each mapping's advice as it was (madvise: fork, dump, merge, huge page and
    /// read-ahead behaviour).
    fn advise(&self, pid: i32) -> Result<()> {
        const ADVICE: [(u32, i32, &str); 8] = [
            (vm::SEQUENTIAL, libc::MADV_SEQUENTIAL, "MADV_SEQUENTIAL"),
            (vm::RANDOM, libc::MADV_RANDOM, "MADV_RANDOM"),
            (vm::DONT_FORK, libc::MADV_DONTFORK, "MADV_DONTFORK"),
            (vm::DONT_DUMP, libc::MADV_DONTDUMP, "MADV_DONTDUMP"),
            (vm::MERGEABLE, libc::MADV_MERGEABLE, "MADV_MERGEABLE"),
            (vm::HUGEPAGE, libc::MADV_HUGEPAGE, "MADV_HUGEPAGE"),
            (vm::NO_HUGEPAGE, libc::MADV_NOHUGEPAGE, "MADV_NOHUGEPAGE"),
            (vm::WIPE_ON_FORK, libc::MADV_WIPEONFORK, "MADV_WIPEONFORK"),
        ];
        for m in &self.proc(pid).rec.maps {
            if m.kind() == MapKind::Kernel {
                continue;
            }
            for (bit, advice, name) in ADVICE {
                // A droppable mapping has these by its kind.
                if m.vm & bit == 0
                    || (m.vm & vm::DROPPABLE != 0 && bit & (vm::DONT_DUMP | vm::WIPE_ON_FORK) != 0)
                {
                    continue;
                }
                self.call(
                    pid,
                    name,
                    nr::MADVISE,
                    &[m.start, m.end - m.start, advice as u64],
                )
                .with_context(|| format!("mapping {:#x}-{:#x} {}", m.start, m.end, m.path))?;
            }
        }
        Ok(())
    }

    /// Memory locked as it was (mlock, or mlock2 on fault), then sealed mappings sealed
    /// (mseal): last, by the process itself with its own limits and privileges (locking
    /// counts against its RLIMIT_MEMLOCK), when nothing more changes its mappings.
    pub(crate) fn lock_and_seal(&self, pid: i32) -> Result<()> {
        const MLOCK_ONFAULT: u64 = 1;
        let rec = self.proc(pid).rec;
        for m in &rec.maps {
            if m.kind() == MapKind::Kernel {
                continue;
            }
            let len = m.end - m.start;
            let at = || format!("mapping {:#x}-{:#x} {}", m.start, m.end, m.path);
            if m.vm & vm::LOCKED != 0 {
                let flags = if m.vm & vm::LOCK_ON_FAULT != 0 {
                    MLOCK_ONFAULT
                } else {
                    0
                };
                self.call(pid, "mlock2", nr::MLOCK2, &[m.start, len, flags])
                    .with_context(at)?;
            }
            if m.vm & vm::SEALED != 0 {
                self.call(pid, "mseal", nr::MSEAL, &[m.start, len, 0])
                    .with_context(at)?;
            }
        }
        // Mappings made from now on locked, as mlockall(MCL_FUTURE) had them (the
        // trampoline, mapped before, goes unlocked).
        if rec.lock_future != 0 {
            self.call(pid, "mlockall", nr::MLOCKALL, &[u64::from(rec.lock_future)])?;
        }
        Ok(())
    }

    /// Undo what the copy of the init (or of its parent) has: its rseq registration and
    /// alternate stack, and every mapping but the trampoline and `kept`, the mappings a
    /// child shares pages with its parent in (their other pages dropped: the child's own
    /// are written next, and the rest are as fresh memory or the file has them); then the
    /// vDSO block at `vdso_at`.
    fn empty_address_space(
        &self,
        pid: i32,
        kept: &[&MapRecord],
        vdso_at: Option<u64>,
    ) -> Result<()> {
        if let Some((addr, len, sig, _)) = sys::ptrace_get_rseq(pid)? {
            self.call(
                pid,
                "rseq (unregister)",
                nr::RSEQ,
                &[addr, len as u64, 1, sig as u64],
            )?;
        }
        let ss: Vec<u8> = [0u64, libc::SS_DISABLE as u64, 0]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        let at = self.put(pid, 0, &ss)?;
        self.call(pid, "sigaltstack", nr::SIGALTSTACK, &[at, 0])?;
        // What stays, in order: the kept mappings and the trampoline; the gaps go.
        let mut stay: Vec<(u64, u64)> = kept.iter().map(|m| (m.start, m.end)).collect();
        stay.push((self.tramp, self.tramp + TRAMPOLINE_PAGES * PAGE));
        stay.sort();
        let mut at = 0;
        for &(start, end) in &stay {
            if start > at {
                self.call(pid, "munmap", nr::MUNMAP, &[at, start - at])?;
            }
            at = at.max(end);
        }
        if at < TASK_SIZE {
            self.call(pid, "munmap", nr::MUNMAP, &[at, TASK_SIZE - at])?;
        }
        let rec = self.proc(pid).rec;
        for m in kept {
            // Writable while its own pages are written (`protect` sets its protection),
            // and of the parent's pages only those it shares.
            let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
            self.call(
                pid,
                "mprotect",
                nr::MPROTECT,
                &[m.start, m.end - m.start, rw],
            )?;
            let mut from = m.start;
            let shared = rec
                .inherited
                .iter()
                .filter(|&&(a, l)| m.start <= a && a + l <= m.end);
            for &(a, l) in shared.chain(std::iter::once(&(m.end, 0))) {
                if a > from {
                    self.call(
                        pid,
                        "madvise(MADV_DONTNEED)",
                        nr::MADVISE,
                        &[from, a - from, libc::MADV_DONTNEED as u64],
                    )?;
                }
                from = a + l;
            }
        }
        if let Some(vvar) = vdso_at {
            const ARCH_MAP_VDSO_64: u64 = 0x2003;
            self.call(
                pid,
                "arch_prctl(ARCH_MAP_VDSO_64)",
                nr::ARCH_PRCTL,
                &[ARCH_MAP_VDSO_64, vvar],
            )?;
        }
        Ok(())
    }

    /// Every mapping at its address but those `kept` of the parent's, writable for now
    /// (protections come after the pages). Returned: the shared memory mappings that may
    /// not be made writable (no VM_MAYWRITE: mapped from a read-only open, or from a memfd
    /// sealed against writes), with a read-only descriptor of their object in the
    /// process, for `map_read_only`.
    fn map_regions(&self, pid: i32, kept: &[&MapRecord]) -> Result<Vec<(&'a MapRecord, i32)>> {
        let rec = self.proc(pid).rec;
        let mut files = self.mapped.borrow_mut();
        let files = &mut *files;
        let mut in_process: HashMap<((u32, u32), u64, bool), i32> = HashMap::new();
        let mut gone: HashMap<((u32, u32), u64, u64), i32> = HashMap::new();
        let mut read_only = Vec::new();
        for m in &rec.maps {
            let kind = m.kind();
            if kind == MapKind::Kernel || kept.iter().any(|k| std::ptr::eq(*k, m)) {
                continue;
            }
            if m.start % PAGE != 0 || m.end % PAGE != 0 || m.end <= m.start || m.end > TASK_SIZE {
                bail!("process {pid}: a mapping with bad bounds in the image");
            }
            if kind == MapKind::SysV {
                self.attach_segment(pid, m)?;
                continue;
            }
            let len = m.end - m.start;
            // Writable while its pages are written: readable ones, and the others that
            // have pages saved (PROT_NONE may hide content); `protect` sets the rest.
            let readable = m.perms.starts_with('r') || self.has_pages(pid, m);
            let mut prot = if readable {
                (libc::PROT_READ | libc::PROT_WRITE) as u64
            } else {
                libc::PROT_NONE as u64
            };
            let fixed = libc::MAP_FIXED as u64;
            let (flags, fd, offset) = match kind {
                // A deleted file (or a memfd with no descriptor left) that ends inside
                // the mapping: mapped from a file as long, so that a page past its end
                // raises SIGBUS as it did; the pages before it are written in as the
                // process's own.
                MapKind::Anon if m.file_end.is_some() => {
                    let end = m.file_end.expect("checked");
                    let key = (m.dev, m.inode, end);
                    let fd = match gone.get(&key) {
                        Some(&fd) => fd,
                        None => {
                            let name = format!(
                                "crterm:{}",
                                m.path
                                    .trim_end_matches(" (deleted)")
                                    .rsplit('/')
                                    .next()
                                    .unwrap_or("")
                            );
                            let src = t::memfd_sized(&sys::cstring(&name)?, end)?;
                            let fd = self.receive(pid, src.as_fd())?;
                            gone.insert(key, fd);
                            fd
                        }
                    };
                    (libc::MAP_PRIVATE as u64 | fixed, fd as u64, m.offset)
                }
                MapKind::Anon => {
                    // MAP_DROPPABLE is a kind of private mapping of its own (it implies
                    // no reserve, wipe-on-fork and dont-dump).
                    const MAP_DROPPABLE: libc::c_int = 0x08;
                    let private = if m.vm & vm::DROPPABLE != 0 {
                        MAP_DROPPABLE
                    } else {
                        libc::MAP_PRIVATE
                    };
                    let mut f = (libc::MAP_ANONYMOUS | private) as u64 | fixed;
                    if m.path == "[stack]" {
                        f |= libc::MAP_GROWSDOWN as u64;
                    }
                    (f, u64::MAX, 0)
                }
                MapKind::NscdCache => {
                    prot = prot_of(&m.perms);
                    (
                        (libc::MAP_ANONYMOUS | libc::MAP_PRIVATE) as u64 | fixed,
                        u64::MAX,
                        0,
                    )
                }
                MapKind::SharedAnon => {
                    // One memfd per shared object of the image, mapped by every process
                    // that shared it, so they share it again.
                    let key = (m.dev, m.inode, true);
                    let fd = match in_process.get(&key) {
                        Some(&fd) => fd,
                        None => {
                            let src = self.shared_memory(files, m)?;
                            let fd = self.receive(pid, src.as_fd())?;
                            in_process.insert(key, fd);
                            fd
                        }
                    };
                    if m.vm & vm::MAY_WRITE == 0 {
                        let src = self.shared_memory(files, m)?;
                        let ro = sys::open(
                            &sys::cstring(&format!("/proc/self/fd/{}", src.as_raw_fd()))?,
                            libc::O_RDONLY | libc::O_CLOEXEC,
                        )
                        .with_context(|| format!("opening {} again read-only", m.path))?;
                        read_only.push((m, self.receive(pid, ro.as_fd())?));
                    }
                    (libc::MAP_SHARED as u64 | fixed, fd as u64, m.offset)
                }
                MapKind::PrivateFile | MapKind::SharedFile => {
                    let shared = kind == MapKind::SharedFile;
                    // Opened as the process had opened it: writable when the mapping may
                    // be made writable (an mprotect later), not only when it is.
                    let writable = shared && m.vm & vm::MAY_WRITE != 0;
                    if shared {
                        // Its pages are the file's: map with the final protection.
                        prot = prot_of(&m.perms);
                    }
                    let key = (m.dev, m.inode, writable);
                    let fd = match in_process.get(&key) {
                        Some(&fd) => fd,
                        None => {
                            let src = self.file_source(files, m, writable)?;
                            let fd = self.receive(pid, src.as_fd())?;
                            in_process.insert(key, fd);
                            fd
                        }
                    };
                    let f = if shared {
                        libc::MAP_SHARED
                    } else {
                        libc::MAP_PRIVATE
                    } as u64
                        | fixed;
                    (f, fd as u64, m.offset)
                }
                MapKind::Kernel | MapKind::SysV => unreachable!(),
            };
            let flags = if m.vm & vm::NO_RESERVE != 0 {
                flags | libc::MAP_NORESERVE as u64
            } else {
                flags
            };
            let got = self
                .call(
                    pid,
                    "mmap",
                    nr::MMAP,
                    &[m.start, len, prot, flags, fd, offset],
                )
                .with_context(|| format!("mapping {:#x}-{:#x} {}", m.start, m.end, m.path))?;
            if got != m.start {
                bail!("process {pid}: {:#x} was mapped at {got:#x}", m.start);
            }
        }
        for fd in in_process.into_values().chain(gone.into_values()) {
            self.call(pid, "close", nr::CLOSE, &[fd as u64])?;
        }
        Ok(read_only)
    }

    /// A SysV segment attached where it was (the first mapping of an attachment attaches
    /// it whole; the others, parts of it split off by mprotect, are in it then). Read-only
    /// when it was attached so. Its content is the segment's, made before any process.
    fn attach_segment(&self, pid: i32, m: &MapRecord) -> Result<()> {
        const SHMAT: i64 = 30;
        const SHM_RDONLY: u64 = 0o10000;
        if m.offset != 0 {
            return Ok(());
        }
        let Some(seg) = self.record.sysv.segment_of(m.inode) else {
            bail!(
                "process {pid}: no segment {} in the image for {:#x}",
                m.inode,
                m.start
            );
        };
        let flags = if m.vm & vm::MAY_WRITE == 0 {
            SHM_RDONLY
        } else {
            0
        };
        let got = self
            .call(pid, "shmat", SHMAT, &[seg.perm.id as u64, m.start, flags])
            .with_context(|| {
                format!(
                    "attaching shared memory segment {} at {:#x}",
                    seg.perm.id, m.start
                )
            })?;
        if got != m.start {
            bail!(
                "process {pid}: segment {} was attached at {got:#x}",
                seg.perm.id
            );
        }
        Ok(())
    }

    /// Shared memory that may not be made writable mapped again, once its pages are in,
    /// from a read-only descriptor of its object (`read_only`, from `map_regions`), with
    /// its final protection: an mprotect to writable fails as it did.
    fn map_read_only(&self, pid: i32, read_only: Vec<(&MapRecord, i32)>) -> Result<()> {
        for (m, fd) in read_only {
            let mut flags = (libc::MAP_SHARED | libc::MAP_FIXED) as u64;
            if m.vm & vm::NO_RESERVE != 0 {
                flags |= libc::MAP_NORESERVE as u64;
            }
            let len = m.end - m.start;
            let prot = prot_of(&m.perms);
            self.call(
                pid,
                "mmap",
                nr::MMAP,
                &[m.start, len, prot, flags, fd as u64, m.offset],
            )
            .with_context(|| format!("mapping {:#x}-{:#x} {} read-only", m.start, m.end, m.path))?;
            self.call(pid, "close", nr::CLOSE, &[fd as u64])?;
        }
        Ok(())
    }

    /// The memfd standing for a shared memory object of the image (by its inode), as large
    /// as the largest extent any process maps.
    fn shared_memory(&self, files: &mut MappedFiles, m: &MapRecord) -> Result<Rc<OwnedFd>> {
        let key = (m.dev, m.inode, true);
        if let Some(fd) = files.shm.get(&key) {
            return Ok(fd.clone());
        }
        // A file deleted while open (or a memfd) and mapped shared: the very file made
        // again for its descriptors, so that what one writes the other sees.
        if let Some(fd) = self.unnamed_file(m.dev, m.inode)? {
            files.shm.insert(key, fd.clone());
            return Ok(fd);
        }
        let size = self
            .record
            .processes
            .iter()
            .flat_map(|p| &p.maps)
            .filter(|o| o.kind() == MapKind::SharedAnon && (o.dev, o.inode) == (m.dev, m.inode))
            .map(|o| o.file_end.unwrap_or(o.offset + (o.end - o.start)))
            .max()
            .unwrap_or(m.end - m.start);
        if size > 1 << 40 {
            bail!("shared memory {} of {size} bytes in the image", m.path);
        }
        // A memfd mapped with no descriptor of it left keeps its name.
        let name = match m.path.strip_prefix("/memfd:") {
            Some(rest) => rest.trim_end_matches(" (deleted)"),
            None => "crterm-shared",
        };
        let fd = Rc::new(t::memfd_sized(&sys::cstring(name)?, size)?);
        files.shm.insert(key, fd.clone());
        Ok(fd)
    }

    /// The file a mapping maps: the very file when it is still there unchanged, else its
    /// content from the image.
    fn file_source(
        &self,
        files: &mut MappedFiles,
        m: &MapRecord,
        writable: bool,
    ) -> Result<Rc<OwnedFd>> {
        let key = (m.dev, m.inode, writable);
        if let Some(fd) = files.by_inode.get(&key) {
            return Ok(fd.clone());
        }
        let carried = carried_copy(self.record, m);
        let fd = match mapped_file_here(self.record, m) {
            true => {
                let flags = if writable {
                    libc::O_RDWR
                } else {
                    libc::O_RDONLY
                } | libc::O_CLOEXEC;
                sys::open(&sys::cstring(&m.path)?, flags)
                    .with_context(|| format!("cannot open mapped file {}", m.path))?
            }
            _ => {
                if m.perms.as_bytes().get(1) == Some(&b'w') {
                    bail!(
                        "{} is shared writable memory of the session and has changed or gone since the checkpoint",
                        m.path
                    );
                }
                let (index, f) = carried.ok_or_else(|| {
                    anyhow!(
                        "{} is gone or changed, and the image holds no copy of it",
                        m.path
                    )
                })?;
                let content = self.carried_content(index)?;
                if content.len() as u64 != f.size {
                    bail!("the image's copy of {} is damaged", m.path);
                }
                let name = sys::cstring(&format!(
                    "crterm:{}",
                    m.path.rsplit('/').next().unwrap_or("file")
                ))?;
                t::memfd_with(&name, &content)?
            }
        };
        let fd = Rc::new(fd);
        files.by_inode.insert(key, fd.clone());
        Ok(fd)
    }

    /// The content of carried file `index`: its FILES chunks (each file starts a chunk).
    /// (An incremental image's file in its parent's chain: in the nearest image that has
    /// the content itself.)
    pub(crate) fn carried_content(&self, index: usize) -> Result<Vec<u8>> {
        let f = &self.record.files[index];
        let images = std::iter::once((self.image, self.record))
            .chain(self.ancestors.iter().map(|a| (&a.image, &a.record)));
        for (image, record) in images {
            let Some(i) = record.files.iter().position(|g| {
                !g.in_parent && g.sha256 == f.sha256 && g.size == f.size && g.holes == f.holes
            }) else {
                continue;
            };
            let chunk = crate::image::CHUNK_SIZE as u64;
            let first: u64 = record.files[..i]
                .iter()
                .filter(|g| !g.in_parent)
                .map(|g| g.size.div_ceil(chunk))
                .sum();
            let count = f.size.div_ceil(chunk);
            let mut out = Vec::new();
            for i in first..first + count {
                out.extend_from_slice(&image.chunk(SectionKind::FILES, i as usize)?);
            }
            return Ok(out);
        }
        bail!(
            "the image's chain holds no copy of {}",
            f.copies
                .first()
                .map_or("a carried file", |c| c.path.as_str())
        )
    }

    fn protect(&self, pid: i32) -> Result<()> {
        for m in &self.proc(pid).rec.maps {
            let kind = m.kind();
            if matches!(
                kind,
                MapKind::Kernel | MapKind::SharedFile | MapKind::NscdCache
            ) || !(m.perms.starts_with('r') || self.has_pages(pid, m))
            {
                continue;
            }
            let prot = prot_of(&m.perms);
            if prot != (libc::PROT_READ | libc::PROT_WRITE) as u64 {
                self.call(
                    pid,
                    "mprotect",
                    nr::MPROTECT,
                    &[m.start, m.end - m.start, prot],
                )?;
            }
        }
        Ok(())
    }

    /// Transparent huge pages turned off for the process, as they were.
    pub(crate) fn set_thp_disabled(&self, pid: i32) -> Result<()> {
        const PR_SET_THP_DISABLE: u64 = 41;
        if self.proc(pid).rec.thp_disabled {
            self.call(
                pid,
                "prctl(PR_SET_THP_DISABLE)",
                nr::PRCTL,
                &[PR_SET_THP_DISABLE, 1],
            )?;
        }
        Ok(())
    }

    /// brk, arguments, environment, auxv and the exe link (PR_SET_MM_MAP).
    pub(crate) fn restore_mm(&mut self, pid: i32) -> Result<()> {
        let rec = self.proc(pid).rec;
        let mm = &rec.mm;
        let auxv: Vec<u8> = mm.auxv.iter().flat_map(|w| w.to_le_bytes()).collect();
        if auxv.len() > 1024 {
            bail!("process {pid}: auxv too long in the image");
        }
        let auxv_at = self.put(pid, 512, &auxv)?;
        let exe = rec.exe.trim_end_matches(" (deleted)");
        let acting = self.act_as(rec)?;
        let exe_fd = if exe == rec.exe && !exe.is_empty() {
            match sys::open(&sys::cstring(exe)?, libc::O_RDONLY | libc::O_CLOEXEC) {
                Ok(fd) => Some(self.receive(pid, fd.as_fd())?),
                Err(_) => None,
            }
        } else {
            None
        };
        drop(acting);
        let map = |exe_fd: Option<i32>| -> Vec<u8> {
            let words = [
                mm.start_code,
                mm.end_code,
                mm.start_data,
                mm.end_data,
                mm.start_brk,
                mm.brk,
                mm.start_stack,
                mm.arg_start,
                mm.arg_end,
                mm.env_start,
                mm.env_end,
                auxv_at,
            ];
            let mut b: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            b.extend_from_slice(&(auxv.len() as u32).to_le_bytes());
            b.extend_from_slice(&(exe_fd.map_or(u32::MAX, |f| f as u32)).to_le_bytes());
            b
        };
        const PR_SET_MM: u64 = 35;
        const PR_SET_MM_MAP: u64 = 14;
        let at = self.put(pid, 0, &map(exe_fd))?;
        if self
            .call(
                pid,
                "prctl(PR_SET_MM_MAP)",
                nr::PRCTL,
                &[PR_SET_MM, PR_SET_MM_MAP, at, 104, 0],
            )
            .is_err()
        {
            // Without the exe link (a kernel or privilege that refuses it), the rest.
            let at = self.put(pid, 0, &map(None))?;
            self.call(
                pid,
                "prctl(PR_SET_MM_MAP)",
                nr::PRCTL,
                &[PR_SET_MM, PR_SET_MM_MAP, at, 104, 0],
            )?;
            if exe_fd.is_some() {
                self.warnings.push(format!(
                    "process {pid} ({}): /proc/{pid}/exe could not be set back to {exe}",
                    rec.comm
                ));
            }
        }
        if let Some(fd) = exe_fd {
            self.call(pid, "close", nr::CLOSE, &[fd as u64])?;
        }
        Ok(())
    }
}
