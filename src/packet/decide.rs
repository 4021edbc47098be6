//! What the forwarding path decides on: routing keys, the class of a
//! destination, the register-lane decision of the common case, the TTL and
//! hop-limit decrement of a routed hop, and the strict parsers of the ARP
//! requests and neighbour solicitations memifd answers (the answers are
//! built with [`super::build`]).
//!
//! Everything works on our own copies of the bytes (headers copied out of
//! shared memory once) and nothing here allocates.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::parse::Arp;
use super::{build, checksum, *};
use crate::mac::Mac;

/// A routing key: IPv4 addresses as v4-mapped IPv6, so one table holds
/// both families.
pub type IpKey = u128;

pub fn key_of(ip: IpAddr) -> IpKey {
    match ip {
        IpAddr::V4(a) => key_v4(a.octets()),
        IpAddr::V6(a) => u128::from_be_bytes(a.octets()),
    }
}

#[inline]
fn key_v4(o: [u8; 4]) -> IpKey {
    0xffff_0000_0000 | u32::from_be_bytes(o) as u128
}

/// What a frame's IP header says, as far as forwarding cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpClass {
    /// Unicast to `dst`: route it.
    Unicast(IpKey),
    /// Multicast, broadcast, or a source-only/loopback/link-local
    /// destination: never routed.
    Local,
    /// Not an IPv4 or IPv6 header.
    Malformed,
}

/// Classifies the IP packet starting at `p` (at least its first bytes).
pub fn classify(p: &[u8]) -> IpClass {
    match p.first().map(|b| b >> 4) {
        Some(4) if p.len() >= 20 && p[0] & 0x0f >= 5 => {
            dst_v4(u32::from_be_bytes([p[16], p[17], p[18], p[19]]))
        }
        Some(6) if p.len() >= 40 => {
            let mut d = [0u8; 16];
            d.copy_from_slice(&p[24..40]);
            dst_v6(u128::from_be_bytes(d))
        }
        _ => IpClass::Malformed,
    }
}

/// An IPv4 destination (as a big-endian number): routed or local.
#[inline]
fn dst_v4(d: u32) -> IpClass {
    let a = Ipv4Addr::from(d);
    if a.is_multicast() || a.is_broadcast() || a.is_unspecified() || a.is_loopback() {
        IpClass::Local
    } else {
        IpClass::Unicast(0xffff_0000_0000 | d as u128)
    }
}

/// An IPv6 destination (as a big-endian number): routed or local.
#[inline]
fn dst_v6(d: u128) -> IpClass {
    let a = Ipv6Addr::from(d);
    let link_local = d >> 118 == 0xfe80 >> 6;
    if a.is_multicast() || a.is_unspecified() || a.is_loopback() || link_local {
        IpClass::Local
    } else {
        IpClass::Unicast(d)
    }
}

/// The 16 bytes at `o` (at most 48) of a frame's first 64, held as four
/// little-endian lanes (see [`unicast_dst_in_lanes`]).
#[inline(always)]
fn window(l: &[u128; 4], o: usize) -> u128 {
    let (i, s) = (o / 16, 8 * (o % 16) as u32);
    if s == 0 {
        l[i]
    } else {
        (l[i] >> s) | (l[i + 1] << (128 - s))
    }
}

/// The forwarding decision of the common case, on a frame's first 64
/// bytes held in registers (four little-endian lanes, `len` of them the
/// frame's): an IPv4 or IPv6 packet (behind an ethernet header when
/// `ethernet`) with a unicast destination gives that destination, as
/// [`classify`] would. None for everything else, which the general path
/// decides: too short, another ethertype, a neighbour discovery message
/// (ICMPv6 behind ethernet), a local destination, a malformed header.
#[inline(always)]
pub fn unicast_dst_in_lanes(l: &[u128; 4], len: usize, ethernet: bool) -> Option<IpKey> {
    // One copy per mode, so that every window below is at a constant
    // offset: constant shifts instead of variable 128-bit ones.
    if ethernet {
        dst_in_lanes::<true>(l, len)
    } else {
        dst_in_lanes::<false>(l, len)
    }
}

