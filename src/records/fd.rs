//! Descriptor records: one `FdRecord` per descriptor of a process, what it is open on
//! typed by kind (`FdObject`). How each kind is read and made again: `crate::fds`.

use serde::{Deserialize, Serialize};

/// One descriptor of a process: its number, the open file description it is (shared
/// with the other descriptors of that description), and what the description is open on,
/// typed by kind (`FdObject`): each kind's state is read at checkpoint into its own fields
/// and set again at resume from them, nothing left as the kernel's text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdRecord {
    pub fd: i32,
    /// Which open file description this is, numbered across the session: descriptors with
    /// the same number share one (after fork or dup), and with it the offset and flags.
    pub desc: u32,
    /// Where `/proc/PID/fd/N` pointed: a path (` (deleted)` when unlinked), or the
    /// kernel's name of an object without one (`pipe:[N]`, `socket:[N]`,
    /// `anon_inode:[eventfd]` ...). Files are opened again by it; messages name it.
    pub target: String,
    /// The status and access flags (fdinfo's `flags:`, O_CLOEXEC of the descriptor
    /// among them) and the offset.
    pub flags: u32,
    pub pos: u64,
    /// Who is sent SIGIO (with O_ASYNC) and SIGURG for it: F_GETOWN_EX's (type, id) with
    /// the session's id (`OWNER_*`; id 0: nobody), and F_GETSIG's signal (0: SIGIO).
    pub owner: (i32, i32),
    pub signal: i32,
    /// The file locks held through it (fdinfo's `lock:` lines).
    pub locks: Vec<LockRecord>,
    pub object: FdObject,
}

/// What a description is open on, one variant per kind crterm carries (anything else is
/// refused at checkpoint, by name, and never reaches an image).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FdObject {
    /// A regular file, by path, or deleted while open (its content is carried).
    File(FileIdentity),
    Directory(FileIdentity),
    /// A memfd (`memfd_create`), by its name, with its seals (`F_SEAL_*`; F_SEAL_SEAL
    /// for one made without MFD_ALLOW_SEALING); its content is carried as a deleted
    /// file's is, by device and inode.
    Memfd {
        name: String,
        seals: u32,
        identity: FileIdentity,
    },
    /// A symbolic link itself (an O_PATH | O_NOFOLLOW descriptor), with its text.
    Symlink {
        text: String,
        identity: FileIdentity,
    },
    /// A character device opened again by its path (`/dev/null`, `/dev/urandom` ...).
    Device,
    /// `/dev/tty`: opened again by the process itself, through its controlling terminal.
    ControllingTty,
    /// The slave side of a pty of the session (`/dev/pts/N`), with its settings.
    PtySlave(TtyRecord),
    /// The master side of pty `index` of the session (`/dev/ptmx`).
    PtyMaster {
        index: u32,
        tty: TtyRecord,
    },
    /// A pipe (`pipe:[N]`), or a named pipe (a FIFO at `target`).
    Pipe(PipeRecord),
    Fifo(PipeRecord),
    Socket(SocketRecord),
    EventFd {
        count: u64,
        semaphore: bool,
    },
    TimerFd(TimerFdRecord),
    /// The signals it reads (a mask of signals 1..=64).
    SignalFd {
        mask: u64,
    },
    Epoll {
        registrations: Vec<EpollRegistration>,
    },
    Inotify {
        watches: Vec<InotifyWatch>,
    },
}

/// A pipe's or named pipe's queue, read without consuming it, and its capacity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipeRecord {
    pub queued: Vec<u8>,
    pub size: u32,
}

/// A timerfd: its clock and what is left of it (ns).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerFdRecord {
    pub clock: i32,
    pub value_ns: u64,
    pub interval_ns: u64,
}

/// One registration of an epoll set: the number the process registered, its events and
/// its data (the registration is keyed by that number).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpollRegistration {
    /// The number it was registered through (the kernel keys it by that number and the
    /// file).
    pub fd: i32,
    pub events: u32,
    pub data: u64,
    /// The open file description registered, when the process no longer holds it at
    /// `fd` (it closed `fd`, or `fd` holds another file now: the registration lives as
    /// long as the file does): registered again through a descriptor of it put at `fd`
    /// for the moment. None: `fd` is it.
    pub desc: Option<u32>,
}

