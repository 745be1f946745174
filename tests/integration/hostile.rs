//! Hostile and damaged images, with valid checksums (re-sealed after the change): each is
//! refused by `info`, `check` and `resume` alike, with one line, at once and in bounded
//! memory, before anything uses what it says. Then a fuzz of the decoded records (the
//! session record and the terminal model mutated as values and as bytes, re-encoded and
//! re-sealed): no panic, no hang, bounded memory, one-line errors.
//!
//! The fuzz runs `CRTERM_FUZZ_SECS` seconds (default 8) from seed `CRTERM_FUZZ_SEED`
//! (default: from the clock; a failure prints its seed). A longer run:
//! `CRTERM_FUZZ_SECS=3600 cargo test --release --test integration hostile::fuzz`.

use crate::common::{Env, TempDir};
use crterm::image::{self, Codec, ImageInfo, ImageWriter, SectionKind};
use crterm::records::SessionRecord;
use crterm::term_model::Term;
use std::path::Path;
use std::time::{Duration, Instant};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/session-v1.img");

/// The golden session image's parts: header, model, record, chunks (kind, decoded).
struct Parts {
    info: ImageInfo,
    term: Term,
    record: SessionRecord,
    chunks: Vec<(SectionKind, Vec<u8>)>,
}

fn golden() -> Parts {
    let img = image::read_file(Path::new(GOLDEN)).unwrap();
    let mut chunks = Vec::new();
    for kind in [SectionKind::PAGES, SectionKind::FILES] {
        for i in 0..img.stored_chunks(kind).count() {
            chunks.push((kind, img.chunk(kind, i).unwrap()));
        }
    }
    Parts {
        info: img.info.clone(),
        term: img.meta(SectionKind::TERM_MODEL).unwrap(),
        record: img.meta(SectionKind::SESSION).unwrap(),
        chunks,
    }
}

/// One section as it goes into an image: kind, codec, stored bytes, declared length.
type Raw = (SectionKind, Codec, Vec<u8>, u64);

fn meta_section(kind: SectionKind, raw: &[u8]) -> Raw {
    (
        kind,
        Codec::Zstd,
        zstd::bulk::compress(raw, 1).unwrap(),
        raw.len() as u64,
    )
}

fn chunk_section(kind: SectionKind, data: &[u8]) -> Raw {
    (kind, Codec::Raw, data.to_vec(), data.len() as u64)
}

/// An image of these sections, every checksum valid.
fn seal(info: &ImageInfo, sections: &[Raw]) -> Vec<u8> {
    let mut w = ImageWriter::new(Vec::new(), info).unwrap();
    for (kind, codec, stored, raw_len) in sections {
        w.raw_section(*kind, *codec, stored, *raw_len).unwrap();
    }
    w.finish().unwrap()
}

/// The golden image with its model and record as given (postcard bytes).
fn with_meta(p: &Parts, term: &[u8], record: &[u8]) -> Vec<u8> {
    let mut s = vec![meta_section(SectionKind::TERM_MODEL, term)];
    s.extend(p.chunks.iter().map(|(k, d)| chunk_section(*k, d)));
    s.push(meta_section(SectionKind::SESSION, record));
    seal(&p.info, &s)
}

fn postcard<T: serde::Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).unwrap()
}

/// `crterm ARGS` (stdin from `stdin`): its one-line error, and its peak memory (KiB).
#[allow(clippy::zombie_processes)] // reaped by wait4, which gives its resource usage
fn refused(env: &Env, args: &[&str], stdin: Option<&Path>) -> (String, i64) {
    let mut cmd = env.crterm_direct(args);
    cmd.stdin(match stdin {
        Some(p) => std::process::Stdio::from(std::fs::File::open(p).unwrap()),
        None => std::process::Stdio::null(),
    })
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    let start = Instant::now();
    let child = cmd.spawn().unwrap();
    let pid = child.id() as i32;
    let mut err = String::new();
    use std::io::Read;
    child.stderr.unwrap().read_to_string(&mut err).unwrap();
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::wait4(pid, &mut status, 0, &mut usage) }, pid);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "crterm {args:?} took long"
    );
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 1,
        "crterm {args:?}: status {status:#x}, {err}"
    );
    assert_eq!(err.lines().count(), 1, "crterm {args:?}: {err}");
    (err, usage.ru_maxrss)
}

/// `info`, `check` and `resume -` each refuse the image with one line containing `want`,
/// within `max_kib` of memory.
fn all_refuse(env: &Env, image: &Path, want: &str, max_kib: i64) {
    let path = image.to_str().unwrap();
    for (args, stdin) in [
        (vec!["info", path], None),
        (vec!["info", "--json", path], None),
        (vec!["check", path], None),
        (vec!["resume", "-"], Some(image)),
    ] {
        let (err, kib) = refused(env, &args, stdin);
        assert!(err.contains(want), "crterm {args:?}: {err}");
        assert!(kib < max_kib, "crterm {args:?} took {kib} KiB");
    }
}

