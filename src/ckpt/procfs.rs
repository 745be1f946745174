//! Parsers for the text the kernel writes in /proc: a process's `status`, `stat`, `maps`,
//! a descriptor's `fdinfo` (each kind's state: eventfd, timerfd, signalfd, epoll, inotify,
//! locks) and `timers`. Pure functions of the
//! text, so each is tested on the kernel's own formats (the tests below) without a
//! process; the readers that open the files are in `state`.

use crate::records::PosixTimer;
use crate::records::{
    EpollRegistration, InotifyWatch, LockKind, LockRecord, MapRecord, TimerFdRecord,
};

/// The last value of a `status` line such as `NSpid:\t812\t3` (the innermost namespace's
/// view).
pub fn status_last(status: &str, key: &str) -> Option<i32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}

/// A `status` line holding one hexadecimal number (`SigBlk:\t0000000000010000`); 0 when
/// missing.
pub fn status_hex(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

/// The first `N` numbers of a `status` line (`Uid:\t1000\t1000\t1000\t1000`), decimal or
/// hexadecimal; missing ones are 0.
pub fn status_words<const N: usize>(status: &str, key: &str, hex: bool) -> [u64; N] {
    let mut out = [0u64; N];
    if let Some(v) = status.lines().find_map(|l| l.strip_prefix(key)) {
        for (o, f) in out.iter_mut().zip(v.split_whitespace()) {
            *o = if hex {
                u64::from_str_radix(f, 16).unwrap_or(0)
            } else {
                f.parse().unwrap_or(0)
            };
        }
    }
    out
}

/// Every number of a `status` line (`Groups:\t4 24 27 1000 `): the supplementary groups.
pub fn status_list(status: &str, key: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| {
            v.split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The fields of `stat` after the command name (field 3, the state, is index 0; it and
/// other fields that are not numbers read as 0). The command name may hold spaces and
/// parentheses: it ends at the last `)`.
pub fn stat_fields(stat: &str) -> Option<Vec<u64>> {
    let rest = stat.rsplit_once(')')?.1;
    Some(
        rest.split_whitespace()
            .map(|f| f.parse::<i64>().map_or(0, |v| v as u64))
            .collect(),
    )
}

/// A process's state letter (`R`, `S`, `T`, `Z` ...) from its `stat`.
pub fn stat_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// One line of `maps`: `start-end perms offset major:minor inode   path`. The path is the
/// rest of the line after the padding (it may hold spaces of its own).
pub fn parse_map(line: &str) -> Option<MapRecord> {
    let mut rest = line;
    let mut next = || -> Option<&str> {
        let t = rest.trim_start_matches(' ');
        let end = t.find(' ').unwrap_or(t.len());
        let (field, after) = t.split_at(end);
        rest = after;
        (!field.is_empty()).then_some(field)
    };
    let range = next()?;
    let perms = next()?.to_string();
    let offset = u64::from_str_radix(next()?, 16).ok()?;
    let (major, minor) = next()?.split_once(':')?;
    let inode = next()?.parse().ok()?;
    let path = rest.trim_start_matches(' ').to_string();
    let (s, e) = range.split_once('-')?;
    if perms.len() != 4 {
        return None;
    }
    Some(MapRecord {
        start: u64::from_str_radix(s, 16).ok()?,
        end: u64::from_str_radix(e, 16).ok()?,
        perms,
        offset,
        path,
        dev: (
            u32::from_str_radix(major, 16).ok()?,
            u32::from_str_radix(minor, 16).ok()?,
        ),
        inode,
        vm: 0,
        file_end: None,
    })
}

/// Every mapping of `smaps`: its `maps` line, with the `vm::*` bits of its `VmFlags` line
/// (which every mapping has: without it, or with a line that is neither, None).
pub fn parse_smaps(text: &str) -> Option<Vec<MapRecord>> {
    let mut maps: Vec<MapRecord> = Vec::new();
    let mut flagged = 0;
    for line in text.lines() {
        if let Some(names) = line.strip_prefix("VmFlags:") {
            if flagged == maps.len() {
                return None;
            }
            let m = maps.last_mut()?;
            m.vm = names
                .split_whitespace()
                .map(crate::records::vm::bit)
                .fold(0, |a, b| a | b);
            flagged = maps.len();
        } else if line.split_whitespace().next()?.ends_with(':') {
            continue;
        } else {
            if flagged != maps.len() {
                return None;
            }
            maps.push(parse_map(line)?);
        }
    }
    (flagged == maps.len()).then_some(maps)
}

/// A field of `fdinfo` (`pos:`, `flags:` ...), its value trimmed; empty when missing.
pub fn fdinfo_field(fdinfo: &str, key: &str) -> String {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// A descriptor's file status flags (`flags:`, octal) and offset (`pos:`, decimal); None
/// if either is missing or unparsable.
pub fn fdinfo_flags_and_pos(fdinfo: &str) -> Option<(u32, u64)> {
    Some((
        u32::from_str_radix(&fdinfo_field(fdinfo, "flags:"), 8).ok()?,
        fdinfo_field(fdinfo, "pos:").parse().ok()?,
    ))
}

/// The words of a line of fdinfo given as `key:value` or `key: value` pairs (`inotify
/// wd:1 ino:263 ...`, `tfd:        5 events:       19 data: ...`): the value after `key`.
fn word_after<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if let Some(v) = w.strip_prefix(key) {
            return if v.is_empty() { words.next() } else { Some(v) };
        }
    }
    None
}

/// The watches an inotify descriptor's fdinfo lists (`inotify wd:1 ino:263 sdev:fe00000
/// mask:2 ...`, numbers in hex; sdev is the kernel's dev_t, major << 20 | minor); None if
/// one does not parse.
pub fn parse_watches(fdinfo: &str) -> Option<Vec<InotifyWatch>> {
    fdinfo
        .lines()
        .filter_map(|l| l.strip_prefix("inotify "))
        .map(|l| {
            let field = |k: &str| word_after(l, k).and_then(|v| u64::from_str_radix(v, 16).ok());
            let sdev = field("sdev:")?;
            Some(InotifyWatch {
                wd: i32::try_from(field("wd:")?).ok()?,
                mask: u32::try_from(field("mask:")?).ok()?,
                ino: field("ino:")?,
                dev: ((sdev >> 20) as u32, (sdev & 0xfffff) as u32),
                path: String::new(),
                handle: word_after(l, "fhandle-type:")
                    .and_then(|t| i32::from_str_radix(t, 16).ok())
                    .zip(word_after(l, "f_handle:").and_then(|h| {
                        (0..h.len() / 2)
                            .map(|i| u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok())
                            .collect::<Option<Vec<u8>>>()
                    })),
            })
        })
        .collect()
}

/// An eventfd's count (`eventfd-count:`, hex) and whether it is a semaphore.
pub fn parse_eventfd(fdinfo: &str) -> Option<(u64, bool)> {
    let count = u64::from_str_radix(&fdinfo_field(fdinfo, "eventfd-count:"), 16).ok()?;
    // (Kernels before 6.4 do not say; such an eventfd is taken for a counter.)
    let semaphore = fdinfo_field(fdinfo, "eventfd-semaphore:") == "1";
    Some((count, semaphore))
}

/// A timerfd's clock and what is left of it, value and interval in ns (`it_value: (s,
/// ns)`).
pub fn parse_timerfd(fdinfo: &str) -> Option<TimerFdRecord> {
    let pair = |key: &str| -> Option<u64> {
        let v = fdinfo_field(fdinfo, key);
        let (a, b) = v.strip_prefix('(')?.strip_suffix(')')?.split_once(',')?;
        let (s, ns): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
        s.checked_mul(1_000_000_000)?.checked_add(ns)
    };
    Some(TimerFdRecord {
        clock: fdinfo_field(fdinfo, "clockid:").parse().ok()?,
        value_ns: pair("it_value:")?,
        interval_ns: pair("it_interval:")?,
    })
}

/// A signalfd's mask (`sigmask:`, hex).
pub fn parse_signalfd(fdinfo: &str) -> Option<u64> {
    u64::from_str_radix(&fdinfo_field(fdinfo, "sigmask:"), 16).ok()
}

/// An epoll set's registrations (`tfd: N events: HEX data: HEX ...`).
pub fn parse_epoll(fdinfo: &str) -> Option<Vec<EpollRegistration>> {
    fdinfo
        .lines()
        .filter(|l| l.starts_with("tfd:"))
        .map(|l| {
            Some(EpollRegistration {
                fd: word_after(l, "tfd:")?.parse().ok()?,
                events: u32::from_str_radix(word_after(l, "events:")?, 16).ok()?,
                data: u64::from_str_radix(word_after(l, "data:")?, 16).ok()?,
                desc: None,
            })
        })
        .collect()
}

/// The file locks fdinfo lists (`lock:\t1: FLOCK  ADVISORY  WRITE 1234 08:01:123 0 EOF`;
/// `->` lines are waiters, not holders): Err with the kind of a lock crterm does not carry
/// (a lease, a delegation), or with the line that does not parse.
pub fn parse_locks(fdinfo: &str) -> Result<Vec<LockRecord>, String> {
    let mut out = Vec::new();
    for line in fdinfo.lines().filter_map(|l| l.strip_prefix("lock:")) {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.get(1) == Some(&"->") {
            continue;
        }
        let bad = || format!("an unreadable lock line ({})", line.trim());
        if w.len() < 8 {
            return Err(bad());
        }
        let kind = match w[1] {
            "FLOCK" => LockKind::Flock,
            "POSIX" => LockKind::Posix,
            "OFDLCK" => LockKind::Ofd,
            other => return Err(format!("a {} lock", other.to_lowercase())),
        };
        let write = match w[3] {
            "WRITE" => true,
            "READ" => false,
            _ => return Err(bad()),
        };
        let start: i64 = w[6].parse().map_err(|_| bad())?;
        let len = match w[7] {
            "EOF" => 0,
            end => end
                .parse::<i64>()
                .ok()
                .and_then(|e| (e - start).checked_add(1))
                .ok_or_else(bad)?,
        };
        out.push(LockRecord {
            kind,
            write,
            start,
            len,
            file: w[5].to_string(),
        });
    }
    Ok(out)
}

/// `timers`: `ID:`, `signal: N/VALUE`, `notify: KIND/tid.N` or `KIND/pid.N`, `ClockID:`
/// per timer (the time left is asked from inside the process). None when a line does
/// not read as the kernel writes it.
pub fn parse_timers(text: &str) -> Option<Vec<PosixTimer>> {
    let mut out: Vec<PosixTimer> = Vec::new();
    for line in text.lines() {
        let (key, v) = line.split_once(':')?;
        let v = v.trim();
        if key == "ID" {
            out.push(PosixTimer {
                id: v.parse().ok()?,
                clock: 0,
                signo: 0,
                notify: 0,
                tid: 0,
                value: 0,
                spec: [0; 4],
            });
            continue;
        }
        let t = out.last_mut()?;
        match key {
            "signal" => {
                let (n, val) = v.split_once('/')?;
                t.signo = n.parse().ok()?;
                t.value = u64::from_str_radix(val, 16).ok()?;
            }
            "notify" => {
                let (kind, who) = v.split_once('/')?;
                t.notify = match kind {
                    "none" => libc::SIGEV_NONE,
                    "thread" => libc::SIGEV_THREAD,
                    "signal" => libc::SIGEV_SIGNAL,
                    _ => return None,
                };
                if let Some(tid) = who.strip_prefix("tid.") {
                    t.notify |= libc::SIGEV_THREAD_ID;
                    t.tid = tid.parse().ok()?;
                } else {
                    who.strip_prefix("pid.")?.parse::<i32>().ok()?;
                }
            }
            "ClockID" => t.clock = v.parse().ok()?,
            _ => {}
        }
    }
    Some(out)
}

/// `limits`: (soft, hard) per resource in the kernel's order (RLIMIT_CPU ..
/// RLIMIT_RTTIME), `unlimited` as RLIM_INFINITY. None when a line does not read.
pub fn parse_limits(text: &str) -> Option<Vec<(u64, u64)>> {
    let value = |v: &str| -> Option<u64> {
        if v == "unlimited" {
            Some(u64::MAX)
        } else {
            v.parse().ok()
        }
    };
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        // The name is padded to 26 columns and may hold spaces; the numbers follow.
        let fields = line.get(26..)?;
        let mut f = fields.split_whitespace();
        out.push((value(f.next()?)?, value(f.next()?)?));
    }
    (out.len() == 16).then_some(out)
}

/// The auxiliary vector (`auxv`, native words) as words.
pub fn auxv_words(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

/// Whether a path in /proc names a process's own files (`/proc/PID/...`, as a link to
/// one reads: `self` and `thread-self` are resolved to the pid).
pub fn names_a_process(path: &str) -> bool {
    path.strip_prefix("/proc/").is_some_and(|rest| {
        let first = rest.split('/').next().unwrap_or("");
        matches!(first, "self" | "thread-self")
            || (!first.is_empty() && first.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The children of process `pid`, from each of its threads' `children` (a child forked by
/// another thread is listed there); none when it is gone.
pub fn children(pid: i32) -> Vec<i32> {
    let mut kids = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        kids.extend(
            text.split_whitespace()
                .filter_map(|k| k.parse::<i32>().ok()),
        );
    }
    kids
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as Linux 6.x writes them (a python3 process of a session).
    const STATUS: &str = "Name:\tpython3\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\nPid:\t4242\nPPid:\t4240\nTracerPid:\t0\nUid:\t1000\t1000\t1000\t1000\nGid:\t1001\t1001\t1001\t1001\nFDSize:\t64\nGroups:\t24 27 1001 \nNStgid:\t4242\t2\nNSpid:\t4242\t2\nNSpgid:\t4242\t2\nNSsid:\t4240\t1\nThreads:\t2\nSigQ:\t0/63318\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000100\nSigBlk:\t0000000000010000\nSigIgn:\t0000000001001000\nSigCgt:\t0000000180000002\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t0\n";

    #[test]
    fn status_lines_give_ids_sets_and_groups() {
        assert_eq!(status_last(STATUS, "NSpid:"), Some(2));
        assert_eq!(status_last(STATUS, "NSsid:"), Some(1));
        assert_eq!(status_last(STATUS, "PPid:"), Some(4240));
        assert_eq!(status_last(STATUS, "Nothing:"), None);
        assert_eq!(status_hex(STATUS, "ShdPnd:"), 0x100);
        assert_eq!(status_hex(STATUS, "SigBlk:"), 0x10000);
        assert_eq!(status_hex(STATUS, "CapBnd:"), 0x1ff_ffff_ffff);
        assert_eq!(status_hex(STATUS, "Missing:"), 0);
        assert_eq!(status_words::<4>(STATUS, "Uid:", false), [1000; 4]);
        assert_eq!(status_words::<4>(STATUS, "Gid:", false), [1001; 4]);
        assert_eq!(status_words::<1>(STATUS, "NoNewPrivs:", false), [1]);
        assert_eq!(status_list(STATUS, "Groups:"), vec![24, 27, 1001]);
        assert_eq!(status_list("Groups:\t\n", "Groups:"), Vec::<u32>::new());
    }

    #[test]
    fn stat_fields_survive_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (a (weird) name) T 4240 4242 4240 34816 4242 4194560 1 2 3 4";
        let f = stat_fields(stat).unwrap();
        assert_eq!(f[0], 0, "the state letter reads as 0");
        assert_eq!(&f[1..4], &[4240, 4242, 4240]);
        assert_eq!(f[4], 34816, "field 7, the controlling terminal");
        assert_eq!(stat_state(stat), Some('T'));
        assert_eq!(stat_fields("no parenthesis"), None);
        // A negative field (no foreground group) stays a two's complement word.
        let neg = stat_fields("1 (x) S 0 1 1 0 -1").unwrap();
        assert_eq!(neg[5] as i64, -1);
    }

    #[test]
    fn maps_lines_keep_paths_with_spaces() {
        let m = parse_map(
            "7f3a1c000000-7f3a1c021000 r-xp 00002000 fe:01 1835019                    /usr/lib/x86_64-linux-gnu/libc.so.6",
        )
        .unwrap();
        assert_eq!((m.start, m.end), (0x7f3a1c000000, 0x7f3a1c021000));
        assert_eq!((m.perms.as_str(), m.offset), ("r-xp", 0x2000));
        assert_eq!((m.dev, m.inode), ((0xfe, 1), 1835019));
        assert_eq!(m.path, "/usr/lib/x86_64-linux-gnu/libc.so.6");
        let anon = parse_map("7ffd5a1c2000-7ffd5a1e3000 rw-p 00000000 00:00 0 ").unwrap();
        assert_eq!((anon.path.as_str(), anon.inode), ("", 0));
        let stack = parse_map("7ffd5a1c2000-7ffd5a1e3000 rw-p 00000000 00:00 0          [stack]");
        assert_eq!(stack.unwrap().path, "[stack]");
        let spaced = parse_map(
            "555555554000-555555556000 r--p 00000000 08:02 42       /tmp/two  spaces (deleted)",
        )
        .unwrap();
        assert_eq!(spaced.path, "/tmp/two  spaces (deleted)");
        assert!(parse_map("garbage").is_none());
        assert!(parse_map("1000-2000 rw 0 0:0 0").is_none());
    }

    #[test]
    fn fdinfo_gives_flags_offset_and_inotify_watches() {
        let file = "pos:\t4096\nflags:\t02100002\nmnt_id:\t29\nino:\t131\n";
        assert_eq!(fdinfo_flags_and_pos(file), Some((0o2100002, 4096)));
        assert_eq!(fdinfo_field(file, "mnt_id:"), "29");
        assert_eq!(fdinfo_flags_and_pos(""), None);
        let inotify = "pos:\t0\nflags:\t00\nmnt_id:\t15\nino:\t1057\ninotify wd:2 ino:1e0004 sdev:fe00001 mask:fce ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:040001e0b8d1a1c2\ninotify wd:1 ino:263 sdev:800002 mask:2 ignored_mask:0\n";
        let w = parse_watches(inotify).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!((w[0].wd, w[0].ino, w[0].mask), (2, 0x1e0004, 0xfce));
        assert_eq!(w[0].dev, (0xfe, 1));
        assert_eq!((w[1].wd, w[1].dev), (1, (8, 2)));
        assert_eq!(parse_watches(file), Some(vec![]));
        assert_eq!(parse_watches("inotify wd:zz ino:1 sdev:0 mask:2\n"), None);
    }

    #[test]
    fn fdinfo_gives_each_kinds_state() {
        let eventfd = "pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1057\neventfd-count:               2a\neventfd-id: 3\neventfd-semaphore: 1\n";
        assert_eq!(parse_eventfd(eventfd), Some((42, true)));
        assert_eq!(parse_eventfd("pos:\t0\n"), None);
        let timerfd = "clockid: 1\nticks: 0\nsettime flags: 00\nit_value: (2, 500)\nit_interval: (0, 250000000)\n";
        assert_eq!(
            parse_timerfd(timerfd),
            Some(TimerFdRecord {
                clock: 1,
                value_ns: 2_000_000_500,
                interval_ns: 250_000_000
            })
        );
        assert_eq!(parse_timerfd("clockid: 1\nit_value: (2, x)\n"), None);
        assert_eq!(parse_signalfd("sigmask:\t0000000000004002\n"), Some(0x4002));
        let epoll = "tfd:        5 events:       19 data:                5  pos:0 ino:3 sdev:f\ntfd:        7 events:       1 data: ffffffffffffffff  pos:0 ino:4 sdev:f\n";
        let r = parse_epoll(epoll).unwrap();
        assert_eq!((r[0].fd, r[0].events, r[0].data), (5, 0x19, 5));
        assert_eq!((r[1].fd, r[1].data), (7, u64::MAX));
        assert_eq!(parse_epoll("tfd: x events: 1 data: 1\n"), None);
        let locks = "lock:\t1: FLOCK  ADVISORY  WRITE 1234 08:01:123 0 EOF\nlock:\t2: POSIX  ADVISORY  READ 1234 08:01:123 10 19\nlock:\t2: -> POSIX  ADVISORY  WRITE 99 08:01:123 10 19\n";
        let l = parse_locks(locks).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(
            (l[0].kind, l[0].write, l[0].start, l[0].len),
            (LockKind::Flock, true, 0, 0)
        );
        assert_eq!(
            (l[1].kind, l[1].write, l[1].start, l[1].len),
            (LockKind::Posix, false, 10, 10)
        );
        assert_eq!(l[1].file, "08:01:123");
        assert_eq!(
            parse_locks("lock:\t1: LEASE  ACTIVE    READ 1 08:01:1 0 EOF\n"),
            Err("a lease lock".into())
        );
    }

    #[test]
    fn timers_as_proc_shows_them() {
        let text = "ID: 0\nsignal: 32/000055c7c67accb0\nnotify: signal/tid.7742\nClockID: 1\nID: 1\nsignal: 14/0000000000000000\nnotify: none/pid.7\nClockID: 0\n";
        let t = parse_timers(text).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].id, t[0].signo, t[0].clock, t[0].tid),
            (0, 32, 1, 7742)
        );
        assert_eq!(t[0].value, 0x55c7c67accb0);
        assert_eq!(t[0].notify, libc::SIGEV_SIGNAL | libc::SIGEV_THREAD_ID);
        assert_eq!((t[1].notify, t[1].tid), (libc::SIGEV_NONE, 0));
        assert_eq!(parse_timers(""), Some(vec![]));
        assert_eq!(parse_timers("signal: 3/0\n"), None, "no ID line");
        assert_eq!(parse_timers("ID: 0\nnotify: odd/pid.1\n"), None);
    }

    #[test]
    fn limits_are_read_in_the_kernels_order() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
Max cpu time              unlimited            unlimited            seconds   \n\
Max file size             unlimited            unlimited            bytes     \n\
Max data size             unlimited            unlimited            bytes     \n\
Max stack size            8388608              unlimited            bytes     \n\
Max core file size        0                    unlimited            bytes     \n\
Max resident set          unlimited            unlimited            bytes     \n\
Max processes             63318                63318                processes \n\
Max open files            1024                 524288               files     \n\
Max locked memory         8388608              8388608              bytes     \n\
Max address space         unlimited            unlimited            bytes     \n\
Max file locks            unlimited            unlimited            locks     \n\
Max pending signals       63318                63318                signals   \n\
Max msgqueue size         819200               819200               bytes     \n\
Max nice priority         0                    0                    \n\
Max realtime priority     0                    0                    \n\
Max realtime timeout      unlimited            unlimited            us        \n";
        let l = parse_limits(text).unwrap();
        assert_eq!(l.len(), 16);
        assert_eq!(l[3], (8388608, u64::MAX), "RLIMIT_STACK");
        assert_eq!(l[7], (1024, 524288), "RLIMIT_NOFILE");
        assert_eq!(l[15], (u64::MAX, u64::MAX), "RLIMIT_RTTIME");
        assert_eq!(parse_limits(&text.replace("1024 ", "many ")), None);
        let here = parse_limits(&std::fs::read_to_string("/proc/self/limits").unwrap()).unwrap();
        for (res, &lim) in here.iter().enumerate() {
            let mut r = libc::rlimit64 {
                rlim_cur: 0,
                rlim_max: 0,
            };
            unsafe { libc::getrlimit64(res as _, &mut r) };
            assert_eq!(lim, (r.rlim_cur, r.rlim_max), "resource {res}");
        }
    }

    #[test]
    fn auxv_is_read_as_words() {
        let mut b = Vec::new();
        for w in [33u64, 0x7ffd_0000_1000, 0, 0] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.push(7); // a stray byte is not a word
        assert_eq!(auxv_words(&b), vec![33, 0x7ffd_0000_1000, 0, 0]);
    }

    #[test]
    fn a_process_s_files_in_proc_are_told_from_the_system_s() {
        assert!(names_a_process("/proc/3/status"));
        assert!(names_a_process("/proc/412"));
        assert!(names_a_process("/proc/self/fd"));
        assert!(!names_a_process("/proc/meminfo"));
        assert!(!names_a_process("/proc/sys/kernel/pid_max"));
        assert!(!names_a_process("/proc/"));
        assert!(!names_a_process("/home/u/proc/3"));
    }

    #[test]
    fn smaps_gives_each_mapping_its_flags() {
        use crate::records::vm;
        let text = "\
7f917cf83000-7f917cf84000 rw-p 00000000 00:00 0 
Size:                  4 kB
KernelPageSize:        4 kB
THPeligible:           0
VmFlags: rd wr mr mw me nr wf 
7f917cf87000-7f917cf8b000 rw-s 00001000 fe:00 316534                     /home/u/a file
Size:                 16 kB
VmFlags: rd wr sh mr mw me dp lo sl ht 
";
        let maps = parse_smaps(text).unwrap();
        assert_eq!(maps.len(), 2);
        assert_eq!(
            maps[0].vm,
            vm::MAY_WRITE | vm::NO_RESERVE | vm::WIPE_ON_FORK
        );
        assert_eq!(maps[1].path, "/home/u/a file");
        assert_eq!(
            maps[1].vm,
            vm::MAY_WRITE | vm::DROPPABLE | vm::LOCKED | vm::SEALED | vm::HUGETLB
        );
        // A mapping without its VmFlags line, or a line of neither kind, is not read.
        assert!(
            parse_smaps("7f917cf83000-7f917cf84000 rw-p 00000000 00:00 0 \nSize: 4 kB\n").is_none()
        );
        assert!(parse_smaps("VmFlags: rd\n").is_none());
        assert!(parse_smaps("garbage here\n").is_none());
    }
}
