//! The compressed content of carried files, kept per user between checkpoints
//! (`$XDG_CACHE_HOME/crterm/files`, else `~/.cache/crterm/files`).
//!
//! A full checkpoint carries the content of every file the session maps (the programs and
//! libraries), compressed; for vim that is most of the checkpoint's time, spent again on
//! the same bytes at every checkpoint, with a SHA-256 of each before. Here each such
//! file's chunks are kept as they were written to an image, with the SHA-256 of what they
//! hold, under the file's device, inode, size, mtime and ctime (nothing changes a file
//! without changing its ctime). The next checkpoint that finds a file under the same key
//! does not hash it: it reads it once and sends each chunk with the entry's, which the
//! compressing workers use only if it is, or decodes to, the bytes just read (decoding
//! takes a fraction of the time compressing does). A chunk that does not match is
//! compressed as any other; the file's hash is then not known, and the checkpoint fails
//! saying the file changed (the entry is removed: the next one hashes it). So an entry
//! changed, damaged, made by another version, or found under a key that came back (a file
//! system mounted again) cannot put anything in an image that is not the file. Only mapped files are kept, not files held open or deleted, whose content
//! may be private; the entries are 0600 in 0700 directories owned by the user, and
//! anything else found there is not used. Nothing depends on the cache: without it (no
//! home, a full disk, a directory that is not private), files are compressed as before.

use crate::image::{CHUNK_SIZE, Cached, Codec};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Files smaller than this compress in less time than a look-up takes.
pub const MIN_FILE: u64 = 16 << 10;
/// Larger files are not kept.
pub const MAX_FILE: u64 = 64 << 20;
/// When the entries take more than this, the least recently used go.
pub const CAPACITY: u64 = 256 << 20;
const MAGIC: &[u8; 8] = b"crtfc02\n";

/// A file's device (major, minor), inode, size, mtime and ctime (in ns).
pub type Key = ((u32, u32), u64, u64, i128, i128);

/// The length chunk `i` of a content of `size` bytes decodes to.
fn chunk_len(size: u64, i: usize) -> usize {
    (size - (i * CHUNK_SIZE) as u64).min(CHUNK_SIZE as u64) as usize
}

fn name(key: &Key) -> String {
    let ((major, minor), ino, size, mtime, ctime) = key;
    format!("{major}.{minor}.{ino}.{size}.{mtime}.{ctime}")
}

pub struct FileCache {
    dir: PathBuf,
}

/// One entry: the content's SHA-256, and where each chunk's stored bytes are in its file.
pub struct Entry {
    file: File,
    size: u64,
    sha256: String,
    /// (codec, offset in the entry, stored length).
    chunks: Vec<(Codec, u64, usize)>,
}

/// A directory of ours, of which others have none of `mask`'s permissions.
fn our_dir(path: &std::path::Path, mask: u32) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(m) => m.is_dir() && m.uid() == unsafe { libc::geteuid() } && m.mode() & mask == 0,
        Err(_) => false,
    }
}

impl FileCache {
    /// The user's cache, made if missing; None when there is no place for it, or the
    /// place is not private.
    pub fn open() -> Option<FileCache> {
        let base = match std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from) {
            Some(p) if p.is_absolute() => p,
            _ => PathBuf::from(std::env::var_os("HOME")?).join(".cache"),
        };
        let top = base.join("crterm");
        let dir = top.join("files");
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir);
        // Nobody else may replace the directory, nor look into it.
        (our_dir(&top, 0o022) && our_dir(&dir, 0o077)).then_some(FileCache { dir })
    }

    /// The entry for the file of `key`, when there is one that holds together (each
    /// chunk is still to be checked against the file's bytes).
    pub fn get(&self, key: &Key) -> Option<Entry> {
        let size = key.2;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(self.dir.join(name(key)))
            .ok()?;
        let meta = file.metadata().ok()?;
        if !meta.is_file() || meta.uid() != unsafe { libc::geteuid() } || meta.mode() & 0o077 != 0 {
            return None;
        }
        let count = size.div_ceil(CHUNK_SIZE as u64) as usize;
        let head_len = 8 + 64 + 8 + 4 + 8 * count;
        let mut head = vec![0u8; head_len];
        file.read_exact_at(&mut head, 0).ok()?;
        let u32_at = |at: usize| u32::from_le_bytes(head[at..at + 4].try_into().unwrap());
        let sha256 = std::str::from_utf8(&head[8..72]).ok()?;
        if &head[..8] != MAGIC
            || !sha256
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            || u64::from_le_bytes(head[72..80].try_into().unwrap()) != size
            || u32_at(80) as usize != count
        {
            return None;
        }
        let mut chunks = Vec::with_capacity(count);
        let mut at = head_len as u64;
        for i in 0..count {
            let (codec, stored) = (u32_at(84 + 8 * i), u32_at(88 + 8 * i) as usize);
            let raw = chunk_len(size, i);
            let codec = match Codec::from_u32(codec)? {
                Codec::Raw if stored == raw => Codec::Raw,
                Codec::Zstd if (1..raw).contains(&stored) => Codec::Zstd,
                _ => return None,
            };
            chunks.push((codec, at, stored));
            at += stored as u64;
        }
        (at == meta.len()).then(|| Entry {
            file,
            size,
            sha256: sha256.to_string(),
            chunks,
        })
    }

    /// Keep the chunks of the file of `key`, whose content has `sha256` (hex), as written:
    /// (codec, stored bytes). Written beside and renamed into place, so that a reader sees
    /// a whole entry or none.
    pub fn put(&self, key: &Key, sha256: &str, chunks: &[(Codec, &[u8])]) -> io::Result<()> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self.dir.join(format!(".tmp.{}.{n}", std::process::id()));
        let mut out = io::BufWriter::new(
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?,
        );
        let written = (|| {
            out.write_all(MAGIC)?;
            out.write_all(sha256.as_bytes())?;
            out.write_all(&key.2.to_le_bytes())?;
            out.write_all(&(chunks.len() as u32).to_le_bytes())?;
            for (codec, stored) in chunks {
                out.write_all(&codec.to_u32().to_le_bytes())?;
                out.write_all(&(stored.len() as u32).to_le_bytes())?;
            }
            for (_, stored) in chunks {
                out.write_all(stored)?;
            }
            out.flush()?;
            std::fs::rename(&tmp, self.dir.join(name(key)))
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// Remove the entry of `key` (one that did not match its file).
    pub fn remove(&self, key: &Key) {
        let _ = std::fs::remove_file(self.dir.join(name(key)));
    }

    /// Keep the entries under `CAPACITY`: the least recently used go first (an entry used
    /// is touched), down to three quarters of it. Leftovers of a writer that was killed
    /// (an hour old) go too.
    pub fn prune(&self) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        let mut entries: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        for e in dir.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            let modified = meta.modified().unwrap_or(now);
            let name = e.file_name();
            if name.to_string_lossy().starts_with(".tmp.") {
                if now.duration_since(modified).unwrap_or_default() > Duration::from_secs(3600) {
                    let _ = std::fs::remove_file(e.path());
                }
                continue;
            }
            entries.push((modified, meta.len(), e.path()));
        }
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        if total <= CAPACITY {
            return;
        }
        entries.sort();
        for (_, len, path) in entries {
            if total <= CAPACITY / 4 * 3 {
                break;
            }
            if std::fs::remove_file(path).is_ok() {
                total -= len;
            }
        }
    }
}

