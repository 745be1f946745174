//! Sockets of the session: what a checkpoint reads of one (through a copy of the very
//! descriptor), and making one again on resume.

use super::check;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

fn get_int(fd: BorrowedFd, level: i32, opt: i32) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(v)
}

pub fn set_int(fd: BorrowedFd, level: i32, opt: i32, v: i32) -> io::Result<()> {
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// A socket address as the kernel takes it (the bytes of a sockaddr).
pub fn local_addr(fd: BorrowedFd) -> io::Result<Vec<u8>> {
    addr_of(fd, libc::getsockname)
}

pub fn peer_addr(fd: BorrowedFd) -> io::Result<Vec<u8>> {
    addr_of(fd, libc::getpeername)
}

type AddrCall =
    unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

fn addr_of(fd: BorrowedFd, call: AddrCall) -> io::Result<Vec<u8>> {
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    check(unsafe {
        call(
            fd.as_raw_fd(),
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    })?;
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&addr as *const libc::sockaddr_storage).cast::<u8>(),
            len as usize,
        )
    };
    Ok(bytes.to_vec())
}

/// An IPv4 or IPv6 socket address (the bytes of a sockaddr_in or sockaddr_in6) as text.
pub fn inet_text(addr: &[u8]) -> String {
    let family = addr
        .get(..2)
        .map(|b| u16::from_ne_bytes([b[0], b[1]]) as i32);
    let port = |a: &[u8]| u16::from_be_bytes([a[2], a[3]]);
    match family {
        Some(libc::AF_INET) if addr.len() >= 8 => {
            let ip = std::net::Ipv4Addr::new(addr[4], addr[5], addr[6], addr[7]);
            format!("{ip}:{}", port(addr))
        }
        Some(libc::AF_INET6) if addr.len() >= 24 => {
            let b: [u8; 16] = addr[8..24].try_into().expect("16 bytes");
            format!("[{}]:{}", std::net::Ipv6Addr::from(b), port(addr))
        }
        _ => "(unknown address)".into(),
    }
}

/// The loopback address of `domain` (127.0.0.1 or ::1), any port, as sockaddr bytes.
pub fn loopback(domain: i32) -> Vec<u8> {
    if domain == libc::AF_INET6 {
        let mut a: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        a.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        a.sin6_addr.s6_addr = std::net::Ipv6Addr::LOCALHOST.octets();
        unsafe {
            std::slice::from_raw_parts(
                (&a as *const libc::sockaddr_in6).cast::<u8>(),
                std::mem::size_of::<libc::sockaddr_in6>(),
            )
        }
        .to_vec()
    } else {
        let mut a: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        a.sin_family = libc::AF_INET as libc::sa_family_t;
        a.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        unsafe {
            std::slice::from_raw_parts(
                (&a as *const libc::sockaddr_in).cast::<u8>(),
                std::mem::size_of::<libc::sockaddr_in>(),
            )
        }
        .to_vec()
    }
}

pub fn bind(fd: BorrowedFd, addr: &[u8]) -> io::Result<()> {
    to_addr(fd, addr, libc::bind)
}

pub fn connect(fd: BorrowedFd, addr: &[u8]) -> io::Result<()> {
    to_addr(fd, addr, libc::connect)
}

type ToAddr =
    unsafe extern "C" fn(libc::c_int, *const libc::sockaddr, libc::socklen_t) -> libc::c_int;

fn to_addr(fd: BorrowedFd, addr: &[u8], call: ToAddr) -> io::Result<()> {
    check(unsafe {
        call(
            fd.as_raw_fd(),
            addr.as_ptr().cast(),
            addr.len() as libc::socklen_t,
        )
    })?;
    Ok(())
}

