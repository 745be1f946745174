//! `crterm`: parse the command line, run it, print one line on error.

use clap::Parser;

fn main() {
    let cli = crterm::cli::Cli::parse();
    let code = match crterm::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("crterm: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
