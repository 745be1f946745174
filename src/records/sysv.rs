//! SysV IPC records: the objects of the session's own IPC namespace (every one of them is
//! the session's), made again with the same ids in the resumed session's namespace.

use serde::{Deserialize, Serialize};

/// The IPC namespace's limits a session's root may have changed (in /proc/sys/kernel),
/// carried as text.
pub const IPC_LIMITS: [&str; 7] = [
    "shmmax", "shmall", "shmmni", "msgmax", "msgmnb", "msgmni", "sem",
];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysvObjects {
    pub shm: Vec<ShmSegment>,
    pub sem: Vec<SemSet>,
    pub msg: Vec<MsgQueue>,
    /// The namespace's limits (`/proc/sys/kernel/shmmax` ...), as text.
    pub limits: Vec<(String, String)>,
}

/// What every SysV object has: its key (0: IPC_PRIVATE), id, owner, creator and mode
/// (the permission bits, and for shared memory SHM_DEST and SHM_LOCKED).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcPerm {
    pub key: i32,
    pub id: i32,
    pub uid: u32,
    pub gid: u32,
    pub cuid: u32,
    pub cgid: u32,
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShmSegment {
    pub perm: IpcPerm,
    pub size: u64,
    /// Its bytes, up to the last page that is not all zeros (the rest reads as zeros).
    pub content: Vec<u8>,
}

/// SHM_DEST: removed (IPC_RMID) while attached; it goes with its last detach.
pub const SHM_DEST: u32 = 0o1000;
/// SHM_LOCKED: locked in memory (shmctl SHM_LOCK).
pub const SHM_LOCKED: u32 = 0o2000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SemSet {
    pub perm: IpcPerm,
    pub values: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsgQueue {
    pub perm: IpcPerm,
    /// The most bytes it may hold (msg_qbytes).
    pub max_bytes: u64,
    /// Its messages in order: (type, text).
    pub messages: Vec<(i64, Vec<u8>)>,
}

impl SysvObjects {
    pub fn is_empty(&self) -> bool {
        self.shm.is_empty() && self.sem.is_empty() && self.msg.is_empty()
    }

    /// The segment whose attachments show `inode` in a process's maps (the kernel gives a
    /// segment's file the segment's id as its inode number).
    pub fn segment_of(&self, inode: u64) -> Option<&ShmSegment> {
        self.shm.iter().find(|s| s.perm.id as u64 == inode)
    }

    /// Check what an image says (ids unique per kind and as the kernel makes them, sizes
    /// within the kernel's limits).
    pub fn validate(&self) -> Result<(), String> {
        if self.limits.len() > 16
            || self
                .limits
                .iter()
                .any(|(n, v)| !IPC_LIMITS.contains(&n.as_str()) || v.len() > 64)
        {
            return Err("IPC limits".into());
        }
        let mut total = 0u64;
        let mut ids = std::collections::BTreeSet::new();
        for s in &self.shm {
            if s.size == 0 || s.size > 1 << 40 || s.content.len() as u64 > s.size {
                return Err(format!("shared memory segment {}: its size", s.perm.id));
            }
            total += s.content.len() as u64;
            if s.perm.id < 0 || !ids.insert(s.perm.id) {
                return Err(format!("shared memory segment id {}", s.perm.id));
            }
        }
        if total > 1 << 36 {
            return Err("shared memory of more than 64 GiB".into());
        }
        ids.clear();
        for s in &self.sem {
            if s.values.is_empty() || s.values.len() > 32000 || s.values.iter().any(|&v| v > 32767)
            {
                return Err(format!("semaphore set {}: its values", s.perm.id));
            }
            if s.perm.id < 0 || !ids.insert(s.perm.id) {
                return Err(format!("semaphore set id {}", s.perm.id));
            }
        }
        ids.clear();
        for q in &self.msg {
            let bytes: u64 = q.messages.iter().map(|m| m.1.len() as u64).sum();
            if q.messages.len() > 1 << 20
                || bytes > 1 << 30
                || q.max_bytes > 1 << 31
                || q.messages.iter().any(|m| m.0 <= 0)
            {
                return Err(format!("message queue {}: its messages", q.perm.id));
            }
            if q.perm.id < 0 || !ids.insert(q.perm.id) {
                return Err(format!("message queue id {}", q.perm.id));
            }
        }
        Ok(())
    }
}
