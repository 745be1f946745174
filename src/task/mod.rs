//! A process's own state beyond its descriptors (those are `crate::fds`), one file per
//! kind, each holding how its kind is read from a frozen process at checkpoint and made
//! again at resume, side by side: `tree` (processes: ids, parents, sessions, process
//! groups, terminals, zombies), `creds` (user and group ids, capabilities, securebits,
//! no-new-privs, and who may resume what), `memory` (mappings, their pages and the
//! copy-on-write sharing between parent and child, the vDSO, the kernel's mm fields),
//! `sched` (policy, nice value, CPU affinity, I/O priority, timer slack, OOM score),
//! `seccomp` (filters, carried as root),
//! `signals` (handlers, queued signals with their siginfo, the stop signal, the
//! parent-death signal), `timers` (interval timers and POSIX timers), `threads` (threads
//! with their tids, registers, clear-child-tid, robust list, rseq and alternate stack).
//! The records are `crate::records::ProcessRecord` and `ThreadRecord`.
//!
//! The checkpoint side runs in the session's daemon (`crate::ckpt::state`, which puts
//! each process's record together) and, for pages, in the dump process
//! (`crate::ckpt::dump`); the resume side is `impl crate::restore::Restorer` blocks,
//! called in the order `crate::restore` sets.

pub mod creds;
pub mod memory;
pub mod sched;
pub mod seccomp;
pub mod signals;
pub mod threads;
pub mod timers;
pub mod tree;
