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
//! **PBL steering.** A PBL attachment (`steer` ranges in its request)
//! shares its address with the pod's primary interface, so its address
//! gets no main-table route (that would take all of the pod's traffic).
//! Instead, per network, memifd uses its own routing table
//! [`steer_table`]`(network)` = `0x4d50_0000` + the first 4 hex digits of
//! the same hash that names the uplink (uplink `memifup-abcd123` ->
//! table `0x4d50abcd` = 1297132493), holding `<ip>/32 dev <tun> scope
//! link`, and one policy rule per range and address at priority
//! [`STEER_PRIORITY`]:
//! `to <ip>/32 ipproto tcp|udp dport A-B lookup <table> proto 109`
//! (`ip rule` shows them). Priority 2000 sits after `local` (0) and
//! before `main` (32766); protocol [`RTPROT_MEMIFD`] (109) marks them as
//! memifd's. The route is added before the rules and removed after them,
//! so a rule of ours whose table has no route for its address is stale
//! (its memifd crashed; the TUN, and the route with it, went away):
//! [`Netlink::clean_stale_rules`] deletes exactly those, which is safe
//! while other memifd instances (tests) run. The TUN of a network with
//! PBL ports has `rp_filter` 2 (loose): the memif's replies enter the host
//! through the TUN with the pod's address as source, which the main
//! table routes via the primary interface; strict mode would drop them.
//!
//! Netlink here is a small synchronous request/ack loop on a
//! `NETLINK_ROUTE` socket, messages built by hand, plus two dumps (rules
//! and routes) for the stale-rule clean-up.

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
/// Priority of memifd's PBL steering rules.
pub const STEER_PRIORITY: u32 = 2000;
/// Base of memifd's per-network steering tables (see [`steer_table`]).
pub const STEER_TABLE_BASE: u32 = 0x4d50_0000;
/// The routing protocol (`proto 109`) memifd marks its rules with.
pub const RTPROT_MEMIFD: u8 = 109;

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

fn fnv(network: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in network.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The uplink device name of `network` (see the module docs).
pub fn tun_name(network: &str) -> String {
    format!("{NAME_PREFIX}{:07x}", fnv(network) >> 36)
}

/// The routing table of `network`'s PBL steering (see the module docs).
pub fn steer_table(network: &str) -> u32 {
    STEER_TABLE_BASE + (fnv(network) >> 48) as u32
}

/// One steering rule: `to <ip> ipproto <proto> dport <start>-<end>
/// lookup <table>` at `priority`, protocol [`RTPROT_MEMIFD`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SteerRule {
    pub ip: IpAddr,
    /// IP protocol number (6 tcp, 17 udp).
    pub proto: u8,
    pub start: u16,
    pub end: u16,
    pub table: u32,
    pub priority: u32,
}

impl std::fmt::Display for SteerRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pref {} to {} ipproto {} dport {}-{} lookup {}",
            self.priority, self.ip, self.proto, self.start, self.end, self.table
        )
    }
}

