//! The session's world: its own pid, mount, IPC and UTS namespaces (and a user namespace
//! for a user without privileges), a private devpts instance, and crterm's init as pid 1.
//!
//! The daemon clones the init straight into the new namespaces. The init mounts a fresh
//! devpts (so every pty of the session is numbered from 0 inside it), opens the session's
//! pty there, hands the master to the daemon over a SOCK_SEQPACKET pair, starts the
//! command as a session leader with the pty as its controlling terminal, and then reaps
//! orphans until the command ends. When pid 1 exits the kernel ends everything left in the
//! namespace, so a session never leaves processes behind. Later the same init is the
//! in-namespace agent that recreates processes with exact pids on restore.

use crate::image::Image;
use crate::records::SessionRecord;
use crate::restore;
use crate::sys::{self, Forked, WinSize};
use anyhow::{Context, Result, anyhow, bail};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

pub struct World {
    /// The init's pid as the daemon sees it.
    pub init_pid: i32,
    /// The master side of the session's pty.
    pub master: OwnedFd,
    /// The daemon's end of the control channel to the init.
    pub control: OwnedFd,
    /// A resume's write trackers: (pid in the session, userfaultfd), for the daemon's
    /// `Tracking` (`Tracking::adopt`).
    pub trackers: Vec<(i32, OwnedFd)>,
    /// What a resume could not put back exactly (one line each).
    pub warnings: Vec<String>,
    /// The session runs in a user namespace of its own mapping this (uid, gid) to
    /// themselves.
    pub user_namespace: Option<(u32, u32)>,
    /// A lazy resume's memory is still coming in: the init says `filled` on the control
    /// channel when it is all in.
    pub filling: bool,
}

