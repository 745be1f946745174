//! The checkpoint engine. The daemon's side (`hold`): freezing every thread of a session
//! (`freeze`), reading its state (`state`, with what only a process can tell read by
//! injected calls, `inside`, and the /proc parsers, `procfs`) and undoing every change it
//! made before the session goes on. The dump process's side (`dumper`, `dump`): the memory
//! and files into an image. What an image says of a session: `record`. Test hooks:
//! `hooks`.

pub mod dump;
pub mod dumper;
pub mod freeze;
pub mod hold;
pub mod hooks;
pub mod inside;
pub mod procfs;
pub mod state;
