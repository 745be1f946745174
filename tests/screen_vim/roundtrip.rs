//! Checkpoint and resume, end to end: a real program brought into a state under crterm,
//! checkpointed with `--exit` (every process of the session must then be gone), resumed
//! in a new tmux pane, compared with the pane before (same size) or checked to have
//! redrawn itself (other size), and then used on.

use super::*;
use std::path::{Path, PathBuf};

/// Checkpoint session `name` into `image` and end it; every process it had is gone.
pub(crate) fn checkpoint_and_end(env: &Env, name: &str, image: &Path) {
    let daemon = env.daemon_pid(name);
    let procs = process_tree(daemon);
    assert!(procs.len() >= 3, "daemon, init and a program: {procs:?}");
    let out = env.crterm(&["checkpoint", name, "-o", image.to_str().unwrap(), "--exit"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "checkpoint failed: {}{said}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("the session has ended"), "{said}");
    for p in procs {
        assert!(
            wait_gone(p, Duration::from_secs(10)),
            "process {p} of session {name} is still there after checkpoint --exit"
        );
    }
}

/// Resume `image` in a new pane `target` of the given size, in `env`'s tmux server.
pub(crate) fn resume_pane(env: &Env, target: &str, cols: u16, rows: u16, image: &Path) {
    resume_in(env, &env.tmux, target, cols, rows, image)
}

/// A second tmux server for panes of another size: in one server, a new session of
/// another size resizes the windows of the others (tmux 3.3's window sizing), which
/// would redraw the programs there.
pub(crate) fn other_tmux(env: &Env) -> Tmux {
    match &env.user {
        Some(u) => Tmux::as_user(u, env.tmux.env.clone()),
        None => {
            let mut t = Tmux::new();
            t.env = env.tmux.env.clone();
            t
        }
    }
}

pub(crate) fn resume_in(env: &Env, tmux: &Tmux, target: &str, cols: u16, rows: u16, image: &Path) {
    resume_with(env, tmux, target, (cols, rows), "", image)
}

/// `crterm resume ARGS IMAGE` in a new pane `target` of `size`; the pane shows
/// `CRTERM_EXIT=N` when it ends.
pub(crate) fn resume_with(
    env: &Env,
    tmux: &Tmux,
    target: &str,
    size: (u16, u16),
    args: &str,
    image: &Path,
) {
    tmux.start(
        target,
        size.0,
        size.1,
        &format!(
            "{} resume {args} {}; echo CRTERM_EXIT=$?; sleep 600",
            env.crterm_cmd(),
            image.display()
        ),
    );
}

/// A python3 REPL under crterm as session `name` in pane `target`, ready for input.
pub(crate) fn python_pane(env: &Env, target: &str, name: &str) {
    env.pane(
        target,
        &format!("{} start --name {name} -- python3 -q", env.crterm_cmd()),
    );
    env.tmux.wait_text(target, ">>>", T);
}

/// `bash --norc` under crterm as session `name` in pane `target`, at its prompt.
pub(crate) fn bash_pane(env: &Env, target: &str, name: &str) {
    env.pane(
        target,
        &format!("{} start --name {name} -- bash --norc", env.crterm_cmd()),
    );
    env.tmux.wait_text(target, "bash-", T);
}

/// End the REPL in pane `target` with Ctrl-D; the session ends with status 0.
pub(crate) fn end_with_ctrl_d(env: &Env, target: &str) {
    env.tmux.send_keys(target, &["C-d"]);
    env.tmux.wait_text(target, "CRTERM_EXIT=0", T);
}

/// Wait for the python REPL in pane `target` to show its prompt (the last line), then end
/// it with `exit()`. Typed before readline has the terminal, the line would be typed
/// ahead in line mode, and Enter would not end it (python does that without crterm too).
pub(crate) fn exit_repl(env: &Env, target: &str) {
    wait_for("the REPL's prompt", T, || {
        let screen = env.tmux.capture_plain(target);
        let last = screen.lines().rev().find(|l| !l.trim().is_empty());
        (last.map(str::trim_end) == Some(">>>")).then_some(())
    });
    enter(env, target, "exit()");
}

/// Type `line` into pane `target` and press Enter.
pub(crate) fn enter(env: &Env, target: &str, line: &str) {
    env.tmux.type_text(target, line);
    env.tmux.send_keys(target, &["Enter"]);
}

/// Type `line` into the python REPL in pane `target`, and wait until python has run it
/// (the line echoed, the next prompt after it). Keys still on their way from tmux through
/// the client are not the session's yet: a checkpoint taken at once may come first.
pub(crate) fn run_in_repl(env: &Env, target: &str, line: &str) {
    enter(env, target, line);
    let want = format!(">>> {line}\n>>>");
    wait_for(&format!("python to run {line}"), T, || {
        env.tmux.capture_plain(target).contains(&want).then_some(())
    });
}

/// A checkpoint (with `--exit`) of session `name`, shown in pane `target`, must fail with
/// a message containing `expect`, write no image, and leave the session going on (a
/// python REPL: it still computes).
pub(crate) fn assert_refused(env: &Env, name: &str, target: &str, expect: &str) {
    let image = image_path(env, &format!("{name}-refused"));
    let out = env.crterm(&["checkpoint", name, "-o", image.to_str().unwrap(), "--exit"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(expect) && err.contains("goes on"), "{err}");
    assert!(!image.exists(), "no image is written");
    enter(env, target, "print('still', 6 * 7)");
    env.tmux.wait_text(target, "still 42", T);
}

pub(crate) fn image_path(env: &Env, name: &str) -> PathBuf {
    env.dir.path().join(format!("{name}.img"))
}

pub(crate) fn cursor(env: &Env, target: &str) -> String {
    env.tmux.display(target, "#{cursor_x},#{cursor_y}")
}

/// Line `n` (0-based) of a pane's plain text.
pub(crate) fn line(tmux: &Tmux, target: &str, n: usize) -> String {
    tmux.capture_plain(target)
        .lines()
        .nth(n)
        .unwrap_or("")
        .to_string()
}

/// The pane shows what `before` showed (text, colours, attributes) with the cursor there
/// (`cursor_before` empty: wherever the program's redraw leaves it).
pub(crate) fn assert_same_pane(env: &Env, target: &str, before: &str, cursor_before: &str) {
    let start = std::time::Instant::now();
    loop {
        let now = env.tmux.settle(target);
        let at = cursor(env, target);
        if now == before && (cursor_before.is_empty() || at == cursor_before) {
            return;
        }
        if start.elapsed() > T {
            panic!(
                "pane {target} differs from the one before the checkpoint\n--- before (cursor {cursor_before}):\n{before}\n--- after (cursor {at}):\n{now}"
            );
        }
    }
}

fn vim_round_trip(env: &Env) {
    let file = env.dir.path().join("notes.txt");
    env.pane(
        "a",
        &format!(
            "{} start --name rv -- vim -u NONE -N -i NONE -n {}",
            env.crterm_cmd(),
            file.display()
        ),
    );
    env.tmux.wait_text("a", "notes.txt", T);
    env.tmux.type_text("a", ":split");
    env.tmux.send_keys("a", &["Enter"]);
    env.tmux.type_text("a", "ihello from before");
    env.tmux.wait_text("a", "-- INSERT --", T);
    let before = env.tmux.settle("a");
    let cursor_before = cursor(env, "a");
    let image = image_path(env, "rv");
    checkpoint_and_end(env, "rv", &image);

    // Twice at once: a pane of the same size and a smaller one, two independent sessions.
    let small = other_tmux(env);
    resume_pane(env, "b", 100, 30, &image);
    resume_in(env, &small, "c", 80, 20, &image);
    env.tmux.wait_text("b", "hello from before", T);
    assert_same_pane(env, "b", &before, &cursor_before);
    wait_for("vim to redraw at 80x20", T, || {
        (line(&small, "c", 19).contains("-- INSERT --")
            && line(&small, "c", 18).contains("notes.txt"))
        .then_some(())
    });
    let names: Vec<String> = env.sessions().into_iter().map(|s| s.0).collect();
    assert_eq!(names.len(), 2, "two sessions from one image: {names:?}");

    env.tmux.type_text("b", " and after");
    env.tmux.send_keys("b", &["Escape"]);
    env.tmux.type_text("b", ":wqa");
    env.tmux.send_keys("b", &["Enter"]);
    env.tmux.wait_text("b", "CRTERM_EXIT=0", T);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "hello from before and after\n"
    );
    small.send_keys("c", &["Escape"]);
    small.type_text("c", ":qa!");
    small.send_keys("c", &["Enter"]);
    small.wait_text("c", "CRTERM_EXIT=0", T);
    assert!(env.sessions().is_empty());
}

#[test]
fn vim_resumes_equal_at_the_same_size_redrawn_at_another_twice_at_once() {
    vim_round_trip(&Env::unprivileged());
}

#[test]
#[ignore = "needs root (the path without a user namespace); run by tests/run-all.sh as root"]
fn vim_round_trip_as_root() {
    vim_round_trip(&Env::root());
}

#[test]
fn python_keeps_its_variables_modules_and_a_counting_thread() {
    let env = Env::unprivileged();
    env.pane(
        "a",
        &format!("{} start --name py -- python3 -q", env.crterm_cmd()),
    );
    env.tmux.wait_text("a", ">>>", T);
    for l in [
        "import threading, time, json",
        "n = [0]; kept = 'still here'",
        "def tick():\n    while True: n[0] += 1; time.sleep(0.02)\n",
        "threading.Thread(target=tick, daemon=True).start()",
    ] {
        env.tmux.type_text("a", l);
        env.tmux.send_keys("a", &["Enter"]);
    }
    env.tmux.type_text("a", "print('counting', n[0] > 0)");
    env.tmux.send_keys("a", &["Enter"]);
    env.tmux.wait_text("a", "counting True", T);
    let image = image_path(&env, "py");
    checkpoint_and_end(&env, "py", &image);
    let other = other_tmux(&env);
    resume_in(&env, &other, "b", 90, 25, &image);
    other.wait_text("b", "counting True", T);
    other.type_text(
        "b",
        "a = n[0]; time.sleep(0.5); print(kept, json.dumps({'x': 1}), n[0] - a > 5)",
    );
    other.send_keys("b", &["Enter"]);
    other.wait_text("b", "still here {\"x\": 1} True", T);
    other.send_keys("b", &["C-d"]);
    other.wait_text("b", "CRTERM_EXIT=0", T);
}

#[test]
fn bash_keeps_its_variables_cwd_history_and_jobs() {
    let env = Env::unprivileged();
    let file = env.dir.path().join("job.txt");
    env.pane(
        "a",
        &format!(
            "{} start --name sh -- bash --norc --noprofile",
            env.crterm_cmd()
        ),
    );
    env.tmux.wait_text("a", "$", T);
    env.tmux.type_text(
        "a",
        "export VAR=exported-value; cd /usr/share; sleep 1000 &",
    );
    env.tmux.send_keys("a", &["Enter"]);
    env.tmux.type_text(
        "a",
        &format!("vim -u NONE -N -i NONE -n {}", file.display()),
    );
    env.tmux.send_keys("a", &["Enter"]);
    env.tmux.wait_text("a", "job.txt", T);
    env.tmux.type_text("a", "ifrom the job");
    env.tmux.send_keys("a", &["Escape", "C-z"]);
    env.tmux.wait_text("a", "Stopped", T);
    env.tmux.type_text("a", "echo from-history");
    env.tmux.send_keys("a", &["Enter"]);
    env.tmux.wait_text("a", "\nfrom-history", T);
    let image = image_path(&env, "sh");
    checkpoint_and_end(&env, "sh", &image);

    resume_pane(&env, "b", 100, 30, &image);
    env.tmux.wait_text("b", "from-history", T);
    env.tmux.type_text("b", "echo $VAR; pwd; jobs");
    env.tmux.send_keys("b", &["Enter"]);
    let screen = env.tmux.wait_text("b", "Stopped", T);
    assert!(screen.contains("exported-value\n/usr/share\n"), "{screen}");
    assert!(
        screen.contains("Running                 sleep 1000 &"),
        "{screen}"
    );
    // Up twice: past `echo $VAR…` to the line typed before the checkpoint.
    env.tmux.send_keys("b", &["C-l"]);
    env.tmux.send_keys("b", &["Up", "Up", "Enter"]);
    env.tmux
        .wait_text("b", "echo from-history\nfrom-history", T);
    env.tmux.type_text("b", "fg %2");
    env.tmux.send_keys("b", &["Enter"]);
    env.tmux.wait_text("b", "from the job", T);
    env.tmux.type_text("b", "A, saved");
    env.tmux.send_keys("b", &["Escape"]);
    env.tmux.type_text("b", ":wq");
    env.tmux.send_keys("b", &["Enter"]);
    wait_for("the stopped vim to save", T, || {
        (std::fs::read_to_string(&file).ok()? == "from the job, saved\n").then_some(())
    });
    env.tmux.type_text("b", "kill %1; exit");
    env.tmux.send_keys("b", &["Enter"]);
    env.tmux.wait_text("b", "CRTERM_EXIT=", T);
}

#[test]
fn less_htop_and_top_come_back_and_redraw() {
    let env = Env::unprivileged();
    let long = env.dir.path().join("long.txt");
    let text: String = (1..=2000).map(|i| format!("line number {i}\n")).collect();
    std::fs::write(&long, text).unwrap();
    env.pane(
        "l",
        &format!(
            "{} start --name ls -- less {}",
            env.crterm_cmd(),
            long.display()
        ),
    );
    env.tmux.wait_text("l", "line number 1\n", T);
    env.tmux.type_text("l", "1000g");
    env.tmux.wait_text("l", "line number 1000\n", T);
    let before = env.tmux.settle("l");
    env.pane(
        "h",
        &format!("{} start --name hp -- htop", env.crterm_cmd()),
    );
    env.tmux.wait_text("h", "F10Quit", T);
    env.pane(
        "t",
        &format!("{} start --name tp -- top -d 0.5", env.crterm_cmd()),
    );
    env.tmux.wait_text("t", "PID USER", T);

    let (li, hi, ti) = (
        image_path(&env, "ls"),
        image_path(&env, "hp"),
        image_path(&env, "tp"),
    );
    checkpoint_and_end(&env, "ls", &li);
    checkpoint_and_end(&env, "hp", &hi);
    checkpoint_and_end(&env, "tp", &ti);

    resume_pane(&env, "l2", 100, 30, &li);
    env.tmux.wait_text("l2", "line number 1000", T);
    // less redraws its prompt on SIGWINCH and leaves the cursor after it, where before
    // it was at the prompt's start: compare what is shown.
    assert_same_pane(&env, "l2", &before, "");
    env.tmux.send_keys("l2", &["Space"]);
    env.tmux.wait_text("l2", "line number 1040", T);
    env.tmux.type_text("l2", "q");
    env.tmux.wait_text("l2", "CRTERM_EXIT=0", T);

    // At another width the programs lay themselves out again: htop's function bar is
    // on the new last row, top's header is redrawn.
    let small = other_tmux(&env);
    resume_in(&env, &small, "h2", 72, 18, &hi);
    wait_for("htop to redraw at 72x18", T, || {
        line(&small, "h2", 17).starts_with("F1Help").then_some(())
    });
    small.send_keys("h2", &["F10"]);
    small.wait_text("h2", "CRTERM_EXIT=0", T);
    resume_in(&env, &small, "t2", 72, 18, &ti);
    small.wait_text("t2", "PID USER", T);
    wait_for("top to keep refreshing", T, || {
        let a = line(&small, "t2", 0);
        std::thread::sleep(Duration::from_millis(1200));
        (a.starts_with("top - ") && line(&small, "t2", 0) != a).then_some(())
    });
    small.type_text("t2", "q");
    small.wait_text("t2", "CRTERM_EXIT=0", T);
}

/// The C program `tests/screen_vim/NAME.c`, built for this test.
pub(crate) fn build_c(env: &Env, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/screen_vim/{name}.c"));
    let bin = env.dir.path().join(name);
    let out = std::process::Command::new("cc")
        .args(["-O1", "-pthread", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("cc (a C compiler) is needed for this test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// A state set up by C program `NAME.c` (run with `args` as session `session`), which
/// prints READY, waits for a line, checks its own state and prints `verdict` when all is
/// as it was: checkpointed with --exit, resumed, given the line; returns the screen.
pub(crate) fn carried_state(env: &Env, name: &str, args: &str, session: &str, verdict: &str) {
    let bin = build_c(env, name);
    env.pane(
        session,
        &format!(
            "{} start --name {session} -- {} {args}",
            env.crterm_cmd(),
            bin.display()
        ),
    );
    env.tmux
        .wait_text(session, "READY", Duration::from_secs(60));
    env.wait_foreground(session, name);
    let image = image_path(env, session);
    checkpoint_and_end(env, session, &image);
    let pane = format!("{session}-r");
    resume_pane(env, &pane, 100, 30, &image);
    env.tmux.wait_text(&pane, "READY", T);
    env.tmux.send_keys(&pane, &["Enter"]);
    let screen = env
        .tmux
        .wait_text(&pane, "CRTERM_EXIT=", Duration::from_secs(60));
    assert!(screen.contains(verdict), "{name} {args}: {screen}");
    let _ = std::fs::remove_file(&image);
}

#[test]
fn threads_pipes_timerfd_eventfd_epoll_and_file_offsets_go_on() {
    let env = Env::unprivileged();
    let bin = build_c(&env, "resources");
    let data = env.dir.path().join("data.txt");
    std::fs::write(&data, "0123456789abcdefghij").unwrap();
    env.pane(
        "a",
        &format!(
            "{} start --name rs -- {} {}",
            env.crterm_cmd(),
            bin.display(),
            data.display()
        ),
    );
    env.tmux.wait_text("a", "READY", T);
    env.wait_foreground("rs", "resources");
    let image = image_path(&env, "rs");
    checkpoint_and_end(&env, "rs", &image);
    resume_pane(&env, "b", 100, 30, &image);
    env.tmux.wait_text("b", "READY", T);
    env.tmux.send_keys("b", &["Enter"]);
    let screen = env.tmux.wait_text("b", "CRTERM_EXIT=", T);
    assert!(screen.contains("ALL OK"), "{screen}");
}

#[test]
fn python_holding_a_gib_of_random_bytes_gets_them_back() {
    let env = Env::unprivileged();
    let script = env.dir.path().join("gib.py");
    std::fs::write(
        &script,
        "import os, hashlib\nb = os.urandom(1 << 30)\nh = hashlib.sha256(b).hexdigest()\nprint('READY', flush=True)\ninput()\nprint('SAME' if hashlib.sha256(b).hexdigest() == h else 'DIFFERENT', flush=True)\n",
    )
    .unwrap();
    env.pane(
        "a",
        &format!(
            "{} start --name gb -- python3 {}",
            env.crterm_cmd(),
            script.display()
        ),
    );
    env.tmux.wait_text("a", "READY", Duration::from_secs(60));
    let image = image_path(&env, "gb");
    checkpoint_and_end(&env, "gb", &image);
    let size = std::fs::metadata(&image).unwrap().len();
    assert!(size > 1 << 30, "random bytes do not compress: {size}");
    resume_pane(&env, "b", 100, 30, &image);
    env.tmux.wait_text("b", "READY", Duration::from_secs(60));
    env.tmux.send_keys("b", &["Enter"]);
    let screen = env
        .tmux
        .wait_text("b", "CRTERM_EXIT=", Duration::from_secs(60));
    assert!(screen.contains("SAME"), "{screen}");
    let _ = std::fs::remove_file(&image);
}

/// The processes under this test's tmux server (its panes, the crterm clients, the
/// daemons they started and their sessions), zombies not counted.
fn processes_under_tmux(env: &Env) -> usize {
    let server: i32 = env.tmux.display("p0", "#{pid}").parse().unwrap_or(0);
    process_tree(server)
        .into_iter()
        .filter(|&p| !process_gone(p))
        .count()
}

#[test]
fn twenty_cycles_of_vim_leave_nothing_behind() {
    let env = Env::unprivileged();
    let file = env.dir.path().join("cycles.txt");
    env.pane(
        "p0",
        &format!(
            "{} start --name cy -- vim -u NONE -N -i NONE -n {}",
            env.crterm_cmd(),
            file.display()
        ),
    );
    env.tmux.wait_text("p0", "cycles.txt", T);
    env.tmux.type_text("p0", "i");
    let image = image_path(&env, "cy");
    let mut baseline = None;
    for i in 0..20 {
        let pane = format!("p{i}");
        env.tmux.type_text(&pane, &format!("w{i}"));
        env.tmux.wait_text(&pane, &format!("w{i}"), T);
        checkpoint_and_end(&env, "cy", &image);
        if i > 0 {
            env.tmux.ok(&["kill-session", "-t", &pane]);
        }
        let next = format!("p{}", i + 1);
        env.tmux.start(
            &next,
            100,
            30,
            &format!(
                "{} resume --name cy {}; echo CRTERM_EXIT=$?; sleep 600",
                env.crterm_cmd(),
                image.display()
            ),
        );
        // Typed at once: the resume's SIGWINCH and these keys arrive together (this found
        // threads let go just before their re-issued call instead of inside it).
        env.tmux.wait_text(&next, &format!("w{i}"), T);
        // Under the tmux server: the first pane's shell, the current pane's shell, client,
        // daemon, init and vim: the same number every cycle once the last pane is gone.
        match baseline {
            None => baseline = Some(processes_under_tmux(&env)),
            Some(b) => wait_for(
                &format!("cycle {i} to have no more processes than cycle 0"),
                T,
                || (processes_under_tmux(&env) <= b).then_some(()),
            ),
        }
    }
    env.tmux.send_keys("p20", &["Escape"]);
    env.tmux.type_text("p20", ":wq");
    env.tmux.send_keys("p20", &["Enter"]);
    env.tmux.wait_text("p20", "CRTERM_EXIT=0", T);
    let saved = std::fs::read_to_string(&file).unwrap();
    let want: String = (0..20).map(|i| format!("w{i}")).collect();
    assert_eq!(saved, want + "\n");
}

#[test]
fn a_damaged_image_is_refused_with_one_line_and_nothing_started() {
    let env = Env::unprivileged();
    env.pane(
        "a",
        &format!("{} start --name dm -- bash --norc", env.crterm_cmd()),
    );
    env.tmux.wait_text("a", "$", T);
    let image = image_path(&env, "dm");
    checkpoint_and_end(&env, "dm", &image);
    let bytes = std::fs::read(&image).unwrap();
    let bad = env.dir.path().join("bad.img");
    let cut = env.dir.path().join("cut.img");
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x55;
    std::fs::write(&bad, &flipped).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let missing = env.dir.path().join("missing.img");
    let wide = other_tmux(&env);
    for (file, want) in [
        (&bad, "checksum"),
        (&cut, "cut short"),
        (&missing, "No such file"),
    ] {
        // Ownership for the test user.
        let _ = std::process::Command::new("chmod")
            .arg("644")
            .arg(file)
            .output();
        let target = format!("x{}", file.file_stem().unwrap().to_string_lossy());
        resume_in(&env, &wide, &target, 250, 30, file);
        let screen = wide.wait_text(&target, "CRTERM_EXIT=", T);
        let lines: Vec<&str> = screen.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 2, "one line, then the exit status: {screen}");
        assert!(
            lines[0].starts_with("crterm: ") && lines[0].contains(want),
            "one clear line naming the problem: {screen}"
        );
        assert_eq!(lines[1], "CRTERM_EXIT=1");
        assert!(env.sessions().is_empty(), "nothing left running");
    }
}

pub(crate) const GOLDEN_SESSION: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/session-v1.img");

/// Every build must still read, and resume, the image of a trivial session an earlier
/// build wrote (tests/golden/trivial.c: no libc, so the image is small; its program is
/// carried in the image, so nothing of it needs to exist here). It is made with `--cpu
/// baseline`, so it resumes on any x86-64-v2 CPU, whichever made it. Regenerate only with
/// a format change: `CRTERM_WRITE_GOLDEN=1 cargo test --test screen_vim golden`.
#[test]
fn the_golden_session_image_still_reads_and_resumes() {
    let env = Env::unprivileged();
    if std::env::var_os("CRTERM_WRITE_GOLDEN").is_some() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/trivial.c");
        let bin = env.dir.path().join("trivial");
        let out = std::process::Command::new("cc")
            .args(["-nostdlib", "-static", "-O1", "-o"])
            .arg(&bin)
            .arg(&src)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        env.pane(
            "g",
            &format!(
                "{} start --cpu baseline --name golden -- {}",
                env.crterm_cmd(),
                bin.display()
            ),
        );
        env.tmux.wait_text("g", "type a line", T);
        env.wait_foreground("golden", "trivial");
        let image = image_path(&env, "golden");
        checkpoint_and_end(&env, "golden", &image);
        std::fs::copy(&image, GOLDEN_SESSION).unwrap();
    }
    let img = crterm::image::read_file(Path::new(GOLDEN_SESSION)).unwrap();
    assert_eq!(img.format.0, 1);
    let record: crterm::records::SessionRecord = img
        .meta(crterm::image::SectionKind::SESSION)
        .expect("this build reads the golden session record");
    assert_eq!(record.processes.len(), 1);
    assert_eq!(record.processes[0].comm, "trivial");
    // Resumed: the program is back in its read, and answers.
    let copy = env.dir.path().join("golden-copy.img");
    std::fs::copy(GOLDEN_SESSION, &copy).unwrap();
    let _ = std::process::Command::new("chmod")
        .arg("644")
        .arg(&copy)
        .output();
    resume_pane(&env, "r", 100, 30, &copy);
    env.tmux.wait_text("r", "type a line", T);
    env.tmux.type_text("r", "still here");
    env.tmux.send_keys("r", &["Enter"]);
    let screen = env.tmux.wait_text("r", "CRTERM_EXIT=", T);
    assert!(
        screen.contains("golden session resumed: still here"),
        "{screen}"
    );
    assert!(screen.contains("CRTERM_EXIT=0"), "{screen}");
}

#[test]
fn a_changed_file_the_session_writes_is_refused_unless_forced_a_grown_log_is_fine() {
    let env = Env::unprivileged();
    let written = env.dir.path().join("written.txt");
    let log = env.dir.path().join("log.txt");
    std::fs::write(&written, "one\n").unwrap();
    std::fs::write(&log, "first line\n").unwrap();
    for f in [&written, &log] {
        let _ = std::process::Command::new("chmod")
            .arg("666")
            .arg(f)
            .output();
    }
    env.pane(
        "a",
        &format!(
            "{} start --name fi -- bash --norc --noprofile",
            env.crterm_cmd()
        ),
    );
    env.tmux.wait_text("a", "$", T);
    env.tmux.type_text(
        "a",
        &format!(
            "exec 3>>{} 4<{}; read -r x <&4; echo opened $x",
            written.display(),
            log.display()
        ),
    );
    env.tmux.send_keys("a", &["Enter"]);
    env.tmux.wait_text("a", "\nopened first line", T);
    let image = image_path(&env, "fi");
    checkpoint_and_end(&env, "fi", &image);

    // The log (read only) grows: fine. The file the shell writes to changes: refused.
    std::fs::write(&log, "first line\nsecond line\n").unwrap();
    std::fs::write(&written, "ONE\n").unwrap();
    let wide = other_tmux(&env);
    resume_in(&env, &wide, "r1", 250, 30, &image);
    let screen = wide.wait_text("r1", "CRTERM_EXIT=", T);
    let first = screen.lines().next().unwrap_or("");
    assert!(
        first.contains(&format!(
            "{} changed since the checkpoint",
            written.display()
        )) && first.contains("--force"),
        "{screen}"
    );
    assert!(env.sessions().is_empty());
    // The refusal came midway (the processes existed already): nothing of it is left,
    // only the pane's own shell or sleep under that tmux server.
    let server: i32 = wide.display("r1", "#{pid}").parse().unwrap();
    wait_for("the failed resume's processes to be gone", T, || {
        let left: Vec<String> = process_tree(server)
            .into_iter()
            .skip(1)
            .filter(|&p| !process_gone(p))
            .map(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default())
            .collect();
        left.iter()
            .all(|c| matches!(c.trim(), "sleep" | "bash" | "sh"))
            .then_some(())
            .filter(|_| left.len() <= 2)
    });

    resume_with(&env, &env.tmux, "r2", (100, 30), "--force", &image);
    env.tmux.wait_text("r2", "opened first line", T);
    env.tmux.type_text("r2", "cat <&4; echo appended >&3; exit");
    env.tmux.send_keys("r2", &["Enter"]);
    let screen = env.tmux.wait_text("r2", "CRTERM_EXIT=0", T);
    // Read on from where it was: only the new line.
    assert!(screen.contains("\nsecond line\n"), "{screen}");
    assert!(!screen.contains("\nfirst line\n"), "{screen}");
    assert_eq!(
        std::fs::read_to_string(&written).unwrap(),
        "ONE\nappended\n"
    );
}

/// A feature glibc picks code by that this CPU lacks (fma4 on every CPU since AMD's
/// Bulldozer family; AVX-512 on those): a session made where it was would be refused here.
pub(crate) fn a_feature_this_cpu_lacks() -> String {
    let here = crterm::image::ImageInfo::here();
    crterm::machine::GLIBC_DISPATCH
        .iter()
        .copied()
        .find(|f| !here.cpu_features.iter().any(|g| g == f))
        .expect("this CPU has every feature glibc picks code by, fma4 and AVX-512 both")
        .to_string()
}

/// An instruction-set feature this CPU lacks that glibc does not pick code by (AMX, AVX-512
/// FP16, AVX10 ... whichever this CPU lacks): a session could not have acted on it.
pub(crate) fn a_feature_no_program_used() -> String {
    let here = crterm::image::ImageInfo::here();
    crterm::machine::ISA_FEATURES
        .iter()
        .copied()
        .filter(|f| !crterm::machine::GLIBC_DISPATCH.contains(f) && *f != "apx")
        .find(|f| !here.cpu_features.iter().any(|g| g == f))
        .expect("this CPU has every instruction-set feature crterm knows")
        .to_string()
}

/// The image's header and record as if made on this CPU with `extra` features more, by a
/// session started without `--cpu baseline` (the other machine of a test).
pub(crate) fn as_if_made_on_this_cpu_with(
    info: &mut crterm::image::ImageInfo,
    record: &mut crterm::records::SessionRecord,
    extra: &[String],
) {
    info.cpu_features = crterm::image::ImageInfo::here().cpu_features;
    info.cpu_features.extend(extra.iter().cloned());
    record.machine.cpu_baseline = false;
}

/// Image `src` written again to `dest` after `change` to its header and session record
/// (as if made elsewhere); mode 0644, so that the test user can read it.
pub(crate) fn rewrite_image(
    src: &Path,
    dest: &Path,
    change: impl FnOnce(&mut crterm::image::ImageInfo, &mut crterm::records::SessionRecord),
) {
    use crterm::image::{self, SectionKind};
    let img = image::read_file(src).unwrap();
    let mut info = img.info.clone();
    let term: crterm::term_model::Term = img.meta(SectionKind::TERM_MODEL).unwrap();
    let mut record: crterm::records::SessionRecord = img.meta(SectionKind::SESSION).unwrap();
    change(&mut info, &mut record);
    image::write_file(dest, &info, |w| {
        w.meta(SectionKind::TERM_MODEL, &term)?;
        for kind in [SectionKind::PAGES, SectionKind::FILES] {
            for i in 0..img.stored_chunks(kind).count() {
                w.chunks(kind, &img.chunk(kind, i).unwrap())?;
            }
        }
        w.meta(SectionKind::SESSION, &record)
    })
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// The golden image rewritten as if made on this CPU with one more feature glibc picks
/// code by.
fn image_from_a_richer_cpu(dest: &Path) -> String {
    let extra = a_feature_this_cpu_lacks();
    rewrite_image(Path::new(GOLDEN_SESSION), dest, |info, record| {
        as_if_made_on_this_cpu_with(info, record, std::slice::from_ref(&extra))
    });
    extra
}

#[test]
fn a_cpu_without_a_feature_the_image_had_is_refused_unless_forced() {
    let env = Env::unprivileged();
    let image = env.dir.path().join("richer.img");
    let extra = image_from_a_richer_cpu(&image);
    let wide = other_tmux(&env);
    resume_in(&env, &wide, "r", 250, 30, &image);
    let screen = wide.wait_text("r", "CRTERM_EXIT=", T);
    let first = screen.lines().next().unwrap_or("");
    assert!(
        first.starts_with("crterm: ") && first.contains(&format!("this CPU lacks {extra}")),
        "{screen}"
    );
    assert!(screen.contains("CRTERM_EXIT=1"), "{screen}");
    assert!(env.sessions().is_empty());
    resume_with(&env, &env.tmux, "f", (100, 30), "--force", &image);
    env.tmux.wait_text("f", "type a line", T);
    env.tmux.type_text("f", "forced");
    env.tmux.send_keys("f", &["Enter"]);
    env.tmux.wait_text("f", "golden session resumed: forced", T);
}

/// A bash session `name` in pane "a" with a raw terminal and a program busy for `busy`
/// seconds, during which `word` is typed: the keys wait in the pty, unread.
fn typed_ahead(name: &str, busy: u32, word: &str) -> Env {
    let env = Env::unprivileged();
    env.pane(
        "a",
        &format!(
            "{} start --name {name} -- bash --norc --noprofile",
            env.crterm_cmd()
        ),
    );
    env.tmux.wait_text("a", "$", T);
    env.tmux.type_text(
        "a",
        &format!("stty raw -echo; echo busy; sleep {busy}; head -c 5 | od -An -c; stty sane"),
    );
    env.tmux.send_keys("a", &["Enter"]);
    env.tmux.wait_text("a", "\nbusy", T);
    env.tmux.type_text("a", word);
    let sleep = env.wait_foreground(name, "sleep");
    env.wait_typed(sleep, word.len());
    env
}

#[test]
fn keys_typed_ahead_and_not_yet_read_are_read_after_resume() {
    let env = typed_ahead("ta", 4, "hello");
    let image = image_path(&env, "ta");
    checkpoint_and_end(&env, "ta", &image);
    resume_pane(&env, "b", 100, 30, &image);
    env.tmux.wait_text("b", "h   e   l   l   o", T);
}

#[test]
fn keys_typed_ahead_survive_a_checkpoint_that_goes_on() {
    let env = typed_ahead("tg", 3, "world");
    let image = image_path(&env, "tg");
    let out = env.crterm(&["checkpoint", "tg", "-o", image.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.tmux.wait_text("a", "w   o   r   l   d", T);
}

#[test]
fn a_session_holding_a_netlink_socket_is_refused_at_checkpoint_naming_it() {
    let env = Env::unprivileged();
    python_pane(&env, "a", "so");
    enter(
        &env,
        "a",
        "import socket; n = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4); print('fd', n.fileno())",
    );
    env.tmux.wait_text("a", "fd 3", T);
    assert_refused(
        &env,
        "so",
        "a",
        "process 2 (python3) holds fd 3, a netlink socket of protocol 4 (route sockets are carried)",
    );
}

/// Random mapping layouts (splits by protection, holes, pages dropped, pages never
/// touched, pages rewritten) come back byte for byte, each page with its protection:
/// a property test over seeds (a fixed one, and others from the clock each run; a
/// failure names its seed).
#[test]
fn random_memory_layouts_come_back_byte_for_byte() {
    let env = Env::unprivileged();
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for (i, (seed, mib)) in [(1, 512), (clock, 64), (clock + 1, 64), (clock + 2, 16)]
        .into_iter()
        .enumerate()
    {
        carried_state(
            &env,
            "layouts",
            &format!("{seed} {mib}"),
            &format!("ly{i}"),
            "LAYOUT OK",
        );
    }
}

/// Zombies: one killed by SIGKILL in a group of its own, one that exited with 3, one
/// killed by SIGSEGV, one in a session of its own; each comes back with its group,
/// session and status.
#[test]
fn zombies_come_back_with_their_status_group_and_session() {
    carried_state(&Env::unprivileged(), "zombies", "", "zb", "ZOMBIES OK");
}

/// A job stopped by SIGTSTP comes back stopped by SIGTSTP (its parent's waitpid, and so
/// bash's job table, tell it from SIGSTOP), and goes on when continued.
#[test]
fn a_job_stopped_by_sigtstp_comes_back_stopped_by_it() {
    carried_state(&Env::unprivileged(), "jobstop", "", "js", "JOBSTOP OK");
}

/// A descriptor of a namespace (opened from /proc/PID/ns) is refused at checkpoint, named,
/// instead of failing it with a bare errno.
#[test]
fn a_namespace_file_held_open_is_refused_at_checkpoint_naming_it() {
    let env = Env::unprivileged();
    python_pane(&env, "a", "nsf");
    enter(
        &env,
        "a",
        "import os; n = os.open('/proc/self/ns/uts', os.O_RDONLY); print('fd', n)",
    );
    env.tmux.wait_text("a", "fd 3", T);
    assert_refused(
        &env,
        "nsf",
        "a",
        "process 2 (python3) holds fd 3, a namespace file (uts, opened from /proc/PID/ns)",
    );
}

/// A process in a deleted directory comes back in a deleted directory of that name, and
/// keeps its parent-death signal.
#[test]
fn a_deleted_working_directory_and_a_parent_death_signal_come_back() {
    let env = Env::unprivileged();
    let dir = env.dir.path().display().to_string();
    carried_state(&env, "cwdsig", &dir, "cw", "CWDSIG OK");
}

/// Blocked signals queued for the process and for each thread come back every copy, in
/// order, with their siginfo (code, sender, value; the kernel's SIGCHLD with its status),
/// not one bare signal per number.
#[test]
fn queued_signals_come_back_every_copy_in_order_with_their_siginfo() {
    carried_state(&Env::unprivileged(), "signals", "", "sq", "SIGNALS OK");
}

/// A stream of queued signals in flight while the checkpoint freezes the session: each
/// comes back once, in order, including one the freeze caught on its way to its handler
/// (taken from the queue already). Rounds with the freeze slowed between seizing a thread
/// and stopping it (`slow seize`), where the stream's receiver is caught on its way to a
/// signal every time, and rounds at full speed.
#[test]
fn a_stream_of_queued_signals_in_flight_loses_none_and_repeats_none() {
    let (env, hooks) = slow_seize();
    for i in 0..4 {
        if i == 2 {
            std::fs::write(&hooks, "").unwrap();
        }
        carried_state(&env, "sigstream", "", &format!("st{i}"), "SIGSTREAM OK");
    }
}

/// An environment whose checkpoints wait a moment between seizing each thread and
/// stopping it (the `slow seize` test hook; emptying the file it returns turns that off).
fn slow_seize() -> (Env, PathBuf) {
    let (env, hooks) = super::faults::env_with_hooks();
    std::fs::write(&hooks, "slow seize").unwrap();
    (env, hooks)
}

/// A process's own file in /proc held open (opened as /proc/self/status) is refused at
/// checkpoint, named: opened again by its path after a resume it would be another
/// process's. A file of the system's in /proc (/proc/meminfo) is not a reason to refuse.
#[test]
fn a_process_s_own_file_in_proc_held_open_is_refused_at_checkpoint() {
    let env = Env::unprivileged();
    python_pane(&env, "a", "pf");
    enter(
        &env,
        "a",
        "import os; m = os.open('/proc/meminfo', os.O_RDONLY); s = os.open('/proc/self/status', os.O_RDONLY); print('fds', m, s)",
    );
    env.tmux.wait_text("a", "fds 3 4", T);
    assert_refused(
        &env,
        "pf",
        "a",
        "process 2 (python3) holds fd 4, a process's file in /proc (/proc/2/status), which this version cannot carry",
    );
}

/// A process working in its own directory in /proc is refused at checkpoint, named: a
/// resume would put it in another process's directory.
#[test]
fn a_working_directory_in_a_process_s_proc_directory_is_refused_at_checkpoint() {
    let env = Env::unprivileged();
    python_pane(&env, "a", "pc");
    enter(
        &env,
        "a",
        "import os; os.chdir('/proc/self'); print('in', 6 * 7)",
    );
    env.tmux.wait_text("a", "in 42", T);
    assert_refused(
        &env,
        "pc",
        "a",
        "process 2 (python3) works in a process's directory in /proc (/proc/2)",
    );
}

/// A process chrooted into a directory (root in the session, where it may) is refused at
/// checkpoint, named, rather than resumed with the session's root.
#[test]
#[ignore = "needs root (chroot); run by tests/run-all.sh as root"]
fn a_chrooted_process_is_refused_at_checkpoint() {
    let env = Env::root();
    let jail = env.dir.path().join("jail");
    std::fs::create_dir(&jail).unwrap();
    python_pane(&env, "a", "cr");
    enter(
        &env,
        "a",
        &format!(
            "import os; os.chroot('{}'); print('in', 6 * 7)",
            jail.display()
        ),
    );
    env.tmux.wait_text("a", "in 42", T);
    assert_refused(
        &env,
        "cr",
        "a",
        &format!(
            "process 2 (python3) has a root of its own (chroot to {})",
            jail.display()
        ),
    );
}

/// KSM merging all of a process's memory (PR_SET_MEMORY_MERGE, which only a privileged
/// process may set) comes back set, for the process that had it and not for one that
/// turned it off after it was inherited.
#[test]
#[ignore = "needs root (PR_SET_MEMORY_MERGE takes CAP_SYS_RESOURCE); run by tests/run-all.sh as root"]
fn ksm_merging_all_memory_comes_back_as_root() {
    let env = Env::root();
    python_pane(&env, "a", "km");
    enter(
        &env,
        "a",
        "import ctypes, os; p = ctypes.CDLL(None).prctl; p(67, 1, 0, 0, 0); r, w = os.pipe(); k = os.fork() or (p(67, 0, 0, 0, 0), os.read(r, 1), os._exit(0)); ksm = lambda q: [l for l in open(f'/proc/{q}/ksm_stat') if 'merge_any' in l][0].split()[1]; print('ksm', ksm(os.getpid()), ksm(k))",
    );
    env.tmux.wait_text("a", "ksm yes", T);
    let image = image_path(&env, "km");
    checkpoint_and_end(&env, "km", &image);
    resume_pane(&env, "b", 100, 30, &image);
    enter(
        &env,
        "b",
        "print('af' 'ter', ksm(os.getpid()), ksm(k)); os.write(w, b'x')",
    );
    let screen = env.tmux.wait_text("b", "after", T);
    assert!(screen.contains("after yes no"), "{screen}");
    exit_repl(&env, "b");
}

/// Mappings come back with their flags: madvise advice (fork, dump, merge, huge page,
/// read-ahead), MAP_NORESERVE, MAP_DROPPABLE, mlock and mlock2 on fault, mseal; and a
/// shared file mapping that is read-only now comes back from an open of the mode the
/// program had opened the file with (one may still be made writable, one may not).
#[test]
fn mappings_keep_their_advice_locks_seals_and_open_mode() {
    let env = Env::unprivileged();
    let dir = env.dir.path().join("vm");
    std::fs::create_dir(&dir).unwrap();
    let _ = std::process::Command::new("chmod")
        .arg("777")
        .arg(&dir)
        .output();
    carried_state(
        &env,
        "vmflags",
        &dir.display().to_string(),
        "vf",
        "VMFLAGS OK (15 mappings)",
    );
}

/// Mappings of a file deleted since, with no descriptor left (private, shared, and one
/// longer than the file), come back with every page of the file, also pages the process
/// never brought into memory.
#[test]
fn mappings_of_a_deleted_file_keep_every_page_of_it() {
    let env = Env::unprivileged();
    let dir = env.dir.path().join("dm");
    std::fs::create_dir(&dir).unwrap();
    let _ = std::process::Command::new("chmod")
        .arg("777")
        .arg(&dir)
        .output();
    let args = dir.display().to_string();
    carried_state(&env, "deletedmap", &args, "dm", "DELETEDMAP OK");
}

/// A pipe end opened again through /proc/self/fd (read-only non-blocking, read-write) is
/// a description of its own after the resume, with its own flags, of the same pipe.
#[test]
fn a_pipe_reopened_through_proc_keeps_each_description() {
    carried_state(&Env::unprivileged(), "pipedesc", "", "pd", "PIPEDESC OK");
}

/// O_PATH descriptors come back as O_PATH descriptors of the same objects: one on a
/// symbolic link itself (O_NOFOLLOW; its text read through it), one on a file, one on a
/// directory.
#[test]
fn o_path_descriptors_on_a_symlink_a_file_and_a_directory_come_back() {
    let env = Env::unprivileged();
    let dir = env.dir.path().join("opath-dir");
    std::fs::create_dir(&dir).unwrap();
    let _ = std::process::Command::new("chmod")
        .arg("777")
        .arg(&dir)
        .output();
    carried_state(&env, "opath", &dir.display().to_string(), "op", "OPATH OK");
}

/// memfds come back as memfds: their names, seals (and the kernel's F_SEAL_SEAL on one
/// made without sealing), mode and content, one file for the descriptor, a shared mapping
/// of it and a child's description opened again through /proc/PID/fd.
#[test]
fn memfds_come_back_as_memfds_with_their_names_seals_and_sharers() {
    carried_state(&Env::unprivileged(), "memfd", "", "mf", "MEMFD OK");
}

/// A memfd sealed against writing and mapped shared cannot be made again so (its pages
/// are written through the mapping, and the kernel seals no file a mapping may write): it
/// is refused at checkpoint, naming both, and the session goes on.
#[test]
fn a_write_sealed_memfd_mapped_shared_is_refused_at_checkpoint() {
    let env = Env::unprivileged();
    python_pane(&env, "a", "ws");
    enter(
        &env,
        "a",
        "import os, fcntl, mmap; m = os.memfd_create('sealed', os.MFD_ALLOW_SEALING); os.write(m, b'x' * 4096); fcntl.fcntl(m, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE); v = mmap.mmap(m, 4096, mmap.MAP_SHARED, mmap.PROT_READ); print('fd', m)",
    );
    env.tmux.wait_text("a", "fd 3", T);
    assert_refused(
        &env,
        "ws",
        "a",
        "process 2 (python3) holds fd 3, a memfd sealed against writing (F_SEAL_WRITE) that process 2 (python3) maps shared",
    );
}

/// Memory a parent and its child share copy-on-write since a fork stays shared after a
/// resume (each shows it as shared, not private: the session takes the memory it took),
/// with every byte as it was in each: pages either changed after the fork, wrote over,
/// or dropped (zeros for the one that dropped them).
#[test]
fn memory_shared_copy_on_write_between_parent_and_child_stays_shared() {
    carried_state(&Env::unprivileged(), "cowshare", "", "cw", "COWSHARE OK");
}

/// A vfork parent waiting for its child (an uninterruptible wait no tracer can stop) makes
/// the checkpoint fail within seconds, naming it, instead of hanging; the session goes on:
/// when the child ends, the parent runs on and is not left stopped.
#[test]
fn a_vfork_parent_fails_the_checkpoint_by_name_instead_of_hanging_it() {
    let env = Env::unprivileged();
    let bin = build_c(&env, "vforker");
    env.pane(
        "a",
        &format!("{} start --name vk -- {}", env.crterm_cmd(), bin.display()),
    );
    env.tmux.wait_text("a", "READY", Duration::from_secs(60));
    let image = image_path(&env, "vk");
    let started = std::time::Instant::now();
    let out = env.crterm(&["checkpoint", "vk", "-o", image.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("(vforker) did not stop within 3 s")
            && err.contains("a vfork parent waits there")
            && err.contains("goes on"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(!image.exists(), "no image is written");
    env.tmux.send_keys("a", &["Enter"]);
    env.tmux.wait_text("a", "VFORK OVER (child ran)", T);
}

/// Two processes sharing one descriptor table (clone with CLONE_FILES), or one working
/// directory, root and umask (CLONE_FS), are refused at checkpoint, named: a resume would
/// give each its own.
#[test]
fn processes_sharing_a_descriptor_table_or_fs_context_are_refused_at_checkpoint() {
    let env = Env::unprivileged();
    for (flag, name, shared) in [
        (0x400, "cf", "one descriptor table (CLONE_FILES)"),
        (
            0x200,
            "cs",
            "their working directory, root and umask (CLONE_FS)",
        ),
    ] {
        let pane = format!("p{name}");
        python_pane(&env, &pane, name);
        enter(
            &env,
            &pane,
            &format!(
                "import ctypes, time; r = ctypes.CDLL(None).syscall(56, {flag} | 17, 0, 0, 0, 0); time.sleep(100000) if r == 0 else print('cloned', r > 0)"
            ),
        );
        env.tmux.wait_text(&pane, "cloned True", T);
        assert_refused(
            &env,
            name,
            &pane,
            &format!("process 2 (python3) and process 3 (python3) share {shared}"),
        );
    }
}

/// Two processes sharing one memory (clone with CLONE_VM, not threads of one process) are
/// refused at checkpoint, named; the session goes on.
#[test]
fn processes_sharing_their_memory_are_refused_at_checkpoint() {
    let env = Env::unprivileged();
    let bin = build_c(&env, "sharedvm");
    env.pane(
        "a",
        &format!("{} start --name sv -- {}", env.crterm_cmd(), bin.display()),
    );
    env.tmux.wait_text("a", "READY", Duration::from_secs(60));
    env.wait_foreground("sv", "sharedvm");
    let image = image_path(&env, "sv");
    let out = env.crterm(&["checkpoint", "sv", "-o", image.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("process 2 (sharedvm) and process 3 (sharedvm) share their memory (CLONE_VM")
            && err.contains("goes on"),
        "{err}"
    );
    assert!(!image.exists(), "no image is written");
    env.tmux.send_keys("a", &["Enter"]);
    env.tmux.wait_text("a", "SHAREDVM OVER", T);
}

/// A file deleted while open comes back as one file however many descriptions (and
/// processes, and shared mappings) hold it, with its mode; a sparse one keeps its holes.
#[test]
fn a_deleted_file_comes_back_as_one_file_with_its_mode_and_holes() {
    let env = Env::unprivileged();
    let dir = env.dir.path().join("df");
    std::fs::create_dir(&dir).unwrap();
    let _ = std::process::Command::new("chmod")
        .arg("777")
        .arg(&dir)
        .output();
    let args = dir.display().to_string();
    carried_state(&env, "deletedfiles", &args, "df", "DELETEDFILES OK");
}

/// A file removed from the path it was opened by that still has another name (a hard
/// link) is refused at checkpoint, named: made again unnamed, it would be another file.
#[test]
fn an_open_file_unlinked_but_still_linked_elsewhere_is_refused_at_checkpoint() {
    let env = Env::unprivileged();
    let dir = env.dir.path().join("hl");
    std::fs::create_dir(&dir).unwrap();
    let _ = std::process::Command::new("chmod")
        .arg("777")
        .arg(&dir)
        .output();
    let d = dir.display();
    python_pane(&env, "a", "hl");
    enter(
        &env,
        "a",
        &format!(
            "import os; f = open('{d}/a', 'w'); os.link('{d}/a', '{d}/b'); os.unlink('{d}/a'); print('fd', f.fileno())"
        ),
    );
    env.tmux.wait_text("a", "fd 3", T);
    assert_refused(
        &env,
        "hl",
        "a",
        &format!(
            "process 2 (python3) holds fd 3, a file removed from this path that still has another name (a hard link) ({d}/a (deleted))"
        ),
    );
}

/// Descriptors that signal their owner (O_ASYNC) keep owner and signal: a pipe owned by
/// its process with F_SETSIG, a socket owned by a process group, a pty owned by a thread.
#[test]
fn descriptors_keep_who_they_signal_and_with_which_signal() {
    carried_state(&Env::unprivileged(), "sigio", "", "si", "SIGIO OK");
}

/// The states of the programs above come back as root too, where the resume runs
/// without a user namespace and with every privilege (and so could hand a process more
/// than it had, or get a state right only by accident of privilege): zombies, a stopped
/// job, queued signals, second descriptions of a pipe, memfds, copy-on-write sharing,
/// owners of descriptors, a deleted working directory with a parent-death signal, O_PATH
/// descriptors, mappings' flags, deleted files and mappings of them, a random layout.
#[test]
#[ignore = "needs root; run by tests/run-all.sh as root"]
fn processes_signals_memory_and_files_come_back_as_root() {
    let env = Env::root();
    for (name, session, verdict) in [
        ("zombies", "zr", "ZOMBIES OK"),
        ("jobstop", "jr", "JOBSTOP OK"),
        ("signals", "sr", "SIGNALS OK"),
        ("pipedesc", "pr", "PIPEDESC OK"),
        ("memfd", "fr", "MEMFD OK"),
        ("cowshare", "cr", "COWSHARE OK"),
        ("sigio", "ir", "SIGIO OK"),
        ("layouts", "lr", "LAYOUT OK"),
    ] {
        let args = if name == "layouts" { "7 64" } else { "" };
        carried_state(&env, name, args, session, verdict);
    }
    for (name, session, verdict) in [
        ("cwdsig", "wr", "CWDSIG OK"),
        ("opath", "or", "OPATH OK"),
        ("vmflags", "vr", "VMFLAGS OK (15 mappings)"),
        ("deletedfiles", "dr", "DELETEDFILES OK"),
        ("deletedmap", "nr", "DELETEDMAP OK"),
    ] {
        let dir = env.dir.path().join(format!("{name}-root"));
        std::fs::create_dir(&dir).unwrap();
        carried_state(&env, name, &dir.display().to_string(), session, verdict);
    }
}

/// How a process is scheduled comes back per thread: the main thread under SCHED_BATCH
/// at nice 5, on CPU 0 only, with its own timer slack and the idle I/O class; a second
/// thread under SCHED_IDLE at nice 9, on every CPU it had; the process's OOM score
/// adjustment and its transparent huge pages turned off. Checkpoints that go on leave
/// all of it as it was (a checkpoint keeps each thread it drives on its own CPU a moment,
/// and puts its affinity back).
#[test]
fn scheduling_affinity_io_priority_timer_slack_and_oom_score_come_back() {
    let env = Env::unprivileged();
    python_pane(&env, "a", "sd");
    for line in [
        "import os, threading, ctypes; L = ctypes.CDLL(None); ev = threading.Event(); tids = []",
        "t = threading.Thread(target=lambda: (tids.append(threading.get_native_id()), os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0)), os.setpriority(os.PRIO_PROCESS, 0, 9), ev.wait())); t.start()",
        "os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0)); os.setpriority(os.PRIO_PROCESS, 0, 5); os.sched_setaffinity(0, {0}); L.prctl(29, 123456, 0, 0, 0); L.prctl(41, 1, 0, 0, 0); open('/proc/self/oom_score_adj', 'w').write('300'); L.syscall(251, 1, 0, 3 << 13)",
        "ta = os.sched_getaffinity(tids[0]); s = lambda: (os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0), sorted(os.sched_getaffinity(0)), L.prctl(30, 0, 0, 0, 0), L.syscall(252, 1, 0), open('/proc/self/oom_score_adj').read().strip(), L.prctl(42, 0, 0, 0, 0), os.sched_getscheduler(tids[0]), os.getpriority(os.PRIO_PROCESS, tids[0]), os.sched_getaffinity(tids[0]) == ta); b = s(); print('be' 'fore', b)",
    ] {
        enter(&env, "a", line);
    }
    let want = "(3, 5, [0], 123456, 24576, '300', 1, 5, 9, True)";
    let screen = env.tmux.wait_text("a", "before (", T);
    assert!(screen.contains(&format!("before {want}")), "{screen}");
    let image = image_path(&env, "sd");
    for n in 0..3 {
        let out = env.crterm(&["checkpoint", "sd", "-o", image.to_str().unwrap(), "--full"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        enter(&env, "a", &format!("print('on{n}', s())"));
        let screen = env.tmux.wait_text("a", &format!("on{n} ("), T);
        assert!(screen.contains(&format!("on{n} {want}")), "{screen}");
    }
    std::fs::remove_file(&image).unwrap();
    checkpoint_and_end(&env, "sd", &image);
    resume_pane(&env, "b", 100, 30, &image);
    env.tmux.wait_text("b", "before (", T);
    enter(&env, "b", "print('af' 'ter', s())");
    let screen = env.tmux.wait_text("b", "after (", T);
    assert!(screen.contains(&format!("after {want}")), "{screen}");
    enter(&env, "b", "ev.set(); exit()");
}

/// A child subreaper (PR_SET_CHILD_SUBREAPER) is one after the resume: it says so, and
/// an orphan below it becomes its child, not the init's.
#[test]
fn a_child_subreaper_stays_one() {
    let env = Env::unprivileged();
    python_pane(&env, "a", "sr");
    enter(
        &env,
        "a",
        "import ctypes, os, time; p = ctypes.CDLL(None).prctl; p(36, 1, 0, 0, 0); b = ctypes.c_int(); g = lambda: (p(37, ctypes.byref(b), 0, 0, 0), b.value)[1]; print('reaper', g())",
    );
    env.tmux.wait_text("a", "reaper 1", T);
    let image = image_path(&env, "sr");
    checkpoint_and_end(&env, "sr", &image);
    resume_pane(&env, "b", 100, 30, &image);
    env.tmux.wait_text("b", "reaper 1", T);
    enter(
        &env,
        "b",
        "c = os.fork() or (os.fork() or time.sleep(5), os._exit(0)); os.waitpid(c, 0); time.sleep(0.3); kids = [d for d in os.listdir('/proc') if d.isdigit() and open(f'/proc/{d}/stat').read().rsplit(')', 1)[1].split()[1] == str(os.getpid())]; print('af' 'ter', g(), len(kids))",
    );
    let screen = env.tmux.wait_text("b", "after ", T);
    assert!(screen.contains("after 1 1"), "{screen}");
    exit_repl(&env, "b");
}

/// mlockall(MCL_FUTURE), with and without MCL_ONFAULT, still locks the mappings a process
/// makes after the resume, and a process that had not called it gets no lock.
#[test]
fn mlockall_for_mappings_to_come_is_carried() {
    carried_state(&Env::unprivileged(), "mlockall", "", "ml", "MLOCKALL OK");
}

/// The same as root (no RLIMIT_MEMLOCK in the way; the restore's own mappings are made
/// before the flag is set again).
#[test]
#[ignore = "needs root; run by tests/run-all.sh as root"]
fn mlockall_for_mappings_to_come_is_carried_as_root() {
    carried_state(&Env::root(), "mlockall", "", "mr", "MLOCKALL OK");
}

/// The file cache's entry of `file` (see `crterm::ckpt::filecache`): named by its device,
/// inode, size, mtime and ctime.
fn cache_entry(env: &Env, file: &Path) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(file).unwrap();
    let ns = |s: i64, n: i64| s as i128 * 1_000_000_000 + n as i128;
    env.dir.path().join("cache/crterm/files").join(format!(
        "{}.{}.{}.{}.{}.{}",
        libc::major(m.dev()),
        libc::minor(m.dev()),
        m.ino(),
        m.size(),
        ns(m.mtime(), m.mtime_nsec()),
        ns(m.ctime(), m.ctime_nsec())
    ))
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

user_and_root! {
    /// A full checkpoint takes the compressed content of the files the session maps from
    /// the user's cache, which is private, kept between checkpoints, and used only where
    /// it holds the file's very bytes: a damaged entry, or one made up for another content
    /// (with that content's hash), changes nothing in the image. Its resume, with the file
    /// replaced by that other content, still maps the session's own.
    fn carried_files_come_from_the_cache_only_as_they_are(env, tag) {
        use std::os::unix::fs::PermissionsExt;
        let owner = env.user.as_deref().map(user_ids);
        let chown = |p: &Path| {
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
            }
        };
        let data = env.dir.path().join("mapped.bin");
        let original: Vec<u8> = (0..(256u32 << 10) / 16)
            .flat_map(|i| format!("line {i:010}\n").into_bytes())
            .collect();
        std::fs::write(&data, &original).unwrap();
        let want = sha256_hex(&original);
        // A cache directory others could read is not used.
        let files = env.dir.path().join("cache/crterm/files");
        for d in [env.dir.path().join("cache"), env.dir.path().join("cache/crterm"), files.clone()] {
            std::fs::create_dir(&d).unwrap();
            chown(&d);
        }
        std::fs::set_permissions(&files, std::fs::Permissions::from_mode(0o755)).unwrap();

        // Mapped, not held open: python's mmap keeps a descriptor of its own, closed here
        // (an open file replaced would rightly be refused at resume).
        python_pane(&env, "p", "fc");
        enter(
            &env,
            "p",
            &format!(
                "import mmap, hashlib, os; f = open('{0}', 'rb'); m = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ); f.close(); [os.close(int(d)) for d in os.listdir('/proc/self/fd') if os.path.realpath('/proc/self/fd/' + d) == '{0}']; print('MAPPED', len(m))",
                data.display()
            ),
        );
        env.tmux.wait_text("p", "MAPPED 262144", T);
        let checkpoint = |n: &str, more: &[&str]| {
            let image = image_path(&env, &format!("fc{n}"));
            let out = env.crterm(&[&["checkpoint", "fc", "--full", "-o", image.to_str().unwrap()][..], more].concat());
            assert!(
                out.status.success(),
                "checkpoint {n}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            image
        };
        checkpoint("0", &[]);
        assert_eq!(std::fs::read_dir(&files).unwrap().count(), 0, "a cache others can read is not used");
        std::fs::set_permissions(&files, std::fs::Permissions::from_mode(0o700)).unwrap();

        // Kept at the first checkpoint, private; used at the next (touched).
        checkpoint("1", &[]);
        let entry = cache_entry(&env, &data);
        let meta = std::fs::metadata(&entry).unwrap_or_else(|e| {
            let there: Vec<_> = std::fs::read_dir(&files).unwrap().flatten().map(|e| e.file_name()).collect();
            panic!("no entry {} for the mapped file ({e}); there: {there:?}", entry.display())
        });
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&files).unwrap().permissions().mode() & 0o777, 0o700);
        std::thread::sleep(Duration::from_millis(20));
        checkpoint("2", &[]);
        assert!(
            std::fs::metadata(&entry).unwrap().modified().unwrap() > meta.modified().unwrap(),
            "the entry was used"
        );

        // Damaged (its last compressed byte): not used, and removed.
        let mut bytes = std::fs::read(&entry).unwrap();
        *bytes.last_mut().unwrap() ^= 0x55;
        std::fs::write(&entry, &bytes).unwrap();
        let damaged = checkpoint("3", &[]);
        assert!(!entry.exists(), "a damaged entry is removed");

        // Made up for another content of the same size, with that content's hash (one
        // chunk, stored as it is).
        let other: Vec<u8> = original.iter().map(|b| b.to_ascii_uppercase()).collect();
        let mut made = b"crtfc02\n".to_vec();
        made.extend_from_slice(sha256_hex(&other).as_bytes());
        made.extend_from_slice(&(other.len() as u64).to_le_bytes());
        made.extend_from_slice(&1u32.to_le_bytes());
        made.extend_from_slice(&0u32.to_le_bytes());
        made.extend_from_slice(&(other.len() as u32).to_le_bytes());
        made.extend_from_slice(&other);
        std::fs::write(&entry, &made).unwrap();
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o600)).unwrap();
        chown(&entry);
        let made_up = checkpoint("4", &["--exit"]);
        assert!(!entry.exists(), "an entry that does not match is removed");

        // The file replaced by the other content (another inode): both images map the
        // session's own bytes.
        let next = env.dir.path().join("mapped.new");
        std::fs::write(&next, &other).unwrap();
        std::fs::rename(&next, &data).unwrap();
        for (pane, image) in [("r3", &damaged), ("r4", &made_up)] {
            resume_pane(&env, pane, 100, 30, image);
            env.tmux.wait_text(pane, ">>>", T);
            enter(&env, pane, "print('H', hashlib.sha256(m[:]).hexdigest())");
            env.tmux.wait_text(pane, &format!("H {want}"), T);
            exit_repl(&env, pane);
            env.tmux.wait_text(pane, "CRTERM_EXIT=0", T);
        }
    }
}

/// A sparse file of `size` bytes with `data` written at each offset of `at`.
fn sparse_file(path: &Path, size: u64, at: &[u64], data: &[u8]) -> Vec<u8> {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    for &a in at {
        f.seek(SeekFrom::Start(a)).unwrap();
        f.write_all(data).unwrap();
    }
    drop(f);
    std::fs::read(path).unwrap()
}

/// Sparse files, held open and mapped, are carried whole with their content's hash: finding
/// the holes moved the file's offset to the last one, so the hash (and an open file's
/// content, carried as empty) was of what came after it.
#[test]
fn sparse_files_held_open_and_mapped_are_carried_whole() {
    let env = Env::unprivileged();
    let open = env.dir.path().join("open-sparse.bin");
    let mapped = env.dir.path().join("mapped-sparse.bin");
    let open_bytes = sparse_file(&open, 1 << 20, &[256 << 10, (1 << 20) - 4], b"open");
    let mapped_bytes = sparse_file(&mapped, 2 << 20, &[512 << 10, (2 << 20) - 6], b"mapped");
    for p in [&open, &mapped] {
        let _ = std::process::Command::new("chmod")
            .arg("644")
            .arg(p)
            .output();
    }
    python_pane(&env, "p", "sp");
    enter(
        &env,
        "p",
        &format!(
            "import mmap, hashlib, os; f = open('{o}', 'rb'); g = open('{m}', 'rb'); m = mmap.mmap(g.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ); g.close(); [os.close(int(d)) for d in os.listdir('/proc/self/fd') if os.path.realpath('/proc/self/fd/' + d) == '{m}']; print('HELD', len(m))",
            o = open.display(),
            m = mapped.display()
        ),
    );
    env.tmux.wait_text("p", "HELD 2097152", T);
    let image = image_path(&env, "sp");
    checkpoint_and_end(&env, "sp", &image);
    let out = env.crterm(&["info", "--json", image.to_str().unwrap()]);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (path, bytes) in [(&open, &open_bytes), (&mapped, &mapped_bytes)] {
        let f = info["session"]["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["paths"].to_string().contains(&*path.to_string_lossy()))
            .unwrap_or_else(|| panic!("{} carried: {info}", path.display()));
        assert_eq!(f["sha256"], sha256_hex(bytes), "{}", path.display());
        assert_eq!(f["size"], bytes.len(), "{}", path.display());
    }
    // The open one gone: made again from the image, whole.
    std::fs::remove_file(&open).unwrap();
    resume_pane(&env, "r", 100, 30, &image);
    env.tmux.wait_text("r", ">>>", T);
    enter(
        &env,
        "r",
        "f.seek(0); print('O', hashlib.sha256(f.read()).hexdigest()); print('M', hashlib.sha256(m[:]).hexdigest())",
    );
    env.tmux
        .wait_text("r", &format!("O {}", sha256_hex(&open_bytes)), T);
    env.tmux
        .wait_text("r", &format!("M {}", sha256_hex(&mapped_bytes)), T);
    assert_eq!(std::fs::read(&open).unwrap(), open_bytes);
    exit_repl(&env, "r");
    env.tmux.wait_text("r", "CRTERM_EXIT=0", T);
}
