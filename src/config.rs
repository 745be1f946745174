//! `~/.config/crterm/config.toml`: the user's settings, checked strictly (an unknown key is
//! an error, not silently ignored).

use anyhow::{Result, anyhow, bail};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_PREFIX: u8 = 0x1c; // Ctrl-\

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The byte that starts a crterm command in the client.
    pub prefix: u8,
    /// Lines of scrollback the terminal model keeps.
    pub history_lines: usize,
    /// Checkpoint every session into its image this often (`crterm start --autosave`).
    pub autosave: Option<Duration>,
    /// Generations of a session's image kept (`--keep`; 0: not set, nothing removed).
    pub keep: usize,
    /// How long the checkpoint SIGTERM or SIGHUP asks for may take.
    pub shutdown_deadline: Duration,
}

/// The shutdown deadline unless configured: inside systemd's default 90 s stop timeout
/// and the grace periods batch schedulers give (Slurm's KillWait is 30 s).
pub const DEFAULT_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(20);

/// Generations kept by an autosave unless `--keep` says otherwise.
pub const DEFAULT_KEEP: usize = 3;

impl Default for Config {
    fn default() -> Self {
        Config {
            prefix: DEFAULT_PREFIX,
            history_lines: crate::term_model::DEFAULT_HISTORY_LINES,
            autosave: None,
            keep: 0,
            shutdown_deadline: DEFAULT_SHUTDOWN_DEADLINE,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    prefix: Option<String>,
    history_lines: Option<usize>,
    autosave: Option<String>,
    keep: Option<usize>,
    shutdown_deadline: Option<String>,
}

pub fn config_path() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("crterm").join("config.toml"))
}

/// Load the config file if there is one; errors name the file and the line.
pub fn load() -> Result<Config> {
    let Some(path) = config_path() else {
        return Ok(Config::default());
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
        Err(e) => bail!("config file {}: {e}", path.display()),
    };
    parse(&text).map_err(|e| anyhow!("config file {}: {e}", path.display()))
}

pub fn parse(text: &str) -> Result<Config> {
    let file: ConfigFile = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let msg = e.message().trim().replace('\n', " ");
        match line {
            Some(l) => anyhow!("line {l}: {msg}"),
            None => anyhow!("{msg}"),
        }
    })?;
    let mut config = Config::default();
    if let Some(p) = file.prefix {
        config.prefix = parse_key(&p).map_err(|e| anyhow!("prefix: {e}"))?;
    }
    if let Some(h) = file.history_lines {
        if h > crate::term_model::MAX_HISTORY_LINES {
            bail!(
                "history_lines: {h} is more than {}",
                crate::term_model::MAX_HISTORY_LINES
            );
        }
        config.history_lines = h;
    }
    if let Some(a) = file.autosave {
        config.autosave = Some(parse_duration(&a).map_err(|e| anyhow!("autosave: {e}"))?);
    }
    if let Some(k) = file.keep {
        config.keep = check_keep(k).map_err(|e| anyhow!("keep: {e}"))?;
    }
    if let Some(d) = file.shutdown_deadline {
        config.shutdown_deadline =
            parse_duration(&d).map_err(|e| anyhow!("shutdown_deadline: {e}"))?;
    }
    Ok(config)
}

/// A span of time as `90`, `90s`, `15m`, `2h` (seconds unless a unit follows); at least
/// a second, at most a week.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let t = text.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| anyhow!("{text:?} is not a time (as 90s, 15m, 2h)"))?;
    let secs = match unit {
        "" | "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        _ => bail!("{text:?} is not a time (as 90s, 15m, 2h)"),
    };
    match secs {
        Some(s) if (1..=7 * 24 * 3600).contains(&s) => Ok(Duration::from_secs(s)),
        _ => bail!("{text:?}: give from 1 s to a week"),
    }
}

/// A number of generations to keep: 1 to 1000.
pub fn check_keep(n: usize) -> Result<usize> {
    if (1..=1000).contains(&n) {
        Ok(n)
    } else {
        bail!("{n}: keep from 1 to 1000 generations")
    }
}

/// A control key as `C-x` or `^x` (x one of `@`, a–z, `[`, `\`, `]`, `^`, `_`).
pub fn parse_key(s: &str) -> Result<u8> {
    let rest = s
        .strip_prefix("C-")
        .or_else(|| s.strip_prefix("^"))
        .ok_or_else(|| anyhow!("{s:?} is not a control key; write it as C-x or ^x"))?;
    let mut chars = rest.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii() => {
            let c = c.to_ascii_uppercase() as u8;
            if (b'@'..=b'_').contains(&c) {
                Ok(c & 0x1f)
            } else {
                bail!("{s:?}: no control key for {c:?}")
            }
        }
        _ => bail!("{s:?} is not a control key; write it as C-x or ^x"),
    }
}

/// How a prefix byte is written for people: `C-\`.
pub fn key_name(b: u8) -> String {
    format!("C-{}", ((b | 0x40) as char).to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(parse_key("C-\\").unwrap(), 0x1c);
        assert_eq!(parse_key("C-a").unwrap(), 1);
        assert_eq!(parse_key("^B").unwrap(), 2);
        assert!(parse_key("a").is_err());
        assert!(parse_key("C-ab").is_err());
        assert_eq!(key_name(0x1c), "C-\\");
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("history_lines = 5\nprefix = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 2:"), "{e}");
        let e = parse("bogus = 1\n").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("bogus"), "{e}");
        assert_eq!(parse("prefix = \"C-a\"").unwrap().prefix, 1);
    }

    #[test]
    fn times_and_generations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        for bad in ["", "0", "1d", "m", "-5", "9999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        let c = parse("autosave = \"10m\"\nkeep = 5\nshutdown_deadline = \"5s\"\n").unwrap();
        assert_eq!(c.autosave, Some(Duration::from_secs(600)));
        assert_eq!((c.keep, c.shutdown_deadline), (5, Duration::from_secs(5)));
        let e = parse("keep = 0\n").unwrap_err().to_string();
        assert!(e.contains("keep"), "{e}");
    }
}
