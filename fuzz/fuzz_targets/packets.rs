//! The dataplane's packet code (`packet`): the tolerant parser memifctl
//! shows frames with, the forwarding decisions (the classification, the
//! register-lane fast path, the TTL decrement, the strict ARP and
//! neighbour-solicitation parsers and their answers), the VXLAN header and
//! flow hash, and the builders.
//!
//! Input: any bytes. All of them go through every parser and decision as
//! a frame (both memif modes) and as a UDP payload; the first byte also
//! picks a builder, which reads its fields from the rest, and what it
//! builds must parse back to those fields.
//!
//! Checked besides no panic: the lane decision agrees with `classify` on
//! every frame (whatever bytes follow the frame in the lanes); a TTL
//! decrement keeps a correct IPv4 header checksum correct; the answers to
//! ARP requests and solicitations parse as the matching replies; a "too
//! big" ICMP error, when one is sent, parses back to what it was told and
//! goes back to the packet's source.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use memif_cni::mac::Mac;
use memif_cni::memif::Mode;
use memif_cni::packet::checksum::checksum;
use memif_cni::packet::decide::{self, IpClass};
use memif_cni::packet::{self, vxlan, Arp, Echo, Net, L4};
use memif_cni::packet::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETH_HLEN, PROTO_ICMPV6};

/// Fields read from the front of the input (zeros once it runs out).
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        let n = N.min(self.0.len());
        b[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        b
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take())
    }
    fn mac(&mut self) -> Mac {
        Mac(self.take())
    }
    fn v4(&mut self) -> Ipv4Addr {
        Ipv4Addr::from(self.take::<4>())
    }
    fn v6(&mut self) -> Ipv6Addr {
        Ipv6Addr::from(self.take::<16>())
    }
    /// The rest, at most `max` bytes.
    fn rest(&mut self, max: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(max.min(self.0.len()));
        self.0 = b;
        a
    }
}

/// The first 64 bytes of a buffer as the dataplane holds them (four
/// little-endian lanes), whatever the frame's length.
fn lanes(buf: &[u8]) -> [u128; 4] {
    let mut b = [0xa5u8; 64];
    let n = buf.len().min(64);
    b[..n].copy_from_slice(&buf[..n]);
    std::array::from_fn(|i| u128::from_le_bytes(b[16 * i..16 * i + 16].try_into().unwrap()))
}

/// What the lane decision must say of `frame`: `classify` on its IP
/// header, for the frames the fast path takes.
fn reference(frame: &[u8], ethernet: bool) -> Option<u128> {
    let ip = if ethernet { ETH_HLEN } else { 0 };
    let p = frame.get(ip..)?;
    // Only read when ethernet, and then the frame holds the header.
    let ethertype = || u16::from_be_bytes([frame[12], frame[13]]);
    let takes = match p.first()? >> 4 {
        4 => p.len() >= 20 && (!ethernet || ethertype() == ETHERTYPE_IPV4),
        6 => {
            p.len() >= 40 && (!ethernet || (ethertype() == ETHERTYPE_IPV6 && p[6] != PROTO_ICMPV6))
        }
        _ => false,
    };
    match decide::classify(p) {
        IpClass::Unicast(k) if takes => Some(k),
        _ => None,
    }
}

