//! The dump process's part of a checkpoint: the memory and files of a session whose state
//! the daemon has read (`state`, `hold`) into an image. It reads the frozen processes'
//! pages (`crate::task::memory::pages`) into chunks that are compressed and written
//! while it reads, says when it is done with the frozen processes (the daemon then lets
//! them go on), then carries the content of the files the session maps or holds open and
//! writes the record. It changes nothing in the session: killed at any moment, it leaves
//! the session as it was (the daemon, the session's tracer, undoes what it changed).

use super::filecache;
use crate::image::{CHUNK_SIZE, Codec, ImageWriter, SectionKind};
use crate::records::*;
use crate::sys;
use crate::task::memory::pages::{self, PageStream, Unwritten};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::AsFd;

/// What the daemon sends the dump process, in this order: maybe a `PreCopy` (the dump
/// says `precopied` when it is done), then the `Dump`. Each is a little-endian u64 of its
/// length, then its postcard encoding.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToDumper {
    /// Read what these processes hold in memory now, while the session runs: every page,
    /// or (`written_only`, for an incremental image) the pages written since their
    /// trackers last protected them (the rest is the parent's, or was never written).
    PreCopy {
        procs: Vec<PreCopyProcess>,
        written_only: bool,
    },
    Dump(Box<DumpOrder>),
}

/// What a pre-copy reads of one process: its ranges registered for write tracking that
/// it may read, as (start, end, anonymous).
#[derive(Debug, Serialize, Deserialize)]
pub struct PreCopyProcess {
    pub host: i32,
    pub ranges: Vec<(u64, u64, bool)>,
}

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
    /// An incremental image: made after this parent.
    pub incremental: Option<Incremental>,
    /// By live process (as `hosts`): whether its memory has been tracked since the moment
    /// that matters (the parent image was made, or the pre-copy began): only then are the
    /// pages it did not write since taken from there.
    pub tracked: Vec<bool>,
    /// By live process: whether what it did not write since its tracker last protected
    /// its pages, and the pre-copy did not read, is the parent image's.
    pub from_parent: Vec<bool>,
}

/// What an incremental checkpoint knows of its parent image.
#[derive(Debug, Serialize, Deserialize)]
pub struct Incremental {
    pub link: ParentLink,
    /// The carried files of the parent's record: their contents are in its chain, and
    /// their copies say which files (device, inode, size, times) have them.
    pub files: Vec<CarriedFile>,
}

/// What a dump wrote.
pub struct DumpSummary {
    pub processes: usize,
    pub threads: usize,
    pub memory_bytes: u64,
    /// With a pre-copy: the bytes it read, and those of them written again before the
    /// freeze (unused in the image).
    pub precopied: Option<(u64, u64)>,
}

/// What the dump process tells the daemon on the way (`dumper`).
pub enum Step {
    /// The pre-copy is done.
    PreCopied,
    /// Nothing more is read from the frozen processes.
    Read,
}

