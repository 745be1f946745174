//! crterm: checkpoint and resume interactive terminal sessions.
//!
//! `term_model` is the terminal model; `pty_proxy` runs sessions (client, daemon,
//! namespaces, init); `sys` holds the raw system calls behind safe wrappers.

pub mod term_model;
