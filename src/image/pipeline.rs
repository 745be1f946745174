//! Bulk data written while it is still being produced: the producer fills chunk buffers,
//! workers (one per core) compress them, a writer thread writes them to the image in order.
//!
//! A checkpoint of a large session spends its time in four steps of about the same size:
//! copying pages out of the processes, compressing, writing to the page cache and the disk's
//! writeback. Done one after the other, the session stays frozen through most of them;
//! overlapped, it stays frozen only while its pages are copied, and the checkpoint takes
//! about as long as its slowest step. Buffers go round (producer → worker → writer → back to
//! the producer), so after the first few no fresh memory is touched (each fresh page costs a
//! fault, about a microsecond on these machines), and at most `limit` bytes of them exist:
//! a producer faster than the rest waits for a buffer to come back.

use super::{CHUNK_SIZE, Codec, ImageWriter, SectionKind};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};

/// A chunk on its way: its place in the stream, its buffer and how much of it is data.
struct Job {
    index: usize,
    buf: Vec<u8>,
    len: usize,
    /// What a cache says the chunk is stored as.
    cached: Option<Cached>,
    /// The caller wants to know how the chunk was written (`ImageWriter::take_kept`).
    keep: bool,
}

/// A chunk as a cache has it (`crate::ckpt::filecache`): stored as it is (it does not
/// compress), or compressed into these bytes. Used only when it is, or decodes to, the
/// chunk's data exactly (checked by the worker, on its core, in less time than
/// compressing takes); otherwise the chunk is compressed as any other.
pub enum Cached {
    Raw(Vec<u8>),
    Zstd(Vec<u8>),
}

/// A chunk as it was written to the image, for the caller: its place in the stream,
/// whether it was written from the cache, and otherwise its codec and stored bytes.
pub struct Kept {
    pub index: usize,
    pub from_cache: bool,
    pub codec: Codec,
    pub stored: Vec<u8>,
}

/// A chunk ready to be written: compressed into `packed[..packed_len]`, or stored as it is
/// when `packed_len` is 0.
struct Done {
    job: Job,
    packed: Vec<u8>,
    packed_len: usize,
    from_cache: bool,
}

/// The producer's end of a pipeline.
pub struct Feed<'a> {
    work: mpsc::SyncSender<Job>,
    free: mpsc::Receiver<Vec<u8>>,
    made: usize,
    limit: usize,
    next: usize,
    failed: &'a AtomicBool,
    /// A buffer sent back empty, given out again first.
    unused: Option<Vec<u8>>,
}

impl Feed<'_> {
    /// A buffer of `CHUNK_SIZE` bytes to fill (its content is whatever it held before).
    pub fn buffer(&mut self) -> io::Result<Vec<u8>> {
        self.check()?;
        if let Some(buf) = self.unused.take() {
            return Ok(buf);
        }
        if let Ok(buf) = self.free.try_recv() {
            return Ok(buf);
        }
        if self.made < self.limit {
            self.made += 1;
            return Ok(vec![0u8; CHUNK_SIZE]);
        }
        // All buffers are on their way: wait for the writer to hand one back. (It always
        // does, even after a failed write, so this cannot wait forever.)
        self.free
            .recv()
            .map_err(|_| io::Error::other("the image writer stopped"))
    }

    /// Send the first `len` bytes of `buf` (a buffer from `buffer`) as the next chunk.
    pub fn send(&mut self, buf: Vec<u8>, len: usize) -> io::Result<()> {
        self.send_job(buf, len, None, false)
    }

    /// `send`, and keep how it is written for `ImageWriter::take_kept`.
    pub fn send_kept(&mut self, buf: Vec<u8>, len: usize) -> io::Result<()> {
        self.send_job(buf, len, None, true)
    }

    /// `send_kept`, for a chunk a cache says is stored as `cached`.
    pub fn send_cached(&mut self, buf: Vec<u8>, len: usize, cached: Cached) -> io::Result<()> {
        self.send_job(buf, len, Some(cached), true)
    }

    /// The place in the stream of the next chunk sent.
    pub fn next_index(&self) -> usize {
        self.next
    }

    fn send_job(
        &mut self,
        buf: Vec<u8>,
        len: usize,
        cached: Option<Cached>,
        keep: bool,
    ) -> io::Result<()> {
        self.check()?;
        if len == 0 {
            // Nothing to write: keep the buffer for the next chunk.
            self.unused = Some(buf);
            return Ok(());
        }
        let index = self.next;
        self.next += 1;
        self.work
            .send(Job {
                index,
                buf,
                len,
                cached,
                keep,
            })
            .map_err(|_| io::Error::other("the image writer stopped"))
    }

    fn check(&self) -> io::Result<()> {
        if self.failed.load(Ordering::Relaxed) {
            Err(io::Error::other("the image writer stopped"))
        } else {
            Ok(())
        }
    }
}