impl World {
    /// The next message the init left on the control channel, waiting up to `ms`.
    fn control_message(&self, ms: i32) -> Option<String> {
        let mut fds = [libc::pollfd {
            fd: self.control.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if sys::poll(&mut fds, ms).unwrap_or(0) == 0 || fds[0].revents & libc::POLLIN == 0 {
            return None;
        }
        let mut buf = [0u8; 4096];
        let n = sys::read(self.control.as_fd(), &mut buf)
            .ok()
            .filter(|&n| n > 0)?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Why the init ended the session, if it said so (a lazy resume whose serving failed
    /// after the session ran): what it left on the control channel.
    pub fn last_word(&self) -> Option<String> {
        while let Some(said) = self.control_message(0) {
            if let Some(why) = said.strip_prefix("err ") {
                return Some(why.to_string());
            }
        }
        None
    }

    /// Wait up to `limit` for a lazy resume's memory to be all in (a checkpoint reads all
    /// of it, and a mapping still registered for missing pages looks like a program's
    /// own userfaultfd).
    pub fn wait_filled(&mut self, limit: std::time::Duration) -> Result<(), String> {
        if !self.filling {
            return Ok(());
        }
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            let left = limit.saturating_sub(start.elapsed()).as_millis() as i32;
            let Some(said) = self.control_message(left.max(1)) else {
                continue;
            };
            if said == "filled" {
                self.filling = false;
                return Ok(());
            }
            return Err(said.strip_prefix("err ").unwrap_or(&said).to_string());
        }
        Err("the session's memory is still coming in from the image it was resumed from (a lazy resume); try again in a moment".into())
    }
}

/// A user namespace for the session: `uid` and `gids` mapped to themselves. An ordinary
/// user's (`setgroups` denied, as the kernel requires of one); or one root makes to
/// resume another user's session as it ran (its groups mapped, and settable).
struct UserNamespace {
    uid: u32,
    /// The primary group, and every group mapped (it among them).
    gid: u32,
    gids: Vec<u32>,
    deny_setgroups: bool,
}

/// An ordinary user's session runs in a user namespace of its own; root's does not.
fn own_user_namespace() -> Option<UserNamespace> {
    (sys::geteuid() != 0).then(|| UserNamespace {
        uid: sys::geteuid(),
        gid: sys::getegid(),
        gids: vec![sys::getegid()],
        deny_setgroups: true,
    })
}

/// Start `argv` in a new world with a pty of `size`. Errors say what failed: a mount, the
/// pty, or running the command (`cannot run 'x': No such file or directory`).
///
/// Must be called while the process is single-threaded (it forks).
pub fn spawn(argv: &[String], size: WinSize) -> Result<World> {
    if argv.is_empty() {
        bail!("no command to run");
    }
    let c_argv: Vec<CString> = argv
        .iter()
        .map(|a| sys::cstring(a))
        .collect::<std::io::Result<_>>()
        .context("command line")?;
    build(own_user_namespace(), |control| {
        init_main(control, &c_argv, size)
    })
}

/// Bring the session in `record` (pages and files in `image`) back in a new world. The
/// init inherits the image already in memory (a fork shares it without a copy). Who may
/// resume what (`restore::check_identity`) is checked before.
///
/// Must be called while the process is single-threaded (it forks).
pub fn resume(
    record: &SessionRecord,
    image: &Image,
    ancestors: &[crate::load::Ancestor],
    opts: &restore::Options,
) -> Result<World> {
    // Root resuming a session that ran in a user namespace gives it one again (its
    // capabilities were that namespace's), with its groups.
    let userns = match (own_user_namespace(), record.user_namespace) {
        (None, Some((uid, gid))) => {
            let mut gids = vec![gid];
            for p in record.processes.iter().filter(|p| p.zombie.is_none()) {
                gids.extend(p.groups.iter().copied().chain(p.gids));
            }
            gids.sort_unstable();
            gids.dedup();
            Some(UserNamespace {
                uid,
                gid,
                gids,
                deny_setgroups: false,
            })
        }
        (own, _) => own,
    };
    build(userns, |control| {
        init_resume(control, record, image, ancestors, opts)
    })
}

/// Clone the init into new namespaces; it runs `init` and answers "ok" with the session's
/// pty master, or "err <why>".
fn build(
    userns: Option<UserNamespace>,
    init: impl FnOnce(OwnedFd) -> std::convert::Infallible,
) -> Result<World> {
    let unprivileged = userns.is_some();
    let (control, control_child) = sys::seqpacket_pair().context("socketpair")?;
    let (sync_r, sync_w) = sys::pipe().context("pipe")?;
    // An IPC namespace of its own, so that the session's SysV objects are told apart
    // from the host's (and never outlive the session).
    // A UTS namespace: the host name the programs see goes with the session.
    let mut flags =
        libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    if unprivileged {
        flags |= libc::CLONE_NEWUSER;
    }
    // SAFETY: the daemon is single-threaded when it builds the world.
    match unsafe { sys::fork_into(flags) }.context("cannot create the session's namespaces")? {
        Forked::Child => {
            drop(control);
            drop(sync_w);
            // Wait until the parent has written our uid/gid maps (EOF or one byte).
            let mut b = [0u8; 1];
            let _ = sys::read(sync_r.as_fd(), &mut b);
            drop(sync_r);
            // The init holds nothing of the daemon's but its control channel (fork keeps
            // close-on-exec descriptors: the daemon's listener, the client's ready pipe).
            let control = match sys::move_fd(control_child, 3) {
                Ok(c) => c,
                Err(_) => sys::exit_now(127),
            };
            sys::close_fds_from(4);
            // The init never returns (its result type has no values).
            #[allow(unreachable_code)]
            match init(control) {}
        }
        Forked::Parent(pid) => {
            drop(control_child);
            drop(sync_r);
            let kill_child = |e: anyhow::Error| {
                let _ = sys::kill(pid, libc::SIGKILL);
                let _ = sys::wait(pid, true);
                e
            };
            if let Some(ns) = &userns {
                write_id_maps(pid, ns).map_err(kill_child)?;
            }
            drop(sync_w);
            let mut buf = vec![0u8; 1 << 16];
            // A resume's write trackers come first (`track PID` with the userfaultfd).
            let mut trackers = Vec::new();
            let (answer, master) = loop {
                let (n, fd) = sys::recv_with_fd(control.as_fd(), &mut buf)
                    .map_err(|e| kill_child(anyhow!("the session's init did not answer: {e}")))?;
                let said = String::from_utf8_lossy(&buf[..n]).into_owned();
                match (
                    said.strip_prefix("track ")
                        .and_then(|p| p.parse::<i32>().ok()),
                    fd,
                ) {
                    (Some(pid), Some(fd)) => trackers.push((pid, fd)),
                    (_, fd) => break (said, fd),
                }
            };
            match (answer.strip_prefix("ok"), master) {
                (Some(rest), Some(master)) => {
                    // "ok" or "ok lazy" (memory still coming in), then the warnings.
                    let mut lines = rest.lines();
                    let filling = lines.next() == Some(" lazy");
                    Ok(World {
                        init_pid: pid,
                        master,
                        control,
                        user_namespace: userns.as_ref().map(|ns| (ns.uid, ns.gid)),
                        warnings: lines.filter(|l| !l.is_empty()).map(String::from).collect(),
                        filling,
                        trackers,
                    })
                }
                _ => {
                    let msg = answer.strip_prefix("err ").unwrap_or(&answer).to_string();
                    Err(kill_child(anyhow!(if msg.is_empty() {
                        "the session's init failed".to_string()
                    } else {
                        msg
                    })))
                }
            }
        }
    }
}

fn write_id_maps(pid: i32, ns: &UserNamespace) -> Result<()> {
    let w = |file: &str, text: String| {
        std::fs::write(format!("/proc/{pid}/{file}"), text)
            .with_context(|| format!("cannot write /proc/{pid}/{file} for the user namespace"))
    };
    if ns.deny_setgroups {
        w("setgroups", "deny".into())?;
    }
    w("uid_map", format!("{0} {0} 1\n", ns.uid))?;
    let gids: String = ns.gids.iter().map(|g| format!("{g} {g} 1\n")).collect();
    w("gid_map", gids)?;
    Ok(())
}

/// Tell the daemon why the init cannot go on, and end (with pid 1, everything in the
/// namespace ends).
fn init_fail(control: &OwnedFd, msg: String) -> ! {
    let _ = sys::write(control.as_fd(), format!("err {msg}").as_bytes());
    sys::exit_now(127)
}

/// What every init does first: die with the daemon, take its name, make its mounts.
fn init_setup(control: &OwnedFd) {
    let _ = sys::prctl_set_pdeathsig(libc::SIGKILL);
    sys::prctl_set_name(c"crterm-init");
    if let Err(e) = private_mounts() {
        init_fail(control, format!("{e:#}"));
    }
}

/// pid 1 of the session. Never returns.
fn init_main(control: OwnedFd, argv: &[CString], size: WinSize) -> ! {
    let fail = |msg: String| -> ! { init_fail(&control, msg) };
    init_setup(&control);
    let (master, n) = match sys::open_pty_master() {
        Ok(m) => m,
        Err(e) => fail(format!("cannot open a pty in the session's devpts: {e}")),
    };
    let _ = sys::set_winsize(master.as_fd(), size);
    let slave_path = CString::new(format!("/dev/pts/{n}")).expect("no NUL");
    let (exec_r, exec_w) = match sys::pipe() {
        Ok(p) => p,
        Err(e) => fail(format!("pipe: {e}")),
    };
    // SAFETY: this process is single-threaded (a fresh clone of the daemon).
    let child = match unsafe { sys::fork() } {
        Ok(Forked::Child) => {
            drop(exec_r);
            let err = exec_command(&slave_path, argv, &exec_w);
            let code = err.raw_os_error().unwrap_or(libc::EIO);
            let _ = sys::write(exec_w.as_fd(), &code.to_le_bytes());
            sys::exit_now(127)
        }
        Ok(Forked::Parent(pid)) => pid,
        Err(e) => fail(format!("fork: {e}")),
    };
    drop(exec_w);
    let mut code = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match sys::read(exec_r.as_fd(), &mut code[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    if got == 4 {
        let err = std::io::Error::from_raw_os_error(i32::from_le_bytes(code));
        let name = argv[0].to_string_lossy();
        fail(format!("cannot run '{name}': {err}"));
    }
    if let Err(e) = sys::send_with_fd(control.as_fd(), b"ok", master.as_fd()) {
        fail(format!("cannot hand the pty to the daemon: {e}"));
    }
    drop(master);
    reap_until(child)
}

/// pid 1 of a resumed session: restore it, hand the pty to the daemon, then reap like
/// the init of a started session. Never returns; on failure it exits, and the kernel ends
/// everything it had made (they are all in its pid namespace).
fn init_resume(
    control: OwnedFd,
    record: &SessionRecord,
    image: &Image,
    ancestors: &[crate::load::Ancestor],
    opts: &restore::Options,
) -> ! {
    let fail = |msg: String| -> ! { init_fail(&control, msg) };
    init_setup(&control);
    // The copies of the init that become restored processes must not carry the image
    // along (a fork would copy its page tables, and each copy unmap it again).
    for s in &image.sections {
        if s.stored.len() > 1 << 20 {
            sys::trace::dont_fork(&s.stored);
        }
    }
    // The session's clocks go on from where they were: every process made from here on
    // is in a time namespace whose offsets make up for the time the session was away
    // (and for another boot).
    if !opts.real_clock {
        let mono = record.monotonic_ns - sys::clock_ns(libc::CLOCK_MONOTONIC);
        let boot = record.boottime_ns - sys::clock_ns(libc::CLOCK_BOOTTIME);
        if let Err(e) = sys::new_time_namespace(mono, boot) {
            fail(format!(
                "resume failed: cannot give the session its clocks back (a time namespace): {e}; `--clock real` resumes with the host's clocks"
            ));
        }
    }
    // The host name the programs saw, unless `--hostname real`.
    if !opts.real_hostname
        && !record.machine.hostname.is_empty()
        && let Err(e) = sys::sethostname(&record.machine.hostname)
    {
        fail(format!(
            "resume failed: cannot give the session its host name back: {e}; `--hostname real` resumes with this machine's"
        ));
    }
    // The session's SysV objects, before any process that attaches or uses them.
    if let Err(e) = crate::sysv::make_objects(&record.sysv) {
        fail(format!("resume failed: {e:#}"));
    }
    // Serving a lazy resume's memory can fail after the session runs (the image changed
    // under it): then the init ends, and every process with it.
    let control_fd = control.as_raw_fd();
    let fatal: crate::task::memory::lazy::Fatal = std::sync::Arc::new(move |why: String| {
        // SAFETY: the init keeps its control channel open until it exits.
        let control = unsafe { std::os::fd::BorrowedFd::borrow_raw(control_fd) };
        let _ = sys::write(control, format!("err resume failed: {why}").as_bytes());
        sys::exit_now(127)
    });
    // Once a lazy resume's memory is all in, the daemon is told (it waits for that before
    // a checkpoint).
    let filled: crate::task::memory::lazy::Done = std::sync::Arc::new(move || {
        // SAFETY: as above.
        let control = unsafe { std::os::fd::BorrowedFd::borrow_raw(control_fd) };
        let _ = sys::write(control, b"filled");
    });
    let restored = match restore::restore(record, image, ancestors, opts, fatal, filled) {
        Ok(r) => r,
        Err(e) => fail(format!("resume failed: {e:#}")),
    };
    if let Err(e) = crate::sysv::remove_destroyed(&record.sysv) {
        fail(format!("resume failed: {e:#}"));
    }
    let Some(master) = restored.masters.get(&0) else {
        fail("resume failed: no pty for the session".into())
    };
    let mut answer = String::from(if restored.lazy.is_some() {
        "ok lazy"
    } else {
        "ok"
    });
    for w in &restored.warnings {
        answer.push('\n');
        answer.push_str(w);
    }
    // The write trackers first, one a message (`track PID`, with its userfaultfd), then
    // the answer.
    for (pid, uffd) in &restored.trackers {
        if let Err(e) = sys::send_with_fd(
            control.as_fd(),
            format!("track {pid}").as_bytes(),
            uffd.as_fd(),
        ) {
            fail(format!("cannot hand a write tracker to the daemon: {e}"));
        }
    }
    if let Err(e) = sys::send_with_fd(control.as_fd(), answer.as_bytes(), master.as_fd()) {
        fail(format!("cannot hand the pty to the daemon: {e}"));
    }
    // The session runs: what a lazy resume has not served yet is copied in behind it.
    if let Some(server) = &restored.lazy {
        server.fill(2);
    }
    drop(restored);
    // The session's command: the first process the init made (the lowest pid whose
    // parent was the init).
    let pids: std::collections::BTreeSet<i32> = record.processes.iter().map(|p| p.pid).collect();
    let command = record
        .processes
        .iter()
        .filter(|p| !pids.contains(&p.ppid) && p.zombie.is_none())
        .map(|p| p.pid)
        .min()
        .unwrap_or(2);
    reap_until(command)
}

/// Make this mount namespace's mounts private, then give it its own devpts (and /dev/ptmx
/// leading there) and, where the kernel allows it, a /proc showing the session's pids.
fn private_mounts() -> Result<()> {
    sys::mount(
        c"none",
        c"/",
        None,
        (libc::MS_REC | libc::MS_PRIVATE) as libc::c_ulong,
        None,
    )
    .map_err(|e| {
        if e.raw_os_error() == Some(libc::EINVAL) {
            // A chroot whose root is a plain directory.
            anyhow!("cannot make the session's mounts private: / is not a mount point (in a chroot, bind-mount its root onto itself first)")
        } else {
            anyhow!("cannot make the session's mounts private: {e}")
        }
    })?;
    sys::mount(
        c"devpts",
        c"/dev/pts",
        Some(c"devpts"),
        (libc::MS_NOSUID | libc::MS_NOEXEC) as libc::c_ulong,
        Some(c"newinstance,ptmxmode=0666,mode=0620"),
    )
    .context("cannot mount a private devpts on /dev/pts")?;
    sys::mount(
        c"/dev/pts/ptmx",
        c"/dev/ptmx",
        None,
        libc::MS_BIND as libc::c_ulong,
        None,
    )
    .context("cannot bind /dev/pts/ptmx over /dev/ptmx")?;
    // A /proc for the new pid namespace; where the kernel refuses (a /proc with parts
    // masked by a container runtime), the host's /proc stays and ps shows host pids.
    let _ = sys::mount(
        c"proc",
        c"/proc",
        Some(c"proc"),
        (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC) as libc::c_ulong,
        None,
    );
    Ok(())
}

/// In the command's process: become a session leader on the pty and exec. Returns only
/// the error that stopped it.
fn exec_command(slave_path: &CString, argv: &[CString], keep: &OwnedFd) -> std::io::Error {
    sys::reset_signals();
    if let Err(e) = sys::setsid() {
        return e;
    }
    let slave = match sys::open(slave_path, libc::O_RDWR) {
        Ok(s) => s,
        Err(e) => return e,
    };
    if let Err(e) = sys::set_controlling_tty(slave.as_fd()) {
        return e;
    }
    for fd in 0..3 {
        if let Err(e) = sys::dup2(slave.as_raw_fd(), fd) {
            return e;
        }
    }
    // The exec-error pipe is close-on-exec; everything else above 2 goes now.
    let keep_fd = keep.as_raw_fd();
    let moved = 3;
    if keep_fd != moved {
        let _ = sys::dup2(keep_fd, moved);
    }
    let _ = sys::set_cloexec(unsafe { std::os::fd::BorrowedFd::borrow_raw(moved) }, true);
    sys::close_fds_from(moved + 1);
    let err = sys::execvp(argv);
    // Report through fd 3, where the pipe now is.
    let code = err.raw_os_error().unwrap_or(libc::EIO);
    let _ = sys::write(
        unsafe { std::os::fd::BorrowedFd::borrow_raw(moved) },
        &code.to_le_bytes(),
    );
    sys::exit_now(127)
}

/// Reap every child (orphans of the session end up here) until the command itself ends,
/// then exit with its status, which ends the whole namespace.
fn reap_until(command: i32) -> ! {
    loop {
        match sys::wait(-1, true) {
            Ok(Some((pid, status))) if pid == command => sys::exit_now(status.code()),
            Ok(_) => {}
            Err(_) => sys::exit_now(1),
        }
    }
}
