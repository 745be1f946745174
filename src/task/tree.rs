//! The process tree: every process with its pid, under its parent, in its session and
//! process group, with its controlling terminal and the terminal's foreground group;
//! zombies with their exit status.
//!
//! Checkpoint: the ids as the session sees them (the NS* lines of /proc/PID/status),
//! name and parent (`read_base`, every record's start), a zombie's exit status
//! (`read_zombie`); `check_layout` says at checkpoint which sessions and groups a resume
//! can make again (helpers stand in for leaders that are gone).
//!
//! Resume: the init clones the processes whose parent was pid 1 with their exact pids
//! (clone3 `set_tid`), each of those clones its own children the same way by injected
//! calls, each one's memory made as it is made (`crate::task::memory`), so what a child
//! shares copy-on-write with its parent comes to it by the fork (`create_tree`); sessions,
//! groups, terminals and the foreground group are set; zombies exit with their status.

use crate::fds::ttys::pts_number;
use crate::inject::{Injector, nr};
use crate::records::ProcessRecord;
use crate::restore::{Proc, Restorer, TRACE_CHILDREN};
use crate::sys::{self, trace as t};
use anyhow::{Context, Result, anyhow, bail};
use std::collections::BTreeSet;
use std::io;

// ---- checkpoint ----------------------------------------------------------------------

/// What every record holds, a zombie's too: the ids as the session sees them and the
/// name; everything else empty. An id that cannot be read fails it.
pub(crate) fn read_base(pid: i32, status: &str) -> io::Result<ProcessRecord> {
    let field = |text: &str, key: &str| {
        crate::ckpt::procfs::status_last(text, key)
            .ok_or_else(|| io::Error::other(format!("process {pid}: no {key} in its /proc status")))
    };
    // The parent's id as the session sees it.
    let host_ppid = field(status, "PPid:")?;
    let parent = std::fs::read_to_string(format!("/proc/{host_ppid}/status"))
        .map_err(|e| io::Error::other(format!("process {pid}: its parent's status: {e}")))?;
    Ok(ProcessRecord {
        pid: field(status, "NSpid:")?,
        ppid: field(&parent, "NSpid:")?,
        pgid: field(status, "NSpgid:")?,
        sid: field(status, "NSsid:")?,
        comm: std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map_err(|e| io::Error::other(format!("process {pid}: its name: {e}")))?
            .trim_end()
            .to_string(),
        cmdline: Vec::new(),
        exe: String::new(),
        cwd: String::new(),
        stop_signal: 0,
        zombie: None,
        shared_pending: Vec::new(),
        ignored_signals: 0,
        caught_signals: 0,
        sigactions: Vec::new(),
        itimers: Vec::new(),
        timers: Vec::new(),
        mm: crate::records::MmRecord::default(),
        root: String::new(),
        umask: 0o022,
        personality: 0,
        dumpable: true,
        rlimits: Vec::new(),
        caps: [0; 5],
        uids: crate::ckpt::procfs::status_words::<4>(status, "Uid:", false).map(|v| v as u32),
        gids: crate::ckpt::procfs::status_words::<4>(status, "Gid:", false).map(|v| v as u32),
        groups: crate::ckpt::procfs::status_list(status, "Groups:"),
        no_new_privs: false,
        xcomp_perm: 0,
        pdeath_signal: 0,
        ksm_merge_any: false,
        lock_future: 0,
        child_subreaper: false,
        oom_score_adj: 0,
        thp_disabled: false,
        seccomp: Vec::new(),
        ctty: 0,
        fg_pgid: 0,
        threads: Vec::new(),
        maps: Vec::new(),
        fds: Vec::new(),
        inherited: Vec::new(),
    })
}

/// A zombie: its ids and the exit status it holds (`/proc/PID/stat` field 52).
pub(crate) fn read_zombie(pid: i32) -> io::Result<ProcessRecord> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let exit_code = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(49))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            io::Error::other(format!(
                "zombie {pid}: its exit status is not in /proc/{pid}/stat as the kernel writes it"
            ))
        })?;
    Ok(ProcessRecord {
        zombie: Some(exit_code),
        ..read_base(pid, &status)?
    })
}

