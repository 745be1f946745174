//! Lazy resume (issue 14): a session with 1 GiB of memory resumed with `--lazy` goes on
//! before its memory is in; every byte it touches, by its own code, by system calls and
//! from a child it forks, is the byte it had. The fill is held back by a test hook while
//! the program checks, so what it reads comes from its faults alone.

use super::faults::hooks_for;
use super::roundtrip::*;
use super::*;
use std::path::PathBuf;

/// The session's lazymem process.
fn lazymem_pid(env: &Env, name: &str) -> i32 {
    let daemon = env.daemon_pid(name);
    wait_for("the lazymem process", T, || {
        process_tree(daemon).into_iter().find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "lazymem")
        })
    })
}

/// Whether any mapping of `pid` is registered with a userfaultfd for missing pages
/// ("um" in its smaps).
fn has_missing_registration(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("VmFlags:"))
        .any(|l| l.split_whitespace().any(|f| f == "um"))
}

/// Type `command` and wait for its answer lines (one more "A ok" or "A BAD" than the
/// screen had for each A of `answers`), which must say ok.
fn ask(env: &Env, target: &str, command: &str, answers: &[&str]) {
    let count = |s: &str, a: &str| {
        s.matches(&format!("{a} ok")).count() + s.matches(&format!("{a} BAD")).count()
    };
    let before = env.tmux.capture_plain(target);
    enter(env, target, command);
    let screen = wait_for(&format!("the answer to {command}"), T, || {
        let s = env.tmux.capture_plain(target);
        answers
            .iter()
            .all(|a| count(&s, a) > count(&before, a))
            .then_some(s)
    });
    assert!(!screen.contains("BAD"), "{command}: {screen}");
}

/// Start lazymem as session `name` in pane "a" and checkpoint it into `image`, ending it.
fn lazymem_image(env: &Env, name: &str) -> PathBuf {
    let bin = build_c(env, "lazymem");
    env.pane(
        "a",
        &format!(
            "{} start --name {name} -- {}",
            env.crterm_cmd(),
            bin.display()
        ),
    );
    env.tmux.wait_text("a", "lazymem ready", T);
    let image = image_path(env, name);
    checkpoint_and_end(env, name, &image);
    image
}

user_and_root! {
    /// Resumed with `--lazy` and the background fill held: the program's own reads,
    /// write() from its missing memory and read() into it, madvise(DONTNEED) and mremap
    /// of missing memory, and a child forked before anything was filled all see exactly
    /// the bytes they should. As root the memory is registered for missing-page faults
    /// until the fill is let go; as an ordinary user (faults in the kernel would fail
    /// with EFAULT) the resume copies it in first and says so.
    fn a_lazy_resume_gives_every_byte_to_whoever_touches_it(env, tag) {
        let (env, hooks) = hooks_for(env);
        let name = format!("lazy{tag}");
        let image = lazymem_image(&env, &name);
        std::fs::write(&hooks, "hold fill").unwrap();
        resume_with(&env, &env.tmux, "r", (100, 30), "--lazy", &image);
        let screen = env.tmux.wait_text("r", "lazymem ready", T);
        let pid = lazymem_pid(&env, &name);
        if env.user.is_some() {
            let notice = wait_for("the notice", T, || {
                let s = env.tmux.capture_plain("r");
                s.contains("not lazily").then_some(s)
            });
            assert!(notice.contains("copied in before the session went on"), "{notice}");
            assert!(!has_missing_registration(pid), "registered as an ordinary user");
        } else {
            assert!(!screen.contains("not lazily"), "{screen}");
            assert!(has_missing_registration(pid), "nothing served lazily");
        }
        ask(&env, "r", "sys", &["write", "read"]);
        ask(&env, "r", "drop", &["drop"]);
        ask(&env, "r", "move", &["move"]);
        ask(&env, "r", "fork", &["child"]);
        ask(&env, "r", "user", &["user"]);
        // The fill let go: a checkpoint taken at once waits for everything to come in,
        // and the registrations end.
        std::fs::write(&hooks, "").unwrap();
        let again = env.dir.path().join("again.img");
        let out = env.crterm(&["checkpoint", &name, "-o", again.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        wait_for("the fill to end", T, || (!has_missing_registration(pid)).then_some(()));
        ask(&env, "r", "user", &["user"]);
        env.tmux.send_keys("r", &["C-d"]);
        env.tmux.wait_text("r", "CRTERM_EXIT=0", T);
        // Again, with the fill running while the program drops, moves, forks and reads.
        resume_with(&env, &env.tmux, "q", (100, 30), "--lazy --name again", &image);
        env.tmux.wait_text("q", "lazymem ready", T);
        ask(&env, "q", "drop", &["drop"]);
        ask(&env, "q", "move", &["move"]);
        ask(&env, "q", "fork", &["child"]);
        ask(&env, "q", "user", &["user"]);
        env.tmux.send_keys("q", &["C-d"]);
        env.tmux.wait_text("q", "CRTERM_EXIT=0", T);
        // What that checkpoint wrote is the memory as the program left it.
        resume_pane(&env, "s", 100, 30, &again);
        env.tmux.wait_text("s", "user ok", T);
        ask(&env, "s", "user", &["user"]);
        env.tmux.send_keys("s", &["C-d"]);
        env.tmux.wait_text("s", "CRTERM_EXIT=0", T);
    }
}

/// The image changed on disk while a lazy resume still serves from it (a chunk no longer
/// has its checksum): the whole session ends, nothing of it is left running.
#[test]
#[ignore = "needs root (a lazy resume); run by tests/run-all.sh as root"]
fn a_lazy_resume_whose_image_changes_under_it_ends_the_whole_session() {
    let (env, hooks) = hooks_for(Env::root());
    let name = "lazybroken";
    let image = lazymem_image(&env, name);
    std::fs::write(&hooks, "hold fill").unwrap();
    resume_with(&env, &env.tmux, "r", (100, 30), "--lazy", &image);
    env.tmux.wait_text("r", "lazymem ready", T);
    let pid = lazymem_pid(&env, name);
    assert!(has_missing_registration(pid), "nothing served lazily");
    let procs = process_tree(env.daemon_pid(name));
    // Page data in the middle of the file, overwritten in place.
    {
        use std::io::{Seek, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&image)
            .unwrap();
        let len = f.metadata().unwrap().len();
        f.seek(std::io::SeekFrom::Start(len / 2)).unwrap();
        f.write_all(&[0x55; 4096]).unwrap();
    }
    std::fs::write(&hooks, "").unwrap();
    let screen = env.tmux.wait_text("r", "CRTERM_EXIT=", T);
    assert!(
        screen.contains("crterm: resume failed: the image is damaged or was changed"),
        "{screen}"
    );
    assert!(screen.contains("CRTERM_EXIT=1"), "{screen}");
    for p in procs {
        wait_for(&format!("process {p} to end"), T, || {
            (!std::path::Path::new(&format!("/proc/{p}")).exists()).then_some(())
        });
    }
    assert!(env.sessions().is_empty(), "a session was left");
}