/// Sets `rp_filter` of IPv4 device `dev` (0 off, 1 strict, 2 loose).
pub fn set_rp_filter(dev: &str, value: u8) -> std::io::Result<()> {
    std::fs::write(
        format!("/proc/sys/net/ipv4/conf/{dev}/rp_filter"),
        format!("{value}\n"),
    )
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
const NLMSG_DONE: u16 = 3;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWRULE: u16 = 32;
const RTM_DELRULE: u16 = 33;
const RTM_GETRULE: u16 = 34;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_EXCL: u16 = 0x200;
const RTA_TABLE: u16 = 15;
const FRA_DST: u16 = 1;
const FRA_PRIORITY: u16 = 6;
const FRA_TABLE: u16 = 15;
const FRA_PROTOCOL: u16 = 21;
const FRA_IP_PROTO: u16 = 22;
const FRA_DPORT_RANGE: u16 = 24;
const FR_ACT_TO_TBL: u8 = 1;
const AF_UNSPEC: u8 = 0;
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

    /// Sends a dump request and returns the payload (after the netlink
    /// header) of every message of the answer.
    fn dump(&mut self, what: &str, mut m: Msg) -> Result<Vec<Vec<u8>>, UplinkError> {
        let fail = |source| UplinkError::Netlink {
            what: what.to_string(),
            source,
        };
        let seq = self.seq;
        send(self.fd.as_raw_fd(), m.finish(), MsgFlags::empty()).map_err(fail)?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut out = Vec::new();
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(fail)?;
            let mut off = 0;
            while off + 16 <= n {
                let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4")) as usize;
                let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
                let mseq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().expect("4"));
                if len < 16 || off + len > n {
                    return Err(fail(nix::Error::EBADMSG));
                }
                if mseq == seq {
                    match kind {
                        NLMSG_DONE => return Ok(out),
                        NLMSG_ERROR if len >= 20 => {
                            let code =
                                i32::from_ne_bytes(buf[off + 16..off + 20].try_into().expect("4"));
                            return Err(fail(nix::Error::from_raw(-code)));
                        }
                        _ => out.push(buf[off + 16..off + len].to_vec()),
                    }
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
        Self::route_msg_in(kind, flags, seq, ip, ifindex, RT_TABLE_MAIN as u32)
    }

    fn route_msg_in(kind: u16, flags: u16, seq: u32, ip: IpAddr, ifindex: u32, table: u32) -> Msg {
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
            // Tables above 255 go in RTA_TABLE (rtm_table 0, unspec).
            if table < 256 { table as u8 } else { 0 },
            RTPROT_STATIC,
            RT_SCOPE_LINK,
            RTN_UNICAST,
        ])
        .bytes(&0u32.to_ne_bytes())
        .attr(RTA_DST, &addr)
        .attr(RTA_OIF, &ifindex.to_ne_bytes());
        if table >= 256 {
            m.attr(RTA_TABLE, &table.to_ne_bytes());
        }
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

impl Netlink {
    /// `ip route replace <ip>/32|128 dev <ifindex> scope link table <table>`.
    pub fn add_table_route(
        &mut self,
        ip: IpAddr,
        ifindex: u32,
        table: u32,
    ) -> Result<(), UplinkError> {
        let seq = self.next_seq();
        let m = Self::route_msg_in(
            RTM_NEWROUTE,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            seq,
            ip,
            ifindex,
            table,
        );
        self.request(&format!("add route {ip} dev {ifindex} table {table}"), m)
    }

    /// Deletes `<ip>` through `ifindex` from `table`; already gone is fine.
    pub fn del_table_route(
        &mut self,
        ip: IpAddr,
        ifindex: u32,
        table: u32,
    ) -> Result<(), UplinkError> {
        let seq = self.next_seq();
        let m = Self::route_msg_in(
            RTM_DELROUTE,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            ip,
            ifindex,
            table,
        );
        match self.request(&format!("delete route {ip} dev {ifindex} table {table}"), m) {
            Err(UplinkError::Netlink {
                source: nix::Error::ESRCH | nix::Error::ENODEV,
                ..
            }) => Ok(()),
            r => r,
        }
    }

    fn rule_msg(kind: u16, flags: u16, seq: u32, r: &SteerRule) -> Msg {
        let (family, len, addr): (u8, u8, Vec<u8>) = match r.ip {
            IpAddr::V4(a) => (AF_INET, 32, a.octets().to_vec()),
            IpAddr::V6(a) => (AF_INET6, 128, a.octets().to_vec()),
        };
        let mut m = Msg::new(kind, flags, seq);
        // struct fib_rule_hdr: family, dst_len, src_len, tos, table,
        // res1, res2, action, flags.
        m.bytes(&[family, len, 0, 0, 0, 0, 0, FR_ACT_TO_TBL])
            .bytes(&0u32.to_ne_bytes())
            .attr(FRA_DST, &addr)
            .attr(FRA_PRIORITY, &r.priority.to_ne_bytes())
            .attr(FRA_TABLE, &r.table.to_ne_bytes())
            .attr(FRA_PROTOCOL, &[RTPROT_MEMIFD])
            .attr(FRA_IP_PROTO, &[r.proto]);
        // struct fib_rule_port_range: start, end (host order).
        let mut pr = r.start.to_ne_bytes().to_vec();
        pr.extend_from_slice(&r.end.to_ne_bytes());
        m.attr(FRA_DPORT_RANGE, &pr);
        m
    }

    /// Adds a steering rule; an identical existing rule is fine.
    pub fn add_rule(&mut self, r: &SteerRule) -> Result<(), UplinkError> {
        let seq = self.next_seq();
        let m = Self::rule_msg(
            RTM_NEWRULE,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            seq,
            r,
        );
        match self.request(&format!("add rule {r}"), m) {
            Err(UplinkError::Netlink {
                source: nix::Error::EEXIST,
                ..
            }) => Ok(()),
            x => x,
        }
    }

    /// Deletes a steering rule; already gone is fine.
    pub fn del_rule(&mut self, r: &SteerRule) -> Result<(), UplinkError> {
        let seq = self.next_seq();
        let m = Self::rule_msg(RTM_DELRULE, NLM_F_REQUEST | NLM_F_ACK, seq, r);
        match self.request(&format!("delete rule {r}"), m) {
            Err(UplinkError::Netlink {
                source: nix::Error::ENOENT,
                ..
            }) => Ok(()),
            x => x,
        }
    }

    /// Every rule marked with [`RTPROT_MEMIFD`] (both families).
    pub fn steer_rules(&mut self) -> Result<Vec<SteerRule>, UplinkError> {
        let seq = self.next_seq();
        let mut m = Msg::new(RTM_GETRULE, NLM_F_REQUEST | NLM_F_DUMP, seq);
        m.bytes(&[AF_UNSPEC, 0, 0, 0, 0, 0, 0, 0])
            .bytes(&0u32.to_ne_bytes());
        let msgs = self.dump("dump rules", m)?;
        Ok(msgs.iter().filter_map(|b| parse_rule(b)).collect())
    }

    /// `(table, destination)` of every host route (/32, /128) of both
    /// families.
    pub fn host_routes(&mut self) -> Result<Vec<(u32, IpAddr)>, UplinkError> {
        let mut out = Vec::new();
        for family in [AF_INET, AF_INET6] {
            let seq = self.next_seq();
            let mut m = Msg::new(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq);
            m.bytes(&[family, 0, 0, 0, 0, 0, 0, 0])
                .bytes(&0u32.to_ne_bytes());
            for b in self.dump("dump routes", m)? {
                out.extend(parse_host_route(&b));
            }
        }
        Ok(out)
    }

    /// Deletes every rule of ours whose table has no route to its address
    /// (see the module docs); returns them.
    pub fn clean_stale_rules(&mut self) -> Result<Vec<SteerRule>, UplinkError> {
        let rules = self.steer_rules()?;
        if rules.is_empty() {
            return Ok(rules);
        }
        let routes = self.host_routes()?;
        let mut gone = Vec::new();
        for r in rules {
            if !routes.contains(&(r.table, r.ip)) {
                self.del_rule(&r)?;
                gone.push(r);
            }
        }
        Ok(gone)
    }
}

/// The attributes of a netlink payload after a fixed header of `hdr` bytes.
fn attrs(b: &[u8], hdr: usize) -> impl Iterator<Item = (u16, &[u8])> {
    let mut off = hdr;
    std::iter::from_fn(move || {
        if off + 4 > b.len() {
            return None;
        }
        let len = u16::from_ne_bytes([b[off], b[off + 1]]) as usize;
        let kind = u16::from_ne_bytes([b[off + 2], b[off + 3]]) & 0x3fff;
        if len < 4 || off + len > b.len() {
            return None;
        }
        let data = &b[off + 4..off + len];
        off += (len + 3) & !3;
        Some((kind, data))
    })
}

fn addr_of(family: u8, d: &[u8]) -> Option<IpAddr> {
    match (family, d.len()) {
        (AF_INET, 4) => Some(IpAddr::from(<[u8; 4]>::try_from(d).ok()?)),
        (AF_INET6, 16) => Some(IpAddr::from(<[u8; 16]>::try_from(d).ok()?)),
        _ => None,
    }
}

fn u32_of(d: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(d.get(..4)?.try_into().ok()?))
}

