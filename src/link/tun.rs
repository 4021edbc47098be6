//! TUN devices: memifd's uplinks. Opened non-blocking (`IFF_TUN |
//! IFF_NO_PI`: the kernel hands over bare IPv4/IPv6 packets, one per
//! `read`), not persistent (the device lives as long as memifd holds its
//! fd), set up with an MTU and no address.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::LinkUnspec;

use super::{nl, LinkError, Netlink};

const IFF_TUN: i16 = 0x0001;
const IFF_NO_PI: i16 = 0x1000;

/// An open TUN device: packets in and out, one per call.
#[derive(Debug)]
pub struct Tun {
    file: File,
    name: String,
    ifindex: u32,
}

impl Tun {
    /// Creates (or attaches to a free) TUN device `name`, non-blocking,
    /// and sets it up with `mtu` in interface group
    /// [`UPLINK_GROUP`](super::route::UPLINK_GROUP), using `link` in the
    /// current namespace.
    pub fn create(link: &Netlink, name: &str, mtu: u32) -> Result<Tun, LinkError> {
        let fail = |source| LinkError::Tun {
            name: name.to_string(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(fail)?;
        let name = crate::sys::tun_set_iff(file.as_fd(), name, IFF_TUN | IFF_NO_PI)
            .map_err(|e| fail(e.into()))?;
        let n = name.clone();
        let ifindex = link.run("get tun", |h| async move {
            let mut s = h.link().get().match_name(n.clone()).execute();
            match s.try_next().await.map_err(nl(format!("get link {n}")))? {
                Some(m) => Ok(m.header.index),
                None => Err(LinkError::Other(format!("TUN device {n} has no ifindex"))),
            }
        })?;
        link.run("set tun up", |h| async move {
            h.link()
                .set(
                    LinkUnspec::new_with_index(ifindex)
                        .up()
                        .mtu(mtu)
                        .append_extra_attribute(LinkAttribute::Group(super::route::UPLINK_GROUP))
                        .build(),
                )
                .execute()
                .await
                .map_err(nl(format!("set link {ifindex} up")))
        })?;
        Ok(Tun {
            file,
            name,
            ifindex,
        })
    }

    /// A stand-in over any packet descriptor (a `SOCK_SEQPACKET` or
    /// `SOCK_DGRAM` socket pair end): what tests and fakes hand the
    /// dataplane instead of a kernel device. It must be non-blocking.
    pub fn from_fd(fd: OwnedFd, name: &str, ifindex: u32) -> Tun {
        Tun {
            file: File::from(fd),
            name: name.to_string(),
            ifindex,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Reads one packet; `None` when none is waiting.
    pub fn recv(&self, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        match (&self.file).read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes one packet to the host kernel.
    pub fn send(&self, pkt: &[u8]) -> std::io::Result<()> {
        (&self.file).write(pkt).map(|_| ())
    }
}
