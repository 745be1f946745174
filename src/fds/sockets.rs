//! Sockets: unix sockets (named, listening, connected pairs with their queues and
//! half-closes, connections not yet accepted, descriptors in flight), TCP sockets
//! (listening again; a connection comes back closed with what had arrived still to read),
//! UDP and netlink route sockets. At checkpoint what one descriptor tells is read by
//! `read`, what only the whole session tells (peers, queues and the files in flight in
//! them, pending connections, from sock_diag) by `read_connections`, after
//! `requeue_pending` has made connections not accepted yet readable. At resume
//! `connected` makes them again; queues that carry files are refilled last (`Refill`).

use crate::records::*;
use crate::sys;
use anyhow::{Context, Result, anyhow, bail};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::rc::Rc;

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
        pending_rank: 0,
        sent: Vec::new(),
        queued: Vec::new(),
        connected: false,
        unlinked: false,
        bound_in: String::new(),
        peer_name: Vec::new(),
        in_flight: Vec::new(),
        datagrams_from: Vec::new(),
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

/// Connections not accepted yet that have sent data: the bytes wait in the server end the
/// listener keeps for each, which only accept() reaches. With the session frozen, every
/// connection waiting in such a listener is accepted here, in its order, its bytes read,
/// and the process holding its client end made to connect again and send them, in the
/// same order (the queue is as it was, and the connection is that process's own), the new
/// end put at the old one's numbers (`ckpt::inside::reconnect`). Returns what each sent,
/// by its new end's inode, for `read_connections`. Refused before anything is accepted
/// where that cannot be done exactly: a client end held outside the session or by two
/// processes, bound to a name, or sending SIGIO; a listener bound to a relative name;
/// descriptors among the bytes (the listener's fdinfo counts them).
pub fn requeue_pending(
    record: &mut SessionRecord,
    tasks: &[(i32, Vec<i32>)],
    first_live: usize,
) -> io::Result<HashMap<u64, Vec<Vec<u8>>>> {
    let mut sent = HashMap::new();
    // Who holds each socket: (process index, fd).
    let mut holders: HashMap<u64, Vec<(usize, i32)>> = HashMap::new();
    let mut listeners = Vec::new();
    for k in 0..tasks.len() {
        let pi = first_live + k;
        for f in &record.processes[pi].fds {
            let Some(s) = f.socket() else { continue };
            let first = !holders.contains_key(&s.inode);
            holders.entry(s.inode).or_default().push((pi, f.fd));
            if first && s.listening && s.domain == libc::AF_UNIX {
                listeners.push((s.inode, pi, f.fd));
            }
        }
    }
    if listeners.is_empty() {
        return Ok(sent);
    }
    let diag = sys::sock::unix_diag()
        .map_err(|e| io::Error::other(format!("reading the session's unix sockets: {e}")))?;
    for (l, pi, lfd) in listeners {
        let Some(d) = diag.get(&l) else { continue };
        let has_sent = |c: &u64| diag.get(c).is_some_and(|c| c.unread_sent > 0);
        if !d.pending.iter().any(has_sent) {
            continue;
        }
        let host = tasks[pi - first_live].0;
        let (lrec, target) = {
            let p = &record.processes[pi];
            let f = p
                .fds
                .iter()
                .find(|f| f.fd == lfd)
                .expect("its holder holds it");
            (f.socket().expect("a socket").clone(), f.target.clone())
        };
        let who = {
            let p = &record.processes[pi];
            format!("process {} ({}) holds fd {lfd}", p.pid, p.comm)
        };
        let refuse = |why: &str| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "{who}, a unix socket listening ({target}) with connections not accepted yet that have sent data, {why}, which this version cannot carry"
                ),
            )
        };
        let name = match lrec.name.first() {
            Some(0) => lrec.name.clone(),
            Some(b'/') => {
                let end = lrec
                    .name
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(lrec.name.len());
                lrec.name[..end].to_vec()
            }
            _ => return Err(refuse("bound to a relative name")),
        };
        let addr = sys::sock::unix_addr(&name)?;
        // Each client end: held by one process of the session, at one or more numbers.
        let mut plan = Vec::new();
        for c in &d.pending {
            let hs = holders
                .get(c)
                .ok_or_else(|| refuse("one of them from outside the session"))?;
            if hs.iter().any(|h| h.0 != hs[0].0) {
                return Err(refuse("one of them held by two processes"));
            }
            if diag.get(c).is_some_and(|cd| !cd.name.is_empty()) {
                return Err(refuse("one of them bound to a name"));
            }
            let p = &record.processes[hs[0].0];
            let f = p.fds.iter().find(|f| f.fd == hs[0].1).expect("held");
            if f.flags as i32 & libc::O_ASYNC != 0 {
                return Err(refuse("one of them sending SIGIO"));
            }
            plan.push((*c, hs.clone()));
        }
        let info = std::fs::read_to_string(format!("/proc/{host}/fdinfo/{lfd}"))?;
        match info
            .lines()
            .find_map(|l| l.strip_prefix("scm_fds:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
        {
            Some(0) => {}
            Some(_) => return Err(refuse("descriptors among the data (SCM_RIGHTS)")),
            None => {
                return Err(refuse(
                    "on a kernel that does not say whether descriptors are among the data",
                ));
            }
        }
        // Taken out in their order (new connections from outside would come after them).
        let listener = sys::trace::copy_fd_of(host, lfd)?;
        let mut accepted = Vec::new();
        for _ in &plan {
            if !sys::readable(listener.as_fd()) {
                break;
            }
            accepted.push(sys::sock::accept(listener.as_fd())?);
        }
        let after = sys::sock::unix_diag()?;
        let peer_of = |e: &OwnedFd| {
            use std::os::unix::fs::MetadataExt;
            let ino = std::fs::metadata(format!("/proc/self/fd/{}", e.as_raw_fd()))
                .map(|m| m.ino())
                .unwrap_or(0);
            after.get(&ino).map_or(0, |d| d.peer)
        };
        // Every connection taken out goes back, whatever fails on the way (the first
        // failure is the answer).
        let mut failed = None;
        for (c, hs) in &plan {
            let requeued = (|| -> io::Result<(u64, String, Vec<Vec<u8>>)> {
                let Some(e) = accepted.iter().find(|e| peer_of(e) == *c) else {
                    return Err(io::Error::other(format!(
                        "{who}: a connection waiting in it went away while it was taken out"
                    )));
                };
                let (pi, fd0) = hs[0];
                let p = &record.processes[pi];
                let s = p
                    .fds
                    .iter()
                    .find(|f| f.fd == fd0)
                    .and_then(|f| f.socket())
                    .expect("a socket");
                let q = sys::sock::peek_queue(e.as_fd(), s.stream())?;
                let fds: Vec<(i32, bool)> = hs
                    .iter()
                    .map(|&(_, fd)| {
                        let f = p.fds.iter().find(|f| f.fd == fd).expect("held");
                        (fd, f.flags as i32 & libc::O_CLOEXEC != 0)
                    })
                    .collect();
                let flags = p.fds.iter().find(|f| f.fd == fd0).expect("held").flags as i32;
                let host = tasks[pi - first_live].0;
                let tids = &tasks[pi - first_live].1;
                let maps = crate::ckpt::state::exec_maps(&p.maps);
                crate::ckpt::inside::reconnect(
                host,
                tids,
                &maps,
                &crate::ckpt::inside::Reconnect {
                    kind: s.kind,
                    addr: &addr,
                    pieces: &q.pieces,
                    passcred: s.passcred,
                    shut_wr: diag.get(c).is_some_and(|d| d.shutdown & 2 != 0),
                    status: flags & crate::fds::STATUS_FLAGS,
                    fds: &fds,
                },
            )
            .map_err(|e| {
                io::Error::other(format!(
                    "process {} ({}) fd {fd0}: connecting again to {} to send what it had sent: {e}",
                    p.pid,
                    p.comm,
                    lrec.display_name()
                ))
            })?;
                let link = std::fs::read_link(format!("/proc/{host}/fd/{fd0}"))?
                    .display()
                    .to_string();
                let new = link
                    .strip_prefix("socket:[")
                    .and_then(|t| t.strip_suffix(']'))
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| io::Error::other(format!("fd {fd0} of {host} is {link}")))?;
                Ok((new, link, q.pieces))
            })();
            let (new, link, pieces) = match requeued {
                Ok(r) => r,
                Err(e) => {
                    failed.get_or_insert(e);
                    continue;
                }
            };
            for &(pi, fd) in hs {
                if let Some(f) = record.processes[pi].fds.iter_mut().find(|f| f.fd == fd) {
                    f.target = link.clone();
                    if let FdObject::Socket(s) = &mut f.object {
                        s.inode = new;
                    }
                }
            }
            sent.insert(new, pieces);
        }
        if let Some(e) = failed {
            return Err(e);
        }
    }
    Ok(sent)
}

