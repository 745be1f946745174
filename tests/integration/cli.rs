//! Bad input gets one clear line on stderr, a non-zero exit, and leaves no socket or
//! process behind.

use crate::common::*;
use std::process::Output;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn one_error_line(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected failure, got {:?}",
        out.status
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err:?}");
    assert!(err.starts_with("crterm: "), "{err:?}");
    err
}

fn no_sockets(env: &Env) {
    let dir = env.runtime.join("crterm");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "left behind in {}: {left:?}",
        dir.display()
    );
}

#[test]
fn command_that_does_not_exist() {
    let env = Env::unprivileged();
    env.pane(
        "p",
        &format!(
            "{} start -- no-such-command-xyz; echo EXIT=$?; sleep 600",
            env.crterm_cmd()
        ),
    );
    let screen = env.tmux.wait_text("p", "EXIT=", T);
    assert!(
        screen.contains("crterm: cannot run 'no-such-command-xyz': No such file or directory"),
        "{screen}"
    );
    assert!(screen.contains("EXIT=1"), "{screen}");
    no_sockets(&env);
}

#[test]
fn not_a_terminal() {
    let env = Env::unprivileged();
    let err = one_error_line(&env.crterm(&["start", "vim"]));
    assert!(err.contains("standard input is not a terminal"), "{err}");
    no_sockets(&env);
}

#[test]
fn config_file_with_errors() {
    let env = Env::unprivileged();
    let cfg = env.dir.path().join("config/crterm");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(cfg.join("config.toml"), "prefix = \"C-\\\\\"\nprefx = 1\n").unwrap();
    let err = one_error_line(&env.crterm(&["start", "true"]));
    assert!(
        err.contains("config.toml: line 2") && err.contains("prefx"),
        "{err}"
    );
    std::fs::write(cfg.join("config.toml"), "prefix = \"Q\"\n").unwrap();
    let err = one_error_line(&env.crterm(&["start", "true"]));
    assert!(
        err.contains("prefix") && err.contains("control key"),
        "{err}"
    );
    no_sockets(&env);
}

#[test]
fn bad_names_and_unknown_sessions() {
    let env = Env::unprivileged();
    let err = one_error_line(&env.crterm(&["start", "--name", "../x", "true"]));
    assert!(err.contains("invalid session name"), "{err}");
    let err = one_error_line(&env.crterm(&["attach", "nosuch"]));
    assert!(err.contains("no session named nosuch"), "{err}");
    let err = one_error_line(&env.crterm(&["checkpoint", "nosuch"]));
    assert!(err.contains("no session named nosuch"), "{err}");
    let out = env.crterm(&["ls"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no sessions");
}

#[test]
fn name_already_in_use() {
    let env = Env::unprivileged();
    env.pane(
        "a",
        &format!("{} start --name dup -- bash --norc", env.crterm_cmd()),
    );
    env.daemon_pid("dup");
    env.pane(
        "b",
        &format!(
            "{} start --name dup -- true; echo EXIT=$?; sleep 600",
            env.crterm_cmd()
        ),
    );
    let screen = env.tmux.wait_text("b", "EXIT=", T);
    assert!(
        screen.contains("crterm: a session named dup is already running"),
        "{screen}"
    );
    assert!(screen.contains("EXIT=1"));
    assert_eq!(env.sessions().len(), 1);
}

#[test]
fn info_on_bad_images() {
    let env = Env::unprivileged();
    let d = env.dir.path();
    std::fs::write(d.join("text.img"), "hello\n").unwrap();
    let err = one_error_line(&env.crterm(&["info", d.join("text.img").to_str().unwrap()]));
    assert!(err.contains("text.img: not a crterm image"), "{err}");
    let err = one_error_line(&env.crterm(&["info", d.join("missing.img").to_str().unwrap()]));
    assert!(err.contains("missing.img: No such file"), "{err}");
    // The golden image, cut short and damaged.
    let golden = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/term-model-v1.img"
    ))
    .unwrap();
    std::fs::write(d.join("cut.img"), &golden[..golden.len() / 2]).unwrap();
    let err = one_error_line(&env.crterm(&["info", d.join("cut.img").to_str().unwrap()]));
    assert!(err.contains("cut.img: the image is"), "{err}");
    let mut bad = golden.clone();
    let at = bad.len() / 3;
    bad[at] ^= 0xff;
    std::fs::write(d.join("bad.img"), &bad).unwrap();
    let err = one_error_line(&env.crterm(&["info", d.join("bad.img").to_str().unwrap()]));
    assert!(err.contains("bad.img: the image is damaged"), "{err}");
    // An image of a terminal model alone (the model's golden image): resume would refuse
    // it, so info does.
    std::fs::write(d.join("model-only.img"), &golden).unwrap();
    let err = one_error_line(&env.crterm(&["info", d.join("model-only.img").to_str().unwrap()]));
    assert!(
        err.contains("model-only.img: the image has no session section"),
        "{err}"
    );
    // A good one is shown.
    let session = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/session-v1.img"
    ))
    .unwrap();
    std::fs::write(d.join("good.img"), &session).unwrap();
    let out = env.crterm(&["info", d.join("good.img").to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("screen     100x30") && text.contains("|golden session: type a line"),
        "{text}"
    );
}

