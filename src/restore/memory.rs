//! Memory on restore, process by process as the tree is made (`restore_memory_of`, a
//! parent's before it makes its children): each process's address space is emptied (all
//! but the trampoline; a child of a restored parent keeps the mappings it shares pages
//! with it copy-on-write, and only those pages), the vDSO is placed where it was, every
//! mapping is made again at its address (files mapped from the file when it is the same
//! one, else from its copy in the image), the saved pages are written in and protections
//! set; the advice once every process is made (a parent's don't-fork advice would keep a
//! mapping from its child); and the kernel's mm fields (brk, arguments, environment,
//! auxv, exe) are put back with PR_SET_MM_MAP.

use super::{PAGE, Restorer, TASK_SIZE, TRAMPOLINE_PAGES};
use crate::image::SectionKind;
use crate::inject::nr;
use crate::records::{CarriedFile, MapKind, MapRecord, SessionRecord, vm};
use crate::sys::{self, trace as t};
use anyhow::{Context, Result, anyhow, bail};
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;

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

impl Restorer<'_> {
    /// The memory of process `pid`, just made: `from_parent` when its restored parent
    /// cloned it (it then keeps the mappings it shares pages with that parent).
    pub(super) fn restore_memory_of(&mut self, pid: i32, from_parent: bool) -> Result<()> {
        let here = crate::machine::vdso_layout_here();
        let here_vdso = crate::machine::vdso_here();
        let rec = self.proc(pid).rec;
        let theirs =
            crate::machine::vdso_layout(rec.maps.iter().map(|m| (m.path.as_str(), m.start, m.end)));
        let old_start = rec
            .maps
            .iter()
            .filter(|m| matches!(m.path.as_str(), "[vvar]" | "[vvar_vclock]" | "[vdso]"))
            .map(|m| m.start)
            .min();
        let old_vdso = &self.record.machine.vdso;
        // The same kernel's vDSO goes where it was; another kernel's is placed
        // elsewhere, and the old one's entry points lead to it.
        let same = theirs == here && (old_vdso.is_empty() || *old_vdso == here_vdso);
        let proxy_to = match old_start {
            Some(_) if !same => {
                if old_vdso.is_empty() {
                    bail!("{}", crate::machine::vdso_message(&theirs, &here));
                }
                Some(self.free_vdso_address(rec, here.iter().map(|(_, s)| s).sum())?)
            }
            _ => None,
        };
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
        self.empty_address_space(pid, &kept, proxy_to.or(old_start))?;
        // Its mapped files are opened as it would open them.
        let acting = self.act_as(rec)?;
        self.map_regions(pid, &kept)?;
        drop(acting);
        if let Some(new_at) = proxy_to {
            let new_vdso = new_at
                + here
                    .iter()
                    .take_while(|(n, _)| n != "[vdso]")
                    .map(|(_, s)| s)
                    .sum::<u64>();
            self.map_vdso_proxy(pid, new_vdso, &here_vdso)?;
        }
        self.write_pages(pid)?;
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

    /// Every process's mappings get their advice, once all are made.
    pub(super) fn advise_all(&self) -> Result<()> {
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
    pub(super) fn lock_and_seal(&self, pid: i32) -> Result<()> {
        const MLOCK_ONFAULT: u64 = 1;
        for m in &self.proc(pid).rec.maps {
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
        Ok(())
    }

    /// An address for this kernel's vDSO block (`len` bytes) below the old one, free in
    /// process `rec` and apart from the trampoline.
    fn free_vdso_address(&self, rec: &crate::records::ProcessRecord, len: u64) -> Result<u64> {
        let old = rec
            .maps
            .iter()
            .filter(|m| m.kind() == MapKind::Kernel && m.path != "[vsyscall]")
            .map(|m| m.start)
            .min()
            .unwrap_or(TASK_SIZE / 2);
        let tramp = (self.tramp, self.tramp + TRAMPOLINE_PAGES * PAGE);
        let clear = |a: u64| {
            let end = a + len;
            rec.maps.iter().all(|m| end <= m.start || m.end <= a)
                && (end <= tramp.0 || tramp.1 <= a)
        };
        let step = 16 * PAGE;
        (1..4096u64)
            .filter_map(|k| old.checked_sub(len + k * step))
            .find(|&a| a >= 1 << 20 && clear(a))
            .ok_or_else(|| {
                anyhow!(
                    "process {}: no free address for this kernel's vDSO",
                    rec.pid
                )
            })
    }

    /// The old kernel's vDSO regions made again as plain memory: its data pages empty and
    /// read-only, its code the image's copy with every entry point leading to this
    /// kernel's vDSO at `new_vdso` (`machine::vdso_proxy`).
    fn map_vdso_proxy(&self, pid: i32, new_vdso: u64, here_vdso: &[u8]) -> Result<()> {
        let rec = self.proc(pid).rec;
        let old = &self.record.machine.vdso;
        for m in rec
            .maps
            .iter()
            .filter(|m| matches!(m.path.as_str(), "[vvar]" | "[vvar_vclock]" | "[vdso]"))
        {
            let len = m.end - m.start;
            let code = m.path == "[vdso]";
            let flags = (libc::MAP_ANONYMOUS | libc::MAP_PRIVATE | libc::MAP_FIXED) as u64;
            let prot = if code {
                libc::PROT_READ | libc::PROT_WRITE
            } else {
                libc::PROT_READ
            } as u64;
            let got = self.call(
                pid,
                "mmap",
                nr::MMAP,
                &[m.start, len, prot, flags, u64::MAX, 0],
            )?;
            if got != m.start {
                bail!(
                    "process {pid}: the old vDSO's place {:#x} is taken",
                    m.start
                );
            }
            if code {
                if old.len() as u64 != len {
                    bail!(
                        "the image's copy of the old vDSO has {} bytes, its mapping {len}",
                        old.len()
                    );
                }
                let proxy = crate::machine::vdso_proxy(old, here_vdso, new_vdso)
                    .ok_or_else(|| anyhow!("the image's copy of the old vDSO names no function"))?;
                t::write_process_memory(pid, m.start, &proxy)
                    .with_context(|| format!("process {pid}: writing the old vDSO's proxy"))?;
                let rx = (libc::PROT_READ | libc::PROT_EXEC) as u64;
                self.call(pid, "mprotect", nr::MPROTECT, &[m.start, len, rx])?;
            }
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
    /// (protections come after the pages).
    fn map_regions(&self, pid: i32, kept: &[&MapRecord]) -> Result<()> {
        let rec = self.proc(pid).rec;
        let mut files = self.mapped.borrow_mut();
        let files = &mut *files;
        let mut in_process: HashMap<((u32, u32), u64, bool), i32> = HashMap::new();
        for m in &rec.maps {
            let kind = m.kind();
            if kind == MapKind::Kernel || kept.iter().any(|k| std::ptr::eq(*k, m)) {
                continue;
            }
            if m.start % PAGE != 0 || m.end % PAGE != 0 || m.end <= m.start || m.end > TASK_SIZE {
                bail!("process {pid}: a mapping with bad bounds in the image");
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
                MapKind::Kernel => unreachable!(),
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
        for fd in in_process.into_values() {
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
            .map(|o| o.offset + (o.end - o.start))
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
    pub(crate) fn carried_content(&self, index: usize) -> Result<Vec<u8>> {
        let chunk = crate::image::CHUNK_SIZE as u64;
        let first: u64 = self.record.files[..index]
            .iter()
            .map(|f| f.size.div_ceil(chunk))
            .sum();
        let count = self.record.files[index].size.div_ceil(chunk);
        let mut out = Vec::new();
        for i in first..first + count {
            out.extend_from_slice(&self.image.chunk(SectionKind::FILES, i as usize)?);
        }
        Ok(out)
    }

    /// The saved pages of process `pid`, from the page chunks that hold them.
    fn write_pages(&self, pid: i32) -> Result<()> {
        let runs = &self.record.page_runs;
        for r in runs.iter().filter(|r| r.pid == pid) {
            let p = self.procs.get(&r.pid).ok_or_else(|| {
                anyhow!(
                    "the image has pages of process {}, which it does not hold",
                    r.pid
                )
            })?;
            // A run may span adjacent mappings: walk them.
            let mut at = r.addr;
            let end = r.addr.saturating_add(r.len);
            while at < end {
                match p
                    .rec
                    .maps
                    .iter()
                    .find(|m| m.kind() != MapKind::Kernel && m.start <= at && at < m.end)
                {
                    Some(m) => at = m.end,
                    None => break,
                }
            }
            let inside = at >= end;
            if !inside || r.len == 0 {
                bail!(
                    "the image has pages of process {} outside its mappings",
                    r.pid
                );
            }
        }
        // The page data is one stream, cut into chunks; the runs say where each byte of
        // the stream goes. Each chunk is independent: one worker per core takes the next
        // chunk, decodes it if it is compressed (into a buffer of its own, reused; raw
        // chunks are written from the mapped image as stored) and writes it where its
        // runs say. The processes' page faults, most of a large restore's time here,
        // are then taken on every core, overlapped with decoding.
        let chunks: Vec<&crate::image::Section> =
            self.image.stored_chunks(SectionKind::PAGES).collect();
        let mut chunk_start = Vec::with_capacity(chunks.len());
        let mut total = 0u64;
        for c in &chunks {
            chunk_start.push(total);
            total += c.raw_len;
        }
        let mut run_start = Vec::with_capacity(runs.len());
        let mut run_total = 0u64;
        for r in runs.iter() {
            run_start.push(run_total);
            run_total += r.len;
        }
        if total != run_total {
            bail!(
                "the image's page data ({total} bytes) does not match its page runs ({run_total} bytes)"
            );
        }
        // The chunks holding this process's runs (a process's runs are together in the
        // stream: a run of chunks, the first and last maybe shared with its neighbours).
        let mut wanted: Vec<usize> = Vec::new();
        for (k, r) in runs.iter().enumerate().filter(|(_, r)| r.pid == pid) {
            let (from, to) = (run_start[k], run_start[k] + r.len);
            let first = chunk_start.partition_point(|&s| s <= from) - 1;
            let last = chunk_start.partition_point(|&s| s < to) - 1;
            for i in first..=last {
                if wanted.last() != Some(&i) {
                    wanted.push(i);
                }
            }
        }
        let next_chunk = std::sync::atomic::AtomicUsize::new(0);
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4);
        let write_chunk = |i: usize, buf: &mut Vec<u8>| -> Result<()> {
            let c = chunks[i];
            let data = crate::image::decode_chunk_into(c, &format!("page chunk {i}"), buf)?;
            let mut at = chunk_start[i];
            let mut data = data;
            // The run holding the chunk's first byte.
            let mut k = run_start.partition_point(|&s| s <= at) - 1;
            while !data.is_empty() {
                let r = &runs[k];
                let into = at - run_start[k];
                let n = ((r.len - into) as usize).min(data.len());
                if r.pid == pid {
                    t::write_process_memory(r.pid, r.addr + into, &data[..n]).with_context(
                        || {
                            format!(
                                "writing the memory of process {} at {:#x}",
                                r.pid,
                                r.addr + into
                            )
                        },
                    )?;
                }
                data = &data[n..];
                at += n as u64;
                k += 1;
            }
            Ok(())
        };
        std::thread::scope(|scope| -> Result<()> {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| -> Result<()> {
                        let mut buf = Vec::new();
                        loop {
                            let i = next_chunk.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(&i) = wanted.get(i) else {
                                return Ok(());
                            };
                            if let Err(e) = write_chunk(i, &mut buf) {
                                // Stop the others too.
                                next_chunk
                                    .store(wanted.len(), std::sync::atomic::Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| anyhow!("a page-writing thread panicked"))??;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Whether the image has pages of mapping `m` of process `pid`.
    fn has_pages(&self, pid: i32, m: &MapRecord) -> bool {
        self.record
            .page_runs
            .iter()
            .any(|r| r.pid == pid && r.addr < m.end && r.addr.saturating_add(r.len) > m.start)
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

    /// brk, arguments, environment, auxv and the exe link (PR_SET_MM_MAP).
    pub(super) fn restore_mm(&mut self, pid: i32) -> Result<()> {
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
