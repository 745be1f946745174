//! Sockets: unix sockets (named, listening, connected pairs with their queues and
//! half-closes, connections not yet accepted) and TCP sockets (listening again; a
//! connection comes back closed with what had arrived still to read). At checkpoint what
//! one descriptor tells is read by `read`, what only the whole session tells (peers,
//! queues, pending connections, from sock_diag) by `read_connections`.

use crate::records::*;
use crate::sys;
use anyhow::{Context, Result, anyhow, bail};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

// ---- checkpoint ----------------------------------------------------------------------

/// The socket options a TCP or UDP socket gets back (those its kind has).
const TCP_OPTIONS: &[(i32, i32)] = &[
    (libc::SOL_SOCKET, libc::SO_REUSEADDR),
    (libc::SOL_SOCKET, libc::SO_BROADCAST),
    (libc::SOL_SOCKET, libc::SO_REUSEPORT),
    (libc::SOL_SOCKET, libc::SO_KEEPALIVE),
    (libc::IPPROTO_TCP, libc::TCP_NODELAY),
    (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY),
];

pub fn read(pid: i32, fd: i32, target: &str) -> io::Result<SocketRecord> {
    use std::os::unix::fs::PermissionsExt;
    let sock = sys::trace::copy_fd_of(pid, fd)?;
    let info = sys::sock::socket_info(sock.as_fd())?;
    // Through the holder's working directory: a relative name is relative to where it
    // was bound (`read_connections` finds out whether that is still there).
    let path = (info.name.first().is_some_and(|&b| b != 0)).then(|| {
        let name = String::from_utf8_lossy(&info.name);
        let name = name.trim_end_matches('\0');
        if name.starts_with('/') {
            format!("/proc/{pid}/root{name}")
        } else {
            format!("/proc/{pid}/cwd/{name}")
        }
    });
    let inet = matches!(info.domain, libc::AF_INET | libc::AF_INET6);
    let (addr, peer_addr, options) = if info.domain == libc::AF_NETLINK {
        let fd = sock.as_fd();
        let protocol = sys::sock::get_opt(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL)?;
        if protocol != libc::NETLINK_ROUTE {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("a netlink socket of protocol {protocol} (route sockets are carried)"),
            ));
        }
        // Its options that are set (ints), and the groups it joined.
        let mut options: Vec<(i32, i32, i32)> = NETLINK_OPTIONS
            .iter()
            .filter_map(|&opt| {
                sys::sock::get_opt(fd, SOL_NETLINK, opt)
                    .ok()
                    .filter(|&v| v != 0)
                    .map(|v| (SOL_NETLINK, opt, v))
            })
            .collect();
        for g in sys::sock::netlink_memberships(fd)? {
            options.push((SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, g as i32));
        }
        (sys::sock::local_addr(fd)?, Vec::new(), options)
    } else if inet {
        let fd = sock.as_fd();
        let options = TCP_OPTIONS
            .iter()
            .filter(|(level, _)| *level != libc::IPPROTO_IPV6 || info.domain == libc::AF_INET6)
            .filter_map(|&(level, opt)| {
                sys::sock::get_opt(fd, level, opt)
                    .ok()
                    .map(|v| (level, opt, v))
            })
            .collect();
        (
            sys::sock::local_addr(fd).unwrap_or_default(),
            sys::sock::peer_addr(fd).unwrap_or_default(),
            options,
        )
    } else {
        Default::default()
    };
    Ok(SocketRecord {
        addr,
        peer_addr,
        options,
        domain: info.domain,
        kind: info.kind,
        listening: info.listening,
        pending: info.listening && sys::readable(sock.as_fd()),
        passcred: info.passcred,
        mode: path
            .and_then(|p| std::fs::symlink_metadata(p).ok())
            .map_or(0, |m| m.permissions().mode() & 0o7777),
        name: info.name,
        inode: target
            .strip_prefix("socket:[")
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse().ok())
            .unwrap_or(0),
        peer: 0,
        peer_inside: false,
        shutdown: 0,
        pending_on: 0,
        queued: Vec::new(),
        connected: false,
        unlinked: false,
        bound_in: String::new(),
        peer_name: Vec::new(),
    })
}

