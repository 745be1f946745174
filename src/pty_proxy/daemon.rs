//! The session daemon: one per session, started detached from the user's terminal by
//! `crterm start`. It owns the pty master and the terminal model, serves clients on the
//! control socket, and ends (removing its socket) when the session's command ends.
//!
//! One poll loop, no timers: an idle session costs no CPU.
//!
//! The daemon is the only writer to the attached user's terminal: it opens the terminal
//! the client names (a file description of its own, so the user's shell keeps its flags)
//! and writes the session's output, repaints and overlays to it from a writer thread
//! (`terminal_writer`), as tmux's server writes to its clients' terminals. A client whose
//! terminal cannot be opened gets the same bytes as Output frames and writes them itself.

use super::overlay;
use super::protocol::{
    self, ByteQueue, CheckpointOrder, FrameReader, SessionInfo, ToClient, ToDaemon,
};
use super::terminal_writer::TerminalWriter;
use super::world::{self, World};
use crate::sys::{self, PollFd, PollFdExt, WinSize};
use crate::term_model::{Term, TermParser};
use anyhow::{Context, Result};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

pub struct DaemonConfig {
    pub name: String,
    pub socket: PathBuf,
    /// Where checkpoints of this session are to be written.
    pub image: PathBuf,
    pub argv: Vec<String>,
    pub size: WinSize,
    pub history_lines: usize,
    /// Where to report "ok" or "err <reason>" to the starting client.
    pub ready_fd: RawFd,
    /// Resume the session in this image instead of starting `argv`.
    pub resume: Option<crate::restore::Options>,
    pub resume_from: Option<PathBuf>,
    /// `resume_from` is this inherited descriptor (`/proc/self/fd/N`): closed once read.
    pub resume_fd: Option<RawFd>,
    /// An inherited connection to a client that waits for the session to end (`start
    /// --wait`): told with `Ended` how it did.
    pub watch_fd: Option<RawFd>,
    /// Started with `--cpu baseline` (a resumed session: as its image says).
    pub cpu_baseline: bool,
    /// Checkpoint the session into `image` this often (`--autosave`).
    pub autosave: Option<std::time::Duration>,
    /// After a checkpoint into `image`, keep this many generations of it (0: all).
    pub keep: usize,
    /// How long the checkpoint that SIGTERM or SIGHUP asks for may take before the
    /// session ends without it.
    pub shutdown_deadline: std::time::Duration,
}

/// Stop reading the program's output while this much is waiting for a slow terminal: the
/// program then blocks on its terminal, as it would on a slow real one.
const CLIENT_BACKLOG_LIMIT: usize = 1 << 20;

/// How long a detach or the session's end waits for a slow terminal to take the last bytes.
const FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

struct Conn {
    id: u64,
    stream: UnixStream,
    reader: FrameReader,
    /// Frames for the client.
    out: ByteQueue,
    /// The client's terminal, written by the daemon (None: through the client).
    tty: Option<TerminalWriter>,
    attached: bool,
    /// Told with `Ended` how the session ended (`start --wait`).
    watching: bool,
    /// Close once everything queued is written.
    closing: bool,
    /// A descriptor the client sent with its request: the stream `checkpoint -o -`
    /// writes the image to.
    passed: Option<OwnedFd>,
}

impl Conn {
    fn send(&mut self, msg: &ToClient) {
        self.out.push(&msg.encode());
    }

    /// Bytes for the user's terminal: straight to it, or through the client.
    fn write_terminal(&mut self, bytes: &[u8]) {
        match &self.tty {
            Some(t) => t.write(bytes),
            None => protocol::push_output(self.out.buffer(), bytes),
        }
    }

    fn backlog(&self) -> usize {
        self.out.len() + self.tty.as_ref().map_or(0, TerminalWriter::queued)
    }

    /// Let what is queued for the terminal reach it (a detach or the end of the session
    /// must not leave the last screen half drawn), then let the terminal go.
    fn release_terminal(&mut self) {
        if let Some(t) = self.tty.take() {
            t.flush(FLUSH_LIMIT);
        }
    }

    /// The client or its terminal went away.
    fn drop_terminal(&mut self) {
        self.tty = None;
        self.attached = false;
        self.closing = true;
    }
}

/// How long a notice crterm draws over the screen stays, unless a key is typed first.
const NOTICE_TIME: std::time::Duration = std::time::Duration::from_secs(6);

