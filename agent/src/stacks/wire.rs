//! The symbolizer helper's protocol: one JSON message per `SOCK_SEQPACKET` datagram (the
//! socket keeps the framing), a request optionally carrying one open file by `SCM_RIGHTS`, and
//! exactly one response per request.
use std::{
    io,
    mem::{size_of, zeroed},
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
};

use serde::{Deserialize, Serialize};

use super::Resolved;

/// Largest message either side sends or accepts.
pub const MAX_MSG: usize = 64 * 1024;

/// What the agent asks. `file` is the agent's number for an ELF; the first request about a
/// file carries its descriptor, which the helper keeps until `Close`.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Names of these file offsets, one answer each.
    Symbolize { file: u64, offsets: Vec<u64> },
    /// The file's GNU build id, hex.
    BuildId { file: u64 },
    /// Forget the file (its descriptor is closed).
    Close { file: u64 },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    /// The helper's first message: its privileges are gone, it takes requests.
    Ready,
    Symbols(Vec<Option<Resolved>>),
    BuildId(Option<String>),
    Closed,
    /// The request could not be served (unknown file, unreadable ELF): one line why.
    Error(String),
}

/// A connected `AF_UNIX` `SOCK_SEQPACKET` pair (close-on-exec).
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: socketpair writes two descriptors into the array on success.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Send `msg` as one datagram, with `fd` attached when given.
pub fn send<T: Serialize>(sock: BorrowedFd, msg: &T, fd: Option<BorrowedFd>) -> io::Result<()> {
    let buf = serde_json::to_vec(msg).map_err(io::Error::other)?;
    if buf.len() > MAX_MSG {
        return Err(io::Error::other(format!("message of {} bytes over the {MAX_MSG} limit", buf.len())));
    }
    let mut iov = libc::iovec { iov_base: buf.as_ptr() as *mut _, iov_len: buf.len() };
    // Room for one descriptor's control message, aligned as cmsghdr wants.
    let mut cbuf = [0u64; 8];
    // SAFETY: msghdr is plain data; every pointer set below outlives the sendmsg call.
    let mut mh: libc::msghdr = unsafe { zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    if let Some(fd) = fd {
        // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic; the buffer holds CMSG_SPACE(4) bytes,
        // so the first header and its data fit.
        unsafe {
            let space = libc::CMSG_SPACE(size_of::<RawFd>() as u32) as usize;
            mh.msg_control = cbuf.as_mut_ptr().cast();
            mh.msg_controllen = space;
            let c = libc::CMSG_FIRSTHDR(&mh);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd.as_raw_fd());
        }
    }
    loop {
        // SAFETY: mh points at live buffers; MSG_NOSIGNAL turns a dead peer into EPIPE.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &mh, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receive one datagram (`None` at end of stream) and the descriptor it carried, if any.
pub fn recv<T: for<'de> Deserialize<'de>>(sock: BorrowedFd) -> io::Result<Option<(T, Option<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_MSG];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let mut cbuf = [0u64; 8];
    // SAFETY: as in `send`; the kernel writes at most msg_controllen bytes of control data.
    let mut mh: libc::msghdr = unsafe { zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf.as_mut_ptr().cast();
    mh.msg_controllen = size_of::<[u64; 8]>();
    let n = loop {
        // SAFETY: mh points at live buffers; descriptors received are close-on-exec.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut mh, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut fd = None;
    // SAFETY: the CMSG_* walk stays within the control data the kernel reported.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&mh);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                let count = ((*c).cmsg_len - libc::CMSG_LEN(0) as usize) / size_of::<RawFd>();
                for i in 0..count {
                    // Own every descriptor received, so extra ones are closed, not leaked.
                    let owned = OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i)));
                    fd.get_or_insert(owned);
                }
            }
            c = libc::CMSG_NXTHDR(&mh, c);
        }
    }
    if n == 0 && fd.is_none() {
        return Ok(None);
    }
    if mh.msg_flags & libc::MSG_TRUNC != 0 {
        return Err(io::Error::other(format!("message over the {MAX_MSG} byte limit")));
    }
    let msg = serde_json::from_slice(&buf[..n]).map_err(io::Error::other)?;
    Ok(Some((msg, fd)))
}

#[cfg(test)]
mod tests {
    use std::{io::Read as _, os::fd::AsFd as _};

    use super::*;

    #[test]
    fn a_request_and_its_descriptor_cross_the_socket() {
        let (a, b) = pair().unwrap();
        let file = std::fs::File::open("/proc/self/status").unwrap();
        send(a.as_fd(), &Request::Symbolize { file: 7, offsets: vec![1, 2] }, Some(file.as_fd())).unwrap();
        let (req, fd) = recv::<Request>(b.as_fd()).unwrap().unwrap();
        assert!(matches!(req, Request::Symbolize { file: 7, ref offsets } if offsets == &[1, 2]), "{req:?}");
        let mut text = String::new();
        std::fs::File::from(fd.expect("the descriptor")).read_to_string(&mut text).unwrap();
        assert!(text.contains("Pid:"), "{text}");
        send(b.as_fd(), &Response::Closed, None).unwrap();
        assert!(matches!(recv::<Response>(a.as_fd()).unwrap(), Some((Response::Closed, None))));
        drop(b);
        assert!(recv::<Response>(a.as_fd()).unwrap().is_none(), "end of stream once the peer is gone");
    }
}
