//! Resuming somewhere else (issue 5): images that travel as streams, other machines.

use super::roundtrip::*;
use super::*;
use std::path::Path;

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
    run_in_repl(&env, "a", "x = 4242");
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
    run_in_repl(&env, "a", "y = 17");
    // The reader goes away after 64 KiB: the checkpoint fails, the session goes on.
    let (code, said) = checkpoint_into_pipe(&env, "cut", "head -c 65536 > /dev/null", "--exit");
    assert_ne!(code, 0);
    assert!(
        said.contains("checkpoint failed: writing the output stream") && said.contains("goes on"),
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
        assert!(said.contains(line), "{line}: {said}");
    }
    // A copy the test user can read.
    let golden = &env.dir.path().join("golden.img");
    rewrite_image(std::path::Path::new(GOLDEN_SESSION), golden, |_, _| {});
    let (code, said) = check(&env, &[golden.to_str().unwrap()]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("verdict      it will resume here"), "{said}");
    // The golden image's XSAVE layout is its CPU's: this one's or another (a CPU with
    // AMX has a larger one), whose registers a resume moves into this one's.
    let golden_record: crterm::records::SessionRecord = crterm::image::read_file(golden)
        .unwrap()
        .meta(crterm::image::SectionKind::SESSION)
        .unwrap();
    if golden_record.machine.xsave == crterm::machine::XsaveLayout::here() {
        assert!(said.contains("xsave        the same layout"), "{said}");
    } else {
        assert!(
            said.contains("xsave        another layout (")
                && said.contains("moved into this one's"),
            "{said}"
        );
    }

    // Made on a CPU with a feature this one lacks: refused, named, as resume would.
    let extra = a_feature_this_cpu_lacks();
    let richer = env.dir.path().join("richer.img");
    rewrite_image(golden, &richer, |info, record| {
        as_if_made_on_this_cpu_with(info, record, std::slice::from_ref(&extra))
    });
    let (code, said) = check(&env, &[richer.to_str().unwrap()]);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("it will not resume here"), "{said}");
    assert!(said.contains(&format!("this CPU lacks {extra}")), "{said}");

    // The same from a session started with --cpu baseline: x86-64-v2 is enough.
    let baseline = env.dir.path().join("baseline.img");
    rewrite_image(golden, &baseline, |info, record| {
        as_if_made_on_this_cpu_with(info, record, std::slice::from_ref(&extra));
        record.machine.cpu_baseline = true;
    });
    let (code, said) = check(&env, &[baseline.to_str().unwrap()]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("cpu baseline (x86-64-v2)"), "{said}");

    // Another kernel's vDSO layout: its entry points are redirected; without the old
    // vDSO's copy (an older image) there is nothing to redirect from: refused.
    let other_kernel = env.dir.path().join("kernel.img");
    let mut layout = String::new();
    rewrite_image(golden, &other_kernel, |_, record| {
        layout = as_if_on_another_kernel(record)
    });
    let (code, said) = check(&env, &[other_kernel.to_str().unwrap()]);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains(&format!("vdso         another kernel's ({layout}): its")),
        "{said}"
    );
    let no_copy = env.dir.path().join("no-copy.img");
    rewrite_image(golden, &no_copy, |_, record| {
        as_if_on_another_kernel(record);
        record.machine.vdso.clear();
    });
    let (code, said) = check(&env, &[no_copy.to_str().unwrap()]);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("another vDSO layout"), "{said}");
}

