//! The client: the user's terminal in raw mode, relayed to a session daemon, with the
//! prefix key's commands. Whatever happens (exit, error, SIGTERM, SIGHUP, panic) the
//! user's terminal gets its settings back.

use super::protocol::{CheckpointOrder, FrameReader, ToClient, ToDaemon};
use crate::sys::{self, PollFd, PollFdExt, Termios, WinSize};
use anyhow::{Context, Result, bail};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The user's terminal settings from before raw mode, for the panic hook.
static SAVED_TERMIOS: OnceLock<Termios> = OnceLock::new();

/// Bytes that take a terminal out of any mode a session may have left it in, for when
/// the daemon cannot tell us which (the client is being killed).
const RESET_MODES: &str = "\x1b[?1049l\x1b[r\x1b[0m\x1b[4l\x1b[?7h\x1b[?1l\x1b>\x1b[?25h\
    \x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?1005l\x1b[?1015l\x1b[?1004l\x1b[?2004l\
    \x1b[0 q\x1b(B\x0f";

fn stdin() -> BorrowedFd<'static> {
    // SAFETY: fd 0 stays open for the life of the process.
    unsafe { BorrowedFd::borrow_raw(0) }
}

fn stdout() -> BorrowedFd<'static> {
    // SAFETY: fd 1 stays open for the life of the process.
    unsafe { BorrowedFd::borrow_raw(1) }
}

/// The terminal crterm runs in: stdin must be one.
pub fn terminal_size() -> Result<WinSize> {
    if !sys::isatty(stdin()) {
        bail!("standard input is not a terminal: crterm needs one to run a session in");
    }
    let size = sys::get_winsize(stdin()).context("cannot read the terminal's size")?;
    Ok(if size.cols == 0 || size.rows == 0 {
        WinSize { cols: 80, rows: 24 }
    } else {
        size
    })
}

/// Puts the terminal in raw mode and back, also from a panic.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> Result<RawMode> {
        let saved = sys::get_termios(stdin()).context("cannot read the terminal's settings")?;
        let _ = SAVED_TERMIOS.set(saved);
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(t) = SAVED_TERMIOS.get() {
                let _ = sys::write_all(stdout(), RESET_MODES.as_bytes());
                let _ = sys::set_termios(stdin(), t);
            }
            previous(info);
        }));
        sys::set_termios(stdin(), &sys::make_raw(&saved))
            .context("cannot put the terminal in raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = sys::set_termios(stdin(), &self.saved);
    }
}

pub fn connect(socket: &Path, name: &str) -> Result<UnixStream> {
    let stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            anyhow::anyhow!("no session named {name}")
        }
        std::io::ErrorKind::PermissionDenied => {
            anyhow::anyhow!("session {name} belongs to another user")
        }
        _ => anyhow::anyhow!("cannot reach session {name}: {e}"),
    })?;
    let cred = sys::peer_cred(stream.as_fd())?;
    if cred.uid != sys::geteuid() {
        bail!(
            "session {name} is served by another user (uid {}): refusing it",
            cred.uid
        );
    }
    Ok(stream)
}

enum Outcome {
    Exited(i32),
    Detached(String),
}

/// Attach this terminal to the session behind `socket` until it ends or detaches.
/// Returns the exit status crterm should exit with.
pub fn attach(socket: &Path, name: &str, prefix: u8) -> Result<i32> {
    let mut stream = connect(socket, name)?;
    let size = terminal_size()?;
    // The daemon writes to our terminal itself when it can open it (see daemon.rs).
    let tty = std::fs::read_link("/proc/self/fd/1")
        .ok()
        .filter(|_| sys::isatty(stdout()))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let signals = sys::signalfd(&[
        libc::SIGWINCH,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGQUIT,
    ])?;
    // Raw before the daemon draws: a key typed as soon as the screen is there must reach
    // the session as it is, not be echoed, cooked or turned into a signal by this
    // terminal's line discipline.
    let raw = RawMode::enter()?;
    stream.write_all(
        &ToDaemon::Attach {
            cols: size.cols,
            rows: size.rows,
            tty,
        }
        .encode(),
    )?;
    let outcome = relay(&mut stream, signals.as_fd(), prefix);
    drop(raw);
    match outcome? {
        Outcome::Exited(code) => Ok(code),
        Outcome::Detached(reason) => {
            // The first line is what happened; more lines (after a checkpoint) say what
            // to do next.
            let mut lines = reason.lines();
            println!(
                "[{} from session {name}]",
                lines.next().unwrap_or("detached")
            );
            for l in lines {
                println!("{l}");
            }
            Ok(0)
        }
    }
}