pub fn accept(fd: BorrowedFd) -> io::Result<OwnedFd> {
    let r = check(unsafe {
        libc::accept4(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    })?;
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

pub fn socket(domain: i32, kind: i32) -> io::Result<OwnedFd> {
    let fd = check(unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, 0) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn get_opt(fd: BorrowedFd, level: i32, opt: i32) -> io::Result<i32> {
    get_int(fd, level, opt)
}

/// What a checkpoint needs to know of a socket.
pub struct SocketInfo {
    pub domain: i32,
    pub kind: i32,
    pub listening: bool,
    pub passcred: bool,
    /// For a unix socket: the address it is bound to (empty: none; a leading 0 byte: an
    /// abstract name).
    pub name: Vec<u8>,
}

pub fn socket_info(fd: BorrowedFd) -> io::Result<SocketInfo> {
    let domain = get_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)?;
    let kind = get_int(fd, libc::SOL_SOCKET, libc::SO_TYPE)?;
    let listening = get_int(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN)? != 0;
    let passcred = domain == libc::AF_UNIX
        && get_int(fd, libc::SOL_SOCKET, libc::SO_PASSCRED).unwrap_or(0) != 0;
    let mut name = Vec::new();
    if domain == libc::AF_UNIX {
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        check(unsafe {
            libc::getsockname(
                fd.as_raw_fd(),
                (&mut addr as *mut libc::sockaddr_un).cast(),
                &mut len,
            )
        })?;
        let path_len = (len as usize).saturating_sub(std::mem::size_of::<libc::sa_family_t>());
        name = addr.sun_path[..path_len.min(addr.sun_path.len())]
            .iter()
            .map(|&c| c as u8)
            .collect();
        // A path name ends at its NUL; an abstract one is all its bytes.
        if name.first() != Some(&0)
            && let Some(end) = name.iter().position(|&b| b == 0)
        {
            name.truncate(end);
        }
    }
    Ok(SocketInfo {
        domain,
        kind,
        listening,
        passcred,
        name,
    })
}

/// A unix address (a path, or an abstract name with its leading 0 byte) as sockaddr bytes.
pub fn unix_addr(name: &[u8]) -> io::Result<Vec<u8>> {
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if name.is_empty() || name.len() >= addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad unix socket name",
        ));
    }
    for (d, &s) in addr.sun_path.iter_mut().zip(name) {
        *d = s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + name.len() + usize::from(name[0] != 0);
    // SAFETY: sockaddr_un is plain data; `len` is within it.
    let bytes = unsafe {
        std::slice::from_raw_parts((&addr as *const libc::sockaddr_un).cast::<u8>(), len)
    };
    Ok(bytes.to_vec())
}

