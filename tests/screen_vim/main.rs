//! End-to-end tests: real programs under `crterm start` in a tmux pane, typed at with
//! send-keys and read with capture-pane. Unless a test says otherwise it runs as an
//! ordinary user (created when the tests run as root), so the unprivileged path (user
//! namespace) is the one tested; `vim_as_root` covers the other.

#[path = "../common/mod.rs"]
mod common;

use common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

/// A test run twice: `NAME::as_user` as an ordinary user (a user namespace), and
/// `NAME::as_root` as root without one (run by tests/run-all.sh as root). The body gets
/// the `Env` and a tag to keep names that outlive the test's own directory apart.
macro_rules! user_and_root {
    ($(#[$m:meta])* fn $name:ident($env:ident, $tag:ident) $body:block) => {
        $(#[$m])*
        mod $name {
            use super::*;

            fn run($env: Env, $tag: &str) {
                let _ = $tag;
                $body
            }

            #[test]
            fn as_user() {
                run(Env::unprivileged(), "u")
            }

            #[test]
            #[ignore = "needs root; run by tests/run-all.sh as root"]
            fn as_root() {
                run(Env::root(), "r")
            }
        }
    };
}

mod autosave;
mod batch;
mod chains;
mod elsewhere;
mod faults;
mod lazy;
mod precopy;
mod privileges;
mod roundtrip;
mod sockets;
mod terminals;
pub(crate) mod world;

fn vim_round(env: &Env) {
    let file = env.dir.path().join("notes.txt");
    let cmd = format!(
        "{} start --name ed -- vim -u NONE -N -i NONE -c 'set number' {}; echo CRTERM_EXIT=$?; sleep 600",
        env.crterm_cmd(),
        file.display()
    );
    env.pane("p", &cmd);
    env.tmux.wait_text("p", "notes.txt", T);
    env.tmux.type_text("p", "ihello from crterm");
    env.tmux.send_keys("p", &["Escape"]);
    env.tmux.type_text("p", ":split");
    env.tmux.send_keys("p", &["Enter"]);
    env.tmux.wait_text("p", "  1 hello from crterm", T);
    env.tmux.type_text("p", ":wqa");
    env.tmux.send_keys("p", &["Enter"]);
    env.tmux.wait_text("p", "CRTERM_EXIT=0", T);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "hello from crterm\n"
    );
    assert!(env.sessions().is_empty(), "the session ended with vim");
}

#[test]
fn vim_edits_and_saves_a_file() {
    vim_round(&Env::unprivileged());
}

#[test]
#[ignore = "needs root (the path without a user namespace); run by tests/run-all.sh as root"]
fn vim_as_root() {
    vim_round(&Env::root());
}

#[test]
fn resize_of_the_pane_reaches_the_program() {
    let env = Env::unprivileged();
    env.pane(
        "p",
        &format!("{} start --name rs -- bash --norc", env.crterm_cmd()),
    );
    env.tmux.wait_text("p", "$", T);
    env.tmux.type_text("p", "stty size");
    env.tmux.send_keys("p", &["Enter"]);
    env.tmux.wait_text("p", "30 100", T);
    env.tmux
        .ok(&["resize-window", "-t", "p", "-x", "70", "-y", "20"]);
    // The new size reaches the session's pty through the client and the daemon: asked
    // until it has.
    wait_for("the new size in the session", T, || {
        env.tmux.type_text("p", "clear; stty size");
        env.tmux.send_keys("p", &["Enter"]);
        std::thread::sleep(Duration::from_millis(100));
        env.tmux.capture_plain("p").contains("20 70").then_some(())
    });
    // A full-screen program redraws to fit: vim's ruler on the new last line.
    env.tmux
        .type_text("p", "vim -u NONE -N -i NONE -c 'set ruler'");
    env.tmux.send_keys("p", &["Enter"]);
    env.tmux.wait_text("p", "0,0-1", T);
    env.tmux
        .ok(&["resize-window", "-t", "p", "-x", "90", "-y", "25"]);
    let screen = wait_for("vim to redraw at 90x25", T, || {
        let s = env.tmux.capture_plain("p");
        let last = s.lines().nth(24).unwrap_or("").to_string();
        last.contains("0,0-1").then_some(s)
    });
    assert!(screen.lines().count() >= 25);
    env.tmux.type_text("p", ":q");
    env.tmux.send_keys("p", &["Enter"]);
}

#[test]
fn detach_then_attach_from_another_pane_repaints_and_typing_goes_on() {
    let env = Env::unprivileged();
    env.pane(
        "one",
        &format!(
            "{} start --name dt -- bash --norc; echo CLIENT_EXIT=$?; sleep 600",
            env.crterm_cmd()
        ),
    );
    env.tmux.wait_text("one", "$", T);
    env.tmux
        .type_text("one", "printf '\\033[1;31mred marker\\033[0m\\n'");
    env.tmux.send_keys("one", &["Enter"]);
    env.tmux.wait_text("one", "red marker\n", T);
    let before = parse_capture(&env.tmux.settle("one"));
    env.prefix("one", "x");
    env.tmux.wait_text("one", "[detached from session dt]", T);
    env.tmux.wait_text("one", "CLIENT_EXIT=0", T);
    assert_eq!(env.sessions().len(), 1, "the session runs on");

    env.pane("two", &format!("{} attach dt", env.crterm_cmd()));
    env.tmux.wait_text("two", "red marker", T);
    let after = parse_capture(&env.tmux.settle("two"));
    // The same screen (text and colours), line for line.
    let rows = |r: &Vec<Vec<CapCell>>| r.iter().take(10).cloned().collect::<Vec<_>>();
    assert_eq!(rows(&before), rows(&after));
    env.tmux.type_text("two", "echo typed after attach");
    env.tmux.send_keys("two", &["Enter"]);
    env.tmux.wait_text("two", "\ntyped after attach", T);
    env.tmux.type_text("two", "exit 0");
    env.tmux.send_keys("two", &["Enter"]);
}

#[test]
#[ignore = "needs root (acts as two users); run by tests/run-all.sh as root"]
fn another_user_can_neither_see_nor_attach() {
    let owner = Env::as_user(Some(TEST_USER));
    owner.pane(
        "p",
        &format!("{} start --name mine -- bash --norc", owner.crterm_cmd()),
    );
    owner.tmux.wait_text("p", "$", T);
    owner.daemon_pid("mine");

    // Another user with their own runtime directory sees nothing of it.
    let other = Env::as_user(Some(OTHER_USER));
    let ls = other.crterm(&["ls"]);
    assert_eq!(String::from_utf8_lossy(&ls.stdout).trim(), "no sessions");

    // Pointed at the owner's directory, the other user is refused before any connection.
    let runtime = owner.runtime.display().to_string();
    let out = other.run(
        &[
            "env",
            &format!("XDG_RUNTIME_DIR={runtime}"),
            other.bin.to_str().unwrap(),
            "attach",
            "mine",
        ],
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("crterm: ") && err.lines().count() == 1,
        "{err}"
    );

    // Root can reach the socket file, but the daemon checks its peer and refuses.
    use std::io::{Read, Write};
    let sock = owner.runtime.join("crterm").join("mine.sock");
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    // The daemon may refuse and close before this arrives.
    let _ = s.write_all(&[1, 4, 0, 0, 0, 80, 0, 24, 0]);
    let mut reply = Vec::new();
    s.set_read_timeout(Some(T)).unwrap();
    let _ = s.read_to_end(&mut reply);
    assert_eq!(reply.first(), Some(&106), "a refusal, never a session");
    assert!(String::from_utf8_lossy(&reply).contains("belongs to another user"));
    owner.tmux.type_text("p", "exit");
    owner.tmux.send_keys("p", &["Enter"]);
}

/// The crterm process a pane's shell started.
fn crterm_child(env: &Env, target: &str) -> i32 {
    let shell: i32 = env.tmux.display(target, "#{pane_pid}").parse().unwrap();
    wait_for("crterm under the pane's shell", T, || {
        children(shell).into_iter().find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "crterm")
        })
    })
}