/// What only the whole session tells of its unix sockets: each one's peer (sock_diag),
/// whether that peer is held in the session too, the bytes queued to be read (peeked, not
/// consumed) and the files in flight among them (SCM_RIGHTS), which become
/// `record.in_flight` (read through the copies the peek hands over, returned: their
/// descriptions are numbered with the session's, `crate::fds::number_descriptions`).
/// Refuses what cannot be carried, naming the process and descriptor.
pub fn read_connections(
    record: &mut SessionRecord,
    hosts: &[i32],
    sent: HashMap<u64, Vec<Vec<u8>>>,
) -> io::Result<Vec<OwnedFd>> {
    let live: Vec<usize> = (0..record.processes.len())
        .filter(|&i| record.processes[i].zombie.is_none())
        .collect();
    let has_sockets = live
        .iter()
        .any(|&i| record.processes[i].fds.iter().any(|f| f.socket().is_some()));
    if !has_sockets {
        return Ok(Vec::new());
    }
    let diag = sys::sock::unix_diag()
        .map_err(|e| io::Error::other(format!("reading the session's unix sockets: {e}")))?;
    let held: std::collections::HashSet<u64> = live
        .iter()
        .flat_map(|&i| &record.processes[i].fds)
        .filter_map(|f| f.socket().map(|s| s.inode))
        .collect();
    // Connections not accepted yet, by the inode of their client end (sock_diag lists
    // those for a listener: its embryo sockets have none): the listener of the session
    // they wait in.
    let waiting_in: HashMap<u64, u64> = diag
        .iter()
        .filter(|(ino, _)| held.contains(ino))
        .flat_map(|(&listener, d)| d.pending.iter().map(move |&c| (c, listener)))
        .collect();
    let mut ctx = Connections {
        diag,
        waiting_in,
        queues: HashMap::new(),
        flying: Vec::new(),
        flying_fds: Vec::new(),
        flying_to: Vec::new(),
        own_pidfd: None,
        not_connected_back: Vec::new(),
        sent,
    };
    for (&pi, &host) in live.iter().zip(hosts) {
        let p = &mut record.processes[pi];
        let (pid, comm) = (p.pid, p.comm.clone());
        for f in &mut p.fds {
            let target = f.target.clone();
            let FdObject::Socket(s) = &mut f.object else {
                continue;
            };
            let who = format!("process {pid} ({comm}) holds fd {},", f.fd);
            let place = format!("process {pid} ({comm}) fd {}", f.fd);
            ctx.connection(s, host, f.fd, &who, &place, &target)?;
        }
    }
    // The sockets in flight, and what is in flight in their queues, in turn.
    let me = std::process::id() as i32;
    let mut i = 0;
    while i < ctx.flying.len() {
        let fd = ctx.flying_fds[i].as_raw_fd();
        let target = ctx.flying[i].target.clone();
        if let FdObject::Socket(mut s) = ctx.flying[i].object.clone() {
            let place = format!("a descriptor in flight to {}", ctx.flying_to[i]);
            let who = format!("{place} is");
            if s.domain == libc::AF_UNIX && s.name.first().is_some_and(|&b| b != 0 && b != b'/') {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "{who} a unix socket bound to a relative name ({target}), which this version cannot carry"
                    ),
                ));
            }
            ctx.connection(&mut s, me, fd, &who, &place, &target)?;
            ctx.flying[i].object = FdObject::Socket(s);
        }
        i += 1;
    }
    // Whose peer is in the session, held or in flight.
    let inside: std::collections::HashSet<u64> = held
        .iter()
        .copied()
        .chain(
            ctx.flying
                .iter()
                .filter_map(|f| f.socket().map(|s| s.inode)),
        )
        .collect();
    let mark = |f: &mut FdRecord| {
        if let FdObject::Socket(s) = &mut f.object {
            s.peer_inside = s.peer != 0 && inside.contains(&s.peer);
        }
    };
    for &pi in &live {
        record.processes[pi].fds.iter_mut().for_each(mark);
    }
    ctx.flying.iter_mut().for_each(mark);
    if let Some((who, target, _)) = ctx
        .not_connected_back
        .iter()
        .find(|(_, _, peer)| inside.contains(peer))
    {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "{who} a unix socket connected to a socket without a name that is not connected back ({target}), which this version cannot carry"
            ),
        ));
    }
    // A listener in flight with connections of the session waiting in it: they would
    // need connecting again to a listener no process holds yet.
    for f in &ctx.flying {
        let Some(s) = f.socket().filter(|s| s.listening) else {
            continue;
        };
        let pending = ctx.diag.get(&s.inode).map_or(&[][..], |d| &d.pending[..]);
        if pending.iter().any(|c| inside.contains(c)) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "a descriptor in flight (SCM_RIGHTS) is a unix socket listening ({}) with connections of the session not accepted yet, which this version cannot carry",
                    f.target
                ),
            ));
        }
    }
    record.in_flight = ctx.flying;
    udp_senders(record)?;
    // A connection not accepted yet is made again by connecting to its listener's path:
    // one whose path names another socket now cannot be.
    let unlinked: std::collections::HashSet<u64> = live
        .iter()
        .flat_map(|&i| &record.processes[i].fds)
        .filter_map(|f| f.socket().filter(|s| s.unlinked).map(|s| s.inode))
        .collect();
    for (who, f) in record.all_fds() {
        if let Some(s) = f.socket()
            && s.pending_on != 0
            && unlinked.contains(&s.pending_on)
        {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "{who} holds a unix socket connection not accepted yet by a listener whose path was removed, which this version cannot carry"
                ),
            ));
        }
    }
    Ok(ctx.flying_fds)
}

