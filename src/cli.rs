//! The command line: clap structs in, plain calls out. No clap type leaves this module.

use crate::config;
use crate::pty_proxy::protocol::{CheckpointOrder, FrameReader, ToClient, ToDaemon};
use crate::pty_proxy::{client, daemon, paths};
use crate::sys::{self, WinSize};
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::io::{BufRead, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

#[derive(Parser)]
#[command(
    name = "crterm",
    version,
    about = "Checkpoint and resume interactive terminal sessions"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a session running CMD (default: $SHELL) and attach to it.
    Start {
        /// Session name (default: the command's name and a number).
        #[arg(long)]
        name: Option<String>,
        /// Where checkpoints of this session go (default: $XDG_DATA_HOME/crterm/NAME.img).
        #[arg(long)]
        image: Option<PathBuf>,
        /// Prefix key, as C-x (default: C-\, or `prefix` in ~/.config/crterm/config.toml).
        #[arg(long)]
        prefix: Option<String>,
        /// `baseline`: glibc in the session uses x86-64-v2 code only (its CPU tunables),
        /// so that its images resume on any x86-64-v2 CPU; `native` (default): all this
        /// CPU has, and images resume on CPUs with at least its features.
        #[arg(long, value_parser = ["native", "baseline"], default_value = "native")]
        cpu: String,
        #[command(flatten)]
        autosave: AutosaveArgs,
        /// Start it without attaching (`crterm attach NAME` later); with --image naming an
        /// image that is there, resume that image instead (a batch job started again).
        #[arg(long)]
        detached: bool,
        #[command(flatten)]
        wait: WaitArg,
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Attach this terminal to a running session.
    Attach {
        name: String,
        #[arg(long)]
        prefix: Option<String>,
    },
    /// List running sessions and the images saved in $XDG_DATA_HOME/crterm.
    Ls,
    /// Checkpoint a running session, or all of them.
    Checkpoint {
        #[arg(required_unless_present = "all")]
        name: Option<String>,
        /// Every session of this user, each into its own image, at once: one line each;
        /// the exit status is 0 only if all succeeded.
        #[arg(long, conflicts_with_all = ["name", "output"])]
        all: bool,
        /// Image file to write.
        #[arg(short = 'o')]
        output: Option<PathBuf>,
        /// End the session after the checkpoint.
        #[arg(long)]
        exit: bool,
        /// Wait up to SECS seconds until no process of the session holds a connection to
        /// the outside (TCP, or a unix socket to a program outside), so that none comes
        /// back closed; fail, naming them, if some are still open then.
        #[arg(long, value_name = "SECS", default_value_t = 0)]
        wait_connections: u32,
        /// Carry the content of open regular files up to this size (bytes, or with K, M,
        /// G), so that a resume where they are missing makes them again; 0: none.
        #[arg(long, value_name = "SIZE", default_value = "4M", value_parser = parse_size)]
        carry_files: u64,
        /// Write a standalone image. Without it, a checkpoint of a session checkpointed
        /// before (by this daemon, into an image still there) stores only the memory
        /// written and the files changed since, and refers to that image for the rest.
        #[arg(long)]
        full: bool,
        /// `auto` (default): for a session holding 64 MiB or more in memory, copy its
        /// memory while it runs (for an incremental checkpoint, what was written since
        /// its parent), then freeze it only to copy what it wrote meanwhile; `always`;
        /// `never`.
        #[arg(long, value_parser = ["auto", "always", "never"], default_value = "auto")]
        precopy: String,
    },
    /// Bring a checkpointed session back in this terminal.
    Resume {
        /// The image (`crterm checkpoint` prints its path), or the name of a saved
        /// session (`crterm ls` lists them).
        #[arg(required_unless_present = "all")]
        file: Option<PathBuf>,
        /// Every saved session that is not running, each as a detached session.
        #[arg(long, requires = "detached", conflicts_with_all = ["file", "name"])]
        all: bool,
        /// Resume without attaching (`crterm attach NAME` later).
        #[arg(long)]
        detached: bool,
        #[command(flatten)]
        wait: WaitArg,
        /// Session name (default: the image's file name, made unique).
        #[arg(long)]
        name: Option<String>,
        /// Go on even where files the session wrote have changed since the checkpoint.
        #[arg(long)]
        force: bool,
        /// `session` (default): the monotonic and boot-time clocks go on from where they
        /// were at the checkpoint, so deadlines and timeouts see no jump; `real`: the
        /// host's clocks as they are. Wall-clock time is always the real one.
        #[arg(long, value_parser = ["session", "real"], default_value = "session")]
        clock: String,
        /// `session` (default): the host name the session's programs saw (it has a UTS
        /// namespace of its own); `real`: this machine's.
        #[arg(long, value_parser = ["session", "real"], default_value = "session")]
        hostname: String,
        /// Refuse a CPU that lacks any instruction-set feature the checkpointed machine
        /// had, not only those the session could have acted on.
        #[arg(long)]
        strict_cpu: bool,
        /// Let the session go on before its memory is all in: pages come in from the image
        /// on first touch and in the background. Needs userfaultfd for faults taken in
        /// the kernel (root); otherwise the memory is copied in first, and the resume
        /// says so.
        #[arg(long)]
        lazy: bool,
        #[arg(long)]
        prefix: Option<String>,
        #[command(flatten)]
        autosave: AutosaveArgs,
    },
    /// What this kernel and CPU offer crterm; with an image: whether it will resume here,
    /// and if not, why (exit status 1).
    Check {
        file: Option<PathBuf>,
        /// Judge the CPU as `resume --strict-cpu` would.
        #[arg(long)]
        strict_cpu: bool,
    },
    /// Write one standalone image of an incremental image and the chain of images it
    /// was made after (in place, or to OUT).
    Compact {
        file: PathBuf,
        /// Where to write it (default: over FILE, once it is complete).
        #[arg(short = 'o')]
        output: Option<PathBuf>,
    },
    /// Show what an image holds: where it was made, its processes, the saved screen.
    Info {
        file: PathBuf,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print crterm's man page (roff) to standard output; with DIR, write crterm.1 and a
    /// page for each command (crterm-start.1, ...) there.
    Man { dir: Option<PathBuf> },
    /// Print the completion script for bash, zsh or fish to standard output.
    Completions {
        #[arg(value_parser = ["bash", "zsh", "fish"])]
        shell: String,
    },
    /// The dump process (started by the daemon for a checkpoint).
    #[command(name = "__dump", hide = true)]
    Dump {
        #[arg(long)]
        out: PathBuf,
    },
    /// Read the SysV objects of a session (started by a checkpoint).
    #[command(name = "__sysv", hide = true)]
    Sysv { pids: Vec<i32> },
    /// The session daemon (started by `crterm start`).
    #[command(name = "__daemon", hide = true)]
    Daemon {
        #[arg(long)]
        name: String,
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        image: PathBuf,
        #[arg(long)]
        cols: u16,
        #[arg(long)]
        rows: u16,
        #[arg(long)]
        history: usize,
        #[arg(long)]
        ready_fd: i32,
        #[arg(long)]
        resume: Option<PathBuf>,
        /// The image is this inherited descriptor (read from standard input by the client).
        #[arg(long)]
        resume_fd: Option<i32>,
        /// A connection to a client that waits for the session to end (`--wait`).
        #[arg(long)]
        watch_fd: Option<i32>,
        #[arg(long)]
        force: bool,
        #[arg(long)]
        real_clock: bool,
        #[arg(long)]
        real_hostname: bool,
        #[arg(long)]
        strict_cpu: bool,
        #[arg(long)]
        lazy: bool,
        #[arg(long)]
        cpu_baseline: bool,
        #[arg(long)]
        autosave_secs: Option<u64>,
        #[arg(long, default_value_t = 0)]
        keep: usize,
        #[arg(long)]
        shutdown_deadline_secs: u64,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
}

/// `--wait`, for batch jobs.
#[derive(clap::Args, Clone, Copy)]
struct WaitArg {
    /// With --detached: stay in the foreground until the session ends (a batch job's
    /// step). SIGTERM, SIGHUP, SIGINT, SIGUSR1 or SIGUSR2 to crterm checkpoint the session
    /// into its image and end it, and crterm then exits with status 85 ("checkpointed,
    /// run me again"); the image is resumed when the same command runs again. Otherwise
    /// the exit status is the session's command's, or 1 when the checkpoint failed.
    #[arg(long, requires = "detached")]
    wait: bool,
}

/// The signals that ask a waiting crterm (`--detached --wait`) to checkpoint its session
/// and end: a scheduler's preemption or time-limit warning, a shutdown, Ctrl-C.
const WAIT_SIGNALS: [libc::c_int; 5] = [
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// What the client does once the session runs.
enum Then {
    Attach,
    Detach,
    /// `--detached --wait`: watch it until it ends; the signalfd has held `WAIT_SIGNALS`
    /// since before the daemon started, so that none is lost or kills crterm meanwhile.
    Wait(std::os::fd::OwnedFd),
}

impl Then {
    fn new(detached: bool, wait: WaitArg) -> Result<Then> {
        Ok(match (detached, wait.wait) {
            (false, _) => Then::Attach,
            (true, false) => Then::Detach,
            (true, true) => Then::Wait(sys::signalfd(&WAIT_SIGNALS)?),
        })
    }

    fn detached(&self) -> bool {
        !matches!(self, Then::Attach)
    }

    /// For `Wait`: the connection the client watches the session on and the daemon's end
    /// of it, which the daemon inherits, so that it watches from its first moment (a
    /// command that ends at once is not missed, as it would be by connecting after).
    fn pair(&self) -> Result<Option<Watch>> {
        Ok(match self {
            Then::Wait(_) => Some(std::os::unix::net::UnixStream::pair()?),
            _ => None,
        })
    }
}

/// A waiting client's end of its connection to the daemon, and the daemon's.
type Watch = (
    std::os::unix::net::UnixStream,
    std::os::unix::net::UnixStream,
);

/// Checkpoints the daemon takes by itself.
#[derive(clap::Args, Clone, Copy)]
struct AutosaveArgs {
    /// Checkpoint the session into its image every INTERVAL (as 90s, 15m, 2h) while it
    /// runs; a failure shows a notice and leaves the session as it was (default: the
    /// config file's `autosave`, else never).
    #[arg(long, value_name = "INTERVAL", value_parser = parse_interval)]
    autosave: Option<std::time::Duration>,
    /// Keep the newest N generations of the session's image (NAME.img, the older ones as
    /// NAME.ID.img beside it), with the images they are made after, and remove older
    /// ones (default: the config file's `keep`, else 3 with --autosave, else all).
    #[arg(long, value_name = "N", value_parser = parse_keep)]
    keep: Option<usize>,
}

impl AutosaveArgs {
    /// With the config file's settings where the command line gives none: the interval
    /// and the generations kept (0: none removed).
    fn resolve(self, config: &config::Config) -> (Option<std::time::Duration>, usize) {
        let autosave = self.autosave.or(config.autosave);
        let keep = match (self.keep, config.keep) {
            (Some(k), _) => k,
            (None, k) if k > 0 => k,
            _ if autosave.is_some() => config::DEFAULT_KEEP,
            _ => 0,
        };
        (autosave, keep)
    }
}

fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    config::parse_duration(text).map_err(|e| e.to_string())
}

fn parse_keep(text: &str) -> Result<usize, String> {
    let n: usize = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    config::check_keep(n).map_err(|e| e.to_string())
}

/// Run the parsed command line; returns the process exit status.
pub fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Cmd::Start {
            name,
            image,
            prefix,
            cpu,
            autosave,
            detached,
            wait,
            command,
        } => start(
            name,
            image,
            prefix,
            cpu == "baseline",
            autosave,
            Then::new(detached, wait)?,
            command,
        ),
        Cmd::Attach { name, prefix } => {
            let config = config::load()?;
            let prefix = resolve_prefix(prefix, &config)?;
            paths::check_name(&name)?;
            let dir = paths::runtime_dir()?;
            client::attach(&paths::socket_path(&dir, &name), &name, prefix)
        }
        Cmd::Ls => {
            sys::die_quietly_on_broken_pipe();
            list()
        }
        Cmd::Resume {
            file,
            all,
            detached,
            wait,
            name,
            force,
            clock,
            hostname,
            strict_cpu,
            lazy,
            prefix,
            autosave,
        } => {
            let opts = crate::restore::Options {
                force,
                lazy,
                real_clock: clock == "real",
                real_hostname: hostname == "real",
                strict_cpu,
                set_ids: false,
                track: false,
            };
            if all && wait.wait {
                bail!("--wait is for one session: give its image or name");
            }
            let how = ResumeHow {
                opts,
                prefix,
                autosave,
                then: Then::new(detached, wait)?,
            };
            match file {
                _ if all => resume_all(how),
                Some(file) => resume(saved_image(file)?, name, how),
                None => bail!("give an image or a saved session's name, or --all --detached"),
            }
        }
        Cmd::Check { file, strict_cpu } => {
            sys::die_quietly_on_broken_pipe();
            crate::check::run(file.as_deref(), strict_cpu)
        }
        Cmd::Compact { file, output } => crate::compact::run(&file, output.as_deref()),
        Cmd::Info { file, json } => {
            sys::die_quietly_on_broken_pipe();
            crate::info::show(&file, json)
        }
        Cmd::Man { dir } => man(dir),
        Cmd::Completions { shell } => {
            sys::die_quietly_on_broken_pipe();
            let shell = match shell.as_str() {
                "bash" => clap_complete::Shell::Bash,
                "zsh" => clap_complete::Shell::Zsh,
                _ => clap_complete::Shell::Fish,
            };
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "crterm", &mut std::io::stdout());
            Ok(0)
        }
        Cmd::Dump { out } => Ok(crate::ckpt::dumper::run(&out)),
        Cmd::Sysv { pids } => Ok(crate::sysv::run_reader(&pids)),
        Cmd::Checkpoint {
            name,
            all,
            output,
            exit,
            wait_connections,
            carry_files,
            full,
            precopy,
        } => {
            let order = CheckpointOrder {
                exit,
                path: String::new(),
                wait: wait_connections,
                carry_files,
                full,
                precopy: match precopy.as_str() {
                    "always" => Some(true),
                    "never" => Some(false),
                    _ => None,
                },
            };
            match (all, name) {
                (true, _) => checkpoint_all(order),
                (false, Some(name)) => checkpoint(&name, output, order),
                (false, None) => bail!("give a session's name, or --all"),
            }
        }
        Cmd::Daemon {
            name,
            socket,
            image,
            cols,
            rows,
            history,
            ready_fd,
            resume,
            resume_fd,
            watch_fd,
            force,
            real_clock,
            real_hostname,
            strict_cpu,
            lazy,
            cpu_baseline,
            autosave_secs,
            keep,
            shutdown_deadline_secs,
            command,
        } => Ok(daemon::run(daemon::DaemonConfig {
            autosave: autosave_secs.map(std::time::Duration::from_secs),
            keep,
            shutdown_deadline: std::time::Duration::from_secs(shutdown_deadline_secs),
            resume: resume.is_some().then_some(crate::restore::Options {
                force,
                real_clock,
                real_hostname,
                strict_cpu,
                lazy,
                // Decided by the daemon from who resumes what (`check_identity`).
                set_ids: false,
                track: false,
            }),
            cpu_baseline,
            resume_from: resume,
            resume_fd,
            watch_fd,
            name,
            socket,
            image,
            argv: command,
            size: WinSize { cols, rows },
            history_lines: history,
            ready_fd,
        })),
    }
}

