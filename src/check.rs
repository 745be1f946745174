//! `crterm check [IMAGE]`: what this kernel and CPU offer crterm (each probed, not
//! assumed), and, given an image, whether it will resume here and if not, why. The rules
//! are resume's own (`crate::machine`, `restore::mapped_file_here`), so the verdict is the
//! one resume would reach before it starts a process.

use crate::image::{self, ImageInfo};
use crate::machine::{self, XsaveLayout};
use crate::records::MapKind;
use crate::sys::{self, Forked};
use anyhow::{Result, anyhow};
use std::os::fd::AsRawFd;
use std::path::Path;

/// Print the report; the exit status is 0 when everything works (with an image: it will
/// resume here), 1 otherwise.
pub fn run(image_path: Option<&Path>, strict_cpu: bool) -> Result<i32> {
    let here = ImageInfo::here();
    let xsave = XsaveLayout::here();
    let vdso = machine::vdso_layout_here();
    let mut ok = true;
    row(
        "kernel",
        format!("Linux {} ({})", here.kernel, here.machine),
    );
    row(
        "cpu",
        format!(
            "x86-64-v{}, {} features",
            machine::x86_64_level(&here.cpu_features),
            here.cpu_features.len()
        ),
    );
    row(
        "xsave",
        format!(
            "XCR0 {:#x}, {} bytes: {}",
            xsave.xcr0,
            xsave.size,
            xsave.names().join(" ")
        ),
    );
    row("vdso", machine::describe_vdso(&vdso));
    for (what, result) in probes() {
        ok &= result.is_ok();
        row(
            what,
            match result {
                Ok(how) => format!("yes{how}"),
                Err(why) => format!("NO: {why}"),
            },
        );
    }
    let Some(path) = image_path else {
        return Ok(if ok { 0 } else { 1 });
    };
    // Everything resume checks before it makes a process, every chunk decoded too.
    let cannot = |e: image::ImageError| anyhow!("cannot check {}: {e}", path.display());
    let loaded = crate::load::load(path, true).map_err(cannot)?;
    crate::load::decode_every_chunk(&loaded.image).map_err(cannot)?;
    for a in &loaded.ancestors {
        crate::load::decode_every_chunk(&a.image).map_err(cannot)?;
    }
    println!();
    let (rows, mut refusals) = image_report(path, &loaded, strict_cpu);
    for (label, value) in rows {
        row(label, value);
    }
    if !ok {
        refusals.push("this machine lacks what crterm needs (above)".into());
    }
    if refusals.is_empty() {
        row("verdict", "it will resume here".into());
        Ok(0)
    } else {
        row("verdict", "it will not resume here:".into());
        for r in &refusals {
            println!("  - {r}");
        }
        Ok(1)
    }
}

