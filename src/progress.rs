//! The progress line of a checkpoint or a resume that takes longer than a second: bytes
//! done and the rate, on standard error when it is a terminal (nothing otherwise), drawn
//! again in place five times a second and erased when the work is done.

use crate::sys;
use std::os::fd::AsFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A progress line shown while it lives. Dropping it stops the line at once (the thread
/// waits on a channel, not in a sleep: a resume must not wait for it).
pub struct Progress {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// Watch `done` (the bytes done so far, None while unknown) for `what`.
    pub fn start(what: &'static str, done: impl Fn() -> Option<u64> + Send + 'static) -> Progress {
        if !sys::isatty(std::io::stderr().as_fd()) {
            return Progress {
                stop: None,
                thread: None,
            };
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let mut shown = false;
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(Duration::from_millis(200))
            {
                let took = start.elapsed();
                if took < Duration::from_secs(1) {
                    continue;
                }
                if let Some(bytes) = done() {
                    eprint!("\r\x1b[K{}", line(what, bytes, took));
                    shown = true;
                }
            }
            if shown {
                eprint!("\r\x1b[K");
            }
        });
        Progress {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `checkpoint: 812.4 MiB, 391 MiB/s`.
fn line(what: &str, bytes: u64, took: Duration) -> String {
    let mib = bytes as f64 / (1 << 20) as f64;
    format!(
        "{what}: {mib:.1} MiB, {:.0} MiB/s",
        mib / took.as_secs_f64().max(0.001)
    )
}

/// The bytes of the image being written at `path` so far: its temporary file (the
/// largest, should there be two), or the image once it is in place.
pub fn image_written(path: &std::path::Path) -> Option<u64> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty())?;
    let prefix = format!(".{}.tmp-", path.file_name()?.to_string_lossy());
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter_map(|e| e.metadata().ok().map(|m| m.len()))
        .max()
}

/// The memory made so far in the processes a resume is bringing back: the private and
/// shared memory (RssAnon, RssShmem) of every descendant of the daemon `pid`. The image
/// is mapped, not read (/proc/PID/io's rchar does not see it), and what matters is how
/// much of the session's memory is in.
pub fn tree_memory(pid: i32) -> Option<u64> {
    let mut total = 0;
    let mut seen = false;
    let mut stack = crate::ckpt::procfs::children(pid);
    while let Some(p) = stack.pop() {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{p}/status")) {
            for l in status.lines() {
                if let Some(v) = l
                    .strip_prefix("RssAnon:")
                    .or_else(|| l.strip_prefix("RssShmem:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                {
                    total += v << 10;
                    seen = true;
                }
            }
        }
        stack.extend(crate::ckpt::procfs::children(p));
    }
    seen.then_some(total)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_line() {
        let l = super::line("checkpoint", 3 << 20, std::time::Duration::from_secs(2));
        assert_eq!(l, "checkpoint: 3.0 MiB, 2 MiB/s");
    }
}