fn relay(stream: &mut UnixStream, signals: BorrowedFd, prefix: u8) -> Result<Outcome> {
    let mut reader = FrameReader::default();
    let mut buf = vec![0u8; 256 * 1024];
    let mut prefix_pending = false;
    // A notice or help box is over the screen until this moment (or the next key).
    let mut overlay_until: Option<Instant> = None;
    let mut help_shown = false;
    loop {
        let timeout = overlay_until.map_or(-1, |t| {
            t.saturating_duration_since(Instant::now()).as_millis() as i32
        });
        let mut fds = [
            PollFd::new(0, libc::POLLIN),
            PollFd::new(stream.as_raw_fd(), libc::POLLIN),
            PollFd::new(signals.as_raw_fd(), libc::POLLIN),
        ];
        sys::poll(&mut fds, timeout)?;
        if let Some(t) = overlay_until
            && Instant::now() >= t
        {
            overlay_until = None;
            stream.write_all(&ToDaemon::Redraw.encode())?;
        }
        if fds[2].has(libc::POLLIN) {
            for sig in sys::read_signals(signals) {
                if sig == libc::SIGWINCH {
                    if let Ok(s) = sys::get_winsize(stdin()) {
                        stream.write_all(
                            &ToDaemon::Resize {
                                cols: s.cols,
                                rows: s.rows,
                            }
                            .encode(),
                        )?;
                    }
                } else {
                    // Killed: the session runs on. Detach, so that the daemon (which
                    // writes to the terminal) takes it out of the session's modes.
                    if !detach_before_exit(stream, &mut reader) {
                        let _ = sys::write_all(stdout(), RESET_MODES.as_bytes());
                    }
                    return Ok(Outcome::Exited(128 + sig));
                }
            }
        }
        if fds[1].has(libc::POLLIN | libc::POLLHUP | libc::POLLERR) {
            let n = match stream.read(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => r.unwrap_or(0),
            };
            if n == 0 {
                let _ = sys::write_all(stdout(), RESET_MODES.as_bytes());
                bail!("lost the connection to the session daemon");
            }
            reader.push(&buf[..n]);
            while let Some((kind, payload)) = reader.next_frame()? {
                match ToClient::decode(kind, &payload)? {
                    ToClient::Output(bytes) => sys::write_all(stdout(), &bytes)?,
                    ToClient::Checkpointed { .. } => {
                        // The daemon drew it; take it away again in a moment.
                        overlay_until = Some(Instant::now() + Duration::from_secs(3));
                    }
                    ToClient::Exit(code) => return Ok(Outcome::Exited(code)),
                    ToClient::Detached(reason) => return Ok(Outcome::Detached(reason)),
                    ToClient::Refused(reason) => bail!("{reason}"),
                    ToClient::Info(_) | ToClient::Ended { .. } => {}
                }
            }
        }
        if fds[0].has(libc::POLLIN | libc::POLLHUP) {
            let n = sys::read(stdin(), &mut buf)?;
            if n == 0 {
                // The terminal is gone: detach and let the session run on.
                stream.write_all(&ToDaemon::Detach.encode())?;
                continue;
            }
            if help_shown || overlay_until.is_some() {
                help_shown = false;
                overlay_until = None;
                stream.write_all(&ToDaemon::Redraw.encode())?;
            }
            let mut input = Vec::with_capacity(n);
            for &b in &buf[..n] {
                if prefix_pending {
                    prefix_pending = false;
                    let command = match b {
                        b'd' => Some(ToDaemon::Checkpoint(CheckpointOrder::from_keys(true))),
                        b'c' => Some(ToDaemon::Checkpoint(CheckpointOrder::from_keys(false))),
                        b'x' => Some(ToDaemon::Detach),
                        b'?' => {
                            help_shown = true;
                            Some(ToDaemon::Help { prefix })
                        }
                        _ if b == prefix => {
                            input.push(prefix);
                            None
                        }
                        _ => None,
                    };
                    if let Some(cmd) = command {
                        flush_input(stream, &mut input)?;
                        stream.write_all(&cmd.encode())?;
                    }
                } else if b == prefix {
                    prefix_pending = true;
                } else {
                    input.push(b);
                }
            }
            flush_input(stream, &mut input)?;
        }
    }
}

