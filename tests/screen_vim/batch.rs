//! Sessions in batch jobs (issue 15): `crterm start --detached --wait` stays with its job,
//! checkpoints the session on the scheduler's signal and exits 85 ("checkpointed, run me
//! again"); the same command run again resumes the image. Tested by itself, and under a
//! real Slurm (a controller, a node and munge started by the test, torn down after).

use super::world::free_port;
use super::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A python program that counts forever: each step it prints `TOKEN N` and writes the same
/// into `file` (whole, by a rename). TOKEN is drawn once, when it starts: a program started
/// again draws another, one resumed keeps it.
fn counter(env: &Env, file: &Path) -> PathBuf {
    let script = env.dir.path().join("count.py");
    std::fs::write(
        &script,
        format!(
            "import os, random, time\n\
             token = '%08x' % random.getrandbits(32)\n\
             n = 0\n\
             while True:\n\
             \x20   n += 1\n\
             \x20   print(token, n, flush=True)\n\
             \x20   with open({f:?} + '.tmp', 'w') as f:\n\
             \x20       f.write('%s %d' % (token, n))\n\
             \x20   os.rename({f:?} + '.tmp', {f:?})\n\
             \x20   time.sleep(0.2)\n",
            f = file.display().to_string()
        ),
    )
    .unwrap();
    script
}

/// What the counter wrote last: (token, count).
fn count(file: &Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(file).ok()?;
    let (token, n) = text.split_once(' ')?;
    Some((token.to_string(), n.parse().ok()?))
}

/// Wait until the counter has counted past `past`; its token and count then.
fn counted_past(file: &Path, past: u64) -> (String, u64) {
    wait_for(&format!("the count to pass {past}"), T, || {
        count(file).filter(|(_, n)| *n > past)
    })
}

/// `crterm start --detached --wait` run directly as the env's user, its output in `log`.
fn waiting_start(env: &Env, name: &str, image: &Path, script: &Path, log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    env.crterm_direct(&[
        "start",
        "--detached",
        "--wait",
        "--name",
        name,
        "--image",
        image.to_str().unwrap(),
        "--",
        "python3",
        script.to_str().unwrap(),
    ])
    .stdin(Stdio::null())
    .stdout(log.try_clone().unwrap())
    .stderr(log)
    .spawn()
    .unwrap()
}

fn exit_of(child: &mut Child) -> i32 {
    let status = wait_for("the waiting crterm to end", T, || child.try_wait().unwrap());
    status.code().unwrap_or(-1)
}