/// The man pages, from the command-line definition itself (so they cannot drift from it).
fn man(dir: Option<PathBuf>) -> Result<i32> {
    let cmd = <Cli as clap::CommandFactory>::command();
    let Some(dir) = dir else {
        sys::die_quietly_on_broken_pipe();
        clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
        return Ok(0);
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let write = |name: String, page: clap::Command| -> Result<()> {
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(page)
            .title(name.clone())
            .render(&mut out)?;
        std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))
    };
    let mut cmd = cmd;
    cmd.build();
    for sub in cmd
        .get_subcommands()
        .filter(|c| !c.is_hide_set() && c.get_name() != "help")
    {
        let name = format!("crterm-{}", sub.get_name());
        write(name, sub.clone())?;
    }
    write("crterm".into(), cmd)?;
    Ok(0)
}

fn resolve_prefix(flag: Option<String>, config: &config::Config) -> Result<u8> {
    match flag {
        Some(p) => config::parse_key(&p).context("--prefix"),
        None => Ok(config.prefix),
    }
}

fn default_image(name: &str) -> Result<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .context("neither XDG_DATA_HOME nor HOME is set: give --image")?;
    Ok(base.join("crterm").join(format!("{name}.img")))
}

fn start(
    name: Option<String>,
    image: Option<PathBuf>,
    prefix: Option<String>,
    cpu_baseline: bool,
    autosave: AutosaveArgs,
    then: Then,
    command: Vec<String>,
) -> Result<i32> {
    let config = config::load()?;
    // A batch job started again: its session comes back from where it was saved.
    if then.detached()
        && let Some(path) = &image
        && path.exists()
    {
        let how = ResumeHow {
            opts: Default::default(),
            prefix,
            autosave,
            then,
        };
        return resume(path.clone(), name, how);
    }
    let (autosave, keep) = autosave.resolve(&config);
    let prefix = resolve_prefix(prefix, &config)?;
    if let Some(n) = &name {
        paths::check_name(n)?;
    }
    let size = session_size(then.detached())?;
    let dir = paths::runtime_dir()?;
    let argv = if command.is_empty() {
        vec![std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into())]
    } else {
        command
    };
    let name = match name {
        Some(n) => n,
        None => paths::default_name(&dir, &argv[0]),
    };
    let socket = paths::socket_path(&dir, &name);
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            bail!("a session named {name} is already running");
        }
        // Left by a daemon that died without cleaning up.
        std::fs::remove_file(&socket)
            .with_context(|| format!("cannot remove stale socket {}", socket.display()))?;
    }
    let image = match image {
        Some(i) => i,
        None => default_image(&name)?,
    };
    let watch = then.pair()?;
    let how = DaemonStart {
        name: &name,
        socket: &socket,
        image: &image,
        size,
        history: config.history_lines,
        argv: &argv,
        resume: None,
        resume_fd: None,
        watch: watch.as_ref().map(|(_, d)| d.as_fd()),
        cpu_baseline,
        opts: Default::default(),
        autosave,
        keep,
        shutdown_deadline: config.shutdown_deadline,
    };
    spawn_daemon(&how)?;
    attach_or_not(&socket, &name, prefix, then, watch, "started")
}

