//! Who the restored processes are, and that nobody gains anything by a resume.
//!
//! * Before anything is made (`check_identity`): an ordinary user resumes only a session of
//!   their own user (every process ran with their ids); root resumes its own images, and
//!   an image that belongs to another user only as that user could have run it: a session
//!   of that user in a user namespace of its own (so its capabilities meant nothing
//!   outside), with that user's ids and groups the user has. An image is never trusted: a
//!   file another user wrote could claim anything.
//! * While the restore makes a process's files, the init acts on the file system as that
//!   process (`Restorer::act_as`: its file system ids and groups), so a file it could not
//!   open is not opened for it.
//! * Last (`Restorer::set_identity`): the process gets its recorded groups, group and user
//!   ids, bounding set, capabilities, ambient capabilities and no-new-privs, in an order
//!   that lets each step be taken; then it enters its working directory and sets its
//!   resource limits itself, with no more privilege than it has then.

use crate::inject::nr;
use crate::records::{ProcessRecord, SessionRecord};
use crate::restore::Restorer;
use crate::sys;
use anyhow::{Result, anyhow, bail};

/// Who resumes, and whose image it is.
#[derive(Debug, Clone)]
pub struct Resumer {
    pub uid: u32,
    pub gid: u32,
    /// It may give processes other ids and groups: root, where setgroups is allowed (not
    /// root of a user namespace an ordinary user made, where it is denied).
    pub may_set_ids: bool,
    /// The owner of the image file; None for an image read from standard input (the
    /// resumer vouches for it).
    pub image_owner: Option<u32>,
}

impl Resumer {
    /// This process, resuming an image owned by `image_owner`.
    pub fn me(image_owner: Option<u32>) -> Resumer {
        let uid = sys::geteuid();
        let setgroups = std::fs::read_to_string("/proc/self/setgroups").unwrap_or_default();
        Resumer {
            uid,
            gid: sys::getegid(),
            may_set_ids: uid == 0 && setgroups.trim() == "allow",
            image_owner,
        }
    }
}

fn all(ids: &[u32; 4], id: u32) -> bool {
    ids.iter().all(|&i| i == id)
}

/// Refuse, before anything is made, an image whose processes the resumer may not run as
/// they were (module documentation). Ok: the warnings to show (groups that differ).
pub fn check_identity(record: &SessionRecord, who: &Resumer) -> Result<Vec<String>> {
    let live = record.processes.iter().filter(|p| p.zombie.is_none());
    let mut warnings = Vec::new();
    if !who.may_set_ids {
        for p in live {
            if !all(&p.uids, who.uid) || !all(&p.gids, who.gid) {
                bail!(
                    "process {} ({}) ran as user {} group {}; only a session of one's own user can be resumed",
                    p.pid,
                    p.comm,
                    p.uids[1],
                    p.gids[1]
                );
            }
            // A user namespace of an ordinary user cannot set groups: the processes get the
            // user's groups as they are now.
            let mut now = sys::getgroups();
            let mut then = p.groups.clone();
            now.sort_unstable();
            then.sort_unstable();
            if now != then && warnings.is_empty() {
                warnings.push(format!(
                    "process {} ({}) had the supplementary groups {:?} and gets this login's, {:?}",
                    p.pid, p.comm, then, now
                ));
            }
        }
        return Ok(warnings);
    }
    let Some(owner) = who.image_owner.filter(|&o| o != 0) else {
        // Root's own image (or one root hands in on standard input): as recorded.
        return Ok(warnings);
    };
    let refuse = |what: String| -> Result<Vec<String>> {
        bail!(
            "the image belongs to user {owner}, and {what}: root resumes another user's image only as that user could have run it"
        )
    };
    let Some((uid, gid)) = record.user_namespace else {
        return refuse("it says its session ran outside a user namespace (with capabilities that would be real here)".into());
    };
    if uid != owner {
        return refuse(format!("it says its session was user {uid}'s"));
    }
    let theirs = sys::user_groups(uid, gid)
        .ok_or_else(|| anyhow!("the image belongs to user {owner}, who is not known here"))?;
    for p in live {
        if !all(&p.uids, uid) || !all(&p.gids, gid) {
            return refuse(format!(
                "process {} ({}) ran as user {} group {}",
                p.pid, p.comm, p.uids[1], p.gids[1]
            ));
        }
        if let Some(g) = p.groups.iter().find(|g| !theirs.contains(g)) {
            return refuse(format!(
                "process {} ({}) was in group {g}, which user {uid} is not",
                p.pid, p.comm
            ));
        }
    }
    Ok(warnings)
}

