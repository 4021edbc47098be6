//! Routes and policy rules in the calling thread's namespace: host routes
//! (`<ip>/32` or `/128` `dev <ifindex> scope link`) in the main table or
//! another one, the PBL steering rules, and the dumps that find rules a
//! crashed memifd left behind.

use std::net::IpAddr;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage, RulePortRange};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{IpVersion, RouteMessageBuilder};

use super::{errno, nl, LinkError, Netlink};

/// The routing protocol number (`proto 109`) that marks memifd's rules.
pub const RTPROT_MEMIFD: u8 = 109;
/// The main routing table.
pub const RT_TABLE_MAIN: u32 = 254;

/// A host route: `<ip>/32` (or `/128`) `dev <ifindex> scope link` in
/// `table`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostRoute {
    pub ip: IpAddr,
    pub ifindex: u32,
    pub table: u32,
}

impl std::fmt::Display for HostRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} dev {}", self.ip, self.ifindex)?;
        if self.table != RT_TABLE_MAIN {
            write!(f, " table {}", self.table)?;
        }
        Ok(())
    }
}

/// One steering rule: `to <ip> ipproto <proto> dport <start>-<end>
/// lookup <table>` at `priority`, protocol [`RTPROT_MEMIFD`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

fn route_message(r: &HostRoute) -> RouteMessage {
    let b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(r.ip, if r.ip.is_ipv4() { 32 } else { 128 })
        .expect("a host prefix is valid");
    b.output_interface(r.ifindex)
        .table_id(r.table)
        .protocol(RouteProtocol::Static)
        .scope(RouteScope::Link)
        .build()
}

/// `ip route replace <ip>/32|128 dev <ifindex> scope link [table T]`.
pub fn add_route(link: &Netlink, r: &HostRoute) -> Result<(), LinkError> {
    let op = format!("add route {r}");
    link.run(&op, |h| async move {
        h.route()
            .add(route_message(r))
            .replace()
            .execute()
            .await
            .map_err(nl(format!("add route {r}")))
    })
}

/// Deletes a host route; one already gone (or through another device) is
/// not an error.
pub fn del_route(link: &Netlink, r: &HostRoute) -> Result<(), LinkError> {
    let op = format!("delete route {r}");
    link.run(&op, |h| async move {
        match h.route().del(route_message(r)).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), nix::libc::ESRCH | nix::libc::ENODEV) => Ok(()),
            Err(e) => Err(nl(format!("delete route {r}"))(e)),
        }
    })
}

fn rule_message(r: &SteerRule) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = if r.ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    m.header.dst_len = if r.ip.is_ipv4() { 32 } else { 128 };
    m.header.action = RuleAction::ToTable;
    m.attributes = vec![
        RuleAttribute::Destination(r.ip),
        RuleAttribute::Priority(r.priority),
        RuleAttribute::Table(r.table),
        RuleAttribute::Protocol(RouteProtocol::from(RTPROT_MEMIFD)),
        RuleAttribute::IpProtocol(r.proto.into()),
        RuleAttribute::DestinationPortRange(RulePortRange {
            start: r.start,
            end: r.end,
        }),
    ];
    m
}

/// Adds a steering rule; an identical existing rule is fine.
pub fn add_rule(link: &Netlink, r: &SteerRule) -> Result<(), LinkError> {
    let op = format!("add rule {r}");
    link.run(&op, |h| async move {
        let mut req = h.rule().add();
        *req.message_mut() = rule_message(r);
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == nix::libc::EEXIST => Ok(()),
            Err(e) => Err(nl(format!("add rule {r}"))(e)),
        }
    })
}

/// Deletes a steering rule; already gone is fine.
pub fn del_rule(link: &Netlink, r: &SteerRule) -> Result<(), LinkError> {
    let op = format!("delete rule {r}");
    link.run(&op, |h| async move {
        match h.rule().del(rule_message(r)).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == nix::libc::ENOENT => Ok(()),
            Err(e) => Err(nl(format!("delete rule {r}"))(e)),
        }
    })
}

