//! The checkpoint engine. What exists so far: freezing every thread of a session and
//! thawing it again (`freeze`). Reading the frozen state into an image comes next.

pub mod freeze;