/// A file lock held through a descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    pub kind: LockKind,
    pub write: bool,
    /// The byte range: from `start`, `len` bytes (0: to the end of the file).
    pub start: i64,
    pub len: i64,
    /// The locked file, as the kernel names it (`MAJOR:MINOR:INODE`).
    pub file: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockKind {
    /// flock: one per open file description.
    Flock,
    /// POSIX record locks (F_SETLK): per process.
    Posix,
    /// Open-file-description locks (F_OFD_SETLK): per description.
    Ofd,
}

/// `FdRecord::owner` types (the kernel's F_OWNER_*).
pub const OWNER_TID: i32 = 0;
pub const OWNER_PID: i32 = 1;
pub const OWNER_PGRP: i32 = 2;

/// One inotify watch: its descriptor number, its mask and the path of what it watches
/// (found by inode among the files the session has open, its directories and mapped files:
/// the kernel keeps no path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InotifyWatch {
    pub wd: i32,
    pub mask: u32,
    pub ino: u64,
    pub dev: (u32, u32),
    pub path: String,
    /// The kernel's file handle of the watched inode (type, bytes), from fdinfo: as root
    /// the checkpoint opens it (open_by_handle_at) to find a path no descriptor or
    /// mapping leads to. Not kept in the image.
    #[serde(skip)]
    pub handle: Option<(i32, Vec<u8>)>,
}

/// A socket (what is carried: a unix socket listening on a name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketRecord {
    pub domain: i32,
    pub kind: i32,
    pub listening: bool,
    /// Connections that arrived and were not accepted yet.
    pub pending: bool,
    pub passcred: bool,
    /// The unix address: a path, or an abstract name (leading 0 byte); empty if unbound.
    pub name: Vec<u8>,
    /// The mode of the socket file of a path name (screen marks attached sessions by it).
    pub mode: u32,
    pub inode: u64,
    /// The socket at the other end (0: not connected), and whether it is held in the
    /// session (a pair made again on resume) or outside (the connection comes back closed).
    pub peer: u64,
    pub peer_inside: bool,
    /// RCV_SHUTDOWN (1), SEND_SHUTDOWN (2).
    pub shutdown: u8,
    /// A connection not accepted yet: the listening socket of the session it waits in
    /// (resume connects to it again, in the order they waited), else 0; its place in
    /// that listener's queue; and what it had sent, which waits with it (one piece of a
    /// stream, or its messages), sent again after it connects.
    pub pending_on: u64,
    pub pending_rank: u32,
    pub sent: Vec<Vec<u8>>,
    /// The bytes waiting to be read: one piece per datagram, or one for a stream.
    pub queued: Vec<Vec<u8>>,
    /// A TCP socket's own address and its peer's (sockaddr bytes; empty: none).
    pub addr: Vec<u8>,
    pub peer_addr: Vec<u8>,
    /// Options set again on resume: (level, option, value).
    pub options: Vec<(i32, i32, i32)>,
    /// A unix socket that was connected: with no `peer`, the other end has closed (what
    /// it sent before is still to be read, then the end of the stream).
    pub connected: bool,
    /// Its path no longer names it (the socket file was removed, maybe another socket
    /// bound there since): bound there again and the file removed, before any socket of
    /// the session that has the path now.
    pub unlinked: bool,
    /// For a name relative to a directory: the directory it was bound in (found at
    /// checkpoint as the holder's working directory, where the socket file is); empty
    /// otherwise. It is bound again from there, under the same relative name.
    pub bound_in: String,
    /// A datagram socket connected to a receiver that is not connected back (others send
    /// to it too, as to a logger): the receiver's name, connected to again on resume.
    pub peer_name: Vec<u8>,
    /// The descriptors in flight in its queue (sent with SCM_RIGHTS, not yet received),
    /// in queue order: each with the message that carries them.
    pub in_flight: Vec<InFlight>,
    /// A UDP socket's queued datagrams (`queued`), one each: which socket of the session
    /// sent it and from where and to where, as the receiver saw it. A resume sends each
    /// again from that socket.
    pub datagrams_from: Vec<DatagramFrom>,
}