const SOL_NETLINK: i32 = 270;
const NETLINK_ADD_MEMBERSHIP: i32 = 1;
/// A netlink socket's int options a resume sets again: NETLINK_BROADCAST_ERROR,
/// NETLINK_NO_ENOBUFS, NETLINK_LISTEN_ALL_NSID, NETLINK_CAP_ACK, NETLINK_EXT_ACK,
/// NETLINK_GET_STRICT_CHK.
const NETLINK_OPTIONS: &[i32] = &[4, 5, 8, 10, 11, 12];

/// Why a socket cannot be carried (None: it can; what only the whole session tells is
/// decided in `read_sockets`).
pub fn refusal(s: &SocketRecord) -> Option<String> {
    match s {
        s if s.inet() && matches!(s.kind, libc::SOCK_STREAM | libc::SOCK_DGRAM) => None,
        s if s.inet() => Some(format!(
            "a raw {} socket (TCP, UDP and unix sockets are carried)",
            if s.domain == libc::AF_INET {
                "IPv4"
            } else {
                "IPv6"
            }
        )),
        s if s.domain == libc::AF_NETLINK => None,
        s if s.domain != libc::AF_UNIX => Some(format!(
            "{} (only unix, TCP, UDP and netlink route sockets are carried)",
            match s.domain {
                libc::AF_PACKET => "a packet socket".to_string(),
                d => format!("a socket of address family {d}"),
            }
        )),
        s if s.listening && s.name.is_empty() => {
            Some("a listening unix socket without a name".to_string())
        }
        _ => None,
    }
}

