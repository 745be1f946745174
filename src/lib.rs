//! crterm: checkpoint and resume interactive terminal sessions.
//!
//! `term_model` is the terminal model; `pty_proxy` runs sessions (client, daemon,
//! namespaces, init); `image` is the checkpoint file format; `sys` holds the raw system
//! calls behind safe wrappers; `cli` turns the command line into actions.

pub mod check;
pub mod ckpt;
pub mod cli;
pub mod compact;
pub mod config;
pub mod fds;
pub mod image;
pub mod info;
pub mod inject;
pub mod load;
pub mod machine;
pub mod progress;
pub mod pty_proxy;
pub mod records;
pub mod restore;
pub mod sys;
pub mod sysv;
pub mod task;
pub mod term_model;
