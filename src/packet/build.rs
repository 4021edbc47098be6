//! Builders. The core ones write into a caller's buffer and return the
//! length written (the dataplane answers ARP and neighbour solicitations
//! with them in place, and encapsulates with them, without allocating);
//! the `Vec` ones wrap them for `memifctl` and tests.
//!
//! Every `_into` function panics when `out` is shorter than what it
//! writes (its doc says how long): callers size their buffers once.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::checksum::{checksum, l4_checksum};
use super::parse::{Arp, Echo};
use super::*;
use crate::mac::Mac;
use crate::memif::Mode;

/// Writes an Ethernet II header (14 bytes).
#[inline]
pub fn eth_header_into(out: &mut [u8], dst: Mac, src: Mac, ethertype: u16) -> usize {
    out[..6].copy_from_slice(&dst.0);
    out[6..12].copy_from_slice(&src.0);
    out[12..14].copy_from_slice(&ethertype.to_be_bytes());
    ETH_HLEN
}

/// Writes an ARP packet for IPv4 over Ethernet (28 bytes).
pub fn arp_into(out: &mut [u8], a: &Arp) -> usize {
    out[0..2].copy_from_slice(&1u16.to_be_bytes());
    out[2..4].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    out[4] = 6;
    out[5] = 4;
    out[6..8].copy_from_slice(&a.op.to_be_bytes());
    out[8..14].copy_from_slice(&a.sender_mac.0);
    out[14..18].copy_from_slice(&a.sender_ip.octets());
    out[18..24].copy_from_slice(&a.target_mac.0);
    out[24..28].copy_from_slice(&a.target_ip.octets());
    ARP_LEN
}

/// Writes an ARP frame from `src` to `dst` (42 bytes).
pub fn arp_frame_into(out: &mut [u8], dst: Mac, src: Mac, a: &Arp) -> usize {
    eth_header_into(out, dst, src, ETHERTYPE_ARP);
    ETH_HLEN + arp_into(&mut out[ETH_HLEN..], a)
}

