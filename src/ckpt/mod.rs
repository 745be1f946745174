//! The checkpoint engine: freezing every thread of a session and thawing it again
//! (`freeze`), and reading the frozen state into an image (`dump`). Restoring from an image
//! is not built yet.

pub mod dump;
pub mod dumper;
pub mod freeze;
pub mod inside;
