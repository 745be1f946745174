//! Memory bandwidth of this machine, for scale in bench/run.sh: copies a 256 MiB buffer a
//! few times and prints the best rate in MB/s.

use std::time::Instant;

fn main() {
    let size = 256 << 20;
    let src = vec![0x5au8; size];
    let mut dst = vec![0u8; size];
    dst.copy_from_slice(&src); // fault every page in first
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&dst);
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("{:.0}", size as f64 / 1e6 / best);
}