// Exit statuses are read from a shell around crterm: tmux 3.3 sometimes loses the status of
// a pane whose program exits at once (seen with /bin/false too).
#[test]
fn start_false_exits_1() {
    // Five in a row: a command that ends at once once raced the daemon's SIGCHLD handling
    // and left the session hanging.
    let env = Env::unprivileged();
    let exits = env.dir.path().join("exits");
    env.pane(
        "p",
        &format!(
            "for i in 1 2 3 4 5; do {} start -- false; echo $? >> {}; done; echo ALL-DONE; sleep 600",
            env.crterm_cmd(),
            exits.display()
        ),
    );
    env.tmux.wait_text("p", "ALL-DONE", T);
    assert_eq!(std::fs::read_to_string(&exits).unwrap(), "1\n1\n1\n1\n1\n");
    assert!(env.sessions().is_empty());
}

#[test]
fn killing_the_client_leaves_the_session_running() {
    let env = Env::unprivileged();
    env.pane(
        "p",
        &format!(
            "{} start --name kc -- bash --norc; echo EXIT=$?; sleep 600",
            env.crterm_cmd()
        ),
    );
    env.tmux.wait_text("p", "$", T);
    env.tmux.type_text("p", "echo still here");
    env.tmux.send_keys("p", &["Enter"]);
    env.tmux.wait_text("p", "\nstill here", T);
    let client = crterm_child(&env, "p");
    unsafe { libc::kill(client, libc::SIGTERM) };
    env.tmux
        .wait_text("p", &format!("EXIT={}", 128 + libc::SIGTERM), T);
    let daemon = env.daemon_pid("kc");
    assert!(!process_gone(daemon));
    env.pane("q", &format!("{} attach kc", env.crterm_cmd()));
    env.tmux.wait_text("q", "still here", T);
    env.tmux.type_text("q", "exit");
    env.tmux.send_keys("q", &["Enter"]);
}

