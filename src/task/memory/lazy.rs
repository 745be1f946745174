//! Lazy resume (`crterm resume --lazy`, issue 14): the session goes on before its large
//! private memory is in. Each such mapping is registered with a userfaultfd (missing
//! mode) made by its process and held by the init; the init's server thread answers
//! every fault from the image (the chunk holding the page is decoded and all of it that
//! is still missing is copied in, with `UFFDIO_COPY`), and fill threads copy in the rest,
//! chunk by chunk, once the session runs. A page no image holds was never written: it is
//! given the zero page.
//!
//! What the program does meanwhile is followed through the kernel's non-cooperative
//! events, each of which holds the program until the server has read it: a fork gives the
//! server the child's userfaultfd, with what is still missing in the parent then missing
//! in the child; mremap moves what is missing; munmap and madvise(DONTNEED) drop it (the
//! program sees zeros there, as it would have). Copies are made with a gate held shared
//! (on every serving thread at once) and events read with it held exclusive, so a copy
//! never lands after the program dropped the range.
//! When a userfaultfd has nothing missing left it is closed, which ends its registrations.
//!
//! Only a userfaultfd that takes faults from inside the kernel will do: a `read()` into a
//! missing page must wait for it, not fail with EFAULT, which is all an ordinary user gets
//! (`UFFD_USER_MODE_ONLY`, `vm.unprivileged_userfaultfd` = 0), and the fork event takes
//! CAP_SYS_PTRACE. `check_available` asks the kernel once, before anything is made; where
//! it refuses, the resume copies everything in first and says so.
//!
//! Anything that goes wrong while the session runs (a chunk that no longer decodes, or
//! has another checksum than when the resume checked it: the file was changed under it)
//! ends the init, and with it, pid 1 of the session's namespace, every process: never a
//! session half in.

use crate::image::Section;
use std::collections::{BTreeMap, HashSet};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

const UFFD_API: u64 = 0xaa;
const FEATURE_EVENT_FORK: u64 = 1 << 1;
const FEATURE_EVENT_REMAP: u64 = 1 << 2;
const FEATURE_EVENT_REMOVE: u64 = 1 << 3;
const FEATURE_EVENT_UNMAP: u64 = 1 << 6;
const FEATURES: u64 =
    FEATURE_EVENT_FORK | FEATURE_EVENT_REMAP | FEATURE_EVENT_REMOVE | FEATURE_EVENT_UNMAP;
// _IOWR(0xAA, nr, size) and _IOR(0xAA, nr, size).
const UFFDIO_API: u64 = 0xc018_aa3f;
const UFFDIO_REGISTER: u64 = 0xc020_aa00;
const UFFDIO_WAKE: u64 = 0x8010_aa02;
const UFFDIO_COPY: u64 = 0xc028_aa03;
const UFFDIO_ZEROPAGE: u64 = 0xc020_aa04;
const REGISTER_MODE_MISSING: u64 = 1;
/// `userfaultfd(2)` flag: only faults taken in user mode are reported (allowed to any
/// user).
pub const USER_MODE_ONLY: u64 = 1;
const COPY_MODE_DONTWAKE: u64 = 1;
const EVENT_PAGEFAULT: u8 = 0x12;
const EVENT_FORK: u8 = 0x13;
const EVENT_REMAP: u8 = 0x14;
const EVENT_REMOVE: u8 = 0x15;
const EVENT_UNMAP: u8 = 0x16;
const PAGE: u64 = 4096;

/// The least a mapping must hold in the image to be served lazily: smaller ones (stacks,
/// small heaps, what the screen's first redraw touches) are copied in with the rest of
/// the resume, so the session's first moments take no faults.
pub const LAZY_MIN: u64 = 4 << 20;

/// What ends the session when serving fails: reports `why` and never returns.
pub type Fatal = Arc<dyn Fn(String) + Send + Sync>;

/// What is called once everything is in.
pub type Done = Arc<dyn Fn() + Send + Sync>;