/// [`unicast_dst_in_lanes`] for one mode.
#[inline(always)]
fn dst_in_lanes<const ETHERNET: bool>(l: &[u128; 4], len: usize) -> Option<IpKey> {
    let ethernet = ETHERNET;
    let ip = if ethernet { ETH_HLEN } else { 0 };
    let first = window(l, ip) as u8;
    // The first byte: version 4 with a header of at least 5 words (IHL),
    // the common case and one range compare, or version 6.
    let class = match first {
        0x45..=0x4f if len >= ip + 20 => {
            if ethernet && (window(l, 12) as u16).swap_bytes() != ETHERTYPE_IPV4 {
                return None;
            }
            dst_v4((window(l, ip + 16) as u32).swap_bytes())
        }
        0x60..=0x6f if len >= ip + 40 => {
            if ethernet
                && ((window(l, 12) as u16).swap_bytes() != ETHERTYPE_IPV6
                    || (window(l, ip + 6) as u8) == PROTO_ICMPV6)
            {
                return None;
            }
            dst_v6(window(l, ip + 24).swap_bytes())
        }
        _ => return None,
    };
    match class {
        IpClass::Unicast(k) => Some(k),
        _ => None,
    }
}

/// Decrements the TTL (IPv4, with the incremental checksum update of RFC
/// 1624) or hop limit (IPv6) of the packet at `p`. False, changing
/// nothing, when it would reach 0: the packet must be dropped.
pub fn decrement_ttl(p: &mut [u8]) -> bool {
    match p.first().map(|b| b >> 4) {
        Some(4) if p.len() >= 20 => {
            if p[8] <= 1 {
                return false;
            }
            // The TTL is the high byte of its 16-bit word (with the
            // protocol).
            let old = u16::from_be_bytes([p[8], p[9]]);
            p[8] -= 1;
            let new = u16::from_be_bytes([p[8], p[9]]);
            let sum = checksum::update(u16::from_be_bytes([p[10], p[11]]), old, new);
            p[10..12].copy_from_slice(&sum.to_be_bytes());
            true
        }
        Some(6) if p.len() >= 40 => {
            if p[7] <= 1 {
                return false;
            }
            p[7] -= 1;
            true
        }
        _ => false,
    }
}

/// An ARP request for `target`, from `sender`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRequest {
    pub sender_mac: [u8; 6],
    pub sender_ip: [u8; 4],
    pub target_ip: [u8; 4],
}

/// Parses an ethernet/IPv4 ARP request from the payload after the
/// ethernet header; `None` for anything else (replies, other hardware).
pub fn arp_request(p: &[u8]) -> Option<ArpRequest> {
    if p.len() < 28 || p[0..8] != [0, 1, 8, 0, 6, 4, 0, 1] {
        return None;
    }
    let mut r = ArpRequest {
        sender_mac: [0; 6],
        sender_ip: [0; 4],
        target_ip: [0; 4],
    };
    r.sender_mac.copy_from_slice(&p[8..14]);
    r.sender_ip.copy_from_slice(&p[14..18]);
    r.target_ip.copy_from_slice(&p[24..28]);
    Some(r)
}

/// A neighbour solicitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Solicit {
    pub src: [u8; 16],
    pub target: [u8; 16],
    /// The source link-layer address option, if present.
    pub source_mac: Option<[u8; 6]>,
}

/// The ICMPv6 type of an IPv6 packet without extension headers, if it is
/// ICMPv6.
pub fn icmpv6_type(ip: &[u8]) -> Option<u8> {
    (ip.len() > 40 && ip[0] >> 4 == 6 && ip[6] == PROTO_ICMPV6).then(|| ip[40])
}

/// Whether the IPv6 packet is neighbour discovery we consume (a
/// solicitation or an advertisement) rather than route.
pub fn is_nd(ip: &[u8]) -> bool {
    matches!(
        icmpv6_type(ip),
        Some(
            ICMPV6_ROUTER_SOLICIT
                | ICMPV6_ROUTER_ADVERT
                | ICMPV6_NEIGHBOR_SOLICIT
                | ICMPV6_NEIGHBOR_ADVERT
                | ICMPV6_REDIRECT
        )
    )
}