/// The size a new session's terminal gets: this terminal's; detached without one, 80x24.
fn session_size(detached: bool) -> Result<WinSize> {
    match client::terminal_size() {
        Err(_) if detached => Ok(WinSize { cols: 80, rows: 24 }),
        r => r,
    }
}

fn attach_or_not(
    socket: &std::path::Path,
    name: &str,
    prefix: u8,
    then: Then,
    watch: Option<Watch>,
    what: &str,
) -> Result<i32> {
    match then {
        Then::Attach => client::attach(socket, name, prefix),
        Then::Detach => {
            println!("{what} session {name}, detached: attach with crterm attach {name}");
            Ok(0)
        }
        Then::Wait(signals) => {
            println!(
                "{what} session {name}, detached: attach with crterm attach {name}; waiting for it to end (SIGTERM checkpoints it and exits {})",
                crate::pty_proxy::protocol::REQUEUE_STATUS
            );
            let (stream, daemon_end) = watch.context("no connection to watch the session on")?;
            // Only the daemon holds its end now: its going away is seen.
            drop(daemon_end);
            client::watch(stream, name, signals.as_fd())
        }
    }
}

/// How a resume is to go, beside its image and name.
struct ResumeHow {
    opts: crate::restore::Options,
    prefix: Option<String>,
    autosave: AutosaveArgs,
    then: Then,
}

