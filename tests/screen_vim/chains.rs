//! Incremental checkpoints (issue 14): chains of images, each resumed and checked byte for
//! byte, a chain missing a parent refused, and a chain compacted into one image.

use super::roundtrip::*;
use super::*;

/// The digest python prints after `tag`: the first 24 hex digits of the buffer's SHA-256.
fn digest(env: &Env, target: &str, tag: &str) -> String {
    enter(
        env,
        target,
        &format!("print('{}' + 'X', hashlib.sha256(b).hexdigest()[:24])", tag),
    );
    sum_after(env, target, &format!("{tag}X "))
}

user_and_root! {
    /// A python session holding 16 MiB of random bytes is checkpointed 20 times into one
    /// path, with random pages written (some to zeros, some freed and made again) in
    /// between. The first image is whole; the others hold little and name their parent.
    /// Each generation, resumed, has the bytes it had. With its parent removed a
    /// generation is refused in one line, and a compacted copy stands alone.
    fn twenty_incremental_checkpoints_each_resume_byte_for_byte(env, tag) {
        let name = format!("chain{tag}");
        python_pane(&env, "a", &name);
        enter(
            &env,
            "a",
            "import os, hashlib, random; b = bytearray(os.urandom(16 << 20)); r = random.Random(7); keep = []",
        );
        // Write n random places, a page of zeros, and a fresh buffer of 1 MiB that
        // replaces an older one (memory freed and mapped again).
        enter(
            &env,
            "a",
            "exec('def m(n):\\n for _ in range(n):\\n  p = r.randrange(len(b) - 8); b[p:p + 8] = os.urandom(8)\\n z = r.randrange(4096) * 4096; b[z:z + 4096] = bytes(4096)\\n keep.append(bytearray(os.urandom(1 << 20))); keep[:] = keep[-3:]')",
        );
        let image = image_path(&env, &name);
        let mut digests = Vec::new();
        let mut sizes = Vec::new();
        for g in 0..20 {
            // Generation 10 writes in thousands of places (more runs than one scan of
            // the kernel's returns at a time by default).
            enter(&env, "a", if g == 10 { "m(3000)" } else { "m(40)" });
            let d = digest(&env, "a", &format!("G{g}"));
            // Every third with a pre-copy of what was written since the parent.
            let precopy = if g % 3 == 2 { "always" } else { "auto" };
            let out = env.crterm(&[
                "checkpoint",
                &name,
                "-o",
                image.to_str().unwrap(),
                "--precopy",
                precopy,
            ]);
            assert!(
                out.status.success(),
                "generation {g}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let generation = env.dir.path().join(format!("gen{g}.img"));
            std::fs::hard_link(&image, &generation).unwrap();
            sizes.push(std::fs::metadata(&generation).unwrap().len());
            digests.push(d);
        }
        // The first is whole (16 MiB of random bytes); the others hold about what was
        // written (40 places, a page, 1 MiB of new random bytes).
        assert!(sizes[0] > 16 << 20, "{sizes:?}");
        for (g, &s) in sizes.iter().enumerate().skip(1) {
            let most = if g == 10 { 14 << 20 } else { 4 << 20 };
            assert!(s < most, "generation {g} is {s} bytes: {sizes:?}");
        }
        let info = env.crterm(&["info", env.dir.path().join("gen19.img").to_str().unwrap()]);
        let info = String::from_utf8_lossy(&info.stdout).to_string();
        assert!(info.contains("19 images before it"), "{info}");
        exit_repl(&env, "a");
        env.tmux.wait_dead("a", T);
        for (g, want) in digests.iter().enumerate() {
            let generation = env.dir.path().join(format!("gen{g}.img"));
            let pane = format!("r{g}");
            // As root every other generation is resumed lazily: its pages served from
            // the chain's images on first touch.
            let how = if env.user.is_none() && g % 2 == 1 { "--lazy" } else { "" };
            resume_with(&env, &env.tmux, &pane, (80, 24), how, &generation);
            env.tmux.wait_text(&pane, &format!("G{g}X"), T);
            assert_eq!(&digest(&env, &pane, &format!("R{g}")), want, "generation {g}");
            exit_repl(&env, &pane);
            env.tmux.wait_text(&pane, "CRTERM_EXIT=0", T);
        }
        // Compacted: one image, which resumes alone.
        let gen10 = env.dir.path().join("gen10.img");
        let compact = env.dir.path().join("compact.img");
        let out = env.crterm(&["compact", gen10.to_str().unwrap(), "-o", compact.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let info = env.crterm(&["info", compact.to_str().unwrap()]);
        let info = String::from_utf8_lossy(&info.stdout).to_string();
        assert!(!info.contains("images before it"), "{info}");
        // Its parent gone: generation 19 is refused, in one line, before anything starts.
        let parent_of = |g: usize| {
            let info = env.crterm(&["info", "--json", env.dir.path().join(format!("gen{g}.img")).to_str().unwrap()]);
            let text = String::from_utf8_lossy(&info.stdout).to_string();
            let at = text.find("\"parent\": \"").expect("a parent") + 11;
            text[at..].split('"').next().unwrap().to_string()
        };
        let parent = env.dir.path().join(parent_of(19));
        std::fs::remove_file(&parent).unwrap();
        let gen19 = env.dir.path().join("gen19.img");
        let wide = other_tmux(&env);
        resume_in(&env, &wide, "gone", 250, 30, &gen19);
        let screen = wide.wait_text("gone", "CRTERM_EXIT=", T);
        // One message (wrapped by the pane), then the exit status.
        let lines: Vec<&str> = screen.lines().filter(|l| !l.is_empty()).collect();
        let message = lines[..lines.len() - 1].concat();
        assert!(message.starts_with("crterm: cannot resume"), "{screen}");
        assert_eq!(message.matches("crterm:").count(), 1, "{screen}");
        assert!(message.contains("parent image") && message.contains("is missing"), "{screen}");
        assert_eq!(lines[lines.len() - 1], "CRTERM_EXIT=1");
        assert!(env.sessions().is_empty(), "a session was left");
        resume_pane(&env, "c", 80, 24, &compact);
        env.tmux.wait_text("c", "G10X", T);
        assert_eq!(&digest(&env, "c", "C"), &digests[10]);
        exit_repl(&env, "c");
        env.tmux.wait_text("c", "CRTERM_EXIT=0", T);
    }
}

/// The hash a line of the incmem program's output ends with, once `prefix` is on screen.
fn sum_after(env: &Env, target: &str, prefix: &str) -> String {
    let screen = env.tmux.wait_text(target, prefix, T);
    let line = screen
        .lines()
        .rev()
        .find(|l| l.starts_with(prefix))
        .expect("the line");
    line[prefix.len()..].trim().to_string()
}

user_and_root! {
    /// Between checkpoints, memory changes in every way the write tracking must not miss
    /// (incmem.c: pages written, written with zeros, dropped and read again, a region
    /// moved, one unmapped and mapped again in its place, one split by mprotect, the heap
    /// grown, a private file mapping written and dropped back to the file, a child forked
    /// that writes its copy). Two incremental images on a full one: each, resumed, has
    /// every byte of both processes as it was (the program's hash of them all).
    fn memory_changed_every_way_between_checkpoints_comes_back_exactly(env, tag) {
        let name = format!("incmem{tag}");
        let bin = build_c(&env, "incmem");
        let data = env.dir.path().join("incmem.dat");
        env.pane(
            "a",
            &format!(
                "{} start --name {name} -- {} {}",
                env.crterm_cmd(),
                bin.display(),
                data.display()
            ),
        );
        let image = image_path(&env, &name);
        let mut sums = Vec::new();
        let mut sizes = Vec::new();
        for step in 1..=3 {
            env.tmux.send_keys("a", &["Enter"]);
            sums.push(sum_after(&env, "a", &format!("STEP {step} SUM ")));
            let mut args = vec!["checkpoint", &name, "-o", image.to_str().unwrap()];
            if step == 2 {
                // What was written since the first, pre-copied.
                args.extend(["--precopy", "always"]);
            }
            if step == 3 {
                args.push("--exit");
            }
            let out = env.crterm(&args);
            assert!(out.status.success(), "step {step}: {}", String::from_utf8_lossy(&out.stderr));
            let kept = env.dir.path().join(format!("step{step}.img"));
            std::fs::hard_link(&image, &kept).unwrap();
            sizes.push(std::fs::metadata(&kept).unwrap().len());
        }
        // The second and third hold what changed, not the 9 MiB of regions again.
        assert!(sizes[1] < sizes[0] / 2 && sizes[2] < sizes[0] / 2, "{sizes:?}");
        env.tmux.wait_dead("a", T);
        for step in [2, 3] {
            let pane = format!("r{step}");
            let kept = env.dir.path().join(format!("step{step}.img"));
            resume_pane(&env, &pane, 100, 30, &kept);
            env.tmux.wait_text(&pane, &format!("STEP {step} SUM"), T);
            enter(&env, &pane, "sum");
            assert_eq!(sum_after(&env, &pane, "NOW SUM "), sums[step - 1], "step {step}");
            env.tmux.send_keys(&pane, &["C-d"]);
            env.tmux.wait_text(&pane, "CRTERM_EXIT=0", T);
        }
    }
}

/// The python session ended in pane "a", resumed from `image` in pane "b" (its screen
/// back when `seen` is), has the bytes of `x` whose hash `want` is.
fn resumes_with_x(env: &Env, image: &std::path::Path, seen: &str, want: &str) {
    resume_pane(env, "b", 100, 30, image);
    env.tmux.wait_text("b", seen, T);
    enter(env, "b", "print('NOW', hashlib.sha256(x).hexdigest()[:16])");
    assert_eq!(sum_after(env, "b", "NOW "), want);
    exit_repl(env, "b");
    env.tmux.wait_text("b", "CRTERM_EXIT=0", T);
}

/// A process that runs another program between checkpoints (bash `exec`s python: the same
/// pid and start time, other memory) is read whole at the next one and tracked afresh
/// after it: the third image, incremental on the second, resumes with python's state.
#[test]
fn a_process_that_runs_another_program_between_checkpoints_is_read_whole() {
    let env = Env::unprivileged();
    bash_pane(&env, "a", "ex");
    let image = image_path(&env, "ex");
    let checkpoint = |n: usize| {
        // The third with a pre-copy: the process's old tracker cannot follow it into
        // its new program.
        let precopy = if n == 3 { "always" } else { "auto" };
        let out = env.crterm(&[
            "checkpoint",
            "ex",
            "-o",
            image.to_str().unwrap(),
            "--precopy",
            precopy,
        ]);
        assert!(
            out.status.success(),
            "{n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let kept = env.dir.path().join(format!("ex{n}.img"));
        std::fs::hard_link(&image, &kept).unwrap();
        kept
    };
    checkpoint(1);
    enter(&env, "a", "exec python3 -q");
    env.tmux.wait_text("a", ">>>", T);
    enter(
        &env,
        "a",
        "import hashlib; x = bytearray(range(256)) * 4096; print('ONE', len(x))",
    );
    env.tmux.wait_text("a", "ONE 1048576", T);
    checkpoint(2);
    enter(
        &env,
        "a",
        "x[5000:5004] = b'abcd'; print('TWO', hashlib.sha256(x).hexdigest()[:16])",
    );
    let want = sum_after(&env, "a", "TWO ");
    let third = checkpoint(3);
    let info = env.crterm(&["info", third.to_str().unwrap()]);
    let info = String::from_utf8_lossy(&info.stdout).to_string();
    assert!(info.contains("2 images before it"), "{info}");
    exit_repl(&env, "a");
    env.tmux.wait_dead("a", T);
    resumes_with_x(&env, &third, "TWO ", &want);
}

/// A checkpoint whose dump process dies after it scanned (and so protected again) the
/// pages written since the last image, or after it wrote the image but before putting it
/// in place, fails; the next checkpoint is then a whole one, not one that would take
/// those writes for the parent's: resumed, it has every byte.
#[test]
fn a_checkpoint_killed_after_its_scan_makes_the_next_one_whole_and_exact() {
    let (env, hooks) = super::faults::env_with_hooks();
    python_pane(&env, "a", "kd");
    enter(
        &env,
        "a",
        "import hashlib; x = bytearray(range(256)) * 16384; print('RE' 'ADY')",
    );
    env.tmux.wait_text("a", "READY", T);
    let image = image_path(&env, "kd");
    let checkpoint = || env.crterm(&["checkpoint", "kd", "-o", image.to_str().unwrap()]);
    assert!(checkpoint().status.success());
    for (i, step) in ["read", "rename"].iter().enumerate() {
        enter(
            &env,
            "a",
            &format!(
                "x[{}:{}] = b'killed!!'",
                70000 * (i + 1),
                70000 * (i + 1) + 8
            ),
        );
        std::fs::write(&hooks, format!("die {step}")).unwrap();
        let out = checkpoint();
        assert!(!out.status.success(), "{step}: the dump was to die");
        std::fs::write(&hooks, "").unwrap();
    }
    enter(
        &env,
        "a",
        "print('SUM', hashlib.sha256(x).hexdigest()[:16])",
    );
    let screen = env.tmux.wait_text("a", "SUM ", T);
    let want = screen
        .lines()
        .rev()
        .find(|l| l.starts_with("SUM "))
        .unwrap()[4..]
        .to_string();
    let out = checkpoint();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = env.crterm(&["info", image.to_str().unwrap()]);
    let info = String::from_utf8_lossy(&info.stdout).to_string();
    assert!(!info.contains("images before it"), "a whole image: {info}");
    exit_repl(&env, "a");
    env.tmux.wait_dead("a", T);
    resumes_with_x(&env, &image, "SUM ", &want);
}

user_and_root! {
    /// A session resumed from an image and checkpointed back into it is checkpointed
    /// incrementally: the resume started the write tracking once the memory was in, so
    /// only what the program wrote since is stored, the image it came from is kept beside
    /// it under its identity, and the chain resumes with every byte (the program,
    /// `precopymem.c`, checks 256 MiB of its own bookkeeping).
    fn a_resumed_session_checkpoints_incrementally_against_its_image(env, tag) {
        let name = format!("back{tag}");
        let bin = build_c(&env, "precopymem");
        env.pane(
            "a",
            &format!("{} start --name {name} -- {}", env.crterm_cmd(), bin.display()),
        );
        env.tmux.wait_text("a", "precopymem ready", T);
        enter(&env, "a", "pause");
        env.tmux.wait_text("a", "\npaused", T);
        let image = image_path(&env, &name);
        checkpoint_and_end(&env, &name, &image);
        let full = std::fs::metadata(&image).unwrap().len();
        resume_with(&env, &env.tmux, "r", (100, 30), &format!("--name {name}r"), &image);
        env.tmux.wait_text("r", "paused", T);
        // A moment of writing, then still.
        enter(&env, "r", "go");
        std::thread::sleep(Duration::from_millis(200));
        enter(&env, "r", "pause");
        wait_for("the second pause", T, || {
            (env.tmux.capture_plain("r").matches("paused").count() >= 2).then_some(())
        });
        let out = env.crterm(&["checkpoint", &format!("{name}r"), "-o", image.to_str().unwrap()]);
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{}{said}", String::from_utf8_lossy(&out.stderr));
        let info = env.crterm(&["info", image.to_str().unwrap()]);
        let info = String::from_utf8_lossy(&info.stdout).into_owned();
        assert!(info.contains(&format!("made after {name}.")), "not incremental: {info}");
        let small = std::fs::metadata(&image).unwrap().len();
        assert!(small < full / 4, "{small} bytes after {full}: {said}");
        super::precopy::check(&env, "r");
        env.tmux.send_keys("r", &["C-d"]);
        env.tmux.wait_text("r", "CRTERM_EXIT=0", T);
        // The chain: the new image, and the one it came from kept beside it.
        resume_with(&env, &env.tmux, "s", (100, 30), &format!("--name {name}s"), &image);
        env.tmux.wait_text("s", "paused", T);
        super::precopy::check(&env, "s");
        env.tmux.send_keys("s", &["C-d"]);
        env.tmux.wait_text("s", "CRTERM_EXIT=0", T);
    }
}