/// Parses a neighbour solicitation (the IPv6 packet `ip`, of which at
/// least the header, the solicitation and one option were copied).
/// Checks what RFC 4861 asks of a receiver that can be checked cheaply:
/// hop limit 255, code 0.
pub fn solicit(ip: &[u8]) -> Option<Solicit> {
    if icmpv6_type(ip) != Some(ICMPV6_NEIGHBOR_SOLICIT) || ip.len() < 64 {
        return None;
    }
    if ip[7] != 255 || ip[41] != 0 {
        return None;
    }
    let mut s = Solicit {
        src: [0; 16],
        target: [0; 16],
        source_mac: None,
    };
    s.src.copy_from_slice(&ip[8..24]);
    s.target.copy_from_slice(&ip[48..64]);
    let payload = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    // Option 1 (source link-layer address), length 1 (8 bytes).
    if payload >= 32 && ip.len() >= 72 && ip[64] == 1 && ip[65] == 1 {
        let mut m = [0u8; 6];
        m.copy_from_slice(&ip[66..72]);
        s.source_mac = Some(m);
    }
    Some(s)
}

/// Writes the ARP reply to `r` saying `r.target_ip` is at `mac`, as an
/// Ethernet frame to `to`; returns its length (42).
pub fn answer_arp(out: &mut [u8], mac: Mac, to: Mac, r: &ArpRequest) -> usize {
    let a = Arp {
        op: ARP_REPLY,
        sender_mac: mac,
        sender_ip: Ipv4Addr::from(r.target_ip),
        target_mac: Mac(r.sender_mac),
        target_ip: Ipv4Addr::from(r.sender_ip),
    };
    build::arp_frame_into(out, to, mac, &a)
}

