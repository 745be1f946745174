//! SysV IPC: shared memory segments, semaphore sets and message queues. The session has
//! an IPC namespace of its own, so every object in it is the session's, and is carried
//! with its key, id, owner, mode and content.
//!
//! Checkpoint: `crterm __sysv --pid P` (`read_objects` starts it) joins the session's user
//! namespace (for an ordinary user, whose capabilities count there) and IPC namespace and
//! reads every object by index: a segment's bytes through an attachment of its own (read
//! only), a set's values, a queue's messages copied with MSG_COPY (not received). Nothing
//! of the session changes but a segment's last-attach time. Semaphore adjustments the
//! kernel keeps per process (SEM_UNDO) cannot be read: a process with any is refused.
//!
//! Resume: the resumed session's init makes each object again before any process, with
//! its id (`/proc/sys/kernel/*_next_id`), as its creator, then its owner and mode, content,
//! values and messages; processes attach their segments at their addresses
//! (`task::memory`); segments removed while attached are removed again once every process
//! is back (`remove_destroyed`).

use crate::records::*;
use anyhow::{Context, Result, bail};
use std::io::{self, Write};

const SHM_STAT_ANY: i64 = 15;
const SEM_STAT_ANY: i64 = 20;
const MSG_STAT_ANY: i64 = 13;
const SHM_INFO: i64 = 14;
const SEM_INFO: i64 = 19;
const MSG_INFO: i64 = 12;
const GETALL: i64 = 13;
const SETALL: i64 = 17;
const MSG_COPY: i64 = 0o40000;
const SHM_LOCK: i64 = 11;

fn raw(r: libc::c_long) -> io::Result<i64> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn perm_of(p: &libc::ipc_perm, id: i64) -> IpcPerm {
    IpcPerm {
        key: p.__key,
        id: id as i32,
        uid: p.uid,
        gid: p.gid,
        cuid: p.cuid,
        cgid: p.cgid,
        mode: u32::from(p.mode),
    }
}

// ---- checkpoint -------------------------------------------------------------------------

/// The process that reads the session's SysV objects from inside its namespaces
/// (`crterm __sysv`), started before the freeze so that its start is not frozen time; it
/// waits for the processes' host pids on its standard input. Dropped unused, it is killed.
pub struct Reader {
    child: Option<std::process::Child>,
}

impl Reader {
    pub fn spawn() -> io::Result<Reader> {
        let child = std::process::Command::new("/proc/self/exe")
            .arg("__sysv")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        Ok(Reader { child: Some(child) })
    }