/// The content hash of every regular file the session holds open (small enough), read
/// through the path it had (files in flight too); once per file.
fn hash_open_files(record: &mut SessionRecord) {
    let mut done: std::collections::HashMap<(u64, u64), Option<String>> = Default::default();
    let held = record.processes.iter_mut().flat_map(|p| &mut p.fds);
    for f in held.chain(&mut record.in_flight) {
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

/// Put the content of every file the session maps into the FILES chunks, once per content:
/// the same inode mapped many times is read once, and equal contents under other inodes
/// (found by SHA-256) are stored once. Each file starts a chunk of its own (so one file can
/// be read back alone).
fn carry_files<W: Write + Send>(
    w: &mut ImageWriter<W>,
    record: &mut SessionRecord,
    deleted: Vec<FileToCarry>,
    parent_files: &[CarriedFile],
    budget: usize,
) -> io::Result<()> {
    use sha2::{Digest, Sha256};
    use std::collections::HashMap;
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let mut by_inode: HashMap<((u32, u32), u64), Option<usize>> = HashMap::new();
    let mut by_hash: HashMap<(String, Vec<(u64, u64)>), usize> = HashMap::new();
    // What the parent's chain has: a file of the same device, inode, size, mtime and
    // ctime as one it carried has the same content (nothing changes a file without
    // changing its ctime), not read again.
    // (device, inode, size, mtime, ctime) -> the parent's file.
    type FileKey = ((u32, u32), u64, u64, i128, i128);
    let mut in_parent: HashMap<FileKey, usize> = HashMap::new();
    for (i, f) in parent_files.iter().enumerate() {
        for c in &f.copies {
            in_parent.insert((c.dev, c.inode, c.size, c.mtime_ns, c.ctime_ns), i);
        }
    }
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
    let cache = filecache::FileCache::open();
    // The mapped files, for the cache.
    let mut to_keep: Vec<ToKeep> = Vec::new();
    let mut room = filecache::CAPACITY;
    w.pipeline(SectionKind::FILES, budget, |feed| {
        for m in maps {
            use std::io::Seek;
            super::hooks::die_at("files");
            super::hooks::stall_at("files");
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
            // A file the session maps, opened here (not one it holds open).
            let mapped = m.file.is_none();
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
            let copy = FileCopy {
                path: m.path.clone(),
                dev: m.dev,
                inode: m.inode,
                mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
                size: meta.size(),
                ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
            };
            let known = (m.dev, m.inode, copy.size, copy.mtime_ns, copy.ctime_ns);
            if let Some(&p) = in_parent.get(&known) {
                let f = &parent_files[p];
                let key_hash = (f.sha256.clone(), f.holes.clone());
                match by_hash.get(&key_hash) {
                    Some(&i) => record.files[i].copies.push(copy),
                    None => {
                        by_hash.insert(key_hash, record.files.len());
                        record.files.push(CarriedFile {
                            sha256: f.sha256.clone(),
                            size: f.size,
                            copies: vec![copy],
                            holes: f.holes.clone(),
                            in_parent: true,
                        });
                    }
                }
                by_inode.insert(
                    key,
                    by_hash.get(&(f.sha256.clone(), f.holes.clone())).copied(),
                );
                continue;
            }
            // A sparse file's holes (it has fewer blocks than its size needs): a copy is one
            // content with the same holes.
            let holes = if meta.blocks() * 512 < meta.size() {
                sys::holes_of(file.as_fd(), meta.size())?
            } else {
                Vec::new()
            };
            // A mapped file the cache knows (by device, inode, size, mtime and ctime) is not
            // hashed: its content is the entry's, if every chunk of it read now is the
            // entry's (the workers check each; see the end).
            let cached = cache
                .as_ref()
                .filter(|_| mapped)
                .filter(|_| (filecache::MIN_FILE..=filecache::MAX_FILE).contains(&meta.size()));
            let entry = cached.and_then(|c| c.get(&known));
            // A new entry's chunks are held until the image is written: at most the cache's
            // size of them.
            let cached = cached.filter(|_| entry.is_some() || meta.size() <= room);
            if cached.is_some() && entry.is_none() {
                room -= meta.size();
            }
            let changed =
                || io::Error::other(format!("{} changed while it was being saved", m.path));
            // An open file: whole, or not at all. A mapped file for a new entry, up to 16
            // MiB, is read whole too: what is hashed is then what is sent.
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
                None if cached.is_some() && entry.is_none() && meta.size() <= 16 << 20 => {
                    let mut content = Vec::with_capacity(meta.size() as usize);
                    (&mut file)
                        .take(meta.size() + 1)
                        .read_to_end(&mut content)?;
                    if content.len() as u64 != meta.size() {
                        return Err(changed());
                    }
                    Some(content)
                }
                None => None,
            };
            // An entry's hash is not known to be the file's until its chunks are checked.
            let unchecked = entry.is_some();
            let sha256 = match &entry {
                Some(e) => e.sha256(),
                None => {
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
                    hex(&hasher.finalize())
                }
            };
            // (No other file is taken for the same content by an unchecked hash.)
            if !unchecked && let Some(&i) = by_hash.get(&(sha256.clone(), holes.clone())) {
                record.files[i].copies.push(copy);
                by_inode.insert(key, Some(i));
                continue;
            }
            // A new content: send it (read again from the page cache, where hashing just
            // put it). A mapped file's chunks go with the entry's, to be checked, or are
            // kept for a new entry (read again, hashed again, so that the entry is of what
            // was sent).
            let mut size = 0u64;
            let mut from = whole.as_deref();
            if from.is_none() {
                file.seek(std::io::SeekFrom::Start(0))?;
            }
            let mut again =
                (cached.is_some() && entry.is_none() && whole.is_none()).then(Sha256::new);
            let first = feed.next_index();
            for i in 0.. {
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
                if let Some(h) = &mut again {
                    h.update(&chunk[..n]);
                }
                match entry.as_ref().and_then(|e| e.chunk(i, n)) {
                    Some(c) => feed.send_cached(chunk, n, c)?,
                    None if cached.is_some() => feed.send_kept(chunk, n)?,
                    None => feed.send(chunk, n)?,
                }
                if n < CHUNK_SIZE {
                    break;
                }
            }
            if whole.is_none() && size != meta.size() {
                return Err(changed());
            }
            if again.is_some_and(|h| hex(&h.finalize()) != sha256) {
                return Err(changed());
            }
            if cached.is_some() {
                to_keep.push(ToKeep {
                    file: record.files.len(),
                    key: known,
                    sha256: sha256.clone(),
                    places: first..feed.next_index(),
                    entry,
                });
            }
            if !unchecked {
                by_hash.insert((sha256.clone(), holes.clone()), record.files.len());
            }
            by_inode.insert(key, Some(record.files.len()));
            record.files.push(CarriedFile {
                sha256,
                size,
                copies: vec![copy],
                holes,
                in_parent: false,
            });
        }
        Ok(())
    })?;
    // The image is written. An entry that served every chunk of its file is touched (the
    // least recently used go first). One that did not is wrong for the file (damaged, or
    // the file changed): it goes, and the file's hash is made from what was sent (the
    // entry's chunks that matched, the others as written). A file without an entry gets
    // one, for the next checkpoint.
    if let Some(cache) = &cache {
        let kept: HashMap<usize, crate::image::Kept> =
            w.take_kept().into_iter().map(|k| (k.index, k)).collect();
        let mut added = false;
        for f in to_keep {
            let written: Option<Vec<&crate::image::Kept>> =
                f.places.map(|i| kept.get(&i)).collect();
            let written =
                written.ok_or_else(|| io::Error::other("a chunk written is not known"))?;
            match f.entry {
                Some(e) if written.iter().all(|k| k.from_cache) => e.touch(),
                Some(e) => {
                    cache.remove(&f.key);
                    record.files[f.file].sha256 = sent_sha256(&e, &written)?;
                }
                None => {
                    let chunks: Vec<(Codec, &[u8])> =
                        written.iter().map(|k| (k.codec, &k.stored[..])).collect();
                    added |= cache.put(&f.key, &f.sha256, &chunks).is_ok();
                }
            }
        }
        // (Only when it grew: pruning looks at every entry.)
        if added {
            cache.prune();
        }
    }
    Ok(())
}

/// The SHA-256 of a file's content as its chunks were written: `entry`'s where they came
/// from it, the others decoded as written.
fn sent_sha256(entry: &filecache::Entry, written: &[&crate::image::Kept]) -> io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let mut buf = Vec::new();
    for (i, k) in written.iter().enumerate() {
        let cached;
        let (codec, stored): (Codec, &[u8]) = if k.from_cache {
            cached = entry.chunk(i, entry.chunk_len(i));
            match &cached {
                Some(crate::image::Cached::Raw(b)) => (Codec::Raw, b),
                Some(crate::image::Cached::Zstd(b)) => (Codec::Zstd, b),
                None => return Err(io::Error::other("a cached chunk cannot be read again")),
            }
        } else {
            (k.codec, &k.stored)
        };
        match codec {
            Codec::Raw => hasher.update(stored),
            Codec::Zstd => {
                buf.resize(CHUNK_SIZE, 0);
                let n = zstd::bulk::decompress_to_buffer(stored, &mut buf[..])?;
                hasher.update(&buf[..n]);
            }
        }
    }
    Ok(hex(&hasher.finalize()))
}

