//! The resume: the order in which a session is made again from an image, run by the
//! session's init (pid 1 of a fresh pid namespace) in `crterm resume`. How each kind of
//! resource is made again lives with its kind: `crate::task` (processes, identities,
//! memory, signals, timers, threads) and `crate::fds` (descriptors); each adds its steps
//! to `Restorer` here, which holds what they share: the record, the image, the traced
//! processes and the trampoline page injected calls run from (`crate::inject`).
//!
//! Every restored process starts as a copy of the init and is reshaped from outside by
//! injected calls. Order (`restore`): ptys → trampoline → the process tree, each
//! process's memory made as the process is, a parent's before its children, so that what
//! a child shares copy-on-write with its parent comes to it by the fork
//! (`task::tree`, `task::memory`) → descriptors, each open file description made once and
//! sent to its holders (`crate::fds`) → locks, advice, memfd seals → per-process state:
//! handlers, interval timers, umask, personality, mm fields, threads, POSIX timers
//! (`restore_state`) → per process: identity, descriptor owners, memory locks and seals,
//! queued signals, registers, the trampoline removed (`finish`) → stopped jobs stopped
//! again → every thread let go together. Any error ends the init, and with it (pid 1 of
//! the namespace) everything it created.

pub use crate::fds::files::check_open_files;
pub use crate::task::creds::{Resumer, check_identity};
pub use crate::task::memory::mapped_file_here;
use crate::task::{creds, memory, threads, tree};

use crate::image::Image;
use crate::inject::{Injector, nr};
use crate::records::{ProcessRecord, SessionRecord};
use crate::sys::{self, trace as t};
use anyhow::{Context, Result, anyhow, bail};
use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// The trampoline: a page with `syscall; int3`, then scratch pages for the calls' data.
pub(crate) const TRAMPOLINE_PAGES: u64 = 4;
pub(crate) const PAGE: u64 = 4096;
/// The highest user address on x86_64 with 4-level page tables.
pub(crate) const TASK_SIZE: u64 = 0x7fff_ffff_f000;

/// Options for every traced task of the restore: the processes and threads they are made
/// to create are traced too (and stop before running anything).
pub(crate) const TRACE_CHILDREN: i32 = libc::PTRACE_O_TRACEFORK | libc::PTRACE_O_TRACECLONE;

/// What the caller decides about a resume.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Go on where files the session wrote have changed since the checkpoint.
    pub force: bool,
    /// The host's CLOCK_MONOTONIC and CLOCK_BOOTTIME as they are (`--clock real`), rather
    /// than going on from their values at the checkpoint (a time namespace).
    pub real_clock: bool,
    /// The host's name as it is (`--hostname real`), rather than the name the session's
    /// programs saw (its UTS namespace).
    pub real_hostname: bool,
    /// Require every instruction-set feature the image's machine had (`--strict-cpu`),
    /// not only those the session could have acted on.
    pub strict_cpu: bool,
    /// Let the session go on before its memory is in (`--lazy`): large private memory is
    /// served from the image on first touch and filled in the background
    /// (`task::memory::lazy`), where the kernel allows it; else copied in first.
    pub lazy: bool,
    /// The restore may set ids (root resumes, and `check_identity` allowed the image):
    /// processes get their recorded groups and ids, and their files are made as them.
    pub set_ids: bool,
    /// Start write tracking in each process once its memory is as the image has it, for
    /// the daemon to take (`Restored::trackers`): its next checkpoint can then refer to
    /// the image resumed. Not with a lazy resume (its memory is registered with the
    /// server's userfaultfds until it is all in).
    pub track: bool,
}

/// The result: the masters of the session's ptys by number (0 is the session's own).
pub struct Restored {
    pub masters: BTreeMap<u32, OwnedFd>,
    /// Things that could not be put back exactly, for the user to know.
    pub warnings: Vec<String>,
    /// A lazy resume's server, to be told to fill the rest in once the session runs.
    pub lazy: Option<memory::lazy::Server>,
    /// With `Options::track`: each process's write tracker (its pid in the session, the
    /// tracker's userfaultfd), started after everything was written into its memory.
    pub trackers: Vec<(i32, OwnedFd)>,
}

/// A process being restored: its record and an injector on its main thread.
pub(crate) struct Proc<'a> {
    pub(crate) rec: &'a ProcessRecord,
    pub(crate) inj: Injector,
    /// Its threads as created so far (the main thread first).
    pub(crate) tids: Vec<i32>,
}