fn write(dir: &TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    p
}

/// A terminal model section that decompresses to a gigabyte (tens of kilobytes of zstd):
/// refused from its declared size, before anything is allocated.
#[test]
fn a_model_that_decompresses_to_a_gigabyte_is_refused_unallocated() {
    let env = Env::unprivileged();
    let dir = TempDir::new("crterm-hostile");
    let p = golden();
    let gib = 1u64 << 30;
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
    enc.set_pledged_src_size(Some(gib)).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        std::io::Write::write_all(&mut enc, &zeros).unwrap();
    }
    let bomb = enc.finish().unwrap();
    let mut s = vec![(SectionKind::TERM_MODEL, Codec::Zstd, bomb, gib)];
    s.extend(p.chunks.iter().map(|(k, d)| chunk_section(*k, d)));
    s.push(meta_section(SectionKind::SESSION, &postcard(&p.record)));
    let image = write(&dir, "bomb.img", &seal(&p.info, &s));
    assert!(std::fs::metadata(&image).unwrap().len() < 1 << 20);
    all_refuse(&env, &image, "claims 1073741824 bytes", 150 << 10);
}

/// A valid model with zeros after it (within what the section may hold): the bytes left
/// over are refused.
#[test]
fn bytes_after_a_record_are_refused() {
    let env = Env::unprivileged();
    let dir = TempDir::new("crterm-hostile");
    let p = golden();
    let mut term = postcard(&p.term);
    term.resize(term.len() + (8 << 20), 0);
    let image = write(
        &dir,
        "tail.img",
        &with_meta(&p, &term, &postcard(&p.record)),
    );
    all_refuse(&env, &image, "bytes left over", 150 << 10);
}

/// A model claiming 50 lines over a screen of 30 rows (valid checksums): refused, no
/// panic.
#[test]
fn a_model_with_more_lines_than_rows_is_refused() {
    let env = Env::unprivileged();
    let dir = TempDir::new("crterm-hostile");
    let p = golden();
    let mut term = p.term.clone();
    term.lines = 50;
    let image = write(
        &dir,
        "rows.img",
        &with_meta(&p, &postcard(&term), &postcard(&p.record)),
    );
    all_refuse(
        &env,
        &image,
        "the primary screen has 30 rows for 50 lines",
        150 << 10,
    );
}

/// A section whose header claims another decoded length than its frame holds.
#[test]
fn a_wrong_decoded_length_is_refused() {
    let env = Env::unprivileged();
    let dir = TempDir::new("crterm-hostile");
    let p = golden();
    let mut s = vec![meta_section(SectionKind::TERM_MODEL, &postcard(&p.term))];
    s.extend(p.chunks.iter().map(|(k, d)| chunk_section(*k, d)));
    let mut session = meta_section(SectionKind::SESSION, &postcard(&p.record));
    session.3 += 1;
    s.push(session);
    let image = write(&dir, "len.img", &seal(&p.info, &s));
    all_refuse(&env, &image, "does not hold the declared", 150 << 10);
}

/// A session section of zeros, and an image with no session section at all.
#[test]
fn a_session_of_zeros_or_none_is_refused() {
    let env = Env::unprivileged();
    let dir = TempDir::new("crterm-hostile");
    let p = golden();
    let image = write(
        &dir,
        "zeros.img",
        &with_meta(&p, &postcard(&p.term), &[0u8; 4096]),
    );
    for args in [vec!["info"], vec!["check"]] {
        let (err, _) = refused(
            &env,
            &[&args[..], &[image.to_str().unwrap()]].concat(),
            None,
        );
        assert!(err.contains("section 'session'"), "{err}");
    }
    let mut s = vec![meta_section(SectionKind::TERM_MODEL, &postcard(&p.term))];
    s.extend(p.chunks.iter().map(|(k, d)| chunk_section(*k, d)));
    let image = write(&dir, "none.img", &seal(&p.info, &s));
    all_refuse(&env, &image, "the image has no session section", 150 << 10);
}

