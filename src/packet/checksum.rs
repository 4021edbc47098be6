//! The Internet checksum (RFC 1071), its pseudo-header form for ICMPv6,
//! UDP and TCP, and the incremental update of RFC 1624. The only
//! implementation in the crate: builders, the parser, the dataplane's TTL
//! decrement and the VXLAN encapsulation all use it.

use std::net::IpAddr;

/// Adds `data` as big-endian 16-bit words to `acc` (an odd last byte is
/// padded with zero). A u64 cannot overflow for any frame size.
#[inline]
pub fn sum(mut acc: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        acc += u16::from_be_bytes([w[0], w[1]]) as u64;
    }
    if let [last] = words.remainder() {
        acc += (*last as u64) << 8;
    }
    acc
}

/// Folds a sum to 16 bits (one's complement addition of the carries).
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The Internet checksum of `data`: the one's complement of the one's
/// complement sum. Over data that includes a correct checksum it is 0.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(0, data))
}

/// The sum of the TCP/UDP/ICMPv6 pseudo-header (RFC 768, RFC 8200 8.1).
pub fn pseudo_header_sum(src: IpAddr, dst: IpAddr, protocol: u8, len: usize) -> u64 {
    let len = len as u64;
    let mut acc = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => sum(sum(0, &s.octets()), &d.octets()),
        (s, d) => sum(sum(0, &v6_octets(s)), &v6_octets(d)),
    };
    acc += (len >> 16) + (len & 0xffff);
    acc + protocol as u64
}

fn v6_octets(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// Checksum of an upper-layer message with its pseudo-header (ICMPv6, UDP,
/// TCP). Over a message that holds a correct checksum it is 0.
pub fn l4_checksum(src: IpAddr, dst: IpAddr, protocol: u8, segment: &[u8]) -> u16 {
    !fold(sum(
        pseudo_header_sum(src, dst, protocol, segment.len()),
        segment,
    ))
}

/// The checksum `old_sum` after one 16-bit word of the data changed from
/// `old` to `new` (RFC 1624, equation 3).
#[inline]
pub fn update(old_sum: u16, old: u16, new: u16) -> u16 {
    !fold(!old_sum as u64 + !old as u64 + new as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    #[test]
    fn checksum_known_vectors() {
        // RFC 1071 section 3 example: sum 0xddf2, checksum its complement.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
        // A textbook IPv4 header (checksum field zero) and its checksum.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(checksum(&h), 0);
        // Odd length: the last byte is padded with zero.
        assert_eq!(checksum(&[0x01]), !0x0100);
        assert_eq!(checksum(&[]), 0xffff);
    }

    #[test]
    fn icmpv6_checksum_known_vector() {
        // Echo request fe80::1 -> fe80::2, id 0x1234 seq 1, data "ab";
        // checksum computed by hand from the pseudo-header:
        // addresses 0xfe80 + 0x0001 + 0xfe80 + 0x0002, length 10, next
        // header 58, message 0x8000 + 0x1234 + 0x0001 + 0x6162.
        let s: Ipv6Addr = "fe80::1".parse().unwrap();
        let d: Ipv6Addr = "fe80::2".parse().unwrap();
        let mut m = [0x80, 0, 0, 0, 0x12, 0x34, 0, 1, b'a', b'b'];
        let c = l4_checksum(s.into(), d.into(), 58, &m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        let total: u32 = 0xfe80 + 1 + 0xfe80 + 2 + 10 + 58 + 0x8000 + 0x1234 + 1 + 0x6162;
        let folded = (total & 0xffff) + (total >> 16);
        assert_eq!(c, !(folded as u16));
        assert_eq!(l4_checksum(s.into(), d.into(), 58, &m), 0);
    }

    #[test]
    fn incremental_update_matches_a_full_sum() {
        let mut h = [
            0x45u8, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let c = checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        for ttl in [0x40u8, 0x01, 0xff] {
            let old = u16::from_be_bytes([h[8], h[9]]);
            h[8] = ttl - 1;
            let new = u16::from_be_bytes([h[8], h[9]]);
            let s = update(u16::from_be_bytes([h[10], h[11]]), old, new);
            h[10..12].copy_from_slice(&s.to_be_bytes());
            assert_eq!(checksum(&h), 0, "ttl {ttl}");
            h[8] = ttl;
            let c = {
                let mut z = h;
                z[10..12].fill(0);
                checksum(&z)
            };
            h[10..12].copy_from_slice(&c.to_be_bytes());
        }
    }
}