// ---- resume --------------------------------------------------------------------------

/// A process that stands in for a session or group leader that is gone.
struct Helper {
    pid: i32,
    /// The helper that made it (a group's helper is its session's helper's child).
    parent: Option<i32>,
    inj: Injector,
}

/// Sessions and groups the tree can be made in again, checked on the record alone (at
/// checkpoint, by `crterm check`, before a resume): a process is made by its parent (or,
/// when that is gone, by a helper of its session or the init), so it is in its parent's
/// session unless it leads its own; a group whose leader is gone needs a helper, which
/// can only be made in a session whose leader is gone too.
pub(crate) fn check_layout(record: &crate::records::SessionRecord) -> Result<()> {
    let find = |pid: i32| record.processes.iter().find(|p| p.pid == pid);
    for p in &record.processes {
        if p.sid != p.pid
            && let Some(parent) = find(p.ppid)
            && parent.sid != p.sid
        {
            bail!(
                "process {} ({}) is in session {}, whose leader is not its ancestor (its parent's is {}), which this version cannot carry",
                p.pid,
                p.comm,
                p.sid,
                parent.sid
            );
        }
        // A zombie is made last, when the helpers are gone: its group must be one a live
        // process of the image is in (or its parent's, or its own).
        if p.zombie.is_some() {
            let group_lives = record
                .processes
                .iter()
                .any(|q| q.zombie.is_none() && q.pgid == p.pgid);
            if p.pgid != p.pid && !group_lives {
                bail!(
                    "process {} ({}) is a zombie in group {}, in which nothing lives any more, which this version cannot carry",
                    p.pid,
                    p.comm,
                    p.pgid
                );
            }
            continue;
        }
        // A zombie is made after everything else: a live process cannot be put in its
        // session or group then.
        let zombie = |id: i32| find(id).is_some_and(|l| l.zombie.is_some());
        for (what, id) in [("session", p.sid), ("group", p.pgid)] {
            if id != p.pid && zombie(id) {
                bail!(
                    "process {} ({}) is in {what} {id}, whose leader is a zombie, which this version cannot carry",
                    p.pid,
                    p.comm
                );
            }
        }
    }
    Ok(())
}

/// A helper in a session whose leader lives (`Restorer::live_helper`).
struct LiveHelper {
    pid: i32,
    sid: i32,
    /// The group it leads (its leader is gone), or none: it is in the session leader's.
    group: Option<i32>,
    inj: Injector,
}

/// End the helpers in sessions whose leader lives: each ends, and the init, its tracer,
/// takes its status (`raw` does when the call ends the process); its parent, the
/// leader, ignores SIGCHLD, so it is gone then, and the leader was never told.
fn end_live_helpers(helpers: Vec<LiveHelper>) {
    for h in helpers {
        let _ = h.inj.raw(nr::EXIT_GROUP, &[0]);
        let _ = sys::wait(h.pid, true);
    }
}

/// End the helpers: group helpers first, reaped by their session helper, then the session
/// helpers, reaped by the init (whose children the members become).
fn end_helpers(helpers: Vec<Helper>) -> Result<()> {
    let (groups, sessions): (Vec<Helper>, Vec<Helper>) =
        helpers.into_iter().partition(|h| h.parent.is_some());
    for g in groups {
        // The call does not return: the helper ends (its trace status is taken).
        let _ = g.inj.raw(nr::EXIT_GROUP, &[0]);
        let parent = g.parent.expect("a group helper has a parent");
        if let Some(s) = sessions.iter().find(|s| s.pid == parent) {
            const WAIT4: i64 = 61;
            s.inj
                .call("wait4", WAIT4, &[g.pid as u64, 0, 0, 0])
                .map_err(|e| anyhow!("helper {parent} reaping helper {}: {e}", g.pid))?;
        }
    }
    for s in sessions {
        let _ = s.inj.raw(nr::EXIT_GROUP, &[0]);
        let _ = sys::wait(s.pid, true);
    }
    Ok(())
}