/// The image's vDSO regions laid out as another kernel lays them out, whatever this one
/// does: where this kernel has a `[vvar_vclock]` (Linux 6.13 and later), as Linux 6.1
/// does (Debian 12's kernel: `[vvar]` of 4 pages right before `[vdso]`, no
/// `[vvar_vclock]`); where it has none, its `[vvar]` split into `[vvar]` and a
/// `[vvar_vclock]` of 2 pages, as later kernels do (an image that has one already keeps
/// it). The `[vdso]` stays where it was.
/// Returns the layout it made, as `crterm check` describes it.
fn as_if_on_another_kernel(record: &mut crterm::records::SessionRecord) -> String {
    use crterm::machine::{describe_vdso, vdso_layout, vdso_layout_here};
    let here_has_vclock = vdso_layout_here().iter().any(|(n, _)| n == "[vvar_vclock]");
    let mut made = String::new();
    for p in &mut record.processes {
        let Some(vdso) = p.maps.iter().find(|m| m.path == "[vdso]").map(|m| m.start) else {
            continue;
        };
        if here_has_vclock {
            p.maps.retain(|m| m.path != "[vvar_vclock]");
            for m in p.maps.iter_mut().filter(|m| m.path == "[vvar]") {
                m.start = vdso - 4 * 4096;
                m.end = vdso;
            }
        } else if !p.maps.iter().any(|m| m.path == "[vvar_vclock]") {
            let at = p.maps.iter().position(|m| m.path == "[vvar]").unwrap();
            let vvar = p.maps[at].clone();
            assert!(
                vvar.end - vvar.start >= 3 * 4096,
                "a [vvar] of 3 pages or more"
            );
            let mut vclock = vvar.clone();
            vclock.path = "[vvar_vclock]".into();
            vclock.start = vvar.end - 2 * 4096;
            p.maps[at].end = vclock.start;
            p.maps.insert(at + 1, vclock);
        }
        made = describe_vdso(&vdso_layout(
            p.maps.iter().map(|m| (m.path.as_str(), m.start, m.end)),
        ));
    }
    assert_ne!(made, describe_vdso(&vdso_layout_here()));
    made
}

/// A session made on a kernel with another vDSO: this kernel's is mapped elsewhere and
/// the old one's entry points (where glibc keeps its pointers) jump to it. The clocks
/// work through it (the REPL's own `time.time()` and `time.monotonic()`, which call the
/// vDSO), and the resumed session checkpoints and resumes again.
#[test]
fn a_session_from_a_kernel_with_another_vdso_calls_this_ones_through_the_old_entry_points() {
    let env = Env::unprivileged();
    python_pane(&env, "a", "vd");
    enter(
        &env,
        "a",
        "import time, ctypes; vd = [l.split()[0] for l in open('/proc/self/maps') if '[vdso]' in l][0]; t0 = time.time()",
    );
    let image = image_path(&env, "vd");
    checkpoint_and_end(&env, "vd", &image);
    let moved = env.dir.path().join("vd-6.1.img");
    rewrite_image(&image, &moved, |_, record| {
        as_if_on_another_kernel(record);
    });
    resume_with(&env, &env.tmux, "b", (100, 30), "--name vd", &moved);
    env.tmux.wait_text("b", ">>> import time", T);
    enter(
        &env,
        "b",
        "now = [l.split()[0] for l in open('/proc/self/maps') if '[vdso]' in l][0]; print('moved', now != vd)",
    );
    env.tmux.wait_text("b", "moved True", T);
    // glibc's pointer to clock_gettime is into the old vDSO: a call goes through it.
    enter(
        &env,
        "b",
        "a = time.monotonic(); time.sleep(0.2); b = time.monotonic(); print('clocks', 0.15 < b - a < 5, abs(time.time() - t0) < 600)",
    );
    env.tmux.wait_text("b", "clocks True True", T);
    let again = image_path(&env, "vd-again");
    checkpoint_and_end(&env, "vd", &again);
    resume_pane(&env, "c", 100, 30, &again);
    env.tmux.wait_text("c", ">>> import time", T);
    enter(&env, "c", "print('still', time.monotonic() > b)");
    env.tmux.wait_text("c", "still True", T);
    end_with_ctrl_d(&env, "c");
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

/// Made on a CPU with AMX (or whatever instruction set glibc does not pick code by that
/// this CPU lacks) that no process asked for: nothing of the session could have acted on
/// it, so `check` and resume go on with a warning naming it; `--strict-cpu` refuses.
#[test]
fn features_no_process_could_have_used_give_a_warning_not_a_refusal() {
    let env = Env::unprivileged();
    let unused = a_feature_no_program_used();
    let mut extra = vec![unused.clone()];
    // AMX as a whole where this CPU lacks it: what an image from a Sapphire Rapids has.
    let here = crterm::image::ImageInfo::here().cpu_features;
    for f in ["amx_tile", "amx_bf16", "amx_int8"] {
        if !here.iter().any(|g| g == f) && !extra.iter().any(|g| g == f) {
            extra.push(f.to_string());
        }
    }
    let image = env.dir.path().join("amx.img");
    rewrite_image(
        std::path::Path::new(GOLDEN_SESSION),
        &image,
        |info, record| {
            as_if_made_on_this_cpu_with(info, record, &extra);
            for p in &mut record.processes {
                assert_eq!(
                    p.xcomp_perm & crterm::machine::XSAVE_DYNAMIC,
                    0,
                    "nothing asked for AMX"
                );
            }
        },
    );
    let (code, said) = check(&env, &[image.to_str().unwrap()]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("verdict      it will resume here"), "{said}");
    assert!(
        said.contains("warning") && said.contains(&format!("this CPU lacks {}", extra.join(", "))),
        "{said}"
    );
    let (code, said) = check(&env, &["--strict-cpu", image.to_str().unwrap()]);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains(&unused), "{said}");
    // Resumed: the warning is shown, and the program goes on.
    resume_pane(&env, "r", 100, 30, &image);
    env.tmux
        .wait_text("r", &format!("this CPU lacks {unused}"), T);
    env.tmux.type_text("r", "warned");
    env.tmux.send_keys("r", &["Enter"]);
    env.tmux.wait_text("r", "golden session resumed: warned", T);
    // And with --strict-cpu, one line and nothing started.
    let wide = other_tmux(&env);
    resume_with(&env, &wide, "s", (250, 30), "--strict-cpu", &image);
    let screen = wide.wait_text("s", "CRTERM_EXIT=", T);
    assert!(
        screen.starts_with("crterm: ") && screen.contains("this CPU lacks"),
        "{screen}"
    );
    assert!(screen.contains("CRTERM_EXIT=1"), "{screen}");
}

