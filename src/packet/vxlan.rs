//! VXLAN (RFC 7348): the 8-byte header memifd puts in front of a network's
//! frames on the underlay, the fixed Ethernet header of ip-mode networks,
//! and the flow hash that picks the outer UDP source port (so RSS and ECMP
//! spread flows) and a pod's queue.
//!
//! On the wire, after the outer IP and UDP headers (destination port
//! [`VXLAN_PORT`] unless configured otherwise):
//!
//! ```text
//!  0                   1                   2                   3
//! |R|R|R|R|I|R|R|R|            Reserved (24 bits)                 |
//! |        VXLAN Network Identifier (VNI)         |   Reserved    |
//! ```
//!
//! then the inner Ethernet frame: an ethernet network's pod frame, or for
//! an ip network the IP packet behind [`IP_NETWORK_ETH`]'s fixed header
//! (destination `02:00:00:00:00:02`, source `02:00:00:00:00:01`, the
//! ethertype of the packet's IP version).

use super::ETH_HLEN;

/// The IANA-assigned VXLAN port.
pub const VXLAN_PORT: u16 = 4789;
/// The VXLAN header's length.
pub const VXLAN_HLEN: usize = 8;
/// The I flag: the VNI is valid. The only flag RFC 7348 defines.
pub const FLAG_VNI: u8 = 0x08;
/// The largest VNI (24 bits); 0 is not used by memif-cni.
pub const MAX_VNI: u32 = 0x00ff_ffff;
/// Bytes VXLAN adds to an inner IP packet over an IPv4 underlay: outer
/// IPv4 (20), UDP (8), VXLAN (8), inner Ethernet (14).
pub const OVERHEAD_V4: u32 = 50;
/// The same over an IPv6 underlay (outer IPv6: 40).
pub const OVERHEAD_V6: u32 = 70;
/// The inner Ethernet addresses of ip-mode networks (destination, then
/// source); the ethertype follows the packet's IP version.
pub const IP_NETWORK_ETH: [u8; 12] = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];

/// Writes a VXLAN header for `vni` (flags: I only; reserved bits 0).
#[inline]
pub fn header_into(out: &mut [u8], vni: u32) -> usize {
    out[..VXLAN_HLEN].copy_from_slice(&[
        FLAG_VNI,
        0,
        0,
        0,
        (vni >> 16) as u8,
        (vni >> 8) as u8,
        vni as u8,
        0,
    ]);
    VXLAN_HLEN
}

/// Why a UDP payload is not a VXLAN packet memifd takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// Shorter than the VXLAN header and an inner Ethernet header.
    Short,
    /// The I flag clear, or another flag set.
    Flags,
}

/// The VNI of a VXLAN packet (the UDP payload `p`), checking the header
/// as RFC 7348 asks of a receiver that terminates the tunnel: the I flag
/// set; other flags must be 0 (we refuse them rather than ignore them, as
/// they would belong to an extension we do not speak). The reserved
/// fields are ignored, as the RFC says.
#[inline]
pub fn parse(p: &[u8]) -> Result<u32, Bad> {
    if p.len() < VXLAN_HLEN + ETH_HLEN {
        return Err(Bad::Short);
    }
    if p[0] != FLAG_VNI {
        return Err(Bad::Flags);
    }
    Ok(u32::from_be_bytes([0, p[4], p[5], p[6]]))
}