/// The batch pattern without a scheduler: SIGTERM to the waiting crterm checkpoints the
/// session and exits 85; the same command run again resumes the image (the counter goes
/// on, with its token) instead of starting anew; a waiting crterm killed outright has its
/// session checkpointed and ended too (the session lives as long as its job step); and a
/// session whose command ends by itself gives the command's status.
#[test]
fn a_waiting_start_checkpoints_on_sigterm_exits_85_and_resumes_when_run_again() {
    let env = Env::unprivileged();
    let file = env.dir.path().join("count");
    let script = counter(&env, &file);
    let image = env.dir.path().join("data/job.img");
    let log = env.dir.path().join("job.log");

    let mut job = waiting_start(&env, "job", &image, &script, &log);
    let (token, _) = counted_past(&file, 3);
    unsafe { libc::kill(job.id() as i32, libc::SIGTERM) };
    assert_eq!(exit_of(&mut job), 85, "{}", read(&log));
    let said = read(&log);
    assert!(
        said.contains("SIGTERM: checkpointing session job"),
        "{said}"
    );
    assert!(
        said.contains(&format!("checkpointed to {}", image.display())),
        "{said}"
    );
    assert!(image.exists());
    wait_for("the session to be gone", T, || {
        env.sessions().is_empty().then_some(())
    });
    let (_, at) = count(&file).unwrap();

    // Run again: resumed, not started anew.
    let mut job = waiting_start(&env, "job", &image, &script, &log);
    let (again, n) = counted_past(&file, at);
    assert_eq!(again, token, "the counter was resumed, not started again");
    assert!(
        n <= at + 20,
        "it went on from {at}, not from elsewhere: {n}"
    );
    assert!(read(&log).contains("resumed session job"), "{}", read(&log));

    // Killed outright (its job step's SIGKILL): the session is checkpointed and ended
    // all the same.
    let daemon = env.daemon_pid("job");
    let (_, before) = counted_past(&file, n);
    unsafe { libc::kill(job.id() as i32, libc::SIGKILL) };
    let _ = job.wait();
    assert!(
        wait_gone(daemon, T),
        "the session ends with its waiting crterm"
    );
    let (_, at) = count(&file).unwrap();
    assert!(at >= before);
    let mut job = waiting_start(&env, "job", &image, &script, &log);
    let (again, n) = counted_past(&file, at);
    assert_eq!(again, token, "resumed from the checkpoint its kill made");
    assert!(n <= at + 20, "{n} after {at}");
    // SIGTERM to the daemon (a shutdown) also reaches the waiting crterm as 85.
    let daemon = env.daemon_pid("job");
    unsafe { libc::kill(daemon, libc::SIGTERM) };
    assert_eq!(exit_of(&mut job), 85, "{}", read(&log));

    // A command that ends by itself, even at once: its status, and nothing checkpointed.
    std::fs::remove_file(&image).unwrap();
    let short = env.dir.path().join("short.py");
    std::fs::write(&short, "import sys\nsys.exit(7)\n").unwrap();
    let mut job = waiting_start(&env, "short", &image, &short, &log);
    assert_eq!(exit_of(&mut job), 7, "{}", read(&log));
    assert!(
        read(&log).contains("the session ended (status 7)"),
        "{}",
        read(&log)
    );
    assert!(!image.exists());
}