/// Register state this CPU cannot hold: a thread's XSAVE area holding a component this
/// CPU's XSAVE lacks, or (on a CPU without AMX) a process that was permitted AMX: its
/// state, or its use of AMX, would be lost, so `check` and resume refuse, naming it.
#[test]
fn register_state_this_cpu_cannot_hold_is_refused() {
    let env = Env::unprivileged();
    let xcr0 = crterm::machine::XsaveLayout::here().xcr0;
    let (image, named) = if xcr0 & crterm::machine::XSAVE_DYNAMIC == 0 {
        let image = env.dir.path().join("amx-permitted.img");
        rewrite_image(
            std::path::Path::new(GOLDEN_SESSION),
            &image,
            |info, record| {
                as_if_made_on_this_cpu_with(info, record, &["amx_tile".to_string()]);
                record.processes[0].xcomp_perm |= crterm::machine::XSAVE_DYNAMIC;
            },
        );
        (image, "amx-tiledata")
    } else {
        // A component no XCR0 has (11: CET user state is supervisor-managed).
        let bit = (2u8..63)
            .find(|&i| xcr0 & (1 << i) == 0)
            .expect("a component XCR0 lacks");
        let image = env.dir.path().join("state.img");
        rewrite_image(std::path::Path::new(GOLDEN_SESSION), &image, |_, record| {
            let th = &mut record.processes[0].threads[0];
            let mut bv = u64::from_le_bytes(th.xstate[512..520].try_into().unwrap());
            bv |= 1 << bit;
            th.xstate[512..520].copy_from_slice(&bv.to_le_bytes());
        });
        (image, "XSAVE lacks")
    };
    let (code, said) = check(&env, &[image.to_str().unwrap()]);
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("it will not resume here") && said.contains(named),
        "{said}"
    );
    let wide = other_tmux(&env);
    resume_in(&env, &wide, "r", 250, 30, &image);
    let screen = wide.wait_text("r", "CRTERM_EXIT=", T);
    assert!(
        screen.contains(named) && screen.contains("CRTERM_EXIT=1"),
        "{screen}"
    );
    assert!(env.sessions().is_empty());
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
        "h=$(/lib64/ld-linux-x86-64.so.2 --help); echo levels $(echo \"$h\" | grep -c 'x86-64-v[34] (supported') $(echo \"$h\" | grep -c 'x86-64-v2 (supported') $(/lib64/ld-linux-x86-64.so.2 --list-diagnostics | grep -c 'AVX_Fast_Unaligned_Load=0x1'); python3 -q",
    );
    env.tmux.wait_text("a", ">>>", T);
    let screen = env.tmux.capture_plain("a");
    assert!(
        // Only x86-64-v2 libraries searched, and no AVX string functions chosen (their
        // `_rtm` kind needs RTM, which emulated CPUs lack: found in the guest).
        screen.contains("\nlevels 0 1 0\n"),
        "only x86-64-v2 searched: {screen}"
    );
    run_in_repl(&env, "a", "word = 'baseline'");
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
        as_if_made_on_this_cpu_with(info, record, std::slice::from_ref(&extra));
        record.machine.cpu_baseline = true;
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

