//! crterm: checkpoint and resume interactive terminal sessions.
//!
//! `term_model` is the terminal model; `pty_proxy` runs sessions (client, daemon,
//! namespaces, init); `sys` holds the raw system calls behind safe wrappers; `cli` turns
//! the command line into actions.

pub mod cli;
pub mod config;
pub mod pty_proxy;
pub mod sys;
pub mod term_model;
