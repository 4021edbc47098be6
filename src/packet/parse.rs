//! The tolerant parser `memifctl client` (and the fuzzers) use: it
//! summarizes any frame in one line and never panics on garbage. Every read
//! is bounds-checked (`get`, never indexing past a length that was not
//! checked first): frames come from a memif peer.
//!
//! The dataplane does not use it: its decisions read a few fields of a
//! fixed-size copy ([`super::decide`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::checksum::{checksum, l4_checksum};
use super::*;
use crate::mac::Mac;
use crate::memif::Mode;

/// Extension headers skipped before the upper layer: hop-by-hop, routing,
/// destination options. More than this many is treated as garbage.
const MAX_EXT_HEADERS: usize = 8;

fn be16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(d.get(at..at + 2)?.try_into().ok()?))
}

fn v4_at(d: &[u8], at: usize) -> Option<Ipv4Addr> {
    let b: [u8; 4] = d.get(at..at + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

fn v6_at(d: &[u8], at: usize) -> Option<Ipv6Addr> {
    let b: [u8; 16] = d.get(at..at + 16)?.try_into().ok()?;
    Some(Ipv6Addr::from(b))
}

/// An Ethernet II header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ethernet {
    pub dst: Mac,
    pub src: Mac,
    pub ethertype: u16,
}

/// An ARP packet for IPv4 over Ethernet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    pub op: u16,
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target_mac: Mac,
    pub target_ip: Ipv4Addr,
}

/// An ICMP or ICMPv6 echo request or reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo<'a> {
    pub id: u16,
    pub seq: u16,
    pub data: &'a [u8],
}

/// What an IP packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4<'a> {
    EchoRequest(Echo<'a>),
    EchoReply(Echo<'a>),
    NeighborSolicit {
        target: Ipv6Addr,
        source_mac: Option<Mac>,
    },
    NeighborAdvert {
        target: Ipv6Addr,
        target_mac: Option<Mac>,
        flags: u8,
    },
    /// ICMP "fragmentation needed" or ICMPv6 "packet too big": the next
    /// hop's MTU and the start of the packet that did not fit.
    TooBig {
        mtu: u32,
        quoted: &'a [u8],
    },
    /// Any other ICMP or ICMPv6 message.
    Icmp {
        kind: u8,
        code: u8,
    },
    Udp {
        src_port: u16,
        dst_port: u16,
        len: u16,
    },
    Tcp {
        src_port: u16,
        dst_port: u16,
        flags: u8,
    },
    /// Another protocol (its number).
    Other(u8),
    /// A fragment: the upper layer is not decoded.
    Fragment,
    /// The upper-layer header is cut short.
    Truncated(&'static str),
}

/// An IPv4 or IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ip<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL or hop limit.
    pub ttl: u8,
    /// Protocol or final next header.
    pub protocol: u8,
    /// The IPv4 header checksum and the ICMP/ICMPv6 checksum are correct
    /// (those that apply; UDP and TCP checksums are not checked).
    pub checksums_ok: bool,
    /// Length of the IP packet (without link padding).
    pub len: usize,
    pub l4: L4<'a>,
}

impl Ip<'_> {
    pub fn is_v6(&self) -> bool {
        self.src.is_ipv6()
    }
}

/// The network layer of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net<'a> {
    Arp(Arp),
    Ip(Ip<'a>),
    /// Another ethertype.
    Other(u16),
    /// Cut short or malformed (what).
    Truncated(&'static str),
}

/// A decoded frame: the Ethernet header in ethernet mode, then the network
/// layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub eth: Option<Ethernet>,
    pub net: Net<'a>,
}