pub fn unix_socket(kind: i32) -> io::Result<OwnedFd> {
    let fd = check(unsafe { libc::socket(libc::AF_UNIX, kind | libc::SOCK_CLOEXEC, 0) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn bind_unix(fd: BorrowedFd, name: &[u8]) -> io::Result<()> {
    bind(fd, &unix_addr(name)?)
}

/// Send datagram `bytes` to the unix socket named `name`.
pub fn send_to_unix(fd: BorrowedFd, bytes: &[u8], name: &[u8]) -> io::Result<()> {
    send_to(fd, bytes, &unix_addr(name)?)
}

pub fn connect_unix(fd: BorrowedFd, name: &[u8]) -> io::Result<()> {
    connect(fd, &unix_addr(name)?)
}

pub fn listen(fd: BorrowedFd, backlog: i32) -> io::Result<()> {
    check(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(())
}

/// A connected pair of unix sockets of `kind`.
pub fn pair(kind: i32) -> io::Result<(OwnedFd, OwnedFd)> {
    super::socket_pair(kind)
}

pub fn shutdown(fd: BorrowedFd, how: i32) -> io::Result<()> {
    check(unsafe { libc::shutdown(fd.as_raw_fd(), how) })?;
    Ok(())
}

/// Send `bytes` as one message (a datagram, or stream data) without waiting: what does
/// not fit in the socket's buffers is an error, not a hang.
pub fn send_now(fd: BorrowedFd, mut bytes: &[u8], stream: bool) -> io::Result<()> {
    loop {
        let n = unsafe {
            libc::send(
                fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        bytes = &bytes[n as usize..];
        if bytes.is_empty() || !stream {
            return Ok(());
        }
    }
}

/// Send `bytes` as one message with `files` attached (SCM_RIGHTS), without waiting: all
/// of it in one message, or an error (a stream message cut in two would carry its files
/// with its first part only).
pub fn send_with_files(fd: BorrowedFd, bytes: &[u8], files: &[BorrowedFd]) -> io::Result<()> {
    let size = std::mem::size_of::<libc::c_int>() * files.len();
    let space = unsafe { libc::CMSG_SPACE(size as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: the control buffer holds one header and `files.len()` ints.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(size as u32) as usize;
        let data = libc::CMSG_DATA(c) as *mut libc::c_int;
        for (i, f) in files.iter().enumerate() {
            std::ptr::write_unaligned(data.add(i), f.as_raw_fd());
        }
    }
    let n = unsafe {
        libc::sendmsg(
            fd.as_raw_fd(),
            &msg,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != bytes.len() {
        return Err(io::Error::other(format!(
            "a message carrying files went only {n} of {} bytes at once",
            bytes.len()
        )));
    }
    Ok(())
}

/// What a socket's receive queue holds, read without consuming it: one piece per
/// datagram, or one for a stream, and the files in flight in it (SCM_RIGHTS), which the
/// peek hands over as descriptors of our own.
#[derive(Debug, Default)]
pub struct Queue {
    pub pieces: Vec<Vec<u8>>,
    pub files: Vec<FilesInFlight>,
}

/// Files sent with one message: the datagram (`piece`), or for a stream where the message
/// that carries them starts (`offset`) and its length.
#[derive(Debug)]
pub struct FilesInFlight {
    pub piece: usize,
    pub offset: u64,
    pub len: u64,
    pub files: Vec<OwnedFd>,
}

/// The bytes waiting in a socket's receive queue, read without consuming them (MSG_PEEK
/// from a peek offset that moves on, SO_PEEK_OFF), and the files in flight in it.
pub fn peek_queue(fd: BorrowedFd, stream: bool) -> io::Result<Queue> {
    // The program's own peek offset (-1: none) is put back afterwards.
    let was = get_opt(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF)?;
    set_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0)?;
    let result = peek_from_offset(fd, stream);
    let _ = set_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, was);
    result
}

/// A datagram waiting in an IP socket's receive queue: its bytes, the sender's address
/// and the address it was sent to, as the receiver sees them (sockaddr bytes of its
/// family).
#[derive(Debug)]
pub struct Datagram {
    pub bytes: Vec<u8>,
    pub from: Vec<u8>,
    pub to: Vec<u8>,
}

/// The datagrams waiting in a UDP socket of `family` bound to `local`, read without
/// consuming them (as `peek_queue` does). Where each was sent to comes from its IP header,
/// through the socket's packet-info option, on for the peek and put back as it was.
pub fn peek_datagrams(fd: BorrowedFd, family: i32, local: &[u8]) -> io::Result<Vec<Datagram>> {
    let (level, opt) = if family == libc::AF_INET6 {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
    } else {
        (libc::IPPROTO_IP, libc::IP_PKTINFO)
    };
    let was_off = get_opt(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF)?;
    let was_info = get_opt(fd, level, opt)?;
    set_int(fd, level, opt, 1)?;
    let result = set_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0).and_then(|()| {
        let mut all = Vec::new();
        let mut buf = vec![0u8; 65536];
        let mut total = 0usize;
        while let Some(p) = peek_once(fd, &mut buf)? {
            if p.truncated || p.to_ip.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a queued datagram that does not read whole",
                ));
            }
            let mut to = local.to_vec();
            let at = if family == libc::AF_INET6 { 8 } else { 4 };
            match to.get_mut(at..at + p.to_ip.len()) {
                Some(ip) => ip.copy_from_slice(&p.to_ip),
                None => return Err(io::Error::other("a socket without its address")),
            }
            total += p.len + 64;
            all.push(Datagram {
                bytes: buf[..p.len].to_vec(),
                from: p.from,
                to,
            });
            if total > 64 << 20 || all.len() > 100_000 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "more than 64 MiB queued",
                ));
            }
        }
        Ok(all)
    });
    let _ = set_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, was_off);
    let _ = set_int(fd, level, opt, was_info);
    result
}

/// Send `bytes` as one datagram to `to` (sockaddr bytes) without waiting.
pub fn send_to(fd: BorrowedFd, bytes: &[u8], to: &[u8]) -> io::Result<()> {
    // SAFETY: `bytes` and `to` are live buffers of the lengths given.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            to.as_ptr().cast(),
            to.len() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != bytes.len() {
        return Err(io::Error::other("a datagram sent short"));
    }
    Ok(())
}

/// An IPv4 or IPv6 socket address as (IP, port); an IPv4 address mapped into IPv6
/// (::ffff:a.b.c.d) as the IPv4 one.
pub fn inet_parts(addr: &[u8]) -> Option<(std::net::IpAddr, u16)> {
    let family = u16::from_ne_bytes([*addr.first()?, *addr.get(1)?]) as i32;
    let port = u16::from_be_bytes([*addr.get(2)?, *addr.get(3)?]);
    match family {
        libc::AF_INET if addr.len() >= 8 => Some((
            std::net::Ipv4Addr::new(addr[4], addr[5], addr[6], addr[7]).into(),
            port,
        )),
        libc::AF_INET6 if addr.len() >= 24 => {
            let b: [u8; 16] = addr[8..24].try_into().ok()?;
            let ip = std::net::Ipv6Addr::from(b);
            Some((ip.to_ipv4_mapped().map_or(ip.into(), Into::into), port))
        }
        _ => None,
    }
}

