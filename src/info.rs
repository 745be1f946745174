//! `crterm info IMAGE`: what an image holds, for people (a table and the saved screen) or
//! for programs (`--json`).

use crate::image::{ImageError, SectionKind};
use crate::records::SessionRecord;
use crate::term_model::row_text;
use anyhow::{Result, anyhow};
use serde::Serialize;
use std::path::Path;

#[derive(Serialize)]
struct InfoJson {
    path: String,
    format: String,
    bytes: u64,
    /// Of `bytes`: the carried files (mapped programs and libraries, open files) as stored.
    file_bytes: u64,
    creator: String,
    kernel: String,
    machine: String,
    created_unix: u64,
    /// An incremental image: its parent as it names it, and the images of its chain
    /// (parent first).
    parent: Option<String>,
    chain: Vec<String>,
    /// Memory it takes from its chain (the rest of `memory_bytes` it holds itself).
    memory_from_chain_bytes: u64,
    session: Option<SessionJson>,
    screen: ScreenJson,
}

#[derive(Serialize)]
struct SessionJson {
    name: String,
    command: String,
    memory_bytes: u64,
    processes: Vec<ProcessJson>,
    files: Vec<FileJson>,
    files_not_carried: Vec<(String, String)>,
    sysv: SysvJson,
    /// Messages waiting in the session's sockets that carry descriptors (SCM_RIGHTS), and
    /// what the descriptions no process holds are (their targets).
    in_flight_messages: usize,
    in_flight_only: Vec<String>,
}

/// The session's SysV IPC objects.
#[derive(Serialize)]
struct SysvJson {
    /// (key, id, size) of each shared memory segment.
    shm: Vec<(i32, i32, u64)>,
    /// (key, id, semaphores) of each semaphore set.
    sem: Vec<(i32, i32, usize)>,
    /// (key, id, messages) of each message queue.
    msg: Vec<(i32, i32, usize)>,
}

#[derive(Serialize)]
struct FileJson {
    sha256: String,
    size: u64,
    paths: Vec<String>,
    /// Where a resume here takes it from: `here` (the same file is on this machine, as
    /// it was) or `image` (the copy the image carries).
    source: &'static str,
}

#[derive(Serialize)]
struct ProcessJson {
    pid: i32,
    ppid: i32,
    pgid: i32,
    sid: i32,
    comm: String,
    cmdline: Vec<String>,
    threads: usize,
    memory_bytes: u64,
    stopped: bool,
    zombie: Option<i32>,
    fds: usize,
}

