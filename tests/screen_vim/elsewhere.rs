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
    wait_for("the session to end", T, || {
        env.sessions().is_empty().then_some(())
    });
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

/// `crterm check ARGS` as this env's user: (exit status, standard output).
fn check(env: &Env, args: &[&str]) -> (i32, String) {
    let out = env.crterm(&[&["check"][..], args].concat());
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn check_reports_this_machine_and_whether_an_image_resumes_here() {
    let env = Env::unprivileged();
    let (code, said) = check(&env, &[]);
    assert_eq!(code, 0, "{said}");
    for line in [
        "namespaces   yes (user, pid, mount, IPC, UTS)",
        "time ns      yes",
        "pidfd_getfd  yes",
        "sock_diag    yes",
        "[vdso] 2 pages",
    ] {
        assert!(said.contains(line) || is_root(), "{line}: {said}");
    }
    // A copy the test user can read.
    let golden = &env.dir.path().join("golden.img");
    rewrite_image(std::path::Path::new(GOLDEN_SESSION), golden, |_, _| {});
    let (code, said) = check(&env, &[golden.to_str().unwrap()]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("verdict      it will resume here"), "{said}");
    assert!(said.contains("xsave        the same layout"), "{said}");

    // Made on a CPU with a feature this one lacks: refused, named, as resume would.
    let extra = a_feature_this_cpu_lacks();
    let richer = env.dir.path().join("richer.img");
    rewrite_image(golden, &richer, |info, _| {
        info.cpu_features.push(extra.clone())
    });
    let (code, said) = check(&env, &[richer.to_str().unwrap()]);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("it will not resume here"), "{said}");
    assert!(said.contains(&format!("this CPU lacks {extra}")), "{said}");

    // The same from a session started with --cpu baseline: x86-64-v2 is enough.
    let baseline = env.dir.path().join("baseline.img");
    rewrite_image(golden, &baseline, |info, record| {
        info.cpu_features.push(extra.clone());
        record.machine.cpu_baseline = true;
    });
    let (code, said) = check(&env, &[baseline.to_str().unwrap()]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("cpu baseline (x86-64-v2)"), "{said}");

    // Another kernel's vDSO layout: refused, both layouts named.
    let other_kernel = env.dir.path().join("kernel.img");
    rewrite_image(golden, &other_kernel, |_, record| {
        for p in &mut record.processes {
            p.maps.retain(|m| m.path != "[vvar_vclock]");
        }
    });
    let (code, said) = check(&env, &[other_kernel.to_str().unwrap()]);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("another vDSO layout"), "{said}");
}

/// The golden session's registers as a CPU with another XSAVE layout would have saved
/// them (only x87, SSE and AVX, AVX packed where this CPU has it, the area ending there):
/// `crterm check` says they will be moved, and the resume puts them into this CPU's
/// layout, which the kernel takes.
#[test]
fn registers_saved_in_another_cpus_xsave_layout_are_moved_into_this_ones() {
    use crterm::machine::XsaveLayout;
    let env = Env::unprivileged();
    let here = XsaveLayout::here();
    let other = XsaveLayout {
        xcr0: here.xcr0 & 0x7,
        size: 832,
        components: here
            .components
            .iter()
            .copied()
            .filter(|c| c.0 == 2)
            .collect(),
    };
    assert_ne!(other, here);
    let image = env.dir.path().join("other-cpu.img");
    rewrite_image(std::path::Path::new(GOLDEN_SESSION), &image, |_, record| {
        for th in record.processes.iter_mut().flat_map(|p| &mut p.threads) {
            th.xstate = here.convert(&other, &th.xstate);
            assert_eq!(th.xstate.len(), 832);
        }
        record.machine.xsave = other.clone();
    });
    let (code, said) = check(&env, &[image.to_str().unwrap()]);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains("another layout (832 bytes: x87 sse avx)"),
        "{said}"
    );
    resume_pane(&env, "r", 100, 30, &image);
    env.tmux.wait_text("r", "type a line", T);
    env.tmux.type_text("r", "moved");
    env.tmux.send_keys("r", &["Enter"]);
    env.tmux.wait_text("r", "golden session resumed: moved", T);
}

