//! Faults and odd input around a checkpoint: the dump process killed at every step and at
//! random moments, the daemon's side failing at every step, a stopped and continued
//! client, a full disk, a reader that goes away, outputs and images that are not regular
//! files. Each case ends with the session exactly as it was: the same processes and
//! threads, untraced, with the same mappings, masks, blocked calls (stack and
//! instruction pointers, arguments), descriptors, dumpable flags, and the bytes queued in
//! its ptys and sockets neither lost nor doubled.

use super::roundtrip::*;
use super::*;
use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What can be seen of a session's processes from outside, for "exactly as it was".
type Snapshot = BTreeMap<String, String>;

/// Whether two readings of a thread's `syscall` file show the same blocked call: the same
/// arguments, stack and instruction pointers, and the same call, or one of them the
/// kernel's `restart_syscall` (219), which is how a call interrupted by any stop (a
/// SIGSTOP too) goes on where it has time left.
fn same_call(a: &str, b: &str) -> bool {
    let (a, b): (Vec<&str>, Vec<&str>) = (
        a.split_whitespace().collect(),
        b.split_whitespace().collect(),
    );
    match (a.split_first(), b.split_first()) {
        (Some((na, ra)), Some((nb, rb))) => ra == rb && (na == nb || *na == "219" || *nb == "219"),
        _ => a == b,
    }
}

fn snapshot(init: i32) -> Snapshot {
    let mut s = Snapshot::new();
    for pid in process_tree(init).into_iter().skip(1) {
        let read =
            |f: &str| std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap_or_default();
        let status = read("status");
        let field = |st: &str, k: &str| {
            st.lines()
                .find(|l| l.starts_with(k))
                .unwrap_or("")
                .to_string()
        };
        let comm = read("comm").trim().to_string();
        let key = |what: &str| format!("{pid} {comm} {what}");
        s.insert(key("maps"), read("maps"));
        for k in [
            "TracerPid:",
            "ShdPnd:",
            "SigIgn:",
            "SigCgt:",
            "Uid:",
            "State:",
        ] {
            s.insert(key(k), field(&status, k));
        }
        // Undumpable: the process's /proc files belong to root.
        let owner = std::fs::metadata(format!("/proc/{pid}/status")).map_or(u32::MAX, |m| m.uid());
        s.insert(key("dumpable"), (owner != 0).to_string());
        if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            let mut v: Vec<String> = fds
                .flatten()
                .map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    let target = std::fs::read_link(e.path()).unwrap_or_default();
                    let info = read(&format!("fdinfo/{n}"));
                    let posflags: Vec<&str> = info
                        .lines()
                        .filter(|l| l.starts_with("pos:") || l.starts_with("flags:"))
                        .collect();
                    format!("{n} {} {}", target.display(), posflags.join(" "))
                })
                .collect();
            v.sort();
            s.insert(key("fds"), v.join("\n"));
        }
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for t in tasks.flatten() {
                let tid = t.file_name().to_string_lossy().into_owned();
                let tstatus = read(&format!("task/{tid}/status"));
                for k in ["SigBlk:", "SigPnd:"] {
                    s.insert(format!("{pid} {comm} {tid} {k}"), field(&tstatus, k));
                }
                s.insert(
                    format!("{pid} {comm} {tid} syscall"),
                    read(&format!("task/{tid}/syscall")),
                );
            }
        }
    }
    s
}

