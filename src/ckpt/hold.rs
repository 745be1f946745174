//! The daemon's side of a checkpoint, run on a thread of the session's daemon: it freezes
//! the session (it is the tracer), reads its state, takes its ptys' queues out, hands all
//! that to a dump process (`dumper`) which reads the memory and writes the image, and,
//! when the dump process is done with the frozen processes, puts everything back and lets
//! the session go on (or, for `checkpoint --exit`, keeps it frozen until the image is in
//! place, and the daemon ends it).
//!
//! Why here: a tracer's death lets its tracees run at once, in whatever state it left them
//! (registers set for an injected call, the scratch page mapped, a process made dumpable,
//! a pty's queue read out). The daemon outlives every checkpoint (when it dies, the session
//! dies with it), so whatever a checkpoint changes in the session is changed, noted and
//! undone here: `MadeDumpable` and `TakenQueues` are noted before the change and undone on
//! every path, by dropping, before `Frozen` thaws; injected calls put registers and masks
//! back before they return. The dump process changes nothing in the session: killed at any
//! moment, the session goes on as it was and the half-written image is removed.

use super::dump::{DumpOrder, ToDumper};
use super::freeze::{self, Frozen};
use super::inside::MadeDumpable;
use super::state::{self, About};
use crate::records::MapRecord;
use crate::sys;
use std::io::{self, BufRead, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// What the daemon asks for.
pub struct Order {
    /// The session's init (host pid): everything below it is the session.
    pub root: i32,
    pub about: About,
    /// The image file, or `-`: `stream`.
    pub out: PathBuf,
    pub stream: Option<OwnedFd>,
    /// How long to wait for the session to hold no connection to the outside (zero: do
    /// not wait).
    pub wait_connections: Duration,
    /// Open regular files up to this size are carried.
    pub carry_files: u64,
    /// End the session with the checkpoint.
    pub exit: bool,
    /// A copy of the session's pty master (pty 0): keys typed and not read are taken out
    /// through its slave and put back through it.
    pub master: OwnedFd,
    /// What the last checkpoints left for this one to be incremental, kept by the
    /// daemon and updated here.
    pub tracking: Arc<Mutex<super::incremental::Tracking>>,
    /// Write every page, whatever the last checkpoint left.
    pub full: bool,
    /// Pre-copy: always, never, or (`None`) when the session holds `PRECOPY_MIN` or more.
    pub precopy: Option<bool>,
}

/// A checkpoint of a session holding this much memory of its own (resident anonymous
/// memory, summed over its processes) or more copies it while the session runs first
/// (all of it, or what was written since the parent): reading this much takes about as
/// long as the freeze a pre-copy adds.
pub const PRECOPY_MIN: u64 = 64 << 20;

/// What the checkpoint tells the daemon's event loop, in this order.
#[derive(Debug)]
pub enum Event {
    /// The session is frozen: take in what its programs wrote, stop writing to its pty,
    /// and send the terminal model (postcard) with `Hold::send_model`.
    Frozen,
    /// The session goes on: write to its pty again.
    Thawed,
    /// Over. `ok` and the text for the client; with `end`, the image is in place and the
    /// session, still frozen, is to be ended (`Hold::session_ended` once it is).
    Done { ok: bool, text: String, end: bool },
}

/// A checkpoint under way.
pub struct Hold {
    pub events: mpsc::Receiver<Event>,
    /// Readable when an event is waiting (one byte per event).
    pub wake: OwnedFd,
    model: Option<mpsc::Sender<Vec<u8>>>,
    ended: Option<mpsc::Sender<()>>,
    /// The dump process while it is not reaped (so that a kill cannot hit a recycled pid).
    dumper: DumperPid,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Hold {
    /// Start a checkpoint on a thread of its own (the tracer of the session until it ends).
    pub fn start(order: Order) -> io::Result<Hold> {
        let (wake_r, wake_w) = sys::pipe()?;
        sys::set_nonblocking(wake_r.as_fd(), true)?;
        let (events_tx, events) = mpsc::channel();
        let (model_tx, model_rx) = mpsc::channel();
        let (ended_tx, ended_rx) = mpsc::channel();
        let dumper = DumperPid::default();
        let notify = Notify {
            events: events_tx,
            wake: wake_w,
        };
        let pid = dumper.clone();
        let thread = std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || {
                // A panic unwinds through the guards (queues put back, processes made
                // undumpable again, the session thawed) before it is caught here; the
                // daemon is told, and goes on.
                let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    checkpoint(order, &notify, &model_rx, &ended_rx, &pid)
                }))
                .unwrap_or_else(|_| {
                    Some(Event::Done {
                        ok: false,
                        text: Failure::Refused("an internal error (a panic)".into()).text(),
                        end: false,
                    })
                });
                if let Some(done) = done {
                    notify.send(done);
                }
            })?;
        Ok(Hold {
            events,
            wake: wake_r,
            model: Some(model_tx),
            ended: Some(ended_tx),
            dumper,
            thread: Some(thread),
        })
    }

    /// Events waiting, in order.
    pub fn take_events(&self) -> Vec<Event> {
        let mut b = [0u8; 64];
        while matches!(sys::read(self.wake.as_fd(), &mut b), Ok(n) if n > 0) {}
        self.events.try_iter().collect()
    }

    pub fn send_model(&self, model: Vec<u8>) {
        if let Some(m) = &self.model {
            let _ = m.send(model);
        }
    }

    /// The daemon ended the session (after `Done` with `end`): let the frozen processes go.
    pub fn session_ended(&mut self) {
        if let Some(e) = self.ended.take() {
            let _ = e.send(());
        }
        self.join();
    }

    /// Stop at once (the session ended by itself): the dump process is killed, what was
    /// taken is put back where it still can be, and the thread is waited for.
    pub fn abort(&mut self) {
        if let Some(pid) = *self.dumper.lock().expect("no panics") {
            let _ = sys::kill(pid, libc::SIGKILL);
        }
        self.model = None;
        self.ended = None;
        self.join();
    }

    fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.abort();
    }
}