impl Restorer<'_> {
    /// Act on the file system as process `rec` would (its file system ids and groups)
    /// until the guard is dropped, when the restore may set ids (root resuming); an
    /// ordinary user's init is that user already.
    pub(crate) fn act_as(&self, rec: &ProcessRecord) -> Result<ActingAs> {
        act_as(self.opts.set_ids, rec)
    }

    /// The process's recorded identity, last, before its registers: groups, group ids,
    /// bounding set, user ids (keeping the permitted capabilities across), capabilities,
    /// ambient capabilities, no-new-privs; then, with no more than that, its working
    /// directory and resource limits.
    pub(crate) fn set_identity(&mut self, pid: i32) -> Result<()> {
        let rec = self.proc(pid).rec;
        if self.opts.set_ids {
            let groups: Vec<u8> = rec.groups.iter().flat_map(|g| g.to_le_bytes()).collect();
            let at = self.put(pid, 0, &groups)?;
            const SETGROUPS: i64 = 116;
            self.call(pid, "setgroups", SETGROUPS, &[rec.groups.len() as u64, at])?;
        }
        const SETRESGID: i64 = 119;
        const SETFSGID: i64 = 123;
        const SETRESUID: i64 = 117;
        const SETFSUID: i64 = 122;
        let g = rec.gids.map(u64::from);
        self.call(pid, "setresgid", SETRESGID, &[g[0], g[1], g[2]])?;
        self.call(pid, "setfsgid", SETFSGID, &[g[3]])?;
        // The bounding set: what the process could never gain back.
        const PR_CAPBSET_DROP: u64 = 24;
        const PR_SET_KEEPCAPS: u64 = 8;
        for cap in 0..64u64 {
            if rec.caps[3] & (1 << cap) == 0 {
                // EINVAL past the kernel's last capability: nothing to drop there.
                let _ = self.proc(pid).inj.call(
                    "prctl(PR_CAPBSET_DROP)",
                    nr::PRCTL,
                    &[PR_CAPBSET_DROP, cap],
                );
            }
        }
        self.call(
            pid,
            "prctl(PR_SET_KEEPCAPS)",
            nr::PRCTL,
            &[PR_SET_KEEPCAPS, 1],
        )?;
        let u = rec.uids.map(u64::from);
        self.call(pid, "setresuid", SETRESUID, &[u[0], u[1], u[2]])?;
        self.call(pid, "setfsuid", SETFSUID, &[u[3]])?;
        // A change of ids made it undumpable, and the init (whose privilege may be a user
        // namespace's) could not write into it any more: dumpable until the end.
        const PR_SET_DUMPABLE: u64 = 4;
        self.call(
            pid,
            "prctl(PR_SET_DUMPABLE)",
            nr::PRCTL,
            &[PR_SET_DUMPABLE, 1],
        )?;
        let header: [u32; 2] = [0x2008_0522, 0];
        let c = rec.caps;
        let data: [u32; 6] = [
            c[2] as u32,
            c[1] as u32,
            c[0] as u32,
            (c[2] >> 32) as u32,
            (c[1] >> 32) as u32,
            (c[0] >> 32) as u32,
        ];
        let hb: Vec<u8> = header.iter().flat_map(|w| w.to_le_bytes()).collect();
        let db: Vec<u8> = data.iter().flat_map(|w| w.to_le_bytes()).collect();
        let h = self.put(pid, 0, &hb)?;
        let d = self.put(pid, 64, &db)?;
        self.call(pid, "capset", nr::CAPSET, &[h, d])?;
        const PR_CAP_AMBIENT: u64 = 47;
        const PR_CAP_AMBIENT_RAISE: u64 = 2;
        for cap in (0..64u64).filter(|c| rec.caps[4] & (1 << c) != 0) {
            self.call(
                pid,
                "prctl(PR_CAP_AMBIENT_RAISE)",
                nr::PRCTL,
                &[PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap],
            )?;
        }
        self.call(
            pid,
            "prctl(PR_SET_KEEPCAPS)",
            nr::PRCTL,
            &[PR_SET_KEEPCAPS, 0],
        )?;
        if rec.no_new_privs {
            const PR_SET_NO_NEW_PRIVS: u64 = 38;
            self.call(
                pid,
                "prctl(PR_SET_NO_NEW_PRIVS)",
                nr::PRCTL,
                &[PR_SET_NO_NEW_PRIVS, 1],
            )?;
        }
        // Its working directory, entered by itself with its own rights.
        if !rec.cwd.is_empty() {
            self.enter_cwd(pid)?;
        }
        // Its resource limits, set by itself: raising a hard limit takes the privilege it
        // has now, no more.
        for (res, &(soft, hard)) in rec.rlimits.iter().enumerate() {
            const PRLIMIT64: i64 = 302;
            let lim: Vec<u8> = [soft, hard].iter().flat_map(|w| w.to_le_bytes()).collect();
            let at = self.put(pid, 0, &lim)?;
            if self
                .proc(pid)
                .inj
                .call("prlimit64", PRLIMIT64, &[0, res as u64, at, 0])
                .is_err()
            {
                self.warnings.push(format!(
                    "process {pid} ({}): resource limit {res} could not be set back",
                    rec.comm
                ));
            }
        }
        // The signal it gets when its parent ends: after the ids, whose change clears it.
        self.set_pdeath_signal(pid)?;
        // Dumpable or not, as it was (the last call that writes into it is done).
        self.call(
            pid,
            "prctl(PR_SET_DUMPABLE)",
            nr::PRCTL,
            &[PR_SET_DUMPABLE, u64::from(rec.dumpable)],
        )?;
        Ok(())
    }
}

