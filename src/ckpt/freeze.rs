//! Freezing a session: every thread of every process below the session's init is seized
//! with ptrace and interrupted, so nothing in the session runs while its state is read.
//!
//! Processes and threads may appear while the freeze goes on (a fork, a new thread), so the
//! tree is scanned again after each round until a round finds nothing new. A thread that
//! another tracer holds (strace, gdb) cannot be seized: the freeze then fails naming the
//! process, after thawing what it had frozen. Dropping a `Frozen` thaws everything, so an
//! error anywhere in a checkpoint leaves the session running as before; a signal that
//! arrived during the freeze is handed on at the thaw, and a job stopped with Ctrl-Z stays
//! stopped.
//!
//! ptrace is per thread: the thread that froze must be the one that thaws.

use crate::sys::{self, TraceStop};
use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub enum FreezeError {
    /// Another program traces a process of the session.
    Traced { pid: i32, comm: String, tracer: i32 },
    /// The kernel refused to seize a thread for another reason.
    Seize {
        pid: i32,
        tid: i32,
        comm: String,
        err: std::io::Error,
    },
    /// The session kept creating tasks faster than they could be frozen.
    Unsettled,
    /// A thread did not stop: it is in a wait nothing but its end interrupts (a vfork
    /// parent, a hung file system), in the kernel function `wchan`.
    Stuck {
        pid: i32,
        comm: String,
        wchan: String,
    },
}

/// How long a seized thread may take to stop (a runnable one stops within milliseconds,
/// also on a loaded machine).
const STOP_WITHIN: Duration = Duration::from_secs(3);

impl fmt::Display for FreezeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FreezeError::Traced { pid, comm, tracer } => write!(
                f,
                "process {pid} ({comm}) is being traced by process {tracer} (a debugger or strace); end that first"
            ),
            FreezeError::Seize {
                pid,
                tid,
                comm,
                err,
            } => {
                write!(
                    f,
                    "cannot stop thread {tid} of process {pid} ({comm}): {err}"
                )
            }
            FreezeError::Unsettled => write!(
                f,
                "the session kept starting new processes while it was being stopped"
            ),
            FreezeError::Stuck { pid, comm, wchan } => write!(
                f,
                "process {pid} ({comm}) did not stop within {} s: it is in an uninterruptible wait (in {wchan}{}), which a checkpoint cannot interrupt; try again when it is over",
                STOP_WITHIN.as_secs(),
                if wchan == "kernel_clone" {
                    ": a vfork parent waits there until its child runs another program or exits"
                } else {
                    ""
                }
            ),
        }
    }
}

impl std::error::Error for FreezeError {}

/// A frozen thread and what to hand on when it is thawed.
#[derive(Debug, Clone, Copy)]
struct Held {
    pid: i32,
    pending_signal: i32,
    /// That signal's siginfo, read when it was caught (later stops replace the one the
    /// kernel keeps); None: unreadable.
    pending_info: Option<sys::trace::SigInfo>,
    /// Stopped by job control (Ctrl-Z) before we seized it: the signal that stopped it
    /// (0: running).
    stop_signal: i32,
}

/// A frozen session. Dropping it thaws the session.
pub struct Frozen {
    threads: BTreeMap<i32, Held>,
    /// Processes that have exited and wait for their parent to reap them: nothing to
    /// stop, their exit status is all they hold.
    zombies: Vec<i32>,
    pub took: Duration,
}

impl Frozen {
    pub fn zombies(&self) -> &[i32] {
        &self.zombies
    }

    pub fn processes(&self) -> usize {
        self.threads
            .values()
            .map(|h| h.pid)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    }

    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Threads by process: (pid, tids), in pid order.
    pub fn tasks(&self) -> Vec<(i32, Vec<i32>)> {
        let mut out: Vec<(i32, Vec<i32>)> = Vec::new();
        for (&tid, h) in &self.threads {
            match out.iter_mut().find(|(p, _)| *p == h.pid) {
                Some((_, tids)) => tids.push(tid),
                None => out.push((h.pid, vec![tid])),
            }
        }
        out.sort();
        out
    }

    /// Whether job control had stopped the process (Ctrl-Z) before the freeze. Once
    /// seized, such a process reads as "tracing stop" like every other.
    pub fn job_stopped(&self, pid: i32) -> bool {
        self.stop_signal(pid) != 0
    }

    /// The signal that stopped process `pid`'s group stop (SIGSTOP, SIGTSTP, SIGTTIN or
    /// SIGTTOU), as the seized task reports it; 0 when it was not stopped.
    pub fn stop_signal(&self, pid: i32) -> i32 {
        self.threads
            .values()
            .find(|h| h.pid == pid && h.stop_signal != 0)
            .map_or(0, |h| h.stop_signal)
    }

    /// The siginfo of the signal thread `tid` was caught on its way to (taken from its
    /// queue, handed on at the thaw): None if none, an error if it could not be read.
    pub fn held_signal(&self, tid: i32) -> io::Result<Option<sys::trace::SigInfo>> {
        match self.threads.get(&tid) {
            Some(h) if h.pending_signal != 0 => h.pending_info.map(Some).ok_or_else(|| {
                io::Error::other(format!("the siginfo of signal {}", h.pending_signal))
            }),
            _ => Ok(None),
        }
    }

