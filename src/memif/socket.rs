//! The control channel: `AF_UNIX` / `SOCK_SEQPACKET` sockets carrying
//! 128-byte messages and, for ADD_REGION / ADD_RING, one file descriptor.

use std::fmt;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::sys::socket::{
    accept4, bind, connect, getsockopt, listen, recvmsg, sendmsg, setsockopt, socket, sockopt,
    AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
    UnixAddr, UnixCredentials,
};

use super::wire::{Message, WireError, MSG_SIZE};

/// Where a memif socket lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum SocketAddr {
    /// Linux abstract socket: kernel name `"\0" + name`, exact length.
    Abstract(String),
    /// A filesystem path.
    Path(PathBuf),
}

impl SocketAddr {
    /// Parses `@name` (abstract) or a path.
    pub fn parse(s: &str) -> Result<SocketAddr, SocketError> {
        if let Some(name) = s.strip_prefix('@') {
            // sun_path is 108 bytes: the leading NUL plus at most 107.
            if name.is_empty() || name.len() > 107 {
                return Err(SocketError::BadAddress(s.to_string()));
            }
            Ok(SocketAddr::Abstract(name.to_string()))
        } else if s.is_empty() || s.len() > 107 {
            Err(SocketError::BadAddress(s.to_string()))
        } else {
            Ok(SocketAddr::Path(PathBuf::from(s)))
        }
    }

    fn to_unix(&self) -> Result<UnixAddr, SocketError> {
        match self {
            // nix sizes the address as offsetof(sun_path) + 1 + len: no
            // padding, no trailing NUL, as libmemif, VPP and DPDK expect.
            SocketAddr::Abstract(n) => UnixAddr::new_abstract(n.as_bytes()),
            SocketAddr::Path(p) => UnixAddr::new(p),
        }
        .map_err(|e| SocketError::Io("address", e))
    }
}

impl fmt::Display for SocketAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketAddr::Abstract(n) => write!(f, "@{n}"),
            SocketAddr::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

impl std::str::FromStr for SocketAddr {
    type Err = SocketError;
    fn from_str(s: &str) -> Result<Self, SocketError> {
        SocketAddr::parse(s)
    }
}

/// Control channel failures.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("bad socket address {0:?}")]
    BadAddress(String),
    #[error("{0}: {1}")]
    Io(&'static str, #[source] nix::Error),
    #[error("peer closed the control channel")]
    Closed,
    #[error("malformed message")]
    Wire(#[from] WireError),
    #[error("message carried {0} file descriptors, at most 1 is allowed")]
    TooManyFds(usize),
    #[error("control data was truncated (MSG_CTRUNC)")]
    ControlTruncated,
}

/// A received message with its optional descriptor and sender credentials.
#[derive(Debug)]
pub struct Received {
    pub msg: Message,
    pub fd: Option<OwnedFd>,
    pub creds: Option<UnixCredentials>,
}

/// Most fds Linux passes in one `SCM_RIGHTS` message (`SCM_MAX_FD`; a
/// sender asking for more gets `EINVAL`).
const SCM_MAX_FD: usize = 253;

/// A listening memif socket.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    addr: SocketAddr,
}