/// What `check` says of a loaded image on this machine: its rows, and the reasons resume
/// would refuse it here (none: it will resume).
pub fn image_report(
    path: &Path,
    loaded: &crate::load::Loaded,
    strict_cpu: bool,
) -> (Vec<(&'static str, String)>, Vec<String>) {
    let (img, record) = (&loaded.image, &loaded.record);
    let xsave = XsaveLayout::here();
    let vdso = machine::vdso_layout_here();
    let mut rows = Vec::new();
    let mut row = |label: &'static str, value: String| rows.push((label, value));
    row(
        "image",
        format!(
            "{} made by {} on Linux {}{}",
            path.display(),
            img.info.creator,
            img.info.kernel,
            if record.machine.cpu_baseline {
                ", cpu baseline (x86-64-v2)"
            } else {
                ""
            }
        ),
    );
    let mut refusals: Vec<String> = Vec::new();
    // Who may run it as it was (resume's rule, for whoever runs check).
    match crate::restore::check_identity(record, &crate::restore::Resumer::me(img.owner)) {
        Ok(warnings) => {
            for w in warnings {
                row("warning", w);
            }
        }
        Err(e) => refusals.push(e.to_string()),
    }
    let verdict = crate::restore::cpu_verdict_here(record, &img.info, strict_cpu);
    if verdict.refused() {
        row(
            "cpu",
            format!(
                "missing {}",
                verdict
                    .missing
                    .iter()
                    .chain(&verdict.missing_components)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        );
        refusals.push(machine::refusal_message(
            &verdict,
            record.machine.cpu_baseline,
        ));
    } else {
        row("cpu", "every feature the session needs is here".into());
    }
    if !verdict.unused.is_empty() {
        row("warning", machine::unused_message(&verdict));
    }
    row(
        "xsave",
        if record.machine.xsave == xsave {
            "the same layout".to_string()
        } else {
            format!(
                "another layout ({} bytes: {}), moved into this one's",
                record.machine.xsave.size,
                record.machine.xsave.names().join(" ")
            )
        },
    );
    let theirs = record
        .processes
        .iter()
        .map(|p| machine::vdso_layout(p.maps.iter().map(|m| (m.path.as_str(), m.start, m.end))))
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    let here_vdso = machine::vdso_here();
    let old_vdso = &record.machine.vdso;
    if theirs.is_empty() || (theirs == vdso && (old_vdso.is_empty() || *old_vdso == here_vdso)) {
        row("vdso", "the same".into());
    } else if machine::vdso_proxy(old_vdso, &here_vdso, 0).is_some() {
        let names = machine::vdso_symbols(old_vdso);
        let ours = machine::vdso_symbols(&here_vdso);
        let missing: Vec<&str> = names
            .iter()
            .filter(|(n, _)| !ours.iter().any(|(o, _)| o == n))
            .map(|(n, _)| n.as_str())
            .collect();
        row(
            "vdso",
            format!(
                "another kernel's ({}): its {} entry points lead to this one's{}",
                machine::describe_vdso(&theirs),
                names.len(),
                if missing.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (missing here, made to fail with ENOSYS: {})",
                        missing.join(" ")
                    )
                }
            ),
        );
    } else {
        row(
            "vdso",
            format!("another layout: {}", machine::describe_vdso(&theirs)),
        );
        refusals.push(machine::vdso_message(&theirs, &vdso));
    }
    // What this version cannot bring back.
    if let Err(e) = crate::restore::check_supported(record) {
        refusals.push(format!("{e:#}"));
    }
    // Open files: the policy resume applies before it makes anything.
    if let Err(e) = crate::restore::check_open_files(record) {
        refusals.push(format!("{e:#}"));
    }
    // Mapped files: from this machine when they are here as they were, else from the
    // image; one the image does not hold and that is not here stops the resume.
    let mut seen = std::collections::HashSet::new();
    let (mut from_here, mut from_image) = (0, 0);
    for m in record.processes.iter().flat_map(|p| &p.maps) {
        if !matches!(m.kind(), MapKind::PrivateFile | MapKind::SharedFile)
            || !seen.insert((m.dev, m.inode))
        {
            continue;
        }
        if crate::restore::mapped_file_here(record, m) {
            from_here += 1;
        } else if record.files.iter().any(|f| {
            f.copies
                .iter()
                .any(|c| c.dev == m.dev && c.inode == m.inode)
        }) {
            from_image += 1;
        } else {
            refusals.push(format!(
                "{} is gone or changed, and the image holds no copy of it",
                m.path
            ));
        }
    }
    row(
        "files",
        format!("{from_here} mapped files from this machine, {from_image} from the image"),
    );
    if record.machine.hostname.is_empty() {
        row("hostname", "not recorded".into());
    } else {
        row(
            "hostname",
            format!(
                "{} (the session's; `--hostname real` gives this machine's)",
                record.machine.hostname
            ),
        );
    }
    (rows, refusals)
}

fn row(label: &str, value: String) {
    println!("{label:<12} {value}");
}

/// What crterm needs of the kernel, each tried: (what, Ok(detail) or Err(why not)).
fn probes() -> Vec<(&'static str, Result<String, String>)> {
    let unprivileged = sys::geteuid() != 0;
    let mut flags =
        libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    if unprivileged {
        flags |= libc::CLONE_NEWUSER;
    }
    let world = try_in_child(flags, || true).map(|()| {
        if unprivileged {
            " (user, pid, mount, IPC, UTS)".to_string()
        } else {
            " (pid, mount, IPC, UTS)".to_string()
        }
    });
    // The time namespace a resume makes, inside the session's namespaces.
    let time = try_in_child(flags, || {
        // SAFETY: unshare with a namespace flag touches no memory of this process.
        unsafe { libc::unshare(libc::CLONE_NEWTIME) == 0 }
    })
    .map(|()| String::new());
    let pidfd = sys::trace::copy_fd_of(std::process::id() as i32, 0)
        .map(|_| String::new())
        .map_err(|e| format!("pidfd_getfd: {e}"));
    // A socketpair of our own must show up, paired.
    let diag = (|| -> std::io::Result<String> {
        let (a, _b) = sys::sock::pair(libc::SOCK_STREAM)?;
        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::metadata(format!("/proc/self/fd/{}", a.as_raw_fd()))?.ino();
        match sys::sock::unix_diag()?.get(&inode) {
            Some(d) if d.peer != 0 => Ok(String::new()),
            _ => Err(std::io::Error::other("it does not pair unix sockets")),
        }
    })()
    .map_err(|e| format!("sock_diag: {e}"));
    vec![
        ("namespaces", world),
        ("time ns", time),
        ("pidfd_getfd", pidfd),
        ("sock_diag", diag),
    ]
}

/// Clone a child into new namespaces `flags` that runs `f` and exits 0 when it returns
/// true. Raw calls only in the child.
fn try_in_child(flags: libc::c_int, f: impl FnOnce() -> bool) -> Result<(), String> {
    // SAFETY: `crterm check` is single-threaded; the child only makes raw system calls.
    match unsafe { sys::fork_into(flags) } {
        Err(e) => Err(e.to_string()),
        Ok(Forked::Child) => sys::exit_now(if f() { 0 } else { 1 }),
        Ok(Forked::Parent(pid)) => match sys::wait(pid, true) {
            Ok(Some((_, sys::WaitStatus::Exited(0)))) => Ok(()),
            Ok(_) => Err("refused inside the namespaces".into()),
            Err(e) => Err(e.to_string()),
        },
    }
}