/// Whether this process (and so its copies, the restored processes, which have its
/// credentials until the end) may make a userfaultfd that takes kernel faults and fork
/// events; the reason when not.
pub fn check_available() -> Result<(), String> {
    // SAFETY: plain system call; the descriptor is owned at once.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(format!(
            "a userfaultfd that waits for faults taken in the kernel is refused ({e}; it needs root or vm.unprivileged_userfaultfd=1)"
        ));
    }
    // SAFETY: just made.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    api(&fd).map_err(|e| {
        format!(
            "the kernel refuses userfaultfd's fork and unmap events ({e}; they need CAP_SYS_PTRACE)"
        )
    })
}

/// Enable the features the server needs on a new userfaultfd.
pub fn api(fd: &OwnedFd) -> io::Result<()> {
    let mut api = [UFFD_API, FEATURES, 0];
    ioctl(fd, UFFDIO_API, api.as_mut_ptr().cast())
}

/// Enable no feature on a new userfaultfd (one used only to copy pages in).
pub fn api_plain(fd: &OwnedFd) -> io::Result<()> {
    let mut api = [UFFD_API, 0, 0];
    ioctl(fd, UFFDIO_API, api.as_mut_ptr().cast())
}

/// Register [start, end) for missing-page faults.
pub fn register(fd: &OwnedFd, start: u64, end: u64) -> io::Result<()> {
    let mut reg = [start, end - start, REGISTER_MODE_MISSING, 0];
    ioctl(fd, UFFDIO_REGISTER, reg.as_mut_ptr().cast())
}

fn ioctl(fd: &OwnedFd, request: u64, arg: *mut libc::c_void) -> io::Result<()> {
    // SAFETY: `arg` points at the struct `request` reads and writes, of its size.
    if unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The page data of one image of the chain: its chunks and where each starts in its
/// page stream.
pub struct Source {
    chunks: Vec<Section>,
    starts: Vec<u64>,
}

impl Source {
    pub fn new(image: &crate::image::Image) -> Source {
        let chunks: Vec<Section> = image
            .stored_chunks(crate::image::SectionKind::PAGES)
            .cloned()
            .collect();
        let mut starts = Vec::with_capacity(chunks.len());
        let mut total = 0u64;
        for c in &chunks {
            starts.push(total);
            total += c.raw_len;
        }
        Source { chunks, starts }
    }

    /// The chunk holding stream offset `off`, and where it starts and ends.
    fn chunk_of(&self, off: u64) -> Option<(usize, u64, u64)> {
        let i = self.starts.partition_point(|&s| s <= off).checked_sub(1)?;
        let end = self.starts[i] + self.chunks[i].raw_len;
        (off < end).then_some((i, self.starts[i], end))
    }
}

/// One missing run of a process's memory: where it is and where its bytes are (image
/// `src` of the sources, offset `off` in its page stream). Runs never cross a chunk.
#[derive(Clone, Copy)]
struct Missing {
    len: u64,
    src: usize,
    off: u64,
}

struct Uffd {
    fd: OwnedFd,
    /// What is still missing, by address.
    missing: BTreeMap<u64, Missing>,
}

#[derive(Default)]
struct State {
    uffds: BTreeMap<u32, Uffd>,
    next_id: u32,
    /// Every missing run by where its bytes are: (src, off, uffd) → address.
    by_source: BTreeMap<(usize, u64, u32), u64>,
    /// The restore may still register more.
    adding: bool,
    /// Where the fill goes on, and the chunks being filled now.
    cursor: (usize, u64),
    filling: HashSet<(usize, usize)>,
    /// Runs being copied in now, taken out of `missing`: (uffd, address) → length.
    copying: BTreeMap<(u32, u64), u64>,
}

impl State {
    /// Serve `fd` too, with nothing missing yet; its id.
    fn new_uffd(&mut self, fd: OwnedFd) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        self.uffds.insert(
            id,
            Uffd {
                fd,
                missing: BTreeMap::new(),
            },
        );
        id
    }

    fn insert(&mut self, id: u32, addr: u64, m: Missing) {
        if m.len == 0 {
            return;
        }
        if let Some(u) = self.uffds.get_mut(&id) {
            u.missing.insert(addr, m);
            self.by_source.insert((m.src, m.off, id), addr);
        }
    }

    fn remove(&mut self, id: u32, addr: u64) -> Option<Missing> {
        let m = self.uffds.get_mut(&id)?.missing.remove(&addr)?;
        self.by_source.remove(&(m.src, m.off, id));
        Some(m)
    }

    /// Nothing of [start, end) is missing any more in uffd `id` (unmapped, dropped, or
    /// taken care of); the runs it cuts keep their other parts.
    fn cut(&mut self, id: u32, start: u64, end: u64) -> Vec<(u64, Missing)> {
        let Some(u) = self.uffds.get(&id) else {
            return Vec::new();
        };
        let hit: Vec<u64> = u
            .missing
            .range(..end)
            .rev()
            .take_while(|(a, m)| *a + m.len > start)
            .map(|(a, _)| *a)
            .collect();
        let mut taken = Vec::new();
        for a in hit {
            let m = self.remove(id, a).expect("listed");
            let (s, e) = (a.max(start), (a + m.len).min(end));
            if a < s {
                self.insert(id, a, Missing { len: s - a, ..m });
            }
            if e < a + m.len {
                self.insert(
                    id,
                    e,
                    Missing {
                        len: a + m.len - e,
                        off: m.off + (e - a),
                        ..m
                    },
                );
            }
            taken.push((
                s,
                Missing {
                    len: e - s,
                    off: m.off + (s - a),
                    ..m
                },
            ));
        }
        taken
    }

    /// What was missing at [from, from + len) is missing at `to` now (mremap).
    fn moved(&mut self, id: u32, from: u64, to: u64, len: u64) {
        self.cut(id, to, to + len);
        for (a, m) in self.cut(id, from, from + len) {
            self.insert(id, to + (a - from), m);
        }
    }
}