#[test]
fn killing_the_command_ends_the_daemon_and_leaves_nothing() {
    let env = Env::unprivileged();
    env.pane(
        "p",
        &format!(
            "{} start --name kd -- sleep 1000; echo CLIENT_EXIT=$?; sleep 600",
            env.crterm_cmd()
        ),
    );
    let daemon = env.daemon_pid("kd");
    let tree = wait_for("init and command to appear", T, || {
        let t = process_tree(daemon);
        (t.len() >= 3).then_some(t)
    });
    let command = *tree.last().unwrap();
    unsafe { libc::kill(command, libc::SIGKILL) };
    env.tmux
        .wait_text("p", &format!("CLIENT_EXIT={}", 128 + libc::SIGKILL), T);
    for pid in tree {
        assert!(
            wait_gone(pid, T),
            "process {pid} of the session is left behind"
        );
    }
    assert!(env.sessions().is_empty());
    let sockets: Vec<_> = std::fs::read_dir(env.runtime.join("crterm"))
        .unwrap()
        .collect();
    assert!(sockets.is_empty(), "socket left behind: {sockets:?}");
}

#[test]
fn job_control_ctrl_z_fg_ctrl_c() {
    let env = Env::unprivileged();
    env.pane(
        "p",
        &format!("{} start --name jc -- bash --norc", env.crterm_cmd()),
    );
    env.tmux.wait_text("p", "$", T);
    env.tmux.type_text("p", "sleep 500");
    env.tmux.send_keys("p", &["Enter"]);
    env.wait_foreground("jc", "sleep");
    env.tmux.send_keys("p", &["C-z"]);
    env.tmux.wait_text("p", "Stopped", T);
    env.tmux.type_text("p", "fg");
    env.tmux.send_keys("p", &["Enter"]);
    env.wait_foreground("jc", "sleep");
    env.tmux.send_keys("p", &["C-c"]);
    env.tmux.type_text("p", "echo rc=$?");
    env.tmux.send_keys("p", &["Enter"]);
    env.tmux.wait_text("p", "rc=130", T);
    env.tmux.type_text("p", "exit");
    env.tmux.send_keys("p", &["Enter"]);
}

#[test]
fn prefix_keys_literal_help_and_checkpoint_notice() {
    let env = Env::unprivileged();
    env.pane(
        "p",
        &format!("{} start --name pk -- bash --norc", env.crterm_cmd()),
    );
    env.tmux.wait_text("p", "$", T);
    // No quit character, so the literal C-\ reaches cat instead of killing it.
    env.tmux.type_text("p", "stty quit undef; cat -v");
    env.tmux.send_keys("p", &["Enter"]);
    env.wait_foreground("pk", "cat");
    // Prefix twice sends one literal prefix.
    env.prefix("p", "");
    env.tmux.ok(&["send-keys", "-t", "p", "-H", "1c"]);
    env.tmux.send_keys("p", &["Enter"]);
    env.tmux.wait_text("p", "^\\", T);
    env.tmux.send_keys("p", &["C-d"]);
    env.prefix("p", "?");
    env.tmux.wait_text("p", "detach (the session runs on)", T);
    env.tmux.type_text("p", " ");
    wait_for("the help box to go", T, || {
        (!env.tmux.capture_plain("p").contains("detach (the session")).then_some(())
    });
    env.prefix("p", "c");
    env.tmux.wait_text("p", "crterm: wrote ", T);
    env.prefix("p", "d");
    // Detach-and-checkpoint: the image is written, the session ends, and the client says
    // how to bring it back.
    let image = env.dir.path().join("data/crterm/pk.img");
    let screen = env.tmux.wait_text("p", "resume with: crterm resume", T);
    assert!(
        screen.contains(&format!("resume with: crterm resume {}", image.display())),
        "{screen}"
    );
    assert!(image.exists());
    wait_for("the session to end", T, || {
        env.sessions().is_empty().then_some(())
    });
}

#[test]
fn configured_prefix_key() {
    let env = Env::unprivileged();
    std::fs::create_dir_all(env.dir.path().join("config/crterm")).unwrap();
    std::fs::write(
        env.dir.path().join("config/crterm/config.toml"),
        "prefix = \"C-b\"\n",
    )
    .unwrap();
    env.pane(
        "p",
        &format!(
            "{} start --name cp -- bash --norc; echo CLIENT_EXIT=$?; sleep 600",
            env.crterm_cmd()
        ),
    );
    env.tmux.wait_text("p", "$", T);
    env.tmux.send_keys("p", &["C-b"]);
    env.tmux.type_text("p", "x");
    env.tmux.wait_text("p", "[detached from session cp]", T);
}