impl Listener {
    /// Binds and listens. A stale filesystem socket is removed first.
    /// Bind inside a network namespace (see `crate::netns`) to put an
    /// abstract socket there; the fd works from any namespace afterwards.
    pub fn bind(addr: &SocketAddr) -> Result<Listener, SocketError> {
        let fd = seqpacket()?;
        if let SocketAddr::Path(p) = addr {
            if let Ok(meta) = std::fs::symlink_metadata(p) {
                use std::os::unix::fs::FileTypeExt;
                if meta.file_type().is_socket() {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
        setsockopt(&fd, sockopt::PassCred, &true).map_err(|e| SocketError::Io("SO_PASSCRED", e))?;
        bind(fd.as_raw_fd(), &addr.to_unix()?).map_err(|e| SocketError::Io("bind", e))?;
        listen(&fd, Backlog::new(64).expect("valid backlog"))
            .map_err(|e| SocketError::Io("listen", e))?;
        Ok(Listener {
            fd,
            addr: addr.clone(),
        })
    }

    /// Accepts one connection (non-blocking listener: `Ok(None)` when none
    /// is pending).
    pub fn accept(&self) -> Result<Option<Channel>, SocketError> {
        match accept4(&self.fd, SockFlag::SOCK_CLOEXEC) {
            Ok(fd) => Ok(Some(Channel::from_owned(fd))),
            Err(nix::Error::EAGAIN) => Ok(None),
            Err(e) => Err(SocketError::Io("accept", e)),
        }
    }

    /// Makes `accept` non-blocking.
    pub fn set_nonblocking(&self) -> Result<(), SocketError> {
        set_nonblocking(self.fd.as_fd())
    }

    pub fn addr(&self) -> &SocketAddr {
        &self.addr
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let SocketAddr::Path(p) = &self.addr {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A connected control channel.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    fn from_owned(fd: OwnedFd) -> Channel {
        Channel { fd }
    }

    /// Connects to a listening memif socket (slave side). Abstract sockets
    /// are looked up in the caller's network namespace.
    pub fn connect(addr: &SocketAddr) -> Result<Channel, SocketError> {
        let fd = seqpacket()?;
        connect(fd.as_raw_fd(), &addr.to_unix()?).map_err(|e| SocketError::Io("connect", e))?;
        Ok(Channel { fd })
    }

    /// A connected pair, for tests.
    pub fn pair() -> Result<(Channel, Channel), SocketError> {
        let (a, b) = nix::sys::socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| SocketError::Io("socketpair", e))?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    /// Sends one message, with `fd` as SCM_RIGHTS when given.
    pub fn send(&self, msg: &Message, fd: Option<BorrowedFd<'_>>) -> Result<(), SocketError> {
        self.send_raw(&msg.encode(), fd)
    }

    /// Sends raw bytes (any size): for tests of hostile peers.
    pub fn send_raw(&self, bytes: &[u8], fd: Option<BorrowedFd<'_>>) -> Result<(), SocketError> {
        let iov = [IoSlice::new(bytes)];
        let fds: [RawFd; 1];
        let cmsgs: Vec<ControlMessage> = match fd {
            Some(fd) => {
                fds = [fd.as_raw_fd()];
                vec![ControlMessage::ScmRights(&fds)]
            }
            None => vec![],
        };
        loop {
            match sendmsg::<()>(
                self.fd.as_raw_fd(),
                &iov,
                &cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(nix::Error::EINTR) => continue,
                Err(nix::Error::EPIPE | nix::Error::ECONNRESET) => return Err(SocketError::Closed),
                Err(e) => return Err(SocketError::Io("sendmsg", e)),
            }
        }
    }

    /// Receives one message. The data buffer is larger than a message so an
    /// oversize one is detected (and rejected) rather than silently cut; the
    /// control buffer fits as many fds as the kernel passes in one message
    /// plus one `ucred`, so `MSG_CTRUNC` cannot happen: on truncation the
    /// kernel has already installed the fds that fit, and nix refuses to
    /// iterate a truncated buffer, so they would leak. Every fd received is
    /// owned at once and closed on every error path (e.g. more than one).
    pub fn recv(&self) -> Result<Received, SocketError> {
        let mut buf = [0u8; MSG_SIZE * 2];
        let mut cmsg = nix::cmsg_space!([RawFd; SCM_MAX_FD], UnixCredentials);
        let (len, flags, fds, creds) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(r) => {
                    let mut fds: Vec<OwnedFd> = Vec::new();
                    let mut creds = None;
                    for c in r.cmsgs().map_err(|e| SocketError::Io("cmsgs", e))? {
                        match c {
                            // Received fds become owned at once, so every
                            // error path below closes them.
                            ControlMessageOwned::ScmRights(v) => {
                                fds.extend(v.into_iter().map(owned))
                            }
                            ControlMessageOwned::ScmCredentials(c) => creds = Some(c),
                            _ => {}
                        }
                    }
                    break (r.bytes, r.flags, fds, creds);
                }
                Err(nix::Error::EINTR) => continue,
                Err(nix::Error::ECONNRESET) => return Err(SocketError::Closed),
                Err(e) => return Err(SocketError::Io("recvmsg", e)),
            }
        };
        if len == 0 {
            return Err(SocketError::Closed);
        }
        if flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err(SocketError::ControlTruncated);
        }
        if flags.contains(MsgFlags::MSG_TRUNC) {
            return Err(WireError::BadSize(len.max(MSG_SIZE * 2 + 1)).into());
        }
        if fds.len() > 1 {
            return Err(SocketError::TooManyFds(fds.len()));
        }
        let msg = Message::decode(&buf[..len])?;
        Ok(Received {
            msg,
            fd: fds.into_iter().next(),
            creds,
        })
    }

    /// Credentials of the connected peer (SO_PEERCRED).
    pub fn peer_credentials(&self) -> Option<UnixCredentials> {
        getsockopt(&self.fd, sockopt::PeerCredentials).ok()
    }

    pub fn set_nonblocking(&self) -> Result<(), SocketError> {
        set_nonblocking(self.fd.as_fd())
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn seqpacket() -> Result<OwnedFd, SocketError> {
    socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| SocketError::Io("socket", e))
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<(), SocketError> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let fl = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| SocketError::Io("fcntl", e))?;
    let fl = OFlag::from_bits_truncate(fl) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(fl)).map_err(|e| SocketError::Io("fcntl", e))?;
    Ok(())
}

/// Takes ownership of a descriptor the kernel has just handed us.
fn owned(raw: RawFd) -> OwnedFd {
    crate::sys::adopt_fd(raw)
}
