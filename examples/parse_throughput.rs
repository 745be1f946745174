//! Terminal-model parse throughput, for bench/run.sh: feeds generated streams to the model
//! in 64 KiB reads (as the daemon does) and prints one line per stream: name, MB, MB/s.

use crterm::term_model::{Term, TermParser};
use std::time::Instant;

/// Lines as a pty delivers them (onlcr turns "\n" into "\r\n").
fn plain(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 100);
    let mut i = 0u64;
    while v.len() < len {
        v.extend_from_slice(
            format!("{i:>8} the quick brown fox jumps over the lazy dog 0123456789\r\n").as_bytes(),
        );
        i += 1;
    }
    v
}

fn colored(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 100);
    let mut i = 0u64;
    while v.len() < len {
        v.extend_from_slice(
            format!("\x1b[01;34mdir{i}\x1b[0m  \x1b[01;32mexec{i}\x1b[0m  file{i}.txt  \x1b[38;5;{}mcolour\x1b[0m\r\n", i % 256)
                .as_bytes(),
        );
        i += 1;
    }
    v
}

fn fullscreen(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 100);
    let mut i = 0u64;
    while v.len() < len {
        let line = i % 29 + 1;
        v.extend_from_slice(
            format!("\x1b[{line};1H\x1b[K\x1b[33m{line:>3} \x1b[0mlet x{i} = compute(\"日本\", {i});\x1b[30;1H\x1b[7m-- INSERT --\x1b[0m").as_bytes(),
        );
        i += 1;
    }
    v
}

fn main() {
    let mb = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100usize);
    let only = std::env::args().nth(2);
    for (name, data) in [
        ("plain text", plain(mb << 20)),
        ("ls --color style", colored(mb << 20)),
        ("full-screen editor style", fullscreen(mb << 20)),
    ] {
        if only.as_deref().is_some_and(|o| !name.starts_with(o)) {
            continue;
        }
        let mut p = TermParser::new(Term::new(100, 30));
        let start = Instant::now();
        for chunk in data.chunks(64 * 1024) {
            p.advance(chunk);
        }
        let secs = start.elapsed().as_secs_f64();
        let size = data.len() as f64 / 1e6;
        println!("{name}\t{size:.0}\t{:.0}", size / secs);
    }
}
