//! Writing to an attached user's terminal from the daemon, on a thread of its own.
//!
//! A terminal takes a few KiB per write and reports itself writable as soon as a little
//! room is free, so non-blocking writes from the event loop cost a wakeup per few KiB. A
//! blocking write sleeps inside the kernel instead, as a program writing to its terminal
//! does; the thread does that while the event loop goes on. The loop sees how much is still
//! queued (for backpressure) and is woken through a pipe when the queue drains or the
//! terminal fails.

use crate::sys;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::time::{Duration, Instant};

pub struct TerminalWriter {
    tx: Option<Sender<Vec<u8>>>,
    queued: Arc<AtomicUsize>,
    failed: Arc<AtomicBool>,
    wake: OwnedFd,
}

impl TerminalWriter {
    /// Open the terminal at `path` (a file description of our own: the user's shell keeps
    /// its flags) and start its writer. None when it is not a terminal we can open.
    pub fn open(path: &str) -> Option<TerminalWriter> {
        if !path.starts_with("/dev/") {
            return None;
        }
        let c = sys::cstring(path).ok()?;
        let tty = sys::open(&c, libc::O_WRONLY | libc::O_NOCTTY).ok()?;
        if !sys::isatty(tty.as_fd()) {
            return None;
        }
        let (wake, wake_w) = sys::pipe().ok()?;
        sys::set_nonblocking(wake.as_fd(), true).ok()?;
        sys::set_nonblocking(wake_w.as_fd(), true).ok()?;
        let (tx, rx) = channel::<Vec<u8>>();
        let queued = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicBool::new(false));
        let (q, f) = (queued.clone(), failed.clone());
        std::thread::Builder::new()
            .name("crterm-tty".into())
            .spawn(move || {
                for chunk in rx {
                    if sys::write_all(tty.as_fd(), &chunk).is_err() {
                        f.store(true, Ordering::SeqCst);
                        let _ = sys::write(wake_w.as_fd(), b"x");
                        return;
                    }
                    q.fetch_sub(chunk.len(), Ordering::SeqCst);
                    let _ = sys::write(wake_w.as_fd(), b"x");
                }
            })
            .ok()?;
        Some(TerminalWriter {
            tx: Some(tx),
            queued,
            failed,
            wake,
        })
    }

    pub fn write(&self, bytes: &[u8]) {
        if let Some(tx) = &self.tx {
            self.queued.fetch_add(bytes.len(), Ordering::SeqCst);
            if tx.send(bytes.to_vec()).is_err() {
                self.failed.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Bytes handed over but not yet written.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// The fd that becomes readable when the writer made progress or failed.
    pub fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// Consume the wakeups (call when `wake_fd` is readable).
    pub fn drain_wakeups(&self) {
        let mut buf = [0u8; 256];
        while matches!(sys::read(self.wake.as_fd(), &mut buf), Ok(n) if n > 0) {}
    }

    /// Wait until everything queued is written, at most `limit`.
    pub fn flush(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.queued() > 0 && !self.failed() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let _ = sys::poll(
                &mut [<sys::PollFd as sys::PollFdExt>::new(
                    self.wake_fd(),
                    libc::POLLIN,
                )],
                left.as_millis().clamp(1, 100) as i32,
            );
            self.drain_wakeups();
        }
    }
}

impl Drop for TerminalWriter {
    fn drop(&mut self) {
        // Closing the channel ends the thread once it has written what it holds; a
        // terminal that never takes it (stopped with XOFF) keeps that one thread waiting.
        self.tx = None;
    }
}
