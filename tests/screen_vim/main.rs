//! End-to-end tests: real programs under `crterm start` in a tmux pane.

#[path = "../common/mod.rs"]
mod common;
