//! Packet work of the forwarding path: parsing the few header fields a
//! decision needs, TTL/hop-limit decrement, link headers, and the ARP and
//! neighbour-advertisement answers memifd gives an ethernet memif.
//!
//! Everything works on our own copies of the bytes (headers copied out of
//! shared memory once) and writes into caller-provided buffers: nothing
//! here allocates.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const ETH_HLEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const PROTO_ICMPV6: u8 = 58;
const ICMPV6_NEIGHBOR_SOLICIT: u8 = 135;
const ICMPV6_NEIGHBOR_ADVERT: u8 = 136;
/// Bytes of a frame copied out of shared memory to decide where it goes:
/// ethernet + IPv6 header + the neighbour solicitation (24 bytes) and its
/// source link-layer option (8).
pub const PEEK: usize = ETH_HLEN + 40 + 32;
pub const BROADCAST: [u8; 6] = [0xff; 6];

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
            let d = [p[16], p[17], p[18], p[19]];
            let a = Ipv4Addr::from(d);
            if a.is_multicast() || a.is_broadcast() || a.is_unspecified() || a.is_loopback() {
                IpClass::Local
            } else {
                IpClass::Unicast(key_v4(d))
            }
        }
        Some(6) if p.len() >= 40 => {
            let mut d = [0u8; 16];
            d.copy_from_slice(&p[24..40]);
            let a = Ipv6Addr::from(d);
            let link_local = d[0] == 0xfe && d[1] & 0xc0 == 0x80;
            if a.is_multicast() || a.is_unspecified() || a.is_loopback() || link_local {
                IpClass::Local
            } else {
                IpClass::Unicast(u128::from_be_bytes(d))
            }
        }
        _ => IpClass::Malformed,
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
            p[8] -= 1;
            // The TTL is the high byte of its 16-bit word: the sum grows
            // by 0x0100 in one's complement.
            let sum = u16::from_be_bytes([p[10], p[11]]) as u32 + 0x0100;
            let sum = (sum + (sum >> 16)) as u16;
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

/// The ethertype of an IP packet by its version nibble.
#[inline]
pub fn ethertype_of(ip_first_byte: u8) -> u16 {
    if ip_first_byte >> 4 == 6 {
        ETHERTYPE_IPV6
    } else {
        ETHERTYPE_IPV4
    }
}

/// Writes an ethernet header into `h`.
#[inline]
pub fn eth_header(h: &mut [u8; ETH_HLEN], dst: [u8; 6], src: [u8; 6], ethertype: u16) {
    h[..6].copy_from_slice(&dst);
    h[6..12].copy_from_slice(&src);
    h[12..].copy_from_slice(&ethertype.to_be_bytes());
}

#[inline]
pub fn is_unicast_mac(m: &[u8]) -> bool {
    m.first().is_some_and(|b| b & 1 == 0) && m.iter().any(|&b| b != 0)
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

/// Writes the ARP reply to `r` saying `r.target_ip` is at `mac`, as an
/// ethernet frame to `to`; returns its length (42).
pub fn arp_reply(out: &mut [u8], mac: [u8; 6], to: [u8; 6], r: &ArpRequest) -> usize {
    let mut h = [0u8; ETH_HLEN];
    eth_header(&mut h, to, mac, ETHERTYPE_ARP);
    out[..ETH_HLEN].copy_from_slice(&h);
    let a = &mut out[ETH_HLEN..ETH_HLEN + 28];
    a[0..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
    a[8..14].copy_from_slice(&mac);
    a[14..18].copy_from_slice(&r.target_ip);
    a[18..24].copy_from_slice(&r.sender_mac);
    a[24..28].copy_from_slice(&r.sender_ip);
    ETH_HLEN + 28
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
        Some(ICMPV6_NEIGHBOR_SOLICIT | ICMPV6_NEIGHBOR_ADVERT) | Some(133..=134) | Some(137)
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

/// Internet checksum over `parts` (concatenated), folded and inverted.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for p in parts {
        for &b in p.iter() {
            match odd.take() {
                Some(hi) => sum += u16::from_be_bytes([hi, b]) as u32,
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += (hi as u32) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Writes a solicited neighbour advertisement answering `s` (target
/// `s.target` is at `mac`, router flag set: we route) as an ethernet frame
/// to `to`; returns its length (86).
pub fn neighbor_advert(out: &mut [u8], mac: [u8; 6], to: [u8; 6], s: &Solicit) -> usize {
    let mut h = [0u8; ETH_HLEN];
    eth_header(&mut h, to, mac, ETHERTYPE_IPV6);
    out[..ETH_HLEN].copy_from_slice(&h);
    let ip = &mut out[ETH_HLEN..ETH_HLEN + 72];
    ip[0] = 0x60;
    ip[1..4].fill(0);
    ip[4..6].copy_from_slice(&32u16.to_be_bytes());
    ip[6] = PROTO_ICMPV6;
    ip[7] = 255;
    ip[8..24].copy_from_slice(&s.target);
    ip[24..40].copy_from_slice(&s.src);
    let icmp = &mut ip[40..72];
    icmp[0] = ICMPV6_NEIGHBOR_ADVERT;
    icmp[1] = 0;
    icmp[2..4].fill(0);
    // Router, Solicited, Override.
    icmp[4..8].copy_from_slice(&[0xe0, 0, 0, 0]);
    icmp[8..24].copy_from_slice(&s.target);
    // Target link-layer address option.
    icmp[24] = 2;
    icmp[25] = 1;
    icmp[26..32].copy_from_slice(&mac);
    let mut pseudo = [0u8; 40];
    pseudo[..16].copy_from_slice(&s.target);
    pseudo[16..32].copy_from_slice(&s.src);
    pseudo[32..36].copy_from_slice(&32u32.to_be_bytes());
    pseudo[39] = PROTO_ICMPV6;
    let c = checksum(&[&pseudo, &ip[40..72]]);
    ip[42..44].copy_from_slice(&c.to_be_bytes());
    ETH_HLEN + 72
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::packet::{self, Mac, Net, L4};
    use crate::memif::Mode;

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
            assert_eq!(checksum(&[&p[..20]]), 0, "ttl {ttl}");
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
        let n = arp_reply(&mut out, mac, r.sender_mac, &r);
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
        let n = neighbor_advert(&mut out, mac, s.source_mac.unwrap(), &s);
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
