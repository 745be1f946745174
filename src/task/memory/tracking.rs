//! Which pages a process wrote since a moment: the ground for incremental checkpoints
//! (issue 14). This kernel has no soft-dirty bits, so
//! writes are tracked with userfaultfd write-protection in asynchronous mode: the kernel
//! resolves each first write by itself and marks the page written, and the `PAGEMAP_SCAN`
//! ioctl on /proc/PID/pagemap returns the written pages and protects them again, in one
//! step.
//!
//! A userfaultfd belongs to the memory of the process that made it, but works from
//! whoever holds it: `Tracker::start` makes the process (frozen) create one by an
//! injected call, takes it with `pidfd_getfd` and closes the process's own, so the
//! program sees no new descriptor; the tracker (the daemon) registers and protects the
//! ranges. `UFFD_USER_MODE_ONLY` is all an ordinary user may ask for
//! (`vm.unprivileged_userfaultfd` is 0), and all write tracking needs: no fault is ever
//! delivered.

use crate::ckpt::inside::{self, CodeMap};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

const UFFD_API: u64 = 0xaa;
const UFFD_USER_MODE_ONLY: u64 = 1;
const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;
// _IOWR(0xAA, nr, size) and _IOWR('f', 16, struct pm_scan_arg).
const UFFDIO_API: u64 = 0xc018_aa3f;
const UFFDIO_REGISTER: u64 = 0xc020_aa00;
const UFFDIO_WRITEPROTECT: u64 = 0xc018_aa06;
const PAGEMAP_SCAN: u64 = 0xc060_6610;
const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;

/// Write tracking of some ranges of one process's memory.
pub struct Tracker {
    pid: i32,
    /// The userfaultfd, kept open: the registrations live as long as it does.
    uffd: OwnedFd,
    /// Page-aligned [start, end) ranges, each within one mapping.
    ranges: Vec<(u64, u64)>,
}

impl Tracker {
    /// Track writes to `ranges` of process `pid` from now on (with `protect`; without,
    /// as `register`). Its threads `tids` must be frozen (ptrace-stopped by this thread);
    /// `exec_maps` its executable mappings.
    pub fn start(
        pid: i32,
        tids: &[i32],
        exec_maps: &[CodeMap],
        ranges: &[(u64, u64)],
        protect: bool,
    ) -> io::Result<Tracker> {
        let uffd = inside::take_userfaultfd(pid, tids, exec_maps, UFFD_USER_MODE_ONLY)?;
        Tracker::with_userfaultfd(pid, uffd, ranges, protect)
    }

    /// Track writes to `ranges` of process `pid` from now on (as `start`), through
    /// `uffd`, a userfaultfd the process made (with `USER_MODE_ONLY`) and nothing has used
    /// yet: how a resume's init starts it, just after the process's memory was written.
    pub fn with_userfaultfd(
        pid: i32,
        uffd: OwnedFd,
        ranges: &[(u64, u64)],
        protect: bool,
    ) -> io::Result<Tracker> {
        // Not UFFD_FEATURE_WP_UNPOPULATED: it would fill in page tables for every page
        // of the ranges (a runtime that reserves terabytes would pay for them), and is
        // not needed: a page made present after the ranges were protected is not
        // protected, so it counts as written; one never made present is not in memory.
        let mut api = [UFFD_API, UFFD_FEATURE_WP_ASYNC, 0];
        ioctl(&uffd, UFFDIO_API, api.as_mut_ptr().cast(), "UFFDIO_API")?;
        let mut tracker = Tracker {
            pid,
            uffd,
            ranges: Vec::new(),
        };
        match protect {
            true => tracker.add(ranges)?,
            false => tracker.register(ranges),
        }
        Ok(tracker)
    }

    /// A tracker made elsewhere (`with_userfaultfd`, by a resume's init), now held for host
    /// process `pid`: its ranges are learnt as they are registered again.
    pub fn adopt(pid: i32, uffd: OwnedFd) -> Tracker {
        Tracker {
            pid,
            uffd,
            ranges: Vec::new(),
        }
    }

    /// Its userfaultfd (the registrations live as long as it is open).
    pub fn into_fd(self) -> OwnedFd {
        self.uffd
    }

    /// The flags a tracking userfaultfd is made with.
    pub const FLAGS: u64 = UFFD_USER_MODE_ONLY;

