//! Memory records: mappings with their flags, and the files carried for them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapRecord {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub offset: u64,
    pub path: String,
    /// The mapped file's device (major, minor) and inode; 0 for anonymous memory.
    pub dev: (u32, u32),
    pub inode: u64,
    /// What `VmFlags` in /proc/PID/smaps says of it beyond its protection: `vm::*` bits.
    pub vm: u32,
    /// Where the file ends, as an offset in it, when it ends inside the mapping and the
    /// mapping is of a deleted file or a memfd with no descriptor left (the only file a
    /// resume makes again for it): a page past it raises SIGBUS, after the resume too.
    pub file_end: Option<u64>,
}

/// A mapping's flags from the two-letter names `VmFlags` in /proc/PID/smaps gives them,
/// as `MapRecord::vm` bits: those a resume sets again (`CARRIED`), and those a checkpoint
/// refuses (`REFUSED`). The other names are the protection, or set by the kernel alike on
/// both sides (`ac`, `gd`, `me` ...).
pub mod vm {
    /// The file was opened writable: a shared mapping of it may be made writable later.
    pub const MAY_WRITE: u32 = 1 << 0;
    /// mlock.
    pub const LOCKED: u32 = 1 << 1;
    /// mlock2(MLOCK_ONFAULT).
    pub const LOCK_ON_FAULT: u32 = 1 << 2;
    pub const SEQUENTIAL: u32 = 1 << 3;
    pub const RANDOM: u32 = 1 << 4;
    pub const DONT_FORK: u32 = 1 << 5;
    /// MAP_NORESERVE (or no commit charge).
    pub const NO_RESERVE: u32 = 1 << 6;
    pub const DONT_DUMP: u32 = 1 << 7;
    /// Merged with equal pages (KSM).
    pub const MERGEABLE: u32 = 1 << 8;
    pub const HUGEPAGE: u32 = 1 << 9;
    pub const NO_HUGEPAGE: u32 = 1 << 10;
    pub const WIPE_ON_FORK: u32 = 1 << 11;
    /// MAP_DROPPABLE: its pages may be dropped under memory pressure.
    pub const DROPPABLE: u32 = 1 << 12;
    /// mseal: it cannot be unmapped, moved or reprotected.
    pub const SEALED: u32 = 1 << 13;
    /// Huge pages of hugetlbfs (MAP_HUGETLB).
    pub const HUGETLB: u32 = 1 << 16;
    /// A shadow stack (x86 user shadow stacks).
    pub const SHADOW_STACK: u32 = 1 << 17;
    /// Registered with userfaultfd.
    pub const USERFAULT: u32 = 1 << 18;
    /// Device memory (a driver's pages: VM_PFNMAP, VM_IO).
    pub const DEVICE: u32 = 1 << 19;
    /// Registered for write-protection with userfaultfd ("uw"): by crterm's own write
    /// tracking (`task::memory::tracking`) in a process it tracks; the checkpoint turns it
    /// into `USERFAULT` (refused) in any other.
    pub const WRITE_TRACKED: u32 = 1 << 20;

    pub const CARRIED: u32 = (1 << 14) - 1;
    pub const REFUSED: u32 = HUGETLB | SHADOW_STACK | USERFAULT | DEVICE;

    /// The bit of a two-letter name; 0 for names that are not carried or refused.
    pub fn bit(name: &str) -> u32 {
        match name {
            "mw" => MAY_WRITE,
            "lo" => LOCKED,
            "lf" => LOCK_ON_FAULT,
            "sr" => SEQUENTIAL,
            "rr" => RANDOM,
            "dc" => DONT_FORK,
            "nr" => NO_RESERVE,
            "dd" => DONT_DUMP,
            "mg" => MERGEABLE,
            "hg" => HUGEPAGE,
            "nh" => NO_HUGEPAGE,
            "wf" => WIPE_ON_FORK,
            "dp" => DROPPABLE,
            "sl" => SEALED,
            "ht" => HUGETLB,
            "ss" => SHADOW_STACK,
            "um" | "ui" => USERFAULT,
            "uw" => WRITE_TRACKED,
            "pf" | "io" => DEVICE,
            _ => 0,
        }
    }

    /// What a refused bit is, for the message.
    pub fn refused_name(bits: u32) -> &'static str {
        if bits & HUGETLB != 0 {
            "hugetlb memory (MAP_HUGETLB)"
        } else if bits & SHADOW_STACK != 0 {
            "a shadow stack"
        } else if bits & USERFAULT != 0 {
            "memory registered with userfaultfd"
        } else {
            "device memory (a driver's pages)"
        }
    }
}

