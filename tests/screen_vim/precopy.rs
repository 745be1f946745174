//! Pre-copy (issue 14): a full checkpoint of a large session reads its memory while it
//! runs, then freezes it only to read what it wrote meanwhile. The program here
//! (`precopymem.c`, 256 MiB) rewrites pages, drops some, unmaps and maps a region again
//! and moves another all the while; a test hook makes the pre-copy linger, so that much
//! of what it read is written again before the freeze. Every image made so, and the
//! incremental one after it and the image compacted, gives back exactly the memory the
//! program had.

use super::faults::hooks_for;
use super::roundtrip::*;
use super::*;

/// Type `command` in pane `target` and wait for the line it answers (one more "check"
/// line than before); it must say ok.
pub(crate) fn check(env: &Env, target: &str) {
    let count = |s: &str| s.matches("check ok").count() + s.matches("check BAD").count();
    let before = count(&env.tmux.capture_plain(target));
    enter(env, target, "check");
    let screen = wait_for("the check", T, || {
        let s = env.tmux.capture_plain(target);
        (count(&s) > before).then_some(s)
    });
    assert!(!screen.contains("check BAD"), "{screen}");
}

/// The checkpoint's line: its figures for the pre-copy (MiB read before the freeze, MiB
/// of it written again), if it made one.
fn precopied(said: &str) -> Option<(f64, f64)> {
    let (before, _) = said.split_once(" MiB read before the freeze")?;
    let read: f64 = before.rsplit_once('(')?.1.parse().ok()?;
    let (_, after) = said.split_once("read before the freeze, ")?;
    let again: f64 = after.split_once(" MiB")?.0.parse().ok()?;
    Some((read, again))
}

user_and_root! {
    /// Checkpointed while it writes (a pre-copy, as the session holds more than 64 MiB),
    /// the session goes on unharmed; the image resumed checks out byte for byte; so do
    /// the image compacted and an incremental checkpoint taken after it (whose trackers
    /// the pre-copy set, and which pre-copies what was written since).
    fn a_precopied_checkpoint_of_a_session_that_writes_meanwhile_is_exact(env, tag) {
        let (env, hooks) = hooks_for(env);
        let name = format!("pre{tag}");
        let bin = build_c(&env, "precopymem");
        env.pane(
            "a",
            &format!("{} start --name {name} -- {}", env.crterm_cmd(), bin.display()),
        );
        env.tmux.wait_text("a", "precopymem ready", T);
        let image = image_path(&env, &name);
        std::fs::write(&hooks, "slow precopy").unwrap();
        let out = env.crterm(&["checkpoint", &name, "-o", image.to_str().unwrap()]);
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{}{said}", String::from_utf8_lossy(&out.stderr));
        let (read, again) = precopied(&said).unwrap_or_else(|| panic!("no pre-copy: {said}"));
        assert!(read >= 200.0 && again > 0.0, "{said}");
        assert!(said.contains("before the pre-copy"), "{said}");
        std::fs::write(&hooks, "").unwrap();
        // The session went on, and goes on as it should.
        check(&env, "a");
        // The image: exactly what the program had.
        resume_with(&env, &env.tmux, "r", (100, 30), &format!("--name {name}-r"), &image);
        env.tmux.wait_text("r", "precopymem", T);
        check(&env, "r");
        env.tmux.send_keys("r", &["C-d"]);
        env.tmux.wait_text("r", "CRTERM_EXIT=0", T);
        // Compacted, the image drops what the pre-copy read in vain, and gives the same.
        let compact = env.dir.path().join(format!("{name}-compact.img"));
        let out = env.crterm(&["compact", image.to_str().unwrap(), "-o", compact.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len();
        assert!(size(&compact) < size(&image), "{} vs {}", size(&compact), size(&image));
        resume_with(&env, &env.tmux, "c", (100, 30), &format!("--name {name}-c"), &compact);
        env.tmux.wait_text("c", "precopymem", T);
        check(&env, "c");
        env.tmux.send_keys("c", &["C-d"]);
        env.tmux.wait_text("c", "CRTERM_EXIT=0", T);
        // The next checkpoint refers to this image, for what was not written since; what
        // was is pre-copied, and written again meanwhile too.
        let next = env.dir.path().join(format!("{name}-next.img"));
        std::fs::write(&hooks, "slow precopy").unwrap();
        let out = env.crterm(&["checkpoint", &name, "-o", next.to_str().unwrap()]);
        std::fs::write(&hooks, "").unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{}{said}", String::from_utf8_lossy(&out.stderr));
        let (read, _) = precopied(&said).unwrap_or_else(|| panic!("no pre-copy: {said}"));
        assert!(read > 0.0 && read < 250.0, "{said}");
        let info = env.crterm(&["info", next.to_str().unwrap()]);
        let info = String::from_utf8_lossy(&info.stdout).into_owned();
        assert!(info.contains(&format!("{name}.img")), "not incremental: {info}");
        resume_with(&env, &env.tmux, "s", (100, 30), &format!("--name {name}-s"), &next);
        env.tmux.wait_text("s", "precopymem", T);
        check(&env, "s");
        env.tmux.send_keys("s", &["C-d"]);
        env.tmux.wait_text("s", "CRTERM_EXIT=0", T);
        env.tmux.send_keys("a", &["C-d"]);
        env.tmux.wait_dead("a", T);
    }
}