/// Where saved sessions' images are: $XDG_DATA_HOME/crterm.
fn images_dir() -> Result<PathBuf> {
    Ok(default_image("x")?
        .parent()
        .expect("a directory")
        .to_path_buf())
}

/// `resume ARG`: a path, or the name of a saved session (ARG.img there) when no file of
/// that name is here.
fn saved_image(arg: PathBuf) -> Result<PathBuf> {
    let text = arg.to_string_lossy();
    if arg.exists() || text == "-" || text.contains('/') {
        return Ok(arg);
    }
    let saved = images_dir()?.join(format!("{text}.img"));
    if saved.exists() {
        return Ok(saved);
    }
    bail!(
        "cannot resume {text}: no such file, and no saved session of that name ({})",
        saved.display()
    )
}

/// The images saved in the images directory: the newest of each session (not the
/// generations kept beside it), sorted by name.
fn saved_images() -> Result<Vec<PathBuf>> {
    let dir = images_dir()?;
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    let mut v: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.ends_with(".img")
                && !name.starts_with('.')
                && !crate::ckpt::generations::is_generation_name(&name)
                && p.is_file()
        })
        .collect();
    v.sort();
    Ok(v)
}

/// `resume --all --detached`: every saved session not running now, each detached; one
/// line each, and exit status 0 only if every one came back.
fn resume_all(how: ResumeHow) -> Result<i32> {
    let dir = paths::runtime_dir()?;
    let mut all_ok = true;
    let images = saved_images()?;
    if images.is_empty() {
        println!("no saved sessions");
    }
    for image in images {
        let name = image
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if paths::check_name(&name).is_ok()
            && std::os::unix::net::UnixStream::connect(paths::socket_path(&dir, &name)).is_ok()
        {
            println!("{name}: running already");
            continue;
        }
        // A file that is not an image, or a damaged one: said, never resumed.
        if let Err(e) = crate::load::load(&image, false) {
            println!("{name}: unreadable, not resumed: {e}");
            all_ok = false;
            continue;
        }
        // A resume of its own, so that one image's failure is its own line.
        let exe = std::env::current_exe().context("cannot find crterm's own executable")?;
        let mut cmd = Command::new(exe);
        cmd.args(["resume", "--detached"]).arg(&image);
        if let Some(every) = how.autosave.autosave {
            cmd.arg("--autosave").arg(format!("{}s", every.as_secs()));
        }
        if let Some(k) = how.autosave.keep {
            cmd.arg("--keep").arg(k.to_string());
        }
        if how.opts.force {
            cmd.arg("--force");
        }
        let out = cmd.stdin(Stdio::null()).output()?;
        let said = String::from_utf8_lossy(if out.status.success() {
            &out.stdout
        } else {
            &out.stderr
        })
        .trim()
        .trim_start_matches("crterm: ")
        .replace('\n', " ");
        all_ok &= out.status.success();
        println!("{name}: {said}");
    }
    Ok(if all_ok { 0 } else { 1 })
}

