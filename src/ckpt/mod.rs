//! The checkpoint engine: the order of a checkpoint and what it shares. How each kind of
//! resource is read lives with its kind: `crate::task` (processes, identities, memory,
//! signals, timers, threads) and `crate::fds` (descriptors).
//!
//! The daemon's side (`hold`): freezing every thread of a session (`freeze`), reading its
//! state (`state` puts each process's record together from the kinds' readers; `inside`
//! runs the injected calls that ask a process what only it can tell; `procfs` parses
//! /proc) and undoing every change it made before the session goes on; what it keeps
//! between checkpoints so that the next stores only what changed (`incremental`); the
//! generations of a session's image that autosave keeps (`generations`). The dump
//! process's side (`dumper`, `dump`): the pages (`crate::task::memory::pages`) and the
//! carried files into an image. What an image says of a session: `crate::records`. Test
//! hooks: `hooks`.

pub mod dump;
pub mod dumper;
pub mod filecache;
pub mod freeze;
pub mod generations;
pub mod hold;
pub mod hooks;
pub mod incremental;
pub mod inside;
pub mod procfs;
pub mod state;