impl Restorer<'_> {
    /// Process `pid` enters its recorded working directory. One that was deleted (the
    /// kernel says `PATH (deleted)`) is made again at its path, entered, and removed, so the
    /// process is again in a deleted directory of that name (when something else is at the
    /// path now, it cannot be: refused). One it cannot enter leaves it in `/`, said.
    fn enter_cwd(&mut self, pid: i32) -> Result<()> {
        const CHDIR: i64 = 80;
        let rec = self.proc(pid).rec;
        if let Some(path) = rec.cwd.strip_suffix(" (deleted)") {
            let made = {
                let _as = self.act_as(rec)?;
                std::fs::create_dir(path)
            };
            if let Err(e) = made {
                bail!(
                    "process {pid} ({}) was in directory {path}, deleted since; it cannot be made again there ({e})",
                    rec.comm
                );
            }
            let at = self.put_path(pid, path)?;
            let entered = self.proc(pid).inj.call("chdir", CHDIR, &[at]);
            let _ = std::fs::remove_dir(path);
            return entered.map(|_| ()).map_err(|e| {
                anyhow!(
                    "process {pid} ({}): entering its deleted directory: {e}",
                    rec.comm
                )
            });
        }
        let at = self.put_path(pid, &rec.cwd)?;
        if let Err(e) = self.proc(pid).inj.call("chdir", CHDIR, &[at]) {
            let root = self.put_path(pid, "/")?;
            self.call(pid, "chdir", CHDIR, &[root])?;
            self.warnings.push(format!(
                "process {pid} ({}): cannot enter its working directory {} ({}); it is in / now",
                rec.comm,
                rec.cwd,
                std::io::Error::from_raw_os_error(e.errno)
            ));
        }
        Ok(())
    }
}

/// The init acting on the file system as a process of the session; dropped, it is itself
/// again (where it can be: root of a user namespace made for another user's session has
/// no id of its own there, and stays that user, whose session it restores).
pub(crate) struct ActingAs(Option<(u32, u32, Vec<u32>)>);

impl Drop for ActingAs {
    fn drop(&mut self) {
        if let Some((uid, gid, groups)) = self.0.take() {
            let _ = sys::act_as_on_this_thread(uid, gid, Some(&groups));
        }
    }
}

/// `Restorer::act_as`, also for what is made before the restorer (the ptys).
pub(crate) fn act_as(set_ids: bool, rec: &ProcessRecord) -> Result<ActingAs> {
    if !set_ids {
        return Ok(ActingAs(None));
    }
    let me = (sys::geteuid(), sys::getegid(), sys::getgroups());
    sys::act_as_on_this_thread(rec.uids[3], rec.gids[3], Some(&rec.groups)).map_err(|e| {
        anyhow!(
            "cannot act as process {} ({}) on the file system: {e}",
            rec.pid,
            rec.comm
        )
    })?;
    Ok(ActingAs(Some(me)))
}
