//! The image file: one file per checkpoint, versioned, checked, never trusted.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! header    "CRTERMIM"  major u16  minor u16  info_len u32  info_crc u32  reserved u32
//!           info (postcard ImageInfo: creator, kernel, machine, CPU features, time)
//! section*  "SECT"  kind u32  codec u32  crc u32  stored_len u64  raw_len u64
//!           stored bytes (crc32 of them in the header)
//! end       a section of kind END whose data is the table of all sections (postcard)
//! footer    table_offset u64  "CRTMEND\0"
//! ```
//!
//! Every section says what follows it, so an image reads front to back from a pipe (resume
//! from stdin, issue 5) and is written front to back without holding more than one chunk
//! (a writer never seeks); the table at the end gives random access to a file. Metadata is
//! postcard, zstd-compressed per section; page data is a run of sections of one kind, each
//! one chunk of at most `CHUNK_SIZE` bytes compressed on its own (or stored as it is when it
//! does not compress), so a bad chunk is found where it is and chunks can be decompressed
//! in parallel.
//!
//! Reading checks every length against a limit before allocating, every checksum before
//! decoding, and every reserved field for zero: a truncated, corrupt or hostile image gives
//! an `ImageError` and nothing else.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;

mod pipeline;
pub use pipeline::{Cached, Feed, Kept};

pub const MAGIC: &[u8; 8] = b"CRTERMIM";
pub const FOOTER_MAGIC: &[u8; 8] = b"CRTMEND\0";
pub const FORMAT_MAJOR: u16 = 1;
pub const FORMAT_MINOR: u16 = 0;

/// Limits a reader holds an image to before it allocates anything.
pub const MAX_INFO: u32 = 1 << 20;
pub const MAX_META: u64 = 1 << 30;
pub const MAX_SECTION: u64 = 1 << 30;
pub const MAX_SECTIONS: usize = 1 << 20;

/// What a metadata section may decode to, whatever its stored size: a reader gives any
/// image this much memory per section.
pub const META_FLOOR: u64 = 64 << 20;

/// Beyond `META_FLOOR`, a metadata section may decode to at most this many times its
/// stored size (real records and models compress 5 to 15 times; blank rows more, but a
/// model of mostly blank rows is small). So the memory a reader gives an image grows with
/// the image's own size: a few megabytes of zeros cannot claim a gigabyte.
pub const META_RATIO: u64 = 32;

/// Uncompressed size of one page-data chunk.
pub const CHUNK_SIZE: usize = 4 << 20;

const SECTION_MAGIC: &[u8; 4] = b"SECT";
/// How hard chunks are compressed: the fastest level, for every kind. Memory pages are
/// compressed while the session may still be frozen. Carried files are compressed after
/// it runs again, but they are most of what a small session's checkpoint spends its time
/// on: level 3 made them about 9 % smaller (vim's 8.1 MB of programs and libraries: 4.07 →
/// 3.73 MB) at 60 % of level 1's speed (176 against 293 MB/s on one core), and vim's whole
/// checkpoint took 54 ms against 44 ms at level 1.
pub(crate) const ZSTD_LEVEL: i32 = 1;

/// What a section holds. Kinds a reader does not know are kept and ignored (a newer minor
/// version may add some).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SectionKind(pub u32);

impl SectionKind {
    pub const END: SectionKind = SectionKind(0);
    pub const TERM_MODEL: SectionKind = SectionKind(1);
    pub const SESSION: SectionKind = SectionKind(2);
    pub const PAGES: SectionKind = SectionKind(3);
    pub const FILES: SectionKind = SectionKind(4);