/// A page chunk whose data does not decode (its checksum re-sealed): `check` and `info`
/// decode every chunk, as resume does on its way, and refuse it.
#[test]
fn a_page_chunk_that_does_not_decode_is_refused_by_check_and_info() {
    let env = Env::unprivileged();
    let dir = TempDir::new("crterm-hostile");
    let p = golden();
    let mut s = vec![meta_section(SectionKind::TERM_MODEL, &postcard(&p.term))];
    for (k, d) in &p.chunks {
        if *k == SectionKind::PAGES {
            // The frame cut short: it cannot decode to what it declares.
            let mut z = zstd::bulk::compress(d, 1).unwrap();
            z.truncate(z.len() - 3);
            s.push((*k, Codec::Zstd, z, d.len() as u64));
        } else {
            s.push(chunk_section(*k, d));
        }
    }
    s.push(meta_section(SectionKind::SESSION, &postcard(&p.record)));
    let image = write(&dir, "chunk.img", &seal(&p.info, &s));
    for args in [vec!["info"], vec!["check"]] {
        let (err, _) = refused(
            &env,
            &[&args[..], &[image.to_str().unwrap()]].concat(),
            None,
        );
        assert!(err.contains("section 'memory pages' chunk 0"), "{err}");
    }
}

/// Page chunks that hold the right bytes, but one of them not whole pages (a checkpoint
/// writes only whole pages into each, and a resume writes some mappings whole pages at a
/// time): refused by `info`, `check` and `resume` alike.
#[test]
fn a_page_chunk_of_part_of_a_page_is_refused() {
    let env = Env::unprivileged();
    let dir = TempDir::new("crterm-hostile");
    let p = golden();
    let mut s = vec![meta_section(SectionKind::TERM_MODEL, &postcard(&p.term))];
    for (k, d) in &p.chunks {
        if *k == SectionKind::PAGES && s.iter().all(|c| c.0 != SectionKind::PAGES) {
            s.push(chunk_section(*k, &d[..100]));
            s.push(chunk_section(*k, &d[100..]));
        } else {
            s.push(chunk_section(*k, d));
        }
    }
    s.push(meta_section(SectionKind::SESSION, &postcard(&p.record)));
    let image = write(&dir, "part.img", &seal(&p.info, &s));
    all_refuse(
        &env,
        &image,
        "page chunk 0 does not hold whole pages",
        150 << 10,
    );
}