type DumperPid = Arc<Mutex<Option<i32>>>;

struct Notify {
    events: mpsc::Sender<Event>,
    wake: OwnedFd,
}

impl Notify {
    fn send(&self, e: Event) {
        let _ = self.events.send(e);
        let _ = sys::write(self.wake.as_fd(), b"!");
    }
}

/// How a checkpoint failed, for the one line the client prints.
enum Failure {
    /// Before anything was written (the session, if frozen, goes on as it was).
    Refused(String),
    /// The dump process failed writing (its own words) or died.
    Writing(String),
}

impl Failure {
    fn text(self) -> String {
        match self {
            Failure::Refused(e) => {
                format!("checkpoint failed: {e}; the session goes on unchanged")
            }
            Failure::Writing(e) => format!(
                "checkpoint failed: {e}; the session goes on unchanged, any earlier image is untouched"
            ),
        }
    }
}

/// The dump process: started before the freeze, so that the session is not frozen while
/// it starts.
struct Dumper {
    child: std::process::Child,
    pid: DumperPid,
    input: Option<std::process::ChildStdin>,
    output: io::BufReader<std::process::ChildStdout>,
    out: PathBuf,
}

impl Dumper {
    fn spawn(order: &mut Order, pid: &DumperPid) -> io::Result<Dumper> {
        use std::os::unix::process::CommandExt;
        // /proc/self/exe: the very binary running, even if it was replaced on disk since.
        let mut cmd = std::process::Command::new("/proc/self/exe");
        if let Some(fd) = order.stream.take() {
            sys::pass_fd_as(&mut cmd, fd, super::dumper::STREAM_FD);
        }
        cmd.arg("__dump")
            .arg("--out")
            .arg(&order.out)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        // It goes with the daemon's checkpoint thread, whatever ends it.
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| sys::prctl_set_pdeathsig(libc::SIGKILL));
        }
        let mut child = cmd.spawn()?;
        *pid.lock().expect("no panics") = Some(child.id() as i32);
        Ok(Dumper {
            pid: pid.clone(),
            input: child.stdin.take(),
            output: io::BufReader::new(child.stdout.take().expect("piped")),
            child,
            out: order.out.clone(),
        })
    }

    /// Its next line; `None` when it has ended without one.
    fn line(&mut self) -> Option<String> {
        let mut l = String::new();
        match self.output.read_line(&mut l) {
            Ok(n) if n > 0 && l.ends_with('\n') => Some(l.trim_end().to_string()),
            _ => None,
        }
    }

    /// Wait for `word` (`ready`, `read`); what it said instead is the failure.
    fn expect(&mut self, word: &str) -> Result<(), String> {
        match self.line() {
            Some(l) if l == word => Ok(()),
            Some(l) => Err(l.strip_prefix("err ").unwrap_or(&l).to_string()),
            None => Err(self.death()),
        }
    }

    /// How it died, once it has (it is killed first if it has not).
    fn death(&mut self) -> String {
        let _ = self.child.kill();
        *self.pid.lock().expect("no panics") = None;
        match self.child.wait() {
            Ok(s) => format!("the dump process died ({s})"),
            Err(e) => format!("the dump process died ({e})"),
        }
    }

    /// Send a message (its length, then its postcard encoding); after the last (`Dump`),
    /// its input is closed.
    fn send(&mut self, message: &ToDumper) -> Result<(), String> {
        let bytes = postcard::to_allocvec(message).map_err(|e| e.to_string())?;
        let last = matches!(message, ToDumper::Dump(_));
        let input = self.input.as_mut().expect("open until the last message");
        let sent = input
            .write_all(&(bytes.len() as u64).to_le_bytes())
            .and_then(|()| input.write_all(&bytes))
            .and_then(|()| input.flush());
        if last {
            self.input = None;
        }
        sent.map_err(|_| self.death())
    }
}