/// Wait (a little) until the session is as it was in `before`: threads interrupted by the
/// freeze take a moment to get back into their calls.
fn assert_as_before(before: &Snapshot, init: i32, what: &str) {
    let start = std::time::Instant::now();
    loop {
        let diff = differences(before, &snapshot(init));
        if diff.is_empty() {
            return;
        }
        if start.elapsed() > Duration::from_secs(3) {
            panic!("{what}: the session changed:\n{diff}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn differences(a: &Snapshot, b: &Snapshot) -> String {
    let mut out = String::new();
    for (k, v) in a {
        match b.get(k) {
            Some(w) if w == v => {}
            Some(w) if k.ends_with(" syscall") && same_call(v, w) => {}
            Some(w) => out.push_str(&format!("{k}: was\n{v}\nnow\n{w}\n")),
            None => out.push_str(&format!("{k}: gone\n")),
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        out.push_str(&format!("{k}: new\n"));
    }
    out
}

/// A session that holds what a checkpoint changes and must put back: an undumpable
/// process (ssh-agent), a pty master with output its holder has not read and a socket
/// with bytes queued (a python program), keys typed at the session's terminal in raw mode
/// and not read yet (bash, busy in `sleep`), and threads blocked in calls of each kind.
struct Busy {
    env: Env,
    name: String,
    hooks: PathBuf,
    report: PathBuf,
    init: i32,
}

const HOLDER: &str = r#"
import os, select, signal, socket, sys, threading, time
m, s = os.openpty()
os.write(s, b"queued-output")
a, b = socket.socketpair()
b.send(b"in-socket")
def report(*_):
    got = b""
    while select.select([m], [], [], 0.3)[0]:
        got += os.read(m, 4096)
    with open(sys.argv[1], "w") as f:
        f.write(repr(got) + " " + repr(a.recv(100, socket.MSG_DONTWAIT)))
signal.signal(signal.SIGUSR1, report)
threading.Thread(target=lambda: time.sleep(10000), daemon=True).start()
while True:
    time.sleep(1000)
"#;

/// An environment whose sessions read test hooks (`crterm::ckpt::hooks`) from the file
/// returned, empty for now.
pub(crate) fn env_with_hooks() -> (Env, PathBuf) {
    hooks_for(Env::unprivileged())
}

/// `env`, whose sessions read test hooks from the file returned, empty for now.
pub(crate) fn hooks_for(mut env: Env) -> (Env, PathBuf) {
    let hooks = env.dir.path().join("hooks");
    std::fs::write(&hooks, "").unwrap();
    let _ = std::process::Command::new("chmod")
        .arg("666")
        .arg(&hooks)
        .output();
    env.tmux
        .env
        .push(("CRTERM_TEST_HOOKS".into(), hooks.display().to_string()));
    (env, hooks)
}

impl Busy {
    fn start(name: &str) -> Busy {
        let (env, hooks) = env_with_hooks();
        let holder = env.dir.path().join("holder.py");
        std::fs::write(&holder, HOLDER).unwrap();
        let report = env.dir.path().join("report");
        bash_pane(&env, "a", name);
        let agent = env.dir.path().join("agent.sock");
        enter(
            &env,
            "a",
            &format!(
                "eval $(ssh-agent -s -a {}) >/dev/null; python3 {} {} & sleep 1; stty raw -echo; echo busy; sleep 600; head -c 5 | od -An -c; stty sane",
                agent.display(),
                holder.display(),
                report.display()
            ),
        );
        env.tmux.wait_text("a", "\nbusy", T);
        env.tmux.type_text("a", "hello");
        let daemon = env.daemon_pid(name);
        let init = children(daemon)[0];
        // Everything in place: the agent forked off and asleep, the holder's two threads
        // asleep, the keys in the pty.
        let sleep = env.wait_foreground(name, "sleep");
        env.wait_typed(sleep, 5);
        wait_for("the session to settle", T, || {
            let tree = process_tree(init);
            let asleep = |comm: &str, threads: usize| {
                tree.iter().any(|&p| {
                    comm_of(p) == comm
                        && std::fs::read_dir(format!("/proc/{p}/task")).is_ok_and(|d| {
                            let t: Vec<_> = d.flatten().collect();
                            t.len() == threads
                                && t.iter().all(|t| {
                                    std::fs::read_to_string(t.path().join("stat")).is_ok_and(|s| {
                                        s.rsplit_once(')')
                                            .is_some_and(|(_, r)| r.trim_start().starts_with('S'))
                                    })
                                })
                        })
                })
            };
            (asleep("ssh-agent", 1) && asleep("python3", 2)).then_some(())
        });
        Busy {
            env,
            name: name.to_string(),
            hooks,
            report,
            init,
        }
    }

    fn hook(&self, text: &str) {
        std::fs::write(&self.hooks, text).unwrap();
    }

    fn checkpoint_with(&self, image: &Path, args: &[&str]) -> std::process::Output {
        let mut all = vec!["checkpoint", &self.name, "-o", image.to_str().unwrap()];
        all.extend_from_slice(args);
        self.env.crterm(&all)
    }

    /// The session goes on as it was: the keys typed ahead are read once and in order,
    /// the pty's output and the socket's bytes are there once, the agent answers.
    fn finish(self) {
        let sleep = process_tree(self.init)
            .into_iter()
            .find(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "sleep")
            })
            .expect("the sleep");
        unsafe { libc::kill(sleep, libc::SIGTERM) };
        self.env.tmux.wait_text("a", "h   e   l   l   o", T);
        let holder = process_tree(self.init)
            .into_iter()
            .find(|p| {
                std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.contains("holder.py"))
            })
            .expect("the holder");
        unsafe { libc::kill(holder, libc::SIGUSR1) };
        let report = wait_for("the holder's report", T, || {
            std::fs::read_to_string(&self.report)
                .ok()
                .filter(|r| !r.is_empty())
        });
        assert_eq!(report, "b'queued-output' b'in-socket'");
        enter(
            &self.env,
            "a",
            "ssh-add -l; echo ssh-add=$?; ssh-agent -k >/dev/null; kill %1",
        );
        self.env.tmux.wait_text("a", "ssh-add=1", T);
    }
}

/// The dump process killed (by a test hook) at each of its steps, and the daemon's side
/// failing at each of its own, in one session: every checkpoint fails with one line, and
/// after each the session is exactly as it was; no image and no temporary file is left;
/// then a checkpoint without a fault works, and the session's queues are all still there.
#[test]
fn a_checkpoint_failing_or_killed_at_any_step_leaves_the_session_exactly_as_it_was() {
    let busy = Busy::start("steps");
    let before = snapshot(busy.init);
    assert!(
        before
            .iter()
            .any(|(k, v)| k.contains("ssh-agent dumpable") && v == "false"),
        "the agent is undumpable: {before:?}"
    );
    let image = busy.env.dir.path().join("steps.img");
    // (Each with a pre-copy too where it has steps of its own: the session then runs
    // while the dump process reads, with every process's writes tracked.)
    let faults = crterm::ckpt::hooks::DUMPER_STEPS
        .iter()
        .map(|s| (format!("die {s}"), "never"))
        .chain(
            crterm::ckpt::hooks::PRECOPY_STEPS
                .iter()
                .map(|s| (format!("die {s}"), "always")),
        )
        .chain(
            crterm::ckpt::hooks::DAEMON_STEPS
                .iter()
                .map(|s| (format!("fail {s}"), "always")),
        );
    for (fault, precopy) in faults {
        busy.hook(&fault);
        let out = busy.checkpoint_with(&image, &["--precopy", precopy]);
        let fault = format!("{fault} (pre-copy {precopy})");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{fault}: the checkpoint succeeded");
        assert!(
            err.starts_with("crterm: checkpoint failed")
                && err.lines().count() == 1
                && err.contains("the session goes on unchanged"),
            "{fault}: {err}"
        );
        if fault.starts_with("die") {
            assert!(err.contains("the dump process died"), "{fault}: {err}");
        } else {
            assert!(err.contains("test hook"), "{fault}: {err}");
        }
        assert_as_before(&before, busy.init, &fault);
        assert!(!image.exists(), "{fault}: an image was left");
        let litter: Vec<String> = std::fs::read_dir(busy.env.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(litter.is_empty(), "{fault}: {litter:?}");
    }
    busy.hook("");
    for precopy in ["always", "never"] {
        let out = busy.checkpoint_with(&image, &["--precopy", precopy, "--full"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_as_before(&before, busy.init, "after a checkpoint that worked");
    }
    busy.finish();
}

/// The repro of the issue: the dump process killed a few milliseconds after it started,
/// at random moments, many times over. Each checkpoint either completes or fails with one
/// line, and the session is exactly as it was.
#[test]
fn the_dump_process_killed_at_random_moments_leaves_the_session_exactly_as_it_was() {
    let busy = Busy::start("random");
    let before = snapshot(busy.init);
    let daemon = busy.env.daemon_pid("random");
    let image = busy.env.dir.path().join("random.img");
    let runs = 24;
    let (mut killed, mut completed) = (0, 0);
    let mut seed = std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    for run in 0..runs {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_micros(seed % 20_000);
        let mut cmd = busy.env.command(&[
            &busy.env.crterm_cmd(),
            "checkpoint",
            "random",
            "-o",
            image.to_str().unwrap(),
        ]);
        let client = std::thread::spawn(move || cmd.output().unwrap());
        // Found as soon as it exists (a millisecond's polling), then killed after `delay`.
        let started = std::time::Instant::now();
        let dumper = loop {
            let found = children(daemon).into_iter().find(|p| {
                std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.contains("__dump"))
            });
            if let Some(p) = found {
                break p;
            }
            assert!(started.elapsed() < T, "run {run}: no dump process");
            std::thread::sleep(Duration::from_millis(1));
        };
        std::thread::sleep(delay);
        unsafe { libc::kill(dumper, libc::SIGKILL) };
        let out = client.join().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            completed += 1;
        } else {
            killed += 1;
            assert!(
                err.lines().count() == 1 && err.contains("the session goes on unchanged"),
                "run {run} ({delay:?}): {err}"
            );
        }
        assert_as_before(
            &before,
            busy.init,
            &format!("run {run} (killed after {delay:?})"),
        );
        let _ = std::fs::remove_file(&image);
    }
    eprintln!("{runs} runs: {killed} checkpoints killed, {completed} completed first");
    assert!(killed > 0, "no run was killed in time");
    busy.finish();
}

/// Ctrl-Z and fg on `crterm checkpoint` (SIGSTOP, SIGCONT while it waits for the answer):
/// it goes on waiting and reports the checkpoint, which completes.
#[test]
fn a_checkpoint_client_stopped_and_continued_still_reports_success() {
    let env = Env::unprivileged();
    python_pane(&env, "a", "stop");
    // A few hundred MiB that does not compress: the checkpoint takes a moment.
    enter(
        &env,
        "a",
        "import os; b = os.urandom(200 << 20); print('FILL' 'ED')",
    );
    env.tmux.wait_text("a", "FILLED", Duration::from_secs(60));
    let image = image_path(&env, "stop");
    // The client itself as the test's child (runuser in between would stop itself when
    // its child stops, and wait for a SIGCONT of its own).
    let child = env
        .crterm_direct(&["checkpoint", "stop", "-o", image.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    std::thread::sleep(Duration::from_millis(50));
    for _ in 0..3 {
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        std::thread::sleep(Duration::from_millis(100));
        unsafe { libc::kill(pid, libc::SIGCONT) };
        std::thread::sleep(Duration::from_millis(30));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("wrote "));
    crterm::image::read_file(&image).expect("a whole image");
    enter(&env, "a", "print('still', len(b) >> 20)");
    env.tmux.wait_text("a", "still 200", T);
}

/// A stream whose disk is full (/dev/full): the checkpoint fails naming the cause, and the
/// session goes on.
#[test]
fn a_full_disk_is_named_as_the_cause() {
    let env = Env::unprivileged();
    python_pane(&env, "a", "full");
    enter(&env, "a", "x = 'kept'");
    let mut cmd = env.command(&[&env.crterm_cmd(), "checkpoint", "full", "-o", "-"]);
    let out = cmd
        .stdout(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("writing the output stream: No space left on device")
            && err.lines().count() == 1,
        "{err}"
    );
    enter(&env, "a", "print(x.upper())");
    env.tmux.wait_text("a", "KEPT", T);
}

/// A file system that fills up while the image is written (a small tmpfs; mounting needs
/// root): the cause and the path are named, no temporary file is left, and the image that
/// was there stays.
#[test]
#[ignore = "needs root (mounts a small tmpfs); run by tests/run-all.sh as root"]
fn a_file_system_filling_up_names_the_cause_and_keeps_the_old_image() {
    let env = Env::unprivileged();
    let mnt = env.dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let (uid, gid) = user_ids(TEST_USER);
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o"])
        .arg(format!("size=1m,uid={uid},gid={gid},mode=0700"))
        .arg("tmpfs")
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).output();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let image = mnt.join("s.img");
    std::fs::write(&image, "the earlier image").unwrap();
    let _ = std::process::Command::new("chown")
        .arg(format!("{uid}:{gid}"))
        .arg(&image)
        .output();
    python_pane(&env, "a", "fs");
    enter(&env, "a", "import os; b = os.urandom(4 << 20)");
    let out = env.crterm(&["checkpoint", "fs", "-o", image.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "writing {}: No space left on device",
            image.display()
        )) && err.lines().count() == 1,
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&image).unwrap(),
        "the earlier image"
    );
    let left: Vec<_> = std::fs::read_dir(&mnt)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    enter(&env, "a", "print('alive', len(b))");
    env.tmux.wait_text("a", "alive 4194304", T);
}

/// `crterm ls | head -c0`-like readers that go away: the tools end quietly (by SIGPIPE,
/// as other command-line tools do), with no panic and nothing on standard error.
#[test]
fn listing_checking_and_showing_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let env = Env::unprivileged();
    let golden = env.dir.path().join("golden.img");
    rewrite_image(Path::new(GOLDEN_SESSION), &golden, |_, _| {});
    for args in [
        vec!["ls"],
        vec!["check"],
        vec!["info", golden.to_str().unwrap()],
        vec!["info", "--json", golden.to_str().unwrap()],
    ] {
        let (r, w) = {
            let mut fds = [0; 2];
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            unsafe {
                (
                    std::os::fd::OwnedFd::from_raw_fd(fds[0]),
                    std::os::fd::OwnedFd::from_raw_fd(fds[1]),
                )
            }
        };
        drop(r);
        // crterm itself, as the test user (runuser would say what killed its child).
        let out = env
            .crterm_direct(&args)
            .stdout(std::process::Stdio::from(w))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.is_empty(), "crterm {args:?}: {err}");
        assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "crterm {args:?}");
    }
}
use std::os::fd::FromRawFd;