/// The sender of each datagram queued on a UDP socket of the session: the session's UDP
/// socket bound to the address it came from, which a resume sends it from again. One from
/// elsewhere (a program outside the session, or a socket closed since) is refused, and so
/// is one that did not go from the loopback to the loopback or between sockets bound to
/// those very addresses: sent again on another machine it could leave this one, or come
/// from another address.
fn udp_senders(record: &mut SessionRecord) -> io::Result<()> {
    let udp: Vec<(u64, std::net::IpAddr, u16)> = record
        .all_fds()
        .filter_map(|(_, f)| f.socket())
        .filter(|s| s.inet() && !s.stream())
        .filter_map(|s| sys::sock::inet_parts(&s.addr).map(|(ip, port)| (s.inode, ip, port)))
        .collect();
    let mut refusal = None;
    let mut resolve = |who: &str, f: &mut FdRecord| {
        let FdObject::Socket(s) = &mut f.object else {
            return;
        };
        let own = sys::sock::inet_parts(&s.addr);
        for d in &mut s.datagrams_from {
            let (Some((from_ip, from_port)), Some((to_ip, _))) =
                (sys::sock::inet_parts(&d.from), sys::sock::inet_parts(&d.to))
            else {
                refusal.get_or_insert(format!(
                    "{who} a UDP socket with a datagram queued from an address it cannot name ({})",
                    f.target
                ));
                continue;
            };
            let sender = udp.iter().find(|&&(_, ip, port)| {
                port == from_port && (ip == from_ip || ip.is_unspecified())
            });
            let local = (from_ip.is_loopback() && to_ip.is_loopback())
                || (sender.is_some_and(|&(_, ip, _)| ip == from_ip)
                    && own.is_some_and(|(ip, _)| ip == to_ip));
            match sender {
                Some(&(inode, _, _)) if local => d.sender = inode,
                Some(_) => {
                    refusal.get_or_insert(format!(
                        "{who} a UDP socket with a datagram queued from {} to {}, not between the loopback addresses or the sockets' own ({}), which this version cannot carry",
                        sys::sock::inet_text(&d.from),
                        sys::sock::inet_text(&d.to),
                        f.target
                    ));
                }
                None => {
                    refusal.get_or_insert(format!(
                        "{who} a UDP socket with a datagram queued from {}, which no socket of the session sends from ({}): its sender cannot send it again",
                        sys::sock::inet_text(&d.from),
                        f.target
                    ));
                }
            }
        }
    };
    for p in &mut record.processes {
        for f in &mut p.fds {
            let who = format!("process {} ({}) holds fd {},", p.pid, p.comm, f.fd);
            resolve(&who, f);
        }
    }
    for f in &mut record.in_flight {
        resolve("a descriptor in flight is", f);
    }
    match refusal {
        Some(why) => Err(io::Error::new(io::ErrorKind::Unsupported, why)),
        None => Ok(()),
    }
}