#[test]
fn the_users_terminal_is_put_back_on_detach_and_on_sigterm() {
    let env = Env::unprivileged();
    let d = env.dir.path().display();
    // The pane records its tty settings before and after crterm.
    let wrap = |name: &str, inner: &str| {
        format!(
            "stty -a > {d}/{name}.before; {inner}; stty -a > {d}/{name}.after; \
             cmp -s {d}/{name}.before {d}/{name}.after && echo STTY-SAME-{name} || echo STTY-DIFF-{name}; sleep 600"
        )
    };
    env.pane(
        "p",
        &wrap(
            "detach",
            &format!("{} start --name tp -- bash --norc", env.crterm_cmd()),
        ),
    );
    env.tmux.wait_text("p", "$", T);
    // The session puts the terminal in the alternate screen with mouse and paste modes.
    env.tmux.type_text(
        "p",
        "printf '\\033[?1049h\\033[?1002h\\033[?2004h\\033[?1h\\033[?25lALT'",
    );
    env.tmux.send_keys("p", &["Enter"]);
    env.tmux.wait_text("p", "ALT", T);
    assert_eq!(
        env.tmux
            .display("p", "#{alternate_on}#{mouse_any_flag}#{keypad_cursor_flag}"),
        "111"
    );
    env.prefix("p", "x");
    env.tmux.wait_text("p", "STTY-SAME-detach", T);
    assert_eq!(
        env.tmux.display(
            "p",
            "#{alternate_on}#{mouse_any_flag}#{keypad_cursor_flag}#{cursor_flag}"
        ),
        "0001",
        "detach takes the terminal out of the session's modes"
    );

    env.pane(
        "q",
        &wrap("term", &format!("{} attach tp", env.crterm_cmd())),
    );
    env.tmux.wait_text("q", "ALT", T);
    assert_eq!(
        env.tmux.display("q", "#{alternate_on}#{mouse_any_flag}"),
        "11",
        "attach repaints the modes"
    );
    let client = crterm_child(&env, "q");
    unsafe { libc::kill(client, libc::SIGTERM) };
    env.tmux.wait_text("q", "STTY-SAME-term", T);
    assert_eq!(
        env.tmux
            .display("q", "#{alternate_on}#{mouse_any_flag}#{cursor_flag}"),
        "001"
    );
    assert_eq!(env.sessions().len(), 1, "the session outlives its client");

    // SIGHUP (the terminal going away) is handled the same way.
    env.pane(
        "r",
        &wrap("hup", &format!("{} attach tp", env.crterm_cmd())),
    );
    env.tmux.wait_text("r", "ALT", T);
    let client = crterm_child(&env, "r");
    unsafe { libc::kill(client, libc::SIGHUP) };
    env.tmux.wait_text("r", "STTY-SAME-hup", T);
    assert_eq!(
        env.tmux
            .display("r", "#{alternate_on}#{mouse_any_flag}#{cursor_flag}"),
        "001"
    );
    assert_eq!(env.sessions().len(), 1, "the session outlives its client");
}

#[test]
fn bracketed_paste_reaches_the_program() {
    let env = Env::unprivileged();
    env.pane(
        "p",
        &format!("{} start --name bp -- bash --norc", env.crterm_cmd()),
    );
    env.tmux.wait_text("p", "$", T);
    env.tmux
        .type_text("p", "printf '\\033[?2004h'; stty quit undef; cat -v");
    env.tmux.send_keys("p", &["Enter"]);
    env.wait_foreground("bp", "cat");
    env.tmux
        .ok(&["set-buffer", "-b", "crterm-paste", "pasted text"]);
    env.tmux
        .ok(&["paste-buffer", "-p", "-b", "crterm-paste", "-t", "p"]);
    env.tmux.send_keys("p", &["Enter"]);
    env.tmux.wait_text("p", "^[[200~pasted text^[[201~", T);
    env.tmux.send_keys("p", &["C-d"]);
    env.tmux.type_text("p", "exit");
    env.tmux.send_keys("p", &["Enter"]);
}

#[test]
fn the_session_has_its_own_pids_and_ptys_and_the_hosts_files() {
    let env = Env::unprivileged();
    let marker = env.dir.path().join("host-file");
    std::fs::write(&marker, "seen from inside\n").unwrap();
    env.pane(
        "p",
        &format!("{} start --name ns -- bash --norc", env.crterm_cmd()),
    );
    env.tmux.wait_text("p", "$", T);
    env.tmux.type_text(
        "p",
        &format!(
            "echo \"pid=$$ init=$(cat /proc/1/comm) tty=$(tty) uid=$(id -u)\"; cat {}",
            marker.display()
        ),
    );
    env.tmux.send_keys("p", &["Enter"]);
    let screen = env.tmux.wait_text("p", "seen from inside", T);
    let uid = env
        .user
        .as_deref()
        .map_or(unsafe { libc::geteuid() }, |u| user_ids(u).0);
    assert!(
        screen.contains(&format!("pid=2 init=crterm-init tty=/dev/pts/0 uid={uid}")),
        "{screen}"
    );
    env.tmux.type_text("p", "exit");
    env.tmux.send_keys("p", &["Enter"]);
}

