//! Test hooks: named steps of a checkpoint at which a test makes the daemon's side fail
//! (`CRTERM_TEST_CHECKPOINT_FAILS_AT=STEP`) or the dump process die by SIGKILL
//! (`CRTERM_TEST_DUMPER_DIES_AT=STEP`), to show that the session comes back exactly as it
//! was from each of them (tests/screen_vim/faults.rs). Both are off unless the
//! environment names a step; the steps are listed in `DAEMON_STEPS` and `DUMPER_STEPS`.

use std::io;

/// Where the daemon's side of a checkpoint can be made to fail, in the order they come:
/// with a thread's registers and mask changed and the scratch page mapped for an injected
/// call; after an undumpable process was made dumpable; with the ptys' queues read out.
pub const DAEMON_STEPS: &[&str] = &["injected", "dumpable", "queues"];

/// Where the dump process can be made to die, in order: before it answers; waiting for
/// its order; with the order read; midway through the pages; when the frozen part is
/// done; carrying files; with the image complete and not yet renamed into place.
pub const DUMPER_STEPS: &[&str] = &[
    "start", "ready", "order", "pages", "read", "files", "rename",
];

fn named(var: &str, step: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| v == step)
}

/// An error at `step` when the environment asks for one.
pub fn fail_at(step: &str) -> io::Result<()> {
    if named("CRTERM_TEST_CHECKPOINT_FAILS_AT", step) {
        return Err(io::Error::other(format!("test hook: failing at {step}")));
    }
    Ok(())
}

/// Die at once (SIGKILL, which nothing can catch) at `step` when the environment asks.
pub fn die_at(step: &str) {
    if named("CRTERM_TEST_DUMPER_DIES_AT", step) {
        // SAFETY: sending a signal to ourselves touches no memory.
        unsafe { libc::raise(libc::SIGKILL) };
    }
}