    pub fn name(self) -> String {
        match self.0 {
            0 => "end".into(),
            1 => "terminal model".into(),
            2 => "session".into(),
            3 => "memory pages".into(),
            4 => "file contents".into(),
            n => format!("kind {n}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Codec {
    Raw,
    Zstd,
}

impl Codec {
    pub(crate) fn to_u32(self) -> u32 {
        match self {
            Codec::Raw => 0,
            Codec::Zstd => 1,
        }
    }
    pub(crate) fn from_u32(v: u32) -> Option<Codec> {
        match v {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

/// Where and on what an image was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    pub creator: String,
    pub kernel: String,
    pub machine: String,
    pub cpu_features: Vec<String>,
    pub created_unix: u64,
}

impl ImageInfo {
    /// This crterm on this machine, now.
    pub fn here() -> ImageInfo {
        ImageInfo {
            creator: format!("crterm {}", env!("CARGO_PKG_VERSION")),
            kernel: uname_field(|u| &u.release),
            machine: uname_field(|u| &u.machine),
            cpu_features: cpu_features(),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

fn uname_field(f: impl Fn(&libc::utsname) -> &[libc::c_char; 65]) -> String {
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname fills the struct it is given.
    if unsafe { libc::uname(&mut u) } != 0 {
        return String::new();
    }
    let field = f(&u);
    let bytes: Vec<u8> = field
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The CPU's feature flags, as /proc/cpuinfo names them.
fn cpu_features() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mut flags: Vec<String> = text
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, f)| f.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    flags.sort();
    flags
}

/// One entry of the table at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    pub kind: SectionKind,
    pub codec: Codec,
    pub offset: u64,
    pub stored_len: u64,
    pub raw_len: u64,
    pub crc: u32,
}

#[derive(Debug)]
pub enum ImageError {
    NotAnImage,
    Version {
        major: u16,
        minor: u16,
    },
    Truncated(String),
    Corrupt(String),
    TooLarge {
        what: String,
        len: u64,
        limit: u64,
    },
    Missing(SectionKind),
    /// An incremental image whose chain is not whole: what is wrong with it.
    Chain(String),
    Io(io::Error),
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::NotAnImage => write!(f, "not a crterm image (no crterm header)"),
            ImageError::Version { major, minor } => write!(
                f,
                "image format {major}.{minor} is not one this crterm reads (it reads {FORMAT_MAJOR}.x)"
            ),
            ImageError::Truncated(what) => write!(f, "the image is cut short: {what}"),
            ImageError::Corrupt(what) => write!(f, "the image is damaged: {what}"),
            ImageError::TooLarge { what, len, limit } => {
                write!(
                    f,
                    "the image is damaged: {what} claims {len} bytes (at most {limit})"
                )
            }
            ImageError::Missing(kind) => write!(f, "the image has no {} section", kind.name()),
            ImageError::Chain(what) => write!(f, "{what}"),
            ImageError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ImageError {}

impl From<io::Error> for ImageError {
    fn from(e: io::Error) -> Self {
        ImageError::Io(e)
    }
}

fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

// ---- writing ---------------------------------------------------------------------------

/// Writes an image to any byte sink, front to back (no seeking).
pub struct ImageWriter<W: Write> {
    out: W,
    offset: u64,
    table: Vec<TableEntry>,
    /// How the chunks the caller asked about were written (`pipeline::Feed::send_kept`).
    kept: Vec<pipeline::Kept>,
}

impl<W: Write> ImageWriter<W> {
    pub fn new(mut out: W, info: &ImageInfo) -> io::Result<ImageWriter<W>> {
        let info = postcard::to_allocvec(info).map_err(io::Error::other)?;
        let mut header = Vec::with_capacity(24 + info.len());
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&FORMAT_MAJOR.to_le_bytes());
        header.extend_from_slice(&FORMAT_MINOR.to_le_bytes());
        header.extend_from_slice(&(info.len() as u32).to_le_bytes());
        header.extend_from_slice(&crc(&info).to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&info);
        out.write_all(&header)?;
        Ok(ImageWriter {
            out,
            offset: header.len() as u64,
            table: Vec::new(),
            kept: Vec::new(),
        })
    }

    /// A section as it is to be stored, with the length its content decodes to (`meta` and
    /// `chunks` make them; tools and tests that build images by hand too).
    pub fn raw_section(
        &mut self,
        kind: SectionKind,
        codec: Codec,
        stored: &[u8],
        raw_len: u64,
    ) -> io::Result<()> {
        let c = crc(stored);
        let mut h = [0u8; 32];
        h[..4].copy_from_slice(SECTION_MAGIC);
        h[4..8].copy_from_slice(&kind.0.to_le_bytes());
        h[8..12].copy_from_slice(&codec.to_u32().to_le_bytes());
        h[12..16].copy_from_slice(&c.to_le_bytes());
        h[16..24].copy_from_slice(&(stored.len() as u64).to_le_bytes());
        h[24..32].copy_from_slice(&raw_len.to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(stored)?;
        self.table.push(TableEntry {
            kind,
            codec,
            offset: self.offset,
            stored_len: stored.len() as u64,
            raw_len,
            crc: c,
        });
        self.offset += 32 + stored.len() as u64;
        Ok(())
    }

    /// The decoded lengths of the sections of `kind` written so far, in order.
    pub fn raw_lens(&self, kind: SectionKind) -> Vec<u64> {
        self.table
            .iter()
            .filter(|t| t.kind == kind)
            .map(|t| t.raw_len)
            .collect()
    }

    /// A metadata section: postcard, compressed.
    pub fn meta<T: Serialize>(&mut self, kind: SectionKind, value: &T) -> io::Result<()> {
        let raw = postcard::to_allocvec(value).map_err(io::Error::other)?;
        self.meta_raw(kind, &raw)
    }

    /// A metadata section from bytes already postcard-encoded.
    pub fn meta_raw(&mut self, kind: SectionKind, raw: &[u8]) -> io::Result<()> {
        let stored = zstd::bulk::compress(raw, ZSTD_LEVEL)?;
        self.raw_section(kind, Codec::Zstd, &stored, raw.len() as u64)
    }

    /// Bulk data (memory pages): one section per chunk of at most `CHUNK_SIZE` bytes,
    /// compressed on its own, or stored as it is when it does not compress. Call as often
    /// as data arrives; readers get the chunks of a kind back in order.
    /// (`pipeline` does the same on all cores while the data is still being produced.)
    pub fn chunks(&mut self, kind: SectionKind, data: &[u8]) -> io::Result<()> {
        let mut zstd = zstd::bulk::Compressor::new(ZSTD_LEVEL)?;
        let mut packed = vec![0u8; CHUNK_SIZE];
        for chunk in data.chunks(CHUNK_SIZE) {
            match pipeline::pack_into(&mut zstd, chunk, &mut packed) {
                0 => self.raw_section(kind, Codec::Raw, chunk, chunk.len() as u64)?,
                n => self.raw_section(kind, Codec::Zstd, &packed[..n], chunk.len() as u64)?,
            }
        }
        Ok(())
    }

    /// Write the table and the footer; returns the sink.
    pub fn finish(self) -> io::Result<W> {
        self.finish_with_id().map(|(w, _)| w)
    }

    /// `finish`, and the identity (`Image::id`) of the image written.
    pub fn finish_with_id(mut self) -> io::Result<(W, String)> {
        let table = postcard::to_allocvec(&self.table).map_err(io::Error::other)?;
        let table_offset = self.offset;
        self.raw_section(SectionKind::END, Codec::Raw, &table, table.len() as u64)?;
        self.out.write_all(&table_offset.to_le_bytes())?;
        self.out.write_all(FOOTER_MAGIC)?;
        self.out.flush()?;
        let id = table_id(&table);
        Ok((self.out, id))
    }
}

/// The temporary file that process `pid` writes while making the image at `path` (so that
/// whoever started a writer that died can remove what it left).
pub fn temp_path(path: &Path, pid: u32) -> Option<std::path::PathBuf> {
    if path.as_os_str() == "-" {
        // A stream: written as it is made.
        return None;
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name()?;
    Some(dir.join(format!(".{}.tmp-{pid}", name.to_string_lossy())))
}

/// The image file being written: buffered, and every `WRITEBACK_STEP` bytes the disk is
/// asked to start writing what came before, so the closing fsync (which a checkpoint waits
/// for) finds most of a large image already on disk.
pub struct FileSink {
    out: io::BufWriter<std::fs::File>,
    written: u64,
    started: u64,
}

const WRITEBACK_STEP: u64 = 32 << 20;

impl FileSink {
    fn new(file: std::fs::File) -> FileSink {
        FileSink {
            out: io::BufWriter::with_capacity(1 << 20, file),
            written: 0,
            started: 0,
        }
    }

    fn into_file(self) -> io::Result<std::fs::File> {
        self.out.into_inner().map_err(|e| e.into_error())
    }
}

impl Write for FileSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= WRITEBACK_STEP {
            use std::os::fd::AsFd;
            self.out.flush()?;
            // Only a hint: a file system that cannot do it still gets the fsync.
            let _ = crate::sys::start_writeback(
                self.out.get_ref().as_fd(),
                self.started,
                self.written - self.started,
            );
            self.started = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// An image file being made: a temporary file next to its place (mode 0600, it holds the
/// session's memory), renamed into place only when complete and on disk, so that a crash,
/// a full disk or an error never leaves a half image at the path nor harms the image that
/// was there. Dropped before `commit`, it removes the temporary file.
pub struct ImageFile {
    path: std::path::PathBuf,
    tmp: std::path::PathBuf,
    file: Option<std::fs::File>,
}

impl ImageFile {
    /// Check the place (nothing but a regular file may be replaced) and make the temporary
    /// file.
    pub fn create(path: &Path) -> io::Result<ImageFile> {
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = temp_path(path, std::process::id())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        check_output(path)?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        Ok(ImageFile {
            path: path.to_path_buf(),
            tmp,
            file: Some(file),
        })
    }

    /// A writer into the temporary file (once).
    pub fn writer(&mut self, info: &ImageInfo) -> io::Result<ImageWriter<FileSink>> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("the image file is already being written"))?;
        ImageWriter::new(FileSink::new(file), info)
    }

    /// Finish the image, put it on disk, and (after `before_rename`) rename it into place.
    /// Returns the image's identity (`Image::id`).
    pub fn commit(
        self,
        w: ImageWriter<FileSink>,
        before_rename: impl FnOnce(),
    ) -> io::Result<String> {
        let (sink, id) = w.finish_with_id()?;
        let file = sink.into_file()?;
        file.sync_all()?;
        before_rename();
        // Again at the last moment: something else may have been put there meanwhile.
        check_output(&self.path)?;
        std::fs::rename(&self.tmp, &self.path)?;
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(id)
    }
}

impl Drop for ImageFile {
    fn drop(&mut self) {
        // After a rename there is nothing left at the temporary name.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Write an image file whole or not at all (`ImageFile`).
pub fn write_file<E: From<io::Error>>(
    path: &Path,
    info: &ImageInfo,
    fill: impl FnOnce(&mut ImageWriter<FileSink>) -> Result<(), E>,
) -> Result<(), E> {
    let mut out = ImageFile::create(path)?;
    let mut w = out.writer(info)?;
    fill(&mut w)?;
    out.commit(w, || {})?;
    Ok(())
}

/// Write an image to a stream (a pipe, a socket, a terminal refused earlier) front to back,
/// as it is made: no temporary file, no rename. A failure midway leaves a stream without
/// its end section, which every reader refuses.
pub fn write_stream<E: From<io::Error>>(
    out: std::fs::File,
    info: &ImageInfo,
    fill: impl FnOnce(&mut ImageWriter<FileSink>) -> Result<(), E>,
) -> Result<(), E> {
    let mut w = ImageWriter::new(FileSink::new(out), info)?;
    fill(&mut w)?;
    w.finish()?.into_file()?;
    Ok(())
}

// ---- reading ---------------------------------------------------------------------------

/// One section as stored (checksum verified). `stored` is empty for sections the reader
/// was asked not to keep (`read_with`); `stored_len` is always the length on disk.
#[derive(Debug, Clone)]
pub struct Section {
    pub kind: SectionKind,
    pub codec: Codec,
    pub raw_len: u64,
    pub stored_len: u64,
    pub stored: Bytes,
    /// The CRC32 of `stored`, as the image's header says.
    pub crc: u32,
    /// Whether `stored` was checked against `crc` when the image was read; if not (the
    /// page chunks of an image read for a lazy resume), decoding it checks it.
    pub checked: bool,
}

/// A section's bytes: read into memory (from a pipe), or a range of the image file
/// mapped into memory (a file: nothing is copied until it is decoded).
#[derive(Clone)]
pub enum Bytes {
    Owned(Vec<u8>),
    Mapped(std::sync::Arc<crate::sys::MappedFile>, usize, usize),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Owned(v) => v,
            Bytes::Mapped(m, start, len) => &m.as_slice()[*start..*start + *len],
        }
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes", self.len())
    }
}

/// Where an image is read from: a stream (read and copied) or a mapped file (sliced).
trait Source {
    /// Up to `buf.len()` bytes (fewer only at the end).
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, ImageError>;
    /// Exactly `len` bytes, kept.
    fn take(&mut self, len: u64, what: &str) -> Result<Bytes, ImageError>;
    /// Exactly `len` bytes, not kept: their CRC.
    fn skim(&mut self, len: u64, what: &str) -> Result<u32, ImageError>;
    /// Whether sections of `kind` are kept without checking their CRC now (it is checked
    /// when they are decoded).
    fn defers(&self, _kind: SectionKind) -> bool {
        false
    }
}

struct Stream<'a, R: Read>(&'a mut R);

impl<R: Read> Source for Stream<'_, R> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, ImageError> {
        let mut got = 0;
        while got < buf.len() {
            match self.0.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(got)
    }
    fn take(&mut self, len: u64, what: &str) -> Result<Bytes, ImageError> {
        read_len(self.0, len, what).map(Bytes::Owned)
    }
    fn skim(&mut self, len: u64, what: &str) -> Result<u32, ImageError> {
        skim_len(self.0, len, what)
    }
}

struct Mapped {
    file: std::sync::Arc<crate::sys::MappedFile>,
    pos: usize,
    /// Page chunks are checked when decoded, not when read.
    defer_pages: bool,
}

impl Mapped {
    fn range(&mut self, len: u64, what: &str) -> Result<(usize, usize), ImageError> {
        let left = self.file.as_slice().len() - self.pos;
        if len > left as u64 {
            return Err(ImageError::Truncated(format!(
                "{what} needs {len} bytes, only {left} follow"
            )));
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok((start, len as usize))
    }
}

impl Source for Mapped {
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, ImageError> {
        let data = &self.file.as_slice()[self.pos..];
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        self.pos += n;
        Ok(n)
    }
    fn take(&mut self, len: u64, what: &str) -> Result<Bytes, ImageError> {
        let (start, len) = self.range(len, what)?;
        Ok(Bytes::Mapped(self.file.clone(), start, len))
    }
    fn skim(&mut self, len: u64, what: &str) -> Result<u32, ImageError> {
        let (start, len) = self.range(len, what)?;
        Ok(crc(&self.file.as_slice()[start..start + len]))
    }
    fn defers(&self, kind: SectionKind) -> bool {
        self.defer_pages && kind == SectionKind::PAGES
    }
}

/// A whole image read and checked.
#[derive(Debug)]
pub struct Image {
    pub format: (u16, u16),
    pub info: ImageInfo,
    pub sections: Vec<Section>,
    /// The owner of the image file (the descriptor read), None for a stream.
    pub owner: Option<u32>,
    /// Its identity: the SHA-256 of its section table (hex), which holds the checksum of
    /// every section. An incremental image names its parent by it.
    pub id: String,
}

/// The identity of an image whose section table is `table` (as stored).
pub fn table_id(table: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    crate::records::hex(&Sha256::digest(table))
}

/// Read exactly `len` bytes, growing the buffer only as bytes arrive (a hostile length
/// meets the end of the input, not an allocation of that size).
fn read_len(r: &mut impl Read, len: u64, what: &str) -> Result<Vec<u8>, ImageError> {
    // A chunk's length at once (no regrowing copies); beyond that, as bytes arrive.
    let mut buf = Vec::with_capacity(len.min(16 << 20) as usize);
    let got = r.take(len).read_to_end(&mut buf)?;
    if (got as u64) < len {
        return Err(ImageError::Truncated(format!(
            "{what} needs {len} bytes, only {got} follow"
        )));
    }
    Ok(buf)
}

fn read_array<const N: usize>(r: &mut impl Source, what: &str) -> Result<[u8; N], ImageError> {
    let v = r.take(N as u64, what)?;
    Ok(v[..].try_into().expect("length checked"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("in bounds"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("in bounds"))
}

/// Read an image front to back (a file or a pipe) and check all of it.
pub fn read(r: &mut impl Read) -> Result<Image, ImageError> {
    read_with(r, |_| true)
}

/// Read the bytes of a section without keeping them, checking their CRC on the way.
fn skim_len(r: &mut impl Read, len: u64, what: &str) -> Result<u32, ImageError> {
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; (1 << 20).min(len as usize).max(1)];
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = match r.read(&mut buf[..want]) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            n => n?,
        };
        if n == 0 {
            return Err(ImageError::Truncated(format!(
                "{what} needs {len} bytes, only {} follow",
                len - left
            )));
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(hasher.finalize())
}

/// Like `read`, but sections for which `keep` is false are only checked, not kept in
/// memory (for `crterm info` on an image of gigabytes).
pub fn read_with(
    r: &mut impl Read,
    keep: impl Fn(SectionKind) -> bool,
) -> Result<Image, ImageError> {
    read_from(&mut Stream(r), keep)
}

fn read_from(r: &mut impl Source, keep: impl Fn(SectionKind) -> bool) -> Result<Image, ImageError> {
    let mut head = [0u8; 24];
    let got = r.fill(&mut head)?;
    if got < 8 || &head[..8] != MAGIC {
        return Err(ImageError::NotAnImage);
    }
    if got < 24 {
        return Err(ImageError::Truncated("the header".into()));
    }
    let major = u16::from_le_bytes([head[8], head[9]]);
    let minor = u16::from_le_bytes([head[10], head[11]]);
    if major != FORMAT_MAJOR {
        return Err(ImageError::Version { major, minor });
    }
    let info_len = u32_at(&head, 12);
    if info_len > MAX_INFO {
        return Err(ImageError::TooLarge {
            what: "the header's information".into(),
            len: info_len as u64,
            limit: MAX_INFO as u64,
        });
    }
    if u32_at(&head, 20) != 0 {
        return Err(ImageError::Corrupt(
            "reserved header field is not zero".into(),
        ));
    }
    let info_bytes = r.take(info_len as u64, "the header's information")?;
    if crc(&info_bytes) != u32_at(&head, 16) {
        return Err(ImageError::Corrupt(
            "checksum of the header's information".into(),
        ));
    }
    let info: ImageInfo = postcard::from_bytes(&info_bytes)
        .map_err(|e| ImageError::Corrupt(format!("the header's information: {e}")))?;

    let mut offset = 24 + info_len as u64;
    let mut sections = Vec::new();
    let mut table: Option<Vec<TableEntry>> = None;
    let mut table_offset = 0;
    let mut id = String::new();
    while table.is_none() {
        if sections.len() >= MAX_SECTIONS {
            return Err(ImageError::Corrupt("too many sections".into()));
        }
        let h: [u8; 32] = read_array(r, "a section header")?;
        if &h[..4] != SECTION_MAGIC {
            return Err(ImageError::Corrupt(format!(
                "no section header at byte {offset}"
            )));
        }
        let kind = SectionKind(u32_at(&h, 4));
        let what = format!("section '{}' at byte {offset}", kind.name());
        let codec = Codec::from_u32(u32_at(&h, 8))
            .ok_or_else(|| ImageError::Corrupt(format!("{what}: unknown codec")))?;
        let stored_len = u64_at(&h, 16);
        let raw_len = u64_at(&h, 24);
        for (len, label) in [(stored_len, "stored"), (raw_len, "decoded")] {
            if len > MAX_SECTION {
                return Err(ImageError::TooLarge {
                    what: format!("{what} ({label})"),
                    len,
                    limit: MAX_SECTION,
                });
            }
        }
        let kept = kind == SectionKind::END || keep(kind);
        let deferred = kept && r.defers(kind);
        let (stored, sum) = if deferred {
            (r.take(stored_len, &what)?, u32_at(&h, 12))
        } else if kept {
            let stored = r.take(stored_len, &what)?;
            let sum = crc(&stored);
            (stored, sum)
        } else {
            (Bytes::Owned(Vec::new()), r.skim(stored_len, &what)?)
        };
        if sum != u32_at(&h, 12) {
            return Err(ImageError::Corrupt(format!("{what}: checksum mismatch")));
        }
        if kind == SectionKind::END {
            if codec != Codec::Raw || raw_len != stored_len {
                return Err(ImageError::Corrupt("the section table's header".into()));
            }
            table_offset = offset;
            id = table_id(&stored);
            let t: Vec<TableEntry> = postcard::from_bytes(&stored)
                .map_err(|e| ImageError::Corrupt(format!("the section table: {e}")))?;
            table = Some(t);
        } else {
            sections.push(Section {
                kind,
                codec,
                raw_len,
                stored_len,
                stored,
                crc: sum,
                checked: !deferred,
            });
        }
        offset += 32 + stored_len;
    }
    let footer: [u8; 16] = read_array(r, "the footer")?;
    let table = table.expect("loop ends with the table");
    if &footer[8..] != FOOTER_MAGIC || u64_at(&footer, 0) != table_offset {
        return Err(ImageError::Corrupt("the footer".into()));
    }
    // The table must describe exactly the sections read.
    let consistent = table.len() == sections.len()
        && table.iter().zip(&sections).all(|(t, s)| {
            t.kind == s.kind
                && t.codec == s.codec
                && t.stored_len == s.stored_len
                && t.raw_len == s.raw_len
        });
    if !consistent {
        return Err(ImageError::Corrupt(
            "the section table does not match the sections".into(),
        ));
    }
    Ok(Image {
        format: (major, minor),
        info,
        sections,
        owner: None,
        id,
    })
}

/// The identity (`Image::id`) and record sections of an image file, read from its table
/// at the end without reading the rest: what a checkpoint needs of the parent it refers
/// to. Only the sections `keep` wants are read, each checked against its checksum.
pub fn read_index(path: &Path, keep: impl Fn(SectionKind) -> bool) -> Result<Image, ImageError> {
    use std::os::unix::fs::FileExt;
    let f = open_image(path)?;
    let len = f.metadata()?.len();
    let at = |off: u64, n: usize, what: &str| -> Result<Vec<u8>, ImageError> {
        if off.checked_add(n as u64).is_none_or(|e| e > len) {
            return Err(ImageError::Truncated(what.to_string()));
        }
        let mut buf = vec![0u8; n];
        f.read_exact_at(&mut buf, off)?;
        Ok(buf)
    };
    let head = at(0, 24, "the header")?;
    if &head[..8] != MAGIC {
        return Err(ImageError::NotAnImage);
    }
    let (major, minor) = (
        u16::from_le_bytes([head[8], head[9]]),
        u16::from_le_bytes([head[10], head[11]]),
    );
    if major != FORMAT_MAJOR {
        return Err(ImageError::Version { major, minor });
    }
    let info_len = u32_at(&head, 12).min(MAX_INFO);
    let info_bytes = at(24, info_len as usize, "the header's information")?;
    if crc(&info_bytes) != u32_at(&head, 16) {
        return Err(ImageError::Corrupt(
            "checksum of the header's information".into(),
        ));
    }
    let info: ImageInfo = postcard::from_bytes(&info_bytes)
        .map_err(|e| ImageError::Corrupt(format!("the header's information: {e}")))?;
    let footer = at(len.saturating_sub(16), 16, "the footer")?;
    if &footer[8..] != FOOTER_MAGIC {
        return Err(ImageError::Truncated("the footer".into()));
    }
    // One section: its header, checked, and its stored bytes, checked.
    let section = |off: u64,
                   what: &str|
     -> Result<(SectionKind, Codec, u64, Vec<u8>), ImageError> {
        let h = at(off, 32, what)?;
        let kind = SectionKind(u32_at(&h, 4));
        let codec = Codec::from_u32(u32_at(&h, 8));
        let (stored_len, raw_len) = (u64_at(&h, 16), u64_at(&h, 24));
        if &h[..4] != SECTION_MAGIC || stored_len > MAX_SECTION || raw_len > MAX_SECTION {
            return Err(ImageError::Corrupt(format!("{what}: its header")));
        }
        let codec = codec.ok_or_else(|| ImageError::Corrupt(format!("{what}: unknown codec")))?;
        let stored = at(off + 32, stored_len as usize, what)?;
        if crc(&stored) != u32_at(&h, 12) {
            return Err(ImageError::Corrupt(format!("{what}: checksum mismatch")));
        }
        Ok((kind, codec, raw_len, stored))
    };
    let (kind, _, _, table_bytes) = section(u64_at(&footer, 0), "the section table")?;
    if kind != SectionKind::END {
        return Err(ImageError::Corrupt("the footer".into()));
    }
    let table: Vec<TableEntry> = postcard::from_bytes(&table_bytes)
        .map_err(|e| ImageError::Corrupt(format!("the section table: {e}")))?;
    let mut sections = Vec::new();
    for t in table.iter().filter(|t| keep(t.kind)) {
        let what = format!("section '{}'", t.kind.name());
        let (kind, codec, raw_len, stored) = section(t.offset, &what)?;
        if kind != t.kind || codec != t.codec || raw_len != t.raw_len {
            return Err(ImageError::Corrupt(format!(
                "{what} does not match the section table"
            )));
        }
        sections.push(Section {
            kind,
            codec,
            raw_len,
            stored_len: stored.len() as u64,
            crc: crc(&stored),
            checked: true,
            stored: Bytes::Owned(stored),
        });
    }
    Ok(Image {
        format: (major, minor),
        info,
        sections,
        owner: None,
        id: table_id(&table_bytes),
    })
}

/// Read and check an image file.
pub fn read_file(path: &Path) -> Result<Image, ImageError> {
    read_file_with(path, |_| true, false)
}

/// What kind of file a mode says (for messages): "a FIFO", "a directory" ...
pub fn file_kind(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else {
        "a regular file"
    }
}

/// Open an image to read: only a regular file is one (a FIFO, a device or a directory is
/// refused, naming it). Opened without blocking, so that a FIFO with no writer does not
/// hang the reader before it can be refused.
pub fn open_image(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let ft = f.metadata()?.file_type();
    if !ft.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "it is {}, not an image: an image is a regular file (or `-`, standard input, where a command takes one)",
                file_kind(ft)
            ),
        ));
    }
    Ok(f)
}

/// Refuse to write an image over anything but a regular file: a temporary file renamed
/// into place would replace a device, a FIFO, a socket or a symbolic link (as root,
/// `-o /dev/null` would have replaced /dev/null with a file holding the session's
/// memory), and a directory cannot be replaced at all.
pub fn check_output(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_file() => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "it exists and is {}, not a regular file; an image replaces only a regular file",
                file_kind(m.file_type())
            ),
        )),
        _ => Ok(()),
    }
}