/// Writes an IPv4 header without options, DF set, with its checksum, for
/// a payload of `payload_len` bytes (20 bytes).
pub fn ipv4_header_into(
    out: &mut [u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    ttl: u8,
    payload_len: usize,
) -> usize {
    let total = (IPV4_HLEN + payload_len).min(u16::MAX as usize) as u16;
    let h = &mut out[..IPV4_HLEN];
    h[0] = 0x45;
    h[1] = 0;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..8].copy_from_slice(&[0, 0, 0x40, 0]);
    h[8] = ttl;
    h[9] = protocol;
    h[10..12].fill(0);
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let c = checksum(h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    IPV4_HLEN
}

/// Writes an IPv6 header (no extension headers) for a payload of
/// `payload_len` bytes (40 bytes).
pub fn ipv6_header_into(
    out: &mut [u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next_header: u8,
    hop_limit: u8,
    payload_len: usize,
) -> usize {
    let plen = payload_len.min(u16::MAX as usize) as u16;
    let h = &mut out[..IPV6_HLEN];
    h[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    h[4..6].copy_from_slice(&plen.to_be_bytes());
    h[6] = next_header;
    h[7] = hop_limit;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    IPV6_HLEN
}

/// Writes a neighbour advertisement as a whole IPv6 packet (72 bytes):
/// `target` is at `mac`, sent from `target` to `dst`, hop limit 255, with
/// `flags` ([`NA_FLAG_ROUTER`], [`NA_FLAG_SOLICITED`],
/// [`NA_FLAG_OVERRIDE`]) and the target link-layer address option.
pub fn neighbor_advert_into(
    out: &mut [u8],
    target: Ipv6Addr,
    dst: Ipv6Addr,
    mac: Mac,
    flags: u8,
) -> usize {
    const BODY: usize = 32;
    ipv6_header_into(out, target, dst, PROTO_ICMPV6, 255, BODY);
    let m = &mut out[IPV6_HLEN..IPV6_HLEN + BODY];
    m[0] = ICMPV6_NEIGHBOR_ADVERT;
    m[1] = 0;
    m[2..4].fill(0);
    m[4..8].copy_from_slice(&[flags, 0, 0, 0]);
    m[8..24].copy_from_slice(&target.octets());
    m[24] = ND_OPT_TARGET_LLADDR;
    m[25] = 1;
    m[26..32].copy_from_slice(&mac.0);
    let c = l4_checksum(target.into(), dst.into(), PROTO_ICMPV6, m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    IPV6_HLEN + BODY
}

/// The source of memifd's ICMP errors: link-local addresses, as the only
/// link such an error crosses is the pod's memif.
pub const ICMP_ERROR_SRC_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
pub const ICMP_ERROR_SRC_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// Room [`too_big_in_place`] needs in front of the quoted packet: the
/// longer IP header and the ICMP header (48 bytes).
pub const TOO_BIG_ROOM: usize = IPV6_HLEN + 8;

/// How much of an offending packet an ICMP error quotes at most: 576 bytes
/// in all over IPv4 (RFC 1812 4.3.2.3), the IPv6 minimum MTU, 1280 bytes,
/// over IPv6 (RFC 4443 2.4).
pub fn too_big_quote(v6: bool) -> usize {
    if v6 {
        1280 - TOO_BIG_ROOM
    } else {
        576 - IPV4_HLEN - 8
    }
}

/// Whether an ICMP error may answer the packet that starts `p` (RFC 1122
/// 3.2.2, RFC 4443 2.4 e): a unicast, non-loopback source; over IPv4,
/// only the first fragment; never an ICMP error itself. The IPv4 packet
/// must also forbid fragmentation (DF): "fragmentation needed" answers
/// only those.
fn may_answer(p: &[u8]) -> bool {
    match p.first().map(|b| b >> 4) {
        Some(4) if p.len() >= IPV4_HLEN => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
            let df = p[6] & 0x40 != 0;
            let first_fragment = u16::from_be_bytes([p[6] & 0x1f, p[7]]) == 0;
            let icmp_error =
                p[9] == PROTO_ICMP && p.get(ihl).is_none_or(|&t| matches!(t, 3 | 4 | 5 | 11 | 12));
            ihl >= IPV4_HLEN
                && df
                && first_fragment
                && !icmp_error
                && !(src.is_unspecified()
                    || src.is_multicast()
                    || src.is_broadcast()
                    || src.is_loopback())
        }
        Some(6) if p.len() >= IPV6_HLEN => {
            let src = Ipv6Addr::from(<[u8; 16]>::try_from(&p[8..24]).expect("16 bytes"));
            let icmp_error = p[6] == PROTO_ICMPV6 && p.get(IPV6_HLEN).is_none_or(|&t| t < 128);
            let unicast = !(src.is_unspecified() || src.is_multicast() || src.is_loopback());
            unicast && !icmp_error
        }
        _ => false,
    }
}

/// Turns the start of a packet too long for the next hop into the ICMP
/// error that tells its sender `mtu`, in place: the packet's first
/// `quoted` bytes are at `buf[TOO_BIG_ROOM..]` ([`too_big_quote`] says how
/// many to quote), and the error's IP and ICMP headers are written just
/// before them: ICMP "fragmentation needed" (type 3 code 4, RFC 1191) for
/// IPv4, ICMPv6 "packet too big" (type 2, RFC 4443) for IPv6, from
/// [`ICMP_ERROR_SRC_V4`] / [`ICMP_ERROR_SRC_V6`] to the packet's source,
/// TTL 64. Returns where the error starts in `buf` (it ends at
/// `TOO_BIG_ROOM + quoted`), or None when no error may answer this packet
/// (see `may_answer`: IPv4 without DF, a later fragment, an ICMP error, a
/// source that is not unicast).
pub fn too_big_in_place(buf: &mut [u8], quoted: usize, mtu: usize) -> Option<usize> {
    let end = TOO_BIG_ROOM + quoted;
    let p = &buf[TOO_BIG_ROOM..end];
    if !may_answer(p) {
        return None;
    }
    let icmp_len = 8 + quoted;
    if p[0] >> 4 == 4 {
        let dst = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
        let at = TOO_BIG_ROOM - 8;
        let mtu = mtu.min(u16::MAX as usize) as u16;
        buf[at..at + 8].copy_from_slice(&[ICMP_UNREACHABLE, ICMP_FRAG_NEEDED, 0, 0, 0, 0, 0, 0]);
        buf[at + 6..at + 8].copy_from_slice(&mtu.to_be_bytes());
        let c = checksum(&buf[at..end]);
        buf[at + 2..at + 4].copy_from_slice(&c.to_be_bytes());
        let start = at - IPV4_HLEN;
        ipv4_header_into(
            &mut buf[start..],
            ICMP_ERROR_SRC_V4,
            dst,
            PROTO_ICMP,
            64,
            icmp_len,
        );
        Some(start)
    } else {
        let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&p[8..24]).expect("16 bytes"));
        let at = IPV6_HLEN;
        let mtu = mtu.min(u32::MAX as usize) as u32;
        buf[at..at + 4].copy_from_slice(&[ICMPV6_PACKET_TOO_BIG, 0, 0, 0]);
        buf[at + 4..at + 8].copy_from_slice(&mtu.to_be_bytes());
        let c = l4_checksum(
            ICMP_ERROR_SRC_V6.into(),
            dst.into(),
            PROTO_ICMPV6,
            &buf[at..end],
        );
        buf[at + 2..at + 4].copy_from_slice(&c.to_be_bytes());
        ipv6_header_into(buf, ICMP_ERROR_SRC_V6, dst, PROTO_ICMPV6, 64, icmp_len);
        Some(0)
    }
}

/// Writes a UDP header (8 bytes) for `payload_len` bytes of payload; the
/// checksum is 0 (none, as RFC 7348 recommends for VXLAN over IPv4; over
/// IPv6 the caller fills it, see [`udp_checksum_v6`]).
pub fn udp_header_into(out: &mut [u8], src_port: u16, dst_port: u16, payload_len: usize) -> usize {
    let len = (UDP_HLEN + payload_len).min(u16::MAX as usize) as u16;
    out[0..2].copy_from_slice(&src_port.to_be_bytes());
    out[2..4].copy_from_slice(&dst_port.to_be_bytes());
    out[4..6].copy_from_slice(&len.to_be_bytes());
    out[6..8].fill(0);
    UDP_HLEN
}

/// The UDP checksum of `segment` (header with a zero checksum field, then
/// the payload) between IPv6 addresses; 0 is sent as 0xffff (RFC 8200).
pub fn udp_checksum_v6(src: Ipv6Addr, dst: Ipv6Addr, segment: &[u8]) -> u16 {
    match l4_checksum(src.into(), dst.into(), PROTO_UDP, segment) {
        0 => 0xffff,
        c => c,
    }
}

// ---------------------------------------------------------------------------
// Vec builders (memifctl, tests)

/// An Ethernet II frame.
pub fn ethernet(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; ETH_HLEN + payload.len()];
    eth_header_into(&mut f, dst, src, ethertype);
    f[ETH_HLEN..].copy_from_slice(payload);
    f
}