/// `--detached --wait`: stay until the session `stream` watches ends, and return the
/// status to exit with: `REQUEUE_STATUS` when a signal (to crterm, taken from `signals`,
/// or SIGTERM to the daemon) had it checkpointed and ended, the command's own when it
/// ended by itself, 1 when the checkpoint failed. A second signal changes nothing.
pub fn watch(mut stream: UnixStream, name: &str, signals: BorrowedFd) -> Result<i32> {
    let mut reader = FrameReader::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut asked = false;
    loop {
        let mut fds = [
            PollFd::new(stream.as_raw_fd(), libc::POLLIN),
            PollFd::new(signals.as_raw_fd(), libc::POLLIN),
        ];
        sys::poll(&mut fds, -1)?;
        if fds[1].has(libc::POLLIN) {
            for sig in sys::read_signals(signals) {
                if !asked {
                    asked = true;
                    eprintln!(
                        "crterm: {}: checkpointing session {name} and ending it",
                        sys::signal_name(sig)
                    );
                    stream.write_all(&ToDaemon::Shutdown.encode())?;
                }
            }
        }
        if fds[0].has(libc::POLLIN | libc::POLLHUP | libc::POLLERR) {
            let n = match stream.read(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => r.unwrap_or(0),
            };
            if n == 0 {
                bail!("session {name}'s daemon went away without saying how the session ended");
            }
            reader.push(&buf[..n]);
            while let Some((kind, payload)) = reader.next_frame()? {
                match ToClient::decode(kind, &payload)? {
                    ToClient::Ended { status, text } => {
                        for line in text.lines() {
                            eprintln!("crterm: session {name}: {line}");
                        }
                        return Ok(status);
                    }
                    ToClient::Refused(reason) => bail!("{reason}"),
                    _ => {}
                }
            }
        }
    }
}

fn flush_input(stream: &mut UnixStream, input: &mut Vec<u8>) -> Result<()> {
    if !input.is_empty() {
        stream.write_all(&ToDaemon::Input(std::mem::take(input)).encode())?;
    }
    Ok(())
}

/// Ask the daemon to detach us and wait (briefly) until it has; false when it did not
/// answer in time.
fn detach_before_exit(stream: &mut UnixStream, reader: &mut FrameReader) -> bool {
    if stream.write_all(&ToDaemon::Detach.encode()).is_err() {
        return false;
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 64 * 1024];
    loop {
        loop {
            match reader.next_frame() {
                Ok(Some((kind, payload))) => match ToClient::decode(kind, &payload) {
                    Ok(ToClient::Output(bytes)) => {
                        let _ = sys::write_all(stdout(), &bytes);
                    }
                    Ok(ToClient::Detached(_)) => return true,
                    Ok(_) => {}
                    Err(_) => return false,
                },
                Ok(None) => break,
                Err(_) => return false,
            }
        }
        match stream.read(&mut buf) {
            Ok(n) if n > 0 => reader.push(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            _ => return false,
        }
    }
}
