//! Pipes and named pipes (FIFOs). At checkpoint the queue is read without consuming it
//! (`sys::peek_pipe`: opened again read-only through /proc/PID/fd, `tee` copies it) with
//! the pipe's capacity; at resume a pipe is made once for all its ends and refilled, and
//! a named pipe is opened both ways (made again where its path is gone) and refilled.

use crate::records::PipeRecord;
use crate::sys::{self, trace as t};
use anyhow::{Context, Result};
use std::io;
use std::os::fd::{AsFd, OwnedFd};

/// The queue of pipe `fd` of `pid` and its capacity.
pub fn read(pid: i32, fd: i32) -> io::Result<PipeRecord> {
    let (queued, size) = sys::peek_pipe(pid, fd)?;
    Ok(PipeRecord { queued, size })
}

/// Give a pipe the capacity it had (which its queue may need: a full pipe of 1 MiB does
/// not fit the 64 KiB of a new one). A capacity above what this user may set
/// (`fs.pipe-max-size`) fails the resume, naming it, rather than leaving it smaller.
fn set_size(fd: std::os::fd::BorrowedFd, pipe: &PipeRecord) -> Result<()> {
    if pipe.size > 0 && t::get_pipe_size(fd)? != pipe.size as i32 {
        t::set_pipe_size(fd, pipe.size as i32)
            .with_context(|| format!("giving a pipe its capacity of {} bytes", pipe.size))?;
    }
    Ok(())
}

/// A pipe with its queue back: (read end, write end).
pub fn make(pipe: &PipeRecord) -> Result<(OwnedFd, OwnedFd)> {
    let (r, w) = t::pipe_with(0)?;
    set_size(w.as_fd(), pipe)?;
    sys::write_all(w.as_fd(), &pipe.queued).context("refilling the pipe with its queued bytes")?;
    Ok((r, w))
}

/// A named pipe opened for reading and writing (which never blocks), made again if its
/// path is gone, and refilled with the bytes that were queued in it.
pub fn open_fifo(target: &str, pipe: &PipeRecord) -> Result<OwnedFd> {
    let path = sys::cstring(target)?;
    if std::fs::symlink_metadata(target).is_err() {
        sys::mkfifo(&path, 0o600).with_context(|| format!("making {target} again"))?;
    }
    let fd = sys::open(&path, libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .with_context(|| format!("cannot open {target}"))?;
    set_size(fd.as_fd(), pipe)?;
    sys::write_all(fd.as_fd(), &pipe.queued).context("refilling the named pipe")?;
    Ok(fd)
}
