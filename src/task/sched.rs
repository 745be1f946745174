//! Scheduling: each thread's policy, nice value and real-time priority, the CPUs it may
//! run on, its I/O priority and timer slack, and each process's OOM score adjustment.
//! (`nice make`, `chrt -b`, `taskset`, `ionice -c3` and a daemon's own PR_SET_TIMERSLACK
//! set them; a resume that dropped them would run the program otherwise than asked.)
//!
//! Checkpoint: read from outside (sched_getattr, sched_getaffinity and ioprio_get need no
//! privilege over a thread that can be seen; /proc/PID/oom_score_adj), the timer slack by
//! an injected prctl (`crate::ckpt::inside`). What the process could not set again itself
//! is refused here (`check`): a real-time policy or a nice value below what its
//! RLIMIT_RTPRIO or RLIMIT_NICE allow, SCHED_DEADLINE, utilization clamps, real-time I/O
//! priority, unless the session is root's.
//!
//! Resume: last, with the identity the process has then (`set`): each thread sets what
//! differs from what it started with (the init's, as every restored process is a copy of
//! it) by injected calls, and the init writes the OOM score adjustment. What the resuming
//! user's own limits forbid (a `nice crterm resume`, a lower OOM score under a login
//! manager that raised it, CPUs this machine lacks) is the world leaking in: it is left as
//! it starts and said in one warning line each, as for resource limits.

use crate::inject::{Injector, nr};
use crate::records::{ProcessRecord, SchedRecord};
use crate::restore::{Restorer, TRACE_CHILDREN};
use crate::sys;
use anyhow::{Context, Result};
use std::io;

const SCHED_OTHER: u32 = 0;
const SCHED_FIFO: u32 = 1;
const SCHED_RR: u32 = 2;
const SCHED_BATCH: u32 = 3;
const SCHED_IDLE: u32 = 5;
const SCHED_FLAG_RESET_ON_FORK: u64 = 1;
const IOPRIO_CLASS_RT: u32 = 1;
/// What a thread's utilization clamps are when nothing set them.
const UTIL_MAX: u32 = 1024;

// ---- checkpoint ----------------------------------------------------------------------

/// Thread `tid`'s scheduling (host tid), but its timer slack. A policy or flag this
/// version does not know of is refused.
pub(crate) fn read(tid: i32) -> io::Result<SchedRecord> {
    let attr = sys::sched_getattr(tid)?;
    let refuse = |what: String| {
        io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{what}, which this version cannot carry"),
        )
    };
    if ![SCHED_OTHER, SCHED_FIFO, SCHED_RR, SCHED_BATCH, SCHED_IDLE].contains(&attr.policy) {
        return Err(refuse(format!("scheduling policy {}", attr.policy)));
    }
    if attr.flags & !SCHED_FLAG_RESET_ON_FORK != 0
        || attr.util_min != 0
        || (attr.util_max != UTIL_MAX && attr.util_max != 0)
    {
        return Err(refuse(format!(
            "scheduling flags {:#x} (utilization clamps {}-{})",
            attr.flags, attr.util_min, attr.util_max
        )));
    }
    let mask = sys::sched_getaffinity(tid)?;
    let all = sys::sched_getaffinity(0)?;
    Ok(SchedRecord {
        policy: attr.policy,
        reset_on_fork: attr.flags & SCHED_FLAG_RESET_ON_FORK != 0,
        nice: attr.nice,
        priority: attr.priority,
        affinity: (mask != all).then_some(mask),
        ioprio: sys::ioprio_get(tid)?,
        timer_slack: 0,
    })
}

/// Refuse what process `p` could not set again itself: a real-time policy or priority, or
/// a nice value, beyond what its own RLIMIT_RTPRIO and RLIMIT_NICE allow, and real-time
/// I/O priority; only root may (`privileged`).
pub(crate) fn check(p: &ProcessRecord, privileged: bool) -> io::Result<()> {
    if privileged {
        return Ok(());
    }
    let limit = |res: usize| p.rlimits.get(res).map_or(0, |l| l.0);
    let (nice_limit, rtprio_limit) = (limit(13), limit(14));
    for t in &p.threads {
        let s = &t.sched;
        let what =
            if matches!(s.policy, SCHED_FIFO | SCHED_RR) && u64::from(s.priority) > rtprio_limit {
                format!(
                    "real-time priority {} (its RLIMIT_RTPRIO is {rtprio_limit})",
                    s.priority
                )
            } else if s.nice < 0 && (20 - i64::from(s.nice)) as u64 > nice_limit {
                format!("nice value {} (its RLIMIT_NICE is {nice_limit})", s.nice)
            } else if s.ioprio >> 13 == IOPRIO_CLASS_RT {
                "real-time I/O priority".to_string()
            } else {
                continue;
            };
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "thread {} of process {} ({}) has {what}, which only a privileged user can set again, so this version cannot carry it here",
                t.tid, p.pid, p.comm
            ),
        ));
    }
    Ok(())
}

