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

fn unix_addr(name: &[u8]) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
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
    Ok((addr, len as libc::socklen_t))
}

pub fn unix_socket(kind: i32) -> io::Result<OwnedFd> {
    let fd = check(unsafe { libc::socket(libc::AF_UNIX, kind | libc::SOCK_CLOEXEC, 0) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn bind_unix(fd: BorrowedFd, name: &[u8]) -> io::Result<()> {
    let (addr, len) = unix_addr(name)?;
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    })?;
    Ok(())
}

pub fn connect_unix(fd: BorrowedFd, name: &[u8]) -> io::Result<()> {
    let (addr, len) = unix_addr(name)?;
    check(unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    })?;
    Ok(())
}

pub fn listen(fd: BorrowedFd, backlog: i32) -> io::Result<()> {
    check(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(())
}