/// The open-file policy, row by row: a file there and unchanged is opened; a missing file
/// small enough to be carried (`--carry-files`) is made again at its path, with its mode,
/// and read on from its offset; a file deleted while open comes back deleted, with its
/// content; a missing file that was not carried is refused by name,
/// and nothing is made (not even the files that could be); `--force` goes on with what
/// is possible, and the table resume shows says what was done.
fn open_files_follow_the_policy(env: &Env, name: &str) {
    let dir = env.dir.path().join(format!("files-{name}"));
    let setup = format!(
        "mkdir {d} && cd {d} && printf 'line one\\nline two\\nline three\\n' > small.txt && chmod 640 small.txt && head -c 4096 /dev/zero > big.txt && echo log > log.txt && echo kept > gone.txt",
        d = dir.display()
    );
    assert!(env.run(&["sh", "-c", &setup], None).status.success());
    bash_pane(env, "a", name);
    enter(
        env,
        "a",
        &format!(
            "cd {} && exec 3<>small.txt 4<big.txt 5>>log.txt 6<gone.txt && rm gone.txt && read -u 3 l && echo \"got $l\"",
            dir.display()
        ),
    );
    env.tmux.wait_text("a", "got line one", T);
    let checkpoint = |image: &Path| {
        let out = env.crterm(&[
            "checkpoint",
            name,
            "-o",
            image.to_str().unwrap(),
            "--exit",
            "--carry-files",
            "1K",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_for("the session to end", T, || {
            env.sessions().is_empty().then_some(())
        });
    };
    let first = image_path(env, &format!("{name}-1"));
    checkpoint(&first);

    // Missing and carried: made again, read on from where it was.
    std::fs::remove_file(dir.join("small.txt")).unwrap();
    resume_with(
        env,
        &env.tmux,
        "b",
        (100, 30),
        &format!("--name {name}"),
        &first,
    );
    env.tmux.wait_text(
        "b",
        "open files: 2 opened as they were, 2 made again from the image, 0 forced",
        T,
    );
    env.tmux.wait_text("b", "made again  ", T);
    enter(
        env,
        "b",
        "read -u 3 l; echo \"next $l\"; stat -c 'mode %a' small.txt; cat <&6; ls -l /proc/$$/fd/6 | grep -o 'gone.txt (deleted)'",
    );
    env.tmux.wait_text("b", "next line two", T);
    env.tmux.wait_text("b", "mode 640", T);
    env.tmux.wait_text("b", "\nkept\n", T);
    env.tmux.wait_text("b", "gone.txt (deleted)", T);
    assert!(!dir.join("gone.txt").exists(), "it comes back deleted");
    let second = image_path(env, &format!("{name}-2"));
    checkpoint(&second);

    // Missing and not carried (4 KiB, over 1K): refused by name, nothing made.
    std::fs::remove_file(dir.join("small.txt")).unwrap();
    std::fs::remove_file(dir.join("big.txt")).unwrap();
    std::fs::write(dir.join("log.txt"), "log\nchanged elsewhere\n").unwrap();
    // `check` says what resume will say.
    let (code, said) = check(env, &[second.to_str().unwrap()]);
    assert!(
        code == 1 && said.contains("big.txt is missing here, and the image holds no copy of it"),
        "{said}"
    );
    resume_pane(env, "c", 100, 30, &second);
    let screen = env.tmux.wait_text("c", "CRTERM_EXIT=1", T);
    // Wrapped at the pane's width wherever the path's length puts it.
    let squeezed = |s: &str| s.split_whitespace().collect::<String>();
    assert!(
        squeezed(&screen).contains(&squeezed(
            "big.txt is missing here, and the image holds no copy of it"
        )),
        "{screen}"
    );
    assert!(
        !dir.join("small.txt").exists(),
        "a refused resume makes no file"
    );
    assert!(env.sessions().is_empty());

    // --force: what can be made is, the rest is said.
    resume_with(env, &env.tmux, "d", (120, 30), "--force", &second);
    // Rows wrap at the pane's width wherever the paths' lengths put them.
    let screen = wait_for("the open files table", T, || {
        let screen = env.tmux.capture_plain("d");
        let flat = squeezed(&screen);
        [
            "open files: 0 opened as they were, 2 made again from the image, 2 forced",
            "log.txt: changed since the checkpoint; opened as it is",
            "big.txt: is missing here and not in the image; /dev/null in its place",
            "made again",
        ]
        .iter()
        .all(|row| flat.contains(&squeezed(row)))
        .then_some(screen)
    });
    assert!(!screen.contains("CRTERM_EXIT"), "{screen}");
    enter(
        env,
        "d",
        "read -u 3 l; echo \"then $l\"; readlink /proc/$$/fd/4",
    );
    env.tmux.wait_text("d", "then line three", T);
    env.tmux.wait_text("d", "\n/dev/null", T);
    enter(env, "d", "exit");
    env.tmux.wait_text("d", "CRTERM_EXIT=0", T);
}

#[test]
fn open_files_follow_the_policy_as_a_user() {
    open_files_follow_the_policy(&Env::unprivileged(), "fpu");
}

#[test]
#[ignore = "needs root (the path without a user namespace); run by tests/run-all.sh as root"]
fn open_files_follow_the_policy_as_root() {
    let env = Env::root();
    open_files_follow_the_policy(&env, "fpr");
}

/// The other Debian release's root filesystem `tests/run-all.sh` builds (trixie: another
/// glibc, vim, python and screen than this machine's bookworm).
fn other_root() -> std::path::PathBuf {
    let root = std::env::var_os("CRTERM_OTHER_ROOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/var/tmp/crterm-test-cache/trixie".into());
    assert!(
        root.join("usr/bin/screen").exists(),
        "no other root filesystem at {} (tests/run-all.sh builds it, as root)",
        root.display()
    );
    root
}

/// A shell command that runs `cmd` chrooted into the other root, in a mount namespace of
/// its own where the root is a mount point with this machine's /dev, /proc and /tmp (the
/// test's files, its crterm and its images live in /tmp, as a home directory would on the
/// other machine).
fn in_other_root(cmd: &str) -> String {
    let r = other_root();
    let r = r.display();
    format!(
        "unshare -m --propagation private sh -c 'mount --bind {r} {r} && mount --rbind /dev {r}/dev && mount --rbind /proc {r}/proc && mount --rbind /tmp {r}/tmp && exec /usr/sbin/chroot {r} sh -c \"{cmd}\"'"
    )
}

/// `crterm resume IMAGE` inside the other root, in pane `target`.
fn resume_in_other_root(env: &Env, target: &str, image: &Path) {
    env.tmux.start(
        target,
        100,
        30,
        &in_other_root(&format!(
            "{} resume {}; echo CRTERM_EXIT=\\$?; sleep 600",
            env.crterm_cmd(),
            image.display()
        )),
    );
}

#[test]
#[ignore = "needs root (chroot into another Debian root); run by tests/run-all.sh as root"]
fn vim_resumes_inside_another_debian_release() {
    let env = Env::root();
    let file = env.dir.path().join("bookworm.txt");
    env.pane(
        "a",
        &format!(
            "{} start --name ov -- vim -u NONE -N -i NONE -n {}",
            env.crterm_cmd(),
            file.display()
        ),
    );
    env.tmux.wait_text("a", "bookworm.txt", T);
    env.tmux.type_text("a", "ihello from bookworm");
    env.tmux.wait_text("a", "-- INSERT --", T);
    let image = image_path(&env, "ov");
    checkpoint_and_end(&env, "ov", &image);
    // There, the programs' own files are not: they come from the image.
    let out = std::process::Command::new("sh")
        .args([
            "-c",
            &in_other_root(&format!("{} check {}", env.crterm_cmd(), image.display())),
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("verdict      it will resume here"), "{said}");
    let from_image: usize = said
        .lines()
        .find_map(|l| {
            l.strip_prefix("files        ")?
                .split(", ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .expect("a files line");
    assert!(
        from_image >= 5,
        "vim and its libraries from the image: {said}"
    );

    resume_in_other_root(&env, "b", &image);
    env.tmux.wait_text("b", "hello from bookworm", T);
    env.tmux.type_text("b", " and trixie");
    env.tmux.send_keys("b", &["Escape"]);
    env.tmux.type_text("b", ":wq");
    env.tmux.send_keys("b", &["Enter"]);
    env.tmux.wait_text("b", "CRTERM_EXIT=0", T);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "hello from bookworm and trixie\n"
    );
}

#[test]
#[ignore = "needs root (chroot into another Debian root); run by tests/run-all.sh as root"]
fn a_python_repl_resumes_inside_another_debian_release() {
    let env = Env::root();
    python_pane(&env, "a", "op");
    enter(&env, "a", "import sys, os; v = sys.version.split()[0]");
    let image = image_path(&env, "op");
    checkpoint_and_end(&env, "op", &image);
    resume_in_other_root(&env, "b", &image);
    env.tmux.wait_text("b", ">>> import sys", T);
    let file = env.dir.path().join("python.txt");
    enter(
        &env,
        "b",
        &format!(
            "open('{}', 'w').write(v + ' ' + open('/etc/debian_version').read().split('.')[0])",
            file.display()
        ),
    );
    enter(&env, "b", "print('saved')");
    env.tmux.wait_text("b", "\nsaved", T);
    // The REPL is this machine's python; the files it sees are the other root's.
    let ours = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import sys; print(sys.version.split()[0])"])
        .output()
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        format!("{} 13", String::from_utf8_lossy(&ours.stdout).trim())
    );
    end_with_ctrl_d(&env, "b");
}

#[test]
#[ignore = "needs root (chroot into another Debian root); run by tests/run-all.sh as root"]
fn screen_with_two_windows_resumes_inside_another_debian_release() {
    use super::world::{fill_screen, screen_setup, use_both_windows_and_end};
    let env = Env::root();
    let file = env.dir.path().join("screen-trixie.txt");
    let (screendir, rc) = screen_setup(&env, &file);
    env.pane(
        "a",
        &format!(
            "{screendir} {} start --name os -- screen -S t -c {}",
            env.crterm_cmd(),
            rc.display()
        ),
    );
    fill_screen(&env.tmux, "a", "hello from screen");
    let image = image_path(&env, "os");
    checkpoint_and_end(&env, "os", &image);
    resume_in_other_root(&env, "b", &image);
    env.tmux.wait_text("b", "hello from screen", T);
    use_both_windows_and_end(&env.tmux, "b", " in trixie");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "hello from screen in trixie\n"
    );
}

/// The other machine `tests/guest/build.sh` builds (run by `tests/run-all.sh`): Debian
/// 12's Linux 6.1 and an initramfs that runs a script of the test's chrooted into this
/// machine's root (read-only over 9p) with the test's directory writable.
fn guest_kernel() -> std::path::PathBuf {
    let dir = std::env::var_os("CRTERM_GUEST")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/var/tmp/crterm-test-cache/guest".into());
    assert!(
        dir.join("vmlinuz").exists() && dir.join("initrd.gz").exists(),
        "no guest kernel at {} (tests/run-all.sh builds it, as root)",
        dir.display()
    );
    dir
}

/// Boot the guest under QEMU's emulator (`-cpu max`: no AVX-512, another XSAVE layout;
/// KVM cannot run a stock kernel on these machines) and run `script` there; what it
/// printed (`share/guest.log`).
fn run_in_guest(share: &Path, script: &str) -> String {
    let guest = guest_kernel();
    std::fs::write(share.join("run.sh"), script).unwrap();
    let out = std::process::Command::new("timeout")
        .arg("1200")
        .arg("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "2048"])
        .args(["-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(guest.join("vmlinuz"))
        .arg("-initrd")
        .arg(guest.join("initrd.gz"))
        .arg("-append")
        .arg(format!(
            "console=ttyS0 quiet panic=-1 guest_script={} guest_share={}",
            share.join("run.sh").display(),
            share.display()
        ))
        .arg("-virtfs")
        .arg("local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap,id=hostroot")
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=share,security_model=none,id=share",
            share.display()
        ))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("qemu-system-x86_64");
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(
        console.contains("@@ guest done"),
        "the guest did not finish: {console}"
    );
    std::fs::read_to_string(share.join("guest.log")).unwrap_or_default()
}

/// The issue's other machine: Linux 6.1 (another vDSO layout) on an emulated CPU without
/// AVX-512 (another XSAVE layout). A session made here as usual is refused there, with
/// the CPU line; sessions made with `crterm start --cpu baseline` (vim, a python REPL)
/// resume there, driven through the guest's own ptys: the REPL's variables, wall clock
/// and monotonic clock are right, vim edits and saves.
#[test]
#[ignore = "needs root (a guest machine whose root is this one's over 9p, chrooted); run by tests/run-all.sh as root"]
fn sessions_resume_on_another_kernel_and_cpu_in_an_emulated_machine() {
    let env = Env::root();
    let share = env.dir.path().join("guest");
    std::fs::create_dir(&share).unwrap();
    let notes = share.join("notes.txt");

    // Made here, with glibc held to x86-64-v2.
    env.pane(
        "v",
        &format!(
            "{} start --cpu baseline --name gv -- vim -u NONE -N -i NONE -n {}",
            env.crterm_cmd(),
            notes.display()
        ),
    );
    env.tmux.wait_text("v", "notes.txt", T);
    env.tmux.type_text("v", "ihello from the host");
    env.tmux.wait_text("v", "-- INSERT --", T);
    checkpoint_and_end(&env, "gv", &share.join("vim.img"));
    env.pane(
        "p",
        &format!(
            "{} start --cpu baseline --name gp -- python3 -q",
            env.crterm_cmd()
        ),
    );
    env.tmux.wait_text("p", ">>>", T);
    enter(
        &env,
        "p",
        "import time; x = 4242; t0 = time.time(); m0 = time.monotonic()",
    );
    checkpoint_and_end(&env, "gp", &share.join("py.img"));
    // Made here as usual: this CPU's features may be in use.
    python_pane(&env, "o", "go");
    checkpoint_and_end(&env, "go", &share.join("plain.img"));

    // The guest has an empty /tmp of its own but for the share: crterm and the driver
    // go there too (the repository itself may be under /tmp).
    std::fs::copy(&env.bin, share.join("crterm")).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/guest/drive.py"),
        share.join("drive.py"),
    )
    .unwrap();
    let crterm = share.join("crterm").display().to_string();
    let resume = |image: &str| {
        serde_json::json!([crterm, "resume", share.join(image).display().to_string()])
    };
    let cases = serde_json::json!([
        {"name": "plain", "argv": resume("plain.img"), "steps": [
            ["expect", "this CPU lacks"], ["exit", "1"]]},
        {"name": "python", "argv": resume("py.img"), "steps": [
            ["expect", ">>> "],
            ["send", "print('x', x + 1, abs(time.time() - t0) < 3600, time.monotonic() >= m0)\r"],
            ["expect", "x 4243 True True"],
            ["send", "import os; print('on', os.uname().release)\r"],
            ["expect", "on 6.1."],
            ["send", "\u{4}"], ["exit", "0"]]},
        {"name": "vim", "argv": resume("vim.img"), "steps": [
            ["expect", "INSERT"],
            ["send", " and the guest\u{1b}"],
            ["send", ":wq\r"], ["exit", "0"]]},
    ]);
    std::fs::write(share.join("cases.json"), cases.to_string()).unwrap();
    let script = format!(
        "mkdir -m 700 /run/crterm && export XDG_RUNTIME_DIR=/run/crterm XDG_DATA_HOME=/run/data HOME=/run\nuname -r\n{crterm} check\nexec /usr/bin/python3 {} {}\n",
        share.join("drive.py").display(),
        share.join("cases.json").display()
    );
    let log = run_in_guest(&share, &script);
    assert!(log.starts_with("6.1."), "{log}");
    for case in ["ok plain", "ok python", "ok vim"] {
        assert!(log.contains(case), "{case}: {log}");
    }
    assert_eq!(
        std::fs::read_to_string(&notes).unwrap(),
        "hello from the host and the guest\n"
    );
}
