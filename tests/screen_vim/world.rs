//! The multi-process world, end to end: programs that make their own ptys and sockets
//! (screen), checkpointed with `--exit`, resumed in a new pane, and used on.

use super::roundtrip::*;
use super::*;
use std::path::{Path, PathBuf};

/// A screen set-up of the test's own: a socket directory (`SCREENDIR`, so that tests and
/// the host's screens never meet) and a screenrc with a status line on the last row, a
/// shell in window 0 and vim on `file` in window 1. Returns the environment assignment to
/// run screen with, and the screenrc.
pub(crate) fn screen_setup(env: &Env, file: &Path) -> (String, PathBuf) {
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
pub(crate) fn fill_screen(tmux: &Tmux, target: &str, word: &str) {
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

/// In the screen of `fill_screen` shown in `target`, resumed: `C-a n` shows top still
/// refreshing, the next `C-a n` vim still in insert mode, which takes `more` and saves;
/// then top and the shell end, and with them screen and the session.
pub(crate) fn use_both_windows_and_end(tmux: &Tmux, target: &str, more: &str) {
    tmux.send_keys(target, &["C-a", "n"]);
    tmux.wait_text(target, "0*shell", T);
    top_refreshes(tmux, target);
    tmux.send_keys(target, &["C-a", "n"]);
    tmux.wait_text(target, "-- INSERT --", T);
    tmux.type_text(target, more);
    tmux.send_keys(target, &["Escape"]);
    tmux.type_text(target, ":wq");
    tmux.send_keys(target, &["Enter"]);
    // vim's window closes; top's is shown; end it and the shell, and screen ends.
    top_refreshes(tmux, target);
    tmux.type_text(target, "q");
    tmux.wait_text(target, "bash-", T);
    tmux.type_text(target, "exit");
    tmux.send_keys(target, &["Enter"]);
    tmux.wait_text(target, "CRTERM_EXIT=0", T);
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
    screen_round_trip(&Env::unprivileged());
}

#[test]
#[ignore = "needs root (the path without a user namespace); run by tests/run-all.sh as root"]
fn screen_round_trip_as_root() {
    screen_round_trip(&Env::root());
}

fn screen_round_trip(env: &Env) {
    let file = env.dir.path().join("editor.txt");
    let (screendir, rc) = screen_setup(env, &file);
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
    let cursor_before = cursor(env, "a");
    let image = image_path(env, "sc");
    checkpoint_and_end(env, "sc", &image);

    // The same size: the pane as it was, status line included; both windows go on.
    resume_pane(env, "b", 100, 30, &image);
    env.tmux.wait_text("b", "hello from screen", T);
    assert_same_pane(env, "b", &before, &cursor_before);
    use_both_windows_and_end(&env.tmux, "b", " and after");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "hello from screen and after\n"
    );

    // Another size: screen lays itself out again (the status line on the new last row)
    // and so does vim inside it.
    let small = other_tmux(env);
    resume_in(env, &small, "c", 80, 20, &image);
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

#[test]
fn tmux_inside_crterm_with_two_panes_comes_back_and_goes_on() {
    let env = Env::unprivileged();
    // Its own socket directory (tmux leaves the socket file behind) and no clock in its
    // status line (the pane is compared across a minute boundary).
    let tmpdir = env.dir.path().join("inner-tmux");
    let out = env.run(&["mkdir", "-m", "700", tmpdir.to_str().unwrap()], None);
    assert!(out.status.success());
    let conf = env.dir.path().join("tmux.conf");
    std::fs::write(&conf, "set -g status-right ''\n").unwrap();
    env.pane(
        "a",
        &format!(
            "env -u TMUX TMUX_TMPDIR={} {} start --name tx -- tmux -L inner -f {}",
            tmpdir.display(),
            env.crterm_cmd(),
            conf.display()
        ),
    );
    env.tmux.wait_text("a", "0:bash*", T);
    env.tmux.send_keys("a", &["C-b", "\""]);
    env.tmux.type_text("a", "echo pane $((1 + 1))");
    env.tmux.send_keys("a", &["Enter"]);
    env.tmux.wait_text("a", "pane 2", T);
    let before = env.tmux.settle("a");
    let cursor_before = cursor(&env, "a");
    let image = image_path(&env, "tx");
    checkpoint_and_end(&env, "tx", &image);

    resume_pane(&env, "b", 100, 30, &image);
    env.tmux.wait_text("b", "pane 2", T);
    assert_same_pane(&env, "b", &before, &cursor_before);
    // The client still talks to its server: typing reaches the lower pane, the prefix
    // key moves to the upper one.
    env.tmux.type_text("b", "echo lower $((2 + 2))");
    env.tmux.send_keys("b", &["Enter"]);
    env.tmux.wait_text("b", "lower 4", T);
    env.tmux.send_keys("b", &["C-b", "o"]);
    env.tmux.type_text("b", "echo upper $((3 + 3))");
    env.tmux.send_keys("b", &["Enter"]);
    env.tmux.wait_text("b", "upper 6", T);
    env.tmux.type_text("b", "tmux -L inner kill-server");
    env.tmux.send_keys("b", &["Enter"]);
    env.tmux.wait_text("b", "CRTERM_EXIT=", T);
    assert!(env.sessions().is_empty());

    // Another size: the inner tmux lays out its panes and status line again (its socket
    // file, left behind by the server that ended, is replaced).
    let small = other_tmux(&env);
    resume_in(&env, &small, "c", 80, 20, &image);
    wait_for("the inner tmux to redraw at 80x20", T, || {
        line(&small, "c", 19)
            .starts_with("[0] 0:bash*")
            .then_some(())
    });
    small.type_text("c", "tmux -L inner kill-server");
    small.send_keys("c", &["Enter"]);
    small.wait_text("c", "CRTERM_EXIT=", T);
}

#[test]
fn emacs_with_a_modified_buffer_and_a_shell_inside_goes_on() {
    let env = Env::unprivileged();
    let file = env.dir.path().join("emacs.txt");
    env.pane(
        "a",
        &format!(
            // Its own TMPDIR: emacs leaves a native-compilation file there each run.
            "TMPDIR={} {} start --name em -- emacs -nw -Q {}",
            env.dir.path().display(),
            env.crterm_cmd(),
            file.display()
        ),
    );
    env.tmux.wait_text("a", "emacs.txt", T);
    env.tmux.type_text("a", "hello emacs");
    env.tmux.wait_text("a", "**-", T);
    env.tmux.send_keys("a", &["M-x"]);
    env.tmux.type_text("a", "shell");
    env.tmux.send_keys("a", &["Enter"]);
    env.tmux.wait_text("a", "*shell*", T);
    env.tmux.type_text("a", "echo inferior $((6 * 7))");
    env.tmux.send_keys("a", &["Enter"]);
    env.tmux.wait_text("a", "inferior 42", T);
    let before = env.tmux.settle("a");
    let image = image_path(&env, "em");
    checkpoint_and_end(&env, "em", &image);

    resume_pane(&env, "b", 100, 30, &image);
    env.tmux.wait_text("b", "inferior 42", T);
    assert_same_pane(&env, "b", &before, "");
    // The inferior shell answers; the modified buffer is there to save.
    env.tmux.type_text("b", "echo again $((7 * 8))");
    env.tmux.send_keys("b", &["Enter"]);
    env.tmux.wait_text("b", "again 56", T);
    env.tmux.send_keys("b", &["C-x", "b"]);
    env.tmux.type_text("b", "emacs.txt");
    env.tmux.send_keys("b", &["Enter"]);
    env.tmux.send_keys("b", &["M->"]);
    env.tmux.type_text("b", " and after");
    env.tmux.send_keys("b", &["C-x", "C-s"]);
    env.tmux.wait_text("b", "Wrote ", T);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "hello emacs and after\n"
    );
    env.tmux.send_keys("b", &["C-x", "C-c"]);
    let asked = env.tmux.wait_text("b", "exit anyway?", T);
    if asked.contains("(yes or no)") {
        env.tmux.type_text("b", "yes");
        env.tmux.send_keys("b", &["Enter"]);
    } else {
        env.tmux.type_text("b", "y");
    }
    env.tmux.wait_text("b", "CRTERM_EXIT=0", T);

    // Another size: emacs lays its window out again, the mode line on the new row above
    // the echo area. (The session ends with the test.)
    let small = other_tmux(&env);
    resume_in(&env, &small, "c", 80, 20, &image);
    wait_for("emacs to redraw at 80x20", T, || {
        line(&small, "c", 18).contains("*shell*").then_some(())
    });
}

/// In the python REPL in `target`: the seconds the monotonic and the wall clock moved
/// since `m0` and `w0` were taken.
fn clocks_moved(tmux: &Tmux, target: &str, tag: &str) -> (f64, f64) {
    tmux.type_text(
        target,
        &format!("print('{tag}', time.monotonic() - m0, time.time() - w0)"),
    );
    tmux.send_keys(target, &["Enter"]);
    let screen = tmux.wait_text(target, &format!("\n{tag} "), T);
    let line = screen
        .lines()
        .rev()
        .find(|l| l.starts_with(&format!("{tag} ")))
        .unwrap();
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    (v[0], v[1])
}

#[test]
fn monotonic_time_goes_on_from_the_checkpoint_wall_time_is_real() {
    let env = Env::unprivileged();
    python_pane(&env, "a", "tm1");
    env.tmux
        .type_text("a", "import time; m0 = time.monotonic(); w0 = time.time()");
    env.tmux.send_keys("a", &["Enter"]);
    let image = image_path(&env, "tm1");
    checkpoint_and_end(&env, "tm1", &image);
    // Away for 3 s: the session's monotonic clock does not see them, its wall clock does.
    std::thread::sleep(Duration::from_secs(3));
    resume_pane(&env, "b", 100, 30, &image);
    env.tmux.wait_text("b", ">>>", T);
    let (mono, wall) = clocks_moved(&env.tmux, "b", "first");
    assert!(wall >= 3.0, "the wall clock is the real one: {wall}");
    assert!(
        wall - mono >= 2.5,
        "monotonic must not count the time away: moved {mono} s, wall {wall} s"
    );
    // Again, from the resumed session (its time namespace's offsets add up).
    let image2 = image_path(&env, "tm1-again");
    let name = env.sessions()[0].0.clone();
    checkpoint_and_end(&env, &name, &image2);
    std::thread::sleep(Duration::from_secs(2));
    resume_pane(&env, "c", 100, 30, &image2);
    env.tmux.wait_text("c", ">>>", T);
    let (mono2, wall2) = clocks_moved(&env.tmux, "c", "second");
    assert!(
        wall2 - mono2 >= 4.5 && mono2 >= mono,
        "monotonic goes on across two resumes: {mono} then {mono2}, wall {wall2}"
    );
    // `--clock real`: the host's monotonic clock, which went on meanwhile.
    end_with_ctrl_d(&env, "c");
    resume_with(&env, &env.tmux, "d", (100, 30), "--clock real", &image2);
    env.tmux.wait_text("d", ">>>", T);
    let (mono3, wall3) = clocks_moved(&env.tmux, "d", "real");
    assert!(
        wall3 - mono3 < 1.0,
        "with --clock real monotonic moved with the host: {mono3} vs wall {wall3}"
    );
    end_with_ctrl_d(&env, "d");
}

#[test]
fn a_pipeline_in_progress_and_an_ssh_agent_go_on() {
    let env = Env::unprivileged();
    let agent = env.dir.path().join("agent.sock");
    bash_pane(&env, "a", "pl");
    // ssh-agent forks a daemon that starts its own session and whose parent exits.
    env.tmux
        .type_text("a", &format!("eval $(ssh-agent -s -a {})", agent.display()));
    env.tmux.send_keys("a", &["Enter"]);
    env.tmux.wait_text("a", "Agent pid", T);
    env.tmux.type_text(
        "a",
        "seq 1 100000000 | awk '{s += $1} END {printf \"sum %.0f\\n\", s}'",
    );
    env.tmux.send_keys("a", &["Enter"]);
    std::thread::sleep(Duration::from_millis(1500));
    let image = image_path(&env, "pl");
    checkpoint_and_end(&env, "pl", &image);
    assert!(
        !env.tmux.capture_plain("a").contains("sum "),
        "the pipeline was still running at the checkpoint"
    );

    resume_pane(&env, "b", 100, 30, &image);
    env.tmux
        .wait_text("b", "sum 5000000050000000", Duration::from_secs(120));
    env.tmux.type_text("b", "ssh-add -l; echo ssh-add=$?");
    env.tmux.send_keys("b", &["Enter"]);
    // 1: the agent answered and holds no keys (2 would be: no agent to talk to).
    env.tmux.wait_text("b", "ssh-add=1", T);
    env.tmux.type_text("b", "ssh-agent -k >/dev/null; exit");
    env.tmux.send_keys("b", &["Enter"]);
    env.tmux.wait_text("b", "CRTERM_EXIT=0", T);
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

#[test]
fn tail_f_follows_a_renamed_file_across_a_resume_and_misses_no_line() {
    let env = Env::unprivileged();
    let log = env.dir.path().join("log.txt");
    std::fs::write(&log, "line one\n").unwrap();
    env.pane(
        "a",
        &format!(
            "{} start --name tf -- tail -f {}",
            env.crterm_cmd(),
            log.display()
        ),
    );
    env.tmux.wait_text("a", "line one", T);
    append(&log, "line two\n");
    env.tmux.wait_text("a", "line two", T);
    // tail follows the file it has open: renamed, it goes on reading it.
    let renamed = env.dir.path().join("renamed.txt");
    std::fs::rename(&log, &renamed).unwrap();
    append(&renamed, "line three\n");
    env.tmux.wait_text("a", "line three", T);
    let image = image_path(&env, "tf");
    checkpoint_and_end(&env, "tf", &image);
    append(&renamed, "line four, while it was away\n");

    resume_pane(&env, "b", 100, 30, &image);
    env.tmux.wait_text("b", "line three", T);
    append(&renamed, "line five, after\n");
    let screen = env.tmux.wait_text("b", "line five, after", T);
    assert!(screen.contains("line four, while it was away"), "{screen}");
    append(&renamed, "line six\n");
    env.tmux.wait_text("b", "line six", T);
    env.tmux.send_keys("b", &["C-c"]);
    env.tmux.wait_text("b", "CRTERM_EXIT=", T);
}

/// A TCP port nobody listens on now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The body of `GET /name` from 127.0.0.1:port, or None if nobody answers.
fn http_get(port: u16, name: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET /{name} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn http_server_listens_again_and_connections_to_the_outside_come_back_closed() {
    use std::io::Write;
    let env = Env::unprivileged();
    let site = env.dir.path().join("site");
    std::fs::create_dir(&site).unwrap();
    std::fs::write(site.join("hello.txt"), "served from the session\n").unwrap();
    let port = free_port();
    env.pane(
        "a",
        &format!(
            "cd {} && {} start --name hs -- python3 -m http.server {port} --bind 127.0.0.1",
            site.display(),
            env.crterm_cmd()
        ),
    );
    env.tmux.wait_text("a", "Serving HTTP", T);
    assert!(
        http_get(port, "hello.txt")
            .unwrap()
            .contains("served from the session")
    );

    // A python holding a TCP connection and a unix socket connection to servers outside
    // the session, each with bytes queued that it has not read.
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_port = tcp.local_addr().unwrap().port();
    let unix_path = env.dir.path().join("outside.sock");
    let unix = std::os::unix::net::UnixListener::bind(&unix_path).unwrap();
    if let Some(u) = &env.user {
        let out = std::process::Command::new("chown")
            .args([u.as_str(), unix_path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    env.tmux.start(
        "c",
        100,
        30,
        &format!("{} start --name cl -- python3 -q", env.crterm_cmd()),
    );
    env.tmux.wait_text("c", ">>>", T);
    env.tmux.type_text(
        "c",
        &format!(
            "import socket; t = socket.create_connection(('127.0.0.1', {tcp_port})); u = socket.socket(socket.AF_UNIX); u.connect('{}'); print('conn' 'ected')",
            unix_path.display()
        ),
    );
    env.tmux.send_keys("c", &["Enter"]);
    env.tmux.wait_text("c", "connected", T);
    let (mut t_peer, _) = tcp.accept().unwrap();
    let (mut u_peer, _) = unix.accept().unwrap();
    t_peer.write_all(b"tcp bytes").unwrap();
    u_peer.write_all(b"unix bytes").unwrap();
    // Until both are queued at the session's ends: the unix socket's (sock_diag says what
    // our end sent and is unread) and the TCP one's (its receive queue in /proc/net/tcp).
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let u_inode = std::fs::metadata(format!("/proc/self/fd/{}", u_peer.as_raw_fd()))
        .unwrap()
        .ino();
    let session_port = t_peer.peer_addr().unwrap().port();
    wait_for("the bytes in the session's sockets", T, || {
        let unix_queued = crterm::sys::sock::unix_diag()
            .ok()?
            .get(&u_inode)
            .is_some_and(|d| d.unread_sent > 0);
        let tcp_queued = std::fs::read_to_string("/proc/net/tcp")
            .ok()?
            .lines()
            .any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 4
                    && f[1].ends_with(&format!(":{session_port:04X}"))
                    && f[4]
                        .split_once(':')
                        .and_then(|(_, rx)| u64::from_str_radix(rx, 16).ok())
                        .is_some_and(|rx| rx >= 9)
            });
        (unix_queued && tcp_queued).then_some(())
    });

    let (hi, ci) = (image_path(&env, "hs"), image_path(&env, "cl"));
    checkpoint_and_end(&env, "hs", &hi);
    checkpoint_and_end(&env, "cl", &ci);
    assert!(
        http_get(port, "hello.txt").is_none(),
        "nobody listens while it is away"
    );

    // The server listens on its port again.
    resume_pane(&env, "b", 100, 30, &hi);
    env.tmux.wait_text("b", "Serving HTTP", T);
    let got = wait_for("the resumed http.server to answer", T, || {
        http_get(port, "hello.txt")
    });
    assert!(got.contains("served from the session"), "{got}");
    // The same image once more, while the port is taken: one clear line, nothing left.
    let sessions = env.sessions().len();
    resume_pane(&env, "e", 100, 30, &hi);
    // (The message wraps at the pane's width.)
    let screen = env
        .tmux
        .wait_text("e", "CRTERM_EXIT=1", T)
        .replace('\n', "");
    assert!(
        screen.contains("another program has taken the port"),
        "{screen}"
    );
    assert_eq!(env.sessions().len(), sessions);

    // The client's connections: what had arrived is read, then the end of the stream;
    // resume said which connections came back closed.
    resume_pane(&env, "d", 100, 30, &ci);
    wait_for("resume to list the closed connections", T, || {
        let s = env.tmux.capture_plain("d").replace('\n', "");
        (s.matches("comes back closed").count() == 2).then_some(())
    });
    env.tmux.type_text(
        "d",
        "print('got', t.recv(100), t.recv(100), u.recv(100), u.recv(100))",
    );
    env.tmux.send_keys("d", &["Enter"]);
    env.tmux
        .wait_text("d", "got b'tcp bytes' b'' b'unix bytes' b''", T);
    end_with_ctrl_d(&env, "d");
    drop(u_peer);
    drop(t_peer);
}

#[test]
fn a_file_deleted_while_open_and_a_named_pipe_with_bytes_in_it_come_back() {
    let env = Env::unprivileged();
    let dir = env.dir.path();
    env.pane(
        "a",
        &format!(
            "cd {} && {} start --name df -- bash --norc",
            dir.display(),
            env.crterm_cmd()
        ),
    );
    env.tmux.wait_text("a", "bash-", T);
    env.tmux.type_text(
        "a",
        "echo 'kept after deletion' > gone.txt; exec 3< gone.txt; rm gone.txt; mkfifo ff; exec 4<> ff; echo 'in the fifo' >&4; echo set\"\"up",
    );
    env.tmux.send_keys("a", &["Enter"]);
    env.tmux.wait_text("a", "setup", T);
    let image = image_path(&env, "df");
    checkpoint_and_end(&env, "df", &image);
    assert!(!dir.join("gone.txt").exists());

    resume_pane(&env, "b", 100, 30, &image);
    env.tmux.wait_text("b", "setup", T);
    env.tmux.type_text(
        "b",
        "cat <&3; ls -l /proc/$$/fd/3 | grep -o 'gone.txt (deleted)'; read -t 5 line <&4; echo \"fifo: $line\"",
    );
    env.tmux.send_keys("b", &["Enter"]);
    env.tmux.wait_text("b", "fifo: in the fifo", T);
    let screen = env.tmux.capture_plain("b");
    assert!(screen.contains("\nkept after deletion"), "{screen}");
    assert!(screen.contains("gone.txt (deleted)"), "{screen}");
    assert!(!dir.join("gone.txt").exists(), "it comes back deleted");
    env.tmux.type_text("b", "exit");
    env.tmux.send_keys("b", &["Enter"]);
    env.tmux.wait_text("b", "CRTERM_EXIT=0", T);
}

/// Whether another process can take an exclusive lock on `path` now: flock(2) or a
/// POSIX record lock (fcntl) on `range` (start, length).
fn lockable(path: &Path, posix_range: Option<(u64, u64)>) -> bool {
    let code = match posix_range {
        None => "import fcntl, sys; f = open(sys.argv[1], 'r+'); fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)".to_string(),
        Some((start, len)) => format!(
            "import fcntl, sys; f = open(sys.argv[1], 'r+'); fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, {len}, {start})"
        ),
    };
    std::process::Command::new("python3")
        .args(["-c", &code, path.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn flock_and_posix_locks_are_held_again_after_resume() {
    let env = Env::unprivileged();
    let (a, b) = (env.dir.path().join("a.lock"), env.dir.path().join("b.lock"));
    for p in [&a, &b] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(p, "0123456789abcdefghij").unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    python_pane(&env, "a", "lk");
    env.tmux.type_text(
        "a",
        &format!(
            "import fcntl; f = open('{}', 'r+'); g = open('{}', 'r+'); fcntl.flock(f, fcntl.LOCK_EX); fcntl.lockf(g, fcntl.LOCK_EX, 10, 5); print('lo' 'cked')",
            a.display(),
            b.display()
        ),
    );
    env.tmux.send_keys("a", &["Enter"]);
    env.tmux.wait_text("a", "locked", T);
    assert!(!lockable(&a, None) && !lockable(&b, Some((5, 10))));
    assert!(lockable(&b, Some((15, 5))), "only the range is locked");
    let image = image_path(&env, "lk");
    checkpoint_and_end(&env, "lk", &image);
    assert!(lockable(&a, None), "the locks went with the session");

    // Someone else holds the lock now: the resume says so and starts nothing.
    /// A process of the test's, ended when dropped (also when the test fails).
    struct Holder(std::process::Child);
    impl Drop for Holder {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let holder = Holder(
        std::process::Command::new("python3")
            .args([
                "-c",
                "import fcntl, sys, time; f = open(sys.argv[1], 'r+'); fcntl.flock(f, fcntl.LOCK_EX); time.sleep(600)",
                a.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the other program to hold the lock", T, || {
        (!lockable(&a, None)).then_some(())
    });
    resume_pane(&env, "b", 100, 30, &image);
    // (The message wraps at the pane's width.)
    let screen = env
        .tmux
        .wait_text("b", "CRTERM_EXIT=1", T)
        .replace('\n', "");
    assert!(
        screen.contains("another program holds a lock on it now"),
        "{screen}"
    );
    assert!(env.sessions().is_empty());
    drop(holder);

    resume_pane(&env, "c", 100, 30, &image);
    env.tmux.wait_text("c", "locked", T);
    wait_for("the locks to be held again", T, || {
        (!lockable(&a, None) && !lockable(&b, Some((5, 10))) && lockable(&b, Some((15, 5))))
            .then_some(())
    });
    end_with_ctrl_d(&env, "c");
    assert!(lockable(&a, None));
}

#[test]
fn processes_whose_session_and_group_leaders_are_gone_keep_their_ids() {
    let env = Env::unprivileged();
    bash_pane(&env, "a", "lg");
    // A session whose leader exits, with a group (a subshell's) whose leader exits too: the
    // sleep is left in both, an orphan of the init.
    env.tmux.type_text(
        "a",
        "setsid bash -c 'set -m; (sleep 1000 & sleep 0.2) & sleep 0.5'",
    );
    env.tmux.send_keys("a", &["Enter"]);
    // Until both leaders have gone: the sleep an orphan of the init, alone in its group.
    let init = children(env.daemon_pid("lg"))[0];
    wait_for("the leaders to be gone", T, || {
        process_tree(init).into_iter().find(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c == "sleep\x001000\x00")
                && stat_of(p).is_some_and(|(_, ppid, pgrp, sid, _)| {
                    ppid == init
                        && !std::path::Path::new(&format!("/proc/{pgrp}")).exists()
                        && !std::path::Path::new(&format!("/proc/{sid}")).exists()
                })
        })
    });
    env.tmux.type_text(
        "a",
        "ps -o ppid=,pgid=,sid=,args= -C sleep | sed 's/^/ids:/'",
    );
    env.tmux.send_keys("a", &["Enter"]);
    let ids = |screen: &str| -> String {
        screen
            .lines()
            .find(|l| l.starts_with("ids:"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    let before = wait_for("ps in the session", T, || {
        let s = env.tmux.capture_plain("a");
        (!ids(&s).is_empty()).then_some(s)
    });
    let want = ids(&before);
    let f: Vec<&str> = want.split_whitespace().collect();
    assert_eq!(f[1], "1", "an orphan of the init: {want}");
    assert_ne!(f[2], f[3], "its own group in its session: {want}");
    let image = image_path(&env, "lg");
    checkpoint_and_end(&env, "lg", &image);

    resume_pane(&env, "b", 100, 30, &image);
    env.tmux.wait_text("b", "bash-", T);
    env.tmux.send_keys("b", &["C-l"]);
    wait_for("the screen cleared", T, || {
        (ids(&env.tmux.capture_plain("b")).is_empty()).then_some(())
    });
    env.tmux.type_text(
        "b",
        "ps -o ppid=,pgid=,sid=,args= -C sleep | sed 's/^/ids:/'",
    );
    env.tmux.send_keys("b", &["Enter"]);
    let after = wait_for("ps after resume", T, || {
        let s = env.tmux.capture_plain("b");
        (!ids(&s).is_empty()).then_some(s)
    });
    assert_eq!(ids(&after), want, "{after}");
    env.tmux.type_text("b", "exit");
    env.tmux.send_keys("b", &["Enter"]);
    env.tmux.wait_text("b", "CRTERM_EXIT=0", T);
}

#[test]
fn a_checkpoint_can_wait_until_no_connection_leaves_the_session() {
    let env = Env::unprivileged();
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    python_pane(&env, "a", "cw");
    env.tmux.type_text(
        "a",
        &format!("import socket; t = socket.create_connection(('127.0.0.1', {port})); print('conn' 'ected')"),
    );
    env.tmux.send_keys("a", &["Enter"]);
    env.tmux.wait_text("a", "connected", T);
    let (_peer, _) = server.accept().unwrap();
    let image = image_path(&env, "cw");
    let img = image.to_str().unwrap();

    // The connection stays open: after the time given, the checkpoint fails naming it,
    // and the session goes on.
    let out = env.crterm(&["checkpoint", "cw", "-o", img, "--wait-connections", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("still holds connections to the outside")
            && err.contains(&format!("process 2 fd 3: TCP to 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(!image.exists());

    // The program closes it while the checkpoint waits: the checkpoint goes through.
    let mut waiting = env.command(&[
        env.bin.to_str().unwrap(),
        "checkpoint",
        "cw",
        "-o",
        img,
        "--wait-connections",
        "20",
    ]);
    waiting.stdin(std::process::Stdio::null());
    let out = std::thread::scope(|s| {
        let h = s.spawn(move || waiting.output());
        std::thread::sleep(Duration::from_millis(1500));
        env.tmux.type_text("a", "t.close(); print('clo' 'sed')");
        env.tmux.send_keys("a", &["Enter"]);
        h.join().unwrap()
    });
    let out = out.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("wrote"));
    env.tmux.wait_text("a", "closed", T);
    assert!(image.exists());
}

#[test]
fn unix_socket_pairs_keep_their_queues_both_ways_and_abstract_names_listen_again() {
    let env = Env::unprivileged();
    let abstract_name = format!("crterm-test-{}", std::process::id());
    python_pane(&env, "a", "us");
    enter(
        &env,
        "a",
        &format!(
            "import socket; a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM); a.send(b'one'); a.send(b'two'); b.send(b'back'); s1, s2 = socket.socketpair(); s1.send(b'stream data'); s2.send(b'other way'); s2.shutdown(socket.SHUT_WR); l = socket.socket(socket.AF_UNIX); l.bind('\\0{abstract_name}'); l.listen(); print('re' 'ady')"
        ),
    );
    env.tmux.wait_text("a", "ready", T);
    // A checkpoint that goes on must not take anything out of the queues: the image of
    // the second one still has it all.
    let first = image_path(&env, "us-first");
    let out = env.crterm(&["checkpoint", "us", "-o", first.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image = image_path(&env, "us");
    checkpoint_and_end(&env, "us", &image);

    resume_pane(&env, "b", 100, 30, &image);
    env.tmux.wait_text("b", "ready", T);
    enter(
        &env,
        "b",
        "print('got', b.recv(10), b.recv(10), a.recv(10), s2.recv(100), s1.recv(100), s1.recv(100))",
    );
    env.tmux.wait_text(
        "b",
        "got b'one' b'two' b'back' b'stream data' b'other way' b''",
        T,
    );
    enter(
        &env,
        "b",
        &format!(
            "c = socket.socket(socket.AF_UNIX); c.connect('\\0{abstract_name}'); k, _ = l.accept(); c.send(b'hello'); print('accepted', k.recv(5))"
        ),
    );
    env.tmux.wait_text("b", "accepted b'hello'", T);
    end_with_ctrl_d(&env, "b");
}

user_and_root! {
    /// A listening socket in flight (handed over as a service manager hands one to a
    /// service) and no longer held by its sender listens again after a resume: the receiver
    /// gets it and accepts a new connection on it.
    fn a_listening_socket_in_flight_listens_again_after_resume(env, tag) {
        let path = env.dir.path().join("handed.sock");
        python_pane(&env, "a", "lf");
        enter(
            &env,
            "a",
            &format!(
                "import socket; p = '{}'; l = socket.socket(socket.AF_UNIX); l.bind(p); l.listen(); x, y = socket.socketpair(); socket.send_fds(x, [b'take'], [l.fileno()]); l.close(); print('han' 'ded')",
                path.display()
            ),
        );
        env.tmux.wait_text("a", "handed", T);
        let image = image_path(&env, "lf");
        checkpoint_and_end(&env, "lf", &image);
        resume_pane(&env, "b", 100, 30, &image);
        env.tmux.wait_text("b", "handed", T);
        enter(
            &env,
            "b",
            "m, fds, _, _ = socket.recv_fds(y, 10, 2); s = socket.socket(fileno=fds[0]); c = socket.socket(socket.AF_UNIX); c.connect(p); c.send(b'hi'); print('af' 'ter', m, s.accept()[0].recv(2))",
        );
        let screen = env.tmux.wait_text("b", "after ", T);
        assert!(screen.contains("after b'take' b'hi'"), "{screen}");
        exit_repl(&env, "b");
        env.tmux.wait_text("b", "CRTERM_EXIT=0", T);
        let _ = std::fs::remove_file(&image);
    }
}

user_and_root! {
    /// Files in flight with a stream message of more than 32 KiB are refused at checkpoint: a
    /// resume could not send such a message whole (the kernel cuts it, the files going with
    /// the first piece, and the receiver's reads would end elsewhere).
    fn files_in_flight_with_a_long_stream_message_are_refused_at_checkpoint(env, tag) {
        python_pane(&env, "a", "il");
        enter(
            &env,
            "a",
            "import socket; x, y = socket.socketpair(); socket.send_fds(x, [b'a' * 40000], [0]); print('se' 'nt')",
        );
        env.tmux.wait_text("a", "sent", T);
        assert_refused(&env, "il", "a", "in a message of more than 32 KiB");
    }
}

user_and_root! {
    /// A descriptor in flight that a resume cannot make without a process holding it (an
    /// epoll set, whose registrations name its holder's descriptors) is refused at
    /// checkpoint, by kind; the session goes on.
    fn an_epoll_set_in_flight_that_no_process_holds_is_refused_at_checkpoint(env, tag) {
        python_pane(&env, "a", "ir");
        enter(
            &env,
            "a",
            "import socket, select; x, y = socket.socketpair(); e = select.epoll(); socket.send_fds(x, [b'f'], [e.fileno()]); e.close(); print('se' 'nt')",
        );
        env.tmux.wait_text("a", "sent", T);
        assert_refused(
            &env,
            "ir",
            "a",
            "a descriptor in flight (SCM_RIGHTS) that no process holds: epoll",
        );
    }
}

user_and_root! {
    fn a_connection_not_yet_accepted_is_still_waiting_after_resume(env, tag) {
        let path = env.dir.path().join("listen.sock");
        python_pane(&env, "a", "pc");
        enter(
            &env,
            "a",
            &format!(
                "import socket; l = socket.socket(socket.AF_UNIX); l.bind('{}'); l.listen(); c = socket.socket(socket.AF_UNIX); c.connect('{}'); print('pen' 'ding')",
                path.display(),
                path.display()
            ),
        );
        env.tmux.wait_text("a", "pending", T);
        let image = image_path(&env, "pc");
        checkpoint_and_end(&env, "pc", &image);

        resume_pane(&env, "b", 100, 30, &image);
        env.tmux.wait_text("b", "pending", T);
        enter(
            &env,
            "b",
            "k, _ = l.accept(); c.send(b'late'); print('accepted', k.recv(4))",
        );
        env.tmux.wait_text("b", "accepted b'late'", T);
        end_with_ctrl_d(&env, "b");
    }
}

user_and_root! {
    /// A connection not accepted yet that has sent descriptors (SCM_RIGHTS) is refused at
    /// checkpoint, before anything is taken out of its listener: the program accepts it
    /// afterwards with its bytes and its descriptor.
    fn a_connection_not_accepted_yet_that_sent_descriptors_is_refused_and_left_waiting(env, tag) {
        let abstract_name = format!("crterm-test-sd{tag}-{}", std::process::id());
        python_pane(&env, "a", "sd");
        enter(
            &env,
            "a",
            &format!(
                "import socket; l = socket.socket(socket.AF_UNIX); l.bind('\\0{abstract_name}'); l.listen(); c = socket.socket(socket.AF_UNIX); c.connect('\\0{abstract_name}'); socket.send_fds(c, [b'fd'], [0]); print('se' 'nt')"
            ),
        );
        env.tmux.wait_text("a", "sent", T);
        assert_refused(&env, "sd", "a", "descriptors among the data (SCM_RIGHTS)");
        enter(
            &env,
            "a",
            "m, fds, _, _ = socket.recv_fds(l.accept()[0], 10, 4); print('af' 'ter', m, len(fds))",
        );
        env.tmux.wait_text("a", "after b'fd' 1", T);
    }
}

/// Connections not accepted yet that have sent data (their bytes wait where only
/// accept() reaches them): three to a stream listener, the first and third with bytes
/// (the third then shut down), and one with two messages to a seqpacket listener. After
/// a checkpoint that lets the session go on, and after a resume, they are accepted in
/// the same order, each with its bytes, the shut one ending after them, the messages
/// apart, and a client still reaches its server end. Before, they were refused.
#[test]
fn connections_not_accepted_yet_keep_what_they_sent_and_their_order() {
    pending_with_data(Env::unprivileged(), "ps");
}

#[test]
#[ignore = "needs root; run by tests/run-all.sh as root"]
fn connections_not_accepted_yet_keep_what_they_sent_as_root() {
    pending_with_data(Env::root(), "psr");
}

fn pending_with_data(env: Env, name: &str) {
    let path = env.dir.path().join("sent.sock");
    let abstract_name = format!("crterm-test-{name}-{}", std::process::id());
    python_pane(&env, "a", name);
    enter(
        &env,
        "a",
        &format!(
            "import socket; p = '{}'; l = socket.socket(socket.AF_UNIX); l.bind(p); l.listen(8); cs = [socket.socket(socket.AF_UNIX) for _ in range(3)]; [c.connect(p) for c in cs]; cs[0].send(b'first'); cs[2].send(b'third'); cs[2].shutdown(socket.SHUT_WR); q = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); q.bind('\\0{abstract_name}'); q.listen(); d = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); d.connect('\\0{abstract_name}'); d.send(b'm1'); d.send(b'm2'); print('con' 'nected')",
            path.display()
        ),
    );
    env.tmux.wait_text("a", "connected", T);
    let image = image_path(&env, name);
    let out = env.crterm(&["checkpoint", name, "-o", image.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let check = "ks = [l.accept()[0] for _ in range(3)]; [k.setblocking(False) for k in ks]; rd = lambda k: k.recv(100) if __import__('select').select([k], [], [], 0.2)[0] else None; qa = q.accept()[0]; print('af' 'ter', [rd(k) for k in ks], rd(ks[2]), qa.recv(10), qa.recv(10), cs[0].send(b'x') and ks[0].recv(1))";
    let expect = "after [b'first', None, b'third'] b'' b'm1' b'm2' b'x'";
    enter(&env, "a", check);
    // (The whole line: caught as it is drawn, "after [" can come before its end.)
    let screen = env.tmux.wait_text("a", expect, T);
    assert!(screen.contains(expect), "{screen}");
    exit_repl(&env, "a");
    env.tmux.wait_dead("a", T);

    resume_pane(&env, "b", 100, 30, &image);
    env.tmux.wait_text("b", "connected", T);
    enter(&env, "b", check);
    // (The whole line: caught as it is drawn, "after [" can come before its end.)
    let screen = env.tmux.wait_text("b", expect, T);
    assert!(screen.contains(expect), "{screen}");
    exit_repl(&env, "b");
    env.tmux.wait_text("b", "CRTERM_EXIT=0", T);
    let _ = std::fs::remove_file(&image);
}

#[test]
fn a_pty_in_packet_mode_a_locked_pty_and_so_passcred_come_back() {
    let env = Env::unprivileged();
    python_pane(&env, "a", "pk");
    enter(
        &env,
        "a",
        "import os, pty, fcntl, termios, struct, socket; m, s = pty.openpty(); fcntl.ioctl(m, termios.TIOCPKT, struct.pack('i', 1)); os.write(s, b'out'); lk = os.open('/dev/ptmx', os.O_RDWR | os.O_NOCTTY); a, b = socket.socketpair(); a.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1); print('re' 'ady')",
    );
    env.tmux.wait_text("a", "ready", T);
    let image = image_path(&env, "pk");
    checkpoint_and_end(&env, "pk", &image);

    resume_pane(&env, "b", 100, 30, &image);
    env.tmux.wait_text("b", "ready", T);
    // TIOCGPTLCK is 0x80045439; a read in packet mode starts with a status byte (0: data).
    enter(
        &env,
        "b",
        "print('got', os.read(m, 100), struct.unpack('i', fcntl.ioctl(lk, 0x80045439, bytes(4)))[0], a.getsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED))",
    );
    env.tmux.wait_text("b", "got b'\\x00out' 1 1", T);
    end_with_ctrl_d(&env, "b");
}

/// The session's SysV objects are its own namespace's: one the host has is neither
/// seen by the session nor carried, and the session's own comes back with its id, key and
/// values (the thorough test is `sockets::sysv_segments_semaphores_and_message_queues_come_back`).
#[test]
fn the_hosts_sysv_objects_are_not_the_sessions() {
    let env = Env::unprivileged();
    let host_set = HostSemaphore::new();
    python_pane(&env, "a", "sem");
    enter(
        &env,
        "a",
        "import ctypes; c = ctypes.CDLL(None); s = c.semget(0x5eed, 2, 0o1600); print('made', s, c.semctl(s, 1, 16, 5), c.semget(0, 1, 0o600) > s)",
    );
    env.tmux.wait_text("a", "made 0 0 True", T);
    let image = image_path(&env, "sem");
    checkpoint_and_end(&env, "sem", &image);
    // `info` lists the session's two sets, not the host's.
    let out = env.crterm(&["info", image.to_str().unwrap()]);
    let info = String::from_utf8_lossy(&out.stdout);
    assert!(
        info.contains(
            "sysv ipc   0 shared memory segments (0.0 MiB), 2 semaphore sets, 0 message queues"
        ),
        "{info}"
    );
    resume_pane(&env, "b", 100, 30, &image);
    env.tmux.wait_text("b", "made 0", T);
    // SEM_INFO (19) says how many sets the namespace has: the session's two.
    enter(
        &env,
        "b",
        "b = ctypes.create_string_buffer(64); c.semctl(0, 0, 19, b); print('af' 'ter', c.semget(0x5eed, 0, 0), c.semctl(0, 1, 12), int.from_bytes(b.raw[28:32], 'little'))",
    );
    env.tmux.wait_text("b", "after 0 5 2", T);
    exit_repl(&env, "b");
    env.tmux.wait_text("b", "CRTERM_EXIT=0", T);
    drop(host_set);
    let _ = std::fs::remove_file(&image);
}

/// A SysV semaphore set in the host's IPC namespace, removed on drop.
struct HostSemaphore(i32);

impl HostSemaphore {
    fn new() -> Self {
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import ctypes; print(ctypes.CDLL(None).semget(0, 1, 0o1600))",
            ])
            .output()
            .expect("python3");
        let id: i32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("semget");
        assert!(id >= 0, "semget on the host");
        HostSemaphore(id)
    }
}

impl Drop for HostSemaphore {
    fn drop(&mut self) {
        let _ = std::process::Command::new("python3")
            .args([
                "-c",
                &format!("import ctypes; ctypes.CDLL(None).semctl({}, 0, 0)", self.0),
            ])
            .status();
    }
}

/// nscd's program: the host's, or Debian's package unpacked (not installed: installing
/// would start a daemon every other test would then talk to) into the tests' cache.
fn nscd_program() -> PathBuf {
    let host = PathBuf::from("/usr/sbin/nscd");
    if host.exists() {
        return host;
    }
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("nscd");
    let program = cache.join("root/usr/sbin/nscd");
    if !program.exists() {
        std::fs::create_dir_all(&cache).unwrap();
        let sh = format!(
            "set -e; cd {}; rm -f nscd_*.deb; apt-get download -q nscd; dpkg-deb -x nscd_*.deb root",
            cache.display()
        );
        let out = std::process::Command::new("sh")
            .args(["-c", &sh])
            .output()
            .unwrap();
        assert!(
            out.status.success() && program.exists(),
            "cannot fetch nscd's package: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    program
}

/// A shell command that runs `cmd` in a mount namespace of its own, where an nscd of the
/// test's (its pid written to `pid_file`) serves at the path glibc asks (/run/nscd),
/// caching passwd in shared memory.
fn with_own_nscd(env: &Env, pid_file: &Path, cmd: &str) -> String {
    let conf = env.dir.path().join("nscd.conf");
    std::fs::write(
        &conf,
        "enable-cache passwd yes\npersistent passwd no\nshared passwd yes\ncheck-files passwd yes\n\
         enable-cache group no\nenable-cache hosts no\nenable-cache services no\nenable-cache netgroup no\n",
    )
    .unwrap();
    // A user namespace maps the test's user to root there, for the mount.
    let unshare = "unshare -rm";
    format!(
        "{unshare} --propagation private sh -c 'mount -t tmpfs none /run && mkdir /run/nscd && {{ {} -F -f {} & echo $! > {}; }} && while [ ! -S /run/nscd/socket ]; do sleep 0.1; done && {cmd}'",
        nscd_program().display(),
        conf.display(),
        pid_file.display()
    )
}

/// Ends the nscd whose pid is in the file.
struct EndNscd<'a>(&'a Path);

impl Drop for EndNscd<'_> {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.0)
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// The seed's nscd case: a program of the session maps nscd's passwd cache, shared with
/// the nscd daemon outside the session. That mapping is not carried: after resume glibc
/// finds it stale, asks the nscd it finds then for a new one, and looks users up through
/// it; with no nscd at all, it looks them up in the files.
#[test]
fn nscds_cache_is_dropped_and_glibc_maps_a_new_one() {
    let env = Env::unprivileged();
    let first = env.dir.path().join("nscd-1.pid");
    let _end_first = EndNscd(&first);
    let lookup = "print('home', pwd.getpwnam('root').pw_dir, [l.split()[-2][:15] for l in open('/proc/self/maps') if '/run/nscd/' in l])";
    env.pane(
        "a",
        &with_own_nscd(
            &env,
            &first,
            &format!("exec {} start --name ns -- python3 -q", env.crterm_cmd()),
        ),
    );
    env.tmux.wait_text("a", ">>>", T);
    enter(&env, "a", "import pwd");
    enter(&env, "a", lookup);
    let before = env.tmux.wait_text("a", "home /root ['/run/nscd/db", T);
    let image = image_path(&env, "nscd");
    checkpoint_and_end(&env, "ns", &image);
    drop(_end_first);

    // Another nscd: the session maps its cache, not the old one.
    let second = env.dir.path().join("nscd-2.pid");
    let _end_second = EndNscd(&second);
    env.tmux.start(
        "b",
        100,
        30,
        &with_own_nscd(
            &env,
            &second,
            &format!(
                "{} resume {}; echo CRTERM_EXIT=$?; sleep 600",
                env.crterm_cmd(),
                image.display()
            ),
        ),
    );
    env.tmux.wait_text("b", ">>>", T);
    enter(
        &env,
        "b",
        "print('mapped', len([l for l in open('/proc/self/maps') if '/run/nscd/' in l]))",
    );
    env.tmux.wait_text("b", "mapped 0", T);
    enter(&env, "b", lookup);
    let after = env.tmux.wait_text("b", "home /root ['/run/nscd/db", T);
    let cache = |screen: &str| {
        let from = screen.rfind("['/run/nscd/db").expect("a cache");
        screen[from..].lines().next().unwrap().to_string()
    };
    assert_ne!(cache(&before), cache(&after), "the new nscd's cache");
    end_with_ctrl_d(&env, "b");

    // No nscd: the files. (In a user namespace of its own like the others, where the
    // session's user is root, as it was when it was checkpointed.)
    env.tmux.start(
        "c",
        100,
        30,
        &format!(
            "unshare -r {} resume {}; echo CRTERM_EXIT=$?; sleep 600",
            env.crterm_cmd(),
            image.display()
        ),
    );
    env.tmux.wait_text("c", ">>>", T);
    enter(&env, "c", lookup);
    env.tmux.wait_text("c", "home /root []", T);
    end_with_ctrl_d(&env, "c");
}

/// A process under a seccomp filter (here one that allows everything) is refused at
/// checkpoint, named: its filter cannot be read without privilege, and resumed without
/// it, a sandboxed program would run with its sandbox gone.
#[test]
fn a_process_under_a_seccomp_filter_is_refused_at_checkpoint_naming_it() {
    let env = Env::unprivileged();
    python_pane(&env, "a", "sc");
    enter(
        &env,
        "a",
        "import ctypes, struct; allow = struct.pack('HBBI', 0x06, 0, 0, 0x7fff0000); buf = ctypes.create_string_buffer(allow); prog = struct.pack('HxxxxxxQ', 1, ctypes.addressof(buf)); c = ctypes.CDLL(None); print('nnp', c.prctl(38, 1, 0, 0, 0), 'filter', c.prctl(22, 2, ctypes.c_char_p(prog), 0, 0))",
    );
    env.tmux.wait_text("a", "nnp 0 filter 0", T);
    assert_refused(
        &env,
        "sc",
        "a",
        "process 2 (python3) runs under a seccomp filter (its filter can be read only by a privileged user), which this version cannot carry",
    );
}

/// A user's process that root reniced below 0 (its RLIMIT_NICE allows it none): the
/// user's resume could not set that again, so the checkpoint refuses it, naming it.
#[test]
#[ignore = "needs root (to renice a user's process below 0); run by tests/run-all.sh as root"]
fn a_nice_value_only_root_could_set_is_refused_at_checkpoint_for_a_user() {
    let env = Env::unprivileged();
    python_pane(&env, "a", "nr");
    let python = process_tree(env.daemon_pid("nr"))
        .into_iter()
        .find(|&p| comm_of(p) == "python3")
        .expect("python");
    // SAFETY: setpriority takes no pointer.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, python as libc::id_t, -5) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    assert_refused(
        &env,
        "nr",
        "a",
        "of process 2 (python3) has nice value -5 (its RLIMIT_NICE is 0), which only a privileged user can set again",
    );
}

/// A process in a group whose leader is a zombie (it ended and its parent has not
/// waited for it): refused at checkpoint, named; the session goes on.
#[test]
fn a_group_whose_leader_is_a_zombie_is_refused_at_checkpoint() {
    let env = Env::unprivileged();
    python_pane(&env, "a", "zg");
    enter(
        &env,
        "a",
        "import os, time; c = os.fork() or (os.setpgid(0, 0), os.fork() or time.sleep(1000), os._exit(0)); time.sleep(0.5); print('forked', c)",
    );
    let screen = env.tmux.wait_text("a", "forked ", T);
    let child: i32 = screen
        .split("forked ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert_refused(
        &env,
        "zg",
        "a",
        &format!("is in group {child}, whose leader is a zombie, which this version cannot carry"),
    );
}

/// Processes whose parent is gone (the init's now) in a session whose leader lives, as
/// bash leaves them: a subshell's background sleep, in the group of the subshell, which
/// is gone, with the pipeline's other end (bash's child) in that group too; and the
/// grandchild of a job whose parent left, in the job's group, whose leader lives. Each
/// comes back with its parent, group and session (made from a helper in the session that
/// ends once they are in place), and bash goes on with its jobs.
#[test]
fn orphans_in_a_living_session_come_back_with_their_groups() {
    let env = Env::unprivileged();
    bash_pane(&env, "a", "orph");
    enter(
        &env,
        "a",
        "(sleep 1000 &) | sleep 1001 & python3 -c 'import os, time; os.fork() or (os.fork() or time.sleep(1000), os._exit(0)); time.sleep(1000)' &",
    );
    let init = children(env.daemon_pid("orph"))[0];
    wait_for("the subshell and the job's child to be gone", T, || {
        let orphans = process_tree(init)
            .into_iter()
            .filter(|&p| stat_of(p).is_some_and(|(_, ppid, ..)| ppid == init))
            .count();
        // bash, the sleep and python's grandchild.
        (orphans == 3).then_some(())
    });
    let list = |file: &Path, word: &str| {
        format!(
            "ps -eo pid=,ppid=,pgid=,sid=,args= | grep -E 'sleep 100[01]|import o[s]' | sort -n > {}; echo {word}",
            file.display()
        )
    };
    let (before, after) = (env.dir.path().join("before"), env.dir.path().join("after"));
    enter(&env, "a", &list(&before, "listed-once"));
    env.tmux.wait_text("a", "\nlisted-once", T);
    let image = image_path(&env, "orph");
    checkpoint_and_end(&env, "orph", &image);
    resume_pane(&env, "b", 100, 30, &image);
    env.tmux.wait_text("b", "listed-once", T);
    enter(&env, "b", &list(&after, "listed-again"));
    env.tmux.wait_text("b", "\nlisted-again", T);
    let (before, after) = (
        std::fs::read_to_string(&before).unwrap(),
        std::fs::read_to_string(&after).unwrap(),
    );
    assert_eq!(before.lines().count(), 4, "{before}");
    assert_eq!(before, after);
    // The sleep is the init's, in a group whose leader is gone.
    let sleep: Vec<&str> = before
        .lines()
        .find(|l| l.ends_with("sleep 1000"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(sleep[1], "1", "{before}");
    assert!(
        !before
            .lines()
            .any(|l| l.split_whitespace().next() == Some(sleep[2])),
        "{before}"
    );
    // bash's own SIGCHLD handling is its own again: a new job is waited for.
    enter(&env, "b", "sleep 0.1 & wait $!; echo waited $? $((6 * 7))");
    env.tmux.wait_text("b", "waited 0 42", T);
    let _ = std::fs::remove_file(&image);
}