/// Wait for the first stop of a task the kernel attached to us (a traced process's child
/// or thread), or of one we interrupted.
pub fn wait_new_task(tid: i32) -> Result<()> {
    let status = t::wait_raw(tid).with_context(|| format!("waiting for task {tid}"))?;
    if !libc::WIFSTOPPED(status) {
        bail!("task {tid} ended as it was being created");
    }
    Ok(())
}

impl<'a> Restorer<'a> {
    /// Create every process of the image. `xfer_child` is the number the transfer socket
    /// has in this process (and so in each fresh copy).
    pub(crate) fn create_tree(&mut self, xfer_child: i32) -> Result<()> {
        let record = self.record;
        let pids: BTreeSet<i32> = record.processes.iter().map(|p| p.pid).collect();
        let live = |id: i32| {
            record
                .processes
                .iter()
                .any(|p| p.pid == id && p.zombie.is_none())
        };
        // Parents before children: those whose parent is not in the image (the init's own
        // children) first, each followed by its descendants. Of those, the ones in a
        // session whose leader lives (and is another process) come after the rest, from a
        // helper the leader makes, once the leader is made.
        let subtree = |root: &'a ProcessRecord| {
            let mut order: Vec<&'a ProcessRecord> = Vec::new();
            let mut stack = vec![root];
            while let Some(p) = stack.pop() {
                order.push(p);
                let mut kids: Vec<&ProcessRecord> = record
                    .processes
                    .iter()
                    .filter(|c| c.ppid == p.pid)
                    .collect();
                kids.sort_by_key(|c| std::cmp::Reverse(c.pid));
                stack.extend(kids);
            }
            order
        };
        let (mut late, early): (Vec<&'a ProcessRecord>, Vec<&'a ProcessRecord>) = record
            .processes
            .iter()
            .filter(|p| !pids.contains(&p.ppid) && p.zombie.is_none())
            .partition(|p| p.sid != p.pid && live(p.sid));
        let mut zombies: Vec<&ProcessRecord> = Vec::new();
        let helpers = self.make_helpers(xfer_child)?;
        let mut in_live_sessions: Vec<LiveHelper> = Vec::new();
        for root in early {
            for rec in subtree(root) {
                if rec.zombie.is_some() {
                    zombies.push(rec);
                    continue;
                }
                let from_parent = pids.contains(&rec.ppid);
                if from_parent {
                    self.fork_in_parent(rec)?;
                } else if let Some(h) = helpers.iter().find(|h| h.pid == rec.sid) {
                    let pid = self.clone_from(&h.inj, h.pid, rec)?;
                    self.adopt(rec, pid)?;
                } else {
                    self.fork_here(rec, xfer_child)?;
                }
                self.made(rec, from_parent)?;
            }
        }
        while !late.is_empty() {
            let Some(i) = late.iter().position(|p| self.procs.contains_key(&p.sid)) else {
                bail!(
                    "process {} ({}) is in session {}, whose leader is made only after it",
                    late[0].pid,
                    late[0].comm,
                    late[0].sid
                );
            };
            let root = late.remove(i);
            for rec in subtree(root) {
                if rec.zombie.is_some() {
                    zombies.push(rec);
                    continue;
                }
                let from_parent = pids.contains(&rec.ppid);
                if from_parent {
                    self.fork_in_parent(rec)?;
                } else {
                    let gone = (!pids.contains(&rec.pgid)).then_some(rec.pgid);
                    let h = self.live_helper(&mut in_live_sessions, rec.sid, gone)?;
                    let h = &in_live_sessions[h];
                    let pid = self.clone_from(&h.inj, h.pid, rec)?;
                    self.adopt(rec, pid)?;
                }
                self.made(rec, from_parent)?;
            }
        }
        // Groups whose leader is gone in a session whose leader lives, that only children
        // of live processes are in: their helpers too, so that those can join them.
        for p in self.procs.values().map(|p| p.rec).collect::<Vec<_>>() {
            if p.sid != p.pgid && !pids.contains(&p.pgid) && live(p.sid) {
                self.live_helper(&mut in_live_sessions, p.sid, Some(p.pgid))?;
            }
        }
        self.set_groups()?;
        self.set_foreground()?;
        end_live_helpers(in_live_sessions);
        end_helpers(helpers)?;
        for z in zombies {
            self.make_zombie(z)
                .with_context(|| format!("zombie {} ({})", z.pid, z.comm))?;
        }
        Ok(())
    }

    /// A child subreaper again (PR_SET_CHILD_SUBREAPER), once the tree is made: orphans
    /// the resume leaves (its helpers') are the init's, as they were.
    pub(crate) fn set_subreaper(&self, pid: i32) -> Result<()> {
        const PR_SET_CHILD_SUBREAPER: u64 = 36;
        if self.proc(pid).rec.child_subreaper {
            self.call(
                pid,
                "prctl(PR_SET_CHILD_SUBREAPER)",
                nr::PRCTL,
                &[PR_SET_CHILD_SUBREAPER, 1],
            )?;
        }
        Ok(())
    }

    /// A process just made: in its session, and its memory made before its children are
    /// (they get what they share of it).
    fn made(&mut self, rec: &ProcessRecord, from_parent: bool) -> Result<()> {
        self.join_session(rec)?;
        self.restore_memory_of(rec.pid, from_parent)
            .with_context(|| format!("the memory of process {} ({})", rec.pid, rec.comm))
    }

    /// The helper in session `sid` (whose leader lives, and is made) that processes of
    /// the init's in that session are made from: with `group`, one that leads that group
    /// (its leader is gone) with its pid; else one in the leader's group with a pid no
    /// process of the image has. Made by the leader, with its SIGCHLD ignored meanwhile
    /// (its own action is set again later, with the others), so that the helper, when it
    /// ends, is reaped at once and the leader is never told. Returns its index.
    fn live_helper(
        &self,
        helpers: &mut Vec<LiveHelper>,
        sid: i32,
        group: Option<i32>,
    ) -> Result<usize> {
        if let Some(i) = helpers
            .iter()
            .position(|h| h.sid == sid && h.group == group)
        {
            return Ok(i);
        }
        let what = match group {
            Some(g) => format!("a helper for group {g}, whose leader is gone, in session {sid}"),
            None => format!("a helper in session {sid}"),
        };
        let ignore: Vec<u8> = [libc::SIG_IGN as u64, 0, 0, 0]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        let at = self.put(sid, 0, &ignore)?;
        self.call(
            sid,
            "rt_sigaction(SIGCHLD)",
            nr::RT_SIGACTION,
            &[libc::SIGCHLD as u64, at, 0, 8],
        )
        .with_context(|| what.clone())?;
        let pid = match group {
            Some(g) => self.clone_pid_from(&self.proc(sid).inj, sid, g, &what)?,
            None => {
                // A pid nothing of the image uses; the init's own page-decoding threads
                // take pids for a moment: then the next.
                let used: BTreeSet<i32> = self
                    .record
                    .ids_in_use()
                    .chain(helpers.iter().map(|h| h.pid))
                    .collect();
                let mut pid = used.last().copied().unwrap_or(1);
                let mut tries = 0;
                loop {
                    pid += 1;
                    match self.clone_pid_from(&self.proc(sid).inj, sid, pid, &what) {
                        Ok(got) => break got,
                        Err(e) if tries < 64 && format!("{e:#}").contains("File exists") => {
                            tries += 1;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        };
        let inj = Injector::new(pid, self.tramp, TRACE_CHILDREN)?;
        if group.is_some() {
            inj.call("setpgid", nr::SETPGID, &[0, 0])
                .map_err(|e| anyhow!("{what}: {e}"))?;
        }
        helpers.push(LiveHelper {
            pid,
            sid,
            group,
            inj,
        });
        Ok(helpers.len() - 1)
    }

    /// A child of the init: cloned here with its pid, seized, and stripped of what it has
    /// of the init's (descriptors but the transfer socket).
    fn fork_here(&mut self, rec: &'a ProcessRecord, xfer_child: i32) -> Result<()> {
        let pid = rec.pid;
        self.spawn_here(pid, xfer_child)
            .with_context(|| format!("creating process {pid} ({})", rec.comm))?;
        self.adopt(rec, pid)
    }

    /// A stopped, traced child of the init with pid `pid`, holding nothing of the init's
    /// but the transfer socket (at its number).
    fn spawn_here(&self, pid: i32, xfer_child: i32) -> Result<Injector> {
        // SAFETY: the child runs only raw system calls until it is seized.
        let got = match unsafe { t::fork_with_pid(pid) } {
            Ok(0) => t::pause_forever(),
            Ok(got) => got,
            Err(e) => bail!("cannot create process {pid}: {e}"),
        };
        sys::ptrace_seize(got).with_context(|| format!("tracing new process {got}"))?;
        sys::ptrace_interrupt(got)?;
        wait_new_task(got)?;
        let inj = Injector::new(got, self.tramp, TRACE_CHILDREN)?;
        t::ptrace_set_sigmask(got, !0)?;
        let call = |what, number, args: &[u64]| {
            inj.call(what, number, args)
                .map_err(|e| anyhow!("process {got}: {e}"))
        };
        let x = self.xfer_fd as u64;
        if xfer_child != self.xfer_fd {
            call("dup3", nr::DUP3, &[xfer_child as u64, x, 0])?;
        }
        call("close_range", nr::CLOSE_RANGE, &[0, x - 1, 0])?;
        call("close_range", nr::CLOSE_RANGE, &[x + 1, u32::MAX as u64, 0])?;
        Ok(inj)
    }

    /// Sessions and process groups whose leader is gone (a daemon that forked and left,
    /// ssh-agent's parent): a helper process takes the leader's pid and starts the session
    /// (or group), the members are made from it, and the helpers end once every process
    /// is in place; the members are then the init's, as orphans are.
    fn make_helpers(&self, xfer_child: i32) -> Result<Vec<Helper>> {
        let live: std::collections::BTreeSet<i32> = self
            .record
            .processes
            .iter()
            .filter(|p| p.zombie.is_none())
            .map(|p| p.pid)
            .collect();
        let in_image = |pid: i32| self.record.processes.iter().any(|p| p.pid == pid);
        let mut helpers: Vec<Helper> = Vec::new();
        for p in self.record.processes.iter().filter(|p| p.zombie.is_none()) {
            let (sid, pgid) = (p.sid, p.pgid);
            if sid > 1 && !in_image(sid) && !helpers.iter().any(|h| h.pid == sid) {
                let inj = self
                    .spawn_here(sid, xfer_child)
                    .with_context(|| format!("a helper for session {sid}, whose leader is gone"))?;
                inj.call("setsid", nr::SETSID, &[])
                    .map_err(|e| anyhow!("helper {sid}: {e}"))?;
                helpers.push(Helper {
                    pid: sid,
                    parent: None,
                    inj,
                });
            }
            if pgid > 1
                && pgid != sid
                && !live.contains(&pgid)
                && !in_image(pgid)
                && !helpers.iter().any(|h| h.pid == pgid)
            {
                // In a session whose leader lives: made by the leader (`live_helper`).
                let Some(s) = helpers.iter().find(|h| h.pid == sid) else {
                    continue;
                };
                let (s_pid, s_inj) = (s.pid, &s.inj);
                let pid = self.clone_pid_from(s_inj, s_pid, pgid, &format!("helper {pgid}"))?;
                let inj = Injector::new(pid, self.tramp, TRACE_CHILDREN)?;
                inj.call("setpgid", nr::SETPGID, &[0, 0])
                    .map_err(|e| anyhow!("helper {pgid}: {e}"))?;
                helpers.push(Helper {
                    pid: pgid,
                    parent: Some(s_pid),
                    inj,
                });
            }
        }
        Ok(helpers)
    }

    /// A child of process `parent` (driven by `inj`) with pid `rec.pid`.
    fn clone_from(&self, inj: &Injector, parent: i32, rec: &ProcessRecord) -> Result<i32> {
        self.clone_pid_from(
            inj,
            parent,
            rec.pid,
            &format!("process {} ({})", rec.pid, rec.comm),
        )
    }

    fn clone_pid_from(&self, inj: &Injector, parent: i32, pid: i32, what: &str) -> Result<i32> {
        let tid_at = self.put(parent, 256, &pid.to_le_bytes())?;
        let args: [u64; 11] = [0, 0, 0, 0, libc::SIGCHLD as u64, 0, 0, 0, tid_at, 1, 0];
        let bytes: Vec<u8> = args.iter().flat_map(|w| w.to_le_bytes()).collect();
        let at = self.put(parent, 0, &bytes)?;
        let got = inj
            .call("clone3", nr::CLONE3, &[at, 88])
            .map_err(|e| anyhow!("creating {what}: {e}"))? as i32;
        if got != pid {
            bail!("{what} came back as {got}");
        }
        wait_new_task(got)?;
        Ok(got)
    }

    /// A child of a restored process: its parent clones it, by an injected clone3.
    fn fork_in_parent(&mut self, rec: &'a ProcessRecord) -> Result<()> {
        let pid = self.clone_child(rec)?;
        self.adopt(rec, pid)
    }

    fn clone_child(&self, rec: &ProcessRecord) -> Result<i32> {
        self.clone_from(&self.proc(rec.ppid).inj, rec.ppid, rec)
    }

    /// Take a fresh, stopped copy under control: an injector on it, all signals blocked.
    fn adopt(&mut self, rec: &'a ProcessRecord, pid: i32) -> Result<()> {
        let inj = Injector::new(pid, self.tramp, TRACE_CHILDREN)?;
        t::ptrace_set_sigmask(pid, !0)?;
        self.procs.insert(
            pid,
            Proc {
                rec,
                inj,
                tids: vec![pid],
            },
        );
        Ok(())
    }

    /// A session leader starts its session, and takes its controlling terminal now, so the
    /// processes it clones next are in both.
    fn join_session(&self, rec: &ProcessRecord) -> Result<()> {
        let pid = rec.pid;
        if rec.sid == pid {
            self.call(pid, "setsid", nr::SETSID, &[])?;
            if let Some(n) = pts_number(rec.ctty) {
                let at = self.put_path(pid, &format!("/dev/pts/{n}"))?;
                let flags = (libc::O_RDWR | libc::O_NOCTTY) as u64;
                let fd = self.call(pid, "open", nr::OPEN, &[at, flags, 0])?;
                self.call(
                    pid,
                    "ioctl(TIOCSCTTY)",
                    nr::IOCTL,
                    &[fd, libc::TIOCSCTTY, 0],
                )?;
                self.call(pid, "close", nr::CLOSE, &[fd])?;
            } else if rec.ctty != 0 {
                bail!(
                    "process {pid} ({}) has a controlling terminal that is not a pty of the session",
                    rec.comm
                );
            }
        } else {
            let sid = self.call(pid, "getsid", 124, &[0])? as i32;
            if sid != rec.sid {
                bail!(
                    "process {pid} ({}) is in session {} whose leader is not its ancestor; not supported yet",
                    rec.comm,
                    rec.sid
                );
            }
        }
        Ok(())
    }

    /// Process groups: leaders first, then their members.
    fn set_groups(&self) -> Result<()> {
        let mut recs: Vec<&ProcessRecord> = self.procs.values().map(|p| p.rec).collect();
        recs.sort_by_key(|r| (r.pgid != r.pid, r.pid));
        for rec in recs {
            let now = self.call(rec.pid, "getpgid", 121, &[0])? as i32;
            if now == rec.pgid {
                continue;
            }
            self.call(rec.pid, "setpgid", nr::SETPGID, &[0, rec.pgid as u64])
                .with_context(|| format!("joining process group {}", rec.pgid))?;
        }
        Ok(())
    }

    /// Each terminal's foreground group, set from its session's leader.
    fn set_foreground(&self) -> Result<()> {
        for p in self.procs.values() {
            let rec = p.rec;
            let Some(n) = pts_number(rec.ctty) else {
                continue;
            };
            if rec.sid != rec.pid || rec.fg_pgid <= 0 {
                continue;
            }
            let pid = rec.pid;
            let at = self.put_path(pid, &format!("/dev/pts/{n}"))?;
            let flags = (libc::O_RDWR | libc::O_NOCTTY) as u64;
            let fd = self.call(pid, "open", nr::OPEN, &[at, flags, 0])?;
            let pg = self.put(pid, 0, &rec.fg_pgid.to_le_bytes())?;
            self.call(
                pid,
                "ioctl(TIOCSPGRP)",
                nr::IOCTL,
                &[fd, libc::TIOCSPGRP, pg],
            )
            .with_context(|| format!("making group {} the terminal's foreground", rec.fg_pgid))?;
            self.call(pid, "close", nr::CLOSE, &[fd])?;
        }
        Ok(())
    }

    /// A zombie: cloned by its parent, then ended the way it ended.
    fn make_zombie(&mut self, rec: &ProcessRecord) -> Result<()> {
        if !self.procs.contains_key(&rec.ppid) {
            return Ok(());
        }
        let pid = self.clone_child(rec)?;
        let status = rec.zombie.unwrap_or(0);
        let inj = Injector::new(pid, self.tramp, TRACE_CHILDREN)?;
        let fail = |e: crate::inject::CallError| anyhow!("zombie {pid}: {e}");
        // Its own session and group, as it had them when it ended (a clone is in its
        // parent's).
        let parent = self.procs.get(&rec.ppid).map(|p| (p.rec.pgid, p.rec.sid));
        if rec.sid == rec.pid {
            inj.call("setsid", nr::SETSID, &[]).map_err(fail)?;
        } else if parent.is_some_and(|(pgid, _)| pgid != rec.pgid) {
            let to = if rec.pgid == rec.pid {
                0
            } else {
                rec.pgid as u64
            };
            inj.call("setpgid", nr::SETPGID, &[0, to]).map_err(fail)?;
        }
        let sig = status & 0x7f;
        if sig == 0 {
            // The call does not return: the process ends, and `raw` reaps its trace
            // status, which hands it to its parent as a zombie.
            if inj
                .raw(nr::EXIT_GROUP, &[((status >> 8) & 0xff) as u64])
                .is_ok()
            {
                bail!("zombie {pid} did not exit");
            }
            return Ok(());
        }
        // Default action (SIGKILL's cannot be set: it has only that one), unblocked, no
        // core file (its status says none was written: checkpoint refuses the others),
        // then the signal itself.
        if sig != libc::SIGKILL {
            let at = self.put(pid, 0, &[0u8; 32])?;
            inj.call("rt_sigaction", nr::RT_SIGACTION, &[sig as u64, at, 0, 8])
                .map_err(fail)?;
        }
        t::set_rlimit(pid, libc::RLIMIT_CORE, (0, 0))
            .map_err(|e| anyhow!("zombie {pid}: no core file: {e}"))?;
        t::ptrace_set_sigmask(pid, 0).context("unblocking its signals")?;
        if inj.raw(nr::KILL, &[pid as u64, sig as u64]).is_err() {
            // Ended by it already (SIGKILL stops for no tracer): a zombie now.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if crate::ckpt::procfs::stat_state(&stat) == Some('Z') {
                return Ok(());
            }
        }
        // As its tracer, pass the fatal signal on and see it end, so its parent can.
        let mut pass = 0;
        for _ in 0..16 {
            t::ptrace_syscall(pid, pass).context("letting it take its signal")?;
            let st = t::wait_raw(pid).context("waiting for it to end")?;
            if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
                return Ok(());
            }
            pass = if libc::WIFSTOPPED(st) && libc::WSTOPSIG(st) == sig {
                sig
            } else {
                0
            };
        }
        bail!("zombie {pid} did not end")
    }
}