/// What `read_connections` gathers as it goes through the session's sockets.
struct Connections {
    diag: HashMap<u64, sys::sock::UnixDiag>,
    waiting_in: HashMap<u64, u64>,
    /// Each socket's queue once read, by inode, with the files in flight in it.
    queues: HashMap<u64, (Vec<Vec<u8>>, Vec<InFlight>)>,
    /// The descriptions in flight (`InFlight::descs` numbers them by their place here
    /// until `number_descriptions`), and our copies of them.
    flying: Vec<FdRecord>,
    flying_fds: Vec<OwnedFd>,
    /// Where each is in flight to (for messages).
    flying_to: Vec<String>,
    /// A pidfd of our own, to read our copies' owners through (opened at the first).
    own_pidfd: Option<OwnedFd>,
    /// Sockets connected to one without a name that is not connected back: (who, target,
    /// the peer's inode), refused if that peer is the session's.
    not_connected_back: Vec<(String, String, u64)>,
    /// What connections not accepted yet had sent, by their client end's inode
    /// (`requeue_pending`).
    sent: HashMap<u64, Vec<Vec<u8>>>,
}

impl Connections {
    /// Socket `s`, descriptor `fd` of `host` (`target` its link; `who` the start of a
    /// refusal, "process 5 (sh) holds fd 3,"; `place` where it is, "process 5 (sh) fd 3").
    fn connection(
        &mut self,
        s: &mut SocketRecord,
        host: i32,
        fd: i32,
        who: &str,
        place: &str,
        target: &str,
    ) -> io::Result<()> {
        let refuse = |what: &str| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{who} a {what} ({target}), which this version cannot carry"),
            )
        };
        if s.domain == libc::AF_UNIX && s.name.first().is_some_and(|&b| b != 0) {
            if s.name[0] != b'/' {
                // A relative name: bound in the holder's working directory, if the
                // socket file is there.
                let cwd = std::fs::read_link(format!("/proc/{host}/cwd"))?;
                s.bound_in = cwd.display().to_string();
                if path_unlinked(host, s, self.diag.get(&s.inode)) {
                    return Err(refuse(&format!(
                        "unix socket bound to the relative name {} somewhere other than its working directory",
                        s.display_name()
                    )));
                }
            } else {
                s.unlinked = path_unlinked(host, s, self.diag.get(&s.inode));
            }
        }
        if s.listening {
            return Ok(());
        }
        if s.domain == libc::AF_NETLINK {
            // What the kernel sent it cannot be sent again.
            let sock = sys::trace::copy_fd_of(host, fd)?;
            if sys::readable(sock.as_fd()) {
                return Err(refuse("netlink socket with messages queued"));
            }
            return Ok(());
        }
        if s.inet() && !s.stream() {
            // UDP: what is queued, each datagram with where it came from and went to; its
            // sender is found among the session's sockets once all are read
            // (`udp_senders`).
            let sock = sys::trace::copy_fd_of(host, fd)?;
            if sys::readable(sock.as_fd()) {
                let queue = sys::sock::peek_datagrams(sock.as_fd(), s.domain, &s.addr)
                    .map_err(|e| refuse(&format!("UDP socket with {e}")))?;
                for d in queue {
                    s.queued.push(d.bytes);
                    s.datagrams_from.push(DatagramFrom {
                        sender: 0,
                        from: d.from,
                        to: d.to,
                    });
                }
            }
            return Ok(());
        }
        if s.inet() {
            // A TCP connection comes back closed, with what had arrived still to read.
            if !s.peer_addr.is_empty() {
                let sock = sys::trace::copy_fd_of(host, fd)?;
                s.queued = sys::sock::peek_queue(sock.as_fd(), true)?.pieces;
            }
            return Ok(());
        }
        if s.domain != libc::AF_UNIX {
            return Ok(());
        }
        let d = self.diag.get(&s.inode).cloned().unwrap_or_default();
        s.peer = d.peer;
        s.shutdown = d.shutdown;
        // Connected, its peer maybe gone since (a datagram receiver others connected
        // to is marked established too, but has no peer of its own).
        s.connected = d.has_peer;
        // A stream that was never connected has nothing queued (and a peek at it
        // fails).
        if s.kind != libc::SOCK_DGRAM && !s.connected && !self.waiting_in.contains_key(&s.inode) {
            return Ok(());
        }
        // A connection waiting in a listener of the session: made again by connecting
        // to it, in its place in the queue, and sending what it had sent (read by
        // `requeue_pending`).
        if let Some(&listener) = self.waiting_in.get(&s.inode) {
            if d.unread_sent > 0 {
                s.sent = self.sent.get(&s.inode).cloned().ok_or_else(|| {
                    refuse("unix socket connection not accepted yet that has sent data")
                })?;
            }
            s.pending_on = listener;
            s.pending_rank = self
                .diag
                .get(&listener)
                .and_then(|l| l.pending.iter().position(|&c| c == s.inode))
                .unwrap_or(0) as u32;
            return Ok(());
        }
        // Connected to a receiver that is not connected back (a logger others send to
        // as well): connected to its name again.
        if s.peer != 0 && self.diag.get(&d.peer).map(|d| d.peer) != Some(s.inode) {
            let name = self
                .diag
                .get(&d.peer)
                .map(|d| d.name.clone())
                .unwrap_or_default();
            if s.kind != libc::SOCK_DGRAM || name.is_empty() {
                self.not_connected_back
                    .push((who.to_string(), target.to_string(), s.peer));
            } else {
                s.peer_name = name;
            }
        }
        if let Some((q, flying)) = self.queues.get(&s.inode) {
            s.queued = q.clone();
            s.in_flight = flying.clone();
            return Ok(());
        }
        let sock = sys::trace::copy_fd_of(host, fd)?;
        let q = match sys::sock::peek_queue(sock.as_fd(), s.stream()) {
            Ok(q) => q,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(refuse(&format!("unix socket with {e} queued")));
            }
            Err(e) => return Err(e),
        };
        s.queued = q.pieces;
        if !q.files.is_empty() {
            if !s.peer_name.is_empty() || (s.kind == libc::SOCK_DGRAM && !s.connected) {
                return Err(refuse(
                    "unix socket receiving datagrams with descriptors in flight (SCM_RIGHTS) from senders it is not connected to",
                ));
            }
            for m in q.files {
                // A resume sends each message whole; the kernel cuts a stream message of
                // more than about 36 KiB into pieces and gives the files to the first.
                if s.stream() && m.len > 32 << 10 {
                    return Err(refuse(
                        "unix socket with descriptors in flight (SCM_RIGHTS) in a message of more than 32 KiB",
                    ));
                }
                let mut descs = Vec::new();
                for file in m.files {
                    descs.push(self.in_flight(file, place)?);
                }
                s.in_flight.push(InFlight {
                    piece: m.piece as u32,
                    offset: m.offset,
                    len: m.len,
                    descs,
                });
            }
        }
        self.queues
            .insert(s.inode, (s.queued.clone(), s.in_flight.clone()));
        if !s.queued.is_empty() && !s.peer_name.is_empty() {
            return Err(refuse(
                "unix socket connected to a receiver, with datagrams queued for it",
            ));
        }
        if !s.queued.is_empty() && s.kind == libc::SOCK_DGRAM && s.peer == 0 && !s.connected {
            // Refilled by sending to its name: one that names it.
            if s.unlinked || s.name.is_empty() || s.passcred {
                return Err(refuse(
                    "unix socket receiving datagrams, with datagrams queued, whose name does not lead to it or that receives the senders' credentials",
                ));
            }
        }
        Ok(())
    }

    /// A file in flight to `place` (our copy of it), read as a descriptor of ours: its
    /// place among the descriptions in flight (the one it has there already, if it is one
    /// of them).
    fn in_flight(&mut self, file: OwnedFd, place: &str) -> io::Result<u32> {
        let me = std::process::id() as i32;
        for (i, other) in self.flying_fds.iter().enumerate() {
            if sys::trace::same_file_description(me, other.as_raw_fd(), me, file.as_raw_fd())
                .unwrap_or(false)
            {
                return Ok(i as u32);
            }
        }
        if self.own_pidfd.is_none() {
            self.own_pidfd = Some(sys::trace::pidfd_open(me)?);
        }
        let pidfd = self.own_pidfd.as_ref().expect("opened");
        let who = format!("a descriptor in flight (SCM_RIGHTS) to {place}");
        let mut f = crate::fds::read(me, file.as_raw_fd(), pidfd.as_fd(), &who).map_err(|e| {
            // "… holds fd 17, an inotify instance …": our copy's number means nothing.
            let text = e.to_string();
            let text = match text.split_once(" holds fd ") {
                Some((a, b)) => format!("{a} is{}", b.split_once(',').map_or("", |(_, r)| r)),
                None => text,
            };
            io::Error::new(e.kind(), text)
        })?;
        let refuse = |what: &str| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "{who} is {what} ({}), which this version cannot carry",
                    f.target
                ),
            )
        };
        if !f.locks.is_empty() {
            return Err(refuse("a file with locks"));
        }
        if f.owner.1 != 0 || f.signal != 0 || f.flags as i32 & libc::O_ASYNC != 0 {
            return Err(refuse("a file that sends SIGIO"));
        }
        if f.target.ends_with(" (deleted)") {
            return Err(refuse("a file deleted while open"));
        }
        f.fd = self.flying.len() as i32;
        self.flying.push(f);
        self.flying_fds.push(file);
        self.flying_to.push(place.to_string());
        Ok((self.flying.len() - 1) as u32)
    }
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
pub fn connected(record: &SessionRecord) -> Result<Connected<'_>> {
    use crate::records::SocketRecord;
    let mut by_inode: BTreeMap<u64, (String, &SocketRecord)> = BTreeMap::new();
    let mut made = HashMap::new();
    let mut closed = Vec::new();
    let mut refills = Vec::new();
    // Every socket of the session: held by a process, or in flight.
    let all: Vec<(String, &FdRecord, &SocketRecord)> = record
        .processes
        .iter()
        .filter(|p| p.zombie.is_none())
        .flat_map(|p| {
            p.fds.iter().filter_map(move |f| {
                f.socket()
                    .map(|s| (format!("process {} ({}) fd {}", p.pid, p.comm, f.fd), f, s))
            })
        })
        .chain(record.in_flight.iter().filter_map(|f| {
            f.socket().map(|s| {
                (
                    format!("descriptor {} in flight ({})", f.fd, f.target),
                    f,
                    s,
                )
            })
        }))
        .collect();
    // Sockets whose path no longer names them first: bound there and the file removed,
    // so that a socket of the session bound there since can bind after them.
    for (what, _, s) in &all {
        if !s.unlinked || made.contains_key(&s.inode) {
            continue;
        }
        let sock = named_socket(s).context(what.clone())?;
        let path = String::from_utf8_lossy(&s.name)
            .trim_end_matches('\0')
            .to_string();
        std::fs::remove_file(&path).with_context(|| format!("{what}: removing {path} again"))?;
        made.insert(s.inode, sock);
    }
    // Datagram receivers with a name (others send to them, some connected to them): bound
    // again and their queue refilled by sending to the name, before their clients
    // connect to them.
    for (what, _, s) in &all {
        if !(s.kind == libc::SOCK_DGRAM
            && !s.inet()
            && s.peer == 0
            && !s.connected
            && !s.name.is_empty()
            && !made.contains_key(&s.inode))
        {
            continue;
        }
        let sock = named_socket(s).context(what.clone())?;
        if !s.queued.is_empty() {
            let to = address_of(s);
            let sender = sys::sock::unix_socket(libc::SOCK_DGRAM).context("socket")?;
            for piece in &s.queued {
                sys::sock::send_to_unix(sender.as_fd(), piece, &to)
                    .with_context(|| format!("{what}: refilling its queue"))?;
            }
        }
        made.insert(s.inode, sock);
    }
    // Listening sockets first: a connection that was not accepted yet is made again by
    // connecting to its listener.
    let mut listeners: HashMap<u64, &SocketRecord> = HashMap::new();
    for (what, _, s) in &all {
        if !s.listening {
            continue;
        }
        if made.contains_key(&s.inode) {
            listeners.insert(s.inode, s);
            continue;
        }
        if listeners.contains_key(&s.inode) {
            continue;
        }
        let sock = if s.inet() {
            tcp_socket(s)
        } else {
            named_socket(s)
        }
        .context(what.clone())?;
        made.insert(s.inode, sock);
        listeners.insert(s.inode, s);
    }
    // Connections not accepted yet, in the order they waited in each listener: connected
    // again, and what they had sent sent again.
    let mut pending: Vec<_> = all.iter().filter(|a| a.2.pending_on != 0).collect();
    pending.sort_by_key(|a| (a.2.pending_on, a.2.pending_rank));
    for (what, _, s) in pending {
        if made.contains_key(&s.inode) {
            continue;
        }
        let l = listeners
            .get(&s.pending_on)
            .ok_or_else(|| anyhow!("{what}: its listener is not in the image"))?;
        let sock = sys::sock::unix_socket(s.kind).context(what.clone())?;
        if s.passcred {
            sys::sock::set_int(sock.as_fd(), libc::SOL_SOCKET, libc::SO_PASSCRED, 1)?;
        }
        let to = match l.path() {
            Some(path) => path.into_os_string().into_encoded_bytes(),
            None => l.name.clone(),
        };
        sys::sock::connect_unix(sock.as_fd(), &to)
            .with_context(|| format!("{what}: connecting to {} again", l.display_name()))?;
        for piece in &s.sent {
            sys::sock::send_now(sock.as_fd(), piece, s.stream())
                .with_context(|| format!("{what}: sending again what it had sent"))?;
        }
        if s.shutdown & 2 != 0 {
            sys::sock::shutdown(sock.as_fd(), libc::SHUT_WR)?;
        }
        made.insert(s.inode, sock);
    }
    for (what, f, s) in &all {
        if s.listening || made.contains_key(&s.inode) {
            continue;
        }
        if !s.peer_name.is_empty() {
            let sock = if s.name.is_empty() {
                sys::sock::unix_socket(s.kind).context("socket")?
            } else {
                named_socket(s).context(what.clone())?
            };
            // The receiver: the session's own (by the path it was bound to), or one
            // outside (by its name: the system logger's /dev/log).
            let receiver = all.iter().map(|a| a.2).find(|r| r.inode == s.peer);
            let to = receiver.map_or_else(|| s.peer_name.clone(), address_of);
            let name = String::from_utf8_lossy(&to).trim_matches('\0').to_string();
            match sys::sock::connect_unix(sock.as_fd(), &to) {
                Ok(()) if !s.peer_inside => closed.push(format!(
                    "{what}: connected again to {name}, outside the session"
                )),
                Ok(()) => {}
                Err(e) if s.peer_inside => {
                    return Err(e).with_context(|| format!("{what}: connecting to {name} again"));
                }
                Err(e) => closed.push(format!(
                    "{what}: its datagram connection to {name}, outside the session, comes back unconnected ({e})"
                )),
            }
            made.insert(s.inode, sock);
            continue;
        }
        if s.inet() && s.stream() && !s.peer_addr.is_empty() {
            if let std::collections::hash_map::Entry::Vacant(e) = made.entry(s.inode) {
                e.insert(closed_tcp(s).context(what.clone())?);
                closed.push(format!(
                    "{what}: its TCP connection to {} comes back closed",
                    sys::sock::inet_text(&s.peer_addr)
                ));
            }
        } else if s.peer != 0 {
            by_inode.entry(s.inode).or_insert((what.clone(), s));
        } else if s.connected && !s.inet() {
            // Its peer closed: what it sent is still to be read, then the end.
            let what = format!("{what} ({})", f.target);
            let (mine, other) = sys::sock::pair(s.kind).context(what.clone())?;
            if s.passcred {
                sys::sock::set_int(mine.as_fd(), libc::SOL_SOCKET, libc::SO_PASSCRED, 1)?;
            }
            refill_alone(&mut refills, what, other, s)?;
            made.insert(s.inode, mine);
        }
    }
    for (inode, (what, s)) in &by_inode {
        if made.contains_key(inode) {
            continue;
        }
        let (mine, other) = sys::sock::pair(s.kind).context(what.clone())?;
        if s.passcred {
            sys::sock::set_int(mine.as_fd(), libc::SOL_SOCKET, libc::SO_PASSCRED, 1)?;
        }
        let peer = by_inode.get(&s.peer).filter(|_| s.peer_inside);
        match peer {
            Some(&(_, ps)) => {
                if ps.passcred {
                    sys::sock::set_int(other.as_fd(), libc::SOL_SOCKET, libc::SO_PASSCRED, 1)?;
                }
                if s.in_flight.is_empty() && ps.in_flight.is_empty() {
                    refill(other.as_fd(), s, &[])
                        .with_context(|| format!("{what}: refilling its queue"))?;
                    refill(mine.as_fd(), ps, &[])
                        .with_context(|| format!("{what}: refilling its peer's queue"))?;
                    half_close(mine.as_fd(), s.shutdown, ps.shutdown);
                    half_close(other.as_fd(), ps.shutdown, s.shutdown);
                } else {
                    // Once the files they carry are made; then the half-closes.
                    refills.push(Refill {
                        what: what.clone(),
                        sends: vec![(other.try_clone()?, *s), (mine.try_clone()?, ps)],
                        closes: vec![
                            (mine.try_clone()?, s.shutdown, ps.shutdown),
                            (other.try_clone()?, ps.shutdown, s.shutdown),
                        ],
                    });
                }
                made.insert(*inode, mine);
                made.insert(s.peer, other);
            }
            None => {
                refill_alone(&mut refills, what.clone(), other, s)?;
                closed.push(format!(
                    "{what}: its unix connection to the outside comes back closed"
                ));
                made.insert(*inode, mine);
            }
        }
    }
    Ok(Connected {
        sockets: made,
        closed,
        refills,
    })
}

