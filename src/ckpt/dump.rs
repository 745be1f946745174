//! The dump process's part of a checkpoint: the memory and files of a session whose state
//! the daemon has read (`state`, `hold`) into an image. It reads the frozen processes'
//! present pages (pagemap, process_vm_readv) into chunks that are compressed and written
//! while it reads, says when it is done with the frozen processes (the daemon then lets
//! them go on), then carries the content of the files the session maps or holds open and
//! writes the record. It changes nothing in the session: killed at any moment, it leaves
//! the session as it was (the daemon, the session's tracer, undoes what it changed).

use crate::image::{CHUNK_SIZE, Feed, ImageWriter, SectionKind};
use crate::records::*;
use crate::sys;
use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::os::fd::AsFd;

/// What the daemon hands the dump process once the session is frozen and its state read.
#[derive(Debug, Serialize, Deserialize)]
pub struct DumpOrder {
    /// The session's record, without its page runs and carried files.
    pub record: SessionRecord,
    /// The host pid of each live process of the record, in order (zombies come first in
    /// the record and have none).
    pub hosts: Vec<i32>,
    /// The terminal model, postcard-encoded: the TERM_MODEL section.
    pub model: Vec<u8>,
    /// Open regular files up to this size are carried (`--carry-files`).
    pub carry_files: u64,
}

const PAGE: u64 = 4096;
static ZERO_PAGE: [u8; PAGE as usize] = [0; PAGE as usize];

/// The pagemap entries of a mapping's pages (`/proc/PID/pagemap`: bit 63 present, 62
/// swapped, 61 a page of the file or shared memory).
fn pagemap_entries(pagemap: &std::fs::File, map: &MapRecord) -> io::Result<Vec<u64>> {
    let pages = ((map.end - map.start) / PAGE) as usize;
    let mut out = Vec::with_capacity(pages);
    let mut buf = vec![0u8; 8 * 512];
    while out.len() < pages {
        let n = (pages - out.len()).min(512);
        let off = (map.start / PAGE + out.len() as u64) * 8;
        let got = sys::pread(pagemap.as_fd(), &mut buf[..n * 8], off)? / 8;
        if got == 0 {
            return Err(io::Error::other(format!(
                "the pagemap of {:#x}-{:#x} ends early",
                map.start, map.end
            )));
        }
        out.extend(
            buf[..got * 8]
                .chunks_exact(8)
                .map(|e| u64::from_le_bytes(e.try_into().expect("8 bytes"))),
        );
    }
    Ok(out)
}

const PRESENT: u64 = 1 << 63;
const SWAPPED: u64 = 1 << 62;
const FILE_PAGE: u64 = 1 << 61;

/// What the dump does with one page of a mapping.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PageIs {
    /// Not the process's own (not in memory, or still the file's): nothing saved.
    Absent,
    /// Saved.
    Own,
    /// Present in this process and its parent at the same address of the same mapping:
    /// shared copy-on-write since a fork if the content is the same (compared before it
    /// is left out). (The kernel's "mapped once" bit cannot tell: it calls a huge page
    /// shared by a fork exclusive to each. Two equal pages written apart are then shared
    /// too, which no program can tell from two copies but by the memory they take.)
    MaybeShared,
}

/// Each page of `map`: absent, the process's own, or maybe shared with its parent
/// (`parent`: the parent's pagemap entries of the same mapping). With `changed_only`
/// (a private mapping of a file), only pages the process wrote are its own.
fn classify(mine: &[u64], parent: Option<&[u64]>, changed_only: bool) -> Vec<PageIs> {
    mine.iter()
        .enumerate()
        .map(|(i, &e)| {
            let own = e & (PRESENT | SWAPPED) != 0 && (!changed_only || e & FILE_PAGE == 0);
            let shared = |e: u64| e & PRESENT != 0 && e & FILE_PAGE == 0;
            match parent.map(|p| p[i]) {
                _ if !own => PageIs::Absent,
                Some(p) if shared(e) && shared(p) => PageIs::MaybeShared,
                _ => PageIs::Own,
            }
        })
        .collect()
}