/// `-o` naming something that is not a regular file (a FIFO, a socket, a directory, a
/// symbolic link) is refused by name before the session is frozen, and left as it was.
#[test]
fn an_output_that_is_not_a_regular_file_is_refused_and_left_alone() {
    let env = Env::unprivileged();
    python_pane(&env, "a", "out");
    let dir = env.dir.path();
    let fifo = dir.join("fifo.img");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
    let sock = dir.join("sock.img");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let subdir = dir.join("dir.img");
    std::fs::create_dir(&subdir).unwrap();
    let target = dir.join("target");
    std::fs::write(&target, "untouched").unwrap();
    let link = dir.join("link.img");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for p in [&fifo, &sock, &subdir] {
        let _ = std::process::Command::new("chmod")
            .arg("a+rwx")
            .arg(p)
            .output();
    }
    let cases = [
        (fifo.clone(), "a FIFO"),
        (sock.clone(), "a socket"),
        (subdir.clone(), "a directory"),
        (link.clone(), "a symbolic link"),
    ];
    for (path, kind) in &cases {
        let before = std::fs::symlink_metadata(path).unwrap();
        let out = env.crterm(&["checkpoint", "out", "-o", path.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}", path.display());
        assert!(
            err.contains(&format!(
                "{}: it exists and is {kind}, not a regular file",
                path.display()
            )) && err.lines().count() == 1,
            "{err}"
        );
        let after = std::fs::symlink_metadata(path).unwrap();
        assert_eq!(
            (before.ino(), before.mode(), before.rdev()),
            (after.ino(), after.mode(), after.rdev()),
            "{} was replaced",
            path.display()
        );
    }
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
    enter(&env, "a", "print('fine', 2 + 2)");
    env.tmux.wait_text("a", "fine 4", T);
}

/// A FIFO (or a directory) given as the image: `info`, `check` and `resume` refuse it at
/// once with one line, and `resume` leaves no daemon behind.
#[test]
fn an_image_that_is_not_a_regular_file_is_refused_at_once() {
    let env = Env::unprivileged();
    let fifo = env.dir.path().join("fifo.img");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
    let _ = std::process::Command::new("chmod")
        .arg("666")
        .arg(&fifo)
        .output();
    for args in [vec!["info"], vec!["check"]] {
        let start = std::time::Instant::now();
        let out = env.crterm(&[&args[..], &[fifo.to_str().unwrap()]].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "crterm {args:?} waited"
        );
        assert!(!out.status.success());
        assert!(
            err.contains("is a FIFO, not an image") && err.lines().count() == 1,
            "{err}"
        );
    }
    let wide = other_tmux(&env);
    resume_in(&env, &wide, "r", 250, 30, &fifo);
    let screen = wide.wait_text("r", "CRTERM_EXIT=", T);
    assert!(
        screen.contains("is a FIFO, not an image") && screen.contains("CRTERM_EXIT=1"),
        "{screen}"
    );
    assert!(env.sessions().is_empty(), "a daemon was left");
    let server: i32 = wide.display("r", "#{pid}").parse().unwrap();
    let left: Vec<String> = process_tree(server)
        .into_iter()
        .skip(1)
        .filter(|&p| !process_gone(p))
        .map(|p| std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default())
        .filter(|c| c.contains("crterm"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// As root, `-o /dev/null` (which the temporary file renamed into place would have
/// replaced with a file holding the session's memory) is refused, and /dev/null stays the
/// device it is.
#[test]
#[ignore = "needs root (a session of root's, writing where only root may); run by tests/run-all.sh as root"]
fn as_root_an_output_on_a_device_is_refused_and_the_device_stays() {
    let env = Env::root();
    python_pane(&env, "a", "dev");
    let before = std::fs::symlink_metadata("/dev/null").unwrap();
    let out = env.crterm(&["checkpoint", "dev", "-o", "/dev/null"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("/dev/null: it exists and is a character device, not a regular file")
            && err.lines().count() == 1,
        "{err}"
    );
    let after = std::fs::symlink_metadata("/dev/null").unwrap();
    assert!(after.file_type().is_char_device() == before.file_type().is_char_device());
    assert_eq!((before.ino(), before.rdev()), (after.ino(), after.rdev()));
    enter(&env, "a", "print('fine', 3 * 3)");
    env.tmux.wait_text("a", "fine 9", T);
}

/// Hostile images given to `crterm resume` in a terminal: a terminal model claiming more
/// lines than it has rows, a record whose pages point outside its process's memory, a page
/// chunk that does not decode (found by the resume on its way), one whose checksum does
/// not hold. Each fails with one line, and nothing of the session is left.
#[test]
fn hostile_images_resume_to_one_line_and_leave_nothing() {
    use crterm::image::{self, Codec, ImageWriter, SectionKind};
    let env = Env::unprivileged();
    let golden = image::read_file(Path::new(GOLDEN_SESSION)).unwrap();
    let term: crterm::term_model::Term = golden.meta(SectionKind::TERM_MODEL).unwrap();
    let record: crterm::records::SessionRecord = golden.meta(SectionKind::SESSION).unwrap();
    let build = |term: &crterm::term_model::Term,
                 record: &crterm::records::SessionRecord,
                 cut_pages: bool| {
        let mut w = ImageWriter::new(Vec::new(), &golden.info).unwrap();
        w.meta(SectionKind::TERM_MODEL, term).unwrap();
        for kind in [SectionKind::PAGES, SectionKind::FILES] {
            for i in 0..golden.stored_chunks(kind).count() {
                let data = golden.chunk(kind, i).unwrap();
                if kind == SectionKind::PAGES && cut_pages {
                    let mut z = zstd::bulk::compress(&data, 1).unwrap();
                    z.truncate(z.len() - 3);
                    w.raw_section(kind, Codec::Zstd, &z, data.len() as u64)
                        .unwrap();
                } else {
                    w.raw_section(kind, Codec::Raw, &data, data.len() as u64)
                        .unwrap();
                }
            }
        }
        w.meta(SectionKind::SESSION, record).unwrap();
        w.finish().unwrap()
    };
    let mut tall = term.clone();
    tall.lines = 50;
    let mut outside = record.clone();
    outside.page_runs[0].addr = 0x1000;
    // A byte of page data changed after the image was written: its chunk's checksum no
    // longer holds (an image this small is read and checked whole before anything
    // starts; a large one: the next test).
    let mut damaged = build(&term, &record, false);
    let page0 = golden.chunk(SectionKind::PAGES, 0).unwrap();
    let at = damaged
        .windows(page0.len())
        .position(|w| w == &page0[..])
        .expect("the page chunk, stored raw")
        + page0.len() / 2;
    damaged[at] ^= 0x55;
    let cases = [
        (
            "rows",
            build(&tall, &record, false),
            "the primary screen has 30 rows for 50 lines",
        ),
        (
            "runs",
            build(&term, &outside, false),
            "the session record: pages at 0x1000",
        ),
        ("chunk", build(&term, &record, true), "page chunk 0"),
        ("damaged", damaged, "checksum mismatch"),
    ];
    let wide = other_tmux(&env);
    for (name, bytes, want) in cases {
        let path = env.dir.path().join(format!("{name}.img"));
        std::fs::write(&path, bytes).unwrap();
        let _ = std::process::Command::new("chmod")
            .arg("644")
            .arg(&path)
            .output();
        resume_in(&env, &wide, name, 250, 30, &path);
        resume_failed_leaving_nothing(&env, &wide, name, |line| {
            line.starts_with("crterm: ") && line.contains(want)
        });
    }
}

/// The resume in pane `target` of `tmux` failed with one line (which `right` accepts) and
/// exit status 1, and left nothing: no session, no process but the pane's own.
fn resume_failed_leaving_nothing(
    env: &Env,
    tmux: &Tmux,
    target: &str,
    right: impl Fn(&str) -> bool,
) {
    let screen = tmux.wait_text(target, "CRTERM_EXIT=", T);
    let lines: Vec<&str> = screen.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines.len(),
        2,
        "{target}: one line, then the exit status: {screen}"
    );
    assert!(right(lines[0]), "{target}: {screen}");
    assert_eq!(lines[1], "CRTERM_EXIT=1", "{target}");
    assert!(env.sessions().is_empty(), "{target}: a session was left");
    let server: i32 = tmux.display(target, "#{pid}").parse().unwrap();
    wait_for("the failed resume's processes to be gone", T, || {
        process_tree(server)
            .into_iter()
            .skip(1)
            .filter(|&p| !process_gone(p))
            .all(|p| matches!(comm_of(p).as_str(), "sleep" | "bash" | "sh"))
            .then_some(())
    });
}

/// An image large enough to be mapped, whose page data changed on disk after it was
/// written: the resume checks each page chunk as it decodes it, on every core, while the
/// processes are being made (not the whole image first), so the damage is found with the
/// session half made. One line, and nothing of it is left.
#[test]
fn page_data_damaged_on_disk_fails_the_resume_midway_and_leaves_nothing() {
    use crterm::image::{self, SectionKind};
    let env = Env::unprivileged();
    python_pane(&env, "a", "pagesdmg");
    // 16 MiB of random bytes: stored raw, in a mapping large enough to be written
    // through the process's userfaultfd.
    enter(
        &env,
        "a",
        "import os; a = os.urandom(16 << 20); print('RE' + 'ADY')",
    );
    env.tmux.wait_text("a", "READY", T);
    let path = image_path(&env, "pagesdmg");
    checkpoint_and_end(&env, "pagesdmg", &path);
    let img = image::read_file(&path).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    // A raw chunk of the random bytes, found in the file by its first 4 KiB; a byte in
    // its middle flipped.
    let at = (0..img.stored_chunks(SectionKind::PAGES).count())
        .find_map(|i| {
            let data = img.chunk(SectionKind::PAGES, i).unwrap();
            let probe = &data[..4096.min(data.len())];
            (data.len() >= 1 << 20)
                .then(|| bytes.windows(probe.len()).position(|w| w == probe))
                .flatten()
                .map(|p| p + data.len() / 2)
        })
        .expect("a page chunk of the random bytes, stored raw");
    bytes[at] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    let wide = other_tmux(&env);
    resume_in(&env, &wide, "r", 250, 30, &path);
    resume_failed_leaving_nothing(&env, &wide, "r", |line| {
        line.starts_with("crterm: resume failed: the memory of process")
            && line.contains("page chunk")
            && line.contains("checksum mismatch")
    });
}