impl<W: Write + Send> ImageWriter<W> {
    /// Write sections of `kind` from the chunks `produce` sends through its `Feed`, compressed
    /// on all cores and written in the order they were sent, while `produce` goes on. At
    /// most `limit` bytes of buffers exist at once. Returns what `produce` returned once
    /// everything sent is written; the first error of either side otherwise.
    pub fn pipeline<R>(
        &mut self,
        kind: SectionKind,
        limit: usize,
        produce: impl FnOnce(&mut Feed) -> io::Result<R>,
    ) -> io::Result<R> {
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8);
        // Each buffer may have a compressed copy on its way: two chunks' room per buffer.
        let buffers = (limit / (2 * CHUNK_SIZE)).max(2);
        let failed = AtomicBool::new(false);
        let (work_tx, work_rx) = mpsc::sync_channel::<Job>(buffers);
        let work_rx = Mutex::new(work_rx);
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
        // Output buffers of the workers, handed back by the writer.
        let spent: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..workers {
                let (work_rx, done_tx, spent) = (&work_rx, done_tx.clone(), &spent);
                scope.spawn(move || compress_jobs(work_rx, done_tx, spent));
            }
            drop(done_tx);
            let (failed, spent) = (&failed, &spent);
            let writer = scope.spawn(move || -> io::Result<()> {
                let mut waiting = BTreeMap::new();
                let mut next = 0;
                let mut result = Ok(());
                for done in done_rx {
                    waiting.insert(done.job.index, done);
                    while let Some(done) = waiting.remove(&next) {
                        next += 1;
                        if result.is_ok() {
                            result = self.write_done(kind, &done);
                            if result.is_err() {
                                failed.store(true, Ordering::Relaxed);
                            }
                        }
                        let _ = free_tx.send(done.job.buf);
                        // (A cache's bytes are no buffer to compress into.)
                        if done.packed.len() == CHUNK_SIZE {
                            spent.lock().expect("no panics").push(done.packed);
                        }
                    }
                }
                result
            });
            let mut feed = Feed {
                work: work_tx,
                free: free_rx,
                made: 0,
                limit: buffers,
                next: 0,
                failed,
                unused: None,
            };
            let produced = produce(&mut feed);
            // Closing the work channel ends the workers, then the writer.
            drop(feed);
            let written = writer.join().expect("the image writer does not panic");
            match (produced, written) {
                (Ok(r), Ok(())) => Ok(r),
                // A failed write stops the producer too ("the image writer stopped"): the
                // write's own error says why (a full disk, a closed stream).
                (_, Err(e)) | (Err(e), Ok(())) => Err(e),
            }
        })
    }

    fn write_done(&mut self, kind: SectionKind, done: &Done) -> io::Result<()> {
        let raw = &done.job.buf[..done.job.len];
        let (codec, stored) = if done.packed_len > 0 {
            (Codec::Zstd, &done.packed[..done.packed_len])
        } else {
            (Codec::Raw, raw)
        };
        self.raw_section(kind, codec, stored, raw.len() as u64)?;
        if done.job.keep {
            self.kept.push(Kept {
                index: done.job.index,
                from_cache: done.from_cache,
                codec,
                stored: if done.from_cache {
                    Vec::new()
                } else {
                    stored.to_vec()
                },
            });
        }
        Ok(())
    }

    /// How the chunks sent with `Feed::send_kept` or `send_cached` since the last call
    /// were written.
    pub fn take_kept(&mut self) -> Vec<Kept> {
        std::mem::take(&mut self.kept)
    }
}

/// A worker: compress chunks until the work channel closes.
fn compress_jobs(
    work: &Mutex<mpsc::Receiver<Job>>,
    done: mpsc::Sender<Done>,
    spent: &Mutex<Vec<Vec<u8>>>,
) {
    let mut zstd = zstd::bulk::Compressor::new(super::ZSTD_LEVEL).ok();
    let mut unzstd = zstd::bulk::Decompressor::new().ok();
    let mut scratch = Vec::new();
    loop {
        let mut job = match work.lock().expect("no panics").recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        let raw = &job.buf[..job.len];
        let (packed, packed_len, from_cache) = match job.cached.take() {
            Some(Cached::Raw(stored)) if stored == raw => (Vec::new(), 0, true),
            Some(Cached::Zstd(stored))
                if unzstd
                    .as_mut()
                    .is_some_and(|d| decodes_to(d, &stored, raw, &mut scratch)) =>
            {
                let n = stored.len();
                (stored, n, true)
            }
            _ => {
                let mut packed = spent
                    .lock()
                    .expect("no panics")
                    .pop()
                    .unwrap_or_else(|| vec![0u8; CHUNK_SIZE]);
                let n = zstd.as_mut().map_or(0, |z| pack_into(z, raw, &mut packed));
                (packed, n, false)
            }
        };
        if done
            .send(Done {
                job,
                packed,
                packed_len,
                from_cache,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Whether `stored` decodes to `raw` exactly.
fn decodes_to(
    unzstd: &mut zstd::bulk::Decompressor,
    stored: &[u8],
    raw: &[u8],
    scratch: &mut Vec<u8>,
) -> bool {
    scratch.resize(raw.len() + 1, 0);
    matches!(unzstd.decompress_to_buffer(stored, &mut scratch[..]), Ok(n) if scratch[..n] == *raw)
}

/// Compress `chunk` into `out`; the compressed length, or 0 when the chunk is better stored
/// as it is. Random data (keys, compressed files, encrypted pages) is recognised from four
/// samples across the chunk without spending the time on all of it; output that would not
/// be shorter than the chunk is given up as soon as it would not fit.
pub(super) fn pack_into(zstd: &mut zstd::bulk::Compressor, chunk: &[u8], out: &mut [u8]) -> usize {
    const SAMPLE: usize = 16 << 10;
    if chunk.len() >= 8 * SAMPLE {
        let incompressible = (0..4).all(|k| {
            let at = chunk.len() / 4 * k;
            let room = SAMPLE * 97 / 100;
            // A sample that does not fit in 97 % of its size does not compress.
            zstd.compress_to_buffer(&chunk[at..at + SAMPLE], &mut out[..room])
                .is_err()
        });
        if incompressible {
            return 0;
        }
    }
    let room = (chunk.len() - 1).min(out.len());
    zstd.compress_to_buffer(chunk, &mut out[..room])
        .unwrap_or(0)
}