/// The restore's state, shared by its parts (the descriptor kinds in `crate::fds` among
/// them).
pub(crate) struct Restorer<'a> {
    pub(crate) record: &'a SessionRecord,
    pub(crate) image: &'a Image,
    /// An incremental image's chain, its parent first.
    pub(crate) ancestors: &'a [crate::load::Ancestor],
    pub(crate) opts: &'a Options,
    /// Start of the trampoline, the same in every process.
    pub(crate) tramp: u64,
    /// The init's end of the socket descriptors travel over, and the number every process
    /// holds the other end at while it is restored.
    pub(crate) xfer: OwnedFd,
    pub(crate) xfer_fd: i32,
    pub(crate) procs: BTreeMap<i32, Proc<'a>>,
    pub(crate) masters: BTreeMap<u32, OwnedFd>,
    /// Files deleted while open, made again (unnamed), by (device, inode): every
    /// description of one, and a shared mapping of it, is of the one file made.
    pub(crate) deleted: std::cell::RefCell<DeletedFiles>,
    /// The files mappings map, opened once for all processes.
    pub(crate) mapped: std::cell::RefCell<memory::MappedFiles>,
    /// The memfds made again and the seals each gets once memory is in place.
    pub(crate) seals: std::cell::RefCell<Vec<(std::rc::Rc<OwnedFd>, u32)>>,
    pub(crate) warnings: Vec<String>,
    /// The server of a lazy resume, where the kernel allows one (`--lazy`).
    pub(crate) lazy: Option<memory::lazy::Server>,
    /// Write trackers started (`Options::track`), by process.
    pub(crate) trackers: Vec<(i32, OwnedFd)>,
}

/// Files made again by (device (major, minor), inode).
type DeletedFiles = std::collections::HashMap<((u32, u32), u64), std::rc::Rc<OwnedFd>>;

/// Restore the session in `record` (with its pages and files in `image`). `fatal` ends
/// the session when a lazy resume's serving fails after it runs; `filled` is called when
/// a lazy resume's memory is all in.
pub fn restore(
    record: &SessionRecord,
    image: &Image,
    ancestors: &[crate::load::Ancestor],
    opts: &Options,
    fatal: memory::lazy::Fatal,
    filled: memory::lazy::Done,
) -> Result<Restored> {
    check_supported(record)?;
    let mut warnings = Vec::new();
    check_cpu(record, &image.info, opts, &mut warnings)?;
    // A lazy resume where the kernel gives what it needs; else every page is copied in
    // first, and the resume says why.
    let lazy = match opts
        .lazy
        .then(|| memory::lazy::check_available().and_then(|()| threads_past_pids(record)))
    {
        Some(Ok(())) => {
            let sources = std::iter::once(image)
                .chain(ancestors.iter().map(|a| &a.image))
                .map(memory::lazy::Source::new)
                .collect();
            Some(
                memory::lazy::Server::start(sources, fatal, filled)
                    .context("cannot start serving memory lazily")?,
            )
        }
        Some(Err(why)) => {
            warnings.push(format!(
                "memory was copied in before the session went on, not lazily: {why}"
            ));
            None
        }
        None => None,
    };
    // The ptys belong to the session's user: made as its first process.
    let masters = if let Some(first) = record.processes.iter().find(|p| p.zombie.is_none()) {
        let _as = creds::act_as(opts.set_ids, first)?;
        crate::fds::ttys::open_ptys(record)?
    } else {
        bail!("the image holds no process")
    };
    let tramp = trampoline_address(record)?;
    map_trampoline(tramp)?;
    let (xfer, xfer_child) = sys::dgram_pair().context("socketpair")?;
    let xfer_fd = crate::fds::free_fd_number(record);
    let mut r = Restorer {
        record,
        image,
        ancestors,
        opts,
        tramp,
        xfer,
        xfer_fd,
        procs: BTreeMap::new(),
        masters,
        deleted: Default::default(),
        seals: Default::default(),
        mapped: Default::default(),
        warnings,
        lazy,
        trackers: Vec::new(),
    };
    r.check_file_policy()?;
    // Each process's memory is made as the process is, a parent's before its children.
    r.create_tree(xfer_child.as_raw_fd())?;
    drop(xfer_child);
    crate::ckpt::hooks::stall_at("restore");
    r.mapped.take();
    r.install_files()?;
    r.restore_locks()?;
    r.advise_all()?;
    r.seal_memfds()?;
    r.restore_state()?;
    r.finish()?;
    Ok(Restored {
        masters: r.masters,
        warnings: r.warnings,
        lazy: r.lazy,
        trackers: r.trackers,
    })
}

