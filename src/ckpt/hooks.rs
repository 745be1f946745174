//! Test hooks: named steps of a checkpoint at which a test makes the daemon's side fail or
//! the dump process die by SIGKILL, to show that the session comes back exactly as it was
//! from each of them (tests/screen_vim/faults.rs). Off unless the environment names a
//! file, `CRTERM_TEST_HOOKS`, which the test writes between checkpoints of one session:
//! `fail STEP` (a step of `DAEMON_STEPS`) or `die STEP` (of `DUMPER_STEPS`); or
//! `slow seize`, which widens the moment between seizing a thread and stopping it, where
//! a thread can be caught on its way to a signal; `stall STEP` (of `DUMPER_STEPS`), which
//! holds the dump process there while the file says so (a checkpoint that outlasts its
//! deadline), or, as `stall restore`, a resume with its processes' memory made (a resume
//! that takes long enough to show its progress line).

use std::io;

/// Where the daemon's side of a checkpoint can be made to fail, in the order they come:
/// after an undumpable process was made dumpable; with a thread's registers and mask
/// changed and the scratch page mapped for an injected call; with the ptys' queues read
/// out.
pub const DAEMON_STEPS: &[&str] = &["dumpable", "injected", "queues"];

/// Where the dump process can be made to die, in order: before it answers; waiting for
/// its order; with the order read; midway through the pages; when the frozen part is
/// done; carrying files; with the image complete and not yet renamed into place.
pub const DUMPER_STEPS: &[&str] = &[
    "start", "ready", "order", "pages", "read", "files", "rename",
];

/// Where the dump process can be made to die during a pre-copy: after a process's
/// memory was read, the session running and every process's writes tracked.
pub const PRECOPY_STEPS: &[&str] = &["precopy"];

fn asked(what: &str, step: &str) -> bool {
    let Some(file) = std::env::var_os("CRTERM_TEST_HOOKS") else {
        return false;
    };
    std::fs::read_to_string(file).is_ok_and(|t| t.trim() == format!("{what} {step}"))
}

/// An error at `step` when the test asks for one.
pub fn fail_at(step: &str) -> io::Result<()> {
    if asked("fail", step) {
        return Err(io::Error::other(format!("test hook: failing at {step}")));
    }
    Ok(())
}

/// Die at once (SIGKILL, which nothing can catch) at `step` when the test asks.
pub fn die_at(step: &str) {
    if asked("die", step) {
        // SAFETY: sending a signal to ourselves touches no memory.
        unsafe { libc::raise(libc::SIGKILL) };
    }
}

/// Wait at `step` while the test says `stall STEP` (at most a minute).
pub fn stall_at(step: &str) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while asked("stall", step) && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Whether the test holds `step` back for now (`hold STEP`): a lazy resume's fill waits
/// while it does, so that what the session reads comes from its faults alone.
pub fn held(step: &str) -> bool {
    asked("hold", step)
}

/// Wait a little at `step` when the test asks (`slow STEP`): a moment the freeze passes
/// through quickly, made long enough to catch what happens in it every time; a pre-copy
/// made to linger, so that the session writes again much of what it read.
pub fn slow_at(step: &str) {
    if asked("slow", step) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