/// Who sent a datagram queued on a UDP socket of the session (`SocketRecord::datagrams_from`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatagramFrom {
    /// The inode of the session's UDP socket that sends from its address.
    pub sender: u64,
    /// The sender's address and the address it was sent to, as the receiver saw them
    /// (sockaddr bytes of the receiver's family).
    pub from: Vec<u8>,
    pub to: Vec<u8>,
}

/// Open file descriptions sent over a unix socket and not yet received: the message
/// (stream: the bytes) they came with, and the descriptions, in the order they were sent
/// (`FdRecord::desc` numbers: of a process's descriptor, or of one of
/// `SessionRecord::in_flight` when no process holds it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    /// The datagram of `queued` that carries them; for a stream, 0.
    pub piece: u32,
    /// For a stream: where in the queued bytes the message that carries them starts and
    /// how long it is (a receive that reaches its first byte takes the files and ends
    /// with its last). For a datagram: 0 and its length.
    pub offset: u64,
    pub len: u64,
    pub descs: Vec<u32>,
}

impl SocketRecord {
    pub fn stream(&self) -> bool {
        self.kind == libc::SOCK_STREAM
    }

    pub fn inet(&self) -> bool {
        matches!(self.domain, libc::AF_INET | libc::AF_INET6)
    }

    /// The path a unix socket's name names, made absolute (`bound_in`); none for an
    /// abstract or no name.
    pub fn path(&self) -> Option<std::path::PathBuf> {
        if self.inet() || self.name.first().is_none_or(|&b| b == 0) {
            return None;
        }
        let name = String::from_utf8_lossy(&self.name);
        let name = name.trim_end_matches('\0');
        Some(std::path::Path::new(&self.bound_in).join(name))
    }

    /// The name for messages: the path, `@name` for an abstract one.
    pub fn display_name(&self) -> String {
        if self.inet() {
            let proto = if self.stream() { "TCP" } else { "UDP" };
            return format!("{proto} {}", crate::sys::sock::inet_text(&self.addr));
        }
        match self.name.first() {
            None => "(unbound)".into(),
            Some(0) => format!("@{}", String::from_utf8_lossy(&self.name[1..])),
            Some(_) => String::from_utf8_lossy(&self.name).into_owned(),
        }
    }
}

impl FdRecord {
    /// What identifies a regular file or directory.
    pub fn identity(&self) -> Option<&FileIdentity> {
        match &self.object {
            FdObject::File(id) | FdObject::Directory(id) => Some(id),
            _ => None,
        }
    }

    /// A regular file or a directory (what the file policy looks at).
    pub fn is_file_or_dir(&self) -> bool {
        self.identity().is_some()
    }

    pub fn socket(&self) -> Option<&SocketRecord> {
        match &self.object {
            FdObject::Socket(s) => Some(s),
            _ => None,
        }
    }

    /// A terminal's state (a pty's slave or master).
    pub fn tty(&self) -> Option<&TtyRecord> {
        match &self.object {
            FdObject::PtySlave(t) | FdObject::PtyMaster { tty: t, .. } => Some(t),
            _ => None,
        }
    }

    pub fn tty_mut(&mut self) -> Option<&mut TtyRecord> {
        match &mut self.object {
            FdObject::PtySlave(t) | FdObject::PtyMaster { tty: t, .. } => Some(t),
            _ => None,
        }
    }

    /// For a pty master: the number of its pty.
    pub fn pty_index(&self) -> Option<u32> {
        match self.object {
            FdObject::PtyMaster { index, .. } => Some(index),
            _ => None,
        }
    }