#[test]
#[ignore = "needs root (the terminal must belong to another user than crterm); run by tests/run-all.sh as root"]
fn a_terminal_the_daemon_cannot_open_is_served_through_the_client() {
    // The pane (and its terminal) belongs to root; crterm runs as the ordinary user, whose
    // daemon cannot open root's terminal and so sends output through the client.
    let env = Env::as_user(Some(TEST_USER));
    let tmux = Tmux::new();
    let mut cmd = String::from("runuser -u crterm-test -- env");
    for (k, v) in &env.tmux.env {
        cmd.push_str(&format!(" {k}={v}"));
    }
    cmd.push_str(&format!(
        " {} start --name fb -- bash --norc; echo EXIT=$?; sleep 600",
        env.crterm_cmd()
    ));
    tmux.start("p", 100, 30, &cmd);
    tmux.wait_text("p", "$", T);
    tmux.type_text(
        "p",
        "printf '\\033[1;32mgreen\\033[0m through the client\\n'",
    );
    tmux.send_keys("p", &["Enter"]);
    tmux.wait_text("p", "\ngreen through the client", T);
    tmux.ok(&["send-keys", "-t", "p", "-H", "1c"]);
    tmux.type_text("p", "?");
    tmux.wait_text("p", "detach (the session runs on)", T);
    tmux.type_text("p", " ");
    tmux.ok(&["send-keys", "-t", "p", "-H", "1c"]);
    tmux.type_text("p", "x");
    tmux.wait_text("p", "[detached from session fb]", T);
    tmux.wait_text("p", "EXIT=0", T);
    assert_eq!(env.sessions().len(), 1);
}

/// The session's processes (below its init) and their TracerPid.
fn session_tracers(env: &Env, name: &str) -> Vec<(i32, i32)> {
    let daemon = env.daemon_pid(name);
    let init = children(daemon)[0];
    process_tree(init)
        .into_iter()
        .skip(1)
        .filter_map(|p| {
            let status = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
            let tracer = status
                .lines()
                .find_map(|l| l.strip_prefix("TracerPid:"))?
                .trim()
                .parse()
                .ok()?;
            Some((p, tracer))
        })
        .collect()
}

