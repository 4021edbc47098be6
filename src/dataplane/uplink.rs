//! The uplink: one TUN device per network, in memifd's own (the host's)
//! network namespace, and the host routes that point the network's pod
//! addresses at it.
//!
//! **Name.** `memifup-` followed by the first 7 hex digits of the 64-bit
//! FNV-1a hash of the network name (15 characters, the kernel's limit), e.g.
//! network `blue` -> [`tun_name`]`("blue")`. It depends on nothing else, so
//! an operator can compute it, and it stays the same across restarts.
//!
//! **Lifetime.** The device is created (not persistent: it lives as long as
//! memifd holds its fd) when a network's first attachment appears and goes
//! away, with every route through it, when the last one is detached or
//! memifd exits. It is set up with MTU [`UPLINK_MTU`], no address and no
//! link-layer header (`IFF_TUN | IFF_NO_PI`): the kernel hands the
//! dataplane bare IPv4/IPv6 packets, one per `read`.
//!
//! **Routes.** For every pod address of the network memifd installs
//! `<ip>/32` (or `/128`) `dev <tun> scope link` in the main table on
//! attach (replacing an existing route for the same prefix) and deletes
//! exactly that route (matched on the device) on detach. So `ping <pod ip>`
//! from the host goes into the TUN, the dataplane routes it to the pod's
//! memif, and the reply comes back through the TUN.
//!
//! Netlink here is a small synchronous request/ack loop on a
//! `NETLINK_ROUTE` socket: three message kinds, built by hand.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use nix::sys::socket::{
    bind, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

/// MTU of every uplink device.
pub const UPLINK_MTU: u32 = 1500;
/// Prefix of uplink device names.
pub const NAME_PREFIX: &str = "memifup-";

