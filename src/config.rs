//! `~/.config/crterm/config.toml`: the user's settings, checked strictly (an unknown key is
//! an error, not silently ignored).

use anyhow::{Result, anyhow, bail};
use serde::Deserialize;
use std::path::PathBuf;

pub const DEFAULT_PREFIX: u8 = 0x1c; // Ctrl-\

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The byte that starts a crterm command in the client.
    pub prefix: u8,
    /// Lines of scrollback the terminal model keeps.
    pub history_lines: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            prefix: DEFAULT_PREFIX,
            history_lines: crate::term_model::DEFAULT_HISTORY_LINES,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    prefix: Option<String>,
    history_lines: Option<usize>,
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
    Ok(config)
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
}
