//! Resuming somewhere else (issue 5): images that travel as streams, other machines.

use super::roundtrip::*;
use super::*;

/// `crterm checkpoint NAME -o - … | …` as this env's user, through bash; returns crterm's
/// exit status and what it said on standard error.
fn checkpoint_into_pipe(env: &Env, name: &str, pipe_to: &str, extra: &str) -> (i32, String) {
    let sh = format!(
        "{} checkpoint {name} -o - {extra} | {pipe_to}; exit ${{PIPESTATUS[0]}}",
        env.crterm_cmd()
    );
    let out = env.run(&["bash", "-c", &sh], None);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).replace('\n', " "),
    )
}

#[test]
fn an_image_streams_through_a_pipe_and_resumes_from_standard_input() {
    let env = Env::unprivileged();
    python_pane(&env, "a", "st");
    enter(&env, "a", "x = 4242");
    let image = image_path(&env, "streamed");
    let (code, said) =
        checkpoint_into_pipe(&env, "st", &format!("cat > {}", image.display()), "--exit");
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("wrote the output stream"), "{said}");
    assert!(env.sessions().is_empty(), "the session ended");
    // The terminal is the pane (/dev/tty); the image comes through a pipe.
    env.tmux.start(
        "b",
        100,
        30,
        &format!(
            "cat {} | {} resume -; echo CRTERM_EXIT=$?; sleep 600",
            image.display(),
            env.crterm_cmd()
        ),
    );
    env.tmux.wait_text("b", ">>> x = 4242", T);
    enter(&env, "b", "print(x + 1)");
    env.tmux.wait_text("b", "4243", T);
    end_with_ctrl_d(&env, "b");
}

#[test]
fn a_stream_cut_midway_fails_cleanly_on_both_ends() {
    let env = Env::unprivileged();
    python_pane(&env, "a", "cut");
    enter(&env, "a", "y = 17");
    // The reader goes away after 64 KiB: the checkpoint fails, the session goes on.
    let (code, said) = checkpoint_into_pipe(&env, "cut", "head -c 65536 > /dev/null", "--exit");
    assert_ne!(code, 0);
    assert!(
        said.contains("checkpoint failed writing the output stream") && said.contains("goes on"),
        "{said}"
    );
    enter(&env, "a", "print('still', y * 2)");
    env.tmux.wait_text("a", "still 34", T);

    // A whole image, then only its first part to resume from: one line, no session.
    let image = image_path(&env, "whole");
    let (code, said) = checkpoint_into_pipe(&env, "cut", &format!("cat > {}", image.display()), "");
    assert_eq!(code, 0, "{said}");
    let len = std::fs::metadata(&image).unwrap().len();
    env.tmux.start(
        "b",
        100,
        30,
        &format!(
            "head -c {} {} | {} resume -; echo CRTERM_EXIT=$?; sleep 600",
            len / 2,
            image.display(),
            env.crterm_cmd()
        ),
    );
    let screen = env
        .tmux
        .wait_text("b", "CRTERM_EXIT=1", T)
        .replace('\n', "");
    assert!(
        screen.contains("cannot resume the image from standard input: the image is cut short"),
        "{screen}"
    );
    assert_eq!(
        env.sessions().len(),
        1,
        "only the first session: {:?}",
        env.sessions()
    );

    // Standard output a terminal: refused before anything is written.
    env.tmux.start(
        "c",
        100,
        30,
        &format!(
            "{} checkpoint cut -o -; echo CRTERM_EXIT=$?; sleep 600",
            env.crterm_cmd()
        ),
    );
    let screen = env
        .tmux
        .wait_text("c", "CRTERM_EXIT=1", T)
        .replace('\n', "");
    assert!(screen.contains("standard output is a terminal"), "{screen}");
}
