//! The generations of a session's image (`crterm start --autosave INTERVAL --keep N`): the
//! image itself, `NAME.img`, is always the newest; earlier ones stay beside it as
//! `NAME.ID.img` (ID: the first 16 hex digits of the image's identity), the names an
//! incremental image already gives the parent it refers to. After each checkpoint into
//! `NAME.img` the newest N generations are kept, with every image they are made after,
//! and the other generations removed. So that a chain of incremental images (and the disk
//! it holds) does not grow without end, a checkpoint whose parent chain is
//! `CHAIN_LIMIT` images long already is a full one.

use crate::image::{self, SectionKind};
use crate::records::SessionRecord;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The most images a chain of autosaves grows to: the next autosave is a full checkpoint.
pub const CHAIN_LIMIT: usize = 8;

/// The generation name of an image of identity `id` kept beside `head` (`NAME.img` →
/// `NAME.ID.img`).
pub fn generation_name(head: &Path, id: &str) -> Option<PathBuf> {
    let name = head.file_name()?.to_string_lossy().into_owned();
    let stem = name.strip_suffix(".img").unwrap_or(&name);
    Some(head.with_file_name(format!("{stem}.{}.img", id.get(..16)?)))
}

/// Whether `file` is named as a generation of some image (`NAME.` sixteen hex digits
/// `.img`).
pub fn is_generation_name(file: &str) -> bool {
    file.strip_suffix(".img")
        .and_then(|r| r.rsplit_once('.'))
        .is_some_and(|(stem, id)| {
            !stem.is_empty() && id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())
        })
}

/// Whether `file` is a generation name of `head` (`NAME.` sixteen hex digits `.img`).
pub fn is_generation_of(head: &Path, file: &str) -> bool {
    let Some(name) = head.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return false;
    };
    let stem = name.strip_suffix(".img").unwrap_or(&name);
    file.strip_prefix(stem)
        .and_then(|r| r.strip_prefix('.'))
        .and_then(|r| r.strip_suffix(".img"))
        .is_some_and(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// An image's identity and the path of its parent (None: standalone), or None when `path`
/// is not an image.
fn identity_and_parent(path: &Path) -> Option<(String, Option<PathBuf>)> {
    let index = image::read_index(path, |k| k == SectionKind::SESSION).ok()?;
    let record: SessionRecord = index.meta(SectionKind::SESSION).ok()?;
    let parent = record.parent.map(|link| {
        let p = Path::new(&link.path);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            path.parent().unwrap_or(Path::new(".")).join(p)
        }
    });
    Some((index.id, parent))
}

/// How many images the chain of `head` holds (itself and the images it is made after; 0
/// when there is no image there).
pub fn chain_length(head: &Path) -> usize {
    let mut n = 0;
    let mut at = Some(head.to_path_buf());
    while let Some(path) = at {
        let Some((_, parent)) = identity_and_parent(&path) else {
            break;
        };
        n += 1;
        if n > 4 * CHAIN_LIMIT + 64 {
            break;
        }
        at = parent;
    }
    n
}

/// Keep the image at `head` as a generation before a checkpoint replaces it: a second name
/// (a hard link) beside it. Nothing when there is no image there.
pub fn keep_current(head: &Path) {
    let Some((id, _)) = identity_and_parent(head) else {
        return;
    };
    let Some(kept) = generation_name(head, &id) else {
        return;
    };
    if !kept.exists() {
        let _ = std::fs::hard_link(head, &kept);
    }
}

/// Remove the generations of `head` beyond the newest `keep` (by the time each was
/// written), except those a kept one is made after. Only files named as generations of
/// `head` that are images are looked at.
pub fn prune(head: &Path, keep: usize) {
    let dir = head.parent().unwrap_or(Path::new("."));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    // (mtime, path, inode); the head first whatever its time.
    let mut gens: Vec<(i64, PathBuf, (u64, u64))> = Vec::new();
    let key = |m: &std::fs::Metadata| (m.dev(), m.ino());
    let head_inode = std::fs::metadata(head).ok().map(|m| key(&m));
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !is_generation_of(head, &name) {
            continue;
        }
        let Ok(m) = e.metadata() else { continue };
        if !m.is_file() {
            continue;
        }
        gens.push((
            m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            e.path(),
            key(&m),
        ));
    }
    gens.sort_by_key(|g| std::cmp::Reverse(g.0));
    // The newest `keep` distinct images, the head counting as the first.
    let mut kept_inodes: HashSet<(u64, u64)> = HashSet::new();
    let mut needed: Vec<PathBuf> = Vec::new();
    if let Some(h) = head_inode {
        kept_inodes.insert(h);
        needed.push(head.to_path_buf());
    }
    for (_, path, inode) in &gens {
        if kept_inodes.len() >= keep.max(1) {
            break;
        }
        if kept_inodes.insert(*inode) {
            needed.push(path.clone());
        }
    }
    // And every image a kept one is made after.
    let mut keep_paths: HashSet<(u64, u64)> = HashSet::new();
    for start in needed {
        let mut at = Some(start);
        let mut steps = 0;
        while let Some(path) = at {
            let Ok(m) = std::fs::metadata(&path) else {
                break;
            };
            if !keep_paths.insert(key(&m)) || steps > 4 * CHAIN_LIMIT + 64 {
                break;
            }
            steps += 1;
            at = identity_and_parent(&path).and_then(|(_, p)| p);
        }
    }
    for (_, path, inode) in gens {
        // (Not an image: someone else's file under such a name, left alone.)
        if !keep_paths.contains(&inode) && identity_and_parent(&path).is_some() {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Where the daemon notes that the last checkpoint of the session into `head` failed
/// (`.NAME.img.failed` beside it): `crterm ls` says so beside the image from before.
fn failure_path(head: &Path) -> Option<PathBuf> {
    let name = head.file_name()?.to_string_lossy().into_owned();
    Some(head.with_file_name(format!(".{name}.failed")))
}

/// Note that a checkpoint into `head` failed, and why (one line).
pub fn note_failure(head: &Path, why: &str) {
    if let Some(p) = failure_path(head) {
        let when = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let _ = std::fs::write(p, format!("{when} {}", why.replace('\n', " ")));
    }
}

/// A checkpoint into `head` succeeded: no failure to note.
pub fn clear_failure(head: &Path) {
    if let Some(p) = failure_path(head) {
        let _ = std::fs::remove_file(p);
    }
}

/// What `note_failure` noted, for people: when (seconds since the epoch) and why.
pub fn failure_note(head: &Path) -> Option<(u64, String)> {
    let text = std::fs::read_to_string(failure_path(head)?).ok()?;
    let (when, why) = text.split_once(' ')?;
    Some((when.parse().ok()?, why.trim().chars().take(300).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_names() {
        let head = Path::new("/d/vim-1.img");
        assert!(is_generation_of(head, "vim-1.0123456789abcdef.img"));
        assert!(!is_generation_of(head, "vim-1.img"));
        assert!(!is_generation_of(head, "vim-1.0123456789abcdeg.img"));
        assert!(!is_generation_of(head, "vim-1.0123.img"));
        assert!(!is_generation_of(head, "vim-10.0123456789abcdef.img"));
        assert_eq!(
            generation_name(head, &"ab".repeat(32)).unwrap(),
            Path::new("/d/vim-1.abababababababab.img")
        );
    }
}