/// An ARP packet (IPv4 over Ethernet), without the Ethernet header.
pub fn arp(
    op: u16,
    sender_mac: Mac,
    sender_ip: Ipv4Addr,
    target_mac: Mac,
    target_ip: Ipv4Addr,
) -> Vec<u8> {
    let mut p = vec![0u8; ARP_LEN];
    arp_into(
        &mut p,
        &Arp {
            op,
            sender_mac,
            sender_ip,
            target_mac,
            target_ip,
        },
    );
    p
}

/// A broadcast ARP request frame: who has `target`, tell `ip`.
pub fn arp_request(mac: Mac, ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    ethernet(
        Mac::BROADCAST,
        mac,
        ETHERTYPE_ARP,
        &arp(ARP_REQUEST, mac, ip, Mac::ZERO, target),
    )
}

/// A unicast ARP reply frame: `ip` is at `mac`, to the asker.
pub fn arp_reply(mac: Mac, ip: Ipv4Addr, to_mac: Mac, to_ip: Ipv4Addr) -> Vec<u8> {
    ethernet(
        to_mac,
        mac,
        ETHERTYPE_ARP,
        &arp(ARP_REPLY, mac, ip, to_mac, to_ip),
    )
}

/// An IPv4 packet with a correct header checksum (no options, DF set).
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let n = payload.len().min(u16::MAX as usize - IPV4_HLEN);
    let mut p = vec![0u8; IPV4_HLEN + n];
    ipv4_header_into(&mut p, src, dst, protocol, ttl, n);
    p[IPV4_HLEN..].copy_from_slice(&payload[..n]);
    p
}

/// An IPv6 packet (no extension headers).
pub fn ipv6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next_header: u8,
    hop_limit: u8,
    payload: &[u8],
) -> Vec<u8> {
    let n = payload.len().min(u16::MAX as usize);
    let mut p = vec![0u8; IPV6_HLEN + n];
    ipv6_header_into(&mut p, src, dst, next_header, hop_limit, n);
    p[IPV6_HLEN..].copy_from_slice(&payload[..n]);
    p
}