/// Read and check an image file, keeping only the sections `keep` wants.
pub fn read_file_with(
    path: &Path,
    keep: impl Fn(SectionKind) -> bool,
    defer_pages: bool,
) -> Result<Image, ImageError> {
    use std::os::unix::fs::MetadataExt;
    let f = open_image(path)?;
    let meta = f.metadata()?;
    // A regular file of some size is mapped rather than read: its sections are sliced
    // out of the mapping, not copied (an image of gigabytes is not read twice).
    let mut image = if meta.len() >= 1 << 20
        && let Ok(m) = crate::sys::MappedFile::map(&f)
    {
        read_from(
            &mut Mapped {
                file: std::sync::Arc::new(m),
                pos: 0,
                defer_pages,
            },
            keep,
        )?
    } else {
        read_with(&mut io::BufReader::with_capacity(1 << 20, f), keep)?
    };
    image.owner = Some(meta.uid());
    Ok(image)
}

impl Image {
    pub fn section(&self, kind: SectionKind) -> Result<&Section, ImageError> {
        self.sections
            .iter()
            .find(|s| s.kind == kind)
            .ok_or(ImageError::Missing(kind))
    }

    /// Decode a metadata section: within `meta_limit` of its stored size before anything
    /// is allocated, to exactly its declared length, and to one value with no bytes left
    /// over.
    pub fn meta<T: DeserializeOwned>(&self, kind: SectionKind) -> Result<T, ImageError> {
        let s = self.section(kind)?;
        let what = format!("section '{}'", kind.name());
        if s.stored.len() as u64 != s.stored_len {
            return Err(ImageError::Missing(kind));
        }
        if s.codec != Codec::Zstd {
            return Err(ImageError::Corrupt(format!(
                "{what}: not a metadata section"
            )));
        }
        let limit = meta_limit(s.stored_len);
        if s.raw_len > limit {
            return Err(ImageError::TooLarge {
                what,
                len: s.raw_len,
                limit,
            });
        }
        // The frame says what it holds: it must be what the section header says.
        match zstd::zstd_safe::get_frame_content_size(&s.stored) {
            Ok(Some(n)) if n == s.raw_len => {}
            _ => {
                return Err(ImageError::Corrupt(format!(
                    "{what}: its compressed frame does not hold the declared {} bytes",
                    s.raw_len
                )));
            }
        }
        let raw = zstd::bulk::decompress(&s.stored, s.raw_len as usize)
            .map_err(|e| ImageError::Corrupt(format!("{what}: {e}")))?;
        if raw.len() as u64 != s.raw_len {
            return Err(ImageError::Corrupt(format!("{what}: wrong decoded length")));
        }
        match postcard::take_from_bytes(&raw) {
            Ok((value, [])) => Ok(value),
            Ok((_, rest)) => Err(ImageError::Corrupt(format!(
                "{what}: {} bytes left over after its content",
                rest.len()
            ))),
            Err(e) => Err(ImageError::Corrupt(format!("{what}: {e}"))),
        }
    }