/// (IP, port) as the sockaddr bytes of `family` (an IPv4 address mapped into IPv6 for an
/// IPv6 socket); None for an IPv6 address and an IPv4 socket.
pub fn inet_addr(family: i32, ip: std::net::IpAddr, port: u16) -> Option<Vec<u8>> {
    use std::net::IpAddr;
    let as_bytes =
        |p: *const u8, len: usize| unsafe { std::slice::from_raw_parts(p, len) }.to_vec();
    match (family, ip) {
        (libc::AF_INET, IpAddr::V4(v4)) => {
            let mut a: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            a.sin_family = libc::AF_INET as libc::sa_family_t;
            a.sin_port = port.to_be();
            a.sin_addr.s_addr = u32::from_ne_bytes(v4.octets());
            Some(as_bytes(
                (&a as *const libc::sockaddr_in).cast(),
                std::mem::size_of_val(&a),
            ))
        }
        (libc::AF_INET6, ip) => {
            let v6 = match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            let mut a: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            a.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            a.sin6_port = port.to_be();
            a.sin6_addr.s6_addr = v6.octets();
            Some(as_bytes(
                (&a as *const libc::sockaddr_in6).cast(),
                std::mem::size_of_val(&a),
            ))
        }
        _ => None,
    }
}

/// What one peek gave.
struct Peeked {
    len: usize,
    /// The files it handed over.
    files: Vec<OwnedFd>,
    /// A sender's name came with it.
    named: bool,
    /// It was cut short (MSG_TRUNC).
    truncated: bool,
    /// The sender's address as the receiver sees it (sockaddr bytes; for an IP socket).
    from: Vec<u8>,
    /// The address it was sent to (4 or 16 bytes), when IP_PKTINFO or IPV6_RECVPKTINFO
    /// is on.
    to_ip: Vec<u8>,
}

/// One peek at the current peek offset into `buf` (None: nothing is queued there).
fn peek_once(fd: BorrowedFd, buf: &mut [u8]) -> io::Result<Option<Peeked>> {
    let mut control = [0u64; 160];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut from: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut from as *mut libc::sockaddr_un).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: every pointer in `msg` is to a live buffer of the length given.
    let n = unsafe {
        libc::recvmsg(
            fd.as_raw_fd(),
            &mut msg,
            libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            return Ok(None);
        }
        return Err(e);
    }
    // Descriptors in flight come to us as copies of the same open file descriptions.
    let mut files = Vec::new();
    let mut to_ip = Vec::new();
    let mut c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !c.is_null() {
        let h = unsafe { &*c };
        let data_len = h.cmsg_len as usize - unsafe { libc::CMSG_LEN(0) } as usize;
        let data = |from: usize, len: usize| {
            // SAFETY: within the control message the kernel wrote (checked length).
            (from + len <= data_len).then(|| unsafe {
                std::slice::from_raw_parts(libc::CMSG_DATA(c).add(from), len).to_vec()
            })
        };
        if h.cmsg_level == libc::IPPROTO_IP && h.cmsg_type == libc::IP_PKTINFO {
            // struct in_pktinfo: ifindex, spec_dst, addr.
            to_ip = data(8, 4).unwrap_or_default();
        } else if h.cmsg_level == libc::IPPROTO_IPV6 && h.cmsg_type == libc::IPV6_PKTINFO {
            // struct in6_pktinfo: addr, ifindex.
            to_ip = data(0, 16).unwrap_or_default();
        } else if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_RIGHTS {
            let data = unsafe { libc::CMSG_DATA(c) } as *const libc::c_int;
            let count = (h.cmsg_len as usize - unsafe { libc::CMSG_LEN(0) } as usize)
                / std::mem::size_of::<libc::c_int>();
            for i in 0..count {
                // SAFETY: the kernel installed these descriptors for us.
                files.push(unsafe { OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))) });
            }
        }
        c = unsafe { libc::CMSG_NXTHDR(&msg, c) };
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a message with more descriptors in flight than one message can carry",
        ));
    }
    Ok(Some(Peeked {
        len: n as usize,
        files,
        named: msg.msg_namelen as usize > std::mem::size_of::<libc::sa_family_t>(),
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
        // SAFETY: the kernel wrote msg_namelen bytes of `from` (at most its size).
        from: unsafe {
            std::slice::from_raw_parts(
                (&from as *const libc::sockaddr_un).cast::<u8>(),
                (msg.msg_namelen as usize).min(std::mem::size_of_val(&from)),
            )
        }
        .to_vec(),
        to_ip,
    }))
}

