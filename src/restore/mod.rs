//! Restoring a session from an image, run by the session's init (pid 1 of a fresh pid
//! namespace) in `crterm resume`.
//!
//! Every restored process starts as a copy of the init: the init clones the processes
//! whose parent was pid 1 with their exact pids (clone3 `set_tid`), and each of those is
//! made to clone its own children the same way, by injected calls, so parents, sessions and
//! process groups come out as they were. The init then traces them all and reshapes each
//! one from outside (`crate::inject`): its descriptors arrive over a unix socket every copy
//! inherits, its memory is unmapped and mapped again at the recorded addresses and filled
//! with process_vm_writev, its signal handlers, timers, threads (clone3 again, with their
//! tids), registers and masks are set, and the last injected call removes the trampoline
//! page the calls ran from. Then all threads are let go together.
//!
//! Order (`restore`): ptys → trampoline → processes, sessions, groups, terminals, each
//! process's memory as it is made, before its children, so that what a child shares
//! copy-on-write with its parent comes to it by the fork (`tree`, `memory`) → descriptors (`crate::fds`, one module per kind) → memory (`memory`) → per-process state and threads →
//! registers → detach. Any error ends the init, and with it (pid 1 of the namespace)
//! everything it created.

mod creds;
pub use crate::fds::files::check_open_files;
pub use creds::{Resumer, check_identity};
mod memory;
pub use memory::mapped_file_here;
mod tree;

use crate::image::Image;
use crate::inject::{Injector, nr};
use crate::records::{ProcessRecord, SessionRecord, signal_of};
use crate::sys::{self, trace as t};
use anyhow::{Context, Result, anyhow, bail};
use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// The trampoline: a page with `syscall; int3`, then scratch pages for the calls' data.
const TRAMPOLINE_PAGES: u64 = 4;
const PAGE: u64 = 4096;
/// The highest user address on x86_64 with 4-level page tables.
const TASK_SIZE: u64 = 0x7fff_ffff_f000;

/// Options for every traced task of the restore: the processes and threads they are made
/// to create are traced too (and stop before running anything).
const TRACE_CHILDREN: i32 = libc::PTRACE_O_TRACEFORK | libc::PTRACE_O_TRACECLONE;

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
    /// The restore may set ids (root resumes, and `check_identity` allowed the image):
    /// processes get their recorded groups and ids, and their files are made as them.
    pub set_ids: bool,
}

/// The result: the masters of the session's ptys by number (0 is the session's own).
pub struct Restored {
    pub masters: BTreeMap<u32, OwnedFd>,
    /// Things that could not be put back exactly, for the user to know.
    pub warnings: Vec<String>,
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
}

/// Files made again by (device (major, minor), inode).
type DeletedFiles = std::collections::HashMap<((u32, u32), u64), std::rc::Rc<OwnedFd>>;