/// The session's unix sockets made again (`connected`).
pub struct Connected<'a> {
    /// By the inode each had.
    pub sockets: HashMap<u64, OwnedFd>,
    /// A line for each connection that came back closed.
    pub closed: Vec<String>,
    /// Queues that carry files in flight: refilled once every description is made.
    pub refills: Vec<Refill<'a>>,
}

/// Queues to refill through their sending ends once the files in flight in them are
/// made, then the half-closes of those connections: (socket, its shutdown, its peer's).
pub struct Refill<'a> {
    pub what: String,
    pub sends: Vec<(OwnedFd, &'a SocketRecord)>,
    pub closes: Vec<(OwnedFd, u8, u8)>,
}

impl Refill<'_> {
    /// Send every queue, `files(desc)` giving the descriptor of a description in flight.
    pub fn run(&self, mut files: impl FnMut(u32) -> Result<Rc<OwnedFd>>) -> Result<()> {
        for (sender, s) in &self.sends {
            let mut carried = Vec::new();
            for m in &s.in_flight {
                carried.push(
                    m.descs
                        .iter()
                        .map(|&d| files(d))
                        .collect::<Result<Vec<_>>>()?,
                );
            }
            refill(sender.as_fd(), s, &carried)
                .with_context(|| format!("{}: refilling its queue", self.what))?;
        }
        for (sock, mine, peers) in &self.closes {
            half_close(sock.as_fd(), *mine, *peers);
        }
        Ok(())
    }
}