/// Make the threads the init starts from now on (a lazy resume's server) take pids above
/// every one the image holds: a thread takes the next free pid of the session's pid
/// namespace, which a process of the image may need (`ns_last_pid`, which acts on the
/// writer's own pid namespace).
fn threads_past_pids(record: &SessionRecord) -> Result<(), String> {
    let highest = record.ids_in_use().max().unwrap_or(1);
    std::fs::write("/proc/sys/kernel/ns_last_pid", highest.to_string())
        .map_err(|e| format!("cannot keep the server's threads off the session's pids ({e})"))
}

/// Refuse what this version cannot bring back, naming it: at checkpoint (so no image of it
/// is made), by `crterm check`, and again before a resume makes anything.
pub fn check_supported(record: &SessionRecord) -> Result<()> {
    if let Some(last) = crate::fds::ttys::pty_numbers(record).last()
        && *last > 255
    {
        bail!("the image uses pty {last}; at most 256 ptys are restored");
    }
    for p in &record.processes {
        if p.zombie.is_none() && p.threads.is_empty() {
            bail!("process {} ({}) has no threads in the image", p.pid, p.comm);
        }
        if p.pid <= 1 {
            bail!("the image holds a process with pid {}", p.pid);
        }
        for th in &p.threads {
            if th.regs.len() != 27 {
                bail!(
                    "thread {} of process {}: bad registers in the image",
                    th.tid,
                    p.pid
                );
            }
        }
        if let Some(m) = p.maps.iter().find(|m| {
            m.vm & crate::records::vm::REFUSED != 0 && m.kind() != crate::records::MapKind::Kernel
        }) {
            bail!(
                "process {} ({}) maps {} at {:#x}-{:#x}{}, which this version cannot carry",
                p.pid,
                p.comm,
                crate::records::vm::refused_name(m.vm),
                m.start,
                m.end,
                if m.path.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", m.path)
                }
            );
        }
        // A root of its own (chroot) would have to be entered again by a process that may
        // lack the privilege, inside a directory this version does not carry.
        if p.zombie.is_none() && p.root != "/" {
            bail!(
                "process {} ({}) has a root of its own (chroot to {}), which this version cannot carry",
                p.pid,
                p.comm,
                p.root
            );
        }
        if p.zombie.is_none() && p.threads.first().map(|t| t.tid) != Some(p.pid) {
            bail!(
                "process {} ({}): its main thread has ended while others run, which this version cannot carry",
                p.pid,
                p.comm
            );
        }
    }
    tree::check_layout(record)
}

/// Refuse a CPU that lacks what the session could have acted on (`machine::cpu_verdict`:
/// its programs would die of SIGILL later, or its registers' state would be lost) unless
/// forced; name what it lacks that no process could have used as a warning.
fn check_cpu(
    record: &SessionRecord,
    info: &crate::image::ImageInfo,
    opts: &Options,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let v = cpu_verdict_here(record, info, opts.strict_cpu);
    if v.refused() && !opts.force {
        bail!(
            "{}",
            crate::machine::refusal_message(&v, record.machine.cpu_baseline)
        );
    }
    if !v.unused.is_empty() {
        warnings.push(crate::machine::unused_message(&v));
    }
    Ok(())
}

/// The CPU verdict for an image on this machine (resume's and `crterm check`'s).
pub fn cpu_verdict_here(
    record: &SessionRecord,
    info: &crate::image::ImageInfo,
    strict: bool,
) -> crate::machine::CpuVerdict {
    crate::machine::cpu_verdict(
        &info.cpu_features,
        record.machine.cpu_baseline,
        record.xsave_components_used(),
        &crate::image::ImageInfo::here().cpu_features,
        crate::machine::XsaveLayout::here().xcr0,
        strict,
    )
}

/// A run of pages free in every process of the image and in this one.
fn trampoline_address(record: &SessionRecord) -> Result<u64> {
    let len = TRAMPOLINE_PAGES * PAGE;
    let mine = own_maps();
    let busy = |a: u64| {
        let clash = |s: u64, e: u64| a < e + (1 << 20) && s < a + len + (1 << 20);
        record
            .processes
            .iter()
            .flat_map(|p| &p.maps)
            .any(|m| clash(m.start, m.end))
            || mine.iter().any(|&(s, e)| clash(s, e))
    };
    let mut a = 1u64 << 24;
    while a < 1 << 46 {
        if !busy(a) {
            return Ok(a);
        }
        a <<= 1;
    }
    bail!("no free address for the restore trampoline")
}