// ---- resume --------------------------------------------------------------------------

/// What a restored process starts with: the init's own.
pub(crate) struct Baseline {
    attr: sys::SchedAttr,
    ioprio: u32,
    timer_slack: u64,
    oom_score_adj: i32,
}

impl Baseline {
    pub(crate) fn here() -> Result<Baseline> {
        const PR_GET_TIMERSLACK: libc::c_int = 30;
        // SAFETY: PR_GET_TIMERSLACK takes no pointer.
        let slack = unsafe { libc::prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0) };
        Ok(Baseline {
            attr: sys::sched_getattr(0).context("reading this process's scheduling")?,
            ioprio: sys::ioprio_get(0).context("reading this process's I/O priority")?,
            timer_slack: slack as u64,
            oom_score_adj: std::fs::read_to_string("/proc/self/oom_score_adj")?
                .trim()
                .parse()
                .context("reading this process's OOM score adjustment")?,
        })
    }
}

impl Restorer<'_> {
    /// Process `pid`'s scheduling as it was, where it differs from `base`; what the
    /// resuming user's limits do not allow is a warning.
    pub(crate) fn set_sched(&mut self, pid: i32, base: &Baseline) -> Result<()> {
        let p = self.proc(pid);
        let rec = p.rec;
        let tids = p.tids.clone();
        let mut warnings = Vec::new();
        for (th, tid) in rec.threads.iter().zip(tids) {
            let s = &th.sched;
            let inj = Injector::new(tid, self.tramp, TRACE_CHILDREN)?;
            let mut call = |what: &'static str, number: i64, args: &[u64]| {
                if let Err(e) = inj.call(what, number, args) {
                    warnings.push(format!(
                        "thread {} of process {pid} ({}): {what} could not be set back: {e}",
                        th.tid, rec.comm
                    ));
                }
            };
            let b = &base.attr;
            let flags = if s.reset_on_fork {
                SCHED_FLAG_RESET_ON_FORK
            } else {
                0
            };
            // The nice value on its own first: sched_setattr keeps it only for the fair
            // policies (SCHED_OTHER, SCHED_BATCH), not SCHED_IDLE's.
            if s.nice != b.nice {
                const SETPRIORITY: i64 = 141;
                call(
                    "its nice value",
                    SETPRIORITY,
                    &[libc::PRIO_PROCESS as u64, 0, s.nice as i64 as u64],
                );
            }
            if (s.policy, flags, s.nice, s.priority) != (b.policy, b.flags, b.nice, b.priority) {
                const SCHED_SETATTR: i64 = 314;
                let attr = sys::SchedAttr {
                    size: 48,
                    policy: s.policy,
                    flags,
                    nice: s.nice,
                    priority: s.priority,
                    ..Default::default()
                };
                // SAFETY: SchedAttr is plain data.
                let bytes = unsafe {
                    std::slice::from_raw_parts(&attr as *const sys::SchedAttr as *const u8, 48)
                };
                let at = self.put(pid, 0, bytes)?;
                call(
                    "its scheduling policy and nice value",
                    SCHED_SETATTR,
                    &[0, at, 0],
                );
            }
            if let Some(mask) = &s.affinity {
                const SCHED_SETAFFINITY: i64 = 203;
                let bytes: Vec<u8> = mask.iter().flat_map(|w| w.to_le_bytes()).collect();
                let at = self.put(pid, 0, &bytes)?;
                call(
                    "its CPU affinity",
                    SCHED_SETAFFINITY,
                    &[0, bytes.len() as u64, at],
                );
            }
            if s.ioprio != base.ioprio {
                const IOPRIO_SET: i64 = 251;
                call("its I/O priority", IOPRIO_SET, &[1, 0, u64::from(s.ioprio)]);
            }
            if s.timer_slack != base.timer_slack && s.timer_slack != 0 {
                const PR_SET_TIMERSLACK: u64 = 29;
                call(
                    "its timer slack",
                    nr::PRCTL,
                    &[PR_SET_TIMERSLACK, s.timer_slack],
                );
            }
        }
        if rec.oom_score_adj != base.oom_score_adj
            && let Err(e) = std::fs::write(
                format!("/proc/{pid}/oom_score_adj"),
                rec.oom_score_adj.to_string(),
            )
        {
            warnings.push(format!(
                "process {pid} ({}): its OOM score adjustment {} could not be set back: {e}",
                rec.comm, rec.oom_score_adj
            ));
        }
        self.warnings.extend(warnings);
        Ok(())
    }
}
