//! Packet formats, one module for the whole crate: the constants, the one
//! Internet checksum, builders that write into caller buffers (with `Vec`
//! wrappers for memifctl), the tolerant parser memifctl shows frames with,
//! the forwarding path's decisions, and the VXLAN encapsulation.
//!
//! - [`mod@checksum`]: RFC 1071 and the incremental update of RFC 1624;
//! - [`build`]: Ethernet, ARP, IPv4, IPv6, ICMP, ICMPv6, neighbour
//!   discovery and UDP, into buffers or as `Vec`s;
//! - [`mod@parse`]: any frame to a one-line summary, never panicking;
//! - [`decide`]: routing keys, destination classes, the register-lane
//!   decision of the common case, TTL decrement, the strict ARP and
//!   neighbour-solicitation parsers and the answers memifd gives.
//!
//! Adding a packet type: its constants here, a builder in `build` (the
//! `_into` form first), its summary in `parse`, and, if the dataplane must
//! act on it, a strict parser in `decide`; a fuzz target under `fuzz/`
//! feeds `parse` and `decide` the same bytes.

pub mod build;
pub mod checksum;
pub mod decide;
pub mod parse;
pub mod vxlan;

pub use build::*;
pub use checksum::{checksum, l4_checksum};
pub use decide::{classify, key_of, IpClass, IpKey};
pub use parse::{parse, parse_ip, parse_quoted, Arp, Echo, Ethernet, Frame, Ip, Net, L4};

/// Ethernet header length (no VLAN tag).
pub const ETH_HLEN: usize = 14;
pub const IPV4_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;
pub const UDP_HLEN: usize = 8;
/// An ARP packet for IPv4 over Ethernet, without the Ethernet header.
pub const ARP_LEN: usize = 28;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_ECHO_REQUEST: u8 = 8;
/// ICMP "destination unreachable", and its code "fragmentation needed".
pub const ICMP_UNREACHABLE: u8 = 3;
pub const ICMP_FRAG_NEEDED: u8 = 4;
/// ICMPv6 "packet too big".
pub const ICMPV6_PACKET_TOO_BIG: u8 = 2;
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_ECHO_REPLY: u8 = 129;
pub const ICMPV6_ROUTER_SOLICIT: u8 = 133;
pub const ICMPV6_ROUTER_ADVERT: u8 = 134;
pub const ICMPV6_NEIGHBOR_SOLICIT: u8 = 135;
pub const ICMPV6_NEIGHBOR_ADVERT: u8 = 136;
pub const ICMPV6_REDIRECT: u8 = 137;

/// Neighbour discovery option: source link-layer address.
pub const ND_OPT_SOURCE_LLADDR: u8 = 1;
/// Neighbour discovery option: target link-layer address.
pub const ND_OPT_TARGET_LLADDR: u8 = 2;
/// Neighbour advertisement flags (first byte after the ICMPv6 header).
pub const NA_FLAG_ROUTER: u8 = 0x80;
pub const NA_FLAG_SOLICITED: u8 = 0x40;
pub const NA_FLAG_OVERRIDE: u8 = 0x20;

/// Bytes of a frame copied out of shared memory to decide where it goes:
/// ethernet + IPv6 header + the neighbour solicitation (24 bytes) and its
/// source link-layer option (8).
pub const PEEK: usize = ETH_HLEN + IPV6_HLEN + 32;

/// The ethertype of an IP packet by its version nibble.
#[inline]
pub fn ethertype_of(ip_first_byte: u8) -> u16 {
    if ip_first_byte >> 4 == 6 {
        ETHERTYPE_IPV6
    } else {
        ETHERTYPE_IPV4
    }
}