    /// Track writes to `ranges` too (mappings made since), from now on. A range the kernel
    /// will not track (a mapping it does not allow) is left out: its pages are then read
    /// whole at each checkpoint.
    pub fn add(&mut self, ranges: &[(u64, u64)]) -> io::Result<()> {
        self.registered(ranges, true)
    }

    /// Register `ranges` too, without protecting their pages: they all count as written
    /// until a `scan` protects them. For a pre-copy, whose scans protect each range just
    /// before reading it. A range already registered stays as it is; one the kernel
    /// refuses (no longer one mapping, another userfaultfd's) is left out.
    pub fn register(&mut self, ranges: &[(u64, u64)]) {
        let _ = self.registered(ranges, false);
    }

    fn registered(&mut self, ranges: &[(u64, u64)], protect: bool) -> io::Result<()> {
        for &(start, end) in ranges {
            let mut reg = [start, end - start, UFFDIO_REGISTER_MODE_WP, 0];
            if ioctl(
                &self.uffd,
                UFFDIO_REGISTER,
                reg.as_mut_ptr().cast(),
                "UFFDIO_REGISTER",
            )
            .is_err()
            {
                // (Not registered with this one, whatever was there before.)
                self.ranges.retain(|&(s, e)| e <= start || s >= end);
                continue;
            }
            if protect {
                let mut wp = [start, end - start, UFFDIO_WRITEPROTECT_MODE_WP];
                ioctl(
                    &self.uffd,
                    UFFDIO_WRITEPROTECT,
                    wp.as_mut_ptr().cast(),
                    "UFFDIO_WRITEPROTECT",
                )?;
            }
            self.ranges.retain(|&(s, e)| e <= start || s >= end);
            self.ranges.push((start, end));
        }
        self.ranges.sort_unstable();
        Ok(())
    }

    /// The pages written since `start` or the last call, as [start, end) runs in address
    /// order; they are protected again, so the next call sees only later writes.
    pub fn written(&self) -> io::Result<Vec<(u64, u64)>> {
        let pagemap = std::fs::File::open(format!("/proc/{}/pagemap", self.pid))?;
        let mut out = Vec::new();
        for &(start, end) in &self.ranges {
            out.extend(
                scan(&pagemap, start, end)?
                    .into_iter()
                    .filter(|r| r.2 & PAGE_IS_WRITTEN != 0)
                    .map(|r| (r.0, r.1)),
            );
        }
        Ok(out)
    }

    /// The ranges it tracks.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }
}

/// What `scan` says of a run of pages (`PAGE_IS_*` bits of the kernel's pagemap scan).
pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
pub const PAGE_IS_FILE: u64 = 1 << 2;
pub const PAGE_IS_PRESENT: u64 = 1 << 3;
pub const PAGE_IS_SWAPPED: u64 = 1 << 4;
pub const PAGE_IS_PFNZERO: u64 = 1 << 5;

