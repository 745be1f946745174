//! Running sessions: the client in the user's terminal, the session daemon that owns the
//! pty and the terminal model, the session's world (namespaces and init), the protocol
//! between client and daemon, and where their sockets live.

pub mod client;
pub mod daemon;
pub mod overlay;
pub mod paths;
pub mod protocol;
pub mod terminal_writer;
pub mod world;