struct Daemon {
    name: String,
    command: String,
    image: PathBuf,
    started_unix: u64,
    listener: UnixListener,
    socket: PathBuf,
    world: World,
    parser: TermParser,
    master_open: bool,
    /// Typed input not yet taken by the pty.
    to_master: Vec<u8>,
    conns: Vec<Conn>,
    next_conn: u64,
    signals: OwnedFd,
    uid: u32,
    /// The checkpoint under way, if any.
    checkpoint: Option<Checkpoint>,
    /// The session is frozen for a checkpoint, whose thread takes typed keys out of the
    /// pty and puts them back: nothing is written to the pty meanwhile, so that keys typed
    /// now come after them, nor read from it, for the echo of those put back is the
    /// checkpoint's to read.
    input_held: bool,
    /// The session's programs use x86-64-v2 code only (`--cpu baseline`).
    cpu_baseline: bool,
    /// A resumed session: at the first attach the programs are made to redraw (SIGWINCH
    /// by a change of size, even when the size is the same).
    redraw_on_attach: bool,
    /// A notice crterm drew over the screen, and when the screen is drawn again from the
    /// model without it (sooner if a key is typed).
    notice_until: Option<std::time::Instant>,
    /// What the last checkpoint left for the next to store only what changed.
    tracking: std::sync::Arc<std::sync::Mutex<crate::ckpt::incremental::Tracking>>,
    /// Clients' checkpoints asked for while one was under way, in order.
    queued: std::collections::VecDeque<(u64, CheckpointOrder, Option<OwnedFd>)>,
    autosave: Option<std::time::Duration>,
    /// When the next autosave is due (taken once no checkpoint is under way).
    next_autosave: Option<std::time::Instant>,
    keep: usize,
    shutdown_deadline: std::time::Duration,
    /// SIGTERM or SIGHUP came: the session ends once it is checkpointed, or at this time.
    shutdown: Option<std::time::Instant>,
    /// The session is being ended (its init killed): no checkpoint starts any more.
    ending: bool,
    /// Why the daemon itself ended the session, for watching clients: the status `start
    /// --wait` exits with and what happened (None: the command ended, or was killed).
    end_word: Option<(i32, String)>,
}

/// Who a checkpoint is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// A client on the control socket (its connection).
    Client(u64),
    /// The autosave timer.
    Autosave,
    /// SIGTERM or SIGHUP: the session ends once its image is written.
    Shutdown,
}

/// A checkpoint at work.
struct Checkpoint {
    hold: crate::ckpt::hold::Hold,
    why: Why,
    path: PathBuf,
    exit: bool,
}

/// Run the daemon; returns the exit status of the session's command.
pub fn run(cfg: DaemonConfig) -> i32 {
    // SAFETY: the fd was handed to us by the starting client for this purpose only.
    let ready = unsafe { OwnedFd::from_raw_fd(cfg.ready_fd) };
    let _ = sys::set_cloexec(ready.as_fd(), true);
    let socket = cfg.socket.clone();
    match setup(cfg) {
        Ok(mut d) => {
            let _ = sys::write_all(ready.as_fd(), b"ok\n");
            drop(ready);
            let code = d.serve();
            let _ = std::fs::remove_file(&socket);
            code
        }
        Err(e) => {
            let reason = format!("{e:#}").replace('\n', " ");
            let _ = sys::write_all(ready.as_fd(), format!("err {reason}\n").as_bytes());
            1
        }
    }
}