/// A dumped rule, if it is one of ours of the shape [`SteerRule`]
/// describes.
pub fn parse_rule(m: &RuleMessage) -> Option<SteerRule> {
    let mut r = SteerRule {
        ip: IpAddr::from([0u8; 4]),
        proto: 0,
        start: 0,
        end: 0,
        table: m.header.table as u32,
        priority: 0,
    };
    let (mut ours, mut dst) = (false, None);
    for a in &m.attributes {
        match a {
            RuleAttribute::Destination(ip) => dst = Some(*ip),
            RuleAttribute::Priority(p) => r.priority = *p,
            RuleAttribute::Table(t) => r.table = *t,
            RuleAttribute::Protocol(p) => ours = u8::from(*p) == RTPROT_MEMIFD,
            RuleAttribute::IpProtocol(p) => r.proto = i32::from(*p) as u8,
            RuleAttribute::DestinationPortRange(pr) => {
                r.start = pr.start;
                r.end = pr.end;
            }
            _ => {}
        }
    }
    r.ip = dst?;
    ours.then_some(r)
}

/// Every rule marked with [`RTPROT_MEMIFD`] (both families).
pub fn steer_rules(link: &Netlink) -> Result<Vec<SteerRule>, LinkError> {
    link.run("dump rules", |h| async move {
        let mut out = Vec::new();
        for v in [IpVersion::V4, IpVersion::V6] {
            let mut s = h.rule().get(v).execute();
            while let Some(m) = s.try_next().await.map_err(nl("dump rules"))? {
                out.extend(parse_rule(&m));
            }
        }
        Ok(out)
    })
}

/// A dumped route's `(table, destination)` if it is a host route.
pub fn parse_host_route(m: &RouteMessage) -> Option<(u32, IpAddr)> {
    let full = match m.header.address_family {
        AddressFamily::Inet => 32,
        AddressFamily::Inet6 => 128,
        _ => return None,
    };
    if m.header.destination_prefix_length != full {
        return None;
    }
    let mut table = m.header.table as u32;
    let mut dst = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(IpAddr::V4(*ip)),
            RouteAttribute::Destination(RouteAddress::Inet6(ip)) => dst = Some(IpAddr::V6(*ip)),
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    Some((table, dst?))
}

/// `(table, destination)` of every host route (/32, /128) of both
/// families, in every table.
pub fn host_routes(link: &Netlink) -> Result<Vec<(u32, IpAddr)>, LinkError> {
    link.run("dump routes", |h| async move {
        let mut out = Vec::new();
        for v4 in [true, false] {
            let mut msg = if v4 {
                RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()
            } else {
                RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()
            };
            // All tables, not only main.
            msg.header.table = 0;
            let mut s = h.route().get(msg).execute();
            while let Some(m) = s.try_next().await.map_err(nl("dump routes"))? {
                out.extend(parse_host_route(&m));
            }
        }
        Ok(out)
    })
}