/// A hash of an IP packet's flow (addresses, protocol, and the ports of
/// TCP and UDP when the packet is not a later fragment): equal for the
/// packets of one flow, spread between flows. `ip` is at least the IP
/// header (a shorter one hashes what there is).
#[inline]
pub fn flow_hash(ip: &[u8]) -> u32 {
    let mut h: u32 = 0x9e37_79b9;
    let mut mix = |x: u32| {
        h = (h ^ x).wrapping_mul(0x85eb_ca6b);
        h ^= h >> 15;
    };
    match ip.first().map(|b| b >> 4) {
        Some(4) if ip.len() >= 20 => {
            let ihl = (ip[0] & 0x0f) as usize * 4;
            mix(u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]));
            mix(u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]));
            mix(ip[9] as u32);
            let first_fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff == 0;
            if first_fragment && matches!(ip[9], 6 | 17) && ip.len() >= ihl + 4 {
                mix(u32::from_be_bytes([
                    ip[ihl],
                    ip[ihl + 1],
                    ip[ihl + 2],
                    ip[ihl + 3],
                ]));
            }
        }
        Some(6) if ip.len() >= 40 => {
            for w in ip[8..40].chunks_exact(4) {
                mix(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
            }
            mix(ip[6] as u32);
            if matches!(ip[6], 6 | 17) && ip.len() >= 44 {
                mix(u32::from_be_bytes([ip[40], ip[41], ip[42], ip[43]]));
            }
        }
        _ => mix(ip.len() as u32),
    }
    // MurmurHash3's finalizer: every input bit reaches the low bits.
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The default VNI of a network without a configured one: the low 24 bits
/// of the FNV-1a-64 hash of its name, 1 when those are 0 (VNI 0 is never
/// used).
pub fn default_vni(network: &str) -> u32 {
    match (crate::hash::fnv1a64(network.as_bytes()) as u32) & MAX_VNI {
        0 => 1,
        v => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::build;

    #[test]
    fn header_round_trips_and_refuses_garbage() {
        let mut p = [0u8; 64];
        header_into(&mut p, 0x00ab_cdef);
        assert_eq!(&p[..8], &[0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0]);
        assert_eq!(parse(&p), Ok(0x00ab_cdef));
        assert_eq!(parse(&p[..21]), Err(Bad::Short));
        p[0] = 0x0c;
        assert_eq!(parse(&p), Err(Bad::Flags));
        p[0] = 0;
        assert_eq!(parse(&p), Err(Bad::Flags));
        // Reserved bytes are ignored.
        p[0] = 0x08;
        p[1] = 0xff;
        p[7] = 0xff;
        assert_eq!(parse(&p), Ok(0x00ab_cdef));
    }

    #[test]
    fn flows_hash_alike_and_apart() {
        let a = build::udp4(
            [10, 0, 0, 1].into(),
            [10, 0, 0, 2].into(),
            (1000, 53),
            64,
            &[1; 20],
        );
        let same = build::udp4(
            [10, 0, 0, 1].into(),
            [10, 0, 0, 2].into(),
            (1000, 53),
            9,
            &[2; 40],
        );
        let other = build::udp4(
            [10, 0, 0, 1].into(),
            [10, 0, 0, 2].into(),
            (1001, 53),
            64,
            &[1; 20],
        );
        assert_eq!(flow_hash(&a), flow_hash(&same));
        assert_ne!(flow_hash(&a), flow_hash(&other));
        let v6 = build::ipv6(
            "fd00::1".parse().unwrap(),
            "fd00::2".parse().unwrap(),
            17,
            64,
            &[0, 1, 0, 2, 0, 8, 0, 0],
        );
        let v6b = build::ipv6(
            "fd00::1".parse().unwrap(),
            "fd00::2".parse().unwrap(),
            17,
            64,
            &[0, 1, 0, 3, 0, 8, 0, 0],
        );
        assert_ne!(flow_hash(&v6), flow_hash(&v6b));
        // Garbage hashes without panicking.
        for n in 0..60 {
            let _ = flow_hash(&vec![0x45; n]);
            let _ = flow_hash(&vec![0x60; n]);
        }
        // Spread: 256 source ports over 16 buckets, none empty.
        let mut seen = [0u32; 16];
        for port in 0..256u16 {
            let p = build::udp4(
                [10, 0, 0, 1].into(),
                [10, 0, 0, 2].into(),
                (port, 53),
                64,
                &[],
            );
            seen[(flow_hash(&p) % 16) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 4), "{seen:?}");
    }

    #[test]
    fn default_vnis_are_24_bit_and_stable() {
        let v = default_vni("network-blue");
        assert!((1..=MAX_VNI).contains(&v));
        assert_eq!(v, default_vni("network-blue"));
        assert_ne!(v, default_vni("network-red"));
        assert_eq!(
            default_vni("network-blue"),
            (crate::hash::fnv1a64(b"network-blue") & 0xff_ffff) as u32
        );
    }
}
