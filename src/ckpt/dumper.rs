//! The dump process: `crterm __dump`, started by the daemon for each checkpoint.
//!
//! The dump runs in a process of its own so that its death, even by SIGKILL midway, cannot
//! take the daemon or the session with it: when a tracer dies the kernel detaches its
//! tracees and they run on (a job stopped with Ctrl-Z stays stopped), and the daemon, which
//! watches the dumper's output, reports the failure and removes the half-written file.
//!
//! Protocol: the dumper freezes the session and prints `frozen`; the daemon then reads
//! what the programs wrote until then from the pty into its terminal model and writes the
//! model (postcard) to the dumper's stdin, closing it; the dumper reads the session's state,
//! thaws it, finishes the image, and prints one more line, `ok <what it wrote>` or
//! `err <why not>`. Pages are compressed and written while they are read, on the other
//! cores, and what is not written yet when the reading ends is written after the thaw: the
//! session is stopped while its state is read, and longer only when writing lags more than
//! the budget behind.

use super::{dump, freeze};
use crate::image::{self, ImageInfo};
use crate::sys;
use crate::term_model::Term;
use std::io::{self, Read};
use std::path::Path;
use std::time::Instant;

/// Memory for page data on its way to the image (raw and compressed): when the writing
/// lags this far behind the reading, the reading waits (the session stays frozen longer,
/// but the dump process stays this small).
const PAGE_BUDGET: usize = 512 << 20;

/// The descriptor a dumper writing to a stream (`--out -`) finds its stream at.
pub const STREAM_FD: i32 = 3;

pub struct DumpRequest<'a> {
    pub root: i32,
    pub name: &'a str,
    pub command: &'a str,
    /// The image file, or `-`: the stream inherited as descriptor 3 (`crterm checkpoint
    /// -o -`).
    pub out: &'a Path,
    /// How long to wait for the session to hold no connection to the outside (zero: do
    /// not wait).
    pub wait_connections: std::time::Duration,
    /// The session runs with `--cpu baseline`.
    pub cpu_baseline: bool,
    /// Open regular files up to this size are carried.
    pub carry_files: u64,
}

/// Freeze the session; with `wait_connections`, only once no process of it holds a
/// connection to the outside: until then thaw, wait a little, and try again (the seed's
/// "Condor mode").
fn freeze_without_connections(req: &DumpRequest) -> Result<freeze::Frozen, String> {
    let deadline = Instant::now() + req.wait_connections;
    loop {
        let frozen = freeze::freeze(req.root)
            .map_err(|e| format!("checkpoint failed: {e}; the session goes on unchanged"))?;
        if req.wait_connections.is_zero() {
            return Ok(frozen);
        }
        let open = dump::outside_connections(&frozen)
            .map_err(|e| format!("checkpoint failed: {e}; the session goes on unchanged"))?;
        if open.is_empty() {
            return Ok(frozen);
        }
        frozen.thaw();
        if Instant::now() >= deadline {
            return Err(format!(
                "checkpoint failed: after {} s the session still holds connections to the outside: {}; the session goes on unchanged",
                req.wait_connections.as_secs(),
                open.join("; ")
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Run in `crterm __dump`: returns the line to print.
pub fn run(req: &DumpRequest) -> String {
    match dump_session(req) {
        Ok(text) => format!("ok {text}"),
        Err(text) => format!("err {text}"),
    }
}

fn dump_session(req: &DumpRequest) -> Result<String, String> {
    let start = Instant::now();
    let frozen = freeze_without_connections(req)?;
    // The daemon takes in what the programs wrote up to now, then sends the model: the
    // screen as the frozen programs left it.
    {
        use std::io::Write;
        let mut out = io::stdout().lock();
        let _ = out.write_all(b"frozen\n");
        let _ = out.flush();
    }
    let mut model = Vec::new();
    io::stdin()
        .read_to_end(&mut model)
        .map_err(|e| format!("checkpoint failed: no terminal model from the daemon: {e}"))?;
    let term: Term = postcard::from_bytes(&model)
        .map_err(|e| format!("checkpoint failed: bad terminal model from the daemon: {e}"))?;
    let mut summary = None;
    let stream = req.out == Path::new("-");
    let target = if stream {
        "the output stream".to_string()
    } else {
        req.out.display().to_string()
    };
    let fill = |w: &mut image::ImageWriter<image::FileSink>| {
        // Typed input taken out of the terminal goes back through the daemon, before the
        // thaw (so nothing reads on before it is back).
        let before_thaw = |record: &dump::SessionRecord| {
            let typed = dump::typed_input(record);
            if !typed.is_empty() {
                use std::io::Write;
                let hex: String = typed.iter().map(|b| format!("{b:02x}")).collect();
                let mut out = io::stdout().lock();
                let _ = writeln!(out, "typed {hex}");
                let _ = out.flush();
            }
        };
        summary = Some(dump::dump(
            w,
            frozen,
            &dump::About {
                name: req.name,
                command: req.command,
                cpu_baseline: req.cpu_baseline,
                carry_files: req.carry_files,
            },
            &term,
            PAGE_BUDGET,
            before_thaw,
        )?);
        Ok::<(), io::Error>(())
    };
    let written = if stream {
        sys::inherited_fd(STREAM_FD)
            .map_err(|e| io::Error::other(format!("no output stream: {e}")))
            .and_then(|fd| image::write_stream(std::fs::File::from(fd), &ImageInfo::here(), fill))
    } else {
        image::write_file(req.out, &ImageInfo::here(), fill)
    };
    match (written, summary) {
        (Ok(()), Some(s)) => Ok(format!(
            "wrote {target}: {} processes, {} threads, {:.1} MiB, frozen {:.0} ms",
            s.processes,
            s.threads,
            s.memory_bytes as f64 / (1 << 20) as f64,
            s.thawed_at.duration_since(start).as_secs_f64() * 1000.0
        )),
        (Err(e), _) if e.kind() == io::ErrorKind::Unsupported => Err(format!(
            "checkpoint failed: {e}; the session goes on unchanged, any earlier image is untouched"
        )),
        (Err(e), _) => Err(format!(
            "checkpoint failed writing {target}: {e}; the session goes on unchanged, any earlier image is untouched"
        )),
        (Ok(()), None) => Err("checkpoint failed: nothing was dumped".into()),
    }
}
