//! Pages: how a process's memory goes into the image at checkpoint and comes back at
//! resume.
//!
//! Checkpoint (the dump process, `crate::ckpt::dump`): per mapping, the pagemap says which
//! pages are present; those the process owns are read (process_vm_readv, or
//! /proc/PID/mem where the mapping may not be read now) into chunks of the PAGES section,
//! pages of zeros left out of anonymous memory, and noted as runs (`PageRun`). A child's
//! pages equal to its parent's at the same address of the same mapping, present in both,
//! are shared copy-on-write since a fork: left out, and noted as the child's inherited
//! runs, so a resume makes the child from its parent with those pages shared again.
//!
//! Resume (`Restorer::write_pages`): the runs of each process are written into its fresh
//! mappings (`PageWriter`: UFFDIO_COPY into its large private ones, process_vm_writev
//! elsewhere), chunks decoded by worker threads.

use crate::image::{CHUNK_SIZE, Feed, SectionKind};
use crate::records::*;
use crate::restore::Restorer;
use crate::sys::{self, trace as t};
use crate::task::memory::tracking::{
    self, PAGE_IS_FILE, PAGE_IS_PFNZERO, PAGE_IS_PRESENT, PAGE_IS_SWAPPED, PAGE_IS_WRITTEN,
};
use anyhow::{Context, Result, anyhow, bail};
use std::io;
use std::os::fd::AsFd;

// ---- checkpoint ----------------------------------------------------------------------

const PAGE: u64 = 4096;
static ZERO_PAGE: [u8; PAGE as usize] = [0; PAGE as usize];