impl Entry {
    /// The SHA-256 (hex) of the content the entry holds.
    pub fn sha256(&self) -> String {
        self.sha256.clone()
    }

    /// The length chunk `i` decodes to.
    pub fn chunk_len(&self, i: usize) -> usize {
        chunk_len(self.size, i)
    }

    /// Chunk `i` as the entry has it, if it is to hold `len` bytes (and can be read).
    pub fn chunk(&self, i: usize, len: usize) -> Option<Cached> {
        let &(codec, at, stored_len) = self.chunks.get(i)?;
        if len != self.chunk_len(i) {
            return None;
        }
        let mut stored = vec![0u8; stored_len];
        self.file.read_exact_at(&mut stored, at).ok()?;
        Some(match codec {
            Codec::Raw => Cached::Raw(stored),
            Codec::Zstd => Cached::Zstd(stored),
        })
    }

    /// Mark the entry used (the least recently used go first).
    pub fn touch(&self) {
        let _ = self.file.set_modified(SystemTime::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn cache() -> (FileCache, PathBuf) {
        let top = std::env::temp_dir().join(format!(
            "crterm-filecache-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let dir = top.join("files");
        std::fs::create_dir_all(&dir).unwrap();
        (FileCache { dir }, top)
    }

    const KEY: Key = ((8, 1), 42, 10, 7, 9);
    const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn an_entry_is_read_back_only_as_it_was_written() {
        let (c, top) = cache();
        c.put(&KEY, SHA, &[(Codec::Raw, b"0123456789")]).unwrap();
        let path = c.dir.join(name(&KEY));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let e = c.get(&KEY).expect("the entry");
        assert_eq!(e.sha256(), SHA);
        assert!(matches!(e.chunk(0, 10), Some(Cached::Raw(b)) if b == b"0123456789"));
        assert!(e.chunk(0, 9).is_none(), "a chunk of another length");
        assert!(e.chunk(1, 10).is_none(), "a chunk past the end");
        // Another size under the same device and inode is another key.
        assert!(c.get(&((8, 1), 42, 11, 7, 9)).is_none());
        let good = std::fs::read(&path).unwrap();
        let bad: Vec<(&str, Vec<u8>)> = vec![
            ("truncated", good[..good.len() - 1].to_vec()),
            ("longer", [&good[..], b"x"].concat()),
            ("another magic", [&b"crtfc01\n"[..], &good[8..]].concat()),
            ("an upper-case hash", {
                let mut b = good.clone();
                b[8] = b'A';
                b
            }),
            ("another size", {
                let mut b = good.clone();
                b[72] = 11;
                b
            }),
            ("two chunks", {
                let mut b = good.clone();
                b[80] = 2;
                b
            }),
            ("a raw chunk of another length", {
                let mut b = good.clone();
                b[88] = 9;
                b
            }),
            ("a compressed chunk no shorter than its data", {
                let mut b = good.clone();
                b[84] = 1;
                b
            }),
        ];
        for (what, bytes) in bad {
            std::fs::write(&path, &bytes).unwrap();
            assert!(c.get(&KEY).is_none(), "{what}");
        }
        std::fs::write(&path, &good).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(c.get(&KEY).is_none(), "an entry others can read");
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(top.join("elsewhere"), &path).unwrap();
        std::fs::write(top.join("elsewhere"), &good).unwrap();
        std::fs::set_permissions(
            top.join("elsewhere"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        assert!(c.get(&KEY).is_none(), "a symbolic link");
        c.remove(&KEY);
        assert!(!path.exists());
        std::fs::remove_dir_all(&top).unwrap();
    }
}