/// The server: one thread answering faults and events, and (from `fill`) threads copying
/// the rest in.
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Copies are made under it shared (on every thread at once), events are read and
    /// userfaultfds closed under it exclusive: so no copy is under way while an event
    /// lets the program change its memory, nor into a descriptor being closed.
    gate: RwLock<()>,
    sources: Vec<Source>,
    /// Written to wake the fault thread (a new userfaultfd, or one emptied).
    wake: OwnedFd,
    fatal: Fatal,
    done: Done,
}

impl Server {
    /// Start answering faults; `sources[0]` is the image resumed, then its parents.
    pub fn start(sources: Vec<Source>, fatal: Fatal, done: Done) -> io::Result<Server> {
        let wake = crate::sys::trace::eventfd(0, libc::EFD_NONBLOCK)?;
        let server = Server {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    adding: true,
                    ..Default::default()
                }),
                gate: RwLock::new(()),
                sources,
                wake,
                fatal,
                done,
            }),
        };
        let s = server.clone();
        std::thread::Builder::new()
            .name("lazy-faults".into())
            .spawn(move || s.serve_faults())?;
        Ok(server)
    }

    /// Serve `fd` (a process's userfaultfd, its ranges registered): `runs` (address,
    /// length, source, offset) are what is missing there and where it is.
    pub fn add(&self, fd: OwnedFd, runs: &[(u64, u64, usize, u64)]) -> Result<(), String> {
        let mut st = self.lock();
        let id = st.new_uffd(fd);
        for &(mut addr, mut len, src, mut off) in runs {
            let source = self
                .shared
                .sources
                .get(src)
                .ok_or("a page run from no image of the chain")?;
            while len > 0 {
                let (_, _, end) = source
                    .chunk_of(off)
                    .ok_or("a page run past the image's page data")?;
                let n = len.min(end - off);
                st.insert(id, addr, Missing { len: n, src, off });
                (addr, len, off) = (addr + n, len - n, off + n);
            }
        }
        drop(st);
        self.poke();
        Ok(())
    }

    /// Every process is made and runs: copy the rest in, on `workers` threads.
    pub fn fill(&self, workers: usize) {
        self.lock().adding = false;
        for k in 0..workers.max(1) {
            let s = self.clone();
            let _ = std::thread::Builder::new()
                .name(format!("lazy-fill-{k}"))
                .spawn(move || s.fill_loop());
        }
        self.poke();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn poke(&self) {
        let _ = crate::sys::write(
            std::os::fd::AsFd::as_fd(&self.shared.wake),
            &1u64.to_ne_bytes(),
        );
    }

    fn die(&self, why: String) -> ! {
        (self.shared.fatal)(why);
        crate::sys::exit_now(1)
    }

    /// Chunk `i` of source `src`, checked again (the file could have changed since the
    /// resume checked it) and decoded.
    fn decode<'b>(&'b self, src: usize, i: usize, buf: &'b mut Vec<u8>) -> &'b [u8] {
        let c = &self.shared.sources[src].chunks[i];
        let what = format!("page chunk {i}");
        let bad = |why: String| -> ! {
            self.die(format!(
                "the image is damaged or was changed while the session was resumed from it ({why}); the session is ended"
            ))
        };
        // Checked here even where the image was checked when read: the file may have
        // changed under its mapping since (one not checked then is checked in decoding).
        if c.checked && crc32fast::hash(&c.stored) != c.crc {
            bad(format!("{what}: checksum mismatch"));
        }
        match crate::image::decode_chunk_into(c, &what, buf) {
            Ok(d) => d,
            Err(crate::image::ImageError::Corrupt(why)) => bad(why),
            Err(e) => bad(e.to_string()),
        }
    }

    /// Copy in what is missing of chunk `i` of `src`, whose bytes are `data`; false when
    /// the kernel asks to wait (an event not read yet), true when nothing of it is left.
    /// The runs are taken out of the missing set while they are copied (`copying`), with
    /// the gate held shared, and what the kernel did not take is put back.
    fn copy_chunk(&self, src: usize, i: usize, data: &[u8]) -> bool {
        let _gate = self.shared.gate.read().unwrap_or_else(|e| e.into_inner());
        let base = self.shared.sources[src].starts[i];
        let end = base + data.len() as u64;
        let taken: Vec<(u32, u64, Missing, i32)> = {
            let mut st = self.lock();
            let runs: Vec<((usize, u64, u32), u64)> = st
                .by_source
                .range((src, base, 0)..(src, end, 0))
                .map(|(k, a)| (*k, *a))
                .collect();
            let mut taken = Vec::with_capacity(runs.len());
            for ((_, _, id), addr) in runs {
                if let Some(m) = st.remove(id, addr) {
                    st.copying.insert((id, addr), m.len);
                    taken.push((id, addr, m, st.uffds[&id].fd.as_raw_fd()));
                }
            }
            taken
        };
        let mut left: Vec<(u32, u64, Missing)> = Vec::new();
        for &(id, addr, m, fd) in &taken {
            if !left.is_empty() {
                left.push((id, addr, m));
                continue;
            }
            let bytes = &data[(m.off - base) as usize..(m.off - base + m.len) as usize];
            // SAFETY: the descriptor stays open while the gate is held shared.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            match copy(fd, addr, bytes) {
                Ok(None) => {}
                Ok(Some(done)) => left.push((
                    id,
                    addr + done,
                    Missing {
                        len: m.len - done,
                        off: m.off + done,
                        ..m
                    },
                )),
                Err(e) => self.die(format!(
                    "resuming the session's memory failed: copying into {addr:#x}: {e}"
                )),
            }
        }
        let mut st = self.lock();
        for (id, addr, _, _) in taken {
            st.copying.remove(&(id, addr));
        }
        let done = left.is_empty();
        for (id, addr, m) in left {
            st.insert(id, addr, m);
        }
        done
    }

    /// The fault thread: read every userfaultfd's messages, follow the events, answer the
    /// faults; close the userfaultfds with nothing missing.
    fn serve_faults(&self) {
        let mut cache: Option<(usize, usize)> = None;
        let mut buf = Vec::new();
        let mut waiting: Vec<(u32, u64)> = Vec::new();
        loop {
            // The gate is taken exclusive only when there is something to close: every
            // copy under way must end first, and the fill threads wait meanwhile.
            let closing = {
                let st = self.lock();
                st.uffds.values().any(|u| u.missing.is_empty())
                    || (st.uffds.is_empty() && !st.adding)
            };
            let fds: Vec<(u32, i32)> = {
                let _gate =
                    closing.then(|| self.shared.gate.write().unwrap_or_else(|e| e.into_inner()));
                let mut st = self.lock();
                let empty: Vec<u32> = st
                    .uffds
                    .iter()
                    .filter(|(_, u)| u.missing.is_empty())
                    .map(|(id, _)| *id)
                    .collect();
                for id in empty {
                    // Read what it still has: a fork must not wait on a closed one.
                    self.read_events(&mut st, id, &mut waiting);
                    if st.uffds[&id].missing.is_empty() {
                        st.uffds.remove(&id);
                        waiting.retain(|w| w.0 != id);
                    }
                }
                if st.uffds.is_empty() && !st.adding {
                    (self.shared.done)();
                    return;
                }
                st.uffds
                    .iter()
                    .map(|(id, u)| (*id, u.fd.as_raw_fd()))
                    .collect()
            };
            let mut polled: Vec<crate::sys::PollFd> = fds
                .iter()
                .map(|&(_, fd)| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            polled.push(libc::pollfd {
                fd: self.shared.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            let timeout = if waiting.is_empty() { 200 } else { 1 };
            if let Err(e) = crate::sys::poll(&mut polled, timeout) {
                self.die(format!("resuming the session's memory failed: poll: {e}"));
            }
            let mut eight = [0u8; 8];
            let _ = crate::sys::read(std::os::fd::AsFd::as_fd(&self.shared.wake), &mut eight);
            if polled[..fds.len()].iter().any(|p| p.revents != 0) {
                let _gate = self.shared.gate.write().unwrap_or_else(|e| e.into_inner());
                let mut st = self.lock();
                for (k, &(id, _)) in fds.iter().enumerate() {
                    if polled[k].revents != 0 {
                        self.read_events(&mut st, id, &mut waiting);
                    }
                }
            }
            // Answer the faults; one the kernel makes wait (an event not read yet) is
            // answered at the next round, after the events are read.
            let faults = std::mem::take(&mut waiting);
            for (id, addr) in faults {
                if !self.answer(id, addr, &mut cache, &mut buf) {
                    waiting.push((id, addr));
                }
            }
        }
    }

    /// Read the messages of uffd `id` (non-blocking) and follow its events; faults are
    /// added to `faults`.
    fn read_events(&self, st: &mut State, id: u32, faults: &mut Vec<(u32, u64)>) {
        let mut msgs = [0u8; 32 * 64];
        loop {
            let Some(u) = st.uffds.get(&id) else {
                return;
            };
            let n = match crate::sys::read(std::os::fd::AsFd::as_fd(&u.fd), &mut msgs) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => self.die(format!(
                    "resuming the session's memory failed: reading a userfaultfd: {e}"
                )),
            };
            for msg in msgs[..n].chunks_exact(32) {
                let word =
                    |k: usize| u64::from_ne_bytes(msg[8 + 8 * k..16 + 8 * k].try_into().unwrap());
                match msg[0] {
                    EVENT_PAGEFAULT => faults.push((id, word(1))),
                    EVENT_FORK => {
                        let ufd = u32::from_ne_bytes(msg[8..12].try_into().unwrap()) as i32;
                        // SAFETY: the kernel installed it in our table for us.
                        let fd = unsafe { OwnedFd::from_raw_fd(ufd) };
                        let child = st.new_uffd(fd);
                        let parent: Vec<(u64, Missing)> = st.uffds[&id]
                            .missing
                            .iter()
                            .map(|(a, m)| (*a, *m))
                            .collect();
                        for (a, m) in parent {
                            st.insert(child, a, m);
                        }
                    }
                    EVENT_REMAP => st.moved(id, word(0), word(1), word(2)),
                    EVENT_REMOVE | EVENT_UNMAP => {
                        st.cut(id, word(0), word(1));
                    }
                    _ => {}
                }
            }
        }
    }

    /// Answer a fault at `addr` of uffd `id`: the chunk that holds the page copied in, or
    /// the zero page where no image holds it; false when the kernel asks to wait.
    fn answer(
        &self,
        id: u32,
        addr: u64,
        cache: &mut Option<(usize, usize)>,
        buf: &mut Vec<u8>,
    ) -> bool {
        let page = addr & !(PAGE - 1);
        let gate = self.shared.gate.read().unwrap_or_else(|e| e.into_inner());
        let st = self.lock();
        let Some(u) = st.uffds.get(&id) else {
            return true;
        };
        let hit = u
            .missing
            .range(..=page)
            .next_back()
            .filter(|(a, m)| **a + m.len > page)
            .map(|(a, m)| (m.src, m.off + (page - a)));
        // Being copied in by another thread: its copy wakes the faulting thread.
        let copying = st
            .copying
            .range((id, 0)..=(id, page))
            .next_back()
            .is_some_and(|(&(_, a), &len)| a + len > page);
        let fd = u.fd.as_raw_fd();
        drop(st);
        if let Some((src, off)) = hit {
            drop(gate);
            let (i, _, _) = self.shared.sources[src]
                .chunk_of(off)
                .expect("runs are within chunks");
            // A raw chunk is used where it is stored; a compressed one is decoded once
            // for a run of faults in it.
            let c = &self.shared.sources[src].chunks[i];
            let mut none = Vec::new();
            let data: &[u8] = if c.codec == crate::image::Codec::Raw {
                self.decode(src, i, &mut none)
            } else {
                if *cache != Some((src, i)) {
                    *cache = None;
                    self.decode(src, i, buf);
                    *cache = Some((src, i));
                }
                &buf[..c.raw_len as usize]
            };
            return self.copy_chunk(src, i, data);
        }
        if copying {
            return true;
        }
        // SAFETY: the descriptor stays open while the gate is held shared.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        match zeropage(fd, page) {
            Ok(true) => true,
            Ok(false) => false,
            Err(e) => self.die(format!(
                "resuming the session's memory failed: a zero page at {page:#x}: {e}"
            )),
        }
    }

    /// A fill thread: take the next chunk with something missing, decode it, copy it in.
    fn fill_loop(&self) {
        let mut buf = Vec::new();
        loop {
            while crate::ckpt::hooks::held("fill") {
                std::thread::sleep(Duration::from_millis(20));
            }
            let next = {
                let mut st = self.lock();
                if st.by_source.is_empty() {
                    self.poke();
                    return;
                }
                let cursor = st.cursor;
                let pick = st
                    .by_source
                    .range((cursor.0, cursor.1, 0)..)
                    .map(|(k, _)| (k.0, k.1))
                    .map(|(src, off)| {
                        let (i, _, end) = self.shared.sources[src]
                            .chunk_of(off)
                            .expect("runs are within chunks");
                        (src, i, end)
                    })
                    .find(|&(src, i, _)| !st.filling.contains(&(src, i)));
                match pick {
                    Some((src, i, end)) => {
                        st.cursor = (src, end);
                        st.filling.insert((src, i));
                        Some((src, i))
                    }
                    None => {
                        st.cursor = (0, 0);
                        None
                    }
                }
            };
            let Some((src, i)) = next else {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            };
            let data = self.decode(src, i, &mut buf);
            while !self.copy_chunk(src, i, data) {
                std::thread::sleep(Duration::from_micros(200));
            }
            // The fault thread is woken only when a userfaultfd has nothing missing
            // left (to close it): waking it after every chunk took the gate exclusive
            // as often, and the other fill thread waited for it each time.
            let emptied = {
                let mut st = self.lock();
                st.filling.remove(&(src, i));
                st.uffds.values().any(|u| u.missing.is_empty())
            };
            if emptied {
                self.poke();
            }
        }
    }
}