/// Runs (address, length, same) of the `len` bytes at `addr` in process `pid` and in
/// process `parent`: whether each page holds the same bytes in both.
fn same_pages(pid: i32, parent: i32, addr: u64, len: u64) -> io::Result<Vec<(u64, u64, bool)>> {
    const BLOCK: u64 = 256 * PAGE;
    let mut out: Vec<(u64, u64, bool)> = Vec::new();
    let (mut mine, mut theirs) = (vec![0u8; BLOCK as usize], vec![0u8; BLOCK as usize]);
    let mut at = addr;
    while at < addr + len {
        let n = (addr + len - at).min(BLOCK) as usize;
        let a = sys::read_process_memory(pid, at, &mut mine[..n])?;
        let b = sys::read_process_memory(parent, at, &mut theirs[..n])?;
        if a != n || b != n {
            return Err(io::Error::other(format!(
                "cannot read the memory at {at:#x} shared with a parent"
            )));
        }
        for (i, (x, y)) in mine[..n]
            .chunks(PAGE as usize)
            .zip(theirs[..n].chunks(PAGE as usize))
            .enumerate()
        {
            let page_at = at + i as u64 * PAGE;
            let same = x == y;
            match out.last_mut() {
                Some((s, l, was)) if *was == same && *s + *l == page_at => *l += PAGE,
                _ => out.push((page_at, PAGE, same)),
            }
        }
        at += n as u64;
    }
    Ok(out)
}

/// What a dump wrote.
pub struct DumpSummary {
    pub processes: usize,
    pub threads: usize,
    pub memory_bytes: u64,
}

/// Page data on its way into the image: the chunk being filled, straight from the
/// processes' memory.
struct PageStream {
    buf: Vec<u8>,
    len: usize,
}

impl PageStream {
    /// Copy `len` bytes at `addr` of host process `pid` (the session's `ns_pid`) into the
    /// stream and note them in `runs`. With `skip_zeros`, pages of zeros are left out: fresh
    /// memory is zero. (Not in a file mapping, where a zero page the process wrote differs
    /// from the file's.)
    /// `mem`: the process's /proc/PID/mem, to read through where the mapping may not be
    /// read (PROT_NONE, write- or execute-only: the kernel reads it for a tracer's view,
    /// which process_vm_readv does not).
    #[allow(clippy::too_many_arguments)]
    fn copy(
        &mut self,
        feed: &mut Feed,
        pid: i32,
        ns_pid: i32,
        addr: u64,
        len: u64,
        skip_zeros: bool,
        mem: Option<&std::fs::File>,
        to_eof: bool,
        runs: &mut Vec<PageRun>,
    ) -> io::Result<()> {
        let page = PAGE as usize;
        let zero = |b: &[u8]| skip_zeros && b == &ZERO_PAGE[..b.len()];
        let mut at = 0;
        while at < len {
            if self.len == CHUNK_SIZE {
                let full = std::mem::replace(&mut self.buf, feed.buffer()?);
                feed.send(full, CHUNK_SIZE)?;
                super::hooks::die_at("pages");
                self.len = 0;
            }
            let n = (len - at).min((CHUNK_SIZE - self.len) as u64) as usize;
            let base = self.len;
            let into = &mut self.buf[base..base + n];
            let got = match mem {
                Some(f) => sys::pread(f.as_fd(), into, addr + at),
                None => sys::read_process_memory(pid, addr + at, into),
            };
            // A mapping of a file ends where the file does: the pages past its end are no
            // file's (the process would get SIGBUS there).
            let got = match got {
                Ok(0) if to_eof => return Ok(()),
                Err(e) if to_eof && matches!(e.raw_os_error(), Some(libc::EFAULT | libc::EIO)) => {
                    return Ok(());
                }
                got => got?,
            };
            if got == 0 {
                return Err(io::Error::other(format!(
                    "cannot read the memory of process {ns_pid} at {:#x}",
                    addr + at
                )));
            }
            // Keep the runs of pages that are not all zeros, moved together.
            let end = base + got;
            let mut keep = base;
            let mut i = base;
            while i < end {
                if zero(&self.buf[i..(i + page).min(end)]) {
                    i = (i + page).min(end);
                    continue;
                }
                let from = i;
                while i < end && !zero(&self.buf[i..(i + page).min(end)]) {
                    i = (i + page).min(end);
                }
                if from != keep {
                    self.buf.copy_within(from..i, keep);
                }
                keep += i - from;
                let run_addr = addr + at + (from - base) as u64;
                match runs.last_mut() {
                    Some(r) if r.pid == ns_pid && r.addr + r.len == run_addr => {
                        r.len += (i - from) as u64
                    }
                    _ => runs.push(PageRun {
                        pid: ns_pid,
                        addr: run_addr,
                        len: (i - from) as u64,
                    }),
                }
            }
            self.len = keep;
            at += got as u64;
        }
        Ok(())
    }