/// An ICMP (v4) message: type, code, checksum, then `rest`.
pub fn icmpv4(kind: u8, code: u8, rest: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, code, 0, 0];
    m.extend_from_slice(rest);
    let c = checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// An ICMPv6 message with its pseudo-header checksum.
pub fn icmpv6(src: Ipv6Addr, dst: Ipv6Addr, kind: u8, code: u8, rest: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, code, 0, 0];
    m.extend_from_slice(rest);
    let c = l4_checksum(src.into(), dst.into(), PROTO_ICMPV6, &m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// A UDP datagram (checksum 0: none) as a whole IPv4 packet.
pub fn udp4(src: Ipv4Addr, dst: Ipv4Addr, ports: (u16, u16), ttl: u8, payload: &[u8]) -> Vec<u8> {
    let mut d = vec![0u8; UDP_HLEN + payload.len()];
    udp_header_into(&mut d, ports.0, ports.1, payload.len());
    d[UDP_HLEN..].copy_from_slice(payload);
    ipv4(src, dst, PROTO_UDP, ttl, &d)
}

fn echo_body(id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + data.len());
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(data);
    b
}

/// An ICMP or ICMPv6 echo request or reply as a whole IP packet; `None`
/// when `src` and `dst` are of different families.
pub fn echo(src: IpAddr, dst: IpAddr, reply: bool, ttl: u8, e: Echo<'_>) -> Option<Vec<u8>> {
    let body = echo_body(e.id, e.seq, e.data);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let kind = if reply {
                ICMP_ECHO_REPLY
            } else {
                ICMP_ECHO_REQUEST
            };
            Some(ipv4(s, d, PROTO_ICMP, ttl, &icmpv4(kind, 0, &body)))
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let kind = if reply {
                ICMPV6_ECHO_REPLY
            } else {
                ICMPV6_ECHO_REQUEST
            };
            Some(ipv6(s, d, PROTO_ICMPV6, ttl, &icmpv6(s, d, kind, 0, &body)))
        }
        _ => None,
    }
}

/// The solicited-node multicast address of `a` (`ff02::1:ffXX:XXXX`).
pub fn solicited_node(a: Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

/// The Ethernet address an IPv6 multicast group maps to (`33:33:` + the
/// last 32 bits).
pub fn ipv6_multicast_mac(a: Ipv6Addr) -> Mac {
    let o = a.octets();
    Mac([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// A neighbour solicitation for `target` from `src` (whose link address is
/// `mac`), as an IPv6 packet to the solicited-node group (hop limit 255).
pub fn neighbor_solicit(src: Ipv6Addr, target: Ipv6Addr, mac: Mac) -> Vec<u8> {
    let dst = solicited_node(target);
    let mut body = vec![0u8; 4];
    body.extend_from_slice(&target.octets());
    body.extend_from_slice(&[ND_OPT_SOURCE_LLADDR, 1]);
    body.extend_from_slice(&mac.0);
    let m = icmpv6(src, dst, ICMPV6_NEIGHBOR_SOLICIT, 0, &body);
    ipv6(src, dst, PROTO_ICMPV6, 255, &m)
}

/// A neighbour advertisement: `target` is at `mac`, sent from `target` to
/// `dst` (hop limit 255, override set, solicited as given).
pub fn neighbor_advert(target: Ipv6Addr, dst: Ipv6Addr, mac: Mac, solicited: bool) -> Vec<u8> {
    let flags = NA_FLAG_OVERRIDE | if solicited { NA_FLAG_SOLICITED } else { 0 };
    let mut p = vec![0u8; 72];
    neighbor_advert_into(&mut p, target, dst, mac, flags);
    p
}

/// Puts an IP packet on the link of a memif in `mode`: behind an Ethernet
/// header (ethertype from the IP version) or bare in ip mode.
pub fn on_link(mode: Mode, dst: Mac, src: Mac, ip_packet: &[u8]) -> Vec<u8> {
    if mode != Mode::Ethernet {
        return ip_packet.to_vec();
    }
    let et = ethertype_of(ip_packet.first().copied().unwrap_or(0));
    ethernet(dst, src, et, ip_packet)
}
