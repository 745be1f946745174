//! Helpers shared by the test binaries: a private tmux server as the real terminal,
//! unique temporary directories, and a reader of `capture-pane -e` output that is
//! independent of crterm's own model.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name no other test (in this run or a parallel one) uses.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{n}-{nanos:x}", std::process::id())
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let p = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A tmux server of its own (own socket, no config file), killed on drop.
pub struct Tmux {
    pub socket: String,
    /// Run tmux (and so everything in its panes) as this user, via runuser.
    pub user: Option<String>,
    pub env: Vec<(String, String)>,
}

impl Tmux {
    pub fn new() -> Tmux {
        Tmux {
            socket: unique("crterm-t"),
            user: None,
            env: Vec::new(),
        }
    }

    pub fn as_user(user: &str, env: Vec<(String, String)>) -> Tmux {
        Tmux {
            socket: unique("crterm-t"),
            user: Some(user.to_string()),
            env,
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Output {
        let mut c = match &self.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--", "env"]);
                for (k, v) in &self.env {
                    c.arg(format!("{k}={v}"));
                }
                c.arg("tmux");
                c
            }
            None => {
                let mut c = Command::new("tmux");
                c.envs(self.env.iter().map(|(k, v)| (k, v)));
                c
            }
        };
        c.args(["-L", &self.socket, "-f", "/dev/null"]);
        c.args(args);
        c.env_remove("TMUX");
        c.output().expect("run tmux")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(
            out.status.success(),
            "tmux {:?} failed: {}",
            args,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Start a session (window 0) running `shell_cmd` in a pane of the given size. The
    /// pane stays after its program exits (its last screen and status can be read); the
    /// option is set in the same tmux command, before the program can exit.
    pub fn start(&self, session: &str, cols: u16, lines: u16, shell_cmd: &str) {
        self.ok(&[
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            &cols.to_string(),
            "-y",
            &lines.to_string(),
            shell_cmd,
            ";",
            "set-option",
            "-t",
            session,
            "remain-on-exit",
            "on",
            ";",
            "set-option",
            "-t",
            session,
            "status",
            "off",
        ]);
    }

    pub fn send_keys(&self, target: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", target];
        args.extend_from_slice(keys);
        self.ok(&args);
    }

    /// Type literal text.
    pub fn type_text(&self, target: &str, text: &str) {
        self.ok(&["send-keys", "-t", target, "-l", text]);
    }

    pub fn capture(&self, target: &str) -> String {
        self.ok(&["capture-pane", "-p", "-e", "-N", "-t", target])
    }

    pub fn capture_plain(&self, target: &str) -> String {
        self.ok(&["capture-pane", "-p", "-t", target])
    }

    pub fn display(&self, target: &str, format: &str) -> String {
        self.ok(&["display-message", "-p", "-t", target, format])
            .trim_end_matches('\n')
            .to_string()
    }

    /// Wait until the pane's program has ended (tmux's `pane_dead`; with remain-on-exit
    /// the pane stays): returns the screen. ("Pane is dead" on the screen is not enough:
    /// when the terminal's end reaches tmux before the process's status, tmux marks the
    /// pane dead without drawing it.)
    pub fn wait_dead(&self, target: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            if self.display(target, "#{pane_dead}") == "1" {
                return self.capture_plain(target);
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out waiting for pane {target} to end; screen:\n{}\nprocesses:\n{}",
                    self.capture_plain(target),
                    process_forest()
                );
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Wait until the plain screen contains `needle`.
    pub fn wait_text(&self, target: &str, needle: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let last = self.capture_plain(target);
            if last.contains(needle) {
                return last;
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out waiting for {needle:?} in pane {target}; screen:\n{last}\n\
                     processes:\n{}",
                    process_forest()
                );
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Wait until the pane's screen (with attributes) stops changing.
    pub fn settle(&self, target: &str) -> String {
        let mut prev = self.capture(target);
        let mut stable = 0;
        for _ in 0..200 {
            std::thread::sleep(Duration::from_millis(40));
            let now = self.capture(target);
            if now == prev {
                stable += 1;
                if stable >= 3 {
                    return now;
                }
            } else {
                stable = 0;
                prev = now;
            }
        }
        prev
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
        // tmux leaves its socket file behind when its server ends (killed, or after its
        // last session): remove it too.
        let uid = match &self.user {
            Some(u) => user_ids(u).0,
            None => unsafe { libc::geteuid() },
        };
        let dir = std::env::var("TMUX_TMPDIR").unwrap_or_else(|_| "/tmp".into());
        let _ = std::fs::remove_file(format!("{dir}/tmux-{uid}/{}", self.socket));
    }
}

/// One cell as tmux reports it: the glyph (with combining marks) and its SGR state as a
/// canonical string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapCell {
    pub text: String,
    pub sgr: String,
}

/// Read `capture-pane -p -e -N` output into rows of cells. Wide characters become one
/// cell (tmux prints them once). Trailing default blanks are dropped.
pub fn parse_capture(s: &str) -> Vec<Vec<CapCell>> {
    let mut rows = Vec::new();
    // tmux's SGR and shift state carry over line ends: each line only says what changed.
    let mut shifted = false;
    let mut state = SgrState::default();
    for line in s.split('\n') {
        let mut cells: Vec<CapCell> = Vec::new();
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            // tmux writes line-drawing cells as SO, the ASCII letter, SI.
            if c == '\x0e' || c == '\x0f' {
                shifted = c == '\x0e';
                continue;
            }
            let c = if shifted { dec_graphics(c) } else { c };
            if c == '\x1b' {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    let mut params = String::new();
                    let mut fin = ' ';
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() || c == '@' || c == '~' {
                            fin = c;
                            break;
                        }
                        params.push(c);
                    }
                    if fin == 'm' {
                        state.apply(&params);
                    }
                } else {
                    // ESC ( 0 and friends: charset switches tmux may emit
                    chars.next();
                    chars.next();
                }
                continue;
            }
            if unicode_width::UnicodeWidthChar::width(c) == Some(0) && !cells.is_empty() {
                cells.last_mut().unwrap().text.push(c);
                continue;
            }
            cells.push(CapCell {
                text: c.to_string(),
                sgr: state.canonical(),
            });
        }
        trim_cells(&mut cells);
        rows.push(cells);
    }
    rows
}