/// Decodes a frame of a memif in `mode` (ethernet frames, or bare IP
/// packets in ip mode). Never panics; malformed parts decode as
/// `Truncated`.
pub fn parse(mode: Mode, data: &[u8]) -> Frame<'_> {
    if mode != Mode::Ethernet {
        return Frame {
            eth: None,
            net: parse_ip(data),
        };
    }
    let (Some(dst), Some(src), Some(ethertype)) = (
        Mac::from_slice(data),
        data.get(6..).and_then(Mac::from_slice),
        be16(data, 12),
    ) else {
        return Frame {
            eth: None,
            net: Net::Truncated("ethernet header"),
        };
    };
    let payload = &data[ETH_HLEN..];
    let net = match ethertype {
        ETHERTYPE_ARP => parse_arp(payload),
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => match parse_ip(payload) {
            // The version must agree with the ethertype.
            Net::Ip(ip) if ip.is_v6() != (ethertype == ETHERTYPE_IPV6) => {
                Net::Truncated("ip version does not match ethertype")
            }
            n => n,
        },
        other => Net::Other(other),
    };
    Frame {
        eth: Some(Ethernet {
            dst,
            src,
            ethertype,
        }),
        net,
    }
}

fn parse_arp(p: &[u8]) -> Net<'_> {
    let (Some(htype), Some(ptype), Some(&hlen), Some(&plen), Some(op)) =
        (be16(p, 0), be16(p, 2), p.get(4), p.get(5), be16(p, 6))
    else {
        return Net::Truncated("arp header");
    };
    if htype != 1 || ptype != ETHERTYPE_IPV4 || hlen != 6 || plen != 4 {
        return Net::Truncated("arp for another link or protocol");
    }
    let (Some(sender_mac), Some(sender_ip), Some(target_mac), Some(target_ip)) = (
        p.get(8..).and_then(Mac::from_slice),
        v4_at(p, 14),
        p.get(18..).and_then(Mac::from_slice),
        v4_at(p, 24),
    ) else {
        return Net::Truncated("arp packet");
    };
    Net::Arp(Arp {
        op,
        sender_mac,
        sender_ip,
        target_mac,
        target_ip,
    })
}

/// Decodes a bare IPv4 or IPv6 packet (the version nibble decides).
pub fn parse_ip(d: &[u8]) -> Net<'_> {
    parse_ip_cut(d, false)
}

/// The start of a packet as an ICMP error quotes it: cut short, so what
/// is there is parsed (addresses, an echo's id and sequence number) and
/// the checksums count as not OK when the packet is cut.
pub fn parse_quoted(d: &[u8]) -> Net<'_> {
    parse_ip_cut(d, true)
}

fn parse_ip_cut(d: &[u8], cut: bool) -> Net<'_> {
    match d.first().map(|b| b >> 4) {
        Some(4) => parse_ipv4(d, cut),
        Some(6) => parse_ipv6(d, cut),
        Some(_) => Net::Truncated("not an ip packet"),
        None => Net::Truncated("empty packet"),
    }
}

fn parse_ipv4(d: &[u8], cut: bool) -> Net<'_> {
    let ihl = (d[0] & 0x0f) as usize * 4;
    if ihl < 20 || d.len() < ihl {
        return Net::Truncated("ipv4 header");
    }
    let mut total = be16(d, 2).unwrap_or(0) as usize;
    if total < ihl || (total > d.len() && !cut) {
        return Net::Truncated("ipv4 packet");
    }
    let whole = total <= d.len();
    total = total.min(d.len());
    let pkt = &d[..total];
    let (Some(src), Some(dst)) = (v4_at(pkt, 12), v4_at(pkt, 16)) else {
        return Net::Truncated("ipv4 header");
    };
    let frag = be16(pkt, 6).unwrap_or(0);
    let header_ok = checksum(&pkt[..ihl]) == 0;
    let protocol = pkt[9];
    let payload = &pkt[ihl..];
    // More-fragments set or an offset: the upper layer is incomplete.
    let (l4, l4_ok) = if frag & 0x3fff != 0 {
        (L4::Fragment, true)
    } else {
        parse_l4(protocol, payload, src.into(), dst.into())
    };
    Net::Ip(Ip {
        src: src.into(),
        dst: dst.into(),
        ttl: pkt[8],
        protocol,
        checksums_ok: header_ok && l4_ok && whole,
        len: total,
        l4,
    })
}