fn own_maps() -> Vec<(u64, u64)> {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (s, e) = l.split_whitespace().next()?.split_once('-')?;
            Some((
                u64::from_str_radix(s, 16).ok()?,
                u64::from_str_radix(e, 16).ok()?,
            ))
        })
        .collect()
}

fn map_trampoline(at: u64) -> Result<()> {
    let code = [0x0f, 0x05, 0xcc, 0xcc];
    t::map_code_page(at, TRAMPOLINE_PAGES * PAGE, &code)
        .context("cannot map the restore trampoline")
}

impl<'a> Restorer<'a> {
    pub(crate) fn scratch(&self) -> u64 {
        self.tramp + PAGE
    }

    pub(crate) fn proc(&self, pid: i32) -> &Proc<'a> {
        &self.procs[&pid]
    }

    /// Write `bytes` into process `pid`'s scratch at `off`; returns the address.
    pub(crate) fn put(&self, pid: i32, off: u64, bytes: &[u8]) -> Result<u64> {
        let at = self.scratch() + off;
        t::write_process_memory(pid, at, bytes)
            .with_context(|| format!("writing the scratch page of process {pid}"))?;
        Ok(at)
    }

    /// A NUL-terminated path in the scratch (at its upper part).
    pub(crate) fn put_path(&self, pid: i32, path: &str) -> Result<u64> {
        let mut b = path.as_bytes().to_vec();
        b.push(0);
        if b.len() as u64 > 2 * PAGE {
            bail!("path too long: {path}");
        }
        self.put(pid, PAGE, &b)
    }

    pub(crate) fn call(
        &self,
        pid: i32,
        what: &'static str,
        number: i64,
        args: &[u64],
    ) -> Result<u64> {
        let p = self.proc(pid);
        p.inj
            .call(what, number, args)
            .map_err(|e| anyhow!("process {} ({}): {e}", pid, p.rec.comm))
    }

    /// Per-process state that needs the restored memory: signal handlers, timers, umask,
    /// personality, cwd, limits, the mm fields, and the threads.
    fn restore_state(&mut self) -> Result<()> {
        let pids: Vec<i32> = self.procs.keys().copied().collect();
        for pid in pids {
            let rec = self.proc(pid).rec;
            self.set_actions(pid)?;
            self.set_itimers(pid)?;
            self.call(pid, "umask", nr::UMASK, &[rec.umask as u64])?;
            if rec.personality != 0 {
                self.call(pid, "personality", nr::PERSONALITY, &[rec.personality])?;
            }
            self.restore_mm(pid)?;
            self.set_subreaper(pid)?;
            self.set_thp_disabled(pid)?;
            self.restore_threads(pid)?;
            self.set_posix_timers(pid)?;
        }
        Ok(())
    }

    /// The last step: capabilities as they were, registers, masks, pending signals; the
    /// trampoline goes with the last injected call of each process; then every thread is
    /// let go at once.
    fn finish(&mut self) -> Result<()> {
        // Registers go back in this CPU's XSAVE layout (another CPU's offsets are moved).
        let xsave = (
            self.record.machine.xsave.clone(),
            crate::machine::XsaveLayout::here(),
        );
        let pids: Vec<i32> = self.procs.keys().copied().collect();
        let mut owned = std::collections::HashSet::new();
        let base = crate::task::sched::Baseline::here()?;
        for pid in pids {
            let rec = self.proc(pid).rec;
            // Close the transfer socket; then the process becomes who it was (a copy of
            // the init has the init's ids and capabilities).
            let x = self.xfer_fd as u64;
            self.call(pid, "close", nr::CLOSE, &[x])?;
            self.start_tracking(pid)?;
            self.set_identity(pid)?;
            self.set_owners(pid, &mut owned)?;
            self.set_sched(pid, &base)?;
            self.lock_and_seal(pid)?;
            self.queue_signals(pid)?;
            self.install_seccomp(pid)?;
            let p = self.proc(pid);
            for (th, &tid) in rec.threads.iter().zip(&p.tids).skip(1) {
                threads::set_final(tid, th, &xsave)?;
            }
            // The trampoline goes last; the main thread's registers are set at that call's
            // exit stop, so nothing of the removed page runs again.
            p.inj
                .raw(nr::MUNMAP, &[self.tramp, TRAMPOLINE_PAGES * PAGE])
                .with_context(|| format!("process {pid}: removing the trampoline"))?;
            threads::set_final(pid, &rec.threads[0], &xsave)?;
        }
        for p in self.procs.values() {
            for (th, &tid) in p.rec.threads.iter().zip(&p.tids) {
                if threads::reissues_call(th) {
                    threads::step_into_call(tid)?;
                }
            }
        }
        // Stopped jobs stopped again, then let everything go.
        self.stop_again();
        for p in self.procs.values() {
            for &tid in &p.tids {
                sys::ptrace_detach(tid, 0).with_context(|| format!("letting thread {tid} go"))?;
            }
        }
        self.procs.clear();
        Ok(())
    }
}

