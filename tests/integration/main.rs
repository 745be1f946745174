//! The one integration-test binary: the terminal model against tmux, repaint round trips,
//! and crterm's command line.

mod cli;
#[path = "../common/mod.rs"]
mod common;
mod image;
mod model;
mod model_props;
mod oracle;
mod recorded;