    fn finish(self, feed: &mut Feed) -> io::Result<()> {
        feed.send(self.buf, self.len)
    }
}

/// The content hash of every regular file the session holds open (small enough), read
/// through the path it had; once per file.
fn hash_open_files(record: &mut SessionRecord) {
    let mut done: std::collections::HashMap<(u64, u64), Option<String>> = Default::default();
    for p in &mut record.processes {
        for f in &mut p.fds {
            let FdObject::File(id) = &mut f.object else {
                continue;
            };
            if id.size > HASHED_FILE_LIMIT || f.target.ends_with(" (deleted)") {
                continue;
            }
            id.sha256 = done
                .entry((id.dev, id.ino))
                .or_insert_with(|| hash_prefix(&f.target, id.size))
                .clone();
        }
    }
}

/// Put the content of every file the session maps into the FILES chunks, once per content:
/// the same inode mapped many times is read once, and equal contents under other inodes
/// (found by SHA-256) are stored once. Each file starts a chunk of its own (so one file can
/// be read back alone).
fn carry_files<W: Write + Send>(
    w: &mut ImageWriter<W>,
    record: &mut SessionRecord,
    deleted: Vec<FileToCarry>,
    budget: usize,
) -> io::Result<()> {
    use sha2::{Digest, Sha256};
    use std::collections::HashMap;
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let mut by_inode: HashMap<((u32, u32), u64), Option<usize>> = HashMap::new();
    let mut by_hash: HashMap<(String, Vec<(u64, u64)>), usize> = HashMap::new();
    // Mapped files, opened by path; then files deleted while open, already opened.
    let maps: Vec<FileToCarry> = record
        .processes
        .iter()
        .flat_map(|p| p.maps.iter())
        // (A mapping of a deleted file has its pages in the image; its file, if it is held
        // open too, is carried as an open file.)
        .filter(|m| matches!(m.kind(), MapKind::PrivateFile | MapKind::SharedFile))
        .map(|m| FileToCarry {
            path: m.path.clone(),
            dev: m.dev,
            inode: m.inode,
            file: None,
            limit: None,
        })
        .chain(deleted)
        .collect();
    let mut buf = vec![0u8; 1 << 20];
    w.pipeline(SectionKind::FILES, budget, |feed| {
        for m in maps {
            use std::io::Seek;
            super::hooks::die_at("files");
            let key = (m.dev, m.inode);
            if by_inode.contains_key(&key) {
                continue;
            }
            let not_carried = |record: &mut SessionRecord, why: &str| {
                if !record.files_not_carried.iter().any(|(p, _)| *p == m.path) {
                    record
                        .files_not_carried
                        .push((m.path.clone(), why.to_string()));
                }
            };
            // Without blocking: something else (a FIFO) may be at the path by now.
            let opened = || {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                    .open(&m.path)
                    .ok()
            };
            let Some(mut file) = m.file.or_else(opened) else {
                not_carried(record, "gone");
                by_inode.insert(key, None);
                continue;
            };
            let meta = file.metadata()?;
            let same_file = meta.ino() == m.inode
                && (libc::major(meta.dev()), libc::minor(meta.dev())) == m.dev;
            if !same_file || !meta.is_file() {
                not_carried(record, "replaced since it was mapped");
                by_inode.insert(key, None);
                continue;
            }
            // A sparse file's holes (it has fewer blocks than its size needs): a copy is one
            // content with the same holes.
            let holes = if meta.blocks() * 512 < meta.size() {
                sys::holes_of(file.as_fd(), meta.size())?
            } else {
                Vec::new()
            };
            // An open file: whole, or not at all.
            let whole = match m.limit {
                Some(limit) => {
                    let mut content = Vec::new();
                    (&mut file).take(limit + 1).read_to_end(&mut content)?;
                    if content.len() as u64 > limit {
                        not_carried(
                            record,
                            &format!("larger than --carry-files ({limit} bytes)"),
                        );
                        by_inode.insert(key, None);
                        continue;
                    }
                    Some(content)
                }
                None => None,
            };
            let mut hasher = Sha256::new();
            match &whole {
                Some(content) => hasher.update(content),
                None => loop {
                    let n = file.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                },
            }
            let sha256: String = hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let copy = FileCopy {
                path: m.path.clone(),
                dev: m.dev,
                inode: m.inode,
                mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            };
            if let Some(&i) = by_hash.get(&(sha256.clone(), holes.clone())) {
                record.files[i].copies.push(copy);
                by_inode.insert(key, Some(i));
                continue;
            }
            // A new content: send it (read again from the page cache, where hashing just
            // put it).
            let mut size = 0u64;
            let mut from = whole.as_deref();
            if from.is_none() {
                file.seek(std::io::SeekFrom::Start(0))?;
            }
            loop {
                let mut chunk = feed.buffer()?;
                let n = match &mut from {
                    Some(rest) => {
                        let n = rest.len().min(CHUNK_SIZE);
                        chunk[..n].copy_from_slice(&rest[..n]);
                        *rest = &rest[n..];
                        n
                    }
                    None => read_full(&mut file, &mut chunk)?,
                };
                size += n as u64;
                feed.send(chunk, n)?;
                if n < CHUNK_SIZE {
                    break;
                }
            }
            if whole.is_none() && size != meta.size() {
                return Err(io::Error::other(format!(
                    "{} changed while it was being saved",
                    m.path
                )));
            }
            by_hash.insert((sha256.clone(), holes.clone()), record.files.len());
            by_inode.insert(key, Some(record.files.len()));
            record.files.push(CarriedFile {
                sha256,
                size,
                copies: vec![copy],
                holes,
            });
        }
        Ok(())
    })
}