/// Every page of [start, end) of the process whose /proc/PID/pagemap is `pagemap`, as runs
/// (start, end, `PAGE_IS_*` bits) in address order, and all of it write-protected again:
/// what was written since the range was last protected, and what is in memory. Fails
/// (EPERM) when some of the range is not registered for asynchronous write-protection.
///
/// Each call is given room for a run per page, so that it never stops early: the kernel's
/// `walk_end`, where a walk that ran out of room stopped, was seen short of runs it had
/// reported (going on from there repeated them), and a run missed would be a written page
/// missed. The range is scanned in steps of `STEP_PAGES` to bound that room.
pub fn scan(pagemap: &std::fs::File, start: u64, end: u64) -> io::Result<Vec<(u64, u64, u64)>> {
    const STEP_PAGES: u64 = 1 << 18;
    let mut out: Vec<(u64, u64, u64)> = Vec::new();
    let want = PAGE_IS_WRITTEN | PAGE_IS_FILE | PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_PFNZERO;
    let pages = (end - start).div_ceil(4096).min(STEP_PAGES) as usize;
    let mut regions = vec![[0u64; 3]; pages + 1];
    let mut from = start;
    while from < end {
        let to = end.min(from + STEP_PAGES * 4096);
        // struct pm_scan_arg: size, flags, start, end, walk_end, vec, vec_len, max_pages,
        // category_inverted, category_mask, category_anyof_mask, return_mask. Every page
        // matches (no mask), so every page is protected.
        let mut arg: [u64; 12] = [
            96,
            PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
            from,
            to,
            0,
            regions.as_mut_ptr() as u64,
            regions.len() as u64,
            0,
            0,
            0,
            0,
            want,
        ];
        let n = ioctl(
            pagemap,
            PAGEMAP_SCAN,
            arg.as_mut_ptr().cast(),
            "PAGEMAP_SCAN",
        )? as usize;
        // (Not `walk_end`: on this kernel it was seen short of the last run reported, at
        // a walk that reported every page.)
        if n >= regions.len() {
            return Err(io::Error::other(format!(
                "PAGEMAP_SCAN ran out of room at {from:#x}-{to:#x}"
            )));
        }
        for r in &regions[..n] {
            // In order and apart, or the scan is not what it seems.
            if r[0] >= r[1] || r[0] < from || r[1] > to || out.last().is_some_and(|l| r[0] < l.1) {
                return Err(io::Error::other(format!(
                    "PAGEMAP_SCAN gave the run {:#x}-{:#x} out of order",
                    r[0], r[1]
                )));
            }
            match out.last_mut() {
                Some(last) if last.1 == r[0] && last.2 == r[2] => last.1 = r[1],
                _ => out.push((r[0], r[1], r[2])),
            }
        }
        from = to;
    }
    Ok(out)
}

fn ioctl(fd: &impl AsRawFd, request: u64, arg: *mut libc::c_void, what: &str) -> io::Result<i64> {
    // SAFETY: `arg` points at the struct `request` reads and writes, of its size.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(r as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, Write};

    /// A python process writes two pages of a 1 MiB buffer after tracking starts: those
    /// pages, and no other of the buffer, are reported written, and a second look finds
    /// nothing new.
    #[test]
    fn the_pages_a_process_writes_are_found_and_protected_again() {
        let script = "import ctypes, sys\nb = ctypes.create_string_buffer(1 << 20)\nb.raw\nprint(ctypes.addressof(b), flush=True)\nsys.stdin.readline()\nb[5 * 4096 + 17] = b'x'\nb[9 * 4096] = b'y'\nprint('done', flush=True)\nsys.stdin.readline()\n";
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "python3 -c \"$0\"; :", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sh and python3");
        let mut input = sh.stdin.take().unwrap();
        let mut output = std::io::BufReader::new(sh.stdout.take().unwrap());
        let mut line = String::new();
        output.read_line(&mut line).unwrap();
        let addr: u64 = line.trim().parse().expect("the buffer's address");
        // The whole pages inside the buffer.
        let (start, end) = (addr.div_ceil(4096) * 4096, (addr + (1 << 20)) / 4096 * 4096);
        let page = |k: u64| (addr + k * 4096) / 4096 * 4096;
        let mut frozen = crate::ckpt::freeze::freeze(sh.id() as i32).expect("freeze");
        let (pid, tids) = frozen.tasks().into_iter().next().expect("python");
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        let exec: Vec<CodeMap> = maps
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (range, perms) = (f.next()?, f.next()?);
                let (a, b) = range.split_once('-')?;
                let path = f.nth(3).unwrap_or("").to_string();
                Some((
                    u64::from_str_radix(a, 16).ok()?,
                    u64::from_str_radix(b, 16).ok()?,
                    perms.contains('x'),
                    path,
                ))
            })
            .collect();
        let tracker = Tracker::start(pid, &tids, &exec, &[(start, end)], true).expect("tracking");
        frozen.thaw();
        drop(frozen);
        // No descriptor of it is left in the program.
        let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .map(|t| t.display().to_string())
            .collect();
        assert!(!fds.iter().any(|t| t.contains("userfaultfd")), "{fds:?}");
        input.write_all(b"\n").unwrap();
        line.clear();
        output.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "done");
        let written = tracker.written().expect("scan");
        let pages: Vec<u64> = written
            .iter()
            .flat_map(|&(a, b)| (a..b).step_by(4096))
            .collect();
        assert_eq!(pages, vec![page(5), page(9)], "{written:x?}");
        assert_eq!(tracker.written().expect("scan again"), vec![]);
        input.write_all(b"\n").unwrap();
        drop(input);
        sh.wait().unwrap();
    }
}
