//! The multi-process world, end to end: programs that make their own ptys and sockets
//! (screen), checkpointed with `--exit`, resumed in a new pane, and used on.

use super::roundtrip::*;
use super::*;
use std::path::{Path, PathBuf};

/// A screen set-up of the test's own: a socket directory (`SCREENDIR`, so that tests and
/// the host's screens never meet) and a screenrc with a status line on the last row, a
/// shell in window 0 and vim on `file` in window 1. Returns the environment assignment to
/// run screen with, and the screenrc.
fn screen_setup(env: &Env, file: &Path) -> (String, PathBuf) {
    let dir = env.dir.path().join("screens");
    let out = env.run(&["mkdir", "-m", "700", dir.to_str().unwrap()], None);
    assert!(out.status.success());
    let rc = env.dir.path().join("screenrc");
    std::fs::write(
        &rc,
        format!(
            "startup_message off\n\
             hardstatus alwayslastline \"status: %-w%{{+r}}%n*%t%{{-}}%+w\"\n\
             screen -t shell bash --norc\n\
             screen -t editor vim -u NONE -N -i NONE -n {}\n",
            file.display()
        ),
    )
    .unwrap();
    (format!("SCREENDIR={}", dir.display()), rc)
}

/// In the screen shown in `target`: top in window 0, text typed into vim in window 1,
/// which is left shown, in insert mode.
fn fill_screen(tmux: &Tmux, target: &str, word: &str) {
    tmux.wait_text(target, "1*editor", T);
    tmux.type_text(target, &format!("i{word}"));
    tmux.wait_text(target, "-- INSERT --", T);
    tmux.send_keys(target, &["C-a", "0"]);
    tmux.wait_text(target, "0*shell", T);
    tmux.type_text(target, "top -d 0.5");
    tmux.send_keys(target, &["Enter"]);
    tmux.wait_text(target, "PID USER", T);
    tmux.send_keys(target, &["C-a", "1"]);
    tmux.wait_text(target, "-- INSERT --", T);
}

/// top in the window shown keeps refreshing.
fn top_refreshes(tmux: &Tmux, target: &str) {
    tmux.wait_text(target, "PID USER", T);
    wait_for("top to keep refreshing", T, || {
        let a = line(tmux, target, 0);
        std::thread::sleep(Duration::from_millis(1200));
        (a.starts_with("top - ") && line(tmux, target, 0) != a).then_some(())
    });
}

#[test]
fn screen_with_top_and_vim_resumes_equal_then_redrawn_at_another_size() {
    let env = Env::unprivileged();
    let file = env.dir.path().join("editor.txt");
    let (screendir, rc) = screen_setup(&env, &file);
    env.pane(
        "a",
        &format!(
            "{screendir} {} start --name sc -- screen -S t -c {}",
            env.crterm_cmd(),
            rc.display()
        ),
    );
    fill_screen(&env.tmux, "a", "hello from screen");
    let before = env.tmux.settle("a");
    let cursor_before = cursor(&env, "a");
    let image = image_path(&env, "sc");
    checkpoint_and_end(&env, "sc", &image);

    // The same size: the pane as it was, status line included; both windows go on.
    resume_pane(&env, "b", 100, 30, &image);
    env.tmux.wait_text("b", "hello from screen", T);
    assert_same_pane(&env, "b", &before, &cursor_before);
    env.tmux.send_keys("b", &["C-a", "n"]);
    env.tmux.wait_text("b", "0*shell", T);
    top_refreshes(&env.tmux, "b");
    env.tmux.send_keys("b", &["C-a", "n"]);
    env.tmux.wait_text("b", "-- INSERT --", T);
    env.tmux.type_text("b", " and after");
    env.tmux.send_keys("b", &["Escape"]);
    env.tmux.type_text("b", ":wq");
    env.tmux.send_keys("b", &["Enter"]);
    // vim's window closes; top's is shown; end it and the shell, and screen ends.
    top_refreshes(&env.tmux, "b");
    env.tmux.type_text("b", "q");
    env.tmux.wait_text("b", "bash-", T);
    env.tmux.type_text("b", "exit");
    env.tmux.send_keys("b", &["Enter"]);
    env.tmux.wait_text("b", "CRTERM_EXIT=0", T);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "hello from screen and after\n"
    );

    // Another size: screen lays itself out again (the status line on the new last row)
    // and so does vim inside it.
    let small = other_tmux(&env);
    resume_in(&env, &small, "c", 80, 20, &image);
    wait_for("screen and vim to redraw at 80x20", T, || {
        (line(&small, "c", 19).starts_with("status: 0 shell")
            && line(&small, "c", 18).contains("-- INSERT --"))
        .then_some(())
    });
    small.send_keys("c", &["C-a", "\\"]);
    small.wait_text("c", "Really quit", T);
    small.type_text("c", "y");
    small.wait_text("c", "CRTERM_EXIT=0", T);
    assert!(env.sessions().is_empty());
}

#[test]
fn a_detached_screen_is_carried_and_screen_r_attaches_to_it() {
    let env = Env::unprivileged();
    let file = env.dir.path().join("detached.txt");
    let (screendir, rc) = screen_setup(&env, &file);
    env.pane(
        "a",
        &format!(
            "{screendir} {} start --name sd -- bash --norc",
            env.crterm_cmd()
        ),
    );
    env.tmux.wait_text("a", "bash-", T);
    env.tmux
        .type_text("a", &format!("screen -S t -c {}", rc.display()));
    env.tmux.send_keys("a", &["Enter"]);
    fill_screen(&env.tmux, "a", "hello detached");
    env.tmux.send_keys("a", &["C-a", "d"]);
    env.tmux.wait_text("a", "[detached from", T);
    let image = image_path(&env, "sd");
    checkpoint_and_end(&env, "sd", &image);

    resume_pane(&env, "b", 100, 30, &image);
    env.tmux.wait_text("b", "[detached from", T);
    env.tmux.type_text("b", "screen -r t");
    env.tmux.send_keys("b", &["Enter"]);
    env.tmux.wait_text("b", "hello detached", T);
    env.tmux.wait_text("b", "1*editor", T);
    env.tmux.send_keys("b", &["C-a", "n"]);
    top_refreshes(&env.tmux, "b");
    env.tmux.send_keys("b", &["C-a", "\\"]);
    env.tmux.wait_text("b", "Really quit", T);
    env.tmux.type_text("b", "y");
    env.tmux.wait_text("b", "[screen is terminating]", T);
    env.tmux.type_text("b", "exit");
    env.tmux.send_keys("b", &["Enter"]);
    env.tmux.wait_text("b", "CRTERM_EXIT=0", T);
}