/// One UFFDIO_COPY of `bytes` to `addr` (`mode`: its flags): Ok(n), the bytes copied
/// (all of them, or fewer where the kernel stopped partway), or the error before any.
fn copy_once(fd: std::os::fd::BorrowedFd, addr: u64, bytes: &[u8], mode: u64) -> Result<u64, i32> {
    let mut arg = [addr, bytes.as_ptr() as u64, bytes.len() as u64, mode, 0];
    // SAFETY: `arg` is struct uffdio_copy; the source is `bytes`, read only.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_COPY as _, arg.as_mut_ptr()) };
    if r == 0 {
        return Ok(bytes.len() as u64);
    }
    match arg[4] as i64 {
        n if n > 0 => Ok(n as u64),
        e if e < 0 => Err(-e as i32),
        _ => Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)),
    }
}

/// Copy `bytes` to `addr`: None when done (pages that are there already, or whose
/// mapping is gone, are passed over), Some(done) when the kernel asks to wait after
/// `done` bytes.
fn copy(fd: std::os::fd::BorrowedFd, addr: u64, bytes: &[u8]) -> io::Result<Option<u64>> {
    let mut done = 0u64;
    let len = bytes.len() as u64;
    while done < len {
        match copy_once(fd, addr + done, &bytes[done as usize..], 0) {
            Ok(n) => done += n,
            Err(libc::EAGAIN) => return Ok(Some(done)),
            // There already (the program faulted it in another way), or not registered
            // any more (its mapping changed, which an event says too): the next page.
            Err(libc::EEXIST | libc::ENOENT) => {
                wake(fd, addr + done, PAGE);
                done += PAGE;
            }
            // The process is gone.
            Err(libc::ESRCH) => return Ok(None),
            Err(e) => return Err(io::Error::from_raw_os_error(e)),
        }
    }
    Ok(None)
}