/// The underlay of this namespace: `want` (when given) or the preferred
/// source address of the default route (IPv4 first, then IPv6; without a
/// preferred source, the first global address of its device), with the
/// MTU of the device that holds the address. `None` when there is no
/// default route (or `want` is on no device).
pub fn underlay(link: &Netlink, want: Option<IpAddr>) -> Result<Option<(IpAddr, u32)>, LinkError> {
    use rtnetlink::packet_route::address::AddressAttribute;
    use rtnetlink::packet_route::link::LinkAttribute;
    link.run("find the underlay", |h| async move {
        // Every address with its device.
        let mut addrs: Vec<(IpAddr, u32, bool)> = Vec::new();
        let mut s = h.address().get().execute();
        while let Some(m) = s.try_next().await.map_err(nl("dump addresses"))? {
            let global = m.header.scope == rtnetlink::packet_route::address::AddressScope::Universe;
            for a in &m.attributes {
                if let AddressAttribute::Address(ip) = a {
                    addrs.push((*ip, m.header.index, global));
                }
            }
        }
        let chosen = match want {
            Some(ip) => addrs.iter().find(|a| a.0 == ip).map(|a| (a.0, a.1)),
            None => {
                let mut found = None;
                for v4 in [true, false] {
                    let msg = if v4 {
                        RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()
                    } else {
                        RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()
                    };
                    let mut s = h.route().get(msg).execute();
                    while let Some(m) = s.try_next().await.map_err(nl("dump routes"))? {
                        if m.header.destination_prefix_length != 0
                            || parse_table(&m) != RT_TABLE_MAIN
                        {
                            continue;
                        }
                        let (mut oif, mut src) = (None, None);
                        for a in &m.attributes {
                            match a {
                                RouteAttribute::Oif(i) => oif = Some(*i),
                                RouteAttribute::PrefSource(RouteAddress::Inet(ip)) => {
                                    src = Some(IpAddr::V4(*ip))
                                }
                                RouteAttribute::PrefSource(RouteAddress::Inet6(ip)) => {
                                    src = Some(IpAddr::V6(*ip))
                                }
                                _ => {}
                            }
                        }
                        let Some(oif) = oif else { continue };
                        let src = src.or_else(|| {
                            addrs
                                .iter()
                                .find(|a| a.1 == oif && a.2 && a.0.is_ipv4() == v4)
                                .map(|a| a.0)
                        });
                        if let Some(ip) = src {
                            found = Some((ip, oif));
                            break;
                        }
                    }
                    if found.is_some() {
                        break;
                    }
                }
                found
            }
        };
        let Some((ip, index)) = chosen else {
            return Ok(None);
        };
        let mut s = h.link().get().match_index(index).execute();
        let mut mtu = 1500;
        if let Some(m) = s.try_next().await.map_err(nl("get link"))? {
            for a in m.attributes {
                if let LinkAttribute::Mtu(x) = a {
                    mtu = x;
                }
            }
        }
        Ok(Some((ip, mtu)))
    })
}

fn parse_table(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(m.header.table as u32)
}

/// The interface group of memifd's uplink TUNs (0x4d50, "MP").
pub const UPLINK_GROUP: u32 = 0x4d50;
/// Priorities of the isolation rules: after `local` (0), before the PBL
/// steering (2000) and `main` (32766).
pub const ISOLATE_PRIORITY: u32 = 1990;

/// The two rules per family that keep what a network sends into its
/// uplink `iif` out of every other uplink: `iif <tun> lookup main
/// suppress_ifgroup 0x4d50` (routes through any uplink are refused, others
/// taken), then `iif <tun> blackhole`.
fn isolation_messages(iif: &str) -> Vec<(String, RuleMessage)> {
    let mut out = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let fam = if family == AddressFamily::Inet {
            ""
        } else {
            "-6 "
        };
        let mut lookup = RuleMessage::default();
        lookup.header.family = family;
        lookup.header.action = RuleAction::ToTable;
        lookup.header.table = RT_TABLE_MAIN as u8;
        lookup.attributes = vec![
            RuleAttribute::Iifname(iif.to_string()),
            RuleAttribute::Priority(ISOLATE_PRIORITY),
            RuleAttribute::SuppressIfGroup(UPLINK_GROUP),
            RuleAttribute::Protocol(RouteProtocol::from(RTPROT_MEMIFD)),
        ];
        out.push((
            format!("{fam}pref {ISOLATE_PRIORITY} iif {iif} lookup main suppress_ifgroup {UPLINK_GROUP:#x}"),
            lookup,
        ));
        let mut hole = RuleMessage::default();
        hole.header.family = family;
        hole.header.action = RuleAction::Blackhole;
        hole.attributes = vec![
            RuleAttribute::Iifname(iif.to_string()),
            RuleAttribute::Priority(ISOLATE_PRIORITY + 1),
            RuleAttribute::Protocol(RouteProtocol::from(RTPROT_MEMIFD)),
        ];
        out.push((
            format!("{fam}pref {} iif {iif} blackhole", ISOLATE_PRIORITY + 1),
            hole,
        ));
    }
    out
}