fn peek_from_offset(fd: BorrowedFd, stream: bool) -> io::Result<Queue> {
    let mut q = Queue::default();
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0usize;
    while let Some(Peeked {
        len: n,
        files,
        named,
        truncated,
        ..
    }) = peek_once(fd, &mut buf)?
    {
        // A datagram from a sender with a name: made again, it would come from none.
        if !stream && named {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "datagrams from a sender with a name",
            ));
        }
        if truncated {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a queued datagram larger than 256 KiB",
            ));
        }
        if stream {
            // End of stream: the peer has closed and nothing more is queued.
            if n == 0 {
                break;
            }
            let at = q.pieces.first().map_or(0, Vec::len) as u64;
            match q.pieces.first_mut() {
                Some(p) => p.extend_from_slice(&buf[..n]),
                None => q.pieces.push(buf[..n].to_vec()),
            }
            if !files.is_empty() {
                // A read stops after the message that carries files, and may have taken
                // messages without files before it: where it starts is the first byte
                // whose read hands files over.
                let start = message_start(fd, at, at + n as u64)?;
                set_int(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_PEEK_OFF,
                    (at + n as u64) as i32,
                )?;
                q.files.push(FilesInFlight {
                    piece: 0,
                    offset: start,
                    len: at + n as u64 - start,
                    files,
                });
            }
        } else {
            if !files.is_empty() {
                q.files.push(FilesInFlight {
                    piece: q.pieces.len(),
                    offset: 0,
                    len: n as u64,
                    files,
                });
            }
            q.pieces.push(buf[..n].to_vec());
        }
        total += n.max(1);
        if total > 64 << 20 || q.pieces.len() > 100_000 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "more than 64 MiB queued",
            ));
        }
    }
    Ok(q)
}

/// In a stream whose bytes `from..to` were one read that ended with a message carrying
/// files: where that message starts (a one-byte peek at any of its bytes hands the files
/// over, at a byte of a message before it none).
fn message_start(fd: BorrowedFd, from: u64, to: u64) -> io::Result<u64> {
    let (mut lo, mut hi) = (from, to - 1);
    let mut byte = [0u8; 1];
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        set_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, mid as i32)?;
        let files = peek_once(fd, &mut byte)?.map_or(0, |p| p.files.len());
        if files > 0 {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(lo)
}

/// What the kernel's sock_diag interface tells of a unix socket (the peer, which fdinfo and
/// getsockopt do not give).
#[derive(Debug, Clone, Default)]
pub struct UnixDiag {
    /// The inode of the socket at the other end (0: none, or it has closed).
    pub peer: u64,
    /// Whether it has a peer of its own, alive or closed since (it connected, or was
    /// made a pair).
    pub has_peer: bool,
    /// For a listening socket: the connections not accepted yet, by their client end's
    /// inode.
    pub pending: Vec<u64>,
    /// RCV_SHUTDOWN (1) and SEND_SHUTDOWN (2).
    pub shutdown: u8,
    /// For a socket bound to a path: the socket file it made, (device as the kernel
    /// numbers it, inode), whether or not a path still names it.
    pub vfs: Option<(u32, u32)>,
    /// The name it is bound to, as it was given (a path, or an abstract name with its
    /// leading 0 byte); empty: none.
    pub name: Vec<u8>,
    /// Memory held by what this socket sent and the other end has not read yet (for a
    /// connection not accepted yet: data waiting in the listener's queue, which cannot be
    /// peeked); not a byte count, but zero when nothing waits.
    pub unread_sent: u32,
}