/// Page runs that do not add up to the page chunks, or point outside their process's
/// memory; a carried file longer than its chunks; a thread of another process's pid.
#[test]
fn records_that_do_not_match_their_chunks_or_themselves_are_refused() {
    let env = Env::unprivileged();
    let dir = TempDir::new("crterm-hostile");
    let p = golden();
    type Change = Box<dyn Fn(&mut SessionRecord)>;
    let cases: Vec<(&str, Change)> = vec![
        (
            "its page runs hold",
            Box::new(|r| {
                r.page_runs.push(crterm::records::PageRun {
                    pid: crterm::records::PageRun::UNUSED,
                    addr: 0,
                    len: 4096,
                })
            }),
        ),
        (
            "pages of process 2 given twice",
            Box::new(|r| r.page_runs.push(r.page_runs[0].clone())),
        ),
        (
            "a run of unused page data",
            Box::new(|r| {
                r.page_runs.push(crterm::records::PageRun {
                    pid: crterm::records::PageRun::UNUSED,
                    addr: 0,
                    len: 100,
                })
            }),
        ),
        ("pages at", Box::new(|r| r.page_runs[0].addr = 0x1000)),
        (
            "pages at",
            Box::new(|r| r.page_runs[0].addr = u64::MAX - 4095),
        ),
        ("carried file 0", Box::new(|r| r.files[0].size += 1)),
        ("process id", Box::new(|r| r.processes[0].pid = 0)),
        (
            "the mlockall flags or OOM score",
            Box::new(|r| r.processes[0].lock_future = 1),
        ),
        (
            "the seccomp filters of",
            Box::new(|r| {
                r.processes[0].seccomp = vec![crterm::records::SeccompFilter {
                    flags: 0,
                    code: vec![0; 12],
                }]
            }),
        ),
        (
            "the scheduling of thread",
            Box::new(|r| r.processes[0].threads[0].sched.nice = -21),
        ),
        (
            "thread",
            Box::new(|r| {
                let mut t = r.processes[0].threads[0].clone();
                t.tid = 7;
                r.processes[0].threads.push(t.clone());
                r.processes[0].threads.push(t);
            }),
        ),
        (
            "mapping",
            Box::new(|r| {
                let m = &mut r.processes[0].maps[0];
                std::mem::swap(&mut m.start, &mut m.end);
            }),
        ),
        ("mapping", Box::new(|r| r.processes[0].maps[0].vm = 1 << 30)),
        (
            "shared memory segment 0",
            Box::new(|r| {
                r.sysv.shm.push(crterm::records::ShmSegment {
                    perm: crterm::records::IpcPerm {
                        key: 0,
                        id: 0,
                        uid: 0,
                        gid: 0,
                        cuid: 0,
                        cgid: 0,
                        mode: 0o600,
                    },
                    size: 4096,
                    content: vec![1; 8192],
                })
            }),
        ),
        (
            "descriptors in flight to",
            Box::new(|r| {
                for f in r.processes.iter_mut().flat_map(|p| &mut p.fds) {
                    if let crterm::records::FdObject::Socket(s) = &mut f.object {
                        s.in_flight.push(crterm::records::InFlight {
                            piece: 0,
                            offset: 1 << 40,
                            len: 1,
                            descs: vec![0],
                        });
                        return;
                    }
                }
                panic!("the richer record has a socket");
            }),
        ),
        (
            "descriptor 1 in flight",
            Box::new(|r| {
                let mut f = r.in_flight[0].clone();
                (f.fd, f.desc, f.target) = (1, 999, "/dev/tty".into());
                f.object = crterm::records::FdObject::ControllingTty;
                r.in_flight.push(f);
            }),
        ),
        (
            "IPC limits",
            Box::new(|r| r.sysv.limits.push(("core_pattern".into(), "|x".into()))),
        ),
        (
            "mapping",
            Box::new(|r| {
                let m = &mut r.processes[0].maps[0];
                m.file_end = Some(m.offset + (m.end - m.start));
            }),
        ),
        (
            "the name of its parent image",
            Box::new(|r| {
                r.parent = Some(crterm::records::ParentLink {
                    path: "p.img".into(),
                    id: "not hex".into(),
                })
            }),
        ),
        (
            "a parent image it does not name",
            Box::new(|r| r.parent_runs.push(r.page_runs[0].clone())),
        ),
        (
            "the parent's pages at 0x1000",
            Box::new(|r| {
                r.parent = Some(link("p.img"));
                let mut run = r.page_runs[0].clone();
                run.addr = 0x1000;
                r.parent_runs.push(run);
            }),
        ),
        (
            // The same pages its own and its parent's.
            "the parent's pages at",
            Box::new(|r| {
                r.parent = Some(link("p.img"));
                r.parent_runs.push(r.page_runs[0].clone());
            }),
        ),
        (
            "descriptor",
            Box::new(|r| {
                if let Some(f) = r.processes[0].fds.first_mut() {
                    f.fd = -3;
                } else {
                    r.processes[0].pid = -3;
                }
            }),
        ),
        (
            // A UDP datagram the resume would send to another machine.
            "the datagrams queued for",
            Box::new(|r| {
                let inet = |ip: [u8; 4], port: u16| {
                    let mut a = (libc::AF_INET as u16).to_ne_bytes().to_vec();
                    a.extend_from_slice(&port.to_be_bytes());
                    a.extend_from_slice(&ip);
                    a.extend_from_slice(&[0; 8]);
                    a
                };
                let udp = r
                    .processes
                    .iter_mut()
                    .flat_map(|p| &mut p.fds)
                    .find_map(|f| match &mut f.object {
                        crterm::records::FdObject::Socket(s) => Some(s),
                        _ => None,
                    })
                    .expect("the richer record has a socket");
                udp.domain = libc::AF_INET;
                udp.kind = libc::SOCK_DGRAM;
                udp.addr = inet([127, 0, 0, 1], 5000);
                udp.queued = vec![b"x".to_vec()];
                udp.in_flight.clear();
                udp.datagrams_from = vec![crterm::records::DatagramFrom {
                    sender: udp.inode,
                    from: inet([127, 0, 0, 1], 6000),
                    to: inet([192, 0, 2, 1], 5000),
                }];
            }),
        ),
    ];
    for (i, (want, change)) in cases.iter().enumerate() {
        // (The golden session has no socket: those cases change the richer record.)
        let mut record = if want.contains("in flight") || want.contains("datagrams") {
            rich(&p)
        } else {
            p.record.clone()
        };
        change(&mut record);
        let image = write(
            &dir,
            &format!("r{i}.img"),
            &with_meta(&p, &postcard(&p.term), &postcard(&record)),
        );
        for args in [vec!["info"], vec!["check"]] {
            let (err, _) = refused(
                &env,
                &[&args[..], &[image.to_str().unwrap()]].concat(),
                None,
            );
            assert!(
                err.contains("the session record") && err.contains(want),
                "case {i}: {err}"
            );
        }
    }
}

fn link(path: &str) -> crterm::records::ParentLink {
    crterm::records::ParentLink {
        path: path.into(),
        id: "0".repeat(64),
    }
}