#[test]
fn stale_socket_from_a_crashed_daemon_is_replaced() {
    let env = Env::unprivileged();
    assert!(env.crterm(&["ls"]).status.success()); // creates the private directory
    let sock = env.runtime.join("crterm/stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    if let Some(u) = &env.user {
        let (uid, gid) = user_ids(u);
        std::os::unix::fs::chown(&sock, Some(uid), Some(gid)).unwrap();
    }
    // ls does not list it, and cleans it up.
    assert_eq!(
        String::from_utf8_lossy(&env.crterm(&["ls"]).stdout).trim(),
        "no sessions"
    );
    assert!(!sock.exists());
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    if let Some(u) = &env.user {
        let (uid, gid) = user_ids(u);
        std::os::unix::fs::chown(&sock, Some(uid), Some(gid)).unwrap();
    }
    env.pane(
        "p",
        &format!("{} start --name stale -- bash --norc", env.crterm_cmd()),
    );
    env.tmux.wait_text("p", "$", T);
    env.daemon_pid("stale");
}

#[test]
fn runtime_directory_must_be_private() {
    let env = Env::unprivileged();
    assert!(env.crterm(&["ls"]).status.success());
    let dir = env.runtime.join("crterm");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = one_error_line(&env.crterm(&["ls"]));
    assert!(err.contains("is not private"), "{err}");
}

/// The man pages and completions come from the command-line definition: a page for
/// crterm and one for each command (none for the hidden ones), with the options each has;
/// a bash completion script that bash loads and that completes crterm; zsh and fish
/// scripts that name the options.
#[test]
fn man_pages_and_completions_are_made_from_the_command_line() {
    let env = Env::unprivileged();
    let dir = env.dir.path().join("man1");
    let out = env.crterm(&["man", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for want in [
        "crterm.1",
        "crterm-start.1",
        "crterm-checkpoint.1",
        "crterm-resume.1",
    ] {
        assert!(pages.contains(&want.to_string()), "{pages:?}");
    }
    assert!(
        !pages
            .iter()
            .any(|p| p.contains("__") || p == "crterm-help.1"),
        "{pages:?}"
    );
    let start = std::fs::read_to_string(dir.join("crterm-start.1")).unwrap();
    assert!(
        start.starts_with(".ie") || start.contains(".TH crterm-start 1"),
        "{start}"
    );
    assert!(
        start.contains("autosave") && start.contains("detached"),
        "{start}"
    );
    let main = String::from_utf8(env.crterm(&["man"]).stdout).unwrap();
    assert!(
        main.contains(".TH crterm 1") && main.contains("checkpoint"),
        "{main}"
    );

    let bash = String::from_utf8(env.crterm(&["completions", "bash"]).stdout).unwrap();
    let script = env.dir.path().join("crterm.bash");
    std::fs::write(&script, &bash).unwrap();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p crterm", script.display()))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("crterm"),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for shell in ["zsh", "fish"] {
        let out = String::from_utf8(env.crterm(&["completions", shell]).stdout).unwrap();
        assert!(
            out.contains("autosave") && out.contains("checkpoint"),
            "{shell}: {out}"
        );
    }
    let out = env.crterm(&["completions", "tcsh"]);
    assert!(!out.status.success());
}