fn parse_ipv6(d: &[u8], cut: bool) -> Net<'_> {
    let (Some(plen), Some(src), Some(dst)) = (be16(d, 4), v6_at(d, 8), v6_at(d, 24)) else {
        return Net::Truncated("ipv6 header");
    };
    let mut total = 40 + plen as usize;
    if total > d.len() && !cut {
        return Net::Truncated("ipv6 packet");
    }
    let whole = total <= d.len();
    total = total.min(d.len());
    let mut next = d[6];
    let ttl = d[7];
    let mut payload = &d[40..total];
    let mut ext = 0;
    let l4 = loop {
        match next {
            // Hop-by-hop, routing, destination options: length in 8-byte
            // units, not counting the first 8.
            0 | 43 | 60 if ext < MAX_EXT_HEADERS => {
                let (Some(&nh), Some(&units)) = (payload.first(), payload.get(1)) else {
                    break Some(L4::Truncated("ipv6 extension header"));
                };
                let len = (units as usize + 1) * 8;
                let Some(rest) = payload.get(len..) else {
                    break Some(L4::Truncated("ipv6 extension header"));
                };
                next = nh;
                payload = rest;
                ext += 1;
            }
            44 => break Some(L4::Fragment),
            _ => break None,
        }
    };
    let (src, dst) = (IpAddr::V6(src), IpAddr::V6(dst));
    let (l4, ok) = match l4 {
        Some(l4) => (l4, true),
        None => parse_l4(next, payload, src, dst),
    };
    Net::Ip(Ip {
        src,
        dst,
        ttl,
        protocol: next,
        checksums_ok: ok && whole,
        len: total,
        l4,
    })
}

/// Decodes the upper layer; returns it and whether its checksum (ICMP and
/// ICMPv6 only) is correct.
fn parse_l4<'a>(protocol: u8, p: &'a [u8], src: IpAddr, dst: IpAddr) -> (L4<'a>, bool) {
    match protocol {
        PROTO_ICMP if src.is_ipv4() => (parse_icmp(p, false), checksum(p) == 0),
        PROTO_ICMPV6 if src.is_ipv6() => (
            parse_icmp(p, true),
            l4_checksum(src, dst, PROTO_ICMPV6, p) == 0,
        ),
        PROTO_UDP => match (be16(p, 0), be16(p, 2), be16(p, 4)) {
            (Some(src_port), Some(dst_port), Some(len)) => (
                L4::Udp {
                    src_port,
                    dst_port,
                    len,
                },
                true,
            ),
            _ => (L4::Truncated("udp header"), true),
        },
        PROTO_TCP => match (be16(p, 0), be16(p, 2), p.get(13)) {
            (Some(src_port), Some(dst_port), Some(&flags)) if p.len() >= 20 => (
                L4::Tcp {
                    src_port,
                    dst_port,
                    flags,
                },
                true,
            ),
            _ => (L4::Truncated("tcp header"), true),
        },
        other => (L4::Other(other), true),
    }
}

fn parse_icmp(p: &[u8], v6: bool) -> L4<'_> {
    let (Some(&kind), Some(&code)) = (p.first(), p.get(1)) else {
        return L4::Truncated(if v6 { "icmp6 header" } else { "icmp header" });
    };
    if p.len() < 4 {
        return L4::Truncated(if v6 { "icmp6 header" } else { "icmp header" });
    }
    let (req, rep) = if v6 {
        (ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY)
    } else {
        (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY)
    };
    let echo = || match (be16(p, 4), be16(p, 6)) {
        (Some(id), Some(seq)) => Some(Echo {
            id,
            seq,
            data: &p[8..],
        }),
        _ => None,
    };
    match kind {
        k if (k == req || k == rep) && code == 0 => match echo() {
            Some(e) if k == req => L4::EchoRequest(e),
            Some(e) => L4::EchoReply(e),
            None => L4::Truncated("echo header"),
        },
        ICMPV6_NEIGHBOR_SOLICIT if v6 && code == 0 => match v6_at(p, 8) {
            Some(target) => L4::NeighborSolicit {
                target,
                source_mac: nd_option(&p[24..], ND_OPT_SOURCE_LLADDR),
            },
            None => L4::Truncated("neighbor solicitation"),
        },
        ICMPV6_NEIGHBOR_ADVERT if v6 && code == 0 => match v6_at(p, 8) {
            Some(target) => L4::NeighborAdvert {
                target,
                target_mac: nd_option(&p[24..], ND_OPT_TARGET_LLADDR),
                flags: p[4],
            },
            None => L4::Truncated("neighbor advertisement"),
        },
        ICMP_UNREACHABLE if !v6 && code == ICMP_FRAG_NEEDED && p.len() >= 8 => L4::TooBig {
            mtu: u32::from(u16::from_be_bytes([p[6], p[7]])),
            quoted: &p[8..],
        },
        ICMPV6_PACKET_TOO_BIG if v6 && code == 0 && p.len() >= 8 => L4::TooBig {
            mtu: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            quoted: &p[8..],
        },
        kind => L4::Icmp { kind, code },
    }
}