/// An incremental image whose parent is missing, is another image than the one it names,
/// or is not an image at all: `info`, `check` and a resume each refuse it in one line
/// naming the parent, before anything is made.
#[test]
fn an_incremental_image_without_its_parent_is_refused_in_one_line() {
    let env = Env::unprivileged();
    let dir = TempDir::new("crterm-hostile");
    let p = golden();
    let parent = write(
        &dir,
        "parent.img",
        &with_meta(&p, &postcard(&p.term), &postcard(&p.record)),
    );
    let real_id = image::read_file(&parent).unwrap().id;
    write(&dir, "junk.img", b"not an image at all");
    let mut child = p.record.clone();
    // The first page of its first run is its parent's.
    let first = &mut child.page_runs[0];
    let page = crterm::records::PageRun {
        pid: first.pid,
        addr: first.addr,
        len: 4096,
    };
    if first.len == 4096 {
        child.page_runs.remove(0);
    } else {
        first.addr += 4096;
        first.len -= 4096;
    }
    child.parent_runs.push(page);
    let drop = 4096;
    let mut chunks = p.chunks.clone();
    let pages = &mut chunks
        .iter_mut()
        .find(|(k, _)| *k == SectionKind::PAGES)
        .unwrap()
        .1;
    assert!(
        drop < pages.len(),
        "the golden image's first chunk holds more than its first run"
    );
    pages.drain(..drop);
    let child_parts = Parts {
        info: p.info.clone(),
        term: p.term.clone(),
        record: p.record.clone(),
        chunks,
    };
    for (name, path, id, want) in [
        ("missing", "gone.img", real_id.clone(), "is missing"),
        (
            "other",
            "parent.img",
            "0".repeat(64),
            "is not the image it was made after",
        ),
        ("junk", "junk.img", real_id.clone(), "cannot be read"),
        ("absolute", parent.to_str().unwrap(), real_id.clone(), ""),
    ] {
        let mut r = child.clone();
        r.parent = Some(crterm::records::ParentLink {
            path: path.into(),
            id,
        });
        let image = write(
            &dir,
            &format!("child-{name}.img"),
            &with_meta(&child_parts, &postcard(&p.term), &postcard(&r)),
        );
        if want.is_empty() {
            // Whole: it reads as its parent does.
            let out = env.crterm(&["check", image.to_str().unwrap()]);
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(text.contains("verdict"), "{name}: {text}");
            assert!(!text.contains("parent image"), "{name}: {text}");
            continue;
        }
        for args in [vec!["info"], vec!["check"]] {
            let (err, _) = refused(
                &env,
                &[&args[..], &[image.to_str().unwrap()]].concat(),
                None,
            );
            assert!(
                err.contains("its parent image") && err.contains(want),
                "{name}: {err}"
            );
        }
        // From standard input a parent cannot be found: refused too.
        let (err, _) = refused(&env, &["resume", "-"], Some(&image));
        assert!(err.contains("its parent image"), "{name}: {err}");
    }
}