    /// Let every thread go on (once; dropping does it too).
    pub fn thaw(&mut self) {
        self.release();
    }

    fn release(&mut self) {
        for (tid, held) in std::mem::take(&mut self.threads) {
            let _ = sys::ptrace_detach(tid, held.pending_signal);
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.release();
    }
}

/// The one-letter state of a thread (`R`, `S`, `T` ...), from /proc.
fn state(tid: i32) -> char {
    std::fs::read_to_string(format!("/proc/{tid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.trim_start().chars().next())
        })
        .unwrap_or('?')
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn tracer_of(tid: i32) -> i32 {
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("TracerPid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Every process below `root` (not `root` itself) with its threads.
fn session_tasks(root: i32) -> Vec<(i32, Vec<i32>)> {
    let mut procs = Vec::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        let mut threads = Vec::new();
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for t in dir.flatten() {
                let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                threads.push(tid);
                if let Ok(kids) = std::fs::read_to_string(t.path().join("children")) {
                    stack.extend(
                        kids.split_whitespace()
                            .filter_map(|k| k.parse::<i32>().ok()),
                    );
                }
            }
        }
        if pid != root && !threads.is_empty() {
            threads.sort();
            procs.push((pid, threads));
        }
    }
    procs
}

/// The resident anonymous memory of every process below `root`, summed (from each one's
/// status; the session runs on).
pub fn resident_anon(root: i32) -> u64 {
    session_tasks(root)
        .iter()
        .filter_map(|(pid, _)| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|s| {
            let kb = s.lines().find_map(|l| l.strip_prefix("RssAnon:"))?;
            kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok()
        })
        .map(|kb| kb << 10)
        .sum()
}

/// Freeze every process below `root` (the session's init, which itself runs on: it owns
/// nothing of the session's state and must keep reaping).
pub fn freeze(root: i32) -> Result<Frozen, FreezeError> {
    let start = Instant::now();
    let mut frozen = Frozen {
        threads: BTreeMap::new(),
        zombies: Vec::new(),
        took: Duration::ZERO,
    };
    for _round in 0..64 {
        let mut new = 0;
        for (pid, tids) in session_tasks(root) {
            for tid in tids {
                if frozen.threads.contains_key(&tid) {
                    continue;
                }
                let st = state(tid);
                if st == 'Z' {
                    // Exited, not yet reaped: it cannot be seized, and need not be.
                    if tid == pid && !frozen.zombies.contains(&pid) {
                        frozen.zombies.push(pid);
                        new += 1;
                    }
                    continue;
                }
                let job_stopped = st == 'T';
                match sys::ptrace_seize(tid) {
                    Ok(()) => super::hooks::slow_at("seize"),
                    // Gone in the meantime: the next scan will not see it.
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => continue,
                    Err(e) => {
                        let tracer = tracer_of(tid);
                        return Err(if tracer != 0 {
                            FreezeError::Traced {
                                pid,
                                comm: comm(pid),
                                tracer,
                            }
                        } else {
                            FreezeError::Seize {
                                pid,
                                tid,
                                comm: comm(pid),
                                err: e,
                            }
                        });
                        // `frozen` is dropped here: what was stopped runs again.
                    }
                }
                new += 1;
                if sys::ptrace_interrupt(tid).is_err() {
                    let _ = sys::ptrace_detach(tid, 0);
                    continue;
                }
                let stop = match sys::wait_traced_within(tid, STOP_WITHIN) {
                    Ok(None) => {
                        // Still seized: released when this checkpoint's thread, its tracer,
                        // ends (the kernel then drops the stop it has not reached).
                        let wchan = std::fs::read_to_string(format!("/proc/{tid}/wchan"))
                            .unwrap_or_default();
                        return Err(FreezeError::Stuck {
                            pid,
                            comm: comm(pid),
                            wchan: if wchan.is_empty() || wchan == "0" {
                                "the kernel".into()
                            } else {
                                wchan
                            },
                        });
                    }
                    Ok(Some(stop)) => Ok(stop),
                    Err(e) => Err(e),
                };
                match stop {
                    Ok(TraceStop::Event(sig)) => {
                        // A group stop seized reports its signal; our interrupt, SIGTRAP.
                        let stop_signal = match sig {
                            libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
                                if job_stopped =>
                            {
                                sig
                            }
                            _ if job_stopped => libc::SIGSTOP,
                            _ => 0,
                        };
                        frozen.threads.insert(
                            tid,
                            Held {
                                pid,
                                pending_signal: 0,
                                pending_info: None,
                                stop_signal,
                            },
                        );
                    }
                    Ok(TraceStop::Signal(sig)) => {
                        // Stopped on its way to a signal: keep it stopped, hand the signal
                        // on at the thaw.
                        frozen.threads.insert(
                            tid,
                            Held {
                                pid,
                                pending_signal: sig,
                                pending_info: sys::trace::ptrace_get_siginfo(tid).ok(),
                                stop_signal: if job_stopped { libc::SIGSTOP } else { 0 },
                            },
                        );
                    }
                    Ok(TraceStop::Exited) | Err(_) => {}
                }
            }
        }
        if new == 0 {
            frozen.took = start.elapsed();
            return Ok(frozen);
        }
    }
    Err(FreezeError::Unsettled)
}