/// A file whose content the image carries: mapped, or open (then `file` is a descriptor
/// of it, opened through its holder's while the session was frozen).
struct FileToCarry {
    path: String,
    dev: (u32, u32),
    inode: u64,
    file: Option<std::fs::File>,
    /// An open file the session may go on writing to: carried only up to this size, read
    /// whole before it is sent, so that a file still growing is not carried half.
    limit: Option<u64>,
}

/// Files the session holds open whose content the image carries: those deleted while open
/// (up to `DELETED_FILE_LIMIT`), and the others up to `carry_limit` (a resume where they
/// are missing makes them again). Opened now, through the holder's descriptor while the
/// session is frozen.
fn open_files_to_carry(
    record: &SessionRecord,
    hosts: &[i32],
    carry_limit: u64,
) -> io::Result<Vec<FileToCarry>> {
    let live = record.processes.iter().filter(|p| p.zombie.is_none());
    let mut out: Vec<FileToCarry> = Vec::new();
    for (p, &host) in live.zip(hosts) {
        for f in &p.fds {
            let (id, deleted) = match &f.object {
                FdObject::File(id) => (id, f.target.ends_with(" (deleted)")),
                FdObject::Memfd { identity, .. } => (identity, true),
                _ => continue,
            };
            if !deleted && id.size > carry_limit {
                continue;
            }
            let dev = (libc::major(id.dev), libc::minor(id.dev));
            if out.iter().any(|d| d.dev == dev && d.inode == id.ino) {
                continue;
            }
            match std::fs::File::open(format!("/proc/{host}/fd/{}", f.fd)) {
                Ok(file) => out.push(FileToCarry {
                    path: f.target.clone(),
                    dev,
                    inode: id.ino,
                    file: Some(file),
                    // A deleted file (checked against `DELETED_FILE_LIMIT` already) is
                    // streamed; nothing but its holders can change it.
                    limit: (!deleted).then_some(carry_limit),
                }),
                // A file that is still there is opened from its path at resume; a deleted
                // one exists only in the image, or the checkpoint fails.
                Err(e) if deleted => {
                    return Err(io::Error::other(format!(
                        "process {} ({}) holds fd {}, {}, a file deleted while open that cannot be read: {e}",
                        p.pid, p.comm, f.fd, f.target
                    )));
                }
                Err(_) => {}
            }
        }
    }
    Ok(out)
}