/// Memory a resume cannot make again (hugetlb pages, a shadow stack, userfaultfd ranges,
/// a driver's pages) is refused by `check` (and so at checkpoint and resume), naming the
/// process and the mapping.
#[test]
fn memory_of_a_kind_not_carried_is_refused_by_name() {
    use crterm::records::{MapKind, vm};
    let env = Env::unprivileged();
    let dir = TempDir::new("crterm-hostile");
    let p = golden();
    for (i, (bit, want)) in [
        (vm::HUGETLB, "hugetlb memory (MAP_HUGETLB)"),
        (vm::SHADOW_STACK, "a shadow stack"),
        (vm::USERFAULT, "memory registered with userfaultfd"),
        (vm::DEVICE, "device memory"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut record = p.record.clone();
        let proc0 = &mut record.processes[0];
        let (pid, comm) = (proc0.pid, proc0.comm.clone());
        let m = proc0
            .maps
            .iter_mut()
            .find(|m| m.kind() == MapKind::Anon)
            .unwrap();
        m.vm |= bit;
        let at = format!("{:#x}-{:#x}", m.start, m.end);
        let image = write(
            &dir,
            &format!("m{i}.img"),
            &with_meta(&p, &postcard(&p.term), &postcard(&record)),
        );
        let out = env
            .crterm_direct(&["check", image.to_str().unwrap()])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{report}");
        assert!(
            report.contains(&format!("process {pid} ({comm}) maps {want}")) && report.contains(&at),
            "{report}"
        );
    }
}

// ---- fuzz ---------------------------------------------------------------------------

/// The golden session made richer, for the fuzz to mutate: a child with a second thread, a
/// zombie, and descriptors of each kind with what their records hold (a pipe's queue, a
/// pty master's settings and output, a socket with its queue and peer, inotify watches,
/// timers). Valid: an image of it loads.
fn rich(p: &Parts) -> SessionRecord {
    use crterm::records::PosixTimer;
    use crterm::records::*;
    let mut r = p.record.clone();
    let base = r.processes[0].clone();
    let fd = |fd: i32, desc: u32, target: &str, object: FdObject| FdRecord {
        fd,
        desc,
        target: target.into(),
        flags: 0o2,
        pos: 0,
        owner: (1, 3),
        signal: 40,
        locks: Vec::new(),
        object,
    };
    let mut child = base.clone();
    child.pid = 3;
    child.ppid = 2;
    child.pgid = 3;
    child.threads[0].tid = 3;
    let mut second = child.threads[0].clone();
    second.tid = 5;
    child.threads.push(second);
    // A page it shares with its parent (process 2, whose mappings it has).
    if let Some(m) = child.maps.iter().find(|m| inherits(m)) {
        child.inherited = vec![(m.start, 4096)];
    }
    child.lock_future = 2;
    child.seccomp = vec![SeccompFilter {
        flags: 0,
        code: vec![6, 0, 0, 0, 0, 0, 0xff, 0x7f],
    }];
    child.threads[0].sched = SchedRecord {
        policy: 3,
        reset_on_fork: true,
        nice: 5,
        priority: 0,
        affinity: Some(vec![1]),
        ioprio: 3 << 13,
        timer_slack: 123_456,
    };
    child.timers = vec![PosixTimer {
        id: 0,
        clock: 1,
        signo: 14,
        notify: libc::SIGEV_SIGNAL | libc::SIGEV_THREAD_ID,
        tid: 5,
        value: 0,
        spec: [0, 0, 1, 0],
    }];
    let pipe = fd(
        10,
        10,
        "pipe:[4242]",
        FdObject::Pipe(PipeRecord {
            queued: b"queued in a pipe".to_vec(),
            size: 65536,
        }),
    );
    let tty = TtyRecord {
        termios: vec![0; 60],
        cols: 80,
        rows: 24,
        typed: b"ls\n".to_vec(),
        output: b"output".to_vec(),
        packet: false,
        locked: false,
        mode: 0o620,
        owner: (1000, 5),
    };
    let master = fd(11, 11, "/dev/ptmx", FdObject::PtyMaster { index: 1, tty });
    let sock = fd(
        12,
        12,
        "socket:[5151]",
        FdObject::Socket(SocketRecord {
            domain: libc::AF_UNIX,
            kind: libc::SOCK_STREAM,
            listening: false,
            pending: false,
            passcred: false,
            name: Vec::new(),
            mode: 0,
            inode: 5151,
            peer: 5152,
            peer_inside: false,
            shutdown: 0,
            pending_on: 0,
            pending_rank: 0,
            sent: Vec::new(),
            queued: vec![b"in a socket".to_vec()],
            addr: Vec::new(),
            peer_addr: Vec::new(),
            options: Vec::new(),
            connected: true,
            unlinked: false,
            bound_in: String::new(),
            peer_name: Vec::new(),
            // "a " carries a pipe's end that only the message holds.
            in_flight: vec![InFlight {
                piece: 0,
                offset: 3,
                len: 2,
                descs: vec![40],
            }],
            datagrams_from: Vec::new(),
        }),
    );
    let watch = fd(
        13,
        13,
        "anon_inode:inotify",
        FdObject::Inotify {
            watches: vec![InotifyWatch {
                wd: 1,
                mask: 2,
                ino: 42,
                dev: (8, 1),
                path: "/tmp".into(),
                handle: None,
            }],
        },
    );
    let timer = fd(
        14,
        14,
        "anon_inode:[timerfd]",
        FdObject::TimerFd(TimerFdRecord {
            clock: 1,
            value_ns: 5_000_000_000,
            interval_ns: 1_000_000,
        }),
    );
    let poll = fd(
        15,
        15,
        "anon_inode:[eventpoll]",
        FdObject::Epoll {
            registrations: vec![
                EpollRegistration {
                    fd: 14,
                    events: 1,
                    data: 7,
                    desc: None,
                },
                EpollRegistration {
                    fd: 16,
                    events: 1,
                    data: 8,
                    desc: Some(10),
                },
            ],
        },
    );
    let mut locked = fd(
        16,
        16,
        "/tmp",
        FdObject::Directory(FileIdentity {
            dev: 2049,
            ino: 2,
            size: 4096,
            mtime_ns: 1,
            mode: 0o1777,
            nlink: 2,
            sha256: None,
        }),
    );
    locked.locks = vec![LockRecord {
        kind: LockKind::Flock,
        write: true,
        start: 0,
        len: 0,
        file: "08:01:2".into(),
    }];
    let counter = fd(
        17,
        17,
        "anon_inode:[eventfd]",
        FdObject::EventFd {
            count: 42,
            semaphore: true,
        },
    );
    let mut link = fd(
        18,
        18,
        "/tmp/a-link",
        FdObject::Symlink {
            text: "elsewhere".into(),
            identity: FileIdentity {
                dev: 2049,
                ino: 3,
                size: 9,
                mtime_ns: 1,
                mode: 0o777,
                nlink: 1,
                sha256: None,
            },
        },
    );
    link.flags = (libc::O_PATH | libc::O_NOFOLLOW) as u32;
    link.owner = (0, 0);
    link.signal = 0;
    let memfd = fd(
        19,
        19,
        "/memfd:buffer (deleted)",
        FdObject::Memfd {
            name: "buffer".into(),
            seals: 3,
            identity: FileIdentity {
                dev: 1,
                ino: 77,
                size: 0,
                mtime_ns: 1,
                mode: 0o600,
                nlink: 0,
                sha256: None,
            },
        },
    );
    child.fds.extend([
        pipe, master, sock, watch, timer, poll, locked, counter, link, memfd,
    ]);

    let mut zombie = base.clone();
    zombie.pid = 4;
    zombie.ppid = 2;
    zombie.zombie = Some(3 << 8);
    zombie.threads.clear();
    zombie.maps.clear();
    zombie.fds.clear();
    r.processes.insert(0, zombie);
    r.processes.push(child);
    let perm = |key: i32, id: i32| IpcPerm {
        key,
        id,
        uid: 1000,
        gid: 1000,
        cuid: 1000,
        cgid: 1000,
        mode: 0o640,
    };
    r.sysv = SysvObjects {
        shm: vec![ShmSegment {
            perm: perm(0, 0),
            size: 12388,
            content: vec![7; 8192],
        }],
        sem: vec![SemSet {
            perm: perm(0x5eed, 32768),
            values: vec![3, 0, 7],
        }],
        msg: vec![MsgQueue {
            perm: perm(0x5eee, 0),
            max_bytes: 4000,
            messages: vec![(1, b"first".to_vec()), (2, b"second".to_vec())],
        }],
        limits: vec![("msgmax".into(), "8192".into())],
    };
    let mut flying = fd(
        0,
        40,
        "pipe:[4040]",
        FdObject::Pipe(PipeRecord {
            queued: b"flying".to_vec(),
            size: 65536,
        }),
    );
    (flying.owner, flying.signal) = ((0, 0), 0);
    r.in_flight = vec![flying];
    r
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Numbers worth trying where a number was.
fn interesting(rng: &mut Rng, was: &serde_json::Number) -> serde_json::Value {
    let v = was.as_i64().unwrap_or(0);
    let choices = [
        0,
        1,
        -1,
        v.wrapping_add(1),
        v.wrapping_sub(1),
        v.wrapping_mul(2),
        i32::MAX as i64,
        i32::MIN as i64,
        u32::MAX as i64,
        i64::MAX,
        i64::MIN,
        4096,
        1 << 22,
        1 << 30,
        (rng.next() >> 1) as i64,
    ];
    let pick = choices[rng.below(choices.len())];
    if rng.below(8) == 0 {
        return serde_json::Value::from(u64::MAX - rng.below(4096) as u64);
    }
    serde_json::Value::from(pick)
}

/// Change one leaf (or one array) of a value, somewhere.
fn mutate_value(rng: &mut Rng, v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(m) if !m.is_empty() => {
            let k = rng.below(m.len());
            let key = m.keys().nth(k).unwrap().clone();
            mutate_value(rng, m.get_mut(&key).unwrap());
        }
        Value::Array(a) if !a.is_empty() => match rng.below(6) {
            0 => {
                let i = rng.below(a.len());
                let e = a[i].clone();
                a.insert(i, e);
            }
            1 => {
                a.remove(rng.below(a.len()));
            }
            2 => a.reverse(),
            _ => {
                let i = rng.below(a.len());
                mutate_value(rng, &mut a[i]);
            }
        },
        Value::Number(n) => *v = interesting(rng, n),
        Value::Bool(b) => *b = !*b,
        Value::String(s) => {
            *s = match rng.below(4) {
                0 => String::new(),
                1 => "x".repeat(rng.below(5000)),
                2 => "/dev/zero".into(),
                _ => format!("{s}\u{0}\n\u{202e}"),
            }
        }
        Value::Null => *v = Value::from(1),
        _ => {}
    }
}

/// A mutated value of `T`: changed as a value (kept only when it still has T's shape), or
/// as its postcard bytes.
fn mutated<T: serde::Serialize + serde::de::DeserializeOwned>(rng: &mut Rng, value: &T) -> Vec<u8> {
    let mut bytes = postcard(value);
    if rng.below(3) > 0 {
        let mut json = serde_json::to_value(value).unwrap();
        for _ in 0..1 + rng.below(3) {
            mutate_value(rng, &mut json);
        }
        if let Ok(v) = serde_json::from_value::<T>(json) {
            bytes = postcard(&v);
        }
    } else {
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(bytes.len());
            match rng.below(4) {
                0 => bytes[i] ^= 1 << rng.below(8),
                1 => bytes[i] = [0, 0x7f, 0x80, 0xff][rng.below(4)],
                2 => {
                    bytes.insert(i, rng.next() as u8);
                }
                _ => {
                    bytes.remove(i);
                }
            }
        }
    }
    bytes
}

