//! Where sessions live: the private runtime directory, socket paths and session names.

use anyhow::{Context, Result, bail};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// `$XDG_RUNTIME_DIR/crterm`, or `/tmp/crterm-UID` without one. Created with mode 0700;
/// an existing one must be a real directory owned by this user and closed to others.
pub fn runtime_dir() -> Result<PathBuf> {
    let uid = crate::sys::geteuid();
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d).join("crterm"),
        None => PathBuf::from(format!("/tmp/crterm-{uid}")),
    };
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot create {}", dir.display()));
        }
    }
    let meta = std::fs::symlink_metadata(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory: refusing to use it", dir.display());
    }
    if meta.uid() != uid || meta.mode() & 0o077 != 0 {
        bail!(
            "{} is not private (owner uid {}, mode {:o}): refusing to use it",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o7777
        );
    }
    Ok(dir)
}

pub fn socket_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.sock"))
}

/// A session name is a short token that is also a file name: letters, digits, `.`, `_`,
/// `-`, not starting with `.` or `-`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.starts_with(['.', '-']);
    if !ok {
        bail!(
            "invalid session name {name:?}: use up to 64 letters, digits, '.', '_' or '-', not starting with '.' or '-'"
        );
    }
    Ok(())
}

/// Names of the sockets in the runtime directory (live or stale).
pub fn session_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let file = entry.file_name();
        let file = file.to_string_lossy();
        if let Some(name) = file.strip_suffix(".sock")
            && check_name(name).is_ok()
        {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// A default name from the command: its base name and the lowest free number.
pub fn default_name(dir: &Path, command: &str) -> String {
    let base: String = Path::new(command)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .collect::<String>()
        .trim_start_matches(['.', '-'])
        .chars()
        .take(32)
        .collect();
    let base = if base.is_empty() {
        "session".to_string()
    } else {
        base
    };
    (1..)
        .map(|n| format!("{base}-{n}"))
        .find(|name| !socket_path(dir, name).exists())
        .expect("some number is free")
}
