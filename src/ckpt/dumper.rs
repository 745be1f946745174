//! The dump process: `crterm __dump --out PATH`, started by the session's daemon (`hold`)
//! for each checkpoint. It writes the image; the daemon freezes the session, reads its
//! state and undoes whatever it changed in it. The dump process changes nothing in the
//! session (it reads memory with process_vm_readv and /proc), so killing it at any moment
//! leaves the session as it was: the daemon sees it gone, lets the session go on, and
//! removes the temporary file.
//!
//! Protocol, a line each on standard output:
//! * `ready`: the output is open (a temporary file beside PATH, or the stream inherited as
//!   descriptor 3 for `--out -`); or `err <why>` (then nothing was frozen).
//! * For a pre-copy, the daemon writes a `ToDumper::PreCopy` (each message is its length,
//!   a little-endian u64, then postcard) to standard input: the processes and ranges to
//!   read while the session runs. The dump reads them and says `precopied`.
//! * The daemon then writes the order (`ToDumper::Dump`: the record, the terminal model)
//!   and closes its end.
//! * `read`: nothing more is read from the frozen processes; the daemon lets them go on
//!   (or, for `checkpoint --exit`, keeps them until the image is in place).
//! * `ok <its identity, or - for a stream> <what it wrote>` or `err <why not>`.

use super::dump::{self, Step, ToDumper};
use super::hooks;
use crate::image::{self, ImageInfo};
use crate::sys;
use std::io::{self, Read, Write};
use std::path::Path;

/// Memory for page data on its way to the image (raw and compressed): when the writing
/// lags this far behind the reading, the reading waits (the session stays frozen longer,
/// but the dump process stays this small).
const PAGE_BUDGET: usize = 512 << 20;

/// The descriptor a dumper writing to a stream (`--out -`) finds its stream at.
pub const STREAM_FD: i32 = 3;

fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Where the image goes: a file made whole or not at all, or a stream.
enum Output {
    File(image::ImageFile),
    Stream(std::fs::File),
}

/// Run `crterm __dump`; the exit status is 0 (the outcome is the last line).
pub fn run(out: &Path) -> i32 {
    hooks::die_at("start");
    let stream = out == Path::new("-");
    let target = if stream {
        "the output stream".to_string()
    } else {
        out.display().to_string()
    };
    let output = if stream {
        sys::inherited_fd(STREAM_FD)
            .map(|fd| Output::Stream(std::fs::File::from(fd)))
            .map_err(|e| format!("no output stream: {e}"))
    } else {
        image::ImageFile::create(out)
            .map(Output::File)
            .map_err(|e| format!("cannot write {target}: {e}"))
    };
    let output = match output {
        Ok(o) => o,
        Err(e) => {
            say(&format!("err {e}"));
            return 0;
        }
    };
    say("ready");
    hooks::die_at("ready");
    match dump(output, &target) {
        Ok(text) => say(&format!("ok {text}")),
        Err(text) => say(&format!("err {text}")),
    }
    0
}

fn dump(output: Output, target: &str) -> Result<String, String> {
    let mut input = io::stdin().lock();
    let next = || -> io::Result<ToDumper> {
        let mut len = [0u8; 8];
        input.read_exact(&mut len)?;
        let mut bytes = vec![0u8; u64::from_le_bytes(len).min(1 << 32) as usize];
        input.read_exact(&mut bytes)?;
        postcard::from_bytes(&bytes)
            .map_err(|e| io::Error::other(format!("a bad order from the daemon: {e}")))
    };
    let steps = |step: Step| match step {
        Step::PreCopied => say("precopied"),
        Step::Read => {
            say("read");
            hooks::die_at("read");
        }
    };
    let written = |e: io::Error| format!("writing {target}: {e}");
    let (summary, id) = match output {
        Output::File(mut file) => {
            let mut w = file.writer(&ImageInfo::here()).map_err(written)?;
            let s = dump::write_image(&mut w, next, PAGE_BUDGET, steps).map_err(written)?;
            let id = file
                .commit(w, || hooks::die_at("rename"))
                .map_err(written)?;
            (s, id)
        }
        Output::Stream(file) => {
            let mut s = None;
            image::write_stream(file, &ImageInfo::here(), |w| {
                s = Some(dump::write_image(w, next, PAGE_BUDGET, steps)?);
                Ok::<(), io::Error>(())
            })
            .map_err(written)?;
            (s.expect("written"), "-".to_string())
        }
    };
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let early = match summary.precopied {
        Some((all, unused)) => format!(
            " ({:.1} MiB read before the freeze, {:.1} MiB of it written again)",
            mib(all),
            mib(unused)
        ),
        None => String::new(),
    };
    Ok(format!(
        "{id} wrote {target}: {} processes, {} threads, {:.1} MiB{early}",
        summary.processes,
        summary.threads,
        mib(summary.memory_bytes)
    ))
}