fn resume(file: PathBuf, name: Option<String>, how: ResumeHow) -> Result<i32> {
    let ResumeHow {
        opts,
        prefix,
        autosave,
        then,
    } = how;
    let detached = then.detached();
    let config = config::load()?;
    let (autosave, keep) = autosave.resolve(&config);
    let prefix = resolve_prefix(prefix, &config)?;
    if let Some(n) = &name {
        paths::check_name(n)?;
    }
    // `-`: the image comes on standard input (`ssh host cat s.img | crterm resume -`); it
    // is read whole and checked before anything starts, and the session's terminal is
    // then the controlling terminal, /dev/tty, as for `less`.
    let from_stdin = file.as_os_str() == "-";
    if from_stdin && detached {
        bail!("cannot resume - detached: give the image as a file");
    }
    let stdin_image = if from_stdin {
        Some(read_stdin_image()?)
    } else {
        None
    };
    let file = if from_stdin {
        PathBuf::from(format!(
            "/proc/self/fd/{}",
            stdin_image.as_ref().expect("read").as_raw_fd()
        ))
    } else if file.is_relative() {
        std::env::current_dir()?.join(file)
    } else {
        file
    };
    // One clear line for a file that is not there or not an image file, before anything
    // starts.
    crate::image::open_image(&file).with_context(|| format!("cannot resume {}", file.display()))?;
    let size = session_size(detached)?;
    let dir = paths::runtime_dir()?;
    let explicit = name.is_some();
    let stem: String = (if from_stdin { None } else { file.file_stem() })
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let stem = if stem.is_empty() {
        "resumed".to_string()
    } else {
        stem
    };
    // The image's name, or the next free one; two resumes of one image at once race for
    // a name, and the one that loses takes the next.
    let candidates: Vec<String> = match name {
        Some(n) => vec![n],
        None => std::iter::once(stem.clone())
            .chain((2..100).map(|i| format!("{stem}-{i}")))
            .collect(),
    };
    for name in candidates {
        let socket = paths::socket_path(&dir, &name);
        if socket.exists() {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                if explicit {
                    bail!("a session named {name} is already running");
                }
                continue;
            }
            let _ = std::fs::remove_file(&socket);
        }
        // Later checkpoints go back to the image it came from (one from a stream: where
        // a session of its name keeps its image).
        let image = match from_stdin {
            true => default_image(&name)?,
            false => file.clone(),
        };
        let watch = then.pair()?;
        let how = DaemonStart {
            name: &name,
            socket: &socket,
            image: &image,
            size,
            history: config.history_lines,
            argv: &[],
            resume: Some(&file),
            resume_fd: stdin_image.as_ref().map(|f| f.as_fd()),
            watch: watch.as_ref().map(|(_, d)| d.as_fd()),
            cpu_baseline: false,
            opts,
            autosave,
            keep,
            shutdown_deadline: config.shutdown_deadline,
        };
        match spawn_daemon(&how) {
            Ok(()) => return attach_or_not(&socket, &name, prefix, then, watch, "resumed"),
            Err(e) if !explicit && e.to_string().contains("is already running") => continue,
            Err(e) => return Err(e),
        }
    }
    bail!("no free session name for {stem}")
}

