//! Timers: the interval timers (setitimer: ITIMER_REAL, _VIRTUAL, _PROF) and POSIX timers
//! (timer_create) of each process, with the time left on them. (timerfd is a descriptor:
//! `crate::fds::notify`.)
//!
//! Checkpoint: asked of the process by injected calls (`crate::ckpt::inside`): getitimer,
//! and for each POSIX timer /proc/PID/timers lists (id, clock, how it notifies and whom)
//! timer_gettime; a timer that names a thread names it by the session's tid.
//!
//! Resume: setitimer (`set_itimers`); POSIX timers made again with their ids
//! (PR_TIMER_CREATE_RESTORE_IDS; a kernel that cannot choose ids fails the resume, naming
//! the timer) and armed with the time they had left (`set_posix_timers`).

use crate::inject::{Injector, nr};
use crate::records::PosixTimer;
use crate::restore::Restorer;
use crate::sys;
use anyhow::{Result, bail};
use std::io;

// ---- checkpoint ----------------------------------------------------------------------

/// ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF of the process `main` drives, as (interval
/// s, µs, value s, µs).
pub(crate) fn read_itimers(main: &Injector, pid: i32, scratch: u64) -> io::Result<Vec<[u64; 4]>> {
    let mut itimers = Vec::new();
    for which in 0..3 {
        main.call("getitimer", nr::GETITIMER, &[which, scratch])?;
        itimers.push(crate::ckpt::inside::read_words::<4>(pid, scratch)?);
    }
    Ok(itimers)
}

/// The POSIX timers of the process `main` drives, with the time left on each (`tid`:
/// still the host's thread id; the caller translates it).
pub(crate) fn read_posix_timers(
    main: &Injector,
    pid: i32,
    scratch: u64,
) -> io::Result<Vec<PosixTimer>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/timers"))
        .map_err(|e| io::Error::other(format!("its POSIX timers (/proc/{pid}/timers): {e}")))?;
    let mut timers = crate::ckpt::procfs::parse_timers(&text).ok_or_else(|| {
        io::Error::other(format!(
            "its POSIX timers: /proc/{pid}/timers does not read as the kernel writes it"
        ))
    })?;
    for t in &mut timers {
        const TIMER_GETTIME: i64 = 224;
        main.call("timer_gettime", TIMER_GETTIME, &[t.id as u64, scratch])?;
        t.spec = crate::ckpt::inside::read_words::<4>(pid, scratch)?;
    }
    Ok(timers)
}

/// Timers name their thread by host tid (`hosts`): the session's (`tids`, in the same
/// order).
pub(crate) fn in_session_tids(timers: &mut [PosixTimer], hosts: &[i32], tids: &[i32]) {
    for t in timers {
        if let Some(i) = hosts.iter().position(|&h| h == t.tid) {
            t.tid = tids[i];
        }
    }
}

// ---- resume --------------------------------------------------------------------------

impl Restorer<'_> {
    /// The interval timers that were armed.
    pub(crate) fn set_itimers(&self, pid: i32) -> Result<()> {
        let rec = self.proc(pid).rec;
        for (which, it) in rec.itimers.iter().enumerate().take(3) {
            if it.iter().any(|&w| w != 0) {
                let bytes: Vec<u8> = it.iter().flat_map(|w| w.to_le_bytes()).collect();
                let at = self.put(pid, 0, &bytes)?;
                self.call(pid, "setitimer", nr::SETITIMER, &[which as u64, at, 0])?;
            }
        }
        Ok(())
    }

    /// POSIX timers with their ids (PR_TIMER_CREATE_RESTORE_IDS), targets and time left.
    pub(crate) fn set_posix_timers(&self, pid: i32) -> Result<()> {
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
}