/// Every unix socket of this network namespace, by inode.
pub fn unix_diag() -> io::Result<std::collections::HashMap<u64, UnixDiag>> {
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const UDIAG_SHOW_NAME: u32 = 0x1;
    const UNIX_DIAG_NAME: u16 = 0;
    const UDIAG_SHOW_VFS: u32 = 0x2;
    const UDIAG_SHOW_PEER: u32 = 0x4;
    const UNIX_DIAG_VFS: u16 = 1;
    const UDIAG_SHOW_ICONS: u32 = 0x8;
    const UNIX_DIAG_PEER: u16 = 2;
    const UNIX_DIAG_ICONS: u16 = 3;
    const UNIX_DIAG_SHUTDOWN: u16 = 6;
    let fd = check(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    })?;
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // nlmsghdr (16 bytes) + unix_diag_req (24 bytes).
    let mut req = [0u8; 40];
    req[0..4].copy_from_slice(&40u32.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    req[6..8].copy_from_slice(&flags.to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[16] = libc::AF_UNIX as u8;
    req[20..24].copy_from_slice(&u32::MAX.to_ne_bytes()); // every state
    const UDIAG_SHOW_RQLEN: u32 = 0x10;
    const UNIX_DIAG_RQLEN: u16 = 4;
    let show =
        UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN;
    req[28..32].copy_from_slice(&show.to_ne_bytes());
    req[32..40].copy_from_slice(&[0xff; 8]); // no cookie
    if unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = std::collections::HashMap::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut at = 0usize;
        let n = n as usize;
        while at + 16 <= n {
            let u32_at = |i: usize| u32::from_ne_bytes(buf[i..i + 4].try_into().unwrap());
            let u16_at = |i: usize| u16::from_ne_bytes(buf[i..i + 2].try_into().unwrap());
            let len = u32_at(at) as usize;
            let kind = u16_at(at + 4);
            if len < 16 || at + len > n {
                break;
            }
            if kind == libc::NLMSG_DONE as u16 {
                return Ok(out);
            }
            if kind == libc::NLMSG_ERROR as u16 {
                let errno = -(u32_at(at + 16) as i32);
                return Err(io::Error::from_raw_os_error(errno));
            }
            // unix_diag_msg: family, type, state, pad, ino u32, cookie u32[2] = 16 bytes.
            let msg = at + 16;
            let ino = u32_at(msg + 4) as u64;
            let mut d = UnixDiag::default();
            let mut a = msg + 16;
            while a + 4 <= at + len {
                let alen = u16_at(a) as usize;
                let akind = u16_at(a + 2);
                if alen < 4 || a + alen > at + len {
                    break;
                }
                let data = &buf[a + 4..a + alen];
                match akind {
                    UNIX_DIAG_PEER if data.len() >= 4 => {
                        d.peer = u32::from_ne_bytes(data[..4].try_into().unwrap()) as u64;
                        d.has_peer = true;
                    }
                    UNIX_DIAG_ICONS => {
                        d.pending = data
                            .chunks_exact(4)
                            .map(|c| u32::from_ne_bytes(c.try_into().unwrap()) as u64)
                            .collect()
                    }
                    UNIX_DIAG_SHUTDOWN if !data.is_empty() => d.shutdown = data[0],
                    UNIX_DIAG_NAME => d.name = data.to_vec(),
                    UNIX_DIAG_VFS if data.len() >= 8 => {
                        let ino = u32::from_ne_bytes(data[..4].try_into().unwrap());
                        let dev = u32::from_ne_bytes(data[4..8].try_into().unwrap());
                        d.vfs = Some((dev, ino));
                    }
                    // rqueue, wqueue (for a socket not listening: bytes sent, unread).
                    UNIX_DIAG_RQLEN if data.len() >= 8 => {
                        d.unread_sent = u32::from_ne_bytes(data[4..8].try_into().unwrap())
                    }
                    _ => {}
                }
                a += (alen + 3) & !3;
            }
            out.insert(ino, d);
            at += (len + 3) & !3;
        }
    }
}

/// The multicast groups a netlink socket has joined (NETLINK_LIST_MEMBERSHIPS), by
/// number.
pub fn netlink_memberships(fd: BorrowedFd) -> io::Result<Vec<u32>> {
    const SOL_NETLINK: libc::c_int = 270;
    const NETLINK_LIST_MEMBERSHIPS: libc::c_int = 9;
    let mut words = vec![0u32; 64];
    let mut len = (words.len() * 4) as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `words`.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            SOL_NETLINK,
            NETLINK_LIST_MEMBERSHIPS,
            words.as_mut_ptr().cast(),
            &mut len,
        )
    })?;
    let n = (len as usize / 4).min(words.len());
    Ok((0..n * 32)
        .filter(|&g| words[g / 32] & (1 << (g % 32)) != 0)
        .map(|g| g as u32 + 1)
        .collect())
}