/// What only the whole session tells of its unix sockets: each one's peer (sock_diag),
/// whether that peer is held in the session too, and the bytes queued to be read (peeked,
/// not consumed). Refuses what cannot be carried, naming the process and descriptor:
/// descriptors in flight, a datagram socket connected to one that is not connected back.
pub fn read_connections(record: &mut SessionRecord, hosts: &[i32]) -> io::Result<()> {
    let live: Vec<usize> = (0..record.processes.len())
        .filter(|&i| record.processes[i].zombie.is_none())
        .collect();
    let has_sockets = live
        .iter()
        .any(|&i| record.processes[i].fds.iter().any(|f| f.socket().is_some()));
    if !has_sockets {
        return Ok(());
    }
    let diag = sys::sock::unix_diag()
        .map_err(|e| io::Error::other(format!("reading the session's unix sockets: {e}")))?;
    let held: std::collections::HashSet<u64> = live
        .iter()
        .flat_map(|&i| &record.processes[i].fds)
        .filter_map(|f| f.socket().map(|s| s.inode))
        .collect();
    let mut queues: std::collections::HashMap<u64, Vec<Vec<u8>>> = Default::default();
    // Connections not accepted yet, by the inode of their client end (sock_diag lists
    // those for a listener: its embryo sockets have none): the listener of the session
    // they wait in.
    let waiting_in: std::collections::HashMap<u64, u64> = diag
        .iter()
        .filter(|(ino, _)| held.contains(ino))
        .flat_map(|(&listener, d)| d.pending.iter().map(move |&c| (c, listener)))
        .collect();
    for (&pi, &host) in live.iter().zip(hosts) {
        let p = &mut record.processes[pi];
        for f in &mut p.fds {
            let FdObject::Socket(s) = &mut f.object else {
                continue;
            };
            if s.domain == libc::AF_UNIX && s.name.first().is_some_and(|&b| b != 0) {
                if s.name[0] != b'/' {
                    // A relative name: bound in the holder's working directory, if the
                    // socket file is there.
                    let cwd = std::fs::read_link(format!("/proc/{host}/cwd"))?;
                    s.bound_in = cwd.display().to_string();
                    if path_unlinked(host, s, diag.get(&s.inode)) {
                        return Err(io::Error::new(
                            io::ErrorKind::Unsupported,
                            format!(
                                "process {} ({}) holds fd {}, a unix socket bound to the relative name {} somewhere other than its working directory, which this version cannot carry",
                                p.pid,
                                p.comm,
                                f.fd,
                                s.display_name()
                            ),
                        ));
                    }
                } else {
                    s.unlinked = path_unlinked(host, s, diag.get(&s.inode));
                }
            }
            if s.listening {
                continue;
            }
            if s.domain == libc::AF_NETLINK {
                // What the kernel sent it cannot be sent again.
                let sock = sys::trace::copy_fd_of(host, f.fd)?;
                if sys::readable(sock.as_fd()) {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!(
                            "process {} ({}) holds fd {}, a netlink socket with messages queued ({}), which this version cannot carry",
                            p.pid, p.comm, f.fd, f.target
                        ),
                    ));
                }
                continue;
            }
            if s.inet() && !s.stream() {
                // UDP: datagrams queued came from senders that cannot send them again.
                let sock = sys::trace::copy_fd_of(host, f.fd)?;
                if sys::readable(sock.as_fd()) {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!(
                            "process {} ({}) holds fd {}, a UDP socket with datagrams queued ({}), which this version cannot carry (their senders cannot send them again)",
                            p.pid, p.comm, f.fd, f.target
                        ),
                    ));
                }
                continue;
            }
            if s.inet() {
                // A TCP connection comes back closed, with what had arrived still to read.
                if !s.peer_addr.is_empty() {
                    let sock = sys::trace::copy_fd_of(host, f.fd)?;
                    s.queued = sys::sock::peek_queue(sock.as_fd(), true)?;
                }
                continue;
            }
            if s.domain != libc::AF_UNIX {
                continue;
            }
            let d = diag.get(&s.inode).cloned().unwrap_or_default();
            s.peer = d.peer;
            s.shutdown = d.shutdown;
            s.peer_inside = d.peer != 0 && held.contains(&d.peer);
            // Connected, its peer maybe gone since (a datagram receiver others connected
            // to is marked established too, but has no peer of its own).
            s.connected = d.has_peer;
            // A stream that was never connected has nothing queued (and a peek at it
            // fails).
            if s.kind != libc::SOCK_DGRAM && !s.connected && !waiting_in.contains_key(&s.inode) {
                continue;
            }
            // A connection waiting in a listener of the session: made again by connecting
            // to it, which needs the bytes sent so far to be none (they cannot be peeked).
            if let Some(&listener) = waiting_in.get(&s.inode) {
                if d.unread_sent > 0 {
                    let refuse = format!(
                        "process {} ({}) holds fd {}, a unix socket connection not accepted yet that has sent data ({}), which this version cannot carry",
                        p.pid, p.comm, f.fd, f.target
                    );
                    return Err(io::Error::new(io::ErrorKind::Unsupported, refuse));
                }
                s.pending_on = listener;
                continue;
            }
            let refuse = |what: &str| {
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "process {} ({}) holds fd {}, a unix socket {what} ({}), which this version cannot carry",
                        p.pid, p.comm, f.fd, f.target
                    ),
                )
            };
            // Connected to a receiver that is not connected back (a logger others send to
            // as well): connected to its name again.
            if s.peer != 0 && diag.get(&d.peer).map(|d| d.peer) != Some(s.inode) {
                let name = diag
                    .get(&d.peer)
                    .map(|d| d.name.clone())
                    .unwrap_or_default();
                if s.kind != libc::SOCK_DGRAM || name.is_empty() {
                    if s.peer_inside {
                        return Err(refuse(
                            "connected to a socket without a name that is not connected back",
                        ));
                    }
                } else {
                    s.peer_name = name;
                }
            }
            if let Some(q) = queues.get(&s.inode) {
                s.queued = q.clone();
                continue;
            }
            let sock = sys::trace::copy_fd_of(host, f.fd)?;
            s.queued = match sys::sock::peek_queue(sock.as_fd(), s.stream()) {
                Ok(q) => q,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    return Err(refuse(&format!("with {e} queued")));
                }
                Err(e) => return Err(e),
            };
            queues.insert(s.inode, s.queued.clone());
            if !s.queued.is_empty() && !s.peer_name.is_empty() {
                return Err(refuse(
                    "connected to a receiver, with datagrams queued for it",
                ));
            }
            if !s.queued.is_empty() && s.kind == libc::SOCK_DGRAM && s.peer == 0 && !s.connected {
                // Refilled by sending to its name: one that names it.
                if s.unlinked || s.name.is_empty() || s.passcred {
                    return Err(refuse(
                        "receiving datagrams, with datagrams queued, whose name does not lead to it or that receives the senders' credentials",
                    ));
                }
            }
        }
    }
    // A connection not accepted yet is made again by connecting to its listener's path:
    // one whose path names another socket now cannot be.
    let unlinked: std::collections::HashSet<u64> = live
        .iter()
        .flat_map(|&i| &record.processes[i].fds)
        .filter_map(|f| f.socket().filter(|s| s.unlinked).map(|s| s.inode))
        .collect();
    for &i in &live {
        let p = &record.processes[i];
        for f in &p.fds {
            if let Some(s) = f.socket()
                && s.pending_on != 0
                && unlinked.contains(&s.pending_on)
            {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "process {} ({}) holds fd {}, a unix socket connection not accepted yet by a listener whose path was removed, which this version cannot carry",
                        p.pid, p.comm, f.fd
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Whether the path unix socket `s` was bound to no longer names it: no socket file is
/// there, or another one (its inode is not the one the socket made). Looked at through
/// the holder's root (`host`: its pid here).
fn path_unlinked(host: i32, s: &SocketRecord, d: Option<&sys::sock::UnixDiag>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some((dev, ino)) = d.and_then(|d| d.vfs) else {
        return false;
    };
    let Some(path) = s.path() else {
        return false;
    };
    match std::fs::symlink_metadata(format!("/proc/{host}/root{}", path.display())) {
        // The kernel numbers devices major << 20 | minor.
        Ok(m) => {
            m.ino() != u64::from(ino)
                || libc::major(m.dev()) != dev >> 20
                || libc::minor(m.dev()) != dev & 0xf_ffff
        }
        Err(_) => true,
    }
}

// ---- resume --------------------------------------------------------------------------

/// Every connected unix socket of the image, made again: a pair for two ends held in the
/// session, each end's queue refilled from the other and half-closed as it was; an end whose
/// peer was outside the session gets its queued bytes and then finds the connection closed
/// (the program sees what it sees when the other side goes away). Returns the sockets by
/// inode and a line for each connection that came back closed.
pub fn connected(record: &SessionRecord) -> Result<(HashMap<u64, OwnedFd>, Vec<String>)> {
    use crate::records::SocketRecord;
    let mut by_inode: BTreeMap<u64, (&ProcessRecord, &FdRecord, &SocketRecord)> = BTreeMap::new();
    let mut made = HashMap::new();
    let mut closed = Vec::new();
    let live = || record.processes.iter().filter(|p| p.zombie.is_none());
    // Sockets whose path no longer names them first: bound there and the file removed,
    // so that a socket of the session bound there since can bind after them.
    for p in live() {
        for f in &p.fds {
            let Some(s) = f
                .socket()
                .filter(|s| s.unlinked && !made.contains_key(&s.inode))
            else {
                continue;
            };
            let what = || format!("process {} ({}) fd {}", p.pid, p.comm, f.fd);
            let sock = named_socket(s).with_context(what)?;
            let path = String::from_utf8_lossy(&s.name)
                .trim_end_matches('\0')
                .to_string();
            std::fs::remove_file(&path)
                .with_context(|| format!("{}: removing {path} again", what()))?;
            made.insert(s.inode, sock);
        }
    }
    // Datagram receivers with a name (others send to them, some connected to them): bound
    // again and their queue refilled by sending to the name, before their clients
    // connect to them.
    for p in live() {
        for f in &p.fds {
            let Some(s) = f.socket().filter(|s| {
                s.kind == libc::SOCK_DGRAM
                    && !s.inet()
                    && s.peer == 0
                    && !s.connected
                    && !s.name.is_empty()
                    && !made.contains_key(&s.inode)
            }) else {
                continue;
            };
            let what = || format!("process {} ({}) fd {}", p.pid, p.comm, f.fd);
            let sock = named_socket(s).with_context(what)?;
            if !s.queued.is_empty() {
                let to = address_of(s);
                let sender = sys::sock::unix_socket(libc::SOCK_DGRAM).context("socket")?;
                for piece in &s.queued {
                    sys::sock::send_to_unix(sender.as_fd(), piece, &to)
                        .with_context(|| format!("{}: refilling its queue", what()))?;
                }
            }
            made.insert(s.inode, sock);
        }
    }
    // Listening sockets first: a connection that was not accepted yet is made again by
    // connecting to its listener.
    let mut listeners: HashMap<u64, &SocketRecord> = HashMap::new();
    for p in live() {
        for f in &p.fds {
            let Some(s) = f.socket().filter(|s| s.listening) else {
                continue;
            };
            if made.contains_key(&s.inode) {
                listeners.insert(s.inode, s);
                continue;
            }
            if listeners.contains_key(&s.inode) {
                continue;
            }
            let what = || format!("process {} ({}) fd {}", p.pid, p.comm, f.fd);
            let sock = if s.inet() {
                tcp_socket(s)
            } else {
                named_socket(s)
            }
            .with_context(what)?;
            made.insert(s.inode, sock);
            listeners.insert(s.inode, s);
        }
    }
    for p in live() {
        for f in &p.fds {
            let Some(s) = f.socket() else { continue };
            if s.listening || made.contains_key(&s.inode) {
                continue;
            }
            if s.pending_on != 0 {
                let what = || format!("process {} ({}) fd {}", p.pid, p.comm, f.fd);
                let l = listeners
                    .get(&s.pending_on)
                    .ok_or_else(|| anyhow!("{}: its listener is not in the image", what()))?;
                let sock = sys::sock::unix_socket(s.kind).with_context(what)?;
                let to = match l.path() {
                    Some(path) => path.into_os_string().into_encoded_bytes(),
                    None => l.name.clone(),
                };
                sys::sock::connect_unix(sock.as_fd(), &to).with_context(|| {
                    format!("{}: connecting to {} again", what(), l.display_name())
                })?;
                made.insert(s.inode, sock);
                continue;
            }
            if !s.peer_name.is_empty() {
                let what = || format!("process {} ({}) fd {}", p.pid, p.comm, f.fd);
                let sock = if s.name.is_empty() {
                    sys::sock::unix_socket(s.kind).context("socket")?
                } else {
                    named_socket(s).with_context(what)?
                };
                // The receiver: the session's own (by the path it was bound to), or one
                // outside (by its name: the system logger's /dev/log).
                let receiver = live()
                    .flat_map(|q| &q.fds)
                    .filter_map(|g| g.socket())
                    .find(|r| r.inode == s.peer);
                let to = receiver.map_or_else(|| s.peer_name.clone(), address_of);
                let name = String::from_utf8_lossy(&to).trim_matches('\0').to_string();
                match sys::sock::connect_unix(sock.as_fd(), &to) {
                    Ok(()) if !s.peer_inside => closed.push(format!(
                        "{}: connected again to {name}, outside the session",
                        what()
                    )),
                    Ok(()) => {}
                    Err(e) if s.peer_inside => {
                        return Err(e).with_context(|| format!("{}: connecting to {name} again", what()));
                    }
                    Err(e) => closed.push(format!(
                        "{}: its datagram connection to {name}, outside the session, comes back unconnected ({e})",
                        what()
                    )),
                }
                made.insert(s.inode, sock);
                continue;
            }
            if s.inet() && s.stream() && !s.peer_addr.is_empty() {
                if let std::collections::hash_map::Entry::Vacant(e) = made.entry(s.inode) {
                    let what = || format!("process {} ({}) fd {}", p.pid, p.comm, f.fd);
                    e.insert(closed_tcp(s).with_context(what)?);
                    closed.push(format!(
                        "{}: its TCP connection to {} comes back closed",
                        what(),
                        sys::sock::inet_text(&s.peer_addr)
                    ));
                }
            } else if s.peer != 0 {
                by_inode.entry(s.inode).or_insert((p, f, s));
            } else if s.connected && !s.inet() {
                // Its peer closed: what it sent is still to be read, then the end.
                let what = || format!("process {} ({}) fd {} ({})", p.pid, p.comm, f.fd, f.target);
                let (mine, other) = sys::sock::pair(s.kind).with_context(what)?;
                if s.passcred {
                    sys::sock::set_int(mine.as_fd(), libc::SOL_SOCKET, libc::SO_PASSCRED, 1)?;
                }
                for piece in &s.queued {
                    sys::sock::send_now(other.as_fd(), piece, s.stream())
                        .with_context(|| format!("{}: refilling its queue", what()))?;
                }
                drop(other);
                made.insert(s.inode, mine);
            }
        }
    }
    for (&inode, &(p, f, s)) in &by_inode {
        if made.contains_key(&inode) {
            continue;
        }
        let what = || format!("process {} ({}) fd {} ({})", p.pid, p.comm, f.fd, f.target);
        let (mine, other) = sys::sock::pair(s.kind).with_context(what)?;
        if s.passcred {
            sys::sock::set_int(mine.as_fd(), libc::SOL_SOCKET, libc::SO_PASSCRED, 1)?;
        }
        let peer = by_inode.get(&s.peer).filter(|_| s.peer_inside);
        for piece in &s.queued {
            sys::sock::send_now(other.as_fd(), piece, s.stream())
                .with_context(|| format!("{}: refilling its queue", what()))?;
        }
        match peer {
            Some(&(_, _, ps)) => {
                if ps.passcred {
                    sys::sock::set_int(other.as_fd(), libc::SOL_SOCKET, libc::SO_PASSCRED, 1)?;
                }
                for piece in &ps.queued {
                    sys::sock::send_now(mine.as_fd(), piece, ps.stream())
                        .with_context(|| format!("{}: refilling its peer's queue", what()))?;
                }
                half_close(mine.as_fd(), s.shutdown, ps.shutdown);
                half_close(other.as_fd(), ps.shutdown, s.shutdown);
                made.insert(inode, mine);
                made.insert(s.peer, other);
            }
            None => {
                drop(other);
                closed.push(format!(
                    "process {} ({}) fd {}: its unix connection to the outside comes back closed",
                    p.pid, p.comm, f.fd
                ));
                made.insert(inode, mine);
            }
        }
    }
    Ok((made, closed))
}

/// A TCP socket listening (or bound) where it was, or a UDP socket bound and connected
/// as it was, with its options. A port another program has taken now is an error that
/// says so.
pub fn tcp_socket(s: &crate::records::SocketRecord) -> Result<OwnedFd> {
    let sock = sys::sock::socket(s.domain, s.kind).context("socket")?;
    for &(level, opt, v) in &s.options {
        let _ = sys::sock::set_int(sock.as_fd(), level, opt, v);
    }
    let bound = s.addr.len() >= 4 && s.addr[2..4] != [0, 0];
    if bound {
        sys::sock::bind(sock.as_fd(), &s.addr).map_err(|e| {
            if e.raw_os_error() == Some(libc::EADDRINUSE) {
                anyhow!(
                    "cannot bind {} again: another program has taken the port",
                    s.display_name()
                )
            } else {
                anyhow!("cannot bind {} again: {e}", s.display_name())
            }
        })?;
    }
    if s.listening {
        sys::sock::listen(sock.as_fd(), libc::SOMAXCONN)?;
    }
    if !s.stream() && !s.peer_addr.is_empty() {
        let peer = sys::sock::inet_text(&s.peer_addr);
        sys::sock::connect(sock.as_fd(), &s.peer_addr)
            .with_context(|| format!("connecting the UDP socket to {peer} again"))?;
    }
    Ok(sock)
}

/// A TCP connection whose other side has closed it: a real TCP socket, connected over
/// the loopback to a peer that sends what the old connection had queued, then closes.
fn closed_tcp(s: &crate::records::SocketRecord) -> Result<OwnedFd> {
    let listener = sys::sock::socket(s.domain, libc::SOCK_STREAM).context("socket")?;
    sys::sock::bind(listener.as_fd(), &sys::sock::loopback(s.domain))
        .context("binding a loopback socket")?;
    sys::sock::listen(listener.as_fd(), 1)?;
    let at = sys::sock::local_addr(listener.as_fd())?;
    let sock = sys::sock::socket(s.domain, s.kind).context("socket")?;
    for &(level, opt, v) in &s.options {
        let _ = sys::sock::set_int(sock.as_fd(), level, opt, v);
    }
    sys::sock::connect(sock.as_fd(), &at).context("connecting over the loopback")?;
    let peer = sys::sock::accept(listener.as_fd())?;
    for piece in &s.queued {
        sys::sock::send_now(peer.as_fd(), piece, true).context("refilling its queue")?;
    }
    drop(peer);
    Ok(sock)
}

/// Shut one end down as it was: writing if it had shut its sending side, reading if its
/// receiving side was shut by itself rather than by the peer's writing side.
fn half_close(end: BorrowedFd, mine: u8, peers: u8) {
    const RCV: u8 = 1;
    const SEND: u8 = 2;
    if mine & SEND != 0 {
        let _ = sys::sock::shutdown(end, libc::SHUT_WR);
    }
    if mine & RCV != 0 && peers & SEND == 0 {
        let _ = sys::sock::shutdown(end, libc::SHUT_RD);
    }
}

/// A unix socket bound to its name again (and listening, if it was). A socket file left
/// at its path by the checkpointed program (it was killed, so it could not remove it) is
/// replaced; one that a running program listens on is not.
pub fn named_socket(s: &crate::records::SocketRecord) -> Result<OwnedFd> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if s.domain != libc::AF_UNIX || s.name.is_empty() {
        bail!("only unix sockets are carried");
    }
    let name = s.display_name();
    let sock = sys::sock::unix_socket(s.kind).context("socket")?;
    let path = s.path();
    if let Some(path) = &path
        && let Ok(meta) = std::fs::symlink_metadata(path)
    {
        if !meta.file_type().is_socket() {
            bail!("cannot bind {name} again: a file that is not a socket is there");
        }
        let probe = sys::sock::unix_socket(s.kind).context("socket")?;
        let at = path.clone().into_os_string().into_encoded_bytes();
        if sys::sock::connect_unix(probe.as_fd(), &at).is_ok() {
            bail!("cannot bind {name} again: a running program has it");
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket file {name}"))?;
    }
    if s.bound_in.is_empty() {
        sys::sock::bind_unix(sock.as_fd(), &s.name)
    } else {
        bind_in(sock.as_fd(), &s.bound_in, &s.name)
    }
    .with_context(|| format!("cannot bind {name} again"))?;
    if let Some(path) = &path
        && s.mode != 0
    {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(s.mode))
            .with_context(|| format!("setting the mode of {name}"))?;
    }
    if s.listening {
        sys::sock::listen(sock.as_fd(), libc::SOMAXCONN)?;
    }
    if s.passcred {
        sys::sock::set_int(sock.as_fd(), libc::SOL_SOCKET, libc::SO_PASSCRED, 1)?;
    }
    Ok(sock)
}

/// Bind `sock` to the relative `name` as from directory `dir`: on a thread of its own with
/// a working directory of its own (unshare CLONE_FS), so the resume's is not changed.
fn bind_in(sock: BorrowedFd, dir: &str, name: &[u8]) -> io::Result<()> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                sys::unshare(libc::CLONE_FS)?;
                std::env::set_current_dir(dir)?;
                sys::sock::bind_unix(sock, name)
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the binding thread panicked")))
    })
}

/// The address to reach unix socket `s` by: its path made absolute, or its abstract name.
fn address_of(s: &SocketRecord) -> Vec<u8> {
    match s.path() {
        Some(path) => path.into_os_string().into_encoded_bytes(),
        None => s.name.clone(),
    }
}

/// A netlink route socket made again: bound to its port id and groups as it was (a port
/// id another socket has taken now is an error that says so), its other groups joined
/// and its options set.
pub fn netlink_socket(s: &SocketRecord) -> Result<OwnedFd> {
    let sock = sys::sock::socket(libc::AF_NETLINK, s.kind).context("socket")?;
    // sockaddr_nl: family, pad, port id, groups; a port id of 0: never bound.
    let port = s
        .addr
        .get(4..8)
        .map_or(0, |b| u32::from_ne_bytes(b.try_into().unwrap()));
    if port != 0 {
        sys::sock::bind(sock.as_fd(), &s.addr)
            .map_err(|e| anyhow!("cannot bind the netlink socket to port id {port} again: {e}"))?;
    }
    for &(level, opt, v) in &s.options {
        sys::sock::set_int(sock.as_fd(), level, opt, v)
            .with_context(|| format!("setting netlink option {opt} to {v}"))?;
    }
    Ok(sock)
}