impl Drop for Dumper {
    fn drop(&mut self) {
        // Ended or not, it goes, and what it may have left with it.
        let pid = self.child.id();
        let _ = self.child.kill();
        *self.pid.lock().expect("no panics") = None;
        let _ = self.child.wait();
        if let Some(tmp) = crate::image::temp_path(&self.out, pid) {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Freeze the session; with `wait`, only once no process of it holds a connection to the
/// outside: until then thaw, wait a little, and try again (the seed's "Condor mode").
fn freeze_without_connections(root: i32, wait: Duration) -> Result<Frozen, String> {
    let deadline = Instant::now() + wait;
    loop {
        let mut frozen = freeze::freeze(root).map_err(|e| e.to_string())?;
        if wait.is_zero() {
            return Ok(frozen);
        }
        let open = state::outside_connections(&frozen).map_err(|e| e.to_string())?;
        if open.is_empty() {
            return Ok(frozen);
        }
        frozen.thaw();
        if Instant::now() >= deadline {
            return Err(format!(
                "after {} s the session still holds connections to the outside: {}",
                wait.as_secs(),
                open.join("; ")
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What a checkpoint that worked leaves to say.
enum Outcome {
    /// The session goes on; the text for the client.
    Written(String),
    /// The session was ended with it (`Done` with `end` was sent already).
    Ended,
}

fn checkpoint(
    mut order: Order,
    notify: &Notify,
    model: &mpsc::Receiver<Vec<u8>>,
    ended: &mpsc::Receiver<()>,
    dumper_pid: &DumperPid,
) -> Option<Event> {
    match run(&mut order, notify, model, ended, dumper_pid) {
        Ok(Outcome::Written(text)) => Some(Event::Done {
            ok: true,
            text,
            end: false,
        }),
        Ok(Outcome::Ended) => None,
        Err(f) => Some(Event::Done {
            ok: false,
            text: f.text(),
            end: false,
        }),
    }
}

fn run(
    order: &mut Order,
    notify: &Notify,
    model: &mpsc::Receiver<Vec<u8>>,
    ended: &mpsc::Receiver<()>,
    dumper_pid: &DumperPid,
) -> Result<Outcome, Failure> {
    let mut dumper = Dumper::spawn(order, dumper_pid)
        .map_err(|e| Failure::Refused(format!("cannot start the dump process: {e}")))?;
    dumper.expect("ready").map_err(Failure::Refused)?;
    // The tracking is this checkpoint's until it ends (one checkpoint at a time); the
    // parent it refers to is read before the session is frozen.
    let tracking = order.tracking.clone();
    let mut tracking = tracking.lock().unwrap_or_else(|e| e.into_inner());
    let parent = match order.stream.is_none() && !order.full {
        true => tracking.parent_for(&order.out),
        false => None,
    };
    // A link made to keep the parent, removed again unless the image refers to it.
    struct Kept(Option<PathBuf>);
    impl Drop for Kept {
        fn drop(&mut self) {
            if let Some(p) = self.0.take() {
                let _ = std::fs::remove_file(p);
            }
        }
    }
    let mut kept = Kept(parent.as_ref().and_then(|p| p.made.clone()));
    // A pre-copy: frozen a moment to track every process's writes, the memory read while
    // the session runs, then only what it wrote meanwhile read while frozen again.
    // For an incremental image, what was written since the parent is pre-copied.
    let precopy = !order.exit
        && order
            .precopy
            .unwrap_or_else(|| freeze::resident_anon(order.root) >= PRECOPY_MIN);
    let mut armed_for = None;
    let mut since_parent = std::collections::HashSet::new();
    if precopy {
        let armed_at = Instant::now();
        let mut frozen = freeze::freeze(order.root).map_err(|e| Failure::Refused(e.to_string()))?;
        let armed = tracking.arm(&frozen.tasks(), parent.is_none());
        frozen.thaw();
        drop(frozen);
        armed_for = Some(armed_at.elapsed());
        if parent.is_some() {
            since_parent = armed.since_base;
        }
        dumper
            .send(&ToDumper::PreCopy {
                procs: armed.procs,
                written_only: parent.is_some(),
            })
            .map_err(Failure::Writing)?;
        dumper.expect("precopied").map_err(Failure::Writing)?;
    }
    // Started before the freeze: its start is not frozen time.
    let sysv = crate::sysv::Reader::spawn()
        .map_err(|e| Failure::Refused(format!("cannot start the SysV reader: {e}")))?;
    let mut frozen =
        freeze_without_connections(order.root, order.wait_connections).map_err(Failure::Refused)?;
    let frozen_at = Instant::now();
    // Undone in the reverse order of their declaration, before `frozen` thaws.
    let mut made_dumpable = MadeDumpable::default();
    notify.send(Event::Frozen);
    let mut state = state::read_session(
        &frozen,
        &order.about,
        &mut made_dumpable,
        &|pid| tracking.holds(pid),
        sysv,
    )
    .map_err(|e| Failure::Refused(e.to_string()))?;
    let model = model
        .recv()
        .map_err(|_| Failure::Refused("the session ended".into()))?;
    let own_master = order
        .master
        .try_clone()
        .map_err(|e| Failure::Refused(e.to_string()))?;
    let mut taken =
        crate::fds::ttys::take_pty_queues(&mut state.record, &state.hosts, Some(own_master))
            .map_err(|e| Failure::Refused(e.to_string()))?;
    // Whose unwritten pages are the parent's (tracked since it was made), or the
    // pre-copy's (tracked since the arming: every process then that is still the same).
    // (And whose unwritten pages, outside what the pre-copy read, are the parent's.)
    let tracked: Vec<bool> = state
        .hosts
        .iter()
        .map(|&h| match precopy {
            true => tracking.holds(h),
            false => tracking.tracks(h),
        })
        .collect();
    let from_parent = state
        .hosts
        .iter()
        .zip(&tracked)
        .map(|(h, &t)| t && (!precopy || since_parent.contains(h)))
        .collect();
    let incremental = parent.map(|p| super::dump::Incremental {
        link: p.link,
        files: p.files,
    });
    // What the trackers go on from once the memory is read: each process's mappings.
    let to_track: Vec<(i32, Vec<i32>, Vec<MapRecord>)> = match order.exit {
        true => Vec::new(),
        false => {
            let live = state.record.processes.iter().filter(|p| p.zombie.is_none());
            let tasks = frozen.tasks();
            state
                .hosts
                .iter()
                .zip(live)
                .filter_map(|(&h, p)| {
                    let tids = tasks.iter().find(|(pid, _)| *pid == h)?.1.clone();
                    Some((h, tids, p.maps.clone()))
                })
                .collect()
        }
    };
    // From here the dump's scans protect written pages again: until it succeeds, the
    // writes counted are not to be trusted.
    tracking.forget_base();
    dumper
        .send(&ToDumper::Dump(Box::new(DumpOrder {
            record: state.record,
            hosts: state.hosts,
            model,
            carry_files: order.carry_files,
            incremental,
            tracked,
            from_parent,
        })))
        .map_err(Failure::Writing)?;
    dumper.expect("read").map_err(Failure::Writing)?;
    if !order.exit {
        tracking.update(&to_track);
    }
    let frozen_for = frozen_at.elapsed();
    if !order.exit {
        taken.put_back();
        made_dumpable.undo();
        frozen.thaw();
        notify.send(Event::Thawed);
    }
    let (id, text) = match dumper.line() {
        Some(l) => match l.strip_prefix("ok ").and_then(|t| t.split_once(' ')) {
            Some((id, t)) => (id.to_string(), t.to_string()),
            None => {
                return Err(Failure::Writing(
                    l.strip_prefix("err ").unwrap_or(&l).to_string(),
                ));
            }
        },
        None => return Err(Failure::Writing(dumper.death())),
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let text = match armed_for {
        Some(a) => format!(
            "{text}, frozen {:.0} ms (and {:.1} ms before the pre-copy)",
            ms(frozen_for),
            ms(a)
        ),
        None => format!("{text}, frozen {:.0} ms", ms(frozen_for)),
    };
    // The next checkpoint counts from this image (whose parent, if kept, stays): by the
    // identity its writer computed, not by what is at its path by now.
    if id.len() == 64 {
        tracking.set_base(order.out.clone(), id);
    }
    kept.0 = None;
    if order.exit {
        // The image is in place: the session ends frozen, as the image has it (nothing it
        // does after the checkpoint can make a resume find its files changed).
        notify.send(Event::Done {
            ok: true,
            text,
            end: true,
        });
        let _ = ended.recv();
        taken.forget();
        made_dumpable.forget();
        drop(frozen);
        return Ok(Outcome::Ended);
    }
    Ok(Outcome::Written(text))
}