/// Writes the solicited neighbour advertisement answering `s` (target
/// `s.target` is at `mac`, router flag set: we route) as an Ethernet frame
/// to `to`; returns its length (86).
pub fn answer_solicit(out: &mut [u8], mac: Mac, to: Mac, s: &Solicit) -> usize {
    build::eth_header_into(out, to, mac, ETHERTYPE_IPV6);
    ETH_HLEN
        + build::neighbor_advert_into(
            &mut out[ETH_HLEN..],
            Ipv6Addr::from(s.target),
            Ipv6Addr::from(s.src),
            mac,
            NA_FLAG_ROUTER | NA_FLAG_SOLICITED | NA_FLAG_OVERRIDE,
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memif::Mode;
    use crate::packet::{self, checksum::checksum, Net, L4};

    #[test]
    fn classify_families_and_specials() {
        let v4 = packet::ipv4(
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            17,
            64,
            &[0; 8],
        );
        assert_eq!(
            classify(&v4),
            IpClass::Unicast(key_of("10.0.0.2".parse().unwrap()))
        );
        let bc = packet::ipv4(
            "10.0.0.1".parse().unwrap(),
            Ipv4Addr::BROADCAST,
            17,
            64,
            &[0; 8],
        );
        assert_eq!(classify(&bc), IpClass::Local);
        let v6 = packet::ipv6(
            "fd00::1".parse().unwrap(),
            "fd00::2".parse().unwrap(),
            17,
            64,
            &[0; 8],
        );
        assert_eq!(
            classify(&v6),
            IpClass::Unicast(key_of("fd00::2".parse().unwrap()))
        );
        let ll = packet::ipv6(
            "fd00::1".parse().unwrap(),
            "fe80::2".parse().unwrap(),
            17,
            64,
            &[0; 8],
        );
        assert_eq!(classify(&ll), IpClass::Local);
        assert_eq!(classify(&[0x45; 10]), IpClass::Malformed);
        assert_eq!(classify(&[0x12; 60]), IpClass::Malformed);
        assert_ne!(
            key_of("10.0.0.2".parse().unwrap()),
            key_of("::a00:2".parse().unwrap())
        );
    }

    /// A frame's first 64 bytes as lanes, the bytes past its end set to
    /// `fill` (what the source buffer held before).
    fn lanes_of(frame: &[u8], fill: u8) -> [u128; 4] {
        let mut b = [fill; 64];
        let n = frame.len().min(64);
        b[..n].copy_from_slice(&frame[..n]);
        std::array::from_fn(|i| u128::from_le_bytes(b[16 * i..16 * i + 16].try_into().unwrap()))
    }

    /// What the general path decides for `frame`, as far as the fast one
    /// may take it: a unicast IP packet (behind the matching ethertype and
    /// not ICMPv6, on ethernet) to this key.
    fn general(frame: &[u8], ethernet: bool) -> Option<IpKey> {
        let ip = if ethernet {
            let et = u16::from_be_bytes(frame.get(12..14)?.try_into().unwrap());
            let ip = &frame[ETH_HLEN..];
            let v = ip.first()? >> 4;
            let ok = (et == ETHERTYPE_IPV4 && v == 4)
                || (et == ETHERTYPE_IPV6 && v == 6 && ip.get(6) != Some(&PROTO_ICMPV6));
            if !ok {
                return None;
            }
            ip
        } else {
            frame
        };
        match classify(ip) {
            IpClass::Unicast(k) => Some(k),
            _ => None,
        }
    }

    #[test]
    fn the_lanes_decision_is_the_general_one() {
        let (a4, b4) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let (a6, b6) = ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        let mut ips = vec![
            packet::ipv4(a4, b4, 17, 64, &[0; 30]),
            packet::ipv4(a4, Ipv4Addr::BROADCAST, 17, 64, &[0; 30]),
            packet::ipv4(a4, "224.0.0.5".parse().unwrap(), 17, 64, &[0; 30]),
            packet::ipv4(a4, "127.0.0.1".parse().unwrap(), 17, 64, &[0; 30]),
            packet::ipv4(a4, Ipv4Addr::UNSPECIFIED, 17, 64, &[0; 30]),
            packet::ipv6(a6, b6, 17, 64, &[0; 30]),
            packet::ipv6(a6, b6, PROTO_ICMPV6, 255, &[0; 30]),
            packet::ipv6(a6, "fe80::2".parse().unwrap(), 17, 64, &[0; 30]),
            packet::ipv6(a6, "febf::2".parse().unwrap(), 17, 64, &[0; 30]),
            packet::ipv6(a6, "fec0::2".parse().unwrap(), 17, 64, &[0; 30]),
            packet::ipv6(a6, "ff02::1".parse().unwrap(), 17, 64, &[0; 30]),
            packet::ipv6(a6, Ipv6Addr::LOCALHOST, 17, 64, &[0; 30]),
            packet::ipv6(a6, Ipv6Addr::UNSPECIFIED, 17, 64, &[0; 30]),
        ];
        let mut bad_ihl = ips[0].clone();
        bad_ihl[0] = 0x44;
        ips.push(bad_ihl);
        let mac = Mac([2, 0, 0, 0, 0, 1]);
        let mut frames: Vec<(Vec<u8>, bool)> = Vec::new();
        for ip in &ips {
            let et = if ip[0] >> 4 == 6 {
                ETHERTYPE_IPV6
            } else {
                ETHERTYPE_IPV4
            };
            frames.push((ip.clone(), false));
            frames.push((packet::ethernet(mac, mac, et, ip), true));
            // The ethertype of the other family.
            frames.push((packet::ethernet(mac, mac, et ^ 0x8ed5, ip), true));
            frames.push((packet::ethernet(mac, mac, ETHERTYPE_ARP, ip), true));
        }
        // Every frame cut short (the bytes past its end a copy of the
        // whole: they must not count), then pseudo-random byte flips.
        let mut seed = 0x9e37_79b9u32;
        let mut cases = Vec::new();
        for (f, eth) in &frames {
            for len in 0..=f.len().min(64) {
                cases.push((f[..len].to_vec(), *eth, f.clone()));
            }
            for _ in 0..200 {
                let mut g = f.clone();
                for _ in 0..3 {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    let i = (seed >> 8) as usize % g.len().min(64);
                    g[i] ^= (seed >> 24) as u8 | 1;
                }
                cases.push((g, *eth, Vec::new()));
            }
        }
        let mut fast = 0;
        for (f, eth, past) in &cases {
            let mut l = lanes_of(past, 0);
            let real = lanes_of(f, 0);
            // The frame's own bytes over whatever the buffer held.
            let n = f.len().min(64);
            for (i, lane) in l.iter_mut().enumerate() {
                let keep = n.saturating_sub(16 * i).min(16) as u32;
                let m = if keep == 16 {
                    !0u128
                } else {
                    (1u128 << (8 * keep)) - 1
                };
                *lane = (*lane & !m) | (real[i] & m);
            }
            let got = unicast_dst_in_lanes(&l, f.len(), *eth);
            assert_eq!(got, general(f, *eth), "frame {f:02x?} (ethernet {eth})");
            fast += got.is_some() as usize;
        }
        // The common cases do take the fast way.
        assert!(fast > 100, "only {fast} frames decided in lanes");
        assert_eq!(
            unicast_dst_in_lanes(&lanes_of(&frames[1].0, 0), frames[1].0.len(), true),
            Some(key_of(b4.into()))
        );
        assert_eq!(
            unicast_dst_in_lanes(&lanes_of(&ips[5], 0), ips[5].len(), false),
            Some(key_of(b6.into()))
        );
    }

    #[test]
    fn ttl_decrement_keeps_the_checksum_valid() {
        for ttl in [2u8, 64, 255] {
            let mut p = packet::ipv4(
                "10.0.0.1".parse().unwrap(),
                "10.9.8.7".parse().unwrap(),
                1,
                ttl,
                &[1, 2, 3],
            );
            assert!(decrement_ttl(&mut p));
            assert_eq!(p[8], ttl - 1);
            assert_eq!(checksum(&p[..20]), 0, "ttl {ttl}");
        }
        let mut p = packet::ipv4(
            "10.0.0.1".parse().unwrap(),
            "10.9.8.7".parse().unwrap(),
            1,
            1,
            &[],
        );
        assert!(!decrement_ttl(&mut p));
        assert_eq!(p[8], 1);
        let mut p6 = packet::ipv6(
            "fd00::1".parse().unwrap(),
            "fd00::2".parse().unwrap(),
            17,
            9,
            &[0; 8],
        );
        assert!(decrement_ttl(&mut p6));
        assert_eq!(p6[7], 8);
        p6[7] = 1;
        assert!(!decrement_ttl(&mut p6));
    }

    #[test]
    fn arp_answer_parses_as_a_reply() {
        let req = packet::arp_request(
            Mac([2, 0, 0, 0, 0, 1]),
            "10.0.0.2".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
        );
        let r = arp_request(&req[ETH_HLEN..]).expect("request");
        assert_eq!(r.target_ip, [10, 0, 0, 1]);
        let mac = [2, 0xfe, 0, 0, 0, 9];
        let mut out = [0u8; 128];
        let n = answer_arp(&mut out, Mac(mac), Mac(r.sender_mac), &r);
        let f = packet::parse(Mode::Ethernet, &out[..n]);
        match f.net {
            Net::Arp(a) => {
                assert_eq!(a.op, packet::ARP_REPLY);
                assert_eq!(a.sender_mac, Mac(mac));
                assert_eq!(a.sender_ip, Ipv4Addr::new(10, 0, 0, 1));
                assert_eq!(a.target_ip, Ipv4Addr::new(10, 0, 0, 2));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(f.eth.unwrap().dst, Mac([2, 0, 0, 0, 0, 1]));
        // A reply is not a request.
        assert!(arp_request(&out[ETH_HLEN..n]).is_none());
    }

    #[test]
    fn neighbor_advert_answers_a_solicitation() {
        let src: Ipv6Addr = "fd00::2".parse().unwrap();
        let target: Ipv6Addr = "fd00::1".parse().unwrap();
        let ns = packet::neighbor_solicit(src, target, Mac([2, 0, 0, 0, 0, 1]));
        let s = solicit(&ns).expect("solicitation");
        assert_eq!(s.target, target.octets());
        assert_eq!(s.source_mac, Some([2, 0, 0, 0, 0, 1]));
        assert!(is_nd(&ns));
        let mac = [2, 0xfe, 0, 0, 0, 9];
        let mut out = [0u8; 128];
        let n = answer_solicit(&mut out, Mac(mac), Mac(s.source_mac.unwrap()), &s);
        let f = packet::parse(Mode::Ethernet, &out[..n]);
        match f.net {
            Net::Ip(ip) => {
                assert!(ip.checksums_ok);
                assert_eq!(ip.dst, IpAddr::V6(src));
                match ip.l4 {
                    L4::NeighborAdvert {
                        target: t,
                        target_mac,
                        ..
                    } => {
                        assert_eq!(t, target);
                        assert_eq!(target_mac, Some(Mac(mac)));
                    }
                    other => panic!("{other:?}"),
                }
            }
            other => panic!("{other:?}"),
        }
    }
}