    /// The SysV objects of the session whose processes are host pids `hosts`, and which
    /// of those processes have a semaphore undo list.
    pub fn read(mut self, hosts: &[i32]) -> io::Result<(SysvObjects, Vec<i32>)> {
        let mut child = self.child.take().expect("read once");
        let pids: String = hosts.iter().map(|h| format!("{h}\n")).collect();
        let sent = child
            .stdin
            .take()
            .expect("piped")
            .write_all(pids.as_bytes());
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(io::Error::other(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        sent?;
        postcard::from_bytes(&out.stdout).map_err(|e| io::Error::other(format!("{e}")))
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `crterm __sysv [PID...]` (without pids, they are read from standard input, one a
/// line): note which of the processes have a semaphore undo list (kcmp compares each
/// one's with this fresh process's, which is none), join the first one's user (when it
/// is not ours) and IPC namespaces, read every object; write both (postcard) to standard
/// output. Exit status 1 with the reason on standard error when it cannot.
pub fn run_reader(hosts: &[i32]) -> i32 {
    let mut given = hosts.to_vec();
    if given.is_empty() {
        let mut text = String::new();
        if std::io::Read::read_to_string(&mut io::stdin().lock(), &mut text).is_err() {
            return 1;
        }
        match text.split_whitespace().map(str::parse).collect() {
            Ok(pids) => given = pids,
            Err(_) => {
                eprintln!("pids expected on standard input");
                return 1;
            }
        }
    }
    let hosts = &given[..];
    let result = undo_lists(hosts).and_then(|undo| {
        join(
            *hosts
                .first()
                .ok_or_else(|| io::Error::other("no process"))?,
        )?;
        Ok((read_here()?, undo))
    });
    match result {
        Ok(found) => {
            let bytes = postcard::to_allocvec(&found).unwrap_or_default();
            let mut out = io::stdout().lock();
            if out.write_all(&bytes).and_then(|()| out.flush()).is_err() {
                return 1;
            }
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn undo_lists(hosts: &[i32]) -> io::Result<Vec<i32>> {
    const KCMP_SYSVSEM: i64 = 6;
    let me = std::process::id() as i64;
    let mut with = Vec::new();
    for &h in hosts {
        let r = unsafe { libc::syscall(libc::SYS_kcmp, me, h as i64, KCMP_SYSVSEM, 0, 0) };
        if r < 0 {
            return Err(io::Error::other(format!(
                "comparing semaphore undo lists (kcmp): {}",
                io::Error::last_os_error()
            )));
        }
        if r > 0 {
            with.push(h);
        }
    }
    Ok(with)
}

fn join(pid: i32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let ns = |what: &str| std::fs::File::open(format!("/proc/{pid}/ns/{what}"));
    let user = ns("user")?;
    if user.metadata()?.ino() != std::fs::metadata("/proc/self/ns/user")?.ino() {
        raw(unsafe { libc::setns(user.as_raw_fd(), libc::CLONE_NEWUSER) }.into())
            .map_err(|e| io::Error::other(format!("joining the session's user namespace: {e}")))?;
    }
    let ipc = ns("ipc")?;
    raw(unsafe { libc::setns(ipc.as_raw_fd(), libc::CLONE_NEWIPC) }.into())
        .map_err(|e| io::Error::other(format!("joining the session's IPC namespace: {e}")))?;
    Ok(())
}

/// Every object of the IPC namespace this process is in.
pub fn read_here() -> io::Result<SysvObjects> {
    let mut objects = SysvObjects::default();
    // Segments.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    let highest = raw(unsafe { libc::syscall(libc::SYS_shmctl, 0, SHM_INFO, &mut ds) })?;
    for index in 0..=highest.min(1 << 16) {
        let Ok(id) = raw(unsafe { libc::syscall(libc::SYS_shmctl, index, SHM_STAT_ANY, &mut ds) })
        else {
            continue;
        };
        let size = ds.shm_segsz as u64;
        let at = raw(unsafe { libc::syscall(libc::SYS_shmat, id, 0, libc::SHM_RDONLY) })
            .map_err(|e| io::Error::other(format!("reading shared memory segment {id}: {e}")))?;
        // SAFETY: the segment is mapped there, `size` bytes long, for this copy only.
        let bytes = unsafe { std::slice::from_raw_parts(at as *const u8, size as usize) };
        let used = bytes
            .chunks(4096)
            .rposition(|c| c.iter().any(|&b| b != 0))
            .map_or(0, |i| ((i + 1) * 4096).min(bytes.len()));
        let content = bytes[..used].to_vec();
        unsafe { libc::syscall(libc::SYS_shmdt, at) };
        objects.shm.push(ShmSegment {
            perm: perm_of(&ds.shm_perm, id),
            size,
            content,
        });
    }
    // Semaphore sets.
    let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
    let highest = raw(unsafe { libc::syscall(libc::SYS_semctl, 0, 0, SEM_INFO, &mut ds) })?;
    for index in 0..=highest.min(1 << 16) {
        let Ok(id) =
            raw(unsafe { libc::syscall(libc::SYS_semctl, index, 0, SEM_STAT_ANY, &mut ds) })
        else {
            continue;
        };
        let mut values = vec![0u16; ds.sem_nsems as usize];
        raw(unsafe { libc::syscall(libc::SYS_semctl, id, 0, GETALL, values.as_mut_ptr()) })
            .map_err(|e| io::Error::other(format!("reading semaphore set {id}: {e}")))?;
        objects.sem.push(SemSet {
            perm: perm_of(&ds.sem_perm, id),
            values,
        });
    }
    // Message queues, each message copied (MSG_COPY: the queue keeps it).
    let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
    let highest = raw(unsafe { libc::syscall(libc::SYS_msgctl, 0, MSG_INFO, &mut ds) })?;
    for index in 0..=highest.min(1 << 16) {
        let Ok(id) = raw(unsafe { libc::syscall(libc::SYS_msgctl, index, MSG_STAT_ANY, &mut ds) })
        else {
            continue;
        };
        let room = (ds.msg_qbytes as usize).max(ds.__msg_cbytes as usize) + 8;
        let mut buf = vec![0u8; room];
        let mut messages = Vec::new();
        for n in 0..ds.msg_qnum as i64 {
            let len = raw(unsafe {
                libc::syscall(
                    libc::SYS_msgrcv,
                    id,
                    buf.as_mut_ptr(),
                    room - 8,
                    n,
                    libc::IPC_NOWAIT as i64 | MSG_COPY,
                )
            })
            .map_err(|e| {
                io::Error::other(format!(
                    "reading message {n} of message queue {id} (MSG_COPY): {e}"
                ))
            })? as usize;
            let kind = i64::from_ne_bytes(buf[..8].try_into().expect("8 bytes"));
            messages.push((kind, buf[8..8 + len].to_vec()));
        }
        objects.msg.push(MsgQueue {
            perm: perm_of(&ds.msg_perm, id),
            max_bytes: ds.msg_qbytes,
            messages,
        });
    }
    for name in IPC_LIMITS {
        let path = format!("/proc/sys/kernel/{name}");
        if let Ok(v) = std::fs::read_to_string(&path) {
            objects
                .limits
                .push((name.to_string(), v.trim().to_string()));
        }
    }
    Ok(objects)
}

/// Refuse a process that has a semaphore undo list while the session has semaphore sets:
/// the adjustments in it (semop with SEM_UNDO) cannot be read, and a resume without them
/// would not undo them at its exit. (glibc's threads share one, so a process that made
/// threads has a list, empty or not.)
pub fn check_no_undo(
    objects: &SysvObjects,
    has_list: bool,
    pid: i32,
    comm: &str,
) -> io::Result<()> {
    if has_list && !objects.sem.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "process {pid} ({comm}) has a SysV semaphore undo list (semop with SEM_UNDO, or threads), whose adjustments cannot be read"
            ),
        ));
    }
    Ok(())
}

/// Each process's attachments of segments: a segment's mappings (an attachment split by
/// mprotect is several) must cover it whole, from where it was attached.
pub fn check_attachments(record: &SessionRecord) -> io::Result<()> {
    for p in &record.processes {
        let mut bases: std::collections::BTreeMap<(u64, u64), u64> = Default::default();
        for m in p.maps.iter().filter(|m| m.kind() == MapKind::SysV) {
            if record.sysv.segment_of(m.inode).is_none() {
                return Err(io::Error::other(format!(
                    "process {} ({}): no segment {} for its attachment at {:#x}",
                    p.pid, p.comm, m.inode, m.start
                )));
            }
            let base = m.start - m.offset;
            let covered = bases.entry((m.inode, base)).or_insert(0);
            if m.offset != *covered {
                return Err(partial(p, m.inode, base));
            }
            *covered = m.offset + (m.end - m.start);
        }
        for ((inode, base), covered) in bases {
            let size = record.sysv.segment_of(inode).map_or(0, |s| s.size);
            if covered != size.div_ceil(4096) * 4096 {
                return Err(partial(p, inode, base));
            }
        }
    }
    Ok(())
}

fn partial(p: &ProcessRecord, id: u64, base: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "process {} ({}) has part of shared memory segment {id} unmapped (attached at {base:#x}), which this version cannot carry",
            p.pid, p.comm
        ),
    )
}

// ---- resume -----------------------------------------------------------------------------

/// Make the session's SysV objects again, in the IPC namespace this process (the resumed
/// session's init, before any process of the session) is in.
pub fn make_objects(objects: &SysvObjects) -> Result<()> {
    for (name, value) in &objects.limits {
        if !IPC_LIMITS.contains(&name.as_str()) {
            bail!("the image names an IPC limit {name:?}");
        }
        let path = format!("/proc/sys/kernel/{name}");
        if !std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == value) {
            std::fs::write(&path, value)
                .with_context(|| format!("setting the session's IPC limit {name} to {value}"))?;
        }
    }
    for s in &objects.shm {
        let what = format!("shared memory segment {}", s.perm.id);
        let id = create(&s.perm, "shm", &what, |key, flags| unsafe {
            libc::syscall(libc::SYS_shmget, key, s.size, flags)
        })?;
        if !s.content.is_empty() {
            let at = raw(unsafe { libc::syscall(libc::SYS_shmat, id, 0, 0) })
                .with_context(|| format!("attaching {what}"))?;
            // SAFETY: the segment is mapped there, at least content.len() bytes long.
            unsafe {
                std::ptr::copy_nonoverlapping(s.content.as_ptr(), at as *mut u8, s.content.len());
                libc::syscall(libc::SYS_shmdt, at);
            }
        }
        if s.perm.mode & SHM_LOCKED != 0 {
            raw(unsafe { libc::syscall(libc::SYS_shmctl, id, SHM_LOCK, 0) })
                .with_context(|| format!("locking {what} in memory"))?;
        }
        let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
        set_owner(&mut ds.shm_perm, &s.perm);
        raw(unsafe { libc::syscall(libc::SYS_shmctl, id, libc::IPC_SET, &mut ds) })
            .with_context(|| format!("giving {what} its owner and mode"))?;
    }
    for s in &objects.sem {
        let what = format!("semaphore set {}", s.perm.id);
        let id = create(&s.perm, "sem", &what, |key, flags| unsafe {
            libc::syscall(libc::SYS_semget, key, s.values.len(), flags)
        })?;
        raw(unsafe { libc::syscall(libc::SYS_semctl, id, 0, SETALL, s.values.as_ptr()) })
            .with_context(|| format!("setting the values of {what}"))?;
        let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
        set_owner(&mut ds.sem_perm, &s.perm);
        raw(unsafe { libc::syscall(libc::SYS_semctl, id, 0, libc::IPC_SET, &mut ds) })
            .with_context(|| format!("giving {what} its owner and mode"))?;
    }
    for q in &objects.msg {
        let what = format!("message queue {}", q.perm.id);
        let id = create(&q.perm, "msg", &what, |key, flags| unsafe {
            libc::syscall(libc::SYS_msgget, key, flags)
        })?;
        // Room for every message first; the queue's own limit after.
        let queued: u64 = q.messages.iter().map(|m| m.1.len() as u64).sum();
        let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
        raw(unsafe { libc::syscall(libc::SYS_msgctl, id, libc::IPC_STAT, &mut ds) })?;
        let set = |ds: &mut libc::msqid_ds, bytes: u64| {
            set_owner(&mut ds.msg_perm, &q.perm);
            ds.msg_qbytes = bytes;
            raw(unsafe { libc::syscall(libc::SYS_msgctl, id, libc::IPC_SET, ds as *mut _) })
                .with_context(|| format!("giving {what} its owner, mode and size"))
        };
        set(&mut ds, q.max_bytes.max(queued))?;
        for (kind, text) in &q.messages {
            let mut buf = Vec::with_capacity(8 + text.len());
            buf.extend_from_slice(&kind.to_ne_bytes());
            buf.extend_from_slice(text);
            raw(unsafe {
                libc::syscall(
                    libc::SYS_msgsnd,
                    id,
                    buf.as_ptr(),
                    text.len(),
                    libc::IPC_NOWAIT,
                )
            })
            .with_context(|| format!("putting a message back into {what}"))?;
        }
        set(&mut ds, q.max_bytes)?;
    }
    Ok(())
}

fn set_owner(p: &mut libc::ipc_perm, saved: &IpcPerm) {
    p.uid = saved.uid;
    p.gid = saved.gid;
    p.mode = (saved.mode & 0o777) as u16;
}

/// Make one object with the saved id (the namespace's `KIND_next_id`) and key, as its
/// creator (effective ids of this thread only, for the call); returns its id.
fn create(
    perm: &IpcPerm,
    kind: &str,
    what: &str,
    make: impl FnOnce(i32, i64) -> libc::c_long,
) -> Result<i64> {
    std::fs::write(
        format!("/proc/sys/kernel/{kind}_next_id"),
        perm.id.to_string(),
    )
    .with_context(|| format!("making {what} again with its id ({kind}_next_id)"))?;
    let flags = libc::IPC_CREAT as i64 | libc::IPC_EXCL as i64 | i64::from(perm.mode & 0o777);
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let as_creator = (perm.cuid, perm.cgid) != (euid, egid);
    if as_creator {
        // Raw calls: this thread only; the saved set-user-ID keeps the way back.
        raw(unsafe { libc::syscall(libc::SYS_setresgid, -1, perm.cgid, -1) })
            .and_then(|_| raw(unsafe { libc::syscall(libc::SYS_setresuid, -1, perm.cuid, -1) }))
            .with_context(|| format!("becoming the creator of {what}"))?;
    }
    let made = raw(make(perm.key, flags));
    if as_creator {
        unsafe {
            libc::syscall(libc::SYS_setresuid, -1, euid, -1);
            libc::syscall(libc::SYS_setresgid, -1, egid, -1);
        }
    }
    let id = made.with_context(|| format!("making {what} again"))?;
    if id != i64::from(perm.id) {
        bail!("{what} came back as {id}");
    }
    Ok(id)
}

/// Remove again the segments that had been removed while attached (SHM_DEST), now that
/// their processes have attached them: each goes with its last detach, as it would have.
pub fn remove_destroyed(objects: &SysvObjects) -> Result<()> {
    for s in objects.shm.iter().filter(|s| s.perm.mode & SHM_DEST != 0) {
        raw(unsafe { libc::syscall(libc::SYS_shmctl, s.perm.id, libc::IPC_RMID, 0) })
            .with_context(|| format!("removing shared memory segment {} again", s.perm.id))?;
    }
    Ok(())
}