/// A mapped file sent with the cache's help: its entry (by `key`), or the content for a
/// new one, and where its chunks are in the FILES stream.
struct ToKeep {
    /// Its place in the record's files.
    file: usize,
    key: filecache::Key,
    sha256: String,
    places: std::ops::Range<usize>,
    entry: Option<filecache::Entry>,
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

/// Write the image of the session into `w`, as the daemon orders (`next`: its next
/// message). With a `PreCopy` first, the memory of the running session is read, and
/// `steps` told `PreCopied`. Then the `Dump` order: the page data of the frozen session
/// (one stream, the runs of `page_runs` one after another, cut into chunks of
/// `CHUNK_SIZE`, compressed and written while they are read, at most `budget` bytes of
/// buffers), the terminal model, the content of the files the session maps or holds
/// open, the record. `steps` is told `Read` once nothing more is read from the frozen
/// processes (their pages, and the descriptors of open files to carry): the daemon lets
/// them go on then, and the rest is written meanwhile.
pub fn write_image<W: Write + Send>(
    w: &mut ImageWriter<W>,
    mut next: impl FnMut() -> io::Result<ToDumper>,
    budget: usize,
    mut steps: impl FnMut(Step),
) -> io::Result<DumpSummary> {
    type Ranges = pages::PreCopied;
    let mut rest = None;
    let mut parent_runs = Vec::new();
    let mut precopied = None;
    w.pipeline(SectionKind::PAGES, budget, |feed| {
        let mut stream = PageStream::new(feed)?;
        // The pre-copy's runs (under host pids), and what it read of each process.
        let mut early: Vec<PageRun> = Vec::new();
        let mut covered: Option<HashMap<i32, Ranges>> = None;
        let order = match next()? {
            ToDumper::PreCopy {
                procs,
                written_only,
            } => {
                let mut read = HashMap::new();
                for p in &procs {
                    let got = stream.precopy(feed, p.host, &p.ranges, written_only, &mut early)?;
                    read.insert(p.host, got);
                    super::hooks::die_at("precopy");
                }
                covered = Some(read);
                steps(Step::PreCopied);
                match next()? {
                    ToDumper::Dump(d) => d,
                    ToDumper::PreCopy { .. } => {
                        return Err(io::Error::other("a second pre-copy"));
                    }
                }
            }
            ToDumper::Dump(d) => d,
        };
        super::hooks::die_at("order");
        let DumpOrder {
            mut record,
            hosts,
            model,
            carry_files,
            incremental,
            tracked,
            from_parent,
        } = *order;
        let first_live = record
            .processes
            .len()
            .checked_sub(hosts.len())
            .ok_or_else(|| io::Error::other("the order names more processes than its record"))?;
        let mut runs = std::mem::take(&mut record.page_runs);
        let live = &record.processes[first_live..];
        let mut found = Vec::with_capacity(live.len());
        // What the freeze found unwritten where the pre-copy read it, by host pid.
        let mut kept: HashMap<i32, Vec<(u64, u64)>> = HashMap::new();
        let nothing = Ranges::default();
        for (i, (&pid, rec)) in hosts.iter().zip(live).enumerate() {
            // Its parent, when the session holds it: pages shared with it since a fork
            // are saved once, in the parent's.
            let parent = live
                .iter()
                .position(|q| q.pid == rec.ppid)
                .map(|i| (hosts[i], &live[i]));
            let mut mine = Vec::new();
            let parent_has = incremental.is_some() && from_parent.get(i) == Some(&true);
            let unwritten = match (tracked.get(i) == Some(&true), &covered) {
                (false, _) => Unwritten::Read,
                (true, Some(c)) => Unwritten::PreCopied {
                    read: c.get(&pid).unwrap_or(&nothing),
                    kept: &mut mine,
                    parent: parent_has.then_some(&mut parent_runs),
                },
                (true, None) if parent_has => Unwritten::Parent(&mut parent_runs),
                (true, None) => Unwritten::Read,
            };
            found.push(stream.process(feed, pid, rec, parent, &mut runs, unwritten)?);
            kept.insert(pid, mine);
        }
        for (p, found) in record.processes[first_live..].iter_mut().zip(found) {
            p.inherited = found.inherited;
            for (i, end) in found.file_ends {
                p.maps[i].file_end = Some(end);
            }
        }
        if covered.is_some() {
            let ns_pid: HashMap<i32, i32> = hosts
                .iter()
                .zip(&record.processes[first_live..])
                .map(|(&h, p)| (h, p.pid))
                .collect();
            let (all, unused) = precopied_runs(&early, &kept, &ns_pid, &mut runs);
            precopied = Some((all, unused));
        }
        record.page_runs = runs;
        let deleted = open_files_to_carry(&record, &hosts, carry_files)?;
        steps(Step::Read);
        rest = Some((record, deleted, model, incremental));
        // The last chunk is compressed after the session goes on: a small session (vim)
        // is then not frozen for any compression at all.
        stream.finish(feed)
    })?;
    let (mut record, deleted, model, incremental) = rest.expect("the pipeline read the order");
    // The session runs again: the rest is written now.
    w.meta_raw(SectionKind::TERM_MODEL, &model)?;
    hash_open_files(&mut record);
    let parent_files = incremental.as_ref().map_or(&[][..], |i| &i.files[..]);
    carry_files(w, &mut record, deleted, parent_files, budget)?;
    // (An image that refers to nothing of its parent's stands alone.)
    if let Some(inc) = incremental
        && (!parent_runs.is_empty() || record.files.iter().any(|f| f.in_parent))
    {
        record.parent = Some(inc.link);
        record.parent_runs = parent_runs;
    }
    // Which mappings were tracked is the checkpoint's business only.
    for m in record.processes.iter_mut().flat_map(|p| &mut p.maps) {
        m.vm &= !vm::WRITE_TRACKED;
    }
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
        precopied,
    })
}