/// How to start a session daemon.
struct DaemonStart<'a> {
    name: &'a str,
    socket: &'a std::path::Path,
    image: &'a std::path::Path,
    size: WinSize,
    history: usize,
    argv: &'a [String],
    resume: Option<&'a std::path::Path>,
    /// The image as a descriptor the daemon inherits (`resume` names it).
    resume_fd: Option<std::os::fd::BorrowedFd<'a>>,
    /// The daemon's end of a waiting client's connection (`--wait`), inherited.
    watch: Option<std::os::fd::BorrowedFd<'a>>,
    /// Start the command with glibc held to x86-64-v2 (`--cpu baseline`).
    cpu_baseline: bool,
    opts: crate::restore::Options,
    autosave: Option<std::time::Duration>,
    keep: usize,
    shutdown_deadline: std::time::Duration,
}

/// Read an image from standard input into memory (a memfd, which the daemon inherits),
/// check it whole, and make the controlling terminal this process's standard input (and
/// output, when that is not a terminal either). A cut or damaged stream: one line, and
/// nothing has started.
fn read_stdin_image() -> Result<std::os::fd::OwnedFd> {
    let stdin = std::io::stdin();
    if sys::isatty(stdin.as_fd()) {
        bail!(
            "cannot resume -: standard input is a terminal; send the image into it (crterm resume - < FILE)"
        );
    }
    let memfd = sys::memfd(c"crterm-image").context("cannot resume -")?;
    let mut file = std::fs::File::from(memfd);
    std::io::copy(&mut stdin.lock(), &mut file)
        .context("cannot resume -: reading standard input")?;
    let memfd = std::os::fd::OwnedFd::from(file);
    crate::load::load(
        std::path::Path::new(&format!("/proc/self/fd/{}", memfd.as_raw_fd())),
        false,
    )
    .map_err(|e| anyhow::anyhow!("cannot resume the image from standard input: {e}"))?;
    let tty = sys::open(c"/dev/tty", libc::O_RDWR | libc::O_CLOEXEC).context(
        "cannot resume -: no terminal to resume in (/dev/tty); give the image as a file",
    )?;
    sys::dup2(tty.as_raw_fd(), 0)?;
    if !sys::isatty(std::io::stdout().as_fd()) {
        sys::dup2(tty.as_raw_fd(), 1)?;
    }
    Ok(memfd)
}

