//! Nobody gains anything by a resume: root resuming an ordinary user's image gives its
//! processes exactly their recorded ids, groups and capabilities (and a user namespace as
//! theirs was); an image that claims more than its owner could have had is refused; root's
//! own sessions keep each process's user.

use super::roundtrip::*;
use super::*;

/// The lines of `/proc/PID/status` that say who a process is and what it may do.
fn identity(pid: i32) -> Vec<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .filter(|l| {
            [
                "Uid:",
                "Gid:",
                "Groups:",
                "CapInh:",
                "CapPrm:",
                "CapEff:",
                "CapBnd:",
                "CapAmb:",
                "NoNewPrivs:",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// The session's processes (below its init) by name, with who they are.
fn identities(env: &Env, name: &str) -> Vec<(String, Vec<String>)> {
    let init = children(env.daemon_pid(name))[0];
    let mut v: Vec<(String, Vec<String>)> = process_tree(init)
        .into_iter()
        .skip(1)
        .map(|p| (comm_of(p), identity(p)))
        .collect();
    v.sort();
    v
}

/// The test user in a supplementary group, so that groups are there to be kept.
fn with_a_supplementary_group() {
    let out = std::process::Command::new("usermod")
        .args(["-aG", "users", TEST_USER])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The user's python session, checkpointed with --exit into an image the user owns: the
/// image, and who its processes were.
fn users_image(user: &Env, name: &str) -> (std::path::PathBuf, Vec<(String, Vec<String>)>) {
    python_pane(user, "u", name);
    enter(user, "u", "import os; secret = 'from the user'");
    let before = identities(user, name);
    assert!(
        before.iter().any(|(_, id)| id
            .iter()
            .any(|l| l.starts_with("Groups:") && l.contains("100"))),
        "{before:?}"
    );
    let image = image_path(user, name);
    checkpoint_and_end(user, name, &image);
    (image, before)
}

#[test]
#[ignore = "needs root (resumes an ordinary user's image as root); run by tests/run-all.sh as root"]
fn root_resuming_a_users_image_gives_its_processes_their_ids_groups_and_capabilities() {
    with_a_supplementary_group();
    let user = Env::unprivileged();
    let (image, before) = users_image(&user, "priv");
    let root = Env::root();
    // The image stays where the user wrote it, as theirs.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&image).unwrap().uid(),
        user_ids(TEST_USER).0
    );
    resume_with(&root, &root.tmux, "r", (100, 30), "--name priv", &image);
    root.tmux.wait_text("r", ">>> import os", T);
    let after = identities(&root, "priv");
    assert_eq!(after, before, "who the processes are, before and after");
    // It is the user, not root: a file only root may write stays unwritten.
    let guard = root.dir.path().join("root-only");
    std::fs::write(&guard, "root's").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&guard, std::fs::Permissions::from_mode(0o644)).unwrap();
    enter(
        &root,
        "r",
        &format!(
            "exec(\"try:\\n open('{}', 'w').write('overwritten')\\nexcept OSError as e: print('refused', e.errno)\")",
            guard.display()
        ),
    );
    root.tmux.wait_text("r", "refused 13", T);
    assert_eq!(std::fs::read_to_string(&guard).unwrap(), "root's");
    // And in a user namespace of its own, as it was: its capabilities are that one's.
    let init = children(root.daemon_pid("priv"))[0];
    let python = process_tree(init)
        .into_iter()
        .find(|&p| comm_of(p) == "python3")
        .unwrap();
    assert_ne!(
        std::fs::read_link(format!("/proc/{python}/ns/user")).unwrap(),
        std::fs::read_link("/proc/self/ns/user").unwrap()
    );
    enter(&root, "r", "print(secret.upper())");
    root.tmux.wait_text("r", "FROM THE USER", T);
    end_with_ctrl_d(&root, "r");
}

#[test]
#[ignore = "needs root (resumes images another user wrote); run by tests/run-all.sh as root"]
fn root_refuses_a_users_image_that_claims_more_than_its_user_had() {
    with_a_supplementary_group();
    let user = Env::unprivileged();
    let (image, _) = users_image(&user, "claim");
    let root = Env::root();
    let (uid, gid) = user_ids(TEST_USER);
    type Change = Box<dyn Fn(&mut crterm::records::SessionRecord)>;
    let cases: Vec<(&str, Change)> = vec![
        (
            "ran as user 0",
            Box::new(|r| r.processes.iter_mut().for_each(|p| p.uids = [0; 4])),
        ),
        (
            "outside a user namespace",
            Box::new(|r| r.user_namespace = None),
        ),
        (
            "was in group 0",
            Box::new(|r| r.processes.iter_mut().for_each(|p| p.groups.push(0))),
        ),
    ];
    for (i, (want, change)) in cases.into_iter().enumerate() {
        let forged = user.dir.path().join(format!("forged-{i}.img"));
        rewrite_image(&image, &forged, |_, r| change(r));
        // Written by the user, as a forger would.
        let out = std::process::Command::new("chown")
            .arg(format!("{uid}:{gid}"))
            .arg(&forged)
            .output()
            .unwrap();
        assert!(out.status.success());
        let out = root.crterm(&["check", forged.to_str().unwrap()]);
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            !out.status.success() && said.contains(want) && said.contains("belongs to user"),
            "{i}: {said}"
        );
        let target = format!("f{i}");
        let wide = other_tmux(&root);
        resume_in(&root, &wide, &target, 250, 30, &forged);
        let screen = wide.wait_text(&target, "CRTERM_EXIT=", T);
        let first = screen.lines().next().unwrap_or("");
        assert!(
            first.starts_with("crterm: ")
                && first.contains(want)
                && screen.contains("CRTERM_EXIT=1"),
            "{i}: {screen}"
        );
        assert!(root.sessions().is_empty());
    }
    // Another ordinary user may not resume it at all, even readable.
    let other = Env::as_user(Some(OTHER_USER));
    let readable = other.dir.path().join("theirs.img");
    std::fs::copy(&image, &readable).unwrap();
    let _ = std::process::Command::new("chmod")
        .arg("644")
        .arg(&readable)
        .output();
    let out = other.crterm(&["check", readable.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && said.contains("only a session of one's own user"),
        "{said}"
    );
}

#[test]
#[ignore = "needs root (a session of root's in which a program runs as another user); run by tests/run-all.sh as root"]
fn roots_own_session_keeps_each_processs_user() {
    let root = Env::root();
    let (uid, gid) = user_ids(OTHER_USER);
    bash_pane(&root, "a", "mixed");
    enter(
        &root,
        "a",
        &format!("setpriv --reuid={uid} --regid={gid} --init-groups python3 -q"),
    );
    root.tmux.wait_text("a", ">>>", T);
    enter(
        &root,
        "a",
        "import os; print('ids', os.getuid(), os.getgid())",
    );
    root.tmux.wait_text("a", &format!("ids {uid} {gid}"), T);
    let before = identities(&root, "mixed");
    assert!(
        before
            .iter()
            .any(|(c, id)| c == "bash" && id[0] == "Uid: 0 0 0 0")
    );
    let image = image_path(&root, "mixed");
    checkpoint_and_end(&root, "mixed", &image);
    resume_pane(&root, "b", 100, 30, &image);
    root.tmux.wait_text("b", &format!("ids {uid} {gid}"), T);
    assert_eq!(identities(&root, "mixed"), before);
    enter(&root, "b", "print('again', os.getuid(), os.geteuid())");
    root.tmux.wait_text("b", &format!("again {uid} {uid}"), T);
    root.tmux.send_keys("b", &["C-d"]);
    enter(&root, "b", "exit");
    root.tmux.wait_text("b", "CRTERM_EXIT=0", T);
}