/// The runs of the page stream once a pre-copy's (`early`, under host pids; their bytes
/// came first) are settled: each part the freeze found unwritten (`kept`, by host pid)
/// given to its process by its session pid (`ns_pid`), the rest unused; then the
/// freeze's own `runs`, which this replaces. Returned: the bytes the pre-copy read, and
/// those of them unused.
fn precopied_runs(
    early: &[PageRun],
    kept: &HashMap<i32, Vec<(u64, u64)>>,
    ns_pid: &HashMap<i32, i32>,
    runs: &mut Vec<PageRun>,
) -> (u64, u64) {
    let mut out: Vec<PageRun> = Vec::with_capacity(early.len() + runs.len());
    let (mut all, mut unused) = (0u64, 0u64);
    for r in early {
        all += r.len;
        let theirs = kept.get(&r.pid).map_or(&[][..], |k| &k[..]);
        for (s, e, keep) in pages::cut(theirs, r.addr, r.addr + r.len) {
            let run = match (keep, ns_pid.get(&r.pid)) {
                (true, Some(&pid)) => PageRun {
                    pid,
                    addr: s,
                    len: e - s,
                },
                _ => {
                    unused += e - s;
                    PageRun {
                        pid: PageRun::UNUSED,
                        addr: 0,
                        len: e - s,
                    }
                }
            };
            match out.last_mut() {
                Some(l)
                    if l.pid == run.pid
                        && (run.pid == PageRun::UNUSED || l.addr + l.len == run.addr) =>
                {
                    l.len += run.len
                }
                _ => out.push(run),
            }
        }
    }
    out.append(runs);
    *runs = out;
    (all, unused)
}