/// Start the daemon in its own session, detached from this terminal, and wait until it
/// says the session runs (or why not).
fn spawn_daemon(how: &DaemonStart) -> Result<()> {
    let DaemonStart {
        name,
        socket,
        image,
        size,
        history,
        argv,
        resume,
        resume_fd,
        watch,
        cpu_baseline,
        opts,
        autosave,
        keep,
        shutdown_deadline,
    } = *how;
    let (ready_r, ready_w) = sys::pipe()?;
    sys::set_cloexec(ready_w.as_fd(), false)?;
    let exe = std::env::current_exe().context("cannot find crterm's own executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("__daemon")
        .arg("--name")
        .arg(name)
        .arg("--socket")
        .arg(socket)
        .arg("--image")
        .arg(image)
        .arg("--cols")
        .arg(size.cols.to_string())
        .arg("--rows")
        .arg(size.rows.to_string())
        .arg("--history")
        .arg(history.to_string())
        .arg("--ready-fd")
        .arg(ready_w.as_raw_fd().to_string());
    if let Some(path) = resume {
        cmd.arg("--resume").arg(path);
    }
    if let Some(fd) = watch {
        let at = fd.as_raw_fd();
        sys::pass_fd_as(&mut cmd, fd.try_clone_to_owned()?, at);
        cmd.arg("--watch-fd").arg(at.to_string());
    }
    if let Some(fd) = resume_fd {
        // Inherited under its own number, which `resume` names.
        let at = fd.as_raw_fd();
        sys::pass_fd_as(&mut cmd, fd.try_clone_to_owned()?, at);
        cmd.arg("--resume-fd").arg(at.to_string());
    }
    if opts.force {
        cmd.arg("--force");
    }
    if opts.real_clock {
        cmd.arg("--real-clock");
    }
    if opts.real_hostname {
        cmd.arg("--real-hostname");
    }
    if opts.strict_cpu {
        cmd.arg("--strict-cpu");
    }
    if opts.lazy {
        cmd.arg("--lazy");
    }
    if let Some(every) = autosave {
        cmd.arg("--autosave-secs").arg(every.as_secs().to_string());
    }
    cmd.arg("--keep")
        .arg(keep.to_string())
        .arg("--shutdown-deadline-secs")
        .arg(shutdown_deadline.as_secs().to_string());
    if cpu_baseline {
        // The session's programs inherit the daemon's environment.
        cmd.arg("--cpu-baseline").env(
            "GLIBC_TUNABLES",
            crate::machine::baseline_environment(std::env::var("GLIBC_TUNABLES").ok().as_deref()),
        );
    }
    cmd.arg("--")
        .args(argv)
        .env("CRTERM_SESSION", name)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid and sigprocmask are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            // A waiting client (`--wait`) holds signals blocked for its signalfd; the
            // daemon blocks what it takes itself.
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the session daemon")?;
    drop(ready_w);
    // A resume that takes a while: how much of the session's memory is in.
    let daemon = child.id() as i32;
    let _progress = resume.map(|_| {
        crate::progress::Progress::start("resume", move || crate::progress::tree_memory(daemon))
    });
    // One line: "ok", or "err <reason>". EOF without one: the daemon died.
    let mut answer = String::new();
    let _ = std::io::BufReader::new(std::fs::File::from(ready_r)).read_line(&mut answer);
    let answer = answer.trim_end_matches('\n');
    if answer == "ok" {
        return Ok(());
    }
    let _ = child.wait();
    match answer.strip_prefix("err ") {
        Some(reason) => bail!("{reason}"),
        None => bail!("the session daemon failed to start"),
    }
}

/// Ask a daemon one question (`Info`, `Checkpoint`) and return its first answer.
fn ask(name: &str, msg: ToDaemon, timeout_secs: u64) -> Result<ToClient> {
    ask_passing(name, msg, None, timeout_secs)
}

/// `ask`, sending descriptor `passed` with the question.
fn ask_passing(
    name: &str,
    msg: ToDaemon,
    passed: Option<std::os::fd::BorrowedFd>,
    timeout_secs: u64,
) -> Result<ToClient> {
    let dir = paths::runtime_dir()?;
    let mut stream = client::connect(&paths::socket_path(&dir, name), name)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(timeout_secs)))?;
    let frame = msg.encode();
    match passed {
        // The descriptor rides on the first byte; the rest follows as usual.
        Some(fd) => {
            sys::send_with_fd(stream.as_fd(), &frame[..1], fd)?;
            stream.write_all(&frame[1..])?;
        }
        None => stream.write_all(&frame)?,
    }
    let mut reader = FrameReader::default();
    let mut buf = [0u8; 4096];
    loop {
        if let Some((kind, payload)) = reader.next_frame()? {
            return Ok(ToClient::decode(kind, &payload)?);
        }
        // Stopped and continued (Ctrl-Z, fg), a read with a timeout returns EINTR: the
        // answer is still coming.
        let n = match stream.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r?,
        };
        if n == 0 {
            bail!("session {name} closed the connection");
        }
        reader.push(&buf[..n]);
    }
}

fn list() -> Result<i32> {
    let dir = paths::runtime_dir()?;
    let mut rows = Vec::new();
    for name in paths::session_names(&dir)? {
        let socket = paths::socket_path(&dir, &name);
        match ask(&name, ToDaemon::Info, 5) {
            Ok(ToClient::Info(info)) => rows.push(info),
            Ok(_) => {}
            Err(_) => {
                // No daemon behind it: a stale socket from a crashed daemon.
                if std::os::unix::net::UnixStream::connect(&socket).is_err() {
                    let _ = std::fs::remove_file(&socket);
                }
            }
        }
    }
    if rows.is_empty() {
        println!("no sessions");
    } else {
        println!(
            "{:<20} {:>8}  {:<19}  {:<8}  COMMAND",
            "NAME", "PID", "STARTED", "ATTACHED"
        );
    }
    for r in rows {
        println!(
            "{:<20} {:>8}  {:<19}  {:<8}  {}",
            r.name,
            r.daemon_pid,
            format_time(r.started_unix),
            if r.attached { "yes" } else { "no" },
            r.command
        );
    }
    list_saved()?;
    Ok(0)
}