#[derive(Serialize)]
struct ScreenJson {
    cols: usize,
    lines: usize,
    alternate: bool,
    title: String,
    text: Vec<String>,
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

pub fn show(path: &Path, json: bool) -> Result<i32> {
    let named = |e: ImageError| anyhow!("{}: {e}", path.display());
    // As resume reads it, every chunk decoded as resume would: info refuses what resume
    // refuses. (A large image file is mapped, not read into memory.)
    let loaded = crate::load::load(path, true).map_err(named)?;
    crate::load::decode_every_chunk(&loaded.image).map_err(named)?;
    for a in &loaded.ancestors {
        crate::load::decode_every_chunk(&a.image).map_err(named)?;
    }
    let bytes = std::fs::metadata(path).map_or(0, |m| m.len());
    print!("{}", render(path, &loaded, bytes, json)?);
    Ok(0)
}

/// What `info` prints of a loaded image (`bytes` long, at `path`).
pub fn render(path: &Path, loaded: &crate::load::Loaded, bytes: u64, json: bool) -> Result<String> {
    use std::fmt::Write;
    let (img, term) = (&loaded.image, &loaded.term);
    let session = Some(&loaded.record);
    let file_bytes: u64 = img
        .sections
        .iter()
        .filter(|s| s.kind == SectionKind::FILES)
        .map(|s| s.stored_len)
        .sum();
    let screen = ScreenJson {
        cols: term.cols,
        lines: term.lines,
        alternate: term.alt_active,
        title: term.title.clone(),
        text: (0..term.lines)
            .map(|l| row_text(term.grid().row(l)))
            .collect(),
    };
    let session_json = session.as_ref().map(|s| SessionJson {
        name: s.name.clone(),
        command: s.command.clone(),
        memory_bytes: s.memory_bytes(),
        processes: s
            .processes
            .iter()
            .map(|p| ProcessJson {
                pid: p.pid,
                ppid: p.ppid,
                pgid: p.pgid,
                sid: p.sid,
                comm: p.comm.clone(),
                cmdline: p.cmdline.clone(),
                threads: p.threads.len(),
                memory_bytes: s
                    .page_runs
                    .iter()
                    .filter(|r| r.pid == p.pid)
                    .map(|r| r.len)
                    .sum(),
                stopped: p.stopped(),
                zombie: p.zombie,
                fds: p.fds.len(),
            })
            .collect(),
        files: s
            .files
            .iter()
            .map(|f| FileJson {
                sha256: f.sha256.clone(),
                size: f.size,
                paths: f.copies.iter().map(|c| c.path.clone()).collect(),
                source: if file_is_here(s, f) { "here" } else { "image" },
            })
            .collect(),
        files_not_carried: s.files_not_carried.clone(),
        in_flight_messages: {
            let mut seen = std::collections::HashSet::new();
            s.all_fds()
                .filter_map(|(_, f)| f.socket())
                .filter(|k| seen.insert(k.inode))
                .map(|k| k.in_flight.len())
                .sum()
        },
        in_flight_only: s
            .in_flight
            .iter()
            .filter(|f| {
                !s.processes
                    .iter()
                    .flat_map(|p| &p.fds)
                    .any(|g| g.desc == f.desc)
            })
            .map(|f| f.target.clone())
            .collect(),
        sysv: SysvJson {
            shm: s
                .sysv
                .shm
                .iter()
                .map(|o| (o.perm.key, o.perm.id, o.size))
                .collect(),
            sem: s
                .sysv
                .sem
                .iter()
                .map(|o| (o.perm.key, o.perm.id, o.values.len()))
                .collect(),
            msg: s
                .sysv
                .msg
                .iter()
                .map(|o| (o.perm.key, o.perm.id, o.messages.len()))
                .collect(),
        },
    });
    let info = InfoJson {
        path: path.display().to_string(),
        format: format!("{}.{}", img.format.0, img.format.1),
        bytes,
        file_bytes,
        creator: img.info.creator.clone(),
        kernel: img.info.kernel.clone(),
        machine: img.info.machine.clone(),
        created_unix: img.info.created_unix,
        parent: loaded.record.parent.as_ref().map(|l| l.path.clone()),
        chain: loaded
            .ancestors
            .iter()
            .map(|a| a.path.display().to_string())
            .collect(),
        memory_from_chain_bytes: loaded.record.parent_runs.iter().map(|r| r.len).sum(),
        session: session_json,
        screen,
    };
    if json {
        return Ok(serde_json::to_string_pretty(&info)? + "\n");
    }
    let mut out = String::new();
    writeln!(
        out,
        "image      {} (format {}, {}; carried files {})",
        info.path,
        info.format,
        mib(bytes),
        mib(file_bytes)
    )?;
    writeln!(
        out,
        "made by    {} on Linux {} ({})",
        info.creator, info.kernel, info.machine
    )?;
    if let Some(parent) = &info.parent {
        writeln!(
            out,
            "chain      incremental, made after {parent}: {} images before it; {} of its memory from them",
            info.chain.len(),
            mib(info.memory_from_chain_bytes)
        )?;
    }
    if let Some(s) = &info.session {
        writeln!(out, "session    {}: {}", s.name, s.command)?;
        writeln!(
            out,
            "processes  {}, memory {}",
            s.processes.len(),
            mib(s.memory_bytes)
        )?;
        writeln!(
            out,
            "files      {} mapped files carried ({}){}",
            s.files.len(),
            mib(s.files.iter().map(|f| f.size).sum()),
            if s.files_not_carried.is_empty() {
                String::new()
            } else {
                format!(", {} not carried", s.files_not_carried.len())
            }
        )?;
        let v = &s.sysv;
        if !v.shm.is_empty() || !v.sem.is_empty() || !v.msg.is_empty() {
            writeln!(
                out,
                "sysv ipc   {} shared memory segments ({}), {} semaphore sets, {} message queues ({} messages)",
                v.shm.len(),
                mib(v.shm.iter().map(|o| o.2).sum()),
                v.sem.len(),
                v.msg.len(),
                v.msg.iter().map(|o| o.2).sum::<usize>()
            )?;
        }
        if s.in_flight_messages > 0 {
            writeln!(
                out,
                "in flight  {} messages carrying descriptors, {} of them held by no process{}",
                s.in_flight_messages,
                s.in_flight_only.len(),
                if s.in_flight_only.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", s.in_flight_only.join(", "))
                }
            )?;
        }
        let here = s.files.iter().filter(|f| f.source == "here").count();
        writeln!(
            out,
            "           a resume here maps {here} of them from this machine (unchanged), {} from the image",
            s.files.len() - here
        )?;
        for f in &s.files {
            writeln!(
                out,
                "  {:<5} {:>10}  {}",
                f.source,
                mib(f.size),
                f.paths.first().map_or("", String::as_str)
            )?;
        }
        writeln!(
            out,
            "  {:>5} {:>5} {:>5} {:>5} {:>4} {:>10}  {:<8} COMMAND",
            "PID", "PPID", "PGID", "SID", "THR", "MEMORY", "STATE"
        )?;
        for p in &s.processes {
            writeln!(
                out,
                "  {:>5} {:>5} {:>5} {:>5} {:>4} {:>10}  {:<8} {}",
                p.pid,
                p.ppid,
                p.pgid,
                p.sid,
                p.threads,
                mib(p.memory_bytes),
                if p.zombie.is_some() {
                    "zombie"
                } else if p.stopped {
                    "stopped"
                } else {
                    "running"
                },
                p.cmdline.join(" ")
            )?;
        }
    }
    let s = &info.screen;
    writeln!(
        out,
        "screen     {}x{}{}",
        s.cols,
        s.lines,
        if s.alternate {
            " (alternate screen)"
        } else {
            ""
        }
    )?;
    let width = s.cols.min(200);
    writeln!(out, "+{}+", "-".repeat(width))?;
    for line in &s.text {
        let shown: String = line.chars().take(width).collect();
        let pad = width.saturating_sub(unicode_width::UnicodeWidthStr::width(shown.as_str()));
        writeln!(out, "|{shown}{}|", " ".repeat(pad))?;
    }
    writeln!(out, "+{}+", "-".repeat(width))?;
    Ok(out)
}

/// Whether a resume here would use this machine's copy of carried file `f`: it is mapped
/// and the mapped file is here as it was (files deleted while open come from the image).
fn file_is_here(s: &SessionRecord, f: &crate::records::CarriedFile) -> bool {
    s.processes
        .iter()
        .flat_map(|p| &p.maps)
        .find(|m| {
            f.copies
                .iter()
                .any(|c| c.dev == m.dev && c.inode == m.inode)
        })
        .is_some_and(|m| crate::restore::mapped_file_here(s, m))
}