fn setup(cfg: DaemonConfig) -> Result<Daemon> {
    // Taken (close-on-exec) before the session's init is forked.
    let watch = cfg.watch_fd.map(sys::inherited_fd).transpose()?;
    let listener = listen_at(&cfg.socket, &cfg.name)?;
    let socket_path = cfg.socket.clone();
    let cleanup = scopeguard(&socket_path);
    listener.set_nonblocking(true)?;
    // Block SIGCHLD (and the rest) before the init exists: a command that ends at once
    // would otherwise send its SIGCHLD while it is still discarded, and the daemon would
    // never learn that the session is over. The init and the command unblock what they
    // need.
    let signals = sys::signalfd(&[libc::SIGCHLD, libc::SIGTERM, libc::SIGHUP, libc::SIGINT])?;
    sys::sigchld_on_exit_only()?;
    // world::spawn and world::resume fork: nothing has started a thread in this process.
    let mut cpu_baseline = cfg.cpu_baseline;
    let tracking: std::sync::Arc<std::sync::Mutex<crate::ckpt::incremental::Tracking>> =
        Default::default();
    let (world, term, command) = match (&cfg.resume_from, &cfg.resume) {
        (Some(path), Some(opts)) => {
            let passed = cfg.resume_fd.map(sys::inherited_fd).transpose()?;
            let what = match passed {
                Some(_) => "the image from standard input".to_string(),
                None => path.display().to_string(),
            };
            // The page chunks are checked as they are decoded (`load_with`).
            let crate::load::Loaded {
                image,
                term,
                record,
                ancestors,
            } = crate::load::load_with(path, true, true)
                .map_err(|e| anyhow::anyhow!("cannot resume {what}: {e}"))?;
            // An image from a file can be the parent of the session's next checkpoint.
            let from_file = passed.is_none();
            drop(passed);
            // Who may run this session as it was: before anything is made.
            let resumer = crate::restore::Resumer::me(image.owner);
            let identity_warnings = crate::restore::check_identity(&record, &resumer)
                .map_err(|e| anyhow::anyhow!("cannot resume {what}: {e}"))?;
            let opts = crate::restore::Options {
                set_ids: resumer.may_set_ids,
                track: from_file,
                ..*opts
            };
            let mut world = world::resume(&record, &image, &ancestors, &opts)?;
            world.warnings.splice(0..0, identity_warnings);
            // The trackers the resume started: the next checkpoint stores only what was
            // written since, and refers to this image for the rest.
            let trackers = std::mem::take(&mut world.trackers);
            if from_file && !trackers.is_empty() {
                tracking.lock().unwrap_or_else(|e| e.into_inner()).adopt(
                    world.init_pid,
                    trackers,
                    path,
                    &image.id,
                );
            }
            cpu_baseline = record.machine.cpu_baseline;
            (world, term, record.command)
        }
        _ => {
            let world = world::spawn(&cfg.argv, cfg.size)?;
            let term = Term::with_history(
                cfg.size.cols as usize,
                cfg.size.rows as usize,
                cfg.history_lines,
            );
            (world, term, cfg.argv.join(" "))
        }
    };
    sys::set_nonblocking(world.master.as_fd(), true)?;
    cleanup.defuse();
    Ok(Daemon {
        queued: Default::default(),
        autosave: cfg.autosave,
        next_autosave: cfg.autosave.map(|every| std::time::Instant::now() + every),
        keep: cfg.keep,
        shutdown_deadline: cfg.shutdown_deadline,
        shutdown: None,
        ending: false,
        end_word: None,
        redraw_on_attach: cfg.resume.is_some(),
        notice_until: None,
        tracking,
        name: cfg.name,
        command,
        image: cfg.image,
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        listener,
        socket: cfg.socket,
        world,
        parser: TermParser::new(term),
        master_open: true,
        to_master: Vec::new(),
        conns: watch
            .map(|fd| -> Result<Conn> {
                let stream = UnixStream::from(fd);
                stream.set_nonblocking(true)?;
                Ok(Conn {
                    id: 0,
                    stream,
                    reader: FrameReader::default(),
                    out: ByteQueue::default(),
                    tty: None,
                    attached: false,
                    watching: true,
                    closing: false,
                    passed: None,
                })
            })
            .transpose()?
            .into_iter()
            .collect(),
        next_conn: 0,
        signals,
        uid: sys::geteuid(),
        checkpoint: None,
        input_held: false,
        cpu_baseline,
    })
}

/// Listen on `path`, which appears only once the socket listens, with mode 0600: it is
/// bound under a temporary name beside it and then hard-linked into place (failing if a
/// session holds the name). Bound straight at `path`, it would exist for a moment before
/// `listen`, and a client that connected then (another `crterm resume` of the same image,
/// choosing a name; `crterm ls`) would take it for the stale socket of a crashed daemon
/// and remove it.
fn listen_at(path: &std::path::Path, name: &str) -> Result<UnixListener> {
    let tmp = path.with_extension(format!("sock.new-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener =
        UnixListener::bind(&tmp).with_context(|| format!("cannot listen on {}", tmp.display()))?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .context("socket permissions")
        .and_then(|()| {
            std::fs::hard_link(&tmp, path).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    anyhow::anyhow!("a session named {name} is already running")
                } else {
                    anyhow::anyhow!("cannot listen on {}: {e}", path.display())
                }
            })
        });
    let _ = std::fs::remove_file(&tmp);
    placed.map(|()| listener)
}

/// Removes the socket file unless defused (setup failed after binding).
struct SocketGuard<'a>(&'a std::path::Path, std::cell::Cell<bool>);
fn scopeguard(p: &std::path::Path) -> SocketGuard<'_> {
    SocketGuard(p, std::cell::Cell::new(true))
}
impl SocketGuard<'_> {
    fn defuse(&self) {
        self.1.set(false);
    }
}
impl Drop for SocketGuard<'_> {
    fn drop(&mut self) {
        if self.1.get() {
            let _ = std::fs::remove_file(self.0);
        }
    }
}