/// The pagemap entries of a mapping's pages (`/proc/PID/pagemap`: bit 63 present, 62
/// swapped, 61 a page of the file or shared memory).
fn pagemap_entries(pagemap: &std::fs::File, map: &MapRecord) -> io::Result<Vec<u64>> {
    let (start, end) = (map.start, map.end);
    let pages = ((end - start) / PAGE) as usize;
    let mut out = Vec::with_capacity(pages);
    let mut buf = vec![0u8; 8 * 512];
    while out.len() < pages {
        let n = (pages - out.len()).min(512);
        let off = (start / PAGE + out.len() as u64) * 8;
        let got = sys::pread(pagemap.as_fd(), &mut buf[..n * 8], off)? / 8;
        if got == 0 {
            return Err(io::Error::other(format!(
                "the pagemap of {start:#x}-{end:#x} ends early"
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

/// Page data on its way into the image: the chunk being filled, straight from the
/// processes' memory.
pub struct PageStream {
    buf: Vec<u8>,
    len: usize,
}

/// What a checkpoint makes of the pages of a tracked mapping (registered by the daemon's
/// tracking, `vm::WRITE_TRACKED`) that are in memory and were not written since the
/// tracker last protected them.
pub enum Unwritten<'a> {
    /// Nothing: the process is not tracked, or not since a moment that matters; every
    /// page is read.
    Read,
    /// They are the parent image's (an incremental checkpoint): noted there.
    Parent(&'a mut Vec<PageRun>),
    /// Where the pre-copy read them (`read.covered`), their content is in the stream
    /// already: noted in `kept` ([start, end)). Elsewhere they are the parent image's
    /// (`parent`, for a process tracked since it, as `Parent`), but where the pre-copy is
    /// not sure of them (`read.uncertain`), or there is no parent: read now.
    PreCopied {
        read: &'a PreCopied,
        kept: &'a mut Vec<(u64, u64)>,
        parent: Option<&'a mut Vec<PageRun>>,
    },
}

/// What the pre-copy did with a process's memory: [start, end) ranges in address order,
/// apart.
#[derive(Default)]
pub struct PreCopied {
    /// Read (after the scan that protected them), the pages of zeros among them too.
    pub covered: Vec<(u64, u64)>,
    /// Scanned, which protected them again, but not read (a step whose scan failed
    /// partway, a read that failed): whether they were written since the parent is no
    /// longer known.
    pub uncertain: Vec<(u64, u64)>,
}

/// Note [start, end) of process `pid` (a mapping starting at `map_start`) as the parent
/// image's: a run of `parent_runs`, joined to the last one when it goes on from it within
/// the mapping.
fn note_parent_run(parent_runs: &mut Vec<PageRun>, pid: i32, start: u64, end: u64, map_start: u64) {
    match parent_runs.last_mut() {
        Some(r) if r.pid == pid && r.addr + r.len == start && start > map_start => {
            r.len += end - start
        }
        _ => parent_runs.push(PageRun {
            pid,
            addr: start,
            len: end - start,
        }),
    }
}

/// Push [start, end) to `ranges`, joined to the last one when it goes on from it.
fn push_range(ranges: &mut Vec<(u64, u64)>, start: u64, end: u64) {
    match ranges.last_mut() {
        Some(r) if r.1 == start => r.1 = end,
        _ => ranges.push((start, end)),
    }
}

/// The size of the pieces a pre-copy protects and then reads at once: small enough that
/// little is written between the two, large enough for few scans.
const PRECOPY_STEP: u64 = 64 << 20;

/// Whether a page the kernel's scan describes with `what` holds memory of the process's
/// own: in memory or swap, not the zero page, not a page of the file.
fn own_in_memory(what: u64) -> bool {
    what & (PAGE_IS_PRESENT | PAGE_IS_SWAPPED) != 0 && what & (PAGE_IS_PFNZERO | PAGE_IS_FILE) == 0
}

/// The pages of [start, end) of a private mapping of a file (`map`) of host process
/// `pid` that differ from the file's content there, as [start, end) runs: for pages the
/// scan says are not in memory, which are either swapped out (the process's own copy) or
/// a marker of the write protection, standing for the file's page (never touched, or
/// dropped after it was protected), which no pagemap bit tells apart. Reading one brings
/// it in. What cannot be compared (the file gone or another one) is all taken as the
/// process's own.
fn differing_from_file(pid: i32, map: &MapRecord, start: u64, end: u64) -> Vec<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let all = vec![(start, end)];
    let Ok(file) = std::fs::File::open(&map.path) else {
        return all;
    };
    let same = file.metadata().is_ok_and(|m| {
        m.ino() == map.inode && (libc::major(m.dev()), libc::minor(m.dev())) == map.dev
    });
    if !same {
        return all;
    }
    let len = (end - start) as usize;
    let (mut mine, mut theirs) = (vec![0u8; len], vec![0u8; len]);
    let readable = sys::read_process_memory(pid, start, &mut mine).is_ok_and(|n| n == len);
    if !readable {
        return all;
    }
    let at = map.offset + (start - map.start);
    let got = sys::pread(file.as_fd(), &mut theirs, at).unwrap_or(0);
    let mut out: Vec<(u64, u64)> = Vec::new();
    for k in 0..len / PAGE as usize {
        let r = k * PAGE as usize..(k + 1) * PAGE as usize;
        // (Past the file's end the mapping has no page of the file.)
        if r.end <= got && mine[r.clone()] == theirs[r] {
            continue;
        }
        push_range(
            &mut out,
            start + k as u64 * PAGE,
            start + (k + 1) as u64 * PAGE,
        );
    }
    out
}

/// What `PageStream::process` found out about a process's memory.
pub struct ProcessPages {
    /// The runs it shares with its parent (`ProcessRecord::inherited`).
    pub inherited: Vec<(u64, u64)>,
    /// (index of a mapping, `MapRecord::file_end` of it).
    pub file_ends: Vec<(usize, u64)>,
}

impl PageStream {
    pub fn new(feed: &mut Feed) -> io::Result<Self> {
        Ok(PageStream {
            buf: feed.buffer()?,
            len: 0,
        })
    }

    /// The pages of process `pid` (host pid; its record `rec`) into the stream, noted in
    /// `runs`: those of its own, each mapping's present pages (pages of a private file
    /// mapping only where it wrote them), shared memory and mappings of deleted files
    /// whole. `parent`: its parent (host pid, record) when the session holds it; the
    /// pages it shares with it since a fork are left out, and returned as the process's
    /// inherited runs (`ProcessRecord::inherited`). Also returned: where the file of a
    /// mapping of a deleted file (or of a memfd with no descriptor left) ends inside the
    /// mapping, by the mapping's index (`MapRecord::file_end`). `unwritten`: where the
    /// pages of its tracked mappings that it did not write are (`Unwritten`).
    pub fn process(
        &mut self,
        feed: &mut Feed,
        pid: i32,
        rec: &ProcessRecord,
        parent: Option<(i32, &ProcessRecord)>,
        runs: &mut Vec<PageRun>,
        mut unwritten: Unwritten,
    ) -> io::Result<ProcessPages> {
        let mut inherited: Vec<(u64, u64)> = Vec::new();
        let mut file_ends: Vec<(usize, u64)> = Vec::new();
        let pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap"))?;
        let parent_pagemap = match parent {
            Some((host, _)) => Some(std::fs::File::open(format!("/proc/{host}/pagemap"))?),
            None => None,
        };
        let mut mem = None;
        for (index, map) in rec.maps.iter().enumerate() {
            let kind = map.kind();
            if matches!(
                kind,
                MapKind::Kernel | MapKind::SharedFile | MapKind::NscdCache | MapKind::SysV
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
                    rec.pid,
                    addr,
                    len,
                    kind == MapKind::Anon,
                    through_mem,
                    whole,
                    runs,
                )
            };
            if whole {
                let len = map.end - map.start;
                let covered = copy(self, feed, runs, map.start, len)?;
                if covered < len {
                    file_ends.push((index, map.offset + covered.next_multiple_of(PAGE)));
                }
                continue;
            }
            // Tracked since the moment that matters (the parent image, or the pre-copy;
            // registered by the tracking then, and still: a mapping made, moved or
            // inherited since is not): what was written since is read; what is in
            // memory and was not written is where `unwritten` says.
            if !matches!(unwritten, Unwritten::Read)
                && map.vm & vm::WRITE_TRACKED != 0
                && matches!(kind, MapKind::Anon | MapKind::PrivateFile)
                && let Ok(regions) = tracking::scan(&pagemap, map.start, map.end)
            {
                let mut written = Vec::new();
                for (start, end, what) in regions {
                    if !own_in_memory(what) {
                        continue;
                    }
                    if what & PAGE_IS_WRITTEN != 0 {
                        written.push((start, end - start));
                        continue;
                    }
                    // Not in memory is not always swapped out: a page dropped (DONTNEED)
                    // after it was protected, and in a mapping of a file a page never
                    // touched, hold a marker of the protection, which the scan reports
                    // as swapped and not written. Neither the parent's copy nor the
                    // pre-copy's is then sure: anonymous memory is read (a marker reads
                    // as zeros, left out), a file's pages are compared with the file.
                    if what & PAGE_IS_PRESENT == 0 {
                        match kind {
                            MapKind::PrivateFile => {
                                for (s, e) in differing_from_file(pid, map, start, end) {
                                    written.push((s, e - s));
                                }
                            }
                            _ => written.push((start, end - start)),
                        }
                        continue;
                    }
                    match &mut unwritten {
                        Unwritten::Read => unreachable!("checked above"),
                        Unwritten::Parent(parent_runs) => {
                            note_parent_run(parent_runs, rec.pid, start, end, map.start)
                        }
                        Unwritten::PreCopied { read, kept, parent } => {
                            for (s, e, done) in cut(&read.covered, start, end) {
                                if done {
                                    push_range(kept, s, e);
                                    continue;
                                }
                                let Some(parent_runs) = parent.as_deref_mut() else {
                                    written.push((s, e - s));
                                    continue;
                                };
                                for (s, e, unsure) in cut(&read.uncertain, s, e) {
                                    match unsure {
                                        true => written.push((s, e - s)),
                                        false => {
                                            note_parent_run(parent_runs, rec.pid, s, e, map.start)
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                // Written pages are scattered: read many runs per system call.
                match through_mem {
                    None => self.copy_many(
                        feed,
                        pid,
                        rec.pid,
                        &written,
                        kind == MapKind::Anon,
                        runs,
                        None,
                    )?,
                    Some(_) => {
                        for &(addr, len) in &written {
                            copy(self, feed, runs, addr, len)?;
                        }
                    }
                }
                continue;
            }
            let mine = pagemap_entries(&pagemap, map)?;
            let theirs = match (parent, &parent_pagemap) {
                (Some((_, q)), Some(pm))
                    if inherits(map) && q.maps.iter().any(|m| m.same_as(map)) =>
                {
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
                    PageIs::Own => {
                        copy(self, feed, runs, addr, len)?;
                    }
                    PageIs::MaybeShared => {
                        let host = parent.expect("a parent to share with").0;
                        for (at, n, same) in same_pages(pid, host, addr, len)? {
                            if same {
                                let list = &mut inherited;
                                // (Runs of one mapping: the next one is not
                                // inherited with it, by a resume's reckoning.)
                                match list.last_mut() {
                                    Some((a, l)) if *a + *l == at && *a >= map.start => *l += n,
                                    _ => list.push((at, n)),
                                }
                            } else {
                                copy(self, feed, runs, at, n)?;
                            }
                        }
                    }
                }
            }
        }
        Ok(ProcessPages {
            inherited,
            file_ends,
        })
    }

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
    ) -> io::Result<u64> {
        let mut at = 0;
        while at < len {
            if self.len == CHUNK_SIZE {
                let full = std::mem::replace(&mut self.buf, feed.buffer()?);
                feed.send(full, CHUNK_SIZE)?;
                crate::ckpt::hooks::die_at("pages");
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
                Ok(0) if to_eof => return Ok(at),
                Err(e) if to_eof && matches!(e.raw_os_error(), Some(libc::EFAULT | libc::EIO)) => {
                    return Ok(at);
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
            let keep = self.keep_pages(base, base + got, addr + at, base, skip_zeros, ns_pid, runs);
            self.len = keep;
            at += got as u64;
        }
        Ok(len)
    }

    /// The bytes `buf[from..to]`, read from address `addr`, moved down to `keep` but for
    /// the pages of zeros among them (with `skip_zeros`), noted in `runs`; where the kept
    /// bytes end.
    #[allow(clippy::too_many_arguments)]
    fn keep_pages(
        &mut self,
        from: usize,
        to: usize,
        addr: u64,
        mut keep: usize,
        skip_zeros: bool,
        ns_pid: i32,
        runs: &mut Vec<PageRun>,
    ) -> usize {
        let page = PAGE as usize;
        let zero = |b: &[u8]| skip_zeros && b == &ZERO_PAGE[..b.len()];
        let mut i = from;
        while i < to {
            if zero(&self.buf[i..(i + page).min(to)]) {
                i = (i + page).min(to);
                continue;
            }
            let start = i;
            while i < to && !zero(&self.buf[i..(i + page).min(to)]) {
                i = (i + page).min(to);
            }
            if start != keep {
                self.buf.copy_within(start..i, keep);
            }
            keep += i - start;
            let run_addr = addr + (start - from) as u64;
            match runs.last_mut() {
                Some(r) if r.pid == ns_pid && r.addr + r.len == run_addr => {
                    r.len += (i - start) as u64
                }
                _ => runs.push(PageRun {
                    pid: ns_pid,
                    addr: run_addr,
                    len: (i - start) as u64,
                }),
            }
        }
        keep
    }

    /// Send the chunk being filled, and start the next.
    fn next_chunk(&mut self, feed: &mut Feed) -> io::Result<()> {
        let full = std::mem::replace(&mut self.buf, feed.buffer()?);
        feed.send(full, self.len)?;
        crate::ckpt::hooks::die_at("pages");
        self.len = 0;
        Ok(())
    }

    /// `copy` of many runs (address, length; whole pages, in address order) of a mapping
    /// the process may read: up to 1024 runs per system call (a run per page written, as
    /// an incremental checkpoint reads them, would otherwise cost a call each). With
    /// `skipped` (a process that runs, whose mappings may go meanwhile), the runs of a
    /// call that cannot read them all are not read but noted there; without, they are
    /// read one by one, and the first that cannot be is the error.
    #[allow(clippy::too_many_arguments)]
    fn copy_many(
        &mut self,
        feed: &mut Feed,
        pid: i32,
        ns_pid: i32,
        pieces: &[(u64, u64)],
        skip_zeros: bool,
        runs: &mut Vec<PageRun>,
        mut skipped: Option<&mut Vec<(u64, u64)>>,
    ) -> io::Result<()> {
        let page = PAGE as usize;
        let (mut i, mut into) = (0usize, 0u64);
        while i < pieces.len() {
            let mut room = (CHUNK_SIZE - self.len) / page * page;
            if room == 0 {
                self.next_chunk(feed)?;
                room = CHUNK_SIZE;
            }
            // As many pieces (or parts) as fit in the chunk and one call.
            let mut remote: Vec<(u64, usize)> = Vec::with_capacity(1024);
            let mut total = 0usize;
            let (mut j, mut at) = (i, into);
            while j < pieces.len() && remote.len() < 1024 && total < room {
                let (addr, len) = pieces[j];
                let left = (len - at) as usize;
                let take = left.min(room - total);
                remote.push((addr + at, take));
                total += take;
                if take == left {
                    (j, at) = (j + 1, 0);
                } else {
                    at += take as u64;
                }
            }
            let base = self.len;
            let got = sys::read_process_memory_scattered(
                pid,
                &remote,
                &mut self.buf[base..base + total],
            )?;
            if got < total {
                if let Some(skipped) = skipped.as_deref_mut() {
                    skipped.extend(remote.iter().map(|&(a, l)| (a, l as u64)));
                    (i, into) = (j, at);
                    continue;
                }
                // A piece that cannot be read this way: each on its own, which says which.
                for &(addr, len) in &remote {
                    self.copy(
                        feed, pid, ns_pid, addr, len as u64, skip_zeros, None, false, runs,
                    )?;
                }
                (i, into) = (j, at);
                continue;
            }
            // Keep the pages that are not all zeros, moved together, and note their runs.
            let (mut keep, mut pos) = (base, base);
            for &(addr, len) in &remote {
                keep = self.keep_pages(pos, pos + len, addr, keep, skip_zeros, ns_pid, runs);
                pos += len;
            }
            self.len = keep;
            (i, into) = (j, at);
        }
        Ok(())
    }

    /// The pre-copy of host process `pid`, which runs: the pages it holds in memory in
    /// `ranges` ((start, end, anonymous): ranges registered for write tracking, in address
    /// order), or with `written_only` those of them written since the tracker last
    /// protected them, into the stream, noted in `runs` under `pid`. Each step of a range
    /// is scanned, which protects its pages, just before it is read: a page written after
    /// it was read is found written at the freeze. What cannot be read (a mapping gone or
    /// changed meanwhile, the process gone) is left out, to be read at the freeze; where
    /// a scan failed partway (it may have protected some pages before it failed), the
    /// step is `uncertain`.
    pub fn precopy(
        &mut self,
        feed: &mut Feed,
        pid: i32,
        ranges: &[(u64, u64, bool)],
        written_only: bool,
        runs: &mut Vec<PageRun>,
    ) -> io::Result<PreCopied> {
        let mut out = PreCopied::default();
        let Ok(pagemap) = std::fs::File::open(format!("/proc/{pid}/pagemap")) else {
            return Ok(out);
        };
        for &(start, end, anon) in ranges {
            let mut from = start;
            while from < end {
                let to = end.min(from + PRECOPY_STEP);
                let (regions, whole) = scan_what_is_registered(&pagemap, pid, from, to);
                if !whole {
                    out.uncertain.push((from, to));
                }
                let pieces: Vec<(u64, u64)> = regions
                    .iter()
                    .filter(|r| {
                        // (What is not in memory is settled at the freeze.)
                        r.2 & PAGE_IS_PRESENT != 0
                            && own_in_memory(r.2)
                            && (!written_only || r.2 & PAGE_IS_WRITTEN != 0)
                    })
                    .map(|r| (r.0, r.1 - r.0))
                    .collect();
                let mut skipped = Vec::new();
                self.copy_many(feed, pid, pid, &pieces, anon, runs, Some(&mut skipped))?;
                crate::ckpt::hooks::slow_at("precopy");
                let skipped: Vec<(u64, u64)> = skipped.iter().map(|&(a, l)| (a, a + l)).collect();
                out.uncertain.extend(&skipped);
                for &(a, l) in &pieces {
                    for (s, e) in outside(&skipped, a, a + l) {
                        push_range(&mut out.covered, s, e);
                    }
                }
                from = to;
            }
        }
        // (Steps and the reads in them come in address order, but may overlap.)
        out.uncertain.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(out.uncertain.len());
        for &(s, e) in &out.uncertain {
            match merged.last_mut() {
                Some(m) if s <= m.1 => m.1 = m.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        out.uncertain = merged;
        Ok(out)
    }

    pub fn finish(self, feed: &mut Feed) -> io::Result<()> {
        feed.send(self.buf, self.len)
    }
}

// ---- resume --------------------------------------------------------------------------

/// Where the pages of one process go: through its userfaultfd (`UFFDIO_COPY`) into the
/// mappings registered with it, and with process_vm_writev everywhere else and for a
/// page the userfaultfd refuses as there already (a run of the image written over
/// another). A missing page of a registered mapping can only be written through the
/// userfaultfd: process_vm_writev's fault there fails (EFAULT), since the userfaultfd
/// takes faults from user mode only.
pub(super) struct PageWriter {
    pid: i32,
    uffd: Option<std::os::fd::OwnedFd>,
    /// The registered mappings, [start, end) in address order; one copy never spans two
    /// (the kernel copies into one mapping at a time).
    ranges: Vec<(u64, u64)>,
}

impl PageWriter {
    pub(super) fn new(
        pid: i32,
        uffd: Option<std::os::fd::OwnedFd>,
        ranges: Vec<(u64, u64)>,
    ) -> Self {
        let (uffd, ranges) = match uffd {
            Some(fd) if !ranges.is_empty() => (Some(fd), ranges),
            _ => (None, Vec::new()),
        };
        PageWriter { pid, uffd, ranges }
    }

    pub(super) fn write(&self, addr: u64, bytes: &[u8]) -> io::Result<()> {
        let Some(fd) = &self.uffd else {
            return t::write_process_memory(self.pid, addr, bytes);
        };
        let end = addr + bytes.len() as u64;
        let part = |s: u64, e: u64| &bytes[(s - addr) as usize..(e - addr) as usize];
        for (s, e) in outside(&self.ranges, addr, end) {
            t::write_process_memory(self.pid, s, part(s, e))?;
        }
        for (mut s, e) in inside(&self.ranges, addr, end) {
            while s < e {
                match super::lazy::copy_in(fd.as_fd(), s, part(s, e)) {
                    Ok(()) => break,
                    Err((done, err)) if err.raw_os_error() == Some(libc::EEXIST) => {
                        let page = s + done;
                        t::write_process_memory(self.pid, page, part(page, page + PAGE))?;
                        s = page + PAGE;
                    }
                    Err((done, err)) => {
                        return Err(io::Error::new(
                            err.kind(),
                            format!("UFFDIO_COPY at {:#x}: {err}", s + done),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

impl Restorer<'_> {
    /// The saved pages of process `into.pid`, from the page chunks that hold them, but
    /// for those in `lazy` ([start, end) ranges in address order, served by `lazy`).
    pub(super) fn write_pages(&self, into: &PageWriter, lazy: &[(u64, u64)]) -> Result<()> {
        let pid = into.pid;
        self.write_chain_pages(into, lazy)?;
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
            for (s, e) in outside(lazy, r.addr, r.addr + r.len) {
                let from = run_start[k] + (s - r.addr);
                let to = from + (e - s);
                let first = chunk_start.partition_point(|&s| s <= from) - 1;
                let last = chunk_start.partition_point(|&s| s < to) - 1;
                for i in first..=last {
                    if wanted.last() != Some(&i) {
                        wanted.push(i);
                    }
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
                let within = at - run_start[k];
                let n = ((r.len - within) as usize).min(data.len());
                if r.pid == pid {
                    let at = r.addr + within;
                    for (s, e) in outside(lazy, at, at + n as u64) {
                        let part = &data[(s - at) as usize..(e - at) as usize];
                        into.write(s, part).with_context(|| {
                            format!("writing the memory of process {} at {s:#x}", r.pid)
                        })?;
                    }
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

    /// Whether the image has pages of mapping `m` of process `pid` (its own, or its
    /// parent's).
    pub(super) fn has_pages(&self, pid: i32, m: &MapRecord) -> bool {
        self.record
            .page_runs
            .iter()
            .chain(&self.record.parent_runs)
            .any(|r| r.pid == pid && r.addr < m.end && r.addr.saturating_add(r.len) > m.start)
    }

    /// The pages of process `pid` an incremental image takes from its chain: each found
    /// in the image that holds it (`resolve`), its chunks decoded and written.
    fn write_chain_pages(&self, into: &PageWriter, lazy: &[(u64, u64)]) -> Result<()> {
        let pid = into.pid;
        let want: Vec<(u64, u64)> = self
            .record
            .parent_runs
            .iter()
            .filter(|r| r.pid == pid)
            .flat_map(|r| outside(lazy, r.addr, r.addr + r.len))
            .collect();
        if want.is_empty() {
            return Ok(());
        }
        let mut pieces = Vec::new();
        let mut steps = 0usize;
        resolve(self.ancestors, 0, pid, want, &mut steps, &mut pieces)?;
        pieces.sort_unstable();
        let mut buf = Vec::new();
        for (k, a) in self.ancestors.iter().enumerate() {
            let chunks: Vec<&crate::image::Section> =
                a.image.stored_chunks(SectionKind::PAGES).collect();
            let mut starts = Vec::with_capacity(chunks.len());
            let mut total = 0u64;
            for c in &chunks {
                starts.push(total);
                total += c.raw_len;
            }
            let mut decoded: Option<usize> = None;
            for &(_, off, addr, len) in pieces.iter().filter(|p| p.0 == k) {
                let mut done = 0u64;
                while done < len {
                    let at = off + done;
                    let i = starts.partition_point(|&s| s <= at).saturating_sub(1);
                    let Some(c) = chunks.get(i).filter(|c| at < starts[i] + c.raw_len) else {
                        bail!(
                            "the parent image {} has no pages where its record says",
                            a.path.display()
                        );
                    };
                    if decoded != Some(i) {
                        crate::image::decode_chunk_into(c, &format!("page chunk {i}"), &mut buf)?;
                        decoded = Some(i);
                    }
                    let data: &[u8] = match c.codec {
                        crate::image::Codec::Raw => &c.stored,
                        _ => &buf,
                    };
                    let from = (at - starts[i]) as usize;
                    let n = ((len - done) as usize).min(data.len() - from);
                    into.write(addr + done, &data[from..from + n])
                        .with_context(|| {
                            format!("writing the memory of process {pid} at {:#x}", addr + done)
                        })?;
                    done += n as u64;
                }
            }
        }
        Ok(())
    }
}

/// The parts of [start, end) outside `ranges` ([start, end) pairs in address order, not
/// overlapping), in order. No allocation: it runs for every run an eager resume writes.
pub(crate) fn outside(
    ranges: &[(u64, u64)],
    start: u64,
    end: u64,
) -> impl Iterator<Item = (u64, u64)> + '_ {
    let mut at = start;
    let mut rest = ranges.iter();
    std::iter::from_fn(move || {
        while at < end {
            match rest.next() {
                Some(&(s, e)) if e <= at || s >= end => {}
                Some(&(s, e)) => {
                    let gap = (at, s);
                    at = at.max(e);
                    if gap.0 < gap.1 {
                        return Some(gap);
                    }
                }
                None => {
                    let last = (at, end);
                    at = end;
                    return Some(last);
                }
            }
        }
        None
    })
}

/// `tracking::scan` of [from, to) of process `pid` (whose pagemap is `pagemap`), which
/// runs: where part of it is no longer registered (a mapping made again, or moved, since
/// it was), each of its mappings there as they are now, leaving out those that are not.
/// Whether the first scan covered it all comes with it (false: it failed partway, after
/// maybe protecting part of the range).
fn scan_what_is_registered(
    pagemap: &std::fs::File,
    pid: i32,
    from: u64,
    to: u64,
) -> (Vec<(u64, u64, u64)>, bool) {
    if let Ok(regions) = tracking::scan(pagemap, from, to) {
        return (regions, true);
    }
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let regions = maps
        .lines()
        .filter_map(crate::ckpt::procfs::parse_map)
        .map(|m| (m.start.max(from), m.end.min(to)))
        .filter(|(s, e)| s < e)
        .filter_map(|(s, e)| tracking::scan(pagemap, s, e).ok())
        .flatten()
        .collect();
    (regions, false)
}

/// [start, end) cut by `ranges` (as for `outside`) into its parts, in order, each with
/// whether it is inside them.
pub(crate) fn cut(
    ranges: &[(u64, u64)],
    start: u64,
    end: u64,
) -> impl Iterator<Item = (u64, u64, bool)> + '_ {
    let first = ranges.partition_point(|&(_, e)| e <= start);
    let mut rest = ranges[first..].iter().peekable();
    let mut at = start;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        match rest.peek() {
            Some(&&(s, e)) if s <= at => {
                let part = (at, e.min(end), true);
                at = part.1;
                rest.next();
                Some(part)
            }
            Some(&&(s, _)) if s < end => {
                let part = (at, s, false);
                at = s;
                Some(part)
            }
            _ => {
                let part = (at, end, false);
                at = end;
                Some(part)
            }
        }
    })
}

/// The parts of [start, end) inside `ranges` (as for `outside`), in order.
pub(crate) fn inside(
    ranges: &[(u64, u64)],
    start: u64,
    end: u64,
) -> impl Iterator<Item = (u64, u64)> + '_ {
    ranges
        .iter()
        .map(move |&(s, e)| (s.max(start), e.min(end)))
        .filter(|(s, e)| s < e)
}

impl Restorer<'_> {
    /// What is missing of process `pid` in `lazy` (its ranges served lazily), and where:
    /// (address, length, source, offset in the source's page stream), source 0 the image
    /// resumed and k + 1 its `ancestors[k]`.
    pub(super) fn lazy_runs(
        &self,
        pid: i32,
        lazy: &[(u64, u64)],
    ) -> Result<Vec<(u64, u64, usize, u64)>> {
        let mut out = Vec::new();
        let mut off = 0u64;
        for r in &self.record.page_runs {
            if r.pid == pid {
                for (s, e) in inside(lazy, r.addr, r.addr + r.len) {
                    out.push((s, e - s, 0, off + (s - r.addr)));
                }
            }
            off += r.len;
        }
        let want: Vec<(u64, u64)> = self
            .record
            .parent_runs
            .iter()
            .filter(|r| r.pid == pid)
            .flat_map(|r| inside(lazy, r.addr, r.addr + r.len))
            .collect();
        if !want.is_empty() {
            let mut pieces = Vec::new();
            let mut steps = 0usize;
            resolve(self.ancestors, 0, pid, want, &mut steps, &mut pieces)?;
            out.extend(
                pieces
                    .into_iter()
                    .map(|(k, off, addr, len)| (addr, len, k + 1, off)),
            );
        }
        Ok(out)
    }

    /// How many bytes of mapping `m` of process `pid` the image (and its chain) holds.
    pub(super) fn image_bytes(&self, pid: i32, m: &MapRecord) -> u64 {
        self.record
            .page_runs
            .iter()
            .chain(&self.record.parent_runs)
            .filter(|r| r.pid == pid)
            .map(|r| {
                (r.addr + r.len)
                    .min(m.end)
                    .saturating_sub(r.addr.max(m.start))
            })
            .sum()
    }
}

/// Where the content of `want` ([start, end) runs in address order) of process `src` is in
/// image `k` of the chain: in its own page data (pushed to `out` as (image, offset in its
/// page stream, address, length)), in the parent process's pages it shares (looked up
/// there), or in its own parent image (looked up there). What none holds was never
/// written: it stays as the mapping gives it.
pub(crate) fn resolve(
    chain: &[crate::load::Ancestor],
    k: usize,
    src: i32,
    want: Vec<(u64, u64)>,
    steps: &mut usize,
    out: &mut Vec<(usize, u64, u64, u64)>,
) -> Result<()> {
    *steps += 1;
    if *steps > 1 << 20 {
        bail!("the image's chain refers to its pages in circles");
    }
    let Some(a) = chain.get(k) else {
        return Ok(());
    };
    if want.is_empty() {
        return Ok(());
    }
    let rec = &a.record;
    let mut own: Vec<(u64, u64, u64)> = Vec::new();
    let mut off = 0u64;
    for r in &rec.page_runs {
        if r.pid == src {
            own.push((r.addr, r.addr + r.len, off));
        }
        off += r.len;
    }
    own.sort_unstable();
    let (found, left) = split(&want, &own);
    out.extend(found.into_iter().map(|(s, e, o)| (k, o, s, e - s)));
    let Some(p) = rec
        .processes
        .iter()
        .find(|p| p.pid == src && p.zombie.is_none())
    else {
        return Ok(());
    };
    let shared: Vec<(u64, u64, u64)> = p.inherited.iter().map(|&(a, l)| (a, a + l, 0)).collect();
    let (inherited, left) = split(&left, &shared);
    let inherited: Vec<(u64, u64)> = inherited.into_iter().map(|(s, e, _)| (s, e)).collect();
    resolve(chain, k, p.ppid, inherited, steps, out)?;
    let older: Vec<(u64, u64, u64)> = rec
        .parent_runs
        .iter()
        .filter(|r| r.pid == src)
        .map(|r| (r.addr, r.addr + r.len, 0))
        .collect();
    let (older, _) = split(&left, &older);
    resolve(
        chain,
        k + 1,
        src,
        older.into_iter().map(|(s, e, _)| (s, e)).collect(),
        steps,
        out,
    )
}

/// Runs [start, end) with an offset.
type Covered = Vec<(u64, u64, u64)>;

/// The parts of `want` ([start, end), in order, apart) that `have` ([start, end, offset),
/// in order, apart) covers, each with its offset moved to where it starts, and the parts it
/// does not.
fn split(want: &[(u64, u64)], have: &[(u64, u64, u64)]) -> (Covered, Vec<(u64, u64)>) {
    let (mut covered, mut left) = (Vec::new(), Vec::new());
    let mut j = 0;
    for &(a, b) in want {
        while j < have.len() && have[j].1 <= a {
            j += 1;
        }
        let mut cur = a;
        let mut i = j;
        while i < have.len() && have[i].0 < b {
            let (hs, he, ho) = have[i];
            let (s, e) = (cur.max(hs), b.min(he));
            if s > cur {
                left.push((cur, s));
            }
            if e > s {
                covered.push((s, e, ho + (s - hs)));
                cur = e;
            }
            if he > b {
                break;
            }
            i += 1;
        }
        if cur < b {
            left.push((cur, b));
        }
    }
    (covered, left)
}

#[cfg(test)]
mod split_tests {
    use super::{cut, inside, outside};

    #[test]
    fn outside_and_inside_cut_a_range_by_others() {
        let ranges = [(0x2000, 0x3000), (0x5000, 0x6000), (0x9000, 0xa000)];
        let out: Vec<_> = outside(&ranges, 0x1000, 0x8000).collect();
        assert_eq!(
            out,
            vec![(0x1000, 0x2000), (0x3000, 0x5000), (0x6000, 0x8000)]
        );
        let within: Vec<_> = inside(&ranges, 0x1000, 0x8000).collect();
        assert_eq!(within, vec![(0x2000, 0x3000), (0x5000, 0x6000)]);
        assert_eq!(outside(&[], 7, 9).collect::<Vec<_>>(), vec![(7, 9)]);
        assert_eq!(outside(&[(0, 10)], 2, 5).count(), 0);
        assert_eq!(outside(&[(2, 5)], 2, 5).count(), 0);
    }

    #[test]
    fn cut_gives_every_part_in_order_with_which_side_it_is_on() {
        let r = [(10, 20), (30, 40), (50, 60)];
        let parts: Vec<_> = cut(&r, 15, 55).collect();
        assert_eq!(
            parts,
            vec![
                (15, 20, true),
                (20, 30, false),
                (30, 40, true),
                (40, 50, false),
                (50, 55, true)
            ]
        );
        assert_eq!(cut(&r, 0, 5).collect::<Vec<_>>(), vec![(0, 5, false)]);
        assert_eq!(cut(&r, 20, 30).collect::<Vec<_>>(), vec![(20, 30, false)]);
        assert_eq!(cut(&r, 30, 40).collect::<Vec<_>>(), vec![(30, 40, true)]);
        assert_eq!(cut(&[], 1, 2).collect::<Vec<_>>(), vec![(1, 2, false)]);
        assert_eq!(
            cut(&r, 35, 70).collect::<Vec<_>>(),
            vec![
                (35, 40, true),
                (40, 50, false),
                (50, 60, true),
                (60, 70, false)
            ]
        );
    }

    #[test]
    fn split_finds_the_covered_parts_and_the_rest() {
        let have = [(10, 20, 100), (30, 40, 200)];
        let (c, l) = super::split(&[(0, 15), (18, 35), (38, 50)], &have);
        assert_eq!(
            c,
            vec![(10, 15, 100), (18, 20, 108), (30, 35, 200), (38, 40, 208)]
        );
        assert_eq!(l, vec![(0, 10), (20, 30), (40, 50)]);
    }
}