/// A dumped rule (payload after the netlink header), if it is one of ours
/// of the shape [`SteerRule`] describes.
fn parse_rule(b: &[u8]) -> Option<SteerRule> {
    if b.len() < 12 {
        return None;
    }
    let family = b[0];
    let mut r = SteerRule {
        ip: IpAddr::from([0u8; 4]),
        proto: 0,
        start: 0,
        end: 0,
        table: b[4] as u32,
        priority: 0,
    };
    let (mut ours, mut dst) = (false, None);
    for (kind, d) in attrs(b, 12) {
        match kind {
            FRA_DST => dst = addr_of(family, d),
            FRA_PRIORITY => r.priority = u32_of(d)?,
            FRA_TABLE => r.table = u32_of(d)?,
            FRA_PROTOCOL => ours = d.first() == Some(&RTPROT_MEMIFD),
            FRA_IP_PROTO => r.proto = *d.first()?,
            FRA_DPORT_RANGE if d.len() >= 4 => {
                r.start = u16::from_ne_bytes([d[0], d[1]]);
                r.end = u16::from_ne_bytes([d[2], d[3]]);
            }
            _ => {}
        }
    }
    r.ip = dst?;
    ours.then_some(r)
}

/// A dumped route's `(table, destination)` if it is a host route.
fn parse_host_route(b: &[u8]) -> Option<(u32, IpAddr)> {
    if b.len() < 12 {
        return None;
    }
    let (family, dst_len) = (b[0], b[1]);
    let full = if family == AF_INET { 32 } else { 128 };
    if dst_len != full {
        return None;
    }
    let mut table = b[4] as u32;
    let mut dst = None;
    for (kind, d) in attrs(b, 12) {
        match kind {
            RTA_DST => dst = addr_of(family, d),
            RTA_TABLE => table = u32_of(d)?,
            _ => {}
        }
    }
    Some((table, dst?))
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
        // Another table: rtm_table unspec, RTA_TABLE at the end.
        let mut t = Netlink::route_msg_in(
            RTM_NEWROUTE,
            1,
            9,
            "10.1.2.3".parse().unwrap(),
            5,
            0x4d50_0001,
        );
        let b = t.finish().to_vec();
        assert_eq!(b.len(), 52);
        assert_eq!(b[20], 0);
        assert_eq!(&b[44..48], &[8, 0, 15, 0]);
        assert_eq!(
            u32::from_ne_bytes(b[48..52].try_into().unwrap()),
            0x4d50_0001
        );
        assert_eq!(
            parse_host_route(&b[16..]),
            Some((0x4d50_0001, "10.1.2.3".parse().unwrap()))
        );
    }

    #[test]
    fn rule_message_round_trips_through_the_dump_parser() {
        let r = SteerRule {
            ip: "10.9.8.7".parse().unwrap(),
            proto: 17,
            start: 4444,
            end: 20000,
            table: steer_table("blue"),
            priority: STEER_PRIORITY,
        };
        let mut m = Netlink::rule_msg(RTM_NEWRULE, 1, 3, &r);
        let b = m.finish().to_vec();
        // header 16 + fib_rule_hdr 12 + dst 8 + prio 8 + table 8 +
        // protocol 8 + ipproto 8 + dport range 8
        assert_eq!(b.len(), 76);
        assert_eq!(&b[16..24], &[AF_INET, 32, 0, 0, 0, 0, 0, FR_ACT_TO_TBL]);
        assert_eq!(parse_rule(&b[16..]), Some(r));
        let r6 = SteerRule {
            ip: "fd00::7".parse().unwrap(),
            ..r
        };
        let b6 = Netlink::rule_msg(RTM_NEWRULE, 1, 3, &r6).finish().to_vec();
        assert_eq!(parse_rule(&b6[16..]), Some(r6));
        // Not ours: no protocol 109.
        let mut other = b.clone();
        let p = other.len() - 24;
        assert_eq!(&other[p..p + 4], &[5, 0, FRA_PROTOCOL as u8, 0]);
        other[p + 4] = 4;
        assert_eq!(parse_rule(&other[16..]), None);
    }

    #[test]
    fn steer_tables_follow_the_uplink_name() {
        let t = steer_table("blue");
        let hex = &tun_name("blue")[NAME_PREFIX.len()..NAME_PREFIX.len() + 4];
        assert_eq!(format!("{t:08x}"), format!("4d50{hex}"));
        assert_ne!(t, steer_table("red"));
    }
}