/// A failing checkpoint at the signal: status 1 with the reason, not 85, and the session
/// ended (a job that says "requeue me" must have an image to come back from).
#[test]
fn a_waiting_start_whose_checkpoint_fails_exits_1_with_the_reason() {
    let env = Env::unprivileged();
    let file = env.dir.path().join("count");
    let script = counter(&env, &file);
    // A directory the user cannot make: the checkpoint cannot be written.
    let image = PathBuf::from("/proc/none/job.img");
    let log = env.dir.path().join("job.log");
    let mut job = waiting_start(&env, "nojob", &image, &script, &log);
    counted_past(&file, 2);
    unsafe { libc::kill(job.id() as i32, libc::SIGUSR1) };
    assert_eq!(exit_of(&mut job), 1, "{}", read(&log));
    let said = read(&log);
    assert!(
        said.contains("SIGUSR1: checkpointing session nojob"),
        "{said}"
    );
    assert!(said.contains("checkpoint failed"), "{said}");
    wait_for("the session to be gone", T, || {
        env.sessions().is_empty().then_some(())
    });
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// A Slurm cluster of one node on this machine: munged, slurmctld and slurmd run by the
/// test with their own configuration, ports, state and socket in a private directory, so
/// that tests and test runs do not meet. Dropping it cancels its jobs and ends it all.
struct Slurm {
    dir: TempDir,
    conf: PathBuf,
    daemons: Vec<Child>,
}

impl Slurm {
    fn start() -> Slurm {
        let dir = TempDir::new("crterm-slurm");
        let p = dir.path();
        for d in ["key", "state", "spool", "log"] {
            std::fs::create_dir_all(p.join(d)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        // Users reach munged's socket here; the key is root's alone.
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(p.join("key"), std::fs::Permissions::from_mode(0o700)).unwrap();
        let key: Vec<u8> = (0..1024).map(|_| rand_byte()).collect();
        std::fs::write(p.join("key/munge.key"), key).unwrap();
        std::fs::set_permissions(
            p.join("key/munge.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let host = String::from_utf8(Command::new("hostname").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        let tag = format!("{:x}", std::process::id() ^ (rand_byte() as u32) << 24);
        let conf = p.join("slurm.conf");
        let (ctld_port, d_port) = (free_port(), free_port());
        let d = p.display();
        std::fs::write(
            &conf,
            format!(
                "ClusterName=crt{tag}\n\
                 SlurmctldHost={host}(127.0.0.1)\n\
                 SlurmctldPort={ctld_port}\n\
                 SlurmdPort={d_port}\n\
                 SlurmUser=root\n\
                 AuthType=auth/munge\n\
                 AuthInfo=socket={d}/munge.sock\n\
                 StateSaveLocation={d}/state\n\
                 SlurmdSpoolDir={d}/spool\n\
                 SlurmctldPidFile={d}/ctld.pid\n\
                 SlurmdPidFile={d}/slurmd.pid\n\
                 SlurmctldLogFile={d}/log/ctld.log\n\
                 SlurmdLogFile={d}/log/slurmd.log\n\
                 # The batch script's process group is the job (crterm's daemon has a\n\
                 # session of its own): see README, batch jobs.\n\
                 ProctrackType=proctrack/pgid\n\
                 TaskPlugin=task/none\n\
                 SwitchType=switch/none\n\
                 MpiDefault=none\n\
                 ReturnToService=2\n\
                 SchedulerType=sched/builtin\n\
                 SelectType=select/linear\n\
                 JobCompType=jobcomp/none\n\
                 AccountingStorageType=accounting_storage/none\n\
                 JobAcctGatherType=jobacct_gather/none\n\
                 MailProg=/bin/true\n\
                 KillWait=30\n\
                 MinJobAge=600\n\
                 NodeName=crtn{tag} NodeHostname={host} NodeAddr=127.0.0.1 CPUs=1 State=UNKNOWN\n\
                 PartitionName=crtp{tag} Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n"
            ),
        )
        .unwrap();
        let mut slurm = Slurm {
            conf: conf.clone(),
            daemons: Vec::new(),
            dir,
        };
        let p = slurm.dir.path().to_path_buf();
        let spawn = |argv: &[&str], log: &str| -> Child {
            let log = std::fs::File::create(p.join("log").join(log)).unwrap();
            Command::new(argv[0])
                .args(&argv[1..])
                .env("SLURM_CONF", &conf)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "{}: {e} (tests/run-all.sh installs slurmctld, slurmd, slurm-client, munge)",
                        argv[0]
                    )
                })
        };
        let munge = [
            "munged".to_string(),
            "--foreground".into(),
            "--force".into(),
            format!("--socket={}/munge.sock", p.display()),
            format!("--key-file={}/key/munge.key", p.display()),
            format!("--pid-file={}/key/munged.pid", p.display()),
            format!("--log-file={}/key/munged.log", p.display()),
            format!("--seed-file={}/key/munged.seed", p.display()),
        ];
        let munge: Vec<&str> = munge.iter().map(String::as_str).collect();
        slurm.daemons.push(spawn(&munge, "munged.out"));
        wait_for("munged's socket", T, || {
            p.join("munge.sock").exists().then_some(())
        });
        slurm
            .daemons
            .push(spawn(&["slurmctld", "-D", "-i"], "ctld.out"));
        let node = format!("crtn{tag}");
        slurm
            .daemons
            .push(spawn(&["slurmd", "-D", "-N", &node], "slurmd.out"));
        wait_for("the Slurm node to be idle", Duration::from_secs(60), || {
            let out = slurm.cmd(&["sinfo", "-h", "-o", "%T"]);
            out.contains("idle").then_some(())
        });
        slurm
    }

    /// A Slurm command as root against this cluster; its standard output.
    fn cmd(&self, argv: &[&str]) -> String {
        let out = Command::new(argv[0])
            .args(&argv[1..])
            .env("SLURM_CONF", &self.conf)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ok(&self, argv: &[&str]) {
        let out = Command::new(argv[0])
            .args(&argv[1..])
            .env("SLURM_CONF", &self.conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{argv:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The job's state (RUNNING, PENDING, ...).
    fn state(&self, job: &str) -> String {
        self.cmd(&["squeue", "-h", "-j", job, "-o", "%T"])
            .trim()
            .to_string()
    }

    /// A requeued job waits about two minutes before it may start again: let it start now.
    fn start_again(&self, job: &str) {
        wait_for(
            &format!("job {job} to run again"),
            Duration::from_secs(60),
            || {
                let state = self.state(job);
                if state == "PENDING" {
                    let _ = self.cmd(&[
                        "scontrol",
                        "update",
                        &format!("JobId={job}"),
                        "StartTime=now",
                    ]);
                }
                (state == "RUNNING").then_some(())
            },
        );
    }

    /// The processes this cluster's daemons started outside their own process tree (the
    /// job steps' slurmstepd): those whose environment names this cluster's config.
    fn steps(&self) -> Vec<i32> {
        let needle = format!("SLURM_CONF={}", self.conf.display());
        let mut v = Vec::new();
        for p in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            let environ = std::fs::read(p.path().join("environ")).unwrap_or_default();
            if comm.trim() == "slurmstepd"
                && environ.split(|&b| b == 0).any(|e| e == needle.as_bytes())
            {
                v.push(pid);
            }
        }
        v
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        // Every job cancelled, its steps gone, then the daemons.
        let _ = Command::new("scontrol")
            .args(["show", "jobs"])
            .env("SLURM_CONF", &self.conf)
            .output()
            .map(|o| {
                for id in String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|w| w.strip_prefix("JobId="))
                {
                    let _ = Command::new("scancel")
                        .arg(id)
                        .env("SLURM_CONF", &self.conf)
                        .output();
                }
            });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !self.steps().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        for pid in self.steps() {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for d in self.daemons.iter_mut().rev() {
            unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while d.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

fn rand_byte() -> u8 {
    let mut b = [0u8; 1];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .unwrap();
    b[0]
}

/// A real Slurm: a job runs a counting python session under `crterm start --detached
/// --wait`; `scontrol requeue` (SIGTERM to the job) has it checkpointed, and the job,
/// started again, resumes it: the same counter goes on from where it was. `srun --jobid J
/// --overlap --pty crterm attach N` shows it. The time-limit warning (`--signal=B:TERM`,
/// sent here with `scancel --batch --signal=TERM`) does the same, and the job script
/// (contrib/slurm/crterm-job.sh, as it is) requeues the job on crterm's exit status 85.
#[test]
#[ignore = "needs root (starts a Slurm controller, node and munge); run by tests/run-all.sh as root"]
fn a_slurm_job_is_requeued_resumes_its_session_and_is_attached_through_srun() {
    let mut env = Env::unprivileged();
    let slurm = Slurm::start();
    env.tmux
        .env
        .push(("SLURM_CONF".into(), slurm.conf.display().to_string()));
    let file = env.dir.path().join("count");
    let script = counter(&env, &file);
    let image = env.dir.path().join("data/slurmjob.img");
    let out = env.dir.path().join("job.out");
    // The example job script as it is in contrib/ (a copy the test user can read).
    let job_script = env.dir.path().join("crterm-job.sh");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/slurm/crterm-job.sh"),
        &job_script,
    )
    .unwrap();
    env.tmux
        .env
        .push(("CRTERM".into(), env.bin.display().to_string()));
    env.tmux.env.push((
        "CRTERM_IMAGES".into(),
        image.parent().unwrap().display().to_string(),
    ));
    if let Some(u) = &env.user {
        let _ = Command::new("chown")
            .arg(format!("{u}:{u}"))
            .arg(&job_script)
            .arg(&script)
            .output();
    }
    let submitted = env.run(
        &[
            "sbatch",
            "--parsable",
            "--requeue",
            "--open-mode=append",
            "-o",
            out.to_str().unwrap(),
            "-J",
            "slurmjob",
            "--chdir",
            env.dir.path().to_str().unwrap(),
            job_script.to_str().unwrap(),
            "slurmjob",
            "python3",
            script.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let job = String::from_utf8_lossy(&submitted.stdout)
        .trim()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let (token, _) = wait_for("the job's counter", Duration::from_secs(60), || {
        count(&file).filter(|(_, n)| *n > 5)
    });

    // Requeued (SIGTERM to the job): checkpointed, then back from the image.
    slurm.ok(&["scontrol", "requeue", &job]);
    wait_for("the checkpoint at the requeue", T, || {
        read(&out).contains("checkpointed to").then_some(())
    });
    wait_for("the session to be gone", T, || {
        env.sessions().is_empty().then_some(())
    });
    let (_, at) = count(&file).unwrap();
    slurm.start_again(&job);
    let (again, n) = counted_past(&file, at);
    assert_eq!(again, token, "the same counter goes on: {}", read(&out));
    assert!(n <= at + 25, "from where it was ({at}), not anew: {n}");
    assert!(
        read(&out).contains("resumed session slurmjob"),
        "{}",
        read(&out)
    );

    // Attached from an interactive step of the job.
    env.pane(
        "att",
        &format!(
            "srun --jobid {job} --overlap --pty {} attach slurmjob; echo ATTACH-DONE; sleep 600",
            env.bin.display()
        ),
    );
    let screen = env.tmux.wait_text("att", &format!("{token} "), T);
    let shown: u64 = screen
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{token} "))?.trim().parse().ok())
        .max()
        .unwrap();
    assert!(shown > at, "{screen}");
    env.prefix("att", "x");
    env.tmux.wait_text("att", "ATTACH-DONE", T);

    // The time-limit warning (to the batch shell alone): the script hands it to crterm,
    // which exits 85, and the script requeues the job.
    let (_, before) = counted_past(&file, n);
    slurm.ok(&["scancel", "--batch", "--signal=TERM", &job]);
    wait_for("the second checkpoint", T, || {
        (read(&out).matches("checkpointed to").count() == 2).then_some(())
    });
    wait_for("the session to be gone", T, || {
        env.sessions().is_empty().then_some(())
    });
    let (_, at) = count(&file).unwrap();
    assert!(at >= before);
    slurm.start_again(&job);
    let (again, n) = counted_past(&file, at);
    assert_eq!(again, token, "{}", read(&out));
    assert!(n <= at + 25, "{n} after {at}");
    drop(slurm);
    wait_for("the session to end with its job", T, || {
        env.sessions().is_empty().then_some(())
    });
}

/// HTCondor's self-checkpointing convention with contrib/htcondor/crterm-job.sh as it is:
/// every CRTERM_EVERY the session is checkpointed into ./session.img and the job exits 85;
/// run again (HTCondor starts it again at once) it resumes the image; an eviction's
/// SIGTERM does the same checkpoint before the interval is over.
#[test]
fn the_htcondor_wrapper_checkpoints_every_interval_with_status_85_and_resumes() {
    let env = Env::unprivileged();
    let file = env.dir.path().join("count");
    let script = counter(&env, &file);
    let wrapper = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/htcondor/crterm-job.sh"
    );
    let scratch = env.dir.path().join("data");
    let log = env.dir.path().join("job.log");
    let run = |every: &str| -> Child {
        let log = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new("sh");
        cmd.arg(wrapper)
            .args(["python3", script.to_str().unwrap()])
            .env_clear()
            .envs(env.tmux.env.iter().map(|(k, v)| (k, v)))
            .env("CRTERM", &env.bin)
            .env("CRTERM_EVERY", every)
            .current_dir(&scratch)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(u) = &env.user {
            use std::os::unix::process::CommandExt;
            let (uid, gid) = user_ids(u);
            cmd.uid(uid).gid(gid);
        }
        cmd.spawn().unwrap()
    };
    let image = scratch.join("session.img");
    let mut job = run("3s");
    let (token, _) = counted_past(&file, 2);
    assert_eq!(exit_of(&mut job), 85, "{}", read(&log));
    assert!(image.exists(), "{}", read(&log));
    wait_for("the session to be gone", T, || {
        env.sessions().is_empty().then_some(())
    });
    let (_, at) = count(&file).unwrap();
    // Started again: resumed; evicted (SIGTERM) before its interval: 85 again.
    let mut job = run("1h");
    let (again, n) = counted_past(&file, at);
    assert_eq!(again, token, "{}", read(&log));
    assert!(n <= at + 20, "{n} after {at}");
    unsafe { libc::kill(job.id() as i32, libc::SIGTERM) };
    assert_eq!(exit_of(&mut job), 85, "{}", read(&log));
    wait_for("the session to be gone", T, || {
        env.sessions().is_empty().then_some(())
    });
}
