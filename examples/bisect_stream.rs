//! A tool for investigating a stream on which crterm's model and tmux differ: the first
//! byte where they part, and the bytes before it.
//!
//!     cargo run --example bisect_stream -- FILE [COLSxLINES]   (default 100x30)
//!
//! (`CRTERM_KEEP_STREAMS=DIR cargo test --test integration recorded` keeps the recorded
//! streams to feed it.)

#[path = "../tests/common/mod.rs"]
mod common;
#[allow(dead_code)]
#[path = "../tests/integration/oracle.rs"]
mod oracle;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(file) = args.next() else {
        eprintln!("usage: bisect_stream FILE [COLSxLINES]");
        std::process::exit(2);
    };
    let size = args.next().unwrap_or_else(|| "100x30".into());
    let Some((cols, lines)) = size
        .split_once('x')
        .and_then(|(c, l)| Some((c.parse().ok()?, l.parse().ok()?)))
    else {
        eprintln!("bisect_stream: {size:?} is not COLSxLINES");
        std::process::exit(2);
    };
    let bytes = std::fs::read(&file).unwrap_or_else(|e| {
        eprintln!("bisect_stream: {file}: {e}");
        std::process::exit(1)
    });
    match oracle::first_divergence(cols, lines, &bytes) {
        None => println!("the model and tmux agree on all {} bytes", bytes.len()),
        Some(n) => {
            let from = n.saturating_sub(120);
            println!(
                "first divergence after {n} bytes; the bytes before it:\n{}",
                String::from_utf8_lossy(&bytes[from..n]).escape_debug()
            );
        }
    }
}