/// Restore the session in `record` (with its pages and files in `image`).
pub fn restore(record: &SessionRecord, image: &Image, opts: &Options) -> Result<Restored> {
    check_supported(record)?;
    let mut warnings = Vec::new();
    check_cpu(record, &image.info, opts, &mut warnings)?;
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
    };
    r.check_file_policy()?;
    // Each process's memory is made as the process is, a parent's before its children.
    r.create_tree(xfer_child.as_raw_fd())?;
    drop(xfer_child);
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
    })
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
            for sig in crate::ckpt::inside::handled_signals() {
                let act = rec
                    .sigactions
                    .get(sig as usize - 1)
                    .copied()
                    .unwrap_or([0; 4]);
                let bytes: Vec<u8> = act.iter().flat_map(|w| w.to_le_bytes()).collect();
                let at = self.put(pid, 0, &bytes)?;
                self.call(pid, "rt_sigaction", nr::RT_SIGACTION, &[sig, at, 0, 8])?;
            }
            for (which, it) in rec.itimers.iter().enumerate().take(3) {
                if it.iter().any(|&w| w != 0) {
                    let bytes: Vec<u8> = it.iter().flat_map(|w| w.to_le_bytes()).collect();
                    let at = self.put(pid, 0, &bytes)?;
                    self.call(pid, "setitimer", nr::SETITIMER, &[which as u64, at, 0])?;
                }
            }
            self.call(pid, "umask", nr::UMASK, &[rec.umask as u64])?;
            if rec.personality != 0 {
                self.call(pid, "personality", nr::PERSONALITY, &[rec.personality])?;
            }
            self.restore_mm(pid)?;
            self.restore_threads(pid)?;
            self.restore_timers(pid)?;
        }
        Ok(())
    }

    /// POSIX timers with their ids (PR_TIMER_CREATE_RESTORE_IDS), targets and time left.
    fn restore_timers(&mut self, pid: i32) -> Result<()> {
        let rec = self.proc(pid).rec;
        if rec.timers.is_empty() {
            return Ok(());
        }
        const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;
        const TIMER_CREATE: i64 = 222;
        const TIMER_SETTIME: i64 = 223;
        let exact = self
            .call(
                pid,
                "prctl(PR_TIMER_CREATE_RESTORE_IDS)",
                nr::PRCTL,
                &[PR_TIMER_CREATE_RESTORE_IDS, 1],
            )
            .is_ok();
        let mut timers = rec.timers.clone();
        timers.sort_by_key(|t| t.id);
        for tm in &timers {
            // struct sigevent: value, signo, notify, tid (64 bytes).
            let mut sev = tm.value.to_le_bytes().to_vec();
            sev.extend_from_slice(&tm.signo.to_le_bytes());
            sev.extend_from_slice(&tm.notify.to_le_bytes());
            sev.extend_from_slice(&tm.tid.to_le_bytes());
            sev.resize(64, 0);
            let sev_at = self.put(pid, 0, &sev)?;
            let id_at = self.put(pid, 64, &tm.id.to_le_bytes())?;
            self.call(
                pid,
                "timer_create",
                TIMER_CREATE,
                &[tm.clock as u64, sev_at, id_at],
            )?;
            let mut got = [0u8; 4];
            sys::read_process_memory(pid, id_at, &mut got)?;
            if i32::from_le_bytes(got) != tm.id {
                bail!(
                    "process {pid} ({}): timer {} came back as {}{}",
                    rec.comm,
                    tm.id,
                    i32::from_le_bytes(got),
                    if exact {
                        ""
                    } else {
                        " (this kernel cannot choose timer ids)"
                    }
                );
            }
            // Armed (time left): set again; a disarmed timer stays so.
            if tm.spec[2] != 0 || tm.spec[3] != 0 {
                let b: Vec<u8> = tm.spec.iter().flat_map(|w| w.to_le_bytes()).collect();
                let at = self.put(pid, 128, &b)?;
                self.call(
                    pid,
                    "timer_settime",
                    TIMER_SETTIME,
                    &[tm.id as u64, 0, at, 0],
                )?;
            }
        }
        if exact {
            self.call(
                pid,
                "prctl(PR_TIMER_CREATE_RESTORE_IDS)",
                nr::PRCTL,
                &[PR_TIMER_CREATE_RESTORE_IDS, 0],
            )?;
        }
        Ok(())
    }

    /// Per thread: clear-child-tid, rseq and the alternate signal stack; threads other
    /// than the main one are created here, with their tids.
    fn restore_threads(&mut self, pid: i32) -> Result<()> {
        let rec = self.proc(pid).rec;
        let main = &rec.threads[0];
        self.call(
            pid,
            "set_tid_address",
            nr::SET_TID_ADDRESS,
            &[main.clear_child_tid],
        )?;
        self.thread_extras(pid, pid, main)?;
        for th in &rec.threads[1..] {
            const CLONE_THREAD_FLAGS: u64 = (libc::CLONE_VM
                | libc::CLONE_FS
                | libc::CLONE_FILES
                | libc::CLONE_SIGHAND
                | libc::CLONE_THREAD
                | libc::CLONE_SYSVSEM) as u64;
            let mut flags = CLONE_THREAD_FLAGS;
            if th.clear_child_tid != 0 {
                flags |= libc::CLONE_CHILD_CLEARTID as u64;
            }
            let tid_at = self.put(pid, 256, &th.tid.to_le_bytes())?;
            let args: [u64; 11] = [flags, 0, th.clear_child_tid, 0, 0, 0, 0, 0, tid_at, 1, 0];
            let bytes: Vec<u8> = args.iter().flat_map(|w| w.to_le_bytes()).collect();
            let at = self.put(pid, 0, &bytes)?;
            // The init's page-decoding thread has just ended and its pid, which can be
            // this tid, is freed a moment after: EEXIST then means "try again".
            let mut tries = 0;
            let got = loop {
                match self
                    .proc(pid)
                    .inj
                    .call("clone3 (thread)", nr::CLONE3, &[at, 88])
                {
                    Ok(t) => break t as i32,
                    Err(e) if e.errno == libc::EEXIST && tries < 1000 => {
                        tries += 1;
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    Err(e) => bail!("process {pid} ({}): {e}", self.proc(pid).rec.comm),
                }
            };
            if got != th.tid {
                bail!("thread {} of process {pid} came back as {got}", th.tid);
            }
            tree::wait_new_task(got)?;
            self.procs.get_mut(&pid).expect("exists").tids.push(got);
            self.thread_extras(pid, got, th)?;
        }
        Ok(())
    }

    fn thread_extras(&self, pid: i32, tid: i32, th: &crate::records::ThreadRecord) -> Result<()> {
        let inj = Injector::new(tid, self.tramp, TRACE_CHILDREN)?;
        let fail = |e: crate::inject::CallError| anyhow!("thread {tid} of process {pid}: {e}");
        if !th.comm.is_empty() {
            let mut name = th.comm.as_bytes()[..th.comm.len().min(15)].to_vec();
            name.push(0);
            let at = self.put(pid, 192, &name)?;
            const PR_SET_NAME: u64 = 15;
            inj.call("prctl(PR_SET_NAME)", nr::PRCTL, &[PR_SET_NAME, at])
                .map_err(fail)?;
        }
        if th.robust_list.0 != 0 {
            const SET_ROBUST_LIST: i64 = 273;
            inj.call(
                "set_robust_list",
                SET_ROBUST_LIST,
                &[th.robust_list.0, th.robust_list.1],
            )
            .map_err(fail)?;
        }
        if let Some((addr, len, sig, _)) = th.rseq {
            inj.call("rseq", nr::RSEQ, &[addr, len as u64, 0, sig as u64])
                .map_err(fail)?;
        }
        if th.altstack[1] & libc::SS_DISABLE as u64 == 0 && th.altstack[0] != 0 {
            let bytes: Vec<u8> = th.altstack.iter().flat_map(|w| w.to_le_bytes()).collect();
            let at = self.put(pid, 128, &bytes)?;
            inj.call("sigaltstack", nr::SIGALTSTACK, &[at, 0])
                .map_err(fail)?;
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
        for pid in pids {
            let rec = self.proc(pid).rec;
            // Close the transfer socket; then the process becomes who it was (a copy of
            // the init has the init's ids and capabilities).
            let x = self.xfer_fd as u64;
            self.call(pid, "close", nr::CLOSE, &[x])?;
            self.set_identity(pid)?;
            self.set_owners(pid, &mut owned)?;
            self.lock_and_seal(pid)?;
            self.queue_signals(pid)?;
            let p = self.proc(pid);
            for (th, &tid) in rec.threads.iter().zip(&p.tids).skip(1) {
                set_final(tid, th, &xsave)?;
            }
            // The trampoline goes last; the main thread's registers are set at that call's
            // exit stop, so nothing of the removed page runs again.
            p.inj
                .raw(nr::MUNMAP, &[self.tramp, TRAMPOLINE_PAGES * PAGE])
                .with_context(|| format!("process {pid}: removing the trampoline"))?;
            set_final(pid, &rec.threads[0], &xsave)?;
        }
        for p in self.procs.values() {
            for (th, &tid) in p.rec.threads.iter().zip(&p.tids) {
                if reissues_call(th) {
                    step_into_call(tid)?;
                }
            }
        }
        // Stopped jobs stopped again, then let everything go.
        for (&pid, p) in &self.procs {
            // Stopped again by the signal that stopped it (its action is the default:
            // it has been stopped since): its parent's waitpid sees that signal.
            if p.rec.stopped() {
                let _ = sys::kill(pid, p.rec.stop_signal);
            }
            // A SIGSTOP queued and not yet taken (nothing can catch it, nothing sees its
            // siginfo): sent again, to the process or the thread it was queued for.
            if p.rec
                .shared_pending
                .iter()
                .any(|i| signal_of(i) == libc::SIGSTOP)
            {
                let _ = sys::kill(pid, libc::SIGSTOP);
            }
            for (th, &tid) in p.rec.threads.iter().zip(&p.tids) {
                if th.pending.iter().any(|i| signal_of(i) == libc::SIGSTOP) {
                    let _ = sys::tgkill(pid, tid, libc::SIGSTOP);
                }
            }
        }
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
    /// O_ASYNC, and who each description sends SIGIO and SIGURG to with which signal, set
    /// by its first holder, once per description: O_ASYNC registers the number it is set
    /// through (the signal's si_fd), and the owner the setter's credentials (checked
    /// against the receiver's when the kernel sends). A terminal makes its group (or the
    /// setter) the owner when O_ASYNC is set, so the owner is set after it, even none.
    fn set_owners(&self, pid: i32, owned: &mut std::collections::HashSet<u32>) -> Result<()> {
        let rec = self.proc(pid).rec;
        for f in &rec.fds {
            let async_ = f.flags as i32 & libc::O_ASYNC != 0;
            if (f.owner.1 == 0 && f.signal == 0 && !async_) || !owned.insert(f.desc) {
                continue;
            }
            let fd = f.fd as u64;
            let what = || format!("process {pid} ({}) fd {}: its owner", rec.comm, f.fd);
            if async_ {
                let flags = f.flags as i32 & (crate::fds::STATUS_FLAGS | libc::O_ASYNC);
                self.call(
                    pid,
                    "fcntl(F_SETFL)",
                    nr::FCNTL,
                    &[fd, libc::F_SETFL as u64, flags as u64],
                )
                .with_context(what)?;
            }
            if f.owner.1 != 0 || async_ {
                let bytes: Vec<u8> = [f.owner.0, f.owner.1]
                    .iter()
                    .flat_map(|w| w.to_le_bytes())
                    .collect();
                let at = self.put(pid, 0, &bytes)?;
                self.call(
                    pid,
                    "fcntl(F_SETOWN_EX)",
                    nr::FCNTL,
                    &[fd, t::F_SETOWN_EX as u64, at],
                )
                .with_context(what)?;
            }
            if f.signal != 0 {
                self.call(
                    pid,
                    "fcntl(F_SETSIG)",
                    nr::FCNTL,
                    &[fd, t::F_SETSIG as u64, f.signal as u64],
                )
                .with_context(what)?;
            }
        }
        Ok(())
    }

    /// The signals queued for process `pid` and each of its threads, in their order, each
    /// with its siginfo (sender, value, code) as it was: sent by the thread to itself
    /// (rt_tgsigqueueinfo; rt_sigqueueinfo by the main thread for the process's queue),
    /// which the kernel allows with any siginfo. Every signal is blocked meanwhile, so
    /// none is delivered before the threads get their own masks back.
    fn queue_signals(&self, pid: i32) -> Result<()> {
        const RT_SIGQUEUEINFO: i64 = 129;
        const RT_TGSIGQUEUEINFO: i64 = 297;
        let p = self.proc(pid);
        for (th, &tid) in p.rec.threads.iter().zip(&p.tids) {
            t::ptrace_set_sigmask(tid, !0)
                .with_context(|| format!("thread {tid}: blocking its signals"))?;
            let inj = Injector::new(tid, self.tramp, TRACE_CHILDREN)?;
            let queue = |info: &[u8], call: i64, args: &dyn Fn(u64, u64) -> Vec<u64>| {
                let signo = signal_of(info);
                if signo == libc::SIGSTOP {
                    // Cannot be blocked: sent when everything is let go.
                    return Ok(());
                }
                let signo = signo as u64;
                let at = self.put(pid, 0, info)?;
                inj.call("sigqueueinfo", call, &args(signo, at))
                    .map(|_| ())
                    .map_err(|e| anyhow!("thread {tid} of process {pid}: {e}"))
            };
            if tid == pid {
                for info in &p.rec.shared_pending {
                    queue(info, RT_SIGQUEUEINFO, &|s, at| vec![pid as u64, s, at])?;
                }
            }
            for info in &th.pending {
                queue(info, RT_TGSIGQUEUEINFO, &|s, at| {
                    vec![pid as u64, tid as u64, s, at]
                })?;
            }
        }
        Ok(())
    }
}

/// Whether a thread's saved registers re-issue a system call on restore.
fn reissues_call(th: &crate::records::ThreadRecord) -> bool {
    let mut regs: t::Regs = [0; 27];
    regs.copy_from_slice(&th.regs);
    crate::inject::restart_regs(regs, false) != regs
}

/// Let a thread set up to re-issue its call enter it (it runs that one `syscall`
/// instruction, and any handler of a signal pending for it first), so that it is inside
/// the call, as it was at the checkpoint, when the session goes on: a signal that comes
/// then (the SIGWINCH of the resize) interrupts the call as it would have, instead of
/// being handled just before the call starts (vim then blocks with keys it has read).
fn step_into_call(tid: i32) -> Result<()> {
    let mut pass = 0;
    for _ in 0..16 {
        t::ptrace_syscall(tid, pass)?;
        let st = t::wait_raw(tid)?;
        if !libc::WIFSTOPPED(st) {
            bail!("thread {tid} ended as it was let go");
        }
        let sig = libc::WSTOPSIG(st);
        if sig == libc::SIGTRAP | 0x80 {
            return Ok(());
        }
        // A signal for it: delivered as it would have been; event stops: go on.
        pass = if st >> 16 == 0 && sig != libc::SIGTRAP {
            sig
        } else {
            0
        };
    }
    bail!("thread {tid} did not get back into its system call")
}

/// A thread's saved registers (a call it was in is re-issued), XSAVE state and mask.
fn set_final(
    tid: i32,
    th: &crate::records::ThreadRecord,
    xsave: &(crate::machine::XsaveLayout, crate::machine::XsaveLayout),
) -> Result<()> {
    let mut regs: t::Regs = [0; 27];
    regs.copy_from_slice(&th.regs);
    let regs = crate::inject::restart_regs(regs, false);
    let xstate = xsave.0.convert(&xsave.1, &th.xstate);
    t::ptrace_set_xstate(tid, &xstate)
        .with_context(|| format!("thread {tid}: setting the FPU/AVX state"))?;
    t::ptrace_setregs(tid, &regs).with_context(|| format!("thread {tid}: setting registers"))?;
    t::ptrace_set_sigmask(tid, th.blocked_signals)
        .with_context(|| format!("thread {tid}: setting the signal mask"))?;
    Ok(())
}

impl Restorer<'_> {
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