/// The "too big" answer to `p` as an IP packet, when one may be sent:
/// a correct ICMP error back to its source, saying the MTU and quoting
/// the packet's start.
fn too_big(p: &[u8]) {
    let v6 = p.first().is_some_and(|b| b >> 4 == 6);
    let quoted = p.len().min(packet::too_big_quote(v6));
    let mut buf = vec![0u8; packet::TOO_BIG_ROOM + quoted];
    buf[packet::TOO_BIG_ROOM..].copy_from_slice(&p[..quoted]);
    let mtu = 1280 + p.len() % 300;
    let Some(start) = packet::too_big_in_place(&mut buf, quoted, mtu) else {
        assert_eq!(buf[packet::TOO_BIG_ROOM..], p[..quoted], "a refusal changed the packet");
        return;
    };
    let Net::Ip(ip) = packet::parse_ip(&buf[start..]) else {
        panic!("a too-big answer does not parse: {:?}", &buf[start..]);
    };
    assert!(ip.checksums_ok, "{ip}");
    let L4::TooBig { mtu: said, quoted: q } = ip.l4 else {
        panic!("not a too-big answer: {ip}");
    };
    assert_eq!((said as usize, q), (mtu, &p[..quoted]));
    let src = if v6 { &p[8..24] } else { &p[12..16] };
    let dst = match ip.dst {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    assert_eq!(dst, src, "not back to the source");
}

/// Every parser and decision on arbitrary bytes.
fn any_bytes(data: &[u8]) {
    for mode in [Mode::Ethernet, Mode::Ip] {
        let f = packet::parse(mode, data);
        let _ = f.to_string();
    }
    if let Net::Ip(ip) = packet::parse_ip(data) {
        assert!(ip.len <= data.len());
        let _ = ip.to_string();
    }
    if let Net::Ip(ip) = packet::parse_quoted(data) {
        assert!(ip.len <= data.len());
        let _ = ip.to_string();
    }
    too_big(data);
    // The lane decision for frames of several lengths in this buffer
    // (the lanes of a short frame hold what follows it).
    let l = lanes(data);
    for len in [data.len(), data.len().min(64), data.len() / 2] {
        for eth in [true, false] {
            let got = decide::unicast_dst_in_lanes(&l, len, eth);
            let want = reference(&data[..len], eth);
            assert_eq!(got, want, "lanes vs classify, len {len} ethernet {eth}");
        }
    }
    for ip in [data, data.get(ETH_HLEN..).unwrap_or(&[])] {
        let mut p = ip.to_vec();
        let ihl = p.first().map_or(0, |b| (b & 0x0f) as usize * 4);
        let v4_ok = p.first().is_some_and(|b| b >> 4 == 4)
            && ihl >= 20
            && p.len() >= ihl
            && checksum(&p[..ihl]) == 0;
        let ttl = p.get(8).copied();
        if decide::decrement_ttl(&mut p) {
            if v4_ok {
                assert_eq!(checksum(&p[..ihl]), 0, "TTL decrement broke the checksum");
                assert_eq!(p[8], ttl.unwrap() - 1);
            }
        } else {
            assert_eq!(p, ip, "a refused decrement changed the packet");
        }
        let _ = decide::is_nd(ip);
        if let Some(s) = decide::solicit(ip) {
            answers_solicit(&s);
        }
        if let Some(r) = decide::arp_request(ip) {
            answers_arp(&r);
        }
        let _ = vxlan::flow_hash(ip);
    }
    if let Ok(vni) = vxlan::parse(data) {
        assert!(vni <= vxlan::MAX_VNI);
        assert_eq!(data[0], vxlan::FLAG_VNI);
    }
}

fn answers_arp(r: &decide::ArpRequest) {
    let (me, to) = (Mac([2, 0, 0, 0, 0, 1]), Mac(r.sender_mac));
    let mut out = [0u8; 64];
    let n = decide::answer_arp(&mut out, me, to, r);
    let f = packet::parse(Mode::Ethernet, &out[..n]);
    assert_eq!(f.eth.map(|e| (e.dst, e.src)), Some((to, me)));
    assert_eq!(
        f.net,
        Net::Arp(Arp {
            op: packet::ARP_REPLY,
            sender_mac: me,
            sender_ip: r.target_ip.into(),
            target_mac: to,
            target_ip: r.sender_ip.into(),
        })
    );
}

fn answers_solicit(s: &decide::Solicit) {
    let (me, to) = (Mac([2, 0, 0, 0, 0, 1]), Mac([2, 0, 0, 0, 0, 2]));
    let mut out = [0u8; 128];
    let n = decide::answer_solicit(&mut out, me, to, s);
    let f = packet::parse(Mode::Ethernet, &out[..n]);
    let Net::Ip(ip) = f.net else {
        panic!("answer does not parse: {f:?}");
    };
    assert!(ip.checksums_ok);
    assert_eq!(ip.src, IpAddr::from(Ipv6Addr::from(s.target)));
    assert_eq!(ip.dst, IpAddr::from(Ipv6Addr::from(s.src)));
    assert_eq!(
        ip.l4,
        L4::NeighborAdvert {
            target: Ipv6Addr::from(s.target),
            target_mac: Some(me),
            flags: packet::NA_FLAG_ROUTER | packet::NA_FLAG_SOLICITED | packet::NA_FLAG_OVERRIDE,
        }
    );
}

/// The IP packet `p` parsed, with its addresses, TTL and length checked.
fn parsed_ip(p: &[u8], src: IpAddr, dst: IpAddr, ttl: u8) -> packet::Ip<'_> {
    let Net::Ip(ip) = packet::parse_ip(p) else {
        panic!("a built packet does not parse: {:?}", packet::parse_ip(p));
    };
    assert_eq!((ip.src, ip.dst, ip.ttl, ip.len), (src, dst, ttl, p.len()));
    ip
}