/// Installs the isolation rules of uplink `iif` (identical ones are fine).
pub fn isolate(link: &Netlink, iif: &str) -> Result<(), LinkError> {
    link.run("add isolation rules", |h| async move {
        for (what, m) in isolation_messages(iif) {
            let mut req = h.rule().add();
            *req.message_mut() = m;
            match req.execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == nix::libc::EEXIST => {}
                Err(e) => return Err(nl(format!("add rule {what}"))(e)),
            }
        }
        Ok(())
    })
}

/// Deletes the isolation rules of uplink `iif` (absent ones are fine).
pub fn unisolate(link: &Netlink, iif: &str) -> Result<(), LinkError> {
    link.run("delete isolation rules", |h| async move {
        for (what, m) in isolation_messages(iif) {
            match h.rule().del(m).execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == nix::libc::ENOENT => {}
                Err(e) => return Err(nl(format!("delete rule {what}"))(e)),
            }
        }
        Ok(())
    })
}

/// Uplinks with isolation rules of ours whose device is gone (a memifd
/// that did not stop cleanly left them).
pub fn stale_isolated(link: &Netlink) -> Result<Vec<String>, LinkError> {
    link.run("dump isolation rules", |h| async move {
        let mut names = std::collections::BTreeSet::new();
        for v in [IpVersion::V4, IpVersion::V6] {
            let mut s = h.rule().get(v).execute();
            while let Some(m) = s.try_next().await.map_err(nl("dump rules"))? {
                let ours = m.attributes.iter().any(
                    |a| matches!(a, RuleAttribute::Protocol(p) if u8::from(*p) == RTPROT_MEMIFD),
                );
                let iif = m.attributes.iter().find_map(|a| match a {
                    RuleAttribute::Iifname(n) => Some(n.clone()),
                    _ => None,
                });
                if let (true, Some(iif)) = (ours, iif) {
                    names.insert(iif);
                }
            }
        }
        let mut stale = Vec::new();
        for n in names {
            let mut s = h.link().get().match_name(n.clone()).execute();
            match s.try_next().await {
                Ok(Some(_)) => {}
                Ok(None) => stale.push(n),
                Err(e) if errno(&e) == nix::libc::ENODEV => stale.push(n),
                Err(e) => return Err(nl(format!("get link {n}"))(e)),
            }
        }
        Ok(stale)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_messages_round_trip_through_the_dump_parser() {
        let r = SteerRule {
            ip: "10.9.8.7".parse().unwrap(),
            proto: 17,
            start: 4444,
            end: 20000,
            table: 0x4d50_0001,
            priority: 2000,
        };
        assert_eq!(parse_rule(&rule_message(&r)), Some(r));
        let r6 = SteerRule {
            ip: "fd00::7".parse().unwrap(),
            ..r
        };
        assert_eq!(parse_rule(&rule_message(&r6)), Some(r6));
        // Not ours: another protocol.
        let mut other = rule_message(&r);
        for a in &mut other.attributes {
            if let RuleAttribute::Protocol(p) = a {
                *p = RouteProtocol::Static;
            }
        }
        assert_eq!(parse_rule(&other), None);
    }

    #[test]
    fn route_messages_parse_as_host_routes() {
        let r = HostRoute {
            ip: "10.1.2.3".parse().unwrap(),
            ifindex: 5,
            table: 0x4d50_0001,
        };
        assert_eq!(
            parse_host_route(&route_message(&r)),
            Some((0x4d50_0001, r.ip))
        );
        let main = HostRoute {
            ip: "fd00::5".parse().unwrap(),
            ifindex: 9,
            table: RT_TABLE_MAIN,
        };
        assert_eq!(
            parse_host_route(&route_message(&main)),
            Some((254, main.ip))
        );
    }
}