    /// Each kind's fields within what the kernel allows (a record read from an image).
    pub fn object_ok(&self) -> bool {
        use super::limits::{FD_MAX, TEXT};
        let tty_ok = |t: &TtyRecord| t.termios.len() <= 4096 && t.typed.len() <= 16384;
        match &self.object {
            FdObject::File(_) | FdObject::Directory(_) => true,
            FdObject::Symlink { text, .. } => text.len() <= 4096,
            FdObject::Memfd { name, seals, .. } => name.len() <= 249 && seals & !0x3f == 0,
            FdObject::Device | FdObject::ControllingTty => true,
            FdObject::PtySlave(t) => tty_ok(t),
            FdObject::PtyMaster { index, tty } => *index < 1 << 20 && tty_ok(tty),
            FdObject::Pipe(p) | FdObject::Fifo(p) => p.queued.len() <= 1 << 30 && p.size <= 1 << 30,
            FdObject::Socket(s) => {
                s.name.len() <= 108
                    && (s.sent.is_empty() || s.pending_on != 0)
                    && s.sent.len() <= 100_000
                    && s.sent.iter().map(Vec::len).sum::<usize>() <= 64 << 20
            }
            FdObject::EventFd { count, .. } => *count < u64::MAX,
            FdObject::TimerFd(t) => (0..16).contains(&t.clock),
            FdObject::SignalFd { .. } => true,
            FdObject::Epoll { registrations } => {
                registrations.len() <= 1 << 20
                    && registrations.iter().all(|r| (0..FD_MAX).contains(&r.fd))
            }
            FdObject::Inotify { watches } => {
                watches.len() <= 1 << 20 && watches.iter().all(|w| w.wd > 0 && w.path.len() <= TEXT)
            }
        }
    }

    /// What kind of descriptor this is, for messages.
    pub fn kind_name(&self) -> &'static str {
        match self.object {
            FdObject::File(_) => "file",
            FdObject::Directory(_) => "directory",
            FdObject::Symlink { .. } => "symbolic link",
            FdObject::Memfd { .. } => "memfd",
            FdObject::Device => "device",
            FdObject::ControllingTty => "controlling terminal",
            FdObject::PtySlave(_) => "pty",
            FdObject::PtyMaster { .. } => "pty master",
            FdObject::Pipe(_) => "pipe",
            FdObject::Fifo(_) => "named pipe",
            FdObject::Socket(_) => "socket",
            FdObject::EventFd { .. } => "eventfd",
            FdObject::TimerFd(_) => "timerfd",
            FdObject::SignalFd { .. } => "signalfd",
            FdObject::Epoll { .. } => "epoll",
            FdObject::Inotify { .. } => "inotify",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtyRecord {
    pub termios: Vec<u8>,
    pub cols: u16,
    pub rows: u16,
    /// Bytes typed but not yet read by the program: in canonical mode the complete lines
    /// each with its end and the line being typed, quoted so that they build the same
    /// queue again (`fds::ttys::put_typed_input`). Put back on resume.
    pub typed: Vec<u8>,
    /// Through a pty master (screen's, tmux's): the programs' output not yet read by the
    /// master's holder, and whether the master is in packet mode.
    pub output: Vec<u8>,
    pub packet: bool,
    /// Whether the pty is locked (its slave cannot be opened yet).
    pub locked: bool,
    /// The slave's device node: its mode bits (`mesg n` takes group write away) and its
    /// (user, group) owner.
    pub mode: u32,
    pub owner: (u32, u32),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    /// Permission bits, for a file made again where it is missing.
    pub mode: u32,
    /// Its names (0: deleted, the open descriptors keep it).
    pub nlink: u64,
    /// SHA-256 of its content (files up to `HASHED_FILE_LIMIT`), read after the thaw: a
    /// file changed with its size and mtime kept is caught too.
    pub sha256: Option<String>,
}

/// Open regular files up to this size are carried unless `--carry-files` says otherwise.
pub const DEFAULT_CARRY_FILES: u64 = 4 << 20;

/// Files deleted while open are carried up to this size.
pub const DELETED_FILE_LIMIT: u64 = 1 << 30;

/// Open files up to this size have their content hashed for the identity check.
pub const HASHED_FILE_LIMIT: u64 = 16 << 20;

/// SHA-256 of the first `len` bytes of the file at `path` (None if it has fewer).
pub fn hash_prefix(path: &str, len: u64) -> Option<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // The path comes from an image: only a regular file is read (a FIFO would block, a
    // device never end), and no more of it than it holds.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() || meta.len() < len {
        return None;
    }
    let mut f = f.take(len);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0u64;
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        got += n as u64;
    }
    (got == len).then(|| hex(&hasher.finalize()))
}

/// Lower-case hex of `bytes` (how the records write SHA-256 digests).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