/// One builder, fields from `f`, and what it built parsed back.
fn build(kind: u8, f: &mut Fields<'_>) {
    match kind % 9 {
        k @ (0 | 1) => {
            let request = k == 0;
            let (mac, ip, target) = (f.mac(), f.v4(), f.v4());
            let to = f.mac();
            let frame = if request {
                packet::arp_request(mac, ip, target)
            } else {
                packet::arp_reply(mac, ip, to, target)
            };
            let (op, dst, tmac) = if request {
                (packet::ARP_REQUEST, Mac::BROADCAST, Mac::ZERO)
            } else {
                (packet::ARP_REPLY, to, to)
            };
            let p = packet::parse(Mode::Ethernet, &frame);
            assert_eq!(p.eth.map(|e| (e.dst, e.src)), Some((dst, mac)));
            assert_eq!(
                p.net,
                Net::Arp(Arp {
                    op,
                    sender_mac: mac,
                    sender_ip: ip,
                    target_mac: tmac,
                    target_ip: target,
                })
            );
            let strict = decide::arp_request(&frame[ETH_HLEN..]);
            assert_eq!(strict.is_some(), op == packet::ARP_REQUEST);
            if let Some(r) = strict {
                assert_eq!((r.sender_ip, r.target_ip), (ip.octets(), target.octets()));
                answers_arp(&r);
            }
        }
        2 => {
            let (src, dst, proto, ttl) = (f.v4(), f.v4(), f.u8(), f.u8());
            let payload = f.rest(2000);
            let mut p = packet::ipv4(src, dst, proto, ttl, payload);
            let ip = parsed_ip(&p, src.into(), dst.into(), ttl);
            assert_eq!(ip.protocol, proto);
            assert_eq!(checksum(&p[..20]), 0);
            let want = match decide::classify(&p) {
                IpClass::Unicast(k) => Some(k),
                _ => None,
            };
            assert_eq!(
                want.is_some(),
                !(dst.is_multicast()
                    || dst.is_broadcast()
                    || dst.is_unspecified()
                    || dst.is_loopback())
            );
            if decide::decrement_ttl(&mut p) {
                assert_eq!(p[8], ttl - 1);
                assert_eq!(checksum(&p[..20]), 0);
            } else {
                assert!(ttl <= 1);
            }
        }
        3 => {
            let (src, dst, nh, hl) = (f.v6(), f.v6(), f.u8(), f.u8());
            let payload = f.rest(2000);
            let p = packet::ipv6(src, dst, nh, hl, payload);
            parsed_ip(&p, src.into(), dst.into(), hl);
        }
        4 => {
            let (src, dst, sp, dp, ttl) = (f.v4(), f.v4(), f.u16(), f.u16(), f.u8());
            let payload = f.rest(2000);
            let p = packet::udp4(src, dst, (sp, dp), ttl, payload);
            let ip = parsed_ip(&p, src.into(), dst.into(), ttl);
            assert_eq!(
                ip.l4,
                L4::Udp {
                    src_port: sp,
                    dst_port: dp,
                    len: (8 + payload.len()) as u16,
                }
            );
            // One flow, one hash, whatever the payload.
            let q = packet::udp4(src, dst, (sp, dp), ttl, &[0u8; 3]);
            assert_eq!(vxlan::flow_hash(&p), vxlan::flow_hash(&q));
        }
        5 => {
            let v6 = f.u8() & 1 != 0;
            let (src, dst): (IpAddr, IpAddr) = if v6 {
                (f.v6().into(), f.v6().into())
            } else {
                (f.v4().into(), f.v4().into())
            };
            let (reply, ttl, id, seq) = (f.u8() & 1 != 0, f.u8(), f.u16(), f.u16());
            let data = f.rest(1400);
            let e = Echo { id, seq, data };
            let p = packet::echo(src, dst, reply, ttl, e).expect("one family");
            let ip = parsed_ip(&p, src, dst, ttl);
            assert!(ip.checksums_ok);
            let want = if reply {
                L4::EchoReply(e)
            } else {
                L4::EchoRequest(e)
            };
            assert_eq!(ip.l4, want);
            assert!(
                packet::echo(src, IpAddr::V4(Ipv4Addr::LOCALHOST), reply, ttl, e).is_none() == v6
            );
        }
        6 => {
            let (src, target, mac) = (f.v6(), f.v6(), f.mac());
            let p = packet::neighbor_solicit(src, target, mac);
            let dst = packet::solicited_node(target);
            let ip = parsed_ip(&p, src.into(), dst.into(), 255);
            assert!(ip.checksums_ok);
            assert_eq!(
                ip.l4,
                L4::NeighborSolicit {
                    target,
                    source_mac: Some(mac),
                }
            );
            assert!(decide::is_nd(&p));
            let s = decide::solicit(&p).expect("a built solicitation parses strictly");
            assert_eq!(
                (s.src, s.target, s.source_mac),
                (src.octets(), target.octets(), Some(mac.0))
            );
            answers_solicit(&s);
            assert_eq!(packet::ipv6_multicast_mac(dst).0[..2], [0x33, 0x33]);
        }
        7 => {
            let (target, dst, mac, sol) = (f.v6(), f.v6(), f.mac(), f.u8() & 1 != 0);
            let p = packet::neighbor_advert(target, dst, mac, sol);
            let ip = parsed_ip(&p, target.into(), dst.into(), 255);
            assert!(ip.checksums_ok);
            let flags = packet::NA_FLAG_OVERRIDE | if sol { packet::NA_FLAG_SOLICITED } else { 0 };
            assert_eq!(
                ip.l4,
                L4::NeighborAdvert {
                    target,
                    target_mac: Some(mac),
                    flags,
                }
            );
        }
        _ => {
            let vni = u32::from_be_bytes(f.take());
            let (dst, src) = (f.mac(), f.mac());
            let inner = f.rest(1500);
            let mut out = vec![0u8; vxlan::VXLAN_HLEN];
            vxlan::header_into(&mut out, vni);
            let framed = packet::on_link(Mode::Ethernet, dst, src, inner);
            out.extend_from_slice(&framed);
            assert_eq!(vxlan::parse(&out), Ok(vni & vxlan::MAX_VNI));
            // The inner frame parses as the bare packet does.
            let f = packet::parse(Mode::Ethernet, &out[vxlan::VXLAN_HLEN..]);
            assert_eq!(f.eth.map(|e| (e.dst, e.src)), Some((dst, src)));
            assert_eq!(f.net, packet::parse_ip(inner));
            assert_eq!(
                packet::parse(Mode::Ip, &packet::on_link(Mode::Ip, dst, src, inner)).net,
                packet::parse_ip(inner)
            );
            let name = String::from_utf8_lossy(inner);
            let d = vxlan::default_vni(&name);
            assert!((1..=vxlan::MAX_VNI).contains(&d));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    any_bytes(data);
    if let Some((&kind, rest)) = data.split_first() {
        build(kind, &mut Fields(rest));
    }
});
