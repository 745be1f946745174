//! An image as `crterm resume` reads it, checked whole before anything uses it: the file
//! format (`image`: every length within limits before anything is allocated, every byte
//! covered by a checksum), the metadata sections decoded within limits that grow with the
//! image's size, the terminal model and the session record validated (every id, address,
//! length and cross-reference, the page runs and carried files against the chunks the
//! image holds). `crterm resume`, `crterm check` and `crterm info` all read images here,
//! so none of them accepts what another refuses; `check` also decodes every chunk, as a
//! resume does on its way, so that its verdict is the one resume would reach.

use crate::image::{self, Image, ImageError, SectionKind};
use crate::records::SessionRecord;
use crate::term_model::Term;
use std::path::Path;

/// An image read and checked.
pub struct Loaded {
    pub image: Image,
    pub term: Term,
    pub record: SessionRecord,
    /// An incremental image's chain: its parent, the parent's parent ... each read and
    /// checked as the image is, and each the very image its child names.
    pub ancestors: Vec<Ancestor>,
}

/// An image of a chain, older than the one resumed.
pub struct Ancestor {
    pub path: std::path::PathBuf,
    pub image: Image,
    pub record: SessionRecord,
}

/// How many images a chain may have.
pub const MAX_CHAIN: usize = 1000;

/// Read the image at `path` and check it, and the chain of images it was made after, if
/// it is incremental: a parent missing or not the image it was made after refuses the
/// whole. With `keep_bulk` false the page and file chunks are checked (checksums, lengths)
/// but not kept: `crterm info` on an image of gigabytes.
pub fn load(path: &Path, keep_bulk: bool) -> Result<Loaded, ImageError> {
    load_with(path, keep_bulk, false)
}

/// `load`, but with `defer_pages` the page chunks' checksums are checked when they are
/// decoded, not now (a resume, which decodes every chunk anyway, on every core; reading
/// every byte here first was one core's work before any page was written): a chunk found
/// damaged then fails the resume, or in a lazy one ends the whole session.
pub fn load_with(path: &Path, keep_bulk: bool, defer_pages: bool) -> Result<Loaded, ImageError> {
    let read = |path: &Path| {
        image::read_file_with(
            path,
            |k| keep_bulk || (k != SectionKind::PAGES && k != SectionKind::FILES),
            defer_pages,
        )
    };
    let mut loaded = checked(read(path)?)?;
    let mut child = (path.to_path_buf(), loaded.record.parent.clone());
    while let (at, Some(link)) = child {
        if loaded.ancestors.len() >= MAX_CHAIN {
            return Err(ImageError::Corrupt(format!(
                "its chain of parent images is longer than {MAX_CHAIN}"
            )));
        }
        let parent = match Path::new(&link.path).is_absolute() {
            true => std::path::PathBuf::from(&link.path),
            false => at.parent().unwrap_or(Path::new(".")).join(&link.path),
        };
        let named = |why: String| {
            ImageError::Chain(format!(
                "its parent image {} {why} (an incremental image needs the images it was made after; `crterm compact` makes a standalone one)",
                parent.display()
            ))
        };
        let image = match read(&parent) {
            Ok(i) => i,
            Err(ImageError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(named("is missing".into()));
            }
            Err(e) => return Err(named(format!("cannot be read: {e}"))),
        };
        if image.id != link.id {
            return Err(named(
                "is not the image it was made after (it was replaced or changed since)".into(),
            ));
        }
        let Loaded { image, record, .. } = checked(image).map_err(|e| named(e.to_string()))?;
        child = (parent.clone(), record.parent.clone());
        loaded.ancestors.push(Ancestor {
            path: parent,
            image,
            record,
        });
    }
    Ok(loaded)
}

/// Check an image read already.
pub fn checked(image: Image) -> Result<Loaded, ImageError> {
    let term: Term = image.meta(SectionKind::TERM_MODEL)?;
    term.validate().map_err(ImageError::Corrupt)?;
    let record: SessionRecord = image.meta(SectionKind::SESSION)?;
    let lens = |kind| -> Vec<u64> { image.stored_chunks(kind).map(|s| s.raw_len).collect() };
    for (kind, s) in image
        .sections
        .iter()
        .filter(|s| matches!(s.kind, SectionKind::PAGES | SectionKind::FILES))
        .map(|s| (s.kind, s))
    {
        if s.raw_len > image::CHUNK_SIZE as u64 || s.raw_len == 0 {
            return Err(ImageError::Corrupt(format!(
                "a chunk of '{}' claims {} bytes",
                kind.name(),
                s.raw_len
            )));
        }
    }
    record
        .validate(&lens(SectionKind::PAGES), &lens(SectionKind::FILES))
        .map_err(ImageError::Corrupt)?;
    Ok(Loaded {
        image,
        term,
        record,
        ancestors: Vec::new(),
    })
}

/// Decode every page and file chunk (on every core), as a resume does on its way: a
/// chunk whose data does not decode to its declared length is found now.
pub fn decode_every_chunk(image: &Image) -> Result<(), ImageError> {
    let chunks: Vec<(usize, &image::Section)> = [SectionKind::PAGES, SectionKind::FILES]
        .into_iter()
        .flat_map(|kind| image.stored_chunks(kind).enumerate())
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| -> Result<(), ImageError> {
                    let mut buf = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(n, s)) = chunks.get(i) else {
                            return Ok(());
                        };
                        let what = format!("section '{}' chunk {n}", s.kind.name());
                        image::decode_chunk_into(s, &what, &mut buf)?;
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("decoding does not panic"))
    })
}