/// Everything `info`, `check` and `resume` do with an image before a process is made,
/// in this process: Ok (accepted) or the one line they would print.
fn read_as_crterm_does(bytes: &[u8]) -> Result<(), String> {
    let path = Path::new("fuzz.img");
    let img = image::read(&mut &bytes[..]).map_err(|e| e.to_string())?;
    let loaded = crterm::load::checked(img).map_err(|e| e.to_string())?;
    crterm::load::decode_every_chunk(&loaded.image).map_err(|e| e.to_string())?;
    crterm::info::render(path, &loaded, bytes.len() as u64, false).map_err(|e| e.to_string())?;
    crterm::info::render(path, &loaded, bytes.len() as u64, true).map_err(|e| e.to_string())?;
    let _ = crterm::check::image_report(path, &loaded, false);
    let _ = loaded.term.repaint();
    Ok(())
}

/// The fuzz: the golden session's record and model mutated (as values and as bytes),
/// re-encoded, re-sealed, and read as crterm reads images. Every case ends in an answer,
/// quickly, with no allocation beyond what the section limits allow, and an error is one
/// line. Every so often the case is also given to the crterm binary, whose peak memory is
/// measured.
#[test]
fn fuzz_of_decoded_records_finds_no_panic_hang_or_unbounded_memory() {
    let secs: u64 = std::env::var("CRTERM_FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let seed: u64 = std::env::var("CRTERM_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("fuzz: {secs} s from seed {seed} (CRTERM_FUZZ_SEED={seed} repeats it)");
    let env = Env::unprivileged();
    let dir = TempDir::new("crterm-fuzz");
    let p = golden();
    let rich = rich(&p);
    read_as_crterm_does(&with_meta(&p, &postcard(&p.term), &postcard(&rich)))
        .expect("the richer record is a valid one");
    let mut rng = Rng(seed);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut cases, mut accepted, mut refused_lines) = (0u64, 0u64, 0u64);
    while Instant::now() < deadline {
        cases += 1;
        let base = if rng.below(2) == 0 { &p.record } else { &rich };
        let (term, record) = match rng.below(3) {
            0 => (mutated(&mut rng, &p.term), postcard(base)),
            1 => (postcard(&p.term), mutated(&mut rng, base)),
            _ => (mutated(&mut rng, &p.term), mutated(&mut rng, base)),
        };
        let bytes = with_meta(&p, &term, &record);
        crate::LARGEST.with(|l| l.set(0));
        let start = Instant::now();
        let outcome = std::panic::catch_unwind(|| read_as_crterm_does(&bytes));
        let took = start.elapsed();
        let largest = crate::LARGEST.with(|l| l.get());
        let case = format!("case {cases} of seed {seed}");
        let image = write(&dir, "case.img", &bytes);
        match &outcome {
            Err(_) => panic!("{case}: a panic (the image is kept at {})", keep(&image)),
            Ok(Err(line)) => {
                refused_lines += 1;
                assert!(!line.contains('\n'), "{case}: {line}");
            }
            Ok(Ok(())) => accepted += 1,
        }
        assert!(
            took < Duration::from_secs(5),
            "{case}: took {took:?} ({})",
            keep(&image)
        );
        // No single allocation beyond what a section may decode to (the floor: the images
        // here are small).
        assert!(
            largest as u64 <= image::META_FLOOR + (1 << 20),
            "{case}: an allocation of {largest} bytes ({})",
            keep(&image)
        );
        if cases % 200 == 1 {
            for args in [vec!["info"], vec!["check"]] {
                let out = env.crterm(&[&args[..], &[image.to_str().unwrap()]].concat());
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(
                    out.status.code().is_some() && err.lines().count() <= 1,
                    "{case}: crterm {args:?}: {:?} {err} ({})",
                    out.status,
                    keep(&image)
                );
                let wrong = match &outcome {
                    Ok(Ok(())) => args[0] == "info" && !out.status.success(),
                    _ => out.status.success(),
                };
                assert!(
                    !wrong,
                    "{case}: crterm {args:?} and the library disagree: {err}"
                );
            }
        }
    }
    eprintln!("fuzz: {cases} cases, {accepted} accepted, {refused_lines} refused");
    assert!(cases > 50, "the fuzz ran only {cases} cases");
}

/// Keep a failing case's image where it can be looked at.
fn keep(image: &Path) -> String {
    let to = std::env::temp_dir().join(format!("crterm-fuzz-failure-{}.img", std::process::id()));
    let _ = std::fs::copy(image, &to);
    to.display().to_string()
}