/// The content of a file the session maps, carried in the image once however many
/// processes and mappings use it (its bytes are in the FILES chunks, in record order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarriedFile {
    pub sha256: String,
    pub size: u64,
    /// Every (path, device, inode, mtime) of the session that has this content.
    pub copies: Vec<FileCopy>,
    /// The holes of a sparse file, (offset, length), in order: made again as holes.
    pub holes: Vec<(u64, u64)>,
    /// Its content is not in this image but in its parent's chain (an incremental
    /// image), where a carried file of the same hash, size and holes has it.
    pub in_parent: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCopy {
    pub path: String,
    pub dev: (u32, u32),
    pub inode: u64,
    pub mtime_ns: i128,
    /// Its size and change time when it was read: with the device, inode and mtime, what
    /// the next checkpoint compares to know the content is the same without reading it.
    pub size: u64,
    pub ctime_ns: i128,
}

/// Where a mapping's content comes from, for saving and for restoring it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapKind {
    /// Private memory of the process: every present page is saved.
    Anon,
    /// A private mapping of a file: pages still the file's are not saved (the file, or its
    /// copy in the image, gives them back); pages the process changed are.
    PrivateFile,
    /// A shared mapping of a file: the file holds the content.
    SharedFile,
    /// Shared memory with no file behind it (or a deleted one): pages saved.
    SharedAnon,
    /// An attachment of a SysV shared memory segment (shmat; its inode number is the
    /// segment's id): the segment, carried whole, holds the content.
    SysV,
    /// `[vvar]`, `[vdso]`, `[vsyscall]`: the kernel provides them.
    Kernel,
    /// nscd's cache, shared with the nscd daemon outside the session (the seed's "nscd"
    /// case). Nothing is saved: on resume the mapping is zero-filled memory, which glibc's
    /// nscd client takes for a cache nscd stopped updating long ago, so it asks nscd for a
    /// new one (or does without nscd when there is none).
    NscdCache,
}

/// Where nscd keeps the caches it shares with its clients: its database files, and its
/// run directory (a cache that is not persistent is a deleted file there).
const NSCD_CACHE_DIRS: [&str; 3] = ["/var/cache/nscd/", "/run/nscd/", "/var/run/nscd/"];

/// Whether a fork gives a child this mapping with the parent's pages (a private mapping
/// it may read, not dropped or wiped at fork, of anonymous memory or a file that is
/// there): what a child may share copy-on-write with its parent.
pub fn inherits(m: &MapRecord) -> bool {
    let kind = match m.kind() {
        // (Not a private mapping of a deleted file: it is carried whole.)
        MapKind::Anon => m.inode == 0,
        MapKind::PrivateFile => true,
        _ => false,
    };
    kind && m.perms.starts_with('r')
        && m.vm & (vm::DONT_FORK | vm::WIPE_ON_FORK | vm::DROPPABLE) == 0
}

impl MapRecord {
    pub fn kind(&self) -> MapKind {
        if matches!(
            self.path.as_str(),
            "[vvar]" | "[vvar_vclock]" | "[vdso]" | "[vsyscall]"
        ) {
            return MapKind::Kernel;
        }
        let shared = self.perms.as_bytes().get(3) == Some(&b's');
        if shared && self.path.starts_with("/SYSV") && self.dev.0 == 0 {
            return MapKind::SysV;
        }
        if shared && NSCD_CACHE_DIRS.iter().any(|d| self.path.starts_with(d)) {
            return MapKind::NscdCache;
        }
        let file =
            self.inode != 0 && self.path.starts_with('/') && !self.path.ends_with(" (deleted)");
        match (shared, file) {
            (false, false) => MapKind::Anon,
            (false, true) => MapKind::PrivateFile,
            (true, true) => MapKind::SharedFile,
            (true, false) => MapKind::SharedAnon,
        }
    }

    /// The same mapping as `other`, whether or not crterm's write tracking has either
    /// registered (a child forked from a tracked process is not, its parent is).
    pub fn same_as(&self, other: &MapRecord) -> bool {
        let MapRecord {
            start,
            end,
            perms,
            offset,
            path,
            dev,
            inode,
            vm: flags,
            file_end,
        } = self;
        // (Every field named: one added later is compared, or the build says so.)
        (*start, *end, *offset, *dev, *inode, *file_end)
            == (
                other.start,
                other.end,
                other.offset,
                other.dev,
                other.inode,
                other.file_end,
            )
            && *perms == other.perms
            && *path == other.path
            && flags & !vm::WRITE_TRACKED == other.vm & !vm::WRITE_TRACKED
    }

    pub fn executable(&self) -> bool {
        self.perms.as_bytes().get(2) == Some(&b'x')
    }
}