/// Refill `s`'s queue through `other`, the end of its connection no process holds, then
/// close that end (what was sent is still to be read, then the end); once the files in
/// flight are made if the queue carries some.
fn refill_alone<'a>(
    refills: &mut Vec<Refill<'a>>,
    what: String,
    other: OwnedFd,
    s: &'a SocketRecord,
) -> Result<()> {
    if s.in_flight.is_empty() {
        refill(other.as_fd(), s, &[]).with_context(|| format!("{what}: refilling its queue"))?;
    } else {
        refills.push(Refill {
            what,
            sends: vec![(other, s)],
            closes: Vec::new(),
        });
    }
    Ok(())
}

/// Send socket `s`'s queue again through the other end of its connection, `sender`: its
/// messages in order, those that carried files with the descriptors `carried` gives for
/// each of `s.in_flight` (in its order).
fn refill(sender: BorrowedFd, s: &SocketRecord, carried: &[Vec<Rc<OwnedFd>>]) -> io::Result<()> {
    let send_files = |bytes: &[u8], files: &[Rc<OwnedFd>]| {
        let files: Vec<BorrowedFd> = files.iter().map(|f| f.as_fd()).collect();
        sys::sock::send_with_files(sender, bytes, &files)
    };
    if s.stream() {
        let q = s.queued.first().map_or(&[][..], Vec::as_slice);
        let mut at = 0usize;
        for (m, files) in s.in_flight.iter().zip(carried) {
            let (from, to) = (m.offset as usize, (m.offset + m.len) as usize);
            if from > at {
                sys::sock::send_now(sender, &q[at..from], true)?;
            }
            send_files(&q[from..to], files)?;
            at = to;
        }
        if at < q.len() {
            sys::sock::send_now(sender, &q[at..], true)?;
        }
        return Ok(());
    }
    for (i, piece) in s.queued.iter().enumerate() {
        match s.in_flight.iter().position(|m| m.piece as usize == i) {
            Some(k) => send_files(piece, &carried[k])?,
            None => sys::sock::send_now(sender, piece, false)?,
        }
    }
    Ok(())
}