    /// The stored chunks of `kind`, in order (to decode elsewhere, e.g. on another thread,
    /// with `decode`).
    pub fn stored_chunks(&self, kind: SectionKind) -> impl Iterator<Item = &Section> {
        self.sections.iter().filter(move |s| s.kind == kind)
    }

    /// Decode the `index`th chunk of `kind`.
    pub fn chunk(&self, kind: SectionKind, index: usize) -> Result<Vec<u8>, ImageError> {
        let s = self
            .sections
            .iter()
            .filter(|s| s.kind == kind)
            .nth(index)
            .ok_or_else(|| {
                ImageError::Corrupt(format!("section '{}' has no chunk {index}", kind.name()))
            })?;
        decode_chunk(s, &format!("section '{}' chunk {index}", kind.name()))
    }

    /// Decode every section of `kind` in order (the chunks of bulk data), calling `each`
    /// with each decoded chunk.
    pub fn chunks(
        &self,
        kind: SectionKind,
        mut each: impl FnMut(&[u8]) -> Result<(), ImageError>,
    ) -> Result<(), ImageError> {
        for (index, s) in self.sections.iter().filter(|s| s.kind == kind).enumerate() {
            let what = format!("section '{}' chunk {index}", kind.name());
            each(&decode_chunk(s, &what)?)?;
        }
        Ok(())
    }
}