/// Read until `buf` is full or the file ends; how much was read.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    use std::io::Read;
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Write the image of the session in `order` into `w`: the terminal model, the page data
/// (one stream, the runs of `page_runs` one after another, cut into chunks of
/// `CHUNK_SIZE`, compressed and written while they are read, at most `budget` bytes of
/// buffers), the content of the files the session maps or holds open, the record.
/// `frozen_part_done` is called once nothing more is read from the frozen processes (their
/// pages, and the descriptors of open files to carry): the daemon lets them go on then,
/// and the rest is written meanwhile.
pub fn write_image<W: Write + Send>(
    w: &mut ImageWriter<W>,
    order: DumpOrder,
    budget: usize,
    frozen_part_done: impl FnOnce(),
) -> io::Result<DumpSummary> {
    w.meta_raw(SectionKind::TERM_MODEL, &order.model)?;
    let DumpOrder {
        mut record,
        hosts,
        carry_files: carry_limit,
        ..
    } = order;
    let first_live = record
        .processes
        .len()
        .checked_sub(hosts.len())
        .ok_or_else(|| io::Error::other("the order names more processes than its record"))?;
    let mut deleted = Vec::new();
    let mut record_runs = std::mem::take(&mut record.page_runs);
    w.pipeline(SectionKind::PAGES, budget, |feed| {
        let mut pages = PageStream {
            buf: feed.buffer()?,
            len: 0,
        };
        let live = &record.processes[first_live..];
        let mut inherited: Vec<Vec<(u64, u64)>> = vec![Vec::new(); live.len()];
        for (k, (&pid, proc_record)) in hosts.iter().zip(live).enumerate() {
            let pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap"))?;
            // Its parent, when the session holds it: pages shared with it since a fork
            // are saved once, in the parent's.
            let parent = live
                .iter()
                .position(|q| q.pid == proc_record.ppid)
                .map(|i| (hosts[i], &live[i]));
            let parent_pagemap = match parent {
                Some((host, _)) => Some(std::fs::File::open(format!("/proc/{host}/pagemap"))?),
                None => None,
            };
            let mut mem = None;
            for map in &proc_record.maps {
                let kind = map.kind();
                if matches!(
                    kind,
                    MapKind::Kernel | MapKind::SharedFile | MapKind::NscdCache
                ) {
                    continue;
                }
                // A mapping the process may not read now may hold what it wrote before
                // (or will read after an mprotect): read it as a tracer does.
                let through_mem = if map.perms.starts_with('r') {
                    None
                } else {
                    if mem.is_none() {
                        mem = Some(std::fs::File::open(format!("/proc/{pid}/mem"))?);
                    }
                    mem.as_ref()
                };
                // Shared memory is read whole: a page of it may be present in the shared
                // object without being mapped in this process (pagemap would not show it).
                // So is a mapping of a deleted file (or a memfd): its pages not in memory
                // are in a file nothing can open after the resume.
                let of_gone_file = kind == MapKind::Anon && map.inode != 0;
                let whole = kind == MapKind::SharedAnon || of_gone_file;
                let copy = |pages: &mut PageStream,
                            feed: &mut Feed,
                            runs: &mut Vec<PageRun>,
                            addr: u64,
                            len: u64| {
                    pages.copy(
                        feed,
                        pid,
                        proc_record.pid,
                        addr,
                        len,
                        kind == MapKind::Anon,
                        through_mem,
                        whole,
                        runs,
                    )
                };
                if whole {
                    copy(
                        &mut pages,
                        feed,
                        &mut record_runs,
                        map.start,
                        map.end - map.start,
                    )?;
                    continue;
                }
                let mine = pagemap_entries(&pagemap, map)?;
                let theirs = match (parent, &parent_pagemap) {
                    (Some((_, q)), Some(pm)) if inherits(map) && q.maps.contains(map) => {
                        Some(pagemap_entries(pm, map)?)
                    }
                    _ => None,
                };
                let class = classify(&mine, theirs.as_deref(), kind == MapKind::PrivateFile);
                let mut i = 0;
                while i < class.len() {
                    let c = class[i];
                    let from = i;
                    while i < class.len() && class[i] == c {
                        i += 1;
                    }
                    let addr = map.start + from as u64 * PAGE;
                    let len = (i - from) as u64 * PAGE;
                    match c {
                        PageIs::Absent => {}
                        PageIs::Own => copy(&mut pages, feed, &mut record_runs, addr, len)?,
                        PageIs::MaybeShared => {
                            let host = parent.expect("a parent to share with").0;
                            for (at, n, same) in same_pages(pid, host, addr, len)? {
                                if same {
                                    let list = &mut inherited[k];
                                    // (Runs of one mapping: the next one is not
                                    // inherited with it, by a resume's reckoning.)
                                    match list.last_mut() {
                                        Some((a, l)) if *a + *l == at && *a >= map.start => *l += n,
                                        _ => list.push((at, n)),
                                    }
                                } else {
                                    copy(&mut pages, feed, &mut record_runs, at, n)?;
                                }
                            }
                        }
                    }
                }
            }
        }
        for (p, list) in record.processes[first_live..].iter_mut().zip(inherited) {
            p.inherited = list;
        }
        record.page_runs = record_runs;
        deleted = open_files_to_carry(&record, &hosts, carry_limit)?;
        frozen_part_done();
        // The last chunk is compressed after the session goes on: a small session (vim)
        // is then not frozen for any compression at all.
        pages.finish(feed)
    })?;
    // The session runs again: the files are read now.
    hash_open_files(&mut record);
    carry_files(w, &mut record, deleted, budget)?;
    // What a resume will check of the record, checked now: a record this version gets
    // wrong fails the checkpoint, and is not found damaged at resume.
    record
        .validate(
            &w.raw_lens(SectionKind::PAGES),
            &w.raw_lens(SectionKind::FILES),
        )
        .map_err(|e| io::Error::other(format!("the record made does not hold together: {e}")))?;
    w.meta(SectionKind::SESSION, &record)?;
    Ok(DumpSummary {
        processes: record.processes.len(),
        threads: record.threads(),
        memory_bytes: record.memory_bytes(),
    })
}