/// Uplink failures.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("cannot open /dev/net/tun")]
    OpenTun(#[source] std::io::Error),
    #[error("cannot create TUN device {name}")]
    CreateTun {
        name: String,
        #[source]
        source: nix::Error,
    },
    #[error("TUN device {0} has no ifindex")]
    NoIndex(String),
    #[error("netlink socket")]
    Socket(#[source] nix::Error),
    #[error("netlink {what}")]
    Netlink {
        what: String,
        #[source]
        source: nix::Error,
    },
}

/// The uplink device name of `network` (see the module docs).
pub fn tun_name(network: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in network.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{NAME_PREFIX}{:07x}", h >> 36)
}

/// An open TUN device: packets in and out, one per call.
#[derive(Debug)]
pub struct Tun {
    file: File,
    name: String,
    ifindex: u32,
}

impl Tun {
    /// Creates (or attaches to a free) TUN device `name`, non-blocking,
    /// and sets it up with [`UPLINK_MTU`].
    pub fn create(name: &str) -> Result<Tun, UplinkError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(UplinkError::OpenTun)?;
        const IFF_TUN: i16 = 0x0001;
        const IFF_NO_PI: i16 = 0x1000;
        let name = crate::memif::shm::tun_set_iff(file.as_fd(), name, IFF_TUN | IFF_NO_PI)
            .map_err(|source| UplinkError::CreateTun {
                name: name.to_string(),
                source,
            })?;
        let ifindex = std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| UplinkError::NoIndex(name.clone()))?;
        let tun = Tun {
            file,
            name,
            ifindex,
        };
        Netlink::open()?.set_up(tun.ifindex, UPLINK_MTU)?;
        Ok(tun)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
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

// Netlink constants (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h).
const NLMSG_ERROR: u16 = 2;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const IFLA_MTU: u16 = 4;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_STATIC: u8 = 4;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;
const IFF_UP: u32 = 1;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// A `NETLINK_ROUTE` socket for a few synchronous requests.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

/// A netlink request under construction.
struct Msg(Vec<u8>);

impl Msg {
    fn new(kind: u16, flags: u16, seq: u32) -> Msg {
        let mut v = Vec::with_capacity(64);
        v.extend_from_slice(&0u32.to_ne_bytes()); // length, set in finish
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        Msg(v)
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Msg {
        self.0.extend_from_slice(b);
        self
    }
    fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Msg {
        let len = 4 + data.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(data);
        while self.0.len() % 4 != 0 {
            self.0.push(0);
        }
        self
    }
    fn finish(&mut self) -> &[u8] {
        let len = self.0.len() as u32;
        self.0[..4].copy_from_slice(&len.to_ne_bytes());
        &self.0
    }
}

impl Netlink {
    pub fn open() -> Result<Netlink, UplinkError> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .map_err(UplinkError::Socket)?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(UplinkError::Socket)?;
        // The kernel answers at once; never hang on a lost answer.
        setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(5, 0))
            .map_err(UplinkError::Socket)?;
        Ok(Netlink { fd, seq: 0 })
    }

    /// Sends one request and waits for its ack.
    fn request(&mut self, what: &str, mut m: Msg) -> Result<(), UplinkError> {
        let fail = |source| UplinkError::Netlink {
            what: what.to_string(),
            source,
        };
        let seq = self.seq;
        send(self.fd.as_raw_fd(), m.finish(), MsgFlags::empty()).map_err(fail)?;
        let mut buf = [0u8; 4096];
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(fail)?;
            let mut off = 0;
            while off + 16 <= n {
                let u32_at = |o: usize| u32::from_ne_bytes(buf[o..o + 4].try_into().expect("4"));
                let len = u32_at(off) as usize;
                let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
                let mseq = u32_at(off + 8);
                if len < 16 || off + len > n {
                    return Err(fail(nix::Error::EBADMSG));
                }
                if kind == NLMSG_ERROR && mseq == seq && len >= 20 {
                    let code = i32::from_ne_bytes(buf[off + 16..off + 20].try_into().expect("4"));
                    return if code == 0 {
                        Ok(())
                    } else {
                        Err(fail(nix::Error::from_raw(-code)))
                    };
                }
                off += (len + 3) & !3;
            }
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sets link `ifindex` up with `mtu`.
    pub fn set_up(&mut self, ifindex: u32, mtu: u32) -> Result<(), UplinkError> {
        let seq = self.next_seq();
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
        // struct ifinfomsg: family, pad, type, index, flags, change.
        m.bytes(&[0, 0, 0, 0])
            .bytes(&(ifindex as i32).to_ne_bytes())
            .bytes(&IFF_UP.to_ne_bytes())
            .bytes(&IFF_UP.to_ne_bytes())
            .attr(IFLA_MTU, &mtu.to_ne_bytes());
        self.request(&format!("set link {ifindex} up"), m)
    }

    fn route_msg(kind: u16, flags: u16, seq: u32, ip: IpAddr, ifindex: u32) -> Msg {
        let (family, len, addr): (u8, u8, Vec<u8>) = match ip {
            IpAddr::V4(a) => (AF_INET, 32, a.octets().to_vec()),
            IpAddr::V6(a) => (AF_INET6, 128, a.octets().to_vec()),
        };
        let mut m = Msg::new(kind, flags, seq);
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol,
        // scope, type, flags.
        m.bytes(&[
            family,
            len,
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_STATIC,
            RT_SCOPE_LINK,
            RTN_UNICAST,
        ])
        .bytes(&0u32.to_ne_bytes())
        .attr(RTA_DST, &addr)
        .attr(RTA_OIF, &ifindex.to_ne_bytes());
        m
    }

    /// `ip route replace <ip>/32|128 dev <ifindex> scope link`.
    pub fn add_host_route(&mut self, ip: IpAddr, ifindex: u32) -> Result<(), UplinkError> {
        let seq = self.next_seq();
        let m = Self::route_msg(
            RTM_NEWROUTE,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            seq,
            ip,
            ifindex,
        );
        self.request(&format!("add route {ip} dev {ifindex}"), m)
    }

    /// Deletes the host route of `ip` through `ifindex`; a route that is
    /// already gone (or now points elsewhere) is not an error.
    pub fn del_host_route(&mut self, ip: IpAddr, ifindex: u32) -> Result<(), UplinkError> {
        let seq = self.next_seq();
        let m = Self::route_msg(RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK, seq, ip, ifindex);
        match self.request(&format!("delete route {ip} dev {ifindex}"), m) {
            Err(UplinkError::Netlink {
                source: nix::Error::ESRCH | nix::Error::ENODEV,
                ..
            }) => Ok(()),
            r => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_stable_and_distinct() {
        let a = tun_name("blue");
        assert_eq!(a.len(), 15, "{a}");
        assert!(a.starts_with(NAME_PREFIX));
        assert_eq!(a, tun_name("blue"));
        assert_ne!(a, tun_name("red"));
        // A long name still gives 15 characters.
        assert_eq!(tun_name(&"x".repeat(300)).len(), 15);
        // FNV-1a 64 of "" is cbf29ce484222325: the first 7 hex digits.
        assert_eq!(tun_name(""), "memifup-cbf29ce");
    }

    #[test]
    fn route_message_layout() {
        let mut m =
            Netlink::route_msg(RTM_NEWROUTE, 1, 7, "10.1.2.3".parse().unwrap(), 0x0102_0304);
        let b = m.finish().to_vec();
        // header 16 + rtmsg 12 + dst attr 8 + oif attr 8
        assert_eq!(b.len(), 44);
        assert_eq!(u32::from_ne_bytes(b[0..4].try_into().unwrap()), 44);
        assert_eq!(&b[16..24], &[AF_INET, 32, 0, 0, 254, 4, 253, 1]);
        assert_eq!(&b[28..36], &[8, 0, 1, 0, 10, 1, 2, 3]);
        let mut m6 = Netlink::route_msg(RTM_DELROUTE, 1, 8, "fd00::5".parse().unwrap(), 9);
        assert_eq!(m6.finish().len(), 16 + 12 + 20 + 8);
    }
}