/// The datagrams queued on the session's UDP sockets, sent again in order from the
/// sockets that sent them, once every socket is made (`made(desc)`: the descriptor made
/// for a description). Each queue is then read back: what a receive will get (bytes,
/// sender, destination) must be what it would have got.
pub fn refill_udp(record: &SessionRecord, made: impl Fn(u32) -> Option<Rc<OwnedFd>>) -> Result<()> {
    let by_inode: HashMap<u64, (&FdRecord, &SocketRecord)> = record
        .all_fds()
        .filter_map(|(_, f)| f.socket().map(|s| (s.inode, (f, s))))
        .collect();
    let mut done = std::collections::HashSet::new();
    for (what, f) in record.all_fds() {
        let Some(s) = f.socket() else { continue };
        if s.queued.is_empty() || !s.inet() || s.stream() || !done.insert(s.inode) {
            continue;
        }
        let receiver = made(f.desc).ok_or_else(|| anyhow!("{what}: its socket was not made"))?;
        for (bytes, d) in s.queued.iter().zip(&s.datagrams_from) {
            let (sf, sender) = by_inode
                .get(&d.sender)
                .filter(|(_, x)| x.inet() && !x.stream())
                .ok_or_else(|| {
                    anyhow!("{what}: the sender of a queued datagram is not in the image")
                })?;
            let sock = made(sf.desc).ok_or_else(|| anyhow!("{what}: its sender was not made"))?;
            let to = sys::sock::inet_parts(&d.to)
                .and_then(|(ip, port)| sys::sock::inet_addr(sender.domain, ip, port))
                .ok_or_else(|| anyhow!("{what}: a queued datagram's address"))?;
            sys::sock::send_to(sock.as_fd(), bytes, &to)
                .with_context(|| format!("{what}: sending its queued datagrams again"))?;
        }
        let back = sys::sock::peek_datagrams(receiver.as_fd(), s.domain, &s.addr)
            .with_context(|| format!("{what}: reading its queue back"))?;
        let same = back.len() == s.queued.len()
            && back
                .iter()
                .zip(s.queued.iter().zip(&s.datagrams_from))
                .all(|(b, (bytes, d))| b.bytes == *bytes && b.from == d.from && b.to == d.to);
        if !same {
            bail!(
                "{what}: its queued datagrams could not be made again as they were ({} of {} came back)",
                back.len(),
                s.queued.len()
            );
        }
    }
    Ok(())
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