impl Restorer<'_> {
    /// With `Options::track` (and not lazily): process `pid`'s memory, all written, is
    /// tracked from here on (`task::memory::tracking`), by a userfaultfd it makes by an
    /// injected call, taken and closed in it. Its writes from here on (the first ones are
    /// still the restore's: a lock that brings pages in) count as written. A process the
    /// kernel will not let be tracked is read whole at the next checkpoint.
    fn start_tracking(&mut self, pid: i32) -> Result<()> {
        if !self.opts.track || self.lazy.is_some() {
            return Ok(());
        }
        use crate::task::memory::tracking::Tracker;
        const USERFAULTFD: i64 = 323;
        let flags = Tracker::FLAGS | (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
        let Ok(fd) = self.call(pid, "userfaultfd", USERFAULTFD, &[flags]) else {
            return Ok(());
        };
        let taken = t::copy_fd_of(pid, fd as i32);
        self.call(pid, "close", nr::CLOSE, &[fd])?;
        let ranges = crate::ckpt::incremental::ranges(&self.proc(pid).rec.maps);
        if let Ok(tracker) =
            taken.and_then(|uffd| Tracker::with_userfaultfd(pid, uffd, &ranges, true))
        {
            self.trackers.push((pid, tracker.into_fd()));
        }
        Ok(())
    }

    /// Send `fd` to process `pid` and put it at number `want`.
    pub(crate) fn transfer(
        &self,
        pid: i32,
        fd: BorrowedFd,
        want: i32,
        cloexec: bool,
    ) -> Result<()> {
        let got = self.receive(pid, fd)?;
        self.place(pid, got, want, cloexec)
    }

    /// Send `fd` to process `pid`; the number it got there.
    pub(crate) fn receive(&self, pid: i32, fd: BorrowedFd) -> Result<i32> {
        sys::send_with_fd(self.xfer.as_fd(), b"f", fd).context("sending a descriptor")?;
        let base = self.scratch() + 3 * PAGE - 512;
        let (iov, buf, control) = (base + 64, base + 128, base + 192);
        let mut msg = [0u64; 7];
        msg[2] = iov;
        msg[3] = 1;
        msg[4] = control;
        msg[5] = 24;
        let mut bytes: Vec<u8> = msg.iter().flat_map(|w| w.to_le_bytes()).collect();
        bytes.resize(64, 0);
        bytes.extend_from_slice(&buf.to_le_bytes());
        bytes.extend_from_slice(&8u64.to_le_bytes());
        t::write_process_memory(pid, base, &bytes)?;
        t::write_process_memory(pid, control, &[0u8; 24])?;
        self.call(pid, "recvmsg", nr::RECVMSG, &[self.xfer_fd as u64, base, 0])?;
        let mut got = [0u8; 4];
        sys::read_process_memory(pid, control + 16, &mut got)?;
        Ok(i32::from_le_bytes(got))
    }

    /// Move descriptor `got` of process `pid` to `want`.
    pub(crate) fn place(&self, pid: i32, got: i32, want: i32, cloexec: bool) -> Result<()> {
        if got != want {
            let flags = if cloexec { libc::O_CLOEXEC as u64 } else { 0 };
            self.call(pid, "dup3", nr::DUP3, &[got as u64, want as u64, flags])?;
            self.call(pid, "close", nr::CLOSE, &[got as u64])?;
        } else if cloexec {
            self.call(pid, "fcntl", 72, &[got as u64, libc::F_SETFD as u64, 1])?;
        }
        Ok(())
    }
}