#[test]
fn a_checkpoint_freezes_the_whole_session_and_lets_it_go_on() {
    let env = Env::unprivileged();
    let counter = env.dir.path().join("count");
    env.pane(
        "p",
        &format!("{} start --name fr -- bash --norc", env.crterm_cmd()),
    );
    env.tmux.wait_text("p", "$", T);
    // Four threads counting into a file, and a job stopped with Ctrl-Z.
    env.tmux.type_text(
        "p",
        &format!(
            "python3 -c 'import threading,time\nn=[0]\ndef w():\n    while True:\n        n[0]+=1; time.sleep(0.001)\n[threading.Thread(target=w,daemon=True).start() for i in range(4)]\nwhile True:\n    open(\"{}\",\"w\").write(str(n[0])); time.sleep(0.05)' &",
            counter.display()
        ),
    );
    env.tmux.send_keys("p", &["Enter"]);
    env.tmux.type_text("p", "sleep 1000");
    env.tmux.send_keys("p", &["Enter"]);
    env.wait_foreground("fr", "sleep");
    env.tmux.send_keys("p", &["C-z"]);
    env.tmux.wait_text("p", "Stopped", T);
    wait_for("the counter", T, || {
        std::fs::read_to_string(&counter)
            .ok()
            .filter(|s| !s.is_empty())
    });

    let image = env.dir.path().join("fr.img");
    let out = env.crterm(&["checkpoint", "fr", "-o", image.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("3 processes, 7 threads"), "{said}");
    // Nothing stays traced, the counter goes on, the stopped job stays stopped.
    assert!(session_tracers(&env, "fr").iter().all(|(_, t)| *t == 0));
    let read = || -> u64 {
        std::fs::read_to_string(&counter)
            .unwrap()
            .trim()
            .parse()
            .unwrap_or(0)
    };
    let before = read();
    wait_for("the counter to go on", T, || {
        (read() > before).then_some(())
    });
    env.tmux.type_text("p", "jobs");
    env.tmux.send_keys("p", &["Enter"]);
    env.tmux
        .wait_text("p", "Stopped                 sleep 1000", T);
    // The prefix key runs the same path.
    env.prefix("p", "c");
    env.tmux.wait_text("p", "3 processes, 7 threads", T);
    env.tmux.type_text("p", "kill %1 %2; exit");
    env.tmux.send_keys("p", &["Enter"]);
}

#[test]
fn a_checkpoint_refuses_a_traced_process_and_names_it() {
    let env = Env::unprivileged();
    env.pane(
        "p",
        &format!("{} start --name tr -- bash --norc", env.crterm_cmd()),
    );
    env.tmux.wait_text("p", "$", T);
    env.tmux
        .type_text("p", "strace -o /dev/null sleep 1000 & echo STARTED");
    env.tmux.send_keys("p", &["Enter"]);
    env.tmux.wait_text("p", "\nSTARTED", T);
    // Until strace holds the sleep.
    let daemon = env.daemon_pid("tr");
    wait_for("the traced sleep", T, || {
        process_tree(daemon).into_iter().find(|&p| {
            comm_of(p) == "sleep"
                && std::fs::read_to_string(format!("/proc/{p}/status")).is_ok_and(|s| {
                    s.lines()
                        .any(|l| l.starts_with("TracerPid:") && l.trim_end() != "TracerPid:\t0")
                })
        })
    });
    let out = env.crterm(&["checkpoint", "tr"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("checkpoint failed: process")
            && err.contains("(sleep) is being traced by process")
            && err.contains("the session goes on unchanged"),
        "{err}"
    );
    // Only strace's own tracing remains; the shell runs on.
    let tracers = session_tracers(&env, "tr");
    let daemon = env.daemon_pid("tr");
    assert!(tracers.iter().all(|(_, t)| *t != daemon), "{tracers:?}");
    env.tmux.type_text("p", "echo still running");
    env.tmux.send_keys("p", &["Enter"]);
    env.tmux.wait_text("p", "\nstill running", T);
    env.tmux.type_text("p", "kill %1; exit");
    env.tmux.send_keys("p", &["Enter"]);
}

#[test]
fn a_checkpoint_writes_an_image_that_info_reads() {
    let env = Env::unprivileged();
    env.pane(
        "p",
        &format!("{} start --name im -- bash --norc", env.crterm_cmd()),
    );
    env.tmux.wait_text("p", "$", T);
    // A file the shell holds open, a process whose memory holds a marker, a job stopped
    // with Ctrl-Z, a line on screen.
    env.tmux.type_text("p", "exec 7</etc/hostname");
    env.tmux.send_keys("p", &["Enter"]);
    env.tmux.type_text(
        "p",
        "python3 -c 'import time; m = b\"CRTERM-MARKER-\" * 100000; time.sleep(1000)' &",
    );
    env.tmux.send_keys("p", &["Enter"]);
    env.tmux.type_text("p", "vim -u NONE -N -i NONE");
    env.tmux.send_keys("p", &["Enter"]);
    env.wait_foreground("im", "vim");
    env.tmux.send_keys("p", &["C-z"]);
    env.tmux.wait_text("p", "Stopped", T);
    env.tmux.type_text("p", "echo on the screen");
    env.tmux.send_keys("p", &["Enter"]);
    env.tmux.wait_text("p", "\non the screen", T);
    env.wait_foreground("im", "bash");

    let image = env.dir.path().join("im.img");
    let out = env.crterm(&["checkpoint", "im", "-o", image.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.starts_with(&format!("wrote {}: 3 processes", image.display())),
        "{said}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&image).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let out = env.crterm(&["info", image.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "\"comm\": \"bash\"",
        "\"comm\": \"python3\"",
        "\"comm\": \"vim\"",
        "\"stopped\": true",
        "on the screen",
        "\"name\": \"im\"",
    ] {
        assert!(info.contains(needle), "{needle} not in {info}");
    }
    // The marker is in the saved memory.
    let img = crterm::image::read_file(&image).unwrap();
    let mut found = false;
    img.chunks(crterm::image::SectionKind::PAGES, |c| {
        found |= c.windows(28).any(|w| w == b"CRTERM-MARKER-CRTERM-MARKER-");
        Ok(())
    })
    .unwrap();
    assert!(found, "the python process's memory is not in the image");
    // Every thread's full register state, and what restore needs of signals and rseq.
    let session: crterm::records::SessionRecord =
        img.meta(crterm::image::SectionKind::SESSION).unwrap();
    for p in &session.processes {
        for t in &p.threads {
            assert_eq!(t.regs.len(), 27);
            assert!(
                t.xstate.len() >= 576,
                "{} xstate {} bytes",
                p.comm,
                t.xstate.len()
            );
        }
    }
    let python = session
        .processes
        .iter()
        .find(|p| p.comm == "python3")
        .unwrap();
    assert!(
        python.threads[0].rseq.is_some(),
        "glibc registers rseq per thread"
    );
    let bash = session.processes.iter().find(|p| p.comm == "bash").unwrap();
    assert!(
        bash.caught_signals & (1 << (libc::SIGCHLD - 1)) != 0,
        "bash catches SIGCHLD"
    );
    assert_eq!((bash.pid, bash.ppid, bash.sid), (2, 1, 2));
    // The shell's terminal and the identity of regular files it holds.
    use crterm::records::FdObject;
    let tty = bash.fds.iter().find(|f| f.fd == 0).unwrap();
    assert_eq!(tty.target, "/dev/pts/0");
    let FdObject::PtySlave(state) = &tty.object else {
        panic!("the terminal's state: {tty:?}");
    };
    assert_eq!((state.cols, state.rows), (100, 30));
    assert_eq!(state.termios.len(), std::mem::size_of::<libc::termios>());
    // Mapped files are carried once each: libc, mapped by all three processes, once.
    let libc_copies: Vec<_> = session
        .files
        .iter()
        .filter(|f| f.copies.iter().any(|c| c.path.ends_with("/libc.so.6")))
        .collect();
    assert_eq!(libc_copies.len(), 1, "{libc_copies:?}");
    let libc_path = &libc_copies[0].copies[0].path;
    use sha2::Digest;
    let real: String = sha2::Sha256::digest(std::fs::read(libc_path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(libc_copies[0].sha256, real);
    let mut carried = 0u64;
    img.chunks(crterm::image::SectionKind::FILES, |c| {
        carried += c.len() as u64;
        Ok(())
    })
    .unwrap();
    assert_eq!(carried, session.files.iter().map(|f| f.size).sum::<u64>());
    assert!(
        session
            .files
            .iter()
            .any(|f| f.copies[0].path.ends_with("python3.11")
                || f.copies[0].path.contains("python3"))
    );
    let held = bash.fds.iter().find(|f| f.fd == 7).unwrap();
    assert_eq!(held.target, "/etc/hostname");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata("/etc/hostname").unwrap();
    let FdObject::File(id) = &held.object else {
        panic!("a regular file: {held:?}");
    };
    assert_eq!((id.ino, id.size), (meta.ino(), meta.size()));
    assert!(python.ppid == 2 && python.pgid == python.pid && python.sid == 2);
    // The human form names the processes and draws the screen.
    let out = env.crterm(&["info", image.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("stopped  vim") && text.contains("$ echo on the screen"),
        "{text}"
    );

    // And the session goes on.
    env.tmux.type_text("p", "echo after the checkpoint");
    env.tmux.send_keys("p", &["Enter"]);
    env.tmux.wait_text("p", "\nafter the checkpoint", T);
    env.tmux.type_text("p", "kill %1 %2; exit");
    env.tmux.send_keys("p", &["Enter"]);
}

#[test]
fn a_failed_image_write_leaves_the_session_and_the_old_image() {
    let env = Env::unprivileged();
    env.pane(
        "p",
        &format!("{} start --name fw -- bash --norc", env.crterm_cmd()),
    );
    env.tmux.wait_text("p", "$", T);
    // The default image: under XDG_DATA_HOME, private.
    env.prefix("p", "c");
    env.tmux.wait_text("p", "crterm: wrote ", T);
    let default = env.dir.path().join("data/crterm/fw.img");
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&default), 0o600);
    assert_eq!(mode(default.parent().unwrap()), 0o700);
    let before = std::fs::read(&default).unwrap();
    // A target that cannot be written: its directory is a file.
    let blocker = env.dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let out = env.crterm(&[
        "checkpoint",
        "fw",
        "-o",
        blocker.join("x.img").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("crterm: checkpoint failed") && err.lines().count() == 1,
        "{err}"
    );
    assert_eq!(std::fs::read(&default).unwrap(), before);
    env.tmux.type_text("p", "echo still fine");
    env.tmux.send_keys("p", &["Enter"]);
    env.tmux.wait_text("p", "\nstill fine", T);
    env.tmux.type_text("p", "exit");
    env.tmux.send_keys("p", &["Enter"]);
}

#[test]
fn killing_the_dump_midway_harms_neither_the_session_nor_the_old_image() {
    let env = Env::unprivileged();
    env.pane(
        "p",
        &format!("{} start --name kd2 -- bash --norc", env.crterm_cmd()),
    );
    env.tmux.wait_text("p", "$", T);
    let image = env.dir.path().join("kd2.img");
    let first = env.crterm(&["checkpoint", "kd2", "-o", image.to_str().unwrap()]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let before = std::fs::read(&image).unwrap();

    // 300 MiB that does not compress: the next dump takes a while.
    env.tmux.type_text(
        "p",
        "python3 -c 'import os,time; b = os.urandom(300 << 20); print(\"FILL\" \"ED\", flush=True); time.sleep(1000)' &",
    );
    env.tmux.send_keys("p", &["Enter"]);
    env.tmux.wait_text("p", "FILLED", Duration::from_secs(60));
    let daemon = env.daemon_pid("kd2");
    let mut checkpoint = env.command(&[
        &env.crterm_cmd(),
        "checkpoint",
        "kd2",
        "-o",
        image.to_str().unwrap(),
    ]);
    let checkpoint = std::thread::spawn(move || checkpoint.output().unwrap());
    let dumper = wait_for("the dump process", T, || {
        children(daemon).into_iter().find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.contains("__dump"))
        })
    });
    // Kill it once it is well into writing the image.
    let tmp = crterm::image::temp_path(&image, dumper as u32).unwrap();
    wait_for("the dump to be under way", T, || {
        std::fs::metadata(&tmp)
            .ok()
            .filter(|m| m.len() > 10 << 20)
            .map(|_| ())
    });
    unsafe { libc::kill(dumper, libc::SIGKILL) };
    let out = checkpoint.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("the dump process died"), "{err}");

    // The earlier image is as it was, nothing half-written is left, nothing stays traced.
    assert_eq!(std::fs::read(&image).unwrap(), before);
    let litter: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(litter.is_empty(), "{litter:?}");
    let tracers = session_tracers(&env, "kd2");
    assert!(tracers.iter().all(|(_, t)| *t == 0), "{tracers:?}");
    env.tmux.type_text("p", "jobs; echo session alive");
    env.tmux.send_keys("p", &["Enter"]);
    env.tmux.wait_text("p", "\nsession alive", T);
    assert!(env.tmux.capture_plain("p").contains("Running"));
    env.tmux.type_text("p", "kill %1; exit");
    env.tmux.send_keys("p", &["Enter"]);
}

#[test]
fn a_daemon_killed_outright_takes_its_session_and_gives_the_terminal_back() {
    let env = Env::unprivileged();
    let d = env.dir.path().display();
    env.pane(
        "p",
        &format!(
            "stty -a > {d}/before; {} start --name dk -- bash --norc; echo EXIT=$?; stty -a > {d}/after; \
             cmp -s {d}/before {d}/after && echo STTY-SAME; sleep 600",
            env.crterm_cmd()
        ),
    );
    env.tmux.wait_text("p", "$", T);
    env.tmux
        .type_text("p", "printf '\\033[?1049h\\033[?1000hALT'; sleep 1000");
    env.tmux.send_keys("p", &["Enter"]);
    env.tmux.wait_text("p", "ALT", T);
    let daemon = env.daemon_pid("dk");
    let tree = process_tree(daemon);
    unsafe { libc::kill(daemon, libc::SIGKILL) };
    let screen = env.tmux.wait_text("p", "STTY-SAME", T);
    assert!(
        screen.contains("crterm: lost the connection to the session daemon")
            && screen.contains("EXIT=1"),
        "{screen}"
    );
    assert_eq!(
        env.tmux.display("p", "#{alternate_on}#{mouse_any_flag}"),
        "00"
    );
    for pid in tree {
        assert!(wait_gone(pid, T), "process {pid} outlived its daemon");
    }
}

#[test]
fn a_zombie_in_the_session_is_recorded_not_a_failure() {
    let env = Env::unprivileged();
    env.pane(
        "p",
        &format!("{} start --name zo -- bash --norc", env.crterm_cmd()),
    );
    env.tmux.wait_text("p", "$", T);
    // A child that exits with 3 and is never reaped by its parent.
    env.tmux.type_text(
        "p",
        "python3 -c 'import os,time; os.fork() or os._exit(3); time.sleep(1000)' &",
    );
    env.tmux.send_keys("p", &["Enter"]);
    let daemon = env.daemon_pid("zo");
    wait_for("the zombie", T, || {
        process_tree(daemon).into_iter().find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
        })
    });
    let image = env.dir.path().join("zo.img");
    let out = env.crterm(&["checkpoint", "zo", "-o", image.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img = crterm::image::read_file(&image).unwrap();
    let session: crterm::records::SessionRecord =
        img.meta(crterm::image::SectionKind::SESSION).unwrap();
    let zombie = session
        .processes
        .iter()
        .find(|p| p.zombie.is_some())
        .unwrap();
    assert_eq!(
        zombie.zombie,
        Some(3 << 8),
        "the exit status waitpid will report"
    );
    let parent = session
        .processes
        .iter()
        .find(|p| p.comm == "python3" && p.zombie.is_none())
        .unwrap();
    assert_eq!(zombie.ppid, parent.pid);
    env.tmux.type_text("p", "kill %1; exit");
    env.tmux.send_keys("p", &["Enter"]);
}

#[test]
fn pipes_queued_bytes_and_eventfd_counts_are_saved_without_consuming_them() {
    let env = Env::unprivileged();
    env.pane(
        "p",
        &format!("{} start --name pq -- bash --norc", env.crterm_cmd()),
    );
    env.tmux.wait_text("p", "$", T);
    // 60 000 bytes waiting in a pipe whose reader sleeps; an eventfd holding 42.
    env.tmux.type_text(
        "p",
        "python3 -c 'import os,time; os.write(1, b\"Q\" * 60000); e = os.eventfd(42); os.write(2, b\"WRIT\" b\"TEN\\n\"); time.sleep(1000)' | (sleep 1000; cat > /dev/null) &",
    );
    env.tmux.send_keys("p", &["Enter"]);
    env.tmux.wait_text("p", "WRITTEN", T);
    let session = |n: &str| -> crterm::records::SessionRecord {
        let image = env.dir.path().join(n);
        let out = env.crterm(&["checkpoint", "pq", "-o", image.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        crterm::image::read_file(&image)
            .unwrap()
            .meta(crterm::image::SectionKind::SESSION)
            .unwrap()
    };
    for round in ["one.img", "two.img"] {
        let s = session(round);
        let python = s.processes.iter().find(|p| p.comm == "python3").unwrap();
        let writer = python.fds.iter().find(|f| f.fd == 1).unwrap();
        use crterm::records::FdObject;
        let queued = |f: &crterm::records::FdRecord| match &f.object {
            FdObject::Pipe(p) => p.queued.clone(),
            other => panic!("{round}: not a pipe: {other:?}"),
        };
        assert_eq!(
            queued(writer),
            vec![b'Q'; 60000],
            "{round}: the writer's end"
        );
        let sleeper = s.processes.iter().find(|p| p.comm == "sleep").unwrap();
        let reader = sleeper.fds.iter().find(|f| f.fd == 0).unwrap();
        assert_eq!(queued(reader).len(), 60000, "{round}: the reader's end");
        let eventfd = python
            .fds
            .iter()
            .find(|f| f.target.contains("eventfd"))
            .unwrap();
        assert!(
            matches!(
                eventfd.object,
                FdObject::EventFd {
                    count: 42,
                    semaphore: false
                }
            ),
            "{round}: {eventfd:?}"
        );
    }
    env.tmux.type_text("p", "kill %1; exit");
    env.tmux.send_keys("p", &["Enter"]);
}