/// `crterm start --cpu baseline`: glibc in the session picks x86-64-v2 code (its own
/// report of the glibc-hwcaps levels), the image says so, and it resumes where an
/// ordinary image would be refused for a missing feature.
#[test]
fn a_baseline_session_uses_x86_64_v2_code_and_resumes_without_the_newer_features() {
    let env = Env::unprivileged();
    env.pane(
        "a",
        &format!(
            "{} start --cpu baseline --name base -- bash --norc",
            env.crterm_cmd()
        ),
    );
    env.tmux.wait_text("a", "bash-", T);
    enter(
        &env,
        "a",
        "h=$(/lib64/ld-linux-x86-64.so.2 --help); echo levels $(echo \"$h\" | grep -c 'x86-64-v[34] (supported') $(echo \"$h\" | grep -c 'x86-64-v2 (supported'); python3 -q",
    );
    env.tmux.wait_text("a", ">>>", T);
    let screen = env.tmux.capture_plain("a");
    assert!(
        screen.contains("\nlevels 0 1\n"),
        "only x86-64-v2 searched: {screen}"
    );
    enter(&env, "a", "word = 'baseline'");
    let image = image_path(&env, "base");
    checkpoint_and_end(&env, "base", &image);
    // As if made on a CPU with a feature this one lacks.
    let extra = a_feature_this_cpu_lacks();
    let richer = env.dir.path().join("base-richer.img");
    rewrite_image(&image, &richer, |info, record| {
        assert!(
            record.machine.cpu_baseline,
            "the image records the baseline"
        );
        info.cpu_features.push(extra.clone());
    });
    resume_pane(&env, "b", 100, 30, &richer);
    env.tmux.wait_text("b", ">>> word = 'baseline'", T);
    enter(&env, "b", "print(word.upper())");
    env.tmux.wait_text("b", "BASELINE", T);
    enter(
        &env,
        "b",
        "import os; print(os.environ['GLIBC_TUNABLES'].startswith('glibc.cpu.hwcaps=-XSAVEC'))",
    );
    env.tmux.wait_text("b", "True", T);
}

/// The session has a UTS namespace of its own: the host name its programs saw (here: as
/// if it was made on a machine of another name) stays theirs after a resume; `--hostname
/// real` gives this machine's. The host's own name is never touched.
#[test]
fn the_session_keeps_its_host_name_unless_resumed_with_hostname_real() {
    let env = Env::unprivileged();
    let hostname = || {
        String::from_utf8(
            std::process::Command::new("hostname")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .to_string()
    };
    let real = hostname();
    bash_pane(&env, "a", "uts");
    let image = image_path(&env, "uts");
    checkpoint_and_end(&env, "uts", &image);
    let moved = env.dir.path().join("uts-elsewhere.img");
    rewrite_image(&image, &moved, |_, record| {
        assert_eq!(record.machine.hostname, real, "the name the session saw");
        record.machine.hostname = "elsewhere-host".into();
    });
    resume_pane(&env, "b", 100, 30, &moved);
    env.tmux.wait_text("b", "bash-", T);
    enter(&env, "b", "echo name=$(hostname)");
    env.tmux.wait_text("b", "name=elsewhere-host", T);
    enter(&env, "b", "exit");
    env.tmux.wait_text("b", "CRTERM_EXIT=0", T);
    assert_eq!(hostname(), real, "the host's name is untouched");
    resume_with(&env, &env.tmux, "c", (100, 30), "--hostname real", &moved);
    env.tmux.wait_text("c", "bash-", T);
    enter(&env, "c", "echo name=$(hostname)");
    env.tmux.wait_text("c", &format!("name={real}"), T);
    enter(&env, "c", "exit");
    env.tmux.wait_text("c", "CRTERM_EXIT=0", T);
}