/// How many bytes a metadata section stored in `stored_len` bytes may decode to.
pub fn meta_limit(stored_len: u64) -> u64 {
    META_FLOOR
        .max(stored_len.saturating_mul(META_RATIO))
        .min(MAX_META)
}

/// A bulk data chunk, checked and decoded into `buf` (whose memory is reused), or, stored
/// raw, checked and returned as it is stored (no copy).
pub fn decode_chunk_into<'a>(
    s: &'a Section,
    what: &str,
    buf: &'a mut Vec<u8>,
) -> Result<&'a [u8], ImageError> {
    if s.stored.len() as u64 != s.stored_len {
        return Err(ImageError::Missing(s.kind));
    }
    if !s.checked && crc(&s.stored) != s.crc {
        return Err(ImageError::Corrupt(format!("{what}: checksum mismatch")));
    }
    if s.raw_len > CHUNK_SIZE as u64 {
        return Err(ImageError::TooLarge {
            what: what.to_string(),
            len: s.raw_len,
            limit: CHUNK_SIZE as u64,
        });
    }
    match s.codec {
        Codec::Raw => {
            if s.stored.len() as u64 != s.raw_len {
                return Err(ImageError::Corrupt(format!("{what}: length")));
            }
            Ok(&s.stored[..])
        }
        Codec::Zstd => {
            buf.resize(s.raw_len as usize, 0);
            let n = zstd::bulk::decompress_to_buffer(&s.stored, &mut buf[..])
                .map_err(|e| ImageError::Corrupt(format!("{what}: {e}")))?;
            if n as u64 != s.raw_len {
                return Err(ImageError::Corrupt(format!("{what}: length")));
            }
            Ok(&buf[..n])
        }
    }
}

/// A bulk data chunk, checked and decoded.
pub fn decode_chunk(s: &Section, what: &str) -> Result<Vec<u8>, ImageError> {
    let mut buf = Vec::new();
    let len = decode_chunk_into(s, what, &mut buf)?.len();
    if s.codec == Codec::Raw {
        return Ok(s.stored[..len].to_vec());
    }
    buf.truncate(len);
    Ok(buf)
}