impl Daemon {
    fn serve(&mut self) -> i32 {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let backlog = self
                .conns
                .iter()
                .filter(|c| c.attached)
                .map(Conn::backlog)
                .sum::<usize>();
            let mut fds = vec![
                PollFd::new(self.listener.as_raw_fd(), libc::POLLIN),
                PollFd::new(self.signals.as_raw_fd(), libc::POLLIN),
            ];
            let mut master_events = 0;
            // While the session is frozen its master is the checkpoint's: putting typed
            // keys back reads their echo off it.
            if self.master_open && backlog < CLIENT_BACKLOG_LIMIT && !self.input_held {
                master_events |= libc::POLLIN;
            }
            if self.master_open && !self.to_master.is_empty() && !self.input_held {
                master_events |= libc::POLLOUT;
            }
            fds.push(PollFd::new(
                if master_events != 0 {
                    self.world.master.as_raw_fd()
                } else {
                    -1
                },
                master_events,
            ));
            fds.push(PollFd::new(
                self.checkpoint
                    .as_ref()
                    .map_or(-1, |c| c.hold.wake.as_raw_fd()),
                libc::POLLIN,
            ));
            // Two entries per connection: its socket and its terminal writer's wakeups.
            for c in &self.conns {
                let mut ev = libc::POLLIN;
                if !c.out.is_empty() {
                    ev |= libc::POLLOUT;
                }
                fds.push(PollFd::new(c.stream.as_raw_fd(), ev));
                let wake = c.tty.as_ref().map_or(-1, TerminalWriter::wake_fd);
                fds.push(PollFd::new(wake, libc::POLLIN));
            }
            // The next timer: a notice to take away, an autosave, the shutdown deadline.
            let next = [
                self.notice_until,
                self.next_autosave.filter(|_| self.checkpoint.is_none()),
                self.shutdown,
            ]
            .into_iter()
            .flatten()
            .min();
            let timeout = next.map_or(-1, |t| {
                t.saturating_duration_since(std::time::Instant::now())
                    .as_millis()
                    .clamp(1, 60_000) as i32
            });
            if sys::poll(&mut fds, timeout).is_err() {
                continue;
            }
            let now = std::time::Instant::now();
            if self.notice_until.is_some_and(|t| now >= t) {
                self.clear_notice();
            }
            if self.shutdown.is_some_and(|t| now >= t) {
                self.shutdown_too_late();
            }
            if self.next_autosave.is_some_and(|t| now >= t) {
                self.next_checkpoint();
            }
            if fds[1].has(libc::POLLIN) {
                for sig in sys::read_signals(self.signals.as_fd()) {
                    match sig {
                        libc::SIGCHLD => {}
                        libc::SIGTERM | libc::SIGHUP => self.shut_down(),
                        _ => self.end_session(),
                    }
                }
                if let Ok(Some((_, status))) = sys::wait(self.world.init_pid, false) {
                    return self.finish(status.code(), &mut buf);
                }
            }
            let master = fds[2];
            if master.has(libc::POLLIN | libc::POLLHUP | libc::POLLERR) {
                self.read_master(&mut buf);
            }
            if master.has(libc::POLLOUT) {
                self.write_master();
            }
            if fds[3].has(libc::POLLIN | libc::POLLHUP | libc::POLLERR) {
                self.checkpoint_events();
            }
            for i in 0..self.conns.len() {
                let (sock, wake) = (fds[4 + 2 * i], fds[5 + 2 * i]);
                if wake.has(libc::POLLIN)
                    && let Some(t) = &self.conns[i].tty
                {
                    t.drain_wakeups();
                    if t.failed() {
                        self.conns[i].drop_terminal();
                    }
                }
                if sock.revents != 0 {
                    self.service_conn(i, &sock, &mut buf);
                }
            }
            self.conns.retain(|c| !(c.closing && c.out.is_empty()));
            if fds[0].has(libc::POLLIN) {
                self.accept();
            }
        }
    }

    fn read_master(&mut self, buf: &mut [u8]) {
        let mut filled = 0;
        while filled < buf.len() {
            match sys::read(self.world.master.as_fd(), &mut buf[filled..]) {
                Ok(0) => {
                    self.master_open = false;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // EIO: no process holds the pty's slave any more; the session is ending.
                Err(_) => {
                    self.master_open = false;
                    break;
                }
            }
        }
        if filled > 0 {
            self.output(&buf[..filled]);
        }
    }

    fn output(&mut self, bytes: &[u8]) {
        self.parser.advance(bytes);
        if let Some(c) = self.conns.iter_mut().find(|c| c.attached) {
            c.write_terminal(bytes);
        }
    }

    fn write_master(&mut self) {
        if self.input_held {
            return;
        }
        match sys::write(self.world.master.as_fd(), &self.to_master) {
            Ok(n) => {
                self.to_master.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => self.to_master.clear(),
        }
    }

    fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            let _ = stream.set_nonblocking(true);
            self.next_conn += 1;
            let mut conn = Conn {
                id: self.next_conn,
                stream,
                reader: FrameReader::default(),
                out: ByteQueue::default(),
                tty: None,
                attached: false,
                watching: false,
                closing: false,
                passed: None,
            };
            match sys::peer_cred(conn.stream.as_fd()) {
                Ok(cred) if cred.uid == self.uid => {}
                _ => {
                    conn.send(&ToClient::Refused(format!(
                        "session {} belongs to another user",
                        self.name
                    )));
                    conn.closing = true;
                }
            }
            self.conns.push(conn);
        }
    }

    fn service_conn(&mut self, i: usize, pfd: &PollFd, buf: &mut [u8]) {
        if pfd.has(libc::POLLOUT) {
            let c = &mut self.conns[i];
            match c.stream.write(c.out.pending()) {
                Ok(n) => c.out.consume(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    c.out.clear();
                    c.closing = true;
                }
            }
        }
        if !pfd.has(libc::POLLIN | libc::POLLHUP | libc::POLLERR) {
            return;
        }
        let n = match sys::recv_with_fd(self.conns[i].stream.as_fd(), buf) {
            Ok((n, fd)) => {
                if fd.is_some() {
                    self.conns[i].passed = fd;
                }
                n
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => 0,
        };
        if n == 0 {
            // The client is gone: stop writing to its terminal too.
            let c = &mut self.conns[i];
            c.out.clear();
            c.drop_terminal();
            // A waiting crterm (`start --wait`, a batch job's step) killed: the session
            // lives as long as its job, so it is checkpointed and ended as on SIGTERM.
            if std::mem::take(&mut c.watching) {
                self.shut_down();
            }
            return;
        }
        if self.conns[i].closing {
            return;
        }
        self.conns[i].reader.push(&buf[..n]);
        loop {
            let frame = match self.conns[i].reader.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => {
                    self.conns[i].closing = true;
                    break;
                }
            };
            match ToDaemon::decode(frame.0, &frame.1) {
                Ok(msg) => self.handle(i, msg),
                Err(_) => {
                    self.conns[i].closing = true;
                    break;
                }
            }
        }
    }

    /// Make the foreground programs of a resumed session redraw: a change of size sends
    /// them SIGWINCH; when the terminal has the size the pty already has, they are sent
    /// one SIGWINCH directly (the repaint has already put back the scrolling region and
    /// the rest of the terminal's state). Changing the size and changing it back would do
    /// too, but vim leaves keys typed during two back-to-back resizes unprocessed until the
    /// next key: found by the 20-cycle test under load.
    fn redraw_programs(&mut self, cols: u16, rows: u16) {
        let now = sys::get_winsize(self.world.master.as_fd()).ok();
        if now == Some(WinSize { cols, rows })
            && let Ok(pgrp) = sys::foreground_group(self.world.master.as_fd())
            && pgrp > 1
        {
            let _ = sys::kill(-pgrp, libc::SIGWINCH);
        }
    }

    fn resize(&mut self, cols: u16, rows: u16) {
        if cols == 0 || rows == 0 {
            return;
        }
        let size = WinSize { cols, rows };
        let _ = sys::set_winsize(self.world.master.as_fd(), size);
        self.parser.term.resize(cols as usize, rows as usize);
    }

    /// Draw the screen again from the model, without the notice over it.
    fn clear_notice(&mut self) {
        if self.notice_until.take().is_none() {
            return;
        }
        let screen = self.parser.term.repaint_screen();
        for c in self.conns.iter_mut().filter(|c| c.attached) {
            c.write_terminal(&screen);
        }
    }

    fn handle(&mut self, i: usize, msg: ToDaemon) {
        match msg {
            ToDaemon::Attach { cols, rows, tty } => {
                let leave = self.parser.term.leave_sequence();
                for (j, other) in self.conns.iter_mut().enumerate() {
                    if j != i && other.attached {
                        other.write_terminal(&leave);
                        other.release_terminal();
                        other.send(&ToClient::Detached("attached from another terminal".into()));
                        other.attached = false;
                        other.closing = true;
                    }
                }
                let redraw = std::mem::take(&mut self.redraw_on_attach);
                if redraw {
                    self.redraw_programs(cols, rows);
                }
                self.resize(cols, rows);
                let repaint = self.parser.term.repaint();
                let c = &mut self.conns[i];
                c.tty = TerminalWriter::open(&tty);
                c.attached = true;
                c.write_terminal(&repaint);
                if !self.world.warnings.is_empty() {
                    // One line each: which connections came back closed, and so on.
                    let text = format!("resumed:\n{}", self.world.warnings.join("\n"));
                    let (cols, lines) = (self.parser.term.cols, self.parser.term.lines);
                    c.write_terminal(&overlay::notice(&text, cols, lines));
                    self.notice_until = Some(std::time::Instant::now() + NOTICE_TIME);
                }
            }
            ToDaemon::Input(bytes) => {
                if self.conns[i].attached {
                    self.clear_notice();
                    self.to_master.extend_from_slice(&bytes);
                    self.write_master();
                }
            }
            ToDaemon::Resize { cols, rows } => {
                if self.conns[i].attached {
                    self.resize(cols, rows);
                }
            }
            ToDaemon::Detach => {
                let leave = self.parser.term.leave_sequence();
                let c = &mut self.conns[i];
                c.write_terminal(&leave);
                c.release_terminal();
                c.send(&ToClient::Detached("detached".into()));
                c.attached = false;
                c.closing = true;
            }
            ToDaemon::Checkpoint(order) => {
                let conn = self.conns[i].id;
                let stream = self.conns[i].passed.take();
                if self.shutdown.is_some() || self.ending {
                    let text = "checkpoint failed: the session is ending".to_string();
                    self.checkpoint_done(Why::Client(conn), false, text, false, None);
                } else if self.checkpoint.is_some() {
                    // One at a time: this one once those before it are done.
                    self.queued.push_back((conn, order, stream));
                } else if let Err(text) = self.start_checkpoint(Why::Client(conn), &order, stream) {
                    self.checkpoint_done(Why::Client(conn), false, text, order.exit, None);
                }
            }
            ToDaemon::Help { prefix } => {
                let (cols, lines) = (self.parser.term.cols, self.parser.term.lines);
                let c = &mut self.conns[i];
                if c.attached {
                    c.write_terminal(&overlay::help(prefix, cols, lines));
                }
            }
            ToDaemon::Redraw => {
                let screen = self.parser.term.repaint_screen();
                let c = &mut self.conns[i];
                if c.attached {
                    c.write_terminal(&screen);
                }
            }
            ToDaemon::Shutdown => self.shut_down(),
            ToDaemon::Info => {
                let info = SessionInfo {
                    name: self.name.clone(),
                    command: self.command.clone(),
                    daemon_pid: sys::getpid(),
                    started_unix: self.started_unix,
                    attached: self.conns.iter().any(|c| c.attached),
                    image: self.image.display().to_string(),
                };
                let c = &mut self.conns[i];
                c.send(&ToClient::Info(info));
                c.closing = true;
            }
        }
    }

    /// Start the next checkpoint if none is under way: the one shutting the session down,
    /// else the next a client asked for, else an autosave that is due.
    fn next_checkpoint(&mut self) {
        if self.ending {
            return;
        }
        while self.checkpoint.is_none() {
            if self.shutdown.is_some() {
                self.start_own(Why::Shutdown);
                return;
            }
            if let Some((conn, order, stream)) = self.queued.pop_front() {
                if let Err(text) = self.start_checkpoint(Why::Client(conn), &order, stream) {
                    self.checkpoint_done(Why::Client(conn), false, text, order.exit, None);
                }
                continue;
            }
            if self
                .next_autosave
                .is_some_and(|t| std::time::Instant::now() >= t)
            {
                self.start_own(Why::Autosave);
            }
            return;
        }
    }

    /// A checkpoint the daemon takes itself, into the session's image: an autosave, or
    /// the last one (`Why::Shutdown`).
    fn start_own(&mut self, why: Why) {
        let exit = why == Why::Shutdown;
        let mut order = CheckpointOrder::from_keys(exit);
        if why == Why::Autosave {
            self.next_autosave = self.autosave.map(|every| std::time::Instant::now() + every);
            // A chain of autosaves does not grow without end.
            order.full = crate::ckpt::generations::chain_length(&self.image)
                >= crate::ckpt::generations::CHAIN_LIMIT;
        }
        if let Err(text) = self.start_checkpoint(why, &order, None) {
            self.checkpoint_done(why, false, text, exit, None);
        }
    }

    /// SIGTERM or SIGHUP (a shutdown, a logout): checkpoint the session into its image
    /// and end it, within the deadline. Asked again meanwhile: nothing more.
    fn shut_down(&mut self) {
        if self.shutdown.is_some() || self.ending {
            return;
        }
        self.shutdown = Some(std::time::Instant::now() + self.shutdown_deadline);
        self.next_autosave = None;
        for (conn, _, _) in std::mem::take(&mut self.queued) {
            let text = "checkpoint failed: the session is ending".to_string();
            self.checkpoint_done(Why::Client(conn), false, text, false, None);
        }
        // Under way already: the last one starts when it is done.
        self.next_checkpoint();
    }

    /// The shutdown's checkpoint did not finish in time: the session ends without it (the
    /// image written before, if any, is left as it was).
    fn shutdown_too_late(&mut self) {
        self.shutdown = None;
        // Stopped first (its dump process killed, its temporary file removed, the session
        // let go): a process killed while the checkpoint still traces it would be the
        // tracer's to reap, not the daemon's.
        if let Some(mut c) = self.checkpoint.take() {
            c.hold.abort();
        }
        let text = format!(
            "the checkpoint did not finish within {} s; the session has ended, its image is the one from before",
            self.shutdown_deadline.as_secs()
        );
        crate::ckpt::generations::note_failure(
            &self.image,
            &format!(
                "at shutdown: not done within {} s",
                self.shutdown_deadline.as_secs()
            ),
        );
        self.end_word = Some((1, text.clone()));
        self.tell_attached_and_end(&text);
    }

    /// Tell every attached client the session has ended (and why), and end it.
    fn tell_attached_and_end(&mut self, text: &str) {
        let leave = self.parser.term.leave_sequence();
        for c in &mut self.conns {
            if c.attached {
                c.write_terminal(&leave);
                c.release_terminal();
                c.send(&ToClient::Detached(text.to_string()));
                c.attached = false;
                c.closing = true;
            }
        }
        self.end_session();
    }

    /// End the session now: its init is killed, and with it every process of the session
    /// (the daemon goes once it is reaped).
    fn end_session(&mut self) {
        self.ending = true;
        self.next_autosave = None;
        let _ = sys::kill(self.world.init_pid, libc::SIGKILL);
    }

    /// Start a checkpoint into `path` (empty: the session's image; `-`: `stream`, the
    /// client's standard output).
    fn start_checkpoint(
        &mut self,
        why: Why,
        order: &CheckpointOrder,
        stream: Option<OwnedFd>,
    ) -> Result<(), String> {
        let path = if order.path.is_empty() {
            self.image.clone()
        } else {
            PathBuf::from(&order.path)
        };
        let to_stream = path.as_os_str() == "-";
        if let Some(dir) = path.parent()
            && !to_stream
            && !dir.as_os_str().is_empty()
            && let Err(e) = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
        {
            return Err(format!(
                "checkpoint failed: cannot create {}: {e}",
                dir.display()
            ));
        }
        if to_stream && stream.is_none() {
            return Err("checkpoint failed: the client sent no stream to write to".into());
        }
        self.world
            .wait_filled(std::time::Duration::from_secs(30))
            .map_err(|e| format!("checkpoint failed: {e}"))?;
        // The image it replaces stays as a generation of its own.
        if self.keep > 1 && path == self.image && !order.exit {
            crate::ckpt::generations::keep_current(&path);
        }
        let master = self
            .world
            .master
            .try_clone()
            .map_err(|e| format!("checkpoint failed: {e}"))?;
        let hold = crate::ckpt::hold::Hold::start(crate::ckpt::hold::Order {
            root: self.world.init_pid,
            about: crate::ckpt::state::About {
                name: self.name.clone(),
                command: self.command.clone(),
                cpu_baseline: self.cpu_baseline,
                user_namespace: self.world.user_namespace,
            },
            out: path.clone(),
            stream,
            wait_connections: std::time::Duration::from_secs(order.wait.into()),
            carry_files: order.carry_files,
            exit: order.exit,
            master,
            tracking: self.tracking.clone(),
            full: order.full,
            precopy: order.precopy,
        })
        .map_err(|e| format!("checkpoint failed: {e}"))?;
        self.checkpoint = Some(Checkpoint {
            hold,
            why,
            path,
            exit: order.exit,
        });
        Ok(())
    }

    /// What the checkpoint under way says: the session is frozen (take in everything its
    /// programs wrote before, so the model the image gets is the screen as they left it,
    /// and hand the model over), it goes on, or the checkpoint is over.
    fn checkpoint_events(&mut self) {
        let Some(c) = self.checkpoint.as_ref() else {
            return;
        };
        for event in c.hold.take_events() {
            use crate::ckpt::hold::Event;
            match event {
                Event::Frozen => {
                    self.input_held = true;
                    let mut buf = vec![0u8; 64 * 1024];
                    while self.master_open {
                        match sys::read(self.world.master.as_fd(), &mut buf) {
                            Ok(n) if n > 0 => self.output(&buf[..n]),
                            _ => break,
                        }
                    }
                    let model = postcard::to_allocvec(&self.parser.term).unwrap_or_default();
                    if let Some(c) = &self.checkpoint {
                        c.hold.send_model(model);
                    }
                }
                Event::Thawed => {
                    self.input_held = false;
                    self.write_master();
                }
                Event::Done { ok, text, end } => {
                    self.input_held = false;
                    let Some(mut c) = self.checkpoint.take() else {
                        return;
                    };
                    self.checkpoint_done(c.why, ok, text, c.exit, Some(c.path.clone()));
                    if end {
                        // checkpoint_done ended the session: the frozen processes go.
                        c.hold.session_ended();
                    }
                    drop(c);
                    self.write_master();
                    self.next_checkpoint();
                    return;
                }
            }
        }
    }

    /// A checkpoint is over (or could not start): tell whoever asked; end the session
    /// when it was to end; keep the generations asked for.
    fn checkpoint_done(
        &mut self,
        why: Why,
        ok: bool,
        mut text: String,
        exit: bool,
        path: Option<PathBuf>,
    ) {
        let path = path.unwrap_or_else(|| self.image.clone());
        if ok && path == self.image {
            crate::ckpt::generations::clear_failure(&self.image);
            if self.keep > 0 {
                crate::ckpt::generations::prune(&self.image, self.keep);
            }
        }
        let reply = |conns: &mut Vec<Conn>, text: String| {
            if let Why::Client(conn) = why
                && let Some(c) = conns.iter_mut().find(|c| c.id == conn)
            {
                c.send(&ToClient::Checkpointed { ok, text });
            }
        };
        if exit && ok {
            // The image is written: end the session, telling every attached client how to
            // bring it back.
            let how = if path.as_os_str() == "-" {
                "checkpointed to the output stream\nresume with: crterm resume FILE, or crterm resume - with the image on standard input".to_string()
            } else {
                format!(
                    "checkpointed to {p}\nresume with: crterm resume {p}",
                    p = path.display()
                )
            };
            text.push_str("; the session has ended");
            reply(&mut self.conns, text);
            // Ended on a signal to end: "checkpointed, run me again"; on a user's order:
            // done.
            let status = match why {
                Why::Shutdown => protocol::REQUEUE_STATUS,
                _ => 0,
            };
            self.end_word = Some((status, how.clone()));
            self.tell_attached_and_end(&how);
            return;
        }
        if why == Why::Shutdown {
            // Ending whatever happened: the image from before stays as it was.
            self.shutdown = None;
            crate::ckpt::generations::note_failure(&self.image, &text);
            let text =
                format!("{text}; the session has ended, and its last image is the one from before");
            self.end_word = Some((1, text.clone()));
            self.tell_attached_and_end(&text);
            return;
        }
        // An autosave says nothing unless it failed.
        let notice = match why {
            Why::Autosave if ok => None,
            Why::Autosave => Some(format!("autosave: {text}")),
            _ => Some(text.clone()),
        };
        if let Some(notice) = notice {
            let (cols, lines) = (self.parser.term.cols, self.parser.term.lines);
            // On the terminal of whoever asked; an autosave's on the attached one.
            let shown = self.conns.iter_mut().find(|c| {
                c.attached
                    && match why {
                        Why::Client(conn) => c.id == conn,
                        _ => true,
                    }
            });
            if let Some(c) = shown {
                c.write_terminal(&overlay::notice(&notice, cols, lines));
                self.notice_until = Some(std::time::Instant::now() + NOTICE_TIME);
            }
        }
        reply(&mut self.conns, text);
    }

    /// The session's command ended with `code`: pass on what it wrote last, tell the
    /// attached client, and go.
    fn finish(&mut self, code: i32, buf: &mut [u8]) -> i32 {
        while self.master_open {
            match sys::read(self.world.master.as_fd(), buf) {
                Ok(n) if n > 0 => self.output(&buf[..n]),
                _ => break,
            }
        }
        let _ = std::fs::remove_file(&self.socket);
        // A checkpoint of a session that has ended is of no use: stop it and its litter.
        if let Some(mut c) = self.checkpoint.take() {
            c.hold.abort();
        }
        for (conn, _, _) in std::mem::take(&mut self.queued) {
            let text = "checkpoint failed: the session has ended".to_string();
            if let Some(c) = self.conns.iter_mut().find(|c| c.id == conn) {
                c.send(&ToClient::Checkpointed { ok: false, text });
            }
        }
        // A session its init ended on purpose says why, as the client's one line.
        let why = self.world.last_word();
        let (status, said) = match (self.end_word.take(), &why) {
            (Some(word), _) => word,
            (None, Some(why)) => (1, why.clone()),
            (None, None) => (code, format!("the session ended (status {code})")),
        };
        for c in &mut self.conns {
            c.release_terminal();
            if c.attached {
                c.send(&match &why {
                    Some(why) => ToClient::Refused(why.clone()),
                    None => ToClient::Exit(code),
                });
            }
            if c.watching {
                c.send(&ToClient::Ended {
                    status,
                    text: said.clone(),
                });
            }
            let _ = c.stream.set_nonblocking(false);
            let _ = c
                .stream
                .set_write_timeout(Some(std::time::Duration::from_secs(5)));
            let _ = c.stream.write_all(c.out.pending());
        }
        code
    }
}