/// The saved sessions: each image in the images directory with when it was made, its
/// size, how many generations are kept of it, whether it resumes here (and if not, the
/// first reason), and its command. A file that is not a readable image is listed as such.
fn list_saved() -> Result<()> {
    let images = saved_images()?;
    if images.is_empty() {
        return Ok(());
    }
    println!();
    println!(
        "{:<20} {:<19}  {:>9}  {:>4}  {:<5}  COMMAND",
        "SAVED", "WHEN", "SIZE", "GENS", "HERE"
    );
    for path in images {
        let name = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        let loaded = match crate::load::load(&path, false) {
            Ok(l) => l,
            Err(e) => {
                println!("{name:<20} unreadable: {e}");
                continue;
            }
        };
        let (_, refusals) = crate::check::image_report(&path, &loaded, false);
        let here = match refusals.first() {
            None => "yes".to_string(),
            Some(why) => format!("no ({why})"),
        };
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        let gens = 1 + std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        crate::ckpt::generations::is_generation_of(
                            &path,
                            &e.file_name().to_string_lossy(),
                        )
                    })
                    .count()
            })
            .unwrap_or(0);
        println!(
            "{:<20} {:<19}  {:>5.1} MiB  {:>4}  {:<5}  {}",
            name,
            format_time(loaded.image.info.created_unix),
            size as f64 / (1 << 20) as f64,
            gens,
            here,
            loaded.record.command
        );
        if let Some((when, why)) = crate::ckpt::generations::failure_note(&path) {
            println!(
                "{:<20} the checkpoint at {} failed ({why}): this image is the one from before",
                "",
                format_time(when)
            );
        }
    }
    Ok(())
}

/// Local time as `YYYY-MM-DD HH:MM:SS`.
fn format_time(unix: u64) -> String {
    let t = unix as libc::time_t;
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: localtime_r writes only into `tm`.
    unsafe { libc::localtime_r(&t, &mut tm) };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

fn checkpoint(name: &str, output: Option<PathBuf>, mut order: CheckpointOrder) -> Result<i32> {
    paths::check_name(name)?;
    // The daemon has another working directory: send it an absolute path.
    let stream = output.as_ref().is_some_and(|p| p.as_os_str() == "-");
    if stream && sys::isatty(std::io::stdout().as_fd()) {
        bail!("standard output is a terminal: send the image into a pipe or a file (-o - | ...)");
    }
    let path = match output {
        Some(p) if stream => p,
        Some(p) if p.is_relative() => std::env::current_dir()?.join(p),
        Some(p) => p,
        None => PathBuf::new(),
    };
    order.path = path.display().to_string();
    let wait = order.wait;
    // On a terminal, a checkpoint that takes a while shows what it has written.
    let watched = match &order.path {
        _ if stream || !sys::isatty(std::io::stderr().as_fd()) => None,
        p if p.is_empty() => match ask(name, ToDaemon::Info, 5) {
            Ok(ToClient::Info(info)) => Some(PathBuf::from(info.image)),
            _ => None,
        },
        p => Some(PathBuf::from(p)),
    };
    let progress = watched.map(|p| {
        crate::progress::Progress::start("checkpoint", move || crate::progress::image_written(&p))
    });
    let msg = ToDaemon::Checkpoint(order);
    let stdout = std::io::stdout();
    let passed = stream.then(|| stdout.as_fd());
    let answer = ask_passing(name, msg, passed, 600 + u64::from(wait));
    drop(progress);
    match answer? {
        // The image went to standard output: the report goes to standard error.
        ToClient::Checkpointed { ok: true, text } if stream => {
            eprintln!("{text}");
            Ok(0)
        }
        ToClient::Checkpointed { ok: true, text } => {
            println!("{text}");
            Ok(0)
        }
        ToClient::Checkpointed { ok: false, text } | ToClient::Refused(text) => bail!("{text}"),
        _ => bail!("unexpected answer from session {name}"),
    }
}

/// `checkpoint --all`: every session of this user at once, each into its own image; a
/// line for each as it is done, and exit status 0 only if every one succeeded.
fn checkpoint_all(order: CheckpointOrder) -> Result<i32> {
    let dir = paths::runtime_dir()?;
    // (A socket no daemon is behind is a crashed daemon's: no session.)
    let names: Vec<String> = paths::session_names(&dir)?
        .into_iter()
        .filter(|n| std::os::unix::net::UnixStream::connect(paths::socket_path(&dir, n)).is_ok())
        .collect();
    if names.is_empty() {
        println!("no sessions");
        return Ok(0);
    }
    let timeout = 600 + u64::from(order.wait);
    let (tx, rx) = std::sync::mpsc::channel();
    for name in names {
        let (tx, order) = (tx.clone(), order.clone());
        std::thread::spawn(move || {
            let answer = match ask(&name, ToDaemon::Checkpoint(order), timeout) {
                Ok(ToClient::Checkpointed { ok, text }) => (ok, text),
                Ok(ToClient::Refused(text)) => (false, text),
                Ok(_) => (false, format!("unexpected answer from session {name}")),
                Err(e) => (false, format!("{e:#}")),
            };
            let _ = tx.send((name, answer));
        });
    }
    drop(tx);
    let mut all_ok = true;
    let stdout = std::io::stdout();
    for (name, (ok, text)) in rx {
        all_ok &= ok;
        let _ = writeln!(stdout.lock(), "{name}: {text}");
    }
    Ok(if all_ok { 0 } else { 1 })
}

/// A size as `4096`, `64K`, `4M`, `1G`.
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (as 4096, 64K, 4M, 1G)"))?;
    let scale = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return Err(format!("{text:?} is not a size (as 4096, 64K, 4M, 1G)")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too large"))
}
