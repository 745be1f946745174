//! Terminals: what the session's ptys hold besides their settings, and the screen model
//! through a change of size.

use super::roundtrip::*;
use super::*;

user_and_root! {
    /// Keys typed in canonical (line) mode while the program is busy: two complete lines (one
    /// ended by Enter, one by ^D) and the line being typed, holding a character quoted with
    /// ^V. A checkpoint that lets the session go on leaves them as they were (the program
    /// reads the same three lines, each once on the screen), and a resume brings them back,
    /// the partial line still partial. Before, a canonical queue was left out: the resumed
    /// program waited for lines that never came.
    fn keys_typed_in_line_mode_and_not_read_come_back(env, tag) {
        let flag = env.dir.path().join("go");
        python_pane(&env, "a", "canon");
        enter(
            &env,
            "a",
            &format!(
                "import os, time; print('wait' 'ing'); exec('while not os.path.exists({:?}): time.sleep(0.05)'); print('got', [os.read(0, 100) for _ in range(3)])",
                flag.display()
            ),
        );
        env.tmux.wait_text("a", "\nwaiting", T);
        env.tmux.type_text("a", "one two");
        env.tmux.send_keys("a", &["Enter"]);
        env.tmux.type_text("a", "abc");
        env.tmux.send_keys("a", &["C-d"]);
        env.tmux.type_text("a", "th");
        env.tmux.send_keys("a", &["C-v", "C-d"]);
        env.tmux.type_text("a", "r");
        env.tmux.wait_text("a", "abcth^Dr", T);
        let image = image_path(&env, "canon");
        let out = env.crterm(&["checkpoint", "canon", "-o", image.to_str().unwrap()]);
        assert!(out.status.success(), "{out:?}");
        let expect = r"got [b'one two\n', b'abc', b'th\x04ree\n']";
        // The session goes on as if nothing happened.
        std::fs::write(&flag, "").unwrap();
        env.tmux.type_text("a", "ee");
        env.tmux.send_keys("a", &["Enter"]);
        // The prompt after the reads: readline has the terminal, `exit()` is not typed ahead.
        let screen = env.tmux.wait_text("a", "']\n>>>", T);
        assert!(screen.contains(expect), "{screen}");
        assert_eq!(screen.matches("one two").count(), 2, "typed once: {screen}");
        exit_repl(&env, "a");
        env.tmux.wait_dead("a", T);
        // And the image has the queue as it was: the program finds the flag there and reads.
        resume_pane(&env, "b", 100, 30, &image);
        let screen = env.tmux.wait_text("b", "abcth^Dr", T);
        assert_eq!(screen.matches("one two").count(), 1, "{screen}");
        env.tmux.type_text("b", "ee");
        env.tmux.send_keys("b", &["Enter"]);
        let screen = env.tmux.wait_text("b", "']\n>>>", T);
        assert!(screen.contains(expect), "{screen}");
        exit_repl(&env, "b");
        env.tmux.wait_text("b", "CRTERM_EXIT=0", T);
        let _ = std::fs::remove_file(&image);
    }
}

user_and_root! {
    /// A REPL on the primary screen resumed into a narrower terminal, then a wider one: its
    /// long line is wrapped again at each width, whole (tmux joins its rows back into the
    /// line), not cut at the new width; and the REPL goes on. Before, the narrower terminal
    /// showed the line's first 80 characters only.
    fn a_long_line_is_rewrapped_when_resumed_into_another_width(env, tag) {
        python_pane(&env, "a", "rw");
        let line: String = (0..150).map(|k| (b'a' + (k % 26) as u8) as char).collect();
        enter(
            &env,
            "a",
            "print(''.join(chr(97 + k % 26) for k in range(150)))",
        );
        env.tmux.wait_text("a", "uvwxyzabcdefghijklmnopqrst", T);
        let image = image_path(&env, "rw");
        checkpoint_and_end(&env, "rw", &image);
        let narrow = other_tmux(&env);
        resume_in(&env, &narrow, "n", 80, 30, &image);
        narrow.wait_text("n", ">>>", T);
        let joined = narrow.ok(&["capture-pane", "-p", "-J", "-t", "n"]);
        assert!(joined.lines().any(|l| l == line), "{joined}");
        narrow.ok(&["resize-window", "-t", "n", "-x", "120", "-y", "30"]);
        narrow.type_text("n", "print('af' 'ter')");
        narrow.send_keys("n", &["Enter"]);
        narrow.wait_text("n", "\nafter", T);
        let joined = narrow.ok(&["capture-pane", "-p", "-J", "-t", "n"]);
        assert!(joined.lines().any(|l| l == line), "{joined}");
        narrow.send_keys("n", &["C-d"]);
        narrow.wait_text("n", "CRTERM_EXIT=0", T);
        let _ = std::fs::remove_file(&image);
    }
}