/// Copy `bytes` (whole pages) to `addr` (page-aligned) in one mapping registered with
/// `fd`, where nothing waits for them (a resume that copies everything before the session
/// goes on). The error says how many bytes went in before the page the kernel refused.
pub fn copy_in(
    fd: std::os::fd::BorrowedFd,
    addr: u64,
    bytes: &[u8],
) -> Result<(), (u64, io::Error)> {
    let mut done = 0u64;
    while done < bytes.len() as u64 {
        match copy_once(fd, addr + done, &bytes[done as usize..], COPY_MODE_DONTWAKE) {
            Ok(n) => done += n,
            Err(e) => return Err((done, io::Error::from_raw_os_error(e))),
        }
    }
    Ok(())
}

/// The zero page at `page`: true when the fault is answered, false when the kernel asks
/// to wait.
fn zeropage(fd: std::os::fd::BorrowedFd, page: u64) -> io::Result<bool> {
    let mut arg = [page, PAGE, 0, 0];
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_ZEROPAGE as _, arg.as_mut_ptr()) };
    if r == 0 {
        return Ok(true);
    }
    match (-(arg[3] as i64)) as i32 {
        libc::EAGAIN => Ok(false),
        libc::EEXIST | libc::ENOENT | libc::ESRCH => {
            wake(fd, page, PAGE);
            Ok(true)
        }
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

fn wake(fd: std::os::fd::BorrowedFd, start: u64, len: u64) {
    let mut range = [start, len];
    let _ = unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_WAKE as _, range.as_mut_ptr()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with(runs: &[(u64, u64, u64)]) -> State {
        let mut st = State::default();
        st.uffds.insert(
            0,
            Uffd {
                fd: crate::sys::trace::eventfd(0, 0).unwrap(),
                missing: BTreeMap::new(),
            },
        );
        for &(a, len, off) in runs {
            st.insert(0, a, Missing { len, src: 0, off });
        }
        st
    }

    fn runs(st: &State) -> Vec<(u64, u64, u64)> {
        st.uffds[&0]
            .missing
            .iter()
            .map(|(a, m)| (*a, m.len, m.off))
            .collect()
    }

    #[test]
    fn cut_keeps_the_outer_parts_with_their_offsets() {
        let mut st = state_with(&[(0x1000, 0x4000, 100), (0x8000, 0x1000, 0)]);
        let taken = st.cut(0, 0x2000, 0x3000);
        assert_eq!(taken.len(), 1);
        assert_eq!((taken[0].0, taken[0].1.off), (0x2000, 100 + 0x1000));
        assert_eq!(
            runs(&st),
            vec![
                (0x1000, 0x1000, 100),
                (0x3000, 0x2000, 100 + 0x2000),
                (0x8000, 0x1000, 0)
            ]
        );
        assert_eq!(st.by_source.len(), 3);
    }

    #[test]
    fn a_move_takes_what_was_missing_to_the_new_place() {
        let mut st = state_with(&[(0x1000, 0x2000, 0), (0x10000, 0x1000, 0x5000)]);
        st.moved(0, 0x1000, 0x20000, 0x2000);
        assert_eq!(
            runs(&st),
            vec![(0x10000, 0x1000, 0x5000), (0x20000, 0x2000, 0)]
        );
        assert_eq!(st.by_source[&(0, 0, 0)], 0x20000);
    }
}
