//! `crterm compact`: one standalone image of an incremental image and its chain, for
//! copying elsewhere or before the older images are removed. The chain is read and
//! checked as a resume reads it; each process's memory is gathered from the images that
//! hold it, in address order; each carried file from the image that has its content. The
//! image is written whole or not at all, as every image is (the one it replaces stays
//! until the new one is in place).

use crate::image::{self, CHUNK_SIZE, Codec, Image, SectionKind};
use crate::load::{self, Ancestor};
use crate::records::{CarriedFile, PageRun};
use anyhow::{Context, Result, anyhow};
use std::path::Path;

/// Reads a run of bytes of an image's page stream, decoding each chunk once in turn.
struct PageReader<'a> {
    chunks: Vec<&'a image::Section>,
    starts: Vec<u64>,
    decoded: Option<(usize, Vec<u8>)>,
}

impl<'a> PageReader<'a> {
    fn new(image: &'a Image) -> Self {
        let chunks: Vec<&image::Section> = image.stored_chunks(SectionKind::PAGES).collect();
        let mut starts = Vec::with_capacity(chunks.len());
        let mut total = 0;
        for c in &chunks {
            starts.push(total);
            total += c.raw_len;
        }
        PageReader {
            chunks,
            starts,
            decoded: None,
        }
    }

    fn read(&mut self, mut off: u64, len: u64, out: &mut Vec<u8>) -> Result<()> {
        let end = off + len;
        while off < end {
            let i = self.starts.partition_point(|&s| s <= off).saturating_sub(1);
            let c = self
                .chunks
                .get(i)
                .filter(|c| off < self.starts[i] + c.raw_len)
                .ok_or_else(|| {
                    anyhow!("an image of the chain has no pages where its record says")
                })?;
            if self.decoded.as_ref().is_none_or(|(d, _)| *d != i) {
                let data = match c.codec {
                    Codec::Raw => c.stored.to_vec(),
                    _ => image::decode_chunk(c, &format!("page chunk {i}"))?,
                };
                self.decoded = Some((i, data));
            }
            let data = &self.decoded.as_ref().expect("decoded").1;
            let from = (off - self.starts[i]) as usize;
            let n = ((end - off) as usize).min(data.len() - from);
            out.extend_from_slice(&data[from..from + n]);
            off += n as u64;
        }
        Ok(())
    }
}

pub fn run(path: &Path, out: Option<&Path>) -> Result<i32> {
    let out = out.unwrap_or(path);
    let named = |e: image::ImageError| anyhow!("cannot compact {}: {e}", path.display());
    let loaded = load::load(path, true).map_err(named)?;
    let term = loaded.term;
    let info = loaded.image.info.clone();
    let mut record = loaded.record.clone();
    let mut chain = vec![Ancestor {
        path: path.to_path_buf(),
        image: loaded.image,
        record: loaded.record,
    }];
    chain.extend(loaded.ancestors);
    let images = chain.len();
    // Every process's memory, where the chain holds it.
    let head = &chain[0].record;
    let mut pieces: Vec<(i32, u64, u64, usize, u64)> = Vec::new();
    for p in head.processes.iter().filter(|p| p.zombie.is_none()) {
        let mut want: Vec<(u64, u64)> = head
            .page_runs
            .iter()
            .chain(&head.parent_runs)
            .filter(|r| r.pid == p.pid)
            .map(|r| (r.addr, r.addr + r.len))
            .collect();
        want.sort_unstable();
        let mut found = Vec::new();
        let mut steps = 0;
        crate::task::memory::pages::resolve(&chain, 0, p.pid, want, &mut steps, &mut found)?;
        found.sort_unstable_by_key(|&(_, _, addr, _)| addr);
        pieces.extend(
            found
                .into_iter()
                .map(|(k, off, addr, len)| (p.pid, addr, len, k, off)),
        );
    }
    // Each carried file's content, from the nearest image that has it.
    let mut contents = Vec::with_capacity(head.files.len());
    for f in &head.files {
        let mut found = None;
        for a in &chain {
            let Some(i) = a.record.files.iter().position(|g| {
                !g.in_parent && g.sha256 == f.sha256 && g.size == f.size && g.holes == f.holes
            }) else {
                continue;
            };
            let first: u64 = a.record.files[..i]
                .iter()
                .filter(|g| !g.in_parent)
                .map(|g| g.size.div_ceil(CHUNK_SIZE as u64))
                .sum();
            let mut content = Vec::with_capacity(f.size as usize);
            for k in first..first + f.size.div_ceil(CHUNK_SIZE as u64) {
                content.extend_from_slice(&a.image.chunk(SectionKind::FILES, k as usize)?);
            }
            found = Some(content);
            break;
        }
        contents.push(found.ok_or_else(|| anyhow!("the chain holds no copy of a carried file"))?);
    }
    record.parent = None;
    record.parent_runs = Vec::new();
    record.page_runs = Vec::new();
    record.files = head
        .files
        .iter()
        .map(|f| CarriedFile {
            in_parent: false,
            ..f.clone()
        })
        .collect();
    let mut readers: Vec<PageReader> = chain.iter().map(|a| PageReader::new(&a.image)).collect();
    image::write_file(out, &info, |w| -> Result<()> {
        w.meta(SectionKind::TERM_MODEL, &term)?;
        let mut buf = Vec::with_capacity(CHUNK_SIZE);
        for &(pid, addr, len, k, off) in &pieces {
            match record.page_runs.last_mut() {
                Some(r) if r.pid == pid && r.addr + r.len == addr => r.len += len,
                _ => record.page_runs.push(PageRun { pid, addr, len }),
            }
            readers[k].read(off, len, &mut buf)?;
            if buf.len() >= CHUNK_SIZE {
                let whole = buf.len() / CHUNK_SIZE * CHUNK_SIZE;
                w.chunks(SectionKind::PAGES, &buf[..whole])?;
                buf.drain(..whole);
            }
        }
        if !buf.is_empty() {
            w.chunks(SectionKind::PAGES, &buf)?;
        }
        for c in &contents {
            w.chunks(SectionKind::FILES, c)?;
        }
        record
            .validate(
                &w.raw_lens(SectionKind::PAGES),
                &w.raw_lens(SectionKind::FILES),
            )
            .map_err(|e| anyhow!("the record made does not hold together: {e}"))?;
        w.meta(SectionKind::SESSION, &record)?;
        Ok(())
    })
    .with_context(|| format!("cannot write {}", out.display()))?;
    if images == 1 {
        println!(
            "{} stands alone already; written to {}",
            path.display(),
            out.display()
        );
    } else {
        println!(
            "compacted {} images into {}: {} processes, {:.1} MiB of memory",
            images,
            out.display(),
            record
                .processes
                .iter()
                .filter(|p| p.zombie.is_none())
                .count(),
            record.memory_bytes() as f64 / (1 << 20) as f64
        );
    }
    Ok(0)
}