/// The first link-layer address option of type `want`.
fn nd_option(mut opts: &[u8], want: u8) -> Option<Mac> {
    while let (Some(&kind), Some(&units)) = (opts.first(), opts.get(1)) {
        let len = units as usize * 8;
        // A zero length is invalid (RFC 4861 4.6) and would loop forever.
        if len == 0 || len > opts.len() {
            return None;
        }
        if kind == want {
            return Mac::from_slice(&opts[2..len]);
        }
        opts = &opts[len..];
    }
    None
}

// ---------------------------------------------------------------------------
// One-line summaries

impl fmt::Display for Frame<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(e) = &self.eth {
            write!(f, "{} > {}, ", e.src, e.dst)?;
        }
        match &self.net {
            Net::Arp(a) => match a.op {
                ARP_REQUEST => write!(f, "arp who-has {} tell {}", a.target_ip, a.sender_ip),
                ARP_REPLY => write!(f, "arp {} is-at {}", a.sender_ip, a.sender_mac),
                op => write!(f, "arp op {op}"),
            },
            Net::Ip(ip) => write!(f, "{ip}"),
            Net::Other(t) => write!(f, "ethertype {t:#06x}"),
            Net::Truncated(what) => write!(f, "truncated {what}"),
        }
    }
}

impl fmt::Display for Ip<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (ipv, ttl, icmp) = if self.is_v6() {
            ("ipv6", "hlim", "icmp6")
        } else {
            ("ipv4", "ttl", "icmp")
        };
        write!(f, "{ipv} {} > {} {ttl} {}: ", self.src, self.dst, self.ttl)?;
        match &self.l4 {
            L4::EchoRequest(e) | L4::EchoReply(e) => {
                let what = if matches!(self.l4, L4::EchoRequest(_)) {
                    "request"
                } else {
                    "reply"
                };
                write!(
                    f,
                    "{icmp} echo {what} id {} seq {} len {}",
                    e.id,
                    e.seq,
                    e.data.len()
                )?;
            }
            L4::NeighborSolicit { target, source_mac } => {
                write!(f, "icmp6 neighbor solicitation who-has {target}")?;
                if let Some(m) = source_mac {
                    write!(f, " from {m}")?;
                }
            }
            L4::NeighborAdvert {
                target,
                target_mac,
                flags,
            } => {
                write!(f, "icmp6 neighbor advertisement {target}")?;
                if let Some(m) = target_mac {
                    write!(f, " is-at {m}")?;
                }
                for (bit, name) in [
                    (NA_FLAG_ROUTER, "router"),
                    (NA_FLAG_SOLICITED, "solicited"),
                    (NA_FLAG_OVERRIDE, "override"),
                ] {
                    if flags & bit != 0 {
                        write!(f, " {name}")?;
                    }
                }
            }
            L4::TooBig { mtu, quoted } => {
                let what = if self.is_v6() {
                    "packet too big"
                } else {
                    "fragmentation needed"
                };
                write!(f, "{icmp} {what} mtu {mtu}")?;
                if let Net::Ip(q) = parse_quoted(quoted) {
                    write!(f, " for {} > {}", q.src, q.dst)?;
                }
            }
            L4::Icmp { kind, code } => write!(f, "{icmp} type {kind} code {code}")?,
            L4::Udp {
                src_port,
                dst_port,
                len,
            } => write!(f, "udp {src_port} > {dst_port} len {len}")?,
            L4::Tcp {
                src_port,
                dst_port,
                flags,
            } => {
                write!(f, "tcp {src_port} > {dst_port} [")?;
                // tcpdump's letters, '.' for ACK.
                for (bit, c) in [
                    (0x02, 'S'),
                    (0x01, 'F'),
                    (0x04, 'R'),
                    (0x08, 'P'),
                    (0x10, '.'),
                    (0x20, 'U'),
                    (0x40, 'E'),
                    (0x80, 'W'),
                ] {
                    if flags & bit != 0 {
                        write!(f, "{c}")?;
                    }
                }
                write!(f, "]")?;
            }
            L4::Other(p) => write!(f, "proto {p}")?,
            L4::Fragment => write!(f, "fragment proto {}", self.protocol)?,
            L4::Truncated(what) => write!(f, "truncated {what}")?,
        }
        if !self.checksums_ok {
            write!(f, " [bad checksum]")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::build::*;

    const A4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
    const B4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
    const MAC_A: Mac = Mac([0x02, 0, 0, 0, 0, 0xaa]);
    const MAC_B: Mac = Mac([0x02, 0, 0, 0, 0, 0xbb]);

    fn a6() -> Ipv6Addr {
        "fd00::2".parse().unwrap()
    }
    fn b6() -> Ipv6Addr {
        "fd00::1".parse().unwrap()
    }

    /// A "too big" answer: the packet, its source and destination, the
    /// MTU it says and what it quotes.
    type TooBigAnswer = (Vec<u8>, IpAddr, IpAddr, u32, Vec<u8>);

    /// `pkt`'s "too big" answer for `mtu`, parsed back (None: no answer).
    fn too_big_of(pkt: &[u8], mtu: usize) -> Option<TooBigAnswer> {
        let v6 = pkt[0] >> 4 == 6;
        let quoted = pkt.len().min(too_big_quote(v6));
        let mut buf = vec![0u8; TOO_BIG_ROOM + quoted];
        buf[TOO_BIG_ROOM..].copy_from_slice(&pkt[..quoted]);
        let start = too_big_in_place(&mut buf, quoted, mtu)?;
        let out = buf[start..].to_vec();
        let Net::Ip(ip) = parse_ip(&out) else {
            panic!("not IP: {out:?}")
        };
        assert!(ip.checksums_ok, "{ip}");
        assert_eq!(ip.ttl, 64);
        let L4::TooBig { mtu, quoted } = ip.l4 else {
            panic!("not too big: {ip}")
        };
        Some((out.clone(), ip.src, ip.dst, mtu, quoted.to_vec()))
    }

    #[test]
    fn too_big_answers_quote_the_packet_and_say_the_mtu() {
        // IPv4 with DF (the builders set it): 576 bytes in all.
        let big = udp4(A4, B4, (1000, 2000), 64, &[7u8; 1472]);
        let (out, src, dst, mtu, quoted) = too_big_of(&big, 1450).expect("answered");
        assert_eq!(out.len(), 576);
        assert_eq!((src, dst, mtu), (ICMP_ERROR_SRC_V4.into(), A4.into(), 1450));
        assert_eq!(quoted, big[..548]);
        assert_eq!(out[20..22], [ICMP_UNREACHABLE, ICMP_FRAG_NEEDED]);
        let Net::Ip(ip) = parse_ip(&out) else {
            panic!()
        };
        let text = ip.to_string();
        assert!(
            text.contains("fragmentation needed mtu 1450 for 10.1.0.2 > 10.1.0.1"),
            "{text}"
        );
        // A short packet is quoted whole.
        let small = udp4(A4, B4, (1, 2), 64, &[1u8; 10]);
        let (out, .., quoted) = too_big_of(&small, 20).expect("answered");
        assert_eq!((out.len(), quoted), (28 + small.len(), small.clone()));
        // IPv6: 1280 bytes in all, from the link-local source.
        let e = Echo {
            id: 1,
            seq: 2,
            data: &[9u8; 1600],
        };
        let big6 = echo(a6().into(), b6().into(), false, 64, e).unwrap();
        let (out, src, dst, mtu, quoted) = too_big_of(&big6, 1430).expect("answered");
        assert_eq!(out.len(), 1280);
        assert_eq!(
            (src, dst, mtu),
            (ICMP_ERROR_SRC_V6.into(), a6().into(), 1430)
        );
        assert_eq!(quoted, big6[..1232]);
        assert_eq!(out[40], ICMPV6_PACKET_TOO_BIG);
        // The quoted echo can be matched to the request.
        let Net::Ip(q) = parse_quoted(&quoted) else {
            panic!()
        };
        assert!(
            matches!(q.l4, L4::EchoRequest(Echo { id: 1, seq: 2, .. })),
            "{q}"
        );
    }

    #[test]
    fn too_big_is_never_answered_where_rfcs_forbid_it() {
        let ok = udp4(A4, B4, (1, 2), 64, &[0u8; 100]);
        assert!(too_big_of(&ok, 50).is_some());
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut p = ok.clone();
            f(&mut p);
            too_big_of(&p, 50)
        };
        // IPv4 without DF: it could be fragmented; memifd drops it silently.
        assert!(with(&|p| p[6] &= !0x40).is_none());
        // A later fragment.
        assert!(with(&|p| p[7] = 1).is_none());
        // Sources that are not unicast.
        for src in [
            [0, 0, 0, 0],
            [224, 0, 0, 1],
            [255, 255, 255, 255],
            [127, 0, 0, 1],
        ] {
            assert!(
                with(&|p| p[12..16].copy_from_slice(&src)).is_none(),
                "{src:?}"
            );
        }
        // An ICMP error is not answered; an echo request is.
        let err = ipv4(
            A4,
            B4,
            PROTO_ICMP,
            64,
            &icmpv4(ICMP_UNREACHABLE, 1, &[0u8; 40]),
        );
        assert!(too_big_of(&err, 50).is_none());
        let req = echo(
            A4.into(),
            B4.into(),
            false,
            64,
            Echo {
                id: 1,
                seq: 1,
                data: &[0; 40],
            },
        );
        assert!(too_big_of(&req.unwrap(), 50).is_some());
        // IPv6: an ICMPv6 error, or a multicast source, is not answered.
        let err6 = ipv6(
            a6(),
            b6(),
            PROTO_ICMPV6,
            64,
            &icmpv6(a6(), b6(), 1, 0, &[0u8; 60]),
        );
        assert!(too_big_of(&err6, 50).is_none());
        let mut m6 = echo(
            a6().into(),
            b6().into(),
            false,
            64,
            Echo {
                id: 1,
                seq: 1,
                data: &[0; 40],
            },
        )
        .unwrap();
        assert!(too_big_of(&m6, 50).is_some());
        m6[8] = 0xff;
        assert!(too_big_of(&m6, 50).is_none());
        // Not IP at all, or cut short.
        assert!(too_big_of(&[0x45, 0, 0], 50).is_none());
        assert!(too_big_of(&[0x20; 60], 50).is_none());
    }

    #[test]
    fn icmpv4_echo_round_trip() {
        let data = b"0123456789";
        let pkt = echo(
            A4.into(),
            B4.into(),
            false,
            64,
            Echo {
                id: 7,
                seq: 3,
                data,
            },
        )
        .unwrap();
        assert_eq!(checksum(&pkt[..20]), 0);
        assert_eq!(checksum(&pkt[20..]), 0);
        let f = on_link(Mode::Ethernet, MAC_B, MAC_A, &pkt);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        let p = parse(Mode::Ethernet, &f);
        let Net::Ip(ip) = p.net else { panic!("{p:?}") };
        assert_eq!((ip.src, ip.dst, ip.ttl), (A4.into(), B4.into(), 64));
        assert!(ip.checksums_ok);
        assert_eq!(
            ip.l4,
            L4::EchoRequest(Echo {
                id: 7,
                seq: 3,
                data
            })
        );
        assert_eq!(
            p.to_string(),
            "02:00:00:00:00:aa > 02:00:00:00:00:bb, ipv4 10.1.0.2 > 10.1.0.1 ttl 64: icmp echo request id 7 seq 3 len 10"
        );
        // Ethernet padding after the IP packet is ignored.
        let mut padded = f.clone();
        padded.resize(f.len() + 20, 0);
        assert_eq!(parse(Mode::Ethernet, &padded), p);
    }

    #[test]
    fn icmpv6_echo_round_trip_ip_mode() {
        let pkt = echo(
            a6().into(),
            b6().into(),
            true,
            63,
            Echo {
                id: 1,
                seq: 2,
                data: &[9; 56],
            },
        )
        .unwrap();
        let p = parse(Mode::Ip, &pkt);
        assert_eq!(p.eth, None);
        let Net::Ip(ip) = p.net else { panic!("{p:?}") };
        assert!(ip.checksums_ok);
        assert!(matches!(ip.l4, L4::EchoReply(Echo { id: 1, seq: 2, data }) if data.len() == 56));
        assert_eq!(
            p.to_string(),
            "ipv6 fd00::2 > fd00::1 hlim 63: icmp6 echo reply id 1 seq 2 len 56"
        );
        // A flipped bit is reported.
        let mut bad = pkt.clone();
        bad[50] ^= 1;
        let Net::Ip(ip) = parse(Mode::Ip, &bad).net else {
            panic!()
        };
        assert!(!ip.checksums_ok);
        assert!(parse(Mode::Ip, &bad)
            .to_string()
            .ends_with("[bad checksum]"));
        assert!(echo(
            A4.into(),
            b6().into(),
            true,
            64,
            Echo {
                id: 0,
                seq: 0,
                data: &[]
            }
        )
        .is_none());
    }

    #[test]
    fn arp_round_trip() {
        let req = arp_request(MAC_A, A4, B4);
        assert_eq!(req.len(), 42);
        let p = parse(Mode::Ethernet, &req);
        assert_eq!(
            p.net,
            Net::Arp(Arp {
                op: ARP_REQUEST,
                sender_mac: MAC_A,
                sender_ip: A4,
                target_mac: Mac::ZERO,
                target_ip: B4
            })
        );
        assert_eq!(
            p.to_string(),
            "02:00:00:00:00:aa > ff:ff:ff:ff:ff:ff, arp who-has 10.1.0.1 tell 10.1.0.2"
        );
        let rep = arp_reply(MAC_B, B4, MAC_A, A4);
        assert_eq!(
            parse(Mode::Ethernet, &rep).to_string(),
            "02:00:00:00:00:bb > 02:00:00:00:00:aa, arp 10.1.0.1 is-at 02:00:00:00:00:bb"
        );
    }

    #[test]
    fn neighbor_discovery_round_trip() {
        let ns = neighbor_solicit(a6(), b6(), MAC_A);
        let p = parse(Mode::Ip, &ns);
        let Net::Ip(ip) = p.net else { panic!("{p:?}") };
        assert_eq!(ip.dst, "ff02::1:ff00:1".parse::<IpAddr>().unwrap());
        assert_eq!(ip.ttl, 255);
        assert!(ip.checksums_ok);
        assert_eq!(
            ip.l4,
            L4::NeighborSolicit {
                target: b6(),
                source_mac: Some(MAC_A)
            }
        );
        assert_eq!(
            ipv6_multicast_mac(solicited_node(b6())).to_string(),
            "33:33:ff:00:00:01"
        );

        let na = neighbor_advert(b6(), a6(), MAC_B, true);
        let p = parse(Mode::Ip, &na);
        assert_eq!(
            p.to_string(),
            "ipv6 fd00::1 > fd00::2 hlim 255: icmp6 neighbor advertisement fd00::1 is-at 02:00:00:00:00:bb solicited override"
        );
        let Net::Ip(ip) = p.net else { panic!() };
        assert!(ip.checksums_ok);
    }

    #[test]
    fn udp_tcp_and_other_summaries() {
        let mut udp = vec![0u8; 12];
        udp[0..2].copy_from_slice(&5000u16.to_be_bytes());
        udp[2..4].copy_from_slice(&53u16.to_be_bytes());
        udp[4..6].copy_from_slice(&12u16.to_be_bytes());
        let pkt = ipv4(A4, B4, PROTO_UDP, 64, &udp);
        assert_eq!(
            parse(Mode::Ip, &pkt).to_string(),
            "ipv4 10.1.0.2 > 10.1.0.1 ttl 64: udp 5000 > 53 len 12"
        );
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[13] = 0x12;
        let pkt = ipv6(a6(), b6(), PROTO_TCP, 64, &tcp);
        assert_eq!(
            parse(Mode::Ip, &pkt).to_string(),
            "ipv6 fd00::2 > fd00::1 hlim 64: tcp 40000 > 80 [S.]"
        );
        // The peer's own benchmark frames decode too.
        let f = crate::ctl::peer::udp_frame(Mode::Ethernet, 64, 1);
        assert_eq!(
            parse(Mode::Ethernet, &f).to_string(),
            "02:00:00:00:00:01 > 02:00:00:00:00:02, ipv4 198.18.0.1 > 198.18.0.2 ttl 64: udp 9 > 9 len 30"
        );
        let lldp = ethernet(MAC_B, MAC_A, 0x88cc, &[0; 30]);
        assert_eq!(
            parse(Mode::Ethernet, &lldp).to_string(),
            "02:00:00:00:00:aa > 02:00:00:00:00:bb, ethertype 0x88cc"
        );
        // Hop-by-hop options are skipped.
        let mut hbh = vec![PROTO_UDP, 0, 0, 0, 0, 0, 0, 0];
        hbh.extend_from_slice(&udp);
        let pkt = ipv6(a6(), b6(), 0, 1, &hbh);
        assert!(parse(Mode::Ip, &pkt)
            .to_string()
            .ends_with("udp 5000 > 53 len 12"));
    }

    /// A small deterministic generator for garbage.
    fn lcg(seed: &mut u64) -> u8 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 33) as u8
    }

    #[test]
    fn truncated_and_garbage_frames_never_panic() {
        let valid: Vec<(Mode, Vec<u8>)> = vec![
            (Mode::Ethernet, arp_request(MAC_A, A4, B4)),
            (
                Mode::Ethernet,
                on_link(
                    Mode::Ethernet,
                    MAC_B,
                    MAC_A,
                    &neighbor_solicit(a6(), b6(), MAC_A),
                ),
            ),
            (Mode::Ip, neighbor_advert(b6(), a6(), MAC_B, true)),
            (
                Mode::Ip,
                echo(
                    A4.into(),
                    B4.into(),
                    false,
                    64,
                    Echo {
                        id: 1,
                        seq: 1,
                        data: &[1; 30],
                    },
                )
                .unwrap(),
            ),
            (
                Mode::Ip,
                ipv6(a6(), b6(), 0, 1, &[PROTO_UDP, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3]),
            ),
        ];
        for (mode, f) in &valid {
            for n in 0..=f.len() {
                let p = parse(*mode, &f[..n]);
                let _ = p.to_string();
                if n < f.len() {
                    assert_ne!(p, parse(*mode, f), "a cut frame decodes as the whole");
                }
            }
        }
        let mut seed = 42;
        for len in 0..300usize {
            for round in 0..20 {
                let mut f: Vec<u8> = (0..len).map(|_| lcg(&mut seed)).collect();
                // Steer some garbage into the deeper decoders.
                if round % 4 == 1 && len > 14 {
                    f[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
                    f[14] = 0x60;
                }
                if round % 4 == 2 && len > 0 {
                    f[0] = 0x45;
                }
                if round % 4 == 3 && len > 7 {
                    f[0] = 0x60;
                    f[6] = PROTO_ICMPV6;
                    f[4] = 0;
                    f[5] = (len.saturating_sub(40)) as u8;
                }
                for mode in [Mode::Ethernet, Mode::Ip] {
                    let _ = parse(mode, &f).to_string();
                }
            }
        }
        // Zero-length ND options must not loop.
        let mut body = vec![0u8; 4];
        body.extend_from_slice(&b6().octets());
        body.extend_from_slice(&[ND_OPT_SOURCE_LLADDR, 0, 1, 2, 3, 4, 5, 6]);
        let m = icmpv6(a6(), b6(), ICMPV6_NEIGHBOR_SOLICIT, 0, &body);
        let pkt = ipv6(a6(), b6(), PROTO_ICMPV6, 255, &m);
        let Net::Ip(ip) = parse(Mode::Ip, &pkt).net else {
            panic!()
        };
        assert_eq!(
            ip.l4,
            L4::NeighborSolicit {
                target: b6(),
                source_mac: None
            }
        );
    }
}