/// The DEC special graphics set (VT100 line drawing) for the letters programs use.
fn dec_graphics(c: char) -> char {
    const FROM: &str = "`abcdefghijklmnopqrstuvwxyz{|}~_";
    const TO: &str = "◆▒␉␌␍␊°±␤␋┘┐┌└┼⎺⎻─⎼⎽├┤┴┬│≤≥π≠£· ";
    FROM.chars()
        .position(|f| f == c)
        .and_then(|i| TO.chars().nth(i))
        .unwrap_or(c)
}

pub fn trim_cells(cells: &mut Vec<CapCell>) {
    // tmux leaves erased cells at the end of a line out of a capture even when they
    // have a background colour, so trailing blanks compare by their glyph alone.
    while cells.last().is_some_and(|c| {
        c.text == " "
            && c.sgr
                .split(' ')
                .all(|a| a.is_empty() || a.starts_with("bg="))
    }) {
        cells.pop();
    }
}

#[derive(Default, Clone)]
pub struct SgrState {
    pub attrs: std::collections::BTreeSet<String>,
    pub fg: Option<String>,
    pub bg: Option<String>,
}

impl SgrState {
    pub fn apply(&mut self, params: &str) {
        let parts: Vec<&str> = if params.is_empty() {
            vec!["0"]
        } else {
            params.split(';').collect()
        };
        let mut i = 0;
        while i < parts.len() {
            let p = parts[i];
            let n: i64 = p.split(':').next().unwrap().parse().unwrap_or(0);
            match n {
                0 => *self = SgrState::default(),
                1 => self.add("bold"),
                2 => self.add("dim"),
                3 => self.add("italic"),
                4 => {
                    for u in ["ul", "ul2", "ul3", "ul4", "ul5"] {
                        self.attrs.remove(u);
                    }
                    match p.split(':').nth(1) {
                        Some("0") => {}
                        Some("2") => self.add("ul2"),
                        Some("3") => self.add("ul3"),
                        Some("4") => self.add("ul4"),
                        Some("5") => self.add("ul5"),
                        _ => self.add("ul"),
                    }
                }
                5 | 6 => self.add("blink"),
                7 => self.add("reverse"),
                8 => self.add("hidden"),
                9 => self.add("strike"),
                21 => self.add("ul2"),
                22 => {
                    self.attrs.remove("bold");
                    self.attrs.remove("dim");
                }
                23 => {
                    self.attrs.remove("italic");
                }
                24 => {
                    for u in ["ul", "ul2", "ul3", "ul4", "ul5"] {
                        self.attrs.remove(u);
                    }
                }
                25 => {
                    self.attrs.remove("blink");
                }
                27 => {
                    self.attrs.remove("reverse");
                }
                28 => {
                    self.attrs.remove("hidden");
                }
                29 => {
                    self.attrs.remove("strike");
                }
                30..=37 => self.fg = Some(format!("n{}", n - 30)),
                90..=97 => self.fg = Some(format!("n{}", n - 90 + 8)),
                40..=47 => self.bg = Some(format!("n{}", n - 40)),
                100..=107 => self.bg = Some(format!("n{}", n - 100 + 8)),
                39 => self.fg = None,
                49 => self.bg = None,
                38 | 48 | 58 => {
                    let (col, used) = ext_color(&parts[i..]);
                    i += used;
                    if n == 38 {
                        self.fg = col;
                    } else if n == 48 {
                        self.bg = col;
                    }
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }

    fn add(&mut self, a: &str) {
        self.attrs.insert(a.to_string());
    }

    pub fn canonical(&self) -> String {
        let mut s = String::new();
        for a in &self.attrs {
            s.push_str(a);
            s.push(' ');
        }
        if let Some(f) = &self.fg {
            s.push_str(&format!("fg={f} "));
        }
        if let Some(b) = &self.bg {
            s.push_str(&format!("bg={b} "));
        }
        s.trim_end().to_string()
    }
}

/// Parse `38;5;N`, `38;2;R;G;B` or their colon forms; returns the colour and how many
/// `;`-separated parts were used.
fn ext_color(parts: &[&str]) -> (Option<String>, usize) {
    let first = parts[0];
    if first.contains(':') {
        let sub: Vec<&str> = first.split(':').collect();
        return match sub.get(1) {
            Some(&"5") => (Some(format!("i{}", sub.get(2).unwrap_or(&"0"))), 1),
            Some(&"2") => {
                let nums: Vec<&str> = sub[2..].iter().copied().filter(|s| !s.is_empty()).collect();
                let nums = if nums.len() > 3 {
                    &nums[nums.len() - 3..]
                } else {
                    &nums[..]
                };
                (Some(format!("rgb{}", nums.join(","))), 1)
            }
            _ => (None, 1),
        };
    }
    match parts.get(1) {
        Some(&"5") => (
            Some(format!("i{}", parts.get(2).unwrap_or(&"0"))),
            3.min(parts.len()),
        ),
        Some(&"2") => (
            Some(format!(
                "rgb{},{},{}",
                parts.get(2).unwrap_or(&"0"),
                parts.get(3).unwrap_or(&"0"),
                parts.get(4).unwrap_or(&"0")
            )),
            5.min(parts.len()),
        ),
        _ => (None, 1),
    }
}

// ---- crterm under test ------------------------------------------------------------------

pub const TEST_USER: &str = "crterm-test";
pub const OTHER_USER: &str = "crterm-test2";

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

static USERADD: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Make sure an ordinary user exists for the unprivileged tests (needs root).
pub fn ensure_user(name: &str) {
    let _g = USERADD.lock().unwrap();
    let exists = Command::new("id")
        .args(["-u", name])
        .output()
        .is_ok_and(|o| o.status.success());
    if !exists {
        assert!(
            is_root(),
            "user {name} is missing and only root can create it"
        );
        let out = Command::new("useradd")
            .args(["-m", "-s", "/bin/bash", name])
            .output()
            .expect("run useradd");
        assert!(
            out.status.success() || out.status.code() == Some(9),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

pub fn user_ids(name: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let o = Command::new("id").args([flag, name]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
    };
    (id("-u"), id("-g"))
}

/// The crterm binary Cargo built for the test binaries (none for an example that borrows
/// these helpers).
fn crterm_binary() -> &'static str {
    match option_env!("CARGO_BIN_EXE_crterm") {
        Some(b) => b,
        None => panic!("no crterm binary was built for this program"),
    }
}

/// One test's world: a user (an ordinary one when the tests run as root), a private
/// runtime and config directory, a copy of crterm that user can run, and a tmux server
/// of that user as the outer terminal. Dropping it ends every session it started.
pub struct Env {
    pub user: Option<String>,
    pub dir: TempDir,
    pub bin: PathBuf,
    pub runtime: PathBuf,
    pub tmux: Tmux,
}

impl Env {
    /// As the unprivileged test user when running as root, else as ourselves.
    pub fn unprivileged() -> Env {
        if is_root() {
            Env::as_user(Some(TEST_USER))
        } else {
            Env::as_user(None)
        }
    }

    /// As root: the path without a user namespace. Only when the tests run as root.
    pub fn root() -> Env {
        assert!(is_root(), "this test needs root");
        Env::as_user(None)
    }

    pub fn as_user(user: Option<&str>) -> Env {
        if let Some(u) = user {
            ensure_user(u);
        }
        let dir = TempDir::new("crterm-env");
        let bin_dir = dir.path().join("bin");
        let runtime = dir.path().join("run");
        for d in [
            &bin_dir,
            &runtime,
            &dir.path().join("config"),
            &dir.path().join("data"),
        ] {
            std::fs::create_dir_all(d).unwrap();
        }
        let bin = bin_dir.join("crterm");
        std::fs::copy(crterm_binary(), &bin).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
        if let Some(u) = user {
            let out = Command::new("chown")
                .args(["-R", &format!("{u}:{u}")])
                .arg(dir.path())
                .output()
                .unwrap();
            assert!(out.status.success());
        }
        let env = vec![
            ("XDG_RUNTIME_DIR".to_string(), runtime.display().to_string()),
            (
                "XDG_CONFIG_HOME".to_string(),
                dir.path().join("config").display().to_string(),
            ),
            (
                "XDG_DATA_HOME".to_string(),
                dir.path().join("data").display().to_string(),
            ),
            (
                "XDG_CACHE_HOME".to_string(),
                dir.path().join("cache").display().to_string(),
            ),
            ("SHELL".to_string(), "/bin/bash".to_string()),
            (
                "PATH".to_string(),
                "/usr/local/bin:/usr/bin:/bin".to_string(),
            ),
            ("TERM".to_string(), "screen".to_string()),
        ];
        let tmux = match user {
            Some(u) => Tmux::as_user(u, env),
            None => Tmux {
                socket: unique("crterm-t"),
                user: None,
                env,
            },
        };
        Env {
            user: user.map(str::to_string),
            dir,
            bin,
            runtime,
            tmux,
        }
    }

    pub fn crterm_cmd(&self) -> String {
        self.bin.display().to_string()
    }

    /// Run crterm without a terminal, as this env's user, with its environment.
    pub fn crterm(&self, args: &[&str]) -> Output {
        self.run(&[&[self.bin.to_str().unwrap()][..], args].concat(), None)
    }

    /// Run a command as this env's user with its environment; `stdin` is a file or null.
    pub fn run(&self, argv: &[&str], stdin: Option<&Path>) -> Output {
        let mut c = self.command(argv);
        c.stdin(match stdin {
            Some(p) => std::process::Stdio::from(std::fs::File::open(p).unwrap()),
            None => std::process::Stdio::null(),
        });
        c.output().expect("run command")
    }

    /// A command that runs as this env's user with its environment.
    pub fn command(&self, argv: &[&str]) -> Command {
        match &self.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--", "env"]);
                for (k, v) in &self.tmux.env {
                    c.arg(format!("{k}={v}"));
                }
                c.args(argv);
                c
            }
            None => {
                let mut c = Command::new(argv[0]);
                c.args(&argv[1..]);
                c.envs(self.tmux.env.iter().map(|(k, v)| (k, v)));
                c
            }
        }
    }

    /// crterm run directly as this env's user (no runuser between: its exit and signals
    /// are crterm's own), with this env's environment only.
    pub fn crterm_direct(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args).env_clear();
        cmd.envs(self.tmux.env.iter().map(|(k, v)| (k, v)));
        if let Some(u) = &self.user {
            use std::os::unix::process::CommandExt;
            let (uid, gid) = user_ids(u);
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// A tmux pane (its own tmux session) running `cmd` through sh.
    pub fn pane(&self, target: &str, cmd: &str) {
        self.tmux.start(target, 100, 30, cmd);
    }

    /// Live sessions as (name, daemon pid), from `crterm ls`.
    pub fn sessions(&self) -> Vec<(String, i32)> {
        let out = self.crterm(&["ls"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((f.next()?.to_string(), f.next()?.parse().ok()?))
            })
            .collect()
    }

    pub fn daemon_pid(&self, name: &str) -> i32 {
        wait_for(
            &format!("session {name} to be listed"),
            Duration::from_secs(10),
            || {
                self.sessions()
                    .into_iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, p)| p)
            },
        )
    }

    /// Type the prefix key (C-\ unless configured otherwise) and then `key`.
    pub fn prefix(&self, target: &str, key: &str) {
        self.tmux.ok(&["send-keys", "-t", target, "-H", "1c"]);
        self.tmux.type_text(target, key);
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // End every session this test started; the daemons kill their namespaces. Found
        // by this test's own copy of crterm, so also when `crterm ls` cannot list them (a
        // test that broke the runtime directory).
        let mut daemons: Vec<i32> = self.sessions().into_iter().map(|(_, p)| p).collect();
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                let ours = std::fs::read_link(p.path().join("exe")).is_ok_and(|e| e == self.bin);
                let daemon = std::fs::read_to_string(p.path().join("cmdline"))
                    .is_ok_and(|c| c.contains("__daemon"));
                if ours && daemon && !daemons.contains(&pid) {
                    daemons.push(pid);
                }
            }
        }
        // SIGINT: ended at once (SIGTERM would checkpoint them first).
        for &pid in &daemons {
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        for pid in daemons {
            let _ = wait_gone(pid, Duration::from_secs(5));
        }
    }
}

/// A process is gone when it does not exist or is a zombie.
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

pub fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if process_gone(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Children of a process (from /proc/PID/task/*/children).
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    out
}

/// A process and all its descendants.
pub fn process_tree(pid: i32) -> Vec<i32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let kids = children(all[i]);
        all.extend(kids);
        i += 1;
    }
    all
}

/// A process's state letter, parent, group, session and terminal's foreground group,
/// from its `stat` (the host's numbers).
pub fn stat_of(pid: i32) -> Option<(char, i32, i32, i32, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((
        f.first()?.chars().next()?,
        f.get(1)?.parse().ok()?,
        f.get(2)?.parse().ok()?,
        f.get(3)?.parse().ok()?,
        f.get(5)?.parse().ok()?,
    ))
}

pub fn comm_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Bytes waiting to be read at the terminal process `pid` holds as `fd` (FIONREAD
/// through a descriptor of our own: nothing is consumed).
pub fn tty_bytes_waiting(pid: i32, fd: i32) -> usize {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(format!("/proc/{pid}/fd/{fd}"))
    else {
        return 0;
    };
    let mut n: libc::c_int = 0;
    if unsafe { libc::ioctl(f.as_raw_fd(), libc::FIONREAD, &mut n) } != 0 {
        return 0;
    }
    n.max(0) as usize
}

impl Env {
    /// Wait until a process named `comm` of session `name` is in the foreground of its
    /// terminal and asleep (waiting for input or for time): what is typed now reaches it,
    /// and Ctrl-Z stops it. Returns its pid.
    pub fn wait_foreground(&self, name: &str, comm: &str) -> i32 {
        let daemon = self.daemon_pid(name);
        wait_for(
            &format!("{comm} in the foreground of session {name}"),
            Duration::from_secs(20),
            || {
                process_tree(daemon).into_iter().find(|&p| {
                    comm_of(p) == comm
                        && stat_of(p)
                            .is_some_and(|(state, _, pgrp, _, tpgid)| state == 'S' && pgrp == tpgid)
                })
            },
        )
    }

    /// Wait until `len` bytes typed at the terminal of process `pid` (its standard input)
    /// are waiting there, unread.
    pub fn wait_typed(&self, pid: i32, len: usize) {
        wait_for(
            "the keys to reach the terminal",
            Duration::from_secs(20),
            || (tty_bytes_waiting(pid, 0) >= len).then_some(()),
        );
    }
}

/// Every process as a forest, with its state and where it sleeps (for what a test that
/// timed out says: what the session was doing), at most 150 lines.
pub fn process_forest() -> String {
    let out = Command::new("ps")
        .args(["-eo", "pid,ppid,user:12,stat,wchan:24,args", "--forest"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|e| format!("ps: {e}"));
    out.lines()
        .filter(|l| !l.contains("\\_ ["))
        .take(150)
        .collect::<Vec<_>>()
        .join("\n")
}
